"""Isolation of the code under test: private inputs, the mutation check, sys.exit, supervised workers (issue 10)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import harness
from harness.cases import load_cases
from harness.implementations import REGISTRY
from harness.isolation import EXIT_ZERO_CODE, died_message, mutated_inputs, snapshot
from harness.runner import verify
from tests.conftest import CASES, HAND_STEP_SOURCE, ROOT

BAD_STEPS = textwrap.dedent('''
    import ctypes, os, sys, time
    import numpy as np
    import harness

''') + HAND_STEP_SOURCE + textwrap.dedent('''

    @harness.implementation("bad-sys-exit", framework="numpy")
    def sys_exit(X, y, W, b, *, lr, reduction, steps):
        sys.exit(0)

    @harness.implementation("bad-os-exit", framework="numpy")
    def os_exit(X, y, W, b, *, lr, reduction, steps):
        os._exit(0)

    @harness.implementation("bad-hang", framework="numpy")
    def hang(X, y, W, b, *, lr, reduction, steps):
        while True:
            time.sleep(1)

    @harness.implementation("bad-mutates", framework="numpy")
    def mutates(X, y, W, b, *, lr, reduction, steps):
        X[...] = 0
        return _hand(X, y, W, b, lr, reduction, steps)

    @harness.implementation("bad-segfault", framework="numpy")
    def segfault(X, y, W, b, *, lr, reduction, steps):
        ctypes.string_at(0)

    @harness.implementation("bad-native-exit", framework="numpy")
    def native_exit(X, y, W, b, *, lr, reduction, steps):
        ctypes.CDLL(None).exit(0)  # C's exit(0): no Python exception, a worker that ends with status 0
''')

CAUSES = {
    "bad-sys-exit": "called sys.exit(0)",
    "bad-os-exit": "called os._exit(0)",
    "bad-hang": "ran past the 5 s timeout",
    "bad-mutates": "mutated its input X",
    "bad-segfault": "killed by signal SIGSEGV",
    "bad-native-exit": "the worker process ended in the middle of the task with exit status 0",
}


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def _records(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()[1:] if json.loads(line)["kind"] == "record"]


def test_bad_plugins_are_error_records_and_the_run_goes_on(tmp_path):
    """The acceptance test of issue 10: six bad steps next to numpy-hand, through the CLI."""
    (tmp_path / "bad_steps.py").write_text(BAD_STEPS)
    common = ["--cases", str(CASES / "seed.toml"), "--dtypes", "float64", "--devices", "cpu", "--report", "none", "-q"]
    out = subprocess.run([sys.executable, "-m", "harness", "check", *common, "--plugin", str(tmp_path / "bad_steps.py"),
                          "--implementations", ",".join([*CAUSES, "numpy-hand"]), "--timeout", "5", "--jobs", "2",
                          "--results", str(tmp_path / "bad.jsonl")],
                         capture_output=True, text=True, env=_env(), cwd=tmp_path, timeout=240)
    # (the run ended: bad-hang's step never returns, so its 5 s timeout cut it; its record says so below)
    assert out.returncode == 1, out.stdout + out.stderr
    recs = _records(tmp_path / "bad.jsonl")
    for name, cause in CAUSES.items():
        mine = [r for r in recs if r["implementation"] == name]
        # exactly one error record per bad step and case/dtype, with the cause
        assert len(mine) == 2, (name, mine)
        assert all(r["verdict"] == "error" and r["quantity"] == "*" and cause in r["message"] for r in mine), (name, [r["message"] for r in mine])
        assert {(r["case"], r["device"], r["dtype"]) for r in mine} == {(c, "cpu", d) for c in ("seed", "seed-mean") for d in ("float64",)}
    base = subprocess.run([sys.executable, "-m", "harness", "check", *common, "--implementations", "numpy-hand",
                           "--results", str(tmp_path / "good.jsonl")], capture_output=True, text=True, env=_env(), cwd=tmp_path, timeout=240)
    assert base.returncode == 0, base.stdout + base.stderr

    def hand(rs: list[dict]) -> list[dict]:  # the repro line names the run's plug-ins: the one field that may differ
        return [{k: v for k, v in r.items() if k != "repro"} for r in rs if r["implementation"] == "numpy-hand"]

    assert hand(recs) == hand(_records(tmp_path / "good.jsonl")) and len(hand(recs)) == 2 * 8 * 5
    assert "exit 1: 12 error record(s) fail" in out.stdout


def seed_cases():
    return load_cases([CASES / "seed.toml"]).cases


@pytest.fixture(autouse=True)
def _forget_test_plugins():
    yield
    for name in [n for n in REGISTRY if n.startswith("test-iso-")]:
        REGISTRY.pop(name, None)


def _numpy_hand_fn():
    from harness.implementations import resolve

    return resolve(["numpy-hand"])[0].fn


def test_a_numpy_step_that_zeroes_X_is_an_error_and_changes_no_other_verdict():
    hand = _numpy_hand_fn()

    @harness.implementation("test-iso-zero-x", framework="numpy")
    def zero_x(X, y, W, b, *, lr, reduction, steps):
        X[...] = 0  # before the fix: graded agree, and everything after it on the case disagreed
        return hand(X, y, W, b, lr=lr, reduction=reduction, steps=steps)

    recs = verify(seed_cases(), ["test-iso-zero-x", "numpy-hand", "torch-seed"], dtypes=["float64"])
    bad = [r for r in recs if r.implementation == "test-iso-zero-x"]
    assert [(r.verdict, r.quantity) for r in bad] == [("error", "*")] * 2
    assert bad[0].message.startswith("mutated its input X:")
    others = [r for r in recs if r.implementation != "test-iso-zero-x"]
    assert len(others) == 2 * 2 * 8 * 5 and {r.verdict for r in others} == {"agree"}


def test_a_torch_step_that_updates_its_inputs_in_place_is_an_error():
    import torch

    @harness.implementation("test-iso-add-w", framework="torch")
    def add_w(X, y, W, b, *, lr, reduction, steps):
        out = []
        for _ in range(steps):
            R = X @ W + b - y
            c = 1.0 if reduction == "sum" else 1.0 / R.numel()
            gW, gb = 2 * c * (X.T @ R), 2 * c * R.sum(0)
            W.add_(gW, alpha=-lr)  # the input tensors themselves
            b.sub_(lr * gb)
            out.append(harness.StepResult(c * (R * R).sum(), gW, gb, W.clone(), b.clone()))
        return out

    recs = verify(seed_cases(), ["test-iso-add-w", "torch-seed"], dtypes=["float32"])
    bad = [r for r in recs if r.implementation == "test-iso-add-w"]
    assert len(bad) == 2 and all(r.verdict == "error" and r.message.startswith("mutated its inputs W, b:") for r in bad)
    assert {r.verdict for r in recs if r.implementation == "torch-seed"} == {"agree"}
    assert torch.get_default_dtype() == torch.float32


def test_builtin_torch_steps_do_not_mutate_their_inputs():
    from harness.implementations import resolve

    builtins = [i for i in resolve(None) if i.kind == "builtin"]  # every default built-in (not other tests' plug-ins)
    assert {"torch-seed", "torch-optim-sgd", "torch-func", "numpy-hand"} <= {i.name for i in builtins}
    recs = verify(seed_cases(), builtins, dtypes=["float64", "float32"])
    assert not [r for r in recs if "mutated" in r.message]
    assert {r.verdict for r in recs} <= {"agree", "unsupported"}


def test_mutation_check_is_bitwise():
    import torch

    inputs = {"X": np.array([[0.0, 1.0]]), "W": torch.tensor([[1.0], [2.0]], dtype=torch.float16)}
    before = snapshot(inputs)
    assert before["X"] is not inputs["X"] and mutated_inputs(inputs, before) == []
    inputs["X"][0, 0] = -0.0  # equal as numbers, not as bits
    inputs["W"][1, 0] = float("nan")
    assert mutated_inputs(inputs, before) == ["X", "W"]


def _zero_case(id: str):  # noqa: A002 - the case's id
    from harness.cases import case_from_arrays

    return case_from_arrays(id, [[0.0, 1.0], [2.0, 0.5]], [[1.0], [0.0]], [[0.5], [0.0]], [0.25], lr=0.1, reduction="mean")


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16"])
def test_a_numpy_step_that_flips_the_sign_of_a_zero_in_its_inputs_is_an_error(dtype):
    """Writing ``-0.0`` over ``0.0`` changes no value as a number: the check compares bits (in the input's own dtype
    for a NumPy array, :func:`harness.isolation.native_copies`), so it is still a mutation, in every dtype."""
    hand = _numpy_hand_fn()

    @harness.implementation("test-iso-negate-zeros", framework="numpy")
    def negate_zeros(X, y, W, b, *, lr, reduction, steps):
        out = hand(X, y, W, b, lr=lr, reduction=reduction, steps=steps)
        X[X == 0] = -0.0
        return out

    recs = verify([_zero_case("zeros")], ["test-iso-negate-zeros", "numpy-hand"], dtypes=[dtype])
    bad = [r for r in recs if r.implementation == "test-iso-negate-zeros"]
    assert [(r.verdict, r.quantity) for r in bad] == [("error", "*")]
    assert bad[0].message.startswith("mutated its input X:"), bad[0].message
    assert {r.verdict for r in recs if r.implementation == "numpy-hand"} == {"agree"}


@pytest.mark.parametrize("change", ["reshape", "flag"])
def test_a_numpy_step_that_reshapes_its_input_in_place_is_an_error(change):
    """``y.shape = ...`` keeps every bit and the object, and changes the shape: a mutation. Clearing the
    ``writeable`` flag changes no bit: not one."""
    hand = _numpy_hand_fn()

    @harness.implementation("test-iso-reshape-y", framework="numpy")
    def reshape_y(X, y, W, b, *, lr, reduction, steps):
        out = hand(X, y, W, b, lr=lr, reduction=reduction, steps=steps)
        if change == "reshape":
            y.shape = (y.size,)
        else:
            y.flags.writeable = False
        return out

    recs = verify([_zero_case("reshape")], ["test-iso-reshape-y"], dtypes=["float32"])
    if change == "reshape":
        assert [(r.verdict, r.message.split(":")[0]) for r in recs] == [("error", "mutated its input y")]
    else:
        assert {r.verdict for r in recs} == {"agree"}


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_the_mutation_check_of_numpy_inputs_sees_nan_payloads(dtype):
    """A NaN whose payload changed is a mutation (not caught as equal NaNs), and so is a signaling NaN made quiet:
    the hardware's float32-to-float64 conversion quiets it, so only the comparison in the input's own dtype sees it
    (NumPy converts float16 in software, keeping the payload)."""
    from harness.isolation import native_copies

    bits = np.dtype(f"u{np.dtype(dtype).itemsize}")
    quiet, signaling = {"float32": (0x7FC00001, 0x7F800001), "float16": (0x7E01, 0x7C01)}[dtype]
    for before_bits, after_bits in ((quiet, quiet + 1), (signaling, quiet)):
        X = np.array([[1.0, 2.0]], dtype=dtype)
        X.view(bits)[0, 1] = before_bits
        inputs = {"X": X}
        with np.errstate(invalid="ignore"):  # (the conversion of a signaling NaN raises the invalid flag)
            seen = snapshot(inputs)
        native = native_copies(inputs, seen)
        assert not np.shares_memory(native["X"], X) and mutated_inputs(inputs, seen, native=native) == []
        X.view(bits)[0, 1] = after_bits
        assert mutated_inputs(inputs, seen, native=native) == ["X"]
    with np.errstate(invalid="ignore"):
        assert mutated_inputs(inputs, seen) == ([] if dtype == "float32" else ["X"])  # (float32: the same NaN in float64)


def test_native_copies_are_for_plain_numpy_float_arrays_only():
    """A float64 array's copy is its snapshot (no second copy); a tensor, a subclass or an integer array has none
    and is compared as float64, as before."""
    import torch

    from harness.isolation import native_copies

    inputs = {"X": np.array([[1.0]]), "y": np.array([[1.0]], dtype=np.float32), "W": torch.ones(1, 1),
              "b": np.ma.masked_array([1.0]), "i": np.array([1])}
    seen = snapshot(inputs)
    native = native_copies(inputs, seen)
    assert native.keys() == {"X", "y"} and native["X"] is seen["X"] and native["y"].dtype == np.float32
    inputs["W"].mul_(-1.0)
    inputs["b"][0] = 2.0
    inputs["i"][0] = 2
    assert mutated_inputs(inputs, seen, native=native) == ["W", "b", "i"]


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_an_input_that_overflows_its_dtype_is_seen_in_its_own_dtype(dtype):
    """The inputs' finiteness is read from their NumPy copies in their own dtype (runner._not_finite): a value
    beyond the dtype's range is inf there too, an ``overflow`` record naming the input, as in float64."""
    from harness.cases import case_from_arrays

    big = 1e5 if dtype == "float16" else 1e39
    case = case_from_arrays("overflows", [[1.0], [2.0]], [[1.0], [big]], [[0.5]], [0.25], lr=0.1, reduction="mean")
    recs = verify([case], ["numpy-hand"], dtypes=[dtype])
    assert [(r.verdict, r.quantity) for r in recs] == [("overflow", "*")]
    assert recs[0].message.startswith(f"inputs y overflow {dtype}"), recs[0].message

