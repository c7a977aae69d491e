"""The engine's speed table (issue 13), beside plain torchvision VGG-19, in one run.

    python -m bench.speed_bench [--device cuda|cpu|auto] [--quick] [--images DIR]

Rows, each printed with the issue's target:

1. Iterations per second at 1024 and 512 px: plain ``torchvision.models.vgg19().features``
   (forward to pool5 and gradient to the input; fp32 and bf16 autocast, the way a user would
   write it) against Atelier's whole iteration (network, losses, optimiser; on CUDA
   channels-last, bf16 autocast and the iteration replayed as a CUDA graph). Atelier's rate is
   measured as the difference of two paintings of 40 and 140 iterations, so set-up, warm-up and
   graph recording are left out.
2. The standard preset at 1024 px and the draft preset at 512 px end to end for one job: the
   first painting (cuDNN autotuning and graph recording for its shapes included) and again.
3. Four jobs at 512 px (draft preset, four photos and paintings): painted as one batch against
   one at a time, both after a warm-up painting of the same shapes.
4. Peak GPU memory of the standard preset: one job, and a batch of four.
5. The engine process from spawn to its EngineReady message, and the worker's own figure.

Weights are seeded random (timing does not depend on them). With ``--device cpu`` every size is
divided by 4 (``--quick``: by 8, with fewer iterations), so the script can be checked end to end
where there is no GPU: those figures say nothing about a GPU, and the table says so.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from bench import naive_reference as naive
from bench.engine_bench import IMAGES, random_weights
from engine import protocol
from engine.paint_settings import PaintSettings
from engine.stylize import Commission, Stylist

PAIRS = (
    ("tubingen.jpg", "starry_night.jpg"),
    ("golden_gate.jpg", "the_scream.jpg"),
    ("hoovertowernight.jpg", "woman-with-hat-matisse.jpg"),
    ("shipwreck.jpg", "starry_night.jpg"),
)
RATE_STEPS = (40, 140)  # Atelier's iterations/s: the difference between these two paintings


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def load_pairs(folder: Path) -> list[tuple[Image.Image, Image.Image]]:
    """Four photo-painting pairs from the test images, or generated ones."""
    from bench.engine_bench import generated_painting, generated_photo

    pairs = []
    for i, (photo, painting) in enumerate(PAIRS):
        p, q = folder / photo, folder / painting
        if p.is_file() and q.is_file():
            pairs.append((Image.open(p).convert("RGB"), Image.open(q).convert("RGB")))
        else:
            pairs.append((generated_photo(640 - 40 * i, 480), generated_painting(seed=i)))
    return pairs


def square(img: Image.Image) -> Image.Image:
    side = min(img.size)
    left, top = (img.width - side) // 2, (img.height - side) // 2
    return img.crop((left, top, left + side, top + side))


def gpu_settings(quality: str, long_side: int, steps: tuple[int, ...] | None) -> PaintSettings:
    """The GPU preset of ``quality`` (whatever the device), at ``long_side``, seeded."""
    settings = PaintSettings.from_options(
        protocol.PaintOptions(quality=quality, seed=0), "gpu", preview_every=0.0
    )
    settings = settings.replace(long_side=long_side)
    return settings.replace(steps=steps) if steps else settings


def timed(device: torch.device, run: Callable[[], object]) -> float:
    synchronize(device)
    started = time.perf_counter()
    run()
    synchronize(device)
    return time.perf_counter() - started


# ----------------------------------------------------------------------------------------------
# 1. Iterations per second


def plain_rate(
    vgg: nn.Sequential, size: int, device: torch.device, dtype: torch.dtype | None, reps: int
) -> float:
    """Forward to pool5 and gradient to the input, as a user of torchvision would write it."""
    x = torch.rand(1, 3, size, size, device=device, requires_grad=True)

    def once() -> None:
        x.grad = None
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            out = vgg((x - naive.MEAN.to(device)) / naive.STD.to(device))
        out.float().pow(2).mean().backward()

    def repeat() -> None:
        for _ in range(reps):
            once()

    once()
    return reps / timed(device, repeat)


def atelier_rate(stylist: Stylist, photo: Image.Image, painting: Image.Image, size: int) -> float:
    """Atelier's whole iteration at ``size`` x ``size``: two paintings, 40 and 140 steps."""
    photo = square(photo).resize((size, size), Image.Resampling.LANCZOS)
    times = []
    for steps in RATE_STEPS:
        settings = gpu_settings("standard", size, (steps,))

        def paint(settings: PaintSettings = settings) -> None:
            stylist.paint(photo, painting, settings)

        times.append(timed(stylist.device, paint))
    return (RATE_STEPS[1] - RATE_STEPS[0]) / max(1e-9, times[1] - times[0])


# ----------------------------------------------------------------------------------------------
# 5. Start to ready


def _worker_entry(config: protocol.EngineConfig, conn: object) -> None:
    from engine import worker

    worker.main(config, conn)  # type: ignore[arg-type]


def start_to_ready(device: str, weights: Path) -> tuple[float, float]:
    """Spawn the engine process as the bot does; seconds until EngineReady, and its own."""
    ctx = multiprocessing.get_context("spawn")
    ours, theirs = ctx.Pipe()
    config = protocol.EngineConfig(device=device, weights=str(weights), log_level="WARNING")
    started = time.perf_counter()
    process = ctx.Process(target=_worker_entry, args=(config, theirs), daemon=True)
    process.start()
    message = ours.recv()
    wall = time.perf_counter() - started
    ours.send(protocol.Shutdown())
    process.join(timeout=60)
    if not isinstance(message, protocol.EngineReady):
        raise RuntimeError(f"the engine did not start: {message}")
    return wall, message.seconds


