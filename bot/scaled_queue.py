"""The scaled mode's job queue for the bot: jobs wait in Redis and GPU-host agents paint them.

Implements :class:`bot.job_queue.JobQueue`. Fair order and the per-member, per-chat and global
limits are decided inside one Redis script (:mod:`engine.redis_scripts`), so several bot
processes admit against the same counters without races; a refusal comes back as a code and is
worded here with the embedded mode's sentences. While Redis cannot be reached, admissions are
refused with :class:`~bot.errors.Paused`; nothing already admitted is lost (Redis keeps it, the
SQLite row keeps it for :meth:`ScaledQueue.reconcile`).

One reader task follows this bot's event stream (``XREAD BLOCK`` <= 2 s on a connection of its
own) and turns events into :class:`~bot.job_queue.RunUpdate` values; a finished painting's PNG
is fetched from its blob and written to the results folder first. A reaper task takes back the
jobs of dead hosts, as every agent does too (idempotent).

Never imports discord, aiogram or torch.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bot import replies
from bot.errors import LimitReached, Paused, QueueFull, UserFacingError
from bot.job_queue import (
    Admission,
    CancelResult,
    Reconciled,
    RunCancelled,
    RunDone,
    RunFailed,
    RunPlanned,
    RunProgress,
    RunRequeued,
    RunStarted,
    RunUpdate,
)
from bot.jobs import Job
from bot.settings import Limits
from engine import redis_jobs
from engine.redis_jobs import AdmitLimits, Admitted, Event, NewJob, RedisJobs, check_cancelled

log = logging.getLogger(__name__)

UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OutOfMemoryError, ReadOnlyError, OSError)
PAUSED = replies.PAUSED
RESULT_LOST = "The painting was finished but its result was lost on the way. Please send it again."
# Re-admission after Redis lost its data: the job was admitted once already.
UNLIMITED = AdmitLimits(per_member=1_000_000, queue=1_000_000, per_chat=1_000_000)


def refusal(reason: str, count: int, limits: Limits, wait_seconds: float) -> UserFacingError:
    """The embedded mode's refusal (same class, same sentence) for an admit script's code."""
    if reason == "member":
        return LimitReached(replies.in_progress(count, limits.per_member))
    if reason == "queue":
        return QueueFull(replies.queue_full(count, wait_seconds))
    if reason == "chat":
        return QueueFull(replies.chat_queue_full(count, wait_seconds))
    raise ValueError(f"unknown refusal {reason!r}")


class ScaledQueue:
    def __init__(
        self,
        url: str,
        *,
        bot_id: str,
        limits: Limits,
        results_dir: Path,
        preview_seconds: float = 6.0,
        slot_wait: Callable[[], float] = lambda: 60.0,
        reap_every: float = 5.0,
        lease: float = redis_jobs.LEASE,
        block_ms: int = redis_jobs.BLOCK_MS,
        keys: redis_jobs.Keys | None = None,
    ) -> None:
        self._url = url
        self.bot_id = bot_id
        self._limits = limits
        self._results_dir = results_dir
        self._preview_seconds = preview_seconds
        self._slot_wait = slot_wait
        self._reap_every = reap_every
        self._block_ms = block_ms
        self._client = redis_jobs.connect(url)
        self._reader_client: aioredis.Redis | None = None  # blocking reads: a connection of its own
        self.jobs = RedisJobs(self._client, keys=keys, lease=lease)
        self._updates: asyncio.Queue[RunUpdate] = asyncio.Queue()
        self._after = "0"
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self.reachable = True

    # -- life cycle ----------------------------------------------------------------------------

    async def start(self, after: str | None = None) -> None:
        """Follow the event stream from ``after`` (the id stored last; None: from the start)."""
        self._after = after or "0"
        self._results_dir.mkdir(parents=True, exist_ok=True)
        self._reader_client = redis_jobs.connect(self._url)
        self._tasks = [
            asyncio.create_task(self._read_loop(), name="scaled-queue-reader"),
            asyncio.create_task(self._reap_loop(), name="scaled-queue-reaper"),
        ]

    async def close(self) -> None:
        # The reader is not cancelled in the middle of its blocking read (that can leave the
        # connection out of step, and redis-py may swallow the cancellation): it sees the flag
        # when the read returns, within one BLOCK.
        self._closing = True
        if self._tasks:
            reader, *others = self._tasks
            for task in others:
                task.cancel()
            await asyncio.wait([reader], timeout=self._block_ms / 1000 + 5)
            reader.cancel()  # only if it is stuck beyond that
            await asyncio.wait(self._tasks, timeout=5)
        self._tasks.clear()
        if self._reader_client is not None:
            await self._reader_client.aclose()
        await self._client.aclose()

    @property
    def last_read_id(self) -> str:
        """The id of the last event the reader has taken from the stream."""
        return self._after

    # -- JobQueue ------------------------------------------------------------------------------

    async def admit(self, job: Job) -> Admission:
        limits = AdmitLimits(
            per_member=self._limits.per_member,
            queue=self._limits.queue,
            per_chat=self._limits.queue_per_chat,
        )
        try:
            result = await self._admit(job, limits)
        except UNREACHABLE as error:
            self.reachable = False
            log.warning("job %s not admitted: Redis unreachable (%s)", job.id, error)
            raise Paused(PAUSED) from None
        self.reachable = True
        if isinstance(result, Admitted):
            return Admission(position=result.position, turn=result.turn)
        if result.reason == "duplicate":
            raise RuntimeError(f"job id {job.id} is already in the queue")
        raise refusal(result.reason, result.count, self._limits, self._slot_wait())

    async def cancel(self, job_id: str, by_user: str) -> CancelResult:
        try:
            answer = await self.jobs.cancel(job_id, by_user)
        except UNREACHABLE as error:
            log.warning("job %s not cancelled: Redis unreachable (%s)", job_id, error)
            raise Paused(PAUSED) from None
        if answer == "cancelled":
            return CancelResult.CANCELLED
        if answer == "signalled":
            return CancelResult.SIGNALLED
        return CancelResult.GONE

    async def order(self) -> list[str]:
        return await self.jobs.waiting()

    async def capacity(self) -> int:
        return await self.jobs.devices_alive()

    async def updates(self) -> AsyncIterator[RunUpdate]:
        while True:
            yield await self._updates.get()

    async def reconcile(self, known: Sequence[Job]) -> Reconciled:
        """Match the queue with the jobs SQLite says are queued or running for this bot.

        A job the queue has lost (Redis restarted without its data) is admitted again from the
        input files; a job in the queue that SQLite does not know is cancelled; a known job
        that finished while its events were trimmed away gives its outcome.
        """
        report = Reconciled()
        active = [job for job in known if not job.state.terminal]
        ids = {job.id for job in active}
        for stray in sorted(await self.jobs.bot_jobs(self.bot_id) - ids):
            await self.jobs.cancel(stray, "reconcile")
            report.cancelled.append(stray)
        for job in active:
            fields = await self.jobs.job(job.id)
            if fields is None:
                await self._admit(job, UNLIMITED)
                report.readmitted.append(job.id)
                continue
            state = fields.get("state", "")
            if state in redis_jobs.OUTCOMES:
                event = Event(id="", type=state, job_id=job.id, attempt=0, fields=fields)
                if state == redis_jobs.CANCELLED:
                    event.fields["by"] = fields.get("cancel", "")
                update = await self._to_update(event)
                if update is not None:
                    report.outcomes.append(update)
        if report.readmitted or report.cancelled or report.outcomes:
            log.info(
                "reconciled with Redis: %d admitted again, %d cancelled, %d outcomes recovered",
                len(report.readmitted),
                len(report.cancelled),
                len(report.outcomes),
            )
        return report

    # -- inside --------------------------------------------------------------------------------

    async def _admit(self, job: Job, limits: AdmitLimits) -> Admitted | redis_jobs.Refused:
        photo, painting = await asyncio.to_thread(_read_inputs, job)
        new = NewJob(
            id=job.id,
            bot=self.bot_id,
            platform=job.platform,
            chat_id=job.chat_id,
            user_id=job.user_id,
            photo=await self.jobs.put_blob(photo),
            painting=await self.jobs.put_blob(painting),
            options=job.options,
            preview_every=self._preview_seconds,
            work=job.work,
            timeout=self._limits.job_timeout,
            created=job.created_at,
        )
        return await self.jobs.admit(new, limits)

    async def _read_loop(self) -> None:
        delay = 0.5
        while not self._closing:
            try:
                events = await self.jobs.read_events(
                    self.bot_id, self._after, block_ms=self._block_ms, client=self._reader_client
                )
                check_cancelled()
                if self._closing:
                    return  # not handled: a later start(after=...) replays them
                for event in events:
                    update = await self._to_update(event)
                    self._after = event.id
                    if update is not None:
                        self._updates.put_nowait(update)
                self.reachable, delay = True, 0.5
            except asyncio.CancelledError:
                raise
            except UNREACHABLE as error:
                if self.reachable:
                    log.warning("event stream unreachable (%s); retrying", error)
                self.reachable = False
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
            except Exception:
                log.exception("event stream reader failed; retrying")
                await asyncio.sleep(delay)

    async def _reap_loop(self) -> None:
        while True:
            try:
                reaped = await self.jobs.reap()
                if reaped.requeued or reaped.failed or reaped.cancelled:
                    log.info(
                        "took back jobs of lost hosts: %d requeued, %d failed, %d cancelled",
                        reaped.requeued,
                        reaped.failed,
                        reaped.cancelled,
                    )
            except asyncio.CancelledError:
                raise
            except UNREACHABLE:
                pass  # the reader reports the outage
            except Exception:
                log.exception("reaping failed")
            check_cancelled()
            await asyncio.sleep(self._reap_every)

    async def _to_update(self, event: Event) -> RunUpdate | None:
        job_id, event_id = event.job_id, event.id
        if event.type == redis_jobs.STARTED:
            return RunStarted(job_id, event_id, event.attempt, event.fields.get("consumer", ""))
        if event.type == redis_jobs.PLANNED:
            return RunPlanned(job_id, event_id, int(event.number("total_work")))
        if event.type == redis_jobs.PROGRESS:
            eta = event.text("eta")
            return RunProgress(
                job_id,
                event_id,
                attempt=event.attempt,
                percent=event.number("percent"),
                scale=int(event.number("scale")),
                scales=int(event.number("scales", 1)),
                eta=float(eta) if eta else None,
                preview_jpeg=event.preview,
                note=event.text("note"),
                sent_at=event.number("t"),
            )
        if event.type == redis_jobs.REQUEUED:
            return RunRequeued(job_id, event_id, event.attempt, event.fields.get("reason", ""))
        if event.type == redis_jobs.DONE:
            return await self._done(event)
        if event.type == redis_jobs.FAILED:
            code = event.fields.get("code", "")
            message = event.fields.get("message", "")
            if code == "timeout":  # the agent's words; the member gets the embedded sentence
                message = replies.too_slow(self._limits.job_timeout)
            return RunFailed(job_id, event_id, code, message)
        if event.type == redis_jobs.CANCELLED:
            return RunCancelled(job_id, event_id, event.fields.get("by", ""))
        log.warning("unknown event %r for job %s skipped", event.type, job_id)
        return None

    async def _done(self, event: Event) -> RunUpdate:
        data = await self.jobs.get_blob(event.fields.get("result", ""))
        if data is None:
            log.error("job %s: the result blob is gone", event.job_id)
            return RunFailed(event.job_id, event.id, "internal", RESULT_LOST)
        path = self._results_dir / f"{event.job_id}.png"
        await asyncio.to_thread(_write, path, data)
        return RunDone(
            event.job_id,
            event.id,
            result_path=str(path),
            seconds=event.number("seconds"),
            work=int(event.number("work")),
            width=int(event.number("width")),
            height=int(event.number("height")),
        )


def _read_inputs(job: Job) -> tuple[bytes, bytes]:
    return Path(job.photo_path).read_bytes(), Path(job.painting_path).read_bytes()


def _write(path: Path, data: bytes) -> None:
    partial = path.with_name(f"{path.name}.{secrets.token_hex(4)}.part")
    partial.write_bytes(data)
    partial.replace(path)
