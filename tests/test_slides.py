"""Whole-slide images read through OpenSlide (``varsac.slides``), on slides generated here."""

import pickle
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import pyvips
import torch
from torch.utils.data import DataLoader

from test_lst import as_batch
from test_pyramid import Regions, random_rectangles
from varsac import slides as slides_module
from varsac.image_source import SquareView
from varsac.models.localized_spatial_transformer import LocalizedSpatialTransformer, choose_level
from varsac.models.spatial_transformer import SpatialTransformer, crops_from_latents
from varsac.pyramid import PyramidTIFF, write_pyramid
from varsac.slides import Slide, SlideError, open_image_source, reads_as_slide, square_view


def read_spy(slide: Slide) -> list[int]:
    """The levels ``slide`` reads from from now on, one entry per ``read_region``."""
    levels = []
    original = slide.read_region

    def spy(level: int, left: int, top: int, width: int, height: int) -> np.ndarray:
        levels.append(level)
        return original(level, left, top, width, height)

    slide.read_region = spy
    return levels


def grey(rgb: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) sRGB → (H, W, 1) grey, as libvips converts it."""
    image = pyvips.Image.new_from_array(np.ascontiguousarray(rgb), interpretation="srgb")
    return image.colourspace("b-w").numpy().reshape(*rgb.shape[:2], 1)


# ---------------------------------------------------------------------- layout and pixels


def test_an_svs_reads_back_its_levels_and_metadata(svs_slide: tuple[np.ndarray, Path]) -> None:
    _, path = svs_slide
    slide = Slide(path)
    assert slide.path == path and slide.vendor == "aperio" and slide.channels == 3
    assert slide.levels == [(1600, 1200), (800, 600), (400, 300), (200, 150)]
    assert slide.mpp == (0.499, 0.499) and slide.objective_power == 20
    assert slide.background == (255, 255, 255)  # Aperio files name none


def test_level_zero_is_the_pixels_written_and_halving_levels_those_of_the_tiff(
    svs_slide: tuple[np.ndarray, Path],
) -> None:
    pixels, path = svs_slide
    slide = Slide(path)
    np.testing.assert_array_equal(slide.read_level(0), pixels)
    np.testing.assert_array_equal(slide.read_region(0, 1001, 7, 300, 513), pixels[7:520, 1001:1301])
    # the same file read as a pyramid TIFF: its coarser pages, pixel for pixel
    as_tiff = PyramidTIFF(path)
    for rectangle in random_rectangles(slide.levels, 40, seed=1):
        np.testing.assert_array_equal(
            slide.read_region(*rectangle), as_tiff.read_region(*rectangle)
        )
    region = slide.read_region(0, 0, 0, 8, 8)
    assert region.dtype == np.uint8 and region.flags.writeable and region.flags.c_contiguous


def test_levels_of_quarters_with_odd_sizes(quarter_slide: tuple[list[np.ndarray], Path]) -> None:
    levels, path = quarter_slide
    slide = Slide(path)
    assert slide.vendor == "aperio" and slide.mpp == (0.25, 0.25) and slide.objective_power == 40
    assert slide.levels == [(1203, 901), (300, 225), (75, 56)]
    np.testing.assert_array_equal(slide.read_level(0), levels[0])
    for level in (1, 2):  # downsamples 4.007… and 16.06…: read whole from the origin, exact
        np.testing.assert_array_equal(slide.read_level(level), levels[level])
    # elsewhere placed at the nearest level-0 pixel and resampled by the rest (the module)
    # (at most half a level-0 pixel: an eighth of a level-1 one): far closer than a neighbour
    level1 = levels[1].astype(int)
    region = slide.read_region(1, 101, 57, 120, 90)
    difference = np.abs(region - level1[57:147, 101:221]).mean()
    assert difference < 0.3 * np.abs(level1[57:147, 102:222] - level1[57:147, 101:221]).mean()


def test_reads_outside_a_level_name_the_file(svs_slide: tuple[np.ndarray, Path]) -> None:
    slide = Slide(svs_slide[1])
    with pytest.raises(ValueError, match=r"slide\.svs: rectangle .* not inside level 1"):
        slide.read_region(1, 790, 0, 20, 20)
    with pytest.raises(ValueError, match=r"slide\.svs has levels 0\.\.3, level 4"):
        slide.read_region(4, 0, 0, 1, 1)


def test_transparent_pixels_are_flattened_onto_the_background(
    transparent_slide: tuple[np.ndarray, Path],
) -> None:
    rgba, path = transparent_slide
    slide = Slide(path)
    read = slide.read_level(0)
    assert read.shape == (200, 300, 3)
    assert (read[:, :50] == 255).all()  # transparent: white
    np.testing.assert_array_equal(read[:, 50:100], rgba[:, 50:100, :3])  # opaque: as written
    alpha = rgba[..., 3:].astype(float) / 255
    expected = rgba[..., :3] * alpha + 255 * (1 - alpha)  # the colour over white
    # OpenSlide premultiplies, openslide-python divides again: one level of rounding each way
    assert np.abs(read - expected).max() <= 1.5
    # a slide that names its background (some formats do, MIRAX among them): that colour
    on_blue = slide._flattened(rgba[:, :50], background=(0, 64, 255))
    assert (on_blue == np.array([0, 64, 255], np.uint8)).all()


def test_grey_reads_are_libvips_greys_of_the_colour_reads(
    svs_slide: tuple[np.ndarray, Path], transparent_slide: tuple[np.ndarray, Path]
) -> None:
    for _, path in (svs_slide, transparent_slide):
        colour, grey_slide = Slide(path), Slide(path, channels=1)
        assert grey_slide.channels == 1
        region = grey_slide.read_region(0, 20, 30, 150, 100)
        assert region.shape == (100, 150, 1)
        np.testing.assert_array_equal(region, grey(colour.read_region(0, 20, 30, 150, 100)))
    with pytest.raises(ValueError, match="3 channels"):
        Slide(svs_slide[1], channels=4)


# ---------------------------------------------------------------------- glimpses and proxies


@pytest.mark.parametrize("name", ["svs_slide", "quarter_slide"])
def test_level_zero_glimpses_and_gradients_equal_the_spatial_transformer(
    name: str, request: pytest.FixtureRequest
) -> None:
    pixels, path = request.getfixturevalue(name)
    level0 = pixels if name == "svs_slide" else pixels[0]
    torch.manual_seed(3)
    latents = (torch.randn(1, 6, 3, dtype=torch.float64) * 2).requires_grad_()
    crops = crops_from_latents(latents, 0.05, 0.9)
    # some crops across the border: zero padding outside, as grid_sample does
    shift = torch.tensor([0.0, 0.6, -0.4], dtype=torch.float64) * (torch.arange(6) % 2)[:, None]
    crops = crops + shift
    full = SpatialTransformer(window=24)(as_batch([level0]), crops)
    local = LocalizedSpatialTransformer(window=24, max_level=0)([Slide(path)], crops)
    assert (full - local).abs().max() < 1e-5
    weights = torch.randn_like(full)
    (grad_full,) = torch.autograd.grad((full * weights).sum(), latents, retain_graph=True)
    (grad_local,) = torch.autograd.grad((local * weights).sum(), latents)
    assert (grad_full - grad_local).abs().max() / grad_full.abs().max() < 1e-4
    assert (grad_local.abs().sum(dim=(0, 1)) > 0).all()  # scale and centre get gradients


def test_glimpses_read_the_coarsest_level_fine_enough_of_levels_of_quarters(
    quarter_slide: tuple[list[np.ndarray], Path],
) -> None:
    _, path = quarter_slide
    levels = Slide(path).levels  # (1203, 901), (300, 225), (75, 56)
    assert choose_level(levels, 1.0, 32) == 2  # 56 ≥ 32 a side
    assert choose_level(levels, 0.3, 32) == 1  # needs 107: 225
    assert choose_level(levels, 0.1, 32) == 0  # needs 320: more than level 1's 225
    slide = Slide(path)
    read = read_spy(slide)
    crops = torch.tensor([[[1.0, 0.0, 0.0], [0.3, 0.2, -0.1], [0.1, -0.5, 0.4]]])
    coarse = LocalizedSpatialTransformer(window=32)([slide], crops)
    assert read == [2, 1, 0]
    exact = LocalizedSpatialTransformer(window=32, max_level=0)([Slide(path)], crops)
    # the same crops, smoothed: close in mean, less noisy than point samples of noise
    assert (coarse.mean((2, 3, 4)) - exact.mean((2, 3, 4))).abs().max() < 0.03
    assert coarse[0, 0].std() < exact[0, 0].std()


def test_the_proxy_is_that_of_the_same_pixels_as_a_pyramid_tiff(
    svs_slide: tuple[np.ndarray, Path],
    quarter_slide: tuple[list[np.ndarray], Path],
    tmp_path: Path,
) -> None:
    pixels, path = svs_slide
    slide = Slide(path)
    read = read_spy(slide)
    proxy = slide.read_proxy(32)
    assert proxy.shape == (32, 32, 3) and proxy.dtype == np.uint8
    assert read == [3]  # the smallest level ≥ 32 a side (200×150), never level 0
    pyramid = PyramidTIFF(write_pyramid(pixels, tmp_path / "same.tif"))
    np.testing.assert_array_equal(proxy, pyramid.read_proxy(32))  # the same levels, resized
    np.testing.assert_array_equal(Slide(path, channels=1).read_proxy(16), grey_proxy(path, 16))
    # levels of quarters: the proxy of other averages of the same pixels, squashed to a square
    levels, path = quarter_slide
    pyramid = PyramidTIFF(write_pyramid(levels[0], tmp_path / "quarters.tif"))
    for size in (16, 48):
        difference = Slide(path).read_proxy(size).astype(int) - pyramid.read_proxy(size)
        assert np.abs(difference).mean() < 2
    assert Slide(path).read_proxy(1500).shape == (1500, 1500, 3)  # larger: level 0, upsampled


def grey_proxy(path: Path, size: int) -> np.ndarray:
    """The proxy of a slide's grey pixels: its level of ``proxy_level`` in grey, resized."""
    slide = Slide(path)
    level = slide.proxy_level(size)
    width, height = slide.levels[level]
    image = pyvips.Image.new_from_array(grey(slide.read_level(level)))
    return image.resize(size / width, vscale=size / height).numpy().reshape(size, size, 1)


