"""The package's structure: every module imports, no import cycles, no private names across modules."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGE = ROOT / "harness"
#: Modules that need an optional dependency to import (skipped when it is absent).
OPTIONAL = {"harness.pytest_plugin": "pytest"}


def _modules() -> dict[str, Path]:
    out = {}
    for p in sorted(PACKAGE.rglob("*.py")):
        parts = list(p.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The harness modules ``name`` imports, anywhere in it (a function-level import is still a
    dependency), except under ``if TYPE_CHECKING:`` (never run). An import of a submodule
    counts for that submodule only, not for its package's ``__init__``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for n in ast.walk(node))
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name in MODULES)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            for a in node.names:
                if f"{target}.{a.name}" in MODULES:
                    out.add(f"{target}.{a.name}")
                elif target in MODULES:
                    out.add(target)
    out.discard(name)
    return out


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


@pytest.mark.parametrize("name", sorted(set(MODULES) - {"harness.__main__"}))  # __main__ runs the CLI
def test_every_module_imports(name):
    if name in OPTIONAL:
        pytest.importorskip(OPTIONAL[name])
    importlib.import_module(name)


def test_no_import_cycles():
    graph = {name: _imports(name, path) for name, path in MODULES.items()}
    assert graph["harness.cases"] >= {"harness.generate"}  # the graph sees real edges
    assert _cycles(graph) == []


def test_the_cycle_detector_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _target(name: str, is_package: bool, node: ast.ImportFrom) -> str:
    base = name if is_package else name.rpartition(".")[0]
    if not node.level:
        return node.module or ""
    for _ in range(node.level - 1):
        base = base.rpartition(".")[0]
    return f"{base}.{node.module}" if node.module else base


def _private_uses(source: str, name: str, is_package: bool = False) -> list[str]:
    """Uses in ``source`` (module ``name``) of another harness module's private name:
    ``from .x import _name``, or ``x._name`` where ``x`` is a harness module."""
    tree = ast.parse(source)
    found = []
    local_modules: set[str] = set()  # local names bound to harness modules
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            target = _target(name, is_package, node)
            for a in node.names:
                if a.name.startswith("_") and not a.name.startswith("__"):
                    found.append(f"{node.lineno}: from {'.' * node.level}{node.module or ''} import {a.name}")
                if f"{target}.{a.name}" in MODULES:
                    local_modules.add(a.asname or a.name)
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "harness":
                    local_modules.add(a.asname or a.name)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            owner = ast.unparse(node.value)
            if owner in local_modules or owner in MODULES:
                found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_private_name_is_used_across_modules():
    """Make a name public (and document it) before another module uses it."""
    offences = [f"{path.relative_to(ROOT)}:{use}" for name, path in MODULES.items()
                for use in _private_uses(path.read_text(encoding="utf-8"), name, path.name == "__init__.py")]
    assert offences == []


def test_the_private_name_check_sees_each_kind_of_offence():
    src = "from .runner import _CaseCache\nfrom . import api\nimport harness.records\napi._impl_of\nharness.records._git_commit\nself._x\n"
    assert _private_uses(src, "harness.pytest_plugin") == [
        "1: from .runner import _CaseCache", "4: api._impl_of", "5: harness.records._git_commit"]