def test_snapshot_shares_no_memory_with_float64_inputs():
    """A float64 array or CPU tensor reads as itself (no conversion): the snapshot must still be a copy, or a
    step that writes into its input would write into the harness's reference too and pass the check."""
    import torch

    inputs = {"X": np.array([[0.5, 1.0]]), "W": torch.tensor([[1.0], [2.0]], dtype=torch.float64)}
    before = snapshot(inputs)
    assert not np.shares_memory(before["X"], inputs["X"])
    assert not np.shares_memory(before["W"], inputs["W"].numpy())
    inputs["X"] *= 2.0
    inputs["W"].add_(1.0)
    assert before["X"].tolist() == [[0.5, 1.0]] and before["W"].tolist() == [[1.0], [2.0]]
    assert mutated_inputs(inputs, before) == ["X", "W"]


def test_read_result_copies_unless_told_not_to():
    import torch

    from harness.frameworks.interchange import read_result

    a = np.array([1.0, 2.0])
    t = torch.tensor([1.0, 2.0], dtype=torch.float64)
    assert not np.shares_memory(read_result(a)[0], a)
    assert not np.shares_memory(read_result(t)[0], t.numpy())
    assert read_result(a, copy=False)[0] is a  # a float64 array is read as itself where the caller allows it
    assert np.shares_memory(read_result(t, copy=False)[0], t.numpy())


