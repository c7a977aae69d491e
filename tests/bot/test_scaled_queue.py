"""The bot side of the scaled mode against a real redis-server: fairness equal to the embedded
queue's, limits under racing bots, refusal sentences, 'paused', cancel, replay and reconcile.

Where a test needs a GPU host it plays the agent's part with :class:`RedisJobs` calls; the
agent itself, as real processes, is tested in tests/engine/test_agent.py.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from bot import errors, replies
from bot.job_queue import (
    Admission,
    CancelResult,
    RunDone,
    RunFailed,
    RunPlanned,
    RunProgress,
    RunStarted,
)
from bot.jobs import Job, PaintRequest
from bot.scaled_queue import PAUSED, ScaledQueue, refusal
from bot.service import PaintService, next_turn, run_order
from bot.settings import Limits
from bot.store import Store
from engine import redis_jobs
from engine.redis_jobs import RedisJobs
from tests.fakes import FakeEngine, FakeTime, jpeg_bytes, png_bytes
from tests.scaled import Updates, make_job


def scaled(
    url: str, tmp_path: Path, bot_id: str = "bot1", limits: Limits | None = None
) -> ScaledQueue:
    return ScaledQueue(
        url,
        bot_id=bot_id,
        limits=limits or Limits(per_member=3),
        results_dir=tmp_path / bot_id / "results",
    )


@pytest.fixture
async def queue(redis_url: str, tmp_path: Path) -> AsyncIterator[ScaledQueue]:
    queue = scaled(redis_url, tmp_path)
    await queue.start()
    yield queue
    await queue.close()


@pytest.fixture
async def gpu(redis_url: str) -> AsyncIterator[RedisJobs]:
    """Plays a GPU host's part."""
    client = redis_jobs.connect(redis_url)
    yield RedisJobs(client)
    await client.aclose()


async def claim_all(gpu: RedisJobs) -> list[str]:
    order = []
    while (claimed := await gpu.claim("host:0")) is not None:
        order.append(claimed.job_id)
    return order


async def test_fair_order_across_three_members(
    queue: ScaledQueue, gpu: RedisJobs, tmp_path: Path
) -> None:
    arrivals = [("A1", "a"), ("A2", "a"), ("A3", "a"), ("B1", "b"), ("C1", "c"), ("C2", "c")]
    for job_id, user in arrivals:
        await queue.admit(make_job(tmp_path, job_id, user=user))
    assert await queue.order() == ["A1", "B1", "C1", "A2", "C2", "A3"]
    assert await claim_all(gpu) == ["A1", "B1", "C1", "A2", "C2", "A3"]


async def test_turns_equal_the_embedded_queues_under_random_traffic(
    redis_url: str, gpu: RedisJobs, tmp_path: Path
) -> None:
    """The same random admissions, claims and finishes on Redis and on the embedded rules
    (next_turn, run_order, the limit checks of the service) give the same order and refusals."""
    limits = Limits(per_member=3, queue=12, queue_per_chat=6)
    queue = scaled(redis_url, tmp_path, limits=limits)
    rng = random.Random(20240)
    waiting: list[Job] = []  # the embedded model: arrival order
    running: list[Job] = []
    current = 0
    claims: list[tuple[str, str]] = []  # (embedded, redis)
    held: dict[str, redis_jobs.Claimed] = {}
    refused: set[str] = set()
    for step in range(400):
        action = rng.random()
        if action < 0.55:
            user, chat = f"m{rng.randrange(6)}", f"c{rng.randrange(3)}"
            job = replace(make_job(tmp_path, f"j{step}", user=user, chat=chat), turn=0)
            mine = sum(1 for j in [*running, *waiting] if j.user_id == user)
            in_chat = sum(1 for j in waiting if j.chat_id == chat)
            expected = (
                "member"
                if mine >= limits.per_member
                else "queue"
                if len(waiting) >= limits.queue
                else "chat"
                if in_chat >= limits.queue_per_chat
                else None
            )
            try:
                admission: Admission | errors.UserFacingError = await queue.admit(job)
            except (errors.LimitReached, errors.QueueFull) as error:
                admission = error
            if isinstance(admission, errors.UserFacingError):
                assert expected is not None, admission.message
                count = _count(expected, mine, waiting, in_chat)
                assert admission.message == refusal(expected, count, limits, 0).message
                refused.add(expected)
                continue
            assert expected is None
            turn = next_turn([*running, *waiting], ("discord", user), current)
            assert admission.turn == turn
            waiting.append(replace(job, turn=turn))
            assert admission.position == [j.id for j in run_order(waiting)].index(job.id) + 1
        elif action < 0.8 and waiting:
            first = run_order(waiting)[0]
            waiting.remove(first)
            running.append(first)
            current = max(current, first.turn)
            claimed = await gpu.claim("host:0")
            assert claimed is not None
            held[claimed.job_id] = claimed
            claims.append((first.id, claimed.job_id))
        elif running:
            done = running.pop(rng.randrange(len(running)))
            outcome = redis_jobs.Done(result="r", seconds=1, work=1, width=1, height=1)
            assert await gpu.finish("host:0", held.pop(done.id), outcome) == "done"
    await queue.close()
    assert len(claims) > 50 and refused == {"member", "queue", "chat"}
    assert [e for e, _ in claims] == [r for _, r in claims]


