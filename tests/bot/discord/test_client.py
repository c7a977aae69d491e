"""What every Discord command shares: where the bot may paint, and the permissions it asks for."""

from __future__ import annotations

import asyncio
import re
import socket
from pathlib import Path

import discord
import pytest
import simcord
from aiohttp import web

from bot import errors
from bot.discord.client import MissingPermissions
from bot.jobs import Cancelled, JobState
from bot.service import PaintService
from tests.bot.discord.sim import (
    DiscordSim,
    bot_messages,
    discord_settings,
    paint,
    private,
    refused,
)

RELATIVE = re.compile(r"<t:\d+:R>")


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


def test_the_readme_invite_link_asks_for_the_permissions_the_bot_checks() -> None:
    from bot.discord.client import INVITE_PERMISSIONS

    readme = (Path(__file__).parents[3] / "README.md").read_text(encoding="utf-8")
    [granted] = re.findall(r"scope=bot\+applications\.commands&permissions=(\d+)", readme)
    assert int(granted) == INVITE_PERMISSIONS.value


async def test_a_role_set_by_id_is_matched_by_id_not_by_a_role_named_after_it(
    sim: DiscordSim,
    guild: simcord.GuildHandle,
    channel: simcord.ChannelHandle,
    alice: simcord.MemberActor,
) -> None:
    mods = guild.create_role("Mods")
    sim.bot.settings = discord_settings(moderator_role=str(mods.id))
    # Anyone who may create roles can name one after the moderators' id.
    impostors = guild.create_role(str(mods.id))
    eve = guild.add_member(sim.env.create_user("eve"), roles=[impostors])
    mona = guild.add_member(sim.env.create_user("mona"), roles=[mods])
    await paint(sim, alice, channel)
    job = await sim.running_job()
    status = bot_messages(channel)[-1]

    refused = await eve.click(status, label="Cancel")
    await sim.settle()
    assert private(refused) == "Only alice or a moderator can cancel this painting."
    assert sim.service.get(job.id).state is JobState.RUNNING
    await mona.click(status, label="Cancel")
    await sim.events.wait_for(Cancelled, job.id)
    assert sim.service.get(job.id).state is JobState.CANCELLED


def test_a_role_name_still_works_and_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    from bot.discord.client import AtelierDiscord

    AtelierDiscord(discord_settings(moderator_role="Curators"), None)  # type: ignore[arg-type]
    assert "DISCORD_MODERATOR_ROLE is a role name" in caplog.text


async def test_discord_out_of_reach_at_login_is_waited_out_and_a_rejected_token_stops(
    service: PaintService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real discord.py HTTP client at boot: Discord first out of reach (a refused
    connection), tried again after a pause; then it answers that the token is wrong, and that
    stops the client at once, for the clear message at the top."""
    from bot.discord.client import AtelierDiscord

    with socket.socket() as unused:  # a port nobody listens on
        unused.bind(("127.0.0.1", 0))
        nobody = unused.getsockname()[1]
    monkeypatch.setattr(discord.http.Route, "BASE", f"http://127.0.0.1:{nobody}/api/v10")
    asked: list[str | None] = []

    async def users_me(request: web.Request) -> web.Response:
        asked.append(request.headers.get("Authorization"))
        return web.json_response({"message": "401: Unauthorized", "code": 0}, status=401)

    app = web.Application()
    app.router.add_get("/api/v10/users/@me", users_me)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    discord_api = f"http://127.0.0.1:{runner.addresses[0][1]}/api/v10"
    pauses: list[float] = []

    async def pause(seconds: float) -> None:
        pauses.append(seconds)
        monkeypatch.setattr(discord.http.Route, "BASE", discord_api)  # Discord is back

    client = AtelierDiscord(discord_settings(), service, sleep=pause)
    try:
        with pytest.raises(discord.LoginFailure):
            await asyncio.wait_for(client.start("not-the-token"), 30)
    finally:
        await client.close()
        await runner.cleanup()
    assert pauses == [2.0]
    assert asked == ["Bot not-the-token"]
