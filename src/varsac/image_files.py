"""Which files are images libvips can read, and why not.

libvips tells a file's format by its content, not by its name: each loader
sniffs the first bytes (``vips_foreign_find_load``), so the formats read are
those of the installed libvips (JPEG, PNG, TIFF, WebP, HEIF/AVIF, GIF, SVG…),
whatever the files are called. A file is sorted into one of three kinds:

- an image: a loader of pictures recognises it. It may still fail to decode
  (a truncated JPEG); only reading it tells.
- failed: no loader recognises it, but its suffix is an image format's (an
  empty ``x.jpg``, a text file named ``x.jpg``): a broken or mislabelled image.
- skipped: no loader of pictures recognises it and its name does not claim
  one (``notes.txt``, ``notes.csv``, a format this libvips lacks).

The libvips calls here leave their messages in libvips's error buffer, which
all threads share and which this module clears: call it from one thread while
no other thread is reading images.
"""

import functools
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pyvips

# Loaders that libvips has but that read numbers, not pictures: csvload takes any *.csv,
# matrixload any text that starts with two integers (a notes.txt of numbers), rawload bytes
# without a header whose size must be given by hand (find_load never answers it).
NOT_PICTURE_LOADERS = frozenset({"csvload", "matrixload", "rawload"})

FileKind = Literal["image", "failed", "skipped"]


@dataclass(frozen=True)
class FileCheck:
    """What libvips makes of one file: its kind and, when it is not an image, why."""

    kind: FileKind
    reason: str = ""  # "" for an image

    @property
    def is_image(self) -> bool:
        return self.kind == "image"


@dataclass
class SortedFiles:
    """Files sorted by ``check_file``: the images in the order given, the others with reasons."""

    images: list[Path] = field(default_factory=list)
    failed: dict[Path, str] = field(default_factory=dict)
    skipped: dict[Path, str] = field(default_factory=dict)


@functools.cache
def picture_loaders() -> frozenset[str]:
    """The nicknames of this libvips's file loaders of pictures, e.g. {'jpegload', 'webpload'}."""
    nicknames = set()

    def visit(gtype: int, _a: object, _b: object) -> object:
        nickname = pyvips.nickname_find(gtype)
        # the file loaders (jpegload), not their abstract bases (jpegload_base) nor the
        # loaders of buffers and sources (jpegload_buffer, jpegload_source)
        if nickname.endswith("load") and nickname not in NOT_PICTURE_LOADERS:
            nicknames.add(nickname)
        pyvips.type_map(gtype, visit)  # type_map visits direct subclasses only
        return pyvips.ffi.NULL  # a NULL return lets type_map go on to the next class

    pyvips.type_map(pyvips.type_from_name("VipsForeignLoad"), visit)
    return frozenset(nicknames)


def readable_formats() -> str:
    """The formats this libvips reads, for messages: 'GIF, HEIF, JPEG, PNG, SVG, TIFF, …'."""
    return ", ".join(sorted(name.removesuffix("load").upper() for name in picture_loaders()))


def named_format(path: Path) -> str | None:
    """The picture format that ``path``'s suffix names to libvips ('JPEG' for x.jpg), or None.

    libvips keeps no list of the suffixes its loaders would take, since they go by content.
    Two things it does know name formats: the saver it picks for a file name (x.jpg:
    jpegsave, x.avif: heifsave), and its loaders' names (svgload for x.svg, which no saver
    writes). A suffix is a picture format's when either leads to a picture loader.
    """
    saver = _operation(pyvips.vips_lib.vips_foreign_find_save(os.fsencode(path.name)))
    suffix = path.suffix.lower().removeprefix(".")
    for name in (saver.removesuffix("save") if saver else None, suffix):
        if name and f"{name}load" in picture_loaders():
            return name.upper()
    return None


def check_file(path: Path) -> FileCheck:
    """Whether ``path`` is an image libvips recognises; if not, whether it failed or is skipped."""
    loader = _operation(pyvips.vips_lib.vips_foreign_find_load(os.fsencode(path)))
    if loader in picture_loaders():
        return FileCheck("image")
    if loader is not None:
        return FileCheck(
            "skipped", f"libvips reads it as a table of numbers ({loader}), not a picture"
        )
    claimed = named_format(path)
    try:
        with path.open("rb") as handle:
            empty = not handle.read(1)
    except OSError as error:
        reason = f"cannot be read: {error.strerror or error}"
    else:
        if empty:
            reason = "empty file (0 bytes)"
        elif claimed:
            reason = f"not {claimed} data: libvips recognises no image in it"
        else:
            reason = f"no libvips loader recognises it (libvips here reads {readable_formats()})"
    return FileCheck("failed" if claimed else "skipped", reason)


def sort_files(paths: Iterable[Path]) -> SortedFiles:
    """``paths`` sorted into images, failed and skipped files by ``check_file``."""
    found = SortedFiles()
    for path in paths:
        check = check_file(path)
        if check.is_image:
            found.images.append(path)
        else:
            (found.failed if check.kind == "failed" else found.skipped)[path] = check.reason
    return found


def _operation(type_name: object) -> str | None:
    """The nickname of the libvips operation a find_load/find_save call named, or None (NULL).

    pyvips 3.2 wraps neither call (it has no ``Image.find_load``), so they go through its cffi
    library, ``pyvips.vips_lib``. They answer with a class name (VipsForeignLoadJpegFile),
    not a nickname. They leave messages in the error buffer when they find nothing, and at
    times when they do (a loader sniffing a truncated JPEG complains): cleared, so that none
    ends up in the next error reported.
    """
    pyvips.vips_lib.vips_error_clear()
    if type_name == pyvips.ffi.NULL:
        return None
    return pyvips.nickname_find(pyvips.type_from_name(pyvips.ffi.string(type_name).decode()))
