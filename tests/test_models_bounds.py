"""The automatic error bounds of a model's step (harness.models.bounds).

Property tests (Hypothesis, with ``target`` steering towards the largest error/bound ratio): correct
evaluations of MLP steps -- PyTorch autograd on CPU (functional and ``nn.Linear``/activation modules,
every dtype) and NumPy by hand (float32/float64; BLAS, for-loop in forward and reverse order, pairwise
sums) -- never exceed the rigorous bound against the exact truth (the plan and model_truth), nor against
an independent reference on a graph built here (mpmath at 50 digits for float64; float64 plus its own
rigorous bound for the other dtypes); a wrong derivative (tanh' = 1 - z) and ReLU'(0) = 1 at exact kinks
exceed it. The linear step: every summation order of tests/orders.py and torch within the automatic
bound wherever within the hand-derived one, and the auto/hand ratio within the documented factor.
Kernel tests: torch's activation and elementary-function kernels and NumPy's formulas on dense grids
within the function-accuracy table. Rule tests pin single-operation bounds derived by hand.
"""

from __future__ import annotations

import math
from fractions import Fraction

import mpmath
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, target
from hypothesis import strategies as st

from harness.floats import BFLOAT16, FLOAT16, FLOAT32, FLOAT64, FORMATS, round_to_format
from harness.models.bounds import (
    FUNCTION_ULPS,
    SOFTPLUS_THRESHOLD_ERROR,
    activation_grad_bound,
    activation_value_bound,
    constant_rounding,
    interval_max_abs,
    model_bounds,
)
from harness.models.graph import Graph, evaluate_float64

ACTS = ("tanh", "sigmoid", "softplus", "gelu", "relu", "leaky_relu")
SLOPE = Fraction(1, 100)

# ---------------------------------------------------------------------------------------------------
# a hand-built MLP plan (the design's structure: forward, loss, reverse-mode backward, SGD update)


def mlp_graph(n: int, d: int, hidden: tuple[int, ...], k: int, act: str, reduction: str, lr: float) -> Graph:
    g = Graph()
    X = g.add("input", (), (n, d), name="X")
    widths = (d, *hidden, k)
    params: list[tuple[str, int]] = []
    h = X
    zs: list[int] = []
    hs: list[int] = [X]
    for layer in range(1, len(widths)):
        W = g.add("param", (), (widths[layer - 1], widths[layer]), name=f"W{layer}")
        b = g.add("param", (), (widths[layer],), name=f"b{layer}")
        params += [(f"W{layer}", W), (f"b{layer}", b)]
        z = g.add("add", (g.add("matmul", (h, W), (n, widths[layer])), b), (n, widths[layer]))
        if layer < len(widths) - 1:
            zs.append(z)
            h = g.add("fn", (z,), (n, widths[layer]), fn=act, slope=SLOPE)
            hs.append(h)
        else:
            h = z
    y = g.add("input", (), (n, k), name="y")
    R = g.add("sub", (h, y), (n, k), role="loss")
    c = Fraction(1) if reduction == "sum" else Fraction(1, n * k)
    loss = g.add("mul", (g.add("const", (), (), role="loss", value=c, held=False),
                         g.add("sum", (g.add("square", (R,), (n, k), role="loss"),), (), role="loss", axis=None)), (), role="loss")
    delta = g.add("mul", (g.add("const", (), (), role="backward", value=2 * c, held=False), R), (n, k), role="backward")
    grads: dict[str, int] = {}
    for layer in range(len(widths) - 1, 0, -1):
        W = dict(params)[f"W{layer}"]
        hprev = hs[layer - 1]
        grads[f"W{layer}"] = g.add("matmul", (g.add("transpose", (hprev,), (widths[layer - 1], n), role="backward"), delta),
                                   (widths[layer - 1], widths[layer]), role="backward")
        grads[f"b{layer}"] = g.add("sum", (delta,), (widths[layer],), role="backward", axis=0)
        if layer > 1:
            dh = g.add("matmul", (delta, g.add("transpose", (W,), (widths[layer], widths[layer - 1]), role="backward")),
                       (n, widths[layer - 1]), role="backward")
            z, hh = zs[layer - 2], hs[layer - 1]
            fg = g.add("fn_grad", (z, hh), (n, widths[layer - 1]), role="backward", fn=act, of=hh, slope=SLOPE)
            delta = g.add("mul", (dh, fg), (n, widths[layer - 1]), role="backward")
    lrn = g.add("const", (), (), role="update", value=Fraction(lr), held=True)
    outs = {"loss": loss}
    for name, _ in params:
        outs[f"grad_{name}"] = grads[name]
    for name, pid in params:
        outs[name] = g.add("sub", (pid, g.add("mul", (lrn, grads[name]), g.nodes[pid].shape, role="update")),
                           g.nodes[pid].shape, role="update")
    g.outputs = outs
    return g


def _phi(z):
    return np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)


_ERF = np.vectorize(math.erf, otypes=[np.float64])


def _Phi(z):
    return 0.5 * (1 + _ERF(z / math.sqrt(2)))


def _sig(z):
    return 1 / (1 + np.exp(-z))


SL = float(SLOPE)
FNS64 = {
    "tanh": np.tanh, "grad:tanh": lambda z, h: 1 - h * h,
    "sigmoid": _sig, "grad:sigmoid": lambda z, h: h * (1 - h),
    "softplus": lambda z: np.logaddexp(0, z), "grad:softplus": lambda z, h: _sig(z),
    "gelu": lambda z: z * _Phi(z), "grad:gelu": lambda z, h: _Phi(z) + z * _phi(z),
    "relu": lambda z: np.maximum(z, 0), "grad:relu": lambda z, h: (z > 0).astype(float),
    "leaky_relu": lambda z: np.where(z > 0, z, SL * z), "grad:leaky_relu": lambda z, h: np.where(z > 0, 1.0, SL),
}

MP_FN = {
    "tanh": mpmath.tanh, "grad:tanh": lambda z: 1 - mpmath.tanh(z) ** 2,
    "sigmoid": lambda z: 1 / (1 + mpmath.exp(-z)), "grad:sigmoid": lambda z: mpmath.exp(-z) / (1 + mpmath.exp(-z)) ** 2,
    "softplus": lambda z: mpmath.log1p(mpmath.exp(z)), "grad:softplus": lambda z: 1 / (1 + mpmath.exp(-z)),
    "gelu": lambda z: z * mpmath.ncdf(z), "grad:gelu": lambda z: mpmath.ncdf(z) + z * mpmath.npdf(z),
    "relu": lambda z: z if z > 0 else mpmath.mpf(0), "grad:relu": lambda z: mpmath.mpf(1) if z > 0 else mpmath.mpf(0),
    "leaky_relu": lambda z: z if z > 0 else z * mpmath.mpf(1) / 100,
    "grad:leaky_relu": lambda z: mpmath.mpf(1) if z > 0 else mpmath.mpf(1) / 100,
}


