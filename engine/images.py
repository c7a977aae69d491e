"""Decode, validate, orient, convert, resize and encode images (Pillow only).

The bot process imports this module to check uploads before queueing them, so it must never
import torch. There it uses :func:`admit`, which reads headers and block structure and never
decodes a pixel: a few-kilobyte file can claim a picture that takes most of a gigabyte to
decode. :func:`probe` and the loaders decode; they run in the engine (which re-runs every check
on every job: it never trusts the bot) or in a sandboxed, memory-capped child process.

Errors a member caused are :class:`ImageError` subclasses. Each carries ``code`` (a protocol
error code, ``"bad_image"`` or ``"too_large"``) and ``message`` (short, names the photo or
painting, says what was wrong and what is accepted)::

    ImageError
    ├── NotAnImage        not an image, or a format we do not accept    bad_image
    ├── TruncatedImage    damaged or incomplete file                     bad_image
    ├── FileTooLarge      over the byte limit (checked before decoding)  too_large
    ├── TooManyPixels     over the pixel limit (checked on the header)   too_large
    ├── TooSmall          under MIN_SIDE pixels on a side                bad_image
    └── BadAspectRatio    longer than MAX_ASPECT : 1                     bad_image
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import math
import os
import struct
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from engine import headers

if TYPE_CHECKING:
    from PIL import ImageCms

log = logging.getLogger(__name__)

MAX_INPUT_BYTES: Final = 25 * 1024 * 1024
MAX_PIXELS: Final = 50_000_000
MIN_SIDE: Final = 32
MAX_ASPECT: Final = 6.0
ACCEPTED_FORMATS: Final = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF")
# What admit() lets Pillow open lazily. Never WebP: its opener creates libwebp's decoder, which
# allocates the whole canvas; admit() reads WebP's chunks itself.
_LAZY_FORMATS: Final = ("PNG", "JPEG", "BMP", "GIF", "TIFF")

# encode_for_budget: JPEG qualities tried, and the smallest budget worth trying at all.
BUDGET_MAX_QUALITY: Final = 95
BUDGET_MIN_QUALITY: Final = 70
MIN_BUDGET_BYTES: Final = 10_000

_ACCEPTED_TEXT: Final = "Send a PNG, JPEG, WebP, BMP, GIF or TIFF file."
# Camera JPEGs with a second embedded picture open (through the JPEG opener) as MPO; they are
# JPEGs to a member.
_FORMAT_NAMES: Final = {"MPO": "JPEG"}
# Magic numbers of the accepted formats: a file that starts like one but will not open is
# damaged rather than foreign, and the member should be told so.
_MAGIC: Final = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF8", b"BM", b"II*\x00", b"MM\x00*")
_EXIF_ORIENTATION: Final = 0x0112
# TIFF tags giving where each strip or tile of pixel data lies, and how long it is.
_TIFF_EXTENT_TAGS: Final = ((273, 279), (324, 325))
_ROTATED_ORIENTATIONS: Final = (5, 6, 7, 8)  # these swap width and height
# What Pillow's decoders raise on damaged input. Decoding untrusted bytes can fail in many ways;
# every one of them means "this file is not usable", never a crash.
_DECODE_ERRORS: Final = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    KeyError,
    TypeError,
    struct.error,
    zlib.error,
)


class ImageError(Exception):
    """An image a member sent that cannot be used. ``message`` is safe to show to them."""

    code: str = "bad_image"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotAnImage(ImageError):
    """Not an image, or not in one of :data:`ACCEPTED_FORMATS`."""


class TruncatedImage(ImageError):
    """A damaged or incomplete image file."""


class FileTooLarge(ImageError):
    """More bytes than the limit; checked before any decoding."""

    code = "too_large"


class TooManyPixels(ImageError):
    """More pixels than the limit (a decompression bomb, or just huge); checked on the header."""

    code = "too_large"


class TooSmall(ImageError):
    """Under :data:`MIN_SIDE` pixels on a side."""


class BadAspectRatio(ImageError):
    """Longer than :data:`MAX_ASPECT` times its width (or the other way round)."""


@dataclass(frozen=True)
class ImageInfo:
    """What :func:`admit` or :func:`probe` learns: format, size as displayed (EXIF-oriented)
    and, from :func:`admit`, the number of frames (animations; only the first is painted)."""

    format: str
    width: int
    height: int
    frames: int = 1


def admit(
    data: bytes,
    *,
    role: str = "photo",
    max_bytes: int = MAX_INPUT_BYTES,
    max_pixels: int = MAX_PIXELS,
) -> ImageInfo:
    """Check an upload from its header and structure only; raise an :class:`ImageError` subclass.

    Never decodes a pixel, for any accepted format: byte limit, format, size, pixel limit,
    smallest side, aspect ratio, frame count, and whatever completeness check the format's
    structure allows without decompressing (PNG chunk checksums, the JPEG end marker after the
    first scan, GIF blocks, WebP chunks, BMP and TIFF data extents). Memory used is a small
    multiple of the header, never of the picture. Damage inside compressed data is found only by
    decoding: by the engine, or by :func:`probe` in a sandboxed child process.
    """
    _check_bytes(data, role, max_bytes)
    if headers.is_webp(data):
        return _admit_webp(data, role, max_pixels)
    with _open(data, role, max_pixels, formats=_LAZY_FORMATS) as img:
        fmt = _format_name(img)
        width, height = _displayed_size(img)
        try:
            frames = _frames_if_whole(img, data)
        except (headers.DamagedFile, *_DECODE_ERRORS) as exc:
            log.debug("%s rejected on its structure: %s", role, exc)
            raise _truncated(role) from exc
    return ImageInfo(format=fmt, width=width, height=height, frames=frames)


def probe(
    data: bytes,
    *,
    role: str = "photo",
    max_bytes: int = MAX_INPUT_BYTES,
    max_pixels: int = MAX_PIXELS,
) -> ImageInfo:
    """Check an upload cheaply without decoding it fully; raise an :class:`ImageError` subclass."""
    _check_bytes(data, role, max_bytes)
    with _open(data, role, max_pixels) as img:
        fmt = _format_name(img)
        width, height = _displayed_size(img)
        _check_complete(img, data, role, max_pixels)
    return ImageInfo(format=fmt, width=width, height=height)


def load_image(
    data: bytes,
    *,
    role: str = "photo",
    max_bytes: int = MAX_INPUT_BYTES,
    max_pixels: int = MAX_PIXELS,
) -> Image.Image:
    """Decode to 8-bit RGB, EXIF-oriented, transparency flattened on white, no metadata."""
    return _decode(data, role=role, max_bytes=max_bytes, max_pixels=max_pixels, draft=None)


def load_path(
    path: str | os.PathLike[str],
    *,
    role: str = "photo",
    max_bytes: int = MAX_INPUT_BYTES,
    max_pixels: int = MAX_PIXELS,
) -> Image.Image:
    """:func:`load_image` on a file's bytes."""
    with open(path, "rb") as f:
        # Read one byte past the limit: enough to reject without reading a huge file whole.
        data = f.read(max_bytes + 1)
    return load_image(data, role=role, max_bytes=max_bytes, max_pixels=max_pixels)


