"""The evaluation plan (harness.models.plan): its float64 evaluation agrees with PyTorch's autograd
in float64 (an independent implementation: torch.nn.functional forward, torch.autograd backward)."""

from __future__ import annotations

from fractions import Fraction

import mpmath
import numpy as np
import pytest
import sympy as sp

from harness.models.graph import evaluate_float64
from harness.models.plan import build_plan
from harness.models.spec import ACTIVATIONS, ModelSpec
from harness.models.symbolic import OUT, Z, element_function, parse_expression

torch = pytest.importorskip("torch")
F = torch.nn.functional

LR = Fraction(1, 8)


def _act(name: str, spec: ModelSpec):  # noqa: ANN202 - a torch callable
    return {
        "relu": F.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid, "softplus": F.softplus,
        "gelu": F.gelu, "leaky_relu": lambda z: F.leaky_relu(z, float(spec.negative_slope)),
    }[name]


def _torch_step(spec: ModelSpec, values: dict[str, np.ndarray], reduction: str, predict) -> dict[str, np.ndarray]:  # noqa: ANN001
    t = {k: torch.tensor(v, dtype=torch.float64, requires_grad=k not in ("X", "y")) for k, v in values.items()}
    pred = predict(t)
    loss = F.mse_loss(pred, t["y"], reduction=reduction)
    loss.backward()
    names = [p for p in values if p not in ("X", "y")]
    out = {"loss": loss.detach().numpy()}
    for p in names:
        out[f"grad_{p}"] = t[p].grad.numpy()
    for p in names:
        out[p] = (t[p] - float(LR) * t[p].grad).detach().numpy()
    return out


