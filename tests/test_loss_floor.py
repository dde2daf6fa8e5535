"""helper-171: a one-sided lower limit (floor) of the loss closes a false pass.

**The defect.** The loss ``c sum R^2``'s rigorous bound (:func:`harness.bounds.loss_bound`, ``gamma_{NK+3}``) is
two-sided: once ``N K u`` is large its lower side is below 0 (float16 ``N K`` above about 1,400, bfloat16 above
about 180). A float16 step over N = 12,288 rows whose loss is 0 (the loss of an empty batch, ``R[:0]``, or a loss
multiplied by 0) agreed, its error about 1/400 of the bound: a false pass.

**The floor** (:class:`harness.bounds.LossFloor`): every correct evaluation of a sum of non-negative terms, in any
order, is at least ``c (1 - u)^(m + 4) sum max(|R| - E_R, 0)^2`` less an underflow allowance, and at least the
largest term's own lower value; a finite loss below it is ``disagree``. The figures below are derived by hand from
those formulas; the correct evaluations (serial, pairwise, float32-accumulated, reversed, sorted ascending, Kahan,
flushed, tiny, huge) stay ``agree``; a Hypothesis search maximises ``floor / computed`` over correct evaluations.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, target
from hypothesis import strategies as st

import harness
from harness.bounds import step_bounds
from harness.floats import BFLOAT16, FLOAT16, FloatFormat
from harness.implementations.registry import Implementation
from harness.runner import RunOptions
from harness.verdicts import failures

try:
    import ml_dtypes

    BF16: type | None = ml_dtypes.bfloat16
except ImportError:  # pragma: no cover - bfloat16 through ml_dtypes only
    BF16 = None

N16, N_BF = 12_288, 2_000
U16, UBF = 2.0**-11, 2.0**-8


def _values(n: int, seed: int) -> np.ndarray:
    """``n`` residuals in [1, 2) on float16's grid (exact in bfloat16 too: 8 significant bits)."""
    rng = np.random.default_rng(seed)
    return 1.0 + np.floor(rng.random(n) * 128) / 128


def _case(R: np.ndarray, dtype: str, reduction: str = "sum", steps: int = 1) -> harness.Case:
    """X = 1 (N, 1), W = 0, b = 0, y = -R: the residual is R exactly, and the gradients 2 c sum R."""
    n = R.size
    return harness.case_from_arrays(f"floor-{dtype}-{n}", np.ones((n, 1)), -R[:, None], np.zeros((1, 1)), np.zeros(1),
                                    lr=2.0**-20, reduction=reduction, dtypes=(dtype,), steps=steps)


def _dt(dtype: str) -> type:
    return {"float16": np.float16, "bfloat16": BF16, "float32": np.float32, "float64": np.float64}[dtype]  # type: ignore[return-value]


def _impl(name: str, loss_of, flush_to_zero: bool = False, error_model=None) -> Implementation:
    """A plug-in whose gradients and update are correct (float32 accumulation rounded to the dtype) and whose loss is
    ``loss_of(R, c, dt, t)`` (R: the residual in the dtype (N, K); t: the step, from 0)."""
    def step(X, y, W, b, *, lr, reduction, steps):
        dt = X.dtype.type
        n, k = y.shape
        c = 1.0 if reduction == "sum" else 1.0 / (n * k)
        out = []
        for t in range(steps):
            R = ((X.astype(np.float32) @ W.astype(np.float32) + b.astype(np.float32)).astype(dt) - y).astype(dt)
            g = (2 * c * R.astype(np.float32))
            gW = (X.astype(np.float32).T @ g).astype(dt)
            gb = g.sum(axis=0).astype(dt)
            W = (W.astype(np.float32) - np.float32(lr) * gW.astype(np.float32)).astype(dt)
            b = (b.astype(np.float32) - np.float32(lr) * gb.astype(np.float32)).astype(dt)
            out.append(harness.StepResult(np.asarray(loss_of(R, c, dt, t), dtype=dt), gW, gb, W, b))
        return out

    return Implementation(name=name, framework="numpy", fn=step, flush_to_zero=flush_to_zero, error_model=error_model,
                          dtypes=("float16", "bfloat16", "float32", "float64"))


