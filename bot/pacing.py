"""How often a status message may change: one pacer for every platform, one "sleep until woken".

A status message (:class:`Paced`) belongs to a *lane*, the unit a platform rate-limits (a chat
or a channel). The :class:`Pacer` edits the messages of a lane by these rules, and only these:

- an edit is made only when what a member would see changed, never the same edit twice;
- edits in one lane are at least ``interval`` apart; what changes in between is coalesced (the
  latest state wins) and goes out when the interval has passed, except a change of state
  (queued, started, done, ...), which skips the interval;
- flood control (or an outage) blocks the whole lane until the platform says it may go on;
- a lost message (deleted, or no longer editable) gets no more edits; its job carries on.

The platform supplies the edit itself (``edit(message) -> what is shown now``), raising
:class:`Blocked` or :class:`Lost`. The pacer also runs the platform's other work on a job
(posting results) as tasks it can wait for and close, and :func:`nap` is the one way anything
here sleeps until a time passes or it is woken.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine, Hashable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


async def nap(sleep: Sleep, seconds: float | None, wake: asyncio.Event) -> None:
    """Sleep ``seconds`` with ``sleep`` (None: for good), or until ``wake`` is set."""
    waker = asyncio.ensure_future(wake.wait())
    sleeper = asyncio.ensure_future(sleep(seconds)) if seconds is not None else None
    try:
        await asyncio.wait(
            {waker, *([sleeper] if sleeper else [])}, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        waker.cancel()
        if sleeper is not None:
            sleeper.cancel()


class Blocked(Exception):
    """The platform takes no edits in this lane for ``seconds`` (flood control, an outage).

    None: for the pacer's own pause before trying again.
    """

    def __init__(self, seconds: float | None = None) -> None:
        super().__init__(seconds)
        self.seconds = seconds


class Lost(Exception):
    """The message is gone, or can no longer be edited."""


@dataclass(eq=False, kw_only=True)
class Paced:
    """One status message under the pacer; a platform adds what it shows.

    ``wanted()`` is what a member should see now (comparable, hashable); ``shown`` what the
    message shows. ``final``: the job is over, so the message is forgotten once it shows its
    last state (or is lost).
    """

    key: str  # the job id
    lane: Hashable
    posted: bool = False
    lost: bool = False
    final: bool = False
    shown: Hashable | None = None
    urgent: bool = False  # its job changed state since it was last shown: skip the interval

    def wanted(self) -> Hashable:
        raise NotImplementedError

    @property
    def due(self) -> bool:
        return self.posted and not self.lost and self.wanted() != self.shown


@dataclass(eq=False)
class _Lane:
    last_edit: float = float("-inf")
    blocked_until: float = float("-inf")
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    task: asyncio.Task[None] | None = None


P = TypeVar("P", bound=Paced)


class Pacer(Generic[P]):
    """Keeps status messages in step with their jobs, lane by lane, by the rules above."""

    def __init__(
        self,
        edit: Callable[[P], Awaitable[Hashable]],
        *,
        clock: Clock,
        sleep: Sleep,
        interval: float,
        retry_pause: float = 0.0,
    ) -> None:
        self._edit = edit
        self._clock = clock
        self._sleep = sleep
        self.interval = interval
        self._retry_pause = max(interval, retry_pause)  # after an outage
        self._messages: dict[str, P] = {}
        self._lanes: dict[Hashable, _Lane] = {}
        self._work: set[asyncio.Task[None]] = set()
        self._napping: set[asyncio.Task[Any]] = set()
        self._closed = False

    # -- messages ------------------------------------------------------------------------------

    def get(self, key: str) -> P | None:
        return self._messages.get(key)

    def add(self, message: P) -> P:
        self._messages[message.key] = message
        return message

    def changed(self, message: P, *, urgent: bool) -> None:
        """What ``message`` should show changed; ``urgent``: its job changed state."""
        if self._closed:
            return
        lane = self._lane(message.lane)
        if urgent:
            message.urgent = True
            lane.wake.set()
        if lane.task is None or lane.task.done():
            lane.task = asyncio.create_task(self._run(message.lane), name=f"pace-{message.lane}")

    def posted(self, message: P, shown: Hashable) -> None:
        """``message`` was just sent showing ``shown``: its next edit waits for the interval."""
        message.posted = True
        message.shown = shown
        message.urgent = message.urgent and message.due  # changed again while being sent
        self._lane(message.lane).last_edit = self._clock()
        self.changed(message, urgent=False)

    # -- lanes ---------------------------------------------------------------------------------

    def lock(self, lane: Hashable) -> asyncio.Lock:
        """Held while a lane's messages are edited; hold it to send a message in the lane."""
        return self._lane(lane).lock

    def block(self, lane: Hashable, seconds: float) -> None:
        """Flood control answered in ``lane``: nothing goes out there for ``seconds``."""
        self._lane(lane).blocked_until = self._clock() + seconds

    async def unblocked(self, lane: Hashable) -> None:
        """Wait until flood control lets ``lane`` send again."""
        wait = self._lane(lane).blocked_until - self._clock()
        if wait > 0:
            await self.pause(wait)

    def _lane(self, key: Hashable) -> _Lane:
        return self._lanes.setdefault(key, _Lane())

    def _in(self, lane: Hashable) -> list[P]:
        return [m for m in self._messages.values() if m.lane == lane]

    async def _run(self, key: Hashable) -> None:
        """Edit the lane's due messages, no sooner than the interval or flood control allow."""
        lane = self._lane(key)
        try:
            while due := [m for m in self._in(key) if m.due]:
                now = self._clock()
                ready = lane.blocked_until
                if not any(m.urgent for m in due):
                    ready = max(ready, lane.last_edit + self.interval)
                if ready > now:
                    lane.wake.clear()
                    await self._nap(ready - now, lane.wake)
                    continue
                async with lane.lock:
                    for message in self._in(key):
                        if lane.blocked_until > self._clock():
                            break  # the rest wait with the loop above
                        if message.due:
                            await self._edit_one(lane, message)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("status edits in %s stopped", key)
        for message in self._in(key):  # a lost message is kept until its job ends
            if message.final and (message.lost or (message.posted and not message.due)):
                self._messages.pop(message.key, None)

    async def _edit_one(self, lane: _Lane, message: P) -> None:
        urgent, message.urgent = message.urgent, False  # a change during the edit sets it again
        try:
            shown = await self._edit(message)
        except Blocked as blocked:
            message.urgent = message.urgent or urgent
            pause = self._retry_pause if blocked.seconds is None else blocked.seconds
            lane.blocked_until = self._clock() + pause
            return
        except Lost:
            message.lost = True
            return
        lane.last_edit = self._clock()
        message.shown = shown

    # -- other work on jobs --------------------------------------------------------------------

    def spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        """Run ``work`` (posting a result, ...) as a task that :meth:`close` stops."""

        async def guarded() -> None:
            try:
                await work
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s failed", name)

        task = asyncio.create_task(guarded(), name=name)
        self._work.add(task)
        task.add_done_callback(self._work.discard)

    async def pause(self, seconds: float) -> None:
        """Back off before trying the platform again (news about the job does not cut it short)."""
        await self._nap(seconds, None)

    async def _nap(self, seconds: float, wake: asyncio.Event | None) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._napping.add(task)
        try:
            if wake is None:
                await self._sleep(seconds)
            else:
                await nap(self._sleep, seconds, wake)
        finally:
            self._napping.discard(task)

    @property
    def idle(self) -> bool:
        """Every task waits for time to pass or for news (for tests and orderly shutdown)."""
        for lane in self._lanes.values():
            task = lane.task
            busy = task is not None and not task.done()
            if busy and (task not in self._napping or lane.wake.is_set()):
                return False
        return all(task.done() or task in self._napping for task in self._work)

    async def close(self) -> None:
        self._closed = True
        tasks = [*self._work, *(lane.task for lane in self._lanes.values() if lane.task)]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
