"""A catalogue of realistic buggy training steps (mutants) for ``selftest``.

Each mutant is a bug seen in real training code. They are registered with
``correct=False`` (never run by default) and ``expected`` = the verdicts that
count as catching them: ``disagree`` for wrong formulas, ``disagree`` or
``suspect`` for precision downgrades (the error model calls those suspect
when they stay within the rigorous bound), ``error`` for autograd misuse that
PyTorch itself refuses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ..floats import TF32, round_to_format
from .registry import StepResult, implementation
from .torch_steps import leaf, snapshot, squared_error, torch_seed

CAUGHT_BY_BOUND = ("disagree",)
PRECISION = ("disagree", "suspect")


def _scale(dtype: Any, n: int, k: int, reduction: str) -> Any:
    return dtype.type(1.0 if reduction == "sum" else 1.0 / (n * k))


def _numpy_loop(X: Any, y: Any, W: Any, b: Any, *, lr: float, reduction: str, steps: int, grads: Any, update: Any = None) -> list[StepResult]:
    """Shared loop: ``grads(R, c)`` returns (loss, gW, gb); ``update`` may replace W - lr g."""
    n, k = y.shape
    c = _scale(X.dtype, n, k, reduction)
    out = []
    for _ in range(steps):
        R = X @ W + b - y
        loss, gW, gb = grads(X, R, c)
        if update is None:
            W, b = W - lr * gW, b - lr * gb
        else:
            W, b = update(W, b, gW, gb)
        out.append(StepResult(loss, gW, gb, W, b))
    return out


def _correct_grads(X: Any, R: Any, c: Any) -> tuple[Any, Any, Any]:
    two = X.dtype.type(2)
    return c * np.sum(R * R), (two * c) * (X.T @ R), (two * c) * R.sum(axis=0)


@implementation("mutant-missing-factor-2", framework="numpy", correct=False, expected=CAUGHT_BY_BOUND, kind="mutant", dtypes=("float64", "float32", "float16"),
                description="gradient without the factor 2 of d(r^2)/dr")
def missing_factor_2(X: Any, y: Any, W: Any, b: Any, *, lr: float, reduction: str, steps: int) -> list[StepResult]:
    return _numpy_loop(X, y, W, b, lr=lr, reduction=reduction, steps=steps,
                       grads=lambda X, R, c: (c * np.sum(R * R), c * (X.T @ R), c * R.sum(axis=0)))


@implementation("mutant-mean-for-sum", framework="numpy", correct=False, expected=CAUGHT_BY_BOUND, kind="mutant", dtypes=("float64", "float32", "float16"),
                description="divides by N*K although the reduction is sum (and sum where mean is meant)")
def mean_for_sum(X: Any, y: Any, W: Any, b: Any, *, lr: float, reduction: str, steps: int) -> list[StepResult]:
    return _numpy_loop(X, y, W, b, lr=lr, reduction="mean" if reduction == "sum" else "sum", steps=steps, grads=_correct_grads)


@implementation("mutant-mean-over-rows-only", framework="numpy", correct=False, expected=CAUGHT_BY_BOUND, kind="mutant", dtypes=("float64", "float32", "float16"),
                description="mean divides by N (rows) instead of N*K elements")
def mean_over_rows(X: Any, y: Any, W: Any, b: Any, *, lr: float, reduction: str, steps: int) -> list[StepResult]:
    n = y.shape[0]
    cN = X.dtype.type(1.0 / n)
    two = X.dtype.type(2)

    def grads(X: Any, R: Any, c: Any) -> tuple[Any, Any, Any]:
        cc = c if reduction == "sum" else cN
        return cc * np.sum(R * R), (two * cc) * (X.T @ R), (two * cc) * R.sum(axis=0)

    return _numpy_loop(X, y, W, b, lr=lr, reduction=reduction, steps=steps, grads=grads)


@implementation("mutant-sign-flip", framework="numpy", correct=False, expected=CAUGHT_BY_BOUND, kind="mutant", dtypes=("float64", "float32", "float16"),
                description="residual taken as y - prediction in the gradient: gradient ascent")
def sign_flip(X: Any, y: Any, W: Any, b: Any, *, lr: float, reduction: str, steps: int) -> list[StepResult]:
    def grads(X: Any, R: Any, c: Any) -> tuple[Any, Any, Any]:
        loss, gW, gb = _correct_grads(X, R, c)
        return loss, -gW, -gb

    return _numpy_loop(X, y, W, b, lr=lr, reduction=reduction, steps=steps, grads=grads)


@implementation("mutant-bias-grad-not-summed", framework="numpy", correct=False, expected=CAUGHT_BY_BOUND, kind="mutant", dtypes=("float64", "float32", "float16"),
                description="bias gradient averaged over the batch instead of summed")
def bias_not_summed(X: Any, y: Any, W: Any, b: Any, *, lr: float, reduction: str, steps: int) -> list[StepResult]:
    def grads(X: Any, R: Any, c: Any) -> tuple[Any, Any, Any]:
        loss, gW, _ = _correct_grads(X, R, c)
        return loss, gW, (X.dtype.type(2) * c) * R.mean(axis=0)

    return _numpy_loop(X, y, W, b, lr=lr, reduction=reduction, steps=steps, grads=grads)


@implementation("mutant-lr-applied-twice", framework="numpy", correct=False, expected=CAUGHT_BY_BOUND, kind="mutant", dtypes=("float64", "float32", "float16"),
                description="the update is applied twice per step")
def lr_twice(X: Any, y: Any, W: Any, b: Any, *, lr: float, reduction: str, steps: int) -> list[StepResult]:
    def update(W: Any, b: Any, gW: Any, gb: Any) -> tuple[Any, Any]:
        W, b = W - lr * gW, b - lr * gb
        return W - lr * gW, b - lr * gb

    return _numpy_loop(X, y, W, b, lr=lr, reduction=reduction, steps=steps, grads=_correct_grads, update=update)


@implementation("mutant-bias-not-updated", framework="numpy", correct=False, expected=CAUGHT_BY_BOUND, kind="mutant", dtypes=("float64", "float32", "float16"),
                description="b is left out of the update")
def bias_not_updated(X: Any, y: Any, W: Any, b: Any, *, lr: float, reduction: str, steps: int) -> list[StepResult]:
    return _numpy_loop(X, y, W, b, lr=lr, reduction=reduction, steps=steps, grads=_correct_grads,
                       update=lambda W, b, gW, gb: (W - lr * gW, b))


@implementation("mutant-float16-accumulation", framework="numpy", correct=False, expected=PRECISION, kind="mutant", dtypes=("float64", "float32"),
                description="float16 accumulation inside a float32/float64 computation")
def float16_accumulation(X: Any, y: Any, W: Any, b: Any, *, lr: float, reduction: str, steps: int) -> list[StepResult]:
    dt = X.dtype

    def half_dot(A: Any, B: Any) -> Any:
        # products and running sums rounded to float16, as a half-precision accumulator does
        acc = np.zeros((A.shape[0], B.shape[1]), dtype=np.float16)
        for i in range(A.shape[1]):
            acc = (acc + np.outer(A[:, i], B[i, :]).astype(np.float16)).astype(np.float16)
        return acc.astype(dt)

    n, k = y.shape
    c = _scale(dt, n, k, reduction)
    out = []
    for _ in range(steps):
        R = half_dot(X, W) + b - y
        loss = c * np.sum(R * R)
        gW = (dt.type(2) * c) * half_dot(X.T, R)
        gb = (dt.type(2) * c) * R.sum(axis=0)
        W, b = W - lr * gW, b - lr * gb
        out.append(StepResult(loss, gW, gb, W, b))
    return out


@implementation("mutant-tf32-inputs", framework="numpy", correct=False, expected=PRECISION, kind="mutant", dtypes=("float32",),
                description="matmul inputs rounded to 10 mantissa bits (as TF32 does) in a float32 step")
def tf32_inputs(X: Any, y: Any, W: Any, b: Any, *, lr: float, reduction: str, steps: int) -> list[StepResult]:
    def t(a: Any) -> Any:
        return round_to_format(a.astype(np.float64), TF32).astype(np.float32)

    n, k = y.shape
    c = _scale(X.dtype, n, k, reduction)
    two = np.float32(2)
    out = []
    for _ in range(steps):
        R = t(X) @ t(W) + b - y
        loss = c * np.sum(R * R)
        gW = (two * c) * (t(X).T @ t(R))
        gb = (two * c) * R.sum(axis=0)
        W, b = W - lr * gW, b - lr * gb
        out.append(StepResult(loss, gW, gb, W, b))
    return out


# ------------------------------------------------------------------ torch mutants


def _seed_step_with(loss_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], W: torch.Tensor, b: torch.Tensor,
                    *, lr: float, steps: int) -> list[StepResult]:
    """The seed notebook's step (backward, update under no_grad, .grad = None) with
    the loss replaced by ``loss_of(W, b)``: mutants whose bug is in the forward pass."""
    W, b = leaf(W), leaf(b)
    out = []
    for _ in range(steps):
        loss = loss_of(W, b)
        loss.backward()
        assert W.grad is not None and b.grad is not None
        gW, gb = W.grad.clone(), b.grad.clone()
        with torch.no_grad():
            W -= lr * W.grad
            b -= lr * b.grad
        out.append(snapshot(loss, W, b, gW, gb))
        W.grad = None
        b.grad = None
    return out


@implementation("mutant-target-broadcast", framework="torch", correct=False, expected=CAUGHT_BY_BOUND, kind="mutant",
                description="y flattened to (N,): prediction (N, 1) - y broadcasts to (N, N)")
def target_broadcast(X: torch.Tensor, y: torch.Tensor, W: torch.Tensor, b: torch.Tensor, *, lr: float, reduction: str, steps: int) -> list[StepResult]:
    target = y.reshape(-1) if y.shape[1] == 1 else y
    return _seed_step_with(lambda W, b: squared_error(X @ W + b, target, reduction), W, b, lr=lr, steps=steps)


@implementation("mutant-drop-last-row", framework="torch", correct=False, expected=CAUGHT_BY_BOUND, kind="mutant",
                description="an off-by-one batch slice X[:-1], y[:-1]: the last row never seen (mean over the rows kept)")
def drop_last_row(X: torch.Tensor, y: torch.Tensor, W: torch.Tensor, b: torch.Tensor, *, lr: float, reduction: str, steps: int) -> list[StepResult]:
    return _seed_step_with(lambda W, b: squared_error(X[:-1] @ W + b, y[:-1], reduction), W, b, lr=lr, steps=steps)


@implementation("mutant-stale-gradient", framework="torch", correct=False, expected=CAUGHT_BY_BOUND, kind="mutant",
                description="the update uses the previous step's gradient")
def stale_gradient(X: torch.Tensor, y: torch.Tensor, W: torch.Tensor, b: torch.Tensor, *, lr: float, reduction: str, steps: int) -> list[StepResult]:
    W, b = leaf(W), leaf(b)
    prev: tuple[torch.Tensor, torch.Tensor] | None = None
    out = []
    for _ in range(steps):
        loss = squared_error(X @ W + b, y, reduction)
        loss.backward()
        assert W.grad is not None and b.grad is not None
        gW, gb = W.grad.clone(), b.grad.clone()
        uW, ub = prev if prev is not None else (gW, gb)
        with torch.no_grad():
            W -= lr * uW
            b -= lr * ub
        prev = (gW, gb)
        out.append(snapshot(loss, W, b, gW, gb))
        W.grad = None
        b.grad = None
    return out


@implementation("mutant-loss-half-precision", framework="torch", correct=False, expected=PRECISION, kind="mutant", dtypes=("float64", "float32"),
                description="forward pass autocast to bfloat16 inside a float32/float64 step")
def loss_half_precision(X: torch.Tensor, y: torch.Tensor, W: torch.Tensor, b: torch.Tensor, *, lr: float, reduction: str, steps: int) -> list[StepResult]:
    def loss_of(W: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        pred = (X.to(torch.bfloat16) @ W.to(torch.bfloat16)).to(X.dtype) + b
        return squared_error(pred, y, reduction)

    return _seed_step_with(loss_of, W, b, lr=lr, steps=steps)


# ------------------------------------------------------------------ mutants named by harness.diagnose


def _sgd_with(X: torch.Tensor, y: torch.Tensor, W: torch.Tensor, b: torch.Tensor, *, lr: float, reduction: str, steps: int,
              momentum: float = 0.0, weight_decay: float = 0.0) -> list[StepResult]:
    """``torch.optim.SGD([W, b], lr, momentum, weight_decay=...)`` with ``zero_grad()`` each step."""
    W, b = leaf(W), leaf(b)
    opt = torch.optim.SGD([W, b], lr=lr, momentum=momentum, weight_decay=weight_decay)
    out = []
    for _ in range(steps):
        opt.zero_grad()
        loss = squared_error(X @ W + b, y, reduction)
        loss.backward()
        assert W.grad is not None and b.grad is not None
        gW, gb = W.grad.clone(), b.grad.clone()
        opt.step()
        out.append(snapshot(loss, W, b, gW, gb))
    return out


@implementation("mutant-momentum", framework="torch", correct=False, expected=CAUGHT_BY_BOUND, kind="mutant",
                description="torch.optim.SGD with momentum=0.9 where plain SGD is meant")
def sgd_momentum(X: torch.Tensor, y: torch.Tensor, W: torch.Tensor, b: torch.Tensor, *, lr: float, reduction: str, steps: int) -> list[StepResult]:
    return _sgd_with(X, y, W, b, lr=lr, reduction=reduction, steps=steps, momentum=0.9)


@implementation("mutant-weight-decay", framework="torch", correct=False, expected=CAUGHT_BY_BOUND, kind="mutant",
                description="torch.optim.SGD with weight_decay=1e-3 (an L2 penalty) where plain SGD is meant")
def sgd_weight_decay(X: torch.Tensor, y: torch.Tensor, W: torch.Tensor, b: torch.Tensor, *, lr: float, reduction: str, steps: int) -> list[StepResult]:
    return _sgd_with(X, y, W, b, lr=lr, reduction=reduction, steps=steps, weight_decay=1e-3)


@implementation("mutant-lr-float32", framework="numpy", correct=False, expected=CAUGHT_BY_BOUND, kind="mutant", dtypes=("float64",),
                description="the learning rate held as np.float32(lr) in a float64 step")
def lr_float32(X: Any, y: Any, W: Any, b: Any, *, lr: float, reduction: str, steps: int) -> list[StepResult]:
    lr32 = float(np.float32(lr))
    return _numpy_loop(X, y, W, b, lr=lr, reduction=reduction, steps=steps, grads=_correct_grads,
                       update=lambda W, b, gW, gb: (W - lr32 * gW, b - lr32 * gb))


@implementation("mutant-reported-before-update", framework="torch", correct=False, expected=CAUGHT_BY_BOUND, kind="mutant",
                description="W and b copied into the result before optimizer.step()")
def reported_before_update(X: torch.Tensor, y: torch.Tensor, W: torch.Tensor, b: torch.Tensor, *, lr: float, reduction: str, steps: int) -> list[StepResult]:
    W, b = leaf(W), leaf(b)
    opt = torch.optim.SGD([W, b], lr=lr)
    out = []
    for _ in range(steps):
        opt.zero_grad()
        loss = squared_error(X @ W + b, y, reduction)
        loss.backward()
        assert W.grad is not None and b.grad is not None
        out.append(snapshot(loss, W, b, W.grad, b.grad))  # the bug: the snapshot is taken before the update
        opt.step()
    return out


@implementation("mutant-loss-after-update", framework="torch", correct=False, expected=CAUGHT_BY_BOUND, kind="mutant",
                description="the loss logged is recomputed after optimizer.step(): the next step's loss")
def loss_after_update(X: torch.Tensor, y: torch.Tensor, W: torch.Tensor, b: torch.Tensor, *, lr: float, reduction: str, steps: int) -> list[StepResult]:
    W, b = leaf(W), leaf(b)
    opt = torch.optim.SGD([W, b], lr=lr)
    out = []
    for _ in range(steps):
        opt.zero_grad()
        loss = squared_error(X @ W + b, y, reduction)
        loss.backward()
        assert W.grad is not None and b.grad is not None
        gW, gb = W.grad.clone(), b.grad.clone()
        opt.step()
        with torch.no_grad():
            loss = squared_error(X @ W + b, y, reduction)  # the bug: evaluated at the updated parameters
        out.append(snapshot(loss, W, b, gW, gb))
    return out


@implementation("mutant-bias-grad-after-W-update", framework="numpy", correct=False, expected=CAUGHT_BY_BOUND, kind="mutant",
                dtypes=("float64", "float32", "float16"),
                description="W updated first, then the residual recomputed for b's gradient (an update order bug)")
def bias_grad_after_w_update(X: Any, y: Any, W: Any, b: Any, *, lr: float, reduction: str, steps: int) -> list[StepResult]:
    n, k = y.shape
    c = _scale(X.dtype, n, k, reduction)
    two = X.dtype.type(2)
    out = []
    for _ in range(steps):
        R = X @ W + b - y
        loss, gW = c * np.sum(R * R), (two * c) * (X.T @ R)
        W = W - lr * gW
        gb = (two * c) * (X @ W + b - y).sum(axis=0)  # the bug: the residual of the updated W
        b = b - lr * gb
        out.append(StepResult(loss, gW, gb, W, b))
    return out


@implementation("mutant-weight-reshaped", framework="torch", correct=False, expected=CAUGHT_BY_BOUND, kind="mutant",
                description="an nn.Linear-style (K, D) weight returned with .reshape(D, K) instead of .T")
def weight_reshaped(X: torch.Tensor, y: torch.Tensor, W: torch.Tensor, b: torch.Tensor, *, lr: float, reduction: str, steps: int) -> list[StepResult]:
    d, k = W.shape
    weight, bias = leaf(W.T), leaf(b)  # (K, D), as nn.Linear stores it
    out = []
    for _ in range(steps):
        loss = squared_error(X @ weight.T + bias, y, reduction)
        loss.backward()
        assert weight.grad is not None and bias.grad is not None
        gW, gb = weight.grad.clone(), bias.grad.clone()
        with torch.no_grad():
            weight -= lr * weight.grad
            bias -= lr * bias.grad
        out.append(snapshot(loss, weight.reshape(d, k), bias, gW.reshape(d, k), gb))  # the bug: reshape, not .T
        weight.grad = None
        bias.grad = None
    return out


@implementation("mutant-float32-internally", framework="numpy", correct=False, expected=PRECISION, kind="mutant", dtypes=("float64",),
                description="a float64 step that computes in float32 and casts the results back")
def float32_internally(X: Any, y: Any, W: Any, b: Any, *, lr: float, reduction: str, steps: int) -> list[StepResult]:
    f32 = np.float32
    res = _numpy_loop(X.astype(f32), y.astype(f32), W.astype(f32), b.astype(f32), lr=lr, reduction=reduction, steps=steps,
                      grads=_correct_grads)
    return [StepResult(*(np.asarray(v, dtype=np.float64) for v in (r.loss, r.grad_W, r.grad_b, r.W, r.b))) for r in res]


@implementation("mutant-flush-denormal", framework="torch", correct=False, expected=CAUGHT_BY_BOUND, kind="mutant",
                dtypes=("float64", "float32"),
                description="torch.set_flush_denormal(True) called for speed and never turned off: subnormals flushed")
def flush_denormal(X: torch.Tensor, y: torch.Tensor, W: torch.Tensor, b: torch.Tensor, *, lr: float, reduction: str, steps: int) -> list[StepResult]:
    torch.set_flush_denormal(True)  # the bug: FTZ/DAZ on in this thread from here on (the harness restores IEEE 754's default)
    return torch_seed(X, y, W, b, lr=lr, reduction=reduction, steps=steps)
