"""Housekeeping as history grows: the hourly purge at 100k and 300k job rows, before and after.

A data folder as a busy bot has it after months: ``rows`` jobs in SQLite, nearly all long
finished and purged, and 100 that have just expired, each with its result and its own photo on
disk (paintings shared five ways). On its own copy of the same data each way of purging deletes
those files while a 10 ms ticker measures how long the event loop is held:

- ``before``: what the bot did: the hourly purge on the event loop, one query for all expired
  jobs, then per job an update and an "is this input still used" query, on the indexes the
  table had then (state; platform and member), so each of those is a pass over the table;
- ``after``: :func:`bot.housekeeping.sweep` in a thread on its own connection, in batches of
  200, on the indexes the store creates now; the ``forget`` step finds nothing to forget here
  (every row is recent enough), so the figures compare the same work.

Printed per size and way: seconds for the purge, the worst event-loop lag during it, and what
was deleted (the same in both: 100 results, 100 photos, 20 paintings).
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bot import housekeeping
from bot.store import Store

SIZES = (100_000, 300_000)
QUICK_SIZES = (20_000, 60_000)
EXPIRED = 100
SHARING = 5  # expired jobs per painting
NOW = 2_000_000_000.0
DAY = 24 * 3600.0
OLD_INDEXES = (
    "DROP INDEX IF EXISTS jobs_state_delivery",
    "DROP INDEX IF EXISTS jobs_expiry",
    "DROP INDEX IF EXISTS jobs_photo",
    "DROP INDEX IF EXISTS jobs_painting",
    "CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state)",
)


@dataclass
class Figures:
    way: str
    rows: int
    seconds: float
    worst_lag_ms: float
    purged: int
    files_left: int


def build(folder: Path, rows: int) -> Path:
    """A database of ``rows`` jobs and the files of the ``EXPIRED`` that just expired."""
    inputs, results = folder / "inputs", folder / "results"
    inputs.mkdir(parents=True)
    results.mkdir()
    database = folder / "atelier.sqlite3"
    store = Store.open(database)
    columns = (
        "id, platform, chat_id, user_id, user_name, options, state, created_at, photo_path, "
        "painting_path, photo_name, painting_name, width, height, work, finished_at, "
        "result_path, purged, delivered_at"
    )
    marks = ", ".join("?" for _ in columns.split(", "))
    history = rows - EXPIRED

    def row(index: int) -> tuple[object, ...]:
        expired = index >= history
        finished = NOW - (4 * DAY if expired else 10 * DAY - index * 0.01)
        photo = inputs / f"photo-{index}.img"
        painting = inputs / f"painting-{index // SHARING}.img"
        result = results / f"job-{index}.png" if expired else None
        return (
            f"job-{index}",
            "discord",
            f"chat-{index % 50}",
            f"member-{index % 2000}",
            f"Member {index % 2000}",
            "{}",
            "done",
            finished - 60,
            str(photo),
            str(painting),
            "photo.jpg",
            "painting.jpg",
            640,
            480,
            1000,
            finished,
            str(result) if result else None,
            0 if expired else 1,
            finished,
        )

    with store.transaction():
        store.connection.executemany(
            f"INSERT INTO jobs ({columns}) VALUES ({marks})", (row(i) for i in range(rows))
        )
    store.close()
    for index in range(history, rows):
        (inputs / f"photo-{index}.img").write_bytes(b"photo")
        (inputs / f"painting-{index // SHARING}.img").write_bytes(b"painting")
        (results / f"job-{index}.png").write_bytes(b"result")
    return database


def purge_before(database: Path, cutoff: float) -> int:
    """The purge as the bot ran it: on the event loop, with the queries and indexes of then."""
    db = sqlite3.connect(database, isolation_level=None)
    db.row_factory = sqlite3.Row
    rows = db.execute(
        "SELECT * FROM jobs WHERE purged = 0 AND finished_at IS NOT NULL AND finished_at < ? "
        "AND state IN ('done', 'failed', 'cancelled') ORDER BY seq",
        (cutoff,),
    ).fetchall()
    for row in rows:
        if row["result_path"]:
            Path(row["result_path"]).unlink(missing_ok=True)
        db.execute("UPDATE jobs SET purged = 1, result_path = NULL WHERE id = ?", (row["id"],))
        for path in (row["photo_path"], row["painting_path"]):
            in_use = db.execute(
                "SELECT 1 FROM jobs WHERE purged = 0 AND (photo_path = ? OR painting_path = ?) "
                "LIMIT 1",
                (path, path),
            ).fetchone()
            if in_use is None:
                Path(path).unlink(missing_ok=True)
    db.close()
    return len(rows)


async def measure(work: Callable[[], object]) -> tuple[float, float]:
    """Run ``work()`` (a coroutine function) with a 10 ms ticker: seconds, worst lag in ms."""
    done = asyncio.Event()
    worst = 0.0

    async def ticker() -> None:
        nonlocal worst
        while not done.is_set():
            before = time.perf_counter()
            await asyncio.sleep(0.01)
            worst = max(worst, time.perf_counter() - before - 0.01)

    ticking = asyncio.create_task(ticker())
    await asyncio.sleep(0.05)
    started = time.perf_counter()
    result = work()
    if asyncio.iscoroutine(result):
        await result
    seconds = time.perf_counter() - started
    done.set()
    await ticking
    return seconds, worst * 1000


def files_left(folder: Path) -> int:
    return sum(1 for _ in (folder / "results").iterdir()) + sum(
        1 for _ in (folder / "inputs").iterdir()
    )


async def run_way(way: str, rows: int) -> Figures:
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "data"
        database = build(folder, rows)  # the same data each time, at this way's own paths
        cutoff = NOW - 72 * 3600
        purged = 0
        if way == "before":
            db = sqlite3.connect(database, isolation_level=None)
            for statement in OLD_INDEXES:
                db.execute(statement)
            db.close()

            async def on_the_loop() -> None:
                nonlocal purged
                purged = purge_before(database, cutoff)

            seconds, lag = await measure(on_the_loop)
        else:

            async def in_a_thread() -> None:
                nonlocal purged
                report = await asyncio.to_thread(
                    housekeeping.sweep,
                    database,
                    folder / "inputs",
                    housekeeping.InputClaims(),
                    files_before=cutoff,
                    rows_before=NOW - 365 * DAY,
                )
                purged = report.purged

            seconds, lag = await measure(in_a_thread)
        return Figures(way, rows, seconds, lag, purged, files_left(folder))


async def run(sizes: tuple[int, ...]) -> list[Figures]:
    figures = []
    for rows in sizes:
        for way in ("before", "after"):
            figures.append(await run_way(way, rows))
    return figures


def report(figures: list[Figures]) -> None:
    print(
        f"The hourly purge of {EXPIRED} expired jobs (their results, photos and shared "
        "paintings) in a history of N job rows"
    )
    header = f"{'rows':>8} {'way':<7} {'purge':>9} {'worst loop lag':>15} {'purged':>7} {'left':>5}"
    print(header)
    print("-" * len(header))
    for f in figures:
        print(
            f"{f.rows:>8} {f.way:<7} {f.seconds:>8.2f}s {f.worst_lag_ms:>12.0f} ms "
            f"{f.purged:>7} {f.files_left:>5}"
        )
    print("  before: on the event loop, unindexed; after: bot.housekeeping.sweep in a thread")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.purge_bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="20k and 60k rows")
    parser.add_argument("--rows", type=int, nargs="*", help="history sizes to try")
    args, _ = parser.parse_known_args(argv)
    sizes = tuple(args.rows) if args.rows else QUICK_SIZES if args.quick else SIZES
    report(asyncio.run(run(sizes)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
