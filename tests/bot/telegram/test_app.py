"""What the Telegram app answers itself: /queue, /help, /start, /cancel, and the one error
reply with a reference for anything unexpected."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from aiogram.exceptions import TelegramUnauthorizedError

from bot import replies
from bot.jobs import JobState, QueueOverview
from bot.service import PaintService
from bot.settings import Secret, TelegramSettings
from bot.store import Store
from bot.telegram import build_app
from tests.bot.telegram.fake_bot_api import Call, FakeBotAPI, is_file
from tests.bot.telegram.harness import (
    PAINTING,
    PHOTO,
    THUMB,
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
    api: FakeBotAPI,
    service: PaintService,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pat = api.user(1717, "Pat")
    chat = api.private_chat(pat)
    real_overview = service.overview
    calls = 0

    def broken_once() -> QueueOverview:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bug")
        return real_overview()

    monkeypatch.setattr(service, "overview", broken_once)
    async with running(api, service):
        api.push_message(api.text_message(pat, chat, "/queue"))
        sorry = await api.wait_call("sendMessage")
        assert "something went wrong on my side" in sorry.text
        reference = sorry.text.rsplit(" ", 1)[1].rstrip(".")
        assert any(reference in r.getMessage() for r in caplog.records)
        ask_with_reply(api, pat, chat)  # the bot keeps going
        await result_of(api)


@pytest.mark.parametrize(
    "failure",
    ["file server 404", "getFile 500", "getFile refused", "file server gone"],
)
async def test_a_download_that_fails_asks_the_member_to_send_it_again_and_logs_no_token(
    api: FakeBotAPI,
    service: PaintService,
    caplog: pytest.LogCaptureFixture,
    failure: str,
) -> None:
    """Whatever breaks while fetching a member's image, they are asked to send it again, and
    no log line (message or traceback) holds the token, which is in every file URL."""
    caplog.set_level(logging.DEBUG)
    ola = api.user(1818, "Ola")
    chat = api.private_chat(ola)
    painting = api.document_message(ola, chat, PAINTING, file_name="style.png")
    photo = api.photo_message(
        ola, chat, PHOTO, caption="/paint", thumbnail=THUMB, reply_to=painting
    )
    large = photo["photo"][-1]["file_id"]
    if failure == "file server 404":
        api.lose(large)
    elif failure == "getFile 500":
        api.fail_next(
            "getFile", status=500, description="Internal Server Error", when=is_file(large)
        )
    elif failure == "getFile refused":
        api.fail_next(
            "getFile", description="Bad Request: wrong file_id specified", when=is_file(large)
        )
    else:
        api.unplug_files()
    async with running(api, service):
        api.push_message(photo)
        told = await api.wait_call("sendMessage")
        assert told.text == (
            "I couldn't download the photo (“photo.jpg”) from Telegram. Please send it again."
        )
        assert told.params["reply_parameters"]["message_id"] == photo["message_id"]
    assert service.overview().waiting == ()
    assert not api.calls_to("sendPhoto")  # no status message for a request that never came in
    # Every line of the bot's side (the fake server's own access log is the test's).
    ours = [r for r in caplog.records if not r.name.startswith(("aiohttp.access", "aiohttp.web"))]
    logged = "\n".join(caplog.handler.format(r) for r in ours)
    assert "could not download a photo" in logged
    assert api.token not in logged
    assert api.token.split(":", 1)[1] not in logged


ANONYMOUS_ADMIN = {"id": 1087968824, "is_bot": True, "first_name": "Group"}
CHANNEL_BOT = {"id": 136817688, "is_bot": True, "first_name": "Channel"}


async def test_posting_as_a_channel_or_an_anonymous_admin_is_refused(
    api: FakeBotAPI, store: Store, data_dir: Path, clock: FakeTime
) -> None:
    """Everyone posting as an anonymous admin (or as a channel) has one and the same ``from``:
    taken for one member, they would share a limit and cancel each other's paintings across
    groups. They are asked to post as themselves; nothing is downloaded or queued."""
    engine = FakeEngine(auto=False)
    service = manual_service(store, data_dir, clock, engine)
    ben = api.user(4242, "Ben")
    group = api.group_chat(-100777)
    other_group = api.group_chat(-100778, "Elsewhere")
    channel = {"id": -100999, "type": "channel", "title": "News"}
    async with service, running(api, service):
        ask_with_reply(api, ben, group)  # a member's painting in the group
        status, _ = await status_of(api)
        bens_job = job_id_of(status)
        await engine.wait_started(bens_job)
        downloads = len(api.downloads)

        painting = api.document_message(ANONYMOUS_ADMIN, group, PAINTING, file_name="style.png")
        photo = api.photo_message(
            ANONYMOUS_ADMIN, group, PHOTO, caption="/paint", thumbnail=THUMB, reply_to=painting
        )
        photo["sender_chat"] = group
        cancel = api.text_message(ANONYMOUS_ADMIN, other_group, "/cancel")
        cancel["sender_chat"] = other_group
        as_channel = api.text_message(CHANNEL_BOT, group, "/queue")
        as_channel["sender_chat"] = channel
        chatter = api.text_message(ANONYMOUS_ADMIN, group, "nice painting, Ben")
        chatter["sender_chat"] = group
        api.push_message(photo, cancel, as_channel, chatter)

        def refusal(call: Call) -> bool:
            return call.text == replies.POST_AS_YOURSELF

        await api.wait_until(lambda: len([c for c in api.calls if refusal(c)]) == 3)
        answered = [c.params["reply_parameters"]["message_id"] for c in api.calls if refusal(c)]
        assert sorted(answered) == sorted(
            [photo["message_id"], cancel["message_id"], as_channel["message_id"]]
        )  # the chatter, addressed to nobody, gets no answer
        assert len(api.downloads) == downloads
        fetched = {c.params["file_id"] for c in api.calls_to("getFile")}
        assert photo["photo"][-1]["file_id"] not in fetched
        assert service.get(bens_job).state is JobState.RUNNING
        assert service.overview().waiting == ()


async def test_replies_wait_out_flood_control_instead_of_failing(
    api: FakeBotAPI, service: PaintService
) -> None:
    """A reply outside the status board (here /queue, a guided /paint's prompt) that runs into
    flood control is sent again once the chat is open, and the chat's status edits wait too."""
    ticks = FakeTime(auto=True)  # every wait passes at once, and is recorded
    una = api.user(2121, "Una")
    chat = api.private_chat(una)
    api.fail_next("sendMessage", retry_after=9)
    api.fail_next("sendMessage", retry_after=4, when=lambda c: c.text == replies.ASK_PHOTO)
    async with running(api, service, clock=ticks, sleep=ticks.sleep):
        api.push_message(api.text_message(una, chat, "/queue"))
        queue = await api.wait_call("sendMessage", where=lambda c: c.error is None)
        api.push_message(api.text_message(una, chat, "/paint"))
        prompt = await api.wait_call(
            "sendMessage", where=lambda c: c.error is None and c.text == replies.ASK_PHOTO
        )
    assert "The queue" in queue.text
    asked = [c for c in api.calls_to("sendMessage") if c.text == replies.ASK_PHOTO]
    assert [c.status for c in api.calls_to("sendMessage")][:2] == [429, 200]
    assert [c.status for c in asked] == [429, 200]
    assert prompt.params["reply_markup"]["force_reply"] is True
    assert {9, 4} <= {round(s) for s in ticks.slept}


async def test_telegram_out_of_reach_at_start_is_waited_out(
    api: FakeBotAPI, service: PaintService
) -> None:
    ticks = FakeTime(auto=True)
    api.fail_next("getMe", status=502, description="Bad Gateway")
    api.fail_next("getMe", status=500, description="Internal Server Error")
    wes = api.user(2323, "Wes")
    async with running(api, service, clock=ticks, sleep=ticks.sleep):
        api.push_message(api.text_message(wes, api.private_chat(wes), "/help"))
        await api.wait_call("sendMessage", where=lambda c: "Ways to ask" in c.text)
    assert [c.status for c in api.calls_to("getMe")][:3] == [502, 500, 200]
    assert ticks.slept[:2] == [2.0, 4.0]  # growing pauses


async def test_a_rejected_token_stops_the_app_at_once(
    api: FakeBotAPI, service: PaintService
) -> None:
    ticks = FakeTime(auto=True)
    api.fail_next("getMe", status=401, description="Unauthorized")
    settings = TelegramSettings(token=Secret(api.token), api_base=api.base)
    app = build_app(settings, service, clock=ticks, sleep=ticks.sleep)
    try:
        with pytest.raises(TelegramUnauthorizedError):
            await asyncio.wait_for(app.run(), 10)
    finally:
        await app.close()
    assert ticks.slept == []
