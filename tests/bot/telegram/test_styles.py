"""The style library and /gallery on Telegram: the real aiogram bot against the fake Bot API
server, the real service (on the fake engine), store, files and sandbox (contact sheets are
drawn in its child process)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bot.challenges import Challenges
from bot.jobs import JobState
from bot.service import PaintService
from bot.settings import Limits
from bot.store import Store
from bot.styles import StyleLibrary
from tests.bot.telegram.fake_bot_api import Call, FakeBotAPI
from tests.bot.telegram.harness import (
    PHOTO,
    THUMB,
    is_result,
    job_id_of,
    manual_service,
    result_of,
    running,
    status_of,
)
from tests.fakes import FakeEngine, FakeTime, jpeg_bytes, png_bytes

GROUP = -100321
STARRY = png_bytes((64, 48), (20, 40, 160))
SCREAM = jpeg_bytes((48, 64), (200, 90, 20))


@pytest.fixture
def library(store: Store, data_dir: Path, service: PaintService, clock: FakeTime) -> StyleLibrary:
    return StyleLibrary(store=store, data_dir=data_dir, check=service.check_image, clock=clock)


class Chat:
    """A group with an administrator (Ada) and a member (Bob)."""

    def __init__(self, api: FakeBotAPI) -> None:
        self.api = api
        self.chat = api.group_chat(GROUP)
        self.ada = api.user(1, "Ada")
        self.bob = api.user(2, "Bob")
        api.admins[GROUP] = {self.ada["id"]}

    async def say(self, user: dict[str, Any], text: str, **where: Any) -> Call:
        after = len(self.api.calls)
        self.api.push_message(self.api.text_message(user, where.get("chat", self.chat), text))
        return await self.api.wait_call("sendMessage", after=after)

    async def add(self, user: dict[str, Any], caption: str, painting: bytes = STARRY) -> Call:
        after = len(self.api.calls)
        message = self.api.document_message(
            user, self.chat, painting, file_name="starry.png", caption=caption
        )
        self.api.push_message(message)
        return await self.api.wait_call("sendMessage", after=after)

    async def sheet(self, user: dict[str, Any], text: str) -> Call:
        after = len(self.api.calls)
        self.api.push_message(self.api.text_message(user, self.chat, text))
        return await self.api.wait_call("sendPhoto", after=after)


async def test_administrators_keep_the_library_members_list_it(
    api: FakeBotAPI, service: PaintService, library: StyleLibrary
) -> None:
    chat = Chat(api)
    async with running(api, service, styles=library):
        denied = await chat.add(chat.bob, "/style add starry")
        assert denied.text == "Only organisers (the group's administrators) can add styles."
        bad = await chat.add(chat.ada, "/style add Starry Night")
        assert bad.text.startswith("“Starry Night” can't be a style name.")
        assert bad.text.endswith("Try “starry-night”.")
        assert api.downloads == []  # refused before anything was fetched
        unnamed = await chat.add(chat.ada, "/style add")
        assert unnamed.text.startswith("Name the style: /style add starry-night on the painting.")

        added = await chat.add(chat.ada, "/style add Starry-Night")
        assert added.text == (
            "Saved “starry-night” in this chat's styles. Paint with it: "
            "/paint style=starry-night as the caption of your photo."
        )
        assert len(api.downloads) == 1
        # In reply to a painting works too.
        after = len(api.calls)
        painting = api.photo_message(chat.bob, chat.chat, SCREAM, thumbnail=THUMB)
        api.push_message(
            api.text_message(chat.ada, chat.chat, "/style add scream", reply_to=painting)
        )
        assert (await api.wait_call("sendMessage", after=after)).text.startswith("Saved “scream”")
        taken = await chat.add(chat.ada, "/style add scream", SCREAM)
        assert taken.text.startswith("There is already a style called “scream” here.")

        listed = await chat.sheet(chat.bob, "/style list")
        assert listed.text == "🎨 This chat's styles: 2 styles. Paint with one by its name."
        with Image.open(io.BytesIO(listed.upload("photo") or b"")) as img:
            assert img.format == "JPEG" and img.width > 2 * 192

        not_yours = await chat.say(chat.bob, "/style remove scream")
        assert not_yours.text == "Only organisers (the group's administrators) can remove styles."
        removed = await chat.say(chat.ada, "/style remove scream")
        assert removed.text == (
            "Removed the style “scream”. Paintings already waiting with it still paint."
        )
        usage = await chat.say(chat.bob, "/style")
        assert usage.text.startswith("The chat's saved styles:")
    assert library.names("telegram", str(GROUP)) == ["starry-night"]


async def test_a_long_list_is_paged(
    api: FakeBotAPI, service: PaintService, library: StyleLibrary
) -> None:
    chat = Chat(api)
    for number in range(13):
        await library.add(
            platform="telegram",
            community_id=str(GROUP),
            name=f"style-{number:02d}",
            painting=png_bytes((40, 40), (number * 18, 60, 90)),
            painting_name="p.png",
            added_by="1",
            added_by_name="Ada",
        )
    async with running(api, service, styles=library):
        first = await chat.sheet(chat.bob, "/style list")
        assert first.text == (
            "🎨 This chat's styles: 13 styles, page 1 of 2. Paint with one by its name. "
            "/style list 2 shows the next page."
        )
        second = await chat.sheet(chat.bob, "/style list 2")
        assert second.text.endswith("page 2 of 2. Paint with one by its name.")
        past = await chat.say(chat.bob, "/style list 3")
        assert past.text == "There are only 2 pages of styles."


async def test_paint_with_a_saved_style(
    api: FakeBotAPI, service: PaintService, library: StyleLibrary
) -> None:
    chat = Chat(api)
    async with running(api, service, styles=library):
        await chat.add(chat.ada, "/style add starry")
        after = len(api.calls)
        api.push_message(
            api.photo_message(
                chat.bob,
                chat.chat,
                PHOTO,
                thumbnail=THUMB,
                caption="/paint style=starry strength=8",
            )
        )
        await status_of(api, after=after)
        _, job_id = await result_of(api, after=after)
    job = service.get(job_id)
    assert job.state is JobState.DONE
    assert job.options.strength == 8
    assert service.input_bytes(job, "photo") == PHOTO
    assert service.input_bytes(job, "painting") == STARRY
    assert job.painting_name == "starry"


async def test_the_guided_flow_with_a_style_asks_for_the_photo_only(
    api: FakeBotAPI, service: PaintService, library: StyleLibrary
) -> None:
    chat = Chat(api)
    async with running(api, service, styles=library):
        await chat.add(chat.ada, "/style add starry")
        ask = await chat.say(chat.bob, "/paint style=starry")
        assert "photo" in ask.text
        after = len(api.calls)
        api.push_message(
            api.photo_message(chat.bob, chat.chat, PHOTO, thumbnail=THUMB, reply_to=ask.result)
        )
        _, job_id = await result_of(api, after=after)
    assert service.input_bytes(service.get(job_id), "painting") == STARRY


BOTH = (
    "Give either a painting or a saved style, not both. To blend the style with a painting, "
    "add blend=50 to the caption."
)


async def test_what_paint_with_a_style_refuses(
    api: FakeBotAPI, service: PaintService, library: StyleLibrary
) -> None:
    chat = Chat(api)
    async with running(api, service, styles=library):
        await chat.add(chat.ada, "/style add starry")
        missing = await chat.say(chat.bob, "/paint style=stary")
        assert missing.text == "There is no style called “stary” here. Did you mean “starry”?"
        empty = await chat.say(chat.bob, "/paint style=")
        assert empty.text == "Write the style's name after style=, like style=starry-night."
        # A photo replying to a painting, and a style as well: which one?
        downloads = len(api.downloads)
        after = len(api.calls)
        painting = api.photo_message(chat.bob, chat.chat, SCREAM, thumbnail=THUMB)
        api.push_message(
            api.photo_message(
                chat.bob,
                chat.chat,
                PHOTO,
                thumbnail=THUMB,
                caption="/paint style=starry",
                reply_to=painting,
            )
        )
        both = await api.wait_call("sendMessage", after=after)
        assert both.text == BOTH
        # An album of two (photo and painting) with a style, the same.
        after = len(api.calls)
        api.push_message(
            api.photo_message(
                chat.bob, chat.chat, PHOTO, caption="/paint style=starry", media_group_id="a1"
            ),
            api.photo_message(chat.bob, chat.chat, SCREAM, media_group_id="a1"),
        )
        album = await api.wait_call("sendMessage", after=after)
        assert album.text == BOTH
        assert len(api.downloads) == downloads
    assert service.overview().waiting == () and service.overview().running is None


async def test_a_style_removed_while_its_painting_waits_still_paints(
    api: FakeBotAPI, store: Store, data_dir: Path, clock: FakeTime
) -> None:
    fake_engine = FakeEngine(auto=False)
    service = manual_service(store, data_dir, clock, fake_engine, Limits(per_member=2))
    library = StyleLibrary(store=store, data_dir=data_dir, check=service.check_image, clock=clock)
    chat = Chat(api)
    carol = api.user(3, "Carol")
    async with service, running(api, service, styles=library):
        await chat.add(chat.ada, "/style add starry")
        after = len(api.calls)
        api.push_message(api.photo_message(carol, chat.chat, SCREAM, caption="/paint style=starry"))
        await status_of(api, after=after)
        first = await fake_engine.wait_started()
        after = len(api.calls)
        api.push_message(
            api.photo_message(chat.bob, chat.chat, PHOTO, caption="/paint style=starry")
        )
        await status_of(api, after=after)
        [waiting] = service.overview().waiting
        removed = await chat.say(chat.ada, "/style remove starry")
        assert removed.text.startswith("Removed the style “starry”.")
        assert library.find("telegram", str(GROUP), "starry") is None

        fake_engine.finish(first)
        await fake_engine.wait_started(waiting.id)
        assert Path(fake_engine.seen[-1].painting_path).read_bytes() == STARRY
        fake_engine.finish(waiting.id)
        await api.wait_call(
            "sendPhoto", where=lambda c: is_result(c) and job_id_of(c) == waiting.id
        )
    assert service.get(waiting.id).state is JobState.DONE


async def test_a_private_chat_is_its_members_own_library(
    api: FakeBotAPI, service: PaintService, library: StyleLibrary
) -> None:
    eve = api.user(5, "Eve")
    chat = api.private_chat(eve)
    async with running(api, service, styles=library):
        after = len(api.calls)
        api.push_message(
            api.document_message(eve, chat, STARRY, caption="/style add mine", file_name="m.png")
        )
        added = await api.wait_call("sendMessage", after=after)
        assert added.text.startswith("Saved “mine”")
    assert library.names("telegram", str(eve["id"])) == ["mine"]
    assert library.names("telegram", str(GROUP)) == []


# ----------------------------------------------------------------------------------------------
# /gallery


async def test_gallery_is_one_picture_of_the_chats_recent_paintings(
    api: FakeBotAPI, service: PaintService, store: Store, data_dir: Path, library: StyleLibrary
) -> None:
    chat = Chat(api)
    core = Challenges(store=store, service=service, data_dir=data_dir, limits=Limits())
    async with running(api, service, core, styles=library):
        empty = await chat.say(chat.bob, "/gallery")
        assert empty.text == "No paintings in this chat's gallery yet."
        for user, shade in ((chat.bob, 40), (chat.ada, 160)):
            after = len(api.calls)
            api.push_message(
                api.photo_message(
                    user,
                    chat.chat,
                    jpeg_bytes((48, 40), (shade, 90, 40)),
                    caption="/paint",
                    reply_to=api.photo_message(user, chat.chat, STARRY),
                )
            )
            await result_of(api, after=after)
        gallery = await chat.sheet(chat.bob, "/gallery")
        assert gallery.text == "🖼️ This chat's gallery, page 1 of 1"
        with Image.open(io.BytesIO(gallery.upload("photo") or b"")) as img:
            assert img.format == "JPEG"
            assert img.width == 12 + 2 * (256 + 12)  # two paintings, side by side
        later = await chat.say(chat.bob, "/gallery 2")
        assert later.text == "No more paintings."


async def test_a_page_number_nobody_means_is_answered_clearly(
    api: FakeBotAPI, service: PaintService, library: StyleLibrary
) -> None:
    """Too big for SQLite (20 digits) or of thousands of digits: a page past the end; a digit
    int() refuses (²): no page number, the first page. Never "something went wrong"."""
    chat = Chat(api)
    await library.add(
        platform="telegram",
        community_id=str(GROUP),
        name="starry",
        painting=STARRY,
        painting_name="p.png",
        added_by="1",
        added_by_name="Ada",
    )
    async with running(api, service, styles=library):
        for page in ("9" * 20, "9" * 4000):
            past = await chat.say(chat.bob, f"/style list {page}")
            assert past.text == "There is only 1 page of styles.", (page[:20], past.text)
        first = await chat.sheet(chat.bob, "/style list ²")
        assert first.text.startswith("🎨 This chat's styles: 1 style.")
