"""Faults lose nothing: a killed fit resumes, a full disc keeps no half-written file, and
DataLoader workers read pyramids as the main process does."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import pyvips

from conftest import SMALL, VARSAC, varsac, varsac_environment
from varsac.checkpoint import load_checkpoint
from varsac.files import partial_files
from varsac.pyramid import PyramidTIFF

pytestmark = pytest.mark.slow  # whole runs: make test-fast leaves them out

# SMALL with 400 training canvases (eight steps an epoch) and no pictures to draw.
LONGER = [
    *(arg for arg in SMALL if not arg.startswith("data.train_size")),
    "data.train_size=400",
    "callbacks.saccade_pictures=null",
]


def run_dirs(cwd: Path) -> list[Path]:
    return sorted(p for p in (cwd / "outputs" / "cluttered_mnist").iterdir() if p.is_dir())


def last_lines(result: subprocess.CompletedProcess, n: int = 2) -> str:
    return "\n".join(result.stderr.strip().splitlines()[-n:])


def test_a_fit_killed_mid_epoch_resumes_from_its_last_checkpoint(
    tmp_path: Path, mnist_dir: Path
) -> None:
    fit = subprocess.Popen(
        [str(VARSAC), "fit", *LONGER, "trainer.max_epochs=3", "test_after_fit=false"],
        cwd=tmp_path, env=varsac_environment(mnist_dir),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while not list((tmp_path / "outputs").glob("cluttered_mnist/*/checkpoints/last.ckpt")):
        assert fit.poll() is None, "the fit ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(fit.pid, signal.SIGKILL)  # in epoch 1, just after the first checkpoint was saved
    fit.wait()
    (killed,) = run_dirs(tmp_path)
    assert not (killed / "results.json").exists()
    # what a kill during a save leaves (tests/test_checkpoint.py makes a real one)
    debris = killed / "checkpoints" / ".last.ckpt.0123456789ab.partial"
    debris.write_bytes(b"half a checkpoint")

    result = varsac(
        "fit", *LONGER, "trainer.max_epochs=3", "ckpt_path=last", cwd=tmp_path, data_dir=mnist_dir
    )
    log = result.stdout + result.stderr
    assert f"resuming from {(killed / 'checkpoints' / 'last.ckpt').resolve()}" in log
    assert "removed 1 partial checkpoint(s)" in log and not debris.exists()
    (resumed,) = [run for run in run_dirs(tmp_path) if (run / "results.json").is_file()]
    last = json.loads((resumed / "results.json").read_text())["checkpoints"]["last"]
    state = load_checkpoint(last)
    assert (state["epoch"], state["global_step"]) == (2, 24)  # three epochs of eight steps


def test_last_ckpt_is_rewritten_every_epoch_even_when_validation_does_not_improve(
    tmp_path: Path, mnist_dir: Path
) -> None:
    """A learning rate of 0 never improves on the first epoch's validation accuracy, so the
    best checkpoint stays at epoch 0; last.ckpt must still hold the last epoch."""
    frozen = [*SMALL, "trainer.max_epochs=3", "model.optimizer.lr=0.0", "test_after_fit=false"]
    varsac("fit", *frozen, cwd=tmp_path, data_dir=mnist_dir)
    (run,) = run_dirs(tmp_path)
    (best,) = run.glob("checkpoints/epoch*.ckpt")
    assert best.name.startswith("epoch000-")
    state = load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert (state["epoch"], state["global_step"]) == (2, 12)


def test_a_full_disc_while_saving_a_checkpoint_keeps_the_last_good_one(
    tmp_path: Path, mnist_dir: Path
) -> None:
    varsac("fit", *SMALL, "trainer.max_epochs=1", cwd=tmp_path, data_dir=mnist_dir)
    (first,) = run_dirs(tmp_path)
    good = first / "checkpoints" / "last.ckpt"
    limit = good.stat().st_size // 2  # room for logs and metrics, not for a checkpoint
    resume = [*SMALL, "trainer.max_epochs=2", "ckpt_path=last"]
    full = varsac(
        "fit", *resume, cwd=tmp_path, data_dir=mnist_dir, check=False, file_size_limit=limit
    )
    assert full.returncode == 1 and "Traceback" not in full.stderr
    stopped = last_lines(full)
    assert "varsac fit stopped: no space left to write " in stopped and ".ckpt" in stopped
    assert "File too large" in stopped and "run the same command again" in stopped
    assert f"the last good checkpoint is {good.resolve()}" in stopped
    second = run_dirs(tmp_path)[-1]
    assert second != first and not list((second / "checkpoints").glob("*"))  # nothing half-kept
    assert load_checkpoint(good)["epoch"] == 0

    varsac("fit", *resume, cwd=tmp_path, data_dir=mnist_dir)  # room again: it completes
    assert load_checkpoint(run_dirs(tmp_path)[-1] / "checkpoints" / "last.ckpt")["epoch"] == 1


def write_noisy_photos(root: Path, classes: int = 3, per_class: int = 4) -> Path:
    """``classes`` class folders of ``per_class`` 300×200 JPEGs of noise (they compress badly)."""
    rng = np.random.default_rng(0)
    for label in range(classes):
        (root / f"class{label}").mkdir(parents=True)
        for index in range(per_class):
            pixels = rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)
            pyvips.Image.new_from_array(pixels).jpegsave(str(root / f"class{label}/{index}.jpg"))
    return root


def test_a_full_disc_while_converting_photos_stops_cleanly_and_a_rerun_completes(
    tmp_path: Path,
) -> None:
    src, dst = write_noisy_photos(tmp_path / "photos"), tmp_path / "converted"
    convert = ["data", "mit5k", f"src={src}", f"dst={dst}", "size=256", "workers=1"]
    full = varsac(*convert, cwd=tmp_path, check=False, file_size_limit=20_000)
    assert full.returncode == 1 and "Traceback" not in full.stderr
    stopped = last_lines(full, 1)
    assert stopped.startswith(f"varsac data mit5k: no space left to write {dst / 'images'}")
    assert "File too large" in stopped
    assert not list(dst.rglob("*.tif")) and not partial_files(dst)
    assert not (dst / "index.csv").exists()

    varsac(*convert, cwd=tmp_path)
    pyramids = sorted(dst.rglob("*.tif"))
    assert len(pyramids) == 12 and len((dst / "index.csv").read_text().splitlines()) == 13
    assert all(PyramidTIFF(path).levels[0] == (256, 256) for path in pyramids)


WRITE_A_MEGABYTE = """
import sys
from varsac.files import NoSpaceError, replace_atomically
try:
    replace_atomically(sys.argv[1], lambda handle: handle.write(bytes(2**20)))
