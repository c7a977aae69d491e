"""Style challenges on Discord, through the simulated Discord (simcord) and the real service.

Members act as they would (slash commands with attachments, button clicks) and the tests assert
what Discord then holds: the announcement, the thread with its pinned painting, entries with
their buttons, private replies, the results and the leaderboard. Deadlines pass by moving the
fake time, also while the bot is stopped.
"""

from __future__ import annotations

import io
from pathlib import Path

import discord
import pytest
import simcord
from PIL import Image

from bot import errors
from bot.challenges import BadDuration, ChallengeExists, ChallengeState, EntryLimit, NotOrganiser
from bot.jobs import Finished, Job
from bot.settings import Limits
from tests.bot.discord.sim import (
    DiscordSim,
    bot_messages,
    layout_order,
    member,
    paint,
    private,
    refused,
    shown_text,
)
from tests.fakes import jpeg_bytes, png_bytes

DAY = 24 * 3600
PAINTING = ("starry.png", png_bytes((56, 64), (20, 40, 160)))


@pytest.fixture
def limits() -> Limits:
    return Limits(per_member=3, challenge_entries=2, max_input_bytes=200_000)


def entries_in(thread: simcord.ChannelHandle) -> list[discord.Message]:
    return [
        m
        for m in bot_messages(thread)
        if any(c.label == "Vote" for row in m.components for c in row.children)
    ]


async def start(
    sim: DiscordSim,
    who: simcord.MemberActor,
    channel: simcord.ChannelHandle,
    *,
    title: str = "Starry photos",
    duration: str = "3d",
) -> simcord.InteractionResult:
    result = await who.slash(
        channel, "challenge start", painting=PAINTING, title=title, duration=duration
    )
    await sim.settle()
    return result


async def enter(
    sim: DiscordSim, who: simcord.MemberActor, where: simcord.ChannelHandle, **options: object
) -> simcord.InteractionResult:
    photo = (f"{who.name}.jpg", jpeg_bytes((48, 40), (len(who.name) * 20, 90, 40)))
    result = await who.slash(where, "challenge enter", photo=photo, **options)
    await sim.settle()
    return result


async def enter_and_paint(
    sim: DiscordSim, who: simcord.MemberActor, where: simcord.ChannelHandle
) -> tuple[Job, discord.Message, simcord.ChannelHandle]:
    """An entry from queue to posted entry; returns its job, entry message and the thread."""
    result = await enter(sim, who, where)
    assert "is in the queue" in private(result)
    job_id = await sim.engine.wait_started()
    await sim.finish(job_id)
    thread = where if where.is_thread else the_thread(where)
    entry = entries_in(thread)[-1]
    return sim.service.get(job_id), entry, thread


def the_thread(channel: simcord.ChannelHandle) -> simcord.ChannelHandle:
    [thread] = channel.threads
    return thread


