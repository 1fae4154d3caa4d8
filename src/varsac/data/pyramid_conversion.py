"""Converting images to the 8-bit sRGB (or grey) pyramid TIFFs that varsac reads, one or many.

``write_srgb_pyramid`` is the one conversion of an image (a photo, a game frame,
an image given to ``varsac predict``, an array in memory) to a pyramid: 8-bit
sRGB or grey, fitted to a square when asked. ``convert_all`` runs a conversion
over many images. libvips decodes, resizes and encodes outside the GIL, so a
thread pool keeps all cores busy. An image that cannot be read is tried once
more when the pool is done, alone: libvips keeps one error message for all
threads, so only an image converted with nothing else running is reported with
its own reason.
"""

import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import pyvips
from tqdm import tqdm

from varsac.errors import in_one_line
from varsac.files import NoSpaceError
from varsac.pyramid import open_image, write_pyramid

log = logging.getLogger(__name__)

# What converting an image that cannot be read or converted raises.
CONVERSION_ERRORS = (OSError, ValueError, pyvips.Error)


def as_srgb(image: pyvips.Image) -> pyvips.Image:
    """8-bit sRGB with three bands.

    An embedded ICC profile converts the pixels to sRGB (relative
    colorimetric); without one they are taken as sRGB (CMYK goes through
    libvips's own CMYK profile), greyscale and palette images (GIF) become three
    channels and 16-bit samples keep their high byte (v ↦ ⌊v / 256⌋).
    Transparency is flattened onto black.
    """
    if image.hasalpha():
        image = image.flatten()
    if image.get_typeof("icc-profile-data"):
        image = image.icc_transform("srgb", embedded=True, intent="relative", depth=8)
    image = image.colourspace("srgb")
    if image.format == "ushort":
        image = (image >> 8).cast("uchar")
    if image.format != "uchar" or image.bands != 3:
        raise ValueError(f"cannot map {image.bands} {image.format} bands to 8-bit sRGB")
    return image


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


def srgb_image(
    image: pyvips.Image, channels: int = 3, size: int | None = None, fit: str = "resize"
) -> pyvips.Image:
    """8-bit sRGB (``channels`` 3) or grey (1), fitted to size² by ``fit`` if given. An image
    that is already that (8 bits, no colour profile) keeps its pixels: an array in memory is
    read exactly as a pyramid TIFF of the same pixels."""
    kept = (
        image.format == "uchar"
        and image.bands == channels
        and image.interpretation == ("b-w" if channels == 1 else "srgb")
        and not image.get_typeof("icc-profile-data")
    )
    if not kept:
        image = as_srgb(image)
        image = image.colourspace("b-w") if channels == 1 else image
    return image if size is None else fit_square(image, size, fit)


def write_srgb_pyramid(
    source: Path | pyvips.Image,
    target: Path,
    *,
    channels: int = 3,
    size: int | None = None,
    fit: str = "resize",
    compression: str = "jpeg",
    quality: int = 90,
) -> None:
    """Write ``source`` (an image file, upright, or a pyvips image) as ``srgb_image`` of it, a
    pyramid TIFF at ``target`` (``write_pyramid``: atomically, tiles by ``compression``)."""
    image = open_image(source) if isinstance(source, Path) else source
    image = srgb_image(image, channels, size, fit)
    write_pyramid(image, target, compression=compression, quality=quality)


def convert_all(
    jobs: Sequence[tuple[Path, Path]],
    convert: Callable[[Path, Path], object],
    workers: int | None = None,
    unit: str = "image",
) -> dict[Path, str]:
    """Run ``convert(source, target)`` for every job on ``workers`` threads (None: one per core).

    Returns {source: reason} for the sources that failed with ``CONVERSION_ERRORS``
    (each also logged); any other error, and a full disc (``NoSpaceError``), stops the
    conversion and is raised.
    """
    failed: list[tuple[Path, Path]] = []
    pool = ThreadPoolExecutor(workers or os.cpu_count() or 1)
    try:
        futures = {pool.submit(convert, *job): job for job in jobs}
        for future in tqdm(as_completed(futures), total=len(jobs), desc="converting", unit=unit):
            error = future.exception()
            if isinstance(error, NoSpaceError):  # every image after it would fail the same way
                raise error
            if isinstance(error, CONVERSION_ERRORS):
                failed.append(futures[future])
            elif error is not None:
                raise error
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    failures: dict[Path, str] = {}
    for source, target in failed:
        try:
            convert(source, target)
        except NoSpaceError:
            raise
        except CONVERSION_ERRORS as error:
            failures[source] = in_one_line(error)
            log.warning("could not convert %s: %s", source, failures[source])
    return failures
