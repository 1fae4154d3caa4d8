"""Every image format the installed libvips reads: which files are images (``image_files``),
their pixels through the photo conversion and ``varsac predict`` (real CLI), what failed and
what was skipped and where that is recorded, and StarCraft frames and minimaps in WebP."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import pyvips
import torch
from PIL import Image

from conftest import varsac
from varsac.data.photo_conversion import convert_photos, find_photos, summary
from varsac.data.pyramid_conversion import write_srgb_pyramid
from varsac.data.starcraft.dataset import StarCraftDataModule, read_minimaps
from varsac.image_files import check_file, named_format, picture_loaders, readable_formats
from varsac.predict import find_images
from varsac.pyramid import PyramidTIFF

RED = (200, 30, 30)
WIDTH, HEIGHT = 240, 120  # landscape, so that turning upright shows
# what the installed libvips has: the answers of libvips itself, not of the code under test
HAS_SVG_LOADER = pyvips.type_find("VipsOperation", "svgload") != 0


def can_save_heif(compression: str) -> bool:
    """Whether this libvips's heifsave encodes ``compression`` (av1: AVIF, hevc: HEIC)."""
    try:
        pyvips.Image.black(16, 16, bands=3).heifsave_buffer(compression=compression)
    except pyvips.Error:
        return False
    return True


def red_image() -> pyvips.Image:
    return pyvips.Image.new_from_array(np.full((HEIGHT, WIDTH, 3), RED, np.uint8), "srgb")


def write_images(folder: Path) -> dict[str, tuple[int, int, int]]:
    """One picture per format this libvips writes or reads, into ``folder``; returns
    {file name: the sRGB colour its converted pixels should have}."""
    folder.mkdir(parents=True)
    red = red_image()
    expected = {}
    red.webpsave(str(folder / "webp.webp"), Q=95)
    red.gifsave(str(folder / "gif.gif"))
    expected |= {"webp.webp": RED, "gif.gif": RED}
    for compression, name in (("av1", "avif.avif"), ("hevc", "heic.heic")):
        if can_save_heif(compression):
            red.heifsave(str(folder / name), compression=compression, Q=90)
            expected[name] = RED
    # half transparent: flattened onto black, so half the colour
    red.bandjoin_const([128]).pngsave(str(folder / "alpha.png"))
    expected["alpha.png"] = (100, 15, 15)
    deep = np.full((HEIGHT, WIDTH, 3), (40_000, 20_000, 1_000), np.uint16)
    pyvips.Image.new_from_array(deep, interpretation="rgb16").pngsave(str(folder / "deep.png"))
    expected["deep.png"] = (156, 78, 3)  # the high bytes
    red.colourspace("cmyk").jpegsave(str(folder / "cmyk.jpg"))
    expected["cmyk.jpg"] = RED
    rotated = red.copy()
    rotated.set_type(pyvips.GValue.gint_type, "orientation", 6)  # turn 90° clockwise to view
    rotated.jpegsave(str(folder / "rotated.jpg"))
    expected["rotated.jpg"] = RED
    (folder / "drawing.svg").write_text(
        '<svg xmlns="http://www.w3.org/2000/svg" width="300" height="200">'
        '<rect width="300" height="200" fill="rgb(200,30,30)"/></svg>'
    )
    if HAS_SVG_LOADER:
        expected["drawing.svg"] = RED
    return expected