def _values(spec: ModelSpec, n: int, d: int, k: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    vals = {"X": rng.standard_normal((n, d)), "y": rng.standard_normal((n, k))}
    for p, s in spec.parameter_shapes(d, k).items():
        vals[p] = rng.standard_normal(s) * 0.7
    return vals


def _compare(spec: ModelSpec, n: int, d: int, k: int, reduction: str, predict, vals=None) -> None:  # noqa: ANN001
    vals = vals or _values(spec, n, d, k, seed=n * 100 + d * 10 + k)
    g = build_plan(spec, n, d, k, reduction, LR)
    nodes = evaluate_float64(g, vals)
    ref = _torch_step(spec, vals, reduction, predict)
    assert tuple(g.outputs) == tuple(ref) == spec.quantities(d, k)
    for q, nid in g.outputs.items():
        got = nodes[nid]
        assert got.shape == np.shape(ref[q]), q
        np.testing.assert_allclose(got, ref[q], rtol=1e-11, atol=1e-13, err_msg=f"{spec.describe()} {reduction} {q}")


@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("hidden", [(3,), (4, 2)])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_mlp_plan_matches_torch_autograd(act: str, hidden: tuple[int, ...], reduction: str) -> None:
    spec = ModelSpec(kind="mlp", hidden=hidden, activation=act)
    f = _act(act, spec)

    def predict(t):  # noqa: ANN001, ANN202
        h = t["X"]
        for layer in range(1, len(hidden) + 1):
            h = f(h @ t[f"W{layer}"] + t[f"b{layer}"])
        last = len(hidden) + 1
        return h @ t[f"W{last}"] + t[f"b{last}"]

    _compare(spec, 5, 3, 2, reduction, predict)


def test_mlp_without_bias_and_relu_at_kink() -> None:
    spec = ModelSpec(kind="mlp", hidden=(2,), activation="relu", bias=False)
    vals = {"X": np.array([[1.0, -1.0], [2.0, 0.5]]), "y": np.array([[0.5], [1.0]]),
            "W1": np.array([[1.0, 2.0], [1.0, 1.0]]), "W2": np.array([[0.5], [-1.0]])}
    # row 0: z = [0, 1]: the first unit sits at ReLU's kink; torch's derivative there is 0, as the plan's

    def predict(t):  # noqa: ANN001, ANN202
        return F.relu(t["X"] @ t["W1"]) @ t["W2"]

    _compare(spec, 2, 2, 1, "sum", predict, vals)


def test_leaky_relu_at_kink_matches_torch() -> None:
    """At z = 0 torch's leaky ReLU backward is ``z > 0 ? g : g * slope``: the plan's convention
    (relu_grad_at_zero = 0) gives the slope there too."""
    spec = ModelSpec(kind="mlp", hidden=(2,), activation="leaky_relu", negative_slope=Fraction(1, 4))
    vals = {"X": np.array([[1.0, -1.0], [2.0, 0.5]]), "y": np.array([[0.5], [1.0]]),
            "W1": np.array([[1.0, 2.0], [1.0, 1.0]]), "b1": np.array([0.0, -0.5]),
            "W2": np.array([[0.5], [-1.0]]), "b2": np.array([0.25])}
    # row 0: z = [0, 0.5]: unit 0 at the kink

    def predict(t):  # noqa: ANN001, ANN202
        return F.leaky_relu(t["X"] @ t["W1"] + t["b1"], 0.25) @ t["W2"] + t["b2"]

    _compare(spec, 2, 2, 1, "sum", predict, vals)


@pytest.mark.parametrize("degree", [1, 2, 3])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_polynomial_plan_matches_torch_autograd(degree: int, reduction: str) -> None:
    spec = ModelSpec(kind="polynomial", polynomial=degree)

    def predict(t):  # noqa: ANN001, ANN202
        phi = torch.cat([t["X"] ** p for p in range(1, degree + 1)], dim=1)
        return phi @ t["W"] + t["b"]

    _compare(spec, 6, 2, 3, reduction, predict)


def test_linear_plan_matches_torch_autograd() -> None:
    spec = ModelSpec()
    _compare(spec, 4, 3, 2, "mean", lambda t: t["X"] @ t["W"] + t["b"])


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_expression_plan_matches_torch_autograd(reduction: str) -> None:
    text = "a * tanh(w * x1 + c) - 0.5 * x2^2 * exp(-a) + sqrt(x1**2 + 1) / (c**2 + 2) + sin(w) * x1 / (1 + x2**2) - 3 + abs(x2 - c) * cos(a)"
    spec = ModelSpec(kind="expression", expression=text, parameters=("a", "w", "c", "unused"))

    def predict(t):  # noqa: ANN001, ANN202
        x1, x2 = t["X"][:, 0:1], t["X"][:, 1:2]
        a, w, c = t["a"], t["w"], t["c"]
        return (a * torch.tanh(w * x1 + c) - 0.5 * x2**2 * torch.exp(-a) + torch.sqrt(x1**2 + 1) / (c**2 + 2)
                + torch.sin(w) * x1 / (1 + x2**2) - 3 + torch.abs(x2 - c) * torch.cos(a) + 0 * t["unused"])

    _compare(spec, 7, 2, 1, reduction, predict)


@pytest.mark.parametrize(("text", "torch_fn"), [
    ("a", lambda t, x1: (t["a"] + 0 * t["b"]).expand(x1.shape)),  # the prediction is a parameter itself
    ("a * b + b", lambda t, x1: (t["a"] * t["b"] + t["b"]).expand(x1.shape)),  # no input at all
    ("x1**3 - a", lambda t, x1: x1**3 - t["a"] + 0 * t["b"]),  # b unused: its gradient is 0
    ("-x1 / a - b**2", lambda t, x1: -x1 / t["a"] - t["b"] ** 2),  # every term negative
])
def test_expression_edge_shapes(text: str, torch_fn) -> None:  # noqa: ANN001
    spec = ModelSpec(kind="expression", expression=text, parameters=("a", "b"))
    _compare(spec, 3, 1, 1, "mean", lambda t: torch_fn(t, t["X"][:, 0:1]))


def test_plan_outputs_and_lr_const() -> None:
    spec = ModelSpec(kind="mlp", hidden=(3,), activation="tanh")
    g = build_plan(spec, 4, 2, 1, "sum", "0.1")
    assert tuple(g.outputs) == ("loss", "grad_W1", "grad_b1", "grad_W2", "grad_b2", "W1", "b1", "W2", "b2")
    lrs = [nd for nd in g.nodes if nd.op == "const" and nd.attrs.get("held")]
    assert len(lrs) == 1 and lrs[0].attrs["value"] == Fraction(1, 10)
    tanh_grads = [nd for nd in g.nodes if nd.op == "fn_grad"]
    assert len(tanh_grads) == 1 and len(tanh_grads[0].args) == 2  # tanh' = 1 - out**2, from the forward value
    assert build_plan(spec, 4, 2, 1, "sum", "0.1") is g  # cached


def test_plan_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match="reduction"):
        build_plan(ModelSpec(), 2, 2, 1, "max", 1)
    with pytest.raises(ValueError, match="unknown symbol 'q'"):
        build_plan(ModelSpec(kind="expression", expression="a * q", parameters=("a",)), 2, 1, 1, "sum", 1)


