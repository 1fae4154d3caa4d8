"""Datamodules of train, val and test splits: each split loaded once, when a stage needs it."""

import lightning
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from varsac.data import SPLITS
from varsac.data.pyramid_dataset import collate
from varsac.errors import ConfigError, check_at_least

SPLITS_OF_STAGE = {
    "fit": ("train", "val"),
    "validate": ("val",),
    "test": ("test",),
    "predict": ("test",),
    None: SPLITS,
}


class SplitDataModule(lightning.LightningDataModule):
    """Loads the splits a stage needs with ``load_split`` and batches them.

    Subclasses implement ``load_split(split) -> Dataset`` and pass ``batch_size``,
    ``num_workers`` and ``seed`` (which seeds the training shuffle) to this class, which
    checks them and batches every split with them; ``train_sampler`` may replace the
    shuffle (e.g. to balance classes). Batches are dicts, collated so that pyramid TIFFs
    stay a list.
    ``proxy_from_image``: whether the proxy is a thumbnail of the image (so that
    ``varsac predict`` can make it from the image alone).

    ``image_channels`` and ``proxy_channels``: the channels of the full-resolution images
    and of the proxies, which the model's networks take (``data.image_channels`` in the
    configs); ``fixed_channels`` are those of a dataset that has no choice.
    """

    proxy_from_image = True
    fixed_channels: tuple[int, int] | None = None  # (image, proxy), for every set of this kind

    def __init__(
        self,
        image_channels: int,
        proxy_channels: int,
        batch_size: int,
        num_workers: int,
        seed: int,
    ) -> None:
        super().__init__()
        check_at_least(
            image_channels=(image_channels, 1),
            proxy_channels=(proxy_channels, 1),
            batch_size=(batch_size, 1),
            num_workers=(num_workers, 0),
            seed=(seed, 0),
        )
        fixed = self.fixed_channels
        if fixed is not None and (image_channels, proxy_channels) != fixed:
            raise ConfigError(
                f"data.image_channels and data.proxy_channels: {type(self).__name__} has "
                f"{fixed[0]} and {fixed[1]}, got {image_channels} and {proxy_channels}"
            )
        self.image_channels, self.proxy_channels = image_channels, proxy_channels
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.datasets: dict[str, Dataset] = {}

    def load_split(self, split: str) -> Dataset:
        raise NotImplementedError

    def train_sampler(self) -> Sampler | None:
        """A sampler for the training split; None shuffles it uniformly."""
        return None

    def setup(self, stage: str | None = None) -> None:
        """Load the splits ``stage`` needs (fit: train and val; validate: val; test, predict:
        test; None: all)."""
        if stage not in SPLITS_OF_STAGE:
            raise ValueError(f"stage must be one of {list(SPLITS_OF_STAGE)}, got {stage!r}")
        for split in SPLITS_OF_STAGE[stage]:
            if split not in self.datasets:
                self.datasets[split] = self.load_split(split)

    def _dataloader(self, split: str) -> DataLoader:
        if split not in self.datasets:
            raise RuntimeError(f"the {split} split is not loaded: call setup() first")
        sampler = self.train_sampler() if split == "train" else None
        shuffle = split == "train" and sampler is None
        return DataLoader(
            self.datasets[split],
            batch_size=self.batch_size,
            shuffle=shuffle,
            sampler=sampler,
            generator=torch.Generator().manual_seed(self.seed) if shuffle else None,
            num_workers=self.num_workers,
            collate_fn=collate,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._dataloader("train")

    def val_dataloader(self) -> DataLoader:
        return self._dataloader("val")

    def test_dataloader(self) -> DataLoader:
        return self._dataloader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._dataloader("test")
