"""Image sources: what the croppers, the baselines and the pictures read an image through.

An ``ImageSource`` is an image of any size, read a rectangle at a time at one of
several resolutions: ``levels`` ((width, height) per level, level 0 the full
resolution, each next one coarser), ``channels``,
``read_region`` (uint8 pixels of a rectangle of one level) and ``read_proxy``
(the whole image area-resized to a small square). A pyramid TIFF
(``varsac.pyramid.PyramidTIFF``) is one, a whole-slide image (``varsac.slides.Slide``)
another. A ``SquareView`` shows a source that is not square as a square: the model's
crops are squares of the normalised frame of the image, so on a source of another shape
a glimpse would be stretched.

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
import pyvips
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

MAX_PROXY_PIXELS = 2**26  # pixels of the largest level that a proxy is read from whole


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


def resized_pixels(pixels: np.ndarray, size: int) -> np.ndarray:
    """uint8 (H, W, C) → (size, size, C), squashed to a square where it is not one, without
    aliasing (libvips ``resize``: box shrink, then a Lanczos-3 kernel). Computed on this
    thread, never on libvips's worker threads (which a fork would lose)."""
    height, width, channels = pixels.shape
    page = pyvips.Image.new_from_array(np.ascontiguousarray(pixels))
    resized = page.resize(size / width, vscale=size / height)
    fetched = pyvips.Region.new(resized).fetch(0, 0, size, size)
    return np.frombuffer(fetched, np.uint8).reshape(size, size, channels).copy()


class SquareView:
    """``source`` padded on the right and bottom to a square, at every level, with
    ``background`` (uint8, one value per channel, or one for all).

    Level ``k`` is side² with side = max(width, height) of the source's level ``k``; the
    source's pixels keep their place from the top-left corner, the rest is ``background``.
    A fraction of the view's side is then one length on both axes, and a box in pixels is
    fraction × side from the top-left corner of the source. ``read_proxy`` is the padded
    square's. Pickles and forks as its source does.
    """

    def __init__(self, source: ImageSource, background: int | Sequence[int]) -> None:
        fill = np.broadcast_to(np.asarray(background), (source.channels,))
        if not ((fill >= 0) & (fill <= 255)).all():
            raise ValueError(f"background must be uint8 values, got {background}")
        self.source = source
        self.background = fill.astype(np.uint8)  # (channels,)

    def __repr__(self) -> str:
        return f"SquareView({self.source!r}, background={self.background.tolist()})"

    @property
    def levels(self) -> list[tuple[int, int]]:
        return [(max(width, height),) * 2 for width, height in self.source.levels]

    @property
    def channels(self) -> int:
        return self.source.channels

    def read_region(self, level: int, left: int, top: int, width: int, height: int) -> np.ndarray:
        """uint8 (height, width, channels) of the padded ``level``: the source's pixels where
        it has some, ``background`` elsewhere."""
        if not 0 <= level < len(self.source.levels):
            raise ValueError(f"{self.source!r} has levels 0..{len(self.source.levels) - 1}")
        side = self.levels[level][0]
        if not (0 <= left < left + width <= side and 0 <= top < top + height <= side):
            raise ValueError(
                f"{self!r}: rectangle left={left} top={top} width={width} height={height} "
                f"is not inside level {level} ({side}×{side})"
            )
        region = np.empty((height, width, self.channels), np.uint8)
        region[...] = self.background
        source_width, source_height = self.source.levels[level]
        inside = (min(left + width, source_width) - left, min(top + height, source_height) - top)
        if inside[0] > 0 and inside[1] > 0:
            region[: inside[1], : inside[0]] = self.source.read_region(level, left, top, *inside)
        return region

    def read_level(self, level: int) -> np.ndarray:
        """uint8 (side, side, channels): the whole of the padded ``level`` (small levels)."""
        side = self.levels[level][0]
        return self.read_region(level, 0, 0, side, side)

    def proxy_level(self, size: int) -> int:
        """The coarsest level whose side is still at least ``size`` (else level 0)."""
        fitting = [level for level, (side, _) in enumerate(self.levels) if side >= size]
        return fitting[-1] if fitting else 0

    def read_proxy(self, size: int) -> np.ndarray:
        """uint8 (size, size, channels): the padded square resized from ``proxy_level(size)``
        (``resized_pixels``). A level of more than ``MAX_PROXY_PIXELS`` is refused."""
        if size <= 0:
            raise ValueError(f"proxy size must be positive, got {size}")
        level = self.proxy_level(size)
        width, height = self.source.levels[level]
        if width * height > MAX_PROXY_PIXELS:
            raise ValueError(
                f"{self.source!r}: its coarsest level is {width}×{height} pixels, too large to "
                f"read whole for a {size}² proxy: give it coarser levels"
            )
        return resized_pixels(self.read_level(level), size)


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
