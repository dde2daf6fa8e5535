"""The NumPy hand implementation: closed-form gradients, no autograd.

    R = X W + b - y,  L = c sum R^2,  dL/dW = 2c X^T R,  dL/db = 2c sum_i R_i,
    W' = W - lr dL/dW,  b' = b - lr dL/db,   c = 1 (sum) or 1/(N K) (mean)

Everything stays in the inputs' dtype (NumPy 2's NEP 50 keeps a Python float
scalar from promoting a float32 array). NumPy has no bfloat16.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from .registry import StepResult, implementation

Arr = npt.NDArray[np.floating]


@implementation("numpy-hand", framework="numpy", kind="builtin", dtypes=("float64", "float32", "float16"),
                description="NumPy closed-form gradients written by hand")
def numpy_hand(X: Arr, y: Arr, W: Arr, b: Arr, *, lr: float, reduction: str, steps: int) -> list[StepResult]:
    n, k = y.shape
    dt = X.dtype.type
    c = dt(1.0) if reduction == "sum" else dt(1.0 / (n * k))
    out = []
    for _ in range(steps):
        R = X @ W + b - y
        loss = c * np.sum(R * R)
        gW = (dt(2) * c) * (X.T @ R)
        gb = (dt(2) * c) * R.sum(axis=0)
        W = W - lr * gW
        b = b - lr * gb
        out.append(StepResult(loss, gW, gb, W, b))
    return out
