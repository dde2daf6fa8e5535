"""compare(): the per-element verdicts, the worst element, non-finite values, signed zero, empty arrays.

The values are chosen by hand: float32 spacing at 1 is 2**-23, so an error of
``k * 2**-24`` is ``k / 2`` ULPs above 1.
"""

from __future__ import annotations

import numpy as np

from harness.compare import compare
from harness.floats import FLOAT16, FLOAT32
from harness.verdicts import ELEMENT_VERDICTS


def cmp(computed, exact, rig=1e-6, exp=1e-7, inf_ok=False, nan_ok=False, fmt=FLOAT32):
    c = np.asarray(computed, dtype=float)
    e = np.asarray(exact, dtype=float)
    z = np.zeros_like(e)
    return compare(c, e, z, np.full(c.shape, rig), np.full(c.shape, exp), np.full(c.shape, inf_ok), fmt,
                   nan_allowed=np.full(c.shape, nan_ok))


def test_element_verdicts_by_bound():
    one = 1.0
    res = cmp([one, one + 2.0**-23, one + 2.0**-20, one + 2.0**-18], [one] * 4, rig=2.0**-19, exp=2.0**-22)
    # errors 0, 2**-23 (< 2**-22), 2**-20 (between), 2**-18 (> 2**-19)
    assert res.counts == {"agree": 2, "suspect": 1, "disagree": 1}
    assert res.verdict == "disagree"
    assert res.worst_index == (3,)
    assert res.max_abs_error == 2.0**-18
    assert res.bound_ratio == 2.0
    assert res.max_ulp_error == 32.0  # 2**-18 / 2**-23
    assert res.verdict in ELEMENT_VERDICTS


def test_worst_element_is_the_largest_bound_ratio_not_the_largest_error():
    # element 0: error 2**-10 against a bound 2**-8 (ratio 1/4); element 1: error 2**-20 against 2**-21 (ratio 2)
    c = np.array([1.0 + 2.0**-10, 1.0 + 2.0**-20])
    res = compare(c, np.ones(2), np.zeros(2), np.array([2.0**-8, 2.0**-21]), np.array([2.0**-9, 2.0**-22]),
                  np.zeros(2, bool), FLOAT32)
    assert res.worst_index == (1,)
    assert res.bound_ratio == 2.0 and res.abs_error_at_worst == 2.0**-20
    assert res.max_abs_error == 2.0**-10  # the max_* fields may come from other elements
    assert res.computed_at_worst == 1.0 + 2.0**-20 and res.exact_at_worst == 1.0


def test_worst_element_ties_broken_by_ulps():
    # both errors are 0 ULP ratio ties at 0 -> the larger ULP error wins (both within bounds)
    c = np.array([1.0 + 2.0**-23, 1.0 + 4 * 2.0**-23])
    res = compare(c, np.ones(2), np.zeros(2), np.array([np.inf, np.inf]), np.array([np.inf, np.inf]), np.zeros(2, bool), FLOAT32)
    assert res.worst_index == (1,) and res.ulp_error_at_worst == 4.0


def test_nan_not_allowed_is_disagree_and_counts():
    res = cmp([1.0, np.nan], [1.0, 5.0], inf_ok=True, nan_ok=False)
    assert res.verdict == "disagree" and res.counts == {"agree": 1, "disagree": 1}
    assert res.max_abs_error == np.inf and res.bound_ratio == np.inf
    assert res.worst_index == (1,) and np.isnan(res.computed_at_worst) and res.exact_at_worst == 5.0


def test_nan_allowed_is_overflow_and_left_out_of_the_statistics():
    res = cmp([1.0, np.nan], [1.0, 5.0], nan_ok=True)
    assert res.verdict == "overflow" and res.counts == {"agree": 1, "overflow": 1}
    assert res.max_abs_error == 0.0 and res.bound_ratio == 0.0


def test_inf_allowed_or_not():
    assert cmp([np.inf], [5.0], inf_ok=True).verdict == "overflow"
    bad = cmp([-np.inf], [5.0], inf_ok=False, nan_ok=True)  # NaN allowed does not allow inf
    assert bad.verdict == "disagree" and bad.bound_ratio == np.inf and bad.max_ulp_error == np.inf


def test_exact_value_beyond_the_range_allows_inf():
    # 70000 is beyond float16's 65504: inf is the correctly rounded value
    assert cmp([np.inf], [70000.0], inf_ok=False, fmt=FLOAT16).verdict == "overflow"


def test_finite_value_where_overflow_was_possible_is_graded():
    res = cmp([2.0], [1.0], rig=0.5, exp=0.25, inf_ok=True, nan_ok=True)
    assert res.verdict == "disagree" and res.bound_ratio == 2.0


def test_signed_zero_is_no_error():
    res = cmp([-0.0, 0.0], [0.0, -0.0], rig=0.0, exp=0.0)
    assert res.verdict == "agree" and res.max_abs_error == 0.0 and res.max_ulp_error == 0.0 and res.bound_ratio == 0.0


def test_nonzero_error_against_a_zero_bound_is_disagree():
    res = cmp([FLOAT32.min_subnormal], [0.0], rig=0.0, exp=0.0)
    assert res.verdict == "disagree" and res.bound_ratio == np.inf and res.max_ulp_error == 1.0


def test_empty():
    res = cmp(np.zeros((0, 3)), np.zeros((0, 3)))
    assert res.verdict == "agree" and res.size == 0 and res.counts == {} and res.worst_index == ()
    assert res.max_abs_error == 0.0 and res.bound_ratio == 0.0


def test_scalar():
    res = cmp(np.array(1.0 + 2.0**-23), np.array(1.0), rig=2.0**-24, exp=2.0**-25)
    assert res.worst_index == () and res.verdict == "disagree" and res.bound_ratio == 2.0
