"""Index whole-slide images where they lie: ``varsac data slides src=LABELS.csv [dst=DIR]``.

``LABELS.csv`` lists the slides (``labelled_files``: ``path,label`` and an
optional ``split``, paths relative to the CSV or absolute). Each is opened as
``open_image_source`` opens it (through OpenSlide, or as a pyramid TIFF), its
coarsest level and the last tile of its finest read (a truncated or damaged
file fails there), and listed in ``DST/index.csv`` with what its headers say.
No pixels are copied: the index points at the slides. Splits the CSV does not
give are drawn per class from ``seed`` among all the listed slides, before any
is opened, so that a slide that fails to open leaves the others' splits as
they are.

The index is ``photo_index``'s ``index.csv``, its four columns (``path``,
relative to DST when the slide lies under it, else absolute; ``label``;
``split``; ``source``, the path as the CSV gives it) followed by ``vendor``,
``levels`` (``W×H`` per level, full resolution first) and ``mpp_x``, ``mpp_y``
(microns per level-0 pixel, empty where the slide does not say). One format
for photos and slides means one reader and one datamodule
(``photos.PhotoDataModule``) for both; the extra columns are a record for the
reader of the file, and the datamodule asks the slides themselves.

Slides that cannot be read are listed with the reason (OpenSlide's) in the
summary and in ``DST/not_indexed.csv`` (``path,reason``), and the command
exits 1; the index holds the others.
"""

import logging
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from varsac.data.labelled_files import (
    ListedFile,
    SplitOrigin,
    assign_splits,
    check_every_split_has_files,
    read_labels_csv,
)
from varsac.data.photo_index import INDEX_NAME, IndexRow, class_table, write_index
from varsac.data.pyramid_conversion import CONVERSION_ERRORS
from varsac.errors import ConfigError, in_one_line
from varsac.files import write_csv_atomically
from varsac.slides import Slide, SlideSupportMissing, open_image_source, slide_vendor

log = logging.getLogger(__name__)

NOT_INDEXED_NAME = "not_indexed.csv"
CHECK_SIDE = 64  # the side of the last tile of level 0 read to check a slide


@dataclass(frozen=True)
class SlideRow(IndexRow):
    """One indexed slide: the photo index's columns, then what its headers say."""

    vendor: str  # OpenSlide's name of the format ('aperio', 'generic-tiff'…)
    levels: str  # "1600×1200 800×600 …", full resolution first
    mpp_x: str  # microns per level-0 pixel, "" where the slide does not say
    mpp_y: str


@dataclass
class SlideIndexing:
    """What ``index_slides`` did: the slides indexed and those that could not be read."""

    rows: list[SlideRow]
    failures: list[tuple[Path, str]]  # (slide, why it cannot be read)
    split_origin: SplitOrigin
    seconds: float


def described(listed: ListedFile, split: str, dst: Path) -> SlideRow:
    """``listed``'s row, from its headers, once its pixels were read to check it."""
    source = open_image_source(listed.source)
    width, height = source.levels[0]
    source.read_proxy(1)  # the coarsest level
    side = min(width, height, CHECK_SIDE)
    source.read_region(0, width - side, height - side, side, side)  # written last of level 0
    mpp = source.mpp if isinstance(source, Slide) else None
    vendor = source.vendor if isinstance(source, Slide) else slide_vendor(listed.source)
    resolved = listed.source.resolve()
    path = resolved.relative_to(dst) if resolved.is_relative_to(dst) else resolved
    return SlideRow(
        path=path.as_posix(),
        label=listed.label,
        split=split,
        source=str(listed.source),
        vendor=vendor or "tiff",
        levels=" ".join(f"{w}×{h}" for w, h in source.levels),
        mpp_x="" if mpp is None else f"{mpp[0]:g}",
        mpp_y="" if mpp is None else f"{mpp[1]:g}",
    )


def index_slides(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    val: float = 0.1,
    test: float = 0.2,
    seed: int = 0,
    workers: int | None = None,
) -> SlideIndexing:
    """Open every slide ``src`` lists and write ``dst/index.csv`` and ``dst/not_indexed.csv``
    (see the module's docstring), on ``workers`` threads (None: one per core)."""
    src, dst = Path(src).expanduser(), Path(dst).expanduser().resolve()
    if not src.is_file():
        raise FileNotFoundError(
            f"src={src} is not a file: give a CSV with columns path,label (and optionally split)"
        )
    listed = read_labels_csv(src)
    if not listed:
        raise ConfigError(f"{src} lists no slides")
    twice = [path for path, n in Counter(file.source for file in listed).items() if n > 1]
    if twice:
        raise ConfigError(f"{src} lists {twice[0]} more than once: list each slide once")
    splits = assign_splits(listed, val, test, seed)
    check_every_split_has_files(src, listed, splits, val, test, noun="slide")
    log.info("%d slides listed in %s: opening each", len(listed), src)
    start = time.perf_counter()

    def one(job: tuple[ListedFile, str]) -> SlideRow | str:
        try:
            return described(*job, dst)
        except SlideSupportMissing as error:
            raise ConfigError(str(error)) from None
        except CONVERSION_ERRORS as error:
            return in_one_line(error)

    with ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
        outcomes = list(
            tqdm(pool.map(one, zip(listed, splits, strict=True)), total=len(listed), unit="slide")
        )
    rows = [outcome for outcome in outcomes if isinstance(outcome, SlideRow)]
    failures = [
        (file.source, outcome)
        for file, outcome in zip(listed, outcomes, strict=True)
        if isinstance(outcome, str)
    ]
    for path, reason in failures:
        log.warning("cannot index %s: %s", path, reason)
    dst.mkdir(parents=True, exist_ok=True)
    write_index(dst, rows)
    write_csv_atomically(dst / NOT_INDEXED_NAME, ("path", "reason"), failures)
    kept = [f for f, outcome in zip(listed, outcomes, strict=True) if not isinstance(outcome, str)]
    return SlideIndexing(
        rows=rows,
        failures=failures,
        split_origin=SplitOrigin.of(kept, val, test, seed),
        seconds=time.perf_counter() - start,
    )


def summary(indexing: SlideIndexing, dst: str | os.PathLike[str]) -> str:
    """Slides per class and split, where the splits came from, and the failures, as text."""
    dst = Path(dst).expanduser()
    lines = [*class_table(indexing.rows), indexing.split_origin.line()]
    lines.append(
        f"indexed {len(indexing.rows)} slide(s) in {indexing.seconds:.1f} s, "
        f"{len(indexing.failures)} unreadable; index: {dst / INDEX_NAME}"
    )
    lines += [f"unreadable: {path}: {reason}" for path, reason in indexing.failures]
    if indexing.failures:
        lines.append(f"slides not indexed, and why: {dst / NOT_INDEXED_NAME}")
    return "\n".join(lines)
