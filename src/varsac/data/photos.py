"""The datamodule of an indexed image set: converted photos (MIT-Adobe FiveK or your own), or
whole-slide images.

It reads ``index.csv`` (``photo_index``: written by ``varsac data mit5k``,
``megapixel_mnist`` or ``slides``), opens each image as ``open_image_source``
does (a pyramid TIFF, or a slide through OpenSlide), takes its proxy off its
small levels, and hands the sources themselves to the localized spatial
transformer. A source that is not square (a slide; converted photos are
square) is read through its square view (``slides.model_view``), so that
glimpses stay squares. With ``glimpse_microns`` or ``glimpse_pixels``
(``glimpse_sizes``) every sample carries its image's ``scale_bounds``.
"""

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from varsac.data.glimpse_sizes import check_glimpse_sizes, glimpse_scale_bounds
from varsac.data.photo_index import INDEX_NAME, read_index
from varsac.data.pyramid_dataset import PyramidDataset
from varsac.data.splits import SplitDataModule
from varsac.errors import ConfigError, check_at_least
from varsac.image_source import ImageSource, read_proxies
from varsac.slides import model_view, open_image_source

log = logging.getLogger(__name__)

# The MIT-Adobe FiveK subject categories the paper classifies, in its order.
MIT5K_CLASSES = ("abstract", "animals", "man-made", "nature", "None", "people")


class ScaledDataset(PyramidDataset):
    """A ``PyramidDataset`` whose samples also carry ``scale_bounds``: float32 (2,), the
    image's (min_scale, max_scale) (``glimpse_sizes``)."""

    def __init__(
        self,
        images: Sequence[ImageSource],
        proxies: torch.Tensor,
        targets: torch.Tensor,
        scale_bounds: torch.Tensor,
    ) -> None:
        super().__init__(images, proxies, targets)
        self.scale_bounds = scale_bounds  # (N, 2)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return super().__getitem__(index) | {"scale_bounds": self.scale_bounds[index]}


class PhotoDataModule(SplitDataModule):
    """The images listed in ``root/index.csv``, by split, labelled with ``classes``.

    ``classes``: the class names in the order of the model's outputs; None takes
    the labels found in the index, sorted. A label not in ``classes`` is an
    error (the message names it); a class without photos is a warning.
    ``image_channels``: 3 for colour photos, 1 for grey ones (Megapixel MNIST); the proxy,
    the photo's thumbnail, has the same (``proxy_channels``). A split whose pyramids have
    other channels is an error naming one (slides are read with ``image_channels``).
    ``glimpse_microns`` or ``glimpse_pixels`` (at most one): [min, max] glimpse sizes in
    microns or level-0 pixels, given to the model per image as ``scale_bounds``.
    """

    def __init__(
        self,
        root: str,
        classes: Sequence[str] | None = MIT5K_CLASSES,
        proxy_size: int = 32,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
        image_channels: int = 3,
        proxy_channels: int = 3,
        glimpse_microns: Sequence[float] | None = None,
        glimpse_pixels: Sequence[float] | None = None,
    ) -> None:
        super().__init__(image_channels, proxy_channels, batch_size, num_workers, seed)
        check_glimpse_sizes(glimpse_microns, glimpse_pixels)
        if proxy_channels != image_channels:
            raise ConfigError(
                f"data.proxy_channels={proxy_channels}: the proxy is the photo's thumbnail, "
                f"of its data.image_channels={image_channels}"
            )
        check_at_least(proxy_size=(proxy_size, 1))
        root = str(Path(root).expanduser())
        classes = None if classes is None else [str(name) for name in classes]
        glimpse_microns, glimpse_pixels = (
            None if sizes is None else [float(size) for size in sizes]
            for sizes in (glimpse_microns, glimpse_pixels)
        )  # plain lists in the hyperparameters
        self.save_hyperparameters(logger=False)  # the loggers get the composed config instead
        self.rows = read_index(root)
        labels = sorted({row.label for row in self.rows})
        self.class_names: list[str] = labels if classes is None else classes
        unknown = [label for label in labels if label not in self.class_names]
        if unknown:
            raise ValueError(
                f"{Path(root) / INDEX_NAME} has photos of class(es) {unknown}, which are not "
                f"among data.classes={self.class_names}: add them to data.classes, or set "
                "data.classes=null to use the classes the index has"
            )
        if len(set(self.class_names)) != len(self.class_names):
            raise ValueError(f"data.classes lists a class twice: {self.class_names}")
        empty = [name for name in self.class_names if name not in labels]
        if empty:
            warnings.warn(
                f"{Path(root) / INDEX_NAME} has no photos of class(es) {empty}", stacklevel=2
            )

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def load_split(self, split: str) -> PyramidDataset:
        """The split's image sources, their proxies (read here, from each source's smallest
        fitting level), class indices and, with glimpse sizes, scale bounds."""
        root = Path(self.hparams.root)
        rows = [row for row in self.rows if row.split == split]
        if not rows:  # an index written by hand or by an older varsac
            raise ConfigError(
                f"{root / INDEX_NAME} has no {split} photos: convert the photos again with "
                "`varsac data mit5k` (or index the slides again with `varsac data slides`: "
                "both give every split images, or say what is missing), or give some images "
                f"the split {split} in the index"
            )
        paths = [root / row.path for row in rows]
        missing = [path for path in paths if not path.is_file()]
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} image(s) listed in {root / INDEX_NAME} are missing, e.g. "
                f"{missing[0]}: run `varsac data mit5k` again to convert them (or, for slides, "
                "`varsac data slides` to index those there are)"
            )
        log.info("%s: %d %s images", root, len(rows), split)
        targets = torch.tensor([self.class_names.index(row.label) for row in rows])
        sources = [open_image_source(path, self.image_channels) for path in paths]
        if sources[0].channels != self.image_channels:
            raise ConfigError(
                f"{paths[0]} has {sources[0].channels} channel(s), but "
                f"data.image_channels={self.image_channels}: set it to the images' channels"
            )
        images = [model_view(source) for source in sources]
        proxies = read_proxies(images, self.hparams.proxy_size)
        microns, pixels = self.hparams.glimpse_microns, self.hparams.glimpse_pixels
        if microns is None and pixels is None:
            return PyramidDataset(images, proxies, targets)
        bounds = [glimpse_scale_bounds(image, microns, pixels) for image in images]
        return ScaledDataset(images, proxies, targets, torch.tensor(bounds, dtype=torch.float32))
