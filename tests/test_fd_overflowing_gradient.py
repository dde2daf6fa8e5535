"""The finite differences' error model where the exact gradient lies beyond float64 (helper-163): ``X * 2**500``,
``y * 2**520`` and a learning rate held exactly (``dlr = 0``) made ``update_bound``'s ``dlr * |g|`` the NaN of
``0 * inf``, and ``fd_error_model`` returned a NaN bound for W: one error record for the whole case, where every other
implementation's records say overflow."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from harness.bounds import update_bound
from harness.cases import case_from_arrays
from harness.implementations import load_builtins
from harness.runner import verify


def _case(n: int):
    rng = np.random.default_rng(7)
    X, W, b = rng.standard_normal((n, 4)), rng.standard_normal((4, 2)), rng.standard_normal(2)
    y = rng.standard_normal((n, 2)) * 2.0**520
    return case_from_arrays("fd-huge-sum", X * 2.0**500, y, W * 2.0**10, b, lr=1e-300, reduction="sum",
                            dtypes=["float64"])


def test_the_premise_the_exact_gradient_is_beyond_float64():
    case = _case(128)
    X, y, W, b = ([[Fraction(v) for v in row] for row in np.asarray(a, dtype=np.float64).reshape(len(a), -1)]
                  for a in (case.values["X"], case.values["y"], case.values["W"], np.asarray(case.values["b"])[None, :]))
    R = [[sum(X[i][j] * W[j][k] for j in range(4)) + b[0][k] - y[i][k] for k in range(2)] for i in range(128)]
    gW = [[2 * sum(X[i][j] * R[i][k] for i in range(128)) for k in range(2)] for j in range(4)]
    assert max(abs(g) for row in gW for g in row) > Fraction(np.finfo(np.float64).max)


def test_finite_differences_grade_a_case_whose_gradient_overflows_without_an_error_record():
    load_builtins()
    recs = verify([_case(128)], ["finite-differences", "numpy-hand"], dtypes=None)
    by = {(r.implementation, r.quantity): r.verdict for r in recs}
    assert "error" not in by.values(), [r.message for r in recs if r.verdict == "error"]
    # the finite differences' loss overflows float64 (the exact loss is about 2.7e315): every value they return is
    # inf or NaN, an overflow, as the NumPy step's loss, grad_W and W are (its grad_b and b are in range and agree)
    assert {by[("finite-differences", q)] for q in ("loss", "grad_W", "grad_b", "W", "b")} == {"overflow"}, by
    assert [by[("numpy-hand", q)] for q in ("loss", "grad_W", "grad_b", "W", "b")] == \
        ["overflow", "overflow", "agree", "overflow", "agree"], by


def test_update_bound_terms_with_a_zero_factor_are_zero_not_nan():
    u2, eta = 2.0**-53, 2.0**-1075
    new = np.array([1.0, 3.0])
    g, E = np.array([math.inf, 2.0]), np.array([math.inf, 0.5])
    # lr held exactly (dlr = 0): the lr' - lr term is 0; the others are inf where |g| is (a vacuous bound, never NaN)
    out = update_bound(new, g, E, 1e-300, 0.0, u2, eta)
    assert out[0] == math.inf and math.isfinite(out[1])
    # lr = 0 and dlr = 0: the product is exactly 0 whatever g is; the bound is the difference's rounding alone
    out0 = update_bound(new, g, E, 0.0, 0.0, u2, eta)
    assert np.array_equal(out0, u2 * new + (1 + u2) * eta + eta)
