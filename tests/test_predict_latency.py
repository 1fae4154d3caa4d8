"""benchmarks/predict_latency.py runs end to end on tiny settings (its real run: docs/)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # whole runs: make test-fast leaves them out

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"


def test_the_latency_benchmark_measures_every_row_of_both_models(tmp_path: Path) -> None:
    output = tmp_path / "latency.json"
    command = [
        sys.executable, str(BENCHMARKS / "predict_latency.py"), "--size", "512", "--images",
        "2", "--baseline-images", "1", "--samples", "2", "--json", str(output),
    ]  # fmt: skip
    result = subprocess.run(command, cwd=BENCHMARKS, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    assert "saccades faster" in result.stdout and "start-up and the rest" in result.stdout
    document = json.loads(output.read_text())
    saccade, tiled = (
        document["measured"]["variational saccading"],
        document["measured"]["resnet18, tiled"],
    )
    assert set(saccade) == set(tiled) == {
        "jpeg, first call", "jpeg, cached", "pyramid tiff", "folder", "api, jpeg cached",
        "api, pyramid tiff", "prediction alone",
    }  # fmt: skip
    assert saccade["folder"]["images"] == 2 and tiled["folder"]["images"] == 1
    assert saccade["jpeg, first call"]["converting_s"] > saccade["jpeg, cached"]["converting_s"]
    assert saccade["prediction alone"]["images"] == 2
    assert len(document["ratios"]) == 7 and all(r > 0 for r in document["ratios"].values())
