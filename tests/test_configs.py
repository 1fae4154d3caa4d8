"""Every experiment config composes and builds its data and model."""

from importlib.resources import files
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from varsac.checkpoint import CONFIG_KEY, load_checkpoint
from varsac.train import instantiate_data_and_model

EXPERIMENTS = sorted(
    p.name.removesuffix(".yaml")
    for p in files("varsac.conf").joinpath("experiment").iterdir()
    if p.name.endswith(".yaml")
)


def test_there_are_experiments() -> None:
    assert {"cluttered_mnist", "cluttered_mnist_sum", "cnn_cluttered_mnist"} <= set(EXPERIMENTS)


# Datamodules over folders that the user brings: the fixture that makes one.
DATA_FOLDERS = {
    "varsac.data.photos.PhotoDataModule": "converted_photos",
    "varsac.data.starcraft.dataset.StarCraftDataModule": "starcraft_folder",
}
# Experiments whose folder is another than their datamodule's (the classes must match).
EXPERIMENT_FOLDERS = {
    "megapixel_mnist": "megapixel_mnist_folder",
    "baseline_megapixel_mnist": "megapixel_mnist_folder",
}


GROUPS = ("data", "task", "model")


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_and_builds(
    experiment: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    with initialize_config_module("varsac.conf", version_base="1.3"):
        cfg = compose("fit", overrides=[f"experiment={experiment}", f"paths.data_dir={tmp_path}"])
    assert cfg.name == experiment
    if cfg.data._target_ in DATA_FOLDERS:
        folder = EXPERIMENT_FOLDERS.get(experiment, DATA_FOLDERS[cfg.data._target_])
        cfg.data.root = str(request.getfixturevalue(folder))
    datamodule, model = instantiate_data_and_model(cfg)
    assert model.task.num_classes == datamodule.num_classes
    assert sum(p.numel() for p in model.parameters()) > 0
    # What a checkpoint of this experiment holds beside Lightning's tensors and numbers (the
    # CLI tests load whole ones): all of it loads as weights only.
    stored = {
        "hyper_parameters": dict(model.hparams),
        "datamodule_hyper_parameters": dict(datamodule.hparams),
        # the groups that test and predict rebuild (paths need a Hydra run to resolve)
        CONFIG_KEY: {k: OmegaConf.to_container(cfg[k], resolve=True) for k in GROUPS},
    }
    torch.save(stored, tmp_path / "parts.ckpt")
    assert load_checkpoint(tmp_path / "parts.ckpt") == stored


@pytest.mark.parametrize("group", ["trainer=gpu", "logger=wandb", "logger=none", "task=sum"])
def test_config_groups_compose(group: str) -> None:
    with initialize_config_module("varsac.conf", version_base="1.3"):
        cfg = compose("fit", overrides=[group])
    assert cfg.trainer._target_.endswith("Trainer")


def test_test_command_requires_a_checkpoint() -> None:
    with initialize_config_module("varsac.conf", version_base="1.3"):
        cfg = compose("test")
    assert cfg._get_node("ckpt_path")._is_missing()
