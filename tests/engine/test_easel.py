"""One job's state between scales: how its canvas starts and comes out."""

from __future__ import annotations

import torch

from engine.colour import rgb_to_ycbcr
from engine.easel import Commission, Easel
from engine.paint_settings import PaintSettings
from engine.schedule import Scale

from ..conftest import make_painting, make_photo

CPU = torch.device("cpu")


def easel(settings: PaintSettings) -> Easel:
    scale = Scale(64, 48, 3)
    job = Easel(Commission(make_photo(), make_painting(), settings), (scale,), CPU, lambda: 0.0)
    job.photo_t = job.photo_at(scale)
    return job


def test_a_colour_start_is_the_photo_in_the_paintings_colours() -> None:
    job = easel(PaintSettings(init="colour"))
    start = job.initial_canvas()
    photo = job.photo_t
    assert start.shape == photo.shape
    # The painting is mostly red and orange; the photo is blue and yellow on a gradient.
    reds = [float(t[0, 0].mean()) for t in (photo, start)]
    assert reds[1] > reds[0] + 0.1
    # Same edges: strongly correlated with the photo pixel for pixel.
    assert torch.corrcoef(torch.stack([photo.flatten(), start.flatten()]))[0, 1] > 0.3


def test_keeping_colours_starts_from_the_photos_own_luminance() -> None:
    job = easel(PaintSettings(init="colour", keep_colors=True))
    start = job.initial_canvas()
    assert torch.equal(start, rgb_to_ycbcr(job.photo_t)[:, :1])
