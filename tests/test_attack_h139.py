"""helper-139's attack on the binade rule of the update's last rounding (:func:`harness.bounds.nearest_rounding_bound`).

The defect: the rule took a float64 step's difference ``W - p^`` as rounded once (``u_w = 0``), while a float64 step
formed in x87 extended precision or ``np.longdouble`` (64 significant bits) and rounded back is rounded twice: a ``z``
just below a float64 midpoint first rounds to the midpoint, then ties to even away from ``z``, an error of
``u 2**e + 2**-66`` in the binade ``[1/2, 1)``, above the rule's ``u 2**e + P`` where the product's error ``P`` is
small. Under the standard model ``u |W'|`` (before 8012fdd) such a ``z`` near the top of its binade was covered. The
wider type's unit roundoff is now one rule (:func:`harness.bounds.wider_roundoff`): ``2**-64`` for float64.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import numpy as np
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

import harness
from harness.bounds import nearest_rounding_bound, update_bound, update_rounding, wider_roundoff
from harness.cases import case_from_arrays
from harness.floats import FORMATS, round_fraction
from harness.implementations import StepResult
from harness.implementations.registry import Implementation

F64 = FORMATS["float64"]
# W = 1, lr = 2**-20, g = 1 + 2**-34 + 2**-46: p = lr g = 2**-20 + 2**-54 + 2**-66 exactly, and
# W' = 1 - p = a + 2**-54 - 2**-66 with a = 1 - 2**-20 - 2**-53 (an odd multiple of 2**-53): 2**-66 below the float64
# midpoint a + 2**-54, within half of the extended type's spacing 2**-64 of it
LR = 2.0**-20
G = 1 + 2.0**-34 + 2.0**-46
A = Fraction(1) - Fraction(2) ** -20 - Fraction(2) ** -53


def _double_rounded(z: Fraction) -> Fraction:
    """``z`` rounded to 64 significant bits (nearest, ties to even), then to float64: by hand for ``z`` in [1/2, 1)."""
    q = Fraction(2) ** -64
    n, r = divmod(z, q)
    n = int(n) + (1 if r > q / 2 or (r == q / 2 and int(n) % 2) else 0)
    got = round_fraction(n * q, F64)
    assert isinstance(got, Fraction)
    return got


def test_a_double_rounding_through_64_bits_by_hand():
    """``W' = a + 2**-54 - 2**-66``: extended rounding gives the midpoint, float64 ties to even ``a + 2**-53``; the
    error ``2**-54 + 2**-66`` is ``(1 + 2**-12)`` times the rule's ``u 2**-1 + P`` without ``u_w``
    (``P = u lr |g| + eta``, about ``2**-73``), within it with ``u_w = 2**-64``."""
    exact = Fraction(1) - Fraction(LR) * Fraction(G)
    assert exact == A + Fraction(2) ** -54 - Fraction(2) ** -66
    got = _double_rounded(exact)
    assert got == A + Fraction(2) ** -53
    if np.finfo(np.longdouble).nmant >= 63:  # the same through NumPy's 80-bit longdouble
        ld = np.longdouble
        assert Fraction(float(ld(1.0) - ld(LR) * ld(G))) == got
    err = abs(got - exact)
    assert err == Fraction(2) ** -54 + Fraction(2) ** -66
    bound = update_bound(np.array([float(exact)]), np.array([G]), np.array([0.0]), LR, 0.0, update_rounding(F64),
                         F64.underflow_quantum, fmt=F64)[0]
    assert err <= Fraction(float(bound)), float(err / Fraction(float(bound)))
    assert wider_roundoff(F64) == 2.0**-64 and update_rounding(F64) == 2.0**-53 + 2.0**-64 * (1 + 2.0**-53)


def _longdouble_step() -> Implementation:
    """A plain float64 NumPy step whose update is formed in ``np.longdouble`` and rounded back to float64."""

    def step(X: Any, y: Any, W: Any, b: Any, *, lr: float, reduction: str, steps: int) -> Any:
        out = []
        ld = np.longdouble
        for _ in range(steps):
            R = X @ W + b - y
            c = 1.0 if reduction == "sum" else 1.0 / R.size
            loss = c * (R**2).sum()
            gW, gb = 2 * c * (X.T @ R), 2 * c * R.sum(0)
            W = (W.astype(ld) - ld(lr) * gW.astype(ld)).astype(np.float64)
            b = (b.astype(ld) - ld(lr) * gb.astype(ld)).astype(np.float64)
            out.append(StepResult(loss, gW, gb, W.copy(), b.copy()))
        return out

    return Implementation(name="h139-longdouble-update", framework="numpy", fn=step)


def test_a_float64_step_formed_in_longdouble_agrees():
    """One element, N = K = 1 (sum): ``R = 1/2 + 2**-35 + 2**-47``, ``g = 2R = G`` exactly; was W disagree at
    1.00024 of the bound."""
    if np.finfo(np.longdouble).nmant < 63:
        pytest.skip("np.longdouble is not the 80-bit extended type here")
    R = 0.5 + 2.0**-35 + 2.0**-47
    case = case_from_arrays("h139-longdouble", np.array([[1.0]]), np.array([[0.5 - 2.0**-35 - 2.0**-47]]),
                            np.array([[1.0]]), np.array([0.0]), lr=LR, dtypes=["float64"], reduction="sum")
    assert 2 * R == G
    got = {r.quantity: r for r in harness.verify([case], [_longdouble_step()], dtypes=["float64"])}
    assert float(got["W"].computed if np.ndim(got["W"].computed) == 0 else np.ravel(got["W"].computed)[0]) \
        == float(A + Fraction(2) ** -53)  # the double-rounded W'
    for q, r in got.items():
        assert r.verdict == "agree", (q, r.verdict, r.bound_ratio)


@settings(max_examples=400, derandomize=True, deadline=None)
@example("float64", 0, 0, 20, 1, True)  # z = 1 + 2**-53 + 2**-65: 2**-65 above a midpoint, which ties down to 1
@given(st.sampled_from(["float64", "float32", "float16", "bfloat16"]), st.integers(-3, 3), st.integers(0, 2**20),
       st.integers(1, 40), st.integers(-2**12, 2**12), st.booleans())
def test_every_double_rounding_of_an_exact_update_is_within_the_rule(dtype, e, mant, gap, tail, wide):
    """``z = W - lr g`` exact (``E_g = 0``, ``lr`` a power of two) placed near binade edges and midpoints of the dtype,
    rounded once, or first to the wider type of :func:`wider_roundoff` (by hand, Fractions): never above
    :func:`update_bound` with the binade rule."""
    fmt = FORMATS[dtype]
    p = fmt.precision
    pw = {8: 24, 11: 24, 24: 53, 53: 64}[p]
    # W' = 2**e (1 + mant 2**-20) shifted by tail 2**(e - p - 12) near a midpoint or edge; W the float of fmt nearest
    # W' + 2**(e - gap) (small steps, whose product's error P is small), lr 2**-(gap % 7)
    target = Fraction(2) ** e * (1 + Fraction(mant, 2**20)) + Fraction(2) ** (e - p) + tail * Fraction(2) ** (e - p - 12)
    W = round_fraction(target + Fraction(2) ** (e - gap), fmt)
    lr = Fraction(2) ** -(gap % 7)
    g_exact = (W - target) / lr
    g = round_fraction(g_exact, fmt)  # the gradient as the dtype holds it, exact in the oracle too
    assume(isinstance(g, Fraction) and g != 0)  # (float16 overflows beyond 2**16)
    z = W - lr * g
    if wide:
        q = Fraction(2) ** (z.numerator.bit_length() - z.denominator.bit_length() - pw)
        while q * 2**pw <= z:
            q *= 2
        while q * 2 ** (pw - 1) > z:
            q /= 2
        n, r = divmod(z, q)
        n = int(n) + (1 if r > q / 2 or (r == q / 2 and int(n) % 2) else 0)
        y = n * q
    else:
        y = z
    got = round_fraction(y, fmt)
    assert isinstance(got, Fraction)
    bound = update_bound(np.array([float(abs(z))]), np.array([float(abs(g))]), np.array([0.0]), float(lr), 0.0,
                         update_rounding(fmt), fmt.underflow_quantum, fmt=fmt)[0] * (1 + 2.0**-30)
    assert abs(got - z) <= Fraction(float(bound)), (dtype, float(abs(got - z) / Fraction(float(bound))))
    assert float(nearest_rounding_bound(np.array([float(abs(z))]), fmt)[0]) <= update_rounding(fmt) * float(abs(z)) * (1 + 2.0**-50)
