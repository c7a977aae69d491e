"""How long until a painting is ready: the engine's learned speed and the queue ahead of it.

:class:`Outlook` answers the synchronous questions about the queue (positions, ETAs, the
overview a member asks for) from the jobs in hand and the queue's snapshot.

A job's *work* is the pixel-iterations of its coarse-to-fine plan (:func:`engine.schedule.
total_work`). :class:`SpeedModel` learns seconds per unit of work from every painting painted
alone (a moving average, kept in SQLite so a restart keeps it), and, for each size n of a
batch, seconds per unit of work of a pass's largest job from every pass of n jobs that
finished whole: a pass of n jobs is estimated at its largest job's work times
:meth:`SpeedModel.batch_factor` (:func:`bot.batching.default_factor` until a pass of that size
was measured). :func:`etas` spreads the passes the queue expects (one job each, unless the
queue batches: :mod:`bot.batching`), in run order, over the devices painting for the queue,
each pass going to the device that is free first: with one device (the embedded mode) a job's
ETA is the remaining time of the pass in hand plus the passes ahead of its own and its own;
with several GPUs (the scaled mode) the same queue drains that many times faster.
"""

from __future__ import annotations

import heapq
import logging
import sqlite3
from collections.abc import Callable, Sequence
from typing import Final

from bot import batching
from bot.job_queue import JobQueue, Stranger
from bot.jobs import Job, JobState, QueueOverview
from bot.ledger import Ledger
from bot.store import Store
from engine.protocol import PaintOptions

log = logging.getLogger(__name__)

# Seconds per pixel-iteration before anything was measured; the moving average takes over
# after the first job. Rough figures for a 2-core CPU and a current GPU.
INITIAL_SECONDS_PER_WORK: Final = {"cpu": 2.0e-5, "gpu": 3.0e-7}
SPEED_SMOOTHING: Final = 0.3  # weight of the newest job in the moving average
META_KEY: Final = "seconds_per_work"
BATCH_META_KEY: Final = "seconds_per_work_x{size}"  # passes of `size` jobs, per largest work


class SpeedModel:
    """Seconds per unit of work, learned from finished paintings and stored in ``store``."""

    def __init__(self, store: Store, device_kind: Callable[[], str]) -> None:
        self._store = store
        self._device_kind = device_kind
        self._measured: float | None = None
        # batch size -> seconds per work of its largest job (None: not measured), read once
        self._passes: dict[int, float | None] = {}

    def load(self) -> None:
        stored = self._store.get_meta(META_KEY)
        self._measured = float(stored) if stored else None

    @property
    def seconds_per_work(self) -> float:
        """Of a painting painted alone."""
        if self._measured is not None:
            return self._measured
        return INITIAL_SECONDS_PER_WORK.get(self._device_kind(), 2.0e-5)

    def batch_factor(self, size: int) -> float:
        """How many times its largest job's time alone a pass of ``size`` jobs takes (at
        least 1: a pass is never quicker than its largest job)."""
        if size <= 1:
            return 1.0
        measured = self._pass_speed(size)
        if measured is None:
            return batching.default_factor(size)
        return max(1.0, measured / self.seconds_per_work)

    def pass_seconds(self, works: Sequence[int]) -> float:
        """Estimated seconds of a pass of jobs of these works (one job: painted alone)."""
        return batching.cost(works, self.batch_factor) * self.seconds_per_work

    def learn(self, work: int, seconds: float) -> None:
        """One painting of ``work``, painted alone, took ``seconds``; a failed write is
        logged, not raised."""
        if work <= 0 or seconds <= 0:
            return
        self._measured = _smoothed(self._measured, seconds / work)
        self._store_figure(META_KEY, self._measured)

    def learn_batch(self, size: int, largest_work: int, seconds: float) -> None:
        """A pass of ``size`` jobs, the largest of ``largest_work``, took ``seconds``."""
        if size <= 1:
            self.learn(largest_work, seconds)
            return
        if largest_work <= 0 or seconds <= 0:
            return
        figure = _smoothed(self._pass_speed(size), seconds / largest_work)
        self._passes[size] = figure
        self._store_figure(BATCH_META_KEY.format(size=size), figure)

    def _pass_speed(self, size: int) -> float | None:
        if size not in self._passes:
            stored = self._store.get_meta(BATCH_META_KEY.format(size=size))
            self._passes[size] = float(stored) if stored else None
        return self._passes[size]

    def _store_figure(self, key: str, value: float) -> None:
        try:
            self._store.set_meta(key, repr(value))
        except sqlite3.Error as error:
            log.warning("could not store the engine's speed (%s)", error)


def _smoothed(old: float | None, measured: float) -> float:
    return measured if old is None else old + SPEED_SMOOTHING * (measured - old)


