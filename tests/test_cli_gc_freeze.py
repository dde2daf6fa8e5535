"""check freezes the collector's objects only under process isolation (helper-111): inline, the tasks' own cyclic
garbage (torch's, the oracle's) was frozen with the records and kept for the rest of the run."""
from __future__ import annotations

import gc

import pytest

from harness.cli import main


@pytest.mark.parametrize("isolation", ["inline", "process"])
def test_gc_freeze_only_with_worker_processes(tmp_path, monkeypatch, isolation) -> None:
    calls: list[int] = []
    monkeypatch.setattr(gc, "freeze", lambda: calls.append(1))
    rc = main(["check", "--case", "seed", "--dtypes", "float64", "--implementations", "numpy-hand", "--isolation", isolation,
               "--results", str(tmp_path / "r.jsonl"), "--report", "none", "-q"])
    assert rc == 0
    assert bool(calls) == (isolation == "process")
