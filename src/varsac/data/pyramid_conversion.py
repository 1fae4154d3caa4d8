"""Converting many images to pyramid TIFFs at once: every core busy, failures reported, not fatal.

libvips decodes, resizes and encodes outside the GIL, so a thread pool keeps
all cores busy. An image that cannot be read is tried once more when the pool
is done, alone: libvips keeps one error message for all threads, so only an
image converted with nothing else running is reported with its own reason.
"""

import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import pyvips
from tqdm import tqdm

from varsac.files import NoSpaceError

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
            failures[source] = " ".join(str(error).split())
            log.warning("could not convert %s: %s", source, failures[source])
    return failures
