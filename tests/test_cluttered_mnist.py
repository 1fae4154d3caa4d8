"""Cluttered MNIST: the generator's canvases, the on-disk cache and the datamodule's batches."""

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from varsac.data.cluttered_mnist import (
    CanvasSettings,
    ClutteredMNISTDataModule,
    ClutteredSplit,
    cluttered_targets,
    generate_cluttered,
)
from varsac.data.mnist import MNISTDigits, mnist_cache_path

SMALL_SIZES = {"train_size": 64, "val_size": 32, "test_size": 32}


def outside_boxes(split: ClutteredSplit) -> np.ndarray:
    """bool (n, H, W): True where no digit box covers the pixel."""
    outside = np.ones(split.canvases.shape, dtype=bool)
    for sample, boxes in enumerate(split.boxes):
        for x0, y0, x1, y1 in boxes:
            outside[sample, y0:y1, x0:x1] = False
    return outside


@pytest.fixture()
def data_dir(tmp_path: Path, mnist_dir: Path) -> str:
    """A fresh data directory that already holds the cached real MNIST."""
    cache = mnist_cache_path(tmp_path)
    cache.parent.mkdir()
    shutil.copy(mnist_cache_path(mnist_dir), cache)
    return str(tmp_path)


def test_identify_canvases_show_distinct_digits_in_their_boxes(mnist_digits: MNISTDigits) -> None:
    images, labels = mnist_digits.test
    split = generate_cluttered(images, labels, 100, seed=3)
    assert split.canvases.shape == (100, 100, 100) and split.canvases.dtype == np.uint8
    assert split.digits.shape == (100, 2) and split.digits.dtype == np.int64
    assert split.boxes.shape == (100, 2, 4) and split.boxes.dtype == np.int64
    np.testing.assert_array_equal(split.digits, labels[split.source_indices])
    assert (split.digits[:, 0] != split.digits[:, 1]).all()
    x0, y0, x1, y1 = np.moveaxis(split.boxes, -1, 0)
    assert (x0 >= 0).all() and (y0 >= 0).all() and (x1 <= 100).all() and (y1 <= 100).all()
    assert (x1 - x0 == 28).all() and (y1 - y0 == 28).all()
    apart = (np.abs(x0[:, 0] - x0[:, 1]) >= 28) | (np.abs(y0[:, 0] - y0[:, 1]) >= 28)
    assert apart.all()
    for sample in range(100):
        for (left, top, right, bottom), source in zip(
            split.boxes[sample], split.source_indices[sample], strict=True
        ):
            assert (split.canvases[sample, top:bottom, left:right] >= images[source]).all()
    # Clutter: ink outside the digit boxes on (nearly) every canvas.
    ink_outside = (split.canvases * outside_boxes(split)).reshape(100, -1).max(axis=1) > 0
    assert ink_outside.mean() >= 0.95


def test_distractors_are_never_blank() -> None:
    # Digits with ink in a 2×2 square only: most random 8² crops of them are blank.
    images = np.zeros((20, 28, 28), dtype=np.uint8)
    images[:, 13:15, 13:15] = 255
    labels = np.arange(20) % 10
    split = generate_cluttered(
        images, labels, 200, CanvasSettings(num_digits=1, num_distractors=1), seed=5
    )
    ink_pixels = (split.canvases > 0).reshape(200, -1).sum(axis=1)
    # 4 pixels of digit, plus the distractor's ink unless it fell right on the digit's.
    assert (ink_pixels > 4).mean() > 0.95


def test_identify_targets_are_multi_hot_over_the_digits_drawn() -> None:
    digits = np.array([[3, 7], [0, 9], [5, 1]])
    targets = cluttered_targets(digits, "identify")
    assert targets.dtype == np.float32 and targets.shape == (3, 10)
    np.testing.assert_array_equal(targets.sum(axis=1), [2, 2, 2])
    for row, classes in zip(targets, digits, strict=True):
        assert set(np.flatnonzero(row)) == set(classes)


