"""The models path's bounds count the underflow of every association of each product chain the plan declares
(harness.models.bounds, :func:`chain_underflow`; helper-130).

Correct steps that regroup a chain, on data whose products land in the subnormal range:

- the seed ``dL/dF = 2 R / (N K)`` of a mean applied as ``2 ((R / N) / K)`` (each division by an exact integer rounds
  once; N = 3, K = 2 and a residual of 393220 least subnormals: the seed errs by 2.67 eta per element, the bound
  counted 2): ``disagree`` at 1.32 times the bound in float32 (1.12 in float16) before the plan declared the factors
  ``2, 1/N, 1/K``; with N = 1, K = 2 and R one least subnormal, ``2 fl(R / 2) = 0`` where the plan's ``(2c) R`` is
  exact (a bound of 0);
- an expression's product ``x1*a*b``, which the plan evaluates ``(a b) x1``, computed ``(x1 a) b``: ``x1 a`` a tie in
  the subnormal range (error ``eta``) times ``b = 2**60``; the plan's own evaluation is exact, so the bound was 0;
- a power's derivative ``g * (3 a**2)`` computed ``(g a**2) * 3``: ``g a**2`` a subnormal tie, tripled.

Each is graded ``agree`` (or ``suspect``) now; the same steps scaled by 2 (twice the gradient) are still ``disagree``,
and a Hypothesis search (``target`` of error over bound) over residuals, shapes, associations and dtypes finds no
correct step past its bound.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings, target
from hypothesis import strategies as st

import harness
from harness.cases import case_from_arrays
from harness.implementations.registry import Implementation
from harness.models import ModelStepResult
from harness.models.spec import ModelSpec
from tests.steps import model_seed_step

LINEAR = ModelSpec()
TINY = {"float16": 2.0**-24, "float32": 2.0**-149, "float64": 2.0**-1074}
BAD = ("disagree", "error", "invalid-input")

#: the seed's evaluations: divisions by N and K in either order then the doubling, the doubled residual divided,
#: ``(2/N) (R/K)``, one constant ``R (2/(N K))``, the rounded reciprocals ``((R fl(1/N)) fl(1/K)) 2``
SEED_SCALINGS = ("R/N/K*2", "R/K/N*2", "2R/N/K", "(2/N)(R/K)", "R*(2/(NK))", "R*(1/N)*(1/K)*2")


def seed_of(scaling: str, R: Any, n: int, k: int) -> Any:
    dt = R.dtype.type
    if scaling == "R/N/K*2":
        return dt(2) * ((R / dt(n)) / dt(k))
    if scaling == "R/K/N*2":
        return dt(2) * ((R / dt(k)) / dt(n))
    if scaling == "2R/N/K":
        return ((dt(2) * R) / dt(n)) / dt(k)
    if scaling == "(2/N)(R/K)":
        return dt(2.0 / n) * (R / dt(k))
    if scaling == "R*(2/(NK))":
        return R * dt(2.0 / (n * k))
    assert scaling == "R*(1/N)*(1/K)*2"
    return ((R * dt(1.0 / n)) * dt(1.0 / k)) * dt(2)


def seed_step(scaling: str, wrong: float = 1.0) -> Implementation:
    """A linear-model SGD step by hand in NumPy under the mean, its seed evaluated as ``scaling``."""
    return model_seed_step(f"numpy-seed-{scaling}", lambda R, n, k, reduction: seed_of(scaling, R, n, k)
                           if reduction == "mean" else R.dtype.type(2) * R, wrong)


def seed_case(dtype: str, n: int, k: int, residuals: Any, x: float | None = None) -> Any:
    """``W = b = 0`` and ``y = -R``: the residuals are exact; X a constant column (2**60 in float32, 2**500 in
    float64 unless given)."""
    if x is None:
        x = {"float16": 2.0**4, "float32": 2.0**60, "float64": 2.0**500}[dtype]
    X = np.full((n, 1), x)
    y = -np.asarray(residuals, dtype=np.float64).reshape(n, k)
    return case_from_arrays("chain-seed", X, y, model=LINEAR, params={"W": [[0.0] * k], "b": [0.0] * k}, lr=2.0**-4,
                            dtypes=[dtype], reduction="mean")


def grads(case: Any, impl: Implementation, dtype: str) -> list[Any]:
    recs = harness.verify([case], [impl], dtypes=[dtype])
    out = [r for r in recs if r.quantity.startswith("grad_")]
    assert out, [(r.quantity, r.verdict, r.message) for r in recs]
    return out


#: residuals (in least subnormals) whose seed ``2 ((R / 3) / 2)`` errs by 2.67 eta: R/3 is 131073.33 (float16: 129.33),
#: then R/3/2 a tie rounded the same way
WORST = {"float16": 388, "float32": 393220, "float64": 393220}


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize(("n", "k", "scaling"), [(3, 2, "R/N/K*2"), (2, 3, "R/K/N*2"), (1, 2, "R/N/K*2")])
def test_the_seed_divided_by_n_then_k_then_doubled_agrees(dtype, n, k, scaling):
    # was disagree at 1.32x the bound (float32), 1.12x (float16); N = 1, K = 2 with R one least subnormal: 2 fl(R / 2)
    # is 0 while the plan's (2c) R = R is exact (a bound of 0: inf x)
    j = 1 if n == 1 else WORST[dtype]
    case = seed_case(dtype, n, k, np.full(n * k, j * TINY[dtype]))
    for r in grads(case, seed_step(scaling), dtype):
        assert r.verdict not in BAD, (r.quantity, r.verdict, r.bound_ratio, r.message)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_twice_the_divided_seed_is_still_caught(dtype):
    case = seed_case(dtype, 3, 2, np.full(6, WORST[dtype] * TINY[dtype]))
    recs = grads(case, seed_step("R/N/K*2", wrong=2.0), dtype)
    assert {r.quantity for r in recs if r.verdict == "disagree"} == {"grad_W", "grad_b"}


def test_the_plan_declares_the_mean_as_its_two_divisions():
    from fractions import Fraction

    from harness.models.plan import build_plan

    for (n, k), factors in (((3, 2), (2, Fraction(1, 3), Fraction(1, 2))), ((3, 1), (2, Fraction(1, 3))),
                            ((1, 1), (2, 1))):
        g = build_plan(LINEAR, n, 1, k, "mean", 0.1)
        (seed,) = [nd for nd in g.nodes if nd.op == "const" and nd.role == "backward"]
        assert tuple(seed.attrs["factors"]) == factors and seed.attrs["value"] == Fraction(2, n * k)


@settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@example(dtype="float32", n=1, k=2, scaling="R/N/K*2", base=1, spread=0, normal=False, data=None)  # R/2 a tie: inf x
@given(dtype=st.sampled_from(["float16", "float32", "float64"]), n=st.integers(1, 5), k=st.integers(1, 4),
       scaling=st.sampled_from(SEED_SCALINGS), base=st.integers(1, 2**22), spread=st.integers(0, 8),
       normal=st.booleans(), data=st.data())
def test_search_the_seed_associations_for_a_false_alarm(dtype, n, k, scaling, base, spread, normal, data):
    """Residuals of ``base`` to ``base + spread`` least subnormals (or the same integers scaled into the normal range,
    where only the relative error counts)."""
    offsets = data.draw(st.lists(st.integers(0, spread), min_size=n * k, max_size=n * k)) if data else [0] * (n * k)
    if dtype == "float16":
        base = base % 1000 + 1
    unit = TINY[dtype] * (2.0 ** (20 if dtype == "float16" else 100) if normal else 1.0)
    case = seed_case(dtype, n, k, [(base + o) * unit for o in offsets])
    recs = grads(case, seed_step(scaling), dtype)
    worst = max(r.bound_ratio for r in recs)
    target(min(worst, 1e30), label="seed error / bound")  # (inf: an error where the bound is 0)
    assert all(r.verdict not in BAD for r in recs), [(r.quantity, r.verdict, r.bound_ratio) for r in recs]


# ---------------------------------------------------------------------------------------------------------------
# an expression's product chain and a power's derivative


X1AB = ModelSpec(kind="expression", expression="x1*a*b", parameters=("a", "b"))
X1A3 = ModelSpec(kind="expression", expression="x1*a**3", parameters=("a",))


def expression_step(model_spec: ModelSpec, association: str, wrong: float = 1.0) -> Implementation:
    """``x1*a*b`` (forward ``association``: ``"(ab)x"`` as the plan, ``"(xa)b"``, ``"(xb)a"``; the backward as the plan:
    ``S = sum(G x1)``, ``grad_a = S b``, ``grad_b = S a``) or ``x1*a**3`` (forward ``(a a a) x1``; ``grad_a`` from
    ``g = sum(G x1)`` as ``association``: ``"g(3p)"`` as the plan, ``"(gp)3"``, ``"(g3)p"``, ``p = a a``), the sum
    reduction."""

    def step(X: Any, y: Any, params: dict[str, Any], *, model: Any, lr: float, reduction: str, steps: int) -> Any:
        dt = X.dtype.type
        x = X[:, 0:1]
        ps = {p: np.asarray(v, dtype=X.dtype) for p, v in params.items()}
        n, k = y.shape
        c = dt(1.0 if reduction == "sum" else 1.0 / (n * k))
        out = []
        for _ in range(steps):
            if model_spec is X1AB:
                a, b = ps["a"], ps["b"]
                F = {"(ab)x": (a * b) * x, "(xa)b": (x * a) * b, "(xb)a": (x * b) * a}[association]
            else:
                a = ps["a"]
                F = ((a * a) * a) * x
            R = F - y
            loss = c * np.sum(R * R, dtype=X.dtype)
            G = dt(2) * c * R
            S = np.sum(G * x, dtype=X.dtype)
            if model_spec is X1AB:
                g = {"a": S * b, "b": S * a}
            else:
                p, three = a * a, dt(3)
                g = {"a": {"g(3p)": S * (three * p), "(gp)3": (S * p) * three, "(g3)p": (S * three) * p}[association]}
            g = {q: np.asarray(v * dt(wrong), dtype=X.dtype) for q, v in g.items()}
            ps = {q: np.asarray(ps[q] - dt(lr) * g[q], dtype=X.dtype) for q in ps}
            out.append(ModelStepResult(loss=loss, grads=g, params=dict(ps)))
        return out

    return Implementation(name=f"numpy-expr-{association}", framework="numpy", fn=step, models=("any",))


def expression_case(spec: ModelSpec, dtype: str, x: Any, y: Any, params: dict[str, float]) -> Any:
    X = np.asarray(x, dtype=np.float64).reshape(-1, 1)
    return case_from_arrays("chain-expr", X, np.asarray(y, dtype=np.float64).reshape(-1, 1), model=spec, params=params,
                            lr=2.0**-4, dtypes=[dtype], reduction="sum")


def records(case: Any, impl: Implementation, dtype: str) -> list[Any]:
    recs = harness.verify([case], [impl], dtypes=[dtype])
    assert recs
    return recs


def x1ab_case(dtype: str, odd: int) -> Any:
    """``x1 = odd 2**-20``, ``a = 2**-130`` (float64: ``2**-1055``, subnormal) and ``b = 2**100`` (``2**1000``): ``x1 a``
    is ``odd * eta``, a tie in the subnormal range, so ``(x1 a) b`` errs by ``eta b`` (a relative ``1/odd``) while the
    plan's ``(a b) x1`` is exact; y = 0."""
    e, eb = {"float32": (150, 100), "float64": (1075, 1000)}[dtype]
    x = odd * 2.0**-20
    return expression_case(X1AB, dtype, [x, x], [0.0, 0.0], {"a": 2.0 ** -(e - 20), "b": 2.0**eb})


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("association", ["(ab)x", "(xa)b", "(xb)a"])
def test_an_expression_product_in_any_association_agrees(dtype, association):
    for odd in (1001, 1003):
        recs = records(x1ab_case(dtype, odd), expression_step(X1AB, association), dtype)
        assert all(r.verdict not in BAD for r in recs), [(r.quantity, r.verdict, r.bound_ratio) for r in recs]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_twice_the_expression_gradient_is_still_caught(dtype):
    # (grad_b = 2 x1**2 a**2 b is below the subnormal range: 0 either way)
    recs = records(x1ab_case(dtype, 1001), expression_step(X1AB, "(xa)b", wrong=2.0), dtype)
    assert {r.quantity for r in recs if r.verdict == "disagree"} >= {"grad_a", "a"}


