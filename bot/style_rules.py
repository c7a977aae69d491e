"""The style library's rules that need no table: what a style name may be, and the refusals.

Names are unique in a community (a Discord server, a Telegram chat), case-insensitive, and
stored in lower case: 2 to 32 letters a-z, digits, ``-`` or ``_`` (:func:`check_name`). A name
that breaks the rule is answered with one that keeps it (:func:`slug`), when there is one and
no letter had to be dropped for it.
Each refusal of :mod:`bot.styles` is a :class:`StyleError` with the member's message.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final

from bot import replies
from bot.errors import UserFacingError
from bot.replies import PLAIN, Markup

NAME: Final = re.compile(r"[a-z0-9][a-z0-9_-]{1,31}")
NAME_MAX: Final = 32


# -- errors ------------------------------------------------------------------------------------


class StyleError(UserFacingError):
    """A library rule the member ran into; the message says which."""


class BadStyleName(StyleError):
    pass


class StyleExists(StyleError):
    pass


class NoSuchStyle(StyleError):
    pass


class LibraryFull(StyleError):
    pass


# -- names -------------------------------------------------------------------------------------


def slug(text: str) -> str:
    """``text`` made into a style name as far as it goes: ``Starry Night!`` -> ``starry-night``,
    ``Café`` -> ``cafe``; ``""`` when nothing usable is left."""
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    joined = re.sub(r"[^a-z0-9_]+", "-", folded).strip("-_")
    return joined[:NAME_MAX].rstrip("-_")


def check_name(text: str, markup: Markup = PLAIN) -> str:
    """The style name ``text`` stands for (trimmed, lower case), or :class:`BadStyleName`
    saying the rule and offering a name that keeps it."""
    name = text.strip().lower()
    if NAME.fullmatch(name):
        return name
    suggestion = slug(text)
    usable = suggestion if NAME.fullmatch(suggestion) and not _unfoldable(text) else None
    raise BadStyleName(replies.bad_style_name(text, usable, markup))


def _unfoldable(text: str) -> bool:
    """Whether ``text`` has a letter with no a-z form (a Cyrillic ``а`` that looks like ``a``,
    another script): :func:`slug` drops it, and a name offered without it is not the one meant.
    Accents and full-width letters fold (``é`` -> ``e``, ``ａ`` -> ``a``)."""
    return any(
        not char.isascii() and unicodedata.category(char).startswith("L")
        for char in unicodedata.normalize("NFKD", text)
    )
