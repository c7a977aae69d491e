"""Style challenges on Discord: the /challenge group, /leaderboard and the entry buttons.

- ``/challenge start`` (organisers: Manage Server or the organiser role) posts the
  announcement and opens a thread on it with the painting pinned; ``/challenge enter`` queues
  an entry, whose status message and entry (with **Vote** and **Withdraw**) go to the thread;
  ``standings`` shows organisers the counts while it runs, everyone the entries; ``end`` and
  ``cancel`` are for organisers; ``/leaderboard``: wins and podiums in the server.
- The results (:mod:`~bot.discord.results`) hand a finished challenge painting to
  :meth:`DiscordChallenges.deliver` (their ``deliver_entry``); one finished after its challenge
  closed is an ordinary painting.
- When a challenge closes, :meth:`DiscordChallenges.announce` posts one podium picture of the
  top three (place and votes drawn on it) above the text in the channel, says so in the
  thread and locks it. Buttons carry ids only.
"""

from __future__ import annotations

import contextlib
import io
import logging
from typing import Any

import discord
from discord import app_commands

from bot import replies
from bot.challenges import (
    Challenge,
    Challenges,
    ChallengeState,
    Entry,
    NoChallenge,
    Outcome,
    parse_duration,
    podium_picture,
)
from bot.discord import embeds
from bot.discord.buttons import ENTRY_ID, IdButton
from bot.discord.client import (
    CHALLENGE_PERMISSIONS,
    DISCORD_TROUBLE,
    PLATFORM,
    AtelierDiscord,
    Feature,
)
from bot.discord.embeds import MARKDOWN
from bot.discord.paint import check_attachment, download
from bot.discord.status import StatusMessages
from bot.jobs import Finished, MessageRef
from bot.options import choose

log = logging.getLogger(__name__)

PODIUM_NAME = "podium.jpg"
PODIUM_URL = f"attachment://{PODIUM_NAME}"


