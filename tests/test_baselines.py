"""The ResNet-18 baselines: the network, the tiling, the two classifiers and their experiments."""

import copy
import functools
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from conftest import varsac
from varsac.models.baselines import (
    ResNetClassifier,
    TiledResNetClassifier,
    read_tiles,
    tile_corners,
    tile_origins,
)
from varsac.models.resnet import ResNet18
from varsac.pyramid import PyramidTIFF, write_pyramid
from varsac.tasks import Classification

ADAM = functools.partial(torch.optim.Adam, lr=1e-3)
RESNET18_FEATURE_PARAMETERS = 11_689_512 - (512 * 1000 + 1000)  # torchvision's, less its head
Pyramids = tuple[list[PyramidTIFF], np.ndarray]  # the pyramids and their pixels


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Run this module's small networks on one thread: as fast as two for inputs this small,
    and not slowed down manyfold when another process keeps one of the cores busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def pyramids(tmp_path_factory: pytest.TempPathFactory) -> Pyramids:
    """Two random RGB 300² pyramid TIFFs and their uint8 (2, 300, 300, 3) pixels."""
    folder = tmp_path_factory.mktemp("pyramids")
    pixels = np.random.default_rng(0).integers(0, 256, (2, 300, 300, 3), dtype=np.uint8)
    paths = [write_pyramid(image, folder / f"{i}.tif") for i, image in enumerate(pixels)]
    return [PyramidTIFF(path) for path in paths], pixels


def small_tiled(**kwargs: int | bool) -> TiledResNetClassifier:
    torch.manual_seed(0)
    settings = {"tile_size": 64, "tiles_per_side": 5, "hidden": 16, "tile_batch": 16}
    return TiledResNetClassifier(Classification(6), ADAM, **{**settings, **kwargs})


# ---------------------------------------------------------------------- the network


def test_resnet18_has_the_parameters_of_torchvisions() -> None:
    network = ResNet18()
    assert parameter_count(network) + parameter_count(nn.Linear(512, 1000)) == 11_689_512
    assert network(torch.rand(2, 3, 64, 64)).shape == (2, ResNet18.feature_dim)
    stem = network.stem[0]
    assert stem.kernel_size == (7, 7) and stem.stride == (2, 2) and stem.bias is None


def test_classifier_parameter_counts() -> None:
    full = ResNetClassifier(Classification(10), ADAM)
    assert parameter_count(full) == 11_181_642  # ResNet-18 with a 10-way linear head
    tiled = TiledResNetClassifier(Classification(6), ADAM)
    mlp_head = (512 * 256 + 256) + (256 * 6 + 6)
    assert parameter_count(tiled) == RESNET18_FEATURE_PARAMETERS + mlp_head == 11_309_382
    grey = ResNetClassifier(Classification(10), ADAM, in_channels=1)
    assert parameter_count(full) - parameter_count(grey) == 2 * 7 * 7 * 64


# ---------------------------------------------------------------------- the tiling


def test_twelve_tiles_of_224_cover_2528_exactly() -> None:
    origins = tile_origins(2528, 224, 12)
    assert len(origins) == 12 and origins[0] == 0 and origins[-1] == 2528 - 224
    assert origins == sorted(origins)
    covered = np.zeros(2528 + 224, int)
    for origin in origins:
        covered[origin : origin + 224] += 1
    assert (covered[:2528] >= 1).all() and (covered[2528:] == 0).all()
    assert tile_origins(256, 64, 4) == [0, 64, 128, 192]  # no overlap when they tile exactly
    assert tile_origins(64, 64, 1) == [0]
    assert len(tile_corners(300, 200, 64, 5)) == 25


