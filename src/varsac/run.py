"""A ``varsac fit`` or ``varsac test`` run as a Hydra job: where it writes, on which ranks it
runs, which checkpoint and config it starts from, and the results it leaves.

No Lightning here: the job's trainer is handed in where one is needed.
"""

import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from varsac.errors import ConfigError
from varsac.files import RESULTS_FILE, replace_atomically
from varsac.overrides import with_overrides

log = logging.getLogger(__name__)

# What a checkpoint's config decides for ``varsac test``: the command's overrides of these
# apply on top of it, the command's own choices for them do not.
STORED_KEYS = ("data", "task", "model")


def run_dir() -> Path:
    """This job's output directory."""
    return Path(HydraConfig.get().runtime.output_dir)


@contextmanager
def job_on_all_ranks(command: str) -> Iterator[None]:
    """Run this Hydra job on every DDP rank, and leave the process ready for the next job.

    Lightning starts rank r as ``python sys.argv[0] sys.argv[1:] hydra.run.dir=<hydra.run.dir>
    hydra.output_subdir=null …``. The varsac CLI took the command out of sys.argv
    for Hydra, and in a multirun sys.argv holds the whole sweep (``-m a=1,2``) and
    hydra.run.dir is not this job's directory. So during the job sys.argv is
    ``varsac <command> <this job's overrides>`` and hydra.run.dir this job's
    directory: every rank composes the same config and shares one run directory.

    Afterwards the job's W&B run is closed with the job's outcome, the process
    group is destroyed and the environment restored: Lightning leaves LOCAL_RANK,
    WORLD_SIZE and MASTER_PORT behind, and the next job of a multirun would take
    them for an external launcher's.
    """
    hydra = HydraConfig.get()
    argv, environment = sys.argv, dict(os.environ)
    sys.argv = [argv[0], command, *hydra.overrides.task]
    with read_write(hydra), open_dict(hydra):
        hydra.run.dir = hydra.runtime.output_dir
    exit_code = 1
    try:
        yield
        exit_code = 0
    finally:
        if "wandb" in sys.modules and sys.modules["wandb"].run is not None:
            sys.modules["wandb"].finish(exit_code=exit_code)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        os.environ.clear()
        os.environ.update(environment)
        sys.argv = argv


def resolve_checkpoint(cfg: DictConfig) -> str | None:
    """``ckpt_path``: null, a path, or ``last`` for the newest last.ckpt of this run name."""
    path = cfg.get("ckpt_path")
    if path is None:
        return None
    if path == "last":
        root = Path(cfg.paths.output_root) / cfg.name
        found = sorted(root.glob("**/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise ConfigError(
                f"ckpt_path=last: no checkpoints/last.ckpt under {root}; "
                "train first, or give ckpt_path=PATH"
            )
        path = found[-1]
    if not Path(path).is_file():
        raise ConfigError(f"ckpt_path={path}: no such file")
    return str(Path(path).resolve())


def with_checkpoint_config(cfg: DictConfig, stored: DictConfig) -> DictConfig:
    """The checkpoint's data, task and model, with this command's overrides of them on top."""
    merged = OmegaConf.create(OmegaConf.to_container(cfg))
    for key in STORED_KEYS:
        if key in stored:
            merged[key] = stored[key]
    hydra = HydraConfig.get()
    overrides, choices = hydra.overrides.task, hydra.runtime.choices
    return with_overrides(merged, overrides, STORED_KEYS, choices, composed=cfg)


def write_results(
    trainer: Any, title: str, results: dict[str, float], checkpoints: dict[str, str]
) -> None:
    """On rank 0: log the summary and write it to the run directory's results.json.

    results.json is written last and atomically, so a run directory that has
    one holds a run that finished (``varsac report`` relies on it).
    """
    if not trainer.is_global_zero:
        return
    lines = [f"{title} — run directory: {run_dir()}"]
    lines += [f"  {k:<28} {v:.4f}" for k, v in sorted(results.items())]
    lines += [f"  {k + ' checkpoint':<28} {v}" for k, v in checkpoints.items()]
    log.info("\n".join(lines))
    document = {"results": results, "checkpoints": checkpoints}
    encoded = json.dumps(document, indent=2, sort_keys=True).encode()
    replace_atomically(run_dir() / RESULTS_FILE, lambda handle: handle.write(encoded))
