"""helper-168: realistic training-step bugs written as plug-ins, and one false pass of the overflow masks.

**The defect.** :func:`harness.bounds.overflow_masks` allows ``+inf`` in a gradient wherever the sum of all its
positive terms (an order that sums the terms sorted by sign) passes the range, and a NaN only where the orders
libraries sum in (contiguous ranges, strided lanes: :func:`harness.bounds.typical_partial_sums`) overflow both ways
(helper-100). The infinity had no such rule: a float16 step returning ``+inf`` for every gradient (and ``-inf`` for
W and b) whose terms ``(512, 512, -1024)`` sum to 0 in every modelled order was ``overflow`` on every record (no
failure even with ``--strict``), where the same step returning NaN was ``suspect``. Now an infinity outside the
typical-order masks (:attr:`harness.bounds.StepBounds.posinf_typical` / ``neginf_typical``) is ``suspect`` too, and
an in-order sum that does overflow (a first half of positive terms) stays ``overflow``.

**The catalogue.** Realistic bugs not in the selftest's mutants, each pinned on a shipped quick-tier case where it is
caught (``disagree``): grad_W transposed (square D = K), grad_b as the sum over every element (K > 1), the update
with ``+lr``, a float64 update computed in float32, ``X.T @ R`` over N - 1 rows, Adam's bias correction one step
ahead, Adam's betas swapped, SGD's momentum before the weight decay, sigmoid' taken as sigmoid, an MLP's last-layer
gradient from the pre-activations, a missing hidden-bias gradient, polynomial features one power low in the gradient.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import harness
from harness.compare import compare
from harness.floats import FLOAT16
from harness.models.numpy_steps import activation, activation_grad, features, matmul, weight_layers
from harness.models.step import ModelStepResult
from harness.optim.config import PARAMS, OptimizerStepResult
from harness.verdicts import failures

# ---- the defect: an infinity only the sign-sorted order forms -----------------------------------------------------


def _h(v: object) -> np.ndarray:
    return np.asarray(v, dtype=np.float16)


def _seq(t: np.ndarray) -> np.float16:
    """``t`` summed in order, every partial sum rounded to float16."""
    with np.errstate(over="ignore", invalid="ignore"):
        return np.cumsum(_h(t), dtype=np.float16)[-1]


@harness.implementation("t168-inf-everywhere", framework="numpy", correct=False)
def inf_everywhere(X, y, W, b, *, lr, reduction, steps):
    """+inf for every gradient, -inf for W and b (W - lr (+inf)); the loss as it should be in float16 (inf)."""
    inf = np.float16(np.inf)
    return [harness.StepResult(inf, np.full_like(W, inf), np.full_like(b, inf), np.full_like(W, -inf),
                               np.full_like(b, -inf)) for _ in range(steps)]


@harness.implementation("t168-in-order", framework="numpy", default=False)
def in_order(X, y, W, b, *, lr, reduction, steps):
    """A correct float16 step (sum reduction, X = 1 columns): each reduction over N summed in the data's order."""
    out = []
    for _ in range(steps):
        with np.errstate(over="ignore", invalid="ignore"):
            R = _h(_h(X @ W) + b) - y
            S = _h(2) * R
            gW = _h([[_seq(_h(X[:, j] * S[:, q])) for q in range(W.shape[1])] for j in range(W.shape[0])])
            gb = _h([_seq(S[:, q]) for q in range(W.shape[1])])
            W, b = _h(W - _h(_h(lr) * gW)), _h(b - _h(_h(lr) * gb))
            out.append(harness.StepResult(_seq(_h(R * R).ravel()), gW, gb, W, b))
    return out


def _case(name: str, R: np.ndarray) -> harness.Case:
    n = R.size
    return harness.case_from_arrays(name, np.ones((n, 1)), -R[:, None], np.zeros((1, 1)), np.zeros(1), lr=2.0**-10,
                                    reduction="sum", dtypes=("float16",))


PERIOD3 = np.tile([256.0, 256.0, -512.0], 512)  # N = 1536: terms 2R = (512, 512, -1024), 0 in every period
HALVES = np.concatenate([np.full(768, 256.0), np.full(768, -256.0)])  # the same terms' sum, 0, past +65504 in order


def _grade(impl: str, R: np.ndarray) -> dict[str, harness.Record]:
    return {r.quantity: r for r in harness.verify([_case("h168", R)], [impl], dtypes=["float16"])}


