"""Hostile model implementations and values (issue 14's review): no false pass, no false alarm.

Each test pins a finding of the adversarial review of harness.models, or a behaviour that review
checked (plug-ins that return junk, edge values, correct evaluations written differently, subtly
wrong ones). The wrong implementations are derived from the model's definition by one slip each
(stated in their names); the right ones are written here from the definition, independently of
harness.models' own steps.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

import harness
from harness.cases import as_cases, case_from_arrays
from harness.floats import FLOAT16, get_format, round_to_format
from harness.implementations.registry import Implementation
from harness.models import ModelStepResult
from harness.models.bounds import model_bounds
from harness.models.oracle import model_truth
from harness.models.plan import build_plan
from harness.models.spec import ModelSpec
from harness.models.torch_steps import torch_model_functional

FAILING = ("disagree", "error", "invalid-input")
TANH = ModelSpec(kind="mlp", hidden=(3,), activation="tanh")


def impl(name: str, fn: Callable[..., Any], framework: str = "torch") -> Implementation:
    return Implementation(name=name, framework=framework, fn=fn, models=("any",))


def small_case(spec: ModelSpec = TANH, dtypes: tuple[str, ...] = ("float64",), reduction: str = "sum", seed: int = 1,
               n: int = 4, d: int = 2, k: int = 2) -> Any:
    rng = np.random.default_rng(seed)
    params = {p: rng.normal(size=s) for p, s in spec.parameter_shapes(d, k).items()}
    return case_from_arrays("hostile", rng.normal(size=(n, d)), rng.normal(size=(n, k)), model=spec, params=params,
                            lr=0.1, dtypes=list(dtypes), reduction=reduction)


def verdicts(case: Any, step: Implementation, dtype: str = "float64") -> list[Any]:
    return harness.verify([case], [step], dtypes=[dtype])


def failing(records: list[Any]) -> list[Any]:
    return [r for r in records if r.verdict in FAILING]


def tampered(name: str, change: Callable[[list[ModelStepResult], dict[str, Any]], Any]) -> Implementation:
    """torch-model-functional's results passed through ``change`` (one hostile edit)."""

    def step(X: Any, y: Any, params: dict[str, Any], **kw: Any) -> Any:
        return change(torch_model_functional(X, y, params, **kw), params)

    return impl(name, step)


# ---------------------------------------------------------------------------------------------------
# finding: past a possible overflow every bound was infinite, so a wrong finite step agreed


def overflow_case(x: float, w1: list[list[float]]) -> Any:
    """float16 tanh net whose first sample's hidden pre-activations are built from ``x`` (near 65504)."""
    spec = ModelSpec(kind="mlp", hidden=(2,), activation="tanh")
    X = np.array([[x, x], [1.0, 2.0]])
    params = {"W1": np.array(w1), "b1": np.zeros(2), "W2": np.array([[0.5], [0.25]]), "b2": np.zeros(1)}
    return case_from_arrays("overflow", X, np.array([[1.0], [0.5]]), model=spec, params=params, lr=0.001, dtypes=["float16"])


def test_a_wrong_step_past_a_float16_overflow_is_caught_and_the_right_one_agrees():
    # z = 40000 + 40000 = 80000 > 65504: every correct float16 evaluation forms inf, tanh(inf) = 1
    # = tanh(80000) to float16. Before the fix every quantity's rigorous bound was inf (any finite
    # value agreed); a step with 3 x the loss and 2 x every gradient and parameter passed (suspect at worst).
    case = overflow_case(40000.0, [[1.0, 0.5], [1.0, 0.25]])
    right = verdicts(case, impl("right", torch_model_functional), "float16")
    assert not failing(right) and {r.verdict for r in right} <= {"agree", "suspect"}
    assert all(math.isfinite(r.rigorous_bound) for r in right)
    doubled = tampered("doubled", lambda res, p: [ModelStepResult(r.loss * 3, {k: v * 2 for k, v in r.grads.items()},
                                                                  {k: v * 2 for k, v in r.params.items()}) for r in res])
    wrong = verdicts(case, doubled, "float16")
    assert {r.quantity for r in failing(wrong)} >= {"grad_b1", "W1", "W2"}


def float16_sequential_tanh_step(X: Any, y: Any, params: dict[str, Any], *, model: Any, lr: float, reduction: str,
                                 steps: int) -> list[ModelStepResult]:
    """A correct float16 step of a one-hidden-layer tanh net (sum reduction) whose products and sums
    are float16 operations left to right: a partial sum may overflow to inf where the exact value
    does not (60000 + 60000 - 60000 - 60000), and tanh(inf) = 1 saturates it to a finite value."""
    h16 = np.float16
    X, y = np.asarray(X, dtype=h16), np.asarray(y, dtype=h16)
    W1, b1, W2, b2 = (np.asarray(params[k], dtype=h16).copy() for k in ("W1", "b1", "W2", "b2"))

    def mm(A: Any, B: Any) -> Any:
        out = np.zeros((A.shape[0], B.shape[1]), dtype=h16)
        with np.errstate(all="ignore"):
            for i in range(A.shape[0]):
                for j in range(B.shape[1]):
                    acc = h16(0)
                    for t in range(A.shape[1]):
                        acc = h16(acc + h16(A[i, t] * B[t, j]))
                    out[i, j] = acc
        return out

    with np.errstate(all="ignore"):
        z = (mm(X, W1) + b1).astype(h16)
        h = np.tanh(z.astype(np.float32)).astype(h16)
        R = ((mm(h, W2) + b2) - y).astype(h16)
        loss = h16(np.sum((R * R).astype(h16), dtype=h16))
        g = (h16(2) * R).astype(h16)
        gW2, gb2 = mm(h.T, g), np.sum(g, axis=0, dtype=h16)
        dz = (mm(g, W2.T) * (h16(1) - h * h)).astype(h16)
        gW1, gb1 = mm(X.T, dz), np.sum(dz, axis=0, dtype=h16)
        grads = {"W1": gW1, "b1": gb1, "W2": gW2, "b2": gb2}
        lr16 = h16(lr)
        new = {k: (v - (lr16 * grads[k]).astype(h16)).astype(h16) for k, v in zip(("W1", "b1", "W2", "b2"), (W1, b1, W2, b2), strict=True)}
    return [ModelStepResult(loss, grads, new)]


