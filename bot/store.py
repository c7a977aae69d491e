"""SQLite persistence: the source of truth across restarts.

One file in the data folder, WAL mode. Calls are synchronous and short (single-row writes on a
local file take well under a millisecond), so the service calls them from the event loop.
Challenge tables live in :mod:`bot.challenges` and use :meth:`Store.connection`.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import asdict, fields
from pathlib import Path

from bot.jobs import Job, JobState
from engine.protocol import PaintOptions

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    platform TEXT NOT NULL,
    chat_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    user_name TEXT NOT NULL,
    options TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at REAL NOT NULL,
    photo_path TEXT NOT NULL,
    painting_path TEXT NOT NULL,
    photo_name TEXT NOT NULL,
    painting_name TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    work INTEGER NOT NULL,
    started_at REAL,
    finished_at REAL,
    result_path TEXT,
    error_code TEXT,
    error_message TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    crashes INTEGER NOT NULL DEFAULT 0,
    status_ref TEXT,
    parent_id TEXT,
    challenge_id INTEGER,
    seconds REAL,
    turn INTEGER NOT NULL DEFAULT 0,
    purged INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs(platform, user_id);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

_JOB_FIELDS = [f.name for f in fields(Job)]


class Store:
    """Jobs and small key-value facts (the ETA model) in one SQLite file."""

    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        self._db = connection
        self.path = path

    @classmethod
    def open(cls, path: Path) -> Store:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA foreign_keys=ON")
        db.executescript(SCHEMA)
        return cls(db, path)

    @property
    def connection(self) -> sqlite3.Connection:
        return self._db

    def close(self) -> None:
        self._db.close()

    # -- jobs ----------------------------------------------------------------------------------

    def insert_job(self, job: Job) -> None:
        row = _job_to_row(job)
        names = ", ".join(row)
        marks = ", ".join(f":{name}" for name in row)
        self._db.execute(f"INSERT INTO jobs ({names}) VALUES ({marks})", row)

    def save_job(self, job: Job) -> None:
        row = _job_to_row(job)
        sets = ", ".join(f"{name} = :{name}" for name in row if name != "id")
        self._db.execute(f"UPDATE jobs SET {sets} WHERE id = :id", row)

    def get_job(self, job_id: str) -> Job | None:
        row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _row_to_job(row) if row else None

    def jobs_in(self, states: Iterable[JobState]) -> list[Job]:
        """Jobs in these states, oldest first (arrival order)."""
        wanted = [s.value for s in states]
        marks = ", ".join("?" for _ in wanted)
        rows = self._db.execute(
            f"SELECT * FROM jobs WHERE state IN ({marks}) ORDER BY seq", wanted
        ).fetchall()
        return [_row_to_job(r) for r in rows]

    def count_by_state(self) -> dict[str, int]:
        rows = self._db.execute("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state").fetchall()
        return {r["state"]: r["n"] for r in rows}

    def average_seconds(self) -> float | None:
        row = self._db.execute(
            "SELECT AVG(seconds) AS s FROM jobs WHERE state = 'done' AND seconds IS NOT NULL"
        ).fetchone()
        return float(row["s"]) if row["s"] is not None else None

    def expired_jobs(self, before: float) -> list[Job]:
        """Finished jobs older than ``before`` whose files have not been deleted yet."""
        rows = self._db.execute(
            "SELECT * FROM jobs WHERE purged = 0 AND finished_at IS NOT NULL AND finished_at < ? "
            "AND state IN ('done', 'failed', 'cancelled') ORDER BY seq",
            (before,),
        ).fetchall()
        return [_row_to_job(r) for r in rows]

    def mark_purged(self, job_id: str) -> None:
        self._db.execute("UPDATE jobs SET purged = 1, result_path = NULL WHERE id = ?", (job_id,))

    def is_purged(self, job_id: str) -> bool:
        row = self._db.execute("SELECT purged FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return bool(row and row["purged"])

    def input_in_use(self, path: str) -> bool:
        """Whether any job whose files are kept still refers to this input file."""
        row = self._db.execute(
            "SELECT 1 FROM jobs WHERE purged = 0 AND (photo_path = ? OR painting_path = ?) LIMIT 1",
            (path, path),
        ).fetchone()
        return row is not None

    # -- meta ----------------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return str(row["value"]) if row else None

    def set_meta(self, key: str, value: str) -> None:
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )


def _job_to_row(job: Job) -> dict[str, object]:
    row = asdict(job)
    row["options"] = json.dumps(asdict(job.options), sort_keys=True)
    row["state"] = job.state.value
    return row


def _row_to_job(row: sqlite3.Row) -> Job:
    values = {name: row[name] for name in _JOB_FIELDS}
    values["options"] = PaintOptions(**json.loads(row["options"]))
    values["state"] = JobState(row["state"])
    return Job(**values)
