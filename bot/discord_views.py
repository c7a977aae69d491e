"""What the Discord adapter shows: embeds, persistent buttons and upload encoding.

Everything here is about how a job looks on Discord; :mod:`bot.discord_app` decides when.
Buttons are :class:`discord.ui.DynamicItem` subclasses whose custom id carries the job id only
(``atelier:<action>:<job id>``), so they keep working after a restart: the state they act on
lives in the store, and the client re-registers the templates in ``setup_hook``.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import discord

from bot.jobs import Job, JobState, QueueOverview
from bot.options import DEFAULTS, REROLLS, reroll, rerolls_for
from engine import images
from engine.protocol import PaintOptions

if TYPE_CHECKING:
    from bot.discord_app import AtelierDiscord

log = logging.getLogger(__name__)

ACCENT: Final = discord.Colour(0xB5651D)  # burnt sienna
DONE_COLOUR: Final = discord.Colour.green()
PROBLEM_COLOUR: Final = discord.Colour.red()
QUIET_COLOUR: Final = discord.Colour.light_grey()
PREVIEW_NAME: Final = "preview.jpg"
ETA_GRANULARITY: Final = 10  # seconds: ETAs are rounded so tiny changes do not cause edits
JOB_ID: Final = r"(?P<job>[A-Za-z0-9_-]{1,40})"


# --------------------------------------------------------------------------------------------
# Small formatting pieces


class Markdown:
    """Discord's markup for :mod:`bot.replies`: bold, escaped names, mentions, timestamps."""

    def strong(self, text: str) -> str:
        return f"**{text}**"

    def quoted(self, text: str) -> str:
        return f"**{discord.utils.escape_markdown(text)}**"


MARKDOWN: Final = Markdown()


def describe_options(options: PaintOptions) -> str:
    colours = "your photo's colours" if options.keep_colors else "the painting's colours"
    return (
        f"strength {options.strength} · {options.quality} quality · "
        f"{options.brush} brush · {colours}"
    )


def relative_time(seconds_from_now: float, now: float) -> str:
    """A Discord timestamp that every member sees in their own words ("in 3 minutes")."""
    moment = math.ceil((now + max(0.0, seconds_from_now)) / ETA_GRANULARITY) * ETA_GRANULARITY
    return f"<t:{moment}:R>"


def progress_bar(percent: float, width: int = 12) -> str:
    filled = max(0, min(width, round(width * percent / 100)))
    return "▰" * filled + "▱" * (width - filled)


def duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, rest = divmod(seconds, 60)
    return (
        f"{minutes} min {rest:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"
    )


def inputs_line(job: Job) -> str:
    return f"📷 {_clip(job.photo_name)}  ×  🖼️ {_clip(job.painting_name)}"


def _and(items: Iterable[str]) -> str:
    """``a, b and c``."""
    *rest, last = items
    return f"{', '.join(rest)} and {last}" if rest else last


def _clip(name: str, limit: int = 60) -> str:
    name = discord.utils.escape_markdown(name)
    return name if len(name) <= limit else name[: limit - 1] + "…"


# --------------------------------------------------------------------------------------------
# The status message


@dataclass(frozen=True)
class StatusState:
    """What the status message of one job should say. Comparing two tells whether to edit."""

    state: JobState
    position: int | None = None
    eta: float | None = None  # seconds until done when the state was recorded
    percent: float = 0.0
    scale: int = 0
    scales: int = 0
    note: str | None = None
    preview: int = 0  # how many previews were received so far (0 = none)
    message: str | None = None  # failure message
    by_user: str | None = None  # who cancelled
    seconds: float | None = None  # painting time when done


