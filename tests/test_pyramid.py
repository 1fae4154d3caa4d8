"""Pyramid TIFFs written by ``write_pyramid`` and read back by ``PyramidTIFF``, on real files."""

import pickle
import random
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import pyvips
import torch
from torch.utils.data import DataLoader, Dataset

from varsac import files
from varsac import pyramid as pyramid_module
from varsac.pyramid import (
    NotAPyramidWarning,
    PyramidError,
    PyramidTIFF,
    needs_bigtiff,
    write_pyramid,
)


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    """Random RGB pixels: any resampling or compression shows."""
    return np.random.default_rng(0).integers(0, 256, (1000, 1000, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def rgb_pyramid(rgb: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> PyramidTIFF:
    return PyramidTIFF(write_pyramid(rgb, tmp_path_factory.mktemp("rgb") / "rgb.tif"))


def partial_files(folder: Path) -> list[Path]:
    return files.partial_files(folder)


def idle_levels(image: PyramidTIFF) -> list[int]:
    """The levels of ``image``'s file that this process holds open, one entry per open page."""
    pool = pyramid_module._idle_pages_of_this_process()
    file_id = image._read_layout().file_id
    return sorted(
        key[-1] for key, pages in pool.pages.items() if key[:-1] == file_id for _ in pages
    )


def block_mean(array: np.ndarray) -> np.ndarray:
    """(H, W, C) → (H // 2, W // 2, C) means of 2×2 blocks, as float."""
    height, width = array.shape[0] // 2 * 2, array.shape[1] // 2 * 2
    blocks = array[:height, :width].astype(float).reshape(height // 2, 2, width // 2, 2, -1)
    return blocks.mean(axis=(1, 3))


# ---------------------------------------------------------------------- writing


@pytest.mark.parametrize("shape", [(300, 300), (1000, 1000, 3), (257, 411, 3)])
def test_an_array_is_written_losslessly_with_levels_down_to_a_tile(
    shape: tuple[int, ...], tmp_path: Path
) -> None:
    array = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    pyramid = PyramidTIFF(write_pyramid(array, tmp_path / "image.tif", tile_size=128))
    width, height = shape[1], shape[0]
    expected = [(width, height)]
    while max(expected[-1]) > 128:
        expected.append((expected[-1][0] // 2, expected[-1][1] // 2))
    assert pyramid.levels == expected
    assert pyramid.channels == (shape[2] if len(shape) == 3 else 1)
    level0 = pyramid.read_level(0)
    assert level0.dtype == np.uint8
    np.testing.assert_array_equal(level0, array.reshape(height, width, -1))
    assert partial_files(tmp_path) == []


@pytest.mark.parametrize("compression", ["deflate", "lzw", "none", "jpeg"])
def test_every_compression_reads_back(compression: str, rgb: np.ndarray, tmp_path: Path) -> None:
    pyramid = PyramidTIFF(
        write_pyramid(rgb[:300, :300], tmp_path / "i.tif", compression=compression)
    )
    difference = np.abs(pyramid.read_level(0).astype(int) - rgb[:300, :300])
    if compression == "jpeg":
        assert difference.mean() < 40  # noise is JPEG's worst case, yet it is the same image
    else:
        assert difference.max() == 0


def test_an_image_file_is_written(rgb: np.ndarray, tmp_path: Path) -> None:
    source = tmp_path / "source.png"
    pyvips.Image.new_from_array(rgb).pngsave(str(source))
    pyramid = PyramidTIFF(write_pyramid(source, tmp_path / "from_png.tif"))
    np.testing.assert_array_equal(pyramid.read_level(0), rgb)


def test_a_photo_is_turned_upright(rgb: np.ndarray, tmp_path: Path) -> None:
    photo = pyvips.Image.new_from_array(rgb[:200, :300]).copy()
    photo.set_type(pyvips.GValue.gint_type, "orientation", 6)  # shown turned 90° clockwise
    photo.jpegsave(str(tmp_path / "photo.jpg"), Q=95)
    pyramid = PyramidTIFF(write_pyramid(tmp_path / "photo.jpg", tmp_path / "photo.tif"))
    assert pyramid.levels[0] == (200, 300)
    upright = np.rot90(rgb[:200, :300], k=-1)
    assert np.abs(pyramid.read_level(0).astype(int) - upright).mean() < 10


def test_a_lazy_pyvips_image_is_streamed(tmp_path: Path) -> None:
    coordinates = pyvips.Image.xyz(600, 400)  # band 0: x, band 1: y, never materialised
    lazy = ((coordinates[0] * 3 + coordinates[1]) % 256).cast("uchar")
    pyramid = PyramidTIFF(write_pyramid(lazy, tmp_path / "lazy.tif"))
    y, x = np.mgrid[:400, :600]
    np.testing.assert_array_equal(pyramid.read_level(0)[..., 0], (x * 3 + y) % 256)


def test_sixteen_bit_images_keep_their_high_byte(tmp_path: Path) -> None:
    array = np.random.default_rng(2).integers(0, 65536, (300, 200), dtype=np.uint16)
    pyramid = PyramidTIFF(write_pyramid(pyvips.Image.new_from_array(array), tmp_path / "16.tif"))
    np.testing.assert_array_equal(pyramid.read_level(0)[..., 0], array >> 8)


@pytest.mark.parametrize(
    ("source", "options", "message"),
    [
        (np.zeros((64, 64), np.uint8), {"compression": "zstd"}, "compression"),
        (np.zeros((64, 64), np.uint8), {"tile_size": 100}, "multiple of 16"),
        (np.zeros((64, 64), np.uint8), {"quality": 0}, "quality"),
        (np.zeros((64, 64, 4), np.uint8), {"compression": "jpeg"}, "1 or 3 channels"),
        (np.zeros((64, 64), np.float32), {}, "uint8"),
        (pyvips.Image.black(64, 64).cast("float"), {}, "8-bit"),
    ],
)
def test_invalid_writes_are_refused_before_any_file(
    source: np.ndarray, options: dict, message: str, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=message):
        write_pyramid(source, tmp_path / "refused.tif", **options)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_write_leaves_no_partial_file_and_the_old_file_intact(
    rgb: np.ndarray, tmp_path: Path
) -> None:
    target = write_pyramid(rgb[:300, :300], tmp_path / "target.tif")
    before = target.read_bytes()
    source = tmp_path / "truncated.png"
    pyvips.Image.new_from_array(rgb).pngsave(str(source))
    source.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    with pytest.raises(OSError, match=r"target\.tif"):  # fails mid-stream, after the TIFF was begun
        write_pyramid(source, target)
    assert partial_files(tmp_path) == []
    assert target.read_bytes() == before


def test_a_write_into_a_missing_folder_creates_it(tmp_path: Path) -> None:
    target = tmp_path / "missing" / "image.tif"
    write_pyramid(np.zeros((64, 64), np.uint8), target)
    assert [p.name for p in target.parent.iterdir()] == ["image.tif"]


def test_bigtiff_is_chosen_past_two_gib_uncompressed() -> None:
    assert not needs_bigtiff(2528, 2528, 3)
    assert not needs_bigtiff(20_000, 20_000, 1)  # 400 MB, 533 MB with its pyramid
    assert needs_bigtiff(40_000, 40_000, 3)  # 4.8 GB
    side = int((2 * 2**30 * 3 / 4 / 3) ** 0.5)  # level 0 of 3 channels at the threshold
    assert not needs_bigtiff(side, side, 3)
    assert needs_bigtiff(side + 1, side + 1, 3)


def tiff_version(path: Path) -> int:
    """42 for classic TIFF, 43 for BigTIFF (little-endian files, as libvips writes here)."""
    return int.from_bytes(path.read_bytes()[2:4], "little")


def test_the_bigtiff_choice_reaches_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    array = np.random.default_rng(3).integers(0, 256, (300, 300), dtype=np.uint8)
    assert tiff_version(write_pyramid(array, tmp_path / "classic.tif")) == 42
    big = write_pyramid(array, tmp_path / "big.tif", bigtiff=True)
    assert tiff_version(big) == 43
    np.testing.assert_array_equal(PyramidTIFF(big).read_level(0)[..., 0], array)
    monkeypatch.setattr(pyramid_module, "BIGTIFF_THRESHOLD_BYTES", 1000)
    assert tiff_version(write_pyramid(array, tmp_path / "auto.tif")) == 43


# ---------------------------------------------------------------------- reading


@pytest.mark.parametrize(
    "rectangle",
    [(0, 0, 1000, 1000), (0, 0, 1, 1), (999, 999, 1, 1), (250, 17, 64, 200), (900, 800, 100, 200)],
)
def test_level_zero_regions_are_the_source_pixels(
    rgb_pyramid: PyramidTIFF, rgb: np.ndarray, rectangle: tuple[int, int, int, int]
) -> None:
    left, top, width, height = rectangle
    region = rgb_pyramid.read_region(0, left, top, width, height)
    np.testing.assert_array_equal(region, rgb[top : top + height, left : left + width])


def test_level_one_regions_are_the_area_averaged_source(
    rgb_pyramid: PyramidTIFF, rgb: np.ndarray
) -> None:
    region = rgb_pyramid.read_region(1, 100, 40, 200, 64)
    page = pyvips.Image.tiffload(str(rgb_pyramid.path), page=1).numpy()
    np.testing.assert_array_equal(region, page[40:104, 100:300])
    averaged = block_mean(rgb)[40:104, 100:300]
    assert np.abs(region - averaged).max() <= 1  # rounding of the 2×2 means


@pytest.mark.parametrize(
    ("level", "rectangle"),
    [
        (0, (-1, 0, 10, 10)),
        (0, (995, 0, 10, 10)),
        (1, (0, 495, 10, 10)),
        (0, (5, 5, 0, 3)),
        (3, (0, 0, 1, 1)),
    ],
)
def test_reads_outside_the_image_name_the_file(
    rgb_pyramid: PyramidTIFF, level: int, rectangle: tuple[int, int, int, int]
) -> None:
    with pytest.raises(ValueError, match=r"rgb\.tif"):
        rgb_pyramid.read_region(level, *rectangle)


def test_regions_are_writable_arrays(rgb_pyramid: PyramidTIFF) -> None:
    region = rgb_pyramid.read_region(0, 0, 0, 8, 8)
    assert region.flags.writeable and region.flags.c_contiguous
    torch.from_numpy(region)  # no warning about read-only memory


def test_repeated_reads_reuse_one_open_page(tmp_path: Path, rgb: np.ndarray) -> None:
    pyramid = PyramidTIFF(write_pyramid(rgb[:500, :500], tmp_path / "i.tif"))
    for left in range(0, 400, 40):
        pyramid.read_region(0, left, left, 64, 64)
    assert idle_levels(pyramid) == [0]
    PyramidTIFF(pyramid.path).read_region(0, 0, 0, 8, 8)  # another object of the same file
    assert idle_levels(pyramid) == [0]


def test_a_pickled_pyramid_reads_the_same(rgb_pyramid: PyramidTIFF, rgb: np.ndarray) -> None:
    fresh = pickle.loads(pickle.dumps(PyramidTIFF(rgb_pyramid.path)))
    rgb_pyramid.read_region(0, 0, 0, 8, 8)  # opened: pages are not pickled
    opened = pickle.loads(pickle.dumps(rgb_pyramid))
    for copy in (fresh, opened):
        assert copy.levels == rgb_pyramid.levels
        np.testing.assert_array_equal(copy.read_region(0, 10, 20, 30, 40), rgb[20:60, 10:40])


def random_rectangles(levels: list[tuple[int, int]], count: int, seed: int) -> list[tuple]:
    """(level, left, top, width, height) rectangles inside the levels."""
    rng = random.Random(seed)
    rectangles = []
    for _ in range(count):
        level = rng.randrange(len(levels))
        level_width, level_height = levels[level]
        width, height = rng.randint(1, min(96, level_width)), rng.randint(1, min(96, level_height))
        left, top = rng.randrange(level_width - width + 1), rng.randrange(level_height - height + 1)
        rectangles.append((level, left, top, width, height))
    return rectangles


def test_reads_from_many_threads_match_serial_reads(rgb_pyramid: PyramidTIFF) -> None:
    rectangles = random_rectangles(rgb_pyramid.levels, 400, seed=4)
    pyramids = [rgb_pyramid, PyramidTIFF(rgb_pyramid.path)]  # shared, and a second of the file
    with ThreadPoolExecutor(8) as pool:
        threaded = list(
            pool.map(lambda i: pyramids[i % 2].read_region(*rectangles[i]), range(len(rectangles)))
        )
    for rectangle, region in zip(rectangles, threaded, strict=True):
        np.testing.assert_array_equal(region, rgb_pyramid.read_region(*rectangle))
    assert 1 <= len(idle_levels(rgb_pyramid)) <= 8 * len(rgb_pyramid.levels)


def test_threads_opening_one_object_at_once_agree(rgb_pyramid: PyramidTIFF) -> None:
    fresh = [PyramidTIFF(rgb_pyramid.path) for _ in range(20)]
    with ThreadPoolExecutor(8) as pool:
        proxies = list(pool.map(lambda i: fresh[i % 4].read_proxy(32), range(40)))
    for proxy in proxies:
        np.testing.assert_array_equal(proxy, proxies[0])


class Regions(Dataset):
    """Regions of one pyramid, read in whichever process asks."""

    def __init__(self, pyramid: PyramidTIFF, rectangles: list[tuple]) -> None:
        self.pyramid = pyramid
        self.rectangles = rectangles

    def __len__(self) -> int:
        return len(self.rectangles)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self.pyramid.read_region(*self.rectangles[index]), self.pyramid.read_proxy(16)


def test_forked_workers_read_what_the_parent_reads(rgb_pyramid: PyramidTIFF) -> None:
    rectangles = random_rectangles(rgb_pyramid.levels, 64, seed=5)
    dataset = Regions(rgb_pyramid, rectangles)
    in_parent = [dataset[index] for index in range(len(dataset))]  # pages open before the fork
    # the parent has also run libvips's worker threads (writing the fixture's TIFF)
    loader = DataLoader(
        dataset,
        batch_size=None,
        num_workers=2,
        multiprocessing_context="fork",
        collate_fn=lambda sample: sample,
        timeout=60,  # a worker stuck in libvips fails the test instead of hanging it
    )
    in_workers = list(loader)
    for (region, proxy), (expected_region, expected_proxy) in zip(
        in_workers, in_parent, strict=True
    ):
        np.testing.assert_array_equal(region, expected_region)
        np.testing.assert_array_equal(proxy, expected_proxy)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nowhere\.tif"):
        PyramidTIFF(tmp_path / "nowhere.tif")


def test_random_bytes_are_not_a_tiff(tmp_path: Path) -> None:
    path = tmp_path / "noise.tif"
    path.write_bytes(np.random.default_rng(6).integers(0, 256, 10_000, np.uint8).tobytes())
    with pytest.raises(PyramidError, match=r"noise\.tif.*write_pyramid"):
        PyramidTIFF(path).read_level(0)


def test_a_truncated_tiff_is_refused(rgb_pyramid: PyramidTIFF, tmp_path: Path) -> None:
    path = tmp_path / "truncated.tif"
    data = rgb_pyramid.path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(PyramidError, match=r"truncated\.tif.*write it again"):
        PyramidTIFF(path).read_level(0)


def test_undecodable_tiles_are_an_error_not_black_pixels(
    rgb_pyramid: PyramidTIFF, tmp_path: Path
) -> None:
    path = tmp_path / "damaged.tif"
    data = bytearray(rgb_pyramid.path.read_bytes())
    data[5_000:400_000] = bytes(395_000)  # tiles of level 0; the directories are intact
    path.write_bytes(data)
    pyramid = PyramidTIFF(path)
    assert pyramid.levels == rgb_pyramid.levels
    with pytest.raises(PyramidError, match=r"damaged\.tif.*level 0"):
        pyramid.read_region(0, 0, 0, 256, 256)


def test_a_single_page_tiff_is_read_whole_with_a_warning(rgb: np.ndarray, tmp_path: Path) -> None:
    path = tmp_path / "flat.tif"
    pyvips.Image.new_from_array(rgb).tiffsave(str(path), tile=True)
    with pytest.warns(NotAPyramidWarning, match=r"flat\.tif.*write_pyramid.*vips tiffsave"):
        pyramid = PyramidTIFF(path)
        assert pyramid.levels == [(1000, 1000)]
    np.testing.assert_array_equal(pyramid.read_region(0, 5, 6, 70, 80), rgb[6:86, 5:75])
    assert pyramid.proxy_level(32) == 0
    assert pyramid.read_proxy(32).shape == (32, 32, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert PyramidTIFF(path).levels == [(1000, 1000)]  # warned once per file


def test_an_image_within_one_tile_is_a_complete_pyramid(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pyramid = PyramidTIFF(write_pyramid(np.zeros((100, 120), np.uint8), tmp_path / "s.tif"))
        assert pyramid.levels == [(120, 100)]


def test_pages_that_are_not_halvings_are_not_a_pyramid(rgb: np.ndarray, tmp_path: Path) -> None:
    path = tmp_path / "pages.tif"
    unrelated = [rgb[:400, :500], rgb[500:900, 500:]]  # two images of one size
    stacked = pyvips.Image.new_from_array(np.concatenate(unrelated)).copy()
    stacked.set_type(pyvips.GValue.gint_type, "page-height", 400)
    stacked.tiffsave(str(path), tile=True)
    assert pyvips.Image.tiffload(str(path)).get("n-pages") == 2
    with pytest.warns(NotAPyramidWarning, match=r"pages\.tif"):
        pyramid = PyramidTIFF(path)
        assert pyramid.levels == [(500, 400)]
    np.testing.assert_array_equal(pyramid.read_level(0), rgb[:400, :500])


def test_the_proxy_comes_from_the_smallest_level_that_fits(tmp_path: Path) -> None:
    y, x = np.mgrid[:1000, :1000]
    gradient = (x // 8 + y // 16).astype(np.uint8)  # smooth: resampling keeps it
    pyramid = PyramidTIFF(write_pyramid(gradient, tmp_path / "gradient.tif"))
    assert pyramid.levels == [(1000, 1000), (500, 500), (250, 250)]
    assert [pyramid.proxy_level(size) for size in (32, 250, 251, 500, 501, 2000)] == [
        2, 2, 1, 1, 0, 0
    ]  # fmt: skip
    proxy = pyramid.read_proxy(40)
    assert proxy.shape == (40, 40, 1) and proxy.dtype == np.uint8
    area_means = gradient.reshape(40, 25, 40, 25).mean(axis=(1, 3))  # each proxy pixel's area
    assert np.abs(proxy[..., 0] - area_means).max() <= 2.5  # the levels round, then resize
    assert idle_levels(pyramid) == [2]  # level 0 was never opened for pixels


def test_a_proxy_larger_than_the_image_is_upsampled(rgb_pyramid: PyramidTIFF) -> None:
    assert rgb_pyramid.read_proxy(1200).shape == (1200, 1200, 3)
