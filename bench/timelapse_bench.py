"""What a timelapse costs, and what a pinned library style saves (issue 14), in one run.

    python -m bench.timelapse_bench [--device cuda|cpu|auto] [--quick] [--images DIR]

Rows:

1. Painting time without and with the timelapse capture (the per-step hook keeping 29 frames as
   device-side copies), the same job on the same warm Stylist, runs alternated after a warm-up
   of each (so CUDA graphs and cuDNN's choices are made before anything is timed); medians and
   the difference in percent. Target: under 5 %. Beside it, the host time spent inside the hook
   (on a CPU the whole cost of the copies; on a GPU the time to launch them), which a noisy
   machine's run-to-run spread does not blur.
2. After the painting: the frames brought to the host and resized (640 px), the animated WebP
   and the MP4 encoded; seconds each, as a share of the painting time, and the file sizes.
   On a CPU, also the encoding of 30 frames at the animation size of a GPU painting (640x480).
3. A library painting's first use: painted with an empty style cache against painted after
   ``Stylist.warm`` (what a pinned style gets while the engine is idle), and the warm-up's time.

The job is the standard GPU preset at 1024 px; on a CPU, the CPU hosts' draft preset (256 px,
26 Adam steps; 128 px with ``--quick``), which says nothing about a GPU. Weights are seeded
random: timing does not depend on them.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image

from bench.engine_bench import IMAGES, random_weights, synchronize
from bench.speed_bench import Table, gpu_settings, load_pairs
from engine import animation, protocol
from engine.paint_settings import PaintSettings
from engine.progress import StepView
from engine.stylize import Commission, Stylist
from engine.timelapse import Timelapse


class TimedHook:
    """A timelapse with the host time spent in it summed (on a GPU, launching the copies)."""

    def __init__(self, timelapse: Timelapse) -> None:
        self.timelapse = timelapse
        self.seconds = 0.0

    def __call__(self, view: StepView) -> None:
        started = time.perf_counter()
        self.timelapse(view)
        self.seconds += time.perf_counter() - started


def paint_seconds(
    stylist: Stylist,
    photo: Image.Image,
    painting: Image.Image,
    settings: PaintSettings,
    hook: TimedHook | None,
) -> float:
    synchronize(stylist.device)
    started = time.perf_counter()
    (outcome,) = stylist.paint_batch([Commission(photo, painting, settings, on_step=hook)])
    synchronize(stylist.device)
    if isinstance(outcome, Exception):
        raise outcome
    return time.perf_counter() - started


def alternate(
    stylist: Stylist,
    photo: Image.Image,
    painting: Image.Image,
    settings: PaintSettings,
    repeats: int,
) -> tuple[list[float], list[float], list[float], Timelapse]:
    """Painting seconds without and with capture, alternated, after one warm-up of each; the
    host seconds spent in the hook, per run; the last timelapse."""
    without: list[float] = []
    with_capture: list[float] = []
    in_hook: list[float] = []
    hook = TimedHook(Timelapse(photo))
    for run in range(repeats + 1):
        plain = paint_seconds(stylist, photo, painting, settings, None)
        hook = TimedHook(Timelapse(photo))
        captured = paint_seconds(stylist, photo, painting, settings, hook)
        if run > 0:
            without.append(plain)
            with_capture.append(captured)
            in_hook.append(hook.seconds)
        print(
            f"    run {run}: {plain:.3f} s without, {captured:.3f} s with capture "
            f"({hook.seconds * 1000:.1f} ms in the hook)",
            flush=True,
        )
    return without, with_capture, in_hook, hook.timelapse


def seconds_of(work: Callable[[], object]) -> tuple[float, object]:
    started = time.perf_counter()
    value = work()
    return time.perf_counter() - started, value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.timelapse_bench", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--device", default="auto", help="cuda, cpu or auto (default)")
    parser.add_argument("--quick", action="store_true", help="smaller and fewer (a CPU check)")
    parser.add_argument("--images", type=Path, default=IMAGES, help="folder of the test images")
    parser.add_argument("--repeats", type=int, help="timed runs of each kind (default 3)")
    args, _ = parser.parse_known_args(argv)
    stylist = Stylist(
        weights=random_weights(), device=None if args.device == "auto" else args.device
    )
    device = stylist.device
    cuda = device.type == "cuda"
    if cuda:
        settings = gpu_settings("standard", 1024, None)
    else:  # the CPU hosts' own preset, as members get it
        options = protocol.PaintOptions(quality="draft", seed=0)
        settings = PaintSettings.from_options(options, "cpu", preview_every=0.0)
        if args.quick:
            settings = settings.replace(long_side=128)
    repeats = args.repeats or (2 if args.quick else 3)
    name = torch.cuda.get_device_name(device) if cuda else "CPU"
    print(
        f"timelapse bench: {device} ({name}), torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; {settings.long_side} px, steps {settings.steps}"
    )
    if not cuda:
        print("NOT A GPU RUN: the CPU draft preset; these figures say nothing about a GPU.")
    (photo, painting), *others = load_pairs(args.images)
    table = Table()
    runs: dict[str, object] = {}

    def capture() -> str:
        without, with_capture, in_hook, timelapse = alternate(
            stylist, photo, painting, settings, repeats
        )
        plain, captured = statistics.median(without), statistics.median(with_capture)
        hook = statistics.median(in_hook)
        runs.update(plain=plain, timelapse=timelapse)
        extra = 100 * (captured - plain) / plain
        return (
            f"{plain:.3f} s without, {captured:.3f} s with capture: {extra:+.1f} %; "
            f"in the hook {hook * 1000:.1f} ms, {100 * hook / plain:.2f} % "
            f"(medians of {repeats}; {len(timelapse.steps)} frames)"
        )

    table.add("painting time, timelapse capture", "< 5 % extra", capture)

    def encoding() -> str:
        timelapse = runs["timelapse"]
        plain = runs["plain"]
        assert isinstance(timelapse, Timelapse) and isinstance(plain, float)
        final = timelapse.frames()[-1].image.size
        size = animation.fit(final)
        frame_s, frames = seconds_of(lambda: [f.image for f in timelapse.frames(size)])
        assert isinstance(frames, list)
        parts = [f"frames {frame_s:.2f} s"]
        total = frame_s
        for fmt in animation.FORMATS:
            took, data = seconds_of(lambda fmt=fmt: animation.encode(frames, fmt))
            assert isinstance(data, bytes)
            total += took
            parts.append(f"{fmt} {took:.2f} s {len(data) / 1e6:.2f} MB")
        return (
            f"{', '.join(parts)} at {size[0]}x{size[1]}: {total:.2f} s in all, "
            f"{100 * total / plain:.0f} % of the painting"
        )

    table.add("timelapse after painting (host)", "figure only", encoding)

    def encoding_at_gpu_size() -> str:
        # What a GPU host's CPU does after a 1024 px painting: 30 frames at 640 px. Here the
        # frames fade from the photo into the painting (texture of both, as a timelapse has).
        size = animation.fit((1024, 768))
        start = photo.resize(size, Image.Resampling.LANCZOS)
        end = painting.resize(size, Image.Resampling.LANCZOS)
        frames = [Image.blend(start, end, n / 29) for n in range(30)]
        parts, total = [], 0.0
        for fmt in animation.FORMATS:
            took, data = seconds_of(lambda fmt=fmt: animation.encode(frames, fmt))
            assert isinstance(data, bytes)
            total += took
            parts.append(f"{fmt} {took:.2f} s {len(data) / 1e6:.2f} MB")
        return f"{', '.join(parts)} at {size[0]}x{size[1]}: {total:.2f} s in all"

    if not cuda:
        table.add("encoding at a 1024 px painting's size", "figure only", encoding_at_gpu_size)

    def library() -> str:
        library_painting = others[0][1] if others else painting
        stylist.cache.clear()
        cold = paint_seconds(stylist, photo, library_painting, settings, None)
        stylist.cache.clear()
        synchronize(device)
        warm_s, _ = seconds_of(lambda: stylist.warm(library_painting, settings))
        synchronize(device)
        misses = stylist.cache.misses
        warmed = paint_seconds(stylist, photo, library_painting, settings, None)
        assert stylist.cache.misses == misses, "the warmed painting missed the cache"
        return f"{cold:.3f} s cold, {warmed:.3f} s warmed ahead (the warm-up: {warm_s:.3f} s)"

    table.add("library style, first painting", "as fast as a repeat", library)
    table.print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
