"""What ``varsac fit`` and ``varsac test`` do with a composed config."""

import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from varsac.checkpoint import CONFIG_KEY, load_checkpoint
from varsac.checkpoint_files import CheckpointFiles, StoreConfig
from varsac.config_check import check_config
from varsac.errors import ConfigError
from varsac.files import RESULTS_FILE, NoSpaceError, remove_partial_files, replace_atomically
from varsac.models.classifier import NonFiniteLossError

log = logging.getLogger(__name__)


def instantiate_data_and_model(cfg: DictConfig) -> tuple[L.LightningDataModule, L.LightningModule]:
    """The datamodule and the model, their classes agreeing, each config checked first.

    ``task.num_classes: null`` takes the number of classes from the datamodule.
    """
    check_config(cfg.data, "data")
    datamodule = instantiate(cfg.data)
    data_classes = getattr(datamodule, "num_classes", None)
    if cfg.task.get("num_classes") is None:
        if data_classes is None:
            raise ConfigError("task.num_classes is null and the data does not say: set it")
        cfg.task.num_classes = data_classes
    check_config(cfg.model, "model")
    model = instantiate(cfg.model)
    task_classes = model.task.num_classes
    if data_classes is not None and data_classes != task_classes:
        raise ConfigError(
            f"the data has {data_classes} classes but task.num_classes is {task_classes}: "
            "pick the task that matches the data (e.g. task=sum with data.label_mode=sum)"
        )
    return datamodule, model


def build(cfg: DictConfig) -> tuple[L.LightningDataModule, L.LightningModule, L.Trainer]:
    """Instantiate the datamodule, the model and the trainer with its callbacks and loggers.

    Every value is checked against the signature it configures before it is instantiated
    (``check_config``); every logger gets the composed config as its hyperparameters.
    """
    for group in ("trainer", "callbacks", "logger"):
        check_config(cfg.get(group), group)
    datamodule, model = instantiate_data_and_model(cfg)
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    callbacks.append(StoreConfig(cfg))
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]
    trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=[CheckpointFiles()]
    )
    composed = OmegaConf.to_container(cfg, resolve=True)
    for logger in trainer.loggers:  # none under fast_dev_run
        logger.log_hyperparams(composed)
    return datamodule, model, trainer


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


def run_dir() -> Path:
    return Path(HydraConfig.get().runtime.output_dir)


def checkpoint_paths(trainer: L.Trainer) -> dict[str, str]:
    """The best and last checkpoints written by this run (read them before ``test`` reloads one):
    the monitored ``ModelCheckpoint`` keeps the best, the one without a monitor the newest."""
    paths = {}
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.best_model_path:
            paths["best" if callback.monitor else "last"] = callback.best_model_path
    return paths


def finish(
    trainer: L.Trainer, title: str, results: dict[str, float], checkpoints: dict[str, str]
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


def scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """Logged scalars by name, without Lightning's per-step and per-epoch copies of the same."""
    return {
        k: float(v)
        for k, v in metrics.items()
        if torch.as_tensor(v).numel() == 1 and not k.endswith(("_step", "_epoch"))
    }


@job_on_all_ranks("fit")
def fit(cfg: DictConfig) -> float | None:
    """Train; test the best checkpoint afterwards. Returns the best validation accuracy."""
    log.info("run directory: %s", run_dir())
    L.seed_everything(cfg.seed, workers=True)
    ckpt_path = resolve_checkpoint(cfg)
    if ckpt_path:
        load_checkpoint(ckpt_path)  # refused with its name, as weights only, before anything runs
        removed = remove_partial_files(Path(ckpt_path).parent)
        if removed:
            log.info("removed %d partial checkpoint(s) of a run that was killed", removed)
        log.info("resuming from %s", ckpt_path)
    datamodule, model, trainer = build(cfg)
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    except (NonFiniteLossError, NoSpaceError) as error:
        last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
        good = str(last) if last.exists() else ckpt_path
        kept = f"the last good checkpoint is {good}" if good else "no checkpoint was written yet"
        raise SystemExit(f"varsac fit stopped: {error}\n{kept}") from None
    results, checkpoints = scalars(trainer.callback_metrics), checkpoint_paths(trainer)
    if cfg.get("test_after_fit") and not trainer.fast_dev_run:
        trainer.test(model, datamodule=datamodule, ckpt_path="best", weights_only=True)
        results.update(scalars(trainer.callback_metrics))
    finish(trainer, "varsac fit finished", results, checkpoints)
    return results.get("val/accuracy_best")


@job_on_all_ranks("test")
def test(cfg: DictConfig) -> float | None:
    """Evaluate ``ckpt_path`` on the test split, with the data and model it was trained with."""
    ckpt_path = resolve_checkpoint(cfg)
    log.info("run directory: %s", run_dir())
    stored = load_checkpoint(ckpt_path).get(CONFIG_KEY)
    if stored is None:
        log.warning(
            "%s holds no varsac config; using the data and model of this command", ckpt_path
        )
    else:
        cfg = with_checkpoint_config(cfg, OmegaConf.create(stored))
    L.seed_everything(cfg.seed, workers=True)
    datamodule, model, trainer = build(cfg)
    trainer.test(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    results = scalars(trainer.callback_metrics)
    finish(trainer, f"varsac test of {ckpt_path}", results, {})
    return results.get("test/accuracy")


def with_checkpoint_config(cfg: DictConfig, stored: DictConfig) -> DictConfig:
    """The checkpoint's data, task, model and channels, with this command's overrides on top."""
    groups, channels = ("data", "task", "model"), ("image_channels", "proxy_channels")

    def applies(override: str) -> bool:
        key = override.split("=", 1)[0].lstrip("+~")
        in_group = "." in key and key.split(".")[0] in groups
        return "=" in override and (key in channels or in_group)

    overrides = [o for o in HydraConfig.get().overrides.task if applies(o)]
    OmegaConf.set_struct(cfg, False)
    for key in groups + channels:
        if key in stored:
            cfg[key] = stored[key]
    merged = OmegaConf.merge(cfg, OmegaConf.from_dotlist([o.lstrip("+~") for o in overrides]))
    OmegaConf.set_struct(merged, True)
    return merged
