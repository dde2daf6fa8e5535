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


def model_seed_step(name, seed, wrong=1.0):
    """A linear-model SGD step by hand in NumPy (the models path's signature) whose seed ``dL/dF`` is
    ``seed(R, n, k, reduction)``, in the inputs' dtype; ``wrong`` scales both gradients (a mutant). The loss is
    ``c sum(R R)`` with ``c = 1`` under the sum, ``1/(N K)`` under the mean."""
    from harness.implementations.registry import Implementation
    from harness.models import ModelStepResult

    def step(X, y, params, *, model, lr, reduction, steps):
        dt = X.dtype.type
        n, k = y.shape
        c = 1.0 if reduction == "sum" else 1.0 / (n * k)
        W, b = params["W"], params["b"]
        out = []
        for _ in range(steps):
            R = (X @ W + b) - y
            loss = dt(c) * np.sum(R * R, dtype=X.dtype)
            G = seed(R, n, k, reduction)
            gW = (X.T @ G) * dt(wrong)
            gb = np.sum(G, axis=0, dtype=X.dtype) * dt(wrong)
            W, b = W - dt(lr) * gW, b - dt(lr) * gb
            out.append(ModelStepResult(loss=loss, grads={"W": gW, "b": gb}, params={"W": W, "b": b}))
        return out

    return Implementation(name=name, framework="numpy", fn=step, models=("any",))
