"""The plain-data contract between the bot process and the engine process.

Standard library only: the bot imports this module and must never pull in torch.
Everything here is a frozen dataclass of plain values (str, int, float, bool, bytes,
tuples, dicts of those), so it pickles across a ``spawn`` process boundary and could be sent
as JSON.

Messages, bot -> engine:   PaintJob, PaintBatch, CancelJob, PinStyle, UnpinStyle, Shutdown
Messages, engine -> bot:   EngineReady, EngineFailed, JobStarted, JobProgress, JobDone,
                           JobFailed, JobCancelled, StyleWarmed

Blends: a :class:`PaintJob` with a ``painting2_path`` paints in a mix of two paintings' styles,
``options.blend`` percent of the second (0: the first alone, 100: the second alone, 30: 70 % of
the first and 30 % of the second). Without ``painting2_path`` the blend option is ignored.

Timelapses: a job with ``timelapse=True`` also gets a short animation of its canvas going from
the photo to the painting, written beside the result before ``JobDone`` in two encodings:
animated WebP (Discord shows it inline) and H.264 MP4 without sound (Telegram's
``sendAnimation``). Their paths are :func:`timelapse_paths` of the result path, and ``JobDone``
names them (None when no timelapse was asked for, or it could not be made: the painting is
delivered all the same). The frames are captured while painting, so a timelapse cannot be
made afterwards: the bot asks for one with every job and deletes the two files with the result.

Pinned styles: :class:`PinStyle` keeps a painting's style targets in the engine's cache until
:class:`UnpinStyle` (never evicted; computed ahead while the engine is idle, for the pin's
quality and the default brush), so a style library's paintings paint as fast as a repeat. Send
one per library painting; a :class:`StyleWarmed` comes back once its targets are computed.
Pins live in the engine process: send them again after every ``EngineReady`` (a restarted
engine has none). ``JobDone.style_hits`` and ``style_misses`` tell whether a painting's style
targets came from the cache.

Batches: a :class:`PaintBatch` asks for several jobs to be painted in one pass (on a GPU that is
up to ``EngineReady.max_batch`` jobs for little more than the time of one). Everything that comes
back is per job, exactly as for single :class:`PaintJob` messages: each job gets its JobStarted,
JobProgress, and one of JobDone, JobFailed or JobCancelled, keyed by its ``job_id``; a
``CancelJob`` ends only its own job, the others in the batch go on. Jobs that cannot share a pass
(other quality, or a very different size) are painted one pass after another, in order; a job
with bad inputs fails alone. For the least padding, batch jobs of one quality whose photos have
the same ``schedule.batch_key``. A batch's jobs all finish when its pass does, so the service
should batch only jobs that would otherwise wait for each other anyway.

The paint options a member can choose (:class:`PaintOptions`) live here too, because both sides
need them: the engine to paint, the bot to validate what a member asks. The quality presets and
the plan they give are in :mod:`engine.schedule`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Final, Literal

from engine.schedule import DEFAULT_QUALITY, QUALITIES

BRUSHES: Final = ("small", "medium", "large")
DEFAULT_BRUSH: Final = "medium"
STRENGTH_MIN: Final = 1
STRENGTH_MAX: Final = 10
DEFAULT_STRENGTH: Final = 5
BLEND_MIN: Final = 0
BLEND_MAX: Final = 100
DEFAULT_BLEND: Final = 50


class OptionError(ValueError):
    """An option outside what is accepted; the message says what is accepted."""


@dataclass(frozen=True)
class PaintOptions:
    """What a member may choose for one painting. Defaults are the product's defaults."""

    strength: int = DEFAULT_STRENGTH
    quality: str = DEFAULT_QUALITY  # "" means the host's default (ATELIER_DEFAULT_QUALITY)
    keep_colors: bool = False
    brush: str = DEFAULT_BRUSH
    seed: int | None = None
    # With a second painting (PaintJob.painting2_path): how much of its style, in percent.
    blend: int = DEFAULT_BLEND

    def validate(self) -> PaintOptions:
        """Return self, or raise :class:`OptionError` naming the bad option and what is accepted."""
        if isinstance(self.strength, bool) or not isinstance(self.strength, int):
            raise OptionError(
                f"strength must be a whole number from {STRENGTH_MIN} to {STRENGTH_MAX}"
            )
        if not STRENGTH_MIN <= self.strength <= STRENGTH_MAX:
            raise OptionError(
                f"strength {self.strength} is out of range: use {STRENGTH_MIN} to {STRENGTH_MAX}"
            )
        if self.quality and self.quality not in QUALITIES:
            raise OptionError(f"quality {self.quality!r} is unknown: use {', '.join(QUALITIES)}")
        if self.brush not in BRUSHES:
            raise OptionError(f"brush {self.brush!r} is unknown: use {', '.join(BRUSHES)}")
        if self.seed is not None and not (0 <= self.seed < 2**63):
            raise OptionError("seed must be a non-negative whole number")
        if isinstance(self.blend, bool) or not isinstance(self.blend, int):
            raise OptionError(f"blend must be a whole number from {BLEND_MIN} to {BLEND_MAX}")
        if not BLEND_MIN <= self.blend <= BLEND_MAX:
            raise OptionError(
                f"blend {self.blend} is out of range: use {BLEND_MIN} to {BLEND_MAX} "
                "(the percentage of the second painting)"
            )
        return self

    def resolved(self, default_quality: str) -> PaintOptions:
        """These options with an unset quality ("") replaced by ``default_quality``."""
        return self if self.quality else replace(self, quality=default_quality)


