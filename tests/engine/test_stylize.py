"""The optimisation: planning, progress, cancel, determinism, colour, caching, retries."""

from __future__ import annotations

import io
import itertools
from collections.abc import Callable
from dataclasses import replace

import pytest
import torch
from PIL import Image
from torch import Tensor

from engine import easel, protocol, schedule, stylize
from engine.easel import Easel
from engine.errors import Cancelled, OutOfMemory
from engine.paint_settings import PaintSettings
from engine.progress import Progress, StepView
from engine.schedule import Scale
from engine.stylize import Stylist

from ..conftest import make_painting, make_photo
from .test_lbfgs import host_reads

# Tiny and quick: one 64 px scale (the 32 px one is dropped, its steps carried).
FAST = PaintSettings(long_side=64, steps=(3, 3), tv_weight=0.0, preview_every=0.0)


@pytest.fixture(scope="module")
def stylist(vgg_state: dict[str, Tensor]) -> Stylist:
    return Stylist(weights=vgg_state, device="cpu")


def chroma_distance(a: Image.Image, b: Image.Image) -> float:
    """Mean absolute difference of the Cb and Cr channels (0-255)."""
    ca, cb = a.convert("YCbCr").tobytes(), b.convert("YCbCr").tobytes()
    diffs = [abs(x - y) for i, (x, y) in enumerate(zip(ca, cb, strict=True)) if i % 3]
    return sum(diffs) / len(diffs)


# ----------------------------------------------------------------------------------------------
# Planning


@pytest.mark.parametrize("size", [(1024, 768), (100, 80), (600, 100), (100, 600), (3000, 500)])
def test_the_bots_estimate_plans_what_the_stylist_paints(
    stylist: Stylist, size: tuple[int, int]
) -> None:
    # The bot estimates work with schedule.plan on the bare preset, before the job starts.
    for quality, kind in itertools.product(schedule.QUALITIES, schedule.DEVICE_KINDS):
        settings = PaintSettings.from_options(protocol.PaintOptions(quality=quality), kind)
        estimate = schedule.plan(*size, schedule.PRESETS[(quality, kind)])
        assert stylist.plan(size, settings) == estimate


def test_the_stylist_plans_with_the_smallest_input_of_its_layers(stylist: Stylist) -> None:
    shallow = PaintSettings(
        long_side=128, steps=(4, 5), content_layer="relu2_2", style_layers=("relu1_1", "relu2_1")
    )
    # Two poolings' worth (4 px) is enough here, so the 64x11 scale stays (16 px would drop it).
    assert stylist.plan((600, 100), shallow) == (Scale(64, 11, 4), Scale(128, 21, 5))
    deep = shallow.replace(content_layer="relu4_2", style_layers=("relu5_1",))
    assert stylist.plan((600, 100), deep) == (Scale(128, 21, 9),)


# ----------------------------------------------------------------------------------------------
# Painting


def test_paint_returns_a_fresh_image_of_the_planned_size(stylist: Stylist) -> None:
    photo = make_photo(64, 48).convert("RGBA")
    photo.info["comment"] = b"secret"
    out = stylist.paint(photo, make_painting(), FAST)
    assert out.mode == "RGB"
    assert out.size == (64, 48)
    assert out.info == {}
    assert out.getexif() == {}


def test_progress_is_monotonic_and_ends_at_100_percent(stylist: Stylist) -> None:
    seen: list[Progress] = []
    settings = FAST.replace(long_side=128, steps=(4, 3))
    stylist.paint(make_photo(128, 96), make_painting(), settings, on_progress=seen.append)
    assert [p.step for p in seen] == list(range(1, 8))
    assert {p.total_steps for p in seen} == {7}
    assert {p.scales for p in seen} == {2}
    assert [p.scale for p in seen] == [0] * 4 + [1] * 3
    assert [(p.width, p.height) for p in seen] == [(64, 48)] * 4 + [(128, 96)] * 3
    percents = [p.percent for p in seen]
    assert percents == sorted(percents)
    assert percents[-1] == 100.0
    assert seen[0].eta is None
    assert all(p.eta is not None and p.eta >= 0 for p in seen[1:])
    assert seen[-1].eta == 0.0
    elapsed = [p.elapsed for p in seen]
    assert elapsed == sorted(elapsed)
    assert set(seen[-1].losses) == {"content", "style", "total"}
    assert all(v >= 0 for v in seen[-1].losses.values())


