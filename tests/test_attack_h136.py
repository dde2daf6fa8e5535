"""helper-136's hunt for realistic bugs that pass: the plain SGD update's rounding term.

The defect: :func:`harness.bounds.update_bound` charged the update's last rounding as ``u2 |W'|``, the standard model
``|fl(z) - z| <= u |z|``. Rounding to nearest errs by at most half the spacing of ``z``'s binade,
``u 2**floor(log2 |z|)``, which is up to half of ``u |z|`` (``z`` near the top of its binade). Where that rounding
dominates the bound (float32 and float64 data of ordinary size), a W about one ULP off passed as a rounding: a
float32 step that kept ``torch.optim.SGD(weight_decay=1e-5)`` (an L2 penalty the plain-SGD case does not have) moved
``W = -1.942`` by ``lr wd W = 1.9e-7`` (1.6 ULPs) and agreed at 0.994 of the bound, where no evaluation within the
model's own gradient bound can err by more than ``1.4e-7`` (half an ULP, 5.96e-8, plus ``lr`` times the gradient's
bound, 7.5e-8). The rule is now ``u 2**floor(log2 z_max) + u_w z_max`` for the largest ``z`` the model allows,
``z_max = |W'| + P`` (the product's error ``P``), formed in a wider type first where the half types are
(:func:`harness.bounds.update_rounding`'s double rounding); never above the old ``u2 (|W'| + P)``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import harness
from harness.bounds import update_bound, update_rounding
from harness.cases import case_from_arrays
from harness.floats import FORMATS, round_to_format
from harness.implementations import StepResult
from harness.implementations.registry import Implementation


def _hex(rows: Any) -> np.ndarray:
    return np.array([[float.fromhex(v) for v in row] for row in rows] if isinstance(rows[0], list)
                    else [float.fromhex(v) for v in rows])


# gen-steps-normal-n2-d2-k2-sum-s3 of cases/generated.toml, rounded to float32 (its first step)
X = _hex([["-0x1.5d83ccp+1", "-0x1.4632fap-1"], ["-0x1.c1a454p+0", "0x1.10ee84p+0"]])
Y = _hex([["-0x1.c6a942p-3", "0x1.55ec28p+0"], ["0x1.b97168p-3", "-0x1.8ca7c2p-1"]])
W0 = _hex([["-0x1.f5f134p-1", "0x1.75aa8ap-3"], ["-0x1.0361e6p+1", "0x1.b40a16p-4"]])
B0 = _hex(["-0x1.f68296p+0", "-0x1.894552p-3"])


def sgd_step(weight_decay: float) -> Implementation:
    """``torch.optim.SGD([W, b], lr, weight_decay=...)`` with ``zero_grad()`` each step: plain SGD at 0."""

    def step(X: Any, y: Any, W: Any, b: Any, *, lr: float, reduction: str, steps: int) -> Any:
        import torch

        W, b = W.detach().clone().requires_grad_(True), b.detach().clone().requires_grad_(True)
        opt = torch.optim.SGD([W, b], lr=lr, weight_decay=weight_decay)
        out = []
        for _ in range(steps):
            opt.zero_grad()
            loss = ((X @ W + b - y) ** 2).sum() if reduction == "sum" else ((X @ W + b - y) ** 2).mean()
            loss.backward()
            gW, gb = W.grad.clone(), b.grad.clone()
            opt.step()
            out.append(StepResult(loss.detach().clone(), gW, gb, W.detach().clone(), b.detach().clone()))
        return out

    return Implementation(name=f"sgd-wd-{weight_decay:g}", framework="torch", fn=step)


def graded(impl: Implementation) -> dict[str, Any]:
    case = case_from_arrays("h136-tiny-wd", X, Y, W0, B0, lr=0.01, dtypes=["float32"], reduction="sum")
    return {r.quantity: r for r in harness.verify([case], [impl], dtypes=["float32"])}


def test_a_weight_decay_of_1e_5_left_in_a_float32_step_is_caught():
    pytest.importorskip("torch")
    got = graded(sgd_step(1e-5))
    assert got["W"].verdict == "disagree", got["W"].bound_ratio  # was agree at 0.994
    assert got["b"].verdict == "disagree", got["b"].bound_ratio
    for q in ("loss", "grad_W", "grad_b"):  # the penalty is not in the gradient torch.optim reports
        assert got[q].verdict == "agree"
    for r in graded(sgd_step(0.0)).values():  # the same step without it
        assert r.verdict == "agree", (r.quantity, r.bound_ratio)


def test_update_bound_is_never_above_the_standard_model_and_covers_every_rounding():
    """The new rule against the old one and against exhaustive roundings of ``z`` near binade edges."""
    rng = np.random.default_rng(136)
    for name in ("float64", "float32", "float16", "bfloat16"):
        fmt = FORMATS[name]
        u2 = update_rounding(fmt)
        new_abs = np.abs(rng.standard_normal(4000)) * np.exp2(rng.integers(-20, 20, 4000))
        new_abs[:8] = [0.0, 1.0, 2.0, 2.0 - 2.0**-30, 0.5, np.inf, 3.0 * 2.0**-130, 1e-320]
        g, E_g = rng.standard_normal(4000), np.abs(rng.standard_normal(4000)) * 1e-6
        old = update_bound(new_abs, np.abs(g), E_g, 0.01, 1e-10, u2, fmt.underflow_quantum)
        new = update_bound(new_abs, np.abs(g), E_g, 0.01, 1e-10, u2, fmt.underflow_quantum, fmt=fmt)
        finite = np.isfinite(old)
        assert (new[finite] <= old[finite] * (1 + 2.0**-50)).all() and (~np.isfinite(new[~finite])).all(), name
        if name != "float64":  # (there E_g = 1e-6 dominates every element)
            assert np.median(new[finite] / old[finite]) < 0.95, name


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["float32", "float16", "bfloat16"]), st.integers(-8, 5), st.floats(0.5, 1.0),
       st.floats(-1.0, 1.0), st.floats(0.0, 1.0), st.sampled_from([0.5, 0.1, 0.01, 1e-3, 1.0 / 3]))
def test_every_rounding_of_a_correct_update_stays_within_the_bound(dtype, e, m, gs, es, lr):
    """``W' = W - lr g`` formed from any gradient within its bound ``E_g``, the product rounded in the dtype or in
    float32 first, the difference likewise: never above :func:`update_bound` with the binade rule (Fractions)."""
    from fractions import Fraction

    from harness.floats import round_fraction

    fmt = FORMATS[dtype]
    f32 = FORMATS["float32"]
    W = float(round_to_format(np.array([m * 2.0**e]), fmt)[0])
    lr_f = float(round_to_format(np.array([lr]), fmt)[0])
    g = float(round_to_format(np.array([gs * 2.0**e / lr]), fmt)[0])
    E_g = abs(g) * es * 8 * fmt.unit_roundoff
    exact = Fraction(W) - Fraction(lr_f) * Fraction(g)
    bound = update_bound(np.array([abs(float(exact))]), np.array([abs(g)]), np.array([E_g]), lr_f, 0.0,
                         update_rounding(fmt), fmt.underflow_quantum, fmt=fmt)[0]
    for gh in (g - E_g, g, g + E_g):
        gh = Fraction(gh)
        for wide in (False, True):
            p = Fraction(lr_f) * gh
            p = round_fraction(round_fraction(p, f32), fmt) if wide else round_fraction(p, fmt)
            z = Fraction(W) - p
            got = round_fraction(round_fraction(z, f32), fmt) if wide else round_fraction(z, fmt)
            assert abs(got - exact) <= Fraction(bound), (dtype, W, g, gh, wide, float(abs(got - exact)), bound)
            if not wide:  # one rounding of the whole update (add_ with alpha in the dtype's opmath)
                one = round_fraction(Fraction(W) - Fraction(lr_f) * gh, fmt)
                assert abs(one - exact) <= Fraction(bound)
    assert math.isfinite(bound)


def test_update_bound_with_the_binade_rule_by_hand():
    """float16 (u = 2**-11, u_w = 2**-24): |W'| = 3, |g| = 4, E_g = 1/2, lr = 1/4, dlr = 1/8, eta = 2**-30:
    ``P`` as before, then ``u 2**floor(log2((3 + P)(1 + u_w))) + u_w (3 + P) + P + eta``, the binade [2, 4)."""
    from fractions import Fraction

    fmt = FORMATS["float16"]
    u2, eta = update_rounding(fmt), 2.0**-30
    got = float(update_bound(np.array(3.0), np.array(4.0), np.array(0.5), 0.25, 0.125, u2, eta, fmt=fmt))
    P = (1 + Fraction(u2)) * (Fraction(3, 8) * Fraction(1, 2) + Fraction(1, 8) * 4) + Fraction(u2) / 4 * 4 + Fraction(eta)
    assert 2 <= (3 + P) * (1 + Fraction(2.0**-24)) < 4
    want = Fraction(2.0**-11) * 2 + Fraction(2.0**-24) * (3 + P) + P + Fraction(eta)
    assert abs(Fraction(got) - want) <= want * Fraction(2.0**-50)
    old = float(update_bound(np.array(3.0), np.array(4.0), np.array(0.5), 0.25, 0.125, u2, eta))
    assert got < old