async def test_a_challenge_from_start_to_leaderboard(
    sim: DiscordSim,
    guild: simcord.GuildHandle,
    channel: simcord.ChannelHandle,
    olga: simcord.MemberActor,
) -> None:
    alice, bob, carol, dave = (member(sim, guild, n) for n in ("alice", "bob", "carol", "dave"))

    # Members without Manage Server or the organiser role can't start one.
    denied = await start(sim, alice, channel)
    assert refused(sim, denied, NotOrganiser) == (
        "Only organisers (Manage Server or the Organisers role) can start challenges."
    )
    assert bot_messages(channel) == []

    bad = await start(sim, olga, channel, duration="5s")
    assert "30m, 12h" in refused(sim, bad, BadDuration)

    started = await start(sim, olga, channel)
    thread = the_thread(channel)
    assert thread.mention in private(started)
    [announcement] = bot_messages(channel)
    assert announcement.embeds[0].title == "🏁 Style challenge: Starry photos"
    assert "/challenge enter" in (announcement.embeds[0].description or "")
    assert [a.filename for a in announcement.attachments] == ["challenge-painting.png"]
    [pinned] = thread.pinned_messages()
    assert await pinned.attachments[0].read() == PAINTING[1]
    [challenge] = [sim.core.open_in("discord", str(channel.id))]
    assert challenge is not None and challenge.thread_id == str(thread.id)

    # One open challenge per channel.
    again = await start(sim, olga, channel, title="Another")
    text = refused(sim, again, ChallengeExists)
    assert text.startswith("This channel already has an open challenge: Starry photos, ends <t:")

    # Entries: painted with the challenge painting through the queue, posted in the thread.
    alice_job, alice_entry, _ = await enter_and_paint(sim, alice, thread)
    assert alice_job.challenge_id == challenge.id
    assert Path(alice_job.painting_path).read_bytes() == PAINTING[1]
    assert alice_job.chat_id == str(thread.id)  # the status message went to the thread
    assert alice_entry.content.startswith(alice.mention)
    labels = [c.label for row in alice_entry.components for c in row.children]
    assert labels == ["Vote", "Withdraw"]
    assert alice_entry.attachments[0].filename.endswith(".png")
    bob_job, bob_entry, _ = await enter_and_paint(sim, bob, channel)  # from the channel
    assert bob_job.painting_path == alice_job.painting_path  # the painting is stored once
    assert len(entries_in(thread)) == 2
    # Nothing challenge-related reached the channel's ordinary result flow.
    assert not any(m.attachments for m in bot_messages(channel)[1:])

    # Voting: not for your own entry; once per member, moving on a second vote; hidden counts.
    own = await alice.click(alice_entry, label="Vote")
    await sim.settle()
    assert private(own) == "You can't vote for your own entry."
    first = await carol.click(alice_entry, label="Vote")
    await sim.settle()
    assert private(first).startswith("Voted for alice's entry.")
    moved = await carol.click(bob_entry, label="Vote")
    await sim.settle()
    assert private(moved).startswith("Moved your vote from alice's entry to bob's.")
    await bob.click(alice_entry, label="Vote")
    await dave.click(bob_entry, label="Vote")
    await sim.settle()
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
    await enter(sim, alice, thread)
    queued = await sim.engine.wait_started()
    third = await enter(sim, alice, thread)
    assert refused(sim, third, EntryLimit) == (
        "You already have 2 entries in this challenge; withdraw one first."
    )
    await sim.finish(queued)
    extra = entries_in(thread)[-1]
    assert extra.content.startswith(alice.mention)

    # Withdrawing: not someone else's; yours goes with its votes.
    not_yours = await bob.click(extra, label="Withdraw")
    await sim.settle()
    assert "Only the member who entered it" in private(not_yours)
    await dave.click(extra, label="Vote")  # dave moves to the entry about to be withdrawn
    await sim.settle()
    withdrawn = await alice.click(extra, label="Withdraw")
    await sim.settle()
    assert private(withdrawn) == "Withdrew your entry and its votes."
    assert extra.id not in [m.id for m in thread.history()]
    assert [s.votes for s in sim.core.standings(challenge.id)] == [1, 1]

    # The deadline passes: one podium picture above the results' text, voting locked.
    await sim.advance(3 * DAY)
    assert sim.core.get(challenge.id).state is ChallengeState.CLOSED
    results = bot_messages(channel)[-1]
    text = shown_text(results)
    assert text.startswith("🏆 The challenge **Starry photos** has ended")
    assert "2 entries, 2 voters" in text  # dave's vote went with the withdrawn entry
    # One vote each: the earlier entry (alice's) wins, and the announcement says why.
    assert f"🥇 {alice.mention} (1 vote) · 🥈 {bob.mention} (1 vote)" in text
    assert "Ties on votes went to the earlier entry." in text
    assert layout_order(results) == ["MediaGalleryComponent", "TextDisplay"]  # picture on top
    [podium] = results.attachments
    assert podium.filename == "podium.jpg"
    image = Image.open(io.BytesIO(await podium.read())).convert("RGB")
    gap, tile = 12, 320
    assert image.width == gap + 2 * (tile + gap)  # two places: bob's 2nd left, alice's 1st
    # The entries' paintings stand on the blocks (the fake engine paints them (90, 140, 60)).
    red, green, blue = image.getpixel((gap + tile + gap + tile // 2, gap + tile // 2))
    assert abs(red - 90) < 20 and abs(green - 140) < 20 and abs(blue - 60) < 20
    assert "voting is closed" in bot_messages(thread)[-1].content
    # The challenge's painting joins the server's style library, named after its title.
    kept = sim.styles.get("discord", str(channel.guild.id), "starry-photos")
    assert Path(kept.painting_path).read_bytes() == PAINTING[1]
    late = await dave.click(alice_entry, label="Vote")
    await sim.settle()
    assert private(late) == "Voting has closed."
    after = private(await alice.slash(channel, "challenge standings"))
    assert "1 vote" in after  # everyone sees the counts once it has ended

    board = private(await carol.slash(channel, "leaderboard"))
    assert f"1. {alice.mention}: 1 win, 1 podium" in board
    assert f"2. {bob.mention}: 0 wins, 1 podium" in board


async def test_deadline_passing_while_the_bot_is_stopped(
    sim: DiscordSim,
    guild: simcord.GuildHandle,
    channel: simcord.ChannelHandle,
    olga: simcord.MemberActor,
) -> None:
    alice, bob = member(sim, guild, "alice"), member(sim, guild, "bob")
    await start(sim, olga, channel, duration="1d12h")
    _, alice_entry, _ = await enter_and_paint(sim, alice, channel)

    await sim.restart()
    # Vote buttons posted before the restart still work.
    voted = await bob.click(alice_entry, label="Vote")
    await sim.settle()
    assert private(voted).startswith("Voted for alice's entry.")

    # Stopped across the deadline: closed and announced when the bot starts again.
    await sim.restart(stopped_for=2 * DAY)
    results = bot_messages(channel)[-1]
    assert f"🥇 {alice.mention} (1 vote)" in shown_text(results)
    assert "Ties" not in shown_text(results)
    [challenge] = [c for c in [sim.core.latest_in("discord", str(channel.id))] if c]
    assert challenge.state is ChallengeState.CLOSED and challenge.announced
    assert sim.core.open_in("discord", str(channel.id)) is None

    # Announced once: not twice at the catch-up, nor again at a further restart.
    def announcements() -> int:
        return sum("has ended" in shown_text(m) for m in bot_messages(channel))

    assert announcements() == 1
    await sim.restart()
    assert announcements() == 1
    board = private(await bob.slash(channel, "leaderboard"))
    assert f"1. {alice.mention}: 1 win, 1 podium" in board


async def test_organisers_end_early_or_cancel(
    sim: DiscordSim,
    guild: simcord.GuildHandle,
    channel: simcord.ChannelHandle,
    olga: simcord.MemberActor,
) -> None:
    alice, bob = member(sim, guild, "alice"), member(sim, guild, "bob")
    managers = guild.create_role(
        "Admins", permissions=discord.Permissions(manage_guild=True, view_channel=True)
    )
    mia = guild.add_member(sim.env.create_user("mia"), roles=[managers])

    await start(sim, mia, channel)  # Manage Server is enough
    _, entry, thread = await enter_and_paint(sim, alice, channel)
    await bob.click(entry, label="Vote")
    await sim.settle()

    denied = await alice.slash(channel, "challenge end")
    await sim.settle()
    assert refused(sim, denied, NotOrganiser) == (
        "Only organisers (Manage Server or the Organisers role) can end challenges."
    )
    ended = await olga.slash(thread, "challenge end")
    await sim.settle()
    assert "Ended the challenge" in private(ended)
    assert f"🥇 {alice.mention} (1 vote)" in shown_text(bot_messages(channel)[-1])

    other = guild.create_text_channel("weekly")
    await start(sim, olga, other, title="Cancelled one")
    cancelled = await olga.slash(other, "challenge cancel")
    await sim.settle()
    assert "Cancelled the challenge" in private(cancelled)
    assert "was cancelled by" in bot_messages(other)[-1].content
    nothing = await olga.slash(other, "challenge end")
    await sim.settle()
    assert "no open challenge" in refused(sim, nothing, errors.UserFacingError)

    board = private(await bob.slash(channel, "leaderboard"))
    assert f"1. {alice.mention}: 1 win, 1 podium" in board
    assert "Cancelled" not in board


async def test_entering_without_a_challenge_is_refused(
    sim: DiscordSim, guild: simcord.GuildHandle, channel: simcord.ChannelHandle
) -> None:
    alice = member(sim, guild, "alice")
    result = await enter(sim, alice, channel)
    assert "no open challenge here" in refused(sim, result, errors.UserFacingError)
    assert bot_messages(channel) == []


async def test_challenge_finished_after_close_is_delivered_as_a_painting(
    sim: DiscordSim,
    guild: simcord.GuildHandle,
    channel: simcord.ChannelHandle,
    olga: simcord.MemberActor,
) -> None:
    alice = member(sim, guild, "alice")
    await start(sim, olga, channel)
    await enter(sim, alice, channel)
    job_id = await sim.engine.wait_started()
    await olga.slash(channel, "challenge cancel")
    await sim.settle()
    sim.engine.finish(job_id)
    await sim.events.wait_for(Finished, job_id)
    await sim.settle()
    thread = the_thread(channel)
    assert entries_in(thread) == []
    result = bot_messages(thread)[-1]
    assert result.content.startswith(alice.mention)
    assert result.attachments[0].filename == f"atelier-{job_id}.png"


async def test_a_challenge_that_cannot_open_its_thread_is_not_left_open(
    sim: DiscordSim, guild: simcord.GuildHandle, olga: simcord.MemberActor
) -> None:
    # A voice channel's text chat takes slash commands but has no threads.
    voice = guild.create_voice_channel("studio")
    result = await start(sim, olga, voice)
    assert "Start a challenge in a text channel" in refused(sim, result, errors.UserFacingError)
    assert sim.core.open_in("discord", str(voice.id)) is None


async def test_an_entry_the_thread_refuses_is_not_left_as_an_invisible_entry(
    sim: DiscordSim,
    guild: simcord.GuildHandle,
    channel: simcord.ChannelHandle,
    olga: simcord.MemberActor,
) -> None:
    alice = member(sim, guild, "alice")
    await start(sim, olga, channel)
    thread = the_thread(channel)
    challenge = sim.core.open_in("discord", str(channel.id))
    assert challenge is not None
    await enter(sim, alice, channel)
    job_id = await sim.engine.wait_started()
    sim.env.inject_error("POST", f"/channels/{thread.id}/messages", status=403, code=50013, times=1)
    await sim.finish(job_id)
    # Nobody could have voted for it, so it is no entry; the painting still reaches Alice.
    assert sim.core.entries(challenge.id) == []
    assert entries_in(thread) == []
    result = bot_messages(thread)[-1]
    assert result.content.startswith(alice.mention)
    assert result.attachments[0].filename == f"atelier-{job_id}.png"


async def test_an_entry_past_the_members_limit_is_refused_before_its_photo_is_fetched(
    sim: DiscordSim,
    guild: simcord.GuildHandle,
    channel: simcord.ChannelHandle,
    olga: simcord.MemberActor,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    alice = member(sim, guild, "alice")
    await start(sim, olga, channel)
    for _ in range(3):  # per_member=3 paintings at once: the third is running, two wait
        await paint(sim, alice, channel)
    fetched: list[str] = []
    cdn = sim.env.backend.cdn
    stored = cdn.get
    monkeypatch.setattr(cdn, "get", lambda url: fetched.append(url) or stored(url))
    result = await enter(sim, alice, channel)
    assert "already have 3 paintings in progress" in refused(sim, result, errors.LimitReached)
    assert fetched == []


async def test_an_entry_past_the_entry_limit_is_refused_before_its_photo_is_fetched(
    sim: DiscordSim,
    guild: simcord.GuildHandle,
    channel: simcord.ChannelHandle,
    olga: simcord.MemberActor,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    alice = member(sim, guild, "alice")
    await start(sim, olga, channel)
    thread = the_thread(channel)
    for _ in range(2):  # challenge_entries=2: both still painting count
        assert "is in the queue" in private(await enter(sim, alice, thread))
    fetched: list[str] = []
    cdn = sim.env.backend.cdn
    stored = cdn.get
    monkeypatch.setattr(cdn, "get", lambda url: fetched.append(url) or stored(url))
    third = await enter(sim, alice, thread)
    assert refused(sim, third, EntryLimit) == (
        "You already have 2 entries in this challenge; withdraw one first."
    )
    assert fetched == []


async def test_an_entry_is_delivered_once_and_withdraw_acknowledges_first(
    sim: DiscordSim,
    guild: simcord.GuildHandle,
    channel: simcord.ChannelHandle,
    olga: simcord.MemberActor,
) -> None:
    alice = member(sim, guild, "alice")
    await start(sim, olga, channel)
    job, entry, thread = await enter_and_paint(sim, alice, channel)
    stored = sim.store.get_job(job.id)
    assert stored is not None and stored.delivered_at is not None
    await sim.restart()
    assert len(entries_in(thread)) == 1  # not posted again

    mark = len(sim.env.http_requests)
    withdrawn = await alice.click(entry, label="Withdraw")
    await sim.settle()
    assert "withdrew" in private(withdrawn).lower()
    calls = [(r.method, r.path) for r in sim.env.http_requests[mark:]]
    acknowledged = next(i for i, c in enumerate(calls) if c[1].startswith("/interactions/"))
    removed = calls.index(("DELETE", f"/channels/{thread.id}/messages/{entry.id}"))
    assert acknowledged < removed


async def test_entry_buttons_keep_their_custom_ids_across_a_restart(
    sim: DiscordSim,
    guild: simcord.GuildHandle,
    channel: simcord.ChannelHandle,
    olga: simcord.MemberActor,
) -> None:
    """Entries already posted carry these exact strings: Vote and Withdraw must still work."""
    alice, bob = member(sim, guild, "alice"), member(sim, guild, "bob")
    await start(sim, olga, channel)
    job, entry_message, thread = await enter_and_paint(sim, alice, channel)
    entry = sim.core.entry_for_job(job.id)
    assert entry is not None
    await sim.restart()

    voted = await bob.click(entry_message, custom_id=f"atelier:vote:{entry.id}")
    await sim.settle()
    assert private(voted).startswith("Voted for alice's entry.")
    withdrawn = await alice.click(entry_message, custom_id=f"atelier:withdraw:{entry.id}")
    await sim.settle()
    assert "withdrew" in private(withdrawn).lower()
    assert entries_in(thread) == []


async def test_a_challenge_is_not_started_where_its_thread_could_not_be_locked(
    sim: DiscordSim, guild: simcord.GuildHandle, olga: simcord.MemberActor
) -> None:
    assert sim.bot.user is not None
    no_threads = guild.create_text_channel(
        "no-threads",
        overwrites={sim.bot.user: discord.PermissionOverwrite(manage_threads=False)},
    )
    result = await start(sim, olga, no_threads)
    assert "**Manage Threads**" in refused(sim, result, errors.NotAllowed)
    assert bot_messages(no_threads) == []
    assert sim.core.open_in("discord", str(no_threads.id)) is None


def test_the_invite_asks_for_every_permission_the_bot_checks() -> None:
    from bot.discord.client import CHALLENGE_PERMISSIONS, CHANNEL_PERMISSIONS, INVITE_PERMISSIONS

    for name, _ in (*CHANNEL_PERMISSIONS, *CHALLENGE_PERMISSIONS):
        assert getattr(INVITE_PERMISSIONS, name), name
    assert INVITE_PERMISSIONS.manage_threads  # the thread is locked when a challenge ends