def test_lbfgs_lowers_the_objective(stylist: Stylist) -> None:
    seen: list[Progress] = []
    stylist.paint(make_photo(), make_painting(), FAST.replace(steps=(12,)), on_progress=seen.append)
    assert seen[-1].losses["total"] < 0.8 * seen[0].losses["total"]


def test_lbfgs_does_not_depend_on_the_objectives_scale(stylist: Stylist) -> None:
    # The objective is normalised per scale, so multiplying every weight by 1e-6 (a tiny
    # objective, where torch's absolute thresholds would stall L-BFGS) paints the same picture.
    settings = FAST.replace(steps=(8,))
    tiny = settings.replace(content_weight=1e-6, style_weight=settings.style_weight * 1e-6)
    a = stylist.paint(make_photo(), make_painting(), settings).tobytes()
    b = stylist.paint(make_photo(), make_painting(), tiny).tobytes()
    assert max(abs(x - y) for x, y in zip(a, b, strict=True)) <= 1
    assert a != make_photo().tobytes()


def test_previews_come_at_the_interval_as_small_jpegs(vgg_state: dict[str, Tensor]) -> None:
    ticks = itertools.count()
    stylist = Stylist(weights=vgg_state, device="cpu", clock=lambda: float(next(ticks)))
    seen: list[Progress] = []
    stylist.paint(
        make_photo(),
        make_painting(),
        FAST.replace(steps=(8,), preview_every=3.0),
        on_progress=seen.append,
    )
    previews = [p.preview_jpeg for p in seen if p.preview_jpeg is not None]
    # One clock tick per evaluation: a preview every third step, not every step.
    assert 2 <= len(previews) <= 3
    img = Image.open(io.BytesIO(previews[0]))
    assert img.format == "JPEG"
    assert img.size == (64, 48)


def test_previews_respect_the_preview_side(vgg_state: dict[str, Tensor]) -> None:
    ticks = itertools.count()
    stylist = Stylist(weights=vgg_state, device="cpu", clock=lambda: float(next(ticks)))
    seen: list[Progress] = []
    settings = FAST.replace(steps=(4,), preview_every=1.0, preview_side=32)
    stylist.paint(make_photo(), make_painting(), settings, on_progress=seen.append)
    sizes = {Image.open(io.BytesIO(p.preview_jpeg)).size for p in seen if p.preview_jpeg}
    assert sizes == {(32, 24)}


