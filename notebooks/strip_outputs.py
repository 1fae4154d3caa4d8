"""Strip outputs, execution counts and run metadata from notebooks, in place.

    python notebooks/strip_outputs.py [NOTEBOOK ...]     (default: every notebook beside this file)

The notebooks are committed without outputs (tests/test_notebooks.py checks it).
"""

import sys
from pathlib import Path

import nbformat


def strip(path: Path) -> bool:
    """Strip the notebook ``path``; return whether it changed."""
    before = path.read_text()
    notebook = nbformat.reads(before, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        cell.metadata.pop("execution", None)
    notebook.metadata["language_info"] = {"name": "python"}  # no version of who ran it last
    after = nbformat.writes(notebook) + "\n"
    if after != before:
        path.write_text(after)
    return after != before


def main(paths: list[str]) -> None:
    notebooks = [Path(p) for p in paths] or sorted(Path(__file__).parent.glob("*.ipynb"))
    for path in notebooks:
        print(f"{path}: {'stripped' if strip(path) else 'already clean'}")


if __name__ == "__main__":
    main(sys.argv[1:])
