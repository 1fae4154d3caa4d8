"""The checkpoint contract: what a varsac checkpoint holds, how it is read, how it is written.

A checkpoint is Lightning's (``state_dict``, ``epoch``, ``global_step``, the
loops', callbacks' and optimisers' states) plus two entries of varsac's:

- ``CONFIG_KEY``: the composed config that trained it, as plain containers,
  so ``varsac test`` and ``varsac predict`` can rebuild the data and the model;
- ``DATA_KEY``: what prediction needs of the data (class names, whether the
  proxy is the image's own thumbnail).

Everything in it is tensors, containers and primitives, so it loads with
``torch.load(weights_only=True)``: an unpickler that builds only those and
refuses any other global. That is the only way varsac loads a checkpoint
(``load_checkpoint``, and ``CheckpointFiles`` for Lightning's resume and
test), so a file sent by someone else cannot run code when it is opened.
Checkpoints are written under a temporary name and renamed into place
(``varsac.files``): a process killed while saving leaves the previous file
whole.
"""

import io
import os
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, OmegaConf

from varsac.errors import ConfigError
from varsac.files import replace_atomically

CONFIG_KEY = "varsac_config"  # where a checkpoint keeps the config that trained it
ZIP_MAGIC = b"PK\x03\x04"  # how every file torch.save writes begins
DATA_KEY = "varsac_data"  # and what prediction needs of the data: class names, the proxy's source


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


class CheckpointError(ConfigError):
    """A file that cannot be loaded as a varsac checkpoint; the message names it and says why."""


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The checkpoint at ``path``, on the CPU, read as weights only: it never runs code.

    Raises ``CheckpointError`` (one line, naming the file) for a file that is
    missing, truncated, not a checkpoint, or that would need to run code (a
    pickled object of a class other than tensors and containers).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with warnings.catch_warnings():  # torch warns of pickle protocols before refusing
            warnings.simplefilter("ignore", UserWarning)
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"GLOBAL (\S+)", str(error))
        what = f" ({found.group(1)})" if found else ""
        raise CheckpointError(
            f"{path} was refused: it holds objects{what} that only running code can build, not "
            "just weights and settings. varsac loads checkpoints as weights only, so a file "
            "from elsewhere cannot run anything; ask its author for one written by varsac fit"
        ) from None
    except Exception as error:  # on arbitrary bytes torch's unpickler fails in any way
        raise CheckpointError(f"{path} {unreadable_because(path, error)}") from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError(
            f"{path} holds a {type(checkpoint).__name__}, not a checkpoint: was it written by "
            "varsac fit?"
        )
    return checkpoint


def load_varsac_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``load_checkpoint(path)``, which must also hold the config that trained it."""
    checkpoint = load_checkpoint(path)
    if CONFIG_KEY not in checkpoint:
        raise CheckpointError(f"{path} holds no varsac config: was it written by varsac fit?")
    return checkpoint


def unreadable_because(path: Path, error: BaseException) -> str:
    """Why torch could not read ``path``, in words: empty, damaged, or not a checkpoint at all."""
    size = path.stat().st_size
    if size == 0:
        return "is empty (0 bytes): the copy or the download did not finish"
    with path.open("rb") as handle:
        zipped = handle.read(4) == ZIP_MAGIC
    said = " ".join(str(error).split()) or type(error).__name__
    if zipped:
        return f"is a damaged or truncated checkpoint ({size} bytes; torch: {said}): copy it again"
    return "is not a checkpoint: torch.save writes a zip archive, and this file is not one"


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
