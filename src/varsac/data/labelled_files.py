"""Files listed with their classes, and their split: a CSV of ``path,label[,split]``.

``varsac data mit5k`` (photos) and ``varsac data slides`` (whole-slide images)
both take such a CSV: paths relative to the CSV's folder, or absolute; the
optional ``split`` column (``train``, ``val`` or ``test``, in lower case; empty:
drawn) keeps a benchmark's own split. Files without one get theirs drawn per
class (stratified) from a seed among the class's files without one:
``round(n·test)`` to test, ``round(n·val)`` to val, at least one of each from a
class of three or more (when the fraction is above 0), and always at least one
to train. A set whose train split, or val or test split asked for, would be
empty is refused.
"""

import csv
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from varsac.data import SPLITS, check_split_fractions
from varsac.errors import ConfigError

# A class with this many files to draw gives each split (with a fraction above 0) one.
MIN_TO_SPLIT = 3


class Labelled(Protocol):
    """A file with a class and, from a CSV's split column, maybe a split (None: drawn)."""

    @property
    def label(self) -> str: ...

    @property
    def split(self) -> str | None: ...


@dataclass(frozen=True)
class ListedFile:
    """One row of a CSV of ``path,label[,split]``."""

    source: Path  # absolute, or relative to the working directory as the CSV's folder was
    label: str
    split: str | None  # None: to be drawn


def read_labels_csv(src: Path) -> list[ListedFile]:
    """The rows of the CSV ``src`` (see the module's docstring); errors name its line."""
    with src.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if not {"path", "label"} <= set(reader.fieldnames or []):
            raise ConfigError(
                f"{src} must have the columns path,label (it has {reader.fieldnames})"
            )
        rows = list(reader)
    listed = []
    for line, row in enumerate(rows, start=2):
        path, label = (row["path"] or "").strip(), (row["label"] or "").strip()
        if not path or not label:
            raise ConfigError(f"{src} line {line}: both path and label are needed")
        split = (row.get("split") or "").strip() or None  # no column, or an empty cell: drawn
        if split is not None and split not in SPLITS:
            raise ConfigError(
                f"{src} line {line}: split {split!r} is not one of {', '.join(SPLITS)} "
                "(leave it empty to have one drawn)"
            )
        source = Path(path).expanduser()
        source = source if source.is_absolute() else src.parent / source
        listed.append(ListedFile(source, label, split))
    return listed


# ---------------------------------------------------------------------- the split


def _held_out_counts(n: int, val: float, test: float) -> tuple[int, int]:
    """(test, val): how many of a class's ``n`` files to draw go to test and to val.

    ``round(n·test)`` and ``round(n·val)``; a class of ``MIN_TO_SPLIT`` or more gives at
    least one file to each of test and val whose fraction is above 0; and at least one
    file always stays for training.
    """
    n_test, n_val = round(n * test), round(n * val)
    if n >= MIN_TO_SPLIT:
        n_test, n_val = max(n_test, int(test > 0)), max(n_val, int(val > 0))
    # Large fractions (or the minimums) can hold out every file: take back from the larger
    # held-out split, so that a class of three keeps one file in each split.
    while n_test + n_val > max(n - 1, 0):
        if n_test >= n_val:
            n_test -= 1
        else:
            n_val -= 1
    return n_test, n_val


def stratified_split(labels: Sequence[str], val: float, test: float, seed: int) -> list[str]:
    """A split name per label: in each class, a seeded shuffle gives ``round(n·test)`` files
    to test, ``round(n·val)`` to val and the rest to train (but at least one to each split
    from a class of ``MIN_TO_SPLIT`` or more, and always one to train).

    A class's draw depends only on the seed, its name and its files in order,
    so adding a class leaves the split of the others as it was.
    """
    check_split_fractions(val, test)
    splits = [""] * len(labels)
    for label in sorted(set(labels)):
        members = [i for i, other in enumerate(labels) if other == label]
        rng = np.random.default_rng([seed, zlib.crc32(label.encode())])
        order = rng.permutation(members)
        n_test, n_val = _held_out_counts(len(members), val, test)
        for rank, index in enumerate(order):
            splits[index] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    return splits


def assign_splits(files: Sequence[Labelled], val: float, test: float, seed: int) -> list[str]:
    """A split name per file: the one the CSV's split column gave it, else one drawn by
    ``stratified_split`` among the files of its class that have none."""
    drawn = iter(stratified_split([f.label for f in files if f.split is None], val, test, seed))
    return [next(drawn) if file.split is None else file.split for file in files]


def check_every_split_has_files(
    src: Path,
    files: Sequence[Labelled],
    splits: Sequence[str],
    val: float,
    test: float,
    noun: str,
) -> None:
    """Refuse, in one line, a set whose train split, or val or test split with a fraction
    above 0, would be empty (``splits``: one per file; ``noun``: what the files are, "photo"):
    fitting needs train and val files, testing needs test files."""
    counts = Counter(splits)
    fractions = {"train": 1 - val - test, "val": val, "test": test}
    empty = [split for split in SPLITS if fractions[split] > 0 and not counts[split]]
    if not empty:
        return
    to_draw = Counter(file.label for file in files if file.split is None)
    if to_draw:
        smallest = sorted(to_draw.items(), key=lambda item: (item[1], item[0]))[:3]
        named = ", ".join(f"{label} ({n})" for label, n in smallest)
        reason = (
            f"its smallest classes, by {noun}s to draw: {named}; a class needs "
            f"{MIN_TO_SPLIT} to give each split one"
        )
        advice = f"add {noun}s, or give the {noun}s their split in a CSV's split column"
    else:
        reason = f"every {noun} has its split from the CSV's split column"
        advice = f"give some {noun}s the split {' or '.join(empty)} in the CSV"
    raise ConfigError(
        f"{src} is too small to split: with val={val}, test={test} no {noun} goes to "
        f"{' or '.join(empty)} ({reason}): {advice}"
    )


@dataclass(frozen=True)
class SplitOrigin:
    """Where a set's splits came from: the CSV's split column, or a draw."""

    given: dict[str, int]  # split name → files whose split the CSV's split column gave
    drawn: int  # files whose split was drawn
    val: float  # the fractions and seed the draw used
    test: float
    seed: int

    @classmethod
    def of(cls, files: Sequence[Labelled], val: float, test: float, seed: int) -> "SplitOrigin":
        """The origin of the splits of ``files`` (those kept in the set)."""
        given = Counter(file.split for file in files if file.split is not None)
        drawn = sum(file.split is None for file in files)
        return cls({split: given[split] for split in SPLITS}, drawn, val, test, seed)

    def line(self) -> str:
        """``split: 3 train / 1 val / 1 test from the CSV's split column, 4 drawn (…)``."""
        draw = f"(val={self.val}, test={self.test}, seed {self.seed})"
        if any(self.given.values()):
            given = " / ".join(f"{self.given[split]} {split}" for split in SPLITS)
            return f"split: {given} from the CSV's split column, {self.drawn} drawn {draw}"
        return f"split: {self.drawn} drawn per class {draw}"
