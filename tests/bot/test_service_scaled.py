"""The paint service in the scaled mode: the real :class:`PaintService` on a real SQLite file,
its jobs in a real redis-server, painted by GPU-host agents that are real processes (each
driving a scripted engine process, see tests/scaled.py), its events going to listeners as the
adapters get them.

Leases are 2 s here (30 s in production). Waits are for events or for Redis's own state.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from bot import errors, replies
from bot.job_queue import QueueUnavailable
from bot.jobs import (
    Cancelled,
    Failed,
    Finished,
    Job,
    JobState,
    PaintRequest,
    PositionChanged,
    Progress,
    Queued,
    Started,
)
from bot.replies import PLAIN, StatusState, status, status_after
from bot.scaled_queue import ScaledQueue
from bot.service import PaintService
from bot.settings import Limits
from bot.store import Store
from engine import protocol, redis_jobs
from engine.redis_jobs import Claimed, RedisJobs
from tests.bot.test_service import Deliverer, Recorder
from tests.fakes import TIMELAPSE_MP4, TIMELAPSE_WEBP, jpeg_bytes, png_bytes
from tests.redis_server import RedisServer
from tests.scaled import LEASE, Agents, slow

LIMITS = Limits(per_member=3)


def request(user: str, chat: str = "c1", seed: int | None = None, shade: int = 0) -> PaintRequest:
    """A request; ``shade`` makes the photo's bytes its own (stored as a file of its own)."""
    return PaintRequest(
        platform="discord",
        chat_id=chat,
        user_id=user,
        user_name=f"name-{user}",
        photo=png_bytes((64, 48), (shade % 256, 60, 30)),
        painting=jpeg_bytes((50, 50)),
        options=protocol.PaintOptions(quality="draft", seed=seed),
    )


class Bot:
    """One bot process's paint side in the scaled mode: its SQLite file, queue and service."""

    def __init__(
        self,
        url: str,
        folder: Path,
        *,
        bot_id: str = "bot1",
        limits: Limits = LIMITS,
        refresh_every: float = 0.2,
        name_ttl: float = 15.0,
    ) -> None:
        self.store = Store.open(folder / "atelier.sqlite3")
        self.queue = ScaledQueue(
            url,
            bot_id=bot_id,
            limits=limits,
            results_dir=folder / "results",
            reap_every=0.25,
            refresh_every=refresh_every,
            lease=LEASE,
            name_ttl=name_ttl,
        )
        self.service = PaintService(
            store=self.store, queue=self.queue, limits=limits, data_dir=folder
        )
        self.recorder = Recorder()
        self.service.add_listener(self.recorder)

    async def close(self) -> None:
        await self.service.close()
        self.store.close()


@pytest.fixture
async def bot(redis_url: str, tmp_path: Path) -> AsyncIterator[Bot]:
    bot = Bot(redis_url, tmp_path / "bot1")
    await bot.service.start()
    yield bot
    await bot.close()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[RedisJobs]:
    client = redis_jobs.connect(redis_url)
    yield RedisJobs(client)
    await client.aclose()


async def painted_by(redis: RedisJobs, job_id: str) -> str:
    stored = await redis.job(job_id)
    assert stored is not None
    return stored.get("consumer", "")


# -- fairness, positions, ETAs ------------------------------------------------------------------


