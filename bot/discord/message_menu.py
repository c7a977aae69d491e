"""The "Paint with Atelier" message command: paint the image of any message.

A member opens a message's Apps menu and picks **Paint with Atelier**: the message's first image
is the photo, and a form asks for the style, either one of the server's saved styles (a menu of
the first :data:`bot.styles.CHOICES`, alphabetical) or a painting to upload. What can be
refused before the form is refused before it (the channel, the image's type and size, the
member's limits), so nobody fills in a form for nothing. On submit: exactly one of a style and
a painting, then the same path as ``/paint`` (:meth:`bot.discord.paint.Painting.paint`): the
slot, the downloads, the queue, the status message.
"""

from __future__ import annotations

from typing import Any

import discord
from discord import app_commands

from bot import replies
from bot.discord.client import PLATFORM, AtelierDiscord, Feature
from bot.discord.paint import Painting, check_attachment
from bot.errors import InvalidImage, InvalidOptions
from bot.options import choose, image_kind


class MessageMenu(Feature):
    """The message command and its form."""

    def __init__(self, client: AtelierDiscord) -> None:
        self._client = client
        client.add_feature(self)
        feature = self

        @app_commands.context_menu(name=replies.PAINT_WITH)
        @app_commands.allowed_contexts(guilds=True, dms=True, private_channels=False)
        @app_commands.allowed_installs(guilds=True, users=False)
        async def paint_with(interaction: discord.Interaction, message: discord.Message) -> None:
            await feature.open(interaction, message)

        client.tree.add_command(paint_with)

    async def open(self, interaction: discord.Interaction[Any], message: discord.Message) -> None:
        """Check what can be checked now, then ask for the style in a form."""
        client = self._client
        client.guard(interaction)
        photo = image_of(message)
        check_attachment(photo, "photo", client.input_limit(interaction))
        # Past a limit the member hears it now, not after filling in the form.
        client.service.reserve(
            PLATFORM, str(interaction.channel_id), str(interaction.user.id)
        ).release()
        library = client.feature(Painting).library
        names = (
            library.names(PLATFORM, str(interaction.guild_id))
            if library is not None and interaction.guild_id is not None
            else []
        )
        await interaction.response.send_modal(StyleForm(photo, names))


def image_of(message: discord.Message) -> discord.Attachment:
    """The message's first attachment that may be an image we accept."""
    for attachment in message.attachments:
        if image_kind(attachment.content_type, attachment.filename) is None:
            return attachment
    raise InvalidImage(replies.NO_IMAGE_IN_MESSAGE)


class StyleForm(discord.ui.Modal):
    """Which style: a saved one (when the server has any) or an uploaded painting."""

    def __init__(self, photo: discord.Attachment, names: list[str]) -> None:
        super().__init__(title=replies.PAINT_WITH)
        self.photo = photo
        self.style: discord.ui.Select[Any] | None = None
        if names:
            self.style = discord.ui.Select(
                options=[discord.SelectOption(label=name, value=name) for name in names],
                required=False,
                min_values=0,
                max_values=1,
            )
            self.add_item(
                discord.ui.Label(
                    text=replies.FORM_STYLE,
                    description=replies.FORM_STYLE_HINT,
                    component=self.style,
                )
            )
        # Required when there is no saved style to pick instead.
        self.painting: discord.ui.FileUpload[Any] = discord.ui.FileUpload(
            required=not names, min_values=0, max_values=1
        )
        self.add_item(
            discord.ui.Label(
                text=replies.FORM_PAINTING,
                description=replies.FORM_PAINTING_HINT,
                component=self.painting,
            )
        )

    async def on_submit(self, interaction: discord.Interaction[Any], /) -> None:
        client = interaction.client
        assert isinstance(client, AtelierDiscord)
        style = self.style.values[0] if self.style is not None and self.style.values else None
        painting = self.painting.values[0] if self.painting.values else None
        if painting is None and style is None:
            raise InvalidOptions(replies.painting_or_style(replies.FORM_HOW))
        if painting is not None and style is not None:  # the form has no second painting
            raise InvalidOptions(replies.PAINTING_AND_STYLE)
        await client.feature(Painting).paint(
            interaction, self.photo, choose(), painting=painting, style=style
        )

    # Modal's own on_error takes no item (its stub says it does, as a View's).
    async def on_error(  # type: ignore[override]
        self, interaction: discord.Interaction[Any], error: Exception, /
    ) -> None:
        client = interaction.client
        assert isinstance(client, AtelierDiscord)
        await client.report_error(interaction, error)