def test_a_correct_evaluation_whose_partial_sum_overflows_and_saturates_is_no_false_alarm():
    # z = 60000 * 1 + 60000 * (-1)... with X = [60000, 60000, -60000, -60000] and W1 = 1: exact z = 0,
    # left to right 60000 + 60000 = inf, then inf: tanh(inf) = 1 where tanh(0) = 0 -- a finite result
    # 1 away from the exact one, which the saturation rule (SATURATION_LIMITS) must cover
    spec = ModelSpec(kind="mlp", hidden=(1,), activation="tanh")
    X = np.array([[60000.0, 60000.0, -60000.0, -60000.0], [1.0, 0.5, 0.25, 2.0]])
    params = {"W1": np.ones((4, 1)), "b1": np.zeros(1), "W2": np.array([[0.5]]), "b2": np.array([0.25])}
    case = case_from_arrays("saturate", X, np.array([[0.75], [0.5]]), model=spec, params=params, lr=0.0078125,
                            dtypes=["float16"])
    got = float16_sequential_tanh_step(X, case.values["y"], dict(params), model=spec, lr=0.0078125, reduction="sum", steps=1)
    assert float(got[0].loss) == pytest.approx((0.5 * 1 + 0.25 - 0.75) ** 2 + (0.5 * math.tanh(3.75) + 0.25 - 0.5) ** 2, rel=1e-2)
    records = verdicts(case, impl("f16-left-to-right", float16_sequential_tanh_step, "numpy"), "float16")
    assert not failing(records), [r.message for r in failing(records)]


def test_the_saturation_bound_covers_the_limits_and_the_masks_follow_the_signs():
    spec = ModelSpec(kind="mlp", hidden=(1,), activation="tanh")
    inputs = {"y": np.array([[0.0]]), "b1": np.zeros(1), "W2": np.ones((1, 1)), "b2": np.zeros(1)}

    def bounds_of(x: list[float]) -> Any:
        graph = build_plan(spec, 1, len(x), 1, "sum", 0.001)
        case = {**inputs, "X": np.array([x]), "W1": np.ones((len(x), 1))}
        return model_bounds(graph, model_truth(graph, case, FLOAT16).node_values, FLOAT16)

    # 60000 - 60000: no partial sum of one sign can leave float16's range: nothing non-finite is
    # allowed downstream of the hidden layer (grad_W1 = X^T dz may: 60000 times dz's bound); the
    # bounded tanh keeps the loss's bound at (|tanh| <= 1)^2 = 1 however uncertain z is
    mb = bounds_of([60000.0, -60000.0])
    for q in ("loss", "grad_b1", "grad_W2", "grad_b2", "W2", "b2"):
        assert not bool(np.any(mb.inf_allowed[q] | mb.nan_allowed[q])), q
    assert 1.0 <= float(mb.rigorous["loss"]) < 1.01
    # 60000 + 60000 - 60000 - 60000: +inf and -inf partial sums (NaN) possible at z = 0; tanh makes
    # them +-1 or NaN: downstream, NaN is allowed but never inf, and the finite loss's bound reaches
    # (+-1 - 0)^2 = 1 (a correct evaluation may give h = +-1 where the exact h is 0)
    mb = bounds_of([60000.0, 60000.0, -60000.0, -60000.0])
    assert bool(mb.nan_allowed["loss"]) and not bool(mb.inf_allowed["loss"])
    assert float(mb.rigorous["loss"]) >= 1.0 and math.isfinite(float(mb.rigorous["loss"]))
    # 40000 + 40000: only +inf at z; tanh(+inf) = 1, finite: no NaN and no inf downstream
    mb = bounds_of([40000.0, 40000.0])
    assert not bool(mb.nan_allowed["loss"]) and not bool(mb.inf_allowed["loss"])


def test_an_all_nan_step_past_a_one_signed_overflow_is_caught():
    # before: NaN was allowed on every element depending on an intermediate that may overflow,
    # whatever its sign: an all-NaN step graded "overflow" everywhere (a passing run)
    case = overflow_case(40000.0, [[1.0, 0.5], [1.0, 0.25]])
    nan = tampered("nan", lambda res, p: [ModelStepResult(r.loss * math.nan, {k: v * math.nan for k, v in r.grads.items()},
                                                          {k: v * math.nan for k, v in r.params.items()}) for r in res])
    records = verdicts(case, nan, "float16")
    assert {r.quantity for r in records if r.verdict == "disagree"} == {r.quantity for r in records}


# ---------------------------------------------------------------------------------------------------
# finding: extra keys in grads/params were ignored; contract: params must not be written into


def test_a_grads_mapping_with_a_parameter_the_model_does_not_have_is_an_error_naming_it():
    extra = tampered("extra", lambda res, p: [ModelStepResult(r.loss, {**r.grads, "W3": r.grads["W1"] * 0}, r.params)
                                              for r in res])
    (rec,) = verdicts(small_case(), extra)
    assert rec.verdict == "error" and "'W3'" in rec.message and "not a parameter of the model" in rec.message


def test_params_written_in_place_is_an_error_naming_them():
    def inplace(X: Any, y: Any, params: dict[str, Any], **kw: Any) -> Any:
        res = torch_model_functional(X, y, params, **kw)
        with torch.no_grad():
            params["W2"].copy_(res[-1].params["W2"])  # the update written into the tensor the harness handed
        return res

    (rec,) = verdicts(small_case(), impl("inplace", inplace))
    assert rec.verdict == "error" and "mutated its input W2" in rec.message


def test_the_leaky_relu_kink_message_names_its_convention():
    spec = ModelSpec(kind="mlp", hidden=(2,), activation="leaky_relu")
    params = {"W1": np.array([[1.0, -1.0]]), "b1": np.zeros(2), "W2": np.array([[0.5], [0.75]]), "b2": np.array([0.25])}
    case = case_from_arrays("kink", np.array([[0.0], [1.0]]), np.array([[1.0], [-1.0]]), model=spec, params=params, lr=0.25)
    records = verdicts(case, impl("right", torch_model_functional))
    assert not failing(records)
    kink = [r for r in records if "kink" in r.message]
    assert kink and all("derivative = 1/100 there (torch's is 1/100)" in r.message for r in kink)


# ---------------------------------------------------------------------------------------------------
# plug-ins returning junk (checked by the review; pinned)


def _with_grad(name: str, value: float) -> Callable[[list[ModelStepResult], dict[str, Any]], Any]:
    def change(res: list[ModelStepResult], p: dict[str, Any]) -> Any:
        g = dict(res[0].grads)
        g[name] = g[name].clone()
        g[name].view(-1)[0] = value
        return [ModelStepResult(res[0].loss, g, res[0].params)]
    return change


class RaisingGrads(dict):  # type: ignore[type-arg]
    def __getitem__(self, key: Any) -> Any:
        raise RuntimeError("boom")


def _exit(res: Any, p: Any) -> Any:
    sys.exit(0)


