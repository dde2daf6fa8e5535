"""Helpers for the tests of results files edited by hand (tests/test_attack_h131.py, tests/test_attack_h146.py): one
good case file's text, one check run's lines, a record line made failing, and ``report --exit-status`` of edited
lines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.cli import main
from harness.implementations import REGISTRY
from tests.conftest import CASES, main_in_process

#: One good case (N = D = K = 1, float64) with the id ``{id}``: ``ONE_CASE.format(id=...)``.
ONE_CASE = """
[[case]]
id = "{id}"
X = [[1.0]]
y = [[3.0]]
W = [[2.3]]
b = [1.4]
lr = 0.1
dtypes = ["float64"]
"""

#: One check run: numpy-hand on the seed case in float64, inline (40 agree records).
SEED_RUN = ["check", "--cases", str(CASES / "seed.toml"), "--case", "seed", "--dtypes", "float64", "--implementations",
            "numpy-hand", "--isolation", "inline", "-q", "--report", "none"]


def seed_run_lines(folder: Path) -> list[str]:
    """The lines of the results file of :data:`SEED_RUN`, written in ``folder``."""
    path = folder / "r.jsonl"
    assert main([*SEED_RUN, "--results", str(path)]) == 0
    return path.read_text().splitlines(keepends=True)


def report_exit_status(tmp_path: Path, lines: list[str], capsys: Any) -> tuple[int, str]:
    """``report FILE --exit-status`` of ``lines`` written to a file: its exit status and what it printed to stderr."""
    path = tmp_path / "edited.jsonl"
    path.write_text("".join(lines))
    rc, _, err = main_in_process(capsys, "report", str(path), "-o", str(tmp_path / "r.html"), "--exit-status")
    return rc, err


def failing_line(line: str) -> str:
    """A record line made a disagree record, its figures beyond the rigorous bound (as check writes one)."""
    d = json.loads(line)
    d.update(verdict="disagree", bound_ratio=2.0, expected_ratio=2.0, counts={"disagree": sum(d["counts"].values()) or 1})
    return json.dumps(d) + "\n"


def raising_plugin(name: str) -> str:
    """The source of a plug-in file registering a NumPy step ``name`` that always raises ``ZeroDivisionError`` (a
    whole-run ``error`` record of an implementation the run named)."""
    return f'''
import harness


@harness.implementation("{name}", framework="numpy")
def raises(X, y, W, b, *, lr, reduction, steps):
    raise ZeroDivisionError("a step that always raises")
'''


def raising_run_lines(folder: Path, name: str) -> list[str]:
    """The lines of the results file of ``check`` of numpy-hand and the plug-in :func:`raising_plugin` ``name`` (named
    with ``--implementations``) on the seed case in float64, written in ``folder``: 40 agree records and one whole-run
    error record; check exits 1."""
    plugin = folder / f"{name.replace('-', '_')}.py"
    plugin.write_text(raising_plugin(name))
    path = folder / "raises.jsonl"
    rc = main(["check", "--cases", str(CASES / "seed.toml"), "--case", "seed", "--dtypes", "float64", "--implementations",
               f"numpy-hand,{name}", "--plugin", str(plugin), "--isolation", "inline", "-q", "--report", "none",
               "--results", str(path)])
    assert rc == 1
    return path.read_text().splitlines(keepends=True)


def forget_plugins(prefix: str) -> None:
    """Remove the implementations whose names start with ``prefix`` from the registry (a test's plug-ins)."""
    for name in [n for n in REGISTRY if n.startswith(prefix)]:
        REGISTRY.pop(name, None)
