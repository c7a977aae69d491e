"""Each Lua script's transitions, against a real redis-server (see tests/redis_server.py).

A lease running out is simulated by ``XCLAIM ... IDLE`` (the entry looks idle for a minute,
still owned by the same consumer), so no test waits for a lease.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from engine import redis_jobs
from engine.protocol import PaintOptions
from engine.redis_jobs import (
    GROUP,
    AdmitLimits,
    Admitted,
    Claimed,
    NewJob,
    RedisJobs,
    Refused,
)

WIDE = AdmitLimits(per_member=10, queue=100, per_chat=100)


@pytest.fixture
async def jobs(redis_url: str) -> AsyncIterator[RedisJobs]:
    client = redis_jobs.connect(redis_url)
    yield RedisJobs(client, lease=30.0)
    await client.aclose()


def new_job(job_id: str, user: str = "u1", chat: str = "c1", bot: str = "bot1") -> NewJob:
    return NewJob(
        id=job_id,
        bot=bot,
        platform="discord",
        chat_id=chat,
        user_id=user,
        photo="p" * 64,
        painting="q" * 64,
        options=PaintOptions(strength=7, quality="draft", seed=3),
        preview_every=2.5,
        work=1234,
    )


async def admit(jobs: RedisJobs, *ids_users: tuple[str, str]) -> None:
    for job_id, user in ids_users:
        assert isinstance(await jobs.admit(new_job(job_id, user), WIDE), Admitted)


async def claim(jobs: RedisJobs, consumer: str) -> Claimed:
    claimed = await jobs.claim(consumer)
    assert claimed is not None
    return claimed


async def expire_lease(jobs: RedisJobs, claimed: Claimed, owner: str) -> None:
    """Make the entry look idle for a minute (its owner unchanged), as if renewals stopped."""
    await jobs.client.xclaim(
        jobs.keys.jobs, GROUP, owner, 0, [claimed.entry], idle=60_000, justid=True
    )


async def events(jobs: RedisJobs, bot: str = "bot1") -> list[tuple[str, str, int]]:
    return [(e.type, e.job_id, e.attempt) for e in await jobs.read_events(bot, "0")]


async def pending(jobs: RedisJobs) -> list[dict[str, object]]:
    reply = await jobs.client.xpending_range(jobs.keys.jobs, GROUP, "-", "+", 100)
    return list(reply)


async def test_admit_stores_the_job_and_answers_its_place(jobs: RedisJobs) -> None:
    first = await jobs.admit(new_job("j1", "a"), WIDE)
    second = await jobs.admit(new_job("j2", "b"), WIDE)
    assert first == Admitted(position=1, turn=0)
    assert second == Admitted(position=2, turn=0)
    stored = await jobs.job("j1")
    assert stored is not None
    assert stored["state"] == "queued" and stored["attempts"] == "0"
    assert stored["user"] == "a" and stored["work"] == "1234"
    assert stored["score"] == str(0 * 2**20 + 1)
    assert await jobs.waiting() == ["j1", "j2"]
    assert await jobs.bot_jobs("bot1") == {"j1", "j2"}
    assert await jobs.admit(new_job("j1", "a"), WIDE) == Refused("duplicate", 0)


async def test_limits_refuse_with_a_code_and_the_count(jobs: RedisJobs) -> None:
    limits = AdmitLimits(per_member=2, queue=4, per_chat=3)
    await jobs.admit(new_job("a1", "a"), limits)
    await jobs.admit(new_job("a2", "a"), limits)
    assert await jobs.admit(new_job("a3", "a"), limits) == Refused("member", 2)
    await jobs.admit(new_job("b1", "b"), limits)
    assert await jobs.admit(new_job("c1", "c"), limits) == Refused("chat", 3)
    await jobs.admit(NewJob(**{**new_job("d1", "d").__dict__, "chat_id": "c2"}), limits)
    assert await jobs.admit(NewJob(**{**new_job("e1", "e").__dict__, "chat_id": "c3"}), limits) == (
        Refused("queue", 4)
    )
    # A running job still counts for its member but no longer for its chat or the queue.
    await claim(jobs, "h:0")
    assert await jobs.admit(new_job("a3", "a"), limits) == Refused("member", 2)
    assert isinstance(await jobs.admit(new_job("c1", "c"), limits), Admitted)


async def test_claim_leases_before_it_returns_and_advances_the_turn(jobs: RedisJobs) -> None:
    await admit(jobs, ("a1", "a"), ("a2", "a"), ("b1", "b"))
    claimed = await claim(jobs, "host:cuda:0")
    assert claimed.job_id == "a1" and claimed.attempt == 1 and claimed.bot == "bot1"
    assert claimed.options == PaintOptions(strength=7, quality="draft", seed=3)
    assert claimed.preview_every == 2.5 and claimed.photo == "p" * 64
    [lease] = await pending(jobs)
    assert lease["message_id"].decode() == claimed.entry  # type: ignore[attr-defined]
    assert lease["consumer"] == b"host:cuda:0"
    assert lease["times_delivered"] == 1
    stored = await jobs.job("a1")
    assert stored is not None and stored["state"] == "running" and stored["attempts"] == "1"
    assert await jobs.client.get(jobs.keys.turn) in (None, b"0")  # still turn 0
    assert await events(jobs) == [("started", "a1", 1)]
    # b1 (turn 0) before a2 (turn 1); claiming a2 moves the current turn to 1.
    assert (await claim(jobs, "host:cuda:1")).job_id == "b1"
    assert (await claim(jobs, "host:cuda:2")).job_id == "a2"
    assert await jobs.client.get(jobs.keys.turn) == b"1"
    assert await jobs.claim("host:cuda:3") is None


async def test_renew_only_while_owned_and_it_reports_a_cancel(jobs: RedisJobs) -> None:
    await admit(jobs, ("a1", "a"))
    claimed = await claim(jobs, "A:0")
    await expire_lease(jobs, claimed, "A:0")
    assert (await jobs.renew("A:0", claimed)).owned
    [lease] = await pending(jobs)
    assert lease["time_since_delivered"] < 10_000  # idle reset
    assert lease["times_delivered"] == 1  # JUSTID: not counted as a delivery
    assert not (await jobs.renew("B:0", claimed)).owned  # someone else's lease
    assert await jobs.cancel("a1", "u1") == "signalled"
    renewal = await jobs.renew("A:0", claimed)
    assert renewal.owned and renewal.cancel_by == "u1"


async def test_finish_acks_deletes_releases_and_tells_the_bot(jobs: RedisJobs) -> None:
    limits = AdmitLimits(per_member=1, queue=10, per_chat=10)
    await jobs.admit(new_job("a1", "a"), limits)
    claimed = await claim(jobs, "A:0")
    done = redis_jobs.Done(result="r" * 64, seconds=3.5, work=99, width=64, height=48)
    assert await jobs.finish("A:0", claimed, done) == "done"
    assert await pending(jobs) == []
    assert await jobs.client.xlen(jobs.keys.jobs) == 0  # acked and deleted: no growth
    stored = await jobs.job("a1")
    assert stored is not None and stored["state"] == "done" and stored["result"] == "r" * 64
    assert await jobs.client.ttl(jobs.keys.job("a1")) > 0
    assert await jobs.bot_jobs("bot1") == set()
    [*_, last] = await jobs.read_events("bot1", "0")
    assert last.type == "done" and last.number("seconds") == 3.5 and last.text("result")
    # The member's slot is free again.
    assert isinstance(await jobs.admit(new_job("a2", "a"), limits), Admitted)
    # A second finish of the same lease is refused.
    assert await jobs.finish("A:0", claimed, done) == "refused"


async def test_reap_puts_a_dead_hosts_job_back_at_the_front_of_its_turn(jobs: RedisJobs) -> None:
    await admit(jobs, ("x1", "x"), ("y1", "y"), ("z1", "z"), ("x2", "x"))
    claimed = await claim(jobs, "A:0")
    assert claimed.job_id == "x1"
    assert await jobs.reap() == redis_jobs.Reaped(0, 0, 0)  # still fresh
    await expire_lease(jobs, claimed, "A:0")
    assert await jobs.reap() == redis_jobs.Reaped(requeued=1, failed=0, cancelled=0)
    assert await jobs.waiting() == ["x1", "y1", "z1", "x2"]
    assert await pending(jobs) == []
    assert ("requeued", "x1", 2) in await events(jobs)
    again = await claim(jobs, "B:0")
    assert again.job_id == "x1" and again.attempt == 2
    # The dead host's late result is refused; the new owner's is accepted, once.
    late = redis_jobs.Done(result="a" * 64, seconds=1, work=1, width=1, height=1)
    assert await jobs.finish("A:0", claimed, late) == "refused"
    assert not (await jobs.renew("A:0", claimed)).owned
    assert await jobs.finish("B:0", again, late) == "done"
    outcomes = [e for e in await events(jobs) if e[0] == "done"]
    assert outcomes == [("done", "x1", 2)]


async def test_a_job_fails_after_three_deliveries(jobs: RedisJobs) -> None:
    await jobs.admit(new_job("p1", "p"), AdmitLimits(per_member=1, queue=10, per_chat=10))
    for attempt in (1, 2, 3):
        claimed = await claim(jobs, f"H{attempt}:0")
        assert claimed.attempt == attempt
        await expire_lease(jobs, claimed, f"H{attempt}:0")
        await jobs.reap()
    assert await jobs.waiting() == []
    stored = await jobs.job("p1")
    assert stored is not None and stored["state"] == "failed"
    assert stored["code"] == "engine_crashed" and "3 times" in stored["message"]
    assert [e[0] for e in await events(jobs)][-2:] == ["started", "failed"]
    assert await jobs.client.zcard(jobs.keys.member("discord", "p")) == 0


async def test_retry_requeues_and_release_does_not_count(jobs: RedisJobs) -> None:
    await admit(jobs, ("a1", "a"), ("b1", "b"))
    claimed = await claim(jobs, "A:0")
    assert await jobs.finish("A:0", claimed, redis_jobs.Retry()) == "requeued"
    assert await jobs.waiting() == ["a1", "b1"]
    claimed = await claim(jobs, "A:0")
    assert claimed.attempt == 2
    assert await jobs.finish("A:0", claimed, redis_jobs.Release()) == "queued"
    stored = await jobs.job("a1")
    assert stored is not None and stored["attempts"] == "1"
    assert (await claim(jobs, "B:0")).attempt == 2
    reasons = [e.fields.get("reason") for e in await jobs.read_events("bot1", "0")]
    assert [r for r in reasons if r] == ["engine_crashed", "released"]


async def test_cancel_a_waiting_job_at_once_and_a_running_one_by_flag(jobs: RedisJobs) -> None:
    limits = AdmitLimits(per_member=1, queue=10, per_chat=10)
    await jobs.admit(new_job("a1", "a"), limits)
    await jobs.admit(new_job("b1", "b"), limits)
    pubsub = jobs.client.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(jobs.keys.cancel_channel)
    running = await claim(jobs, "A:0")
    assert await jobs.cancel("b1", "b") == "cancelled"
    assert await jobs.waiting() == []
    assert isinstance(await jobs.admit(new_job("b2", "b"), limits), Admitted)  # slot freed
    assert await jobs.cancel("a1", "mod") == "signalled"
    async with asyncio.timeout(5):
        # None for the subscription's own confirmation (ignored), then the message.
        while (message := await pubsub.get_message(timeout=1)) is None:
            pass
    assert message["channel"] == jobs.keys.cancel_channel.encode() and message["data"] == b"a1"
    await pubsub.aclose()
    assert await jobs.finish("A:0", running, redis_jobs.Cancelled()) == "cancelled"
    [*_, last] = await jobs.read_events("bot1", "0")
    assert last.type == "cancelled" and last.fields["by"] == "mod"
    assert await jobs.cancel("a1", "mod") == "already:cancelled"
    assert await jobs.cancel("nope", "x") == "unknown"


async def test_a_dead_hosts_cancelled_job_is_cancelled_not_requeued(jobs: RedisJobs) -> None:
    await admit(jobs, ("a1", "a"))
    claimed = await claim(jobs, "A:0")
    await jobs.cancel("a1", "a")
    await expire_lease(jobs, claimed, "A:0")
    assert await jobs.reap() == redis_jobs.Reaped(requeued=0, failed=0, cancelled=1)
    assert await jobs.waiting() == []


async def test_blobs_are_stored_once_by_content_with_a_ttl(jobs: RedisJobs) -> None:
    first = await jobs.put_blob(b"same bytes", ttl=100)
    second = await jobs.put_blob(b"same bytes", ttl=200)
    assert first == second
    assert await jobs.get_blob(first) == b"same bytes"
    assert 100 < await jobs.client.ttl(jobs.keys.blob(first)) <= 200
    assert await jobs.get_blob("0" * 64) is None


async def test_event_streams_are_capped(redis_url: str) -> None:
    client = redis_jobs.connect(redis_url)
    jobs = RedisJobs(client, events_maxlen=50)
    for n in range(1000):
        await jobs.emit("bot1", {"type": "progress", "job": "j", "n": str(n)})
    # MAXLEN ~ trims whole nodes: close to the cap, never the thousand.
    assert await client.xlen(jobs.keys.events("bot1")) < 250
    await client.aclose()


async def test_liveness_keys_count_devices_and_expire(jobs: RedisJobs) -> None:
    await jobs.set_alive("A:cuda:0", {"device": "cuda:0"}, ttl=30)
    await jobs.set_alive("A:cuda:1", {"device": "cuda:1"}, ttl=30)
    await jobs.set_alive("B:cuda:0", {"device": "cuda:0"}, ttl=0.05)
    assert 0 < await jobs.client.pttl(jobs.keys.alive("B:cuda:0")) <= 50
    await jobs.clear_alive("A:cuda:1")
    assert await jobs.devices_alive() in (1, 2)  # B's key may already have expired


async def test_a_lost_cancellation_still_stops_a_loop_that_checks() -> None:
    """Stands in for redis-py losing a cancellation inside a command (the task is left
    "cancelling" and runs on): check_cancelled() stops it at the next check."""
    rounds = []

    async def loop() -> None:
        while True:
            with contextlib.suppress(asyncio.CancelledError):  # lost, as inside the library
                await asyncio.sleep(3600)  # the command in flight
            rounds.append(1)
            redis_jobs.check_cancelled()

    task = asyncio.create_task(loop())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert rounds == [1]


async def test_a_blends_second_painting_and_the_timelapse_travel_with_the_job(
    jobs: RedisJobs,
) -> None:
    """The second painting's blob and the timelapse request reach the agent that claims the
    job (its blob's expiry renewed like the others'); the timelapse's blobs reach the bot."""
    second = await jobs.put_blob(b"the second painting", ttl=60)
    blend = NewJob(**{**new_job("b1").__dict__, "painting2": second, "timelapse": True})
    await jobs.admit(blend, WIDE)
    await jobs.admit(new_job("p1", "u2"), WIDE)
    claimed = await claim(jobs, "h:0")
    assert claimed.painting2 == second and claimed.timelapse
    assert await jobs.client.ttl(jobs.keys.blob(second)) > 60  # renewed to the input TTL
    plain = await claim(jobs, "h:1")
    assert plain.painting2 == "" and not plain.timelapse
    done = redis_jobs.Done(
        result="r" * 64,
        seconds=1.5,
        work=10,
        width=64,
        height=48,
        timelapse_webp="w" * 64,
        timelapse_mp4="m" * 64,
    )
    assert await jobs.finish("h:0", claimed, done) == "done"
    [*_, finished] = await jobs.read_events("bot1", "0")
    assert finished.type == "done" and finished.job_id == "b1"
    assert finished.text("timelapse_webp") == "w" * 64
    assert finished.text("timelapse_mp4") == "m" * 64
    assert await jobs.finish("h:1", plain, redis_jobs.Done("r" * 64, 1.0, 1, 1, 1)) == "done"
    [*_, without] = await jobs.read_events("bot1", "0")
    assert without.text("timelapse_webp") is None  # none made