def _count(reason: str, mine: int, waiting: list[Job], in_chat: int) -> int:
    return {"member": mine, "queue": len(waiting), "chat": in_chat}[reason]


async def test_limits_hold_for_two_bots_admitting_at_once(redis_url: str, tmp_path: Path) -> None:
    limits = Limits(per_member=2, queue=7, queue_per_chat=4)
    bots = [scaled(redis_url, tmp_path, f"bot{n}", limits) for n in (1, 2)]

    async def race(jobs: list[Job]) -> list[str]:
        async def attempt(bot: ScaledQueue, job: Job) -> str:
            try:
                await bot.admit(job)
                return "admitted"
            except errors.UserFacingError as error:
                return type(error).__name__

        return list(await asyncio.gather(*(attempt(bots[n % 2], j) for n, j in enumerate(jobs))))

    # One member asks twenty times through two bots at once: two get in.
    results = await race(
        [make_job(tmp_path, f"m{n}", user="same", chat=f"c{n}") for n in range(20)]
    )
    assert sorted(results) == ["LimitReached"] * 18 + ["admitted"] * 2
    # Twenty members of one chat at once: the chat's cap lets four in.
    results = await race(
        [make_job(tmp_path, f"c{n}", user=f"u{n}", chat="busy") for n in range(20)]
    )
    assert sorted(results) == ["QueueFull"] * 16 + ["admitted"] * 4
    # Six more members in six chats: the queue's cap (7, six waiting) lets one in.
    results = await race(
        [make_job(tmp_path, f"g{n}", user=f"g{n}", chat=f"g{n}") for n in range(6)]
    )
    assert sorted(results) == ["QueueFull"] * 5 + ["admitted"]
    assert len(await bots[0].order()) == 7
    for bot in bots:
        await bot.close()