def test_sys_exit_in_process_is_an_error_record():
    @harness.implementation("test-iso-exit", framework="numpy")
    def leave(X, y, W, b, *, lr, reduction, steps):
        sys.exit(3)

    recs = verify(seed_cases(), ["test-iso-exit", "numpy-hand"], dtypes=["float64"])
    bad = [r for r in recs if r.implementation == "test-iso-exit"]
    assert len(bad) == 2 and all(r.verdict == "error" and r.message.startswith("called sys.exit(3)") for r in bad)
    assert {r.verdict for r in recs if r.implementation == "numpy-hand"} == {"agree"}


def test_records_do_not_depend_on_jobs_or_on_isolation():
    cases = seed_cases()
    impls = ["numpy-hand", "torch-seed", "torch-func"]
    inline = [r.to_json() for r in verify(cases, impls, dtypes=["float32", "float16"])]
    one = [r.to_json() for r in verify(cases, impls, dtypes=["float32", "float16"], isolation="process", jobs=1)]
    two = [r.to_json() for r in verify(cases, impls, dtypes=["float32", "float16"], isolation="process", jobs=2)]
    assert one == two == inline
    assert [(r["case"], r["implementation"], r["dtype"]) for r in two][:2] == [("seed", "numpy-hand", "float32")] * 2


