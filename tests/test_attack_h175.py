"""helper-175: three misattributions of the supervisor of worker processes (:func:`harness.isolation.run_supervised`),
found by helper-172, and a fourth the lead suspected. None turned a pass into a failure or the reverse; each gave a
correct task a wrong record or a wrong message. Every interleaving is forced by handshakes (files that pebble's
methods, wrapped in this process, or the steps' threads write), never by sleeping and hoping:

- P1: a worker that died right after it had sent a task's result, before pebble read that result, was taken for one
  that died in the middle of the task (pebble fails a task whose worker it finds dead and then drops its result): the
  finished task ran again and read "the worker process ended while this task ran". A single task's worker now also
  writes the task's records to the task's records file before it returns them (:func:`harness.runner.grade_task`), and
  the supervisor keeps them: the task ran once, and the death is a between-tasks death.
- P2: a worker that died before pebble read its acknowledgement of a task (pebble then sees no task running and breaks
  the pool) gave that task "exit code unknown": the supervisor now notes each worker's exit status as pebble finds the
  worker ended.
- P3: a worker that ended with status 0 after it had taken a task but before the task wrote its marker file left the
  task waiting for its timeout: the watchdog now also knows a task's worker from pebble's acknowledgement.
- T: a pool that broke while a task's timeout was being handled (pebble had stopped its worker) gave the task that
  worker had finished before a between-tasks record (a false alarm on a correct task).
"""

from __future__ import annotations

import textwrap
import time

import pytest

from harness.implementations import REGISTRY
from harness.runner import verify
from harness.verdicts import run_outcome
from tests.conftest import HAND_STEP_SOURCE
from tests.test_attack_h143 import _seed_with_plugin


@pytest.fixture(autouse=True)
def _forget_test_plugins():
    yield
    for name in [n for n in REGISTRY if n.startswith("test-h175-")]:
        REGISTRY.pop(name, None)


def _wait_for(path, seconds=60.0):
    deadline = time.monotonic() + seconds
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.01)


def _pebble(monkeypatch, where, *, hold_result_of=None, hold_ack=None, until=None):
    """Wrap the supervisor's pebble (in this process): ``expired`` is written once pebble has failed a task whose
    worker it found dead, ``broken`` once it has broken its pool, ``timedout`` once it has failed a task past its
    timeout. ``hold_result_of``: pebble's reading of the result of that implementation's task waits for the file
    ``until``; ``hold_ack``: its reading of the first acknowledgement, by a worker, of that implementation's task waits
    for it."""
    from pebble.pool import process

    task_start = process.TaskManager.task_start
    task_done = process.TaskManager.task_done
    broken = process.PoolManager.handle_broken_pool
    expiration = process.PoolManager.handle_worker_expiration
    held = []

    def started(self, task_id, worker_id):
        task = self.tasks.get(task_id)
        name = task.payload.args[1] if task is not None else None  # (grade_task's arguments: case, implementation, ...)
        if worker_id is not None and name == hold_ack and not held:  # (None: pebble failing a task it never gave a worker)
            held.append(task_id)
            _wait_for(where / until)
        task_start(self, task_id, worker_id)

    def done(self, task_id, result):
        value = getattr(result, "value", None)
        if (hold_result_of is not None and isinstance(value, list) and value
                and getattr(value[0], "implementation", None) == hold_result_of):
            _wait_for(where / until)
        task_done(self, task_id, result)
        if isinstance(value, TimeoutError):
            (where / "timedout").touch()

    def expired(self, expiration_):
        try:
            expiration(self, expiration_)
        finally:
            (where / "expired").touch()

    def breaks(self, error):
        broken(self, error)
        (where / "broken").touch()

    monkeypatch.setattr(process.TaskManager, "task_start", started)
    monkeypatch.setattr(process.TaskManager, "task_done", done)
    monkeypatch.setattr(process.PoolManager, "handle_broken_pool", breaks)
    monkeypatch.setattr(process.PoolManager, "handle_worker_expiration", expired)


