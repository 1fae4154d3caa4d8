"""What the data set generators share: drawing items on processes, and the record of a run.

``varsac data megapixel_mnist`` and ``varsac data starcraft`` draw every image
in a worker process and write it atomically, so an interrupted run resumes; a
generator lists what is still to draw, hands it to ``draw_on_processes`` and
returns a ``Generated``.
"""

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Generic, TypeVar

from tqdm import tqdm

# A task is at most this many items, and at least four tasks go to every process, so
# that the progress bar moves and the processes finish together.
MAX_ITEMS_PER_TASK = 8
TASKS_PER_PROCESS = 4

Row = TypeVar("Row")
Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass
class Generated(Generic[Row]):
    """What a generator did: every row of its listing, and how many items it drew."""

    rows: list[Row]  # as written to the set's index
    generated: int  # items drawn and written by this call
    already_done: int  # items whose files existed already
    seconds: float

    def drawn(self, unit: str) -> str:
        """``"drew 12 image(s) in 3.0 s (4.00 per second), 8 drawn before"``."""
        rate = self.generated / self.seconds if self.seconds else 0.0
        return (
            f"drew {self.generated} {unit}(s) in {self.seconds:.1f} s ({rate:.2f} per second), "
            f"{self.already_done} drawn before"
        )


def draw_on_processes(
    draw: Callable[[list[Item]], list[Result]],
    todo: Sequence[Item],
    workers: int | None,
    unit: str,
    desc: str,
) -> list[Result]:
    """``draw`` (picklable: a module-level function or a ``functools.partial`` of one) on
    slices of ``todo``, on ``workers`` processes (None: one per core), with a progress bar
    of ``unit``s; the results of all items, in the order the slices finished.

    The processes are spawned, not forked: libvips, which writes the images, must not run
    in a child forked from a parent that used its threads.
    """
    if not todo:
        return []
    processes = min(workers or os.cpu_count() or 1, len(todo))
    per_task = max(1, min(MAX_ITEMS_PER_TASK, len(todo) // (TASKS_PER_PROCESS * processes)))
    results: list[Result] = []
    pool = ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"))
    try:
        futures = [
            pool.submit(draw, list(todo[first : first + per_task]))
            for first in range(0, len(todo), per_task)
        ]
        with tqdm(total=len(todo), desc=desc, unit=unit) as progress:
            for future in as_completed(futures):
                done = future.result()
                results.extend(done)
                progress.update(len(done))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return results
