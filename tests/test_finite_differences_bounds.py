"""fd_error_model (the loss bounds of the perturbed points column by column, batched) against the per-point loop
it replaced (kept here verbatim as the reference): the same masks, the same bounds up to float64 summation order."""

from __future__ import annotations

import math
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings, target
from hypothesis import strategies as st

from harness import bounds
from harness.bounds import Regime, StepBounds, learning_rate_spread, rigorous_loss_bound, step_bounds, update_bound
from harness.floats import get_format
from harness.implementations import finite_differences as fd
from harness.oracle import exact_inputs_from_floats, exact_step

F64 = Any


def _fd_error_model_reference(
    inputs: Mapping[str, F64], residual: F64, exact: Mapping[str, F64], *, lr: float, reduction: str, fmt: Any,
    tf32: bool = False, lr_held: float | None = None, flush_to_zero: bool = False,
) -> StepBounds:
    """fd_error_model as it was before the batched evaluation (one rigorous_loss_bound per perturbed point)."""
    f64 = get_format("float64")
    u, eta, g3, g2 = f64.unit_roundoff, f64.underflow_quantum, f64.gamma(3), f64.gamma(2)
    X, Y, W, b = (np.asarray(inputs[k], dtype=np.float64) for k in ("X", "y", "W", "b"))
    R = np.abs(np.asarray(residual, dtype=np.float64))
    zeros: dict[str, F64] = {"loss": np.zeros(()), "grad_W": np.zeros_like(W), "grad_b": np.zeros_like(b), "W": W, "b": b}
    base = step_bounds(inputs, residual, exact, lr=lr, reduction=reduction, fmt=f64, lr_held=lr_held)
    grad_bound = {"W": np.zeros_like(W), "b": np.zeros_like(b)}
    spills = {"W": np.zeros(W.shape, dtype=bool), "b": np.zeros(b.shape, dtype=bool)}
    scale = 1.0 if reduction == "sum" else 1.0 / Y.size
    for name, idx, a, wp, wm in fd.perturbations(X, Y, W, b, reduction):
        w = float(W[idx] if name == "W" else b[idx])
        col = np.abs(X[:, idx[0]]) if name == "W" else np.ones(X.shape[0])
        k = idx[1] if name == "W" else idx[0]
        e_pm = []
        for wq in (wp, wm):
            Wq, bq = W.copy(), b.copy()
            (Wq if name == "W" else bq)[idx] = wq
            Rq = R.copy()
            with np.errstate(over="ignore", invalid="ignore"):
                Rq[:, k] += abs(wq - w) * col
            q_inputs = {"X": X, "y": Y, "W": Wq, "b": bq}
            e_q = rigorous_loss_bound(q_inputs, Rq, reduction=reduction, fmt=f64)
            if not math.isfinite(e_q):
                e_q = float(step_bounds(q_inputs, Rq, zeros, lr=0.0, reduction=reduction, fmt=f64).rigorous["loss"])
            with np.errstate(over="ignore"):
                top = float(np.sum(np.square(Rq, dtype=np.longdouble))) * scale * (1 + 2.0**-40) + e_q
            if not top <= f64.max_finite:
                spills[name][idx] = True
            e_pm.append(e_q)
        den = Fraction(wp) - Fraction(wm)
        s = abs(Fraction(wp) + Fraction(wm) - 2 * Fraction(w))
        g = abs(float(exact["grad_W"][idx] if name == "W" else exact["grad_b"][idx]))
        core = a * float(s) * (1 + u) + (e_pm[0] + e_pm[1]) / float(den) * (1 + u)
        grad_bound[name][idx] = (1 + g3) * core + g3 * g + 3 * eta
    safety = 1.0 + 2.0**-30
    rig_gW, rig_gb = grad_bound["W"] * safety, grad_bound["b"] * safety
    dlr = learning_rate_spread(lr, lr_held, Regime(f64, False))
    gW_abs, gb_abs = np.abs(exact["grad_W"]), np.abs(exact["grad_b"])
    rig_W = update_bound(np.abs(exact["W"]), gW_abs, rig_gW, lr, dlr, g2, eta) * safety
    rig_b = update_bound(np.abs(exact["b"]), gb_abs, rig_gb, lr, dlr, g2, eta) * safety
    rigorous = {"loss": base.rigorous["loss"], "grad_W": rig_gW, "grad_b": rig_gb, "W": rig_W, "b": rig_b}
    expected = {**rigorous, "loss": base.expected["loss"]}
    inf_ok, nan_ok = dict(base.inf_allowed), dict(base.nan_allowed)
    for q, p in (("grad_W", "W"), ("grad_b", "b")):
        for d in (inf_ok, nan_ok):
            d[q] = np.asarray(d[q], dtype=bool) | spills[p]
            d[p] = np.asarray(d[p], dtype=bool) | spills[p]
    return StepBounds(rigorous=rigorous, expected=expected, inf_allowed=inf_ok, nan_allowed=nan_ok)