def evaluate_mp(graph: Graph, inputs, dps: int = 50, *, exact: bool = False):
    """Every node's value at ``dps`` digits (mpmath), rounded to float64 at the end (``exact``: the
    mpmath object arrays too, as ``(floats, mps)``)."""
    with mpmath.workdps(dps):
        vals: list[np.ndarray] = []
        for node in graph.nodes:
            a = [vals[i] for i in node.args]
            op = node.op
            if op in ("input", "param"):
                v = np.vectorize(mpmath.mpf, otypes=[object])(np.asarray(inputs[node.attrs["name"]], dtype=float))
            elif op == "const":
                fr = Fraction(node.attrs["value"])
                if node.attrs.get("held"):
                    fr = Fraction(float(fr))  # float64 dtype: the held value is the float64 one
                v = np.array(mpmath.mpf(fr.numerator) / fr.denominator, dtype=object)
            elif op == "matmul":
                v = np.dot(a[0], a[1])
            elif op in ("add", "sub", "mul"):
                v = {"add": np.add, "sub": np.subtract, "mul": np.multiply}[op](a[0], a[1])
            elif op == "square":
                v = a[0] * a[0]
            elif op == "sum":
                v = np.sum(a[0], axis=node.attrs.get("axis"))
            elif op == "transpose":
                v = a[0].T
            elif op == "fn":
                v = np.vectorize(MP_FN[node.attrs["fn"]], otypes=[object])(a[0])
            elif op == "fn_grad":
                v = np.vectorize(MP_FN["grad:" + node.attrs["fn"]], otypes=[object])(a[0])
            else:
                raise ValueError(op)
            vals.append(np.asarray(v, dtype=object).reshape(node.shape))
        floats = [np.vectorize(float, otypes=[float])(v).reshape(v.shape) for v in vals]
        return (floats, vals) if exact else floats


# ---------------------------------------------------------------------------------------------------
# correct evaluations, as frameworks do them


