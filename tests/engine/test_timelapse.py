"""Timelapse frames: captured through the per-step hook, evenly spaced, ending on the result."""

from __future__ import annotations

import itertools

import pytest
import torch
from PIL import Image
from torch import Tensor

from engine.paint_settings import PaintSettings
from engine.progress import StepView
from engine.stylize import Commission, Stylist
from engine.timelapse import DEFAULT_FRAMES, Timelapse

from ..conftest import make_painting, make_photo
from .test_lbfgs import host_reads
from .test_step_graph import StrictRecorder

# Two scales (64 and 128 px), 40 steps in all: more steps than frames.
SETTINGS = PaintSettings(long_side=128, steps=(24, 16), tv_weight=0.0, preview_every=0.0, seed=0)


@pytest.fixture(scope="module")
def stylist(vgg_state: dict[str, Tensor]) -> Stylist:
    return Stylist(weights=vgg_state, device="cpu")


def paint_with_timelapse(
    stylist: Stylist, settings: PaintSettings = SETTINGS, count: int = DEFAULT_FRAMES
) -> tuple[Image.Image, Timelapse]:
    photo = make_photo(128, 96)
    timelapse = Timelapse(photo, count)
    (result,) = stylist.paint_batch(
        [Commission(photo, make_painting(), settings, on_step=timelapse)]
    )
    assert isinstance(result, Image.Image)
    return result, timelapse


def test_frames_are_evenly_spaced_over_all_scales_and_end_on_the_result(stylist: Stylist) -> None:
    result, timelapse = paint_with_timelapse(stylist)
    frames = timelapse.frames()
    assert len(frames) == DEFAULT_FRAMES == 30
    steps = [frame.step for frame in frames]
    assert steps[0] == 0  # the photo
    assert steps == sorted(set(steps))  # strictly increasing
    assert steps[-1] == 40  # the last step of the last scale
    gaps = [b - a for a, b in itertools.pairwise(steps[1:])]
    assert set(gaps) <= {1, 2}  # 40 steps over 29 frames: evenly, as whole steps allow
    assert any(step <= 24 for step in steps[1:]) and any(step > 24 for step in steps)
    # One common size, the result's: the first scale's frames (64 px) were upscaled.
    assert {frame.image.size for frame in frames} == {result.size} == {(128, 96)}
    assert frames[-1].image.tobytes() == result.tobytes()
    assert frames[0].image.tobytes() == make_photo(128, 96).tobytes()
    # The canvas moves between frames: they are not copies of one picture.
    assert len({frame.image.tobytes() for frame in frames}) == len(frames)


def test_frames_at_another_size_and_fewer_steps_than_frames(stylist: Stylist) -> None:
    result, timelapse = paint_with_timelapse(stylist, SETTINGS.replace(steps=(6, 5)))
    frames = timelapse.frames((64, 48))
    assert [frame.step for frame in frames] == list(range(12))  # every step, and the photo
    assert {frame.image.size for frame in frames} == {(64, 48)}
    resized = result.resize((64, 48), Image.Resampling.LANCZOS, reducing_gap=3.0)
    assert frames[-1].image.tobytes() == resized.tobytes()


def test_capturing_frames_reads_nothing_more_off_the_device(
    vgg_state: dict[str, Tensor], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each host read is a wait for the GPU; the copies are made on the device, so a painting
    # with a timelapse reads exactly as many values as one without, and paints the same.
    stylist = Stylist(weights=vgg_state, device="cpu", clock=lambda: 0.0)
    photo, painting = make_photo(128, 96), make_painting()
    counts, results = [], []
    for timelapse in (None, Timelapse(photo)):
        with host_reads(monkeypatch) as reads:
            (result,) = stylist.paint_batch(
                [Commission(photo, painting, SETTINGS, on_step=timelapse)]
            )
        counts.append(reads[0])
        assert isinstance(result, Image.Image)
        results.append(result.tobytes())
    assert counts[0] == counts[1]
    assert results[0] == results[1]


def test_frames_of_a_batch_replayed_from_graphs_are_each_jobs_own(
    vgg_state: dict[str, Tensor], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The graph path (a recorder that fails any host read or moved tensor inside a replay):
    # frames are copied between replays, and each job of the batch gets its own.
    recorder = StrictRecorder(monkeypatch)
    graphed = Stylist(weights=vgg_state, device="cpu", graphs=True, make_recorder=lambda: recorder)
    photos = [make_photo(128, 96), make_photo(96, 128)]
    paintings = [make_painting(), make_painting(seed=9)]
    settings = [SETTINGS, SETTINGS.replace(keep_colors=True)]
    timelapses = [Timelapse(photo) for photo in photos]
    outcomes = graphed.paint_batch(
        [
            Commission(photo, painting, s, on_step=timelapse)
            for photo, painting, s, timelapse in zip(
                photos, paintings, settings, timelapses, strict=True
            )
        ]
    )
    assert recorder.recorded == 2 and recorder.replayed > 0
    for outcome, timelapse in zip(outcomes, timelapses, strict=True):
        assert isinstance(outcome, Image.Image)
        frames = timelapse.frames()
        assert len(frames) == 30
        assert frames[-1].image.tobytes() == outcome.tobytes()
        assert {frame.image.size for frame in frames} == {outcome.size}


# ----------------------------------------------------------------------------------------------
# The plan of frames, driven with hand-made views


def view(step: int, total: int, value: int, side: int = 4) -> StepView:
    pixels = torch.full((3, side, side), value, dtype=torch.uint8)
    return StepView(
        scale=0,
        step=step,
        width=side,
        height=side,
        total_steps=total,
        render=lambda: Image.new("RGB", (side, side)),
        snapshot=pixels.clone,
    )


def test_a_scale_that_ends_early_fills_its_frames_with_the_canvas_as_it_stopped() -> None:
    timelapse = Timelapse(Image.new("RGB", (4, 4)), count=11)  # a frame every 2 of 20 steps
    for step in range(1, 6):
        timelapse(view(step, 20, step))
    timelapse(view(12, 20, 12))  # converged after step 5: progress jumps to the scale's end
    for step in range(13, 21):
        timelapse(view(step, 20, step))
    frames = timelapse.frames()
    assert [f.step for f in frames] == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20]
    kept = [f.image.getpixel((0, 0)) for f in frames[1:]]
    assert [value[0] for value in kept] == [2, 4, 12, 12, 12, 12, 14, 16, 18, 20]


def test_a_painting_started_again_smaller_starts_its_frames_again() -> None:
    timelapse = Timelapse(Image.new("RGB", (8, 8)), count=5)
    for step in range(1, 7):
        timelapse(view(step, 20, step, side=8))
    # Out of GPU memory at step 6: a new plan of 12 steps, counted on from 6.
    for step in range(7, 19):
        timelapse(view(step, 18, step, side=4))
    frames = timelapse.frames()
    assert [f.step for f in frames] == [0, 9, 12, 15, 18]
    assert {f.image.size for f in frames} == {(4, 4)}


def test_a_timelapse_needs_two_frames_and_a_painting() -> None:
    with pytest.raises(ValueError, match="at least 2 frames"):
        Timelapse(Image.new("RGB", (4, 4)), count=1)
    with pytest.raises(ValueError, match="no frames"):
        Timelapse(Image.new("RGB", (4, 4))).frames()
