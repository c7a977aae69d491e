"""Status messages and Cancel on the simulated Discord, through Discord trouble, following jobs
to their results (the results themselves: test_results.py).

Members click buttons (also after a restart, by the custom ids already posted); Discord
refuses, rate limits and drops connections; the tests assert that edits are paced, results are
never lost and failures are told.
"""

from __future__ import annotations

import aiohttp
import discord
import pytest
import simcord

from bot.jobs import Cancelled, Finished, JobState
from tests.bot.discord.sim import (
    DiscordSim,
    bot_messages,
    channel_message,
    paint,
    private,
    status_embed,
)


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
    assert private(refused) == "Only alice or a moderator can cancel this painting."
    assert sim.service.get(job.id).state is JobState.RUNNING

    curators = guild.create_role("Curators")
    carol = guild.add_member(sim.env.create_user("carol"), roles=[curators])
    done = await carol.click(status, label="Cancel")
    await sim.events.wait_for(Cancelled, job.id)
    await sim.settle()
    assert "cancel" in private(done).lower()
    assert sim.service.get(job.id).state is JobState.CANCELLED
    status = channel_message(channel, status.id)
    assert status_embed(status).title == "✖️ Cancelled"
    assert carol.mention in (status_embed(status).description or "")
    assert status.components == []


async def test_status_and_result_buttons_keep_their_custom_ids_across_a_restart(
    sim: DiscordSim, channel: simcord.ChannelHandle, alice: simcord.MemberActor
) -> None:
    """Messages already posted carry these exact strings: pressing them after a restart (or
    an upgrade) must still reach Cancel, the re-rolls and Delete."""
    await paint(sim, alice, channel, strength=5)
    job = await sim.running_job()
    status = bot_messages(channel)[-1]
    await sim.finish(job.id)
    result_message = bot_messages(channel)[-1]
    await sim.restart()

    answer = await alice.click(result_message, custom_id=f"atelier:reroll:stronger:{job.id}")
    await sim.settle()
    assert "Painting it again, stronger" in private(answer)
    rerun = await sim.running_job()
    assert (rerun.parent_id, rerun.options.strength) == (job.id, 7)
    rerun_status = bot_messages(channel)[-1]
    assert rerun_status.id != status.id
    await sim.restart()
    cancelled = await alice.click(rerun_status, custom_id=f"atelier:cancel:{rerun.id}")
    await sim.settle()
    assert "cancel" in private(cancelled).lower()
    assert sim.service.get(rerun.id).state is JobState.CANCELLED

    deleted = await alice.click(result_message, custom_id=f"atelier:delete:{job.id}")
    await sim.settle()
    assert private(deleted) == "Deleted the painting."
    assert result_message.id not in [m.id for m in channel.history()]


async def test_discord_errors_do_not_lose_the_result(
    sim: DiscordSim, channel: simcord.ChannelHandle, alice: simcord.MemberActor
) -> None:
    await paint(sim, alice, channel)
    job = await sim.running_job()
    status = bot_messages(channel)[-1]

    sim.env.inject_error("PATCH", f"/channels/{channel.id}/messages/*", status=429, code=0)
    await sim.engine.progress(job.id, 20)
    await sim.advance(5)  # rate limited: skipped, tried again at the next slot
    assert status_embed(channel_message(channel, status.id)).title != "🖌️ Painting… 20%"
    await sim.advance(5)
    assert status_embed(channel_message(channel, status.id)).title == "🖌️ Painting… 20%"

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
    assert status_embed(channel_message(channel, status.id)).title == "🖌️ Painting… 60%"

    await sim.finish(job.id)
    assert len(bot_messages(channel)) == 1  # the first post was dropped; a retry is waiting
    await sim.advance(2)
    [_, result] = bot_messages(channel)
    assert result.content.startswith(alice.mention)
    assert result.attachments
    assert status_embed(channel_message(channel, status.id)).title == "✅ Done"


async def test_a_job_that_outlives_the_interaction_token_still_delivers(
    sim: DiscordSim, channel: simcord.ChannelHandle, alice: simcord.MemberActor
) -> None:
    result = await paint(sim, alice, channel)
    job = await sim.running_job()
    status = bot_messages(channel)[-1]

    for minute in range(1, 21):
        await sim.engine.progress(job.id, minute * 4)
        await sim.advance(60)
    assert status_embed(channel_message(channel, status.id)).title == "🖌️ Painting… 80%"
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
    assert status_embed(channel_message(channel, status.id)).title == "✅ Done"


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
    assert "in the queue" in private(result)
    messages = bot_messages(channel)
    assert sum(1 for m in messages if m.attachments and m.content.startswith(alice.mention)) == 1
    assert all(m.components == [] for m in messages if not m.attachments)
