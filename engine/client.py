"""Starts and watches the engine process; turns its messages into awaitable results.

The engine runs in its own process (``spawn``, so no CUDA state is ever forked) and owns the
device. Between the two processes travel only the plain dataclasses of :mod:`engine.protocol`,
over a ``multiprocessing`` pipe. A reader thread blocks on the pipe and hands messages to the
event loop, so the loop never blocks on the engine. When the pipe reaches end-of-file the
process has died (killed, crashed, out of memory): the jobs in hand fail with
:class:`EngineCrashed` within a second, and :meth:`EngineClient.restart` starts a fresh process.

:meth:`EngineClient.run_batch` hands the engine several jobs to paint in one pass (a
``PaintBatch``; worth it up to ``max_batch`` jobs, from ``EngineReady``) and gives each job's
updates and outcome as they come; :meth:`EngineClient.run` is a batch of one.

Pinned styles (a style library's paintings, kept warm in the engine's cache): the client
remembers every :meth:`EngineClient.pin_style` until :meth:`EngineClient.unpin_style`, and sends
them again after every ``EngineReady``, so an engine that restarted (a crash, a time limit) has
them too. The engine answers each with a ``StyleWarmed`` once it has computed the targets, at
any time between jobs; :meth:`EngineClient.warmed` waits for one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import threading
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any, Protocol

from engine import protocol

log = logging.getLogger(__name__)

JobUpdate = protocol.JobStarted | protocol.JobProgress
JobOutcome = protocol.JobDone | protocol.JobFailed | protocol.JobCancelled
WorkerTarget = Callable[[protocol.EngineConfig, Connection], None]
UpdateHandler = Callable[[JobUpdate], None]
OutcomeHandler = Callable[[JobOutcome], None]


class EngineCrashed(Exception):
    """The engine process died while a job was in hand."""


class EngineUnavailable(Exception):
    """The engine could not start (``code`` and ``message`` say why, e.g. no weights)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Engine(Protocol):
    """What the service needs from an engine; :class:`EngineClient` and test fakes provide it."""

    device: str | None
    device_kind: str
    up_since: float | None
    max_batch: int  # jobs worth painting in one pass (1: no gain from batching)

    async def start(self) -> None: ...

    async def run_batch(
        self,
        jobs: Sequence[protocol.PaintJob],
        on_update: UpdateHandler,
        on_outcome: OutcomeHandler,
    ) -> None: ...

    async def cancel(self, job_id: str) -> None: ...

    async def restart(self) -> None: ...

    async def close(self) -> None: ...

    def pin_style(self, painting_path: str, quality: str = "") -> None:
        """Keep this painting's style targets warm, now and after every restart."""
        ...

    def unpin_style(self, painting_path: str) -> None: ...