def resize_to_long_side(img: Image.Image, long_side: int) -> Image.Image:
    """Resize (LANCZOS) so the longer side is ``long_side``, keeping the aspect ratio."""
    if long_side < 1:
        raise ValueError(f"long_side must be at least 1, got {long_side}")
    width, height = img.size
    scale = long_side / max(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if size == img.size:
        return img.copy()
    # reducing_gap: shrink by whole factors first, then LANCZOS; visually the same result
    # and several times faster when a large upload goes down to working size.
    return img.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def fit_within(img: Image.Image, max_side: int) -> Image.Image:
    """Downsize so neither side exceeds ``max_side``; an image that fits is returned as is."""
    if max(img.size) <= max_side:
        return img
    return resize_to_long_side(img, max_side)


def encode_png(img: Image.Image) -> bytes:
    """Encode as PNG with no metadata (no EXIF, text chunks or ICC profile)."""
    return _png(_bare(img))


def encode_jpeg(img: Image.Image, *, quality: int = 92) -> bytes:
    """Encode as JPEG with no metadata; 4:4:4 chroma at quality 90 and above."""
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be from 1 to 100, got {quality}")
    return _jpeg(_bare(img), quality)


def encode_for_budget(img: Image.Image, max_bytes: int) -> tuple[bytes, str]:
    """Encode in at most ``max_bytes``: ``(data, "png")`` if it fits, else ``(data, "jpeg")``.

    JPEG takes the highest quality from 95 down to 70 that fits; if even 70 does not fit, the
    image is downscaled step by step until it does.
    """
    if max_bytes < MIN_BUDGET_BYTES:
        raise ValueError(f"max_bytes must be at least {MIN_BUDGET_BYTES}, got {max_bytes}")
    bare = _bare(img)
    data = _png(bare)
    if len(data) <= max_bytes:
        return data, "png"
    current = bare
    while True:
        found = _best_jpeg(current, max_bytes)
        if isinstance(found, bytes):
            if current is not bare:
                log.debug("budget %d: downscaled %s to %s", max_bytes, bare.size, current.size)
            return found, "jpeg"
        long_side = max(current.size)
        if long_side <= 16:
            # Unreachable with MIN_BUDGET_BYTES: a 16 px JPEG is about a kilobyte.
            raise ValueError(f"cannot encode the image in {max_bytes} bytes")
        # JPEG size grows roughly with pixel count, so aim at the budget in one step, but never
        # shrink by less than 10% so the loop always makes progress.
        factor = min(0.9, math.sqrt(max_bytes / found) * 0.95)
        current = resize_to_long_side(current, max(16, int(long_side * factor)))


PREVIEW_SIDE_MAX = 512  # progress previews are JPEGs no larger than this (long side, px)


def preview_jpeg(img: Image.Image, *, max_side: int = PREVIEW_SIDE_MAX, quality: int = 80) -> bytes:
    """A small JPEG preview whose long side is at most ``max_side``."""
    return encode_jpeg(fit_within(img, max_side), quality=quality)


def thumbnail_jpeg(data: bytes, *, max_side: int = 256, role: str = "photo") -> bytes:
    """A JPEG thumbnail of an uploaded file, long side at most ``max_side``."""
    img = _decode(
        data,
        role=role,
        max_bytes=MAX_INPUT_BYTES,
        max_pixels=MAX_PIXELS,
        draft=(max_side, max_side),
    )
    return preview_jpeg(img, max_side=max_side)


# --- header-only admission ---------------------------------------------------------------------


def _admit_webp(data: bytes, role: str, max_pixels: int) -> ImageInfo:
    try:
        header = headers.webp_header(data)
    except headers.DamagedFile as exc:
        log.debug("%s rejected on its WebP chunks: %s", role, exc)
        raise _truncated(role) from exc
    width, height = header.width, header.height
    _check_dimensions((width, height), role, max_pixels)
    if _exif_orientation(header.exif) in _ROTATED_ORIENTATIONS:
        width, height = height, width
    return ImageInfo(format="WEBP", width=width, height=height, frames=header.frames)


def _frames_if_whole(img: ImageFile.ImageFile, data: bytes) -> int:
    """The frame count, after the completeness check the format allows without decoding."""
    if img.format == "PNG":
        _verify_png(data)
    elif img.format == "GIF":
        return headers.gif_frames(data)
    elif img.format in ("JPEG", "MPO"):
        if not headers.jpeg_reaches_its_end(data):
            raise headers.DamagedFile("JPEG ends before its end-of-image marker")
    elif img.format == "TIFF":
        _check_tiff_extents(img, len(data))
    else:
        _check_raw_rows(img, len(data))  # BMP
    # PNG (acTL), MPO (its index) and TIFF (the IFD chain) count frames without decoding them.
    frames = getattr(img, "n_frames", 1)
    return frames if isinstance(frames, int) and frames > 0 else 1


def _check_tiff_extents(img: ImageFile.ImageFile, length: int) -> None:
    tags = getattr(img, "tag_v2", {})
    for offsets_tag, counts_tag in _TIFF_EXTENT_TAGS:
        offsets, counts = tags.get(offsets_tag), tags.get(counts_tag)
        if offsets is not None and counts is not None:
            extents = list(zip(_ints(offsets), _ints(counts), strict=False))
            if not headers.extents_fit(extents, length):
                raise headers.DamagedFile("TIFF pixel data runs past the end of the file")


def _check_raw_rows(img: ImageFile.ImageFile, length: int) -> None:
    """Uncompressed rows must all be there (run-length data can only be checked by decoding)."""
    for codec, box, offset, args in img.tile:
        if codec == "raw" and box is not None and isinstance(args, tuple) and len(args) > 1:
            stride = args[1]
            if isinstance(stride, int) and stride > 0:
                rows = box[3] - box[1]
                if not headers.extents_fit([(offset, stride * rows)], length):
                    raise headers.DamagedFile("rows of pixels run past the end of the file")


def _verify_png(data: bytes) -> None:
    # verify() walks every chunk and checks its CRC without inflating pixels. It needs a freshly
    # opened file and leaves it unusable, hence a second open.
    with Image.open(io.BytesIO(data), formats=("PNG",)) as fresh:
        fresh.verify()


def _ints(value: object) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,)
    if isinstance(value, tuple) and all(isinstance(v, int) for v in value):
        return value
    raise headers.DamagedFile(f"unexpected TIFF extent value {value!r}")


