"""``/gallery [page]`` on Telegram: the chat's recent paintings as one contact sheet.

The chat's finished paintings still kept (the retention period), newest first,
:data:`PAGE_SIZE` a page, each with its painter's name under it; the sheet is drawn in the
sandbox (this process decodes no picture). ``/gallery 2`` is the next page.
"""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import Command, CommandObject
from aiogram.types import BufferedInputFile, Message

from bot import replies
from bot.challenges import Challenges
from bot.errors import UserFacingError
from bot.jobs import Job
from bot.sandbox import Sandbox
from bot.service import PaintService
from bot.telegram.app import PLATFORM, Feature, TelegramApp, replying_to

PAGE_SIZE = 9
COLUMNS = 3
TILE = 256
WHOSE = "this chat's"


class TelegramGallery(Feature):
    """The /gallery router."""

    def __init__(
        self,
        app: TelegramApp,
        service: PaintService,
        challenges: Challenges,
        sandbox: Sandbox,
        *,
        page_size: int = PAGE_SIZE,
    ) -> None:
        self.app = app
        self.service = service
        self.core = challenges
        self.sandbox = sandbox
        self.page_size = page_size
        self.router = Router(name="gallery")
        self.router.message.register(self._on_gallery, Command("gallery"))
        app.add_feature(self)

    async def _on_gallery(self, message: Message, command: CommandObject) -> None:
        typed = (command.args or "").strip()
        page = int(typed) - 1 if typed.isdigit() and int(typed) > 0 else 0
        jobs, total = self.core.gallery(
            PLATFORM,
            chat_ids=[str(message.chat.id)],
            user_id=None,
            offset=page * self.page_size,
            limit=self.page_size,
        )
        if not jobs:
            await self.app.reply(message, replies.gallery_empty(WHOSE, page))
            return
        pages = max(1, -(-total // self.page_size))
        tiles = [(await self._picture(job), job.user_name) for job in jobs]
        sheet = await self.sandbox.sheet(tiles, columns=COLUMNS, tile=TILE)
        caption = " ".join(
            part
            for part in (
                replies.gallery_page(WHOSE, page, pages),
                replies.next_page("/gallery", page, pages),
            )
            if part
        )
        chat_id = message.chat.id
        await self.app.send(
            chat_id,
            lambda: self.app.bot.send_photo(
                chat_id,
                BufferedInputFile(sheet, "gallery.jpg"),
                caption=caption,
                reply_parameters=replying_to(message.message_id),
            ),
        )

    async def _picture(self, job: Job) -> bytes:
        """The painting's bytes; ``b""`` (a plain tile) if it was deleted meanwhile."""
        try:
            return await self.service.read_result(job)
        except UserFacingError:
            return b""
