"""The optimizer rules (harness.optim.rules) against values derived by hand, against the plain-Python
transcription of torch.optim's documented pseudo-code (harness.optim.reference), and symbolically."""

from __future__ import annotations

import itertools
import random
from fractions import Fraction

import mpmath
import numpy as np
import pytest
import sympy as sp

from harness.floats import get_format
from harness.optim.config import OptimizerConfig
from harness.optim.oracle import EXACT_METHOD, INTERVAL_METHOD, round_to_nearest, update_truth
from harness.optim.reference import adam_reference, sgd_reference
from harness.optim.rules import SYMBOLS, latex_rule, symbolic_rule
from tests.conftest import optimizer_of

F32 = get_format("float32")


def cfg(table: dict) -> OptimizerConfig:
    return optimizer_of(table)


def run_oracle(opt: OptimizerConfig, w0: float, grads: list[float], lr: Fraction) -> list[dict[str, Fraction]]:
    """The oracle chained over steps on one scalar parameter (b unused: a 1-element W)."""
    w = np.array([[w0]])
    state: dict = {}
    out = []
    for t, g in enumerate(grads, start=1):
        truth = update_truth(opt, {"W": w}, {"W": np.array([[g]])}, {"W": state}, t, lr, F32)
        vals = {k: v.fraction_at((0, 0)) for k, v in truth.values.items()}
        out.append(vals)
        w = np.array([[float(vals["W"])]])
        state = {k[: -len("_W")]: np.array([[float(v)]]) for k, v in vals.items() if k != "W"}
    return out


def test_sgd_by_hand() -> None:
    # lr 1/2, momentum 3/4, dampening 1/2, weight decay 1/4 (all exact binary fractions), w0 = 1/2:
    # step 1, g = 3/2: d = 3/2 + 1/8 = 13/8; buf = d (undamped); w = 1/2 - 13/16 = -5/16
    # step 2, g = 1:   d = 1 - 5/64 = 59/64; buf = 3/4 13/8 + 1/2 59/64 = 215/128; w = -5/16 - 215/256 = -295/256
    opt = cfg({"name": "sgd", "momentum": 0.75, "dampening": 0.5, "weight_decay": 0.25})
    got = run_oracle(opt, 0.5, [1.5, 1.0], Fraction(1, 2))
    assert got[0] == {"W": Fraction(-5, 16), "momentum_buffer_W": Fraction(13, 8)}
    assert got[1] == {"W": Fraction(-295, 256), "momentum_buffer_W": Fraction(215, 128)}
    # Nesterov, maximize: d = -g; buf = d; step = d + mu buf: w = 1/2 - 1/2 (-3/2 - 9/8) = 29/16
    opt = cfg({"name": "sgd", "momentum": 0.75, "nesterov": True, "maximize": True})
    assert run_oracle(opt, 0.5, [1.5], Fraction(1, 2))[0] == {"W": Fraction(29, 16), "momentum_buffer_W": Fraction(-3, 2)}


def test_adam_by_hand() -> None:
    # betas (1/2, 3/4), eps 0, lr 1/2, g = 2 at step 1: m = 1, v = 1, m_hat = 2, v_hat = 4: w = 1 - 1/2 * 2 / 2 = 1/2
    opt = cfg({"name": "adam", "betas": [0.5, 0.75], "eps": 0})
    got = run_oracle(opt, 1.0, [2.0], Fraction(1, 2))[0]
    assert got == {"W": Fraction(1, 2), "exp_avg_W": Fraction(1), "exp_avg_sq_W": Fraction(1)}
    # AdamW with weight decay 1/2: w = 1 (1 - 1/4) - 1/2 = 1/4; the decay never touches the moments
    opt = cfg({"name": "adamw", "betas": [0.5, 0.75], "eps": 0, "weight_decay": 0.5})
    assert run_oracle(opt, 1.0, [2.0], Fraction(1, 2))[0]["W"] == Fraction(1, 4)


SGD_FLAGS = [dict(zip(("momentum", "dampening", "nesterov", "weight_decay", "maximize"), combo, strict=True))
             for combo in itertools.product([0, 0.9], [0, 0.3], [False, True], [0, 0.01], [False, True])
             if not (combo[2] and (combo[0] == 0 or combo[1] != 0))]