async def test_two_agents_paint_in_fair_order_through_the_service(bot: Bot, agents: Agents) -> None:
    arrivals = [("A1", "a"), ("A2", "a"), ("A3", "a"), ("B1", "b"), ("C1", "c"), ("C2", "c")]
    jobs: dict[str, Job] = {}
    for name, user in arrivals:
        jobs[name] = await bot.service.submit(request(user, seed=slow(4, 50)))
    ids = {job.id: name for name, job in jobs.items()}
    await bot.service.drained()
    queued = [e for e in bot.recorder.events if isinstance(e, Queued)]
    assert [(ids[e.job.id], e.position) for e in queued] == [
        ("A1", 1), ("A2", 2), ("A3", 3), ("B1", 2), ("C1", 3), ("C2", 5),
    ]  # fmt: skip
    assert [ids[job.id] for job in bot.service.overview().waiting] == [
        "A1", "B1", "C1", "A2", "C2", "A3",
    ]  # fmt: skip
    for name, position in [("A1", 1), ("B1", 2), ("C1", 3), ("A2", 4), ("C2", 5), ("A3", 6)]:
        assert bot.recorder.last_position(jobs[name].id) == position
    agents.start("A", "B")
    for job in jobs.values():
        await bot.recorder.wait_for(job.id, Finished, within=60)
    started = [e for e in bot.recorder.events if isinstance(e, Started)]
    assert [ids[e.job.id] for e in started] == ["A1", "B1", "C1", "A2", "C2", "A3"]
    assert not any(e.rerun for e in started)
    for job in jobs.values():
        assert len(bot.recorder.of(job.id, Finished)) == 1
        done = bot.service.get(job.id)
        assert done.state is JobState.DONE and done.attempts == 1
        assert done.result_path and Path(done.result_path).is_file()
        progress = [e for e in bot.recorder.of(job.id, Progress) if isinstance(e, Progress)]
        assert progress and [e.percent for e in progress] == sorted(e.percent for e in progress)
    finished = bot.recorder.of(jobs["A1"].id, Finished)[0]
    assert isinstance(finished, Finished) and finished.result_png.startswith(b"\x89PNG")
    assert bot.store.undelivered() == []  # no listener marks: handled counts as delivered
    assert bot.store.get_meta("events_read")  # where a restart replays from


async def test_etas_divide_the_queue_by_the_devices_alive(bot: Bot, redis: RedisJobs) -> None:
    jobs = [await bot.service.submit(request(f"m{n}", chat=f"c{n}")) for n in range(4)]
    await bot.service.drained()
    assert all(
        isinstance(e, Queued) and e.eta is None
        for e in bot.recorder.events
        if isinstance(e, Queued)
    )  # no GPU alive: no promise
    for device in ("A:cuda:0", "A:cuda:1"):  # two GPUs announce themselves; nothing claims
        await redis.set_alive(device, {}, ttl=30)
    await bot.queue.refresh()
    etas = bot.service.overview().etas
    one = jobs[0].work * bot.service.seconds_per_work
    assert [etas[job.id] for job in jobs] == pytest.approx([one, one, 2 * one, 2 * one])
    assert bot.service.status().devices_alive == 2


async def test_one_bot_process_per_bot_id(redis_url: str, tmp_path: Path) -> None:
    """Two processes on one bot id would read each other's events and cancel each other's
    jobs as strays: the second is refused (after waiting out a name left by a dead one)."""
    first = Bot(redis_url, tmp_path / "one", bot_id="same", name_ttl=1)
    await first.service.start()
    second = Bot(redis_url, tmp_path / "two", bot_id="same", name_ttl=1)
    job = await first.service.submit(request("a"))
    with pytest.raises(QueueUnavailable, match="give each bot its own ATELIER_BOT_ID"):
        await second.service.start()
    await second.close()
    assert first.service.get(job.id).state is JobState.QUEUED  # not cancelled as a stray
    assert await first.queue.order() == [job.id]
    await first.close()  # a clean stop hands the name over at once
    third = Bot(redis_url, tmp_path / "one", bot_id="same", name_ttl=600)
    await asyncio.wait_for(third.service.start(), 5)
    assert third.service.get(job.id).state is JobState.QUEUED
    await third.close()


# -- limits ---------------------------------------------------------------------------------------


