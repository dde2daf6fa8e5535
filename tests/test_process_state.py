"""Process state a step or a plug-in's import can leave changed, other than the floating-point environment
(tests/test_fpenv.py) and torch's switches (tests/test_torch_switches.py). Found by an attack (helper-40)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import harness
from harness.cases import case_from_arrays
from tests.steps import np_step as _np_step

ROOT = Path(__file__).resolve().parents[1]


def _case():
    rng = np.random.default_rng(11)
    return case_from_arrays("state", X=rng.standard_normal((5, 2)), y=rng.standard_normal((5, 1)),
                            W=rng.standard_normal((2, 1)), b=rng.standard_normal(1), lr=0.25, dtypes=("float64",))


def test_a_step_that_changes_the_working_directory_is_moved_back_and_named(tmp_path):
    """Inline, the results stream's relative path then pointed into the step's folder: the run's own file got no
    footer and an earlier run's file there was rewritten with this run's footer and the old records."""
    def step(X, y, W, b, *, lr, reduction, steps):
        os.chdir(tmp_path)
        return _np_step(X, y, W, b, lr=lr, reduction=reduction, steps=steps)

    cwd = os.getcwd()
    records = harness.verify([_case()], [harness.Implementation("moves", "numpy", step, kind="plugin")], dtypes="float64",
                             isolation="inline")
    assert os.getcwd() == cwd
    assert all(r.verdict == "agree" and f"the working directory changed to {str(tmp_path)!r}" in r.message for r in records)


@pytest.mark.filterwarnings("ignore:plug-in .* registered no implementation:RuntimeWarning")  # (the plug-in registers none on purpose)
def test_a_plugin_that_changes_the_working_directory_at_import_is_moved_back_with_a_warning(tmp_path):
    """os.chdir(os.path.dirname(__file__)) at import: relative --cases, --results and --report resolved in the
    plug-in's folder, and the user's own results file stayed as an earlier passing run left it."""
    from harness.implementations import load_plugin

    (tmp_path / "moves_plugin.py").write_text("import os\nos.chdir(os.path.dirname(os.path.abspath(__file__)))\n")
    cwd = os.getcwd()
    with pytest.warns(RuntimeWarning, match="changed the working directory"):
        load_plugin(str(tmp_path / "moves_plugin.py"))
    assert os.getcwd() == cwd


def test_an_alarm_a_step_leaves_armed_is_cancelled_and_named():
    """A step's own watchdog (signal.setitimer) never cancelled: its SIGALRM ended the process later; in a worker,
    between tasks, where pebble could not replace the worker and the whole run stopped with half its records.
    In a child process: a regression kills the child, not this test process."""
    script = textwrap.dedent('''
        import signal, time, numpy as np, harness
        from harness.cases import case_from_arrays
        from tests.steps import np_step as _np_step
        from tests.test_process_state import _case

        def step(X, y, W, b, *, lr, reduction, steps):
            signal.setitimer(signal.ITIMER_REAL, 0.3)  # SIGALRM's default action ends the process
            return _np_step(X, y, W, b, lr=lr, reduction=reduction, steps=steps)

        recs = harness.verify([_case()], [harness.Implementation("arms-alarm", "numpy", step, kind="plugin")],
                              dtypes="float64", isolation="inline")
        time.sleep(0.6)
        print(all(r.verdict == "agree" and "an alarm armed to fire in" in r.message for r in recs))
    ''')
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "True", (proc.returncode, proc.stdout, proc.stderr)


@pytest.mark.filterwarnings("ignore:plug-in .* registered no implementation:RuntimeWarning")  # (the plug-in registers none on purpose)
def test_a_plugin_that_installs_a_sigint_handler_at_import_gets_the_harness_handler_back(tmp_path):
    """Inline, a KeyboardInterrupt raised by a step was then taken for Ctrl-C: the run stopped (exit 130) at the
    first such step, instead of giving it an error record."""
    from harness.implementations import load_plugin

    (tmp_path / "ctrl_c_plugin.py").write_text(
        "import signal\nsignal.signal(signal.SIGINT, lambda signum, frame: print('saving a checkpoint'))\n")
    before = signal.getsignal(signal.SIGINT)
    try:
        with pytest.warns(RuntimeWarning, match="installed its own SIGINT"):
            load_plugin(str(tmp_path / "ctrl_c_plugin.py"))
        assert signal.getsignal(signal.SIGINT) is before
    finally:
        signal.signal(signal.SIGINT, before)


DEFERRED_EXIT = textwrap.dedent('''
    import os, threading, time, harness
    from tests.steps import np_step

    _started = []

    @harness.implementation("exits-later", framework="numpy")
    def step(X, y, W, b, *, lr, reduction, steps):
        if not _started:  # once per worker process: a thread that ends the process 0.4 s later, between tasks or not
            _started.append(1)
            threading.Thread(target=lambda: (time.sleep(0.4), os._exit(3)), daemon=True).start()
        return np_step(X, y, W, b, lr=lr, reduction=reduction, steps=steps)
''')


def test_a_worker_that_dies_between_tasks_does_not_stop_the_run(tmp_path):
    """Found by an attack (helper-40): a worker that died with no task running broke pebble's pool ('Unexpected
    error within the Pool'): the run stopped with a traceback and about half its records (3 runs of 3 before).
    Now the pool is replaced and the aborted tasks run again; a task in whose middle the worker died gets its
    error record, as before."""
    (tmp_path / "exits_later.py").write_text(DEFERRED_EXIT)
    out = tmp_path / "r.jsonl"
    proc = subprocess.run([sys.executable, "-m", "harness", "check", "--plugin", str(tmp_path / "exits_later.py"),
                           "--implementations", "exits-later,numpy-hand,torch-seed", "--jobs", "1", "--report", "none",
                           "--results", str(out), "-q"], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert "Unexpected error within the Pool" not in proc.stderr and proc.returncode in (0, 1), proc.stderr[-2000:]
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines[-1]["kind"] == "run-end" and lines[-1]["completed"] is True
    tasks: dict[str, set] = {"exits-later": set(), "numpy-hand": set(), "torch-seed": set()}
    for r in lines:
        if r.get("kind", "record") == "record":
            tasks[r["implementation"]].add((r["case"], r["dtype"]))
            assert r["verdict"] != "error" or "the worker process died" in r["message"], r["message"]
    assert tasks["exits-later"] == tasks["numpy-hand"] == tasks["torch-seed"] and len(tasks["numpy-hand"]) > 200  # all tasks


def test_a_timer_the_caller_armed_is_left_alone():
    """pytest-timeout's signal method arms the real-time timer for a whole test: a check inside it must not cancel it."""
    records = None
    signal.signal(signal.SIGALRM, lambda signum, frame: None)
    try:
        signal.setitimer(signal.ITIMER_REAL, 100.0)
        records = harness.verify([_case()], ["numpy-hand"], dtypes="float64", isolation="inline")
        assert signal.getitimer(signal.ITIMER_REAL)[0] > 50.0
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0.0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
    assert records and all(r.verdict == "agree" and "alarm" not in r.message for r in records)