@pytest.mark.parametrize("flags", SGD_FLAGS, ids=lambda f: "-".join(f"{k}={v}" for k, v in f.items()))
def test_sgd_rule_matches_the_documented_algorithm_exactly(flags: dict) -> None:
    opt = cfg({"name": "sgd", **flags})
    rng = random.Random(13)
    grads = [rng.uniform(-2, 2) for _ in range(4)]
    lr = Fraction(0.1)
    got = run_oracle(opt, 0.75, grads, lr)
    # the reference runs on the gradients the oracle was fed (as given), exactly
    ref = sgd_reference(Fraction(0.75), lambda t, th: Fraction(grads[t - 1]), 4, lr=lr,
                        **{k: (Fraction(float(v)) if not isinstance(v, bool) else v) for k, v in flags.items()})
    # the oracle was fed the previous W rounded to float64 between steps; replay the reference the same way
    w = Fraction(0.75)
    buf = None
    for t, g in enumerate(grads, start=1):
        step = sgd_reference(w, lambda _t, _th, g=g: Fraction(g), 1, lr=lr,
                             **{k: (Fraction(float(v)) if not isinstance(v, bool) else v) for k, v in flags.items()})
        if buf is not None and flags["momentum"]:  # continue from the carried buffer: apply the t > 1 line by hand
            d = (-Fraction(g) if flags["maximize"] else Fraction(g)) + Fraction(float(flags["weight_decay"])) * w
            buf = Fraction(float(flags["momentum"])) * buf + (1 - Fraction(float(flags["dampening"]))) * d
            d = d + Fraction(float(flags["momentum"])) * buf if flags["nesterov"] else buf
            new_w = w - lr * d
        else:
            new_w, buf = step[0]
        assert got[t - 1]["W"] == new_w
        if flags["momentum"]:
            assert got[t - 1]["momentum_buffer_W"] == buf
        w = Fraction(float(new_w))
        buf = Fraction(float(buf)) if buf is not None else None
    assert len(ref) == 4


@pytest.mark.parametrize(("name", "amsgrad", "wd", "maximize"), [
    ("adam", False, 0, False), ("adam", True, 0.1, True), ("adamw", False, 0.01, False), ("adamw", True, 0.5, True)])
def test_adam_rule_matches_the_documented_algorithm(name: str, amsgrad: bool, wd: float, maximize: bool) -> None:
    opt = cfg({"name": name, "amsgrad": amsgrad, "weight_decay": wd, "maximize": maximize, "betas": [0.8, 0.99], "eps": 1e-3})
    grads = [0.5, -0.25, 0.125]
    lr = Fraction(0.1)
    w = 0.75
    state: dict = {}
    mpmath.mp.prec = 300
    try:
        for t, g in enumerate(grads, start=1):
            truth = update_truth(opt, {"W": np.array([[w]])}, {"W": np.array([[g]])}, {"W": state}, t, lr, F32)
            assert truth.method == INTERVAL_METHOD and not truth.straddles
            got = {k: v.fraction_at((0, 0)) for k, v in truth.values.items()}
            # the reference, started from the same carried state: run it with a one-step history that
            # reproduces m, v and v_max (t steps with zero gradients before are not the same): compare at t = 1
            # exactly, later through the closed form of the documented update with the carried state
            mpf = mpmath.mpf
            b1, b2 = mpf(0.8), mpf(0.99)
            d = mpf(-g if maximize else g)
            theta = mpf(w)
            if name == "adamw":
                theta = theta - mpf(float(lr)) * mpf(wd) * theta
            elif wd:
                d = d + mpf(wd) * theta
            m = b1 * mpf(state.get("exp_avg", np.zeros((1, 1)))[0, 0]) + (1 - b1) * d
            v = b2 * mpf(state.get("exp_avg_sq", np.zeros((1, 1)))[0, 0]) + (1 - b2) * d * d
            vm = max(mpf(state.get("max_exp_avg_sq", np.zeros((1, 1)))[0, 0]), v) if amsgrad else v
            ref_w = theta - mpf(float(lr)) * (m / (1 - b1**t)) / (mpmath.sqrt(vm / (1 - b2**t)) + mpf(1e-3))
            assert abs(mpf(got["W"].numerator) / got["W"].denominator - ref_w) < mpf(2) ** -200
            if t == 1:
                ref = adam_reference(mpf(w), lambda _t, _th, g=g: mpmath.mpf(g), 1, lr=mpf(float(lr)), betas=(b1, b2), eps=mpf(1e-3),
                                     weight_decay=mpf(wd), amsgrad=amsgrad, maximize=maximize, decoupled=name == "adamw",
                                     sqrt=mpmath.sqrt)
                assert abs(mpf(got["W"].numerator) / got["W"].denominator - ref[0][0]) < mpf(2) ** -200
            w = float(got["W"])
            state = {k[: -len("_W")]: np.array([[float(v)]]) for k, v in got.items() if k != "W"}
    finally:
        mpmath.mp.prec = 53