# ---------------------------------------------------------------------- processes and threads


def test_a_pickled_slide_reads_the_same(svs_slide: tuple[np.ndarray, Path]) -> None:
    pixels, path = svs_slide
    opened = Slide(path, channels=1)
    opened.read_region(0, 0, 0, 8, 8)
    for copy in (pickle.loads(pickle.dumps(Slide(path))), pickle.loads(pickle.dumps(opened))):
        assert copy.levels == opened.levels and copy.mpp == (0.499, 0.499)
    copy = pickle.loads(pickle.dumps(Slide(path)))
    np.testing.assert_array_equal(copy.read_region(0, 10, 20, 30, 40), pixels[20:60, 10:40])
    assert pickle.loads(pickle.dumps(opened)).read_region(0, 0, 0, 9, 9).shape == (9, 9, 1)


def as_it_is(sample: object) -> object:
    """A DataLoader's collate function that a spawned worker can unpickle."""
    return sample


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_workers_read_what_the_parent_reads(
    context: str, quarter_slide: tuple[list[np.ndarray], Path]
) -> None:
    slide = Slide(quarter_slide[1])
    dataset = Regions(slide, random_rectangles(slide.levels, 32, seed=2))
    in_parent = [dataset[index] for index in range(len(dataset))]  # opened before the fork
    loader = DataLoader(
        dataset, batch_size=None, num_workers=2 if context == "fork" else 1,
        multiprocessing_context=context, collate_fn=as_it_is, timeout=120,
    )  # fmt: skip
    for (region, proxy), (expected_region, expected_proxy) in zip(loader, in_parent, strict=True):
        np.testing.assert_array_equal(region, expected_region)
        np.testing.assert_array_equal(proxy, expected_proxy)


