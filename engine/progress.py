"""Progress of one painting: plain data out, bookkeeping inside.

Totals are summed over all scales (and kept counting across an out-of-memory restart), so percent
and ETA never go backwards. :class:`Progress` is plain data only, so the worker can forward it
across the process boundary. Each painting of a batch has its own :class:`Tracker`.

:class:`StepView` is what a per-step hook sees of a painting after each iteration (for example
to keep frames of it); the hook is called outside the optimisation's maths and costs nothing
unless it renders the canvas. ``snapshot`` copies the canvas on the device without waiting for
it (no host read), so on a GPU a hook may keep frames between two replays of a step's graph.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from PIL import Image

from engine import images, schedule

if TYPE_CHECKING:
    from torch import Tensor

# Reading the loss values waits for the device to finish the step (on CUDA the CPU can otherwise
# queue the next step's kernels meanwhile), so progress carries the values as last read.
LOSS_READ_INTERVAL: Final = 1.0  # seconds

ProgressCallback = Callable[["Progress"], None]
LossReader = Callable[[], Mapping[str, float]]  # reads the latest loss values off the device


@dataclass(frozen=True)
class StepView:
    """One painting right after an iteration, for per-step hooks.

    After a scale that ended early (the optimiser converged), ``step`` jumps to the scale's end
    in one view, as progress does. ``total_steps`` grows if the painting starts again smaller
    (out of GPU memory); steps go on counting from where they were.
    """

    scale: int  # 0-based index of the current scale
    step: int  # iterations done, summed over all scales (as in :class:`Progress`)
    width: int  # canvas size at this scale
    height: int
    total_steps: int  # as in :class:`Progress`
    render: Callable[[], Image.Image]  # the canvas as an RGB picture, made when called
    # The canvas as ``render`` would show it, (3, height, width) uint8, copied on the device.
    snapshot: Callable[[], Tensor]


StepHook = Callable[[StepView], None]


@dataclass(frozen=True)
class Progress:
    """One step of a painting. ``step``/``total_steps`` are summed over all scales."""

    step: int
    total_steps: int
    scale: int  # 0-based index of the current scale
    scales: int
    width: int  # canvas size at this scale
    height: int
    elapsed: float  # seconds since the painting started
    eta: float | None  # seconds left, None until measurable
    # The weighted objective terms as last read: at the first step, at the end of each scale,
    # with each preview and otherwise at most every LOSS_READ_INTERVAL seconds.
    losses: dict[str, float] = field(default_factory=dict)
    preview_jpeg: bytes | None = None
    note: str | None = None

    @property
    def percent(self) -> float:
        return 100.0 * self.step / self.total_steps if self.total_steps else 0.0


class Tracker:
    """Turns evaluations into :class:`Progress`; totals summed over scales, never going back."""

    def __init__(
        self,
        plan: tuple[schedule.Scale, ...],
        *,
        clock: Callable[[], float],
        on_progress: ProgressCallback | None,
        preview_every: float,
        preview_side: int = images.PREVIEW_SIDE_MAX,
    ) -> None:
        self.clock = clock
        self.started = clock()
        self.on_progress = on_progress
        self.preview_every = preview_every
        self.preview_side = min(preview_side, images.PREVIEW_SIDE_MAX)
        self.last_preview = self.started
        self.losses: dict[str, float] = {}
        self.losses_read: float | None = None  # when the losses were last read
        self.base_steps = 0  # steps done before an out-of-memory restart
        self.base_work = 0
        self.done_steps = 0
        self.done_work = 0
        self.note: str | None = None
        self.plan = plan

    @property
    def total_steps(self) -> int:
        return self.base_steps + schedule.total_steps(self.plan)

    @property
    def total_work(self) -> int:
        return self.base_work + schedule.total_work(self.plan)

    def restart(self, plan: tuple[schedule.Scale, ...], note: str) -> None:
        """A new plan after an out-of-memory error: keep counting from where we were."""
        self.base_steps, self.base_work = self.done_steps, self.done_work
        self.plan = plan
        self.note = note

    def scale_end(self, index: int) -> int:
        return self.base_steps + sum(s.steps for s in self.plan[: index + 1])

    def step(
        self,
        index: int,
        losses: LossReader,
        preview: Callable[[], Image.Image],
        *,
        jump_to: int | None = None,
    ) -> None:
        scale = self.plan[index]
        before = self.done_steps
        self.done_steps = jump_to if jump_to is not None else self.done_steps + 1
        self.done_work += (self.done_steps - before) * scale.width * scale.height
        if self.on_progress is None:
            return
        now = self.clock()
        elapsed = now - self.started
        eta = None
        if self.done_steps >= 2 and self.done_work > 0:
            eta = max(0.0, elapsed / self.done_work * (self.total_work - self.done_work))
        jpeg = None
        if self.preview_every > 0 and now - self.last_preview >= self.preview_every:
            self.last_preview = now
            jpeg = images.preview_jpeg(preview(), max_side=self.preview_side)
        if (
            jpeg is not None
            or self.losses_read is None
            or now - self.losses_read >= LOSS_READ_INTERVAL
            or self.done_steps >= self.scale_end(index)
        ):
            self.losses_read = now
            self.losses = dict(losses())
        self.on_progress(
            Progress(
                step=self.done_steps,
                total_steps=self.total_steps,
                scale=index,
                scales=len(self.plan),
                width=scale.width,
                height=scale.height,
                elapsed=elapsed,
                eta=eta,
                losses=dict(self.losses),
                preview_jpeg=jpeg,
                note=self.note,
            )
        )
