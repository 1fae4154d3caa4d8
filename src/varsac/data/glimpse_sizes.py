"""Glimpse sizes in microns or level-0 pixels, as each image's crop-scale bounds.

The model's crops are fractions of the side of the image (of its square view:
``image_source.SquareView``). Slides of one set differ in size and resolution,
so one fraction is not one physical size: ``data.glimpse_microns: [min, max]``
(or ``data.glimpse_pixels``) asks for glimpses of one size in microns (or in
level-0 pixels) instead, and each image gets its own (min_scale, max_scale):
microns / (microns per pixel × side), clamped to (0, 1]. The datamodule puts them
in every batch (``"scale_bounds"``, float32 (B, 2)), and ``varsac predict``
computes them the same way for each image (``Predictor``).
"""

from collections.abc import Sequence

from varsac.errors import ConfigError
from varsac.image_source import ImageSource
from varsac.slides import microns_per_pixel


def check_glimpse_sizes(
    microns: Sequence[float] | None, pixels: Sequence[float] | None
) -> tuple[str, tuple[float, float]] | None:
    """("microns" or "pixels", (min, max)) of the one that is set, None when neither is; a
    ``ConfigError`` for both, or for a pair that is not 0 < min ≤ max."""
    if microns is not None and pixels is not None:
        raise ConfigError(
            "data.glimpse_microns and data.glimpse_pixels are both set: set at most one"
        )
    for unit, sizes in (("microns", microns), ("pixels", pixels)):
        if sizes is None:
            continue
        sizes = tuple(float(size) for size in sizes)
        if len(sizes) != 2 or not 0 < sizes[0] <= sizes[1]:
            raise ConfigError(f"data.glimpse_{unit} must be [min, max] with 0 < min ≤ max")
        return unit, sizes
    return None


def glimpse_scale_bounds(
    source: ImageSource,
    microns: Sequence[float] | None = None,
    pixels: Sequence[float] | None = None,
) -> tuple[float, float]:
    """(min_scale, max_scale): glimpses of ``microns`` [min, max] µm or ``pixels`` [min, max]
    level-0 pixels as fractions of the side of ``source``'s square view, the larger of its
    level-0 width and height; each clamped to (0, 1]. Microns need a source that says its
    resolution (a slide's ``mpp``): another is a ``ConfigError`` naming it."""
    sizes = check_glimpse_sizes(microns, pixels)
    if sizes is None:
        raise ConfigError("glimpse_scale_bounds needs microns or pixels")
    unit, (low, high) = sizes
    if unit == "microns":
        mpp = microns_per_pixel(source)
        if mpp is None:
            raise ConfigError(
                f"{source!r} does not say its microns per pixel, and data.glimpse_microns "
                "asks for glimpses in microns: set data.glimpse_pixels instead, or leave the "
                "image out"
            )
        low, high = low / mpp, high / mpp
    side = max(source.levels[0])
    return min(low / side, 1.0), min(high / side, 1.0)