JUNK: list[tuple[str, Callable[..., Any], str, str]] = [
    ("nan-grad", _with_grad("W1", math.nan), "disagree", "grad_W1"),
    ("inf-grad", _with_grad("b1", math.inf), "disagree", "grad_b1"),
    ("negative-loss", lambda res, p: [ModelStepResult(-r.loss, r.grads, r.params) for r in res], "disagree", "loss"),
    ("not-updated", lambda res, p: [ModelStepResult(r.loss, r.grads, {k: v.clone() for k, v in p.items()}) for r in res],
     "disagree", "W1"),
    ("missing-key", lambda res, p: [ModelStepResult(r.loss, {k: v for k, v in r.grads.items() if k != "b2"}, r.params)
                                    for r in res], "error", "has no 'b2'"),
    ("transposed-W1", lambda res, p: [ModelStepResult(r.loss, {**r.grads, "W1": r.grads["W1"].T.contiguous()}, r.params)
                                      for r in res], "error", "has shape (3, 2), expected (2, 3)"),
    ("narrower", lambda res, p: [ModelStepResult(r.loss, {**r.grads, "W1": r.grads["W1"].half()}, r.params) for r in res],
     "error", "narrower dtype"),
    ("exit", _exit, "error", "sys.exit(0)"),
    ("raising-mapping", lambda res, p: [ModelStepResult(r.loss, RaisingGrads(r.grads), r.params) for r in res],
     "error", "RuntimeError: boom"),
]


@pytest.mark.parametrize(("name", "change", "verdict", "where"), JUNK, ids=[j[0] for j in JUNK])
def test_junk_from_a_plugin_fails_with_a_message_naming_it(name, change, verdict, where):
    records = verdicts(small_case(), tampered(name, change))
    bad = [r for r in records if r.verdict == verdict]
    assert bad, [(r.quantity, r.verdict) for r in records]
    assert any(where == r.quantity or where in r.message for r in bad)


def test_a_generator_of_results_is_graded():
    records = verdicts(small_case(), tampered("gen", lambda res, p: (r for r in res)))
    assert records and all(r.verdict == "agree" for r in records)


# ---------------------------------------------------------------------------------------------------
# correct evaluations written differently (no false alarm) and subtle slips (caught)


def hand_step(act: Callable[[Any], Any], dact: Callable[[Any, Any], Any], *, b_axis: int = 0, mean_over_n: bool = False,
              einsum: bool = False) -> Callable[..., list[ModelStepResult]]:
    """A one-hidden-layer step written by hand in torch in the case's dtype: ``dact(z, h)`` is the
    activation's derivative; ``b_axis`` the axis grad_b2 sums over (0 is right); ``mean_over_n``
    divides the mean by N instead of N K; ``einsum`` computes the weight gradients by einsum."""

    def step(X: Any, y: Any, params: dict[str, Any], *, model: Any, lr: float, reduction: str, steps: int) -> Any:
        p = {k: v.clone() for k, v in params.items()}
        n, k = y.shape
        out = []
        for _ in range(steps):
            z = X @ p["W1"] + p["b1"]
            h = act(z)
            R = h @ p["W2"] + p["b2"] - y
            c = 1.0 if reduction == "sum" else 1.0 / (n if mean_over_n else n * k)
            loss = c * (R * R).sum()
            g = 2 * c * R
            dz = (g @ p["W2"].T) * dact(z, h)
            grads = {
                "W1": torch.einsum("nd,nh->dh", X, dz) if einsum else X.T @ dz, "b1": dz.sum(dim=0),
                "W2": torch.einsum("nh,nk->hk", h, g) if einsum else h.T @ g,
                "b2": g.sum(dim=0) if b_axis == 0 else g.sum(dim=1)[:k],
            }
            p = {name: p[name] - lr * grads[name] for name in p}
            out.append(ModelStepResult(loss, grads, p))
        return out

    return step


def _tanh_exp(z: Any) -> Any:
    e = torch.exp(2 * z)
    return (e - 1) / (e + 1)


def _gelu_grad(z: Any, h: Any) -> Any:
    return 0.5 * (1 + torch.erf(z / math.sqrt(2))) + z * torch.exp(-z * z / 2) / math.sqrt(2 * math.pi)


def _gelu_tanh_grad(z: Any, h: Any) -> Any:
    zz = z.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(torch.nn.functional.gelu(zz, approximate="tanh").sum(), zz)
    return g


RIGHT = [
    ("tanh-exp-formula", "tanh", hand_step(_tanh_exp, lambda z, h: 1 - h * h), ("float64", "float32")),
    ("tanh-einsum", "tanh", hand_step(torch.tanh, lambda z, h: 1 - h * h, einsum=True), ("float64", "float32", "float16", "bfloat16")),
    ("sigmoid-1-over", "sigmoid", hand_step(lambda z: 1 / (1 + torch.exp(-z)), lambda z, h: h * (1 - h)),
     ("float64", "float32", "float16", "bfloat16")),
    ("softplus-sigmoid", "softplus", hand_step(torch.nn.functional.softplus, lambda z, h: torch.sigmoid(z)),
     ("float64", "float32", "bfloat16")),
    ("gelu-by-hand", "gelu", hand_step(torch.nn.functional.gelu, _gelu_grad), ("float64", "float32", "float16")),
]


@pytest.mark.parametrize(("name", "act", "step", "dtypes"), RIGHT, ids=[r[0] for r in RIGHT])
def test_correct_steps_written_differently_agree(name, act, step, dtypes):
    spec = ModelSpec(kind="mlp", hidden=(3,), activation=act)
    case = small_case(spec, dtypes, reduction="mean", seed=3, n=5)
    for dt in dtypes:
        records = verdicts(case, impl(name, step), dt)
        assert not failing(records), (dt, [r.message for r in failing(records)])


WRONG = [
    ("sigmoid-s-times-1-plus-s", "sigmoid", hand_step(torch.sigmoid, lambda z, h: h * (1 + h)), "sum", "grad_W1"),
    ("softplus-derivative-sign-slip", "softplus",
     hand_step(torch.nn.functional.softplus, lambda z, h: 1 / (1 + torch.exp(z))), "sum", "grad_W1"),
    ("gelu-tanh-approximation", "gelu",
     hand_step(lambda z: torch.nn.functional.gelu(z, approximate="tanh"), _gelu_tanh_grad), "sum", "grad_W1"),
    ("b-summed-over-outputs", "tanh", hand_step(torch.tanh, lambda z, h: 1 - h * h, b_axis=1), "sum", "grad_b2"),
    ("mean-over-n-not-nk", "tanh", hand_step(torch.tanh, lambda z, h: 1 - h * h, mean_over_n=True), "mean", "loss"),
]


