"""The Telegram adapter: the real aiogram bot against a fake Bot API server over real HTTP.

Each test runs :class:`TelegramApp` (long polling ``getUpdates``) against
:class:`tests.bot.fake_bot_api.FakeBotAPI` on 127.0.0.1, with the paint service on the
in-process fake engine. Timers (album wait, edit pacing, guided-flow timeout, flood control) run
on a :class:`ManualClock` where a test needs to control them, so nothing sleeps on the wall clock
for long.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.jobs import JobState
from bot.replies import STATUS_HEADLINES
from bot.service import PaintService
from bot.settings import Limits, Secret, TelegramSettings
from bot.store import Store
from bot.telegram import TelegramApp, build_app
from tests.bot.fake_bot_api import NOT_MODIFIED, Call, FakeBotAPI
from tests.fakes import FakeClock, FakeEngine, jpeg_bytes, png_bytes

PHOTO = jpeg_bytes((96, 64), (30, 60, 200))
PAINTING = png_bytes((80, 80), (200, 160, 20))
THUMB = jpeg_bytes((40, 32), (0, 0, 0))


class ManualClock:
    """Monotonic time and ``sleep`` that move only when the test advances them.

    With ``auto=True`` every sleep advances time at once (for flood-control waits).
    """

    def __init__(self, *, auto: bool = False) -> None:
        self.now = 1000.0
        self.auto = auto
        self.slept: list[float] = []
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        if self.auto:
            self.now += seconds
            await asyncio.sleep(0)
            return
        future = asyncio.get_running_loop().create_future()
        entry = (self.now + seconds, future)
        self._sleepers.append(entry)
        try:
            await future
        finally:
            self._sleepers.remove(entry)

    def advance(self, seconds: float) -> None:
        self.now += seconds
        for deadline, future in self._sleepers:
            if deadline <= self.now and not future.done():
                future.set_result(None)

    @property
    def sleeping(self) -> int:
        return len(self._sleepers)


@pytest.fixture
async def api() -> AsyncIterator[FakeBotAPI]:
    async with FakeBotAPI() as fake:
        yield fake


@contextlib.asynccontextmanager
async def running(
    api: FakeBotAPI, service: PaintService, moderators: tuple[int, ...] = (), **options: Any
) -> AsyncIterator[TelegramApp]:
    settings = TelegramSettings(
        token=Secret(api.token), api_base=api.base, moderators=frozenset(moderators)
    )
    options = {"edit_interval": 0.0, "album_wait": 0.2, "polling_timeout": 1, **options}
    app = build_app(settings, service, **options)
    task = asyncio.create_task(app.run())
    try:
        yield app
    finally:
        await app.close()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def manual_service(
    store: Store, data_dir: Path, clock: FakeClock, engine: FakeEngine
) -> PaintService:
    return PaintService(store=store, engine=engine, limits=Limits(), data_dir=data_dir, clock=clock)


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


# ----------------------------------------------------------------------------------------------


async def test_album_with_caption_makes_one_job_and_delivers_photo_and_file(
    api: FakeBotAPI, service: PaintService
) -> None:
    alice = api.user(1001, "Alice")
    chat = api.private_chat(alice)
    first = api.photo_message(
        alice,
        chat,
        PHOTO,
        thumbnail=THUMB,
        caption="/paint strength=7 quality=high keep_colors",
        media_group_id="album1",
    )
    second = api.photo_message(alice, chat, PAINTING, thumbnail=THUMB, media_group_id="album1")
    async with running(api, service):
        api.push_message(first, second)
        status, status_id = await status_of(api)
        photo, job_id = await result_of(api)
        document = await api.wait_call("sendDocument")
        await api.wait_until(lambda: any("Done" in c.text for c in edits_of(api, status_id)))

    job = service.get(job_id)
    assert job.state is JobState.DONE
    assert (job.options.strength, job.options.quality, job.options.keep_colors) == (7, "high", True)
    assert service.input_bytes(job, "photo") == PHOTO  # the largest size, not the thumbnail
    assert service.input_bytes(job, "painting") == PAINTING
    assert len(api.calls_to("sendPhoto")) == 2  # one status, one result: one album, one job
    assert status.params["reply_parameters"]["message_id"] == first["message_id"]
    assert "Alice" in status.text
    assert photo.params["reply_parameters"]["message_id"] == status_id
    assert photo.chat_id == document.chat_id == alice["id"]
    assert photo.upload("photo") == document.upload("document") == service.result_png(job)
    assert [d for _, d in photo.buttons] == [
        f"reroll:stronger:{job_id}",
        f"reroll:softer:{job_id}",
        f"reroll:keep_colors:{job_id}",
    ]
    assert document.params["reply_parameters"]["message_id"] == photo.result["message_id"]
    assert not any(c.error for c in api.calls)


async def test_reply_with_photo_and_document_in_a_group(
    api: FakeBotAPI, service: PaintService
) -> None:
    bob = api.user(2002, "Bob")
    group = api.group_chat(-100500)
    async with running(api, service):
        ask_with_reply(api, bob, group, caption="/paint@atelier_test_bot strength=2")
        await status_of(api)
        _, job_id = await result_of(api)
        await api.wait_call("sendDocument")
    job = service.get(job_id)
    assert (job.chat_id, job.user_id, job.options.strength) == ("-100500", "2002", 2)
    assert service.input_bytes(job, "photo") == PHOTO
    assert service.input_bytes(job, "painting") == PAINTING
    assert job.painting_name == "style.png"


async def test_guided_flow_asks_for_photo_then_painting(
    api: FakeBotAPI, service: PaintService
) -> None:
    carol = api.user(3003, "Carol")
    group = api.group_chat(-200)
    async with running(api, service):
        api.push_message(api.text_message(carol, group, "/paint quality=draft"))
        ask_photo = await api.wait_call("sendMessage")
        assert "photo" in ask_photo.text
        assert ask_photo.params["reply_markup"]["force_reply"] is True
        # In a group with privacy mode on, the member's answers reach the bot as replies.
        api.push_message(
            api.photo_message(carol, group, PHOTO, thumbnail=THUMB, reply_to=ask_photo.result)
        )
        ask_painting = await api.wait_call(
            "sendMessage", where=lambda c: "painting" in c.text, after=len(api.calls)
        )
        api.push_message(
            api.document_message(
                carol,
                group,
                PAINTING,
                file_name="monet.PNG",
                mime_type=None,
                reply_to=ask_painting.result,
            )
        )
        await status_of(api)
        _, job_id = await result_of(api)
        await api.wait_call("sendDocument")
    job = service.get(job_id)
    assert job.options.quality == "draft"
    assert service.input_bytes(job, "photo") == PHOTO
    assert service.input_bytes(job, "painting") == PAINTING


async def test_guided_flow_times_out_politely_and_cancel_stops_it(
    api: FakeBotAPI, service: PaintService
) -> None:
    dave = api.user(4004, "Dave")
    chat = api.private_chat(dave)
    clock = ManualClock()
    async with running(api, service, clock=clock, sleep=clock.sleep, flow_timeout=300):
        api.push_message(api.text_message(dave, chat, "/paint"))
        await api.wait_call("sendMessage")
        await api.wait_until(lambda: clock.sleeping == 1)
        clock.advance(299)
        api.push_message(api.text_message(dave, chat, "/help"))
        await api.wait_call("sendMessage", where=lambda c: "Ways to ask" in c.text)
        assert not any("stopped waiting" in c.text for c in api.calls)
        clock.advance(1)
        gave_up = await api.wait_call("sendMessage", where=lambda c: "stopped waiting" in c.text)
        assert "photo" in gave_up.text

        # A photo now is not taken as part of the old flow.
        api.push_message(api.photo_message(dave, chat, PHOTO))
        api.push_message(api.text_message(dave, chat, "/paint"))
        await api.wait_call(
            "sendMessage", where=lambda c: "Send me the photo" in c.text, after=len(api.calls)
        )
        api.push_message(api.text_message(dave, chat, "/cancel"))
        stopped = await api.wait_call("sendMessage", where=lambda c: c.text.startswith("Stopped"))
        assert stopped.chat_id == dave["id"]
    assert not api.calls_to("getFile")


async def test_progress_is_paced_shows_previews_and_never_repeats(
    api: FakeBotAPI, store: Store, data_dir: Path, clock: FakeClock
) -> None:
    engine = FakeEngine(auto=False)
    service = manual_service(store, data_dir, clock, engine)
    ticks = ManualClock()
    erin = api.user(5005, "Erin")
    chat = api.private_chat(erin)
    async with service, running(api, service, clock=ticks, sleep=ticks.sleep, edit_interval=4.0):
        ask_with_reply(api, erin, chat)
        status, status_id = await status_of(api)
        job_id = job_id_of(status)
        await engine.wait_started(job_id)
        await service.drained()
        shown = api.messages[(erin["id"], status_id)]
        await api.wait_until(lambda: shown["caption"].startswith("🖌️ Painting… 0%"))
        assert [b["callback_data"] for b in shown["reply_markup"]["inline_keyboard"][0]] == [
            f"cancel:{job_id}"
        ]
        before = len(edits_of(api, status_id))

        # Within the interval: held back, then the latest state goes out in one edit.
        await engine.progress(job_id, 10, preview=True)
        await engine.progress(job_id, 20, preview=True)
        await engine.progress(job_id, 30, preview=True, eta=90)
        await service.drained()
        assert len(edits_of(api, status_id)) == before
        ticks.advance(4)
        media = await api.wait_call("editMessageMedia")
        assert "30%" in media.text
        assert "Ready in about 2 min" in media.text
        assert media.upload("media") == jpeg_bytes()
        assert not any("20%" in c.text or "10%" in c.text for c in edits_of(api, status_id))

        # The same state again is never sent; "not modified" from Telegram is not an error.
        await engine.progress(job_id, 30, eta=90)
        await service.drained()
        ticks.advance(4)
        api.fail_next("editMessageCaption", description=NOT_MODIFIED)
        await engine.progress(job_id, 60, eta=30)
        await service.drained()
        ticks.advance(4)
        await api.wait_until(lambda: any(c.error for c in api.calls))
        assert len(edits_of(api, status_id)) == before + 2

        engine.finish(job_id)
        await api.wait_call("sendDocument")
        done = await api.wait_call(
            "editMessageCaption", where=lambda c: "Done" in c.text and c.error is None
        )
        assert done.buttons == []  # no Cancel once finished
    texts = [c.text for c in edits_of(api, status_id) if c.error is None]
    assert len(texts) == len(set(texts))
    assert not api.calls_to("sendMessage")  # nothing went wrong in the member's eyes


async def test_cancel_button_is_for_the_owner_and_moderators(
    api: FakeBotAPI, store: Store, data_dir: Path, clock: FakeClock
) -> None:
    engine = FakeEngine(auto=False)
    service = manual_service(store, data_dir, clock, engine)
    frank, grace, admin = api.user(6006, "Frank"), api.user(7007, "Grace"), api.user(8008, "Hal")
    group = api.group_chat(-300)
    api.admins[-300] = {8008}
    async with service, running(api, service):
        ask_with_reply(api, frank, group)
        status, status_id = await status_of(api)
        job_id = job_id_of(status)
        await engine.wait_started(job_id)
        status_message = api.messages[(-300, status_id)]

        api.press(grace, status_message, f"cancel:{job_id}")
        refused = await api.wait_call("answerCallbackQuery")
        assert refused.params["show_alert"] == "true"
        assert "Only Frank or a moderator" in refused.params["text"]
        assert service.get(job_id).state is JobState.RUNNING

        api.press(admin, status_message, f"cancel:{job_id}")
        stopping = "Stopping Frank's painting; it will be cancelled in a moment."
        await api.wait_call("answerCallbackQuery", where=lambda c: c.params["text"] == stopping)
        cancelled = await api.wait_call("editMessageCaption", where=lambda c: "Cancelled" in c.text)
        assert cancelled.buttons == []
    assert service.get(job_id).state is JobState.CANCELLED
    assert api.calls_to("getChatMember")


async def test_cancel_queue_and_help_commands(
    api: FakeBotAPI, store: Store, data_dir: Path, clock: FakeClock
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


async def test_result_buttons_paint_again(api: FakeBotAPI, service: PaintService) -> None:
    jack = api.user(1111, "Jack")
    chat = api.private_chat(jack)
    async with running(api, service):
        ask_with_reply(api, jack, chat, caption="/paint strength=4")
        result, first_id = await result_of(api)
        await api.wait_call("sendDocument")
        mark = len(api.calls)
        result_message = api.messages[(jack["id"], result.result["message_id"])]
        api.press(jack, result_message, f"reroll:stronger:{first_id}")
        again, again_id = await status_of(api, after=mark)
        assert again.params["reply_parameters"]["message_id"] == result.result["message_id"]
        second, new_id = await result_of(api, after=mark)
        assert second.params["reply_parameters"]["message_id"] == again_id
        await api.wait_call("sendDocument", after=mark)
    job = service.get(new_id)
    assert (job.parent_id, job.options.strength) == (first_id, 6)


async def test_oversized_and_non_image_files_are_refused_before_downloading(
    api: FakeBotAPI, service: PaintService
) -> None:
    kim = api.user(1212, "Kim")
    chat = api.private_chat(kim)
    painting = api.document_message(kim, chat, PAINTING)
    huge = api.document_message(
        kim,
        chat,
        PHOTO,
        file_name="huge.jpg",
        mime_type="image/jpeg",
        declared_size=25 * 1024 * 1024,
        caption="/paint",
        reply_to=painting,
    )
    pdf = api.document_message(
        kim,
        chat,
        b"%PDF-1.4",
        file_name="notes.pdf",
        mime_type="application/pdf",
        caption="/paint",
        reply_to=painting,
    )
    async with running(api, service):
        api.push_message(huge)
        too_big = await api.wait_call("sendMessage")
        assert "25.0 MB" in too_big.text
        assert "20.0 MB" in too_big.text
        assert too_big.params["reply_parameters"]["message_id"] == huge["message_id"]
        api.push_message(pdf)
        not_image = await api.wait_call("sendMessage", where=lambda c: "isn't an image" in c.text)
        assert "notes.pdf" in not_image.text
    assert not api.calls_to("getFile")
    assert not api.downloads
    assert not api.calls_to("sendPhoto")


async def test_flood_control_is_waited_out_without_losing_the_job(
    api: FakeBotAPI, store: Store, data_dir: Path, clock: FakeClock
) -> None:
    engine = FakeEngine(auto=False)
    service = manual_service(store, data_dir, clock, engine)
    ticks = ManualClock(auto=True)  # every wait passes at once, and is recorded
    lee = api.user(1313, "Lee")
    chat = api.private_chat(lee)
    api.fail_next("editMessageCaption", retry_after=5)
    api.fail_next("sendPhoto", retry_after=7, when=is_result)
    api.fail_next("sendDocument", retry_after=3)
    async with service, running(api, service, clock=ticks, sleep=ticks.sleep, edit_interval=2.0):
        ask_with_reply(api, lee, chat)
        status, status_id = await status_of(api)
        job_id = job_id_of(status)
        await engine.wait_started(job_id)
        await engine.progress(job_id, 40)
        await api.wait_call("editMessageCaption", where=lambda c: "40%" in c.text and not c.error)
        engine.finish(job_id)
        await api.wait_call("sendDocument", where=lambda c: c.error is None)
        await api.wait_until(
            lambda: any("Done" in c.text and not c.error for c in edits_of(api, status_id))
        )
    flooded = [c for c in edits_of(api, status_id) if c.status == 429]
    assert len(flooded) == 1
    results = [c for c in api.calls_to("sendPhoto") if is_result(c)]
    assert [c.status for c in results] == [429, 200]
    assert [c.status for c in api.calls_to("sendDocument")] == [429, 200]
    assert {7, 3, 5} <= {round(s) for s in ticks.slept}
    assert service.get(job_id).state is JobState.DONE
    assert not api.calls_to("sendMessage")


async def test_restart_with_pending_jobs_keeps_editing_and_buttons_work(
    api: FakeBotAPI, store: Store, data_dir: Path, clock: FakeClock
) -> None:
    mia, ned = api.user(1414, "Mia"), api.user(1515, "Ned")
    group = api.group_chat(-400)
    first_engine = FakeEngine(auto=False)
    service = manual_service(store, data_dir, clock, first_engine)
    async with service, running(api, service):
        ask_with_reply(api, mia, group)
        status, mia_status = await status_of(api)
        mia_job = job_id_of(status)
        await first_engine.wait_started(mia_job)
        mark = len(api.calls)
        ask_with_reply(api, ned, group)
        ned_call, ned_status = await status_of(api, after=mark)
        ned_job = job_id_of(ned_call)
    # The bot process stops here with Mia's job running and Ned's waiting.

    mark = len(api.calls)
    engine = FakeEngine(auto=False)
    service = manual_service(store, data_dir, clock, engine)
    async with running(api, service), service:
        await engine.wait_started(mia_job)
        await engine.progress(mia_job, 50, preview=True)
        await api.wait_call("editMessageMedia", where=lambda c: "50%" in c.text, after=mark)
        api.press(ned, api.messages[(-400, ned_status)], f"cancel:{ned_job}")
        await api.wait_call("answerCallbackQuery", after=mark)
        engine.finish(mia_job)
        await api.wait_call("sendDocument", after=mark)
        await api.wait_until(
            lambda: (
                any("Cancelled" in c.text for c in edits_of(api, ned_status))
                and any("Done" in c.text for c in edits_of(api, mia_status))
            )
        )
    assert service.get(mia_job).state is JobState.DONE
    assert service.get(ned_job).state is JobState.CANCELLED
    new_statuses = [c for c in api.calls[mark:] if is_status(c)]
    assert new_statuses == []  # the old messages were edited, no new ones sent


async def test_album_needs_two_images_and_one_captioned_photo_asks_for_the_painting(
    api: FakeBotAPI, service: PaintService
) -> None:
    olga = api.user(1616, "Olga")
    chat = api.private_chat(olga)
    album = [
        api.photo_message(
            olga, chat, PHOTO, caption="/paint" if i == 0 else None, media_group_id="g3"
        )
        for i in range(3)
    ]
    async with running(api, service):
        api.push_message(*album)
        refused = await api.wait_call("sendMessage")
        assert "exactly two images" in refused.text
        assert "has 3" in refused.text

        api.push_message(api.photo_message(olga, chat, PHOTO, caption="/paint softer"))
        options = await api.wait_call("sendMessage", where=lambda c: "softer" in c.text)
        assert "strength=" in options.text  # says which options exist
        api.push_message(api.photo_message(olga, chat, PHOTO, caption="/paint strength=3"))
        ask = await api.wait_call("sendMessage", where=lambda c: "Now send the painting" in c.text)
        api.push_message(api.document_message(olga, chat, PAINTING, reply_to=ask.result))
        _, job_id = await result_of(api)
    assert service.get(job_id).options.strength == 3
    assert service.input_bytes(service.get(job_id), "painting") == PAINTING


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


async def test_a_telegram_outage_while_sending_the_result_does_not_lose_it(
    api: FakeBotAPI, store: Store, data_dir: Path, clock: FakeClock
) -> None:
    engine = FakeEngine(auto=False)
    service = manual_service(store, data_dir, clock, engine)
    ticks = ManualClock(auto=True)
    uma = api.user(1818, "Uma")
    chat = api.private_chat(uma)
    api.fail_next("sendPhoto", status=502, description="Bad Gateway", when=is_result)
    api.fail_next("sendDocument", status=500, description="Internal Server Error")
    async with service, running(api, service, clock=ticks, sleep=ticks.sleep):
        ask_with_reply(api, uma, chat)
        status, _ = await status_of(api)
        job_id = job_id_of(status)
        await engine.wait_started(job_id)
        engine.finish(job_id)
        await api.wait_call("sendDocument", where=lambda c: c.error is None)
    results = [c for c in api.calls_to("sendPhoto") if is_result(c)]
    assert [c.status for c in results] == [502, 200]
    assert [c.status for c in api.calls_to("sendDocument")] == [500, 200]
    assert results[-1].upload("photo") == service.result_png(service.get(job_id))


async def test_a_reroll_whose_button_press_is_too_old_to_answer_still_paints(
    api: FakeBotAPI, service: PaintService
) -> None:
    # E.g. Stronger pressed while the bot was restarting: the query has expired by the time the
    # bot answers it, but the new painting is queued and must still be shown and delivered.
    kim = api.user(1919, "Kim")
    chat = api.private_chat(kim)
    async with running(api, service):
        ask_with_reply(api, kim, chat, caption="/paint strength=4")
        result, first_id = await result_of(api)
        await api.wait_call("sendDocument")
        mark = len(api.calls)
        api.fail_next(
            "answerCallbackQuery",
            description="Bad Request: query is too old and response timeout expired or query "
            "ID is invalid",
        )
        result_message = api.messages[(kim["id"], result.result["message_id"])]
        api.press(kim, result_message, f"reroll:softer:{first_id}")
        await status_of(api, after=mark)
        _, new_id = await result_of(api, after=mark)
        await api.wait_call("sendDocument", after=mark)
    assert service.get(new_id).options.strength == 2


async def test_a_failure_is_still_told_when_the_status_message_was_deleted(
    api: FakeBotAPI, store: Store, data_dir: Path, clock: FakeClock
) -> None:
    engine = FakeEngine(auto=False)
    service = manual_service(store, data_dir, clock, engine)
    vic = api.user(2020, "Vic")
    group = api.group_chat(-900)
    async with service, running(api, service):
        ask_with_reply(api, vic, group)
        status, status_id = await status_of(api)
        job_id = job_id_of(status)
        await engine.wait_started(job_id)
        del api.messages[(-900, status_id)]  # an administrator tidied the group
        engine.fail(job_id, "out_of_memory", "The photo is too big for the GPU today.")
        told = await api.wait_call("sendMessage", where=lambda c: "too big" in c.text)
    assert told.chat_id == -900
    assert "Vic" in told.text
    assert service.get(job_id).state is JobState.FAILED


async def test_an_image_type_the_engine_cannot_read_is_refused_before_downloading(
    api: FakeBotAPI, service: PaintService
) -> None:
    lou = api.user(2121, "Lou")
    chat = api.private_chat(lou)
    painting = api.document_message(lou, chat, PAINTING)
    heic = api.document_message(
        lou,
        chat,
        b"\x00\x00\x00\x18ftypheic",
        file_name="IMG_0001.HEIC",
        mime_type="image/heic",
        caption="/paint",
        reply_to=painting,
    )
    async with running(api, service):
        api.push_message(heic)
        refused = await api.wait_call("sendMessage")
    assert "IMG_0001.HEIC" in refused.text
    assert "HEIC" in refused.text.replace("IMG_0001.HEIC", "")
    assert "PNG, JPEG, WebP, BMP, GIF or TIFF" in refused.text
    assert not api.calls_to("getFile")


def test_typed_button_data_reads_buttons_posted_before_it_was_typed() -> None:
    from bot.telegram.challenges import VoteButton, WithdrawButton
    from bot.telegram.status import CancelButton, RerollButton

    # The strings the buttons of earlier versions carry, still in members' chats.
    assert CancelButton.unpack("cancel:Ab-_09xyz") == CancelButton(job="Ab-_09xyz")
    assert RerollButton.unpack("reroll:keep_colors:Ab-_09") == RerollButton(
        change="keep_colors", job="Ab-_09"
    )
    assert VoteButton.unpack("vote:12") == VoteButton(entry=12)
    assert WithdrawButton.unpack("withdraw:3") == WithdrawButton(entry=3)
    assert RerollButton(change="softer", job="x1").pack() == "reroll:softer:x1"
