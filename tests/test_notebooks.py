"""The notebooks: each runs from top to bottom on tiny settings; none is committed with outputs."""

import csv
import re
import runpy
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.slow  # whole runs: make test-fast leaves them out

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NAMES = ("quickstart", "localized_spatial_transformer", "ablations")


def execute(name: str, cwd: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch):
    """Run notebooks/<name>.ipynb in a fresh kernel of this Python, in ``cwd``, on the tiny
    settings (``VARSAC_NOTEBOOK_QUICK=1``) with datasets under ``data_dir``; an error in any
    cell fails the test. Returns the executed notebook."""
    monkeypatch.setenv("VARSAC_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("VARSAC_DATA_DIR", str(data_dir))
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.delenv("VARSAC_OUTPUT_DIR", raising=False)  # runs go to cwd/outputs
    # One thread per process: the tiny models gain nothing from more, and where other work
    # shares the cores, oversubscribed threads slowed a tiny fit from 1.3 s to 45 s.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    # the kernel inherits this environment; kernel "python3" runs this interpreter
    client = NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
    )
    client.execute()
    return notebook


def outputs(notebook) -> list:
    return [
        output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
    ]


def images(notebook) -> list:
    return [output for output in outputs(notebook) if "image/png" in output.get("data", {})]


def text(notebook) -> str:
    return "".join(output.get("text", "") for output in outputs(notebook))


def test_quickstart_trains_draws_and_predicts(
    tmp_path: Path, fresh_data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    notebook = execute("quickstart", tmp_path, fresh_data_dir, monkeypatch)
    (run,) = (tmp_path / "outputs" / "cluttered_mnist").iterdir()
    assert (run / "results.json").is_file()
    assert f"the run went to {run}" in text(notebook)
    # the curve, the saved picture, fresh saccades, posterior samples, predict's picture
    assert len(images(notebook)) == 5
    (predictions,) = (tmp_path / "outputs" / "predict").glob("*/predictions.csv")
    with open(predictions, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(Path(row["path"]).name for row in rows) == [f"canvas_{i}.png" for i in range(3)]
    assert len(re.findall(r"canvas_\d\.png: predicted \{.*\} \(p = ", text(notebook))) == 3


def test_lst_notebook_shows_exact_glimpses_and_the_memory_plot(
    tmp_path: Path, fresh_data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    notebook = execute("localized_spatial_transformer", tmp_path, fresh_data_dir, monkeypatch)
    printed = r"torch\.(float\d\d): glimpses, max \|ST − LST\| = (\S+); gradients, .* = (\S+)\n"
    errors = re.findall(printed, text(notebook))
    assert [dtype for dtype, _, _ in errors] == ["float32", "float64"]
    for dtype, glimpses, gradients in errors:
        tolerance = 1e-4 if dtype == "float32" else 1e-10
        assert float(glimpses) < tolerance and float(gradients) < tolerance
    # the crops on the image, the glimpses at level 0 and coarser, the memory plot
    assert len(images(notebook)) == 3


def test_ablations_notebook_runs_a_sweep_and_reports_it(
    tmp_path: Path, fresh_data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    notebook = execute("ablations", tmp_path, fresh_data_dir, monkeypatch)
    (sweep,) = (tmp_path / "outputs" / "variance_ablation" / "multirun").iterdir()
    assert len(list(sweep.glob("*/results.json"))) == 4
    assert (sweep / "report" / "report.md").is_file()
    (table,) = [
        o.data["text/markdown"] for o in outputs(notebook) if "text/markdown" in o.get("data", {})
    ]
    assert table.count("| 2 / 2 |") == 2  # both seeds of both settings finished
    assert len(images(notebook)) == 1


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_committed_without_outputs(name: str) -> None:
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, (
                f"{name}.ipynb has outputs: make strip-notebooks"
            )


def test_every_notebook_is_tested() -> None:
    assert sorted(path.stem for path in NOTEBOOKS.glob("*.ipynb")) == sorted(NAMES)


def test_strip_outputs_restores_the_committed_form(tmp_path: Path) -> None:
    committed = (NOTEBOOKS / "quickstart.ipynb").read_text()
    notebook = nbformat.reads(committed, as_version=4)
    for cell in notebook.cells:  # what a run leaves behind
        if cell.cell_type == "code":
            cell.outputs = [nbformat.v4.new_output("stream", text="trained\n")]
            cell.execution_count = 1
            cell.metadata["execution"] = {"iopub.status.idle": "2026-11-26T04:00:00Z"}
    notebook.metadata["language_info"] = {"name": "python", "version": "3.11.9"}
    path = tmp_path / "quickstart.ipynb"
    nbformat.write(notebook, path)
    strip = runpy.run_path(str(NOTEBOOKS / "strip_outputs.py"))["strip"]
    assert strip(path)
    assert path.read_text() == committed
    assert not strip(path)
