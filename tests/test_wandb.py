"""Weights & Biases dashboards, read back from the offline runs the real command line writes.

There is no W&B account here: runs log offline (WANDB_MODE=offline, or the fallback without
credentials), and the tests read what ``wandb sync`` would upload: the run's files and records.
"""

import json
import os
import re
import struct
import subprocess
import zlib
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from wandb.proto.wandb_internal_pb2 import Record

from conftest import SMALL, VARSAC, varsac

pytestmark = pytest.mark.slow  # whole runs: make test-fast leaves them out

ONE_EPOCH_TO_WANDB = [*SMALL, "trainer.max_epochs=1", "test_after_fit=false", "logger=wandb"]

BLOCK = 32 * 1024  # a LevelDB log is written in blocks of 32 KiB
HEADER = struct.pack("<4sHB", b":W&B", 0xBEE1, 0)  # a .wandb file's ident, magic and version
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4  # how a chunk holds a record: whole, or which part


def records(path: Path) -> Iterator[Record]:
    """The records of a ``.wandb`` file, parsed with wandb's own protobuf classes.

    The file is a LevelDB log after a 7-byte header: chunks of (CRC-32 of kind and data,
    length, kind, data) that never cross a 32 KiB block; a block's last < 7 bytes are padding.
    wandb 0.31 writes it from its Go core and no longer ships a Python reader (the former
    ``wandb/sdk/internal/datastore.py``), so it is read here.
    """
    data = path.read_bytes()
    assert data[: len(HEADER)] == HEADER, f"{path} is not a .wandb file"
    offset, parts = len(HEADER), b""
    while len(data) - offset >= 7:
        if BLOCK - offset % BLOCK < 7:
            offset += BLOCK - offset % BLOCK
            continue
        checksum, length, kind = struct.unpack_from("<IHB", data, offset)
        chunk = data[offset + 7 : offset + 7 + length]
        offset += 7 + length
        assert zlib.crc32(bytes([kind]) + chunk) == checksum, f"{path}: corrupt at {offset}"
        parts = chunk if kind in (FULL, FIRST) else parts + chunk
        if kind in (FULL, LAST):
            record = Record()
            record.ParseFromString(parts)
            yield record


def offline_run(run_dir: Path) -> Path:
    """The one offline W&B run under a varsac run directory."""
    (run,) = (run_dir / "wandb").glob("offline-run-*")
    return run


def logged(offline: Path) -> dict[str, list]:
    """What an offline run holds for ``wandb sync`` to send, by record type: ``run`` (name,
    group, tags, job type), ``config`` (updates of the config), ``history``, ``artifact``, ..."""
    (path,) = offline.glob("run-*.wandb")
    by_type = defaultdict(list)
    for record in records(path):
        kind = record.WhichOneof("record_type")
        by_type[kind].append(getattr(record, kind))
    return by_type


def config(run: dict[str, list]) -> dict[str, Any]:
    """The run's config: its updates, in order. (Offline, there is no files/config.yaml.)"""
    return {item.key: json.loads(item.value_json) for c in run["config"] for item in c.update}


def table(run: dict[str, list], key: str) -> tuple[dict[str, Any], dict[str, Path]]:
    """The table logged under ``key``, and the files of its ``run_table`` artifact by path.

    W&B shows a logged table from that artifact (the run's media/table/ copy names its images
    only by type); offline, the artifact's files wait in WANDB_DATA_DIR's staging folder.
    """
    (artifact,) = [a for a in run["artifact"] if a.type == "run_table"]
    files = {entry.path: Path(entry.local_path) for entry in artifact.manifest.contents}
    return json.loads(files[f"{key}.table.json"].read_text()), files


