"""A plain-Python transcription of the torch.optim documentation's pseudo-code (torch 2.x ``SGD``,
``Adam``, ``AdamW`` docstrings), line by line, for the independent check of :mod:`harness.optim.rules`.

It runs a whole trajectory of one scalar parameter: ``theta_0`` and the gradients ``g_1 .. g_T``
(given, as the documentation's ``nabla f_t(theta_{t-1})`` is a function the caller evaluates), in any
number type that has ``+ - * /`` (``Fraction``: exact; SymPy symbols), with ``sqrt`` supplied.
It shares no code with the rules: written from the documentation, not from them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

Num = Any


def sgd_reference(theta0: Num, grad: Callable[[int, Num], Num], steps: int, *, lr: Num, momentum: Num = 0, dampening: Num = 0,
                  weight_decay: Num = 0, nesterov: bool = False, maximize: bool = False) -> list[tuple[Num, Num | None]]:
    """torch.optim.SGD's documented algorithm. ``grad(t, theta_{t-1})`` gives the gradient of step t.

    Returns:
        per step, ``(theta_t, b_t)`` (``b_t`` None without momentum).
    """
    theta = theta0
    b = None
    out = []
    for t in range(1, steps + 1):
        if maximize:
            g = -grad(t, theta)
        else:
            g = grad(t, theta)
        if weight_decay != 0:
            g = g + weight_decay * theta
        if momentum != 0:
            if t > 1:
                b = momentum * b + (1 - dampening) * g
            else:
                b = g
            if nesterov:
                g = g + momentum * b
            else:
                g = b
        theta = theta - lr * g
        out.append((theta, b))
    return out


def adam_reference(theta0: Num, grad: Callable[[int, Num], Num], steps: int, *, lr: Num, betas: Sequence[Num], eps: Num,
                   weight_decay: Num = 0, amsgrad: bool = False, maximize: bool = False, decoupled: bool = False,
                   sqrt: Callable[[Num], Num], maximum: Callable[[Num, Num], Num] = max) -> list[tuple[Num, Num, Num, Num]]:
    """torch.optim.Adam's documented algorithm (``decoupled=True``: AdamW's).

    Returns:
        per step, ``(theta_t, m_t, v_t, v_t^max)`` (``v_t^max`` 0 without amsgrad).
    """
    beta1, beta2 = betas
    theta = theta0
    m = 0
    v = 0
    v_max = 0
    out = []
    for t in range(1, steps + 1):
        if maximize:
            g = -grad(t, theta)
        else:
            g = grad(t, theta)
        if decoupled:
            theta = theta - lr * weight_decay * theta
        elif weight_decay != 0:
            g = g + weight_decay * theta
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        m_hat = m / (1 - beta1**t)
        if amsgrad:
            v_max = maximum(v_max, v)
            v_hat = v_max / (1 - beta2**t)
        else:
            v_hat = v / (1 - beta2**t)
        theta = theta - lr * m_hat / (sqrt(v_hat) + eps)
        out.append((theta, m, v, v_max))
    return out
