"""The Discord adapter driven through a simulated Discord (simcord) with the real service.

Every test acts as a member would (slash commands with attachments, button clicks, deleting
a message) and asserts what Discord then holds: ephemeral replies, the status message and its
edits, the result with its attachment and buttons.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import discord
import pytest
import simcord
from PIL import Image

from bot import errors
from bot.discord import AtelierDiscord
from bot.discord.client import MissingPermissions
from bot.discord.embeds import encode_for_upload
from bot.jobs import Cancelled, Finished, JobState
from bot.service import PaintService
from bot.settings import Limits
from bot.store import Store
from tests.bot.discord_sim import (
    ClockSleeper,
    DiscordSim,
    EventLog,
    discord_settings,
    make_bot,
    status_embed,
)
from tests.fakes import FakeClock, FakeEngine, jpeg_bytes, png_bytes

RELATIVE = re.compile(r"<t:\d+:R>")


@pytest.fixture
def fake_engine() -> FakeEngine:
    return FakeEngine(auto=False)


@pytest.fixture
def limits() -> Limits:
    return Limits(queue=2, max_input_bytes=200_000)


@pytest.fixture
def sleeper(clock: FakeClock) -> ClockSleeper:
    return ClockSleeper(clock)


@pytest.fixture
def event_log() -> EventLog:
    return EventLog()


@pytest.fixture
async def simcord_bot(
    service: PaintService, clock: FakeClock, sleeper: ClockSleeper, event_log: EventLog
) -> AtelierDiscord:
    bot = make_bot(discord_settings(), service, clock, sleeper)
    service.add_listener(event_log)
    return bot


@pytest.fixture
async def sim(
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
) -> AsyncIterator[DiscordSim]:
    world = DiscordSim(
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
    yield world
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


def images() -> dict[str, tuple[str, bytes]]:
    return {"photo": ("cat.png", png_bytes((64, 48))), "painting": ("starry.jpg", jpeg_bytes())}


def bot_messages(channel: simcord.ChannelHandle) -> list[discord.Message]:
    return [m for m in channel.history() if m.author.bot and not m.flags.ephemeral]


async def paint(
    sim: DiscordSim, member: simcord.MemberActor, channel: simcord.ChannelHandle, **options: object
) -> simcord.InteractionResult:
    result = await member.slash(channel, "paint", **images(), **options)
    await sim.settle()
    return result


def ephemeral_text(result: simcord.InteractionResult) -> str:
    assert result.acknowledged
    assert result.ephemeral
    assert result.response is not None
    return result.response.content


def refused(sim: DiscordSim, result: simcord.InteractionResult, kind: type[Exception]) -> str:
    """The member's private reply to a refusal that went through the tree's error handler."""
    simcord.assert_error(sim.env, kind)
    return ephemeral_text(result)


def edits_of(sim: DiscordSim, message: discord.Message) -> list[object]:
    return sim.requests("PATCH", f"/channels/{message.channel.id}/messages/{message.id}")


# -- the main flow ---------------------------------------------------------------------------


async def test_paint_goes_from_acknowledgement_to_result(
    sim: DiscordSim, channel: simcord.ChannelHandle, alice: simcord.MemberActor
) -> None:
    result = await paint(sim, alice, channel, strength=7, quality="draft")

    [callback] = sim.requests("POST", "/interactions/")
    assert callback.json["type"] == 5  # deferred at once, before downloading
    text = ephemeral_text(result)
    assert "in the queue" in text
    job = await sim.running_job()
    assert job.options.strength == 7
    assert job.options.quality == "draft"
    assert job.photo_name == "cat.png"
    assert job.painting_name == "starry.jpg"
    [status] = bot_messages(channel)
    assert str(status.id) in text  # the member is told where to look
    assert job.status_ref == f"{channel.id}/{status.id}"
    assert [c.label for row in status.components for c in row.children] == ["Cancel"]

    # The job started while its status message was being posted: a change of state is shown
    # at once, without waiting for the edit interval.
    [started] = edits_of(sim, status)
    assert started.json["embeds"][0]["title"] == "🖌️ Painting… 0%"

    # Progress waits for the edit interval after the last edit.
    await sim.engine.progress(job.id, 10, eta=120)
    await sim.settle()
    assert len(edits_of(sim, status)) == 1
    await sim.advance(4)
    assert len(edits_of(sim, status)) == 2
    embed = status_embed(channel.history()[-1])
    assert embed.title == "🖌️ Painting… 10%"
    assert RELATIVE.search(embed.description or "")

    # Progress inside the interval is coalesced into one edit once the interval has passed.
    await sim.engine.progress(job.id, 30, preview=True, eta=90)
    await sim.engine.progress(job.id, 40, preview=True, eta=80)
    await sim.settle()
    assert len(edits_of(sim, status)) == 2
    await sim.advance(4)
    assert len(edits_of(sim, status)) == 3
    status = await channel_message(channel, status.id)
    assert status_embed(status).title == "🖌️ Painting… 40%"
    assert status_embed(status).image.url is not None
    assert [a.filename for a in status.attachments] == ["preview.jpg"]

    # Nothing changed: no edit however long we wait.
    await sim.advance(30)
    assert len(edits_of(sim, status)) == 3

    await sim.finish(job.id, seconds=42)
    messages = bot_messages(channel)
    assert len(messages) == 2
    final = messages[-1]
    assert final.content.startswith(alice.mention)
    assert [a.filename for a in final.attachments] == [f"atelier-{job.id}.png"]
    assert Image.open(io.BytesIO(await final.attachments[0].read())).size == (64, 48)
    embed = status_embed(final)
    assert "cat.png" in (embed.description or "")
    assert "starry.jpg" in (embed.description or "")
    assert "strength 7" in embed.fields[0].value
    labels = [c.label for row in final.components for c in row.children]
    assert labels == ["Stronger", "Softer", "Keep colours", "Delete"]
    assert final.reference is not None
    assert final.reference.message_id == status.id
    status = await channel_message(channel, status.id)
    assert status_embed(status).title == "✅ Done"
    assert status.components == []


async def channel_message(channel: simcord.ChannelHandle, message_id: int) -> discord.Message:
    [message] = [m for m in channel.history() if m.id == message_id]
    return message


async def test_waiting_member_sees_position_and_relative_eta(
    sim: DiscordSim,
    channel: simcord.ChannelHandle,
    alice: simcord.MemberActor,
    bob: simcord.MemberActor,
) -> None:
    await paint(sim, bob, channel)
    await sim.running_job()
    await paint(sim, alice, channel)

    status = bot_messages(channel)[-1]
    embed = status_embed(status)
    assert embed.title == "🎨 Waiting in the queue"
    assert "**#1**" in (embed.description or "")
    assert RELATIVE.search(embed.description or "")

    queue = await alice.slash(channel, "queue")
    text = queue.response.embeds[0].description if queue.response else ""
    assert queue.ephemeral
    assert "Your position: **#1**" in (text or "")
    assert "bob" in (text or "")


# -- buttons ---------------------------------------------------------------------------------


async def test_cancel_button_is_for_the_owner_or_a_moderator(
    sim: DiscordSim,
    guild: simcord.GuildHandle,
    channel: simcord.ChannelHandle,
    alice: simcord.MemberActor,
    bob: simcord.MemberActor,
) -> None:
    await paint(sim, alice, channel)
    job = await sim.running_job()
    status = bot_messages(channel)[-1]

    refused = await bob.click(status, label="Cancel")
    await sim.settle()
    assert ephemeral_text(refused) == "Only alice or a moderator can cancel this painting."
    assert sim.service.get(job.id).state is JobState.RUNNING

    curators = guild.create_role("Curators")
    carol = guild.add_member(sim.env.create_user("carol"), roles=[curators])
    done = await carol.click(status, label="Cancel")
    await sim.events.wait_for(Cancelled, job.id)
    await sim.settle()
    assert "cancel" in ephemeral_text(done).lower()
    assert sim.service.get(job.id).state is JobState.CANCELLED
    status = await channel_message(channel, status.id)
    assert status_embed(status).title == "✖️ Cancelled"
    assert carol.mention in (status_embed(status).description or "")
    assert status.components == []


async def test_cancel_command_cancels_your_job(
    sim: DiscordSim, channel: simcord.ChannelHandle, alice: simcord.MemberActor
) -> None:
    nothing = await alice.slash(channel, "cancel")
    assert "no painting in progress" in refused(sim, nothing, errors.JobNotFound)
    await paint(sim, alice, channel)
    job = await sim.running_job()
    result = await alice.slash(channel, "cancel")
    await sim.events.wait_for(Cancelled, job.id)
    await sim.settle()
    assert "Stopping" in ephemeral_text(result)
    assert sim.service.get(job.id).state is JobState.CANCELLED


async def test_reroll_buttons_work_after_a_restart(
    sim: DiscordSim,
    channel: simcord.ChannelHandle,
    alice: simcord.MemberActor,
    bob: simcord.MemberActor,
) -> None:
    await paint(sim, alice, channel, strength=5)
    job = await sim.running_job()
    await sim.finish(job.id)
    result_message = bot_messages(channel)[-1]

    await sim.restart()

    answer = await alice.click(result_message, label="Stronger")
    await sim.settle()
    assert "Painting it again, stronger" in ephemeral_text(answer)
    rerun = await sim.running_job()
    assert rerun.parent_id == job.id
    assert rerun.options.strength == 7
    status = bot_messages(channel)[-1]
    assert status_embed(status).title in ("🎨 Waiting in the queue", "🖌️ Painting… 0%")
    assert rerun.status_ref == f"{channel.id}/{status.id}"

    # The new status message reports and delivers through the restarted client too.
    await sim.engine.progress(rerun.id, 50)
    await sim.advance(5)
    assert status_embed(await channel_message(channel, status.id)).title == "🖌️ Painting… 50%"
    await sim.finish(rerun.id)
    assert bot_messages(channel)[-1].content.startswith(alice.mention)

    # Delete: not for others, yes for the owner.
    refused = await bob.click(result_message, label="Delete")
    await sim.settle()
    assert ephemeral_text(refused) == "Only alice or a moderator can delete this painting."
    deleted = await alice.click(result_message, label="Delete")
    await sim.settle()
    assert "Deleted" in ephemeral_text(deleted)
    assert result_message.id not in [m.id for m in channel.history()]


# -- refusals --------------------------------------------------------------------------------


async def test_non_image_attachment_is_refused_before_downloading(
    sim: DiscordSim, channel: simcord.ChannelHandle, alice: simcord.MemberActor
) -> None:
    result = await alice.slash(
        channel, "paint", photo=("notes.txt", b"hello"), painting=("starry.jpg", jpeg_bytes())
    )
    await sim.settle()
    text = refused(sim, result, errors.InvalidImage)
    assert "photo" in text
    assert "notes.txt" in text
    assert "isn't an image" in text
    assert bot_messages(channel) == []
    assert sim.service.overview().running is None


async def test_oversized_attachment_is_refused(
    sim: DiscordSim, channel: simcord.ChannelHandle, alice: simcord.MemberActor
) -> None:
    big = ("huge.png", os.urandom(300_000))
    result = await alice.slash(channel, "paint", photo=("cat.png", png_bytes()), painting=big)
    await sim.settle()
    text = refused(sim, result, errors.InvalidImage)
    assert "painting" in text
    assert "0.3 MB" in text
    assert "0.2 MB" in text
    assert bot_messages(channel) == []


async def test_broken_image_is_explained_by_the_service(
    sim: DiscordSim, channel: simcord.ChannelHandle, alice: simcord.MemberActor
) -> None:
    result = await alice.slash(
        channel,
        "paint",
        photo=("cat.png", b"\x89PNG\r\n\x1a\n broken"),
        painting=images()["painting"],
    )
    await sim.settle()
    assert "photo" in refused(sim, result, errors.InvalidImage)
    assert bot_messages(channel) == []


async def test_queue_full_is_a_private_reply(
    sim: DiscordSim,
    guild: simcord.GuildHandle,
    channel: simcord.ChannelHandle,
) -> None:
    members = [guild.add_member(sim.env.create_user(f"m{i}")) for i in range(4)]
    await paint(sim, members[0], channel)
    await sim.running_job()
    await paint(sim, members[1], channel)
    await paint(sim, members[2], channel)
    before = len(bot_messages(channel))

    result = await paint(sim, members[3], channel)

    assert "queue is full" in refused(sim, result, errors.QueueFull)
    assert len(bot_messages(channel)) == before


async def test_second_painting_while_one_is_running_is_refused(
    sim: DiscordSim, channel: simcord.ChannelHandle, alice: simcord.MemberActor
) -> None:
    await paint(sim, alice, channel)
    result = await paint(sim, alice, channel)
    assert "already have a painting" in refused(sim, result, errors.LimitReached)


async def test_missing_permissions_are_explained(
    sim: DiscordSim, guild: simcord.GuildHandle, alice: simcord.MemberActor
) -> None:
    assert sim.bot.user is not None
    locked = guild.create_text_channel(
        "locked",
        overwrites={
            sim.bot.user: discord.PermissionOverwrite(attach_files=False, embed_links=False)
        },
    )
    result = await paint(sim, alice, locked)
    text = refused(sim, result, MissingPermissions)
    assert "**Embed Links**" in text
    assert "**Attach Files**" in text
    assert bot_messages(locked) == []


async def test_channels_outside_the_allowed_list_are_refused(
    sim: DiscordSim, guild: simcord.GuildHandle, alice: simcord.MemberActor
) -> None:
    allowed = guild.create_text_channel("paint-here")
    other = guild.create_text_channel("general")
    sim.bot.settings = discord_settings(channels=frozenset({allowed.id}))
    result = await paint(sim, alice, other)
    assert f"<#{allowed.id}>" in refused(sim, result, errors.NotAllowed)


# -- Discord trouble -------------------------------------------------------------------------


async def test_deleted_status_message_still_gets_the_result(
    sim: DiscordSim,
    guild: simcord.GuildHandle,
    channel: simcord.ChannelHandle,
    alice: simcord.MemberActor,
) -> None:
    await paint(sim, alice, channel)
    job = await sim.running_job()
    status = bot_messages(channel)[-1]
    curators = guild.create_role(
        "Cleaners", permissions=discord.Permissions(manage_messages=True, view_channel=True)
    )
    cleaner = guild.add_member(sim.env.create_user("cleaner"), roles=[curators])
    await cleaner.delete(status)

    await sim.engine.progress(job.id, 50)
    await sim.advance(5)  # the edit meets 404 Unknown Message
    await sim.finish(job.id)

    [result] = bot_messages(channel)
    assert result.content.startswith(alice.mention)
    assert result.attachments
    assert result.reference is None


async def test_discord_errors_do_not_lose_the_result(
    sim: DiscordSim, channel: simcord.ChannelHandle, alice: simcord.MemberActor
) -> None:
    await paint(sim, alice, channel)
    job = await sim.running_job()
    status = bot_messages(channel)[-1]

    sim.env.inject_error("PATCH", f"/channels/{channel.id}/messages/*", status=429, code=0)
    await sim.engine.progress(job.id, 20)
    await sim.advance(5)  # rate limited: skipped, tried again at the next slot
    assert status_embed(await channel_message(channel, status.id)).title != "🖌️ Painting… 20%"
    await sim.advance(5)
    assert status_embed(await channel_message(channel, status.id)).title == "🖌️ Painting… 20%"

    sim.env.inject_error("POST", f"/channels/{channel.id}/messages", status=503)
    await sim.finish(job.id)
    assert len(bot_messages(channel)) == 1  # the first post failed; a retry is waiting
    await sim.advance(2)
    assert len(bot_messages(channel)) == 2
    assert bot_messages(channel)[-1].attachments


async def test_a_dropped_connection_while_posting_does_not_lose_the_result(
    sim: DiscordSim,
    channel: simcord.ChannelHandle,
    alice: simcord.MemberActor,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await paint(sim, alice, channel)
    job = await sim.running_job()
    status = bot_messages(channel)[-1]
    http = sim.bot.http
    original = http.request
    drops = {"PATCH": 1, "POST": 1}

    async def flaky(route: discord.http.Route, **kwargs: object) -> object:
        # discord.py lets connection errors through after its own retries.
        if route.path.startswith("/channels/{channel_id}/messages") and drops.get(route.method):
            drops[route.method] -= 1
            raise aiohttp.ServerDisconnectedError()
        return await original(route, **kwargs)

    monkeypatch.setattr(http, "request", flaky)
    await sim.engine.progress(job.id, 30)
    await sim.advance(5)  # the edit meets a dropped connection: tried again at the next slot
    await sim.engine.progress(job.id, 60)
    await sim.advance(5)
    assert status_embed(await channel_message(channel, status.id)).title == "🖌️ Painting… 60%"

    await sim.finish(job.id)
    assert len(bot_messages(channel)) == 1  # the first post was dropped; a retry is waiting
    await sim.advance(2)
    [_, result] = bot_messages(channel)
    assert result.content.startswith(alice.mention)
    assert result.attachments
    assert status_embed(await channel_message(channel, status.id)).title == "✅ Done"


async def test_a_job_that_outlives_the_interaction_token_still_delivers(
    sim: DiscordSim, channel: simcord.ChannelHandle, alice: simcord.MemberActor
) -> None:
    result = await paint(sim, alice, channel)
    job = await sim.running_job()
    status = bot_messages(channel)[-1]

    for minute in range(1, 21):
        await sim.engine.progress(job.id, minute * 4)
        await sim.advance(60)
    assert status_embed(await channel_message(channel, status.id)).title == "🖌️ Painting… 80%"
    # The interaction token is dead by now: any use of it would fail with 401/404.
    with pytest.raises(discord.HTTPException):
        await sim.env.bot.http.request(  # type: ignore[attr-defined]
            discord.http.Route(
                "PATCH",
                "/webhooks/{application_id}/{token}/messages/@original",
                application_id=sim.bot.application_id,
                token=f"simcord_interaction_{result._interaction.id}",
            ),
            json={"content": "late"},
        )

    await sim.finish(job.id)
    assert bot_messages(channel)[-1].content.startswith(alice.mention)
    assert status_embed(await channel_message(channel, status.id)).title == "✅ Done"


async def test_result_goes_by_direct_message_when_the_channel_refuses(
    sim: DiscordSim, channel: simcord.ChannelHandle, alice: simcord.MemberActor
) -> None:
    await paint(sim, alice, channel)
    job = await sim.running_job()
    sim.env.inject_error(
        "POST",
        f"/channels/{channel.id}/messages",
        status=403,
        code=50013,
        message="Missing Permissions",
        times=None,
    )
    await sim.finish(job.id)
    [result] = [m for m in alice.user.dm_channel.history() if m.author.bot]
    assert result.attachments[0].filename == f"atelier-{job.id}.png"


async def test_failed_painting_says_why_on_the_status_message(
    sim: DiscordSim, channel: simcord.ChannelHandle, alice: simcord.MemberActor
) -> None:
    await paint(sim, alice, channel)
    job = await sim.running_job()
    await sim.fail(job.id, "out_of_memory", "The photo is too big for the GPU today.")
    [status] = bot_messages(channel)
    embed = status_embed(status)
    assert embed.title == "⚠️ This painting didn't work out"
    assert "too big for the GPU" in (embed.description or "")
    assert status.components == []


async def test_a_painting_faster_than_the_status_message_is_still_delivered(
    sim: DiscordSim, channel: simcord.ChannelHandle, alice: simcord.MemberActor
) -> None:
    sim.engine.auto = True
    result = await paint(sim, alice, channel)
    await sim.events.wait_for(Finished)
    await sim.settle()
    assert "in the queue" in ephemeral_text(result)
    messages = bot_messages(channel)
    assert sum(1 for m in messages if m.attachments and m.content.startswith(alice.mention)) == 1
    assert all(m.components == [] for m in messages if not m.attachments)


# -- DMs, help ------------------------------------------------------------------------------


async def test_paint_in_a_direct_message(sim: DiscordSim) -> None:
    dora = sim.env.create_user("dora")
    result = await dora.slash("paint", **images())
    await sim.settle()
    assert "in the queue" in ephemeral_text(result)
    job = await sim.running_job()
    await sim.finish(job.id)
    messages = [m for m in dora.dm_channel.history() if m.author.bot and not m.flags.ephemeral]
    assert messages[-1].attachments
    assert messages[-1].content.startswith(dora.mention)


async def test_help_has_an_example(
    sim: DiscordSim, channel: simcord.ChannelHandle, alice: simcord.MemberActor
) -> None:
    result = await alice.slash(channel, "help")
    assert result.ephemeral
    assert result.response is not None
    assert "/paint photo:" in (result.response.embeds[0].description or "")


# -- pieces ----------------------------------------------------------------------------------


def test_result_too_large_for_the_upload_limit_becomes_a_jpeg() -> None:
    # A photo-like picture: smooth gradients and a little grain, which JPEG handles well.
    grain = Image.effect_noise((320, 240), 24).convert("RGB")
    gradient = Image.linear_gradient("L").resize((320, 240)).convert("RGB")
    picture = Image.blend(gradient, grain, 0.3)
    buffer = io.BytesIO()
    picture.save(buffer, "PNG")
    png = buffer.getvalue()
    same, name = encode_for_upload(png, len(png), "abc")
    assert same == png
    assert name == "atelier-abc.png"
    data, name = encode_for_upload(png, len(png) // 3, "abc")
    assert name == "atelier-abc.jpg"
    assert len(data) <= len(png) // 3
    assert Image.open(io.BytesIO(data)).format == "JPEG"


def test_a_noisy_result_still_fits_the_upload_limit() -> None:
    noise = Image.frombytes("RGB", (300, 300), os.urandom(300 * 300 * 3))
    buffer = io.BytesIO()
    noise.save(buffer, "PNG")
    data, name = encode_for_upload(buffer.getvalue(), 120_000, "xyz")
    assert name == "atelier-xyz.jpg"
    assert len(data) <= 120_000
    assert Image.open(io.BytesIO(data)).format == "JPEG"


async def test_a_painting_in_the_photos_colours_offers_the_paintings_colours(
    sim: DiscordSim, channel: simcord.ChannelHandle, alice: simcord.MemberActor
) -> None:
    await paint(sim, alice, channel, keep_colors=True)
    job = await sim.running_job()
    await sim.finish(job.id)
    result_message = bot_messages(channel)[-1]
    labels = [c.label for row in result_message.components for c in row.children]
    assert labels == ["Stronger", "Softer", "Painting's colours", "Delete"]

    answer = await alice.click(result_message, label="Painting's colours")
    await sim.settle()
    assert "Painting it again, with the painting's colours" in ephemeral_text(answer)
    again = await sim.running_job()
    assert again.parent_id == job.id
    assert again.options.keep_colors is False


def test_the_readme_invite_link_asks_for_the_permissions_the_bot_checks() -> None:
    from bot.discord.client import INVITE_PERMISSIONS

    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    [granted] = re.findall(r"scope=bot\+applications\.commands&permissions=(\d+)", readme)
    assert int(granted) == INVITE_PERMISSIONS.value
