"""The Telegram adapter (aiogram 3): routers on top of the paint service.

    app = TelegramApp(settings.telegram, service)
    task = asyncio.create_task(app.run())     # long polling until cancelled or closed
    ...
    await app.close()

One router per concern: ``paint`` (gathering requests, :mod:`bot.telegram_flows`), ``control``
(/cancel, /queue, /help, /start) and ``buttons`` (Cancel under a status message; Stronger, Softer
and Keep colours under a result). Status messages and results are :mod:`bot.telegram_status`.
Errors are mapped in one place, :meth:`TelegramApp.report`: a :class:`UserFacingError` becomes a
reply (or an alert on a button); anything else is logged with a reference id and answered
politely. Button data carries a job id only, so buttons keep working after a restart.

``TELEGRAM_API_BASE`` points the bot at a self-hosted Bot API server (the tests use a fake one).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from aiogram import Bot, Dispatcher, F, Router
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import PRODUCTION, TelegramAPIServer
from aiogram.exceptions import TelegramAPIError
from aiogram.filters import Command, CommandStart
from aiogram.types import (
    BotCommand,
    CallbackQuery,
    ErrorEvent,
    Message,
    ReplyParameters,
)

from bot import replies
from bot.errors import NotAllowed
from bot.options import WORDS_HELP, reroll
from bot.replies import PLAIN
from bot.service import PaintService
from bot.settings import TelegramSettings
from bot.telegram_flows import BOT_API_DOWNLOAD_LIMIT, PaintRequests, member_name
from bot.telegram_status import PLATFORM, Clock, Sleep, StatusBoard

log = logging.getLogger(__name__)

HELP = (
    "🎨 I paint your photo in the style of a painting.\n\n"
    "Ways to ask:\n"
    "• Send an album of two images with the caption /paint: your photo first, then the "
    "painting.\n"
    "• Reply to a message holding the painting with your photo, captioned /paint.\n"
    "• Send /paint alone and I'll ask for the photo, then the painting.\n\n"
    "Photos and files both work (files keep full quality). Options go after /paint, e.g. "
    "/paint strength=7 quality=high keep_colors\n"
    f"({WORDS_HELP}).\n\n"
    "/queue shows who is waiting, /cancel stops your painting.\n\n"
    "Style challenges in groups: an admin sends the painting captioned "
    "/challenge start 3d Title; members send a photo captioned /challenge enter; "
    "vote with the buttons under the entries; /challenge standings shows how it stands."
)
COMMANDS = [
    BotCommand(command="paint", description="Paint a photo in the style of a painting"),
    BotCommand(command="queue", description="Show the paintings in progress"),
    BotCommand(command="cancel", description="Cancel your painting"),
    BotCommand(command="challenge", description="Style challenges: start, enter, standings"),
    BotCommand(command="help", description="How to use the bot"),
]


class TelegramApp:
    def __init__(
        self,
        settings: TelegramSettings,
        service: PaintService,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        edit_interval: float = 4.0,
        album_wait: float = 1.0,
        flow_timeout: float = 300.0,
        download_limit: int = BOT_API_DOWNLOAD_LIMIT,
        polling_timeout: int = 30,
    ) -> None:
        self._settings = settings
        self._service = service
        self._polling_timeout = polling_timeout
        api = TelegramAPIServer.from_base(settings.api_base) if settings.api_base else PRODUCTION
        self.bot = Bot(settings.token.value, session=AiohttpSession(api=api))
        self.board = StatusBoard(
            self.bot, service, clock=clock, sleep=sleep, interval=edit_interval
        )
        self.requests = PaintRequests(
            self.bot,
            service,
            self.board,
            report=self.report,
            sleep=sleep,
            album_wait=album_wait,
            flow_timeout=flow_timeout,
            download_limit=download_limit,
        )
        # Refuse before downloading: Telegram's download cap for bots, or the host's limit.
        self.image_limit = min(download_limit, service.limits.max_input_bytes)
        self.dispatcher = Dispatcher(name="atelier")
        self.dispatcher.include_routers(
            self.requests.router, self._control_router(), self._buttons_router()
        )
        self.dispatcher.errors.register(self._on_error)
        service.add_listener(self.board.on_event)

    # -- life cycle ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Long-poll Telegram until cancelled or :meth:`close` is called."""
        try:
            await self.bot.set_my_commands(COMMANDS)
        except Exception:
            log.warning("telegram: could not set the command list", exc_info=True)
        await self.dispatcher.start_polling(
            self.bot,
            polling_timeout=self._polling_timeout,
            handle_signals=False,  # the process owns signals (both adapters run in it)
            close_bot_session=False,
        )

    async def close(self) -> None:
        with contextlib.suppress(RuntimeError):  # not polling
            await self.dispatcher.stop_polling()
        await self.requests.close()
        await self.board.close()
        await self.bot.session.close()

    async def __aenter__(self) -> TelegramApp:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- errors, in one place ------------------------------------------------------------------

    async def report(
        self,
        error: BaseException,
        chat_id: int | None,
        reply_to: int | None = None,
        *,
        callback: CallbackQuery | None = None,
    ) -> None:
        """Tell the member what went wrong: their mistake, or ours with a reference id."""
        text = replies.error_reply(error, where="telegram")
        try:
            if callback is not None:
                await callback.answer(text[:200], show_alert=True)
            elif chat_id is not None:
                reply = (
                    ReplyParameters(message_id=reply_to, allow_sending_without_reply=True)
                    if reply_to is not None
                    else None
                )
                await self.bot.send_message(chat_id, text, reply_parameters=reply)
        except Exception:
            log.warning(
                "telegram: could not send an error reply to chat %s", chat_id, exc_info=True
            )

    async def _on_error(self, event: ErrorEvent) -> bool:
        update = event.update
        if update.callback_query is not None:
            await self.report(event.exception, None, callback=update.callback_query)
        elif update.message is not None:
            message = update.message
            await self.report(event.exception, message.chat.id, message.message_id)
        else:
            await self.report(event.exception, None)
        return True

    async def is_moderator(self, chat_id: int, chat_type: str, user_id: int) -> bool:
        """A configured moderator, or an administrator of this group."""
        if user_id in self._settings.moderators:
            return True
        if chat_type not in ("group", "supergroup"):
            return False
        member = await self.bot.get_chat_member(chat_id, user_id)
        return member.status in ("creator", "administrator")

    # -- /cancel, /queue, /help ----------------------------------------------------------------

    def _control_router(self) -> Router:
        router = Router(name="control")
        router.message.register(self._on_help, Command("help"))
        router.message.register(self._on_help, CommandStart())
        router.message.register(self._on_cancel, Command("cancel"))
        router.message.register(self._on_queue, Command("queue"))
        return router

    async def _on_help(self, message: Message) -> None:
        await message.reply(HELP)

    async def _on_cancel(self, message: Message) -> None:
        assert message.from_user is not None
        if self.requests.cancel_flow(message.chat.id, message.from_user.id):
            await message.reply(replies.FLOW_STOPPED)
            return
        job = await self._service.cancel_mine(PLATFORM, str(message.from_user.id))
        await message.reply(replies.cancelling(job, str(message.from_user.id)))

    async def _on_queue(self, message: Message) -> None:
        assert message.from_user is not None
        text = replies.queue(
            self._service.overview(),
            platform=PLATFORM,
            user_id=str(message.from_user.id),
            chat_id=str(message.chat.id),
            markup=PLAIN,
        )
        await message.reply(text.joined())

    # -- buttons -------------------------------------------------------------------------------

    def _buttons_router(self) -> Router:
        router = Router(name="buttons")
        router.callback_query.register(self._on_cancel_button, F.data.startswith("cancel:"))
        router.callback_query.register(self._on_reroll_button, F.data.startswith("reroll:"))
        return router

    async def _on_cancel_button(self, query: CallbackQuery) -> None:
        job_id = (query.data or "").removeprefix("cancel:")
        user_id = query.from_user.id
        job = self._service.get(job_id)
        moderator = False
        if job.user_id != str(user_id):
            message = query.message
            chat_type = message.chat.type if message is not None else "private"
            moderator = await self.is_moderator(int(job.chat_id), chat_type, user_id)
            if not moderator:
                raise NotAllowed(replies.owner_only(job, "cancel"))
        job = await self._service.cancel(job_id, user_id=str(user_id), moderator=moderator)
        await query.answer(replies.cancelling(job, str(user_id)))

    async def _on_reroll_button(self, query: CallbackQuery) -> None:
        _, change, job_id = (query.data or "").split(":", 2)
        source = self._service.get(job_id)
        job = await self._service.reroll(
            job_id,
            user_id=str(query.from_user.id),
            user_name=member_name(query.from_user),
            change=change,
        )
        self.board.expect(job)
        try:
            await query.answer(replies.rerolling(reroll(change), source.options))
        except TelegramAPIError as error:
            # E.g. pressed while the bot was down: the query expired, but the job is queued and
            # its status message must still be opened (its result waits for it).
            log.info("telegram: could not answer a re-roll press: %s", error)
        reply_to = query.message.message_id if query.message is not None else None
        await self.board.open(
            job, picture_of=self._service.input_bytes(source, "photo"), reply_to=reply_to
        )
