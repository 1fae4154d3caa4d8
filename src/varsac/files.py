"""Files that readers never see half-written: written under a temporary name, then renamed.

The temporary file lies beside its target (same folder, so the rename is
atomic) under a hidden name ending in ``PARTIAL_SUFFIX``. A write that fails
or is interrupted removes it; a process killed outright leaves it behind,
and ``remove_partial_files`` clears such debris before work resumes.
"""

import csv
import errno
import io
import json
import logging
import os
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

from varsac.errors import ConfigError

log = logging.getLogger(__name__)

PARTIAL_SUFFIX = ".partial"

# A run directory's final metrics and checkpoints, written last by varsac fit and test: a run
# directory without it did not finish (varsac report relies on it).
RESULTS_FILE = "results.json"

# What a write gets when the disc is full, the user's quota is spent or a file-size limit
# (ulimit -f) is reached.
NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class NoSpaceError(OSError):
    """A write that failed for want of space; the message names the file and what to do."""


def is_out_of_space(error: BaseException) -> bool:
    """Whether ``error`` (an OSError, or a libvips error that only quotes the system's words)
    says the disc, the quota or the file-size limit is full."""
    if isinstance(error, OSError) and error.errno in NO_SPACE_ERRNOS:
        return True
    return any(os.strerror(code) in str(error) for code in NO_SPACE_ERRNOS)


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path to write ``path``'s content to; renamed to ``path`` when the block ends.

    If the block raises, the temporary file is removed and ``path`` is left as it was; a
    write that ran out of space raises ``NoSpaceError`` naming ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}{PARTIAL_SUFFIX}")
    try:
        yield partial
        os.replace(partial, path)
    except Exception as error:
        if not is_out_of_space(error) or isinstance(error, NoSpaceError):
            raise
        reason = " ".join(str(error).split())
        raise NoSpaceError(
            f"no space left to write {path} ({reason}); nothing half-written was kept: free "
            "some space (or write elsewhere) and run the same command again"
        ) from error
    finally:
        partial.unlink(missing_ok=True)


def replace_atomically(path: str | os.PathLike[str], write: Callable[[IO[bytes]], object]) -> None:
    """Create or replace ``path`` with what ``write(file)`` writes, atomically."""
    with atomic_path(path) as partial, partial.open("xb") as handle:
        write(handle)


def write_csv_atomically(
    path: str | os.PathLike[str], header: Sequence[str], rows: Iterable[Sequence[object]]
) -> None:
    """Create or replace the CSV file ``path`` (``header``, then ``rows``), atomically."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    encoded = text.getvalue().encode()
    replace_atomically(path, lambda handle: handle.write(encoded))


def write_png_atomically(path: str | os.PathLike[str], picture: "Image.Image") -> None:
    """Create or replace the PNG file ``path`` with the PIL image ``picture``, atomically."""
    with atomic_path(path) as partial:
        picture.save(partial, format="PNG")


def save_npz_atomically(path: str | os.PathLike[str], **arrays: np.ndarray) -> None:
    """Write ``arrays`` to the compressed ``.npz`` file ``path``, atomically."""
    replace_atomically(path, lambda handle: np.savez_compressed(handle, **arrays))


def partial_files(folder: str | os.PathLike[str]) -> list[Path]:
    """Temporary files under ``folder`` (at any depth) left by writes that were killed."""
    return sorted(Path(folder).rglob(f".*{PARTIAL_SUFFIX}"))


def remove_partial_files(folder: str | os.PathLike[str]) -> int:
    """Delete ``partial_files(folder)``; return how many there were.

    Only for folders no other process is writing to at the same time.
    """
    found = partial_files(folder)
    for path in found:
        path.unlink(missing_ok=True)
    return len(found)


def settings_changed(path: str | os.PathLike[str], settings: dict[str, object]) -> str | None:
    """Compare ``settings`` with those recorded in the JSON file ``path``.

    Records them (atomically) when there is no file yet. Returns None when they
    agree, else the differences as text (``"size: 512 → 1024"``).
    """
    path = Path(path)
    if not path.is_file():
        encoded = json.dumps(settings, indent=2, sort_keys=True).encode()
        replace_atomically(path, lambda handle: handle.write(encoded))
        return None
    before = json.loads(path.read_text())
    changed = {k: (before.get(k), v) for k, v in settings.items() if before.get(k) != v}
    return ", ".join(f"{k}: {old} → {new}" for k, (old, new) in changed.items()) or None


def resume_folder(folder: Path, settings_name: str, settings: dict[str, object], what: str) -> None:
    """Make ``folder`` ready for a generator to resume in: create it, refuse it (naming the
    difference) if it holds ``what`` made with other ``settings`` than those recorded in
    ``folder/settings_name``, and clear the partial files of a killed run."""
    folder.mkdir(parents=True, exist_ok=True)
    changed = settings_changed(folder / settings_name, settings)
    if changed:
        raise ConfigError(
            f"{folder} holds {what} made with other settings ({changed}): generate into another "
            f"dst, or delete {folder} to start over"
        )
    removed = remove_partial_files(folder)
    if removed:
        log.info("removed %d partial file(s) left by an interrupted run", removed)
