"""Telegram status messages, results and their buttons: paced edits, previews, flood control,
outages, restarts, and buttons posted by earlier versions.

The real aiogram bot runs against the fake Bot API server; pacing runs on fake time where a
test needs to control it.
"""

from __future__ import annotations

import asyncio
import io
import re
from pathlib import Path

from PIL import Image

from bot.jobs import JobEvent, JobState, Queued
from bot.service import PaintService
from bot.store import Store
from bot.telegram.status import PLACEHOLDER_PICTURE
from tests.bot.conftest import Decodes
from tests.bot.telegram.fake_bot_api import NOT_MODIFIED, FakeBotAPI
from tests.bot.telegram.harness import (
    PAINTING,
    PHOTO,
    THUMB,
    ask_with_reply,
    edits_of,
    is_result,
    is_status,
    job_id_of,
    manual_service,
    result_of,
    running,
    status_of,
)
from tests.fakes import FakeEngine, FakeTime, jpeg_bytes


async def test_progress_is_paced_shows_previews_and_never_repeats(
    api: FakeBotAPI, store: Store, data_dir: Path, clock: FakeTime
) -> None:
    engine = FakeEngine(auto=False)
    service = manual_service(store, data_dir, clock, engine)
    ticks = clock  # pacing on the test's one fake time
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
    api: FakeBotAPI, store: Store, data_dir: Path, clock: FakeTime
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


async def test_flood_control_is_waited_out_without_losing_the_job(
    api: FakeBotAPI, store: Store, data_dir: Path, clock: FakeTime
) -> None:
    engine = FakeEngine(auto=False)
    service = manual_service(store, data_dir, clock, engine)
    ticks = FakeTime(auto=True)  # every wait passes at once, and is recorded
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
    api: FakeBotAPI, store: Store, data_dir: Path, clock: FakeTime
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


async def test_a_telegram_outage_while_sending_the_result_does_not_lose_it(
    api: FakeBotAPI, store: Store, data_dir: Path, clock: FakeTime
) -> None:
    engine = FakeEngine(auto=False)
    service = manual_service(store, data_dir, clock, engine)
    ticks = FakeTime(auto=True)
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
    api: FakeBotAPI, store: Store, data_dir: Path, clock: FakeTime
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


def test_typed_button_data_reads_buttons_posted_before_it_was_typed() -> None:
    from bot.telegram.challenges import VoteButton, WithdrawButton
    from bot.telegram.keyboards import CancelButton, DeleteButton, RerollButton, TimelapseButton

    # The strings the buttons of earlier versions carry, still in members' chats.
    assert CancelButton.unpack("cancel:Ab-_09xyz") == CancelButton(job="Ab-_09xyz")
    assert RerollButton.unpack("reroll:keep_colors:Ab-_09") == RerollButton(
        change="keep_colors", job="Ab-_09"
    )
    assert VoteButton.unpack("vote:12") == VoteButton(entry=12)
    assert WithdrawButton.unpack("withdraw:3") == WithdrawButton(entry=3)
    assert RerollButton(change="softer", job="x1").pack() == "reroll:softer:x1"
    assert TimelapseButton.unpack("timelapse:Ab-_09") == TimelapseButton(job="Ab-_09")
    assert DeleteButton.unpack("delete:Ab-_09:77") == DeleteButton(job="Ab-_09", file_message=77)
    assert DeleteButton(job="x1").pack() == "delete:x1:0"


async def test_the_status_picture_is_made_in_the_sandbox(
    api: FakeBotAPI, service: PaintService, no_decoding: Decodes
) -> None:
    """The bot process holds the token: the member's photo is made small in a child process
    (a real sandbox), never decoded here."""
    ada = api.user(3131, "Ada")
    chat = api.private_chat(ada)
    async with running(api, service):
        ask_with_reply(api, ada, chat)
        status, _ = await status_of(api)
        await result_of(api)
    assert no_decoding.calls == []
    no_decoding.stop()
    picture = status.upload("photo")
    assert picture is not None
    assert picture != PLACEHOLDER_PICTURE
    with Image.open(io.BytesIO(picture)) as shown:
        assert (shown.format, shown.size) == ("JPEG", (96, 64))
        red, _green, blue = shown.convert("RGB").getpixel((48, 32))
    assert blue > 150 > red  # the member's blue photo


