"""DDP from the console script: two CPU processes (gloo) started by Lightning, end to end."""

import json
from pathlib import Path

import pytest

from conftest import SMALL, varsac
from varsac.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow  # whole runs: make test-fast leaves them out

TWO_CPU_PROCESSES = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]


@pytest.fixture(scope="module")
def ddp_sweep(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> Path:
    """A two-job multirun, each job trained on two processes; returns the sweep directory."""
    cwd = tmp_path_factory.mktemp("ddp")
    varsac(
        "fit", "-m", *SMALL, *TWO_CPU_PROCESSES, "trainer.max_epochs=1", "seed=0,1",
        cwd=cwd, data_dir=mnist_dir,
    )  # fmt: skip
    (sweep,) = (cwd / "outputs" / "cluttered_mnist" / "multirun").iterdir()
    return sweep


def test_each_job_of_a_sweep_runs_on_two_ranks_in_its_own_directory(ddp_sweep: Path) -> None:
    jobs = sorted(p for p in ddp_sweep.iterdir() if p.is_dir())
    assert [job.name for job in jobs] == ["0", "1"]  # no stray directories from rank 1
    for seed, job in enumerate(jobs):
        # rank 1 re-ran this job (not the sweep) and logged into the same directory
        assert (job / "fit.log").is_file() and (job / "train_ddp_process_1.log").is_file()
        assert "run directory" in (job / "train_ddp_process_1.log").read_text()
        state = load_checkpoint(job / "checkpoints" / "last.ckpt")
        # 200 training samples in batches of 50, split over two ranks: two steps an epoch
        assert (state["epoch"], state["global_step"]) == (0, 2)
        assert state["varsac_config"]["seed"] == seed
        assert (job / "saccades" / "epoch_000.png").is_file()  # drawn once, by rank 0
        assert "test/accuracy" in json.loads((job / "results.json").read_text())["results"]


def test_metrics_over_two_ranks_equal_those_of_one_process(
    ddp_sweep: Path, tmp_path: Path, mnist_dir: Path
) -> None:
    checkpoint = f"ckpt_path={ddp_sweep / '0' / 'checkpoints' / 'last.ckpt'}"
    results = {}
    for name, processes in (("single", []), ("ddp", TWO_CPU_PROCESSES)):
        varsac("test", checkpoint, f"name={name}", *processes, cwd=tmp_path, data_dir=mnist_dir)
        (run,) = (tmp_path / "outputs" / name).iterdir()
        results[name] = json.loads((run / "results.json").read_text())["results"]
        if processes:
            assert (run / "train_ddp_process_1.log").is_file()
    single, ddp = results["single"], results["ddp"]
    assert set(single) == set(ddp) and "test/accuracy" in single
    for key, value in single.items():  # 100 test samples, 50 on each rank
        assert ddp[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
