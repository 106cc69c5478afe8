"""The floor plan, enforced: flows -> tasks.pipeline -> tasks.engine, nothing back.

An AST scan of every import (top-level and inside functions), so a lazy import cannot hide
a wrong-way arrow.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# room -> module prefixes it must never import
FORBIDDEN = {
    "tasks/engine": ("tasks.pipeline", "flows", "prefect", "prefect_dask"),
    "tasks/pipeline": ("flows", "prefect", "prefect_dask"),
    "tasks": ("flows", "prefect", "prefect_dask"),
}


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def _room(path: Path) -> str:
    rel = path.relative_to(ROOT).parent.as_posix()
    for room in ("tasks/engine", "tasks/pipeline", "tasks"):
        if rel == room or rel.startswith(room + "/"):
            return room
    raise AssertionError(path)


@pytest.mark.parametrize("path", sorted((ROOT / "tasks").rglob("*.py")), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_import_runs_the_wrong_way(path: Path):
    forbidden = FORBIDDEN[_room(path)]
    bad = [f"line {ln}: {mod}" for ln, mod in _imports(path)
           if any(mod == f or mod.startswith(f + ".") for f in forbidden)]
    assert not bad, f"{path.relative_to(ROOT)} ({_room(path)}) imports against the floor plan: {bad}"


def test_every_module_lives_in_a_room():
    loose = [p.name for p in (ROOT / "tasks").glob("*.py") if p.name != "__init__.py"]
    assert not loose, f"modules directly under tasks/ (put them in engine/ or pipeline/): {loose}"


def test_rule_catches_a_wrong_way_import(tmp_path):
    """The scan itself works: a lazy import inside a function is found."""
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from tasks.pipeline.manifest import load_manifest\n")
    assert (2, "tasks.pipeline.manifest") in _imports(f)