@pytest.mark.parametrize(("name", "act", "step", "reduction", "quantity"), WRONG, ids=[w[0] for w in WRONG])
def test_subtly_wrong_steps_are_caught_in_float64(name, act, step, reduction, quantity):
    spec = ModelSpec(kind="mlp", hidden=(3,), activation=act)
    records = verdicts(small_case(spec, reduction=reduction, seed=3, n=5), impl(name, step))
    assert quantity in {r.quantity for r in records if r.verdict == "disagree"}


def test_gelu_tanh_approximation_passes_in_bfloat16_within_its_bounds():
    # the tanh approximation differs from GELU's erf form by < 1e-3: far below bfloat16's bounds
    # (it is a correct bfloat16 GELU for all the bounds can tell); float64 catches it (above)
    spec = ModelSpec(kind="mlp", hidden=(3,), activation="gelu")
    step = hand_step(lambda z: torch.nn.functional.gelu(z, approximate="tanh"), _gelu_tanh_grad)
    records = verdicts(small_case(spec, ("bfloat16",), seed=3, n=5), impl("gelu-tanh", step), "bfloat16")
    assert not failing(records)
    fmt = get_format("bfloat16")
    assert round_to_format(np.array([0.5 + 1e-3]), fmt)[0] == 0.5  # below half an ULP at 1/2 in bfloat16


def test_an_error_where_every_correct_evaluation_is_exact_is_not_called_a_vacuous_bound():
    # cases/models.toml's 1-1-1 ReLU net: integers, every quantity exact in float32; its loss tripled
    # was reported "rigorous bound vacuous" (the bound is 0, not infinite)
    case = [c for c in as_cases("cases/models.toml") if c.id == "model-relu-1-1-1"]
    tripled = tampered("tripled", lambda res, p: [ModelStepResult(r.loss * 3, r.grads, r.params) for r in res])
    (loss,) = [r for r in harness.verify(case, [tripled], dtypes=["float32"]) if r.quantity == "loss"]
    assert loss.verdict == "disagree" and loss.rigorous_bound == 0.0
    assert "computed 300.0, exact 100.0" in loss.message and "every correct evaluation is exact" in loss.message
    assert "vacuous" not in loss.message


@pytest.mark.parametrize("act", ["tanh", "gelu", "sigmoid"])
def test_huge_pre_activations_are_graded_not_a_harness_failure(act):
    # float32 inputs near 3e38: sech(2e38)**2, Phi(-2e38), sigmoid'(2e38) are balls with exponents
    # near -1e38; their exact fraction (1 << 1e38) raised OverflowError: "harness failure while
    # grading" for every correct implementation. They round to 0 in every dtype.
    spec = ModelSpec(kind="mlp", hidden=(2,), activation=act)
    X = np.array([[2.0e38, -1.0e38], [1.0, 0.5]])
    params = {"W1": np.array([[1.0, 0.5], [0.5, -1.0]]), "b1": np.zeros(2), "W2": np.array([[0.5], [0.25]]), "b2": np.zeros(1)}
    case = case_from_arrays("huge", X, np.array([[1.0], [0.5]]), model=spec, params=params, lr=0.01, dtypes=["float32"])
    records = verdicts(case, impl("right", torch_model_functional), "float32")
    assert not failing(records), [r.message for r in failing(records)]
    assert {r.verdict for r in records} <= {"agree", "overflow"}


def test_an_expression_undefined_at_the_inputs_is_invalid_input_not_a_harness_failure():
    # a / (x1 - 1) at x1 = 1: the exact step does not exist; it was "harness failure while grading"
    spec = ModelSpec(kind="expression", expression="a/(x1 - 1)", parameters=("a",))
    case = case_from_arrays("undefined", np.array([[1.0], [2.0]]), np.array([[1.0], [0.0]]), model=spec,
                            params={"a": np.array(1.0)}, lr=0.125, dtypes=["float64"])
    (rec,) = verdicts(case, impl("right", torch_model_functional))
    assert rec.verdict == "invalid-input" and "undefined at the case's inputs" in rec.message
    assert "division by an exact zero" in rec.message and "harness failure" not in rec.message


# ---------------------------------------------------------------------------------------------------
# finding (helper-73): a ball the first precision could not enclose stopped the precision loop, and
# every quantity it reached went ungraded: a wrong step agreed


def _times_two_plus_one(results: list[ModelStepResult], params: dict[str, Any]) -> list[ModelStepResult]:
    for r in results:
        r.loss = r.loss * 2 + 1
        r.grads = {p: g * 2 + 1 for p, g in r.grads.items()}
        r.params = {p: v * 2 + 1 for p, v in r.params.items()}
    return results


@pytest.mark.parametrize(("activation", "w"), [("sigmoid", -1e100), ("softplus", 1e100), ("sigmoid", -1.7e308)])
def test_an_argument_beyond_the_first_precision_is_enclosed_and_a_wrong_step_disagrees(activation: str, w: float):
    # one hidden pre-activation at w (sigmoid(-1e100) = 0 and softplus(1e100) = 1e100 in every correct float64
    # evaluation: the step is finite). At 128 bits Arb's exp of an argument above 2**256 is [+/- inf] (and the
    # loop stopped there: all 9 quantities "not graded there", the wrong step below agreed with exit 0); the truth
    # is finite at a higher precision, and every quantity is graded
    spec = ModelSpec(kind="mlp", hidden=(2,), activation=activation)
    params = {"W1": np.array([[w, 0.5]]), "b1": np.array([0.0, 0.25]), "W2": np.array([[1.0], [0.5]]), "b2": np.zeros(1)}
    case = case_from_arrays("huge-argument", np.array([[1.0], [0.5]]), np.array([[0.5], [0.25]]), model=spec,
                            params=params, lr=0.125, dtypes=["float64"])
    truth = model_truth(build_plan(spec, 2, 1, 1, "sum", 0.125), {"X": case.values["X"], "y": case.values["y"], **params},
                        get_format("float64"))
    assert truth.precision_bits > 128 and all(np.isfinite(r).all() for r in truth.radius.values())
    right = verdicts(case, impl("right", torch_model_functional))
    assert not failing(right) and all("not graded" not in r.message for r in right), [r.message for r in right]
    wrong = verdicts(case, tampered("times-two-plus-one", _times_two_plus_one))
    assert len(wrong) == 9 and all(r.verdict == "disagree" for r in wrong), [(r.quantity, r.verdict) for r in wrong]


