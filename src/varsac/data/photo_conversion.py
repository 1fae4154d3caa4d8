"""Convert a folder of large photos (MIT-Adobe FiveK or your own) into pyramid TIFFs, once.

Input: class folders ``SRC/<class>/…/<photo>`` or a CSV of ``path,label``
(paths relative to the CSV's folder, or absolute). JPEG, PNG and TIFF are read.

Each photo becomes ``DST/images/<its path under SRC>.tif``, a ``size``² pyramid
TIFF of 8-bit sRGB:

- colour: a photo with an embedded ICC profile (FiveK's expert photos are
  usually exported as 16-bit ProPhoto RGB TIFFs) is transformed to sRGB
  through it, relative colorimetric; one without a profile is taken as sRGB
  (greyscale is copied into three channels), and its 16-bit samples keep their
  high byte, v ↦ ⌊v / 256⌋, a linear map without a tone curve. Transparency is
  flattened onto black.
- geometry, for photos that are not square (``fit``): ``resize`` stretches to
  size² (the whole photo, aspect changed; the paper only says it downsampled
  to 2528²); ``crop`` scales
  the shorter side to size and keeps the centre; ``pad`` scales the longer side
  to size and pads the rest with black. The camera's orientation tag is applied.

Then ``DST/index.csv`` (``photo_index``) lists every converted photo with a
split drawn per class (stratified) from ``seed``. Every file is written
atomically; a rerun converts only the photos not converted yet; a photo that
cannot be read is reported by path and skipped.
"""

import csv
import functools
import logging
import os
import time
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyvips

from varsac.data import SPLITS, check_split_fractions
from varsac.data.photo_index import IndexRow, write_index
from varsac.data.pyramid_conversion import as_srgb, convert_all
from varsac.errors import ConfigError
from varsac.files import remove_partial_files, settings_changed
from varsac.pyramid import COMPRESSIONS, open_image, write_pyramid

log = logging.getLogger(__name__)

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
FITS = ("resize", "crop", "pad")
IMAGES_DIR = "images"
PARAMS_NAME = "conversion.json"
# Bump when a conversion would write different pixels for the same settings.
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Photo:
    """A photo to convert: where it is, its class, and its pyramid's path under DST."""

    source: Path
    label: str
    target: str  # relative to DST, e.g. images/animals/a0001.tif


@dataclass
class Conversion:
    """What a conversion did: what it converted, found done, could not read or ignored."""

    rows: list[IndexRow]  # every photo converted (now or before), as written to the index
    converted: int
    already_done: int
    failures: list[tuple[Path, str]]  # (photo, reason)
    ignored: list[Path] = field(default_factory=list)  # files that are not JPEG, PNG or TIFF
    seconds: float = 0.0


# ---------------------------------------------------------------------- finding the photos


def find_photos(src: Path) -> tuple[list[Photo], list[Path]]:
    """The photos of ``src`` (class folders or a CSV), sorted by target; and the files ignored.

    Two photos that would land on the same target are an error naming both.
    """
    if not src.exists():
        raise FileNotFoundError(
            f"src={src} does not exist: give a folder of class folders or a CSV"
        )
    photos, ignored = _photos_in_csv(src) if src.is_file() else _photos_in_folders(src)
    if not photos:
        raise ConfigError(
            f"no photos found in {src}: expected class folders SRC/<class>/<photo> of "
            f"{', '.join(PHOTO_SUFFIXES)}, or a CSV with columns path,label"
        )
    by_target: dict[str, Photo] = {}
    for photo in photos:
        other = by_target.setdefault(photo.target, photo)
        if other is not photo:
            raise ConfigError(
                f"{other.source} and {photo.source} would both be converted to {photo.target}: "
                "rename one of them (or list each photo once)"
            )
    return sorted(photos, key=lambda p: p.target), ignored


def _is_photo(path: Path) -> bool:
    return path.suffix.lower() in PHOTO_SUFFIXES


def _target(relative: Path) -> str:
    return (Path(IMAGES_DIR) / relative.with_suffix(".tif")).as_posix()


