"""Datasets and datamodules."""

from varsac.errors import ConfigError

SPLITS = ("train", "val", "test")  # every dataset's splits, in this order


def check_split_fractions(val: float, test: float) -> None:
    """The fractions of a dataset held out for validation and test must leave some for training."""
    if val < 0 or test < 0 or val + test >= 1:
        raise ConfigError(
            f"val={val} and test={test} must be fractions ≥ 0 that leave some for train"
        )
