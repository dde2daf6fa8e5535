"""A fused linear + tanh layer as a ``torch.autograd.Function``, right and wrong, checked by the harness.

``FusedLinearTanh`` computes ``y = tanh(x W + b)``, saves ``y`` and in its backward uses
``tanh' = 1 - y^2``; ``WrongFusedLinearTanh`` has the classic slip ``1 - y``. Each is registered as
a model plug-in for the tanh multilayer perceptrons (``model = { hidden = [H], activation = "tanh" }``,
one or two hidden layers, each hidden layer the fused function, the output layer a plain
``h W + b``) through :func:`harness.models.torch_forward_step`: the harness trains the forward with
plain SGD and grades the loss, every gradient and every updated parameter against the exact
gradient of the declared model, in every dtype.

Run it (``.venv/bin/python examples/fused_linear_tanh.py``) for what ``torch.autograd.gradcheck``
says about the same two functions: it compares the backward with central finite differences of
the forward under fixed tolerances (``atol=1e-5``, ``rtol=1e-3``), which is meaningful in float64
only.
"""

from __future__ import annotations

from typing import Any

import torch

import harness
from harness.models import torch_forward_step


class FusedLinearTanh(torch.autograd.Function):
    """``y = tanh(x W + b)``: x (N, D), W (D, H), b (H,) or None; y (N, H). Backward: ``1 - y^2``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        z = x @ W if b is None else torch.addmm(b, x, W)
        y = torch.tanh(z)
        ctx.save_for_backward(x, W, y)
        ctx.has_bias = b is not None
        return y

    @staticmethod
    def tanh_grad(y: torch.Tensor) -> torch.Tensor:
        """``tanh'(z)`` from ``y = tanh(z)``."""
        return 1 - y * y

    @classmethod
    def backward(cls, ctx: Any, grad_y: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, W, y = ctx.saved_tensors
        grad_z = grad_y * cls.tanh_grad(y)
        grad_x = grad_z @ W.T if ctx.needs_input_grad[0] else None
        grad_W = x.T @ grad_z if ctx.needs_input_grad[1] else None
        grad_b = grad_z.sum(dim=0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_W, grad_b


class WrongFusedLinearTanh(FusedLinearTanh):
    """The same layer with the wrong derivative ``1 - y`` (should be ``1 - y^2``)."""

    @staticmethod
    def tanh_grad(y: torch.Tensor) -> torch.Tensor:
        return 1 - y


class Float32BackwardFusedLinearTanh(FusedLinearTanh):
    """The right formula, but the backward computed in float32 whatever the inputs' dtype (a
    precision downgrade: harmless in float32, wrong by ~1e-7 relative in a float64 step)."""

    @classmethod
    def backward(cls, ctx: Any, grad_y: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, W, y = ctx.saved_tensors
        dtype = grad_y.dtype
        x32, W32, y32 = x.float(), W.float(), y.float()
        grad_z = grad_y.float() * (1 - y32 * y32)
        grad_x = (grad_z @ W32.T).to(dtype) if ctx.needs_input_grad[0] else None
        grad_W = (x32.T @ grad_z).to(dtype) if ctx.needs_input_grad[1] else None
        grad_b = grad_z.sum(dim=0).to(dtype) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_W, grad_b


def mlp_forward(layer: type[torch.autograd.Function]) -> Any:
    """``forward(X, params)`` of a tanh multilayer perceptron whose hidden layers are ``layer``."""

    def forward(X: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        layers = sum(1 for name in params if name.startswith("W"))
        h = X
        for i in range(1, layers):
            h = layer.apply(h, params[f"W{i}"], params.get(f"b{i}"))
        out = h @ params[f"W{layers}"]
        return out + params[f"b{layers}"] if f"b{layers}" in params else out

    return forward


TANH_MLP = ({"kind": "mlp", "activation": "tanh"},)


@harness.implementation("fused-linear-tanh", framework="torch", models=TANH_MLP)
@torch_forward_step
def fused_linear_tanh(X: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """Hidden layers by FusedLinearTanh (backward 1 - y^2), output layer h W + b."""
    return mlp_forward(FusedLinearTanh)(X, params)


@harness.implementation("fused-linear-tanh-wrong", framework="torch", models=TANH_MLP)
@torch_forward_step
def fused_linear_tanh_wrong(X: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """Hidden layers by WrongFusedLinearTanh (backward 1 - y), output layer h W + b."""
    return mlp_forward(WrongFusedLinearTanh)(X, params)


@harness.implementation("fused-linear-tanh-float32-backward", framework="torch", models=TANH_MLP)
@torch_forward_step
def fused_linear_tanh_float32_backward(X: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """Hidden layers by Float32BackwardFusedLinearTanh (right formula, backward in float32), output layer h W + b."""
    return mlp_forward(Float32BackwardFusedLinearTanh)(X, params)


LAYERS = (FusedLinearTanh, WrongFusedLinearTanh, Float32BackwardFusedLinearTanh)


def gradcheck_report(layer: type[torch.autograd.Function], dtype: torch.dtype = torch.float64, seed: int = 0) -> str:
    """What ``torch.autograd.gradcheck`` says about ``layer`` on random inputs of ``dtype``: ``"passes"``
    or ``"fails: <first line of its message>"``. x (4, 3), W (3, 5), b (5,), standard normal."""
    gen = torch.Generator().manual_seed(seed)
    args = tuple(torch.randn(*shape, generator=gen, dtype=torch.float64).to(dtype).requires_grad_(True)
                 for shape in ((4, 3), (3, 5), (5,)))
    try:
        ok = torch.autograd.gradcheck(layer.apply, args, raise_exception=True)
    except Exception as exc:  # GradcheckError (a RuntimeError) with the Jacobians it compared
        return f"fails: {str(exc).strip().splitlines()[0]}"
    return "passes" if ok else "fails"


def main() -> None:
    import warnings

    for layer in LAYERS:
        for dtype in (torch.float64, torch.float32):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # gradcheck warns that float32 inputs are not double precision
                print(f"gradcheck {layer.__name__} {str(dtype).removeprefix('torch.')}: {gradcheck_report(layer, dtype)}")


if __name__ == "__main__":
    main()
