"""Megapixel MNIST: the protocol on real MNIST, the files, resuming, the datamodule, the CLI."""

import itertools
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import MEGAPIXEL_MNIST_SMALL, rerun_after_a_kill, varsac
from varsac.data.megapixel_mnist import (
    NOISE_PATCHES,
    NOISE_PATTERNS,
    MegapixelCanvas,
    compose_canvas,
    generate_megapixel_mnist,
    image_generator,
    image_label,
    split_noise_bank,
    summary,
)
from varsac.data.mnist import MNISTDigits
from varsac.data.photo_index import read_index
from varsac.data.photos import PhotoDataModule
from varsac.errors import ConfigError
from varsac.pyramid import PyramidTIFF

SIZE = MEGAPIXEL_MNIST_SMALL["canvas_size"]
TRAIN, TEST = MEGAPIXEL_MNIST_SMALL["train_size"], MEGAPIXEL_MNIST_SMALL["test_size"]
DIGITS = [str(digit) for digit in range(10)]
NOISE_STROKE = (204, 254)  # 255 · U(0.8, 1), rounded down


def canvas_of(split: str, index: int, digits: MNISTDigits, size: int = SIZE) -> MegapixelCanvas:
    """Image ``index`` of ``split`` drawn again, as the generator draws it (seed 0)."""
    bank = split_noise_bank(0, split)
    return compose_canvas(image_generator(0, split, index), getattr(digits, split), bank, size)


def covered(boxes: np.ndarray, size: int = SIZE) -> np.ndarray:
    """bool (size, size): the pixels inside any of the (N, 4) boxes (top, left, bottom, right)."""
    area = np.zeros((size, size), bool)
    for top, left, bottom, right in boxes:
        area[top:bottom, left:right] = True
    return area


def crop(pixels: np.ndarray, box: np.ndarray) -> np.ndarray:
    return pixels[box[0] : box[2], box[1] : box[3]]


def digits_beneath(window: np.ndarray, free: np.ndarray, images: np.ndarray) -> np.ndarray:
    """bool (N,): which of the uint8 (N, 28, 28) ``images`` the 28² ``window`` may show: equal
    where ``free`` (no noise there), at most the window elsewhere (noise combines by maximum)."""
    same = ((images == window) | ~free).all(axis=(1, 2))
    return same & (images <= window).all(axis=(1, 2))


# ---------------------------------------------------------------------- the protocol


@pytest.mark.parametrize("split", ["train", "test"])
def test_five_digits_three_of_the_class_apart_and_fifty_noise_patches(
    split: str, mnist_digits: MNISTDigits
) -> None:
    labels = getattr(mnist_digits, split)[1]
    for index in range(12):
        canvas = canvas_of(split, index, mnist_digits)
        assert canvas.pixels.shape == (SIZE, SIZE) and canvas.pixels.dtype == np.uint8
        assert canvas.label == image_label(0, split, index)
        digit_classes = labels[canvas.digit_indices]
        assert canvas.digit_boxes.shape == (5, 4)
        assert (digit_classes[:3] == canvas.label).all()
        assert (digit_classes[3:] != canvas.label).all()
        for first, second in itertools.combinations(canvas.digit_boxes, 2):
            assert (np.abs(first[:2] - second[:2]) >= 28).any(), (first, second)
        assert canvas.noise_boxes.shape == (NOISE_PATCHES, 4)
        assert (canvas.noise_boxes[:, :2] >= 28).all()
        assert (canvas.noise_boxes[:, :2] < SIZE - 28).all()
        for box in (*canvas.digit_boxes, *canvas.noise_boxes):
            assert box[2] - box[0] == box[3] - box[1] == 28
        for box in canvas.noise_boxes:
            assert (crop(canvas.pixels, box) > 0).sum() >= 28  # a segment crosses the patch


def test_digits_keep_their_pixels_and_noise_never_lowers_them(mnist_digits: MNISTDigits) -> None:
    for split, index in itertools.product(("train", "test"), range(6)):
        canvas = canvas_of(split, index, mnist_digits)
        images = getattr(mnist_digits, split)[0]
        noise = covered(canvas.noise_boxes)
        for box, digit in zip(canvas.digit_boxes, canvas.digit_indices, strict=True):
            window, free = crop(canvas.pixels, box), ~crop(noise, box)
            assert (window >= images[digit]).all()  # combined by maximum
            assert np.array_equal(window[free], images[digit][free])