# ------------------------------------------------------------------ symbolic: functions, derivatives, parsing

_MP_DEFS = {  # independent definitions (mpmath), PyTorch's formulas
    "tanh": mpmath.tanh, "sigmoid": lambda z: 1 / (1 + mpmath.exp(-z)), "softplus": lambda z: mpmath.log(1 + mpmath.exp(z)),
    "gelu": lambda z: z / 2 * (1 + mpmath.erf(z / mpmath.sqrt(2))), "exp": mpmath.exp, "log": mpmath.log,
    "sqrt": mpmath.sqrt, "sin": mpmath.sin, "cos": mpmath.cos, "erf": mpmath.erf,
    "relu": lambda z: max(z, 0), "leaky_relu": lambda z: z if z > 0 else z / 100, "abs": abs,
}


@pytest.mark.parametrize("name", sorted(_MP_DEFS))
@pytest.mark.parametrize("z", ["-2.5", "-0.3", "0.7", "3.25"])
@mpmath.workdps(50)
def test_element_function_and_derivative_against_mpmath(name: str, z: str) -> None:
    """Value and derivative (the form the plan evaluates, in ``out`` where autograd uses it) against
    mpmath at 50 digits: the value from an independent definition, the derivative by mpmath.diff."""
    zv = mpmath.mpf(z)
    if name in ("log", "sqrt") and zv <= 0:
        zv = -zv
    f = element_function(name)
    ref = _MP_DEFS[name]
    val = sp.N(f.expr.subs(Z, sp.Float(str(zv), 50)), 50)
    assert abs(mpmath.mpf(str(val)) - ref(zv)) < mpmath.mpf(10) ** -40
    grad = f.grad_expr.subs({Z: sp.Float(str(zv), 50), OUT: sp.Float(str(mpmath.nstr(ref(zv), 50)), 50)})
    assert abs(mpmath.mpf(str(sp.N(grad, 50))) - mpmath.diff(ref, zv)) < mpmath.mpf(10) ** -30


def test_derivatives_written_in_the_output() -> None:
    assert element_function("tanh").grad_in_out == 1 - OUT**2
    assert element_function("sigmoid").grad_in_out == OUT * (1 - OUT)
    assert element_function("softplus").grad_in_out is None and element_function("gelu").grad_in_out is None


@pytest.mark.parametrize(("name", "slope", "at_zero", "want"), [
    ("relu", Fraction(1, 100), Fraction(0), Fraction(0)), ("relu", Fraction(1, 100), Fraction(1), Fraction(1)),
    ("leaky_relu", Fraction(1, 100), Fraction(0), Fraction(1, 100)), ("leaky_relu", Fraction(1, 5), Fraction(1), Fraction(1)),
    ("leaky_relu", Fraction(1, 5), Fraction(1, 2), Fraction(3, 5)), ("abs", Fraction(1, 100), Fraction(0), Fraction(0)),
])
def test_kink_conventions(name: str, slope: Fraction, at_zero: Fraction, want: Fraction) -> None:
    g = element_function(name, slope, at_zero).grad
    assert g.subs(Z, 0) == sp.Rational(str(want))
    assert g.subs(Z, sp.Rational(1, 3)) == 1
    neg = {"relu": 0, "leaky_relu": sp.Rational(slope.numerator, slope.denominator), "abs": -1}[name]
    assert g.subs(Z, sp.Rational(-1, 3)) == neg


def test_parse_expression_exact_and_safe() -> None:
    p = parse_expression("a * x^2 + 0.1 * b - Abs(x)", ("a", "b"), 1)
    a, b = p.parameters
    (x1,) = p.inputs
    assert sp.simplify(p.expr - (a * x1**2 + sp.Rational(1, 10) * b - sp.Abs(x1))) == 0  # 0.1 is exactly 1/10


