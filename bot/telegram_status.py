"""Telegram status messages: one photo message per painting, edited in place as the job moves.

The status message is a photo (first the member's photo, then the engine's previews) whose
caption carries queue position, ETA and percent, with an inline "Cancel" button while the job is
alive. Its reference (``"chat_id/message_id"``) is stored on the job, so after a restart the
events of a recovered job keep editing the same message.

Telegram's limits are respected here and nowhere else:

- edits in one chat are at least ``interval`` seconds apart; events in between are coalesced
  (the latest state wins) and flushed by a timer, except state changes (queued, started,
  finished, ...), which go out at once;
- an edit to exactly what is shown is never sent; "message is not modified" (e.g. after a
  restart, when what is shown is unknown) counts as success;
- ``RetryAfter`` blocks the chat for the time Telegram asks; edits wait and coalesce, results
  are retried after the wait, so flood control never loses a painting.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from aiogram import Bot
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
)
from aiogram.types import (
    BufferedInputFile,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputMediaPhoto,
    ReplyParameters,
)
from PIL import Image, ImageOps

from bot import replies
from bot.jobs import (
    Failed,
    Finished,
    Job,
    JobEvent,
    JobState,
    PositionChanged,
    Progress,
    Queued,
)
from bot.options import rerolls_for
from bot.replies import PLAIN, StatusState, status_after
from bot.service import PaintService

log = logging.getLogger(__name__)

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
# Delivers a finished challenge painting itself (bot.telegram_challenges); False: not taken.
ChallengeDelivery = Callable[[Finished], Awaitable[bool]]
T = TypeVar("T")

PLATFORM = "telegram"
SEND_ATTEMPTS = 5  # tries of one result upload through flood control
STATUS_PICTURE_SIDE = 640
OUTAGE_PAUSE = 5.0  # seconds before an edit that failed on a network or server error is retried
CAPTION_LIMIT = 1024  # Telegram's limit for media captions


# ----------------------------------------------------------------------------------------------
# what the status message says (pure)


def status_caption(job: Job, state: StatusState) -> str:
    """The caption of a status message: the sentences of :mod:`bot.replies`, then whose it is."""
    text = replies.status(job, state, PLAIN)
    footer = f"For {job.user_name} · {replies.summary(job.options)}"
    return "\n".join((text.headline, *text.lines, footer))[:CAPTION_LIMIT]


def cancel_markup(job: Job) -> InlineKeyboardMarkup:
    button = InlineKeyboardButton(text="Cancel", callback_data=f"cancel:{job.id}")
    return InlineKeyboardMarkup(inline_keyboard=[[button]])


def result_markup(job: Job) -> InlineKeyboardMarkup:
    """The re-roll buttons (Stronger, Softer, Keep colours, ...): they carry the job id only."""
    buttons = [
        InlineKeyboardButton(
            text=way.label(job.options), callback_data=f"reroll:{way.key}:{job.id}"
        )
        for way in rerolls_for(job.options)
    ]
    return InlineKeyboardMarkup(inline_keyboard=[buttons])


def result_caption(job: Job, seconds: float) -> str:
    lines = (
        f"🖼️ {replies.ready(job, PLAIN)}",
        replies.inputs(job, PLAIN),
        replies.summary(job.options),
        replies.painted_in(seconds),
    )
    return "\n".join(lines)[:CAPTION_LIMIT]


def status_picture(data: bytes) -> bytes:
    """A small JPEG of ``data`` for the status message (run it in a thread)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.draft("RGB", (STATUS_PICTURE_SIDE, STATUS_PICTURE_SIDE))
            picture = ImageOps.exif_transpose(image).convert("RGB")
    except Exception:  # the service validated it; this is only a picture for the status
        log.warning("status picture: could not decode the photo; using a plain one")
        picture = Image.new("RGB", (64, 64), (200, 200, 200))
    picture.thumbnail((STATUS_PICTURE_SIDE, STATUS_PICTURE_SIDE))
    out = io.BytesIO()
    picture.save(out, "JPEG", quality=85)
    return out.getvalue()


def parse_ref(ref: str | None) -> tuple[int, int] | None:
    if not ref:
        return None
    chat, _, message = ref.partition("/")
    try:
        return int(chat), int(message)
    except ValueError:
        return None


# ----------------------------------------------------------------------------------------------
# the status board