def test_threads_share_one_handle_per_file(svs_slide: tuple[np.ndarray, Path]) -> None:
    path = svs_slide[1]
    shared, other = Slide(path), Slide(path)
    rectangles = random_rectangles(shared.levels, 200, seed=3)
    with ThreadPoolExecutor(8) as pool:
        threaded = list(
            pool.map(lambda i: (shared, other)[i % 2].read_region(*rectangles[i]), range(200))
        )
    for rectangle, region in zip(rectangles, threaded, strict=True):
        np.testing.assert_array_equal(region, shared.read_region(*rectangle))
    handles = slides_module._open_slides_of_this_process().handles
    file_id = shared._read_layout().file_id
    assert file_id in handles and sum(key == file_id for key in handles) == 1


def test_at_most_capacity_handles_stay_open(
    svs_slide: tuple[np.ndarray, Path],
    quarter_slide: tuple[list[np.ndarray], Path],
    generic_tiff: Path,
) -> None:
    handles = slides_module._OpenSlides(capacity=2, inherited=None)
    paths = [svs_slide[1], quarter_slide[1], generic_tiff]
    first = handles.get((0, 0, 0), paths[0])  # held, as by a read under way
    handles.get((0, 0, 1), paths[1])
    handles.get((0, 0, 2), paths[2])
    assert list(handles.handles) == [(0, 0, 1), (0, 0, 2)]  # the least recently used let go
    assert first.read_region((0, 0), 0, (4, 4)).size == (4, 4)  # closed only once let go of
    assert handles.get((0, 0, 1), paths[1]) is handles.get((0, 0, 1), paths[1])