def x1a3_case(dtype: str, m: int) -> Any:
    """``a = m 2**-e``, ``x1 = 4``, y = 0: ``g = sum(2 R x1) = 2 a**3 x1**2``, ``g a**2 = m**5 eta`` (a tie) and the
    plan's ``g (3 a**2)`` is ``3 m**5 eta`` (a tie too)."""
    e = {"float32": 31, "float64": 216}[dtype]
    return expression_case(X1A3, dtype, [4.0], [0.0], {"a": m * 2.0**-e})


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("association", ["g(3p)", "(gp)3", "(g3)p"])
def test_a_power_derivative_in_any_association_agrees(dtype, association):
    for m in (3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27):
        recs = records(x1a3_case(dtype, m), expression_step(X1A3, association), dtype)
        assert all(r.verdict not in BAD for r in recs), (m, [(r.quantity, r.verdict, r.bound_ratio) for r in recs])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_twice_the_power_derivative_is_still_caught(dtype):
    recs = records(x1a3_case(dtype, 9), expression_step(X1A3, "(gp)3", wrong=2.0), dtype)
    assert "grad_a" in {r.quantity for r in recs if r.verdict == "disagree"}


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@example(dtype="float32", which="x1ab", association=1, xs=[1025], ea=-1, eb=0, ma=3)  # inf times the bound before
@example(dtype="float64", which="x1ab", association=1, xs=[1025], ea=-3, eb=5, ma=5)
@example(dtype="float32", which="x1a3", association=1, xs=[4096], ea=0, eb=0, ma=9)  # 2.79 times the bound before
@given(dtype=st.sampled_from(["float32", "float64"]), which=st.sampled_from(["x1ab", "x1a3"]),
       association=st.integers(0, 2), xs=st.lists(st.integers(2**10, 2**13), min_size=1, max_size=3),
       ea=st.integers(-12, 12), eb=st.integers(0, 40), ma=st.integers(1, 27))
