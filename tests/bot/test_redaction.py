"""Tests for bot/redaction.py with real logging, real aiogram and real discord.py code paths."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import subprocess
import sys
import threading
import traceback
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiohttp import ClientResponseError, web
from discord.gateway import DiscordWebSocket
from discord.http import HTTPClient, Route

from bot.redaction import (
    DISCORD_LOGGERS,
    DiscordPayloads,
    Redactor,
    install,
    redact_discord_tokens,
    secret_values,
)
from bot.settings import Settings
from tests.bot.telegram.fake_bot_api import FakeBotAPI

DISCORD_TOKEN = "MTA5ODc2NTQzMjEwOTg3NjU0.GhIjKl.discord-bot-secret-value"
# Interaction tokens are base64 of "interaction:<id>:<secret>".
INTERACTION_TOKEN = "aW50ZXJhY3Rpb246MTIzNDU2Nzg5MDEyMzQ1Njc4OnNlY3JldC1wYXJ0LXh5eg"
MEMBER_TEXT = "private words of a member"


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    """The root logger writing to a string at DEBUG, as `python -m bot` sets it up."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    level = root.level
    hooks = sys.excepthook, threading.excepthook
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield stream
    sys.excepthook, threading.excepthook = hooks
    root.removeHandler(handler)
    root.setLevel(level)
    for each in root.handlers:
        for found in [f for f in each.filters if isinstance(f, Redactor)]:
            each.removeFilter(found)
    for name in DISCORD_LOGGERS:
        logger = logging.getLogger(name)
        for found in [f for f in logger.filters if isinstance(f, DiscordPayloads)]:
            logger.removeFilter(found)


# --- secrets from settings, and a real exception carrying one ------------------------------------


def test_secret_values_come_from_the_settings() -> None:
    settings = Settings.from_env({"DISCORD_TOKEN": DISCORD_TOKEN, "TELEGRAM_TOKEN": "1:tg"})

    assert secret_values(settings) == (DISCORD_TOKEN, "1:tg")
    assert secret_values(Settings.from_env({"TELEGRAM_TOKEN": "1:tg"})) == ("1:tg",)


async def test_a_failed_telegram_download_logs_no_token(log_output: io.StringIO) -> None:
    async with FakeBotAPI() as api:
        server = TelegramAPIServer.from_base(api.base)
        bot = Bot(api.token, session=AiohttpSession(api=server))
        install([api.token])
        try:
            with pytest.raises(ClientResponseError) as failed:
                await bot.download_file("photos/file_7.jpg", io.BytesIO())
            error = failed.value
            # The real thing: the exception's own text holds the file URL with the token.
            assert api.token in "".join(traceback.format_exception(error))
            log = logging.getLogger("bot.telegram.app")
            try:
                raise RuntimeError("download failed") from error
            except RuntimeError:
                log.exception("update %s failed", 42)
            log.error("download failed: %s", error)
            log.warning("retrying %r", str(error))
        finally:
            await bot.session.close()

    text = log_output.getvalue()
    assert api.token not in text
    assert quote(api.token, safe="") not in text
    assert "ClientResponseError" in text and "404" in text  # still says what went wrong
    assert "/file/bot***/photos/file_7.jpg" in text
    assert "update 42 failed" in text


def test_messages_arguments_and_stacks_are_redacted(log_output: io.StringIO) -> None:
    secret = "123:tele/gram+token"
    install([secret, DISCORD_TOKEN, ""])
    log = logging.getLogger("bot.somewhere")

    log.info(f"formatted into the message: {secret}")
    log.info("as an argument: %s and %s", DISCORD_TOKEN, {"token": secret})
    log.info("percent-encoded in a URL: https://x/?t=%s", quote(secret, safe=""))
    log.info("arguments that do not fit %s %s", secret)  # logging's own error path
    log.warning("with the stack (%s)", secret, stack_info=True)

    text = log_output.getvalue()
    for form in (secret, quote(secret, safe=""), DISCORD_TOKEN):
        assert form not in text
    assert text.count("***") >= 6
    assert "formatted into the message: ***" in text


def test_redactor_also_serves_text_outside_logging() -> None:
    redactor = Redactor(["abc:def"])

    assert redactor.redact("atelier: Telegram stopped: bad url x/botabc:def/getMe") == (
        "atelier: Telegram stopped: bad url x/bot***/getMe"
    )
    assert Redactor([]).redact("nothing secret") == "nothing secret"


