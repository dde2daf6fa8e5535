"""Built-in PyTorch implementations of the training step.

``torch-seed`` is the seed notebook's step, line for line: forward with
``X @ W + b``, squared-error loss, ``loss.backward()``, the update of W and b
inside ``torch.no_grad()``, then ``.grad = None`` so gradients do not
accumulate. Parameters are made leaf tensors *on the inputs' device*
(``W.detach().clone().requires_grad_(True)``): a tensor created with
``requires_grad=True`` and then moved with ``.to(device)`` is not a leaf and
never receives ``.grad``.
"""

from __future__ import annotations

import torch

from .registry import StepResult, implementation


def _leaf(t: torch.Tensor) -> torch.Tensor:
    """A fresh leaf tensor with ``requires_grad`` on ``t``'s device and dtype."""
    return t.detach().clone().requires_grad_(True)


def squared_error(prediction: torch.Tensor, y: torch.Tensor, reduction: str) -> torch.Tensor:
    """``sum (prediction - y)^2`` or its mean over all N*K elements."""
    sq = (prediction - y) ** 2
    return sq.sum() if reduction == "sum" else sq.mean()


def _snapshot(loss: torch.Tensor, W: torch.Tensor, b: torch.Tensor, gW: torch.Tensor, gb: torch.Tensor) -> StepResult:
    return StepResult(loss.detach().clone(), gW.detach().clone(), gb.detach().clone(), W.detach().clone(), b.detach().clone())


@implementation("torch-seed", framework="torch", kind="builtin", description="the seed notebook's step: backward(), update under no_grad, .grad = None")
def torch_seed(X: torch.Tensor, y: torch.Tensor, W: torch.Tensor, b: torch.Tensor, *, lr: float, reduction: str, steps: int) -> list[StepResult]:
    W = _leaf(W)
    b = _leaf(b)
    out = []
    for _ in range(steps):
        prediction = torch.matmul(X, W) + b
        loss = squared_error(prediction, y, reduction)
        loss.backward()
        assert W.grad is not None and b.grad is not None
        gW, gb = W.grad.clone(), b.grad.clone()
        with torch.no_grad():
            W -= lr * W.grad
            b -= lr * b.grad
        out.append(_snapshot(loss, W, b, gW, gb))
        W.grad = None
        b.grad = None
    return out
