"""Blends of two paintings and the Timelapse button on Telegram: the real aiogram bot against
the fake Bot API server, the real service on the fake engine."""

from __future__ import annotations

from pathlib import Path

from bot import replies
from bot.service import PaintService
from bot.store import Store
from bot.styles import StyleLibrary
from tests.bot.telegram.fake_bot_api import FakeBotAPI
from tests.bot.telegram.harness import (
    PAINTING,
    PHOTO,
    THUMB,
    manual_service,
    result_of,
    running,
    status_of,
)
from tests.fakes import TIMELAPSE_MP4, FakeEngine, FakeTime, jpeg_bytes

WAVES = jpeg_bytes((56, 40), (10, 170, 120))


def second_painting_of(service: PaintService, job_id: str) -> bytes:
    path = service.get(job_id).painting2_path
    assert path is not None, "not a blend"
    return Path(path).read_bytes()


async def test_an_album_of_three_images_is_a_blend(api: FakeBotAPI, service: PaintService) -> None:
    ann = api.user(3101, "Ann")
    chat = api.private_chat(ann)
    album = [
        api.photo_message(ann, chat, image, caption=caption, media_group_id="blend1")
        for image, caption in ((PHOTO, "/paint blend=30"), (PAINTING, None), (WAVES, None))
    ]
    async with running(api, service):
        api.push_message(*album)
        status, _ = await status_of(api)
        result, job_id = await result_of(api)
    job = service.get(job_id)
    assert job.options.blend == 30
    assert service.input_bytes(job, "photo") == PHOTO
    assert service.input_bytes(job, "painting") == PAINTING
    assert second_painting_of(service, job_id) == WAVES
    assert "blend 30% with photo.jpg" in status.text  # Telegram photos have no file names
    assert "blend 30% with" in result.text


async def test_an_album_of_three_without_blend_blends_half_and_half(
    api: FakeBotAPI, service: PaintService
) -> None:
    ann = api.user(3102, "Ann")
    chat = api.private_chat(ann)
    album = [
        api.photo_message(ann, chat, image, caption=caption, media_group_id="blend2")
        for image, caption in ((PHOTO, "/paint"), (PAINTING, None), (WAVES, None))
    ]
    async with running(api, service):
        api.push_message(*album)
        _, job_id = await result_of(api)
    assert service.get(job_id).options.blend == 50
    assert second_painting_of(service, job_id) == WAVES


async def test_blend_in_the_caption_of_a_reply_asks_for_the_second_painting(
    api: FakeBotAPI, service: PaintService
) -> None:
    cy = api.user(3103, "Cy")
    group = api.group_chat(-100777)
    painting = api.document_message(cy, group, PAINTING, file_name="style.png")
    photo = api.photo_message(
        cy, group, PHOTO, thumbnail=THUMB, caption="/paint blend=20", reply_to=painting
    )
    async with running(api, service):
        api.push_message(photo)
        ask = await api.wait_call("sendMessage")
        assert ask.text == replies.ASK_PAINTING2
        assert ask.params["reply_markup"]["force_reply"] is True
        api.push_message(
            api.document_message(cy, group, WAVES, file_name="waves.jpg", reply_to=ask.result)
        )
        status, _ = await status_of(api)
        _, job_id = await result_of(api)
    assert service.get(job_id).options.blend == 20
    assert second_painting_of(service, job_id) == WAVES
    assert "blend 20% with waves.jpg" in status.text


async def test_paint_blend_alone_asks_for_all_three_images(
    api: FakeBotAPI, service: PaintService
) -> None:
    di = api.user(3104, "Di")
    chat = api.private_chat(di)
    async with running(api, service):
        api.push_message(api.text_message(di, chat, "/paint blend=80"))
        asks = []
        for image, prompt in (
            (PHOTO, replies.ASK_PHOTO),
            (PAINTING, replies.ASK_PAINTING),
            (WAVES, replies.ASK_PAINTING2),
        ):
            ask = await api.wait_call("sendMessage", where=lambda c, p=prompt: c.text == p)
            asks.append(ask)
            api.push_message(api.photo_message(di, chat, image, reply_to=ask.result))
        _, job_id = await result_of(api)
    job = service.get(job_id)
    assert job.options.blend == 80
    assert service.input_bytes(job, "photo") == PHOTO
    assert service.input_bytes(job, "painting") == PAINTING
    assert second_painting_of(service, job_id) == WAVES


async def test_a_saved_style_blends_with_a_painting_when_blend_is_asked(
    api: FakeBotAPI, service: PaintService, store: Store, data_dir: Path, clock: FakeTime
) -> None:
    library = StyleLibrary(store=store, data_dir=data_dir, check=service.check_image, clock=clock)
    eve = api.user(3105, "Eve")
    chat = api.private_chat(eve)
    async with running(api, service, styles=library):
        api.push_message(
            api.document_message(eve, chat, PAINTING, file_name="s.png", caption="/style add sea")
        )
        await api.wait_call("sendMessage", where=lambda c: "Saved" in c.text)
        album = [
            api.photo_message(eve, chat, image, caption=caption, media_group_id="styled")
            for image, caption in ((PHOTO, "/paint style=sea blend=40"), (WAVES, None))
        ]
        api.push_message(*album)
        _, job_id = await result_of(api)
    job = service.get(job_id)
    assert job.painting_name == "sea" and job.options.blend == 40
    assert service.input_bytes(job, "painting") == PAINTING
    assert second_painting_of(service, job_id) == WAVES


