"""The Telegram app (aiogram 3): the bot, long polling, errors, and what every feature uses.

    app = build_app(settings.telegram, service, challenges)   # see bot.telegram
    task = asyncio.create_task(app.run())     # long polling until cancelled or closed
    ...
    await app.close()

A *feature* (status messages, the ways to ask for a painting, challenges) adds one router;
other features reach it through :meth:`TelegramApp.feature`, never through its private names.
What they share is public here: :meth:`~TelegramApp.report` (the one error reply: a reply, or
an alert on a button), :meth:`download` (an image a member sent, or a clear refusal),
:func:`image_in` (the checks before downloading), :meth:`is_admin` and :meth:`is_moderator`.
This module's own router answers ``/help``, ``/start`` and ``/queue``.

``TELEGRAM_API_BASE`` points the bot at a self-hosted Bot API server (the tests use a fake one).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import aiohttp
from aiogram import Bot, Dispatcher, Router
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import PRODUCTION, TelegramAPIServer
from aiogram.exceptions import (
    TelegramAPIError,
    TelegramBadRequest,
    TelegramNetworkError,
    TelegramServerError,
)
from aiogram.filters import Command, CommandStart
from aiogram.types import (
    BotCommand,
    CallbackQuery,
    ErrorEvent,
    Message,
    ReplyParameters,
    TelegramObject,
    User,
)

from bot import replies
from bot.errors import InvalidImage, NotAllowed
from bot.options import NOT_AN_IMAGE, WORDS_HELP, image_kind
from bot.pacing import Clock, Sleep
from bot.replies import PLAIN
from bot.service import PaintService
from bot.settings import TelegramSettings
from bot.telegram.outbox import Outbox

log = logging.getLogger(__name__)

PLATFORM: Final = "telegram"
# The cloud Bot API serves files up to 20 MB to bots (getFile); a self-hosted server in
# --local mode has no such limit, so the app takes it as a parameter.
BOT_API_DOWNLOAD_LIMIT: Final = 20 * 1024 * 1024
# What fetching a member's file can fail with once it passed the checks: Telegram refusing it
# (getFile), the file server answering an error (aiohttp's ClientResponseError, whose text holds
# the file's URL and so the token), the network, a timeout. Each is "send it again".
DOWNLOAD_TROUBLE: Final = (TelegramAPIError, aiohttp.ClientError, OSError, TimeoutError)
HELP: Final = (
    "🎨 I paint your photo in the style of a painting.\n\n"
    "Ways to ask:\n"
    "• Send an album of two images with the caption /paint: your photo first, then the "
    "painting.\n"
    "• Reply to a message holding the painting with your photo, captioned /paint.\n"
    "• Send /paint alone and I'll ask for the photo, then the painting.\n\n"
    "Photos and files both work (files keep full quality). Options go after /paint, e.g. "
    "/paint strength=7 quality=high keep_colors\n"
    f"({WORDS_HELP}).\n\n"
    "A saved style instead of a painting: /paint style=starry-night as the caption of your "
    "photo; /style list shows the chat's styles, /style add saves one (administrators).\n\n"
    "/queue shows who is waiting, /cancel stops your painting, /gallery shows the chat's "
    "recent paintings.\n\n"
    "Style challenges in groups: an admin sends the painting captioned "
    "/challenge start 3d Title; members send a photo captioned /challenge enter; "
    "vote with the buttons under the entries; /challenge standings shows how it stands."
)
MESSAGE_LIMIT: Final = 4096  # characters in one Telegram message
BOOT_RETRY_FIRST: Final = 2.0  # seconds before asking an unreachable Telegram again at start
BOOT_RETRY_MAX: Final = 60.0  # the pause doubles up to this
UNREACHABLE: Final = (TelegramNetworkError, TelegramServerError, aiohttp.ClientError, OSError)
# Who ``from`` is when a message was sent on behalf of a chat rather than by a member: an
# anonymous group admin (@GroupAnonymousBot), a channel (@Channel_Bot), and Telegram itself for
# posts forwarded from a linked channel. Everyone behind one of them shares one id.
PLACEHOLDER_SENDERS: Final = frozenset({1087968824, 136817688, 777000})
COMMANDS: Final = [
    BotCommand(command="paint", description="Paint a photo in the style of a painting"),
    BotCommand(command="queue", description="Show the paintings in progress"),
    BotCommand(command="cancel", description="Cancel your painting"),
    BotCommand(command="challenge", description="Style challenges: start, enter, standings"),
    BotCommand(command="style", description="The chat's saved styles: list, add, remove"),
    BotCommand(command="gallery", description="The chat's recent paintings"),
    BotCommand(command="help", description="How to use the bot"),
]


@dataclass(frozen=True)
class ImageRef:
    """An image a member sent, not yet downloaded."""

    file_id: str
    size: int | None  # as declared by Telegram
    name: str
    role: str  # "photo" or "painting"


class Feature:
    """A part of the bot on Telegram, usually with one router (included by
    :func:`bot.telegram.build_app`, which decides the order routers see updates in; the status
    board answers no updates and has none); :meth:`close` runs at shutdown."""

    router: Router

    async def close(self) -> None:
        return None


F = TypeVar("F", bound=Feature)
T = TypeVar("T")


class TelegramApp:
    """The bot and its dispatcher; features are added by :func:`bot.telegram.build_app`."""

    def __init__(
        self,
        settings: TelegramSettings,
        service: PaintService,
        *,
        download_limit: int = BOT_API_DOWNLOAD_LIMIT,
        polling_timeout: int = 30,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._settings = settings
        self.service = service
        self._polling_timeout = polling_timeout
        api = TelegramAPIServer.from_base(settings.api_base) if settings.api_base else PRODUCTION
        self.bot = Bot(settings.token.value, session=AiohttpSession(api=api))
        # Every message to a chat goes through it (flood control, outages); see send().
        self.outbox = Outbox(clock=clock, sleep=sleep)
        self._sleep = sleep
        # Refuse before downloading: Telegram's download cap for bots, or the host's limit.
        self.image_limit = min(download_limit, service.limits.max_input_bytes)
        self.dispatcher = Dispatcher(name="atelier")
        self.dispatcher.include_router(self._control_router())
        # Every button press, whichever feature's router takes it: see check_pressed.
        self.dispatcher.callback_query.outer_middleware(_only_pressed_buttons)
        self.dispatcher.errors.register(self._on_error)
        self._features: dict[type[Feature], Feature] = {}

    # -- features ------------------------------------------------------------------------------

    def add_feature(self, feature: Feature) -> None:
        self._features[type(feature)] = feature

    def feature(self, kind: type[F]) -> F:
        """The feature of this kind (``app.feature(StatusBoard)``)."""
        feature = self._features[kind]
        assert isinstance(feature, kind)
        return feature

    # -- life cycle ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Long-poll Telegram until cancelled or :meth:`close` is called.

        Telegram out of reach at start (a network blip, a 5xx) is waited out with growing
        pauses; a rejected token raises ``TelegramUnauthorizedError`` at once.
        """
        await self._reach_telegram()
        try:
            await self.bot.set_my_commands(COMMANDS)
        except Exception:
            log.warning("telegram: could not set the command list", exc_info=True)
        await self.dispatcher.start_polling(
            self.bot,
            polling_timeout=self._polling_timeout,
            handle_signals=False,  # the process owns signals (both platforms run in it)
            close_bot_session=False,
        )

    async def _reach_telegram(self) -> None:
        """Ask who the bot is (the first call polling makes) until Telegram answers."""
        pause = BOOT_RETRY_FIRST
        while True:
            try:
                await self.bot.me()
                return
            except (
                TelegramNetworkError,
                TelegramServerError,
                aiohttp.ClientError,
                OSError,
            ) as error:
                log.warning(
                    "telegram: not reachable at start (%s); trying again in %.0f s",
                    trouble(error),
                    pause,
                )
            await self._sleep(pause)
            pause = min(pause * 2, BOOT_RETRY_MAX)

    async def close(self) -> None:
        with contextlib.suppress(RuntimeError):  # not polling
            await self.dispatcher.stop_polling()
        for feature in reversed(self._features.values()):
            await feature.close()
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
        """Tell the member what went wrong (see :func:`bot.replies.error_reply`)."""
        text = replies.error_reply(error, where="telegram")
        try:
            if callback is not None:
                await callback.answer(text[:200], show_alert=True)
            elif chat_id is not None:
                await self.send(
                    chat_id,
                    lambda: self.bot.send_message(
                        chat_id, text, reply_parameters=replying_to(reply_to)
                    ),
                )
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

    # -- what features share -------------------------------------------------------------------

    async def send(self, chat_id: int, call: Callable[[], Awaitable[T]]) -> T:
        """Make ``call``, a message to ``chat_id``, through the chat's flood control and
        outages (see :class:`~bot.telegram.outbox.Outbox`). Every message the bot sends."""
        return await self.outbox.send(chat_id, call)

    async def reply(self, message: Message, text: str, **options: Any) -> Message:
        """Answer ``message`` in its chat (and topic), through :meth:`send`; a text too long
        for one message is cut short, with a note."""
        text = replies.fit(text, MESSAGE_LIMIT)
        return await self.send(message.chat.id, lambda: message.reply(text, **options))

    async def download(self, ref: ImageRef) -> bytes:
        """The bytes of ``ref``; :class:`InvalidImage` when they cannot be had, saying why.

        A failure is logged by its kind only: its text may hold the file's URL, with the token.
        """
        try:
            data = await self.bot.download(ref.file_id)
        except DOWNLOAD_TROUBLE as error:
            if isinstance(error, TelegramBadRequest) and "too big" in error.message:
                text = replies.too_big_to_fetch(ref.role, ref.name, self.image_limit, PLAIN)
                raise InvalidImage(text) from None
            log.warning("telegram: could not download a %s: %s", ref.role, trouble(error))
            data = None
        if data is None:
            raise InvalidImage(replies.not_downloaded(ref.role, ref.name, "Telegram", PLAIN))
        return data.read()

    async def is_admin(self, chat_id: int, user_id: int) -> bool:
        """An administrator (or the creator) of this group."""
        member = await self.bot.get_chat_member(chat_id, user_id)
        return member.status in ("creator", "administrator")

    async def is_moderator(self, chat_id: int, chat_type: str, user_id: int) -> bool:
        """A configured moderator, or an administrator of this group."""
        if user_id in self._settings.moderators:
            return True
        if chat_type not in ("group", "supergroup"):
            return False
        return await self.is_admin(chat_id, user_id)

    # -- /help, /start, /queue -----------------------------------------------------------------

    def _control_router(self) -> Router:
        router = Router(name="control")
        # First of all: a message that names no member is never taken for one.
        router.message.register(self._on_anonymous, anonymous, self._addressed)
        router.message.register(self._ignore, anonymous)
        router.message.register(self._on_help, Command("help"))
        router.message.register(self._on_help, CommandStart())
        router.message.register(self._on_queue, Command("queue"))
        return router

    async def _on_anonymous(self, message: Message) -> None:
        """A command sent as a channel or as an anonymous admin: ask them to post as themselves.

        Limits, /cancel and ownership all go by the sender's id, which such a message does not
        have (``from`` is a placeholder shared by everyone posting that way)."""
        await self.reply(message, replies.POST_AS_YOURSELF)

    async def _ignore(self, message: Message) -> None:
        return None

    def _addressed(self, message: Message) -> bool:
        """A command (as text or caption), or a reply to one of this bot's messages."""
        text = message.text or message.caption or ""
        replied = message.reply_to_message
        author = replied.from_user if replied is not None else None
        return text.startswith("/") or (author is not None and author.id == self.bot.id)

    async def _on_help(self, message: Message) -> None:
        await self.reply(message, HELP)

    async def _on_queue(self, message: Message) -> None:
        assert message.from_user is not None
        text = replies.queue(
            self.service.overview(),
            platform=PLATFORM,
            user_id=str(message.from_user.id),
            chat_id=str(message.chat.id),
            markup=PLAIN,
        )
        await self.reply(message, text.joined())


