"""The ``varsac`` console script: ``varsac <command> [hydra overrides]``.

Each command but ``report`` is a Hydra app whose primary config is
``conf/<command>.yaml`` (``conf/prepare/<dataset>.yaml`` for ``varsac data
<dataset>``); everything after the command goes to Hydra unchanged, so
overrides, ``--cfg``, ``--help`` and ``-m`` work as in any Hydra app.
``report`` takes a sweep directory and plain options. Each command imports
what it uses when it runs (``--help`` and ``report`` load neither Hydra nor
torch, ``predict`` no Lightning).
"""

import importlib
import logging
import os
import re
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from varsac import __version__

if TYPE_CHECKING:
    from omegaconf import DictConfig

log = logging.getLogger("varsac")

COMMANDS: dict[str, str] = {
    "fit": "train a model (e.g. varsac fit experiment=cluttered_mnist)",
    "test": "evaluate a checkpoint on the test split (varsac test ckpt_path=PATH)",
    "predict": "a checkpoint on your images (varsac predict ckpt_path=PATH input=FILE_OR_FOLDER)",
    "data": "prepare a dataset (varsac data mit5k src=PHOTOS [dst=DIR])",
    "report": "summarise a sweep: plots and a table (varsac report outputs/NAME/multirun/TIME)",
}
# `varsac data <dataset>`: each has its config conf/prepare/<dataset>.yaml and a function in
# varsac.prepare.
DATASETS: dict[str, str] = {
    "mit5k": "convert photos in class folders (or a CSV of path,label) to pyramid TIFFs",
    "starcraft": "draw StarCraft II marine-counting scenes offline (or record them: source=game)",
    "megapixel_mnist": "draw Megapixel MNIST (5 digits, 3 of the class, and noise on 1500²)",
    "slides": "index whole-slide images where they lie, from a CSV of path,label (no copy)",
    "synthetic_slides": "draw tissue-like whole-slide images, tumour or normal, with labels",
}

USAGE = """usage: varsac <command> [key=value ...] [hydra flags]

Variational saccading: classify huge images from a few glimpses.

commands:
{commands}

Every command but report takes Hydra overrides and flags:
  varsac fit experiment=cluttered_mnist trainer.max_epochs=5
  varsac fit --cfg job          print the composed config
  varsac fit --help             list config groups and options
  varsac fit -m seed=0,1,2      a sweep
"""


DATA_USAGE = """usage: varsac data <dataset> [key=value ...] [hydra flags]

datasets:
{datasets}

  varsac data mit5k src=~/fivek dst=~/data/mit5k     (varsac data mit5k --help: every option)
  varsac data starcraft n=5000 seed=0                (varsac data starcraft --help)
  varsac data megapixel_mnist                        (varsac data megapixel_mnist --help)
  varsac data slides src=~/slides/labels.csv         (varsac data slides --help)
  varsac data synthetic_slides n=40                  (varsac data synthetic_slides --help)
"""


def listing(entries: dict[str, str]) -> str:
    width = max(map(len, entries))
    return "\n".join(f"  {name:<{width}}  {text}" for name, text in entries.items())


def usage() -> str:
    return USAGE.format(commands=listing(COMMANDS))


def task_function(module: str, function: str, title: str) -> Callable[["DictConfig"], object]:
    """The function Hydra runs, imported only when needed (torch is slow to load).

    Errors that come from what the user gave (a config value, a missing file)
    end the command with their message instead of a traceback.
    """

    def run(cfg: "DictConfig") -> object:
        from hydra.core.hydra_config import HydraConfig
        from hydra.errors import InstantiationException
        from hydra.types import RunMode
        from omegaconf.errors import MissingMandatoryValue

        from varsac.errors import ConfigError, JobFailed
        from varsac.files import NoSpaceError

        expected = (ConfigError, FileNotFoundError, MissingMandatoryValue, NoSpaceError)
        try:
            return getattr(importlib.import_module(module), function)(cfg)
        except (*expected, InstantiationException) as error:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            message = f"{title}: {in_one_line(error)}"
        except SystemExit as stop:  # a stop with a message (a NaN loss); not an exit status
            if not isinstance(stop.code, str):
                raise
            message = stop.code
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            log.error(message)  # into the job's log, where varsac report finds it
            raise JobFailed(message)  # the sweep records the job as failed and runs the next
        raise SystemExit(message)

    return run


def in_one_line(error: Exception) -> str:
    """The error's message on one line; for a constructor that refused a config value
    (Hydra's InstantiationException), the config key and the constructor's own words."""
    from hydra.errors import InstantiationException

    cause = error.__cause__
    if not isinstance(error, InstantiationException) or cause is None:
        return " ".join(str(error).split())
    said = " ".join(str(cause).split())
    found = re.search(r"full_key: (\S+)", str(error))
    if found is None:
        return said
    named = re.fullmatch(r"(\w+) (must .*)", said)  # "steps must be …" → model.vrnn.steps: …
    if named:
        return f"{found.group(1)}.{named.group(1)}: {named.group(2)}"
    return f"{found.group(1)}: {said}"


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
    if command == "report":  # a plain argparse command, not a Hydra app
        from varsac.report import main as report_main

        raise SystemExit(report_main(overrides))
    if command == "data":
        data_usage = DATA_USAGE.format(datasets=listing(DATASETS))
        if not overrides or overrides[0] in ("-h", "--help", "help"):
            print(data_usage)
            return
        dataset, overrides = overrides[0], overrides[1:]
        if dataset not in DATASETS:
            print(f"varsac data: unknown dataset {dataset!r}\n\n{data_usage}", file=sys.stderr)
            raise SystemExit(2)
        config_name, run = (
            f"prepare/{dataset}",
            task_function("varsac.prepare", dataset, f"varsac data {dataset}"),
        )
    else:
        module = "varsac.predict" if command == "predict" else "varsac.train"
        config_name, run = command, task_function(module, command, f"varsac {command}")
    import hydra

    # Hydra reads its overrides from sys.argv; the command is ours, not Hydra's.
    sys.argv = [sys.argv[0], *overrides]
    app = hydra.main(config_path="pkg://varsac.conf", config_name=config_name, version_base="1.3")
    app(run)()
