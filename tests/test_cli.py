"""The installed ``varsac`` console script, run as a user would, from a temporary directory."""

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from conftest import SMALL, varsac
from varsac.checkpoint import load_checkpoint
from varsac.data import SPLITS

pytestmark = pytest.mark.slow  # whole runs: make test-fast leaves them out


def run_dirs(cwd: Path, name: str = "cluttered_mnist") -> list[Path]:
    return sorted(p for p in (cwd / "outputs" / name).iterdir() if p.is_dir())


def test_help_lists_the_commands(tmp_path: Path) -> None:
    out = varsac("--help", cwd=tmp_path, data_dir=tmp_path).stdout
    assert "fit" in out and "test" in out
    unknown = varsac("nope", cwd=tmp_path, data_dir=tmp_path, check=False)
    assert unknown.returncode == 2 and "unknown command 'nope'" in unknown.stderr


def test_cfg_job_prints_the_composed_config_from_any_directory(tmp_path: Path) -> None:
    out = varsac(
        "fit", "experiment=cluttered_mnist", "--cfg", "job", cwd=tmp_path, data_dir=tmp_path
    ).stdout
    assert "varsac.models.saccader.Saccader" in out and "name: cluttered_mnist" in out
    assert not (tmp_path / "outputs").exists()


def test_a_wrong_config_key_is_named(tmp_path: Path) -> None:
    result = varsac("fit", "data.batch_sise=3", cwd=tmp_path, data_dir=tmp_path, check=False)
    assert result.returncode != 0 and "batch_sise" in result.stderr


def test_fast_dev_run(tmp_path: Path, mnist_dir: Path) -> None:
    result = varsac("fit", *SMALL, "trainer.fast_dev_run=true", cwd=tmp_path, data_dir=mnist_dir)
    (run,) = run_dirs(tmp_path)
    assert f"run directory: {run}" in result.stderr + result.stdout


@dataclass(frozen=True)
class FirstFit:
    """One epoch of ``varsac fit`` in ``cwd``: its run directory and what it printed."""

    cwd: Path
    run: Path
    out: str

    @property
    def last(self) -> Path:
        return self.run / "checkpoints" / "last.ckpt"

    def copied_to(self, cwd: Path) -> "FirstFit":
        """The same run in another directory, for a test that goes on from it."""
        shutil.copytree(self.cwd / "outputs", cwd / "outputs")
        return FirstFit(cwd, cwd / self.run.relative_to(self.cwd), self.out)


