"""``varsac report``: sweeps summarised as a plot and a table, failures listed, not dropped."""

import json
import re
import statistics
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from conftest import varsac
from varsac.report import main, planned_jobs, read_sweep, setting_curve

# Smaller than conftest's SMALL: the report needs runs that log epochs, not a model that learns.
# The runs get one thread (OMP_NUM_THREADS=1): two threads of such small operations run tens of
# times slower while anything else keeps one of the two cores busy.
TINY = [
    "experiment=cluttered_mnist",
    "data.train_size=100",
    "data.val_size=50",
    "data.test_size=50",
    "data.batch_size=50",
    "model.proxy_encoder.channels=[8,16]",
    "model.proxy_encoder.feature_dim=32",
    "model.vrnn.hidden_dim=32",
    "model.crop_classifier.channels=[8,16]",
    "model.crop_classifier.hidden=32",
    "callbacks.saccade_pictures=null",
    "trainer.num_sanity_val_steps=0",
]
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def the_sweep(cwd: Path, name: str = "cluttered_mnist") -> Path:
    (sweep,) = (cwd / "outputs" / name / "multirun").iterdir()
    return sweep


def finished_result(job: Path, metric: str = "test/accuracy") -> float:
    return json.loads((job / "results.json").read_text())["results"][metric]


def write_multirun(sweep: Path, task: list[str], params: dict[str, str] | None = None) -> None:
    multirun = {
        "hydra": {
            "sweeper": {"_target_": BASIC_SWEEPER, "max_batch_size": None, "params": params},
            "overrides": {"hydra": ["hydra.mode=MULTIRUN"], "task": task},
        },
        "name": "toy",
        "seed": 0,
    }
    sweep.mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(multirun), sweep / "multirun.yaml")


def write_job(
    job: Path,
    overrides: list[str],
    val_accuracy: list[float],
    results: dict[str, float] | None,
    log_lines: tuple[str, ...] = ("[INFO] - starting", "[INFO] - done"),
    max_epochs: int = 3,
) -> None:
    """A job directory as ``varsac fit`` leaves it: a train and a validation row per epoch in
    metrics.csv, then the test row and results.json if the job finished."""
    (job / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(overrides), job / ".hydra" / "overrides.yaml")
    config = {"name": "toy", "trainer": {"max_epochs": max_epochs}}
    OmegaConf.save(OmegaConf.create(config), job / ".hydra" / "config.yaml")
    rows = ["epoch,step,train/loss_step,val/accuracy,test/accuracy"]
    for epoch, accuracy in enumerate(val_accuracy):
        rows += [f"{epoch},{4 * epoch + 3},2.5,,", f"{epoch},{4 * epoch + 3},,{accuracy},"]
    if results is not None:
        rows.append(f"{max_epochs},{4 * max_epochs},,,{results['test/accuracy']}")
    (job / "csv").mkdir()
    (job / "csv" / "metrics.csv").write_text("\n".join(rows) + "\n")
    (job / "fit.log").write_text("\n".join(log_lines) + "\n\n")
    if results is not None:
        document = {"results": results, "checkpoints": {"last": str(job / "last.ckpt")}}
        (job / "results.json").write_text(json.dumps(document))


