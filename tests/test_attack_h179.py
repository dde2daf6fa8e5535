"""helper-179: attacks on the forty-second round's changes (b1648ad..6abcab8).

**Adam's ``addcdiv`` underflow in float64's own subnormals** (:func:`harness.optim.bounds.adam_bounds`, ``e_sm``).
torch.optim's Adam and AdamW form ``(step_size * exp_avg) / denom`` (helper-127, ``tests/test_optim_addcdiv_underflow``):
where ``step_size * exp_avg`` is subnormal its rounding (up to half the subnormal spacing) is divided by the
denominator. The bound computed that allowance as ``min(eta, s |m|) / den`` in float64, and for a float64 parameter
near the subnormals ``s |m|`` itself underflows in float64 (``1e-9 * 1e-320 = 0``): the allowance was 0 exactly where
torch's product is 0 and the whole update is lost. Pinned: one weight ``W = 5e-320`` (X = 1, y = b = 0, the sum
reduction), lr = 1e-10, Adam's defaults: ``g = 2 W = 1e-319``, ``m = 1e-320``, ``v`` underflows, the denominator is
``eps = 1e-8``, the exact update ``lr g / (|g| + eps) = 1.0e-321`` (about 200 subnormal spacings), and torch's
``fl(1e-9 * 1e-320) = 0`` leaves ``W`` unchanged: ``disagree`` at 101 times the rigorous bound (1e-323) in all three
torch.optim forms (found by a random search of generated cases: regime "subnormal", lr 1e-10, 99.5 x). It was so
before this round too (b1648ad). A step whose update has the wrong sign, or lacks the first moment's ``1 - beta1``,
must still disagree there.
"""

from __future__ import annotations

import numpy as np
import pytest

import harness
from harness.cases import case_from_arrays
from harness.implementations.registry import Implementation
from harness.optim import OptimizerStepResult

TORCH_ADAM = ["torch-optim-adam", "torch-optim-adam-foreach", "torch-optim-adam-fused"]
W0 = 5e-320  # (a float64 subnormal: 10,120 spacings of 2**-1074)


def _case(name: str = "adam") -> harness.Case:
    return case_from_arrays(f"h179-sm-underflow-{name}", [[1.0]], [[0.0]], [[W0]], [0.0], lr=1e-10, reduction="sum",
                            dtypes=["float64"], optimizer={"name": name})


def test_the_pinned_case_is_what_the_docstring_says() -> None:
    # (independent of the harness: torch's product step_size * exp_avg underflows to 0 in float64, numpy's quotient
    # first does not; the exact update is about 1e-321)
    g = 2 * W0
    m = (1 - 0.9) * g
    assert 1e-9 * m == 0.0
    assert (m / 1e-8) * 1e-9 != 0.0
    assert abs(g / (g + 1e-8) * 1e-10 - 1e-321) < 1e-323


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_torch_adam_whose_step_size_times_float64_subnormal_moment_underflows_agrees(name: str) -> None:
    impls = [i.replace("adam", name) for i in TORCH_ADAM] + [f"numpy-optim-{name}"]
    recs = harness.verify([_case(name)], impls, dtypes=["float64"])
    assert {r.implementation for r in recs} == set(impls)
    torch_w = [r for r in recs if r.quantity == "W" and r.implementation.startswith("torch")]
    assert torch_w and all(float(r.computed) == W0 for r in torch_w)  # (torch's update lost: the mechanism pinned)
    bad = [(r.implementation, r.quantity, r.bound_ratio) for r in recs if r.verdict not in ("agree", "unsupported")]
    assert not bad, bad


def _wrong(kind: str) -> Implementation:
    def step(X, y, W, b, *, lr, reduction, steps, optimizer):  # type: ignore[no-untyped-def]
        b1, b2 = optimizer.torch_kwargs()["betas"]
        eps = optimizer.torch_kwargs()["eps"]
        R = X @ W + b - y
        grads = {"W": 2.0 * (X.T @ R), "b": 2.0 * R.sum(axis=0)}
        params, state = {"W": W, "b": b}, {}
        for p, g in grads.items():
            m = g if kind == "no-1-beta1" else (1 - b1) * g
            v = (1 - b2) * (g * g)
            den = np.sqrt(v) / np.sqrt(1 - b2) + eps
            upd = (lr / (1 - b1)) * (m / den)
            params[p] = params[p] + upd if kind == "sign" else params[p] - upd
            state[p] = {"exp_avg": (1 - b1) * g, "exp_avg_sq": v}
        return [OptimizerStepResult(np.sum(R * R), grads["W"], grads["b"], params["W"], params["b"], state)]
    return Implementation(name=f"h179-adam-wrong-{kind}", fn=step, framework="numpy", kind="plugin", optimizers=("adam",))


@pytest.mark.parametrize("kind", ["sign", "no-1-beta1"])
def test_wrong_updates_still_disagree_there(kind: str) -> None:
    got = {r.quantity: r for r in harness.verify([_case()], [_wrong(kind)], dtypes=["float64"])}
    assert got["W"].verdict == "disagree", (got["W"].bound_ratio, got["W"].exact, got["W"].computed)
