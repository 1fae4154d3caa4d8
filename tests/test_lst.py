"""The localized spatial transformer on real pyramid TIFFs: exactly the spatial transformer."""

from pathlib import Path

import numpy as np
import pytest
import torch

from varsac.models.localized_spatial_transformer import (
    LocalizedSpatialTransformer,
    choose_level,
)
from varsac.models.spatial_transformer import SpatialTransformer, crops_from_latents
from varsac.pyramid import PyramidTIFF, write_pyramid


@pytest.fixture(scope="module")
def pyramids(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[np.ndarray, PyramidTIFF]]:
    """Random RGB images of different sizes, written as lossless pyramid TIFFs."""
    rng = np.random.default_rng(0)
    folder = tmp_path_factory.mktemp("pyramids")
    images = []
    for index, (height, width) in enumerate([(300, 300), (257, 411), (520, 390)]):
        array = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        path = write_pyramid(array, folder / f"{index}.tif", tile_size=64)
        images.append((array, PyramidTIFF(path)))
    return images


def as_batch(arrays: list[np.ndarray]) -> torch.Tensor:
    """Same-size images → (B, C, H, W) float64 in [0, 1]."""
    return torch.stack([torch.from_numpy(a).permute(2, 0, 1).double() / 255 for a in arrays])


@pytest.mark.parametrize("index", [0, 1, 2])
def test_level_zero_glimpses_and_gradients_equal_the_spatial_transformer(
    pyramids: list[tuple[np.ndarray, PyramidTIFF]], index: int
) -> None:
    array, pyramid = pyramids[index]
    torch.manual_seed(index)
    latents = (torch.randn(1, 6, 3, dtype=torch.float64) * 2).requires_grad_()
    crops = crops_from_latents(latents, 0.05, 0.9)
    # shift some crops across the border: zero padding outside, as grid_sample does
    crops = (
        crops
        + torch.tensor([0.0, 0.6, -0.4], dtype=torch.float64) * (torch.arange(6) % 2)[None, :, None]
    )
    full = SpatialTransformer(window=24)(as_batch([array]), crops)
    local = LocalizedSpatialTransformer(window=24, max_level=0)([pyramid], crops)
    assert (full - local).abs().max() < 1e-5
    weights = torch.randn_like(full)
    (grad_full,) = torch.autograd.grad((full * weights).sum(), latents, retain_graph=True)
    (grad_local,) = torch.autograd.grad((local * weights).sum(), latents)
    relative = (grad_full - grad_local).abs().max() / grad_full.abs().max()
    assert relative < 1e-4
    assert (grad_local.abs().sum(dim=(0, 1)) > 0).all()  # scale and centre get gradients


def test_a_batch_of_different_images_reads_each_its_own(
    pyramids: list[tuple[np.ndarray, PyramidTIFF]],
) -> None:
    crops = torch.tensor([[[0.25, -0.3, 0.2], [0.5, 0.1, 0.0]]] * 3, dtype=torch.float64)
    local = LocalizedSpatialTransformer(window=16, max_level=0)([p for _, p in pyramids], crops)
    for b, (array, _) in enumerate(pyramids):
        full = SpatialTransformer(window=16)(as_batch([array]), crops[b : b + 1])
        assert (full[0] - local[b]).abs().max() < 1e-5


def test_coarser_levels_give_the_anti_aliased_crop(
    pyramids: list[tuple[np.ndarray, PyramidTIFF]],
) -> None:
    _, pyramid = pyramids[0]
    crops = torch.tensor([[[0.8, 0.0, 0.1]]], dtype=torch.float64)
    assert choose_level(pyramid.levels, 0.8, 16) > 0
    coarse = LocalizedSpatialTransformer(window=16)([pyramid], crops)
    exact = LocalizedSpatialTransformer(window=16, max_level=0)([pyramid], crops)
    # the same crop, smoothed: close in mean, and less noisy than point samples of noise
    assert abs(coarse.mean() - exact.mean()) < 0.02
    assert coarse.std() < exact.std()


def test_level_choice_keeps_the_glimpse_resolution() -> None:
    levels = [(2528, 2528), (1264, 1264), (632, 632), (316, 316), (158, 158)]
    assert choose_level(levels, 1.0, 32) == 4  # 158 ≥ 32: the whole image from the top level
    assert choose_level(levels, 0.2, 32) == 3  # needs 160 pixels a side: 316
    assert choose_level(levels, 0.01, 32) == 0  # finer than level 0 can give


def test_reads_are_small_whatever_the_image_size(tmp_path: Path) -> None:
    array = np.zeros((2048, 2048), dtype=np.uint8)
    pyramid = PyramidTIFF(write_pyramid(array, tmp_path / "big.tif"))
    sizes = []
    original = pyramid.read_region

    def spy(level: int, left: int, top: int, width: int, height: int) -> np.ndarray:
        sizes.append(width * height)
        return original(level, left, top, width, height)

    pyramid.read_region = spy
    crops = torch.tensor([[[0.5, 0.0, 0.0], [0.1, 0.3, 0.3], [1.0, 0.0, 0.0]]])
    LocalizedSpatialTransformer(window=32)([pyramid], crops)
    # at most one 256² tile's worth (the top pyramid level is one tile), never 2048²
    assert len(sizes) == 3 and max(sizes) <= 256 * 256
    assert sizes[1] <= (2 * 32 + 4) ** 2  # a small glimpse: at most (2·window)² pixels