def _loss_record(R: np.ndarray, dtype: str, loss_of, reduction: str = "sum", flush_to_zero: bool = False,
                 steps: int = 1) -> list[harness.Record]:
    recs = harness.verify([_case(R, dtype, reduction, steps)], [_impl("t171", loss_of, flush_to_zero)], dtypes=[dtype])
    return [r for r in recs if r.quantity == "loss"]


def _floor_by_hand(R: np.ndarray, fmt: FloatFormat, c: float = 1.0, eta: float = 0.0) -> float:
    """The floor's first limit for X = 1, W = 0, b = 0 under flush-to-zero (``eta = 2**emin``; the module docstring of
    :mod:`harness.bounds`: ``E_R = gamma_3 |R| + (1 + gamma_3) 3 eta``, D = 1 product and 2 D + 1 flushed operations):
    ``c (1 - u2)^2 (1 - u2)^(m + 4) sum (|R| - E_R)^2 - eta (8 m + 8)`` with ``u2 = u + 2**-24 (1 + u)``."""
    u = fmt.unit_roundoff
    u2 = u + 2.0**-24 * (1 + u)
    g3 = (1 - u) ** -3 - 1
    m = R.size
    lo = np.maximum(R - g3 * R - (1 + g3) * 3 * eta, 0)
    return c * (1 - u2) ** (m + 6) * float(np.sum(lo**2)) - eta * (8 * m + 8)


# ---- the defect: losses far below every correct evaluation ---------------------------------------------------------


def _sum16(R: np.ndarray) -> float:
    return float(np.sum(R.astype(np.float64) ** 2))


@pytest.fixture(scope="module")
def r16() -> np.ndarray:
    return _values(N16, 171)


def test_the_floor_by_hand_float16(r16):
    """The figures the tests below rest on: exact ~ 2.8e4, (1 - u)^m ~ e^-6 = 0.0025, the floor ~ 63 (the FTZ
    allowance 2**-14 (8 m + 8) = 6.0 subtracted), exact / 1000 ~ 28 below it, exact (1 - u)^m ~ 70 above it."""
    exact = _sum16(r16)
    eta = 2.0**-14 * (8 * N16 + 8)
    floor = _floor_by_hand(r16, FLOAT16, eta=2.0**-14)  # (step_bounds' default for float16: flush-to-zero allowed)
    assert 2.5e4 < exact < 3.2e4 and 5.9 < eta < 6.1
    assert exact / 1000 < floor < exact * (1 - U16) ** N16
    sb = step_bounds({"X": np.ones((N16, 1)), "y": -r16[:, None], "W": np.zeros((1, 1)), "b": np.zeros(1)},
                     r16[:, None], {"loss": np.asarray(exact), "grad_W": np.zeros((1, 1)), "grad_b": np.zeros(1),
                                    "W": np.zeros((1, 1)), "b": np.zeros(1)}, lr=0.0, reduction="sum", fmt=FLOAT16)
    assert sb.loss_floor is not None
    got = sb.loss_floor.value()
    assert floor * (1 - 2.0**-30) <= got <= floor  # the harness's own floor: the hand formula, rounded down
    assert float(sb.rigorous["loss"]) > exact  # the two-sided bound: below 0 on its lower side (the defect)


@pytest.mark.parametrize("what", ["zero", "empty-slice", "thousandth", "times-zero", "negative"])
def test_a_far_too_small_float16_loss_is_disagree(r16, what):
    loss_of = {
        "zero": lambda R, c, dt, t: dt(0),
        "empty-slice": lambda R, c, dt, t: dt(c) * np.sum(R[:0] * R[:0], dtype=dt),  # off-by-one slice: no rows
        "thousandth": lambda R, c, dt, t: dt(_sum16(R) / 1000),
        "times-zero": lambda R, c, dt, t: dt(0) * np.sum(R.astype(np.float32) ** 2),
        "negative": lambda R, c, dt, t: dt(-_sum16(R)),
    }[what]
    (rec,) = _loss_record(r16, "float16", loss_of)
    assert rec.verdict == "disagree", (rec.verdict, rec.message)
    assert "below the least value any evaluation order can give for a sum of non-negative terms" in rec.message
    assert failures([rec])


def test_a_loss_just_above_the_floor_agrees(r16):
    """exact (1 - u)^m: above the floor (the floor is never above what the worst-case order bound allows)."""
    (rec,) = _loss_record(r16, "float16", lambda R, c, dt, t: dt(_sum16(R) * (1 - U16) ** N16))
    assert rec.verdict == "agree", rec.message