def _photos_in_folders(src: Path) -> tuple[list[Photo], list[Path]]:
    photos, ignored = [], []
    for folder in sorted(p for p in src.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            if path.name.startswith("."):
                continue
            if _is_photo(path):
                photos.append(Photo(path, folder.name, _target(path.relative_to(src))))
            else:
                ignored.append(path)
    ignored += sorted(p for p in src.iterdir() if p.is_file() and not p.name.startswith("."))
    return photos, ignored


def _photos_in_csv(src: Path) -> tuple[list[Photo], list[Path]]:
    with src.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if not {"path", "label"} <= set(reader.fieldnames or []):
            raise ConfigError(
                f"{src} must have the columns path,label (it has {reader.fieldnames})"
            )
        rows = list(reader)
    photos = []
    for line, row in enumerate(rows, start=2):
        path, label = (row["path"] or "").strip(), (row["label"] or "").strip()
        if not path or not label:
            raise ConfigError(f"{src} line {line}: both path and label are needed")
        source = Path(path).expanduser()
        source = source if source.is_absolute() else src.parent / source
        try:
            relative = source.resolve().relative_to(src.parent.resolve())
        except ValueError:  # outside the CSV's folder: named after the file and its folder
            digest = zlib.crc32(str(source.resolve()).encode())
            relative = Path("external") / f"{source.stem}-{digest:08x}{source.suffix}"
        photos.append(Photo(source, label, _target(relative)))
    return photos, []


# ---------------------------------------------------------------------- the split


def stratified_split(labels: Sequence[str], val: float, test: float, seed: int) -> list[str]:
    """A split name per label: in each class, a seeded shuffle gives ``round(n·test)`` photos
    to test, ``round(n·val)`` to val and the rest to train.

    A class's draw depends only on the seed, its name and its photos in order,
    so adding a class leaves the split of the others as it was.
    """
    check_split_fractions(val, test)
    splits = [""] * len(labels)
    for label in sorted(set(labels)):
        members = [i for i, other in enumerate(labels) if other == label]
        rng = np.random.default_rng([seed, zlib.crc32(label.encode())])
        order = rng.permutation(members)
        n_test, n_val = round(len(members) * test), round(len(members) * val)
        for rank, index in enumerate(order):
            splits[index] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    return splits


# ---------------------------------------------------------------------- one photo


def fit_square(image: pyvips.Image, size: int, fit: str) -> pyvips.Image:
    """``image`` as size² by ``fit``: resize (stretch), crop (centre) or pad (black)."""
    width, height = image.width, image.height
    if fit == "resize":
        return image.resize(size / width, vscale=size / height)
    if fit == "crop":
        scaled = image.resize(size / min(width, height))
        left, top = (scaled.width - size) // 2, (scaled.height - size) // 2
        return scaled.crop(max(left, 0), max(top, 0), size, size)
    scaled = image.resize(size / max(width, height))
    return scaled.gravity("centre", size, size, extend="black")


def convert_photo(
    source: Path, target: Path, *, size: int, fit: str, compression: str, quality: int
) -> None:
    """Write ``source`` as a size² sRGB pyramid TIFF at ``target``, atomically."""
    image = fit_square(as_srgb(open_image(source)), size, fit)
    write_pyramid(image, target, compression=compression, quality=quality)


# ---------------------------------------------------------------------- the whole set


def convert_photos(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    size: int = 2528,
    fit: str = "resize",
    val: float = 0.1,
    test: float = 0.2,
    seed: int = 0,
    workers: int | None = None,
    compression: str = "jpeg",
    quality: int = 90,
) -> Conversion:
    """Convert every photo of ``src`` not yet in ``dst``; write ``dst/index.csv``.

    ``workers`` threads convert at once (None: one per core).
    """
    src, dst = Path(src).expanduser(), Path(dst).expanduser()
    if fit not in FITS:
        raise ConfigError(f"fit must be one of {FITS}, got {fit!r}")
    if size < 16:
        raise ConfigError(f"size must be at least 16 pixels, got {size}")
    if compression not in COMPRESSIONS:
        raise ConfigError(f"compression must be one of {COMPRESSIONS}, got {compression!r}")
    photos, ignored = find_photos(src)
    splits = stratified_split([p.label for p in photos], val, test, seed)
    dst.mkdir(parents=True, exist_ok=True)
    settings = {"format_version": FORMAT_VERSION, "size": size, "fit": fit}
    changed = settings_changed(dst / PARAMS_NAME, settings)
    if changed:
        raise ConfigError(
            f"{dst} holds photos converted with other settings ({changed}): convert into "
            f"another dst, or delete {dst / IMAGES_DIR} to start over"
        )
    removed = remove_partial_files(dst / IMAGES_DIR)
    if removed:
        log.info("removed %d partial file(s) left by an interrupted conversion", removed)

    todo = [p for p in photos if not (dst / p.target).is_file()]
    already_done = len(photos) - len(todo)
    log.info(
        "%d photos in %s: %d to convert to %d² pyramid TIFFs in %s, %d converted before",
        len(photos), src, len(todo), size, dst, already_done,
    )  # fmt: skip
    start = time.perf_counter()
    convert = functools.partial(
        convert_photo, size=size, fit=fit, compression=compression, quality=quality
    )
    failures = convert_all([(p.source, dst / p.target) for p in todo], convert, workers, "photo")
    seconds = time.perf_counter() - start

    rows = [
        IndexRow(photo.target, photo.label, split, str(photo.source))
        for photo, split in zip(photos, splits, strict=True)
        if photo.source not in failures
    ]
    write_index(dst, rows)
    return Conversion(
        rows=rows,
        converted=len(todo) - len(failures),
        already_done=already_done,
        failures=sorted(failures.items()),
        ignored=ignored,
        seconds=seconds,
    )


def summary(conversion: Conversion, dst: Path) -> str:
    """Counts per class and split, what was converted, and what failed, as text."""
    counts = Counter((row.label, row.split) for row in conversion.rows)
    classes = sorted({row.label for row in conversion.rows})
    table = {name: [counts[name, split] for split in SPLITS] for name in classes}
    table["total"] = [sum(column) for column in zip(*table.values(), strict=True)] or [0] * 3
    width = max(len(name) for name in table)
    lines = [f"  {'class':<{width}}" + "".join(f"{s:>8}" for s in (*SPLITS, "total"))]
    for name, row in table.items():
        lines.append(f"  {name:<{width}}" + "".join(f"{n:>8}" for n in (*row, sum(row))))
    rate = conversion.converted / conversion.seconds if conversion.seconds else 0.0
    lines.append(
        f"converted {conversion.converted} photo(s) in {conversion.seconds:.1f} s "
        f"({rate:.2f} per second), {conversion.already_done} converted before, "
        f"{len(conversion.failures)} failed; index: {dst / 'index.csv'}"
    )
    if conversion.ignored:
        shown = ", ".join(str(p) for p in conversion.ignored[:5])
        more = f" and {len(conversion.ignored) - 5} more" if len(conversion.ignored) > 5 else ""
        lines.append(
            f"ignored {len(conversion.ignored)} file(s) that are not photos: {shown}{more}"
        )
    lines += [f"failed: {path}: {reason}" for path, reason in conversion.failures]
    return "\n".join(lines)
