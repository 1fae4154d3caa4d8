"""Checkpoints load as weights only: a file that would run code, or a damaged one, is refused."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import pyvips
import torch

from conftest import varsac
from varsac.checkpoint import CONFIG_KEY, CheckpointError, load_checkpoint, stored_config
from varsac.checkpoint_files import CheckpointFiles
from varsac.files import partial_files


class WritesAFile:
    """Pickles as a call of ``open(path, "w")``: unpickling it with pickle creates ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return open, (str(self.path), "w")


def crafted_checkpoint(path: Path, marker: Path) -> Path:
    """A checkpoint-shaped file whose pickle would create ``marker`` if it were unpickled."""
    torch.save({"state_dict": {}, "varsac_config": {}, "payload": WritesAFile(marker)}, path)
    return path


def last_line(result: subprocess.CompletedProcess) -> str:
    return result.stderr.strip().splitlines()[-1]


def test_the_crafted_checkpoint_really_runs_code_when_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "written"
    torch.load(crafted_checkpoint(tmp_path / "evil.ckpt", marker), weights_only=False)
    assert marker.exists()  # so the refusals below are refusals of a real attack


@pytest.mark.slow
def test_predict_test_and_resume_refuse_a_checkpoint_that_would_run_code(tmp_path: Path) -> None:
    marker = tmp_path / "written"
    evil = crafted_checkpoint(tmp_path / "evil.ckpt", marker)
    image = tmp_path / "x.png"
    pyvips.Image.new_from_array(np.zeros((64, 64), np.uint8)).pngsave(str(image))
    resumed = tmp_path / "outputs" / "cluttered_mnist" / "earlier" / "checkpoints" / "last.ckpt"
    resumed.parent.mkdir(parents=True)
    resumed.write_bytes(evil.read_bytes())
    commands = {
        "predict": ["predict", f"ckpt_path={evil}", f"input={image}"],
        "test": ["test", f"ckpt_path={evil}"],
        "resume": ["fit", "experiment=cluttered_mnist", "ckpt_path=last"],
    }
    for name, command in commands.items():
        result = varsac(*command, cwd=tmp_path, data_dir=tmp_path, check=False)
        assert result.returncode == 1, name
        assert "was refused" in last_line(result) and "(io.open)" in last_line(result), name
        assert "Traceback" not in result.stderr, name
        assert not marker.exists(), name


@pytest.mark.slow
@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty (0 bytes)"),
        (b"epoch,loss\n0,1.5\n", "is not a checkpoint"),
        ("truncated", "is a damaged or truncated checkpoint"),
    ],
)
def test_a_damaged_or_foreign_file_gets_one_line(
    tmp_path: Path, content: bytes | str, message: str
) -> None:
    path = tmp_path / "model.ckpt"
    if content == "truncated":
        torch.save({"state_dict": {"w": torch.rand(1000)}}, path)
        path.write_bytes(path.read_bytes()[:2000])
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=re.escape(message)):
        load_checkpoint(path)
    result = varsac("test", f"ckpt_path={path}", cwd=tmp_path, data_dir=tmp_path, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert last_line(result).startswith(f"varsac test: {path} {message}")


def test_a_file_that_holds_no_checkpoint_is_named(tmp_path: Path) -> None:
    torch.save([1, 2, 3], tmp_path / "list.ckpt")
    with pytest.raises(CheckpointError, match=r"list\.ckpt holds a list, not a checkpoint"):
        load_checkpoint(tmp_path / "list.ckpt")


SAVE_A_LARGE_CHECKPOINT = """
import sys, torch
from varsac.checkpoint_files import CheckpointFiles
CheckpointFiles().save_checkpoint({"state_dict": {"w": torch.ones(2**26)}}, sys.argv[1])
"""


@pytest.mark.slow
def test_a_kill_while_saving_leaves_the_previous_checkpoint_whole(tmp_path: Path) -> None:
    path = tmp_path / "checkpoints" / "last.ckpt"
    CheckpointFiles().save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "epoch": 4}, path)
    saving = subprocess.Popen([sys.executable, "-c", SAVE_A_LARGE_CHECKPOINT, str(path)])
    deadline = time.monotonic() + 120
    while not any(p.stat().st_size > 2**20 for p in partial_files(path.parent)):
        assert saving.poll() is None, "the save ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.001)
    os.kill(saving.pid, signal.SIGKILL)  # partway through 256 MiB of weights
    saving.wait()
    assert partial_files(path.parent)  # the half-written file lies under its temporary name
    checkpoint = load_checkpoint(path)
    assert checkpoint["epoch"] == 4 and checkpoint["state_dict"]["w"].tolist() == [0, 0, 0]


def test_a_checkpoint_from_before_the_channels_were_the_datas_gets_them_as_data_keys() -> None:
    old = {CONFIG_KEY: {"data": {"proxy_size": 32}, "image_channels": 3, "proxy_channels": 3}}
    cfg = stored_config(old)
    assert (cfg.data.image_channels, cfg.data.proxy_channels) == (3, 3)
    assert "image_channels" not in cfg
    assert stored_config({"state_dict": {}}) is None
