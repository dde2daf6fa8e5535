"""Built-in PyTorch model implementations: autograd of the model built from ``torch.nn`` modules and from functions.

- ``torch-model-nn``: ``torch.nn.Sequential`` of ``torch.nn.Linear`` layers (``weight`` copied
  from ``W.T``, ``bias`` from ``b``: ``nn.Linear`` holds the (out, in) transpose, so the gradient of
  ``W`` is ``weight.grad.T``) and activation modules (``nn.ReLU``, ``nn.LeakyReLU(negative_slope)``,
  ``nn.Tanh``, ``nn.Sigmoid``, ``nn.Softplus()`` (beta 1, threshold 20), ``nn.GELU()``
  (``approximate="none"``)); polynomial features ``torch.cat([X, X**2, ...], dim=1)``; loss
  ``nn.MSELoss(reduction=...)``; then the seed notebook's step: ``loss.backward()``, every parameter
  ``p -= lr * p.grad`` under ``torch.no_grad()``, ``p.grad = None``.
- ``torch-model-functional``: the same model from ``torch.nn.functional`` and ``X @ W1 + b1`` on
  leaf tensors, trained by :func:`harness.models.forward.sgd_steps` (the loop every forward-based
  implementation shares). It also runs the ``expression`` kind: the expression parsed by
  :func:`harness.models.symbolic.parse_expression` and evaluated node by node with torch operations, in the
  plan's order (:func:`expression_function`); the inputs ``x1 .. xD``
  are the columns of X, each parameter a 0-d leaf tensor. (``numpy-model`` does not run
  expressions: a hand backward of an arbitrary formula is the plan's reverse mode, not an
  independent implementation.)

Both implement PyTorch's convention at ReLU's kink (derivative 0 for ReLU, ``negative_slope`` for
leaky ReLU): they declare models whose ``relu_grad_at_zero`` is the default, so a case declaring
another convention does not run them (``unsupported``, naming the declared patterns).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 - the conventional name
from torch import nn

from ..implementations.registry import implementation
from .forward import sgd_steps
from .numpy_steps import weight_layers
from .spec import ModelSpec
from .step import ModelStepResult

#: The models PyTorch's own conventions implement: any linear, mlp (with torch's ReLU'(0)) or polynomial model.
TORCH_LAYER_MODELS: tuple[object, ...] = ({"kind": "linear"}, {"kind": "mlp", "relu_grad_at_zero": None}, {"kind": "polynomial"})


def activation_module(spec: ModelSpec) -> nn.Module:
    """The ``torch.nn`` module of the spec's activation.

    Raises:
        ValueError: for an unknown activation.
    """
    name = spec.activation
    if name == "relu":
        return nn.ReLU()
    if name == "leaky_relu":
        return nn.LeakyReLU(negative_slope=float(spec.negative_slope))
    if name == "tanh":
        return nn.Tanh()
    if name == "sigmoid":
        return nn.Sigmoid()
    if name == "softplus":
        return nn.Softplus()
    if name == "gelu":
        return nn.GELU()
    raise ValueError(f"activation: unknown {name!r}")


def activation_function(spec: ModelSpec) -> Callable[[torch.Tensor], torch.Tensor]:
    """The ``torch`` / ``torch.nn.functional`` function of the spec's activation.

    Raises:
        ValueError: for an unknown activation.
    """
    name = spec.activation
    slope = float(spec.negative_slope)
    table: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        "relu": F.relu, "leaky_relu": lambda z: F.leaky_relu(z, negative_slope=slope), "tanh": torch.tanh,
        "sigmoid": torch.sigmoid, "softplus": F.softplus, "gelu": F.gelu,
    }
    if name not in table:
        raise ValueError(f"activation: unknown {name!r}")
    return table[name]


def polynomial_features(X: torch.Tensor, degree: int) -> torch.Tensor:
    """``[X, X**2, ..., X**degree]`` concatenated power-major (column ``(p-1) D + j`` is ``x_j^p``)."""
    return torch.cat([X if p == 1 else X**p for p in range(1, degree + 1)], dim=1)


class _Features(nn.Module):
    """Polynomial features as a module (for ``nn.Sequential``)."""

    def __init__(self, degree: int) -> None:
        super().__init__()
        self.degree = degree

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return polynomial_features(X, self.degree)


def build_module(spec: ModelSpec, params: Mapping[str, torch.Tensor]) -> tuple[nn.Sequential, dict[str, nn.Linear]]:
    """The model as ``nn.Sequential`` with the parameters copied in (``weight = W.T``), and its
    ``nn.Linear`` layers by weight name.

    Raises:
        ValueError: for the ``expression`` kind (not a composition of ``torch.nn`` modules).
    """
    if spec.kind == "expression":
        raise ValueError("torch-model-nn implements the linear, mlp and polynomial kinds, not expression")
    layers = weight_layers(spec, params)
    mods: list[nn.Module] = []
    if spec.kind == "polynomial":
        mods.append(_Features(int(spec.polynomial or 1)))
    linears: dict[str, nn.Linear] = {}
    for i, (wn, bn) in enumerate(layers, start=1):
        W = params[wn]
        # skip_init: no random initialisation (it would draw from, and so change, torch's global generator)
        lin = torch.nn.utils.skip_init(nn.Linear, W.shape[0], W.shape[1], bias=bn is not None, device=W.device, dtype=W.dtype)
        with torch.no_grad():
            lin.weight.copy_(W.detach().T)
            if bn is not None:
                assert lin.bias is not None
                lin.bias.copy_(params[bn].detach())
        linears[wn] = lin
        mods.append(lin)
        if i < len(layers):
            mods.append(activation_module(spec))
    return nn.Sequential(*mods), linears


@implementation("torch-model-nn", framework="torch", kind="builtin", models=TORCH_LAYER_MODELS,
                description="torch.nn modules (nn.Linear with weight = W.T, nn.Tanh, ...), nn.MSELoss, backward(), "
                            "update under no_grad, .grad = None")
def torch_model_nn(X: torch.Tensor, y: torch.Tensor, params: Mapping[str, torch.Tensor], *, model: ModelSpec, lr: float,
                   reduction: str, steps: int) -> list[ModelStepResult]:
    """The model of ``torch.nn`` modules trained by the seed notebook's step (module docstring)."""
    net, linears = build_module(model, params)
    mse = nn.MSELoss(reduction=reduction)
    order = list(params)

    def tensors_of(name: str, grad: bool) -> torch.Tensor:
        if name in linears:
            w = linears[name].weight
            t = w.grad if grad else w
        else:
            bias = linears["W" + name[1:]].bias
            assert bias is not None
            t = bias.grad if grad else bias
        if t is None:
            raise ValueError(f"parameter {name} received no gradient")
        t = t.detach()
        return (t.T if name in linears else t).clone(memory_format=torch.contiguous_format)

    out = []
    for _ in range(steps):
        pred = net(X)
        if tuple(pred.shape) != tuple(y.shape):
            raise ValueError(f"the prediction has shape {tuple(pred.shape)}, the targets y {tuple(y.shape)}")
        loss = mse(pred, y)
        loss.backward()
        grads = {name: tensors_of(name, True) for name in order}
        with torch.no_grad():
            for p in net.parameters():
                assert p.grad is not None
                p -= lr * p.grad  # type: ignore[misc]  # in place (Tensor.__isub__), as the seed notebook writes it
        out.append(ModelStepResult(loss.detach().clone(), grads, {name: tensors_of(name, False) for name in order}))
        for p in net.parameters():
            p.grad = None
    return out


