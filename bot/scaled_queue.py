"""The scaled mode's job queue for the bot: jobs wait in Redis and GPU-host agents paint them.

Implements :class:`bot.job_queue.JobQueue`. Fair order and the per-member, per-chat and global
limits are decided inside one Redis script (:mod:`engine.redis_scripts`), so several bot
processes admit against the same counters without races; a refusal comes back as a code and is
worded here with the embedded mode's sentences. While Redis cannot be reached, admissions are
refused with :class:`~bot.errors.Paused`; nothing already admitted is lost (Redis keeps it, the
SQLite row keeps it for :meth:`ScaledQueue.reconcile`).

:meth:`ScaledQueue.serve` runs three loops. One reader follows this bot's event stream
(``XREAD BLOCK`` <= 2 s on a connection of its own) and turns events into
:class:`~bot.job_queue.RunUpdate` values for the service, in order; a finished painting's PNG
is fetched from its blob and written to the results folder first (with its timelapse: every job
asks for one; a blend's second painting goes up as a blob like the other inputs). After Redis
was unreachable, or restarted (its run id changed), it reconciles before reading on; an
outcome a reconcile reported is not reported again when its event comes. A reaper takes back
the jobs of dead hosts, as every agent does too (idempotent). A third keeps the snapshot that
:meth:`ScaledQueue.view` answers from: the waiting order (other bots' jobs too), jobs running
elsewhere, devices alive; every 2 s and soon after this bot changes something.

A bot id is one process's: a reconcile first takes the id's name in Redis (a key with an
expiry the reaper renews, dropped at a clean stop), and a second process on the same id is
refused with :class:`~bot.job_queue.QueueUnavailable`, after waiting out a name left by one
that died. Two processes on one id would read each other's events and cancel each other's
jobs as strays.

Never imports discord, aiogram or torch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bot import replies
from bot.errors import LimitReached, Paused, QueueFull, UserFacingError
from bot.job_queue import (
    NOTHING_HELD,
    Admission,
    CancelResult,
    Held,
    KnownJobs,
    QueueMoved,
    QueueUnavailable,
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
    Stranger,
    Update,
    UpdateHandler,
)
from bot.jobs import Job, JobState
from bot.settings import Limits
from engine import redis_jobs
from engine.protocol import timelapse_paths
from engine.redis_jobs import (
    AdmitLimits,
    Admitted,
    Event,
    NewJob,
    RedisJobs,
    check_cancelled,
)

log = logging.getLogger(__name__)

NAME_TTL = 15.0  # seconds a dead bot process keeps its bot id's name

UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OutOfMemoryError, ReadOnlyError, OSError)
PAUSED = replies.PAUSED
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
    kind = "scaled"
    device_kind = "gpu"  # the presets agents paint with, and the first speed guess

    def __init__(
        self,
        url: str,
        *,
        bot_id: str,
        limits: Limits,
        results_dir: Path,
        preview_seconds: float = 6.0,
        reap_every: float = 5.0,
        refresh_every: float = 2.0,
        lease: float = redis_jobs.LEASE,
        block_ms: int = redis_jobs.BLOCK_MS,
        keys: redis_jobs.Keys | None = None,
        name_ttl: float = NAME_TTL,
    ) -> None:
        """``bot_id`` names this bot's event stream and jobs in Redis: one process at a time
        may use it (another one waits up to ``name_ttl`` seconds, then gives up)."""
        self._url = url
        self.bot_id = bot_id
        self._limits = limits
        self._results_dir = results_dir
        self._preview_seconds = preview_seconds
        self._reap_every = reap_every
        self._refresh_every = refresh_every
        self._block_ms = block_ms
        self._client = redis_jobs.connect(url)
        self.jobs = RedisJobs(self._client, keys=keys, lease=lease)
        self._after = "0"
        self._closing = False
        self._serving = asyncio.Event()  # set while serve() runs
        self._served = asyncio.Event()  # set when serve() has returned
        self._served.set()
        self._refresh_soon = asyncio.Event()
        self._lost_contact = False  # reconcile when Redis answers again
        self._run_id: str | None = None  # the Redis server's; another one means it restarted
        self._up_since: float | None = time.time()
        self._answering = asyncio.Event()  # set while Redis answers
        self._answering.set()
        self._known: KnownJobs = tuple
        self._view = QueueView(capacity=0)
        self._seen: dict[str, Stranger | None] = {}  # waiting ids looked up; None: this bot's
        self._admitting: set[str] = set()  # admissions in flight
        self._settled: set[str] = set()  # outcomes a reconcile reported, before their event
        self._token = secrets.token_hex(8)  # this process, holding the bot id's name
        self._name_ttl = max(name_ttl, 3 * reap_every)  # renewed by the reaper
        self._named = False

    # -- what the service reads ----------------------------------------------------------------

    @property
    def reachable(self) -> bool:
        return self._up_since is not None

    @property
    def device(self) -> str | None:
        if not self.reachable:
            return None
        devices = self._view.capacity
        return f"{devices} GPU{'s' * (devices != 1)} alive" if devices else "no GPU alive"

    @property
    def up_since(self) -> float | None:
        """Since when Redis answers (None while it does not)."""
        return self._up_since

    def accepting(self) -> bool:
        return self.reachable

    async def answering(self) -> None:
        """Wait until Redis answers (at once if it does), as :meth:`accepting` will tell."""
        await self._answering.wait()

    def view(self) -> QueueView:
        return self._view

    @property
    def last_read_id(self) -> str:
        """The id of the last event handled from the stream."""
        return self._after

    # -- life cycle ----------------------------------------------------------------------------

    async def start(self, after: str | None = None) -> None:
        """Follow the event stream from ``after`` (the id stored last; None: from the start)
        once :meth:`serve` runs."""
        self._after = after or "0"
        self._results_dir.mkdir(parents=True, exist_ok=True)

    async def serve(self, on_update: UpdateHandler, known: KnownJobs) -> None:
        """Read this bot's events into ``on_update``; take back jobs of dead hosts; keep the
        queue's snapshot (order, other bots' jobs, devices alive) fresh; reconcile with
        ``known()`` after Redis was unreachable. Until :meth:`close` or cancellation."""
        self._served.clear()
        self._serving.set()
        self._known = known
        reader = redis_jobs.connect(self._url)  # blocking reads: a connection of their own
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._read_loop(reader, on_update, known), name="scaled-reader")
                group.create_task(self._reap_loop(), name="scaled-reaper")
                group.create_task(self._refresh_loop(on_update), name="scaled-refresh")
        finally:
            self._serving.clear()
            self._served.set()
            await reader.aclose()

    async def close(self) -> None:
        # The reader is not cancelled in the middle of its blocking read (that can leave the
        # connection out of step, and redis-py may swallow the cancellation): it sees the flag
        # when the read returns, within one BLOCK.
        self._closing = True
        self._refresh_soon.set()
        if self._serving.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._block_ms / 1000 + 5):
                    await self._served.wait()
        if self._named:  # the next process with this bot id need not wait for it to expire
            with contextlib.suppress(*UNREACHABLE):
                await self.jobs.drop_name(self.bot_id, self._token)
        await self._client.aclose()

    # -- JobQueue ------------------------------------------------------------------------------

    async def admit(self, job: Job, *, held: Held = NOTHING_HELD, wait: float = 0.0) -> Admission:
        """Admit ``job`` in Redis (limits, turn and order decided there, across bots), with
        the slots ``held`` here counting as queued paintings."""
        limits = AdmitLimits(
            per_member=self._limits.per_member - held.member,
            queue=self._limits.queue - held.queue,
            per_chat=self._limits.queue_per_chat - held.chat,
        )
        self._admitting.add(job.id)  # not a stray for a reconcile running meanwhile
        try:
            result = await self._admit(job, limits)
        except UNREACHABLE as error:
            self._unreachable(error)
            log.warning("job %s not admitted: Redis unreachable (%s)", job.id, error)
            raise Paused(PAUSED) from None
        finally:
            self._admitting.discard(job.id)
        if isinstance(result, Admitted):
            order = list(self._view.order)
            order.insert(min(result.position - 1, len(order)), job.id)
            self._seen[job.id] = None
            self._view = replace(self._view, order=tuple(order))
            self._refresh_soon.set()
            return Admission(position=result.position, turn=result.turn)
        if result.reason == "duplicate":
            raise RuntimeError(f"job id {job.id} is already in the queue")
        extra = {"member": held.member, "queue": held.queue, "chat": held.chat}[result.reason]
        raise refusal(result.reason, result.count + extra, self._limits, wait)

    async def cancel(self, job_id: str, by_user: str) -> CancelResult:
        try:
            answer = await self.jobs.cancel(job_id, by_user)
        except UNREACHABLE as error:
            self._unreachable(error)
            log.warning("job %s not cancelled: Redis unreachable (%s)", job_id, error)
            raise Paused(PAUSED) from None
        if answer == "cancelled":
            order = tuple(i for i in self._view.order if i != job_id)
            self._view = replace(self._view, order=order)
            self._refresh_soon.set()
            return CancelResult.CANCELLED
        if answer == "signalled":
            return CancelResult.SIGNALLED
        return CancelResult.GONE

    async def order(self) -> list[str]:
        """Waiting job ids in run order, read from Redis now."""
        return await self.jobs.waiting()

    async def capacity(self) -> int:
        """Devices alive, counted in Redis now."""
        return await self.jobs.devices_alive()

    async def reconcile(self, known: Sequence[Job]) -> Reconciled:
        """Match the queue with the jobs SQLite says are queued or running for this bot.

        A job the queue has lost (Redis restarted without its data) is admitted again from the
        input files (one that was running is reported back in the queue); a job in the queue
        that SQLite does not know is cancelled; a known job that finished while its events
        were trimmed away gives its outcome. Redis unreachable: nothing now, and again once it
        answers (:meth:`serve`).
        """
        try:
            return await self._reconcile(lambda: known)
        except UNREACHABLE as error:
            self._unreachable(error)
            log.warning("Redis unreachable (%s); reconciling once it answers", error)
            return Reconciled()

    async def _reconcile(self, known: KnownJobs) -> Reconciled:
        await self._take_name()  # before anything of this bot id is cancelled
        report = Reconciled()
        in_redis = await self.jobs.bot_jobs(self.bot_id)
        # Read after Redis: a job admitted meanwhile is known here by now.
        active = [job for job in known() if not job.state.terminal]
        ids = {job.id for job in active} | self._admitting
        for stray in sorted(in_redis - ids):
            await self.jobs.cancel(stray, "reconcile")
            report.cancelled.append(stray)
        for job in active:
            fields = await self.jobs.job(job.id)
            if fields is None:
                await self._admit(job, UNLIMITED)
                report.readmitted.append(job.id)
                if job.state is JobState.RUNNING:
                    report.outcomes.append(RunRequeued(job.id, "", job.attempts + 1, "readmitted"))
                continue
            state = fields.get("state", "")
            if state in redis_jobs.OUTCOMES:
                event = Event(id="", type=state, job_id=job.id, attempt=0, fields=fields)
                if state == redis_jobs.CANCELLED:
                    event.fields["by"] = fields.get("cancel", "")
                update = await self._to_update(event)
                if update is not None:
                    report.outcomes.append(update)
                    self._settled.add(job.id)
        if report.readmitted or report.cancelled or report.outcomes:
            log.info(
                "reconciled with Redis: %d admitted again, %d cancelled, %d outcomes recovered",
                len(report.readmitted),
                len(report.cancelled),
                len(report.outcomes),
            )
        self._refresh_soon.set()
        return report

    # -- inside --------------------------------------------------------------------------------

    async def _admit(self, job: Job, limits: AdmitLimits) -> Admitted | redis_jobs.Refused:
        photo, painting, *second = await asyncio.to_thread(_read_inputs, job)
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
            painting2=await self.jobs.put_blob(second[0]) if second else "",
            timelapse=True,  # made while painting or never: every job asks
        )
        return await self.jobs.admit(new, limits)

    async def _take_name(self) -> None:
        """Hold this bot id's name in Redis, waiting for one that a process which just died
        still holds; :class:`QueueUnavailable` if another process keeps it."""
        deadline = time.monotonic() + self._name_ttl + 1
        waited = False
        while not await self.jobs.hold_name(self.bot_id, self._token, self._name_ttl):
            self._named = False
            if time.monotonic() > deadline:
                raise QueueUnavailable(
                    f"another bot process uses the bot id {self.bot_id!r} in this Redis; give "
                    "each bot its own ATELIER_BOT_ID"
                )
            if not waited:
                log.warning("bot id %s is held by another process; waiting", self.bot_id)
                waited = True
            await asyncio.sleep(1.0)
        self._named = True

    def _unreachable(self, error: BaseException) -> None:
        if self.reachable:
            log.warning("Redis unreachable (%s); new paintings are paused", error)
        self._up_since = None
        self._answering.clear()
        self._lost_contact = True

    def _reached(self) -> None:
        if not self.reachable:
            log.info("Redis answers again; painting resumes")
            self._up_since = time.time()
            self._answering.set()

    async def _read_loop(
        self, reader: aioredis.Redis, on_update: UpdateHandler, known: KnownJobs
    ) -> None:
        delay = 0.5
        while not self._closing:
            try:
                events = await self.jobs.read_events(
                    self.bot_id, self._after, block_ms=self._block_ms, client=reader
                )
                check_cancelled()
                if self._closing:
                    return  # not handled: a later start(after=...) replays them
                self._reached()
                if self._lost_contact:
                    outcomes = (await self._reconcile(known)).outcomes
                    self._lost_contact = False
                    for outcome in outcomes:
                        await _hand(on_update, outcome)
                for event in events:
                    if event.type in redis_jobs.OUTCOMES and event.job_id in self._settled:
                        self._settled.discard(event.job_id)  # reported by a reconcile already
                    else:
                        update = await self._to_update(event)
                        if update is not None:
                            await _hand(on_update, update)
                    self._after = event.id
                delay = 0.5
            except asyncio.CancelledError:
                raise
            except UNREACHABLE as error:
                self._unreachable(error)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
            except Exception:
                log.exception("event stream reader failed; retrying")
                await asyncio.sleep(delay)

    async def _reap_loop(self) -> None:
        while not self._closing:
            try:
                if self._named and not await self.jobs.hold_name(
                    self.bot_id, self._token, self._name_ttl
                ):
                    self._named = False
                    log.error(
                        "another bot process took the bot id %s: give each its own "
                        "ATELIER_BOT_ID (the two now read each other's events)",
                        self.bot_id,
                    )
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

    async def _refresh_loop(self, on_update: UpdateHandler) -> None:
        """Keep :meth:`view` fresh: every ``refresh_every`` seconds, or soon after a change."""
        while not self._closing:
            try:
                before = self._view.order
                await self.refresh()
                if self._view.order != before:
                    await _hand(on_update, QueueMoved())
            except asyncio.CancelledError:
                raise
            except UNREACHABLE:
                pass  # the reader reports the outage
            except Exception:
                log.exception("reading the queue's state failed")
            check_cancelled()
            self._refresh_soon.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._refresh_every):
                    await self._refresh_soon.wait()

    async def refresh(self) -> None:
        """Read the snapshot :meth:`view` answers from now (the loop in :meth:`serve` does
        this every ``refresh_every`` seconds, and soon after this bot changes something).
        A Redis that restarted meanwhile (one quick enough for the client's retries to hide
        it) is noticed here, and reconciled with."""
        server: Any = await self._client.info("server")
        run_id = str(server.get("run_id", ""))
        if self._run_id is not None and run_id != self._run_id:
            log.warning("Redis restarted; reconciling this bot's jobs with it")
            self._lost_contact = True
        self._run_id = run_id
        order = await self.jobs.waiting()
        new = [job_id for job_id in order if job_id not in self._seen]
        if new:
            keys = self.jobs.keys
            async with self._client.pipeline(transaction=False) as pipe:
                for job_id in new:
                    pipe.hmget(keys.job(job_id), ["bot", "platform", "chat", "user", "work"])
                rows: list[Any] = await pipe.execute()
            for job_id, row in zip(new, rows, strict=True):
                bot, platform, chat, user, work = (_str(value) for value in row)
                self._seen[job_id] = (
                    None if bot == self.bot_id else Stranger(platform, chat, user, int(work or 0))
                )
        waiting = set(order)
        self._seen = {k: v for k, v in self._seen.items() if k in waiting}
        mine = sum(1 for job in self._known() if job.state is JobState.RUNNING)
        running = await self.jobs.running()
        self._view = QueueView(
            order=tuple(order),
            strangers={k: v for k, v in self._seen.items() if v is not None},
            busy_elsewhere=max(0, running - mine),
            capacity=await self.jobs.devices_alive(),
        )

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
            return RunFailed(event.job_id, event.id, "internal", replies.RESULT_LOST)
        path = self._results_dir / f"{event.job_id}.png"
        await asyncio.to_thread(_write, path, data)
        await self._timelapse(event, path)
        return RunDone(
            event.job_id,
            event.id,
            result_path=str(path),
            seconds=event.number("seconds"),
            work=int(event.number("work")),
            width=int(event.number("width")),
            height=int(event.number("height")),
            png=data,
        )

    async def _timelapse(self, event: Event, result: Path) -> None:
        """Write a finished painting's timelapse beside its result, where the embedded engine
        writes it (:func:`engine.protocol.timelapse_paths`): both files or none (a blob gone
        meanwhile leaves the painting without one, as when the engine could not make one)."""
        digests = (event.text("timelapse_webp"), event.text("timelapse_mp4"))
        if not all(digests):
            return
        blobs = [await self.jobs.get_blob(digest or "") for digest in digests]
        if any(blob is None for blob in blobs):
            log.warning("job %s: its timelapse blobs are gone; delivered without", event.job_id)
            return
        paths = timelapse_paths(str(result))
        for target, blob in zip((paths.webp, paths.mp4), blobs, strict=True):
            await asyncio.to_thread(_write, Path(target), blob or b"")


async def _hand(on_update: UpdateHandler, update: Update) -> None:
    """Give the service an update; a failure there is logged, and the stream moves on."""
    try:
        pending = on_update(update)
        if pending is not None:
            await pending
    except Exception:
        log.exception("handling %s failed", type(update).__name__)


def _str(value: bytes | str | None) -> str:
    return value.decode() if isinstance(value, bytes) else (value or "")


def _read_inputs(job: Job) -> list[bytes]:
    """The job's stored inputs: photo, painting and a blend's second painting."""
    return [Path(path).read_bytes() for path in job.input_paths]


def _write(path: Path, data: bytes) -> None:
    partial = path.with_name(f"{path.name}.{secrets.token_hex(4)}.part")
    partial.write_bytes(data)
    partial.replace(path)