def test_search_the_expression_chains_for_a_false_alarm(dtype, which, association, xs, ea, eb, ma):
    """Products near the subnormal range: ``x1 = j 2**-10`` in [1, 8]; ``x1*a*b``: ``x1 a`` near it (``a = ma
    2**(ea - e)``) and ``b`` large (``x1 a b`` normal); ``x1*a**3``: ``g a**2 = 2 a**5 sum(x1**2)`` near it (``a = ma
    2**-31``, float64 ``2**-216``)."""
    e, bmax, e3 = {"float32": (150, 100, 31), "float64": (1075, 1000, 216)}[dtype]
    x = [j * 2.0**-10 for j in xs]
    if which == "x1ab":
        spec, assoc = X1AB, ("(ab)x", "(xa)b", "(xb)a")[association]
        params = {"a": ma * 2.0 ** (ea - e + 10), "b": 2.0 ** (bmax - eb)}
    else:
        spec, assoc = X1A3, ("g(3p)", "(gp)3", "(g3)p")[association]
        params = {"a": ma * 2.0 ** (-e3 + ea // 6)}
    recs = records(expression_case(spec, dtype, x, [0.0] * len(x), params), expression_step(spec, assoc), dtype)
    target(min(max(r.bound_ratio for r in recs), 1e30), label="expression error / bound")
    assert all(r.verdict not in BAD for r in recs), [(r.quantity, r.verdict, r.bound_ratio) for r in recs]


def test_chain_underflow_by_hand():
    """The worst association's count (float32, gradual underflow): ``2 ((R / 3) / 2)`` is ``2 (1 + 1/2) eta``;
    ``g * 3 * p`` is ``3 eta`` (``(g p) 3``: an integer factor adds no eta of its own); operands whose least magnitudes
    keep every association's product normal count nothing; ``x1 a b`` with ``x1 a`` possibly subnormal counts
    ``eta |b|`` (the whole product, 2**-110, is normal in every association: no eta of the last rounding)."""
    from fractions import Fraction

    from harness.bounds import Regime
    from harness.floats import FLOAT32
    from harness.models.bounds import chain_underflow

    reg = Regime(FLOAT32, False)
    eta = reg.eta
    R = np.array([393220 * 2.0**-149])
    got = chain_underflow([Fraction(2), Fraction(1, 3), Fraction(1, 2)], R, reg)
    np.testing.assert_allclose(got, [2 * (1 + 1 / 2) * eta * reg.growth(3)], rtol=1e-15)
    g, p = np.array([2.0**-100]), np.array([2.0**-40])
    assert chain_underflow([Fraction(3)], [g, p], reg)[0] == 3 * eta * reg.growth(2)
    assert chain_underflow([Fraction(3)], [g, p], reg, [g, p])[0] == 3 * eta * reg.growth(2)  # 2**-140: subnormal
    big = np.array([1.0])
    assert chain_underflow([Fraction(3)], [big, big], reg, [big, big])[0] == 0.0
    x1, a, b = np.array([2.0**-100]), np.array([2.0**-40]), np.array([2.0**30])
    got = chain_underflow([], [a, b, x1], reg, [a, b, x1])
    np.testing.assert_allclose(got, [eta * reg.growth(2) * 2.0**30], rtol=1e-15)
    # without least magnitudes (0: any rounding may underflow) the last rounding counts too
    np.testing.assert_allclose(chain_underflow([], [a, b, x1], reg), [eta * reg.growth(2) * (2.0**30 + 1)], rtol=1e-15)


def test_chain_underflow_stays_finite_where_only_the_outside_factors_pass_float64s_range():
    """``a b`` subnormal (float64) times ``c d = 2**1200``: the count ``eta 2**1200`` is finite (the whole product,
    ``2**140``, is too), not the ``inf`` of multiplying the outside magnitudes first (a vacuous bound)."""
    from harness.bounds import Regime
    from harness.floats import FLOAT64
    from harness.models.bounds import chain_underflow

    reg = Regime(FLOAT64, False)
    a, one, big = np.array([2.0**-1060]), np.array([1.0]), np.array([2.0**600])
    got = chain_underflow([], [a, one, big, big], reg, [a, one, big, big])
    assert np.isfinite(got[0]) and 2.0**126 <= got[0] <= 2.0**126 * (1 + 2.0**-28)  # (the growth (1 + u)**3 (1 + 2**-30))