def expression_function(spec: ModelSpec, d: int) -> Callable[..., Any]:
    """The ``expression`` model as a torch function ``f(like, x1, ..., xD, p1, ..., pM)``: the text parsed
    by :func:`harness.models.symbolic.parse_expression` (the one safe parser, unevaluated: the operations as
    written, brackets included), then evaluated node by node with torch operations in the order the plan computes
    them (:func:`harness.models.symbolic.sum_chain`, :func:`harness.models.symbolic.product_chain`). Constants are
    exact rationals turned into Python floats and tensors of the dtype; ``like``: a tensor whose dtype and device
    they take (``sqrt(2)``, ``exp(0)``, ``2**3`` are tensors of the dtype, as the plan computes them).

    ``sympy.lambdify`` printed the parse as Python text until the twenty-third round, which is not the parse:
    ``x1 - a/0.5`` was printed ``-a/1/2 + x1`` (``x1 - a/2``), and ``x1 - a*(b*c)`` ``-a*b*c + x1`` (another order,
    which overflows float16 where the bracket does not; helper-90).

    Raises:
        ValueError: from the parser, naming what is not allowed.
    """
    import sympy as sp

    from .symbolic import function_name, parse_expression, power_form, product_chain, sum_chain

    parsed = parse_expression(str(spec.expression), tuple(spec.parameters), d)
    symbols = [*parsed.inputs, *parsed.parameters]
    torch_fns: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        name: getattr(torch, name) for name in ("sqrt", "exp", "log", "sin", "cos", "tanh", "erf", "abs")}

    def evaluate(like: torch.Tensor, *args: Any) -> Any:
        env = dict(zip(symbols, args, strict=True))

        def const(value: sp.Basic) -> torch.Tensor:
            return torch.tensor(float(value), dtype=like.dtype, device=like.device)

        def ev(e: sp.Basic) -> torch.Tensor:
            if e in env:
                return env[e]
            if e.is_Rational:
                return const(e)
            if isinstance(e, sp.Add):
                first, rest = sum_chain(e)
                acc = ev(first)
                for op, t in rest:
                    acc = acc + ev(t) if op == "add" else acc - ev(t)
                return acc
            if isinstance(e, sp.Mul):
                num, den = product_chain(e)
                acc = ev(num[0]) if num else const(1)
                for f in num[1:]:
                    acc = acc * ev(f)
                if den:
                    dd = ev(den[0])
                    for f in den[1:]:
                        dd = dd * ev(f)
                    acc = acc / dd
                return acc
            if isinstance(e, sp.Pow):
                form, operand, n = power_form(e)
                a = ev(operand)
                if form == "one":  # torch's pow(x, 0): 1, derivative 0 (the plan's constant 1)
                    return torch.pow(a, 0)
                if form == "reciprocal":
                    return const(1) / a
                if form == "sqrt":
                    return torch.sqrt(a)
                if form == "square":
                    return a * a
                return a if form == "base" else torch.pow(a, n)
            if isinstance(e, sp.Function):
                return torch_fns[function_name(e)](ev(e.args[0]))
            raise ValueError(f"expression node {e} ({type(e).__name__}) is not supported")  # pragma: no cover - the parser refuses it

        return ev(parsed.expr)

    return evaluate