@pytest.mark.parametrize(("activation", "bits"), [("softplus", 2048), ("tanh", 2048)])
def test_pre_activations_beyond_float64_are_enclosed_at_the_wide_precisions(activation: str, bits: int):
    # float64 hidden pre-activations near 2**1033 (X and W1 near 2**514: beyond float64, a correct step overflows to
    # inf and saturates): softplus and tanh's derivative are [+/- inf] at 1024 bits; they were "not graded there"
    # (so anything passed) and are enclosed at the precision named
    big = 2.0**514
    X = np.array([[3.0, -1.0], [1.0, 2.0]]) * big
    spec = ModelSpec(kind="mlp", hidden=(2,), activation=activation)
    params = {"W1": np.array([[2.0, -1.0], [1.0, 3.0]]) * big, "b1": np.array([0.5, -1.0]),
              "W2": np.array([[1.0], [-2.0]]), "b2": np.array([0.25])}
    truth = model_truth(build_plan(spec, 2, 2, 1, "sum", 0.125), {"X": X, "y": np.ones((2, 1)), **params},
                        get_format("float64"))
    assert truth.precision_bits == bits and f"arb-ball-{bits}bit" in truth.method
    assert all(np.isfinite(r).all() for r in truth.radius.values()), {q: r for q, r in truth.radius.items()}


def test_a_quantity_undefined_at_every_element_is_unsupported_never_agree():
    # log(a) at a = -1: no exact value exists anywhere (the ball is NaN at every precision). Each record graded
    # nothing, yet was agree (showing an exact value of 0), and the run passed with exit 0: now unsupported (the
    # harness cannot grade it; not a failure of the step), and a run of nothing else graded nothing: exit 1
    spec = ModelSpec(kind="expression", expression="log(a) * x1", parameters=("a",))
    case = case_from_arrays("undefined-everywhere", np.array([[1.0], [2.0]]), np.array([[1.0], [0.0]]), model=spec,
                            params={"a": np.array(-1.0)}, lr=0.125, dtypes=["float64"])
    records = verdicts(case, impl("right", torch_model_functional))
    assert records and all(r.verdict == "unsupported" for r in records), [(r.quantity, r.verdict) for r in records]
    assert all("at every element" in r.message and "not graded" in r.message and r.exact == "nan" for r in records)
    assert all("straddles" not in r.message for r in records)  # (an unknown element is not also "not decided")
    outcome = harness.verdicts.run_outcome(records)
    assert outcome.code == 1 and "nothing was graded" in " ".join(outcome.reasons)


def test_the_oracle_formula_undefined_where_the_derivative_exists_is_not_a_false_alarm():
    # a*sqrt(b*x1) with x1 = 0 in one row: that row's term does not depend on b (grad_b is finite), but the
    # oracle's derivative x1 / (2 sqrt(b x1)) is 0/0 there: grad_b and b are not graded (unsupported), and a correct
    # step does not fail (helper-74: invalid-input, exit 2, in a first version of the rule above)
    spec = ModelSpec(kind="expression", expression="a*sqrt(b*x1)", parameters=("a", "b"))
    case = case_from_arrays("sqrt-edge", np.array([[0.0], [1.0]]), np.array([[0.0], [1.0]]), model=spec,
                            params={"a": np.array(1.0), "b": np.array(2.0)}, lr=0.125, dtypes=["float64"])
    records = verdicts(case, impl("right", torch_model_functional))
    assert not failing(records), [(r.quantity, r.verdict, r.message) for r in failing(records)]
    assert {r.quantity for r in records if r.verdict == "unsupported"} == {"grad_b", "b"}
    assert {r.verdict for r in records if r.quantity in ("loss", "grad_a", "a")} == {"agree"}


def _band_case() -> Any:
    """A softplus MLP whose exact grad_W2[0] is about 2**1501 (W1[0, 0] = 2**700, W2[0] = 2**100, lr = 1): beyond
    float64, every correct evaluation gives inf there (and W2'[0] = -inf); the other elements are ordinary."""
    spec = ModelSpec(kind="mlp", hidden=(2,), activation="softplus")
    params = {"W1": np.array([[2.0**700, 1.0]]), "b1": np.zeros(2), "W2": np.array([[2.0**100], [1.0]]), "b2": np.zeros(1)}
    return case_from_arrays("band", np.array([[1.0]]), np.array([[0.0]]), model=spec, params=params, lr=1.0,
                            dtypes=["float64"])


def test_exact_values_just_beyond_the_exact_band_are_graded():
    # helper-74: a ball whose midpoint lay in [2**1500, 2**1502) was "not finite" at every precision (the test that
    # the ball lies beyond 2**1500 asked for a margin of two binades), so grad_W2[0] and W2[0] were never graded: a
    # step that left W2[0] unchanged with a zero gradient passed with exit 0. Now they are graded, and a finite value
    # there is disagree: grad_W2[0] sums the one product h * 2r of factors near 2**700 and 2**801, which overflows
    # in every correct evaluation (harness.models.bounds.never_finite; it was suspect within a vacuous bound)
    case = _band_case()
    right = verdicts(case, impl("right", torch_model_functional))
    assert not failing(right) and all("not graded" not in r.message for r in right), [r.message for r in right]

    def forgot_unit0(results: list[ModelStepResult], params: dict[str, Any]) -> list[ModelStepResult]:
        for r in results:
            g = r.grads["W2"].clone()
            g[0, 0] = 0.0
            r.grads["W2"] = g
            w = r.params["W2"].clone()
            w[0, 0] = params["W2"][0, 0]
            r.params["W2"] = w
        return results

    wrong = {r.quantity: r for r in verdicts(case, tampered("forgot-unit-0", forgot_unit0))}
    assert wrong["grad_W2"].verdict == "disagree" and wrong["W2"].verdict == "disagree", wrong
    assert "finite where no correct evaluation is" in wrong["grad_W2"].message and "not graded" not in wrong["W2"].message


def test_an_exact_loss_at_two_to_the_1500_is_not_a_false_alarm():
    # a*exp(b*x1) at b = 0, a = 2**750: the exact loss is 2**1500 (torch: inf, correct); it was invalid-input
    # (nothing enclosed in the band) where 2**1480 and 2**1520 were graded overflow
    spec = ModelSpec(kind="expression", expression="a*exp(b*x1)", parameters=("a", "b"))
    case = case_from_arrays("band-loss", np.array([[1.0]]), np.array([[0.0]]), model=spec,
                            params={"a": np.array(2.0**750), "b": np.array(0.0)}, lr=0.125, dtypes=["float64"])
    records = verdicts(case, impl("right", torch_model_functional))
    assert not failing(records) and {r.verdict for r in records} <= {"agree", "overflow"}, [(r.quantity, r.verdict) for r in records]


