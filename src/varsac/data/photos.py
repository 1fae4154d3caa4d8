"""The datamodule of a converted photo set (MIT-Adobe FiveK or your own photos).

It reads ``index.csv`` (``photo_index``), takes each photo's proxy off its
pyramid's small levels, and hands the pyramids themselves to the localized
spatial transformer.
"""

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

from varsac.data.photo_index import INDEX_NAME, read_index
from varsac.data.pyramid_dataset import PyramidDataset
from varsac.data.splits import SplitDataModule
from varsac.errors import ConfigError, check_at_least
from varsac.image_source import read_proxies
from varsac.pyramid import PyramidTIFF

log = logging.getLogger(__name__)

# The MIT-Adobe FiveK subject categories the paper classifies, in its order.
MIT5K_CLASSES = ("abstract", "animals", "man-made", "nature", "None", "people")


class PhotoDataModule(SplitDataModule):
    """The photos listed in ``root/index.csv``, by split, labelled with ``classes``.

    ``classes``: the class names in the order of the model's outputs; None takes
    the labels found in the index, sorted. A label not in ``classes`` is an
    error (the message names it); a class without photos is a warning.
    ``image_channels``: 3 for colour photos, 1 for grey ones (Megapixel MNIST); the proxy,
    the photo's thumbnail, has the same (``proxy_channels``). A split whose pyramids have
    other channels is an error naming one.
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
    ) -> None:
        super().__init__(image_channels, proxy_channels, batch_size, num_workers, seed)
        if proxy_channels != image_channels:
            raise ConfigError(
                f"data.proxy_channels={proxy_channels}: the proxy is the photo's thumbnail, "
                f"of its data.image_channels={image_channels}"
            )
        check_at_least(proxy_size=(proxy_size, 1))
        root = str(Path(root).expanduser())
        classes = None if classes is None else [str(name) for name in classes]
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
        """The split's pyramids, their proxies (read here, from each pyramid's smallest
        fitting level) and class indices."""
        root = Path(self.hparams.root)
        rows = [row for row in self.rows if row.split == split]
        if not rows:  # an index written by hand or by an older varsac
            raise ConfigError(
                f"{root / INDEX_NAME} has no {split} photos: convert the photos again with "
                "`varsac data mit5k` (it gives every split photos, or says what is missing), "
                f"or give some photos the split {split} in the index"
            )
        paths = [root / row.path for row in rows]
        missing = [path for path in paths if not path.is_file()]
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} pyramid TIFF(s) listed in {root / INDEX_NAME} are missing, "
                f"e.g. {missing[0]}: run `varsac data mit5k` again to convert them"
            )
        log.info("%s: %d %s photos", root, len(rows), split)
        targets = [self.class_names.index(row.label) for row in rows]
        images = [PyramidTIFF(path) for path in paths]
        if images[0].channels != self.image_channels:
            raise ConfigError(
                f"{images[0].path} has {images[0].channels} channel(s), but "
                f"data.image_channels={self.image_channels}: set it to the photos' channels"
            )
        proxies = read_proxies(images, self.hparams.proxy_size)
        return PyramidDataset(images, proxies, torch.tensor(targets, dtype=torch.long))
