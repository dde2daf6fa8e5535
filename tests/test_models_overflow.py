"""Finite results where no correct evaluation is finite (adversarial review, issue 14, t8 and t9).

Past an overflow a model's rigorous bound may be vacuous (infinite): ``exp(-inf) = 0``, ``1/inf = 0``
and ``tanh(inf) = 1`` are finite values a correct evaluation may return far from the exact one. But
where every correct evaluation gives ``inf`` or NaN (:func:`harness.models.bounds.never_finite`) and the
exact value is beyond twice the dtype's range, a finite result is wrong: ``disagree``, not ``agree``
(float32) or ``suspect`` (float64, exact beyond float64). Correct evaluations past an overflow keep
their verdicts; a parameter of the wrong shape is refused, not reshaped.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import numpy as np
import pytest

import harness
from harness.bounds import Regime
from harness.cases import case_from_arrays
from harness.floats import FLOAT32, get_format
from harness.implementations.registry import Implementation
from harness.models import ModelStepResult
from harness.models.bounds import FnContext, _Walk, _walk, model_bounds, never_finite
from harness.models.oracle import model_truth
from harness.models.plan import build_plan
from harness.models.spec import ModelSpec
from harness.runner import RunOptions
from harness.verdicts import failures

FAILING = ("disagree", "error", "invalid-input")
EXP = {"expression": "exp(a*x1)", "parameters": ["a"]}


def expression_case(expr: dict[str, Any], x: float, dtype: str, params: dict[str, float] | None = None,
                    y: float = 0.5) -> Any:
    ps = {p: np.array(v) for p, v in (params or {"a": 1.0}).items()}
    return case_from_arrays("overflow", X=np.array([[x]]), y=np.array([[y]]), lr=0.125, dtypes=(dtype,), model=expr,
                            params=ps)


def constant_step(loss: float, value: float) -> Implementation:
    """A plug-in that returns ``loss`` and ``value`` for every gradient and parameter (t8's liar)."""

    def step(X: Any, y: Any, params: dict[str, Any], *, model: Any, lr: Any, reduction: str, steps: int) -> Any:
        v = {p: np.asarray(value, dtype=X.dtype) for p in params}
        return [ModelStepResult(np.asarray(loss, dtype=X.dtype), dict(v), dict(v)) for _ in range(steps)]

    return Implementation(name="constant-model", framework="numpy", fn=step, models=("any",))


def by_quantity(records: list[Any]) -> dict[str, str]:
    return {r.quantity: r.verdict for r in records}


def test_reproducer_float32_finite_gradient_past_exp_overflow_disagrees() -> None:
    # exp(100) overflows float32: the exact grad_a is 2 * 100 * exp(200) ~ 1.4e89; no correct float32
    # evaluation gives 1.0 (every one gives inf or NaN), yet the vacuous bound graded it "agree"
    recs = harness.verify([expression_case(EXP, 100.0, "float32")], [constant_step(np.inf, 1.0)], dtypes="float32")
    v = by_quantity(recs)
    assert v["grad_a"] == "disagree" and v["a"] == "disagree", v
    assert v["loss"] == "overflow", v  # inf is the right loss
    assert failures(recs, False)
    msg = next(r.message for r in recs if r.quantity == "grad_a")
    assert "finite where no correct evaluation is" in msg and "float32" in msg


def test_float64_exact_beyond_float64_finite_results_disagree_not_suspect() -> None:
    # x = 1000: exp(1000) and the loss e^2000 are beyond float64; a loss of 1.0 passed as "suspect"
    recs = harness.verify([expression_case(EXP, 1000.0, "float64")], [constant_step(1.0, 1.0)], dtypes="float64")
    assert by_quantity(recs) == {"loss": "disagree", "grad_a": "disagree", "a": "disagree"}
    assert failures(recs, False)


@pytest.mark.parametrize("value", [FLOAT32.max_finite, -FLOAT32.max_finite, 0.0])
def test_float32_largest_finite_value_is_not_accepted_either(value: float) -> None:
    recs = harness.verify([expression_case(EXP, 100.0, "float32")], [constant_step(value, value)], dtypes="float32")
    assert set(by_quantity(recs).values()) == {"disagree"}


@pytest.mark.parametrize(("dtype", "x"), [("float32", 100.0), ("float64", 1000.0), ("float16", 12.0),
                                          ("bfloat16", 100.0)])
def test_correct_torch_evaluation_past_overflow_is_not_called_wrong(dtype: str, x: float) -> None:
    # torch gives inf (loss, grad_a) and -inf (a): every correct evaluation overflows here
    recs = harness.verify([expression_case(EXP, x, dtype)], ["torch-model-functional"], dtypes=dtype)
    assert not [r for r in recs if r.verdict in FAILING], [(r.quantity, r.verdict, r.message) for r in recs]
    assert {r.verdict for r in recs} == {"overflow"}


def numpy_exp_step(X: Any, y: Any, params: dict[str, Any], *, model: Any, lr: Any, reduction: str, steps: int) -> Any:
    """``exp(a*x1)`` under the squared-error loss, by hand in the case's dtype (NumPy), from the definition."""
    dt = X.dtype
    a = np.asarray(params["a"], dtype=dt)
    out = []
    with np.errstate(over="ignore", invalid="ignore"):
        for _ in range(steps):
            x1 = X[:, :1]
            p = np.exp(a * x1)
            r = p - y
            loss = np.sum(r * r, dtype=dt)
            g = np.sum(dt.type(2) * r * p * x1, dtype=dt)
            a = (a - dt.type(lr) * g).astype(dt)
            out.append(ModelStepResult(np.asarray(loss, dtype=dt), {"a": np.asarray(g, dtype=dt)}, {"a": np.asarray(a)}))
    return out


@pytest.mark.parametrize(("dtype", "x"), [("float32", 100.0), ("float64", 1000.0), ("float32", 89.0)])
def test_correct_numpy_evaluation_past_overflow_is_not_called_wrong(dtype: str, x: float) -> None:
    step = Implementation(name="numpy-exp-by-hand", framework="numpy", fn=numpy_exp_step, models=("any",))
    recs = harness.verify([expression_case(EXP, x, dtype)], [step], dtypes=dtype)
    assert not [r for r in recs if r.verdict in FAILING], [(r.quantity, r.verdict, r.computed, r.message) for r in recs]


@pytest.mark.parametrize("expr", ["tanh(exp(a*x1))", "exp(-a*x1)", "1/exp(a*x1)", "1/(1 + exp(a*x1))",
                                  "erf(exp(a*x1))", "exp(-exp(a*x1))", "exp(a*x1) - exp(a*x1 - 1)"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_saturating_and_cancelling_correct_evaluations_still_pass(expr: str, dtype: str) -> None:
    # an overflowed intermediate mapped back to a finite value (tanh(inf) = 1, exp(-inf) = 0, 1/inf = 0)
    # or to NaN (inf - inf): a correct evaluation is never called wrong
    x = 100.0 if dtype == "float32" else 12.0
    case = expression_case({"expression": expr, "parameters": ["a"]}, x, dtype)
    recs = harness.verify([case], ["torch-model-functional"], dtypes=dtype)
    assert not [r for r in recs if r.verdict in FAILING], [(r.quantity, r.verdict, r.computed, r.message) for r in recs]


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "relu", "softplus", "gelu"])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_correct_mlps_with_overflowing_hidden_layers_still_pass(activation: str, dtype: str) -> None:
    fmt = get_format(dtype)
    big = float(np.sqrt(fmt.max_finite)) * 4  # X W1 overflows, the activations saturate or overflow
    rng = np.random.default_rng(7)
    spec = {"hidden": [3], "activation": activation}
    params = {"W1": np.round(rng.normal(size=(2, 3)) * 4) * big, "b1": np.array([0.5, -1.0, 2.0]),
              "W2": np.round(rng.normal(size=(3, 1)) * 4), "b2": np.array([0.25])}
    X = np.round(rng.normal(size=(4, 2)) * 4) * big
    case = case_from_arrays("mlp-overflow", X=X, y=np.ones((4, 1)), lr=0.125, dtypes=(dtype,), model=spec, params=params)
    recs = harness.verify([case], ["torch-model-nn", "torch-model-functional", "numpy-model"], dtypes=dtype)
    assert recs and not [r for r in recs if r.verdict in FAILING], [(r.implementation, r.quantity, r.verdict, r.message)
                                                                    for r in recs if r.verdict in FAILING]


def test_never_finite_follows_only_paths_that_keep_inf() -> None:
    spec = ModelSpec(kind="expression", expression="exp(a*x1)", parameters=("a",))
    graph = build_plan(spec, 1, 1, 1, "sum", Fraction(1, 8))
    truth = model_truth(graph, {"X": np.array([[100.0]]), "y": np.array([[0.5]]), "a": np.array(1.0)}, FLOAT32)
    b = model_bounds(graph, truth.node_values, FLOAT32)
    assert all(bool(b.finite_impossible[q]) for q in ("loss", "grad_a", "a"))
    # exp(-a*x1): the exact values are tiny, exp(-100) underflows: nothing is flagged
    spec = ModelSpec(kind="expression", expression="exp(-a*x1)", parameters=("a",))
    graph = build_plan(spec, 1, 1, 1, "sum", Fraction(1, 8))
    truth = model_truth(graph, {"X": np.array([[100.0]]), "y": np.array([[0.5]]), "a": np.array(1.0)}, FLOAT32)
    assert model_bounds(graph, truth.node_values, FLOAT32).finite_impossible == {}


def test_a_finite_correct_result_beyond_the_range_is_not_claimed_impossible() -> None:
    # c / (a x1) with a x1 = 1.03125 * 2**-150 rounded (gradual underflow) up to 2**-149: the correct
    # float32 quotient 1.5 * 2**127 is finite while the exact one, 1.45 * 2**128, is beyond the range.
    # never_finite must not claim the division (its bound is infinite: the denominator's error reaches 0)
    spec = ModelSpec(kind="expression", expression="c/(a*x1)", parameters=("a", "c"))
    graph = build_plan(spec, 1, 1, 1, "sum", Fraction(1, 8))
    inputs = {"X": np.array([[2.0**-50]]), "y": np.array([[0.5]]), "a": np.array((1 + 2.0**-5) * 2.0**-100),
              "c": np.array(1.5 * 2.0**-22)}
    assert float(np.float32(inputs["a"]) * np.float32(inputs["X"][0, 0])) == 2.0**-149
    truth = model_truth(graph, inputs, FLOAT32)
    div = next(n.id for n in graph.nodes if n.op == "div")
    assert abs(truth.node_values[div].item()) > FLOAT32.max_finite
    mb = model_bounds(graph, truth.node_values, FLOAT32)
    reg = Regime(FLOAT32, False)
    w = _Walk(graph, FLOAT32, reg, FnContext(FLOAT32, reg, mb.function_ulps), FLOAT32.gamma,
              [np.asarray(v).reshape(n.shape) for v, n in zip(truth.node_values, graph.nodes, strict=True)])
    _walk(w)
    nf = never_finite(graph, w.vals, w.Es, FLOAT32)
    assert not bool(nf[div].any())
    assert mb.finite_impossible == {}
    recs = harness.verify([case_from_arrays("underflow-div", X=inputs["X"], y=inputs["y"], lr=0.125, dtypes=("float32",),
                                            model={"expression": "c/(a*x1)", "parameters": ["a", "c"]},
                                            params={"a": inputs["a"], "c": inputs["c"]})],
                          ["torch-model-functional"], dtypes="float32")
    assert not [r for r in recs if r.verdict in FAILING], [(r.quantity, r.verdict, r.computed, r.message) for r in recs]


def test_repeat_grades_other_runs_against_the_same_impossibility() -> None:
    # --repeat: run 1 correct (inf), run 2 finite where no correct evaluation is: not deterministic
    # beyond the rigorous bound (the other runs are graded against run 1's bounds, 0 there)
    calls = []

    def flaky(X: Any, y: Any, params: dict[str, Any], **kw: Any) -> Any:
        calls.append(1)
        good = numpy_exp_step(X, y, params, **kw)
        if len(calls) == 1:
            return good
        return [ModelStepResult(r.loss, {"a": np.asarray(1.0, dtype=X.dtype)}, r.params) for r in good]

    step = Implementation(name="flaky-exp", framework="numpy", fn=flaky, models=("any",))
    recs = harness.verify([expression_case(EXP, 100.0, "float32")], [step], dtypes="float32",
                          options=RunOptions(repeat=2))
    assert by_quantity(recs)["grad_a"] == "disagree"
    calls.clear()
    ok = Implementation(name="numpy-exp-by-hand", framework="numpy", fn=numpy_exp_step, models=("any",))
    recs = harness.verify([expression_case(EXP, 100.0, "float32")], [ok], dtypes="float32", options=RunOptions(repeat=2))
    assert not [r for r in recs if r.verdict in FAILING]


def test_model_truth_refuses_a_parameter_of_another_shape_with_the_same_size() -> None:
    # t9: W1 of shape (3, 2) where the plan expects (2, 3) was reshaped silently (wrong values graded)
    spec = ModelSpec(kind="mlp", hidden=(3,), activation="relu")
    graph = build_plan(spec, 4, 2, 2, "sum", Fraction(1, 8))
    rng = np.random.default_rng(1)
    shapes = {nd.attrs["name"]: nd.shape for nd in graph.nodes if nd.op in ("input", "param")}
    inputs = {name: rng.integers(-3, 4, size=s).astype(float) for name, s in shapes.items()}
    model_truth(graph, inputs, get_format("float64"))  # the right shapes: fine
    bad = dict(inputs, W1=inputs["W1"].T.copy())
    with pytest.raises(ValueError, match=r"parameter W1: shape \(3, 2\), the plan expects \(2, 3\)"):
        model_truth(graph, bad, get_format("float64"))
    with pytest.raises(ValueError, match=r"input X: shape \(8, 1\)"):
        model_truth(graph, dict(inputs, X=inputs["X"].reshape(8, 1)), get_format("float64"))


# ---------------------------------------------------------------------------------------------------
# the sign of an infinity (adversarial review: +inf graded "overflow" where every correct evaluation
# that overflows gives -inf; harness.models.bounds.signed_infinities)

SIGN_CASES = [("float64", 1000.0), ("float32", 100.0), ("float16", 12.0), ("bfloat16", 100.0)]


def signed_case(dtype: str, x: float, s: float) -> Any:
    # exp(a*x1) at a*x1 = x beyond the range: the loss is +e^(2x); with x1 = s*x and a = s, grad_a = 2 r x1 e^x
    # has the sign s and the updated a = a - lr grad_a the sign -s, every one beyond the range
    return expression_case(EXP, s * x, dtype, params={"a": s})


def torch_constant_step(loss: float, value: float) -> Implementation:
    """:func:`constant_step` in torch (NumPy has no bfloat16)."""
    import torch

    def step(X: Any, y: Any, params: dict[str, Any], *, model: Any, lr: Any, reduction: str, steps: int) -> Any:
        v = {p: torch.tensor(value, dtype=X.dtype) for p in params}
        return [ModelStepResult(torch.tensor(loss, dtype=X.dtype), dict(v), dict(v)) for _ in range(steps)]

    return Implementation(name="constant-model-torch", framework="torch", fn=step, models=("any",))


@pytest.mark.parametrize(("dtype", "x"), SIGN_CASES)
@pytest.mark.parametrize("s", [1.0, -1.0])
def test_an_infinity_of_the_wrong_sign_disagrees(dtype: str, x: float, s: float) -> None:
    right = {"loss": np.inf, "grad_a": s * np.inf, "a": -s * np.inf}
    for liar in (np.inf, -np.inf):
        liar_step = torch_constant_step(liar, liar) if dtype == "bfloat16" else constant_step(liar, liar)
        recs = harness.verify([signed_case(dtype, x, s)], [liar_step], dtypes=dtype)
        v = by_quantity(recs)
        for q, want in right.items():
            assert v[q] == ("overflow" if liar == want else "disagree"), (q, liar, v)
        wrong = [r for r in recs if r.verdict == "disagree"]
        assert wrong and failures(recs, False)
        assert all("infinite with a sign no correct evaluation gives" in (r.message or "") for r in wrong)


@pytest.mark.parametrize(("dtype", "x"), SIGN_CASES)
@pytest.mark.parametrize("s", [1.0, -1.0])
def test_right_sign_infinities_of_correct_evaluations_still_overflow(dtype: str, x: float, s: float) -> None:
    case = signed_case(dtype, x, s)
    by_hand = Implementation(name="numpy-exp-by-hand", framework="numpy", fn=numpy_exp_step, models=("any",))
    for impl in ("torch-model-functional",) + ((by_hand,) if dtype != "bfloat16" else ()):  # the expression kind's implementations
        recs = harness.verify([case], [impl], dtypes=dtype)
        assert {r.verdict for r in recs} == {"overflow"}, [(r.quantity, r.verdict, r.computed, r.message) for r in recs]
        got = {r.quantity: float(r.computed) for r in recs}
        assert got == {"loss": np.inf, "grad_a": s * np.inf, "a": -s * np.inf}, got


def test_signed_masks_exclude_only_the_impossible_sign() -> None:
    spec = ModelSpec(kind="expression", expression="exp(a*x1)", parameters=("a",))
    graph = build_plan(spec, 1, 1, 1, "sum", Fraction(1, 8))
    for s in (1.0, -1.0):
        truth = model_truth(graph, {"X": np.array([[s * 100.0]]), "y": np.array([[0.5]]), "a": np.array(s)}, FLOAT32)
        b = model_bounds(graph, truth.node_values, FLOAT32)
        pos = {q: bool(b.signed_inf_allowed(q)[0]) for q in ("loss", "grad_a", "a")}
        neg = {q: bool(b.signed_inf_allowed(q)[1]) for q in ("loss", "grad_a", "a")}
        assert pos == {"loss": True, "grad_a": s > 0, "a": s < 0}, (s, pos)
        assert neg == {"loss": False, "grad_a": s < 0, "a": s > 0}, (s, neg)
        # within inf_allowed, and carried to the linear path's container
        for q in ("loss", "grad_a", "a"):
            assert not (b.signed_inf_allowed(q)[0] & ~b.inf_allowed[q]).any()
            sb = b.to_step_bounds()
            assert sb.signed_inf_allowed(q)[0] == b.signed_inf_allowed(q)[0]
            assert sb.signed_inf_allowed(q)[1] == b.signed_inf_allowed(q)[1]


@pytest.mark.parametrize("expr", ["exp(a*x1) - exp(a*x1 - 1)", "a*x1*exp(a*x1)", "exp(a*x1)/(a*x1 - 99)",
                                  "exp(a*x1)*exp(a*x1)", "(a*x1 - 100.5)*exp(a*x1)"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_correct_evaluations_with_cancellations_and_sign_changes_still_pass(expr: str, dtype: str) -> None:
    # products, quotients and differences of overflowing terms whose signs the masks must not get wrong
    x = 100.0 if dtype == "float32" else 12.0
    for s in (1.0, -1.0):
        case = expression_case({"expression": expr, "parameters": ["a"]}, s * x, dtype, params={"a": s})
        recs = harness.verify([case], ["torch-model-functional"], dtypes=dtype)
        assert not [r for r in recs if r.verdict in FAILING], [(r.quantity, r.verdict, r.computed, r.message) for r in recs]


@pytest.mark.parametrize("activation", ["tanh", "relu", "softplus", "gelu"])
def test_correct_float64_mlps_with_overflowing_hidden_layers_still_pass(activation: str) -> None:
    fmt = get_format("float64")
    big = float(np.sqrt(fmt.max_finite)) * 4
    rng = np.random.default_rng(11)
    spec = {"hidden": [3], "activation": activation}
    params = {"W1": np.round(rng.normal(size=(2, 3)) * 4) * big, "b1": np.array([0.5, -1.0, 2.0]),
              "W2": np.round(rng.normal(size=(3, 1)) * 4), "b2": np.array([0.25])}
    X = np.round(rng.normal(size=(4, 2)) * 4) * big
    case = case_from_arrays("mlp-overflow", X=X, y=np.ones((4, 1)), lr=0.125, dtypes=("float64",), model=spec, params=params)
    recs = harness.verify([case], ["torch-model-nn", "torch-model-functional", "numpy-model"], dtypes="float64")
    assert recs and not [r for r in recs if r.verdict in FAILING], [(r.implementation, r.quantity, r.verdict, r.message)
                                                                    for r in recs if r.verdict in FAILING]