# ----------------------------------------------------------------------------------------------


class Table:
    """Rows of figure, measured, target; a row that fails says so and the table goes on."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str]] = []

    def add(self, figure: str, target: str, measure: Callable[[], str]) -> None:
        try:
            value = measure()
        except Exception as error:  # one broken row must not lose the others
            value = f"FAILED: {type(error).__name__}: {error}"[:120]
        self.rows.append((figure, value, target))
        print(f"  {figure}: {value}   (target {target})", flush=True)

    def print(self) -> None:
        width = max(len(r[0]) for r in self.rows)
        vwidth = max(len(r[1]) for r in self.rows)
        print(f"\n{'figure':<{width}}  {'measured':<{vwidth}}  target")
        for figure, value, target in self.rows:
            print(f"{figure:<{width}}  {value:<{vwidth}}  {target}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.speed_bench", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--device", default="auto", help="cuda, cpu or auto (default)")
    parser.add_argument("--quick", action="store_true", help="smaller and fewer (a CPU check)")
    parser.add_argument("--images", type=Path, default=IMAGES, help="folder of the test images")
    args, _ = parser.parse_known_args(argv)
    stylist_device = None if args.device == "auto" else args.device
    state = random_weights()
    stylist = Stylist(weights=state, device=stylist_device)
    device = stylist.device
    cuda = device.type == "cuda"
    shrink = 1 if cuda else (8 if args.quick else 4)
    big, small = 1024 // shrink, 512 // shrink
    fewer = args.quick and not cuda

    def preset(quality: str, size: int) -> PaintSettings:
        """The GPU preset at ``size``; with --quick on CPU, a tenth of its steps."""
        settings = gpu_settings(quality, size, None)
        if fewer:
            settings = settings.replace(steps=tuple(max(2, n // 10) for n in settings.steps))
        return settings

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    name = torch.cuda.get_device_name(device) if cuda else "CPU"
    print(
        f"speed bench: {device} ({name}), torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, load {load:.2f}, random weights"
    )
    if not cuda:
        print(
            f"NOT A GPU RUN: sizes divided by {shrink}; these figures check the script only "
            "and say nothing about the GPU targets."
        )
    pairs = load_pairs(args.images)
    photo, painting = pairs[0]
    table = Table()
    plain = naive.plain_vgg19(state, device)
    reps = 3 if args.quick else 20
    bf16 = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else None

    # 1. Iterations per second, plain VGG-19 beside Atelier's whole iteration.
    for size, target in ((big, ">= 250"), (small, ">= 800")):

        def plain_rates(size: int = size) -> str:
            fp32 = plain_rate(plain, size, device, None, reps)
            half = f"{plain_rate(plain, size, device, bf16, reps):.1f}" if bf16 else "n/a"
            return f"{fp32:.1f} / {half}"

        def ours(size: int = size) -> str:
            return f"{atelier_rate(stylist, photo, painting, size):.1f}"

        table.add(f"{size} px iterations/s, plain VGG-19 fp32 / bf16", "-", plain_rates)
        table.add(f"{size} px iterations/s, Atelier (whole iteration)", target, ours)

    # 2. Presets end to end, one job.
    for quality, size, target in (("standard", big, "<= 1.0 s"), ("draft", small, "<= 0.5 s")):
        settings = preset(quality, size)

        def end_to_end(settings: PaintSettings = settings) -> str:
            first = timed(device, lambda: stylist.paint(photo, painting, settings))
            again = timed(device, lambda: stylist.paint(photo, painting, settings))
            return f"first {first:.2f} s, again {again:.2f} s ({settings.total_steps} steps)"

        table.add(f"{quality} preset ({size} px) end to end, one job", target, end_to_end)

    # 3. Four members at 512 px: one batch against one at a time.
    draft = preset("draft", small)
    commissions = [Commission(p, q, draft) for p, q in pairs]

    def batched() -> str:
        stylist.paint_batch(commissions)  # warm-up: the batch's shapes
        for p, q in pairs:
            stylist.paint(p, q, draft)  # warm-up: each job's own shapes
        together = timed(device, lambda: stylist.paint_batch(commissions))
        alone = timed(device, lambda: [stylist.paint(p, q, draft) for p, q in pairs])
        return f"{alone / together:.2f}x (batch {together:.2f} s, one at a time {alone:.2f} s)"

    table.add(f"4 members at {small} px: batched throughput vs one at a time", ">= 2x", batched)

    # 4. Peak GPU memory, standard preset.
    standard = preset("standard", big)

    def memory() -> str:
        if not cuda:
            return "n/a (CUDA only)"
        figures = []
        for batch in (1, 4):
            stylist.workspaces.clear()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            jobs = [Commission(p, q, standard) for p, q in pairs[:batch]]
            stylist.paint_batch(jobs)
            figures.append(torch.cuda.max_memory_allocated(device) / 2**30)
        return f"one job {figures[0]:.2f} GiB, batch of 4 {figures[1]:.2f} GiB"

    table.add("peak GPU memory, standard preset: one job / batch of 4", "printed", memory)

    # 5. Start to ready.
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "vgg19-random.pth"
        torch.save(state, weights)

        def ready() -> str:
            wall, own = start_to_ready(str(device), weights)
            return f"{wall:.1f} s from spawn ({own:.1f} s in the worker, weights included)"

        table.add("engine start to ready", "within seconds", ready)

    print(f"\ngraphs recorded by the workspaces still held: {stylist.workspaces.recorded()}")
    table.print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
