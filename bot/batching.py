"""Which waiting jobs share the engine's next pass, and the rule that keeps batching fair.

On a GPU the engine paints up to ``max_batch`` jobs in one pass for little more than the time of
one (``EngineReady.max_batch``; 1 on a CPU, where nothing is batched). Jobs can share a pass
when they have the same quality and the same :func:`engine.schedule.batch_key` (the same steps
and size buckets at every scale, so little padding): :func:`batch_key`. Every job of a pass
finishes when the pass does.

**The promise:** a member never waits longer because of batching than they would have without
it, beyond one batch's duration. "Without it" is the fair order (:func:`bot.embedded_queue.
run_order`: round-robin turns, then arrival) painted one job after another.

**The rule.** A pass is formed when the engine is free:

1. Its first job (the head) is the job that would run next without batching.
2. It is filled with jobs that can share the head's pass, taken in fair order, up to
   ``max_batch``, each one only if, with it, all of these hold:

   a. the pass is estimated to take less time than its jobs one after another (else nothing
      is gained);
   b. no member's job goes ahead of an earlier job of the same member;
   c. every waiting job the pass leaves out while taking a later one (a *skipped* job) ends up,
      counting this pass, delayed by batching by at most this pass's duration, or no more
      delayed than it already was.

**Delays** are kept per waiting job, in estimated work (:meth:`Batcher.charge`). When a pass P
starts, each job J still waiting gets ``cost(P) - work of P's jobs ahead of J in fair order``
added: without batching J would have waited for those jobs one after another; now it waits for
the whole pass. A pass whose jobs are all ahead of J lowers J's delay by what it saves (by a);
a pass that skips J raises it, and (c) caps the result. A job admitted while a pass is painting
starts with that pass's delay to it, by the same formula (:meth:`Batcher.delay_on_arrival`).
A delay may go below zero: batching ahead of a job made it earlier than one at a time.

**Why that keeps the promise.** A job's delay grows only when a pass skips it, and rule (c)
leaves it at most that pass's duration; every later pass either skips it again under the same
cap or lowers it. So when a job starts, its delay is at most one pass's duration. The delay
counted is never less than the real one against painting one at a time (a job that shares a
pass with jobs ahead of it does not wait for them either; that saving is not counted), in the
estimates the queue has. A job in a pass finishes when the pass does: its own painting takes
the pass's duration rather than its own, which is within the same bound.

**A job the engine died under** (``crashes`` > 0) is painted alone from then on: an engine crash
during a pass counts a crash for every job in it, and a job that kills the engine every time
must not make the jobs it shared a pass with fail twice too (two crashes fail a job). Alone, it
fails by itself on its next try, and the others are painted without it.

With ``max_batch`` 1 every pass is its head alone, every delay stays zero, and the order is the
fair order, exactly as before batching existed.

**Cost of a pass:** its largest job's work times ``factor(n)`` for n jobs
(:meth:`bot.eta.SpeedModel.batch_factor`, learned from finished passes; 1 for one job;
:func:`default_factor` until measured). All
figures here are in work units (pixel-iterations, :func:`engine.schedule.total_work`), which is
enough on one device: seconds are work times one speed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from bot.jobs import Job
from engine import schedule

Factor = Callable[[int], float]  # a pass of n jobs costs its largest job's work times this
Pass = tuple[Job, ...]

# What each job past the first adds to a pass, as a share of the largest job's time alone,
# until passes of that size have been measured: a third, i.e. four jobs in about the time of
# two (issue 13's aim for four members at 512 px on one GPU; not measured on a GPU here).
BATCH_EXTRA: Final = 1 / 3


def default_factor(size: int) -> float:
    """``factor(n)`` before any pass of n jobs was measured."""
    return 1.0 + BATCH_EXTRA * (max(1, size) - 1)


def batch_key(job: Job, device_kind: str, default_quality: str) -> Hashable:
    """Jobs with equal keys can share a pass: the same quality and size buckets at every scale.

    A job whose size is not known (0) has a key of its own, and so has a job the engine died
    under (it is painted alone from then on: see the module's docstring)."""
    quality = job.options.resolved(default_quality).quality
    preset = schedule.PRESETS.get((quality, device_kind))
    if preset is None or job.width <= 0 or job.height <= 0 or job.crashes > 0:
        return ("alone", job.id)
    return (quality, schedule.batch_key(job.width, job.height, preset))


def cost(works: Sequence[int], factor: Factor) -> float:
    """Estimated work of a pass of jobs of these works (see the module's docstring)."""
    if len(works) <= 1:
        return float(sum(works))
    return max(works) * factor(len(works))


@dataclass
class Batcher:
    """The rule above, for one queue: its engine's ``max_batch``, the keys of its jobs, the
    learned ``factor`` and the delays of the jobs waiting now."""

    key: Callable[[Job], Hashable]
    factor: Factor
    delays: dict[str, float] = field(default_factory=dict)  # waiting job id -> delay (work)

    def next_pass(self, order: Sequence[Job], max_batch: int) -> Pass:
        """The jobs to paint together next, head first, of the waiting jobs in fair order."""
        return _next_pass(order, max_batch, self.key, self.factor, self.delays)

    def plan(self, order: Sequence[Job], max_batch: int) -> list[Pass]:
        """Every waiting job in the pass it is expected to be painted in, passes in the order
        they would run if nothing else arrived (for positions and ETAs)."""
        if max_batch <= 1 or len(order) <= 1:
            return [(job,) for job in order]
        delays = dict(self.delays)
        left = list(order)
        passes: list[Pass] = []
        while left:
            chosen = _next_pass(left, max_batch, self.key, self.factor, delays)
            passes.append(chosen)
            _charge(left, chosen, delays, self.factor)
            members = {job.id for job in chosen}
            left = [job for job in left if job.id not in members]
        return passes

    def charge(self, order: Sequence[Job], chosen: Pass) -> None:
        """``chosen`` starts: the delays of the jobs of ``order`` (fair order, the pass's jobs
        included) left waiting change by it; the pass's own jobs are forgotten."""
        _charge(order, chosen, self.delays, self.factor)

    def delay_on_arrival(self, job: Job, painting: Sequence[Job]) -> float:
        """The delay of ``job``, admitted while ``painting`` (a pass) is being painted: the jobs
        of the pass whose turn is not later than its own would have been ahead of it."""
        if not painting:
            return 0.0
        ahead = sum(other.work for other in painting if other.turn <= job.turn)
        return cost([other.work for other in painting], self.factor) - ahead

    def forget(self, job_id: str) -> None:
        self.delays.pop(job_id, None)


def _next_pass(
    order: Sequence[Job],
    max_batch: int,
    key: Callable[[Job], Hashable],
    factor: Factor,
    delays: MutableMapping[str, float],
) -> Pass:
    head = order[0]
    if max_batch <= 1:
        return (head,)
    head_key = key(head)
    chosen = [head]
    works = [head.work]
    # The skipped jobs, in runs between two jobs taken: the work of the taken jobs ahead of the
    # run and the largest delay in it. Rule (c) for a skipped job of delay d with taken work A
    # ahead of it, in a pass costing C: d + C - A <= C (that is d <= A), or C <= A.
    runs: list[tuple[float, float]] = []
    worst = -math.inf  # the largest delay in the run being gathered
    held_back: set[tuple[str, str]] = set()  # members with a job skipped
    for job in order[1:]:
        if len(chosen) >= max_batch:
            break
        owner = (job.platform, job.user_id)
        if owner not in held_back and key(job) == head_key:
            trial = [*works, job.work]
            trial_cost = cost(trial, factor)
            ahead = float(sum(works))
            closed = [*runs, (ahead, worst)]
            if trial_cost < sum(trial) and all(
                d <= a or trial_cost <= a for a, d in closed if d > -math.inf
            ):
                chosen.append(job)
                works = trial
                runs = closed
                worst = -math.inf
                continue
        worst = max(worst, delays.get(job.id, 0.0))
        held_back.add(owner)
    return tuple(chosen)


def _charge(
    order: Sequence[Job], chosen: Pass, delays: MutableMapping[str, float], factor: Factor
) -> None:
    members = {job.id for job in chosen}
    pass_cost = cost([job.work for job in chosen], factor)
    ahead = 0.0
    for job in order:
        if job.id in members:
            ahead += job.work
            delays.pop(job.id, None)
        else:
            delays[job.id] = delays.get(job.id, 0.0) + pass_cost - ahead
