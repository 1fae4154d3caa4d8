"""Config values checked against the signatures of what they configure, before anything runs.

Hydra passes ``trainer.max_epochs=abc`` on as the string ``"abc"``, and the
error surfaces much later, deep inside Lightning. Every node of a composed
config with a ``_target_`` names a class or function whose parameters carry
type annotations; ``check_config`` compares each value with its parameter's
annotation and reports the first mismatch as one line naming the key, the
value and what is expected. ``checked_arguments`` does the same for a plain
function called with keys of a config (``varsac data mit5k``).

Annotations understood: ``int``, ``float``, ``bool``, ``str``, ``None``,
unions and ``Optional``, ``Literal``, sequences and mappings (with their item
types), paths. Any other class (a module, a ``Task``, a factory) takes a
config node to instantiate, or anything: its own constructor checks it.
"""

import collections.abc
import inspect
import os
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf

from varsac.errors import ConfigError

SEQUENCES = (list, tuple, collections.abc.Sequence, collections.abc.Iterable)
MAPPINGS = (dict, collections.abc.Mapping)


def check_config(cfg: DictConfig | None, key: str = "") -> None:
    """Check every ``_target_`` node under ``cfg`` (``key`` is ``cfg``'s own dotted key)."""
    if cfg is None:
        return
    if "_target_" in cfg:
        target = get_object(cfg._target_)
        values = {
            k: cfg[k] for k in cfg if not k.startswith("_") and not OmegaConf.is_missing(cfg, k)
        }
        check_arguments(target, values, key)
    for name in cfg:
        if OmegaConf.is_missing(cfg, name):
            continue
        child = cfg[name]
        if isinstance(child, DictConfig):
            check_config(child, f"{key}.{name}" if key else str(name))


def checked_arguments(function: Callable[..., Any], cfg: DictConfig) -> dict[str, Any]:
    """The keys of ``cfg`` that ``function`` takes as keyword arguments, checked, as a dict."""
    names = inspect.signature(function).parameters
    values = {k: cfg[k] for k in cfg if k in names}
    check_arguments(function, values, "")
    return values


def check_arguments(target: Callable[..., Any], values: Mapping[str, Any], key: str) -> None:
    """Raise ``ConfigError`` for the first value that ``target``'s signature does not take."""
    function = target.__init__ if isinstance(target, type) else target
    try:
        parameters = inspect.signature(target).parameters
        hints = typing.get_type_hints(function)
    except (TypeError, ValueError, NameError):  # builtins, or annotations that do not resolve
        return
    open_ended = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
    for name, value in values.items():
        where = f"{key}.{name}" if key else name
        if name not in parameters:
            if open_ended:
                continue
            known = ", ".join(p for p in parameters if p not in ("self", "args", "kwargs"))
            raise ConfigError(f"{where}: {qualified(target)} takes no {name!r} (it takes {known})")
        if name in hints and not conforms(value, hints[name]):
            raise ConfigError(
                f"{where}={shown(value)}: expected {described(hints[name])} "
                f"({name} of {qualified(target)})"
            )


def conforms(value: Any, annotation: Any) -> bool:
    """Whether a resolved config value (a DictConfig or ListConfig too) fits ``annotation``."""
    if annotation is Any or annotation is inspect.Parameter.empty:
        return True
    if annotation is None or annotation is type(None):
        return value is None
    origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return any(conforms(value, argument) for argument in arguments)
    if origin is typing.Literal:
        return value in arguments
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if annotation in (Path, os.PathLike) or origin is os.PathLike:
        return isinstance(value, str | os.PathLike)
    container = origin or annotation
    if container in SEQUENCES:
        if not isinstance(value, ListConfig | list | tuple):
            return False
        if origin is tuple and arguments and arguments[-1] is not Ellipsis:
            return len(value) == len(arguments) and all(map(conforms, value, arguments))
        item = arguments[0] if arguments else Any
        return all(conforms(element, item) for element in value)
    if container in MAPPINGS:
        return isinstance(value, DictConfig | dict)
    if isinstance(container, type) and isinstance(value, bool | int | float | str):
        return isinstance(value, container)  # a number or a word where an object belongs
    return True  # a node to instantiate, or a type this check does not know


def described(annotation: Any) -> str:
    """``annotation`` in words: ``Optional[int]`` → "an integer or null"."""
    origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Union or origin is types.UnionType:
        choices = [a for a in arguments if typing.get_origin(a) is typing.Literal]
        words = [described(a) for a in arguments if a not in choices]
        if choices:  # Literal[64, 32] | Literal["bf16"]: one list of the values
            values = dict.fromkeys(v for choice in choices for v in typing.get_args(choice))
            words.insert(0, described(typing.Literal[tuple(values)]))
        return " or ".join(dict.fromkeys(words))
    if origin is typing.Literal:
        return "one of " + ", ".join(map(shown, arguments))
    if annotation is None or annotation is type(None):
        return "null"
    words = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if annotation in words:
        return words[annotation]
    if (origin or annotation) in SEQUENCES:
        return f"a list of {described(arguments[0])}s" if arguments else "a list"
    if (origin or annotation) in MAPPINGS:
        return "a mapping"
    return f"a {getattr(annotation, '__name__', annotation)}"


def shown(value: Any) -> str:
    """A value as it would be typed on the command line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, DictConfig | ListConfig):
        return str(OmegaConf.to_container(value))
    return str(value)


def qualified(target: Callable[..., Any]) -> str:
    return f"{target.__module__}.{target.__qualname__}"
