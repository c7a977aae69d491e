"""Style challenges on Discord: the /challenge group, /gallery, /leaderboard and their buttons.

    client = AtelierDiscord(settings.discord, service)
    DiscordChallenges(client, challenges)      # before client.start(): adds commands and hooks

- ``/challenge start painting title duration`` (organisers: Manage Server or the configured
  organiser role) posts the announcement in the channel, opens a thread on it with the painting
  pinned, and stores the challenge. ``/challenge enter photo [strength] [keep_colors]`` (in the
  channel or the thread) queues the entry; its status message and, once painted, the entry
  itself (with **Vote** and **Withdraw** buttons) go to the thread. ``/challenge standings``
  shows organisers the counts while it runs and everyone the entries; ``/challenge end`` and
  ``/challenge cancel`` are for organisers.
- The adapter hands every finished challenge painting to :meth:`DiscordChallenges.deliver`
  (``AtelierDiscord.challenge_delivery``); one that finished after its challenge closed is
  delivered as an ordinary painting.
- When a challenge closes, :meth:`DiscordChallenges.announce` posts the top three with their
  images and vote counts in the channel, says so in the thread and locks it.
- ``/gallery [member]``: the server's recent paintings, four a page, Previous/Next. The jobs
  table has no server id, so "the server" is every channel and active thread of the guild that
  the member can see, plus the (archived) threads of challenges in those channels; a painting
  made in a private channel never shows to a member who cannot read that channel.
- ``/leaderboard``: wins (first places) and podiums (top three) per member in this server.

Buttons carry ids only (``atelier:vote:<entry>``, ``atelier:withdraw:<entry>``,
``atelier:gallery:<prev|next>:<member or 0>:<page>``); the state lives in SQLite, so they work
after a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import weakref
from typing import Any, Final

import discord
from discord import app_commands

from bot import discord_views as views
from bot import replies
from bot.challenges import (
    Challenge,
    ChallengeExists,
    Challenges,
    ChallengeState,
    Entry,
    NoChallenge,
    NotOrganiser,
    Outcome,
    parse_duration,
)
from bot.discord_app import (
    DISCORD_TROUBLE,
    PLATFORM,
    AtelierDiscord,
    check_attachment,
    download,
)
from bot.discord_views import MARKDOWN
from bot.errors import InvalidImage
from bot.jobs import Finished, Job
from bot.options import choose
from engine import images

log = logging.getLogger(__name__)

PAGE_SIZE: Final = 4

_INSTANCES: weakref.WeakKeyDictionary[discord.Client, DiscordChallenges] = (
    weakref.WeakKeyDictionary()
)


def _ui(interaction: discord.Interaction[Any]) -> DiscordChallenges:
    return _INSTANCES[interaction.client]


class DiscordChallenges:
    """Adds the challenge commands and buttons to an :class:`AtelierDiscord` client."""

    def __init__(
        self, client: AtelierDiscord, challenges: Challenges, *, page_size: int = PAGE_SIZE
    ) -> None:
        self.client = client
        self.core = challenges
        self.page_size = page_size
        _INSTANCES[client] = self
        self._ready = asyncio.Event()  # announcements wait for the gateway (catch-up at start)

        @client.event
        async def on_ready() -> None:
            self._ready.set()

        client.challenge_delivery = self.deliver
        client.add_dynamic_items(VoteButton, WithdrawButton, GalleryButton)
        challenges.on_closed(PLATFORM, self.announce)
        self._add_commands()

    # -- commands ------------------------------------------------------------------------------

    def _add_commands(self) -> None:
        ui = self
        group = app_commands.Group(
            name="challenge",
            description="Style challenges: one painting, everyone's photos, members vote",
            allowed_contexts=app_commands.AppCommandContext(guild=True),
            allowed_installs=app_commands.AppInstallationType(guild=True),
        )

        @group.command(name="start", description="Start a style challenge (organisers)")
        @app_commands.describe(
            painting="The painting everyone paints their photos in the style of",
            title="The challenge's name",
            duration="How long it runs: 30m, 12h, 3d, 1d12h, 1w (10 minutes to 30 days)",
        )
        async def start(
            interaction: discord.Interaction,
            painting: discord.Attachment,
            title: app_commands.Range[str, 1, 100],
            duration: str,
        ) -> None:
            await ui.start(interaction, painting, title, duration)

        @group.command(name="enter", description="Enter this channel's challenge with a photo")
        @app_commands.describe(
            photo="Your photo, to be painted in the challenge painting's style",
            strength="How much of the painting's style, 1 to 10, default 5",
            keep_colors="Keep your photo's colours and take only the brushwork",
        )
        async def enter(
            interaction: discord.Interaction,
            photo: discord.Attachment,
            strength: app_commands.Range[int, 1, 10] | None = None,
            keep_colors: bool | None = None,
        ) -> None:
            await ui.enter(interaction, photo, strength, keep_colors)

        @group.command(name="standings", description="The entries (and, for organisers, votes)")
        async def standings(interaction: discord.Interaction) -> None:
            await ui.standings(interaction)

        @group.command(name="end", description="End this channel's challenge now (organisers)")
        async def end(interaction: discord.Interaction) -> None:
            await ui.end(interaction, cancel=False)

        @group.command(name="cancel", description="Cancel this channel's challenge (organisers)")
        async def cancel(interaction: discord.Interaction) -> None:
            await ui.end(interaction, cancel=True)

        @app_commands.command(name="gallery", description="Recent paintings of this server")
        @app_commands.describe(member="Only this member's paintings")
        @app_commands.allowed_contexts(guilds=True, dms=False, private_channels=False)
        @app_commands.allowed_installs(guilds=True, users=False)
        async def gallery(
            interaction: discord.Interaction, member: discord.Member | None = None
        ) -> None:
            await ui.gallery(interaction, member.id if member else None, 0, edit=False)

        @app_commands.command(name="leaderboard", description="Challenge wins in this server")
        @app_commands.allowed_contexts(guilds=True, dms=False, private_channels=False)
        @app_commands.allowed_installs(guilds=True, users=False)
        async def leaderboard(interaction: discord.Interaction) -> None:
            await ui.leaderboard(interaction)

        self.client.tree.add_command(group)
        self.client.tree.add_command(gallery)
        self.client.tree.add_command(leaderboard)

    # -- organisers ----------------------------------------------------------------------------

    def is_organiser(self, interaction: discord.Interaction[Any]) -> bool:
        """Manage Server, or the configured organiser role (name or id)."""
        user = interaction.user
        if not isinstance(user, discord.Member):
            return False
        if interaction.permissions.manage_guild:
            return True
        role = (self.client.settings.organiser_role or "").strip()
        if not role:
            return False
        return any(str(r.id) == role or r.name.casefold() == role.casefold() for r in user.roles)

    def require_organiser(self, interaction: discord.Interaction[Any], action: str) -> None:
        if self.is_organiser(interaction):
            return
        role = (self.client.settings.organiser_role or "").strip()
        if role:
            shown = f"<@&{role}>" if role.isdigit() else role
            who = f"Manage Server or the {shown} role"
        else:
            who = "Manage Server"
        raise NotOrganiser(replies.organisers_only(action, who))

    async def start(
        self,
        interaction: discord.Interaction,
        painting: discord.Attachment,
        title: str,
        duration: str,
    ) -> None:
        assert interaction.guild is not None and interaction.channel_id is not None
        self.require_organiser(interaction, "start")
        seconds = parse_duration(duration)
        channel_id = str(interaction.channel_id)
        existing = self.core.open_in(PLATFORM, channel_id)
        if existing is not None:
            raise ChallengeExists(replies.challenge_exists(existing, MARKDOWN), existing)
        if not isinstance(interaction.channel, discord.TextChannel):
            # Threads, voice channels' chats, ...: the challenge needs a thread of its own.
            raise NoChallenge(replies.TEXT_CHANNELS_ONLY)
        self.client._check_channel(interaction)
        self.client._check_permissions(interaction)
        check_attachment(painting, "painting", self.client._input_limit(interaction))
        await interaction.response.defer(ephemeral=True, thinking=True)
        data = await download(painting, "painting")
        try:
            await asyncio.to_thread(
                images.probe,
                data,
                role="painting",
                max_bytes=self.client.service.limits.max_input_bytes,
            )
        except images.ImageError as error:
            raise InvalidImage(error.message) from None
        challenge = self.core.create(
            platform=PLATFORM,
            community_id=str(interaction.guild.id),
            chat_id=channel_id,
            title=title,
            painting=data,
            painting_name=painting.filename,
            organiser_id=str(interaction.user.id),
            organiser_name=interaction.user.display_name,
            duration=seconds,
        )
        try:
            thread = await self._open(interaction, challenge, data, painting.filename)
        except Exception as error:
            # Never leave a challenge open that nobody was told about.
            self.core.discard(challenge.id)
            if not isinstance(error, DISCORD_TROUBLE):
                raise
            log.warning("challenge %d: could not be announced: %r", challenge.id, error)
            raise NoChallenge(replies.CHALLENGE_NOT_POSTED) from None
        await self.client._reply(
            interaction, replies.challenge_on(challenge, thread.mention, MARKDOWN)
        )

    async def _open(
        self,
        interaction: discord.Interaction,
        challenge: Challenge,
        data: bytes,
        filename: str,
    ) -> discord.Thread:
        channel = interaction.channel
        assert isinstance(channel, discord.TextChannel)
        name = _image_name("challenge-painting", filename)
        text = replies.announcement(
            challenge,
            how="`/challenge enter photo:` here or in the thread",
            limit=self.core_entries_limit(),
            markup=MARKDOWN,
        )
        embed = views.text_embed(text, views.ACCENT)
        embed.set_image(url=f"attachment://{name}")
        embed.set_footer(text=f"Started by {interaction.user.display_name}")
        message = await channel.send(
            embed=embed, file=discord.File(io.BytesIO(data), filename=name)
        )
        self.core.set_message(challenge.id, f"{channel.id}/{message.id}")
        thread = await message.create_thread(name=challenge.title[:100])
        self.core.set_thread(challenge.id, str(thread.id))
        pinned = await thread.send(
            replies.pinned_painting(challenge, MARKDOWN),
            file=discord.File(io.BytesIO(data), filename=name),
        )
        try:
            await pinned.pin()
        except discord.HTTPException as error:
            log.warning("challenge %d: could not pin the painting: %s", challenge.id, error)
        return thread

    def core_entries_limit(self) -> int:
        return self.client.service.limits.challenge_entries

    async def end(self, interaction: discord.Interaction, *, cancel: bool) -> None:
        self.require_organiser(interaction, "cancel" if cancel else "end")
        challenge = self.core.require_open(PLATFORM, str(interaction.channel_id))
        by = str(interaction.user.id)
        if cancel:
            await self.core.cancel(challenge.id, by=by)
        else:
            await self.core.end(challenge.id, by=by)
        text = replies.challenge_closed_by_you(challenge, cancelled=cancel, markup=MARKDOWN)
        await self.client._reply(interaction, text)

    # -- members -------------------------------------------------------------------------------

    async def enter(
        self,
        interaction: discord.Interaction,
        photo: discord.Attachment,
        strength: int | None,
        keep_colors: bool | None,
    ) -> None:
        challenge = self.core.require_open(PLATFORM, str(interaction.channel_id))
        self.client._check_channel(interaction)
        self.client._check_permissions(interaction)
        check_attachment(photo, "photo", self.client._input_limit(interaction))
        options = choose(strength=strength, keep_colors=keep_colors)
        await interaction.response.defer(ephemeral=True, thinking=True)
        data = await download(photo, "photo")
        job = await self.core.enter(
            challenge,
            user_id=str(interaction.user.id),
            user_name=interaction.user.display_name,
            photo=data,
            photo_name=photo.filename,
            options=options,
        )
        await self.client.announce_job(interaction, job, replies.entry_queued(challenge, MARKDOWN))

    async def deliver(self, event: Finished) -> bool:
        """Post a finished challenge painting as an entry; False when it is not one."""
        entry = self.core.accept(event)
        if entry is None:
            return False
        challenge = self.core.get(entry.challenge_id)
        channel_id = int(challenge.entries_chat)
        limit = self.client._upload_limit(channel_id)
        data, filename = await asyncio.to_thread(
            views.encode_for_upload, event.result_png, limit, f"entry-{entry.id}"
        )
        text = replies.entry(entry, challenge, MARKDOWN)
        embed = discord.Embed(title=text.headline, colour=views.ACCENT)
        embed.description = replies.inputs(event.job, MARKDOWN)
        embed.set_image(url=f"attachment://{filename}")
        # Footers show no markdown: the plain sentence.
        embed.set_footer(text=" ".join(replies.entry(entry, challenge, replies.PLAIN).lines))
        channel = self.client._messageable(channel_id)
        try:
            message = await channel.send(
                replies.entry_in(entry, MARKDOWN),
                embed=embed,
                file=discord.File(io.BytesIO(data), filename=filename),
                view=entry_view(entry.id),
            )
        except DISCORD_TROUBLE as error:
            # The thread is gone or closed to the bot: no entry nobody can see or vote for;
            # the painting is delivered as an ordinary one instead.
            log.warning("challenge %d: entry %d not posted: %r", challenge.id, entry.id, error)
            self.core.discard_entry(entry.id)
            return False
        self.core.set_entry_message(entry.id, f"{message.channel.id}/{message.id}")
        return True

    async def on_vote(self, interaction: discord.Interaction[Any], entry_id: int) -> None:
        try:
            result = self.core.vote(entry_id, str(interaction.user.id))
            await self.client._reply(interaction, replies.voted(result, MARKDOWN))
        except Exception as error:
            await self.client._report_error(interaction, error)

    async def on_withdraw(self, interaction: discord.Interaction[Any], entry_id: int) -> None:
        try:
            entry = self.core.withdraw(
                entry_id, str(interaction.user.id), organiser=self.is_organiser(interaction)
            )
            if interaction.message is not None:
                with contextlib.suppress(discord.HTTPException):
                    await interaction.message.delete()
            text = replies.withdrew(entry, str(interaction.user.id), MARKDOWN)
            await self.client._reply(interaction, text)
        except Exception as error:
            await self.client._report_error(interaction, error)

    async def standings(self, interaction: discord.Interaction) -> None:
        challenge = self.core.latest_in(PLATFORM, str(interaction.channel_id))
        if challenge is None:
            raise NoChallenge(replies.no_challenge_yet("here"))
        running = challenge.state is ChallengeState.OPEN
        show_votes = not running or self.is_organiser(interaction)
        standings = self.core.standings(challenge.id)
        guild = str(interaction.guild_id or "@me")
        links = {s.entry.id: link for s in standings if (link := _jump(s.entry, guild))}
        text = replies.standings(
            challenge, standings, votes=show_votes, markup=MARKDOWN, links=links
        )
        await interaction.response.send_message(
            embed=views.text_embed(text, views.ACCENT), ephemeral=True
        )

    async def leaderboard(self, interaction: discord.Interaction) -> None:
        assert interaction.guild is not None
        rows = self.core.leaderboard(PLATFORM, str(interaction.guild.id))
        embed = views.text_embed(replies.leaderboard(rows, "server", MARKDOWN), views.ACCENT)
        embed.set_footer(text=replies.LEADERBOARD_LEGEND)
        await interaction.response.send_message(embed=embed, ephemeral=True)

    # -- gallery -------------------------------------------------------------------------------

    async def gallery(
        self, interaction: discord.Interaction[Any], member_id: int | None, page: int, *, edit: bool
    ) -> None:
        # Acknowledge first: reading and uploading four paintings can take longer than the
        # 3 seconds Discord allows for the first answer.
        if edit:
            await interaction.response.defer()
        else:
            await interaction.response.defer(ephemeral=True, thinking=True)
        chats = self._visible_chats(interaction)
        jobs, total = self.core.gallery(
            PLATFORM,
            chat_ids=chats,
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
        embeds, files = [], []
        for job in jobs:
            png = await asyncio.to_thread(self.client.service.result_png, job)
            data, filename = await asyncio.to_thread(
                views.encode_for_upload, png, budget, f"gallery-{job.id}"
            )
            filename = filename.removeprefix("atelier-")
            embed = discord.Embed(colour=views.ACCENT, description=_gallery_line(job))
            embed.set_image(url=f"attachment://{filename}")
            embeds.append(embed)
            files.append(discord.File(io.BytesIO(data), filename=filename))
        content = replies.gallery_page(whose, page, pages)
        view = gallery_view(member_id or 0, page, pages)
        await interaction.edit_original_response(
            content=content, embeds=embeds, attachments=files, view=view
        )

    def _visible_chats(self, interaction: discord.Interaction[Any]) -> set[str]:
        """The server's channels and threads that the member can see.

        A painting made in a private channel stays there: it never shows in the gallery of a
        member who cannot read that channel.
        """
        guild = interaction.guild
        assert guild is not None
        user = interaction.user
        member = user if isinstance(user, discord.Member) else guild.get_member(user.id)
        if member is None:
            return set()
        chats = {str(c.id) for c in guild.channels if c.permissions_for(member).view_channel}
        chats |= {str(t.id) for t in guild.threads if _sees_thread(t, member)}
        # Archived challenge threads are not in the cache; they are as visible as their channel.
        threads = self.core.threads_of(PLATFORM, str(guild.id))
        for thread, channel in threads.items():
            if channel in chats and guild.get_thread(int(thread)) is None:
                chats.add(thread)
        return chats

    async def on_gallery(
        self, interaction: discord.Interaction[Any], member_id: int, page: int
    ) -> None:
        try:
            await self.gallery(interaction, member_id or None, max(0, page), edit=True)
        except Exception as error:
            await self.client._report_error(interaction, error)

    # -- the end -------------------------------------------------------------------------------

    async def announce(self, outcome: Outcome) -> None:
        """Post how a challenge ended in its channel, say so in its thread, lock the thread."""
        if not self.client.is_ready():
            await self._ready.wait()
        challenge = outcome.challenge
        channel = self.client._messageable(int(challenge.chat_id))
        content, embeds, files = self._results(outcome)
        extra: dict[str, Any] = {}
        if challenge.message_ref:
            _, _, message_id = challenge.message_ref.partition("/")
            extra["reference"] = discord.MessageReference(
                message_id=int(message_id),
                channel_id=int(challenge.chat_id),
                fail_if_not_exists=False,
            )
        message = await channel.send(content, embeds=embeds, files=files, **extra)
        if challenge.thread_id is not None:
            thread = self.client._messageable(int(challenge.thread_id))
            try:
                await thread.send(replies.thread_closed(message.jump_url))
                await self.client.http.edit_channel(
                    int(challenge.thread_id), locked=True, reason="challenge ended"
                )
            except discord.HTTPException as error:
                log.warning("challenge %d: could not lock its thread: %s", challenge.id, error)

    def _results(self, outcome: Outcome) -> tuple[str, list[discord.Embed], list[discord.File]]:
        content = replies.outcome(outcome, MARKDOWN)
        embeds, files = [], []
        for standing in outcome.podium:
            assert standing.place is not None
            embed = discord.Embed(
                title=replies.place(standing, MARKDOWN),
                description=replies.count(standing.votes, "vote"),
                colour=views.DONE_COLOUR,
            )
            image = standing.entry.image()
            if image is not None:
                filename = f"place-{standing.place}.png"
                embed.set_image(url=f"attachment://{filename}")
                files.append(discord.File(io.BytesIO(image), filename=filename))
            embeds.append(embed)
        return content, embeds, files


# ----------------------------------------------------------------------------------------------
# Pieces


def _image_name(stem: str, original: str) -> str:
    suffix = original.rsplit(".", 1)[-1].lower() if "." in original else "png"
    return f"{stem}.{suffix if suffix.isalnum() else 'png'}"


def _jump(entry: Entry, guild: str) -> str | None:
    if not entry.message_ref:
        return None
    channel, _, message = entry.message_ref.partition("/")
    return f"https://discord.com/channels/{guild}/{channel}/{message}"


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


def _gallery_line(job: Job) -> str:
    when_done = f" · <t:{int(job.finished_at)}:R>" if job.finished_at else ""
    return f"<@{job.user_id}>: {replies.inputs(job, MARKDOWN)}{when_done}"


class VoteButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"atelier:vote:(?P<entry>\d{1,18})"
):
    def __init__(self, entry_id: int) -> None:
        super().__init__(
            discord.ui.Button(
                label="Vote",
                emoji="🗳️",
                style=discord.ButtonStyle.success,
                custom_id=f"atelier:vote:{entry_id}",
            )
        )
        self.entry_id = entry_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: Any
    ) -> VoteButton:
        return cls(int(match["entry"]))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        await _ui(interaction).on_vote(interaction, self.entry_id)


class WithdrawButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=r"atelier:withdraw:(?P<entry>\d{1,18})",
):
    def __init__(self, entry_id: int) -> None:
        super().__init__(
            discord.ui.Button(
                label="Withdraw",
                style=discord.ButtonStyle.secondary,
                custom_id=f"atelier:withdraw:{entry_id}",
            )
        )
        self.entry_id = entry_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: Any
    ) -> WithdrawButton:
        return cls(int(match["entry"]))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        await _ui(interaction).on_withdraw(interaction, self.entry_id)


class GalleryButton(
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

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        await _ui(interaction).on_gallery(interaction, self.member_id, self.page)


def entry_view(entry_id: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(VoteButton(entry_id))
    view.add_item(WithdrawButton(entry_id))
    return view


def gallery_view(member_id: int, page: int, pages: int) -> discord.ui.View:
    """Previous/Next; each button's id names the page it opens."""
    view = discord.ui.View(timeout=None)
    view.add_item(GalleryButton("prev", member_id, max(0, page - 1), disabled=page == 0))
    view.add_item(GalleryButton("next", member_id, page + 1, disabled=page + 1 >= pages))
    return view
