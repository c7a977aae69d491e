"""Fault injection: the real PaintService, a real SQLite file, the fake engine.

What an unlucky host does to the bot: a write that fails while a painting finishes (a full disk,
a locked database), a bot killed between a painting's end and its delivery, a shutdown in the
middle of a delivery, a second process on the same data folder, and a member sending a burst
of decode bombs.
"""

from __future__ import annotations

import asyncio
import io
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from PIL import Image

from bot import errors
from bot import service as service_module
from bot.folder_lock import FolderInUse, FolderLock
from bot.jobs import Failed, Finished, Job, JobEvent, JobState
from bot.sandbox import Sandbox
from bot.settings import Limits
from bot.store import Store
from bot.supervisor import Supervisor
from tests.bot.test_service import Deliverer, Recorder, make_service, request, settle
from tests.fakes import FakeEngine, FakeTime

ROOT = Path(__file__).parents[2]


class FaultyStore(Store):
    """A real store on a real file whose next ``fail_writes`` job writes raise ``error``."""

    fail_writes = 0
    error = "database is locked"

    def save_job(self, job: Job) -> None:
        if self.fail_writes > 0:
            self.fail_writes -= 1
            raise sqlite3.OperationalError(self.error)
        super().save_job(job)


@pytest.fixture
def faulty(data_dir: Path) -> Iterator[FaultyStore]:
    store = FaultyStore.open(data_dir / "atelier.sqlite3")
    yield store
    store.close()


# -- a write fails while a painting finishes ----------------------------------------------------


@pytest.mark.parametrize(
    "error", ["database is locked", "disk I/O error", "database or disk is full"]
)
async def test_a_failed_write_while_finishing_keeps_the_queue_going_and_tells_the_member(
    faulty: FaultyStore, data_dir: Path, clock: FakeTime, error: str
) -> None:
    engine = FakeEngine(auto=False)
    service = make_service(faulty, engine, data_dir, clock)
    recorder = Recorder()
    service.add_listener(recorder)
    async with service:
        first = await service.submit(request("a"))
        await engine.wait_started(first.id)
        faulty.error, faulty.fail_writes = error, 2  # the failure's write, and one more try
        engine.fail(first.id, "bad_image", "The photo is broken.")
        failed = await recorder.wait_for(first.id, Failed)
        assert isinstance(failed, Failed) and failed.message == "The photo is broken."
        second = await service.submit(request("b"))
        assert await engine.wait_started(second.id) == second.id  # the queue goes on
        engine.finish(second.id)
        await recorder.wait_for(second.id, Finished)
        await settle(service)
    # The write that failed was made once the database answered again.
    assert faulty.get_job(first.id).state is JobState.FAILED  # type: ignore[union-attr]
    assert faulty.get_job(second.id).state is JobState.DONE  # type: ignore[union-attr]
    assert engine.up_since is None  # and close() closed the engine


async def test_a_database_locked_by_another_connection_during_finish(
    data_dir: Path, clock: FakeTime
) -> None:
    store = Store.open(data_dir / "atelier.sqlite3", busy_timeout=0.05)
    engine = FakeEngine(auto=False)
    service = make_service(store, engine, data_dir, clock)
    recorder = Recorder()
    service.add_listener(recorder)
    other = sqlite3.connect(data_dir / "atelier.sqlite3", isolation_level=None)
    async with service:
        first = await service.submit(request("a"))
        await engine.wait_started(first.id)
        other.execute("BEGIN EXCLUSIVE")  # a backup, a careless admin's sqlite3 shell
        engine.finish(first.id)
        finished = await recorder.wait_for(first.id, Finished)
        assert isinstance(finished, Finished) and finished.result_png.startswith(b"\x89PNG")
        other.execute("ROLLBACK")
        second = await service.submit(request("b"))
        await engine.wait_started(second.id)
        engine.finish(second.id)
        await recorder.wait_for(second.id, Finished)
    other.close()
    assert store.get_job(first.id).state is JobState.DONE  # type: ignore[union-attr]
    store.close()


