"""Fakes at the seams: time, an in-process engine and a scripted engine process."""

from __future__ import annotations

import asyncio
import io
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

from PIL import Image

from engine import protocol
from engine.client import EngineCrashed, JobOutcome, JobUpdate, OutcomeHandler


class FakeTime:
    """Time that moves only when a test says so: a clock and a ``sleep`` on it.

    Calling it reads the clock (unix seconds, also usable as a monotonic clock). A ``sleep``
    ends when :meth:`advance` moves the clock past its end; with ``auto=True`` every sleep
    moves the clock itself and ends at once (to wait out flood control without waiting).
    ``slept`` records every sleep asked for.
    """

    def __init__(self, start: float = 1_800_000_000.0, *, auto: bool = False) -> None:
        self.now = start
        self.auto = auto
        self.slept: list[float] = []
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        if self.auto:
            self.now += seconds
            await asyncio.sleep(0)
            return
        future = asyncio.get_running_loop().create_future()
        entry = (self.now + seconds, future)
        self._sleepers.append(entry)
        try:
            await future
        finally:
            self._sleepers.remove(entry)

    def advance(self, seconds: float) -> None:
        """Move the clock; the sleeps that fall due end."""
        self.now += seconds
        for deadline, future in list(self._sleepers):
            if deadline <= self.now and not future.done():
                future.set_result(None)

    @property
    def sleeping(self) -> int:
        return len(self._sleepers)


def png_bytes(
    size: tuple[int, int] = (48, 40), color: tuple[int, int, int] = (200, 60, 30)
) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


def jpeg_bytes(
    size: tuple[int, int] = (48, 40), color: tuple[int, int, int] = (30, 60, 200)
) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "JPEG")
    return buffer.getvalue()


# Stand-ins for the engine's timelapse files: a RIFF/WEBP header and an MP4 ftyp box.
TIMELAPSE_WEBP = b"RIFF\x24\x00\x00\x00WEBPVP8X" + bytes(24)
TIMELAPSE_MP4 = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + bytes(16)


def write_timelapse(
    job: protocol.PaintJob, webp: bytes, mp4: bytes
) -> protocol.TimelapsePaths | None:
    """Write a job's timelapse files where the engine does, when it asked for one."""
    if not job.timelapse:
        return None
    paths = protocol.timelapse_paths(job.result_path)
    Path(paths.webp).write_bytes(webp)
    Path(paths.mp4).write_bytes(mp4)
    return paths


