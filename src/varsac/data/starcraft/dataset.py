"""StarCraft II marine counting: game frames, their minimaps as proxies, marine counts as labels.

A folder in the layout of the authors' recorder (and of ``varsac data
starcraft``) holds ``predictions.csv``, one row per frame, with at least the
columns ``fullscreen_img`` (the frame, any size; 1024² in the paper),
``minimap_img`` (the minimap, 64²) and ``marine_count``; paths are relative to
the folder; both are images in any format libvips reads (PNG from the
recorder; JPEG, WebP…). Other columns (other units' counts) are kept on the
dataset.

Frames with ``max_count + 1`` or more marines are dropped (the paper: at most 22
of a unit type); the labels are the counts 0..max_count. Frames are converted
once to pyramid TIFFs under ``pyramid_dir`` (keyed by the folder), so the
localized spatial transformer reads glimpses off them; the minimaps are read
into memory as the proxies.

The split is the CSV's ``split`` column where it has one; otherwise contiguous
blocks in CSV order (train, then val, then test), so that frames recorded one
after another in a game, nearly alike, stay in one split. Training draws frames
with a ``WeightedRandomSampler`` that balances the counts; validation and test
keep the natural distribution.
"""

import csv
import hashlib
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyvips
import torch
from PIL import Image
from torch.utils.data import Sampler, WeightedRandomSampler

from varsac.data import SPLITS, check_split_fractions
from varsac.data.pyramid_conversion import as_srgb, convert_all, write_srgb_pyramid
from varsac.data.pyramid_dataset import PyramidDataset
from varsac.data.splits import SplitDataModule
from varsac.data.starcraft.layout import (
    CSV_NAME,
    FRAME_COLUMN,
    LABEL_COLUMN,
    MAX_COUNT,
    MINIMAP_COLUMN,
)
from varsac.errors import check_at_least
from varsac.image_files import check_file
from varsac.image_source import to_float
from varsac.pyramid import PyramidTIFF, open_image

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Frame:
    """One row of predictions.csv."""

    frame: Path  # absolute
    minimap: Path  # absolute
    count: int  # marines
    split: str
    unit_counts: dict[str, int]  # every *_count column, marines included


def read_frames(root: Path, max_count: int, val: float, test: float) -> list[Frame]:
    """The frames of ``root/predictions.csv`` with at most ``max_count`` marines, split."""
    path = root / CSV_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"no {CSV_NAME} in {root}: point data.root at a recorded or generated folder, "
            f"or make one with `varsac data starcraft dst={root} n=N`"
        )
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        missing = [c for c in (FRAME_COLUMN, MINIMAP_COLUMN, LABEL_COLUMN) if c not in columns]
        if missing:
            raise ValueError(f"{path} lacks the column(s) {missing}; it has {columns}")
        rows = list(reader)
    count_columns = [c for c in columns if c.endswith("_count")]
    frames, dropped = [], 0
    for line, row in enumerate(rows, start=2):
        try:
            unit_counts = {c: int(row[c]) for c in count_columns}
        except ValueError:
            raise ValueError(f"{path} line {line}: the counts must be integers: {row}") from None
        if unit_counts[LABEL_COLUMN] > max_count:
            dropped += 1
            continue
        split = row.get("split", "")
        if "split" in columns and split not in SPLITS:
            raise ValueError(f"{path} line {line}: split {split!r} is not one of {SPLITS}")
        frame, minimap = root / row[FRAME_COLUMN], root / row[MINIMAP_COLUMN]
        frames.append(Frame(frame, minimap, unit_counts[LABEL_COLUMN], split, unit_counts))
    if dropped:
        log.info("%s: dropped %d frames with more than %d marines", path, dropped, max_count)
    if "split" not in columns:
        frames = [
            Frame(f.frame, f.minimap, f.count, split, f.unit_counts)
            for f, split in zip(frames, contiguous_split(len(frames), val, test), strict=True)
        ]
    return frames


def contiguous_split(n: int, val: float, test: float) -> list[str]:
    """Split names for ``n`` items in order: the first for train, then ``round(n·val)`` for val,
    then the last ``round(n·test)`` for test."""
    check_split_fractions(val, test)
    n_test, n_val = round(n * test), round(n * val)
    n_train = n - n_val - n_test
    return ["train"] * n_train + ["val"] * n_val + ["test"] * n_test


def read_minimaps(paths: Sequence[Path], size: int) -> torch.Tensor:
    """(N, 3, size, size) float32 in [0, 1]: each minimap as 8-bit sRGB (any image libvips
    reads, as ``as_srgb`` maps it), resized (bilinear) if needed.

    A minimap that is no image libvips reads is an error naming it and why.
    """
    # checked one after another: the check clears libvips's error buffer, shared by threads
    for path in paths:
        check = check_file(path)
        if not check.is_image:
            raise ValueError(f"the minimap {path} cannot be read: {check.reason}")

    def one(path: Path) -> np.ndarray:
        image = as_srgb(open_image(path))
        # a region fetch decodes in this thread, not on a libvips thread pool of its own:
        # the minimaps are small and this pool already keeps the cores busy
        pixels = pyvips.Region.new(image).fetch(0, 0, image.width, image.height)
        rgb = np.frombuffer(pixels, np.uint8).reshape(image.height, image.width, 3)
        if rgb.shape[:2] != (size, size):
            # PIL's bilinear resize, as before libvips decoded the minimaps: the same proxies
            rgb = np.asarray(Image.fromarray(rgb).resize((size, size), Image.Resampling.BILINEAR))
        return rgb

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        arrays = list(pool.map(one, paths))
    return to_float(np.stack(arrays))


