"""Admission under a decode-bomb burst: 8 requests at once from one member, before and after.

The bomb is a one-colour lossless WebP of 16000 x 3000 pixels: under 2 KB on the wire, within
the 50-megapixel limit, about 750 MB to decode. Two ways of admitting the burst, each in a fresh
process so that one's memory does not colour the other's:

- ``before``: what the bot did: :func:`engine.images.probe` (a full decode) for each request
  on the default thread pool, inside the bot process;
- ``after``: :func:`engine.images.admit` (headers only) in the bot process, then the full
  check in :class:`bot.sandbox.Sandbox`: a capped child process, one at a time;
- ``service``: the same burst through the real :class:`bot.service.PaintService` with that
  sandbox (a real SQLite file, an in-process fake engine), as the bot runs it now: the member's
  slot is reserved first, so the seven requests beyond the one-painting limit are refused
  before anything is checked.

Printed per run: what became of the 8 requests, the bot process's peak resident memory growth
(high-water mark reset first), the worst event-loop lag seen by a 10 ms ticker, wall seconds,
and the largest child process's peak memory (the sandbox's decoder).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from PIL import Image

from bot.errors import UserFacingError
from bot.jobs import PaintRequest
from bot.sandbox import DecoderFailed, Sandbox
from bot.service import PaintService
from bot.settings import Limits
from bot.store import Store
from engine import images
from tests.fakes import FakeEngine, png_bytes

REQUESTS = 8
SCENARIOS = ("before", "after", "service")
ROOT = Path(__file__).resolve().parents[1]


def bomb() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16000, 3000), (200, 30, 40)).save(buffer, "WEBP", lossless=True)
    return buffer.getvalue()


def status_mib(key: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(key)


async def lag_monitor(stop: asyncio.Event, worst: list[float]) -> None:
    tick = 0.01
    while not stop.is_set():
        before = time.perf_counter()
        await asyncio.sleep(tick)
        worst[0] = max(worst[0], time.perf_counter() - before - tick)


async def before(data: bytes) -> str:
    try:
        await asyncio.to_thread(images.probe, data)
    except images.ImageError as error:
        return type(error).__name__
    return "admitted"


async def after(data: bytes, sandbox: Sandbox) -> str:
    try:
        images.admit(data)  # headers only: microseconds, on the loop
        await sandbox.check(data)
    except images.ImageError as error:
        return type(error).__name__
    except DecoderFailed as failed:
        return f"not checked ({failed.reason}); the engine decides"
    return "admitted"


async def through_service(data: bytes, sandbox: Sandbox, folder: Path) -> list[str]:
    store = Store.open(folder / "atelier.sqlite3")
    service = PaintService(
        store=store,
        engine=FakeEngine(auto=False),
        limits=Limits(),
        data_dir=folder,
        sandbox=sandbox,
    )
    request = PaintRequest(
        platform="bench",
        chat_id="chat",
        user_id="bomber",
        user_name="Bomber",
        photo=data,
        painting=png_bytes((64, 64)),
    )
    async with service:
        results = await asyncio.gather(
            *(service.submit(request) for _ in range(REQUESTS)), return_exceptions=True
        )
    store.close()
    outcomes = []
    for result in results:
        if isinstance(result, UserFacingError):
            outcomes.append(f"refused ({type(result).__name__})")
        elif isinstance(result, BaseException):
            raise result
        else:
            outcomes.append("queued")
    return outcomes


async def burst(scenario: str) -> dict[str, object]:
    data = bomb()
    sandbox = Sandbox()
    # Peak memory from here on (Linux; building the bomb above peaks at ~150 MB).
    Path("/proc/self/clear_refs").write_text("5")
    rss_before = status_mib("VmRSS")
    stop, worst = asyncio.Event(), [0.0]
    monitor = asyncio.create_task(lag_monitor(stop, worst))
    await asyncio.sleep(0.05)  # the ticker's first lap
    started = time.perf_counter()
    if scenario == "before":
        outcomes = await asyncio.gather(*(before(data) for _ in range(REQUESTS)))
    elif scenario == "after":
        outcomes = await asyncio.gather(*(after(data, sandbox) for _ in range(REQUESTS)))
    else:
        with tempfile.TemporaryDirectory() as folder:
            outcomes = await through_service(data, sandbox, Path(folder))
    seconds = time.perf_counter() - started
    stop.set()
    await monitor
    return {
        "scenario": scenario,
        "bytes": len(data),
        "outcomes": dict(Counter(outcomes)),
        "rss_growth_mib": status_mib("VmHWM") - rss_before,
        "worst_lag_ms": worst[0] * 1000,
        "seconds": seconds,
        "child_peak_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }


def run_fresh(scenario: str) -> dict[str, object]:
    """One scenario in a fresh interpreter; its figures come back as JSON."""
    result = subprocess.run(
        [sys.executable, "-m", "bench.admission_bench", "--scenario", scenario],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    figures: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    return figures


def report(runs: list[dict[str, object]]) -> None:
    size = runs[0]["bytes"]
    print(
        f"{REQUESTS} requests at once from one member, each a {size}-byte WebP of "
        "16000 x 3000 (one colour, lossless)"
    )
    header = (
        f"{'run':<8} {'bot peak RSS growth':>20} {'worst loop lag':>15} {'wall':>7} "
        f"{'largest child':>14}"
    )
    print(header)
    print("-" * len(header))
    for run in runs:
        print(
            f"{run['scenario']!s:<8} {run['rss_growth_mib']:>17.0f} MB "
            f"{run['worst_lag_ms']:>12.0f} ms {run['seconds']:>6.1f}s "
            f"{run['child_peak_mib']:>11.0f} MB"
        )
    for run in runs:
        outcomes = run["outcomes"]
        assert isinstance(outcomes, dict)
        text = ", ".join(f"{count} {what}" for what, count in outcomes.items())
        print(f"  {run['scenario']}: {text}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.admission_bench", description=__doc__)
    parser.add_argument("--scenario", choices=SCENARIOS, help="run one, print JSON (internal)")
    parser.add_argument("--quick", action="store_true", help="(accepted; the run is short)")
    args, _ = parser.parse_known_args(argv)
    if args.scenario:
        print(json.dumps(asyncio.run(burst(args.scenario))))
        return 0
    report([run_fresh(scenario) for scenario in SCENARIOS])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
