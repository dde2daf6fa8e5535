"""The NumPy model implementation: forward and backward pass written by hand, no autograd.

For the ``linear``, ``mlp`` and ``polynomial`` kinds of :mod:`harness.models.spec` (the
``expression`` kind is run by ``torch-model-functional``, :mod:`harness.models.torch_steps`)::

    h_0 = phi(X)                       (X itself; polynomial: [X, X^2, ..., X^P], power-major)
    z_l = h_{l-1} W_l + b_l,  h_l = act(z_l)      l = 1 .. L   (hidden layers)
    F = h_L W_{L+1} + b_{L+1},  R = F - y,  loss = c sum R^2,  c = 1 (sum) or 1/(N K) (mean)
    delta_{L+1} = 2c R
    dL/dW_l = h_{l-1}^T delta_l,  dL/db_l = sum_rows delta_l
    delta_{l-1} = (delta_l W_l^T) * act'(z_{l-1})
    p' = p - lr dL/dp

Every operation is in the inputs' dtype (float64, float32, float16; bfloat16 as ``ml_dtypes.bfloat16``
arrays where ``ml_dtypes`` is installed -- NumPy's own matmul of bfloat16 returns float32, rounded
back here, so a bfloat16 product is accumulated in float32 and rounded once), except the
element-wise activations and their derivatives, which for float16 and bfloat16 are evaluated in
float32 and rounded once to the dtype (as NumPy's own half-precision loops, ml_dtypes and
PyTorch's opmath evaluate ``tanh``; :func:`compute_dtype`; the error model of
:mod:`harness.models.bounds` assumes it). Constants (``2c``, ``lr``, leaky ReLU's slope) are
rounded to the dtype first. Powers are repeated products.

Activations and their derivatives (PyTorch's definitions, :mod:`harness.models.spec`):

- ``relu``: ``max(z, 0)``; derivative 1 for z > 0, 0 for z < 0, ``relu_grad_at_zero`` at 0.
- ``leaky_relu``: ``z`` or ``s z`` (s = ``negative_slope``); derivative 1, s, and at 0
  ``s + (1 - s) g0`` with ``g0 = relu_grad_at_zero`` (g0 = 0: PyTorch's ``s``; g0 = 1: 1).
- ``tanh``: ``np.tanh``; derivative ``1 - tanh(z)^2`` from the forward value.
- ``sigmoid``: ``1 / (1 + exp(-z))`` written without overflow (:func:`sigmoid`); derivative
  ``s (1 - s)`` from the forward value.
- ``softplus``: ``log1p(exp(z))`` (PyTorch's formula) up to z = 20, ``z + log1p(exp(-z))`` above
  (no overflow); no threshold (PyTorch returns z itself above 20: the truth has the exact value,
  so NumPy is the closer one there); derivative ``sigmoid(z)``.
- ``gelu``: ``z/2 (1 + erf(z / sqrt 2))``, derivative ``Phi(z) + z phi(z)`` with
  ``Phi = (1 + erf(z/sqrt 2))/2``, ``phi = exp(-z^2/2)/sqrt(2 pi)``. NumPy has no ``erf``:
  ``scipy.special.erf`` when SciPy is importable, else ``math.erf`` vectorised (both in float64;
  the result is rounded to the dtype: at least as accurate as a native kernel of the dtype).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from fractions import Fraction
from typing import Any

import numpy as np

from ..implementations.registry import implementation
from .spec import ModelSpec, kink_derivative
from .step import ModelStepResult

Arr = Any  # a NumPy array of a floating dtype (ml_dtypes.bfloat16 included)
#: ``act_grad(name, z, h, spec) -> act'(z)``: the activation derivative used in the backward pass.
ActGrad = Callable[[str, Arr, Arr, ModelSpec], Arr]
#: ``matmul(a, b, layer, where) -> a @ b`` of layer ``layer`` (1-based): ``where`` is ``"forward"``
#: (``h W``), ``"grad"`` (the weight gradient ``h^T delta``) or ``"backward"`` (``delta W^T``).
MatMul = Callable[[Arr, Arr, int, str], Arr]


def erf_float64(z: Any) -> Any:
    """``erf`` of a float64 array: ``scipy.special.erf`` if SciPy is importable, else ``math.erf`` per element."""
    try:
        from scipy.special import erf

        return erf(np.asarray(z, dtype=np.float64))
    except ImportError:  # pragma: no cover - SciPy is installed with the test extra
        return np.vectorize(math.erf, otypes=[np.float64])(np.asarray(z, dtype=np.float64))


def relu_slope_at_zero(spec: ModelSpec, activation: str) -> Fraction:
    """The derivative taken at exactly 0 by ``relu`` / ``leaky_relu`` under the spec's convention:
    ``g0`` for ReLU, ``s + (1 - s) g0`` for leaky ReLU (PyTorch: 0 and ``s``)."""
    return kink_derivative(activation, spec.negative_slope, spec.relu_grad_at_zero)


#: Above this argument softplus is evaluated as ``z + log1p(exp(-z))`` (``exp(z)`` would overflow
#: float32 beyond 88.7); at and below it as ``log1p(exp(z))``, PyTorch's formula.
SOFTPLUS_SWITCH = 20.0


def sigmoid(z: Arr) -> Arr:
    """``1 / (1 + exp(-z))`` in ``z``'s dtype, written without overflow: ``e = exp(-|z|)``, then
    ``1 / (1 + e)`` for z >= 0 and ``e / (1 + e)`` for z < 0 (float16's ``exp(12)`` would be inf
    and ``sigmoid(-12) = 6.1e-6`` would come out 0)."""
    dt = z.dtype.type
    e = np.exp(-np.abs(z))
    one_e = dt(1) + e
    return np.where(z >= 0, dt(1) / one_e, e / one_e).astype(z.dtype, copy=False)


def compute_dtype(dtype: Any) -> Any:
    """The NumPy dtype the element-wise functions are evaluated in for ``dtype``: float32 for the
    half types (float16, bfloat16), as NumPy's own half loops, ml_dtypes and PyTorch's opmath do;
    else ``dtype`` itself."""
    return np.dtype(np.float32) if np.dtype(dtype).itemsize < 4 else np.dtype(dtype)


def activation(name: str, z: Arr, spec: ModelSpec) -> Arr:
    """``act(z)`` in ``z``'s dtype: evaluated in :func:`compute_dtype` and rounded once (module docstring)."""
    cdt = compute_dtype(z.dtype)
    if cdt != z.dtype:
        return activation_in(name, z.astype(cdt), spec).astype(z.dtype)
    return activation_in(name, z, spec)


