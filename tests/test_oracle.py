"""The exact oracle: hand-derived values and a cross-check against plain Fractions."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from harness.exact import ScaledInts
from harness.oracle import exact_inputs_from_floats, exact_inputs_from_written, exact_step, exact_trajectory


def _fr(rows):
    out = np.empty((len(rows), len(rows[0])), dtype=object)
    for i, r in enumerate(rows):
        out[i, :] = [Fraction(v) for v in r]
    return out


def _vec(vals):
    out = np.empty(len(vals), dtype=object)
    out[:] = [Fraction(v) for v in vals]
    return out


def test_hand_derived_two_samples():
    # X = [1, 2]^T, y = [1, 1]^T, W = 1, b = 0: R = [0, 1]
    # sum: L = 1, dL/dW = 2 * (1*0 + 2*1) = 4, dL/db = 2 * 1 = 2
    inp = exact_inputs_from_written({"X": _fr([[1], [2]]), "y": _fr([[1], [1]]), "W": _fr([[1]]), "b": _vec([0])})
    st = exact_step(inp, Fraction(1, 4), "sum")
    assert st.values["loss"].fraction_at(()) == 1
    assert st.values["grad_W"].fraction_at((0, 0)) == 4
    assert st.values["grad_b"].fraction_at((0,)) == 2
    assert st.values["W"].fraction_at((0, 0)) == 0  # 1 - 4/4
    assert st.values["b"].fraction_at((0,)) == Fraction(-1, 2)
    st = exact_step(inp, Fraction(1, 4), "mean")  # divide by N*K = 2
    assert st.values["loss"].fraction_at(()) == Fraction(1, 2)
    assert st.values["grad_W"].fraction_at((0, 0)) == 2
    assert st.values["grad_b"].fraction_at((0,)) == 1


def test_issue5_example_values():
    # X = [1, 2, 3, 4], y = 2X, w = 0, no bias, mean, lr = 0.01: gradient -30, w 0.3
    X = _fr([[1], [2], [3], [4]])
    inp = exact_inputs_from_written({"X": X, "y": _fr([[2], [4], [6], [8]]), "W": _fr([[0]]), "b": _vec([0])})
    traj = exact_trajectory(inp, Fraction(1, 100), "mean", 2)
    assert traj[0].values["grad_W"].fraction_at((0, 0)) == -30
    assert traj[0].values["W"].fraction_at((0, 0)) == Fraction(3, 10)
    # the bias is a parameter here: b moves to 0.1 too, so the gradient at step 2 is
    # 0.5 * sum x (-1.7x + 0.1) = -25; at w = 0.3 with b kept at 0 it is -25.5
    assert traj[0].values["b"].fraction_at((0,)) == Fraction(1, 10)
    assert traj[1].values["grad_W"].fraction_at((0, 0)) == -25
    at_03 = exact_inputs_from_written({"X": X, "y": _fr([[2], [4], [6], [8]]), "W": _fr([["0.3"]]), "b": _vec([0])})
    assert exact_step(at_03, Fraction(1, 100), "mean").values["grad_W"].fraction_at((0, 0)) == Fraction(-51, 2)


def _fraction_reference(X, y, W, b, lr, reduction):
    n, d, k = len(X), len(X[0]), len(W[0])
    c = Fraction(1) if reduction == "sum" else Fraction(1, n * k)
    R = [[sum(X[i][j] * W[j][m] for j in range(d)) + b[m] - y[i][m] for m in range(k)] for i in range(n)]
    loss = c * sum(r * r for row in R for r in row)
    gW = [[2 * c * sum(X[i][j] * R[i][m] for i in range(n)) for m in range(k)] for j in range(d)]
    gb = [2 * c * sum(R[i][m] for i in range(n)) for m in range(k)]
    return loss, gW, gb, [[W[j][m] - lr * gW[j][m] for m in range(k)] for j in range(d)], [b[m] - lr * gb[m] for m in range(k)]


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_matches_plain_fraction_arithmetic_on_random_floats(reduction):
    rng = np.random.default_rng(7)
    n, d, k = 9, 4, 3
    arrs = {
        "X": rng.standard_normal((n, d)) * np.exp2(rng.integers(-40, 40, (n, d))),
        "y": rng.standard_normal((n, k)),
        "W": rng.standard_normal((d, k)).astype(np.float32).astype(np.float64),
        "b": rng.standard_normal(k),
    }
    lr = Fraction(float(np.float32(0.01)))
    st = exact_step(exact_inputs_from_floats(arrs), lr, reduction)
    F = {key: [[Fraction(v) for v in row] for row in a] if a.ndim == 2 else [Fraction(v) for v in a] for key, a in arrs.items()}
    loss, gW, gb, W1, b1 = _fraction_reference(F["X"], F["y"], F["W"], F["b"], lr, reduction)
    assert st.values["loss"].fraction_at(()) == loss
    assert [[st.values["grad_W"].fraction_at((j, m)) for m in range(k)] for j in range(d)] == gW
    assert [st.values["grad_b"].fraction_at((m,)) for m in range(k)] == gb
    assert [[st.values["W"].fraction_at((j, m)) for m in range(k)] for j in range(d)] == W1
    assert [st.values["b"].fraction_at((m,)) for m in range(k)] == b1


def test_scaled_ints_round_trip_and_hi_lo():
    x = np.array([1.0, -2.5, 2.0**-1074, 1e300, 0.0])
    si = ScaledInts.from_floats(x)
    assert [float(f) for f in si.to_fractions()] == x.tolist()
    hi, lo = ScaledInts.from_fractions(_vec(["0.1", "1e-400", "-3"])).to_hi_lo()
    assert hi.tolist() == [0.1, 0.0, -3.0]
    assert lo[0] == float(Fraction(1, 10) - Fraction(0.1))
    with pytest.raises(ValueError):
        ScaledInts.from_floats(np.array([np.nan]))


def test_exact_inputs_from_floats_checked_finite_skips_only_the_check():
    arrays = {"X": np.array([[0.1, -3.0e-310], [2.0**60, -0.0]]), "b": np.array([0.5], dtype=np.float32)}
    plain, checked = exact_inputs_from_floats(arrays), exact_inputs_from_floats(arrays, finite=True)
    for key in arrays:
        assert plain[key].to_fractions().tolist() == checked[key].to_fractions().tolist()
    assert checked["X"].floats is arrays["X"]  # float64: kept, not copied
    with pytest.raises(ValueError, match="NaN or inf"):
        exact_inputs_from_floats({"X": np.array([1.0, np.nan])})


@pytest.mark.parametrize("method", ["exact-rational", "exact-integer-slices"])
def test_the_mean_over_no_element_is_a_value_error(method: str) -> None:
    # helper-87: K = 0 (or N = 0) under the mean raised ZeroDivisionError (its 1 / (N K)); the sum over no element is 0
    empty = exact_inputs_from_floats({"X": np.ones((2, 1)), "y": np.zeros((2, 0)), "W": np.zeros((1, 0)), "b": np.zeros(0)})
    with pytest.raises(ValueError, match="mean over N K = 2 x 0 = 0 elements"):
        exact_step(empty, Fraction(1, 10), "mean", method=method)
    assert exact_step(empty, Fraction(1, 10), "sum", method="exact-rational").values["loss"].to_fractions() == Fraction(0)
