"""The ``varsac`` console script: ``varsac <command> [hydra overrides]``.

Each command is a Hydra app whose primary config is ``conf/<command>.yaml``;
everything after the command goes to Hydra unchanged, so overrides, ``--cfg``,
``--help`` and ``-m`` work as in any Hydra app.
"""

import sys
from collections.abc import Callable

import hydra
from omegaconf import DictConfig

from varsac import __version__

COMMANDS: dict[str, str] = {
    "fit": "train a model (e.g. varsac fit experiment=cluttered_mnist)",
    "test": "evaluate a checkpoint on the test split (varsac test ckpt_path=PATH)",
}

USAGE = """usage: varsac <command> [key=value ...] [hydra flags]

Variational saccading: classify huge images from a few glimpses.

commands:
{commands}

Every command takes Hydra overrides and flags:
  varsac fit experiment=cluttered_mnist trainer.max_epochs=5
  varsac fit --cfg job          print the composed config
  varsac fit --help             list config groups and options
  varsac fit -m seed=0,1,2      a sweep
"""


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = "\n".join(f"  {name:<{width}}  {text}" for name, text in COMMANDS.items())
    return USAGE.format(commands=lines)


def task_function(command: str) -> Callable[[DictConfig], float | None]:
    """The function Hydra runs for a command, imported only when needed (torch is slow to load).

    Errors that come from what the user gave (a config value, a missing file)
    end the command with their message instead of a traceback.
    """

    def run(cfg: DictConfig) -> float | None:
        from hydra.errors import InstantiationException

        from varsac import train

        try:
            return getattr(train, command)(cfg)
        except (train.ConfigError, FileNotFoundError, InstantiationException) as error:
            raise SystemExit(f"varsac {command}: {error}") from None

    return run


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return
    if args[0] == "--version":
        print(f"varsac {__version__}")
        return
    command, overrides = args[0], args[1:]
    if command not in COMMANDS:
        print(f"varsac: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        raise SystemExit(2)
    # Hydra reads its overrides from sys.argv; the command is ours, not Hydra's.
    sys.argv = [sys.argv[0], *overrides]
    app = hydra.main(config_path="pkg://varsac.conf", config_name=command, version_base="1.3")
    app(task_function(command))()
