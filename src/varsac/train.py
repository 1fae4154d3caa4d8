"""What ``varsac fit`` and ``varsac test`` do with a composed config: build the data, the model
and the trainer, then fit and test. The run around them (its directory, ranks, checkpoint and
results file) is varsac.run's; what a checkpoint holds is varsac.checkpoint's."""

import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from varsac.checkpoint import load_checkpoint, stored_config
from varsac.checkpoint_files import CheckpointFiles, StoreConfig
from varsac.config_check import check_config
from varsac.errors import ConfigError
from varsac.files import NoSpaceError, remove_partial_files
from varsac.models.classifier import NonFiniteLossError
from varsac.run import (
    job_on_all_ranks,
    resolve_checkpoint,
    run_dir,
    with_checkpoint_config,
    write_results,
)

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


def checkpoint_paths(trainer: L.Trainer) -> dict[str, str]:
    """The best and last checkpoints written by this run (read them before ``test`` reloads one):
    the monitored ``ModelCheckpoint`` keeps the best, the one without a monitor the newest."""
    paths = {}
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.best_model_path:
            paths["best" if callback.monitor else "last"] = callback.best_model_path
    return paths


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
    write_results(trainer, "varsac fit finished", results, checkpoints)
    return results.get("val/accuracy_best")


@job_on_all_ranks("test")
def test(cfg: DictConfig) -> float | None:
    """Evaluate ``ckpt_path`` on the test split, with the data and model it was trained with."""
    ckpt_path = resolve_checkpoint(cfg)
    log.info("run directory: %s", run_dir())
    stored = stored_config(load_checkpoint(ckpt_path))
    if stored is None:
        log.warning(
            "%s holds no varsac config; using the data and model of this command", ckpt_path
        )
    else:
        cfg = with_checkpoint_config(cfg, stored)
    L.seed_everything(cfg.seed, workers=True)
    datamodule, model, trainer = build(cfg)
    trainer.test(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    results = scalars(trainer.callback_metrics)
    write_results(trainer, f"varsac test of {ckpt_path}", results, {})
    return results.get("test/accuracy")
