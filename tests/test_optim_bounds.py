"""Correct evaluations of the optimizer rules, in every order we can write, stay inside the rigorous
bound of harness.optim.bounds (Hypothesis), and the bound is not vacuous where it need not be.

Evaluation orders simulated (each operation computed in float64 -- exact or one rounding -- then
rounded to the dtype, so float64 and float32 opmath are both covered):
- ``loop``: torch.optim's for-loop, each tensor op rounded to the dtype (lerp for Adam's m);
- ``fused``: everything in float64, parameter and state rounded once at the end (a fused FMA kernel);
- ``dtype-scalars``: hyper-parameters rounded to the dtype first (NumPy's NEP 50 weak scalars);
- ``f32-state``: half-precision parameters with float32 state (state rounded to float32 only).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.floats import FLOAT32, get_format, round_to_format
from harness.optim.bounds import update_bounds
from harness.optim.config import OptimizerConfig
from harness.optim.oracle import update_truth
from tests.conftest import optimizer_of

ORDERS = ("loop", "fused", "dtype-scalars", "f32-state")
DTYPES = ("float32", "float16", "bfloat16", "float64")


def cfg(table: dict) -> OptimizerConfig:
    return optimizer_of(table)


def simulate(opt: OptimizerConfig, w: np.ndarray, g: np.ndarray, state: dict, t: int, lr: float, dtype: str, order: str):
    fmt = get_format(dtype)

    def r(x):  # one rounding to the dtype (not in the fused order)
        return x if order == "fused" else round_to_format(np.asarray(x, dtype=np.float64), fmt)

    def rs(x):  # the state's rounding
        if order == "f32-state" and fmt.precision < FLOAT32.precision:  # half-precision parameters only
            return round_to_format(np.asarray(x, dtype=np.float64), FLOAT32)
        return round_to_format(np.asarray(x, dtype=np.float64), fmt)

    def h(x: float) -> float:  # a hyper-parameter as held
        return float(round_to_format(np.array([x]), fmt)[0]) if order == "dtype-scalars" else x

    kw = opt.torch_kwargs()
    d = -g if kw["maximize"] else g
    new = {}
    if opt.name == "sgd":
        if kw["weight_decay"]:
            d = r(d + h(kw["weight_decay"]) * w)
        if kw["momentum"]:
            buf = d if t == 1 else r(r(h(kw["momentum"]) * state["momentum_buffer"]) + h(1 - kw["dampening"]) * d)
            new["momentum_buffer"] = rs(buf)
            d = r(d + h(kw["momentum"]) * buf) if kw["nesterov"] else buf
        return round_to_format(np.asarray(w - h(lr) * d), fmt), new
    b1, b2 = kw["betas"]
    if kw["weight_decay"]:
        if opt.name == "adamw":
            w = r(w * h(1 - lr * kw["weight_decay"]))
        else:
            d = r(d + h(kw["weight_decay"]) * w)
    m_, v_ = state.get("exp_avg", np.zeros_like(w)), state.get("exp_avg_sq", np.zeros_like(w))
    m = r(m_ + h(1 - b1) * r(d - m_)) if order == "loop" else r(h(b1) * m_ + h(1 - b1) * d)
    v = r(r(h(b2) * v_) + h(1 - b2) * r(d * d))
    new = {"exp_avg": rs(m), "exp_avg_sq": rs(v)}
    big = v
    if kw["amsgrad"]:
        big = np.maximum(state.get("max_exp_avg_sq", np.zeros_like(w)), v)
        new["max_exp_avg_sq"] = rs(big)
    den = r(r(r(np.sqrt(big)) / h(math.sqrt(1 - b2**t))) + h(kw["eps"]))
    p = r(h(lr / (1 - b1**t)) * r(m / den))
    return round_to_format(np.asarray(w - p), fmt), new


finite = st.floats(-4, 4, allow_nan=False, width=32).filter(lambda x: x == 0 or abs(x) > 1e-3)
configs = st.sampled_from([
    {"name": "sgd", "momentum": 0.9, "dampening": 0.5, "weight_decay": 0.01},
    {"name": "sgd", "momentum": 0.9, "nesterov": True, "weight_decay": 0.5, "maximize": True},
    {"name": "sgd", "momentum": 0.5},
    {"name": "adam"},
    {"name": "adam", "weight_decay": 0.1, "amsgrad": True, "betas": [0.8, 0.99], "eps": 1e-6},
    {"name": "adamw", "weight_decay": 0.5, "amsgrad": True},
])


@settings(max_examples=150, deadline=None)
@given(table=configs, dtype=st.sampled_from(DTYPES), order=st.sampled_from(ORDERS), t=st.integers(1, 4),
       lr=st.sampled_from([0.01, 0.1, 1e-9]), w=st.lists(finite, min_size=4, max_size=4),
       g=st.lists(finite, min_size=4, max_size=4), s=st.lists(finite, min_size=4, max_size=4))
def test_correct_evaluations_stay_inside_the_rigorous_bound(table, dtype, order, t, lr, w, g, s) -> None:
    opt = cfg(table)
    fmt = get_format(dtype)
    wa = round_to_format(np.array(w, dtype=np.float64), fmt)
    ga = round_to_format(np.array(g, dtype=np.float64), fmt)
    sa = round_to_format(np.array(s, dtype=np.float64), fmt)
    state: dict = {}
    if t > 1:
        state = {k: (np.abs(sa) if k != "momentum_buffer" and k != "exp_avg" else sa) for k in opt.state_keys()}
        if "max_exp_avg_sq" in state:
            state["max_exp_avg_sq"] = np.maximum(state["exp_avg_sq"], np.abs(sa) * 0.5)
    with np.errstate(all="ignore"):  # eps held as 0 in float16 divides 0 by 0: the bound is vacuous there
        got_w, got_state = simulate(opt, wa, ga, state, t, lr, dtype, order)
    truth = update_truth(opt, {"W": wa}, {"W": ga}, {"W": state}, t, Fraction(lr), fmt)
    rig, _ = update_bounds(opt, {"W": wa}, {"W": ga}, {"W": state}, t, lr, fmt)
    for q, computed in (("W", got_w), *((f"{k}_W", v) for k, v in got_state.items())):
        hi, lo = truth.values[q].to_hi_lo()
        err = np.abs((computed - hi) - lo)
        ok = np.isfinite(err) & (err <= rig[q]) | ~np.isfinite(rig[q])
        assert ok.all(), (q, order, dtype, computed, hi, err, rig[q])


def test_bounds_are_tight_enough_to_see_one_ulp() -> None:
    """A one-ULP change of the parameter after an ordinary step is more than a tenth of the bound
    (the bound is a few ULPs, not a vacuous one)."""
    opt = cfg({"name": "adam"})
    fmt = get_format("float32")
    w = np.array([0.75, -1.25])
    g = np.array([0.5, 0.25])
    rig, exp = update_bounds(opt, {"W": w}, {"W": g}, {}, 1, 0.01, fmt)
    ulp = np.spacing(np.float32(0.74)).astype(np.float64)
    assert np.all(rig["W"] < 10 * ulp) and np.all(exp["W"] <= rig["W"])
    opt = cfg({"name": "sgd", "momentum": 0.9, "nesterov": True})
    rig, _ = update_bounds(opt, {"W": w}, {"W": g}, {"W": {"momentum_buffer": g}}, 2, 0.01, fmt)
    assert np.all(rig["W"] < 10 * ulp)
