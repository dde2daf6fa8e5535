"""Hypothesis strategies: the built-in steps agree on drawn cases, case_to_toml
round-trips, and a failing property shrinks to a minimal case printed as TOML."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

import harness
from harness.cases import load_cases
from harness.runner import RunOptions, verify
from harness.strategies import case_to_toml, cases, note_case

FAST = settings(max_examples=20, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(cases(max_n=5, max_d=3, max_k=3, regimes=("normal", "integers", "mixed", "near-zero-residual", "zeros", "subnormal", "tiny")))
def test_builtin_steps_never_disagree_on_drawn_cases(case):
    note_case(case)
    records = verify([case], ["torch-seed", "numpy-hand"], dtypes=["float64", "float32"])
    bad = [r for r in records if r.verdict in ("disagree", "error")]
    assert not bad, bad[0].message


@FAST
@given(case=cases(max_n=4, max_d=3, max_k=3, regimes=("normal", "huge", "tiny", "mixed", "integers", "subnormal", "zeros")))
def test_case_to_toml_reproduces_the_case_bit_for_bit(case, tmp_path_factory):
    path = tmp_path_factory.mktemp("toml") / "case.toml"
    path.write_text(case_to_toml(case), encoding="utf-8")
    res = load_cases([path])
    assert not res.errors
    (back,) = res.cases
    assert back.id == case.id and back.lr == case.lr and back.steps == case.steps and back.reduction == case.reduction
    assert back.dtypes == case.dtypes and back.tags == case.tags
    for key in ("X", "y", "W", "b"):
        # bit-for-bit (negative zero is written as 0: equal as values)
        np.testing.assert_array_equal(back.values[key], case.values[key])


def test_case_to_toml_text():
    case = harness.case_from_arrays("c1", [[1.0, 0.1]], [[3.0]], [[2.5], [-1.0]], [0.5], lr=harness.cases.Fraction(1, 10),
                                    steps=2, reduction="mean", dtypes=["float32"], tags=["t"])
    assert case_to_toml(case) == (
        '[[case]]\nid = "c1"\ndescription = "minimal failing case"\n'
        'X = [["1.0", "0.1"]]\ny = [["3.0"]]\nW = [["2.5"], ["-1.0"]]\nb = ["0.5"]\n'
        'lr = "0.1"\nsteps = 2\nreduction = "mean"\ndtypes = ["float32"]\ntags = ["t"]\n'
    )


def _mean_over_n_only(X, y, W, b, *, lr, reduction, steps):
    """A wrong step: the mean divides by N instead of N*K (right only when K = 1)."""
    n, k = y.shape
    c = 1.0 if reduction == "sum" else 1.0 / n
    out = []
    for _ in range(steps):
        R = X @ W + b - y
        gW, gb = 2 * c * (X.T @ R), 2 * c * R.sum(axis=0)
        loss = c * np.sum(R * R)
        W, b = W - lr * gW, b - lr * gb
        out.append(harness.StepResult(loss, gW, gb, W, b))
    return out


def test_failing_property_shrinks_to_a_minimal_case_and_prints_it_as_toml():
    mutant = harness.Implementation("test-mean-over-n", framework="numpy", fn=_mean_over_n_only, correct=False, kind="plugin")

    @settings(max_examples=100, deadline=None, derandomize=True, database=None)
    @given(cases(max_n=4, max_d=3, max_k=3, regimes=("normal", "integers"), max_steps=2))
    def prop(case):
        note_case(case)
        records = verify([case], [mutant], dtypes=["float64"], options=RunOptions(trajectory=False))
        assert not [r for r in records if r.verdict == "disagree"]

    with pytest.raises(AssertionError) as info:
        prop()
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "Minimal case as a case-file snippet" in notes
    snippet = notes[notes.index("[[case]]"):]
    # shrunk: one row, one feature, two outputs (the smallest K where N*K != N), one step, mean
    assert 'id = "hyp-' in snippet and "-n1-d1-k2-mean-s1" in snippet
    assert 'reduction = "mean"' in snippet and "steps = 1" in snippet


@FAST
@given(cases(max_n=4, max_d=3, max_k=2, dtypes=("float16",)))
def test_drawn_cases_fit_their_narrowest_dtype(case):
    """helper-86: with float16 among the dtypes (a default), the mixed regime drew inputs up to 2**21, which overflow
    float16: the correct step then graded nothing, and the property failed. No drawn input overflows its dtypes now."""
    note_case(case)
    for key in ("X", "y", "W", "b"):
        assert np.all(np.abs(case.values[key]) <= 2.0**14), key
    harness.assert_agrees("numpy-hand", [case], dtypes=["float16"], options=RunOptions(trajectory=False))
