"""Selftest mutants of the model path: realistic bugs of a hand-written backward pass.

Each is ``numpy-model`` (:mod:`harness.models.numpy_steps`) with one bug, registered with
``correct=False`` and the verdicts that count as catching it (as :mod:`harness.implementations.mutants`):

- ``mutant-model-tanh-derivative``: ``tanh'(z)`` taken as ``1 - z`` instead of ``1 - tanh(z)^2``
  (models with tanh).
- ``mutant-model-missing-chain-factor``: the activation's derivative dropped when the error is
  propagated to the hidden layer (``delta_{l-1} = delta_l W_l^T``); every mlp.
- ``mutant-model-transposed-hidden-grad``: the first layer's weight gradient returned (and
  applied) transposed, ``delta_1^T h_0`` (H1, D) for ``h_0^T delta_1`` (D, H1). It needs a square
  ``W1`` (D == H1), which a model pattern cannot say (patterns see the model, not D): on another
  shape the step raises ``ValueError`` naming the shapes (an ``error`` record, not a catch).
- ``mutant-model-relu-grad-at-zero``: ReLU's derivative at exactly 0 taken as 1 (``z >= 0``) while
  declaring PyTorch's convention 0 (models with ReLU and the default ``relu_grad_at_zero``). The
  two conventions differ only where a pre-activation is exactly 0: it is caught on such cases
  (the ``kink`` regime) and agrees everywhere else -- a convention, not a bug, unless it differs
  from the declared one.
- ``mutant-model-softplus-threshold``: softplus' derivative taken as 1 from ``z > 10`` (a threshold copied too
  low: torch's softplus is ``z`` itself above 20, where ``sigmoid(z)`` is 1 in float32; from 10 to about 16.6
  it is not). Caught where a pre-activation lies in that band (the ``large`` regime since the twenty-third round;
  helper-89 found the band missed by every shipped case).
- ``mutant-model-gelu-derivative-phi-only``: GELU's derivative taken as ``Phi(z)``, the ``z phi(z)`` term dropped
  (``z Phi(z)`` differentiated as if ``Phi`` were a constant; models with gelu).
- ``mutant-model-float16-hidden-accumulation``: the hidden layer's matrix products (``X W1`` and
  the gradient ``X^T delta_1``) with float16 inputs, products and running sums, in a float32 or
  float64 step: a precision downgrade (``disagree`` or ``suspect``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ..implementations.registry import implementation
from .numpy_steps import Arr, activation_grad, erf_float64, matmul, numpy_model_steps
from .spec import ModelSpec
from .step import ModelStepResult

CAUGHT_BY_BOUND = ("disagree",)
PRECISION = ("disagree", "suspect")
_DTYPES = ("float64", "float32", "float16", "bfloat16")


def tanh_grad_one_minus_z(name: str, z: Arr, h: Arr, spec: ModelSpec) -> Arr:
    """The bug: ``tanh'(z) = 1 - z`` (the pre-activation, not ``1 - tanh(z)^2``)."""
    if name == "tanh":
        return z.dtype.type(1) - z
    return activation_grad(name, z, h, spec)


def no_chain_factor(name: str, z: Arr, h: Arr, spec: ModelSpec) -> Arr:
    """The bug: the activation's derivative left out of the backward pass (all ones)."""
    return np.ones_like(z)


def relu_grad_one_at_zero(name: str, z: Arr, h: Arr, spec: ModelSpec) -> Arr:
    """The bug: ReLU's derivative 1 at exactly 0 (``z >= 0``), whatever the declared convention."""
    if name == "relu":
        dt = z.dtype.type
        return np.where(z >= 0, dt(1), dt(0)).astype(z.dtype)
    return activation_grad(name, z, h, spec)


def softplus_grad_one_from_ten(name: str, z: Arr, h: Arr, spec: ModelSpec) -> Arr:
    """The bug: softplus' derivative 1 from ``z > 10`` on (``sigmoid(z)`` below it)."""
    if name == "softplus":
        return np.where(z > 10, z.dtype.type(1), activation_grad(name, z, h, spec)).astype(z.dtype)
    return activation_grad(name, z, h, spec)


def gelu_grad_phi_only(name: str, z: Arr, h: Arr, spec: ModelSpec) -> Arr:
    """The bug: ``gelu'(z)`` taken as ``Phi(z)`` (``z Phi(z)`` differentiated with ``Phi`` held constant: the
    ``z phi(z)`` term dropped)."""
    if name == "gelu":
        z64 = np.asarray(z, dtype=np.float64)
        return ((1.0 + erf_float64(z64 / math.sqrt(2.0))) / 2.0).astype(z.dtype)
    return activation_grad(name, z, h, spec)