def anonymous(message: Message) -> bool:
    """Sent on behalf of a chat (as a channel, as an anonymous admin), not by a member."""
    user = message.from_user
    return message.sender_chat is not None or user is None or user.id in PLACEHOLDER_SENDERS


def image_in(message: Message | None, *, role: str, limit: int) -> ImageRef | None:
    """The image ``message`` holds (None if it holds none), checked before any download.

    Raises :class:`InvalidImage` for a file that is not an image we accept or is too large to
    download; ``role`` ("photo", "painting") names it in that message.
    """
    if message is None:
        return None
    if message.photo:
        largest = max(message.photo, key=lambda size: size.width * size.height)
        ref = ImageRef(largest.file_id, largest.file_size, "photo.jpg", role)
    elif message.document is not None:
        document = message.document
        name = document.file_name or "file"
        kind = image_kind(document.mime_type, name)
        if kind is NOT_AN_IMAGE:
            raise InvalidImage(replies.not_an_image(role, name, PLAIN))
        if kind is not None:
            raise InvalidImage(replies.unreadable_format(role, name, kind, PLAIN))
        ref = ImageRef(document.file_id, document.file_size, name, role)
    else:
        return None
    if ref.size is not None and ref.size > limit:
        raise InvalidImage(
            replies.too_big(role, ref.name, ref.size, limit, PLAIN, tip=replies.SMALLER_OR_PHOTO)
        )
    return ref


