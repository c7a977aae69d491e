"""Results on the simulated Discord: posted under the status message (or without it, or by
direct message), never lost to Discord trouble or a stop, and the re-roll and Delete buttons
under them (also after a restart).
"""

from __future__ import annotations

import discord
import simcord

from bot.options import rerolls_for
from tests.bot.discord.sim import (
    DiscordSim,
    bot_messages,
    channel_message,
    paint,
    private,
    status_embed,
)


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
    assert "Painting it again, stronger" in private(answer)
    rerun = await sim.running_job()
    assert rerun.parent_id == job.id
    assert rerun.options.strength == 7
    status = bot_messages(channel)[-1]
    assert status_embed(status).title in ("🎨 Waiting in the queue", "🖌️ Painting… 0%")
    assert rerun.status_ref == f"{channel.id}/{status.id}"

    # The new status message reports and delivers through the restarted client too.
    await sim.engine.progress(rerun.id, 50)
    await sim.advance(5)
    assert status_embed(channel_message(channel, status.id)).title == "🖌️ Painting… 50%"
    await sim.finish(rerun.id)
    assert bot_messages(channel)[-1].content.startswith(alice.mention)

    # Delete: not for others, yes for the owner.
    refused = await bob.click(result_message, label="Delete")
    await sim.settle()
    assert private(refused) == "Only alice or a moderator can delete this painting."
    deleted = await alice.click(result_message, label="Delete")
    await sim.settle()
    assert "Deleted" in private(deleted)
    assert result_message.id not in [m.id for m in channel.history()]


async def test_a_painting_in_the_photos_colours_offers_the_paintings_colours(
    sim: DiscordSim, channel: simcord.ChannelHandle, alice: simcord.MemberActor
) -> None:
    await paint(sim, alice, channel, keep_colors=True)
    job = await sim.running_job()
    await sim.finish(job.id)
    result_message = bot_messages(channel)[-1]
    labels = [c.label for row in result_message.components for c in row.children]
    rerolls = [way.label(job.options) for way in rerolls_for(job.options)]
    assert labels == [*rerolls, "Timelapse", "Delete"]
    assert "Painting's colours" in labels
    assert "Keep colours" not in labels

    answer = await alice.click(result_message, label="Painting's colours")
    await sim.settle()
    assert "Painting it again, with the painting's colours" in private(answer)
    again = await sim.running_job()
    assert again.parent_id == job.id
    assert again.options.keep_colors is False


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


async def test_rerolls_are_for_the_owner_and_moderators(
    sim: DiscordSim,
    guild: simcord.GuildHandle,
    channel: simcord.ChannelHandle,
    alice: simcord.MemberActor,
    bob: simcord.MemberActor,
) -> None:
    await paint(sim, alice, channel, strength=5)
    job = await sim.running_job()
    await sim.finish(job.id)
    result_message = bot_messages(channel)[-1]

    refused = await bob.click(result_message, label="Stronger")
    await sim.settle()
    assert private(refused) == "Only alice can paint this again."
    assert sim.service.overview().running is None

    curators = guild.create_role("Curators")
    carol = guild.add_member(sim.env.create_user("carol"), roles=[curators])
    answer = await carol.click(result_message, label="Stronger")
    await sim.settle()
    assert "Painting it again, stronger" in private(answer)
    rerun = await sim.running_job()
    assert (rerun.parent_id, rerun.user_id, rerun.options.strength) == (job.id, str(carol.id), 7)


async def test_delete_acknowledges_before_it_calls_discord(
    sim: DiscordSim, channel: simcord.ChannelHandle, alice: simcord.MemberActor
) -> None:
    await paint(sim, alice, channel)
    job = await sim.running_job()
    await sim.finish(job.id)
    result_message = bot_messages(channel)[-1]
    mark = len(sim.env.http_requests)
    deleted = await alice.click(result_message, label="Delete")
    await sim.settle()
    assert private(deleted) == "Deleted the painting."
    calls = [(r.method, r.path) for r in sim.env.http_requests[mark:]]
    acknowledged = next(i for i, c in enumerate(calls) if c[1].startswith("/interactions/"))
    removed = calls.index(("DELETE", f"/channels/{channel.id}/messages/{result_message.id}"))
    assert acknowledged < removed
    assert sim.requests("POST", "/interactions/")[-1].json["type"] == 5  # deferred


async def test_a_result_not_posted_before_a_stop_is_posted_once_after_the_restart(
    sim: DiscordSim, channel: simcord.ChannelHandle, alice: simcord.MemberActor
) -> None:
    """Discord could not be reached while the painting finished, past every retry (the
    channel and a direct message alike); the bot stopped. The result is posted after the
    restart, once: not again after the next one."""
    await paint(sim, alice, channel)
    job = await sim.running_job()
    sim.env.inject_error("POST", "/channels/*/messages", status=503, times=None)
    await sim.finish(job.id)
    await sim.advance(2)
    await sim.advance(5)  # the last retry; then a direct message is tried, and fails too
    assert len(bot_messages(channel)) == 1  # the status message only
    stored = sim.store.get_job(job.id)
    assert stored is not None and stored.delivered_at is None

    sim.env.backend.faults.clear()  # Discord is back
    await sim.restart()
    results = [m for m in bot_messages(channel) if m.attachments]
    assert [m.attachments[0].filename for m in results] == [f"atelier-{job.id}.png"]
    assert results[0].content.startswith(alice.mention)
    stored = sim.store.get_job(job.id)
    assert stored is not None and stored.delivered_at is not None

    await sim.restart()
    assert len([m for m in bot_messages(channel) if m.attachments]) == 1
