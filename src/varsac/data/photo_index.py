"""The index of a set of images: ``ROOT/index.csv``, one row per image.

``varsac data mit5k`` (and ``megapixel_mnist``) writes it, ``varsac data slides``
too (``slide_index``, with columns of its own after these); ``PhotoDataModule``
reads it. Columns: ``path`` (the image: a pyramid TIFF or a slide, relative to
ROOT or absolute), ``label`` (its class name), ``split`` (train, val or test)
and ``source`` (the file it came from).
"""

import csv
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import astuple, dataclass, fields
from pathlib import Path

from varsac.data import SPLITS
from varsac.files import write_csv_atomically

INDEX_NAME = "index.csv"


@dataclass(frozen=True)
class IndexRow:
    """One converted photo."""

    path: str  # its pyramid TIFF, relative to the index's folder
    label: str
    split: str
    source: str  # the photo it was converted from


INDEX_COLUMNS = tuple(field.name for field in fields(IndexRow))


def write_index(root: str | os.PathLike[str], rows: Sequence[IndexRow]) -> Path:
    """Write ``root/index.csv`` atomically; return its path. Rows of a subclass of
    ``IndexRow`` (``slide_index.SlideRow``) add their columns after these."""
    path = Path(root) / INDEX_NAME
    columns = tuple(field.name for field in fields(rows[0])) if rows else INDEX_COLUMNS
    write_csv_atomically(path, columns, (astuple(row) for row in rows))
    return path


def read_index(root: str | os.PathLike[str]) -> list[IndexRow]:
    """The rows of ``root/index.csv``; errors name the file and say what to do."""
    path = Path(root).expanduser() / INDEX_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"no {INDEX_NAME} in {path.parent}: convert your photos there first with "
            f"`varsac data mit5k src=PHOTOS dst={path.parent}`, or point data.root at the "
            "folder that holds the index"
        )
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in INDEX_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(
                f"{path} lacks the column(s) {missing} (it has {reader.fieldnames}): "
                "write it again with `varsac data mit5k`"
            )
        rows = [IndexRow(**{c: row[c] for c in INDEX_COLUMNS}) for row in reader]
    for line, row in enumerate(rows, start=2):
        if row.split not in SPLITS:
            raise ValueError(f"{path} line {line}: split {row.split!r} is not one of {SPLITS}")
    return rows


def class_table(rows: Sequence[IndexRow]) -> list[str]:
    """Lines of text: how many rows each class has in each split, and the totals."""
    counts = Counter((row.label, row.split) for row in rows)
    classes = sorted({row.label for row in rows})
    table = {name: [counts[name, split] for split in SPLITS] for name in classes}
    table["total"] = [sum(column) for column in zip(*table.values(), strict=True)] or [0] * 3
    width = max(len(name) for name in table)
    lines = [f"  {'class':<{width}}" + "".join(f"{s:>8}" for s in (*SPLITS, "total"))]
    for name, row in table.items():
        lines.append(f"  {name:<{width}}" + "".join(f"{n:>8}" for n in (*row, sum(row))))
    return lines