def test_died_messages():
    assert died_message(EXIT_ZERO_CODE) == "the worker process died: exit code 0 (os._exit?)"
    assert died_message(-11).startswith("killed by signal SIGSEGV")
    assert died_message(-9).startswith("killed by signal SIGKILL")
    assert died_message(3).startswith("the worker process died: exit code 3")


def test_sys_exit_under_pytest_fails_the_item_and_the_session_goes_on(pytester, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", _env()["PYTHONPATH"])  # this checkout's harness in the subprocess
    pytester.makepyfile(bad_plugin='''
        import sys
        import harness

        @harness.implementation("test-iso-pytest-exit", framework="numpy")
        def leave(X, y, W, b, *, lr, reduction, steps):
            sys.exit(0)
    ''')
    pytester.makepyfile(test_it=f'''
        import harness
        from harness.cases import load_cases

        CASES = [c for c in load_cases([{str(CASES / "seed.toml")!r}]).cases if c.id == "seed"]

        def test_exits(harness_verify):
            harness_verify("test-iso-pytest-exit", CASES, dtypes="float64", devices="cpu")

        def test_after():
            assert True
    ''')
    pytester.syspathinsert()
    res = pytester.runpytest_subprocess("-p", "harness.pytest_plugin", "--harness-plugin", "bad_plugin", "-q")
    res.assert_outcomes(passed=1, failed=1)
    res.stdout.fnmatch_lines(["*called sys.exit(0)*"])


def test_os_exit_under_pytest_with_process_isolation_fails_its_item_only(pytester, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", _env()["PYTHONPATH"])
    pytester.makepyfile(dying_plugin='''
        import os
        import harness

        @harness.implementation("test-iso-pytest-die", framework="numpy")
        def die(X, y, W, b, *, lr, reduction, steps):
            os._exit(0)
    ''')
    pytester.makepyfile(test_it=f'''
        from harness.cases import load_cases

        CASES = [c for c in load_cases([{str(CASES / "seed.toml")!r}]).cases if c.id == "seed"]

        def test_dies(harness_verify):
            harness_verify("test-iso-pytest-die", CASES, dtypes="float64", devices="cpu")

        def test_check(harness_check):
            recs = harness_check(CASES[0], "numpy-hand", "cpu", "float64")
            assert {{r.verdict for r in recs}} == {{"agree"}}
    ''')
    pytester.syspathinsert()
    res = pytester.runpytest_subprocess("-p", "harness.pytest_plugin", "--harness-plugin", "dying_plugin", "--harness-isolation", "process", "-q")
    res.assert_outcomes(passed=1, failed=1)
    res.stdout.fnmatch_lines(["*called os._exit(0)*"])


EXITING_STEPS = '''
import multiprocessing, os, posix
import harness
from tests.steps import np_step

@harness.implementation("test-iso-inline-os-exit", framework="numpy")
def os_exit(X, y, W, b, *, lr, reduction, steps):
    os._exit(0)

@harness.implementation("test-iso-inline-posix-exit", framework="numpy")
def posix_exit(X, y, W, b, *, lr, reduction, steps):
    posix._exit(0)

@harness.implementation("test-iso-inline-swallowed", framework="numpy")
def swallowed(X, y, W, b, *, lr, reduction, steps):
    try:
        os._exit(0)
    except BaseException:
        pass
    return np_step(X, y, W, b, lr=lr, reduction=reduction, steps=steps)

def _child():
    os._exit(7)

@harness.implementation("test-iso-inline-forks", framework="numpy")
def forks(X, y, W, b, *, lr, reduction, steps):
    p = multiprocessing.get_context("fork").Process(target=_child)
    p.start()
    p.join()
    assert p.exitcode == 7, p.exitcode  # the child ended with its own status, as without the guard
    return np_step(X, y, W, b, lr=lr, reduction=reduction, steps=steps)
'''


def test_os_exit_inline_under_pytest_fails_its_item_not_the_session(pytester, monkeypatch):
    """Found in issue 12's seventeenth round and left then: a step that called ``os._exit(0)`` in pytest's own process
    (the default, ``--harness-isolation inline``) ended the session with status 0, a green CI with nothing graded.
    Now ``os._exit`` and ``posix._exit`` raise while a step runs: its item fails with "called os._exit(0)", also where
    the step catches the exception and returns correct values, and the session goes on to exit 1. A child the step
    forks still ends with its own status (the step that checks it agrees)."""
    monkeypatch.setenv("PYTHONPATH", _env()["PYTHONPATH"])
    pytester.makepyfile(exiting_steps=EXITING_STEPS)
    pytester.makepyfile(test_it=f'''
        import os
        import pytest
        from harness.cases import load_cases

        CASES = [c for c in load_cases([{str(CASES / "seed.toml")!r}]).cases if c.id == "seed"]

        @pytest.mark.parametrize("name", ["os-exit", "posix-exit", "swallowed"])
        def test_exits(harness_verify, name):
            harness_verify("test-iso-inline-" + name, CASES, dtypes="float64", devices="cpu")

        def test_forks(harness_verify):
            harness_verify("test-iso-inline-forks", CASES, dtypes="float64", devices="cpu")

        def test_after():
            # given back after each step: outside a step os._exit ends the process (a forked child here, with status 7);
            # what stays is the watch on threads a step left running (harness.isolation._watch_left_threads)
            assert "raising" not in os._exit.__qualname__
            pid = os.fork()
            if pid == 0:
                os._exit(7)
            assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 7
    ''')
    pytester.syspathinsert()
    res = pytester.runpytest_subprocess("-p", "harness.pytest_plugin", "--harness-plugin", "exiting_steps", "-q")
    res.assert_outcomes(passed=2, failed=3)
    assert res.ret == 1
    assert len([line for line in res.stdout.lines if "called os._exit(0): a step must return its results" in line]) >= 3


def test_assert_agrees_in_a_worker_process_reports_a_crash(tmp_path):
    (tmp_path / "test_iso_crash_plugin.py").write_text(textwrap.dedent('''
        import ctypes
        import harness

        @harness.implementation("test-iso-crash", framework="numpy")
        def crash(X, y, W, b, *, lr, reduction, steps):
            ctypes.string_at(0)
    '''))
    from harness.implementations import load_plugin

    load_plugin(str(tmp_path / "test_iso_crash_plugin.py"))
    case = [c for c in seed_cases() if c.id == "seed"]
    with pytest.raises(AssertionError, match="killed by signal SIGSEGV"):
        harness.assert_agrees("test-iso-crash", case, dtypes=["float64"], isolation="process")


def test_a_batch_that_dies_or_hangs_is_run_again_task_by_task(tmp_path, monkeypatch):
    """Tasks of trusted code share a worker call (a batch per case); should one of them end the worker
    (os._exit, a segfault, C's exit(0)) or run past the batch's time, every task of the batch runs again
    on its own: each bad step gets exactly its own error record and the good ones their usual records. Here
    every implementation is treated as trusted, so that the hostile steps land in batches."""
    from harness import runner
    from harness.implementations.registry import load_plugin

    path = tmp_path / "bad_batch_steps.py"
    slow = textwrap.dedent('''

        @harness.implementation("bad-count", framework="numpy")
        def count(X, y, W, b, *, lr, reduction, steps):  # a correct step that counts its calls
            with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "calls.txt"), "a") as fh:
                fh.write("x")
            return _hand(X, y, W, b, lr, reduction, steps)

        @harness.implementation("bad-slow", framework="numpy")
        def slow(X, y, W, b, *, lr, reduction, steps):  # past its own 5 s, well within the batch's sum of limits
            time.sleep(8)
            return _hand(X, y, W, b, lr, reduction, steps)
    ''')
    path.write_text((BAD_STEPS + slow).replace('"bad-', '"test-iso-batch-'))
    monkeypatch.syspath_prepend(str(tmp_path))
    load_plugin(str(path))
    monkeypatch.setattr(runner, "trusted", lambda impl: True)
    names = ["numpy-hand", "test-iso-batch-os-exit", "test-iso-batch-segfault", "test-iso-batch-native-exit",
             "test-iso-batch-hang", "test-iso-batch-sys-exit", "torch-seed"]
    recs = verify(seed_cases(), names, dtypes=["float64"], isolation="process", jobs=2, timeout=5, plugins=[str(path)])
    for name in names[1:-1]:
        mine = [r for r in recs if r.implementation == name]
        cause = CAUSES[name.replace("test-iso-batch-", "bad-")]
        assert len(mine) == 2 and all(r.verdict == "error" and cause in r.message for r in mine), (name, [r.message for r in mine])
    good = [r.to_json() for r in recs if r.implementation in ("numpy-hand", "torch-seed")]
    alone = [r.to_json() for r in verify(seed_cases(), ["numpy-hand", "torch-seed"], dtypes=["float64"])]
    assert [{k: v for k, v in r.items() if k != "repro"} for r in good] == [{k: v for k, v in r.items() if k != "repro"} for r in alone]
    order = [(r.case, r.implementation) for r in recs]
    assert [x for j, x in enumerate(order) if j == 0 or order[j - 1] != x] == [(c, n) for c in ("seed", "seed-mean") for n in names]
    # a task graded before its batch's worker dies is handed on from the batch's records file, not run again
    recs = verify(seed_cases(), ["test-iso-batch-count", "test-iso-batch-os-exit"], dtypes=["float64"], isolation="process",
                  jobs=2, timeout=5, plugins=[str(path)])
    assert (tmp_path / "calls.txt").read_text() == "xx"  # once per case
    assert {r.verdict for r in recs if r.implementation == "test-iso-batch-count"} == {"agree"}
    assert all(r.verdict == "error" for r in recs if r.implementation == "test-iso-batch-os-exit")
    # a task past its own time limit in a batch that would otherwise end well within the sum of its tasks' limits
    recs = verify(seed_cases(), ["numpy-hand", "test-iso-batch-slow", "torch-seed"], dtypes=["float64"], isolation="process",
                  jobs=2, timeout=5, plugins=[str(path)])
    mine = [r for r in recs if r.implementation == "test-iso-batch-slow"]
    assert len(mine) == 2 and all(r.verdict == "error" and "ran past the 5 s timeout" in r.message for r in mine), mine
    good = [r.to_json() for r in recs if r.implementation in ("numpy-hand", "torch-seed")]
    assert [{k: v for k, v in r.items() if k != "repro"} for r in good] == [{k: v for k, v in r.items() if k != "repro"} for r in alone]


SIGNAL_EXIT = '''
import os, signal, sys, time
from harness.cases import load_cases
from harness.implementations.registry import Implementation
from harness.runner import check_case

def step(X, y, W, b, *, lr, reduction, steps):
    signal.signal(signal.SIGUSR1, lambda *_: os._exit(5))  # a handler that ends the process, as pebble's SIGTERM one
    os.kill(os.getpid(), signal.SIGUSR1)
    time.sleep(5)
    raise AssertionError("not reached")

case = [c for c in load_cases([sys.argv[1]]).cases if c.id == "seed"][0]
check_case(case, Implementation(name="signal-exit", fn=step, framework="numpy", kind="plugin"), "cpu", "float64")
sys.exit(0)
'''


def test_os_exit_from_a_signal_handler_still_ends_the_process(tmp_path):
    """The guard on ``os._exit`` leaves signal handlers alone: pebble's SIGTERM handler stops a worker past its timeout
    with ``os._exit`` in the thread that runs the step (a first version raised there, and a step past its 5 s timeout
    was graded: ``test_a_batch_that_dies_or_hangs_is_run_again_task_by_task``). Inline, a handler's ``os._exit(5)``
    ends the process with 5."""
    (tmp_path / "signal_exit.py").write_text(SIGNAL_EXIT)
    proc = subprocess.run([sys.executable, str(tmp_path / "signal_exit.py"), str(CASES / "seed.toml")], env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 5, (proc.returncode, proc.stderr[-2000:])


def _fork_servers(parent: int | None = None) -> set[int]:
    """The pids of the children of ``parent`` (default: this process) that run multiprocessing's fork server
    (Linux: from /proc)."""
    parent = os.getpid() if parent is None else parent
    out = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent and b"forkserver" in cmd:
            out.add(int(pid))
    return out


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table from /proc (Linux)")
def test_start_fork_server_starts_only_the_fork_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """``check`` starts the fork server before it loads its cases (its preload overlaps them); under another start
    method nothing is started, and a pool then starts its workers as before."""
    from harness.isolation import start_fork_server

    before = _fork_servers()
    monkeypatch.setenv("HARNESS_START_METHOD", "spawn")
    assert start_fork_server() is False
    assert _fork_servers() == before
    monkeypatch.delenv("HARNESS_START_METHOD")
    assert start_fork_server() is True
    servers = _fork_servers()
    assert len(servers) == 1 and servers >= before  # one server per process, started now or by an earlier pool
    assert start_fork_server() is True and _fork_servers() == servers


_ENV_PROBE = '''
import multiprocessing
import os

if multiprocessing.parent_process() is None:  # the supervisor (or an inline run), not a worker importing the plug-in
    os.environ["HARNESS_TEST_ENV_FROM"] = "supervisor"
import harness
import numpy as np


@harness.implementation("env-probe", framework="numpy", dtypes=("float64",))
def step(X, y, W, b, *, lr, reduction, steps):
    inherited = os.environ.get("HARNESS_TEST_ENV_FROM") == "supervisor"
    out = []
    for _ in range(steps):
        R = X @ W + b - y
        c = 1.0 / R.size if reduction == "mean" else 1.0
        gW, gb = 2 * c * X.T @ R, 2 * c * R.sum(axis=0)
        # right only in a worker whose environment is the supervisor's after the plug-ins loaded
        W, b = W - lr * gW * (1.0 if inherited else 3.0), b - lr * gb
        out.append(harness.StepResult(c * float((R * R).sum()), gW, gb, W, b))
    return out
'''


def _check_cli(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("HARNESS_START_METHOD", "HARNESS_TEST_"))}
    return subprocess.run([sys.executable, "-m", "harness", "check", "--cases", str(CASES / "seed.toml"), "-q", *args],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300, env={**base, **(env or {})})


def test_the_fork_server_preloads_torch_dynamo_only_for_a_run_that_may_make_a_torch_optimizer(tmp_path: Path) -> None:
    """``torch._dynamo`` (which ``torch.optim`` imports on its first optimizer, about 1.2 s) is in the fork server's
    preload unless every implementation of the run is named and of another framework. A NumPy plug-in that makes a
    torch optimizer after all imports it in its worker, and grades as in an inline run."""
    from harness.implementations import may_run_torch

    assert may_run_torch(None) is True  # every default implementation: the torch.optim ones among them
    assert may_run_torch(["numpy-hand"]) is False
    assert may_run_torch(["numpy-hand", "torch-seed"]) is True
    assert may_run_torch(["no-such-implementation"]) is True  # unknown here: counted as torch
    plugin = tmp_path / "numpy_with_optim.py"
    plugin.write_text("import multiprocessing, os, sys\nimport numpy as np\nimport harness\n" + HAND_STEP_SOURCE + textwrap.dedent('''

        @harness.implementation("numpy-with-torch-optim", framework="numpy", dtypes=("float64",))
        def step(X, y, W, b, *, lr, reduction, steps):
            import torch

            if multiprocessing.parent_process() is not None and "torch._dynamo" not in sys.modules:  # a worker, no preload
                open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "no-dynamo-preloaded"), "w").close()
            torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)  # imports torch._dynamo here, if not before
            assert "torch._dynamo" in sys.modules
            return _hand(X, y, W, b, lr, reduction, steps)
        '''))
    assert may_run_torch(["numpy-hand", "numpy-with-torch-optim"]) is True  # not loaded in this process: unknown
    for isolation in ("process", "inline"):
        proc = _check_cli(tmp_path, "--plugin", str(plugin), "--implementations", "numpy-with-torch-optim,numpy-hand",
                          "--case", "seed", "--dtypes", "float64", "--jobs", "1", "--isolation", isolation,
                          "--results", str(tmp_path / f"{isolation}.jsonl"), "--report", "none")
        assert proc.returncode == 0, (isolation, proc.stdout[-2000:], proc.stderr[-2000:])
        assert (tmp_path / "no-dynamo-preloaded").exists() is (isolation == "process")  # (inline: no worker)
        (tmp_path / "no-dynamo-preloaded").unlink(missing_ok=True)
    recs = {i: [r for r in map(json.loads, (tmp_path / f"{i}.jsonl").read_text().splitlines()) if r.get("kind") == "record"]
            for i in ("process", "inline")}
    assert {r["verdict"] for r in recs["process"]} == {"agree"}
    assert {r["implementation"] for r in recs["process"]} == {"numpy-with-torch-optim", "numpy-hand"}
    assert [(r["implementation"], r["quantity"], r["verdict"]) for r in recs["process"]] == \
        [(r["implementation"], r["quantity"], r["verdict"]) for r in recs["inline"]]


def test_workers_inherit_the_environment_the_plugins_set(tmp_path: Path) -> None:
    """``check`` starts the fork server early, but after the plug-ins load: a plug-in that sets an environment
    variable at import (``OMP_NUM_THREADS=1`` before ``import torch``, a common idiom) has it reach the server and
    every worker, as in an inline run. Started before them, the workers ran torch with other thread counts than the
    run's environment line said, and float32 records differed from an inline run's (helper-104)."""
    plugin = tmp_path / "env_probe.py"
    plugin.write_text(_ENV_PROBE)
    for isolation in ("process", "inline"):
        proc = _check_cli(tmp_path, "--plugin", str(plugin), "--implementations", "env-probe", "--isolation", isolation, "--dtypes", "float64",
                          "--results", str(tmp_path / f"{isolation}.jsonl"), "--report", "none")
        assert proc.returncode == 0, (isolation, proc.stdout[-2000:], proc.stderr[-2000:])
        recs = [json.loads(line) for line in (tmp_path / f"{isolation}.jsonl").read_text().splitlines()]
        assert {r["verdict"] for r in recs if r.get("kind") == "record"} == {"agree"}


def test_a_report_that_cannot_be_made_loses_no_record(tmp_path: Path) -> None:
    """The report's warm-up runs before the first case; where matplotlib cannot be imported (``MPLBACKEND`` naming
    no backend) the run still grades every case and keeps its completed results file, and the report's own error
    comes at the end, as before the warm-up existed (it lost the run: helper-104)."""
    results = tmp_path / "r.jsonl"
    proc = _check_cli(tmp_path, "--case", "seed", "--results", str(results), "--report", str(tmp_path / "r.html"),
                      env={"MPLBACKEND": "nosuchbackend"})
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    assert sum(r.get("kind") == "record" for r in lines) > 100
    assert lines[-1]["kind"] == "run-end" and lines[-1]["completed"] is True
    assert not (tmp_path / "r.html").exists() and "nosuchbackend" in proc.stderr, (proc.returncode, proc.stderr[-2000:])


def _ignores_sigint(pid: int) -> bool:
    """Whether process ``pid`` ignores SIGINT (Linux: the ``SigIgn`` mask of /proc/PID/status, bit SIGINT - 1); False
    once it has ended."""
    import signal

    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    mask = next((int(line.split()[1], 16) for line in status.splitlines() if line.startswith("SigIgn:")), 0)
    return bool(mask >> (signal.SIGINT - 1) & 1)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table from /proc (Linux)")
def test_ctrl_c_while_the_fork_server_preloads_prints_no_traceback(tmp_path: Path) -> None:
    """Ctrl-C reaches the whole process group, the fork server too; ``check`` starts the server before its cases load,
    so Ctrl-C in the first seconds lands in the server's preload, which printed 40 lines of ``KeyboardInterrupt``
    traceback under ``check``'s own "interrupted" (helper-104). The preload ignores SIGINT (the supervisor handles it):
    here the server alone gets it, in its preload, and the run goes on as if nothing happened. (The group's Ctrl-C
    is not sent: landing in the supervisor's own ``import torch``, it aborts in torch's C++ code at random.)"""
    import signal

    base = {k: v for k, v in os.environ.items() if not k.startswith("HARNESS_START_METHOD")}
    proc = subprocess.Popen([sys.executable, "-m", "harness", "check", "--cases", str(CASES / "seed.toml"), "--case", "seed",
                             "--dtypes", "float64", "-q", "--results", str(tmp_path / "r.jsonl"), "--report", "none"],
                            cwd=tmp_path, env=base, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not _fork_servers(proc.pid) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        servers = _fork_servers(proc.pid)
        assert servers, "the fork server never started"
        # inside its preload (about 3 s: torch, torch._dynamo, the derivations), once harness._preload ignores SIGINT:
        # before that (Python's start-up, about 0.1 s, seconds on a loaded machine: a sleep of 0.3 s stood here) no
        # code of the harness runs in the server, and a Ctrl-C kills it with Python's own traceback
        while not all(_ignores_sigint(pid) for pid in servers) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        for pid in servers:
            os.kill(pid, signal.SIGINT)
        out, err = proc.communicate(timeout=240)  # until the server, which shares the pipes, has exited too
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    assert proc.returncode == 0, (proc.returncode, out[-2000:], err[-2000:])
    recs = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert recs[-1]["kind"] == "run-end" and recs[-1]["completed"] is True and len(recs) > 50


FLAKY_STEPS = '''

@harness.implementation("bad-flaky-{kind}", framework="numpy")
def flaky(X, y, W, b, *, lr, reduction, steps):  # ends its worker the first time it runs, correct after that
    flag = os.path.join(os.path.dirname(os.path.abspath(__file__)), "crashed-{kind}")
    if not os.path.exists(flag):
        open(flag, "w").close()
        {crash}
    return _hand(X, y, W, b, lr, reduction, steps)
'''


@pytest.mark.parametrize("kind, crash, cause", [
    ("segfault", "ctypes.string_at(0)", "killed by signal SIGSEGV"),
    ("sigkill", "os.kill(os.getpid(), 9)", "killed by signal SIGKILL"),  # (os._exit itself is caught in the step)
    ("native-exit", "ctypes.CDLL(None).exit(0)", "exit status 0"),
])
@pytest.mark.parametrize("batched", [False, True])
def test_a_step_that_ends_its_worker_once_is_an_error_though_its_retry_agrees(tmp_path, monkeypatch, kind, crash, cause,
                                                                             batched):
    """A worker that dies while a task runs is run again alone (the death may be a thread or a timer an earlier step
    left in that worker); a step that crashes only some of the time then agreed on the retry and the run passed,
    with no word of the crash (thirty-third round). The retry's records are kept, and one ``error`` record says the
    worker died and how; so the run fails. Batched (trusted code in one worker call per case) the same."""
    from harness import runner
    from harness.implementations.registry import load_plugin
    from harness.verdicts import run_outcome

    name = f"test-iso-flaky-{kind}-{int(batched)}"
    path = tmp_path / f"flaky_{kind}_{int(batched)}.py"
    path.write_text("import ctypes, os\nimport numpy as np\nimport harness\n" + HAND_STEP_SOURCE
                    + FLAKY_STEPS.replace("bad-flaky-{kind}", name).format(kind=kind, crash=crash))
    monkeypatch.syspath_prepend(str(tmp_path))
    load_plugin(str(path))
    if batched:
        monkeypatch.setattr(runner, "trusted", lambda impl: True)
    case = [c for c in seed_cases() if c.id == "seed"]
    recs = verify(case, ["numpy-hand", name], dtypes=["float64"], isolation="process", jobs=1, timeout=20,
                  plugins=[str(path)])
    assert (tmp_path / f"crashed-{kind}").exists()
    mine = [r for r in recs if r.implementation == name]
    errors = [r for r in mine if r.verdict == "error"]
    assert len(errors) == 1 and errors[0].quantity == "*", [(r.quantity, r.verdict, r.message) for r in mine]
    assert "the worker process ended while this task ran" in errors[0].message and cause in errors[0].message, \
        errors[0].message
    assert "run again alone" in errors[0].message
    graded = [r for r in mine if r.verdict != "error"]
    hand = [r for r in recs if r.implementation == "numpy-hand"]
    assert [(r.quantity, r.verdict, r.computed) for r in graded] == [(r.quantity, r.verdict, r.computed) for r in hand]
    assert all(r.verdict == "agree" for r in hand)
    assert run_outcome(recs).code == 1
