"""The platform-neutral paint service: admission, fair queue, engine runs, events.

Both chat adapters use only this class. The flow of one painting::

    submit() --validate, store inputs--> QUEUED --run loop--> RUNNING --engine--> DONE
                                           |                     |-> FAILED (image, timeout,
                                           '-- cancel() ---------'   crashes, ...)
                                                    CANCELLED

Guarantees:

- Admission control happens before anything is queued: options, per-member, per-chat and
  global limits, and the images themselves (decoded in a worker thread with the engine's own
  rules). Each refusal is a :class:`~bot.errors.UserFacingError` with its own message.
- Fair order: first come, first served, except that no member gets a second job ahead of
  another member's first (round-robin between members, see :func:`run_order`).
- Every state change is written to SQLite before its event is sent, so a restart continues
  where it stopped: queued jobs come back in order; a job that was running runs once more.
- If the engine dies, the job in hand is retried once after a restart of the engine; a job that
  kills it twice fails. A job past the time limit is stopped and fails. No job stays RUNNING.

Events go to every listener added with :meth:`PaintService.add_listener`, each listener fed by
its own queue and task, so a slow chat platform never holds up the engine or other listeners.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

from bot import replies
from bot.errors import (
    InvalidImage,
    InvalidOptions,
    JobNotFound,
    LimitReached,
    NotAllowed,
    NotAvailable,
    QueueFull,
)
from bot.jobs import (
    Cancelled,
    Failed,
    Finished,
    Job,
    JobEvent,
    JobState,
    PaintRequest,
    PositionChanged,
    Progress,
    Queued,
    QueueOverview,
    ServiceStatus,
    Started,
)
from bot.options import reroll as reroll_named
from bot.settings import Limits
from bot.store import Store
from engine import images, protocol, schedule
from engine.client import Engine, EngineCrashed, JobUpdate

log = logging.getLogger(__name__)

Clock = Callable[[], float]
Listener = Callable[[JobEvent], Awaitable[None]]

# Seconds per pixel-iteration before anything was measured; the moving average takes over
# after the first job. Rough figures for a 2-core CPU and a current GPU.
INITIAL_SECONDS_PER_WORK = {"cpu": 2.0e-5, "gpu": 3.0e-7}
SPEED_SMOOTHING = 0.3  # weight of the newest job in the moving average
PURGE_INTERVAL = 3600.0


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


class PaintService:
    def __init__(
        self,
        *,
        store: Store,
        engine: Engine,
        limits: Limits,
        data_dir: Path,
        clock: Clock | None = None,
        preview_seconds: float = 6.0,
        default_quality: str = schedule.DEFAULT_QUALITY,
    ) -> None:
        self._store = store
        self._engine = engine
        self._limits = limits
        self._data_dir = data_dir
        self._inputs_dir = data_dir / "inputs"
        self._results_dir = data_dir / "results"
        self._clock: Clock = clock or time.time
        self._preview_seconds = preview_seconds
        self._default_quality = default_quality
        self._waiting: list[Job] = []  # arrival order
        self._running: Job | None = None
        self._current_turn = 0  # the turn of the job started last
        self._running_percent = 0.0
        self._running_eta: float | None = None
        self._cancel_requests: dict[str, str] = {}  # job id -> who asked
        self._positions: dict[str, int] = {}  # last position sent per waiting job
        self._wake = asyncio.Event()
        self._listeners: list[_ListenerFeed] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._admission = asyncio.Lock()
        self._seconds_per_work: float | None = None
        self._recovery_events: list[JobEvent] = []  # failures found while recovering
        self._closed = False

    # -- life cycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        self._inputs_dir.mkdir(parents=True, exist_ok=True)
        self._results_dir.mkdir(parents=True, exist_ok=True)
        stored = self._store.get_meta("seconds_per_work")
        self._seconds_per_work = float(stored) if stored else None
        self._recover()
        await self._engine.start()
        self._tasks.append(asyncio.create_task(self._run_loop(), name="paint-run-loop"))
        self._tasks.append(asyncio.create_task(self._purge_loop(), name="paint-purge"))
        self._announce_positions(force=True)

    async def close(self) -> None:
        self._closed = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        for feed in self._listeners:
            await feed.close()
        await self._engine.close()

    async def __aenter__(self) -> PaintService:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def add_listener(self, listener: Listener) -> None:
        """Send every future event to ``listener``.

        A listener added after :meth:`start` first gets the state of the jobs in hand (the
        running job as ``Started``, waiting ones as ``PositionChanged``) and the failures found
        while recovering, so an adapter that connects late still picks up recovered jobs.
        """
        feed = _ListenerFeed(listener)
        self._listeners.append(feed)
        for event in self._recovery_events:
            feed.put(event)
        if self._running is not None:
            feed.put(Started(job=self._running, rerun=self._running.attempts > 1))
        order = run_order(self._waiting)
        etas = self._etas(order)
        for position, job in enumerate(order, start=1):
            feed.put(PositionChanged(job=job, position=position, eta=etas.get(job.id)))

    async def drained(self) -> None:
        """Wait until every listener has handled every event sent so far."""
        for feed in list(self._listeners):
            await feed.join()

    def _recover(self) -> None:
        """Reload the queue after a restart; a job that was running runs again, once."""
        for job in self._store.jobs_in([JobState.RUNNING, JobState.QUEUED]):
            if job.state is JobState.RUNNING:
                if job.attempts >= 2:
                    self._finish_failed(
                        job, "engine_crashed", replies.INTERRUPTED_TWICE, recovering=True
                    )
                    continue
                job = replace(job, state=JobState.QUEUED)
                self._store.save_job(job)
                log.info("job %s was running at shutdown; queued to run again", job.id)
            self._waiting.append(job)
        if self._waiting:
            log.info("recovered %d queued jobs", len(self._waiting))
            self._wake.set()

    # -- member actions ------------------------------------------------------------------------

    @property
    def limits(self) -> Limits:
        return self._limits

    async def submit(self, request: PaintRequest) -> Job:
        options = request.options.resolved(self._default_quality)
        try:
            options.validate()
        except protocol.OptionError as error:
            raise InvalidOptions(replies.option_refused(error)) from None
        self._check_limits(request.platform, request.chat_id, request.user_id)
        photo = await self.check_image(request.photo, "photo")
        await self.check_image(request.painting, "painting")
        async with self._admission:
            # Checked again: other submissions may have been admitted while we validated.
            # Inputs are saved only once admitted, so a refusal leaves no orphan file behind.
            self._check_limits(request.platform, request.chat_id, request.user_id)
            photo_path, painting_path = await asyncio.to_thread(
                self._save_inputs, request.photo, request.painting
            )
            job = Job(
                id=_new_job_id(),
                platform=request.platform,
                chat_id=request.chat_id,
                user_id=request.user_id,
                user_name=request.user_name,
                options=options,
                state=JobState.QUEUED,
                created_at=self._clock(),
                photo_path=photo_path,
                painting_path=painting_path,
                photo_name=request.photo_name,
                painting_name=request.painting_name,
                width=photo.width,
                height=photo.height,
                work=self._estimate_work(photo.width, photo.height, options),
                status_ref=request.status_ref,
                challenge_id=request.challenge_id,
            )
            return self._admit(job)

    async def reroll(self, job_id: str, *, user_id: str, user_name: str, change: str) -> Job:
        """A new painting from the inputs of ``job_id`` with one option changed."""
        source = self.get(job_id)
        way = reroll_named(change)
        if self._store.is_purged(job_id) or not _files_exist(
            source.photo_path, source.painting_path
        ):
            raise NotAvailable(replies.INPUTS_DELETED)
        changed = way.apply(source.options)
        async with self._admission:
            self._check_limits(source.platform, source.chat_id, user_id)
            job = replace(
                source,
                id=_new_job_id(),
                user_id=user_id,
                user_name=user_name,
                options=changed,
                state=JobState.QUEUED,
                created_at=self._clock(),
                work=self._estimate_work(source.width, source.height, changed),
                started_at=None,
                finished_at=None,
                result_path=None,
                error_code=None,
                error_message=None,
                attempts=0,
                crashes=0,
                status_ref=None,
                parent_id=source.id,
                challenge_id=None,  # a re-roll is a member's own painting, not an entry
                seconds=None,
            )
            return self._admit(job)

    async def cancel(self, job_id: str, *, user_id: str, moderator: bool = False) -> Job:
        job = self.get(job_id)
        if job.user_id != user_id and not moderator:
            raise NotAllowed(replies.owner_only(job, "cancel"))
        if job.state.terminal:
            raise JobNotFound(replies.already(job.state))
        if job.state is JobState.QUEUED:
            self._waiting = [j for j in self._waiting if j.id != job_id]
            self._positions.pop(job_id, None)
            job = self._finish(job, JobState.CANCELLED)
            log.info("job %s cancelled while queued by %s", job_id, user_id)
            self._emit(Cancelled(job=job, by_user=user_id))
            self._announce_positions()
            return job
        # Running: the engine stops within one iteration and the run loop finishes the job.
        self._cancel_requests[job_id] = user_id
        await self._engine.cancel(job_id)
        log.info("job %s cancel requested while running by %s", job_id, user_id)
        return job

    async def cancel_mine(self, platform: str, user_id: str) -> Job:
        mine = [j for j in self._active() if j.platform == platform and j.user_id == user_id]
        if not mine:
            raise JobNotFound(replies.NOTHING_TO_CANCEL)
        # The newest one: a member with several jobs most likely regrets the last.
        return await self.cancel(mine[-1].id, user_id=user_id)

    async def attach_status(self, job_id: str, status_ref: str | None) -> None:
        job = self.get(job_id)
        job = replace(job, status_ref=status_ref)
        self._store.save_job(job)
        self._replace_live(job)

    async def delete_result(self, job_id: str, *, user_id: str, moderator: bool = False) -> Job:
        job = self.get(job_id)
        if job.user_id != user_id and not moderator:
            raise NotAllowed(replies.owner_only(job, "delete"))
        if job.result_path:
            await asyncio.to_thread(Path(job.result_path).unlink, missing_ok=True)
        job = replace(job, result_path=None)
        self._store.save_job(job)
        return job

    # -- queries -------------------------------------------------------------------------------

    def get(self, job_id: str) -> Job:
        if self._running is not None and self._running.id == job_id:
            return self._running
        for job in self._waiting:
            if job.id == job_id:
                return job
        stored = self._store.get_job(job_id)
        if stored is None:
            raise JobNotFound(replies.NOT_FOUND)
        return stored

    def position(self, job_id: str) -> int | None:
        for index, job in enumerate(run_order(self._waiting), start=1):
            if job.id == job_id:
                return index
        return None

    def overview(self) -> QueueOverview:
        order = run_order(self._waiting)
        return QueueOverview(
            running=self._running,
            running_percent=self._running_percent if self._running else None,
            waiting=tuple(order),
            etas=self._etas(order),
        )

    def status(self) -> ServiceStatus:
        counts = self._store.count_by_state()
        return ServiceStatus(
            queue_length=len(self._waiting),
            running_job=self._running.id if self._running else None,
            engine_up_since=self._engine.up_since,
            engine_device=self._engine.device,
            jobs_done=counts.get(JobState.DONE.value, 0),
            jobs_failed=counts.get(JobState.FAILED.value, 0),
            average_seconds=self._store.average_seconds(),
        )

    def result_png(self, job: Job) -> bytes:
        if not job.result_path or not Path(job.result_path).is_file():
            raise NotAvailable(replies.RESULT_DELETED)
        return Path(job.result_path).read_bytes()

    def input_bytes(self, job: Job, which: str) -> bytes:
        path = Path(job.photo_path if which == "photo" else job.painting_path)
        if not path.is_file():
            raise NotAvailable(replies.input_deleted(which))
        return path.read_bytes()

    def _active(self) -> list[Job]:
        """The running job (until it is finished) and the waiting ones."""
        running = self._running
        live = [running] if running is not None and not running.state.terminal else []
        return [*live, *self._waiting]

    # -- admission -----------------------------------------------------------------------------

    def _check_limits(self, platform: str, chat_id: str, user_id: str) -> None:
        active = self._active()
        mine = sum(1 for j in active if j.platform == platform and j.user_id == user_id)
        if mine >= self._limits.per_member:
            raise LimitReached(replies.in_progress(mine, self._limits.per_member))
        if len(self._waiting) >= self._limits.queue:
            raise QueueFull(replies.queue_full(len(self._waiting), self._remaining_running()))
        in_chat = sum(1 for j in self._waiting if j.platform == platform and j.chat_id == chat_id)
        if in_chat >= self._limits.queue_per_chat:
            raise QueueFull(replies.chat_queue_full(in_chat, self._remaining_running()))

    async def check_image(self, data: bytes, role: str) -> images.ImageInfo:
        """Decode ``data`` by the engine's rules (in a thread); :class:`InvalidImage` if unfit."""
        try:
            return await asyncio.to_thread(
                images.probe, data, role=role, max_bytes=self._limits.max_input_bytes
            )
        except images.ImageError as error:
            raise InvalidImage(error.message) from None

    def _save_inputs(self, photo: bytes, painting: bytes) -> tuple[str, str]:
        """Store inputs by content hash: a painting shared by many jobs is kept once."""
        paths = []
        for data in (photo, painting):
            path = self._inputs_dir / f"{hashlib.sha256(data).hexdigest()}.img"
            if not path.exists():
                # A private partial name: the same painting may arrive in many requests at once.
                partial = path.with_name(f"{path.stem}.{secrets.token_hex(4)}.part")
                partial.write_bytes(data)
                partial.replace(path)
            paths.append(str(path))
        return paths[0], paths[1]

    def _estimate_work(self, width: int, height: int, options: protocol.PaintOptions) -> int:
        preset = schedule.PRESETS[(options.quality, self._engine.device_kind)]
        return schedule.total_work(schedule.plan(width, height, preset))

    def _admit(self, job: Job) -> Job:
        active = self._active()
        job = replace(job, turn=next_turn(active, (job.platform, job.user_id), self._current_turn))
        self._store.insert_job(job)
        self._waiting.append(job)
        position = self.position(job.id) or len(self._waiting)
        self._positions[job.id] = position
        log.info(
            "job %s queued: member %s/%s chat %s position %d work %d",
            job.id,
            job.platform,
            job.user_id,
            job.chat_id,
            position,
            job.work,
        )
        self._emit(Queued(job=job, position=position, eta=self._etas_for(job.id)))
        self._announce_positions()
        self._wake.set()
        return job

    # -- the run loop --------------------------------------------------------------------------

    async def _run_loop(self) -> None:
        while True:
            while not self._waiting:
                self._wake.clear()
                await self._wake.wait()
            job = run_order(self._waiting)[0]
            self._waiting = [j for j in self._waiting if j.id != job.id]
            self._positions.pop(job.id, None)
            try:
                await self._run(job)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("job %s: unexpected error in the run loop", job.id)
                current = self._running or job
                if not current.state.terminal:
                    self._finish_failed(current, "internal", replies.OUR_FAULT)
            finally:
                self._running = None
            self._announce_positions()

    async def _run(self, job: Job) -> None:
        rerun = job.attempts > 0
        job = replace(
            job, state=JobState.RUNNING, started_at=self._clock(), attempts=job.attempts + 1
        )
        self._store.save_job(job)
        self._running, self._running_percent, self._running_eta = job, 0.0, None
        self._current_turn = max(self._current_turn, job.turn)
        log.info(
            "job %s started: member %s/%s, %.1fs after it was queued, attempt %d",
            job.id,
            job.platform,
            job.user_id,
            (job.started_at or 0) - job.created_at,
            job.attempts,
        )
        self._emit(Started(job=job, rerun=rerun))
        self._announce_positions()
        paint = protocol.PaintJob(
            job_id=job.id,
            photo_path=job.photo_path,
            painting_path=job.painting_path,
            result_path=str(self._results_dir / f"{job.id}.png"),
            options=job.options.resolved(self._default_quality),
            preview_every=self._preview_seconds,
        )
        try:
            # asyncio.timeout, not wait_for: wait_for on 3.11 can swallow a cancellation that
            # arrives just as the job ends, which would leave the run loop alive at shutdown.
            async with asyncio.timeout(self._limits.job_timeout):
                outcome = await self._engine.run(paint, self._on_update)
        except TimeoutError:
            await self._stop_overdue(job)
            return
        except EngineCrashed as error:
            await self._after_crash(job, str(error))
            return
        job = self._running or job
        if isinstance(outcome, protocol.JobDone):
            self._learn_speed(outcome.work or job.work, outcome.seconds)
            job = self._finish(
                job, JobState.DONE, result_path=outcome.result_path, seconds=outcome.seconds
            )
            log.info(
                "job %s done: member %s/%s, painted in %.1fs at %dx%d, %.1fs since queued",
                job.id,
                job.platform,
                job.user_id,
                outcome.seconds,
                outcome.width,
                outcome.height,
                (job.finished_at or 0) - job.created_at,
            )
            self._emit(
                Finished(
                    job=job,
                    result_png=await asyncio.to_thread(Path(outcome.result_path).read_bytes),
                    seconds=outcome.seconds,
                )
            )
        elif isinstance(outcome, protocol.JobCancelled):
            by = self._cancel_requests.pop(job.id, "")
            job = self._finish(job, JobState.CANCELLED)
            log.info("job %s cancelled while running by %s", job.id, by)
            self._emit(Cancelled(job=job, by_user=by))
        else:
            self._finish_failed(job, outcome.code, outcome.message)

    def _on_update(self, update: JobUpdate) -> None:
        job = self._running
        if job is None or update.job_id != job.id:
            return
        if isinstance(update, protocol.JobStarted):
            if update.total_work and update.total_work != job.work:
                job = replace(job, work=update.total_work)
                self._running = job
                self._store.save_job(job)
            return
        self._running_percent = update.percent
        self._running_eta = update.eta
        self._emit(
            Progress(
                job=job,
                percent=update.percent,
                scale=update.scale,
                scales=update.scales,
                eta=update.eta,
                preview_jpeg=update.preview_jpeg,
                note=update.note,
            )
        )

    async def _stop_overdue(self, job: Job) -> None:
        log.warning("job %s exceeded the time limit of %.0fs", job.id, self._limits.job_timeout)
        await self._engine.cancel(job.id)
        # The engine was busy with this job; restart it so the next job starts on a clean one.
        await self._restart_engine()
        self._finish_failed(
            self._running or job, "timeout", replies.too_slow(self._limits.job_timeout)
        )

    async def _after_crash(self, job: Job, reason: str) -> None:
        job = replace(self._running or job, crashes=(self._running or job).crashes + 1)
        log.error("job %s: engine died (%s); crash %d for this job", job.id, reason, job.crashes)
        await self._restart_engine()
        if job.id in self._cancel_requests:
            by = self._cancel_requests.pop(job.id)
            job = self._finish(job, JobState.CANCELLED)
            self._emit(Cancelled(job=job, by_user=by))
        elif job.crashes >= 2:
            self._finish_failed(job, "engine_crashed", replies.CRASHED_TWICE)
        else:
            job = replace(job, state=JobState.QUEUED)
            self._store.save_job(job)
            self._waiting.insert(0, job)  # first in line: it was already running
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
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60.0)

    def _finish(self, job: Job, state: JobState, **changes: object) -> Job:
        job = replace(job, state=state, finished_at=self._clock(), **changes)  # type: ignore[arg-type]
        self._store.save_job(job)
        if self._running is not None and self._running.id == job.id:
            self._running = job
        return job

    def _finish_failed(
        self, job: Job, code: str, message: str, *, recovering: bool = False
    ) -> None:
        job = self._finish(job, JobState.FAILED, error_code=code, error_message=message)
        log.warning(
            "job %s failed: member %s/%s, %.1fs since queued: %s: %s",
            job.id,
            job.platform,
            job.user_id,
            (job.finished_at or 0) - job.created_at,
            code,
            message,
        )
        event = Failed(job=job, code=code, message=message)
        if recovering:
            self._recovery_events.append(event)
        self._emit(event)

    def _replace_live(self, job: Job) -> None:
        if self._running is not None and self._running.id == job.id:
            self._running = job
        self._waiting = [job if j.id == job.id else j for j in self._waiting]

    # -- ETA -----------------------------------------------------------------------------------

    @property
    def seconds_per_work(self) -> float:
        if self._seconds_per_work is not None:
            return self._seconds_per_work
        return INITIAL_SECONDS_PER_WORK.get(self._engine.device_kind, 2.0e-5)

    def _learn_speed(self, work: int, seconds: float) -> None:
        if work <= 0 or seconds <= 0:
            return
        measured = seconds / work
        old = self._seconds_per_work
        self._seconds_per_work = (
            measured if old is None else old + SPEED_SMOOTHING * (measured - old)
        )
        self._store.set_meta("seconds_per_work", repr(self._seconds_per_work))

    def _remaining_running(self) -> float:
        if self._running is None:
            return 0.0
        if self._running_eta is not None:
            return self._running_eta
        return (1 - self._running_percent / 100) * self._running.work * self.seconds_per_work

    def _etas(self, order: list[Job]) -> dict[str, float]:
        total = self._remaining_running()
        etas: dict[str, float] = {}
        if self._running is not None:
            etas[self._running.id] = total
        for job in order:
            total += job.work * self.seconds_per_work
            etas[job.id] = total
        return etas

    def _etas_for(self, job_id: str) -> float | None:
        return self._etas(run_order(self._waiting)).get(job_id)

    def _announce_positions(self, *, force: bool = False) -> None:
        order = run_order(self._waiting)
        etas = self._etas(order)
        for position, job in enumerate(order, start=1):
            if force or self._positions.get(job.id) != position:
                self._positions[job.id] = position
                self._emit(PositionChanged(job=job, position=position, eta=etas.get(job.id)))

    # -- events and housekeeping ---------------------------------------------------------------

    def _emit(self, event: JobEvent) -> None:
        for feed in self._listeners:
            feed.put(event)

    async def _purge_loop(self) -> None:
        """Hourly: delete expired files and log a status line for the admin."""
        while True:
            try:
                # In the loop's thread: the store's connection is not shared across threads,
                # and deleting a few files is quick.
                self.purge_expired()
                status = self.status()
                log.info(
                    "status: %d waiting, running %s, %d done, %d failed, %s s per job, engine %s",
                    status.queue_length,
                    status.running_job or "nothing",
                    status.jobs_done,
                    status.jobs_failed,
                    f"{status.average_seconds:.1f}" if status.average_seconds else "-",
                    status.engine_device or "down",
                )
            except Exception:
                log.exception("hourly housekeeping failed")
            await asyncio.sleep(PURGE_INTERVAL)

    def purge_expired(self) -> int:
        """Delete inputs and results of jobs finished before the retention period."""
        cutoff = self._clock() - self._limits.retention_hours * 3600
        purged = 0
        for job in self._store.expired_jobs(cutoff):
            if job.result_path:
                Path(job.result_path).unlink(missing_ok=True)
            self._store.mark_purged(job.id)
            for path in (job.photo_path, job.painting_path):
                if not self._store.input_in_use(path):
                    Path(path).unlink(missing_ok=True)
            purged += 1
        if purged:
            log.info("deleted the files of %d expired jobs", purged)
        return purged


class _ListenerFeed:
    """One listener's own queue and task: events in order, failures logged and skipped."""

    def __init__(self, listener: Listener) -> None:
        self._listener = listener
        self._queue: asyncio.Queue[JobEvent | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        with contextlib.suppress(RuntimeError):  # no running loop yet: started on first event
            self._start()

    def _start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._drain(), name="paint-listener")

    def put(self, event: JobEvent) -> None:
        if self._task is None:
            self._start()
        self._queue.put_nowait(event)

    async def _drain(self) -> None:
        while True:
            event = await self._queue.get()
            try:
                if event is None:
                    return
                await self._listener(event)
            except Exception:
                assert event is not None
                log.exception(
                    "listener failed on %s for job %s", type(event).__name__, event.job.id
                )
            finally:
                self._queue.task_done()

    async def join(self) -> None:
        """Wait until every event so far has been handled."""
        await self._queue.join()

    async def close(self) -> None:
        if self._task is not None:
            self._queue.put_nowait(None)
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def _files_exist(*paths: str) -> bool:
    return all(Path(path).is_file() for path in paths)


def _new_job_id() -> str:
    return secrets.token_urlsafe(8)[:10]