def test_settings_mean_std_failed_and_never_started_of_a_hand_built_sweep(
    tmp_path: Path, capsys
) -> None:
    sweep = tmp_path / "multirun" / "2026-01-01_00-00-00"
    # Hydra's job order: the product of the overrides in order (seed, then model.beta).
    write_multirun(sweep, ["experiment=cluttered_mnist", "seed=0,1", "model.beta=0.1,1"])
    common = "experiment=cluttered_mnist"
    write_job(
        sweep / "0",
        [common, "seed=0", "model.beta=0.1"],
        [0.5, 0.7, 0.8],
        {"test/accuracy": 0.80, "val/accuracy_best": 0.82},
    )
    write_job(
        sweep / "1",
        [common, "seed=0", "model.beta=1"],
        [0.2],
        None,
        log_lines=(
            "[2026-11-26 10:00:00,000][varsac.train][INFO] - epoch 0",
            "[2026-11-26 10:00:01,000][varsac][ERROR] - varsac fit stopped: the train loss is nan",
            "no checkpoint was written yet",
        ),
    )
    write_job(
        sweep / "2",
        [common, "seed=1", "model.beta=0.1"],
        [0.3, 0.5, 0.9],
        {"test/accuracy": 0.90, "val/accuracy_best": 0.92},
    )
    # Job 3 (seed=1, model.beta=1) never started: no directory.

    read = read_sweep(sweep)
    assert [s.label for s in read.settings] == ["model.beta=0.1", "model.beta=1"]
    assert [[job.name for job in s.jobs] for s in read.settings] == [["0", "2"], ["1"]]
    epochs, mean, std = setting_curve(read.settings[0].finished)
    np.testing.assert_array_equal(epochs, [0, 1, 2])
    np.testing.assert_allclose(mean, [0.4, 0.6, 0.85])
    np.testing.assert_allclose(std, [0.2 / 2**0.5, 0.2 / 2**0.5, 0.1 / 2**0.5])
    assert read.never_started == [[common, "seed=1", "model.beta=1"]]

    assert main([str(sweep)]) == 0
    report = (sweep / "report" / "report.md").read_text()
    assert "| model.beta=0.1 | 0.8500 ± 0.0707 | 0.8700 ± 0.0707 | 2 / 2 | 3 |" in report
    assert "| model.beta=1 | — | — | 0 / 2 | — |" in report
    failed = report[report.index("## Failed or incomplete") : report.index("## Never started")]
    assert (
        "| 1 | `seed=0` `model.beta=1` | 1 of 3 | varsac fit stopped: the train loss is nan "
        "no checkpoint was written yet |" in failed
    )
    assert report.split("## Never started")[1].strip() == "- `seed=1` `model.beta=1`"
    assert "paper's Figure 4 plots test accuracy" in report
    out = capsys.readouterr().out
    assert "| model.beta=0.1 | 0.8500 ± 0.0707" in out
    assert f"report: {sweep / 'report' / 'report.md'}" in out
    with Image.open(sweep / "report" / "val_accuracy.png") as picture:
        assert picture.size == (800, 500)

    # No job finished: the report is still written, and the exit status says so.
    (sweep / "0" / "results.json").unlink()
    (sweep / "2" / "results.json").unlink()
    output = tmp_path / "elsewhere"
    assert main([str(sweep), "--output", str(output)]) == 1
    report = (output / "report.md").read_text()
    assert "| 0 | `seed=0` `model.beta=0.1` | 3 of 3 |" in report
    assert "No finished job logged `val/accuracy`" in report
    assert not (output / "val_accuracy.png").exists()


def test_planned_jobs_take_the_config_sweep_params_first_the_command_line_replacing() -> None:
    params = {"model.beta": "0.1,1", "seed": "0,1"}
    multirun = {
        "hydra": {
            "sweeper": {"_target_": BASIC_SWEEPER, "params": params},
            "overrides": {"task": ["experiment=cluttered_mnist", "model.beta=5"]},
        }
    }
    planned, reason = planned_jobs(multirun)
    assert reason is None
    assert planned == [
        ["model.beta=5", "seed=0", "experiment=cluttered_mnist"],
        ["model.beta=5", "seed=1", "experiment=cluttered_mnist"],
    ]


