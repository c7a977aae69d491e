"""Tests for engine/sheets.py: contact sheets and podiums, read back pixel by pixel."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from engine import sheets


def png(size: tuple[int, int], colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


def opened(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    assert img.format == "JPEG"
    return img.convert("RGB")


def close_to(pixel: tuple[int, ...], colour: tuple[int, int, int], tolerance: int = 12) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, colour, strict=False))


RED, GREEN, BLUE = (220, 30, 30), (30, 200, 40), (40, 60, 220)


def test_a_sheet_lays_tiles_out_in_rows_with_each_picture_in_its_place() -> None:
    tile, gap = 100, sheets.GAP
    data = sheets.contact_sheet(
        [
            sheets.Tile(png((80, 80), RED), "red"),
            sheets.Tile(png((80, 40), GREEN), "green"),
            sheets.Tile(png((40, 80), BLUE), "blue"),
        ],
        columns=2,
        tile=tile,
    )
    sheet = opened(data)
    columns, rows = 2, 2
    assert sheet.width == gap + columns * (tile + gap)
    band = (sheet.height - gap - rows * (tile + gap)) // rows
    assert band > 10  # room for a caption under every tile
    # The first row: red then green, each centred in its square; the second row starts blue.
    assert close_to(sheet.getpixel((gap + tile // 2, gap + tile // 2)), RED)
    assert close_to(sheet.getpixel((2 * gap + tile + tile // 2, gap + tile // 2)), GREEN)
    second_row = gap + tile + band + gap
    assert close_to(sheet.getpixel((gap + tile // 2, second_row + tile // 2)), BLUE)
    # A picture is fitted, not stretched: green is 2:1, so the top of its square is background.
    assert close_to(sheet.getpixel((2 * gap + tile + tile // 2, gap + 5)), sheets.BACKGROUND)
    # The last row's empty cell stays background.
    assert close_to(
        sheet.getpixel((2 * gap + tile + tile // 2, second_row + tile // 2)), sheets.BACKGROUND
    )


def test_captions_are_drawn_under_their_tile() -> None:
    tile = 120
    captioned = opened(sheets.contact_sheet([sheets.Tile(png((64, 64), RED), "a name")], tile=tile))
    blank = opened(sheets.contact_sheet([sheets.Tile(png((64, 64), RED), "")], tile=tile))
    band = (sheets.GAP + tile, captioned.height)
    inked = [
        captioned.getpixel((x, y))
        for x in range(captioned.width)
        for y in range(*band)
        if close_to(captioned.getpixel((x, y)), sheets.INK, 60)
    ]
    assert len(inked) > 20  # the letters
    assert not any(
        close_to(blank.getpixel((x, y)), sheets.INK, 60)
        for x in range(blank.width)
        for y in range(*band)
    )


def test_an_undecodable_image_is_a_plain_tile_and_the_rest_still_shows() -> None:
    tile = 80
    sheet = opened(
        sheets.contact_sheet(
            [sheets.Tile(b"not an image", "broken"), sheets.Tile(png((64, 64), GREEN), "fine")],
            tile=tile,
        )
    )
    gap = sheets.GAP
    assert close_to(sheet.getpixel((gap + tile // 2, gap + tile // 2)), sheets.EMPTY_TILE)
    assert close_to(sheet.getpixel((2 * gap + tile + tile // 2, gap + tile // 2)), GREEN)


def test_a_long_caption_is_clipped_with_an_ellipsis() -> None:
    def measure(text: str) -> float:
        return 10.0 * len(text)

    assert sheets.fitted("short", measure, 100) == "short"
    assert sheets.fitted("a much longer name than fits", measure, 100) == "a much lo…"
    assert sheets.fitted("  spaced   out  ", measure, 100) == "spaced out"


def test_a_sheet_refuses_no_tiles_and_too_many() -> None:
    with pytest.raises(ValueError, match="at least one"):
        sheets.contact_sheet([])
    with pytest.raises(ValueError, match="at most"):
        sheets.contact_sheet([sheets.Tile(b"", "x")] * (sheets.MAX_TILES + 1))


def test_the_podium_puts_the_winner_in_the_middle_and_highest() -> None:
    tile, gap = 100, sheets.GAP
    data = sheets.podium(
        [
            sheets.Place(1, png((64, 64), RED), ("1st", "alice", "3 votes")),
            sheets.Place(2, png((64, 64), GREEN), ("2nd", "bob", "2 votes")),
            sheets.Place(3, png((64, 64), BLUE), ("3rd", "carol", "1 vote")),
        ],
        tile=tile,
    )
    podium = opened(data)
    assert podium.width == gap + 3 * (tile + gap)
    floor = podium.height - gap
    # The canvas is as tall as the winner's picture on the winner's block.
    text = podium.height - 2 * gap - tile - 2 * round(tile * sheets.PODIUM_STEP)
    blocks = sheets.podium_blocks(tile, text)
    assert blocks[0] > blocks[1] > blocks[2]
    centres = [gap + i * (tile + gap) + tile // 2 for i in range(3)]
    # Left to right: 2nd, 1st, 3rd; each picture stands on its block.
    expected = [(GREEN, 2), (RED, 1), (BLUE, 3)]
    for x, (colour, place) in zip(centres, expected, strict=True):
        block = blocks[place - 1]
        top_of_block = floor - block
        assert close_to(podium.getpixel((x, top_of_block - tile // 2)), colour)
        # The block's colour is its medal's (away from the text in its middle).
        assert close_to(podium.getpixel((x - tile // 2 + 3, floor - 4)), sheets.MEDALS[place - 1])
    # The winner stands highest: above the 2nd's picture there is background, not the winner's.
    first_top = floor - blocks[0] - tile
    assert close_to(podium.getpixel((centres[1], first_top + 3)), RED)
    assert close_to(podium.getpixel((centres[0], first_top + 3)), sheets.BACKGROUND)
    # Text is written on each block (dark ink on the medal colour).
    for x, (_, place) in zip(centres, expected, strict=True):
        top_of_block = floor - blocks[place - 1]
        region = [
            podium.getpixel((px, py))
            for px in range(x - tile // 2, x + tile // 2)
            for py in range(top_of_block, floor)
        ]
        assert sum(close_to(p, sheets.DARK_INK, 50) for p in region) > 20


def test_a_podium_of_one_and_its_limits() -> None:
    one = opened(sheets.podium([sheets.Place(1, png((40, 40), RED), ("1st", "solo", "1 vote"))]))
    assert one.width == sheets.GAP + sheets.PODIUM_TILE + sheets.GAP
    with pytest.raises(ValueError, match="one to three"):
        sheets.podium([])
    with pytest.raises(ValueError, match="1, 2 or 3"):
        sheets.podium([sheets.Place(4, b"", ("4th",))])
