"""``varsac predict`` on image files of any size, through the installed CLI."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import pyvips
import torch
from torch import nn

from conftest import varsac, write_images_to_predict
from varsac.checkpoint import load_checkpoint
from varsac.image_source import SquareView
from varsac.predict import find_images
from varsac.predictor import Predictor, pixel_boxes, readable_as_is
from varsac.pyramid import PyramidTIFF, write_pyramid
from varsac.slides import Slide

SAMPLES = "samples=4"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The images of ``write_images_to_predict`` (the PNG in a subfolder), a truncated JPEG
    and a text file."""
    root = write_images_to_predict(tmp_path_factory.mktemp("inputs"), png_folder="sub")
    (root / "broken.jpg").write_bytes((root / "a.jpg").read_bytes()[:2000])
    (root / "notes.txt").write_text("not an image")
    return root


def predict(*args: str, cwd: Path, check: bool = False) -> tuple[object, Path]:
    result = varsac("predict", *args, cwd=cwd, data_dir=cwd / "cache", check=check)
    runs = sorted((cwd / "outputs" / "predict").iterdir())
    return result, runs[-1]


def rows(run: Path) -> list[dict[str, str]]:
    with open(run / "predictions.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_predicts_every_readable_image_and_names_the_broken_one(
    checkpoint: Path, inputs: Path, tmp_path: Path
) -> None:
    result, run = predict(f"ckpt_path={checkpoint}", f"input={inputs}", SAMPLES, cwd=tmp_path)
    assert result.returncode == 1  # one image failed
    log = result.stdout + result.stderr
    assert "broken.jpg" in log and "3 predicted, 1 failed, 1 skipped (not images);" in log
    table = rows(run)
    assert [Path(row["path"]).name for row in table] == ["a.jpg", "c.tif", "b.png"]
    for row in table:
        probabilities = [float(row[str(digit)]) for digit in range(10)]
        assert sum(probabilities) == pytest.approx(1, abs=1e-3)
        assert float(row["probability"]) == max(probabilities)
        assert float(row["spread"]) > 0  # four posterior samples disagree a little
        assert row["prediction"].startswith("{")  # two digits: a set
    document = json.loads((run / "predictions.json").read_text())
    assert list(document["failed"]) == [str(inputs / "broken.jpg")]
    assert list(document["skipped"]) == [str(inputs / "notes.txt")]  # no image: listed, no failure
    assert set(document["seconds"]) == {"loading the model", "converting"}
    assert all(p["seconds"] > 0 for p in document["predictions"])
    sizes = {"a.jpg": (1000, 700), "c.tif": (1200, 1200), "b.png": (300, 300)}
    for prediction in document["predictions"]:
        width, height = sizes[Path(prediction["path"]).name]
        assert [g["step"] for g in prediction["glimpses"]] == [1, 2, 3, 4]
        for box in prediction["glimpses"]:  # pixels of the original image, inside it
            assert box["left"] >= 0 and box["left"] + box["width"] <= width + 0.1
            assert box["top"] >= 0 and box["top"] + box["height"] <= height + 0.1
            # crop sides are fractions of the side in [min_scale, max_scale] = [0.2, 0.5]
            assert 0.2 * width - 0.1 <= box["width"] <= 0.5 * width + 0.1
    pictures = sorted(p.name for p in (run / "saccades").iterdir())
    assert pictures == ["a.png", "c.png", "sub__b.png"]


