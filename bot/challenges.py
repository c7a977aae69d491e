"""Style challenges, platform-neutral: rules, SQLite tables, deadlines, standings, leaderboard.

One painting is set in a channel (or Telegram group); members paint their own photos in its
style through the normal queue; members vote; at the deadline the top three are announced.

    challenges = Challenges(store=store, service=service, data_dir=data_dir, limits=limits)
    challenges.on_closed("discord", announce)      # the adapter posts the results
    await challenges.start()                        # tables, catch-up, deadline task
    challenge = await challenges.acreate(platform=..., community_id=..., chat_id=..., ...)
    job = await challenges.enter(challenge, user_id=..., photo=..., reservation=slot)
    entry = challenges.accept(finished_event)       # the entry to post (made at DONE)
    challenges.vote(entry.id, user_id)

Rules (each refusal is a :class:`ChallengeError` with the member's message):

- One open challenge per channel (Discord: the channel it was started in, and its thread) or
  Telegram group. Durations from 10 minutes to 30 days (:func:`parse_duration`).
- A member has at most ``Limits.challenge_entries`` entries: entries that exist plus their
  challenge paintings still queued or running. Only the entrant or an organiser withdraws one;
  withdrawing deletes the entry and the votes for it.
- One vote per member per challenge: voting again moves the vote. No vote for your own entry.
  Counts are hidden from members until the end (adapters show them only to organisers).
- At ``ends_at`` (or ``end`` early) the challenge closes: entries ranked by votes, ties broken by
  the earlier entry (the announcement says so); an entry needs one vote to place. The top three
  are stored as *places* for the leaderboard (wins = first places, podiums = top-three places,
  per platform and community: Discord server or Telegram group). ``cancel`` closes with no
  places. A deadline that passed while the bot was down is closed when it starts again; an
  announcement that did not get out is tried again a few times, then at the next start.

Durability: an entry is made when its painting is finished (the class listens to the service),
not when an adapter posts it, so a bot stopped in between loses nothing: at the next start the
finished entries without a row are made before any deadline is closed, and the painting is
announced again for posting (:meth:`bot.service.PaintService.add_listener`). Creating a
challenge and making an entry each write their file whole under its final name first and then
the row in one statement or transaction; a failure removes the file, so nothing half-made stays.

When it ends, :func:`podium_picture` draws the top three side by side (in the sandbox) for the
adapters' announcements.

Files: the challenge painting is kept at ``data/challenges/<id>/painting.img`` and each entry's
painting at ``data/challenges/<id>/entry-<job id>.png`` (older ones: ``entry-<entry id>.png``),
so both outlive job retention; owner-only, like everything in the data folder. Every entry is
submitted with these same painting bytes, so the service stores the painting once and the
engine's style-target cache serves every entry.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import sqlite3
import time
from collections.abc import Awaitable, Callable, Collection, Coroutine
from pathlib import Path
from typing import Any

from bot import replies
from bot.admission import Reservation
from bot.errors import NotAllowed, UserFacingError
from bot.jobs import (
    Challenge,
    ChallengeState,
    Entry,
    Finished,
    Job,
    JobEvent,
    JobState,
    LeaderboardRow,
    Outcome,
    PaintRequest,
    Standing,
    VoteResult,
)
from bot.pacing import nap
from bot.sandbox import DecoderFailed, Sandbox
from bot.service import PaintService
from bot.settings import Limits
from bot.store import Store
from bot.supervisor import Supervised, Supervisor
from engine import files
from engine.protocol import PaintOptions

log = logging.getLogger(__name__)

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

MIN_DURATION = 10 * 60
MAX_DURATION = 30 * 24 * 3600
MAX_DURATION_DIGITS = 6  # 30 days is 43200 minutes: a longer number is out of range anyway
PODIUM = 3
# Seconds between tries of an announcement the platform refused (an outage, flood control);
# after the last one it is tried again at the next start.
ANNOUNCE_RETRY_DELAYS = (30.0, 120.0, 600.0)
DEADLINE_RETRY = 60.0  # seconds before the deadline task looks again after an error
_UNITS = {"w": 7 * 24 * 3600, "d": 24 * 3600, "h": 3600, "m": 60}
_DURATION = re.compile(r"(\d+)([wdhm])")

SCHEMA = """
CREATE TABLE IF NOT EXISTS challenges (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    platform TEXT NOT NULL,
    community_id TEXT NOT NULL,
    chat_id TEXT NOT NULL,
    thread_id TEXT,
    title TEXT NOT NULL,
    painting_path TEXT NOT NULL,
    painting_name TEXT NOT NULL,
    organiser_id TEXT NOT NULL,
    organiser_name TEXT NOT NULL,
    created_at REAL NOT NULL,
    ends_at REAL NOT NULL,
    state TEXT NOT NULL,
    closed_at REAL,
    closed_by TEXT,
    announced INTEGER NOT NULL DEFAULT 0,
    message_ref TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS challenges_one_open
    ON challenges(platform, chat_id) WHERE state = 'open';
CREATE INDEX IF NOT EXISTS challenges_ends ON challenges(state, ends_at);
CREATE TABLE IF NOT EXISTS challenge_entries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    challenge_id INTEGER NOT NULL REFERENCES challenges(id) ON DELETE CASCADE,
    job_id TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL,
    user_name TEXT NOT NULL,
    created_at REAL NOT NULL,
    image_path TEXT NOT NULL,
    message_ref TEXT
);
CREATE INDEX IF NOT EXISTS challenge_entries_by ON challenge_entries(challenge_id, user_id);
CREATE TABLE IF NOT EXISTS challenge_votes (
    challenge_id INTEGER NOT NULL REFERENCES challenges(id) ON DELETE CASCADE,
    user_id TEXT NOT NULL,
    entry_id INTEGER NOT NULL REFERENCES challenge_entries(id) ON DELETE CASCADE,
    cast_at REAL NOT NULL,
    PRIMARY KEY (challenge_id, user_id)
);
CREATE TABLE IF NOT EXISTS challenge_places (
    challenge_id INTEGER NOT NULL REFERENCES challenges(id) ON DELETE CASCADE,
    platform TEXT NOT NULL,
    community_id TEXT NOT NULL,
    place INTEGER NOT NULL,
    entry_id INTEGER NOT NULL,
    user_id TEXT NOT NULL,
    user_name TEXT NOT NULL,
    votes INTEGER NOT NULL,
    PRIMARY KEY (challenge_id, place)
);
CREATE INDEX IF NOT EXISTS challenge_places_by ON challenge_places(platform, community_id);
"""


# -- errors ------------------------------------------------------------------------------------


class ChallengeError(UserFacingError):
    """A challenge rule the member ran into; the message says which."""


class NoChallenge(ChallengeError):
    pass


class ChallengeExists(ChallengeError):
    def __init__(self, message: str, challenge: Challenge) -> None:
        super().__init__(message)
        self.challenge = challenge


class VotingClosed(ChallengeError):
    pass


class SelfVote(ChallengeError):
    pass


class EntryLimit(ChallengeError):
    pass


class BadDuration(ChallengeError):
    pass


class NotOrganiser(NotAllowed):
    pass


Announcer = Callable[[Outcome], Awaitable[None]]
# Told of every challenge that closed (not one cancelled), e.g. the style library keeping its
# painting; also at each start for those closed before, so it must be idempotent.
Ended = Callable[[Challenge], Awaitable[object]]


# -- durations ---------------------------------------------------------------------------------


def parse_duration(text: str) -> int:
    """``30m``, ``12h``, ``3d``, ``1d12h``, ``1w`` -> seconds, within 10 minutes and 30 days."""
    cleaned = text.strip().lower().replace(" ", "")
    parts = _DURATION.findall(cleaned)
    if not cleaned or "".join(n + u for n, u in parts) != cleaned:
        raise BadDuration(replies.bad_duration(text.strip()))
    if any(len(number) > MAX_DURATION_DIGITS for number, _ in parts):
        raise BadDuration(replies.DURATION_RANGE)  # weeks of minutes, or no number at all
    seconds = sum(int(number) * _UNITS[unit] for number, unit in parts)
    if not MIN_DURATION <= seconds <= MAX_DURATION:
        raise BadDuration(replies.duration_out_of_range(text.strip(), seconds))
    return seconds


# -- the service -------------------------------------------------------------------------------


class Challenges:
    """The challenge rules over SQLite, the paint service and a deadline task."""

    def __init__(
        self,
        *,
        store: Store,
        service: PaintService,
        data_dir: Path,
        limits: Limits,
        clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
        supervisor: Supervisor | None = None,
        on_ended: Ended | None = None,
    ) -> None:
        """``on_ended``: told of each challenge that closed (see :data:`Ended`)."""
        self._store = store
        self._db: sqlite3.Connection = store.connection
        self._service = service
        self._dir = data_dir / "challenges"
        self._limits = limits
        self._clock = clock
        self._sleep = sleep
        self._supervisor = supervisor or Supervisor(sleep=sleep)
        self._announcers: dict[str, Announcer] = {}
        self._on_ended = on_ended
        self._wake = asyncio.Event()
        self._task: Supervised | None = None
        self._announcing: set[asyncio.Task[None]] = set()
        # Paintings whose entry could not be posted (discard_entry): never made again, even by
        # a maker that was already writing the image when it was discarded.
        self._discarded: set[str] = set()
        self._db.executescript(SCHEMA)

    # -- life cycle ----------------------------------------------------------------------------

    def on_closed(self, platform: str, announcer: Announcer) -> None:
        """``announcer(outcome)`` posts the end of ``platform``'s challenges."""
        self._announcers[platform] = announcer

    async def start(self) -> None:
        """Make the entries finished while the bot was stopping, close what is overdue (the
        bot may have been down), retry lost announcements, and start the deadline task."""
        files.private_folder(self._dir)
        # Entries are made when their painting is finished, whoever posts them.
        self._service.add_listener(self._on_job_event)
        await self._adopt_finished()
        for challenge in self._unannounced():  # before closing: those announce themselves
            self._spawn_announcement(challenge)
        for challenge in self._ended():  # a hand-over the last run may not have finished
            self._spawn(self._hand_over(challenge), f"challenge-{challenge.id}-ended")
        await self.close_due()
        self._task = self._supervisor.spawn("challenge-deadlines", self._deadlines)

    async def close(self) -> None:
        """Stop the deadline task and the announcements in flight; never raises."""
        tasks = list(self._announcing)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._task is not None:
            await self._task.stop()
        self._task = None

    async def drained(self) -> None:
        """Wait for announcements in flight (tests)."""
        while self._announcing:
            await asyncio.gather(*self._announcing, return_exceptions=True)

    async def _deadlines(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.close_due()
                row = self._db.execute(
                    "SELECT MIN(ends_at) AS t FROM challenges WHERE state = 'open'"
                ).fetchone()
                next_deadline = row["t"]
            except Exception:
                # The database may be busy or the disk full: look again in a while.
                log.exception(
                    "closing due challenges failed; trying again in %.0f s", DEADLINE_RETRY
                )
                next_deadline = self._clock() + DEADLINE_RETRY
            due = None if next_deadline is None else max(0.0, next_deadline - self._clock())
            await nap(self._sleep, due, self._wake)  # a new challenge wakes it

    async def close_due(self) -> list[Challenge]:
        """Close every open challenge whose deadline has passed; announce each."""
        rows = self._db.execute(
            "SELECT * FROM challenges WHERE state = 'open' AND ends_at <= ? ORDER BY ends_at",
            (self._clock(),),
        ).fetchall()
        closed = []
        for row in rows:
            challenge = self._finish(_challenge(row), ChallengeState.CLOSED, by=None)
            if challenge is not None:
                closed.append(challenge)
        return closed

    # -- organisers ----------------------------------------------------------------------------

    def create(
        self,
        *,
        platform: str,
        community_id: str,
        chat_id: str,
        title: str,
        painting: bytes,
        painting_name: str,
        organiser_id: str,
        organiser_name: str,
        duration: int,
        thread_id: str | None = None,
    ) -> Challenge:
        """Store a new open challenge (the caller has checked the organiser and the image).

        Blocking (writes the painting); :meth:`acreate` does the same off the event loop.
        """
        title = self._check_new(platform, chat_id, title, duration)
        staged = files.write_private(self._staging_path(), painting)
        return self._create(
            staged,
            platform=platform,
            community_id=community_id,
            chat_id=chat_id,
            title=title,
            painting_name=painting_name,
            organiser_id=organiser_id,
            organiser_name=organiser_name,
            duration=duration,
            thread_id=thread_id,
        )

    async def acreate(
        self,
        *,
        platform: str,
        community_id: str,
        chat_id: str,
        title: str,
        painting: bytes,
        painting_name: str,
        organiser_id: str,
        organiser_name: str,
        duration: int,
        thread_id: str | None = None,
    ) -> Challenge:
        """:meth:`create`, with the painting written in a thread."""
        title = self._check_new(platform, chat_id, title, duration)
        staged = await asyncio.to_thread(files.write_private, self._staging_path(), painting)
        return self._create(
            staged,
            platform=platform,
            community_id=community_id,
            chat_id=chat_id,
            title=title,
            painting_name=painting_name,
            organiser_id=organiser_id,
            organiser_name=organiser_name,
            duration=duration,
            thread_id=thread_id,
        )

    def _check_new(self, platform: str, chat_id: str, title: str, duration: int) -> str:
        title = " ".join(title.split())
        if not title:
            raise ChallengeError(replies.NO_TITLE)
        if len(title) > 100:
            raise ChallengeError(replies.LONG_TITLE)
        if not MIN_DURATION <= duration <= MAX_DURATION:
            raise BadDuration(replies.DURATION_RANGE)
        existing = self.open_in(platform, chat_id)
        if existing is not None:
            raise self.exists_error(existing)
        return title

    def _staging_path(self) -> Path:
        files.private_folder(self._dir)
        return self._dir / f".new-{time.monotonic_ns()}.img"

    def _create(
        self,
        staged: Path,
        *,
        platform: str,
        community_id: str,
        chat_id: str,
        title: str,
        painting_name: str,
        organiser_id: str,
        organiser_name: str,
        duration: int,
        thread_id: str | None,
    ) -> Challenge:
        """The row and its painting together: one transaction, the staged file renamed into
        the challenge's folder inside it. On any failure neither is left."""
        now = self._clock()
        folder: Path | None = None
        try:
            with self._store.transaction():
                cursor = self._db.execute(
                    "INSERT INTO challenges (platform, community_id, chat_id, thread_id, title, "
                    "painting_path, painting_name, organiser_id, organiser_name, created_at, "
                    "ends_at, state) VALUES (?, ?, ?, ?, ?, '', ?, ?, ?, ?, ?, 'open')",
                    (
                        platform,
                        community_id,
                        chat_id,
                        thread_id,
                        title,
                        painting_name,
                        organiser_id,
                        organiser_name,
                        now,
                        now + duration,
                    ),
                )
                challenge_id = int(cursor.lastrowid or 0)
                folder = files.private_folder(self._dir / str(challenge_id))
                path = folder / "painting.img"
                staged.replace(path)
                self._db.execute(
                    "UPDATE challenges SET painting_path = ? WHERE id = ?",
                    (str(path), challenge_id),
                )
        except BaseException as error:
            staged.unlink(missing_ok=True)
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
            if isinstance(error, sqlite3.IntegrityError):
                existing = self.open_in(platform, chat_id)
                if existing is not None:
                    raise self.exists_error(existing) from None
            raise
        log.info(
            "challenge %d %r opened in %s/%s until %s",
            challenge_id,
            title,
            platform,
            chat_id,
            replies.utc_time(now + duration),
        )
        self._wake.set()
        return self.get(challenge_id)

    @property
    def limits(self) -> Limits:
        return self._limits

    def now(self) -> float:
        """Unix time on the challenges' clock (deadlines are measured on it)."""
        return self._clock()

    async def check_painting(self, data: bytes) -> None:
        """Refuse a challenge painting the engine could not use, before anything is posted."""
        await self._service.check_image(data, "painting")

    def exists_error(
        self, challenge: Challenge, markup: replies.Markup | None = None
    ) -> ChallengeExists:
        """The refusal of a second open challenge in one channel (dates in ``markup``)."""
        shown = markup or replies.Plain(now=self._clock())
        return ChallengeExists(replies.challenge_exists(challenge, shown), challenge)

    def set_thread(self, challenge_id: int, thread_id: str | None) -> None:
        self._db.execute(
            "UPDATE challenges SET thread_id = ? WHERE id = ?", (thread_id, challenge_id)
        )

    def set_message(self, challenge_id: int, message_ref: str | None) -> None:
        self._db.execute(
            "UPDATE challenges SET message_ref = ? WHERE id = ?", (message_ref, challenge_id)
        )

    def discard(self, challenge_id: int) -> None:
        """Remove a challenge that never got going (its announcement could not be posted)."""
        self._db.execute("DELETE FROM challenges WHERE id = ?", (challenge_id,))
        shutil.rmtree(self._dir / str(challenge_id), ignore_errors=True)

    async def end(self, challenge_id: int, *, by: str) -> Challenge:
        """Close now and announce the winners."""
        return self._close_now(challenge_id, ChallengeState.CLOSED, by)

    async def cancel(self, challenge_id: int, *, by: str) -> Challenge:
        """Close now with no winners."""
        return self._close_now(challenge_id, ChallengeState.CANCELLED, by)

    def _close_now(self, challenge_id: int, state: ChallengeState, by: str) -> Challenge:
        challenge = self._finish(self.get(challenge_id), state, by=by)
        if challenge is None:
            raise VotingClosed(replies.ALREADY_ENDED)
        return challenge

    def _finish(
        self, challenge: Challenge, state: ChallengeState, *, by: str | None
    ) -> Challenge | None:
        """Close ``challenge`` once (None if it was closed already), store places, announce."""
        with self._db:  # one transaction: the state change and the places together
            self._db.execute("BEGIN IMMEDIATE")
            changed = self._db.execute(
                "UPDATE challenges SET state = ?, closed_at = ?, closed_by = ? "
                "WHERE id = ? AND state = 'open'",
                (state.value, self._clock(), by, challenge.id),
            ).rowcount
            if not changed:
                return None
            if state is ChallengeState.CLOSED:
                for standing in self.standings(challenge.id):
                    if standing.place is None:
                        break
                    self._db.execute(
                        "INSERT INTO challenge_places (challenge_id, platform, community_id, "
                        "place, entry_id, user_id, user_name, votes) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            challenge.id,
                            challenge.platform,
                            challenge.community_id,
                            standing.place,
                            standing.entry.id,
                            standing.entry.user_id,
                            standing.entry.user_name,
                            standing.votes,
                        ),
                    )
        closed = self.get(challenge.id)
        log.info("challenge %d %s (by %s)", closed.id, state.value, by or "its deadline")
        self._spawn_announcement(closed)
        if state is ChallengeState.CLOSED:
            self._spawn(self._hand_over(closed), f"challenge-{closed.id}-ended")
        return closed

    # -- announcements -------------------------------------------------------------------------

    def outcome(self, challenge_id: int) -> Outcome:
        challenge = self.get(challenge_id)
        standings = self.standings(challenge_id)
        podium = tuple(s for s in standings if s.place is not None)
        voters = self._db.execute(
            "SELECT COUNT(*) AS n FROM challenge_votes WHERE challenge_id = ?", (challenge_id,)
        ).fetchone()["n"]
        return Outcome(
            challenge=challenge,
            podium=podium if challenge.state is ChallengeState.CLOSED else (),
            entries=len(standings),
            voters=int(voters),
            tie_broken=tie_decides_podium(standings),
        )

    def _unannounced(self) -> list[Challenge]:
        rows = self._db.execute(
            "SELECT * FROM challenges WHERE state != 'open' AND announced = 0 ORDER BY id"
        ).fetchall()
        return [_challenge(row) for row in rows]

    def _spawn_announcement(self, challenge: Challenge) -> None:
        self._spawn(self._announce(challenge), f"challenge-{challenge.id}")

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        """Run ``work`` beside the caller; :meth:`close` cancels it, :meth:`drained` waits."""
        task = asyncio.create_task(work, name=name)
        self._announcing.add(task)
        task.add_done_callback(self._announcing.discard)

    async def _hand_over(self, challenge: Challenge) -> None:
        if self._on_ended is None:
            return
        try:
            await self._on_ended(challenge)
        except Exception:
            log.exception(
                "challenge %d: its end was not handed over; again at the next start", challenge.id
            )

    def _ended(self) -> list[Challenge]:
        if self._on_ended is None:
            return []
        rows = self._db.execute(
            "SELECT * FROM challenges WHERE state = 'closed' ORDER BY id"
        ).fetchall()
        return [_challenge(row) for row in rows]

    async def _announce(self, challenge: Challenge) -> None:
        announcer = self._announcers.get(challenge.platform)
        if announcer is None:
            log.warning(
                "challenge %d ended but %s is not running; announcing at the next start",
                challenge.id,
                challenge.platform,
            )
            return
        for attempt, delay in enumerate((0.0, *ANNOUNCE_RETRY_DELAYS), start=1):
            if delay:
                await self._sleep(delay)
            try:
                await announcer(self.outcome(challenge.id))
            except Exception:
                log.exception("announcing challenge %d failed (try %d)", challenge.id, attempt)
                continue
            self._db.execute("UPDATE challenges SET announced = 1 WHERE id = ?", (challenge.id,))
            return
        log.error("challenge %d is still not announced; retrying at the next start", challenge.id)

    # -- members -------------------------------------------------------------------------------

    def entry_request(
        self,
        challenge: Challenge,
        *,
        user_id: str,
        user_name: str,
        photo: bytes,
        photo_name: str,
        options: PaintOptions,
        chat_id: str | None = None,
    ) -> PaintRequest:
        """Check the member may enter, and build the paint request for their entry.

        The request carries the challenge painting's bytes (stored once by content hash by the
        service) and ``challenge_id``; its status messages go to ``chat_id`` (default: where
        the entries are posted). Blocking (reads the painting); :meth:`enter` does not block.
        """
        self.check_may_enter(challenge, user_id)
        painting = Path(challenge.painting_path).read_bytes()
        return self._request(
            challenge, painting, user_id, user_name, photo, photo_name, options, chat_id
        )

    def check_may_enter(self, challenge: Challenge, user_id: str) -> None:
        """Raise the member's refusal (closed, entry limit) before their photo is fetched.

        :meth:`enter` checks again: the answer can change while the photo downloads.
        """
        self._check_open(challenge, replies.entries_closed(challenge.title))
        limit = self._limits.challenge_entries
        if self.entries_used(challenge.id, challenge.platform, user_id) >= limit:
            raise EntryLimit(replies.entry_limit(limit))

    def _request(
        self,
        challenge: Challenge,
        painting: bytes,
        user_id: str,
        user_name: str,
        photo: bytes,
        photo_name: str,
        options: PaintOptions,
        chat_id: str | None,
    ) -> PaintRequest:
        return PaintRequest(
            platform=challenge.platform,
            chat_id=chat_id or challenge.entries_chat,
            user_id=user_id,
            user_name=user_name,
            photo=photo,
            painting=painting,
            options=options,
            photo_name=photo_name,
            painting_name=challenge.painting_name,
            challenge_id=challenge.id,
        )

    async def enter(
        self,
        challenge: Challenge,
        *,
        user_id: str,
        user_name: str,
        photo: bytes,
        photo_name: str,
        options: PaintOptions,
        chat_id: str | None = None,
        reservation: Reservation | None = None,
    ) -> Job:
        """Queue the member's entry; it becomes an entry when the painting is finished.

        ``reservation``: the member's slot, from :meth:`bot.service.PaintService.reserve`
        before the photo was downloaded; used up (released) here whatever happens.
        """
        try:
            self.check_may_enter(challenge, user_id)
            painting = await asyncio.to_thread(Path(challenge.painting_path).read_bytes)
        except BaseException:
            if reservation is not None:
                reservation.release()
            raise
        request = self._request(
            challenge, painting, user_id, user_name, photo, photo_name, options, chat_id
        )
        return await self._service.submit(request, reservation=reservation)

    def entries_used(self, challenge_id: int, platform: str, user_id: str) -> int:
        """The member's entries plus their challenge paintings still queued or running."""
        stored = self._db.execute(
            "SELECT COUNT(*) AS n FROM challenge_entries WHERE challenge_id = ? AND user_id = ?",
            (challenge_id, user_id),
        ).fetchone()["n"]
        overview = self._service.overview()
        live = [overview.running] if overview.running is not None else []
        in_flight = sum(
            1
            for job in (*live, *overview.waiting)
            if not job.state.terminal
            and job.challenge_id == challenge_id
            and job.platform == platform
            and job.user_id == user_id
        )
        return int(stored) + in_flight

    def accept(self, event: JobEvent) -> Entry | None:
        """The entry to post for a finished challenge painting, or None (not an entry, or too
        late: the painting is then posted as an ordinary one).

        The entry is normally made already, when the painting finished; if not, it is made
        here (blocking: writes the image). An entry whose challenge has closed meanwhile is
        not posted: nobody could vote for it any more.
        """
        job = event.job
        if not isinstance(event, Finished) or job.challenge_id is None:
            return None
        if job.id in self._discarded:
            return None
        challenge = self.find(job.challenge_id)
        existing = self.entry_for_job(job.id)
        if existing is not None:
            return existing if challenge is not None and self._voting(challenge) else None
        if challenge is None or not self._eligible(job, challenge):
            log.info("job %s finished after its challenge closed; not an entry", job.id)
            return None
        path = files.write_private(self._entry_path(challenge.id, job.id), event.result_png)
        entry = self._record_entry(challenge, job, path)
        return entry if self._voting(challenge) else None

    async def adopt(self, job: Job, result_png: bytes | None = None) -> Entry | None:
        """Make the entry of a finished challenge painting (once; None if it is not one or
        finished too late), from ``result_png`` or the job's result file, off the event loop."""
        if job.challenge_id is None or job.state is not JobState.DONE or job.id in self._discarded:
            return None
        existing = self.entry_for_job(job.id)
        if existing is not None:
            return existing
        challenge = self.find(job.challenge_id)
        if challenge is None or not self._eligible(job, challenge):
            return None
        target = self._entry_path(challenge.id, job.id)
        if result_png is not None:
            path = await asyncio.to_thread(files.write_private, target, result_png)
        elif job.result_path:
            path = await asyncio.to_thread(_copy_private, Path(job.result_path), target)
        else:
            return None
        if job.id in self._discarded:  # its adapter made it, failed to post it, discarded it
            path.unlink(missing_ok=True)
            return None
        return self._record_entry(challenge, job, path)

    async def _on_job_event(self, event: JobEvent) -> None:
        if isinstance(event, Finished) and event.job.challenge_id is not None:
            await self.adopt(event.job, event.result_png)

    async def _adopt_finished(self) -> None:
        """Entries whose painting finished but whose row was never made (the bot stopped)."""
        rows = self._db.execute(
            "SELECT id FROM jobs WHERE state = 'done' AND delivered_at IS NULL "
            "AND challenge_id IS NOT NULL AND purged = 0 "
            "AND id NOT IN (SELECT job_id FROM challenge_entries) ORDER BY seq"
        ).fetchall()
        for row in rows:
            job = self._store.get_job(row["id"])
            if job is not None:
                try:
                    await self.adopt(job)
                except OSError as error:
                    log.warning("job %s: its entry could not be made (%s)", job.id, error)

    def _eligible(self, job: Job, challenge: Challenge) -> bool:
        """Painted while the challenge was open: finished (or, unknown, now) before its end."""
        finished = job.finished_at if job.finished_at is not None else self._clock()
        return challenge.state is not ChallengeState.CANCELLED and (
            finished < challenge.ends_at
            and (challenge.closed_at is None or finished < challenge.closed_at)
        )

    def _voting(self, challenge: Challenge) -> bool:
        return challenge.state is ChallengeState.OPEN and self._clock() < challenge.ends_at

    def _entry_path(self, challenge_id: int, job_id: str) -> Path:
        return files.private_folder(self._dir / str(challenge_id)) / f"entry-{job_id}.png"

    def _record_entry(self, challenge: Challenge, job: Job, path: Path) -> Entry:
        """The entry's row for an image written whole at ``path``; one statement, and on
        failure the image goes too. Made once: a second maker gets the first one's."""
        try:
            cursor = self._db.execute(
                "INSERT INTO challenge_entries (challenge_id, job_id, user_id, user_name, "
                "created_at, image_path) VALUES (?, ?, ?, ?, ?, ?)",
                (challenge.id, job.id, job.user_id, job.user_name, self._clock(), str(path)),
            )
        except sqlite3.IntegrityError:
            existing = self.entry_for_job(job.id)  # made meanwhile, at the same path
            if existing is None:
                path.unlink(missing_ok=True)
                raise
            return existing
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        entry_id = int(cursor.lastrowid or 0)
        log.info("challenge %d: entry %d from %s", challenge.id, entry_id, job.user_id)
        entry = self.entry(entry_id)
        assert entry is not None
        return entry

    def set_entry_message(self, entry_id: int, message_ref: str | None) -> None:
        self._db.execute(
            "UPDATE challenge_entries SET message_ref = ? WHERE id = ?", (message_ref, entry_id)
        )

    def vote(self, entry_id: int, user_id: str) -> VoteResult:
        entry = self._entry_or_gone(entry_id)
        challenge = self.get(entry.challenge_id)
        self._check_open(challenge, replies.VOTING_CLOSED)
        if entry.user_id == user_id:
            raise SelfVote(replies.SELF_VOTE)
        row = self._db.execute(
            "SELECT entry_id FROM challenge_votes WHERE challenge_id = ? AND user_id = ?",
            (challenge.id, user_id),
        ).fetchone()
        if row is not None and row["entry_id"] == entry_id:
            return VoteResult(entry=entry, moved_from=None, unchanged=True)
        self._db.execute(
            "INSERT INTO challenge_votes (challenge_id, user_id, entry_id, cast_at) "
            "VALUES (?, ?, ?, ?) ON CONFLICT(challenge_id, user_id) DO UPDATE SET "
            "entry_id = excluded.entry_id, cast_at = excluded.cast_at",
            (challenge.id, user_id, entry_id, self._clock()),
        )
        moved_from = self.entry(row["entry_id"]) if row is not None else None
        return VoteResult(entry=entry, moved_from=moved_from)

    def withdraw(self, entry_id: int, user_id: str, *, organiser: bool = False) -> Entry:
        entry = self._entry_or_gone(entry_id)
        challenge = self.get(entry.challenge_id)
        if entry.user_id != user_id and not organiser:
            raise NotAllowed(replies.NOT_YOUR_ENTRY)
        self._check_open(challenge, replies.WITHDRAW_CLOSED)
        self._db.execute("DELETE FROM challenge_entries WHERE id = ?", (entry_id,))
        Path(entry.image_path).unlink(missing_ok=True)
        log.info("challenge %d: entry %d withdrawn by %s", challenge.id, entry_id, user_id)
        return entry

    def discard_entry(self, entry_id: int) -> None:
        """Remove an entry that could not be posted, so no invisible entry takes part (nobody
        could vote for it) or counts against the member's limit."""
        entry = self.entry(entry_id)
        if entry is None:
            return
        self._discarded.add(entry.job_id)
        self._db.execute("DELETE FROM challenge_entries WHERE id = ?", (entry_id,))
        Path(entry.image_path).unlink(missing_ok=True)
        log.info("challenge %d: entry %d discarded (not posted)", entry.challenge_id, entry_id)

    def _check_open(self, challenge: Challenge, message: str) -> None:
        if challenge.state is not ChallengeState.OPEN or self._clock() >= challenge.ends_at:
            raise VotingClosed(message)

    def _entry_or_gone(self, entry_id: int) -> Entry:
        entry = self.entry(entry_id)
        if entry is None:
            raise NoChallenge(replies.ENTRY_GONE)
        return entry

    # -- queries -------------------------------------------------------------------------------

    def find(self, challenge_id: int) -> Challenge | None:
        row = self._db.execute("SELECT * FROM challenges WHERE id = ?", (challenge_id,)).fetchone()
        return _challenge(row) if row else None

    def get(self, challenge_id: int) -> Challenge:
        challenge = self.find(challenge_id)
        if challenge is None:
            raise NoChallenge(replies.CHALLENGE_GONE)
        return challenge

    def open_in(self, platform: str, chat_id: str) -> Challenge | None:
        """The open challenge of a channel (or of the thread it runs in)."""
        row = self._db.execute(
            "SELECT * FROM challenges WHERE platform = ? AND state = 'open' "
            "AND (chat_id = ? OR thread_id = ?) ORDER BY id DESC LIMIT 1",
            (platform, chat_id, chat_id),
        ).fetchone()
        return _challenge(row) if row else None

    def require_open(self, platform: str, chat_id: str) -> Challenge:
        challenge = self.open_in(platform, chat_id)
        if challenge is None:
            raise NoChallenge(replies.NO_OPEN_CHALLENGE)
        return challenge

    def latest_in(self, platform: str, chat_id: str) -> Challenge | None:
        """The open challenge here, else the one that ended last (for standings)."""
        row = self._db.execute(
            "SELECT * FROM challenges WHERE platform = ? AND (chat_id = ? OR thread_id = ?) "
            "AND state != 'cancelled' ORDER BY state = 'open' DESC, id DESC LIMIT 1",
            (platform, chat_id, chat_id),
        ).fetchone()
        return _challenge(row) if row else None

    def threads_of(self, platform: str, community_id: str) -> dict[str, str]:
        """The threads this community's challenges ran in, each with its channel."""
        rows = self._db.execute(
            "SELECT chat_id, thread_id FROM challenges WHERE platform = ? AND community_id = ? "
            "AND thread_id IS NOT NULL",
            (platform, community_id),
        ).fetchall()
        return {r["thread_id"]: r["chat_id"] for r in rows}

    def entry(self, entry_id: int) -> Entry | None:
        row = self._db.execute(
            "SELECT * FROM challenge_entries WHERE id = ?", (entry_id,)
        ).fetchone()
        return _entry(row) if row else None

    def entry_for_job(self, job_id: str) -> Entry | None:
        row = self._db.execute(
            "SELECT * FROM challenge_entries WHERE job_id = ?", (job_id,)
        ).fetchone()
        return _entry(row) if row else None

    def entries(self, challenge_id: int) -> list[Entry]:
        rows = self._db.execute(
            "SELECT * FROM challenge_entries WHERE challenge_id = ? ORDER BY created_at, id",
            (challenge_id,),
        ).fetchall()
        return [_entry(r) for r in rows]

    def standings(self, challenge_id: int) -> list[Standing]:
        """Entries by votes (most first), ties by the earlier entry; the top three placed."""
        rows = self._db.execute(
            "SELECT e.*, COUNT(v.user_id) AS votes FROM challenge_entries e "
            "LEFT JOIN challenge_votes v ON v.entry_id = e.id "
            "WHERE e.challenge_id = ? GROUP BY e.id ORDER BY votes DESC, e.created_at, e.id",
            (challenge_id,),
        ).fetchall()
        standings = []
        for index, row in enumerate(rows):
            votes = int(row["votes"])
            place = index + 1 if index < PODIUM and votes > 0 else None
            standings.append(Standing(entry=_entry(row), votes=votes, place=place))
        return standings

    def leaderboard(
        self, platform: str, community_id: str, limit: int = 10
    ) -> list[LeaderboardRow]:
        rows = self._db.execute(
            "SELECT user_id, user_name, SUM(place = 1) AS wins, COUNT(*) AS podiums, "
            "MAX(challenge_id) AS latest FROM challenge_places "
            "WHERE platform = ? AND community_id = ? GROUP BY user_id "
            "ORDER BY wins DESC, podiums DESC, MIN(challenge_id) LIMIT ?",
            (platform, community_id, limit),
        ).fetchall()
        return [
            LeaderboardRow(r["user_id"], r["user_name"], int(r["wins"]), int(r["podiums"]))
            for r in rows
        ]

    def gallery(
        self,
        platform: str,
        *,
        chat_ids: Collection[str] | None,
        user_id: str | None,
        offset: int,
        limit: int,
    ) -> tuple[list[Job], int]:
        """Finished paintings still on disk, newest first: one page and the total.

        ``chat_ids`` limits them to those channels (a Discord server's channels and threads);
        None means every chat of the platform.
        """
        where = "platform = ? AND state = 'done' AND purged = 0 AND result_path IS NOT NULL"
        args: list[object] = [platform]
        if chat_ids is not None:
            if not chat_ids:
                return [], 0
            where += f" AND chat_id IN ({', '.join('?' for _ in chat_ids)})"
            args.extend(chat_ids)
        if user_id is not None:
            where += " AND user_id = ?"
            args.append(user_id)
        total = self._db.execute(f"SELECT COUNT(*) AS n FROM jobs WHERE {where}", args).fetchone()
        rows = self._db.execute(
            f"SELECT id FROM jobs WHERE {where} ORDER BY seq DESC LIMIT ? OFFSET ?",
            [*args, limit, offset],
        ).fetchall()
        jobs = [job for r in rows if (job := self._store.get_job(r["id"])) is not None]
        return jobs, int(total["n"])


