"""Cluttered MNIST (DeepMind mnist-cluttered style): generator, on-disk cache and datamodule.

A canvas holds ``num_digits`` 28×28 MNIST digits at random, non-overlapping positions.

- ``identify``: the digits are of distinct classes and the target is their multi-hot vector
  over the 10 classes; ``num_distractors`` clutter pieces (random ``distractor_size``² patches
  cut from other digits) lie under the digits.
- ``sum``: no clutter (as in the paper), any classes, the target is the sum of the classes.

Pieces are combined by a pixel-wise max: clutter first, then the digits on top.
"""

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyvips
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from tqdm import tqdm

from varsac.data import SPLITS
from varsac.data.mnist import DIGIT_SIZE, NUM_CLASSES, load_mnist
from varsac.data.splits import SplitDataModule
from varsac.errors import check_at_least
from varsac.files import replace_atomically, save_npz_atomically
from varsac.image_source import to_float
from varsac.pyramid import PyramidTIFF, write_pyramid

log = logging.getLogger(__name__)

LABEL_MODES = ("identify", "sum")
# Bump when the generator changes what it draws, so that old caches are not reused.
FORMAT_VERSION = 1

_MAX_REJECTION_ROUNDS = 1000
_CHUNK = 1000  # canvases rendered (or downsampled to proxies) at a time
_PROGRESS_MIN_CANVASES = 5000


@dataclass(frozen=True)
class ClutteredSplit:
    """``n`` generated canvases and what was drawn on them.

    canvases: uint8 (n, H, W).
    digits: int64 (n, num_digits), the class of each digit drawn.
    boxes: int64 (n, num_digits, 4), each digit's placement (x0, y0, x1, y1) in pixels,
        end exclusive.
    source_indices: int64 (n, num_digits), index of each digit in the MNIST images it came from.
    """

    canvases: np.ndarray
    digits: np.ndarray
    boxes: np.ndarray
    source_indices: np.ndarray

    def save(self, path: Path) -> None:
        """Write the split to the ``.npz`` file ``path``, atomically."""
        save_npz_atomically(
            path,
            canvases=self.canvases,
            digits=self.digits,
            boxes=self.boxes,
            source_indices=self.source_indices,
        )

    @classmethod
    def load(cls, path: Path) -> "ClutteredSplit":
        """Read a split written by ``save``."""
        with np.load(path) as arrays:
            return cls(
                canvases=arrays["canvases"],
                digits=arrays["digits"],
                boxes=arrays["boxes"],
                source_indices=arrays["source_indices"],
            )


