"""What a member can ask for: option choices, caption words, re-rolls."""

from __future__ import annotations

import pytest

from bot import options
from bot.errors import InvalidOptions
from engine.protocol import PaintOptions

# Every re-roll, what it does to a painting and its button there: (options before, after,
# label, what "Painting it again, ..." says). A new re-roll is one entry in options.REROLLS
# and one here.
REROLL_CASES = {
    "stronger": [
        (PaintOptions(strength=5), PaintOptions(strength=7), "Stronger", "stronger"),
        (PaintOptions(strength=9), PaintOptions(strength=10), "Stronger", "stronger"),
    ],
    "softer": [
        (PaintOptions(strength=5), PaintOptions(strength=3), "Softer", "softer"),
        (PaintOptions(strength=2), PaintOptions(strength=1), "Softer", "softer"),
    ],
    "keep_colors": [
        (
            PaintOptions(keep_colors=False),
            PaintOptions(keep_colors=True),
            "Keep colours",
            "with your photo's colours",
        ),
        (
            PaintOptions(keep_colors=True),
            PaintOptions(keep_colors=False),
            "Painting's colours",
            "with the painting's colours",
        ),
    ],
}


def test_every_reroll_is_described_here() -> None:
    keys = [way.key for way in options.REROLLS]
    assert sorted(keys) == sorted(REROLL_CASES)  # each once


@pytest.mark.parametrize(
    ("key", "before", "after", "label", "change"),
    [(key, *case) for key, cases in REROLL_CASES.items() for case in cases],
)
def test_a_reroll_changes_one_thing_and_says_what(
    key: str, before: PaintOptions, after: PaintOptions, label: str, change: str
) -> None:
    way = options.reroll(key)
    assert way.applies(before)
    assert way.apply(before) == after
    assert way.label(before) == label
    assert way.change(before) == change
    assert ":" not in way.key  # it travels in button ids split on ":"


def test_rerolls_that_would_change_nothing_are_not_offered() -> None:
    def keys(strength: int) -> set[str]:
        return {w.key for w in options.rerolls_for(PaintOptions(strength=strength))}

    assert {"softer", "keep_colors"} <= keys(10)
    assert "stronger" not in keys(10)
    assert {"stronger", "keep_colors"} <= keys(1)
    assert "softer" not in keys(1)
    assert {"stronger", "softer", "keep_colors"} <= keys(5)


def test_an_unknown_reroll_is_refused() -> None:
    with pytest.raises(InvalidOptions, match="Unknown change 'sharper'"):
        options.reroll("sharper")


def test_choices_left_out_take_the_defaults() -> None:
    assert options.choose() == PaintOptions(quality="")  # "": the host's default quality
    assert options.choose(strength=8, quality="high", keep_colors=True, brush="large") == (
        PaintOptions(strength=8, quality="high", keep_colors=True, brush="large")
    )


def test_caption_words_become_options() -> None:
    assert options.parse("strength=7 quality=high keep_colours BRUSH=small") == PaintOptions(
        strength=7, quality="high", keep_colors=True, brush="small"
    )
    assert options.parse(None) == options.choose()


@pytest.mark.parametrize(
    ("words", "message"),
    [
        ("softer", "I don't know the option “softer”. Options: strength=1…10"),
        ("strength=lots", "strength must be a whole number from 1 to 10."),
        ("strength=11", "strength 11 is out of range: use 1 to 10."),
        ("quality=ultra", "quality 'ultra' is unknown: use draft, standard, high."),
        ("blend=1_0", "blend must be a whole number from 0 to 100."),
        ("strength=٣", "strength must be a whole number from 1 to 10."),
        ("blend=" + "9" * 4000, "blend must be a whole number from 0 to 100."),
        ("brush=" + "b" * 500, "brush 'bbbbbbbbbbbbbbbbbbbbbbb…' is unknown: use"),
        ("blend=30 blend=40", "blend is given twice; give it once."),
        ("strength=3 quality=high Strength=3", "strength is given twice; give it once."),
    ],
)
def test_bad_caption_words_say_what_is_accepted(words: str, message: str) -> None:
    with pytest.raises(InvalidOptions) as refused:
        options.parse(words)
    assert refused.value.message.startswith(message)


def test_numbers_may_carry_a_percent_sign_and_leading_zeros() -> None:
    assert options.parse("blend=30% strength=007") == options.choose(blend=30, strength=7)


def test_the_images_accepted_are_the_formats_the_engine_reads() -> None:
    from engine.images import ACCEPTED_FORMATS

    names = {f.name.upper() for f in options.IMAGE_FORMATS}
    assert names == set(ACCEPTED_FORMATS)


@pytest.mark.parametrize(
    ("content_type", "filename", "kind"),
    [
        ("image/png", "cat.png", None),
        ("image/jpeg; charset=binary", "IMG.JPG", None),
        (None, "scan.TIFF", None),
        ("application/octet-stream", "cat.webp", None),  # judged by its name; bytes checked later
        ("image/heic", "IMG_0001.HEIC", "HEIC"),
        ("image/svg+xml", "logo.svg", "SVG+XML"),
        (None, "IMG_0001.heic", options.NOT_AN_IMAGE),
        ("application/pdf", "notes.pdf", options.NOT_AN_IMAGE),
        ("text/plain", "notes.txt", options.NOT_AN_IMAGE),
    ],
)
def test_files_are_judged_before_downloading(
    content_type: str | None, filename: str, kind: str | None
) -> None:
    assert options.image_kind(content_type, filename) == kind


def test_a_caption_names_a_saved_style_apart_from_the_options() -> None:
    from bot.options import split_style

    assert split_style("style=Starry-Night strength=7") == ("Starry-Night", "strength=7")
    assert split_style("keep_colors") == (None, "keep_colors")
    assert split_style(None) == (None, "")
    with pytest.raises(InvalidOptions, match="not several"):
        split_style("style=a style=b")
    with pytest.raises(InvalidOptions, match="after style="):
        split_style("style=")
