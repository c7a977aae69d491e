"""The buttons under Telegram's results: who may re-roll, what a re-roll shows, Delete.

The real aiogram bot against the fake Bot API server, the service on the fake engine, and the
status pictures made by a real sandbox (child processes): Pillow may not decode a pixel in this
process meanwhile (``no_decoding``).
"""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from bot import replies
from bot.jobs import JobState
from bot.service import PaintService
from tests.bot.conftest import Decodes
from tests.bot.telegram.fake_bot_api import Call, FakeBotAPI
from tests.bot.telegram.harness import (
    PHOTO,
    ask_with_reply,
    result_of,
    running,
    status_of,
)


def picture_size(call: Call) -> tuple[int, int]:
    data = call.upload("photo")
    assert data is not None
    with Image.open(io.BytesIO(data)) as picture:
        assert picture.format == "JPEG"
        return picture.size


async def test_rerolls_are_for_the_owner_and_moderators_and_start_from_the_result(
    api: FakeBotAPI, service: PaintService, no_decoding: Decodes
) -> None:
    frank, grace, admin = api.user(6006, "Frank"), api.user(7007, "Grace"), api.user(8008, "Hal")
    group = api.group_chat(-300)
    api.admins[-300] = {8008}
    async with running(api, service):
        ask_with_reply(api, frank, group)
        status, _ = await status_of(api)
        result, first_id = await result_of(api)
        await api.wait_call("sendDocument")
        result_message = api.messages[(-300, result.result["message_id"])]

        mark = len(api.calls)
        api.press(grace, result_message, f"reroll:stronger:{first_id}")
        refused = await api.wait_call("answerCallbackQuery", after=mark)
        assert refused.params["show_alert"] == "true"
        assert refused.params["text"] == "Only Frank can paint this again."

        mark = len(api.calls)
        api.press(admin, result_message, f"reroll:stronger:{first_id}")
        again, _ = await status_of(api, after=mark)
        _, second_id = await result_of(api, after=mark)
    assert no_decoding.calls == []
    assert len([job for job in service.overview().waiting]) == 0
    second = service.get(second_id)
    assert (second.parent_id, second.user_id, second.options.strength) == (first_id, "8008", 7)
    # The member's photo is 96 x 64 and the painting made from it 64 x 48: the re-roll's
    # status shows the painting under which the button was pressed, not the photo.
    assert picture_size(status) == Image.open(io.BytesIO(PHOTO)).size == (96, 64)
    assert picture_size(again) == (64, 48)


async def test_delete_removes_the_painting_its_messages_and_its_inputs(
    api: FakeBotAPI, service: PaintService, data_dir: Path
) -> None:
    kim, lou = api.user(1919, "Kim"), api.user(2929, "Lou")
    group = api.group_chat(-500)
    async with running(api, service):
        ask_with_reply(api, kim, group)
        status, status_id = await status_of(api)
        result, job_id = await result_of(api)
        document = await api.wait_call("sendDocument")
        # Once the file is out, Delete under the photo knows it too.
        file_id = document.result["message_id"]
        delete = f"delete:{job_id}:{file_id}"
        await api.wait_call(
            "editMessageReplyMarkup", where=lambda c: delete in [d for _, d in c.buttons]
        )
        result_message = api.messages[(-500, result.result["message_id"])]
        job = service.get(job_id)

        mark = len(api.calls)
        api.press(lou, result_message, delete)
        refused = await api.wait_call("answerCallbackQuery", after=mark)
        assert refused.params["text"] == replies.owner_only(job, "delete")
        assert Path(job.result_path or "").is_file()

        mark = len(api.calls)
        api.press(kim, result_message, delete)
        done = await api.wait_call("answerCallbackQuery", after=mark)
        await api.wait_until(lambda: len(api.calls_to("deleteMessage")) == 3)
    assert done.params["text"] == replies.DELETED
    deleted = {int(c.params["message_id"]) for c in api.calls_to("deleteMessage")}
    assert deleted == {status_id, result.result["message_id"], file_id}
    assert all(c.error is None for c in api.calls_to("deleteMessage"))
    assert not Path(job.result_path or "").exists()
    assert not Path(job.photo_path).exists()  # no kept job uses the inputs
    assert not Path(job.painting_path).exists()
    assert service.get(job_id).state is JobState.DONE
    assert status.chat_id == -500


async def test_a_made_up_delete_press_deletes_no_one_elses_message(
    api: FakeBotAPI, service: PaintService
) -> None:
    """A client may send any callback data under any of the bot's messages. Kim, owner of a
    painting, must not make the bot (an administrator of the group) delete Lou's result or
    any message she names by id: the press must be a button of the message it came from."""
    kim, lou = api.user(1921, "Kim"), api.user(2931, "Lou")
    group = api.group_chat(-501)
    async with running(api, service):
        ask_with_reply(api, kim, group)
        _, kims = await result_of(api)
        mark = len(api.calls)
        ask_with_reply(api, lou, group)
        lous_result, _ = await result_of(api, after=mark)
        lous_file = await api.wait_call("sendDocument", after=mark)
        await api.wait_call("editMessageReplyMarkup", after=mark)
        under_lous = api.messages[(-501, lous_result.result["message_id"])]
        victim = lous_file.result["message_id"]

        mark = len(api.calls)
        api.press(kim, under_lous, f"delete:{kims}:{victim}")
        refused = await api.wait_call("answerCallbackQuery", after=mark)
    assert refused.params["text"] == replies.NOT_THIS_MESSAGE
    assert refused.params["show_alert"] == "true"
    assert api.calls_to("deleteMessage") == []
    assert service.get(kims).result_path is not None  # nothing done at all
