"""The localized spatial transformer (LST): glimpses read off image sources (docs/design.md §5).

The spatial transformer samples a glimpse bilinearly from the whole image. The
LST computes the same sampling grid, maps it to pixel coordinates of one pyramid
level of an image source (varsac.image_source: a pyramid TIFF, or any image read
region by region), reads only the bounding box of the grid (plus the bilinear
support), re-expresses the grid relative to that region and samples it. Bilinear
sampling touches only the four pixels around each sample point, so at level 0
the glimpse and its gradients with respect to the crop are exactly those of the
spatial transformer; at coarser levels the glimpse is the anti-aliased version
of the same crop. The region read is about window² pixels whatever the image
size, so memory and time stay flat as images grow.
"""

import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from varsac.image_source import ImageSource, to_float
from varsac.models.spatial_transformer import sampling_grid


class Region(NamedTuple):
    """A rectangle of one level, inclusive pixel bounds; empty when left > right."""

    level: int
    left: int
    top: int
    right: int
    bottom: int


def choose_level(levels: Sequence[tuple[int, int]], scale: float, window: int) -> int:
    """The coarsest level whose pixel pitch is at most the glimpse's sampling pitch.

    A glimpse of ``window`` samples over a ``scale`` fraction of the side needs a
    level at least window / scale pixels on each side.
    """
    needed = window / scale
    chosen = 0
    for index, (width, height) in enumerate(levels):
        if width >= needed and height >= needed:
            chosen = index
    return chosen


def to_pixels(grid: Tensor, width: int, height: int) -> tuple[Tensor, Tensor]:
    """Normalised (..., 2) sample points → pixel coordinates (x, y) of a width × height level."""
    return (grid[..., 0] + 1) * width / 2 - 0.5, (grid[..., 1] + 1) * height / 2 - 0.5


def bounding_region(grid: Tensor, level: int, width: int, height: int) -> Region:
    """The pixels that bilinear sampling of ``grid`` (w, w, 2) reads at ``level``, clipped."""
    x, y = to_pixels(grid.detach(), width, height)
    # floor(p) and floor(p) + 1 are read; one more pixel each side absorbs rounding
    left = max(math.floor(x.min().item()) - 1, 0)
    top = max(math.floor(y.min().item()) - 1, 0)
    right = min(math.floor(x.max().item()) + 2, width - 1)
    bottom = min(math.floor(y.max().item()) + 2, height - 1)
    return Region(level, left, top, right, bottom)


def read(image: ImageSource, region: Region) -> np.ndarray | None:
    """The pixels of ``region``, or None when it is empty (the glimpse lies outside the image)."""
    if region.left > region.right or region.top > region.bottom:
        return None
    return image.read_region(
        region.level,
        region.left,
        region.top,
        region.right - region.left + 1,
        region.bottom - region.top + 1,
    )


# Padded pixels (N · height · width) sampled in one grid_sample call at most: 2²⁴, 64 MiB of
# float32 per channel (hundreds of glimpses of the usual sizes, a few of full resolution)
CHUNK_VALUES = 2**24


class LocalizedSpatialTransformer(nn.Module):
    """Bilinear glimpses of image sources, read region by region.

    (B,) image sources and (B, T, 3) crops → (B, T, C, window, window) glimpses in [0, 1],
    the interface of ``SpatialTransformer``. ``max_level`` caps the pyramid level
    (0 reads full resolution, exactly the spatial transformer); the reads of a
    batch run on ``workers`` threads, and its glimpses are sampled together, in
    chunks (``CHUNK_VALUES``).
    """

    def __init__(self, window: int = 32, max_level: int | None = None, workers: int = 8) -> None:
        super().__init__()
        self.window = window
        self.max_level = max_level
        self.workers = workers

    def forward(self, images: Sequence[ImageSource], crops: Tensor) -> Tensor:
        batch, steps = crops.shape[:2]
        if len(images) != batch:
            raise ValueError(f"{len(images)} images for a batch of {batch} crops")
        grid = sampling_grid(crops, self.window).flatten(0, 1)  # (B·T, w, w, 2)
        owners = [image for image in images for _ in range(steps)]  # the image of each glimpse
        regions = []
        scales = crops[..., 0].flatten().tolist()
        for image, scale, points in zip(owners, scales, grid, strict=True):
            level = choose_level(image.levels, scale, self.window)
            if self.max_level is not None:
                level = min(level, self.max_level)
            regions.append(bounding_region(points, level, *image.levels[level]))
        with ThreadPoolExecutor(self.workers) as pool:
            patches = list(pool.map(read, owners, regions))
        glimpses = []
        start = 0
        while start < len(patches):  # in chunks of at most CHUNK_VALUES padded pixel values
            stop, height, width = start, 1, 1
            while stop < len(patches):
                h, w = (1, 1) if patches[stop] is None else patches[stop].shape[:2]
                grown = (max(height, h), max(width, w))
                if stop > start and (stop - start + 1) * grown[0] * grown[1] > CHUNK_VALUES:
                    break
                height, width = grown
                stop += 1
            chunk = slice(start, stop)
            glimpses.append(self.sample(grid[chunk], owners[chunk], regions[chunk], patches[chunk]))
            start = stop
        return torch.cat(glimpses).view(batch, steps, *glimpses[0].shape[1:])

    def sample(
        self,
        grid: Tensor,
        images: Sequence[ImageSource],
        regions: Sequence[Region],
        patches: Sequence[np.ndarray | None],
    ) -> Tensor:
        """(N, C, w, w) glimpses from their regions' pixels, in one ``grid_sample``: the
        patches padded with zeros to the largest, each grid (N, w, w, 2) re-expressed relative
        to its patch. Bilinear weights outside a patch fall on zeros, as ``grid_sample``
        pads; a glimpse wholly outside its image (no patch) is zeros."""
        height = max((p.shape[0] for p in patches if p is not None), default=1)
        width = max((p.shape[1] for p in patches if p is not None), default=1)
        canvas = np.zeros((len(patches), height, width, images[0].channels), np.uint8)
        origins, sizes = [], []
        for index, (image, region, patch) in enumerate(zip(images, regions, patches, strict=True)):
            if patch is not None:
                canvas[index, : patch.shape[0], : patch.shape[1]] = patch
                origins.append((region.left, region.top))
            else:  # far outside the canvas: grid_sample reads zeros
                origins.append((-4 * width, -4 * height))
            sizes.append(image.levels[region.level])
        pixels = to_float(canvas, grid.device, grid.dtype)  # (N, C, height, width)
        origin = torch.tensor(origins, dtype=grid.dtype, device=grid.device)[:, None, None]
        size = torch.tensor(sizes, dtype=grid.dtype, device=grid.device)[:, None, None]
        points = (grid + 1) * size / 2 - 0.5  # pixel coordinates (x, y) of each level
        extent = torch.tensor([width, height], dtype=grid.dtype, device=grid.device)
        local = (2 * (points - origin) + 1) / extent - 1
        return F.grid_sample(
            pixels, local, mode="bilinear", padding_mode="zeros", align_corners=False
        )
