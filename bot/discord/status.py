"""Status messages on Discord: posted for each new job, kept in step with it, and Cancel.

The status message is an ordinary channel message edited with the bot's own token (never the
15-minute interaction token), so long waits still report. Service events only update a job's
*board* (what its message should say, :class:`~bot.replies.StatusState`); the one
:class:`~bot.pacing.Pacer` decides when to edit. A job's outcome goes to
:class:`~bot.discord.results.Results` (the result, its buttons, a failure no status shows),
which this feature makes. Discord errors while editing are logged and retried or worked around,
never raised into the service.

The Cancel button carries a job id only (``atelier:cancel:<job id>``), so it keeps working after
a restart; the state it acts on lives in the store.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Hashable
from dataclasses import dataclass, replace
from typing import Any

import discord

from bot import replies
from bot.discord import embeds
from bot.discord.buttons import IdButton
from bot.discord.client import DISCORD_TROUBLE, PLATFORM, AtelierDiscord, Feature
from bot.discord.results import RETRY_DELAYS, EntryDelivery, Results
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
from bot.pacing import Blocked, Clock, Lost, Paced, Pacer, Sleep
from bot.replies import StatusState, status_after
from bot.service import PaintService

log = logging.getLogger(__name__)


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

    def showing(self) -> MessageRef | None:
        """Where the status message is while it still shows (None: never posted, or lost)."""
        if self.message_id is None or self.lost:
            return None
        return MessageRef(self.channel_id, self.message_id)


class StatusMessages(Feature):
    """Keeps every Discord job's status message in step with the service; hands each job's
    outcome to :class:`~bot.discord.results.Results`."""

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
        self._now = wall_clock
        self._pacer: Pacer[_Board] = Pacer(
            self._edit, clock=clock, sleep=sleep, interval=edit_interval
        )
        client.add_feature(self)
        client.add_dynamic_items(CancelButton)
        # The results feature: it announces re-rolls here, and backs off through our pacer
        # (which then knows that it waits: see wait_idle).
        self._results = Results(
            client,
            service,
            announce=self.announce,
            pause=self._pacer.pause,
            deliver_entry=deliver_entry,
            retry_delays=retry_delays,
        )
        # Registered now rather than at login, so jobs recovered at start reach us. This
        # feature (through Results) posts Discord's results and says when each is out
        # (mark_delivered).
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
            delivery = self._results.deliver(event, board.showing)
            self._pacer.spawn(delivery, name=f"discord-deliver-{job.id}")
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

    # -- what the buttons do -------------------------------------------------------------------

    async def cancel(self, interaction: discord.Interaction[Any], job_id: str) -> None:
        by = str(interaction.user.id)
        moderator = self._client.is_moderator(interaction)
        job = await self._service.cancel(job_id, user_id=by, moderator=moderator)
        await self._client.reply(interaction, replies.cancelling(job, by))


# ----------------------------------------------------------------------------------------------
# The buttons


class CancelButton(IdButton, action="cancel"):
    LABEL, EMOJI = "Cancel", "✖️"

    async def pressed(self, interaction: discord.Interaction[Any], client: AtelierDiscord) -> None:
        await client.feature(StatusMessages).cancel(interaction, self.carried)


def status_view(job_id: str) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(CancelButton(job_id))
    return view