@dataclass
class _Run:
    job: protocol.PaintJob
    on_update: Callable[[JobUpdate], None]
    outcome: asyncio.Future[JobOutcome | Exception] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class FakeEngine:
    """An in-process engine for service and adapter tests.

    ``auto=True`` paints every job at once: ``steps`` progress updates (with a preview on each)
    then a real PNG. ``auto=False`` leaves each job running until the test calls
    :meth:`progress`, :meth:`finish`, :meth:`fail` or :meth:`crash`. ``max_batch`` is what it
    says it can paint in one pass (as ``EngineReady`` does); every pass it was given is in
    ``passes`` (job ids), each job of a pass reported on its own, as the real engine does. A
    :meth:`crash` of any job of a pass is the whole engine dying under the pass.
    """

    def __init__(
        self, *, auto: bool = True, steps: int = 3, device_kind: str = "cpu", max_batch: int = 1
    ) -> None:
        self.auto = auto
        self.steps = steps
        self.device: str | None = None
        self.device_kind = device_kind
        self.max_batch = max_batch
        self.up_since: float | None = None
        self.starts = 0
        self.restarts = 0
        self.cancels: list[str] = []
        self.seen: list[protocol.PaintJob] = []
        self.passes: list[tuple[str, ...]] = []
        self.pins: dict[str, str] = {}  # pinned painting path -> quality
        self.timelapse_bytes = (TIMELAPSE_WEBP, TIMELAPSE_MP4)  # what finish() writes
        self._runs: dict[str, _Run] = {}
        self._started = asyncio.Queue[str]()
        self._passes_started = asyncio.Queue[tuple[str, ...]]()

    async def start(self) -> None:
        self.starts += 1
        self.device = "fake:0"
        self.up_since = time.time()

    async def restart(self) -> None:
        self.restarts += 1
        await self.start()

    async def close(self) -> None:
        self.up_since = None

    def pin_style(self, painting_path: str, quality: str = "") -> None:
        self.pins[painting_path] = quality

    def unpin_style(self, painting_path: str) -> None:
        self.pins.pop(painting_path, None)

    async def run_batch(
        self,
        jobs: Sequence[protocol.PaintJob],
        on_update: Callable[[JobUpdate], None],
        on_outcome: OutcomeHandler,
    ) -> None:
        runs = [_Run(job, on_update) for job in jobs]
        self.passes.append(tuple(job.job_id for job in jobs))
        self._passes_started.put_nowait(self.passes[-1])
        for run in runs:
            self._runs[run.job.job_id] = run
            self.seen.append(run.job)
            on_update(protocol.JobStarted(run.job.job_id, 48, 40, total_steps=100, total_work=0))
            self._started.put_nowait(run.job.job_id)
        if self.auto:
            for step in range(1, self.steps + 1):
                await asyncio.sleep(0)
                for run in runs:
                    if not run.outcome.done():
                        await self.progress(run.job.job_id, 100 * step / self.steps, preview=True)
            for run in runs:
                if not run.outcome.done():
                    self.finish(run.job.job_id)
        pending = list(runs)
        while pending:
            await asyncio.wait(
                [run.outcome for run in pending], return_when=asyncio.FIRST_COMPLETED
            )
            for run in [run for run in pending if run.outcome.done()]:
                pending.remove(run)
                result = run.outcome.result()
                if isinstance(result, Exception):
                    raise result
                on_outcome(result)

    async def cancel(self, job_id: str) -> None:
        self.cancels.append(job_id)
        run = self._runs.get(job_id)
        if run is not None and not run.outcome.done():
            run.outcome.set_result(protocol.JobCancelled(job_id))

    # -- test controls ---------------------------------------------------------------------

    async def wait_started(self, job_id: str | None = None) -> str:
        """Wait until a job (this one, if named) reaches the engine; returns its id."""
        while True:
            started = await asyncio.wait_for(self._started.get(), 10)
            if job_id is None or started == job_id:
                return started

    async def wait_pass(self) -> tuple[str, ...]:
        """Wait until the next pass reaches the engine (in the order they came); its job ids."""
        return await asyncio.wait_for(self._passes_started.get(), 10)

    async def progress(
        self, job_id: str, percent: float, *, preview: bool = False, eta: float | None = None
    ) -> None:
        run = self._runs[job_id]
        run.on_update(
            protocol.JobProgress(
                job_id=job_id,
                step=round(percent),
                total_steps=100,
                scale=0 if percent < 50 else 1,
                scales=2,
                elapsed=1.0,
                eta=eta,
                losses={"style": 1.0, "content": 2.0},
                preview_jpeg=jpeg_bytes() if preview else None,
            )
        )
        await asyncio.sleep(0)

    def finish(
        self,
        job_id: str,
        seconds: float = 2.0,
        work: int = 64 * 48 * 100,
        *,
        timelapse: bool = True,
    ) -> None:
        """The job is done: its PNG written, and its timelapse's two files when it asked for
        one (``timelapse=False``: it could not be made)."""
        run = self._runs[job_id]
        Path(run.job.result_path).write_bytes(png_bytes((64, 48), (90, 140, 60)))
        made = write_timelapse(run.job, *self.timelapse_bytes) if timelapse else None
        run.outcome.set_result(
            protocol.JobDone(
                job_id,
                run.job.result_path,
                64,
                48,
                seconds,
                steps=100,
                work=work,
                timelapse_webp=made.webp if made else None,
                timelapse_mp4=made.mp4 if made else None,
            )
        )

    def fail(
        self, job_id: str, code: str = "bad_image", message: str = "The photo is broken."
    ) -> None:
        self._runs[job_id].outcome.set_result(protocol.JobFailed(job_id, code, message))

    def crash(self, job_id: str) -> None:
        self._runs[job_id].outcome.set_result(EngineCrashed("fake engine died"))


