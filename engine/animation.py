"""Short animations of a timelapse's frames: animated WebP and H.264 MP4.

Why two: Discord shows an animated WebP inline; Telegram's ``sendAnimation`` takes a GIF or an
H.264 MP4 without sound, and shows the MP4 as a looping animation. The MP4 is encoded with PyAV,
whose wheels carry FFmpeg and libx264 (a Python dependency, no system package); the WebP with
Pillow. Frames are shown :data:`FRAME_SECONDS` each and the last one (the painting) held for
:data:`HOLD_SECONDS`: 30 frames last about 4 s.

Animations are at most :data:`ANIMATION_SIDE` px on their long side: chat clients show them
smaller than that anyway, and this keeps the files small (a few MB at most, within every
platform's upload limit) and quick to encode. The MP4 needs even sides (4:2:0 chroma), so its
size is rounded down to even.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Final

from PIL import Image

ANIMATION_SIDE: Final = 640  # px, long side at most
FRAME_SECONDS: Final = 0.1
HOLD_SECONDS: Final = 1.0  # the last frame (the painting) stays this long
WEBP_QUALITY: Final = 80
WEBP_METHOD: Final = 0  # Pillow's fastest: method 4 was 3x slower for 20 % smaller files
MP4_CRF: Final = 23  # x264's default quality
FORMATS: Final = ("webp", "mp4")


def fit(size: tuple[int, int], side: int = ANIMATION_SIDE) -> tuple[int, int]:
    """``size`` scaled down (never up) to fit ``side`` on its long side, both sides even."""
    width, height = size
    scale = min(1.0, side / max(width, height))
    return max(2, round(width * scale) // 2 * 2), max(2, round(height * scale) // 2 * 2)


def durations(count: int) -> list[int]:
    """Milliseconds per frame: each frame FRAME_SECONDS, the last held HOLD_SECONDS."""
    return [round(FRAME_SECONDS * 1000)] * (count - 1) + [round(HOLD_SECONDS * 1000)]


def encode(frames: Sequence[Image.Image], fmt: str) -> bytes:
    """Encode ``frames`` (RGB, all of one size) as ``fmt``: one of :data:`FORMATS`."""
    if not frames:
        raise ValueError("an animation needs at least one frame")
    if len({frame.size for frame in frames}) != 1:
        raise ValueError("all frames of an animation must have one size")
    if fmt == "webp":
        return encode_webp(frames)
    if fmt == "mp4":
        return encode_mp4(frames)
    raise ValueError(f"unknown animation format {fmt!r}: use {', '.join(FORMATS)}")


def encode_webp(frames: Sequence[Image.Image]) -> bytes:
    """An animated WebP that loops, lossy (paintings are photographic)."""
    import io

    out = io.BytesIO()
    first, *rest = frames
    first.save(
        out,
        format="WEBP",
        save_all=True,
        append_images=rest,
        duration=durations(len(frames)),
        loop=0,
        quality=WEBP_QUALITY,
        method=WEBP_METHOD,
    )
    return out.getvalue()


def encode_mp4(frames: Sequence[Image.Image]) -> bytes:
    """An H.264 MP4 without sound, 4:2:0, the index at the front (plays while it downloads).

    A constant frame rate (1 / FRAME_SECONDS); the hold is the last frame repeated.
    """
    import av

    rate = Fraction(1) / Fraction(FRAME_SECONDS).limit_denominator(1000)
    hold = max(1, round(HOLD_SECONDS / FRAME_SECONDS))
    width, height = frames[0].size
    even = (width // 2 * 2, height // 2 * 2)
    sequence = [*frames[:-1], *[frames[-1]] * hold]
    # faststart moves the index in a second pass over the file, so it is written to a file.
    with tempfile.TemporaryDirectory(prefix="atelier-mp4-") as folder:
        path = Path(folder) / "timelapse.mp4"
        with av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"}) as box:
            stream = box.add_stream("libx264", rate=rate)
            stream.width, stream.height = even
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": str(MP4_CRF), "preset": "fast"}
            for picture in sequence:
                if picture.size != even:
                    picture = picture.crop((0, 0, *even))
                frame = av.VideoFrame.from_image(picture.convert("RGB"))
                box.mux(stream.encode(frame))
            box.mux(stream.encode(None))
        return path.read_bytes()