def test_install_filters_every_root_handler(log_output: io.StringIO) -> None:
    second = io.StringIO()
    handler = logging.StreamHandler(second)
    logging.getLogger().addHandler(handler)
    try:
        install(["top-secret-value"])
        logging.getLogger("any.module").error("leaking top-secret-value")
    finally:
        logging.getLogger().removeHandler(handler)

    assert second.getvalue() == "leaking ***\n"
    assert "top-secret-value" not in log_output.getvalue()


# --- discord.py at DEBUG: real code paths ---------------------------------------------------------


@pytest.fixture
async def discord_api(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    """A local HTTP server standing in for discord.com; discord.py's Route points at it."""

    async def me(request: web.Request) -> web.Response:
        return web.json_response({"id": "1", "username": "atelier", "discriminator": "0"})

    async def followup(request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response({"id": "55", "content": body.get("content"), "token": "x" * 30})

    app = web.Application()
    app.router.add_get("/api/v10/users/@me", me)
    app.router.add_post("/api/v10/webhooks/{app_id}/{token}", followup)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    base = f"http://127.0.0.1:{port}/api/v10"
    monkeypatch.setattr(Route, "BASE", base)
    yield base
    await runner.cleanup()


async def test_discord_http_debug_logs_hold_no_token_or_body(
    log_output: io.StringIO, discord_api: str
) -> None:
    install([DISCORD_TOKEN])
    http = HTTPClient(loop=asyncio.get_running_loop())
    try:
        await http.static_login(DISCORD_TOKEN)
        route = Route(
            "POST",
            "/webhooks/{webhook_id}/{webhook_token}",
            webhook_id=1098765432109876,
            webhook_token=INTERACTION_TOKEN,
        )
        await http.request(route, json={"content": MEMBER_TEXT})
    finally:
        await http.close()

    text = log_output.getvalue()
    assert "discord.http" in text and "has returned 200" in text  # discord.py did log it
    assert INTERACTION_TOKEN not in text
    assert MEMBER_TEXT not in text
    assert DISCORD_TOKEN not in text
    assert "/webhooks/1098765432109876/*** with <payload of" in text


async def test_discord_gateway_events_are_summarised(log_output: io.StringIO) -> None:
    install([DISCORD_TOKEN])
    socket = DiscordWebSocket.__new__(DiscordWebSocket)  # only what received_message logs with
    socket.shard_id = 0
    socket._keep_alive = None
    socket.sequence = None
    socket._dispatch = lambda *args: None  # type: ignore[method-assign]
    event = {
        "op": 0,
        "t": "INTERACTION_CREATE",
        "s": 7,
        "d": {"token": INTERACTION_TOKEN, "member": {"nick": MEMBER_TEXT}},
    }

    # The event is logged first; handling it needs a whole connection, which this one lacks.
    with pytest.raises(AttributeError):
        await socket.received_message(json.dumps(event))

    text = log_output.getvalue()
    assert "For Shard ID 0: WebSocket Event: <gateway op=0 t=INTERACTION_CREATE>" in text
    assert INTERACTION_TOKEN not in text
    assert MEMBER_TEXT not in text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            f"POST /interactions/123/{INTERACTION_TOKEN}/callback",
            "POST /interactions/123/***/callback",
        ),
        (f"/webhooks/42/{'k' * 68}/messages/@original", "/webhooks/42/***/messages/@original"),
        (f"{{'token': '{INTERACTION_TOKEN}'}}", "{'token': '***'}"),
        (f"major parameters 1+{INTERACTION_TOKEN}", "major parameters 1+***"),
        ("/webhooks/42/messages", "/webhooks/42/messages"),
    ],
)
def test_discord_tokens_are_found_in_any_text(text: str, expected: str) -> None:
    assert redact_discord_tokens(text) == expected


# --- exceptions nobody caught ---------------------------------------------------------------------

UNCAUGHT = """
import logging, sys, threading
from bot.redaction import install
logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
install(["top-secret-value"])
def fail() -> None:
    raise RuntimeError("thread saw top-secret-value")
worker = threading.Thread(target=fail)
worker.start()
worker.join()
raise ValueError("main saw top-secret-value")
"""


def test_uncaught_exceptions_in_main_and_threads_are_redacted() -> None:
    """Python prints an uncaught exception itself, bypassing logging and its filters."""
    done = subprocess.run(
        [sys.executable, "-c", UNCAUGHT],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 1
    assert "top-secret-value" not in done.stderr
    assert "RuntimeError: thread saw ***" in done.stderr
    assert "ValueError: main saw ***" in done.stderr
    assert "Traceback" in done.stderr  # the stack is still there for the operator
