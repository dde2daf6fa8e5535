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


# ---------------------------------------------------------------------------------------------------------------
# an expression's parameter multiplied into its adjoint's sum over the rows (the plan's ``b sum(g x1)``)

X1AB = ModelSpec(kind="expression", expression="x1*a*b", parameters=("a", "b"))


def x1ab_step(assoc: str, wrong: float = 1.0) -> Implementation:
    """``x1*a*b`` as the plan's forward ``(a b) x1``, the sum reduction; ``grad_a = b sum(G x1)`` as the plan, or
    ``sum((G x1) b)`` (``"inside"``), or ``sum(G (x1 b))`` (``"regroup"``), ``grad_b`` likewise with ``a``; ``wrong``
    scales ``grad_a``."""

    def step(X: Any, y: Any, params: dict[str, Any], *, model: Any, lr: float, reduction: str, steps: int) -> Any:
        dt = X.dtype.type
        x = X[:, 0:1]
        ps = {p: np.asarray(v, dtype=X.dtype) for p, v in params.items()}
        out = []
        for _ in range(steps):
            a, b = ps["a"], ps["b"]
            R = (a * b) * x - y
            loss = np.sum(R * R, dtype=X.dtype)
            G = dt(2) * R
            g = {}
            for q, other in (("a", b), ("b", a)):
                g[q] = {"plan": np.sum(G * x, dtype=X.dtype) * other, "inside": np.sum((G * x) * other, dtype=X.dtype),
                        "regroup": np.sum(G * (x * other), dtype=X.dtype)}[assoc]
            g = {q: np.asarray(v * (dt(wrong) if q == "a" else dt(1)), dtype=X.dtype) for q, v in g.items()}
            ps = {q: np.asarray(ps[q] - dt(lr) * g[q], dtype=X.dtype) for q in ps}
            out.append(ModelStepResult(loss=loss, grads=g, params=dict(ps)))
        return out

    return Implementation(name=f"numpy-x1ab-{assoc}-{wrong}", framework="numpy", fn=step, models=("any",))


#: ``(exponent of b, exponent of G x1 / 5)``: ``(G x1) b = 5 eta`` per row, a tie rounded down by ``eta``
X1AB_AT = {"float32": (-99, -51), "float64": (-1000, -75)}


def x1ab_case(dtype: str, rows: int = 2) -> Any:
    """``a = 0``, ``x1 = 1``, ``y = -5 2**(e - 1)``: ``R = -y``, ``G x1 = 5 2**e`` and ``b = 2**eb`` with ``e + eb`` the
    exponent of ``eta``: the plan's ``b sum(G x1) = 5 rows eta`` is exact for an even number of rows (a bound of 0),
    while ``sum((G x1) b)`` rounds each row's tie ``5 eta`` to ``4 eta``."""
    eb, e = X1AB_AT[dtype]
    X = np.ones((rows, 1))
    y = np.full((rows, 1), -5 * 2.0 ** (e - 1))
    return case_from_arrays("x1ab-into-sum", X, y, model=X1AB, params={"a": 0.0, "b": 2.0**eb}, lr=2.0**-4,
                            dtypes=[dtype], reduction="sum")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("assoc", ["plan", "inside", "regroup"])
def test_a_parameter_multiplied_into_its_sum_over_the_rows_agrees(dtype, assoc):
    # "inside" and "regroup": disagree at inf times the bound before (the plan's product exact, a bound of 0)
    recs = grad_records(x1ab_case(dtype), x1ab_step(assoc), dtype)
    assert all(r.verdict not in BAD for r in recs), [(r.quantity, r.verdict, r.bound_ratio) for r in recs]


#: ``(exponent of G, of x1 / 5, of b)``: ``x1 b = 5 eta`` (a tie), ``G x1`` and ``b sum(G x1)`` exact and normal
BIG_G_AT = {"float32": (50, -30, -120), "float64": (500, -100, -975)}


def big_g_case(dtype: str, rows: int = 2) -> Any:
    """``a = 0``, ``y = -G / 2``: ``G = 2**eg``, ``x1 = 5 2**ex``, ``b = 2**eb``: the plan's ``b sum(G x1)`` is exact
    (a bound of 0 before), while ``sum(G (x1 b))`` rounds each row's ``x1 b`` by ``eta`` and ``G`` multiplies that."""
    eg, ex, eb = BIG_G_AT[dtype]
    X = np.full((rows, 1), 5 * 2.0**ex)
    y = np.full((rows, 1), -(2.0 ** (eg - 1)))
    return case_from_arrays("x1ab-big-g", X, y, model=X1AB, params={"a": 0.0, "b": 2.0**eb}, lr=2.0**-4,
                            dtypes=[dtype], reduction="sum")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_parameter_regrouped_with_the_rows_value_under_a_large_adjoint_agrees(dtype):
    # disagree at inf times the bound before, with the seed's carry too (its eta is not multiplied by G)
    recs = grad_records(big_g_case(dtype), x1ab_step("regroup"), dtype)
    assert all(r.verdict not in BAD for r in recs), [(r.quantity, r.verdict, r.bound_ratio) for r in recs]


