"""The jobs in hand: this bot's waiting and running jobs, each state written to SQLite first.

The service keeps its jobs here between admission and their end: the copies its queries and
events read (with the status message, the work the engine planned, the attempts), and how far
each running one has got. Every change goes through :meth:`Ledger.save`: a write that fails (a
full disk, a locked database) is logged and its state kept, to be written again with the next
change (:meth:`Ledger.save_again`), so the caller's event goes out all the same and the queue
goes on. A finished job leaves the ledger; SQLite has it (or the unsaved states, until written).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import replace

from bot import replies
from bot.errors import JobNotFound
from bot.jobs import Job, JobState
from bot.store import Store

log = logging.getLogger(__name__)

Clock = Callable[[], float]


class Ledger:
    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock
        self._jobs: dict[str, Job] = {}  # by arrival
        self._unsaved: dict[str, Job] = {}  # states whose write failed, oldest first
        self.progress: dict[str, tuple[float, float | None]] = {}  # running: percent, eta

    def load(self, states: Iterable[JobState]) -> list[Job]:
        """Take the jobs SQLite has in ``states`` in hand (at start); they are returned."""
        jobs = self._store.jobs_in(states)
        self._jobs = {job.id: job for job in jobs}
        return jobs

    def find(self, job_id: str) -> Job | None:
        """The job in hand, or None."""
        return self._jobs.get(job_id)

    def get(self, job_id: str) -> Job:
        """Any job: in hand, unsaved or stored; :class:`JobNotFound` if none."""
        job = self._jobs.get(job_id) or self._unsaved.get(job_id) or self._store.get_job(job_id)
        if job is None:
            raise JobNotFound(replies.NOT_FOUND)
        return job

    def active(self) -> list[Job]:
        """The jobs in hand (waiting or running), by arrival."""
        return list(self._jobs.values())

    def running(self) -> list[Job]:
        """The running ones, started first first."""
        running = [job for job in self._jobs.values() if job.state is JobState.RUNNING]
        return sorted(running, key=lambda job: job.started_at or 0.0)

    def percent(self, job_id: str) -> float:
        return self.progress.get(job_id, (0.0, None))[0]

    def add(self, job: Job) -> None:
        """A new job: its row is inserted (raising if that fails), then it is in hand."""
        self._store.insert_job(job)
        self._jobs[job.id] = job

    def keep(self, job: Job) -> None:
        """Replace the copy in hand (a change written elsewhere, such as the status message)."""
        if job.id in self._jobs:
            self._jobs[job.id] = job

    def let_go(self, job_id: str) -> None:
        """Out of hand without an end (the bot stops; the next start takes it up again)."""
        self._jobs.pop(job_id, None)
        self.progress.pop(job_id, None)

    def save(self, job: Job) -> bool:
        """Write ``job``'s state; if that fails, log it and keep the state to write again
        later. Never raises."""
        self.keep(job)
        try:
            self._store.save_job(job)
        except sqlite3.Error as error:
            log.error(
                "job %s: could not write its state %s (%s); trying again later",
                job.id,
                job.state.value,
                error,
            )
            self._unsaved[job.id] = job
            return False
        self._unsaved.pop(job.id, None)
        return True

    def save_again(self) -> None:
        """Write the states whose write failed before, oldest first; stop at the first failure."""
        for job in list(self._unsaved.values()):
            try:
                self._store.save_job(job)
            except sqlite3.Error:
                return
            log.info("job %s: its state %s is written now", job.id, job.state.value)
            self._unsaved.pop(job.id, None)

    def finish(self, job: Job, state: JobState, **changes: object) -> Job:
        """End ``job`` in ``state`` (saved), out of hand; the finished job."""
        job = replace(job, state=state, finished_at=self._clock(), **changes)  # type: ignore[arg-type]
        self.save(job)
        self._jobs.pop(job.id, None)
        self.progress.pop(job.id, None)
        return job