@pytest.mark.parametrize("order", ["serial", "pairwise", "float32", "reversed", "ascending", "kahan", "descending"])
def test_correct_float16_orders_agree(r16, order):
    (rec,) = _loss_record(r16, "float16", lambda R, c, dt, t: _evaluate(R.ravel(), order, dt, c))
    assert rec.verdict in ("agree", "suspect"), (order, rec.verdict, rec.message)
    assert "below the least value" not in rec.message


@pytest.mark.skipif(BF16 is None, reason="bfloat16 needs ml_dtypes")
def test_bfloat16_far_too_small_losses_are_disagree_and_correct_orders_agree():
    """bfloat16, N = 2000: (1 - u)^m ~ e^-7.8 = 3.9e-4, the floor ~ 1.8 of an exact ~ 4.6e3: 0 and exact 1e-4 are
    below it (exact / 1000 is not: the worst-case order bound allows it)."""
    R = _values(N_BF, 7)
    exact = _sum16(R)
    floor = _floor_by_hand(R, BFLOAT16)
    assert exact * 1e-4 < floor < exact / 1000
    for loss_of in (lambda R, c, dt, t: dt(0), lambda R, c, dt, t: dt(_sum16(R) * 1e-4)):
        (rec,) = _loss_record(R, "bfloat16", loss_of)
        assert rec.verdict == "disagree" and "below the least value" in rec.message, rec.message
    for order in ("serial", "pairwise", "ascending", "kahan", "float32"):
        (rec,) = _loss_record(R, "bfloat16", lambda R, c, dt, t, o=order: _evaluate(R.ravel(), o, dt, c))
        assert rec.verdict in ("agree", "suspect") and "below the least value" not in rec.message, (order, rec.message)


def test_mean_reduction_and_a_later_step(r16):
    """Mean (c = 1/N, normal in float16 for N = 12,288): 0 is caught; a correct mean agrees; over two steps the
    second step's 0 (the first correct) is caught at step 1."""
    recs = _loss_record(r16, "float16", lambda R, c, dt, t: dt(0), reduction="mean")
    assert recs[0].verdict == "disagree"
    recs = _loss_record(r16, "float16", lambda R, c, dt, t: _evaluate(R.ravel(), "pairwise", dt, c), reduction="mean")
    assert recs[0].verdict in ("agree", "suspect"), recs[0].message
    recs = _loss_record(r16, "float16", lambda R, c, dt, t: _evaluate(R.ravel(), "serial", dt, c) if t == 0 else dt(0),
                        steps=2)
    assert [r.verdict for r in recs] == ["agree", "disagree"], [r.message for r in recs]


def test_a_mean_whose_scale_flushes_has_no_floor():
    """float16, mean over N K = 20,000 > 16,384: fl(1/(N K)) is subnormal; flushed (a declared flush-to-zero) it is 0,
    and 0 is a correct loss: the floor says nothing. Without flush-to-zero fl(c) >= c - 2**-25 > 0, and 0 is caught."""
    R = _values(20_000, 3)
    (rec,) = _loss_record(R, "float16", lambda R, c, dt, t: dt(0), reduction="mean", flush_to_zero=True)
    assert "below the least value" not in rec.message
    (rec,) = _loss_record(R, "float16", lambda R, c, dt, t: _evaluate(R.ravel(), "serial", dt, c), reduction="mean")
    assert rec.verdict in ("agree", "suspect"), rec.message


def test_tiny_residuals_whose_squares_flush_have_no_floor():
    """R ~ 2**-10: R^2 ~ 2**-20 is subnormal in float16; with flush-to-zero every square may be 0 and the loss 0 is
    correct: not caught (the allowance 2**-14 (8 m + 8) exceeds the sum). With gradual underflow a square rounds to
    the subnormal grid (2**-24) and a correct sum agrees."""
    R = _values(3000, 5) * 2.0**-10
    (rec,) = _loss_record(R, "float16", lambda R, c, dt, t: dt(0), flush_to_zero=True)
    assert "below the least value" not in rec.message, rec.message
    for order in ("serial", "pairwise", "ascending"):
        (rec,) = _loss_record(R, "float16", lambda R, c, dt, t, o=order: _evaluate(R.ravel(), o, dt, c))
        assert rec.verdict in ("agree", "suspect") and "below the least value" not in rec.message, rec.message