def test_sum_canvases_have_no_clutter_and_any_classes(mnist_digits: MNISTDigits) -> None:
    images, labels = mnist_digits.train
    split = generate_cluttered(
        images, labels, 200, CanvasSettings(num_distractors=0, label_mode="sum"), seed=4
    )
    assert (split.canvases[outside_boxes(split)] == 0).all()
    for sample in range(200):
        for (left, top, right, bottom), source in zip(
            split.boxes[sample], split.source_indices[sample], strict=True
        ):
            np.testing.assert_array_equal(
                split.canvases[sample, top:bottom, left:right], images[source]
            )
    assert (split.digits[:, 0] == split.digits[:, 1]).any()
    targets = cluttered_targets(split.digits, "sum")
    assert targets.dtype == np.int64
    np.testing.assert_array_equal(targets, labels[split.source_indices].sum(axis=1))
    assert targets.min() >= 0 and targets.max() <= 18


def test_generation_is_deterministic_for_a_seed(mnist_digits: MNISTDigits) -> None:
    images, labels = mnist_digits.val
    first = generate_cluttered(images, labels, 20, seed=(7, 1))
    again = generate_cluttered(images, labels, 20, seed=(7, 1))
    other = generate_cluttered(images, labels, 20, seed=(8, 1))
    for name in ("canvases", "digits", "boxes", "source_indices"):
        np.testing.assert_array_equal(getattr(first, name), getattr(again, name))
    assert not np.array_equal(first.canvases, other.canvases)
    assert not np.array_equal(first.boxes, other.boxes)


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({"label_mode": "count"}, "label_mode"),
        ({"label_mode": "sum"}, "num_distractors"),
        ({"canvas_size": 40}, "canvas_size"),
        ({"num_digits": 11}, "num_digits"),
        ({"distractor_size": 29}, "distractor_size"),
        # The size check passes (four 28² squares fit in 56²) but random placement cannot.
        ({"canvas_size": 56, "num_digits": 4}, "canvas_size=56"),
    ],
)
def test_generator_refuses_impossible_canvases(
    mnist_digits: MNISTDigits, arguments: dict, named: str
) -> None:
    images, labels = mnist_digits.test
    with pytest.raises(ValueError, match=named):
        generate_cluttered(images, labels, 4, CanvasSettings(**arguments))


def test_batches_have_the_documented_shapes_and_contents(data_dir: str) -> None:
    datamodule = ClutteredMNISTDataModule(data_dir, batch_size=16, **SMALL_SIZES)
    assert datamodule.num_classes == 10 and datamodule.image_channels == 1
    datamodule.prepare_data()
    datamodule.setup("fit")
    assert len(datamodule.datasets["train"]) == 64 and len(datamodule.datasets["val"]) == 32
    batch = next(iter(datamodule.train_dataloader()))
    assert set(batch) == {"image", "proxy", "target", "boxes"}
    expected = {
        "image": ((16, 1, 100, 100), torch.float32),
        "proxy": ((16, 1, 32, 32), torch.float32),
        "target": ((16, 10), torch.float32),
        "boxes": ((16, 2, 4), torch.float32),
    }
    for key, (shape, dtype) in expected.items():
        assert batch[key].shape == shape and batch[key].dtype == dtype, key
        assert batch[key].min() >= 0 and batch[key].max() <= 1, key
    assert (batch["target"].sum(dim=1) == 2).all()
    assert set(batch["target"].unique().tolist()) == {0.0, 1.0}
    assert torch.allclose(batch["boxes"][..., 2] - batch["boxes"][..., 0], torch.tensor(0.28))

    # The val loader keeps the stored order: check it against the canvases on disk.
    val_split = datamodule.datasets["val"].split
    val_batch = next(iter(datamodule.val_dataloader()))
    np.testing.assert_array_equal(
        (val_batch["image"][:, 0] * 255).round().to(torch.uint8).numpy(), val_split.canvases[:16]
    )
    np.testing.assert_array_equal(
        val_batch["target"].numpy(), cluttered_targets(val_split.digits[:16], "identify")
    )
    np.testing.assert_allclose(val_batch["boxes"].numpy(), val_split.boxes[:16] / 100)