def test_pixels_are_black_off_the_digits_and_noise_strokes_in_range(
    mnist_digits: MNISTDigits,
) -> None:
    canvas = canvas_of("train", 3, mnist_digits)
    drawn, digit_area = covered(canvas.noise_boxes), covered(canvas.digit_boxes)
    assert (canvas.pixels[~(drawn | digit_area)] == 0).all()
    noise_only = canvas.pixels[drawn & ~digit_area]
    strokes = noise_only[noise_only > 0]
    assert strokes.size > 0
    assert strokes.min() >= NOISE_STROKE[0] and strokes.max() <= NOISE_STROKE[1]


def test_a_noise_pattern_is_two_segments_from_the_top_corners() -> None:
    bank = split_noise_bank(0, "train")
    assert bank.shape == (NOISE_PATTERNS, 28, 28) and bank.dtype == np.uint8
    assert np.array_equal(bank, split_noise_bank(0, "train"))
    assert not np.array_equal(bank, split_noise_bank(0, "test"))
    for pattern in bank:
        strokes = pattern[pattern > 0]
        assert NOISE_STROKE[0] <= strokes.min() and strokes.max() <= NOISE_STROKE[1]
        assert 28 <= strokes.size <= 2 * 42  # one or two segments of 28 to 42 pixels
        assert pattern[0, 0] > 0  # the first segment starts at the top-left pixel
    mirrored = sum(pattern[0, -1] > 0 and pattern[0, 0] > 0 for pattern in bank)
    assert 0 < mirrored < NOISE_PATTERNS  # some second segments start at the top-right


def test_the_test_images_take_their_digits_from_mnist_test(
    megapixel_mnist_folder: Path, mnist_digits: MNISTDigits
) -> None:
    """Each digit box of a test image, read off its TIFF, is an MNIST-test digit where no
    noise patch lies (and at least that digit beneath one), and no MNIST-train digit."""
    test_images, train_images = mnist_digits.test[0], mnist_digits.train[0]
    identified = 0
    for index in range(TEST):
        canvas = canvas_of("test", index, mnist_digits)
        pyramid = PyramidTIFF(megapixel_mnist_folder / f"images/test/{index:05d}.tif")
        pixels, noise = pyramid.read_level(0)[..., 0], covered(canvas.noise_boxes)
        for box in canvas.digit_boxes:
            window, free = crop(pixels, box), ~crop(noise, box)
            if free.sum() < free.size // 2:  # too much of it under noise to tell
                continue
            assert digits_beneath(window, free, test_images).any()
            assert not digits_beneath(window, free, train_images).any()
            identified += 1
    assert identified >= TEST * 5 // 2


# ---------------------------------------------------------------------- the files


def test_every_image_is_a_grey_pyramid_of_its_canvas_listed_in_the_index(
    megapixel_mnist_folder: Path, mnist_digits: MNISTDigits
) -> None:
    rows = read_index(megapixel_mnist_folder)
    assert Counter(row.split for row in rows) == {"train": TRAIN - 1, "val": 1, "test": TEST}
    for row in rows:
        protocol_split = "test" if row.split == "test" else "train"
        index = int(Path(row.path).stem)
        assert row.path == f"images/{protocol_split}/{index:05d}.tif"
        assert row.source == f"megapixel_mnist seed 0 {protocol_split} #{index}"
        canvas = canvas_of(protocol_split, index, mnist_digits)
        assert row.label == str(canvas.label)
        pyramid = PyramidTIFF(megapixel_mnist_folder / row.path)
        assert pyramid.channels == 1 and pyramid.levels[0] == (SIZE, SIZE)
        assert len(pyramid.levels) > 1
        assert np.array_equal(pyramid.read_level(0)[..., 0], canvas.pixels)


def test_a_rerun_draws_only_the_missing_images_the_same(
    megapixel_mnist_folder: Path, mnist_dir: Path, tmp_path: Path
) -> None:
    again = rerun_after_a_kill(
        megapixel_mnist_folder,
        tmp_path / "set",
        "images/train/00002.tif",
        lambda dst: generate_megapixel_mnist(
            dst, data_dir=mnist_dir, workers=1, **MEGAPIXEL_MNIST_SMALL
        ),
    )
    assert (again.generated, again.already_done) == (1, TRAIN + TEST - 1)


