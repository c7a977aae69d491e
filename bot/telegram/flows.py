"""How a /paint request is gathered on Telegram, in the three ways a member can ask.

1. An album of two images with the caption ``/paint`` (first the photo, then the painting).
   Telegram delivers an album as one message per image sharing a ``media_group_id``; they are
   collected for ``album_wait`` seconds after the last one arrives, so one album is one job.
2. ``/paint`` as the caption of a photo sent in reply to a message holding the painting.
3. ``/paint`` alone: the bot asks for the photo, then the painting (replies to the bot's prompts
   reach it even in groups with privacy mode on), and gives up politely after ``flow_timeout``.

Images may come as photos (the largest size is used) or as files. Files are checked before they
are downloaded (declared size against the Bot API's download limit, image type); the service
validates the bytes. Options travel in the caption: ``/paint strength=7 quality=high keep_colors``.
``style=<name>`` names one of the chat's saved styles (:mod:`bot.telegram.styles`) instead of a
painting: then the one image (captioned, in an album of one, or the message replied to) is the
photo, and the guided flow asks for the photo only; an image for the painting as well is refused
(unless it is a blend, below). ``/cancel`` stops a guided /paint, or else the member's painting.

Blends of two paintings: an album of three images (photo, painting, second painting), or
``blend=30`` in the caption (the percentage of the second painting; an album of three alone
blends half and half). With ``blend=`` the second painting is whatever image comes after the
painting: the third image of the album, or, when it is missing, the guided flow asks for it
(so ``/paint blend=30`` as the caption of a photo replying to the painting, or alone, works
too). With a saved style, ``style=starry-night blend=30`` blends the style with one painting:
the second image of the album, the message replied to, or asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from aiogram import F, Router
from aiogram.filters import Command, CommandObject
from aiogram.types import ForceReply, Message, User

from bot import replies
from bot.errors import InvalidImage, InvalidOptions
from bot.jobs import PaintRequest, Style
from bot.options import asks_blend, parse, split_style
from bot.pacing import Sleep
from bot.replies import PLAIN
from bot.service import PaintService
from bot.style_rules import NoSuchStyle
from bot.styles import StyleLibrary
from bot.telegram.app import (
    PLATFORM,
    Feature,
    ImageRef,
    TelegramApp,
    image_in,
    member_name,
    replying_to,
)
from bot.telegram.status import StatusBoard
from engine.protocol import PaintOptions

SECOND = "second painting"  # a blend's, as the member is asked for it
PROMPTS = {
    "photo": replies.ASK_PHOTO,
    "painting": replies.ASK_PAINTING,
    SECOND: replies.ASK_PAINTING2,
}


async def _none() -> None:
    return None


@dataclass
class _Album:
    messages: list[Message] = field(default_factory=list)
    command: CommandObject | None = None
    timer: asyncio.Task[None] | None = None


@dataclass
class _Flow:
    """A guided /paint: the bot asked for the missing images and waits for them."""

    chat_id: int
    user: User
    options: PaintOptions
    reply_to: int
    photo: ImageRef | None = None
    painting: ImageRef | Style | None = None  # a saved style is known from the start
    painting2: ImageRef | None = None
    blend: bool = False  # a second painting is wanted
    timer: asyncio.Task[None] | None = None

    @property
    def missing(self) -> str | None:
        """The image asked for next; None once there is all it takes."""
        if self.photo is None:
            return "photo"
        if self.painting is None:
            return "painting"
        return SECOND if self.blend and self.painting2 is None else None


class PaintRequests(Feature):
    """The /paint router: turns messages into jobs, opening a status message for each."""

    def __init__(
        self,
        app: TelegramApp,
        service: PaintService,
        board: StatusBoard,
        *,
        sleep: Sleep = asyncio.sleep,
        album_wait: float = 1.0,
        flow_timeout: float = 300.0,
        library: StyleLibrary | None = None,
    ) -> None:
        """``library``: the saved styles ``style=`` names (none: no saved styles)."""
        self._app = app
        self._bot = app.bot
        self._service = service
        self._board = board
        self._sleep = sleep
        self._album_wait = album_wait
        self._flow_timeout = flow_timeout
        self._library = library
        self._limit = app.image_limit
        self._albums: dict[str, _Album] = {}
        self._flows: dict[tuple[int, int], _Flow] = {}
        self._tasks: set[asyncio.Task[None]] = set()

        self.router = Router(name="paint")
        images = F.photo | F.document
        self.router.message.register(
            self._on_album_item, F.media_group_id, images, Command("paint")
        )
        self.router.message.register(self._on_album_item, F.media_group_id, images)
        self.router.message.register(self._on_paint, Command("paint"))
        self.router.message.register(self._on_cancel, Command("cancel"))
        self.router.message.register(self._on_flow_image, images, self._in_flow)
        app.add_feature(self)

    async def close(self) -> None:
        tasks = [*self._tasks]
        tasks += [a.timer for a in self._albums.values() if a.timer]
        tasks += [f.timer for f in self._flows.values() if f.timer]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def cancel_flow(self, chat_id: int, user_id: int) -> bool:
        """Stop the member's guided /paint in this chat; False when there was none."""
        flow = self._flows.pop((chat_id, user_id), None)
        if flow is None:
            return False
        if flow.timer is not None:
            flow.timer.cancel()
        return True

    # -- handlers ------------------------------------------------------------------------------

    async def _on_cancel(self, message: Message) -> None:
        assert message.from_user is not None
        if self.cancel_flow(message.chat.id, message.from_user.id):
            await self._app.reply(message, replies.FLOW_STOPPED)
            return
        by = str(message.from_user.id)
        # This chat's painting only: /cancel in one group never stops one in another.
        job = await self._service.cancel_mine(PLATFORM, by, chat_id=str(message.chat.id))
        await self._app.reply(message, replies.cancelling(job, by))

    async def _on_paint(self, message: Message, command: CommandObject) -> None:
        """``/paint`` as a text, as a photo's caption, and/or in reply to the painting."""
        style_name, words = split_style(command.args)
        options, blend = parse(words), asks_blend(words)
        here = image_in(message, role="photo", limit=self._limit)
        reply = message.reply_to_message
        if style_name is None:
            replied = image_in(reply, role="painting", limit=self._limit)
            flow = self._flow(message, options, here, replied, None, blend=blend)
        else:
            style = self._style(message.chat.id, style_name)
            replied = image_in(reply, role=SECOND if here else "photo", limit=self._limit)
            if here is not None and replied is not None and not blend:
                raise InvalidOptions(replies.painting_and_style(replies.BLEND_WITH_STYLE_TELEGRAM))
            photo, second = (here, replied) if here is not None else (replied, None)
            flow = self._flow(message, options, photo, style, second, blend=blend)
        await self._go_on(flow)

    async def _on_album_item(self, message: Message, command: CommandObject | None = None) -> None:
        group = message.media_group_id
        assert group is not None
        album = self._albums.setdefault(group, _Album())
        album.messages.append(message)
        if command is not None:
            album.command = command
        if album.timer is not None:
            album.timer.cancel()
        album.timer = asyncio.create_task(self._album_complete(group), name=f"tg-album-{group}")

    def _in_flow(self, message: Message) -> bool:
        user = message.from_user
        return user is not None and (message.chat.id, user.id) in self._flows

    async def _on_flow_image(self, message: Message) -> None:
        assert message.from_user is not None
        flow = self._flows.get((message.chat.id, message.from_user.id))
        if flow is not None:
            await self._feed(flow, [message])

    # -- albums --------------------------------------------------------------------------------

    async def _album_complete(self, group: str) -> None:
        await self._sleep(self._album_wait)
        album = self._albums.pop(group, None)
        if album is None:
            return
        # From here the album is complete; an item arriving now starts a new one.
        album.timer = None
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        items = sorted(album.messages, key=lambda m: m.message_id)
        anchor = next((m for m in items if m.caption), items[0])
        try:
            await self._on_album(items, anchor, album.command)
        except Exception as error:
            await self._app.report(error, anchor.chat.id, anchor.message_id)

    async def _on_album(
        self, items: list[Message], anchor: Message, command: CommandObject | None
    ) -> None:
        user = anchor.from_user
        assert user is not None
        if command is None:
            flow = self._flows.get((anchor.chat.id, user.id))
            if flow is not None:
                await self._feed(flow, items)
            return  # an album that is not for us
        style_name, words = split_style(command.args)
        options, blend = parse(words), asks_blend(words)
        roles = ("photo", SECOND) if style_name is not None else ("photo", "painting", SECOND)
        refs = [
            ref
            for index, item in enumerate(items)
            if (ref := image_in(item, role=roles[min(index, len(roles) - 1)], limit=self._limit))
        ]
        if not 0 < len(refs) <= len(roles):
            text = replies.album_with_style if style_name is not None else replies.album_size
            raise InvalidImage(text(len(refs)))
        if style_name is not None:
            style = self._style(anchor.chat.id, style_name)
            if len(refs) == 2 and not blend:
                raise InvalidOptions(replies.painting_and_style(replies.BLEND_WITH_STYLE_TELEGRAM))
            second = refs[1] if len(refs) == 2 else None
            flow = self._flow(anchor, options, refs[0], style, second, blend=blend)
        else:
            # One image: e.g. a group with privacy mode delivers only the captioned item.
            painting = refs[1] if len(refs) > 1 else None
            second = refs[2] if len(refs) > 2 else None
            flow = self._flow(anchor, options, refs[0], painting, second, blend=blend)
        await self._go_on(flow)

    # -- the guided flow -----------------------------------------------------------------------

    @staticmethod
    def _flow(
        message: Message,
        options: PaintOptions,
        photo: ImageRef | None,
        painting: ImageRef | Style | None,
        painting2: ImageRef | None,
        *,
        blend: bool,
    ) -> _Flow:
        """What the member asked for so far (a blend when a second painting came or
        ``blend=`` asks for one)."""
        assert message.from_user is not None
        return _Flow(
            chat_id=message.chat.id,
            user=message.from_user,
            options=options,
            reply_to=message.message_id,
            photo=photo,
            painting=painting,
            painting2=painting2,
            blend=blend or painting2 is not None,
        )

    async def _go_on(self, flow: _Flow) -> None:
        """Paint when the request is complete, or start the guided flow for what is missing."""
        if flow.missing is None:
            await self._paint(flow)
            return
        # Past a limit the member hears it now, not after sending the images.
        self._service.reserve(PLATFORM, str(flow.chat_id), str(flow.user.id)).release()
        self.cancel_flow(flow.chat_id, flow.user.id)
        self._flows[(flow.chat_id, flow.user.id)] = flow
        await self._prompt(flow)

    async def _prompt(self, flow: _Flow) -> None:
        text = PROMPTS[flow.missing or "photo"]
        if flow.timer is not None:
            flow.timer.cancel()
        flow.timer = asyncio.create_task(self._flow_timeout_later(flow))
        force = ForceReply(selective=True, input_field_placeholder=f"your {flow.missing}")
        await self._app.send(
            flow.chat_id,
            lambda: self._bot.send_message(
                flow.chat_id,
                text,
                reply_markup=force,
                reply_parameters=replying_to(flow.reply_to),
            ),
        )

    async def _feed(self, flow: _Flow, messages: list[Message]) -> None:
        for message in messages:
            missing = flow.missing
            ref = image_in(message, role=missing or "photo", limit=self._limit)
            if ref is None or missing is None:
                continue
            flow.reply_to = message.message_id
            if missing == "photo":
                flow.photo = ref
            elif missing == "painting":
                flow.painting = ref
            else:
                flow.painting2 = ref
        if flow.missing is not None:
            await self._prompt(flow)
            return
        self.cancel_flow(flow.chat_id, flow.user.id)
        await self._paint(flow)

    async def _flow_timeout_later(self, flow: _Flow) -> None:
        await self._sleep(self._flow_timeout)
        key = (flow.chat_id, flow.user.id)
        if self._flows.get(key) is not flow:
            return
        del self._flows[key]
        minutes = max(1, round(self._flow_timeout / 60))
        try:
            await self._app.send(
                flow.chat_id,
                lambda: self._bot.send_message(
                    flow.chat_id,
                    replies.gave_up(flow.missing or "photo", minutes),
                    reply_parameters=replying_to(flow.reply_to),
                ),
            )
        except Exception as error:
            await self._app.report(error, flow.chat_id, None)

    # -- submitting ----------------------------------------------------------------------------

    async def _paint(self, flow: _Flow) -> None:
        """Hold the member's slot (refused at once, before downloading, past a limit),
        download the images (or read the saved style's painting), queue the job and open its
        status message."""
        photo, painting, second = flow.photo, flow.painting, flow.painting2
        assert photo is not None and painting is not None
        chat_id, user, options = flow.chat_id, flow.user, flow.options
        with self._service.reserve(PLATFORM, str(chat_id), str(user.id)) as slot:
            photo_bytes, painting_bytes, second_bytes = await asyncio.gather(
                self._download(photo),
                self._painting(painting),
                self._download(second) if second is not None else _none(),
            )
            job = await self._service.submit(
                PaintRequest(
                    platform=PLATFORM,
                    chat_id=str(chat_id),
                    user_id=str(user.id),
                    user_name=member_name(user),
                    photo=photo_bytes,
                    painting=painting_bytes,
                    options=options,
                    photo_name=photo.name,
                    painting_name=painting.name,
                    painting2=second_bytes,
                    painting2_name=second.name if second is not None else "painting",
                ),
                reservation=slot,
            )
        self._board.expect(job)
        await self._board.open(job, picture_of=photo_bytes, reply_to=flow.reply_to)

    async def _download(self, ref: ImageRef) -> bytes:
        return await self._app.download(ref)

    async def _painting(self, painting: ImageRef | Style) -> bytes:
        if isinstance(painting, ImageRef):
            return await self._download(painting)
        assert self._library is not None  # a Style came from it
        return await self._library.painting(painting)

    def _style(self, chat_id: int, name: str) -> Style:
        """The chat's saved style ``name``, or a refusal naming the close ones."""
        if self._library is None:
            raise NoSuchStyle(replies.no_such_style(name, (), PLAIN))
        return self._library.get(PLATFORM, str(chat_id), name)
