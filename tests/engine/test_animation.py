"""Animations of a timelapse: an animated WebP for Discord, an H.264 MP4 for Telegram."""

from __future__ import annotations

import io
from pathlib import Path

import av
import pytest
from PIL import Image

from engine import animation


def frames(count: int = 30, size: tuple[int, int] = (96, 64)) -> list[Image.Image]:
    """Frames that differ: a square moving across a gradient."""
    out = []
    for n in range(count):
        img = Image.new("RGB", size, (20, 40 + 4 * n, 200 - 3 * n))
        img.paste((250, 200, 30), (2 * n, 10, 2 * n + 20, 30))
        out.append(img)
    return out


def test_the_webp_loops_every_frame_for_about_four_seconds() -> None:
    data = animation.encode(frames(), "webp")
    with Image.open(io.BytesIO(data)) as webp:
        assert webp.format == "WEBP" and webp.is_animated
        assert webp.n_frames == 30
        assert webp.size == (96, 64)
        assert webp.info.get("loop") == 0
        durations = []
        for index in range(webp.n_frames):
            webp.seek(index)
            webp.load()  # a frame's duration is read with its pixels
            durations.append(webp.info["duration"])
    assert durations == [100] * 29 + [1000]  # the painting itself is held for a second
    assert 3.0 <= sum(durations) / 1000 <= 5.0


def test_the_mp4_is_h264_without_sound_as_telegram_animations_want(tmp_path: Path) -> None:
    data = animation.encode(frames(size=(97, 65)), "mp4")  # odd sides: cropped to even
    path = tmp_path / "timelapse.mp4"
    path.write_bytes(data)
    with av.open(str(path)) as box:
        assert [s.type for s in box.streams] == ["video"]
        stream = box.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.pix_fmt == "yuv420p"
        decoded = [frame.to_image() for frame in box.decode(stream)]
        assert stream.duration is not None and stream.time_base is not None
        seconds = float(stream.duration * stream.time_base)
    assert {img.size for img in decoded} == {(96, 64)}
    assert len(decoded) == 29 + 10  # the last frame held for a second at 10 frames a second
    assert 3.0 <= seconds <= 5.0
    # The index comes first, so a player can start before the whole file has arrived.
    assert data.index(b"moov") < data.index(b"mdat")
    # And it shows the frames: the last decoded one is the last frame, up to compression.
    last = frames(size=(97, 65))[-1].crop((0, 0, 96, 64))
    diffs = [abs(a - b) for a, b in zip(decoded[-1].tobytes(), last.tobytes(), strict=True)]
    assert sum(diffs) / len(diffs) < 8


@pytest.mark.parametrize(
    ("size", "fitted"),
    [((1024, 768), (640, 480)), ((768, 1024), (480, 640)), ((300, 201), (300, 200))],
)
def test_animations_fit_640_px_and_even_sides(
    size: tuple[int, int], fitted: tuple[int, int]
) -> None:
    assert animation.fit(size) == fitted


def test_bad_requests_are_refused_clearly() -> None:
    with pytest.raises(ValueError, match="unknown animation format 'gif'"):
        animation.encode(frames(2), "gif")
    with pytest.raises(ValueError, match="one size"):
        animation.encode([*frames(2), *frames(1, (10, 10))], "webp")
    with pytest.raises(ValueError, match="at least one frame"):
        animation.encode([], "mp4")
