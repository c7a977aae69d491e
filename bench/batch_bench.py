"""Batching in the paint service: throughput and waits, batched against one job at a time.

The real :class:`~bot.service.PaintService` (admission, the fair queue and its batching rule,
SQLite, events) drives an in-process fake engine that says it can paint 4 jobs in one pass, as
the GPU engine does. No GPU is used: time is virtual, and the engine's cost is a stated model:

- one job alone takes its work (pixel-iterations of the GPU preset's plan) times
  :data:`SECONDS_PER_WORK`;
- a pass of n jobs takes its largest job's work times ``1 + (n - 1) / 3`` at that speed
  (:func:`bot.batching.default_factor`: four jobs in the time of two, issue 13's aim).

The model is what the service assumes before it has measured a pass; what a real GPU gives is
measured by ``bench/speed_bench.py --device cuda`` (its "4 members at 512 px" row), not here.
Each scenario runs twice, with ``max_batch`` 4 and 1, and prints per run: paintings per minute
of engine time, mean and worst wait (submitted -> started), mean time to the result, the
passes, and the worst start later than one at a time (the promise: at most one pass).

Scenarios: 4 members at 512 px (draft preset) all waiting when the engine comes free (a
painting ahead of them, left out of the figures); and a busy stretch: 40 members arriving at
random (seeded) about as fast as the engine paints alone, 70 % drafts at 512 px and 30 %
standard paintings at 1024 px.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import random
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from bot import batching
from bot.jobs import Finished, JobEvent, PaintRequest
from bot.service import PaintService
from bot.settings import Limits
from bot.store import Store
from engine import schedule
from engine.protocol import PaintOptions
from tests.fakes import FakeEngine, FakeTime, jpeg_bytes

SECONDS_PER_WORK = 3.0e-7  # the service's first guess for a GPU (bot.eta)
SMALL = (512, 384)
LARGE = (1024, 768)


@dataclass(frozen=True)
class Ask:
    at: float  # seconds after the start
    member: str
    quality: str
    size: tuple[int, int]
    counted: bool = True


@dataclass
class Figures:
    label: str
    per_minute: float  # paintings per minute of engine time (first start to last result)
    mean_wait: float
    worst_wait: float
    mean_result: float
    passes: list[int]  # jobs per pass
    starts: dict[str, float]  # member -> started, seconds after the start


def photo(size: tuple[int, int], seed: int) -> bytes:
    image = Image.new("RGB", size, ((seed * 37) % 256, (seed * 91) % 256, (seed * 53) % 256))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def pass_seconds(works: list[int]) -> float:
    return batching.cost(works, batching.default_factor) * SECONDS_PER_WORK


async def run(label: str, asks: list[Ask], max_batch: int, folder: Path) -> Figures:
    clock = FakeTime(0.0)
    engine = FakeEngine(auto=False, device_kind="gpu", max_batch=max_batch)
    store = Store.open(folder / label / "atelier.sqlite3")
    store.set_meta("seconds_per_work", repr(SECONDS_PER_WORK))
    service = PaintService(
        store=store,
        engine=engine,
        limits=Limits(queue=1000, queue_per_chat=1000, per_member=5),
        data_dir=folder / label,
        clock=clock,
    )
    painting = jpeg_bytes((256, 256))
    members: dict[str, str] = {}  # job id -> member
    ended: set[str] = set()  # job ids finished (their results handed out)
    changed = asyncio.Event()

    async def listen(event: JobEvent) -> None:
        if isinstance(event, Finished):
            ended.add(event.job.id)
            changed.set()

    service.add_listener(listen)
    sizes: list[int] = []
    pending = sorted(asks, key=lambda ask: ask.at)
    async with service:
        in_hand: tuple[str, ...] = ()
        ends_at = 0.0
        while pending or in_hand:
            if in_hand and (not pending or ends_at <= pending[0].at):
                clock.advance(ends_at - clock.now)
                jobs = [service.get(job_id) for job_id in in_hand]
                seconds = pass_seconds([job.work for job in jobs])
                for job in jobs:
                    engine.finish(job.id, seconds=seconds, work=job.work)
                in_hand = ()
            else:
                ask = pending.pop(0)
                clock.advance(max(0.0, ask.at - clock.now))
                job = await service.submit(
                    PaintRequest(
                        platform="discord",
                        chat_id="chat",
                        user_id=ask.member,
                        user_name=ask.member,
                        photo=photo(ask.size, len(members)),
                        painting=painting,
                        options=PaintOptions(quality=ask.quality),
                    )
                )
                members[job.id] = ask.member
            if not in_hand and service.queue.view().order:
                # The engine is free and something waits: the queue starts a pass now.
                in_hand = await engine.wait_pass()
                sizes.append(len(in_hand))
                ends_at = clock.now + pass_seconds([service.get(i).work for i in in_hand])
        while not ended.issuperset(members):  # the last results being handed out
            changed.clear()
            await changed.wait()
    rows = [store.get_job(job_id) for job_id in members]
    store.close()
    counted = {ask.member for ask in asks if ask.counted}
    jobs = [row for row in rows if row is not None and row.user_id in counted]
    waits = [(job.started_at or 0) - job.created_at for job in jobs]
    results = [(job.finished_at or 0) - job.created_at for job in jobs]
    first = min(job.started_at or 0 for job in jobs)
    last = max(job.finished_at or 0 for job in jobs)
    return Figures(
        label=label,
        per_minute=60 * len(jobs) / (last - first),
        mean_wait=statistics.mean(waits),
        worst_wait=max(waits),
        mean_result=statistics.mean(results),
        passes=sizes,
        starts={job.user_id: (job.started_at or 0) for job in jobs},
    )


def four_members() -> list[Ask]:
    ahead = Ask(0.0, "earlier", "draft", SMALL, counted=False)
    return [ahead, *(Ask(0.01 * (i + 1), f"m{i}", "draft", SMALL) for i in range(4))]


def busy_stretch(seed: int = 7) -> list[Ask]:
    rng = random.Random(seed)
    draft = schedule.total_work(schedule.plan(*SMALL, schedule.PRESETS[("draft", "gpu")]))
    standard = schedule.total_work(schedule.plan(*LARGE, schedule.PRESETS[("standard", "gpu")]))
    mean_alone = (0.7 * draft + 0.3 * standard) * SECONDS_PER_WORK
    asks, at = [], 0.0
    for i in range(40):
        at += rng.expovariate(1 / mean_alone)
        big = rng.random() < 0.3
        asks.append(Ask(at, f"m{i}", "standard" if big else "draft", LARGE if big else SMALL))
    return asks


def report(title: str, batched: Figures, alone: Figures) -> None:
    print(f"\n{title}")
    header = (
        f"{'run':<22} {'per minute':>10} {'mean wait':>10} {'worst wait':>10} "
        f"{'mean result':>11}  passes (jobs each)"
    )
    print(header)
    print("-" * len(header))
    for figures in (batched, alone):
        print(
            f"{figures.label:<22} {figures.per_minute:>10.1f} {figures.mean_wait:>9.2f}s "
            f"{figures.worst_wait:>9.2f}s {figures.mean_result:>10.2f}s  "
            f"{' '.join(map(str, figures.passes))}"
        )
    later = max(batched.starts[m] - alone.starts[m] for m in batched.starts)
    print(
        f"throughput batched / one at a time: {batched.per_minute / alone.per_minute:.2f}x; "
        f"worst start later than one at a time: {max(0.0, later):.2f}s"
    )


async def main_async() -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        for title, asks in (
            ("4 members at 512 px (draft), all waiting when the engine comes free", four_members()),
            (
                "busy stretch: 40 members arriving at random, 70% 512 px drafts, 30% 1024 px",
                busy_stretch(),
            ),
        ):
            name = title.split(":")[0].split(" ")[0]
            batched = await run(f"{name}-batched", asks, 4, root)
            alone = await run(f"{name}-alone", asks, 1, root)
            batched.label, alone.label = "batched (max_batch 4)", "one at a time"
            report(title, batched, alone)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.batch_bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="(accepted; the run is short)")
    parser.parse_known_args(argv)
    draft = schedule.total_work(schedule.plan(*SMALL, schedule.PRESETS[("draft", "gpu")]))
    print(
        "Batching in the paint service (real service and SQLite, fake engine in virtual time).\n"
        f"Cost model: one job = its work x {SECONDS_PER_WORK:g} s (a 512 px draft: "
        f"{draft * SECONDS_PER_WORK:.2f} s); a pass of n = its largest job's time alone x "
        "(1 + (n - 1)/3). Real-GPU figure: UNMEASURED here (no GPU); bench/speed_bench.py "
        "--device cuda measures the engine's batch of 4 at 512 px against one at a time."
    )
    asyncio.run(main_async())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
