"""The simulated Discord, defined once: the real client (with challenges) on the real service.

A test module changes the world by overriding ``limits`` or ``discord_config``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import simcord

from bot.challenges import Challenges
from bot.discord import AtelierDiscord
from bot.service import PaintService
from bot.settings import DiscordSettings, Limits
from bot.store import Store
from bot.styles import StyleLibrary
from tests.bot.discord.sim import (
    DiscordSim,
    EventLog,
    discord_settings,
    make_bot,
    make_core,
    make_styles,
)
from tests.fakes import FakeEngine, FakeTime


@pytest.fixture
def fake_engine() -> FakeEngine:
    return FakeEngine(auto=False)


@pytest.fixture
def limits() -> Limits:
    return Limits(queue=2, max_input_bytes=200_000)


@pytest.fixture
def discord_config() -> DiscordSettings:
    return discord_settings()


@pytest.fixture
def event_log() -> EventLog:
    return EventLog()


@pytest.fixture
def styles(store: Store, service: PaintService, data_dir: Path, clock: FakeTime) -> StyleLibrary:
    return make_styles(store, service, data_dir, clock)


@pytest.fixture
async def core(
    store: Store,
    service: PaintService,
    data_dir: Path,
    limits: Limits,
    clock: FakeTime,
    styles: StyleLibrary,
) -> AsyncIterator[Challenges]:
    core = make_core(store, service, data_dir, limits, clock, styles)
    yield core
    await core.close()


@pytest.fixture
async def simcord_bot(
    discord_config: DiscordSettings,
    service: PaintService,
    core: Challenges,
    clock: FakeTime,
    event_log: EventLog,
    styles: StyleLibrary,
) -> AtelierDiscord:
    """The bot simcord runs (the name its pytest plugin asks for)."""
    bot = make_bot(discord_config, service, core, clock, styles)
    service.add_listener(event_log)
    await core.start()
    return bot


@pytest.fixture
async def sim(
    simcord_env: simcord.Env,
    simcord_bot: AtelierDiscord,
    service: PaintService,
    core: Challenges,
    fake_engine: FakeEngine,
    clock: FakeTime,
    store: Store,
    data_dir: Path,
    limits: Limits,
    discord_config: DiscordSettings,
    event_log: EventLog,
    styles: StyleLibrary,
) -> AsyncIterator[DiscordSim]:
    world = DiscordSim(
        env=simcord_env,
        bot=simcord_bot,
        service=service,
        core=core,
        engine=fake_engine,
        time=clock,
        store=store,
        data_dir=data_dir,
        limits=limits,
        settings=discord_config,
        events=event_log,
        styles=styles,
    )
    yield world
    await world.core.close()
    for other in world.services:
        await other.close()


@pytest.fixture
def guild(sim: DiscordSim) -> simcord.GuildHandle:
    return sim.env.create_guild("Painters")


@pytest.fixture
def channel(guild: simcord.GuildHandle) -> simcord.ChannelHandle:
    return guild.create_text_channel("atelier")


@pytest.fixture
def alice(sim: DiscordSim, guild: simcord.GuildHandle) -> simcord.MemberActor:
    return guild.add_member(sim.env.create_user("alice"))


@pytest.fixture
def bob(sim: DiscordSim, guild: simcord.GuildHandle) -> simcord.MemberActor:
    return guild.add_member(sim.env.create_user("bob"))


@pytest.fixture
def olga(sim: DiscordSim, guild: simcord.GuildHandle) -> simcord.MemberActor:
    """An organiser of challenges, through the configured role."""
    organisers = guild.create_role("Organisers")
    return guild.add_member(sim.env.create_user("olga"), roles=[organisers])
