"""Long reductions in half precision keep a finite worst-case bound (:meth:`harness.floats.FloatFormat.gamma`).

Until 2026-12-07 the rigorous bound used Higham's ``gamma_m = m u / (1 - m u)``, infinite from ``m u = 1`` on: the
gradient's sum over N rows in float16 from N = 2,045, in bfloat16 from N = 253. There every gradient, W and b was
graded by the expected (probabilistic) bound alone, so no finite value could be ``disagree``: a float16 step whose
gradient is a sum where the reduction is a mean (N = 4,096 times too large) was ``suspect`` on every quantity, a pass
without ``--strict``. ``m`` roundings still leave each term within ``[(1 - u)^m, (1 - u)^-m]`` of its exact value,
so the bound is now ``(1 - u)^-m - 1`` (6.4 at m = 4,099 in float16) times the sum of |terms|: that bug is
``disagree``, and correct steps summed in the data's order, pairwise or by NumPy and torch still agree.
"""

from __future__ import annotations

import numpy as np
import pytest

import harness
from harness.verdicts import failures


def _seq(a: np.ndarray, axis: int = 0) -> np.ndarray:
    """``a`` summed along ``axis`` in order, every partial sum rounded to ``a``'s dtype."""
    with np.errstate(over="ignore", invalid="ignore"):
        return np.take(np.cumsum(a, axis=axis, dtype=a.dtype), -1, axis=axis)


def _pairwise(a: np.ndarray) -> np.ndarray:
    """``a`` summed along axis 0 pairwise (a binary tree), every partial sum rounded to ``a``'s dtype."""
    while a.shape[0] > 1:
        if a.shape[0] % 2:
            a = np.concatenate([a, np.zeros((1,) + a.shape[1:], a.dtype)])
        a = (a[0::2] + a[1::2]).astype(a.dtype)
    return a[0]


def _step(X, y, W, b, lr, reduction, steps, reduce, scale_by_count=True):  # type: ignore[no-untyped-def]
    dt = X.dtype
    out = []
    for _ in range(steps):
        R = ((X @ W).astype(dt) + b).astype(dt) - y
        c = dt.type(2.0 / R.size) if reduction == "mean" and scale_by_count else dt.type(2.0)
        S = (c * R).astype(dt)
        gW = np.stack([reduce((X[:, [j]] * S).astype(dt)) for j in range(X.shape[1])]).astype(dt)
        gb = reduce(S).astype(dt)
        sq = (R * R).astype(dt)
        loss = (reduce(sq).sum(dtype=dt) / dt.type(R.size)).astype(dt) if reduction == "mean" else reduce(sq).sum(dtype=dt)
        W = (W - (dt.type(lr) * gW).astype(dt)).astype(dt)
        b = (b - (dt.type(lr) * gb).astype(dt)).astype(dt)
        out.append(harness.StepResult(loss, gW, gb, W, b))
    return out


@harness.implementation("t-long-sequential", framework="numpy", default=False)
def sequential(X, y, W, b, *, lr, reduction, steps):  # type: ignore[no-untyped-def]
    """A correct step whose every reduction over N is summed in the data's order in the dtype."""
    return _step(X, y, W, b, lr, reduction, steps, _seq)


@harness.implementation("t-long-pairwise", framework="numpy", default=False)
def pairwise(X, y, W, b, *, lr, reduction, steps):  # type: ignore[no-untyped-def]
    """A correct step whose every reduction over N is summed pairwise in the dtype."""
    return _step(X, y, W, b, lr, reduction, steps, _pairwise)


@harness.implementation("t-long-sum-for-mean", framework="numpy", correct=False, dtypes=("float16", "bfloat16"))
def sum_for_mean(X, y, W, b, *, lr, reduction, steps):  # type: ignore[no-untyped-def]
    """The bug: the gradient of the sum where the reduction is the mean (N K times too large)."""
    return _step(X, y, W, b, lr, reduction, steps, _seq, scale_by_count=False)


def _case(n: int, dtype: str) -> harness.Case:
    rng = np.random.default_rng(7)
    X = rng.normal(size=(n, 2)) + 1
    y = rng.normal(size=(n, 1)) + 3
    return harness.case_from_arrays(f"long-{dtype}-{n}", X, y, np.zeros((2, 1)), np.zeros(1), lr=1e-3, reduction="mean",
                                    dtypes=(dtype,))


@pytest.mark.parametrize("n", [2048, 4096])
def test_float16_long_reduction_grades_a_wrong_gradient_disagree(n: int) -> None:
    case = _case(n, "float16")
    recs = harness.verify([case], ["t-long-sum-for-mean"], dtypes=["float16"])
    verdicts = {r.quantity: r.verdict for r in recs}
    assert verdicts == {"loss": "agree", "grad_W": "disagree", "grad_b": "disagree", "W": "disagree", "b": "disagree"}, \
        [(r.quantity, r.verdict, r.message[:160]) for r in recs]
    assert not any("vacuous" in r.message for r in recs)


@pytest.mark.parametrize("impl", ["numpy-hand", "torch-seed", "t-long-sequential", "t-long-pairwise"])
@pytest.mark.parametrize("n", [2048, 4096])
def test_float16_long_reduction_correct_orders_pass(impl: str, n: int) -> None:
    recs = harness.verify([_case(n, "float16")], [impl], dtypes=["float16"])
    assert recs and not failures(recs, strict=False), [(r.quantity, r.verdict, r.message[:200]) for r in failures(recs)]
    assert all(r.bound_ratio is not None and r.bound_ratio <= 1 for r in recs if r.verdict != "overflow")


def test_bfloat16_batch_of_512_grades_a_wrong_gradient_disagree() -> None:
    """bfloat16 from N = 253 rows: a batch of 512 (m = 515, (1 - u)^-515 - 1 = 6.5)."""
    case = _case(512, "bfloat16")
    good = harness.verify([case], ["torch-seed"], dtypes=["bfloat16"])
    assert good and not failures(good), [(r.quantity, r.verdict, r.message[:200]) for r in failures(good)]
    pytest.importorskip("ml_dtypes")
    bad = harness.verify([case], ["t-long-sum-for-mean"], dtypes=["bfloat16"])
    assert {r.quantity: r.verdict for r in bad if r.quantity != "loss"} == \
        {"grad_W": "disagree", "grad_b": "disagree", "W": "disagree", "b": "disagree"}