def test_splits_draw_from_the_matching_mnist_split(
    data_dir: str, mnist_digits: MNISTDigits
) -> None:
    datamodule = ClutteredMNISTDataModule(data_dir, **SMALL_SIZES)
    datamodule.prepare_data()
    datamodule.setup()
    for split in ("train", "val", "test"):
        generated = datamodule.datasets[split].split
        _, labels = getattr(mnist_digits, split)
        np.testing.assert_array_equal(generated.digits, labels[generated.source_indices])
    # Each split has its own seed: the equal-sized val and test splits are laid out differently.
    assert not np.array_equal(
        datamodule.datasets["val"].split.boxes, datamodule.datasets["test"].split.boxes
    )


def test_train_loader_shuffles_repeatably(data_dir: str) -> None:
    first_batches = []
    for _ in range(2):
        datamodule = ClutteredMNISTDataModule(data_dir, batch_size=16, **SMALL_SIZES)
        datamodule.prepare_data()
        datamodule.setup("fit")
        first_batches.append(next(iter(datamodule.train_dataloader()))["image"])
    assert torch.equal(first_batches[0], first_batches[1])
    in_stored_order = torch.stack([datamodule.datasets["train"][i]["image"] for i in range(16)])
    assert not torch.equal(first_batches[0], in_stored_order)


def test_proxy_is_the_area_downsampled_canvas(data_dir: str) -> None:
    datamodule = ClutteredMNISTDataModule(data_dir, canvas_size=96, proxy_size=32, **SMALL_SIZES)
    datamodule.prepare_data()
    datamodule.setup("validate")
    batch = next(iter(datamodule.val_dataloader()))
    torch.testing.assert_close(batch["proxy"], F.avg_pool2d(batch["image"], 3))


def test_pyramids_are_written_as_batches_first_read_them(data_dir: str) -> None:
    on_pyramids = ClutteredMNISTDataModule(data_dir, batch_size=8, image_size=200, **SMALL_SIZES)
    on_pyramids.prepare_data()
    folder = on_pyramids.pyramid_dir("train")
    assert not folder.exists()  # preparing writes no pyramid
    on_pyramids.setup("fit")
    batch = next(iter(on_pyramids.train_dataloader()))
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.path.name for p in batch["image"])
    assert len(batch["image"]) == 8

    in_memory = ClutteredMNISTDataModule(data_dir, **SMALL_SIZES)
    in_memory.setup("fit")
    index = int(batch["image"][0].path.stem)
    canvas = in_memory.datasets["train"][index]["image"][0].numpy()
    level_0 = batch["image"][0].read_level(0)[..., 0]
    assert level_0.shape == (200, 200)
    upsampled_back = level_0.reshape(100, 2, 100, 2).mean(axis=(1, 3)) / 255
    assert np.abs(upsampled_back - canvas).mean() < 0.02  # the canvas, upsampled 2×
    # The proxies are those of the canvases, whether the images are pyramids or not.
    torch.testing.assert_close(
        on_pyramids.datasets["train"].proxies, in_memory.datasets["train"].proxies
    )

    # A file on disc is read, not written again, by this run and the next.
    written = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    again = ClutteredMNISTDataModule(data_dir, batch_size=8, image_size=200, **SMALL_SIZES)
    again.setup("fit")
    samples = again.datasets["train"].__getitems__(list(range(len(again.datasets["train"]))))
    assert len(list(folder.iterdir())) == SMALL_SIZES["train_size"] == len(samples)
    assert all(written[name] == (folder / name).stat().st_mtime_ns for name in written)


def test_proxy_noise_is_fixed_per_sample(data_dir: str) -> None:
    def val_proxies(proxy_noise: float) -> torch.Tensor:
        datamodule = ClutteredMNISTDataModule(data_dir, proxy_noise=proxy_noise, **SMALL_SIZES)
        datamodule.prepare_data()
        datamodule.setup("validate")
        dataset = datamodule.datasets["val"]
        assert torch.equal(dataset[3]["proxy"], dataset[3]["proxy"])
        return torch.stack([dataset[i]["proxy"] for i in range(len(dataset))])

    clean, noisy, noisy_again = val_proxies(0.0), val_proxies(0.1), val_proxies(0.1)
    assert torch.equal(noisy, noisy_again)
    assert noisy.min() >= 0 and noisy.max() <= 1
    difference = noisy - clean
    assert (difference != 0).float().mean() > 0.5
    assert 0.05 < difference.std() < 0.1


