"""The floor plan, enforced: bench -> flows -> tasks.pipeline -> tasks.engine, nothing back.

Four rules, each checked on an AST scan of every import (top-level and inside functions, so a
lazy import cannot hide a wrong-way arrow or a cycle):

* the rooms: the engine never imports the pipeline, neither imports flows or Prefect, and no
  code imports the test suite or the benchmarks (`FORBIDDEN`; `tests` also in the Makefile);
* the packages: each concept package imports only the packages its row of `ALLOWED` names,
  and that table is itself a DAG;
* no import cycle between the modules of tasks/ and flows/;
* every module and package of tasks/ and flows/ opens with a docstring saying what it is for.

The checkers take a root folder, so the self-tests below run them on a small fake tree and
see them fail: this file cannot pass by finding nothing.
"""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("tasks", "flows")  # the installed code: the module graph and the package table cover these

# Room (module prefix) -> module prefixes it must never import. The longest matching room applies.
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "tasks.engine": ("tasks.pipeline", "flows", "prefect", "prefect_dask", "tests", "bench"),
    "tasks.pipeline": ("flows", "prefect", "prefect_dask", "tests", "bench"),
    "tasks": ("flows", "prefect", "prefect_dask", "tests", "bench"),
    "flows": ("tests", "bench"),
}

# The packages' floor plan: unit -> the other units it may import (imports inside a unit are
# free; the cycle rule covers them). A unit is a concept package, or a module that stands at
# another height than its package: `checkpoint.surgery` applies a selection, `report.record`
# is the record every production step writes, `production.build` runs everything,
# `corpus.languages`/`corpus.lid` are what the manifest validates against. A module belongs to
# the longest unit that is a prefix of its name; a new module directly under `tasks.engine` or
# `tasks.pipeline` gets the package's empty row until it is given its own.
E, P = "tasks.engine", "tasks.pipeline"
ENGINE_ROWS: dict[str, set[str]] = {
    f"{E}": set(),  # the package itself (its __init__)
    f"{E}.errors": set(),  # the exceptions every room raises
    f"{E}.runtime": {f"{E}.errors"},  # atomic writes, locks, progress: leans on nothing else
    f"{E}.checkpoint": {f"{E}.errors", f"{E}.runtime"},
    f"{E}.counting": {f"{E}.errors", f"{E}.runtime", f"{E}.checkpoint"},
    f"{E}.tokenizer": {f"{E}.errors", f"{E}.runtime", f"{E}.checkpoint", f"{E}.counting"},
    f"{E}.selection": {f"{E}.errors", f"{E}.runtime", f"{E}.counting", f"{E}.tokenizer"},
    f"{E}.checkpoint.surgery": {f"{E}.errors", f"{E}.runtime", f"{E}.checkpoint", f"{E}.tokenizer", f"{E}.selection"},
    f"{E}.verify": {f"{E}.errors", f"{E}.runtime", f"{E}.checkpoint", f"{E}.counting", f"{E}.tokenizer"},
    f"{E}.trim": {"tasks", f"{E}.errors", f"{E}.runtime", f"{E}.checkpoint", f"{E}.counting", f"{E}.tokenizer",
                  f"{E}.selection", f"{E}.checkpoint.surgery"},
}
PIPELINE_ROWS: dict[str, set[str]] = {
    f"{P}": set(),
    f"{P}.paths": set(),  # pkg://, relative and glob paths a manifest names
    f"{P}.corpus.languages": {f"{E}.runtime"},
    f"{P}.corpus.sources": {f"{E}.errors", f"{E}.counting", f"{P}.paths"},  # one module per corpus kind
    f"{P}.corpus.lid": {f"{E}.errors", f"{E}.counting", f"{P}.corpus.languages"},
    f"{P}.manifest": {"tasks", f"{E}.errors", f"{E}.runtime", f"{E}.checkpoint", f"{E}.selection", f"{E}.verify", f"{P}.paths",
                      f"{P}.corpus.languages", f"{P}.corpus.lid", f"{P}.corpus.sources"},
    f"{P}.publish": {f"{E}.errors", f"{E}.runtime", f"{P}.manifest"},
    f"{P}.corpus": {f"{E}.errors", f"{E}.runtime", f"{E}.checkpoint", f"{E}.counting", f"{P}.manifest",
                    f"{P}.corpus.lid", f"{P}.corpus.sources"},
    f"{P}.report.markdown": set(),  # values made inert in Markdown (stdlib only)
    f"{P}.report.metrics": {f"{E}.runtime", f"{P}.report.markdown"},  # the one list of card, catalog and web-page metrics
    f"{P}.report.record": {f"{E}.verify", f"{E}.trim", f"{P}.report.metrics"},
    f"{P}.production": {f"{E}.errors", f"{E}.runtime", f"{E}.checkpoint", f"{E}.verify", f"{P}.manifest",
                        f"{P}.publish", f"{P}.report.record"},
    f"{P}.evaluation": {f"{E}.errors", f"{E}.runtime", f"{E}.counting", f"{E}.verify", f"{P}.manifest",
                        f"{P}.publish", f"{P}.production"},
    f"{P}.report": {f"{E}.runtime", f"{E}.checkpoint", f"{E}.counting", f"{E}.tokenizer", f"{E}.selection", f"{P}.manifest",
                    f"{P}.publish", f"{P}.corpus", f"{P}.production", f"{P}.evaluation", f"{P}.report.record",
                    f"{P}.report.metrics", f"{P}.report.markdown"},
    f"{P}.production.build": {f"{E}.errors", f"{E}.runtime", f"{E}.checkpoint", f"{E}.verify", f"{E}.trim",
                              f"{P}.manifest", f"{P}.publish", f"{P}.corpus", f"{P}.production", f"{P}.evaluation",
                              f"{P}.report", f"{P}.report.record"},
}
TASKS_UNITS = {"tasks", *ENGINE_ROWS, *PIPELINE_ROWS}
ALLOWED: dict[str, set[str]] = {
    "tasks": set(),  # the version
    **ENGINE_ROWS,
    **PIPELINE_ROWS,
    "flows": set(TASKS_UNITS),  # Prefect flows over everything below
    "flows.cli": {"flows", *TASKS_UNITS},  # the commands: flows, and the engine usable alone
}


