"""Tests for engine/images.admit: header-only admission, as the bot process runs it.

Every image, decompression bombs included, is made here with Pillow. "No decoding" is shown
two ways: with Pillow's decoders patched to fail, and by the memory a fresh process uses.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageFile, WebPImagePlugin

from engine import images
from engine.images import (
    BadAspectRatio,
    FileTooLarge,
    ImageInfo,
    NotAnImage,
    TooManyPixels,
    TooSmall,
    TruncatedImage,
)

REPO = Path(__file__).parents[2]
FORMATS = [
    ("PNG", {}),
    ("JPEG", {}),
    ("JPEG", {"progressive": True}),
    ("WEBP", {"quality": 80}),
    ("WEBP", {"lossless": True}),
    ("BMP", {}),
    ("GIF", {}),
    ("TIFF", {}),
    ("TIFF", {"compression": "tiff_deflate"}),
]
FORMAT_IDS = ["png", "jpeg", "jpeg-progressive", "webp", "webp-lossless", "bmp", "gif", "tiff"]
FORMAT_IDS.append("tiff-deflate")


def encode(img: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def picture(size: tuple[int, int] = (200, 150)) -> Image.Image:
    return Image.effect_noise(size, 50).convert("RGB")


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if pixels are decoded, or libwebp's decoder (which allocates the canvas)
    is even created."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)
    monkeypatch.setattr(WebPImagePlugin._webp, "WebPAnimDecoder", refuse)


@pytest.fixture(scope="module")
def webp_bomb() -> bytes:
    """A one-colour lossless WebP of 16000 × 3000: under 2 KB, about 740 MB to decode."""
    data = encode(Image.new("RGB", (16000, 3000), (200, 30, 40)), "WEBP", lossless=True)
    assert len(data) < 4096
    return data


# --- what admit reports -------------------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "params"), FORMATS, ids=FORMAT_IDS)
def test_each_format_is_admitted_from_its_header(
    fmt: str, params: dict[str, object], no_decoding: None
) -> None:
    data = encode(picture((200, 150)), fmt, **params)

    assert images.admit(data) == ImageInfo(format=fmt, width=200, height=150, frames=1)


def test_the_webp_bomb_is_admitted_without_decoding(webp_bomb: bytes, no_decoding: None) -> None:
    # 48 megapixels is within the limit; what matters is that admitting it costs nothing.
    assert images.admit(webp_bomb) == ImageInfo("WEBP", 16000, 3000, 1)


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG", "TIFF"])
def test_animations_report_their_frames(fmt: str, no_decoding: None) -> None:
    first, *rest = [Image.new("RGB", (64, 48), (50 * i, 0, 99)) for i in range(5)]
    data = encode(first, fmt, save_all=True, append_images=rest)

    assert images.admit(data) == ImageInfo(format=fmt, width=64, height=48, frames=5)


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP", "TIFF"])
def test_exif_rotation_swaps_the_reported_size(fmt: str, no_decoding: None) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90°: stored 64 × 48, shown 48 × 64
    data = encode(picture((64, 48)), fmt, exif=exif.tobytes())

    info = images.admit(data)

    assert (info.width, info.height) == (48, 64)


# --- damaged files ------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:(Corrupt EXIF data|Truncated File Read):UserWarning")
@pytest.mark.parametrize(("fmt", "params"), FORMATS, ids=FORMAT_IDS)
@pytest.mark.parametrize("role", ["photo", "painting"])
def test_cut_files_are_damaged(fmt: str, params: dict[str, object], role: str) -> None:
    whole = encode(picture((200, 150)), fmt, **params)

    for keep in (len(whole) // 2, 40):
        with pytest.raises(TruncatedImage) as info:
            images.admit(whole[:keep], role=role)
        assert info.value.code == "bad_image"
        assert info.value.message.startswith(f"The {role} file is damaged or incomplete")


def test_jpeg_cut_after_an_embedded_end_marker_is_still_damaged() -> None:
    # An APP segment (like an EXIF thumbnail) holding FF D9 before the scan must not pass for
    # the end of the image.
    data = encode(picture((128, 128)), "JPEG")
    segment = b"\xff\xe9" + (2 + 6).to_bytes(2, "big") + b"\xff\xd9junk"
    with_marker = data[:2] + segment + data[2:]
    assert images.admit(with_marker).format == "JPEG"

    with pytest.raises(TruncatedImage):
        images.admit(with_marker[: len(with_marker) * 2 // 3])


def test_gif_whose_later_frame_is_cut_keeps_its_whole_frames() -> None:
    first = Image.new("RGB", (64, 64), (250, 0, 0))
    noisy = [Image.effect_noise((64, 64), 80 + i).convert("RGB") for i in range(2)]
    data = encode(first, "GIF", save_all=True, append_images=noisy)

    assert images.admit(data[:-100]).frames == 2
    assert images.load_image(data[:-100]).getpixel((5, 5)) == (250, 0, 0)  # the engine agrees


# --- limits and foreign files: the same answers as probe ----------------------------------------


def test_byte_limit_comes_before_anything_else(no_decoding: None) -> None:
    with pytest.raises(FileTooLarge) as info:
        images.admit(b"x" * 2048, role="painting", max_bytes=1024)
    assert info.value.message == ("The painting is 2 KB, over the 1 KB limit. Send a smaller file.")


def test_pixel_limit_is_checked_on_the_header(webp_bomb: bytes, no_decoding: None) -> None:
    png = encode(picture((64, 64)), "PNG")

    for data, size in ((webp_bomb, "16000 × 3000"), (png, "64 × 64")):
        with pytest.raises(TooManyPixels) as info:
            images.admit(data, role="photo", max_pixels=4000)
        assert info.value.code == "too_large"
        assert size in info.value.message


@pytest.mark.parametrize(
    ("size", "error"),
    [((31, 100), TooSmall), ((600, 99), BadAspectRatio)],
    ids=["small", "narrow"],
)
@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_shape_limits_match_probe(
    size: tuple[int, int], error: type[images.ImageError], fmt: str
) -> None:
    data = encode(picture(size), fmt)

    with pytest.raises(error) as admitted:
        images.admit(data, role="painting")
    with pytest.raises(error) as probed:
        images.probe(data, role="painting")
    assert admitted.value.message == probed.value.message


@pytest.mark.parametrize(
    "data",
    [b"", b"just some text, not an image" * 4, encode(Image.new("RGB", (64, 64)), "PCX")],
    ids=["empty", "text", "pcx"],
)
def test_foreign_files_are_not_images(data: bytes) -> None:
    with pytest.raises(NotAnImage) as info:
        images.admit(data, role="photo")
    assert "Send a PNG, JPEG, WebP, BMP, GIF or TIFF file." in info.value.message


# --- memory, measured in a fresh process ----------------------------------------------------------

_MEASURE = """
import io, json, sys
from PIL import Image
from engine import images

