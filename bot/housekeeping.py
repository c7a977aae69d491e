"""Housekeeping: members' files deleted after the retention period, their records later.

Two steps, in batches, in a thread of their own with their own SQLite connection, so that a
long history never holds up the event loop (the service runs :func:`sweep` through
``asyncio.to_thread`` every hour):

1. *Files*: a job finished more than ``ATELIER_RETENTION_HOURS`` ago loses its result file and
   its timelapse (:mod:`bot.timelapses`) and, when no job whose files are kept still uses them,
   its inputs (photo, painting, a blend's second painting; a painting is often shared by many
   jobs, stored once by content hash). The row stays, marked purged.
2. *Records*: a purged job's row (the member's name and id, the chat, the options) is deleted
   ``ATELIER_FORGET_DAYS`` after the job finished.

Inputs and admission race: a new request may bring a file that an expiring job used, just as
the sweep decides it is no longer needed. :class:`InputClaims` closes that gap: the service
claims its input files (under the claims' lock) before its job row exists, and the sweep
deletes an input only under the same lock, when nobody claims it and no kept row uses it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from bot import timelapses
from bot.store import Store
from engine import files

log = logging.getLogger(__name__)

BATCH: Final = 200  # jobs per transaction
INPUT_SUFFIX: Final = ".img"  # how the service names stored inputs
PARTIAL_AGE: Final = 3600.0  # a partial file this old belongs to a write that died


class InputClaims:
    """Input files some request is about to use, safe from deletion until released."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._claimed: Counter[str] = Counter()

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        with self._lock:
            yield

    def hold(self, paths: Iterable[str]) -> None:
        """Claim ``paths`` (call with :meth:`locked` held, after checking they exist)."""
        self._claimed.update(paths)

    def release(self, paths: Iterable[str]) -> None:
        with self._lock:
            self._claimed.subtract(paths)
            self._claimed = +self._claimed  # drop the zeros

    def claimed(self, path: str) -> bool:
        return self._claimed[path] > 0

    def delete_unused(self, store: Store, paths: Iterable[str]) -> int:
        """Delete each input file that no kept job uses and nobody claims; how many went."""
        deleted = 0
        for path in dict.fromkeys(paths):
            with self._lock:
                if self.claimed(path) or store.input_in_use(path):
                    continue
                try:
                    Path(path).unlink()
                except FileNotFoundError:
                    continue
            deleted += 1
        return deleted


def _orphan_candidates(inputs_dir: Path) -> list[str]:
    """Every stored input (their rows decide), and partial files of failed writes."""
    found = []
    for path in inputs_dir.iterdir():
        if path.name.startswith(".") and path.name.endswith(files.PARTIAL_SUFFIX):
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_mtime < time.time() - PARTIAL_AGE:
                    path.unlink()
        elif path.suffix == INPUT_SUFFIX:
            found.append(str(path))
    return found


@dataclass(frozen=True)
class SweepReport:
    purged: int  # jobs whose files were deleted
    inputs: int  # input files deleted
    forgotten: int  # job rows deleted
    seconds: float
    counts: dict[str, int] = field(default_factory=dict)  # jobs by state, after the sweep
    average_seconds: float | None = None  # painting time of the jobs done


def sweep(
    database: Path,
    inputs_dir: Path,
    claims: InputClaims,
    *,
    files_before: float,
    rows_before: float,
    batch: int = BATCH,
    should_stop: Callable[[], bool] = lambda: False,
) -> SweepReport:
    """Delete expired files, then forget old rows; blocking: run it in a thread.

    Opens its own connection to ``database``. Each batch is one transaction, so the service's
    own writes wait at most one batch. ``should_stop`` is asked between batches (shutdown).
    A result is deleted before its row says so (a crash in between leaves a row whose file is
    gone, which the next sweep finishes); inputs after, and any input file no kept row names
    (left by a crash, or a write that failed) goes in the same sweep.
    """
    started = time.perf_counter()
    purged = inputs = forgotten = 0
    store = Store.open(database)
    try:
        while not should_stop():
            expired = store.expired_jobs(files_before, limit=batch)
            if not expired:
                break
            with store.transaction():
                for job in expired:
                    if job.result_path:
                        timelapses.delete(job.result_path)
                        Path(job.result_path).unlink(missing_ok=True)
                    store.mark_purged(job.id)
            # After the commit: the rows above no longer keep their inputs.
            inputs += claims.delete_unused(
                store, (path for job in expired for path in job.input_paths)
            )
            purged += len(expired)
        if not should_stop() and inputs_dir.is_dir():
            inputs += claims.delete_unused(store, _orphan_candidates(inputs_dir))
        while not should_stop():
            with store.transaction():
                count = store.forget(rows_before, batch)
            forgotten += count
            if count < batch:
                break
        counts, average = store.count_by_state(), store.average_seconds()
    finally:
        store.close()
    report = SweepReport(purged, inputs, forgotten, time.perf_counter() - started, counts, average)
    if purged or forgotten:
        log.info(
            "housekeeping: deleted the files of %d expired jobs (%d inputs) and forgot %d old "
            "jobs in %.2f s",
            purged,
            inputs,
            forgotten,
            report.seconds,
        )
    return report