# --- the scan -------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _parsed(path: Path) -> ast.Module:
    """Each file parsed once per session, whichever rule reads it."""
    return ast.parse(path.read_text(), filename=str(path))


def _imports(path: Path, module: str = "", is_package: bool = False) -> list[tuple[int, str]]:
    """(line, imported name) for every import in the file, at any depth; relative imports are
    resolved against `module`. `from a import b` yields `a.b` (b may be a module or a name).
    Imports under `if TYPE_CHECKING:` are left out: they never run, so they make no cycle."""
    tree = _parsed(path)
    package = module if is_package else module.rpartition(".")[0]
    found = []
    type_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                 for stmt in node.body for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(parts + ([base] if base else []))
            found += [(node.lineno, f"{base}.{a.name}" if a.name != "*" else base) for a in node.names]
    return found


def _modules(root: Path, tops: Iterable[str]) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package) for every .py under the top folders."""
    out = {}
    for top in tops:
        for path in sorted((root / top).rglob("*.py")):
            rel = path.relative_to(root).with_suffix("")
            if any(p.startswith(".") for p in rel.parts):
                continue
            is_package = rel.name == "__init__"
            out[".".join(rel.parts[:-1] if is_package else rel.parts)] = (path, is_package)
    return out


@functools.lru_cache(maxsize=8)
def module_graph(root: Path, tops: tuple[str, ...] = SCANNED) -> dict[str, dict[str, int]]:
    """module -> {module it imports: line}, for imports between the scanned modules. An imported
    name resolves to the longest scanned module it starts with (`from a import b` is `a.b` when
    b is a module, else `a`)."""
    mods = _modules(root, tops)
    graph: dict[str, dict[str, int]] = {}
    for name, (path, is_package) in mods.items():
        edges: dict[str, int] = {}
        for line, imported in _imports(path, name, is_package):
            target = imported
            while target and target not in mods:
                target = target.rpartition(".")[0]
            if target and target != name:
                edges.setdefault(target, line)
        graph[name] = edges
    return graph


def find_cycle(graph: Mapping[str, Iterable[str]]) -> list[str]:
    """One cycle of the directed graph as a path [a, b, ..., a], or [] if it has none
    (iterative depth-first search; nodes and edges taken in sorted order, so the answer is stable)."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    for start in sorted(graph):
        if state.get(start):
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return []


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _longest(name: str, prefixes: Iterable[str]) -> str | None:
    return max((p for p in prefixes if _within(name, p)), key=len, default=None)


