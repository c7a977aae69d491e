"""Housekeeping: files after the retention period, rows after ATELIER_FORGET_DAYS, in a thread."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from bot import errors, housekeeping
from bot.jobs import Finished, JobState
from bot.settings import Limits
from bot.store import Store
from tests.bot.test_service import Recorder, make_service, request
from tests.bot.test_store import sample_job
from tests.fakes import FakeEngine, FakeTime

DAY = 24 * 3600


async def test_records_are_forgotten_some_days_after_their_files(
    store: Store, data_dir: Path, clock: FakeTime
) -> None:
    limits = Limits(retention_hours=1, forget_days=2)
    service = make_service(store, FakeEngine(), data_dir, clock, limits)
    recorder = Recorder()
    service.add_listener(recorder)
    async with service:
        job = await service.submit(request())
        await recorder.wait_for(job.id, Finished)
        clock.advance(2 * 3600)
        assert await service.purge_expired() == 1
        assert store.get_job(job.id) is not None  # the files went; the record stays a while
        clock.advance(2 * DAY)
        await service.purge_expired()
        assert store.get_job(job.id) is None  # the member's name and id are gone
        with pytest.raises(errors.JobNotFound):
            await service.reroll(job.id, user_id="u1", user_name="x", change="softer")


async def test_the_sweep_runs_in_a_thread_of_its_own(
    store: Store, data_dir: Path, clock: FakeTime, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[int] = []
    sweep = housekeeping.sweep

    def recording(*args: object, **kwargs: object) -> housekeeping.SweepReport:
        threads.append(threading.get_ident())
        return sweep(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(housekeeping, "sweep", recording)
    async with make_service(store, FakeEngine(), data_dir, clock) as service:
        await service.purge_expired()
    assert threads and threads[0] != threading.get_ident()


def test_a_claimed_input_survives_the_sweep_until_released(tmp_path: Path) -> None:
    database, inputs = tmp_path / "atelier.sqlite3", tmp_path / "inputs"
    inputs.mkdir()
    store = Store.open(database)
    photo, painting = inputs / "p.img", inputs / "q.img"
    for path in (photo, painting):
        path.write_bytes(b"x")
    old = replace(
        sample_job("old", state=JobState.DONE),
        photo_path=str(photo),
        painting_path=str(painting),
        finished_at=10.0,
    )
    store.insert_job(old)
    claims = housekeeping.InputClaims()
    with claims.locked():  # a new request brings the same photo, its row not yet written
        claims.hold([str(photo)])
    report = housekeeping.sweep(database, inputs, claims, files_before=100.0, rows_before=0.0)
    assert report.purged == 1 and report.inputs == 1
    assert photo.exists() and not painting.exists()
    claims.release([str(photo)])  # the request was refused after all: nobody uses the photo
    report = housekeeping.sweep(database, inputs, claims, files_before=100.0, rows_before=0.0)
    assert report.inputs == 1 and not photo.exists()
    store.close()


def test_partial_files_of_failed_writes_are_cleaned_up(tmp_path: Path) -> None:
    database, inputs = tmp_path / "atelier.sqlite3", tmp_path / "inputs"
    inputs.mkdir()
    Store.open(database).close()
    stale = inputs / ".abc.img.1234.part"
    fresh = inputs / ".def.img.5678.part"  # a write in progress right now
    stale.write_bytes(b"half")
    fresh.write_bytes(b"half")
    an_hour_ago = time.time() - housekeeping.PARTIAL_AGE - 60
    os.utime(stale, (an_hour_ago, an_hour_ago))
    housekeeping.sweep(
        database, inputs, housekeeping.InputClaims(), files_before=0.0, rows_before=0.0
    )
    assert not stale.exists() and fresh.exists()
