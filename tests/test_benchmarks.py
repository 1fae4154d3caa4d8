"""The benchmark scripts run end to end on tiny settings (their real runs are in docs/)."""

import json
import os
import subprocess
import sys
from pathlib import Path

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