def _exact(X, y, W, b, lr, reduction):
    """The exact quantities (float64) and residual of one step, from the oracle."""
    ex = exact_step(exact_inputs_from_floats({"X": X, "y": y, "W": W, "b": b}), Fraction(lr), reduction)
    return ({q: np.asarray(ex.values[q].to_hi_lo()[0], dtype=np.float64) for q in ("loss", "grad_W", "grad_b", "W", "b")},
            np.asarray(ex.residual.to_float64(), dtype=np.float64))


_KINDS = ("normal", "mixed", "huge", "tiny", "subnormal", "zero")


@st.composite
def _arrays(draw, shape, kind):
    size = int(np.prod(shape))
    if kind == "zero":
        return np.zeros(shape)
    mant = draw(st.lists(st.floats(-2.0, 2.0, allow_nan=False), min_size=size, max_size=size))
    if kind == "normal":
        exps = [0] * size
    elif kind == "mixed":
        exps = draw(st.lists(st.integers(-60, 60), min_size=size, max_size=size))
    elif kind == "huge":
        exps = draw(st.lists(st.integers(495, 512), min_size=size, max_size=size))  # 1e149 .. 1e154
    elif kind == "tiny":
        exps = draw(st.lists(st.integers(-1000, -900), min_size=size, max_size=size))
    else:  # subnormal
        exps = draw(st.lists(st.integers(-1074, -1023), min_size=size, max_size=size))
    return np.ldexp(np.array(mant), np.array(exps)).reshape(shape)


@st.composite
def _fd_steps(draw):
    n, d, k = draw(st.integers(1, 40)), draw(st.integers(1, 5)), draw(st.integers(1, 4))
    kinds = [draw(st.sampled_from(_KINDS)) for _ in range(4)]
    X = draw(_arrays((n, d), kinds[0]))
    y = draw(_arrays((n, k), kinds[1]))
    W = draw(_arrays((d, k), kinds[2]))
    b = draw(_arrays((k,), kinds[3]))
    lr = draw(st.sampled_from([0.0, 0.1, 1.0, 1e-300]))
    return X, y, W, b, lr, draw(st.sampled_from(["sum", "mean"]))


def _compare(new: StepBounds, ref: StepBounds) -> float:
    """Assert the masks equal and the bounds equal up to rounding (never tighter); the largest relative difference."""
    worst = 0.0
    for field in ("inf_allowed", "nan_allowed"):
        a, r = getattr(new, field), getattr(ref, field)
        assert a.keys() == r.keys()
        for q in r:
            np.testing.assert_array_equal(np.asarray(a[q]), np.asarray(r[q]), err_msg=f"{field}[{q}]")
    for field in ("rigorous", "expected"):
        a, r = getattr(new, field), getattr(ref, field)
        assert a.keys() == r.keys()
        for q in r:
            av, rv = np.asarray(a[q], dtype=np.float64), np.asarray(r[q], dtype=np.float64)
            assert av.shape == rv.shape
            same = (av == rv) | (np.isnan(av) & np.isnan(rv))
            both = np.isfinite(av) & np.isfinite(rv) & ~same
            assert np.all(same | both), f"{field}[{q}]: {av} vs {rv}"
            rel = np.abs(av[both] - rv[both]) / np.maximum(np.abs(rv[both]), np.finfo(np.float64).tiny)
            if rel.size:
                worst = max(worst, float(rel.max()))
            assert np.all(rel <= 1e-12), f"{field}[{q}]: {av} vs {rv}"
            assert np.all(av[both] >= rv[both] * (1 - 1e-12)), f"{field}[{q}] tighter: {av} vs {rv}"
    return worst


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(_fd_steps())
# two columns' sums overflow float64 together (each alone finite): the other columns' sum is inf, not an error
@example((np.zeros((19, 1)), np.where(np.arange(76).reshape(19, 4) % 37 == 7, 1.00558559e154, 0.0), np.zeros((1, 4)),
          np.zeros(4), 0.0, "sum"))
