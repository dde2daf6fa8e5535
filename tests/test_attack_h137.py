"""helper-137's search for false alarms and false passes in the optimizer steps' bounds (:mod:`harness.optim.bounds`).

Correct steps were written in several orders (torch.optim's for-loop, foreach and fused forms; the NumPy steps; the orders
of ``tests/test_optim_bounds.py``'s ``simulate``) and graded by :func:`harness.optim.grade.grade_update` with Hypothesis's
``target`` on the largest error-to-bound ratio, every dtype. Defects found, each pinned here:

- ``bias_correction_error`` raised OverflowError (``math.expm1``) for a beta below float32's subnormals (``betas =
  [1e-300, 0.9]``) from step 1,024 on: the whole case was an ``error`` record (harness failure while grading).
- torch's float16 ``grad.add(param, alpha=weight_decay)`` holds the weight decay in float16 (3e-6 as 2.98e-6, 0.6%);
  Adam's chain counted only a normal rounding for it: torch.optim's own float16 Adam (for-loop and foreach) with L2
  weight decay 3e-6 was ``disagree`` at 1.40 and 1.48 times the bound of ``exp_avg_sq``. A step written in the dtype
  holds ``1 - beta2`` there (1e-6 as 1.013e-6 in float16) the same way.
- torch's float16 ``param.add_(d, alpha=-lr)`` holds ``lr = 1e-8`` as 0: where ``wd theta`` overflows float16 its
  ``0 * -inf`` is NaN, a correct result the overflow rule allowed only for ``lr == 0`` (``disagree``, ratio inf).
- A step that forms ``m / den`` before the step size (optax's order, a step written in the dtype) overflows float16 where
  ``s m / den`` does not: ``W = inf`` was ``disagree`` (ratio inf) where the exact W is 112. And one that holds
  ``1 - beta2`` as 0 in float16 where ``d d`` overflows forms ``0 inf``, NaN in ``exp_avg_sq`` and W (``disagree``).
- The Adam paper's and optax's order, ``v_hat = v / (1 - beta2^t)`` before its square root, overflows float16 from a
  gradient of 256 at step 1: ``m_hat / inf = 0`` leaves W where it was, ``disagree`` at 9.0 (exact W 0.99, W 1.0).

And one false pass: the division's eps cap (``|r^ - r| <= |r^|max + |r|``) let a float16 Adam update of the wrong sign
agree (0.73 of the bound) where the second moment is below float16's subnormals (gradient 0.001, eps = 1e-3); the quotient
a correct step forms has the sign of ``m``, so ``max(|r^|max - |r|, |r|)`` bounds it: 1.78 for the wrong sign now.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, target
from hypothesis import strategies as st

from harness.floats import FLOAT32, get_format, round_to_format
from harness.optim.bounds import U32, bias_correction_error, may_vanish, update_bounds
from harness.optim.grade import grade_update
from tests.conftest import optimizer_of
from tests.test_optim_bounds import simulate

FAILING = ("disagree", "error", "invalid-input")


def grade(opt: Any, dtype: str, params: dict, grads: dict, state: dict, t: int, lr: float, new_params: dict,
          new_state: dict) -> dict[str, Any]:
    """The records of one update by quantity (:func:`grade_update`, as :func:`harness.runner.check_case` calls it)."""
    out = {f"grad_{p}": np.asarray(g, dtype=np.float64) for p, g in grads.items()}
    out.update({p: np.asarray(v, dtype=np.float64) for p, v in new_params.items()})
    for p, per in new_state.items():
        out.update({f"{k}_{p}": np.reshape(np.asarray(v, dtype=np.float64), np.shape(params[p])) for k, v in per.items()})
    base = {"case": "h137", "implementation": "x", "device": "cpu", "dtype": dtype}
    with np.errstate(all="ignore"):
        recs = grade_update(opt, base, t, out, params, state, lr, get_format(dtype), False, None)
    return {r.quantity: r for r in recs}


def torch_step(form: str, opt: Any, dtype: str, params: dict, grads: dict, state: dict, t: int, lr: float) -> tuple[dict, dict]:
    """One ``step()`` of torch.optim (``form``: ``loop``, ``foreach`` or ``fused``) from held parameters, gradients and
    state, in ``dtype``."""
    dt = getattr(torch, dtype)
    ps = {p: torch.tensor(v, dtype=dt) for p, v in params.items()}
    for p, v in ps.items():
        v.grad = torch.tensor(grads[p], dtype=dt)
    cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[opt.name]
    kw = {"loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}[form]
    o = cls(list(ps.values()), lr=lr, **opt.torch_kwargs(), **kw)
    for p, v in ps.items():
        if t > 1:
            o.state[v] = {k: torch.tensor(a, dtype=dt) for k, a in state[p].items()}
            if opt.name != "sgd":
                o.state[v]["step"] = torch.tensor(float(t - 1), dtype=torch.float32)
    with np.errstate(all="ignore"):
        o.step()
    new = {p: v.detach().double().numpy() for p, v in ps.items()}
    return new, {p: {k: a.detach().double().numpy() for k, a in o.state[v].items() if k != "step"} for p, v in ps.items()}


def test_a_beta_below_float32s_subnormals_at_step_1024_and_after_has_a_finite_bias_correction_error() -> None:
    # (1 + d0)^t with d0 = 1 (a beta that float32 flushes): math.expm1(t log 2) passed float64's range at t = 1,024
    for beta in (5e-324, 1e-300, 1e-46):
        for t in (1, 1023, 1024, 3000, 10**6):
            r = bias_correction_error(beta, t)
            assert 0 < r <= 2 * U32, (beta, t, r)  # beta^t is 0: 1 - beta^t is 1, held within float32's rounding
    opt = optimizer_of({"name": "adam", "betas": [1e-300, 0.9]})
    params, grads = {"W": np.array([[0.5]]), "b": np.array([0.25])}, {"W": np.array([[0.125]]), "b": np.array([-0.5])}
    state = {p: {"exp_avg": np.full(np.shape(v), 0.01), "exp_avg_sq": np.full(np.shape(v), 0.001)} for p, v in params.items()}
    for dtype in ("float32", "float16", "bfloat16"):
        new, new_state = torch_step("loop", opt, dtype, params, grads, state, 1100, 0.01)
        recs = grade(opt, dtype, params, grads, state, 1100, 0.01, new, new_state)
        assert {r.verdict for r in recs.values()} == {"agree"}, [(q, r.verdict, r.message) for q, r in recs.items()]


def l2_case() -> tuple[dict, dict]:
    """Large weights, gradients 0 (or tiny): ``d = wd theta``, the weight decay term alone."""
    return ({"W": np.array([[60000.0, 30000.0, 1000.0]]), "b": np.array([50000.0, 0.5, 2.0])},
            {"W": np.array([[0.0, 0.0, 0.0]]), "b": np.array([0.0, 0.0, 0.001])})


@pytest.mark.parametrize("form", ["loop", "foreach", "fused"])
def test_torch_float16_adam_holding_its_l2_weight_decay_in_float16_agrees(form: str) -> None:
    # torch's grad.add(param, alpha=3e-6) holds alpha as float16's subnormal 2.98e-6 (0.6% off): exp_avg_sq was
    # disagree at 1.40 (W) and 1.48 (b) in the for-loop and foreach forms
    opt = optimizer_of({"name": "adam", "weight_decay": 3e-6})
    params, grads = l2_case()
    new, new_state = torch_step(form, opt, "float16", params, grads, {}, 1, 1e-3)
    recs = grade(opt, "float16", params, grads, {}, 1, 1e-3, new, new_state)
    assert not [q for q, r in recs.items() if r.verdict in FAILING], [(q, r.verdict, r.bound_ratio) for q, r in recs.items()]


def test_an_adam_step_that_drops_the_l2_weight_decay_still_disagrees_there() -> None:
    opt = optimizer_of({"name": "adam", "weight_decay": 3e-6})
    params, grads = l2_case()
    new, new_state = torch_step("loop", opt, "float16", params, grads, {}, 1, 1e-3)
    plain = optimizer_of({"name": "adam"})
    _, wrong_state = torch_step("loop", plain, "float16", params, grads, {}, 1, 1e-3)
    for p in ("W", "b"):
        new_state[p]["exp_avg"] = wrong_state[p]["exp_avg"]
    recs = grade(opt, "float16", params, grads, {}, 1, 1e-3, new, new_state)
    assert recs["exp_avg_W"].verdict == recs["exp_avg_b"].verdict == "disagree"


def test_a_float16_step_holding_one_minus_beta2_in_float16_agrees_and_without_it_disagrees() -> None:
    # 1 - 0.999999 = 1e-6 held in float16 as 17 subnormal spacings, 1.013e-6 (1.3% off): exp_avg_sq of a step written
    # in the dtype errs by 1.3%, 27 times float16's unit roundoff
    opt = optimizer_of({"name": "adam", "betas": [0.9, 0.999999]})
    params = {"W": np.array([[0.5, -1.0]]), "b": np.array([0.25, 2.0])}
    grads = {"W": np.array([[0.5, 3.0]]), "b": np.array([-0.75, 100.0])}
    new, new_state = {}, {}
    for p in params:
        new[p], new_state[p] = simulate(opt, params[p], grads[p], {}, 1, 0.01, "float16", "dtype-scalars")
    recs = grade(opt, "float16", params, grads, {}, 1, 0.01, new, new_state)
    assert {r.verdict for r in recs.values()} == {"agree"}, [(q, r.verdict, r.bound_ratio) for q, r in recs.items()]
    for p in params:  # 1 - beta2 taken as 2e-6: twice the second moment
        new_state[p]["exp_avg_sq"] = round_to_format(2e-6 * grads[p] ** 2, get_format("float16"))
    recs = grade(opt, "float16", params, grads, {}, 1, 0.01, new, new_state)
    assert recs["exp_avg_sq_W"].verdict == recs["exp_avg_sq_b"].verdict == "disagree"


@pytest.mark.parametrize("form", ["loop", "foreach"])
def test_torch_float16_sgd_whose_lr_is_held_as_zero_times_an_overflowing_decay_is_nan_and_not_a_failure(form: str) -> None:
    # d = g + 13741 theta overflows float16 (-1e7); torch's add_(d, alpha=-1e-8) holds alpha as float16's 0: 0 * -inf = NaN
    opt = optimizer_of({"name": "sgd", "weight_decay": 13741.0})
    params = {"W": np.array([[-733.5, 1.0]]), "b": np.array([0.5, 2.0])}
    grads = {"W": np.array([[0.0, 0.25]]), "b": np.array([0.0, 0.0])}
    new, new_state = torch_step(form, opt, "float16", params, grads, {}, 1, 1e-8)
    assert math.isnan(new["W"][0, 0])
    recs = grade(opt, "float16", params, grads, {}, 1, 1e-8, new, new_state)
    assert recs["W"].verdict not in FAILING, (recs["W"].verdict, recs["W"].message)
    assert may_vanish(1e-8, get_format("float16")) and not may_vanish(1e-8, FLOAT32)
    assert not may_vanish(5e-324, get_format("float64")) and may_vanish(0.0, get_format("float64"))
    # lr = 1e-3 is held: the same NaN is wrong (-733.5 - 1e-3 (-inf) is +inf)
    new["W"][0, 0] = math.nan
    recs = grade(opt, "float16", params, grads, {}, 1, 1e-3, new, new_state)
    assert recs["W"].verdict == "disagree"


def quotient_first(dtype: str, sign: float = 1.0) -> tuple[Any, dict, dict, dict, dict, dict]:
    """Adam in float16 at step 2 whose first moment over eps (the second moment 0) passes float16: ``m / den`` of a step
    that divides before scaling is ``-2.1e6`` (inf), while ``s m / den`` is the exact update, 111.4."""
    opt = optimizer_of({"name": "adam", "eps": 1e-3})
    params = {"W": np.array([[0.5, 0.5]]), "b": np.array([0.25])}
    grads = {"W": np.array([[0.0, 0.0]]), "b": np.array([0.0])}
    state = {"W": {"exp_avg": np.array([[-2352.0, 0.5]]), "exp_avg_sq": np.array([[0.0, 0.25]])},
             "b": {"exp_avg": np.array([0.5]), "exp_avg_sq": np.array([0.25])}}
    new, new_state = {}, {}
    for p in params:
        new[p], new_state[p] = simulate(opt, params[p], grads[p], state[p], 2, 1e-5, dtype, "loop")
    new["W"] = new["W"] * np.array([[sign, 1.0]])
    return opt, params, grads, state, new, new_state


def test_an_adam_step_whose_quotient_overflows_before_the_step_size_is_not_a_failure() -> None:
    opt, params, grads, state, new, new_state = quotient_first("float16")
    assert new["W"][0, 0] == math.inf
    recs = grade(opt, "float16", params, grads, state, 2, 1e-5, new, new_state)
    assert recs["W"].verdict == "overflow", (recs["W"].verdict, recs["W"].message)
    opt, params, grads, state, new, new_state = quotient_first("float16", -1.0)  # -inf: the wrong sign
    recs = grade(opt, "float16", params, grads, state, 2, 1e-5, new, new_state)
    assert recs["W"].verdict == "disagree"


def test_a_float16_step_holding_one_minus_beta2_as_zero_where_d_squared_overflows_gives_nan_and_not_a_failure() -> None:
    # 1 - beta2 = 2**-40 is 0 in float16, and d d = 1147**2 passes float16's range: (0)(inf) is NaN in exp_avg_sq and W
    # (disagree, ratio inf, before); a NaN exp_avg_sq where d d cannot overflow is still wrong
    opt = optimizer_of({"name": "adamw", "betas": [0.9, 1 - 2.0**-40], "eps": 16.0})
    params, grads = {"W": np.array([[0.5, -0.25]]), "b": np.array([1.0])}, {"W": np.array([[1147.0, 2.0]]), "b": np.array([3.0])}
    new, new_state = {}, {}
    with np.errstate(all="ignore"):
        for p in params:
            new[p], new_state[p] = simulate(opt, params[p], grads[p], {}, 1, 0.01, "float16", "dtype-scalars")
    assert math.isnan(new_state["W"]["exp_avg_sq"][0, 0]) and math.isnan(new["W"][0, 0])
    recs = grade(opt, "float16", params, grads, {}, 1, 0.01, new, new_state)
    assert not [q for q, r in recs.items() if r.verdict in FAILING], [(q, r.verdict, r.message[:200]) for q, r in recs.items()]
    new_state["W"]["exp_avg_sq"][0, 1] = math.nan
    recs = grade(opt, "float16", params, grads, {}, 1, 0.01, new, new_state)
    assert recs["exp_avg_sq_W"].verdict == "disagree"


def optax_order_step(w: np.ndarray, g: np.ndarray, lr: float, eps: float) -> tuple[np.ndarray, dict]:
    """Adam at step 1 in float16 as the Adam paper and optax write it: bias-corrected moments ``m / (1 - beta1)`` and
    ``v / (1 - beta2)``, then ``lr m_hat / (sqrt(v_hat) + eps)``, every operation in float16."""
    h = np.float16
    d = g.astype(h)
    m, v = h(0.1) * d, (d * h(0.001)) * d
    m_hat, v_hat = m / h(0.1), v / h(0.001)
    return (w.astype(h) - h(lr) * m_hat / (np.sqrt(v_hat) + h(eps))).astype(np.float64), {"exp_avg": m, "exp_avg_sq": v}


def test_the_adam_papers_order_whose_bias_corrected_second_moment_overflows_float16_keeps_w_and_is_not_a_failure() -> None:
    # v_hat = 0.001 * 300**2 / 0.001 = 90,000: inf in float16, so m_hat / inf = 0 and W stays at 1.0 where the exact W is
    # 0.99 (disagree at 9.0 before: only sqrt(v) / sqrt(1 - beta2^t) was counted); a W moved the wrong way still disagrees
    opt = optimizer_of({"name": "adam", "eps": 1e-3})
    params, grads = {"W": np.array([[1.0, 0.5]]), "b": np.array([0.25])}, {"W": np.array([[300.0, 1.0]]), "b": np.array([-0.5])}
    new, new_state = {}, {}
    with np.errstate(all="ignore"):
        for p in params:
            new[p], new_state[p] = optax_order_step(params[p], grads[p], 0.01, 1e-3)
    assert new["W"][0, 0] == 1.0
    recs = grade(opt, "float16", params, grads, {}, 1, 0.01, new, new_state)
    assert not [q for q, r in recs.items() if r.verdict in FAILING], [(q, r.verdict, r.bound_ratio) for q, r in recs.items()]
    new["W"][0, 0] = 1.01
    assert grade(opt, "float16", params, grads, {}, 1, 0.01, new, new_state)["W"].verdict == "disagree"


@pytest.mark.parametrize("form", ["loop", "foreach", "fused", "sim-loop", "sim-addcdiv", "optax"])
def test_a_float16_adam_update_of_the_wrong_sign_disagrees_where_the_second_moment_is_below_the_subnormals(form: str) -> None:
    # g = 0.001: v = 1e-9 is 0 in float16, and a correct step divides m by eps = 1e-3 alone (twice the exact update); the
    # eps cap bounded |r^ - r| by |r^|max + |r|, so the update of the wrong sign agreed (0.73 of the bound); both have
    # m's sign, so |r^ - r| <= max(|r^|max - |r|, |r|): the correct forms stay at 0.89 of it, the wrong sign is 1.78
    opt = optimizer_of({"name": "adam", "eps": 1e-3})
    params, grads = {"W": np.array([[0.0, 0.0]]), "b": np.array([0.0])}, {"W": np.array([[0.0068817138671875, 0.5]]), "b": np.array([0.001])}
    if form.startswith("sim-"):
        new, new_state = {}, {}
        for p in params:
            new[p], new_state[p] = simulate(opt, params[p], grads[p], {}, 1, 0.01, "float16", form[4:])
    elif form == "optax":
        new, new_state = {}, {}
        for p in params:
            new[p], new_state[p] = optax_order_step(params[p], grads[p], 0.01, 1e-3)
    else:
        new, new_state = torch_step(form, opt, "float16", params, grads, {}, 1, 0.01)
    recs = grade(opt, "float16", params, grads, {}, 1, 0.01, new, new_state)
    assert {r.verdict for r in recs.values()} == {"agree"}, [(q, r.verdict, r.bound_ratio) for q, r in recs.items()]
    flipped = {p: -v for p, v in new.items()}
    assert grade(opt, "float16", params, grads, {}, 1, 0.01, flipped, new_state)["b"].verdict == "disagree"


DTYPES = ("float64", "float32", "float16", "bfloat16")
CONFIGS = [
    {"name": "sgd", "momentum": 0.9, "nesterov": True, "weight_decay": 3e-6},
    {"name": "sgd", "momentum": 0.5, "dampening": 0.5, "weight_decay": 1e4, "maximize": True},
    {"name": "adam", "weight_decay": 3e-6, "eps": 1e-4},
    {"name": "adam", "betas": [0.99, 0.999999], "amsgrad": True, "eps": 1e-3},
    {"name": "adamw", "betas": [0.5, 0.99999], "weight_decay": 0.5, "eps": 1e-2},
]
VALUES = st.one_of(st.sampled_from([0.0, 1e-6, 0.5, 1.0, 3.0, 250.0, 6e4]),
                   st.builds(lambda m, e: math.ldexp(m, e), st.floats(-2, 2), st.integers(-26, 17)))


@settings(max_examples=120, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
@given(table=st.sampled_from(CONFIGS), dtype=st.sampled_from(DTYPES), form=st.sampled_from(["loop", "foreach", "fused", "sim"]),
       t=st.sampled_from([1, 2, 10, 1100]), lr=st.sampled_from([1e-8, 1e-5, 1e-3, 0.1, 10.0]), data=st.data())
def test_search_for_a_correct_optimizer_step_beyond_its_bound(table: dict, dtype: str, form: str, t: int, lr: float,
                                                               data: st.DataObject) -> None:
    """A short derandomized form of the search: torch.optim's three forms and the simulated orders, hyper-parameters
    near the dtypes' edges (weight decay and ``1 - beta2`` subnormal in float16, ``lr = 1e-8`` held as 0), weights up to
    float16's range; no correct step may fail (the longer searches run by hand are in the docstring's report)."""
    opt = optimizer_of(table)
    fmt = get_format(dtype)

    def arr(shape: tuple[int, ...], nonneg: bool = False) -> np.ndarray:
        a = np.array([data.draw(VALUES) for _ in range(math.prod(shape))]).reshape(shape)
        return round_to_format(np.abs(a) if nonneg else a, fmt)
    params = {"W": arr((1, 2)), "b": arr((2,))}
    grads = {p: arr(np.shape(v)) for p, v in params.items()}
    state = {p: {k: arr(np.shape(v), k not in ("exp_avg", "momentum_buffer")) for k in opt.state_keys()} for p, v in params.items()}
    held = state if t > 1 else {}
    if form == "sim":
        order = data.draw(st.sampled_from(["loop", "fused", "dtype-scalars", "addcdiv"]))
        new, new_state = {}, {}
        with np.errstate(all="ignore"):
            for p in params:
                new[p], new_state[p] = simulate(opt, params[p], grads[p], held.get(p, {}), t, lr, dtype, order)
    else:
        try:
            new, new_state = torch_step(form, opt, dtype, params, grads, held, t, lr)
        except RuntimeError:  # (a form torch lacks for this dtype)
            return
    recs = grade(opt, dtype, params, grads, held, t, lr, new, new_state)
    ratios = [r.bound_ratio for r in recs.values() if r.bound_ratio is not None and math.isfinite(r.bound_ratio)]
    target(max(ratios, default=0.0), label="error / rigorous bound")
    bad = [(q, r.verdict, r.bound_ratio, r.message[:200]) for q, r in recs.items() if r.verdict in FAILING]
    assert not bad, bad


def test_update_bounds_count_the_subnormal_holdings_only_below_the_normal_range() -> None:
    """Normal hyper-parameters leave Adam's bounds as they were (the subnormal parts are 0): pinned against the bound's
    own terms for a float32 step whose weight decay and betas are normal."""
    opt = optimizer_of({"name": "adam", "weight_decay": 0.01})
    w, g = np.array([0.75, -1.25]), np.array([0.5, 0.25])
    state = {"exp_avg": np.array([0.1, -0.2]), "exp_avg_sq": np.array([0.3, 0.1])}
    rig, _ = update_bounds(opt, {"W": w}, {"W": g}, {"W": state}, 3, 0.01, get_format("float32"))
    u2 = 2.0**-24  # (float32: no wider type)
    k3 = (1 + u2) ** 3 - 1
    d = g + 0.01 * w
    e_d = k3 * (np.abs(g) + 0.01 * np.abs(w)) + 2.0**-150
    k6 = (1 + u2) ** 6 - 1
    b2v = 0.999 * state["exp_avg_sq"] + 0.001 * d * d
    e_v = k6 * b2v + 0.001 * (1 + k6) * (2 * np.abs(d) * e_d + e_d * e_d) + 3 * 2.0**-150
    assert rig["exp_avg_sq_W"] == pytest.approx(e_v * (1 + 2.0**-30), rel=1e-12)
