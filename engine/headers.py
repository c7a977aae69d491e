"""Structure of image files read from their headers and block layout, never their pixels.

Standard library only. :func:`engine.images.admit` uses these where Pillow's lazy open is not
enough: Pillow's WebP opener creates libwebp's decoder, which allocates the whole canvas (twice)
before a single pixel is read, and Pillow offers no cheap completeness check for JPEG, GIF, BMP,
TIFF or WebP. Everything here walks markers, chunks or blocks and reads lengths; nothing here
inflates, decodes or allocates in proportion to the picture's size.

Every function raises :class:`DamagedFile` when the bytes start like the format but their
structure is cut short or inconsistent.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final


class DamagedFile(ValueError):
    """The file's structure ends early or contradicts itself."""


@dataclass(frozen=True)
class WebPHeader:
    """What a WebP file's RIFF chunks say: canvas size, frame count and the raw EXIF chunk."""

    width: int
    height: int
    frames: int
    exif: bytes | None


_RIFF_HEADER: Final = 12  # "RIFF", size (little-endian 32), "WEBP"
_CHUNK_HEADER: Final = 8  # FourCC, size (little-endian 32); payloads are padded to even sizes
_VP8_START_CODE: Final = b"\x9d\x01\x2a"
_VP8L_SIGNATURE: Final = 0x2F
_VP8X_ANIMATION: Final = 0x02
_IMAGE_CHUNKS: Final = (b"VP8 ", b"VP8L", b"ANMF")


def is_webp(data: bytes) -> bool:
    """True if ``data`` starts like a WebP file (a RIFF container of type WEBP)."""
    return data[:4] == b"RIFF" and data[8:12] == b"WEBP"


def webp_header(data: bytes) -> WebPHeader:
    """Read a WebP file's canvas size, frame count and EXIF from its chunk headers."""
    if len(data) < _RIFF_HEADER + _CHUNK_HEADER or not is_webp(data):
        raise DamagedFile("WebP header cut short")
    (riff_size,) = struct.unpack_from("<I", data, 4)
    # The RIFF size counts everything after its own field; a shorter file was cut off.
    end = 8 + riff_size
    if end > len(data):
        raise DamagedFile(f"WebP file has {len(data)} of its {end} bytes")
    chunks = list(_riff_chunks(data, _RIFF_HEADER, end))
    first, first_at, _ = chunks[0]
    if first == b"VP8X":
        width, height, animated = _vp8x(data, first_at)
    elif first == b"VP8 ":
        width, height = _vp8(data, first_at)
        animated = False
    elif first == b"VP8L":
        width, height = _vp8l(data, first_at)
        animated = False
    else:
        raise DamagedFile(f"WebP file starts with an unknown chunk {first!r}")
    kinds = [kind for kind, _, _ in chunks]
    if not any(kind in _IMAGE_CHUNKS for kind in kinds):
        raise DamagedFile("WebP file holds no image chunk")
    frames = kinds.count(b"ANMF") if animated else 1
    exif = next((data[at : at + size] for kind, at, size in chunks if kind == b"EXIF"), None)
    return WebPHeader(width=width, height=height, frames=max(frames, 1), exif=exif)


def _riff_chunks(data: bytes, start: int, end: int) -> list[tuple[bytes, int, int]]:
    """(FourCC, payload offset, payload size) of each chunk up to ``end``; each must be whole."""
    chunks = []
    at = start
    while at + _CHUNK_HEADER <= end:
        kind = data[at : at + 4]
        (size,) = struct.unpack_from("<I", data, at + 4)
        payload = at + _CHUNK_HEADER
        if payload + size > end:
            raise DamagedFile(f"WebP chunk {kind!r} runs past the end of the file")
        chunks.append((kind, payload, size))
        at = payload + size + (size & 1)
    if not chunks:
        raise DamagedFile("WebP file holds no chunks")
    return chunks


def _vp8x(data: bytes, at: int) -> tuple[int, int, bool]:
    if at + 10 > len(data):
        raise DamagedFile("VP8X chunk cut short")
    flags = data[at]
    # Canvas width and height minus one, 24 bits each, after 4 bytes of flags and reserved bits.
    width = int.from_bytes(data[at + 4 : at + 7], "little") + 1
    height = int.from_bytes(data[at + 7 : at + 10], "little") + 1
    return width, height, bool(flags & _VP8X_ANIMATION)


def _vp8(data: bytes, at: int) -> tuple[int, int]:
    # A 3-byte frame tag, the start code, then 14-bit width and height (top 2 bits: scaling).
    if at + 10 > len(data) or data[at + 3 : at + 6] != _VP8_START_CODE:
        raise DamagedFile("VP8 frame header missing or cut short")
    width, height = struct.unpack_from("<HH", data, at + 6)
    return width & 0x3FFF, height & 0x3FFF


