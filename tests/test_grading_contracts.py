"""Grading on input outside the comparison's contracts, found by an adversarial review: an expected bound above the
rigorous one, negative bounds and bounds of the wrong shape from a plug-in's own error model, and a result whose
``__array__`` answers differently when read again. Each was a way for a wrong value to be graded ``agree``."""

from __future__ import annotations

import numpy as np
import pytest

import harness
from harness import StepResult
from harness.bounds import step_bounds
from harness.cases import case_from_arrays
from harness.compare import compare, compare_many
from harness.floats import get_format
from harness.verdicts import failures
from tests.steps import np_step as _np_step

F64 = get_format("float64")


def _case(dtype: str = "float64"):
    rng = np.random.default_rng(0)
    return case_from_arrays("contracts", X=rng.standard_normal((4, 3)), y=rng.standard_normal((4, 2)),
                            W=rng.standard_normal((3, 2)), b=rng.standard_normal(2), lr=0.125, dtypes=(dtype,))


def test_an_error_above_the_rigorous_bound_disagrees_whatever_the_expected_bound():
    """The expected ratio was tested first: an error 5x the rigorous bound agreed under an expected bound above it."""
    res = compare(np.full(3, 1.5), np.ones(3), 0, rigorous=0.1, expected=1.0, inf_allowed=False, fmt=F64)
    assert res.verdict == "disagree" and res.bound_ratio == pytest.approx(5.0)
    many = compare_many([{"computed": np.full(3, 1.5), "exact_hi": np.ones(3), "exact_lo": np.zeros(3), "rigorous": 0.1,
                          "expected": 1.0, "inf_allowed": False}], F64)
    assert many[0].verdict == "disagree"
    within = compare(np.full(3, 1.05), np.ones(3), 0, rigorous=0.1, expected=1.0, inf_allowed=False, fmt=F64)
    assert within.verdict == "agree"  # within both


@pytest.mark.parametrize(("kw", "message"), [
    ({"rigorous": -1.0, "expected": -1.0}, "negative"),
    ({"rigorous": np.array([0.1, -0.1, 0.1]), "expected": 0.0}, "negative"),
    ({"exact_hi": np.ones((3, 3))}, "exact_hi has shape"),
    ({"exact_hi": np.ones(1)}, "exact_hi has shape"),  # (1,) against (3,): broadcast before
    ({"rigorous": np.ones(2)}, "rigorous has shape"),
    ({"inf_allowed": np.zeros(2, dtype=bool)}, "inf_allowed has shape"),
    ({"computed": np.array([1 + 1j, 1, 1])}, "real numbers"),
    ({"computed": np.array(["1.0", "1.0", "1.0"])}, "real numbers"),
])
def test_compare_refuses_what_it_cannot_grade(kw, message):
    args = {"computed": np.full(3, 1.5), "exact_hi": np.ones(3), "exact_lo": np.zeros(3), "rigorous": 0.1,
            "expected": 0.01, "inf_allowed": False, **kw}
    with pytest.raises(ValueError, match=message):
        compare(**args, fmt=F64)
    with pytest.raises(ValueError, match=message):
        compare_many([args], F64)


_MODE = {"bounds": "neg"}


def _hostile_error_model(inputs, residual, exact, **kw):
    bd = step_bounds(inputs, residual, exact, **kw)
    for q in list(bd.rigorous):
        if _MODE["bounds"] == "neg":
            bd.rigorous[q] = -np.ones_like(bd.rigorous[q])
            bd.expected[q] = -np.ones_like(bd.expected[q])
        elif _MODE["bounds"] == "nan":
            bd.rigorous[q] = np.full_like(bd.rigorous[q], np.nan)
        elif _MODE["bounds"] == "short" and q == "grad_W":
            bd.rigorous[q] = np.array([1e300, 0.0])
            bd.expected[q] = bd.rigorous[q]
        elif _MODE["bounds"] == "missing" and q == "b":
            del bd.expected[q]
    return bd


@harness.implementation("contracts-wrong-own-model", framework="numpy", error_model=_hostile_error_model)
def _wrong_step(X, y, W, b, *, lr, reduction, steps):
    return [StepResult(r.loss * 1.5, r.grad_W * 1.5, r.grad_b * 1.5, r.W * 1.5, r.b * 1.5)
            for r in _np_step(X, y, W, b, lr=lr, reduction=reduction, steps=steps)]