def functional_forward(spec: ModelSpec, d: int) -> Callable[[torch.Tensor, Mapping[str, torch.Tensor]], torch.Tensor]:
    """The model's prediction from ``torch`` functions: ``forward(X, params) -> (N, K)``."""
    if spec.kind == "expression":
        fn = expression_function(spec, d)

        def forward_expression(X: torch.Tensor, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
            value = fn(X, *(X[:, j] for j in range(X.shape[1])), *(params[p] for p in spec.parameters))
            value = torch.as_tensor(value, dtype=X.dtype, device=X.device)
            return value.expand(X.shape[0]).reshape(X.shape[0], 1)

        return forward_expression
    act = activation_function(spec) if spec.kind == "mlp" else None

    def forward(X: torch.Tensor, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        h = polynomial_features(X, int(spec.polynomial or 1)) if spec.kind == "polynomial" else X
        layers = weight_layers(spec, params)
        for i, (wn, bn) in enumerate(layers, start=1):
            z = h @ params[wn]
            if bn is not None:
                z = z + params[bn]
            h = act(z) if (act is not None and i < len(layers)) else z
        return h

    return forward


@implementation("torch-model-functional", framework="torch", kind="builtin", models=(*TORCH_LAYER_MODELS, "expression"),
                description="torch.nn.functional and X @ W1 + b1 on leaf tensors (expressions node by node in torch), "
                            "F.mse_loss, backward(), update under no_grad, .grad = None")
def torch_model_functional(X: torch.Tensor, y: torch.Tensor, params: Mapping[str, torch.Tensor], *, model: ModelSpec,
                           lr: float, reduction: str, steps: int) -> list[ModelStepResult]:
    """The model from ``torch`` functions trained by :func:`harness.models.forward.sgd_steps` (module docstring)."""
    return sgd_steps(functional_forward(model, X.shape[1]), X, y, params, lr=lr, reduction=reduction, steps=steps)


__all__ = ["TORCH_LAYER_MODELS", "activation_function", "activation_module", "build_module", "expression_function",
           "functional_forward", "polynomial_features", "torch_model_functional", "torch_model_nn"]
