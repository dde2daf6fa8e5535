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


# Two more false alarms of float64 Adam near float64's own subnormals, both already there at b1648ad: the bound's
# centre and caps are float64 evaluations of the exact magnitudes, and in float64's subnormals those lose the relative
# accuracy the chain assumes. The first is fixed (the short side's cap |p| - P_low took the bound's own float64 |p|, of
# an m rounded to the subnormal grid, for the exact one: 1.000076 x the bound); the second is pinned (xfail strict).


def test_torch_adam_whose_update_is_lost_with_a_subnormal_first_moment_agrees() -> None:
    # W = 1.3e-319, g = 2.6e-319, m = 2.6e-320, v underflows, den = eps = 1e-30, s = 1e-9: the exact update is
    # lr g / (|g| + eps) = 2.6e-299; torch's fl(s m) = fl(2.6e-329) = 0 leaves W unchanged
    case = case_from_arrays("h179-cap", [[1.0]], [[0.0]], [[1.3e-319]], [0.0], lr=1e-10, reduction="sum",
                            dtypes=["float64"], optimizer={"name": "adam", "eps": 1e-30})
    got = {r.quantity: r for r in harness.verify([case], ["torch-optim-adam"], dtypes=["float64"])}
    assert float(got["W"].computed) == 1.3e-319
    assert got["W"].verdict == "agree", got["W"].bound_ratio


def test_a_wrong_sign_update_still_disagrees_where_the_cap_was_widened() -> None:
    case = case_from_arrays("h179-cap-sign", [[1.0]], [[0.0]], [[1.3e-319]], [0.0], lr=1e-10, reduction="sum",
                            dtypes=["float64"], optimizer={"name": "adam", "eps": 1e-30})
    got = {r.quantity: r for r in harness.verify([case], [_wrong("sign")], dtypes=["float64"])}
    assert got["W"].verdict == "disagree", (got["W"].bound_ratio, got["W"].exact, got["W"].computed)
    assert got["W"].bound_ratio > 1.9  # (2 |p| against |p| (1 + 1e-4))


@pytest.mark.xfail(strict=True, reason=(
    "the second moment v = (1 - beta2) g^2 of a subnormal float64 g underflows to 0 in every float64 evaluation, the "
    "step's and the bound's alike, while the exact sqrt(v_hat) = |g| (1e-319) outweighs a subnormal eps (1e-320): "
    "the exact update is lr g / (|g| + eps) = 0.476, a correct float64 step's lr g / eps = 10 (741 x the bound; 1e3-1e4 "
    "x in random cases with eps 1e-320, numpy and torch alike). The bound's own V, S and den (optim.bounds.adam_bounds) "
    "are float64 values of the exact ones; it needs them exact (or scaled) where they underflow, and to allow a "
    "denominator down to eps where V may underflow in the dtype"))
def test_float64_adam_whose_second_moment_underflows_below_a_subnormal_eps_agrees() -> None:
    case = case_from_arrays("h179-v", [[1.0]], [[0.0]], [[1e-319]], [0.0], lr=0.5, reduction="sum",
                            dtypes=["float64"], optimizer={"name": "adam", "eps": 1e-320})
    got = {r.quantity: r for r in harness.verify([case], ["numpy-optim-adam"], dtypes=["float64"])}
    assert float(got["W"].computed) == pytest.approx(-10.0, rel=1e-3)  # (lr g / eps: v underflowed to 0)
    assert got["W"].verdict == "agree", got["W"].bound_ratio
