"""Photo sets (MIT-Adobe FiveK or your own): conversion to pyramid TIFFs, the index, the split,
the datamodule, and the CLI (``varsac data mit5k``, ``varsac fit experiment=mit5k``)."""

import os
import re
import signal
import subprocess
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import pyvips
import torch

from conftest import (
    DEEP_TIFF_VALUE,
    PHOTO_CLASSES,
    PHOTO_SIZES,
    VARSAC,
    varsac,
    write_photo_folder,
)
from varsac.data.labelled_files import stratified_split
from varsac.data.photo_conversion import convert_photos, find_photos, summary
from varsac.data.photo_index import INDEX_COLUMNS, IndexRow, read_index, write_index
from varsac.data.photos import PhotoDataModule
from varsac.errors import ConfigError
from varsac.files import partial_files
from varsac.pyramid import PyramidTIFF

PHOTOS = len(PHOTO_CLASSES) * len(PHOTO_SIZES) + 1  # and the 16-bit TIFF; broken.jpg fails


def solid_photo(path: Path, columns: list[tuple[int, tuple[int, int, int]]], height: int) -> Path:
    """A PNG of vertical stripes: (width, colour) from left to right."""
    stripes = [np.full((height, width, 3), colour, np.uint8) for width, colour in columns]
    path.parent.mkdir(parents=True, exist_ok=True)
    pyvips.Image.new_from_array(np.concatenate(stripes, axis=1)).pngsave(str(path))
    return path


SMALL_CLASSES = ("cats", "dogs", "owls")


def write_small_photo_set(root: Path, per_class: int) -> Path:
    """``SMALL_CLASSES`` as class folders of ``per_class`` JPEGs each (``photo<i>.jpg``, a
    colour per class with noise, 100 to 300 pixels a side). Returns ``root``."""
    rng = np.random.default_rng(0)
    for number, name in enumerate(SMALL_CLASSES):
        (root / name).mkdir(parents=True)
        colour = np.array([100 * number, 255 - 100 * number, 128])
        for index in range(per_class):
            width, height = rng.integers(100, 301, size=2)
            pixels = (colour + rng.normal(0, 20, (height, width, 3))).clip(0, 255)
            image = pyvips.Image.new_from_array(pixels.astype(np.uint8))
            image.jpegsave(str(root / name / f"photo{index}.jpg"))
    return root


# ---------------------------------------------------------------------- conversion


def test_every_photo_becomes_a_square_srgb_pyramid_listed_in_the_index(
    converted_photos: Path, photo_folder: Path
) -> None:
    rows = read_index(converted_photos)
    assert len(rows) == PHOTOS
    assert (converted_photos / "index.csv").read_text().splitlines()[0] == ",".join(INDEX_COLUMNS)
    assert Counter(row.label for row in rows) == {
        **{name: len(PHOTO_SIZES) for name in PHOTO_CLASSES},
        "nature": len(PHOTO_SIZES) + 1,
    }
    for row in rows:
        pyramid = PyramidTIFF(converted_photos / row.path)
        assert pyramid.levels == [(512, 512), (256, 256)]
        assert pyramid.channels == 3
        assert Path(row.source).parent.name == row.label
        assert row.path == f"images/{row.label}/{Path(row.source).stem}.tif"
    assert "animals/broken.jpg" not in {Path(r.source).relative_to(photo_folder) for r in rows}
    # a class's colour survives conversion (the fixture's photos are noisy solid colours)
    people = next(r for r in rows if r.label == "people")
    mean = PyramidTIFF(converted_photos / people.path).read_level(1).mean(axis=(0, 1))
    np.testing.assert_allclose(mean, [200, 55, 194], atol=4)