@pytest.mark.slow
def test_conversions_are_cached_and_pyramids_read_as_they_are(
    checkpoint: Path, inputs: Path, tmp_path: Path
) -> None:
    first, run = predict(f"ckpt_path={checkpoint}", f"input={inputs}", SAMPLES, cwd=tmp_path)
    cached = sorted((tmp_path / "cache" / "predict_pyramids").iterdir())
    assert len(cached) == 2  # a.jpg and b.png; c.tif is a pyramid already
    stamps = [p.stat().st_mtime_ns for p in cached]
    second, rerun = predict(f"ckpt_path={checkpoint}", f"input={inputs}", SAMPLES, cwd=tmp_path)
    assert "converting 3 of 4 images" in first.stderr + first.stdout
    # only the broken file is tried again
    assert "converting 1 of 4 images" in second.stderr + second.stdout
    assert [p.stat().st_mtime_ns for p in cached] == stamps
    assert rows(rerun) == rows(run)  # seeded posterior samples: the same answers


@pytest.mark.slow
def test_one_file_and_the_posterior_mean_alone(
    checkpoint: Path, inputs: Path, tmp_path: Path
) -> None:
    _, run = predict(
        f"ckpt_path={checkpoint}", f"input={inputs / 'a.jpg'}", "samples=0", "pictures=false",
        cwd=tmp_path, check=True,
    )  # fmt: skip
    (row,) = rows(run)
    assert float(row["spread"]) == 0
    assert not (run / "saccades").exists()


def damaged_pyramid(path: Path) -> Path:
    """A grey pyramid TIFF whose every tile is damaged: its headers and levels read, its pixels
    do not (each deflate stream's data after its two-byte zlib header is zeroed)."""
    rng = np.random.default_rng(1)
    data = bytearray(
        write_pyramid(rng.integers(0, 256, (600, 600), dtype=np.uint8), path).read_bytes()
    )
    for i in range(len(data) - 40):
        if data[i] == 0x78 and data[i + 1] in (0x01, 0x5E, 0x9C, 0xDA):
            data[i + 2 : i + 40] = bytes(38)
    path.write_bytes(data)
    return path