def status():
    with open("/proc/self/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    return {k: int(fields[k].split()[0]) * 1024 for k in ("VmPeak", "VmHWM")}

check = getattr(images, sys.argv[1])
data = sys.stdin.buffer.read()
warm = io.BytesIO()  # load the format's plugin first: its import is not the upload's cost
Image.new("L", (64, 64), 9).save(warm, sys.argv[2])
check(warm.getvalue())
before = status()
check(data)
after = status()
print(json.dumps({k: after[k] - before[k] for k in before}))
"""


def growth(check: str, fmt: str, data: bytes) -> dict[str, int]:
    """Growth of peak virtual size and peak resident memory while ``check`` runs on ``data``."""
    result = subprocess.run(
        [sys.executable, "-c", _MEASURE, check, fmt],
        input=data,
        capture_output=True,
        check=True,
        cwd=REPO,
        timeout=120,
    )
    figures: dict[str, int] = json.loads(result.stdout)
    print(f"{check} {fmt} ({len(data)} bytes): {figures}")
    return figures


@pytest.fixture(scope="module")
def bombs(webp_bomb: bytes) -> dict[str, bytes]:
    """Small files claiming 48-49 megapixels, one per format that compresses that well."""
    flat = Image.new("L", (7000, 7000), 90)
    return {
        "WEBP": webp_bomb,
        "PNG": encode(flat, "PNG"),
        "GIF": encode(flat, "GIF"),
        "TIFF": encode(flat, "TIFF", compression="tiff_deflate"),
        "JPEG": encode(flat, "JPEG", quality=50),
    }


@pytest.mark.parametrize("fmt", ["WEBP", "PNG", "GIF", "TIFF", "JPEG"])
def test_admitting_a_bomb_takes_a_few_megabytes(bombs: dict[str, bytes], fmt: str) -> None:
    figures = growth("admit", fmt, bombs[fmt])

    assert figures["VmPeak"] < 4 * 2**20  # address space: libwebp's canvas would show here
    assert figures["VmHWM"] < 4 * 2**20  # resident memory


def test_the_measurement_sees_a_full_decode(bombs: dict[str, bytes]) -> None:
    # The yardstick can fail: probe decodes GIF fully, 49 megapixels of 8-bit pixels.
    figures = growth("probe", "GIF", bombs["GIF"])

    assert figures["VmHWM"] > 40 * 2**20
