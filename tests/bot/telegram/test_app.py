"""What the Telegram app answers itself: /queue, /help, /start, /cancel, and the one error
reply with a reference for anything unexpected."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.jobs import JobState
from bot.service import PaintService
from bot.store import Store
from tests.bot.telegram.fake_bot_api import FakeBotAPI
from tests.bot.telegram.harness import (
    ask_with_reply,
    job_id_of,
    manual_service,
    result_of,
    running,
    status_of,
)
from tests.fakes import FakeEngine, FakeTime


async def test_cancel_queue_and_help_commands(
    api: FakeBotAPI, store: Store, data_dir: Path, clock: FakeTime
) -> None:
    engine = FakeEngine(auto=False)
    service = manual_service(store, data_dir, clock, engine)
    ivy = api.user(9009, "Ivy")
    chat = api.private_chat(ivy)
    async with service, running(api, service):
        ask_with_reply(api, ivy, chat)
        status, _ = await status_of(api)
        job_id = job_id_of(status)
        await engine.wait_started(job_id)
        api.push_message(api.text_message(ivy, chat, "/queue"))
        queue = await api.wait_call("sendMessage", where=lambda c: "Painting now" in c.text)
        assert "Painting now: you · 0%" in queue.text
        assert "Nobody is waiting." in queue.text
        api.push_message(api.text_message(ivy, chat, "/cancel"))
        await api.wait_call("sendMessage", where=lambda c: "Stopping your painting" in c.text)
        await api.wait_call("editMessageCaption", where=lambda c: "Cancelled" in c.text)
        api.push_message(api.text_message(ivy, chat, "/cancel"))
        nothing = await api.wait_call("sendMessage", where=lambda c: "no painting" in c.text)
        assert nothing.chat_id == ivy["id"]
        api.push_message(api.text_message(ivy, chat, "/start"))
        await api.wait_call("sendMessage", where=lambda c: "Ways to ask" in c.text)
    assert service.get(job_id).state is JobState.CANCELLED


async def test_unexpected_errors_get_a_reference_and_the_bot_keeps_going(
    api: FakeBotAPI, service: PaintService, caplog: pytest.LogCaptureFixture
) -> None:
    pat = api.user(1717, "Pat")
    chat = api.private_chat(pat)
    api.fail_next("getFile", status=500, description="Internal Server Error")
    async with running(api, service):
        ask_with_reply(api, pat, chat)
        sorry = await api.wait_call("sendMessage")
        assert "something went wrong on my side" in sorry.text
        reference = sorry.text.rsplit(" ", 1)[1].rstrip(".")
        assert any(reference in r.getMessage() for r in caplog.records)
        ask_with_reply(api, pat, chat)  # the same request again works
        await result_of(api)
