"""helper-178: the float32 bias corrections' allowance is one-sided where float32's rounding of beta has a known sign.

**The defect** (helper-177, ``tests/test_attack_h177.py``): the bound of Adam's update allowed what float32 bias
corrections (optax in JAX float32, torch.optim's differentiable and capturable paths, TF1's running product) may do to
``c2 = sqrt(1 - beta2^t)`` and ``s = lr / (1 - beta1^t)`` on *both* sides of the exact update, although it comes from a
signed quantity: ``fl32(beta) - beta`` (0.9, 0.9999, 0.999999 and 0.9999999 round down in float32, 0.99 and 0.999 up). With
``fl32(beta2) < beta2`` every float32 power is below ``beta2^t`` (beyond the power's own ``C_POW u``), ``1 - beta2^t``
above it, ``c2`` above, the denominator below and the update beyond the exact one: a step whose corrections lag a step
(``1 - beta2^(t - 1)``, smaller) errs the other way, where only the float64 model's allowance is needed.
:func:`harness.optim.bounds.bias_correction_sides` and :func:`harness.optim.bounds.float32_bias_corrections` now give
each correction's error above and below its exact value, and the chain carries the two sides to the update's bounds
above and below the exact parameter (:func:`harness.optim.bounds.sided_bound`).

**What it catches**: float32 Adam, betas (0.99, 0.9999), ``W = 0`` (the update alone), the second correction of step
``t - 1``: error / bound at t = 10,000, 20,000, 30,000 went from 0.58, 0.29, 0.18 (agree) to 19.5, 5.6, 1.9
(disagree). **What it does not**: helper-177's pinned case at t = 40,258 (14.4 ULPs) went from 0.12 to 0.68: the float64
model's own allowance on that side, about 21 ULPs (22 ``u`` of the update: the moments' ``K(6)``, the square root, the
quotients, ``s`` with ``lr`` held), still covers it; it stays pinned (xfail) in ``tests/test_attack_h177.py``. A
correction one step *ahead* errs on float32's own side and still agrees (as helper-177 said it would).

**No false alarm**: correct steps in every accepted order -- :func:`tests.test_optim_bounds.simulate`'s (float64
corrections, torch.optim's for-loop with lerp, fused, scalars in the dtype, float32 state, addcdiv), float32
corrections by ``pow`` and by running product, and torch.optim's own Adam/AdamW (for-loop, foreach, fused,
differentiable: float32 ``step`` tensors, corrections in float32, folded into the denominator) -- stay inside the
sided bound at t from 1 to 100,000 with betas near 1, in float32, float16, bfloat16 and float64 (the float32
corrections not for float64, which is ``disagree`` by design). ``target()`` pushes the error / bound ratio up.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings, target
from hypothesis import strategies as st

from harness.floats import FLOAT32, get_format, round_to_format
from harness.optim.bounds import U32, sided_bound, update_bounds
from harness.optim.grade import grade_update
from harness.optim.oracle import update_truth
from tests.conftest import optimizer_of
from tests.test_optim_bounds import ORDERS, simulate

BETAS = [(0.9, 0.999), (0.99, 0.9999), (0.999999, 0.9999999)]
F32_ORDERS = ("f32-pow", "f32-product", "f32-optax")
TORCH_ORDERS = ("torch-loop", "torch-foreach", "torch-fused", "torch-differentiable")
TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}


def _f32_product(beta: float, t: int) -> np.float32:
    """``fl32(beta)^t`` as TF1's ``beta_power *= beta``: ``t`` float32 products, left to right (NumPy's
    ``multiply.accumulate`` is sequential; each product of two float32 values rounded once to float32)."""
    return np.multiply.accumulate(np.full(t, np.float32(beta), dtype=np.float32))[-1]


def f32_corrections_step(opt, w: np.ndarray, g: np.ndarray, state: dict, t: int, lr: float, dtype: str,
                         power: str) -> tuple[np.ndarray, dict]:
    """Adam/AdamW with its bias corrections in float32 (``beta`` as ``np.float32``, ``1 - beta^t`` by ``pow`` or a
    running product, its square root and ``lr / (1 - beta1^t)`` in float32, then held in the dtype) and every other
    operation rounded to the dtype (bfloat16 included, through :func:`harness.floats.round_to_format`)."""
    fmt = get_format(dtype)

    def r(x):
        return round_to_format(np.asarray(x, dtype=np.float64), fmt)

    def held(x) -> float:
        return float(r(np.array([float(x)]))[0])

    f32 = np.float32
    kw = opt.torch_kwargs()
    b1, b2 = kw["betas"]
    if power == "pow":
        p1, p2 = f32(b1) ** f32(t), f32(b2) ** f32(t)
    else:
        p1, p2 = _f32_product(b1, t), _f32_product(b2, t)
    bc1, bc2 = f32(1) - p1, f32(1) - p2
    c2, s = held(np.sqrt(bc2)), held(f32(lr) / bc1)
    d = -g if kw["maximize"] else g
    if kw["weight_decay"]:
        if opt.name == "adamw":
            w = r(w * (1 - lr * kw["weight_decay"]))
        else:
            d = r(d + kw["weight_decay"] * w)
    m_, v_ = state.get("exp_avg", np.zeros_like(w)), state.get("exp_avg_sq", np.zeros_like(w))
    m = r(m_ + (1 - b1) * r(d - m_))
    v = r(r(b2 * v_) + (1 - b2) * r(d * d))
    new = {"exp_avg": m, "exp_avg_sq": v}
    big = v
    if kw["amsgrad"]:
        big = np.maximum(state.get("max_exp_avg_sq", np.zeros_like(w)), v)
        new["max_exp_avg_sq"] = big
    den = r(r(r(np.sqrt(big)) / c2) + kw["eps"])
    return r(w - r(s * r(m / den))), new


def optax_step(opt, w: np.ndarray, g: np.ndarray, state: dict, t: int, lr: float, dtype: str) -> tuple[np.ndarray, dict]:
    """optax's ``adam`` (``scale_by_adam`` then ``scale(-lr)``) in JAX with float32 bias corrections: the moments in the
    dtype, ``m_hat = m / (1 - beta1^t)`` and ``v_hat = v / (1 - beta2^t)`` (float32 corrections: a float32 result),
    ``m_hat / (sqrt(v_hat) + eps)`` and ``-lr`` times it in float32, the update cast to the dtype and added to the
    parameter there. Adam without weight decay (optax's ``adamw`` decays otherwise)."""
    fmt = get_format(dtype)

    def r(x):
        return round_to_format(np.asarray(x, dtype=np.float64), fmt)

    def r32(x):
        return round_to_format(np.asarray(x, dtype=np.float64), FLOAT32)

    kw = opt.torch_kwargs()
    b1, b2 = kw["betas"]
    f32 = np.float32
    bc1, bc2 = float(f32(1) - f32(b1) ** f32(t)), float(f32(1) - f32(b2) ** f32(t))
    d = -g if kw["maximize"] else g
    m_, v_ = state.get("exp_avg", np.zeros_like(w)), state.get("exp_avg_sq", np.zeros_like(w))
    m = r(r(b1 * m_) + r((1 - b1) * d))
    v = r(r(b2 * v_) + r((1 - b2) * r(d * d)))
    new = {"exp_avg": m, "exp_avg_sq": v}
    big = v
    if kw["amsgrad"]:
        big = np.maximum(state.get("max_exp_avg_sq", np.zeros_like(w)), v)
        new["max_exp_avg_sq"] = big
    mh, vh = r32(m / bc1), r32(big / bc2)
    upd = r32(mh / r32(r32(np.sqrt(vh)) + float(f32(kw["eps"]))))
    return r(w + r(r32(-float(f32(lr)) * upd))), new


def torch_step(opt, w: np.ndarray, g: np.ndarray, state: dict, t: int, lr: float, dtype: str,
               order: str) -> tuple[np.ndarray, dict]:
    """torch.optim's own Adam/AdamW, one step ``t`` from the given state (its ``step`` a float32 tensor at ``t - 1``,
    as torch keeps it): ``order`` picks for-loop, foreach, fused or differentiable (float32 bias corrections)."""
    tdt = TORCH_DTYPES[dtype]
    W = torch.tensor(w, dtype=tdt)
    W.grad = torch.tensor(g, dtype=tdt)
    form = {"torch-loop": {"foreach": False}, "torch-foreach": {"foreach": True}, "torch-fused": {"fused": True},
            "torch-differentiable": {"differentiable": True}}[order]
    cls = torch.optim.AdamW if opt.name == "adamw" else torch.optim.Adam
    o = cls([W], lr=lr, **opt.torch_kwargs(), **form)
    if t > 1:
        o.state[W] = {"step": torch.tensor(float(t - 1), dtype=torch.float32),
                      **{k: torch.tensor(v, dtype=tdt) for k, v in state.items()}}
    o.step()
    new = {k: v.detach().to(torch.float64).numpy() for k, v in o.state[W].items() if k != "step"}
    return W.detach().to(torch.float64).numpy(), new


def correct_ratios(name: str, dtype: str, orders: Iterable[str], betas: tuple[float, float], t: int, lr: float,
                   eps: float, wd: float, amsgrad: bool, maximize: bool, w: list, g: list,
                   s: list) -> dict[str, float | None]:
    """Per order, the largest ``|step - exact| / bound`` of a correct step over the parameter (its sided bound,
    :func:`harness.optim.bounds.sided_bound`) and the state; None where torch offers no such form (fused float16 on
    CPU, ...). The exact values and the bounds are computed once for all orders."""
    opt = optimizer_of({"name": name, "betas": list(betas), "eps": eps, "weight_decay": wd, "amsgrad": amsgrad,
                        "maximize": maximize})
    fmt = get_format(dtype)
    wa, ga, sa = (round_to_format(np.array(x, dtype=np.float64), fmt) for x in (w, g, s))
    state: dict = {}
    if t > 1:
        state = {"exp_avg": sa, "exp_avg_sq": round_to_format(sa * sa * 1.5 + np.abs(ga) * 1e-3, fmt)}
        if amsgrad:
            state["max_exp_avg_sq"] = round_to_format(state["exp_avg_sq"] * 1.25, fmt)
    out: dict[str, float | None] = {}
    with np.errstate(all="ignore"):
        truth = update_truth(opt, {"W": wa}, {"W": ga}, {"W": state}, t, Fraction(lr), fmt)
        rig, _ = update_bounds(opt, {"W": wa}, {"W": ga}, {"W": state}, t, lr, fmt)
        for order in orders:
            if order == "f32-optax":
                if name != "adam" or wd != 0:
                    out[order] = None
                    continue
                got, new = optax_step(opt, wa, ga, state, t, lr, dtype)
            elif order in F32_ORDERS:
                got, new = f32_corrections_step(opt, wa, ga, state, t, lr, dtype, order[4:])
            elif order in TORCH_ORDERS:
                try:
                    got, new = torch_step(opt, wa, ga, state, t, lr, dtype, order)
                except (RuntimeError, AssertionError, TypeError):  # (a form torch lacks for this dtype on CPU)
                    out[order] = None
                    continue
            else:
                got, new = simulate(opt, wa, ga, state, t, lr, dtype, order)
            worst = 0.0
            for q, computed in (("W", got), *((f"{k}_W", v) for k, v in new.items())):
                hi, lo = truth.values[q].to_hi_lo()
                c = np.asarray(computed, dtype=np.float64)
                bound = sided_bound(rig, q, c, hi, lo)
                err = np.abs((c - hi) - lo)
                # (inf or NaN only where the bound is vacuous: eps held as 0 in float16 divides 0 by 0)
                assert not np.any(~np.isfinite(c) & np.isfinite(bound)), (order, q, c, bound)
                ratio = np.where((err == 0) | ~np.isfinite(c), 0.0, err / np.where(bound > 0, bound, 0.0))
                worst = max(worst, float(np.max(ratio)))
            out[order] = worst
    return out


_val = st.builds(lambda m, e: m * 2.0**e, st.floats(-2, 2, allow_nan=False, width=32), st.integers(-12, 3))
_t = st.one_of(st.integers(1, 20), st.integers(20, 100_000), st.sampled_from([40_257, 40_258, 40_259, 100_000]))
correct_steps = dict(
    name=st.sampled_from(["adam", "adamw"]), dtype=st.sampled_from(["float32", "float16", "bfloat16", "float64"]),
    order=st.sampled_from(ORDERS + F32_ORDERS + TORCH_ORDERS), betas=st.sampled_from(BETAS), t=_t,
    lr=st.sampled_from([2.0**-27, 1e-3, 0.01, 0.3]), eps=st.sampled_from([1e-8, 1e-19, 1e-3]),
    wd=st.sampled_from([0.0, 1e-4, 0.01]), amsgrad=st.booleans(), maximize=st.booleans(),
    w=st.lists(_val | st.just(0.0), min_size=3, max_size=3), g=st.lists(_val, min_size=3, max_size=3),
    s=st.lists(_val, min_size=3, max_size=3))


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(**correct_steps)
def test_search_correct_adam_in_every_order_at_large_t_stays_inside_the_sided_bound(
        name, dtype, order, betas, t, lr, eps, wd, amsgrad, maximize, w, g, s) -> None:
    """Bounded here (helper-178's long run: see the report); ``target()`` on the largest error / bound."""
    # (float32 corrections of float64 parameters -- torch's differentiable path holds its step in float32 -- are disagree,
    # by design: harness.optim.bounds keeps the float64 model for float64)
    assume(not (dtype == "float64" and order in (*F32_ORDERS, "torch-differentiable")))
    ratio = correct_ratios(name, dtype, [order], betas, t, lr, eps, wd, amsgrad, maximize, w, g, s)[order]
    assume(ratio is not None)
    assert ratio is not None
    family = "float32 corrections" if order in (*F32_ORDERS, "torch-differentiable") else "float64 corrections"
    target(ratio, label=f"error / sided bound, {family}")
    assert ratio <= 1, ratio


@pytest.mark.parametrize("betas", BETAS)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_correct_adam_in_every_order_agrees_from_step_1_to_100000(betas, dtype) -> None:
    """At the regime of helper-177's pin and around it (t = 1 to 100,000; its weight of 0, the update alone, and a
    weight the update barely moves), every accepted order stays inside the sided bound."""
    w, g, s = [0.0, -0.0013020833721384406, 0.5], [-4.547473508864641e-13, 1.585794052516576e-06, 0.25], [2.4, 2.4, -0.1]
    orders = ("loop", "fused", "dtype-scalars", *F32_ORDERS, *TORCH_ORDERS)
    for t in (1, 2, 1000, 40_258, 100_000):
        for lr, wd in ((2.0**-27, 1e-4), (1e-3, 0.0)):  # (optax's Adam has no weight decay: wd = 0 lets it run)
            got = correct_ratios("adam", dtype, orders, betas, t, lr, 1e-19, wd, False, False, w, g, s)
            assert got["loop"] is not None and got["f32-pow"] is not None and got["torch-loop"] is not None
            assert all(r is None or r <= 1 for r in got.values()), (t, lr, got)


# ---- the mutants: bias corrections a step behind or ahead ----------------------------------------------------------


def _lagging_w(t: int, shift: int, betas=(0.99, 0.9999)) -> tuple[float, str, float | None]:
    """float32 Adam (L2 decay 1e-4, eps 1e-19, lr 2**-27) at ``W = 0`` whose bias corrections use step ``t + shift``,
    in float64 and rounded once, graded by :func:`harness.optim.grade.grade_update`: ``(ULPs off, verdict, error /
    bound)`` of ``W``."""
    from tests.test_attack_h177 import _adam_step_t

    opt = optimizer_of({"name": "adam", "betas": list(betas), "eps": 1e-19, "weight_decay": 1e-4})
    fmt = get_format("float32")
    theta = np.array([[0.0]])
    g = round_to_format(np.array([[-4.547473508864641e-13]]), fmt)
    state = {"exp_avg": round_to_format(np.full((1, 1), 2.4), fmt), "exp_avg_sq": round_to_format(np.full((1, 1), 6.4), fmt)}
    lr = 2.0**-27
    out = _adam_step_t(opt, theta, g, state, t + shift, lr, fmt)
    right = _adam_step_t(opt, theta[:, 0], g[:, 0], {k: v[:, 0] for k, v in state.items()}, t, lr, fmt)
    out.update(grad_W=g, grad_b=g[:, 0], b=right["W"], exp_avg_b=right["exp_avg_W"], exp_avg_sq_b=right["exp_avg_sq_W"])
    recs = grade_update(opt, dict(case="h178", implementation=f"t{shift:+d}", device="cpu", dtype="float32"), t, out,
                        {"W": theta, "b": theta[:, 0]}, {"W": state, "b": {k: v[:, 0] for k, v in state.items()}},
                        lr, fmt, False, None)
    rec = next(r for r in recs if r.quantity == "W")
    exact = _adam_step_t(opt, theta, g, state, t, lr, get_format("float64"))["W"][0, 0]
    ulps = (float(out["W"][0, 0]) - exact) / float(np.spacing(np.float32(abs(exact))))
    return ulps, rec.verdict, rec.bound_ratio


@pytest.mark.parametrize("t, ulps", [(10_000, 364.2), (20_000, 114.3), (30_000, 40.2)])
def test_float32_adam_with_bias_corrections_a_step_behind_is_caught_on_the_side_float32_never_reaches(t, ulps) -> None:
    """``1 - beta2^(t - 1)`` is below ``1 - beta2^t``: the update falls short and ``W`` lies above the exact value, the
    side float32's ``fl32(0.9999) < 0.9999`` never reaches. Before the sided allowance these agreed at error / bound
    0.58, 0.29 and 0.18 (the symmetric allowance was 620, 400 and 220 ULPs); now only the float64 model's ~21 ULPs."""
    got, verdict, ratio = _lagging_w(t, -1)
    assert got == pytest.approx(ulps, abs=0.1)
    assert verdict == "disagree", (verdict, ratio)


def test_a_step_ahead_still_agrees_as_float32_itself_may_err_that_way() -> None:
    """The same step with ``t + 1``: its error is of the sign float32's own corrections have, inside what they may do
    (no claim that it is caught; the test pins that the allowance kept on float32's side is not lost)."""
    got, verdict, ratio = _lagging_w(20_000, +1)
    assert got == pytest.approx(-114.7, abs=0.1)
    assert verdict == "agree" and ratio is not None and 0.2 < ratio < 0.4, (verdict, ratio)


def test_the_sides_of_float32s_corrections_have_float32s_sign() -> None:
    """0.9999 rounds down in float32 (``fl32(0.9999) = 0.99989998...``): ``1 - beta^t`` may be far above its exact value
    and only ``C_POW u beta^t`` plus the subtraction's rounding below it; 0.99 rounds up: the other way round. Values
    derived by hand: at t = 40,258, ``beta^t = 0.01783``, ``1 - beta^t = 0.98217``, ``t delta_0 = -4.6e-4``."""
    from harness.optim.bounds import bias_correction_sides

    d0 = (float(np.float32(0.9999)) - 0.9999) / 0.9999
    assert d0 < 0 and float(np.float32(0.99)) > 0.99
    bt = 0.9999**40258
    up, dn = bias_correction_sides(0.9999, 40258)
    # below: the power may be C_POW u above beta^t, 1 - beta^t that much below, then the subtraction's rounding u
    assert dn / U32 == pytest.approx(8 * bt / (1 - bt) + 1, rel=1e-6)
    # above: fl32(beta)^t = beta^t (1 + d0)^t below beta^t by |(1 + d0)^t (1 - C_POW u) - 1| beta^t
    assert up / U32 == pytest.approx((1 - math.exp(40258 * math.log1p(d0)) * (1 - 8 * U32)) * bt / (1 - bt) / U32 + 1,
                                     rel=1e-3)
    assert up > 100 * dn
    up1, dn1 = bias_correction_sides(0.99, 10)  # (0.99 rounds up: the power may be above, 1 - beta^t below)
    assert dn1 > up1
