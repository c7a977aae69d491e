"""The server's style library on Discord: ``/style add``, ``/style remove``, ``/style list``.

- ``/style add name painting`` (organisers: Manage Server or the organiser role): the name, the
  room left and who asks are checked before the painting is downloaded; then the painting is
  checked like any upload and saved (:class:`bot.styles.StyleLibrary`).
- ``/style remove name`` (organisers; the name autocompletes): paintings already queued with
  the style still paint.
- ``/style list [page]``: one contact sheet of the server's styles (thumbnails with their names
  under them, drawn in the sandbox), :data:`bot.styles.PAGE_SIZE` a page, with Previous/Next
  buttons that carry the page only (``atelier:styles:<prev|next>:<page>``).

``/paint ... style:<name>`` and the "Paint with Atelier" message command paint with a saved
style; both offer the server's names (:func:`bot.discord.paint.style_choices`).
"""

from __future__ import annotations

import io
from typing import Any

import discord
from discord import app_commands

from bot import replies
from bot.discord.buttons import ButtonPress
from bot.discord.client import PLATFORM, AtelierDiscord, Feature
from bot.discord.embeds import MARKDOWN
from bot.discord.paint import check_attachment, download, style_choices
from bot.style_rules import NoSuchStyle
from bot.styles import StyleLibrary

SHEET_NAME = "styles.jpg"


class DiscordStyles(Feature):
    """The /style commands and the list's page buttons."""

    def __init__(self, client: AtelierDiscord, library: StyleLibrary) -> None:
        self.client = client
        self.library = library
        client.add_feature(self)
        client.add_dynamic_items(StylesPageButton)
        self._add_commands()

    def _add_commands(self) -> None:
        ui = self
        group = app_commands.Group(
            name="style",
            description="The server's saved styles: paint with them by name",
            allowed_contexts=app_commands.AppCommandContext(guild=True),
            allowed_installs=app_commands.AppInstallationType(guild=True),
        )

        @group.command(name="add", description="Save a painting as a style (organisers)")
        @app_commands.describe(
            name="Its name: 2 to 32 letters, digits, - or _ (like starry-night)",
            painting="The painting whose style it is",
        )
        async def add(
            interaction: discord.Interaction, name: str, painting: discord.Attachment
        ) -> None:
            await ui.add(interaction, name, painting)

        @group.command(name="remove", description="Remove a saved style (organisers)")
        @app_commands.describe(name="The style's name")
        async def remove(interaction: discord.Interaction, name: str) -> None:
            await ui.remove(interaction, name)

        @group.command(name="list", description="The server's saved styles, as one picture")
        @app_commands.describe(page="Which page, from 1")
        async def list_(
            interaction: discord.Interaction, page: app_commands.Range[int, 1, 1000] = 1
        ) -> None:
            await ui.show(interaction, page - 1, edit=False)

        @remove.autocomplete("name")
        async def names(
            interaction: discord.Interaction, current: str
        ) -> list[app_commands.Choice[str]]:
            return style_choices(ui.library, interaction, current)

        self.client.tree.add_command(group)

    # -- organisers ----------------------------------------------------------------------------

    async def add(
        self, interaction: discord.Interaction[Any], name: str, painting: discord.Attachment
    ) -> None:
        guild = _guild_id(interaction)
        self.client.require_organiser(interaction, "add", "styles")
        # Everything that can be said before the download is said before it.
        name = self.library.check_new(PLATFORM, guild, name, MARKDOWN)
        check_attachment(painting, "painting", self.client.input_limit(interaction))
        await interaction.response.defer(ephemeral=True, thinking=True)
        data = await download(painting, "painting")
        style = await self.library.add(
            platform=PLATFORM,
            community_id=guild,
            name=name,
            painting=data,
            painting_name=painting.filename,
            added_by=str(interaction.user.id),
            added_by_name=interaction.user.display_name,
            markup=MARKDOWN,
        )
        how = f"`/paint style:{style.name}`"
        await self.client.reply(
            interaction, replies.style_added(style.name, "server", how, MARKDOWN)
        )

    async def remove(self, interaction: discord.Interaction[Any], name: str) -> None:
        guild = _guild_id(interaction)
        self.client.require_organiser(interaction, "remove", "styles")
        style = await self.library.remove(PLATFORM, guild, name, MARKDOWN)
        await self.client.reply(interaction, replies.style_removed(style.name, MARKDOWN))

    # -- members -------------------------------------------------------------------------------

    async def show(self, interaction: discord.Interaction[Any], page: int, *, edit: bool) -> None:
        """One page of the library as a contact sheet (``edit``: a page button was pressed)."""
        guild = _guild_id(interaction)
        styles, pages = self.library.page(PLATFORM, guild, page)
        if not styles:
            if page == 0:
                await self.client.reply(interaction, replies.no_styles("server"))
            else:
                await self.client.reply(interaction, replies.no_more_styles(pages))
            return
        # Acknowledge first: drawing the sheet takes a child process.
        if edit:
            await interaction.response.defer()
        else:
            await interaction.response.defer(ephemeral=True, thinking=True)
        sheet = await self.library.sheet(styles)
        total = self.library.count(PLATFORM, guild)
        await interaction.edit_original_response(
            content=replies.styles_page(total, page, pages, "server"),
            attachments=[discord.File(io.BytesIO(sheet), filename=SHEET_NAME)],
            view=styles_view(page, pages),
        )


def _guild_id(interaction: discord.Interaction[Any]) -> str:
    if interaction.guild_id is None:
        raise NoSuchStyle(replies.STYLES_IN_SERVERS)
    return str(interaction.guild_id)


class StylesPageButton(
    ButtonPress,
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=r"atelier:styles:(?P<way>prev|next):(?P<page>\d{1,4})",
):
    def __init__(self, way: str, page: int, *, disabled: bool = False) -> None:
        super().__init__(
            discord.ui.Button(
                label="Previous" if way == "prev" else "Next",
                style=discord.ButtonStyle.secondary,
                custom_id=f"atelier:styles:{way}:{page}",
                disabled=disabled,
            )
        )
        self.page = page

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: Any
    ) -> StylesPageButton:
        return cls(match["way"], int(match["page"]))

    async def pressed(self, interaction: discord.Interaction[Any], client: AtelierDiscord) -> None:
        await client.feature(DiscordStyles).show(interaction, self.page, edit=True)


def styles_view(page: int, pages: int) -> discord.ui.View | None:
    """Previous/Next under a page of styles (none when there is one page)."""
    if pages <= 1:
        return None
    view = discord.ui.View(timeout=None)
    view.add_item(StylesPageButton("prev", max(0, page - 1), disabled=page == 0))
    view.add_item(StylesPageButton("next", page + 1, disabled=page + 1 >= pages))
    return view