def torch_step(inputs, names, act, reduction, lr, fmt, *, modules=False, wrong_tanh=False):
    import torch
    import torch.nn.functional as nnf

    dt = {"float64": torch.float64, "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[fmt.name]
    X = torch.tensor(inputs["X"], dtype=dt)
    y = torch.tensor(inputs["y"], dtype=dt)
    nl = len(names) // 2
    if modules:  # torch.nn.Linear layers: weight = W.T copied in; the gradient of W is weight.grad.T
        lins = []
        for layer in range(1, nl + 1):
            W = np.asarray(inputs[f"W{layer}"])
            lin = torch.nn.Linear(W.shape[0], W.shape[1], dtype=dt)
            with torch.no_grad():
                lin.weight.copy_(torch.tensor(W.T, dtype=dt))
                lin.bias.copy_(torch.tensor(inputs[f"b{layer}"], dtype=dt))
            lins.append(lin)
        leaves = {}
        for layer, lin in enumerate(lins, 1):
            leaves[f"W{layer}"], leaves[f"b{layer}"] = lin.weight, lin.bias
        act_mod = {"tanh": torch.nn.Tanh(), "sigmoid": torch.nn.Sigmoid(), "softplus": torch.nn.Softplus(),
                   "gelu": torch.nn.GELU(), "relu": torch.nn.ReLU(), "leaky_relu": torch.nn.LeakyReLU(float(SLOPE))}[act]
        h = X
        for layer, lin in enumerate(lins, 1):
            h = lin(h)
            if layer < nl:
                h = _WrongTanh.apply(h) if wrong_tanh else act_mod(h)
    else:
        leaves = {p: torch.tensor(inputs[p], dtype=dt, requires_grad=True) for p in names}
        h = X
        for layer in range(1, nl + 1):
            h = h @ leaves[f"W{layer}"] + leaves[f"b{layer}"]
            if layer < nl:
                if wrong_tanh:
                    h = _WrongTanh.apply(h)
                elif act == "leaky_relu":
                    h = nnf.leaky_relu(h, float(SLOPE))
                else:
                    h = getattr(nnf, act)(h)
    loss = nnf.mse_loss(h, y, reduction=reduction)
    loss.backward()
    out = {"loss": loss.detach().double().numpy()}
    with torch.no_grad():
        for p in names:
            grad = leaves[p].grad
            new = leaves[p] - lr * grad
            if modules and p.startswith("W"):
                grad, new = grad.T, new.T
            out[f"grad_{p}"] = grad.double().numpy()
            out[p] = new.double().numpy()
    return out


def _wrong_tanh_class():
    import torch

    class WrongTanh(torch.autograd.Function):
        """tanh with the wrong derivative 1 - z (the mutant of issue 14)."""

        @staticmethod
        def forward(ctx, z):
            ctx.save_for_backward(z)
            return torch.tanh(z)

        @staticmethod
        def backward(ctx, g):
            (z,) = ctx.saved_tensors
            return g * (1 - z)

    return WrongTanh


class _Lazy:
    cls = None

    @classmethod
    def apply(cls, z):
        if cls.cls is None:
            cls.cls = _wrong_tanh_class()
        return cls.cls.apply(z)


_WrongTanh = _Lazy


ORDERS = ("blas", "loop", "reversed", "pairwise")


def _mm(a, b, order, dt):
    if order == "blas":
        return (a @ b).astype(dt)
    if order == "pairwise":
        return np.sum(a[:, :, None] * b[None, :, :], axis=1, dtype=dt)
    m = a.shape[1]
    idx = range(m) if order == "loop" else range(m - 1, -1, -1)
    acc = np.zeros((a.shape[0], b.shape[1]), dtype=dt)
    for j in idx:
        acc = (acc + (a[:, j:j + 1] * b[j:j + 1, :]).astype(dt)).astype(dt)
    return acc


def _sum0(a, order, dt):
    if order in ("blas", "pairwise"):
        return np.sum(a, axis=0, dtype=dt)
    acc = np.zeros(a.shape[1:], dtype=dt)
    for i in (range(a.shape[0]) if order == "loop" else range(a.shape[0] - 1, -1, -1)):
        acc = (acc + a[i]).astype(dt)
    return acc


def numpy_step(inputs, names, act, reduction, lr, fmt, order, *, wrong_tanh=False, relu_at_zero_one=False):
    dt = np.float32 if fmt.name == "float32" else np.float64
    one = dt(1)
    P = {p: np.asarray(inputs[p], dtype=dt) for p in names}
    X, y = np.asarray(inputs["X"], dtype=dt), np.asarray(inputs["y"], dtype=dt)
    nl = len(names) // 2
    sl = dt(float(SLOPE))
    fwd = {
        "tanh": np.tanh, "sigmoid": lambda z: one / (one + np.exp(-z)),
        # torch's definition: z itself above 20 (log1p(exp(z)) alone overflows float32 beyond 88)
        "softplus": lambda z: np.where(z > 20, z, np.log1p(np.exp(np.minimum(z, dt(20))))),
        "gelu": lambda z: (z * dt(0.5) * (one + _ERF(z.astype(np.float64) / math.sqrt(2)).astype(dt))).astype(dt),
        "relu": lambda z: np.maximum(z, dt(0)), "leaky_relu": lambda z: np.where(z > 0, z, sl * z),
    }[act]

    def grad(z, h):
        if wrong_tanh:
            return one - z
        if relu_at_zero_one:  # the mutant: ReLU'(0) = 1 while torch's convention (declared) is 0
            return (z >= 0).astype(dt)
        with np.errstate(over="ignore"):  # softplus' = 1/(1 + exp(-z)): exp overflows to inf for z far below 0, giving 0
            return _grad_of(z, h)

    def _grad_of(z, h):
        return {
            "tanh": lambda: one - h * h, "sigmoid": lambda: h * (one - h),
            "softplus": lambda: one / (one + np.exp(-z)),
            "gelu": lambda: (_Phi(z.astype(np.float64)) + z.astype(np.float64) * _phi(z.astype(np.float64))).astype(dt),
            "relu": lambda: (z > 0).astype(dt), "leaky_relu": lambda: np.where(z > 0, one, sl),
        }[act]().astype(dt)

    hs, zs = [X], []
    h = X
    for layer in range(1, nl + 1):
        z = (_mm(h, P[f"W{layer}"], order, dt) + P[f"b{layer}"]).astype(dt)
        if layer < nl:
            zs.append(z)
            h = fwd(z).astype(dt)
            hs.append(h)
        else:
            h = z
    R = (h - y).astype(dt)
    n, k = R.shape
    c = dt(1) if reduction == "sum" else dt(1 / (n * k))
    loss = (c * np.sum(R * R, dtype=dt)).astype(dt)
    delta = (dt(2 * (1 if reduction == "sum" else 1 / (n * k))) * R).astype(dt)
    out = {"loss": np.asarray(loss, dtype=np.float64)}
    grads = {}
    for layer in range(nl, 0, -1):
        grads[f"W{layer}"] = _mm(hs[layer - 1].T, delta, order, dt)
        grads[f"b{layer}"] = _sum0(delta, order, dt)
        if layer > 1:
            dh = _mm(delta, P[f"W{layer}"].T, order, dt)
            delta = (dh * grad(zs[layer - 2], hs[layer - 1])).astype(dt)
    lr_d = dt(lr)
    for p in names:
        out[f"grad_{p}"] = grads[p].astype(np.float64)
        out[p] = (P[p] - lr_d * grads[p]).astype(dt).astype(np.float64)
    return out


# ---------------------------------------------------------------------------------------------------
# the property


def draw_case(seed, fmt, n, d, hidden, k, scale, regime):
    rng = np.random.default_rng(seed)
    widths = (d, *hidden, k)
    inputs = {"X": rng.normal(0, 1, (n, d)) * scale, "y": rng.normal(0, 1, (n, k)) * (scale if regime == "tiny" else 1.0)}
    names = []
    for layer in range(1, len(widths)):
        gain = (3.0 if regime == "saturate" else 1.0) / math.sqrt(widths[layer - 1])
        inputs[f"W{layer}"] = rng.normal(0, gain, (widths[layer - 1], widths[layer]))
        inputs[f"b{layer}"] = rng.normal(0, 0.5, (widths[layer],)) + (15.0 if regime == "large" and layer == 1 else 0.0)
        if regime == "tiny":
            inputs[f"b{layer}"] *= scale
        names += [f"W{layer}", f"b{layer}"]
    if regime == "kink":
        inputs = {key: np.round(v * 2) / 2 for key, v in inputs.items()}
    inputs = {key: round_to_format(v, fmt) for key, v in inputs.items()}
    return inputs, names


def reference(graph, inputs, fmt, lr):
    """(reference node values, slack, exact): mpmath for float64 (slack 0, and the 50-digit values
    to measure errors against: the float64 rounding of the reference would add up to half an ULP);
    float64 for the others, with the float64 evaluation's rigorous bound as slack."""
    if fmt.name == "float64":
        vals, mps = evaluate_mp(graph, inputs, exact=True)
        return vals, {q: 0.0 for q in graph.outputs}, mps
    ins = dict(inputs)
    vals = evaluate_float64(graph, ins, fn_float64=FNS64)
    # the held learning rate: the truth uses the dtype's value
    lr_node = [n for n in graph.nodes if n.op == "const" and n.attrs.get("held")][0]
    vals = _with_lr(graph, ins, lr_node.id, float(round_to_format(np.array([lr]), fmt)[0]))
    slack = model_bounds(graph, vals, FLOAT64).rigorous
    return vals, slack, None


def _with_lr(graph, inputs, lr_id, lr_value):
    """float64 evaluation with the held learning rate's node set to ``lr_value``."""
    g2 = Graph(nodes=list(graph.nodes), outputs=dict(graph.outputs))
    node = g2.nodes[lr_id]
    g2.nodes[lr_id] = type(node)(node.id, node.op, node.args, node.shape, {**node.attrs, "value": Fraction(lr_value)}, node.role)
    return evaluate_float64(g2, inputs, fn_float64=FNS64)


def errors_vs_bound(graph, inputs, fmt, lr, got):
    vals, slack, mps = reference(graph, inputs, fmt, lr)
    mb = model_bounds(graph, vals, fmt)
    worst = 0.0
    bad = []
    for q, nid in graph.outputs.items():
        ref = vals[nid]
        g = np.asarray(got[q], dtype=np.float64).reshape(ref.shape)
        if mps is None:
            err = np.abs(g - ref)
        else:
            with mpmath.workdps(50):
                err = np.vectorize(lambda a, b: float(abs(mpmath.mpf(a) - b)), otypes=[float])(g, mps[nid]).reshape(ref.shape)
        bound = mb.rigorous[q] + slack[q]
        # a non-finite result where some correct evaluation forms one is not an error; a finite one
        # is graded against the bound everywhere (before, an allowed inf counted as an infinite error)
        allowed = ~np.isfinite(g) & np.where(np.isnan(g), mb.nan_allowed[q], mb.inf_allowed[q])
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(allowed, 0.0, np.where(bound > 0, err / bound, np.where(err > 0, np.inf, 0.0)))
        r = float(np.max(ratio)) if ratio.size else 0.0
        worst = max(worst, r)
        if r > 1.0:
            bad.append((q, r, err.max(), bound.min()))
    return worst, bad, mb


@st.composite
def model_cases(draw):
    fmt = FORMATS[draw(st.sampled_from(("float64", "float32", "float16", "bfloat16")))]
    impl = draw(st.sampled_from(("torch", "torch-modules", *(f"numpy-{o}" for o in ORDERS)))
                if fmt.name in ("float64", "float32") else st.sampled_from(("torch", "torch-modules")))
    act = draw(st.sampled_from(ACTS))
    n, d, k = draw(st.integers(1, 6)), draw(st.integers(1, 4)), draw(st.integers(1, 3))
    hidden = tuple(draw(st.lists(st.integers(1, 5), min_size=1, max_size=2)))
    regime = draw(st.sampled_from(("plain", "plain", "saturate", "large", "kink", "wide", "tiny")))
    if regime == "wide":  # hidden widths beyond SIMD widths, more rows
        hidden, n = (draw(st.sampled_from((17, 33))),), draw(st.integers(8, 24))
    scale = 2.0 ** draw(st.integers(-3, 3))
    if regime == "tiny":  # inputs near the bottom of the normal range: underflow and flush-to-zero
        scale = {"float64": 2.0**-500, "float32": 2.0**-60, "float16": 2.0**-6, "bfloat16": 2.0**-60}[fmt.name]
    reduction = draw(st.sampled_from(("sum", "mean")))
    lr = draw(st.sampled_from((0.1, 0.01, 0.5)))
    seed = draw(st.integers(0, 2**32 - 1))
    return fmt, impl, act, n, d, hidden, k, regime, scale, reduction, lr, seed


def run_impl(impl, inputs, names, act, reduction, lr, fmt, wrong_tanh=False):
    if impl.startswith("torch"):
        return torch_step(inputs, names, act, reduction, lr, fmt, modules=impl == "torch-modules", wrong_tanh=wrong_tanh)
    return numpy_step(inputs, names, act, reduction, lr, fmt, impl.split("-", 1)[1], wrong_tanh=wrong_tanh)


def plan_and_truth(n, d, hidden, k, act, reduction, lr, inputs, fmt):
    """The real pipeline: harness.models.plan.build_plan and harness.models.oracle.model_truth."""
    from harness.models.oracle import model_truth
    from harness.models.plan import build_plan
    from harness.models.spec import ModelSpec

    spec = ModelSpec(kind="mlp", hidden=hidden, activation=act, negative_slope=SLOPE)
    graph = build_plan(spec, n, d, k, reduction, Fraction(lr))
    return graph, model_truth(graph, inputs, fmt)


def errors_vs_truth(graph, truth, fmt, got):
    """(largest error / rigorous bound, [quantities over the bound]) against the exact truth (its
    double-double value; the enclosure's radius added to the bound)."""
    mb = model_bounds(graph, truth.node_values, fmt)
    worst, bad = 0.0, []
    for q in graph.outputs:
        with np.errstate(invalid="ignore", over="ignore"):
            err = np.abs((np.asarray(got[q], dtype=np.float64).reshape(truth.hi[q].shape) - truth.hi[q]) - truth.lo[q])
        bound = mb.rigorous[q] + truth.radius[q]
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(mb.inf_allowed[q], 0.0, np.where(bound > 0, err / bound, np.where(err > 0, np.inf, 0.0)))
        r = float(np.max(ratio)) if ratio.size else 0.0
        worst = max(worst, r)
        if r > 1.0:
            bad.append((q, r, float(np.max(err)), float(np.min(bound))))
    return worst, bad


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model_cases())
def test_correct_evaluations_never_exceed_the_rigorous_bound(case):
    """torch (functional and nn modules, every dtype) and NumPy (float32/float64, four summation orders)
    steps of the plan's model, against model_truth: no element beyond the rigorous bound."""
    fmt, impl, act, n, d, hidden, k, regime, scale, reduction, lr, seed = case
    inputs, names = draw_case(seed, fmt, n, d, hidden, k, scale, regime)
    graph, truth = plan_and_truth(n, d, hidden, k, act, reduction, lr, inputs, fmt)
    got = run_impl(impl, inputs, names, act, reduction, lr, fmt)
    worst, bad = errors_vs_truth(graph, truth, fmt, got)
    target(min(worst, 10.0), label="largest error / rigorous bound")
    assert not bad, (impl, fmt.name, act, regime, bad)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model_cases())
