"""Overrides read by Hydra's parser: the keys they set, and applied again over another config."""

from omegaconf import OmegaConf

from varsac.overrides import override_key, with_overrides


def test_the_key_of_an_override_whatever_its_prefix_and_value() -> None:
    assert override_key("model.beta=0.1") == "model.beta"
    assert override_key("+model.extra=[1,2]") == "model.extra"
    assert override_key("~model.beta") == "model.beta"
    assert override_key("data.root='a=b'") == "data.root"  # an = inside a quoted value


def test_overrides_inside_the_given_keys_apply_again_as_hydra_reads_them() -> None:
    stored = OmegaConf.create({"data": {"root": "x", "batch_size": 32}, "model": {"beta": 1}})
    overrides = [
        "data.batch_size=25",
        "data.root='a b=c'",
        "+model.extra=[1,2]",
        "model.paths=${data.root}",  # interpolations stay interpolations
        "~model.beta",  # deletions and group choices were Hydra's to compose
        "model=resnet18",
        "trainer.max_epochs=3",  # outside the keys given
    ]
    merged = with_overrides(stored, overrides, keys=("data", "model"), groups={"model"})
    assert OmegaConf.to_container(merged) == {
        "data": {"root": "a b=c", "batch_size": 25},
        "model": {"beta": 1, "extra": [1, 2], "paths": "${data.root}"},
    }
    assert OmegaConf.is_struct(merged) and stored.data.batch_size == 32


def test_a_nested_group_choice_takes_the_config_hydra_composed_for_it() -> None:
    """``varsac test`` of a 100² checkpoint on 2528² pyramids: ``model/cropper=lst`` swaps
    the stored cropper for the composed one, keeping the stored window, and the overrides
    apply on top."""
    stored = OmegaConf.create(
        {"model": {"beta": 1, "cropper": {"_target_": "SpatialTransformer", "window": 48}}}
    )
    composed = OmegaConf.create(
        {"model": {"beta": 2, "cropper": {"_target_": "LST", "window": 32, "workers": 8}}}
    )
    groups = {"model", "model/cropper"}
    merged = with_overrides(stored, ["model/cropper=lst"], ("model",), groups, composed)
    assert OmegaConf.to_container(merged) == {
        "model": {"beta": 1, "cropper": {"_target_": "LST", "window": 48, "workers": 8}}
    }
    overrides = ["model.cropper.workers=2", "model/cropper=lst", "model.cropper.window=64"]
    merged = with_overrides(stored, overrides, ("model",), groups, composed)
    assert merged.model.cropper.window == 64 and merged.model.cropper.workers == 2
    ignored = with_overrides(stored, ["model=resnet18"], ("model",), {"model"}, composed)
    assert OmegaConf.to_container(ignored) == OmegaConf.to_container(stored)