async def test_refusals_read_exactly_as_in_the_embedded_mode(
    redis_url: str, gpu: RedisJobs, tmp_path: Path
) -> None:
    limits = Limits(per_member=1, queue=2, queue_per_chat=1)
    engine = FakeEngine(auto=False)
    store = Store.open(tmp_path / "embedded" / "atelier.sqlite3")
    service = PaintService(
        store=store, engine=engine, limits=limits, data_dir=tmp_path / "embedded", clock=FakeTime()
    )
    queue = scaled(redis_url, tmp_path, limits=limits)

    def request(user: str, chat: str) -> PaintRequest:
        return PaintRequest("discord", chat, user, user, png_bytes(), jpeg_bytes())

    async def both_refuse(user: str, chat: str) -> str:
        with pytest.raises(errors.UserFacingError) as embedded:
            await service.submit(request(user, chat))
        with pytest.raises(errors.UserFacingError) as scaled_mode:
            await queue.admit(make_job(tmp_path, f"{user}-{chat}", user=user, chat=chat))
        assert type(scaled_mode.value) is type(embedded.value)
        assert scaled_mode.value.message == embedded.value.message
        return embedded.value.message

    async with service:
        # The same state on both sides: a's job running, b's and c's waiting.
        await service.submit(request("a", "c1"))
        await engine.wait_started()
        await queue.admit(make_job(tmp_path, "a1", user="a", chat="c1"))
        assert await gpu.claim("host:0") is not None
        for n, (user, chat) in enumerate([("b", "c2"), ("c", "c3")]):
            await service.submit(request(user, chat))
            await queue.admit(make_job(tmp_path, f"j{n}", user=user, chat=chat))
        assert "/cancel" in await both_refuse("a", "c9")
        assert "The queue is full (2 paintings waiting)" in await both_refuse("d", "c4")
    store.close()
    await queue.close()


def test_the_chat_refusal_is_worded_as_in_the_embedded_mode() -> None:
    message = refusal("chat", 1, Limits(queue_per_chat=1), wait_seconds=130).message
    assert message == (
        "This chat already has 1 paintings waiting, the most allowed. Try again in about 2 minutes."
    )


async def test_unreachable_redis_pauses_painting(tmp_path: Path) -> None:
    queue = scaled(f"unix://{tmp_path}/no-redis.sock", tmp_path)
    with pytest.raises(errors.Paused) as caught:
        await queue.admit(make_job(tmp_path, "j1"))
    assert caught.value.message == PAUSED == "Painting is paused, try again shortly."
    with pytest.raises(errors.Paused):
        await queue.cancel("j1", "u1")
    assert not queue.reachable
    await queue.close()


async def test_cancel_waiting_at_once_running_by_signal(
    queue: ScaledQueue, gpu: RedisJobs, tmp_path: Path
) -> None:
    await queue.admit(make_job(tmp_path, "run", user="a"))
    await queue.admit(make_job(tmp_path, "wait", user="b"))
    claimed = await gpu.claim("host:0")
    assert claimed is not None and claimed.job_id == "run"
    assert await queue.cancel("wait", "b") is CancelResult.CANCELLED
    assert await queue.order() == []
    assert await queue.cancel("run", "a") is CancelResult.SIGNALLED
    assert (await gpu.renew("host:0", claimed)).cancel_by == "a"
    assert await queue.cancel("wait", "b") is CancelResult.GONE
    assert await queue.cancel("never", "b") is CancelResult.GONE


async def test_events_become_updates_and_a_restarted_reader_replays_from_its_id(
    redis_url: str, gpu: RedisJobs, tmp_path: Path
) -> None:
    first = scaled(redis_url, tmp_path)
    await first.start()
    updates = Updates(first)
    assert await first.admit(make_job(tmp_path, "j1")) == Admission(position=1, turn=0)
    claimed = await gpu.claim("host:0")
    assert claimed is not None
    started = await updates.wait_for(RunStarted, "j1")
    assert isinstance(started, RunStarted) and started.attempt == 1 and started.worker == "host:0"
    stored_id = started.event_id  # what the service would keep in SQLite
    await updates.close()
    await first.close()  # the bot goes down; painting goes on
    await gpu.emit("bot1", {"type": "planned", "job": "j1", "attempt": "1", "total_work": "77"})
    await gpu.emit(
        "bot1",
        {"type": "progress", "job": "j1", "attempt": "1", "percent": "50.00", "scale": "1",
         "scales": "2", "eta": "3.0", "preview": jpeg_bytes(), "note": "hello"},
    )  # fmt: skip
    result = png_bytes((64, 48), (1, 2, 3))
    digest = await gpu.put_blob(result, ttl=60)
    done = redis_jobs.Done(result=digest, seconds=2.5, work=77, width=64, height=48)
    assert await gpu.finish("host:0", claimed, done) == "done"

    second = scaled(redis_url, tmp_path)
    await second.start(after=stored_id)
    replayed = Updates(second)
    finished = await replayed.wait_for(RunDone, "j1")
    assert [type(u) for u in replayed.seen] == [RunPlanned, RunProgress, RunDone]
    planned, progress = replayed.seen[0], replayed.seen[1]
    assert isinstance(planned, RunPlanned) and planned.total_work == 77
    assert isinstance(progress, RunProgress)
    assert (progress.percent, progress.scale, progress.scales, progress.eta) == (50.0, 1, 2, 3.0)
    assert progress.preview_jpeg == jpeg_bytes() and progress.note == "hello"
    assert progress.sent_at > 0
    assert isinstance(finished, RunDone) and finished.seconds == 2.5 and finished.work == 77
    assert Path(finished.result_path).read_bytes() == result
    assert second.last_read_id == finished.event_id
    await replayed.close()
    await second.close()


