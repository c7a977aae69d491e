"""The embedded job queue: the fair queue in memory and one local engine process.

Implements :class:`bot.job_queue.JobQueue`; the default when no Redis is configured. No server
to start: the waiting jobs live here (and as rows in SQLite, which the service writes), the run
loop hands them to the engine process one pass at a time.

- Fair order: first come, first served, except that no member gets a second job ahead of
  another member's first (round-robin between members, see :func:`run_order`).
- Batches: when the engine can paint several jobs in one pass (``max_batch`` > 1, a GPU), a
  pass is the next job in fair order and the jobs that may share its pass under the rule of
  :mod:`bot.batching` (no member waits longer for it than without batching, beyond one pass's
  duration). A member whose later paintings a pass took early gets their next one after
  those turns, as one at a time. On a CPU every pass is one job, in fair order. Each job of a
  pass keeps its own events, cancel and result; positions and ETAs follow the passes planned.
- After a restart (:meth:`EmbeddedQueue.reconcile`) queued jobs come back in order; a job that
  was running runs again, and counts as interrupted: one the bot was killed under twice fails.
- If the engine dies, the jobs in hand are retried once after a restart of the engine, each at
  the front of its turn; a job that kills it twice fails (a crash counts for every job of the
  pass). A graceful stop is not a crash: the jobs in hand go back to the front of the queue
  (reported as ``released``). A pass past the time limit is stopped and all its jobs still
  painting fail with the time-limit message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Final

from bot import batching, replies
from bot.job_queue import (
    NOTHING_HELD,
    Admission,
    BatchTimed,
    CancelResult,
    Held,
    KnownJobs,
    QueueView,
    Reconciled,
    RunCancelled,
    RunDone,
    RunFailed,
    RunPlanned,
    RunProgress,
    RunRequeued,
    RunStarted,
    RunUpdate,
    UpdateHandler,
)
from bot.jobs import Job, JobState
from engine import protocol, schedule
from engine.client import Engine, EngineCrashed, JobOutcome, JobUpdate

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]
Factor = Callable[[int], float]

RUN_LOOP_BACKOFF: Final = (1.0, 5.0, 30.0)  # seconds after 1, 2, 3+ unexpected errors in a row


def run_order(waiting: list[Job]) -> list[Job]:
    """Fair order of the waiting jobs (given in arrival order): by turn, then arrival."""
    return sorted(waiting, key=lambda job: job.turn)  # stable: arrival order within a turn


def next_turn(active: list[Job], owner: tuple[str, str], current: int) -> int:
    """The round-robin turn of a new job of ``owner``.

    A member's first job joins the turn being served now; each further job of theirs goes one
    turn later than their previous one. So no member gets a second job ahead of another
    member's first, and a newcomer never waits behind everyone's second and third jobs.
    """
    mine = [job.turn for job in active if (job.platform, job.user_id) == owner]
    return max(current, max(mine) + 1) if mine else current


class EmbeddedQueue:
    kind = "embedded"

    def __init__(
        self,
        engine: Engine,
        *,
        results_dir: Path,
        job_timeout: float,
        preview_seconds: float = 6.0,
        default_quality: str = schedule.DEFAULT_QUALITY,
        batch_factor: Factor | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        """``batch_factor(n)``: how many times its largest job's time a pass of n jobs takes
        (the service's learned :meth:`bot.eta.SpeedModel.batch_factor`); ``sleep``: injected
        time, also for the time limit."""
        self._engine = engine
        self._results_dir = results_dir
        self._job_timeout = job_timeout
        self._preview_seconds = preview_seconds
        self._default_quality = default_quality
        self._sleep = sleep
        self._waiting: list[Job] = []  # arrival order
        self._running: dict[str, Job] = {}  # the pass in hand, head first
        self._current_turn = 0  # the turn of the pass started last (its head's)
        # member -> the latest turn of theirs a pass took while serving an earlier turn
        self._served_ahead: dict[tuple[str, str], int] = {}
        self._cancel_requests: dict[str, str] = {}  # job id -> who asked
        # job id -> (device kind, crashes, batch key): a key depends on both
        self._keys: dict[str, tuple[str, int, Hashable]] = {}
        self._batcher = batching.Batcher(
            key=self._batch_key,
            factor=batch_factor or batching.default_factor,
        )
        self._planned: tuple[tuple[object, ...], list[batching.Pass]] | None = None
        self._handing: list[asyncio.Future[None]] = []  # results being handed out
        self._wake = asyncio.Event()
        self._on_update: UpdateHandler = lambda update: None
        self._closed = False

    # -- what the service reads ----------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        return self._engine

    @property
    def device_kind(self) -> str:
        return self._engine.device_kind

    @property
    def device(self) -> str | None:
        return self._engine.device

    @property
    def up_since(self) -> float | None:
        return self._engine.up_since

    def accepting(self) -> bool:
        return True

    def view(self) -> QueueView:
        passes = self._plan()
        return QueueView(
            order=tuple(job.id for group in passes for job in group),
            passes=tuple(tuple(job.id for job in group) for group in passes),
            running_pass=tuple(self._running),
        )

    def _plan(self) -> list[batching.Pass]:
        """The passes expected for the waiting jobs, kept until something changes (every
        change of the delays comes with a change of the waiting jobs)."""
        max_batch = self._max_batch()
        state = (
            tuple((job.id, job.turn, job.crashes) for job in self._waiting),
            max_batch,
            tuple(self._batcher.factor(size) for size in range(2, max_batch + 1)),
            self.device_kind,
        )
        if self._planned is None or self._planned[0] != state:
            self._planned = (state, self._batcher.plan(run_order(self._waiting), max_batch))
        return self._planned[1]

    def _max_batch(self) -> int:
        return max(1, self._engine.max_batch)

    def _batch_key(self, job: Job) -> Hashable:
        kind = self.device_kind
        known = self._keys.get(job.id)
        if known is None or known[:2] != (kind, job.crashes):
            known = (kind, job.crashes, batching.batch_key(job, kind, self._default_quality))
            self._keys[job.id] = known
        return known[2]

    # -- life cycle ----------------------------------------------------------------------------

    async def reconcile(self, known: Sequence[Job]) -> Reconciled:
        """Reload the queue after a restart; a job that was running runs again, once."""
        report = Reconciled()
        for job in known:
            if job.state is JobState.RUNNING:
                # Still RUNNING: the bot did not stop gracefully (killed, crashed, power cut),
                # and the engine went with it. That counts as a crash of this job.
                job = replace(job, crashes=job.crashes + 1)
                if job.crashes >= 2:
                    report.outcomes.append(
                        RunFailed(job.id, "", "engine_crashed", replies.INTERRUPTED_TWICE)
                    )
                    continue
                job = replace(job, state=JobState.QUEUED)
                report.outcomes.append(RunRequeued(job.id, "", job.attempts + 1, "interrupted"))
                log.info("job %s was running when the bot stopped; queued to run again", job.id)
            elif job.state is not JobState.QUEUED:
                continue
            self._waiting.append(job)
        if self._waiting:
            log.info("recovered %d queued jobs", len(self._waiting))
            self._wake.set()
        return report

    async def start(self, after: str | None = None) -> None:
        await self._engine.start()

    async def close(self) -> None:
        self._closed = True
        try:
            await self._engine.close()
        except Exception:
            log.exception("closing the engine failed")

    # -- member actions ------------------------------------------------------------------------

    async def admit(self, job: Job, *, held: Held = NOTHING_HELD, wait: float = 0.0) -> Admission:
        """Queue ``job`` at its fair place. The service checked the limits already (on the same
        jobs and reservations), so nothing is refused here."""
        active = [*self._running.values(), *self._waiting]
        owner = (job.platform, job.user_id)
        turn = next_turn(active, owner, self._current_turn)
        # A pass that took this member's later turns early does not move their next painting
        # ahead: it goes after those turns, as it would have one at a time.
        turn = max(turn, self._served_ahead.get(owner, -1) + 1)
        job = replace(job, turn=turn)
        painting = list(self._running.values())
        self._batcher.delays[job.id] = self._batcher.delay_on_arrival(job, painting)
        self._waiting.append(job)
        position = self.view().order.index(job.id) + 1
        self._wake.set()
        return Admission(position=position, turn=turn)

    async def cancel(self, job_id: str, by_user: str) -> CancelResult:
        if any(job.id == job_id for job in self._waiting):
            self._waiting = [job for job in self._waiting if job.id != job_id]
            self._forget(job_id)
            return CancelResult.CANCELLED
        if job_id in self._running:
            # The engine stops this job within one iteration (the rest of its pass goes on),
            # and the run loop reports it.
            self._cancel_requests[job_id] = by_user
            await self._engine.cancel(job_id)
            return CancelResult.SIGNALLED
        return CancelResult.GONE

    def _forget(self, job_id: str) -> None:
        self._batcher.forget(job_id)
        self._keys.pop(job_id, None)

    # -- the run loop --------------------------------------------------------------------------

    async def serve(self, on_update: UpdateHandler, known: KnownJobs) -> None:
        """Paint the waiting jobs a pass at a time, for ever; every step goes to
        ``on_update``."""
        self._on_update = on_update
        errors_in_a_row = 0
        while True:
            while not self._waiting:
                self._wake.clear()
                await self._wake.wait()
            order = run_order(self._waiting)
            chosen = self._plan()[0]
            self._batcher.charge(order, chosen)
            members = {job.id for job in chosen}
            self._waiting = [j for j in self._waiting if j.id not in members]
            try:
                await self._paint(chosen)
                errors_in_a_row = 0
            except asyncio.CancelledError:
                # A graceful stop is not a crash: the jobs run again first thing, and this
                # interruption does not count against them.
                for job in self._take_running():
                    self._on_update(RunRequeued(job.id, "", job.attempts + 1, "released"))
                for handing in self._handing:
                    handing.cancel()
                raise
            except Exception:
                errors_in_a_row += 1
                log.exception("pass of %s: unexpected error in the run loop", ", ".join(members))
                for job in self._take_running():
                    self._end(RunFailed(job.id, "", "internal", replies.OUR_FAULT))
                try:
                    await self._handed()
                except Exception:
                    log.exception("handing out the outcomes of a failed pass failed")
            finally:
                self._running = {}
                self._handing = []
                waiting = {job.id for job in self._waiting}
                for job_id in members - waiting:
                    self._keys.pop(job_id, None)
            if errors_in_a_row:
                # Something is wrong beyond one job (the disk, the database): don't spin.
                await self._sleep(RUN_LOOP_BACKOFF[min(errors_in_a_row, len(RUN_LOOP_BACKOFF)) - 1])

    def _take_running(self) -> list[Job]:
        """The jobs of the pass still in hand, head first; none is in hand afterwards."""
        jobs = list(self._running.values())
        self._running = {}
        return jobs

    def _report(self, update: RunUpdate) -> None:
        """Hand a step of a job in hand to the service (its outcome: :meth:`_end`)."""
        self._on_update(update)

    def _end(self, update: RunUpdate) -> None:
        """Hand the outcome of a job to the service; what follows from it (a result handed
        out) is awaited before the next pass (:meth:`_handed`)."""
        pending = self._on_update(update)
        if pending is not None:
            self._handing.append(asyncio.ensure_future(pending))

    async def _handed(self) -> None:
        """Wait for the results of the pass to be handed out; the first error is raised."""
        handing, self._handing = self._handing, []
        results = await asyncio.gather(*handing, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _paint(self, chosen: Sequence[Job]) -> None:
        jobs = [replace(job, state=JobState.RUNNING, attempts=job.attempts + 1) for job in chosen]
        self._running = {job.id: job for job in jobs}
        self._current_turn = max(self._current_turn, jobs[0].turn)
        served = {o: t for o, t in self._served_ahead.items() if t > self._current_turn}
        for job in jobs:
            if job.turn > self._current_turn:
                owner = (job.platform, job.user_id)
                served[owner] = max(served.get(owner, job.turn), job.turn)
        self._served_ahead = served
        if len(jobs) > 1:
            log.info("painting %d jobs in one pass: %s", len(jobs), ", ".join(self._running))
        for job in jobs:
            self._report(RunStarted(job.id, "", job.attempts, self._engine.device or "engine"))
        done: list[protocol.JobDone] = []

        def outcome(message: JobOutcome) -> None:
            if self._running.pop(message.job_id, None) is None:
                return
            if isinstance(message, protocol.JobDone):
                done.append(message)
            by_user = self._cancel_requests.pop(message.job_id, "")
            self._end(self._outcome(message, len(jobs), by_user))

        try:
            painted = await self._within_limit(
                self._engine.run_batch(
                    [self._paint_job(job) for job in jobs], self._engine_update, outcome
                )
            )
        except EngineCrashed as error:
            await self._after_crash(str(error))
        else:
            if not painted:
                await self._stop_overdue()
            elif len(jobs) > 1 and len(done) == len(jobs):
                largest = max(message.work for message in done)
                self._on_update(BatchTimed(len(jobs), largest, max(m.seconds for m in done)))
        await self._handed()

    def _paint_job(self, job: Job) -> protocol.PaintJob:
        return protocol.PaintJob(
            job_id=job.id,
            photo_path=job.photo_path,
            painting_path=job.painting_path,
            result_path=str(self._results_dir / f"{job.id}.png"),
            options=job.options.resolved(self._default_quality),
            preview_every=self._preview_seconds,
            painting2_path=job.painting2_path,
            timelapse=True,  # made while painting or never: every job asks
        )

    def _outcome(self, message: JobOutcome, batch: int, by_user: str) -> RunUpdate:
        if isinstance(message, protocol.JobDone):
            return RunDone(
                message.job_id,
                "",
                result_path=message.result_path,
                seconds=message.seconds,
                work=message.work,
                width=message.width,
                height=message.height,
                batch=batch,
            )
        if isinstance(message, protocol.JobCancelled):
            return RunCancelled(message.job_id, "", by_user)
        return RunFailed(message.job_id, "", message.code, message.message)

    async def _within_limit(self, painting: Awaitable[None]) -> bool:
        """Await ``painting`` for up to the time limit (on the injected clock); False when the
        limit came first (the painting is then abandoned, its engine still busy with it)."""
        task = asyncio.ensure_future(painting)
        limit = asyncio.ensure_future(self._sleep(self._job_timeout))
        try:
            await asyncio.wait((task, limit), return_when=asyncio.FIRST_COMPLETED)
        finally:
            # Also on a cancellation from outside (shutdown), which then goes on.
            limit.cancel()
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if task.cancelled():
            return False
        task.result()  # an engine crash is raised here
        return True

    def _engine_update(self, update: JobUpdate) -> None:
        job = self._running.get(update.job_id)
        if job is None:
            return
        if isinstance(update, protocol.JobStarted):
            if update.total_work:
                self._report(RunPlanned(job.id, "", update.total_work))
            return
        self._report(
            RunProgress(
                job.id,
                "",
                attempt=job.attempts,
                percent=update.percent,
                scale=update.scale,
                scales=update.scales,
                eta=update.eta,
                preview_jpeg=update.preview_jpeg,
                note=update.note,
            )
        )

    async def _stop_overdue(self) -> None:
        jobs = self._take_running()
        log.warning(
            "pass of %s exceeded the time limit of %.0fs",
            ", ".join(job.id for job in jobs),
            self._job_timeout,
        )
        for job in jobs:
            await self._engine.cancel(job.id)
        # The engine was busy with this pass; restart it so the next starts on a clean one.
        await self._restart_engine()
        for job in jobs:
            self._cancel_requests.pop(job.id, None)
            self._end(RunFailed(job.id, "", "timeout", replies.too_slow(self._job_timeout)))

    async def _after_crash(self, reason: str) -> None:
        jobs = [replace(job, crashes=job.crashes + 1) for job in self._take_running()]
        for job in jobs:
            log.error(
                "job %s: engine died (%s); crash %d for this job", job.id, reason, job.crashes
            )
        await self._restart_engine()
        again: list[Job] = []
        for job in jobs:
            if job.id in self._cancel_requests:
                self._end(RunCancelled(job.id, "", self._cancel_requests.pop(job.id)))
            elif job.crashes >= 2:
                self._end(RunFailed(job.id, "", "engine_crashed", replies.CRASHED_TWICE))
            else:
                again.append(replace(job, state=JobState.QUEUED))  # it already ran
        # Each at the front of its turn (the order is by turn, then arrival), as it was.
        self._waiting[0:0] = again
        for job in again:
            self._end(RunRequeued(job.id, "", job.attempts + 1, "engine_crashed"))
        if again:
            self._wake.set()

    async def _restart_engine(self) -> None:
        delay = 1.0
        while not self._closed:
            try:
                await self._engine.restart()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("engine restart failed; trying again in %.0fs", delay)
                await self._sleep(delay)
                delay = min(delay * 2, 60.0)