def half_dot(a: Arr, b: Arr) -> Arr:
    """``a @ b`` with float16 inputs, products and running sums (a half-precision accumulator), returned in ``a``'s dtype."""
    a16 = a.astype(np.float16)
    b16 = b.astype(np.float16)
    acc = np.zeros((a.shape[0], b.shape[1]), dtype=np.float16)
    for i in range(a.shape[1]):
        acc = (acc + np.outer(a16[:, i], b16[i, :]).astype(np.float16)).astype(np.float16)
    return acc.astype(a.dtype)


def hidden_in_float16(a: Arr, b: Arr, layer: int, where: str) -> Arr:
    """The bug: layer 1's ``X W1`` and ``X^T delta_1`` through :func:`half_dot`; every other product as usual."""
    if layer == 1 and where in ("forward", "grad"):
        return half_dot(a, b)
    return matmul(a, b, layer, where)


def _derivative_mutant(name: str, models: tuple[Any, ...], description: str,
                       act_grad: Callable[[str, Arr, Arr, ModelSpec], Arr]) -> Callable[..., list[ModelStepResult]]:
    """Register ``numpy-model`` with the activation derivative ``act_grad`` as the mutant ``name``; the step."""
    def step(X: Arr, y: Arr, params: Mapping[str, Arr], *, model: ModelSpec, lr: float, reduction: str,
             steps: int) -> list[ModelStepResult]:
        return numpy_model_steps(X, y, params, model, lr, reduction, steps, act_grad=act_grad)

    step.__name__ = step.__qualname__ = name.removeprefix("mutant-model-").replace("-", "_")
    implementation(name, framework="numpy", correct=False, expected=CAUGHT_BY_BOUND, kind="mutant", dtypes=_DTYPES,
                   models=models, description=description)(step)
    return step


tanh_derivative = _derivative_mutant("mutant-model-tanh-derivative", ({"kind": "mlp", "activation": "tanh"},),
                                     "tanh'(z) = 1 - z instead of 1 - tanh(z)^2 in the backward pass", tanh_grad_one_minus_z)
missing_chain_factor = _derivative_mutant("mutant-model-missing-chain-factor", ("mlp",),
                                          "the activation derivative dropped when backpropagating to the hidden layer",
                                          no_chain_factor)


@implementation("mutant-model-transposed-hidden-grad", framework="numpy", correct=False, expected=CAUGHT_BY_BOUND, kind="mutant",
                dtypes=_DTYPES, models=("mlp",),
                description="the first layer's weight gradient returned and applied transposed (needs D == H1)")
def transposed_hidden_grad(X: Arr, y: Arr, params: Mapping[str, Arr], *, model: ModelSpec, lr: float, reduction: str,
                           steps: int) -> list[ModelStepResult]:
    """Raises ValueError unless ``W1`` is square (module docstring)."""
    shape = tuple(params["W1"].shape)
    if shape[0] != shape[1]:
        raise ValueError(f"mutant-model-transposed-hidden-grad needs a square W1 (D == H1), got W1 {shape}")

    def transposed(a: Arr, b: Arr, layer: int, where: str) -> Arr:
        out = matmul(a, b, layer, where)
        return np.ascontiguousarray(out.T) if (layer == 1 and where == "grad") else out

    return numpy_model_steps(X, y, params, model, lr, reduction, steps, mm=transposed)


relu_grad_at_zero = _derivative_mutant(
    "mutant-model-relu-grad-at-zero", ({"kind": "mlp", "activation": "relu", "relu_grad_at_zero": None},),
    "ReLU'(0) = 1 while declaring torch's convention 0 (caught only where a pre-activation is exactly 0)", relu_grad_one_at_zero)
softplus_threshold = _derivative_mutant(
    "mutant-model-softplus-threshold", ({"kind": "mlp", "activation": "softplus"},),
    "softplus'(z) taken as 1 from z > 10 (torch's threshold is 20) in the backward pass", softplus_grad_one_from_ten)


gelu_derivative = _derivative_mutant("mutant-model-gelu-derivative-phi-only", ({"kind": "mlp", "activation": "gelu"},),
                                     "gelu'(z) taken as Phi(z): the z phi(z) term dropped in the backward pass", gelu_grad_phi_only)


@implementation("mutant-model-float16-hidden-accumulation", framework="numpy", correct=False, expected=PRECISION, kind="mutant",
                dtypes=("float64", "float32"), models=("mlp",),
                description="the hidden layer's matrix products in float16 (inputs, products, sums) in a float32/float64 step")
def float16_hidden_accumulation(X: Arr, y: Arr, params: Mapping[str, Arr], *, model: ModelSpec, lr: float, reduction: str,
                                steps: int) -> list[ModelStepResult]:
    return numpy_model_steps(X, y, params, model, lr, reduction, steps, mm=hidden_in_float16)


__all__ = ["half_dot", "hidden_in_float16", "no_chain_factor", "relu_grad_one_at_zero", "tanh_grad_one_minus_z"]
