"""GPU-host agents as real processes, each driving a scripted engine process, against a real
redis-server; the bot's side is the real :class:`bot.scaled_queue.ScaledQueue`.

Leases are 2 s here (30 s in production), renewals every 0.4 s, reaping every 0.25 s. The one
end-to-end run of the real engine goes through ``python -m engine agent`` itself.
"""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image

from bot.job_queue import (
    CancelResult,
    RunCancelled,
    RunDone,
    RunFailed,
    RunPlanned,
    RunProgress,
    RunRequeued,
    RunStarted,
)
from bot.jobs import Job
from bot.scaled_queue import ScaledQueue
from bot.settings import Limits
from engine import protocol, redis_jobs
from engine.agent import Agent
from engine.redis_jobs import Claimed, RedisJobs
from tests.redis_server import RedisServer
from tests.scaled import (
    LEASE,
    SEED_CRASH,
    Agents,
    Updates,
    agent_settings,
    make_job,
    scripted_worker,
    slow,
)


@pytest.fixture
async def bot(redis_url: str, tmp_path: Path) -> AsyncIterator[ScaledQueue]:
    queue = ScaledQueue(
        redis_url,
        bot_id="bot1",
        limits=Limits(per_member=3),
        results_dir=tmp_path / "results",
        reap_every=0.25,
        lease=LEASE,
    )
    await queue.start()
    yield queue
    await queue.close()


@pytest.fixture
async def updates(bot: ScaledQueue) -> AsyncIterator[Updates]:
    updates = Updates(bot)
    yield updates
    await updates.close()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[RedisJobs]:
    client = redis_jobs.connect(redis_url)
    yield RedisJobs(client)
    await client.aclose()


async def test_two_agents_paint_in_fair_order(
    bot: ScaledQueue, updates: Updates, agents: Agents, tmp_path: Path
) -> None:
    arrivals = [("A1", "a"), ("A2", "a"), ("A3", "a"), ("B1", "b"), ("C1", "c"), ("C2", "c")]
    for job_id, user in arrivals:
        await bot.admit(make_job(tmp_path, job_id, user=user, seed=slow(6, 50)))
    agents.start("A", "B")
    for job_id, _ in arrivals:
        await updates.wait_for(RunDone, job_id)
    started = [u for u in updates.seen if isinstance(u, RunStarted)]
    assert [u.job_id for u in started] == ["A1", "B1", "C1", "A2", "C2", "A3"]
    assert {u.worker for u in started} == {"A:fake", "B:fake"}  # both hosts painted
    assert all(u.attempt == 1 for u in started)
    for job_id, _ in arrivals:
        progress = [u for u in updates.of(RunProgress, job_id) if isinstance(u, RunProgress)]
        # At most one a second, plus the preview and the last step: 3 of 6 steps here.
        assert len(progress) == 3 and sum(1 for u in progress if u.preview_jpeg) == 1
        assert [u.percent for u in progress] == sorted(u.percent for u in progress)
        assert len(updates.of(RunPlanned, job_id)) == 1


async def test_a_dead_hosts_job_is_painted_elsewhere_once(
    bot: ScaledQueue, updates: Updates, agents: Agents, redis: RedisJobs, tmp_path: Path
) -> None:
    agents.start("A", "B")
    job = make_job(tmp_path, "j1", seed=slow(20, 100))
    await bot.admit(job)
    first = await updates.wait_for(RunStarted, "j1")
    assert isinstance(first, RunStarted)
    stored = await redis.job("j1")
    assert stored is not None
    lease = Claimed(
        job_id="j1",
        entry=stored["entry"],
        attempt=1,
        bot="bot1",
        photo="",
        painting="",
        options=protocol.PaintOptions(),
        preview_every=0,
        timeout=60,
    )
    await updates.wait_for(RunProgress, "j1")  # mid-job
    [dead] = [a for a in agents.running if a.consumer == first.worker]
    dead.kill_host()

    requeued = await updates.wait_for(RunRequeued, "j1")
    assert isinstance(requeued, RunRequeued)
    assert (requeued.attempt, requeued.reason) == (2, "host_lost")
    second = await updates.wait_for(RunStarted, "j1", where=lambda u: u.attempt == 2)  # type: ignore[attr-defined]
    assert isinstance(second, RunStarted) and second.worker != first.worker
    done = await updates.wait_for(RunDone, "j1")
    assert isinstance(done, RunDone)
    assert Image.open(done.result_path).size == (64, 48)
    # The dead host's late result is refused: the member never gets two paintings.
    late = redis_jobs.Done(result="x" * 64, seconds=1, work=1, width=1, height=1)
    assert await redis.finish(first.worker, lease, late) == "refused"
    assert len(updates.of(RunDone, "j1")) == 1
    outcomes = [e for e in await redis.read_events("bot1", "0") if e.type in redis_jobs.OUTCOMES]
    assert [(e.type, e.attempt) for e in outcomes] == [("done", 2)]


