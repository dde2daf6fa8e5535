"""Run-to-run determinism (--repeat R): the repeat_* fields, grading of the spread, the summary and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import harness
from harness.cases import load_cases
from harness.floats import get_format
from harness.implementations import REGISTRY, resolve
from harness.repeat import spread
from harness.runner import RunOptions, verify
from harness.summary import determinism_table
from tests.conftest import CASES, ROOT


def seed_cases():
    return load_cases([CASES / "seed.toml"]).cases


@pytest.fixture(autouse=True)
def _forget_test_plugins():
    yield
    for name in [n for n in REGISTRY if n.startswith("test-rep-")]:
        REGISTRY.pop(name, None)


def _noisy(name: str, ulps_per_run: float, runs: int = 3):
    """A numpy step whose W after step 1 moves by ``ulps_per_run`` ULPs more on every call of a
    ``--repeat runs`` check (the first run of each case is exact)."""
    hand = resolve(["numpy-hand"])[0].fn
    calls = [0]

    @harness.implementation(name, framework="numpy")
    def step(X, y, W, b, *, lr, reduction, steps):
        out = hand(X, y, W, b, lr=lr, reduction=reduction, steps=steps)
        calls[0] += 1
        res = out[0]
        w = res.W + np.spacing(res.W) * ulps_per_run * ((calls[0] - 1) % runs)
        return [res._replace(W=w.astype(res.W.dtype)), *out[1:]]

    return step


def test_a_deterministic_step_is_bitwise_equal_in_every_run():
    recs = verify(seed_cases(), ["numpy-hand", "torch-seed"], dtypes=["float32"], options=RunOptions(repeat=3))
    assert {r.repeat_count for r in recs} == {3}
    assert {r.repeat_identical for r in recs} == {1.0}
    assert {r.repeat_spread_ulps for r in recs} == {0.0} and {r.repeat_spread_abs for r in recs} == {0.0}
    assert {r.verdict for r in recs} == {"agree"}
    once = verify(seed_cases(), ["numpy-hand"], dtypes=["float32"])
    assert once[0].repeat_count is None  # without --repeat the fields stay empty
    table = determinism_table(recs)
    assert "numpy-hand" in table and "deterministic" in table and "100%" in table


def test_a_small_spread_is_reported_and_not_a_failure():
    _noisy("test-rep-wobble", 0.0, 2)  # identical
    recs = verify(seed_cases(), ["test-rep-wobble"], dtypes=["float64"], options=RunOptions(repeat=2))
    assert {r.repeat_identical for r in recs} == {1.0}
    # one ULP more per run on W of step 1: reported, within the rigorous bound of the update
    _noisy("test-rep-ulp", 1.0)
    recs = verify(seed_cases(), ["test-rep-ulp"], dtypes=["float64"], options=RunOptions(repeat=3))
    w1 = [r for r in recs if r.quantity == "W" and r.step == 1]
    assert all(r.repeat_identical == pytest.approx(1 / 3) for r in w1)
    assert all(r.repeat_spread_ulps == pytest.approx(2.0) for r in w1)
    assert all(r.verdict != "disagree" for r in w1)
    loss1 = [r for r in recs if r.quantity == "loss" and r.step == 1]
    assert all(r.repeat_identical == 1.0 for r in loss1)
    assert "not bitwise reproducible" in determinism_table(recs)


def test_a_spread_beyond_the_rigorous_bound_is_disagree():
    _noisy("test-rep-wild", 1e6)
    recs = verify(seed_cases(), ["test-rep-wild"], dtypes=["float64"], options=RunOptions(repeat=3))
    w1 = [r for r in recs if r.quantity == "W" and r.step == 1]
    assert w1 and all(r.verdict == "disagree" for r in w1)
    assert all("not deterministic beyond the rigorous bound: run 3 of 3" in r.message for r in w1)
    assert all(r.repeat_spread_ulps == pytest.approx(2e6, rel=1e-6) for r in w1)
    # run 1 itself agrees, and later steps (whose inputs now differ between runs) are reported, not graded
    assert all(r.verdict == "agree" for r in recs if r.step > 1 or r.quantity != "W")


def test_spread_of_non_finite_values():
    fmt = get_format("float32")
    s = spread([np.array([1.0, np.nan]), np.array([1.0, np.nan])], fmt)
    assert (s.identical, s.spread_abs) == (1.0, 0.0)
    s = spread([np.array([1.0, np.inf]), np.array([1.0, 2.0])], fmt)
    assert s.identical == 0.5 and s.spread_abs == float("inf")


def test_cli_repeat_prints_the_determinism_table(tmp_path):
    out = subprocess.run([sys.executable, "-m", "harness", "check", "--cases", str(CASES / "seed.toml"), "--case", "seed",
                          "--implementations", "numpy-hand", "--dtypes", "float32", "--repeat", "2", "--jobs", "1",
                          "--results", str(tmp_path / "r.jsonl"), "--report", str(tmp_path / "r.html")],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Run-to-run determinism" in out.stdout
    recs = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()[1:-1]]
    assert {r["repeat_count"] for r in recs} == {2} and {r["repeat_identical"] for r in recs} == {1.0}
    assert "--repeat 2" in recs[0]["repro"]
    assert "Run-to-run determinism" in (tmp_path / "r.html").read_text()
