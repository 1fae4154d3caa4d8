"""The training plumbing every varsac classifier shares: metrics, logging, optimiser, NaN guard.

A subclass supplies ``objective``: from a batch to the loss, the class
log-probabilities and named loss parts to log; or, when the loss is the
classification NLL alone, ``forward``: images → class log-probabilities.
"""

import math
from collections.abc import Callable, Iterable
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torchmetrics import MaxMetric

from varsac.errors import ConfigError
from varsac.tasks import Task

Batch = dict[str, Any]
OptimizerFactory = Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer]
# (optimizer, total_steps=N) → a scheduler stepped every optimiser step (models/schedules.py)
SchedulerFactory = Callable[..., torch.optim.lr_scheduler.LRScheduler]


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; raised before the bad step updates anything."""


class ImageClassifier(L.LightningModule):
    """Base LightningModule: ``objective`` in, metrics and optimisation out."""

    def __init__(
        self,
        task: Task,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
    ) -> None:
        super().__init__()
        self.task = task
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.train_metrics = task.metrics().clone(prefix="train/")
        self.val_metrics = task.metrics().clone(prefix="val/")
        self.test_metrics = task.metrics().clone(prefix="test/")
        self.val_accuracy_best = MaxMetric()

    def objective(self, batch: Batch, sample: bool) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """Return (loss, (B, K) class log-probabilities, {name: scalar loss part}).

        By default the loss is the classification NLL of ``forward(batch["image"])``.
        """
        log_probs = self(batch["image"])
        loss = self.task.nll(log_probs, batch["target"]).mean()
        return loss, log_probs, {"classification_nll": loss}

    def _step(self, batch: Batch, batch_idx: int, stage: str) -> Tensor:
        training = stage == "train"
        loss, log_probs, parts = self.objective(batch, sample=training)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"the {stage} loss is {loss.item()} at epoch {self.current_epoch}, "
                f"global step {self.global_step}, batch {batch_idx} "
                f"({', '.join(f'{k}={v.item():.4g}' for k, v in parts.items())}); "
                "nothing was updated with it. Lower the learning rate or tighten "
                "trainer.gradient_clip_val, and resume from the last good checkpoint."
            )
        metrics = getattr(self, f"{stage}_metrics")
        metrics.update(self.task.predict(log_probs), batch["target"].long())
        size = log_probs.shape[0]
        # Under DDP, evaluation losses are averaged over all ranks (metrics sync themselves);
        # the training loss stays per rank, which spares an all-reduce per step.
        self.log(
            f"{stage}/loss",
            loss,
            prog_bar=training,
            on_step=training,
            on_epoch=True,
            batch_size=size,
            sync_dist=not training,
        )
        self.log_dict(
            {f"{stage}/{k}": v for k, v in parts.items()},
            on_step=False,
            on_epoch=True,
            batch_size=size,
            sync_dist=not training,
        )
        self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=not training)
        return loss

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        return self._step(batch, batch_idx, "train")

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._step(batch, batch_idx, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._step(batch, batch_idx, "test")

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        self.val_accuracy_best(self.val_metrics["accuracy"].compute())
        self.log("val/accuracy_best", self.val_accuracy_best.compute(), prog_bar=True)

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        total_steps = self.trainer.estimated_stepping_batches
        if not math.isfinite(total_steps):
            raise ConfigError(
                "a learning-rate schedule spans the run: set trainer.max_epochs or "
                "trainer.max_steps, or model.scheduler=null"
            )
        scheduler = self.scheduler_factory(optimizer, total_steps=int(total_steps))
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }
