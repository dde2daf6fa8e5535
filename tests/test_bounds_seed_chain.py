"""The linear path counts the seed's underflow by the models path's rule (harness.bounds, :func:`seed_underflow`,
:func:`chain_underflow`; helper-132).

The seed ``dL/dpred = 2 R / (N K)`` of a mean, computed as torch's ``(R**2).mean(0).mean()`` gives it by hand,
``2 ((R / N) / K)``, rounds twice among the subnormals: ``2 (1 + 1/K) eta`` per element where the linear path counted
``2 eta`` (the special case for ``2 fl(c R)``). A correct float32 NumPy step with N = 3, K = 2 and residuals of 393220
least subnormals times a feature of ``2**60`` was ``disagree`` on ``grad_W`` at 1.08 times the rigorous bound (N = 5,
262147 least subnormals: 1.23; ``((R / K) / N) 2`` with N = 2, K = 3: 1.08). Now ``agree``; twice the gradient is still
``disagree``; normal data never evaluate the chain (the bounds unchanged).
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import numpy as np
import pytest

import harness
from harness.bounds import Regime, residual_bound, step_bounds
from harness.cases import case_from_arrays
from harness.floats import FORMATS
from harness.implementations import StepResult
from harness.implementations.registry import Implementation

TINY = {"float16": 2.0**-24, "float32": 2.0**-149, "float64": 2.0**-1074}
LIFT = {"float16": 2.0**4, "float32": 2.0**60, "float64": 2.0**500}
ORDERS = ("2*((R/N)/K)", "(2*(R/N))/K", "R/K/N*2", "(R*2)/(N*K)")


def seed_of(order: str, R: Any, n: int, k: int) -> Any:
    dt = R.dtype.type
    if order == "2*((R/N)/K)":
        return dt(2) * ((R / dt(n)) / dt(k))
    if order == "(2*(R/N))/K":
        return (dt(2) * (R / dt(n))) / dt(k)
    if order == "R/K/N*2":
        return ((R / dt(k)) / dt(n)) * dt(2)
    assert order == "(R*2)/(N*K)"
    return (R * dt(2)) / dt(n * k)


def step_with(order: str, wrong: float = 1.0) -> Implementation:
    """A linear SGD step by hand in NumPy under the mean, its seed evaluated as ``order``."""

    def step(X: Any, y: Any, W: Any, b: Any, *, lr: float, reduction: str, steps: int) -> Any:
        dt = X.dtype.type
        n, k = y.shape
        out = []
        for _ in range(steps):
            R = (X @ W + b) - y
            loss = (R * R).mean(0).mean()
            G = seed_of(order, R, n, k)
            gW, gb = (X.T @ G) * dt(wrong), G.sum(0) * dt(wrong)
            W, b = W - dt(lr) * gW, b - dt(lr) * gb
            out.append(StepResult(loss, gW, gb, W, b))
        return out

    return Implementation(name=f"numpy-seed-{order}", framework="numpy", fn=step)


def subnormal_case(dtype: str, n: int, k: int, j: int) -> Any:
    """``W = b = 0``, ``y = -R``: every residual ``j`` least subnormals (exact), the feature ``LIFT``."""
    return case_from_arrays("seed-chain", np.full((n, 1), LIFT[dtype]), -np.full((n, k), j * TINY[dtype]),
                            np.zeros((1, k)), np.zeros(k), lr=2.0**-4, dtypes=[dtype], reduction="mean")


def gradient_records(case: Any, impl: Implementation, dtype: str) -> list[Any]:
    recs = [r for r in harness.verify([case], [impl], dtypes=[dtype]) if r.quantity in ("grad_W", "grad_b")]
    assert len(recs) == 2, recs
    return recs


@pytest.mark.parametrize(("n", "k", "j", "order"), [(3, 2, 393220, "2*((R/N)/K)"), (5, 2, 262147, "2*((R/N)/K)"),
                                                    (2, 3, 393220, "R/K/N*2"), (7, 2, 300001, "2*((R/N)/K)")])
def test_the_seed_divided_by_n_and_k_then_doubled_agrees(n, k, j, order):
    # was disagree at 1.08, 1.23, 1.08 and 1.16 times the bound
    for r in gradient_records(subnormal_case("float32", n, k, j), step_with(order), "float32"):
        assert r.verdict != "disagree", (r.quantity, r.bound_ratio, r.message)
        assert r.bound_ratio <= 0.9


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("order", ORDERS)
def test_every_seed_order_agrees_and_twice_the_gradient_does_not(dtype, order):
    j = {"float16": 388, "float32": 393220, "float64": 393220}[dtype]
    for n, k in ((3, 2), (2, 3), (5, 2)):
        case = subnormal_case(dtype, n, k, j)
        for r in gradient_records(case, step_with(order), dtype):
            assert r.verdict != "disagree", (n, k, r.quantity, r.bound_ratio)
        for r in gradient_records(case, step_with(order, wrong=2.0), dtype):
            assert r.verdict == "disagree", (n, k, r.quantity, r.verdict, r.bound_ratio)


def test_the_linear_and_models_paths_share_one_rule():
    from harness.bounds import chain_underflow, seed_factors
    from harness.models import bounds as model_bounds
    from harness.models import plan

    assert model_bounds.chain_underflow is chain_underflow and plan.seed_factors is seed_factors
    assert seed_factors("mean", 3, 2) == (2, Fraction(1, 3), Fraction(1, 2))
    assert seed_factors("mean", 1, 1) == seed_factors("sum", 4, 5) == (2, 1)
    with pytest.raises(ValueError):
        seed_factors("max", 1, 1)


def test_the_seed_count_by_hand():
    """2 ((R / 3) / 2) of a subnormal float32 residual: ``2 (1 + 1/2) eta`` grown by three roundings, beyond the
    ``m = 2`` etas per element counted before (grad_W) and ``2`` (grad_b), in units of eta; a residual whose every
    association stays normal: nothing (and the chain not evaluated)."""
    from harness.bounds import chain_underflow, seed_factors, seed_underflow

    reg = Regime(FORMATS["float32"], False)
    eta = reg.eta
    aR = np.full((3, 2), 393220 * TINY["float32"])
    E = np.zeros_like(aR)
    rows, (units_W, units_b) = seed_underflow(aR, E, 1 / 6, reg, (2.0, 2.0))
    assert list(rows) == [0, 1, 2]
    np.testing.assert_allclose(units_W, reg.growth(3), rtol=1e-12)  # (3 - 2) eta, grown as the count is
    assert (units_W >= np.longdouble(reg.growth(3))).all()  # rounded up
    assert np.all(units_b == 0) or np.allclose(units_b, reg.growth(3))
    assert float(chain_underflow(seed_factors("mean", 3, 2), np.float64(aR[0, 0]), reg)) >= 3 * eta
    assert seed_underflow(np.full((3, 2), 1.0), E, 1 / 6, reg, (2.0,)) is None
    assert seed_underflow(np.full((3, 2), 1e-30), np.full((3, 2), 1e-37), 1 / 6, reg, (2.0,)) is None
    # one residual that may be computed subnormal (its bound exceeds it): its row alone is evaluated
    aR2 = np.full((3, 2), 1.0)
    aR2[1, 0] = 0.0
    E2 = np.full((3, 2), 1e-40)
    rows, (units,) = seed_underflow(aR2, E2, 1 / 6, reg, (2.0,))
    assert list(rows) == [1] and units[0, 0] > 0 and units[0, 1] == 0


@pytest.mark.parametrize("low", [0.0, 1e-45, 3e-40, 1e-39, 5e-39])
def test_grouped_counts_equal_the_element_wise_rule(low):
    """The grouped evaluation (few scalar counts) against :func:`chain_underflow` element by element: never below it,
    and equal on a group's smallest residual."""
    from harness.bounds import chain_underflow, seed_factors, seed_underflow

    reg = Regime(FORMATS["float32"], False)
    rng = np.random.default_rng(3)
    aR = np.abs(rng.standard_normal((40, 3))) * 10.0 ** rng.integers(-46, -36, (40, 3)) + low
    E = np.full_like(aR, 1e-41)
    rows, (units,) = seed_underflow(aR, E, 1 / 120, reg, (2.0,))
    lows = np.maximum(aR - E * (1 + 2.0**-30), 0.0) * (1 - 2.0**-40)
    ld = np.longdouble
    want = chain_underflow(seed_factors("mean", 40, 3), ((aR + E) * (1 + 2.0**-30)).astype(ld), reg, [lows.astype(ld)])
    want_units = np.maximum(want - 2 * ld(reg.eta) * ld(reg.growth(3)), 0) / ld(reg.eta)
    got = np.zeros_like(aR)
    got[rows] = units
    assert (got >= want_units).all()
    assert np.isclose(got, want_units, rtol=1e-12, atol=0).mean() > 0.5