def activation_grad(name: str, z: Arr, h: Arr, spec: ModelSpec) -> Arr:
    """``act'(z)`` in ``z``'s dtype, ``h = act(z)`` from the forward pass: evaluated in
    :func:`compute_dtype` and rounded once (module docstring)."""
    cdt = compute_dtype(z.dtype)
    if cdt != z.dtype:
        return activation_grad_in(name, z.astype(cdt), h.astype(cdt), spec).astype(z.dtype)
    return activation_grad_in(name, z, h, spec)


def activation_in(name: str, z: Arr, spec: ModelSpec) -> Arr:
    """``act(z)`` with every operation in ``z``'s dtype (module docstring)."""
    dt = z.dtype.type
    if name == "relu":
        return np.where(z > 0, z, dt(0))
    if name == "leaky_relu":
        return np.where(z > 0, z, dt(float(spec.negative_slope)) * z)
    if name == "tanh":
        return np.tanh(z)
    if name == "sigmoid":
        return sigmoid(z)
    if name == "softplus":  # log1p(exp(z)) as written up to 20; z + log1p(exp(-z)) above (no overflow)
        with np.errstate(over="ignore"):
            return np.where(z > dt(SOFTPLUS_SWITCH), z + np.log1p(np.exp(-z)), np.log1p(np.exp(np.minimum(z, dt(SOFTPLUS_SWITCH)))))
    if name == "gelu":
        e = erf_float64(np.asarray(z, dtype=np.float64) / math.sqrt(2.0)).astype(z.dtype)
        return (z * dt(0.5)) * (dt(1) + e)
    raise ValueError(f"activation: unknown {name!r}")


def activation_grad_in(name: str, z: Arr, h: Arr, spec: ModelSpec) -> Arr:
    """``act'(z)`` with every operation in ``z``'s dtype; ``h = act(z)`` (module docstring)."""
    dt = z.dtype.type
    if name in ("relu", "leaky_relu"):
        neg = dt(0) if name == "relu" else dt(float(spec.negative_slope))
        at0 = dt(float(relu_slope_at_zero(spec, name)))
        return np.where(z > 0, dt(1), np.where(z < 0, neg, at0)).astype(z.dtype)
    if name == "tanh":
        return dt(1) - h * h
    if name == "sigmoid":
        return h * (dt(1) - h)
    if name == "softplus":
        return sigmoid(z)
    if name == "gelu":
        z64 = np.asarray(z, dtype=np.float64)
        Phi = ((1.0 + erf_float64(z64 / math.sqrt(2.0))) / 2.0).astype(z.dtype)
        phi = (np.exp(-(z64 * z64) / 2.0) / math.sqrt(2.0 * math.pi)).astype(z.dtype)
        return Phi + z * phi
    raise ValueError(f"activation: unknown {name!r}")