def test_independent_reference_hand_built_graph(case):
    """The same property on a graph built by hand here, against an independent reference (mpmath at 50
    digits for float64; float64 plus its own rigorous bound for the other dtypes): checks the bounds
    without the plan and the oracle."""
    fmt, impl, act, n, d, hidden, k, regime, scale, reduction, lr, seed = case
    inputs, names = draw_case(seed, fmt, n, d, hidden, k, scale, regime)
    graph = mlp_graph(n, d, hidden, k, act, reduction, lr)
    got = run_impl(impl, inputs, names, act, reduction, lr, fmt)
    worst, bad, _ = errors_vs_bound(graph, inputs, fmt, lr, got)
    assert not bad, (impl, fmt.name, act, regime, bad)


@pytest.mark.parametrize("fmt", [FLOAT64, FLOAT32, FLOAT16, BFLOAT16], ids=lambda f: f.name)
@pytest.mark.parametrize("impl", ["torch", "numpy-blas"])
def test_wrong_tanh_derivative_exceeds_the_bound(fmt, impl):
    """tanh' = 1 - z instead of 1 - tanh(z)^2: the hidden layer's gradients leave the bound on typical inputs."""
    if impl.startswith("numpy") and fmt.name not in ("float64", "float32"):
        pytest.skip("the NumPy evaluation runs float32 and float64")
    caught = 0
    for seed in range(5):
        inputs, names = draw_case(seed, fmt, 6, 3, (4,), 2, 1.0, "plain")
        graph, truth = plan_and_truth(6, 3, (4,), 2, "tanh", "mean", 0.1, inputs, fmt)
        got = run_impl(impl, inputs, names, "tanh", "mean", 0.1, fmt, wrong_tanh=True)
        _, bad = errors_vs_truth(graph, truth, fmt, got)
        caught += any(q in ("grad_W1", "grad_b1") for q, *_ in bad)
        # and the correct evaluation of the same case stays within
        ok = run_impl(impl, inputs, names, "tanh", "mean", 0.1, fmt)
        assert not errors_vs_truth(graph, truth, fmt, ok)[1]
    assert caught == 5


# ---------------------------------------------------------------------------------------------------
# single rules, values derived by hand


def test_matmul_sum_and_update_rules_by_hand():
    """A 1-row product in float32: gamma_2 |A||B| and two products' underflow; the sum of one term adds
    nothing; with integer data the same product is exact (bound 0)."""
    g = Graph()
    A = g.add("input", (), (1, 2), name="X")
    B = g.add("param", (), (2, 1), name="W")
    C = g.add("matmul", (A, B), (1, 1))
    S = g.add("sum", (C,), (1,), axis=0)
    g.outputs = {"C": C, "S": S}
    a = round_to_format(np.array([[0.1, 0.2]]), FLOAT32)
    b = round_to_format(np.array([[0.3], [0.7]]), FLOAT32)
    c = a @ b  # exact in float64: products of float32s and their sum of two
    mb = model_bounds(g, [a, b, c, c[0]], FLOAT32)
    u = 2.0**-24
    g2 = 2 * u / (1 - 2 * u)
    mag = float((np.abs(a) @ np.abs(b))[0, 0])
    assert mb.rigorous["C"][0, 0] == pytest.approx(g2 * mag + (1 + g2) * 2 * 2.0**-150, rel=1e-8)
    assert mb.rigorous["S"][0] == pytest.approx(mb.rigorous["C"][0, 0], rel=1e-8)
    exact = model_bounds(g, [np.array([[1.0, 2.0]]), np.array([[3.0], [4.0]]), np.array([[11.0]]), np.array([11.0])], FLOAT32)
    assert exact.rigorous["C"][0, 0] == 0.0 and exact.rigorous["S"][0] == 0.0
    # 2**20 + 2**-4 is not a float32 (21 + 4 bits > 24): no longer exact
    big = model_bounds(g, [np.array([[2.0**20, 2.0**-4]]), np.array([[1.0], [1.0]]), np.array([[2.0**20 + 2.0**-4]]),
                           np.array([2.0**20 + 2.0**-4])], FLOAT32)
    assert big.rigorous["C"][0, 0] > 0.0


def test_const_rounding_and_held_learning_rate():
    g = Graph()
    c = g.add("const", (), (), value=Fraction(1, 10), held=False)
    e = g.add("const", (), (), value=Fraction(1, 4), held=False)
    lr = g.add("const", (), (), value=Fraction(1, 10), held=True)
    g.outputs = {"c": c, "e": e, "lr": lr}
    vals = [np.array(0.1), np.array(0.25), np.array(float(round_to_format(np.array([0.1]), FLOAT16)[0]))]
    mb = model_bounds(g, vals, FLOAT16)
    assert float(mb.rigorous["e"]) == 0.0  # 1/4 is a float16
    assert float(mb.rigorous["c"]) == pytest.approx(constant_rounding(FLOAT16) * 0.1, rel=1e-6)
    # the implementation may multiply by the Python float 0.1 or its float32 rounding
    lr16 = float(np.float16(0.1))
    assert float(mb.rigorous["lr"]) == pytest.approx(max(abs(0.1 - lr16), abs(float(np.float32(0.1)) - lr16)), rel=1e-6)


