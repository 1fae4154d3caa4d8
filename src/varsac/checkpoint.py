"""The checkpoint contract: what a varsac checkpoint holds and how it is read, as weights only.

A checkpoint is Lightning's (``state_dict``, ``epoch``, ``global_step``, the
loops', callbacks' and optimisers' states) plus two entries of varsac's:

- ``CONFIG_KEY``: the composed config that trained it, as plain containers,
  so ``varsac test`` and ``varsac predict`` can rebuild the data and the model;
- ``DATA_KEY``: what prediction needs of the data (class names, whether the
  proxy is the image's own thumbnail).

Everything in it is tensors, containers and primitives, so it loads with
``torch.load(weights_only=True)``: an unpickler that builds only those and
refuses any other global. That is the only way varsac loads a checkpoint
(``load_checkpoint``, which ``CheckpointFiles`` of varsac.checkpoint_files
gives Lightning for resume and test), so a file sent by someone else cannot run
code when it is opened. Reading needs torch alone, not Lightning: prediction
loads checkpoints without it.
"""

import os
import pickle
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from varsac.errors import ConfigError

CONFIG_KEY = "varsac_config"  # where a checkpoint keeps the config that trained it
ZIP_MAGIC = b"PK\x03\x04"  # how every file torch.save writes begins
DATA_KEY = "varsac_data"  # and what prediction needs of the data: class names, the proxy's source


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


def stored_config(checkpoint: dict[str, Any]) -> DictConfig | None:
    """The config that trained ``checkpoint`` (``CONFIG_KEY``), None if it holds none.

    A checkpoint written while the channels were top-level keys (``image_channels``,
    ``proxy_channels``) gets them where they are now, as ``data.image_channels`` and
    ``data.proxy_channels``.
    """
    stored = checkpoint.get(CONFIG_KEY)
    if stored is None:
        return None
    cfg = OmegaConf.create(stored)
    for key in ("image_channels", "proxy_channels"):
        if key in cfg and "data" in cfg:
            cfg.data.setdefault(key, cfg.pop(key))
    return cfg


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


def save_initial_checkpoint(
    overrides: Sequence[str], class_names: Sequence[str], path: str | os.PathLike[str]
) -> Path:
    """Save the model that ``varsac fit OVERRIDES`` would train, with its initial weights
    (seed 0), as fit saves it: what times or tests prediction without a training first."""
    from hydra import compose, initialize_config_module
    from hydra.utils import instantiate

    with initialize_config_module("varsac.conf", version_base="1.3"):
        cfg = compose("fit", overrides=list(overrides))
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    stored = {
        key: OmegaConf.to_container(cfg[key], resolve=True) for key in ("model", "task", "data")
    }
    data = {"class_names": list(class_names), "proxy_from_image": True}
    torch.save({"state_dict": model.state_dict(), CONFIG_KEY: stored, DATA_KEY: data}, path)
    return Path(path)
