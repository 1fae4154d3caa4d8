"""Lightning callbacks of varsac."""

import os
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import WandbLogger

from varsac.models.classifier import Batch
from varsac.pyramid import PyramidTIFF
from varsac.viz import SaccadePicture, describe, draw_saccades


def displayable(image: torch.Tensor | PyramidTIFF, side: int = 256) -> torch.Tensor:
    """(C, H, W) in [0, 1]: the image itself, or a pyramid's smallest level that fits ``side``."""
    if isinstance(image, torch.Tensor):
        return image
    return torch.from_numpy(image.read_proxy(side)).permute(2, 0, 1).float() / 255


class SaccadePictures(Callback):
    """After every validation epoch, draws where the model looked on a fixed set of samples.

    The first ``num_samples`` validation samples are kept; each epoch their
    saccades go to ``dirpath/epoch_NNN.png`` and to every logger that takes images.
    Images may be tensors or pyramid TIFFs (drawn from a small pyramid level).
    """

    def __init__(self, dirpath: str, num_samples: int = 6) -> None:
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
        if self.samples is None and batch_idx == 0 and dataloader_idx == 0:
            self.samples = {
                k: v[: self.num_samples].detach().cpu() if isinstance(v, torch.Tensor)
                else list(v[: self.num_samples])
                for k, v in batch.items()
            }  # fmt: skip

    def on_validation_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or self.samples is None:
            return
        samples, images = self.samples, self.samples["image"]
        with torch.no_grad():
            saccades = module.saccade(
                images.to(module.device) if isinstance(images, torch.Tensor) else images,
                samples["proxy"].to(module.device),
                sample=False,
            )
        predictions = module.task.predict(saccades.log_probs).cpu()
        names = getattr(trainer.datamodule, "class_names", None)
        pictures = [
            SaccadePicture(
                image=displayable(images[i]),
                proxy=samples["proxy"][i],
                boxes=saccades.boxes[i].cpu(),
                glimpses=saccades.glimpses[i].cpu(),
                caption=f"predicted {describe(predictions[i], names)}   "
                f"true {describe(samples['target'][i].long(), names)}",
            )
            for i in range(len(predictions))
        ]
        sheet = draw_saccades(pictures)
        self.dirpath.mkdir(parents=True, exist_ok=True)
        path = self.dirpath / f"epoch_{trainer.current_epoch:03d}.png"
        partial = path.with_suffix(".png.partial")
        sheet.save(partial, format="PNG")
        os.replace(partial, path)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(
                    "val/saccades",
                    [sheet],
                    step=trainer.global_step,
                    caption=[f"epoch {trainer.current_epoch}"],
                )
