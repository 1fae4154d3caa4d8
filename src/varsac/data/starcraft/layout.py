"""The folder of StarCraft II frames that the recorder and the generator write (no torch).

DST/predictions.csv has one row per frame: the paths of its frame and minimap
PNGs, relative to DST (under ``FRAME_DIR`` and ``MINIMAP_DIR``), and how many
units of each type are on screen. This is the layout of the authors' recorder
(``starcraft_predict_battle.py``); marines are the label.
"""

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from varsac.files import write_csv_atomically

CSV_NAME = "predictions.csv"
FRAME_DIR, MINIMAP_DIR = "fullscreen", "minimap"
FRAME_COLUMN, MINIMAP_COLUMN = "fullscreen_img", "minimap_img"
UNIT_TYPES = ("marine", "marauder", "siegetank")
UNIT_COLUMNS = tuple(f"{unit}_count" for unit in UNIT_TYPES)
LABEL_COLUMN = "marine_count"
CSV_COLUMNS = (FRAME_COLUMN, MINIMAP_COLUMN, *UNIT_COLUMNS)
MAX_COUNT = 22  # the paper keeps frames with at most 22 of a unit type


def write_frames_csv(dst: str | os.PathLike[str], rows: Iterable[Mapping[str, object]]) -> None:
    """DST/predictions.csv, atomically: ``CSV_COLUMNS``, then ``rows`` in the order given."""
    table = ([row[column] for column in CSV_COLUMNS] for row in rows)
    write_csv_atomically(Path(dst) / CSV_NAME, CSV_COLUMNS, table)


def frame_paths(index: int) -> tuple[str, str]:
    """Frame ``index``'s frame and minimap PNGs, relative to DST (forward slashes)."""
    name = f"{index:06d}.png"
    return f"{FRAME_DIR}/{name}", f"{MINIMAP_DIR}/{name}"
