"""helper-142's attack on the loosenings of 3bc35b8 (the seed's carry) and c1a39ec (a scalar multiplied into the sum
over the rows): wrong steps that the new terms let agree.

**A product chain's underflow is at most the partial product itself.** :func:`harness.bounds.chain_underflow` counted
``eta`` (half the subnormal spacing) for every subset of a chain whose product may round in the subnormal range,
carried by the magnitudes of the leaves outside it. A rounding to nearest errs by at most ``|q|`` too (0 is a float;
a flush to zero errs by ``|q|``), so where the partial product ``q`` lies far below ``eta`` its rounding errs by
``|q|``, not ``eta``: ``(G b) x1`` of ``x1*a*b`` with ``G b = 2**-163`` (float32, ``eta = 2**-150``) rounds to 0 and
errs by ``2**-163 x1``, where the count said ``2**-150 x1``, 2**13 times more. The row's chain is what autograd computes
for the forward ``(x1 a) b`` (the adjoint of ``x1 a`` is ``G b``), so the plan's exact ``b sum(G x1)`` must allow the
value 0 (a correct step), but not 8192 times that: the plan's ``b sum(G x1)`` with the sum reduction taken for the
mean (16 times the gradient) agreed at 0.0009 of the bound at 78fced3 (float32), and ``grad_a`` 2**40 times too large
at 1e-56 of it (float64). Now ``min(eta, |q|)`` per rounding: the bound is twice ``|grad_a|`` there (the correct step
at 0.50, the 16 times gradient disagree at 7.5, 2**40 times at 5.5e11). (At f51f87b, before c1a39ec, the correct
step was ``disagree`` at infinitely many times its bound of 0.)
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import numpy as np
import pytest

import harness
from harness.bounds import Regime, chain_underflow
from harness.cases import case_from_arrays
from harness.floats import FLOAT32, FLOAT64
from harness.implementations import StepResult
from harness.implementations.registry import Implementation
from harness.models import ModelStepResult
from harness.models.spec import ModelSpec

BAD = ("disagree", "error", "invalid-input")
X1AB = ModelSpec(kind="expression", expression="x1*a*b", parameters=("a", "b"))


def x1ab_step(assoc: str = "gb-first", wrong: float = 1.0, mean_as_sum: bool = False) -> Implementation:
    """``x1*a*b`` forward as ``(x1 a) b``; ``grad_a = sum((G b) x1)`` as autograd computes it for that forward (the
    adjoint of ``x1 a`` is ``G b``: ``"gb-first"``), or the plan's ``b sum(G x1)`` (``"plan"``); ``grad_b = sum(G (x1
    a))``. ``wrong`` scales ``grad_a``; ``mean_as_sum``: the bug of a seed ``2 R`` under the mean (the sum's gradient,
    N times the mean's)."""

    def step(X: Any, y: Any, params: dict[str, Any], *, model: Any, lr: float, reduction: str, steps: int) -> Any:
        dt = X.dtype.type
        x = X[:, 0:1]
        n = x.shape[0]
        ps = {p: np.asarray(v, dtype=X.dtype) for p, v in params.items()}
        out = []
        for _ in range(steps):
            a, b = ps["a"], ps["b"]
            xa = x * a
            R = xa * b - y
            c = dt(1) if reduction == "sum" else dt(1.0 / n)
            loss = c * np.sum(R * R, dtype=X.dtype)
            G = (dt(2) * R) if (reduction == "sum" or mean_as_sum) else dt(2.0 / n) * R
            ga = np.sum((G * b) * x, dtype=X.dtype) if assoc == "gb-first" else b * np.sum(G * x, dtype=X.dtype)
            g = {"a": ga * dt(wrong), "b": np.sum(G * xa, dtype=X.dtype)}
            g = {q: np.asarray(v, dtype=X.dtype) for q, v in g.items()}
            ps = {q: np.asarray(ps[q] - dt(lr) * g[q], dtype=X.dtype) for q in ps}
            out.append(ModelStepResult(loss=loss, grads=g, params=dict(ps)))
        return out

    return Implementation(name=f"numpy-x1ab-{assoc}-{wrong}-{mean_as_sum}", framework="numpy", fn=step, models=("any",))


def tiny_gb_case(dtype: str, reduction: str, rows: int = 16) -> Any:
    """``a = 0`` (the prediction 0, ``R = -y`` exact), ``y = 2**ey``, ``x1 = 2**ex``, ``b = 2**eb``; ``G = -2 y c``
    (``c = 1/16`` under the mean of 16 rows) and ``G b`` far below ``eta``: the exact ``grad_a = b sum(G x1)`` is a
    power of 2 (float32: ``-2**-119``, a normal number; float64: ``-2**-1020``), ``fl(G b) = 0``."""
    ey, ex, eb = {"float32": (-60, 40, -100), "float64": (-300, 280, -1000)}[dtype]
    X = np.full((rows, 1), 2.0**ex)
    y = np.full((rows, 1), 2.0**ey)
    return case_from_arrays("x1ab-tiny-gb", X, y, model=X1AB, params={"a": 0.0, "b": 2.0**eb}, lr=2.0**-4,
                            dtypes=[dtype], reduction=reduction)


def grad_a(case: Any, impl: Implementation, dtype: str) -> Any:
    (rec,) = [r for r in harness.verify([case], [impl], dtypes=[dtype]) if r.quantity == "grad_a"]
    return rec


def test_the_exact_gradient_of_the_tiny_case():
    # float32, the mean of 16 rows: G = 2 (-2**-60) / 16 = -2**-63, G b = -2**-163, grad_a = 16 (-2**-163) 2**40 = -2**-119
    rec = grad_a(tiny_gb_case("float32", "mean"), x1ab_step(), "float32")
    assert float(rec.exact.rstrip(".")) == pytest.approx(-(2.0**-119), rel=1e-15)
    assert float(rec.computed) == 0.0  # fl(G b) = 0: the correct step returns 0
    rec = grad_a(tiny_gb_case("float32", "mean"), x1ab_step("plan"), "float32")
    assert float(rec.computed) == -(2.0**-119) and rec.verdict == "agree"  # the plan's b sum(G x1) is exact


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_the_adjoint_times_a_scalar_rounded_to_zero_agrees(dtype, reduction):
    # the correct step's grad_a is 0 (every row's G b rounds to 0): an error of |grad_a|, all of it
    rec = grad_a(tiny_gb_case(dtype, reduction), x1ab_step(), dtype)
    assert rec.verdict not in BAD, (rec.verdict, rec.bound_ratio)


def test_the_sum_for_the_mean_is_caught_where_the_rows_products_round_to_zero():
    # 16 times the gradient (error 15 |grad_a|); the count allowed 16 rows x 2 x eta x1 = 2**-105, 2**14 |grad_a|:
    # agree at 0.0009 of the bound at 78fced3; disagree at 7.5 now
    rec = grad_a(tiny_gb_case("float32", "mean"), x1ab_step("plan", mean_as_sum=True), "float32")
    assert rec.verdict == "disagree", (rec.verdict, rec.bound_ratio)


@pytest.mark.parametrize("wrong", [2.0**40, -(2.0**20), 64.0])
def test_a_gradient_many_times_too_large_is_caught_float64(wrong):
    # float64, sum: G b = 2 (-2**-300) 2**-1000 = -2**-1299, far below eta = 2**-1075: the count allowed 16 x 2 x 2**-1075
    # x 2**280 = 2**-790 for a gradient of -2**-1015 (2**40 times it agreed at 1e-56 of the bound at 78fced3; 64 times
    # it is disagree at 31.5 now)
    rec = grad_a(tiny_gb_case("float64", "sum"), x1ab_step("plan", wrong), "float64")
    assert rec.verdict == "disagree", (rec.verdict, rec.bound_ratio)


@pytest.mark.parametrize("fmt", [FLOAT32, FLOAT64])
def test_a_chains_count_is_at_most_its_partial_products(fmt):
    """``chain_underflow([], [g, x, b])`` for ``g b`` far below ``eta``: the subsets ``{g, b}`` (at most ``|g b|``,
    carried by ``x``) and ``{g, x, b}`` ``(G b) x`` (at most ``|g b x|`` plus the first's): about ``2 |g x b|``,
    by hand; the count was ``eta x`` (2**13 and 2**224 times more)."""
    reg = Regime(fmt, False)
    g, x, b = (2.0**-63, 2.0**40, 2.0**-100) if fmt is FLOAT32 else (2.0**-299, 2.0**280, 2.0**-1000)
    count = float(chain_underflow([], [np.array(g), np.array(x), np.array(b)], reg))
    eta = Fraction(1, 2 ** (150 if fmt is FLOAT32 else 1075))
    assert eta * Fraction(x) > 2**12 * Fraction(g) * Fraction(x) * Fraction(b)
    assert g * x * b <= count <= 4 * g * x * b, (count, g * x * b)


# ---------------------------------------------------------------------------------------------------------------
# the same for one rounding of the plan's own product: an adjoint far below eta, then multiplied by large inputs.
# ``delta_1 = (delta_2 W2^T) relu'(z1)`` counted ``eta`` (twice: the seed's carry) for its product of ``2**-159``, and
# again for the product by relu' = 1, and ``grad_W1 = X^T delta_1`` carried that by ``X = 2**100``: a bound of 2048
# times ``|grad_W1|`` (1024 times at f51f87b); the wrong gradients below agreed at 0.0073 (16 times) and 0.00098
# (negated) at 78fced3. Now ``min(eta, |q|)`` per rounding (Regime.rounding_underflow) and none for a product by an
# exact integer: the correct step (0, all of |grad_W1|) at 0.99999893, the wrong ones disagree at 15.0 and 2.0.
# (float64's allowance cannot go below its smallest subnormal, a float64 bound: the same float64 case stays loose.)

MLP = ModelSpec(kind="mlp", hidden=(1,), activation="relu")


def mlp_step(wrong: float | None = None) -> Implementation:
    """A one-unit ReLU MLP's step as ``numpy-model`` computes it (``delta_1 = (delta_2 W2^T) relu'(z1)``,
    ``grad_W1 = X^T delta_1``), or with ``wrong``: ``grad_W1`` as ``wrong ((X^T delta_2) W2^T)`` (the products
    reassociated, the gradient ``wrong`` times too large: the seed applied twice is ``wrong = 2``)."""

    def step(X: Any, y: Any, params: dict[str, Any], *, model: Any, lr: float, reduction: str, steps: int) -> Any:
        dt = X.dtype.type
        ps = {p: np.asarray(v, dtype=X.dtype) for p, v in params.items()}
        out = []
        for _ in range(steps):
            z1 = X @ ps["W1"] + ps["b1"]
            h1 = np.maximum(z1, dt(0))
            F = h1 @ ps["W2"] + ps["b2"]
            R = F - y
            c = dt(1) if reduction == "sum" else dt(1.0 / R.size)
            loss = c * np.sum(R * R, dtype=X.dtype)
            d2 = dt(2) * c * R
            d1 = (d2 @ ps["W2"].T) * (z1 > 0).astype(X.dtype)
            g = {"W2": h1.T @ d2, "b2": np.sum(d2, axis=0, dtype=X.dtype), "W1": X.T @ d1, "b1": np.sum(d1, axis=0, dtype=X.dtype)}
            if wrong is not None:
                g["W1"] = ((X.T @ d2) @ ps["W2"].T) * dt(wrong)
            g = {q: np.asarray(v, dtype=X.dtype) for q, v in g.items()}
            ps = {q: np.asarray(ps[q] - dt(lr) * g[q], dtype=X.dtype) for q in ps}
            out.append(ModelStepResult(loss=loss, grads=g, params=dict(ps)))
        return out

    return Implementation(name=f"numpy-mlp-1-{wrong}", framework="numpy", fn=step, models=("any",))


def tiny_delta_case(dtype: str, rows: int = 4) -> Any:
    """``X = 2**ex``, ``W1 = 2**-ex`` (``z1 = 1``, ``h1 = 1``), ``W2 = 2**ew``, ``b1 = b2 = 0``, ``y = F - 2**er``
    (``R = 2**er`` exact): ``delta_2 = 2**(er + 1)`` and ``delta_2 W2 = 2**(er + 1 + ew)`` far below eta (it rounds to 0),
    so the correct step's ``grad_W1`` is 0 and the exact one ``rows 2**(ex + er + 1 + ew)``, a normal number (float32:
    ``4 2**-59``; float64: ``4 2**-599``; ``y`` rounds ``F - R`` to ``-R``: the exact R is ``2**er + F``)."""
    ex, ew, er = {"float32": (100, -100, -60), "float64": (500, -1000, -100)}[dtype]
    X = np.full((rows, 1), 2.0**ex)
    F = 2.0**ew
    y = np.full((rows, 1), F - 2.0**er)
    return case_from_arrays("mlp-tiny-delta", X, y, model=MLP, params={"W1": [[2.0**-ex]], "b1": [0.0], "W2": [[F]], "b2": [0.0]},
                            lr=2.0**-4, dtypes=[dtype], reduction="sum")


def grad_w1(case: Any, impl: Implementation, dtype: str) -> Any:
    (rec,) = [r for r in harness.verify([case], [impl], dtypes=[dtype]) if r.quantity == "grad_W1"]
    return rec


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_an_adjoint_rounded_to_zero_before_large_inputs_agrees(dtype):
    rec = grad_w1(tiny_delta_case(dtype), mlp_step(), dtype)
    assert float(rec.computed) == 0.0
    assert float(rec.exact.rstrip(".")) == pytest.approx(4 * 2.0 ** (-59 if dtype == "float32" else -599), rel=1e-9)
    assert rec.verdict not in BAD, (rec.verdict, rec.bound_ratio)


@pytest.mark.parametrize(("dtype", "wrong"), [("float32", 16.0), ("float32", -1.0)])
def test_a_hidden_gradient_many_times_too_large_is_caught_where_its_adjoint_underflows(dtype, wrong):
    rec = grad_w1(tiny_delta_case(dtype), mlp_step(wrong), dtype)
    assert rec.verdict == "disagree", (rec.verdict, rec.bound_ratio)


# ---------------------------------------------------------------------------------------------------------------
# the linear path's seed: its per-element floor ``m eta`` (the scale's rounding under the mean), carried by |X|, where
# the seed 2 R / (N K) lies far below eta


def linear_seed_step(late: bool, wrong: float = 1.0) -> Implementation:
    """The linear model's step with the seed in the plan's order, ``X^T (fl(2c) R)`` (``late=False``), or the product
    first, ``2c (X^T R)`` (NumPy's ``2 * (X.T @ r) / n``, exact here); ``wrong`` scales grad_W (-1: the sign flipped)."""

    def step(X: Any, y: Any, W: Any, b: Any, *, lr: float, reduction: str, steps: int) -> Any:
        dt = X.dtype.type
        n, k = y.shape
        c = dt(1.0) if reduction == "sum" else dt(1.0 / (n * k))
        R = (X @ W + b) - y
        loss = c * np.sum(R * R, dtype=X.dtype)
        gW = (dt(2) * c) * (X.T @ R) if late else X.T @ ((dt(2) * c) * R)
        gW = gW * dt(wrong)
        gb = np.sum((dt(2) * c) * R, axis=0, dtype=X.dtype)
        return [StepResult(loss, gW, gb, W - dt(lr) * gW, b - dt(lr) * gb)]

    return Implementation(name=f"numpy-linear-seed-{late}-{wrong}", framework="numpy", fn=step)


def tiny_seed_case() -> Any:
    """float32, the mean of N = 16384 rows: ``X = 2**100``, ``R = 2**-140`` (W = b = 0, ``y = -R``): the seed
    ``2 R / N = 2**-153`` rounds to 0 (the plan's order gives grad_W = 0), the exact ``grad_W = 2 R X = 2**-39``."""
    n = 2**14
    return case_from_arrays("linear-tiny-seed", np.full((n, 1), 2.0**100), np.full((n, 1), -(2.0**-140)), [[0.0]], [0.0],
                            lr=2.0**-4, dtypes=["float32"], reduction="mean")


def grad_w(case: Any, impl: Implementation) -> Any:
    (rec,) = [r for r in harness.verify([case], [impl], dtypes=["float32"]) if r.quantity == "grad_W"]
    return rec


def test_the_linear_paths_seed_rounded_to_zero_agrees():
    rec = grad_w(tiny_seed_case(), linear_seed_step(False))
    assert float(rec.computed) == 0.0 and float(rec.exact.rstrip(".")) == 2.0**-39
    assert rec.verdict not in BAD, (rec.verdict, rec.bound_ratio)
    assert grad_w(tiny_seed_case(), linear_seed_step(True)).verdict == "agree"


@pytest.mark.parametrize("wrong", [-1.0, 4.0])
def test_a_linear_gradient_wrong_where_its_seed_underflows_is_caught(wrong):
    # the floor allowed 2 eta 2**100 per row, 2**-35 = 16 |grad_W|: the sign flipped agreed at 0.12, four times the
    # gradient at 0.18 (78fced3 and f51f87b alike)
    rec = grad_w(tiny_seed_case(), linear_seed_step(True, wrong))
    assert rec.verdict == "disagree", (rec.verdict, rec.bound_ratio)


def test_float64_products_below_float64s_range_keep_their_allowance():
    """float64, the mean of 256 rows, ``X = 2**-537``, ``R = 2**-533`` (W = b = 0): the seed ``2 R / 256 = 2**-540`` and
    each product ``X G = 2**-1077`` rounds to 0, so ``numpy-model``'s grad_W is 0 and the exact one ``256 2**-1077 =
    2**-1069`` (32 subnormals). The magnitude bound of those products, formed in float64, is 0 too: taken as the
    products' underflow it gave a bound of one subnormal (disagree at 32 during helper-142's work; the allowance is
    ``carry`` float64 subnormals wider, so a float64 step keeps its ``m eta``)."""
    import harness.models.numpy_steps  # noqa: F401 - registers numpy-model
    from harness.implementations.registry import REGISTRY

    n = 256
    case = case_from_arrays("f64-below-range", np.full((n, 1), 2.0**-537), np.full((n, 1), -(2.0**-533)), model=ModelSpec(),
                            params={"W": [[0.0]], "b": [0.0]}, lr=2.0**-4, dtypes=["float64"], reduction="mean")
    (rec,) = [r for r in harness.verify([case], [REGISTRY["numpy-model"]], dtypes=["float64"]) if r.quantity == "grad_W"]
    assert float(rec.computed) == 0.0 and float(rec.exact.rstrip(".")) == 2.0**-1069
    assert rec.verdict == "agree", (rec.verdict, rec.bound_ratio)


# ---------------------------------------------------------------------------------------------------------------
# c1a39ec's rows' chains with a scalar that is itself a product: x1*a*b*c's grad_c is the plan's (a b) sum(G x1), and
# the chain counted the forward's ``a b`` as one leaf, so ``sum(((G x1) a) b)`` (tests/test_attack_h138.py's
# x1abc_step, which c1a39ec covers for grad_a) was not covered where ``(G x1) a`` underflows and ``a b`` does not


def test_a_parameter_product_multiplied_into_the_rows_sum_factor_by_factor_agrees():
    """float32, one row: ``x1 = 1``, ``a = 2**-100``, ``b = 2**100``, ``c = 0`` (the prediction 0), ``y = -2**-61``:
    ``G = 2**-60`` and the plan's ``grad_c = (a b) sum(G x1) = 2**-60`` is exact (a bound of 0), while ``((G x1) a) b``
    rounds ``2**-160`` to 0: the correct step's ``grad_c`` is 0 (disagree at infinitely many times the bound before)."""
    from test_attack_h138 import X1ABC, x1abc_step

    case = case_from_arrays("x1abc-product-leaf", np.ones((1, 1)), np.full((1, 1), -(2.0**-61)), model=X1ABC,
                            params={"a": 2.0**-100, "b": 2.0**100, "c": 0.0}, lr=2.0**-4, dtypes=["float32"], reduction="sum")
    recs = {r.quantity: r for r in harness.verify([case], [x1abc_step()], dtypes=["float32"])}
    assert float(recs["grad_c"].computed) == 0.0 and float(recs["grad_c"].exact.rstrip(".")) == 2.0**-60
    assert all(r.verdict not in BAD for r in recs.values()), [(q, r.verdict, r.bound_ratio) for q, r in recs.items()]
