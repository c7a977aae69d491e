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


def test_a_blends_second_painting_is_kept_and_keeps_its_file_in_use(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    store = Store.open(path)
    blend = replace(
        sample_job("blend"),
        state=JobState.DONE,
        finished_at=10.0,
        painting2_path="/data/inputs/second.img",
        painting2_name="waves.jpg",
        options=PaintOptions(blend=30),
    )
    store.insert_job(blend)
    store.close()
    store = Store.open(path)
    assert store.get_job("blend") == blend
    assert store.input_in_use("/data/inputs/second.img")
    store.mark_purged("blend")
    assert not store.input_in_use("/data/inputs/second.img")


def test_meta_values_overwrite(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "s.sqlite3")
    assert store.get_meta("k") is None
    store.set_meta("k", "1")
    store.set_meta("k", "2")
    assert store.get_meta("k") == "2"


# -- delivery, migration, housekeeping queries --------------------------------------------------

OLD_SCHEMA = """
CREATE TABLE jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, platform TEXT NOT NULL,
    chat_id TEXT NOT NULL, user_id TEXT NOT NULL, user_name TEXT NOT NULL, options TEXT NOT NULL,
    state TEXT NOT NULL, created_at REAL NOT NULL, photo_path TEXT NOT NULL,
    painting_path TEXT NOT NULL, photo_name TEXT NOT NULL, painting_name TEXT NOT NULL,
    width INTEGER NOT NULL, height INTEGER NOT NULL, work INTEGER NOT NULL, started_at REAL,
    finished_at REAL, result_path TEXT, error_code TEXT, error_message TEXT,
    attempts INTEGER NOT NULL DEFAULT 0, crashes INTEGER NOT NULL DEFAULT 0, status_ref TEXT,
    parent_id TEXT, challenge_id INTEGER, seconds REAL, turn INTEGER NOT NULL DEFAULT 0,
    purged INTEGER NOT NULL DEFAULT 0
);
INSERT INTO jobs (id, platform, chat_id, user_id, user_name, options, state, created_at,
    photo_path, painting_path, photo_name, painting_name, width, height, work, finished_at)
VALUES ('old', 'discord', 'c', 'u', 'n', '{}', 'done', 1.0, 'p', 'q', 'p', 'q', 64, 48, 1, 5.0),
       ('waiting', 'discord', 'c', 'u', 'n', '{}', 'queued', 2.0, 'p', 'q', 'p', 'q', 64, 48, 1,
        NULL);
"""


def test_a_database_from_before_delivery_tracking_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "atelier.sqlite3"
    old = sqlite3.connect(path)
    old.executescript(OLD_SCHEMA)
    old.close()
    store = Store.open(path)
    columns = [row[1] for row in store.connection.execute("PRAGMA table_info(jobs)")]
    assert {"delivered_at", "painting2_path", "painting2_name"} <= set(columns)
    assert store.get_meta("schema.jobs") == "1"  # the numbered steps ran on it too
    assert store.get_job("waiting").painting2_path is None  # type: ignore[union-attr]
    # Paintings finished before the upgrade were delivered then: none is posted again.
    assert store.undelivered() == []
    assert (
        store.connection.execute("SELECT delivered_at FROM jobs WHERE id = 'old'").fetchone()[0]
        == 5.0
    )
    store.close()
    Store.open(path).close()  # a second start finds the column and changes nothing


def test_undelivered_paintings_until_marked(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "s.sqlite3")
    done = replace(sample_job("done"), state=JobState.DONE, finished_at=9.0, result_path="/r")
    store.insert_job(done)
    store.insert_job(sample_job("queued"))
    assert [j.id for j in store.undelivered()] == ["done"]
    store.mark_delivered("done", at=10.0)
    assert store.undelivered() == []
    assert store.get_job("done").delivered_at == 10.0  # type: ignore[union-attr]


def plan(store: Store, sql: str, *args: object) -> str:
    rows = store.connection.execute(f"EXPLAIN QUERY PLAN {sql}", args).fetchall()
    return " | ".join(str(row[3]) for row in rows)


def test_the_housekeeping_queries_use_indexes(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "s.sqlite3")
    for index in range(200):
        job = sample_job(f"j{index}", state=JobState.DONE)
        store.insert_job(
            replace(job, photo_path=f"/p{index}", painting_path=f"/q{index % 7}", finished_at=index)
        )
    queries = {
        "expired": (store.EXPIRED_SQL, 100.0, 10),
        "in use": (store.IN_USE_SQL, "/p1", "/p1", "/p1"),
        "forget": (store.FORGETTABLE_SQL, 100.0, 10),
        "undelivered": (store.UNDELIVERED_SQL,),
    }
    for name, (sql, *args) in queries.items():
        shown = plan(store, sql, *args)
        assert "SEARCH jobs USING" in shown and "INDEX" in shown, f"{name}: {shown}"
        assert "SCAN" not in shown, f"{name}: {shown}"  # no pass over the whole table


def test_forgetting_deletes_the_rows_of_purged_paintings_only(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "s.sqlite3")
    for job_id, finished, purged in [("a", 10.0, True), ("b", 20.0, True), ("c", 10.0, False)]:
        store.insert_job(replace(sample_job(job_id), state=JobState.DONE, finished_at=finished))
        if purged:
            store.mark_purged(job_id)
    assert store.forget(before=15.0, limit=10) == 1
    assert store.get_job("a") is None
    assert store.get_job("b") is not None and store.get_job("c") is not None


def test_the_database_is_owner_only(tmp_path: Path) -> None:
    import os
    import stat

    old = os.umask(0o022)
    try:
        store = Store.open(tmp_path / "data" / "atelier.sqlite3")
        store.insert_job(sample_job())
    finally:
        os.umask(old)
    for path in (tmp_path / "data").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE((tmp_path / "data").stat().st_mode) == 0o700


def test_a_damaged_database_is_one_clear_error(tmp_path: Path) -> None:
    import pytest

    from bot.store import StoreUnavailable

    path = tmp_path / "atelier.sqlite3"
    path.write_bytes(b"this is not a database, just some bytes" * 200)
    with pytest.raises(StoreUnavailable, match=r"atelier\.sqlite3.*(not a database|damaged)"):
        Store.open(path)


def test_a_transaction_is_all_or_nothing(tmp_path: Path) -> None:
    import pytest

    store = Store.open(tmp_path / "s.sqlite3")

    def half_made() -> None:
        with store.transaction():
            store.insert_job(sample_job("a"))
            raise OSError("the file beside it could not be written")

    with pytest.raises(OSError, match="could not be written"):
        half_made()
    assert store.get_job("a") is None and not store.connection.in_transaction
    with store.transaction():
        store.insert_job(sample_job("a"))
    assert store.get_job("a") is not None


def test_migrations_run_each_step_once_and_later_steps_on_an_older_database(
    tmp_path: Path,
) -> None:
    import pytest

    from bot.store import StoreUnavailable

    path = tmp_path / "s.sqlite3"
    first = ["CREATE TABLE things (id INTEGER PRIMARY KEY, name TEXT NOT NULL);"]
    store = Store.open(path)
    assert store.migrate("things", first) == 1
    assert store.migrate("things", first) == 0  # already there
    store.connection.execute("INSERT INTO things (name) VALUES ('kept')")
    store.close()

    # A later version adds a column (two statements in one step), on the database as it is.
    later = [*first, "ALTER TABLE things ADD COLUMN size INTEGER;\nUPDATE things SET size = 3;"]
    store = Store.open(path)
    assert store.migrate("things", later) == 1
    assert [tuple(r) for r in store.connection.execute("SELECT name, size FROM things")] == [
        ("kept", 3)
    ]
    assert store.get_meta("schema.things") == "2"

    # A step that fails leaves the database as it was before it, and is tried again next time.
    broken = [*later, "ALTER TABLE things ADD COLUMN colour TEXT;\nINSERT INTO nowhere VALUES (1);"]
    with pytest.raises(sqlite3.OperationalError, match="nowhere"):
        store.migrate("things", broken)
    columns = [row[1] for row in store.connection.execute("PRAGMA table_info(things)")]
    assert columns == ["id", "name", "size"] and not store.connection.in_transaction
    assert store.get_meta("schema.things") == "2"

    # An older version of Atelier on a newer database says so instead of guessing.
    with pytest.raises(StoreUnavailable, match="newer version"):
        store.migrate("things", first)
    store.close()
