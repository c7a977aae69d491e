"""Timelapses: the short animation of a painting emerging from the photo, kept with its result.

Every job asks the engine for one (``PaintJob.timelapse``). The engine captures the frames while
it paints and writes two encodings beside the result (:func:`engine.protocol.timelapse_paths`:
``results/<job>.timelapse.webp`` for Discord, ``.mp4`` for Telegram's ``sendAnimation``), so
their paths follow from the result's and need no column of their own. They live and die with
the result: the hourly sweep and **Delete** remove them with it (:func:`delete`), and a
painting whose result is gone has no timelapse either. When the engine could not make one, the
painting is delivered without it and no Timelapse button is shown (:func:`kept`).

Who may ask: anyone in the chat where the painting was posted (the button carries the job id
only, and a Telegram client may send any callback data under any of the bot's messages, so the
chat a press comes from is checked against the painting's: a press from anywhere else is
answered as if there were no such painting). A timelapse reveals nothing new: it goes from
the photo to the painting, and the result message under which the button sits shows the
painting and names the photo already; the photo's frame is only as large as the animation (at
most 640 px).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Final, Literal

from bot import replies
from bot.errors import JobNotFound, NotAvailable
from bot.jobs import Job, JobState
from engine.protocol import timelapse_paths

Format = Literal["webp", "mp4"]
FORMATS: Final[tuple[Format, ...]] = ("webp", "mp4")
Clock = Callable[[], float]
REPEAT_AFTER: Final = 600.0  # seconds before a chat is given the same timelapse again


def path_of(result_path: str, fmt: Format) -> Path:
    paths = timelapse_paths(result_path)
    return Path(paths.webp if fmt == "webp" else paths.mp4)


def kept(result_path: str | None) -> bool:
    """Whether both encodings of this result's timelapse are there. Blocking (two stats)."""
    return bool(result_path) and all(path_of(result_path or "", fmt).is_file() for fmt in FORMATS)


def delete(result_path: str | None) -> None:
    """Remove a result's timelapse files (those there are). Blocking."""
    if not result_path:
        return
    for fmt in FORMATS:
        with contextlib.suppress(FileNotFoundError):
            path_of(result_path, fmt).unlink()


class Showings:
    """The timelapses just posted (or being posted), so that pressing Timelapse again soon
    after, twice at once or on and on, is answered "just posted" instead of posting the same
    animation again: each post counts against the chat's flood limit, which every member's
    status message there shares. In memory only: a restart forgets them (one more post)."""

    def __init__(self, clock: Clock, repeat_after: float = REPEAT_AFTER) -> None:
        self._clock = clock
        self.repeat_after = repeat_after
        self._posted: dict[str, float] = {}  # job id -> when its timelapse was posted

    def claim(self, job_id: str) -> None:
        """Note that ``job_id``'s timelapse is being posted now, or :class:`NotAvailable`
        when it was less than :attr:`repeat_after` seconds ago."""
        now = self._clock()
        for old in [j for j, at in self._posted.items() if now - at >= self.repeat_after]:
            del self._posted[old]
        if job_id in self._posted:
            raise NotAvailable(replies.timelapse_just_posted(self.repeat_after))
        self._posted[job_id] = now

    def release(self, job_id: str) -> None:
        """The post did not happen: it may be asked for again at once."""
        self._posted.pop(job_id, None)


async def read(
    find: Callable[[], Job],
    fmt: Format,
    *,
    where: tuple[str, str],
    retention_hours: float,
    clock: Clock,
) -> bytes:
    """A finished painting's timelapse in ``fmt``, or :class:`~bot.errors.NotAvailable` saying
    why not: asked from another chat than the painting's (``where``: the platform and chat of
    the press), after the retention period (or once the painting's record is forgotten),
    deleted with its painting, never made, or not finished yet. ``find`` gives the job (and
    raises :class:`~bot.errors.JobNotFound` when its record is gone)."""
    try:
        job = find()
    except JobNotFound:
        raise NotAvailable(replies.timelapse_expired(retention_hours)) from None
    if (job.platform, job.chat_id) != where:
        raise NotAvailable(replies.NO_TIMELAPSE_HERE)
    if job.state is not JobState.DONE:
        raise NotAvailable(
            replies.NO_TIMELAPSE_YET if not job.state.terminal else replies.NO_TIMELAPSE
        )
    finished = job.finished_at or 0.0
    if clock() - finished >= retention_hours * 3600:
        raise NotAvailable(replies.timelapse_expired(retention_hours))
    if not job.result_path:
        raise NotAvailable(replies.TIMELAPSE_DELETED)
    try:
        return await asyncio.to_thread(path_of(job.result_path, fmt).read_bytes)
    except FileNotFoundError:
        raise NotAvailable(replies.NO_TIMELAPSE) from None