@pytest.mark.slow
def test_a_directory_that_is_not_a_sweep_is_refused_with_its_path(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = varsac("report", str(empty), cwd=tmp_path, check=False)
    assert result.returncode == 2
    assert f"{empty} is not a sweep directory" in result.stderr and "Traceback" not in result.stderr

    # The multirun folder above the sweeps: the newest sweep is named.
    multirun = tmp_path / "outputs" / "toy" / "multirun"
    for time in ("2026-01-01_00-00-00", "2026-01-02_00-00-00"):
        write_multirun(multirun / time, ["seed=0"])
    result = varsac("report", str(multirun), cwd=tmp_path, check=False)
    assert result.returncode == 2
    assert f"the newest is {multirun / '2026-01-02_00-00-00'}" in result.stderr

    single_run = tmp_path / "outputs" / "toy" / "2026-01-03_00-00-00"
    (single_run / ".hydra").mkdir(parents=True)
    assert main([str(single_run)]) == 2
    assert main([str(tmp_path / "missing")]) == 2


@pytest.mark.slow
def test_a_real_sweep_over_two_settings_and_two_seeds(tmp_path: Path, mnist_dir: Path) -> None:
    setting = "model.vrnn.fixed_variance"
    varsac(
        "fit", "-m", *TINY, "trainer.max_epochs=2", f"{setting}=null,0.9", "seed=0,1",
        cwd=tmp_path, data_dir=mnist_dir, OMP_NUM_THREADS="1",
    )  # fmt: skip
    sweep = the_sweep(tmp_path)
    result = varsac("report", str(sweep), cwd=tmp_path)

    report = (sweep / "report" / "report.md").read_text()
    # Jobs 0–3: (null, seed 0), (null, seed 1), (0.9, seed 0), (0.9, seed 1).
    for value, jobs in (("null", ("0", "1")), ("0.9", ("2", "3"))):
        accuracies = [finished_result(sweep / job) for job in jobs]
        mean, std = statistics.mean(accuracies), statistics.stdev(accuracies)
        row = f"| {setting}={value} | {mean:.4f} ± {std:.4f} | "
        assert row in report and row in result.stdout
        assert re.search(re.escape(row) + r"[0-9.]+ ± [0-9.]+ \| 2 / 2 \| 2 \|", report)
    assert report.index(f"{setting}=null") < report.index(f"{setting}=0.9")
    assert "## Failed or incomplete\n\nNone." in report
    assert "## Never started\n\nNone." in report
    plot = sweep / "report" / "val_accuracy.png"
    assert f"plot:   {plot}" in result.stdout
    with Image.open(plot) as picture:
        assert picture.size == (800, 500)


@pytest.mark.slow
def test_a_failed_job_is_listed_not_dropped(tmp_path: Path, mnist_dir: Path) -> None:
    # A NaN β makes the loss NaN: that job stops with an error and writes no results.json;
    # the sweep goes on with the next job and exits non-zero at the end.
    run = varsac(
        "fit", "-m", *TINY, "trainer.max_epochs=1", "model.beta=nan,0.01",
        cwd=tmp_path, data_dir=mnist_dir, check=False, OMP_NUM_THREADS="1",
    )  # fmt: skip
    assert run.returncode != 0
    sweep = the_sweep(tmp_path)
    assert not (sweep / "0" / "results.json").exists()

    result = varsac("report", str(sweep), cwd=tmp_path)
    report = (sweep / "report" / "report.md").read_text()
    accuracy = finished_result(sweep / "1")  # the job after the failed one ran
    assert f"| model.beta=0.01 | {accuracy:.4f} | " in report
    assert re.search(r"\| model\.beta=0\.01 \| [0-9.]+ \| [0-9.]+ \| 1 / 1 \| 1 \|", report)
    assert "| model.beta=nan | — | — | 0 / 1 | — |" in report
    (failed_row,) = [line for line in report.splitlines() if line.startswith("| 0 |")]
    # the reason the job stopped, from its log
    assert failed_row.startswith("| 0 | `model.beta=nan` | 0 of 1 | varsac fit stopped: the")
    assert "loss is nan at epoch 0" in failed_row
    assert "| model.beta=nan | — | — | 0 / 1 | — |" in result.stdout
    assert "1 failed or incomplete, 0 never started" in report