# ---------------------------------------------------------------------- errors


def test_a_truncated_slide_is_named_in_one_line(
    svs_slide: tuple[np.ndarray, Path], tmp_path: Path
) -> None:
    truncated = tmp_path / "truncated.svs"
    data = svs_slide[1].read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(SlideError, match=r"truncated\.svs: .*copy it again") as raised:
        Slide(truncated).read_level(0)
    assert "\n" not in str(raised.value)


def test_undecodable_tiles_are_an_error_and_drop_the_handle(
    svs_slide: tuple[np.ndarray, Path], tmp_path: Path
) -> None:
    damaged = tmp_path / "damaged.svs"
    data = bytearray(svs_slide[1].read_bytes())
    for i in range(len(data) - 40):  # every deflate stream's data after its zlib header
        if data[i] == 0x78 and data[i + 1] in (0x01, 0x5E, 0x9C, 0xDA):
            data[i + 2 : i + 40] = bytes(38)
    damaged.write_bytes(data)
    slide = Slide(damaged)
    assert slide.levels[0] == (1600, 1200)  # the headers read
    with pytest.raises(SlideError, match=r"damaged\.svs: reading level 0 failed") as raised:
        slide.read_region(0, 0, 0, 64, 64)
    assert "\n" not in str(raised.value)
    # OpenSlide fails every call on a handle after its first error: it is let go of
    assert slide._read_layout().file_id not in slides_module._open_slides_of_this_process().handles


def test_missing_and_foreign_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nowhere\.svs"):
        Slide(tmp_path / "nowhere.svs")
    notes = tmp_path / "notes.svs"
    notes.write_text("not a slide")
    with pytest.raises(SlideError, match=r"notes\.svs: OpenSlide recognises no whole-slide"):
        Slide(notes).read_level(0)


def test_without_openslide_a_slide_says_what_to_install(
    svs_slide: tuple[np.ndarray, Path], generic_tiff: Path
) -> None:
    program = (
        "import sys\n"
        "sys.modules['openslide'] = None  # as if the slides extra were not installed\n"
        "from varsac.slides import Slide, SlideSupportMissing, open_image_source\n"
        "from varsac.pyramid import PyramidTIFF\n"
        f"assert isinstance(open_image_source({str(generic_tiff)!r}), PyramidTIFF)\n"
        "for opening in (Slide, open_image_source):\n"
        "    try:\n"
        f"        opening({str(svs_slide[1])!r})\n"
        "    except SlideSupportMissing as error:\n"
        "        print(error)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True
    )
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    for line in lines:
        assert "slide.svs: reading whole-slide images needs OpenSlide" in line
        assert 'pip install "varsac[slides]"' in line


def test_open_image_source_reads_slides_as_slides_and_tiffs_as_pyramids(
    svs_slide: tuple[np.ndarray, Path],
    quarter_slide: tuple[list[np.ndarray], Path],
    generic_tiff: Path,
    tmp_path: Path,
) -> None:
    for path in (svs_slide[1], quarter_slide[1]):
        assert reads_as_slide(path) and isinstance(open_image_source(path), Slide)
    assert not reads_as_slide(generic_tiff)  # OpenSlide's generic-tiff: read by PyramidTIFF
    assert isinstance(open_image_source(generic_tiff), PyramidTIFF)
    broken = tmp_path / "broken.svs"  # named like a slide: fails as one
    broken.write_bytes(svs_slide[1].read_bytes()[:5000])
    with pytest.raises(SlideError, match=r"broken\.svs"):
        open_image_source(broken).read_proxy(8)