def test_interval_max_finds_interior_critical_points():
    """|tanh''| peaks at atanh(1/sqrt 3) with 4/(3 sqrt 3); |gelu'| at sqrt 2."""
    d2 = lambda z: -2 * np.tanh(z) / np.cosh(z) ** 2  # noqa: E731
    m = interval_max_abs(d2, np.array([0.1]), np.array([2.0]), (math.atanh(1 / math.sqrt(3)),))
    assert m[0] == pytest.approx(4 / (3 * math.sqrt(3)), rel=1e-12)
    grid = np.linspace(0.1, 2.0, 20001)
    assert m[0] >= np.abs(d2(grid)).max()


@pytest.mark.parametrize("act", ["tanh", "sigmoid", "softplus", "gelu"])
def test_activation_bounds_cover_every_point_of_the_interval(act):
    """The value and derivative bounds hold for every a^ in [a - E, a + E] (a dense grid, float64
    evaluation of f and f'), before any rounding is added: the second-order safety."""
    f = {"tanh": np.tanh, "sigmoid": _sig, "softplus": lambda z: np.logaddexp(0, z), "gelu": lambda z: z * _Phi(z)}[act]
    fp = {"tanh": lambda z: 1 / np.cosh(z) ** 2, "sigmoid": lambda z: _sig(z) * _sig(-z), "softplus": _sig,
          "gelu": lambda z: _Phi(z) + z * _phi(z)}[act]
    from harness.bounds import Regime
    from harness.models.bounds import FnContext

    ctx = FnContext(FLOAT64, Regime(FLOAT64, False), {k: 0.0 for k in FUNCTION_ULPS})
    for a0 in (-5.0, -1.5, -0.3, 0.0, 0.4, 1.3, 3.0):
        for E0 in (1e-3, 0.1, 0.8):
            a, E = np.array([a0]), np.array([E0])
            grid = np.linspace(a0 - E0, a0 + E0, 4001)
            assert np.abs(f(grid) - f(a)).max() <= activation_value_bound(act, a, E, ctx)[0]
            y = f(a)
            assert np.abs(fp(grid) - fp(a)).max() <= activation_grad_bound(act, a, E, y, np.zeros(1), ctx)[0]


def test_softplus_threshold_term_is_named_and_covers_torch():
    """Above 20 torch returns z (and derivative 1): within exp(-20) of softplus, named in the record."""
    torch = pytest.importorskip("torch")
    z = torch.tensor([20.5, 25.0], dtype=torch.float64, requires_grad=True)
    y = torch.nn.functional.softplus(z)
    y.sum().backward()
    exact = np.array([float(mpmath.log1p(mpmath.exp(v))) for v in (20.5, 25.0)])
    assert np.all(np.abs(y.detach().numpy() - exact) <= SOFTPLUS_THRESHOLD_ERROR)
    assert np.all(np.abs(y.detach().numpy() - exact) > 0)  # torch really does return z there
    graph = mlp_graph(1, 1, (1,), 1, "softplus", "sum", 0.1)
    inputs = {"X": np.array([[1.0]]), "W1": np.array([[1.0]]), "b1": np.array([24.0]), "W2": np.array([[1.0]]),
              "b2": np.array([0.0]), "y": np.array([[0.0]])}
    vals = evaluate_mp(graph, inputs)
    mb = model_bounds(graph, vals, FLOAT64)
    assert mb.function_ulps["softplus_threshold"] == SOFTPLUS_THRESHOLD_ERROR
    assert "softplus" in mb.notes
    got = torch_step(inputs, ["W1", "b1", "W2", "b2"], "softplus", "sum", 0.1, FLOAT64)
    for q in graph.outputs:
        assert np.all(np.abs(got[q] - vals[graph.outputs[q]]) <= mb.rigorous[q]), q


def test_function_ulps_override_is_used_and_returned():
    graph = mlp_graph(2, 2, (3,), 1, "tanh", "sum", 0.1)
    inputs, _ = draw_case(0, FLOAT32, 2, 2, (3,), 1, 1.0, "plain")
    vals = evaluate_float64(graph, inputs, fn_float64=FNS64)
    base = model_bounds(graph, vals, FLOAT32)
    more = model_bounds(graph, vals, FLOAT32, function_ulps={"tanh": 8.0})
    assert more.function_ulps["tanh"] == 8.0 and base.function_ulps["tanh"] == FUNCTION_ULPS["tanh"]
    assert np.all(more.rigorous["grad_W1"] >= base.rigorous["grad_W1"])
    assert np.any(more.rigorous["grad_W1"] > base.rigorous["grad_W1"])
    with pytest.raises(ValueError, match="function_ulps"):
        model_bounds(graph, vals, FLOAT32, function_ulps={"tanh": -1.0})


def test_overflow_masks_and_vacuous_notes():
    graph = mlp_graph(2, 2, (3,), 1, "relu", "sum", 0.1)
    inputs, _ = draw_case(1, FLOAT16, 2, 2, (3,), 1, 1.0, "plain")
    inputs["X"] = inputs["X"] * 0 + 200.0  # float16: products beyond 65504 in the loss's square
    inputs["W1"] = np.abs(inputs["W1"]) + 1
    inputs["W2"] = np.abs(inputs["W2"]) + 1
    vals = evaluate_float64(graph, inputs, fn_float64=FNS64)
    mb = model_bounds(graph, vals, FLOAT16)
    assert bool(mb.inf_allowed["loss"]) and bool(mb.nan_allowed["loss"])
    # inf and NaN are accepted there, and a finite loss is still graded against a finite bound
    # (before: an infinite bound, under which any finite loss agreed; tests/test_models_hostile.py)
    assert math.isfinite(float(mb.rigorous["loss"]))
    # bfloat16: a sum of 300 rows is past 299 u = 1 (Higham's gamma_299 does not exist), and still bounded in the
    # worst case by ((1 - u)^-299 - 1) 300 (from Fractions; 666.8); only a sum whose growth leaves float64 is vacuous
    g = Graph()
    x = g.add("input", (), (300, 1), name="X")
    s = g.add("sum", (x,), (1,), axis=0)
    g.outputs = {"s": s}
    mb = model_bounds(g, [np.ones((300, 1)), np.array([300.0])], BFLOAT16)
    worst = float(((1 / (1 - Fraction(1, 256))) ** 299 - 1) * 300)
    assert worst <= float(mb.rigorous["s"][0]) <= worst * (1 + 2.0**-28) and "s" not in mb.notes
    assert math.isfinite(mb.expected["s"][0])  # lambda sqrt(299) u = 0.41: the expected bound stays finite
    g = Graph()
    x = g.add("input", (), (200_000, 1), name="X")
    s = g.add("sum", (x,), (1,), axis=0)
    g.outputs = {"s": s}
    mb = model_bounds(g, [np.ones((200_000, 1)), np.array([200_000.0])], BFLOAT16)
    assert math.isinf(mb.rigorous["s"][0]) and "exceeds float64" in mb.notes["s"]


# ---------------------------------------------------------------------------------------------------
# the linear model: the automatic bounds against the hand-derived ones (harness.bounds.step_bounds)