def wrong_way_imports(root: Path, forbidden: Mapping[str, tuple[str, ...]], tops: tuple[str, ...] = SCANNED) -> list[str]:
    """Every import (any module, installed or not) a room forbids."""
    bad = []
    for name, (path, is_package) in _modules(root, tops).items():
        room = _longest(name, forbidden)
        if room is None:
            bad.append(f"{path.relative_to(root)}: in no room of the floor plan")
            continue
        bad += [f"{path.relative_to(root)} line {line}: {room} imports {imported}"
                for line, imported in _imports(path, name, is_package)
                if any(_within(imported, f) for f in forbidden[room])]
    return bad


def unit_violations(graph: Mapping[str, Mapping[str, int]], allowed: Mapping[str, set[str]]) -> list[str]:
    """Imports from one unit into another that the unit's row does not allow."""
    bad = []
    for module, edges in sorted(graph.items()):
        unit = _longest(module, allowed)
        if unit is None:
            bad.append(f"{module}: in no unit of ALLOWED; give its package a row")
            continue
        for target, line in sorted(edges.items()):
            target_unit = _longest(target, allowed)
            if target_unit != unit and target_unit not in allowed[unit]:
                bad.append(f"{module} line {line} imports {target} ({unit} -> {target_unit})")
    return bad


def imports_of_tests(root: Path) -> list[str]:
    """Code outside tests/ that imports the test suite: Python files of the other top-level
    packages and of the root, and the Makefile's text (its `python -c` lines)."""
    files = sorted(root.glob("*.py"))
    for top in sorted(p for p in root.iterdir() if p.is_dir() and p.name != "tests" and (p / "__init__.py").exists()):
        files += [f for f in sorted(top.rglob("*.py")) if not any(p.startswith(".") for p in f.relative_to(root).parts)]
    bad = []
    for path in files:
        module = ".".join(path.relative_to(root).with_suffix("").parts)
        bad += [f"{path.relative_to(root)} line {line}: imports {name}"
                for line, name in _imports(path, module, path.name == "__init__.py") if _within(name, "tests")]
    makefile = root / "Makefile"
    if makefile.exists():
        for n, text in enumerate(makefile.read_text().splitlines(), 1):
            if re.search(r"\b(?:from|import)\s+tests\b|-m\s+tests\b", text):
                bad.append(f"Makefile line {n}: {text.strip()}")
    return bad


def missing_docstrings(root: Path, tops: tuple[str, ...] = SCANNED, min_words: int = 4) -> list[str]:
    """Modules and packages that do not open with a docstring of a few words."""
    bad = []
    for path, _ in _modules(root, tops).values():
        doc = ast.get_docstring(_parsed(path))
        if not doc or len(doc.split()) < min_words:
            bad.append(str(path.relative_to(root)))
    return bad


# --- the rules on this repository -------------------------------------------------------------


def test_no_import_runs_the_wrong_way():
    bad = wrong_way_imports(ROOT, FORBIDDEN)
    assert not bad, "imports against the floor plan (bench -> flows -> tasks.pipeline -> tasks.engine):\n" + "\n".join(bad)


def test_every_module_lives_in_a_room():
    loose = [p.name for p in (ROOT / "tasks").glob("*.py") if p.name != "__init__.py"]
    assert not loose, f"modules directly under tasks/ (put them in engine/ or pipeline/): {loose}"


def test_packages_import_only_what_their_row_allows():
    bad = unit_violations(module_graph(ROOT), ALLOWED)
    assert not bad, ("imports between packages that tests/test_layout.py ALLOWED does not name (import from a "
                     "lower package, or move the code; add an arrow only if the table stays a DAG):\n" + "\n".join(bad))


