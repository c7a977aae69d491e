"""/paint, /cancel, /queue and /help through a simulated Discord (simcord) and the real service.

Every test acts as a member would (slash commands with attachments) and asserts what Discord
then holds: private replies, the status message and its edits, the result.
"""

from __future__ import annotations

import asyncio
import io
import os
import re

import pytest
import simcord
import simcord.actors as simcord_actors
from PIL import Image

from bot import errors
from bot.jobs import Cancelled, JobState
from bot.options import rerolls_for
from tests.bot.discord.sim import (
    DiscordSim,
    bot_messages,
    channel_message,
    count_fetches,
    edits_of,
    images,
    member,
    paint,
    private,
    refused,
    status_embed,
)
from tests.fakes import jpeg_bytes, png_bytes

RELATIVE = re.compile(r"<t:\d+:R>")


async def test_paint_goes_from_acknowledgement_to_result(
    sim: DiscordSim, channel: simcord.ChannelHandle, alice: simcord.MemberActor
) -> None:
    result = await paint(sim, alice, channel, strength=7, quality="draft")

    [callback] = sim.requests("POST", "/interactions/")
    assert callback.json["type"] == 5  # deferred at once, before downloading
    text = private(result)
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
    status = channel_message(channel, status.id)
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
    rerolls = [way.label(job.options) for way in rerolls_for(job.options)]
    assert labels == [*rerolls, "Timelapse", "Delete"]
    known = ["Stronger", "Softer", "Keep colours"]
    assert [label for label in labels if label in known] == known
    assert final.reference is not None
    assert final.reference.message_id == status.id
    status = channel_message(channel, status.id)
    assert status_embed(status).title == "✅ Done"
    assert status.components == []


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
    assert "Stopping" in private(result)
    assert sim.service.get(job.id).state is JobState.CANCELLED


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


async def test_an_attachment_discord_will_not_hand_out_is_asked_for_again(
    sim: DiscordSim,
    channel: simcord.ChannelHandle,
    alice: simcord.MemberActor,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cdn = sim.env.backend.cdn
    stored = cdn.get
    monkeypatch.setattr(cdn, "get", lambda url: None if url.endswith("/cat.png") else stored(url))
    result = await paint(sim, alice, channel)
    text = refused(sim, result, errors.InvalidImage)
    assert text == "I couldn't download the photo (**cat.png**) from Discord. Please send it again."
    assert bot_messages(channel) == []
    assert sim.service.overview().running is None


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


async def test_paint_in_a_direct_message(sim: DiscordSim) -> None:
    dora = sim.env.create_user("dora")
    result = await dora.slash("paint", **images())
    await sim.settle()
    assert "in the queue" in private(result)
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


async def test_past_a_limit_nothing_is_fetched(
    sim: DiscordSim,
    channel: simcord.ChannelHandle,
    alice: simcord.MemberActor,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await paint(sim, alice, channel)
    await sim.running_job()
    fetched = count_fetches(sim, monkeypatch)
    result = await paint(sim, alice, channel)
    assert "already have a painting" in refused(sim, result, errors.LimitReached)
    assert fetched == []
    [callback] = [r for r in sim.requests("POST", "/interactions/")][-1:]
    assert callback.json["type"] == 4  # answered at once: never deferred to download


async def test_cancel_stops_only_the_painting_in_the_channel_where_it_is_sent(
    sim: DiscordSim,
    guild: simcord.GuildHandle,
    channel: simcord.ChannelHandle,
    alice: simcord.MemberActor,
) -> None:
    await paint(sim, alice, channel)
    job = await sim.running_job()
    elsewhere = guild.create_text_channel("elsewhere")
    nothing = await alice.slash(elsewhere, "cancel")
    await sim.settle()
    assert "no painting in progress" in refused(sim, nothing, errors.JobNotFound)
    assert sim.service.get(job.id).state is JobState.RUNNING
    stopped = await alice.slash(channel, "cancel")
    await sim.events.wait_for(Cancelled, job.id)
    await sim.settle()
    assert "Stopping" in private(stopped)


async def test_two_requests_admitted_at_once_each_show_their_own_position_first(
    sim: DiscordSim,
    guild: simcord.GuildHandle,
    channel: simcord.ChannelHandle,
    bob: simcord.MemberActor,
) -> None:
    await paint(sim, bob, channel)
    await sim.running_job()
    carol, dave = member(sim, guild, "carol"), member(sim, guild, "dave")
    # simcord runs one member operation at a time; its inner dispatch lets two interactions
    # reach the bot together, as two members pressing Enter at once do.
    await asyncio.gather(
        simcord_actors._slash(carol, channel, "paint", images()),
        simcord_actors._slash(dave, channel, "paint", images()),
    )
    await sim.settle()

    deferred = [r for r in sim.env.http_requests if r.path.endswith("/callback")][-2:]
    posted = [r.json for r in sim.requests("POST", f"/channels/{channel.id}/messages") if r.json]
    first_renders = [p["embeds"][0]["description"] for p in posted[1:]]
    assert len(first_renders) == 2
    shown = sorted(re.findall(r"\*\*#(\d)\*\*", text)[0] for text in first_renders)
    assert shown == ["1", "2"]
    # Both were being handled before either status message was posted.
    first_post = next(i for i, r in enumerate(sim.env.http_requests) if r.json == posted[1])
    assert all(sim.env.http_requests.index(r) < first_post for r in deferred)
