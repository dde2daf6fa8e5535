"""A correct NumPy step for tests that need one (a helper module, not a test module: importing it registers
nothing, where importing a test module twice, as pytest's module and as ``tests.<name>``, would register its
plug-ins twice and bind them to the second copy's state)."""

from __future__ import annotations

import numpy as np

from harness import StepResult


def np_step(X, y, W, b, *, lr, reduction, steps):
    """Plain SGD on the squared error, in the inputs' dtype: the loss, both gradients and the update, ``steps`` times."""
    out = []
    for _ in range(steps):
        r = X @ W + b - y
        s = 1.0 if reduction == "sum" else 1.0 / r.size
        gW, gb = 2 * s * (X.T @ r), 2 * s * r.sum(axis=0)
        W, b = W - lr * gW, b - lr * gb
        out.append(StepResult(np.asarray((r * r).sum() * s, dtype=X.dtype), gW, gb, W, b))
    return out
