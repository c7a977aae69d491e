"""The core's plain frozen data: paintings (requests, jobs and the events a job goes through),
style challenges (challenges, entries, standings, outcomes) and the style library's styles.

Adapters receive :class:`JobEvent` subclasses from :meth:`bot.service.PaintService.add_listener`;
each event carries a snapshot of the :class:`Job` (platform, chat, owner, the platform's own
reference to the status message), so an adapter can act on it even after a restart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from engine.protocol import PaintOptions


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (JobState.DONE, JobState.FAILED, JobState.CANCELLED)


@dataclass(frozen=True)
class PaintRequest:
    """A member's request. ``status_ref`` is the adapter's own reference to the message it will
    edit with progress (e.g. ``"channel_id/message_id"``); it can also be set later with
    :meth:`PaintService.attach_status`."""

    platform: str
    chat_id: str
    user_id: str
    user_name: str
    photo: bytes
    painting: bytes
    options: PaintOptions = field(default_factory=PaintOptions)
    photo_name: str = "photo"
    painting_name: str = "painting"
    status_ref: str | None = None
    challenge_id: int | None = None
    # A blend: a second painting, ``options.blend`` percent of the style (None: one painting).
    painting2: bytes | None = None
    painting2_name: str = "painting"


@dataclass(frozen=True)
class Job:
    id: str
    platform: str
    chat_id: str
    user_id: str
    user_name: str
    options: PaintOptions
    state: JobState
    created_at: float  # unix seconds
    photo_path: str
    painting_path: str
    photo_name: str = "photo"
    painting_name: str = "painting"
    width: int = 0  # the photo's size as uploaded
    height: int = 0
    work: int = 0  # pixel-iterations of the schedule, for ETAs
    started_at: float | None = None
    finished_at: float | None = None
    result_path: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    attempts: int = 0  # engine runs started (a restart or an engine crash adds one)
    crashes: int = 0  # engine deaths while running this job
    status_ref: str | None = None
    parent_id: str | None = None  # the job this one was re-rolled from
    challenge_id: int | None = None
    seconds: float | None = None  # painting time on the engine
    turn: int = 0  # round-robin round: jobs run by (turn, arrival)
    delivered_at: float | None = None  # when the adapter posted the result (DONE jobs)
    painting2_path: str | None = None  # a blend's second painting (options.blend percent)
    painting2_name: str | None = None

    @property
    def blended_with(self) -> str | None:
        """The second painting's name when this is a blend of two paintings, else None."""
        return (self.painting2_name or "painting") if self.painting2_path else None

    @property
    def input_paths(self) -> tuple[str, ...]:
        """The stored inputs this job paints from: photo, painting(s)."""
        second = (self.painting2_path,) if self.painting2_path else ()
        return (self.photo_path, self.painting_path, *second)


@dataclass(frozen=True)
class MessageRef:
    """A message on a platform, stored as ``"chat_id/message_id"`` (a job's status message,
    a challenge's announcement, an entry)."""

    chat_id: int
    message_id: int

    @classmethod
    def parse(cls, ref: str | None) -> MessageRef | None:
        """The reference in ``ref``; None when there is none or it is malformed."""
        chat, _, message = (ref or "").partition("/")
        try:
            return cls(int(chat), int(message))
        except ValueError:
            return None

    def __str__(self) -> str:
        return f"{self.chat_id}/{self.message_id}"


@dataclass(frozen=True)
class JobEvent:
    job: Job


@dataclass(frozen=True)
class Queued(JobEvent):
    position: int  # 1 = next to run
    eta: float | None  # seconds until done, None when unknown


@dataclass(frozen=True)
class PositionChanged(JobEvent):
    position: int
    eta: float | None
    note: str | None = None  # why it waits again (scaled mode: its GPU went away)


@dataclass(frozen=True)
class Started(JobEvent):
    rerun: bool = False  # True when run again after a restart or an engine crash
    note: str | None = None  # what to say about the rerun (None: the embedded mode's sentence)


@dataclass(frozen=True)
class Progress(JobEvent):
    percent: float
    scale: int  # 0-based
    scales: int
    eta: float | None
    preview_jpeg: bytes | None = None
    note: str | None = None


