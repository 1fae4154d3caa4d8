"""Huge images as tiled pyramid TIFFs: written by streaming, read region by region.

A pyramid TIFF holds the image at full resolution as page 0 and each coarser
level, half the previous one (rounded down), as the next page, down to the level
that fits in one tile: what libvips writes with ``tiffsave(tile=True,
pyramid=True)``. ``write_pyramid`` writes one without ever holding the image in
memory; ``PyramidTIFF`` reads rectangles of any level, decoding only the tiles
they touch.

``PyramidTIFF`` holds its path and, once read, the level sizes: plain data that
survives pickling and ``fork``. The pages themselves (pyvips images, which hold
a libtiff handle and a file descriptor) are opened per process, on first use,
and lent to one reader at a time from a pool of idle pages: a read takes an idle
page of its file and level, or opens a new one, and gives it back afterwards.
libvips releases the GIL while decoding but serialises the reads through one
page, so readers with pages of their own decode one file in parallel; thread
pools made afresh for each batch reuse the pages opened before them; and at
most ``MAX_IDLE_PAGES`` stay open per process however many images a dataset
has. A process that finds the pool made by another (a forked DataLoader
worker) starts its own: file descriptors shared with the parent would share its
file offset. Pixels are computed by region fetches in the reading thread, never
by libvips's worker threads (``write_to_memory``), which hang in a child forked
after the parent used them.
"""

import logging
import os
import threading
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyvips

from varsac.errors import in_one_line
from varsac.files import atomic_path
from varsac.lazy_headers import LazyHeaders

# libvips reports every resize and thread pool at INFO: keep its log for warnings and errors.
logging.getLogger("pyvips").setLevel(logging.WARNING)

ImageSource = np.ndarray | str | os.PathLike[str] | pyvips.Image
COMPRESSIONS = ("deflate", "jpeg", "lzw", "none")
BIGTIFF_THRESHOLD_BYTES = 2 * 2**30
MAX_IDLE_PAGES = 128  # per process; each page read from holds a file descriptor
CONVERT_ADVICE = (
    "convert it once with varsac.pyramid.write_pyramid(source, out_path) "
    "or `vips tiffsave in.tif out.tif --tile --pyramid`"
)


class PyramidError(ValueError):
    """A file that cannot be read as a pyramid TIFF."""


class NotAPyramidWarning(UserWarning):
    """A TIFF read at full resolution only: it holds no coarser levels."""


# ---------------------------------------------------------------------- writing


def needs_bigtiff(width: int, height: int, channels: int) -> bool:
    """Whether a pyramid of an 8-bit image this size needs BigTIFF's 64-bit offsets.

    Classic TIFF addresses 4 GiB. The pyramid adds a third to level 0
    (1 + 1/4 + 1/16 + …); past 2 GiB uncompressed BigTIFF is chosen, which
    leaves a factor of two for data that compresses badly and for tiling.
    """
    return width * height * channels * 4 / 3 > BIGTIFF_THRESHOLD_BYTES


def write_pyramid(
    source: ImageSource,
    path: str | os.PathLike[str],
    *,
    tile_size: int = 256,
    compression: str = "deflate",
    quality: int = 90,
    bigtiff: bool | None = None,
) -> Path:
    """Write ``source`` as a tiled pyramid TIFF at ``path``, atomically; return ``path``.

    ``source``: uint8 (H, W) or (H, W, C) array; an image file (JPEG, PNG, TIFF…,
    read sequentially, turned upright when its orientation tag says so; 16-bit
    files are scaled to 8 bits); or a pyvips image of 8 (or 16) bits per sample,
    possibly lazy and far larger than memory: libvips streams it through the
    writer tile row by tile row. ``compression``: one of ``COMPRESSIONS``
    (``quality`` is the JPEG quality, 1–100; JPEG stores 1 or 3 channels only).
    ``bigtiff``: None chooses by size (``needs_bigtiff``).

    The file is written under a temporary name in the same folder and renamed
    into place when complete (``varsac.files.atomic_path``); on failure it is
    removed and the error names ``path``.
    """
    path = Path(path)
    if compression not in COMPRESSIONS:
        raise ValueError(f"compression must be one of {COMPRESSIONS}, got {compression!r}")
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be in 1..100, got {quality}")
    if tile_size <= 0 or tile_size % 16:
        raise ValueError(f"tile_size must be a positive multiple of 16 (TIFF), got {tile_size}")
    image = _as_uchar_image(source)
    if compression == "jpeg" and image.bands not in (1, 3):
        raise ValueError(f"JPEG compression stores 1 or 3 channels, the image has {image.bands}")
    if bigtiff is None:
        bigtiff = needs_bigtiff(image.width, image.height, image.bands)
    with atomic_path(path) as partial:
        try:
            image.tiffsave(
                str(partial),
                tile=True,
                pyramid=True,
                tile_width=tile_size,
                tile_height=tile_size,
                compression=compression,
                Q=quality,
                bigtiff=bigtiff,
                keep="none",  # no orientation or colour profile that region reads would ignore
            )
        except pyvips.Error as error:
            raise OSError(
                f"could not write the pyramid TIFF {path}: {in_one_line(error)}"
            ) from error
    return path


