"""Who the chat side may import, read from the source with ast.

- ``bot/*.py``, the platform-neutral core, imports neither discord nor aiogram (only
  ``bot/discord/`` and ``bot/telegram/`` do);
- nothing in ``bot/`` imports torch (the engine process paints).

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
