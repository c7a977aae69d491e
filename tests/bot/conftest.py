"""Fixtures for the bot side: a real SQLite store, the service on a fake engine, fake time."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bot.service import PaintService
from bot.settings import Limits
from bot.store import Store
from tests.fakes import FakeEngine, FakeTime


@pytest.fixture
def clock() -> FakeTime:
    """The one fake time of a test: the service's clock, and the sleeps of what waits on it."""
    return FakeTime()


@pytest.fixture
def fake_engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def store(data_dir: Path) -> Iterator[Store]:
    store = Store.open(data_dir / "atelier.sqlite3")
    yield store
    store.close()


@pytest.fixture
def limits() -> Limits:
    return Limits()


@pytest.fixture
async def service(
    store: Store, fake_engine: FakeEngine, limits: Limits, data_dir: Path, clock: FakeTime
) -> AsyncIterator[PaintService]:
    service = PaintService(
        store=store, engine=fake_engine, limits=limits, data_dir=data_dir, clock=clock
    )
    await service.start()
    yield service
    await service.close()
