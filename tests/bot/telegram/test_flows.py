"""The three ways to ask for a painting on Telegram, with the real aiogram bot against the fake
Bot API server over real HTTP and the paint service on the in-process fake engine.

Timers (album wait, guided-flow timeout) run on fake time where a test needs to control them.
"""

from __future__ import annotations

from pathlib import Path

from bot import replies
from bot.jobs import JobState
from bot.options import rerolls_for
from bot.service import PaintService
from bot.store import Store
from tests.bot.telegram.fake_bot_api import FakeBotAPI
from tests.bot.telegram.harness import (
    PAINTING,
    PHOTO,
    THUMB,
    ask_with_reply,
    edits_of,
    job_id_of,
    manual_service,
    result_of,
    running,
    status_of,
)
from tests.fakes import FakeEngine, FakeTime


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
    offered = [d for _, d in photo.buttons]
    rerolls = [f"reroll:{way.key}:{job_id}" for way in rerolls_for(job.options)]
    assert offered == [*rerolls, f"timelapse:{job_id}", f"delete:{job_id}:0"]
    assert {f"reroll:{key}:{job_id}" for key in ("stronger", "softer", "keep_colors")} <= set(
        offered
    )
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
    api: FakeBotAPI, service: PaintService, clock: FakeTime
) -> None:
    dave = api.user(4004, "Dave")
    chat = api.private_chat(dave)
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


async def test_album_needs_two_or_three_images_and_one_captioned_photo_asks_for_the_painting(
    api: FakeBotAPI, service: PaintService
) -> None:
    olga = api.user(1616, "Olga")
    chat = api.private_chat(olga)
    album = [
        api.photo_message(
            olga, chat, PHOTO, caption="/paint" if i == 0 else None, media_group_id="g4"
        )
        for i in range(4)
    ]
    async with running(api, service):
        api.push_message(*album)
        refused = await api.wait_call("sendMessage")
        assert "two or three images" in refused.text
        assert "has 4" in refused.text

        api.push_message(api.photo_message(olga, chat, PHOTO, caption="/paint softer"))
        options = await api.wait_call("sendMessage", where=lambda c: "softer" in c.text)
        assert "strength=" in options.text  # says which options exist
        api.push_message(api.photo_message(olga, chat, PHOTO, caption="/paint strength=3"))
        ask = await api.wait_call("sendMessage", where=lambda c: "Now send the painting" in c.text)
        api.push_message(api.document_message(olga, chat, PAINTING, reply_to=ask.result))
        _, job_id = await result_of(api)
    assert service.get(job_id).options.strength == 3
    assert service.input_bytes(service.get(job_id), "painting") == PAINTING


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


async def test_past_a_limit_nothing_is_downloaded(
    api: FakeBotAPI, store: Store, data_dir: Path, clock: FakeTime
) -> None:
    """A member with a painting in progress is refused before their images are fetched, in
    every way of asking: an album, a reply, a guided /paint (at once, not after two prompts)."""
    engine = FakeEngine(auto=False)
    service = manual_service(store, data_dir, clock, engine)
    pia = api.user(4141, "Pia")
    chat = api.private_chat(pia)
    async with service, running(api, service):
        ask_with_reply(api, pia, chat)
        status, _ = await status_of(api)
        await engine.wait_started(job_id_of(status))
        fetched = len(api.downloads)

        mark = len(api.calls)
        ask_with_reply(api, pia, chat)
        by_reply = await api.wait_call("sendMessage", after=mark)
        mark = len(api.calls)
        api.push_message(
            api.photo_message(pia, chat, PHOTO, caption="/paint", media_group_id="a1"),
            api.photo_message(pia, chat, PAINTING, media_group_id="a1"),
        )
        by_album = await api.wait_call("sendMessage", after=mark)
        mark = len(api.calls)
        api.push_message(api.text_message(pia, chat, "/paint"))
        guided = await api.wait_call("sendMessage", after=mark)
    in_progress = replies.in_progress(1, 1)
    assert by_reply.text == by_album.text == guided.text == in_progress
    assert len(api.downloads) == fetched
    assert not [c for c in api.calls if c.text == replies.ASK_PHOTO]
    assert service.overview().waiting == ()


async def test_cancel_stops_only_a_painting_in_the_chat_where_it_is_sent(
    api: FakeBotAPI, store: Store, data_dir: Path, clock: FakeTime
) -> None:
    engine = FakeEngine(auto=False)
    service = manual_service(store, data_dir, clock, engine)
    quin = api.user(4343, "Quin")
    here, elsewhere = api.group_chat(-1001, "Here"), api.group_chat(-1002, "Elsewhere")
    async with service, running(api, service):
        ask_with_reply(api, quin, here)
        status, _ = await status_of(api)
        job_id = job_id_of(status)
        await engine.wait_started(job_id)
        mark = len(api.calls)
        api.push_message(api.text_message(quin, elsewhere, "/cancel"))
        nothing = await api.wait_call("sendMessage", after=mark)
        assert nothing.chat_id == -1002
        assert nothing.text == replies.NOTHING_TO_CANCEL
        assert service.get(job_id).state is JobState.RUNNING
        mark = len(api.calls)
        api.push_message(api.text_message(quin, here, "/cancel"))
        await api.wait_call("sendMessage", after=mark)
        await api.wait_until(lambda: service.get(job_id).state is JobState.CANCELLED)


async def test_absurd_option_values_are_refused_saying_what_is_accepted(
    api: FakeBotAPI, service: PaintService
) -> None:
    """A 4,000-digit number or a 3,000-letter quality must not crowd out, in a reply cut to
    Telegram's limit, what is accepted; digits Python reads but people don't write
    (``1_0``, ``1-0``, Arabic-Indic ``٣٠``) are refused, not read as 10 or 30."""
    ida = api.user(2323, "Ida")
    chat = api.private_chat(ida)
    tries = {
        "blend=" + "9" * 4000: "blend must be a whole number from 0 to 100.",
        "strength=" + "9" * 4000: "strength must be a whole number from 1 to 10.",
        "quality=" + "x" * 3000: "is unknown: use draft, standard, high.",
        "blend=1-0": "blend must be a whole number from 0 to 100.",
        "blend=١٠": "blend must be a whole number from 0 to 100.",
    }
    async with running(api, service):
        for words, accepted in tries.items():
            mark = len(api.calls)
            api.push_message(api.text_message(ida, chat, f"/paint {words}"))
            refused = await api.wait_call("sendMessage", after=mark)
            assert accepted in refused.text, (words[:20], refused.text[:80])
            assert len(refused.text) < 200
    assert not api.calls_to("getFile")
