"""Status messages and results on Discord, with the buttons under them and what they do.

The status message is an ordinary channel message edited with the bot's own token (never the
15-minute interaction token), so long waits still report. Service events only update a job's
*board* (what its message should say, :class:`~bot.replies.StatusState`); the one
:class:`~bot.pacing.Pacer` decides when to edit. The result is posted as a new message that
mentions the member (a direct message if the channel refuses it), with the re-roll buttons of
:data:`bot.options.REROLLS`, **Timelapse** (:mod:`bot.discord.timelapse`) and Delete; a failure
whose status message is gone is told in a new message. Discord errors while editing or posting
are logged and retried or worked around, never raised into the service.

Buttons carry a job id only (``atelier:<action>:<job id>``), so they keep working after a
restart; the state they act on lives in the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any, Final

import discord

from bot import replies
from bot.discord import embeds
from bot.discord.buttons import IdButton
from bot.discord.client import DISCORD_TROUBLE, PLATFORM, AtelierDiscord, Feature
from bot.discord.embeds import MARKDOWN
from bot.discord.timelapse import TimelapseButton
from bot.jobs import (
    Cancelled,
    Failed,
    Finished,
    Job,
    JobEvent,
    JobState,
    MessageRef,
    Progress,
)
from bot.options import DEFAULTS, REROLLS, reroll, rerolls_for
from bot.pacing import Blocked, Clock, Lost, Paced, Pacer, Sleep
from bot.replies import StatusState, status_after
from bot.service import PaintService
from engine.protocol import PaintOptions

log = logging.getLogger(__name__)

# Seconds between attempts to post a result after a Discord error (discord.py has already
# retried rate limits and 5xx answers itself by then).
RETRY_DELAYS: Final = (2.0, 5.0, 15.0, 30.0, 60.0)
# Posts a finished challenge painting as an entry (bot.discord.challenges); False: not one.
EntryDelivery = Callable[[Finished], Awaitable[bool]]


class Posted(Enum):
    """How posting in a channel went."""

    SENT = "sent"
    REFUSED = "refused"  # for good: no permission, the channel is gone
    GAVE_UP = "gave up"  # Discord could not be reached, past the retries


@dataclass(eq=False, kw_only=True)
class _Board(Paced):
    """One job's status message: what it should say (the pacer knows what it shows)."""

    job: Job
    status: StatusState
    channel_id: int
    now: Clock  # unix time, for the relative timestamps members see
    message_id: int | None = None
    preview: bytes | None = None
    preview_sent: int = 0

    def wanted(self) -> Hashable:
        return embeds.status_key(self.job, self.status, self.now())