def etas(
    waiting: Sequence[Sequence[tuple[str, int]]],
    running: Sequence[Sequence[tuple[str, float]]],
    *,
    capacity: int,
    pass_seconds: Callable[[Sequence[int]], float],
    busy_elsewhere: Sequence[float] = (),
) -> dict[str, float]:
    """Seconds until each job is done.

    ``waiting``: the passes expected, in run order, each its jobs' (job id, work);
    ``running``: the passes being painted, each its jobs' (job id, seconds left), a pass's
    device free once its last job ends; ``pass_seconds``: a pass's estimated seconds from its
    works; ``busy_elsewhere``: seconds left of paintings for others on the same devices (scaled
    mode: other bots'); ``capacity``: devices painting. With no device alive the waiting jobs
    have no ETA (they are left out).
    """
    result = {job_id: left for group in running for job_id, left in group}
    if capacity < 1:
        return result
    # When each device is free: the running passes' ends, then free devices at once.
    ends = [max(left for _, left in group) for group in running if group]
    free = sorted([*ends, *busy_elsewhere])[:capacity]
    free += [0.0] * (capacity - len(free))
    heapq.heapify(free)
    for group in waiting:
        if not group:
            continue
        done = heapq.heappop(free) + pass_seconds([work for _, work in group])
        for job_id, _ in group:
            result[job_id] = done
        heapq.heappush(free, done)
    return result


def remaining(percent: float, eta: float | None, work: int, seconds_per_work: float) -> float:
    """Seconds left of a running job: its own estimate, else the model's."""
    if eta is not None:
        return eta
    return (1 - percent / 100) * work * seconds_per_work


class Outlook:
    """Where each waiting job stands and when each job is ready: this bot's jobs in hand
    (``ledger``) in the queue's order (its :meth:`~bot.job_queue.JobQueue.view`), other bots'
    jobs (scaled mode) as placeholders that tell only their owner and work."""

    def __init__(self, ledger: Ledger, queue: JobQueue, speed: SpeedModel) -> None:
        self._ledger = ledger
        self._queue = queue
        self._speed = speed

    def order(self) -> list[Job]:
        """The waiting jobs, next to run first."""
        view = self._queue.view()
        order: list[Job] = []
        placed: set[str] = set()
        for job_id in view.order:
            job = self._ledger.find(job_id)
            if job is not None:
                if job.state is JobState.QUEUED:
                    order.append(job)
                    placed.add(job_id)
            elif (stranger := view.strangers.get(job_id)) is not None:
                order.append(_placeholder(job_id, stranger))
        # Admitted since the queue's last snapshot: last in line until the next one.
        order += [
            job
            for job in self._ledger.active()
            if job.state is JobState.QUEUED and job.id not in placed
        ]
        return order

    def position(self, job_id: str) -> int | None:
        for index, job in enumerate(self.order(), start=1):
            if job.id == job_id:
                return index
        return None

    def remaining(self, job: Job) -> float:
        """Seconds left of a running job."""
        percent, estimate = self._ledger.progress.get(job.id, (0.0, None))
        return remaining(percent, estimate, job.work, self._speed.seconds_per_work)

    def slot_wait(self) -> float:
        """Seconds until a painting now running ends (for "try again in ...")."""
        running = [self.remaining(job) for job in self._ledger.running()]
        return min(running) if running else 0.0

    def etas(self, order: list[Job]) -> dict[str, float]:
        """Seconds until each job in hand, and each of ``order``, is done."""
        view = self._queue.view()
        per_work = self._speed.seconds_per_work
        elsewhere: list[float] = []
        if view.busy_elsewhere and order:
            # Other bots' paintings in progress: half of a typical one left, as far as we know.
            typical = sum(job.work for job in order) / len(order) * per_work
            elsewhere = [typical / 2] * view.busy_elsewhere
        works = {job.id: job.work for job in order}
        passes = [[(i, works[i]) for i in ids if i in works] for ids in view.passes]
        grouped = {i for ids in view.passes for i in ids}
        passes += [[(job.id, job.work)] for job in order if job.id not in grouped]
        together = set(view.running_pass)
        running = self._ledger.running()
        in_hand = [[(job.id, self.remaining(job)) for job in running if job.id in together]]
        in_hand += [[(job.id, self.remaining(job))] for job in running if job.id not in together]
        return etas(
            passes,
            in_hand,
            capacity=view.capacity,
            pass_seconds=self._speed.pass_seconds,
            busy_elsewhere=elsewhere,
        )

    def overview(self) -> QueueOverview:
        order = self.order()
        running = self._ledger.running()
        return QueueOverview(
            running=running[0] if running else None,
            running_percent=self._ledger.percent(running[0].id) if running else None,
            waiting=tuple(order),
            etas=self.etas(order),
            also_running=tuple(running[1:]),
            percents={job.id: self._ledger.percent(job.id) for job in running},
        )


def _placeholder(job_id: str, stranger: Stranger) -> Job:
    """Another bot's waiting job, as much of it as this bot knows."""
    return Job(
        id=job_id,
        platform=stranger.platform,
        chat_id=stranger.chat_id,
        user_id=stranger.user_id,
        user_name="",
        options=PaintOptions(),
        state=JobState.QUEUED,
        created_at=0.0,
        photo_path="",
        painting_path="",
        work=stranger.work,
    )
