"""The Discord adapter: application commands, status messages, results and buttons.

Flow of ``/paint``: cheap checks (channel, the bot's permissions, content type and size of both
attachments), acknowledge (an ephemeral "thinking" reply, well inside Discord's 3 seconds),
download both attachments at once (their URLs expire), submit to the service, then post one
ordinary channel message, the *status message*, and tell the member where it is.

The status message is edited with the bot's own token (never the 15-minute interaction token),
so long waits still report. Each job has a *board*: what the message should say
(:class:`~bot.discord_views.StatusState`) and what it said last. Service events only update
the board; one small task per job makes the edits, at most one per ``edit_interval`` seconds of
``clock`` and only when what a member would see changed. Final events (done, failed,
cancelled) skip the throttle: the result is posted as a new message that mentions the member,
with Stronger / Softer / Keep colours / Delete buttons. If the status message was deleted the
job carries on and the result still arrives.

Errors: a :class:`~bot.errors.UserFacingError` becomes a short ephemeral reply; anything else
is logged with a reference id and answered politely. Discord errors while editing or posting
(rate limits, 5xx, unknown message, missing access) are logged and retried or worked around,
never raised into the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, replace
from typing import Any, Final, Literal

import aiohttp
import discord
from discord import app_commands

from bot import discord_views as views
from bot import replies
from bot.discord_views import MARKDOWN
from bot.errors import InvalidImage, NotAllowed
from bot.jobs import (
    Cancelled,
    Failed,
    Finished,
    Job,
    JobEvent,
    JobState,
    PaintRequest,
    Progress,
)
from bot.options import NOT_AN_IMAGE, choose, image_kind, reroll
from bot.pacing import Blocked, Lost, Paced, Pacer
from bot.replies import StatusState, status_after
from bot.service import PaintService
from bot.settings import DiscordSettings
from engine.protocol import PaintOptions

log = logging.getLogger(__name__)

PLATFORM: Final = "discord"
Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
# Delivers a finished challenge painting itself (see bot.discord_challenges); False: not taken.
ChallengeDelivery = Callable[[Finished], Awaitable[bool]]

# Seconds between attempts to post a result after a Discord error (discord.py has already
# retried rate limits and 5xx answers itself by then).
RETRY_DELAYS: Final = (2.0, 5.0, 15.0, 30.0, 60.0)
# Discord refused (HTTPException) or could not be reached at all: discord.py lets connection
# errors and timeouts (OSError, aiohttp.ClientError) through after its own retries.
DISCORD_TROUBLE: Final = (discord.HTTPException, aiohttp.ClientError, OSError)
# What the bot needs in a server channel: (permission attribute, name in Discord's settings).
CHANNEL_PERMISSIONS: Final = (
    ("view_channel", "View Channel"),
    ("send_messages", "Send Messages"),
    ("embed_links", "Embed Links"),
    ("attach_files", "Attach Files"),
    ("read_message_history", "Read Message History"),
)
# For the README's invite link: the same permissions as one integer, plus what style
# challenges need (a public thread per challenge, and pinning the painting in it).
INVITE_PERMISSIONS: Final = discord.Permissions(
    send_messages_in_threads=True,
    create_public_threads=True,
    manage_messages=True,
    **{name: True for name, _ in CHANNEL_PERMISSIONS},
)


class MissingPermissions(NotAllowed):
    """The bot lacks a permission it needs in this channel; the message names them."""


@dataclass(eq=False, kw_only=True)
class _Board(Paced):
    """One job's status message: what it should say and what it showed last."""

    job: Job
    status: StatusState
    channel_id: int
    now: Clock  # unix time, for the relative timestamps members see
    message_id: int | None = None
    preview: bytes | None = None
    preview_sent: int = 0

    def wanted(self) -> Hashable:
        return views.status_key(self.job, self.status, self.now())


