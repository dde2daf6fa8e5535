"""Hostile plug-ins and paths (the adversarial review): BaseException anywhere user code runs, plug-in loading,
nothing graded, output paths, orphaned workers, lr out of range, pytest options."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import CASES, ROOT

HOSTILE = textwrap.dedent('''
    import sys
    import numpy as np
    import harness

    def _hand(X, y, W, b, lr, reduction, steps):
        out = []
        for _ in range(steps):
            R = X @ W + b - y
            c = X.dtype.type(1.0 if reduction == "sum" else 1.0 / R.size)
            gW, gb = 2 * c * (X.T @ R), 2 * c * R.sum(axis=0)
            W, b = W - lr * gW, b - lr * gb
            out.append(harness.StepResult(c * np.sum(R * R), gW, gb, W, b))
        return out

    class Exiter:
        def __array__(self, dtype=None, copy=None):
            sys.exit(0)

    @harness.implementation("h-exit-in-array", framework="numpy")
    def exit_in_array(X, y, W, b, *, lr, reduction, steps):
        return [r._replace(loss=Exiter()) for r in _hand(X, y, W, b, lr, reduction, steps)]

    class E(Exception):
        def __str__(self):
            sys.exit(0)

    @harness.implementation("h-exit-in-str", framework="numpy")
    def exit_in_str(X, y, W, b, *, lr, reduction, steps):
        raise E()

    class L(list):
        def __len__(self):
            sys.exit(0)

    @harness.implementation("h-exit-in-len", framework="numpy")
    def exit_in_len(X, y, W, b, *, lr, reduction, steps):
        return L(_hand(X, y, W, b, lr, reduction, steps))

    @harness.implementation("h-kbi", framework="numpy")
    def kbi(X, y, W, b, *, lr, reduction, steps):
        raise KeyboardInterrupt

    class MyBase(BaseException):
        pass

    @harness.implementation("h-basexc", framework="numpy")
    def basexc(X, y, W, b, *, lr, reduction, steps):
        raise MyBase("boom")

    @harness.implementation("h-genexit", framework="numpy")
    def genexit(X, y, W, b, *, lr, reduction, steps):
        raise GeneratorExit
''')
BAD = ["h-exit-in-array", "h-exit-in-str", "h-exit-in-len", "h-kbi", "h-basexc", "h-genexit"]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def _check(tmp_path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", "check", "--report", "none", "-q", *args],
                          capture_output=True, text=True, env=_env(), cwd=tmp_path, timeout=timeout)


def _records(path) -> list[dict]:
    return [r for r in map(json.loads, path.read_text().splitlines()) if r.get("kind") == "record"]


@pytest.mark.parametrize("isolation", ["inline", "process"])
def test_base_exceptions_from_user_code_are_error_records(tmp_path, isolation):
    (tmp_path / "hostile.py").write_text(HOSTILE)
    out = _check(tmp_path, "--cases", str(CASES / "seed.toml"), "--case", "seed", "--dtypes", "float32",
                 "--plugin", str(tmp_path / "hostile.py"), "--implementations", ",".join(["numpy-hand", *BAD]),
                 "--isolation", isolation, "--results", str(tmp_path / "r.jsonl"))
    assert out.returncode == 1, out.stdout + out.stderr
    recs = _records(tmp_path / "r.jsonl")
    for name in BAD:
        mine = [r for r in recs if r["implementation"] == name]
        assert len(mine) == 1 and mine[0]["verdict"] == "error" and mine[0]["quantity"] == "*", (name, mine)
        assert "harness failure" not in mine[0]["message"] and "outside the step call" not in mine[0]["message"], mine
    assert {r["verdict"] for r in recs if r["implementation"] == "numpy-hand"} == {"agree"}


def test_a_plugin_that_exits_at_import_is_a_usage_error(tmp_path):
    (tmp_path / "exit_import.py").write_text("import sys\nsys.exit(0)\n")
    out = _check(tmp_path, "--cases", str(CASES / "seed.toml"), "--plugin", str(tmp_path / "exit_import.py"),
                 "--results", str(tmp_path / "r.jsonl"))
    assert out.returncode == 2, out.stdout + out.stderr
    assert "error:" in out.stderr and "exit_import.py" in out.stderr and "SystemExit" in out.stderr


def test_a_plugin_named_like_a_stdlib_module_does_not_replace_it(tmp_path):
    from harness.implementations import REGISTRY, load_plugin

    (tmp_path / "json.py").write_text(textwrap.dedent('''
        import harness
        @harness.implementation("test-hr-json", framework="numpy")
        def step(X, y, W, b, *, lr, reduction, steps):
            return []
    '''))
    real = sys.modules["json"]
    try:
        load_plugin(str(tmp_path / "json.py"))
        assert sys.modules["json"] is real
        assert REGISTRY["test-hr-json"].fn.__module__.startswith("harness_plugin_json_")
        load_plugin(str(tmp_path / "json.py"))  # twice: the same module, no clash
    finally:
        REGISTRY.pop("test-hr-json", None)
