"""Lightning's side of the checkpoint contract (varsac.checkpoint): what goes in, how files move.

``StoreConfig`` adds varsac's entries to every checkpoint Lightning saves;
``CheckpointFiles``, the trainer's checkpoint plugin, writes them under a
temporary name and renames them into place (``varsac.files``), so a process
killed while saving leaves the previous file whole, and reads them through
``load_checkpoint``, as weights only.
"""

import io
import os
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, OmegaConf

from varsac.checkpoint import CONFIG_KEY, DATA_KEY, load_checkpoint
from varsac.files import replace_atomically


class StoreConfig(Callback):
    """Puts the composed config into every checkpoint, so ``varsac test`` can rebuild the run,
    and the class names and whether the proxy is the image's thumbnail, for ``varsac predict``."""

    def __init__(self, cfg: DictConfig) -> None:
        self.config = OmegaConf.to_container(cfg, resolve=True)

    def on_save_checkpoint(
        self, trainer: L.Trainer, module: L.LightningModule, checkpoint: dict
    ) -> None:
        checkpoint[CONFIG_KEY] = self.config
        data = trainer.datamodule
        names = getattr(data, "class_names", None)
        checkpoint[DATA_KEY] = {  # plain lists and strings, which load as weights only
            "class_names": None if names is None else [str(name) for name in names],
            "proxy_from_image": getattr(data, "proxy_from_image", True),
        }


class CheckpointFiles(TorchCheckpointIO):
    """Lightning's checkpoint files, read as weights only and written atomically.

    Given to the trainer as a plugin, this is what ``ckpt_path=`` resume,
    ``trainer.test(ckpt_path=…)`` and ``ModelCheckpoint`` go through.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike[str], storage_options: Any = None
    ) -> None:
        if storage_options is not None:
            raise TypeError("varsac's checkpoint files take no storage_options")
        # Serialised in memory first, as Lightning does: torch's zip writer reports a short
        # write (a full disc) as a bare RuntimeError, a plain file write as the OSError it is.
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        replace_atomically(path, lambda handle: handle.write(buffer.getbuffer()))

    def load_checkpoint(
        self, path: str | os.PathLike[str], map_location: Any = None, weights_only: Any = None
    ) -> dict[str, Any]:
        return load_checkpoint(path)
