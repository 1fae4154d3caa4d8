"""Where and when a figure was measured, and the JSON files the benchmarks keep their rows in."""

import json
import platform
from collections.abc import Callable
from datetime import date
from pathlib import Path

import torch

from varsac.files import replace_atomically


def cpu_name() -> str:
    """The processor's model name where Linux tells it, else the architecture."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine() -> dict[str, str | int]:
    """The machine a figure is measured on: processor, torch threads and build, Python, date."""
    return {
        "cpu": cpu_name(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": date.today().isoformat(),
    }


def merge_rows(
    path: Path, field: str, rows: list[dict], key: Callable[[dict], object]
) -> list[dict]:
    """Merge ``rows`` into the list ``field`` of the JSON document at ``path`` and write it
    back atomically; returns the merged list.

    A row replaces the stored row with the same ``key``; the others are kept, in their
    order, before the new ones, so a table grows over several sessions. Each row names its
    own machine: a document of the older layout, with one ``machine`` for all its rows,
    has it moved into each of them.
    """
    document = json.loads(path.read_text()) if path.is_file() else {}
    shared = document.pop("machine", None)
    new = {key(row) for row in rows}
    kept = [row for row in document.get(field, []) if key(row) not in new]
    for row in kept:
        row.setdefault("machine", shared)
    document[field] = kept + rows
    encoded = json.dumps(document, indent=1).encode()
    replace_atomically(path, lambda handle: handle.write(encoded))
    return document[field]