def trouble(error: BaseException) -> str:
    """What went wrong, for the log, without the error's own text (a URL with the token)."""
    if isinstance(error, aiohttp.ClientResponseError):
        return f"{type(error).__name__} (HTTP {error.status})"
    if isinstance(error, TelegramAPIError) and not isinstance(error, TelegramNetworkError):
        return f"{type(error).__name__}: {error.message}"  # Telegram's own description
    return type(error).__name__


def check_pressed(query: CallbackQuery) -> None:
    """:class:`NotAllowed` when the pressed data is not a button of the message the press came
    from (made up by the client: it may send any data under any of the bot's messages). A
    message too old for Telegram to hand over cannot be checked; the handlers then act only on
    what the record of the job (or entry) says. Run for every press before any handler."""
    message = query.message
    if not isinstance(message, Message):
        return
    rows = message.reply_markup.inline_keyboard if message.reply_markup is not None else []
    if not any(button.callback_data == query.data for row in rows for button in row):
        raise NotAllowed(replies.NOT_THIS_MESSAGE)


async def _only_pressed_buttons(
    handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
    query: TelegramObject,
    data: dict[str, Any],
) -> Any:
    """The dispatcher's outer middleware for button presses: :func:`check_pressed` first
    (its refusal reaches the member through the errors handler, as an alert)."""
    if isinstance(query, CallbackQuery):
        check_pressed(query)
    return await handler(query, data)


def replying_to(message_id: int | None) -> ReplyParameters | None:
    """Reply to this message if it is still there (None: no reply)."""
    if message_id is None:
        return None
    return ReplyParameters(message_id=message_id, allow_sending_without_reply=True)


def member_name(user: User | None) -> str:
    if user is None:
        return "Someone"
    return user.full_name or (f"@{user.username}" if user.username else str(user.id))
