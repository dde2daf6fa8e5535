"""compare(): the per-element verdicts, the worst element, non-finite values, signed zero, empty arrays.

The values are chosen by hand: float32 spacing at 1 is 2**-23, so an error of
``k * 2**-24`` is ``k / 2`` ULPs above 1.
"""

from __future__ import annotations

import numpy as np

from harness.compare import compare
from harness.floats import FLOAT16, FLOAT32, round_to_format
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


def _hostile_item(rng: np.random.Generator, shape: tuple[int, ...], fmt) -> dict:
    """compare()'s arguments with every kind of element: exact, within and above the bounds, ties,
    +-inf and NaN (allowed or not, of either sign), exact values beyond float64, zero and infinite bounds."""
    size = int(np.prod(shape))
    hi = rng.choice([1.0, -3.0, 0.0, 2.0**-140, 1e300, np.inf, -np.inf], size=size, p=[.3, .2, .1, .1, .1, .1, .1])
    with np.errstate(invalid="ignore"):  # inf * 0 where hi is infinite, replaced by np.where
        lo = np.where(np.isfinite(hi), hi * rng.choice([0.0, 2.0**-60], size=size), 0.0)
        step = rng.choice([0.0, 2.0**-23, 2.0**-20, 2.0**-18, 2.0**-18], size=size)  # repeated errors: ties
        c = np.where(np.isfinite(hi), hi + step * np.where(hi == 0, 1.0, hi), rng.choice([1.0, -1.0], size=size))
    c = np.where(rng.random(size) < 0.15, rng.choice([np.inf, -np.inf, np.nan], size=size), c)
    c = np.where(np.isfinite(c), round_to_format(np.where(np.isfinite(c), c, 0.0), fmt), c)
    rig = rng.choice([2.0**-19, 0.0, np.inf, 2.0**980], size=size, p=[.7, .1, .1, .1])
    exp = np.minimum(rig, rng.choice([2.0**-22, 2.0**-19], size=size))

    def mask() -> np.ndarray:
        return (rng.random(size) < 0.4).reshape(shape)

    item = {"computed": c.reshape(shape), "exact_hi": hi.reshape(shape), "exact_lo": lo.reshape(shape),
            "rigorous": rig.reshape(shape), "expected": exp.reshape(shape), "inf_allowed": mask()}
    for key in ("nan_allowed", "posinf_allowed", "neginf_allowed", "finite_impossible"):
        item[key] = mask() if rng.random() < 0.6 else None
    if rng.random() < 0.3:  # broadcast scalars, as the loss's bounds are
        item["rigorous"], item["expected"], item["inf_allowed"] = 2.0**-19, 2.0**-22, False
    return item


def test_compare_many_is_compare_field_for_field():
    """compare_many (one pass over the concatenated quantities) gives every field of compare on each
    quantity alone: the same verdicts, counts, maxima, worst index (ties included) and ULP arrays."""
    from dataclasses import fields

    from harness.compare import compare_many
    from harness.floats import FLOAT64

    rng = np.random.default_rng(12)
    shapes = [(), (1,), (3,), (2, 3), (4, 1), (1, 1), (5, 2)]
    checked = 0
    for trial in range(300):
        fmt = (FLOAT32, FLOAT64, FLOAT16)[trial % 3]
        items = [_hostile_item(rng, shapes[i], fmt) for i in rng.integers(0, len(shapes), size=rng.integers(1, 6))]
        many = compare_many(items, fmt)
        assert len(many) == len(items)
        for item, got in zip(items, many, strict=True):
            want = compare(**item, fmt=fmt)
            for f in fields(want):
                a, b = getattr(got, f.name), getattr(want, f.name)
                if f.name in ("ulp", "codes"):
                    assert a.shape == b.shape and np.array_equal(a, b, equal_nan=f.name == "ulp"), f.name
                elif isinstance(b, float) and np.isnan(b):
                    assert np.isnan(a), f.name
                else:
                    assert a == b and type(a) is type(b), (f.name, a, b)
            checked += 1
    assert checked > 600


def test_compare_many_with_an_empty_quantity_falls_back_to_compare():
    from harness.compare import compare_many

    empty = {"computed": np.zeros((0, 2)), "exact_hi": np.zeros((0, 2)), "exact_lo": np.zeros((0, 2)),
             "rigorous": np.zeros((0, 2)), "expected": np.zeros((0, 2)), "inf_allowed": np.zeros((0, 2), dtype=bool)}
    one = {"computed": np.array([1.0 + 2.0**-20]), "exact_hi": np.ones(1), "exact_lo": np.zeros(1),
           "rigorous": np.array([2.0**-19]), "expected": np.array([2.0**-22]), "inf_allowed": np.zeros(1, dtype=bool)}
    got = compare_many([empty, one], FLOAT32)
    assert got[0].size == 0 and got[0].verdict == "agree"
    assert got[1].verdict == "suspect" and got[1].max_ulp_error == 8.0  # 2**-20 / 2**-23
