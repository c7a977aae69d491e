"""A simulated Discord (simcord) around the real client, the real service and challenges.

simcord runs discord.py unmodified against an in-memory Discord: slash commands with
attachments, button clicks, message edits, uploads, permissions, injected HTTP errors and
virtual time. The paint service runs on the fake engine, so a test decides when a painting
progresses or finishes.

Two clocks move together here: the :class:`~tests.fakes.FakeTime` of the service, the pacer
and the challenges, and simcord's virtual time (interaction tokens, message timestamps).
:meth:`DiscordSim.advance` moves both.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import discord
import pytest
import simcord

from bot.challenges import Challenges
from bot.discord import AtelierDiscord, build_client
from bot.discord.status import StatusMessages
from bot.jobs import Failed, Finished, Job, JobEvent
from bot.service import PaintService
from bot.settings import DiscordSettings, Limits, Secret
from bot.store import Store
from bot.styles import StyleLibrary
from tests.fakes import FakeEngine, FakeTime, jpeg_bytes, png_bytes

EDIT_INTERVAL = 4.0
RETRY_DELAYS = (2.0, 5.0)
PAGE_SIZE = 2  # gallery pages: a few paintings make several pages


class EventLog:
    """A second listener on the service: lets a test wait for an event itself, not for time."""

    def __init__(self) -> None:
        self.events: list[JobEvent] = []
        self._changed = asyncio.Event()

    async def __call__(self, event: JobEvent) -> None:
        self.events.append(event)
        self._changed.set()

    async def wait_for(self, kind: type[JobEvent], job_id: str | None = None) -> JobEvent:
        async def seen() -> JobEvent:
            while True:
                for event in self.events:
                    if isinstance(event, kind) and job_id in (None, event.job.id):
                        return event
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(seen(), 10)


@dataclass
class DiscordSim:
    env: simcord.Env
    bot: AtelierDiscord
    service: PaintService
    core: Challenges
    engine: FakeEngine
    time: FakeTime
    store: Store
    data_dir: Path
    limits: Limits
    settings: DiscordSettings
    events: EventLog
    styles: StyleLibrary
    services: list[PaintService] = field(default_factory=list)

    async def settle(self) -> None:
        """Let the bot, the service's event feeds, the status messages and the challenge
        announcements all come to rest."""
        for _ in range(3):
            await self.env.settle()
            await self.service.drained()
            await self.bot.feature(StatusMessages).wait_idle()
            await self.core.drained()
        await self.env.settle()

    async def finish(self, job_id: str, seconds: float = 2.0) -> None:
        """The engine finishes; returns once the bot has dealt with it."""
        self.engine.finish(job_id, seconds=seconds)
        await self.events.wait_for(Finished, job_id)
        await self.settle()

    async def fail(self, job_id: str, code: str, message: str) -> None:
        self.engine.fail(job_id, code, message)
        await self.events.wait_for(Failed, job_id)
        await self.settle()

    async def advance(self, seconds: float) -> None:
        """Move both clocks; sleeps that fall due end; then settle."""
        self.time.advance(seconds)
        await self.env.advance_time(seconds)
        await self.settle()

    async def running_job(self) -> Job:
        job_id = await self.engine.wait_started()
        await self.settle()
        return self.service.get(job_id)

    async def restart(self, *, stopped_for: float = 0.0) -> AtelierDiscord:
        """A bot process restart after ``stopped_for`` seconds: a new service, challenges and
        client over the same store and data folder."""
        await self.core.close()
        await self.service.close()
        self.time.advance(stopped_for)
        await self.env.advance_time(stopped_for)
        self.engine = FakeEngine(auto=False)
        self.service = PaintService(
            store=self.store,
            engine=self.engine,
            limits=self.limits,
            data_dir=self.data_dir,
            clock=self.time,
        )
        self.services.append(self.service)
        self.styles = make_styles(self.store, self.service, self.data_dir, self.time)
        self.core = make_core(
            self.store, self.service, self.data_dir, self.limits, self.time, self.styles
        )
        self.bot = make_bot(self.settings, self.service, self.core, self.time, self.styles)
        self.service.add_listener(self.events)
        await self.service.start()
        await self.core.start()
        await self.env.restart_bot(self.bot)
        await self.settle()
        return self.bot

    def requests(self, method: str, prefix: str = "") -> list[Any]:
        return [
            r for r in self.env.http_requests if r.method == method and r.path.startswith(prefix)
        ]


def make_styles(
    store: Store, service: PaintService, data_dir: Path, time: FakeTime
) -> StyleLibrary:
    return StyleLibrary(store=store, data_dir=data_dir, check=service.check_image, clock=time)


def make_core(
    store: Store,
    service: PaintService,
    data_dir: Path,
    limits: Limits,
    time: FakeTime,
    styles: StyleLibrary,
) -> Challenges:
    return Challenges(
        store=store,
        service=service,
        data_dir=data_dir,
        limits=limits,
        clock=time,
        sleep=time.sleep,
        on_ended=styles.keep,
    )


def make_bot(
    settings: DiscordSettings,
    service: PaintService,
    core: Challenges,
    time: FakeTime,
    styles: StyleLibrary,
) -> AtelierDiscord:
    return build_client(
        settings,
        service,
        core,
        clock=time,
        wall_clock=time,
        edit_interval=EDIT_INTERVAL,
        sleep=time.sleep,
        retry_delays=RETRY_DELAYS,
        page_size=PAGE_SIZE,
        styles=styles,
    )


def discord_settings(**changes: Any) -> DiscordSettings:
    values: dict[str, Any] = {"moderator_role": "Curators", "organiser_role": "Organisers"}
    return DiscordSettings(token=Secret("simulated"), **(values | changes))


def status_embed(message: discord.Message) -> discord.Embed:
    assert message.embeds, f"message {message.id} has no embed"
    return message.embeds[0]


def bot_messages(channel: simcord.ChannelHandle) -> list[discord.Message]:
    """What the bot posted in ``channel`` for everyone (not private replies, not system)."""
    return [
        m for m in channel.history() if m.author.bot and not m.flags.ephemeral and not m.is_system()
    ]


def shown_text(message: discord.Message) -> str:
    """What a message says: its content, or the text blocks of its layout (components v2)."""
    blocks = [c.content for c in message.components if isinstance(c, discord.TextDisplay)]
    return "\n".join([message.content, *blocks]).strip()


def layout_order(message: discord.Message) -> list[str]:
    """The kinds of the top-level blocks of a layout message, in order."""
    return [type(c).__name__ for c in message.components]


def private(result: simcord.InteractionResult) -> str:
    """The text of a reply only the member sees."""
    assert result.acknowledged
    assert result.ephemeral
    assert result.response is not None
    text = result.response.content
    if not text and result.response.embeds:
        text = result.response.embeds[0].description or ""
    return text


def refused(sim: DiscordSim, result: simcord.InteractionResult, kind: type[Exception]) -> str:
    """The member's private reply to a refusal that went through the tree's error handler."""
    simcord.assert_error(sim.env, kind)
    return private(result)


def images() -> dict[str, tuple[str, bytes]]:
    return {"photo": ("cat.png", png_bytes((64, 48))), "painting": ("starry.jpg", jpeg_bytes())}


async def paint(
    sim: DiscordSim, member: simcord.MemberActor, channel: simcord.ChannelHandle, **options: object
) -> simcord.InteractionResult:
    result = await member.slash(channel, "paint", **images(), **options)
    await sim.settle()
    return result


def edits_of(sim: DiscordSim, message: discord.Message) -> list[Any]:
    return sim.requests("PATCH", f"/channels/{message.channel.id}/messages/{message.id}")


def channel_message(channel: simcord.ChannelHandle, message_id: int) -> discord.Message:
    [message] = [m for m in channel.history() if m.id == message_id]
    return message


def count_fetches(sim: DiscordSim, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The attachment URLs the bot fetches from Discord's CDN from now on."""
    fetched: list[str] = []
    cdn = sim.env.backend.cdn
    stored = cdn.get

    def get(url: str) -> bytes | None:
        fetched.append(url)
        return stored(url)

    monkeypatch.setattr(cdn, "get", get)
    return fetched


def member(sim: DiscordSim, guild: simcord.GuildHandle, name: str) -> simcord.MemberActor:
    return guild.add_member(sim.env.create_user(name))
