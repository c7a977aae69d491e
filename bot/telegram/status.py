"""Telegram status messages and results, with the buttons under them and what they do.

A status message is a photo (the member's, then the engine's previews) captioned with what
:mod:`bot.replies` says about the job, with a Cancel button while it runs. Its reference is
stored on the job, so a recovered job keeps editing it after a restart. The one
:class:`~bot.pacing.Pacer` paces the edits (a chat is a lane); results wait out flood control
and outages. Buttons are typed :class:`~aiogram.filters.callback_data.CallbackData` holding a
job id (``cancel:<job>``, ``reroll:<change>:<job>``: the strings of buttons already posted).
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import TypeVar

from aiogram import Router
from aiogram.exceptions import (
    TelegramAPIError,
    TelegramBadRequest,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
)
from aiogram.filters.callback_data import CallbackData
from aiogram.types import (
    BufferedInputFile,
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputMediaPhoto,
)
from PIL import Image, ImageOps

from bot import replies
from bot.errors import NotAllowed
from bot.jobs import (
    Failed,
    Finished,
    Job,
    JobEvent,
    JobState,
    MessageRef,
    Progress,
    Queued,
)
from bot.options import reroll, rerolls_for
from bot.pacing import Blocked, Clock, Lost, Paced, Pacer, Sleep
from bot.replies import PLAIN, StatusState, status_after
from bot.service import PaintService
from bot.telegram.app import PLATFORM, Feature, TelegramApp, member_name, replying_to

log = logging.getLogger(__name__)

# Posts a finished challenge painting as an entry (bot.telegram.challenges); False: not one.
EntryDelivery = Callable[[Finished], Awaitable[bool]]
T = TypeVar("T")

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


class CancelButton(CallbackData, prefix="cancel"):
    job: str


class RerollButton(CallbackData, prefix="reroll"):
    change: str
    job: str


def cancel_markup(job: Job) -> InlineKeyboardMarkup:
    data = CancelButton(job=job.id).pack()
    return InlineKeyboardMarkup(
        inline_keyboard=[[InlineKeyboardButton(text="Cancel", callback_data=data)]]
    )


def result_markup(job: Job) -> InlineKeyboardMarkup:
    """The re-roll buttons (Stronger, Softer, Keep colours, ...): they carry the job id only."""
    buttons = [
        InlineKeyboardButton(
            text=way.label(job.options),
            callback_data=RerollButton(change=way.key, job=job.id).pack(),
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


# ----------------------------------------------------------------------------------------------
# the status board


@dataclass(eq=False, kw_only=True)
class _Status(Paced):
    """One status message: what it should show (the pacer knows what it shows)."""

    job: Job
    chat_id: int
    state: StatusState = field(default_factory=lambda: StatusState(JobState.QUEUED))
    message_id: int | None = None
    preview: bytes | None = None  # the newest preview image
    preview_shown: int = 0
    opening: bool = False  # open() is sending the message; results wait for it
    failure: str | None = None  # a failure the member has yet to see (no message to edit)
    opened: asyncio.Event = field(default_factory=asyncio.Event)

    def wanted(self) -> Hashable:
        return self.showing(self.state.preview)

    def showing(self, preview: int) -> Hashable:
        """What a member sees: the caption, whether it has buttons, which preview."""
        return (status_caption(self.job, self.state), self.final, preview)

    def markup(self) -> InlineKeyboardMarkup | None:
        return None if self.final else cancel_markup(self.job)


class StatusBoard(Feature):
    """Keeps every Telegram job's status message in step with the service; sends results."""

    def __init__(
        self,
        app: TelegramApp,
        service: PaintService,
        *,
        deliver_entry: EntryDelivery | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        interval: float = 4.0,
    ) -> None:
        self._app = app
        self._bot = app.bot
        self._service = service
        self._deliver_entry = deliver_entry
        self._pacer: Pacer[_Status] = Pacer(
            self._edit, clock=clock, sleep=sleep, interval=interval, retry_pause=OUTAGE_PAUSE
        )
        self._closed = False
        self.router = Router(name="status")
        self.router.callback_query.register(self._on_cancel, CancelButton.filter())
        self.router.callback_query.register(self._on_reroll, RerollButton.filter())
        app.add_feature(self)
        service.add_listener(self.on_event)

    async def close(self) -> None:
        self._closed = True
        await self._pacer.close()

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
        if status.state.position is None and status.state.state is JobState.QUEUED:
            position = self._service.position(job.id)
            eta = self._service.overview().etas.get(job.id)
            self._want(status, Queued(job=job, position=position or 1, eta=eta))
        picture = await asyncio.to_thread(status_picture, picture_of)
        reply = replying_to(reply_to)
        async with self._pacer.lock(status.chat_id):
            shown = status.showing(preview=0)  # the member's photo; previews come by editing
            caption, markup = status_caption(status.job, status.state), status.markup()
            message = await self.send(
                status.chat_id,
                lambda: self._bot.send_photo(
                    status.chat_id,
                    BufferedInputFile(picture, "status.jpg"),
                    caption=caption,
                    reply_markup=markup,
                    reply_parameters=reply,
                ),
            )
            status.message_id = message.message_id
            self._pacer.posted(status, shown)
        ref = MessageRef(status.chat_id, message.message_id)
        await self._service.attach_status(job.id, str(ref))

    # -- events --------------------------------------------------------------------------------

    async def on_event(self, event: JobEvent) -> None:
        """The service listener: update the wanted state; the pacer edits, results go out."""
        job = event.job
        if job.platform != PLATFORM or self._closed:
            return
        status = self._status(job)
        before = status.state.state
        self._want(status, event)
        if isinstance(event, Finished):
            self._pacer.spawn(self._deliver(event, status), name=f"telegram-deliver-{job.id}")
        elif isinstance(event, Failed):
            self._pacer.spawn(self._fail_without_status(status), name=f"telegram-fail-{job.id}")
        self._pacer.changed(status, urgent=status.state.state is not before)

    def _status(self, job: Job) -> _Status:
        status = self._pacer.get(job.id)
        if status is None:
            status = self._pacer.add(
                _Status(key=job.id, lane=int(job.chat_id), job=job, chat_id=int(job.chat_id))
            )
            ref = MessageRef.parse(job.status_ref)
            if ref is not None:  # a recovered job, or one whose message was sent already
                status.chat_id, status.message_id, status.posted = ref.chat_id, ref.message_id, True
                status.opened.set()
        elif status.message_id is None and (ref := MessageRef.parse(job.status_ref)):
            status.chat_id, status.message_id, status.posted = ref.chat_id, ref.message_id, True
        return status

    def _want(self, status: _Status, event: JobEvent) -> None:
        status.job = event.job
        status.state = status_after(status.state, event)
        status.final = event.job.state.terminal
        if isinstance(event, Failed):
            status.failure = replies.failed_without_status(event.job, event.message, PLAIN)
        if isinstance(event, Progress) and event.preview_jpeg:
            status.preview = event.preview_jpeg

    # -- edits (paced) -------------------------------------------------------------------------

    async def _edit(self, status: _Status) -> Hashable:
        """The pacer's edit: show the wanted state; :class:`Blocked` or :class:`Lost` if not."""
        assert status.message_id is not None
        shown = status.wanted()
        caption, markup = status_caption(status.job, status.state), status.markup()
        version = status.state.preview
        new_preview = status.preview is not None and version != status.preview_shown
        try:
            if new_preview and status.preview is not None:
                await self._bot.edit_message_media(
                    media=InputMediaPhoto(
                        media=BufferedInputFile(status.preview, "preview.jpg"), caption=caption
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
            log.warning(
                "telegram flood control in chat %s: waiting %ss", status.chat_id, error.retry_after
            )
            raise Blocked(error.retry_after) from None
        except TelegramBadRequest as error:
            if "not modified" not in error.message:
                log.warning(
                    "status of job %s can no longer be edited: %s", status.key, error.message
                )
                if status.final and status.failure:
                    self._pacer.spawn(
                        self._tell_failure(status), name=f"telegram-fail-{status.key}"
                    )
                raise Lost from None
        except (TelegramNetworkError, TelegramServerError) as error:
            # An outage: try again later rather than give up on the message.
            log.warning("status of job %s not edited (%s); retrying later", status.key, error)
            raise Blocked from None
        status.preview_shown = version
        return shown

    # -- results -------------------------------------------------------------------------------

    async def _deliver(self, event: Finished, status: _Status) -> None:
        """Send the painting as a photo (chat preview, with buttons) and as a document."""
        job = event.job
        chat_id = int(job.chat_id)
        if status.opening:
            await status.opened.wait()
        if job.challenge_id is not None and self._deliver_entry is not None:
            try:
                if await self._deliver_entry(event):
                    return
            except Exception:
                log.exception("job %s: posting the challenge entry failed", job.id)
        reply = replying_to(status.message_id)
        photo_message_id: int | None = None
        try:
            message = await self.send(
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
        document_reply = replying_to(photo_message_id) or reply
        await self.send(
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
            await self.send(status.chat_id, lambda: self._bot.send_message(status.chat_id, text))

    async def send(self, chat_id: int, call: Callable[[], Awaitable[T]]) -> T:
        """Make a call that must not be lost (a result, a challenge entry), waiting out flood
        control (which blocks the chat's status edits too) and outages."""
        for attempt in range(1, SEND_ATTEMPTS + 1):
            await self._pacer.unblocked(chat_id)
            try:
                return await call()
            except TelegramRetryAfter as error:
                self._pacer.block(chat_id, error.retry_after)
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
                await self._pacer.pause(pause)
        raise AssertionError("unreachable")

    # -- what the buttons do -------------------------------------------------------------------

    async def _on_cancel(self, query: CallbackQuery, callback_data: CancelButton) -> None:
        job = self._service.get(callback_data.job)
        user_id = query.from_user.id
        moderator = False
        if job.user_id != str(user_id):
            message = query.message
            chat_type = message.chat.type if message is not None else "private"
            moderator = await self._app.is_moderator(int(job.chat_id), chat_type, user_id)
            if not moderator:
                raise NotAllowed(replies.owner_only(job, "cancel"))
        job = await self._service.cancel(job.id, user_id=str(user_id), moderator=moderator)
        await query.answer(replies.cancelling(job, str(user_id)))

    async def _on_reroll(self, query: CallbackQuery, callback_data: RerollButton) -> None:
        source = self._service.get(callback_data.job)
        job = await self._service.reroll(
            source.id,
            user_id=str(query.from_user.id),
            user_name=member_name(query.from_user),
            change=callback_data.change,
        )
        self.expect(job)
        try:
            await query.answer(replies.rerolling(reroll(callback_data.change), source.options))
        except TelegramAPIError as error:
            # E.g. pressed while the bot was down: the query expired, but the job is queued and
            # its status message must still be opened (its result waits for it).
            log.info("telegram: could not answer a re-roll press: %s", error)
        reply_to = query.message.message_id if query.message is not None else None
        await self.open(
            job, picture_of=self._service.input_bytes(source, "photo"), reply_to=reply_to
        )
