"""The error model catches precision downgrades and overflow without false alarms."""

from __future__ import annotations

import numpy as np
import pytest

from harness.cases import case_from_arrays, load_cases
from harness.implementations import load_mutants
from harness.runner import verify
from harness.selftest import format_selftest, run_selftest
from tests.conftest import CASES
from tests.orders import normal_inputs
from tests.test_bounds_property import grade


def normal_case(n: int, d: int = 4, k: int = 2, seed: int = 0):
    rng = np.random.default_rng(seed)
    return case_from_arrays(f"normal-n{n}", rng.standard_normal((n, d)), rng.standard_normal((n, k)),
                            rng.standard_normal((d, k)), rng.standard_normal(k), lr=0.01, reduction="mean", dtypes=["float32"])


@pytest.mark.parametrize("n", [10, 1000, 100_000])
def test_tf32_rounded_inputs_are_at_least_suspect_up_to_n_100000(n):
    load_mutants()
    case = normal_case(n)
    bad = verify([case], ["mutant-tf32-inputs"], dtypes=["float32"], )
    assert {r.verdict for r in bad} & {"suspect", "disagree"}, [(r.quantity, r.verdict, r.expected_ratio) for r in bad]
    good = verify([case], ["numpy-hand", "torch-seed"], dtypes=["float32"])
    assert {r.verdict for r in good} == {"agree"}, [(r.implementation, r.quantity, r.expected_ratio) for r in good if r.verdict != "agree"]


def test_float16_sum_of_squares_above_65504_is_overflow():
    # residuals of 200: each square is 40000 (fine in float16), their sum 80000 is not
    case = case_from_arrays("f16-overflow", [[1.0], [1.0]], [[-200.0], [-200.0]], [[0.0]], [0.0], lr=0.001,
                            reduction="mean", dtypes=["float16"])
    recs = verify([case], ["numpy-hand", "torch-seed"], dtypes=["float16"])
    loss = {r.implementation: r for r in recs if r.quantity == "loss"}
    # NumPy accumulates in float16 and gets inf: the right answer for an intermediate out of range
    assert loss["numpy-hand"].verdict == "overflow"
    # PyTorch accumulates the mean in float32 and gets the exact 40000: judged normally
    assert loss["torch-seed"].verdict == "agree" and loss["torch-seed"].computed == "40000.0"
    assert all(r.verdict != "disagree" for r in recs)


def test_expected_bound_calibration_over_orders(capsys):
    """LAMBDA = 6: no correct order crosses the expected bound on generic data; report the margin."""
    from harness.floats import FORMATS, round_to_format

    rng = np.random.default_rng(11)
    worst = {}
    for name in ("float32", "float16", "bfloat16"):
        fmt = FORMATS[name]
        ratios = []
        for trial in range(4):
            inputs = normal_inputs(rng, fmt, 48, 3, 2, y_scale=10.0)
            for order in ("sequential", "reversed", "pairwise", "random"):
                for cmp in grade(fmt, inputs, float(round_to_format(np.array([0.01]), fmt)[0]), "sum", order, trial).values():
                    ratios.append(cmp.expected_ratio)
        worst[name] = max(ratios)
    with capsys.disabled():
        print("\nlargest error / expected bound over orders:", {k: f"{v:.3g}" for k, v in worst.items()})
    assert max(worst.values()) < 1.0


def test_selftest_catches_every_mutant_without_false_alarms():
    cases = load_cases([CASES / "seed.toml", CASES / "nist.toml", CASES / "selftest.toml"]).cases
    cases += load_cases([CASES / "optim.toml"], tier="quick").cases  # the optimizer mutants' cases (issue 13)
    cases += load_cases([CASES / "models.toml"], tier="quick").cases  # the model mutants' cases (issue 14)
    cases += [c for c in load_cases([CASES / "generated.toml"], tier="quick").cases  # mutant-flush-denormal's
              if c.id.startswith(("gen-grid-subnormal", "gen-grid-tiny"))]
    res = run_selftest(cases)
    report = format_selftest(res)
    assert len(res.mutants) >= 12
    assert res.passed, report
    assert "mutation score: " in report and "= 100.0%" in report
    assert "false alarms on correct implementations: 0 of" in report
