"""Formats, rounding, ULP error: checked against NumPy/PyTorch conversions and hand values."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch

from harness.floats import BFLOAT16, FLOAT16, FLOAT32, FLOAT64, bits_of_error, decimal_string, round_fraction, round_to_format, ulp_error


def test_unit_roundoffs_and_ranges():
    assert FLOAT64.unit_roundoff == 2.0**-53
    assert FLOAT32.unit_roundoff == 2.0**-24
    assert FLOAT16.unit_roundoff == 2.0**-11
    assert BFLOAT16.unit_roundoff == 2.0**-8
    assert FLOAT16.max_finite == 65504.0
    assert FLOAT32.max_finite == float(np.finfo(np.float32).max)
    assert BFLOAT16.max_finite == float(torch.finfo(torch.bfloat16).max)
    assert FLOAT16.min_subnormal == 2.0**-24
    assert FLOAT32.gamma(1) == 2.0**-24 / (1 - 2.0**-24)
    assert FLOAT16.gamma(2048) == float("inf")


@pytest.mark.parametrize("fmt,convert", [
    (FLOAT32, lambda x: x.astype(np.float32).astype(np.float64)),
    (FLOAT16, lambda x: x.astype(np.float16).astype(np.float64)),
    (BFLOAT16, lambda x: torch.tensor(x).to(torch.bfloat16).to(torch.float64).numpy()),
])
def test_round_to_format_matches_framework_conversion(fmt, convert):
    rng = np.random.default_rng(1)
    x = np.concatenate([
        rng.standard_normal(2000) * np.exp2(rng.integers(-30, 30, 2000)),
        np.array([0.0, -0.0, 1.0, 65504.0, 65520.0, 1e-8, 2.0**-24 * 1.5, 2.0**-25, 3.4e38, 1e39]),
    ])
    got = round_to_format(x, fmt)
    with np.errstate(over="ignore"):  # 1e39 and 65520 overflow the narrower type: inf, as round_to_format gives
        want = convert(x)
    np.testing.assert_array_equal(got, want)


def test_round_fraction_ties_to_even():
    # 1 + 2**-24 lies exactly between two float32 numbers: ties to even gives 1
    assert round_fraction(Fraction(1) + Fraction(1, 2**24), FLOAT32) == 1
    assert round_fraction(Fraction(1) + Fraction(3, 2**24), FLOAT32) == 1 + Fraction(2, 2**23)
    assert round_fraction(Fraction(1, 10), FLOAT32) == Fraction(float(np.float32(0.1)))
    assert round_fraction(Fraction(70000), FLOAT16) == float("inf")


def test_ulp_error_hand_values():
    one = np.array([1.0])
    # one float32 spacing above 1 is 2**-23
    assert ulp_error(one + 2.0**-23, one, None, FLOAT32)[0] == 1.0
    # below 1 the spacing halves: 1 - 2**-24 is one ULP away
    assert ulp_error(one - 2.0**-24, one, None, FLOAT32)[0] == 1.0
    # across the binade: 1 - 2**-24 to 1 + 2**-23 is two values
    assert ulp_error(one + 2.0**-23, one - 2.0**-24, None, FLOAT32)[0] == 2.0
    # fractional, with the exact value as a double-double
    assert ulp_error(one, one, np.array([2.0**-25]), FLOAT32)[0] == 0.25
    # opposite signs: the smallest subnormals on both sides of zero
    assert ulp_error(np.array([FLOAT16.min_subnormal]), np.array([-FLOAT16.min_subnormal]), None, FLOAT16)[0] == 2.0
    assert ulp_error(np.array([np.inf]), one, None, FLOAT32)[0] == np.inf
    assert bits_of_error(np.array([0.0, 1.0, 3.0])).tolist() == [0.0, 1.0, 2.0]


def test_ulp_error_counts_float64_values_exactly_near_one():
    x = np.nextafter(1.0, 2.0)
    assert ulp_error(np.array([x]), np.array([1.0]), None, FLOAT64)[0] == 1.0


def test_decimal_string():
    assert decimal_string(Fraction(7, 5)) == "1.4"
    assert decimal_string(Fraction(1, 3), digits=5) == "0.33333..."
    assert decimal_string(Fraction(-5872025, 4194304)) == "-1.3999998569488525391..."
    assert decimal_string(Fraction(10) ** 30) == "1e+30"
    assert decimal_string(0.0) == "0"


def test_float32_rounding_agrees_with_the_exact_rational_rounding() -> None:
    """round_to_format's float32 path (NumPy's conversion) against round_fraction (exact rationals, ties to even) on
    ties, subnormals, the underflow and overflow edges and random magnitudes."""
    from fractions import Fraction

    rng = np.random.default_rng(7)
    edges = [2.0**-149, 2.0**-150, 3 * 2.0**-151, 2.0**-126 * (1 - 2.0**-24), 1 + 2.0**-24, 1 + 3 * 2.0**-24,
             float(np.finfo(np.float32).max), float(np.finfo(np.float32).max) * (1 + 2.0**-25), 3.4028235e38 * 1.0000001,
             0.0, -0.0, 0.1, -2.0**-149 * 1.5]
    x = np.concatenate([edges, -np.array(edges), rng.standard_normal(300) * np.exp2(rng.integers(-160, 130, 300))])
    got = round_to_format(x, FLOAT32)
    for v, g in zip(x, got, strict=True):
        want = round_fraction(Fraction(float(v)), FLOAT32)
        assert (float(want) == g) or (np.isinf(g) and np.isinf(float(want)) and np.sign(g) == np.sign(float(want))), v
