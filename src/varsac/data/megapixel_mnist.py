"""Megapixel MNIST: five MNIST digits and fifty patches of line noise on a large black canvas.

The benchmark of attention sampling (ATS: Katharopoulos & Fleuret, *Processing Megapixel
Images with Deep Attention-Sampling Models*, ICML 2019), which IPS (Bergner et al., ICLR
2023) uses too. An image is a black ``canvas_size``² canvas (1500²) holding

- five MNIST digits at their native 28², three of the image's class and two of other
  classes; the class is the label (10 classes);
- fifty noise patches of 28², each two straight line segments, drawn over the digits.

Taken from the ATS description (the paper; ``docs/examples.md`` of idiap/attention-sampling):
the black canvas, five digits at random positions of which three show the class, about 50
noise patches that look like digits (pairs of lines at random angles), 1500², 5 000 training
and 1 000 test images.

Taken from the ATS generator (idiap/attention-sampling, ``scripts/make_mnist.py``), where the
description is silent:

- the class is uniform over 0..9; the three digits of the class are drawn from its MNIST
  images, the two others from the images of all other classes (so they may share a class),
  both with replacement;
- a digit's top-left corner is uniform over the integer positions [0, S − 28]², redrawn
  while it lies closer than 28 px on both axes to an earlier digit's (no two digits overlap);
- the training images take their digits from MNIST's training digits, the test images
  from MNIST's test digits;
- the noise: each split draws a bank of 50 patterns once, and every patch picks one of
  them uniformly. A pattern is the union of two segments across the 28² patch. The first
  starts at the top-left pixel and runs down, at an angle uniform in [0°, 72°) from the
  left edge, until it reaches the bottom or the right edge (56 points, rounded to pixels).
  The second is another pattern's first segment (a random permutation of the bank),
  mirrored left–right with probability 1 − 0.33² − 0.67² ≈ 0.44 (ATS flips it twice,
  each time with probability 0.33, along the same axis). Each stroke pixel has intensity
  255 · U(0.8, 1), fixed in the bank. A patch's top-left corner is uniform over [28, S − 28)².

Our own choices:

- noise combines with the canvas by maximum, so it never erases a digit's pixel (ATS pastes
  the patches over the digits; IPS's copy of the generator pastes the digits over the noise);
- digits keep their uint8 pixels (ATS's float32 round trip lowers an odd pixel by one);
- MNIST's training digits are the classic first 50 000 (``load_mnist``; ATS used all 60 000);
- each image is drawn from a generator seeded by (seed, split, image number) alone, so a
  rerun is identical whatever the processes and resumes where it stopped (ATS draws a whole
  split from one global stream);
- a validation split of ``val_fraction`` of the training images, drawn from the seed; the
  test images stay the test split.

On disk (``generate_megapixel_mnist(dst)``)::

    DST/images/train/00017.tif    training image 17 (in the index: split train or val)
    DST/images/test/00003.tif     test image 3
    DST/index.csv                 path,label,split,source (varsac.data.photo_index)
    DST/megapixel_mnist.json      the settings the pixels depend on

Each image is a grey pyramid TIFF (levels 1500², 750², 375², 187²) with deflate tiles. On
1500² canvases deflate took 28–29 KB an image and JPEG at quality 90 took 80–82 KB, with
errors of up to 16 grey levels: the canvas is almost all black, and JPEG spends its bits on
the hard edges of the one-pixel strokes. Deflate is smaller and keeps the pixels exact.
``PhotoDataModule`` reads the index with ``classes`` "0".."9".
"""

import logging
import math
import os
import time
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path

import numpy as np

from varsac.data.generation import Generated, draw_on_processes
from varsac.data.mnist import DIGIT_SIZE, NUM_CLASSES, ImagesAndLabels, MNISTDigits, load_mnist
from varsac.data.photo_index import INDEX_NAME, IndexRow, class_table, write_index
from varsac.errors import ConfigError, check_at_least
from varsac.files import resume_folder
from varsac.pyramid import write_pyramid

log = logging.getLogger(__name__)

