"""The benchmark scripts run end to end on tiny settings (their real runs are in docs/)."""

import json
import os
import shlex
import subprocess
import sys
from datetime import date
from itertools import pairwise
from pathlib import Path

import pytest
from PIL import Image

from conftest import SMALL

pytestmark = pytest.mark.slow  # whole runs: make test-fast leaves them out

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"


def test_table1_compares_the_three_models_on_a_small_pyramid(
    tmp_path: Path, mnist_dir: Path
) -> None:
    output = tmp_path / "table1.json"
    command = [
        sys.executable, str(BENCHMARKS / "table1.py"), "--size", "256", "--tile-size", "96",
        "--tiles-per-side", "3", "--batches", "1", "2", "--train-batches", "2",
        "--naive-batches", "1", "--repeats", "1", "--json", str(output),
    ]  # fmt: skip
    env = {**os.environ, "VARSAC_DATA_DIR": str(mnist_dir)}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "the paper (2528², batch 160, GPUs)" in result.stdout
    table = json.loads(output.read_text())
    measured = table["measured"]
    saccade = measured["variational saccading"]
    checkpointed = measured["resnet18, tiled, checkpointed"]
    naive = measured["resnet18, tiled, naive"]
    assert set(saccade) == set(checkpointed) == {"infer_1", "infer_2", "train_2"}
    assert set(naive) == {"infer_1", "train_1"}
    assert naive["train_1"]["overrides"] == ["model.tile_batch=null", "model.checkpoint=false"]
    assert checkpointed["infer_1"]["parameters"] > 11e6 > saccade["infer_1"]["parameters"]
    for row in [*saccade.values(), *checkpointed.values(), *naive.values()]:
        assert row["images_per_s"] > 0 and row["working_mib"] > 0
    ratios = table["ratios"]
    assert set(ratios["resnet18, tiled, naive"]) == {"infer_1"}  # the saccades ran no train_1
    assert ratios["resnet18, tiled, checkpointed"]["infer_1"]["speedup"] == (
        saccade["infer_1"]["images_per_s"] / checkpointed["infer_1"]["images_per_s"]
    )


def test_fit_runs_reads_each_run_back_and_merges_rows_by_name(
    tmp_path: Path, mnist_dir: Path
) -> None:
    output = tmp_path / "rows.json"
    overrides = " ".join([*SMALL, "trainer.max_epochs=2"])
    env = {**os.environ, "VARSAC_DATA_DIR": str(mnist_dir), "OMP_NUM_THREADS": "1"}

    def fit_runs(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, str(BENCHMARKS / "fit_runs.py"), "--json", str(output), *args]
        result = subprocess.run(
            command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
        )
        assert result.returncode == 0, result.stderr
        return result

    # A file of the earlier layout: one machine for the document, none in its rows.
    elsewhere = {"cpu": "another CPU", "threads": 2, "torch": "2.0", "date": "2026-01-01"}
    old = {"name": "old", "command": "varsac fit", "minutes": None, "val_curve": [], "test": {}}
    output.write_text(json.dumps({"machine": elsewhere, "runs": [old]}))

    fit_runs("--run", f"tiny={overrides}", "--output-root", str(tmp_path / "runs"))
    document = json.loads(output.read_text())
    assert "machine" not in document  # each row names its own
    kept, row = document["runs"]
    assert kept == {**old, "machine": elsewhere}
    assert row["machine"]["cpu"] and row["machine"]["date"] == date.today().isoformat()
    assert row["name"] == "tiny"
    assert row["command"] == shlex.join(["varsac", "fit", *SMALL, "trainer.max_epochs=2"])
    assert [e["epoch"] for e in row["val_curve"]] == [0, 1]
    assert all(0 <= e["accuracy"] <= 1 and 0.2 <= e["crop_scale"] <= 0.5 for e in row["val_curve"])
    results = json.loads((Path(row["run_dir"]) / "results.json").read_text())["results"]
    assert row["test"]["accuracy"] == results["test/accuracy"]
    assert row["minutes"] > 0

    # The same run collected under another name: a second row, the first one kept as it was.
    printed = fit_runs("--collect", f"again={row['run_dir']}").stdout
    _, *rows = json.loads(output.read_text())["runs"]
    assert [r["name"] for r in rows] == ["tiny", "again"] and rows[0] == row
    assert rows[1]["val_curve"] == row["val_curve"]
    assert 0 < rows[1]["minutes"] <= row["minutes"]  # from fit.log, within the process's time
    assert "tiny" in printed and f"{row['test']['accuracy']:.4f}" in printed