def _as_uchar_image(source: ImageSource) -> pyvips.Image:
    """``source`` as a pyvips image of uchar samples, lazily where it can be."""
    if isinstance(source, np.ndarray):
        if source.dtype != np.uint8 or source.ndim not in (2, 3) or source.size == 0:
            raise ValueError(
                f"an array source must be uint8 (H, W) or (H, W, C), got {source.dtype} "
                f"{source.shape}"
            )
        return pyvips.Image.new_from_array(np.ascontiguousarray(source))
    if isinstance(source, str | os.PathLike):
        image = open_image(Path(source))
    elif isinstance(source, pyvips.Image):
        image = source
    else:
        raise TypeError(f"cannot write a pyramid from a {type(source).__name__}")
    if image.format == "ushort":
        return (image >> 8).cast("uchar")
    if image.format != "uchar":
        raise ValueError(
            f"pyramid TIFFs here hold 8-bit samples, the image's are {image.format}: "
            "convert it first (e.g. image.cast('uchar') for values already in 0..255)"
        )
    return image


def open_image(path: Path) -> pyvips.Image:
    """An image file, read sequentially (failing on truncated data), upright."""
    if not path.is_file():
        raise FileNotFoundError(f"no image file at {path}")
    try:
        image = pyvips.Image.new_from_file(str(path), access="sequential", fail_on="error")
        if image.get_typeof("orientation") and image.get("orientation") != 1:
            # turning needs random access: libvips decodes it once to memory or disc
            image = pyvips.Image.new_from_file(str(path), fail_on="error").autorot()
    except pyvips.Error as error:
        raise OSError(f"could not read the image {path}: {error}") from error
    return image


# ---------------------------------------------------------------------- reading


@dataclass(frozen=True)
class _Layout:
    """What a pyramid TIFF's headers say: its levels and channels, and which file it was."""

    levels: tuple[tuple[int, int], ...]  # (width, height), level 0 the full resolution
    channels: int
    file_id: tuple[int, int, int]  # (device, inode, modification time in ns)


class _IdlePages:
    """This process's open pages that no read is using, least recently used first.

    Keyed by (device, inode, mtime, level), so every ``PyramidTIFF`` of a file
    shares them; beyond ``capacity`` the least recently used are closed.
    """

    def __init__(self, capacity: int) -> None:
        self.pid = os.getpid()
        self.capacity = capacity
        self.lock = threading.Lock()
        self.pages: OrderedDict[tuple[int, ...], list[pyvips.Image]] = OrderedDict()
        self.count = 0

    def take(self, key: tuple[int, ...]) -> pyvips.Image | None:
        with self.lock:
            pages = self.pages.get(key)
            if not pages:
                return None
            self.count -= 1
            page = pages.pop()
            if not pages:
                del self.pages[key]
            return page

    def give(self, key: tuple[int, ...], page: pyvips.Image) -> None:
        with self.lock:
            self.pages.setdefault(key, []).append(page)
            self.pages.move_to_end(key)
            self.count += 1
            while self.count > self.capacity:
                oldest_key, oldest = next(iter(self.pages.items()))
                oldest.pop(0)
                self.count -= 1
                if not oldest:
                    del self.pages[oldest_key]


_idle_pages: _IdlePages | None = None


def _idle_pages_of_this_process() -> _IdlePages:
    """The pool of this process; a forked child replaces the one it inherited.

    Two threads may both replace it at once: one pool wins, and the pages given
    back to the other are merely closed.
    """
    global _idle_pages
    pool = _idle_pages
    if pool is None or pool.pid != os.getpid():
        pool = _idle_pages = _IdlePages(MAX_IDLE_PAGES)
    return pool


_warned_files: set[tuple[int, int, int]] = set()  # file ids warned about as not pyramids


