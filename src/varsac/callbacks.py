"""Lightning callbacks of varsac."""

from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import WandbLogger
from PIL import Image

from varsac.files import write_png_atomically
from varsac.image_source import thumbnail
from varsac.models.classifier import Batch
from varsac.models.saccades import Saccading
from varsac.viz import SaccadePicture, boxed_image, describe, draw_saccades, glimpse_strip

# The per-sample table sent to W&B after each validation epoch, under ``val/glimpses``.
GLIMPSE_COLUMNS = ["image", "glimpses", "prediction", "label", "epoch"]
# Samples drawn in a sheet of saccades (``SaccadePictures``, ``learning_curve.py``).
PICTURED_SAMPLES = 6


class SaccadePictures(Callback):
    """After every validation epoch, draws where the model looked on a fixed set of samples.

    The first ``num_samples`` validation samples are kept; each epoch their
    saccades go to ``dirpath/epoch_NNN.png``, and to every W&B logger as that picture
    (``val/saccades``) and as a table with a row per sample (``val/glimpses``: the image with
    numbered boxes, the glimpses, the prediction, the label, the epoch).
    Images may be tensors or image sources (pyramid TIFFs, drawn at 256²). A model
    that does not saccade (a baseline) has nothing to draw: the callback does nothing.
    """

    def __init__(self, dirpath: str, num_samples: int = PICTURED_SAMPLES) -> None:
        self.dirpath = Path(dirpath)
        self.num_samples = num_samples
        self.samples: Batch | None = None

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        module: L.LightningModule,
        outputs: object,
        batch: Batch,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not isinstance(module, Saccading):
            return
        if self.samples is None and batch_idx == 0 and dataloader_idx == 0:
            self.samples = first_samples(batch, self.num_samples)

    def on_validation_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or self.samples is None:
            return
        names = getattr(trainer.datamodule, "class_names", None)
        pictures = saccade_pictures(module, self.samples, names)
        sheet = draw_saccades(pictures)
        write_png_atomically(self.dirpath / f"epoch_{trainer.current_epoch:03d}.png", sheet)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                log_to_wandb(logger, sheet, pictures, trainer.current_epoch, trainer.global_step)


def first_samples(batch: Batch, n: int) -> Batch:
    """The first ``n`` samples of ``batch``, on the CPU (image sources stay as they are)."""
    return {
        k: v[:n].detach().cpu() if isinstance(v, torch.Tensor) else list(v[:n])
        for k, v in batch.items()
    }


def saccade_pictures(
    module: Saccading, samples: Batch, class_names: Sequence[str] | None = None
) -> list[SaccadePicture]:
    """Where ``module`` looks on each sample of ``samples`` (a batch on the CPU: image
    tensors or image sources, proxies, targets), under its posterior mean, one picture a
    sample."""
    images = samples["image"]
    with torch.no_grad():
        saccades = module.saccade(
            images.to(module.device) if isinstance(images, torch.Tensor) else images,
            samples["proxy"].to(module.device),
            sample=False,
            scale_bounds=samples.get("scale_bounds"),
        )
    predictions = module.task.predict(saccades.log_probs).cpu()
    return [
        SaccadePicture(
            image=thumbnail(images[i], side=256),
            proxy=samples["proxy"][i],
            boxes=saccades.boxes[i].cpu(),
            glimpses=saccades.glimpses[i].cpu(),
            prediction=describe(predictions[i], class_names),
            label=describe(samples["target"][i].long(), class_names),
        )
        for i in range(len(predictions))
    ]


def log_to_wandb(
    logger: WandbLogger, sheet: Image.Image, pictures: list[SaccadePicture], epoch: int, step: int
) -> None:
    """The sheet as an image panel, and a table with a row per sample (``GLIMPSE_COLUMNS``)."""
    import wandb  # only with a W&B logger: slow to import

    logger.log_image("val/saccades", [sheet], step=step, caption=[f"epoch {epoch}"])
    rows = [
        [
            wandb.Image(boxed_image(picture.image, picture.boxes)),
            wandb.Image(glimpse_strip(picture.glimpses)),
            picture.prediction,
            picture.label,
            epoch,
        ]
        for picture in pictures
    ]
    logger.log_table("val/glimpses", columns=GLIMPSE_COLUMNS, data=rows, step=step)
