"""helper-141's attack on the optimizer bounds' newest allowances (:mod:`harness.optim.bounds`): the one-sided eps cap
(helper-137), the overflow of the quotient ``m / den``, and a search of correct steps for false alarms.

Found and pinned here:

- False pass: where the second moment is below float16's subnormals and ``eps`` small, the eps cap bounded the error of
  ``r = m / den`` on both sides by ``max(R - |r|, |r|)``: every computed update in ``[-(R - 2|r|), R]`` agreed, so a
  step that skipped its update (W kept) always agreed there, and the update of the wrong sign wherever ``R >= 3 |r|``
  (float16, ``eps = 1e-6``, a gradient of 1e-3 at step 3: the wrong sign at 0.003 of the bound, the skipped update at
  0.002). A correct update there has the first moment's sign and lies in ``[P_low, R]``: the bound is now per side
  (:func:`harness.optim.bounds.sided_bound`), and these are ``disagree`` at 2.1-2.4 and 1.06-1.18.
- False alarm: the quotient ``m / den`` formed before the step size was counted as overflowing with the exact
  denominator; a correct float16 step whose second moment rounds to 0 divides by ``eps`` alone (``m = 65.7``,
  ``eps = 1e-3``: ``m / eps = inf`` where ``m / den = 38,500``), and the Adam paper's and optax's ``m_hat / (sqrt(v_hat) +
  eps)`` divides ``m / (1 - beta1^t)``: both gave W = -inf, ``disagree`` (ratio inf), where the exact W is finite.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, target
from hypothesis import strategies as st

from harness.floats import get_format, round_to_format
from harness.optim.oracle import update_truth
from tests.conftest import optimizer_of
from tests.test_attack_h137 import grade, torch_step
from tests.test_optim_bounds import simulate

FAILING = ("disagree", "error", "invalid-input")
F16 = get_format("float16")


def optax_order(w: np.ndarray, g: np.ndarray, st: dict, t: int, lr: float, eps: float, b1: float = 0.9,
                b2: float = 0.999) -> tuple[np.ndarray, dict]:
    """Adam in float16 as the Adam paper and optax write it, every operation in float16: ``m_hat = m / (1 - beta1^t)``,
    ``v_hat = v / (1 - beta2^t)``, ``theta - lr (m_hat / (sqrt(v_hat) + eps))``."""
    h = np.float16
    d = g.astype(h)
    m = h(b1) * np.asarray(st.get("exp_avg", 0.0)).astype(h) + h(1 - b1) * d
    v = h(b2) * np.asarray(st.get("exp_avg_sq", 0.0)).astype(h) + (d * h(1 - b2)) * d
    m_hat, v_hat = m / h(1 - b1**t), v / h(1 - b2**t)
    w_new = w.astype(h) - h(lr) * (m_hat / (np.sqrt(v_hat) + h(eps)))
    return w_new.astype(np.float64), {"exp_avg": m.astype(np.float64), "exp_avg_sq": v.astype(np.float64)}


def correct_step(form: str, opt: Any, params: dict, grads: dict, state: dict, t: int, lr: float) -> tuple[dict, dict]:
    """One correct float16 Adam step: torch.optim's ``loop``, ``foreach``, ``fused``; ``sim-<order>`` of
    ``tests.test_optim_bounds.simulate``; ``optax`` (:func:`optax_order`)."""
    if form in ("loop", "foreach", "fused"):
        return torch_step(form, opt, "float16", params, grads, state, t, lr)
    new, new_state = {}, {}
    with np.errstate(all="ignore"):
        for p in params:
            if form == "optax":
                new[p], new_state[p] = optax_order(params[p], grads[p], state.get(p, {}), t, lr, float(opt["eps"]))
            else:
                new[p], new_state[p] = simulate(opt, params[p], grads[p], state.get(p, {}), t, lr, "float16", form[4:])
    return new, new_state


def exact_adam_update(theta: Fraction, g: Fraction, m_: Fraction, v_: Fraction, t: int, lr: Fraction, eps: Fraction,
                      b1: Fraction = Fraction(0.9), b2: Fraction = Fraction(0.999)) -> tuple[Fraction, Fraction, float]:
    """By hand, from torch.optim's documentation: ``(m, v, p)`` with ``p = lr / (1 - b1^t) m / (sqrt(v) / sqrt(1 -
    b2^t) + eps)`` (the square roots in float64: ``p`` to about 1e-15, enough for the figures pinned here)."""
    m = b1 * m_ + (1 - b1) * g
    v = b2 * v_ + (1 - b2) * g * g
    den = math.sqrt(v) / math.sqrt(1 - b2**t) + float(eps)
    return m, v, float(lr / (1 - b1**t) * m) / den


def small_moment_case() -> tuple[Any, dict, dict, dict]:
    """float16 Adam at step 3, ``eps = 1e-6``, gradients near 1e-3 and the held second moment 0: the new one (1e-9) is
    below float16's subnormals, so a correct step divides by anything from ``eps`` (the moment rounded to 0) to about 10
    times the exact denominator; the exact update of b is 0.0064 (0.006377), torch's for-loop moves b by 3.64."""
    opt = optimizer_of({"name": "adam", "eps": 1e-6})
    params = {"W": np.array([[0.5, -0.25]]), "b": np.array([0.5])}
    grads = {"W": round_to_format(np.array([[1e-3, -2e-3]]), F16), "b": round_to_format(np.array([1e-3]), F16)}
    state = {p: {"exp_avg": g.copy(), "exp_avg_sq": np.zeros_like(g)} for p, g in grads.items()}
    return opt, params, grads, state