async def test_cancel_stops_a_running_painting_and_frees_a_waiting_slot(
    bot: ScaledQueue, updates: Updates, agents: Agents, tmp_path: Path
) -> None:
    await bot.admit(make_job(tmp_path, "long", user="a", seed=slow(200, 50)))
    await bot.admit(make_job(tmp_path, "waiting", user="b"))
    agents.start("A")
    await updates.wait_for(RunProgress, "long")
    assert await bot.cancel("waiting", "b") is CancelResult.CANCELLED
    assert await bot.cancel("long", "a") is CancelResult.SIGNALLED
    cancelled = await updates.wait_for(RunCancelled, "long")
    assert isinstance(cancelled, RunCancelled) and cancelled.by_user == "a"
    progress = [u for u in updates.of(RunProgress, "long") if isinstance(u, RunProgress)]
    assert progress[-1].percent < 100  # stopped mid-way, not painted to the end
    after = make_job(tmp_path, "after", user="a")
    await bot.admit(after)  # the member's slot is free again, and the engine too
    await updates.wait_for(RunDone, "after")
    assert updates.of(RunDone, "long") == [] and updates.of(RunStarted, "waiting") == []


async def test_an_engine_that_keeps_dying_fails_the_job_after_three_tries(
    bot: ScaledQueue, updates: Updates, agents: Agents, tmp_path: Path
) -> None:
    agents.start("A")
    await bot.admit(make_job(tmp_path, "poison", seed=SEED_CRASH))
    failed = await updates.wait_for(RunFailed, "poison", within=60)
    assert isinstance(failed, RunFailed) and failed.code == "engine_crashed"
    assert "3 times" in failed.message
    requeues = updates.of(RunRequeued, "poison")
    assert [(u.attempt, u.reason) for u in requeues] == [
        (2, "engine_crashed"),
        (3, "engine_crashed"),
    ]  # type: ignore[attr-defined]
    await bot.admit(make_job(tmp_path, "next"))  # the restarted engine paints the next job
    await updates.wait_for(RunDone, "next", within=30)


async def test_inputs_that_expired_before_a_gpu_was_free_fail_the_job_clearly(
    bot: ScaledQueue, updates: Updates, agents: Agents, redis: RedisJobs, tmp_path: Path
) -> None:
    await bot.admit(make_job(tmp_path, "old"))
    stored = await redis.job("old")
    assert stored is not None
    await redis.client.delete(redis.keys.blob(stored["photo"]))  # its TTL ran out
    agents.start("A")
    failed = await updates.wait_for(RunFailed, "old")
    assert isinstance(failed, RunFailed) and failed.code == "inputs_lost"
    assert "Please send it again" in failed.message


async def test_a_restarted_bot_gets_the_result_from_its_stream(
    redis_url: str,
    bot: ScaledQueue,
    updates: Updates,
    agents: Agents,
    redis: RedisJobs,
    tmp_path: Path,
) -> None:
    agents.start("A")
    await bot.admit(make_job(tmp_path, "j1", seed=slow(10, 100)))
    started = await updates.wait_for(RunStarted, "j1")
    stored_id = started.event_id  # as the service would store it in SQLite
    await updates.close()
    await bot.close()  # the bot goes down mid-job
    seen, finished = stored_id, False
    async with asyncio.timeout(30):  # painting goes on without the bot
        while not finished:
            events = await redis.read_events("bot1", seen, block_ms=2000)
            finished = any(event.type == "done" for event in events)
            seen = events[-1].id if events else seen
    again = ScaledQueue(redis_url, bot_id="bot1", limits=Limits(), results_dir=tmp_path / "r2")
    await again.start(after=stored_id)
    replayed = Updates(again)
    done = await replayed.wait_for(RunDone, "j1")
    assert isinstance(done, RunDone) and Path(done.result_path).is_file()
    assert replayed.of(RunStarted) == []  # only what came after the stored id
    await replayed.close()
    await again.close()


