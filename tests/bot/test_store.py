"""The SQLite store: a real file, reopened as after a restart."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path

from bot.jobs import Job, JobState
from bot.store import Store
from engine.protocol import PaintOptions


def sample_job(job_id: str = "j1", *, user: str = "u1", state: JobState = JobState.QUEUED) -> Job:
    return Job(
        id=job_id,
        platform="discord",
        chat_id="c1",
        user_id=user,
        user_name=f"name-{user}",
        options=PaintOptions(strength=7, quality="draft", keep_colors=True, brush="large", seed=3),
        state=state,
        created_at=1.5,
        photo_path="/data/inputs/p.img",
        painting_path="/data/inputs/q.img",
        width=640,
        height=480,
        work=12345,
    )


def test_jobs_round_trip_through_a_reopened_file(tmp_path: Path) -> None:
    path = tmp_path / "atelier.sqlite3"
    store = Store.open(path)
    job = sample_job()
    store.insert_job(job)
    store.insert_job(sample_job("j2", user="u2"))
    store.save_job(
        replace(job, state=JobState.DONE, result_path="/r.png", seconds=3.5, finished_at=9.0)
    )
    store.close()

    again = Store.open(path)
    loaded = again.get_job("j1")
    assert loaded == replace(
        job, state=JobState.DONE, result_path="/r.png", seconds=3.5, finished_at=9.0
    )
    assert [j.id for j in again.jobs_in([JobState.QUEUED])] == ["j2"]
    assert again.count_by_state() == {"done": 1, "queued": 1}
    assert again.average_seconds() == 3.5
    mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_expiry_and_input_references(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "s.sqlite3")
    old = replace(sample_job("old"), state=JobState.DONE, finished_at=10.0)
    new = replace(sample_job("new"), state=JobState.DONE, finished_at=100.0)
    store.insert_job(old)
    store.insert_job(new)
    assert [j.id for j in store.expired_jobs(before=50.0)] == ["old"]
    store.mark_purged("old")
    assert store.is_purged("old") and not store.is_purged("new")
    assert store.expired_jobs(before=50.0) == []
    assert store.input_in_use("/data/inputs/p.img")  # "new" still uses it
    store.mark_purged("new")
    assert not store.input_in_use("/data/inputs/p.img")


def test_meta_values_overwrite(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "s.sqlite3")
    assert store.get_meta("k") is None
    store.set_meta("k", "1")
    store.set_meta("k", "2")
    assert store.get_meta("k") == "2"