@pytest.mark.parametrize("form", ["loop", "foreach", "fused", "sim-loop", "sim-addcdiv", "sim-fused", "sim-dtype-scalars", "optax"])
def test_a_correct_float16_adam_step_agrees_where_its_second_moment_is_below_the_subnormals(form: str) -> None:
    opt, params, grads, state = small_moment_case()
    new, new_state = correct_step(form, opt, params, grads, state, 3, 1e-3)
    recs = grade(opt, "float16", params, grads, state, 3, 1e-3, new, new_state)
    assert not [q for q, r in recs.items() if r.verdict in FAILING], [(q, r.verdict, r.bound_ratio) for q, r in recs.items()]


@pytest.mark.parametrize("wrong", ["sign", "skip"])
def test_a_float16_adam_update_of_the_wrong_sign_or_skipped_disagrees_where_the_second_moment_is_below_the_subnormals(
        wrong: str) -> None:
    # the exact update of b, by hand: m = 0.9 g + 0.1 g = g (g = 1e-3 as float16 holds it), v = 0.001 g^2, p = lr / (1 -
    # 0.9^3) m / (sqrt(v) / sqrt(1 - 0.999^3) + eps) = 3.69e-3 * 1.0004e-3 / 5.789e-4 = 0.006377; the wrong sign moves b to 0.5 + p (error 2p = 0.0127),
    # the skipped update leaves it at 0.5 (error p): they agreed at 0.003 and 0.002 of the bound (max(R - |r|, |r|), R
    # about 580 |r|), each now against the bound short of p, about |p| - P_low + the subtraction's rounding
    opt, params, grads, state = small_moment_case()
    g = Fraction(float(grads["b"][0]))
    m, v, p = exact_adam_update(Fraction(1, 2), g, g, Fraction(0), 3, Fraction(1e-3), Fraction(1e-6))
    assert m == g and float(v) < F16.underflow_quantum  # (v rounds to 0 in float16: below half its least subnormal)
    assert p == pytest.approx(0.006377, rel=1e-4)
    f = {"sign": -1.0, "skip": 0.0}[wrong]
    new, new_state = correct_step("loop", opt, params, grads, state, 3, 1e-3)
    recs = grade(opt, "float16", params, grads, state, 3, 1e-3, new, new_state)
    truth = update_truth(opt, params, grads, state, 3, Fraction(1e-3), F16)  # (W: the same wrong step on every element)
    assert truth.values["b"].to_hi_lo()[0][0] == pytest.approx(0.5 - p, rel=1e-12)
    wrong_params = {q: round_to_format(params[q] + f * (truth.values[q].to_hi_lo()[0] - params[q]), F16) for q in ("W", "b")}
    assert wrong_params["b"][0] == {"sign": 0.50634765625, "skip": 0.5}[wrong]
    recs = grade(opt, "float16", params, grads, state, 3, 1e-3, wrong_params, new_state)
    assert recs["W"].verdict == recs["b"].verdict == "disagree", [(q, recs[q].verdict, recs[q].bound_ratio) for q in "Wb"]
    # (the bound of b's error above its exact value is below 2p, and below p: each catches its step)
    assert recs["b"].rigorous_bound < (2 * p if wrong == "sign" else p)