def test_huge_residuals_inf_unchanged():
    """R ~ 300: R^2 ~ 9e4 is past float16's range: inf is the correct loss (overflow), and a finite loss far below
    stays graded (disagree: below the floor)."""
    R = _values(2000, 11) * 256
    (rec,) = _loss_record(R, "float16", lambda R, c, dt, t: np.sum(R * R, dtype=dt))
    assert rec.computed == "inf" and rec.verdict == "overflow", rec.message
    (rec,) = _loss_record(R, "float16", lambda R, c, dt, t: dt(0))
    assert rec.verdict == "disagree"


def test_a_plugin_error_model_has_no_floor(r16):
    """A plug-in's own error model (its own bounds) is graded as before: no floor is formed for it."""
    from harness.bounds import StepBounds

    def model(inputs, residual, exact, **kw):
        z = {q: np.zeros_like(np.asarray(v)) for q, v in exact.items()}
        big = {q: np.full(np.shape(v), np.inf) for q, v in exact.items()}
        return StepBounds(rigorous=big, expected=big, inf_allowed={q: v.astype(bool) for q, v in z.items()},
                          nan_allowed={q: v.astype(bool) for q, v in z.items()})

    impl = _impl("t171-own-model", lambda R, c, dt, t: dt(0), error_model=model)
    recs = harness.verify([_case(r16[:64], "float16")], [impl], dtypes=["float16"])
    assert next(r for r in recs if r.quantity == "loss").verdict == "agree"


# ---- correct evaluations, and a Hypothesis search for the tightest one ---------------------------------------------


def _evaluate(t: np.ndarray, order: str, dt: type, c: float) -> object:
    """``c sum t^2`` of the residuals ``t`` (in the dtype ``dt``), squares rounded to the dtype, in ``order``."""
    r = np.asarray(t, dtype=dt)
    sq = (r * r).astype(dt)
    if order == "pairwise":
        s = np.sum(sq, dtype=dt)
    elif order == "float32":
        s = dt(np.sum(sq.astype(np.float32), dtype=np.float32))
    elif order == "kahan":
        s, comp = dt(0), dt(0)
        for x in sq:
            y = dt(x - comp)
            tt = dt(s + y)
            comp = dt(dt(tt - s) - y)
            s = tt
    else:
        seq = {"serial": sq, "reversed": sq[::-1], "ascending": np.sort(sq), "descending": np.sort(sq)[::-1]}[order]
        s = dt(0)
        for x in seq:
            s = dt(s + x)
    return dt(dt(c) * s) if c != 1.0 else s


_ORDERS = ("serial", "pairwise", "float32", "reversed", "ascending", "kahan", "descending")


@st.composite
def _draws(draw):
    """(R on the dtype's grid, order, dtype name, reduction): magnitudes spread over a few binades (or one), tiny or
    a dominant term sometimes."""
    dtype = draw(st.sampled_from(["float16", "bfloat16"] if BF16 is not None else ["float16"]))
    n = draw(st.integers(1, 600))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    spread = draw(st.integers(0, 6))
    scale = 2.0 ** draw(st.integers(-12, 4))
    R = (1 + np.floor(rng.random(n) * 64) / 64) * 2.0 ** rng.integers(-spread, 1, n) * scale
    if draw(st.booleans()):
        R[rng.integers(0, n)] *= 2.0 ** draw(st.integers(0, 8))  # one dominant term
    R = np.asarray(np.asarray(R, dtype=_dt(dtype)), dtype=np.float64)
    return R, draw(st.sampled_from(_ORDERS)), dtype, draw(st.sampled_from(["sum", "mean"]))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_draws())
def test_no_correct_evaluation_is_below_the_floor(draw):
    R, order, dtype, reduction = draw
    n = R.size
    fmt = FLOAT16 if dtype == "float16" else BFLOAT16
    c = 1.0 if reduction == "sum" else 1.0 / n
    dt = _dt(dtype)
    with np.errstate(all="ignore"):
        got = float(np.asarray(_evaluate(R, order, dt, c), dtype=np.float64))
    exact = c * float(np.sum(R**2))
    z = {"grad_W": np.zeros((1, 1)), "grad_b": np.zeros(1), "W": np.zeros((1, 1)), "b": np.zeros(1)}
    sb = step_bounds({"X": np.ones((n, 1)), "y": -R[:, None], "W": np.zeros((1, 1)), "b": np.zeros(1)}, R[:, None],
                     {"loss": np.asarray(exact), **z}, lr=0.0, reduction=reduction, fmt=fmt)
    assert sb.loss_floor is not None
    floor = sb.loss_floor.value()
    if math.isfinite(got) and got > 0:
        target(floor / got, label=f"floor / computed ({dtype})")
    elif got == 0:
        target(float(floor > 0), label="floor above a correct 0")
    assert not (math.isfinite(got) and got < floor), (got, floor, order, dtype, reduction, n)


