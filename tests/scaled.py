"""Helpers for the scaled-mode tests: jobs with real input files, a scripted engine process,
agents as real processes, and a collector of the bot-side queue's updates.

``python -m tests.scaled --redis URL --host A --work-dir DIR`` runs one agent (one device,
"fake") whose engine process is :func:`scripted_worker`, with the short lease and intervals the
tests use. It is started in a process group of its own, so a test can SIGKILL the agent and its
engine process together, as a host dies.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from pathlib import Path

from bot.job_queue import QueueMoved, RunUpdate, Update
from bot.jobs import Job, JobState
from bot.scaled_queue import ScaledQueue
from engine import protocol
from engine.agent import AgentSettings, run_until_signalled
from tests.fakes import TIMELAPSE_MP4, TIMELAPSE_WEBP, jpeg_bytes, png_bytes, write_timelapse

ROOT = Path(__file__).parents[1]
SEED_CRASH = 13  # the engine process dies on this job, every time
LEASE = 2.0  # seconds; production uses 30


def slow(steps: int, delay_ms: int) -> int:
    """The seed that makes :func:`scripted_worker` paint ``steps`` steps of ``delay_ms`` each."""
    return steps * 1000 + delay_ms


def scripted_worker(config: protocol.EngineConfig, conn: Connection) -> None:
    """An engine process without torch: 5 steps of 20 ms unless the seed says otherwise
    (:func:`slow`, :data:`SEED_CRASH`); a preview on step 2; cancel checked every step; a
    timelapse when asked; a blend whose second painting is not there fails, as the engine's."""
    conn.send(protocol.EngineReady(pid=os.getpid(), device=config.device, kind="cpu"))
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if isinstance(message, protocol.Shutdown):
            return
        if not isinstance(message, protocol.PaintJob):
            continue
        job = message
        seed = job.options.seed or 0
        steps, delay = (seed // 1000, seed % 1000 / 1000) if seed >= 1000 else (5, 0.02)
        conn.send(protocol.JobStarted(job.job_id, 64, 48, steps, total_work=64 * 48 * steps))
        if seed == SEED_CRASH:
            os._exit(3)
        cancelled = False
        for step in range(1, steps + 1):
            time.sleep(delay)
            while conn.poll():
                other = conn.recv()
                if isinstance(other, protocol.CancelJob) and other.job_id == job.job_id:
                    cancelled = True
            if cancelled:
                break
            conn.send(
                protocol.JobProgress(
                    job.job_id,
                    step,
                    steps,
                    0,
                    1,
                    elapsed=delay * step,
                    eta=delay * (steps - step),
                    preview_jpeg=jpeg_bytes() if step == 2 else None,
                )
            )
        if cancelled:
            conn.send(protocol.JobCancelled(job.job_id))
            continue
        if job.painting2_path is not None and not Path(job.painting2_path).is_file():
            conn.send(protocol.JobFailed(job.job_id, "bad_image", "The second painting is gone."))
            continue
        Path(job.result_path).write_bytes(png_bytes((64, 48), (10, 200, 90)))
        made = write_timelapse(job, TIMELAPSE_WEBP, TIMELAPSE_MP4)
        conn.send(
            protocol.JobDone(
                job.job_id,
                job.result_path,
                64,
                48,
                delay * steps,
                steps,
                1,
                timelapse_webp=made.webp if made else None,
                timelapse_mp4=made.mp4 if made else None,
            )
        )


def make_job(
    folder: Path,
    job_id: str,
    *,
    user: str = "u1",
    chat: str = "c1",
    platform: str = "discord",
    seed: int | None = None,
) -> Job:
    """A queued job whose input files exist in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    photo, painting = folder / "photo.png", folder / "painting.jpg"
    if not photo.exists():
        photo.write_bytes(png_bytes((64, 48)))
        painting.write_bytes(jpeg_bytes((50, 50)))
    return Job(
        id=job_id,
        platform=platform,
        chat_id=chat,
        user_id=user,
        user_name=user,
        options=protocol.PaintOptions(quality="draft", seed=seed),
        state=JobState.QUEUED,
        created_at=time.time(),
        photo_path=str(photo),
        painting_path=str(painting),
        work=64 * 48 * 5,
    )


class Updates:
    """Runs a :class:`ScaledQueue`'s :meth:`~ScaledQueue.serve` in a task, as the service does,
    and collects what it reports; waits for an update by type and job."""

    def __init__(self, queue: ScaledQueue, known: Sequence[Job] = ()) -> None:
        self.queue = queue
        self.known = list(known)
        self.seen: list[RunUpdate] = []
        self.moves = 0  # QueueMoved reports
        self.received: dict[int, float] = {}  # id(update) -> unix time it reached the bot
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(queue.serve(self._handle, lambda: self.known))

    def _handle(self, update: Update) -> None:
        if isinstance(update, QueueMoved):
            self.moves += 1
            return
        self.received[id(update)] = time.time()
        self.seen.append(update)
        self._changed.set()

    async def wait_for(
        self,
        kind: type[RunUpdate] | tuple[type[RunUpdate], ...],
        job_id: str | None = None,
        *,
        within: float = 20.0,
        where: Callable[[RunUpdate], bool] = lambda update: True,
    ) -> RunUpdate:
        async with asyncio.timeout(within):
            while True:
                for update in self.of(kind, job_id):
                    if where(update):
                        return update
                self._changed.clear()
                await self._changed.wait()

    def of(
        self, kind: type[RunUpdate] | tuple[type[RunUpdate], ...], job_id: str | None = None
    ) -> list[RunUpdate]:
        return [u for u in self.seen if isinstance(u, kind) and job_id in (None, u.job_id)]

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


class AgentProcess:
    """``python -m tests.scaled`` in a new process group (agent + its engine process)."""

    def __init__(self, url: str, host: str, work_dir: Path, *extra: str) -> None:
        self.host = host
        self.consumer = f"{host}:fake"
        self.log = work_dir / f"agent-{host}.log"
        work_dir.mkdir(parents=True, exist_ok=True)
        args = [sys.executable, "-m", "tests.scaled", "--redis", url, "--host", host]
        args += ["--work-dir", str(work_dir / host), *extra]
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def kill_host(self) -> None:
        """SIGKILL the agent and its engine process at once, as a host dies."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        return self.process.returncode

    def output(self) -> str:
        return self.log.read_text(errors="replace")


class Agents:
    """The agent processes of a test (see the ``agents`` fixture)."""

    def __init__(self, url: str, folder: Path) -> None:
        self.url, self.folder = url, folder
        self.running: list[AgentProcess] = []

    def start(self, *hosts: str) -> list[AgentProcess]:
        started = [AgentProcess(self.url, host, self.folder) for host in hosts]
        self.running += started
        return started

    def host_of(self, consumer: str) -> AgentProcess:
        [agent] = [a for a in self.running if a.consumer == consumer]
        return agent

    def stop_all(self) -> None:
        for agent in self.running:
            agent.stop()


def agent_settings(url: str, host: str, work_dir: Path) -> AgentSettings:
    return AgentSettings(
        redis_url=url,
        devices=("fake",),
        host=host,
        work_dir=work_dir,
        lease=LEASE,
        renew_every=0.4,
        reap_every=0.25,
        alive_every=0.5,
        alive_ttl=2.0,
        poll_every=0.5,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.scaled")
    parser.add_argument("--redis", required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--work-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    settings = agent_settings(args.redis, args.host, args.work_dir)
    # By its importable name, not __main__'s: the spawned engine process imports the target.
    from tests.scaled import scripted_worker as target

    asyncio.run(run_until_signalled(settings, target=target))
    return 0


if __name__ == "__main__":
    sys.exit(main())