CANVAS_SIZE = 1500
TARGET_DIGITS = 3  # digits of the image's class
OTHER_DIGITS = 2  # digits of other classes
DIGITS = TARGET_DIGITS + OTHER_DIGITS
NOISE_PATCHES = 50  # per image
NOISE_PATTERNS = 50  # in each split's bank
NOISE_MAX_ANGLE = 0.4 * math.pi  # a segment's angle from the patch's left edge: U[0, 72°)
NOISE_SEGMENT_POINTS = 2 * DIGIT_SIZE
NOISE_MIRRORING = 1 - 0.33**2 - 0.67**2  # probability that the second segment is mirrored
NOISE_INTENSITY = (0.8, 1.0)  # a stroke pixel is 255 · U(0.8, 1), rounded down
# Five digits always find room: the four placed first exclude at most 4 · 55² of the
# (S − 27)² corners, fewer than all of them from S = 138 on.
MIN_CANVAS_SIZE = DIGITS * DIGIT_SIZE
PROTOCOL_SPLITS = ("train", "test")  # validation images are training images
COMPRESSION = "deflate"
SETTINGS_NAME = "megapixel_mnist.json"
FORMAT_VERSION = 1  # bump when the same settings give other pixels or labels

# The second word of every generator's seed, one per use; the third is the protocol split.
# (numpy pads a seed with zeros, so [seed, a] and [seed, a, 0] are the same generator.)
_BANK, _IMAGE, _VALIDATION = 0, 1, 2
_SPLIT_NUMBERS = {"train": 0, "test": 1}


@dataclass(frozen=True)
class MegapixelCanvas:
    """One image and what was drawn on it."""

    pixels: np.ndarray  # uint8 (S, S): black but for the digits and the noise
    label: int  # the class: the digit of TARGET_DIGITS of the five
    digit_boxes: np.ndarray  # int64 (5, 4): (top, left, bottom, right), bottom and right
    # exclusive; the class's digits first
    digit_indices: np.ndarray  # int64 (5,): each digit's index among the MNIST images drawn from
    noise_boxes: np.ndarray  # int64 (NOISE_PATCHES, 4), as digit_boxes


# ---------------------------------------------------------------------- one canvas


def segment_mask(angle: float) -> np.ndarray:
    """bool (28, 28): a segment from the top-left pixel, ``angle`` (radians, in [0, π/2))
    from the left edge, to the bottom or the right edge."""
    last = DIGIT_SIZE - 0.51  # the farthest sample rounds to the last pixel
    reach = last / max(math.cos(angle), math.sin(angle))
    steps = np.linspace(0.0, reach, NOISE_SEGMENT_POINTS)
    rows = np.round(steps * math.cos(angle)).astype(int)
    columns = np.round(steps * math.sin(angle)).astype(int)
    mask = np.zeros((DIGIT_SIZE, DIGIT_SIZE), bool)
    mask[rows, columns] = True
    return mask


def noise_bank(rng: np.random.Generator) -> np.ndarray:
    """uint8 (NOISE_PATTERNS, 28, 28): the noise patterns of one split (see the module
    docstring), strokes 204..254, elsewhere 0."""
    angles = rng.uniform(0.0, NOISE_MAX_ANGLE, size=NOISE_PATTERNS)
    first = np.stack([segment_mask(angle) for angle in angles])
    second = first[rng.permutation(NOISE_PATTERNS)]
    mirrored = rng.random(NOISE_PATTERNS) < NOISE_MIRRORING
    second[mirrored] = second[mirrored, :, ::-1]
    intensity = rng.uniform(*NOISE_INTENSITY, size=first.shape)
    return np.where(first | second, np.floor(255 * intensity), 0).astype(np.uint8)


def _digit_corners(rng: np.random.Generator, canvas_size: int) -> np.ndarray:
    """int64 (5, 2): (top, left) of each digit, none closer than 28 px on both axes to
    another."""
    corners: list[np.ndarray] = []
    while len(corners) < DIGITS:
        corner = rng.integers(0, canvas_size - DIGIT_SIZE, size=2, endpoint=True)
        if all((np.abs(corner - other) >= DIGIT_SIZE).any() for other in corners):
            corners.append(corner)
    return np.stack(corners)


def _boxes(corners: np.ndarray) -> np.ndarray:
    """int64 (N, 4) boxes (top, left, bottom, right) of 28² squares at (top, left) ``corners``."""
    return np.concatenate([corners, corners + DIGIT_SIZE], axis=1).astype(np.int64)


