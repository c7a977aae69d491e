"""The real Telegram app against the fake Bot API server, and what tests ask of the calls.

:func:`running` starts the app as :func:`bot.telegram.build_app` makes it (long polling
``getUpdates`` on 127.0.0.1), with challenges when given, until the block ends.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from bot.challenges import Challenges
from bot.replies import STATUS_HEADLINES
from bot.service import PaintService
from bot.settings import Limits, Secret, TelegramSettings
from bot.store import Store
from bot.telegram import TelegramApp, build_app
from tests.bot.telegram.fake_bot_api import Call, FakeBotAPI
from tests.fakes import FakeEngine, FakeTime, jpeg_bytes, png_bytes

PHOTO = jpeg_bytes((96, 64), (30, 60, 200))
PAINTING = png_bytes((80, 80), (200, 160, 20))
THUMB = jpeg_bytes((40, 32), (0, 0, 0))


@contextlib.asynccontextmanager
async def running(
    api: FakeBotAPI,
    service: PaintService,
    challenges: Challenges | None = None,
    *,
    moderators: tuple[int, ...] = (),
    **options: Any,
) -> AsyncIterator[TelegramApp]:
    """The bot polling the fake server until the block ends (fast pacing unless told)."""
    settings = TelegramSettings(
        token=Secret(api.token), api_base=api.base, moderators=frozenset(moderators)
    )
    options = {"edit_interval": 0.0, "album_wait": 0.2, "polling_timeout": 1, **options}
    app = build_app(settings, service, challenges, **options)
    if challenges is not None:
        await challenges.start()
    task = asyncio.create_task(app.run())
    try:
        yield app
    finally:
        if challenges is not None:
            await challenges.close()
        await app.close()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def manual_service(
    store: Store, data_dir: Path, clock: FakeTime, engine: FakeEngine, limits: Limits | None = None
) -> PaintService:
    return PaintService(
        store=store, engine=engine, limits=limits or Limits(), data_dir=data_dir, clock=clock
    )


def is_status(call: Call) -> bool:
    return call.method == "sendPhoto" and call.text.startswith(STATUS_HEADLINES)


def is_result(call: Call) -> bool:
    return call.method == "sendPhoto" and any(d.startswith("reroll:") for _, d in call.buttons)


def edits_of(api: FakeBotAPI, message_id: int) -> list[Call]:
    return [
        c
        for c in api.calls_to("editMessageCaption", "editMessageMedia", "editMessageText")
        if int(c.params["message_id"]) == message_id
    ]


def job_id_of(call: Call) -> str:
    """The job id a status (Cancel) or result (re-roll) message's buttons carry."""
    data = next(d for _, d in call.buttons if d.startswith(("cancel:", "reroll:")))
    return data.rsplit(":", 1)[1]


async def status_of(api: FakeBotAPI, after: int = 0) -> tuple[Call, int]:
    """The status message (sent once per job): its call and its message id."""
    call = await api.wait_call("sendPhoto", where=is_status, after=after)
    return call, call.result["message_id"]


async def result_of(api: FakeBotAPI, after: int = 0) -> tuple[Call, str]:
    """The result photo and its job id."""
    call = await api.wait_call("sendPhoto", where=is_result, after=after)
    return call, job_id_of(call)


def ask_with_reply(
    api: FakeBotAPI, user: dict[str, Any], chat: dict[str, Any], caption: str = "/paint"
) -> dict[str, Any]:
    """The reply way: the painting is posted, the photo answers it with /paint."""
    painting = api.document_message(user, chat, PAINTING, file_name="style.png")
    photo = api.photo_message(
        user, chat, PHOTO, caption=caption, thumbnail=THUMB, reply_to=painting
    )
    api.push_message(photo)
    return photo
