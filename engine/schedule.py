"""Quality presets and the coarse-to-fine plan: at which sizes, and for how many steps, to paint.

Standard library only: the bot plans with :func:`plan` to estimate work for ETAs before a job
starts, and the engine paints by the same plan, so the two agree.

A plan runs the optimisation at successively doubled sizes, the coarsest first (as in the
multi-resolution schemes that followed Gatys et al.: structure is cheap to find small); each
scale starts from the upsampled result of the one before.

Size buckets: on a GPU, canvases are padded up to a multiple of :data:`BUCKET_QUANTUM` (at the
finest scale), so that a few shapes serve every photo: cuDNN's autotuning and the captured
graphs are made once per shape, and jobs with the same :func:`batch_key` can share one pass
(``engine/batch.py``) with little padding. The service groups waiting jobs by that key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

QUALITIES: Final = ("draft", "standard", "high")
DEFAULT_QUALITY: Final = "standard"
DEVICE_KINDS: Final = ("cpu", "gpu")

# Scales whose long side would be under this are dropped: VGG's five poolings leave nothing of
# them. Their steps are given to the next scale.
MIN_SCALE_SIDE: Final = 64
# The smallest short side the default layers accept: relu5_1, the deepest, is behind four 2x
# poolings (``vgg.min_input_side`` computes it for any layers; a test keeps the two equal).
MIN_SHORT_SIDE: Final = 16
# Canvas sides on a GPU are rounded up to a multiple of this at the finest scale (halved at each
# coarser one, down to MIN_BUCKET_QUANTUM): at 1024 px that is 16 shapes per orientation.
BUCKET_QUANTUM: Final = 64
MIN_BUCKET_QUANTUM: Final = 8


@dataclass(frozen=True)
class Preset:
    """A quality level on one kind of device: output size, iterations per scale, how to start.

    ``steps`` lists iterations from the coarsest scale to the finest; each scale's long side is
    ``long_side / 2**k`` for the k-th scale counted from the finest. ``optimizer`` and ``init``
    are the engine's ``PaintSettings`` choices of the same names.
    """

    long_side: int
    steps: tuple[int, ...]
    optimizer: str = "lbfgs"
    init: str = "photo"


PRESETS: Final[dict[tuple[str, str], Preset]] = {
    # One scale of Adam from the photo in the painting's colours: on this objective the coarse
    # scales did not pay for themselves at 256 px (their result, upsampled, starts the 256 px
    # scale no better than the recoloured photo does), and Adam took 26 iterations where
    # L-BFGS needed about 60 for the same objective (bench/engine_bench.py, "compare").
    ("draft", "cpu"): Preset(long_side=256, steps=(26,), optimizer="adam", init="colour"),
    ("standard", "cpu"): Preset(long_side=512, steps=(80, 50, 30)),
    ("high", "cpu"): Preset(long_side=768, steps=(100, 60, 40, 25)),
    ("draft", "gpu"): Preset(long_side=512, steps=(120, 80, 50)),
    ("standard", "gpu"): Preset(long_side=1024, steps=(150, 100, 60, 40)),
    ("high", "gpu"): Preset(long_side=1536, steps=(200, 150, 100, 60, 40)),
}


@dataclass(frozen=True)
class Scale:
    """One stage of the coarse-to-fine plan."""

    width: int
    height: int
    steps: int

    @property
    def work(self) -> int:
        """Pixel-iterations: the unit the bot's ETA model is measured in."""
        return self.width * self.height * self.steps


def fit_size(width: int, height: int, long_side: int) -> tuple[int, int]:
    """Scale (width, height) so the long side is ``long_side``, keeping the aspect ratio."""
    if width <= 0 or height <= 0:
        raise ValueError("image size must be positive")
    factor = long_side / max(width, height)
    return max(1, round(width * factor)), max(1, round(height * factor))


def plan(
    width: int, height: int, preset: Preset, *, min_side: int = MIN_SHORT_SIDE
) -> tuple[Scale, ...]:
    """The scales at which to paint a photo of ``width`` x ``height``, coarsest first.

    Photos are never upscaled beyond the preset: small photos are painted at their own size, but
    at least 64 px on the long side. A scale under 64 px on its long side or ``min_side`` on its
    short side is dropped and its steps given to the next scale; a final scale whose short side
    is under ``min_side`` is enlarged to it (the network needs that much input at its deepest
    layer: pass ``vgg.min_input_side`` of the layers in use).
    """
    steps = preset.steps
    if not steps or any(s <= 0 for s in steps):
        raise ValueError("steps must be positive")
    target = max(MIN_SCALE_SIDE, min(preset.long_side, max(width, height, MIN_SCALE_SIDE)))
    scales: list[Scale] = []
    carried = 0
    count = len(steps)
    for index, n in enumerate(steps):
        last = index == count - 1
        side = math.floor(target / 2 ** (count - 1 - index))
        w, h = fit_size(width, height, side)
        if not last and (side < MIN_SCALE_SIDE or min(w, h) < min_side):
            carried += n
            continue
        if min(w, h) < min_side:
            factor = min_side / min(w, h)
            w, h = max(min_side, math.ceil(w * factor)), max(min_side, math.ceil(h * factor))
        scales.append(Scale(width=w, height=h, steps=n + carried))
        carried = 0
    return tuple(scales)


def bucket_quantum(index: int, count: int, finest: int = 0) -> int:
    """The bucket quantum of scale ``index`` of ``count``: ``finest`` (default
    :data:`BUCKET_QUANTUM`) at the finest scale, halved at each coarser one, at least 8 px."""
    base = finest or BUCKET_QUANTUM
    return max(MIN_BUCKET_QUANTUM, base >> (count - 1 - index))


def bucket_side(side: int, quantum: int) -> int:
    """``side`` rounded up to a multiple of ``quantum``."""
    return quantum * math.ceil(side / quantum)


def batch_key(
    width: int, height: int, preset: Preset, *, min_side: int = MIN_SHORT_SIDE
) -> tuple[tuple[int, int, int], ...]:
    """Which jobs can share a pass with little padding: equal keys have the same steps at every
    scale and the same size bucket (width, height) at every scale.

    The engine pads any batch of one quality to its largest canvas; this key is what keeps that
    padding small (within one bucket quantum per side). Photos of the same orientation and about
    the same aspect ratio get the same key. Options that vary per job (strength, brush, keeping
    colours, seed) do not enter it: jobs of the same quality with equal keys can always share a
    pass.
    """
    scales = plan(width, height, preset, min_side=min_side)
    count = len(scales)
    return tuple(
        (
            s.steps,
            bucket_side(s.width, bucket_quantum(i, count)),
            bucket_side(s.height, bucket_quantum(i, count)),
        )
        for i, s in enumerate(scales)
    )


def total_steps(scales: tuple[Scale, ...]) -> int:
    return sum(s.steps for s in scales)


def total_work(scales: tuple[Scale, ...]) -> int:
    return sum(s.work for s in scales)