def _vp8l(data: bytes, at: int) -> tuple[int, int]:
    # A signature byte, then width-1 and height-1 in 14 bits each, little-endian bit order.
    if at + 5 > len(data) or data[at] != _VP8L_SIGNATURE:
        raise DamagedFile("VP8L header missing or cut short")
    (bits,) = struct.unpack_from("<I", data, at + 1)
    return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1


# --- GIF ----------------------------------------------------------------------------------------

_GIF_SCREEN: Final = 13  # signature (6) and the logical screen descriptor (7)
_GIF_IMAGE: Final = 0x2C
_GIF_EXTENSION: Final = 0x21
_GIF_TRAILER: Final = 0x3B


def gif_frames(data: bytes) -> int:
    """The number of whole frames in a GIF, walking its blocks without decompressing them.

    Only the first frame is ever painted, so a file whose later frames are cut off still counts
    its whole ones; a file whose first frame is incomplete is damaged. A missing trailer is
    tolerated (Pillow reads such files, and many exist).
    """
    if len(data) < _GIF_SCREEN or data[:3] != b"GIF":
        raise DamagedFile("GIF header cut short")
    at = _GIF_SCREEN + _colour_table(data[10])
    frames = 0
    while at < len(data):
        kind = data[at]
        if kind == _GIF_TRAILER:
            break
        try:
            if kind == _GIF_IMAGE:
                descriptor_end = at + 10
                if descriptor_end > len(data):
                    raise DamagedFile("GIF image descriptor cut short")
                # Descriptor, optional local colour table, LZW code size byte, then sub-blocks.
                at = _skip_sub_blocks(data, descriptor_end + _colour_table(data[at + 9]) + 1)
                frames += 1
            elif kind == _GIF_EXTENSION:
                at = _skip_sub_blocks(data, at + 2)
            else:
                break  # Pillow stops reading at an unknown block too
        except DamagedFile:
            if frames == 0:
                raise
            break
    if frames == 0:
        raise DamagedFile("GIF file holds no image")
    return frames


def _colour_table(flags: int) -> int:
    """Bytes of the colour table a descriptor's flags announce (0 when there is none)."""
    return 3 << ((flags & 0x07) + 1) if flags & 0x80 else 0


def _skip_sub_blocks(data: bytes, at: int) -> int:
    """The offset after a chain of length-prefixed sub-blocks ending in a zero length."""
    while True:
        if at >= len(data):
            raise DamagedFile("GIF data ends inside a block")
        size = data[at]
        at += 1 + size
        if size == 0:
            return at


# --- JPEG, BMP, TIFF ----------------------------------------------------------------------------

_JPEG_END: Final = b"\xff\xd9"
_JPEG_SCAN: Final = 0xDA
# Markers without a length field: TEM and the restart markers.
_JPEG_STANDALONE: Final = frozenset({0x01, *range(0xD0, 0xD8)})


def jpeg_scan_offset(data: bytes) -> int:
    """The offset of the JPEG's first start-of-scan marker, walking the segments before it."""
    if data[:2] != b"\xff\xd8":
        raise DamagedFile("JPEG start marker missing")
    at = 2
    while True:
        # A marker is 0xFF, any number of 0xFF fill bytes, then its code.
        if at >= len(data) or data[at] != 0xFF:
            raise DamagedFile("JPEG segments end before the first scan")
        while at < len(data) and data[at] == 0xFF:
            at += 1
        if at >= len(data):
            raise DamagedFile("JPEG segments end before the first scan")
        marker = data[at]
        if marker == _JPEG_SCAN:
            return at - 1
        at += 1
        if marker in _JPEG_STANDALONE:
            continue
        if at + 2 > len(data):
            raise DamagedFile("JPEG segment length cut short")
        at += int.from_bytes(data[at : at + 2], "big")


def jpeg_reaches_its_end(data: bytes) -> bool:
    """True if the JPEG's end-of-image marker follows its first scan.

    Inside entropy-coded data a 0xFF byte is always followed by 0x00 or a restart marker, so
    0xFF 0xD9 after the first scan can only be the end of the image: a file cut anywhere in its
    scans lacks it. The search starts at the scan because the segments before it (an EXIF
    thumbnail, say) may hold a whole small JPEG of their own.
    """
    return data.find(_JPEG_END, jpeg_scan_offset(data)) != -1


def extents_fit(extents: list[tuple[int, int]], length: int) -> bool:
    """True if every ``(offset, byte count)`` lies within a file of ``length`` bytes."""
    return all(offset >= 0 and count >= 0 and offset + count <= length for offset, count in extents)
