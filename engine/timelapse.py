"""A painting's timelapse: frames of the canvas at evenly spaced steps, from the photo to the
result, captured while it is painted.

:class:`Timelapse` is a per-step hook (``Commission.on_step``). It plans its frames over the
painting's total steps, summed over all scales, and at each planned step keeps a copy of the
canvas made on the device (``StepView.snapshot``: no host read, so on a GPU it goes between two
replays of the step's graph and the loop never waits for it). Only when the painting is done
does :meth:`Timelapse.frames` bring the copies to the host and resize them to one common size
(by default the result's: the coarse scales' frames are upscaled), the photo first. The copies
are uint8 at each scale's size, so even at 2048 px the frames of the finest scale take a few
megabytes each.

A scale that ends early (the optimiser converged) reports one step at the scale's end; the
frames planned in between all show the canvas as it stopped, which is what it was at those steps.
A painting that starts again smaller (out of GPU memory) starts its frames again too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

from PIL import Image
from torch import Tensor

from engine.colour import pixels_to_image
from engine.progress import StepView

DEFAULT_FRAMES: Final = 30  # the photo and 29 steps of the painting; about 4 s as an animation
MIN_FRAMES: Final = 2


@dataclass(frozen=True)
class Frame:
    """One frame: the canvas after ``step`` iterations (0: the photo), as a picture."""

    step: int
    image: Image.Image


class Timelapse:
    """Keeps the canvas at ``count - 1`` evenly spaced steps of a painting, the last step
    included, and the photo before them (so ``count`` frames; fewer if the painting has fewer
    steps)."""

    def __init__(self, photo: Image.Image, count: int = DEFAULT_FRAMES) -> None:
        if count < MIN_FRAMES:
            raise ValueError(f"a timelapse needs at least {MIN_FRAMES} frames")
        self.photo = photo
        self.count = count
        self._total: int | None = None
        self._plan: list[int] = []  # the steps to keep, ascending
        self._kept: list[tuple[int, Tensor]] = []  # (step, (3, h, w) uint8 on the device)

    @property
    def steps(self) -> list[int]:
        """The steps kept so far (0, the photo, first)."""
        return [0, *(step for step, _ in self._kept)]

    def __call__(self, view: StepView) -> None:
        if view.total_steps != self._total:
            self._start(first=view.step - 1, total=view.total_steps)
        due = len(self._kept)
        if due >= len(self._plan) or view.step < self._plan[due]:
            return
        copy = view.snapshot()
        while due < len(self._plan) and self._plan[due] <= view.step:
            self._kept.append((self._plan[due], copy))
            due += 1

    def _start(self, *, first: int, total: int) -> None:
        """Plan the frames over steps ``first + 1`` to ``total``, evenly spaced, ``total`` last."""
        self._total = total
        span = max(0, total - first)
        wanted = min(self.count - 1, span)
        self._plan = sorted({first + math.ceil(k * span / wanted) for k in range(1, wanted + 1)})
        self._kept = []

    def frames(self, size: tuple[int, int] | None = None) -> list[Frame]:
        """The frames so far, each resized to ``size`` (default: the last frame's size, the
        result's once the painting is done), the photo first."""
        if not self._kept:
            raise ValueError("no frames were kept: the painting did not run")
        pictures = [(step, pixels_to_image(pixels)) for step, pixels in self._kept]
        target = size or pictures[-1][1].size
        out = [Frame(0, _resized(self.photo.convert("RGB"), target))]
        out.extend(Frame(step, _resized(picture, target)) for step, picture in pictures)
        return out


def _resized(picture: Image.Image, size: tuple[int, int]) -> Image.Image:
    if picture.size == size:
        return picture
    return picture.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