def status_embed(job: Job, status: StatusState, now: float) -> discord.Embed:
    """The embed of the status message; ``now`` is unix time (for relative timestamps)."""
    owner = f"<@{job.user_id}>"
    if status.state is JobState.QUEUED:
        lines = [f"{owner}, your painting is **#{status.position or '?'}** in the queue."]
        if status.eta is not None:
            lines.append(f"Expected to be ready {relative_time(status.eta, now)}.")
        embed = discord.Embed(title="🎨 Waiting in the queue", colour=ACCENT)
    elif status.state is JobState.RUNNING:
        percent = round(status.percent)
        lines = [f"{progress_bar(status.percent)} **{percent}%**"]
        if status.scales:
            lines.append(f"Scale {status.scale + 1} of {status.scales}")
        if status.eta is not None:
            lines.append(f"Ready {relative_time(status.eta, now)}")
        if status.note:
            lines.append(f"_{discord.utils.escape_markdown(status.note)}_")
        embed = discord.Embed(title=f"🖌️ Painting… {percent}%", colour=ACCENT)
        if status.preview:
            embed.set_image(url=f"attachment://{PREVIEW_NAME}")
    elif status.state is JobState.DONE:
        took = f" in {duration(status.seconds)}" if status.seconds is not None else ""
        lines = [f"Finished{took}. The painting is below, {owner}."]
        embed = discord.Embed(title="✅ Done", colour=DONE_COLOUR)
    elif status.state is JobState.CANCELLED:
        who = f"<@{status.by_user}>" if status.by_user and status.by_user != job.user_id else owner
        lines = [f"Cancelled by {who}."]
        embed = discord.Embed(title="✖️ Cancelled", colour=QUIET_COLOUR)
    else:
        lines = [status.message or "Something went wrong on my side.", "", "Try again with /paint."]
        embed = discord.Embed(title="⚠️ This painting didn't work out", colour=PROBLEM_COLOUR)
    embed.description = "\n".join(lines)
    embed.add_field(name="Inputs", value=inputs_line(job), inline=False)
    embed.set_footer(text=f"{describe_options(job.options)} · job {job.id}")
    return embed


def status_key(job: Job, status: StatusState, now: float) -> tuple[Any, ...]:
    """What a member would see; an edit is only worth making when this changes."""
    embed = status_embed(job, status, now)
    return (embed.title, embed.description, status.preview, status.state.terminal)


# --------------------------------------------------------------------------------------------
# Result, queue and help


def result_embed(job: Job, seconds: float, filename: str) -> discord.Embed:
    embed = discord.Embed(title="🖼️ Your painting is ready", colour=DONE_COLOUR)
    embed.description = inputs_line(job)
    embed.add_field(name="Settings", value=describe_options(job.options), inline=False)
    embed.add_field(name="Painted in", value=duration(seconds), inline=True)
    if filename.endswith(".jpg"):
        embed.add_field(name="Note", value="Sent as a JPEG to fit Discord's upload limit.")
    embed.set_image(url=f"attachment://{filename}")
    labels = "/".join(way.label(job.options) for way in rerolls_for(job.options))
    embed.set_footer(text=f"job {job.id} · {labels} paint it again")
    return embed


def queue_embed(overview: QueueOverview, user_id: str, chat_id: str, now: float) -> discord.Embed:
    """The queue as one member sees it: names only of members in the same chat."""

    def who(job: Job) -> str:
        if job.user_id == user_id:
            return "you"
        if job.chat_id == chat_id:
            return _clip(job.user_name, 40)
        return "a member elsewhere"

    embed = discord.Embed(title="🎨 The queue", colour=ACCENT)
    lines: list[str] = []
    running = overview.running
    if running is not None:
        percent = round(overview.running_percent or 0)
        lines.append(f"**Painting now:** {who(running)} · {percent}%")
    else:
        lines.append("**Painting now:** nothing; the easel is free.")
    if overview.waiting:
        lines.append("")
        lines.append(f"**Waiting ({len(overview.waiting)}):**")
        for position, job in enumerate(overview.waiting[:10], start=1):
            eta = overview.etas.get(job.id)
            when = f" · ready {relative_time(eta, now)}" if eta is not None else ""
            lines.append(f"{position}. {who(job)}{when}")
        if len(overview.waiting) > 10:
            lines.append(f"…and {len(overview.waiting) - 10} more")
    else:
        lines.append("Nobody is waiting.")
    positions = [i for i, job in enumerate(overview.waiting, start=1) if job.user_id == user_id]
    if positions:
        lines.append("")
        lines.append(f"Your position: **#{positions[0]}**.")
    elif running is None or running.user_id != user_id:
        lines.append("")
        lines.append("You have nothing in the queue. Start with /paint.")
    embed.description = "\n".join(lines)
    return embed


