"""Telegram status messages and results (the buttons under them are
:mod:`bot.telegram.keyboards`; what they do, :mod:`bot.telegram.buttons`).

A status message is a photo (a small picture of the member's photo, made in the sandbox, then
the engine's previews) captioned with what :mod:`bot.replies` says about the job, with a Cancel
button while it runs. Its reference is stored on the job, so a recovered job keeps editing it
after a restart. The one :class:`~bot.pacing.Pacer` paces the edits (a chat is a lane); results
go through the app's outbox (flood control, outages) and are marked delivered once out, so a
result the bot could not post before it stopped is posted after the restart.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import TypeVar

from aiogram.exceptions import (
    TelegramAPIError,
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
)
from aiogram.types import BufferedInputFile, InlineKeyboardMarkup, InputMediaPhoto

from bot import replies
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
from bot.pacing import Blocked, Clock, Lost, Paced, Pacer, Sleep
from bot.replies import PLAIN, StatusState, status_after
from bot.sandbox import DecoderFailed, Sandbox
from bot.service import PaintService
from bot.telegram.app import PLATFORM, Feature, TelegramApp, replying_to
from bot.telegram.keyboards import cancel_markup, result_markup
from engine.images import ImageError

log = logging.getLogger(__name__)

# Posts a finished challenge painting as an entry (bot.telegram.challenges); False: not one.
EntryDelivery = Callable[[Finished], Awaitable[bool]]
T = TypeVar("T")

STATUS_PICTURE_SIDE = 640
CAPTION_LIMIT = 1024  # Telegram's limit for media captions
# A plain grey 64 px JPEG: the status picture when the sandbox cannot make one (or there is
# none). Never a picture decoded in this process.
PLACEHOLDER_PICTURE = base64.b64decode(
    "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDABALDA4MChAODQ4SERATGCgaGBYWGDEjJR0oOjM9PDkzODdASFxOQERXR"
    "Tc4UG1RV19iZ2hnPk1xeXBkeFxlZ2P/2wBDARESEhgVGC8aGi9jQjhCY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2N"
    "jY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2P/wAARCABAAEADASIAAhEBAxEB/8QAFQABAQAAAAAAAAAAAAAAAAAAAAb/x"
    "AAUEAEAAAAAAAAAAAAAAAAAAAAA/8QAFAEBAAAAAAAAAAAAAAAAAAAAAP/EABQRAQAAAAAAAAAAAAAAAAAAAAD/2gA"
    "MAwEAAhEDEQA/AKQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAH/2Q=="
)


# ----------------------------------------------------------------------------------------------
# what the status message says (pure)


def status_caption(job: Job, state: StatusState) -> str:
    """The caption of a status message: the sentences of :mod:`bot.replies`, then whose it is."""
    text = replies.status(job, state, PLAIN)
    footer = f"For {job.user_name} · {replies.summary(job.options, job.blended_with)}"
    return "\n".join((text.headline, *text.lines, footer))[:CAPTION_LIMIT]


def result_caption(job: Job, seconds: float) -> str:
    lines = (
        f"🖼️ {replies.ready(job, PLAIN)}",
        replies.inputs(job, PLAIN),
        replies.summary(job.options, job.blended_with),
        replies.painted_in(seconds),
    )
    return "\n".join(lines)[:CAPTION_LIMIT]


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
        sandbox: Sandbox | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        interval: float = 4.0,
    ) -> None:
        self._app = app
        self._bot = app.bot
        self._service = service
        self._deliver_entry = deliver_entry
        self._sandbox = sandbox
        self._pacer: Pacer[_Status] = Pacer(
            self._edit,
            clock=clock,
            sleep=sleep,
            interval=interval,
            retry_pause=app.outbox.outage_pause,
        )
        self._closed = False
        app.add_feature(self)
        # This board posts Telegram's results and says when each is out (mark_delivered).
        service.add_listener(self.on_event, delivers=PLATFORM)

    async def close(self) -> None:
        self._closed = True
        await self._pacer.close()

    # -- opening -------------------------------------------------------------------------------

    def expect(self, job: Job) -> None:
        """Say that :meth:`open` is coming for ``job`` (call it as soon as the job exists), so
        a result that is ready first waits for the status message instead of overtaking it."""
        self._status(job).opening = True

    async def open(self, job: Job, *, picture_of: bytes | None, reply_to: int | None) -> None:
        """Send the status message of a newly queued ``job`` and remember it on the job.

        ``picture_of``: the image its picture shows (the member's photo; for a re-roll, the
        painting it starts from), made small in the sandbox; None: a plain picture.

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
        self, status: _Status, job: Job, *, picture_of: bytes | None, reply_to: int | None
    ) -> None:
        if status.state.position is None and status.state.state is JobState.QUEUED:
            position = self._service.position(job.id)
            eta = self._service.overview().etas.get(job.id)
            self._want(status, Queued(job=job, position=position or 1, eta=eta))
        picture = await self._picture(picture_of)
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

    async def _picture(self, data: bytes | None) -> bytes:
        """A small JPEG of ``data`` for a status message, made in the sandbox: this process,
        which holds the token, never decodes a member's image."""
        if data is None or self._sandbox is None:
            return PLACEHOLDER_PICTURE
        try:
            return await self._sandbox.thumbnail(data, max_side=STATUS_PICTURE_SIDE)
        except (ImageError, DecoderFailed) as error:
            # The service checked the image; this is only the status message's picture.
            log.warning("status picture not made (%s); using a plain one", type(error).__name__)
            return PLACEHOLDER_PICTURE

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
        blocked = self._app.outbox.blocked_for(status.chat_id)
        if blocked > 0:  # a reply or a result ran into flood control in this chat
            raise Blocked(blocked)
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
            self._app.outbox.block(status.chat_id, error.retry_after)
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
        """Post the painting (or the challenge entry), then tell the service it is out.

        A result not marked delivered (the bot stopped, Telegram was down past the retries) is
        announced again at the next start and posted then; one the chat refuses for good (the
        bot was blocked or removed) is marked too, so it is not tried at every start.
        """
        job = event.job
        if status.opening:
            await status.opened.wait()
        if job.challenge_id is not None and self._deliver_entry is not None:
            try:
                if await self._deliver_entry(event):
                    await self._service.mark_delivered(job.id)
                    return
            except Exception:
                log.exception("job %s: posting the challenge entry failed", job.id)
        try:
            photo_id, file_id = await self._post_result(event, status)
        except (TelegramForbiddenError, TelegramBadRequest) as error:
            if isinstance(error, TelegramBadRequest) and "chat not found" not in error.message:
                raise
            # Blocked, removed from the group, the chat deleted: never deliverable.
            log.warning("job %s: chat %s refuses the bot (%s)", job.id, job.chat_id, error.message)
            await self._service.mark_delivered(job.id)
            return
        await self._service.mark_delivered(job.id)
        if photo_id is not None:
            # Delete under the photo removes the full-quality file too, now that it is known.
            chat_id = int(job.chat_id)
            markup = result_markup(job, file_id, timelapse=event.timelapse)
            try:
                await self.send(
                    chat_id,
                    lambda: self._bot.edit_message_reply_markup(
                        chat_id=chat_id, message_id=photo_id, reply_markup=markup
                    ),
                )
            except TelegramAPIError as error:
                log.info("job %s: result buttons not updated: %s", job.id, error)

    async def _post_result(self, event: Finished, status: _Status) -> tuple[int | None, int]:
        """Send the painting as a photo (chat preview, with buttons) and as a document;
        returns their message ids (no photo: Telegram refused it as one)."""
        job = event.job
        chat_id = int(job.chat_id)
        reply = replying_to(status.message_id)
        photo_id: int | None = None
        try:
            message = await self.send(
                chat_id,
                lambda: self._bot.send_photo(
                    chat_id,
                    BufferedInputFile(event.result_png, f"atelier-{job.id}.png"),
                    caption=result_caption(job, event.seconds),
                    reply_markup=result_markup(job, timelapse=event.timelapse),
                    reply_parameters=reply,
                ),
            )
            photo_id = message.message_id
        except TelegramBadRequest as error:  # e.g. too large for a photo; the file still goes
            log.warning("job %s: result as photo refused: %s", job.id, error.message)
        document = await self.send(
            chat_id,
            lambda: self._bot.send_document(
                chat_id,
                BufferedInputFile(event.result_png, f"atelier-{job.id}.png"),
                caption=replies.FULL_QUALITY,
                reply_markup=(
                    result_markup(job, timelapse=event.timelapse) if photo_id is None else None
                ),
                reply_parameters=replying_to(photo_id) or reply,
            ),
        )
        return photo_id, document.message_id

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
        """Make a call that must not be lost (a result, a challenge entry): through the app's
        :class:`~bot.telegram.outbox.Outbox`, which waits out flood control (which blocks the
        chat's status edits too) and outages."""
        return await self._app.send(chat_id, call)
