"""Atelier on Discord: :func:`build_client` puts the client and its features together.

- :mod:`~bot.discord.client`: the client, the checks and replies every feature uses, the lookup
  of features;
- :mod:`~bot.discord.buttons`: the base of the persistent buttons, and of those carrying one id;
- :mod:`~bot.discord.status`: status messages and their Cancel button;
- :mod:`~bot.discord.results`: results, the re-roll and Delete buttons under them;
- :mod:`~bot.discord.timelapse`: the Timelapse button under a result;
- :mod:`~bot.discord.paint`: ``/paint``, ``/cancel``, ``/queue``, ``/help``;
- :mod:`~bot.discord.challenges`: ``/challenge``, ``/leaderboard``, the entry buttons;
- :mod:`~bot.discord.gallery`: ``/gallery``;
- :mod:`~bot.discord.styles`: ``/style add|remove|list``, the server's style library;
- :mod:`~bot.discord.message_menu`: the "Paint with Atelier" message command;
- :mod:`~bot.discord.embeds`: how all of it looks (markup of :mod:`bot.replies`, embeds).
"""

from __future__ import annotations

import asyncio
import time

from bot.challenges import Challenges
from bot.discord.challenges import DiscordChallenges
from bot.discord.client import AtelierDiscord
from bot.discord.gallery import PAGE_SIZE, Gallery
from bot.discord.message_menu import MessageMenu
from bot.discord.paint import Painting
from bot.discord.results import RETRY_DELAYS
from bot.discord.status import StatusMessages
from bot.discord.styles import DiscordStyles
from bot.discord.timelapse import Timelapses
from bot.pacing import Clock, Sleep
from bot.sandbox import Sandbox
from bot.service import PaintService
from bot.settings import DiscordSettings
from bot.styles import StyleLibrary

__all__ = ["AtelierDiscord", "build_client"]


def build_client(
    settings: DiscordSettings,
    service: PaintService,
    challenges: Challenges | None = None,
    *,
    clock: Clock = time.monotonic,
    wall_clock: Clock = time.time,
    sleep: Sleep = asyncio.sleep,
    edit_interval: float = 4.0,
    retry_delays: tuple[float, ...] = RETRY_DELAYS,
    page_size: int = PAGE_SIZE,
    sandbox: Sandbox | None = None,
    styles: StyleLibrary | None = None,
) -> AtelierDiscord:
    """The Discord client with every feature, ready for ``await client.start(token)``.

    Connects nothing. ``clock`` paces edits, ``wall_clock`` is the unix time members see;
    ``sandbox`` re-encodes results too big for an upload (see :class:`AtelierDiscord`);
    ``styles``: the style library (``/style``, ``/paint style:``).
    """
    client = AtelierDiscord(settings, service, sandbox, sleep=sleep)
    entries = DiscordChallenges(client, challenges) if challenges is not None else None
    StatusMessages(
        client,
        service,
        deliver_entry=entries.deliver if entries is not None else None,
        clock=clock,
        wall_clock=wall_clock,
        sleep=sleep,
        edit_interval=edit_interval,
        retry_delays=retry_delays,
    )
    Timelapses(client, service)
    Painting(client, service, wall_clock=wall_clock, library=styles)
    MessageMenu(client)
    if challenges is not None:
        Gallery(client, challenges, page_size=page_size)
    if styles is not None:
        DiscordStyles(client, styles)
    return client