@dataclass
class _Status:
    """What one status message shows and what it should show."""

    job_id: str
    chat_id: int
    state: StatusState = field(default_factory=lambda: StatusState(JobState.QUEUED))
    message_id: int | None = None
    want_caption: str = ""
    want_markup: InlineKeyboardMarkup | None = None
    want_preview: bytes | None = None
    want_version: int = 0  # bumped with every new preview image
    shown_caption: str | None = None
    shown_markup: InlineKeyboardMarkup | None = None
    shown_version: int = 0
    dead: bool = False  # the message was deleted or can no longer be edited
    final: bool = False  # the job is over; forgotten once its last state is shown
    opening: bool = False  # open() is sending the message; results wait for it
    failure: str | None = None  # a failure the member has yet to see (no message to edit)
    opened: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def dirty(self) -> bool:
        return (
            self.message_id is not None
            and not self.dead
            and (
                self.want_version != self.shown_version
                or self.want_caption != self.shown_caption
                or self.want_markup != self.shown_markup
            )
        )


@dataclass
class _Gate:
    """Per-chat pacing: when the last edit went out and until when flood control blocks us."""

    last_edit: float = float("-inf")
    blocked_until: float = float("-inf")
    urgent: bool = False  # a state change is waiting: skip the interval (not flood control)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    timer: asyncio.Task[None] | None = None


