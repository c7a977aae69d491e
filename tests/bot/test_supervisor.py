"""The supervisor: restarts a task that died, gives up on one that keeps dying."""

from __future__ import annotations

import asyncio

from bot.supervisor import Supervisor, TaskKeepsFailing
from tests.fakes import FakeTime


class Naps:
    """An injected sleep: records each nap, lets the clock move by it, returns at once."""

    def __init__(self, clock: FakeTime) -> None:
        self.clock = clock
        self.taken: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.taken.append(seconds)
        self.clock.advance(seconds)
        await asyncio.sleep(0)


async def test_a_task_that_fails_is_started_again_after_a_pause() -> None:
    clock = FakeTime()
    naps = Naps(clock)
    supervisor = Supervisor(clock=clock, sleep=naps, backoff=(1.0, 4.0))
    runs = 0
    done = asyncio.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs < 3:
            raise OSError("disk I/O error")
        done.set()
        await asyncio.Event().wait()  # then runs for good

    handle = supervisor.spawn("flaky", flaky)
    await asyncio.wait_for(done.wait(), 5)
    assert runs == 3 and naps.taken == [1.0, 4.0] and supervisor.restarts == 2
    assert handle.running and supervisor.failure is None
    await handle.stop()
    assert not handle.running


async def test_a_task_that_keeps_failing_makes_the_supervisor_give_up() -> None:
    clock = FakeTime()
    supervisor = Supervisor(clock=clock, sleep=Naps(clock), max_failures=3, window=600.0)

    async def broken() -> None:
        raise RuntimeError("always")

    handle = supervisor.spawn("broken", broken)
    failure = await asyncio.wait_for(supervisor.gave_up(), 5)
    assert isinstance(failure, TaskKeepsFailing) and failure.name == "broken"
    assert "broken failed 4 times" in str(failure)
    assert not handle.running
    await handle.stop()  # stopping a task that gave up does not raise


async def test_failures_far_apart_never_add_up() -> None:
    clock = FakeTime()
    supervisor = Supervisor(
        clock=clock, sleep=Naps(clock), max_failures=2, window=60.0, backoff=(100.0,)
    )
    runs = 0

    async def rarely_failing() -> None:
        nonlocal runs
        runs += 1
        if runs <= 5:
            raise RuntimeError("once in a while")

    handle = supervisor.spawn("rare", rarely_failing)
    await asyncio.wait_for(handle.finished(), 5)
    assert runs == 6 and supervisor.failure is None  # returned normally at last


async def test_a_task_that_returns_is_not_restarted() -> None:
    supervisor = Supervisor()
    runs = 0

    async def once() -> None:
        nonlocal runs
        runs += 1

    handle = supervisor.spawn("once", once)
    await asyncio.wait_for(handle.finished(), 5)
    assert runs == 1 and supervisor.restarts == 0


async def test_cancellation_is_not_a_failure() -> None:
    supervisor = Supervisor()
    handle = supervisor.spawn("waits", lambda: asyncio.Event().wait())
    await asyncio.sleep(0)
    await handle.stop()
    assert supervisor.restarts == 0 and supervisor.failure is None
