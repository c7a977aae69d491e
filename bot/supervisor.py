"""The supervisor: long-lived tasks that a single exception cannot end.

The run loop, the housekeeping loop, the challenge deadlines: each runs for the life of the
process, and each already catches what it expects. The supervisor is the layer under that:

    supervisor = Supervisor()
    handle = supervisor.spawn("paint-run-loop", service_loop)   # a coroutine function
    ...
    await handle.stop()                                          # the owner's close()

- A task that raises (anything but cancellation) is logged with its traceback, waits a moment
  (:data:`BACKOFF`, longer each time) and is started again from its function.
- A task that fails more than ``max_failures`` times within ``window`` seconds is not started
  again: the supervisor gives up. :meth:`Supervisor.gave_up` returns then, with the
  :class:`TaskKeepsFailing` that says which task; ``python -m bot`` waits for it and stops with
  a non-zero exit status, so that Docker or systemd start a fresh process.
- A task that returns is finished; nothing restarts it.
- Stopping never raises: a task that died is stopped like one that runs, so an owner's
  ``close()`` always goes on to close what it owns.

The clock and the sleep are injected, so tests decide how time passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Final

log = logging.getLogger(__name__)

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
Body = Callable[[], Awaitable[None]]

BACKOFF: Final = (1.0, 2.0, 5.0, 10.0, 30.0)  # seconds before the 1st, 2nd, ... restart
MAX_FAILURES: Final = 5
WINDOW: Final = 600.0


class TaskKeepsFailing(Exception):
    """A supervised task failed too often; the process should stop and be started again."""

    def __init__(self, name: str, failures: int, window: float) -> None:
        super().__init__(
            f"the task {name} failed {failures} times within {window:.0f} s; stopping so that "
            "the service manager starts Atelier again"
        )
        self.name = name


class Supervised:
    """One supervised task: its name, whether it still runs, and how to stop it."""

    def __init__(self, name: str, task: asyncio.Task[None]) -> None:
        self.name = name
        self._task = task

    @property
    def running(self) -> bool:
        return not self._task.done()

    async def finished(self) -> None:
        """Wait until the task ends by itself (returned, or given up on)."""
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.shield(self._task)

    async def stop(self) -> None:
        """Cancel the task and wait for it; never raises (also not for a task that died)."""
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task


class Supervisor:
    """Starts long-lived tasks, restarts one that dies, gives up on one that keeps dying."""

    def __init__(
        self,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        backoff: tuple[float, ...] = BACKOFF,
        max_failures: int = MAX_FAILURES,
        window: float = WINDOW,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._backoff = backoff
        self._max_failures = max_failures
        self._window = window
        self._failure: TaskKeepsFailing | None = None
        self._failed = asyncio.Event()
        self.restarts = 0  # tasks started again after a failure, all together

    def spawn(self, name: str, body: Body) -> Supervised:
        """Run ``body()`` as a supervised task named ``name``."""
        task = asyncio.get_running_loop().create_task(self._keep(name, body), name=name)
        return Supervised(name, task)

    @property
    def failure(self) -> TaskKeepsFailing | None:
        """Set once the supervisor has given up on a task."""
        return self._failure

    async def gave_up(self) -> TaskKeepsFailing:
        """Wait until a task failed too often; returns what to tell the admin."""
        await self._failed.wait()
        assert self._failure is not None
        return self._failure

    async def _keep(self, name: str, body: Body) -> None:
        failures: list[float] = []
        while True:
            try:
                await body()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("the task %s failed", name)
            now = self._clock()
            failures = [t for t in failures if now - t < self._window] + [now]
            if len(failures) > self._max_failures:
                self._failure = TaskKeepsFailing(name, len(failures), self._window)
                log.critical("%s", self._failure)
                self._failed.set()
                return
            delay = self._backoff[min(len(failures), len(self._backoff)) - 1]
            log.warning("restarting the task %s in %.0f s", name, delay)
            await self._sleep(delay)
            self.restarts += 1