def quotient_case(v_held: float) -> tuple[Any, dict, dict, dict]:
    """float16 Adam at step 2, eps = 1e-3: W[0, 0] holds m = 73 and the given second moment, its gradient 1e-3."""
    opt = optimizer_of({"name": "adam", "eps": 1e-3})
    params = {"W": np.array([[0.5, 0.5]]), "b": np.array([0.25])}
    grads = {"W": np.array([[round_to_format(np.array([1e-3]), F16)[0], 0.0]]), "b": np.array([0.0])}
    state = {"W": {"exp_avg": np.array([[73.0, 0.5]]), "exp_avg_sq": np.array([[v_held, 0.25]])},
             "b": {"exp_avg": np.array([0.5]), "exp_avg_sq": np.array([0.25])}}
    return opt, params, grads, state


@pytest.mark.parametrize("form", ["sim-loop", "sim-dtype-scalars"])
def test_a_float16_quotient_over_eps_alone_may_overflow_where_the_second_moment_rounds_to_zero(form: str) -> None:
    # m = 0.9 * 73 + 0.1 * 0.001 = 65.7; v = 0.001 * 1e-6 = 1e-9 rounds to 0 in float16; the exact den = sqrt(1e-9) /
    # sqrt(1 - 0.999^2) + 0.001 = 0.00171 and m / den = 38,500 (finite), while a step dividing by eps alone forms
    # m / 0.001 = 65,700: inf in float16, and W = -inf (disagree, ratio inf, before: helper-141)
    opt, params, grads, state = quotient_case(0.0)
    g = Fraction(float(grads["W"][0, 0]))
    m, v, _ = exact_adam_update(Fraction(1, 2), g, Fraction(73), Fraction(0), 2, Fraction(1e-5), Fraction(1e-3))
    den = math.sqrt(v) / math.sqrt(1 - 0.999**2) + 1e-3
    assert 38_000 < float(m) / den < 39_000 and float(m) / 1e-3 > 65_520  # (65,520: float16's overflow threshold)
    new, new_state = correct_step(form, opt, params, grads, state, 2, 1e-5)
    assert new["W"][0, 0] == -math.inf and new_state["W"]["exp_avg_sq"][0, 0] == 0.0
    recs = grade(opt, "float16", params, grads, state, 2, 1e-5, new, new_state)
    assert recs["W"].verdict not in FAILING, (recs["W"].verdict, recs["W"].message)
    new["W"][0, 0] = math.inf  # (the other sign: no correct evaluation gives it)
    assert grade(opt, "float16", params, grads, state, 2, 1e-5, new, new_state)["W"].verdict == "disagree"


def test_a_float16_quotient_that_cannot_overflow_still_disagrees_as_inf() -> None:
    # the held second moment 1.0: den = sqrt(0.999) / sqrt(0.001999) + 0.001 = 22.4, m / den = 2.9: no evaluation
    # overflows, and W = -inf stays disagree
    opt, params, grads, state = quotient_case(1.0)
    new, new_state = correct_step("sim-loop", opt, params, grads, state, 2, 1e-5)
    assert math.isfinite(new["W"][0, 0])
    new["W"][0, 0] = -math.inf
    assert grade(opt, "float16", params, grads, state, 2, 1e-5, new, new_state)["W"].verdict == "disagree"


