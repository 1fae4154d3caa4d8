"""Whole-slide images (Aperio SVS, Hamamatsu NDPI, MIRAX, Leica SCN, DICOM…) as image sources.

A ``Slide`` reads a scanner's file through OpenSlide (the optional extra
``pip install "varsac[slides]"``: openslide-python with the library of
openslide-bin), region by region at the levels the scanner wrote, which need
not be halvings of each other (SVS levels are often quarters, of sizes rounded
each its own way): the LST's level choice takes any sizes. Nothing is
converted or copied.

Pixels are RGB: OpenSlide's RGBA (transparent where the scanner wrote no tile)
flattened onto the slide's background, its ``openslide.background-color``
property, white when it has none. OpenSlide gives colours premultiplied by
their alpha, and openslide-python divides them by it again, so a pixel of
colour c and alpha a becomes (c·a + background·(255 − a)) / 255, rounded: the
premultiplied colour plus the background's share. ``Slide(path, channels=1)`` reads the same pixels
converted to grey as libvips converts sRGB (``colourspace("b-w")``), as
``varsac.data.pyramid_conversion.srgb_image`` does to colour images for grey
models.

Reads at level 0 are the file's pixels. OpenSlide places a read of a coarser
level in level-0 pixels: at a level whose downsample is not a whole number
(a 1203-pixel side above a 300-pixel one) the read is placed at the nearest
level-0 pixel, off by at most half of one, and OpenSlide resamples it by that
fraction of a level pixel.

Like ``PyramidTIFF``, a ``Slide`` holds only plain data, its path and, once
read, its layout (levels, resolution, vendor), so it survives pickling and
``fork``. OpenSlide handles are opened per process on first use and shared by
every thread and every ``Slide`` of the file (OpenSlide reads one handle from
many threads): at most ``MAX_OPEN_SLIDES`` stay open per process, the least
recently used let go beyond that (closed once no read holds them), and all
share one tile cache of ``CACHE_BYTES``. A process that finds the handles of
another (a forked DataLoader worker) opens its own and leaves the inherited
ones alone, never closing them: a thread of the parent may have been inside
one when it forked. A read that fails drops its handle (an OpenSlide handle
fails every call after its first error), so the next read opens the file again.
"""

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np
import pyvips

from varsac.errors import in_one_line
from varsac.image_source import MAX_PROXY_PIXELS, ImageSource, SquareView, resized_pixels
from varsac.lazy_headers import LazyHeaders
from varsac.pyramid import PyramidTIFF

if TYPE_CHECKING:
    import openslide

MAX_OPEN_SLIDES = 32  # OpenSlide handles per process; each holds file descriptors
CACHE_BYTES = 64 * 2**20  # OpenSlide's decoded tiles, shared by this process's handles
# Files named like a scanner's slide: without OpenSlide they get the missing-extra message
SLIDE_SUFFIXES = frozenset(
    {".bif", ".czi", ".dcm", ".mrxs", ".ndpi", ".scn", ".svs", ".svslide", ".vms", ".vmu"}
)
INSTALL_ADVICE = 'install the slides extra: pip install "varsac[slides]"'
RECOPY_ADVICE = "if it is truncated or damaged, copy it again from the scanner's output"


class SlideError(ValueError):
    """A file that cannot be read as a whole-slide image; the message names it and says why."""


class SlideSupportMissing(SlideError):
    """OpenSlide is not installed: the message says what to install."""


def _openslide(path: Path) -> ModuleType:
    """The ``openslide`` module, or a ``SlideSupportMissing`` naming ``path``."""
    try:
        import openslide
    except (ImportError, OSError) as error:  # OSError: the package without its library
        raise SlideSupportMissing(
            f"{path}: reading whole-slide images needs OpenSlide ({error}): {INSTALL_ADVICE}"
        ) from None
    return openslide


def slide_vendor(path: str | os.PathLike[str]) -> str | None:
    """The format OpenSlide names for ``path`` ('aperio', 'hamamatsu', 'generic-tiff'…), or
    None when it recognises none. It reads the headers only. Without OpenSlide, None, but for
    a file named like a slide (``SLIDE_SUFFIXES``), which raises ``SlideSupportMissing``."""
    path = Path(path)
    try:
        module = _openslide(path)
    except SlideSupportMissing:
        if path.suffix.lower() in SLIDE_SUFFIXES:
            raise
        return None
    try:
        return module.OpenSlide.detect_format(path)
    except module.OpenSlideError:
        return None


