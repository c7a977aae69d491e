"""Tests for engine/images.py. Every image is made here, in memory, with Pillow."""

from __future__ import annotations

import io
import random
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from PIL import ExifTags, Image, ImageCms, ImageFile, JpegImagePlugin

from engine import images
from engine.images import (
    BadAspectRatio,
    FileTooLarge,
    ImageError,
    ImageInfo,
    NotAnImage,
    TooManyPixels,
    TooSmall,
    TruncatedImage,
)

RED = (255, 0, 0)
BLUE = (0, 0, 255)
WHITE = (255, 255, 255)
SECRET = b"secret-comment-4711"


def encode(img: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def halves(size: tuple[int, int] = (64, 48)) -> Image.Image:
    """Left half red, right half blue."""
    img = Image.new("RGB", size, RED)
    img.paste(BLUE, (size[0] // 2, 0, size[0], size[1]))
    return img


def noise(size: tuple[int, int], seed: int = 0) -> Image.Image:
    rng = random.Random(seed)
    return Image.frombytes("RGB", size, rng.randbytes(size[0] * size[1] * 3))


def close(a: tuple[int, ...], b: tuple[int, ...], tolerance: int = 12) -> bool:
    return all(abs(x - y) <= tolerance for x, y in zip(a, b, strict=True))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims ``width`` x ``height`` but carries almost no pixel data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if any pixel data gets decoded."""

    def refuse(self: ImageFile.ImageFile) -> None:
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)


# --- accepted formats ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "lossless"),
    [("PNG", True), ("JPEG", False), ("WEBP", False), ("BMP", True), ("GIF", True), ("TIFF", True)],
)
def test_each_accepted_format_decodes_to_8bit_rgb(fmt: str, lossless: bool) -> None:
    data = encode(halves(), fmt)

    img = images.load_image(data)

    assert img.mode == "RGB"
    assert img.size == (64, 48)
    assert img.info == {}
    tolerance = 0 if lossless else 12
    assert close(img.getpixel((8, 24)), RED, tolerance)  # type: ignore[arg-type]
    assert close(img.getpixel((56, 24)), BLUE, tolerance)  # type: ignore[arg-type]
    assert images.probe(data) == ImageInfo(format=fmt, width=64, height=48)


def test_gif_first_frame_is_used() -> None:
    first, second = Image.new("RGB", (40, 40), RED), Image.new("RGB", (40, 40), BLUE)
    data = encode(first, "GIF", save_all=True, append_images=[second], duration=100)
    assert Image.open(io.BytesIO(data)).n_frames == 2  # type: ignore[attr-defined]

    img = images.load_image(data)

    assert img.getpixel((20, 20)) == RED


def test_exif_orientation_is_applied() -> None:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6  # stored sideways: display rotated 90° clockwise
    data = encode(halves((64, 32)), "JPEG", quality=95, exif=exif.tobytes())

    img = images.load_image(data)

    # Rotating clockwise turns the stored left (red) half into the displayed top.
    assert img.size == (32, 64)
    assert close(img.getpixel((16, 8)), RED)  # type: ignore[arg-type]
    assert close(img.getpixel((16, 56)), BLUE)  # type: ignore[arg-type]
    assert images.probe(data) == ImageInfo(format="JPEG", width=32, height=64)
    assert ExifTags.Base.Orientation not in img.getexif()


# --- transparency and colour modes -------------------------------------------------------------


def test_rgba_is_composited_on_white() -> None:
    rgba = Image.new("RGBA", (40, 40), (*RED, 255))
    rgba.putpixel((0, 0), (0, 0, 0, 0))  # fully transparent black
    rgba.putpixel((1, 0), (0, 0, 0, 128))  # half-transparent black

    img = images.load_image(encode(rgba, "PNG"))

    assert img.mode == "RGB"
    assert img.getpixel((0, 0)) == WHITE
    assert close(img.getpixel((1, 0)), (127, 127, 127), 2)  # type: ignore[arg-type]
    assert img.getpixel((20, 20)) == RED


def test_palette_transparency_becomes_white() -> None:
    pal = Image.new("P", (40, 40), 1)
    pal.putpalette([0, 0, 0, *RED] + [0] * (254 * 3))
    pal.putpixel((0, 0), 0)

    img = images.load_image(encode(pal, "PNG", transparency=0))

    assert img.getpixel((0, 0)) == WHITE
    assert img.getpixel((20, 20)) == RED


def test_cmyk_converts_to_rgb() -> None:
    cmyk = Image.new("CMYK", (40, 40), (0, 0, 0, 0))  # paper white
    cmyk.paste((255, 0, 0, 0), (0, 0, 20, 40))  # full cyan

    for fmt in ("TIFF", "JPEG"):
        img = images.load_image(encode(cmyk, fmt))
        assert img.mode == "RGB"
        assert close(img.getpixel((30, 20)), WHITE)  # type: ignore[arg-type]
        assert close(img.getpixel((10, 20)), (0, 255, 255))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("mode", "fill", "expected"),
    [
        ("L", 100, (100, 100, 100)),
        ("1", 1, WHITE),
        ("LA", (60, 255), (60, 60, 60)),
        ("LA", (0, 0), WHITE),
        ("P", 3, (3, 6, 9)),
    ],
)
def test_grayscale_and_palette_modes_convert_to_rgb(
    mode: str, fill: object, expected: tuple[int, int, int]
) -> None:
    src = Image.new(mode, (40, 40), fill)  # type: ignore[arg-type]
    if mode == "P":
        src.putpalette([v for i in range(256) for v in (i, 2 * i % 256, 3 * i % 256)])

    img = images.load_image(encode(src, "PNG"))

    assert img.mode == "RGB"
    assert img.getpixel((20, 20)) == expected


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16_bit_grayscale_is_scaled_not_clipped(fmt: str) -> None:
    src = Image.new("I;16", (64, 64), 32768)
    src.putpixel((0, 0), 65535)
    src.putpixel((1, 0), 0)
    src.putpixel((2, 0), 1000)  # clipping would make this 255; scaling gives 4
    data = encode(src, fmt)
    assert Image.open(io.BytesIO(data)).mode.startswith("I;16")

    img = images.load_image(data)

    assert img.mode == "RGB"
    assert img.getpixel((0, 0)) == WHITE
    assert img.getpixel((1, 0)) == (0, 0, 0)
    assert img.getpixel((2, 0)) == (4, 4, 4)
    assert img.getpixel((30, 30)) == (128, 128, 128)


def test_32_bit_integer_and_float_images_are_scaled() -> None:
    wide = Image.new("I", (40, 40), 32768)
    wide.putpixel((0, 0), 65535)
    floats = Image.new("F", (40, 40), 0.5)
    floats.putpixel((0, 0), 1.0)

    from_int = images.load_image(encode(wide, "TIFF"))
    from_float = images.load_image(encode(floats, "TIFF"))

    assert from_int.getpixel((0, 0)) == WHITE
    assert from_int.getpixel((20, 20)) == (128, 128, 128)
    assert from_float.getpixel((0, 0)) == WHITE
    assert from_float.getpixel((20, 20)) == (128, 128, 128)


def test_embedded_srgb_profile_keeps_colours_and_is_dropped() -> None:
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    src = Image.new("RGB", (40, 40), (200, 120, 40))

    img = images.load_image(encode(src, "PNG", icc_profile=srgb))

    assert close(img.getpixel((20, 20)), (200, 120, 40), 3)  # type: ignore[arg-type]
    assert "icc_profile" not in img.info


# --- rejections ---------------------------------------------------------------------------------


def assert_rejected(
    exc: ImageError, cls: type[ImageError], code: str, role: str, *words: str
) -> None:
    assert type(exc) is cls
    assert isinstance(exc, ImageError)
    assert exc.code == code
    assert f"The {role}" in exc.message
    assert str(exc) == exc.message
    for word in words:
        assert word in exc.message


@pytest.mark.parametrize("role", ["photo", "painting"])
@pytest.mark.parametrize(
    "data",
    [b"hello, this is not an image at all" * 4, b"", b"%PDF-1.4\n" + b"0" * 200],
    ids=["text", "empty", "pdf"],
)
def test_not_an_image(role: str, data: bytes) -> None:
    for check in (images.probe, images.load_image):
        with pytest.raises(NotAnImage) as info:
            check(data, role=role)
        assert_rejected(info.value, NotAnImage, "bad_image", role, "PNG, JPEG, WebP")


def test_unsupported_image_format_is_not_an_image() -> None:
    data = encode(Image.new("RGB", (64, 64), RED), "PCX")
    assert Image.open(io.BytesIO(data)).format == "PCX"  # Pillow itself can read it

    with pytest.raises(NotAnImage) as info:
        images.load_image(data, role="painting")

    assert_rejected(info.value, NotAnImage, "bad_image", "painting", "GIF or TIFF")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
@pytest.mark.parametrize("role", ["photo", "painting"])
def test_truncated_file(fmt: str, role: str) -> None:
    whole = encode(noise((128, 128)), fmt)
    cut = whole[: len(whole) // 2]

    for check in (images.probe, images.load_image):
        with pytest.raises(TruncatedImage) as info:
            check(cut, role=role)
        assert_rejected(info.value, TruncatedImage, "bad_image", role, "damaged or incomplete")


def test_file_cut_inside_its_header_is_truncated_not_foreign() -> None:
    cut = encode(noise((64, 64)), "PNG")[:20]

    with pytest.raises(TruncatedImage):
        images.probe(cut)


def test_file_over_byte_limit_is_rejected_before_decoding(no_decoding: None) -> None:
    # Not even an image: the byte limit must come first.
    with pytest.raises(FileTooLarge) as info:
        images.probe(b"x" * 2048, role="painting", max_bytes=1024)
    assert_rejected(info.value, FileTooLarge, "too_large", "painting", "2 KB", "1 KB limit")

    with pytest.raises(FileTooLarge):
        images.load_image(b"x" * (images.MAX_INPUT_BYTES + 1))


def test_too_many_pixels_is_caught_on_the_header(no_decoding: None) -> None:
    data = encode(noise((64, 64)), "PNG")

    for check in (images.probe, images.load_image):
        with pytest.raises(TooManyPixels) as info:
            check(data, role="photo", max_pixels=4000)
        assert_rejected(info.value, TooManyPixels, "too_large", "photo", "64 × 64")


def test_decompression_bomb_header_without_relying_on_pillow_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # Pillow's own check switched off
    bomb = png_header_only(8000, 8000)  # 64 megapixels claimed, a few bytes of data

    for check in (images.probe, images.load_image):
        with pytest.raises(TooManyPixels) as info:
            check(bomb, role="painting")
        assert_rejected(info.value, TooManyPixels, "too_large", "painting", "50 megapixels")


@pytest.mark.parametrize("side", [1200, 3000], ids=["pillow-warning", "pillow-error"])
def test_pillow_bomb_warning_and_error_become_too_many_pixels(
    monkeypatch: pytest.MonkeyPatch, side: int
) -> None:
    # Pillow warns above MAX_IMAGE_PIXELS and raises above twice that, before our own limit.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)

    with pytest.raises(TooManyPixels) as info:
        images.load_image(png_header_only(side, side), role="photo")

    assert info.value.code == "too_large"
    assert "photo" in info.value.message


@pytest.mark.parametrize("size", [(31, 100), (100, 31), (8, 8)])
def test_too_small(size: tuple[int, int]) -> None:
    data = encode(Image.new("RGB", size, RED), "PNG")

    with pytest.raises(TooSmall) as info:
        images.load_image(data, role="painting")

    assert_rejected(info.value, TooSmall, "bad_image", "painting", "32 pixels")
    assert images.load_image(encode(Image.new("RGB", (32, 32), RED), "PNG")).size == (32, 32)


@pytest.mark.parametrize("size", [(32, 224), (224, 32)])
def test_aspect_beyond_one_to_six_is_rejected(size: tuple[int, int]) -> None:
    data = encode(Image.new("RGB", size, RED), "PNG")

    with pytest.raises(BadAspectRatio) as info:
        images.probe(data, role="photo")

    assert_rejected(info.value, BadAspectRatio, "bad_image", "photo", "6 times")


@pytest.mark.parametrize("size", [(32, 192), (192, 32)])
def test_aspect_of_one_to_six_is_accepted(size: tuple[int, int]) -> None:
    data = encode(Image.new("RGB", size, RED), "PNG")

    assert images.probe(data) == ImageInfo("PNG", *size)
    assert images.load_image(data).size == size


# --- metadata -----------------------------------------------------------------------------------


def jpeg_with_metadata() -> bytes:
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "SpyCam"
    exif[ExifTags.IFD.GPSInfo] = {1: "N", 2: (52.0, 22.0, 1.0), 3: "E", 4: (4.0, 53.0, 2.0)}
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    return encode(halves(), "JPEG", exif=exif.tobytes(), comment=SECRET, icc_profile=srgb)


def assert_no_metadata(data: bytes) -> None:
    out = Image.open(io.BytesIO(data))
    for key in ("exif", "comment", "icc_profile", "Make"):
        assert key not in out.info
    assert dict(out.getexif()) == {}
    assert SECRET not in data
    assert b"SpyCam" not in data
    assert b"Exif" not in data
    for chunk in (b"tEXt", b"zTXt", b"iTXt", b"eXIf", b"iCCP"):
        assert chunk not in data


def test_loaded_image_carries_no_metadata() -> None:
    source = jpeg_with_metadata()
    assert SECRET in source  # the fixture really carries it
    assert Image.open(io.BytesIO(source)).getexif().get_ifd(ExifTags.IFD.GPSInfo)

    img = images.load_image(source)

    assert img.info == {}
    assert dict(img.getexif()) == {}


def test_encoders_strip_metadata_from_loaded_images() -> None:
    img = images.load_image(jpeg_with_metadata())

    assert_no_metadata(images.encode_png(img))
    assert_no_metadata(images.encode_jpeg(img))
    assert_no_metadata(images.preview_jpeg(img))


def test_encoders_strip_metadata_even_from_raw_pillow_images() -> None:
    raw = Image.open(io.BytesIO(jpeg_with_metadata()))
    assert "exif" in raw.info

    assert_no_metadata(images.encode_png(raw))
    assert_no_metadata(images.encode_jpeg(raw))


# --- encoding -----------------------------------------------------------------------------------


def test_encode_png_round_trips_pixels() -> None:
    img = noise((48, 40))

    out = Image.open(io.BytesIO(images.encode_png(img)))

    assert out.format == "PNG"
    assert out.convert("RGB").tobytes() == img.tobytes()


def test_encode_jpeg_uses_full_chroma_at_high_quality() -> None:
    img = halves()

    high = Image.open(io.BytesIO(images.encode_jpeg(img, quality=92)))
    low = Image.open(io.BytesIO(images.encode_jpeg(img, quality=80)))

    assert JpegImagePlugin.get_sampling(high) == 0  # 4:4:4
    assert JpegImagePlugin.get_sampling(low) == 2  # 4:2:0
    with pytest.raises(ValueError, match="quality"):
        images.encode_jpeg(img, quality=0)


def test_encode_for_budget_prefers_png_when_it_fits() -> None:
    img = Image.new("RGB", (200, 100), RED)

    data, fmt = images.encode_for_budget(img, 20_000)

    assert fmt == "png"
    assert len(data) <= 20_000
    assert Image.open(io.BytesIO(data)).format == "PNG"


def test_encode_for_budget_falls_back_to_best_jpeg_that_fits() -> None:
    img = noise((160, 160))
    png_size = len(images.encode_png(img))
    lowest = len(images.encode_jpeg(img, quality=70))
    highest = len(images.encode_jpeg(img, quality=95))
    budget = (lowest + highest) // 2
    assert png_size > budget

    data, fmt = images.encode_for_budget(img, budget)

    out = Image.open(io.BytesIO(data))
    assert fmt == "jpeg"
    assert out.format == "JPEG"
    assert out.size == img.size  # quality alone was enough
    assert lowest < len(data) <= budget  # better than the lowest quality, never over budget


@pytest.mark.parametrize("budget", [10_000, 16_000])
def test_encode_for_budget_downscales_when_jpeg_alone_is_too_big(budget: int) -> None:
    img = noise((200, 150))
    assert len(images.encode_jpeg(img, quality=70)) > budget

    data, fmt = images.encode_for_budget(img, budget)

    out = Image.open(io.BytesIO(data))
    assert fmt == "jpeg"
    assert len(data) <= budget
    assert out.width < 200
    assert abs(out.width / out.height - 200 / 150) < 0.05  # aspect kept


def test_encode_for_budget_refuses_absurd_budgets() -> None:
    with pytest.raises(ValueError, match="at least"):
        images.encode_for_budget(Image.new("RGB", (40, 40)), 5_000)


# --- resizing and previews ----------------------------------------------------------------------


def test_resize_to_long_side_keeps_aspect_and_never_reaches_zero() -> None:
    assert images.resize_to_long_side(Image.new("RGB", (400, 300)), 200).size == (200, 150)
    assert images.resize_to_long_side(Image.new("RGB", (300, 400)), 200).size == (150, 200)
    assert images.resize_to_long_side(Image.new("RGB", (50, 25)), 100).size == (100, 50)
    assert images.resize_to_long_side(Image.new("RGB", (1000, 2)), 100).size == (100, 1)
    with pytest.raises(ValueError, match="long_side"):
        images.resize_to_long_side(Image.new("RGB", (10, 10)), 0)


def test_fit_within_only_downsizes() -> None:
    small = Image.new("RGB", (100, 50))

    assert images.fit_within(small, 512) is small
    assert images.fit_within(Image.new("RGB", (1000, 500)), 512).size == (512, 256)


def test_preview_jpeg_long_side_is_at_most_max_side() -> None:
    wide = images.preview_jpeg(Image.new("RGB", (1200, 300), RED))
    tall = images.preview_jpeg(Image.new("RGB", (300, 1200), RED))
    small = images.preview_jpeg(Image.new("RGB", (100, 60), RED))

    assert Image.open(io.BytesIO(wide)).size == (512, 128)
    assert Image.open(io.BytesIO(tall)).size == (128, 512)
    assert Image.open(io.BytesIO(small)).size == (100, 60)
    assert Image.open(io.BytesIO(wide)).format == "JPEG"


def test_thumbnail_jpeg_from_upload_bytes() -> None:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    data = encode(halves((800, 600)), "JPEG", exif=exif.tobytes())

    thumb = Image.open(io.BytesIO(images.thumbnail_jpeg(data)))

    assert thumb.size == (192, 256)  # oriented, then fitted within 256
    assert close(thumb.getpixel((96, 20)), RED, 20)  # type: ignore[arg-type]


def test_load_path_reads_the_file(tmp_path: Path) -> None:
    path = tmp_path / "painting.webp"
    path.write_bytes(encode(halves(), "WEBP", lossless=True))

    img = images.load_path(path, role="painting")
    assert img.size == (64, 48)
    assert img.getpixel((8, 8)) == RED

    with pytest.raises(FileTooLarge) as info:
        images.load_path(str(path), role="painting", max_bytes=10)
    assert "painting" in info.value.message


def test_module_does_not_import_torch() -> None:
    code = "import sys, engine.images; sys.exit(1 if 'torch' in sys.modules else 0)"
    result = subprocess.run(
        [sys.executable, "-c", code], check=False, cwd=Path(__file__).parents[2]
    )
    assert result.returncode == 0


def test_high_entropy_pictures_still_encode_as_jpeg_within_budget() -> None:
    # Pillow's optimising JPEG encoder fails on noise at quality 95 with 4:4:4 chroma.
    rng = random.Random(5)
    noise = Image.frombytes("RGB", (300, 300), bytes(rng.randrange(256) for _ in range(270_000)))
    data = images.encode_jpeg(noise, quality=95)
    assert Image.open(io.BytesIO(data)).format == "JPEG"
    budgeted, kind = images.encode_for_budget(noise, 120_000)
    assert kind == "jpeg" and len(budgeted) <= 120_000


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP", "TIFF"])
def test_probe_reports_the_size_as_displayed_after_exif_rotation(fmt: str) -> None:
    # Pillow orients TIFF itself (its size is already the displayed one); turning it again
    # reported the stored size.
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90°: stored 64 × 48, shown 48 × 64
    data = encode(noise((64, 48)), fmt, exif=exif.tobytes())

    info = images.probe(data)

    assert (info.width, info.height) == (48, 64)
    assert images.load_image(data).size == (48, 64)