class EngineClient:
    """One engine process at a time, running ``target(config, connection)``.

    ``target`` defaults to :func:`engine.worker.main`; tests pass a scripted fake worker, which
    still runs in a real spawned process.
    """

    def __init__(
        self,
        config: protocol.EngineConfig,
        *,
        target: WorkerTarget | None = None,
        start_timeout: float = 600.0,
    ) -> None:
        self._config = config
        self._target = target
        self._start_timeout = start_timeout
        self._process: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None
        self._inbox: asyncio.Queue[protocol.FromEngine | None] = asyncio.Queue()
        self._lock = asyncio.Lock()
        self._pins: dict[str, str] = {}  # painting path -> quality, sent after every start
        self._warm: set[str] = set()  # pinned paths this engine process has warmed
        self._warm_news = asyncio.Event()
        self.device: str | None = None
        self.device_kind = "cpu"
        self.max_batch = 1
        self.up_since: float | None = None
        self.pid: int | None = None

    async def start(self) -> None:
        """Start the process and wait until its model is loaded."""
        target = self._target
        if target is None:
            from engine.worker import main as worker_main  # torch-free import: worker is lazy

            target = worker_main
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe(duplex=True)
        process = context.Process(
            target=target, args=(self._config, child), name="atelier-engine", daemon=True
        )
        process.start()
        child.close()  # so that the child's death shows up as EOF on our end
        self._process, self._conn = process, parent
        inbox: asyncio.Queue[protocol.FromEngine | None] = asyncio.Queue()
        self._inbox = inbox
        self._warm = set()
        loop = asyncio.get_running_loop()
        threading.Thread(
            target=_read_pipe,
            args=(parent, loop, lambda message: self._arrived(inbox, message)),
            daemon=True,
            name="engine-pipe",
        ).start()
        message = await asyncio.wait_for(self._next_message(), self._start_timeout)
        if isinstance(message, protocol.EngineFailed):
            await self._terminate()
            raise EngineUnavailable(message.code, message.message)
        if not isinstance(message, protocol.EngineReady):
            await self._terminate()
            raise EngineUnavailable("internal", f"engine sent {type(message).__name__} first")
        self.device, self.device_kind, self.pid = message.device, message.kind, message.pid
        self.max_batch = max(1, message.max_batch)
        self.up_since = time.time()
        log.info(
            "engine up: pid %s on %s, batches of up to %d",
            message.pid,
            message.device,
            self.max_batch,
        )
        for path, quality in self._pins.items():
            self._send_pin(protocol.PinStyle(path, quality))
        if self._pins:
            log.info("engine: %d library styles pinned", len(self._pins))

    def pin_style(self, painting_path: str, quality: str = "") -> None:
        """Pin this painting's style targets in the engine's cache (computed ahead while it is
        idle, for ``quality``; "" the engine's default), now if it runs and after every start."""
        self._pins[painting_path] = quality
        if self.up_since is not None:
            self._send_pin(protocol.PinStyle(painting_path, quality))

    def unpin_style(self, painting_path: str) -> None:
        """Let the painting pinned from this path be evicted again (its style was removed)."""
        self._warm.discard(painting_path)
        if self._pins.pop(painting_path, None) is not None and self.up_since is not None:
            self._send_pin(protocol.UnpinStyle(painting_path))

    @property
    def pinned(self) -> dict[str, str]:
        """The pinned paintings (path -> quality) this client keeps sending."""
        return dict(self._pins)

    async def warmed(self, painting_path: str) -> None:
        """Wait until the running engine has computed this pinned painting's targets."""
        while painting_path not in self._warm:
            self._warm_news.clear()
            await self._warm_news.wait()

    def _send_pin(self, message: protocol.PinStyle | protocol.UnpinStyle) -> None:
        """Pins are best effort: an engine that died gets them all again when it restarts."""
        with contextlib.suppress(OSError, EngineCrashed):
            self._send(message)

    def _arrived(
        self, inbox: asyncio.Queue[protocol.FromEngine | None], message: protocol.FromEngine | None
    ) -> None:
        """On the loop: a message from the engine (None: it ended). Warm-ups are noted at
        once, whether a job is in hand or not; the rest waits for :meth:`run_batch` or
        :meth:`start`."""
        if isinstance(message, protocol.StyleWarmed):
            if inbox is self._inbox and message.painting_path in self._pins:
                log.info("engine: style %s warm in %.2fs", message.painting_path, message.seconds)
                self._warm.add(message.painting_path)
                self._warm_news.set()
            return
        inbox.put_nowait(message)

    async def run(self, job: protocol.PaintJob, on_update: UpdateHandler) -> JobOutcome:
        """Paint one job; raise :class:`EngineCrashed` if the process dies meanwhile."""
        outcomes: list[JobOutcome] = []
        await self.run_batch([job], on_update, outcomes.append)
        return outcomes[0]

    async def run_batch(
        self,
        jobs: Sequence[protocol.PaintJob],
        on_update: UpdateHandler,
        on_outcome: OutcomeHandler,
    ) -> None:
        """Paint ``jobs`` in one pass where they can share it (one job goes as a plain
        ``PaintJob``). Each job's updates go to ``on_update`` and its outcome to ``on_outcome``
        as soon as they come; returns once every job has its outcome. Raises
        :class:`EngineCrashed` if the process dies meanwhile: the jobs without an outcome yet
        died with it."""
        if not jobs:
            return
        async with self._lock:
            left = {job.job_id for job in jobs}
            self._send(jobs[0] if len(jobs) == 1 else protocol.PaintBatch(tuple(jobs)))
            while left:
                message = await self._next_message()
                if isinstance(message, protocol.JobStarted | protocol.JobProgress):
                    if message.job_id in left:
                        on_update(message)
                elif isinstance(
                    message, protocol.JobDone | protocol.JobFailed | protocol.JobCancelled
                ):
                    if message.job_id in left:
                        left.discard(message.job_id)
                        if isinstance(message, protocol.JobDone):
                            log.info(
                                "job %s: style targets %d from the cache, %d computed",
                                message.job_id,
                                message.style_hits,
                                message.style_misses,
                            )
                        on_outcome(message)
                    else:
                        log.warning("engine finished unknown job %s; ignored", message.job_id)
                else:
                    log.warning("unexpected engine message %r; ignored", type(message).__name__)

    async def cancel(self, job_id: str) -> None:
        with contextlib.suppress(OSError, EngineCrashed):
            self._send(protocol.CancelJob(job_id))

    async def restart(self) -> None:
        await self._terminate()
        await self.start()

    async def close(self) -> None:
        if self._conn is not None and self._process is not None and self._process.is_alive():
            with contextlib.suppress(OSError, EngineCrashed):
                self._send(protocol.Shutdown())
            await asyncio.to_thread(self._process.join, 10)
        await self._terminate()

    def kill(self) -> None:
        """Kill the process outright (tests and the time limit use this)."""
        if self._process is not None and self._process.is_alive():
            self._process.kill()

    async def _next_message(self) -> protocol.FromEngine:
        message = await self._inbox.get()
        if message is None:
            self.up_since = None
            code = None
            if self._process is not None:
                # The pipe closes a moment before the process is reaped; wait for its status.
                await asyncio.to_thread(self._process.join, 5)
                code = self._process.exitcode
            raise EngineCrashed(f"engine process exited (exit code {code})")
        return message

    def _send(self, message: protocol.ToEngine) -> None:
        if self._conn is None:
            raise EngineCrashed("engine is not running")
        try:
            self._conn.send(message)
        except (BrokenPipeError, ConnectionResetError, EOFError) as error:
            raise EngineCrashed(f"engine pipe closed: {error}") from error

    async def _terminate(self) -> None:
        process, conn = self._process, self._conn
        self._process, self._conn, self.up_since = None, None, None
        if process is not None and process.is_alive():
            process.terminate()
            await asyncio.to_thread(process.join, 5)
            if process.is_alive():
                process.kill()
                await asyncio.to_thread(process.join, 5)
        if conn is not None:
            conn.close()


def _read_pipe(
    conn: Connection,
    loop: asyncio.AbstractEventLoop,
    deliver: Callable[[protocol.FromEngine | None], None],
) -> None:
    """Thread: hand every message to ``deliver`` on the loop; ``None`` marks the end of the
    process."""
    while True:
        try:
            message: Any = conn.recv()
        except (EOFError, OSError):
            break
        except Exception:  # an unpicklable message: skip it, keep the engine
            log.exception("unreadable engine message skipped")
            continue
        with contextlib.suppress(RuntimeError):  # loop closed at shutdown
            loop.call_soon_threadsafe(deliver, message)
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(deliver, None)