def compose_canvas(
    rng: np.random.Generator,
    digits: ImagesAndLabels,
    bank: np.ndarray,
    canvas_size: int = CANVAS_SIZE,
) -> MegapixelCanvas:
    """One image drawn from ``rng``: the class, its five digits from ``digits`` (uint8
    (N, 28, 28) images, int64 (N,) labels), their places, then 50 patches of ``bank``
    (uint8 (P, 28, 28), ``noise_bank``) combined by maximum. ``canvas_size`` is at least
    ``MIN_CANVAS_SIZE``.

    The class is ``rng``'s first draw (``image_label`` relies on it).
    """
    images, labels = digits
    label = int(rng.integers(NUM_CLASSES))
    chosen = np.concatenate(
        [
            rng.choice(np.flatnonzero(labels == label), TARGET_DIGITS),
            rng.choice(np.flatnonzero(labels != label), OTHER_DIGITS),
        ]
    )
    digit_corners = _digit_corners(rng, canvas_size)
    noise_corners = rng.integers(DIGIT_SIZE, canvas_size - DIGIT_SIZE, size=(NOISE_PATCHES, 2))
    patterns = rng.integers(len(bank), size=NOISE_PATCHES)
    pixels = np.zeros((canvas_size, canvas_size), np.uint8)
    for (top, left), index in zip(digit_corners, chosen, strict=True):
        pixels[top : top + DIGIT_SIZE, left : left + DIGIT_SIZE] = images[index]
    for (top, left), pattern in zip(noise_corners, patterns, strict=True):
        window = pixels[top : top + DIGIT_SIZE, left : left + DIGIT_SIZE]
        np.maximum(window, bank[pattern], out=window)
    return MegapixelCanvas(
        pixels=pixels,
        label=label,
        digit_boxes=_boxes(digit_corners),
        digit_indices=chosen.astype(np.int64),
        noise_boxes=_boxes(noise_corners),
    )


def _split_number(split: str) -> int:
    if split not in _SPLIT_NUMBERS:
        raise ValueError(f"split must be one of {PROTOCOL_SPLITS}, got {split!r}")
    return _SPLIT_NUMBERS[split]


def split_noise_bank(seed: int, split: str) -> np.ndarray:
    """uint8 (NOISE_PATTERNS, 28, 28): the noise bank of ``split`` (train or test)."""
    return noise_bank(np.random.default_rng([seed, _BANK, _split_number(split)]))


