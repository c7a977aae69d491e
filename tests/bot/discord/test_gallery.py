"""/gallery through the simulated Discord: pages, and never a painting from a hidden channel."""

from __future__ import annotations

import discord
import pytest
import simcord

from bot.settings import Limits
from tests.bot.discord.sim import DiscordSim, member
from tests.fakes import jpeg_bytes, png_bytes


@pytest.fixture
def limits() -> Limits:
    return Limits(per_member=3, max_input_bytes=200_000)


async def test_gallery_pages_through_the_servers_paintings(
    sim: DiscordSim, guild: simcord.GuildHandle, channel: simcord.ChannelHandle
) -> None:
    alice, bob = member(sim, guild, "alice"), member(sim, guild, "bob")
    for who in (alice, bob, alice):
        await who.slash(
            channel, "paint", photo=("cat.png", png_bytes()), painting=("s.jpg", jpeg_bytes())
        )
        await sim.settle()
        job_id = await sim.engine.wait_started()
        await sim.finish(job_id)
    # A painting in another server is not in this one's gallery.
    elsewhere = sim.env.create_guild("Elsewhere")
    stranger = elsewhere.add_member(sim.env.create_user("stranger"))
    await stranger.slash(
        elsewhere.create_text_channel("x"),
        "paint",
        photo=("cat.png", png_bytes()),
        painting=("s.jpg", jpeg_bytes()),
    )
    await sim.settle()
    await sim.finish(await sim.engine.wait_started())

    mark = len(sim.requests("POST", "/interactions/"))
    shown = await bob.slash(channel, "gallery")
    await sim.settle()
    # Acknowledged before the paintings are read and uploaded (Discord allows 3 seconds).
    assert sim.requests("POST", "/interactions/")[mark].json["type"] == 5
    assert shown.ephemeral and shown.response is not None
    page = shown.response.message
    assert "page 1 of 2" in page.content
    assert len(page.embeds) == 2
    assert alice.mention in (page.embeds[0].description or "")  # newest first
    assert bob.mention in (page.embeds[1].description or "")
    assert len(page.attachments) == 2
    assert [c.disabled for row in page.components for c in row.children] == [True, False]

    mark = len(sim.requests("POST", "/interactions/"))
    await bob.click(page, label="Next")
    await sim.settle()
    assert sim.requests("POST", "/interactions/")[mark].json["type"] == 6
    message = shown.response.message
    assert "page 2 of 2" in message.content
    assert len(message.embeds) == 1
    assert alice.mention in (message.embeds[0].description or "")

    mine = await bob.slash(channel, "gallery", member=bob)
    await sim.settle()
    assert mine.response is not None
    assert "page 1 of 1" in mine.response.content
    assert len(mine.response.embeds) == 1


async def test_gallery_never_shows_paintings_from_channels_the_member_cannot_see(
    sim: DiscordSim, guild: simcord.GuildHandle, channel: simcord.ChannelHandle
) -> None:
    assert sim.bot.user is not None
    mods = guild.create_role("Mods")
    secret = guild.create_text_channel(
        "mods-only",
        overwrites={
            guild.roles["@everyone"]: discord.PermissionOverwrite(view_channel=False),
            mods: discord.PermissionOverwrite(view_channel=True),
            sim.bot.user: discord.PermissionOverwrite(view_channel=True),
        },
    )
    mia = guild.add_member(sim.env.create_user("mia"), roles=[mods])
    bob = member(sim, guild, "bob")
    for who, where in ((mia, secret), (bob, channel)):
        await who.slash(
            where, "paint", photo=("cat.png", png_bytes()), painting=("s.jpg", jpeg_bytes())
        )
        await sim.settle()
        await sim.finish(await sim.engine.wait_started())

    shown = await bob.slash(channel, "gallery")
    await sim.settle()
    assert shown.response is not None
    assert "page 1 of 1" in shown.response.content
    assert len(shown.response.embeds) == 1
    assert bob.mention in (shown.response.embeds[0].description or "")

    theirs = await bob.slash(channel, "gallery", member=mia)
    await sim.settle()
    assert theirs.response is not None
    assert "No paintings" in theirs.response.content

    mods_view = await mia.slash(secret, "gallery")
    await sim.settle()
    assert mods_view.response is not None
    assert len(mods_view.response.embeds) == 2
