"""What a member is told: the sentences, on plain text and on a platform's markup."""

from __future__ import annotations

import pytest

from bot import replies
from bot.replies import PLAIN


@pytest.mark.parametrize(
    ("seconds", "elapsed", "estimate"),
    [
        (0, "0 s", "about 5 s"),
        (42.4, "42 s", "about 40 s"),
        (185, "3 min 05 s", "about 3 min"),
        (3900, "1 h 5 min", "about 1 h 5 min"),
    ],
)
def test_durations_measured_and_expected(seconds: float, elapsed: str, estimate: str) -> None:
    assert replies.elapsed(seconds) == elapsed
    assert replies.estimate(seconds) == estimate


def test_counts_and_spans() -> None:
    assert replies.count(1, "vote") == "1 vote"
    assert replies.count(2, "entry") == "2 entries"
    assert replies.count(0, "win") == "0 wins"
    assert replies.span(36 * 3600) == "1 day 12 hours"
    assert replies.span(30) == "less than a minute"


def test_image_refusals_name_the_file_and_what_is_accepted() -> None:
    accepted = "Send a PNG, JPEG, WebP, BMP, GIF or TIFF file."
    assert replies.not_an_image("photo", "notes.pdf", PLAIN) == (
        f"The photo (“notes.pdf”) isn't an image. {accepted}"
    )
    assert replies.unreadable_format("painting", "a.heic", "HEIC", PLAIN) == (
        f"The painting (“a.heic”) is a HEIC image. {accepted}"
    )
    assert replies.too_big("photo", "big.png", 3 * 2**20, 2**20, PLAIN, tip=replies.SMALLER) == (
        "The photo (“big.png”) is 3.0 MB; the most I accept is 1.0 MB. "
        "Try a smaller or more compressed version."
    )