def test_the_terms_sum_as_described():
    t = _h(2 * PERIOD3)
    assert _seq(t) == 0 and _seq(t[::-1]) == 0  # in order, either way: 0 (every partial sum within +-1024)
    assert float(np.sum(t[t > 0], dtype=np.float64)) == 512 * 1024 > 65504  # sorted by sign: past the range
    assert _seq(_h(2 * HALVES)) == np.inf  # the first half alone reaches 393216: +inf, and inf - 512 stays +inf


def test_an_infinity_only_the_sign_sorted_order_forms_is_suspect():
    recs = _grade("t168-inf-everywhere", PERIOD3)
    for q in ("grad_W", "grad_b", "W", "b"):
        assert recs[q].verdict == "suspect", (q, recs[q].verdict, recs[q].message)
        assert "only an order summing the terms by sign" in recs[q].message
    assert recs["grad_W"].computed == "inf" and recs["W"].computed == "-inf"
    assert recs["loss"].verdict == "overflow"  # 256**2 = 65536 is past float16's range: inf is right
    assert len(failures(list(recs.values()), strict=True)) == 4 and not failures(list(recs.values()))


def test_an_infinity_of_the_datas_order_stays_overflow():
    recs = _grade("t168-in-order", HALVES)
    assert recs["grad_b"].computed == "inf" and recs["W"].computed == "-inf"
    assert all(r.verdict in ("overflow", "agree") for r in recs.values()), {q: r.verdict for q, r in recs.items()}
    assert recs["grad_b"].verdict == "overflow" and recs["b"].verdict == "overflow"


def test_compare_grades_an_atypical_infinity_suspect():
    kw = dict(exact_hi=np.array([0.0, 0.0, 7e4]), exact_lo=np.zeros(3), rigorous=np.ones(3), expected=np.ones(3),
              inf_allowed=np.ones(3, bool), fmt=FLOAT16)
    c = np.array([math.inf, -math.inf, math.inf])
    assert compare(c, **kw).verdict == "overflow"
    res = compare(c, **kw, posinf_typical=np.array([False, False, False]), neginf_typical=np.array([False, True, False]))
    assert res.counts == {"overflow": 2, "suspect": 1} and res.worst_index == (0,)  # the exact 7e4 allows +inf
    assert compare(c, **kw, posinf_typical=np.ones(3, bool), neginf_typical=np.ones(3, bool)).verdict == "overflow"


# ---- the catalogue: realistic bugs, each caught on a shipped quick-tier case ---------------------------------------


def _linear(grads=None, update=None):
    def step(X, y, W, b, *, lr, reduction, steps):
        n, k = y.shape
        dt = X.dtype.type
        c = dt(1.0 if reduction == "sum" else 1.0 / (n * k))
        out = []
        for _ in range(steps):
            R = X @ W + b - y
            gW, gb = (dt(2) * c) * (X.T @ R), (dt(2) * c) * R.sum(axis=0)
            if grads is not None:
                gW, gb = grads(X, R, c, gW, gb)
            W, b = (W - lr * gW, b - lr * gb) if update is None else update(W, b, gW, gb, lr)
            out.append(harness.StepResult(c * np.sum(R * R), gW, gb, W, b))
        return out
    return step


def _f32_update(W, b, gW, gb, lr):
    f = np.float32
    return (W.astype(f) - f(lr) * gW.astype(f)).astype(W.dtype), (b.astype(f) - f(lr) * gb.astype(f)).astype(b.dtype)


LINEAR = {
    "t168-gradW-transposed": _linear(grads=lambda X, R, c, gW, gb: (np.ascontiguousarray(gW.T), gb)),
    "t168-gradb-total-sum": _linear(grads=lambda X, R, c, gW, gb: (gW, np.full_like(gb, (2 * c) * R.sum()))),
    "t168-update-plus-lr": _linear(update=lambda W, b, gW, gb, lr: (W + lr * gW, b + lr * gb)),
    "t168-update-float32": _linear(update=_f32_update),
    "t168-XtR-n-minus-1": _linear(grads=lambda X, R, c, gW, gb: ((2 * c) * (X[:-1].T @ R[:-1]), gb)),
}
for _name, _fn in LINEAR.items():
    harness.implementation(_name, framework="numpy", correct=False, dtypes=("float64", "float32"))(_fn)


