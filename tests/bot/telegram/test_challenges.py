"""Style challenges in a Telegram group: the real aiogram bot against the fake Bot API server.

Members send captions, replies and button presses as Telegram delivers them; the tests assert
the calls the bot makes (announcements, entries with inline buttons, callback answers, results).
Deadlines pass on fake time, also while the bot is stopped.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bot import replies
from bot.challenges import Challenges, ChallengeState
from bot.jobs import Finished, Job, JobState
from bot.service import PaintService
from bot.settings import Limits
from bot.store import Store
from bot.styles import StyleLibrary
from engine.protocol import PaintOptions
from tests.bot.telegram.fake_bot_api import Call, FakeBotAPI
from tests.bot.telegram.harness import is_status, job_id_of, manual_service, running
from tests.fakes import FakeEngine, FakeTime, jpeg_bytes, png_bytes

DAY = 24 * 3600
PAINTING = png_bytes((80, 80), (200, 160, 20))
GROUP_ID = -100777


@pytest.fixture
def fake_engine() -> FakeEngine:
    return FakeEngine(auto=True)


@pytest.fixture
def limits() -> Limits:
    return Limits(per_member=3, challenge_entries=3)


@contextlib.asynccontextmanager
async def challenges_on(
    api: FakeBotAPI,
    service: PaintService,
    store: Store,
    data_dir: Path,
    limits: Limits,
    clock: FakeTime,
    pacing: FakeTime | None = None,
) -> AsyncIterator[Challenges]:
    """The bot with challenges (deadlines on ``clock``) and the style library they give their
    paintings to, polling the fake server."""
    library = StyleLibrary(store=store, data_dir=data_dir, check=service.check_image, clock=clock)
    core = Challenges(
        store=store,
        service=service,
        data_dir=data_dir,
        limits=limits,
        clock=clock,
        sleep=clock.sleep,
        on_ended=library.keep,
    )
    paced = {"clock": pacing, "sleep": pacing.sleep} if pacing else {}
    async with running(api, service, core, **paced):
        yield core


class Group:
    """Members of one group, sending what Telegram would deliver."""

    def __init__(self, api: FakeBotAPI) -> None:
        self.api = api
        self.chat = api.group_chat(GROUP_ID)

    def user(self, user_id: int, name: str) -> dict[str, Any]:
        return self.api.user(user_id, name)

    def send(self, user: dict[str, Any], text: str) -> int:
        self.api.push_message(self.api.text_message(user, self.chat, text))
        return len(self.api.calls)

    def send_photo(self, user: dict[str, Any], data: bytes, caption: str) -> int:
        self.api.push_message(self.api.photo_message(user, self.chat, data, caption=caption))
        return len(self.api.calls)

    async def reply(self, after: int) -> Call:
        return await self.api.wait_call("sendMessage", after=after)

    async def answer(self, user: dict[str, Any], message: dict[str, Any], data: str) -> str:
        query_id = self.api.press(user, message, data)
        call = await self.api.wait_call(
            "answerCallbackQuery", where=lambda c: c.params.get("callback_query_id") == query_id
        )
        return str(call.params.get("text", ""))


def is_entry(call: Call) -> bool:
    return call.method == "sendPhoto" and any(d.startswith("vote:") for _, d in call.buttons)


async def enter(group: Group, user: dict[str, Any], shade: int) -> Call:
    after = group.send_photo(user, jpeg_bytes((48, 40), (shade, 80, 40)), "/challenge enter")
    return await group.api.wait_call("sendPhoto", where=is_entry, after=after)


async def test_a_group_challenge_from_start_to_leaderboard(
    api: FakeBotAPI,
    service: PaintService,
    store: Store,
    data_dir: Path,
    limits: Limits,
    clock: FakeTime,
) -> None:
    group = Group(api)
    admin, alice, bob, carol = (
        group.user(1, "Ada"),
        group.user(2, "Alice"),
        group.user(3, "Bob"),
        group.user(4, "Carol"),
    )
    api.admins[GROUP_ID] = {admin["id"], api.bot_id}  # the bot may pin
    async with challenges_on(api, service, store, data_dir, limits, clock) as core:
        # Only administrators start one.
        after = group.send_photo(alice, PAINTING, "/challenge start 3d Sunflowers")
        denied = await group.reply(after)
        assert denied.text == ("Only organisers (the group's administrators) can start challenges.")
        after = group.send_photo(admin, PAINTING, "/challenge start 3s Sunflowers")
        assert "30m, 12h" in (await group.reply(after)).text

        # In reply to the painting works as well as the caption.
        painting = api.document_message(admin, group.chat, PAINTING, file_name="sun.png")
        api.push_message(painting)
        after = len(api.calls)
        api.push_message(
            api.text_message(
                admin, group.chat, "/challenge start 1d12h Sunflowers", reply_to=painting
            )
        )
        announcement = await api.wait_call("sendPhoto", after=after)
        assert announcement.text.startswith("🏁 Style challenge: Sunflowers")
        assert "/challenge enter" in announcement.text
        assert announcement.upload("photo") == PAINTING
        challenge = core.open_in("telegram", str(GROUP_ID))
        assert challenge is not None
        # The painting stays pinned in the group while the challenge runs, as on Discord.
        pin = await api.wait_call("pinChatMessage", after=after)
        assert pin.params["disable_notification"] == "true"
        assert api.pinned[GROUP_ID] == [announcement.result["message_id"]]

        after = group.send_photo(admin, PAINTING, "/challenge start 3d Again")
        assert (await group.reply(after)).text.startswith(
            "This channel already has an open challenge: Sunflowers"
        )

        # Entries: painted with the challenge painting, posted with Vote and Withdraw.
        alice_entry = await enter(group, alice, 10)
        bob_entry = await enter(group, bob, 200)
        jobs = [service.get(j.job_id) for j in core.entries(challenge.id)]
        assert {job.painting_path for job in jobs} == {jobs[0].painting_path}
        assert Path(jobs[0].painting_path).read_bytes() == PAINTING
        assert "Alice" in alice_entry.text
        assert [d for _, d in alice_entry.buttons] == ["vote:1", "withdraw:1"]
        assert not any(
            d.startswith("reroll:") for c in api.calls_to("sendPhoto") for _, d in c.buttons
        )

        # Votes: not your own, moving, hidden.
        own = await group.answer(alice, alice_entry.result, "vote:1")
        assert own == "You can't vote for your own entry."
        assert (await group.answer(carol, alice_entry.result, "vote:1")).startswith(
            "Voted for Alice's entry."
        )
        moved = await group.answer(carol, bob_entry.result, "vote:2")
        assert moved == (
            "Moved your vote from Alice's entry to Bob's. "
            "You can move it until the challenge ends; counts stay hidden until then."
        )
        await group.answer(alice, bob_entry.result, "vote:2")

        member_view = await group.reply(group.send(alice, "/challenge standings"))
        assert "hidden until the end" in member_view.text
        assert "vote" not in member_view.text.replace("Vote counts are hidden", "")
        # An administrator gets the counts privately; the group still sees none.
        after = group.send(admin, "/challenge standings")
        admin_view = await api.wait_call(
            "sendMessage", where=lambda c: c.chat_id == admin["id"], after=after
        )
        assert "1. Bob: entry 2, 2 votes" in admin_view.text
        assert "2. Alice: entry 1, 0 votes" in admin_view.text
        in_group = await api.wait_call(
            "sendMessage", where=lambda c: c.chat_id == GROUP_ID, after=after
        )
        assert "vote" not in in_group.text.replace("Vote counts are hidden", "").replace(
            "vote counts in a private message", ""
        )
        assert "private message" in in_group.text
        # One who never started a private chat with the bot is told how, still not in public.
        api.fail_next(
            "sendMessage",
            status=403,
            description="Forbidden: bot can't initiate conversation with a user",
            when=lambda c: c.chat_id == admin["id"],
        )
        after = group.send(admin, "/challenge standings")
        in_group = await api.wait_call(
            "sendMessage", where=lambda c: c.chat_id == GROUP_ID, after=after
        )
        assert "start a private chat with me" in in_group.text
        assert "2 votes" not in in_group.text
        assert all(
            "2 votes" not in c.text for c in api.calls_to("sendMessage") if c.chat_id == GROUP_ID
        )

        # Withdrawing: only yours (or an administrator's doing); the message goes.
        third = await enter(group, carol, 120)
        refused = await group.answer(bob, third.result, "withdraw:3")
        assert "Only the member who entered it" in refused
        withdrawn = await group.answer(carol, third.result, "withdraw:3")
        assert withdrawn == "Withdrew your entry and its votes."
        deleted = await api.wait_call("deleteMessage")
        assert int(deleted.params["message_id"]) == third.result["message_id"]

        # The deadline passes: one podium picture captioned with the results; voting closed,
        # the painting unpinned.
        after = len(api.calls)
        clock.advance(2 * DAY)
        results = await api.wait_call(
            "sendPhoto", where=lambda c: "has ended" in c.text, after=after
        )
        assert "🥇 Bob (2 votes)" in results.text
        assert "Alice" not in results.text  # no votes, no place
        with Image.open(io.BytesIO(results.upload("photo") or b"")) as podium:
            assert podium.format == "JPEG"
            assert podium.width == 12 + 320 + 12  # one place: Bob's
        await api.wait_call("unpinChatMessage", after=after)
        assert api.pinned[GROUP_ID] == []
        # Its painting joins the group's style library, named after the challenge.
        await core.drained()
        styles = StyleLibrary(store=store, data_dir=data_dir, check=service.check_image)
        assert styles.names("telegram", str(GROUP_ID)) == ["sunflowers"]
        late = await group.answer(carol, alice_entry.result, "vote:1")
        assert late == "Voting has closed."
        assert core.get(challenge.id).state is ChallengeState.CLOSED

        board = await group.reply(group.send(carol, "/challenge leaderboard"))
        assert "1. Bob: 1 win, 1 podium" in board.text


def bob_entry_job(core: Challenges, entry_id: int) -> str:
    entry = core.entry(entry_id)
    assert entry is not None
    return entry.job_id


async def test_deadline_passing_while_stopped_is_announced_at_start(
    api: FakeBotAPI,
    service: PaintService,
    store: Store,
    data_dir: Path,
    limits: Limits,
    clock: FakeTime,
) -> None:
    group = Group(api)
    admin, alice, bob = group.user(1, "Ada"), group.user(2, "Alice"), group.user(3, "Bob")
    api.admins[GROUP_ID] = {admin["id"]}
    async with challenges_on(api, service, store, data_dir, limits, clock):
        after = group.send_photo(admin, PAINTING, "/challenge start 1h Quick")
        await api.wait_call("sendPhoto", after=after)
        # The bot may not pin here: the challenge runs unpinned all the same.
        pin = await api.wait_call("pinChatMessage", after=after)
        assert pin.error == "Bad Request: not enough rights to manage pinned messages in the chat"
        entry = await enter(group, alice, 30)
        await group.answer(bob, entry.result, "vote:1")

    clock.advance(2 * 3600)  # the bot is down at the deadline
    after = len(api.calls)
    async with challenges_on(api, service, store, data_dir, limits, clock) as core:
        results = await api.wait_call(
            "sendPhoto", where=lambda c: "has ended" in c.text, after=after
        )
        assert "🥇 Alice (1 vote)" in results.text
        # Buttons from before the restart answer from the store.
        assert await group.answer(bob, entry.result, "vote:1") == "Voting has closed."
        [closed] = [core.latest_in("telegram", str(GROUP_ID))]
        assert closed is not None and closed.announced


async def test_administrators_cancel_and_members_cannot(
    api: FakeBotAPI,
    service: PaintService,
    store: Store,
    data_dir: Path,
    limits: Limits,
    clock: FakeTime,
) -> None:
    group = Group(api)
    admin, alice = group.user(1, "Ada"), group.user(2, "Alice")
    api.admins[GROUP_ID] = {admin["id"]}
    async with challenges_on(api, service, store, data_dir, limits, clock) as core:
        after = group.send_photo(admin, PAINTING, "/challenge start 3d Soon gone")
        await api.wait_call("sendPhoto", after=after)
        denied = await group.reply(group.send(alice, "/challenge cancel"))
        assert denied.text == "Only organisers (the group's administrators) can cancel challenges."
        after = group.send(admin, "/challenge cancel")
        cancelled = await api.wait_call(
            "sendMessage", where=lambda c: "cancelled" in c.text, after=after
        )
        assert "there is no winner" in cancelled.text
        nothing = await group.reply(group.send(alice, "/challenge enter"))
        assert nothing.text == "There is no open challenge here."
        assert core.open_in("telegram", str(GROUP_ID)) is None
        # A button whose data is no entry id (as an earlier version made them) is answered,
        # not left spinning.
        button = {"text": "Vote", "callback_data": "vote:not-an-entry"}
        old = {**nothing.result, "reply_markup": {"inline_keyboard": [[button]]}}
        stale = await group.answer(alice, old, "vote:not-an-entry")
        assert stale == "That button is no longer valid."


async def test_flood_control_on_an_entry_is_waited_out_not_turned_into_a_plain_result(
    api: FakeBotAPI,
    service: PaintService,
    store: Store,
    data_dir: Path,
    limits: Limits,
    clock: FakeTime,
) -> None:
    group = Group(api)
    admin, dan = group.user(1, "Ada"), group.user(5, "Dan")
    api.admins[GROUP_ID] = {admin["id"]}
    ticks = FakeTime(auto=True)
    api.fail_next("sendPhoto", retry_after=6, when=is_entry)
    async with challenges_on(api, service, store, data_dir, limits, clock, ticks) as core:
        after = group.send_photo(admin, PAINTING, "/challenge start 3d Busy")
        await api.wait_call("sendPhoto", after=after)
        after = group.send_photo(dan, jpeg_bytes((48, 40), (90, 80, 40)), "/challenge enter")
        entry = await api.wait_call(
            "sendPhoto", where=lambda c: is_entry(c) and c.error is None, after=after
        )
        challenge = core.open_in("telegram", str(GROUP_ID))
        assert challenge is not None
        [stored] = core.entries(challenge.id)
    assert [c.status for c in api.calls_to("sendPhoto") if is_entry(c)] == [429, 200]
    assert stored.message_ref == f"{GROUP_ID}/{entry.result['message_id']}"
    assert 6 in {round(s) for s in ticks.slept}
    assert not any(d.startswith("reroll:") for c in api.calls_to("sendPhoto") for _, d in c.buttons)


async def test_an_entry_too_big_to_fetch_is_explained_as_for_paint(
    api: FakeBotAPI,
    service: PaintService,
    store: Store,
    data_dir: Path,
    limits: Limits,
    clock: FakeTime,
) -> None:
    group = Group(api)
    admin, eve = group.user(1, "Ada"), group.user(6, "Eve")
    api.admins[GROUP_ID] = {admin["id"]}
    async with challenges_on(api, service, store, data_dir, limits, clock) as core:
        after = group.send_photo(admin, PAINTING, "/challenge start 3d Big ones")
        await api.wait_call("sendPhoto", after=after)
        # Telegram's getFile refuses files over its bot download limit, whatever was declared.
        api.fail_next("getFile", description="Bad Request: file is too big")
        after = group.send_photo(eve, jpeg_bytes((48, 40), (90, 80, 40)), "/challenge enter")
        refused = await group.reply(after)
        challenge = core.open_in("telegram", str(GROUP_ID))
        assert challenge is not None
        assert core.entries(challenge.id) == []
    assert "too large for bots to fetch from Telegram" in refused.text
    assert "something went wrong" not in refused.text


async def test_an_entry_past_the_members_limit_is_refused_before_its_photo_is_fetched(
    api: FakeBotAPI, store: Store, data_dir: Path, clock: FakeTime
) -> None:
    engine = FakeEngine(auto=False)
    limits = Limits(per_member=1)
    service = manual_service(store, data_dir, clock, engine, limits)
    group = Group(api)
    admin, rex = group.user(1, "Ada"), group.user(5, "Rex")
    api.admins[GROUP_ID] = {admin["id"]}
    async with service, challenges_on(api, service, store, data_dir, limits, clock):
        after = group.send_photo(admin, PAINTING, "/challenge start 1d Poppies")
        await api.wait_call("sendPhoto", after=after)
        after = group.send_photo(rex, jpeg_bytes((48, 40)), "/challenge enter")
        status = await api.wait_call("sendPhoto", where=is_status, after=after)
        await engine.wait_started(job_id_of(status))
        fetched = len(api.downloads)
        refused = await group.reply(group.send_photo(rex, jpeg_bytes(), "/challenge enter"))
    assert refused.text == replies.in_progress(1, 1)
    assert len(api.downloads) == fetched


async def test_an_entry_past_the_entry_limit_is_refused_before_its_photo_is_fetched(
    api: FakeBotAPI, store: Store, data_dir: Path, clock: FakeTime
) -> None:
    engine = FakeEngine(auto=False)
    limits = Limits(per_member=3, challenge_entries=1)
    service = manual_service(store, data_dir, clock, engine, limits)
    group = Group(api)
    admin, rex = group.user(1, "Ada"), group.user(5, "Rex")
    api.admins[GROUP_ID] = {admin["id"]}
    async with service, challenges_on(api, service, store, data_dir, limits, clock):
        after = group.send_photo(admin, PAINTING, "/challenge start 1d Poppies")
        await api.wait_call("sendPhoto", after=after)
        after = group.send_photo(rex, jpeg_bytes((48, 40)), "/challenge enter")
        status = await api.wait_call("sendPhoto", where=is_status, after=after)
        await engine.wait_started(job_id_of(status))
        fetched = len(api.downloads)
        refused = await group.reply(group.send_photo(rex, jpeg_bytes(), "/challenge enter"))
    assert refused.text == replies.entry_limit(1)
    assert len(api.downloads) == fetched


async def test_standings_too_long_for_one_message_are_cut_short_with_a_note(
    api: FakeBotAPI,
    service: PaintService,
    store: Store,
    data_dir: Path,
    limits: Limits,
    clock: FakeTime,
) -> None:
    group = Group(api)
    admin, sam = group.user(1, "Ada"), group.user(6, "Sam")
    api.admins[GROUP_ID] = {admin["id"]}
    async with challenges_on(api, service, store, data_dir, limits, clock) as core:
        after = group.send_photo(admin, PAINTING, "/challenge start 1d Poppies")
        await api.wait_call("sendPhoto", after=after)
        challenge = core.open_in("telegram", str(GROUP_ID))
        assert challenge is not None
        for n in range(30):  # thirty entries by members with very long names
            job = Job(
                id=f"long{n}",
                platform="telegram",
                chat_id=str(GROUP_ID),
                user_id=str(100 + n),
                user_name=f"{n:02d} " + "Bartholomew-Maximilian " * 7,
                options=PaintOptions(),
                state=JobState.DONE,
                created_at=clock(),
                photo_path="p",
                painting_path="q",
                challenge_id=challenge.id,
            )
            core.accept(Finished(job=job, result_png=png_bytes((8, 8)), seconds=1.0))
        standings = await group.reply(group.send(sam, "/challenge standings"))
    assert len(standings.text) <= 4096
    assert standings.text.endswith(replies.CUT_SHORT)
    assert "00 Bartholomew" in standings.text


async def test_a_made_up_vote_from_outside_the_group_is_not_counted(
    api: FakeBotAPI,
    service: PaintService,
    store: Store,
    data_dir: Path,
    limits: Limits,
    clock: FakeTime,
) -> None:
    """Entry ids are small numbers, and a client may send any callback data under any of the
    bot's messages: Zed, not in the group, must not vote from his private chat."""
    group = Group(api)
    admin, alice = group.user(1, "Ada"), group.user(2, "Alice")
    zed = api.user(99, "Zed")
    api.admins[GROUP_ID] = {admin["id"]}
    async with challenges_on(api, service, store, data_dir, limits, clock) as core:
        after = group.send_photo(admin, PAINTING, "/challenge start 3d Sunflowers")
        await api.wait_call("sendPhoto", after=after)
        challenge = core.open_in("telegram", str(GROUP_ID))
        assert challenge is not None
        await enter(group, alice, 10)
        private = api.private_chat(zed)
        mark = len(api.calls)
        api.push_message(api.text_message(zed, private, "/help"))
        bots_message = await api.wait_call("sendMessage", after=mark)
        refused = await group.answer(zed, bots_message.result, "vote:1")
        assert refused == replies.NOT_THIS_MESSAGE
        # Under a message too old for Telegram to hand over (its buttons unknown): the chat
        # is not the challenge's.
        too_old = {"chat": private, "message_id": 1, "date": 0}
        assert await group.answer(zed, too_old, "vote:1") == replies.NOT_THIS_MESSAGE
        assert [s.votes for s in core.standings(challenge.id)] == [0]