async def podium_picture(outcome: Outcome, sandbox: Sandbox) -> bytes | None:
    """The podium as one JPEG: the placed entries side by side, the winner in the middle, each
    with its place, member and votes written under it (:func:`bot.replies.podium_lines`),
    drawn in ``sandbox``. None when nobody placed, or when it could not be drawn (the
    announcement's text goes out all the same)."""
    placed = [s for s in outcome.podium if s.place is not None]
    if not placed:
        return None
    # Up to 20 MB each: read off the event loop. A withdrawn image is a plain tile.
    pictures = await asyncio.to_thread(lambda: [s.entry.image() or b"" for s in placed])
    try:
        return await sandbox.podium(
            [
                (s.place or 1, data, replies.podium_lines(s))
                for s, data in zip(placed, pictures, strict=True)
            ]
        )
    except DecoderFailed as error:
        log.warning("challenge %d: no podium picture (%s)", outcome.challenge.id, error.reason)
        return None


def tie_decides_podium(standings: list[Standing]) -> bool:
    """Whether two entries with the same (non-zero) votes were ordered for a podium place."""
    for index in range(min(PODIUM, len(standings) - 1)):
        first, second = standings[index], standings[index + 1]
        if first.votes > 0 and first.votes == second.votes:
            return True
    return False


def _challenge(row: sqlite3.Row) -> Challenge:
    return Challenge(
        id=int(row["id"]),
        platform=row["platform"],
        community_id=row["community_id"],
        chat_id=row["chat_id"],
        thread_id=row["thread_id"],
        title=row["title"],
        painting_path=row["painting_path"],
        painting_name=row["painting_name"],
        organiser_id=row["organiser_id"],
        organiser_name=row["organiser_name"],
        created_at=float(row["created_at"]),
        ends_at=float(row["ends_at"]),
        state=ChallengeState(row["state"]),
        closed_at=row["closed_at"],
        closed_by=row["closed_by"],
        announced=bool(row["announced"]),
        message_ref=row["message_ref"],
    )


def _entry(row: sqlite3.Row) -> Entry:
    return Entry(
        id=int(row["id"]),
        challenge_id=int(row["challenge_id"]),
        job_id=row["job_id"],
        user_id=row["user_id"],
        user_name=row["user_name"],
        created_at=float(row["created_at"]),
        image_path=row["image_path"],
        message_ref=row["message_ref"],
    )


def _copy_private(source: Path, target: Path) -> Path:
    return files.write_private(target, source.read_bytes())
