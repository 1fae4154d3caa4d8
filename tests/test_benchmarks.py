"""The benchmark scripts run end to end on tiny settings (their real runs are in docs/)."""

import json
import os
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"


def test_table1_compares_both_models_on_a_small_pyramid(tmp_path: Path, mnist_dir: Path) -> None:
    output = tmp_path / "table1.json"
    command = [
        sys.executable, str(BENCHMARKS / "table1.py"), "--size", "256", "--tile-size", "96",
        "--tiles-per-side", "3", "--batches", "1", "2", "--train-batch", "2", "--repeats", "1",
        "--json", str(output),
    ]  # fmt: skip
    env = {**os.environ, "VARSAC_DATA_DIR": str(mnist_dir)}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "the paper (2528², batch 160, GPUs)" in result.stdout
    table = json.loads(output.read_text())
    saccade, tiled = (
        table["measured"]["variational saccading"],
        table["measured"]["resnet18, tiled"],
    )
    assert set(saccade) == set(tiled) == {"infer_1", "infer_2", "train_2"}
    assert tiled["infer_1"]["parameters"] > 11e6 > saccade["infer_1"]["parameters"]
    for row in [*saccade.values(), *tiled.values()]:
        assert row["images_per_s"] > 0 and row["working_mib"] > 0
    ratios = table["ratios"]
    assert (
        ratios["speedup_b1"]
        == saccade["infer_1"]["images_per_s"] / tiled["infer_1"]["images_per_s"]
    )
