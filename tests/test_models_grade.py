"""Model cases through the runner: the contract, the one implementation lookup, records, --repeat, function_ulps."""

from __future__ import annotations

import numpy as np
import pytest

import harness
from harness.cases import make_case
from harness.implementations import implementation_of, load_builtins
from harness.implementations.registry import REGISTRY
from harness.models import ModelSpec
from harness.models.step import ModelStepResult
from harness.runner import RunOptions, case_mismatch, verify

TANH = {"hidden": [2], "activation": "tanh"}


def tanh_case(**kw: object) -> harness.Case:
    return make_case("tanh-2", [[0.5], [1.0], [-2.0]], [[0.25], [0.5], [-1.0]], None, None, lr="0.125", model=TANH,
                     params={"W1": [[0.5, -0.75]], "b1": [0.125, 0.25], "W2": [[1.0], [0.5]], "b2": [0.0]}, **kw)


@pytest.fixture
def registered():
    names: list[str] = []

    def register(name: str, fn, **kw):
        harness.implementation(name, framework="numpy", **kw)(fn)
        names.append(name)
        return name

    yield register
    for n in names:
        REGISTRY.pop(n, None)


def test_the_one_lookup_keeps_models_and_the_linear_path_apart():
    load_builtins()
    model_case = tanh_case()
    linear = make_case("lin", [[1.0]], [[2.0]], [[0.5]], [0.0], lr="0.1")
    assert case_mismatch(implementation_of("numpy-model"), model_case) is None
    assert "linear path only" in (case_mismatch(implementation_of("numpy-hand"), model_case) or "")
    assert "models only" in (case_mismatch(implementation_of("numpy-model"), linear) or "")
    recs = verify([model_case, linear], ["numpy-model", "numpy-hand"], dtypes=["float64"])
    assert {(r.case, r.implementation) for r in recs} == {("tanh-2", "numpy-model"), ("lin", "numpy-hand")}


def test_model_records_follow_the_quantity_order_and_agree_for_the_builtins():
    recs = verify([tanh_case()], ["numpy-model", "torch-model-nn"], dtypes=["float64", "float32"])
    for impl in ("numpy-model", "torch-model-nn"):
        qs = [r.quantity for r in recs if r.implementation == impl and r.dtype == "float32"]
        assert qs == list(ModelSpec("mlp", (2,), "tanh").quantities(1, 1))
    assert {r.verdict for r in recs} == {"agree"}
    # the loss by hand in float64: z = x W1 + b1, h = tanh z, f = h W2 + b2
    X = np.array([[0.5], [1.0], [-2.0]])
    h = np.tanh(X @ np.array([[0.5, -0.75]]) + np.array([0.125, 0.25]))
    loss = float(np.sum((h @ np.array([[1.0], [0.5]]) - np.array([[0.25], [0.5], [-1.0]])) ** 2))
    rec = next(r for r in recs if r.quantity == "loss" and r.dtype == "float64" and r.implementation == "numpy-model")
    assert float(rec.exact.rstrip(".")) == pytest.approx(loss, rel=1e-15)
    assert rec.oracle_method.startswith("arb-ball")


def test_a_wrong_shape_or_a_missing_gradient_is_an_error_naming_step_and_field(registered):
    def missing(X, y, params, *, model, lr, reduction, steps):
        return [ModelStepResult(np.float64(0.0), {"W1": params["W1"]}, dict(params))]

    def wrong_shape(X, y, params, *, model, lr, reduction, steps):
        out = implementation_of("numpy-model").fn(X, y, params, model=model, lr=lr, reduction=reduction, steps=steps)
        out[0].grads = {**out[0].grads, "W1": np.zeros((2, 2))}  # W1 is (1, 2)
        return out

    n1 = registered("t-missing-grad", missing, models=("any",))
    n2 = registered("t-wrong-shape", wrong_shape, models=("any",))
    recs = verify([tanh_case()], [n1, n2], dtypes=["float64"])
    msg = {r.implementation: (r.verdict, r.message) for r in recs}
    assert msg[n1][0] == "error" and "step 1: grads has no 'b1'" in msg[n1][1]
    assert msg[n2][0] == "error" and "step 1: grads['W1'] has shape (2, 2), expected (1, 2)" in msg[n2][1]


def test_a_step_that_writes_into_its_parameters_is_an_error(registered):
    def in_place(X, y, params, *, model, lr, reduction, steps):
        out = implementation_of("numpy-model").fn(X, y, {k: v.copy() for k, v in params.items()}, model=model, lr=lr,
                                                  reduction=reduction, steps=steps)
        params["W1"][...] = out[-1].params["W1"]
        return out

    name = registered("t-in-place", in_place, models=("any",))
    (rec,) = verify([tanh_case()], [name], dtypes=["float64"])
    assert rec.verdict == "error" and "W1" in rec.message


def test_function_ulps_override_widens_the_bound_and_is_named(registered):
    fn = implementation_of("numpy-model").fn
    name = registered("t-tanh-ulps", fn, models=("any",), function_ulps={"tanh": 64})
    recs = verify([tanh_case()], ["numpy-model", name], dtypes=["float32"])
    by = {(r.implementation, r.quantity): r for r in recs}
    assert "overridden: tanh 64 ULP" in by[(name, "grad_W1")].oracle_method
    assert "overridden" not in by[("numpy-model", "grad_W1")].oracle_method
    assert by[(name, "loss")].rigorous_bound > by[("numpy-model", "loss")].rigorous_bound
    with pytest.raises(harness.PluginError, match="function_ulps"):
        harness.implementation("t-bad-ulps", framework="numpy", models=("any",), function_ulps={"tanh": -1})(fn)


def test_repeat_grades_every_run_of_a_model_step(registered):
    calls = {"n": 0}

    def flaky(X, y, params, *, model, lr, reduction, steps):
        calls["n"] += 1
        out = implementation_of("numpy-model").fn(X, y, params, model=model, lr=lr, reduction=reduction, steps=steps)
        if calls["n"] == 2:  # the second run's gradient is wrong by 1%
            out[0].grads = {**out[0].grads, "b2": np.asarray(out[0].grads["b2"]) * 1.01}
        return out

    name = registered("t-flaky", flaky, models=("any",))
    recs = verify([tanh_case()], [name], dtypes=["float64"], options=RunOptions(repeat=3))
    rec = next(r for r in recs if r.quantity == "grad_b2")
    assert rec.repeat_count == 3 and rec.verdict == "disagree" and "not deterministic" in rec.message
