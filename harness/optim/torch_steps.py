"""Built-in torch.optim implementations of the optimizer rules, in every form torch offers.

``torch-optim-adam``, ``torch-optim-adam-foreach``, ``torch-optim-adam-fused`` and the same for
``adamw``: ``torch.optim.Adam/AdamW([W, b], lr, **config, foreach=False | foreach=True | fused=True)``
with ``zero_grad()`` before each backward. The SGD forms are the plain-SGD built-ins
(``torch-optim-sgd``, ``-foreach``, ``-fused``), which run :func:`optim_steps` for a case with an
``optimizer``. Where torch lacks a form for a device or dtype it raises, and the record is
``unsupported`` (:func:`harness.classify.classify_exception`).
"""

from __future__ import annotations

from typing import Any

import torch

from ..implementations.registry import implementation
from .config import PARAMS, OptimizerConfig, OptimizerStepResult


def optim_steps(cls: Any, X: torch.Tensor, y: torch.Tensor, W: torch.Tensor, b: torch.Tensor, lr: float,
                reduction: str, steps: int, optimizer: OptimizerConfig, **form: bool) -> list[OptimizerStepResult]:
    """``steps`` steps of ``cls([W, b], lr=lr, **optimizer.torch_kwargs(), **form)``.

    Returns:
        per step, the loss, the gradients (``.grad`` as ``step()`` read it), W and b after the step and
        the state ``{"W": optimizer.state[W], "b": ...}`` (detached copies).
    """
    W = W.detach().clone().requires_grad_(True)
    b = b.detach().clone().requires_grad_(True)
    opt = cls([W, b], lr=lr, **optimizer.torch_kwargs(), **form)
    out = []
    for _ in range(steps):
        opt.zero_grad()
        sq = (torch.matmul(X, W) + b - y) ** 2
        loss = sq.sum() if reduction == "sum" else sq.mean()
        loss.backward()
        assert W.grad is not None and b.grad is not None
        gW, gb = W.grad.detach().clone(), b.grad.detach().clone()
        opt.step()
        state = {name: {k: v.detach().clone() for k, v in opt.state[p].items() if isinstance(v, torch.Tensor) and v.dim() > 0}
                 for name, p in zip(PARAMS, (W, b), strict=True)}
        out.append(OptimizerStepResult(loss.detach().clone(), gW, gb, W.detach().clone(), b.detach().clone(), state))
    return out


def _register(rule: str, cls: Any) -> None:
    title = {"adam": "Adam", "adamw": "AdamW"}[rule]
    for suffix, form, what in (("", {"foreach": False}, "for-loop implementation (foreach=False)"),
                               ("-foreach", {"foreach": True}, "foreach implementation (foreach=True)"),
                               ("-fused", {"fused": True}, "fused implementation (fused=True)")):
        def step(X: Any, y: Any, W: Any, b: Any, *, lr: float, reduction: str, steps: int, optimizer: OptimizerConfig,
                 _form: dict[str, bool] = form) -> list[OptimizerStepResult]:
            return optim_steps(cls, X, y, W, b, lr, reduction, steps, optimizer, **_form)

        step.__qualname__ = step.__name__ = f"torch_optim_{rule}{suffix.replace('-', '_')}"
        implementation(f"torch-optim-{rule}{suffix}", framework="torch", kind="builtin", optimizers=(rule,),
                       description=f"torch.optim.{title}, {what}, zero_grad() each step")(step)


_register("adam", torch.optim.Adam)
_register("adamw", torch.optim.AdamW)