def image_generator(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator image ``index`` of ``split`` (train or test) is drawn from."""
    return np.random.default_rng([seed, _IMAGE, _split_number(split), index])


def image_label(seed: int, split: str, index: int) -> int:
    """The class of image ``index`` of ``split``, without drawing the image."""
    return int(image_generator(seed, split, index).integers(NUM_CLASSES))


# ---------------------------------------------------------------------- the set


def image_path(split: str, index: int) -> str:
    """Image ``index`` of ``split`` (train or test), relative to the set's folder."""
    return f"images/{split}/{index:05d}.tif"


def validation_indices(seed: int, train_size: int, val_fraction: float) -> set[int]:
    """The training images (of 0..train_size − 1) that form the validation split:
    round(train_size · val_fraction) of them, drawn from ``seed``."""
    count = round(train_size * val_fraction)
    rng = np.random.default_rng([seed, _VALIDATION])
    return set(rng.choice(train_size, size=count, replace=False).tolist())


def index_rows(seed: int, train_size: int, test_size: int, val_fraction: float) -> list[IndexRow]:
    """The index of a set: the training images (split train or val), then the test images."""
    validation = validation_indices(seed, train_size, val_fraction)
    rows = []
    for split, size in (("train", train_size), ("test", test_size)):
        for index in range(size):
            listed_as = "val" if split == "train" and index in validation else split
            rows.append(
                IndexRow(
                    path=image_path(split, index),
                    label=str(image_label(seed, split, index)),
                    split=listed_as,
                    source=f"megapixel_mnist seed {seed} {split} #{index}",
                )
            )
    return rows


@cache
def _mnist(data_dir: str) -> MNISTDigits:
    """MNIST from the cache under ``data_dir``, read once per process."""
    return load_mnist(data_dir, sources=())


def _write_images(
    dst: Path, seed: int, canvas_size: int, data_dir: str, todo: list[tuple[str, int]]
) -> list[tuple[str, int]]:
    """Draw the (split, index) images of ``todo`` (in a worker process) and write their
    pyramid TIFFs; return them."""
    banks = {split: split_noise_bank(seed, split) for split in {split for split, _ in todo}}
    for split, index in todo:
        digits = getattr(_mnist(data_dir), split)
        canvas = compose_canvas(
            image_generator(seed, split, index), digits, banks[split], canvas_size
        )
        write_pyramid(canvas.pixels, dst / image_path(split, index), compression=COMPRESSION)
    return todo


def _check_arguments(
    train_size: int, test_size: int, val_fraction: float, canvas_size: int, workers: int | None
) -> None:
    """Raise ``ConfigError`` naming the first argument the generator cannot work with."""
    check_at_least(
        train_size=(train_size, 2),
        test_size=(test_size, 1),
        canvas_size=(canvas_size, MIN_CANVAS_SIZE),
    )
    if workers is not None:
        check_at_least(workers=(workers, 1))
    validation = round(train_size * val_fraction)
    if not 0 < validation < train_size:
        raise ConfigError(
            f"val_fraction={val_fraction} of train_size={train_size} gives {validation} "
            "validation images: it must leave at least one for validation and one for training"
        )


def generate_megapixel_mnist(
    dst: str | os.PathLike[str],
    *,
    data_dir: str | os.PathLike[str],
    train_size: int = 5000,
    test_size: int = 1000,
    val_fraction: float = 0.1,
    canvas_size: int = CANVAS_SIZE,
    seed: int = 0,
    workers: int | None = None,
) -> Generated[IndexRow]:
    """Draw ``train_size`` training and ``test_size`` test images into ``dst`` as pyramid
    TIFFs and write ``dst/index.csv`` (see the module docstring).

    MNIST comes from ``data_dir`` (``load_mnist``: fetched there if missing). Images whose
    TIFF exists already are kept, so an interrupted run resumes, and a later run with more
    images adds them; ``val_fraction`` and the sizes only change the index. Settings that
    change the pixels (``seed``, ``canvas_size``) are recorded in ``dst/megapixel_mnist.json``,
    and other ones into the same ``dst`` are refused. Images are drawn on ``workers``
    processes (None: one per core).
    """
    _check_arguments(train_size, test_size, val_fraction, canvas_size, workers)
    dst = Path(dst).expanduser()
    settings = {
        "format_version": FORMAT_VERSION,
        "seed": seed,
        "canvas_size": canvas_size,
        "compression": COMPRESSION,
    }
    resume_folder(dst, SETTINGS_NAME, settings, "Megapixel MNIST images")
    sizes = {"train": train_size, "test": test_size}
    todo = [
        (split, index)
        for split in PROTOCOL_SPLITS
        for index in range(sizes[split])
        if not (dst / image_path(split, index)).is_file()
    ]
    total = train_size + test_size
    log.info(
        "Megapixel MNIST in %s: %d of %d images to draw at %d², %d drawn before",
        dst, len(todo), total, canvas_size, total - len(todo),
    )  # fmt: skip
    start = time.perf_counter()
    if todo:
        mnist_dir = str(Path(data_dir).expanduser())
        load_mnist(mnist_dir)  # fetched here once; the workers read its cache
        draw = partial(_write_images, dst, seed, canvas_size, mnist_dir)
        draw_on_processes(draw, todo, workers, unit="image", desc="megapixel MNIST")
    rows = index_rows(seed, train_size, test_size, val_fraction)
    write_index(dst, rows)
    return Generated(
        rows=rows,
        generated=len(todo),
        already_done=total - len(todo),
        seconds=time.perf_counter() - start,
    )


def summary(generated: Generated[IndexRow], dst: str | os.PathLike[str]) -> str:
    """Images per class and split, what was drawn, how fast and where, as a few lines."""
    index = Path(dst) / INDEX_NAME
    return "\n".join([*class_table(generated.rows), f"{generated.drawn('image')}; index: {index}"])