@pytest.mark.slow
def test_an_image_that_fails_in_its_batch_fails_alone(
    checkpoint: Path, inputs: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    for name in ("a.jpg", "c.tif"):
        (folder / name).write_bytes((inputs / name).read_bytes())
    damaged_pyramid(folder / "b_damaged.tif")  # between the two, in the same batch of 8
    mean = ["samples=0", "pictures=false"]  # the posterior mean: no seed in the comparison
    result, run = predict(f"ckpt_path={checkpoint}", f"input={folder}", *mean, cwd=tmp_path)
    assert result.returncode == 1
    assert [Path(row["path"]).name for row in rows(run)] == ["a.jpg", "c.tif"]
    document = json.loads((run / "predictions.json").read_text())
    assert list(document["failed"]) == [str(folder / "b_damaged.tif")]
    (reason,) = document["failed"].values()
    assert "b_damaged.tif" in reason and "reading level" in reason
    # the others are predicted as they are on their own
    _, alone = predict(
        f"ckpt_path={checkpoint}", f"input={inputs / 'c.tif'}", *mean, cwd=tmp_path, check=True
    )
    (expected,) = rows(alone)
    assert {**rows(run)[1], "path": ""} == {**expected, "path": ""}


@pytest.mark.slow
def test_bad_inputs_are_named(checkpoint: Path, inputs: Path, tmp_path: Path) -> None:
    missing, _ = predict(f"ckpt_path={checkpoint}", f"input={tmp_path / 'nope'}", cwd=tmp_path)
    assert missing.returncode != 0 and "nope: no such file or folder" in missing.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    none, _ = predict(f"ckpt_path={checkpoint}", f"input={empty}", cwd=tmp_path)
    assert none.returncode != 0 and "no image files" in none.stderr
    # a model whose proxy is another image (a StarCraft minimap) cannot predict from the image
    state = load_checkpoint(checkpoint)
    state["varsac_data"]["proxy_from_image"] = False
    minimap_model = tmp_path / "minimap.ckpt"
    torch.save(state, minimap_model)
    other, _ = predict(f"ckpt_path={minimap_model}", f"input={inputs}", cwd=tmp_path)
    assert other.returncode != 0 and "proxy" in other.stderr and "minimap.ckpt" in other.stderr


def test_boxes_become_pixels_of_the_original_image() -> None:
    (box,) = pixel_boxes(torch.tensor([[0.1, 0.2, 0.5, 0.6]]), 1000, 700)
    assert box == {"step": 1, "left": 100.0, "top": 140.0, "width": 400.0, "height": 280.0}


@pytest.mark.slow  # the checkpoint fixture trains a model first
def test_the_checkpoint_records_what_predict_needs(checkpoint: Path) -> None:
    data = load_checkpoint(checkpoint)["varsac_data"]
    assert data == {"class_names": None, "proxy_from_image": True}  # digits: named by index


def test_only_pyramids_with_the_models_channels_are_read_as_they_are(
    inputs: Path, tmp_path: Path
) -> None:
    assert readable_as_is(inputs / "c.tif", channels=1)  # a grey pyramid, a grey model
    assert not readable_as_is(inputs / "c.tif", channels=3)  # converted to RGB first
    assert not readable_as_is(inputs / "a.jpg", channels=3)
    flat = tmp_path / "flat.tif"
    pyvips.Image.new_from_array(np.zeros((64, 64), np.uint8)).tiffsave(str(flat))
    assert not readable_as_is(flat, channels=1)  # no coarser levels: converted


def test_slides_are_read_as_they_are_in_the_models_channels(
    svs_slide: tuple[np.ndarray, Path], tmp_path: Path
) -> None:
    """A slide becomes a Slide of the model's channels (grey for a grey model), seen through
    its square view (this one is 1600×1200), never a cached pyramid; other files are
    converted as before."""
    path = svs_slide[1]
    other = write_images_to_predict(tmp_path) / "a.jpg"
    for channels in (1, 3):
        predictor = Predictor(nn.Identity(), ["a"], 32, channels, "cpu", cache_dir=tmp_path / "c")
        read, failures = predictor.sources([path, other])
        assert failures == {} and list(read) == [path, other]
        view = read[path]
        assert isinstance(view, SquareView) and view.levels[0] == (1600, 1600)
        assert isinstance(view.source, Slide) and view.channels == channels
        assert isinstance(read[other], PyramidTIFF) and read[other].channels == channels
    assert len(list((tmp_path / "c").iterdir())) == 2  # the JPEG's conversions, no slide's
    resizing = Predictor(nn.Identity(), ["a"], 32, 3, "cpu", size=512, cache_dir=tmp_path / "c")
    _, failures = resizing.sources([path])
    assert "slide.svs: a whole-slide image is read at its own levels" in failures[path]
    assert "size unset" in failures[path]


def test_slides_that_libvips_does_not_read_are_inputs_too(
    svs_slide: tuple[np.ndarray, Path], tmp_path: Path
) -> None:
    """A folder with an SVS (a TIFF to libvips), a MIRAX index OpenSlide cannot open (no
    libvips loader knows .mrxs), a JPEG and a text file: the slides are images to predict;
    the bad one then fails with OpenSlide's reason, not libvips's; the text is skipped."""
    (tmp_path / "in").mkdir()
    folder = write_images_to_predict(tmp_path / "in")
    svs = folder / "slide.svs"
    svs.write_bytes(svs_slide[1].read_bytes())
    mirax = folder / "scan.mrxs"
    mirax.write_text("[GENERAL]\nSLIDE_VERSION = 01.02\n")  # its data folder is missing
    (folder / "notes.txt").write_text("not an image")
    found = find_images(folder)
    assert [p.name for p in found.images] == ["a.jpg", "b.png", "c.tif", "scan.mrxs", "slide.svs"]
    assert list(found.skipped) == [folder / "notes.txt"] and found.failed == {}
    assert find_images(mirax).images == [mirax]  # alone, too
    predictor = Predictor(nn.Identity(), ["a"], 32, 3, "cpu", cache_dir=tmp_path / "c")
    read, failures = predictor.sources([mirax, svs])
    assert isinstance(read[svs], SquareView) and list(failures) == [mirax]
    assert "OpenSlide recognises no whole-slide image" in failures[mirax]
    assert "no libvips loader" not in failures[mirax]


def test_a_pyramid_read_as_it_is_is_padded_to_a_square_as_in_training(tmp_path: Path) -> None:
    """A non-square pyramid TIFF with the model's channels is seen through its square view,
    as the index datamodule reads it (``model_view``); a converted non-square photo keeps its
    own shape (stretched by the glimpses, as ``data mit5k`` stretches photos)."""
    rng = np.random.default_rng(1)
    wide = write_pyramid(rng.integers(0, 256, (300, 500), dtype=np.uint8), tmp_path / "wide.tif")
    square = write_pyramid(rng.integers(0, 256, (400, 400), dtype=np.uint8), tmp_path / "sq.tif")
    photo = write_images_to_predict(tmp_path) / "a.jpg"  # 1000×700
    predictor = Predictor(nn.Identity(), ["a"], 32, 1, "cpu", cache_dir=tmp_path / "c")
    read, failures = predictor.sources([wide, square, photo])
    assert failures == {}
    assert isinstance(read[wide], SquareView) and read[wide].levels[0] == (500, 500)
    assert isinstance(read[square], PyramidTIFF) and read[square].path == square
    assert isinstance(read[photo], PyramidTIFF) and read[photo].levels[0] == (1000, 700)
    assert read[photo].path != photo  # converted to grey, in the cache


def test_slide_boxes_are_in_microns_too() -> None:
    (box,) = pixel_boxes(torch.tensor([[0.1, 0.2, 0.5, 0.6]]), 1000, 700, mpp=(0.5, 0.25))
    assert box == {
        "step": 1, "left": 100.0, "top": 140.0, "width": 400.0, "height": 280.0,
        "left_um": 50.0, "top_um": 35.0, "width_um": 200.0, "height_um": 70.0,
    }  # fmt: skip


@pytest.mark.slow
def test_a_slide_is_predicted_as_it_is_by_the_command_and_the_predictor(
    checkpoint: Path, svs_slide: tuple[np.ndarray, Path], tmp_path: Path
) -> None:
    """The grey MNIST model on an RGB slide of 1600×1200 at 0.499 µm per pixel, read in grey:
    boxes inside level 0, in microns too; nothing converted."""
    path = svs_slide[1]
    _, run = predict(
        f"ckpt_path={checkpoint}", f"input={path}", SAMPLES, "device=cpu", cwd=tmp_path, check=True
    )
    assert not (tmp_path / "cache" / "predict_pyramids").exists()  # the slide was not converted
    (prediction,) = json.loads((run / "predictions.json").read_text())["predictions"]
    assert prediction["path"] == str(path)
    assert sum(prediction["probabilities"].values()) == pytest.approx(1, abs=1e-3)
    assert [g["step"] for g in prediction["glimpses"]] == [1, 2, 3, 4]
    for box in prediction["glimpses"]:
        assert box["left"] >= 0 and box["left"] + box["width"] <= 1600 + 0.1
        assert box["top"] >= 0 and box["top"] + box["height"] <= 1200 + 0.1
        for key in ("left", "top", "width", "height"):
            assert box[f"{key}_um"] == pytest.approx(box[key] * 0.499, abs=0.1)
    assert (run / "saccades" / "slide.png").is_file()
    cache = tmp_path / "predictor_cache"
    predictor = Predictor.from_checkpoint(checkpoint, device="cpu", samples=4, cache_dir=cache)
    assert predictor.channels == 1  # a grey model: the slide is read in grey
    (mine,) = predictor(Slide(path))
    assert mine.probabilities == pytest.approx(prediction["probabilities"], abs=1e-5)
    assert mine.glimpses == prediction["glimpses"]
    assert not cache.exists()
