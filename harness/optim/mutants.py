"""Deliberately wrong optimizer steps (``selftest``): bugs seen in real optimizer code.

Each is the NumPy hand implementation (:mod:`harness.optim.numpy_steps`) with one bug, registered
with ``correct=False`` and the verdicts that count as catching it (``disagree`` for a wrong rule,
``disagree`` or ``suspect`` for a precision downgrade). The cases that expose them are in
``cases/optim.toml`` (a dampening, Nesterov (dropped, or its look-ahead's sign flipped), AdamW weight decay, bias correction at step 1, amsgrad's second
moment falling below its maximum).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from ..implementations.registry import implementation
from .config import PARAMS, OptimizerConfig, OptimizerStepResult
from .numpy_steps import numpy_update

Arr = Any
DTYPES = ("float64", "float32", "float16")


def _loop(X: Arr, y: Arr, W: Arr, b: Arr, lr: float, reduction: str, steps: int, optimizer: OptimizerConfig,
          update: Callable[[Arr, Arr, dict[str, Arr], int], tuple[Arr, dict[str, Arr]]]) -> list[OptimizerStepResult]:
    n, k = y.shape
    dt = X.dtype.type
    c = dt(1.0) if reduction == "sum" else dt(1.0 / (n * k))
    params = {"W": W, "b": b}
    state: dict[str, dict[str, Arr]] = {p: {} for p in PARAMS}
    out = []
    for t in range(1, steps + 1):
        R = X @ params["W"] + params["b"] - y
        grads = {"W": (dt(2) * c) * (X.T @ R), "b": (dt(2) * c) * R.sum(axis=0)}
        for p in PARAMS:
            params[p], state[p] = update(params[p], grads[p], state[p], t)
        out.append(OptimizerStepResult(c * np.sum(R * R), grads["W"], grads["b"], params["W"], params["b"],
                                       {p: dict(state[p]) for p in PARAMS}))
    return out


def _adam_variant(w: Arr, g: Arr, st: dict[str, Arr], t: int, lr: float, opt: OptimizerConfig, *, bias_correction: bool = True,
                  eps_inside: bool = False, coupled: bool = False, max_unused: bool = False) -> tuple[Arr, dict[str, Arr]]:
    kw = opt.torch_kwargs()
    b1, b2 = kw["betas"]
    dt = w.dtype.type
    d = -g if kw["maximize"] else g
    if kw["weight_decay"] != 0:
        if opt.name == "adamw" and not coupled:
            w = w * dt(1 - lr * kw["weight_decay"])
        else:
            d = d + dt(kw["weight_decay"]) * w
    zeros = np.zeros_like(w)
    m = dt(b1) * st.get("exp_avg", zeros) + dt(1 - b1) * d
    v = dt(b2) * st.get("exp_avg_sq", zeros) + dt(1 - b2) * (d * d)
    new = {"exp_avg": m, "exp_avg_sq": v}
    big_v = v
    if kw["amsgrad"]:
        big_v = np.maximum(st.get("max_exp_avg_sq", zeros), v)
        new["max_exp_avg_sq"] = big_v
        if max_unused:  # the maximum is kept and reported, but the step divides by the current v
            big_v = v
    bc1, bc2 = (1 - b1**t, 1 - b2**t) if bias_correction else (1.0, 1.0)
    if eps_inside:
        denom = np.sqrt(big_v / dt(bc2) + dt(kw["eps"]))
    else:
        denom = np.sqrt(big_v) / dt(math.sqrt(bc2)) + dt(kw["eps"])
    return w - dt(lr / bc1) * (m / denom), new


def _register(name: str, rules: tuple[str, ...], description: str, expected: tuple[str, ...],
              update: Callable[[Arr, Arr, dict[str, Arr], int, float, OptimizerConfig], tuple[Arr, dict[str, Arr]]],
              dtypes: tuple[str, ...] = DTYPES) -> None:
    def step(X: Arr, y: Arr, W: Arr, b: Arr, *, lr: float, reduction: str, steps: int, optimizer: OptimizerConfig) -> list[OptimizerStepResult]:
        return _loop(X, y, W, b, lr, reduction, steps, optimizer, lambda w, g, st, t: update(w, g, st, t, lr, optimizer))

    step.__qualname__ = step.__name__ = name.replace("-", "_")
    implementation(name, framework="numpy", correct=False, expected=expected, kind="mutant", dtypes=dtypes,
                   optimizers=rules, description=description)(step)


def _sgd_zero_buffer(w: Arr, g: Arr, st: dict[str, Arr], t: int, lr: float, opt: OptimizerConfig) -> tuple[Arr, dict[str, Arr]]:
    """The momentum buffer starts at zero, so step 1 is damped (torch.optim starts it at the gradient)."""
    if t == 1 and opt["momentum"] != 0:
        st = {"momentum_buffer": np.zeros_like(w)}
        t = 2
    return numpy_update("sgd", w, g, st, t, lr, opt)


def _sgd_no_nesterov(w: Arr, g: Arr, st: dict[str, Arr], t: int, lr: float, opt: OptimizerConfig) -> tuple[Arr, dict[str, Arr]]:
    """Nesterov's look-ahead ``d + mu buf`` dropped: plain momentum although ``nesterov = true``."""
    plain = OptimizerConfig("sgd", {**opt.args, "nesterov": False})
    return numpy_update("sgd", w, g, st, t, lr, plain)