async def test_redis_restarted_with_its_aof_loses_nothing(
    redis_server: RedisServer,
    bot: ScaledQueue,
    updates: Updates,
    agents: Agents,
    tmp_path: Path,
) -> None:
    from bot.errors import Paused

    jobs = [make_job(tmp_path, f"j{n}", user=f"u{n}", seed=slow(10, 100)) for n in range(3)]
    for job in jobs:
        await bot.admit(job)
    updates.known += jobs  # what the bot's SQLite knows: reconciled with after the restart
    agents.start("A")
    await updates.wait_for(RunProgress, "j0")  # mid-job
    redis_server.stop()
    assert redis_server.aof_files()
    with pytest.raises(Paused):
        await bot.admit(make_job(tmp_path, "refused", user="x"))
    redis_server.start()
    late: Job = make_job(tmp_path, "late", user="y")
    updates.known.append(late)
    await bot.admit(late)
    for job in [*jobs, late]:
        await updates.wait_for(RunDone, job.id, within=60)
    report = await bot.reconcile([])  # nothing known is missing, nothing unknown is there
    assert report.readmitted == report.cancelled == []
    assert all(len(updates.of(RunDone, job.id)) == 1 for job in [*jobs, late])


async def test_agent_serves_metrics_and_health(
    redis_url: str, bot: ScaledQueue, tmp_path: Path
) -> None:
    settings = agent_settings(redis_url, "M", tmp_path / "m")
    from dataclasses import replace

    agent = Agent(replace(settings, metrics_port=0), target=scripted_worker)
    stop = asyncio.Event()
    running = asyncio.create_task(agent.run(stop))
    updates = Updates(bot)
    try:
        await bot.admit(make_job(tmp_path, "j1"))
        await updates.wait_for(RunDone, "j1")
        assert agent.metrics_server is not None  # served from the start
        port = agent.metrics_server.port
        text = await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/metrics")
        assert 'atelier_jobs_finished_total{outcome="done",reason="",role="agent"} 1.0' in text
        assert "atelier_job_seconds_bucket" in text and "atelier_event_loop_lag_seconds" in text
        async with asyncio.timeout(10):
            while 'atelier_devices_alive{role="agent"} 1.0' not in text:
                await asyncio.sleep(0.2)
                text = await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/metrics")
        assert await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/healthz") == "ok\n"
    finally:
        stop.set()
        await running
        await updates.close()


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


@pytest.mark.slow
async def test_real_engine_through_redis_and_one_agent(
    redis_url: str, bot: ScaledQueue, updates: Updates, vgg_weights_path: Path, tmp_path: Path
) -> None:
    """``python -m engine agent`` with the real engine (random weights, 64 px, CPU)."""
    photo = Image.linear_gradient("L").resize((64, 48)).convert("RGB")
    buffer = io.BytesIO()
    photo.save(buffer, "PNG")
    job = make_job(tmp_path, "real", seed=1)
    Path(job.photo_path).write_bytes(buffer.getvalue())
    log = (tmp_path / "agent.log").open("wb")
    agent = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "engine", "agent", "--redis", redis_url, "--devices", "cpu",
        "--host", "e2e", "--weights", str(vgg_weights_path), "--work-dir", str(tmp_path / "w"),
        "--lease", str(LEASE),
        cwd=Path(__file__).parents[2],
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        await bot.admit(job)
        done = await updates.wait_for((RunDone, RunFailed), "real", within=240)
    finally:
        agent.terminate()
        assert await asyncio.wait_for(agent.wait(), 30) == 0
        log.close()
    assert isinstance(done, RunDone), done
    assert Image.open(done.result_path).size == (64, 48)
    progress = [u for u in updates.of(RunProgress, "real") if isinstance(u, RunProgress)]
    percents = [u.percent for u in progress]
    assert percents == sorted(percents) and percents[-1] == pytest.approx(100)
    started = updates.of(RunStarted, "real")
    assert [u.worker for u in started] == ["e2e:cpu"]  # type: ignore[attr-defined]


def test_agent_command_line_errors_are_one_line(redis_url: str, tmp_path: Path) -> None:
    def agent(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "engine", "agent", "--redis", redis_url, *args],
            cwd=Path(__file__).parents[2],
            capture_output=True,
            text=True,
            timeout=120,
        )

    repeated = agent("--devices", "cpu,cpu")
    assert repeated.returncode == 2
    assert "is not a list of distinct devices" in repeated.stderr.strip().splitlines()[-1]
    missing = agent("--devices", "cpu", "--weights", "/nonexistent/vgg19.pth", "--work-dir",
                    str(tmp_path))  # fmt: skip
    assert missing.returncode == 1
    last = missing.stderr.strip().splitlines()[-1]
    assert (
        last.startswith("error: no engine could start (cpu: ") and "/nonexistent/vgg19.pth" in last
    )
    assert "Traceback" not in missing.stderr
