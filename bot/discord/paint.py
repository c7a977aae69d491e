"""``/paint``, ``/cancel``, ``/queue`` and ``/help`` on Discord.

Flow of ``/paint``: cheap checks (the channel, the bot's permissions, type and size of both
attachments), acknowledge (an ephemeral "thinking" reply, well inside Discord's 3 seconds),
download both attachments at once (their URLs expire), submit to the service, then post the
status message (:class:`~bot.discord.status.StatusMessages`) and tell the member where it is.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Literal

import discord
from discord import app_commands

from bot import replies
from bot.discord import embeds
from bot.discord.client import DISCORD_TROUBLE, PLATFORM, AtelierDiscord, Feature
from bot.discord.embeds import MARKDOWN
from bot.discord.status import StatusMessages
from bot.errors import InvalidImage
from bot.jobs import PaintRequest
from bot.options import NOT_AN_IMAGE, choose, image_kind
from bot.pacing import Clock
from bot.service import PaintService
from engine.protocol import PaintOptions


class Painting(Feature):
    """The painting commands."""

    def __init__(
        self, client: AtelierDiscord, service: PaintService, *, wall_clock: Clock = time.time
    ) -> None:
        self._client = client
        self._service = service
        self._now = wall_clock
        client.add_feature(self)
        for command in self._commands():
            client.tree.add_command(command)

    def _commands(self) -> tuple[app_commands.Command[Any, Any, None], ...]:
        feature = self

        @app_commands.command(name="paint", description="Paint your photo in a painting's style")
        @app_commands.describe(
            photo="The photo to paint",
            painting="The painting whose style to use",
            strength="How much of the painting's style, 1 (a hint) to 10 (all in), default 5",
            quality="draft is fast, high is slow; default standard",
            keep_colors="Keep your photo's colours and take only the brushwork",
            brush="Size of the brush strokes",
        )
        @app_commands.allowed_contexts(guilds=True, dms=True, private_channels=False)
        @app_commands.allowed_installs(guilds=True, users=False)
        async def paint(
            interaction: discord.Interaction,
            photo: discord.Attachment,
            painting: discord.Attachment,
            strength: app_commands.Range[int, 1, 10] | None = None,
            quality: Literal["draft", "standard", "high"] | None = None,
            keep_colors: bool | None = None,
            brush: Literal["small", "medium", "large"] | None = None,
        ) -> None:
            options = choose(
                strength=strength, quality=quality, keep_colors=keep_colors, brush=brush
            )
            await feature.paint(interaction, photo, painting, options)

        @app_commands.command(name="cancel", description="Stop your painting")
        @app_commands.allowed_contexts(guilds=True, dms=True, private_channels=False)
        @app_commands.allowed_installs(guilds=True, users=False)
        async def cancel(interaction: discord.Interaction) -> None:
            await feature.cancel_mine(interaction)

        @app_commands.command(name="queue", description="What is painting now and who is waiting")
        @app_commands.allowed_contexts(guilds=True, dms=True, private_channels=False)
        @app_commands.allowed_installs(guilds=True, users=False)
        async def queue(interaction: discord.Interaction) -> None:
            await feature.show_queue(interaction)

        @app_commands.command(name="help", description="How to use Atelier, with an example")
        @app_commands.allowed_contexts(guilds=True, dms=True, private_channels=False)
        @app_commands.allowed_installs(guilds=True, users=False)
        async def help_(interaction: discord.Interaction) -> None:
            await interaction.response.send_message(embed=embeds.help_embed(), ephemeral=True)

        return (paint, cancel, queue, help_)

    async def paint(
        self,
        interaction: discord.Interaction[Any],
        photo: discord.Attachment,
        painting: discord.Attachment,
        options: PaintOptions,
    ) -> None:
        self._client.guard(interaction)
        limit = self._client.input_limit(interaction)
        check_attachment(photo, "photo", limit)
        check_attachment(painting, "painting", limit)
        await interaction.response.defer(ephemeral=True, thinking=True)
        photo_bytes, painting_bytes = await asyncio.gather(
            download(photo, "photo"), download(painting, "painting")
        )
        job = await self._service.submit(
            PaintRequest(
                platform=PLATFORM,
                chat_id=str(interaction.channel_id),
                user_id=str(interaction.user.id),
                user_name=interaction.user.display_name,
                photo=photo_bytes,
                painting=painting_bytes,
                options=options,
                photo_name=photo.filename,
                painting_name=painting.filename,
            )
        )
        status = self._client.feature(StatusMessages)
        await status.announce(interaction, job, replies.IN_THE_QUEUE)

    async def cancel_mine(self, interaction: discord.Interaction[Any]) -> None:
        job = await self._service.cancel_mine(PLATFORM, str(interaction.user.id))
        await self._client.reply(interaction, replies.cancelling(job, str(interaction.user.id)))

    async def show_queue(self, interaction: discord.Interaction[Any]) -> None:
        embed = embeds.queue_embed(
            self._service.overview(),
            str(interaction.user.id),
            str(interaction.channel_id),
            self._now(),
        )
        await interaction.response.send_message(embed=embed, ephemeral=True)


def check_attachment(attachment: discord.Attachment, role: str, limit: int) -> None:
    """Refuse what is clearly not a usable image before downloading it."""
    name = attachment.filename
    kind = image_kind(attachment.content_type, name)
    if kind is NOT_AN_IMAGE:
        raise InvalidImage(replies.not_an_image(role, name, MARKDOWN))
    if kind is not None:
        raise InvalidImage(replies.unreadable_format(role, name, kind, MARKDOWN))
    if attachment.size > limit:
        raise InvalidImage(
            replies.too_big(role, name, attachment.size, limit, MARKDOWN, tip=replies.SMALLER)
        )


async def download(attachment: discord.Attachment, role: str) -> bytes:
    try:
        return await attachment.read()
    except DISCORD_TROUBLE:
        text = replies.not_downloaded(role, attachment.filename, "Discord", MARKDOWN)
        raise InvalidImage(text) from None
