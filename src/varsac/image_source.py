"""Image sources: what the croppers, the baselines and the pictures read an image through.

An ``ImageSource`` is an image of any size, read a rectangle at a time at one of
several resolutions: ``levels`` ((width, height) per level, level 0 the full
resolution, each next one about half the one before), ``channels``,
``read_region`` (uint8 pixels of a rectangle of one level) and ``read_proxy``
(the whole image area-resized to a small square). A pyramid TIFF
(``varsac.pyramid.PyramidTIFF``) is one; a whole-slide image would be another.

Images small enough to hold in memory travel as float tensors instead, (C, H, W)
in [0, 1] (a batch (B, C, H, W)), which the spatial transformer samples on the
device, with gradients. The functions here take either kind, so that no model
asks which kind it was given, and ``to_float`` is the one conversion of uint8
(…, H, W, C) pixels to float (…, C, H, W).
"""

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm


class ImageSource(Protocol):
    """An image read region by region, at several resolutions (see the module docstring)."""

    @property
    def levels(self) -> list[tuple[int, int]]:
        """(width, height) of each level, level 0 the full resolution."""

    @property
    def channels(self) -> int:
        """Samples per pixel (1 grey, 3 RGB), the last axis of every read."""

    def read_region(self, level: int, left: int, top: int, width: int, height: int) -> np.ndarray:
        """uint8 (height, width, channels): a rectangle that lies inside ``level``."""

    def read_proxy(self, size: int) -> np.ndarray:
        """uint8 (size, size, channels): the whole image resized to size², without aliasing."""


Image = Tensor | ImageSource  # one image: float (C, H, W) in [0, 1], or a source
Images = Tensor | Sequence[ImageSource]  # a batch: float (B, C, H, W) in [0, 1], or sources


def to_float(
    pixels: np.ndarray, device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> Tensor:
    """uint8 (…, H, W, C) pixels → float (…, C, H, W) in [0, 1] (float32 unless ``dtype``),
    converted on ``device`` (the uint8 pixels are moved, a quarter of the floats' bytes)."""
    moved = torch.from_numpy(np.ascontiguousarray(pixels)).to(device)
    return moved.to(dtype or torch.float32).div_(255).movedim(-1, -3)


def full_size(image: Image) -> tuple[int, int]:
    """(width, height) of the image at full resolution."""
    if isinstance(image, Tensor):
        return image.shape[-1], image.shape[-2]
    return image.levels[0]


def read_full_resolution(image: Image, left: int, top: int, width: int, height: int) -> Tensor:
    """Float (C, height, width) in [0, 1]: a rectangle of the full-resolution image."""
    if isinstance(image, Tensor):
        return image[:, top : top + height, left : left + width]
    return to_float(image.read_region(0, left, top, width, height))


def read_proxies(images: Sequence[ImageSource], size: int) -> Tensor:
    """(N, C, size, size) float32 proxies in [0, 1], each the source's ``read_proxy``, read on
    a thread per core (sources release the GIL while they decode)."""

    def one(image: ImageSource) -> np.ndarray:
        return image.read_proxy(size)

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        reads = pool.map(one, images)
        arrays = list(tqdm(reads, total=len(images), desc="proxies", disable=len(images) < 1000))
    return to_float(np.stack(arrays))


def resized(images: Images, size: int | None) -> Tensor:
    """The batch as float (B, C, size, size) in [0, 1]: tensors resized bilinearly with
    antialiasing (as they are when ``size`` is None), sources read at size² (``read_proxy``)."""
    if isinstance(images, Tensor):
        if size is None or images.shape[-2:] == (size, size):
            return images
        return F.interpolate(
            images, size=(size, size), mode="bilinear", align_corners=False, antialias=True
        )
    if size is None:
        raise ValueError("image sources are read at a given size: set model.input_size")
    return read_proxies(images, size)


def thumbnail(image: Image, side: int) -> Tensor:
    """Float (C, H, W) in [0, 1] to draw: a tensor as it is, a source at side² (``read_proxy``)."""
    if isinstance(image, Tensor):
        return image
    return to_float(image.read_proxy(side))
