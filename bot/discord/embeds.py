"""How things look on Discord: the markup of :mod:`bot.replies`, embeds, uploads.

The sentences are :mod:`bot.replies`; this module only marks them up (bold, escaped names,
mentions, timestamps every member reads in their own time zone) and lays them out in embeds.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from typing import Any, Final

import discord

from bot import replies
from bot.jobs import Job, JobState, QueueOverview
from bot.replies import StatusState
from bot.sandbox import Sandbox
from engine import images

log = logging.getLogger(__name__)

ACCENT: Final = discord.Colour(0xB5651D)  # burnt sienna
DONE_COLOUR: Final = discord.Colour.green()
PROBLEM_COLOUR: Final = discord.Colour.red()
QUIET_COLOUR: Final = discord.Colour.light_grey()
PREVIEW_NAME: Final = "preview.jpg"
ETA_GRANULARITY: Final = 10  # seconds: ETAs are rounded so tiny changes do not cause edits
PLATFORM: Final = "discord"


# --------------------------------------------------------------------------------------------
# Markup


@dataclass(frozen=True)
class Markdown:
    """Discord's markup for :mod:`bot.replies`: bold, escaped names, mentions, and timestamps
    that every member sees in their own time zone and words ("in 3 minutes")."""

    now: float = 0.0  # unix seconds

    def strong(self, text: str) -> str:
        return f"**{text}**"

    def quoted(self, text: str) -> str:
        return f"**{discord.utils.escape_markdown(text)}**"

    def name(self, text: str, limit: int = 60) -> str:
        return replies.clip(discord.utils.escape_markdown(text), limit)

    def emphasis(self, text: str) -> str:
        return f"_{discord.utils.escape_markdown(text)}_"

    def member(self, user_id: str, name: str | None) -> str | None:
        return f"<@{user_id}>"

    def moment(self, seconds_from_now: float) -> str:
        return f"<t:{replies.rounded_moment(seconds_from_now, self.now, ETA_GRANULARITY)}:R>"

    def date(self, moment: float) -> str:
        return f"<t:{int(moment)}:f> (<t:{int(moment)}:R>)"

    def link(self, text: str, url: str | None) -> str:
        return f"[{text}]({url})" if url else text


MARKDOWN: Final = Markdown()


DESCRIPTION_LIMIT: Final = 4096  # characters in an embed's description
TITLE_LIMIT: Final = 256


def text_embed(text: replies.Text, colour: discord.Colour) -> discord.Embed:
    """``text`` as an embed; a text too long for one is cut short, with a note."""
    return discord.Embed(
        title=replies.clip(text.headline, TITLE_LIMIT),
        description=replies.fit("\n".join(text.lines), DESCRIPTION_LIMIT),
        colour=colour,
    )


# --------------------------------------------------------------------------------------------
# The status message

STATUS_COLOURS: Final = {
    JobState.QUEUED: ACCENT,
    JobState.RUNNING: ACCENT,
    JobState.DONE: DONE_COLOUR,
    JobState.CANCELLED: QUIET_COLOUR,
    JobState.FAILED: PROBLEM_COLOUR,
}


def status_embed(job: Job, status: StatusState, now: float) -> discord.Embed:
    """The embed of the status message; ``now`` is unix time (for relative timestamps)."""
    markup = Markdown(now)
    embed = text_embed(replies.status(job, status, markup), STATUS_COLOURS[status.state])
    if status.state is JobState.RUNNING and status.preview:
        embed.set_image(url=f"attachment://{PREVIEW_NAME}")
    embed.add_field(name="Inputs", value=replies.inputs(job, markup), inline=False)
    embed.set_footer(text=f"{replies.summary(job.options, job.blended_with)} · job {job.id}")
    return embed


def status_key(job: Job, status: StatusState, now: float) -> tuple[Any, ...]:
    """What a member would see; an edit is only worth making when this changes."""
    text = replies.status(job, status, Markdown(now))
    return (text, status.preview, status.state.terminal)


# --------------------------------------------------------------------------------------------
# Result, queue and help


def result_embed(job: Job, seconds: float, filename: str) -> discord.Embed:
    embed = discord.Embed(title=replies.RESULT_TITLE, colour=DONE_COLOUR)
    embed.description = replies.inputs(job, MARKDOWN)
    embed.add_field(
        name="Settings", value=replies.summary(job.options, job.blended_with), inline=False
    )
    embed.add_field(name="Painted in", value=replies.elapsed(seconds), inline=True)
    if filename.endswith(".jpg"):
        embed.add_field(name="Note", value=replies.SENT_AS_JPEG)
    embed.set_image(url=f"attachment://{filename}")
    embed.set_footer(text=f"job {job.id} · {replies.rerolls_hint(job.options)}")
    return embed


def queue_embed(overview: QueueOverview, user_id: str, chat_id: str, now: float) -> discord.Embed:
    """The queue as one member sees it: names only of members in the same chat."""
    text = replies.queue(
        overview, platform=PLATFORM, user_id=user_id, chat_id=chat_id, markup=Markdown(now)
    )
    return text_embed(text, ACCENT)


def help_embed() -> discord.Embed:
    embed = discord.Embed(
        title="🎨 Atelier paints your photo in the style of a painting", colour=ACCENT
    )
    embed.description = (
        "Attach a **photo** and a **painting**; I repaint the photo with the painting's "
        "brushwork and colours (neural style transfer, Gatys et al.).\n\n"
        "**Example**\n"
        "`/paint photo:` *your photo* `painting:` *a painting* `strength: 7 quality: standard`\n"
        "or, with one of the server's saved styles: `/paint photo:` *your photo* "
        "`style: starry-night`"
    )
    embed.add_field(
        name="Options",
        value=(
            "**strength** 1-10: how much of the painting's style (default 5)\n"
            "**quality** draft (fast), standard or high (slow)\n"
            "**keep_colors** keep your photo's colours, take only the brushwork\n"
            "**brush** small, medium or large strokes"
        ),
        inline=False,
    )
    embed.add_field(
        name="Other commands",
        value=(
            "/style list: the server's saved styles (organisers: /style add, /style remove)\n"
            "Paint with Atelier (a message's Apps menu): paint the image in that message\n"
            "/queue: what is painting and who is waiting\n"
            "/cancel: stop your painting\n"
            "/help: this message"
        ),
        inline=False,
    )
    embed.add_field(
        name="Tips",
        value=(
            f"{replies.ACCEPTED} One painting per member at a time. "
            f"{replies.rerolls_help(MARKDOWN)}"
        ),
        inline=False,
    )
    return embed


# --------------------------------------------------------------------------------------------
# Uploads


async def encode_for_upload(
    png: bytes, limit: int, job_id: str, sandbox: Sandbox
) -> tuple[bytes, str]:
    """The result as ``(data, filename)``: the PNG if it fits ``limit`` bytes, else re-encoded
    to fit (a JPEG, at worst downscaled) in the ``sandbox``: never decoded in this process."""
    if len(png) <= limit:
        return png, f"atelier-{job_id}.png"
    data, kind = await sandbox.fit(png, max(limit, images.MIN_BUDGET_BYTES))
    return data, f"atelier-{job_id}.{'png' if kind == 'png' else 'jpg'}"


def preview_file(preview: bytes) -> discord.File:
    return discord.File(io.BytesIO(preview), filename=PREVIEW_NAME)