async def test_a_result_not_posted_before_a_stop_is_posted_once_after_the_restart(
    api: FakeBotAPI, store: Store, data_dir: Path, clock: FakeTime
) -> None:
    """Telegram was down while the painting finished, past every retry; the bot stopped. The
    result is posted after the restart, once: not again after the next one."""
    engine = FakeEngine(auto=False)
    service = manual_service(store, data_dir, clock, engine)
    ticks = FakeTime(auto=True)  # the retries' pauses pass at once
    ivo = api.user(3232, "Ivo")
    chat = api.private_chat(ivo)
    async with service, running(api, service, clock=ticks, sleep=ticks.sleep):
        ask_with_reply(api, ivo, chat)
        status, _ = await status_of(api)
        job_id = job_id_of(status)
        await engine.wait_started(job_id)
        for _ in range(5):
            api.fail_next("sendPhoto", status=502, description="Bad Gateway", when=is_result)
        engine.finish(job_id)
        await api.wait_until(lambda: len([c for c in api.calls if is_result(c)]) == 5)
        await service.drained()
    assert service.get(job_id).state is JobState.DONE
    assert store.get_job(job_id).delivered_at is None  # type: ignore[union-attr]
    assert not [c for c in api.calls_to("sendDocument") if c.error is None]

    def delivered_at() -> float | None:
        job = store.get_job(job_id)
        assert job is not None
        return job.delivered_at

    mark = len(api.calls)
    service = manual_service(store, data_dir, clock, FakeEngine(auto=False))
    async with service, running(api, service):
        result, result_id = await result_of(api, after=mark)
        await api.wait_call("sendDocument", after=mark)
        await api.wait_until(lambda: delivered_at() is not None)
    # The next start has nothing to deliver: no Finished is even announced.
    mark = len(api.calls)
    service = manual_service(store, data_dir, clock, FakeEngine(auto=False))
    async with service, running(api, service):
        await api.wait_call("getMe", after=mark)
        await service.drained()
    delivered = [c for c in api.calls if is_result(c) and c.error is None]
    assert [job_id_of(c) for c in delivered] == [job_id]
    assert result_id == job_id
    assert result.params["reply_parameters"]["message_id"] == status.result["message_id"]
    assert len([c for c in api.calls_to("sendDocument") if c.error is None]) == 1


async def test_a_result_for_a_chat_that_is_gone_is_not_tried_at_every_start(
    api: FakeBotAPI, store: Store, data_dir: Path, clock: FakeTime
) -> None:
    engine = FakeEngine(auto=False)
    service = manual_service(store, data_dir, clock, engine)
    zoe = api.user(3434, "Zoe")
    group = api.group_chat(-700)
    async with service, running(api, service):
        ask_with_reply(api, zoe, group)
        status, _ = await status_of(api)
        job_id = job_id_of(status)
        await engine.wait_started(job_id)
        api.fail_next("sendPhoto", description="Bad Request: chat not found", when=is_result)
        api.fail_next("sendDocument", description="Bad Request: chat not found")
        engine.finish(job_id)
        await api.wait_call("sendDocument")
        for _ in range(10_000):  # loop turns, not time: the bot makes no further call
            stored = store.get_job(job_id)
            if stored is not None and stored.delivered_at is not None:
                break
            await asyncio.sleep(0)
    stored = store.get_job(job_id)
    assert stored is not None and stored.delivered_at is not None
    assert [c.status for c in api.calls_to("sendDocument")] == [400]  # tried once, not again


async def test_two_requests_admitted_at_once_each_show_their_own_position_first(
    api: FakeBotAPI, store: Store, data_dir: Path, clock: FakeTime
) -> None:
    engine = FakeEngine(auto=False)
    service = manual_service(store, data_dir, clock, engine)
    admitted_at: list[int] = []  # how many Bot API calls had been made when each was queued

    async def note(event: JobEvent) -> None:
        if isinstance(event, Queued):
            admitted_at.append(len(api.calls))

    service.add_listener(note)
    erin, finn, gwen = api.user(5005, "Erin"), api.user(5006, "Finn"), api.user(5007, "Gwen")
    async with service, running(api, service):
        ask_with_reply(api, erin, api.private_chat(erin))
        first, _ = await status_of(api)
        await engine.wait_started(job_id_of(first))
        after = len(api.calls)

        # Finn and Gwen send at the same moment (one batch of updates), each in their own chat.
        requests = []
        for user in (finn, gwen):
            chat = api.private_chat(user)
            painting = api.document_message(user, chat, PAINTING, file_name="style.png")
            requests.append(
                api.photo_message(
                    user, chat, PHOTO, caption="/paint", thumbnail=THUMB, reply_to=painting
                )
            )
        api.push_message(*requests)
        await api.wait_until(lambda: len([c for c in api.calls[after:] if is_status(c)]) == 2)
        statuses = [c for c in api.calls[after:] if is_status(c)]
        assert len(admitted_at) == 3
        first_status_at = api.calls.index(statuses[0])
        assert admitted_at[2] <= first_status_at  # both were queued before either was shown
        shown = sorted(re.findall(r"#(\d+)", status.text)[0] for status in statuses)
        assert shown == ["1", "2"], [status.text for status in statuses]
