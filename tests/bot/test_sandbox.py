"""Tests for bot/sandbox.py: real decoder child processes, started by the real Sandbox."""

from __future__ import annotations

import asyncio
import io
import json
import multiprocessing
import multiprocessing.queues
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bot.sandbox import DecoderFailed, Sandbox, child_environment, scrub_environment
from engine.images import ImageInfo, NotAnImage, TruncatedImage

TOKEN = "123456:telegram-secret-token-value"


def encode(img: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """1.9 KB of one-colour lossless WebP claiming 16000 × 3000: ~750 MB to decode."""
    return encode(Image.new("RGB", (16000, 3000), (200, 30, 40)), "WEBP", lossless=True)


def high_water_mark() -> int:
    """This process's peak resident memory in bytes, since the last reset."""
    with open("/proc/self/status") as status:
        match = re.search(r"VmHWM:\s+(\d+) kB", status.read())
    assert match is not None
    return int(match.group(1)) * 1024


def reset_high_water_mark() -> None:
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")


@dataclass
class Children:
    """Child processes seen at the call that starts them."""

    live: int = 0
    peak: int = 0
    started: int = 0
    spawned: asyncio.Event = field(default_factory=asyncio.Event)


@pytest.fixture
def children(monkeypatch: pytest.MonkeyPatch) -> Iterator[Children]:
    """Count the child processes alive at once; fail if one is left unreaped."""
    seen = Children()
    real = asyncio.create_subprocess_exec

    async def spawn(*args: Any, **kwargs: Any) -> asyncio.subprocess.Process:
        process = await real(*args, **kwargs)
        seen.live += 1
        seen.started += 1
        seen.peak = max(seen.peak, seen.live)
        seen.spawned.set()
        wait = process.wait
        reaped = False

        async def wait_and_count() -> int:
            nonlocal reaped
            code = await wait()
            if not reaped:
                reaped = True
                seen.live -= 1
            return code

        process.wait = wait_and_count  # type: ignore[method-assign]
        return process

    monkeypatch.setattr(asyncio, "create_subprocess_exec", spawn)
    yield seen
    assert seen.live == 0, "a child process was left behind"


# --- child_environment --------------------------------------------------------------------------


def test_child_environment_drops_secrets_by_name_and_by_value() -> None:
    base = {
        "PATH": "/usr/bin",
        "CUDA_VISIBLE_DEVICES": "0",
        "ATELIER_DATA_DIR": "/data",
        "DISCORD_TOKEN": "discord-value",
        "TELEGRAM_TOKEN": TOKEN,
        "token": "lower-case name",
        "AWS_SECRET_ACCESS_KEY": "a",
        "DB_PASSWORD": "b",
        "OPENAI_API_KEY": "c",
        "SOME_URL": f"https://api.example/bot{TOKEN}/",  # the value holds a secret
        "TOKENIZER": "kept: the name only starts with TOKEN",
    }

    env = child_environment([TOKEN, ""], base)

    assert env == {
        "PATH": "/usr/bin",
        "CUDA_VISIBLE_DEVICES": "0",
        "ATELIER_DATA_DIR": "/data",
        "TOKENIZER": "kept: the name only starts with TOKEN",
    }


def test_child_environment_defaults_to_this_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEGRAM_TOKEN", TOKEN)
    monkeypatch.setenv("ATELIER_TEST_MARK", "here")

    env = child_environment()

    assert env["ATELIER_TEST_MARK"] == "here"
    assert "TELEGRAM_TOKEN" not in env


def test_scrub_environment_applies_the_same_rule_in_place() -> None:
    environ = {"PATH": "/bin", "TELEGRAM_TOKEN": TOKEN, "UPSTREAM": f"x/bot{TOKEN}", "HOME": "/h"}

    removed = scrub_environment([TOKEN], environ)

    assert sorted(removed) == ["TELEGRAM_TOKEN", "UPSTREAM"]
    assert environ == {"PATH": "/bin", "HOME": "/h"}


def report_environment(answers: multiprocessing.queues.Queue[dict[str, str]]) -> None:
    answers.put(dict(os.environ))


def test_a_spawned_process_inherits_the_scrubbed_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TELEGRAM_TOKEN", TOKEN)
    monkeypatch.setenv("ATELIER_TEST_MARK", "here")
    saved = dict(os.environ)
    try:
        scrub_environment([TOKEN])
        # Started the way the engine client starts the engine: multiprocessing's spawn.
        context = multiprocessing.get_context("spawn")
        answers: multiprocessing.queues.Queue[dict[str, str]] = context.Queue()
        child = context.Process(target=report_environment, args=(answers,))
        child.start()
        seen = answers.get(timeout=60)
        child.join(timeout=60)
    finally:
        os.environ.clear()
        os.environ.update(saved)

    assert seen["ATELIER_TEST_MARK"] == "here"
    assert "TELEGRAM_TOKEN" not in seen
    assert all(TOKEN not in value for value in seen.values())


async def test_the_child_process_gets_no_secret(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TELEGRAM_TOKEN", TOKEN)
    monkeypatch.setenv("DISCORD_TOKEN", "discord-secret")
    monkeypatch.setenv("ATELIER_UPSTREAM", f"https://x/bot{TOKEN}")
    dump = tmp_path / "environment.json"
    # A stand-in child that records the environment it was given, then answers a check.
    script = (
        "import json, os, sys; sys.stdin.buffer.read(); "
        f"open({str(dump)!r}, 'w').write(json.dumps(dict(os.environ))); "
        "print(json.dumps({'ok': True, 'format': 'PNG', 'width': 64, 'height': 48}))"
    )
    box = Sandbox(secrets=[TOKEN], command=[sys.executable, "-c", script])

    assert await box.check(b"anything") == ImageInfo("PNG", 64, 48)

    seen = json.loads(dump.read_text())
    assert "PATH" in seen
    assert not {"TELEGRAM_TOKEN", "DISCORD_TOKEN", "ATELIER_UPSTREAM"} & set(seen)
    assert all(TOKEN not in value for value in seen.values())


# --- answers --------------------------------------------------------------------------------------


async def test_thumbnail_through_a_real_child(children: Children) -> None:
    data = encode(Image.effect_noise((600, 300), 40).convert("RGB"), "PNG")

    jpeg = await Sandbox().thumbnail(data, max_side=128)

    with Image.open(io.BytesIO(jpeg)) as thumb:
        assert (thumb.format, thumb.size) == ("JPEG", (128, 64))
    assert children.started == 1


async def test_fit_through_a_real_child(children: Children) -> None:
    """A picture too big for an upload comes back in the budget: a PNG if it fits, else JPEG."""
    picture = Image.effect_noise((400, 300), 60).convert("RGB")
    png = encode(picture, "PNG")

    same, kind = await Sandbox().fit(png, len(png) + 10)
    smaller, smaller_kind = await Sandbox().fit(png, 20_000)

    assert kind == "png"
    assert Image.open(io.BytesIO(same)).size == (400, 300)
    assert smaller_kind == "jpeg"
    assert len(smaller) <= 20_000
    with Image.open(io.BytesIO(smaller)) as fitted:
        assert fitted.format == "JPEG"
    assert children.started == 2


async def test_a_contact_sheet_and_a_podium_through_a_real_child(children: Children) -> None:
    """Pictures made of several images come back as JPEGs laid out as asked; a bomb among the
    images is a plain tile (the capped child refuses to decode it), not a failed sheet."""
    red = encode(Image.new("RGB", (80, 80), (220, 30, 30)), "PNG")
    blue = encode(Image.new("RGB", (60, 90), (30, 40, 220)), "JPEG")
    box = Sandbox()

    sheet = await box.sheet([(red, "red"), (blue, "blue"), (b"", "gone")], columns=2, tile=96)
    podium = await box.podium([(1, red, ("1st", "alice", "2 votes")), (2, blue, ("2nd", "bob"))])

    with Image.open(io.BytesIO(sheet)) as img:
        assert img.format == "JPEG"
        gap = 12
        assert img.width == gap + 2 * (96 + gap)
        r, g, b = img.convert("RGB").getpixel((gap + 48, gap + 48))
        assert r > 180 and g < 80 and b < 80  # the first tile is red
    with Image.open(io.BytesIO(podium)) as img:
        assert img.format == "JPEG"
        assert img.width == gap + 2 * (320 + gap)
    assert children.started == 2


async def test_a_decode_bomb_in_a_sheet_is_a_plain_tile(bomb: bytes) -> None:
    green = encode(Image.new("RGB", (64, 64), (30, 200, 40)), "PNG")

    sheet = await Sandbox(memory_bytes=256 * 2**20).sheet(
        [(bomb, "bomb"), (green, "fine")], tile=64
    )

    with Image.open(io.BytesIO(sheet)) as img:
        pixels = img.convert("RGB")
        assert pixels.getpixel((12 + 64 + 12 + 32, 12 + 32))[1] > 150  # green, second tile


async def test_check_through_a_real_child() -> None:
    data = encode(Image.new("RGB", (90, 60), (1, 2, 3)), "TIFF")

    assert await Sandbox().check(data, role="painting") == ImageInfo("TIFF", 90, 60, 1)


async def test_the_members_file_errors_come_back_as_image_errors() -> None:
    box = Sandbox()
    lossless = encode(Image.effect_noise((128, 128), 60).convert("RGB"), "WEBP", lossless=True)
    middle = len(lossless) // 2
    damaged = lossless[:middle] + b"\xff" * 64 + lossless[middle + 64 :]

    with pytest.raises(TruncatedImage) as truncated:
        await box.check(damaged, role="painting")
    assert truncated.value.message.startswith("The painting file is damaged or incomplete")
    with pytest.raises(NotAnImage):
        await box.thumbnail(b"plain text, no picture" * 10)


async def test_over_the_memory_cap_is_decoder_failed(bomb: bytes) -> None:
    box = Sandbox(memory_bytes=256 * 2**20)

    with pytest.raises(DecoderFailed) as failed:
        await box.thumbnail(bomb)

    assert failed.value.reason == "memory"
    assert failed.value.message == "The photo needs more memory to open than I allow."


async def test_a_child_past_the_timeout_is_killed(children: Children) -> None:
    # Starting Python alone takes longer than this.
    box = Sandbox(timeout=0.001)

    with pytest.raises(DecoderFailed) as failed:
        await box.thumbnail(encode(Image.new("RGB", (64, 64)), "PNG"))

    assert failed.value.reason == "time"
    assert children.live == 0


async def test_a_broken_answer_is_decoder_failed() -> None:
    box = Sandbox(command=[sys.executable, "-c", "print('hello')"])

    with pytest.raises(DecoderFailed) as failed:
        await box.check(b"x")

    assert failed.value.reason == "crashed"
    assert failed.value.message == "I couldn't open the photo. Try sending it again."


async def test_a_cancelled_request_leaves_no_child(children: Children, bomb: bytes) -> None:
    task = asyncio.create_task(Sandbox().check(bomb))
    await children.spawned.wait()

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The fixture checks that the child was killed and reaped.


# --- bounded, and never blocking ----------------------------------------------------------------


@pytest.mark.parametrize("at_once", [1, 2])
async def test_a_burst_runs_at_most_at_once_children(children: Children, at_once: int) -> None:
    data = encode(Image.effect_noise((256, 256), 40).convert("RGB"), "PNG")
    box = Sandbox(at_once=at_once)

    thumbs = await asyncio.gather(*(box.thumbnail(data, max_side=32) for _ in range(5)))

    assert len(thumbs) == 5
    assert children.started == 5
    assert children.peak == at_once


async def test_the_event_loop_runs_while_a_child_decodes(bomb: bytes) -> None:
    task = asyncio.create_task(Sandbox(memory_bytes=256 * 2**20).thumbnail(bomb))
    for _ in range(5):
        await asyncio.sleep(0)

    # Had the request blocked the loop, it would be over before this coroutine ran again.
    assert not task.done()
    with pytest.raises(DecoderFailed):
        await task


async def test_eight_bombs_leave_the_bot_process_memory_flat(
    bomb: bytes, children: Children
) -> None:
    box = Sandbox(memory_bytes=256 * 2**20)
    reset_high_water_mark()
    before = high_water_mark()

    outcomes = await asyncio.gather(
        *(box.thumbnail(bomb) for _ in range(8)), return_exceptions=True
    )

    growth = high_water_mark() - before
    print(f"8 bombs through the sandbox: bot peak RSS +{growth / 2**20:.1f} MB")
    assert all(isinstance(o, DecoderFailed) and o.reason == "memory" for o in outcomes)
    assert children.peak == 1
    assert growth < 30 * 2**20


def test_at_once_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at_once"):
        Sandbox(at_once=0)