@pytest.mark.parametrize(("dtype", "wrong"), [("float32", 2.0), ("float64", 3.0)])
def test_a_regrouped_gradient_several_times_too_large_is_still_caught(dtype, wrong):
    # (each row: 4 units computed, 5 exact, an allowance of about 2 (float64: 4, its eta the smallest subnormal): twice
    # is 3 units off, three times 7)
    recs = grad_records(big_g_case(dtype), x1ab_step("regroup", wrong), dtype)
    assert "grad_a" in {r.quantity for r in recs if r.verdict == "disagree"}, [(r.quantity, r.verdict, r.bound_ratio) for r in recs]


@pytest.mark.parametrize(("dtype", "wrong"), [("float32", 3.0), ("float64", 5.0)])
def test_several_times_the_gradient_multiplied_into_the_sum_is_still_caught(dtype, wrong):
    # (the exact grad_a is 10 eta; the allowance is about 10 eta: each row's chain (G, x1, b) may round twice, and the
    # seed's 2 may come last: twice the computed 8 eta is within it, three times is not (float32: 1.4 times the bound);
    # float64's eta is its smallest subnormal, twice the half spacing: three times is 0.7 of the bound, five 1.5)
    recs = grad_records(x1ab_case(dtype), x1ab_step("inside", wrong), dtype)
    assert "grad_a" in {r.quantity for r in recs if r.verdict == "disagree"}, [(r.quantity, r.verdict, r.bound_ratio) for r in recs]


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(dtype=st.sampled_from(["float32", "float64"]), assoc=st.sampled_from(["inside", "regroup"]),
       xs=st.lists(st.integers(1, 2**10), min_size=1, max_size=5), ex=st.integers(-40, 12), ea=st.integers(-40, 12),
       eb=st.integers(-40, 12), ma=st.integers(0, 31), mb=st.integers(1, 31), ys=st.integers(0, 30))
def test_search_the_parameter_into_the_sum_for_a_false_alarm(dtype, assoc, xs, ex, ea, eb, ma, mb, ys):
    """``x1 = xs 2**ex``, ``a = ma 2**ea``, ``b = mb 2**eb`` (exponents times 5, and times 25 in float64: products
    around the subnormal range) and ``y`` a relative ``2**-ys`` off the prediction."""
    f = 5 if dtype == "float32" else 25
    x = [v * 2.0 ** (ex * f) for v in xs]
    a, b = ma * 2.0 ** (ea * f), mb * 2.0 ** (eb * f)
    fmt = np.float32 if dtype == "float32" else np.float64
    y = [float(fmt(v * a * b * (1 + 2.0**-ys))) for v in x]
    tiny = float(np.finfo(fmt).smallest_subnormal)
    big = float(np.finfo(fmt).max) / 16
    if not all(v == 0 or tiny <= abs(v) <= big for v in [*x, *y, a, b]):
        return
    if max(abs(v) * max(a, b, 1.0) * max(1.0, abs(2 * (v * a * b - w))) for v, w in zip(x, y, strict=True)) > big:
        return  # (an association that overflows where the plan's does not is no correct evaluation: x1 a = inf)
    case = case_from_arrays("x1ab-search", np.array(x).reshape(-1, 1), np.array(y).reshape(-1, 1), model=X1AB,
                            params={"a": a, "b": b}, lr=2.0**-4, dtypes=[dtype], reduction="sum")
    recs = grad_records(case, x1ab_step(assoc), dtype)
    target(min(max(r.bound_ratio or 0.0 for r in recs), 1e30), label="into-sum error / bound")
    assert all(r.verdict not in BAD for r in recs), [(r.quantity, r.verdict, r.bound_ratio) for r in recs]


X1ABC = ModelSpec(kind="expression", expression="x1*a*b*c", parameters=("a", "b", "c"))