class AtelierDiscord(discord.Client):
    """The Atelier bot on Discord. Run with ``await client.start(token)``."""

    def __init__(
        self,
        settings: DiscordSettings,
        service: PaintService,
        *,
        clock: Clock = time.monotonic,
        edit_interval: float = 4.0,
        sleep: Sleep = asyncio.sleep,
        wall_clock: Clock = time.time,
        retry_delays: tuple[float, ...] = RETRY_DELAYS,
    ) -> None:
        super().__init__(
            intents=discord.Intents(guilds=True),
            allowed_mentions=discord.AllowedMentions(everyone=False, roles=False, users=True),
        )
        self.settings = settings
        self.service = service
        self.tree = app_commands.CommandTree(self)
        self.tree.error(self._on_tree_error)
        self._now = wall_clock
        self._retry_delays = retry_delays
        self._pacer: Pacer[_Board] = Pacer(
            self._edit_status, clock=clock, sleep=sleep, interval=edit_interval
        )
        self._upload_limits: dict[int, int] = {}  # channel id -> limit the platform reported
        self.challenge_delivery: ChallengeDelivery | None = None
        self._add_commands()
        # Registered here rather than in setup_hook so the service can be started before or
        # after the client, and recovered jobs' events reach us.
        service.add_listener(self._on_job_event)

    # -- life cycle ----------------------------------------------------------------------------

    async def setup_hook(self) -> None:
        self.add_dynamic_items(*views.BUTTONS)
        guild_id = self.settings.dev_guild_id
        if guild_id is not None:
            # Development: guild commands appear at once; global ones can take a while.
            guild = discord.Object(id=guild_id)
            self.tree.copy_global_to(guild=guild)
            synced = await self.tree.sync(guild=guild)
            log.info("synced %d commands to development guild %s", len(synced), guild_id)
        else:
            synced = await self.tree.sync()
            log.info("synced %d global commands", len(synced))

    async def close(self) -> None:
        await self._pacer.close()
        await super().close()

    async def wait_idle(self, max_turns: int = 100_000) -> None:
        """Return once every status board is waiting (for an event or its next edit slot).

        For tests and orderly shutdown; gives the loop turns, never sleeps on the wall clock.
        """
        for _ in range(max_turns):
            if self._pacer.idle:
                return
            await asyncio.sleep(0)
        raise TimeoutError("status messages still busy")

    # -- commands ------------------------------------------------------------------------------

    def _add_commands(self) -> None:
        client = self

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
            await client.paint(interaction, photo, painting, options)

        @app_commands.command(name="cancel", description="Stop your painting")
        @app_commands.allowed_contexts(guilds=True, dms=True, private_channels=False)
        @app_commands.allowed_installs(guilds=True, users=False)
        async def cancel(interaction: discord.Interaction) -> None:
            await client.cancel_mine(interaction)

        @app_commands.command(name="queue", description="What is painting now and who is waiting")
        @app_commands.allowed_contexts(guilds=True, dms=True, private_channels=False)
        @app_commands.allowed_installs(guilds=True, users=False)
        async def queue(interaction: discord.Interaction) -> None:
            await client.show_queue(interaction)

        @app_commands.command(name="help", description="How to use Atelier, with an example")
        @app_commands.allowed_contexts(guilds=True, dms=True, private_channels=False)
        @app_commands.allowed_installs(guilds=True, users=False)
        async def help_(interaction: discord.Interaction) -> None:
            await interaction.response.send_message(embed=views.help_embed(), ephemeral=True)

        commands: tuple[app_commands.Command[Any, Any, None], ...] = (paint, cancel, queue, help_)
        for command in commands:
            self.tree.add_command(command)

    async def paint(
        self,
        interaction: discord.Interaction,
        photo: discord.Attachment,
        painting: discord.Attachment,
        options: PaintOptions,
    ) -> None:
        self._check_channel(interaction)
        self._check_permissions(interaction)
        limit = self._input_limit(interaction)
        check_attachment(photo, "photo", limit)
        check_attachment(painting, "painting", limit)
        if interaction.channel_id is not None:
            self._upload_limits[interaction.channel_id] = interaction.filesize_limit
        await interaction.response.defer(ephemeral=True, thinking=True)
        photo_bytes, painting_bytes = await asyncio.gather(
            download(photo, "photo"), download(painting, "painting")
        )
        job = await self.service.submit(
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
        await self._announce(interaction, job, replies.IN_THE_QUEUE)

    async def cancel_mine(self, interaction: discord.Interaction) -> None:
        job = await self.service.cancel_mine(PLATFORM, str(interaction.user.id))
        await self._reply(interaction, replies.cancelling(job, str(interaction.user.id)))

    async def show_queue(self, interaction: discord.Interaction) -> None:
        embed = views.queue_embed(
            self.service.overview(),
            str(interaction.user.id),
            str(interaction.channel_id),
            self._now(),
        )
        await interaction.response.send_message(embed=embed, ephemeral=True)

    # -- buttons -------------------------------------------------------------------------------

    async def on_cancel_button(self, interaction: discord.Interaction, job_id: str) -> None:
        try:
            job = await self.service.cancel(
                job_id, user_id=str(interaction.user.id), moderator=self.is_moderator(interaction)
            )
            await self._reply(interaction, replies.cancelling(job, str(interaction.user.id)))
        except Exception as error:
            await self._report_error(interaction, error)

    async def on_delete_button(self, interaction: discord.Interaction, job_id: str) -> None:
        try:
            await self.service.delete_result(
                job_id, user_id=str(interaction.user.id), moderator=self.is_moderator(interaction)
            )
            if interaction.message is not None:
                with contextlib.suppress(discord.NotFound):
                    await interaction.message.delete()
            await self._reply(interaction, replies.DELETED)
        except Exception as error:
            await self._report_error(interaction, error)

    async def on_reroll_button(
        self, interaction: discord.Interaction, job_id: str, change: str
    ) -> None:
        try:
            self._check_channel(interaction)
            self._check_permissions(interaction)
            await interaction.response.defer(ephemeral=True, thinking=True)
            source = self.service.get(job_id)
            job = await self.service.reroll(
                job_id,
                user_id=str(interaction.user.id),
                user_name=interaction.user.display_name,
                change=change,
            )
            await self._announce(
                interaction, job, replies.rerolling(reroll(change), source.options)
            )
        except Exception as error:
            await self._report_error(interaction, error)

    def is_moderator(self, interaction: discord.Interaction) -> bool:
        """The configured moderator role (name or id), or Manage Messages in the channel."""
        user = interaction.user
        if not isinstance(user, discord.Member):
            return False
        if interaction.permissions.manage_messages:
            return True
        role = (self.settings.moderator_role or "").strip()
        if not role:
            return False
        return any(str(r.id) == role or r.name.casefold() == role.casefold() for r in user.roles)

    # -- checks --------------------------------------------------------------------------------

    def _check_channel(self, interaction: discord.Interaction) -> None:
        allowed = self.settings.channels
        if not allowed or interaction.guild is None:
            return
        channel = interaction.channel
        parent = getattr(channel, "parent_id", None)
        if interaction.channel_id in allowed or parent in allowed:
            return
        raise NotAllowed(replies.only_in([f"<#{channel_id}>" for channel_id in sorted(allowed)]))

    def _check_permissions(self, interaction: discord.Interaction) -> None:
        """Refuse early, and say what to grant, if the bot could not post the status or result."""
        if interaction.guild is None:
            return  # a DM with the bot: nothing to grant
        permissions = interaction.app_permissions
        needed = list(CHANNEL_PERMISSIONS)
        if isinstance(interaction.channel, discord.Thread):
            needed[1] = ("send_messages_in_threads", "Send Messages in Threads")
        missing = [label for name, label in needed if not getattr(permissions, name)]
        if missing:
            raise MissingPermissions(replies.missing_permissions(missing, MARKDOWN))

    def _input_limit(self, interaction: discord.Interaction) -> int:
        return min(self.service.limits.max_input_bytes, interaction.filesize_limit)

    # -- replies and errors --------------------------------------------------------------------

    async def _on_tree_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        original = error.original if isinstance(error, app_commands.CommandInvokeError) else error
        await self._report_error(interaction, original)

    async def _report_error(self, interaction: discord.Interaction, error: BaseException) -> None:
        if isinstance(error, app_commands.CheckFailure):
            text = str(error) or "You can't use that here."
        else:
            where = f"/{interaction.command.name}" if interaction.command else "a button"
            text = replies.error_reply(error, where=f"discord {where}")
        await self._reply(interaction, text)

    async def _reply(self, interaction: discord.Interaction, text: str) -> None:
        """Answer only the member: the first response, the deferred one, or a follow-up."""
        try:
            if not interaction.response.is_done():
                await interaction.response.send_message(text, ephemeral=True)
            elif (
                interaction.response.type
                is discord.InteractionResponseType.deferred_channel_message
            ):
                await interaction.edit_original_response(content=text)
            else:
                await interaction.followup.send(text, ephemeral=True)
        except DISCORD_TROUBLE as error:
            log.warning("could not answer interaction %s: %r", interaction.id, error)

    async def announce_job(self, interaction: discord.Interaction, job: Job, what: str) -> None:
        """Post the status message of a job queued by another module (challenge entries)."""
        await self._announce(interaction, job, what)

    async def _announce(self, interaction: discord.Interaction, job: Job, what: str) -> None:
        """Post the status message of a new job and tell the member where it is."""
        message = await self._post_status(job)
        if message is None:
            await self._reply(interaction, replies.queued_elsewhere(what))
        else:
            await self._reply(interaction, replies.queued_here(what, message.jump_url))

    # -- status messages -----------------------------------------------------------------------

    async def _post_status(self, job: Job) -> discord.Message | None:
        board = self._pacer.get(job.id)
        if board is None:
            job = self.service.get(job.id)
            board = self._pacer.add(self._board(job, self._status_from_service(job)))
        now = self._now()
        posted = replace(board.status, preview=0)  # previews come by editing
        key = views.status_key(board.job, posted, now)
        channel = self._messageable(board.channel_id)
        try:
            embed = views.status_embed(board.job, posted, now)
            if board.status.state.terminal:
                message = await channel.send(embed=embed)
            else:
                message = await channel.send(embed=embed, view=views.status_view(job.id))
        except DISCORD_TROUBLE as error:
            log.warning("job %s: could not post the status message: %r", job.id, error)
            board.lost = True
            return None
        board.message_id = message.id
        self._pacer.posted(board, key)
        await self.service.attach_status(job.id, f"{message.channel.id}/{message.id}")
        return message

    def _board(self, job: Job, status: StatusState) -> _Board:
        return _Board(
            key=job.id,
            lane=int(job.chat_id),
            job=job,
            status=status,
            channel_id=int(job.chat_id),
            now=self._now,
        )

    def _status_from_service(self, job: Job) -> StatusState:
        if job.state is JobState.QUEUED:
            return StatusState(
                JobState.QUEUED,
                position=self.service.position(job.id),
                eta=self.service.overview().etas.get(job.id),
            )
        if job.state is JobState.DONE:
            return StatusState(JobState.DONE, seconds=job.seconds)
        if job.state is JobState.FAILED:
            return StatusState(JobState.FAILED, message=job.error_message)
        return StatusState(job.state)

    async def _on_job_event(self, event: JobEvent) -> None:
        """The service's listener: update the job's board; the pacer makes the edits.

        Does no I/O itself, so the service's event feed never waits on Discord.
        """
        job = event.job
        if job.platform != PLATFORM or self.is_closed():
            return
        board = self._pacer.get(job.id) or self._pacer.add(self._board(job, StatusState(job.state)))
        if board.message_id is None and job.status_ref and not board.lost:
            board.channel_id, board.message_id = _parse_ref(job.status_ref, board.channel_id)
            board.posted = board.message_id is not None
        before = board.status.state
        board.job = job
        board.status = status_after(board.status, event)
        if isinstance(event, Progress) and event.preview_jpeg:
            board.preview = event.preview_jpeg
        if isinstance(event, Finished | Failed | Cancelled) and not board.final:
            board.final = True
            self._pacer.spawn(self._deliver(board, event), name=f"discord-deliver-{job.id}")
        self._pacer.changed(board, urgent=board.status.state is not before)

    def _status_message(self, board: _Board) -> discord.PartialMessage:
        assert board.message_id is not None
        channel = self.get_partial_messageable(board.channel_id)
        return channel.get_partial_message(board.message_id)

    async def _edit_status(self, board: _Board) -> Hashable:
        """The pacer's edit: show the board's state; :class:`Lost` or :class:`Blocked` if not."""
        key = board.wanted()
        preview = board.status.preview
        changes: dict[str, Any] = {
            "embed": views.status_embed(board.job, board.status, self._now())
        }
        if board.status.state.terminal:
            changes |= {"view": None, "attachments": []}
        else:
            changes["view"] = views.status_view(board.job.id)
            if preview and preview != board.preview_sent and board.preview:
                changes["attachments"] = [views.preview_file(board.preview)]
        try:
            await self._status_message(board).edit(**changes)
        except discord.NotFound:
            log.info("job %s: the status message was deleted; carrying on", board.job.id)
            raise Lost from None
        except discord.Forbidden as error:
            log.warning("job %s: can no longer edit the status message: %s", board.job.id, error)
            raise Lost from None
        except discord.HTTPException as error:
            if 400 <= error.status < 500 and error.status != 429:
                log.warning("job %s: Discord refused a status edit: %r", board.job.id, error)
                raise Lost from None
            log.warning("job %s: editing the status message failed: %r", board.job.id, error)
            raise Blocked from None
        except DISCORD_TROUBLE as error:
            log.warning("job %s: editing the status message failed: %r", board.job.id, error)
            raise Blocked from None
        board.preview_sent = preview
        return key

    # -- outcomes ------------------------------------------------------------------------------

    async def _deliver(self, board: _Board, event: JobEvent) -> None:
        """Post the result of a finished job, or say that it failed where no status shows it."""
        if isinstance(event, Finished) and not await self._deliver_to_challenge(event):
            await self._post_result(board, event)
        if isinstance(event, Failed) and (board.message_id is None or board.lost):
            text = replies.failed_without_status(board.job, event.message, MARKDOWN)
            await self._send(board, {"content": text})

    async def _deliver_to_challenge(self, event: Finished) -> bool:
        """A challenge entry is posted by the challenge module instead of as a plain result."""
        if event.job.challenge_id is None or self.challenge_delivery is None:
            return False
        try:
            return await self.challenge_delivery(event)
        except Exception:
            log.exception("job %s: posting the challenge entry failed", event.job.id)
            return False

    async def _post_result(self, board: _Board, event: Finished) -> None:
        job = event.job
        limit = self._upload_limit(int(job.chat_id))
        png = event.result_png
        if len(png) <= limit:
            data, filename = png, f"atelier-{job.id}.png"
        else:
            data, filename = await asyncio.to_thread(views.encode_for_upload, png, limit, job.id)
        reference = None
        if board.message_id is not None and not board.lost:
            reference = discord.MessageReference(
                message_id=board.message_id, channel_id=board.channel_id, fail_if_not_exists=False
            )

        def message() -> dict[str, Any]:
            return {
                "content": replies.ready(job, MARKDOWN),
                "embed": views.result_embed(job, event.seconds, filename),
                "file": discord.File(io.BytesIO(data), filename=filename),
                "view": views.result_view(job),
                "reference": reference,
            }

        if await self._send(board, message):
            log.info("job %s: result delivered to channel %s", job.id, job.chat_id)
            return
        # The channel refused (permissions changed, channel deleted): try a direct message.
        try:
            user = self.get_user(int(job.user_id)) or await self.fetch_user(int(job.user_id))
            kwargs = message()
            kwargs.pop("reference")
            await user.send(**kwargs)
            log.info("job %s: result delivered by direct message", job.id)
        except DISCORD_TROUBLE as error:
            log.error("job %s: could not deliver the result anywhere: %r", job.id, error)

    async def _send(
        self, board: _Board, message: dict[str, Any] | Callable[[], dict[str, Any]]
    ) -> bool:
        """Post in the job's channel, retrying transient errors; False when refused for good."""
        job = board.job
        channel = self._messageable(int(job.chat_id))
        for attempt, delay in enumerate((0.0, *self._retry_delays)):
            if delay:
                await self._pacer.pause(delay)
            kwargs = message() if callable(message) else dict(message)
            try:
                await channel.send(**kwargs)
                return True
            except (discord.Forbidden, discord.NotFound) as error:
                log.warning(
                    "job %s: channel %s refused the message: %s", job.id, job.chat_id, error
                )
                return False
            except DISCORD_TROUBLE as error:
                log.warning("job %s: posting failed (attempt %d): %r", job.id, attempt + 1, error)
        return False

    def _messageable(self, channel_id: int) -> discord.abc.Messageable:
        channel = self.get_channel(channel_id)
        if isinstance(channel, discord.abc.Messageable):
            return channel
        return self.get_partial_messageable(channel_id)

    def _upload_limit(self, channel_id: int) -> int:
        """The most bytes one upload may have here, as Discord reports it now."""
        channel = self.get_channel(channel_id)
        guild = getattr(channel, "guild", None)
        limit = (
            guild.filesize_limit
            if guild is not None
            else discord.utils.DEFAULT_FILE_SIZE_LIMIT_BYTES
        )
        reported = self._upload_limits.get(channel_id)
        return min(limit, reported) if reported else limit


# ----------------------------------------------------------------------------------------------


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


def _parse_ref(ref: str, default_channel: int) -> tuple[int, int | None]:
    channel, _, message = ref.partition("/")
    try:
        return int(channel), int(message)
    except ValueError:
        log.warning("ignoring malformed status reference %r", ref)
        return default_channel, None
