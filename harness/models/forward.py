"""A model step from a PyTorch forward function: how a user's own layer or ``torch.autograd.Function`` is graded.

:func:`torch_forward_step` turns ``forward(X, params) -> prediction`` into a step function of the
model contract (:mod:`harness.models.step`); :func:`sgd_steps` is the training loop it runs, the
seed notebook's pattern for any forward::

    leaves = {name: p.detach().clone().requires_grad_(True)}     # leaf tensors on the inputs' device
    for each step:
        loss = torch.nn.functional.mse_loss(forward(X, leaves), y, reduction=reduction)
        loss.backward()
        with torch.no_grad():
            p -= lr * p.grad                                      # for every parameter
        p.grad = None

The public API (the harness's one way to grade a forward)::

    import harness
    from harness.models import torch_forward_step

    @harness.implementation("my-fused-tanh", framework="torch", models=({"hidden": [8], "activation": "tanh"},))
    @torch_forward_step
    def forward(X, params):
        h = MyFusedLinearTanh.apply(X, params["W1"], params["b1"])
        return h @ params["W2"] + params["b2"]

The decorators stack: ``torch_forward_step`` makes the step (with the forward's name, module and
docstring), ``harness.implementation(..., models=...)`` registers it for the models it declares
(:func:`harness.models.spec.model_rule_mismatch`); the forward's backward is then graded against
the exact gradient of the declared model. ``params`` holds the model's parameters by name in
:meth:`harness.models.spec.ModelSpec.parameter_names` order (``W1`` (D, H1), ``b1`` (H1,), ...) as
leaf tensors of the case's dtype and device; ``prediction`` must have ``y``'s shape (N, K).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import torch

from .step import ModelStepResult

#: ``forward(X, params) -> prediction``: X (N, D) tensor, params ``{name: leaf tensor}``, prediction (N, K).
Forward = Callable[[torch.Tensor, Mapping[str, torch.Tensor]], torch.Tensor]


def leaf(t: torch.Tensor) -> torch.Tensor:
    """A fresh leaf tensor with ``requires_grad`` on ``t``'s device and dtype."""
    return t.detach().clone().requires_grad_(True)


def mse_loss(prediction: torch.Tensor, y: torch.Tensor, reduction: str) -> torch.Tensor:
    """``torch.nn.functional.mse_loss``: ``sum (prediction - y)^2`` (``"sum"``) or that over N*K (``"mean"``).

    Raises:
        ValueError: when ``prediction`` and ``y`` differ in shape (``mse_loss`` would broadcast
            an (N,) prediction against (N, 1) targets into an (N, N) loss).
    """
    if tuple(prediction.shape) != tuple(y.shape):
        raise ValueError(f"the prediction has shape {tuple(prediction.shape)}, the targets y {tuple(y.shape)}: "
                         "the forward must return (N, K)")
    return torch.nn.functional.mse_loss(prediction, y, reduction=reduction)


def sgd_steps(forward: Forward, X: torch.Tensor, y: torch.Tensor, params: Mapping[str, torch.Tensor], *,
              lr: float, reduction: str, steps: int) -> list[ModelStepResult]:
    """``steps`` plain SGD steps of the squared-error loss of ``forward`` (module docstring).

    Returns:
        one :class:`ModelStepResult` per step: the loss before the update, ``{name: dL/dparam}``
        and ``{name: parameter after the update}`` (detached copies, in ``params`` order).

    Raises:
        ValueError: when a parameter gets no gradient (the forward does not use it) or the
            prediction's shape is not ``y``'s.
    """
    leaves = {name: leaf(p) for name, p in params.items()}
    out = []
    for _ in range(steps):
        loss = mse_loss(forward(X, leaves), y, reduction)
        loss.backward()
        missing = [name for name, p in leaves.items() if p.grad is None]
        if missing:
            raise ValueError(f"parameter {missing[0]} received no gradient: the forward does not use it")
        grads = {name: p.grad.detach().clone() for name, p in leaves.items() if p.grad is not None}
        with torch.no_grad():
            for p in leaves.values():
                assert p.grad is not None
                p -= lr * p.grad
        out.append(ModelStepResult(loss.detach().clone(), grads, {name: p.detach().clone() for name, p in leaves.items()}))
        for p in leaves.values():
            p.grad = None
    return out


def torch_forward_step(forward: Forward) -> Callable[..., list[ModelStepResult]]:
    """The model step (:mod:`harness.models.step`) that trains ``forward`` with :func:`sgd_steps`.

    Args:
        forward: ``forward(X, params) -> prediction`` (module docstring); it may call any
            ``torch.autograd.Function``, ``torch.nn`` module or function.

    Returns:
        ``step(X, y, params, *, model, lr, reduction, steps) -> list[ModelStepResult]``, carrying
        ``forward``'s ``__name__``, ``__qualname__``, ``__module__`` and ``__doc__`` (so that the
        registry describes and names it after the forward); ``model`` is not passed to ``forward``:
        register the step for the models it implements with ``models=(...)``.
    """

    @functools.wraps(forward)
    def step(X: torch.Tensor, y: torch.Tensor, params: Mapping[str, torch.Tensor], *, model: Any = None, lr: float,
             reduction: str, steps: int) -> list[ModelStepResult]:
        return sgd_steps(forward, X, y, params, lr=lr, reduction=reduction, steps=steps)

    return step