@pytest.mark.parametrize(("setting", "value"), [("seed", 1), ("canvas_size", 400)])
def test_images_are_not_mixed_with_other_settings(
    megapixel_mnist_folder: Path, mnist_dir: Path, tmp_path: Path, setting: str, value: int
) -> None:
    dst = tmp_path / "set"
    shutil.copytree(megapixel_mnist_folder, dst)
    arguments = {**MEGAPIXEL_MNIST_SMALL, setting: value}
    with pytest.raises(ConfigError, match=rf"{setting}: .* → {value}.*another dst"):
        generate_megapixel_mnist(dst, data_dir=mnist_dir, **arguments)


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({"train_size": 1}, "train_size"),
        ({"test_size": 0}, "test_size"),
        ({"canvas_size": 100}, "canvas_size"),
        ({"workers": 0}, "workers"),
        ({"val_fraction": 0.01}, "val_fraction"),
        ({"val_fraction": 1.0}, "val_fraction"),
    ],
)
def test_bad_arguments_are_named_in_one_line(
    tmp_path: Path, arguments: dict[str, float], named: str
) -> None:
    with pytest.raises(ConfigError, match=named) as error:
        generate_megapixel_mnist(
            tmp_path / "set", data_dir=tmp_path, **{"train_size": 10, **arguments}
        )
    assert "\n" not in str(error.value)
    assert not (tmp_path / "set").exists()


@pytest.mark.filterwarnings("ignore:.*has no photos of class")  # a dozen images, not all digits
def test_the_datamodule_reads_the_index_with_the_digits_as_classes(
    megapixel_mnist_folder: Path,
) -> None:
    datamodule = PhotoDataModule(
        str(megapixel_mnist_folder),
        classes=DIGITS,
        proxy_size=64,
        image_channels=1,
        proxy_channels=1,
    )
    assert datamodule.class_names == DIGITS and datamodule.num_classes == 10
    datamodule.setup(None)
    sizes = {split: len(datamodule.datasets[split]) for split in ("train", "val", "test")}
    assert sizes == {"train": TRAIN - 1, "val": 1, "test": TEST}
    rows = [row for row in read_index(megapixel_mnist_folder) if row.split == "test"]
    batch = next(iter(datamodule.test_dataloader()))
    assert batch["proxy"].shape == (TEST, 1, 64, 64)
    assert torch.equal(batch["target"], torch.tensor([int(row.label) for row in rows]))


def test_a_photo_set_of_other_channels_than_the_data_says_is_refused(
    megapixel_mnist_folder: Path,
) -> None:
    datamodule = PhotoDataModule(str(megapixel_mnist_folder), classes=DIGITS, proxy_size=64)
    with pytest.raises(ConfigError, match=r"\.tif has 1 channel\(s\), but data\.image_channels=3"):
        datamodule.setup("fit")


def test_summary_counts_each_class_and_split(megapixel_mnist_folder: Path) -> None:
    rows = read_index(megapixel_mnist_folder)
    generated = generate_megapixel_mnist(
        megapixel_mnist_folder, data_dir=megapixel_mnist_folder, **MEGAPIXEL_MNIST_SMALL
    )  # everything is drawn already: MNIST is not even read
    assert (generated.generated, generated.already_done) == (0, TRAIN + TEST)
    text = summary(generated, megapixel_mnist_folder)
    first = Counter((row.label, row.split) for row in rows)
    label = rows[0].label
    line = next(line for line in text.splitlines() if line.split()[0] == label)
    counts = [first[label, split] for split in ("train", "val", "test")]
    assert line.split()[1:] == [str(n) for n in (*counts, sum(counts))]
    totals = [str(n) for n in (TRAIN - 1, 1, TEST, TRAIN + TEST)]
    assert text.splitlines()[-2].split() == ["total", *totals]
    assert "drew 0 image(s)" in text and str(megapixel_mnist_folder / "index.csv") in text


# ---------------------------------------------------------------------- the CLI


@pytest.mark.slow
def test_draw_then_fit_megapixel_mnist_from_the_command_line(
    tmp_path: Path, mnist_dir: Path
) -> None:
    dst = tmp_path / "megapixel_mnist"
    draw = varsac(
        "data", "megapixel_mnist", f"dst={dst}", "train_size=20", "test_size=10",
        "canvas_size=300", cwd=tmp_path, data_dir=mnist_dir,
    )  # fmt: skip
    assert "varsac data megapixel_mnist finished" in draw.stdout + draw.stderr
    assert Counter(row.split for row in read_index(dst)) == {"train": 18, "val": 2, "test": 10}
    fit = varsac(
        "fit", "experiment=megapixel_mnist", f"data.root={dst}", "data.batch_size=4",
        "model.crop_classifier.channels=[8,16]", "trainer.fast_dev_run=true",
        cwd=tmp_path, data_dir=mnist_dir, OMP_NUM_THREADS="1",
    )  # fmt: skip
    assert "val/accuracy" in fit.stdout
