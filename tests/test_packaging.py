"""The built wheel carries the configs: the CLI composes from an install that is not the repo."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # whole runs: make test-fast leaves them out

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_ships_the_configs_and_the_console_script(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--quiet",
            "-w",
            str(tmp_path / "dist"),
            str(ROOT),
        ],
        check=True,
        timeout=300,
    )
    (wheel,) = (tmp_path / "dist").glob("varsac-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        assert "varsac = varsac.cli:main" in archive.read(entry_points).decode()
    assert "varsac/conf/fit.yaml" in names
    assert "varsac/conf/experiment/cluttered_mnist.yaml" in names
    assert "varsac/models/saccader.py" in names and "varsac/data/mnist.py" in names

    # installed on its own (dependencies from this environment), away from the repository
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--quiet",
            "--target",
            str(tmp_path / "site"),
            str(wheel),
        ],
        check=True,
        timeout=300,
    )
    code = (
        "import sys, varsac; from varsac.cli import main; print(varsac.__file__); "
        "sys.argv = ['varsac', 'fit', 'experiment=cluttered_mnist', '--cfg', 'job']; main()"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert out.startswith(str(tmp_path / "site"))
    assert "name: cluttered_mnist" in out
