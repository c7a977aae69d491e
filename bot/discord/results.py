"""Results on Discord: the finished painting posted for the member, the buttons under it, and
what the re-rolls and Delete do.

The result is a new message that mentions the member and replies to the job's status message
while that still shows (a direct message if the channel refuses it), with the re-roll buttons
of :data:`bot.options.REROLLS`, **Timelapse** (:mod:`bot.discord.timelapse`) and Delete; a
challenge painting goes to its challenge instead (``deliver_entry``). A failure whose status
message is gone is told in a new message. Transient Discord errors are retried; a result is
marked delivered only once it is out (or refused for good), so one not posted is posted again
after a restart. :class:`~bot.discord.status.StatusMessages` makes this feature and hands it
each job's outcome; the buttons carry a job id only (``atelier:reroll:<change>:<job id>``,
``atelier:delete:<job id>``).
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Awaitable, Callable
from enum import Enum
from typing import Any, Final

import discord

from bot import replies
from bot.discord import embeds
from bot.discord.buttons import IdButton
from bot.discord.client import DISCORD_TROUBLE, PLATFORM, AtelierDiscord, Feature
from bot.discord.embeds import MARKDOWN
from bot.discord.timelapse import TimelapseButton
from bot.jobs import Failed, Finished, Job, JobEvent, MessageRef
from bot.options import DEFAULTS, REROLLS, reroll, rerolls_for
from bot.service import PaintService
from engine.protocol import PaintOptions

log = logging.getLogger(__name__)

# Seconds between attempts to post a result after a Discord error (discord.py has already
# retried rate limits and 5xx answers itself by then).
RETRY_DELAYS: Final = (2.0, 5.0, 15.0, 30.0, 60.0)
# Posts a finished challenge painting as an entry (bot.discord.challenges); False: not one.
EntryDelivery = Callable[[Finished], Awaitable[bool]]
# Posts the status message of a new job and tells the member where it is (StatusMessages).
Announce = Callable[[discord.Interaction[Any], Job, str], Awaitable[None]]
# Backs off before trying Discord again (the status messages' pacer, which knows it waits).
Pause = Callable[[float], Awaitable[None]]
# Where the job's status message is while it still shows; None: never posted, or lost.
StatusShown = Callable[[], MessageRef | None]


class Posted(Enum):
    """How posting in a channel went."""

    SENT = "sent"
    REFUSED = "refused"  # for good: no permission, the channel is gone
    GAVE_UP = "gave up"  # Discord could not be reached, past the retries


class Results(Feature):
    """Posts Discord's results (and failures no status shows); re-rolls and deletes them."""

    def __init__(
        self,
        client: AtelierDiscord,
        service: PaintService,
        *,
        announce: Announce,
        pause: Pause,
        deliver_entry: EntryDelivery | None = None,
        retry_delays: tuple[float, ...] = RETRY_DELAYS,
    ) -> None:
        self._client = client
        self._service = service
        self._announce = announce
        self._pause = pause
        self._deliver_entry = deliver_entry
        self._retry_delays = retry_delays
        client.add_feature(self)
        client.add_dynamic_items(RerollButton, DeleteButton)

    # -- outcomes ------------------------------------------------------------------------------

    async def deliver(self, event: JobEvent, status: StatusShown) -> None:
        """Post the result of a finished job (and say it is out), or say that it failed where
        no status shows it."""
        if isinstance(event, Finished):
            await self._client.until_ready()  # a result replayed at start waits for the login
            if await self._as_entry(event) or await self._post_result(event, status):
                await self._service.mark_delivered(event.job.id)
        if isinstance(event, Failed) and status() is None:
            text = replies.failed_without_status(event.job, event.message, MARKDOWN)
            await self._send(event.job, {"content": text})

    async def _as_entry(self, event: Finished) -> bool:
        """A challenge painting is posted as an entry instead of as a plain result."""
        if event.job.challenge_id is None or self._deliver_entry is None:
            return False
        try:
            return await self._deliver_entry(event)
        except Exception:
            log.exception("job %s: posting the challenge entry failed", event.job.id)
            return False

    async def _post_result(self, event: Finished, status: StatusShown) -> bool:
        """Post the result in its channel, else by direct message. True once posted, or once
        both refused it for good (it is never posted then, and not tried at every start);
        False when Discord could not be reached: it is posted again after a restart."""
        job = event.job
        limit = self._client.upload_limit(int(job.chat_id))
        data, filename = await embeds.encode_for_upload(
            event.result_png, limit, job.id, self._client.sandbox
        )
        reference = None
        shown = status()
        if shown is not None:
            reference = discord.MessageReference(
                message_id=shown.message_id, channel_id=shown.chat_id, fail_if_not_exists=False
            )

        def message() -> dict[str, Any]:
            return {
                "content": replies.ready(job, MARKDOWN),
                "embed": embeds.result_embed(job, event.seconds, filename),
                "file": discord.File(io.BytesIO(data), filename=filename),
                "view": result_view(job, timelapse=event.timelapse),
                "reference": reference,
            }

        posted = await self._send(job, message)
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
        self, job: Job, message: dict[str, Any] | Callable[[], dict[str, Any]]
    ) -> Posted:
        """Post in the job's channel, retrying transient errors."""
        channel = self._client.messageable(int(job.chat_id))
        for attempt, delay in enumerate((0.0, *self._retry_delays)):
            if delay:
                await self._pause(delay)
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
        await self._announce(interaction, job, replies.rerolling(reroll(key), source.options))


# ----------------------------------------------------------------------------------------------
# The buttons


class RerollButton(IdButton, action="reroll", kinds=[way.key for way in REROLLS]):
    STYLE = discord.ButtonStyle.primary

    def __init__(self, job_id: str, change: str, options: PaintOptions = DEFAULTS) -> None:
        way = reroll(change)
        super().__init__(job_id, change, label=way.label(options), emoji=way.emoji)
        self.change = change

    async def pressed(self, interaction: discord.Interaction[Any], client: AtelierDiscord) -> None:
        await client.feature(Results).reroll(interaction, self.carried, self.change)


class DeleteButton(IdButton, action="delete"):
    LABEL, EMOJI, STYLE = "Delete", "🗑️", discord.ButtonStyle.danger

    async def pressed(self, interaction: discord.Interaction[Any], client: AtelierDiscord) -> None:
        await client.feature(Results).delete(interaction, self.carried)


def result_view(job: Job, *, timelapse: bool = False) -> discord.ui.View:
    """The re-rolls, Timelapse (when one was made) and Delete, under a result."""
    view = discord.ui.View(timeout=None)
    for way in rerolls_for(job.options):
        view.add_item(RerollButton(job.id, way.key, job.options))
    if timelapse:
        view.add_item(TimelapseButton(job.id))
    view.add_item(DeleteButton(job.id))
    return view
