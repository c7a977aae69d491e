"""Pictures made of several pictures: contact sheets and the podium of a style challenge.

The bot asks for them and never draws them itself (the process holding the chat tokens decodes
no member's image): they are drawn in the sandboxed decoder child (:mod:`engine.decoder`), from
encoded images and the words to write under them.

- :func:`contact_sheet`: thumbnails in a grid, each with its caption under it (a community's
  style library, a chat's recent paintings);
- :func:`podium`: up to three entries side by side, the winner in the middle and raised, each
  standing on a block in its medal's colour with the place, the name and the votes on it.

An image that cannot be decoded becomes a plain tile (the caption still says what it was), so
one damaged file never costs the whole picture. Text is drawn in Pillow's own font (no font
file is needed on the host); names are clipped with an ellipsis to fit their tile. Pillow only.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from PIL import Image, ImageDraw, ImageFont, ImageOps

from engine import images

log = logging.getLogger(__name__)

BACKGROUND: Final = (32, 30, 36)
EMPTY_TILE: Final = (70, 66, 74)  # where an image could not be decoded
INK: Final = (236, 232, 226)
DARK_INK: Final = (30, 26, 22)
MEDALS: Final = ((212, 175, 55), (176, 180, 186), (176, 112, 62))  # gold, silver, bronze
MAX_TILES: Final = 36  # the most tiles one sheet holds
MAX_TILE: Final = 512  # px, the largest tile asked for
MIN_TILE: Final = 64
MAX_COLUMNS: Final = 8
SHEET_QUALITY: Final = 85
PODIUM_TILE: Final = 320
# How much higher each place's block is than the next one's, as a share of the tile: the winner
# stands highest; the lowest block is just tall enough for its lines.
PODIUM_STEP: Final = 0.125
GAP: Final = 12


@dataclass(frozen=True)
class Tile:
    """One picture and the words under it (``data`` empty: a plain tile)."""

    data: bytes
    caption: str


@dataclass(frozen=True)
class Place:
    """One podium place: 1, 2 or 3, its picture, and the lines drawn on its block."""

    place: int
    data: bytes
    lines: tuple[str, ...]


def contact_sheet(tiles: Sequence[Tile], *, columns: int = 4, tile: int = 192) -> bytes:
    """A JPEG grid of ``tiles`` (at most :data:`MAX_TILES`), ``columns`` wide, each image fitted
    in a ``tile`` px square with its caption under it."""
    if not tiles:
        raise ValueError("a contact sheet needs at least one tile")
    if len(tiles) > MAX_TILES:
        raise ValueError(f"a contact sheet holds at most {MAX_TILES} tiles, got {len(tiles)}")
    tile = max(MIN_TILE, min(MAX_TILE, tile))
    columns = max(1, min(columns, MAX_COLUMNS, len(tiles)))
    rows = math.ceil(len(tiles) / columns)
    font = _font(max(12, tile // 12))
    band = _line_height(font) + GAP
    width = GAP + columns * (tile + GAP)
    height = GAP + rows * (tile + band + GAP)
    sheet = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for index, item in enumerate(tiles):
        row, column = divmod(index, columns)
        left = GAP + column * (tile + GAP)
        top = GAP + row * (tile + band + GAP)
        _paste_fitted(sheet, item.data, (left, top, tile, tile))
        _centred(draw, item.caption, font, left + tile / 2, top + tile + GAP // 2, tile, INK)
    return images.encode_jpeg(sheet, quality=SHEET_QUALITY)


def podium(places: Sequence[Place], *, tile: int = PODIUM_TILE) -> bytes:
    """A JPEG of up to three places side by side: 2nd, 1st, 3rd, each picture standing on its
    block, the lines (place, name, votes) written on the block."""
    if not 1 <= len(places) <= 3:
        raise ValueError(f"a podium has one to three places, got {len(places)}")
    if any(not 1 <= p.place <= 3 for p in places):
        raise ValueError("podium places are 1, 2 or 3")
    tile = max(MIN_TILE, min(MAX_TILE, tile))
    order = sorted(places, key=lambda p: {2: 0, 1: 1, 3: 2}[p.place])
    big, small = _font(max(14, tile // 8)), _font(max(12, tile // 16))
    lines = max(len(p.lines) for p in order)
    text = _line_height(big) + max(0, lines - 1) * (_line_height(small) + 2) + GAP
    blocks = podium_blocks(tile, text)
    tallest = max(blocks[p.place - 1] for p in order)
    width = GAP + len(order) * (tile + GAP)
    height = GAP + tile + tallest + GAP
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    floor = height - GAP
    for index, place in enumerate(order):
        left = GAP + index * (tile + GAP)
        block = blocks[place.place - 1]
        top = floor - block
        _paste_fitted(canvas, place.data, (left, top - tile, tile, tile), bottom=True)
        draw.rectangle((left, top, left + tile - 1, floor - 1), fill=MEDALS[place.place - 1])
        y = top + GAP // 2
        for number, line in enumerate(place.lines):
            font = big if number == 0 else small
            _centred(draw, line, font, left + tile / 2, y, tile - GAP, DARK_INK)
            y += _line_height(font) + 2
    return images.encode_jpeg(canvas, quality=SHEET_QUALITY)


def podium_blocks(tile: int, text: int) -> tuple[int, int, int]:
    """The heights of the 1st, 2nd and 3rd places' blocks under ``tile`` px pictures, the
    lowest ``text`` px high (room for its lines)."""
    step = round(tile * PODIUM_STEP)
    return (text + 2 * step, text + step, text)


# ----------------------------------------------------------------------------------------------
# Pieces


def _paste_fitted(
    canvas: Image.Image, data: bytes, box: tuple[int, int, int, int], *, bottom: bool = False
) -> None:
    """Decode ``data`` and paste it fitted to ``box`` (left, top, width, height): centred, or
    standing on the box's bottom edge; a plain tile when it cannot be decoded."""
    left, top, width, height = box
    picture = _decoded(data, max(width, height))
    if picture is None:
        canvas.paste(EMPTY_TILE, (left, top, left + width, top + height))
        return
    # Fitted to the box both ways: a small picture is enlarged, so every tile reads alike.
    picture = ImageOps.contain(picture, (width, height), Image.Resampling.LANCZOS)
    x = left + (width - picture.width) // 2
    y = top + (height - picture.height if bottom else (height - picture.height) // 2)
    canvas.paste(picture, (x, y))


def _decoded(data: bytes, side: int) -> Image.Image | None:
    if not data:
        return None
    try:
        return images.fit_within(images.load_image(data, role="picture"), side)
    except images.ImageError as error:
        log.info("a tile's picture could not be used: %s", error.message)
        return None
    except MemoryError:  # past the decoder's memory cap: the other tiles still fit
        log.info("a tile's picture needs more memory than allowed")
        return None


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's own font at ``size`` px (its small bitmap font where FreeType is missing)."""
    try:
        return ImageFont.load_default(size=size)
    except (AttributeError, ImportError, OSError):
        return ImageFont.load_default()


def _line_height(font: ImageFont.FreeTypeFont | ImageFont.ImageFont) -> int:
    _, top, _, bottom = font.getbbox("Ag")
    return int(bottom - min(top, 0)) + 2


def _centred(
    draw: ImageDraw.ImageDraw,
    text: str,
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
    centre: float,
    top: float,
    room: float,
    colour: tuple[int, int, int],
) -> None:
    shown = fitted(text, lambda t: draw.textlength(t, font=font), room)
    length = draw.textlength(shown, font=font)
    draw.text((centre - length / 2, top), shown, font=font, fill=colour)


def fitted(text: str, measure: Callable[[str], float], room: float) -> str:
    """``text``, or as much of it as fits in ``room`` followed by an ellipsis."""
    text = " ".join(text.split())
    if measure(text) <= room:
        return text
    for end in range(len(text) - 1, 0, -1):
        candidate = text[:end].rstrip() + "…"
        if measure(candidate) <= room:
            return candidate
    return "…"