def reads_as_slide(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is read as a ``Slide``: OpenSlide recognises a scanner's format in it
    (any but its generic tiled TIFF, which ``PyramidTIFF`` reads), or it is named like a slide
    (``SLIDE_SUFFIXES``), so that it fails, if it does, with the reason of a slide."""
    vendor = slide_vendor(path)
    return vendor not in (None, "generic-tiff") or Path(path).suffix.lower() in SLIDE_SUFFIXES


def aperio_description(
    width: int, height: int, magnification: int, mpp: float, tile: int = 256,
    compression: str = "RAW",
) -> str:  # fmt: skip
    """An ImageDescription that OpenSlide reads as an Aperio SVS's, for a tiled pyramidal TIFF
    (of ``tile``² tiles, ``compression`` as Aperio names it: RAW, JPEG…): it must start with
    "Aperio"; the key = value pairs after the bars become aperio.* properties, MPP the
    microns per pixel (openslide.mpp-x and -y) and AppMag the objective power."""
    return (
        f"Aperio Image Library v10.0.0\n{width}x{height} [0,0 {width}x{height}] ({tile}x{tile}) "
        f"{compression}|AppMag = {magnification}|MPP = {mpp}"
    )


def open_image_source(path: str | os.PathLike[str], channels: int = 3) -> "Slide | PyramidTIFF":
    """``path`` as an image source: a ``Slide`` (read with ``channels``) when it reads as one
    (``reads_as_slide``), else a ``PyramidTIFF`` (its own channels). Both open lazily: this
    reads headers, no pixels."""
    return Slide(path, channels) if reads_as_slide(path) else PyramidTIFF(path)


def microns_per_pixel(source: ImageSource) -> float | None:
    """Microns per level-0 pixel of a slide (the mean of x and y), of one seen through a
    ``SquareView`` too; None for a source that does not say (a pyramid TIFF)."""
    if isinstance(source, SquareView):
        source = source.source
    if not isinstance(source, Slide) or source.mpp is None:
        return None
    return (source.mpp[0] + source.mpp[1]) / 2


def model_view(source: "Slide | PyramidTIFF") -> "Slide | PyramidTIFF | SquareView":
    """``source`` as a model reads a slide: itself when square, else its ``square_view``."""
    width, height = source.levels[0]
    return source if width == height else square_view(source)


def square_view(source: "Slide | PyramidTIFF") -> SquareView:
    """``source`` as slides are trained on and predicted: padded to a square with the
    slide's background, as its transparent pixels read (white for a pyramid TIFF)."""
    if isinstance(source, Slide):
        return SquareView(source, source.background_pixel)
    return SquareView(source, 255)


@dataclass(frozen=True)
class _Layout:
    """What a slide's headers say; plain data that pickles."""

    levels: tuple[tuple[int, int], ...]  # (width, height), level 0 the full resolution
    downsamples: tuple[float, ...]  # OpenSlide's level-0 pixels per pixel of each level
    mpp: tuple[float, float] | None  # microns per level-0 pixel (x, y)
    vendor: str
    objective_power: float | None
    background: tuple[int, int, int]  # RGB of the slide's background
    file_id: tuple[int, int, int]  # (device, inode, modification time in ns)


class _OpenSlides:
    """This process's OpenSlide handles, keyed by file id, the least recently used first."""

    def __init__(self, capacity: int, inherited: "_OpenSlides | None") -> None:
        self.pid = os.getpid()
        self.capacity = capacity
        self.lock = threading.Lock()
        self.handles: OrderedDict[tuple[int, int, int], openslide.OpenSlide] = OrderedDict()
        self.cache: openslide.OpenSlideCache | None = None
        self.inherited = inherited  # another process's handles: kept, never used or closed

    def get(self, key: tuple[int, int, int], path: Path) -> "openslide.OpenSlide":
        """The open handle of the file ``key``, opening ``path`` if there is none."""
        with self.lock:
            handle = self.handles.get(key)
            if handle is not None:
                self.handles.move_to_end(key)
                return handle
        opened = _open_handle(path)  # outside the lock: other files' reads go on meanwhile
        with self.lock:
            if self.cache is None:
                self.cache = _new_cache(path)
            handle = self.handles.setdefault(key, opened)  # another thread's, if it was first
            self.handles.move_to_end(key)
            while len(self.handles) > self.capacity:
                self.handles.popitem(last=False)  # closed when its last read lets go of it
        if handle is opened and self.cache is not None:
            handle.set_cache(self.cache)
        return handle

    def drop(self, key: tuple[int, int, int], handle: "openslide.OpenSlide") -> None:
        """Let go of ``handle`` (one that failed) unless another already replaced it."""
        with self.lock:
            if self.handles.get(key) is handle:
                del self.handles[key]


_open_slides: _OpenSlides | None = None


def _open_slides_of_this_process() -> _OpenSlides:
    """The handles of this process; a forked child starts its own, keeping the inherited.

    No lock, which a fork could inherit held: two threads may both replace it at once, and
    the handles of the one that loses are merely closed.
    """
    global _open_slides
    slides = _open_slides
    if slides is None or slides.pid != os.getpid():
        slides = _open_slides = _OpenSlides(MAX_OPEN_SLIDES, inherited=slides)
    return slides


def _open_handle(path: Path) -> "openslide.OpenSlide":
    module = _openslide(path)
    try:
        return module.OpenSlide(path)
    except module.OpenSlideUnsupportedFormatError:
        raise SlideError(
            f"{path}: OpenSlide recognises no whole-slide image in it (it reads Aperio, "
            f"Hamamatsu, Leica, MIRAX, Philips, Sakura, Ventana, DICOM, Zeiss and tiled TIFF "
            f"files); {RECOPY_ADVICE}"
        ) from None
    except module.OpenSlideError as error:
        raise SlideError(
            f"{path}: OpenSlide cannot open it ({in_one_line(error)}); {RECOPY_ADVICE}"
        ) from None


def _new_cache(path: Path) -> "openslide.OpenSlideCache | None":
    """A tile cache of ``CACHE_BYTES``, or None with an OpenSlide older than 4.0 (each handle
    then keeps its own)."""
    module = _openslide(path)
    try:
        return module.OpenSlideCache(CACHE_BYTES)
    except module.OpenSlideVersionError:
        return None


class Slide(LazyHeaders["_Layout"]):
    """One whole-slide image, opened lazily; safe to pickle, fork and read from many threads.

    ``levels``: (width, height) per level as the slide gives them, level 0 the full
    resolution; ``channels``: 3 (RGB) or 1 (grey, see the module's docstring). Reads return
    uint8 (height, width, channels) arrays. ``mpp``: microns per level-0 pixel (x, y), None
    when the slide does not say; ``vendor``: OpenSlide's name of its format;
    ``objective_power``: the scanner's magnification, None when the slide does not say.
    """

    def __init__(self, path: str | os.PathLike[str], channels: int = 3) -> None:
        super().__init__(path)
        if channels not in (1, 3):
            raise ValueError(f"a slide is read with 3 channels (RGB) or 1 (grey), not {channels}")
        self.channels = channels
        _openslide(self.path)
        if not self.path.exists():
            raise FileNotFoundError(f"no whole-slide image at {self.path}")

    def __repr__(self) -> str:
        return f"Slide({str(self.path)!r}, channels={self.channels})"

    @property
    def mpp(self) -> tuple[float, float] | None:
        return self._read_layout().mpp

    @property
    def vendor(self) -> str:
        return self._read_layout().vendor

    @property
    def objective_power(self) -> float | None:
        return self._read_layout().objective_power

    @property
    def background(self) -> tuple[int, int, int]:
        """The RGB that transparent pixels are flattened onto."""
        return self._read_layout().background

    @property
    def background_pixel(self) -> np.ndarray:
        """uint8 (channels,): the background as read, what a transparent pixel becomes."""
        return self._flattened(np.zeros((1, 1, 4), np.uint8), self.background)[0, 0]

    def read_region(self, level: int, left: int, top: int, width: int, height: int) -> np.ndarray:
        """uint8 (height, width, channels): a rectangle of ``level``, which must lie inside it."""
        layout = self._read_layout()
        left, top, width, height = self._checked_region(level, left, top, width, height)
        downsample = layout.downsamples[level]
        location = (round(left * downsample), round(top * downsample))  # level-0 pixels
        rgba = self._read_rgba(location, level, (width, height))
        return self._flattened(rgba, layout.background)

    def read_proxy(self, size: int) -> np.ndarray:
        """uint8 (size, size, channels): the slide resized to size² from ``proxy_level(size)``,
        squashed to a square as ``PyramidTIFF.read_proxy`` does, and like it without aliasing
        (libvips ``resize``: box shrink, then a Lanczos-3 kernel). The level is read whole:
        one of more than ``MAX_PROXY_PIXELS`` (a slide without coarse levels) is refused."""
        if size <= 0:
            raise ValueError(f"proxy size must be positive, got {size}")
        level = self.proxy_level(size)
        width, height = self.levels[level]
        if width * height > MAX_PROXY_PIXELS:
            raise SlideError(
                f"{self.path}: its coarsest level is {width}×{height} pixels, too large to read "
                f"whole for a {size}² proxy; convert it to a pyramid with coarser levels (e.g. "
                "`vips tiffsave in.svs out.tif --tile --pyramid`)"
            )
        return resized_pixels(self.read_level(level), size)

    # ------------------------------------------------------------------ internals

    def _layout_from_file(self) -> _Layout:
        try:
            stat = os.stat(self.path)
        except OSError as error:
            raise FileNotFoundError(f"{self.path}: {error.strerror}") from None
        file_id = (stat.st_dev, stat.st_ino, stat.st_mtime_ns)
        handle = _open_slides_of_this_process().get(file_id, self.path)
        properties = handle.properties
        mpp = None
        if "openslide.mpp-x" in properties and "openslide.mpp-y" in properties:
            mpp = (float(properties["openslide.mpp-x"]), float(properties["openslide.mpp-y"]))
        power = properties.get("openslide.objective-power")
        colour = properties.get("openslide.background-color", "FFFFFF")
        return _Layout(
            levels=tuple(handle.level_dimensions),
            downsamples=tuple(handle.level_downsamples),
            mpp=mpp,
            vendor=properties.get("openslide.vendor", "unknown"),
            objective_power=None if power is None else float(power),
            background=(int(colour[0:2], 16), int(colour[2:4], 16), int(colour[4:6], 16)),
            file_id=file_id,
        )

    def _read_rgba(
        self, location: tuple[int, int], level: int, size: tuple[int, int]
    ) -> np.ndarray:
        """uint8 (height, width, 4) un-premultiplied RGBA from OpenSlide."""
        layout = self._read_layout()
        module = _openslide(self.path)
        handles = _open_slides_of_this_process()
        handle = handles.get(layout.file_id, self.path)
        try:
            region = handle.read_region(location, level, size)
        except module.OpenSlideError as error:
            handles.drop(layout.file_id, handle)
            raise SlideError(
                f"{self.path}: reading level {level} failed ({in_one_line(error)}); {RECOPY_ADVICE}"
            ) from None
        return np.asarray(region)

    def _flattened(self, rgba: np.ndarray, background: tuple[int, int, int]) -> np.ndarray:
        """(h, w, 4) RGBA → (h, w, channels) uint8 on ``background`` (see the module)."""
        if (rgba[..., 3] == 255).all():  # opaque, as tissue is: nothing to flatten
            rgb = np.ascontiguousarray(rgba[..., :3])
        else:  # c·a + b·(255 − a) + 127 ≤ 255² + 127: 16 bits hold it
            alpha = rgba[..., 3:].astype(np.uint16)
            colour = rgba[..., :3] * alpha
            colour += np.array(background, np.uint16) * (255 - alpha)
            rgb = ((colour + 127) // 255).astype(np.uint8)
        if self.channels == 3:
            return rgb
        grey = pyvips.Image.new_from_array(rgb, interpretation="srgb").colourspace("b-w")
        fetched = pyvips.Region.new(grey).fetch(0, 0, grey.width, grey.height)
        return np.frombuffer(fetched, np.uint8).reshape(*rgb.shape[:2], 1).copy()
