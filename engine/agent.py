"""The GPU-host agent of the scaled mode: claims jobs from Redis and paints them on its devices.

``python -m engine agent --redis URL --devices cuda:0,cuda:1`` (or ``atelier-agent``). One
engine process per device through :class:`engine.client.EngineClient` (the same spawn, pipe,
crash and cancel handling as the embedded bot); engine processes never talk to Redis. Per
device, with the stable consumer name ``<host>:<device>``:

- claim only when the device is free (prefetch 0: late binding keeps fairness and ETAs right);
  an idle device waits for a "wake" message (sent on every admission) or polls every 2 s;
- fetch the inputs' blobs (photo, painting, a blend's second painting) into the work folder
  and paint (with a timelapse when the job asks); forward progress at most once a second, plus
  every preview, scale change and note;
- renew the lease every few seconds while painting; a renewal that finds the lease taken stops
  the painting (the host was presumed dead), one that finds a cancel request cancels it;
- a cancel also arrives at once by pub/sub; the engine stops within one iteration;
- finish: the result (and its timelapse's two files) go up as blobs, then the fenced finish
  script; a refusal means the job was given to another host meanwhile, and this result is
  dropped;
- the engine dying under a job sends it back to the queue (it fails after 3 deliveries); a job
  past its time limit is stopped and fails.

Besides: a liveness key per device (15 s expiry, refreshed every 5 s), the reaper (every agent
takes back jobs whose lease ran out), and Prometheus metrics when a port is given. SIGTERM or
Ctrl-C: stop claiming, hand the jobs in hand back to the queue (uncounted) and exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from redis.exceptions import RedisError

from engine import protocol, redis_jobs
from engine.client import (
    EngineClient,
    EngineCrashed,
    EngineUnavailable,
    JobOutcome,
    JobUpdate,
    WorkerTarget,
)
from engine.metrics import Metrics, MetricsServer
from engine.redis_jobs import Claimed, RedisJobs, check_cancelled

log = logging.getLogger("engine.agent")

REAPER: Final = "reaper"
DIGEST: Final = re.compile(r"[0-9a-f]{64}")
INPUTS_LOST: Final = (
    "The photo or painting of this job expired before a GPU was free. Please send it again."
)
TIMEOUT: Final = (
    "This painting took longer than the {minutes:.0f}-minute limit and was stopped. "
    "Try quality=draft or a smaller photo."
)


@dataclass(frozen=True)
class AgentSettings:
    redis_url: str
    devices: tuple[str, ...]
    host: str = field(default_factory=socket.gethostname)
    weights: str | None = None
    work_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "atelier-agent")
    lease: float = redis_jobs.LEASE
    renew_every: float = 5.0
    reap_every: float = 5.0
    alive_every: float = 5.0
    alive_ttl: float = 15.0
    progress_every: float = 1.0
    poll_every: float = 2.0
    metrics_port: int | None = None
    max_input_bytes: int = 20 * 1024 * 1024
    log_level: str = "INFO"


class _Device:
    def __init__(self, name: str, host: str, engine: EngineClient) -> None:
        self.name = name
        self.consumer = f"{host}:{name}"
        self.engine = engine
        self.wake = asyncio.Event()
        self.job: Claimed | None = None
        self.lost = False  # the lease of the job in hand was taken
        self.releasing = False  # the agent is stopping: hand the job back


class Agent:
    def __init__(
        self,
        settings: AgentSettings,
        *,
        target: WorkerTarget | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics("agent")
        self._clock = clock
        self._client = redis_jobs.connect(settings.redis_url)
        self.jobs = RedisJobs(self._client, lease=settings.lease)
        self._inputs = settings.work_dir / "inputs"
        self._results = settings.work_dir / "results"
        self.devices = [
            _Device(
                name,
                settings.host,
                EngineClient(
                    protocol.EngineConfig(
                        device=name,
                        weights=settings.weights,
                        max_input_bytes=settings.max_input_bytes,
                        log_level=settings.log_level,
                    ),
                    target=target,
                ),
            )
            for name in settings.devices
        ]
        self._stopping = False
        self.redis_ok = True
        self.metrics_server: MetricsServer | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Paint until ``stop`` is set; then hand back the jobs in hand and shut down."""
        self._inputs.mkdir(parents=True, exist_ok=True)
        self._results.mkdir(parents=True, exist_ok=True)
        if self.settings.metrics_port is not None:
            self.metrics_server = self.metrics.serve(
                self.settings.metrics_port, health=lambda: self.redis_ok and self._any_engine_up()
            )
        await self._start_engines()
        background = [
            asyncio.create_task(self.metrics.watch_loop(), name="agent-loop-lag"),
            asyncio.create_task(self._listen(), name="agent-pubsub"),
            asyncio.create_task(self._reap_loop(), name="agent-reaper"),
            asyncio.create_task(self._alive_loop(), name="agent-alive"),
        ]
        painters = [
            asyncio.create_task(self._device_loop(device), name=f"agent-{device.name}")
            for device in self.devices
        ]
        log.info("agent %s up: %s", self.settings.host, ", ".join(d.consumer for d in self.devices))
        try:
            await stop.wait()
        finally:
            self._stopping = True
            for device in self.devices:
                device.wake.set()
                if device.job is not None:
                    device.releasing = True
                    await device.engine.cancel(device.job.job_id)
            await asyncio.wait(painters, timeout=30)
            # The pub/sub listener sees the flag within a second; the rest only sleep.
            await asyncio.wait(background[1:2], timeout=3)
            for task in [*painters, *background]:
                task.cancel()
            await asyncio.wait([*painters, *background], timeout=5)
            for device in self.devices:
                with contextlib.suppress(RedisError, OSError):
                    await self.jobs.clear_alive(device.consumer)
                await device.engine.close()
            await self._client.aclose()
            if self.metrics_server is not None:
                self.metrics_server.close()
            log.info("agent %s stopped", self.settings.host)

    # -- engines -------------------------------------------------------------------------------

    async def _start_engines(self) -> None:
        results = await asyncio.gather(
            *(device.engine.start() for device in self.devices), return_exceptions=True
        )
        reasons = []
        for device, result in zip(self.devices, results, strict=True):
            if isinstance(result, BaseException):
                reason = result.message if isinstance(result, EngineUnavailable) else repr(result)
                log.error("engine on %s cannot start: %s", device.name, reason)
                reasons.append(f"{device.name}: {reason}")
        if not self._any_engine_up():
            raise EngineUnavailable(
                "no_device", "no engine could start (" + "; ".join(reasons) + ")"
            )

    def _any_engine_up(self) -> bool:
        return any(device.engine.up_since is not None for device in self.devices)

    async def _restart(self, device: _Device) -> bool:
        self.metrics.engine_restarted(device.name)
        try:
            await device.engine.restart()
            return True
        except Exception as error:
            log.error("engine on %s did not restart: %r", device.name, error)
            return False

    # -- one device ----------------------------------------------------------------------------

    async def _device_loop(self, device: _Device) -> None:
        delay = 1.0
        while not self._stopping:
            if device.engine.up_since is None and not await self._restart(device):
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60.0)
                continue
            try:
                claimed = await self.jobs.claim(device.consumer)
                self.redis_ok, delay = True, 1.0
            except (RedisError, OSError) as error:
                self._redis_down(error)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            finally:
                check_cancelled()
            if claimed is None:
                device.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(device.wake.wait(), self.settings.poll_every)
                continue
            try:
                await self._paint(device, claimed)
            finally:
                device.job, device.lost, device.releasing = None, False, False

    async def _paint(self, device: _Device, claimed: Claimed) -> None:
        log.info(
            "job %s claimed by %s (attempt %d)", claimed.job_id, device.consumer, claimed.attempt
        )
        device.job = claimed
        if self._stopping:  # claimed just as the agent was told to stop
            await self._finish(device, claimed, redis_jobs.Release())
            return
        try:
            photo = await self._input(claimed.photo)
            painting = await self._input(claimed.painting)
            painting2 = await self._input(claimed.painting2) if claimed.painting2 else None
        except RedisError as error:
            self._redis_down(error)
            await self._finish(device, claimed, redis_jobs.Release())
            return
        if photo is None or painting is None or (claimed.painting2 and painting2 is None):
            await self._finish(device, claimed, redis_jobs.Failed("inputs_lost", INPUTS_LOST))
            return
        result_path = self._results / f"{claimed.job_id}-{claimed.attempt}.png"
        job = protocol.PaintJob(
            job_id=claimed.job_id,
            photo_path=str(photo),
            painting_path=str(painting),
            result_path=str(result_path),
            options=claimed.options,
            preview_every=claimed.preview_every,
            painting2_path=str(painting2) if painting2 is not None else None,
            timelapse=claimed.timelapse,
        )
        forwarder = _Forwarder(self.jobs, claimed, self.settings.progress_every, self._clock)
        renewer = asyncio.create_task(self._renew_loop(device, claimed))
        started = self._clock()
        outcome: redis_jobs.Finish
        try:
            async with asyncio.timeout(claimed.timeout):
                finished = await device.engine.run(job, forwarder.on_update)
            outcome = await self._outcome(device, finished)
        except TimeoutError:
            log.warning("job %s exceeded its time limit of %.0fs", claimed.job_id, claimed.timeout)
            await device.engine.cancel(claimed.job_id)
            await self._restart(device)  # the next job starts on a clean engine
            outcome = redis_jobs.Failed("timeout", TIMEOUT.format(minutes=claimed.timeout / 60))
        except EngineCrashed as error:
            log.error("job %s: engine on %s died (%s)", claimed.job_id, device.name, error)
            await self._restart(device)
            outcome = redis_jobs.Retry("engine_crashed")
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
            await forwarder.close()
        if device.lost:
            log.warning("job %s: the lease was taken meanwhile; result dropped", claimed.job_id)
        await self._finish(device, claimed, outcome, seconds=self._clock() - started)
        await asyncio.to_thread(_remove_result, result_path)

    async def _outcome(self, device: _Device, finished: JobOutcome) -> redis_jobs.Finish:
        if isinstance(finished, protocol.JobDone):
            data = await asyncio.to_thread(Path(finished.result_path).read_bytes)
            digest = await self.jobs.put_blob(data, ttl=redis_jobs.RESULT_TTL)
            # The timelapse goes up beside the result, both files or none.
            animations = {"timelapse_webp": "", "timelapse_mp4": ""}
            if finished.timelapse_webp and finished.timelapse_mp4:
                for name, path in (
                    ("timelapse_webp", finished.timelapse_webp),
                    ("timelapse_mp4", finished.timelapse_mp4),
                ):
                    made = await asyncio.to_thread(Path(path).read_bytes)
                    animations[name] = await self.jobs.put_blob(made, ttl=redis_jobs.RESULT_TTL)
            return redis_jobs.Done(
                result=digest,
                seconds=finished.seconds,
                work=finished.work,
                width=finished.width,
                height=finished.height,
                **animations,
            )
        if isinstance(finished, protocol.JobFailed):
            return redis_jobs.Failed(finished.code, finished.message)
        if device.releasing:
            return redis_jobs.Release()
        return redis_jobs.Cancelled()

    async def _finish(
        self,
        device: _Device,
        claimed: Claimed,
        outcome: redis_jobs.Finish,
        seconds: float | None = None,
    ) -> None:
        """Report the outcome; through a Redis outage, retry until the lease decides."""
        delay = 0.5
        while True:
            try:
                state = await self.jobs.finish(device.consumer, claimed, outcome)
                break
            except (RedisError, OSError) as error:
                self._redis_down(error)
                if self._stopping and delay > 4:
                    log.error("job %s: outcome not delivered, Redis unreachable", claimed.job_id)
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        self.redis_ok = True
        if state == "refused":
            self.metrics.late_result()
            log.warning(
                "job %s: late result refused (%s no longer holds it)",
                claimed.job_id,
                device.consumer,
            )
            return
        log.info("job %s: %s on %s", claimed.job_id, state, device.consumer)
        if state == "queued":
            self.metrics.job_requeued(
                "released" if isinstance(outcome, redis_jobs.Release) else "engine_crashed"
            )
        else:
            reason = outcome.code if isinstance(outcome, redis_jobs.Failed) else ""
            self.metrics.job_finished(state, reason, seconds)

    async def _renew_loop(self, device: _Device, claimed: Claimed) -> None:
        while True:
            await asyncio.sleep(self.settings.renew_every)
            try:
                renewal = await self.jobs.renew(device.consumer, claimed)
            except (RedisError, OSError) as error:
                self._redis_down(error)
                continue  # keep painting; the finish will tell whether the lease held
            finally:
                check_cancelled()
            if not renewal.owned:
                device.lost = True
                await device.engine.cancel(claimed.job_id)
                return
            if renewal.cancel_by:
                await device.engine.cancel(claimed.job_id)

    async def _input(self, digest: str) -> Path | None:
        if not DIGEST.fullmatch(digest):  # a file name from Redis: never a path
            log.error("input digest %r is not a SHA-256; treated as lost", digest[:80])
            return None
        path = self._inputs / f"{digest}.img"
        if path.is_file():
            return path
        data = await self.jobs.get_blob(digest)
        if data is None:
            return None
        partial = path.with_name(f"{digest}.{secrets.token_hex(4)}.part")
        await asyncio.to_thread(partial.write_bytes, data)
        partial.replace(path)
        return path

    # -- background ----------------------------------------------------------------------------

    async def _listen(self) -> None:
        """Cancel requests and wake-ups by pub/sub, on a connection of their own."""
        keys = self.jobs.keys
        while not self._stopping:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(keys.cancel_channel, keys.wake_channel)
                for device in self.devices:
                    device.wake.set()  # anything admitted while we were away
                while not self._stopping:
                    message = await pubsub.get_message(timeout=1.0)
                    check_cancelled()
                    if message is None:
                        continue
                    channel, data = message["channel"].decode(), message["data"].decode()
                    if channel == keys.cancel_channel:
                        await self._cancel(data)
                    else:
                        for device in self.devices:
                            device.wake.set()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as error:
                self._redis_down(error)
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async def _cancel(self, job_id: str) -> None:
        for device in self.devices:
            if device.job is not None and device.job.job_id == job_id:
                log.info("job %s: cancel requested", job_id)
                await device.engine.cancel(job_id)

    async def _reap_loop(self) -> None:
        while True:
            try:
                reaped = await self.jobs.reap(REAPER)
                if reaped.requeued or reaped.failed or reaped.cancelled:
                    log.warning(
                        "took back jobs of lost hosts: %d requeued, %d failed, %d cancelled",
                        reaped.requeued,
                        reaped.failed,
                        reaped.cancelled,
                    )
                    for _ in range(reaped.requeued):
                        self.metrics.job_requeued("host_lost")
            except (RedisError, OSError) as error:
                self._redis_down(error)
            check_cancelled()
            await asyncio.sleep(self.settings.reap_every)

    async def _alive_loop(self) -> None:
        while True:
            try:
                for device in self.devices:
                    if device.engine.up_since is None:
                        continue
                    info = {
                        "device": device.engine.device or device.name,
                        "kind": device.engine.device_kind,
                        "job": device.job.job_id if device.job else "",
                    }
                    await self.jobs.set_alive(device.consumer, info, self.settings.alive_ttl)
                self.metrics.set_devices_alive(await self.jobs.devices_alive())
                waiting = len(await self.jobs.waiting())
                self.metrics.set_queue(waiting, await self.jobs.running())
                self.redis_ok = True
            except (RedisError, OSError) as error:
                self._redis_down(error)
            check_cancelled()
            await asyncio.sleep(self.settings.alive_every)

    def _redis_down(self, error: BaseException) -> None:
        if self.redis_ok:
            log.warning("Redis unreachable (%s); retrying", error)
        self.redis_ok = False