def test_prepare_data_reuses_the_cache(data_dir: str, caplog: pytest.LogCaptureFixture) -> None:
    datamodule = ClutteredMNISTDataModule(data_dir, **SMALL_SIZES)
    datamodule.prepare_data()
    cache_dir = datamodule.cache_dir
    assert cache_dir.parent == Path(data_dir) / "cluttered_mnist"
    stored = sorted(path.name for path in cache_dir.iterdir())
    assert stored == ["params.json", "test.npz", "train.npz", "val.npz"]
    modified = {path.name: path.stat().st_mtime_ns for path in cache_dir.iterdir()}

    same = ClutteredMNISTDataModule(data_dir, **SMALL_SIZES)
    with caplog.at_level(logging.INFO, logger="varsac.data.cluttered_mnist"):
        same.prepare_data()
    assert "using the cached splits" in caplog.text
    assert same.cache_dir == cache_dir
    assert {path.name: path.stat().st_mtime_ns for path in cache_dir.iterdir()} == modified

    # Proxies and loading do not change the canvases; every generation parameter does.
    assert ClutteredMNISTDataModule(data_dir, proxy_noise=0.2, **SMALL_SIZES).cache_dir == cache_dir
    changed = [
        {"seed": 1},
        {"canvas_size": 60},
        {"num_distractors": 4},
        {"distractor_size": 6},
        {"label_mode": "sum", "num_distractors": 0},
        {"train_size": 65},
    ]
    cache_dirs = {
        ClutteredMNISTDataModule(data_dir, **{**SMALL_SIZES, **change}).cache_dir
        for change in changed
    }
    assert len(cache_dirs) == len(changed) and cache_dir not in cache_dirs


def test_sum_mode_batches_hold_the_sum_of_the_classes(data_dir: str) -> None:
    datamodule = ClutteredMNISTDataModule(
        data_dir, label_mode="sum", num_distractors=0, batch_size=32, **SMALL_SIZES
    )
    assert datamodule.num_classes == 19
    datamodule.prepare_data()
    datamodule.setup("test")
    assert set(datamodule.datasets) == {"test"}
    batch = next(iter(datamodule.test_dataloader()))
    assert batch["target"].shape == (32,) and batch["target"].dtype == torch.int64
    digits = datamodule.datasets["test"].split.digits
    np.testing.assert_array_equal(batch["target"].numpy(), digits.sum(axis=1))
    with pytest.raises(RuntimeError, match="setup"):
        datamodule.train_dataloader()


def test_loaders_use_workers_as_configured(data_dir: str) -> None:
    datamodule = ClutteredMNISTDataModule(data_dir, num_workers=2, **SMALL_SIZES)
    datamodule.prepare_data()
    datamodule.setup("validate")
    loader = datamodule.val_dataloader()
    assert loader.num_workers == 2 and loader.persistent_workers and not loader.pin_memory


def test_setup_before_prepare_data_says_so(data_dir: str) -> None:
    with pytest.raises(FileNotFoundError, match="prepare_data"):
        ClutteredMNISTDataModule(data_dir, **SMALL_SIZES).setup("fit")


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({"label_mode": "count"}, "label_mode"),
        ({"num_digits": 0}, "num_digits"),
        ({"num_digits": 11}, "num_digits"),
        ({"canvas_size": 27}, "canvas_size"),
        ({"canvas_size": 50}, "canvas_size"),
        ({"num_distractors": -1}, "num_distractors"),
        ({"label_mode": "sum"}, "num_distractors"),
        ({"distractor_size": 0}, "distractor_size"),
        ({"distractor_size": 29}, "distractor_size"),
        ({"proxy_size": 0}, "proxy_size"),
        ({"proxy_size": 101}, "proxy_size"),
        ({"proxy_noise": -0.1}, "proxy_noise"),
        ({"train_size": 0}, "train_size"),
        ({"val_size": 0}, "val_size"),
        ({"test_size": 0}, "test_size"),
        ({"seed": -1}, "seed"),
        ({"batch_size": 0}, "batch_size"),
        ({"num_workers": -1}, "num_workers"),
        ({"image_channels": 3}, "data.image_channels"),
    ],
)
def test_bad_arguments_are_named(tmp_path: Path, arguments: dict, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        ClutteredMNISTDataModule(str(tmp_path), **arguments)