@pytest.mark.parametrize("log2_product", [1023.0, 1023.99, 1024.5, 1025.01, 1026.0, 1100.0])
@pytest.mark.parametrize("expression", ["a*x1*x2", "(a*x1)**2", "a*x1 + x2*x2"])
def test_correct_steps_with_products_near_twice_the_range_still_pass(log2_product: float, expression: str):
    # the product rule of never_finite (a product past twice float64's range is inf in every correct evaluation)
    # must not claim a product just below it, nor one between the range and twice it (which rounds to inf only
    # past the rounding threshold): torch's correct steps pass on both sides, with products rounded as they come
    half = 2.0 ** (log2_product / 2)
    X = np.array([[half, half], [1.0, 2.0]])
    spec = ModelSpec(kind="expression", expression=expression, parameters=("a",))
    case = case_from_arrays("near-range", X, np.array([[0.0], [1.0]]), model=spec, params={"a": np.array(1.0)},
                            lr=2.0**-60, dtypes=["float64"])
    records = verdicts(case, impl("right", torch_model_functional))
    assert records and not failing(records), [(r.quantity, r.verdict, r.computed, r.message) for r in failing(records)]


# ---------------------------------------------------------------------------------------------------
# finding (helper-65, eighteenth round; fixed in the twenty-first): an expression was graded against SymPy's
# evaluated form, so a correct step that evaluated the text as written was disagree

_WRITTEN_TEXTS: dict[str, Callable[[Any, Any], Any]] = {
    "log(exp(a*x1))": lambda x, a: torch.log(torch.exp(a * x)),
    "(a*x1 + 1) - 1": lambda x, a: (a * x + 1) - 1,
    "exp(log(a*x1))": lambda x, a: torch.exp(torch.log(a * x)),
    "sqrt((a*x1)**2)": lambda x, a: torch.sqrt((a * x) ** 2),
    "(a*x1*3)/3": lambda x, a: (a * x * 3) / 3,
    # a unary minus of a sum: Python's - on the parse distributed it and cancelled 1 - 1 (-(a*x1 + 1 - 1) was -a*x1:
    # twenty-third round); a sum of negative terms only, and a difference of a coefficient times a sum
    "-(a*x1 + 1 - 1)": lambda x, a: -((a * x + 1) - 1),
    "-(a*x1 + 1 - 1) - 1": lambda x, a: -((a * x + 1) - 1) - 1,
    "1 - 2*(a*x1 + 1 - 1)": lambda x, a: 1 - 2 * ((a * x + 1) - 1),
    # lowercase abs was evaluated by the parse (only the names SymPy knows get evaluate=False): Abs(a*x1) (helper-92)
    "abs((a*x1 + 1) - 1)": lambda x, a: torch.abs((a * x + 1) - 1),
}


def _text_step(text: str, slip: float = 1.0) -> Implementation:
    """A step that evaluates ``text`` as written, in torch, trained by autograd (``slip`` times the loss's gradient:
    1 for the correct step)."""
    from harness.models.forward import sgd_steps

    fn = _WRITTEN_TEXTS[text]

    def forward(X: Any, p: Any) -> Any:
        out = fn(X[:, 0:1], p["a"])
        return out if slip == 1.0 else out * slip - out.detach() * (slip - 1)  # same values, gradient times slip

    def step(X: Any, y: Any, params: Any, *, model: Any, lr: float, reduction: str, steps: int) -> Any:
        return sgd_steps(forward, X, y, params, lr=lr, reduction=reduction, steps=steps)

    return impl(f"written-{text}-{slip}", step)


@pytest.mark.parametrize("text", list(_WRITTEN_TEXTS))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_an_expression_is_graded_as_written(text: str, dtype: str):
    # log(exp(a x1)) and (a x1 + 1) - 1 evaluated as written were disagree (up to 4.18 times the rigorous bound, float64)
    # where |a x1| <= 1.5e-3: SymPy had rewritten both to a x1, whose bounds lack the text's roundings. Now the parse
    # keeps the text; torch-model-functional (lambdify of the parse) and a hand-written step of the text both pass,
    # and a gradient 1.01 times too large is still caught
    rng = np.random.default_rng(0)
    X, y = rng.uniform(0.1, 1.0, size=(64, 1)) * 1e-3, rng.normal(size=(64, 1)) * 1e-3
    spec = ModelSpec(kind="expression", expression=text, parameters=("a",))
    case = case_from_arrays("as-written", X, y, model=spec, params={"a": np.array(1.5)}, lr=0.125, dtypes=[dtype])
    right = harness.verify([case], [_text_step(text), "torch-model-functional"], dtypes=[dtype])
    assert right and all(r.verdict == "agree" for r in right), [(r.implementation, r.quantity, r.verdict) for r in right
                                                               if r.verdict != "agree"]
    wrong = {r.quantity: r.verdict for r in verdicts(case, _text_step(text, slip=1.01), dtype)}
    assert wrong["grad_a"] == "disagree", wrong


def _slipped_step(name: str, fn: Callable[[Any, Any], Any], slip: float) -> Implementation:
    """A step that computes ``fn(x1, params)`` in torch, trained by autograd with ``slip`` times the loss's gradient."""
    from harness.models.forward import sgd_steps

    def forward(X: Any, p: Any) -> Any:
        out = fn(X[:, 0:1], p)
        return out if slip == 1.0 else out * slip - out.detach() * (slip - 1)

    def step(X: Any, y: Any, params: Any, *, model: Any, lr: float, reduction: str, steps: int) -> Any:
        return sgd_steps(forward, X, y, params, lr=lr, reduction=reduction, steps=steps)

    return impl(f"{name}-{slip}", step)