@pytest.fixture(scope="module")
def first_fit(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> FirstFit:
    cwd = tmp_path_factory.mktemp("first_fit")
    out = varsac("fit", *SMALL, "trainer.max_epochs=1", cwd=cwd, data_dir=mnist_dir).stdout
    (run,) = run_dirs(cwd)
    return FirstFit(cwd, run, out)


def test_fit_writes_checkpoints_metrics_and_pictures(first_fit: FirstFit) -> None:
    summary = first_fit.out[first_fit.out.index("varsac fit finished") :]
    assert f"last checkpoint              {first_fit.last.resolve()}" in summary
    assert "best checkpoint" in summary and "test/accuracy" in summary
    finished = json.loads((first_fit.run / "results.json").read_text())
    assert finished["checkpoints"]["last"] == str(first_fit.last.resolve())
    assert 0 <= finished["results"]["test/accuracy"] <= 1
    state = load_checkpoint(first_fit.last)
    assert (state["epoch"], state["global_step"]) == (0, 4)
    assert state["varsac_config"]["data"]["train_size"] == 200
    metrics = (first_fit.run / "csv" / "metrics.csv").read_text()
    assert "val/accuracy" in metrics and "test/accuracy" in metrics
    with Image.open(first_fit.run / "saccades" / "epoch_000.png") as picture:
        assert picture.width > 500 and picture.height > 200


def test_a_resumed_fit_continues_at_the_next_epoch(
    first_fit: FirstFit, tmp_path: Path, mnist_dir: Path
) -> None:
    first = first_fit.copied_to(tmp_path)
    varsac(
        "fit", *SMALL, "trainer.max_epochs=2", "ckpt_path=last", cwd=tmp_path, data_dir=mnist_dir
    )
    second = run_dirs(tmp_path)[-1]
    assert second != first.run
    state = load_checkpoint(second / "checkpoints" / "last.ckpt")
    assert (state["epoch"], state["global_step"]) == (1, 8)
    assert "epoch" in (second / "csv" / "metrics.csv").read_text()


def test_test_rebuilds_the_run_from_the_checkpoint_with_overrides_on_top(
    first_fit: FirstFit, tmp_path: Path, mnist_dir: Path
) -> None:
    out = varsac(
        "test", f"ckpt_path={first_fit.last}", "data.batch_size=25",
        cwd=tmp_path, data_dir=mnist_dir,
    )  # fmt: skip
    assert "test/accuracy" in out.stdout + out.stderr


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(
    first_fit: FirstFit, tmp_path: Path, mnist_dir: Path
) -> None:
    first = first_fit.copied_to(tmp_path)
    good = first.last.read_bytes()
    failed = varsac(
        "fit", *SMALL, "trainer.max_epochs=2", "ckpt_path=last", "model.beta=nan",
        cwd=tmp_path, data_dir=mnist_dir, check=False,
    )  # fmt: skip
    assert failed.returncode != 0
    assert "loss is nan at epoch" in failed.stderr and "global step 4" in failed.stderr
    assert first.last.read_bytes() == good
    assert f"the last good checkpoint is {first.last.resolve()}" in failed.stderr


def test_a_multirun_sweep_runs_each_setting(tmp_path: Path, mnist_dir: Path) -> None:
    varsac(
        "fit",
        "-m",
        *SMALL,
        "trainer.fast_dev_run=true",
        "seed=0,1",
        cwd=tmp_path,
        data_dir=mnist_dir,
    )
    (sweep,) = (tmp_path / "outputs" / "cluttered_mnist" / "multirun").iterdir()
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]
    assert "seed=1" in (sweep / "1" / ".hydra" / "overrides.yaml").read_text().replace(" ", "")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["test", "ckpt_path=missing.ckpt"], "ckpt_path=missing.ckpt: no such file"),
        (["fit", "ckpt_path=last"], "ckpt_path=last: no checkpoints/last.ckpt under"),
        (["fit", "model.min_scale=0.9", "model.max_scale=0.5"], "need 0 < min_scale ≤ max_scale"),
        (["fit", "data.label_mode=count"], "label_mode"),
        (["fit", "trainer.max_epochs=abc"], "trainer.max_epochs=abc: expected an integer or null"),
        (["fit", "data.batch_size=-1"], "data.batch_size: must be at least 1, got -1"),
        (["fit", "model.vrnn.steps=0"], "model.vrnn.steps: must be at least 1, got 0"),
        (["fit", "model.beta=[1,2]"], "model.beta=[1, 2]: expected a number"),
        (["fit", "+model.foo=1"], "model.foo: varsac.models.saccader.Saccader takes no 'foo'"),
        (["data", "mit5k", "src=photos", "size=big"], "size=big: expected an integer"),
        (["data", "starcraft", "n=many"], "n=many: expected an integer"),
        (
            ["predict", "ckpt_path=x", "input=y", "samples=some"],
            "samples=some: expected an integer",
        ),
        (["predict", "ckpt_path=x", "input=y", "size=0"], "size must be at least 1, got 0"),
        (["predict", "ckpt_path=x", "input=y", "pictures=maybe"], "pictures=maybe: expected true"),
    ],
)
def test_bad_input_ends_with_a_message_not_a_traceback(
    tmp_path: Path, args: list[str], message: str
) -> None:
    result = varsac(*args, cwd=tmp_path, data_dir=tmp_path, check=False)
    assert result.returncode == 1
    assert message in result.stderr.splitlines()[-1] and "Traceback" not in result.stderr


def test_hydra_full_error_shows_the_traceback(tmp_path: Path) -> None:
    args = ("fit", "model.vrnn.steps=0")
    result = varsac(*args, cwd=tmp_path, data_dir=tmp_path, check=False, HYDRA_FULL_ERROR="1")
    assert result.returncode == 1 and "Traceback" in result.stderr


def test_2528_experiment_runs_through_the_localized_transformer(
    tmp_path: Path, fresh_data_dir: Path
) -> None:
    data_dir = fresh_data_dir
    args = [
        "experiment=cluttered_mnist_2528",
        "data.train_size=8",
        "data.val_size=4",
        "data.test_size=4",
        "data.batch_size=4",
        "model.crop_classifier.channels=[8,16]",
    ]
    one_batch = ["trainer.limit_train_batches=1", "trainer.limit_val_batches=1"]
    varsac("fit", *args, "trainer.max_epochs=1", *one_batch, cwd=tmp_path, data_dir=data_dir)
    # Only what the run read is written: one batch of the 8 training canvases, one of val,
    # the whole test split.
    (pyramids,) = (data_dir / "cluttered_mnist").glob("*/pyramids_2528")
    written = {split: len(list((pyramids / split).glob("*.tif"))) for split in SPLITS}
    assert written == {"train": 4, "val": 4, "test": 4}
    (run,) = run_dirs(tmp_path, "cluttered_mnist_2528")
    state = load_checkpoint(run / "checkpoints" / "last.ckpt")
    cropper = state["varsac_config"]["model"]["cropper"]["_target_"]
    assert cropper.endswith("LocalizedSpatialTransformer")
    assert (run / "saccades" / "epoch_000.png").is_file()