# ----------------------------------------------------------------------------------------------
# Errors that cross the boundary: a code for programs, a message for people.

ErrorCode = Literal[
    "bad_image",  # the photo or painting could not be used (message says why)
    "bad_options",  # an option out of range
    "too_large",  # over a byte or pixel limit the engine enforces
    "out_of_memory",  # even the smaller retry did not fit on the device
    "weights_missing",  # VGG-19 weights absent and not downloadable
    "timeout",  # stopped at the time limit
    "engine_crashed",  # the engine process died while painting
    "internal",  # anything else; details are in the engine's log
]


# ----------------------------------------------------------------------------------------------
# bot -> engine


@dataclass(frozen=True)
class PaintJob:
    """Paint ``photo_path`` in the style of ``painting_path``; write a PNG to ``result_path``.

    Paths are inside the shared data folder. ``preview_every`` is in seconds (0 = no previews).
    ``painting2_path``: a second painting whose style is blended in (``options.blend`` percent
    of it). ``timelapse``: also write the timelapse animations (:func:`timelapse_paths`).
    """

    job_id: str
    photo_path: str
    painting_path: str
    result_path: str
    options: PaintOptions = field(default_factory=PaintOptions)
    preview_every: float = 4.0
    painting2_path: str | None = None
    timelapse: bool = False


@dataclass(frozen=True)
class PaintBatch:
    """Paint these jobs together, in one pass where they can share it (see the module's
    docstring). An empty batch is skipped."""

    jobs: tuple[PaintJob, ...]


@dataclass(frozen=True)
class EngineConfig:
    """How the engine process is set up; sent as its start argument."""

    device: str = "auto"  # auto, cpu, cuda, cuda:N, mps
    weights: str | None = None  # a local state-dict file; None = torchvision's download
    max_input_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 50_000_000
    log_level: str = "INFO"


@dataclass(frozen=True)
class CancelJob:
    job_id: str


@dataclass(frozen=True)
class PinStyle:
    """Keep this painting's style targets in the engine's cache until unpinned (a library
    style), and compute them ahead, when the engine is idle, for ``quality`` ("" = the default)
    with the default brush. The engine reads the file at once; unreadable files are logged and
    skipped. At most :data:`MAX_PINNED` paintings are pinned at a time; pins past that are
    logged and skipped. Pinning a path again does nothing."""

    painting_path: str
    quality: str = ""