class DiscordChallenges(Feature):
    """The challenge commands and the entry buttons on an :class:`AtelierDiscord` client."""

    def __init__(self, client: AtelierDiscord, challenges: Challenges) -> None:
        self.client = client
        self.core = challenges
        client.add_feature(self)
        client.add_dynamic_items(VoteButton, WithdrawButton)
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

        @app_commands.command(name="leaderboard", description="Challenge wins in this server")
        @app_commands.allowed_contexts(guilds=True, dms=False, private_channels=False)
        @app_commands.allowed_installs(guilds=True, users=False)
        async def leaderboard(interaction: discord.Interaction) -> None:
            await ui.leaderboard(interaction)

        self.client.tree.add_command(group)
        self.client.tree.add_command(leaderboard)

    # -- organisers ----------------------------------------------------------------------------

    def is_organiser(self, interaction: discord.Interaction[Any]) -> bool:
        return self.client.is_organiser(interaction)

    def require_organiser(self, interaction: discord.Interaction[Any], action: str) -> None:
        self.client.require_organiser(interaction, action)

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
            raise self.core.exists_error(existing, MARKDOWN)
        if not isinstance(interaction.channel, discord.TextChannel):
            # Threads, voice channels' chats, ...: the challenge needs a thread of its own.
            raise NoChallenge(replies.TEXT_CHANNELS_ONLY)
        self.client.guard(interaction)
        # Its thread, the painting pinned there, the thread locked at the end: asked up front.
        self.client.require(interaction, CHALLENGE_PERMISSIONS)
        check_attachment(painting, "painting", self.client.input_limit(interaction))
        await interaction.response.defer(ephemeral=True, thinking=True)
        data = await download(painting, "painting")
        await self.core.check_painting(data)
        challenge = await self.core.acreate(
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
        await self.client.reply(
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
            limit=self.core.limits.challenge_entries,
            markup=MARKDOWN,
        )
        embed = embeds.text_embed(text, embeds.ACCENT)
        embed.set_image(url=f"attachment://{name}")
        embed.set_footer(text=f"Started by {interaction.user.display_name}")
        message = await channel.send(
            embed=embed, file=discord.File(io.BytesIO(data), filename=name)
        )
        self.core.set_message(challenge.id, str(MessageRef(channel.id, message.id)))
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

    async def end(self, interaction: discord.Interaction, *, cancel: bool) -> None:
        self.require_organiser(interaction, "cancel" if cancel else "end")
        challenge = self.core.require_open(PLATFORM, str(interaction.channel_id))
        by = str(interaction.user.id)
        if cancel:
            await self.core.cancel(challenge.id, by=by)
        else:
            await self.core.end(challenge.id, by=by)
        text = replies.challenge_closed_by_you(challenge, cancelled=cancel, markup=MARKDOWN)
        await self.client.reply(interaction, text)

    # -- members -------------------------------------------------------------------------------

    async def enter(
        self,
        interaction: discord.Interaction,
        photo: discord.Attachment,
        strength: int | None,
        keep_colors: bool | None,
    ) -> None:
        challenge = self.core.require_open(PLATFORM, str(interaction.channel_id))
        self.client.guard(interaction)
        check_attachment(photo, "photo", self.client.input_limit(interaction))
        options = choose(strength=strength, keep_colors=keep_colors)
        user_id = str(interaction.user.id)
        self.core.check_may_enter(challenge, user_id)
        # The member's slot before the photo is fetched: past a limit, refused here.
        with self.client.service.reserve(PLATFORM, challenge.entries_chat, user_id) as slot:
            await interaction.response.defer(ephemeral=True, thinking=True)
            data = await download(photo, "photo")
            job = await self.core.enter(
                challenge,
                user_id=user_id,
                user_name=interaction.user.display_name,
                photo=data,
                photo_name=photo.filename,
                options=options,
                reservation=slot,
            )
        status = self.client.feature(StatusMessages)
        await status.announce(interaction, job, replies.entry_queued(challenge, MARKDOWN))

    async def deliver(self, event: Finished) -> bool:
        """Post a finished challenge painting as an entry; False when it is not one."""
        await self.core.adopt(event.job, event.result_png)  # the image written off the loop
        entry = self.core.accept(event)  # then only the rules: still open for votes?
        if entry is None:
            return False
        challenge = self.core.get(entry.challenge_id)
        channel_id = int(challenge.entries_chat)
        limit = self.client.upload_limit(channel_id)
        data, filename = await embeds.encode_for_upload(
            event.result_png, limit, f"entry-{entry.id}", self.client.sandbox
        )
        text = replies.entry(entry, challenge, MARKDOWN)
        embed = discord.Embed(title=text.headline, colour=embeds.ACCENT)
        embed.description = replies.inputs(event.job, MARKDOWN)
        embed.set_image(url=f"attachment://{filename}")
        # Footers show no markdown: the plain sentence.
        embed.set_footer(text=" ".join(replies.entry(entry, challenge, replies.PLAIN).lines))
        channel = self.client.messageable(channel_id)
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
        self.core.set_entry_message(entry.id, str(MessageRef(message.channel.id, message.id)))
        return True

    async def vote(self, interaction: discord.Interaction[Any], entry_id: int) -> None:
        result = self.core.vote(entry_id, str(interaction.user.id))
        await self.client.reply(interaction, replies.voted(result, MARKDOWN))

    async def withdraw(self, interaction: discord.Interaction[Any], entry_id: int) -> None:
        # Acknowledge first: deleting the entry's message is a call to Discord, which may be slow.
        await interaction.response.defer(ephemeral=True, thinking=True)
        by = str(interaction.user.id)
        entry = self.core.withdraw(entry_id, by, organiser=self.is_organiser(interaction))
        if interaction.message is not None:
            with contextlib.suppress(discord.HTTPException):
                await interaction.message.delete()
        await self.client.reply(interaction, replies.withdrew(entry, by, MARKDOWN))

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
            embed=embeds.text_embed(text, embeds.ACCENT), ephemeral=True
        )

    async def leaderboard(self, interaction: discord.Interaction) -> None:
        assert interaction.guild is not None
        rows = self.core.leaderboard(PLATFORM, str(interaction.guild.id))
        embed = embeds.text_embed(replies.leaderboard(rows, "server", MARKDOWN), embeds.ACCENT)
        embed.set_footer(text=replies.LEADERBOARD_LEGEND)
        await interaction.response.send_message(embed=embed, ephemeral=True)

    # -- the end -------------------------------------------------------------------------------

    async def announce(self, outcome: Outcome) -> None:
        """Post how a challenge ended in its channel (the podium picture above the text), say
        so in its thread, lock the thread."""
        if not self.client.is_ready():
            await self.client.until_ready()
        challenge = outcome.challenge
        channel = self.client.messageable(int(challenge.chat_id))
        extra: dict[str, Any] = {}
        ref = MessageRef.parse(challenge.message_ref)
        if ref is not None:
            extra["reference"] = discord.MessageReference(
                message_id=ref.message_id, channel_id=ref.chat_id, fail_if_not_exists=False
            )
        text = replies.outcome(outcome, MARKDOWN)
        picture = await podium_picture(outcome, self.client.sandbox)
        if picture is None:
            message = await channel.send(text, **extra)
        else:
            # A layout of its own: the picture first, the text (which mentions the winners)
            # under it, as members read a podium.
            layout = discord.ui.LayoutView()
            layout.add_item(discord.ui.MediaGallery(discord.MediaGalleryItem(PODIUM_URL)))
            layout.add_item(discord.ui.TextDisplay(text))
            podium = discord.File(io.BytesIO(picture), filename=PODIUM_NAME)
            message = await channel.send(view=layout, file=podium, **extra)
        if challenge.thread_id is not None:
            thread = self.client.messageable(int(challenge.thread_id))
            try:
                await thread.send(replies.thread_closed(message.jump_url))
                await self.client.http.edit_channel(
                    int(challenge.thread_id), locked=True, reason="challenge ended"
                )
            except discord.HTTPException as error:
                log.warning("challenge %d: could not lock its thread: %s", challenge.id, error)


# ----------------------------------------------------------------------------------------------
# Pieces


def _image_name(stem: str, original: str) -> str:
    suffix = original.rsplit(".", 1)[-1].lower() if "." in original else "png"
    return f"{stem}.{suffix if suffix.isalnum() else 'png'}"


def _jump(entry: Entry, guild: str) -> str | None:
    ref = MessageRef.parse(entry.message_ref)
    if ref is None:
        return None
    return f"https://discord.com/channels/{guild}/{ref.chat_id}/{ref.message_id}"


class VoteButton(IdButton, action="vote", id_pattern=ENTRY_ID):
    LABEL, EMOJI, STYLE = "Vote", "🗳️", discord.ButtonStyle.success

    async def pressed(self, interaction: discord.Interaction[Any], client: AtelierDiscord) -> None:
        await client.feature(DiscordChallenges).vote(interaction, int(self.carried))


class WithdrawButton(IdButton, action="withdraw", id_pattern=ENTRY_ID):
    LABEL = "Withdraw"

    async def pressed(self, interaction: discord.Interaction[Any], client: AtelierDiscord) -> None:
        await client.feature(DiscordChallenges).withdraw(interaction, int(self.carried))


def entry_view(entry_id: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(VoteButton(entry_id))
    view.add_item(WithdrawButton(entry_id))
    return view
