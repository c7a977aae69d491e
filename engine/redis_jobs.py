"""Jobs in Redis: typed calls to the atomic scripts, shared by the bot and the GPU-host agents.

Imports the standard library, redis-py and :mod:`engine.protocol` only (never torch), so the
bot can use it. Who calls what::

    bot:    put_blob, admit, cancel, read_events, reap, job, bot_jobs, waiting, devices_alive,
            hold_name / drop_name (one process per bot id)
    agent:  claim, renew, emit (progress), finish, reap, put_blob/get_blob, set_alive

Every transition is one script (:mod:`engine.redis_scripts`), so several bots and agents can
act at once without locks. The lease of a running job is its pending entry in the ``jobs``
stream: :meth:`RedisJobs.renew` keeps it fresh while its agent owns it, :meth:`RedisJobs.reap`
takes back entries idle past the lease, and :meth:`RedisJobs.finish` is fenced on ownership, so
a late result from a host whose lease was taken is refused.

Connections (see :func:`connect`): an explicit ``socket_timeout`` above the longest ``BLOCK``
and a health check, because redis-py's defaults break blocking reads that idle for a while.
Blocking readers use a connection of their own and ``BLOCK`` timeouts, never ``wait_for``:
cancelling an in-flight command can desynchronise a shared connection.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Final

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as ConnectionRetry
from redis.backoff import ExponentialBackoff

from engine import protocol, redis_scripts
from engine.redis_scripts import Keys

GROUP: Final = "gpu"
LEASE: Final = 30.0  # seconds without a renewal before a running job is taken back
MAX_ATTEMPTS: Final = 3  # deliveries before a job whose hosts keep dying fails
EVENTS_MAXLEN: Final = 2000  # per bot; outcomes also stay in the job hash for reconcile
INPUT_TTL: Final = 48 * 3600
RESULT_TTL: Final = 24 * 3600
JOB_TTL: Final = 7 * 24 * 3600  # how long a finished job's hash stays for reconcile
BLOCK_MS: Final = 2000  # the longest blocking read
SOCKET_TIMEOUT: Final = 10.0  # above BLOCK_MS, so an idle blocking read never times out

RETRIES_EXHAUSTED: Final = (
    "This painting was interrupted {attempts} times because the GPU painting it went away, "
    "so I stopped trying. Please send it again."
)

# Event types on a bot's stream.
STARTED: Final = "started"  # claimed by an agent (attempt, consumer)
PLANNED: Final = "planned"  # the engine's plan (total_work)
PROGRESS: Final = "progress"
REQUEUED: Final = "requeued"  # back in the queue (attempt = the next one, reason)
DONE: Final = "done"  # result (blob digest), seconds, work, width, height
FAILED: Final = "failed"  # code, message
CANCELLED: Final = "cancelled"  # by
OUTCOMES: Final = (DONE, FAILED, CANCELLED)


def connect(url: str) -> aioredis.Redis:
    """A client with timeouts that suit blocking reads of up to :data:`BLOCK_MS`.

    Two quick retries, not redis-py's default ten with growing waits: a member asking for a
    painting while Redis is away should hear "paused" in a second, not after half a minute.
    """
    return aioredis.Redis.from_url(
        url,
        socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=3.0,
        health_check_interval=15,
        retry=ConnectionRetry(ExponentialBackoff(cap=0.5, base=0.05), retries=2),
    )


@dataclass(frozen=True)
class NewJob:
    """What the bot admits. ``photo``, ``painting`` and a blend's ``painting2`` ("" for
    none) are blob digests from put_blob; ``timelapse``: the engine also makes its timelapse."""

    id: str
    bot: str
    platform: str
    chat_id: str
    user_id: str
    photo: str
    painting: str
    options: protocol.PaintOptions = field(default_factory=protocol.PaintOptions)
    preview_every: float = 4.0
    work: int = 0
    timeout: float = 1800.0  # the agent stops a painting that runs longer
    created: float = 0.0
    painting2: str = ""
    timelapse: bool = False


@dataclass(frozen=True)
class AdmitLimits:
    per_member: int  # active (waiting + running) jobs of one member
    queue: int  # waiting jobs in all
    per_chat: int  # waiting jobs of one chat


@dataclass(frozen=True)
class Admitted:
    position: int  # 1 = next to be claimed
    turn: int


@dataclass(frozen=True)
class Refused:
    reason: str  # "member", "queue", "chat" or "duplicate"
    count: int  # what the limit counted (the member's jobs, the queue's, the chat's)


@dataclass(frozen=True)
class Claimed:
    """A job an agent now holds; ``entry`` is its lease (the pending stream entry)."""

    job_id: str
    entry: str
    attempt: int
    bot: str
    photo: str
    painting: str
    options: protocol.PaintOptions
    preview_every: float
    timeout: float
    painting2: str = ""  # a blend's second painting (blob digest), "" for none
    timelapse: bool = False


@dataclass(frozen=True)
class Renewal:
    owned: bool  # False: the lease was taken (the host was presumed dead); stop painting
    cancel_by: str | None = None  # a cancel was asked (the pub/sub message may have been lost)


@dataclass(frozen=True)
class Done:
    result: str  # blob digest of the PNG
    seconds: float
    work: int
    width: int
    height: int
    timelapse_webp: str = ""  # blob digests of the timelapse's two files, "" when none
    timelapse_mp4: str = ""


@dataclass(frozen=True)
class Failed:
    code: str
    message: str


@dataclass(frozen=True)
class Cancelled:
    pass


@dataclass(frozen=True)
class Retry:
    """The engine died under the job: requeue it (it fails after MAX_ATTEMPTS deliveries)."""

    reason: str = "engine_crashed"


@dataclass(frozen=True)
class Release:
    """The agent is stopping: the job goes back to the front of its turn, uncounted."""


Finish = Done | Failed | Cancelled | Retry | Release


@dataclass(frozen=True)
class Reaped:
    requeued: int
    failed: int
    cancelled: int


@dataclass(frozen=True)
class Event:
    """One entry of a bot's event stream, decoded to text except ``preview``."""

    id: str
    type: str
    job_id: str
    attempt: int
    fields: dict[str, str]
    preview: bytes | None = None

    def number(self, name: str, default: float = 0.0) -> float:
        value = self.fields.get(name, "")
        return float(value) if value else default

    def text(self, name: str) -> str | None:
        return self.fields.get(name) or None


