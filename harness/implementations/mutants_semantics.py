"""Deliberately wrong PyTorch steps: one per autograd-semantics mistake.

Registered with ``correct=False`` and ``kind="mutant"``: they never run by
default, only when named (``--implementations mutant-grad-accumulation``) or by
the selftest (:mod:`harness.selftest`). Each one's
``expected`` verdicts are what the harness must give to count it as caught;
:mod:`harness.semantics` and :mod:`harness.classify` give each its own message.
"""

from __future__ import annotations

import torch

from .registry import StepResult, implementation
from .torch_steps import leaf, snapshot, squared_error


@implementation("mutant-grad-accumulation", framework="torch", kind="mutant", correct=False, expected=("disagree",),
                description="the seed step without resetting .grad: gradients accumulate across steps")
def grad_accumulation(X: torch.Tensor, y: torch.Tensor, W: torch.Tensor, b: torch.Tensor, *, lr: float, reduction: str, steps: int) -> list[StepResult]:
    W = leaf(W)
    b = leaf(b)
    out = []
    for _ in range(steps):
        loss = squared_error(torch.matmul(X, W) + b, y, reduction)
        loss.backward()
        assert W.grad is not None and b.grad is not None
        gW, gb = W.grad.clone(), b.grad.clone()
        with torch.no_grad():
            W -= lr * W.grad
            b -= lr * b.grad
        out.append(snapshot(loss, W, b, gW, gb))
        # the bug: no W.grad = None / optimizer.zero_grad()
    return out


@implementation("mutant-double-backward", framework="torch", kind="mutant", correct=False, expected=("disagree",),
                description="backward() twice per step into the same .grad: twice the gradient")
def double_backward(X: torch.Tensor, y: torch.Tensor, W: torch.Tensor, b: torch.Tensor, *, lr: float, reduction: str, steps: int) -> list[StepResult]:
    W = leaf(W)
    b = leaf(b)
    out = []
    for _ in range(steps):
        loss = squared_error(torch.matmul(X, W) + b, y, reduction)
        loss.backward(retain_graph=True)
        loss.backward()  # the bug: a second pass adds into .grad
        assert W.grad is not None and b.grad is not None
        gW, gb = W.grad.clone(), b.grad.clone()
        with torch.no_grad():
            W -= lr * W.grad
            b -= lr * b.grad
        out.append(snapshot(loss, W, b, gW, gb))
        W.grad = None
        b.grad = None
    return out


@implementation("mutant-replaced-leaf", framework="torch", kind="mutant", correct=False, expected=("error",),
                description="W = W - lr * W.grad: the parameter is replaced by a non-leaf tensor, .grad is None next step")
def replaced_leaf(X: torch.Tensor, y: torch.Tensor, W: torch.Tensor, b: torch.Tensor, *, lr: float, reduction: str, steps: int) -> list[StepResult]:
    import warnings

    W = leaf(W)
    b = leaf(b)
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "The .grad attribute of a Tensor that is not a leaf Tensor is being accessed"
        for _ in range(steps):
            loss = squared_error(torch.matmul(X, W) + b, y, reduction)
            loss.backward()
            gW, gb = W.grad, b.grad
            W = W - lr * W.grad  # type: ignore[operator]  # the bug: a new, non-leaf tensor; .grad is None next step
            b = b - lr * b.grad  # type: ignore[operator]
            out.append(StepResult(loss.detach(), gW, gb, W.detach(), b.detach()))
    return out


@implementation("mutant-replaced-leaf-no-grad", framework="torch", kind="mutant", correct=False, expected=("error",),
                description="W = W - lr * W.grad under no_grad: the new W has requires_grad=False, backward fails next step")
def replaced_leaf_no_grad(X: torch.Tensor, y: torch.Tensor, W: torch.Tensor, b: torch.Tensor, *, lr: float, reduction: str, steps: int) -> list[StepResult]:
    W = leaf(W)
    b = leaf(b)
    out = []
    for _ in range(steps):
        loss = squared_error(torch.matmul(X, W) + b, y, reduction)
        loss.backward()
        assert W.grad is not None and b.grad is not None
        gW, gb = W.grad.clone(), b.grad.clone()
        with torch.no_grad():
            W = W - lr * W.grad  # the bug: a new tensor without requires_grad
            b = b - lr * b.grad
        out.append(snapshot(loss, W, b, gW, gb))
    return out


@implementation("mutant-inplace-grad-mode", framework="torch", kind="mutant", correct=False, expected=("error",),
                description="W -= lr * W.grad with grad mode on (no torch.no_grad()): PyTorch raises")
def inplace_grad_mode(X: torch.Tensor, y: torch.Tensor, W: torch.Tensor, b: torch.Tensor, *, lr: float, reduction: str, steps: int) -> list[StepResult]:
    W = leaf(W)
    b = leaf(b)
    out = []
    for _ in range(steps):
        loss = squared_error(torch.matmul(X, W) + b, y, reduction)
        loss.backward()
        assert W.grad is not None and b.grad is not None
        gW, gb = W.grad.clone(), b.grad.clone()
        W -= lr * W.grad  # the bug: in-place on a leaf that requires grad, outside no_grad
        b -= lr * b.grad
        out.append(snapshot(loss, W, b, gW, gb))
        W.grad = None
        b.grad = None
    return out


@implementation("mutant-skipped-update", framework="torch", kind="mutant", correct=False, expected=("disagree",),
                description="computes the gradient but never applies the update (W, b unchanged)")
def skipped_update(X: torch.Tensor, y: torch.Tensor, W: torch.Tensor, b: torch.Tensor, *, lr: float, reduction: str, steps: int) -> list[StepResult]:
    W = leaf(W)
    b = leaf(b)
    out = []
    for _ in range(steps):
        loss = squared_error(torch.matmul(X, W) + b, y, reduction)
        loss.backward()
        assert W.grad is not None and b.grad is not None
        out.append(snapshot(loss, W, b, W.grad, b.grad))  # the bug: no update
        W.grad = None
        b.grad = None
    return out
