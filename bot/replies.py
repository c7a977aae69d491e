"""What a member is told: pure functions from the core's data to sentences. No I/O.

Both platforms say the same sentences; each adds only its markup through a :class:`Markup`
(Discord: markdown, mentions and timestamps that every member sees in their own time zone;
Telegram: plain text, :class:`Plain`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Final, Protocol

from bot.options import IMAGE_FORMATS

ACCEPTED: Final = (
    f"Send a {', '.join(f.name for f in IMAGE_FORMATS[:-1])} or {IMAGE_FORMATS[-1].name} file."
)
SMALLER: Final = "Try a smaller or more compressed version."
SMALLER_OR_PHOTO: Final = (
    "Try a smaller or more compressed version, or send it as a photo (Telegram shrinks photos)."
)


class Markup(Protocol):
    """How a platform marks up the pieces of a sentence."""

    def strong(self, text: str) -> str:
        """Text that should stand out (a position, a label)."""
        ...

    def quoted(self, text: str) -> str:
        """Something a member wrote or named (a title, a file name), inside a sentence."""
        ...


@dataclass(frozen=True)
class Plain:
    """Plain text (Telegram): quotes instead of bold; times in words."""

    now: float = 0.0  # unix time, for "in 3 days"

    def strong(self, text: str) -> str:
        return text

    def quoted(self, text: str) -> str:
        return f"“{text}”"


PLAIN: Final = Plain()


# ----------------------------------------------------------------------------------------------
# Sizes and durations


def megabytes(size: float) -> str:
    return f"{size / (1024 * 1024):.1f} MB"


def elapsed(seconds: float) -> str:
    """A measured time: ``42 s``, ``3 min 05 s``, ``1 h 5 min``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, rest = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {rest:02d} s"
    return f"{minutes // 60} h {minutes % 60} min"


def estimate(seconds: float) -> str:
    """An expected time: ``about 40 s``, ``about 3 min``, ``about 1 h 5 min``."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"about {max(5, round(seconds / 5) * 5)} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"about {minutes} min"
    return f"about {minutes // 60} h {minutes % 60} min"


def span(seconds: float) -> str:
    """A length of time in words: ``1 day 12 hours``."""
    seconds = round(seconds)
    days, rest = divmod(seconds, 24 * 3600)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    parts = [
        f"{value} {unit}{'s' if value != 1 else ''}"
        for value, unit in ((days, "day"), (hours, "hour"), (minutes, "minute"))
        if value
    ]
    return " ".join(parts) or "less than a minute"


def utc_time(moment: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(moment))


def count(number: int, noun: str) -> str:
    """``1 vote``, ``2 votes``, ``3 entries``."""
    consonant_y = noun.endswith("y") and noun[-2:-1] not in ("a", "e", "o", "u")
    plural = f"{noun[:-1]}ies" if consonant_y else f"{noun}s"
    return f"{number} {noun if number == 1 else plural}"


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def rounded_moment(seconds_from_now: float, now: float, granularity: int = 10) -> int:
    """Unix seconds, rounded up so that small changes of an estimate change nothing shown."""
    return math.ceil((now + max(0.0, seconds_from_now)) / granularity) * granularity


# ----------------------------------------------------------------------------------------------
# Refusals of an image before it is downloaded


def not_an_image(role: str, name: str, markup: Markup) -> str:
    return f"The {role} ({markup.quoted(name)}) isn't an image. {ACCEPTED}"


def unreadable_format(role: str, name: str, kind: str, markup: Markup) -> str:
    return f"The {role} ({markup.quoted(name)}) is a {kind} image. {ACCEPTED}"


def too_big(role: str, name: str, size: int, limit: int, markup: Markup, *, tip: str) -> str:
    return (
        f"The {role} ({markup.quoted(name)}) is {megabytes(size)}; the most I accept is "
        f"{megabytes(limit)}. {tip}"
    )


def too_big_to_fetch(role: str, name: str, limit: int, markup: Markup) -> str:
    return (
        f"The {role} ({markup.quoted(name)}) is too large for bots to fetch from Telegram "
        f"(over {megabytes(limit)}). {SMALLER}"
    )


def not_downloaded(role: str, name: str, platform: str, markup: Markup) -> str:
    return (
        f"I couldn't download the {role} ({markup.quoted(name)}) from {platform}. "
        "Please send it again."
    )