def test_a_broken_photo_is_reported_by_path_and_the_rest_convert(
    photo_folder: Path, tmp_path: Path
) -> None:
    conversion = convert_photos(photo_folder, tmp_path, size=64, val=0.25, test=0.25)
    ((failed, reason),) = conversion.failures
    assert failed == photo_folder / "animals" / "broken.jpg"
    assert "premature end of JPEG" in reason
    assert conversion.converted == PHOTOS and conversion.already_done == 0
    ((outside, reason),) = conversion.skipped  # skipped: listed, but no failure
    assert outside == photo_folder / "notes.txt" and reason.startswith("not in a class folder")
    assert partial_files(tmp_path) == []


def test_a_16_bit_tiff_keeps_the_high_byte_of_each_sample(converted_photos: Path) -> None:
    (row,) = [r for r in read_index(converted_photos) if r.source.endswith("deep.tif")]
    pixels = PyramidTIFF(converted_photos / row.path).read_level(0)
    expected = [value >> 8 for value in DEEP_TIFF_VALUE]  # 156, 78, 3
    assert (pixels == expected).all()


def test_an_embedded_colour_profile_is_converted_to_srgb(tmp_path: Path) -> None:
    srgb = np.full((90, 120, 3), (200, 60, 40), np.uint8)
    image = pyvips.Image.new_from_array(srgb, interpretation="srgb")
    display_p3 = image.icc_transform("p3", input_profile="srgb")  # embeds the P3 profile
    (tmp_path / "src" / "red").mkdir(parents=True)
    display_p3.pngsave(str(tmp_path / "src" / "red" / "p3.png"))
    assert abs(display_p3.getpoint(0, 0)[1] - 60) > 5  # the stored values are not sRGB
    convert_photos(tmp_path / "src", tmp_path / "dst", size=32, val=0, test=0)
    pixels = PyramidTIFF(tmp_path / "dst" / "images" / "red" / "p3.tif").read_level(0)
    np.testing.assert_allclose(pixels.reshape(-1, 3).mean(axis=0), [200, 60, 40], atol=2)


@pytest.mark.parametrize(
    ("fit", "left", "middle_row", "top_row"),
    [
        ("resize", (0, 255, 0), (0, 255, 0), (0, 255, 0)),  # stretched: green at the left
        ("crop", (128, 128, 128), (128, 128, 128), (128, 128, 128)),  # the grey centre
        ("pad", (0, 255, 0), (0, 255, 0), (0, 0, 0)),  # black above and below
    ],
)
def test_fit_squares_a_wide_photo(
    tmp_path: Path,
    fit: str,
    left: tuple[int, ...],
    middle_row: tuple[int, ...],
    top_row: tuple[int, ...],
) -> None:
    # 400×200: 100 green columns, 200 grey, 100 red
    columns = [(100, (0, 255, 0)), (200, (128, 128, 128)), (100, (255, 0, 0))]
    solid_photo(tmp_path / "src" / "wide" / "stripes.png", columns, height=200)
    convert_photos(tmp_path / "src", tmp_path / "dst", size=256, fit=fit, val=0, test=0)
    pixels = PyramidTIFF(tmp_path / "dst" / "images" / "wide" / "stripes.tif").read_level(0)
    assert pixels.shape == (256, 256, 3)
    assert tuple(pixels[128, 5]) == left
    assert tuple(pixels[128, 20]) == middle_row
    assert tuple(pixels[3, 20]) == top_row
    assert tuple(pixels[128, 128]) == (128, 128, 128)


def test_a_rerun_converts_nothing_twice(converted_photos: Path, photo_folder: Path) -> None:
    tiffs = sorted((converted_photos / "images").rglob("*.tif"))
    before = {path: path.stat().st_mtime_ns for path in tiffs}
    again = convert_photos(photo_folder, converted_photos, size=512, val=0.25, test=0.25)
    assert (again.converted, again.already_done, len(again.failures)) == (0, PHOTOS, 1)
    assert {path: path.stat().st_mtime_ns for path in tiffs} == before
    assert again.rows == read_index(converted_photos)


