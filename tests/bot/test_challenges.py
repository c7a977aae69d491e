"""The platform-neutral challenge rules over a real SQLite store and the service on a fake engine.

Deadlines run on fake time: a sleep ends when the test advances the clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.challenges import (
    ANNOUNCE_RETRY_DELAYS,
    BadDuration,
    Challenge,
    ChallengeExists,
    Challenges,
    ChallengeState,
    EntryLimit,
    NoChallenge,
    Outcome,
    SelfVote,
    VotingClosed,
    parse_duration,
)
from bot.errors import NotAllowed
from bot.jobs import Finished, Job, JobState
from bot.service import PaintService
from bot.settings import Limits
from bot.store import Store
from engine.protocol import PaintOptions
from tests.fakes import FakeEngine, FakeTime, jpeg_bytes, png_bytes

DAY = 24 * 3600
PAINTING = png_bytes((56, 64), (20, 40, 160))


@pytest.fixture
def fake_engine() -> FakeEngine:
    return FakeEngine(auto=False)


@pytest.fixture
def limits() -> Limits:
    return Limits(per_member=5, challenge_entries=2)


class Announcements:
    def __init__(self) -> None:
        self.outcomes: list[Outcome] = []

    async def __call__(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)


@pytest.fixture
def announced() -> Announcements:
    return Announcements()


def make(
    store: Store,
    service: PaintService,
    data_dir: Path,
    limits: Limits,
    clock: FakeTime,
    announced: Announcements,
) -> Challenges:
    core = Challenges(
        store=store,
        service=service,
        data_dir=data_dir,
        limits=limits,
        clock=clock,
        sleep=clock.sleep,
    )
    core.on_closed("test", announced)
    return core


@pytest.fixture
async def core(
    store: Store,
    service: PaintService,
    data_dir: Path,
    limits: Limits,
    clock: FakeTime,
    announced: Announcements,
) -> AsyncIterator[Challenges]:
    challenges = make(store, service, data_dir, limits, clock, announced)
    await challenges.start()
    yield challenges
    await challenges.close()


def open_one(
    core: Challenges, chat: str = "c1", duration: int = 3 * DAY, community: str = "g1"
) -> Challenge:
    return core.create(
        platform="test",
        community_id=community,
        chat_id=chat,
        title="Starry",
        painting=PAINTING,
        painting_name="starry.png",
        organiser_id="org",
        organiser_name="Olga",
        duration=duration,
    )


_jobs = iter(range(1, 10_000))


def finished(challenge_id: int, user: str) -> Finished:
    """A finished challenge painting as the service would report it."""
    job = Job(
        id=f"job{next(_jobs)}",
        platform="test",
        chat_id="c1",
        user_id=user,
        user_name=user.title(),
        options=PaintOptions(),
        state=JobState.DONE,
        created_at=0.0,
        photo_path="p",
        painting_path="q",
        challenge_id=challenge_id,
    )
    return Finished(job=job, result_png=png_bytes((8, 8)), seconds=1.0)


async def settle(core: Challenges, clock: FakeTime, seconds: float) -> None:
    await tick(clock, seconds)
    await core.drained()


async def tick(clock: FakeTime, seconds: float) -> None:
    """Move the clock and let what fell due run (without waiting for announcements)."""
    for _ in range(20):  # what is ready runs first, so its sleeps start before the clock moves
        await asyncio.sleep(0)
    clock.advance(seconds)
    for _ in range(20):
        await asyncio.sleep(0)


# -- durations -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30m", 1800), ("12h", 43200), ("3d", 3 * DAY), ("1d12h", DAY + 12 * 3600), ("1w", 7 * DAY)],
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["5m", "31d", "5w", "3 days", "d3", "", "1.5h", "3x"])
def test_bad_durations_say_what_works(text: str) -> None:
    with pytest.raises(BadDuration) as error:
        parse_duration(text)
    assert "10 minutes" in error.value.message or "30m, 12h" in error.value.message


# -- rules -----------------------------------------------------------------------------------


async def test_one_open_challenge_per_channel(core: Challenges) -> None:
    challenge = open_one(core)
    with pytest.raises(ChallengeExists) as error:
        open_one(core)
    assert error.value.message.startswith("This channel already has an open challenge: Starry")
    assert Path(challenge.painting_path).read_bytes() == PAINTING
    assert open_one(core, chat="c2").id != challenge.id
    await core.cancel(challenge.id, by="org")
    assert open_one(core).state is ChallengeState.OPEN  # free again once it has ended


async def test_votes_move_and_never_go_to_your_own_entry(core: Challenges) -> None:
    challenge = open_one(core)
    alice = core.accept(finished(challenge.id, "alice"))
    bob = core.accept(finished(challenge.id, "bob"))
    assert alice is not None and bob is not None
    with pytest.raises(SelfVote, match=r"You can't vote for your own entry\."):
        core.vote(alice.id, "alice")
    assert core.vote(alice.id, "carol").moved_from is None
    moved = core.vote(bob.id, "carol")
    assert moved.moved_from is not None and moved.moved_from.id == alice.id
    assert core.vote(bob.id, "carol").unchanged
    assert [(s.entry.user_id, s.votes) for s in core.standings(challenge.id)] == [
        ("bob", 1),
        ("alice", 0),
    ]


async def test_withdrawing_deletes_the_entry_and_its_votes(core: Challenges) -> None:
    challenge = open_one(core)
    entry = core.accept(finished(challenge.id, "alice"))
    assert entry is not None
    core.vote(entry.id, "bob")
    with pytest.raises(NotAllowed):
        core.withdraw(entry.id, "bob")
    core.withdraw(entry.id, "alice")
    assert core.standings(challenge.id) == []
    assert not Path(entry.image_path).exists()
    with pytest.raises(NoChallenge, match="withdrawn"):
        core.vote(entry.id, "carol")
    # An organiser may withdraw anyone's.
    other = core.accept(finished(challenge.id, "dave"))
    assert other is not None
    core.withdraw(other.id, "org", organiser=True)


async def test_entry_limit_counts_entries_and_paintings_in_flight(
    core: Challenges, service: PaintService
) -> None:
    challenge = open_one(core)
    assert core.accept(finished(challenge.id, "alice")) is not None
    job = await core.enter(
        challenge,
        user_id="alice",
        user_name="Alice",
        photo=jpeg_bytes(),
        photo_name="me.jpg",
        options=PaintOptions(),
    )
    assert job.challenge_id == challenge.id
    assert Path(job.painting_path).read_bytes() == PAINTING
    with pytest.raises(EntryLimit) as error:
        await core.enter(
            challenge,
            user_id="alice",
            user_name="Alice",
            photo=jpeg_bytes(),
            photo_name="me.jpg",
            options=PaintOptions(),
        )
    assert error.value.message == (
        "You already have 2 entries in this challenge; withdraw one first."
    )
    await service.cancel(job.id, user_id="alice")
    assert core.entries_used(challenge.id, "test", "alice") == 1


async def test_ties_go_to_the_earlier_entry_and_zero_votes_do_not_place(
    core: Challenges, clock: FakeTime, announced: Announcements
) -> None:
    challenge = open_one(core)
    entries = []
    for user in ("alice", "bob", "carol", "dave"):
        entry = core.accept(finished(challenge.id, user))
        assert entry is not None
        entries.append(entry)
        clock.advance(60)
    core.vote(entries[1].id, "v1")  # bob 1
    core.vote(entries[0].id, "v2")  # alice 1 (earlier than bob)
    core.vote(entries[2].id, "v3")
    core.vote(entries[2].id, "v4")  # carol 2
    await core.end(challenge.id, by="org")
    await core.drained()
    [outcome] = announced.outcomes
    assert [(s.entry.user_id, s.votes, s.place) for s in outcome.podium] == [
        ("carol", 2, 1),
        ("alice", 1, 2),
        ("bob", 1, 3),
    ]
    assert outcome.tie_broken
    assert outcome.entries == 4 and outcome.voters == 4
    with pytest.raises(VotingClosed, match=r"Voting has closed\."):
        core.vote(entries[3].id, "v5")
    # A second end is refused; nothing is announced twice.
    with pytest.raises(VotingClosed):
        await core.end(challenge.id, by="org")
    await core.drained()
    assert len(announced.outcomes) == 1


async def test_deadline_closes_on_the_injected_clock(
    core: Challenges, clock: FakeTime, announced: Announcements
) -> None:
    challenge = open_one(core, duration=3600)
    entry = core.accept(finished(challenge.id, "alice"))
    assert entry is not None
    core.vote(entry.id, "bob")
    await settle(core, clock, 3599)
    assert core.get(challenge.id).state is ChallengeState.OPEN
    assert announced.outcomes == []
    await settle(core, clock, 1)
    assert core.get(challenge.id).state is ChallengeState.CLOSED
    [outcome] = announced.outcomes
    assert outcome.podium[0].entry.id == entry.id
    assert core.get(challenge.id).announced
    # A painting that finishes after the close is not an entry.
    assert core.accept(finished(challenge.id, "carol")) is None


async def test_catch_up_after_downtime_and_leaderboard_per_community(
    store: Store,
    service: PaintService,
    data_dir: Path,
    limits: Limits,
    clock: FakeTime,
) -> None:
    first = Announcements()
    core = make(store, service, data_dir, limits, clock, first)
    await core.start()
    here = open_one(core, chat="c1", duration=DAY)
    there = open_one(core, chat="c9", duration=DAY, community="g2")
    for challenge, winner in ((here, "alice"), (there, "bob")):
        entry = core.accept(finished(challenge.id, winner))
        assert entry is not None
        core.vote(entry.id, "voter")
    await core.close()  # the bot stops...
    clock.advance(2 * DAY)  # ...across both deadlines

    second = Announcements()
    core = make(store, service, data_dir, limits, clock, second)
    await core.start()
    await core.drained()
    assert sorted(o.challenge.id for o in second.outcomes) == [here.id, there.id]
    assert [(r.user_id, r.wins, r.podiums) for r in core.leaderboard("test", "g1")] == [
        ("alice", 1, 1)
    ]
    assert [(r.user_id, r.wins) for r in core.leaderboard("test", "g2")] == [("bob", 1)]
    await core.close()


async def test_an_announcement_that_failed_is_retried_at_the_next_start(
    store: Store,
    service: PaintService,
    data_dir: Path,
    limits: Limits,
    clock: FakeTime,
) -> None:
    async def broken(outcome: Outcome) -> None:
        raise RuntimeError("platform down")

    core = Challenges(
        store=store,
        service=service,
        data_dir=data_dir,
        limits=limits,
        clock=clock,
        sleep=clock.sleep,
    )
    core.on_closed("test", broken)
    await core.start()
    challenge = open_one(core)
    await core.cancel(challenge.id, by="org")
    for delay in ANNOUNCE_RETRY_DELAYS:  # every try in between fails too
        await tick(clock, delay)
    await core.drained()
    assert not core.get(challenge.id).announced
    await core.close()

    again = Announcements()
    core = make(store, service, data_dir, limits, clock, again)
    await core.start()
    await core.drained()
    [outcome] = again.outcomes
    assert outcome.cancelled and outcome.podium == ()
    assert core.get(challenge.id).announced
    assert core.leaderboard("test", "g1") == []  # a cancelled challenge has no places
    await core.close()


async def test_an_announcement_the_platform_refused_once_is_tried_again_soon(
    store: Store,
    service: PaintService,
    data_dir: Path,
    limits: Limits,
    clock: FakeTime,
) -> None:
    tries: list[Outcome] = []

    async def flaky(outcome: Outcome) -> None:
        tries.append(outcome)
        if len(tries) == 1:
            raise ConnectionError("platform briefly down")

    core = make(store, service, data_dir, limits, clock, Announcements())
    core.on_closed("test", flaky)
    await core.start()
    challenge = open_one(core, duration=3600)
    await tick(clock, 3600)
    assert len(tries) == 1
    assert not core.get(challenge.id).announced
    await settle(core, clock, ANNOUNCE_RETRY_DELAYS[0])  # no restart needed
    assert len(tries) == 2
    assert core.get(challenge.id).announced
    await core.close()


# -- durability and atomicity ----------------------------------------------------------------


def full_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every file write fails as on a full disk (whichever way the code writes)."""
    import errno
    import os

    def refuse(*args: object, **kwargs: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", refuse)
    monkeypatch.setattr(os, "write", refuse)


async def test_a_challenge_whose_painting_cannot_be_written_leaves_nothing(
    core: Challenges, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as patch:
        full_disk(patch)
        with pytest.raises(OSError, match="No space"):
            open_one(core)
    assert core.open_in("test", "c1") is None  # no half-made challenge blocks the channel
    assert [p for p in (data_dir / "challenges").rglob("*") if p.is_file()] == []
    assert open_one(core).state is ChallengeState.OPEN


async def test_a_challenge_whose_row_cannot_be_finished_leaves_nothing(
    core: Challenges, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bot.challenges as module

    def broken_folder(path: Path) -> Path:
        raise PermissionError(13, "Permission denied", str(path))

    with monkeypatch.context() as patch:
        patch.setattr(module.files, "private_folder", broken_folder)
        with pytest.raises(PermissionError):
            open_one(core)
    assert core.open_in("test", "c1") is None
    assert [p for p in (data_dir / "challenges").rglob("*") if p.is_file()] == []


async def test_created_off_the_event_loop_too(core: Challenges) -> None:
    challenge = await core.acreate(
        platform="test",
        community_id="g1",
        chat_id="c1",
        title="Starry",
        painting=PAINTING,
        painting_name="starry.png",
        organiser_id="org",
        organiser_name="Olga",
        duration=DAY,
    )
    assert Path(challenge.painting_path).read_bytes() == PAINTING


async def test_an_entry_whose_image_cannot_be_written_leaves_no_row(
    core: Challenges, monkeypatch: pytest.MonkeyPatch
) -> None:
    challenge = open_one(core)
    with monkeypatch.context() as patch:
        full_disk(patch)
        with pytest.raises(OSError, match="No space"):
            core.accept(finished(challenge.id, "alice"))
    assert core.entries(challenge.id) == []
    assert core.entries_used(challenge.id, "test", "alice") == 0


async def painted(service: PaintService, engine: FakeEngine, job_id: str) -> None:
    """Finish ``job_id`` on the engine and wait until every listener has handled it; its
    platform's adapter has not posted it (yet)."""
    finished = asyncio.Event()

    async def adapter(event: object) -> None:
        if isinstance(event, Finished) and event.job.id == job_id:
            finished.set()

    service.add_listener(adapter, delivers="test")  # type: ignore[arg-type]
    await engine.wait_started(job_id)
    engine.finish(job_id)
    await asyncio.wait_for(finished.wait(), 10)
    await service.drained()


async def test_an_entry_is_made_when_its_painting_finishes_before_anyone_posts_it(
    core: Challenges, service: PaintService, fake_engine: FakeEngine
) -> None:
    challenge = open_one(core)
    job = await core.enter(
        challenge,
        user_id="alice",
        user_name="Alice",
        photo=jpeg_bytes(),
        photo_name="me.jpg",
        options=PaintOptions(),
    )
    await painted(service, fake_engine, job.id)
    entry = core.entry_for_job(job.id)  # no adapter has seen it yet
    assert entry is not None and Path(entry.image_path).read_bytes().startswith(b"\x89PNG")
    event = Finished(job=service.get(job.id), result_png=b"", seconds=1.0)
    assert core.accept(event) == entry  # the adapter then posts that same entry


async def test_an_entry_finished_before_a_stop_counts_when_the_deadline_passed_meanwhile(
    store: Store,
    service: PaintService,
    fake_engine: FakeEngine,
    data_dir: Path,
    limits: Limits,
    clock: FakeTime,
) -> None:
    # The painting finishes, but the bot is killed before its entry is made (here: the
    # challenge side never got to listen)...
    first = make(store, service, data_dir, limits, clock, Announcements())
    challenge = open_one(first, duration=3600)
    job = await first.enter(
        challenge,
        user_id="alice",
        user_name="Alice",
        photo=jpeg_bytes(),
        photo_name="me.jpg",
        options=PaintOptions(),
    )
    await painted(service, fake_engine, job.id)
    assert first.entry_for_job(job.id) is None
    clock.advance(2 * 3600)  # ...and stays down past the deadline

    announced = Announcements()
    again = make(store, service, data_dir, limits, clock, announced)
    await again.start()
    await again.drained()
    [outcome] = announced.outcomes
    assert outcome.entries == 1  # the entry was made before the challenge was closed
    entry = again.entry_for_job(job.id)
    assert entry is not None
    event = Finished(job=service.get(job.id), result_png=b"", seconds=1.0)
    assert again.accept(event) is None  # voting is over: posted as an ordinary painting
    await again.close()


async def test_the_deadline_task_outlives_a_locked_database(
    core: Challenges,
    clock: FakeTime,
    announced: Announcements,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sqlite3

    from bot.challenges import DEADLINE_RETRY

    challenge = open_one(core, duration=3600)
    close_due = core.close_due
    failures = 3

    async def locked() -> list[Challenge]:
        nonlocal failures
        if failures:
            failures -= 1
            raise sqlite3.OperationalError("database is locked")
        return await close_due()

    monkeypatch.setattr(core, "close_due", locked)
    await settle(core, clock, 3600)  # due, but the database is locked
    assert core.get(challenge.id).state is ChallengeState.OPEN
    for _ in range(3):
        await settle(core, clock, DEADLINE_RETRY)
    assert core.get(challenge.id).state is ChallengeState.CLOSED
    assert [o.challenge.id for o in announced.outcomes] == [challenge.id]


async def test_an_entry_is_made_even_when_the_adapter_delivered_it_first(
    store: Store,
    service: PaintService,
    fake_engine: FakeEngine,
    data_dir: Path,
    limits: Limits,
    clock: FakeTime,
) -> None:
    async def quick_adapter(event: object) -> None:
        if isinstance(event, Finished):
            await service.mark_delivered(event.job.id)  # posted at once

    service.add_listener(quick_adapter, delivers="test")  # type: ignore[arg-type]
    core = make(store, service, data_dir, limits, clock, Announcements())
    await core.start()
    challenge = open_one(core)
    job = await core.enter(
        challenge,
        user_id="alice",
        user_name="Alice",
        photo=jpeg_bytes(),
        photo_name="me.jpg",
        options=PaintOptions(),
    )
    await painted(service, fake_engine, job.id)
    assert core.entry_for_job(job.id) is not None
    await core.close()