def test_a_shipped_mutant_now_caught():
    """The record-identity set's one change: ``mutant-mean-for-sum`` (the loss divided by N K = 35 under the sum) on
    a near-zero residual float32 case agreed at 0.499 of the two-sided bound; its loss (exact 4.28e-11 / 35 ~ 1.2e-12)
    is below the floor now (the floor: about a third of the exact loss, E_R being large against |R| there)."""
    from harness.cases import load_cases
    from harness.implementations import load_mutants

    load_mutants()
    case = next(c for c in load_cases(["cases"], tier="quick").cases if c.id == "gen-grid-near-zero-residual-n5-d2-k7-sum-s1")
    rec = next(r for r in harness.verify([case], ["mutant-mean-for-sum"], dtypes=["float32"]) if r.quantity == "loss")
    assert rec.verdict == "disagree" and "below the least value" in rec.message, rec.message


# ---- --repeat: the other runs are held to the floor too (helper-173: a second run's loss of 0 agreed) ---------------


def _repeat_loss(R: np.ndarray, later) -> harness.Record:
    """The loss record of a float16 ``--repeat 2`` run whose first call's loss is correct (a float32 sum rounded) and
    whose second call's is ``later(R, c, dt)``."""
    calls: list[int] = []

    def loss_of(R16, c, dt, t):
        calls.append(t)
        if len(calls) == 1:
            return dt(np.sum(R16.astype(np.float32) ** 2) * c)
        return later(R16, c, dt)

    recs = harness.verify([_case(R, "float16")], [_impl("t171-repeat", loss_of)], dtypes=["float16"],
                          options=RunOptions(repeat=2))
    assert len(calls) == 2
    (loss,) = [r for r in recs if r.quantity == "loss"]
    return loss


@pytest.mark.parametrize("later", [lambda R, c, dt: dt(0.0), lambda R, c, dt: dt(np.sum(R[:0].astype(np.float32) ** 2))],
                         ids=["zero", "empty-slice"])
def test_repeat_a_later_run_below_the_floor_is_disagree(r16, later):
    loss = _repeat_loss(r16, later)
    assert loss.verdict == "disagree", loss.message
    assert "run 2 of 2" in loss.message and "below its floor" in loss.message
    assert loss.repeat_identical == 0.5


def test_repeat_correct_runs_in_two_orders_agree(r16):
    loss = _repeat_loss(r16, lambda R, c, dt: _evaluate(R.ravel(), "serial", dt, c))
    assert loss.repeat_identical == 0.5  # (the serial float16 sum is another value than the float32 one)
    assert loss.verdict == "agree", loss.message


# ---- helper-174: the residual really rounded (the searches above hold X = 1, W = 0: R exact, E_R's rounding unsearched)


def _rounded_step(dtype: str, n: int, d: int, k: int, seed: int, mode: str) -> tuple[np.ndarray, ...]:
    """X (n, d), y (n, k), W (d, k), b (k,) on the dtype's grid; ``mode`` "cancel": y = X W + b rounded (|R| of the
    order of the residual's own rounding, where the floor must be about 0), "offset": y off by ~2**-6 relative,
    "random": y independent of X W + b."""
    rng = np.random.default_rng(seed)
    dt = _dt(dtype)

    def grid(a: np.ndarray) -> np.ndarray:
        return np.asarray(np.asarray(a, dtype=dt), dtype=np.float64)

    X = grid(rng.standard_normal((n, d)) * 2.0 ** rng.integers(-4, 4))
    W = grid(rng.standard_normal((d, k)) * 2.0 ** rng.integers(-4, 4))
    b = grid(rng.standard_normal(k))
    p = X @ W + b
    y = {"cancel": lambda: grid(p), "offset": lambda: grid(p * (1 + 2.0**-6 * rng.standard_normal(p.shape))),
         "random": lambda: grid(rng.standard_normal((n, k)) * np.abs(p).max())}[mode]()
    return X, y, W, b