@pytest.mark.parametrize(("mode", "message"), [
    ("neg", "negative or NaN rigorous bound"),  # every value agreed before (a negative ratio is within the bound)
    ("nan", "negative or NaN rigorous bound"),
    ("short", "bound of shape (2,) for grad_W"),  # broadcast to (3, 2) before
    ("missing", "no expected bound for b"),
])
def test_a_plugin_error_model_that_returns_unusable_bounds_is_an_error_naming_it(mode, message):
    _MODE["bounds"] = mode
    records = harness.verify([_case()], ["contracts-wrong-own-model"], dtypes="float64", isolation="inline")
    assert [r.verdict for r in records] == ["error"]
    assert "_hostile_error_model" in records[0].message and message in records[0].message
    assert failures(records)


class _AnswersTwice:
    """An ``__array__`` that gives ``first`` when read first and ``later`` when read again."""

    def __init__(self, first, later):
        self.first, self.later, self.reads = first, later, 0

    def __array__(self, dtype=None, copy=None):
        self.reads += 1
        a = self.first if self.reads == 1 else self.later
        return a if dtype is None else a.astype(dtype)


_LIAR = {"order": "wrong-then-right"}


@harness.implementation("contracts-answers-twice", framework="numpy")
def _answers_twice(X, y, W, b, *, lr, reduction, steps):
    out = []
    for r in _np_step(X, y, W, b, lr=lr, reduction=reduction, steps=steps):
        wrong = r.grad_W * 2
        pair = (wrong, r.grad_W) if _LIAR["order"] == "wrong-then-right" else (r.grad_W, wrong)
        out.append(StepResult(r.loss, _AnswersTwice(*pair), r.grad_b, r.W, r.b))
    return out


@pytest.mark.parametrize("order", ["wrong-then-right", "right-then-wrong"])
def test_the_value_graded_is_the_value_read_first(order):
    """Each result is read once: its checks and its grade see the same array. Before, the checks read it, then the
    grading read it again: a value wrong when checked and right when graded agreed."""
    _LIAR["order"] = order
    records = harness.verify([_case()], ["contracts-answers-twice"], dtypes="float64", isolation="inline")
    gW = [r for r in records if r.quantity == "grad_W"]
    assert len(gW) == 1
    assert gW[0].verdict == ("disagree" if order == "wrong-then-right" else "agree")


@harness.implementation("contracts-long-double", framework="numpy")
def _long_double(X, y, W, b, *, lr, reduction, steps):
    return [StepResult(r.loss, r.grad_W, r.grad_b, r.W.astype(np.longdouble) * (1 + np.longdouble(2) ** -62), r.b)
            for r in _np_step(X, y, W, b, lr=lr, reduction=reduction, steps=steps)]


@pytest.mark.skipif(np.finfo(np.longdouble).nmant <= 52, reason="long double is float64 here")
def test_a_result_float64_would_round_is_an_error_not_its_rounding_graded():
    """A long double result was converted to float64 (rounded, within half an ULP) and the rounding graded."""
    records = harness.verify([_case()], ["contracts-long-double"], dtypes="float64", isolation="inline")
    assert [r.verdict for r in records] == ["error"]
    assert "W holds values of dtype float128 that float64 cannot hold exactly" in records[0].message


def test_finite_differences_past_the_overflow_of_their_own_loss_are_overflow_not_an_error():
    """lr = 1e160: after one step the loss overflows float64, so the finite differences form inf - inf. Their step size
    raised (NaN to int: an error record), then their NaN gradient disagreed with an error model that did not allow it."""
    rng = np.random.default_rng(0)
    case = case_from_arrays("huge-lr", X=rng.standard_normal((4, 3)), y=rng.standard_normal((4, 2)),
                            W=rng.standard_normal((3, 2)), b=rng.standard_normal(2), lr=1e160, steps=3, dtypes=("float64",))
    records = harness.verify([case], ["finite-differences"], dtypes="float64", isolation="inline")
    assert not failures(records)
    assert {(r.step, r.verdict) for r in records if r.quantity in ("grad_W", "grad_b")} == {(1, "agree"), (2, "overflow")}
