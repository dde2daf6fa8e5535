"""A thread that a step leaves running and that calls ``os._exit`` later, in a run whose steps run inline (pytest's
items, ``check --isolation inline``): it ended the whole process with status 0, every later test unrun, no results
file and nothing said (thirty-second round). The harness now ends that thread instead, and an ``error`` record names
the check whose step left it (:func:`harness.isolation.exit_call_guard`, :func:`harness.runner.left_thread_records`).

The hostile steps run in subprocesses: a guard that failed would end this test process with status 0."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from tests.conftest import ROOT

PLUGIN = textwrap.dedent('''
    import os, sys, threading, time
    from concurrent.futures import ThreadPoolExecutor
    import harness
    from harness.implementations.numpy_steps import numpy_hand

    ARMED = []
    POOL = []

    @harness.implementation("leaves-an-exit", framework="numpy")
    def leaves_an_exit(X, y, W, b, *, lr, reduction, steps):
        if not ARMED:  # the first check leaves a timer that ends the process a little later, during other checks
            ARMED.append(1)
            threading.Timer(0.05, os._exit, (0,)).start()
        return numpy_hand(X, y, W, b, lr=lr, reduction=reduction, steps=steps)

    @harness.implementation("leaves-idle-threads", framework="numpy")
    def leaves_idle_threads(X, y, W, b, *, lr, reduction, steps):
        if not POOL:  # a pool kept for later calls, and a thread that ends itself with sys.exit: both harmless
            POOL.append(ThreadPoolExecutor(2))
            POOL[0].submit(time.sleep, 0.01)
            threading.Thread(target=sys.exit, args=(0,)).start()
        return numpy_hand(X, y, W, b, lr=lr, reduction=reduction, steps=steps)
''')


def _run(args, cwd):
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})


def _records(path):
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return lines[1:-1], lines[-1]


def test_check_inline_names_the_step_whose_thread_called_os_exit(tmp_path):
    (tmp_path / "plug.py").write_text(PLUGIN)
    results = tmp_path / "r.jsonl"
    proc = _run(["-m", "harness", "check", "--plugin", "plug.py", "--implementations", "leaves-an-exit,leaves-idle-threads",
                 "--isolation", "inline", "--dtypes", "float64,float32", "--results", str(results), "--report", "none", "-q"],
                tmp_path)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]  # (0 before: the timer ended the run)
    recs, footer = _records(results)
    assert footer["completed"] is True
    errors = [r for r in recs if r["verdict"] == "error"]
    assert len(errors) == 1 and errors[0]["implementation"] == "leaves-an-exit" and errors[0]["quantity"] == "*"
    assert "called os._exit(0) from thread" in errors[0]["message"]
    # every check ran, each implementation on every case and dtype, and graded agree
    graded = {(r["case"], r["implementation"], r["dtype"]) for r in recs if r["verdict"] == "agree"}
    assert {i for _, i, _ in graded} == {"leaves-an-exit", "leaves-idle-threads"}
    assert len({(c, d) for c, i, d in graded if i == "leaves-an-exit"}) == len({(c, d) for c, i, d in graded if i != "leaves-an-exit"}) > 50
    # idle threads left running, and a thread that ended itself with sys.exit: no record says anything of them
    assert not [r for r in recs if r["implementation"] == "leaves-idle-threads" and r["verdict"] in ("error", "disagree", "suspect")]


def test_a_pytest_session_goes_on_and_fails(tmp_path):
    (tmp_path / "plug.py").write_text(PLUGIN)
    (tmp_path / "test_user.py").write_text(textwrap.dedent('''
        import time
        from plug import leaves_an_exit

        def test_a(harness_verify):
            harness_verify(leaves_an_exit, dtypes="float64")

        def test_b():
            time.sleep(0.2)

        def test_c():
            pass
    '''))
    results = tmp_path / "r.jsonl"
    proc = _run(["-m", "pytest", "-p", "no:cacheprovider", "-p", "harness.pytest_plugin", "test_user.py", "-rA",
                 "--harness-case", "seed", "--harness-results", str(results)], tmp_path)
    out = proc.stdout
    assert proc.returncode == 1, out[-3000:] + proc.stderr[-2000:]  # (0 before, test_b and test_c unrun)
    assert "PASSED test_user.py::test_b" in out and "PASSED test_user.py::test_c" in out
    assert "thread(s) that a step started called os._exit" in out
    recs, _ = _records(results)
    assert [r["case"] for r in recs if r["verdict"] == "error"] == ["seed"]