def test_the_adam_papers_order_whose_quotient_over_one_minus_beta1_t_overflows_float16_is_not_a_failure() -> None:
    # held m = 40, v = 0, gradient 0, step 2: m = 36, den = eps = 1e-3 exactly, m / den = 36,000 (finite) but m_hat / den
    # = 36 / 0.19 / 1e-3 = 189,474: inf in float16 (optax's order), W = -inf where the exact W is 0.5 - 1e-5 * 189,474 =
    # -1.39 (disagree, ratio inf, before: helper-141)
    opt = optimizer_of({"name": "adam", "eps": 1e-3})
    params = {"W": np.array([[0.5, 0.5]]), "b": np.array([0.25])}
    grads = {"W": np.array([[0.0, 0.0]]), "b": np.array([0.0])}
    state = {"W": {"exp_avg": np.array([[40.0, 0.5]]), "exp_avg_sq": np.array([[0.0, 0.25]])},
             "b": {"exp_avg": np.array([0.5]), "exp_avg_sq": np.array([0.25])}}
    new, new_state = correct_step("optax", opt, params, grads, state, 2, 1e-5)
    assert new["W"][0, 0] == -math.inf
    recs = grade(opt, "float16", params, grads, state, 2, 1e-5, new, new_state)
    exact = update_truth(opt, params, grads, state, 2, Fraction(1e-5), F16).values["W"].to_hi_lo()[0][0, 0]
    assert exact == pytest.approx(0.5 - 1e-5 * (Fraction(9, 10) * 40 / (1 - Fraction(81, 100))) / 1e-3, rel=1e-3)
    assert recs["W"].verdict not in FAILING, (recs["W"].verdict, recs["W"].message)
    new["W"][0, 0] = math.inf
    assert grade(opt, "float16", params, grads, state, 2, 1e-5, new, new_state)["W"].verdict == "disagree"


SMALL = st.builds(lambda m, e, s: s * math.ldexp(m, e), st.floats(1, 2), st.integers(-24, -4), st.sampled_from([-1.0, 1.0]))