def write_non_images(folder: Path) -> None:
    """Files that are no image, or that are broken ones, into ``folder``."""
    red_image().jpegsave(str(folder / "whole.jpg"))
    whole = (folder / "whole.jpg").read_bytes()
    (folder / "whole.jpg").unlink()
    (folder / "broken.jpg").write_bytes(whole[: len(whole) // 2])
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.jpg").write_text("a text file named like a JPEG")
    (folder / "notes.csv").write_text("width,height\n240,120\n")
    (folder / "notes.txt").write_text("not a photo")


@pytest.fixture(scope="module")
def formats(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, tuple]]:
    """SRC/mixed/: every picture of ``write_images`` and the files of ``write_non_images``, and
    README.md outside the class folders; with the colours expected."""
    src = tmp_path_factory.mktemp("formats")
    expected = write_images(src / "mixed")
    write_non_images(src / "mixed")
    (src / "README.md").write_text("photos of red things")
    return src, expected


# ---------------------------------------------------------------------- which files are images


def test_the_fixtures_are_what_they_claim(formats: tuple[Path, dict]) -> None:
    folder = formats[0] / "mixed"
    cmyk = pyvips.Image.new_from_file(str(folder / "cmyk.jpg"))
    assert (cmyk.bands, cmyk.interpretation) == (4, "cmyk")
    rotated = pyvips.Image.new_from_file(str(folder / "rotated.jpg"))
    assert rotated.get("orientation") == 6 and (rotated.width, rotated.height) == (WIDTH, HEIGHT)
    assert pyvips.Image.new_from_file(str(folder / "deep.png")).format == "ushort"
    assert pyvips.Image.new_from_file(str(folder / "alpha.png")).hasalpha()
    assert pyvips.Image.new_from_file(str(folder / "gif.gif")).get("palette")
    assert (folder / "avif.avif").exists() == can_save_heif("av1")
    assert (folder / "heic.heic").exists() == can_save_heif("hevc")


def test_libvips_decides_which_files_are_images(formats: tuple[Path, dict]) -> None:
    src, expected = formats
    folder = src / "mixed"
    for name in expected:
        assert check_file(folder / name).is_image, name
    # a loader takes it: that it does not decode shows when it is read
    assert check_file(folder / "broken.jpg").is_image
    empty, text = check_file(folder / "empty.jpg"), check_file(folder / "text.jpg")
    assert (empty.kind, empty.reason) == ("failed", "empty file (0 bytes)")
    assert text.kind == "failed"
    assert text.reason == "not JPEG data: libvips recognises no image in it"
    table = check_file(folder / "notes.csv")  # csvload takes any *.csv: not a picture
    assert table.kind == "skipped" and "table of numbers (csvload)" in table.reason
    notes = check_file(folder / "notes.txt")
    assert notes.kind == "skipped" and "no libvips loader recognises it" in notes.reason
    assert readable_formats() in notes.reason  # which formats libvips does read
    svg = check_file(folder / "drawing.svg")
    assert svg.is_image == HAS_SVG_LOADER
    if not HAS_SVG_LOADER:
        assert svg.kind == "skipped" and "SVG" not in readable_formats()


def test_the_loaders_are_this_libvips_s_picture_loaders() -> None:
    loaders = picture_loaders()
    assert {"jpegload", "pngload", "tiffload", "webpload", "gifload"} <= loaders
    assert ("svgload" in loaders) == HAS_SVG_LOADER
    assert not {"csvload", "matrixload", "rawload"} & loaders
    assert "WEBP" in readable_formats().split(", ")


def test_a_suffix_names_a_format_through_libvips() -> None:
    assert named_format(Path("x.JPG")) == "JPEG"
    assert named_format(Path("x.tif")) == "TIFF"
    assert named_format(Path("x.avif")) == "HEIF"  # AVIF is HEIF with AV1 inside
    assert named_format(Path("x.svg")) == ("SVG" if HAS_SVG_LOADER else None)
    assert named_format(Path("notes.csv")) is None
    assert named_format(Path("notes.txt")) is None
    assert named_format(Path("README")) is None


def test_a_matrix_of_numbers_in_a_text_file_is_no_image(tmp_path: Path) -> None:
    numbers = tmp_path / "numbers.txt"
    numbers.write_text("2 2\n1 2\n3 4\n")  # what matrixload takes
    check = check_file(numbers)
    assert check.kind == "skipped" and "table of numbers (matrixload)" in check.reason


# ---------------------------------------------------------------------- pixels


def test_an_exif_rotated_jpeg_is_converted_upright(formats: tuple[Path, dict], tmp_path: Path):
    write_srgb_pyramid(formats[0] / "mixed" / "rotated.jpg", tmp_path / "rotated.tif")
    assert PyramidTIFF(tmp_path / "rotated.tif").levels[0] == (HEIGHT, WIDTH)


def test_photos_of_every_format_convert_and_the_rest_are_listed(
    formats: tuple[Path, dict], tmp_path: Path
) -> None:
    src, expected = formats
    folder = src / "mixed"
    dst = tmp_path / "dst"
    conversion = convert_photos(src, dst, size=64, fit="pad", val=0, test=0)
    converted = {Path(row.source).name: dst / row.path for row in conversion.rows}
    assert set(converted) == set(expected)
    for name, colour in expected.items():
        pixels = PyramidTIFF(converted[name]).read_level(0)
        # fit=pad: a landscape image leaves black above and below, an upright one beside
        middle = pixels[28:36, 28:36].reshape(-1, 3).mean(axis=0)
        # to CMYK and back through libvips's CMYK profile: near the colour, not on it
        tolerance = 20 if name == "cmyk.jpg" else 4
        np.testing.assert_allclose(middle, colour, atol=tolerance, err_msg=name)
    upright = PyramidTIFF(converted["rotated.jpg"]).read_level(0)
    assert upright[32, 2].max() < 10 and upright[2, 32].min() > 20  # black beside, red above
    landscape = PyramidTIFF(converted["gif.gif"]).read_level(0)
    assert landscape[2, 32].max() < 10 and landscape[32, 2].min() > 20
    cmyk = PyramidTIFF(converted["cmyk.jpg"]).read_level(0)[32, 32]
    assert cmyk[0] > 150 and cmyk[1:].max() < 80  # reddish sRGB

    failures = dict(conversion.failures)
    assert set(failures) == {folder / "broken.jpg", folder / "empty.jpg", folder / "text.jpg"}
    assert "premature end of JPEG" in failures[folder / "broken.jpg"]
    assert failures[folder / "empty.jpg"] == "empty file (0 bytes)"
    assert failures[folder / "text.jpg"].startswith("not JPEG data")
    skipped = dict(conversion.skipped)
    not_images = {folder / "notes.csv", folder / "notes.txt"}
    if not HAS_SVG_LOADER:
        not_images.add(folder / "drawing.svg")
    assert set(skipped) == not_images | {src / "README.md"}
    assert skipped[src / "README.md"] == "not in a class folder SRC/<class>/"

    with (dst / "not_converted.csv").open(newline="") as handle:
        listed = list(csv.DictReader(handle))
    assert [(Path(r["path"]), r["outcome"], r["reason"]) for r in listed] == [
        *((path, "failed", reason) for path, reason in sorted(failures.items())),
        *((path, "skipped", reason) for path, reason in sorted(skipped.items())),
    ]
    text = summary(conversion, dst)
    assert f"{len(failures)} failed, {len(skipped)} skipped;" in text
    assert f"failed: {folder / 'empty.jpg'}: empty file (0 bytes)" in text
    assert f"skipped: {folder / 'notes.txt'}: no libvips loader recognises it" in text
    assert f"files not converted, and why: {dst / 'not_converted.csv'}" in text


def test_a_csv_that_lists_a_file_that_is_no_image_fails_it(
    formats: tuple[Path, dict], tmp_path: Path
) -> None:
    listing = tmp_path / "labels.csv"
    folder = formats[0] / "mixed"
    listing.write_text(f"path,label\n{folder / 'webp.webp'},red\n{folder / 'notes.txt'},red\n")
    photos, failed, skipped = find_photos(listing)
    assert [p.source for p in photos] == [folder / "webp.webp"]
    assert list(failed) == [folder / "notes.txt"] and skipped == {}


@pytest.mark.slow
def test_skipped_files_alone_do_not_fail_the_data_command(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_images(src / "red")
    (src / "red" / "notes.txt").write_text("not a photo")
    dst = tmp_path / "dst"
    result = varsac(
        "data", "mit5k", f"src={src}", f"dst={dst}", "size=32", "val=0", "test=0", cwd=tmp_path
    )
    assert f"skipped: {src / 'red' / 'notes.txt'}: no libvips loader" in result.stdout
    assert "0 failed, 1 skipped;" in result.stdout


# ---------------------------------------------------------------------- varsac predict


@pytest.mark.slow
def test_predict_reads_every_format_and_lists_failed_and_skipped_files(
    checkpoint: Path, formats: tuple[Path, dict], tmp_path: Path
) -> None:
    src, expected = formats
    folder = src / "mixed"
    result = varsac(
        "predict", f"ckpt_path={checkpoint}", f"input={folder}", "samples=0", "pictures=false",
        cwd=tmp_path, data_dir=tmp_path / "cache", check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr  # three files failed
    log = result.stdout + result.stderr
    (run,) = (tmp_path / "outputs" / "predict").iterdir()
    document = json.loads((run / "predictions.json").read_text())
    predicted = {Path(p["path"]).name: p for p in document["predictions"]}
    assert set(predicted) == set(expected)
    failed = {Path(path).name: reason for path, reason in document["failed"].items()}
    assert set(failed) == {"broken.jpg", "empty.jpg", "text.jpg"}
    assert "premature end of JPEG" in failed["broken.jpg"]  # found by a loader, not decoded
    assert failed["empty.jpg"] == "empty file (0 bytes)"
    assert failed["text.jpg"] == "not JPEG data: libvips recognises no image in it"
    skipped = {Path(path).name for path in document["skipped"]}
    assert skipped == {"notes.csv", "notes.txt"} | (set() if HAS_SVG_LOADER else {"drawing.svg"})
    assert f"FAILED {folder / 'empty.jpg'}: empty file (0 bytes)" in log
    assert f"SKIPPED {folder / 'notes.csv'}: libvips reads it as a table of numbers" in log
    assert f"{len(expected)} predicted, 3 failed, {len(skipped)} skipped (not images);" in log
    for box in predicted["rotated.jpg"]["glimpses"]:  # pixels of the upright image, 120 wide
        assert box["left"] + box["width"] <= HEIGHT + 0.1
        assert box["top"] + box["height"] <= WIDTH + 0.1


@pytest.mark.slow
def test_predict_with_skipped_files_alone_succeeds(
    checkpoint: Path, formats: tuple[Path, dict], tmp_path: Path
) -> None:
    folder = tmp_path / "inputs"
    folder.mkdir()
    (folder / "webp.webp").write_bytes((formats[0] / "mixed" / "webp.webp").read_bytes())
    (folder / "notes.txt").write_text("not a photo")
    (folder / ".hidden.jpg").write_text("a hidden file: left out, as no input")
    result = varsac(
        "predict", f"ckpt_path={checkpoint}", f"input={folder}", "samples=0", "pictures=false",
        cwd=tmp_path, data_dir=tmp_path / "cache",
    )  # fmt: skip
    (run,) = (tmp_path / "outputs" / "predict").iterdir()
    document = json.loads((run / "predictions.json").read_text())
    assert [Path(p["path"]).name for p in document["predictions"]] == ["webp.webp"]
    assert document["failed"] == {} and list(document["skipped"]) == [str(folder / "notes.txt")]
    assert "1 predicted, 0 failed, 1 skipped" in result.stdout + result.stderr


def test_a_folder_without_a_readable_image_is_one_line_of_error(tmp_path: Path) -> None:
    write_non_images(tmp_path)
    (tmp_path / "broken.jpg").unlink()  # a loader takes it: it would count as an image
    with pytest.raises(FileNotFoundError) as raised:
        find_images(tmp_path)
    message = str(raised.value)
    assert "no image files that libvips reads in this folder" in message and "\n" not in message
    assert readable_formats() in message
    with pytest.raises(FileNotFoundError, match=r"empty\.jpg: empty file \(0 bytes\)"):
        find_images(tmp_path / "empty.jpg")


# ---------------------------------------------------------------------- StarCraft


def test_minimaps_in_png_read_as_before_and_webp_alike(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "rgb.png")
    Image.fromarray(pixels[..., 0]).save(tmp_path / "grey.png")
    Image.fromarray(pixels).convert("P").save(tmp_path / "palette.png")
    pyvips.Image.new_from_array(pixels).webpsave(str(tmp_path / "rgb.webp"), lossless=True)
    for size in (64, 48, 100):
        for name in ("rgb.png", "grey.png", "palette.png"):
            # what read_minimaps gave when PIL decoded the minimaps
            with Image.open(tmp_path / name) as image:
                before = image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
            expected = torch.from_numpy(np.array(before)).permute(2, 0, 1).float() / 255
            assert torch.equal(read_minimaps([tmp_path / name], size)[0], expected), name
    webp, png = read_minimaps([tmp_path / "rgb.webp", tmp_path / "rgb.png"], 64)
    assert torch.equal(webp, png)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.png cannot be read: empty file \(0 bytes\)"):
        read_minimaps([tmp_path / "rgb.png", tmp_path / "empty.png"], 64)


def test_starcraft_frames_and_minimaps_in_webp(tmp_path: Path) -> None:
    root = tmp_path / "sc2"
    (root / "fullscreen").mkdir(parents=True)
    (root / "minimap").mkdir()
    lines = ["fullscreen_img,minimap_img,marine_count"]
    for index in range(10):
        frame = np.full((96, 96, 3), 10 * index, np.uint8)
        minimap = np.full((64, 64, 3), 20 * index, np.uint8)
        pyvips.Image.new_from_array(frame).webpsave(
            str(root / "fullscreen" / f"{index}.webp"), lossless=True
        )
        pyvips.Image.new_from_array(minimap).webpsave(
            str(root / "minimap" / f"{index}.webp"), lossless=True
        )
        lines.append(f"fullscreen/{index}.webp,minimap/{index}.webp,{index}")
    (root / "predictions.csv").write_text("\n".join(lines) + "\n")
    data = StarCraftDataModule(
        str(root), str(tmp_path / "pyramids"), batch_size=2, val=0.2, test=0.2
    )
    data.prepare_data()
    data.setup("fit")
    val = data.datasets["val"]  # frames 6 and 7
    assert torch.equal(val.proxies[:, :, 0, 0], torch.tensor([[120.0] * 3, [140.0] * 3]) / 255)
    assert [int(image.read_level(0).mean()) for image in val.images] == [60, 70]