def test_adam_reference_trajectory_against_the_oracle_over_steps() -> None:
    """Three steps of the documented algorithm (its own state) against the oracle fed the exact
    midpoints it produced: the same to 2**-200 (the state stays exact floats here: betas 1/2, 3/4)."""
    opt = cfg({"name": "adam", "betas": [0.5, 0.75], "eps": 0.0625})
    grads = [0.5, -0.25, 0.75]
    mpmath.mp.prec = 300
    try:
        ref = adam_reference(mpmath.mpf(1), lambda t, _th: mpmath.mpf(grads[t - 1]), 3, lr=mpmath.mpf(0.5),
                             betas=(mpmath.mpf(0.5), mpmath.mpf(0.75)), eps=mpmath.mpf(0.0625), sqrt=mpmath.sqrt)
    finally:
        mpmath.mp.prec = 53
    got = run_oracle(opt, 1.0, grads, Fraction(1, 2))
    for (_th, m, v, _), step in zip(ref, got, strict=True):
        assert step["exp_avg_W"] == Fraction(str(m)) and step["exp_avg_sq_W"] == Fraction(str(v))
    assert abs(float(got[0]["W"]) - float(ref[0][0])) == 0


def test_symbolic_rules_agree_with_the_reference_symbolically() -> None:
    s = SYMBOLS
    opt = cfg({"name": "sgd", "momentum": 0.9, "dampening": 0.1, "weight_decay": 0.01})
    first = symbolic_rule(opt, first_step=True)
    ref = sgd_reference(s["theta"], lambda t, th: s["g"], 1, lr=s["lr"], momentum=s["momentum"], dampening=s["dampening"],
                        weight_decay=s["weight_decay"])
    assert sp.simplify(first["theta"] - ref[0][0]) == 0 and sp.simplify(first["momentum_buffer"] - ref[0][1]) == 0
    adam = cfg({"name": "adam", "weight_decay": 0.1})
    rule = symbolic_rule(adam)
    # betas as numbers (SymPy cannot tell the sign of 1 - beta_2 to merge the square roots otherwise)
    t1 = {s["t"]: 1, s["exp_avg"]: 0, s["exp_avg_sq"]: 0, s["beta1"]: sp.Rational(9, 10), s["beta2"]: sp.Rational(999, 1000)}
    ref = adam_reference(s["theta"], lambda t, th: s["g"], 1, lr=s["lr"], betas=(s["beta1"], s["beta2"]), eps=s["eps"],
                         weight_decay=s["weight_decay"], sqrt=sp.sqrt)
    assert sp.simplify(rule["theta"].subs(t1) - ref[0][0].subs(t1)) == 0
    assert all(line.startswith(("\\theta_t =", "m_t =", "v_t =")) for line in latex_rule(adam))


def test_round_to_nearest_ties_to_even() -> None:
    f16 = get_format("float16")
    assert round_to_nearest(Fraction(2049), f16) == 2048 and round_to_nearest(Fraction(2051), f16) == 2052
    assert round_to_nearest(Fraction(1, 3), F32) == Fraction(float(np.float32(1 / 3)))
    # float16's subnormal quantum is 2**-24: 1.5 quanta -> 2 (even), 2.5 quanta -> 2 (even), 0.75 -> 1
    assert round_to_nearest(Fraction(3, 2**25), f16) == Fraction(1, 2**23) == round_to_nearest(Fraction(5, 2**25), f16)
    assert round_to_nearest(Fraction(3, 2**26), f16) == Fraction(1, 2**24)


def test_sgd_oracle_is_exact() -> None:
    opt = cfg({"name": "sgd", "momentum": 0.9})
    truth = update_truth(opt, {"W": np.array([[0.1]])}, {"W": np.array([[0.3]])}, {}, 1, Fraction(0.01), F32)
    assert truth.method == EXACT_METHOD
    assert truth.values["W"].fraction_at((0, 0)) == Fraction(0.1) - Fraction(0.01) * Fraction(0.3)


def test_an_enclosure_across_a_rounding_boundary_is_reported_not_guessed() -> None:
    """Adam with eps = 0 at step 1 moves w by exactly lr sign(g) (m_hat / sqrt(v_hat) = g / |g|), but the
    enclosure of sqrt(v) / sqrt(1 - beta2) has a width: 1 - 2**-12 is the midpoint of two float16 values,
    so the enclosure straddles that rounding boundary; in float32 the value is representable (no boundary)."""
    opt = cfg({"name": "adam", "eps": 0})
    args = (opt, {"W": np.array([[1.0]])}, {"W": np.array([[1.0]])}, {}, 1, Fraction(1, 2**12))
    truth = update_truth(*args, get_format("float16"))
    assert truth.values["W"].fraction_at((0, 0)) == 1 - Fraction(1, 2**12)  # the midpoint, to 2**-250
    assert truth.straddles == {"W": [(0, 0)]}
    assert update_truth(*args, F32).straddles == {}