def _exif_orientation(raw: bytes | None) -> int:
    if not raw:
        return 1
    exif = Image.Exif()
    try:
        exif.load(raw)
        value = exif.get(_EXIF_ORIENTATION, 1)
    except _DECODE_ERRORS:
        return 1
    return value if isinstance(value, int) else 1


# --- decoding ---------------------------------------------------------------------------------


def _decode(
    data: bytes,
    *,
    role: str,
    max_bytes: int,
    max_pixels: int,
    draft: tuple[int, int] | None,
) -> Image.Image:
    _check_bytes(data, role, max_bytes)
    with _open(data, role, max_pixels) as img:
        if draft is not None:
            # JPEG only: let libjpeg decode at 1/2, 1/4 or 1/8 scale, still at least `draft`.
            img.draft(None, draft)
        _load(img, role, max_pixels)
        oriented = _exif_transpose(img)
    rgb = _to_rgb(oriented)
    # Decoded pixels only: EXIF (GPS), ICC, comments and text chunks stay behind.
    rgb.info = {}
    return rgb


def _check_bytes(data: bytes, role: str, max_bytes: int) -> None:
    if len(data) > max_bytes:
        log.debug("%s rejected: %d bytes > %d", role, len(data), max_bytes)
        raise FileTooLarge(
            f"The {role} is {_size_text(len(data))}, over the {_size_text(max_bytes)} limit. "
            "Send a smaller file."
        )
    if not data:
        raise NotAnImage(f"The {role} file is empty. {_ACCEPTED_TEXT}")