class StatusMessages(Feature):
    """Keeps every Discord job's status message in step with the service; posts the results."""

    def __init__(
        self,
        client: AtelierDiscord,
        service: PaintService,
        *,
        deliver_entry: EntryDelivery | None = None,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
        edit_interval: float = 4.0,
        retry_delays: tuple[float, ...] = RETRY_DELAYS,
    ) -> None:
        self._client = client
        self._service = service
        self._deliver_entry = deliver_entry
        self._now = wall_clock
        self._retry_delays = retry_delays
        self._pacer: Pacer[_Board] = Pacer(
            self._edit, clock=clock, sleep=sleep, interval=edit_interval
        )
        client.add_feature(self)
        client.add_dynamic_items(CancelButton, RerollButton, DeleteButton)
        # Registered now rather than at login, so jobs recovered at start reach us. This
        # feature posts Discord's results and says when each is out (mark_delivered).
        service.add_listener(self._on_event, delivers=PLATFORM)

    async def close(self) -> None:
        await self._pacer.close()

    async def wait_idle(self, max_turns: int = 100_000) -> None:
        """Return once every status message waits (for news or its next edit slot).

        For tests and orderly shutdown; gives the loop turns, never sleeps on the wall clock.
        """
        for _ in range(max_turns):
            if self._pacer.idle:
                return
            await asyncio.sleep(0)
        raise TimeoutError("status messages still busy")

    # -- new jobs ------------------------------------------------------------------------------

    async def announce(self, interaction: discord.Interaction[Any], job: Job, what: str) -> None:
        """Post the status message of a new job and tell the member where it is."""
        message = await self._post(job)
        if message is None:
            await self._client.reply(interaction, replies.queued_elsewhere(what))
        else:
            await self._client.reply(interaction, replies.queued_here(what, message.jump_url))

    async def _post(self, job: Job) -> discord.Message | None:
        board = self._pacer.get(job.id)
        if board is None:
            job = self._service.get(job.id)
            board = self._pacer.add(self._board(job, self._status_now(job)))
        now = self._now()
        posted = replace(board.status, preview=0)  # previews come by editing
        key = embeds.status_key(board.job, posted, now)
        channel = self._client.messageable(board.channel_id)
        try:
            embed = embeds.status_embed(board.job, posted, now)
            if board.status.state.terminal:
                message = await channel.send(embed=embed)
            else:
                message = await channel.send(embed=embed, view=status_view(job.id))
        except DISCORD_TROUBLE as error:
            log.warning("job %s: could not post the status message: %r", job.id, error)
            board.lost = True
            return None
        board.message_id = message.id
        self._pacer.posted(board, key)
        ref = MessageRef(message.channel.id, message.id)
        await self._service.attach_status(job.id, str(ref))
        return message

    def _board(self, job: Job, status: StatusState) -> _Board:
        board = _Board(
            key=job.id,
            lane=int(job.chat_id),
            job=job,
            status=status,
            channel_id=int(job.chat_id),
            now=self._now,
        )
        ref = MessageRef.parse(job.status_ref)
        if ref is not None:  # a recovered job: its message was posted before a restart
            board.channel_id, board.message_id, board.posted = ref.chat_id, ref.message_id, True
        return board

    def _status_now(self, job: Job) -> StatusState:
        if job.state is JobState.QUEUED:
            return StatusState(
                JobState.QUEUED,
                position=self._service.position(job.id),
                eta=self._service.overview().etas.get(job.id),
            )
        if job.state is JobState.DONE:
            return StatusState(JobState.DONE, seconds=job.seconds)
        if job.state is JobState.FAILED:
            return StatusState(JobState.FAILED, message=job.error_message)
        return StatusState(job.state)

    # -- events and edits ----------------------------------------------------------------------

    async def _on_event(self, event: JobEvent) -> None:
        """The service's listener: update the job's board; the pacer makes the edits.

        Does no I/O itself, so the service's event feed never waits on Discord.
        """
        job = event.job
        if job.platform != PLATFORM or self._client.is_closed():
            return
        board = self._pacer.get(job.id) or self._pacer.add(self._board(job, StatusState(job.state)))
        before = board.status.state
        board.job = job
        board.status = status_after(board.status, event)
        if isinstance(event, Progress) and event.preview_jpeg:
            board.preview = event.preview_jpeg
        if isinstance(event, Finished | Failed | Cancelled) and not board.final:
            board.final = True
            self._pacer.spawn(self._deliver(board, event), name=f"discord-deliver-{job.id}")
        self._pacer.changed(board, urgent=board.status.state is not before)

    async def _edit(self, board: _Board) -> Hashable:
        """The pacer's edit: show the board's state; :class:`Lost` or :class:`Blocked` if not."""
        assert board.message_id is not None
        key = board.wanted()
        preview = board.status.preview
        embed = embeds.status_embed(board.job, board.status, self._now())
        changes: dict[str, Any] = {"embed": embed}
        if board.status.state.terminal:
            changes |= {"view": None, "attachments": []}
        else:
            changes["view"] = status_view(board.job.id)
            if preview and preview != board.preview_sent and board.preview:
                changes["attachments"] = [embeds.preview_file(board.preview)]
        channel = self._client.get_partial_messageable(board.channel_id)
        try:
            await channel.get_partial_message(board.message_id).edit(**changes)
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
        """Post the result of a finished job (and say it is out), or say that it failed where
        no status shows it."""
        if isinstance(event, Finished):
            await self._client.until_ready()  # a result replayed at start waits for the login
            if await self._as_entry(event) or await self._post_result(board, event):
                await self._service.mark_delivered(event.job.id)
        if isinstance(event, Failed) and (board.message_id is None or board.lost):
            text = replies.failed_without_status(board.job, event.message, MARKDOWN)
            await self._send(board, {"content": text})

    async def _as_entry(self, event: Finished) -> bool:
        """A challenge painting is posted as an entry instead of as a plain result."""
        if event.job.challenge_id is None or self._deliver_entry is None:
            return False
        try:
            return await self._deliver_entry(event)
        except Exception:
            log.exception("job %s: posting the challenge entry failed", event.job.id)
            return False

    async def _post_result(self, board: _Board, event: Finished) -> bool:
        """Post the result in its channel, else by direct message. True once posted, or once
        both refused it for good (it is never posted then, and not tried at every start);
        False when Discord could not be reached: it is posted again after a restart."""
        job = event.job
        limit = self._client.upload_limit(int(job.chat_id))
        data, filename = await embeds.encode_for_upload(
            event.result_png, limit, job.id, self._client.sandbox
        )
        reference = None
        if board.message_id is not None and not board.lost:
            reference = discord.MessageReference(
                message_id=board.message_id, channel_id=board.channel_id, fail_if_not_exists=False
            )

        def message() -> dict[str, Any]:
            return {
                "content": replies.ready(job, MARKDOWN),
                "embed": embeds.result_embed(job, event.seconds, filename),
                "file": discord.File(io.BytesIO(data), filename=filename),
                "view": result_view(job, timelapse=event.timelapse),
                "reference": reference,
            }

        posted = await self._send(board, message)
        if posted is Posted.SENT:
            log.info("job %s: result delivered to channel %s", job.id, job.chat_id)
            return True
        # The channel refused (permissions changed, channel deleted): try a direct message.
        client = self._client
        try:
            user = client.get_user(int(job.user_id)) or await client.fetch_user(int(job.user_id))
            kwargs = message()
            kwargs.pop("reference")
            await user.send(**kwargs)
            log.info("job %s: result delivered by direct message", job.id)
            return True
        except (discord.Forbidden, discord.NotFound) as error:
            if posted is Posted.REFUSED:
                log.error("job %s: the channel and the member refuse the result: %r", job.id, error)
                return True
            log.error("job %s: result not delivered; posted after a restart: %r", job.id, error)
        except DISCORD_TROUBLE as error:
            log.error("job %s: result not delivered; posted after a restart: %r", job.id, error)
        return False

    async def _send(
        self, board: _Board, message: dict[str, Any] | Callable[[], dict[str, Any]]
    ) -> Posted:
        """Post in the job's channel, retrying transient errors."""
        job = board.job
        channel = self._client.messageable(int(job.chat_id))
        for attempt, delay in enumerate((0.0, *self._retry_delays)):
            if delay:
                await self._pacer.pause(delay)
            kwargs = message() if callable(message) else dict(message)
            try:
                await channel.send(**kwargs)
                return Posted.SENT
            except (discord.Forbidden, discord.NotFound) as error:
                log.warning(
                    "job %s: channel %s refused the message: %s", job.id, job.chat_id, error
                )
                return Posted.REFUSED
            except DISCORD_TROUBLE as error:
                log.warning("job %s: posting failed (attempt %d): %r", job.id, attempt + 1, error)
        return Posted.GAVE_UP

    # -- what the buttons do -------------------------------------------------------------------

    async def cancel(self, interaction: discord.Interaction[Any], job_id: str) -> None:
        by = str(interaction.user.id)
        moderator = self._client.is_moderator(interaction)
        job = await self._service.cancel(job_id, user_id=by, moderator=moderator)
        await self._client.reply(interaction, replies.cancelling(job, by))

    async def delete(self, interaction: discord.Interaction[Any], job_id: str) -> None:
        # Acknowledge first: deleting the message is a call to Discord, which may be slow.
        await interaction.response.defer(ephemeral=True, thinking=True)
        by = str(interaction.user.id)
        moderator = self._client.is_moderator(interaction)
        await self._service.delete_result(job_id, user_id=by, moderator=moderator)
        if interaction.message is not None:
            with contextlib.suppress(discord.NotFound):
                await interaction.message.delete()
        await self._client.reply(interaction, replies.DELETED)

    async def reroll(self, interaction: discord.Interaction[Any], job_id: str, key: str) -> None:
        self._client.guard(interaction)
        await interaction.response.defer(ephemeral=True, thinking=True)
        source = self._service.get(job_id)
        # The owner or a moderator, on a finished painting: the service refuses anyone else.
        job = await self._service.reroll(
            job_id,
            user_id=str(interaction.user.id),
            user_name=interaction.user.display_name,
            change=key,
            platform=PLATFORM,
            moderator=self._client.is_moderator(interaction),
        )
        await self.announce(interaction, job, replies.rerolling(reroll(key), source.options))


