"""helper-170: NaN at the domain edge of log and sqrt in the models path.

Where the error interval of the argument of ``log`` or ``sqrt`` reaches 0, the function's rigorous bound is
infinite (:func:`harness.models.bounds._domain_checked`) and a correct evaluation may form a computed argument
below 0: ``a*x1 - c + d`` with ``a = 1 - u``, ``x1 = 1 + 2u``, ``c = 1``, ``d = -3u/4`` is ``u/4 - 2u^2 > 0``
exactly, but ``fl(a*x1) = 1`` and both ``(fl(a x1) - c) + d`` and ``fl(fl(a x1) + d) - c`` are negative:
``sqrt`` and ``log`` of it are NaN. The overflow walk allowed both infinities there (the infinite bound) but
NaN only from a NaN or infinite argument, and the sums and products after it let NaN through only by way of
their infinite error bounds: a function that keeps NaN but never returns inf (``tanh``, ``sigmoid``) has a
finite bound, so ``tanh(sqrt(a*x1 - c + d))`` computed correctly by ``torch-model-functional`` in float32,
float16 and bfloat16 gave ``loss: disagree`` (computed nan, a false alarm). Now NaN is allowed exactly where
the argument's interval reaches the edge (:func:`harness.models.bounds.domain_edge`); a NaN or an infinity
where the argument is far from 0 stays ``disagree``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import harness
from harness.bounds import Regime
from harness.cases import case_from_arrays
from harness.floats import get_format
from harness.implementations.registry import Implementation
from harness.models import ModelStepResult
from harness.models.bounds import FnContext, _Walk, _walk, model_bounds
from harness.models.oracle import model_truth
from harness.models.plan import build_plan
from harness.models.spec import ModelSpec

FAILING = ("disagree", "error", "invalid-input")
PRECISION = {"float32": 24, "float16": 11, "bfloat16": 8}
Z = "a*x1 - c + d"


def edge_params(dtype: str, far: bool = False) -> tuple[dict[str, float], float]:
    """``(params, x1)``: the exact argument ``a*x1 - c + d`` is ``u/4 - 2u^2`` (tiny, positive), computed below 0
    in two of its three orders; ``far``: ``d = 1/2``, the argument about 1/2 (far from the edge)."""
    u = 2.0 ** -PRECISION[dtype]
    return {"a": 1 - u, "c": 1.0, "d": 0.5 if far else -0.75 * u}, 1 + 2 * u


def case(expr: str, dtype: str, far: bool = False) -> Any:
    params, x1 = edge_params(dtype, far)
    return case_from_arrays("edge", np.array([[x1]]), np.array([[0.5]]), lr=0.125, dtypes=(dtype,),
                            model={"expression": expr, "parameters": ["a", "c", "d"]},
                            params={p: np.array(v) for p, v in params.items()})


def failing(records: list[Any]) -> list[tuple[str, str, str, str]]:
    return [(r.quantity, r.verdict, r.computed, r.message[:200]) for r in records if r.verdict in FAILING]


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("expr", [f"tanh(sqrt({Z}))", f"tanh(log({Z}))", f"a*tanh(sqrt({Z}))", f"sqrt({Z})"])
def test_torch_functional_nan_at_the_edge_is_not_a_false_alarm(expr: str, dtype: str) -> None:
    recs = harness.verify([case(expr, dtype)], ["torch-model-functional"], dtypes=dtype)
    loss = next(r for r in recs if r.quantity == "loss")
    assert loss.computed == "nan"  # the correct step does form sqrt / log of a negative value here
    assert not failing(recs), failing(recs)  # was loss: disagree for the tanh forms


def numpy_order_step(order: str, fn: str) -> Implementation:
    """A correct NumPy step of ``tanh(fn(a*x1 - c + d))`` with the argument summed in ``order`` (each operation
    rounded to the case's dtype), the backward pass written by hand (``1 - t^2``, ``1/(2 s)`` or ``1/z``)."""

    def step(X: Any, y: Any, params: dict[str, Any], *, model: Any, lr: Any, reduction: str, steps: int) -> Any:
        dt = X.dtype
        p = {k: np.asarray(v, dtype=dt) for k, v in params.items()}
        x1, two, half, lr_ = X[:, :1], dt.type(2), dt.type(0.5), dt.type(lr)
        out = []
        with np.errstate(invalid="ignore", divide="ignore"):
            for _ in range(steps):
                ax = p["a"] * x1
                z = {"ax-c+d": (ax - p["c"]) + p["d"], "ax+d-c": (ax + p["d"]) - p["c"], "d-c+ax": (p["d"] - p["c"]) + ax}[order]
                s = np.sqrt(z) if fn == "sqrt" else np.log(z)
                t = np.tanh(s)
                r = t - y
                loss = np.sum(r * r, dtype=dt)
                gs = (two * r) * (dt.type(1) - t * t)
                gz = gs * (half / s) if fn == "sqrt" else gs / z
                grads = {"a": np.sum(gz * x1, dtype=dt), "c": -np.sum(gz, dtype=dt), "d": np.sum(gz, dtype=dt)}
                p = {k: (p[k] - lr_ * grads[k]).astype(dt) for k in p}
                out.append(ModelStepResult(np.asarray(loss, dtype=dt), {k: np.asarray(v, dtype=dt) for k, v in grads.items()},
                                           dict(p)))
        return out

    return Implementation(name=f"numpy-{fn}-{order}", framework="numpy", fn=step, models=("any",),
                          dtypes=("float32", "float16"))


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("fn", ["sqrt", "log"])
def test_numpy_steps_in_every_order_pass_at_the_edge(fn: str, dtype: str) -> None:
    impls = [numpy_order_step(o, fn) for o in ("ax-c+d", "ax+d-c", "d-c+ax")]
    recs = harness.verify([case(f"tanh({fn}({Z}))", dtype)], impls, dtypes=dtype)
    assert not failing(recs), failing(recs)
    # two of the orders form a negative argument (NaN), the third 0 (sqrt: 0, then 1/0 = inf; log: -inf, tanh -1)
    nan_loss = {r.implementation for r in recs if r.quantity == "loss" and r.computed == "nan"}
    assert nan_loss == {f"numpy-{fn}-ax-c+d", f"numpy-{fn}-ax+d-c"}, nan_loss


def test_sqrt_of_a_difference_rounded_to_zero_passes() -> None:
    # sqrt(x1*x1 - a): x1*x1 = 1 + 2^-22 + 2^-46 rounds to a = 1 + 2^-22: sqrt(0) = 0, sqrt' = 1/0 = inf
    x1 = 1 + 2.0**-23
    c = case_from_arrays("edge0", np.array([[x1]]), np.array([[0.5]]), lr=0.125, dtypes=("float32",),
                         model={"expression": "tanh(sqrt(x1*x1 - a))", "parameters": ["a"]},
                         params={"a": np.array(1 + 2.0**-22)})
    recs = harness.verify([c], ["torch-model-functional"], dtypes="float32")
    assert not failing(recs), failing(recs)


def liar(loss: float, grad: float) -> Implementation:
    """A step returning ``loss`` and ``grad`` for every gradient (the parameters updated from them)."""

    def step(X: Any, y: Any, params: dict[str, Any], *, model: Any, lr: Any, reduction: str, steps: int) -> Any:
        dt = X.dtype
        with np.errstate(invalid="ignore", over="ignore"):
            g = {k: np.asarray(grad, dtype=dt) for k in params}
            p = {k: np.asarray(np.asarray(v, dtype=dt) - dt.type(lr) * g[k], dtype=dt) for k, v in params.items()}
        return [ModelStepResult(np.asarray(loss, dtype=dt), g, p) for _ in range(steps)]

    return Implementation(name=f"liar-{loss}-{grad}", framework="numpy", fn=step, models=("any",),
                          dtypes=("float32", "float16"))


@pytest.mark.parametrize("fn", ["sqrt", "log"])
@pytest.mark.parametrize("bad", [np.nan, -np.inf])
def test_mirror_nan_or_minus_inf_far_from_the_edge_disagrees(fn: str, bad: float) -> None:
    # d = 1/2: the argument is about 1/2, no correct evaluation gives NaN or an infinity anywhere
    recs = harness.verify([case(f"tanh({fn}({Z}))", "float32", far=True)], [liar(bad, bad)], dtypes="float32")
    by_q = {r.quantity: r.verdict for r in recs}
    assert set(by_q.values()) == {"disagree"}, by_q
    recs = harness.verify([case(f"{fn}({Z})", "float32", far=True)], [liar(bad, bad)], dtypes="float32")
    assert {r.verdict for r in recs} == {"disagree"}, [(r.quantity, r.verdict) for r in recs]


def test_nan_is_allowed_exactly_at_the_edge_rows() -> None:
    # two rows: the first at the edge, the second far from it: the sqrt node's NaN mask holds the first only
    from harness.models.bounds import domain_edge  # (the rule's one definition; imported here: helper-170's fix)

    u = 2.0**-24
    spec = ModelSpec(kind="expression", expression="tanh(sqrt(a*x1 + x2))", parameters=("a",))
    X = np.array([[1 + 2 * u, -1.0], [1 + 2 * u, -0.5]])  # exact arguments u - 2u^2 and 1/2 + u - 2u^2
    y = np.array([[0.5], [0.5]])
    fmt = get_format("float32")
    graph = build_plan(spec, 2, 2, 1, "sum", 0.125)
    truth = model_truth(graph, {"X": X, "y": y, "a": np.array(1 - u)}, fmt)
    mb = model_bounds(graph, truth.node_values, fmt)
    reg = Regime(fmt, False)
    w = _Walk(graph, fmt, reg, FnContext(fmt, reg, mb.function_ulps), fmt.gamma,
              [np.asarray(v).reshape(n.shape) for v, n in zip(truth.node_values, graph.nodes, strict=True)])
    _walk(w)
    sq = [n for n in graph.nodes if n.op in ("fn", "fn_grad") and n.attrs.get("fn") == "sqrt"]
    assert sq
    for n in sq:
        arg = n.args[0]
        edge = domain_edge("sqrt", w.vals[arg], w.Es[arg])
        assert edge.ravel().tolist() == [True, False]
        assert w.signs[n.id][2].ravel().tolist() == [True, False], n
    tanh = next(n for n in graph.nodes if n.op == "fn" and n.attrs.get("fn") == "tanh")
    assert w.signs[tanh.id][2].ravel().tolist() == [True, False]
    assert not domain_edge("exp", np.array([0.0]), np.array([1.0])).any()
    assert mb.nan_allowed["loss"].all()