@pytest.mark.parametrize(("text", "fn", "params", "xs", "dtype", "slip"), [
    # float32, c = 2**30: in any order the three-term sum a*x1 + c - c loses a*x1 (a bound about 64 wide)
    ("a*x1 + (c - c)", lambda x, p: p["a"] * x + (p["c"] - p["c"]), {"a": 1.5, "c": 2.0**30}, (0.1, 1.0), "float32", 1.01),
    # float16: x1/(a*b) overflows (a*b = 2**17), the text's x1/a/b does not: the bound was vacuous (inf)
    ("(x1/a)/b", lambda x, p: (x / p["a"]) / p["b"], {"a": 256.0, "b": 512.0}, (100.0, 1000.0), "float16", 2.0),
])
def test_brackets_narrow_the_bound(text: str, fn: Callable[[Any, Any], Any], params: dict[str, float],
                                   xs: tuple[float, float], dtype: str, slip: float):
    # helper-76 (twenty-first round; fixed in the twenty-third): SymPy's parse merged a bracketed sum or quotient into
    # the one around it, so the bound covered every order of the merged chain. With a*x1 + (c - c) in float32, a
    # gradient 10 times too large agreed (bound ratio 0.02); (x1/a)/b was planned as x1/(a*b). Now a bracket is one
    # node, computed first: a correct step of the text and torch-model-functional agree, the wrong gradient is caught
    rng = np.random.default_rng(0)
    X = rng.uniform(*xs, size=(32, 1))
    spec = ModelSpec(kind="expression", expression=text, parameters=tuple(params))
    case = case_from_arrays("bracketed", X, rng.normal(size=(32, 1)) * 1e-3, model=spec,
                            params={k: np.array(v) for k, v in params.items()}, lr=0.125, dtypes=[dtype])
    right = harness.verify([case], [_slipped_step("text", fn, 1.0), "torch-model-functional"], dtypes=[dtype])
    assert len(right) == 10 and all(r.verdict == "agree" for r in right), [(r.implementation, r.quantity, r.verdict)
                                                                             for r in right if r.verdict != "agree"]
    wrong = {r.quantity: r.verdict for r in verdicts(case, _slipped_step("text", fn, slip), dtype)}
    assert wrong["grad_a"] == "disagree", wrong


@pytest.mark.parametrize(("text", "params", "dtype", "shift"), [
    ("x1 - a/0.5", {"a": 1.5}, "float64", 0.0),  # printed -a/1/2 + x1 by lambdify: x1 - a/2
    ("x1 - 1.5*a/1e-3", {"a": 0.25}, "float32", 0.0),
    # printed -a*b*c + x1: a*b = 2**17 overflows float16, the text's b*c = 1 does not (y = x1 - 256: a small loss)
    ("x1 - a*(b*c)", {"a": 256.0, "b": 512.0, "c": 2.0**-9}, "float16", 256.0),
])
def test_torch_model_functional_computes_the_parse_not_lambdifys_text(text: str, params: dict[str, float], dtype: str,
                                                                       shift: float):
    # helper-90: torch-model-functional ran sympy.lambdify's printed text of the parse, which is not the parse: a
    # quotient by a decimal after a minus lost its bracket (x1 - a/0.5 computed x1 - a/2: disagree on every quantity)
    # and a bracketed product after a minus was re-associated (x1 - a*(b*c) overflowed float16 where the text does
    # not). It now evaluates the parse node by node, in the plan's order
    spec = ModelSpec(kind="expression", expression=text, parameters=tuple(params))
    X = np.linspace(0.5, 1.5, 8).reshape(8, 1)
    case = case_from_arrays("parse", X, X - shift, model=spec, params={k: np.array(v) for k, v in params.items()},
                            lr=2.0**-20, dtypes=[dtype])
    records = harness.verify([case], ["torch-model-functional"], dtypes=[dtype])
    assert records and all(r.verdict == "agree" for r in records), [(r.quantity, r.verdict, r.message[:160]) for r in records
                                                                    if r.verdict != "agree"]


def test_a_negative_power_of_a_bracketed_product_is_not_spread_over_its_factors():
    # helper-92: x1*(a*b)**-2 was planned (and run by torch-model-functional) as x1/(a**2*b**2): with a = 2**70,
    # b = 2**-70 in float32, a**2 overflows where the text's a*b = 1 does not, every bound was vacuous, and a gradient
    # 100 times too large agreed. The power is now rebuilt unevaluated: 1/((a*b)**2), as written
    rng = np.random.default_rng(0)
    X = rng.uniform(100.0, 1000.0, size=(32, 1))
    spec = ModelSpec(kind="expression", expression="x1*(a*b)**-2", parameters=("a", "b"))
    case = case_from_arrays("neg-power", X, X + rng.normal(size=(32, 1)), model=spec,
                            params={"a": np.array(2.0**70), "b": np.array(2.0**-70)}, lr=2.0**-20, dtypes=["float32"])
    fn = lambda x, p: x * (p["a"] * p["b"]) ** -2  # noqa: E731
    right = harness.verify([case], [_slipped_step("text", fn, 1.0), "torch-model-functional"], dtypes=["float32"])
    assert len(right) == 10 and all(r.verdict == "agree" for r in right), [(r.implementation, r.quantity, r.verdict)
                                                                             for r in right if r.verdict != "agree"]
    wrong = {r.quantity: r.verdict for r in verdicts(case, _slipped_step("text", fn, 100.0), "float32")}
    assert wrong["grad_a"] == "disagree", wrong


def test_a_chain_without_brackets_is_bounded_in_any_order():
    # the other side of test_brackets_narrow_the_bound: a*x1 + c - c, written without brackets, is one sum whose terms an
    # implementation may add in any order (README, "Any model"): a step that computes a*x1 + (c - c) is correct there
    spec = ModelSpec(kind="expression", expression="a*x1 + c - c", parameters=("a", "c"))
    rng = np.random.default_rng(0)
    case = case_from_arrays("chain", rng.uniform(0.1, 1.0, size=(32, 1)), rng.normal(size=(32, 1)) * 1e-3, model=spec,
                            params={"a": np.array(1.5), "c": np.array(2.0**30)}, lr=0.125, dtypes=["float32"])
    other_order = _slipped_step("other-order", lambda x, p: p["a"] * x + (p["c"] - p["c"]), 1.0)
    records = harness.verify([case], [other_order, "torch-model-functional"], dtypes=["float32"])
    assert len(records) == 10 and all(r.verdict == "agree" for r in records), [(r.implementation, r.quantity, r.verdict)
                                                                               for r in records if r.verdict != "agree"]


@pytest.mark.parametrize("text", ["sqrt(2)*a*x1", "exp(1)*a*x1", "log(2)*a*x1 + exp(0)", "2**3*a*x1", "2**-2*a*x1",
                                  "tanh(1)*a*x1 + sin(1) - cos(0)", "erf(1)*a + Abs(-2)*x1"])
def test_functions_of_constants_run_and_pass(text: str):
    # torch-model-functional raised TypeError on sqrt(2), log(2), 2**3 (lambdify writes torch.sqrt(2): a call on a Python
    # int), and exp(1), which SymPy's evaluation turned into E, was "harness failure while grading" (the plan has no E):
    # now computed on a tensor of the dtype, as the plan has them, and graded in every dtype
    spec = ModelSpec(kind="expression", expression=text, parameters=("a",))
    dtypes = ["float64", "float32", "float16", "bfloat16"]
    case = case_from_arrays("constants", np.linspace(0.5, 1.5, 8).reshape(8, 1), np.zeros((8, 1)), model=spec,
                            params={"a": np.array(1.25)}, lr=0.125, dtypes=dtypes)
    records = harness.verify([case], ["torch-model-functional"], dtypes=dtypes)
    assert len(records) == 12 and all(r.verdict == "agree" for r in records), [(r.dtype, r.quantity, r.verdict, r.message[-120:])
                                                                               for r in records if r.verdict != "agree"]


