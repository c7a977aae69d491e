"""The scaled mode against the embedded one, with fake engine processes (no torch).

Each painting is a scripted engine process painting 10 steps of 30 ms, stamping the send time
into every progress message, so both modes measure the same thing: the same
:class:`~bot.service.PaintService` and listener, its queue in memory with one local engine
(embedded) or in Redis (``ATELIER_REDIS_URL``'s mode). Printed side by side:

- throughput: paintings per second, embedded (one engine) and with 1, 2 and 4 agents of one
  device each (in this process) on a real redis-server (near-linear is expected: painting is
  the bottleneck, not Redis);
- latency per progress event: engine send -> the service's listener, p50 and p95;
- dispatch to first event: the job starting on an engine (the claim, in the scaled mode) ->
  its first progress at the listener;
- Redis commands per second at that load (``INFO``: scripts' inner calls included);
- a host's death: two agent processes, the one painting is SIGKILLed with its engine; seconds
  until the job starts on the other (the lease here is 2 s; 30 s in production).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

from bot.job_queue import RunProgress, RunStarted
from bot.jobs import Finished, JobEvent, PaintRequest, Progress, Started
from bot.scaled_queue import ScaledQueue
from bot.service import PaintService
from bot.settings import Limits
from bot.store import Store
from engine import protocol, redis_jobs
from engine.agent import Agent
from engine.client import EngineClient
from tests.fakes import jpeg_bytes, png_bytes
from tests.redis_server import RedisServer
from tests.scaled import LEASE, AgentProcess, Updates, agent_settings, make_job, slow

STEPS = 10
STEP_SECONDS = 0.03
WIDE = Limits(per_member=1000, queue=10_000, queue_per_chat=10_000)


def timed_worker(config: protocol.EngineConfig, conn: Connection) -> None:
    """A fake engine process: STEPS steps of STEP_SECONDS, the send time in each note."""
    conn.send(protocol.EngineReady(pid=os.getpid(), device=config.device, kind="cpu"))
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if not isinstance(message, protocol.PaintJob):
            if isinstance(message, protocol.Shutdown):
                return
            continue
        job = message
        conn.send(protocol.JobStarted(job.job_id, 64, 48, STEPS, total_work=64 * 48 * STEPS))
        for step in range(1, STEPS + 1):
            time.sleep(STEP_SECONDS)
            conn.send(
                protocol.JobProgress(
                    job.job_id, step, STEPS, 0, 1, elapsed=step * STEP_SECONDS, eta=None,
                    note=f"t={time.time():.6f}",
                )
            )  # fmt: skip
        Path(job.result_path).write_bytes(png_bytes((64, 48)))
        conn.send(protocol.JobDone(job.job_id, job.result_path, 64, 48, 0.3, STEPS, 1))


@dataclass
class Figures:
    label: str
    jobs: int = 0
    seconds: float = 0.0
    event_latency: list[float] = field(default_factory=list)
    first_event: list[float] = field(default_factory=list)
    redis_ops: float | None = None

    @property
    def per_second(self) -> float:
        return self.jobs / self.seconds if self.seconds else 0.0


def _sent_at(note: str | None) -> float | None:
    return float(note[2:]) if note and note.startswith("t=") else None


class Watch:
    """The listener both modes' services get: latency per progress event (engine send -> the
    listener), the first event of each job, the end of the run."""

    def __init__(self, figures: Figures, jobs: int) -> None:
        self.figures = figures
        self.jobs = jobs
        self.started: dict[str, float] = {}  # job id -> when it was dispatched
        self.first: dict[str, float] = {}  # job id -> when its first progress arrived
        self.finished: set[str] = set()
        self.done = asyncio.Event()

    async def __call__(self, event: JobEvent) -> None:
        now = time.time()
        if isinstance(event, Started):
            self.started.setdefault(event.job.id, event.job.started_at or now)
        elif isinstance(event, Progress):
            sent = _sent_at(event.note)
            if sent is not None:
                self.figures.event_latency.append(now - sent)
            self.first.setdefault(event.job.id, now)
        elif isinstance(event, Finished):
            self.finished.add(event.job.id)
            if len(self.finished) == self.jobs:
                self.done.set()

    async def run(self, service: PaintService) -> None:
        """Submit the jobs (one member and chat each) and wait until all are painted."""
        began = time.perf_counter()
        for n in range(self.jobs):
            await service.submit(
                PaintRequest("discord", f"c{n}", f"m{n}", f"m{n}", png_bytes(), jpeg_bytes())
            )
        await asyncio.wait_for(self.done.wait(), 600)
        self.figures.seconds = time.perf_counter() - began


async def embedded(jobs: int, folder: Path) -> Figures:
    store = Store.open(folder / "embedded" / "atelier.sqlite3")
    engine = EngineClient(protocol.EngineConfig(device="fake"), target=timed_worker)
    service = PaintService(
        store=store, engine=engine, limits=WIDE, data_dir=folder / "embedded", preview_seconds=0
    )
    figures = Figures("embedded (1 engine)", jobs)
    watch = Watch(figures, jobs)
    service.add_listener(watch)
    async with service:
        await watch.run(service)
    figures.first_event = [watch.first[i] - watch.started[i] for i in watch.first]
    store.close()
    return figures


async def scaled(agents: int, jobs: int, url: str, folder: Path) -> Figures:
    """The same PaintService and listener, its queue in Redis, ``agents`` agents painting."""
    client = redis_jobs.connect(url)
    await client.flushall()
    data = folder / f"scaled-{agents}"
    store = Store.open(data / "atelier.sqlite3")
    queue = ScaledQueue(url, bot_id="bench", limits=WIDE, results_dir=data / "results")
    service = PaintService(store=store, queue=queue, limits=WIDE, data_dir=data, preview_seconds=0)
    figures = Figures(f"scaled, {agents} agent{'s' * (agents > 1)}", jobs)
    watch = Watch(figures, jobs)
    service.add_listener(watch)
    stop = asyncio.Event()
    runners = []
    for n in range(agents):
        settings = agent_settings(url, f"host{n}", folder / f"agent{n}")
        agent = Agent(settings, target=timed_worker)
        runners.append(asyncio.create_task(agent.run(stop)))
    async with service:
        async with asyncio.timeout(60):
            # Every engine up and announced in Redis (polled: it is another party's state).
            while await queue.capacity() < agents:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        before = await _commands(client)
        await watch.run(service)
        figures.redis_ops = (await _commands(client) - before) / figures.seconds
        # Dispatch is the claim, stamped in the job's hash by the agent's script.
        for job_id, first in watch.first.items():
            claimed = await client.hget(redis_jobs.Keys().job(job_id), "started")
            figures.first_event.append(first - float(claimed or 0))
        stop.set()
        await asyncio.gather(*runners)
    store.close()
    await client.aclose()
    return figures


async def _commands(client: object) -> int:
    info = await client.info("stats")  # type: ignore[attr-defined]
    return int(info["total_commands_processed"])


async def host_death(url: str, folder: Path) -> float:
    """Seconds from SIGKILL of the painting host to the job starting on the other host."""
    client = redis_jobs.connect(url)
    await client.flushall()
    await client.aclose()
    bot = ScaledQueue(url, bot_id="death", limits=WIDE, results_dir=folder / "death")
    await bot.start()
    updates = Updates(bot)
    hosts = [AgentProcess(url, host, folder / "death-agents") for host in ("A", "B")]
    try:
        await bot.admit(make_job(folder / "inputs", "victim", seed=slow(40, 100)))
        first = await updates.wait_for(RunStarted, "victim", within=60)
        await updates.wait_for(RunProgress, "victim", within=60)
        [dying] = [h for h in hosts if h.consumer == getattr(first, "worker", "")]
        killed = time.time()
        dying.kill_host()
        again = await updates.wait_for(
            RunStarted, "victim", within=60, where=lambda u: getattr(u, "attempt", 0) == 2
        )
        return updates.received[id(again)] - killed
    finally:
        for host in hosts:
            host.stop()
        await updates.close()
        await bot.close()


def pct(values: list[float], q: float) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    return f"{1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]:.1f}"


def report(rows: list[Figures], death: float) -> None:
    print(
        f"fake engines: {STEPS} steps x {STEP_SECONDS * 1000:.0f} ms a painting; "
        "latencies in ms (p50 / p95)"
    )
    header = (
        f"{'mode':<22} {'jobs':>5} {'paintings/s':>12} {'vs 1 engine':>12} "
        f"{'event p50/p95':>15} {'dispatch->1st p50/p95':>23} {'Redis cmds/s':>13}"
    )
    print(header)
    print("-" * len(header))
    base = rows[0].per_second
    for row in rows:
        ratio = row.per_second / base
        print(
            f"{row.label:<22} {row.jobs:>5} {row.per_second:>12.2f} {ratio:>11.2f}x "
            f"{pct(row.event_latency, 0.5) + ' / ' + pct(row.event_latency, 0.95):>15} "
            f"{pct(row.first_event, 0.5) + ' / ' + pct(row.first_event, 0.95):>23} "
            f"{'-' if row.redis_ops is None else f'{row.redis_ops:.0f}':>13}"
        )
    print(
        f"host death -> its job running on another host: {death:.1f} s "
        f"(lease {LEASE:.0f} s, reaping every 0.25 s; production lease 30 s)"
    )
    print(f"median event latency added by Redis: {_added(rows):.1f} ms")


def _added(rows: list[Figures]) -> float:
    scaled = [v for row in rows[1:] for v in row.event_latency]
    if not scaled or not rows[0].event_latency:
        return 0.0
    return 1000 * (statistics.median(scaled) - statistics.median(rows[0].event_latency))


async def run(quick: bool) -> None:
    jobs = 8 if quick else 24
    binary = RedisServer.find_binary()
    if binary is None:
        print("redis-server not found: `apt-get install redis-server` to run this benchmark")
        return
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        server = RedisServer(folder / "redis", binary)
        server.start()
        try:
            rows = [await embedded(jobs, folder)]
            for agents in (1, 2, 4):
                rows.append(await scaled(agents, jobs, server.url, folder))
            death = await host_death(server.url, folder)
        finally:
            server.stop()
    report(rows, death)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.scale_bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="8 paintings a run instead of 24")
    args, _ = parser.parse_known_args(argv)
    asyncio.run(run(args.quick))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
