"""Datasets whose images are pyramid TIFFs: batches carry the files, not the pixels.

A sample's ``image`` is a ``PyramidTIFF`` (a path and lazily opened pages), an
image source (varsac.image_source) that the localized spatial transformer reads
the glimpses from. The proxies are read once, when the dataset is made.
"""

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import Dataset, default_collate

from varsac.pyramid import PyramidTIFF


def collate(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Like ``default_collate``, but values that are not tensors (pyramids) stay a list."""
    tensors = [k for k, v in samples[0].items() if isinstance(v, torch.Tensor)]
    batch = default_collate([{k: s[k] for k in tensors} for s in samples])
    batch.update({k: [s[k] for s in samples] for k in samples[0] if k not in tensors})
    return batch


class PyramidDataset(Dataset):
    """Samples of pyramid TIFFs with their proxies and targets; a sample is a dict:

    image: a ``PyramidTIFF``; proxy: float32 (C, P, P) in [0, 1]; target: int64 ().
    """

    def __init__(
        self, images: Sequence[PyramidTIFF], proxies: torch.Tensor, targets: torch.Tensor
    ) -> None:
        self.images = list(images)
        self.proxies = proxies
        self.targets = targets

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {
            "image": self.images[index],
            "proxy": self.proxies[index],
            "target": self.targets[index],
        }
