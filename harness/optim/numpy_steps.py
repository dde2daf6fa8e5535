"""NumPy hand implementations of the optimizer rules: closed-form gradients, then the update as
torch.optim's documentation writes it (:mod:`harness.optim.rules`), no autograd.

Float64 and float32 compute in the dtype; float16 computes each operation of the update in float32
and rounds the parameter and the state to float16 after the step (PyTorch's "opmath" for half
precision), since eps = 1e-8 and (1 - beta2) g^2 are below float16's resolution. Hyper-parameters
derived from others (``1 - beta1^t``, ``sqrt(1 - beta2^t)``) are computed in Python floats, as
torch.optim does. NumPy has no bfloat16.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from ..implementations.registry import implementation
from .config import PARAMS, OptimizerConfig, OptimizerStepResult

Arr = npt.NDArray[Any]


def _loss_and_grads(X: Arr, y: Arr, W: Arr, b: Arr, reduction: str) -> tuple[Any, Arr, Arr]:
    n, k = y.shape
    dt = X.dtype.type
    c = dt(1.0) if reduction == "sum" else dt(1.0 / (n * k))
    R = X @ W + b - y
    return c * np.sum(R * R), (dt(2) * c) * (X.T @ R), (dt(2) * c) * R.sum(axis=0)


def numpy_update(rule: str, w: Arr, g: Arr, state: dict[str, Arr], t: int, lr: float, opt: OptimizerConfig) -> tuple[Arr, dict[str, Arr]]:
    """One step of ``opt`` for one parameter in NumPy (arguments as :func:`harness.optim.rules.sgd_rule`;
    ``state`` empty at ``t = 1``). Returns the new parameter and state, in ``w``'s dtype."""
    dt = w.dtype
    ct: Any = np.float32 if dt == np.float16 else dt.type
    w, g = w.astype(ct), g.astype(ct)
    st = {k: v.astype(ct) for k, v in state.items()}
    kw = opt.torch_kwargs()
    d = -g if kw["maximize"] else g
    new: dict[str, Arr] = {}
    if rule == "sgd":
        if kw["weight_decay"] != 0:
            d = d + ct(kw["weight_decay"]) * w
        if kw["momentum"] != 0:
            buf = d.copy() if t == 1 else ct(kw["momentum"]) * st["momentum_buffer"] + ct(1 - kw["dampening"]) * d
            new["momentum_buffer"] = buf
            d = d + ct(kw["momentum"]) * buf if kw["nesterov"] else buf
        w = w - ct(lr) * d
    else:
        b1, b2 = kw["betas"]
        if kw["weight_decay"] != 0:
            if rule == "adamw":
                w = w * ct(1 - lr * kw["weight_decay"])
            else:
                d = d + ct(kw["weight_decay"]) * w
        zeros = np.zeros_like(w)
        m = ct(b1) * st.get("exp_avg", zeros) + ct(1 - b1) * d
        v = ct(b2) * st.get("exp_avg_sq", zeros) + ct(1 - b2) * (d * d)
        new.update(exp_avg=m, exp_avg_sq=v)
        big_v = v
        if kw["amsgrad"]:
            big_v = np.maximum(st.get("max_exp_avg_sq", zeros), v)
            new["max_exp_avg_sq"] = big_v
        step_size = lr / (1 - b1**t)
        denom = np.sqrt(big_v) / ct(math.sqrt(1 - b2**t)) + ct(kw["eps"])
        w = w - ct(step_size) * (m / denom)
    return w.astype(dt), {k: v.astype(dt) for k, v in new.items()}


def _numpy_optim(rule: str, X: Arr, y: Arr, W: Arr, b: Arr, lr: float, reduction: str, steps: int,
                 optimizer: OptimizerConfig) -> list[OptimizerStepResult]:
    params = {"W": W, "b": b}
    state: dict[str, dict[str, Arr]] = {p: {} for p in PARAMS}
    out = []
    for t in range(1, steps + 1):
        loss, gW, gb = _loss_and_grads(X, y, params["W"], params["b"], reduction)
        grads = {"W": gW, "b": gb}
        for p in PARAMS:
            params[p], state[p] = numpy_update(rule, params[p], grads[p], state[p], t, lr, optimizer)
        out.append(OptimizerStepResult(loss, gW, gb, params["W"], params["b"], {p: dict(state[p]) for p in PARAMS}))
    return out


@implementation("numpy-optim-sgd", framework="numpy", kind="builtin", dtypes=("float64", "float32", "float16"), optimizers=("sgd",),
                description="NumPy hand implementation of torch.optim.SGD's rule (momentum, dampening, Nesterov, weight decay)")
def numpy_optim_sgd(X: Arr, y: Arr, W: Arr, b: Arr, *, lr: float, reduction: str, steps: int, optimizer: OptimizerConfig) -> list[OptimizerStepResult]:
    return _numpy_optim("sgd", X, y, W, b, lr, reduction, steps, optimizer)


@implementation("numpy-optim-adam", framework="numpy", kind="builtin", dtypes=("float64", "float32", "float16"), optimizers=("adam",),
                description="NumPy hand implementation of torch.optim.Adam's rule (bias correction, eps outside the sqrt, amsgrad)")
def numpy_optim_adam(X: Arr, y: Arr, W: Arr, b: Arr, *, lr: float, reduction: str, steps: int, optimizer: OptimizerConfig) -> list[OptimizerStepResult]:
    return _numpy_optim("adam", X, y, W, b, lr, reduction, steps, optimizer)


@implementation("numpy-optim-adamw", framework="numpy", kind="builtin", dtypes=("float64", "float32", "float16"), optimizers=("adamw",),
                description="NumPy hand implementation of torch.optim.AdamW's rule (decoupled weight decay)")
def numpy_optim_adamw(X: Arr, y: Arr, W: Arr, b: Arr, *, lr: float, reduction: str, steps: int, optimizer: OptimizerConfig) -> list[OptimizerStepResult]:
    return _numpy_optim("adamw", X, y, W, b, lr, reduction, steps, optimizer)
