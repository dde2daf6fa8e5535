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

import functools
from typing import Any

import torch

from ..optim.torch_steps import optim_steps
from .registry import KnownBug, StepResult, implementation


def leaf(t: torch.Tensor) -> torch.Tensor:
    """A fresh leaf tensor with ``requires_grad`` on ``t``'s device and dtype."""
    return t.detach().clone().requires_grad_(True)


def squared_error(prediction: torch.Tensor, y: torch.Tensor, reduction: str) -> torch.Tensor:
    """``sum (prediction - y)^2`` or its mean over all N*K elements."""
    sq = (prediction - y) ** 2
    return sq.sum() if reduction == "sum" else sq.mean()


def snapshot(loss: torch.Tensor, W: torch.Tensor, b: torch.Tensor, gW: torch.Tensor, gb: torch.Tensor) -> StepResult:
    """One step's :class:`StepResult` of detached copies (later in-place updates cannot change it)."""
    return StepResult(loss.detach().clone(), gW.detach().clone(), gb.detach().clone(), W.detach().clone(), b.detach().clone())


@implementation("torch-seed", framework="torch", kind="builtin", description="the seed notebook's step: backward(), update under no_grad, .grad = None")
def torch_seed(X: torch.Tensor, y: torch.Tensor, W: torch.Tensor, b: torch.Tensor, *, lr: float, reduction: str, steps: int) -> list[StepResult]:
    W = leaf(W)
    b = leaf(b)
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
        out.append(snapshot(loss, W, b, gW, gb))
        W.grad = None
        b.grad = None
    return out


@implementation("torch-add_", framework="torch", kind="builtin",
                description="the seed step with the update written W.add_(W.grad, alpha=-lr) under no_grad")
def torch_add_(X: torch.Tensor, y: torch.Tensor, W: torch.Tensor, b: torch.Tensor, *, lr: float, reduction: str, steps: int) -> list[StepResult]:
    """As ``torch-seed``, but the update is one fused ``add_`` with ``alpha=-lr``:
    ``W + alpha * grad`` is computed in the op's math type (float32 for float16 and
    bfloat16 on the CPU) and rounded once, where ``W -= lr * W.grad`` rounds twice."""
    W = leaf(W)
    b = leaf(b)
    out = []
    for _ in range(steps):
        loss = squared_error(torch.matmul(X, W) + b, y, reduction)
        loss.backward()
        assert W.grad is not None and b.grad is not None
        gW, gb = W.grad.clone(), b.grad.clone()
        with torch.no_grad():
            W.add_(W.grad, alpha=-lr)
            b.add_(b.grad, alpha=-lr)
        out.append(snapshot(loss, W, b, gW, gb))
        W.grad = None
        b.grad = None
    return out


def _optim_sgd(X: torch.Tensor, y: torch.Tensor, W: torch.Tensor, b: torch.Tensor, lr: float, reduction: str, steps: int,
               optimizer: Any = None, **flags: bool) -> list[Any]:
    """``torch.optim.SGD([W, b], lr, **flags)`` with ``zero_grad()`` before each backward.

    ``flags`` selects the implementation: ``foreach=False`` (for-loop over the
    parameters), ``foreach=True`` (``torch._foreach_add_`` over the list),
    ``fused=True`` (one fused kernel). Raises RuntimeError (from PyTorch) where
    fused SGD lacks the device; the harness records that as ``unsupported``.
    ``optimizer``: a case's :class:`harness.optim.OptimizerConfig` (momentum, dampening,
    Nesterov, weight decay, maximize), run by :func:`harness.optim.torch_steps.optim_steps`.
    """
    if optimizer is not None:
        return optim_steps(torch.optim.SGD, X, y, W, b, lr, reduction, steps, optimizer, **flags)
    W = leaf(W)
    b = leaf(b)
    opt = torch.optim.SGD([W, b], lr=lr, **flags)
    out = []
    for _ in range(steps):
        opt.zero_grad()
        loss = squared_error(torch.matmul(X, W) + b, y, reduction)
        loss.backward()
        assert W.grad is not None and b.grad is not None
        gW, gb = W.grad.clone(), b.grad.clone()
        opt.step()
        out.append(snapshot(loss, W, b, gW, gb))
    return out


@implementation("torch-optim-sgd", framework="torch", kind="builtin", optimizers=("plain", "sgd"),
                description="torch.optim.SGD, for-loop implementation (foreach=False), zero_grad() each step")
def torch_optim_sgd(X: torch.Tensor, y: torch.Tensor, W: torch.Tensor, b: torch.Tensor, *, lr: float, reduction: str, steps: int,
                    optimizer: Any = None) -> list[Any]:
    return _optim_sgd(X, y, W, b, lr, reduction, steps, optimizer, foreach=False)


@implementation("torch-optim-sgd-foreach", framework="torch", kind="builtin", optimizers=("plain", "sgd"),
                description="torch.optim.SGD, foreach implementation (foreach=True), zero_grad() each step")
def torch_optim_sgd_foreach(X: torch.Tensor, y: torch.Tensor, W: torch.Tensor, b: torch.Tensor, *, lr: float, reduction: str, steps: int,
                    optimizer: Any = None) -> list[Any]:
    return _optim_sgd(X, y, W, b, lr, reduction, steps, optimizer, foreach=True)


@functools.cache
def fused_sgd_skips_lowp_updates(dtype: str) -> bool:
    """Probe for pytorch/pytorch#191763 on this machine: fused SGD on the CPU leaves
    the full SIMD blocks of a float16/bfloat16 parameter unchanged (torch 2.12,
    2.13). One fused step with lr 0.5 on 64 ones, gradient ones: True when some
    element is still 1."""
    p = torch.ones(64, dtype=getattr(torch, dtype), requires_grad=True)
    p.grad = torch.ones_like(p)
    torch.optim.SGD([p], lr=0.5, fused=True).step()
    return bool((p.detach() == 1).any())