Clock = Callable[[], float]


class RedisJobs:
    def __init__(
        self,
        client: aioredis.Redis,
        *,
        keys: Keys | None = None,
        lease: float = LEASE,
        max_attempts: int = MAX_ATTEMPTS,
        events_maxlen: int = EVENTS_MAXLEN,
        job_ttl: int = JOB_TTL,
        clock: Clock = time.time,
    ) -> None:
        self.client = client
        self.keys = keys or Keys()
        self.lease = lease
        self.max_attempts = max_attempts
        self.events_maxlen = events_maxlen
        self.job_ttl = job_ttl
        self._clock = clock
        self._admit = client.register_script(redis_scripts.ADMIT)
        self._claim = client.register_script(redis_scripts.CLAIM)
        self._renew = client.register_script(redis_scripts.RENEW)
        self._finish = client.register_script(redis_scripts.FINISH)
        self._reap = client.register_script(redis_scripts.REAP)
        self._cancel = client.register_script(redis_scripts.CANCEL)
        self._hold_name = client.register_script(redis_scripts.HOLD_NAME)
        self._drop_name = client.register_script(redis_scripts.DROP_NAME)

    # -- blobs ---------------------------------------------------------------------------------

    async def put_blob(self, data: bytes, ttl: int = INPUT_TTL) -> str:
        """Store ``data`` under its SHA-256 (once, however many jobs share it); the digest."""
        digest = hashlib.sha256(data).hexdigest()
        key = self.keys.blob(digest)
        if not await self.client.set(key, data, ex=ttl, nx=True):
            await self.client.expire(key, ttl)
        return digest

    async def get_blob(self, digest: str) -> bytes | None:
        data: Any = await self.client.get(self.keys.blob(digest))
        return bytes(data) if data is not None else None

    # -- the bot's transitions -----------------------------------------------------------------

    async def admit(self, job: NewJob, limits: AdmitLimits) -> Admitted | Refused:
        keys = self.keys
        fields: dict[str, str] = {
            "id": job.id,
            "bot": job.bot,
            "platform": job.platform,
            "chat": job.chat_id,
            "user": job.user_id,
            "photo": job.photo,
            "painting": job.painting,
            "options": json.dumps(asdict(job.options)),
            "preview_every": repr(job.preview_every),
            "work": str(job.work),
            "timeout": repr(job.timeout),
            "created": repr(job.created or self._clock()),
            "events_key": keys.events(job.bot),
            "painting2": job.painting2,
            "timelapse": "1" if job.timelapse else "",
        }
        reply = await self._admit(
            keys=[
                keys.waiting,
                keys.turn,
                keys.turnseq,
                keys.job(job.id),
                keys.member(job.platform, job.user_id),
                keys.chat(job.platform, job.chat_id),
                keys.bot(job.bot),
            ],
            args=[
                job.id,
                limits.per_member,
                limits.queue,
                limits.per_chat,
                keys.wake_channel,
                *(item for pair in fields.items() for item in pair),
            ],
        )
        if _text(reply[0]) == "ok":
            return Admitted(position=int(reply[1]), turn=int(reply[2]))
        return Refused(reason=_text(reply[0]), count=int(reply[1]))

    async def hold_name(self, bot: str, token: str, ttl: float) -> bool:
        """Take or keep ``bot``'s name for the process with ``token`` for ``ttl`` seconds;
        False while another process holds it (two bots must not share an event stream)."""
        reply = await self._hold_name(keys=[self.keys.instance(bot)], args=[token, int(ttl * 1000)])
        return bool(int(reply))

    async def drop_name(self, bot: str, token: str) -> None:
        """Let go of ``bot``'s name if the process with ``token`` holds it (a clean stop)."""
        await self._drop_name(keys=[self.keys.instance(bot)], args=[token])

    async def cancel(self, job_id: str, by: str) -> str:
        """'cancelled' (it was waiting), 'signalled' (running), 'unknown', or
        'already:<state>' (it had finished)."""
        reply = await self._cancel(
            keys=[self.keys.job(job_id), self.keys.waiting],
            args=[job_id, by, self._now(), self.job_ttl, self.keys.cancel_channel],
        )
        return _text(reply)

    # -- the agent's transitions ---------------------------------------------------------------

    async def ensure_group(self) -> None:
        try:
            await self.client.xgroup_create(self.keys.jobs, GROUP, id="$", mkstream=True)
        except aioredis.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise

    async def claim(self, consumer: str) -> Claimed | None:
        """The fairest waiting job, now leased to ``consumer``; None when nothing waits."""
        reply = await self._claim(
            keys=[self.keys.waiting, self.keys.turn, self.keys.turnseq, self.keys.jobs],
            args=[
                consumer,
                GROUP,
                self.keys.prefix,
                self._now(),
                INPUT_TTL,
                self.job_ttl,
                self.events_maxlen,
            ],
        )
        if not reply:
            return None
        flat = [_text(item) for item in reply[3]]
        fields = dict(zip(flat[::2], flat[1::2], strict=True))
        return Claimed(
            job_id=_text(reply[0]),
            entry=_text(reply[1]),
            attempt=int(reply[2]),
            bot=fields["bot"],
            photo=fields["photo"],
            painting=fields["painting"],
            options=protocol.PaintOptions(**json.loads(fields["options"])),
            preview_every=float(fields.get("preview_every") or 0),
            timeout=float(fields.get("timeout") or 1800),
            painting2=fields.get("painting2", ""),
            timelapse=fields.get("timelapse") == "1",
        )

    async def renew(self, consumer: str, claimed: Claimed) -> Renewal:
        reply = await self._renew(
            keys=[self.keys.jobs, self.keys.job(claimed.job_id)],
            args=[consumer, claimed.entry, GROUP],
        )
        if _text(reply[0]) != "ok":
            return Renewal(owned=False)
        return Renewal(owned=True, cancel_by=_text(reply[1]) or None)

    async def finish(self, consumer: str, claimed: Claimed, outcome: Finish) -> str:
        """The job's new state, or 'refused' when ``consumer`` no longer holds its lease."""
        if isinstance(outcome, Done):
            name, extra = DONE, asdict(outcome)
        elif isinstance(outcome, Failed):
            name, extra = FAILED, asdict(outcome)
        elif isinstance(outcome, Cancelled):
            name, extra = CANCELLED, {}
        elif isinstance(outcome, Retry):
            name, extra = "retry", {"reason": outcome.reason}
        else:
            name, extra = "release", {}
        reply = await self._finish(
            keys=[self.keys.jobs, self.keys.job(claimed.job_id), self.keys.waiting],
            args=[
                consumer,
                claimed.entry,
                GROUP,
                name,
                self._now(),
                self.job_ttl,
                self.events_maxlen,
                self.max_attempts,
                self.keys.wake_channel,
                RETRIES_EXHAUSTED.format(attempts=self.max_attempts),
                *(item for key, value in extra.items() for item in (key, str(value))),
            ],
        )
        return _text(reply)

    async def emit(self, bot: str, event: dict[str, str | bytes]) -> str:
        """Append an event (progress, plan) to ``bot``'s stream; its id."""
        fields: dict[Any, Any] = {**event, "t": self._now()}
        event_id = await self.client.xadd(
            self.keys.events(bot),
            fields,
            maxlen=self.events_maxlen,
            approximate=True,
        )
        return _text(event_id)

    async def reap(self, reaper: str = "reaper") -> Reaped:
        """Take back every job whose lease ran out: requeue it, or fail it after the last try."""
        reply = await self._reap(
            keys=[self.keys.jobs, self.keys.waiting],
            args=[
                reaper,
                GROUP,
                self.keys.prefix,
                int(self.lease * 1000),
                self._now(),
                self.job_ttl,
                self.events_maxlen,
                self.max_attempts,
                self.keys.wake_channel,
                RETRIES_EXHAUSTED.format(attempts=self.max_attempts),
            ],
        )
        return Reaped(*(int(n) for n in reply))

    async def set_alive(self, consumer: str, info: dict[str, str], ttl: float) -> None:
        await self.client.set(self.keys.alive(consumer), json.dumps(info), px=int(ttl * 1000))

    async def clear_alive(self, consumer: str) -> None:
        await self.client.delete(self.keys.alive(consumer))

    # -- reading -------------------------------------------------------------------------------

    async def read_events(
        self,
        bot: str,
        after: str,
        *,
        block_ms: int | None = None,
        count: int = 100,
        client: aioredis.Redis | None = None,
    ) -> list[Event]:
        """Events of ``bot`` after id ``after`` ("0" = from the start). Blocking reads should
        pass a ``client`` of their own (see the module's notes)."""
        if block_ms is not None and not 0 <= block_ms <= BLOCK_MS:
            raise ValueError(f"block_ms must be 0 to {BLOCK_MS}")
        reply: Any = await (client or self.client).xread(
            {self.keys.events(bot): after}, count=count, block=block_ms
        )
        events: list[Event] = []
        for _stream, entries in reply or []:
            for event_id, raw in entries:
                events.append(decode_event(_text(event_id), raw))
        return events

    async def job(self, job_id: str) -> dict[str, str] | None:
        raw: Any = await self.client.hgetall(self.keys.job(job_id))
        return {_text(k): _text(v) for k, v in raw.items()} if raw else None

    async def bot_jobs(self, bot: str) -> set[str]:
        return {_text(member) for member in await self.client.smembers(self.keys.bot(bot))}

    async def waiting(self) -> list[str]:
        """Waiting job ids in the order they will be claimed."""
        members: Any = await self.client.zrange(self.keys.waiting, 0, -1)
        return [_text(member) for member in members]

    async def running(self) -> int:
        try:
            summary = await self.client.xpending(self.keys.jobs, GROUP)
        except aioredis.ResponseError:  # no group yet: nothing ever ran
            return 0
        return int(summary["pending"])

    async def devices_alive(self) -> int:
        count = 0
        async for _key in self.client.scan_iter(match=self.keys.alive("*"), count=100):
            count += 1
        return count

    def _now(self) -> str:
        return repr(self._clock())


def check_cancelled() -> None:
    """Raise CancelledError if this task was asked to stop.

    A cancellation that arrives while redis-py runs a command can be lost (seen with redis-py
    8.1: a cancelled loop went on renewing a lease for ever, its task marked "cancelling").
    Loops that call Redis check this after every call, so ``task.cancel()`` still stops them.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def decode_event(event_id: str, raw: dict[bytes, bytes]) -> Event:
    preview = raw.get(b"preview")
    fields = {_text(k): _text(v) for k, v in raw.items() if k != b"preview"}
    return Event(
        id=event_id,
        type=fields.get("type", ""),
        job_id=fields.get("job", ""),
        attempt=int(fields.get("attempt") or 0),
        fields=fields,
        preview=preview or None,
    )


def _text(value: bytes | str | int) -> str:
    if isinstance(value, bytes):
        return value.decode()
    return str(value)