def _one_error_beside_agreeing(recs, graded: int, implementation: str | None = None):
    """The one ``error`` record of ``recs`` (of ``implementation`` where given), the others ``graded`` records that all
    agree, and a run that fails (exit 1) on that error record alone."""
    errors = [r for r in recs if r.verdict == "error"]
    assert len(errors) == 1, [(r.implementation, r.message) for r in errors]
    assert implementation is None or errors[0].implementation == implementation, errors[0].implementation
    others = [r for r in recs if r.verdict != "error"]
    assert len(others) == graded and all(r.verdict == "agree" for r in others)
    assert run_outcome(recs).code == 1
    return errors[0]


_HEAD = textwrap.dedent('''
    import os, signal, sys, threading, time
    import numpy as np
    import harness

''') + HAND_STEP_SOURCE + textwrap.dedent('''

    HERE = os.path.dirname(os.path.abspath(__file__))

    def _wait_for(name, seconds=60):
        deadline = time.monotonic() + seconds
        while not os.path.exists(os.path.join(HERE, name)) and time.monotonic() < deadline:
            time.sleep(0.01)

    def _main_in(name, seconds=60):  # waits until the worker's main thread runs the function `name`
        main = threading.main_thread().ident
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            frame = sys._current_frames().get(main)
            while frame is not None and frame.f_code.co_name != name:
                frame = frame.f_back
            if frame is not None:
                return
            time.sleep(0.01)

    def _touch(name):
        open(os.path.join(HERE, name), "w").close()

    def _count(name):
        with open(os.path.join(HERE, name), "a") as fh:
            fh.write("x")
''')


# P1. The step leaves a thread that kills its worker once the worker's main thread waits for its next task (the result
# sent); pebble's reading of that result waits until pebble has found the worker dead and failed the task.
DIES_AFTER_ITS_RESULT = _HEAD + textwrap.dedent('''

    def _kill_once_sent():
        _main_in("fetch_task")
        _touch("killed")
        os.kill(os.getpid(), signal.SIGKILL)

    @harness.implementation("test-h175-dies-after-result", framework="numpy")
    def step(X, y, W, b, *, lr, reduction, steps):
        _count("calls")
        if not os.path.exists(os.path.join(HERE, "killed")):
            threading.Thread(target=_kill_once_sent).start()
        return _hand(X, y, W, b, lr, reduction, steps)
''')


def test_a_worker_that_dies_after_sending_its_result_keeps_the_task_records(tmp_path, monkeypatch):
    case, path = _seed_with_plugin(tmp_path, monkeypatch, "h175_after_result.py", DIES_AFTER_ITS_RESULT)
    name = "test-h175-dies-after-result"
    _pebble(monkeypatch, tmp_path, hold_result_of=name, until="expired")
    recs = verify(case, [name], dtypes=["float64"], isolation="process", jobs=1, timeout=60, plugins=[str(path)])
    assert (tmp_path / "killed").exists() and (tmp_path / "expired").exists()
    assert (tmp_path / "calls").read_text() == "x"  # (run once: "xx" before, the finished task ran again)
    error = _one_error_beside_agreeing(recs, 40)
    assert error.quantity == "*"
    assert "the worker process died after this task had finished" in error.message, error.message
    assert "this step had left a thread running" in error.message


# P2. The first step leaves a thread that kills its worker once the next task's step runs there; pebble's reading of
# that task's acknowledgement waits until pebble has broken its pool (it found the worker dead with no task running).
KILLS_BEFORE_THE_ACK = _HEAD + textwrap.dedent('''

    def _kill_in_the_next_task():
        _main_in("innocent")
        _touch("killed")
        os.kill(os.getpid(), signal.SIGKILL)

    @harness.implementation("test-h175-leaves-a-killer", framework="numpy")
    def leaves(X, y, W, b, *, lr, reduction, steps):
        threading.Thread(target=_kill_in_the_next_task).start()
        return _hand(X, y, W, b, lr, reduction, steps)

    @harness.implementation("test-h175-innocent", framework="numpy")
    def innocent(X, y, W, b, *, lr, reduction, steps):  # correct; the first time, waits to be killed
        _wait_for("killed")
        return _hand(X, y, W, b, lr, reduction, steps)
''')


