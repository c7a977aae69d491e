"""``/gallery [member]`` on Discord: the server's recent paintings, a few a page.

The jobs table has no server id, so "the server" is every channel and active thread of the
guild that the member can see, plus the (archived) threads of challenges in those channels; a
painting made in a private channel never shows to a member who cannot read that channel.
Previous/Next buttons carry ids only (``atelier:gallery:<prev|next>:<member or 0>:<page>``).
"""

from __future__ import annotations

import io
from typing import Any, Final

import discord
from discord import app_commands

from bot import replies
from bot.challenges import Challenges
from bot.discord import embeds
from bot.discord.buttons import ButtonPress
from bot.discord.client import PLATFORM, AtelierDiscord, Feature
from bot.discord.embeds import MARKDOWN
from bot.jobs import Job

PAGE_SIZE: Final = 4


class Gallery(Feature):
    """The /gallery command and its page buttons."""

    def __init__(
        self, client: AtelierDiscord, challenges: Challenges, *, page_size: int = PAGE_SIZE
    ) -> None:
        self._client = client
        self._core = challenges
        self.page_size = page_size
        client.add_feature(self)
        client.add_dynamic_items(GalleryButton)
        feature = self

        @app_commands.command(name="gallery", description="Recent paintings of this server")
        @app_commands.describe(member="Only this member's paintings")
        @app_commands.allowed_contexts(guilds=True, dms=False, private_channels=False)
        @app_commands.allowed_installs(guilds=True, users=False)
        async def gallery(
            interaction: discord.Interaction, member: discord.Member | None = None
        ) -> None:
            await feature.show(interaction, member.id if member else None, 0, edit=False)

        client.tree.add_command(gallery)

    async def show(
        self, interaction: discord.Interaction[Any], member_id: int | None, page: int, *, edit: bool
    ) -> None:
        # Acknowledge first: reading and uploading four paintings can take longer than the
        # 3 seconds Discord allows for the first answer.
        if edit:
            await interaction.response.defer()
        else:
            await interaction.response.defer(ephemeral=True, thinking=True)
        jobs, total = self._core.gallery(
            PLATFORM,
            chat_ids=self._visible_chats(interaction),
            user_id=str(member_id) if member_id else None,
            offset=page * self.page_size,
            limit=self.page_size,
        )
        pages = max(1, -(-total // self.page_size))
        whose = f"<@{member_id}>'s" if member_id else "this server's"
        if not jobs:
            text = replies.gallery_empty(whose, page)
            await interaction.edit_original_response(
                content=text, embeds=[], attachments=[], view=None
            )
            return
        # Every painting of the page must fit in one message under the upload limit.
        budget = interaction.filesize_limit // len(jobs)
        shown, files = [], []
        for job in jobs:
            png = await self._client.service.read_result(job)
            data, filename = await embeds.encode_for_upload(
                png, budget, f"gallery-{job.id}", self._client.sandbox
            )
            filename = filename.removeprefix("atelier-")
            embed = discord.Embed(colour=embeds.ACCENT, description=_line(job))
            embed.set_image(url=f"attachment://{filename}")
            shown.append(embed)
            files.append(discord.File(io.BytesIO(data), filename=filename))
        await interaction.edit_original_response(
            content=replies.gallery_page(whose, page, pages),
            embeds=shown,
            attachments=files,
            view=gallery_view(member_id or 0, page, pages),
        )

    def _visible_chats(self, interaction: discord.Interaction[Any]) -> set[str]:
        """The server's channels and threads that the member can see."""
        guild = interaction.guild
        assert guild is not None
        user = interaction.user
        member = user if isinstance(user, discord.Member) else guild.get_member(user.id)
        if member is None:
            return set()
        chats = {str(c.id) for c in guild.channels if c.permissions_for(member).view_channel}
        chats |= {str(t.id) for t in guild.threads if _sees_thread(t, member)}
        # Archived challenge threads are not in the cache; they are as visible as their channel.
        threads = self._core.threads_of(PLATFORM, str(guild.id))
        for thread, channel in threads.items():
            if channel in chats and guild.get_thread(int(thread)) is None:
                chats.add(thread)
        return chats


def _sees_thread(thread: discord.Thread, member: discord.Member) -> bool:
    try:
        permissions = thread.permissions_for(member)
    except discord.ClientException:  # the parent channel is not known
        return False
    if not permissions.view_channel:
        return False
    if thread.type is discord.ChannelType.private_thread:
        return thread.owner_id == member.id or permissions.manage_threads
    return True


def _line(job: Job) -> str:
    when_done = f" · <t:{int(job.finished_at)}:R>" if job.finished_at else ""
    return f"<@{job.user_id}>: {replies.inputs(job, MARKDOWN)}{when_done}"


class GalleryButton(
    ButtonPress,
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=r"atelier:gallery:(?P<way>prev|next):(?P<member>\d{1,20}):(?P<page>\d{1,6})",
):
    def __init__(self, way: str, member_id: int, page: int, *, disabled: bool = False) -> None:
        super().__init__(
            discord.ui.Button(
                label="Previous" if way == "prev" else "Next",
                style=discord.ButtonStyle.secondary,
                custom_id=f"atelier:gallery:{way}:{member_id}:{page}",
                disabled=disabled,
            )
        )
        self.member_id = member_id
        self.page = page

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: Any
    ) -> GalleryButton:
        return cls(match["way"], int(match["member"]), int(match["page"]))

    async def pressed(self, interaction: discord.Interaction[Any], client: AtelierDiscord) -> None:
        gallery = client.feature(Gallery)
        await gallery.show(interaction, self.member_id or None, max(0, self.page), edit=True)


def gallery_view(member_id: int, page: int, pages: int) -> discord.ui.View:
    """Previous/Next; each button's id names the page it opens."""
    view = discord.ui.View(timeout=None)
    view.add_item(GalleryButton("prev", member_id, max(0, page - 1), disabled=page == 0))
    view.add_item(GalleryButton("next", member_id, page + 1, disabled=page + 1 >= pages))
    return view
