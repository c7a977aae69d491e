"""The sandboxed decoder: one member image decoded in a short-lived, capped child process.

The bot holds the chat tokens, so it never decodes a member's image itself (a 2 KB file can
claim a picture that takes most of a gigabyte to decode). What decoding it still needs, a
status picture or a full check, runs here: ``bot/sandbox.py`` starts
``python -B -m engine.decoder --memory-mb N --cpu-seconds S`` with the secrets removed from its
environment and talks to it over stdin and stdout:

- request: one JSON line ``{"task": "thumbnail" | "check" | "fit", "role": ..., "max_bytes":
  ..., "max_side": ..., "budget": ...}``, then the image's bytes up to end of file; or, for a
  picture made of several (:mod:`engine.sheets`), ``{"task": "sheet", "lengths": [...],
  "captions": [...], "columns": ..., "tile": ...}`` or ``{"task": "podium", "lengths": [...],
  "places": [...], "lines": [[...], ...]}``, then the images one after the other (``lengths``
  bytes each; an empty one is drawn as a plain tile);
- answer: one JSON line, then for a thumbnail or a fit the encoded bytes (``length`` of them):
  ``{"ok": true, "format", "width", "height", "frames"}`` for a check,
  ``{"ok": true, "length": n}`` for a thumbnail, a sheet or a podium (a JPEG),
  ``{"ok": true, "length": n, "kind": "png" | "jpeg"}`` for a fit (the image in at most
  ``budget`` bytes: :func:`engine.images.encode_for_budget`, for an upload limit),
  ``{"ok": false, "kind": "image", "error": "TruncatedImage", "message": ...}`` for the
  member's file (``error`` names an :class:`engine.images.ImageError` subclass), or
  ``{"ok": false, "kind": "resources", "message": ...}`` when the memory cap was reached.

The limits (address space, CPU seconds, no files written, no core dumps) are set first thing,
before Pillow is imported or a byte of the image is read. Past the CPU limit the kernel ends the
process; the bot's own wall-clock timeout covers the rest. Pillow only: never imports torch.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
from typing import TYPE_CHECKING, Any, BinaryIO, Final

if TYPE_CHECKING:
    from engine.images import ImageError, ImageInfo

DEFAULT_MEMORY_MB: Final = 768
DEFAULT_CPU_SECONDS: Final = 10
TASKS: Final = ("thumbnail", "check", "fit", "sheet", "podium")
COMPOSED: Final = ("sheet", "podium")  # pictures made of several images
# Decoding takes up to about 20 bytes of memory per pixel (libwebp's two canvases, Pillow's
# copy, orientation and conversion). An image that big may have failed for want of memory,
# even where Pillow reports damage (libwebp cannot say which), so it is not blamed on the file.
DECODE_BYTES_PER_PIXEL: Final = 20


def apply_limits(memory_bytes: int, cpu_seconds: int) -> None:
    """Cap this process: address space, CPU time (then SIGXCPU, then SIGKILL), no files, no core."""
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.decoder", description=__doc__)
    parser.add_argument("--memory-mb", type=int, default=DEFAULT_MEMORY_MB)
    parser.add_argument("--cpu-seconds", type=int, default=DEFAULT_CPU_SECONDS)
    args = parser.parse_args(argv)
    memory_bytes = args.memory_mb * 1024 * 1024
    apply_limits(memory_bytes, args.cpu_seconds)
    request = json.loads(sys.stdin.buffer.readline() or b"{}")
    data = sys.stdin.buffer.read()
    answer, body = handle(request, data, memory_bytes)
    _write(sys.stdout.buffer, answer, body)
    return 0


def handle(request: dict[str, Any], data: bytes, memory_bytes: int) -> tuple[dict[str, Any], bytes]:
    """Run one request; return the answer line's fields and the bytes that follow it."""
    from engine import images  # Pillow is imported under the limits

    task = request.get("task")
    if task not in TASKS:
        raise SystemExit(f"unknown task {task!r}")
    if task in COMPOSED:
        try:
            return _composed(request, data)
        except MemoryError:
            return _out_of_memory("picture"), b""
    role = str(request.get("role", "photo"))
    max_bytes = int(request.get("max_bytes", images.MAX_INPUT_BYTES))
    try:
        # The header alone settles most refusals, and gives the size for what follows.
        info = images.admit(data, role=role, max_bytes=max_bytes)
    except images.ImageError as error:
        return _image_error(error), b""
    try:
        if task == "check":
            probed = images.probe(data, role=role, max_bytes=max_bytes)
            return {"ok": True, "frames": info.frames, **_fields(probed)}, b""
        if task == "fit":
            budget = max(images.MIN_BUDGET_BYTES, int(request.get("budget", 0)))
            img = images.load_image(data, role=role, max_bytes=max_bytes)
            encoded, kind = images.encode_for_budget(img, budget)
            return {"ok": True, "length": len(encoded), "kind": kind}, encoded
        max_side = int(request.get("max_side", 256))
        jpeg = images.thumbnail_jpeg(data, max_side=max_side, role=role)
        return {"ok": True, "length": len(jpeg)}, jpeg
    except MemoryError:
        return _out_of_memory(role), b""
    except images.ImageError as error:
        if info.width * info.height * DECODE_BYTES_PER_PIXEL > memory_bytes:
            return _out_of_memory(role), b""
        return _image_error(error), b""


def _composed(request: dict[str, Any], data: bytes) -> tuple[dict[str, Any], bytes]:
    """A contact sheet or a podium from the images in ``data`` (``lengths`` bytes each)."""
    from engine import sheets

    lengths = [int(n) for n in request.get("lengths", [])]
    if any(n < 0 for n in lengths) or sum(lengths) != len(data):
        raise SystemExit(f"lengths {lengths} do not add up to the {len(data)} bytes sent")
    parts, start = [], 0
    for length in lengths:
        parts.append(data[start : start + length])
        start += length
    if request["task"] == "sheet":
        captions = [str(c) for c in request.get("captions", [])]
        if len(captions) != len(parts):
            raise SystemExit("a sheet needs one caption per image")
        picture = sheets.contact_sheet(
            [sheets.Tile(part, caption) for part, caption in zip(parts, captions, strict=True)],
            columns=int(request.get("columns", 4)),
            tile=int(request.get("tile", 192)),
        )
    else:
        places = [int(p) for p in request.get("places", [])]
        lines = [tuple(str(x) for x in group) for group in request.get("lines", [])]
        if not len(places) == len(lines) == len(parts):
            raise SystemExit("a podium needs a place and lines per image")
        picture = sheets.podium(
            [
                sheets.Place(place, part, group)
                for place, part, group in zip(places, parts, lines, strict=True)
            ],
            tile=int(request.get("tile", sheets.PODIUM_TILE)),
        )
    return {"ok": True, "length": len(picture)}, picture


def _fields(info: ImageInfo) -> dict[str, Any]:
    return {"format": info.format, "width": info.width, "height": info.height}


def _image_error(error: ImageError) -> dict[str, Any]:
    return {"ok": False, "kind": "image", "error": type(error).__name__, "message": error.message}


def _out_of_memory(role: str) -> dict[str, Any]:
    return {
        "ok": False,
        "kind": "resources",
        "message": f"The {role} needs more memory to open than I allow.",
    }


def _write(out: BinaryIO, answer: dict[str, Any], body: bytes) -> None:
    out.write(json.dumps(answer).encode() + b"\n")
    out.write(body)
    out.flush()


if __name__ == "__main__":
    sys.exit(main())
