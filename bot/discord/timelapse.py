"""The Timelapse button under a finished painting on Discord, and what pressing it does.

The button (``atelier:timelapse:<job id>``, shown when the engine made a timelapse) carries the
job id only, so it still works after a restart. Anyone in the channel may press it: the
timelapse goes from the photo to the painting that the result message above it already shows
(see :mod:`bot.timelapses`). A press posts the animated WebP (Discord plays it inline) in the
channel, under the press, if it fits the upload limit Discord reports for this interaction;
otherwise, or when the timelapse is past the retention period, was deleted or was posted in
this channel in the last minutes (:class:`bot.timelapses.Showings`), only the member who
pressed is told why.
"""

from __future__ import annotations

import io
from typing import Any

import discord

from bot import replies
from bot.discord.buttons import IdButton
from bot.discord.client import PLATFORM, AtelierDiscord, Feature
from bot.discord.embeds import MARKDOWN
from bot.service import PaintService


class Timelapses(Feature):
    """Posts timelapses when their button is pressed."""

    def __init__(self, client: AtelierDiscord, service: PaintService) -> None:
        self._client = client
        self._service = service
        client.add_feature(self)
        client.add_dynamic_items(TimelapseButton)

    async def post(self, interaction: discord.Interaction[Any], job_id: str) -> None:
        """Post the painting's timelapse in the channel, or tell the presser why not."""
        self._client.guard(interaction)
        async with self._service.posting_timelapse(
            job_id,
            "webp",
            platform=PLATFORM,
            chat_id=str(interaction.channel_id),
            limit=interaction.filesize_limit,
        ) as data:
            job = self._service.get(job_id)
            # The upload may take longer than the 3 s an answer has; the checks above did not.
            await interaction.response.defer(thinking=True)
            await interaction.followup.send(
                replies.timelapse_caption(job, MARKDOWN),
                file=discord.File(io.BytesIO(data), filename=f"atelier-{job.id}-timelapse.webp"),
            )


class TimelapseButton(IdButton, action="timelapse"):
    LABEL, EMOJI = replies.TIMELAPSE_LABEL, replies.TIMELAPSE_EMOJI

    async def pressed(self, interaction: discord.Interaction[Any], client: AtelierDiscord) -> None:
        await client.feature(Timelapses).post(interaction, self.carried)
