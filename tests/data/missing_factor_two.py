"""A deliberately wrong plug-in: the gradient misses the factor 2 of d(r^2)/dr."""

import numpy as np

import harness


@harness.implementation("missing-factor-2", framework="numpy")
def missing_factor_two(X, y, W, b, *, lr, reduction, steps):
    n, k = y.shape
    c = X.dtype.type(1.0 if reduction == "sum" else 1.0 / (n * k))
    out = []
    for _ in range(steps):
        R = X @ W + b - y
        loss = c * np.sum(R * R)
        gW = c * (X.T @ R)  # bug: should be 2c X^T R
        gb = c * R.sum(axis=0)
        W = W - lr * gW
        b = b - lr * gb
        out.append(harness.StepResult(loss, gW, gb, W, b))
    return out