async def test_a_run_loop_that_keeps_dying_stops_the_process_and_close_still_closes(
    store: Store, data_dir: Path, clock: FakeTime, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def no_pause(seconds: float) -> None:
        await asyncio.sleep(0)

    supervisor = Supervisor(sleep=no_pause, max_failures=3)
    engine = FakeEngine()
    service = service_module.PaintService(
        store=store,
        engine=engine,
        limits=Limits(),
        data_dir=data_dir,
        clock=clock,
        supervisor=supervisor,
    )

    async def broken_loop() -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(service, "_run_loop", broken_loop)
    await service.start()
    failure = await asyncio.wait_for(supervisor.gave_up(), 10)
    assert failure.name == "paint-run-loop"
    await service.close()  # does not raise, and closes the engine
    assert engine.up_since is None


async def test_a_listener_stuck_at_shutdown_does_not_keep_the_engine_running(
    store: Store, data_dir: Path, clock: FakeTime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service_module, "LISTENER_CLOSE_GRACE", 0)
    engine = FakeEngine()
    service = make_service(store, engine, data_dir, clock)
    started = asyncio.Event()

    async def stuck(event: JobEvent) -> None:
        started.set()
        await asyncio.Event().wait()  # an adapter awaiting a platform that never answers

    service.add_listener(stuck)
    await service.start()
    await service.submit(request())
    await started.wait()
    await service.close()
    assert engine.up_since is None


# -- delivery across restarts -------------------------------------------------------------------


async def test_a_bot_killed_between_done_and_delivery_delivers_once_after_restart(
    data_dir: Path, clock: FakeTime
) -> None:
    path = data_dir / "atelier.sqlite3"
    first_store = Store.open(path)
    first = make_service(first_store, FakeEngine(), data_dir, clock)
    never = Deliverer(first)
    never.hold = asyncio.Event()  # the upload never gets out: the process is killed
    recorder = Recorder()
    first.add_listener(recorder)
    await first.start()
    job = await first.submit(request())
    await recorder.wait_for(job.id, Finished)

    # A new process on the same file, while the old one's state is as a kill leaves it.
    posted: list[str] = []
    for _ in range(2):  # the restart, and one more for good measure
        store = Store.open(path)
        service = make_service(store, FakeEngine(), data_dir, clock)
        deliverer = Deliverer(service)
        async with service:
            await service.drained()
            await asyncio.gather(*deliverer.posting)
        posted += deliverer.posted
        store.close()
    assert never.posted == [] and posted == [job.id]
    await never.close()
    await first.close()
    first_store.close()


async def test_a_graceful_shutdown_mid_delivery_delivers_once(
    store: Store, data_dir: Path, clock: FakeTime
) -> None:
    posted: list[str] = []
    service = make_service(store, FakeEngine(), data_dir, clock)
    deliverer = Deliverer(service)
    deliverer.hold = asyncio.Event()
    recorder = Recorder()
    service.add_listener(recorder)
    await service.start()
    job = await service.submit(request())
    await recorder.wait_for(job.id, Finished)
    await service.drained()
    # SIGTERM: the shutdown gives deliveries in flight their grace; this one gets out in it.
    settling = asyncio.create_task(service.deliveries_settled(30))
    await asyncio.sleep(0)
    deliverer.hold.set()
    assert await settling
    await deliverer.close()
    await service.close()
    posted += deliverer.posted

    again = make_service(store, FakeEngine(), data_dir, clock)
    deliverer = Deliverer(again)
    async with again:
        await again.drained()
    posted += deliverer.posted
    assert posted == [job.id]


# -- two processes on one data folder ---------------------------------------------------------


def test_a_second_process_on_the_same_data_folder_is_refused(data_dir: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys\nfrom pathlib import Path\nfrom bot.folder_lock import FolderLock\n"
            "lock = FolderLock.take(Path(sys.argv[1]))\nprint('holding', flush=True)\n"
            "sys.stdin.read()\n",
            str(data_dir),
        ],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        with pytest.raises(FolderInUse, match=str(holder.pid)):
            FolderLock.take(data_dir)
    finally:
        holder.communicate("", timeout=30)


# -- a burst of decode bombs ------------------------------------------------------------------


def decode_bomb() -> bytes:
    """A one-colour lossless WebP, 16000 x 3000: about 2 KB, about 750 MB to decode."""
    buffer = io.BytesIO()
    Image.new("RGB", (16000, 3000), (200, 30, 40)).save(buffer, "WEBP", lossless=True)
    return buffer.getvalue()


@dataclass
class Figures:
    rss_growth_mb: float = 0.0
    decoders_at_once: int = 0
    loop_lag_ms: float = 0.0


class Watch:
    """A thread sampling this process's memory and its decoder children, and a loop ticker."""

    def __init__(self) -> None:
        self.figures = Figures()
        self._stop = threading.Event()
        self._baseline = _rss_mb()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            growth = _rss_mb() - self._baseline
            self.figures.rss_growth_mb = max(self.figures.rss_growth_mb, growth)
            self.figures.decoders_at_once = max(self.figures.decoders_at_once, _decoders())
            self._stop.wait(0.002)

    async def tick(self, done: asyncio.Event) -> None:
        # Measures the loop's delay (a monitor: nothing waits on it to happen).
        while not done.is_set():
            before = time.perf_counter()
            await asyncio.sleep(0.01)
            lag = (time.perf_counter() - before - 0.01) * 1000
            self.figures.loop_lag_ms = max(self.figures.loop_lag_ms, lag)

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _decoders() -> int:
    count = 0
    for child in Path(f"/proc/{os.getpid()}/task").glob("*/children"):
        for pid in child.read_text().split():
            try:
                if b"engine.decoder" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    count += 1
            except OSError:
                continue
    return count


@pytest.mark.parametrize("per_member", [1, 8])
async def test_eight_decode_bombs_at_once_from_one_member(
    store: Store, data_dir: Path, clock: FakeTime, per_member: int
) -> None:
    bomb = decode_bomb()
    limits = Limits(per_member=per_member, queue_per_chat=10)
    service = service_module.PaintService(
        store=store,
        engine=FakeEngine(auto=False),
        limits=limits,
        data_dir=data_dir,
        clock=clock,
        sandbox=Sandbox(),
    )
    requests = [replace(request("bomber"), photo=bomb) for _ in range(8)]
    async with service:
        done = asyncio.Event()
        with Watch() as watch:
            ticker = asyncio.create_task(watch.tick(done))
            started = time.perf_counter()
            results = await asyncio.gather(
                *(service.submit(r) for r in requests), return_exceptions=True
            )
            seconds = time.perf_counter() - started
            done.set()
            await ticker
    admitted = [r for r in results if isinstance(r, Job)]
    refused = [r for r in results if isinstance(r, errors.LimitReached)]
    figures = watch.figures
    print(
        f"\n8 decode bombs, {per_member} per member: {len(admitted)} queued, {len(refused)} "
        f"refused at once, in {seconds:.2f} s; bot RSS growth {figures.rss_growth_mb:.1f} MB, "
        f"decoders at once {figures.decoders_at_once}, worst loop lag "
        f"{figures.loop_lag_ms:.1f} ms"
    )
    assert len(admitted) == min(per_member, 8) and len(admitted) + len(refused) == 8
    assert figures.decoders_at_once <= 1
    assert figures.decoders_at_once == 1  # the watch does see the decoder at work
    assert figures.rss_growth_mb < 100
    assert figures.loop_lag_ms < 100
