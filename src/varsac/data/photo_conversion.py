"""Convert a folder of large photos (MIT-Adobe FiveK or your own) into pyramid TIFFs, once.

Input: class folders ``SRC/<class>/…/<photo>`` or a CSV of ``path,label``
(paths relative to the CSV's folder, or absolute) and optionally ``split``
(``train``, ``val`` or ``test``, in lower case; empty: drawn). Photos are the
files libvips recognises as images by their content (``varsac.image_files``):
JPEG, PNG, TIFF, WebP, HEIF/AVIF, GIF, SVG…, whatever the installed libvips reads.

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

Then ``DST/index.csv`` (``photo_index``) lists every converted photo with its
split: the one the CSV's ``split`` column gives it (a benchmark's own split),
else one drawn per class from ``seed`` (``labelled_files``). A set that would
leave a split empty is refused before anything converts. Every file is written
atomically; a rerun converts only the photos not converted yet.

A file that is not converted is listed with the reason in the summary and in
``DST/not_converted.csv`` (``path,outcome,reason``): ``failed``, a photo that
cannot be decoded (truncated) or a file named like an image that holds none
(an empty ``x.jpg``; any file a CSV lists that is no image), and the command
exits 1; or ``skipped``, a file that is no image (``notes.txt``) or lies outside
the class folders, which alone does not fail the command.
"""

import functools
import logging
import os
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from varsac.data.labelled_files import (
    SplitOrigin,
    assign_splits,
    check_every_split_has_files,
    read_labels_csv,
)
from varsac.data.photo_index import IndexRow, class_table, write_index
from varsac.data.pyramid_conversion import convert_all, write_srgb_pyramid
from varsac.errors import ConfigError, check_at_least
from varsac.files import remove_partial_files, settings_changed, write_csv_atomically
from varsac.image_files import readable_formats, sort_files
from varsac.pyramid import COMPRESSIONS

log = logging.getLogger(__name__)

FITS = ("resize", "crop", "pad")
IMAGES_DIR = "images"
PARAMS_NAME = "conversion.json"
NOT_CONVERTED_NAME = "not_converted.csv"
OUTSIDE_CLASS_FOLDERS = "not in a class folder SRC/<class>/"
# Bump when a conversion would write different pixels for the same settings.
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Photo:
    """A photo to convert: where it is, its class, and its pyramid's path under DST."""

    source: Path
    label: str
    target: str  # relative to DST, e.g. images/animals/a0001.tif
    split: str | None = None  # from the CSV's split column; None: to be drawn


@dataclass
class Conversion:
    """What a conversion did: what it converted, found done, failed or skipped."""

    rows: list[IndexRow]  # every photo converted (now or before), as written to the index
    converted: int
    already_done: int
    split_origin: SplitOrigin
    failures: list[tuple[Path, str]]  # (photo, reason): no image in it, or not converted
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (file, reason): no photo
    seconds: float = 0.0


# ---------------------------------------------------------------------- finding the photos


def find_photos(src: Path) -> tuple[list[Photo], dict[Path, str], dict[Path, str]]:
    """The photos of ``src`` (class folders or a CSV), sorted by target; and the files that
    failed and that were skipped, {path: reason} (``varsac.image_files``).

    A file that a CSV lists and that is no image failed: the CSV says it is a photo. Two
    photos that would land on the same target are an error naming both.
    """
    if not src.exists():
        raise FileNotFoundError(
            f"src={src} does not exist: give a folder of class folders or a CSV"
        )
    listed = src.is_file()
    candidates, outside = _photos_in_csv(src) if listed else _photos_in_folders(src)
    found = sort_files(photo.source for photo in candidates)
    images = set(found.images)
    photos = [photo for photo in candidates if photo.source in images]
    skipped = dict.fromkeys(outside, OUTSIDE_CLASS_FOLDERS)
    if listed:  # the CSV says that every file it lists is a photo: one that is not failed
        failed = found.failed | found.skipped
    else:
        failed, skipped = found.failed, skipped | found.skipped
    if not photos:
        raise ConfigError(
            f"no photos found in {src}: expected class folders SRC/<class>/<photo> of images "
            f"libvips reads ({readable_formats()}), or a CSV with columns path,label"
        )
    by_target: dict[str, Photo] = {}
    for photo in photos:
        other = by_target.setdefault(photo.target, photo)
        if other is not photo:
            raise ConfigError(
                f"{other.source} and {photo.source} would both be converted to {photo.target}: "
                "rename one of them (or list each photo once)"
            )
    photos.sort(key=lambda p: p.target)
    return photos, dict(sorted(failed.items())), dict(sorted(skipped.items()))


