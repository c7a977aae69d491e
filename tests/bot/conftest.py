"""Fixtures for the bot side: a real SQLite store, the service on a fake engine, fake time."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from PIL import ImageFile

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


@dataclass
class Decodes:
    """Pixel decodes attempted in this (the bot's) process."""

    calls: list[str] = field(default_factory=list)
    undo: Callable[[], None] = lambda: None

    def stop(self) -> None:
        """Let Pillow decode again (to look at what the bot sent)."""
        self.undo()


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> Decodes:
    """Pillow refuses to decode pixels in this process (and records the attempt), as the bot
    process must never decode a member's image; headers may still be read."""
    seen = Decodes()

    def refuse(image: ImageFile.ImageFile) -> None:
        seen.calls.append(f"{image.format} {image.size}")
        raise AssertionError("an image was decoded in the bot process")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)
    seen.undo = monkeypatch.undo
    return seen
