"""Datasets and datamodules."""

SPLITS = ("train", "val", "test")  # every dataset's splits, in this order
