"""Checks that need a CUDA GPU; prints what it saw (run on a GPU host, skipped elsewhere).

    python -m bench.gpu_check [--images DIR] [--out DIR]

1. The engine *process* on CUDA, driven by the bot's EngineClient exactly as in production:
   ready message and device kind, progress totals that never go backwards, previews, the
   result PNG and its timing (standard preset, tubingen x starry_night when present).
2. Out-of-memory handling: with the process's CUDA memory capped, a huge painting must retry
   once at a smaller size and say so in the progress note, then either finish or fail with the
   clear OutOfMemory message (never a raw CUDA error).

Weights are seeded random (no ImageNet download on the GPU host), so pictures are weak; the
figures and behaviours are what this checks.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from bench.engine_bench import IMAGES, load_inputs, random_weights
from engine import protocol
from engine.client import EngineClient, JobUpdate
from engine.errors import OutOfMemory
from engine.progress import Progress
from engine.stylize import Stylist


async def engine_process(folder: Path, weights: Path, photo: Path, painting: Path) -> None:
    print("\n== The engine process on CUDA (EngineClient -> engine.worker)")
    client = EngineClient(protocol.EngineConfig(device="cuda", weights=str(weights)))
    started = time.perf_counter()
    await client.start()
    ready = time.perf_counter() - started
    print(f"ready in {ready:.1f}s: device {client.device}, kind {client.device_kind}")
    updates: list[JobUpdate] = []
    job = protocol.PaintJob(
        job_id="gpu1",
        photo_path=str(photo),
        painting_path=str(painting),
        result_path=str(folder / "gpu_standard.png"),
        options=protocol.PaintOptions(quality="standard", seed=1),
        preview_every=1.0,
    )
    started = time.perf_counter()
    outcome = await client.run(job, updates.append)
    wall = time.perf_counter() - started
    await client.close()
    progress = [u for u in updates if isinstance(u, protocol.JobProgress)]
    steps = [p.step for p in progress]
    print(f"outcome: {type(outcome).__name__}, wall {wall:.1f}s")
    if isinstance(outcome, protocol.JobDone):
        print(
            f"painted {outcome.width}x{outcome.height} in {outcome.seconds:.1f}s, "
            f"{outcome.steps} steps, {outcome.work / outcome.seconds:.3g} pixel-iterations/s"
        )
    else:
        print(f"  {outcome}")
    print(
        f"progress messages: {len(progress)}, monotonic: {steps == sorted(steps)}, "
        f"last {progress[-1].percent if progress else 0:.1f}%, "
        f"previews: {sum(1 for p in progress if p.preview_jpeg)}"
    )


def out_of_memory(
    state: dict[str, torch.Tensor], photo_img: Image.Image, painting_img: Image.Image
) -> None:
    print("\n== Out of memory: CUDA memory capped at 3 GiB, high preset at 4096 px")
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(3 * 2**30 / total)
    stylist = Stylist(weights=state, device="cuda")
    settings = stylist.settings_for(
        protocol.PaintOptions(quality="draft", seed=0), long_side=4096, preview_every=0.0
    )
    notes: list[str] = []

    def watch(progress: Progress) -> None:
        if progress.note and progress.note not in notes:
            notes.append(progress.note)

    try:
        result = stylist.paint(photo_img, painting_img, settings, on_progress=watch)
        print(f"finished after the retry at {result.size[0]}x{result.size[1]}")
    except OutOfMemory as error:
        print(f"OutOfMemory raised with message: {error.message}")
    except Exception as error:  # the check: this line must not appear
        print(f"UNEXPECTED {type(error).__name__}: {error}")
    print(f"progress notes: {notes or 'none'}")
    torch.cuda.set_per_process_memory_fraction(1.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_check")
    parser.add_argument("--images", type=Path, default=IMAGES)
    parser.add_argument("--out", type=Path, default=None, help="where to keep the result PNG")
    args, _ = parser.parse_known_args(argv)
    if not torch.cuda.is_available():
        print("gpu_check skipped: CUDA is not available here")
        return 0
    print(f"gpu_check: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    state = random_weights()
    photo_img, painting_img, source = load_inputs(args.images)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.out or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        weights = Path(tmp) / "vgg19_random.pth"
        torch.save(state, weights)
        photo, painting = Path(tmp) / "photo.png", Path(tmp) / "painting.png"
        photo_img.save(photo)
        painting_img.save(painting)
        print(f"images: {source}")
        asyncio.run(engine_process(folder, weights, photo, painting))
        out_of_memory(state, photo_img, painting_img)
    return 0


if __name__ == "__main__":
    sys.exit(main())