def _torch_losses(X, y, W, b, dtype: str, reduction: str) -> tuple[dict[str, float], np.ndarray]:
    """The loss as real code computes it in ``dtype`` (torch on the CPU): the seed's ``(X @ W + b - y) ** 2`` summed or
    averaged, ``F.mse_loss`` of ``F.linear``, ``addmm`` with a mean of means, ``X @ W + (b - y)`` summed then divided,
    and the squared 2-norm; and the seed's residual ``X @ W + b - y`` (N, K) in ``dtype`` (a NumPy array)."""
    import torch

    td = {"float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]
    Xt, Wt, bt, yt = (torch.from_numpy(np.asarray(a, dtype=np.float32)).to(td) for a in (X, W, b, y))
    r = Xt @ Wt + bt - yt
    mean = reduction == "mean"
    sq = r**2
    r2 = torch.addmm(bt, Xt, Wt) - yt
    r3 = Xt @ Wt + (bt - yt)
    got = {"seed": sq.mean() if mean else sq.sum(),
           "mse_loss": torch.nn.functional.mse_loss(torch.nn.functional.linear(Xt, Wt.T, bt), yt, reduction=reduction),
           "addmm": (r2 * r2).mean(0).mean() if mean else (r2 * r2).sum(0).sum(),
           "b-y": r3.pow(2).sum() / (r3.numel() if mean else 1),
           "norm": torch.linalg.vector_norm(r) ** 2 / (r.numel() if mean else 1)}
    return {name: float(v.float()) for name, v in got.items()}, r.float().numpy().astype(_dt(dtype))


@pytest.mark.skipif(BF16 is None, reason="bfloat16 needs ml_dtypes")
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["float16", "bfloat16"]), st.integers(1, 48), st.integers(1, 64), st.integers(1, 3),
       st.integers(0, 2**32 - 1), st.sampled_from(["cancel", "offset", "random"]), st.sampled_from(["sum", "mean"]),
       st.booleans())
def test_no_rounded_residual_evaluation_is_below_the_floor(dtype, n, d, k, seed, mode, reduction, half_flush):
    """Correct evaluations whose residual is rounded (torch's own kernels; NumPy orders of the same rounded residual)
    are never below the floor, with the half types' flush allowance (``half_flush``) and without it (gradual
    underflow: the floor the runner forms where a probe finds the framework does not flush). The floor is formed as
    the runner forms it (:func:`harness.runner._step_bounds_of`: the oracle's exact residual, ``step_bounds``).
    helper-174's searches (4,800 examples, N up to 20,000, D up to 64, 13 evaluations, float32 too): max floor / computed
    0.9945 float16, 0.960 bfloat16 (N K = 1)."""
    from fractions import Fraction

    from harness.oracle import exact_inputs_from_floats, exact_step
    from harness.verdicts import QUANTITIES

    X, y, W, b = _rounded_step(dtype, n, d, k, seed, mode)
    inputs = {"X": X, "y": y, "W": W, "b": b}
    ex = exact_step(exact_inputs_from_floats(inputs), Fraction(2**-10), reduction)
    hi = {q: ex.values[q].to_hi_lo()[0] for q in QUANTITIES}
    fmt = FLOAT16 if dtype == "float16" else BFLOAT16
    sb = step_bounds(inputs, ex.residual.to_float64(), hi, lr=2.0**-10, reduction=reduction, fmt=fmt,
                     half_flush=half_flush)
    assert sb.loss_floor is not None
    floor = sb.loss_floor.value()
    got, Rd = _torch_losses(X, y, W, b, dtype, reduction)
    c = 1.0 if reduction == "sum" else 1.0 / (n * k)
    with np.errstate(all="ignore"):
        for order in _ORDERS:
            got[order] = float(np.asarray(_evaluate(Rd.ravel(), order, _dt(dtype), c), dtype=np.float64))
    finite = [v for v in got.values() if math.isfinite(v) and v > 0]
    if finite:
        target(floor / min(finite), label=f"floor / computed ({dtype})")
    for name, v in got.items():
        assert not (math.isfinite(v) and v < floor), (name, v, floor, dtype, n, d, k, mode, reduction, half_flush)
