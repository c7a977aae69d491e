"""What every Discord command shares: where the bot may paint, and the permissions it asks for."""

from __future__ import annotations

import re
from pathlib import Path

import discord
import simcord

from bot import errors
from bot.discord.client import MissingPermissions
from tests.bot.discord.sim import (
    DiscordSim,
    bot_messages,
    discord_settings,
    paint,
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