def _open(
    data: bytes, role: str, max_pixels: int, formats: tuple[str, ...] = ACCEPTED_FORMATS
) -> ImageFile.ImageFile:
    """Open lazily (header only) and check size, pixel count and aspect before any decoding."""
    try:
        with _bombs_are_errors():
            img = Image.open(io.BytesIO(data), formats=formats)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own global limit fired first; ours is the one we report.
        log.debug("%s rejected by Pillow's bomb check: %s", role, exc)
        raise TooManyPixels(
            f"The {role} has too many pixels; the most I accept is "
            f"{_megapixels(max_pixels)} megapixels. Send a smaller image."
        ) from exc
    except UnidentifiedImageError as exc:
        if data.startswith(_MAGIC) or headers.is_webp(data):
            raise _truncated(role) from exc
        raise NotAnImage(f"The {role} is not an image I can read. {_ACCEPTED_TEXT}") from exc
    except _DECODE_ERRORS as exc:
        raise _truncated(role) from exc
    try:
        _check_dimensions(img.size, role, max_pixels)
    except ImageError:
        img.close()
        raise
    return img


def _check_dimensions(size: tuple[int, int], role: str, max_pixels: int) -> None:
    width, height = size
    if width * height > max_pixels:
        raise TooManyPixels(
            f"The {role} is {width} × {height} pixels; the most I accept is "
            f"{_megapixels(max_pixels)} megapixels. Send a smaller image."
        )
    if min(width, height) < MIN_SIDE:
        raise TooSmall(
            f"The {role} is only {width} × {height} pixels. "
            f"Send an image at least {MIN_SIDE} pixels on each side."
        )
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise BadAspectRatio(
            f"The {role} is {width} × {height} pixels, too long and narrow. Send an image "
            f"no more than {MAX_ASPECT:g} times as long as it is wide."
        )


