"""The model implementations (harness.models.numpy_steps, torch_steps, forward, mutants) against independent references.

References, all in float64: PyTorch autograd of the model written here from scratch (for the NumPy
backward written by hand), the NumPy backward (for the two PyTorch built-ins), central finite
differences of the loss (a sanity check of both), and SymPy's derivative of an expression model.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from harness.errors import PluginError
from harness.implementations.registry import REGISTRY, implementation
from harness.models.forward import torch_forward_step
from harness.models.mutants import (
    float16_hidden_accumulation,
    missing_chain_factor,
    relu_grad_at_zero,
    tanh_derivative,
    transposed_hidden_grad,
)
from harness.models.numpy_steps import numpy_model, numpy_model_steps
from harness.models.spec import ACTIVATIONS, ModelSpec, model_rule_mismatch
from harness.models.torch_steps import torch_model_functional, torch_model_nn

N, D, K = 6, 3, 2
LR = 0.05

SPECS = [ModelSpec(kind="mlp", hidden=h, activation=a) for a in ACTIVATIONS for h in ((4,), (4, 3))] + [
    ModelSpec(kind="polynomial", polynomial=2),
    ModelSpec(kind="polynomial", polynomial=3),
    ModelSpec(),
    ModelSpec(kind="mlp", hidden=(4,), activation="tanh", bias=False),
    ModelSpec(kind="mlp", hidden=(4,), activation="leaky_relu", negative_slope=Fraction(1, 5)),
]


def draw(spec: ModelSpec, seed: int, d: int = D, k: int = K, n: int = N) -> tuple[Any, Any, dict[str, Any]]:
    rng = np.random.default_rng(seed)
    params = {name: rng.normal(size=shape) for name, shape in spec.parameter_shapes(d, k).items()}
    return rng.normal(size=(n, d)), rng.normal(size=(n, k)), params


TORCH_ACT = {
    "relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid,
    "softplus": lambda z: torch.log1p(torch.exp(z)),  # no threshold: the exact definition
    "gelu": lambda z: z / 2 * (1 + torch.erf(z / math.sqrt(2))),
}


def reference_autograd(spec: ModelSpec, X: Any, y: Any, params: dict[str, Any], reduction: str, steps: int) -> list[dict[str, Any]]:
    """The model written from its definition (spec docstring) in float64 torch, differentiated by autograd."""
    cur = {k: torch.tensor(v, dtype=torch.float64) for k, v in params.items()}
    Xt, yt = torch.tensor(X), torch.tensor(y)
    out = []
    for _ in range(steps):
        leaves = {k: v.clone().requires_grad_(True) for k, v in cur.items()}
        if spec.kind == "mlp":
            act = TORCH_ACT.get(spec.activation or "") or (lambda z: torch.where(z > 0, z, float(spec.negative_slope) * z))
            h = Xt
            layers = len(spec.hidden) + 1
            for i in range(1, layers + 1):
                z = h @ leaves[f"W{i}"] + (leaves[f"b{i}"] if f"b{i}" in leaves else 0)
                h = act(z) if i < layers else z
            pred = h
        else:
            feats = torch.cat([Xt**p for p in range(1, (spec.polynomial or 1) + 1)], dim=1)
            pred = feats @ leaves["W"] + leaves["b"]
        sq = ((pred - yt) ** 2).sum()
        loss = sq if reduction == "sum" else sq / yt.numel()
        gr = torch.autograd.grad(loss, list(leaves.values()))
        g = {k: v.numpy() for k, v in zip(leaves, gr, strict=True)}
        new = {k: leaves[k].detach() - LR * torch.tensor(g[k]) for k in leaves}
        out.append({"loss": loss.item(), "grads": g, "params": {k: v.numpy() for k, v in new.items()}})
        cur = new
    return out


def rel_diff(a: Any, b: Any) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = max(np.max(np.abs(b)), 1e-300)
    return float(np.max(np.abs(a - b)) / scale)


def step_diff(results: list[Any], ref: list[dict[str, Any]]) -> float:
    """Largest relative difference over the loss, every gradient and every updated parameter, every step."""
    worst = 0.0
    for res, r in zip(results, ref, strict=True):
        worst = max(worst, rel_diff(to64(res.loss), r["loss"]))
        assert list(res.grads) == list(r["grads"]) and list(res.params) == list(r["params"])  # parameter order
        for name in r["grads"]:
            assert tuple(np.shape(to64(res.grads[name]))) == r["grads"][name].shape
            worst = max(worst, rel_diff(to64(res.grads[name]), r["grads"][name]), rel_diff(to64(res.params[name]), r["params"][name]))
    return worst


def to64(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return v.detach().to(torch.float64).numpy()
    return np.asarray(v, dtype=np.float64)


def as_ref(results: list[Any]) -> list[dict[str, Any]]:
    return [{"loss": to64(r.loss), "grads": {k: to64(v) for k, v in r.grads.items()},
             "params": {k: to64(v) for k, v in r.params.items()}} for r in results]


def run_torch(fn: Any, spec: ModelSpec, X: Any, y: Any, params: dict[str, Any], reduction: str, steps: int,
              dtype: torch.dtype = torch.float64) -> list[Any]:
    return fn(torch.tensor(X, dtype=dtype), torch.tensor(y, dtype=dtype), {k: torch.tensor(v, dtype=dtype) for k, v in params.items()},
              model=spec, lr=LR, reduction=reduction, steps=steps)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.describe())
def test_numpy_model_matches_torch_autograd_float64(spec: ModelSpec) -> None:
    X, y, params = draw(spec, 1)
    for reduction in ("sum", "mean"):
        ref = reference_autograd(spec, X, y, params, reduction, steps=2)
        got = numpy_model(X, y, params, model=spec, lr=LR, reduction=reduction, steps=2)
        assert step_diff(got, ref) < 1e-12


@pytest.mark.parametrize("fn", [torch_model_nn, torch_model_functional], ids=["nn", "functional"])
@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.describe())
def test_torch_models_match_numpy_backward_float64(fn: Any, spec: ModelSpec) -> None:
    X, y, params = draw(spec, 2)
    rng_before = torch.get_rng_state()
    for reduction in ("sum", "mean"):
        ref = as_ref(numpy_model_steps(X, y, params, spec, LR, reduction, 2))
        got = run_torch(fn, spec, X, y, params, reduction, 2)
        assert torch.equal(torch.get_rng_state(), rng_before)  # nn.Linear built without its random initialisation
        assert step_diff(got, ref) < 1e-12
        assert all(isinstance(v, torch.Tensor) and v.dtype == torch.float64 for r in got for v in (*r.grads.values(), *r.params.values()))


def numpy_loss(spec: ModelSpec, X: Any, y: Any, params: dict[str, Any], reduction: str) -> float:
    return float(numpy_model_steps(X, y, params, spec, LR, reduction, 1)[0].loss)


@pytest.mark.parametrize("spec", [s for s in SPECS if s.activation not in ("relu", "leaky_relu")][::2], ids=lambda s: s.describe())
def test_numpy_gradient_matches_central_differences(spec: ModelSpec) -> None:
    """Sanity check of the hand backward by central differences (h = 1e-6: error ~1e-9 relative)."""
    X, y, params = draw(spec, 3)
    grads = numpy_model_steps(X, y, params, spec, LR, "mean", 1)[0].grads
    h = 1e-6
    for name, p in params.items():
        fd = np.zeros_like(p)
        for idx in np.ndindex(p.shape):
            up = {**params, name: p.copy()}
            dn = {**params, name: p.copy()}
            up[name][idx] += h
            dn[name][idx] -= h
            fd[idx] = (numpy_loss(spec, X, y, up, "mean") - numpy_loss(spec, X, y, dn, "mean")) / (2 * h)
        assert rel_diff(grads[name], fd) < 1e-6, name


def test_relu_convention_at_zero() -> None:
    """A pre-activation exactly 0: PyTorch's derivative 0 (ReLU) and slope (leaky ReLU) by default;
    the declared relu_grad_at_zero otherwise (numpy-model only)."""
    X = np.array([[1.0, -1.0], [2.0, 1.0]])
    y = np.array([[1.0], [0.0]])
    params = {"W1": np.array([[1.0, 0.0], [1.0, 1.0]]), "b1": np.array([0.0, 1.0]), "W2": np.array([[2.0], [1.0]]), "b2": np.array([0.5])}
    # z1 = X W1 + b1: row 0 = [0, 0] (both at the kink), row 1 = [3, 2]
    for act, slope in (("relu", 0.0), ("leaky_relu", 0.25)):
        for g0 in (Fraction(0), Fraction(1, 2), Fraction(1)):
            spec = ModelSpec(kind="mlp", hidden=(2,), activation=act, negative_slope=Fraction(slope), relu_grad_at_zero=g0)
            res = numpy_model_steps(X, y, params, spec, LR, "sum", 1)[0]
            # by hand: h1 = [[0, 0], [3, 2]]; F = h1 W2 + b2 = [[0.5], [8.5]]; delta2 = 2 R = [[-1], [17]]
            # delta1 = (delta2 W2^T) * act'(z1) = [[-2, -1] * d0, [34, 17]], d0 = slope + (1 - slope) g0
            d0 = slope + (1 - slope) * float(g0)
            delta1 = np.array([[-2.0 * d0, -1.0 * d0], [34.0, 17.0]])
            np.testing.assert_allclose(res.grads["W1"], X.T @ delta1, rtol=0, atol=0)
            np.testing.assert_allclose(res.grads["b1"], delta1.sum(axis=0), rtol=0, atol=0)
            if g0 == 0:  # torch agrees with the default convention
                for fn in (torch_model_nn, torch_model_functional):
                    got = run_torch(fn, spec, X, y, params, "sum", 1)[0]
                    np.testing.assert_array_equal(to64(got.grads["W1"]), X.T @ delta1)


def test_lower_precision_dtypes_run_in_their_dtype() -> None:
    """float32, float16 and bfloat16 (ml_dtypes) results keep the dtype and stay near the float64 values
    (a loose sanity check; the grading bounds are harness.models.bounds')."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    spec = ModelSpec(kind="mlp", hidden=(4,), activation="gelu")
    X, y, params = draw(spec, 4)
    for dt, tol in ((np.float32, 1e-5), (np.float16, 2e-2), (ml_dtypes.bfloat16, 1e-1)):
        cast = {k: v.astype(dt) for k, v in params.items()}
        Xc, yc = X.astype(dt), y.astype(dt)
        ref_c = as_ref(numpy_model_steps(Xc.astype(np.float64), yc.astype(np.float64), {k: v.astype(np.float64) for k, v in cast.items()},
                                         spec, float(dt(LR)), "mean", 1))
        got = numpy_model_steps(Xc, yc, cast, spec, LR, "mean", 1)
        assert all(np.asarray(v).dtype == np.dtype(dt) for v in (got[0].loss, *got[0].grads.values(), *got[0].params.values()))
        assert step_diff(got, ref_c) < tol


def test_sigmoid_does_not_overflow_in_float16() -> None:
    from harness.models.numpy_steps import sigmoid

    z = np.array([-12.0, -30.0, 12.0], dtype=np.float16)
    # float16 exp(12) would overflow and give sigmoid(-12) = 0; sigmoid(-30) = 9e-14 is below float16 (0 is right)
    np.testing.assert_allclose(sigmoid(z).astype(np.float64), 1 / (1 + np.exp(-z.astype(np.float64))), rtol=1e-3, atol=6e-8)
    assert sigmoid(z)[0] > 0


def test_expression_model_matches_sympy_derivative() -> None:
    import sympy

    spec = ModelSpec(kind="expression", expression="a*tanh(b*x1) + c*x2**2 + exp(-a)/3", parameters=("a", "b", "c"))
    rng = np.random.default_rng(5)
    X, y = rng.normal(size=(5, 2)), rng.normal(size=(5, 1))
    params = {"a": np.array(0.7), "b": np.array(-1.3), "c": np.array(0.4)}
    got = run_torch(torch_model_functional, spec, X, y, params, "mean", 1)[0]
    a, b, c, x1, x2 = sympy.symbols("a b c x1 x2")
    f = a * sympy.tanh(b * x1) + c * x2**2 + sympy.exp(-a) / 3
    subs = {a: sympy.Float(0.7, 30), b: sympy.Float(-1.3, 30), c: sympy.Float(0.4, 30)}
    loss = sum((f.subs({x1: X[i, 0], x2: X[i, 1]}) - y[i, 0]) ** 2 for i in range(5)) / 5
    assert abs(float(got.loss) - float(loss.subs(subs))) < 1e-13 * abs(float(loss.subs(subs)))
    for name, sym in (("a", a), ("b", b), ("c", c)):
        exact = float(sympy.diff(loss, sym).subs(subs))
        assert abs(float(got.grads[name]) - exact) < 1e-12 * max(abs(exact), 1e-300), name
        assert abs(float(got.params[name]) - (float(params[name]) - LR * exact)) < 1e-12


def test_expression_refuses_unknown_names() -> None:
    spec = ModelSpec(kind="expression", expression="a*x1 + __import__('os')", parameters=("a",))
    X, y = np.ones((2, 1)), np.ones((2, 1))
    with pytest.raises(ValueError, match="expression"):
        run_torch(torch_model_functional, spec, X, y, {"a": np.array(1.0)}, "sum", 1)
    spec = ModelSpec(kind="expression", expression="a*x1 + q", parameters=("a",))
    with pytest.raises(ValueError, match="unknown symbol 'q'"):
        run_torch(torch_model_functional, spec, X, y, {"a": np.array(1.0)}, "sum", 1)
    spec = ModelSpec(kind="expression", expression="a*x1.__class__", parameters=("a",))
    with pytest.raises(ValueError, match="Attribute"):
        run_torch(torch_model_functional, spec, X, y, {"a": np.array(1.0)}, "sum", 1)


# ------------------------------------------------------------------ the registry and the one rule


def test_builtins_declare_models_and_the_rule_routes_cases() -> None:
    from harness.implementations import load_builtins

    load_builtins()
    torch_specs = [ModelSpec(kind="mlp", hidden=(4,), activation="relu"), ModelSpec(kind="polynomial", polynomial=2), ModelSpec()]
    for name in ("numpy-model", "torch-model-nn", "torch-model-functional"):
        impl = REGISTRY[name]
        assert impl.models and name.split("-")[0] in ("numpy", "torch")
        assert model_rule_mismatch(impl.models, None) is not None  # never the linear path's contract
        for spec in torch_specs:
            assert model_rule_mismatch(impl.models, spec) is None, (name, spec)
    other = ModelSpec(kind="mlp", hidden=(4,), activation="relu", relu_grad_at_zero=Fraction(1))
    assert model_rule_mismatch(REGISTRY["numpy-model"].models, other) is None
    assert model_rule_mismatch(REGISTRY["torch-model-nn"].models, other) is not None  # torch's convention is 0
    expr = ModelSpec(kind="expression", expression="a*x1", parameters=("a",))
    assert model_rule_mismatch(REGISTRY["torch-model-functional"].models, expr) is None
    assert model_rule_mismatch(REGISTRY["numpy-model"].models, expr) is not None
    assert REGISTRY["torch-seed"].models == ()  # existing implementations: the linear path


def test_decorator_checks_model_patterns() -> None:
    def step(X: Any, y: Any, params: Any, *, model: Any, lr: float, reduction: str, steps: int) -> list[Any]:
        return []

    implementation("test-models-impl-ok", framework="numpy", models=("mlp", {"activation": "tanh"}))(step)
    assert REGISTRY.pop("test-models-impl-ok").models == ("mlp", {"activation": "tanh"})
    implementation("test-models-impl-ok", framework="numpy", models=({"hidden": (8,), "negative_slope": 0.2},))(step)
    pats = REGISTRY.pop("test-models-impl-ok").models
    assert pats == ({"hidden": [8], "negative_slope": "1/5"},)
    spec = ModelSpec(kind="mlp", hidden=(8,), activation="leaky_relu", negative_slope=Fraction(1, 5))
    assert model_rule_mismatch(pats, spec) is None
    assert model_rule_mismatch(pats, ModelSpec(kind="mlp", hidden=(8,), activation="leaky_relu")) is not None
    implementation("test-models-impl-ok", framework="numpy", models=({"activation": "relu", "relu_grad_at_zero": 0},))(step)
    pats = REGISTRY.pop("test-models-impl-ok").models
    assert model_rule_mismatch(pats, ModelSpec(kind="mlp", hidden=(2,), activation="relu")) is None
    assert model_rule_mismatch(pats, ModelSpec(kind="mlp", hidden=(2,), activation="relu", relu_grad_at_zero=Fraction(1))) is not None
    for bad in ("mlps", 3, {"activations": "tanh"}):
        with pytest.raises(PluginError, match="models"):
            implementation("test-models-impl-bad", framework="numpy", models=(bad,))(step)
    assert "test-models-impl-bad" not in REGISTRY


# ------------------------------------------------------------------ torch_forward_step


def test_torch_forward_step_is_the_functional_step() -> None:
    spec = ModelSpec(kind="mlp", hidden=(4,), activation="softplus")
    X, y, params = draw(spec, 6)

    def forward(X: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.nn.functional.softplus(X @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"]

    step = torch_forward_step(forward)
    assert step.__name__ == "forward" and step.__module__ == __name__
    got = run_torch(step, spec, X, y, params, "sum", 2)
    assert step_diff(got, as_ref(numpy_model_steps(X, y, params, spec, LR, "sum", 2))) < 1e-12
    with pytest.raises(ValueError, match="shape"):
        run_torch(torch_forward_step(lambda X, p: forward(X, p)[:, 0]), spec, X, y, params, "sum", 1)
    with pytest.raises(ValueError, match="b1 received no gradient"):
        run_torch(torch_forward_step(lambda X, p: X @ p["W1"][:, :2] + p["b2"]), spec, X, y, params, "sum", 1)


# ------------------------------------------------------------------ mutants differ from the truth


def mutant_diff(fn: Any, spec: ModelSpec, seed: int, d: int = D, dtype: Any = np.float64) -> float:
    X, y, params = draw(spec, seed, d=d)
    ref = as_ref(numpy_model_steps(X, y, params, spec, LR, "mean", 1))
    cast = {k: v.astype(dtype) for k, v in params.items()}
    return step_diff(fn(X.astype(dtype), y.astype(dtype), cast, model=spec, lr=LR, reduction="mean", steps=1), ref)


@pytest.mark.parametrize("fn, spec", [
    (tanh_derivative, ModelSpec(kind="mlp", hidden=(4,), activation="tanh")),
    (tanh_derivative, ModelSpec(kind="mlp", hidden=(4, 3), activation="tanh")),
    (missing_chain_factor, ModelSpec(kind="mlp", hidden=(4,), activation="sigmoid")),
    (missing_chain_factor, ModelSpec(kind="mlp", hidden=(4, 3), activation="gelu")),
    (transposed_hidden_grad, ModelSpec(kind="mlp", hidden=(3,), activation="tanh")),
], ids=lambda v: getattr(v, "__name__", None) or v.describe())
def test_mutants_differ_far_beyond_rounding(fn: Any, spec: ModelSpec) -> None:
    """float64: the truth's rounding is ~1e-15 relative; each mutant is off by more than 1e-3 on
    every seed (the correct steps agree to 1e-12 above)."""
    for seed in range(5):
        assert mutant_diff(fn, spec, seed) > 1e-3


def test_transposed_mutant_needs_square_w1() -> None:
    with pytest.raises(ValueError, match="square W1"):
        mutant_diff(transposed_hidden_grad, ModelSpec(kind="mlp", hidden=(4,), activation="tanh"), 0)


def test_relu_mutant_differs_only_at_the_kink() -> None:
    spec = ModelSpec(kind="mlp", hidden=(2,), activation="relu")
    assert mutant_diff(relu_grad_at_zero, spec, 0) == 0.0  # no pre-activation is exactly 0
    X = np.array([[1.0, -1.0], [2.0, 1.0]])
    y = np.array([[1.0], [0.0]])
    params = {"W1": np.array([[1.0, 0.0], [1.0, 1.0]]), "b1": np.array([0.0, 1.0]), "W2": np.array([[2.0], [1.0]]), "b2": np.array([0.5])}
    ref = as_ref(numpy_model_steps(X, y, params, spec, LR, "sum", 1))
    assert step_diff(relu_grad_at_zero(X, y, params, model=spec, lr=LR, reduction="sum", steps=1), ref) > 0.05


def test_float16_hidden_accumulation_exceeds_float32_rounding() -> None:
    """In float32 the correct step is within ~1e-6 of float64; the mutant is off by > 1e-4 (float16's u = 4.9e-4)."""
    spec = ModelSpec(kind="mlp", hidden=(8,), activation="tanh")
    for seed in range(3):
        assert mutant_diff(numpy_model, spec, seed, dtype=np.float32) < 2e-5
        assert mutant_diff(float16_hidden_accumulation, spec, seed, dtype=np.float32) > 1e-4
        assert mutant_diff(float16_hidden_accumulation, spec, seed) > 1e-4


# ------------------------------------------------------------------ examples/fused_linear_tanh.py


@pytest.fixture(scope="module")
def fused() -> Any:
    path = Path(__file__).resolve().parent.parent / "examples" / "fused_linear_tanh.py"
    from harness.implementations.registry import plugin_module_name

    spec = importlib.util.spec_from_file_location(plugin_module_name(str(path)), path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("hidden", [(4,), (4, 3)])
def test_fused_example_right_agrees_wrong_differs(fused: Any, hidden: tuple[int, ...]) -> None:
    spec = ModelSpec(kind="mlp", hidden=hidden, activation="tanh")
    X, y, params = draw(spec, 7)
    ref = as_ref(numpy_model_steps(X, y, params, spec, LR, "sum", 2))
    assert step_diff(run_torch(fused.fused_linear_tanh, spec, X, y, params, "sum", 2), ref) < 1e-12
    assert step_diff(run_torch(fused.fused_linear_tanh_wrong, spec, X, y, params, "sum", 2), ref) > 1e-2
    low = step_diff(run_torch(fused.fused_linear_tanh_float32_backward, spec, X, y, params, "sum", 2), ref)
    assert 1e-12 < low < 1e-4  # a float32 backward in a float64 step: beyond float64 rounding, far below gradcheck's atol
    for name in ("fused-linear-tanh", "fused-linear-tanh-wrong", "fused-linear-tanh-float32-backward"):
        assert model_rule_mismatch(REGISTRY[name].models, spec) is None


def test_fused_example_gradcheck(fused: Any) -> None:
    assert fused.gradcheck_report(fused.FusedLinearTanh) == "passes"
    assert fused.gradcheck_report(fused.WrongFusedLinearTanh).startswith("fails: Jacobian mismatch")
    assert fused.gradcheck_report(fused.Float32BackwardFusedLinearTanh) == "passes"  # blind to a float32 backward
    with pytest.warns(UserWarning):  # gradcheck in float32: finite differences drown the right backward
        assert fused.gradcheck_report(fused.FusedLinearTanh, torch.float32).startswith("fails")


# ------------------------------------------------------------------ against the plan (harness.models.plan, m-oracle)


def plan_reference(spec: ModelSpec, X: Any, y: Any, params: dict[str, Any], reduction: str) -> list[dict[str, Any]]:
    """One step as the plan's float64 evaluation gives it (the graph every grader walks)."""
    from harness.models.graph import evaluate_float64
    from harness.models.plan import build_plan

    n, d = X.shape
    k = y.shape[1]
    graph = build_plan(spec, n, d, k, reduction, Fraction(LR))
    vals = evaluate_float64(graph, {"X": X, "y": y, **params})
    out = {q: vals[i] for q, i in graph.outputs.items()}
    names = spec.parameter_names(d, k)
    return [{"loss": out["loss"], "grads": {p: out[f"grad_{p}"] for p in names}, "params": {p: out[p] for p in names}}]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.describe())
def test_builtins_match_the_plan_float64(spec: ModelSpec) -> None:
    X, y, params = draw(spec, 8)
    for reduction in ("sum", "mean"):
        ref = plan_reference(spec, X, y, params, reduction)
        assert step_diff(numpy_model(X, y, params, model=spec, lr=LR, reduction=reduction, steps=1), ref) < 1e-12
        for fn in (torch_model_nn, torch_model_functional):
            assert step_diff(run_torch(fn, spec, X, y, params, reduction, 1), ref) < 1e-12


def test_expression_matches_the_plan_float64() -> None:
    spec = ModelSpec(kind="expression", expression="a*tanh(b*x1) + c*x2**2 + exp(-a)/3", parameters=("a", "b", "c"))
    rng = np.random.default_rng(9)
    X, y = rng.normal(size=(7, 2)), rng.normal(size=(7, 1))
    params = {"a": np.array(0.7), "b": np.array(-1.3), "c": np.array(0.4)}
    for reduction in ("sum", "mean"):
        ref = plan_reference(spec, X, y, params, reduction)
        assert step_diff(run_torch(torch_model_functional, spec, X, y, params, reduction, 1), ref) < 1e-12


@pytest.mark.parametrize("fn, spec", [
    (tanh_derivative, ModelSpec(kind="mlp", hidden=(3,), activation="tanh")),
    (missing_chain_factor, ModelSpec(kind="mlp", hidden=(3,), activation="softplus")),
    (transposed_hidden_grad, ModelSpec(kind="mlp", hidden=(3,), activation="gelu")),
], ids=lambda v: getattr(v, "__name__", None) or v.describe())
def test_mutants_differ_from_the_plan(fn: Any, spec: ModelSpec) -> None:
    X, y, params = draw(spec, 10)
    ref = plan_reference(spec, X, y, params, "sum")
    assert step_diff(fn(X, y, params, model=spec, lr=LR, reduction="sum", steps=1), ref) > 1e-3


def test_forward_plugin_is_found_by_its_own_file(fused: Any) -> None:
    """A step made by torch_forward_step lives in harness/models/forward.py; the repro line and the
    worker processes must load the forward's file (the plug-in), not that module."""
    from harness.api import plugin_arg
    from harness.runner import plugin_sources

    impl = REGISTRY["fused-linear-tanh"]
    assert plugin_arg(impl)[1].endswith("fused_linear_tanh.py")
    assert plugin_sources([impl])[0].endswith("fused_linear_tanh.py")


def test_softplus_and_half_types_evaluation() -> None:
    """softplus: log1p(exp(z)) up to 20, z + log1p(exp(-z)) above (no overflow in float32 at 100);
    float16/bfloat16 activations are evaluated in float32 and rounded once (the bounds' model)."""
    from harness.models.numpy_steps import activation, compute_dtype

    spec = ModelSpec(kind="mlp", hidden=(1,), activation="softplus")
    z64 = np.array([-30.0, -1.0, 0.0, 19.5, 20.5, 100.0, 1000.0])
    for dt in (np.float64, np.float32):
        z = z64.astype(dt)
        got = activation("softplus", z, spec)
        assert got.dtype == dt and np.isfinite(got).all()
        np.testing.assert_allclose(got, np.logaddexp(0.0, z.astype(np.float64)), rtol=4 * np.finfo(dt).eps)
    assert compute_dtype(np.float16) == np.float32 and compute_dtype(np.float64) == np.float64
    z16 = np.array([0.3, -2.0, 5.0], dtype=np.float16)
    tanh_spec = ModelSpec(kind="mlp", hidden=(1,), activation="tanh")
    np.testing.assert_array_equal(activation("tanh", z16, tanh_spec), np.tanh(z16.astype(np.float32)).astype(np.float16))


# ------------------------------------------------------------------ against the truth and the bounds (m-oracle, m-bounds)


def worst_ratio(fn: Any, spec: ModelSpec, X: Any, y: Any, params: dict[str, Any], dtype: str, reduction: str = "mean") -> float:
    """Largest ``|computed - exact| / rigorous bound`` over every graded element of one step
    (model_truth's double-double ``hi + lo``; elements whose bound allows inf or whose rounding is
    undecided are left out)."""
    from harness.floats import get_format
    from harness.models.plan import build_plan

    model_bounds = importlib.import_module("harness.models.bounds").model_bounds  # m-bounds' module, where merged
    model_truth = importlib.import_module("harness.models.oracle").model_truth
    fmt = get_format(dtype)
    tdt = getattr(torch, dtype)

    def rounded(a: Any) -> Any:
        return torch.tensor(a, dtype=torch.float64).to(tdt).double().numpy()

    Xr, yr, Pr = rounded(X), rounded(y), {k: rounded(v) for k, v in params.items()}
    n, d = X.shape
    graph = build_plan(spec, n, d, y.shape[1], reduction, Fraction(str(LR)))
    truth = model_truth(graph, {"X": Xr, "y": yr, **Pr}, fmt)
    bounds = model_bounds(graph, truth.node_values, fmt)
    if fn is numpy_model or getattr(fn, "__module__", "") == "harness.models.mutants":
        if dtype == "bfloat16":
            ml_dtypes = pytest.importorskip("ml_dtypes")
            npdt: Any = ml_dtypes.bfloat16
        else:
            npdt = getattr(np, dtype)
        res = fn(Xr.astype(npdt), yr.astype(npdt), {k: v.astype(npdt) for k, v in Pr.items()}, model=spec, lr=LR,
                 reduction=reduction, steps=1)[0]
    else:
        res = run_torch(fn, spec, Xr, yr, Pr, reduction, 1, dtype=tdt)[0]
    got = {"loss": to64(res.loss), **{f"grad_{p}": to64(v) for p, v in res.grads.items()}, **{p: to64(v) for p, v in res.params.items()}}
    worst = 0.0
    for q in graph.outputs:
        err = np.abs((got[q].reshape(truth.hi[q].shape) - truth.hi[q]) - truth.lo[q])
        skip = bounds.inf_allowed[q] | truth.undecided[q] | (err == 0)
        ratio = np.where(skip, 0.0, err / np.where(bounds.rigorous[q] > 0, bounds.rigorous[q], np.inf))
        worst = max(worst, float(np.max(ratio, initial=0.0)))
    return worst


@pytest.mark.parametrize("dtype", [pytest.param("float64", marks=pytest.mark.slow), "float32", "float16", "bfloat16"])
def test_builtins_within_the_rigorous_bounds(dtype: str) -> None:
    """Zero false alarms of the three built-ins on one draw per activation and a polynomial
    (measured on a wider sweep while writing this: 5 seeds x 14 models x 2 regimes x 4 dtypes x 3
    implementations x 2 reductions, 3,360 steps, largest error / rigorous bound 0.93)."""
    pytest.importorskip("harness.models.bounds")
    pytest.importorskip("harness.models.oracle")
    specs = [ModelSpec(kind="mlp", hidden=(5,), activation=a) for a in ACTIVATIONS] + [ModelSpec(kind="polynomial", polynomial=3)]
    for spec in specs:
        X, y, params = draw(spec, 12, n=8)
        for fn in (numpy_model, torch_model_nn, torch_model_functional):
            assert worst_ratio(fn, spec, X, y, params, dtype) <= 1.0, (fn.__name__, spec.describe())


def test_mutants_beyond_the_rigorous_bounds() -> None:
    pytest.importorskip("harness.models.bounds")
    pytest.importorskip("harness.models.oracle")
    cases = [(tanh_derivative, ModelSpec(kind="mlp", hidden=(5,), activation="tanh"), 3),
             (missing_chain_factor, ModelSpec(kind="mlp", hidden=(5,), activation="gelu"), 3),
             (transposed_hidden_grad, ModelSpec(kind="mlp", hidden=(3,), activation="tanh"), 3),
             (float16_hidden_accumulation, ModelSpec(kind="mlp", hidden=(5,), activation="tanh"), 3)]
    for fn, spec, d in cases:
        X, y, params = draw(spec, 0, d=d, n=8)
        for dtype in ("float64", "float32"):
            assert worst_ratio(fn, spec, X, y, params, dtype) > 10.0, (fn.__name__, dtype)