def balancing_weights(counts: torch.Tensor) -> torch.Tensor:
    """(N,) sampling weights 1 / (frames with that count): every count is drawn equally often."""
    frequency = torch.bincount(counts)
    return 1.0 / frequency[counts].double()


def convert_frame(frame: Path, pyramid: Path) -> None:
    """Write ``frame`` as an 8-bit sRGB pyramid TIFF (JPEG tiles at quality 95), atomically."""
    write_srgb_pyramid(frame, pyramid, quality=95)


class StarCraftDataset(PyramidDataset):
    """One split: the frames' pyramids, their minimaps as proxies (float32 (3, P, P) in
    [0, 1]) and their marine counts as targets; ``unit_counts`` keeps every *_count column."""

    def __init__(self, frames: Sequence[Frame], pyramids: Sequence[Path], proxy_size: int) -> None:
        super().__init__(
            [PyramidTIFF(path) for path in pyramids],
            read_minimaps([f.minimap for f in frames], proxy_size),
            torch.tensor([f.count for f in frames], dtype=torch.long),
        )
        names = frames[0].unit_counts if frames else {}
        self.unit_counts = {
            name: torch.tensor([f.unit_counts[name] for f in frames]) for name in names
        }


class StarCraftDataModule(SplitDataModule):
    """Frames of ``root`` (see the module docstring): marines counted from glimpses chosen on
    the minimap. ``balance_train``: draw training frames so that every count is equally
    likely (a ``WeightedRandomSampler``, as many draws per epoch as training frames)."""

    proxy_from_image = False  # the minimap
    fixed_channels = (3, 3)  # frames and minimaps, both read as sRGB

    def __init__(
        self,
        root: str,
        pyramid_dir: str,
        max_count: int = MAX_COUNT,
        proxy_size: int = 64,
        val: float = 0.1,
        test: float = 0.2,
        balance_train: bool = True,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
        workers: int | None = None,
        image_channels: int = 3,
        proxy_channels: int = 3,
    ) -> None:
        super().__init__(image_channels, proxy_channels, batch_size, num_workers, seed)
        check_at_least(max_count=(max_count, 0), proxy_size=(proxy_size, 1))
        root, pyramid_dir = str(Path(root).expanduser()), str(Path(pyramid_dir).expanduser())
        self.save_hyperparameters(logger=False)  # the loggers get the composed config instead
        self.frames = read_frames(Path(root), max_count, val, test)
        self.num_classes = max_count + 1

    @property
    def cache_dir(self) -> Path:
        """``pyramid_dir/<hash of the folder's absolute path>``: this folder's frame pyramids."""
        key = hashlib.sha256(str(Path(self.hparams.root).resolve()).encode()).hexdigest()[:12]
        return Path(self.hparams.pyramid_dir) / key

    def pyramid_path(self, frame: Frame) -> Path:
        relative = frame.frame.relative_to(self.hparams.root).with_suffix(".tif")
        return self.cache_dir / relative

    def prepare_data(self) -> None:
        """Convert the frames that have no up-to-date pyramid yet (in parallel)."""
        jobs = [
            (f.frame, self.pyramid_path(f))
            for f in self.frames
            if not _up_to_date(self.pyramid_path(f), f.frame)
        ]
        if not jobs:
            return
        log.info(
            "StarCraft: converting %d frames to pyramid TIFFs in %s", len(jobs), self.cache_dir
        )
        failures = convert_all(jobs, convert_frame, self.hparams.workers, unit="frame")
        if failures:
            log.warning("StarCraft: %d frame(s) could not be read and are left out", len(failures))

    def load_split(self, split: str) -> StarCraftDataset:
        frames = [f for f in self.frames if f.split == split]
        converted = [f for f in frames if self.pyramid_path(f).is_file()]
        if len(converted) < len(frames):
            log.warning(
                "StarCraft %s: %d frame(s) have no pyramid (unreadable) and are left out",
                split, len(frames) - len(converted),
            )  # fmt: skip
        if not converted:
            raise ValueError(
                f"{Path(self.hparams.root) / CSV_NAME} has no usable {split} frames: record or "
                f"generate more, or change data.val / data.test"
            )
        pyramids = [self.pyramid_path(f) for f in converted]
        return StarCraftDataset(converted, pyramids, self.hparams.proxy_size)

    def train_sampler(self) -> Sampler | None:
        if not self.hparams.balance_train:
            return None
        targets = self.datasets["train"].targets
        return WeightedRandomSampler(
            balancing_weights(targets),
            num_samples=len(targets),
            replacement=True,
            generator=torch.Generator().manual_seed(self.seed),
        )


def _up_to_date(pyramid: Path, frame: Path) -> bool:
    """Whether ``pyramid`` exists and is not older than ``frame``."""
    try:
        return pyramid.stat().st_mtime_ns >= frame.stat().st_mtime_ns
    except FileNotFoundError:
        return False
