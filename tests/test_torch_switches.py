"""torch's process-wide switches that one step can leave changed for the next (harness.frameworks.torch_switches).

Found by an attack: a plug-in step that ends with ``torch.set_grad_enabled(False)`` made the built-in
``torch-seed`` fail at ``loss.backward()`` on every later case graded in the same process: 195 ``error``
records in the quick tier, blamed on a correct implementation.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import harness
from harness.cases import case_from_arrays
from harness.frameworks import torch_switches
from tests.steps import np_step as _np_step

ROOT = Path(__file__).resolve().parents[1]


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
    # entered and never left (found by my own attack): each failed or changed every later torch step in the process
    "autocast on cpu on in torch.bfloat16": lambda: torch.autocast("cpu", dtype=torch.bfloat16).__enter__(),
    "default device meta": lambda: torch.set_default_device("meta"),
    "torch function mode(s) TorchFunctionMode entered": lambda: torch.overrides.TorchFunctionMode().__enter__(),
    "torch dispatch mode(s) TorchDispatchMode entered": lambda: _dispatch_mode().__enter__(),
    "1 default saved-tensor hook pair(s) pushed": lambda: torch.autograd.graph.saved_tensors_hooks(
        lambda t: t, lambda t: t * 2).__enter__(),
}


def _dispatch_mode():
    from torch.utils._python_dispatch import TorchDispatchMode

    return TorchDispatchMode()


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


def test_autocast_left_on_no_longer_makes_correct_float32_torch_steps_disagree():
    """torch.autocast("cpu", dtype=torch.bfloat16).__enter__() in a step, never left: torch-seed and the other torch
    built-ins then computed float32 in bfloat16 (240 disagree records in the seed case, float32 and float64)."""
    leaver = harness.Implementation("leaves-autocast", "numpy",
                                    _leaving(lambda: torch.autocast("cpu", dtype=torch.bfloat16).__enter__()), kind="plugin")
    records = harness.verify([_case()], [leaver, "torch-seed"], dtypes="float32", isolation="inline")
    assert not torch.is_autocast_enabled("cpu")
    seed = [r for r in records if r.implementation == "torch-seed"]
    assert seed and all(r.verdict == "agree" for r in seed), [r.message for r in seed if r.verdict != "agree"]


def test_a_mode_the_caller_entered_is_left_on_for_every_step_and_afterwards():
    """Only what a step pushed is popped: the caller's own function mode and saved-tensor hooks stay on."""
    seen = []

    class Counting(torch.overrides.TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            return func(*args, **(kwargs or {}))

    def step(X, y, W, b, *, lr, reduction, steps):
        seen.append((torch._C._len_torch_function_stack(), torch._C._autograd._top_saved_tensors_default_hooks(True)))
        torch.overrides.TorchFunctionMode().__enter__()  # and one of its own, never left
        return _np_step(X, y, W, b, lr=lr, reduction=reduction, steps=steps)

    def pack(t):
        return t

    with Counting(), torch.autograd.graph.saved_tensors_hooks(pack, pack):
        records = harness.verify([_case()], [harness.Implementation("pushes-a-mode", "numpy", step, kind="plugin")],
                                 dtypes="float64", isolation="inline")
        assert torch._C._len_torch_function_stack() == 1
        top = torch._C._autograd._top_saved_tensors_default_hooks(True)
        assert top is not None and top[0] is pack
    assert torch._C._len_torch_function_stack() == 0 and torch._C._autograd._top_saved_tensors_default_hooks(True) is None
    assert seen and all(depth == 1 and hooks is not None and hooks[0] is pack for depth, hooks in seen)
    assert records and all(r.verdict == "agree" and "TorchFunctionMode entered and not left" in r.message for r in records)


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


def test_the_thread_count_a_step_leaves_is_set_back():
    before = torch.get_num_threads()
    leaver = harness.Implementation("leaves-threads", "numpy", _leaving(lambda: torch.set_num_threads(before + 3)), kind="plugin")
    records = harness.verify([_case()], [leaver], dtypes="float64", isolation="inline")
    assert torch.get_num_threads() == before
    assert all(f"{before + 3} intra-op threads instead of {before}" in r.message for r in records)


# ------------------------------------------------------------------ torch's intra-op threads and flush-to-zero

FRESH_PROCESS = textwrap.dedent('''
    import numpy as np, torch, harness
    from harness import StepResult
    from harness.cases import case_from_arrays
    from tests.steps import np_step as _np_step

    def starts_threads_in_ftz(X, y, W, b, *, lr, reduction, steps):
        torch.set_flush_denormal(True)  # for speed, never turned off ...
        torch.from_numpy(np.ones(64 * 32768)).mul_(2.0)  # ... before the first parallel operation of the process
        return _np_step(X.numpy(), y.numpy(), W.numpy(), b.numpy(), lr=lr, reduction=reduction, steps=steps)

    def drops_subnormals(X, y, W, b, *, lr, reduction, steps):  # WRONG: an undeclared DAZ kernel
        X = torch.where(X.abs() < torch.finfo(X.dtype).tiny, torch.zeros_like(X), X)
        return _np_step(X.numpy(), y.numpy(), W.numpy(), b.numpy(), lr=lr, reduction=reduction, steps=steps)

    n = 40_000  # torch converts the inputs in parallel: the subnormal rows go to the second thread
    rng = np.random.default_rng(7)
    X = rng.standard_normal((n, 2)).astype(np.float32).astype(np.float64)
    X[:, 0] = 0.0
    X[n // 2:, 0] = float(np.float32(3e-40))  # grad_W[0] comes from these alone
    case = case_from_arrays("big-subnormal", X=X, y=rng.standard_normal((n, 1)).astype(np.float32).astype(np.float64),
                            W=np.ones((2, 1)), b=np.zeros(1), lr=0.5, dtypes=("float32",))
    impls = [harness.Implementation("starts-threads-in-ftz", "torch", starts_threads_in_ftz, kind="plugin"),
             harness.Implementation("drops-subnormals", "torch", drops_subnormals, kind="plugin"), "torch-seed"]
    small = case_from_arrays("small-first", X=np.ones((2, 2)), y=np.ones((2, 1)), W=np.ones((2, 1)), b=np.zeros(1), lr=0.5,
                             dtypes=("float32",))  # no parallel operation of the harness's before the first step
    recs = harness.verify([small, case], impls, dtypes="float32", isolation="inline")
    recs = [r for r in recs if r.case == "big-subnormal"]
    print({(r.implementation, r.quantity): (r.verdict, r.exact) for r in recs if r.quantity in ("grad_W", "*")})
''')


def test_a_step_that_starts_torchs_threads_with_flush_to_zero_does_not_hide_a_dropped_subnormal():
    """Found by an attack: the threads inherited FTZ/DAZ, the harness then made the next step's float32 inputs (and
    its own copy of them) in those threads, the subnormal rows became 0, and the wrong step agreed (exit 0)."""
    proc = subprocess.run([sys.executable, "-c", FRESH_PROCESS], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert proc.returncode == 0, proc.stderr
    verdicts = eval(proc.stdout.strip().splitlines()[-1])  # noqa: S307 - our own child's printed dict
    verdict, exact = verdicts[("drops-subnormals", "grad_W")]
    assert exact != "0" and verdict == "suspect"  # before: exact "0", agree (within the rigorous bound of 40,000
    assert verdicts[("torch-seed", "grad_W")][0] == "agree"  # float32 underflows, above the expected one)


def test_thread_pool_flushes_sees_threads_started_with_flush_to_zero():
    script = ("import numpy as np, torch; from harness import fpenv; from harness.frameworks import torch_switches as s\n"
              "print(s.thread_pool_flushes())\n"
              "torch.set_flush_denormal(True); torch.set_num_threads(4); torch.from_numpy(np.ones(4 * 32768)).mul_(2.0)\n"
              "fpenv.restore_default(); print(s.thread_pool_flushes())\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.stdout.split() == ["False", "True"], proc.stdout + proc.stderr


def test_once_torchs_threads_flush_no_later_torch_step_is_graded(monkeypatch):
    """Where the threads cannot be reset (the probe says they flush), the step that left them so and every later
    torch step of the process are errors, not grades; NumPy steps, which the harness reads without torch, go on."""
    from harness import runner

    monkeypatch.setattr(runner, "_POOL_FLUSHES", [])
    monkeypatch.setattr(torch_switches, "thread_pool_flushes", lambda: True)
    leaver = harness.Implementation("leaves-ftz", "numpy", _leaving(lambda: torch.set_flush_denormal(True)), kind="plugin")
    records = harness.verify([_case()], [leaver, "torch-seed", "numpy-hand"], dtypes="float64", isolation="inline")
    by = {r.implementation: r for r in records}
    assert by["leaves-ftz"].verdict == "error" and "torch's intra-op threads too" in by["leaves-ftz"].message
    assert by["torch-seed"].verdict == "error" and "flush subnormals to zero since a step" in by["torch-seed"].message
    assert {r.verdict for r in records if r.implementation == "numpy-hand"} == {"agree"}
