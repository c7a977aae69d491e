"""The embedded job queue: the fair queue in memory and one local engine process.

Implements :class:`bot.job_queue.JobQueue`; the default when no Redis is configured. No server
to start: the waiting jobs live here (and as rows in SQLite, which the service writes), the run
loop hands them one at a time to the engine process.

- Fair order: first come, first served, except that no member gets a second job ahead of
  another member's first (round-robin between members, see :func:`run_order`).
- After a restart (:meth:`EmbeddedQueue.reconcile`) queued jobs come back in order; a job that
  was running runs again, and counts as interrupted: one the bot was killed under twice fails.
- If the engine dies, the job in hand is retried once after a restart of the engine; a job that
  kills it twice fails. A graceful stop is not a crash: the job in hand goes back to the front
  of the queue (reported as ``released``). A job past the time limit is stopped and fails.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Final

from bot import replies
from bot.job_queue import (
    NOTHING_HELD,
    Admission,
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
from engine.client import Engine, EngineCrashed, JobUpdate

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]

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
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._engine = engine
        self._results_dir = results_dir
        self._job_timeout = job_timeout
        self._preview_seconds = preview_seconds
        self._default_quality = default_quality
        self._sleep = sleep
        self._waiting: list[Job] = []  # arrival order
        self._running: Job | None = None
        self._current_turn = 0  # the turn of the job started last
        self._cancel_requests: dict[str, str] = {}  # job id -> who asked
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
        return QueueView(order=tuple(job.id for job in run_order(self._waiting)))

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
        active = [self._running] if self._running is not None else []
        turn = next_turn([*active, *self._waiting], (job.platform, job.user_id), self._current_turn)
        job = replace(job, turn=turn)
        self._waiting.append(job)
        position = [j.id for j in run_order(self._waiting)].index(job.id) + 1
        self._wake.set()
        return Admission(position=position, turn=turn)

    async def cancel(self, job_id: str, by_user: str) -> CancelResult:
        if any(job.id == job_id for job in self._waiting):
            self._waiting = [job for job in self._waiting if job.id != job_id]
            return CancelResult.CANCELLED
        if self._running is not None and self._running.id == job_id:
            # The engine stops within one iteration and the run loop reports it.
            self._cancel_requests[job_id] = by_user
            await self._engine.cancel(job_id)
            return CancelResult.SIGNALLED
        return CancelResult.GONE

    # -- the run loop --------------------------------------------------------------------------

    async def serve(self, on_update: UpdateHandler, known: KnownJobs) -> None:
        """Paint the waiting jobs one at a time, for ever; every step goes to ``on_update``."""
        self._on_update = on_update
        errors_in_a_row = 0
        while True:
            while not self._waiting:
                self._wake.clear()
                await self._wake.wait()
            job = run_order(self._waiting)[0]
            self._waiting = [j for j in self._waiting if j.id != job.id]
            try:
                await self._run(job)
                errors_in_a_row = 0
            except asyncio.CancelledError:
                if self._running is not None:
                    # A graceful stop is not a crash: the job runs again first thing, and this
                    # interruption does not count against it.
                    attempt = self._running.attempts + 1
                    self._running = None
                    self._on_update(RunRequeued(job.id, "", attempt, "released"))
                raise
            except Exception:
                errors_in_a_row += 1
                log.exception("job %s: unexpected error in the run loop", job.id)
                if self._running is not None:
                    await self._end(RunFailed(job.id, "", "internal", replies.OUR_FAULT))
            finally:
                self._running = None
            if errors_in_a_row:
                # Something is wrong beyond one job (the disk, the database): don't spin.
                await self._sleep(RUN_LOOP_BACKOFF[min(errors_in_a_row, len(RUN_LOOP_BACKOFF)) - 1])

    def _report(self, update: RunUpdate) -> None:
        """Hand a step of the job in hand to the service (its outcome: :meth:`_end`)."""
        self._on_update(update)

    async def _end(self, update: RunUpdate) -> None:
        """Hand the outcome of the job in hand to the service, and wait for what follows
        from it (a result handed out) before the next job."""
        self._running = None
        pending = self._on_update(update)
        if pending is not None:
            await pending

    async def _run(self, job: Job) -> None:
        job = replace(job, state=JobState.RUNNING, attempts=job.attempts + 1)
        self._running = job
        self._current_turn = max(self._current_turn, job.turn)
        self._report(RunStarted(job.id, "", job.attempts, self._engine.device or "engine"))
        paint = protocol.PaintJob(
            job_id=job.id,
            photo_path=job.photo_path,
            painting_path=job.painting_path,
            result_path=str(self._results_dir / f"{job.id}.png"),
            options=job.options.resolved(self._default_quality),
            preview_every=self._preview_seconds,
            painting2_path=job.painting2_path,
            timelapse=True,  # made while painting or never: every job asks
        )
        try:
            # asyncio.timeout, not wait_for: wait_for on 3.11 can swallow a cancellation that
            # arrives just as the job ends, which would leave the run loop alive at shutdown.
            async with asyncio.timeout(self._job_timeout):
                outcome = await self._engine.run(paint, self._engine_update)
        except TimeoutError:
            await self._stop_overdue(job)
            return
        except EngineCrashed as error:
            await self._after_crash(job, str(error))
            return
        if isinstance(outcome, protocol.JobDone):
            await self._end(
                RunDone(
                    job.id,
                    "",
                    result_path=outcome.result_path,
                    seconds=outcome.seconds,
                    work=outcome.work,
                    width=outcome.width,
                    height=outcome.height,
                )
            )
        elif isinstance(outcome, protocol.JobCancelled):
            await self._end(RunCancelled(job.id, "", self._cancel_requests.pop(job.id, "")))
        else:
            await self._end(RunFailed(job.id, "", outcome.code, outcome.message))

    def _engine_update(self, update: JobUpdate) -> None:
        job = self._running
        if job is None or update.job_id != job.id:
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

    async def _stop_overdue(self, job: Job) -> None:
        log.warning("job %s exceeded the time limit of %.0fs", job.id, self._job_timeout)
        await self._engine.cancel(job.id)
        # The engine was busy with this job; restart it so the next job starts on a clean one.
        await self._restart_engine()
        await self._end(RunFailed(job.id, "", "timeout", replies.too_slow(self._job_timeout)))

    async def _after_crash(self, job: Job, reason: str) -> None:
        job = replace(job, crashes=job.crashes + 1)
        log.error("job %s: engine died (%s); crash %d for this job", job.id, reason, job.crashes)
        await self._restart_engine()
        if job.id in self._cancel_requests:
            await self._end(RunCancelled(job.id, "", self._cancel_requests.pop(job.id)))
        elif job.crashes >= 2:
            await self._end(RunFailed(job.id, "", "engine_crashed", replies.CRASHED_TWICE))
        else:
            self._waiting.insert(0, replace(job, state=JobState.QUEUED))  # it already ran
            await self._end(RunRequeued(job.id, "", job.attempts + 1, "engine_crashed"))
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
