"""The Discord client: life cycle, the checks and replies every command uses, features.

    client = AtelierDiscord(settings.discord, service)
    StatusMessages(client, service, ...)     # features add themselves (see bot.discord.build)
    await client.start(token)

A *feature* (status messages, /paint, challenges, the gallery) is an object that adds its
commands and buttons to the client when it is made; other features reach it only through
:meth:`AtelierDiscord.feature`, never through its private names. What every feature needs is
public here: :meth:`~AtelierDiscord.reply` (answer only the member), :meth:`report_error` (the
one error reply), :meth:`guard` (the channel is allowed and the bot may post there),
:meth:`input_limit` / :meth:`upload_limit` (as Discord reports them, never hard-coded),
:meth:`is_moderator`, :meth:`is_organiser` / :meth:`require_organiser` (challenges, the style
library) and :meth:`messageable`. The persistent buttons' base is :mod:`bot.discord.buttons`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, Final, TypeVar

import aiohttp
import discord
from discord import app_commands

from bot import replies
from bot.challenges import NotOrganiser
from bot.discord.embeds import MARKDOWN
from bot.errors import NotAllowed
from bot.pacing import Sleep
from bot.sandbox import Sandbox
from bot.service import PaintService
from bot.settings import DiscordSettings

log = logging.getLogger(__name__)

PLATFORM: Final = "discord"
MESSAGE_LIMIT: Final = 2000  # characters in one Discord message
BOOT_RETRY_FIRST: Final = 2.0  # seconds before trying an unreachable Discord again at login
BOOT_RETRY_MAX: Final = 60.0  # the pause doubles up to this
# Discord refused (HTTPException) or could not be reached at all: discord.py lets connection
# errors and timeouts (OSError, aiohttp.ClientError) through after its own retries.
DISCORD_TROUBLE: Final = (discord.HTTPException, aiohttp.ClientError, OSError)
# What the bot needs in a server channel: (permission attribute, name in Discord's settings).
CHANNEL_PERMISSIONS: Final = (
    ("view_channel", "View Channel"),
    ("send_messages", "Send Messages"),
    ("embed_links", "Embed Links"),
    ("attach_files", "Attach Files"),
    ("read_message_history", "Read Message History"),
)
# What style challenges need besides: a public thread per challenge, posting in it, pinning the
# painting there, and locking the thread when the challenge ends.
CHALLENGE_PERMISSIONS: Final = (
    ("create_public_threads", "Create Public Threads"),
    ("send_messages_in_threads", "Send Messages in Threads"),
    ("manage_messages", "Manage Messages"),
    ("manage_threads", "Manage Threads"),
)
# For the README's invite link: all of them as one integer (a test holds the two together).
INVITE_PERMISSIONS: Final = discord.Permissions(
    **{name: True for name, _ in (*CHANNEL_PERMISSIONS, *CHALLENGE_PERMISSIONS)}
)


class MissingPermissions(NotAllowed):
    """The bot lacks a permission it needs in this channel; the message names them."""


class Feature:
    """A part of the bot on Discord (like a discord.py cog); :meth:`close` runs at shutdown."""

    async def close(self) -> None:
        return None


F = TypeVar("F", bound=Feature)


class AtelierDiscord(discord.Client):
    """The Atelier bot on Discord. Run with ``await client.start(token)``."""

    def __init__(
        self,
        settings: DiscordSettings,
        service: PaintService,
        sandbox: Sandbox | None = None,
        *,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        """``sandbox``: where results are re-encoded to fit an upload limit (nothing is
        decoded in this process); a private one when none is given. ``sleep``: the pauses
        between tries to reach Discord at start."""
        super().__init__(
            intents=discord.Intents(guilds=True),
            allowed_mentions=discord.AllowedMentions(everyone=False, roles=False, users=True),
        )
        self.settings = settings
        self.service = service
        for variable, role in (
            ("DISCORD_MODERATOR_ROLE", settings.moderator_role),
            ("DISCORD_ORGANISER_ROLE", settings.organiser_role),
        ):
            if role and not role.strip().isdigit():
                log.warning(
                    "%s is a role name: any role of that name counts, whoever made it; "
                    "set the role's id instead",
                    variable,
                )
        self.sandbox = sandbox or Sandbox()
        self._sleep = sleep
        self.tree = app_commands.CommandTree(self)
        self.tree.error(self._on_tree_error)
        self._features: dict[type[Feature], Feature] = {}
        self._upload_limits: dict[int, int] = {}  # channel id -> limit the platform reported
        self._gateway_ready = asyncio.Event()

    # -- features ------------------------------------------------------------------------------

    def add_feature(self, feature: Feature) -> None:
        self._features[type(feature)] = feature

    def feature(self, kind: type[F]) -> F:
        """The feature of this kind (``client.feature(StatusMessages)``)."""
        feature = self._features[kind]
        assert isinstance(feature, kind)
        return feature

    # -- life cycle ----------------------------------------------------------------------------

    async def start(self, token: str, *, reconnect: bool = True) -> None:
        """Log in and connect, as discord.py does, except that Discord out of reach at login (a
        network blip at boot, a 5xx) is waited out with growing pauses; once connected,
        discord.py reconnects by itself. A rejected token raises ``LoginFailure`` at once."""
        pause = BOOT_RETRY_FIRST
        while True:
            try:
                await self.login(token)
                break
            except discord.HTTPException as error:
                if error.status < 500:
                    raise
                log.warning("Discord answered %s at login; trying again in %.0f s", error, pause)
            except (aiohttp.ClientError, OSError) as error:
                log.warning(
                    "Discord not reachable at login (%s); trying again in %.0f s",
                    type(error).__name__,
                    pause,
                )
            # Each login opens a fresh HTTP session; close this one (and its connector).
            await self.http.close()
            self.http.connector = discord.utils.MISSING
            await self._sleep(pause)
            pause = min(pause * 2, BOOT_RETRY_MAX)
        await self.connect(reconnect=reconnect)

    async def setup_hook(self) -> None:
        guild_id = self.settings.dev_guild_id
        if guild_id is not None:
            # Development: guild commands appear at once; global ones can take a while.
            guild = discord.Object(id=guild_id)
            self.tree.copy_global_to(guild=guild)
            synced = await self.tree.sync(guild=guild)
            log.info("synced %d commands to development guild %s", len(synced), guild_id)
        else:
            synced = await self.tree.sync()
            log.info("synced %d global commands", len(synced))

    async def on_ready(self) -> None:
        self._gateway_ready.set()

    async def until_ready(self) -> None:
        """Wait for the gateway (unlike ``wait_until_ready``, also before login has begun)."""
        await self._gateway_ready.wait()

    async def close(self) -> None:
        for feature in self._features.values():
            await feature.close()
        await super().close()

    # -- checks --------------------------------------------------------------------------------

    def guard(self, interaction: discord.Interaction[Any]) -> None:
        """Refuse, saying why, where the bot may not paint or could not post what it paints."""
        self._check_channel(interaction)
        self._check_permissions(interaction)

    def _check_channel(self, interaction: discord.Interaction[Any]) -> None:
        allowed = self.settings.channels
        if not allowed or interaction.guild is None:
            return
        channel = interaction.channel
        parent = getattr(channel, "parent_id", None)
        if interaction.channel_id in allowed or parent in allowed:
            return
        raise NotAllowed(replies.only_in([f"<#{channel_id}>" for channel_id in sorted(allowed)]))

    def _check_permissions(self, interaction: discord.Interaction[Any]) -> None:
        needed = list(CHANNEL_PERMISSIONS)
        if isinstance(interaction.channel, discord.Thread):
            needed[1] = ("send_messages_in_threads", "Send Messages in Threads")
        self.require(interaction, needed)

    def require(
        self, interaction: discord.Interaction[Any], needed: Sequence[tuple[str, str]]
    ) -> None:
        """Refuse, naming them, if the bot lacks any of ``needed`` ((attribute, name) pairs)
        in this channel."""
        if interaction.guild is None:
            return  # a DM with the bot: nothing to grant
        permissions = interaction.app_permissions
        missing = [label for name, label in needed if not getattr(permissions, name)]
        if missing:
            raise MissingPermissions(replies.missing_permissions(missing, MARKDOWN))

    def is_moderator(self, interaction: discord.Interaction[Any]) -> bool:
        """The configured moderator role (by id; a name as the fallback), or Manage Messages
        in the channel."""
        if not isinstance(interaction.user, discord.Member):
            return False
        if interaction.permissions.manage_messages:
            return True
        return has_role(interaction, self.settings.moderator_role)

    def is_organiser(self, interaction: discord.Interaction[Any]) -> bool:
        """Manage Server, or the configured organiser role (by id; a name as the fallback)."""
        if not isinstance(interaction.user, discord.Member):
            return False
        if interaction.permissions.manage_guild:
            return True
        return has_role(interaction, self.settings.organiser_role)

    def require_organiser(
        self, interaction: discord.Interaction[Any], action: str, things: str = "challenges"
    ) -> None:
        """Refuse, saying who may, unless the member is an organiser (``action`` ``things``:
        "start challenges", "add styles")."""
        if self.is_organiser(interaction):
            return
        role = (self.settings.organiser_role or "").strip()
        if role:
            shown = f"<@&{role}>" if role.isdigit() else role
            who = f"Manage Server or the {shown} role"
        else:
            who = "Manage Server"
        raise NotOrganiser(replies.organisers_only(action, who, things))

    # -- limits --------------------------------------------------------------------------------

    def input_limit(self, interaction: discord.Interaction[Any]) -> int:
        """The largest image a member may send here (and remember the channel's upload limit)."""
        if interaction.channel_id is not None:
            self._upload_limits[interaction.channel_id] = interaction.filesize_limit
        return min(self.service.limits.max_input_bytes, interaction.filesize_limit)

    def upload_limit(self, channel_id: int) -> int:
        """The most bytes one upload may have here, as Discord reports it now."""
        channel = self.get_channel(channel_id)
        guild = getattr(channel, "guild", None)
        limit = (
            guild.filesize_limit
            if guild is not None
            else discord.utils.DEFAULT_FILE_SIZE_LIMIT_BYTES
        )
        reported = self._upload_limits.get(channel_id)
        return min(limit, reported) if reported else limit

    def messageable(self, channel_id: int) -> discord.abc.Messageable:
        channel = self.get_channel(channel_id)
        if isinstance(channel, discord.abc.Messageable):
            return channel
        return self.get_partial_messageable(channel_id)

    # -- replies and errors --------------------------------------------------------------------

    async def reply(self, interaction: discord.Interaction[Any], text: str) -> None:
        """Answer only the member: the first response, the deferred one, or a follow-up (cut
        short, with a note, past Discord's limit for one message)."""
        text = replies.fit(text, MESSAGE_LIMIT)
        try:
            if not interaction.response.is_done():
                await interaction.response.send_message(text, ephemeral=True)
            elif (
                interaction.response.type
                is discord.InteractionResponseType.deferred_channel_message
            ):
                await interaction.edit_original_response(content=text)
            else:
                await interaction.followup.send(text, ephemeral=True)
        except DISCORD_TROUBLE as error:
            log.warning("could not answer interaction %s: %r", interaction.id, error)

    async def report_error(
        self, interaction: discord.Interaction[Any], error: BaseException
    ) -> None:
        """The one error reply on Discord (see :func:`bot.replies.error_reply`)."""
        if isinstance(error, app_commands.CheckFailure):
            text = str(error) or "You can't use that here."
        else:
            where = f"/{interaction.command.name}" if interaction.command else "a button"
            text = replies.error_reply(error, where=f"discord {where}")
        await self.reply(interaction, text)

    async def _on_tree_error(
        self, interaction: discord.Interaction[Any], error: app_commands.AppCommandError
    ) -> None:
        original = error.original if isinstance(error, app_commands.CommandInvokeError) else error
        await self.report_error(interaction, original)


def has_role(interaction: discord.Interaction[Any], role: str | None) -> bool:
    """Whether the member has ``role`` here: a role id (digits) is matched by id only, so a
    role someone names after it is not it; anything else is taken as a role name, the
    documented fallback (any role of that name counts, whoever made it)."""
    user = interaction.user
    wanted = (role or "").strip()
    if not wanted or not isinstance(user, discord.Member):
        return False
    if wanted.isdigit():
        return any(r.id == int(wanted) for r in user.roles)
    return any(r.name.casefold() == wanted.casefold() for r in user.roles)