async def test_limits_hold_for_two_bot_services_admitting_at_once(
    redis_url: str, tmp_path: Path
) -> None:
    limits = Limits(per_member=2, queue=7, queue_per_chat=4)
    bots = [Bot(redis_url, tmp_path / f"bot{n}", bot_id=f"bot{n}", limits=limits) for n in (1, 2)]
    for each in bots:
        await each.service.start()

    async def race(requests: list[PaintRequest]) -> list[str]:
        async def attempt(n: int, paint: PaintRequest) -> str:
            try:
                await bots[n % 2].service.submit(paint)
                return "admitted"
            except errors.UserFacingError as error:
                return type(error).__name__

        return list(await asyncio.gather(*(attempt(n, r) for n, r in enumerate(requests))))

    try:
        # One member asks twenty times through two bots at once: two get in.
        same = [request("same", chat=f"c{n}", shade=n) for n in range(20)]
        assert sorted(await race(same)) == ["LimitReached"] * 18 + ["admitted"] * 2
        # Twenty members of one chat at once: the chat's cap lets four in.
        busy = [request(f"u{n}", chat="busy", shade=20 + n) for n in range(20)]
        assert sorted(await race(busy)) == ["QueueFull"] * 16 + ["admitted"] * 4
        # Six more members in six chats: the queue's cap (7, six waiting) lets one in.
        more = [request(f"g{n}", chat=f"g{n}", shade=40 + n) for n in range(6)]
        assert sorted(await race(more)) == ["QueueFull"] * 5 + ["admitted"]
        rows = [len(each.store.jobs_in([JobState.QUEUED])) for each in bots]
        assert sum(rows) == 7 == len(await bots[0].queue.order())
        # A refused request leaves no files behind: 7 photos and the one shared painting.
        for each in bots:
            kept = {p for job in each.store.jobs_in([JobState.QUEUED]) for p in _inputs(job)}
            assert {str(p) for p in (each.store.path.parent / "inputs").iterdir()} == kept
        assert sum(each.service.refused["LimitReached"] for each in bots) == 18
        assert sum(each.service.refused["QueueFull"] for each in bots) == 21
    finally:
        for each in bots:
            await each.close()


def _inputs(job: Job) -> tuple[str, str]:
    return job.photo_path, job.painting_path


async def test_a_slot_held_here_counts_in_redis_too(redis_url: str, tmp_path: Path) -> None:
    limits = Limits(per_member=1, queue=2, queue_per_chat=5)
    # Bot 1's picture of the queue is not refreshed during the test: only Redis knows.
    first = Bot(redis_url, tmp_path / "bot1", bot_id="bot1", limits=limits, refresh_every=600)
    second = Bot(redis_url, tmp_path / "bot2", bot_id="bot2", limits=limits)
    await first.service.start()
    await second.service.start()
    try:
        await first.queue.refresh()
        await second.service.submit(request("x"))  # one waiting, through the other bot
        slot = first.service.reserve("discord", "c1", "y")  # y's download is in progress
        with pytest.raises(errors.QueueFull) as refused:
            await first.service.submit(request("z"))
        # Redis counted x's job, and the slot held for y in this bot: 2 of 2.
        assert refused.value.message.startswith("The queue is full (2 paintings waiting)")
        slot.release()
        admitted = await first.service.submit(request("z"))
        assert admitted.state is JobState.QUEUED
    finally:
        await first.close()
        await second.close()


# -- cancel ---------------------------------------------------------------------------------------


async def test_cancel_a_waiting_painting_at_once_and_a_running_one_within_a_step(
    bot: Bot, agents: Agents
) -> None:
    long = await bot.service.submit(request("a", seed=slow(200, 50)))
    waiting = await bot.service.submit(request("b"))
    agents.start("A")
    await bot.recorder.wait_for(long.id, Progress, within=30)
    cancelled = await bot.service.cancel(waiting.id, user_id="b")
    assert cancelled.state is JobState.CANCELLED  # at once, no agent involved
    assert bot.service.get(waiting.id).state is JobState.CANCELLED
    with pytest.raises(errors.NotAllowed):
        await bot.service.cancel(long.id, user_id="b")
    await bot.service.cancel(long.id, user_id="mod", moderator=True)
    stopped = await bot.recorder.wait_for(long.id, Cancelled, within=30)
    assert isinstance(stopped, Cancelled) and stopped.by_user == "mod"
    progress = [e for e in bot.recorder.of(long.id, Progress) if isinstance(e, Progress)]
    assert progress[-1].percent < 100  # stopped mid-way, not painted to the end
    assert bot.service.get(long.id).state is JobState.CANCELLED
    assert bot.recorder.of(waiting.id, Started) == []
    after = await bot.service.submit(request("a"))  # the engine paints the next one
    await bot.recorder.wait_for(after.id, Finished, within=30)