async def test_reconcile_readmits_lost_jobs_cancels_strays_recovers_outcomes(
    queue: ScaledQueue, gpu: RedisJobs, tmp_path: Path
) -> None:
    # A job finished while its events were trimmed away.
    finished = make_job(tmp_path, "finished", user="d")
    await queue.admit(finished)
    claimed = await gpu.claim("host:0")
    assert claimed is not None
    digest = await gpu.put_blob(b"PNG!", ttl=60)
    done = redis_jobs.Done(result=digest, seconds=1.0, work=5, width=2, height=2)
    assert await gpu.finish("host:0", claimed, done) == "done"
    await gpu.client.delete(gpu.keys.events("bot1"))
    # Redis loses a job; another is in Redis but not in SQLite (the bot died before its row).
    kept, lost = make_job(tmp_path, "kept", user="a"), make_job(tmp_path, "lost", user="b")
    await queue.admit(kept)
    await queue.admit(lost)
    await gpu.client.delete(gpu.keys.job("lost"))
    await gpu.client.zrem(gpu.keys.waiting, "lost")
    await queue.admit(make_job(tmp_path, "stray", user="c"))

    report = await queue.reconcile([kept, lost, finished])
    assert report.readmitted == ["lost"]
    assert report.cancelled == ["stray"]
    [outcome] = report.outcomes
    assert isinstance(outcome, RunDone) and outcome.job_id == "finished"
    assert Path(outcome.result_path).read_bytes() == b"PNG!"
    assert await queue.order() == ["kept", "lost"]
    again = await queue.reconcile([kept, lost])
    assert again.readmitted == again.cancelled == [] and again.outcomes == []


async def test_capacity_counts_live_devices(queue: ScaledQueue, gpu: RedisJobs) -> None:
    assert await queue.capacity() == 0
    await gpu.set_alive("A:cuda:0", {}, ttl=30)
    await gpu.set_alive("B:cuda:0", {}, ttl=30)
    assert await queue.capacity() == 2


def test_the_scaled_mode_imports_neither_torch_nor_a_chat_platform() -> None:
    code = (
        "import sys; import bot.scaled_queue, bot.job_queue, engine.redis_jobs, engine.agent, "
        "engine.metrics; loaded = {'torch', 'discord', 'aiogram'} & set(sys.modules); "
        "assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])


async def test_a_painting_stopped_at_the_time_limit_is_told_as_in_the_embedded_mode(
    queue: ScaledQueue, gpu: RedisJobs, tmp_path: Path
) -> None:
    updates = Updates(queue)
    await queue.admit(make_job(tmp_path, "slow"))
    claimed = await gpu.claim("host:0")
    assert claimed is not None
    await gpu.finish("host:0", claimed, redis_jobs.Failed("timeout", "the agent's own words"))
    failed = await updates.wait_for(RunFailed, "slow")
    assert isinstance(failed, RunFailed) and failed.code == "timeout"
    assert failed.message == replies.too_slow(Limits().job_timeout)
    await updates.close()
