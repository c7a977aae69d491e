"""Delivery: a finished painting counts as delivered once its adapter has posted it.

DONE is written before the result is posted, and posting takes a while (an upload, flood
control, Discord's retries), so a bot that stops in between would lose the painting. Delivery is
therefore state of its own (``delivered_at`` in the store):

- A listener added with ``delivers=<platform>`` posts that platform's results and marks each
  one (:meth:`Deliveries.mark`) once the message is out.
- For a platform that no listener marks (an adapter not yet wired for it), a result counts as
  delivered once every listener has handled its ``Finished``: what adapters did before.
- A result never marked is announced again at the next start (and to a listener added later),
  read from its file when the listener gets to it.
- :meth:`Deliveries.settled` waits, for a bounded grace, until what was handed out is marked:
  a graceful shutdown's last step before the adapters close.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

from bot import timelapses
from bot.feeds import ListenerFeed
from bot.jobs import Finished, Job, JobEvent
from bot.store import Store

log = logging.getLogger(__name__)

Clock = Callable[[], float]


async def load_finished(job: Job) -> Finished | None:
    """The ``Finished`` event of a DONE job, its result read from disk off the event loop
    (and whether its timelapse is kept); None when the file can no longer be read."""
    try:
        png = await asyncio.to_thread(Path(job.result_path or "").read_bytes)
    except OSError as error:
        log.warning("job %s: its result can no longer be read (%s)", job.id, error)
        return None
    kept = await asyncio.to_thread(timelapses.kept, job.result_path)
    return Finished(job=job, result_png=png, seconds=job.seconds or 0.0, timelapse=kept)


class Deliveries:
    """Finished paintings handed to listeners and not yet delivered, in this process."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock
        self._undelivered: dict[str, Job] = {}
        self._confirming: set[str] = set()  # platforms whose listener marks its deliveries
        self._handling: Counter[str] = Counter()  # the others: listeners still at it, per job
        self._changed = asyncio.Event()

    def delivers(self, platform: str) -> None:
        """A listener marks ``platform``'s deliveries itself from now on."""
        self._confirming.add(platform)

    def finished(self, job: Job, event: Finished | None, feeds: Iterable[ListenerFeed]) -> None:
        """Hand ``job``'s ``Finished`` (``event``, or read from its file when a feed gets to
        it) to every feed, and remember it until it is delivered. Once: a job handed out
        already (found finished twice at a start, say) is not handed out again."""
        if job.id in self._undelivered:
            return
        self._undelivered[job.id] = job
        for feed in feeds:
            self._put(feed, job, event)

    def replay(self, feed: ListenerFeed) -> None:
        """Hand a new feed what is still undelivered."""
        for job in list(self._undelivered.values()):
            self._put(feed, job, None)

    def mark(self, job_id: str) -> None:
        """``job_id``'s result is out; never raises (a failed write is logged)."""
        self._undelivered.pop(job_id, None)
        self._handling.pop(job_id, None)
        try:
            self._store.mark_delivered(job_id, self._clock())
        except sqlite3.Error as error:
            log.error("job %s: could not record its delivery (%s)", job_id, error)
        self._changed.set()

    def pending(self) -> list[str]:
        """Jobs handed out whose delivery is awaited (by a marking listener, or by the
        listeners still handling them)."""
        return [
            job_id
            for job_id, job in self._undelivered.items()
            if job.platform in self._confirming or self._handling[job_id] > 0
        ]

    async def settled(self, grace: float) -> bool:
        """Wait up to ``grace`` seconds until nothing is :meth:`pending`; True if so."""
        try:
            async with asyncio.timeout(grace):
                while self.pending():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            log.warning(
                "%d paintings not delivered within %.0f s; they are posted after the restart",
                len(self.pending()),
                grace,
            )
            return False
        return True

    def _put(self, feed: ListenerFeed, job: Job, event: Finished | None) -> None:
        confirming = job.platform in self._confirming
        if not confirming:
            self._handling[job.id] += 1

        async def load() -> JobEvent | None:
            return event or await load_finished(job)

        def handled() -> None:
            if confirming or job.id not in self._handling:
                return
            self._handling[job.id] -= 1
            if self._handling[job.id] <= 0:
                self.mark(job.id)

        feed.put(load, on_handled=handled)