@st.composite
def linear_steps(draw):
    from harness.models.compare_linear import LinearCase

    fmt = FORMATS[draw(st.sampled_from(("float64", "float32", "float16", "bfloat16")))]
    n, d, k = draw(st.integers(1, 8)), draw(st.integers(1, 5)), draw(st.integers(1, 3))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = 2.0 ** draw(st.integers(-4, 4))
    y_scale = draw(st.sampled_from((1.0, 0.0, 1e-3)))  # y = 0 or small: residuals far from cancellation or near it
    raw = {"X": rng.normal(0, 1, (n, d)) * scale, "W": rng.normal(0, 1, (d, k)) / scale, "b": rng.normal(0, 1, (k,)),
           "y": rng.normal(0, 1, (n, k)) * y_scale}
    if draw(st.booleans()):  # y close to X W + b: the residual cancels
        raw["y"] = raw["X"] @ raw["W"] + raw["b"] + raw["y"] * 1e-4
    inputs = {q: round_to_format(v, fmt) for q, v in raw.items()}
    lr = draw(st.sampled_from((0.1, 0.01, 0.5)))
    case = LinearCase(inputs, lr, draw(st.sampled_from(("sum", "mean"))), fmt)
    impl = draw(st.sampled_from(("sequential", "reversed", "pairwise", "random", "wide", "fma", "torch")))
    return case, impl, draw(st.integers(0, 1000))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(linear_steps())
def test_linear_auto_bounds_hold_wherever_the_hand_ones_do(args):
    """Every summation order of tests/orders.py (sequential, reversed, pairwise, random, float64-wide, FMA)
    and torch's step stay within the automatic rigorous bound wherever they stay within the hand one."""
    from harness.models.compare_linear import auto_and_hand
    from tests.orders import evaluate_step

    case, impl, seed = args
    auto, hand, truth, _ = auto_and_hand(case)
    x = case.inputs
    lr_fmt = float(round_to_format(np.array([case.lr]), case.fmt)[0])
    if impl == "torch":
        ins = {"X": x["X"], "y": x["y"], "W1": x["W"], "b1": x["b"]}
        got = torch_step(ins, ["W1", "b1"], "tanh", case.reduction, case.lr, case.fmt)
        got = {"loss": got["loss"], "grad_W": got["grad_W1"], "grad_b": got["grad_b1"], "W": got["W1"], "b": got["b1"]}
    else:
        got = evaluate_step(x["X"], x["y"], x["W"], x["b"], lr_fmt, case.reduction, case.fmt, impl, seed)
    worst = 0.0
    for q in ("loss", "grad_W", "grad_b", "W", "b"):
        with np.errstate(invalid="ignore", over="ignore"):
            err = np.abs((np.asarray(got[q], dtype=np.float64) - truth.hi[q]) - truth.lo[q])
        hand_ok = (err <= hand.rigorous[q]) | hand.inf_allowed[q]
        auto_ok = (err <= auto.rigorous[q]) | auto.inf_allowed[q]
        assert np.all(auto_ok | ~hand_ok), (q, impl, case.fmt.name, err, auto.rigorous[q], hand.rigorous[q])
        assert np.all(auto_ok), (q, impl, case.fmt.name, err, auto.rigorous[q])
        fin = np.isfinite(auto.rigorous[q]) & (auto.rigorous[q] > 0)
        if np.any(fin):
            worst = max(worst, float(np.max(err[fin] / auto.rigorous[q][fin])))
    target(worst, label="largest error / automatic rigorous bound")


#: The documented factor (README's ratio table; harness.models.compare_linear): per element, the automatic
#: rigorous bound of the linear step measured 0.59 .. 1.00 times the hand-derived one (medians 0.86 .. 0.95:
#: it counts the same roundings per term -- b and y pass one rounding less than a product, the constant 2c's
#: only where it is not a float); the expected bound, a plain min(gamma_n, lambda sqrt(n) u) model,
#: 0.6 .. 12 times the hand one (which keeps the partial sums).
RIGOROUS_FACTOR = (0.5, 1.05)
EXPECTED_FACTOR = (0.5, 16.0)


def test_fused_reduction_rule_covers_any_order_of_x_w_plus_b_minus_y():
    """R = x w + b - y may be summed in any order (addmm's bias in the accumulator, tests/orders.py):
    the bound is gamma_3 |x w| + gamma_2 (|b| + |y|) (the product passes one rounding more than the
    added terms) plus one product's underflow, not the graph order's."""
    g = Graph()
    x = g.add("input", (), (1, 1), name="X")
    w = g.add("param", (), (1, 1), name="W")
    b = g.add("param", (), (1,), name="b")
    y = g.add("input", (), (1, 1), name="y")
    xw = g.add("matmul", (x, w), (1, 1))
    f = g.add("add", (xw, b), (1, 1))
    r = g.add("sub", (f, y), (1, 1))
    g.outputs = {"R": r}
    x0, w0 = float(np.float32(0.1)), float(np.float32(3.3))
    xw = x0 * w0  # exact in float64
    vals = [np.array([[x0]]), np.array([[w0]]), np.array([0.25]), np.array([[-1.0]]), np.array([[xw]]),
            np.array([[xw + 0.25]]), np.array([[xw + 1.25]])]
    mb = model_bounds(g, vals, FLOAT32)
    g3, g2 = FLOAT32.gamma(3), FLOAT32.gamma(2)
    assert mb.rigorous["R"][0, 0] == pytest.approx(g3 * xw + g2 * (0.25 + 1.0) + (1 + g3) * 2.0**-150, rel=1e-8)
    # the graph's own order alone would give less: gamma_1 |x w| + u (|x w + b| + ...) + u (|R| + ...)
    assert mb.rigorous["R"][0, 0] > FLOAT32.unit_roundoff * (xw + (xw + 0.25) + (xw + 1.25)) * 1.01


def test_linear_ratio_table_within_the_documented_factor():
    from harness.models.compare_linear import format_ratio_table, linear_cases, ratio_table

    rows = ratio_table(linear_cases(seed=14, count=6))
    assert {r.dtype for r in rows} == {"float64", "float32", "float16", "bfloat16"}
    assert len(rows) == 4 * 5 * 2
    for r in rows:
        lo, hi = RIGOROUS_FACTOR if r.kind == "rigorous" else EXPECTED_FACTOR
        assert lo <= r.min <= r.median <= r.max <= hi, r
    table = format_ratio_table(rows)
    assert table.count("\n") == 5 and "grad_W" in table


EXPRESSION = "a*exp(b*x) + c*sin(x) + d*log(1 + x**2) + erf(x)*sqrt(1 + x**2) - cos(a*x)"