@pytest.mark.parametrize(("text", "nested"), [
    # (each node's arguments sorted: atoms first, then by their text)
    ("a*x1 + (b - b)", "Add(Add(b, Mul(-1, b)), Mul(a, x1))"),  # a bracketed sum stays one term
    ("(a*x1 + b) - b", "Add(Add(b, Mul(a, x1)), Mul(-1, b))"),
    ("((a*x1 + b)) - b", "Add(Add(b, Mul(a, x1)), Mul(-1, b))"),
    ("a - (b + x1)", "Add(a, Mul(-1, Add(b, x1)))"),
    ("(x1/a)/b", "Mul(Mul(x1, Pow(-1, a)), Pow(-1, b))"),
    ("a*(b*x1)", "Mul(a, Mul(b, x1))"),
    ("a*x1 + (\n  b - b)", "Add(Add(b, Mul(-1, b)), Mul(a, x1))"),  # across lines
    ("(a + b)^2 + (x1^2 - b)", "Add(Add(Mul(-1, b), Pow(2, x1)), Pow(2, Add(a, b)))"),
    # chains without brackets are merged (a sum of three terms in any order; denominators multiplied)
    ("a*x1 + b - b", "Add(b, Mul(-1, b), Mul(a, x1))"),
    ("(a*x1 + b - b)", "Add(b, Mul(-1, b), Mul(a, x1))"),
    ("x1/a/b", "Mul(x1, Pow(-1, a), Pow(-1, b))"),
    # a unary minus of an operation stays -1 times it (Python's - distributed and combined: -(x1 + 1 - 1) was -x1)
    ("-(x1 + 1 - 1)", "Mul(-1, Add(1, x1, Mul(-1, 1)))"),
    ("a/-(x1*b)", "Mul(a, Pow(-1, Mul(-1, Mul(b, x1))))"),
    # every allowed function unevaluated (abs and erf were evaluated: abs((x1 + 1) - 1) was Abs(x1), abs(exp(1)) E)
    ("abs((x1 + 1) - 1)", "Abs(Add(Add(1, x1), Mul(-1, 1)))"),
    ("erf(b - b)*x1", "Mul(erf(Add(b, Mul(-1, b))), x1)"),
    ("a*abs(exp(1))", "Mul(Abs(exp(1)), a)"),
])
def test_parse_expression_keeps_brackets(text: str, nested: str) -> None:
    # helper-76 (twenty-first round, fixed in the twenty-third): SymPy's unevaluated parse merged a bracketed sum into
    # the sum around it, so a*x1 + (b - b) was bounded as a three-term sum in any order: in float32 with b = 2**30 a
    # gradient ten times too large agreed (tests/test_models_hostile.py)
    def shape(e: sp.Basic) -> str:
        if not e.args:
            return str(e)
        args = sorted((shape(a) for a in e.args), key=lambda t: (t.startswith(("Add", "Mul", "Pow")), t))
        return f"{type(e).__name__}({', '.join(args)})"

    assert shape(parse_expression(text, ("a", "b"), 1).expr) == nested


@pytest.mark.parametrize(("text", "needle"), [
    ("__grouped__(a)", "unknown function '__grouped__'"),  # (the name the parse writes before a bracket)
    ("a*x1 # + b*x1**2", "a comment ('#') is not allowed"),  # (Python's parser dropped it: helper-92)
    ("__import__('os').system('true')", "__import__"),
    ("open('/etc/passwd')", "'open'"),
    ("eval('1')", "'eval'"),
    ("a * q", "unknown symbol 'q'"),
    ("a * x3", "unknown symbol 'x3'"),
    ("gamma(a)", "'gamma'"),
    ("a.__class__", "Attribute"),
    ("[a][0]", "not allowed"),
    ("x1 ** a", "not an integer power"),
    ("exp(a, 2)", "exactly one argument"),
    ("exp(x=1)", "exactly one argument"),
    ("'text'", "not a number"),
    ("a +", "not a formula"),
    ("a if x1 else x2", "IfExp"),
    ("a < x1", "Compare"),
])
def test_parse_expression_refuses(text: str, needle: str) -> None:
    with pytest.raises(ValueError) as exc:
        parse_expression(text, ("a",), 2)
    assert needle in str(exc.value)


def test_parameter_names_that_clash_are_refused() -> None:
    with pytest.raises(ValueError, match="clashes"):
        parse_expression("exp * 2", ("exp",), 1)
    for name in ("Integer", "Float", "Mul", "Rational", "__negated__"):  # names the parse writes (helper-92: TypeError)
        with pytest.raises(ValueError, match="clashes with an input, a function or a name of the parser"):
            parse_expression(f"{name}*x1", (name,), 1)