@dataclass(frozen=True)
class Finished(JobEvent):
    result_png: bytes
    seconds: float
    timelapse: bool = False  # its timelapse was made and kept: show the Timelapse button


@dataclass(frozen=True)
class Failed(JobEvent):
    code: str
    message: str


@dataclass(frozen=True)
class Cancelled(JobEvent):
    by_user: str


@dataclass(frozen=True)
class QueueOverview:
    running: Job | None  # the painting started first, of those of this bot
    running_percent: float | None
    waiting: tuple[Job, ...]  # in run order (scaled mode: other bots' too, without names)
    etas: dict[str, float]  # job id -> seconds until done
    # The other paintings in progress: the rest of a pass, or (scaled mode) on other GPUs.
    also_running: tuple[Job, ...] = ()
    percents: dict[str, float] = field(default_factory=dict)  # running job id -> percent


@dataclass(frozen=True)
class ServiceStatus:
    queue_length: int
    running_job: str | None
    engine_up_since: float | None
    engine_device: str | None
    jobs_done: int
    jobs_failed: int
    average_seconds: float | None
    mode: str = "embedded"  # or "scaled" (Redis and GPU-host agents)
    devices_alive: int = 1  # devices painting (embedded: the engine, while it is up)
    running_jobs: int = 0  # paintings in progress (scaled: every bot's)
    paused: bool = False  # the job queue cannot be reached: new paintings are refused


# ----------------------------------------------------------------------------------------------
# Style challenges (the rules and tables are bot.challenges)


class ChallengeState(StrEnum):
    OPEN = "open"
    CLOSED = "closed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class Challenge:
    id: int
    platform: str
    community_id: str  # Discord server id, or the Telegram group's chat id
    chat_id: str  # where it was started
    thread_id: str | None  # where entries go (a Discord thread); None: the chat itself
    title: str
    painting_path: str
    painting_name: str
    organiser_id: str
    organiser_name: str
    created_at: float
    ends_at: float
    state: ChallengeState
    closed_at: float | None = None
    closed_by: str | None = None
    announced: bool = False
    message_ref: str | None = None

    @property
    def entries_chat(self) -> str:
        return self.thread_id or self.chat_id


@dataclass(frozen=True)
class Entry:
    id: int
    challenge_id: int
    job_id: str
    user_id: str
    user_name: str
    created_at: float
    image_path: str
    message_ref: str | None = None

    def image(self) -> bytes | None:
        path = Path(self.image_path)
        return path.read_bytes() if path.is_file() else None


@dataclass(frozen=True)
class Standing:
    entry: Entry
    votes: int
    place: int | None  # 1-3 for the podium; None otherwise


@dataclass(frozen=True)
class Outcome:
    """How a challenge ended, for the announcement."""

    challenge: Challenge
    podium: tuple[Standing, ...]  # places 1..3 in order
    entries: int
    voters: int
    tie_broken: bool  # equal votes on the podium were decided by the earlier entry

    @property
    def cancelled(self) -> bool:
        return self.challenge.state is ChallengeState.CANCELLED


@dataclass(frozen=True)
class VoteResult:
    entry: Entry
    moved_from: Entry | None  # the entry the vote was on before, if another one
    unchanged: bool = False


@dataclass(frozen=True)
class LeaderboardRow:
    user_id: str
    user_name: str
    wins: int
    podiums: int


# ----------------------------------------------------------------------------------------------
# The style library (the rules and table are bot.styles)


@dataclass(frozen=True)
class Style:
    """A painting a community saved under a name, to paint with by name."""

    id: int
    platform: str
    community_id: str  # Discord server id, or the Telegram chat's id
    name: str  # unique in its community; lower case (bot.style_rules.check_name)
    painting_path: str
    thumbnail_path: str | None  # a small JPEG for contact sheets; None if none could be made
    painting_name: str  # the file's name as it was sent
    digest: str  # sha256 of the painting's bytes
    added_by: str
    added_by_name: str
    added_at: float
    challenge_id: int | None = None  # the challenge whose painting it was