def test_other_settings_into_the_same_folder_are_refused(
    converted_photos: Path, photo_folder: Path
) -> None:
    with pytest.raises(ConfigError, match=r"size: 512 → 1024"):
        convert_photos(photo_folder, converted_photos, size=1024)


@pytest.mark.slow
def test_a_killed_conversion_leaves_no_half_written_tiff_and_resumes(tmp_path: Path) -> None:
    sizes = ((1600, 1200),) * 4  # 24 photos that take a while at 1024²
    src = write_photo_folder(tmp_path / "src", sizes)
    args = ["data", "mit5k", f"src={src}", f"dst={tmp_path / 'dst'}", "size=1024", "workers=1"]
    env = {**os.environ, "VARSAC_OUTPUT_DIR": str(tmp_path / "outputs")}
    process = subprocess.Popen(
        [str(VARSAC), *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    images = tmp_path / "dst" / "images"
    deadline = time.monotonic() + 120
    while not list(images.rglob("*.tif")) and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = {path: path.stat().st_mtime_ns for path in images.rglob("*.tif")}
    total = len(PHOTO_CLASSES) * len(sizes) + 1
    assert 0 < len(done) < total
    for path in done:  # every TIFF under its final name is complete
        assert PyramidTIFF(path).read_level(0).shape == (1024, 1024, 3)
    result = varsac(*args, cwd=tmp_path, check=False)
    assert result.returncode == 1  # broken.jpg
    log = result.stdout + result.stderr
    assert (
        f"{total + 1 - len(done)} to convert" in log
    )  # and broken.jpg again and f"{len(done)} converted before" in log
    assert {path: path.stat().st_mtime_ns for path in done} == done
    assert len(list(images.rglob("*.tif"))) == total and partial_files(tmp_path / "dst") == []


def test_a_csv_of_paths_and_labels_is_an_input(photo_folder: Path, tmp_path: Path) -> None:
    outside = solid_photo(tmp_path / "elsewhere" / "photo0.png", [(64, (9, 9, 9))], height=48)
    listing = tmp_path / "labels.csv"
    listing.write_text(
        "path,label,comment\n"
        f"{photo_folder / 'people' / 'photo0.jpg'},portrait,absolute and outside the CSV's folder\n"
        "elsewhere/photo0.png,dark,relative to the CSV\n"
    )
    conversion = convert_photos(listing, tmp_path / "dst", size=64, val=0, test=0)
    assert sorted((r.label, Path(r.source).resolve()) for r in conversion.rows) == [
        ("dark", outside.resolve()),
        ("portrait", (photo_folder / "people" / "photo0.jpg").resolve()),
    ]
    assert {r.path.split("/")[1] for r in conversion.rows} == {"elsewhere", "external"}


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda root: root / "missing", FileNotFoundError, "does not exist"),
        (lambda root: root, ConfigError, "no photos found"),
        (lambda root: _write(root / "x.csv", "file,class\na.jpg,b\n"), ConfigError, "path,label"),
        (lambda root: _write(root / "x.csv", "path,label\na.jpg,\n"), ConfigError, "line 2"),
        (
            lambda root: _write(root / "x.csv", "path,label,split\na.jpg,b,test\nc.jpg,b,Test\n"),
            ConfigError,
            r"x\.csv line 3: split 'Test' is not one of train, val, test",
        ),
        (
            lambda root: _twins(root),
            ConfigError,
            r"both be converted to images/cats/a\.tif",
        ),
    ],
)
def test_bad_inputs_are_named(tmp_path: Path, make, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        find_photos(make(tmp_path))


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _twins(root: Path) -> Path:
    solid_photo(root / "cats" / "a.png", [(8, (0, 0, 0))], height=8)
    pyvips.Image.new_from_file(str(root / "cats" / "a.png")).jpegsave(str(root / "cats" / "a.jpg"))
    return root


# ---------------------------------------------------------------------- the split


def test_the_split_is_stratified_seeded_and_stable_per_class() -> None:
    labels = ["cat"] * 50 + ["dog"] * 30 + ["owl"] * 7
    splits = stratified_split(labels, val=0.1, test=0.2, seed=0)
    counts = Counter(zip(labels, splits, strict=True))
    assert [counts["cat", s] for s in ("train", "val", "test")] == [35, 5, 10]
    assert [counts["dog", s] for s in ("train", "val", "test")] == [21, 3, 6]
    assert [counts["owl", s] for s in ("train", "val", "test")] == [5, 1, 1]
    assert stratified_split(labels, 0.1, 0.2, seed=0) == splits
    assert stratified_split(labels, 0.1, 0.2, seed=1) != splits
    with_more = stratified_split([*labels, "yak", "yak"], 0.1, 0.2, seed=0)
    assert with_more[: len(labels)] == splits
    with pytest.raises(ConfigError, match="leave some for train"):
        stratified_split(labels, val=0.5, test=0.5, seed=0)


def test_a_small_class_still_gives_each_split_a_photo() -> None:
    labels = ["ant"] * 2 + ["bee"] * 3 + ["cat"] * 4 + ["dog"] * 9
    counts = Counter(zip(labels, stratified_split(labels, 0.1, 0.2, seed=0), strict=True))
    table = {name: [counts[name, s] for s in ("train", "val", "test")] for name in set(labels)}
    # 2 photos are too few for one in each split; 9 keep round(9·0.1) = 1, round(9·0.2) = 2
    assert table == {"ant": [2, 0, 0], "bee": [1, 1, 1], "cat": [2, 1, 1], "dog": [6, 1, 2]}
    no_val = Counter(stratified_split(["bee"] * 3, 0, 0.2, seed=0))
    assert no_val == {"train": 2, "test": 1}
    assert stratified_split(["owl"], 0.3, 0.6, seed=0) == ["train"]  # one always trains
    assert Counter(stratified_split(["yak"] * 4, 0.4, 0.5, seed=0)) == {
        "train": 1,
        "val": 2,
        "test": 1,
    }


@pytest.mark.parametrize("per_class", [3, 4])
def test_three_or_four_photos_a_class_give_one_to_val_and_one_to_test(
    tmp_path: Path, per_class: int
) -> None:
    src = write_small_photo_set(tmp_path / "src", per_class)
    conversion = convert_photos(src, tmp_path / "dst", size=32)  # val=0.1, test=0.2
    counts = Counter((row.label, row.split) for row in conversion.rows)
    for name in SMALL_CLASSES:
        assert [counts[name, s] for s in ("train", "val", "test")] == [per_class - 2, 1, 1]
    assert read_index(tmp_path / "dst") == conversion.rows


def test_a_set_too_small_to_split_is_refused_in_one_line_before_converting(tmp_path: Path) -> None:
    src = write_small_photo_set(tmp_path / "src", per_class=2)
    with pytest.raises(ConfigError) as refused:
        convert_photos(src, tmp_path / "dst", size=32)
    message = str(refused.value)
    assert "\n" not in message
    assert re.search(r"too small to split: .* no photo goes to val or test \(", message)
    assert "smallest classes, by photos to draw: cats (2), dogs (2), owls (2)" in message
    assert "add photos, or give the photos their split in a CSV's split column" in message
    assert not (tmp_path / "dst").exists()


def test_a_csv_split_column_is_kept_and_only_the_rest_drawn(tmp_path: Path) -> None:
    src = write_small_photo_set(tmp_path / "src", per_class=4)
    given = {"cats/photo0.jpg": "test", "cats/photo1.jpg": "test", "dogs/photo2.jpg": "val"}
    given["owls/photo3.jpg"] = "train"
    paths = [f"{name}/photo{index}.jpg" for name in SMALL_CLASSES for index in range(4)]
    listing = src / "labels.csv"
    listing.write_text(
        "path,label,split\n"
        + "".join(f"{path},{path.split('/')[0]},{given.get(path, '')}\n" for path in paths)
    )
    conversion = convert_photos(listing, tmp_path / "dst", size=32, val=0.1, test=0.2, seed=3)
    split_of = {Path(row.source).relative_to(src).as_posix(): row.split for row in conversion.rows}
    assert {path: split_of[path] for path in given} == given
    undrawn = [path for path in paths if path not in given]
    drawn = stratified_split([path.split("/")[0] for path in undrawn], 0.1, 0.2, seed=3)
    assert [split_of[path] for path in undrawn] == drawn
    # cats have 2 photos to draw (both train), dogs and owls 3 (one to each split)
    assert Counter(drawn) == {"train": 2 + 1 + 1, "val": 1 + 1, "test": 1 + 1}
    line = "split: 1 train / 1 val / 2 test from the CSV's split column, 8 drawn"
    assert f"{line} (val=0.1, test=0.2, seed 3)\n" in summary(conversion, tmp_path / "dst")


def test_a_csv_split_column_without_val_photos_is_refused_while_val_is_asked_for(
    tmp_path: Path,
) -> None:
    src = write_small_photo_set(tmp_path / "src", per_class=1)
    listing = src / "labels.csv"
    listing.write_text("path,label,split\ncats/photo0.jpg,cats,train\ndogs/photo0.jpg,dogs,test\n")
    with pytest.raises(ConfigError, match=r"no photo goes to val .*give some photos the split val"):
        convert_photos(listing, tmp_path / "dst", size=32)
    assert convert_photos(listing, tmp_path / "dst", size=32, val=0).rows  # none asked for


# ---------------------------------------------------------------------- the datamodule


def test_the_datamodule_batches_pyramids_proxies_and_class_indices(converted_photos: Path) -> None:
    datamodule = PhotoDataModule(str(converted_photos), batch_size=4, proxy_size=32)
    assert datamodule.class_names == list(PHOTO_CLASSES) and datamodule.num_classes == 6
    datamodule.setup("fit")
    sizes = {split: len(datamodule.datasets[split]) for split in ("train", "val")}
    assert sizes == {"train": 13, "val": 6}
    batch = next(iter(datamodule.train_dataloader()))
    assert all(isinstance(image, PyramidTIFF) for image in batch["image"])
    assert batch["proxy"].shape == (4, 3, 32, 32) and batch["proxy"].dtype == torch.float32
    assert batch["proxy"].min() >= 0 and batch["proxy"].max() <= 1
    for image, proxy, target in zip(batch["image"], batch["proxy"], batch["target"], strict=True):
        assert image.path.parent.name == PHOTO_CLASSES[target]
        expected = torch.from_numpy(image.read_proxy(32)).permute(2, 0, 1).float() / 255
        assert torch.equal(proxy, expected)


def test_classes_default_to_those_found(converted_photos: Path) -> None:
    found = PhotoDataModule(str(converted_photos), classes=None)
    assert found.class_names == sorted(PHOTO_CLASSES)


def test_an_unknown_class_is_named(converted_photos: Path) -> None:
    with pytest.raises(ValueError, match=r"class\(es\) \['people'\].*data\.classes=null"):
        PhotoDataModule(str(converted_photos), classes=list(PHOTO_CLASSES[:-1]))


def test_a_missing_index_or_tiff_says_what_to_do(converted_photos: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="varsac data mit5k src=PHOTOS"):
        PhotoDataModule(str(tmp_path))
    rows = [replace(r, path=str(converted_photos / r.path)) for r in read_index(converted_photos)]
    gone = IndexRow("images/people/gone.tif", "people", "val", "gone.jpg")
    write_index(tmp_path, [*rows, gone])
    datamodule = PhotoDataModule(str(tmp_path))
    datamodule.setup("test")  # the test split has all its files
    with pytest.raises(FileNotFoundError, match=r"gone\.tif: run `varsac data mit5k` again"):
        datamodule.setup("validate")


def test_an_index_with_an_empty_split_is_a_config_error(
    converted_photos: Path, tmp_path: Path
) -> None:
    # as an older varsac wrote for a small set: no photo held out for validation
    rows = [
        replace(
            r, path=str(converted_photos / r.path), split="train" if r.split == "val" else r.split
        )
        for r in read_index(converted_photos)
    ]
    write_index(tmp_path, rows)
    datamodule = PhotoDataModule(str(tmp_path))
    with pytest.raises(
        ConfigError, match=r"index\.csv has no val photos: convert the photos again"
    ) as error:
        datamodule.setup("fit")
    assert "\n" not in str(error.value)


# ---------------------------------------------------------------------- the CLI


@pytest.mark.slow
def test_data_command_usage_and_errors(tmp_path: Path) -> None:
    assert "mit5k" in varsac("data", cwd=tmp_path).stdout
    unknown = varsac("data", "nope", cwd=tmp_path, check=False)
    assert unknown.returncode == 2 and "unknown dataset 'nope'" in unknown.stderr
    no_src = varsac("data", "mit5k", cwd=tmp_path, check=False)
    assert no_src.returncode == 1 and "src" in no_src.stderr
    assert "Traceback" not in no_src.stderr


@pytest.mark.slow
def test_convert_then_fit_mit5k_from_the_command_line(photo_folder: Path, tmp_path: Path) -> None:
    dst = tmp_path / "mit5k"
    convert = varsac(
        "data", "mit5k", f"src={photo_folder}", f"dst={dst}", "size=512", "val=0.25",
        "test=0.25", cwd=tmp_path, check=False,
    )  # fmt: skip
    assert convert.returncode == 1, convert.stderr
    summary = convert.stdout[convert.stdout.index("varsac data mit5k finished") :]
    assert re.search(r"people +2 +1 +1 +4\n", summary)  # train, val, test, total
    assert f"split: {PHOTOS} drawn per class (val=0.25, test=0.25, seed 0)\n" in summary
    assert f"failed: {photo_folder / 'animals' / 'broken.jpg'}" in summary
    assert "1 photo(s) could not be converted" in convert.stderr
    fit = varsac(
        "fit", "experiment=mit5k", f"data.root={dst}", "data.batch_size=4",
        "model.crop_classifier.channels=[8,16]", "trainer.fast_dev_run=true", cwd=tmp_path,
    )  # fmt: skip
    assert "val/balanced_accuracy" in fit.stdout


@pytest.mark.slow
def test_twelve_photos_in_three_folders_convert_and_fit_with_the_default_split(
    tmp_path: Path,
) -> None:
    # the user's case: round(4·0.1) = 0 val photos per class once made fit fail
    src = write_small_photo_set(tmp_path / "src", per_class=4)
    dst = tmp_path / "small"
    varsac("data", "mit5k", f"src={src}", f"dst={dst}", "size=128", cwd=tmp_path)
    assert Counter(row.split for row in read_index(dst)) == {"train": 6, "val": 3, "test": 3}
    fit = varsac(
        "fit", "experiment=mit5k", f"data.root={dst}", "data.classes=null",
        "trainer.max_epochs=1", "data.batch_size=4", "model.crop_classifier.channels=[8,16]",
        cwd=tmp_path,
    )  # fmt: skip
    assert "val/balanced_accuracy" in fit.stdout and "test/accuracy" in fit.stdout


@pytest.mark.slow
def test_a_set_too_small_to_split_is_one_line_from_the_command_line(tmp_path: Path) -> None:
    src = write_small_photo_set(tmp_path / "src", per_class=2)
    refused = varsac(
        "data", "mit5k", f"src={src}", f"dst={tmp_path / 'dst'}", cwd=tmp_path, check=False
    )
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    (line,) = refused.stderr.strip().splitlines()
    assert line.startswith("varsac data mit5k: ") and "too small to split" in line
    assert not (tmp_path / "dst").exists()
