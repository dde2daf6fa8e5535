"""The models path's bound of the seed ``dL/dF = 2c R`` counts the underflow of every association of its scalar
factors (harness.models.bounds, ``mul`` of a scalar constant; helper-128).

A correct NumPy linear-model step that takes the mean first and then doubles it, ``2 fl(c R)``, holds
``fl(c R)`` rounded into the subnormal range and then doubled: with ``X = 2**60`` in every row, ``W = b = 0`` and a
residual of 666 least subnormals (float32, mean, N = 1024), ``fl(c R) = 2**-149`` and grad_W = 2048 * 2**-89 against
the exact 1332 * 2**-89. The bound counted one ``eta`` per element and this step was ``disagree`` at 1.40 times it
(the linear path's same bug: commit d31d07a). The same data in float64 (``X = 2**500``, residual of 666 * 2**-1074),
the sum reduction and the other associations (scale first, ``c (2R)``, torch's ``2R / (N K)``) agree; twice the exact
gradient is still caught.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import harness
from harness.cases import case_from_arrays
from harness.implementations.registry import Implementation
from harness.models.spec import ModelSpec
from tests.steps import model_seed_step

LINEAR = ModelSpec()
N = 1024

#: the seed's evaluations: the scale first ``(2c) R``, a mean then doubled ``2 fl(c R)``, ``c (2 R)``, torch's
#: ``2 R / (N K)``
SCALINGS = ("first", "mean-then-doubled", "c-last", "torch")


def scaled_seed(scaling: str) -> Any:
    """The seed ``2 c R`` evaluated as ``scaling``."""

    def seed(R: Any, n: int, k: int, reduction: str) -> Any:
        dt = R.dtype.type
        c = 1.0 if reduction == "sum" else 1.0 / (n * k)
        if scaling == "first":
            return dt(2 * c) * R
        if scaling == "mean-then-doubled":
            return dt(2) * (dt(c) * R)
        if scaling == "c-last":
            return dt(c) * (dt(2) * R)
        return (dt(2) * R) / dt(1 if reduction == "sum" else n * k)

    return seed


def scaled_step(scaling: str, wrong: float = 1.0) -> Implementation:
    """A linear-model SGD step by hand in NumPy with the seed evaluated as ``scaling`` (``wrong`` scales the result:
    a mutant)."""
    return model_seed_step(f"numpy-seed-{scaling}", scaled_seed(scaling), wrong)


def subnormal_residual_case(dtype: str, reduction: str) -> Any:
    x, tiny = (2.0**60, 2.0**-149) if dtype == "float32" else (2.0**500, 2.0**-1074)
    X, y = np.full((N, 1), x), np.full((N, 1), -666 * tiny)
    return case_from_arrays("subnormal-residual", X, y, model=LINEAR, params={"W": [[0.0]], "b": [0.0]}, lr=2.0**-4,
                            dtypes=[dtype], reduction=reduction)


def grad_records(dtype: str, reduction: str, scaling: str, wrong: float = 1.0) -> list[Any]:
    recs = harness.verify([subnormal_residual_case(dtype, reduction)], [scaled_step(scaling, wrong)], dtypes=[dtype])
    return [r for r in recs if r.quantity in ("grad_W", "grad_b")]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("scaling", SCALINGS)
def test_every_association_of_the_seed_scale_agrees(dtype, reduction, scaling):
    recs = grad_records(dtype, reduction, scaling)
    assert len(recs) == 2
    for r in recs:
        assert r.verdict not in ("disagree", "error", "invalid-input"), (r.quantity, r.verdict, r.message)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_twice_the_gradient_is_still_caught(dtype):
    recs = grad_records(dtype, "mean", "mean-then-doubled", wrong=2.0)
    assert {r.quantity for r in recs if r.verdict == "disagree"} == {"grad_W", "grad_b"}


def test_chain_underflow_counts_the_worst_association_by_hand():
    """``2 c R`` with c = 2**-10 (float32, gradual underflow): ``(2c) R`` one eta, ``c (2R)`` one (``2R`` exact),
    ``2 fl(c R)`` two; a subnormal c = 2**-140 adds its own rounding carried by ``2 |R|`` (``2 fl(c)`` exact); under the sum (c = 1) the
    doubling is exact and the one eta of ``fl(2 R)``'s association is the count. Flush-to-zero: eta is the smallest
    normal number."""
    from fractions import Fraction

    from harness.bounds import Regime
    from harness.floats import FLOAT16, FLOAT32
    from harness.models.bounds import chain_underflow

    reg, mag = Regime(FLOAT32, False), np.array([[2.0**60, 3.0]])
    eta, grow = reg.eta, reg.growth(2)
    assert eta == 2.0**-150
    np.testing.assert_array_equal(chain_underflow([Fraction(2), Fraction(1, 1024)], mag, reg), [[2 * eta * grow] * 2])
    np.testing.assert_array_equal(chain_underflow([Fraction(2), Fraction(1)], mag, reg), [[eta * grow] * 2])
    c = Fraction(1, 2**140)  # subnormal in float32: Regime.scale_underflow counts its rounding (eta)
    got = chain_underflow([Fraction(2), c], mag, reg)
    # c's own rounding, eta carried by 2 |R| in every association (2 fl(c) is exact: no eta of its own), and 2 fl(c R)'s
    # two etas (the other associations one)
    np.testing.assert_allclose(got, eta * grow * (2 + 2 * mag), rtol=1e-15)
    ftz = Regime(FLOAT16, True)
    assert chain_underflow([Fraction(2), Fraction(1, 48)], np.array([1.0]), ftz)[0] == 2 * 2.0**-14 * ftz.growth(2)


def test_the_plan_declares_the_seed_factors():
    from fractions import Fraction

    from harness.models.plan import build_plan

    # the mean's c = 1/(N K) as its two divisions 1/N and 1/K (helper-130: 2 R / N / K)
    for red, c, factors in (("mean", Fraction(1, 6), (2, Fraction(1, 3), Fraction(1, 2))), ("sum", Fraction(1), (2, 1))):
        g = build_plan(LINEAR, 3, 1, 2, red, 0.1)
        seeds = [n for n in g.nodes if n.op == "const" and n.role == "backward"]
        assert [tuple(n.attrs["factors"]) for n in seeds] == [factors] and seeds[0].attrs["value"] == 2 * c