class PyramidTIFF(LazyHeaders["_Layout"]):
    """One pyramid TIFF, opened lazily; safe to pickle, fork and read from many threads.

    ``levels``: (width, height) per level, level 0 the full resolution;
    ``channels``: samples per pixel. Reads return uint8 (height, width, channels)
    arrays. A TIFF of one page, or whose pages are not successive halvings, is
    read as its page 0 alone, with a ``NotAPyramidWarning`` (once per file and
    process, and not again in processes forked after it).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"no pyramid TIFF at {self.path}")

    def __repr__(self) -> str:
        return f"PyramidTIFF({str(self.path)!r})"

    @property
    def channels(self) -> int:
        """Samples per pixel (1 grey, 3 RGB…), the last axis of every read."""
        return self._read_layout().channels

    def read_region(self, level: int, left: int, top: int, width: int, height: int) -> np.ndarray:
        """uint8 (height, width, channels): the rectangle of ``level`` at (left, top).

        The rectangle must lie inside the level.
        """
        layout = self._read_layout()
        left, top, width, height = self._checked_region(level, left, top, width, height)
        with self._page(level) as page:
            pixels = pyvips.Region.new(page).fetch(left, top, width, height)
        return np.frombuffer(pixels, np.uint8).reshape(height, width, layout.channels)

    def read_proxy(self, size: int) -> np.ndarray:
        """uint8 (size, size, channels): the image resized to size² from ``proxy_level(size)``.

        Downsizing averages over each output pixel's area (libvips ``resize``:
        box shrink, then a Lanczos-3 kernel), so there is no aliasing.
        """
        if size <= 0:
            raise ValueError(f"proxy size must be positive, got {size}")
        level = self.proxy_level(size)
        width, height = self.levels[level]
        channels = self.channels
        with self._page(level) as page:
            resized = page.resize(size / width, vscale=size / height)
            pixels = pyvips.Region.new(resized).fetch(0, 0, size, size)
        return np.frombuffer(pixels, np.uint8).reshape(size, size, channels)

    # ------------------------------------------------------------------ internals

    def _layout_from_file(self) -> _Layout:
        stat = os.stat(self.path)
        file_id = (stat.st_dev, stat.st_ino, stat.st_mtime_ns)
        first = self._open_page(0)
        if first.format != "uchar":
            raise PyramidError(
                f"{self.path} holds {first.format} samples, not 8-bit ones: {CONVERT_ADVICE}"
            )
        levels = [(first.width, first.height)]
        pages = first.get("n-pages") if first.get_typeof("n-pages") else 1
        for page_number in range(1, pages):
            page = self._open_page(page_number)
            previous_width, previous_height = levels[-1]
            if (
                page.width != previous_width // 2
                or page.height != previous_height // 2
                or page.bands != first.bands
                or page.format != "uchar"
            ):
                levels = levels[:1]  # pages of something else than this image's levels
                break
            levels.append((page.width, page.height))
        if len(levels) == 1 and not _fits_one_tile(first) and file_id not in _warned_files:
            _warned_files.add(file_id)
            warnings.warn(
                f"{self.path} is not a pyramid TIFF (it has {pages} page(s) but no halving "
                f"levels): every read decodes its full resolution. To read it fast, "
                f"{CONVERT_ADVICE}",
                NotAPyramidWarning,
                stacklevel=4,
            )
        return _Layout(tuple(levels), first.bands, file_id)

    def _open_page(self, level: int) -> pyvips.Image:
        """A fresh random-access image of page ``level`` (never libvips's cached one).

        libtiff reports undecodable tiles as warnings: failing on warnings turns
        them into errors rather than black pixels.
        """
        try:
            return pyvips.Image.tiffload(
                str(self.path), page=level, access="random", fail_on="warning", revalidate=True
            )
        except pyvips.Error as error:
            raise PyramidError(
                f"{self.path} cannot be read as a TIFF ({in_one_line(error)}). If the file is "
                f"corrupt or truncated, write it again from its source image; if it is another "
                f"format, {CONVERT_ADVICE}"
            ) from error

    @contextmanager
    def _page(self, level: int) -> Iterator[pyvips.Image]:
        """An open page of ``level`` for this reader alone; given back unless the read fails."""
        pool = _idle_pages_of_this_process()
        key = (*self._read_layout().file_id, level)
        page = pool.take(key)
        if page is None:
            page = self._open_page(level)
        try:
            yield page
        except pyvips.Error as error:
            raise PyramidError(
                f"{self.path}: reading level {level} failed ({in_one_line(error)}). The file is "
                "corrupt or truncated: write it again from its source image"
            ) from error
        pool.give(key, page)


def _fits_one_tile(page: pyvips.Image) -> bool:
    """Whether a tiled page fits in one tile: a pyramid with nothing coarser to hold."""
    if not page.get_typeof("tile-width"):
        return False
    return page.width <= page.get("tile-width") and page.height <= page.get("tile-height")