@settings(max_examples=60, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
@given(form=st.sampled_from(["loop", "foreach", "fused", "sim-loop", "sim-addcdiv", "sim-fused", "sim-dtype-scalars", "optax"]),
       eps=st.sampled_from([1e-3, 1e-4, 1e-6, 2e-7]), t=st.sampled_from([1, 2, 3, 10, 1000]),
       lr=st.sampled_from([1e-4, 1e-2, 1.0]), data=st.data())
def test_search_correct_float16_adam_steps_near_the_subnormals_for_a_false_alarm(form: str, eps: float, t: int, lr: float,
                                                                                  data: st.DataObject) -> None:
    """Correct float16 steps where the sided bounds and the quotient's overflow act: gradients and moments from 2**-24
    to 2**-3 (the second moment below the subnormals), eps down to float16's subnormals; none may fail."""
    opt = optimizer_of({"name": "adam", "eps": eps})

    def arr(shape: tuple[int, ...], nonneg: bool = False) -> np.ndarray:
        a = np.array([data.draw(SMALL) for _ in range(math.prod(shape))]).reshape(shape)
        return round_to_format(np.abs(a) if nonneg else a, F16)
    params = {"W": round_to_format(np.array([[0.5, -0.75, 3.0]]), F16), "b": round_to_format(np.array([0.0]), F16)}
    grads = {p: arr(np.shape(v)) for p, v in params.items()}
    state = {p: {"exp_avg": arr(np.shape(v)), "exp_avg_sq": arr(np.shape(v), True) ** 2} for p, v in params.items()} if t > 1 else {}
    state = {p: {k: round_to_format(a, F16) for k, a in per.items()} for p, per in state.items()}
    try:
        new, new_state = correct_step(form, opt, params, grads, state, t, lr)
    except RuntimeError:  # (a form torch lacks for this dtype)
        return
    recs = grade(opt, "float16", params, grads, state, t, lr, new, new_state)
    ratios = [r.bound_ratio for r in recs.values() if r.bound_ratio is not None and math.isfinite(r.bound_ratio)]
    target(max(ratios, default=0.0), label="error / rigorous bound")
    bad = [(q, r.verdict, r.bound_ratio, r.message[:200]) for q, r in recs.items() if r.verdict in FAILING]
    assert not bad, bad


def test_a_nan_parameter_where_only_the_quotient_may_overflow_disagrees() -> None:
    # the quotient m / eps = 65,700 may overflow float16 (above): W = -inf is a correct result there, but NaN is not:
    # m / den = +inf times lr / (1 - beta1^2) (held in float16 as a subnormal, not 0) is +inf, and W = theta - inf = -inf;
    # NaN needs 0 inf (the step size held as 0) or inf - inf. It was accepted (overflow, helper-141)
    opt, params, grads, state = quotient_case(0.0)
    new, new_state = correct_step("sim-loop", opt, params, grads, state, 2, 1e-5)
    new["W"][0, 0] = math.nan
    assert grade(opt, "float16", params, grads, state, 2, 1e-5, new, new_state)["W"].verdict == "disagree"
    # lr = 1e-9: the step size 1e-9 / 0.19 is held as 0 in float16 (below half its least subnormal): 0 inf is NaN, a
    # correct result
    new, new_state = correct_step("sim-dtype-scalars", opt, params, grads, state, 2, 1e-9)
    assert math.isnan(new["W"][0, 0])
    recs = grade(opt, "float16", params, grads, state, 2, 1e-9, new, new_state)
    assert recs["W"].verdict not in FAILING, (recs["W"].verdict, recs["W"].message)


def test_sgd_with_dampening_1_at_step_1_gives_no_nan_where_the_gradient_with_weight_decay_overflows() -> None:
    # at step 1 the buffer is d itself (torch.optim: no dampening at the first step), so (1 - dampening) d = 0 inf never
    # forms: d = 1 + 1000 * 100 = 100,001 overflows float16 to +inf in the buffer and W = 100 - 0.01 inf = -inf (torch's
    # for-loop and foreach) or W = -900 (fused, in float32); a NaN buffer or W was accepted (overflow, helper-141)
    opt = optimizer_of({"name": "sgd", "momentum": 0.9, "dampening": 1.0, "weight_decay": 1000.0})
    params = {"W": np.array([[100.0, 1.0]]), "b": np.array([0.5])}
    grads = {"W": np.array([[1.0, 0.25]]), "b": np.array([0.125])}
    for form in ("loop", "foreach", "fused"):
        new, new_state = torch_step(form, opt, "float16", params, grads, {}, 1, 0.01)
        recs = grade(opt, "float16", params, grads, {}, 1, 0.01, new, new_state)
        assert not [q for q, r in recs.items() if r.verdict in FAILING], (form, [(q, r.verdict) for q, r in recs.items()])
    new["W"][0, 0], new_state["W"]["momentum_buffer"][0, 0] = math.nan, math.nan
    recs = grade(opt, "float16", params, grads, {}, 1, 0.01, new, new_state)
    assert recs["W"].verdict == recs["momentum_buffer_W"].verdict == "disagree"
    # at step 2 the held buffer's term 0.9 buf and (1 - 1) d = 0 inf: NaN is correct there
    state = {p: {"momentum_buffer": np.full(np.shape(v), 2.0)} for p, v in params.items()}
    truth = update_truth(opt, params, grads, state, 2, Fraction(0.01), F16)
    new = {p: round_to_format(truth.values[p].to_hi_lo()[0], F16) for p in params}
    new_state = {p: {"momentum_buffer": round_to_format(truth.values[f"momentum_buffer_{p}"].to_hi_lo()[0], F16)} for p in params}
    new["W"][0, 0], new_state["W"]["momentum_buffer"][0, 0] = math.nan, math.nan
    recs = grade(opt, "float16", params, grads, state, 2, 0.01, new, new_state)
    assert not [q for q, r in recs.items() if r.verdict in FAILING], [(q, r.verdict, r.message[:100]) for q, r in recs.items()]


def test_a_nan_parameter_where_only_the_bias_corrected_first_moment_may_overflow_disagrees() -> None:
    # optax's order at step 2, held m = 20,000, v = 1, gradient 0: m = 18,000 and m_hat = 18,000 / 0.19 = 94,737 is inf
    # in float16, while v_hat = 0.999 / 0.001999 = 500 is not: inf / (sqrt(500) + eps) = inf, W = -inf (exact W: 0.5 -
    # 1e-5 * 94,737 / 22.4 = 0.458). NaN needs inf / inf (v_hat inf too) or 0 inf (lr held as 0): it was accepted
    # (overflow) at lr = 1e-5; at lr = 1e-9 (held as 0 in float16) the step's own NaN stays accepted
    opt = optimizer_of({"name": "adam", "eps": 1e-3})
    params = {"W": np.array([[0.5, 0.5]]), "b": np.array([0.25])}
    grads = {"W": np.array([[0.0, 0.0]]), "b": np.array([0.0])}
    state = {"W": {"exp_avg": np.array([[20000.0, 0.5]]), "exp_avg_sq": np.array([[1.0, 0.25]])},
             "b": {"exp_avg": np.array([0.5]), "exp_avg_sq": np.array([0.25])}}
    exact = update_truth(opt, params, grads, state, 2, Fraction(1e-5), F16).values["W"].to_hi_lo()[0][0, 0]
    assert exact == pytest.approx(0.5 - 1e-5 * (18000 / 0.19) / (math.sqrt(0.999) / math.sqrt(1 - 0.999**2) + 1e-3), rel=1e-9)
    new, new_state = correct_step("optax", opt, params, grads, state, 2, 1e-5)
    assert new["W"][0, 0] == -math.inf
    assert grade(opt, "float16", params, grads, state, 2, 1e-5, new, new_state)["W"].verdict not in FAILING
    new["W"][0, 0] = math.nan
    assert grade(opt, "float16", params, grads, state, 2, 1e-5, new, new_state)["W"].verdict == "disagree"
    new, new_state = correct_step("optax", opt, params, grads, state, 2, 1e-9)
    assert math.isnan(new["W"][0, 0])
    assert grade(opt, "float16", params, grads, state, 2, 1e-9, new, new_state)["W"].verdict not in FAILING


@pytest.mark.parametrize("form", ["loop", "foreach", "fused"])
def test_torch_float16_sgd_holding_lr_as_zero_against_an_infinite_held_buffer_is_not_a_failure(form: str) -> None:
    # a held momentum buffer of +inf (an earlier step's overflow) gives the new buffer +inf and W = theta - lr inf: -inf,
    # or NaN where lr = 1e-8 is held as 0 (torch's float16 add_(buf, alpha=-lr): 0 inf). The rule allowed that NaN only
    # for lr == 0: torch's own for-loop and foreach steps were disagree (helper-141's search); a NaN stays wrong where lr is
    # held (1e-3), and a finite W stays wrong everywhere
    opt = optimizer_of({"name": "sgd", "momentum": 1.5, "weight_decay": 1e-9})
    params = {"W": np.array([[250.0, 174.5]]), "b": np.array([-12.3046875, 1.0])}
    grads = {"W": np.array([[0.0010175704956054688, 0.026214599609375]]), "b": np.array([0.0, 250.0])}
    state = {"W": {"momentum_buffer": np.array([[math.inf, 0.0]])}, "b": {"momentum_buffer": np.array([1.0, 2330.0])}}
    new, new_state = torch_step(form, opt, "float16", params, grads, state, 5, 1e-8)
    recs = grade(opt, "float16", params, grads, state, 5, 1e-8, new, new_state)
    assert not [q for q, r in recs.items() if r.verdict in FAILING], [(q, r.verdict, r.message[:120]) for q, r in recs.items()]
    assert math.isnan(new["W"][0, 0]) or new["W"][0, 0] == -math.inf
    new["W"][0, 0] = 250.0
    assert grade(opt, "float16", params, grads, state, 5, 1e-8, new, new_state)["W"].verdict == "disagree"
    held, held_state = torch_step(form, opt, "float16", params, grads, state, 5, 1e-3)
    held["W"][0, 0] = math.nan
    assert grade(opt, "float16", params, grads, state, 5, 1e-3, held, held_state)["W"].verdict == "disagree"
