"""The fake Telegram Bot API server, defined once (real HTTP on 127.0.0.1)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.bot.telegram.fake_bot_api import FakeBotAPI


@pytest.fixture
async def api() -> AsyncIterator[FakeBotAPI]:
    async with FakeBotAPI() as fake:
        yield fake
