"""``/paint``, ``/cancel``, ``/queue`` and ``/help`` on Discord.

Flow of ``/paint``: cheap checks (the channel, the bot's permissions, type and size of the
attachments; exactly one of a painting or a saved ``style``, which must exist), the member's
slot (the limits: refused here, before anything is fetched), acknowledge (an ephemeral
"thinking" reply, well inside Discord's 3 seconds), download the attachments at once (their
URLs expire) or read the saved style's painting, submit to the service, then post the status
message (:class:`~bot.discord.status.StatusMessages`) and tell the member where it is.

Blends: ``painting2:`` is a second painting whose style is mixed in, ``blend:`` percent of it
(default 50; ``blend:`` without ``painting2:`` is refused). With ``style:``, ``painting2:``
blends the saved style with that painting (a painting and a style are still refused, with how
to blend them). The second painting is checked, fetched and stored like the first. The
"Paint with Atelier" message command (:mod:`bot.discord.message_menu`) goes through the same
:meth:`Painting.paint`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, Literal

import discord
from discord import app_commands

from bot import replies
from bot.discord import embeds
from bot.discord.client import DISCORD_TROUBLE, PLATFORM, AtelierDiscord, Feature
from bot.discord.embeds import MARKDOWN
from bot.discord.status import StatusMessages
from bot.errors import InvalidImage, InvalidOptions
from bot.jobs import PaintRequest
from bot.options import NOT_AN_IMAGE, choose, image_kind
from bot.pacing import Clock
from bot.service import PaintService
from bot.style_rules import NoSuchStyle
from bot.styles import StyleLibrary
from engine.protocol import PaintOptions


class Painting(Feature):
    """The painting commands."""

    def __init__(
        self,
        client: AtelierDiscord,
        service: PaintService,
        *,
        wall_clock: Clock = time.time,
        library: StyleLibrary | None = None,
    ) -> None:
        """``library``: the saved styles ``style:`` names (none: no saved styles)."""
        self._client = client
        self._service = service
        self._now = wall_clock
        self.library = library
        client.add_feature(self)
        for command in self._commands():
            client.tree.add_command(command)

    def _commands(self) -> tuple[app_commands.Command[Any, Any, None], ...]:
        feature = self

        @app_commands.command(name="paint", description="Paint your photo in a painting's style")
        @app_commands.describe(
            photo="The photo to paint",
            painting="The painting whose style to use (or give a saved style)",
            style="A style saved in this server, instead of a painting (/style list)",
            strength="How much of the painting's style, 1 (a hint) to 10 (all in), default 5",
            quality="draft is fast, high is slow; default standard",
            keep_colors="Keep your photo's colours and take only the brushwork",
            brush="Size of the brush strokes",
            painting2="A second painting to blend in with the painting (or the saved style)",
            blend="How much of the second painting's style, 0-100 %, default 50",
        )
        @app_commands.allowed_contexts(guilds=True, dms=True, private_channels=False)
        @app_commands.allowed_installs(guilds=True, users=False)
        async def paint(
            interaction: discord.Interaction,
            photo: discord.Attachment,
            painting: discord.Attachment | None = None,
            style: str | None = None,
            strength: app_commands.Range[int, 1, 10] | None = None,
            quality: Literal["draft", "standard", "high"] | None = None,
            keep_colors: bool | None = None,
            brush: Literal["small", "medium", "large"] | None = None,
            painting2: discord.Attachment | None = None,
            blend: app_commands.Range[int, 0, 100] | None = None,
        ) -> None:
            if blend is not None and painting2 is None:
                raise InvalidOptions(replies.blend_needs_second(replies.BLEND_DISCORD))
            options = choose(
                strength=strength,
                quality=quality,
                keep_colors=keep_colors,
                brush=brush,
                blend=blend,
            )
            await feature.paint(
                interaction, photo, options, painting=painting, style=style, painting2=painting2
            )

        @paint.autocomplete("style")
        async def styles(
            interaction: discord.Interaction, current: str
        ) -> list[app_commands.Choice[str]]:
            return style_choices(feature.library, interaction, current)

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
        options: PaintOptions,
        *,
        painting: discord.Attachment | None = None,
        style: str | None = None,
        painting2: discord.Attachment | None = None,
    ) -> None:
        """Paint ``photo`` with ``painting`` or the saved ``style`` (exactly one of them),
        blended with ``painting2`` when given (``options.blend`` percent of it)."""
        self._client.guard(interaction)
        limit = self._client.input_limit(interaction)
        check_attachment(photo, "photo", limit)
        fetch_painting, painting_name = self._painting_source(interaction, painting, style, limit)
        fetch_second: Callable[[], Awaitable[bytes | None]] = nothing
        if painting2 is not None:
            check_attachment(painting2, SECOND_PAINTING, limit)
            fetch_second = partial(download, painting2, SECOND_PAINTING)
        chat_id, user_id = str(interaction.channel_id), str(interaction.user.id)
        # The member's slot before anything is fetched: past a limit, refused here.
        with self._service.reserve(PLATFORM, chat_id, user_id) as slot:
            if not interaction.response.is_done():
                await interaction.response.defer(ephemeral=True, thinking=True)
            photo_bytes, painting_bytes, second_bytes = await asyncio.gather(
                download(photo, "photo"), fetch_painting(), fetch_second()
            )
            job = await self._service.submit(
                PaintRequest(
                    platform=PLATFORM,
                    chat_id=chat_id,
                    user_id=user_id,
                    user_name=interaction.user.display_name,
                    photo=photo_bytes,
                    painting=painting_bytes,
                    options=options,
                    photo_name=photo.filename,
                    painting_name=painting_name,
                    painting2=second_bytes,
                    painting2_name=painting2.filename if painting2 is not None else "painting",
                ),
                reservation=slot,
            )
        status = self._client.feature(StatusMessages)
        await status.announce(interaction, job, replies.IN_THE_QUEUE)

    def _painting_source(
        self,
        interaction: discord.Interaction[Any],
        painting: discord.Attachment | None,
        style: str | None,
        limit: int,
    ) -> tuple[Callable[[], Awaitable[bytes]], str]:
        """How to get the painting (exactly one of an attachment or a saved style, checked
        now), and its name as members see it."""
        if painting is not None and style:
            raise InvalidOptions(replies.painting_and_style(replies.BLEND_DISCORD))
        if painting is not None:
            check_attachment(painting, "painting", limit)
            return partial(download, painting, "painting"), painting.filename
        if not style:
            raise InvalidOptions(replies.painting_or_style(STYLE_HOW))
        if self.library is None or interaction.guild_id is None:
            raise NoSuchStyle(replies.STYLES_IN_SERVERS)
        saved = self.library.get(PLATFORM, str(interaction.guild_id), style, MARKDOWN)
        return partial(self.library.painting, saved, MARKDOWN), saved.name

    async def cancel_mine(self, interaction: discord.Interaction[Any]) -> None:
        # This channel's painting only (a member may have one in another channel or a DM).
        job = await self._service.cancel_mine(
            PLATFORM, str(interaction.user.id), chat_id=str(interaction.channel_id)
        )
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


STYLE_HOW = "style: and a name from /style list"
SECOND_PAINTING = "second painting"


async def nothing() -> None:
    """No second painting to fetch."""
    return None


def style_choices(
    library: StyleLibrary | None, interaction: discord.Interaction[Any], typed: str
) -> list[app_commands.Choice[str]]:
    """The server's saved style names for what the member has typed so far."""
    if library is None or interaction.guild_id is None:
        return []
    names = library.names(PLATFORM, str(interaction.guild_id), typed)
    return [app_commands.Choice(name=name, value=name) for name in names]


async def download(attachment: discord.Attachment, role: str) -> bytes:
    try:
        return await attachment.read()
    except DISCORD_TROUBLE:
        text = replies.not_downloaded(role, attachment.filename, "Discord", MARKDOWN)
        raise InvalidImage(text) from None