def test_painting_reads_few_numbers_off_the_device(
    vgg_state: dict[str, Tensor], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each read of a tensor's value is a synchronisation on CUDA: L-BFGS needs two a step, the
    # progress losses are read at the first step and the end of each scale (the clock stands
    # still here, so no interval passes), never once per step.
    stylist = Stylist(weights=vgg_state, device="cpu", clock=lambda: 0.0)
    seen: list[Progress] = []
    steps = 12
    with host_reads(monkeypatch) as reads:
        stylist.paint(
            make_photo(), make_painting(), FAST.replace(steps=(steps,)), on_progress=seen.append
        )
    assert [p.step for p in seen] == list(range(1, steps + 1))
    assert reads[0] <= 2 * steps + 4
    # Between reads, progress carries the losses as last read.
    assert all(p.losses == seen[0].losses for p in seen[:-1])
    assert seen[-1].losses["total"] < seen[0].losses["total"]


def stop_after(n: int) -> tuple[Callable[[], bool], list[int]]:
    calls = [0]

    def should_stop() -> bool:
        calls[0] += 1
        return calls[0] > n

    return should_stop, calls


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_cancel_stops_within_one_iteration(stylist: Stylist, optimizer: str) -> None:
    seen: list[Progress] = []
    should_stop, _ = stop_after(2)
    with pytest.raises(Cancelled) as info:
        stylist.paint(
            make_photo(),
            make_painting(),
            FAST.replace(steps=(20,), optimizer=optimizer),
            on_progress=seen.append,
            should_stop=should_stop,
        )
    assert info.value.code == "cancelled"
    assert [p.step for p in seen] == [1, 2]


def test_seed_makes_noise_runs_byte_identical(stylist: Stylist) -> None:
    settings = FAST.replace(init="noise", seed=11)
    first = stylist.paint(make_photo(), make_painting(), settings)
    second = stylist.paint(make_photo(), make_painting(), settings)
    other = stylist.paint(make_photo(), make_painting(), settings.replace(seed=12))
    assert first.tobytes() == second.tobytes()
    assert first.tobytes() != other.tobytes()
    assert stylist.last_seed == 12


def test_keep_colors_keeps_the_photos_chroma(stylist: Stylist) -> None:
    photo, painting = make_photo(), make_painting()
    settings = FAST.replace(init="noise", seed=1, steps=(8,))
    free = stylist.paint(photo, painting, settings)
    kept = stylist.paint(photo, painting, settings.replace(keep_colors=True))
    assert kept.size == free.size == photo.size
    free_d, kept_d = chroma_distance(free, photo), chroma_distance(kept, photo)
    assert kept_d < free_d / 4  # measured: about 6 against 58 (the rest is gamut clipping)
    assert free_d > 20  # without keep_colors the painting's palette does come through


def test_adam_keeps_the_canvas_in_range(stylist: Stylist, monkeypatch: pytest.MonkeyPatch) -> None:
    # to_image clamps, so look at the canvas itself on its way out (previews at every step).
    extremes: list[tuple[float, float]] = []
    to_image = easel.to_image

    def recording(x: Tensor) -> Image.Image:
        extremes.append((x.min().item(), x.max().item()))
        return to_image(x)

    monkeypatch.setattr(easel, "to_image", recording)
    settings = FAST.replace(optimizer="adam", adam_lr=0.5, preview_every=1e-9)
    out = stylist.paint(make_photo(), make_painting(), settings, on_progress=lambda p: None)
    assert out.size == (64, 48)
    assert len(extremes) >= FAST.total_steps
    assert all(low >= 0.0 and high <= 1.0 for low, high in extremes)
    assert out.getextrema() != ((0, 0), (0, 0), (0, 0))


# ----------------------------------------------------------------------------------------------
# Style-target cache


def test_style_targets_are_cached_per_painting_and_size(vgg_state: dict[str, Tensor]) -> None:
    stylist = Stylist(weights=vgg_state, device="cpu", cache_size=2)
    painting = make_painting()
    stylist.paint(make_photo(), painting, FAST)
    assert (stylist.cache.hits, stylist.cache.misses) == (0, 1)
    stylist.paint(make_photo(64, 40), painting.copy(), FAST.replace(strength=9, style_weight=1.0))
    assert (stylist.cache.hits, stylist.cache.misses) == (1, 1)  # another photo, same painting
    stylist.paint(make_photo(), painting, FAST.replace(brush="large"))
    stylist.paint(make_photo(), make_painting(seed=8), FAST)
    assert stylist.cache.misses == 3
    assert len(stylist.cache) == 2  # bounded: the oldest entry went


def test_cached_targets_give_the_same_painting(stylist: Stylist) -> None:
    stylist.cache.clear()
    first = stylist.paint(make_photo(), make_painting(), FAST)
    again = stylist.paint(make_photo(), make_painting(), FAST)
    assert first.tobytes() == again.tobytes()


# ----------------------------------------------------------------------------------------------
# Out of memory


def paint_running_out_of_memory(
    vgg_state: dict[str, Tensor],
    monkeypatch: pytest.MonkeyPatch,
    failures: int,
    seen: list[Progress],
) -> list[int]:
    """Paint with a 'CUDA' Stylist whose first ``failures`` attempts run out of memory.

    Returns the long sides attempted; progress reports go to ``seen``.
    """
    stylist = Stylist(weights=vgg_state, device="cpu")
    stylist.device = torch.device("cuda")  # only the retry logic looks at it
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    tried: list[int] = []

    def paint_pass(easels: list[Easel]) -> None:
        (job,) = easels
        tried.append(max(job.plan[-1].width, job.plan[-1].height))
        job.tracker.step(0, lambda: {"total": 1.0}, lambda: job.photo)
        if len(tried) <= failures:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        job.finish(job.photo)

    monkeypatch.setattr(stylist, "_paint_pass", paint_pass)
    photo = make_photo(512, 384)
    stylist.paint(photo, make_painting(), FAST.replace(long_side=512), on_progress=seen.append)
    return tried


def test_cuda_out_of_memory_retries_once_smaller_and_says_so(
    vgg_state: dict[str, Tensor], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Progress] = []
    assert paint_running_out_of_memory(vgg_state, monkeypatch, 1, seen) == [512, 384]
    assert [p.note for p in seen] == [None, "out of GPU memory, retrying at 384 px"]
    assert seen[1].step == 2
    assert seen[1].total_steps == 1 + seen[0].total_steps  # totals keep counting: never backwards
    assert seen[1].percent >= seen[0].percent


def test_cuda_out_of_memory_twice_is_an_error(
    vgg_state: dict[str, Tensor], monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(OutOfMemory, match="384 px") as info:
        paint_running_out_of_memory(vgg_state, monkeypatch, 2, [])
    assert info.value.code == "out_of_memory"


# ----------------------------------------------------------------------------------------------
# Several paintings in one pass

BATCH = PaintSettings(long_side=128, steps=(6, 5), tv_weight=0.0, preview_every=0.0, seed=0)


def batch_commissions(seen: dict[str, list[Progress]]) -> list[stylize.Commission]:
    """Three jobs that differ in everything a job may: photo and its size (odd sides, portrait),
    painting, strength, brush, colours, TV, initialisation."""
    jobs = {
        "a": (make_photo(128, 96), make_painting(), BATCH),
        "b": (
            make_photo(96, 128),
            make_painting(seed=9),
            BATCH.replace(keep_colors=True, strength=7, style_weight=1.2e6, tv_weight=0.5),
        ),
        "c": (make_photo(131, 101), make_painting(), BATCH.replace(brush="large", init="noise")),
    }
    return [
        stylize.Commission(photo, painting, settings, on_progress=seen.setdefault(k, []).append)
        for k, (photo, painting, settings) in jobs.items()
    ]


def mean_abs_difference(a: Image.Image, b: Image.Image) -> float:
    pa, pb = a.tobytes(), b.tobytes()
    return sum(abs(x - y) for x, y in zip(pa, pb, strict=True)) / len(pa)


@pytest.fixture(scope="module")
def painted_alone(stylist: Stylist) -> dict[str, tuple[Image.Image, float]]:
    """Each batch job painted on its own: the picture and its final objective."""
    out = {}
    for key, commission in zip("abc", batch_commissions({}), strict=True):
        seen: list[Progress] = []
        image = stylist.paint(
            commission.photo, commission.painting, commission.settings, on_progress=seen.append
        )
        out[key] = (image, seen[-1].losses["total"])
    return out


def test_a_batched_painting_matches_the_same_job_painted_alone(
    stylist: Stylist, painted_alone: dict[str, tuple[Image.Image, float]]
) -> None:
    seen: dict[str, list[Progress]] = {}
    outcomes = stylist.paint_batch(batch_commissions(seen))
    for key, outcome in zip("abc", outcomes, strict=True):
        alone, objective = painted_alone[key]
        assert isinstance(outcome, Image.Image)
        assert outcome.size == alone.size
        assert seen[key][-1].losses["total"] == pytest.approx(objective, rel=0.02)
        # Out of 255. Float noise alone moves these 11 steps by about 1: the same job painted in
        # channels-last layout (the same maths summed in another order) differs by 0.9 to 1.3.
        assert mean_abs_difference(outcome, alone) < 3.0
        # Its own progress: every step, its own totals, to 100 %.
        assert [p.step for p in seen[key]] == list(range(1, 12))
        assert seen[key][-1].percent == 100.0
    # keep_colors kept its own chroma in the batch too.
    assert chroma_distance(outcomes[1], make_photo(96, 128)) < 10
    # One pass: both scales painted as a batch of three, padded to the largest canvas.
    shapes = {(s.batch, s.height, s.width) for s in stylist.workspaces.shapes()}
    assert {(3, 64, 64), (3, 128, 128)} <= shapes


def test_cancelling_one_job_of_a_batch_leaves_the_others_running(
    stylist: Stylist, painted_alone: dict[str, tuple[Image.Image, float]]
) -> None:
    seen: dict[str, list[Progress]] = {}
    finished: list[str] = []
    commissions = batch_commissions(seen)
    should_stop, _ = stop_after(3)
    commissions = [
        replace(c, on_outcome=lambda o, k=k: finished.append(k))
        for k, c in zip("abc", commissions, strict=True)
    ]
    commissions[1] = replace(commissions[1], should_stop=should_stop)
    outcomes = stylist.paint_batch(commissions)
    assert isinstance(outcomes[1], Cancelled)
    assert [p.step for p in seen["b"]] == [1, 2, 3]
    assert finished == ["b", "a", "c"]  # the cancel is reported at once, not at the end
    for key in "ac":
        image = outcomes["abc".index(key)]
        assert isinstance(image, Image.Image)
        assert seen[key][-1].losses["total"] == pytest.approx(painted_alone[key][1], rel=0.02)
        assert mean_abs_difference(image, painted_alone[key][0]) < 3.0


def test_an_odd_sized_job_padded_into_a_bucket_paints_as_unpadded(
    vgg_state: dict[str, Tensor],
) -> None:
    # A 101x77 photo: 128x128 and 64x64 buckets (the GPU's way), against its exact size.
    padded = Stylist(weights=vgg_state, device="cpu", bucket_quantum=64)
    exact = Stylist(weights=vgg_state, device="cpu")
    photo, painting = make_photo(101, 77), make_painting()
    runs = []
    for stylist in (padded, exact):
        seen: list[Progress] = []
        image = stylist.paint(photo, painting, BATCH, on_progress=seen.append)
        runs.append((image, seen[-1].losses["total"]))
    (shape,) = [s for s in padded.workspaces.shapes() if s.width == 128]
    assert (shape.height, shape.width, shape.masked) == (128, 128, True)
    assert runs[0][0].size == runs[1][0].size == (101, 77)
    assert runs[0][1] == pytest.approx(runs[1][1], rel=0.02)
    assert mean_abs_difference(runs[0][0], runs[1][0]) < 3.0


def test_jobs_that_cannot_share_a_pass_are_painted_one_after_another(stylist: Stylist) -> None:
    other = BATCH.replace(steps=(4, 3))  # other steps: another pass
    commissions = [
        stylize.Commission(make_photo(), make_painting(), BATCH),
        stylize.Commission(make_photo(), make_painting(), other),
        stylize.Commission(make_photo(), make_painting(), BATCH.replace(seed=5)),
    ]
    assert stylist.batch_key((64, 48), BATCH) != stylist.batch_key((64, 48), other)
    varied = BATCH.replace(strength=9, keep_colors=True, brush="small", seed=3)
    assert stylist.batch_key((64, 48), BATCH) == stylist.batch_key((48, 64), varied)
    outcomes = stylist.paint_batch(commissions)
    assert all(isinstance(o, Image.Image) for o in outcomes)


def test_a_job_with_bad_settings_fails_alone(stylist: Stylist) -> None:
    broken = BATCH.replace(steps=(5, 5))
    object.__setattr__(broken, "long_side", 99999)  # past validation, as a stale object could be
    outcomes = stylist.paint_batch(
        [
            stylize.Commission(make_photo(), make_painting(), broken),
            stylize.Commission(make_photo(), make_painting(), BATCH),
        ]
    )
    assert isinstance(outcomes[0], protocol.OptionError)
    assert isinstance(outcomes[1], Image.Image)


def test_channels_last_on_cpu_paints_the_same(vgg_state: dict[str, Tensor]) -> None:
    # The layout cuDNN wants on a GPU; on CPU it must give the same painting (up to float noise).
    nhwc = Stylist(weights=vgg_state, device="cpu", channels_last=True)
    plain = Stylist(weights=vgg_state, device="cpu", channels_last=False)
    assert nhwc.channels_last and not plain.channels_last
    totals = []
    for stylist in (nhwc, plain):
        seen: list[Progress] = []
        stylist.paint(
            make_photo(), make_painting(), FAST.replace(steps=(8,)), on_progress=seen.append
        )
        totals.append(seen[-1].losses["total"])
    assert totals[0] == pytest.approx(totals[1], rel=0.02)


def test_a_per_step_hook_sees_every_step_and_changes_nothing(stylist: Stylist) -> None:
    # The seam for keeping frames (a timelapse): called after every iteration, outside the
    # optimisation's maths; rendering the canvas there leaves the painting as it was.
    settings = BATCH.replace(steps=(3, 2))
    views: list[tuple[int, int, tuple[int, int]]] = []

    def hook(view: StepView) -> None:
        frame = view.render()
        views.append((view.scale, view.step, frame.size))
        assert frame.size == (view.width, view.height)

    photo, painting = make_photo(128, 96), make_painting()
    (hooked,) = stylist.paint_batch([stylize.Commission(photo, painting, settings, on_step=hook)])
    plain = stylist.paint(photo, painting, settings)
    assert [(s, n) for s, n, _ in views] == [(0, 1), (0, 2), (0, 3), (1, 4), (1, 5)]
    assert {size for _, _, size in views} == {(64, 48), (128, 96)}
    assert isinstance(hooked, Image.Image) and hooked.tobytes() == plain.tobytes()