def test_without_credentials_a_run_logs_offline_its_config_pictures_and_glimpse_table(
    tmp_path: Path, mnist_dir: Path
) -> None:
    home = tmp_path / "home"  # no ~/.netrc, no API key, no WANDB_MODE: nothing to log in with
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update({"HOME": str(home), "VARSAC_DATA_DIR": str(mnist_dir)})
    result = subprocess.run(
        [str(VARSAC), "fit", *ONE_EPOCH_TO_WANDB, "logger.wandb.tags=[mine,small]"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "wandb sync" in result.stdout + result.stderr
    (run_dir,) = (tmp_path / "outputs" / "cluttered_mnist").iterdir()
    offline = offline_run(run_dir)
    run = logged(offline)

    (info,) = run["run"]
    assert (info.display_name, info.job_type, info.run_group) == ("cluttered_mnist", "fit", "")
    assert list(info.tags) == ["mine", "small"]  # tags given in the config win

    composed = config(run)  # the composed config, its groups as nested dicts
    assert composed["name"] == "cluttered_mnist" and composed["data"]["train_size"] == 200
    assert composed["model"]["crop_classifier"]["channels"] == [8, 16]

    assert list(offline.glob("files/media/images/val/saccades_*.png")), "no saccade picture"
    glimpses, files = table(run, "val/glimpses")
    assert glimpses["columns"] == ["image", "glimpses", "prediction", "label", "epoch"]
    assert len(glimpses["data"]) == 6  # callbacks.saccade_pictures.num_samples
    steps = composed["model"]["vrnn"]["steps"]  # glimpses per sample, 96² and 6 apart
    for image, strip, prediction, label, epoch in glimpses["data"]:
        assert image["_type"] == strip["_type"] == "image-file"
        assert Image.open(files[image["path"]]).size == (224, 224)  # the image with boxes
        assert Image.open(files[strip["path"]]).size == (steps * 102 - 6, 96)
        assert re.fullmatch(r"\{\d, \d\}", label) and re.fullmatch(r"\{[\d, ]*\}", prediction)
        assert epoch == 0


def test_a_sweeps_runs_share_a_group_are_named_by_their_overrides_and_tagged(
    tmp_path: Path, mnist_dir: Path
) -> None:
    quick = ["trainer.limit_train_batches=1", "trainer.limit_val_batches=1"]
    varsac(
        "fit", "-m", *ONE_EPOCH_TO_WANDB, *quick, "trainer.num_sanity_val_steps=0",
        "name=mnist_sweep", "seed=0,1", cwd=tmp_path, data_dir=mnist_dir,
        WANDB_MODE="offline", WANDB_DATA_DIR=str(tmp_path / "wandb_data"),
    )  # fmt: skip
    (sweep,) = (tmp_path / "outputs" / "mnist_sweep" / "multirun").iterdir()
    runs = [logged(offline_run(sweep / job)) for job in ("0", "1")]
    (first,), (second,) = (run["run"] for run in runs)
    assert first.run_id != second.run_id  # a W&B run per job, not one for the sweep
    assert first.run_group == second.run_group == f"mnist_sweep/{sweep.name}"
    for seed, (info,) in enumerate(run["run"] for run in runs):
        name, overrides = info.display_name.split(" ", 1)
        assert name == "mnist_sweep" and f"seed={seed}" in overrides.split(",")
        assert list(info.tags) == ["cluttered_mnist", "mnist_sweep"]  # experiment, name
        assert info.job_type == "fit"
    for seed, run in enumerate(runs):  # the run's seed, not a datamodule's seed logged over it
        assert config(run)["seed"] == seed
        assert "train_size" not in config(run)  # no flat copies of the hyperparameters


def test_each_job_of_a_sweep_closes_its_run_with_its_outcome(
    tmp_path: Path, mnist_dir: Path
) -> None:
    """A job that fails (a NaN loss) is recorded as failed, and the next job gets its own run."""
    varsac(
        "fit", "-m", *ONE_EPOCH_TO_WANDB, "trainer.limit_train_batches=1",
        "trainer.limit_val_batches=1", "trainer.num_sanity_val_steps=0", "model.beta=nan,0.01",
        cwd=tmp_path, data_dir=mnist_dir, check=False,
        WANDB_MODE="offline", WANDB_DATA_DIR=str(tmp_path / "wandb_data"),
    )  # fmt: skip
    (sweep,) = (tmp_path / "outputs" / "cluttered_mnist" / "multirun").iterdir()
    runs = [logged(offline_run(sweep / job)) for job in ("0", "1")]
    assert [[e.exit_code for e in run["exit"]] for run in runs] == [[1], [0]]
    assert runs[0]["run"][0].run_id != runs[1]["run"][0].run_id
