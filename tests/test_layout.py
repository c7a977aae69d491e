"""The layout's rules across bot/ and engine/, read from the source with ast.

- no module imports or calls another module's ``_private`` names (a platform package reaches
  the core, and a feature another feature, only through public names);
- no import cycles (imports done only for type checking count too).

Who may import what is tested beside each side: tests/bot/test_boundaries.py and
tests/engine/test_boundaries.py.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).parents[1]


def modules(*packages: str) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the packages."""
    found = {}
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def imported(path: Path) -> set[str]:
    """Every module ``path`` imports (``from a import b`` counts as ``a`` and ``a.b``)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            assert node.level == 0, f"{path}: relative import"
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def private_uses(path: Path) -> Iterator[str]:
    """``x._name`` (x not self or cls) where ``_name`` is not this module's own, and
    ``from m import _name``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    own = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            own.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            own.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            own.add(node.id)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
            name = node.attr
            if not name.startswith("_") or name.startswith("__") or name in own:
                continue
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue
            yield f"line {node.lineno}: .{name}"
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    yield f"line {node.lineno}: import {alias.name}"


def test_no_module_reaches_into_another_modules_private_names() -> None:
    found = {
        name: uses
        for name, path in modules("bot", "engine").items()
        if (uses := list(private_uses(path)))
    }
    assert found == {}


def import_graph(every: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the modules of ``every`` it imports."""
    return {
        name: {
            other
            for other in imported(path) & every.keys()
            # A package's __init__ imports its modules; a module's import of its own package
            # runs that __init__ first, which is how packages work, not a cycle.
            if other != name and not name.startswith(other + ".")
        }
        for name, path in every.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Every import ``a -> b`` from which ``a`` is reached again."""

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            current = todo.pop()
            if current == goal:
                return True
            if current not in seen:
                seen.add(current)
                todo.extend(graph[current])
        return False

    return sorted((name, other) for name in graph for other in graph[name] if reaches(other, name))


def test_no_import_cycles() -> None:
    assert cycles(import_graph(modules("bot", "engine"))) == []


def test_the_rules_catch_what_they_are_about(tmp_path: Path) -> None:
    """The checks above find a reach-in and a cycle where there is one."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import discord\nfrom bot.client import _helper\nclient._reply(1)\nself._ok()\n",
        encoding="utf-8",
    )
    assert "discord" in imported(sample)
    assert sorted(private_uses(sample)) == ["line 2: import _helper", "line 3: ._reply"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [
        ("a", "b"),
        ("b", "c"),
        ("c", "a"),
    ]
