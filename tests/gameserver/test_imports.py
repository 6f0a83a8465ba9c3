"""The product does not depend on its load tools: no module under ``gameserver/`` imports ``loadtest``
(``gameserver demo`` reaches ``loadtest.demo`` through the ``gameserver.commands`` entry point)."""

from __future__ import annotations

import ast
from importlib.metadata import entry_points
from pathlib import Path

GAMESERVER = Path(__file__).resolve().parents[2] / "gameserver"


def imported_modules(path: Path) -> set[str]:
    """Every module an ``import`` / ``from ... import`` statement of ``path`` names (relative ones too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_no_gameserver_module_imports_loadtest() -> None:
    offenders = {str(path.relative_to(GAMESERVER.parent)): sorted(mods)
                 for path in sorted(GAMESERVER.rglob("*.py"))
                 if (mods := {m for m in imported_modules(path) if m.split(".")[0] == "loadtest"})}
    assert offenders == {}
    assert len(list(GAMESERVER.rglob("*.py"))) > 20   # the walk saw the package


def test_the_scan_would_see_an_import_of_loadtest(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from loadtest.demo import main\n    import loadtest.bots as b\n")
    assert imported_modules(sample) == {"loadtest.demo", "loadtest.bots"}


def test_demo_is_registered_as_a_gameserver_command() -> None:
    commands = {ep.name: ep.value for ep in entry_points(group="gameserver.commands")}
    assert commands.get("demo") == "loadtest.demo:main"
