"""A simulated Discord (simcord) around the real AtelierDiscord client and a real PaintService.

simcord runs discord.py unmodified against an in-memory Discord: slash commands with
attachments, button clicks, message edits, uploads, permissions, injected HTTP errors and
virtual time. The paint service runs on the fake engine, so a test decides when a painting
progresses or finishes.

Two clocks move together here: ``FakeClock`` (the service's unix time and the adapter's
throttle clock) and simcord's virtual time (interaction tokens, message timestamps).
:meth:`DiscordSim.advance` moves both and wakes the adapter's sleeps that fall due.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import discord
import simcord

from bot.challenges import Challenges
from bot.discord import AtelierDiscord, build_client
from bot.discord.status import StatusMessages
from bot.jobs import Failed, Finished, Job, JobEvent
from bot.service import PaintService
from bot.settings import DiscordSettings, Limits, Secret
from bot.store import Store
from tests.fakes import FakeClock, FakeEngine

EDIT_INTERVAL = 4.0
RETRY_DELAYS = (2.0, 5.0)


class ClockSleeper:
    """``asyncio.sleep`` on a FakeClock: a sleep ends when the test advances the clock past it."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self._waiters: list[tuple[float, asyncio.Future[None]]] = []

    async def sleep(self, seconds: float) -> None:
        future = asyncio.get_running_loop().create_future()
        entry = (self.clock() + seconds, future)
        self._waiters.append(entry)
        try:
            await future
        finally:
            self._waiters.remove(entry)

    def wake_due(self) -> None:
        for deadline, future in list(self._waiters):
            if deadline <= self.clock() and not future.done():
                future.set_result(None)

    @property
    def sleeping(self) -> int:
        return len(self._waiters)


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
    engine: FakeEngine
    clock: FakeClock
    sleeper: ClockSleeper
    store: Store
    data_dir: Path
    limits: Limits
    settings: DiscordSettings
    events: EventLog
    services: list[PaintService] = field(default_factory=list)

    async def settle(self) -> None:
        """Let the bot, the service's event feeds and the status boards all come to rest."""
        for _ in range(3):
            await self.env.settle()
            await self.service.drained()
            await self.bot.feature(StatusMessages).wait_idle()
        await self.env.settle()

    async def finish(self, job_id: str, seconds: float = 2.0) -> None:
        """The engine finishes; returns once the adapter has dealt with it."""
        self.engine.finish(job_id, seconds=seconds)
        await self.events.wait_for(Finished, job_id)
        await self.settle()

    async def fail(self, job_id: str, code: str, message: str) -> None:
        self.engine.fail(job_id, code, message)
        await self.events.wait_for(Failed, job_id)
        await self.settle()

    async def advance(self, seconds: float) -> None:
        """Move both clocks; sleeps that fall due end; then settle."""
        self.clock.advance(seconds)
        self.sleeper.wake_due()
        await self.env.advance_time(seconds)
        await self.settle()

    async def running_job(self) -> Job:
        job_id = await self.engine.wait_started()
        await self.settle()
        return self.service.get(job_id)

    async def restart(self) -> AtelierDiscord:
        """A bot process restart: a new service over the same store and data, a new client."""
        await self.service.close()
        self.engine = FakeEngine(auto=False)
        self.service = PaintService(
            store=self.store,
            engine=self.engine,
            limits=self.limits,
            data_dir=self.data_dir,
            clock=self.clock,
        )
        self.services.append(self.service)
        self.bot = make_bot(self.settings, self.service, self.clock, self.sleeper)
        self.service.add_listener(self.events)
        await self.service.start()
        await self.env.restart_bot(self.bot)
        await self.settle()
        return self.bot

    def requests(self, method: str, prefix: str = "") -> list[Any]:
        return [
            r for r in self.env.http_requests if r.method == method and r.path.startswith(prefix)
        ]


def make_bot(
    settings: DiscordSettings,
    service: PaintService,
    clock: FakeClock,
    sleeper: ClockSleeper,
    challenges: Challenges | None = None,
    page_size: int = 4,
) -> AtelierDiscord:
    return build_client(
        settings,
        service,
        challenges,
        clock=clock,
        wall_clock=clock,
        edit_interval=EDIT_INTERVAL,
        sleep=sleeper.sleep,
        retry_delays=RETRY_DELAYS,
        page_size=page_size,
    )


def discord_settings(**changes: Any) -> DiscordSettings:
    return DiscordSettings(token=Secret("simulated"), moderator_role="Curators", **changes)


def status_embed(message: discord.Message) -> discord.Embed:
    assert message.embeds, f"message {message.id} has no embed"
    return message.embeds[0]
