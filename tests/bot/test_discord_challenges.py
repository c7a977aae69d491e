"""Style challenges on Discord, through the simulated Discord (simcord) and the real service.

Members act as they would (slash commands with attachments, button clicks) and the tests assert
what Discord then holds: the announcement, the thread with its pinned painting, entries with
their buttons, private replies, the results and the leaderboard. Deadlines pass by moving the
fake clock, also while the bot is stopped.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

import discord
import pytest
import simcord
from PIL import Image

from bot import errors
from bot.challenges import (
    BadDuration,
    ChallengeExists,
    Challenges,
    ChallengeState,
    EntryLimit,
    NotOrganiser,
)
from bot.discord import AtelierDiscord
from bot.discord.challenges import DiscordChallenges
from bot.jobs import Finished, Job
from bot.service import PaintService
from bot.settings import Limits
from bot.store import Store
from tests.bot.discord_sim import ClockSleeper, DiscordSim, EventLog, discord_settings, make_bot
from tests.fakes import FakeClock, FakeEngine, jpeg_bytes, png_bytes

DAY = 24 * 3600
PAINTING = ("starry.png", png_bytes((56, 64), (20, 40, 160)))


@pytest.fixture
def fake_engine() -> FakeEngine:
    return FakeEngine(auto=False)


@pytest.fixture
def limits() -> Limits:
    return Limits(per_member=3, challenge_entries=2, max_input_bytes=200_000)


@pytest.fixture
def sleeper(clock: FakeClock) -> ClockSleeper:
    return ClockSleeper(clock)


@pytest.fixture
def event_log() -> EventLog:
    return EventLog()


class World:
    """The simulated Discord plus the challenge side, which a restart rebuilds too."""

    def __init__(self, sim: DiscordSim, core: Challenges, ui: DiscordChallenges) -> None:
        self.sim = sim
        self.core = core
        self.ui = ui

    async def settle(self) -> None:
        await self.sim.settle()
        await self.core.drained()
        await self.sim.settle()

    async def advance(self, seconds: float) -> None:
        await self.sim.advance(seconds)
        await self.core.drained()
        await self.sim.settle()

    async def finish(self, job_id: str) -> None:
        await self.sim.finish(job_id)
        await self.settle()

    async def restart(self, *, stopped_for: float = 0.0) -> None:
        """Stop the bot, let ``stopped_for`` seconds pass, and start it again over the same
        store and data folder (new service, new client, new challenge module)."""
        sim = self.sim
        await self.core.close()
        await sim.service.close()
        sim.clock.advance(stopped_for)
        await sim.env.advance_time(stopped_for)
        sim.engine = FakeEngine(auto=False)
        sim.service = PaintService(
            store=sim.store,
            engine=sim.engine,
            limits=sim.limits,
            data_dir=sim.data_dir,
            clock=sim.clock,
        )
        sim.services.append(sim.service)
        self.core = make_core(
            sim.store, sim.service, sim.data_dir, sim.limits, sim.clock, sim.sleeper
        )
        sim.bot = make_bot(sim.settings, sim.service, sim.clock, sim.sleeper, self.core, 2)
        self.ui = sim.bot.feature(DiscordChallenges)
        sim.service.add_listener(sim.events)
        await sim.service.start()
        await self.core.start()
        await sim.env.restart_bot(sim.bot)
        await self.settle()


def make_core(
    store: Store,
    service: PaintService,
    data_dir: Path,
    limits: Limits,
    clock: FakeClock,
    sleeper: ClockSleeper,
) -> Challenges:
    return Challenges(
        store=store,
        service=service,
        data_dir=data_dir,
        limits=limits,
        clock=clock,
        sleep=sleeper.sleep,
    )


@pytest.fixture
def core(
    store: Store,
    service: PaintService,
    data_dir: Path,
    limits: Limits,
    clock: FakeClock,
    sleeper: ClockSleeper,
) -> Challenges:
    return make_core(store, service, data_dir, limits, clock, sleeper)


@pytest.fixture
async def simcord_bot(
    service: PaintService,
    clock: FakeClock,
    sleeper: ClockSleeper,
    event_log: EventLog,
    core: Challenges,
) -> AtelierDiscord:
    settings = discord_settings(organiser_role="Organisers")
    bot = make_bot(settings, service, clock, sleeper, core, page_size=2)
    service.add_listener(event_log)
    await core.start()
    return bot


@pytest.fixture
async def world(
    simcord_env: simcord.Env,
    simcord_bot: AtelierDiscord,
    service: PaintService,
    fake_engine: FakeEngine,
    clock: FakeClock,
    sleeper: ClockSleeper,
    store: Store,
    data_dir: Path,
    limits: Limits,
    event_log: EventLog,
    core: Challenges,
) -> AsyncIterator[World]:
    sim = DiscordSim(
        env=simcord_env,
        bot=simcord_bot,
        service=service,
        engine=fake_engine,
        clock=clock,
        sleeper=sleeper,
        store=store,
        data_dir=data_dir,
        limits=limits,
        settings=simcord_bot.settings,
        events=event_log,
    )
    world = World(sim, core, simcord_bot.feature(DiscordChallenges))
    yield world
    await world.core.close()
    for other in sim.services:
        await other.close()


@pytest.fixture
def guild(world: World) -> simcord.GuildHandle:
    return world.sim.env.create_guild("Painters")


@pytest.fixture
def channel(guild: simcord.GuildHandle) -> simcord.ChannelHandle:
    return guild.create_text_channel("challenges")


@pytest.fixture
def olga(world: World, guild: simcord.GuildHandle) -> simcord.MemberActor:
    """An organiser through the configured role."""
    organisers = guild.create_role("Organisers")
    return guild.add_member(world.sim.env.create_user("olga"), roles=[organisers])


def member(world: World, guild: simcord.GuildHandle, name: str) -> simcord.MemberActor:
    return guild.add_member(world.sim.env.create_user(name))


def private(result: simcord.InteractionResult) -> str:
    assert result.acknowledged
    assert result.ephemeral
    assert result.response is not None
    text = result.response.content
    if not text and result.response.embeds:
        text = result.response.embeds[0].description or ""
    return text


def refused(world: World, result: simcord.InteractionResult, kind: type[Exception]) -> str:
    simcord.assert_error(world.sim.env, kind)
    return private(result)


def bot_messages(channel: simcord.ChannelHandle) -> list[discord.Message]:
    return [
        m for m in channel.history() if m.author.bot and not m.flags.ephemeral and not m.is_system()
    ]


def entries_in(thread: simcord.ChannelHandle) -> list[discord.Message]:
    return [
        m
        for m in bot_messages(thread)
        if any(c.label == "Vote" for row in m.components for c in row.children)
    ]


async def start(
    world: World,
    who: simcord.MemberActor,
    channel: simcord.ChannelHandle,
    *,
    title: str = "Starry photos",
    duration: str = "3d",
) -> simcord.InteractionResult:
    result = await who.slash(
        channel, "challenge start", painting=PAINTING, title=title, duration=duration
    )
    await world.settle()
    return result


async def enter(
    world: World, who: simcord.MemberActor, where: simcord.ChannelHandle, **options: object
) -> simcord.InteractionResult:
    photo = (f"{who.name}.jpg", jpeg_bytes((48, 40), (len(who.name) * 20, 90, 40)))
    result = await who.slash(where, "challenge enter", photo=photo, **options)
    await world.settle()
    return result


async def enter_and_paint(
    world: World, who: simcord.MemberActor, where: simcord.ChannelHandle
) -> tuple[Job, discord.Message, simcord.ChannelHandle]:
    """An entry from queue to posted entry; returns its job, entry message and the thread."""
    result = await enter(world, who, where)
    assert "is in the queue" in private(result)
    job_id = await world.sim.engine.wait_started()
    await world.finish(job_id)
    thread = where if where.is_thread else the_thread(where)
    entry = entries_in(thread)[-1]
    return world.sim.service.get(job_id), entry, thread


def the_thread(channel: simcord.ChannelHandle) -> simcord.ChannelHandle:
    [thread] = channel.threads
    return thread


# -- the whole life of a challenge -----------------------------------------------------------


async def test_a_challenge_from_start_to_leaderboard(
    world: World,
    guild: simcord.GuildHandle,
    channel: simcord.ChannelHandle,
    olga: simcord.MemberActor,
) -> None:
    alice, bob, carol, dave = (member(world, guild, n) for n in ("alice", "bob", "carol", "dave"))

    # Members without Manage Server or the organiser role can't start one.
    denied = await start(world, alice, channel)
    assert refused(world, denied, NotOrganiser) == (
        "Only organisers (Manage Server or the Organisers role) can start challenges."
    )
    assert bot_messages(channel) == []

    bad = await start(world, olga, channel, duration="5s")
    assert "30m, 12h" in refused(world, bad, BadDuration)

    started = await start(world, olga, channel)
    thread = the_thread(channel)
    assert thread.mention in private(started)
    [announcement] = bot_messages(channel)
    assert announcement.embeds[0].title == "🏁 Style challenge: Starry photos"
    assert "/challenge enter" in (announcement.embeds[0].description or "")
    assert [a.filename for a in announcement.attachments] == ["challenge-painting.png"]
    [pinned] = thread.pinned_messages()
    assert await pinned.attachments[0].read() == PAINTING[1]
    [challenge] = [world.core.open_in("discord", str(channel.id))]
    assert challenge is not None and challenge.thread_id == str(thread.id)

    # One open challenge per channel.
    again = await start(world, olga, channel, title="Another")
    text = refused(world, again, ChallengeExists)
    assert text.startswith("This channel already has an open challenge: Starry photos, ends <t:")

    # Entries: painted with the challenge painting through the queue, posted in the thread.
    alice_job, alice_entry, _ = await enter_and_paint(world, alice, thread)
    assert alice_job.challenge_id == challenge.id
    assert Path(alice_job.painting_path).read_bytes() == PAINTING[1]
    assert alice_job.chat_id == str(thread.id)  # the status message went to the thread
    assert alice_entry.content.startswith(alice.mention)
    labels = [c.label for row in alice_entry.components for c in row.children]
    assert labels == ["Vote", "Withdraw"]
    assert alice_entry.attachments[0].filename.endswith(".png")
    bob_job, bob_entry, _ = await enter_and_paint(world, bob, channel)  # from the channel
    assert bob_job.painting_path == alice_job.painting_path  # the painting is stored once
    assert len(entries_in(thread)) == 2
    # Nothing challenge-related reached the channel's ordinary result flow.
    assert not any(m.attachments for m in bot_messages(channel)[1:])

    # Voting: not for your own entry; once per member, moving on a second vote; hidden counts.
    own = await alice.click(alice_entry, label="Vote")
    await world.settle()
    assert private(own) == "You can't vote for your own entry."
    first = await carol.click(alice_entry, label="Vote")
    await world.settle()
    assert private(first).startswith("Voted for alice's entry.")
    moved = await carol.click(bob_entry, label="Vote")
    await world.settle()
    assert private(moved).startswith("Moved your vote from alice's entry to bob's.")
    await bob.click(alice_entry, label="Vote")
    await dave.click(bob_entry, label="Vote")
    await world.settle()
    assert "vote" not in (alice_entry.embeds[0].description or "").lower()

    seen_by_member = private(await alice.slash(thread, "challenge standings"))
    assert "hidden until the end" in seen_by_member
    assert alice.mention in seen_by_member and bob.mention in seen_by_member
    assert "votes" not in seen_by_member.replace("Vote counts are hidden", "")
    seen_by_organiser = private(await olga.slash(channel, "challenge standings"))
    assert f"1. {bob.mention}" in seen_by_organiser
    assert "2 votes" in seen_by_organiser
    assert f"2. {alice.mention}" in seen_by_organiser
    assert "1 vote" in seen_by_organiser

    # The entry limit counts finished entries and entries still painting.
    await enter(world, alice, thread)
    queued = await world.sim.engine.wait_started()
    third = await enter(world, alice, thread)
    assert refused(world, third, EntryLimit) == (
        "You already have 2 entries in this challenge; withdraw one first."
    )
    await world.finish(queued)
    extra = entries_in(thread)[-1]
    assert extra.content.startswith(alice.mention)

    # Withdrawing: not someone else's; yours goes with its votes.
    not_yours = await bob.click(extra, label="Withdraw")
    await world.settle()
    assert "Only the member who entered it" in private(not_yours)
    await dave.click(extra, label="Vote")  # dave moves to the entry about to be withdrawn
    await world.settle()
    withdrawn = await alice.click(extra, label="Withdraw")
    await world.settle()
    assert private(withdrawn) == "Withdrew your entry and its votes."
    assert extra.id not in [m.id for m in thread.history()]
    assert [s.votes for s in world.core.standings(challenge.id)] == [1, 1]

    # The deadline passes: results with the top images and counts, voting locked.
    await world.advance(3 * DAY)
    assert world.core.get(challenge.id).state is ChallengeState.CLOSED
    results = bot_messages(channel)[-1]
    assert results.content.startswith("🏆 The challenge **Starry photos** has ended")
    assert "2 entries, 2 voters" in results.content  # dave's vote went with the withdrawn entry
    # One vote each: the earlier entry (alice's) wins, and the announcement says why.
    assert f"🥇 {alice.mention} (1 vote) · 🥈 {bob.mention} (1 vote)" in results.content
    assert "Ties on votes went to the earlier entry." in results.content
    assert [e.title for e in results.embeds] == ["🥇 1st: alice", "🥈 2nd: bob"]
    assert [a.filename for a in results.attachments] == ["place-1.png", "place-2.png"]
    image = Image.open(io.BytesIO(await results.attachments[0].read()))
    assert image.size == (64, 48)
    assert "voting is closed" in bot_messages(thread)[-1].content
    late = await dave.click(alice_entry, label="Vote")
    await world.settle()
    assert private(late) == "Voting has closed."
    after = private(await alice.slash(channel, "challenge standings"))
    assert "1 vote" in after  # everyone sees the counts once it has ended

    board = private(await carol.slash(channel, "leaderboard"))
    assert f"1. {alice.mention}: 1 win, 1 podium" in board
    assert f"2. {bob.mention}: 0 wins, 1 podium" in board


async def test_deadline_passing_while_the_bot_is_stopped(
    world: World,
    guild: simcord.GuildHandle,
    channel: simcord.ChannelHandle,
    olga: simcord.MemberActor,
) -> None:
    alice, bob = member(world, guild, "alice"), member(world, guild, "bob")
    await start(world, olga, channel, duration="1d12h")
    _, alice_entry, _ = await enter_and_paint(world, alice, channel)

    await world.restart()
    # Vote buttons posted before the restart still work.
    voted = await bob.click(alice_entry, label="Vote")
    await world.settle()
    assert private(voted).startswith("Voted for alice's entry.")

    # Stopped across the deadline: closed and announced when the bot starts again.
    await world.restart(stopped_for=2 * DAY)
    results = bot_messages(channel)[-1]
    assert f"🥇 {alice.mention} (1 vote)" in results.content
    assert "Ties" not in results.content
    [challenge] = [c for c in [world.core.latest_in("discord", str(channel.id))] if c]
    assert challenge.state is ChallengeState.CLOSED and challenge.announced
    assert world.core.open_in("discord", str(channel.id)) is None

    # Announced once: not twice at the catch-up, nor again at a further restart.
    def announcements() -> int:
        return sum("has ended" in m.content for m in bot_messages(channel))

    assert announcements() == 1
    await world.restart()
    assert announcements() == 1
    board = private(await bob.slash(channel, "leaderboard"))
    assert f"1. {alice.mention}: 1 win, 1 podium" in board


async def test_organisers_end_early_or_cancel(
    world: World,
    guild: simcord.GuildHandle,
    channel: simcord.ChannelHandle,
    olga: simcord.MemberActor,
) -> None:
    alice, bob = member(world, guild, "alice"), member(world, guild, "bob")
    managers = guild.create_role(
        "Admins", permissions=discord.Permissions(manage_guild=True, view_channel=True)
    )
    mia = guild.add_member(world.sim.env.create_user("mia"), roles=[managers])

    await start(world, mia, channel)  # Manage Server is enough
    _, entry, thread = await enter_and_paint(world, alice, channel)
    await bob.click(entry, label="Vote")
    await world.settle()

    denied = await alice.slash(channel, "challenge end")
    await world.settle()
    assert refused(world, denied, NotOrganiser) == (
        "Only organisers (Manage Server or the Organisers role) can end challenges."
    )
    ended = await olga.slash(thread, "challenge end")
    await world.settle()
    assert "Ended the challenge" in private(ended)
    assert f"🥇 {alice.mention} (1 vote)" in bot_messages(channel)[-1].content

    other = guild.create_text_channel("weekly")
    await start(world, olga, other, title="Cancelled one")
    cancelled = await olga.slash(other, "challenge cancel")
    await world.settle()
    assert "Cancelled the challenge" in private(cancelled)
    assert "was cancelled by" in bot_messages(other)[-1].content
    nothing = await olga.slash(other, "challenge end")
    await world.settle()
    assert "no open challenge" in refused(world, nothing, errors.UserFacingError)

    board = private(await bob.slash(channel, "leaderboard"))
    assert f"1. {alice.mention}: 1 win, 1 podium" in board
    assert "Cancelled" not in board


async def test_entering_without_a_challenge_is_refused(
    world: World, guild: simcord.GuildHandle, channel: simcord.ChannelHandle
) -> None:
    alice = member(world, guild, "alice")
    result = await enter(world, alice, channel)
    assert "no open challenge here" in refused(world, result, errors.UserFacingError)
    assert bot_messages(channel) == []


async def test_gallery_pages_through_the_servers_paintings(
    world: World, guild: simcord.GuildHandle, channel: simcord.ChannelHandle
) -> None:
    alice, bob = member(world, guild, "alice"), member(world, guild, "bob")
    for who in (alice, bob, alice):
        await who.slash(
            channel, "paint", photo=("cat.png", png_bytes()), painting=("s.jpg", jpeg_bytes())
        )
        await world.settle()
        job_id = await world.sim.engine.wait_started()
        await world.finish(job_id)
    # A painting in another server is not in this one's gallery.
    elsewhere = world.sim.env.create_guild("Elsewhere")
    stranger = elsewhere.add_member(world.sim.env.create_user("stranger"))
    await stranger.slash(
        elsewhere.create_text_channel("x"),
        "paint",
        photo=("cat.png", png_bytes()),
        painting=("s.jpg", jpeg_bytes()),
    )
    await world.settle()
    await world.finish(await world.sim.engine.wait_started())

    mark = len(world.sim.requests("POST", "/interactions/"))
    shown = await bob.slash(channel, "gallery")
    await world.settle()
    # Acknowledged before the paintings are read and uploaded (Discord allows 3 seconds).
    assert world.sim.requests("POST", "/interactions/")[mark].json["type"] == 5
    assert shown.ephemeral and shown.response is not None
    page = shown.response.message
    assert "page 1 of 2" in page.content
    assert len(page.embeds) == 2
    assert alice.mention in (page.embeds[0].description or "")  # newest first
    assert bob.mention in (page.embeds[1].description or "")
    assert len(page.attachments) == 2
    assert [c.disabled for row in page.components for c in row.children] == [True, False]

    mark = len(world.sim.requests("POST", "/interactions/"))
    await bob.click(page, label="Next")
    await world.settle()
    assert world.sim.requests("POST", "/interactions/")[mark].json["type"] == 6
    message = shown.response.message
    assert "page 2 of 2" in message.content
    assert len(message.embeds) == 1
    assert alice.mention in (message.embeds[0].description or "")

    mine = await bob.slash(channel, "gallery", member=bob)
    await world.settle()
    assert mine.response is not None
    assert "page 1 of 1" in mine.response.content
    assert len(mine.response.embeds) == 1


async def test_challenge_finished_after_close_is_delivered_as_a_painting(
    world: World,
    guild: simcord.GuildHandle,
    channel: simcord.ChannelHandle,
    olga: simcord.MemberActor,
) -> None:
    alice = member(world, guild, "alice")
    await start(world, olga, channel)
    await enter(world, alice, channel)
    job_id = await world.sim.engine.wait_started()
    await olga.slash(channel, "challenge cancel")
    await world.settle()
    world.sim.engine.finish(job_id)
    await world.sim.events.wait_for(Finished, job_id)
    await world.settle()
    thread = the_thread(channel)
    assert entries_in(thread) == []
    result = bot_messages(thread)[-1]
    assert result.content.startswith(alice.mention)
    assert result.attachments[0].filename == f"atelier-{job_id}.png"


async def test_gallery_never_shows_paintings_from_channels_the_member_cannot_see(
    world: World, guild: simcord.GuildHandle, channel: simcord.ChannelHandle
) -> None:
    assert world.sim.bot.user is not None
    mods = guild.create_role("Mods")
    secret = guild.create_text_channel(
        "mods-only",
        overwrites={
            guild.roles["@everyone"]: discord.PermissionOverwrite(view_channel=False),
            mods: discord.PermissionOverwrite(view_channel=True),
            world.sim.bot.user: discord.PermissionOverwrite(view_channel=True),
        },
    )
    mia = guild.add_member(world.sim.env.create_user("mia"), roles=[mods])
    bob = member(world, guild, "bob")
    for who, where in ((mia, secret), (bob, channel)):
        await who.slash(
            where, "paint", photo=("cat.png", png_bytes()), painting=("s.jpg", jpeg_bytes())
        )
        await world.settle()
        await world.finish(await world.sim.engine.wait_started())

    shown = await bob.slash(channel, "gallery")
    await world.settle()
    assert shown.response is not None
    assert "page 1 of 1" in shown.response.content
    assert len(shown.response.embeds) == 1
    assert bob.mention in (shown.response.embeds[0].description or "")

    theirs = await bob.slash(channel, "gallery", member=mia)
    await world.settle()
    assert theirs.response is not None
    assert "No paintings" in theirs.response.content

    mods_view = await mia.slash(secret, "gallery")
    await world.settle()
    assert mods_view.response is not None
    assert len(mods_view.response.embeds) == 2


async def test_a_challenge_that_cannot_open_its_thread_is_not_left_open(
    world: World, guild: simcord.GuildHandle, olga: simcord.MemberActor
) -> None:
    # A voice channel's text chat takes slash commands but has no threads.
    voice = guild.create_voice_channel("studio")
    result = await start(world, olga, voice)
    assert "Start a challenge in a text channel" in refused(world, result, errors.UserFacingError)
    assert world.core.open_in("discord", str(voice.id)) is None


async def test_an_entry_the_thread_refuses_is_not_left_as_an_invisible_entry(
    world: World,
    guild: simcord.GuildHandle,
    channel: simcord.ChannelHandle,
    olga: simcord.MemberActor,
) -> None:
    alice = member(world, guild, "alice")
    await start(world, olga, channel)
    thread = the_thread(channel)
    challenge = world.core.open_in("discord", str(channel.id))
    assert challenge is not None
    await enter(world, alice, channel)
    job_id = await world.sim.engine.wait_started()
    world.sim.env.inject_error(
        "POST", f"/channels/{thread.id}/messages", status=403, code=50013, times=1
    )
    await world.finish(job_id)
    # Nobody could have voted for it, so it is no entry; the painting still reaches Alice.
    assert world.core.entries(challenge.id) == []
    assert entries_in(thread) == []
    result = bot_messages(thread)[-1]
    assert result.content.startswith(alice.mention)
    assert result.attachments[0].filename == f"atelier-{job_id}.png"
