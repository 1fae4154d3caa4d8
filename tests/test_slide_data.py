"""Slides as a data set: the index (``varsac data slides``), the datamodule's batches and scale
bounds, the synthetic slides (``varsac data synthetic_slides``), training and predicting."""

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import SYNTHETIC_SLIDES_SMALL, rerun_after_a_kill, varsac
from varsac import Predictor
from varsac.checkpoint import save_initial_checkpoint
from varsac.data.glimpse_sizes import glimpse_scale_bounds
from varsac.data.photos import PhotoDataModule
from varsac.data.slide_index import index_slides
from varsac.data.synthetic_slides import (
    SlidePlan,
    generate_synthetic_slides,
    slide_plan,
    write_slide,
)
from varsac.errors import ConfigError
from varsac.image_source import SquareView
from varsac.pyramid import PyramidTIFF
from varsac.slides import Slide

SMALL_SET = SYNTHETIC_SLIDES_SMALL


def write_labels(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "split"])
        writer.writerows(rows)
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture
def slide_folder(
    tmp_path: Path,
    svs_slide: tuple[np.ndarray, Path],
    quarter_slide: tuple[list[np.ndarray], Path],
    generic_tiff: Path,
) -> Path:
    """Three copies each of the Aperio slides, a generic TIFF, a truncated slide and a note."""
    folder = tmp_path / "slides"
    folder.mkdir()
    for number in range(3):
        shutil.copy(svs_slide[1], folder / f"a{number}.svs")
        shutil.copy(quarter_slide[1], folder / f"q{number}.svs")
    shutil.copy(generic_tiff, folder / "g.tif")
    data = svs_slide[1].read_bytes()
    (folder / "truncated.svs").write_bytes(data[: len(data) // 2])
    (folder / "notes.svs").write_text("not a slide")
    return folder


# ---------------------------------------------------------------------- the index


def test_the_index_records_levels_resolution_and_splits(slide_folder: Path, tmp_path: Path) -> None:
    rows = [(f"a{n}.svs", "tumour", "") for n in range(3)]
    rows += [(f"q{n}.svs", "normal", "") for n in range(3)]
    rows += [(str(slide_folder / "g.tif"), "normal", "test")]  # absolute, its split given
    labels = write_labels(slide_folder / "labels.csv", rows)
    dst = tmp_path / "index"
    indexing = index_slides(labels, dst, val=0.2, test=0.2, seed=0)
    assert not indexing.failures
    index = {row["source"]: row for row in read_csv(dst / "index.csv")}
    a0, q0, g = (index[str(slide_folder / name)] for name in ("a0.svs", "q0.svs", "g.tif"))
    assert (a0["vendor"], a0["mpp_x"], a0["mpp_y"]) == ("aperio", "0.499", "0.499")
    assert a0["levels"] == "1600×1200 800×600 400×300 200×150"
    assert (q0["levels"], q0["mpp_x"]) == ("1203×901 300×225 75×56", "0.25")
    assert (g["vendor"], g["mpp_x"], g["split"]) == ("generic-tiff", "", "test")
    assert Path(a0["path"]) == (slide_folder / "a0.svs").resolve()  # outside dst: absolute
    # drawn per class: each class of three gives one to val and one to test
    for prefix in "aq":
        splits = sorted(index[str(slide_folder / f"{prefix}{n}.svs")]["split"] for n in range(3))
        assert splits == ["test", "train", "val"]
    again = index_slides(labels, tmp_path / "again", val=0.2, test=0.2, seed=0)
    assert [row.split for row in again.rows] == [row.split for row in indexing.rows]
    other = index_slides(labels, tmp_path / "other", val=0.2, test=0.2, seed=5)
    assert [row.split for row in other.rows] != [row.split for row in indexing.rows]
    assert read_csv(dst / "not_indexed.csv") == []
    # under dst, a slide is listed relative to it
    inside = index_slides(labels, slide_folder, val=0.2, test=0.2, seed=0)
    assert inside.rows[0].path == "a0.svs"
    data = PhotoDataModule(str(slide_folder), classes=None, proxy_size=16, batch_size=2)
    data.setup("test")
    sources = data.datasets["test"].images
    assert {type(source) for source in sources} == {SquareView, PyramidTIFF}  # g.tif: square


@pytest.mark.slow
def test_unreadable_slides_are_reported_by_path_and_the_command_exits_1(
    slide_folder: Path, tmp_path: Path
) -> None:
    rows = [(f"a{n}.svs", "tumour", "") for n in range(3)]
    rows += [(f"q{n}.svs", "normal", "") for n in range(3)]
    rows += [("truncated.svs", "tumour", "train"), ("notes.svs", "normal", "train")]
    labels = write_labels(slide_folder / "labels.csv", rows)
    dst = tmp_path / "index"
    result = varsac("data", "slides", f"src={labels}", f"dst={dst}", cwd=tmp_path, check=False)
    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert "2 slide(s) could not be read" in output
    assert f"unreadable: {slide_folder / 'truncated.svs'}: " in output
    assert f"{slide_folder / 'notes.svs'}: OpenSlide recognises no whole-slide image" in output
    failed = {row["path"]: row["reason"] for row in read_csv(dst / "not_indexed.csv")}
    assert set(failed) == {str(slide_folder / "truncated.svs"), str(slide_folder / "notes.svs")}
    assert "copy it again" in failed[str(slide_folder / "truncated.svs")]
    assert len(read_csv(dst / "index.csv")) == 6
    assert "tumour" in output and "total" in output  # the table by class and split


# ---------------------------------------------------------------------- the datamodule


def test_batches_carry_square_views_and_the_scale_bounds_of_microns(
    synthetic_slides_folder: Path,
) -> None:
    data = PhotoDataModule(
        str(synthetic_slides_folder), classes=["normal", "tumour"], proxy_size=32, batch_size=3,
        glimpse_microns=[100, 400],
    )  # fmt: skip
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    assert set(batch) == {"image", "proxy", "target", "scale_bounds"}
    assert batch["proxy"].shape == (3, 3, 32, 32) and batch["target"].dtype == torch.int64
    assert batch["scale_bounds"].dtype == torch.float32 and batch["scale_bounds"].shape == (3, 2)
    columns = (batch["image"], batch["proxy"], batch["scale_bounds"])
    for image, proxy, bounds in zip(*columns, strict=True):
        slide = image.source if isinstance(image, SquareView) else image
        assert isinstance(slide, Slide)
        side = max(slide.levels[0])
        assert image.levels[0] == (side, side)
        expected = [min(microns / (slide.mpp[0] * side), 1.0) for microns in (100, 400)]
        assert bounds.tolist() == pytest.approx(expected, rel=1e-6)
        np.testing.assert_allclose(
            proxy.permute(1, 2, 0).numpy(), image.read_proxy(32) / 255, atol=1e-6
        )
    pixels = PhotoDataModule(
        str(synthetic_slides_folder),
        classes=None,
        proxy_size=16,
        batch_size=8,
        glimpse_pixels=[64, 4000],
    )
    pixels.setup("test")
    for image, bounds in zip(
        pixels.datasets["test"].images, pixels.datasets["test"].scale_bounds, strict=True
    ):
        side = image.levels[0][0]
        assert bounds.tolist() == pytest.approx([64 / side, min(4000 / side, 1.0)])
    plain = PhotoDataModule(str(synthetic_slides_folder), classes=None, proxy_size=16)
    plain.setup("test")
    assert "scale_bounds" not in plain.datasets["test"][0]


def test_glimpse_sizes_are_checked_and_microns_need_a_resolution(generic_tiff: Path) -> None:
    with pytest.raises(ConfigError, match="both set"):
        glimpse_scale_bounds(PyramidTIFF(generic_tiff), microns=[1, 2], pixels=[1, 2])
    with pytest.raises(ConfigError, match=r"glimpse_pixels must be \[min, max\]"):
        glimpse_scale_bounds(PyramidTIFF(generic_tiff), pixels=[20, 10])
    with pytest.raises(ConfigError, match=r"generic\.tif.* does not say its microns per pixel"):
        glimpse_scale_bounds(PyramidTIFF(generic_tiff), microns=[50, 100])
    assert glimpse_scale_bounds(PyramidTIFF(generic_tiff), pixels=[60, 6000]) == (0.1, 1.0)


# ---------------------------------------------------------------------- the synthetic slides


def test_synthetic_slides_are_aperio_slides_with_their_labels_and_tumours(
    synthetic_slides_folder: Path,
) -> None:
    labels = read_csv(synthetic_slides_folder / "labels.csv")
    assert [row["split"] for row in labels].count("test") == SMALL_SET["test_n"]
    assert {row["split"] for row in labels} == {"train", "val", "test"}
    tumours = read_csv(synthetic_slides_folder / "tumours.csv")
    for row in labels:
        split, index = row["path"].split("/")[1], int(Path(row["path"]).stem)
        plan = slide_plan(0, split, index, SMALL_SET["sides"])
        slide = Slide(synthetic_slides_folder / row["path"])
        assert slide.vendor == "aperio" and slide.mpp == (plan.mpp, plan.mpp)
        assert slide.levels[0] == (plan.width, plan.height) and row["label"] == plan.label
        boxes = [box for box in tumours if box["path"] == row["path"]]
        assert (len(boxes) > 0) == (plan.label == "tumour")
        brightness = slide.read_level(0).astype(float).mean(-1)  # (H, W)
        outside = brightness < 235  # tissue, not glass
        for box in boxes:
            assert 100 <= float(box["width_um"]) <= 300
            left, top, side = (int(box[key]) for key in ("left", "top", "width"))
            outside[max(top, 0) : top + side, max(left, 0) : left + side] = False
        for box in boxes:  # the middle of a tumour is darker than the tissue outside them
            x, y = (int(box[key]) + int(box["width"]) // 4 for key in ("left", "top"))
            half = int(box["width"]) // 2
            middle = brightness[max(y, 0) : y + half, max(x, 0) : x + half]
            # (in slides this small, a tumour may reach beyond the tissue: the glass stays)
            assert middle[middle < 235].mean() < brightness[outside].mean() - 20


def test_a_rerun_after_a_kill_draws_only_the_missing_slide_the_same(
    synthetic_slides_folder: Path, tmp_path: Path
) -> None:
    again = rerun_after_a_kill(
        synthetic_slides_folder,
        tmp_path / "set",
        "slides/train/00002.svs",
        lambda dst: generate_synthetic_slides(dst, workers=1, **SMALL_SET),
    )
    assert (again.generated, again.already_done) == (1, 7)
    with pytest.raises(ConfigError, match=r"other settings \(seed: 0 → 1\)"):
        generate_synthetic_slides(tmp_path / "set", workers=1, **{**SMALL_SET, "seed": 1})


def test_more_training_slides_keep_the_test_slides(
    synthetic_slides_folder: Path, tmp_path: Path
) -> None:
    larger = generate_synthetic_slides(tmp_path / "more", workers=1, **{**SMALL_SET, "n": 7})
    tests = [row for row in larger.rows if row.split == "test"]
    for row in tests:
        written = (tmp_path / "more" / row.source).read_bytes()
        assert written == (synthetic_slides_folder / row.source).read_bytes()


@pytest.mark.slow
def test_a_slide_is_streamed_into_its_file(tmp_path: Path) -> None:
    plan = SlidePlan(8000, 6000, 0.5, "tumour", 0.45, (1, 2, 3, 4), ((4000, 3000, 500),))
    program = (
        "import resource, sys\n"
        "from pathlib import Path\n"
        "from varsac.data.synthetic_slides import SlidePlan, write_slide\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        f"write_slide(SlidePlan(*{tuple(vars(plan).values())!r}), Path(sys.argv[1]))\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)\n"
    )
    path = tmp_path / "big.svs"
    result = subprocess.run(
        [sys.executable, "-c", program, str(path)], capture_output=True, text=True, check=True
    )
    grown_mib = float(result.stdout.split()[-1])
    raw_mib = 8000 * 6000 * 3 / 2**20  # 137 MiB
    assert grown_mib < raw_mib / 2, f"the write grew by {grown_mib:.0f} MiB"
    slide = Slide(path)
    assert slide.levels[0] == (8000, 6000) and slide.mpp == (0.5, 0.5) and len(slide.levels) == 6
    write_slide(plan, tmp_path / "again.svs")
    assert (tmp_path / "again.svs").read_bytes() == path.read_bytes()  # deterministic


# ---------------------------------------------------------------------- training, predicting


@pytest.mark.slow
def test_fit_experiment_slides_on_generated_slides_from_the_command_line(
    tmp_path: Path,
) -> None:
    dst = tmp_path / "data" / "synthetic_slides"
    sides = f"sides=[{SMALL_SET['sides'][0]},{SMALL_SET['sides'][1]}]"
    varsac("data", "synthetic_slides", "n=6", "test_n=2", sides, "workers=1", cwd=tmp_path)
    varsac("data", "slides", f"src={dst / 'labels.csv'}", f"dst={dst}", cwd=tmp_path)
    result = varsac(
        "fit", "experiment=slides", "trainer.fast_dev_run=true", "data.batch_size=2",
        "model.crop_classifier.channels=[8,16]", "model.cropper.window=16", cwd=tmp_path,
    )  # fmt: skip
    assert "fast_dev_run" in result.stdout + result.stderr


def untrained_slide_checkpoint(path: Path) -> Path:
    """experiment=slides's model (narrow) with its initial weights, saved as varsac fit saves."""
    overrides = [
        "experiment=slides", "task.num_classes=2", "model.crop_classifier.channels=[8,16]",
        "model.cropper.window=16", "data.proxy_size=32",
        "model.proxy_encoder.channels=[8,16]", "model.vrnn.reconstruction_size=null",
    ]  # fmt: skip
    return save_initial_checkpoint(overrides, ["normal", "tumour"], path)


def test_predict_on_a_slide_with_glimpses_in_microns(
    quarter_slide: tuple[list[np.ndarray], Path], generic_tiff: Path, tmp_path: Path
) -> None:
    checkpoint = untrained_slide_checkpoint(tmp_path / "slides.ckpt")
    predictor = Predictor.from_checkpoint(checkpoint, device="cpu", samples=2)
    assert predictor.glimpse_microns == [150, 1200]
    (prediction,) = predictor(quarter_slide[1], pictures=True)
    side_um = 1203 * 0.25  # the square view's side: 300.75 µm, less than 1 200
    for glimpse in prediction.glimpses:
        assert 150 - 0.1 <= glimpse["width_um"] <= side_um + 0.1
        assert glimpse["width"] == glimpse["height"]  # squares of the square view
        assert glimpse["width_um"] == pytest.approx(glimpse["width"] * 0.25, abs=0.1)
    assert prediction.picture.image.shape[-2] == prediction.picture.image.shape[-1]
    with pytest.raises(ValueError, match=r"generic\.tif.* does not say its microns per pixel"):
        predictor(generic_tiff)
    record = json.dumps(prediction.record())
    assert "width_um" in record
