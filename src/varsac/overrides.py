"""Command-line overrides (``key=value``, ``+key=value``, ``~key``), read by Hydra's own parser.

Every command that looks into overrides after Hydra has applied them (``varsac
test`` applying them again over a checkpoint's config, ``varsac report``
grouping a sweep's jobs) reads them here, so that quoting, lists, ``+``/``~``
prefixes and interpolations mean what they mean to Hydra. Hydra is imported
when an override is first read: ``varsac report`` starts without it.
"""

from collections.abc import Collection, Sequence
from functools import cache
from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf

if TYPE_CHECKING:
    from hydra.core.override_parser.types import Override


def parse_overrides(overrides: Sequence[str]) -> list["Override"]:
    """Hydra's reading of each override; raises Hydra's ``OverrideParseException`` on bad ones."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_overrides([str(o) for o in overrides])


@cache
def override_key(override: str) -> str:
    """``model.beta`` for ``model.beta=0.1``, ``+model.beta=0.1`` and ``~model.beta``."""
    (parsed,) = parse_overrides([override])
    return parsed.key_or_group


def with_overrides(
    cfg: DictConfig,
    overrides: Sequence[str],
    keys: Collection[str],
    groups: Collection[str],
    composed: DictConfig | None = None,
) -> DictConfig:
    """``cfg`` with the overrides of ``keys`` (or of keys inside them: ``model.beta`` for
    ``model``) applied again, a struct copy.

    A choice of a config group nested in one of the keys (``model/cropper=lst``) takes
    the config that Hydra composed for it, from ``composed``, but keeps ``cfg``'s values
    of the keys that both have (a checkpoint's glimpse ``window``), before the other
    overrides apply. Deletions (``~model.beta``) and choices of a whole key
    (``model=resnet18``) are left out: they remove or replace what ``cfg`` is for.
    """
    merged = OmegaConf.create(OmegaConf.to_container(cfg))  # interpolations kept, not resolved
    parsed = [o for o in parse_overrides(overrides) if not o.is_delete()]
    for override in parsed:
        group = override.key_or_group
        if composed is None or group not in groups or "/" not in group:
            continue
        path = group.replace("/", ".")
        chosen, kept = OmegaConf.select(composed, path), OmegaConf.select(merged, path)
        if path.split(".")[0] not in keys or not isinstance(chosen, DictConfig):
            continue
        chosen = OmegaConf.to_container(chosen)
        if isinstance(kept, DictConfig):
            stored = OmegaConf.to_container(kept)
            chosen |= {key: stored[key] for key in set(chosen) & set(stored) - {"_target_"}}
        OmegaConf.update(merged, path, chosen, merge=False, force_add=True)
    for override in parsed:
        key = override.key_or_group
        if key in groups or key.split(".")[0] not in keys:
            continue
        OmegaConf.update(merged, key, override.value(), merge=True, force_add=True)
    OmegaConf.set_struct(merged, True)
    return merged
