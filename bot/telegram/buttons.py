"""What the buttons under Telegram's status messages and results do: Cancel, the re-rolls
(Stronger, Softer, ...), Timelapse, Delete.

The buttons carry a job id only (:mod:`bot.telegram.keyboards`); the job's state lives in
the store, so a button still works after a restart. Who may press what is the service's rule
(the owner, or a moderator: a configured one, or an administrator of the group); the handlers
say who is pressing, and the one error reply shows the service's refusal as an alert. Anyone
in the chat may press Timelapse (it shows nothing the result does not, see
:mod:`bot.timelapses`): the MP4 is sent with ``sendAnimation`` under the result.

A Telegram client may send any callback data under any of the bot's messages, so every press
is taken only when its data is a button of the message it came from, as Telegram hands that
message over (:func:`bot.telegram.app.check_pressed`, run by the dispatcher before any
handler): a Delete made up under someone else's result, naming message ids to delete, does
nothing.
"""

from __future__ import annotations

import logging

from aiogram import Router
from aiogram.exceptions import TelegramAPIError
from aiogram.types import BufferedInputFile, CallbackQuery, Message

from bot import replies
from bot.errors import UserFacingError
from bot.jobs import Job, MessageRef
from bot.options import reroll
from bot.replies import PLAIN
from bot.service import PaintService
from bot.telegram.app import (
    PLATFORM,
    Feature,
    TelegramApp,
    member_name,
    replying_to,
)
from bot.telegram.keyboards import CancelButton, DeleteButton, RerollButton, TimelapseButton
from bot.telegram.status import StatusBoard

log = logging.getLogger(__name__)


class ResultButtons(Feature):
    """The router of the status and result buttons."""

    def __init__(self, app: TelegramApp, service: PaintService, board: StatusBoard) -> None:
        self._app = app
        self._bot = app.bot
        self._service = service
        self._board = board
        self.router = Router(name="buttons")
        self.router.callback_query.register(self._on_cancel, CancelButton.filter())
        self.router.callback_query.register(self._on_reroll, RerollButton.filter())
        self.router.callback_query.register(self._on_delete, DeleteButton.filter())
        self.router.callback_query.register(self._on_timelapse, TimelapseButton.filter())
        app.add_feature(self)

    async def _as_moderator(self, query: CallbackQuery, job: Job) -> bool:
        """Whether the presser, not ``job``'s owner, is a moderator where it is (the service
        decides what a moderator may do)."""
        user_id = query.from_user.id
        if job.user_id == str(user_id):
            return False
        message = query.message
        chat_type = message.chat.type if message is not None else "private"
        return await self._app.is_moderator(int(job.chat_id), chat_type, user_id)

    async def _on_cancel(self, query: CallbackQuery, callback_data: CancelButton) -> None:
        job = self._service.get(callback_data.job)
        by = str(query.from_user.id)
        moderator = await self._as_moderator(query, job)
        job = await self._service.cancel(job.id, user_id=by, moderator=moderator)
        await query.answer(replies.cancelling(job, by))

    async def _on_reroll(self, query: CallbackQuery, callback_data: RerollButton) -> None:
        """Paint it again with one change: the owner or a moderator, from a finished painting
        (the service refuses anyone else, with the message the member sees)."""
        source = self._service.get(callback_data.job)
        job = await self._service.reroll(
            source.id,
            user_id=str(query.from_user.id),
            user_name=member_name(query.from_user),
            change=callback_data.change,
            platform=PLATFORM,
            moderator=await self._as_moderator(query, source),
        )
        self._board.expect(job)
        try:
            await query.answer(replies.rerolling(reroll(callback_data.change), source.options))
        except TelegramAPIError as error:
            # E.g. pressed while the bot was down: the query expired, but the job is queued and
            # its status message must still be opened (its result waits for it).
            log.info("telegram: could not answer a re-roll press: %s", error)
        reply_to = query.message.message_id if query.message is not None else None
        # Its picture is the painting it starts from, not the member's photo: whoever presses
        # (a moderator) is not shown more than the result under which they pressed.
        try:
            picture: bytes | None = await self._service.read_result(source)
        except UserFacingError:
            picture = None
        await self._board.open(job, picture_of=picture, reply_to=reply_to)

    async def _on_delete(self, query: CallbackQuery, callback_data: DeleteButton) -> None:
        """Delete a painting (its files; the service drops its inputs unless a kept job uses
        them) and the messages that show it: the result, its file, the status picture."""
        job = self._service.get(callback_data.job)
        by = str(query.from_user.id)
        moderator = await self._as_moderator(query, job)
        await self._service.delete_result(job.id, user_id=by, moderator=moderator)
        await query.answer(replies.DELETED)
        chat_id = int(job.chat_id)
        shown: list[int] = []
        if isinstance(query.message, Message):  # the result itself (checked), and its file
            shown.append(query.message.message_id)
            if callback_data.file_message:
                shown.append(callback_data.file_message)
        status = MessageRef.parse(job.status_ref)
        if status is not None:
            shown.append(status.message_id)
        for message_id in shown:
            try:
                await self._bot.delete_message(chat_id, message_id)
            except TelegramAPIError as error:  # already gone, or too old to delete
                log.info("job %s: message %s not deleted: %s", job.id, message_id, error)

    async def _on_timelapse(self, query: CallbackQuery, callback_data: TimelapseButton) -> None:
        """Send the painting's timelapse (an MP4, which Telegram plays as an animation) under
        the result; past the retention period, deleted or never made: an alert says so."""
        # The chat of the press decides whether it may have it (a client may send any data);
        # a press that comes without its message (too old) is answered in the painting's chat.
        if query.message is not None:
            chat_id = query.message.chat.id
        else:
            chat_id = int(self._service.get(callback_data.job).chat_id)
        async with self._service.posting_timelapse(
            callback_data.job, "mp4", platform=PLATFORM, chat_id=str(chat_id)
        ) as data:
            job = self._service.get(callback_data.job)
            await query.answer()
            reply = replying_to(query.message.message_id if query.message is not None else None)
            await self._app.send(
                chat_id,
                lambda: self._bot.send_animation(
                    chat_id,
                    BufferedInputFile(data, f"atelier-{job.id}-timelapse.mp4"),
                    caption=replies.timelapse_caption(job, PLAIN),
                    reply_parameters=reply,
                ),
            )
