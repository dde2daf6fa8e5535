"""helper-133's review of the round's chain-underflow, results-footer and case-file commits.

- A declared product chain (``x1*a*b``) on exact dyadic data was graded exact only where :func:`chain_underflow`
  counted no underflow in any association; that count asks a partial product's least magnitude to be ``2**(|t| - 1)``
  times the smallest normal number, so exact data with ``x1 a = 2**-126`` (float32's smallest normal number, exact in
  every association) or with a factor 0 lost its exactness: a gradient 1 ulp off agreed (0.29 and 0.4 of the bound)
  where it had disagreed before dfe01fa. :func:`harness.models.bounds.chain_exact` says from the factors' bits where
  every association is exact.
- An expression's constant powers were sized from a decimal literal's nearest binary float (53 bits), while SymPy reads
  the literal as its decimal value: ``x1*1.01**400`` (1.01**400 is about 53.7) no longer loaded after 48248fc.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import harness
from harness.cases import case_from_arrays
from harness.implementations.registry import Implementation
from harness.models import ModelStepResult
from harness.models.spec import ModelSpec

X1AB = ModelSpec(kind="expression", expression="x1*a*b", parameters=("a", "b"))


def x1ab_step(wrong: float) -> Implementation:
    """``x1*a*b`` as the plan evaluates it, ``(a b) x1``, with ``grad_a`` scaled by ``wrong`` (the sum reduction)."""

    def step(X: Any, y: Any, params: dict[str, Any], *, model: Any, lr: float, reduction: str, steps: int) -> Any:
        dt = X.dtype.type
        x = X[:, 0:1]
        ps = {p: np.asarray(v, dtype=X.dtype) for p, v in params.items()}
        out = []
        for _ in range(steps):
            a, b = ps["a"], ps["b"]
            R = (a * b) * x - y
            loss = np.sum(R * R, dtype=X.dtype)
            S = np.sum((dt(2) * R) * x, dtype=X.dtype)
            g = {"a": np.asarray(S * b * dt(wrong), dtype=X.dtype), "b": np.asarray(S * a, dtype=X.dtype)}
            ps = {q: np.asarray(ps[q] - dt(lr) * g[q], dtype=X.dtype) for q in ps}
            out.append(ModelStepResult(loss=loss, grads=g, params=dict(ps)))
        return out

    return Implementation(name="numpy-x1ab", framework="numpy", fn=step, models=("any",))


def grad_a(dtype: str, x: float, y: float, a: float, b: float, wrong: float) -> Any:
    case = case_from_arrays("chain-exact", np.full((2, 1), x), np.full((2, 1), y), model=X1AB, params={"a": a, "b": b},
                            lr=2.0**-4, dtypes=[dtype], reduction="sum")
    (rec,) = [r for r in harness.verify([case], [x1ab_step(wrong)], dtypes=[dtype]) if r.quantity == "grad_a"]
    return rec


ULP = {"float32": 2.0**-23, "float64": 2.0**-52}
#: x1, a, b with x1 a the smallest normal number and F = x1 a b = 1: exact in every association
BAND = {"float32": (2.0**-101, 2.0**-25, 2.0**126), "float64": (2.0**-1001, 2.0**-21, 2.0**1022)}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_gradient_one_ulp_off_on_exact_data_at_the_smallest_normal_product_is_caught(dtype):
    x, a, b = BAND[dtype]
    assert grad_a(dtype, x, 0.0, a, b, 1.0).verdict == "agree"
    for wrong in (1 + ULP[dtype], 1 - ULP[dtype] / 2):
        rec = grad_a(dtype, x, 0.0, a, b, wrong)
        assert rec.verdict == "disagree", (wrong, rec.verdict, rec.bound_ratio)  # was agree at 0.29 of the bound


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_gradient_one_ulp_off_with_a_zero_factor_is_caught(dtype):
    assert grad_a(dtype, 2.0**-10, 1.0, 0.0, 2.0**100, 1.0).verdict == "agree"
    rec = grad_a(dtype, 2.0**-10, 1.0, 0.0, 2.0**100, 1 + ULP[dtype])
    assert rec.verdict == "disagree", (rec.verdict, rec.bound_ratio)  # was agree at 0.4 of the bound


def test_chain_exact_by_hand():
    from harness.floats import FLOAT32
    from harness.models.bounds import chain_exact

    def exact(*vals: float, errs: tuple[float, ...] | None = None, ftz: bool = False) -> bool:
        es = [np.asarray(e) for e in (errs or (0.0,) * len(vals))]
        return bool(chain_exact([np.asarray(v) for v in vals], es, FLOAT32, ftz))

    assert exact(2.0**-101, 2.0**-25, 2.0**126)  # partial products 2**-126 at least: on the grid
    assert exact(2.0**-100, 2.0**-49, 2.0**100)  # x1 a = 2**-149, the least subnormal: exact with gradual underflow
    assert not exact(2.0**-100, 2.0**-49, 2.0**100, ftz=True)  # ... flushed with flush-to-zero
    assert not exact(2.0**-100, 2.0**-50, 2.0**101)  # x1 a = 2**-150 rounds
    assert not exact(3 * 2.0**-101, 2.0**-25, 2.0**126, errs=(0.0, 2.0**-60, 0.0))  # a factor not known exactly
    assert exact(0.0, 2.0**-100, 2.0**-100)  # a factor 0: every association is 0
    assert not exact(0.0, 2.0**100, 2.0**100)  # (a b = inf, inf 0 = NaN)
    assert not exact(2.0**-10, 2.0**100, 2.0**100)  # a b overflows
    assert not exact(np.inf, 1.0, 1.0) and not exact(np.nan, 1.0, 1.0)


@pytest.mark.parametrize("text", ["x1*1.01**400", "x1*1.001**1000", "x1*0.9**5000", "x1*0.1**400", "a*x1^2*1.5**2000"])
def test_a_decimal_constant_power_is_sized_as_sympy_reads_it(text):
    from harness.models.symbolic import parse_expression

    parse_expression(text, ("a",), 1)  # was ValueError: "has more than 20,000 bits"


@pytest.mark.parametrize("text", ["x1*9**9**9", "x1*0.1**100000", "x1*1.000001**10000000"])
def test_a_constant_power_of_too_many_bits_is_still_refused(text):
    from harness.models.symbolic import parse_expression

    with pytest.raises(ValueError, match="more than 20,000 bits"):
        parse_expression(text, ("a",), 1)