def help_embed() -> discord.Embed:
    embed = discord.Embed(
        title="🎨 Atelier paints your photo in the style of a painting", colour=ACCENT
    )
    embed.description = (
        "Attach a **photo** and a **painting**; I repaint the photo with the painting's "
        "brushwork and colours (neural style transfer, Gatys et al.).\n\n"
        "**Example**\n"
        "`/paint photo:` *your photo* `painting:` *a painting* `strength: 7 quality: standard`"
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
            "/queue: what is painting and who is waiting\n"
            "/cancel: stop your painting\n"
            "/help: this message"
        ),
        inline=False,
    )
    embed.add_field(
        name="Tips",
        value=(
            "PNG, JPEG, WebP, BMP, GIF or TIFF. One painting per member at a time. "
            f"Under a result, {_and(f'**{way.label(DEFAULTS)}**' for way in REROLLS)} "
            "paint it again."
        ),
        inline=False,
    )
    return embed


# --------------------------------------------------------------------------------------------
# Persistent buttons


def _client(interaction: discord.Interaction[Any]) -> AtelierDiscord:
    client: AtelierDiscord = interaction.client
    return client


class CancelButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]], template=rf"atelier:cancel:{JOB_ID}"
):
    def __init__(self, job_id: str) -> None:
        super().__init__(
            discord.ui.Button(
                label="Cancel",
                emoji="✖️",
                style=discord.ButtonStyle.secondary,
                custom_id=f"atelier:cancel:{job_id}",
            )
        )
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction[Any],
        item: discord.ui.Item[Any],
        match: Any,
    ) -> CancelButton:
        return cls(match["job"])

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        await _client(interaction).on_cancel_button(interaction, self.job_id)


class RerollButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=rf"atelier:reroll:(?P<change>{'|'.join(r.key for r in REROLLS)}):{JOB_ID}",
):
    def __init__(self, job_id: str, change: str, options: PaintOptions = DEFAULTS) -> None:
        way = reroll(change)
        super().__init__(
            discord.ui.Button(
                label=way.label(options),
                emoji=way.emoji,
                style=discord.ButtonStyle.primary,
                custom_id=f"atelier:reroll:{change}:{job_id}",
            )
        )
        self.job_id = job_id
        self.change = change

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction[Any],
        item: discord.ui.Item[Any],
        match: Any,
    ) -> RerollButton:
        return cls(match["job"], match["change"])

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        await _client(interaction).on_reroll_button(interaction, self.job_id, self.change)


class DeleteButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]], template=rf"atelier:delete:{JOB_ID}"
):
    def __init__(self, job_id: str) -> None:
        super().__init__(
            discord.ui.Button(
                label="Delete",
                emoji="🗑️",
                style=discord.ButtonStyle.danger,
                custom_id=f"atelier:delete:{job_id}",
            )
        )
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction[Any],
        item: discord.ui.Item[Any],
        match: Any,
    ) -> DeleteButton:
        return cls(match["job"])

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        await _client(interaction).on_delete_button(interaction, self.job_id)


BUTTONS: Final = (CancelButton, RerollButton, DeleteButton)


def status_view(job_id: str) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(CancelButton(job_id))
    return view


def result_view(job: Job) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    for way in rerolls_for(job.options):
        view.add_item(RerollButton(job.id, way.key, job.options))
    view.add_item(DeleteButton(job.id))
    return view


# --------------------------------------------------------------------------------------------
# Uploads


def encode_for_upload(png: bytes, limit: int, job_id: str) -> tuple[bytes, str]:
    """The result as ``(data, filename)``: the PNG if it fits ``limit`` bytes, else a JPEG.

    Runs Pillow, so call it in a thread.
    """
    if len(png) <= limit:
        return png, f"atelier-{job_id}.png"
    img = images.load_image(png, role="painting", max_bytes=len(png) + 1)
    data, kind = images.encode_for_budget(img, max(limit, images.MIN_BUDGET_BYTES))
    return data, f"atelier-{job_id}.{'png' if kind == 'png' else 'jpg'}"


def preview_file(preview: bytes) -> discord.File:
    return discord.File(io.BytesIO(preview), filename=PREVIEW_NAME)