def x1abc_step(wrong: float = 1.0) -> Implementation:
    """``x1*a*b*c`` forward as ``((a b) c) x1``; every gradient's scalars multiplied into the rows' terms,
    ``grad_a = sum(((G x1) b) c)`` (the plan: ``b (c sum(G x1))``), the sum reduction; ``wrong`` scales ``grad_a``."""

    def step(X: Any, y: Any, params: dict[str, Any], *, model: Any, lr: float, reduction: str, steps: int) -> Any:
        dt = X.dtype.type
        x = X[:, 0:1]
        ps = {p: np.asarray(v, dtype=X.dtype) for p, v in params.items()}
        out = []
        for _ in range(steps):
            a, b, c = ps["a"], ps["b"], ps["c"]
            R = ((a * b) * c) * x - y
            loss = np.sum(R * R, dtype=X.dtype)
            G = dt(2) * R
            g = {"a": np.sum(((G * x) * b) * c, dtype=X.dtype) * dt(wrong), "b": np.sum(((G * x) * a) * c, dtype=X.dtype),
                 "c": np.sum(((G * x) * a) * b, dtype=X.dtype)}
            g = {q: np.asarray(v, dtype=X.dtype) for q, v in g.items()}
            ps = {q: np.asarray(ps[q] - dt(lr) * g[q], dtype=X.dtype) for q in ps}
            out.append(ModelStepResult(loss=loss, grads=g, params=dict(ps)))
        return out

    return Implementation(name=f"numpy-x1abc-{wrong}", framework="numpy", fn=step, models=("any",))


def x1abc_case() -> Any:
    """float32 data of a Hypothesis search (normal numbers; ``y`` a relative ``2**-10`` or so off the prediction):
    ``grad_a = sum(((G x1) b) c)`` was ``disagree`` at infinitely many times the bound (the plan's ``b (c sum(G x1))``
    exact)."""
    x = [v * 2.0**-40 for v in (668, 102, 26, 773, 414, 378)]
    a, b, c = 20.0, 2.0**-50, 2.0**25
    y = [float(np.float32(v * a * b * c * (1 + 2.0**-10))) for v in x]
    return case_from_arrays("x1abc", np.array(x).reshape(-1, 1), np.array(y).reshape(-1, 1), model=X1ABC,
                            params={"a": a, "b": b, "c": c}, lr=2.0**-4, dtypes=["float32"], reduction="sum")


def test_two_scalars_multiplied_into_the_rows_sum_agree():
    recs = grad_records(x1abc_case(), x1abc_step(), "float32")
    assert all(r.verdict not in BAD for r in recs), [(r.quantity, r.verdict, r.bound_ratio) for r in recs]


def test_a_gradient_of_two_scalars_in_the_sum_one_percent_off_is_caught():
    recs = grad_records(x1abc_case(), x1abc_step(1.01), "float32")
    assert "grad_a" in {r.quantity for r in recs if r.verdict == "disagree"}, [(r.quantity, r.verdict, r.bound_ratio) for r in recs]


def test_a_parameter_multiplied_into_an_exact_sum_of_normal_terms_agrees():
    """float32, ``a = 16``, ``b = 45056`` (a Hypothesis find): the plan's ``sum(G x1)`` is exact, so its ``grad_a = b
    sum(G x1)`` rounds once, while ``sum((G x1) b)`` rounds each row's product (28 bits) and the sum of those: 3.48
    times the bound before (``_scalar_into_sum``'s sum of the scaled terms)."""
    x = [1.0095391189679503e-10, 3.665263648144901e-10, 1.0095391189679503e-10, 1.0095391189679503e-10,
         9.094947017729282e-13]
    y = [7.306155748665333e-05, 0.00026525952853262424, 7.306155748665333e-05, 7.306155748665333e-05,
         6.582122296094894e-07]
    case = case_from_arrays("x1ab-normal", np.array(x).reshape(-1, 1), np.array(y).reshape(-1, 1), model=X1AB,
                            params={"a": 16.0, "b": 45056.0}, lr=2.0**-4, dtypes=["float32"], reduction="sum")
    for assoc in ("plan", "inside", "regroup"):
        recs = grad_records(case, x1ab_step(assoc), "float32")
        assert all(r.verdict not in BAD for r in recs), (assoc, [(r.quantity, r.verdict, r.bound_ratio) for r in recs])
    recs = grad_records(case, x1ab_step("inside", 1.001), "float32")  # (a relative error of 1e-3: about 17000 u)
    assert "grad_a" in {r.quantity for r in recs if r.verdict == "disagree"}


# ---------------------------------------------------------------------------------------------------------------
# correct MLP and polynomial steps in other orders, every dtype, data from tiny to huge


