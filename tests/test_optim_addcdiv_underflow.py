"""torch.optim's Adam and AdamW update the parameter with ``addcdiv`` (for-loop, foreach and fused forms alike), which
forms ``(step_size * exp_avg) / denom``: the product is rounded before the division, and where it is subnormal its
absolute error (half the subnormal spacing) is divided by the denominator, at least ``eps`` (helper-127).

Pinned: float32 (and float64) Adam at step 1, ``betas = (0.5, 0.9)``, ``eps = 2**-24``, one weight whose gradient is
``2**-139`` (X = W = 2**-70, y = b = 0, the sum reduction): the first moment ``m = 2**-140`` is subnormal, the second
moment underflows to 0 and the denominator is ``eps``; ``step_size * m = 1.45 * 2**-149`` rounds to ``2**-149``, so
torch's ``b`` is ``-2**-125`` where the exact update gives ``-1.45 * 2**-125``. Graded ``disagree`` at 105.9 times the
rigorous bound (47.1 in float64) before the bound counted that rounding; a step whose update has the wrong sign, or
is computed from a first moment without its factor ``1 - beta1``, must still disagree there."""

from __future__ import annotations

import numpy as np
import pytest

import harness
from harness.cases import case_from_arrays
from harness.implementations.registry import Implementation
from harness.optim import OptimizerStepResult

TORCH_ADAM = ["torch-optim-adam", "torch-optim-adam-foreach", "torch-optim-adam-fused"]
TINY = {"float32": 2.0**-70, "float64": 2.0**-520}


def _case(dtype: str, name: str = "adam") -> harness.Case:
    t = TINY[dtype]
    return case_from_arrays(f"addcdiv-underflow-{name}-{dtype}", [[t]], [[0.0]], [[t]], [0.0], lr=1.45 * 2.0**-10,
                            reduction="sum", dtypes=[dtype], optimizer={"name": name, "betas": [0.5, 0.9], "eps": 2.0**-24})


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_torch_adam_with_a_subnormal_step_size_times_first_moment_agrees(dtype: str) -> None:
    recs = harness.verify([_case(dtype), _case(dtype, "adamw")], [*TORCH_ADAM, "torch-optim-adamw", "numpy-optim-adam"],
                          dtypes=[dtype])
    assert recs
    bad = [(r.case, r.implementation, r.quantity, r.bound_ratio) for r in recs if r.verdict not in ("agree", "unsupported")]
    assert not bad, bad


def _wrong(kind: str):  # type: ignore[no-untyped-def]
    def step(X, y, W, b, *, lr, reduction, steps, optimizer):  # type: ignore[no-untyped-def]
        b1, b2 = optimizer.torch_kwargs()["betas"]
        eps = optimizer.torch_kwargs()["eps"]
        dt = X.dtype.type
        R = X @ W + b - y
        grads = {"W": dt(2) * (X.T @ R), "b": dt(2) * R.sum(axis=0)}
        params, state = {"W": W, "b": b}, {}
        for p, g in grads.items():
            m = g if kind == "no-1-beta1" else dt(1 - b1) * g
            v = dt(1 - b2) * (g * g)
            den = np.sqrt(v) / dt(np.sqrt(1 - b2)) + dt(eps)
            upd = dt(lr / (1 - b1)) * (m / den)
            params[p] = params[p] + upd if kind == "sign" else params[p] - upd
            state[p] = {"exp_avg": dt(1 - b1) * g, "exp_avg_sq": v}
        return [OptimizerStepResult(np.sum(R * R), grads["W"], grads["b"], params["W"], params["b"], state)]
    return Implementation(name=f"adam-wrong-{kind}", fn=step, framework="numpy", kind="plugin", optimizers=("adam",))


@pytest.mark.parametrize("kind", ["sign", "no-1-beta1"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_wrong_updates_still_disagree_there(dtype: str, kind: str) -> None:
    got = {r.quantity: r for r in harness.verify([_case(dtype)], [_wrong(kind)], dtypes=[dtype])}
    assert got["b"].verdict == "disagree", (got["b"].bound_ratio, got["b"].exact, got["b"].computed)