def test_learning_curve_tests_on_the_clock_and_draws_where_the_model_looked(
    tmp_path: Path, mnist_dir: Path
) -> None:
    output, pictures = tmp_path / "curve.json", tmp_path / "saccades"
    command = [
        sys.executable, str(BENCHMARKS / "learning_curve.py"), "--experiments", "cluttered_mnist",
        "--minutes", "10", "--every", "0.0001", "--json", str(output), "--pictures",
        str(pictures), *SMALL[1:], "trainer.max_epochs=2",
    ]  # fmt: skip
    env = {**os.environ, "VARSAC_DATA_DIR": str(mnist_dir), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    (run,) = json.loads(output.read_text())["runs"]
    curve = run["curve"]
    # 200 canvases in batches of 50 for 2 epochs: 8 steps, each longer than 6 ms of training,
    # so each is tested; the budget (10 minutes) is never reached.
    assert [point["step"] for point in curve] == list(range(1, 9))
    assert all(0 < a["minutes"] < b["minutes"] < 10 for a, b in pairwise(curve))
    assert all(0 <= point["accuracy"] <= 1 for point in curve)
    assert all(0 < point["test_minutes"] < 10 for point in curve)
    drawn = sorted(pictures.iterdir())
    assert [path.name for path in drawn] == [
        f"cluttered_mnist_step{s:06d}.png" for s in range(1, 9)
    ]
    with Image.open(drawn[-1]) as sheet:
        assert sheet.height > sheet.width / 2  # six rows of samples, one under the other


def test_slides_compares_glimpse_reads_and_inference_on_a_small_slide(tmp_path: Path) -> None:
    output = tmp_path / "slides.json"
    command = [
        sys.executable, str(BENCHMARKS / "slides.py"), "--size", "3000", "--pyramid-size",
        "512", "--reads", "8", "--repeats", "1", "--batch-size", "2", "--json", str(output),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "OpenSlide read_region of the same box" in result.stdout
    table = json.loads(output.read_text())
    assert table["writes"]["slide_side"] == 3000 and table["writes"]["pyramid_side"] == 512
    reads = table["reads"]
    assert reads["glimpses"] == 8 and reads["lst_ms"] > 0 and reads["openslide_read_region_ms"] > 0
    low, high = reads["scale_bounds"]  # 150 and 1 200 µm at 0.5 µm per pixel of 3 000
    assert (low, high) == (150 / 0.5 / 3000, 1200 / 0.5 / 3000)
    inference = table["inference"]
    assert set(inference) == {"slide", "pyramid"}
    for row in inference.values():
        assert row["batch"] == 2 and row["images_per_s"] > 0 and row["peak_rss_mib"] > 0
    ratio = inference["slide"]["peak_rss_mib"] / inference["pyramid"]["peak_rss_mib"]
    assert table["memory_ratio"] == ratio


def test_megapixel_glimpses_places_each_glimpse_as_its_row_says(
    tmp_path: Path, mnist_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import numpy as np

    from megapixel_glimpses import GLIMPSES, PLACINGS, centres
    from varsac.data.megapixel_mnist import compose_canvas, image_generator, split_noise_bank
    from varsac.data.mnist import load_mnist

    digits = load_mnist(mnist_dir, sources=()).train
    canvas = compose_canvas(image_generator(0, "train", 3), digits, split_noise_bank(0, "train"))
    rng = np.random.default_rng(0)

    def inside(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:  # (T,) bool
        column, row = ((points + 1) / 2 * canvas.pixels.shape[0]).T
        top, left, bottom, right = boxes.T[:, :, None]
        return ((top <= row) & (row < bottom) & (left <= column) & (column < right)).any(0)

    placed = {placing: centres(canvas, placing, rng) for placing in PLACINGS}
    assert all(points.shape == (GLIMPSES, 2) for points in placed.values())
    on_digits = inside(placed["on the five digits"], canvas.digit_boxes)
    assert (
        on_digits[:5].all() and inside(placed["on the five digits"][5:], canvas.noise_boxes).all()
    )
    one = placed["on one digit of the class"]
    assert (
        inside(one[:1], canvas.digit_boxes[:3]).all() and inside(one[1:], canvas.noise_boxes).all()
    )
    things = np.concatenate([canvas.digit_boxes, canvas.noise_boxes])
    assert inside(placed["on things at random"], things).all()
    output = tmp_path / "glimpses.json"
    command = [
        sys.executable, str(BENCHMARKS / "megapixel_glimpses.py"), "--images", "40",
        "--steps", "50", "--draws", "1", "--data-dir", str(mnist_dir), "--json", str(output),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    rows = json.loads(output.read_text())["rows"]
    assert list(rows) == list(PLACINGS)
    assert all([p["step"] for p in row["curve"]] == [0, 50] for row in rows.values())


def test_megapixel_proxy_cuts_each_thing_out_of_the_proxy_and_ranks_them(
    tmp_path: Path, mnist_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import numpy as np

    from megapixel_proxy import patch_side, proxies_and_things, proxy_patches

    by_side, centres = proxies_and_things([3], [256], 0, str(mnist_dir))
    proxies = by_side[256]  # (1, 256, 256)
    patches = proxy_patches(proxies, centres)  # (1, 55, 1, k, k)
    k = patch_side(256)
    assert patches.shape == (1, 55, 1, k, k) and k % 2 == 1
    # Each patch's middle pixel is the proxy pixel under its thing's centre.
    row, column = np.floor(centres[0, 7] * 256 / 1500).astype(int)
    assert round(float(patches[0, 7, 0, k // 2, k // 2]) * 255) == proxies[0, row, column]
    assert (patches[0, :5].sum((1, 2, 3)) > 0).all()  # the digits show on the proxy
    output = tmp_path / "proxy.json"
    command = [
        sys.executable, str(BENCHMARKS / "megapixel_proxy.py"), "--images", "40", "--steps",
        "250", "--sides", "128", "--data-dir", str(mnist_dir), "--json", str(output),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(output.read_text())["rows"].values()
    assert [p["step"] for p in row["curve"]] == [0, 250]
    last = row["curve"][-1]
    assert 0 <= last["auc"] <= 1 and 0 <= last["digits_in_top"] <= 5
    assert 0 <= last["all_in_top"] <= 1


def test_megapixel_contrast_sees_what_a_glimpse_on_each_place_covers_and_the_prior_finds_digits(
    tmp_path: Path, mnist_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import torch

    from megapixel_contrast import in_view

    centres = torch.tensor([[[750.0, 750.0], [100.0, 1400.0]]])  # (row, column) of two things
    places = torch.tensor([[[0.0, 0.0], [0.86, -0.86], [0.0, 0.5]]])  # (x, y), normalised
    assert in_view(centres, places).tolist() == [[[True, False], [False, True], [False, False]]]
    output = tmp_path / "contrast.json"
    command = [
        sys.executable, str(BENCHMARKS / "megapixel_contrast.py"), "--images", "30",
        "--draws", "2", "--data-dir", str(mnist_dir), "--json", str(output),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    rows = json.loads(output.read_text())["rows"]
    even, likeliest = rows["drawn, κ = 0"], rows["likeliest (evaluation)"]
    assert likeliest["digits"] > 3 * even["digits"] + 1  # the prior finds the digits
    assert 0 <= even["any_class_digit"] <= likeliest["any_class_digit"] <= 1
    inhibited = rows["likeliest, inhibition of return"]
    assert likeliest["twice"] > 0.3 and inhibited["twice"] == 0  # no digit looked at twice
    assert inhibited["outnumbered"] >= likeliest["outnumbered"]


def test_greedy_squares_cover_a_squad_with_one_glimpse_and_spread_ones_with_several(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import numpy as np

    from starcraft_coverage import greedy_squares

    squad = np.array([[0.50, 0.50], [0.52, 0.55], [0.48, 0.53], [0.9, 0.1]])
    centres, seen = greedy_squares(squad, 0.1, 1)
    assert seen == 3 and np.abs(centres[0] - [0.5, 0.52]).max() < 0.06
    centres, seen = greedy_squares(squad, 0.1, 6)
    assert seen == 4 and len(centres) == 2  # it stops once every point is covered
    corners = np.array([[0.01, 0.01], [0.99, 0.99], [0.01, 0.99]])
    assert greedy_squares(corners, 0.3, 2)[1] == 2  # the squares reach the frame's edges


def test_starcraft_benchmarks_place_the_glimpses_and_count_from_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import numpy as np

    from starcraft_glimpses import GLIMPSES, centres

    rng = np.random.default_rng(0)
    units = np.array([[0.2, 0.2], [0.21, 0.22], [0.7, 0.7], [0.5, 0.1]])
    marines = units[:2]
    on_marines = centres(units, marines, 0.1, "on the marines", rng)
    assert on_marines.shape == (GLIMPSES, 2)
    assert (np.abs(on_marines[0] - marines).max(1) <= 0.05).all()  # one glimpse sees both
    on_units = centres(units, marines, 0.1, "on units at random", rng)
    assert all(any(np.allclose(c, u) for u in units) for c in on_units)
    coverage_json, glimpses_json = tmp_path / "coverage.json", tmp_path / "glimpses.json"
    for script, args in (
        ("starcraft_coverage.py", ["--frames", "40", "--json", str(coverage_json)]),
        ("starcraft_glimpses.py", ["--frames", "10", "--frame-size", "256", "--steps", "100",
                                   "--draws", "1", "--json", str(glimpses_json)]),
    ):  # fmt: skip
        command = [sys.executable, str(BENCHMARKS / script), *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr
    coverage = json.loads(coverage_json.read_text())["rows"]
    seen = [row["frames_with_marines"]["seen"] for row in coverage.values()]
    assert seen == sorted(seen) and seen[-1] == 1.0  # bigger glimpses see more, the largest all
    record = json.loads(glimpses_json.read_text())
    assert list(record["rows"]) == ["on the marines", "on units at random", "at random"]
    for row in record["rows"].values():
        assert [p["step"] for p in row["curve"]] == [0, 100]
        assert all(0 <= p["balanced_accuracy"] <= 1 and p["mae"] >= 0 for p in row["curve"])
    assert record["median_mae"] >= 0
