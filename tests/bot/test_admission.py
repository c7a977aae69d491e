"""Reservations: a member's slot is held from before the download until the submit ends."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest

from bot import errors
from bot.admission import RESERVATION_TTL
from bot.settings import Limits
from bot.store import Store
from engine import images
from tests.bot.test_service import make_service, request
from tests.fakes import FakeEngine, FakeTime


async def test_a_reservation_refuses_a_second_request_before_any_download(
    store: Store, data_dir: Path, clock: FakeTime
) -> None:
    service = make_service(store, FakeEngine(auto=False), data_dir, clock)
    async with service:
        slot = service.reserve("discord", "c1", "a")
        with pytest.raises(errors.LimitReached, match="/cancel"):
            service.reserve("discord", "c1", "a")  # nothing downloaded yet: refused at once
        with pytest.raises(errors.LimitReached):
            await service.submit(request("a"))  # the old way counts it too
        job = await service.submit(request("a"), reservation=slot)
        assert slot.released and service.position(job.id) is not None
        with pytest.raises(errors.LimitReached):  # now the job itself counts
            service.reserve("discord", "c1", "a")


async def test_a_released_reservation_frees_the_slot(
    store: Store, data_dir: Path, clock: FakeTime
) -> None:
    service = make_service(store, FakeEngine(auto=False), data_dir, clock)
    async with service:
        with service.reserve("discord", "c1", "a"):
            pass  # the download failed, say
        async with service.reserve("discord", "c1", "a") as slot:
            assert not slot.released
        assert slot.released
        await service.submit(request("a"))


async def test_reservations_count_in_the_chat_and_queue_limits(
    store: Store, data_dir: Path, clock: FakeTime
) -> None:
    engine = FakeEngine(auto=False)
    service = make_service(store, engine, data_dir, clock, Limits(queue=3, queue_per_chat=2))
    async with service:
        running = await service.submit(request("a"))
        await engine.wait_started(running.id)
        service.reserve("discord", "x", "b")
        service.reserve("discord", "x", "c")
        with pytest.raises(errors.QueueFull, match="This chat already has 2"):
            service.reserve("discord", "x", "d")
        service.reserve("discord", "y", "d")
        with pytest.raises(errors.QueueFull, match=r"queue is full \(3 paintings waiting\)"):
            service.reserve("discord", "z", "e")


async def test_a_forgotten_reservation_stops_counting(
    store: Store, data_dir: Path, clock: FakeTime
) -> None:
    service = make_service(store, FakeEngine(auto=False), data_dir, clock)
    async with service:
        forgotten = service.reserve("discord", "c1", "a")
        clock.advance(RESERVATION_TTL + 1)
        job = await service.submit(request("a"))
        assert forgotten.released and job.user_id == "a"


async def test_a_refused_image_releases_the_slot(
    store: Store, data_dir: Path, clock: FakeTime
) -> None:
    service = make_service(store, FakeEngine(auto=False), data_dir, clock)
    async with service:
        slot = service.reserve("discord", "c1", "a")
        with pytest.raises(errors.InvalidImage):
            await service.submit(replace(request("a"), photo=b"not an image"), reservation=slot)
        assert slot.released
        await service.submit(request("a"))


async def test_a_burst_from_one_member_is_checked_once(
    store: Store, data_dir: Path, clock: FakeTime, monkeypatch: pytest.MonkeyPatch
) -> None:
    checked: list[str] = []
    admit = images.admit

    def counting_admit(data: bytes, **kwargs: object) -> images.ImageInfo:
        checked.append(str(kwargs.get("role")))
        return admit(data, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(images, "admit", counting_admit)
    service = make_service(store, FakeEngine(auto=False), data_dir, clock)
    async with service:
        results = await asyncio.gather(
            *(service.submit(request("a")) for _ in range(8)), return_exceptions=True
        )
    refused = [r for r in results if isinstance(r, errors.LimitReached)]
    assert len(refused) == 7
    assert checked == ["photo", "painting"]  # one request's two images, not eight
