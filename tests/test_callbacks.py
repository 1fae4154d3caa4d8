"""The saccade pictures: drawn for a model that saccades, skipped for one that does not."""

import functools
from pathlib import Path

import lightning as L
import torch

from test_models import tiny_batch, tiny_saccader
from varsac.callbacks import SaccadePictures
from varsac.models.crop_classifier import CropClassifier
from varsac.models.full_image import FullImageClassifier
from varsac.tasks import SetClassification


def validation_epoch(callback: SaccadePictures, module: L.LightningModule) -> None:
    """One validation batch and the epoch's end, as the trainer calls them."""
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    callback.on_validation_batch_end(trainer, module, None, tiny_batch(), 0)
    callback.on_validation_epoch_end(trainer, module)


def test_a_saccade_model_gets_a_picture_per_epoch(tmp_path: Path) -> None:
    validation_epoch(SaccadePictures(str(tmp_path), num_samples=2), tiny_saccader().eval())
    assert [p.name for p in tmp_path.iterdir()] == ["epoch_000.png"]


def test_a_model_that_does_not_saccade_draws_nothing(tmp_path: Path) -> None:
    baseline = FullImageClassifier(
        CropClassifier(1, 10, channels=(8, 16), hidden=16),
        SetClassification(10, 2),
        functools.partial(torch.optim.Adam, lr=1e-3),
    )
    validation_epoch(SaccadePictures(str(tmp_path / "saccades"), num_samples=2), baseline)
    assert not (tmp_path / "saccades").exists()