async def test_anyone_in_the_group_gets_the_timelapse_as_an_animation(
    api: FakeBotAPI, store: Store, data_dir: Path, clock: FakeTime
) -> None:
    service = manual_service(store, data_dir, clock, FakeEngine())
    fay, gus = api.user(3106, "Fay"), api.user(3107, "Gus")
    group = api.group_chat(-100888)
    async with service, running(api, service):
        painting = api.document_message(fay, group, PAINTING, file_name="style.png")
        api.push_message(api.photo_message(fay, group, PHOTO, caption="/paint", reply_to=painting))
        result, job_id = await result_of(api)
        assert ("🎞️ Timelapse", f"timelapse:{job_id}") in result.buttons
        await api.wait_call("editMessageReplyMarkup")  # Delete learns the file's message
        shown = api.messages[(group["id"], result.result["message_id"])]
        assert f"timelapse:{job_id}" in [
            b["callback_data"] for row in shown["reply_markup"]["inline_keyboard"] for b in row
        ]

        api.press(gus, shown, f"timelapse:{job_id}")  # not the painter: fine
        sent = await api.wait_call("sendAnimation")
        assert sent.upload("animation") == TIMELAPSE_MP4
        assert sent.text == "🎞️ Fay's painting emerging from the photo."
        assert sent.params["reply_parameters"]["message_id"] == result.result["message_id"]
        assert sent.result["animation"]["mime_type"] == "video/mp4"

        clock.advance(service.limits.retention_hours * 3600 + 1)
        mark = len(api.calls)
        api.press(gus, shown, f"timelapse:{job_id}")
        late = await api.wait_call("answerCallbackQuery", after=mark)
        assert late.params["text"] == (
            "Timelapses are kept for 3 days after a painting is finished, and this one's time "
            "is up."
        )
        assert late.params["show_alert"] == "true"
    assert len(api.calls_to("sendAnimation")) == 1


async def test_a_forged_timelapse_press_never_brings_another_chats_painting(
    api: FakeBotAPI, store: Store, data_dir: Path, clock: FakeTime
) -> None:
    service = manual_service(store, data_dir, clock, FakeEngine())
    fay, mal = api.user(3108, "Fay"), api.user(3109, "Mal")
    private, group = api.private_chat(fay), api.group_chat(-100999)
    async with service, running(api, service):
        # Fay paints her own photo in her private chat with the bot.
        api.push_message(
            api.photo_message(
                fay,
                private,
                PHOTO,
                caption="/paint",
                reply_to=api.document_message(fay, private, PAINTING, file_name="style.png"),
            )
        )
        _, job_id = await result_of(api)
        # Mal, in a group, presses a button whose data he wrote himself: Fay's job id, and
        # some others (a client may send any callback data under any of the bot's messages).
        # Under a message that has no such button: refused as made up.
        under = api.text_message(mal, group, "anything")
        # Under a message too old for Telegram to hand over (only its chat and id come, with
        # date 0), whose buttons cannot be checked: the painting's chat is not this one.
        too_old = {"chat": group, "message_id": 1, "date": 0}
        alerts = []
        for message, data in (
            (under, f"timelapse:{job_id}"),
            (under, "timelapse:" + "9" * 200),
            (under, "timelapse:../../x"),
            (too_old, f"timelapse:{job_id}"),
        ):
            mark = len(api.calls)
            api.press(mal, message, data)
            alerts.append(await api.wait_call("answerCallbackQuery", after=mark))
    assert not api.calls_to("sendAnimation")
    assert [alert.params["text"] for alert in alerts] == [replies.NOT_THIS_MESSAGE] * 3 + [
        replies.NO_TIMELAPSE_HERE
    ]
    assert all(alert.params["show_alert"] == "true" for alert in alerts)


async def test_a_timelapse_pressed_twice_at_once_is_posted_once(
    api: FakeBotAPI, store: Store, data_dir: Path, clock: FakeTime
) -> None:
    """Pressed twice quickly, or by a member pressing on and on: the chat gets it once (its
    flood limit is everyone's status messages' too), the other presses an alert; later it
    may be posted again."""
    service = manual_service(store, data_dir, clock, FakeEngine())
    hal, ivy = api.user(3110, "Hal"), api.user(3111, "Ivy")
    group = api.group_chat(-100555)
    async with service, running(api, service):
        painting = api.document_message(hal, group, PAINTING, file_name="style.png")
        api.push_message(api.photo_message(hal, group, PHOTO, caption="/paint", reply_to=painting))
        result, job_id = await result_of(api)
        shown = api.messages[(group["id"], result.result["message_id"])]
        mark = len(api.calls)
        for _ in range(5):
            api.press(ivy, shown, f"timelapse:{job_id}")
        await api.wait_until(
            lambda: (
                len(api.calls_to("answerCallbackQuery")) >= 5
                and len(api.calls_to("sendAnimation")) >= 1
            )
        )
        answers = [c for c in api.calls[mark:] if c.method == "answerCallbackQuery"]
        alerts = [a.params.get("text") for a in answers if a.params.get("text")]
        assert alerts == [replies.timelapse_just_posted(600)] * 4
        assert len(api.calls_to("sendAnimation")) == 1

        clock.advance(601)
        api.press(ivy, shown, f"timelapse:{job_id}")
        await api.wait_until(lambda: len(api.calls_to("sendAnimation")) == 2)
