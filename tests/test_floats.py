"""Formats, rounding, ULP error: checked against NumPy/PyTorch conversions and hand values."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

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
    # gamma_n = (1 - u)^-n - 1, an upper bound within 2**-40 of the value from Fractions; at most Higham's
    # n u / (1 - n u) where that exists, finite where it does not (n u >= 1), inf only beyond float64
    for fmt, n in ((FLOAT32, 1), (FLOAT32, 1000), (FLOAT16, 3), (FLOAT16, 2047), (FLOAT16, 2048), (FLOAT16, 12291),
                   (BFLOAT16, 300), (FLOAT64, 3)):
        u = Fraction(fmt.unit_roundoff)
        exact = (1 / (1 - u)) ** n - 1
        assert float(exact) <= fmt.gamma(n) <= float(exact) * (1 + 2.0**-40), (fmt.name, n)
        if n * u < 1:
            assert fmt.gamma(n) <= float(n * u / (1 - n * u)) * (1 + 2.0**-40), (fmt.name, n)
    assert FLOAT16.gamma(2048) == pytest.approx(1.7189457686628, rel=1e-12)  # e^(2048 u (1 + u/2 + ...)) - 1
    assert FLOAT16.gamma(0) == 0.0 and BFLOAT16.gamma(200_000) == float("inf")


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


def _reference_decimal_string(value: Fraction | float, digits: int = 20) -> str:
    """The harness's earlier decimal_string, in Fraction arithmetic (kept as the reference: the integer version
    must write the same string for every rational)."""
    if isinstance(value, float):
        if not np.isfinite(value):
            return repr(value)
        value = Fraction(value)
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    a = abs(value)
    bits = a.numerator.bit_length() - a.denominator.bit_length()
    exp10 = math.floor(bits * math.log10(2))
    while Fraction(10) ** exp10 > a:
        exp10 -= 1
    while Fraction(10) ** (exp10 + 1) <= a:
        exp10 += 1
    scale = Fraction(10) ** (digits - 1 - exp10)
    scaled = a * scale
    m = round(scaled)
    if m >= 10**digits:
        exp10 += 1
        scale /= 10
        m = round(a * scale)
    exact = m == scaled
    s = str(m).rstrip("0") if exact else str(m)
    point = exp10 + 1
    if -6 < exp10 < digits:
        if point <= 0:
            body = "0." + "0" * (-point) + s
        elif point >= len(s):
            body = s + "0" * (point - len(s))
        else:
            body = s[:point] + "." + s[point:]
    else:
        body = (s[0] + ("." + s[1:] if len(s) > 1 else "")) + f"e{exp10:+d}"
    return sign + body + ("" if exact else "...")


_DECIMAL_EDGES = [Fraction(5, 10**21), Fraction(15, 10**21), Fraction(25, 10**21), Fraction(99999999999999999995, 10**20),
                  Fraction(999999999999999999995, 10**21), Fraction(1, 3), Fraction(2, 3), Fraction(10) ** -7, Fraction(10) ** 20,
                  Fraction(10) ** 19 - 1, Fraction(10) ** 20 + 5, Fraction(1, 2**1074), Fraction(2**1024 - 2**971),
                  Fraction(3, 2) * Fraction(10) ** 5000, Fraction(1, 7) * Fraction(10) ** -400, Fraction(123456789, 1000)]


@settings(max_examples=400, deadline=None)
@given(num=st.integers(min_value=-(10**60), max_value=10**60), den=st.integers(min_value=1, max_value=10**45),
       scale=st.integers(min_value=-400, max_value=400), digits=st.integers(min_value=1, max_value=25))
def test_decimal_string_is_the_rational_reference_on_random_rationals(num: int, den: int, scale: int, digits: int) -> None:
    value = Fraction(num, den) * Fraction(10) ** scale
    assert decimal_string(value, digits) == _reference_decimal_string(value, digits)


@settings(max_examples=400, deadline=None)
@given(x=st.floats(allow_nan=True, allow_infinity=True), digits=st.integers(min_value=1, max_value=25))
def test_decimal_string_is_the_rational_reference_on_floats(x: float, digits: int) -> None:
    assert decimal_string(x, digits) == _reference_decimal_string(x, digits)


@pytest.mark.parametrize("digits", [1, 2, 5, 20, 21])
def test_decimal_string_ties_carries_and_extremes_are_the_rational_reference(digits: int) -> None:
    for v in _DECIMAL_EDGES + [-v for v in _DECIMAL_EDGES]:
        assert decimal_string(v, digits) == _reference_decimal_string(v, digits), (v, digits)
    # by hand: ties go to even, a carry adds a digit
    assert decimal_string(Fraction(25, 10), 1) == "2..."
    assert decimal_string(Fraction(35, 10), 1) == "4..."
    assert decimal_string(Fraction(995, 1000), 2) == "1.0..."
    assert decimal_string(Fraction(1, 2**1074)) == "4.9406564584124654418e-324..."