@functools.cache
def fused_sgd_skipped_block(dtype: str) -> int | None:
    """The block of pytorch/pytorch#191763 on this machine: the fewest elements (up to 64) of which fused SGD leaves
    some unchanged (a SIMD vector of ``dtype``: 16 on an AVX2 CPU), or None where it leaves none."""
    for n in range(1, 65):
        p = torch.ones(n, dtype=getattr(torch, dtype), requires_grad=True)
        p.grad = torch.ones_like(p)
        torch.optim.SGD([p], lr=0.5, fused=True).step()
        if bool((p.detach() == 1).any()):
            return n
    return None


def fused_sgd_known_bug(device: str, dtype: str) -> KnownBug | None:
    """The known bug behind a failing ``torch-optim-sgd-fused`` record, if this machine has it: it explains the
    update only (W, b and the momentum buffers; never the loss or the gradients), in whole SIMD blocks only
    (:func:`fused_sgd_skipped_block`), and a W, b or buffer record only where the parameter kept its value from
    before the step at every failing element (skipped, not wrong; with lr = 0 a skip changes nothing, and the
    skipped buffer is the only sign of it) (helper-60's plug-in that reused this probe and halved its loss had every
    failure excused; helper-61's that never updated a 3-element W, or kept zero buffers, had theirs too)."""
    if device.split(":")[0] == "cpu" and dtype in ("float16", "bfloat16") and fused_sgd_skips_lowp_updates(dtype):
        return KnownBug("fused SGD on the CPU skips the update of every full SIMD block of a float16/bfloat16 parameter "
                        "(pytorch/pytorch#191763, confirmed on this machine by a probe)",
                        quantities=("W", "b", "momentum_buffer_W", "momentum_buffer_b"), skips_update=True,
                        block=fused_sgd_skipped_block(dtype))
    return None


@implementation("torch-optim-sgd-fused", framework="torch", kind="builtin", known_bug=fused_sgd_known_bug, optimizers=("plain", "sgd"),
                description="torch.optim.SGD, fused implementation (fused=True), zero_grad() each step")
def torch_optim_sgd_fused(X: torch.Tensor, y: torch.Tensor, W: torch.Tensor, b: torch.Tensor, *, lr: float, reduction: str, steps: int,
                    optimizer: Any = None) -> list[Any]:
    """Fused SGD. In torch 2.13 it exists for every floating dtype on cpu, cuda,
    mps and xpu (``torch.utils._foreach_utils._get_fused_kernels_supported_devices``);
    elsewhere PyTorch raises and the record's verdict is ``unsupported``."""
    return _optim_sgd(X, y, W, b, lr, reduction, steps, optimizer, fused=True)


@implementation("torch-func", framework="torch", kind="builtin",
                description="functional step: torch.func.grad_and_value of the loss, W' = W - lr * grad (no .grad, no in-place)")
def torch_func(X: torch.Tensor, y: torch.Tensor, W: torch.Tensor, b: torch.Tensor, *, lr: float, reduction: str, steps: int) -> list[StepResult]:
    from torch.func import grad_and_value

    def loss_fn(W: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return squared_error(torch.matmul(X, W) + b, y, reduction)

    step = grad_and_value(loss_fn, argnums=(0, 1))
    out = []
    for _ in range(steps):
        (gW, gb), loss = step(W, b)
        W = W - lr * gW
        b = b - lr * gb
        out.append(snapshot(loss, W, b, gW, gb))
    return out


def _seed_step(X: torch.Tensor, y: torch.Tensor, W: torch.Tensor, b: torch.Tensor, lr: float, reduction: str) -> torch.Tensor:
    """One step of the seed notebook, as a function for ``torch.compile``: returns the
    loss; W and b are updated in place and keep their ``.grad``."""
    loss = squared_error(torch.matmul(X, W) + b, y, reduction)
    loss.backward()
    assert W.grad is not None and b.grad is not None
    with torch.no_grad():
        W -= lr * W.grad
        b -= lr * b.grad
    return loss


@implementation("torch-compile", framework="torch", kind="builtin", default=False,
                description="the seed step under torch.compile (opt-in: compiling takes seconds per case and dtype)")
def torch_compile(X: torch.Tensor, y: torch.Tensor, W: torch.Tensor, b: torch.Tensor, *, lr: float, reduction: str, steps: int) -> list[StepResult]:
    """The seed step compiled with ``torch.compile`` (default Inductor backend).

    Dynamo's caches are reset on every call, so each case and dtype is compiled
    afresh: past ``torch._dynamo.config.recompile_limit`` recompilations Dynamo
    would otherwise fall back to eager silently and the check would not test the
    compiled code. ``backward()`` is a graph break: the forward and the update
    are compiled graphs, the backward is AOTAutograd's compiled backward.
    Compiling adds about 16 s per call with a cold Inductor cache (4.5 s warm)
    on a 2-core machine, so this implementation runs only when named (``--implementations
    torch-compile``).
    """
    import torch._dynamo

    torch._dynamo.reset()
    compiled = torch.compile(_seed_step, dynamic=False)
    W = leaf(W)
    b = leaf(b)
    out = []
    for _ in range(steps):
        loss = compiled(X, y, W, b, lr, reduction)
        assert W.grad is not None and b.grad is not None
        out.append(snapshot(loss, W, b, W.grad, b.grad))
        W.grad = None
        b.grad = None
    return out