def test_the_package_table_is_a_dag_within_the_rooms():
    unknown = {u: sorted(v - ALLOWED.keys()) for u, v in ALLOWED.items() if v - ALLOWED.keys()}
    assert not unknown, f"ALLOWED names units that have no row: {unknown}"
    cycle = find_cycle(ALLOWED)
    assert not cycle, "ALLOWED has a cycle: " + " -> ".join(cycle)
    engine_up = {u: sorted(v - ENGINE_ROWS.keys() - {"tasks"}) for u, v in ENGINE_ROWS.items() if v - ENGINE_ROWS.keys() - {"tasks"}}
    assert not engine_up, f"engine rows allow imports out of the engine: {engine_up}"
    mods = module_graph(ROOT)
    stale = [u for u in ALLOWED if not any(_within(m, u) for m in mods)]
    assert not stale, f"ALLOWED rows that match no module (renamed or removed?): {stale}"


def test_no_import_cycles():
    graph = module_graph(ROOT)
    cycle = find_cycle(graph)
    steps = [f"{a} (line {graph[a][b]}: imports {b})" for a, b in zip(cycle, cycle[1:])]
    assert not cycle, ("import cycle (lazy imports inside functions count; move the shared code into the module "
                       "that owns it or a small new one):\n  " + "\n  ".join(steps))


def test_nothing_outside_tests_imports_tests():
    bad = imports_of_tests(ROOT)
    assert not bad, ("code outside tests/ imports the test suite (move the fixture into importable code, e.g. "
                     "bench/subjects.py, and re-import it in tests/subjects.py):\n" + "\n".join(bad))


def test_every_module_says_what_it_is_for():
    bad = missing_docstrings(ROOT)
    assert not bad, "modules without an opening docstring saying what they are for:\n" + "\n".join(bad)


# --- the checkers themselves, on a fake tree ------------------------------------------------


def _write_tree(root: Path, files: Mapping[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


FAKE = {
    "tasks/__init__.py": '"""The fake code, in two rooms."""\n',
    "tasks/engine/__init__.py": '"""The fake engine room here."""\n',
    "tasks/engine/a.py": '"""Module a, half of a cycle."""\ndef f():\n    from tasks.engine import b\n',
    "tasks/engine/b.py": '"""Module b, the other half."""\nfrom . import a\n',
    "tasks/engine/c.py": '"""Looks up at the pipeline."""\ndef g():\n    from tasks.pipeline.x import y\n',
    "tasks/engine/d.py": "x = 1\n",
    "tasks/pipeline/__init__.py": '"""The fake pipeline room here."""\n',
    "tasks/pipeline/x.py": '"""The pipeline module x."""\nfrom tasks.engine.d import x as y\n',
    "bench/__init__.py": "",
    "bench/run.py": "def main():\n    from tests.subjects import thing\n",
    "Makefile": 'report:\n\tpython -c "from tests.subjects import minilm_folder"\ntest:\n\tpytest tests\n',
}


def test_the_scan_finds_a_lazy_import(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from tasks.pipeline.manifest import load_manifest\n")
    assert (2, "tasks.pipeline.manifest.load_manifest") in _imports(f)


def test_checkers_find_a_cycle_hidden_by_a_lazy_import(tmp_path):
    root = _write_tree(tmp_path, FAKE)
    graph = module_graph(root, ("tasks",))
    assert graph["tasks.engine.b"] == {"tasks.engine.a": 2}  # relative import resolved
    assert find_cycle(graph) == ["tasks.engine.a", "tasks.engine.b", "tasks.engine.a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_checkers_find_wrong_way_imports(tmp_path):
    root = _write_tree(tmp_path, FAKE)
    assert wrong_way_imports(root, FORBIDDEN, ("tasks",)) == ["tasks/engine/c.py line 3: tasks.engine imports tasks.pipeline.x.y"]
    table = {"tasks": set(), "tasks.engine": set(), "tasks.engine.d": set(), "tasks.pipeline": {"tasks.engine"}}
    assert unit_violations(module_graph(root, ("tasks",)), table) == [
        "tasks.engine.c line 3 imports tasks.pipeline.x (tasks.engine -> tasks.pipeline)",
        "tasks.pipeline.x line 2 imports tasks.engine.d (tasks.pipeline -> tasks.engine.d)",
    ]


def test_checkers_find_imports_of_tests_and_missing_docstrings(tmp_path):
    root = _write_tree(tmp_path, FAKE)
    assert imports_of_tests(root) == ["bench/run.py line 2: imports tests.subjects.thing",
                                  'Makefile line 2: python -c "from tests.subjects import minilm_folder"']
    assert missing_docstrings(root, ("tasks",)) == ["tasks/engine/d.py"]