def _target(relative: Path) -> str:
    return (Path(IMAGES_DIR) / relative.with_suffix(".tif")).as_posix()


def _photos_in_folders(src: Path) -> tuple[list[Photo], list[Path]]:
    """Every file under SRC/<class>/ as a photo of that class (whether it is an image is
    checked later), and the files of SRC itself, outside any class; hidden files left out."""
    photos = []
    for folder in sorted(p for p in src.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            if not path.name.startswith("."):
                photos.append(Photo(path, folder.name, _target(path.relative_to(src))))
    outside = sorted(p for p in src.iterdir() if p.is_file() and not p.name.startswith("."))
    return photos, outside


def _photos_in_csv(src: Path) -> tuple[list[Photo], list[Path]]:
    photos = []
    for listed in read_labels_csv(src):
        try:
            relative = listed.source.resolve().relative_to(src.parent.resolve())
        except ValueError:  # outside the CSV's folder: named after the file and its folder
            digest = zlib.crc32(str(listed.source.resolve()).encode())
            name = f"{listed.source.stem}-{digest:08x}{listed.source.suffix}"
            relative = Path("external") / name
        photos.append(Photo(listed.source, listed.label, _target(relative), listed.split))
    return photos, []


# ---------------------------------------------------------------------- one photo


def convert_photo(
    source: Path, target: Path, *, size: int, fit: str, compression: str, quality: int
) -> None:
    """Write ``source`` as a size² sRGB pyramid TIFF at ``target``, atomically."""
    write_srgb_pyramid(source, target, size=size, fit=fit, compression=compression, quality=quality)


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
    check_at_least(size=(size, 16))
    if compression not in COMPRESSIONS:
        raise ConfigError(f"compression must be one of {COMPRESSIONS}, got {compression!r}")
    photos, unreadable, skipped = find_photos(src)
    splits = assign_splits(photos, val, test, seed)
    check_every_split_has_files(src, photos, splits, val, test, noun="photo")
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

    kept = [
        (photo, split)
        for photo, split in zip(photos, splits, strict=True)
        if photo.source not in failures
    ]
    rows = [IndexRow(photo.target, photo.label, split, str(photo.source)) for photo, split in kept]
    write_index(dst, rows)
    write_not_converted(dst, unreadable | failures, skipped)
    split_origin = SplitOrigin.of([photo for photo, _ in kept], val, test, seed)
    return Conversion(
        rows=rows,
        converted=len(todo) - len(failures),
        already_done=already_done,
        split_origin=split_origin,
        failures=sorted((unreadable | failures).items()),
        skipped=sorted(skipped.items()),
        seconds=seconds,
    )


def summary(conversion: Conversion, dst: Path) -> str:
    """Counts per class and split, where the split came from, what was converted, and what
    failed or was skipped and why, as text."""
    lines = [*class_table(conversion.rows), conversion.split_origin.line()]
    rate = conversion.converted / conversion.seconds if conversion.seconds else 0.0
    lines.append(
        f"converted {conversion.converted} photo(s) in {conversion.seconds:.1f} s "
        f"({rate:.2f} per second), {conversion.already_done} converted before, "
        f"{len(conversion.failures)} failed, {len(conversion.skipped)} skipped; "
        f"index: {dst / 'index.csv'}"
    )
    lines += [f"failed: {path}: {reason}" for path, reason in conversion.failures]
    lines += [f"skipped: {path}: {reason}" for path, reason in conversion.skipped[:20]]
    if len(conversion.skipped) > 20:
        lines.append(f"… and {len(conversion.skipped) - 20} more skipped")
    if conversion.failures or conversion.skipped:
        lines.append(f"files not converted, and why: {dst / NOT_CONVERTED_NAME}")
    return "\n".join(lines)


def write_not_converted(dst: Path, failures: dict[Path, str], skipped: dict[Path, str]) -> None:
    """``dst/not_converted.csv``, atomically: ``path,outcome,reason`` for every file of SRC
    not converted, the failed (sorted) then the skipped; only the header when there are none,
    so that no list from an earlier run stays behind."""
    rows = [(str(path), "failed", reason) for path, reason in sorted(failures.items())]
    rows += [(str(path), "skipped", reason) for path, reason in sorted(skipped.items())]
    write_csv_atomically(dst / NOT_CONVERTED_NAME, ("path", "outcome", "reason"), rows)
