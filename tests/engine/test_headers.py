"""Tests for engine/headers.py: structure read from chunk and block headers. Images made here."""

from __future__ import annotations

import io
import struct

import pytest
from PIL import Image

from engine import headers
from engine.headers import DamagedFile


def encode(img: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def frames(count: int, size: tuple[int, int] = (64, 48)) -> list[Image.Image]:
    return [Image.new("RGB", size, (40 * i % 256, 90, 200)) for i in range(count)]


# --- WebP ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "params", "first_chunk"),
    [
        ("RGB", {"quality": 80}, b"VP8 "),
        ("RGB", {"lossless": True}, b"VP8L"),
        ("RGBA", {"quality": 80}, b"VP8X"),  # lossy with alpha needs the extended header
    ],
    ids=["lossy", "lossless", "extended"],
)
def test_webp_size_read_from_each_kind_of_header(
    mode: str, params: dict[str, object], first_chunk: bytes
) -> None:
    data = encode(Image.new(mode, (333, 97)), "WEBP", **params)
    assert data[12:16] == first_chunk

    header = headers.webp_header(data)

    assert (header.width, header.height, header.frames, header.exif) == (333, 97, 1, None)


def test_webp_animation_counts_its_frames() -> None:
    first, *rest = frames(4)
    data = encode(first, "WEBP", save_all=True, append_images=rest, duration=50)

    assert headers.webp_header(data).frames == 4


def test_webp_exif_chunk_is_returned() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(Image.new("RGB", (64, 48)), "WEBP", exif=exif.tobytes())

    raw = headers.webp_header(data).exif

    assert raw is not None
    loaded = Image.Exif()
    loaded.load(raw)
    assert loaded[0x0112] == 6


@pytest.mark.parametrize("keep", [10, 20, 29, -1], ids=["riff", "chunk-header", "vp8-tag", "end"])
def test_cut_webp_is_damaged(keep: int) -> None:
    data = encode(Image.new("RGB", (200, 150), (9, 9, 9)), "WEBP", quality=90)

    with pytest.raises(DamagedFile):
        headers.webp_header(data[:keep])


def test_webp_chunk_longer_than_its_file_is_damaged() -> None:
    data = bytearray(encode(Image.new("RGB", (64, 64)), "WEBP", lossless=True))
    struct.pack_into("<I", data, 16, len(data))  # the first chunk claims more than there is

    with pytest.raises(DamagedFile, match="runs past"):
        headers.webp_header(bytes(data))


def test_webp_with_an_unknown_first_chunk_is_damaged() -> None:
    data = bytearray(encode(Image.new("RGB", (64, 64)), "WEBP", lossless=True))
    data[12:16] = b"ABCD"

    with pytest.raises(DamagedFile, match="unknown chunk"):
        headers.webp_header(bytes(data))


def test_is_webp() -> None:
    assert headers.is_webp(encode(Image.new("RGB", (8, 8)), "WEBP"))
    assert not headers.is_webp(encode(Image.new("RGB", (8, 8)), "PNG"))
    assert not headers.is_webp(b"RIFF\x00\x00\x00\x00WAVEfmt ")


# --- GIF ----------------------------------------------------------------------------------------


def test_gif_frames_are_counted() -> None:
    first, *rest = frames(5)
    data = encode(first, "GIF", save_all=True, append_images=rest)

    assert headers.gif_frames(data) == 5


def test_gif_cut_inside_its_first_frame_is_damaged() -> None:
    data = encode(Image.effect_noise((128, 128), 60).convert("L"), "GIF")

    with pytest.raises(DamagedFile):
        headers.gif_frames(data[: len(data) // 2])


def test_gif_cut_inside_a_later_frame_counts_the_whole_ones() -> None:
    first = Image.new("RGB", (64, 64), (250, 0, 0))
    noisy = [Image.effect_noise((64, 64), 80 + i).convert("RGB") for i in range(2)]
    data = encode(first, "GIF", save_all=True, append_images=noisy)

    assert headers.gif_frames(data[:-100]) == 2


def test_gif_without_trailer_is_accepted() -> None:
    data = encode(Image.new("L", (64, 64), 7), "GIF")
    assert data.endswith(b";")

    assert headers.gif_frames(data[:-1]) == 1


def test_gif_without_any_image_is_damaged() -> None:
    data = encode(Image.new("L", (64, 64), 7), "GIF")
    screen_end = 13 + 3 * 2 ** ((data[10] & 7) + 1)

    with pytest.raises(DamagedFile, match="no image"):
        headers.gif_frames(data[:screen_end] + b";")


# --- JPEG, extents ------------------------------------------------------------------------------


def test_jpeg_scan_offset_walks_the_segments() -> None:
    data = encode(Image.effect_noise((64, 64), 40).convert("RGB"), "JPEG")

    assert headers.jpeg_scan_offset(data) == data.index(b"\xff\xda")


@pytest.mark.parametrize(
    "data",
    [b"\x89PNG", b"\xff\xd8", b"\xff\xd8\xff\xe0\x00", b"\xff\xd8\xff\xe0\x00\x10JFIF"],
    ids=["not-jpeg", "start-only", "length-cut", "segment-cut"],
)
def test_jpeg_cut_before_its_scan_is_damaged(data: bytes) -> None:
    with pytest.raises(DamagedFile):
        headers.jpeg_scan_offset(data)


def test_jpeg_end_marker_is_searched_from_the_scan() -> None:
    data = encode(Image.effect_noise((64, 64), 40).convert("RGB"), "JPEG")
    # An application segment holding FF D9 (as an EXIF thumbnail does) before the scan.
    segment = b"\xff\xe9" + (2 + 6).to_bytes(2, "big") + b"\xff\xd9junk"
    marked = data[:2] + segment + data[2:]

    assert headers.jpeg_reaches_its_end(data)
    assert headers.jpeg_reaches_its_end(marked)
    assert not headers.jpeg_reaches_its_end(data[:-10])
    assert not headers.jpeg_reaches_its_end(marked[:-10])


def test_extents_fit() -> None:
    assert headers.extents_fit([(0, 10), (10, 90)], 100)
    assert not headers.extents_fit([(0, 10), (10, 91)], 100)
    assert not headers.extents_fit([(-1, 5)], 100)
    assert headers.extents_fit([], 0)