# ---------------------------------------------------------------------- the square view


def padded(pixels: np.ndarray, background: np.ndarray) -> np.ndarray:
    """(H, W, C) padded on the right and bottom to a square with ``background``."""
    side = max(pixels.shape[:2])
    square = np.empty((side, side, pixels.shape[2]), np.uint8)
    square[...] = background
    square[: pixels.shape[0], : pixels.shape[1]] = pixels
    return square


def test_a_square_view_pads_every_level_with_the_background(
    quarter_slide: tuple[list[np.ndarray], Path],
) -> None:
    levels, path = quarter_slide
    slide = Slide(path)
    view = square_view(slide)
    assert view.levels == [(1203, 1203), (300, 300), (75, 75)] and view.channels == 3
    np.testing.assert_array_equal(view.background, [255, 255, 255])
    for level, pixels in enumerate(levels):
        np.testing.assert_array_equal(view.read_level(level), padded(pixels, view.background))
    # straddling the bottom border, wholly in the padding, and inside the source
    expected = padded(levels[0], view.background)
    for left, top, width, height in ((1000, 850, 203, 300), (0, 950, 40, 30), (7, 9, 50, 60)):
        np.testing.assert_array_equal(
            view.read_region(0, left, top, width, height),
            expected[top : top + height, left : left + width],
        )
    with pytest.raises(ValueError, match=r"not inside level 1 \(300×300\)"):
        view.read_region(1, 290, 0, 20, 5)
    grey_view = square_view(Slide(path, channels=1))
    assert grey_view.read_region(0, 0, 1000, 4, 4).shape == (4, 4, 1)
    assert (grey_view.read_region(0, 0, 1000, 4, 4) == 255).all()
    # a named background in grey: as a transparent pixel of that colour reads
    assert SquareView(slide, [0, 64, 255]).read_region(0, 0, 1100, 1, 1).tolist() == [
        [[0, 64, 255]]
    ]


def test_the_proxy_of_a_square_view_is_that_of_the_padded_square(
    quarter_slide: tuple[list[np.ndarray], Path], tmp_path: Path
) -> None:
    levels, path = quarter_slide
    view = square_view(Slide(path))
    read = read_spy(view.source)
    proxy = view.read_proxy(64)
    assert read == [2]  # the 75² level, never level 0
    assert proxy.shape == (64, 64, 3)
    expected = PyramidTIFF(write_pyramid(padded(levels[2], view.background), tmp_path / "p.tif"))
    np.testing.assert_array_equal(proxy, expected.read_proxy(64))
    assert (proxy[-8:] == 255).all()  # the padding below the tissue stays white
    assert view.proxy_level(76) == 1 and view.proxy_level(301) == 0
    # a square source: the view is the source itself
    square = PyramidTIFF(write_pyramid(levels[1][:, :225], tmp_path / "square.tif"))
    as_square = SquareView(square, 255)
    assert as_square.levels == square.levels
    np.testing.assert_array_equal(as_square.read_proxy(32), square.read_proxy(32))


def test_level_zero_glimpses_of_a_square_view_equal_the_spatial_transformer_on_padded_pixels(
    quarter_slide: tuple[list[np.ndarray], Path],
) -> None:
    levels, path = quarter_slide
    view = square_view(Slide(path))
    torch.manual_seed(4)
    latents = (torch.randn(2, 5, 3, dtype=torch.float64) * 2).requires_grad_()
    crops = crops_from_latents(latents, 0.05, 0.6)
    crops = crops + torch.tensor([0.0, 0.0, 0.7], dtype=torch.float64)  # some across the bottom
    square = padded(levels[0], view.background)
    full = SpatialTransformer(window=16)(as_batch([square, square]), crops)
    local = LocalizedSpatialTransformer(window=16, max_level=0)([view, view], crops)
    assert (full - local).abs().max() < 1e-5
    weights = torch.randn_like(full)
    (grad_full,) = torch.autograd.grad((full * weights).sum(), latents, retain_graph=True)
    (grad_local,) = torch.autograd.grad((local * weights).sum(), latents)
    assert (grad_full - grad_local).abs().max() / grad_full.abs().max() < 1e-4
    assert pickle.loads(pickle.dumps(view)).read_region(0, 1200, 0, 3, 3).shape == (3, 3, 3)
