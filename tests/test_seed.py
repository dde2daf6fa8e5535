"""The seed notebook, reproduced to the bit, and what the exact oracle says about it."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import torch

from harness.cases import load_cases
from harness.implementations import REGISTRY, load_builtins
from harness.runner import verify
from tests.conftest import CASES

# PyTorch float32, seed notebook: (loss, W.grad, W, b) after each step.
SEED_STEPS = [
    (0.4899997413158417, 1.3999996185302734, 2.1600000858306885, 1.2599999904632568),
    (0.1764000654220581, 0.8400001525878906, 2.0759999752044678, 1.1759999990463257),
    (0.0635039284825325, 0.5039997100830078, 2.025599956512451, 1.125599980354309),
    (0.022861385717988014, 0.3023996353149414, 1.995360016822815, 1.0953600406646729),
]


def seed_case():
    return next(c for c in load_cases([CASES / "seed.toml"]).cases if c.id == "seed")


def test_seed_torch_step_reproduces_notebook_values():
    load_builtins()
    case = seed_case()
    vals = {k: torch.tensor(v, dtype=torch.float32) for k, v in case.values.items()}
    results = REGISTRY["torch-seed"].fn(vals["X"], vals["y"], vals["W"], vals["b"], lr=0.1, reduction="sum", steps=8)
    got = [(float(r.loss), float(r.grad_W[0, 0]), float(r.W[0, 0]), float(r.b[0])) for r in results[:4]]
    assert got == SEED_STEPS


def test_seed_values_match_a_float32_emulation():
    """The pinned numbers are not arbitrary: every operation of the notebook in
    NumPy float32 scalars (each one correctly rounded) gives the same bits."""
    f = np.float32
    W, b, x, y, lr = f(2.3), f(1.4), f(1.0), f(3.0), f(0.1)
    for loss_ref, g_ref, w_ref, b_ref in SEED_STEPS:
        r = (x * W + b) - y
        loss = r * r
        g = f(2) * r * x
        gb = f(2) * r
        W = W - lr * g
        b = b - lr * gb
        assert (float(loss), float(g), float(W), float(b)) == (loss_ref, g_ref, w_ref, b_ref)


def test_seed_records_show_both_exact_values_and_ulps():
    case = seed_case()
    recs = verify([case], ["torch-seed"], dtypes=["float32"])
    g1 = next(r for r in recs if r.quantity == "grad_W" and r.step == 1)
    assert g1.verdict == "agree"
    assert g1.exact_written_rational == "7/5"
    assert Fraction(g1.exact_rational) == 2 * (Fraction(float(np.float32(2.3))) + Fraction(float(np.float32(1.4))) - 3)
    assert g1.exact_rational == "5872025/4194304"
    assert g1.computed == "1.3999996185302734"
    assert g1.max_ulp_error == 2.0  # two float32 spacings (2**-23) below the exact value
    assert abs(g1.ulp_error_written - 3.2) < 1e-9  # 7/5 - computed = 3.2 * 2**-23
    w1 = next(r for r in recs if r.quantity == "W" and r.step == 1)
    assert w1.computed == "2.1600000858306885"
    assert w1.exact_written_rational == "54/25"
    assert all(r.verdict == "agree" for r in recs)
