"""Load on the paint service: 500 submissions from 100 members arriving at once.

Runs the real service, a real SQLite file and real image validation against an in-process fake
engine (each job: a few progress events with a preview, then a PNG), so what is measured is the
bot side: admission, the fair queue, persistence and event fan-out. Two runs side by side:

- ``default limits``: the shipped limits (one job per member, 50 waiting, 10 per chat), so most
  of the burst is refused, each refusal counted by its reason;
- ``generous limits``: limits wide enough to admit the whole burst, so every job runs.

Printed per run: accepted, refused (by reason), completed, lost (accepted but never finished:
must be 0), the worst event-loop lag seen by a 10 ms ticker during the run, wall seconds, and
the process's resident memory growth.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from bot.errors import UserFacingError
from bot.jobs import Cancelled, Failed, Finished, JobEvent, PaintRequest
from bot.service import PaintService
from bot.settings import Limits
from bot.store import Store
from engine.protocol import PaintOptions
from tests.fakes import FakeEngine

MEMBERS = 100
SUBMISSIONS = 500
CHATS = 20


@dataclass
class Outcome:
    label: str
    accepted: int
    refused: Counter[str]
    completed: int
    lost: int
    worst_lag_ms: float
    seconds: float
    rss_growth_mb: float


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def image(seed: int, size: tuple[int, int]) -> bytes:
    img = Image.new("RGB", size, ((seed * 37) % 256, (seed * 91) % 256, (seed * 53) % 256))
    buffer = io.BytesIO()
    img.save(buffer, "PNG")
    return buffer.getvalue()


async def lag_monitor(stop: asyncio.Event, worst: list[float]) -> None:
    tick = 0.01
    while not stop.is_set():
        before = time.perf_counter()
        await asyncio.sleep(tick)
        worst[0] = max(worst[0], time.perf_counter() - before - tick)


async def load_run(label: str, limits: Limits, submissions: int, members: int) -> Outcome:
    painting = image(999, (320, 240))
    photos = [image(m, (320, 240)) for m in range(members)]
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder)
        store = Store.open(data / "atelier.sqlite3")
        engine = FakeEngine(steps=3)
        service = PaintService(store=store, engine=engine, limits=limits, data_dir=data)
        finished: set[str] = set()
        all_done = asyncio.Event()
        accepted: set[str] = set()

        async def listen(event: JobEvent) -> None:
            if isinstance(event, Finished | Failed | Cancelled):
                finished.add(event.job.id)
                if accepted and accepted <= finished:
                    all_done.set()

        service.add_listener(listen)
        refused: Counter[str] = Counter()

        async def submit(index: int) -> None:
            member = index % members
            try:
                job = await service.submit(
                    PaintRequest(
                        platform="discord",
                        chat_id=f"chat{member % CHATS}",
                        user_id=f"member{member}",
                        user_name=f"member{member}",
                        photo=photos[member],
                        painting=painting,
                        options=PaintOptions(quality="draft"),
                    )
                )
                accepted.add(job.id)
            except UserFacingError as error:
                refused[type(error).__name__] += 1

        stop = asyncio.Event()
        worst = [0.0]
        rss_before = rss_mb()
        started = time.perf_counter()
        async with service:
            monitor = asyncio.create_task(lag_monitor(stop, worst))
            await asyncio.gather(*(submit(i) for i in range(submissions)))
            if accepted and not accepted <= finished:
                with contextlib.suppress(TimeoutError):  # then reported as lost
                    await asyncio.wait_for(all_done.wait(), timeout=300)
            await service.drained()
            stop.set()
            await monitor
        seconds = time.perf_counter() - started
        rss_after = rss_mb()
        completed = sum(1 for job_id in accepted if job_id in finished)
        store.close()
    return Outcome(
        label=label,
        accepted=len(accepted),
        refused=refused,
        completed=completed,
        lost=len(accepted) - completed,
        worst_lag_ms=worst[0] * 1000,
        seconds=seconds,
        rss_growth_mb=rss_after - rss_before,
    )


def report(outcomes: list[Outcome]) -> None:
    print(
        f"{SUBMISSIONS} submissions from {MEMBERS} members in {CHATS} chats, all at once "
        "(fake engine, real SQLite and image validation)"
    )
    header = (
        f"{'run':<16} {'accepted':>8} {'refused':>8} {'completed':>9} {'lost':>5} "
        f"{'worst lag':>10} {'wall':>7} {'RSS growth':>11}"
    )
    print(header)
    print("-" * len(header))
    for o in outcomes:
        print(
            f"{o.label:<16} {o.accepted:>8} {sum(o.refused.values()):>8} {o.completed:>9} "
            f"{o.lost:>5} {o.worst_lag_ms:>8.1f}ms {o.seconds:>6.1f}s {o.rss_growth_mb:>9.1f}MB"
        )
    for o in outcomes:
        if o.refused:
            reasons = ", ".join(f"{name} {count}" for name, count in o.refused.most_common())
            print(f"  {o.label} refusals: {reasons}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.service_bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="(accepted; the run is short)")
    parser.parse_known_args(argv)
    outcomes = [
        asyncio.run(load_run("default limits", Limits(), SUBMISSIONS, MEMBERS)),
        asyncio.run(
            load_run(
                "generous limits",
                Limits(per_member=5, queue=1000, queue_per_chat=1000),
                SUBMISSIONS,
                MEMBERS,
            )
        ),
    ]
    report(outcomes)
    lost = sum(o.lost for o in outcomes)
    if lost:
        print(f"LOST JOBS: {lost}")
    return 1 if lost else 0


if __name__ == "__main__":
    raise SystemExit(main())