def test_a_death_before_pebble_reads_the_acknowledgement_names_its_signal(tmp_path, monkeypatch):
    case, path = _seed_with_plugin(tmp_path, monkeypatch, "h175_before_ack.py", KILLS_BEFORE_THE_ACK)
    _pebble(monkeypatch, tmp_path, hold_ack="test-h175-innocent", until="broken")
    recs = verify(case, ["test-h175-leaves-a-killer", "test-h175-innocent"], dtypes=["float64"], isolation="process",
                  jobs=1, timeout=60, plugins=[str(path)])
    assert (tmp_path / "killed").exists() and (tmp_path / "broken").exists()
    error = _one_error_beside_agreeing(recs, 80, "test-h175-innocent")
    assert "exit code unknown" not in error.message, error.message
    assert "the worker process ended while this task ran (killed by signal SIGKILL" in error.message, error.message
    assert "test-h175-leaves-a-killer on case seed (cpu, float64)" in error.message


# P2 again, with another task running in the other worker: pebble, finding no task of the dead worker running, ignored
# the death; the watchdog found it 2 s later and called it "exit status 0". "leaves" returns once "other" runs (so that
# the two run in two workers and "innocent" in the worker of "leaves"); "other" runs until pebble has seen the death.
KILLS_BEFORE_THE_ACK_BESIDE_ANOTHER = KILLS_BEFORE_THE_ACK.replace(
    "threading.Thread(target=_kill_in_the_next_task).start()\n",
    "threading.Thread(target=_kill_in_the_next_task).start()\n    _wait_for(\"other.started\")\n") + textwrap.dedent('''

    @harness.implementation("test-h175-other", framework="numpy")
    def other(X, y, W, b, *, lr, reduction, steps):  # correct
        _touch("other.started")
        _wait_for("expired")
        return _hand(X, y, W, b, lr, reduction, steps)
''')


def test_a_death_before_pebble_reads_the_acknowledgement_beside_another_task_names_its_signal(tmp_path, monkeypatch):
    assert "_wait_for(\"other.started\")" in KILLS_BEFORE_THE_ACK_BESIDE_ANOTHER
    case, path = _seed_with_plugin(tmp_path, monkeypatch, "h175_before_ack_beside.py", KILLS_BEFORE_THE_ACK_BESIDE_ANOTHER)
    _pebble(monkeypatch, tmp_path, hold_ack="test-h175-innocent", until="expired")
    recs = verify(case, ["test-h175-leaves-a-killer", "test-h175-other", "test-h175-innocent"], dtypes=["float64"],
                  isolation="process", jobs=2, timeout=60, plugins=[str(path)])
    assert (tmp_path / "killed").exists() and (tmp_path / "expired").exists()
    error = _one_error_beside_agreeing(recs, 120, "test-h175-innocent")
    assert "exit status 0" not in error.message, error.message
    assert "the worker process ended while this task ran (killed by signal SIGKILL" in error.message, error.message
    assert "test-h175-leaves-a-killer on case seed (cpu, float64)" in error.message


# P3. In the worker (never in this process), the plug-in makes the first task's marker write end the worker with
# status 0: the worker has taken the task (acknowledged it) and has not yet written its pid where the watchdog looks.
EXITS_BEFORE_THE_MARKER = _HEAD + textwrap.dedent('''

    import harness.isolation as _isolation

    if _isolation.WORKER.get("is_worker"):
        _write_marker = _isolation.write_marker

        def _exits_first(marker, unit=None):
            if not os.path.exists(os.path.join(HERE, "exited")):
                _touch("exited")
                os._exit(0)
            _write_marker(marker, unit)

        _isolation.write_marker = _exits_first

    @harness.implementation("test-h175-exits-early", framework="numpy")
    def step(X, y, W, b, *, lr, reduction, steps):
        _count("calls")
        return _hand(X, y, W, b, lr, reduction, steps)
''')


