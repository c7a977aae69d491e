"""Progress bookkeeping: totals over scales, ETA, when losses and previews are read."""

from __future__ import annotations

import io
from collections.abc import Callable

from PIL import Image

from engine.progress import LOSS_READ_INTERVAL, Progress, Tracker
from engine.schedule import Scale

from ..conftest import make_photo


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def losses(total: float) -> Callable[[], dict[str, float]]:
    return lambda: {"content": total / 2, "total": total}


def test_totals_eta_and_loss_reads_across_scales() -> None:
    clock, seen = Clock(), list[Progress]()
    plan = (Scale(4, 4, 2), Scale(8, 8, 3))  # work 32 + 192
    tracker = Tracker(plan, clock=clock, on_progress=seen.append, preview_every=0.0)
    steps = [(0, 0.0, 1.0), (0, 0.5, 2.0), (1, 0.1, 3.0), (1, LOSS_READ_INTERVAL, 4.0)]
    for index, wait, total in steps:
        clock.now += wait
        tracker.step(index, losses(total), lambda: make_photo())
    assert [(p.step, p.total_steps, p.scale, p.scales) for p in seen] == [
        (1, 5, 0, 2),
        (2, 5, 0, 2),
        (3, 5, 1, 2),
        (4, 5, 1, 2),
    ]
    assert [(p.width, p.height) for p in seen] == [(4, 4), (4, 4), (8, 8), (8, 8)]
    assert seen[0].eta is None  # one step is not a rate yet
    assert seen[1].eta == 0.5 / 32 * 192  # seconds per pixel-iteration times the work left
    # Read at the first step and the end of a scale; in between the last values are carried
    # until the interval has passed.
    assert [p.losses["total"] for p in seen] == [1.0, 2.0, 2.0, 4.0]
    assert seen[0].losses == {"content": 0.5, "total": 1.0}
    assert all(p.preview_jpeg is None for p in seen)


def test_a_restart_keeps_counting_and_says_why() -> None:
    clock, seen = Clock(), list[Progress]()
    tracker = Tracker((Scale(8, 8, 4),), clock=clock, on_progress=seen.append, preview_every=0.0)
    tracker.step(0, losses(1.0), lambda: make_photo())
    tracker.restart((Scale(6, 6, 4),), "out of GPU memory, retrying at 6 px")
    tracker.step(0, losses(1.0), lambda: make_photo())
    assert [(p.step, p.total_steps) for p in seen] == [(1, 4), (2, 5)]
    assert [p.note for p in seen] == [None, "out of GPU memory, retrying at 6 px"]
    assert seen[1].percent >= seen[0].percent
    # An early convergence jumps to the end of the scale.
    tracker.step(0, losses(1.0), lambda: make_photo(), jump_to=tracker.scale_end(0))
    assert (seen[-1].step, seen[-1].percent) == (5, 100.0)


def test_previews_come_at_the_interval_within_the_preview_side() -> None:
    clock, seen = Clock(), list[Progress]()
    tracker = Tracker(
        (Scale(64, 48, 6),),
        clock=clock,
        on_progress=seen.append,
        preview_every=2.0,
        preview_side=32,
    )
    for _ in range(6):
        clock.now += 1.0
        tracker.step(0, losses(1.0), lambda: make_photo(64, 48))
    with_preview = [p.step for p in seen if p.preview_jpeg is not None]
    assert with_preview == [2, 4, 6]
    assert seen[1].preview_jpeg is not None
    assert Image.open(io.BytesIO(seen[1].preview_jpeg)).size == (32, 24)