def test_a_float64_seed_needs_nothing_beyond_the_floor():
    """float64's ``eta`` is its smallest subnormal ``2**-1074``, twice the true half spacing: the worst association's
    ``2 (1 + 1/2)`` true etas (N = 2, K = 3: ``2 ((R / 3) / 2)``) are within the floor's 2 eta, so the seed adds
    nothing (it added a whole subnormal per element, which let 2.5 times the gradient pass: helper-134); float32's
    count, in true etas, still exceeds its floor."""
    from harness.bounds import seed_underflow

    aR = np.full((2, 3), 5 * TINY["float64"])
    assert seed_underflow(aR, np.zeros_like(aR), 1 / 6, Regime(FORMATS["float64"], False), (2.0, 2.0)) is None
    reg32 = Regime(FORMATS["float32"], False)
    rows, (units,) = seed_underflow(np.full((2, 3), 5 * TINY["float32"]), np.zeros_like(aR), 1 / 6, reg32, (2.0,))
    assert list(rows) == [0, 1] and (units >= np.longdouble(reg32.growth(3))).all()


def test_normal_data_bounds_do_not_evaluate_the_chain(monkeypatch):
    from harness.bounds import seed_underflow

    rng = np.random.default_rng(7)
    X, W, b, y = rng.standard_normal((40, 5)), rng.standard_normal((5, 3)), rng.standard_normal(3), rng.standard_normal((40, 3))
    R = X @ W + b - y
    exact = {"loss": np.float64(np.mean(R * R)), "grad_W": 2 * X.T @ R / R.size, "grad_b": 2 * R.sum(0) / R.size}
    exact |= {"W": W - 0.1 * exact["grad_W"], "b": b - 0.1 * exact["grad_b"]}
    reg = Regime(FORMATS["float32"], False)
    rb = residual_bound(X, W, b, y, reg, 0.0)
    assert seed_underflow(np.abs(R), rb.E, 1 / R.size, reg, (2.0,)) is None
    calls = []
    import harness.bounds as hb

    real = hb.chain_underflow
    monkeypatch.setattr(hb, "chain_underflow", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    step_bounds({"X": X, "y": y, "W": W, "b": b}, R, exact, lr=0.1, reduction="mean", fmt=FORMATS["float32"])
    assert not calls


@pytest.mark.parametrize("ftz", [False, True])
def test_the_uniform_excess_gives_the_per_element_bounds_without_a_pass_over_r(monkeypatch, ftz):
    """Mixed-magnitude data whose residual bounds exceed half the residuals (every association may be subnormal
    there, as with the benchmark's float32 mixed data): the seed's largest excess added uniformly changes no bit of
    grad_W's and grad_b's rigorous bounds, so the per-element count is not evaluated (2 ms of a 15 ms check at 10^6),
    and the bounds are those of the per-element path bit for bit; the underflow parts U take an upper bound of it."""
    import harness.bounds as hb
    from harness.bounds import gradient_bounds

    rng = np.random.default_rng(12)
    n, d, k = 300, 6, 3
    X = rng.standard_normal((n, d)) * 2.0 ** rng.integers(-20, 20, (n, d))
    W, b = rng.standard_normal((d, k)), rng.standard_normal(k)
    R = X @ W + b - (X @ W + b) * (1 + 1e-9 * rng.standard_normal((n, k)))  # tiny residuals of large terms
    reg = Regime(FORMATS["float32"], ftz)
    rb = residual_bound(X, W, b, X @ W + b - R, reg, 0.0)
    assert (rb.E > np.abs(R)).mean() > 0.5
    calls: list[int] = []
    real = hb.seed_underflow
    monkeypatch.setattr(hb, "seed_underflow", lambda *a: calls.append(1) or real(*a))
    fast = gradient_bounds(X, R, rb, 1 / (n * k), reg, 0.0)
    assert not calls
    monkeypatch.setattr(hb, "_seed_excess_uniform", lambda *a: None)
    slow = gradient_bounds(X, R, rb, 1 / (n * k), reg, 0.0)
    assert calls  # (the per-element path ran, and had an excess to add)
    np.testing.assert_array_equal(fast.gW, slow.gW)
    np.testing.assert_array_equal(fast.gb, slow.gb)
    assert (fast.U_gW >= slow.U_gW).all() and (fast.U_gb >= slow.U_gb).all()


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("ftz", [False, True])
@pytest.mark.parametrize("wide", [False, True])
def test_the_seed_floor_from_the_least_term_equals_the_element_wise_test(dtype, ftz, wide):
    """``_seed_floor_units`` given ``Rh = aR + E`` (one pass: the least element decides whether any is tiny) returns
    the bits it returns without it (the element-wise test), on data around the test's threshold, with NaN, infinities,
    zeros and subnormals, in float64 and longdouble; both outcomes (some element tiny, none) occur."""
    from harness.bounds import _SAFETY, _seed_floor_units

    reg = Regime(FORMATS[dtype], ftz)
    rng = np.random.default_rng(hash((dtype, ftz, wide)) % 2**32)
    outcomes = set()
    for n, k in [(7, 3), (40, 2), (1, 1), (5, 4)]:
        c = 1.0 / (n * k)
        floor = 2.0
        edge = floor * reg.eta / (8 * 2 * c * _SAFETY)  # about where 16 c x S meets floor * eta
        for trial in range(12):
            aR = np.abs(rng.standard_normal((n, k))) * edge * 2.0 ** rng.integers(-3, 40, (n, k))
            E = np.abs(rng.standard_normal((n, k))) * edge * 2.0 ** rng.integers(-60, 2, (n, k))
            j = rng.integers(0, n * k)
            if trial % 4 == 1:  # the least term at the threshold, one float either side
                aR.ravel()[j] = np.nextafter(edge, [0.0, np.inf][trial % 8 == 1])
                E.ravel()[j] = 0.0
            elif trial % 4 == 2:  # a NaN, an infinity, a zero, a subnormal
                aR.ravel()[j] = [np.nan, np.inf, 0.0, 5e-324][trial // 4 % 4]
            elif trial % 4 == 3:
                aR.ravel()[j], E.ravel()[j] = np.nan, 0.0
                aR.ravel()[(j + 1) % (n * k)] = edge * 2.0**-10
            if wide:
                aR, E = aR.astype(np.longdouble), E.astype(np.longdouble)
            aX = np.abs(rng.standard_normal((n, 3))) + 0.5
            colX = aX.sum(axis=0)[:, None]
            with np.errstate(all="ignore"):
                want = _seed_floor_units(aX, aR, E, c, reg, floor, colX)
                got = _seed_floor_units(aX, aR, E, c, reg, floor, colX, aR + E)
            assert got.dtype == want.dtype and got.shape == want.shape
            assert np.array_equal(got, want, equal_nan=True)
            assert np.asarray(got).tobytes() == np.asarray(want).tobytes()
            outcomes.add(bool(np.array_equal(want, np.asarray(floor * colX))))
    assert outcomes == {True, False}