def _sgd_nesterov_sign(w: Arr, g: Arr, st: dict[str, Arr], t: int, lr: float, opt: OptimizerConfig) -> tuple[Arr, dict[str, Arr]]:
    """Nesterov's look-ahead subtracted, ``d - mu buf`` for ``d + mu buf`` (the buffer itself right)."""
    if not opt["nesterov"]:
        return numpy_update("sgd", w, g, st, t, lr, opt)
    plain = OptimizerConfig("sgd", {**opt.args, "nesterov": False})
    kw = opt.torch_kwargs()
    _, new = numpy_update("sgd", w, g, st, t, lr, plain)  # the momentum buffer, as torch.optim forms it
    dt = w.dtype.type
    d = (-g if kw["maximize"] else g) + dt(kw["weight_decay"]) * w
    return w - dt(lr) * (d - dt(kw["momentum"]) * new["momentum_buffer"]), new


def _half_state() -> Callable[[Arr, Arr, dict[str, Arr], int, float, OptimizerConfig], tuple[Arr, dict[str, Arr]]]:
    def update(w: Arr, g: Arr, st: dict[str, Arr], t: int, lr: float, opt: OptimizerConfig) -> tuple[Arr, dict[str, Arr]]:
        """The state kept in float16 for float32 parameters (torch.optim keeps it in the parameter's dtype)."""
        new_w, new = numpy_update(opt.name, w, g, {k: v.astype(w.dtype) for k, v in st.items()}, t, lr, opt)
        return new_w, {k: v.astype(np.float16) for k, v in new.items()}
    return update


_register("mutant-adam-no-bias-correction", ("adam", "adamw"), "Adam without the bias corrections 1 - beta^t", ("disagree",),
          lambda w, g, st, t, lr, opt: _adam_variant(w, g, st, t, lr, opt, bias_correction=False))
_register("mutant-adam-eps-inside-sqrt", ("adam", "adamw"), "eps inside the square root: sqrt(v_hat + eps)", ("disagree",),
          lambda w, g, st, t, lr, opt: _adam_variant(w, g, st, t, lr, opt, eps_inside=True))
_register("mutant-adam-amsgrad-max-unused", ("adam", "adamw"),
          "amsgrad's running maximum kept in max_exp_avg_sq but the step divides by the current v",
          ("disagree",), lambda w, g, st, t, lr, opt: _adam_variant(w, g, st, t, lr, opt, max_unused=True))
_register("mutant-adamw-coupled-decay", ("adamw",), "AdamW's weight decay applied as L2 on the gradient (Adam's coupled decay)",
          ("disagree",), lambda w, g, st, t, lr, opt: _adam_variant(w, g, st, t, lr, opt, coupled=True))
_register("mutant-sgd-zero-momentum-buffer", ("sgd",), "momentum buffer started at zero, not at the first gradient",
          ("disagree",), _sgd_zero_buffer)
_register("mutant-sgd-nesterov-dropped", ("sgd",), "Nesterov's look-ahead dropped (plain momentum)", ("disagree",), _sgd_no_nesterov)
_register("mutant-sgd-nesterov-sign", ("sgd",), "Nesterov's look-ahead subtracted: d - mu buf", ("disagree",), _sgd_nesterov_sign)
_register("mutant-adam-half-state", ("adam", "adamw"), "Adam's moments kept in float16 for float32 parameters",
          ("disagree", "suspect"), _half_state(), dtypes=("float32",))
_register("mutant-sgd-half-state", ("sgd",), "the momentum buffer kept in float16 for float32 parameters",
          ("disagree", "suspect"), _half_state(), dtypes=("float32",))
