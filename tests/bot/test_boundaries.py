"""Who the chat side may import, read from the source with ast.

- ``bot/*.py``, the platform-neutral core, imports neither discord nor aiogram (only
  ``bot/discord/`` and ``bot/telegram/`` do);
- nothing in ``bot/`` imports torch (the engine process paints);
- nothing in ``bot/`` decodes an image: the process holding the tokens never imports Pillow
  nor calls what in ``engine.images`` decodes pixels (headers only, :func:`engine.images.admit`;
  the rest goes to the sandbox's child process or to the engine).

The engine's side of the boundary is tests/engine/test_boundaries.py.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parents[2]
PLATFORMS = {"discord", "aiogram"}


def imported(source: str) -> set[str]:
    """The top-level names of every module ``source`` imports, anywhere in it."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_the_checks_see_imports_anywhere() -> None:
    source = "import discord.ui\ndef f() -> None:\n    from aiogram import Bot\nimport bot.jobs\n"
    assert imported(source) == {"discord", "aiogram", "bot"}


def test_the_core_imports_no_chat_platform() -> None:
    core = sorted((ROOT / "bot").glob("*.py"))
    assert len(core) > 10
    offenders = {
        path.name: found
        for path in core
        if (found := imported(path.read_text(encoding="utf-8")) & PLATFORMS)
    }
    assert offenders == {}


def test_the_bot_never_imports_torch() -> None:
    offenders = {
        str(path.relative_to(ROOT)): found
        for path in sorted((ROOT / "bot").rglob("*.py"))
        if (found := imported(path.read_text(encoding="utf-8")) & {"torch", "torchvision"})
    }
    assert offenders == {}


# What in engine.images decodes (or re-encodes) pixels.
DECODERS = frozenset(
    {
        "probe",
        "load_image",
        "load_path",
        "thumbnail_jpeg",
        "preview_jpeg",
        "encode_for_budget",
        "encode_png",
        "encode_jpeg",
        "fit_within",
        "resize_to_long_side",
    }
)


def decoding(source: str) -> set[str]:
    """Pillow imported, or a pixel decoder of engine.images used, anywhere in ``source``."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "PIL")
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[0] == "PIL":
                found.add(node.module)
            elif node.module == "engine.images":
                found.update(f"images.{a.name}" for a in node.names if a.name in DECODERS)
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "images"
            and node.attr in DECODERS
        ):
            found.add(f"images.{node.attr}")
    return found


def test_the_decoding_check_sees_pillow_and_decoders() -> None:
    source = (
        "from PIL import Image\n"
        "from engine import images\n"
        "from engine.images import load_image, admit\n"
        "def f(data: bytes) -> None:\n"
        "    images.probe(data)\n"
        "    images.admit(data)\n"
    )
    assert decoding(source) == {"PIL", "images.load_image", "images.probe"}


def test_the_bot_never_decodes_an_image() -> None:
    offenders = {
        str(path.relative_to(ROOT)): found
        for path in sorted((ROOT / "bot").rglob("*.py"))
        if (found := decoding(path.read_text(encoding="utf-8")))
    }
    assert offenders == {}
