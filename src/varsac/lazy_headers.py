"""Image files whose headers are read once, on first use: what ``PyramidTIFF`` and ``Slide``
share.

An object holds its path and, once read, its layout (level sizes and whatever else the
headers say): plain data that survives pickling and ``fork``, so a dataset of a million
files costs nothing until a file is read, and a DataLoader worker gets the layouts read
before it started. The first thread to need the layout reads it, under a lock that a
process forked meanwhile replaces (a thread of the parent may have held it).
"""

import operator
import os
import threading
from pathlib import Path
from typing import Generic, TypeVar

import numpy as np

Layout = TypeVar("Layout")


class LazyHeaders(Generic[Layout]):
    """A file's layout, read by ``_layout_from_file`` on first use; ``levels`` comes from it,
    and whole levels are read through the subclass's ``read_region``.

    Subclasses keep their state in plain attributes (they are pickled as they are) and
    their layout a frozen dataclass with a ``levels`` field.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._layout: Layout | None = None
        self._new_lock()

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("_lock", "_lock_pid")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._new_lock()

    @property
    def levels(self) -> list[tuple[int, int]]:
        """(width, height) of each level, level 0 the full resolution."""
        return list(self._read_layout().levels)

    def read_region(self, level: int, left: int, top: int, width: int, height: int) -> np.ndarray:
        """uint8 (height, width, channels): a rectangle that lies inside ``level``."""
        raise NotImplementedError

    def read_level(self, level: int) -> np.ndarray:
        """uint8 (height, width, channels): the whole of ``level`` (meant for small levels)."""
        self._check_level(level)
        return self.read_region(level, 0, 0, *self.levels[level])

    def proxy_level(self, size: int) -> int:
        """The coarsest level whose shorter side is still at least ``size`` (else level 0)."""
        fitting = [level for level, (w, h) in enumerate(self.levels) if min(w, h) >= size]
        return fitting[-1] if fitting else 0

    def _check_level(self, level: int) -> None:
        """Raise ``ValueError`` unless the file has ``level``."""
        levels = self._read_layout().levels
        if not 0 <= level < len(levels):
            raise ValueError(
                f"{self.path} has levels 0..{len(levels) - 1}, level {level} was asked for"
            )

    def _checked_region(
        self, level: int, left: int, top: int, width: int, height: int
    ) -> tuple[int, int, int, int]:
        """(left, top, width, height) as ints, or ``ValueError`` unless that rectangle lies
        inside ``level``."""
        self._check_level(level)
        left, top, width, height = map(operator.index, (left, top, width, height))
        level_width, level_height = self._read_layout().levels[level]
        inside_x = 0 <= left < left + width <= level_width
        inside_y = 0 <= top < top + height <= level_height
        if not (inside_x and inside_y):
            raise ValueError(
                f"{self.path}: rectangle left={left} top={top} width={width} height={height} "
                f"is not inside level {level} ({level_width}×{level_height})"
            )
        return left, top, width, height

    def _layout_from_file(self) -> Layout:
        raise NotImplementedError

    def _new_lock(self) -> None:
        self._lock = threading.Lock()
        self._lock_pid = os.getpid()

    def _read_layout(self) -> Layout:
        """The layout, read from the file on first use."""
        if self._layout is None:
            # a lock inherited through fork may have been held by a thread of the parent
            if self._lock_pid != os.getpid():
                self._new_lock()
            with self._lock:
                if self._layout is None:
                    self._layout = self._layout_from_file()
        return self._layout
