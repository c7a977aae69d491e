"""The platform-neutral paint service: admission, fair queue, engine runs, events, delivery.

Both chat adapters use only this class. The flow of one painting::

    reserve() --download--> submit() --check headers, store inputs--> QUEUED --run loop-->
    RUNNING --engine--> DONE --adapter posts it, mark_delivered()--> delivered
                 |          |-> FAILED (image, timeout, crashes, ...)
                 '-- cancel() -> CANCELLED

Guarantees:

- Admission control happens before anything is downloaded or queued: :meth:`reserve` checks the
  per-member, per-chat and global limits at once and holds the member's slot (see
  :mod:`bot.admission`); then options, and the images' headers (:func:`engine.images.admit`,
  never a pixel decoded in this process, a few at a time off the event loop), and, given a
  :class:`~bot.sandbox.Sandbox`, a full decode in a capped child process, one at a time. Each
  refusal is a :class:`~bot.errors.UserFacingError` with its own message.
- Fair order: first come, first served, except that no member gets a second job ahead of
  another member's first (round-robin between members, see :func:`run_order`).
- Every state change is written to SQLite before its event is sent, so a restart continues
  where it stopped: queued jobs come back in order; a job that was running runs again. A write
  that fails (a full disk, a locked database) is logged and tried again later; the event is
  sent all the same, so the member is told, and the queue goes on.
- If the engine dies, the job in hand is retried once after a restart of the engine; a job that
  kills it twice fails, as does one the bot was killed under twice. A graceful stop is not a
  crash: the job in hand goes back to the front of the queue. A job past the time limit is
  stopped and fails. No job stays RUNNING.
- Delivery is durable: a finished painting counts as delivered once its adapter calls
  :meth:`mark_delivered`; one that was not (the bot stopped first) is announced again at the
  next start, to listeners added then or later. :meth:`deliveries_settled` gives deliveries in
  flight a bounded time at shutdown.
- The long-lived tasks (run loop, housekeeping) run under a :class:`~bot.supervisor.Supervisor`:
  one exception does not end them.

Events go to every listener added with :meth:`PaintService.add_listener`, each listener fed by
its own queue and task, so a slow chat platform never holds up the engine or other listeners.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Final

from bot import housekeeping, replies
from bot.admission import Admission, Reservation
from bot.delivery import Deliveries, load_finished
from bot.errors import (
    InvalidImage,
    InvalidOptions,
    JobNotFound,
    NotAllowed,
    NotAvailable,
)
from bot.feeds import Listener, ListenerFeed
from bot.jobs import (
    Cancelled,
    Failed,
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
from bot.sandbox import DecoderFailed, Sandbox
from bot.settings import Limits
from bot.store import Store
from bot.supervisor import Supervised, Supervisor
from engine import files, images, protocol, schedule
from engine.client import Engine, EngineCrashed, JobUpdate

log = logging.getLogger(__name__)

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

# Seconds per pixel-iteration before anything was measured; the moving average takes over
# after the first job. Rough figures for a 2-core CPU and a current GPU.
INITIAL_SECONDS_PER_WORK = {"cpu": 2.0e-5, "gpu": 3.0e-7}
SPEED_SMOOTHING = 0.3  # weight of the newest job in the moving average
PURGE_INTERVAL = 3600.0
LISTENER_CLOSE_GRACE: Final = 10.0  # seconds a listener gets to finish its events at close
VALIDATIONS_AT_ONCE: Final = 2  # header checks running at the same time
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
        sandbox: Sandbox | None = None,
        supervisor: Supervisor | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        """``sandbox``: where member images are decoded in full before they are queued (none:
        headers only, the engine decodes); ``supervisor``: runs the long-lived tasks (shared
        with the rest of the process, so that ``python -m bot`` can stop when one keeps
        failing); ``clock`` and ``sleep``: injected time."""
        self._store = store
        self._engine = engine
        self._limits = limits
        self._data_dir = data_dir
        self._inputs_dir = data_dir / "inputs"
        self._results_dir = data_dir / "results"
        self._clock: Clock = clock or time.time
        self._sleep = sleep
        self._preview_seconds = preview_seconds
        self._default_quality = default_quality
        self._sandbox = sandbox
        self._supervisor = supervisor or Supervisor(sleep=sleep)
        self._admission = Admission(limits, self._clock)
        self._claims = housekeeping.InputClaims()
        self._waiting: list[Job] = []  # arrival order
        self._running: Job | None = None
        self._current_turn = 0  # the turn of the job started last
        self._running_percent = 0.0
        self._running_eta: float | None = None
        self._cancel_requests: dict[str, str] = {}  # job id -> who asked
        self._positions: dict[str, int] = {}  # last position sent per waiting job
        self._wake = asyncio.Event()
        self._listeners: list[ListenerFeed] = []
        self._tasks: list[Supervised] = []
        self._admitting = asyncio.Lock()
        self._validations = asyncio.Semaphore(VALIDATIONS_AT_ONCE)
        self._seconds_per_work: float | None = None
        self._recovery_events: list[JobEvent] = []  # failures found while recovering
        self._unsaved: dict[str, Job] = {}  # states whose write failed; written again later
        self._deliveries = Deliveries(store, self._clock)
        self._closed = False

    # -- life cycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        for folder in (self._data_dir, self._inputs_dir, self._results_dir):
            files.private_folder(folder)
        stored = self._store.get_meta("seconds_per_work")
        self._seconds_per_work = float(stored) if stored else None
        self._recover()
        await self._recover_deliveries()
        await self._engine.start()
        self._tasks.append(self._supervisor.spawn("paint-run-loop", self._run_loop))
        self._tasks.append(self._supervisor.spawn("paint-housekeeping", self._housekeeping_loop))
        self._announce_positions(force=True)

    async def close(self) -> None:
        """Stop the tasks, put a job in hand back in the queue, drain listeners, stop the engine.

        Never stops half-way: a task that died, a listener that fails or a write that fails is
        logged, and the rest is still closed.
        """
        if self._closed:
            return
        self._closed = True
        interrupted = self._running
        for task in self._tasks:
            await task.stop()
        self._tasks.clear()
        if interrupted is not None and not interrupted.state.terminal:
            # A graceful stop is not a crash: the job runs again first thing, and this
            # interruption does not count against it.
            log.info(
                "job %s was running at shutdown; it runs again at the next start", interrupted.id
            )
            self._save(replace(interrupted, state=JobState.QUEUED))
        self._save_again()  # a last try for states whose write failed
        for feed in self._listeners:
            await feed.close(LISTENER_CLOSE_GRACE)
        try:
            await self._engine.close()
        except Exception:
            log.exception("closing the engine failed")

    async def __aenter__(self) -> PaintService:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def supervisor(self) -> Supervisor:
        return self._supervisor

    def add_listener(self, listener: Listener, *, delivers: str | None = None) -> None:
        """Send every future event to ``listener``.

        A listener added after :meth:`start` first gets the state of the jobs in hand (the
        running job as ``Started``, waiting ones as ``PositionChanged``), the failures found
        while recovering and the finished paintings not yet delivered (as ``Finished``), so an
        adapter that connects late still picks up recovered jobs.

        ``delivers``: the platform whose results this listener posts. It then calls
        :meth:`mark_delivered` once a result is posted, and a result it never marks is announced
        again at the next start. A platform no listener delivers for keeps the simpler rule: its
        result counts as delivered once every listener has handled its ``Finished``.
        """
        feed = ListenerFeed(listener)
        self._listeners.append(feed)
        if delivers is not None:
            self._deliveries.delivers(delivers)
        for event in self._recovery_events:
            feed.put(event)
        if self._running is not None:
            feed.put(Started(job=self._running, rerun=self._running.attempts > 1))
        order = run_order(self._waiting)
        etas = self._etas(order)
        for position, job in enumerate(order, start=1):
            feed.put(PositionChanged(job=job, position=position, eta=etas.get(job.id)))
        self._deliveries.replay(feed)

    async def drained(self) -> None:
        """Wait until every listener has handled every event sent so far."""
        for feed in list(self._listeners):
            await feed.join()

    def _recover(self) -> None:
        """Reload the queue after a restart; a job that was running runs again, once."""
        for job in self._store.jobs_in([JobState.RUNNING, JobState.QUEUED]):
            if job.state is JobState.RUNNING:
                # Still RUNNING: the bot did not stop gracefully (killed, crashed, power cut),
                # and the engine went with it. That counts as a crash of this job.
                job = replace(job, crashes=job.crashes + 1)
                if job.crashes >= 2:
                    self._finish_failed(
                        job, "engine_crashed", replies.INTERRUPTED_TWICE, recovering=True
                    )
                    continue
                job = replace(job, state=JobState.QUEUED)
                self._store.save_job(job)
                log.info("job %s was running when the bot stopped; queued to run again", job.id)
            self._waiting.append(job)
        if self._waiting:
            log.info("recovered %d queued jobs", len(self._waiting))
            self._wake.set()

    async def _recover_deliveries(self) -> None:
        """Announce again the finished paintings that were never delivered."""
        for job in self._store.undelivered():
            if not job.result_path or not await asyncio.to_thread(Path(job.result_path).is_file):
                continue
            log.info("job %s finished but was not delivered before the stop; announcing it", job.id)
            self._deliveries.finished(job, None, self._listeners)

    # -- member actions ------------------------------------------------------------------------

    @property
    def limits(self) -> Limits:
        return self._limits

    def reserve(self, platform: str, chat_id: str, user_id: str) -> Reservation:
        """Check the limits now and hold the member's slot until the submit that uses it.

        Raises :class:`~bot.errors.LimitReached` or :class:`~bot.errors.QueueFull` at once
        (before anything is downloaded). The :class:`~bot.admission.Reservation` counts as a
        queued painting in every limit until :meth:`submit` given it ends, or it is released
        (``release()``, or leaving ``with slot:``).
        """
        return self._admission.reserve(
            platform,
            chat_id,
            user_id,
            active=self._active(),
            waiting=self._waiting,
            remaining=self._remaining_running(),
        )

    async def submit(self, request: PaintRequest, *, reservation: Reservation | None = None) -> Job:
        """Check and queue ``request``; ``reservation`` (from :meth:`reserve`) is used up.

        Without a reservation one is taken here, so a request being checked counts against
        the limits all the same.
        """
        options = request.options.resolved(self._default_quality)
        try:
            options.validate()
        except protocol.OptionError as error:
            if reservation is not None:
                reservation.release()
            raise InvalidOptions(replies.option_refused(error)) from None
        slot = reservation
        if slot is not None and (slot.platform, slot.user_id) != (
            request.platform,
            request.user_id,
        ):
            slot.release()
            raise ValueError(f"{slot!r} is not for {request.platform}/{request.user_id}")
        if slot is None or slot.released:  # none given, or held so long that it lapsed
            slot = self.reserve(request.platform, request.chat_id, request.user_id)
        with slot:
            photo = await self.check_image(request.photo, "photo")
            await self.check_image(request.painting, "painting")
            async with self._admitting:
                # Checked again: a reservation that lapsed while we checked no longer counts.
                self._check_limits(request.platform, request.chat_id, request.user_id, slot)
                paths = await asyncio.to_thread(self._save_inputs, request.photo, request.painting)
                try:
                    job = Job(
                        id=_new_job_id(),
                        platform=request.platform,
                        chat_id=request.chat_id,
                        user_id=request.user_id,
                        user_name=request.user_name,
                        options=options,
                        state=JobState.QUEUED,
                        created_at=self._clock(),
                        photo_path=paths[0],
                        painting_path=paths[1],
                        photo_name=request.photo_name,
                        painting_name=request.painting_name,
                        width=photo.width,
                        height=photo.height,
                        work=self._estimate_work(photo.width, photo.height, options),
                        status_ref=request.status_ref,
                        challenge_id=request.challenge_id,
                    )
                    return self._admit(job)
                finally:
                    self._claims.release(paths)

    async def reroll(
        self,
        job_id: str,
        *,
        user_id: str,
        user_name: str,
        change: str,
        platform: str | None = None,
        moderator: bool = False,
    ) -> Job:
        """A new painting from the inputs of ``job_id`` with one option changed.

        Only from a finished (DONE) painting, only by its owner or a moderator, and only on the
        platform it was made on (``platform``: where the button was pressed).
        """
        source = self.get(job_id)
        if platform is not None and source.platform != platform:
            raise NotAllowed(replies.OTHER_PLATFORM)
        if source.user_id != user_id and not moderator:
            raise NotAllowed(replies.only_owner_repaints(source))
        if source.state is not JobState.DONE:
            raise NotAvailable(
                replies.NOT_A_FINISHED_PAINTING
                if source.state.terminal
                else replies.NOT_FINISHED_YET
            )
        way = reroll_named(change)
        retained = source.finished_at is not None and (
            self._clock() - source.finished_at < self._limits.retention_hours * 3600
        )
        gone = NotAvailable(replies.DELETED_WITH_INPUTS if retained else replies.INPUTS_DELETED)
        if self._store.is_purged(job_id):
            raise gone
        options = way.apply(source.options)
        async with self._admitting:
            self._check_limits(source.platform, source.chat_id, user_id)
            paths = (source.photo_path, source.painting_path)
            if not await asyncio.to_thread(self._claim_existing, paths):
                raise gone
            try:
                job = replace(
                    source,
                    id=_new_job_id(),
                    user_id=user_id,
                    user_name=user_name,
                    options=options,
                    state=JobState.QUEUED,
                    created_at=self._clock(),
                    work=self._estimate_work(source.width, source.height, options),
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
                    delivered_at=None,
                )
                return self._admit(job)
            finally:
                self._claims.release(paths)

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

    async def cancel_mine(self, platform: str, user_id: str, *, chat_id: str | None = None) -> Job:
        """Cancel the member's newest painting in progress in ``chat_id`` (where they asked).

        ``chat_id=None`` looks in every chat of the platform; kept only until both adapters pass
        the chat: on Telegram, everyone posting as a channel or as an anonymous admin shares
        one user id, and must not cancel each other's paintings in other groups.
        """
        mine = [
            j
            for j in self._active()
            if j.platform == platform
            and j.user_id == user_id
            and (chat_id is None or j.chat_id == chat_id)
        ]
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
        """Delete a finished painting's result, and its inputs unless a kept job uses them."""
        job = self.get(job_id)
        if job.user_id != user_id and not moderator:
            raise NotAllowed(replies.owner_only(job, "delete"))
        if not job.state.terminal:
            raise NotAllowed(replies.CANCEL_INSTEAD)
        if job.result_path:
            await asyncio.to_thread(Path(job.result_path).unlink, missing_ok=True)
        self._store.mark_purged(job.id)
        deleted = self._claims.delete_unused(self._store, (job.photo_path, job.painting_path))
        log.info("job %s deleted by %s (%d inputs went with it)", job.id, user_id, deleted)
        return replace(job, result_path=None)

    # -- delivery ------------------------------------------------------------------------------

    async def mark_delivered(self, job_id: str) -> None:
        """The result of ``job_id`` has been posted: it is not announced again after a restart.

        Called by the adapter that delivers for the job's platform (see :meth:`add_listener`),
        once the result message is out. Never raises: a write that fails is logged, and the
        result may then be posted once more after a restart.
        """
        self._deliveries.mark(job_id)

    async def deliveries_settled(self, grace: float) -> bool:
        """Wait up to ``grace`` seconds until every finished painting handed to a listener
        has been delivered; True if all were.

        For shutdown, before the adapters close: the shutdown's grace for deliveries in flight.
        What is still undelivered after it is announced again at the next start.
        """
        return await self._deliveries.settled(grace)

    # -- queries -------------------------------------------------------------------------------

    def get(self, job_id: str) -> Job:
        if self._running is not None and self._running.id == job_id:
            return self._running
        for job in self._waiting:
            if job.id == job_id:
                return job
        if job_id in self._unsaved:
            return self._unsaved[job_id]
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
        """The result's bytes. Blocking (up to tens of megabytes): from a thread, or use
        :meth:`read_result`."""
        if not job.result_path or not Path(job.result_path).is_file():
            raise NotAvailable(replies.RESULT_DELETED)
        return Path(job.result_path).read_bytes()

    def input_bytes(self, job: Job, which: str) -> bytes:
        """An input's bytes. Blocking: from a thread, or use :meth:`read_input`."""
        path = Path(job.photo_path if which == "photo" else job.painting_path)
        if not path.is_file():
            raise NotAvailable(replies.input_deleted(which))
        return path.read_bytes()

    async def read_result(self, job: Job) -> bytes:
        """:meth:`result_png` off the event loop."""
        return await asyncio.to_thread(self.result_png, job)

    async def read_input(self, job: Job, which: str) -> bytes:
        """:meth:`input_bytes` off the event loop."""
        return await asyncio.to_thread(self.input_bytes, job, which)

    def _active(self) -> list[Job]:
        """The running job (until it is finished) and the waiting ones."""
        running = self._running
        live = [running] if running is not None and not running.state.terminal else []
        return [*live, *self._waiting]

    # -- admission -----------------------------------------------------------------------------

    def _check_limits(
        self, platform: str, chat_id: str, user_id: str, own: Reservation | None = None
    ) -> None:
        self._admission.check(
            platform,
            chat_id,
            user_id,
            active=self._active(),
            waiting=self._waiting,
            remaining=self._remaining_running(),
            exclude=own,
        )

    async def check_image(self, data: bytes, role: str) -> images.ImageInfo:
        """Check an image by the engine's rules; :class:`InvalidImage` if unfit.

        Its headers here (never a pixel decoded in this process, a few at a time off the event
        loop); in full in the sandbox's capped child, one at a time, when there is a sandbox.
        A picture the sandbox cannot open for want of memory or time is left to the engine.
        """
        try:
            async with self._validations:
                info = await asyncio.to_thread(
                    images.admit, data, role=role, max_bytes=self._limits.max_input_bytes
                )
            if self._sandbox is not None:
                await self._sandbox.check(data, role=role, max_bytes=self._limits.max_input_bytes)
        except images.ImageError as error:
            raise InvalidImage(error.message) from None
        except DecoderFailed as error:
            # Not the member's fault as far as anyone can tell; the engine decides.
            log.info(
                "a %s was not decoded in the sandbox (%s); the engine checks it", role, error.reason
            )
        return info

    def _save_inputs(self, photo: bytes, painting: bytes) -> tuple[str, str]:
        """Store inputs by content hash (a painting shared by many jobs is kept once) and
        claim them, so housekeeping keeps them until the job's row exists. In a thread."""
        paths = []
        with self._claims.locked():
            for data in (photo, painting):
                path = (
                    self._inputs_dir
                    / f"{hashlib.sha256(data).hexdigest()}{housekeeping.INPUT_SUFFIX}"
                )
                if not path.exists():
                    files.write_private(path, data)
                paths.append(str(path))
            self._claims.hold(paths)
        return paths[0], paths[1]

    def _claim_existing(self, paths: tuple[str, str]) -> bool:
        """Claim stored inputs for a new job; False (nothing claimed) if one is gone."""
        with self._claims.locked():
            if not all(Path(path).is_file() for path in paths):
                return False
            self._claims.hold(paths)
        return True

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
        errors_in_a_row = 0
        while True:
            self._save_again()
            while not self._waiting:
                self._wake.clear()
                await self._wake.wait()
            job = run_order(self._waiting)[0]
            self._waiting = [j for j in self._waiting if j.id != job.id]
            self._positions.pop(job.id, None)
            try:
                await self._run(job)
                errors_in_a_row = 0
            except asyncio.CancelledError:
                raise
            except Exception:
                errors_in_a_row += 1
                log.exception("job %s: unexpected error in the run loop", job.id)
                current = self._running or job
                if not current.state.terminal:
                    self._finish_failed(current, "internal", replies.OUR_FAULT)
            finally:
                self._running = None
            self._announce_positions()
            if errors_in_a_row:
                # Something is wrong beyond one job (the disk, the database): don't spin.
                await self._sleep(RUN_LOOP_BACKOFF[min(errors_in_a_row, len(RUN_LOOP_BACKOFF)) - 1])

    async def _run(self, job: Job) -> None:
        rerun = job.attempts > 0
        job = replace(
            job, state=JobState.RUNNING, started_at=self._clock(), attempts=job.attempts + 1
        )
        self._save(job)
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
            finished = await load_finished(job)
            if finished is None:
                self._finish_failed(job, "internal", replies.OUR_FAULT)
            else:
                self._deliveries.finished(job, finished, self._listeners)
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
                self._save(job)
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
            self._save(job)
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
                await self._sleep(delay)
                delay = min(delay * 2, 60.0)

    def _save(self, job: Job) -> bool:
        """Write ``job``'s state; if that fails (full disk, locked database), log it and keep
        the state to write again later. Never raises: the caller's event goes out either way."""
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

    def _save_again(self) -> None:
        """Write the states whose write failed before, oldest first; stop at the first failure."""
        for job in list(self._unsaved.values()):
            try:
                self._store.save_job(job)
            except sqlite3.Error:
                return
            log.info("job %s: its state %s is written now", job.id, job.state.value)
            self._unsaved.pop(job.id, None)

    def _finish(self, job: Job, state: JobState, **changes: object) -> Job:
        job = replace(job, state=state, finished_at=self._clock(), **changes)  # type: ignore[arg-type]
        self._save(job)
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
        try:
            self._store.set_meta("seconds_per_work", repr(self._seconds_per_work))
        except sqlite3.Error as error:
            log.warning("could not store the engine's speed (%s)", error)

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

    async def _housekeeping_loop(self) -> None:
        """Hourly: delete expired files, forget old rows, log a status line for the admin."""
        while True:
            try:
                report = await self._sweep()
                log.info(
                    "status: %d waiting, running %s, %d done, %d failed, %s s per job, engine %s",
                    len(self._waiting),
                    self._running.id if self._running else "nothing",
                    report.counts.get(JobState.DONE.value, 0),
                    report.counts.get(JobState.FAILED.value, 0),
                    f"{report.average_seconds:.1f}" if report.average_seconds else "-",
                    self._engine.device or "down",
                )
            except Exception:
                log.exception("hourly housekeeping failed")
            await self._sleep(PURGE_INTERVAL)

    async def purge_expired(self) -> int:
        """Delete inputs and results of jobs finished before the retention period, and forget
        the rows of jobs purged long enough ago; returns how many jobs lost their files."""
        return (await self._sweep()).purged

    async def _sweep(self) -> housekeeping.SweepReport:
        now = self._clock()
        return await asyncio.to_thread(
            housekeeping.sweep,
            self._store.path,
            self._inputs_dir,
            self._claims,
            files_before=now - self._limits.retention_hours * 3600,
            rows_before=now - self._limits.forget_days * 24 * 3600,
            should_stop=lambda: self._closed,
        )


def _new_job_id() -> str:
    return secrets.token_urlsafe(8)[:10]
