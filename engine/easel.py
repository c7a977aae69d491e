"""One painting asked of the Stylist (:class:`Commission`) and its state while it is painted
(:class:`Easel`).

A :class:`Commission` is what a caller hands in: the photo, the painting (or two, to blend),
the settings and who listens (progress, cancel, per-step hooks, the outcome). An
:class:`Easel` holds what the painting loop keeps for one commission between scales, alone or
in a batch: its plan and progress tracker, its seed, its canvas so far, its photo at the
current scale, and its outcome once it has one. Everything here is about one job; what jobs
share (the network, the batch tensor) is in ``stylize.py`` and ``workspace.py``.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from engine import schedule
from engine.colour import (
    match_colours,
    rgb_to_ycbcr,
    to_image,
    to_pixels,
    to_tensor,
    ycbcr_to_rgb,
)
from engine.errors import Cancelled
from engine.paint_settings import PaintSettings
from engine.progress import ProgressCallback, StepHook, Tracker
from engine.style_cache import painting_digest

COLOUR_REFERENCE_SIDE: Final = 64

StopCheck = Callable[[], bool]
Outcome = Image.Image | Exception  # the painting, or why there is none
OutcomeCallback = Callable[[Outcome], None]


@dataclass(frozen=True)
class Commission:
    """A painting asked of :meth:`Stylist.paint_batch`.

    ``on_progress`` is called after every iteration; ``should_stop`` is checked before every
    iteration (True: the job ends as :class:`Cancelled`, the others in its batch go on);
    ``on_step`` is a per-step hook (:class:`progress.StepView`); ``on_outcome`` is called once
    with the result or the error, as soon as it is known (a cancel at once, not at the batch's
    end). ``painting2`` is a second painting whose style is blended in, ``settings.blend``
    percent of it (``targets.style_grams``).
    """

    photo: Image.Image
    painting: Image.Image
    settings: PaintSettings
    on_progress: ProgressCallback | None = None
    should_stop: StopCheck | None = None
    on_step: StepHook | None = None
    on_outcome: OutcomeCallback | None = None
    painting2: Image.Image | None = None


class Easel:
    """One commission being painted: plan, tracker, seed, canvas so far and outcome."""

    def __init__(
        self,
        commission: Commission,
        plan: tuple[schedule.Scale, ...],
        device: torch.device,
        clock: Callable[[], float],
    ) -> None:
        settings = commission.settings
        settings.validate()
        self.commission = commission
        self.settings = settings
        self.photo = (
            commission.photo if commission.photo.mode == "RGB" else commission.photo.convert("RGB")
        )
        self.painting = _rgb(commission.painting)
        self.painting2 = None if commission.painting2 is None else _rgb(commission.painting2)
        self.plan = plan
        self.device = device
        self.tracker = Tracker(
            plan,
            clock=clock,
            on_progress=commission.on_progress,
            preview_every=settings.preview_every,
            preview_side=settings.preview_side,
        )
        self.seed = settings.seed if settings.seed is not None else secrets.randbits(63)
        self.generator = torch.Generator().manual_seed(self.seed)
        self.digest = painting_digest(self.painting)
        self.digest2 = "" if self.painting2 is None else painting_digest(self.painting2)
        # The photo's (mean, std) of luminance at the final size, when keeping its colours.
        self.luminance = self._photo_luminance(plan[-1]) if settings.keep_colors else None
        self.canvas: Tensor | None = None  # (1, c, h, w) after the last scale painted
        self.photo_t = torch.empty(0)  # (1, 3, h, w) the photo at the current scale
        self.outcome: Outcome | None = None

    @property
    def channels(self) -> int:
        """1 when only the luminance is painted (keep_colors), else 3."""
        return 1 if self.settings.keep_colors else 3

    @property
    def done(self) -> bool:
        return self.outcome is not None

    def replan(self, settings: PaintSettings, plan: tuple[schedule.Scale, ...], note: str) -> None:
        """Start again with other settings (a smaller size after running out of memory)."""
        self.settings = settings
        self.plan = plan
        self.canvas = None
        self.tracker.restart(plan, note)

    def finish(self, outcome: Outcome) -> None:
        """Record the outcome (once) and tell the caller."""
        if self.outcome is not None:
            return
        self.outcome = outcome
        if self.commission.on_outcome is not None:
            self.commission.on_outcome(outcome)

    def stop_requested(self) -> bool:
        check = self.commission.should_stop
        return check is not None and check()

    def cancel(self) -> None:
        self.finish(Cancelled("the painting was cancelled"))

    # -- tensors of one scale ---------------------------------------------------------------------

    def photo_at(self, scale: schedule.Scale) -> Tensor:
        """The photo resized to ``scale``, (1, 3, h, w) on the device."""
        size = (scale.width, scale.height)
        photo = self.photo
        if photo.size != size:
            photo = photo.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
        return to_tensor(photo, self.device)

    def content_input(self) -> Tensor:
        """What the network sees of the photo at this scale: RGB, or its luminance."""
        return rgb_to_ycbcr(self.photo_t)[:, :1] if self.settings.keep_colors else self.photo_t

    def initial_canvas(self) -> Tensor:
        """The previous scale's canvas upsampled, or (first scale) the photo, the photo in the
        painting's colours (``init="colour"``; the photo's own with ``keep_colors``) or seeded
        noise."""
        _, _, h, w = self.photo_t.shape
        if self.canvas is not None:
            canvas = F.interpolate(self.canvas, size=(h, w), mode="bicubic", align_corners=False)
            return canvas.clamp_(0, 1)
        if self.settings.init == "noise":
            noise = torch.rand((1, self.channels, h, w), generator=self.generator)
            return noise.to(self.device)
        if self.settings.init == "colour" and not self.settings.keep_colors:
            return match_colours(self.photo_t, to_tensor(self._colour_reference(), self.device))
        return self.content_input().clone()

    def as_rgb(self, canvas: Tensor) -> Tensor:
        """The canvas as RGB: with ``keep_colors`` the luminance plus the photo's chroma."""
        x = canvas.detach()
        if not self.settings.keep_colors:
            return x
        chroma = rgb_to_ycbcr(self.photo_t)[:, 1:]
        return ycbcr_to_rgb(torch.cat([x.clamp(0, 1), chroma], dim=1))

    def image(self, canvas: Tensor) -> Image.Image:
        return to_image(self.as_rgb(canvas))

    def pixels(self, canvas: Tensor) -> Tensor:
        """The canvas as :meth:`image` would show it, (3, h, w) uint8 left on the device."""
        return to_pixels(self.as_rgb(canvas))

    def _colour_reference(self) -> Image.Image:
        """A small picture with the painting's colour statistics (64x64 is plenty for 3x3).

        For a blend, rows of both paintings in the blend's proportion: its pixels are then a
        mixture of the two paintings' colours with the blend's weights."""
        side = COLOUR_REFERENCE_SIDE
        rows = 0 if self.painting2 is None else round(side * self.settings.blend / 100)
        reference = Image.new("RGB", (side, side))
        if rows < side:
            reference.paste(self.painting.resize((side, side - rows), Image.Resampling.BOX))
        if rows > 0 and self.painting2 is not None:
            second = self.painting2.resize((side, rows), Image.Resampling.BOX)
            reference.paste(second, (0, side - rows))
        return reference

    def _photo_luminance(self, final: schedule.Scale) -> tuple[float, float]:
        y = rgb_to_ycbcr(self.photo_at(final))[:, :1]
        return round(float(y.mean()), 3), round(float(y.std()), 3)


def _rgb(img: Image.Image) -> Image.Image:
    return img if img.mode == "RGB" else img.convert("RGB")