def _adam(bug: str):
    """NumPy Adam (float32/float64) with one bug: ``"t+1"`` bias corrections a step ahead, ``"betas"`` swapped."""
    def step(X, y, W, b, *, lr, reduction, steps, optimizer):
        n, k = y.shape
        dt = X.dtype.type
        c = dt(1.0 if reduction == "sum" else 1.0 / (n * k))
        kw = optimizer.torch_kwargs()
        b1, b2 = kw["betas"][::-1] if bug == "betas" else kw["betas"]
        params, state, out = {"W": W, "b": b}, {p: {} for p in PARAMS}, []
        for t in range(1, steps + 1):
            R = X @ params["W"] + params["b"] - y
            grads = {"W": (dt(2) * c) * (X.T @ R), "b": (dt(2) * c) * R.sum(axis=0)}
            tb = t + 1 if bug == "t+1" else t
            for p in PARAMS:
                g, w, st = grads[p], params[p], state[p]
                m = dt(b1) * st.get("exp_avg", np.zeros_like(w)) + dt(1 - b1) * g
                v = dt(b2) * st.get("exp_avg_sq", np.zeros_like(w)) + dt(1 - b2) * (g * g)
                den = np.sqrt(v) / dt(math.sqrt(1 - b2**tb)) + dt(kw["eps"])
                params[p], state[p] = w - dt(lr / (1 - b1**tb)) * (m / den), {"exp_avg": m, "exp_avg_sq": v}
            out.append(OptimizerStepResult(c * np.sum(R * R), grads["W"], grads["b"], params["W"], params["b"],
                                           {p: dict(state[p]) for p in PARAMS}))
        return out
    return step


def _momentum_before_weight_decay(X, y, W, b, *, lr, reduction, steps, optimizer):
    """torch.optim.SGD with the weight decay added after the momentum buffer (torch adds it to the gradient first)."""
    n, k = y.shape
    dt = X.dtype.type
    c = dt(1.0 if reduction == "sum" else 1.0 / (n * k))
    kw = optimizer.torch_kwargs()
    mu, wd, damp = dt(kw["momentum"]), dt(kw["weight_decay"]), dt(1 - kw["dampening"])
    params, bufs, out = {"W": W, "b": b}, {}, []
    for t in range(1, steps + 1):
        R = X @ params["W"] + params["b"] - y
        grads = {"W": (dt(2) * c) * (X.T @ R), "b": (dt(2) * c) * R.sum(axis=0)}
        for p in PARAMS:
            d = -grads[p] if kw["maximize"] else grads[p]
            bufs[p] = d.copy() if t == 1 else mu * bufs[p] + damp * d
            step_dir = (d + mu * bufs[p]) if kw["nesterov"] else bufs[p]
            params[p] = params[p] - dt(lr) * (step_dir + wd * params[p])
        out.append(OptimizerStepResult(c * np.sum(R * R), grads["W"], grads["b"], params["W"], params["b"],
                                       {p: {"momentum_buffer": bufs[p].copy()} for p in PARAMS}))
    return out


#: The optimizer bugs, registered only while this module's tests run (:func:`_optimizer_bugs`): left in the registry
#: they would count among the optimizer mutants of tests/test_optim_run.py's check that every one is caught.
OPTIMIZER_BUGS = {
    "t168-adam-bias-correction-ahead": (("adam",), _adam("t+1")),
    "t168-adam-betas-swapped": (("adam",), _adam("betas")),
    "t168-momentum-before-weight-decay": (("sgd",), _momentum_before_weight_decay),
}


@pytest.fixture(scope="module", autouse=True)
def _optimizer_bugs():
    from harness.implementations import REGISTRY

    for name, (rules, fn) in OPTIMIZER_BUGS.items():
        harness.implementation(name, framework="numpy", correct=False, dtypes=("float64", "float32"), optimizers=rules)(fn)
    yield
    for name in OPTIMIZER_BUGS:
        REGISTRY.pop(name, None)


