"""The engine's import boundaries, read from the source.

* ``protocol.py`` and ``schedule.py`` are shared with the bot, so they import the standard
  library only (and each other); ``paint_settings.py`` and ``errors.py`` say the same of
  themselves, and the worker relies on ``errors.py`` being light.
* Nothing in ``engine/`` imports the bot, or a chat platform's library.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ENGINE = Path(__file__).resolve().parents[2] / "engine"
STANDARD_LIBRARY_ONLY = ("protocol", "schedule", "paint_settings", "errors")
CHAT_SIDE = ("bot", "discord", "aiogram", "aiohttp")


def imports(source: str) -> set[str]:
    """Every module a source file of ``engine/`` imports, anywhere in it, as a dotted name.

    ``from engine import protocol`` (or ``from . import protocol``) counts as
    ``engine.protocol``, since that is the module it loads.
    """
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # relative to the engine package
                module = ".".join(part for part in ("engine", module) if part)
            if module == "engine":
                found.update(f"engine.{alias.name}" for alias in node.names)
            else:
                found.add(module)
    return found


def outside_the_standard_library(source: str) -> set[str]:
    allowed = {f"engine.{name}" for name in STANDARD_LIBRARY_ONLY}
    return {
        name
        for name in imports(source)
        if name.split(".")[0] not in sys.stdlib_module_names and name not in allowed
    }


def chat_side(source: str) -> set[str]:
    return {name for name in imports(source) if name.split(".")[0] in CHAT_SIDE}


def test_the_checks_see_what_they_look_for() -> None:
    source = (
        "from __future__ import annotations\nimport math\nfrom engine import schedule\n"
        "from . import images\nif True:\n    import torch\n"
        "def f() -> None:\n    from bot.jobs import Job\n"
    )
    assert imports(source) == {
        "__future__",
        "math",
        "engine.schedule",
        "engine.images",
        "torch",
        "bot.jobs",
    }
    assert outside_the_standard_library(source) == {"engine.images", "torch", "bot.jobs"}
    assert chat_side(source) == {"bot.jobs"}


@pytest.mark.parametrize("name", STANDARD_LIBRARY_ONLY)
def test_shared_modules_import_the_standard_library_only(name: str) -> None:
    source = (ENGINE / f"{name}.py").read_text(encoding="utf-8")
    assert outside_the_standard_library(source) == set()


def test_nothing_in_the_engine_imports_the_chat_side() -> None:
    files = sorted(ENGINE.rglob("*.py"))
    assert len(files) > 10
    offenders = {
        str(path.relative_to(ENGINE)): found
        for path in files
        if (found := chat_side(path.read_text(encoding="utf-8")))
    }
    assert offenders == {}


def test_what_the_bot_imports_from_the_engine_loads_no_torch() -> None:
    # The modules the bot imports, loaded in a fresh interpreter; the worker only to name the
    # engine process's entry point (it imports torch inside that process).
    code = (
        "import sys\n"
        "import engine.protocol, engine.schedule, engine.images, engine.worker\n"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=ENGINE.parent,
        timeout=120,
    )
    loaded = set(result.stdout.split())
    assert "engine" in loaded
    assert loaded.isdisjoint({"torch", "torchvision", *CHAT_SIDE})
