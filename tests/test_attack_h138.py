"""helper-138's attack on the models path: correct steps that apply the seed's factors after the weight gradient's
product.

The gradients are linear in the seed ``dL/dF = 2c R``, so a correct step may apply its factors anywhere in the backward
pass: NumPy's ``2c (X^T R)`` (:func:`tests.steps.np_step`'s form) or, under a mean taken first, ``2 (X^T ((R / N) /
K))``. A product ``X_ij R_i`` that rounds in the subnormal range then errs by ``eta`` and the 2 doubles it, where the
plan's ``X^T (2c R)`` counts one ``eta`` per product (and none where its products are exact: ``2 R X`` a float, ``R X``
a tie). Before :func:`harness.bounds.seed_carry`:

- models path (any model; the linear spec here): ``disagree`` at ``inf`` times the bound (sum, float32 and float64: the
  plan's products exact) and 2.0 times it (mean, N = 3 and 5, float32);
- linear path: ``disagree`` at 1.33 to 1.67 times the bound (mean, N = 2 to 5, float32; ``max(1, |s|)`` is 1 there).

Both now scale the backward's underflows by the seed's carry (2); twice the gradient is still ``disagree``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, target
from hypothesis import strategies as st

import harness
from harness.bounds import seed_carry, seed_factors
from harness.cases import case_from_arrays
from harness.implementations import StepResult
from harness.implementations.registry import Implementation
from harness.models import ModelStepResult
from harness.models.spec import ModelSpec

LINEAR = ModelSpec()
BAD = ("disagree", "error", "invalid-input")
#: ``(exponent of R's unit, exponent of X)``: ``R X`` lands at ``(odd) eta`` (float32: ``eta = 2**-150``)
AT = {"float32": (-100, -50), "float64": (-1000, -75)}


def late_core(X: Any, y: Any, W: Any, b: Any, lr: float, reduction: str, wrong: float) -> tuple[Any, ...]:
    """One linear step with the seed's factors after the products: ``2c (X^T R)`` under the sum, ``2 (X^T ((R / N) /
    K))`` under the mean (the mean first); ``wrong`` scales both gradients."""
    dt = X.dtype.type
    n, k = y.shape
    R = (X @ W + b) - y
    Rs = R if reduction == "sum" else (R / dt(n)) / dt(k)
    loss = np.sum(Rs * R, dtype=X.dtype)
    gW = (dt(2) * (X.T @ Rs)) * dt(wrong)
    gb = (dt(2) * np.sum(Rs, axis=0, dtype=X.dtype)) * dt(wrong)
    return loss, gW, gb, W - dt(lr) * gW, b - dt(lr) * gb


def models_step(wrong: float = 1.0) -> Implementation:
    def step(X: Any, y: Any, params: dict[str, Any], *, model: Any, lr: float, reduction: str, steps: int) -> Any:
        W, b = params["W"], params["b"]
        out = []
        for _ in range(steps):
            loss, gW, gb, W, b = late_core(X, y, W, b, lr, reduction, wrong)
            out.append(ModelStepResult(loss=loss, grads={"W": gW, "b": gb}, params={"W": W, "b": b}))
        return out

    return Implementation(name=f"numpy-late-seed-models-{wrong}", framework="numpy", fn=step, models=("any",))


def linear_step(wrong: float = 1.0) -> Implementation:
    def step(X: Any, y: Any, W: Any, b: Any, *, lr: float, reduction: str, steps: int) -> Any:
        out = []
        for _ in range(steps):
            loss, gW, gb, W, b = late_core(X, y, W, b, lr, reduction, wrong)
            out.append(StepResult(loss, gW, gb, W, b))
        return out

    return Implementation(name=f"numpy-late-seed-linear-{wrong}", framework="numpy", fn=step)


def late_case(dtype: str, path: str, reduction: str, n: int, units: Any, xexp: int | None = None) -> Any:
    """``W = b = 0`` and ``y = -R`` (R exact), ``R_i = units_i 2**a``, X a constant column ``2**xexp``."""
    a, xe = AT[dtype]
    X = np.full((n, 1), 2.0 ** (xe if xexp is None else xexp))
    y = -np.asarray(units, dtype=np.float64).reshape(n, 1) * 2.0**a
    kw: dict[str, Any] = (dict(model=LINEAR, params={"W": [[0.0]], "b": [0.0]}) if path == "models"
                          else dict(W=[[0.0]], b=[0.0]))
    return case_from_arrays("late-seed", X, y, lr=2.0**-4, dtypes=[dtype], reduction=reduction, **kw)


def grad_records(case: Any, impl: Implementation, dtype: str) -> list[Any]:
    recs = [r for r in harness.verify([case], [impl], dtypes=[dtype]) if r.quantity.startswith("grad_")]
    assert recs
    return recs


def ties(reduction: str, n: int) -> list[int]:
    """Residuals whose products with X are ``(4j + 1) eta`` after the mean (a tie rounded down by ``eta``)."""
    return [(n if reduction == "mean" else 1) * (4 * j + 1) for j in range(1, n + 1)]


def test_the_seed_carry_is_2():
    for red in ("sum", "mean"):
        for n, k in ((1, 1), (3, 2), (1, 5)):
            assert seed_carry(seed_factors(red, n, k)) == 2.0


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("path", ["models", "linear"])
@pytest.mark.parametrize(("reduction", "n"), [("sum", 1), ("sum", 3), ("mean", 2), ("mean", 3), ("mean", 5)])
def test_the_seed_applied_after_the_products_agrees(dtype, path, reduction, n):
    # models: was inf x the bound (sum), 2.0 x (mean, float32); linear: 1.33 - 1.67 x (mean, float32, N = 2 - 5)
    impl = models_step() if path == "models" else linear_step()
    recs = grad_records(late_case(dtype, path, reduction, n, ties(reduction, n)), impl, dtype)
    assert all(r.verdict not in BAD for r in recs), [(r.quantity, r.verdict, r.bound_ratio) for r in recs]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("path", ["models", "linear"])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_twice_the_late_seed_gradient_is_still_caught(dtype, path, reduction):
    impl = models_step(2.0) if path == "models" else linear_step(2.0)
    recs = grad_records(late_case(dtype, path, reduction, 3, ties(reduction, 3)), impl, dtype)
    assert "grad_W" in {r.quantity for r in recs if r.verdict == "disagree"}, [(r.quantity, r.verdict, r.bound_ratio) for r in recs]


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(dtype=st.sampled_from(["float32", "float64"]), path=st.sampled_from(["models", "linear"]),
       reduction=st.sampled_from(["sum", "mean"]), units=st.lists(st.integers(1, 2**12), min_size=1, max_size=5),
       dx=st.integers(-3, 3))
def test_search_the_late_seed_for_a_false_alarm(dtype, path, reduction, units, dx):
    """Residuals of ``units`` times ``2**a`` and X near ``2**(-150 - a)`` (float64: ``-1075 - a``): products around
    the subnormal range, in both paths and reductions."""
    n = len(units)
    xe = AT[dtype][1] + dx
    impl = models_step() if path == "models" else linear_step()
    recs = grad_records(late_case(dtype, path, reduction, n, units, xe), impl, dtype)
    target(min(max(r.bound_ratio or 0.0 for r in recs), 1e30), label="late seed error / bound")
    assert all(r.verdict not in BAD for r in recs), [(r.quantity, r.verdict, r.bound_ratio) for r in recs]