# ---------------------------------------------------------------------------------------------------
# finding (helper-75): past twice float64's range, where every correct evaluation is inf, a finite result was
# suspect (a pass) after a power, a division or a sum of in-range terms; after a product it is disagree


def _finite_junk(X: Any, y: Any, params: Any, **kw: Any) -> Any:
    """torch-model-functional's step with every infinity replaced by +-1 (a wrong step: finite where no correct
    evaluation is)."""
    results = torch_model_functional(X, y, params, **kw)
    for r in results:
        def fix(v: Any) -> Any:
            return torch.nan_to_num(v, posinf=1.0, neginf=-1.0)
        r.loss, r.grads, r.params = fix(r.loss), {k: fix(v) for k, v in r.grads.items()}, {k: fix(v) for k, v in r.params.items()}
    return results


_HALF_BIG = 0.75 * 2.0**1023
_PAST_RANGE = [
    ("a*x1**3 at x1 = 2**400", ModelSpec(kind="expression", expression="a*x1**3", parameters=("a",)),
     np.array([[2.0**400]]), np.zeros((1, 1)), {"a": np.array(1.0)}, ("loss", "grad_a", "a")),
    ("polynomial of degree 3 at x = 2**400", ModelSpec(kind="polynomial", polynomial=3), np.array([[2.0**400]]),
     np.zeros((1, 1)), {"W": np.ones((3, 1)), "b": np.zeros(1)}, ("loss", "grad_b")),
    ("x1/a at 2**1000 / 2**-100", ModelSpec(kind="expression", expression="x1/a", parameters=("a",)),
     np.array([[2.0**1000]]), np.zeros((1, 1)), {"a": np.array(2.0**-100)}, ("loss", "grad_a", "a")),
    ("grad_b over 4 rows of 1.5 * 2**1023", ModelSpec(kind="linear"), np.zeros((4, 1)), np.zeros((4, 1)),
     {"W": np.ones((1, 1)), "b": np.array([_HALF_BIG])}, ("loss", "grad_b")),
]


@pytest.mark.parametrize(("title", "spec", "X", "y", "params", "caught"), _PAST_RANGE, ids=[c[0] for c in _PAST_RANGE])
def test_finite_results_past_twice_the_range_after_powers_divisions_and_sums_disagree(title, spec, X, y, params, caught):
    case = case_from_arrays("past-range", X, y, model=spec, params=params, lr=2.0**-1000, dtypes=["float64"])
    right = verdicts(case, impl("right", torch_model_functional))
    assert not failing(right), [(r.quantity, r.verdict, r.message) for r in failing(right)]
    wrong = {r.quantity: r for r in verdicts(case, impl("finite-junk", _finite_junk))}
    assert all(wrong[q].verdict == "disagree" and "finite where no correct evaluation is" in wrong[q].message
               for q in caught), {q: (r.verdict, r.computed, r.exact[:20]) for q, r in wrong.items()}


@pytest.mark.parametrize("rows", [1, 2, 3])
@pytest.mark.parametrize("scale", [0.49, 0.51, 0.9])
def test_one_sign_sums_near_twice_the_range_are_not_false_alarms(rows: int, scale: float):
    # rows of b = scale * 2**1024 summed into grad_b: from 2 * 0.51 on the exact sum is past the range, but only the
    # one-sign rule's 2**1025.5 makes it "never finite": torch's step passes on both sides, and so does numpy-model
    case = case_from_arrays("sum-edge", np.zeros((rows, 1)), np.zeros((rows, 1)), model=ModelSpec(kind="linear"),
                            params={"W": np.ones((1, 1)), "b": np.array([scale * 2.0**1023 * 2])}, lr=2.0**-1000,
                            dtypes=["float64"])
    records = harness.verify([case], [impl("right", torch_model_functional), "numpy-model"], dtypes=["float64"])
    assert records and not failing(records), [(r.implementation, r.quantity, r.verdict, r.message) for r in failing(records)]


@pytest.mark.parametrize("text", ["a*x1**1 + b", "a*x1 + b*x1**0", "a*(x1 + b)**1.0", "a**0*x1 + b", "a*x1**(1/2) + b",
                                  "a*x1**(-1/2) + b", "a*x1**(3 - 1) + b"])
def test_powers_as_written_are_planned(text: str):
    # the unevaluated parse keeps x1**1, x1**0 and x1**(1/2) as written (the evaluated one had folded them): the plan
    # refused them ("harness failure while grading: power x1**1 is not supported", exit 1; x1**(1/2) at load;
    # helper-76). Now x**1 is x, x**0 is 1 (torch's pow(x, 0): 1, derivative 0), a constant exponent its value
    spec = ModelSpec(kind="expression", expression=text, parameters=("a", "b"))
    case = case_from_arrays("powers", np.linspace(0.5, 1.5, 8).reshape(8, 1), np.zeros((8, 1)), model=spec,
                            params={"a": np.array(1.25), "b": np.array(0.5)}, lr=0.125, dtypes=["float64", "float32"])
    records = harness.verify([case], ["torch-model-functional"], dtypes=["float64", "float32"])
    assert len(records) == 10 and all(r.verdict == "agree" for r in records), [(r.dtype, r.quantity, r.verdict, r.message[-160:])
                                                                               for r in records if r.verdict != "agree"]


def test_a_quantity_not_graded_is_said_in_the_last_lines_of_a_run_that_passes():
    # helper-77: beside graded cases, a case whose every quantity was unsupported (x1**(1/2) at x1 = -1) showed rows of
    # "unsupported" and the run exited 0 with no reason on the terminal
    spec = ModelSpec(kind="expression", expression="a*x1**(1/2)", parameters=("a",))
    bad = case_from_arrays("sqrt-of-negative", np.array([[-1.0]]), np.array([[0.0]]), model=spec,
                           params={"a": np.array(1.5)}, lr=0.125, dtypes=["float64"])
    good = case_from_arrays("fine", np.array([[1.0]]), np.array([[0.0]]), model=spec, params={"a": np.array(1.5)},
                            lr=0.125, dtypes=["float64"])
    records = harness.verify([good, bad], ["torch-model-functional"], dtypes=["float64"])
    outcome = harness.verdicts.run_outcome(records)
    note = [line for line in outcome.reasons if line.startswith("not graded: ")]
    assert outcome.code == 0 and len(note) == 1 and "case sqrt-of-negative" in note[0] and "3 record(s)" in note[0], outcome