@dataclass(frozen=True)
class CanvasSettings:
    """How a cluttered canvas is drawn: its side, its digits and its clutter."""

    canvas_size: int = 100
    num_digits: int = 2
    num_distractors: int = 8
    distractor_size: int = 8
    label_mode: str = "identify"

    def check(self, digit_size: int = DIGIT_SIZE) -> None:
        """Raise ``ValueError`` naming the first setting that cannot make a canvas of
        ``digit_size``² digits."""
        if self.label_mode not in LABEL_MODES:
            raise ValueError(f"label_mode must be one of {LABEL_MODES}, got {self.label_mode!r}")
        check_at_least(num_digits=(self.num_digits, 1))
        if self.label_mode == "identify" and self.num_digits > NUM_CLASSES:
            raise ValueError(
                f"num_digits must be at most {NUM_CLASSES} with label_mode='identify' (the digits "
                f"are of distinct classes), got {self.num_digits}"
            )
        if (self.canvas_size // digit_size) ** 2 < self.num_digits:
            raise ValueError(
                f"canvas_size={self.canvas_size} is too small for num_digits={self.num_digits} "
                f"non-overlapping {digit_size}×{digit_size} digits"
            )
        check_at_least(num_distractors=(self.num_distractors, 0))
        if self.label_mode == "sum" and self.num_distractors != 0:
            raise ValueError(
                "num_distractors must be 0 with label_mode='sum' (the sum task has no clutter), "
                f"got {self.num_distractors}"
            )
        if not 1 <= self.distractor_size <= digit_size:
            raise ValueError(
                f"distractor_size must be between 1 and {digit_size}, got {self.distractor_size}"
            )


def _draw_digits(
    rng: np.random.Generator, labels: np.ndarray, n: int, num_digits: int, distinct: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Pick a class uniformly (distinct within a canvas if asked), then an image of that class.

    Returns source indices into ``labels`` and their classes, both int64 (n, num_digits).
    """
    classes, counts = np.unique(labels, return_counts=True)
    if distinct and len(classes) < num_digits:
        raise ValueError(
            f"num_digits={num_digits} distinct classes asked, but the digits hold only "
            f"{len(classes)} classes"
        )
    images_by_class = np.argsort(labels, kind="stable")
    class_starts = np.cumsum(counts) - counts
    if distinct:
        chosen = np.argsort(rng.random((n, len(classes))), axis=1)[:, :num_digits]
    else:
        chosen = rng.integers(len(classes), size=(n, num_digits))
    within_class = rng.integers(0, counts[chosen])
    source_indices = images_by_class[class_starts[chosen] + within_class]
    return source_indices.astype(np.int64), classes[chosen].astype(np.int64)


def _any_overlap(corners: np.ndarray, size: int) -> np.ndarray:
    """Whether any two ``size``² squares at ``corners`` (n, k, 2) overlap: bool (n,)."""
    gaps = np.abs(corners[:, :, None, :] - corners[:, None, :, :])  # (n, k, k, 2)
    overlap = (gaps < size).all(axis=-1)
    diagonal = np.arange(corners.shape[1])
    overlap[:, diagonal, diagonal] = False
    return overlap.any(axis=(1, 2))


def _place_digits(
    rng: np.random.Generator, n: int, num_digits: int, canvas_size: int, digit_size: int
) -> np.ndarray:
    """Top-left corners (x, y) of non-overlapping digits inside the canvas: int64 (n, k, 2)."""
    span = canvas_size - digit_size + 1
    corners = rng.integers(span, size=(n, num_digits, 2))
    for _ in range(_MAX_REJECTION_ROUNDS):
        overlapping = np.flatnonzero(_any_overlap(corners, digit_size))
        if overlapping.size == 0:
            return corners
        corners[overlapping] = rng.integers(span, size=(overlapping.size, num_digits, 2))
    raise ValueError(
        f"could not place num_digits={num_digits} non-overlapping digits on a "
        f"canvas_size={canvas_size} canvas; use a larger canvas_size or fewer num_digits"
    )


def _cut(images: np.ndarray, sources: np.ndarray, corners: np.ndarray, size: int) -> np.ndarray:
    """Patches ``images[sources]`` at ``corners`` (..., 2) as (x, y): uint8 (..., size, size)."""
    offsets = np.arange(size)
    rows = corners[..., 1, None, None] + offsets[:, None]
    cols = corners[..., 0, None, None] + offsets[None, :]
    return images[sources[..., None, None], rows, cols]


def _draw_distractors(
    rng: np.random.Generator,
    images: np.ndarray,
    source_indices: np.ndarray,
    count: int,
    size: int,
) -> np.ndarray:
    """Non-blank ``size``² patches of digits other than each canvas's own.

    Returns uint8 (n, count, size, size).
    """
    n, digit_size = len(source_indices), images.shape[-1]
    sources = rng.integers(len(images), size=(n, count))
    corners = rng.integers(digit_size - size + 1, size=(n, count, 2))
    patches = _cut(images, sources, corners, size)
    for _ in range(_MAX_REJECTION_ROUNDS):
        blank = patches.reshape(n, count, size * size).max(axis=-1) == 0
        own_digit = (sources[:, :, None] == source_indices[:, None, :]).any(axis=-1)
        redraw = blank | own_digit
        if not redraw.any():
            return patches
        sources[redraw] = rng.integers(len(images), size=redraw.sum())
        corners[redraw] = rng.integers(digit_size - size + 1, size=(redraw.sum(), 2))
        patches[redraw] = _cut(images, sources[redraw], corners[redraw], size)
    raise ValueError(f"could not cut non-blank distractor patches of distractor_size={size}")


def _paste_max(canvases: np.ndarray, pieces: np.ndarray, corners: np.ndarray) -> None:
    """In place, ``canvases`` (m, H, W) = max(canvas, piece) where each piece (m, h, w) goes."""
    m, height, width = pieces.shape
    which = np.arange(m)[:, None, None]
    rows = corners[:, 1, None, None] + np.arange(height)[:, None]
    cols = corners[:, 0, None, None] + np.arange(width)[None, :]
    canvases[which, rows, cols] = np.maximum(canvases[which, rows, cols], pieces)


def generate_cluttered(
    digit_images: np.ndarray,
    digit_labels: np.ndarray,
    n: int,
    settings: CanvasSettings = CanvasSettings(),
    seed: int | Sequence[int] = 0,
) -> ClutteredSplit:
    """Draw ``n`` cluttered canvases as ``settings`` say from MNIST-like digits.

    digit_images: uint8 (M, d, d); digit_labels: int (M,). The same arguments and ``seed``
    always give the same canvases.
    """
    digit_size = digit_images.shape[-1]
    settings.check(digit_size)
    canvas_size, num_digits, num_distractors, distractor_size, label_mode = astuple(settings)
    rng = np.random.default_rng(seed)
    source_indices, digits = _draw_digits(
        rng, digit_labels, n, num_digits, distinct=label_mode == "identify"
    )
    digit_corners = _place_digits(rng, n, num_digits, canvas_size, digit_size)
    patches = _draw_distractors(rng, digit_images, source_indices, num_distractors, distractor_size)
    patch_corners = rng.integers(canvas_size - distractor_size + 1, size=(n, num_distractors, 2))

    canvases = np.zeros((n, canvas_size, canvas_size), dtype=np.uint8)
    with tqdm(
        total=n,
        desc="cluttered MNIST",
        unit="canvas",
        disable=n < _PROGRESS_MIN_CANVASES,
        leave=False,
    ) as progress:
        for start in range(0, n, _CHUNK):
            chunk = slice(start, start + _CHUNK)
            for piece in range(num_distractors):
                _paste_max(canvases[chunk], patches[chunk, piece], patch_corners[chunk, piece])
            for digit in range(num_digits):
                digit_pixels = digit_images[source_indices[chunk, digit]]
                _paste_max(canvases[chunk], digit_pixels, digit_corners[chunk, digit])
            progress.update(len(canvases[chunk]))

    boxes = np.concatenate([digit_corners, digit_corners + digit_size], axis=-1)
    return ClutteredSplit(canvases, digits, boxes.astype(np.int64), source_indices)


def cluttered_targets(digits: np.ndarray, label_mode: str) -> np.ndarray:
    """Targets from the classes drawn (n, num_digits).

    identify: float32 (n, 10) multi-hot; sum: int64 (n,) the sum of the classes.
    """
    if label_mode == "identify":
        targets = np.zeros((len(digits), NUM_CLASSES), dtype=np.float32)
        np.put_along_axis(targets, digits, 1.0, axis=1)
        return targets
    if label_mode == "sum":
        return digits.sum(axis=1).astype(np.int64)
    raise ValueError(f"label_mode must be one of {LABEL_MODES}, got {label_mode!r}")


def make_proxies(
    canvases: np.ndarray, proxy_size: int, noise_std: float, seed: int
) -> torch.Tensor:
    """Canvases uint8 (N, H, W) -> proxies float32 (N, 1, P, P) in [0, 1].

    Each canvas is area-averaged down to ``proxy_size``², then ``add_proxy_noise``.
    """
    proxies = torch.empty((len(canvases), 1, proxy_size, proxy_size))
    for start in range(0, len(canvases), _CHUNK):
        images = to_float(canvases[start : start + _CHUNK, ..., None])  # (n, 1, H, W)
        proxies[start : start + len(images)] = F.interpolate(
            images, size=(proxy_size, proxy_size), mode="area"
        )
    return add_proxy_noise(proxies, noise_std, seed)


def add_proxy_noise(proxies: torch.Tensor, noise_std: float, seed: int) -> torch.Tensor:
    """Gaussian noise of std ``noise_std`` (the same for a given ``seed``), clamped to [0, 1]."""
    if noise_std > 0:
        generator = torch.Generator().manual_seed(seed)
        proxies = proxies + noise_std * torch.randn(proxies.shape, generator=generator)
    return proxies.clamp_(0.0, 1.0)


class CanvasPyramids:
    """A split's canvases as pyramid TIFFs ``folder/NNNNNN.tif``, each written when first read.

    A canvas is upsampled to ``image_size``² (bilinear) and written atomically the
    first time a batch asks for it, so a run writes only what it reads and its
    first step does not wait for the whole split; files written before are kept,
    whichever run wrote them (the cache is shared, a killed run resumes).
    """

    def __init__(self, canvases: np.ndarray, folder: Path, image_size: int) -> None:
        self.canvases = canvases  # uint8 (N, H, W)
        self.folder = folder
        self.image_size = image_size
        self._opened: dict[int, PyramidTIFF] = {}
        self._announced = False

    def __len__(self) -> int:
        return len(self.canvases)

    def path(self, index: int) -> Path:
        return self.folder / f"{index:06d}.tif"

    def __getitem__(self, indices: Sequence[int]) -> list[PyramidTIFF]:
        """The pyramids of canvases ``indices``; those not on disc yet are written first,
        on all cores."""
        missing = [i for i in dict.fromkeys(indices) if i not in self._opened]
        to_write = [i for i in missing if not self.path(i).is_file()]
        if to_write and not self._announced:
            log.info(
                "cluttered MNIST: writing the %d² pyramid TIFFs of %s as batches first read them",
                self.image_size,
                self.folder,
            )
            self._announced = True
        if len(to_write) > 1:
            with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
                list(pool.map(self._write, to_write))
        elif to_write:
            self._write(to_write[0])
        self._opened.update({i: PyramidTIFF(self.path(i)) for i in missing})
        return [self._opened[i] for i in indices]

    def _write(self, index: int) -> None:
        canvas = pyvips.Image.new_from_array(self.canvases[index])
        upsampled = canvas.resize(self.image_size / canvas.width, kernel="linear").cast("uchar")
        write_pyramid(upsampled.crop(0, 0, self.image_size, self.image_size), self.path(index))


class ClutteredMNISTDataset(Dataset):
    """One split; a sample is a dict:

    image: float32 (1, H, W) in [0, 1], or the canvas's ``PyramidTIFF`` when the split
    is read as pyramids (``CanvasPyramids``); proxy: float32 (1, P, P) in [0, 1]; target:
    identify float32 (10,) multi-hot, sum int64 (); boxes: float32 (num_digits, 4),
    (x0, y0, x1, y1) as fractions of the canvas side.

    Canvases stay uint8 in memory; the proxies (noise included) are computed once, here,
    area-averaged from the canvases (which the pyramids only upsample).
    """

    def __init__(
        self,
        split: ClutteredSplit,
        *,
        label_mode: str,
        proxy_size: int,
        proxy_noise: float,
        noise_seed: int,
        pyramids: CanvasPyramids | None = None,
    ) -> None:
        self.split = split
        self.targets = torch.from_numpy(cluttered_targets(split.digits, label_mode))
        self.boxes = torch.from_numpy(split.boxes).float() / split.canvases.shape[-1]
        self.pyramids = pyramids
        self.proxies = make_proxies(split.canvases, proxy_size, proxy_noise, noise_seed)

    def __len__(self) -> int:
        return len(self.split.canvases)

    def __getitems__(self, indices: list[int]) -> list[dict[str, Any]]:
        """The samples of a batch (the DataLoader fetches a batch at once through this)."""
        if self.pyramids is None:
            images = to_float(self.split.canvases[indices][..., None])  # (B, 1, H, W)
        else:
            images = self.pyramids[indices]
        return [
            {
                "image": image,
                "proxy": self.proxies[index],
                "target": self.targets[index],
                "boxes": self.boxes[index],
            }
            for index, image in zip(indices, images, strict=True)
        ]

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.__getitems__([index])[0]


def _derived_seed(*entropy: int) -> int:
    """A 32-bit seed from several integers (the run's seed, a split, a purpose)."""
    return int(np.random.SeedSequence(list(entropy)).generate_state(1)[0])


class ClutteredMNISTDataModule(SplitDataModule):
    """Cluttered MNIST canvases, generated once from real MNIST and cached under ``data_dir``.

    The splits live in ``data_dir/cluttered_mnist/<key>/{train,val,test}.npz``, ``key`` a hash
    of every generation parameter. Train canvases are drawn from MNIST train digits, val from
    MNIST val and test from MNIST test. Batches are dicts (see ``ClutteredMNISTDataset``).

    With ``image_size`` set, every canvas is also upsampled to ``image_size``² and written
    as a pyramid TIFF under ``<key>/pyramids_<image_size>/<split>/`` the first time a batch
    reads it (the paper's 2528² variant); batches then carry the files for the localized
    spatial transformer.
    """

    fixed_channels = (1, 1)  # grey canvases, grey proxies

    def __init__(
        self,
        data_dir: str,
        canvas_size: int = 100,
        num_digits: int = 2,
        num_distractors: int = 8,
        distractor_size: int = 8,
        label_mode: str = "identify",
        proxy_size: int = 32,
        proxy_noise: float = 0.0,
        train_size: int = 50_000,
        val_size: int = 5_000,
        test_size: int = 10_000,
        seed: int = 0,
        batch_size: int = 100,
        num_workers: int = 0,
        image_size: int | None = None,
        image_channels: int = 1,
        proxy_channels: int = 1,
    ) -> None:
        super().__init__(image_channels, proxy_channels, batch_size, num_workers, seed)
        if image_size is not None and image_size < canvas_size:
            raise ValueError(
                f"image_size must be at least canvas_size={canvas_size}, got {image_size}"
            )
        self.canvas_settings = CanvasSettings(
            canvas_size, num_digits, num_distractors, distractor_size, label_mode
        )
        self.canvas_settings.check()
        check_at_least(
            train_size=(train_size, 1),
            val_size=(val_size, 1),
            test_size=(test_size, 1),
            proxy_size=(proxy_size, 1),
            proxy_noise=(proxy_noise, 0.0),
        )
        if proxy_size > canvas_size:
            raise ValueError(
                f"proxy_size must be at most canvas_size={canvas_size}, got {proxy_size}"
            )
        data_dir = str(Path(data_dir).expanduser())  # `~` in configs means the home folder
        self.save_hyperparameters(logger=False)  # the loggers get the composed config instead
        self.num_classes = NUM_CLASSES if label_mode == "identify" else 9 * num_digits + 1

    @property
    def generation_params(self) -> dict[str, int | str]:
        """Everything that decides the cached canvases."""
        names = (
            "canvas_size", "num_digits", "num_distractors", "distractor_size", "label_mode",
            "train_size", "val_size", "test_size", "seed",
        )  # fmt: skip
        return {"format_version": FORMAT_VERSION, **{name: self.hparams[name] for name in names}}

    @property
    def cache_dir(self) -> Path:
        """``data_dir/cluttered_mnist/<key>``, ``key`` a short hash of ``generation_params``."""
        params = json.dumps(self.generation_params, sort_keys=True)
        key = hashlib.sha256(params.encode()).hexdigest()[:12]
        return Path(self.hparams.data_dir) / "cluttered_mnist" / key

    def split_path(self, split: str) -> Path:
        """The cached ``.npz`` of ``split`` (train, val or test)."""
        return self.cache_dir / f"{split}.npz"

    def prepare_data(self) -> None:
        """Generate and cache the splits that are not cached yet (pyramids are written as
        they are read: ``CanvasPyramids``)."""
        missing = [split for split in SPLITS if not self.split_path(split).is_file()]
        if missing:
            mnist = load_mnist(self.hparams.data_dir)
            params = json.dumps(self.generation_params, indent=2, sort_keys=True).encode()
            replace_atomically(self.cache_dir / "params.json", lambda handle: handle.write(params))
        else:
            log.info("cluttered MNIST: using the cached splits in %s", self.cache_dir)
        for split in missing:
            size = self.hparams[f"{split}_size"]
            log.info(
                "cluttered MNIST: generating %d %s canvases in %s", size, split, self.cache_dir
            )
            images, labels = getattr(mnist, split)
            generated = generate_cluttered(
                images, labels, size, self.canvas_settings, seed=(self.seed, SPLITS.index(split))
            )
            generated.save(self.split_path(split))

    def pyramid_dir(self, split: str) -> Path:
        """Where ``split``'s pyramid TIFFs live when ``image_size`` is set."""
        return self.cache_dir / f"pyramids_{self.hparams.image_size}" / split

    def load_split(self, split: str) -> ClutteredMNISTDataset:
        """The cached ``split`` with its proxies (computed here, noise included)."""
        path = self.split_path(split)
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: call prepare_data() first")
        loaded = ClutteredSplit.load(path)
        pyramids = None
        if self.hparams.image_size is not None:
            pyramids = CanvasPyramids(
                loaded.canvases, self.pyramid_dir(split), self.hparams.image_size
            )
        return ClutteredMNISTDataset(
            loaded,
            label_mode=self.hparams.label_mode,
            proxy_size=self.hparams.proxy_size,
            proxy_noise=self.hparams.proxy_noise,
            noise_seed=_derived_seed(self.seed, SPLITS.index(split), 1),
            pyramids=pyramids,
        )