def reversed_matmul(a: Any, b: Any, layer: int = 0, where: str = "forward") -> Any:
    """``a @ b`` summed from the last term to the first, one rounding per operation, in ``a``'s dtype."""
    out = np.zeros((a.shape[0], b.shape[1]), dtype=a.dtype)
    for j in range(a.shape[1] - 1, -1, -1):
        out = (out + (a[:, j:j + 1] * b[j:j + 1, :]).astype(a.dtype)).astype(a.dtype)
    return out


def pairwise_matmul(a: Any, b: Any, layer: int = 0, where: str = "forward") -> Any:
    """``a @ b`` as a pairwise reduction of its products, in ``a``'s dtype."""
    terms = [(a[:, j:j + 1] * b[j:j + 1, :]).astype(a.dtype) for j in range(a.shape[1])]
    while len(terms) > 1:
        terms = [(terms[i] + terms[i + 1]).astype(a.dtype) if i + 1 < len(terms) else terms[i] for i in range(0, len(terms), 2)]
    return terms[0]


def order_step(mm: Any) -> Implementation:
    from harness.models.numpy_steps import numpy_model_steps

    def step(X: Any, y: Any, params: dict[str, Any], *, model: Any, lr: float, reduction: str, steps: int) -> Any:
        return numpy_model_steps(X, y, params, model, lr, reduction, steps, mm=mm)

    return Implementation(name=f"numpy-model-{mm.__name__}", framework="numpy", fn=step, models=("mlp", "polynomial"))


ORDER_STEPS = (order_step(reversed_matmul), order_step(pairwise_matmul))
SCALE = {"float64": 1000, "float32": 120, "float16": 14, "bfloat16": 120}


@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(dtype=st.sampled_from(["float64", "float32", "float16", "bfloat16"]), kind=st.sampled_from(["mlp1", "mlp2", "poly"]),
       act=st.sampled_from(["relu", "leaky_relu", "tanh", "sigmoid", "softplus", "gelu"]), n=st.integers(1, 4),
       d=st.integers(1, 3), k=st.integers(1, 2), reduction=st.sampled_from(["sum", "mean"]), data=st.data())
def test_search_mlps_and_polynomials_in_other_orders_for_a_false_alarm(dtype, kind, act, n, d, k, reduction, data):
    """Entries ``m 2**e`` (``|m| <= 7``), X and y at one scale ``2**ex`` from near the subnormal range to near overflow
    (spread over 7 binades), parameters within 7 binades of 1; the built-in steps and NumPy steps summing their
    products in reverse and in pairs. (Hand-run: 1,500 examples with also the seed's 2 after the products, tanh from
    exp and np.power features: at most 0.9999999787 of the bound, a float64 update's own final rounding.)"""
    pytest.importorskip("torch")
    import harness.models.numpy_steps
    import harness.models.torch_steps  # noqa: F401 - registers the built-in model steps
    from harness.implementations.registry import REGISTRY

    if kind == "poly":
        spec = ModelSpec(kind="polynomial", polynomial=data.draw(st.integers(2, 3)))
    else:
        hidden = tuple(data.draw(st.integers(1, 3)) for _ in range(1 if kind == "mlp1" else 2))
        spec = ModelSpec(kind="mlp", hidden=hidden, activation=act)
    spread = data.draw(st.integers(0, 6))

    def arr(shape: tuple[int, ...], lo: int, hi: int) -> Any:
        size = int(np.prod(shape)) if shape else 1
        e = data.draw(st.lists(st.integers(lo, hi), min_size=size, max_size=size))
        m = data.draw(st.lists(st.integers(-7, 7), min_size=size, max_size=size))
        return (np.array(m, dtype=float) * np.exp2(np.array(e, dtype=float))).reshape(shape)

    ex = data.draw(st.integers(-SCALE[dtype], SCALE[dtype]))
    X, y = arr((n, d), ex - spread, ex), arr((n, k), ex - spread, ex)
    params = {p: arr(s, -spread, 0) for p, s in spec.parameter_shapes(d, k).items()}
    case = case_from_arrays("orders", X, y, model=spec, params=params, lr=2.0**-4, dtypes=[dtype], reduction=reduction)
    impls = [REGISTRY["numpy-model"], REGISTRY["torch-model-nn"], REGISTRY["torch-model-functional"], *ORDER_STEPS]
    recs = harness.verify([case], impls, dtypes=[dtype])
    finite = [r.bound_ratio for r in recs if r.bound_ratio is not None and np.isfinite(r.bound_ratio)]
    target(max(finite, default=0.0), label="error / bound")
    assert all(r.verdict not in BAD for r in recs), [(r.implementation, r.quantity, r.verdict, r.bound_ratio) for r in recs
                                                     if r.verdict in BAD]
