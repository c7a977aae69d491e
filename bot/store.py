"""SQLite persistence: the source of truth across restarts.

One file in the data folder, WAL mode, readable by its owner only. Calls are synchronous and
short (single-row writes and indexed reads on a local file take well under a millisecond), so
the service calls them from the event loop; the housekeeping (:mod:`bot.housekeeping`) opens its
own connection in a thread for its batches. Challenge tables live in :mod:`bot.challenges` and
use :meth:`Store.connection`; the style library's (:mod:`bot.styles`) and the jobs table's later
columns (:data:`JOB_STEPS`: a blend's second painting) are made and kept up to date by
:meth:`Store.migrate`, numbered steps applied once per database.

Every query the housekeeping runs over the whole history is served by an index (a test reads
``EXPLAIN QUERY PLAN``): expired files, inputs still in use, rows to forget, undelivered
paintings. A database from an earlier version is brought up to date on open (new columns are
added; paintings finished before delivery was tracked count as delivered).
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, fields
from pathlib import Path
from typing import Final

from bot.jobs import Job, JobState
from engine import files
from engine.protocol import PaintOptions

log = logging.getLogger(__name__)

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
    purged INTEGER NOT NULL DEFAULT 0,
    delivered_at REAL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""
# After the migrations: an index may name a column that an older table gets only then.
INDEXES = """
DROP INDEX IF EXISTS jobs_state;
CREATE INDEX IF NOT EXISTS jobs_state_delivery ON jobs(state, delivered_at);
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs(platform, user_id);
CREATE INDEX IF NOT EXISTS jobs_expiry ON jobs(purged, finished_at);
CREATE INDEX IF NOT EXISTS jobs_photo ON jobs(photo_path, purged);
CREATE INDEX IF NOT EXISTS jobs_painting ON jobs(painting_path, purged);
"""
# The jobs table's later steps (Store.migrate, owner "jobs"; append-only): blends of two
# paintings keep the second one's path and name (its path indexed, as the in-use check asks).
JOB_STEPS: Final = (
    """
    ALTER TABLE jobs ADD COLUMN painting2_path TEXT;
    ALTER TABLE jobs ADD COLUMN painting2_name TEXT;
    CREATE INDEX jobs_painting2 ON jobs(painting2_path, purged);
    """,
)
# Columns added before the numbered steps: name -> how to fill existing rows (SQL), or None.
_ADDED_COLUMNS: Final = {
    # Paintings finished before delivery was tracked were delivered then.
    "delivered_at": ("REAL", "UPDATE jobs SET delivered_at = finished_at WHERE state = 'done'"),
}
_TERMINAL: Final = "('done', 'failed', 'cancelled')"

_JOB_FIELDS = [f.name for f in fields(Job)]


class StoreUnavailable(Exception):
    """The database cannot be opened (damaged, not a database, unreadable); says which file."""


class Store:
    """Jobs and small key-value facts (the ETA model) in one SQLite file."""

    EXPIRED_SQL: Final = (
        "SELECT * FROM jobs WHERE purged = 0 AND finished_at < ? "
        f"AND state IN {_TERMINAL} ORDER BY finished_at LIMIT ?"
    )
    IN_USE_SQL: Final = (
        "SELECT 1 FROM jobs WHERE purged = 0 AND photo_path = ? "
        "UNION ALL SELECT 1 FROM jobs WHERE purged = 0 AND painting_path = ? "
        "UNION ALL SELECT 1 FROM jobs WHERE purged = 0 AND painting2_path = ? LIMIT 1"
    )
    FORGETTABLE_SQL: Final = (
        "SELECT seq FROM jobs WHERE purged = 1 AND finished_at < ? ORDER BY finished_at LIMIT ?"
    )
    UNDELIVERED_SQL: Final = (
        "SELECT * FROM jobs WHERE state = 'done' AND delivered_at IS NULL ORDER BY seq"
    )

    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        self._db = connection
        self.path = path

    @classmethod
    def open(cls, path: Path, *, busy_timeout: float = 5.0) -> Store:
        """Open (or create) the database; raise :class:`StoreUnavailable` if it is unusable."""
        files.private_folder(path.parent)
        try:
            db = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=busy_timeout
            )
        except sqlite3.Error as error:
            raise StoreUnavailable(f"the database {path} cannot be opened: {error}") from None
        try:
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA foreign_keys=ON")
            db.executescript(SCHEMA)
            _migrate(db)
            db.executescript(INDEXES)
        except sqlite3.DatabaseError as error:
            db.close()
            raise StoreUnavailable(
                f"the database {path} is damaged or not a database ({error}); move it away "
                "(Atelier then starts with an empty history) or restore a backup"
            ) from None
        store = cls(db, path)
        try:
            store.migrate("jobs", JOB_STEPS)
        except StoreUnavailable:
            db.close()
            raise
        except sqlite3.DatabaseError as error:
            db.close()
            raise StoreUnavailable(
                f"the database {path} could not be brought up to date ({error}); restore a "
                "backup, or move it away (Atelier then starts with an empty history)"
            ) from None
        # SQLite gives the -wal and -shm files the database file's mode.
        for name in (path.name, f"{path.name}-wal", f"{path.name}-shm"):
            files.make_private(path.with_name(name))
        return store

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One write transaction: everything inside is committed together or not at all."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:  # also when the COMMIT itself failed
                self._db.execute("ROLLBACK")
            raise

    @property
    def connection(self) -> sqlite3.Connection:
        return self._db

    def migrate(self, owner: str, steps: Sequence[str]) -> int:
        """Bring ``owner``'s tables up to date: run the ``steps`` (SQL scripts, oldest first)
        this database has not had yet, each in one transaction with its number recorded in the
        meta table (``schema.<owner>``); returns how many ran. A step that fails leaves the
        database as it was before that step, and raises.

        Steps are append-only: a step that has shipped is never edited; a change is a new step.
        """
        key = f"schema.{owner}"
        done = int(self.get_meta(key) or 0)
        if done > len(steps):
            raise StoreUnavailable(
                f"the database {self.path} has {owner} tables from a newer version of Atelier "
                f"({done} steps; this one knows {len(steps)})"
            )
        ran = 0
        for number in range(done + 1, len(steps) + 1):
            self._db.execute("BEGIN IMMEDIATE")
            if int(self.get_meta(key) or 0) >= number:  # another connection just ran it
                self._db.execute("ROLLBACK")
                continue
            try:
                for statement in _statements(steps[number - 1]):
                    self._db.execute(statement)
                self.set_meta(key, str(number))
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            ran += 1
            log.info("database: %s tables brought to step %d", owner, number)
        return ran

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

    def expired_jobs(self, before: float, limit: int = 1_000_000) -> list[Job]:
        """Finished jobs older than ``before`` whose files have not been deleted yet, oldest
        first, at most ``limit`` of them."""
        rows = self._db.execute(self.EXPIRED_SQL, (before, limit)).fetchall()
        return [_row_to_job(r) for r in rows]

    def mark_purged(self, job_id: str) -> None:
        self._db.execute("UPDATE jobs SET purged = 1, result_path = NULL WHERE id = ?", (job_id,))

    def is_purged(self, job_id: str) -> bool:
        row = self._db.execute("SELECT purged FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return bool(row and row["purged"])

    def input_in_use(self, path: str) -> bool:
        """Whether any job whose files are kept still refers to this input file (as its
        photo, its painting or a blend's second painting)."""
        return self._db.execute(self.IN_USE_SQL, (path, path, path)).fetchone() is not None

    def forget(self, before: float, limit: int) -> int:
        """Delete up to ``limit`` rows of jobs whose files were deleted and that finished
        before ``before``: the member's name and id, the chat, the options. Returns how many."""
        return self._db.execute(
            f"DELETE FROM jobs WHERE seq IN ({self.FORGETTABLE_SQL})", (before, limit)
        ).rowcount

    # -- delivery ------------------------------------------------------------------------------

    def undelivered(self) -> list[Job]:
        """Finished paintings whose result was never posted (marked), oldest first."""
        return [_row_to_job(r) for r in self._db.execute(self.UNDELIVERED_SQL).fetchall()]

    def mark_delivered(self, job_id: str, at: float) -> None:
        self._db.execute(
            "UPDATE jobs SET delivered_at = ? WHERE id = ? AND delivered_at IS NULL", (at, job_id)
        )

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


def _migrate(db: sqlite3.Connection) -> None:
    """Add the columns an older database lacks, filling existing rows, in one transaction."""
    present = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
    missing = {name: how for name, how in _ADDED_COLUMNS.items() if name not in present}
    if not missing:
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        for name, (kind, fill) in missing.items():
            db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {kind}")
            if fill:
                db.execute(fill)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    log.info("database brought up to date: added %s", ", ".join(missing))


def _statements(script: str) -> Iterator[str]:
    """The statements of ``script`` one by one (``executescript`` would commit first)."""
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            yield pending.strip()
            pending = ""
    if pending.strip():
        raise ValueError(f"incomplete SQL statement: {pending.strip()[:60]!r}")


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