async def test_only_the_owner_paints_again_and_an_agent_paints_it_from_the_stored_inputs(
    bot: Bot, agents: Agents
) -> None:
    agents.start("A")
    job = await bot.service.submit(request("a"))
    await bot.recorder.wait_for(job.id, Finished, within=30)
    with pytest.raises(errors.NotAllowed):
        await bot.service.reroll(job.id, user_id="b", user_name="b", change="softer")
    again = await bot.service.reroll(job.id, user_id="a", user_name="a", change="softer")
    assert again.parent_id == job.id and again.photo_path == job.photo_path
    assert again.options.strength < job.options.strength
    await bot.recorder.wait_for(again.id, Finished, within=30)


async def test_a_blend_is_painted_by_an_agent_and_its_timelapse_comes_back(
    bot: Bot, agents: Agents, tmp_path: Path
) -> None:
    """The second painting goes up as a blob and reaches the agent's engine (the scripted one
    fails a blend whose second painting it cannot read); the timelapse comes back beside the
    result, and a re-roll of the blend is a blend again."""
    agents.start("A")
    second = jpeg_bytes((40, 40), (10, 180, 90))
    blend = replace(
        request("a"),
        painting2=second,
        painting2_name="waves.jpg",
        options=protocol.PaintOptions(quality="draft", blend=30),
    )
    job = await bot.service.submit(blend)
    finished = await bot.recorder.wait_for(job.id, (Finished, Failed), within=30)
    assert isinstance(finished, Finished), finished
    assert finished.timelapse
    assert (
        await bot.service.timelapse(job.id, "webp", platform=job.platform, chat_id=job.chat_id)
        == TIMELAPSE_WEBP
    )
    assert (
        await bot.service.timelapse(job.id, "mp4", platform=job.platform, chat_id=job.chat_id)
        == TIMELAPSE_MP4
    )
    fetched = tmp_path / "agents" / "A" / "inputs" / f"{hashlib.sha256(second).hexdigest()}.img"
    assert fetched.read_bytes() == second  # what the agent's engine painted with

    again = await bot.service.reroll(job.id, user_id="a", user_name="a", change="softer")
    assert again.painting2_path == job.painting2_path and again.options.blend == 30
    repainted = await bot.recorder.wait_for(again.id, (Finished, Failed), within=30)
    assert isinstance(repainted, Finished) and repainted.timelapse


# -- a host dies ----------------------------------------------------------------------------------


async def test_a_dead_hosts_painting_restarts_elsewhere_and_arrives_once(
    bot: Bot, agents: Agents, redis: RedisJobs
) -> None:
    agents.start("A", "B")
    job = await bot.service.submit(request("a", seed=slow(20, 100)))
    await bot.recorder.wait_for(job.id, Progress, within=30)  # mid-job
    first = await painted_by(redis, job.id)
    stored = await redis.job(job.id)
    assert stored is not None
    lease = Claimed(
        job_id=job.id,
        entry=stored["entry"],
        attempt=1,
        bot="bot1",
        photo="",
        painting="",
        options=protocol.PaintOptions(),
        preview_every=0,
        timeout=60,
    )
    agents.host_of(first).kill_host()

    await bot.recorder.wait_for(job.id, Finished, within=60)
    done = bot.service.get(job.id)
    assert done.state is JobState.DONE and done.attempts == 2 and done.crashes == 1
    # The member's status said what happened, as the adapters render it.
    restarting = replies.restarting_elsewhere(2)
    state, seen = StatusState(JobState.QUEUED), []
    for event in bot.recorder.of(job.id):
        state = status_after(state, event)
        seen.append((state.state, state.note))
        if isinstance(event, PositionChanged) and event.note:
            assert restarting in status(done, state, PLAIN).lines
    assert (JobState.QUEUED, restarting) in seen  # waiting for another GPU
    assert (JobState.RUNNING, restarting) in seen  # painting again on it
    started = [e for e in bot.recorder.of(job.id, Started) if isinstance(e, Started)]
    assert [e.rerun for e in started] == [False, True]
    assert await painted_by(redis, job.id) == ""  # finished: no host holds it any more
    # The dead host's late result is refused: the member never gets two paintings.
    late = redis_jobs.Done(result="x" * 64, seconds=1, work=1, width=1, height=1)
    assert await redis.finish(first, lease, late) == "refused"
    await bot.service.drained()
    assert len(bot.recorder.of(job.id, Finished)) == 1


# -- the bot restarts ---------------------------------------------------------------------------


