"""The localized spatial transformer (LST): glimpses read off pyramid TIFFs (DESIGN.md §3).

The spatial transformer samples a glimpse bilinearly from the whole image. The
LST computes the same sampling grid, maps it to pixel coordinates of one pyramid
level, reads only the bounding box of the grid (plus the bilinear support) from
disk, re-expresses the grid relative to that region and samples it. Bilinear
sampling touches only the four pixels around each sample point, so at level 0
the glimpse and its gradients with respect to the crop are exactly those of the
spatial transformer; at coarser levels the glimpse is the anti-aliased version
of the same crop. The region read is about window² pixels whatever the image
size, so memory and time stay flat as images grow.
"""

import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from varsac.models.spatial_transformer import sampling_grid


class Pyramid(Protocol):
    """What the LST needs of an image: its level sizes and region reads."""

    levels: list[tuple[int, int]]  # (width, height) per level, level 0 the full resolution
    channels: int

    def read_region(self, level: int, left: int, top: int, width: int, height: int) -> np.ndarray:
        """uint8 (height, width, channels) pixels of a rectangle inside ``level``."""


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


def read(image: Pyramid, region: Region) -> np.ndarray | None:
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


class LocalizedSpatialTransformer(nn.Module):
    """Bilinear glimpses of pyramid images, read region by region.

    (B,) pyramids and (B, T, 3) crops → (B, T, C, window, window) glimpses in [0, 1],
    the interface of ``SpatialTransformer``. ``max_level`` caps the pyramid level
    (0 reads full resolution, exactly the spatial transformer); the reads of a
    batch run on ``workers`` threads.
    """

    def __init__(self, window: int = 32, max_level: int | None = None, workers: int = 8) -> None:
        super().__init__()
        self.window = window
        self.max_level = max_level
        self.workers = workers

    def forward(self, images: Sequence[Pyramid], crops: Tensor) -> Tensor:
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
        glimpses = [
            self.sample(points, image, region, patch)
            for points, image, region, patch in zip(grid, owners, regions, patches, strict=True)
        ]
        return torch.stack(glimpses).view(batch, steps, *glimpses[0].shape)

    def sample(
        self, grid: Tensor, image: Pyramid, region: Region, patch: np.ndarray | None
    ) -> Tensor:
        """One glimpse (C, w, w) from the region's pixels, the grid re-expressed relative to it."""
        if patch is None:  # the glimpse lies wholly outside the image: zeros, as grid_sample pads
            return grid.new_zeros(image.channels, self.window, self.window)
        pixels = torch.from_numpy(patch).to(grid.device, grid.dtype).div_(255)
        pixels = pixels.permute(2, 0, 1).unsqueeze(0)  # (1, C, h, w)
        x, y = to_pixels(grid, *image.levels[region.level])
        region_height, region_width = pixels.shape[-2:]
        local = torch.stack(
            [
                (2 * (x - region.left) + 1) / region_width - 1,
                (2 * (y - region.top) + 1) / region_height - 1,
            ],
            dim=-1,
        )
        return F.grid_sample(
            pixels, local.unsqueeze(0), mode="bilinear", padding_mode="zeros", align_corners=False
        )[0]
