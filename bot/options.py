"""What a member can ask for: paint options, the re-rolls under a result, the images accepted.

Both platforms build a member's :class:`~engine.protocol.PaintOptions` here, the Discord
``/paint`` choices with :func:`choose` and the Telegram caption words
(``strength=7 quality=high keep_colors``) with :func:`parse`; the service and both platforms'
buttons take the re-rolls from :data:`REROLLS`. Adding a re-roll is one entry in
:data:`REROLLS` (and its test): the buttons, their ids and the service follow.

Nothing here talks to a platform; what a member is *told* about these is in :mod:`bot.replies`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Final

from bot.errors import InvalidOptions
from engine.protocol import (
    BLEND_MAX,
    BLEND_MIN,
    BRUSHES,
    STRENGTH_MAX,
    STRENGTH_MIN,
    OptionError,
    PaintOptions,
)
from engine.schedule import QUALITIES

DEFAULTS: Final = PaintOptions()
HOST_DEFAULT_QUALITY: Final = ""  # the host's ATELIER_DEFAULT_QUALITY, resolved by the service
STRENGTH_STEP: Final = 2  # how much Stronger and Softer change the strength
NUMBER_DIGITS: Final = 4  # a longer number in a caption is refused without being shown back
NAME_SHOWN: Final = 24  # a longer quality or brush is shown back cut to this

# The caption words Telegram members write, as the help shows them.
WORDS_HELP: Final = (
    f"strength={STRENGTH_MIN}…{STRENGTH_MAX}, quality={'|'.join(QUALITIES)}, "
    f"brush={'|'.join(BRUSHES)}, keep_colors, style=<a saved style>, "
    f"blend={BLEND_MIN}…{BLEND_MAX} (% of a second painting)"
)


def choose(
    *,
    strength: int | None = None,
    quality: str | None = None,
    keep_colors: bool | None = None,
    brush: str | None = None,
    blend: int | None = None,
) -> PaintOptions:
    """Options from a form where every choice may be left out (Discord's slash commands)."""
    return PaintOptions(
        strength=DEFAULTS.strength if strength is None else strength,
        quality=quality or HOST_DEFAULT_QUALITY,
        keep_colors=DEFAULTS.keep_colors if keep_colors is None else keep_colors,
        brush=brush or DEFAULTS.brush,
        blend=DEFAULTS.blend if blend is None else blend,
    )


def split_style(words: str | None) -> tuple[str | None, str]:
    """The saved style a caption names (``style=starry-night``; None when it names none) and
    the other words, for :func:`parse`. A style named twice is :class:`InvalidOptions`."""
    named: list[str] = []
    rest: list[str] = []
    for word in (words or "").split():
        key, has_value, value = word.partition("=")
        if key.lower() == "style" and has_value:
            if not value:
                raise InvalidOptions(
                    "Write the style's name after style=, like style=starry-night."
                )
            named.append(value)
        else:
            rest.append(word)
    if len(named) > 1:
        raise InvalidOptions("Name one saved style (style=name), not several.")
    return (named[0] if named else None), " ".join(rest)


def asks_blend(words: str | None) -> bool:
    """Whether the words ask for a blend of two paintings (``blend=30``)."""
    return any(word.lower().startswith("blend=") for word in (words or "").split())


def parse(words: str | None) -> PaintOptions:
    """``strength=7 quality=high keep_colors blend=30`` -> options, or
    :class:`InvalidOptions`."""
    values: dict[str, object] = {"quality": HOST_DEFAULT_QUALITY}
    given: set[str] = set()
    for word in (words or "").split():
        name, has_value, value = word.lower().replace("-", "_").partition("=")
        if has_value and name in given:
            # Which of two values was meant is anyone's guess: ask rather than pick one.
            raise InvalidOptions(f"{name} is given twice; give it once.")
        given.add(name)
        if name in ("keep_colors", "keep_colours") and not has_value:
            values["keep_colors"] = True
        elif name in ("strength", "blend") and has_value:
            low, high = (
                (STRENGTH_MIN, STRENGTH_MAX) if name == "strength" else (BLEND_MIN, BLEND_MAX)
            )
            number = value.removesuffix("%").lstrip("0") or "0"
            # Digits as people write them, and few enough that the refusal can show them:
            # int() alone reads "1_0" (and "1-0", made "1_0" above) as 10, and "٣٠" as 30.
            if not (number.isascii() and number.isdigit() and len(number) <= NUMBER_DIGITS):
                raise InvalidOptions(f"{name} must be a whole number from {low} to {high}.")
            values[name] = int(number)
        elif name in ("quality", "brush") and has_value:
            # No quality or brush is named this long; the refusal shows what was written.
            values[name] = value if len(value) <= NAME_SHOWN else value[: NAME_SHOWN - 1] + "…"
        else:
            raise InvalidOptions(f"I don't know the option “{word}”. Options: {WORDS_HELP}.")
    try:
        return PaintOptions(**values).validate()  # type: ignore[arg-type]
    except OptionError as error:
        raise InvalidOptions(f"{error}.") from None


# ----------------------------------------------------------------------------------------------
# Re-rolls: the buttons under a result that paint it again with one thing changed


@dataclass(frozen=True)
class Reroll:
    """One way to paint a result again.

    ``label`` is the button's text under a painting made with the given options, ``change``
    what "Painting it again, …" says; ``applies`` tells whether the button makes sense under
    that painting, ``apply`` gives the new painting's options.
    """

    key: str  # in button ids: keep it short, stable, and free of ":"
    emoji: str
    label: Callable[[PaintOptions], str]
    change: Callable[[PaintOptions], str]
    applies: Callable[[PaintOptions], bool]
    apply: Callable[[PaintOptions], PaintOptions]


def _stronger(options: PaintOptions) -> PaintOptions:
    return replace(options, strength=min(STRENGTH_MAX, options.strength + STRENGTH_STEP))


def _softer(options: PaintOptions) -> PaintOptions:
    return replace(options, strength=max(STRENGTH_MIN, options.strength - STRENGTH_STEP))


def _other_colours(options: PaintOptions) -> PaintOptions:
    return replace(options, keep_colors=not options.keep_colors)


REROLLS: Final = (
    Reroll(
        key="stronger",
        emoji="➕",
        label=lambda options: "Stronger",
        change=lambda options: "stronger",
        applies=lambda options: options.strength < STRENGTH_MAX,
        apply=_stronger,
    ),
    Reroll(
        key="softer",
        emoji="➖",
        label=lambda options: "Softer",
        change=lambda options: "softer",
        applies=lambda options: options.strength > STRENGTH_MIN,
        apply=_softer,
    ),
    Reroll(
        # A painting that kept the photo's colours offers the painting's, and the other way.
        key="keep_colors",
        emoji="🎨",
        label=lambda options: "Painting's colours" if options.keep_colors else "Keep colours",
        change=lambda options: (
            "with the painting's colours" if options.keep_colors else "with your photo's colours"
        ),
        applies=lambda options: True,
        apply=_other_colours,
    ),
)


def reroll(key: str) -> Reroll:
    """The re-roll named ``key`` (from a button), or :class:`InvalidOptions`."""
    for candidate in REROLLS:
        if candidate.key == key:
            return candidate
    known = ", ".join(r.key for r in REROLLS)
    raise InvalidOptions(f"Unknown change {key!r}; use {known}.")


def rerolls_for(options: PaintOptions) -> tuple[Reroll, ...]:
    """The re-rolls that make sense under a painting made with ``options``, in button order."""
    return tuple(r for r in REROLLS if r.applies(options))


# ----------------------------------------------------------------------------------------------
# The images a member can send: what the engine decodes (engine.images.ACCEPTED_FORMATS), as the
# platforms see it before downloading (declared content type, or the file name's suffix).


@dataclass(frozen=True)
class ImageFormat:
    name: str  # as members know it
    content_types: tuple[str, ...]
    suffixes: tuple[str, ...]


IMAGE_FORMATS: Final = (
    ImageFormat("PNG", ("image/png",), (".png",)),
    # MPO is the JPEG that phones write for some photos; Pillow reads it as a JPEG.
    ImageFormat("JPEG", ("image/jpeg", "image/jpg", "image/pjpeg", "image/mpo"), (".jpg", ".jpeg")),
    ImageFormat("WebP", ("image/webp",), (".webp",)),
    ImageFormat("BMP", ("image/bmp", "image/x-bmp", "image/x-ms-bmp"), (".bmp",)),
    ImageFormat("GIF", ("image/gif",), (".gif",)),
    ImageFormat("TIFF", ("image/tiff",), (".tif", ".tiff")),
)
IMAGE_TYPES: Final = frozenset(t for f in IMAGE_FORMATS for t in f.content_types)
IMAGE_SUFFIXES: Final = tuple(s for f in IMAGE_FORMATS for s in f.suffixes)


NOT_AN_IMAGE: Final = "not an image"


def image_kind(content_type: str | None, filename: str) -> str | None:
    """Why a file is refused before downloading it; None when it may be an accepted image.

    A declared image type decides: accepted, or refused with its format's name (``"HEIC"``).
    A file declared as anything else, or as nothing, is judged by its name: an accepted suffix
    passes (the service checks the bytes), anything else is :data:`NOT_AN_IMAGE`.
    """
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind.startswith("image/"):
        return None if kind in IMAGE_TYPES else kind.removeprefix("image/").upper()
    return None if filename.lower().endswith(IMAGE_SUFFIXES) else NOT_AN_IMAGE