# -- a scripted engine *process* for EngineClient tests ----------------------------------------

SEED_CRASH_ALWAYS = 13
SEED_CRASH_ONCE = 7
SEED_HANG = 99
SEED_WAIT_FOR_GO = 21  # paints once a file "<result path>.go" exists (at most 30 s)


def fake_worker(config: protocol.EngineConfig, conn: Connection) -> None:
    """Speaks the engine protocol without torch. The seed option picks a behaviour."""
    _scripted_engine(conn, max_batch=1)


def fake_batching_worker(config: protocol.EngineConfig, conn: Connection) -> None:
    """:func:`fake_worker` saying, as a GPU engine does, that it paints up to 4 jobs at once."""
    _scripted_engine(conn, max_batch=4)


def _scripted_engine(conn: Connection, max_batch: int) -> None:
    """A ``PaintBatch``'s jobs are painted together step by step, each reported on its own;
    a crash or hang seed in any job of a pass takes the whole process."""
    conn.send(protocol.EngineReady(pid=os.getpid(), device="fake", kind="cpu", max_batch=max_batch))
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if isinstance(message, protocol.Shutdown):
            return
        if isinstance(message, protocol.PinStyle | protocol.UnpinStyle):
            # Each pin is noted beside its painting (tests read what reached the engine).
            with open(message.painting_path + ".pins", "a", encoding="utf-8") as log:
                log.write(f"{type(message).__name__} {os.getpid()}\n")
            if isinstance(message, protocol.PinStyle):
                conn.send(protocol.StyleWarmed(message.painting_path, 0.01))
            continue
        if isinstance(message, protocol.PaintJob):
            jobs: tuple[protocol.PaintJob, ...] = (message,)
        elif isinstance(message, protocol.PaintBatch):
            jobs = message.jobs
        else:
            continue
        for job in jobs:
            conn.send(
                protocol.JobStarted(job.job_id, 64, 48, total_steps=5, total_work=64 * 48 * 5)
            )
        for job in jobs:
            seed = job.options.seed
            marker = Path(job.result_path + ".crashed")
            if seed == SEED_CRASH_ALWAYS or (seed == SEED_CRASH_ONCE and not marker.exists()):
                marker.touch()
                os._exit(3)
            if seed == SEED_HANG:
                time.sleep(3600)
            go, waited = Path(job.result_path + ".go"), 0.0
            while seed == SEED_WAIT_FOR_GO and not go.exists() and waited < 30:
                time.sleep(0.01)
                waited += 0.01
        painting = {job.job_id: job for job in jobs}
        for step in range(1, 6):
            time.sleep(0.02)
            while conn.poll():
                other = conn.recv()
                if isinstance(other, protocol.CancelJob) and other.job_id in painting:
                    del painting[other.job_id]
                    conn.send(protocol.JobCancelled(other.job_id))
            for job_id in painting:
                conn.send(protocol.JobProgress(job_id, step, 5, 0, 1, elapsed=0.02 * step, eta=0.1))
        for job in painting.values():
            Path(job.result_path).write_bytes(png_bytes((64, 48)))
            made = write_timelapse(job, TIMELAPSE_WEBP, TIMELAPSE_MP4)
            conn.send(
                protocol.JobDone(
                    job.job_id,
                    job.result_path,
                    64,
                    48,
                    0.1,
                    5,
                    64 * 48 * 5,
                    timelapse_webp=made.webp if made else None,
                    timelapse_mp4=made.mp4 if made else None,
                )
            )
