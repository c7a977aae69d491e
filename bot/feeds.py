"""Listener feeds: each listener of the service gets its own queue and task.

A slow chat platform never holds up the engine or the other listeners: events are put on the
feed at once, in order, and its task hands them to the listener one by one. A listener that
raises is logged and given the next event; a feed whose task died is started again on the next
event; closing gives the listener a bounded time to finish what is queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from bot.jobs import JobEvent

log = logging.getLogger(__name__)

Listener = Callable[[JobEvent], Awaitable[None]]
Item = JobEvent | Callable[[], Awaitable[JobEvent | None]]


class ListenerFeed:
    """One listener's own queue and task: events in order, failures logged and skipped.

    An item is an event, or a coroutine function giving one (or None: nothing to send) when
    the feed gets to it, so a replayed painting is read from disk only then. ``on_handled``
    runs once the listener has handled the item (or failed on it).
    """

    def __init__(self, listener: Listener) -> None:
        self._listener = listener
        self._queue: asyncio.Queue[tuple[Item, Callable[[], None] | None] | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        with contextlib.suppress(RuntimeError):  # no running loop yet: started on first event
            self._start()

    def _start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._drain(), name="paint-listener")

    def put(self, item: Item, *, on_handled: Callable[[], None] | None = None) -> None:
        if self._task is None:
            self._start()
        elif self._task.done() and not self._closing:
            log.error("a listener's feed had stopped; starting it again")
            self._start()
        self._queue.put_nowait((item, on_handled))

    async def _drain(self) -> None:
        while True:
            entry = await self._queue.get()
            try:
                if entry is None:
                    return
                await self._handle(*entry)
            finally:
                self._queue.task_done()

    async def _handle(self, item: Item, on_handled: Callable[[], None] | None) -> None:
        event: JobEvent | None = None
        try:
            event = item if isinstance(item, JobEvent) else await item()
            if event is not None:
                await self._listener(event)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception(
                "listener failed on %s",
                f"{type(event).__name__} for job {event.job.id}" if event else "a replay",
            )
        finally:
            if on_handled is not None:
                try:
                    on_handled()
                except Exception:
                    log.exception("after a listener's event")

    async def join(self) -> None:
        """Wait until every event so far has been handled."""
        await self._queue.join()

    async def close(self, grace: float) -> None:
        """Let the listener handle what is queued, for at most ``grace`` seconds, then stop."""
        self._closing = True
        if self._task is None or self._task.done():
            return
        self._queue.put_nowait(None)
        finished, _ = await asyncio.wait({self._task}, timeout=grace)
        if not finished:
            log.warning("a listener was still busy %.0f s into the shutdown; stopped", grace)
            self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task