# ----------------------------------------------------------------------------------------------
# The buttons


class CancelButton(IdButton, action="cancel"):
    LABEL, EMOJI = "Cancel", "✖️"

    async def pressed(self, interaction: discord.Interaction[Any], client: AtelierDiscord) -> None:
        await client.feature(StatusMessages).cancel(interaction, self.carried)


class RerollButton(IdButton, action="reroll", kinds=[way.key for way in REROLLS]):
    STYLE = discord.ButtonStyle.primary

    def __init__(self, job_id: str, change: str, options: PaintOptions = DEFAULTS) -> None:
        way = reroll(change)
        super().__init__(job_id, change, label=way.label(options), emoji=way.emoji)
        self.change = change

    async def pressed(self, interaction: discord.Interaction[Any], client: AtelierDiscord) -> None:
        await client.feature(StatusMessages).reroll(interaction, self.carried, self.change)


class DeleteButton(IdButton, action="delete"):
    LABEL, EMOJI, STYLE = "Delete", "🗑️", discord.ButtonStyle.danger

    async def pressed(self, interaction: discord.Interaction[Any], client: AtelierDiscord) -> None:
        await client.feature(StatusMessages).delete(interaction, self.carried)


def status_view(job_id: str) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(CancelButton(job_id))
    return view


def result_view(job: Job, *, timelapse: bool = False) -> discord.ui.View:
    """The re-rolls, Timelapse (when one was made) and Delete, under a result."""
    view = discord.ui.View(timeout=None)
    for way in rerolls_for(job.options):
        view.add_item(RerollButton(job.id, way.key, job.options))
    if timelapse:
        view.add_item(TimelapseButton(job.id))
    view.add_item(DeleteButton(job.id))
    return view