def test_a_step_that_lowers_the_recursion_limit_is_set_back_and_named():
    """sys.setrecursionlimit(60) in a step: every later implementation's grading failed with RecursionError (48 error
    records blamed on torch-seed, numpy-hand and the others in the seed cases, inline)."""
    def step(X, y, W, b, *, lr, reduction, steps):
        sys.setrecursionlimit(60)
        return _np_step(X, y, W, b, lr=lr, reduction=reduction, steps=steps)

    limit = sys.getrecursionlimit()
    records = harness.verify([_case()], [harness.Implementation("lowers-limit", "numpy", step, kind="plugin"), "numpy-hand",
                                         "torch-seed"], dtypes="float64", isolation="inline")
    assert sys.getrecursionlimit() == limit
    assert records and all(r.verdict == "agree" for r in records), [r.message for r in records if r.verdict != "agree"]
    assert all(("the recursion limit changed to 60" in r.message) == (r.implementation == "lowers-limit") for r in records)


def test_a_step_that_replaces_sys_stdout_is_set_back_and_named():
    """sys.stdout = open(os.devnull, "w") to silence a noisy library, never undone: the run's summary went nowhere."""
    import io

    def step(X, y, W, b, *, lr, reduction, steps):
        sys.stdout = io.StringIO()
        return _np_step(X, y, W, b, lr=lr, reduction=reduction, steps=steps)

    out = sys.stdout
    records = harness.verify([_case()], [harness.Implementation("silences", "numpy", step, kind="plugin")], dtypes="float64",
                             isolation="inline")
    assert sys.stdout is out
    assert records and all(r.verdict == "agree" and "sys.stdout replaced by StringIO (set back)" in r.message for r in records)


CLOSES_STDOUT = textwrap.dedent('''
    import sys, harness
    from tests.steps import np_step

    @harness.implementation("closes-stdout", framework="numpy")
    def step(X, y, W, b, *, lr, reduction, steps):
        sys.stdout.close()
        return np_step(X, y, W, b, lr=lr, reduction=reduction, steps=steps)
''')


def test_a_step_that_closes_sys_stdout_does_not_fail_a_passing_run(tmp_path):
    """sys.stdout.close() in a step, inline: the run's records all passed, then printing the summary raised
    'ValueError: I/O operation on closed file' and the run exited 1. The file descriptor stays open (Python's
    standard streams do not own it), so the harness writes on through a new stream on it."""
    (tmp_path / "closes_stdout.py").write_text(CLOSES_STDOUT)
    out = tmp_path / "r.jsonl"
    proc = subprocess.run([sys.executable, "-m", "harness", "check", "--plugin", str(tmp_path / "closes_stdout.py"),
                           "--case", "seed", "--implementations", "closes-stdout,numpy-hand", "--dtypes", "float64",
                           "--isolation", "inline", "--report", "none", "--results", str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "exit 0: every graded record passes" in proc.stdout
    records = [json.loads(line) for line in out.read_text().splitlines()]
    closer = [r for r in records if r.get("implementation") == "closes-stdout"]
    assert closer and all("sys.stdout closed (reopened on file descriptor 1)" in r["message"] for r in closer)


@pytest.mark.filterwarnings("ignore:plug-in .* registered no implementation:RuntimeWarning")  # (the plug-in registers none on purpose)
def test_a_plugin_that_lowers_the_recursion_limit_at_import_is_set_back_with_a_warning(tmp_path):
    from harness.implementations import load_plugin

    (tmp_path / "limit_plugin.py").write_text("import sys\nsys.setrecursionlimit(80)\n")
    limit = sys.getrecursionlimit()
    try:
        with pytest.warns(RuntimeWarning, match="left the recursion limit changed to 80"):
            load_plugin(str(tmp_path / "limit_plugin.py"))
        assert sys.getrecursionlimit() == limit
    finally:
        sys.setrecursionlimit(limit)
