"""The seam between the paint service and where its jobs wait and run.

Two implementations: the embedded queue (memory + SQLite + the local engine process: today's
:class:`bot.service.PaintService` internals, to be moved behind this seam) and
:class:`bot.scaled_queue.ScaledQueue` (Redis and GPU-host agents). Adapters never see it; the
service does. How the service uses it:

- ``start()``: ``start(after=<the event id stored last>)``, then
  ``reconcile(<SQLite's queued and running jobs>)``, then one task consuming ``updates()``.
- ``submit()`` / ``reroll()``: validate and save the inputs as today, then ``admit(job)``, which
  raises ``LimitReached``, ``QueueFull`` or ``Paused`` with the member's sentence; insert the
  SQLite row once admitted.
- ``cancel()``: ``cancel(job_id, by_user)`` -> ``CANCELLED`` (it was waiting: emit
  ``Cancelled`` now), ``SIGNALLED`` (running: a ``RunCancelled`` update follows) or ``GONE``.
- ``position()`` / ``overview()``: ``order()`` (waiting ids in run order); ETAs divide the work
  ahead by ``capacity()`` (devices alive).
- ``close()``: ``close()``.

Each update maps to today's job events: ``RunStarted`` -> ``Started(rerun=attempt > 1)``;
``RunPlanned`` -> the job's work for ETAs; ``RunProgress`` -> ``Progress``; ``RunRequeued`` ->
back to QUEUED with a note "restarting on another GPU (attempt N)"; ``RunDone`` -> ``Finished``
(the result is already in the results folder); ``RunFailed`` -> ``Failed``; ``RunCancelled`` ->
``Cancelled``. After handling one, the service stores its ``event_id``; passing that to
``start`` replays what came after (a bot restart loses nothing). Updates may repeat after a
replay or a reconcile: an outcome for a job that is already terminal is skipped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from bot.jobs import Job


class CancelResult(StrEnum):
    CANCELLED = "cancelled"  # it was waiting; it is gone now
    SIGNALLED = "signalled"  # it is running; its engine stops within one iteration
    GONE = "gone"  # unknown to the queue, or already finished


@dataclass(frozen=True)
class Admission:
    position: int  # 1 = next to run
    turn: int


@dataclass(frozen=True)
class RunUpdate:
    job_id: str
    event_id: str  # store it once handled; start(after=...) replays what follows


@dataclass(frozen=True)
class RunStarted(RunUpdate):
    attempt: int
    worker: str  # "<host>:<device>"


@dataclass(frozen=True)
class RunPlanned(RunUpdate):
    total_work: int


@dataclass(frozen=True)
class RunProgress(RunUpdate):
    attempt: int
    percent: float
    scale: int
    scales: int
    eta: float | None
    preview_jpeg: bytes | None = None
    note: str | None = None
    sent_at: float = 0.0  # unix seconds when the worker sent it


@dataclass(frozen=True)
class RunRequeued(RunUpdate):
    attempt: int  # the attempt that comes next
    reason: str  # "host_lost", "engine_crashed", "released"


@dataclass(frozen=True)
class RunDone(RunUpdate):
    result_path: str
    seconds: float
    work: int
    width: int
    height: int


@dataclass(frozen=True)
class RunFailed(RunUpdate):
    code: str
    message: str


@dataclass(frozen=True)
class RunCancelled(RunUpdate):
    by_user: str


@dataclass(frozen=True)
class Reconciled:
    readmitted: list[str] = field(default_factory=list)  # known here, lost by the queue
    cancelled: list[str] = field(default_factory=list)  # in the queue, unknown here
    outcomes: list[RunUpdate] = field(default_factory=list)  # finished while nobody listened


class JobQueue(Protocol):
    async def start(self, after: str | None = None) -> None: ...

    async def close(self) -> None: ...

    async def admit(self, job: Job) -> Admission: ...

    async def cancel(self, job_id: str, by_user: str) -> CancelResult: ...

    async def order(self) -> list[str]: ...

    async def capacity(self) -> int: ...

    def updates(self) -> AsyncIterator[RunUpdate]: ...

    async def reconcile(self, known: Sequence[Job]) -> Reconciled: ...
