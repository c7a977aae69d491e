"""Blends (``/paint ... painting2: blend:``) and the Timelapse button on the simulated Discord."""

from __future__ import annotations

import pytest
import simcord

from bot import errors, replies
from tests.bot.discord.sim import (
    DiscordSim,
    bot_messages,
    count_fetches,
    images,
    private,
    refused,
    status_embed,
)
from tests.fakes import TIMELAPSE_WEBP, jpeg_bytes

WAVES = ("waves.jpg", jpeg_bytes((40, 40), (10, 180, 90)))


async def test_a_blend_of_two_paintings_is_painted_and_summarised(
    sim: DiscordSim, channel: simcord.ChannelHandle, alice: simcord.MemberActor
) -> None:
    await alice.slash(channel, "paint", **images(), painting2=WAVES, blend=30)
    await sim.settle()
    job = await sim.running_job()
    assert job.options.blend == 30 and job.painting2_name == "waves.jpg"
    assert sim.engine.seen[-1].painting2_path == job.painting2_path
    status = bot_messages(channel)[-1]
    embed = status_embed(status)
    assert "blend 30% with waves.jpg" in (embed.footer.text or "")
    assert "starry.jpg" in embed.fields[0].value and "waves.jpg" in embed.fields[0].value
    await sim.finish(job.id)
    result = status_embed(bot_messages(channel)[-1])
    assert "blend 30% with waves.jpg" in result.fields[0].value


async def test_a_second_painting_alone_blends_half_and_half_and_blend_alone_is_refused(
    sim: DiscordSim,
    channel: simcord.ChannelHandle,
    alice: simcord.MemberActor,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fetched = count_fetches(sim, monkeypatch)
    lonely = await alice.slash(channel, "paint", **images(), blend=30)
    await sim.settle()
    assert refused(sim, lonely, errors.InvalidOptions) == (
        "blend sets how much of a second painting's style to mix in, so it needs one: attach "
        "that painting as painting2."
    )
    assert fetched == []  # refused before anything was downloaded
    await alice.slash(channel, "paint", **images(), painting2=WAVES)
    await sim.settle()
    job = await sim.running_job()
    assert job.options.blend == 50 and job.painting2_name == "waves.jpg"


async def test_a_saved_style_blends_with_a_second_painting(
    sim: DiscordSim,
    channel: simcord.ChannelHandle,
    olga: simcord.MemberActor,
    alice: simcord.MemberActor,
) -> None:
    added = await olga.slash(channel, "style add", name="starry", painting=images()["painting"])
    await sim.settle()
    assert "Saved" in private(added)
    photo = images()["photo"]
    await alice.slash(channel, "paint", photo=photo, style="starry", painting2=WAVES, blend=70)
    await sim.settle()
    job = await sim.running_job()
    assert job.painting_name == "starry" and job.painting2_name == "waves.jpg"
    assert job.options.blend == 70
    assert "blend 70% with waves.jpg" in (status_embed(bot_messages(channel)[-1]).footer.text or "")


async def test_anyone_in_the_channel_gets_the_timelapse_even_after_a_restart(
    sim: DiscordSim,
    channel: simcord.ChannelHandle,
    alice: simcord.MemberActor,
    bob: simcord.MemberActor,
) -> None:
    await alice.slash(channel, "paint", **images())
    await sim.settle()
    job = await sim.running_job()
    await sim.finish(job.id)
    result = bot_messages(channel)[-1]
    button = next(c for row in result.components for c in row.children if c.label == "Timelapse")
    assert button.custom_id == f"atelier:timelapse:{job.id}"  # the job id only

    await sim.restart()
    # The id on the message, as a literal: old messages carry it after an upgrade too.
    pressed = await bob.click(result, custom_id=f"atelier:timelapse:{job.id}")  # not the owner
    await sim.settle()
    assert pressed.acknowledged and not pressed.ephemeral
    posted = pressed.response  # the deferred answer, filled by the first follow-up
    assert posted is not None and not posted.ephemeral
    assert posted.content == "🎞️ alice's painting emerging from the photo."
    [animation] = posted.attachments
    assert animation.filename == f"atelier-{job.id}-timelapse.webp"
    assert await animation.read() == TIMELAPSE_WEBP


async def test_a_timelapse_too_big_to_upload_or_past_the_retention_period_is_explained(
    sim: DiscordSim, channel: simcord.ChannelHandle, alice: simcord.MemberActor
) -> None:
    sim.engine.timelapse_bytes = (b"RIFF" + bytes(26 * 1024 * 1024), b"mp4")
    await alice.slash(channel, "paint", **images())
    await sim.settle()
    job = await sim.running_job()
    await sim.finish(job.id)
    result = bot_messages(channel)[-1]
    before = len(bot_messages(channel))
    too_big = await alice.click(result, label="Timelapse")
    await sim.settle()
    assert private(too_big) == (
        "The timelapse is 26.0 MB, more than the 25.0 MB I may upload here, so I can't post it "
        "in this channel."
    )
    await sim.advance(sim.limits.retention_hours * 3600 + 1)
    late = await alice.click(result, label="Timelapse")
    await sim.settle()
    assert private(late) == (
        "Timelapses are kept for 3 days after a painting is finished, and this one's time is up."
    )
    assert len(bot_messages(channel)) == before  # nothing posted for either
    assert not too_big.deferred and not late.deferred  # answered at once, privately


async def test_a_timelapse_pressed_again_soon_is_not_posted_again(
    sim: DiscordSim,
    channel: simcord.ChannelHandle,
    alice: simcord.MemberActor,
    bob: simcord.MemberActor,
) -> None:
    await alice.slash(channel, "paint", **images())
    await sim.settle()
    job = await sim.running_job()
    await sim.finish(job.id)
    result = bot_messages(channel)[-1]
    first = await bob.click(result, label="Timelapse")
    await sim.settle()
    assert first.response is not None and first.response.attachments
    again = [await bob.click(result, label="Timelapse") for _ in range(3)]
    await sim.settle()
    for press in again:
        assert private(press) == replies.timelapse_just_posted(600)
        assert not press.deferred  # answered at once, privately: nothing uploaded
    await sim.advance(601)
    later = await alice.click(result, label="Timelapse")
    await sim.settle()
    assert later.response is not None and later.response.attachments