def _mlp(bug: str):
    """``numpy-model``'s step (:func:`harness.models.numpy_steps.numpy_model_step`) with one bug."""
    def act_grad(name, z, h, spec):
        if bug == "sigmoid-h" and name == "sigmoid":
            return h.copy()  # sigmoid' taken as sigmoid (the factor 1 - sigmoid missing)
        return activation_grad(name, z, h, spec)

    def one(X, y, params, spec, lr, reduction):
        dt = X.dtype.type
        n, d = X.shape
        k = y.shape[1]
        layers = weight_layers(spec, spec.parameter_names(d, k))
        c = 1.0 if reduction == "sum" else 1.0 / (n * k)
        hs, zs = [features(X, spec)], []
        for i, (wn, bn) in enumerate(layers, start=1):
            z = matmul(hs[-1], params[wn]) + (params[bn] if bn is not None else 0)
            zs.append(z.astype(X.dtype, copy=False))
            if i < len(layers):
                hs.append(activation(spec.activation or "", zs[-1], spec))
        R = zs[-1] - y
        delta, grads = dt(2 * c) * R, {}
        for i in range(len(layers), 0, -1):
            wn, bn = layers[i - 1]
            a = hs[i - 1]
            if bug == "preactivation" and i == len(layers) and i > 1:
                a = zs[i - 2]  # the last layer's gradient from the pre-activations
            if bug == "low-power" and spec.kind == "polynomial":
                a = np.concatenate([np.ones_like(X)] + [X**p for p in range(1, int(spec.polynomial))], axis=1)
            grads[wn] = matmul(a.T, delta)
            if bn is not None:
                grads[bn] = np.sum(delta, axis=0, dtype=X.dtype)
                if bug == "no-b1" and i == 1 and len(layers) > 1:
                    grads[bn] = np.zeros_like(grads[bn])
            if i > 1:
                delta = matmul(delta, params[wn].T) * act_grad(spec.activation or "", zs[i - 2], hs[i - 1], spec)
        names = spec.parameter_names(d, k)
        new = {p: (params[p] - dt(lr) * grads[p]).astype(X.dtype, copy=False) for p in names}
        return ModelStepResult(loss=np.asarray(dt(c) * np.sum(R * R, dtype=X.dtype)), grads=grads, params=new)

    def step(X, y, params, *, model, lr, reduction, steps):
        out, cur = [], dict(params)
        for _ in range(steps):
            out.append(one(X, y, cur, model, lr, reduction))
            cur = dict(out[-1].params)
        return out
    return step


for _name, _bug, _models in (("t168-sigmoid-grad-is-sigmoid", "sigmoid-h", ({"kind": "mlp", "activation": "sigmoid"},)),
                             ("t168-last-layer-grad-from-preactivation", "preactivation", ("mlp",)),
                             ("t168-hidden-bias-grad-missing", "no-b1", ("mlp",)),
                             ("t168-polynomial-features-one-power-low", "low-power", ("polynomial",))):
    harness.implementation(_name, framework="numpy", correct=False, dtypes=("float64", "float32"), models=_models)(_mlp(_bug))


CATALOGUE = [
    ("t168-gradW-transposed", "generated.toml", "gen-grid-mixed-n4-d4-k4-mean-s1"),
    ("t168-gradb-total-sum", "generated.toml", "gen-grid-tiny-n2-d2-k3-sum-s1"),
    ("t168-update-plus-lr", "seed.toml", "seed"),
    ("t168-update-float32", "seed.toml", "seed"),
    ("t168-XtR-n-minus-1", "seed.toml", "seed-mean"),
    ("t168-adam-bias-correction-ahead", "optim.toml", "gen-optim-adam-normal-n3-d2-k2-mean-s3"),
    ("t168-adam-betas-swapped", "optim.toml", "gen-optim-adam-normal-n3-d2-k2-mean-s3"),
    ("t168-momentum-before-weight-decay", "optim.toml", "gen-optim-sgd-nesterov-normal-n3-d2-k2-sum-s3"),
    ("t168-sigmoid-grad-is-sigmoid", "models.toml", "gen-sigmoid-1-normal-n6-d3-k1-sum-s1"),
    ("t168-last-layer-grad-from-preactivation", "models.toml", "gen-gelu-1-wide-n4-d3-k1-mean-s1"),
    ("t168-hidden-bias-grad-missing", "models.toml", "gen-gelu-1-wide-n4-d3-k1-mean-s1"),
    ("t168-polynomial-features-one-power-low", "models.toml", "gen-poly-2-normal-n8-d1-k1-sum-s1"),
]


@pytest.mark.parametrize("impl,path,case_id", CATALOGUE, ids=[c[0] for c in CATALOGUE])
def test_a_realistic_bug_is_caught_on_a_shipped_case(impl, path, case_id):
    from harness.api import cases_dir
    from harness.cases import as_cases

    case = [c for c in as_cases(cases_dir() / path) if c.id == case_id]
    assert len(case) == 1, case_id
    dtype = "float64" if impl == "t168-update-float32" else "float32"
    recs = harness.verify(case, [impl], dtypes=[dtype])
    assert recs and any(r.verdict == "disagree" for r in recs), {(r.quantity, r.step): r.verdict for r in recs}