@pytest.mark.parametrize(
    ("side", "tiles_per_side", "message"),
    [(2528, 11, "cannot cover a side of 2528: use at least 12"), (100, 3, "smaller than the tile")],
)
def test_tiles_that_do_not_fit_are_refused(side: int, tiles_per_side: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tile_origins(side, 224, tiles_per_side)


def test_tiles_read_off_a_pyramid_are_the_crops_of_the_image(pyramids: Pyramids) -> None:
    images, pixels = pyramids
    corners = tile_corners(300, 300, 64, 5)
    tiles = read_tiles([(images[1], left, top) for left, top in corners], 64)
    assert tiles.shape == (25, 3, 64, 64) and tiles.dtype == torch.float32
    for tile, (left, top) in zip(tiles, corners, strict=True):
        crop = pixels[1, top : top + 64, left : left + 64].transpose(2, 0, 1) / 255
        np.testing.assert_allclose(tile.numpy(), crop, atol=1e-6)


# ---------------------------------------------------------------------- the tiled classifier


def test_tiled_classifier_gives_log_probabilities_per_image(pyramids: Pyramids) -> None:
    images, _ = pyramids
    model = small_tiled().eval()
    with torch.no_grad():
        log_probs = model(images)
    assert log_probs.shape == (2, 6)
    torch.testing.assert_close(log_probs.exp().sum(1), torch.ones(2))
    with pytest.raises(ValueError, match="smaller than the tile"):
        small_tiled(tile_size=512)(images)


def test_checkpointing_changes_neither_the_loss_nor_the_gradients_nor_the_statistics(
    pyramids: Pyramids,
) -> None:
    images, _ = pyramids
    batch = {"image": images[:1], "target": torch.tensor([4])}  # 25 tiles: chunks of 16 and 9
    plain = small_tiled().train()
    checkpointed = copy.deepcopy(plain)
    checkpointed.checkpoint_chunks = True
    losses = []
    for model in (plain, checkpointed):
        loss, _, parts = model.objective(batch, sample=True)
        loss.backward()
        losses.append(loss)
        assert set(parts) == {"classification_nll"}
    torch.testing.assert_close(losses[0], losses[1])
    for (name, a), b in zip(plain.named_parameters(), checkpointed.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6, msg=name)
    # the recomputation in the backward pass does not move the batch-norm statistics again
    for (name, a), b in zip(plain.named_buffers(), checkpointed.buffers(), strict=True):
        torch.testing.assert_close(a, b, msg=name)


def test_all_tiles_at_once_predict_what_chunks_predict(pyramids: Pyramids) -> None:
    """tile_batch=None (the naive baseline) only changes how many tiles go through g at once."""
    images, _ = pyramids
    chunked = small_tiled().eval()  # 50 tiles in chunks of 16
    naive = copy.deepcopy(chunked)
    naive.tile_batch = None
    with torch.no_grad():
        torch.testing.assert_close(naive(images), chunked(images))
    with pytest.raises(ValueError, match="tile_batch must be at least 1"):
        small_tiled(tile_batch=0)


def test_tiled_classifier_sums_over_tiles() -> None:
    """Swapping two non-overlapping tiles of the image leaves the prediction unchanged."""
    model = small_tiled(tile_size=32, tiles_per_side=4, tile_batch=6).eval()  # 4 × 32 = 128
    image = torch.rand(1, 3, 128, 128)
    swapped = image.clone()
    swapped[..., 0:32, 0:32] = image[..., 64:96, 96:128]
    swapped[..., 64:96, 96:128] = image[..., 0:32, 0:32]
    with torch.no_grad():
        torch.testing.assert_close(model(swapped), model(image))
        assert not torch.allclose(model(swapped.flip(-1)), model(image))


# ---------------------------------------------------------------------- the full-image classifier


@pytest.mark.parametrize("source", ["tensor", "pyramid"])
def test_full_image_classifier_learns_from_tensors_and_pyramids(
    source: str, pyramids: Pyramids
) -> None:
    torch.manual_seed(0)
    if source == "tensor":
        model = ResNetClassifier(Classification(10), ADAM, in_channels=1, input_size=64)
        images = torch.rand(2, 1, 100, 100)
    else:
        model = ResNetClassifier(Classification(10), ADAM, in_channels=3, input_size=64)
        images = pyramids[0]
    loss, log_probs, parts = model.objective(
        {"image": images, "target": torch.tensor([3, 7])}, sample=True
    )
    assert log_probs.shape == (2, 10) and set(parts) == {"classification_nll"}
    loss.backward()
    first_conv = model.backbone.stem[0].weight.grad
    assert first_conv is not None and first_conv.abs().sum() > 0


def test_full_image_classifier_needs_a_size_for_pyramids(pyramids: Pyramids) -> None:
    model = ResNetClassifier(Classification(10), ADAM, input_size=None)
    assert model(torch.rand(1, 3, 40, 50)).shape == (1, 10)  # tensors at their own size
    with pytest.raises(ValueError, match="input_size"):
        model(pyramids[0])


# ---------------------------------------------------------------------- the experiments


def varsac_fit(*args: str, cwd: Path, data_dir: Path) -> subprocess.CompletedProcess:
    """``varsac fit … trainer.fast_dev_run=true`` on one torch thread, as in this module."""
    fit = ["fit", *args, "trainer.fast_dev_run=true"]
    return varsac(*fit, cwd=cwd, data_dir=data_dir, OMP_NUM_THREADS="1")


@pytest.mark.slow
def test_full_image_baseline_experiment_runs(tmp_path: Path, mnist_dir: Path) -> None:
    args = [
        "experiment=baseline_cluttered_mnist",
        "data.train_size=200",
        "data.val_size=100",
        "data.test_size=100",
        "data.batch_size=50",
    ]
    result = varsac_fit(*args, cwd=tmp_path, data_dir=mnist_dir)
    assert "run directory" in result.stdout + result.stderr
    assert (tmp_path / "outputs" / "baseline_cluttered_mnist").is_dir()


@pytest.mark.slow
def test_tiled_baseline_experiment_runs_on_pyramids(tmp_path: Path, fresh_data_dir: Path) -> None:
    data_dir = fresh_data_dir
    args = [
        "experiment=baseline_cluttered_mnist_2528",
        "data.train_size=8",
        "data.val_size=4",
        "data.test_size=4",
        "data.batch_size=4",
        "data.image_size=128",
        "model.tile_size=48",
        "model.tiles_per_side=3",
    ]
    varsac_fit(*args, cwd=tmp_path, data_dir=data_dir)
    (pyramid_folder,) = (data_dir / "cluttered_mnist").glob("*/pyramids_128")
    written = {split.name: len(list(split.glob("*.tif"))) for split in pyramid_folder.iterdir()}
    assert written == {"train": 4, "val": 4}  # the batches fast_dev_run read, and no more