def matmul(a: Arr, b: Arr, layer: int = 0, where: str = "forward") -> Arr:
    """``a @ b`` in ``a``'s dtype (NumPy returns float32 for ml_dtypes' bfloat16: rounded back)."""
    return np.asarray(a @ b).astype(a.dtype, copy=False)


def features(X: Arr, spec: ModelSpec) -> Arr:
    """``phi(X)``: X itself, or for a polynomial ``[X, X^2, ..., X^P]`` (power-major, repeated products)."""
    if spec.kind != "polynomial":
        return X
    powers = [X]
    for _ in range(2, int(spec.polynomial or 1) + 1):
        powers.append(powers[-1] * X)
    return np.concatenate(powers, axis=1)


def weight_layers(spec: ModelSpec, names: Iterable[str]) -> list[tuple[str, str | None]]:
    """``[(weight name, bias name or None), ...]`` layer by layer, for the parameters ``names``
    (``W1, b1, W2, ...`` of an mlp; ``W, b`` otherwise; no bias name where the model has none)."""
    have = set(names)
    if spec.kind == "mlp":
        return [(f"W{i}", f"b{i}" if f"b{i}" in have else None) for i in range(1, len(spec.hidden) + 2)]
    return [("W", "b" if "b" in have else None)]


def numpy_model_step(
    X: Arr, y: Arr, params: Mapping[str, Arr], spec: ModelSpec, lr: float, reduction: str,
    *, act_grad: ActGrad = activation_grad, mm: MatMul = matmul,
) -> ModelStepResult:
    """One step of the model by hand (module docstring): loss before the update, every gradient,
    every parameter after the update, all in ``X``'s dtype.

    ``act_grad`` and ``mm`` replace the activation derivative and the matrix products (the
    selftest's mutants, :mod:`harness.models.mutants`, do).

    Raises:
        ValueError: for the ``expression`` kind (not implemented by hand) or an unknown activation.
    """
    if spec.kind == "expression":
        raise ValueError("numpy-model implements the linear, mlp and polynomial kinds, not expression")
    dt = X.dtype.type
    n, d = X.shape
    k = y.shape[1]
    layers = weight_layers(spec, spec.parameter_names(d, k))
    c = 1.0 if reduction == "sum" else 1.0 / (n * k)
    act = spec.activation or ""
    hs: list[Arr] = [features(X, spec)]
    zs: list[Arr] = []
    for i, (wn, bn) in enumerate(layers, start=1):
        z = mm(hs[-1], params[wn], i, "forward")
        if bn is not None:
            z = z + params[bn]
        zs.append(z)
        if i < len(layers):
            hs.append(activation(act, z, spec))
    R = zs[-1] - y
    loss = dt(c) * np.sum(R * R, dtype=X.dtype)
    delta = dt(2 * c) * R
    grads: dict[str, Arr] = {}
    for i in range(len(layers), 0, -1):
        wn, bn = layers[i - 1]
        grads[wn] = mm(hs[i - 1].T, delta, i, "grad")
        if bn is not None:
            grads[bn] = np.sum(delta, axis=0, dtype=X.dtype)
        if i > 1:
            delta = mm(delta, params[wn].T, i, "backward") * act_grad(act, zs[i - 2], hs[i - 1], spec)
    lr_held = dt(lr)
    names = spec.parameter_names(d, k)
    new = {p: (params[p] - lr_held * grads[p]).astype(X.dtype, copy=False) for p in names}
    return ModelStepResult(loss=np.asarray(loss, dtype=X.dtype), grads={p: grads[p] for p in names}, params=new)


def numpy_model_steps(
    X: Arr, y: Arr, params: Mapping[str, Arr], spec: ModelSpec, lr: float, reduction: str, steps: int,
    *, act_grad: ActGrad = activation_grad, mm: MatMul = matmul,
) -> list[ModelStepResult]:
    """``steps`` plain SGD steps of :func:`numpy_model_step`, each from the previous one's parameters."""
    out = []
    current = dict(params)
    for _ in range(steps):
        res = numpy_model_step(X, y, current, spec, lr, reduction, act_grad=act_grad, mm=mm)
        out.append(res)
        current = dict(res.params)
    return out


@implementation("numpy-model", framework="numpy", kind="builtin", models=("linear", "mlp", "polynomial"),
                dtypes=("float64", "float32", "float16", "bfloat16"),
                description="NumPy forward and backward pass of the model written by hand (linear, mlp, polynomial)")
def numpy_model(X: Arr, y: Arr, params: Mapping[str, Arr], *, model: ModelSpec, lr: float, reduction: str,
                steps: int) -> list[ModelStepResult]:
    """The model's step by hand in NumPy (module docstring); any ``relu_grad_at_zero`` convention."""
    return numpy_model_steps(X, y, params, model, lr, reduction, steps)
