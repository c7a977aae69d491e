"""A chat's style library on Telegram: ``/style add``, ``/style list``, ``/style remove``.

- ``/style add <name>`` as the caption of a painting (photo or image file), or in reply to a
  message holding one: the name, the room left and who asks (a group's administrators; in a
  private chat, the member) are checked before the painting is downloaded, then it is checked
  like any upload and saved (:class:`bot.styles.StyleLibrary`).
- ``/style list [page]``: one contact sheet of the chat's styles (thumbnails with their names
  under them, drawn in the sandbox), :data:`bot.styles.PAGE_SIZE` a page.
- ``/style remove <name>``: organisers; paintings already queued with it still paint.

Members paint with a style with ``/paint style=<name>`` (:mod:`bot.telegram.flows`).
"""

from __future__ import annotations

from typing import Final

from aiogram import Router
from aiogram.filters import Command, CommandObject
from aiogram.types import BufferedInputFile, Message

from bot import replies
from bot.challenges import NotOrganiser
from bot.errors import InvalidImage
from bot.replies import PLAIN
from bot.style_rules import BadStyleName
from bot.styles import StyleLibrary
from bot.telegram.app import PLATFORM, Feature, TelegramApp, image_in, member_name, replying_to

ADD_USAGE = "/style add starry-night"
WHERE = "chat"
PAGE_DIGITS: Final = 6  # a page number of more digits is past the end of any library


class TelegramStyles(Feature):
    """The /style router."""

    def __init__(self, app: TelegramApp, library: StyleLibrary) -> None:
        self.app = app
        self.library = library
        self.router = Router(name="styles")
        self.router.message.register(self._on_command, Command("style"))
        app.add_feature(self)

    async def _on_command(self, message: Message, command: CommandObject) -> None:
        action, _, rest = (command.args or "").strip().partition(" ")
        action = action.lower()
        if action == "add":
            await self._add(message, rest.strip())
        elif action == "remove":
            await self._remove(message, rest.strip())
        elif action == "list":
            await self._list(message, rest.strip())
        else:
            await self.app.reply(message, replies.STYLE_USAGE)

    async def is_organiser(self, message: Message) -> bool:
        """A group's administrator; in a private chat, the member (it is their library)."""
        assert message.from_user is not None
        if message.chat.type not in ("group", "supergroup"):
            return True
        return await self.app.is_admin(message.chat.id, message.from_user.id)

    async def _require_organiser(self, message: Message, action: str) -> None:
        if not await self.is_organiser(message):
            raise NotOrganiser(
                replies.organisers_only(action, "the group's administrators", "styles")
            )

    async def _add(self, message: Message, name: str) -> None:
        if not name:
            raise BadStyleName(replies.no_style_name(f"{ADD_USAGE} on the painting"))
        await self._require_organiser(message, "add")
        chat = str(message.chat.id)
        # Everything that can be said before the download is said before it.
        name = self.library.check_new(PLATFORM, chat, name)
        limit = self.app.image_limit
        ref = image_in(message, role="painting", limit=limit) or image_in(
            message.reply_to_message, role="painting", limit=limit
        )
        if ref is None:
            raise InvalidImage(replies.need_image("painting", ADD_USAGE))
        data = await self.app.download(ref)
        assert message.from_user is not None
        style = await self.library.add(
            platform=PLATFORM,
            community_id=chat,
            name=name,
            painting=data,
            painting_name=ref.name,
            added_by=str(message.from_user.id),
            added_by_name=member_name(message.from_user),
        )
        how = f"/paint style={style.name} as the caption of your photo"
        await self.app.reply(message, replies.style_added(style.name, WHERE, how, PLAIN))

    async def _remove(self, message: Message, name: str) -> None:
        if not name:
            raise BadStyleName(replies.no_style_name("/style remove starry-night"))
        await self._require_organiser(message, "remove")
        style = await self.library.remove(PLATFORM, str(message.chat.id), name)
        await self.app.reply(message, replies.style_removed(style.name, PLAIN))

    async def _list(self, message: Message, page_text: str) -> None:
        page = page_asked(page_text)
        chat = str(message.chat.id)
        styles, pages = self.library.page(PLATFORM, chat, page)
        if not styles:
            text = replies.no_styles(WHERE) if page == 0 else replies.no_more_styles(pages)
            await self.app.reply(message, text)
            return
        sheet = await self.library.sheet(styles)
        total = self.library.count(PLATFORM, chat)
        caption = " ".join(
            part
            for part in (
                replies.styles_page(total, page, pages, WHERE),
                replies.next_page("/style list", page, pages),
            )
            if part
        )
        chat_id = message.chat.id
        await self.app.send(
            chat_id,
            lambda: self.app.bot.send_photo(
                chat_id,
                BufferedInputFile(sheet, "styles.jpg"),
                caption=caption,
                reply_parameters=replying_to(message.message_id),
            ),
        )


def page_asked(text: str) -> int:
    """The page (from 0) that ``/style list <text>`` asks for: the first when ``text`` is no
    page number; a number of more digits than any library has pages, as one past the end
    (``int()`` reads ``²`` as no digit and stops at 4,300 digits)."""
    if not (text.isascii() and text.isdigit()) or int(text[:PAGE_DIGITS]) == 0:
        return 0
    return int(text) - 1 if len(text) <= PAGE_DIGITS else 10**PAGE_DIGITS