def test_a_worker_that_ends_with_status_0_before_the_marker_is_found_before_the_timeout(tmp_path, monkeypatch):
    case, path = _seed_with_plugin(tmp_path, monkeypatch, "h175_before_marker.py", EXITS_BEFORE_THE_MARKER)
    recs = verify(case, ["test-h175-exits-early"], dtypes=["float64"], isolation="process", jobs=1, timeout=30,
                  plugins=[str(path)])
    assert (tmp_path / "exited").exists()
    error = _one_error_beside_agreeing(recs, 40)
    assert "ran past" not in error.message, error.message  # (before: the 30 s timeout, then no records)
    assert "the worker process ended while this task ran" in error.message, error.message
    assert "exit status 0" in error.message
    assert (tmp_path / "calls").read_text() == "x"  # (run once, alone, after the death: its records are kept)


# T. Two workers: "first" then "hangs" in one, "leaves" in the other. "hangs" runs past its timeout (pebble stops its
# worker); then "leaves"'s thread kills its own worker, idle now, so that pebble, with no task running, breaks the pool.
# The supervisor is held in on_records until then, so that it meets the timeout and the broken pool in the same turn.
TIMEOUT_AND_BREAK = _HEAD + textwrap.dedent('''

    def _kill_after_the_timeout():
        _wait_for("timedout")
        _touch("killed")
        os.kill(os.getpid(), signal.SIGKILL)

    @harness.implementation("test-h175-first", framework="numpy")
    def first(X, y, W, b, *, lr, reduction, steps):  # correct; returns once "leaves" runs in the other worker
        _wait_for("leaves.started")
        return _hand(X, y, W, b, lr, reduction, steps)

    @harness.implementation("test-h175-leaves", framework="numpy")
    def leaves(X, y, W, b, *, lr, reduction, steps):  # correct, but leaves a thread that ends its worker later
        _touch("leaves.started")
        threading.Thread(target=_kill_after_the_timeout).start()
        _wait_for("hangs.started")  # ("hangs" runs in the worker that ran "first")
        return _hand(X, y, W, b, lr, reduction, steps)

    @harness.implementation("test-h175-hangs", framework="numpy")
    def hangs(X, y, W, b, *, lr, reduction, steps):
        _touch("hangs.started")
        time.sleep(600)
''')


def test_a_pool_that_breaks_as_a_task_times_out_gives_that_workers_earlier_task_no_error(tmp_path, monkeypatch):
    case, path = _seed_with_plugin(tmp_path, monkeypatch, "h175_timeout_break.py", TIMEOUT_AND_BREAK)
    _pebble(monkeypatch, tmp_path)

    def on_records(recs):
        if recs and recs[0].implementation == "test-h175-leaves":
            _wait_for(tmp_path / "broken", 120)  # (the timeout, then the pool broken, seen in one turn)

    recs = verify(case, ["test-h175-first", "test-h175-leaves", "test-h175-hangs"], dtypes=["float64"],
                  isolation="process", jobs=2, timeout=20, plugins=[str(path)], on_records=on_records)
    assert (tmp_path / "timedout").exists() and (tmp_path / "killed").exists() and (tmp_path / "broken").exists()
    first = [r for r in recs if r.implementation == "test-h175-first"]
    assert len(first) == 40 and all(r.verdict == "agree" for r in first), \
        [r.message for r in first if r.verdict != "agree"]
    hangs = [r for r in recs if r.implementation == "test-h175-hangs"]
    assert len(hangs) == 1 and "ran past the 20 s timeout" in hangs[0].message, [r.message for r in hangs]
    errors = [r for r in recs if r.implementation == "test-h175-leaves" and r.verdict == "error"]
    assert len(errors) == 1 and "the worker process died after this task had finished" in errors[0].message, \
        [r.message for r in errors]
    assert run_outcome(recs).code == 1