class _Forwarder:
    """Engine updates -> the bot's event stream, in order, at most one progress a second plus
    every preview, scale change and note. Best effort: a lost progress event is not retried."""

    def __init__(
        self, jobs: RedisJobs, claimed: Claimed, every: float, clock: Callable[[], float]
    ) -> None:
        self._jobs = jobs
        self._claimed = claimed
        self._every = every
        self._clock = clock
        self._last_sent: float | None = None
        self._last_scale = -1
        self._queue: asyncio.Queue[dict[str, str | bytes] | None] = asyncio.Queue()
        self._task = asyncio.create_task(self._drain(), name="agent-forwarder")

    def on_update(self, update: JobUpdate) -> None:
        base: dict[str, str | bytes] = {
            "job": self._claimed.job_id,
            "attempt": str(self._claimed.attempt),
        }
        if isinstance(update, protocol.JobStarted):
            self._queue.put_nowait(
                {**base, "type": redis_jobs.PLANNED, "total_work": str(update.total_work)}
            )
            return
        now = self._clock()
        due = (
            self._last_sent is None
            or now - self._last_sent >= self._every
            or update.preview_jpeg is not None
            or update.note is not None
            or update.scale != self._last_scale
            or update.step >= update.total_steps
        )
        if not due:
            return
        self._last_sent, self._last_scale = now, update.scale
        event = {
            **base,
            "type": redis_jobs.PROGRESS,
            "percent": f"{update.percent:.2f}",
            "scale": str(update.scale),
            "scales": str(update.scales),
            "eta": "" if update.eta is None else f"{update.eta:.1f}",
        }
        if update.note:
            event["note"] = update.note
        if update.preview_jpeg:
            event["preview"] = update.preview_jpeg
        self._queue.put_nowait(event)

    async def _drain(self) -> None:
        while (event := await self._queue.get()) is not None:
            try:
                await self._jobs.emit(self._claimed.bot, event)
            except (RedisError, OSError) as error:
                log.debug("progress of job %s not sent: %s", self._claimed.job_id, error)

    async def close(self) -> None:
        self._queue.put_nowait(None)
        await self._task


def _remove_result(result_path: Path) -> None:
    """The result and its timelapse, here only until they are up in Redis."""
    timelapse = protocol.timelapse_paths(str(result_path))
    for path in (result_path, Path(timelapse.webp), Path(timelapse.mp4)):
        path.unlink(missing_ok=True)


async def run_until_signalled(
    settings: AgentSettings, *, target: WorkerTarget | None = None
) -> None:
    """Run an agent until SIGTERM or SIGINT (the command line's entry point)."""
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await Agent(settings, target=target).run(stop)