def test_fd_error_model_matches_the_per_point_loop(args):
    X, y, W, b, lr, reduction = args
    exact, residual = _exact(X, y, W, b, lr, reduction)
    inputs = {"X": X, "y": y, "W": W, "b": b}
    kw: dict[str, Any] = {"lr": lr, "reduction": reduction, "fmt": get_format("float64")}
    new = fd.fd_error_model(inputs, residual, exact, **kw)
    ref = _fd_error_model_reference(inputs, residual, exact, **kw)
    target(_compare(new, ref), label="relative difference")


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_fd_error_model_spills_and_overflows_like_the_loop(reduction):
    """Losses past float64's range (the spill mask and the extended-precision fallback), a residual past it."""
    rng = np.random.default_rng(1)
    for scale_ in (1e150, 1e152, 1e154, 1e200):
        X, y = rng.standard_normal((7, 3)) * scale_, rng.standard_normal((7, 2))
        W, b = rng.standard_normal((3, 2)), rng.standard_normal(2) * scale_
        exact, residual = _exact(X, y, W, b, 0.5, reduction)
        inputs = {"X": X, "y": y, "W": W, "b": b}
        kw: dict[str, Any] = {"lr": 0.5, "reduction": reduction, "fmt": get_format("float64")}
        ref = _fd_error_model_reference(inputs, residual, exact, **kw)
        _compare(fd.fd_error_model(inputs, residual, exact, **kw), ref)
    # an exact residual past float64's range (inf in float64): every point through the fallback
    X, y = rng.standard_normal((6, 3)) * 1e300, rng.standard_normal((6, 2))
    W, b = rng.standard_normal((3, 2)) * 1e10, rng.standard_normal(2)
    exact, residual = _exact(X, y, W, b, 0.5, reduction)
    assert not np.isfinite(residual).all()
    inputs = {"X": X, "y": y, "W": W, "b": b}
    kw = {"lr": 0.5, "reduction": reduction, "fmt": get_format("float64")}
    with np.errstate(all="ignore"):
        ref = _fd_error_model_reference(inputs, residual, exact, **kw)
        _compare(fd.fd_error_model(inputs, residual, exact, **kw), ref)


def test_the_safety_factor_is_rigorous_loss_bounds():
    assert fd._SAFETY == bounds._SAFETY


def test_fd_error_model_batches_within_the_memory_cap(monkeypatch):
    """Batches smaller than one column's points give the same bounds."""
    rng = np.random.default_rng(2)
    X, y, W, b = rng.standard_normal((30, 4)), rng.standard_normal((30, 3)), rng.standard_normal((4, 3)), rng.standard_normal(3)
    exact, residual = _exact(X, y, W, b, 0.1, "mean")
    inputs = {"X": X, "y": y, "W": W, "b": b}
    kw: dict[str, Any] = {"lr": 0.1, "reduction": "mean", "fmt": get_format("float64")}
    whole = fd.fd_error_model(inputs, residual, exact, **kw)
    monkeypatch.setattr(fd, "_BATCH_ELEMENTS", 45)
    _compare(fd.fd_error_model(inputs, residual, exact, **kw), whole)
    _compare(whole, _fd_error_model_reference(inputs, residual, exact, **kw))