except NoSpaceError as error:
    sys.exit(str(error))
"""


def test_an_atomic_write_that_runs_out_of_space_names_the_file_and_keeps_the_old_one(
    tmp_path: Path,
) -> None:
    target = tmp_path / "index.csv"
    target.write_text("path,label\n")

    def limit() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))

    result = subprocess.run(
        [sys.executable, "-c", WRITE_A_MEGABYTE, str(target)],
        capture_output=True, text=True, preexec_fn=limit, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.startswith(f"no space left to write {target} (")
    assert target.read_text() == "path,label\n" and not partial_files(tmp_path)


@pytest.mark.parametrize(
    ("experiment", "folder"), [("mit5k", "converted_photos"), ("starcraft", "starcraft_folder")]
)
def test_dataloader_workers_give_the_metrics_of_the_main_process(
    tmp_path: Path, experiment: str, folder: str, request: pytest.FixtureRequest
) -> None:
    root = request.getfixturevalue(folder)
    results = []
    for workers in (0, 2):
        cwd = tmp_path / f"workers{workers}"
        cwd.mkdir()
        varsac(
            "fit", f"experiment={experiment}", f"data.root={root}",
            f"data.num_workers={workers}", "data.batch_size=4", "trainer.max_epochs=1",
            "model.crop_classifier.channels=[8,16]", "callbacks.saccade_pictures=null",
            cwd=cwd, OMP_NUM_THREADS="1",
        )  # fmt: skip
        (run,) = (cwd / "outputs" / experiment).iterdir()
        results.append(json.loads((run / "results.json").read_text())["results"])
    assert "test/accuracy" in results[0] and results[0] == results[1]