def _check_complete(img: Image.Image, data: bytes, role: str, max_pixels: int) -> None:
    """Find truncation as cheaply as each format allows (for probe)."""
    if img.format == "PNG":
        try:
            _verify_png(data)
        except _DECODE_ERRORS as exc:
            raise _truncated(role) from exc
        return
    if img.format in ("JPEG", "MPO"):
        # Decoding at 1/8 scale still reads every entropy-coded byte, so a cut-off file fails,
        # at a small fraction of the cost of a full decode.
        img.draft(None, (1, 1))
    # BMP, GIF, TIFF and WebP offer no cheap check (their verify() does nothing): decode.
    _load(img, role, max_pixels)


def _load(img: Image.Image, role: str, max_pixels: int) -> None:
    try:
        # GIF frames re-check their size while decoding.
        with _bombs_are_errors():
            img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise TooManyPixels(
            f"The {role} has too many pixels; the most I accept is "
            f"{_megapixels(max_pixels)} megapixels. Send a smaller image."
        ) from exc
    except _DECODE_ERRORS as exc:
        log.debug("%s failed to decode: %s", role, exc)
        raise _truncated(role) from exc


@contextlib.contextmanager
def _bombs_are_errors() -> Iterator[None]:
    # Pillow only warns between its limit and twice its limit; make that an exception too, so a
    # bomb never gets as far as decoding. (catch_warnings swaps process-wide filters; a thread
    # decoding at the same moment may at worst see a bomb warning raised instead of shown.)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        yield


def _truncated(role: str) -> TruncatedImage:
    return TruncatedImage(
        f"The {role} file is damaged or incomplete. Try sending it again, "
        "or save it as PNG or JPEG first."
    )


def _format_name(img: Image.Image) -> str:
    fmt = img.format or "unknown"
    return _FORMAT_NAMES.get(fmt, fmt)


def _displayed_size(img: Image.Image) -> tuple[int, int]:
    """The size once EXIF orientation is applied, from the header."""
    width, height = img.size
    if img.format == "TIFF":
        tags = getattr(img, "tag_v2", {})
        if (width, height) != (tags.get(256), tags.get(257)):
            return width, height  # this Pillow orients TIFF itself: size, and pixels on load
    if _orientation(img) in _ROTATED_ORIENTATIONS:
        return height, width
    return width, height


def _orientation(img: Image.Image) -> int:
    if img.format == "PNG" and "exif" not in img.info:
        # PNG's getexif() decodes every pixel looking for a late eXIf chunk: too slow for probe.
        return 1
    try:
        value = img.getexif().get(_EXIF_ORIENTATION, 1)
    except _DECODE_ERRORS:
        return 1
    return value if isinstance(value, int) else 1


def _exif_transpose(img: Image.Image) -> Image.Image:
    try:
        oriented = ImageOps.exif_transpose(img)
    except _DECODE_ERRORS as exc:
        # Broken EXIF should not cost a member an otherwise good picture: keep it unrotated.
        log.debug("ignoring unreadable EXIF orientation: %s", exc)
        return img.copy()
    return oriented


# --- conversion to 8-bit RGB ------------------------------------------------------------------


def _to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode.startswith("I;16"):
        return _scale_to_8bit(img.convert("I"), 65535.0).convert("RGB")
    if mode == "I":
        return _int_to_rgb(img)
    if mode == "F":
        return _float_to_rgb(img)
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        mode in ("P", "L", "RGB") and "transparency" in img.info
    ):
        return _flatten_on_white(img.convert("RGBA"))
    if mode in ("RGB", "CMYK") and img.info.get("icc_profile"):
        managed = _to_srgb(img)
        if managed is not None:
            return managed
    return img.convert("RGB")


def _scale_to_8bit(img: Image.Image, top: float, bottom: float = 0.0) -> Image.Image:
    """Map ``bottom..top`` linearly onto 0..255 (mode I or F in, L out), rounding to nearest."""
    scale = 255.0 / (top - bottom) if top > bottom else 0.0
    offset = -bottom * scale + 0.5
    # point() with a linear function maps every pixel without a lookup table, so it works for
    # 32-bit data; converting to L afterwards clips, which is now only rounding slack.
    return img.point(lambda v: v * scale + offset).convert("L")


def _int_to_rgb(img: Image.Image) -> Image.Image:
    # 32-bit integer pixels say nothing about their range. Values that fit 16 bits are taken to
    # be 16-bit data (what PNG and TIFF carry), values within 0..255 as 8-bit; anything else is
    # stretched from its minimum to its maximum.
    low, high = _extrema(img)
    if low >= 0 and high <= 255:
        return img.convert("L").convert("RGB")
    if low >= 0 and high <= 65535:
        return _scale_to_8bit(img, 65535.0).convert("RGB")
    return _scale_to_8bit(img, float(high), float(low)).convert("RGB")


