"""Tests for engine/decoder.py, always as its own process (its limits would cap pytest)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

REPO = Path(__file__).parents[2]


def encode(img: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def noise(size: tuple[int, int]) -> Image.Image:
    return Image.effect_noise(size, 60).convert("RGB")


def corrupt_middle(data: bytes) -> bytes:
    """Overwrite bytes in the middle: the structure stays whole, the compressed data does not."""
    middle = len(data) // 2
    return data[:middle] + b"\xff" * 64 + data[middle + 64 :]


def run(
    request: dict[str, Any], data: bytes, *flags: str
) -> tuple[int, dict[str, Any] | None, bytes]:
    result = subprocess.run(
        [sys.executable, "-B", "-m", "engine.decoder", *flags],
        input=json.dumps(request).encode() + b"\n" + data,
        capture_output=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )
    line, _, body = result.stdout.partition(b"\n")
    return result.returncode, json.loads(line) if line else None, body


def test_thumbnail_is_a_small_oriented_jpeg() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 400 × 300, shown 300 × 400
    data = encode(noise((400, 300)), "PNG", exif=exif.tobytes())

    code, answer, body = run({"task": "thumbnail", "max_side": 100}, data)

    assert code == 0
    assert answer == {"ok": True, "length": len(body)}
    with Image.open(io.BytesIO(body)) as thumb:
        assert thumb.format == "JPEG"
        assert thumb.size == (75, 100)


def test_check_reports_what_probe_sees() -> None:
    first, *rest = [Image.new("RGB", (90, 60), (30 * i, 0, 0)) for i in range(3)]
    data = encode(first, "GIF", save_all=True, append_images=rest)

    code, answer, body = run({"task": "check", "role": "painting"}, data)

    assert (code, body) == (0, b"")
    assert answer == {"ok": True, "format": "GIF", "width": 90, "height": 60, "frames": 3}


@pytest.mark.parametrize(
    ("fmt", "params"), [("WEBP", {"lossless": True}), ("GIF", {})], ids=["webp", "gif"]
)
def test_check_finds_damage_the_header_hides(fmt: str, params: dict[str, object]) -> None:
    data = corrupt_middle(encode(noise((128, 128)), fmt, **params))

    code, answer, _ = run({"task": "check", "role": "painting"}, data)

    assert code == 0
    assert answer is not None
    assert answer["kind"] == "image"
    assert answer["error"] == "TruncatedImage"
    assert answer["message"].startswith("The painting file is damaged or incomplete")


def test_refusals_from_the_header_name_their_error() -> None:
    code, answer, _ = run({"task": "thumbnail", "role": "photo"}, b"not an image at all" * 8)

    assert code == 0
    assert answer is not None
    assert (answer["ok"], answer["kind"], answer["error"]) == (False, "image", "NotAnImage")
    assert "Send a PNG, JPEG, WebP, BMP, GIF or TIFF file." in answer["message"]


@pytest.mark.parametrize("task", ["thumbnail", "check"])
def test_memory_cap_is_reported_as_such_not_as_damage(task: str) -> None:
    # 1.9 KB, 48 megapixels: decoding needs ~750 MB, over a 256 MB cap. libwebp then only says
    # "could not create decoder"; the member's file must not be called damaged for it.
    bomb = encode(Image.new("RGB", (16000, 3000), (200, 30, 40)), "WEBP", lossless=True)

    code, answer, _ = run({"task": task}, bomb, "--memory-mb=256")

    assert code == 0
    assert answer == {
        "ok": False,
        "kind": "resources",
        "message": "The photo needs more memory to open than I allow.",
    }


def test_limits_are_applied_to_the_process() -> None:
    code = (
        "import json, resource; from engine.decoder import apply_limits; "
        "apply_limits(300 * 2**20, 7); "
        "print(json.dumps([resource.getrlimit(getattr(resource, n)) for n in "
        "('RLIMIT_AS', 'RLIMIT_CPU', 'RLIMIT_FSIZE', 'RLIMIT_CORE')]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, cwd=REPO, check=True, timeout=60
    )

    assert json.loads(result.stdout) == [[300 * 2**20] * 2, [7, 8], [0, 0], [0, 0]]


def test_unknown_task_fails_without_an_answer() -> None:
    code, answer, _ = run({"task": "paint"}, b"")

    assert code != 0
    assert answer is None


def test_decoder_does_not_import_torch() -> None:
    code = "import sys, engine.decoder; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], check=False, cwd=REPO).returncode == 0