async def test_a_bot_restarted_mid_painting_gets_its_progress_and_result_once(
    redis_url: str, agents: Agents, tmp_path: Path
) -> None:
    folder = tmp_path / "bot1"
    first = Bot(redis_url, folder)
    await first.service.start()
    job = await first.service.submit(request("a", seed=slow(30, 100)))
    agents.start("A")
    await first.recorder.wait_for(job.id, Started, within=30)
    await first.close()  # the bot goes down mid-painting; the painting goes on
    assert (first.store.path.parent / "atelier.sqlite3").is_file()

    second = Bot(redis_url, folder)
    deliverer = Deliverer(second.service)
    await second.service.start()
    try:
        await second.recorder.wait_for(job.id, Finished, within=60)
        await second.service.drained()
        await asyncio.gather(*deliverer.posting)
        assert deliverer.posted == [job.id]
        assert second.recorder.of(job.id, Progress)  # the stream went on from where it was
        assert len(second.recorder.of(job.id, Finished)) == 1
        assert second.store.undelivered() == []
        assert second.service.get(job.id).state is JobState.DONE
    finally:
        await second.close()


async def test_a_painting_finished_while_the_bot_was_down_is_delivered_once(
    redis_url: str, agents: Agents, redis: RedisJobs, tmp_path: Path
) -> None:
    folder = tmp_path / "bot1"
    first = Bot(redis_url, folder)
    await first.service.start()
    job = await first.service.submit(request("a", seed=slow(10, 100)))
    agents.start("A")
    await first.recorder.wait_for(job.id, Started, within=30)
    await first.close()
    async with asyncio.timeout(30):  # Redis says it is done (painting went on without the bot)
        after = "0"
        while (await redis.job(job.id) or {}).get("state") != "done":
            events = await redis.read_events("bot1", after, block_ms=2000)
            after = events[-1].id if events else after

    posted: list[str] = []
    for _ in range(2):  # the restart, and one more: nothing is posted twice
        again = Bot(redis_url, folder)
        deliverer = Deliverer(again.service)
        await again.service.start()
        await again.service.drained()
        await asyncio.gather(*deliverer.posting)
        posted += deliverer.posted
        assert again.recorder.of(job.id, Started) == []
        await again.close()
    assert posted == [job.id]


# -- Redis restarts -----------------------------------------------------------------------------


async def test_redis_restarted_from_its_aof_loses_nothing_and_pauses_new_paintings_meanwhile(
    redis_server: RedisServer, bot: Bot, agents: Agents
) -> None:
    jobs = [await bot.service.submit(request(f"u{n}", seed=slow(10, 100))) for n in range(3)]
    agents.start("A")
    await bot.recorder.wait_for(jobs[0].id, Progress, within=30)  # mid-painting
    redis_server.stop()
    with pytest.raises(errors.Paused) as paused:
        await bot.service.submit(request("x"))
    assert paused.value.message == replies.PAUSED == "Painting is paused, try again shortly."
    with pytest.raises(errors.Paused):  # before anything is downloaded, too
        bot.service.reserve("discord", "c1", "y")
    assert bot.service.status().paused
    assert bot.service.refused["Paused"] == 2
    redis_server.start()
    await asyncio.wait_for(bot.queue.answering(), 30)
    late = await bot.service.submit(request("late"))
    for job in [*jobs, late]:
        await bot.recorder.wait_for(job.id, Finished, within=60)
    await bot.service.drained()
    for job in [*jobs, late]:
        assert len(bot.recorder.of(job.id, Finished)) == 1
        assert bot.service.get(job.id).state is JobState.DONE
    assert not bot.service.status().paused


async def test_a_redis_that_lost_everything_gets_the_jobs_again_from_sqlite(
    redis_server: RedisServer, bot: Bot, agents: Agents
) -> None:
    waiting = [await bot.service.submit(request(f"u{n}", shade=n)) for n in range(2)]
    redis_server.restart_empty()
    await asyncio.wait_for(bot.queue.answering(), 30)
    agents.start("A")  # paints only what the bot admitted again from its SQLite rows
    for job in waiting:
        await bot.recorder.wait_for(job.id, Finished, within=60)
    assert [bot.service.get(job.id).state for job in waiting] == [JobState.DONE] * 2