def _float_to_rgb(img: Image.Image) -> Image.Image:
    # Float images are usually 0..1; some are 0..255; anything else is stretched.
    low, high = _extrema(img)
    if low >= 0 and high <= 1:
        top, bottom = 1.0, 0.0
    elif low >= 0 and high <= 255:
        top, bottom = 255.0, 0.0
    else:
        top, bottom = float(high), float(low)
    return _scale_to_8bit(img, top, bottom).convert("RGB")


def _extrema(img: Image.Image) -> tuple[float, float]:
    low, high = img.getextrema()
    if not isinstance(low, int | float) or not isinstance(high, int | float):
        raise TypeError(f"expected a single-band image, got mode {img.mode}")
    return float(low), float(high)


def _flatten_on_white(rgba: Image.Image) -> Image.Image:
    background = Image.new("RGB", rgba.size, (255, 255, 255))
    background.paste(rgba, mask=rgba.getchannel("A"))
    return background


def _to_srgb(img: Image.Image) -> Image.Image | None:
    """Convert through the embedded ICC profile, or None if it cannot be used.

    We strip profiles from everything we output, so colours are made sRGB first; without this a
    wide-gamut (Display P3) photo or a press CMYK file would come out dull or shifted.
    """
    try:
        from PIL import ImageCms  # optional in Pillow builds without littlecms
    except ImportError:
        return None
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(img.info["icc_profile"]))
        converted = ImageCms.profileToProfile(img, source, _srgb_profile(), outputMode="RGB")
    except (ImageCms.PyCMSError, *_DECODE_ERRORS) as exc:
        log.debug("ignoring unusable ICC profile: %s", exc)
        return None
    return converted


@functools.cache
def _srgb_profile() -> ImageCms.ImageCmsProfile:
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


# --- encoding ---------------------------------------------------------------------------------


def _bare(img: Image.Image) -> Image.Image:
    """A copy holding pixels only, as RGB: encoders copy ICC and EXIF from ``info``."""
    rgb = img if img.mode == "RGB" else _to_rgb(img)
    # frombytes builds a new image with empty info and no cached EXIF.
    return Image.frombytes("RGB", rgb.size, rgb.tobytes())


def _png(bare: Image.Image) -> bytes:
    buf = io.BytesIO()
    # compress_level 6 (zlib's default): near level 9's size at a fraction of the time; and
    # optimize=True would force level 9.
    bare.save(buf, "PNG", compress_level=6)
    return buf.getvalue()


def _jpeg(bare: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    # Full-resolution chroma at high quality: 4:2:0 smears painted colour edges visibly.
    subsampling = 0 if quality >= 90 else 2
    try:
        bare.save(buf, "JPEG", quality=quality, subsampling=subsampling, optimize=True)
    except OSError:
        # Pillow's optimising encoder can overrun its output buffer on high-entropy pictures
        # ("Suspension not allowed here"): exactly the ones too big for PNG. Encode plainly.
        buf = io.BytesIO()
        bare.save(buf, "JPEG", quality=quality, subsampling=subsampling)
    return buf.getvalue()


def _best_jpeg(bare: Image.Image, max_bytes: int) -> bytes | int:
    """The highest-quality JPEG within the budget, or the size at the lowest quality if none."""
    lowest = _jpeg(bare, BUDGET_MIN_QUALITY)
    if len(lowest) > max_bytes:
        return len(lowest)
    # Size grows with quality, so binary-search the highest quality that fits.
    best, low, high = lowest, BUDGET_MIN_QUALITY + 1, BUDGET_MAX_QUALITY
    while low <= high:
        quality = (low + high) // 2
        data = _jpeg(bare, quality)
        if len(data) <= max_bytes:
            best, low = data, quality + 1
        else:
            high = quality - 1
    return best


# --- message text -----------------------------------------------------------------------------


def _size_text(n: int) -> str:
    if n >= 1024 * 1024:
        return f"{n / (1024 * 1024):.1f}".removesuffix(".0") + " MB"
    return f"{max(1, round(n / 1024))} KB"


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1_000_000:g}"
