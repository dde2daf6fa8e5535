"""torch's process-wide switches that one step can leave changed for the next (harness.frameworks.torch_switches).

Found by an attack: a plug-in step that ends with ``torch.set_grad_enabled(False)`` made the built-in
``torch-seed`` fail at ``loss.backward()`` on every later case graded in the same process: 195 ``error``
records in the quick tier, blamed on a correct implementation.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import harness
from harness.cases import case_from_arrays
from harness.frameworks import torch_switches
from tests.test_grading_contracts import _np_step


def _leaving(switch):
    def step(X, y, W, b, *, lr, reduction, steps):
        switch()
        return _np_step(X, y, W, b, lr=lr, reduction=reduction, steps=steps)
    return step


LEAVERS = {
    "grad mode off (torch.set_grad_enabled(False))": lambda: torch.set_grad_enabled(False),
    "default dtype torch.float16": lambda: torch.set_default_dtype(torch.float16),
    "deterministic algorithms on": lambda: torch.use_deterministic_algorithms(True),
    "anomaly detection on": lambda: torch.autograd.set_detect_anomaly(True),
}


@pytest.fixture(autouse=True)
def _torch_defaults():
    yield
    torch.set_grad_enabled(True)
    torch.set_default_dtype(torch.float32)
    torch.use_deterministic_algorithms(False)
    torch.autograd.set_detect_anomaly(False)


def _case():
    rng = np.random.default_rng(5)
    return case_from_arrays("switches", X=rng.standard_normal((6, 3)), y=rng.standard_normal((6, 2)),
                            W=rng.standard_normal((3, 2)), b=rng.standard_normal(2), lr=0.25, dtypes=("float64",))


@pytest.mark.parametrize("what", sorted(LEAVERS))
def test_a_switch_left_by_one_step_is_set_back_and_named_before_the_next(what):
    before = torch_switches.read()
    leaver = harness.Implementation("leaves-a-switch", "numpy", _leaving(LEAVERS[what]), kind="plugin")
    records = harness.verify([_case()], [leaver, "torch-seed"], dtypes="float64", isolation="inline")
    assert torch_switches.read() == before
    mine = [r for r in records if r.implementation == "leaves-a-switch"]
    seed = [r for r in records if r.implementation == "torch-seed"]
    assert mine and all(r.verdict == "agree" and what in r.message for r in mine)
    assert seed and all(r.verdict == "agree" and "switches" not in r.message for r in seed), [r.message for r in seed]


def test_grad_mode_left_off_no_longer_fails_the_next_torch_step():
    """The reported defect: torch-seed's loss.backward() raised after the step that turned grad mode off."""
    leaver = harness.Implementation("leaves-no-grad", "numpy", _leaving(lambda: torch.set_grad_enabled(False)), kind="plugin")
    records = harness.verify([_case()], [leaver, "torch-seed"], dtypes="float64", isolation="inline")
    assert {r.verdict for r in records if r.implementation == "torch-seed"} == {"agree"}
    assert torch.is_grad_enabled()


def test_the_callers_switches_are_what_each_step_sees_and_what_is_left():
    seen = []

    def step(X, y, W, b, *, lr, reduction, steps):
        seen.append(torch.get_default_dtype())
        return _np_step(X, y, W, b, lr=lr, reduction=reduction, steps=steps)

    torch.set_default_dtype(torch.float64)
    records = harness.verify([_case()], [harness.Implementation("reads-default", "numpy", step, kind="plugin")],
                             dtypes="float64", isolation="inline")
    assert seen == [torch.float64] and torch.get_default_dtype() == torch.float64
    assert all("switches" not in r.message for r in records)


def test_restore_names_nothing_when_nothing_changed():
    assert torch_switches.restore(torch_switches.read()) == []