@dataclass(frozen=True)
class UnpinStyle:
    """Let the painting pinned from this path be evicted again (the style was removed). The
    file need not exist any more."""

    painting_path: str


MAX_PINNED: Final = 64


@dataclass(frozen=True)
class Shutdown:
    pass


ToEngine = PaintJob | PaintBatch | CancelJob | PinStyle | UnpinStyle | Shutdown


# ----------------------------------------------------------------------------------------------
# engine -> bot


@dataclass(frozen=True)
class EngineReady:
    """Sent once the model is loaded. ``device`` is e.g. ``cuda:0``; ``kind`` is cpu or gpu.

    ``max_batch`` is how many jobs a :class:`PaintBatch` should hold at most for a gain (1: no
    gain from batching on this device, as on a CPU, where one job already fills the cores).
    ``seconds`` is how long the engine took from its start to this message.
    """

    pid: int
    device: str
    kind: str
    max_batch: int = 1
    seconds: float = 0.0


@dataclass(frozen=True)
class EngineFailed:
    """The engine cannot work at all (e.g. no VGG-19 weights). Sent instead of EngineReady."""

    code: str
    message: str


@dataclass(frozen=True)
class JobStarted:
    job_id: str
    width: int
    height: int
    total_steps: int
    total_work: int


@dataclass(frozen=True)
class JobProgress:
    """Progress of a running job. ``step`` and ``total_steps`` are summed over all scales."""

    job_id: str
    step: int
    total_steps: int
    scale: int  # 0-based index of the current scale
    scales: int
    elapsed: float  # seconds since the job started
    eta: float | None  # seconds left, None until measurable
    losses: dict[str, float] = field(default_factory=dict)
    preview_jpeg: bytes | None = None
    note: str | None = None  # e.g. "out of GPU memory, retrying at 768 px"

    @property
    def percent(self) -> float:
        return 100.0 * self.step / self.total_steps if self.total_steps else 0.0


@dataclass(frozen=True)
class JobDone:
    """The result is at ``result_path`` (PNG). ``timelapse_webp`` and ``timelapse_mp4`` are the
    timelapse's files when one was asked for and made, else None.

    ``style_hits`` and ``style_misses``: style-target lookups in the engine's cache (one per
    painting and scale) that found them ready and that had to compute them, counted over the
    pass that painted this job up to its end (a batch's jobs share one pass)."""

    job_id: str
    result_path: str
    width: int
    height: int
    seconds: float
    steps: int
    work: int
    timelapse_webp: str | None = None
    timelapse_mp4: str | None = None
    style_hits: int = 0
    style_misses: int = 0


@dataclass(frozen=True)
class JobFailed:
    job_id: str
    code: str
    message: str


@dataclass(frozen=True)
class JobCancelled:
    job_id: str


@dataclass(frozen=True)
class StyleWarmed:
    """The style targets of the painting pinned from ``painting_path`` are computed and kept
    (``seconds``: how long that took). Sent once per pin, while the engine is idle."""

    painting_path: str
    seconds: float


FromEngine = (
    EngineReady
    | EngineFailed
    | JobStarted
    | JobProgress
    | JobDone
    | JobFailed
    | JobCancelled
    | StyleWarmed
)


# ----------------------------------------------------------------------------------------------
# Files beside a result


@dataclass(frozen=True)
class TimelapsePaths:
    webp: str
    mp4: str


def timelapse_paths(result_path: str) -> TimelapsePaths:
    """Where the engine writes a result's timelapse: ``<result>.timelapse.webp`` and ``.mp4``
    beside ``result_path`` (``results/j1.png`` -> ``results/j1.timelapse.webp``)."""
    base = os.path.splitext(result_path)[0]
    return TimelapsePaths(webp=f"{base}.timelapse.webp", mp4=f"{base}.timelapse.mp4")