def torch_expression_step(inputs, reduction, lr, fmt):
    torch = pytest.importorskip("torch")
    dt = {"float64": torch.float64, "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[fmt.name]
    P = {p: torch.tensor(float(inputs[p]), dtype=dt, requires_grad=True) for p in "abcd"}
    x = torch.tensor(inputs["X"], dtype=dt)
    y = torch.tensor(inputs["y"], dtype=dt)
    a, b, c, d = (P[p] for p in "abcd")
    pred = a * torch.exp(b * x) + c * torch.sin(x) + d * torch.log(1 + x**2) + torch.erf(x) * torch.sqrt(1 + x**2) - torch.cos(a * x)
    loss = torch.nn.functional.mse_loss(pred, y, reduction=reduction)
    loss.backward()
    out = {"loss": loss.detach().double().numpy()}
    with torch.no_grad():
        for p in "abcd":
            out[f"grad_{p}"] = P[p].grad.double().numpy()
            out[p] = (P[p] - lr * P[p].grad).double().numpy()
    return out


@pytest.mark.parametrize("fmt", [FLOAT64, FLOAT32, FLOAT16, BFLOAT16], ids=lambda f: f.name)
def test_expression_model_torch_within_the_bound(fmt):
    """The expression kind (exp, sin, log, sqrt, erf, cos; scalar parameters): torch autograd within
    the rigorous bound of the plan, a bound of a few hundred u at most (not vacuous)."""
    from harness.models.oracle import model_truth
    from harness.models.plan import build_plan
    from harness.models.spec import ModelSpec

    spec = ModelSpec(kind="expression", expression=EXPRESSION, parameters=("a", "b", "c", "d"))
    rng = np.random.default_rng(3)
    for reduction in ("sum", "mean"):
        for _ in range(3):
            n = int(rng.integers(1, 9))
            inputs = {"X": rng.uniform(-2, 2, (n, 1)), "y": rng.normal(0, 1, (n, 1)),
                      "a": np.array(rng.normal()), "b": np.array(rng.normal(0, 0.5)),
                      "c": np.array(rng.normal()), "d": np.array(rng.normal())}
            inputs = {k: round_to_format(v, fmt).reshape(np.shape(v)) for k, v in inputs.items()}
            graph = build_plan(spec, n, 1, 1, reduction, Fraction(1, 10))
            truth = model_truth(graph, inputs, fmt)
            got = torch_expression_step(inputs, reduction, 0.1, fmt)
            worst, bad = errors_vs_truth(graph, truth, fmt, got)
            assert not bad, (fmt.name, reduction, bad)
            assert worst > 0.0
            mb = model_bounds(graph, truth.node_values, fmt)
            for q in graph.outputs:  # finite and not vacuous: a few hundred u relative to the value and 1
                scale = np.abs(truth.hi[q]) + 1.0
                assert np.all(mb.rigorous[q] <= 512 * fmt.unit_roundoff * scale), (q, mb.rigorous[q], truth.hi[q])


@pytest.mark.parametrize("fmt", [FLOAT64, FLOAT32, FLOAT16, BFLOAT16], ids=lambda f: f.name)
@pytest.mark.parametrize("act", ["tanh", "sigmoid", "softplus", "gelu", "relu", "leaky_relu"])
def test_torch_activation_kernels_within_the_function_accuracy(act, fmt):
    """Every float of a dense grid in [-30, 30] (and the saturation tails): torch's CPU kernel of the
    activation and of its backward (autograd, seed 1) within the bounds of an exact argument (E = 0):
    the FUNCTION_ULPS table and the formulas' roundings, checked against float64/mpmath-grade values."""
    torch = pytest.importorskip("torch")
    import torch.nn.functional as nnf

    from harness.bounds import Regime, flush_to_zero_default
    from harness.models.bounds import FnContext

    dt = {"float64": torch.float64, "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[fmt.name]
    grid = np.concatenate([np.linspace(-30, 30, 120001), np.linspace(-1e-3, 1e-3, 2001), np.linspace(19, 21, 4001)])
    z = np.unique(round_to_format(grid, fmt))
    zt = torch.tensor(z, dtype=dt, requires_grad=True)
    fn = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "softplus": nnf.softplus, "gelu": nnf.gelu, "relu": torch.relu,
          "leaky_relu": lambda t: nnf.leaky_relu(t, float(SLOPE))}[act]
    y = fn(zt)
    y.sum().backward()
    got_y, got_g = y.detach().double().numpy(), zt.grad.double().numpy()
    exact_y = FNS64[act](z) if act != "gelu" else z * 0.5 * _ERFC(-z / math.sqrt(2))
    exact_g = FNS64["grad:" + act](z, exact_y)
    if act == "sigmoid":
        exact_y = _sig_stable(z)
        exact_g = exact_y * _sig_stable(-z)
    if act == "softplus":
        exact_g = _sig_stable(z)
    if act == "gelu":
        exact_g = 0.5 * _ERFC(-z / math.sqrt(2)) + z * _phi(z)
    ctx = FnContext(fmt, Regime(fmt, flush_to_zero_default(fmt)), FUNCTION_ULPS)
    zero = np.zeros_like(z)
    by = activation_value_bound(act, z, zero, ctx, float(SLOPE))
    bg = activation_grad_bound(act, z, zero, exact_y, by, ctx, float(SLOPE))
    slack = 1e-15 * (np.abs(exact_y) + np.abs(exact_g) + 1e-300)  # the float64 references' own error
    ey, eg = np.abs(got_y - exact_y), np.abs(got_g - exact_g)
    assert np.all(ey <= by + slack), (act, fmt.name, z[np.argmax(ey - by)], float(np.max(ey - by)))
    # the backward multiplies the seed 1 by the derivative: one more rounding (exact here)
    assert np.all(eg <= bg + slack), (act, fmt.name, z[np.argmax(eg - bg)], float(np.max(eg - bg)))


_ERFC = np.vectorize(math.erfc, otypes=[np.float64])


def _sig_stable(z):
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1 / (1 + e), e / (1 + e))


