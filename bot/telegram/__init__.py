"""Atelier on Telegram: :func:`build_app` puts the app and its features together.

- :mod:`~bot.telegram.app`: the bot, polling, the one error reply, downloads, ``/help``,
  ``/queue``, and what the features share;
- :mod:`~bot.telegram.outbox`: every message to a chat, through flood control and outages;
- :mod:`~bot.telegram.status`: status messages and results;
- :mod:`~bot.telegram.keyboards`: the buttons under them (typed callback data, keyboards);
- :mod:`~bot.telegram.buttons`: what those buttons do (Cancel, the re-rolls, Delete);
- :mod:`~bot.telegram.flows`: the three ways to ask for a painting, and ``/cancel``;
- :mod:`~bot.telegram.challenges`: ``/challenge`` in groups and the entry buttons;
- :mod:`~bot.telegram.styles`: ``/style add|list|remove``, the chat's style library;
- :mod:`~bot.telegram.gallery`: ``/gallery``, the chat's recent paintings on one picture.
"""

from __future__ import annotations

import asyncio
import time

from bot.challenges import Challenges
from bot.pacing import Clock, Sleep
from bot.sandbox import Sandbox
from bot.service import PaintService
from bot.settings import TelegramSettings
from bot.styles import StyleLibrary
from bot.telegram.app import BOT_API_DOWNLOAD_LIMIT, TelegramApp
from bot.telegram.buttons import ResultButtons
from bot.telegram.challenges import TelegramChallenges
from bot.telegram.flows import PaintRequests
from bot.telegram.gallery import TelegramGallery
from bot.telegram.status import StatusBoard
from bot.telegram.styles import TelegramStyles

__all__ = ["TelegramApp", "build_app"]


def build_app(
    settings: TelegramSettings,
    service: PaintService,
    challenges: Challenges | None = None,
    *,
    clock: Clock = time.monotonic,
    sleep: Sleep = asyncio.sleep,
    edit_interval: float = 4.0,
    album_wait: float = 1.0,
    flow_timeout: float = 300.0,
    download_limit: int = BOT_API_DOWNLOAD_LIMIT,
    polling_timeout: int = 30,
    sandbox: Sandbox | None = None,
    styles: StyleLibrary | None = None,
) -> TelegramApp:
    """The Telegram app with every feature, ready for ``await app.run()``. Connects nothing.

    ``sandbox`` makes the status pictures and the gallery's sheets (a private one when none is
    given): nothing is decoded in this process. ``styles``: the style library (``/style``,
    ``/paint style=``)."""
    sandbox = sandbox or Sandbox()
    app = TelegramApp(
        settings,
        service,
        download_limit=download_limit,
        polling_timeout=polling_timeout,
        clock=clock,
        sleep=sleep,
    )
    entries = TelegramChallenges(app, challenges, sandbox) if challenges is not None else None
    board = StatusBoard(
        app,
        service,
        deliver_entry=entries.deliver if entries is not None else None,
        sandbox=sandbox,
        clock=clock,
        sleep=sleep,
        interval=edit_interval,
    )
    buttons = ResultButtons(app, service, board)
    flows = PaintRequests(
        app,
        service,
        board,
        sleep=sleep,
        album_wait=album_wait,
        flow_timeout=flow_timeout,
        library=styles,
    )
    # The order routers see updates in: a photo sent while the bot waits for one in a guided
    # /paint belongs to that /paint, before anything else.
    routers = [flows.router, buttons.router, *([entries.router] if entries else [])]
    if styles is not None:
        routers.append(TelegramStyles(app, styles).router)
    if challenges is not None:
        routers.append(TelegramGallery(app, service, challenges, sandbox).router)
    app.dispatcher.include_routers(*routers)
    return app
