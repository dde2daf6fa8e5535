"""helper-167: the W and b update bounds formed in one call on the joined arrays (``bounds._update_bounds_of_both``)
against :func:`harness.bounds.update_bound` of each alone, bit for bit, and ``_far_from_overflow``'s NaN tests from
its magnitudes' pass (a single NaN in the residual or in its bound refuses the fast path)."""

from __future__ import annotations

import numpy as np
import pytest

from harness import bounds as bounds_mod
from harness.floats import BFLOAT16, FLOAT16, FLOAT32, FLOAT64

SPECIAL = np.array([0.0, np.inf, np.nan, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, 1.0, 0.5, 3e-8])


def _arrays(rng: np.random.Generator, shape: tuple[int, ...], special: bool) -> tuple[np.ndarray, ...]:
    out = []
    for _ in range(3):
        a = np.abs(rng.standard_normal(shape)) * 10.0 ** rng.integers(-30, 30, size=shape)
        if special and a.size:
            flat = a.reshape(-1)
            flat[rng.integers(0, flat.size)] = SPECIAL[rng.integers(0, SPECIAL.size)]
        out.append(a)
    return tuple(out)


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit for bit in float64; in longdouble (whose padding bytes are not part of the value) equal values, NaN where
    NaN and the same signs."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype == np.float64:
        return a.tobytes() == b.tobytes()
    return bool(np.array_equal(a, b, equal_nan=True) and np.array_equal(np.signbit(a), np.signbit(b)))


@pytest.mark.parametrize("fmt", [FLOAT64, FLOAT32, FLOAT16, BFLOAT16], ids=lambda f: f.name)
def test_joined_update_bounds_equal_each_alone(fmt):
    rng = np.random.default_rng(167)
    for trial in range(200):
        d, k = int(rng.integers(1, 5)), int(rng.integers(1, 4))
        W_parts = _arrays(rng, (d, k), special=trial % 3 == 0)
        b_parts = _arrays(rng, (k,), special=trial % 5 == 0)
        lr = float(10.0 ** rng.integers(-6, 1)) * (1 if trial % 7 else 0)
        dlr = [0.0, lr * 2.0**-24][trial % 2]
        u2 = bounds_mod.update_rounding(fmt)
        eta = fmt.underflow_quantum
        etas = (eta, eta) if trial % 4 else (eta, fmt.min_normal)
        with np.errstate(invalid="ignore", over="ignore"):  # (the helper's caller's errstate)
            got = bounds_mod._update_bounds_of_both((*W_parts, *etas), (*b_parts, *etas), lr, dlr, u2, fmt)
        want = (bounds_mod.update_bound(*W_parts, lr, dlr, u2, *etas, fmt=fmt),
                bounds_mod.update_bound(*b_parts, lr, dlr, u2, *etas, fmt=fmt))
        for g, w in zip(got, want, strict=True):
            assert _same(g, w), (trial, g, w)


def test_joined_update_bounds_fall_back_where_not_joinable():
    """Per-element etas (flush-to-zero), different etas, a longdouble array: each alone, the same values."""
    rng = np.random.default_rng(7)
    W_parts, b_parts = _arrays(rng, (3, 2), False), _arrays(rng, (2,), False)
    u2 = bounds_mod.update_rounding(FLOAT32)
    cases = [
        ((*W_parts, np.full((3, 2), 1e-38), 1e-45), (*b_parts, np.full(2, 1e-38), 1e-45)),
        ((*W_parts, 1e-45, 1e-45), (*b_parts, 1e-38, 1e-45)),
        ((W_parts[0].astype(np.longdouble), *W_parts[1:], 1e-45, 1e-45), (*b_parts, 1e-45, 1e-45)),
    ]
    for pw, pb in cases:
        with np.errstate(invalid="ignore", over="ignore"):
            got = bounds_mod._update_bounds_of_both(pw, pb, 0.01, 0.0, u2, FLOAT32)
        want = (bounds_mod.update_bound(*pw[:3], 0.01, 0.0, u2, *pw[3:], fmt=FLOAT32),
                bounds_mod.update_bound(*pb[:3], 0.01, 0.0, u2, *pb[3:], fmt=FLOAT32))
        for g, w in zip(got, want, strict=True):
            assert _same(g, w)


def test_far_from_overflow_refuses_one_nan_in_the_residual_or_its_bound():
    rng = np.random.default_rng(3)
    X, Y = rng.standard_normal((16, 2)), rng.standard_normal((16, 1))
    W, b = rng.standard_normal((2, 1)), rng.standard_normal(1)
    R = X @ W + b - Y
    reg = bounds_mod.Regime(FLOAT64, False)
    rb = bounds_mod.residual_bound(X, W, b, Y, reg, 0.0)
    gb = bounds_mod.gradient_bounds(X, R, rb, 1 / 16, reg, 0.0)
    gW, gbv = 2 / 16 * X.T @ R, 2 / 16 * R.sum(axis=0)
    exact = {"loss": np.asarray((R * R).sum() / 16), "grad_W": gW, "grad_b": gbv, "W": W - 0.01 * gW, "b": b - 0.01 * gbv}
    args = (X, Y, W, b)
    assert bounds_mod._far_from_overflow(*args, R, exact, rb, gb, 1 / 16, [0.01], reg, 1.0, 1.0, 1.0) is True
    R_nan = R.copy()
    R_nan[5, 0] = np.nan
    assert bounds_mod._far_from_overflow(*args, R_nan, exact, rb, gb, 1 / 16, [0.01], reg, 1.0, 1.0, 1.0) is False
    E_nan = rb.E.copy()
    E_nan[11, 0] = np.nan
    nan_rb = bounds_mod.ResidualBound(A=rb.A, E=E_nan, U=rb.U, gamma=rb.gamma, U_uniform=rb.U_uniform)
    assert bounds_mod._far_from_overflow(*args, R, exact, nan_rb, gb, 1 / 16, [0.01], reg, 1.0, 1.0, 1.0) is False