@pytest.mark.parametrize("fmt", [FLOAT64, FLOAT32, FLOAT16, BFLOAT16], ids=lambda f: f.name)
@pytest.mark.parametrize("name", ["exp", "log", "sqrt", "sin", "cos", "erf", "abs"])
def test_torch_elementary_kernels_within_the_function_accuracy(name, fmt):
    """The expression kind's functions: torch's value and autograd derivative on a dense grid within
    elementary_value_bound / elementary_grad_bound of an exact argument (mpmath references)."""
    torch = pytest.importorskip("torch")
    from harness.bounds import Regime, flush_to_zero_default
    from harness.models.bounds import FnContext, elementary_grad_bound, elementary_value_bound

    dt = {"float64": torch.float64, "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[fmt.name]
    lo, hi = {"exp": (-20, 11), "log": (1e-3, 1e4), "sqrt": (1e-3, 1e4)}.get(name, (-40, 40))
    z = np.unique(round_to_format(np.linspace(lo, hi, 3001), fmt))
    z = z[(z > 0) | (name not in ("log", "sqrt"))]
    zt = torch.tensor(z, dtype=dt, requires_grad=True)
    y = getattr(torch, name)(zt)
    y.sum().backward()
    got_y, got_g = y.detach().double().numpy(), zt.grad.double().numpy()
    with mpmath.workdps(40):
        f = {"exp": mpmath.exp, "log": mpmath.log, "sqrt": mpmath.sqrt, "sin": mpmath.sin, "cos": mpmath.cos,
             "erf": mpmath.erf, "abs": abs}[name]
        fp = {"exp": mpmath.exp, "log": lambda v: 1 / v, "sqrt": lambda v: 1 / (2 * mpmath.sqrt(v)), "sin": mpmath.cos,
              "cos": lambda v: -mpmath.sin(v), "erf": lambda v: 2 / mpmath.sqrt(mpmath.pi) * mpmath.exp(-v * v),
              "abs": lambda v: mpmath.sign(v)}[name]
        ey = np.array([float(abs(mpmath.mpf(g) - f(mpmath.mpf(v)))) for g, v in zip(got_y, z, strict=True)])
        eg = np.array([float(abs(mpmath.mpf(g) - fp(mpmath.mpf(v)))) for g, v in zip(got_g, z, strict=True)])
        exact_y = np.array([float(f(mpmath.mpf(v))) for v in z])
    ctx = FnContext(fmt, Regime(fmt, flush_to_zero_default(fmt)), FUNCTION_ULPS)
    zero = np.zeros_like(z)
    by = elementary_value_bound(name, z, zero, ctx)
    bg = elementary_grad_bound(name, z, zero, exact_y, by, ctx)
    assert np.all(ey <= by), (name, fmt.name, z[np.argmax(ey - by)], float(np.max(ey / by)))
    assert np.all(eg <= bg), (name, fmt.name, z[np.argmax(eg - bg)], float(np.max(eg / bg)))


def test_to_step_bounds_keeps_the_bounds_and_names_overrides():
    graph = mlp_graph(2, 2, (3,), 1, "tanh", "sum", 0.1)
    inputs, _ = draw_case(0, FLOAT32, 2, 2, (3,), 1, 1.0, "plain")
    vals = evaluate_float64(graph, inputs, fn_float64=FNS64)
    mb = model_bounds(graph, vals, FLOAT32, function_ulps={"tanh": 4.0})
    sb = mb.to_step_bounds()
    assert set(sb.rigorous) == set(graph.outputs)
    assert all(np.array_equal(sb.rigorous[q], mb.rigorous[q]) for q in graph.outputs)
    assert "tanh 4" in sb.note and sb.vacuous == {}
    pos, neg = mb.signed_inf_allowed("loss")
    assert not bool(pos) and not bool(neg)


@pytest.mark.parametrize("fmt", [FLOAT64, FLOAT32], ids=lambda f: f.name)
@pytest.mark.parametrize("act", ["tanh", "sigmoid", "softplus"])
def test_numpy_activation_formulas_within_the_function_accuracy(act, fmt):
    """NumPy's ufuncs (SIMD kernels in float32) in the formulas a NumPy step uses -- tanh and 1 - y^2,
    1/(1 + exp(-z)) and y (1 - y), softplus with torch's threshold and 1/(1 + exp(-z)) -- on a dense
    grid, within the bounds of an exact argument."""
    from harness.bounds import Regime
    from harness.models.bounds import FnContext

    dt = np.float32 if fmt.name == "float32" else np.float64
    z = np.unique(round_to_format(np.concatenate([np.linspace(-30, 30, 200001), np.linspace(-1e-3, 1e-3, 2001)]), fmt)).astype(dt)
    one = dt(1)
    with np.errstate(over="ignore"):
        if act == "tanh":
            y = np.tanh(z)
            g = one - y * y
        elif act == "sigmoid":
            y = one / (one + np.exp(-z))
            g = y * (one - y)
        else:
            y = np.where(z > 20, z, np.log1p(np.exp(np.minimum(z, dt(20)))))
            g = one / (one + np.exp(-z))
    z64 = z.astype(np.float64)
    exact_y = {"tanh": np.tanh, "sigmoid": _sig_stable, "softplus": lambda t: np.logaddexp(0, t)}[act](z64)
    exact_g = {"tanh": lambda t: 1 / np.cosh(t) ** 2, "sigmoid": lambda t: _sig_stable(t) * _sig_stable(-t),
               "softplus": _sig_stable}[act](z64)
    ctx = FnContext(fmt, Regime(fmt, False), FUNCTION_ULPS)
    zero = np.zeros_like(z64)
    by = activation_value_bound(act, z64, zero, ctx)
    bg = activation_grad_bound(act, z64, zero, exact_y, by, ctx)
    slack = 4e-16 * (np.abs(exact_y) + np.abs(exact_g)) if fmt.name == "float64" else 0.0  # float64 references
    ey, eg = np.abs(y.astype(np.float64) - exact_y), np.abs(g.astype(np.float64) - exact_g)
    assert np.all(ey <= by + slack), (act, fmt.name, z64[np.argmax(ey / by)], float(np.max(ey / by)))
    assert np.all(eg <= bg + slack), (act, fmt.name, z64[np.argmax(eg / bg)], float(np.max(eg / bg)))


def test_flush_to_zero_bounds_cover_a_flushing_evaluation():
    """float16 and bfloat16 allow flush-to-zero by default, float32 when declared: a torch float32 step
    run with denormals flushed (torch.set_flush_denormal) on inputs whose products are subnormal stays
    within the flush-to-zero bound, which is larger than the gradual-underflow one there."""
    torch = pytest.importorskip("torch")
    n, d, hidden, k = 4, 3, (5,), 2
    inputs, names = draw_case(5, FLOAT32, n, d, hidden, k, 2.0**-64, "tiny")
    graph, truth = plan_and_truth(n, d, hidden, k, "tanh", "sum", 0.1, inputs, FLOAT32)
    gradual = model_bounds(graph, truth.node_values, FLOAT32)
    ftz = model_bounds(graph, truth.node_values, FLOAT32, flush_to_zero=True)
    assert not gradual.flush_to_zero and ftz.flush_to_zero
    assert model_bounds(graph, truth.node_values, FLOAT16).flush_to_zero
    assert np.all(ftz.rigorous["grad_W1"] >= gradual.rigorous["grad_W1"])
    assert np.any(ftz.rigorous["grad_W1"] > 100 * gradual.rigorous["grad_W1"])
    if not torch.set_flush_denormal(True):
        pytest.skip("this CPU cannot flush denormals")
    try:
        got = run_impl("torch", inputs, names, "tanh", "sum", 0.1, FLOAT32)
    finally:
        torch.set_flush_denormal(False)
    for q in graph.outputs:
        err = np.abs((np.asarray(got[q]).reshape(truth.hi[q].shape) - truth.hi[q]) - truth.lo[q])
        assert np.all(err <= ftz.rigorous[q]), q


@pytest.mark.parametrize("fmt", [FLOAT64, FLOAT32], ids=lambda f: f.name)
def test_relu_derivative_at_an_exact_kink_is_caught(fmt):
    """Integer data: the pre-activations are computed exactly (E = 0, exact_sum), some are exactly 0,
    and ReLU'(0) = 1 instead of the declared 0 leaves the bound of the first layer's gradients;
    the correct convention stays within it."""
    rng = np.random.default_rng(7)
    n, d, hidden, k = 6, 3, (4,), 2
    inputs = {"X": rng.integers(-2, 3, (n, d)).astype(float), "y": rng.integers(-2, 3, (n, k)).astype(float),
              "W1": rng.integers(-2, 3, (d, 4)).astype(float), "b1": np.zeros(4),
              "W2": rng.integers(-2, 3, (4, k)).astype(float), "b2": rng.integers(-2, 3, (k,)).astype(float)}
    names = ["W1", "b1", "W2", "b2"]
    z = inputs["X"] @ inputs["W1"]
    assert np.any(z == 0)
    graph, truth = plan_and_truth(n, d, hidden, k, "relu", "sum", 0.125, inputs, fmt)
    z_node = [nd for nd in graph.nodes if nd.op == "fn"][0].args[0]
    assert np.any(truth.node_values[z_node] == 0)  # the plan's pre-activation has exact zeros
    ok = numpy_step(inputs, names, "relu", "sum", 0.125, fmt, "blas")
    assert not errors_vs_truth(graph, truth, fmt, ok)[1]
    bad = numpy_step(inputs, names, "relu", "sum", 0.125, fmt, "blas", relu_at_zero_one=True)
    caught = {q for q, *_ in errors_vs_truth(graph, truth, fmt, bad)[1]}
    assert caught & {"grad_W1", "grad_b1"}, caught