class StatusBoard:
    """Keeps every Telegram job's status message in step with the service's events."""

    def __init__(
        self,
        bot: Bot,
        service: PaintService,
        *,
        clock: Clock,
        sleep: Sleep,
        interval: float,
    ) -> None:
        self._bot = bot
        self._service = service
        self._clock = clock
        self._sleep = sleep
        self._interval = interval
        self._statuses: dict[str, _Status] = {}
        self._gates: dict[int, _Gate] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self.challenge_delivery: ChallengeDelivery | None = None

    async def close(self) -> None:
        self._closed = True
        tasks = [*self._tasks, *(g.timer for g in self._gates.values() if g.timer)]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def wanted_caption(self, job_id: str) -> str | None:
        """What the status of ``job_id`` should say now (for tests and logs)."""
        status = self._statuses.get(job_id)
        return status.want_caption if status else None

    # -- opening -------------------------------------------------------------------------------

    def expect(self, job: Job) -> None:
        """Say that :meth:`open` is coming for ``job`` (call it as soon as the job exists), so
        a result that is ready first waits for the status message instead of overtaking it."""
        self._status(job).opening = True

    async def open(self, job: Job, *, picture_of: bytes, reply_to: int | None) -> None:
        """Send the status message of a newly queued ``job`` and remember it on the job.

        Never raises: the job is queued and its result will be sent either way, and telling the
        member that something failed would only make them ask again.
        """
        self.expect(job)
        status = self._status(job)
        try:
            await self._open(status, job, picture_of=picture_of, reply_to=reply_to)
        except Exception:
            log.exception("job %s: could not post its status message", job.id)
        finally:
            status.opened.set()

    async def _open(
        self, status: _Status, job: Job, *, picture_of: bytes, reply_to: int | None
    ) -> None:
        if not status.want_caption:
            position = self._service.position(job.id)
            eta = self._service.overview().etas.get(job.id)
            self._want(status, Queued(job=job, position=position or 1, eta=eta))
        picture = await asyncio.to_thread(status_picture, picture_of)
        reply = (
            ReplyParameters(message_id=reply_to, allow_sending_without_reply=True)
            if reply_to is not None
            else None
        )
        gate = self._gate(status.chat_id)
        async with gate.lock:
            caption, markup = status.want_caption, status.want_markup
            message = await self._send(
                status.chat_id,
                lambda: self._bot.send_photo(
                    status.chat_id,
                    BufferedInputFile(picture, "status.jpg"),
                    caption=caption,
                    reply_markup=markup,
                    reply_parameters=reply,
                ),
            )
            gate.last_edit = self._clock()
            status.message_id = message.message_id
            status.shown_caption, status.shown_markup = caption, markup
        await self._service.attach_status(job.id, f"{status.chat_id}/{message.message_id}")
        if status.dirty:
            self._schedule(status.chat_id, urgent=True)
        elif status.final:
            self._statuses.pop(job.id, None)

    # -- events --------------------------------------------------------------------------------

    async def on_event(self, event: JobEvent) -> None:
        """The service listener: update the wanted state, then edit (paced) and deliver."""
        job = event.job
        if job.platform != PLATFORM or self._closed:
            return
        status = self._status(job)
        self._want(status, event)
        if isinstance(event, Finished):
            self._spawn(self._deliver(event, status))
        elif isinstance(event, Failed):
            self._spawn(self._fail_without_status(status))
        if status.message_id is not None:
            self._schedule(status.chat_id, urgent=not isinstance(event, Progress | PositionChanged))

    def _status(self, job: Job) -> _Status:
        status = self._statuses.get(job.id)
        if status is None:
            status = _Status(job_id=job.id, chat_id=int(job.chat_id))
            ref = parse_ref(job.status_ref)
            if ref is not None:  # a recovered job, or one whose message was sent already
                status.chat_id, status.message_id = ref
                status.opened.set()
            self._statuses[job.id] = status
        elif status.message_id is None and (ref := parse_ref(job.status_ref)) is not None:
            status.chat_id, status.message_id = ref
        return status

    def _want(self, status: _Status, event: JobEvent) -> None:
        status.state = status_after(status.state, event)
        status.want_caption = status_caption(event.job, status.state)
        status.final = event.job.state.terminal
        status.want_markup = None if status.final else cancel_markup(event.job)
        if isinstance(event, Failed):
            status.failure = replies.failed_without_status(event.job, event.message, PLAIN)
        if isinstance(event, Progress) and event.preview_jpeg:
            status.want_preview = event.preview_jpeg
            status.want_version += 1

    # -- pacing --------------------------------------------------------------------------------

    def _gate(self, chat_id: int) -> _Gate:
        return self._gates.setdefault(chat_id, _Gate())

    def _schedule(self, chat_id: int, *, urgent: bool) -> None:
        gate = self._gate(chat_id)
        if urgent:
            gate.urgent = True
            gate.wake.set()
        if gate.timer is None or gate.timer.done():
            gate.timer = asyncio.create_task(self._pace(chat_id), name=f"tg-status-{chat_id}")

    async def _pace(self, chat_id: int) -> None:
        """Flush the chat's dirty statuses, no sooner than the interval (or flood control)."""
        gate = self._gate(chat_id)
        while any(s.dirty for s in self._in_chat(chat_id)):
            now = self._clock()
            ready = gate.blocked_until
            if not gate.urgent:
                ready = max(ready, gate.last_edit + self._interval)
            if ready > now:
                gate.wake.clear()
                await self._nap(ready - now, gate.wake)
                continue
            gate.urgent = False
            async with gate.lock:
                for status in self._in_chat(chat_id):
                    if gate.blocked_until > self._clock():
                        break  # flood control: the rest wait with the loop above
                    if status.dirty:
                        await self._edit(gate, status)
        for status in self._in_chat(chat_id):
            if status.dead or (status.final and status.message_id is not None):
                self._statuses.pop(status.job_id, None)

    async def _nap(self, seconds: float, wake: asyncio.Event) -> None:
        """Sleep ``seconds`` on the injected clock, or until ``wake`` is set."""
        sleeper = asyncio.ensure_future(self._sleep(seconds))
        waker = asyncio.ensure_future(wake.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, waker):
                task.cancel()

    def _in_chat(self, chat_id: int) -> list[_Status]:
        return [s for s in self._statuses.values() if s.chat_id == chat_id]

    async def _edit(self, gate: _Gate, status: _Status) -> None:
        assert status.message_id is not None
        caption, markup, version = status.want_caption, status.want_markup, status.want_version
        preview = status.want_preview if version != status.shown_version else None
        try:
            if preview is not None:
                await self._bot.edit_message_media(
                    media=InputMediaPhoto(
                        media=BufferedInputFile(preview, "preview.jpg"), caption=caption
                    ),
                    chat_id=status.chat_id,
                    message_id=status.message_id,
                    reply_markup=markup,
                )
            else:
                await self._bot.edit_message_caption(
                    chat_id=status.chat_id,
                    message_id=status.message_id,
                    caption=caption,
                    reply_markup=markup,
                )
        except TelegramRetryAfter as error:
            gate.blocked_until = self._clock() + error.retry_after
            log.warning(
                "telegram flood control in chat %s: waiting %ss", status.chat_id, error.retry_after
            )
            return
        except TelegramBadRequest as error:
            if "not modified" not in error.message:
                log.warning(
                    "status of job %s can no longer be edited: %s", status.job_id, error.message
                )
                status.dead = True
                if status.final and status.failure:
                    self._spawn(self._tell_failure(status))
                return
        except (TelegramNetworkError, TelegramServerError) as error:
            # An outage: try again later rather than give up on the message.
            gate.blocked_until = self._clock() + max(self._interval, OUTAGE_PAUSE)
            log.warning("status of job %s not edited (%s); retrying later", status.job_id, error)
            return
        gate.last_edit = self._clock()
        status.shown_caption, status.shown_markup, status.shown_version = caption, markup, version

    # -- results -------------------------------------------------------------------------------

    async def _deliver(self, event: Finished, status: _Status) -> None:
        """Send the painting as a photo (chat preview, with buttons) and as a document."""
        job = event.job
        chat_id = int(job.chat_id)
        if status.opening:
            await status.opened.wait()
        if job.challenge_id is not None and self.challenge_delivery is not None:
            try:
                if await self.challenge_delivery(event):
                    return
            except Exception:
                log.exception("job %s: posting the challenge entry failed", job.id)
        reply = (
            ReplyParameters(message_id=status.message_id, allow_sending_without_reply=True)
            if status.message_id is not None
            else None
        )
        photo_message_id: int | None = None
        try:
            message = await self._send(
                chat_id,
                lambda: self._bot.send_photo(
                    chat_id,
                    BufferedInputFile(event.result_png, f"atelier-{job.id}.png"),
                    caption=result_caption(job, event.seconds),
                    reply_markup=result_markup(job),
                    reply_parameters=reply,
                ),
            )
            photo_message_id = message.message_id
        except TelegramBadRequest as error:  # e.g. too large for a photo; the file still goes
            log.warning("job %s: result as photo refused: %s", job.id, error.message)
        document_reply = (
            ReplyParameters(message_id=photo_message_id, allow_sending_without_reply=True)
            if photo_message_id is not None
            else reply
        )
        await self._send(
            chat_id,
            lambda: self._bot.send_document(
                chat_id,
                BufferedInputFile(event.result_png, f"atelier-{job.id}.png"),
                caption=replies.FULL_QUALITY,
                reply_markup=result_markup(job) if photo_message_id is None else None,
                reply_parameters=document_reply,
            ),
        )

    async def _fail_without_status(self, status: _Status) -> None:
        """A job failed before its status message could be posted: say so in a message."""
        if status.opening:
            await status.opened.wait()
        if status.message_id is None:
            await self._tell_failure(status)

    async def _tell_failure(self, status: _Status) -> None:
        """The status message is gone (deleted, or never posted): send the failure instead."""
        text, status.failure = status.failure, None
        if text:
            await self._send(status.chat_id, lambda: self._bot.send_message(status.chat_id, text))

    async def send(self, chat_id: int, call: Callable[[], Awaitable[T]]) -> T:
        """Make a call that must not be lost (e.g. a challenge entry), paced like the rest."""
        return await self._send(chat_id, call)

    async def _send(self, chat_id: int, call: Callable[[], Awaitable[T]]) -> T:
        """Make a call that must not be lost, waiting out flood control and outages."""
        gate = self._gate(chat_id)
        for attempt in range(1, SEND_ATTEMPTS + 1):
            wait = gate.blocked_until - self._clock()
            if wait > 0:
                await self._sleep(wait)
            try:
                return await call()
            except TelegramRetryAfter as error:
                gate.blocked_until = self._clock() + error.retry_after
                log.warning(
                    "telegram flood control in chat %s (try %d): waiting %ss",
                    chat_id,
                    attempt,
                    error.retry_after,
                )
                if attempt == SEND_ATTEMPTS:
                    raise
            except (TelegramNetworkError, TelegramServerError) as error:
                # An outage (5xx, connection reset, timeout): wait and send again rather than
                # lose the painting. A timeout may have delivered it; a duplicate beats a loss.
                if attempt == SEND_ATTEMPTS:
                    raise
                pause = OUTAGE_PAUSE * attempt
                log.warning(
                    "telegram: sending to chat %s failed (try %d): %s; retrying in %.0fs",
                    chat_id,
                    attempt,
                    error,
                    pause,
                )
                await self._sleep(pause)
        raise AssertionError("unreachable")

    def _spawn(self, work: Awaitable[None]) -> None:
        async def guarded() -> None:
            try:
                await work
            except Exception:
                log.exception("telegram: delivering a result or a failure failed")

        task = asyncio.create_task(guarded())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
