"""The one status pacer and the one "sleep until woken", on a fake clock."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from dataclasses import dataclass

import pytest

from bot.pacing import Blocked, Lost, Paced, Pacer, nap
from tests.fakes import FakeTime

INTERVAL = 4.0


@dataclass(eq=False, kw_only=True)
class Note(Paced):
    text: str = ""

    def wanted(self) -> Hashable:
        return self.text


class Chat:
    """A platform whose edits are recorded; a test scripts refusals."""

    def __init__(self) -> None:
        self.clock = FakeTime()
        self.edits: list[tuple[str, str, float]] = []  # (key, text, when)
        self.refusals: list[Exception] = []
        self.pacer: Pacer[Note] = Pacer(
            self.edit, clock=self.clock, sleep=self.clock.sleep, interval=INTERVAL
        )

    async def edit(self, note: Note) -> Hashable:
        if self.refusals:
            raise self.refusals.pop(0)
        self.edits.append((note.key, note.text, self.clock()))
        return note.text

    def note(self, key: str, lane: str = "chat") -> Note:
        note = self.pacer.add(Note(key=key, lane=lane, text="queued"))
        self.pacer.posted(note, "queued")
        return note

    def show(self, note: Note, text: str, *, urgent: bool = False) -> None:
        note.text = text
        self.pacer.changed(note, urgent=urgent)

    async def settle(self) -> None:
        """Let woken tasks run, then wait until every task sleeps or waits for news."""
        for _ in range(10):
            await asyncio.sleep(0)
        for _ in range(1000):
            if self.pacer.idle:
                return
            await asyncio.sleep(0)
        raise AssertionError("the pacer never came to rest")

    async def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        await self.settle()


@pytest.fixture
async def chat() -> Chat:
    return Chat()


async def test_progress_waits_for_the_interval_and_the_latest_wins(chat: Chat) -> None:
    note = chat.note("j1")
    chat.show(note, "10%")
    chat.show(note, "20%")
    await chat.settle()
    assert chat.edits == []
    await chat.advance(INTERVAL)
    assert [text for _, text, _ in chat.edits] == ["20%"]


async def test_the_same_thing_is_never_shown_twice(chat: Chat) -> None:
    note = chat.note("j1")
    chat.show(note, "queued", urgent=True)
    chat.show(note, "queued")
    await chat.advance(60)
    assert chat.edits == []
    chat.show(note, "10%")
    await chat.advance(INTERVAL)
    chat.show(note, "10%")
    await chat.advance(INTERVAL)
    assert [text for _, text, _ in chat.edits] == ["10%"]


async def test_a_change_of_state_skips_the_interval(chat: Chat) -> None:
    note = chat.note("j1")
    chat.show(note, "painting", urgent=True)
    await chat.settle()
    assert [text for _, text, _ in chat.edits] == ["painting"]
    chat.show(note, "10%")
    await chat.settle()
    chat.show(note, "done", urgent=True)
    await chat.settle()
    assert [text for _, text, _ in chat.edits] == ["painting", "done"]


async def test_flood_control_blocks_the_whole_lane(chat: Chat) -> None:
    first, second = chat.note("j1"), chat.note("j2")
    other_lane = chat.note("j3", lane="elsewhere")
    chat.refusals.append(Blocked(30))
    chat.show(first, "painting", urgent=True)
    chat.show(second, "painting", urgent=True)
    chat.show(other_lane, "painting", urgent=True)
    await chat.settle()
    assert [key for key, _, _ in chat.edits] == ["j3"]
    await chat.advance(29)
    assert [key for key, _, _ in chat.edits] == ["j3"]
    await chat.advance(1)
    assert sorted(key for key, _, _ in chat.edits) == ["j1", "j2", "j3"]


async def test_an_outage_is_retried_after_a_pause(chat: Chat) -> None:
    note = chat.note("j1")
    chat.refusals.append(Blocked())
    chat.show(note, "painting", urgent=True)
    await chat.settle()
    assert chat.edits == []
    await chat.advance(INTERVAL)
    assert [text for _, text, _ in chat.edits] == ["painting"]


async def test_a_lost_message_gets_no_more_edits_but_is_kept_until_its_job_ends(
    chat: Chat,
) -> None:
    note = chat.note("j1")
    chat.refusals.append(Lost())
    chat.show(note, "painting", urgent=True)
    await chat.settle()
    assert note.lost
    chat.show(note, "50%")
    await chat.advance(60)
    assert chat.edits == []
    assert chat.pacer.get("j1") is note  # the job carries on, and is still known
    note.final = True
    chat.show(note, "done", urgent=True)
    await chat.settle()
    assert chat.edits == []
    assert chat.pacer.get("j1") is None


async def test_a_finished_message_is_forgotten_once_it_shows_the_end(chat: Chat) -> None:
    note = chat.note("j1")
    note.final = True
    chat.show(note, "done", urgent=True)
    await chat.settle()
    assert [text for _, text, _ in chat.edits] == ["done"]
    assert chat.pacer.get("j1") is None


async def test_a_nap_ends_when_woken_or_when_its_time_has_passed() -> None:
    clock = FakeTime()
    wake = asyncio.Event()
    napping = asyncio.create_task(nap(clock.sleep, 10, wake))
    await asyncio.sleep(0)
    wake.set()
    await asyncio.wait_for(napping, 1)
    wake.clear()
    napping = asyncio.create_task(nap(clock.sleep, 10, wake))
    for _ in range(3):  # the nap starts its sleep
        await asyncio.sleep(0)
    assert clock.sleeping == 1
    clock.advance(9)
    await asyncio.sleep(0)
    assert not napping.done()
    clock.advance(1)
    await asyncio.wait_for(napping, 1)
    forever = asyncio.create_task(nap(clock.sleep, None, wake))
    await asyncio.sleep(0)
    assert not forever.done()
    wake.set()
    await asyncio.wait_for(forever, 1)
    assert clock.sleeping == 0
