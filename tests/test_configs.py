"""Every experiment config composes and builds its data and model; the groups' choices are
valid for what they configure; Python's defaults are the configs'."""

import inspect
from importlib.resources import files
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from torch import nn

from varsac.checkpoint import CONFIG_KEY, load_checkpoint
from varsac.config_check import check_config
from varsac.models.saccader import Saccader
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
    "slides": "synthetic_slides_folder",
    "baseline_slides": "synthetic_slides_folder",
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
    # the model's first layers take the data's channels: the image's, and the proxy's
    first_convolutions = {
        name.split(".")[0]: layer.in_channels
        for name, layer in reversed(list(model.named_modules()))
        if isinstance(layer, nn.Conv2d)
    }
    image_part = next(
        k for k in ("crop_classifier", "net", "backbone", "tile_encoder") if k in first_convolutions
    )
    assert first_convolutions[image_part] == datamodule.image_channels
    if "proxy_encoder" in first_convolutions:
        assert first_convolutions["proxy_encoder"] == datamodule.proxy_channels
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


@pytest.mark.parametrize(
    "group", ["trainer=gpu", "trainer=ddp", "logger=wandb", "logger=none", "task=sum"]
)
def test_each_group_choice_is_valid_for_what_it_configures(group: str) -> None:
    with initialize_config_module("varsac.conf", version_base="1.3"):
        cfg = compose("fit", overrides=[group, "paths.output_dir=unused"])
    for key in ("trainer", "logger", "callbacks", "task"):
        check_config(cfg[key], key)  # every value of the right type for its parameter


def test_a_saccader_built_in_python_has_the_configs_defaults() -> None:
    with initialize_config_module("varsac.conf", version_base="1.3"):
        model = compose("fit").model
    defaults = {
        name: parameter.default
        for name, parameter in inspect.signature(Saccader).parameters.items()
        if parameter.default is not inspect.Parameter.empty and name != "scheduler"
    }
    assert defaults == {name: model[name] for name in defaults}


def test_test_command_requires_a_checkpoint() -> None:
    with initialize_config_module("varsac.conf", version_base="1.3"):
        cfg = compose("test")
    assert cfg._get_node("ckpt_path")._is_missing()
