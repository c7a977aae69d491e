"""The seam between the paint service and where its jobs wait and run.

Two implementations, chosen in ``python -m bot`` by ``ATELIER_REDIS_URL``:

- :class:`bot.embedded_queue.EmbeddedQueue` (the default): the fair queue in memory and one
  local engine process.
- :class:`bot.scaled_queue.ScaledQueue`: jobs wait in Redis and GPU-host agents paint them.

The service (:class:`bot.service.PaintService`) keeps what a member sees: the SQLite rows, the
events, the deliveries. A queue decides the order and runs the jobs, and reports each step as a
:class:`RunUpdate` to the handler the service gives :meth:`JobQueue.serve`. How the service
uses it:

- start: ``reconcile(<SQLite's queued and running jobs>)`` (the embedded queue reloads them, a
  job that was running counts as interrupted; the Redis one matches Redis with SQLite), then
  ``start(after=<the event id stored last>)``, then ``serve(on_update, known)`` as the
  supervised task "paint-run-loop" (the run loop, or the reader of the bot's event stream).
- ``submit()`` / ``reroll()``: validate and store the inputs, then ``admit(job, held=...)``,
  which gives the job's turn and position or raises ``LimitReached``, ``QueueFull`` or
  ``Paused`` with the member's sentence; the SQLite row is written once admitted.
- ``cancel()``: ``cancel(job_id, by_user)`` -> ``CANCELLED`` (it was waiting: the service
  says so now), ``SIGNALLED`` (running: a :class:`RunCancelled` follows) or ``GONE``.
- ``position()``, ``overview()``, the limits and the ETAs read :meth:`JobQueue.view`, a
  snapshot kept current by the queue (synchronous: adapters call these on every status edit).
- close: the supervised task is stopped (a painting in hand of the embedded queue is reported
  as :class:`RunRequeued` ``released``), then ``close()``.

Updates map to the job events members see: ``RunStarted`` -> ``Started`` (a rerun when
``attempt > 1``); ``RunPlanned`` -> the job's work for ETAs; ``RunProgress`` -> ``Progress``;
``RunRequeued`` -> back to QUEUED (a new position, and in the scaled mode a note that it
restarts on another GPU); ``RunDone`` -> ``Finished`` (the result is in the results folder);
``RunFailed`` -> ``Failed``; ``RunCancelled`` -> ``Cancelled``; :class:`QueueMoved` -> new
positions; :class:`BatchTimed` -> the speed of passes of several jobs (for ETAs). A queue that
paints several jobs in one pass reports each job's updates on its own. After handling one with
an ``event_id``, the service stores the id; passing it to ``start`` replays what came after (a
bot restart loses nothing). An outcome may come twice
across a restart (a reconcile at start, then the replayed stream): the second, for a job that
has finished already, is skipped.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final, Protocol

from bot.jobs import Job


class QueueUnavailable(Exception):
    """The queue cannot be used by this process; the message says why and what to change."""


class CancelResult(StrEnum):
    CANCELLED = "cancelled"  # it was waiting; it is gone now
    SIGNALLED = "signalled"  # it is running; its engine stops within one iteration
    GONE = "gone"  # unknown to the queue, or already finished


@dataclass(frozen=True)
class Admission:
    position: int  # 1 = next to run
    turn: int


@dataclass(frozen=True)
class Held:
    """Slots this bot holds for requests still being checked (see :mod:`bot.admission`); they
    count in every limit, in Redis too, as if they were queued paintings."""

    member: int = 0  # the member's own
    chat: int = 0  # the chat's
    queue: int = 0  # all of them


NOTHING_HELD: Final = Held()


@dataclass(frozen=True)
class RunUpdate:
    job_id: str
    event_id: str  # "" when not from an event stream; else store it once handled


@dataclass(frozen=True)
class RunStarted(RunUpdate):
    attempt: int
    worker: str  # "<host>:<device>", or the local engine's device


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
    sent_at: float = 0.0  # unix seconds when the worker sent it (0: not known)


@dataclass(frozen=True)
class RunRequeued(RunUpdate):
    attempt: int  # the attempt that comes next
    # "host_lost", "engine_crashed", "interrupted" (the bot was killed under it): a crash of
    # the job; "released" (its engine or agent was stopped), "readmitted" (Redis lost it): not.
    reason: str


CRASHES: frozenset[str] = frozenset({"host_lost", "engine_crashed", "interrupted"})


@dataclass(frozen=True)
class RunDone(RunUpdate):
    result_path: str
    seconds: float
    work: int
    width: int
    height: int
    png: bytes | None = None  # the result, when already in hand (else read from result_path)
    batch: int = 1  # jobs painted in the same pass (``seconds`` is then the pass's time)


@dataclass(frozen=True)
class RunFailed(RunUpdate):
    code: str
    message: str


@dataclass(frozen=True)
class RunCancelled(RunUpdate):
    by_user: str


@dataclass(frozen=True)
class QueueMoved:
    """The order changed for a reason the service did not see (another bot's jobs)."""


@dataclass(frozen=True)
class BatchTimed:
    """A pass of several jobs finished, every one of them painted: how long it took."""

    size: int
    largest_work: int  # the work of its largest job
    seconds: float


Update = RunUpdate | QueueMoved | BatchTimed
# Handles an update at once; when that needs I/O before the queue's next step (a finished
# painting read from disk and handed out), it returns an awaitable for the queue to await.
UpdateHandler = Callable[[Update], Awaitable[None] | None]
KnownJobs = Callable[[], Sequence[Job]]


@dataclass(frozen=True)
class Reconciled:
    readmitted: list[str] = field(default_factory=list)  # known here, lost by the queue
    cancelled: list[str] = field(default_factory=list)  # in the queue, unknown here
    outcomes: list[RunUpdate] = field(default_factory=list)  # to apply, in order


@dataclass(frozen=True)
class Stranger:
    """A waiting job of another bot process (scaled mode): enough for limits, places, ETAs."""

    platform: str
    chat_id: str
    user_id: str
    work: int


@dataclass(frozen=True)
class QueueView:
    """A snapshot of the queue, for synchronous questions."""

    order: tuple[str, ...] = ()  # waiting job ids, next to run first
    # The waiting jobs grouped into the passes the queue expects to paint them in, in order
    # (:mod:`bot.batching`); empty: each job is a pass of its own.
    passes: tuple[tuple[str, ...], ...] = ()
    # Jobs being painted together in one pass on one device; any other running job has a
    # device of its own.
    running_pass: tuple[str, ...] = ()
    strangers: Mapping[str, Stranger] = field(default_factory=dict)  # other bots' waiting jobs
    busy_elsewhere: int = 0  # jobs of other bots being painted now
    capacity: int = 1  # devices painting for this queue (0: none alive)


class JobQueue(Protocol):
    kind: str  # "embedded" or "scaled"

    @property
    def device_kind(self) -> str:
        """ "cpu" or "gpu": the presets that estimate a job's work, and the first speed."""
        ...

    @property
    def device(self) -> str | None:
        """What paints, in words, for the admin; None when nothing does."""
        ...

    @property
    def up_since(self) -> float | None:
        """When the local engine started (embedded), or Redis answered again (scaled)."""
        ...

    def accepting(self) -> bool:
        """False while new paintings cannot be admitted (Redis unreachable)."""
        ...

    def view(self) -> QueueView: ...

    async def reconcile(self, known: Sequence[Job]) -> Reconciled: ...

    async def start(self, after: str | None = None) -> None: ...

    async def serve(self, on_update: UpdateHandler, known: KnownJobs) -> None: ...

    async def admit(
        self, job: Job, *, held: Held = NOTHING_HELD, wait: float = 0.0
    ) -> Admission: ...

    async def cancel(self, job_id: str, by_user: str) -> CancelResult: ...

    async def close(self) -> None: ...
