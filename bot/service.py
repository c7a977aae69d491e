"""The platform-neutral paint service: admission, member actions, events, delivery.

Both chat adapters use only this class. Where jobs wait and run is a :class:`~bot.job_queue.
JobQueue`: the embedded one (:mod:`bot.embedded_queue`: memory and the local engine process,
given an ``engine``) or the scaled one (:mod:`bot.scaled_queue`: Redis and GPU-host agents,
given a ``queue``). The flow of one painting::

    reserve() --download--> submit() --check headers, store inputs, admit--> QUEUED --queue-->
    RUNNING --engine--> DONE --adapter posts it, mark_delivered()--> delivered
                 |          |-> FAILED (image, timeout, crashes, ...)
                 '-- cancel() -> CANCELLED

Guarantees:

- Admission control happens before anything is downloaded or queued: :meth:`reserve` checks the
  per-member, per-chat and global limits at once and holds the member's slot (see
  :mod:`bot.admission`); then options, and the images' headers (:func:`engine.images.admit`,
  never a pixel decoded in this process, a few at a time off the event loop), and, given a
  :class:`~bot.sandbox.Sandbox`, a full decode in a capped child process, one at a time. Each
  refusal is a :class:`~bot.errors.UserFacingError` with its own message. In the scaled mode
  the limits hold across bot processes (Redis decides, the slots held here counting too), and
  while Redis cannot be reached a new painting is refused with "paused".
- Every state change is written to SQLite before its event is sent, so a restart continues
  where it stopped. A write that fails (a full disk, a locked database) is logged and tried
  again with the next update; the event is sent all the same, so the member is told, and the
  queue goes on.
- Delivery is durable: a finished painting counts as delivered once its adapter calls
  :meth:`mark_delivered`; one that was not (the bot stopped first) is announced again at the
  next start, to listeners added then or later. :meth:`deliveries_settled` gives deliveries in
  flight a bounded time at shutdown. In the scaled mode the bot also replays its event stream
  from the last id it stored, so paintings that finished while it was down are delivered.
- The long-lived tasks (the queue's run loop or event reader, housekeeping) run under a
  :class:`~bot.supervisor.Supervisor`: one exception does not end them.

Events go to every listener added with :meth:`PaintService.add_listener`, each listener fed by
its own queue and task, so a slow chat platform never holds up the engine or other listeners.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Final

from bot import eta, housekeeping, replies, timelapses
from bot.admission import Admission, Reservation
from bot.delivery import Deliveries, load_finished
from bot.embedded_queue import EmbeddedQueue, next_turn, run_order
from bot.errors import (
    InvalidImage,
    InvalidOptions,
    JobNotFound,
    LimitReached,
    NotAllowed,
    NotAvailable,
    Paused,
    QueueFull,
)
from bot.feeds import Listener, ListenerFeed
from bot.inputs import Inputs
from bot.job_queue import (
    CRASHES,
    BatchTimed,
    CancelResult,
    Held,
    JobQueue,
    QueueMoved,
    RunCancelled,
    RunDone,
    RunFailed,
    RunPlanned,
    RunProgress,
    RunRequeued,
    RunStarted,
    Update,
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
from bot.ledger import Ledger
from bot.options import reroll as reroll_named
from bot.sandbox import Sandbox
from bot.settings import Limits
from bot.store import Store
from bot.supervisor import Supervised, Supervisor
from engine import files, images, protocol, schedule
from engine.client import Engine

__all__ = ["PaintService", "next_turn", "run_order"]  # the fair order, for tests and tools

log = logging.getLogger(__name__)

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

PURGE_INTERVAL = 3600.0
LISTENER_CLOSE_GRACE: Final = 10.0  # seconds a listener gets to finish its events at close
EVENTS_READ: Final = "events_read"  # meta key: the last event id handled (scaled mode)
# What counts as a refused request (for the operators' metrics): limits, a paused queue, bad
# input. Not allowed or not found are answers about a painting, not refusals to paint.
REFUSALS: Final = (LimitReached, QueueFull, Paused, InvalidImage, InvalidOptions)
SECOND_PAINTING: Final = "second painting"  # a blend's, as its checks name it


class PaintService:
    def __init__(
        self,
        *,
        store: Store,
        limits: Limits,
        data_dir: Path,
        engine: Engine | None = None,
        queue: JobQueue | None = None,
        clock: Clock | None = None,
        preview_seconds: float = 6.0,
        default_quality: str = schedule.DEFAULT_QUALITY,
        sandbox: Sandbox | None = None,
        supervisor: Supervisor | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        """Either ``engine`` (the embedded mode: the fair queue in memory drives this engine)
        or ``queue`` (another :class:`~bot.job_queue.JobQueue`, such as Redis's).

        ``sandbox``: where member images are decoded in full before they are queued (none:
        headers only, the engine decodes); ``supervisor``: runs the long-lived tasks (shared
        with the rest of the process, so that ``python -m bot`` can stop when one keeps
        failing); ``clock`` and ``sleep``: injected time."""
        if (engine is None) == (queue is None):
            raise ValueError("give the service an engine (embedded mode) or a queue, not both")
        self._store = store
        self._limits = limits
        self._data_dir = data_dir
        self._inputs_dir = data_dir / "inputs"
        self._results_dir = data_dir / "results"
        self._queue: JobQueue = queue or EmbeddedQueue(
            engine,  # type: ignore[arg-type]  # not None: checked above
            results_dir=self._results_dir,
            job_timeout=limits.job_timeout,
            preview_seconds=preview_seconds,
            default_quality=default_quality,
            batch_factor=lambda size: self._speed.batch_factor(size),
            sleep=sleep,
        )
        self._clock: Clock = clock or time.time
        self._sleep = sleep
        self._default_quality = default_quality
        self._supervisor = supervisor or Supervisor(sleep=sleep)
        self._admission = Admission(limits, self._clock)
        self._inputs = Inputs(self._inputs_dir, max_bytes=limits.max_input_bytes, sandbox=sandbox)
        self._speed = eta.SpeedModel(store, lambda: self._queue.device_kind)
        self._ledger = Ledger(store, self._clock)
        self._outlook = eta.Outlook(self._ledger, self._queue, self._speed)
        self._positions: dict[str, int] = {}  # last position sent per waiting job
        self._notes: dict[str, str] = {}  # what a waiting job's status adds (a restart)
        self._listeners: list[ListenerFeed] = []
        self._tasks: list[Supervised] = []
        self._admitting = asyncio.Lock()
        self._recovery_events: list[JobEvent] = []  # failures found while recovering
        self._deliveries = Deliveries(store, self._clock)
        self._showings = timelapses.Showings(self._clock)
        self._refused: Counter[str] = Counter()
        self._closed = False

    # -- life cycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        for folder in (self._data_dir, self._inputs_dir, self._results_dir):
            files.private_folder(folder)
        self._speed.load()
        known = self._ledger.load([JobState.RUNNING, JobState.QUEUED])
        # Before the queue's outcomes: a painting that finished while the bot was down is
        # handed out by those alone, even if its listener posts it while this one looks.
        await self._recover_deliveries()
        report = await self._queue.reconcile(known)
        for update in report.outcomes:
            pending = self._apply(update, recovering=True)
            if pending is not None:
                await pending
        await self._queue.start(after=self._store.get_meta(EVENTS_READ))
        self._tasks.append(self._supervisor.spawn("paint-run-loop", self._run_loop))
        self._tasks.append(self._supervisor.spawn("paint-housekeeping", self._housekeeping_loop))
        self._announce_positions(force=True)

    async def close(self) -> None:
        """Stop the tasks (a painting in hand of the embedded queue goes back to the queue),
        drain listeners, close the queue (the engine).

        Never stops half-way: a task that died, a listener that fails or a write that fails is
        logged, and the rest is still closed.
        """
        if self._closed:
            return
        self._closed = True
        for task in self._tasks:
            await task.stop()
        self._tasks.clear()
        self._ledger.save_again()  # a last try for states whose write failed
        for feed in self._listeners:
            await feed.close(LISTENER_CLOSE_GRACE)
        try:
            await self._queue.close()
        except Exception:
            log.exception("closing the job queue failed")

    async def __aenter__(self) -> PaintService:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def supervisor(self) -> Supervisor:
        return self._supervisor

    @property
    def queue(self) -> JobQueue:
        return self._queue

    def add_listener(self, listener: Listener, *, delivers: str | None = None) -> None:
        """Send every future event to ``listener``.

        A listener added after :meth:`start` first gets the state of the jobs in hand (running
        ones as ``Started``, waiting ones as ``PositionChanged``), the failures found while
        recovering and the finished paintings not yet delivered (as ``Finished``), so an
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
        for job in self._ledger.running():
            feed.put(Started(job=job, rerun=job.attempts > 1))
        order = self._outlook.order()
        etas = self._outlook.etas(order)
        for position, job in enumerate(order, start=1):
            if self._ledger.find(job.id) is not None:
                feed.put(
                    PositionChanged(
                        job=job,
                        position=position,
                        eta=etas.get(job.id),
                        note=self._notes.get(job.id),
                    )
                )
        self._deliveries.replay(feed)

    async def drained(self) -> None:
        """Wait until every listener has handled every event sent so far."""
        for feed in list(self._listeners):
            await feed.join()

    async def _recover_deliveries(self) -> None:
        """Announce again the finished paintings that were never delivered."""
        for job in self._store.undelivered():
            if not job.result_path or not await asyncio.to_thread(Path(job.result_path).is_file):
                continue
            log.info("job %s finished but was not delivered before the stop; announcing it", job.id)
            self._deliveries.finished(job, None, self._listeners)

    async def _run_loop(self) -> None:
        await self._queue.serve(self._apply, self._ledger.active)

    # -- member actions ------------------------------------------------------------------------

    @property
    def limits(self) -> Limits:
        return self._limits

    def reserve(self, platform: str, chat_id: str, user_id: str) -> Reservation:
        """Check the limits now and hold the member's slot until the submit that uses it.

        Raises :class:`~bot.errors.LimitReached` or :class:`~bot.errors.QueueFull` at once
        (before anything is downloaded), or :class:`~bot.errors.Paused` while the job queue
        cannot be reached. The :class:`~bot.admission.Reservation` counts as a queued painting
        in every limit until :meth:`submit` given it ends, or it is released (``release()``, or
        leaving ``with slot:``).
        """
        try:
            return self._reserve(platform, chat_id, user_id)
        except REFUSALS as error:
            self._refused[type(error).__name__] += 1
            raise

    def _reserve(self, platform: str, chat_id: str, user_id: str) -> Reservation:
        if not self._queue.accepting():
            raise Paused(replies.PAUSED)
        return self._admission.reserve(
            platform,
            chat_id,
            user_id,
            active=self._ledger.active(),
            waiting=self._outlook.order(),
            remaining=self._outlook.slot_wait(),
        )

    async def submit(self, request: PaintRequest, *, reservation: Reservation | None = None) -> Job:
        """Check and queue ``request``; ``reservation`` (from :meth:`reserve`) is used up.

        Without a reservation one is taken here, so a request being checked counts against
        the limits all the same.
        """
        try:
            return await self._submit(request, reservation)
        except REFUSALS as error:
            self._refused[type(error).__name__] += 1
            raise

    async def _submit(self, request: PaintRequest, reservation: Reservation | None) -> Job:
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
            slot = self._reserve(request.platform, request.chat_id, request.user_id)
        with slot:
            photo = await self.check_image(request.photo, "photo")
            await self.check_image(request.painting, "painting")
            images: tuple[bytes, ...] = (request.photo, request.painting)
            if request.painting2 is not None:
                await self.check_image(request.painting2, SECOND_PAINTING)
                images += (request.painting2,)
            async with self._admitting:
                # Checked again: a reservation that lapsed while we checked no longer counts.
                self._check_limits(request.platform, request.chat_id, request.user_id, slot)
                paths = await self._inputs.store(*images)
                admitted = False
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
                        painting2_path=paths[2] if len(paths) > 2 else None,
                        painting2_name=request.painting2_name if len(paths) > 2 else None,
                    )
                    job = await self._admit(job, slot)
                    admitted = True
                    return job
                finally:
                    self._inputs.release(paths)
                    if not admitted:  # refused by the queue (scaled mode), or no row written
                        await asyncio.to_thread(self._inputs.delete_unused, self._store, paths)

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
        try:
            return await self._reroll(job_id, user_id, user_name, change, platform, moderator)
        except REFUSALS as error:
            self._refused[type(error).__name__] += 1
            raise

    async def _reroll(
        self,
        job_id: str,
        user_id: str,
        user_name: str,
        change: str,
        platform: str | None,
        moderator: bool,
    ) -> Job:
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
            if not self._queue.accepting():
                raise Paused(replies.PAUSED)
            self._check_limits(source.platform, source.chat_id, user_id)
            paths = source.input_paths  # a blend stays a blend
            if not await self._inputs.claim(paths):
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
                return await self._admit(job)
            finally:
                self._inputs.release(paths)

    async def cancel(self, job_id: str, *, user_id: str, moderator: bool = False) -> Job:
        job = self.get(job_id)
        if job.user_id != user_id and not moderator:
            raise NotAllowed(replies.owner_only(job, "cancel"))
        if job.state.terminal:
            raise JobNotFound(replies.already(job.state))
        result = await self._queue.cancel(job_id, user_id)
        job = self.get(job_id)  # the queue may have moved on meanwhile
        if result is CancelResult.CANCELLED:
            self._positions.pop(job_id, None)
            job = self._finish(job, JobState.CANCELLED)
            log.info("job %s cancelled while queued by %s", job_id, user_id)
            self._emit(Cancelled(job=job, by_user=user_id))
            self._announce_positions()
        elif result is CancelResult.SIGNALLED:
            # Running: the engine stops within one iteration and the queue reports it.
            log.info("job %s cancel requested while running by %s", job_id, user_id)
        else:
            log.info("job %s: cancel by %s came too late, it had finished", job_id, user_id)
        return job

    async def cancel_mine(self, platform: str, user_id: str, *, chat_id: str | None = None) -> Job:
        """Cancel the member's newest painting in progress in ``chat_id`` (where they asked).

        ``chat_id=None`` looks in every chat of the platform; kept only until both adapters pass
        the chat: on Telegram, everyone posting as a channel or as an anonymous admin shares
        one user id, and must not cancel each other's paintings in other groups.
        """
        mine = [
            j
            for j in self._ledger.active()
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
        self._ledger.keep(job)

    async def delete_result(self, job_id: str, *, user_id: str, moderator: bool = False) -> Job:
        """Delete a finished painting's result, and its inputs unless a kept job uses them."""
        job = self.get(job_id)
        if job.user_id != user_id and not moderator:
            raise NotAllowed(replies.owner_only(job, "delete"))
        if not job.state.terminal:
            raise NotAllowed(replies.CANCEL_INSTEAD)
        if job.result_path:
            await asyncio.to_thread(timelapses.delete, job.result_path)
            await asyncio.to_thread(Path(job.result_path).unlink, missing_ok=True)
        self._store.mark_purged(job.id)
        deleted = self._inputs.delete_unused(self._store, job.input_paths)
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
        return self._ledger.get(job_id)

    def position(self, job_id: str) -> int | None:
        return self._outlook.position(job_id)

    def overview(self) -> QueueOverview:
        return self._outlook.overview()

    def status(self) -> ServiceStatus:
        counts = self._store.count_by_state()
        running = self._ledger.running()
        view = self._queue.view()
        accepting = self._queue.accepting()
        return ServiceStatus(
            queue_length=len(self._outlook.order()),
            running_job=running[0].id if running else None,
            engine_up_since=self._queue.up_since,
            engine_device=self._queue.device,
            jobs_done=counts.get(JobState.DONE.value, 0),
            jobs_failed=counts.get(JobState.FAILED.value, 0),
            average_seconds=self._store.average_seconds(),
            mode=self._queue.kind,
            devices_alive=(view.capacity if accepting and self._queue.up_since is not None else 0),
            running_jobs=len(running) + view.busy_elsewhere,
            paused=not accepting,
        )

    @property
    def refused(self) -> Counter[str]:
        """Requests refused so far, by the refusal's kind (``LimitReached``, ``Paused``...)."""
        return Counter(self._refused)

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

    async def timelapse(
        self, job_id: str, fmt: timelapses.Format, *, platform: str, chat_id: str
    ) -> bytes:
        """The timelapse of a finished painting (``webp`` or ``mp4``), for anyone who asks
        where it was posted (``platform`` and ``chat_id``: where the press came from);
        :class:`NotAvailable` saying why there is none (see :mod:`bot.timelapses`)."""
        return await timelapses.read(
            lambda: self.get(job_id),
            fmt,
            where=(platform, chat_id),
            retention_hours=self._limits.retention_hours,
            clock=self._clock,
        )

    @contextlib.asynccontextmanager
    async def posting_timelapse(
        self,
        job_id: str,
        fmt: timelapses.Format,
        *,
        platform: str,
        chat_id: str,
        limit: int | None = None,
    ) -> AsyncIterator[bytes]:
        """:meth:`timelapse`, to be posted in the block: :class:`NotAvailable` also when it is
        over ``limit`` bytes (the chat's upload limit) or was posted there a moment ago (see
        :class:`bot.timelapses.Showings`); a block that fails lets it be asked for again."""
        data = await self.timelapse(job_id, fmt, platform=platform, chat_id=chat_id)
        if limit is not None and len(data) > limit:
            raise NotAvailable(replies.timelapse_too_big(len(data), limit))
        self._showings.claim(job_id)
        try:
            yield data
        except BaseException:
            self._showings.release(job_id)
            raise

    # -- admission -----------------------------------------------------------------------------

    def _check_limits(
        self, platform: str, chat_id: str, user_id: str, own: Reservation | None = None
    ) -> None:
        self._admission.check(
            platform,
            chat_id,
            user_id,
            active=self._ledger.active(),
            waiting=self._outlook.order(),
            remaining=self._outlook.slot_wait(),
            exclude=own,
        )

    async def check_image(self, data: bytes, role: str) -> images.ImageInfo:
        """Check an image by the engine's rules; :class:`InvalidImage` if unfit (see
        :meth:`bot.inputs.Inputs.check`)."""
        return await self._inputs.check(data, role)

    def _estimate_work(self, width: int, height: int, options: protocol.PaintOptions) -> int:
        preset = schedule.PRESETS[(options.quality, self._queue.device_kind)]
        return schedule.total_work(schedule.plan(width, height, preset))

    def _held(self, job: Job, own: Reservation | None) -> Held:
        held = [r for r in self._admission.held if r is not own]
        return Held(
            member=sum(1 for r in held if (r.platform, r.user_id) == (job.platform, job.user_id)),
            chat=sum(1 for r in held if (r.platform, r.chat_id) == (job.platform, job.chat_id)),
            queue=len(held),
        )

    async def _admit(self, job: Job, own: Reservation | None = None) -> Job:
        admission = await self._queue.admit(
            job, held=self._held(job, own), wait=self._outlook.slot_wait()
        )
        job = replace(job, turn=admission.turn)
        try:
            self._ledger.add(job)
        except BaseException:
            await self._withdraw(job.id)
            raise
        self._positions[job.id] = admission.position
        log.info(
            "job %s queued: member %s/%s chat %s position %d work %d",
            job.id,
            job.platform,
            job.user_id,
            job.chat_id,
            admission.position,
            job.work,
        )
        order = self._outlook.order()
        self._emit(
            Queued(job=job, position=admission.position, eta=self._outlook.etas(order).get(job.id))
        )
        self._announce_positions()
        return job

    async def _withdraw(self, job_id: str) -> None:
        """Take a job whose row could not be written out of the queue again."""
        try:
            await self._queue.cancel(job_id, "")
        except Exception as error:
            log.error("job %s: admitted without its row and not withdrawn (%r)", job_id, error)

    # -- what the queue reports ----------------------------------------------------------------

    def _apply(self, update: Update, *, recovering: bool = False) -> Awaitable[None] | None:
        """One step of a job from the queue: write its state, then tell the listeners. A
        finished painting is then read and handed out by the awaitable returned, which the
        queue awaits before its next step.

        ``recovering``: found at start, before anyone listens (nothing is announced but
        failures, which listeners added later get too).
        """
        self._ledger.save_again()
        if isinstance(update, QueueMoved):
            self._announce_positions()
            return None
        if isinstance(update, BatchTimed):
            self._speed.learn_batch(update.size, update.largest_work, update.seconds)
            return None
        pending: Awaitable[None] | None = None
        job = self._ledger.find(update.job_id)
        if job is None:
            log.debug(
                "%s for job %s skipped: not in hand here", type(update).__name__, update.job_id
            )
        elif isinstance(update, RunStarted):
            self._started(job, update)
        elif isinstance(update, RunPlanned):
            if update.total_work and update.total_work != job.work:
                self._ledger.save(replace(job, work=update.total_work))
        elif isinstance(update, RunProgress):
            self._progressed(job, update)
        elif isinstance(update, RunRequeued):
            self._requeued(job, update, recovering=recovering)
        elif isinstance(update, RunDone):
            pending = self._done(job, update)
        elif isinstance(update, RunFailed):
            if update.code == "engine_crashed":
                job = replace(job, crashes=job.crashes + 1)
            self._finish_failed(job, update.code, update.message, recovering=recovering)
        elif isinstance(update, RunCancelled):
            job = self._finish(job, JobState.CANCELLED)
            log.info("job %s cancelled while running by %s", job.id, update.by_user)
            self._emit(Cancelled(job=job, by_user=update.by_user))
        if isinstance(update, RunDone | RunFailed | RunCancelled) and not recovering:
            self._announce_positions()
        if update.event_id:
            self._remember(update.event_id)
        return pending

    def _started(self, job: Job, update: RunStarted) -> None:
        job = replace(
            job, state=JobState.RUNNING, started_at=self._clock(), attempts=update.attempt
        )
        self._ledger.save(job)
        self._positions.pop(job.id, None)
        self._ledger.progress[job.id] = (0.0, None)
        log.info(
            "job %s started: member %s/%s, %.1fs after it was queued, attempt %d on %s",
            job.id,
            job.platform,
            job.user_id,
            (job.started_at or 0) - job.created_at,
            job.attempts,
            update.worker,
        )
        self._emit(Started(job=job, rerun=update.attempt > 1, note=self._notes.pop(job.id, None)))
        self._announce_positions()

    def _progressed(self, job: Job, update: RunProgress) -> None:
        if job.state is not JobState.RUNNING or update.attempt != job.attempts:
            return  # from a run that was taken back meanwhile
        self._ledger.progress[job.id] = (update.percent, update.eta)
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

    def _requeued(self, job: Job, update: RunRequeued, *, recovering: bool) -> None:
        crashed = update.reason in CRASHES
        job = replace(job, state=JobState.QUEUED, crashes=job.crashes + crashed)
        self._ledger.save(job)
        self._ledger.progress.pop(job.id, None)
        if self._closed:
            log.info("job %s was running at shutdown; it runs again at the next start", job.id)
            self._ledger.let_go(job.id)
            return
        if recovering:
            return
        if self._queue.kind != "embedded" and update.reason != "readmitted":
            self._notes[job.id] = replies.restarting_elsewhere(update.attempt)
        log.info(
            "job %s back in the queue (%s); attempt %d next", job.id, update.reason, update.attempt
        )
        self._announce_positions()

    def _done(self, job: Job, update: RunDone) -> Awaitable[None]:
        if update.batch <= 1:  # a pass of several is learned from whole (BatchTimed)
            self._speed.learn(update.work or job.work, update.seconds)
        job = self._finish(
            job, JobState.DONE, result_path=update.result_path, seconds=update.seconds
        )
        log.info(
            "job %s done: member %s/%s, painted in %.1fs at %dx%d, %.1fs since queued",
            job.id,
            job.platform,
            job.user_id,
            update.seconds,
            update.width,
            update.height,
            (job.finished_at or 0) - job.created_at,
        )
        return self._hand_out(job, update.png)

    async def _hand_out(self, job: Job, png: bytes | None) -> None:
        """A finished painting to the listeners: its result read (off the event loop) unless
        the queue had it in hand; one that cannot be read fails."""
        if png is None:
            finished = await load_finished(job)
        else:
            kept = await asyncio.to_thread(timelapses.kept, job.result_path)
            finished = Finished(job=job, result_png=png, seconds=job.seconds or 0.0, timelapse=kept)
        if finished is None:
            self._finish_failed(job, "internal", replies.OUR_FAULT)
        else:
            self._deliveries.finished(job, finished, self._listeners)

    def _remember(self, event_id: str) -> None:
        """The last event handled, so that a restart replays what follows it."""
        try:
            self._store.set_meta(EVENTS_READ, event_id)
        except sqlite3.Error as error:
            log.warning("could not store the last event read (%s); it may be replayed", error)

    def _finish(self, job: Job, state: JobState, **changes: object) -> Job:
        self._positions.pop(job.id, None)
        self._notes.pop(job.id, None)
        return self._ledger.finish(job, state, **changes)

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

    # -- events and housekeeping ---------------------------------------------------------------

    @property
    def seconds_per_work(self) -> float:
        """The engine's speed as learned so far (see :mod:`bot.eta`)."""
        return self._speed.seconds_per_work

    def _announce_positions(self, *, force: bool = False) -> None:
        order = self._outlook.order()
        etas = self._outlook.etas(order)
        for position, job in enumerate(order, start=1):
            if self._ledger.find(job.id) is None:
                continue  # another bot's
            if force or self._positions.get(job.id) != position:
                self._positions[job.id] = position
                self._emit(
                    PositionChanged(
                        job=job,
                        position=position,
                        eta=etas.get(job.id),
                        note=self._notes.get(job.id),
                    )
                )

    def _emit(self, event: JobEvent) -> None:
        for feed in self._listeners:
            feed.put(event)

    async def _housekeeping_loop(self) -> None:
        """Hourly: delete expired files, forget old rows, log a status line for the admin."""
        while True:
            try:
                report = await self._sweep()
                running = self._ledger.running()
                log.info(
                    "status: %d waiting, running %s, %d done, %d failed, %s s per job, %s %s",
                    len(self._outlook.order()),
                    ", ".join(job.id for job in running) or "nothing",
                    report.counts.get(JobState.DONE.value, 0),
                    report.counts.get(JobState.FAILED.value, 0),
                    f"{report.average_seconds:.1f}" if report.average_seconds else "-",
                    "engine" if self._queue.kind == "embedded" else "queue",
                    self._queue.device or "down",
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
            self._inputs.claims,
            files_before=now - self._limits.retention_hours * 3600,
            rows_before=now - self._limits.forget_days * 24 * 3600,
            should_stop=lambda: self._closed,
        )


def _new_job_id() -> str:
    return secrets.token_urlsafe(8)[:10]
