"""helper-143's attack on the supervised workers' deaths (:func:`harness.isolation.run_supervised`), the left threads of
inline steps and the pytest plug-in's xdist part files.

Found and pinned here:

- False pass: a worker that died *between* two tasks (a ``threading.Timer`` left by a step that calls ``os._exit(0)``,
  ``os._exit(3)`` or kills its process once the task has returned) vanished: pebble takes a worker that exits with
  status 0 for one that retired, and a worker that dies with another status while another worker runs a task for
  nothing (no task of its own to fail), and starts a new one. The run passed (exit 0), where the same step run inline
  is an ``error`` record (the left thread's ``os._exit``). The supervisor now notes which worker finished which task
  and, when such a worker has ended though the pool did not stop it, gives the last task it finished an ``error``
  record (:func:`harness.isolation.between_tasks_message`); the task's graded records are kept.
- False pass: inline (``check --isolation inline``, pytest's items), ``os._exit(0)`` from a thread that a step's
  thread started ended the process with status 0, the run cut short and no results footer: a thread started by a
  thread the step left (a ``Timer`` whose function starts a ``Timer``), a thread that calls ``os._exit(0)`` while the
  step still runs, and a thread started with ``_thread.start_new_thread``. Only threads alive when the step returned
  were known. A thread now inherits, as it starts, the check of the thread that starts it (the step's thread while
  the step runs, or a thread that such a check started); its ``os._exit`` ends that thread alone and is the check's
  ``error`` record.
- Misleading blame: a worker killed in the middle of a task by a thread that an earlier step had left there gave the
  innocent task an error record that could only guess ("a thread or a timer that an earlier step left in that
  worker?"). A worker's task now notes when its step left threads running (``exit_call_guard``), and the error
  record names that earlier task (:func:`harness.isolation.retried_message`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from harness.cases import load_cases
from harness.implementations import REGISTRY
from harness.runner import verify
from harness.verdicts import run_outcome
from tests.conftest import CASES, HAND_STEP_SOURCE, ROOT


@pytest.fixture(autouse=True)
def _forget_test_plugins():
    yield
    for name in [n for n in REGISTRY if n.startswith("test-h143-")]:
        REGISTRY.pop(name, None)


def _seed_with_plugin(tmp_path, monkeypatch, name, source):
    """Write ``source`` to ``tmp_path/name``, load it as a plug-in; the seed case and the plug-in's path."""
    from harness.implementations.registry import load_plugin

    path = tmp_path / name
    path.write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    load_plugin(str(path))
    return [c for c in load_cases([CASES / "seed.toml"]).cases if c.id == "seed"], path


def _note_pebble(monkeypatch, where):
    """Files in ``where`` as the supervisor's pebble (in this process) goes, for the steps' threads to wait on instead
    of sleeping: ``acknowledged-N`` once it has read the N-th acknowledgement of a task by a worker (the task then runs
    in that worker: a death is that task's), ``finished-N`` once it has read the N-th result of a task (the task runs
    nowhere), ``broken`` once it has broken its pool. With a pebble without those methods every file is there from the
    start (the waits are then not kept)."""
    from pebble.pool import process

    task_start = getattr(process.TaskManager, "task_start", None)
    task_done = getattr(process.TaskManager, "task_done", None)
    broken = getattr(process.PoolManager, "handle_broken_pool", None)
    if task_start is None or task_done is None or broken is None:  # pragma: no cover - another pebble
        for n in range(1, 9):
            (where / f"acknowledged-{n}").touch()
            (where / f"finished-{n}").touch()
        (where / "broken").touch()
        return
    counts = {"acknowledged": 0, "finished": 0}

    def note(what):
        counts[what] += 1
        (where / f"{what}-{counts[what]}").touch()

    def started(self, task_id, worker_id):
        task_start(self, task_id, worker_id)
        if worker_id is not None:  # (None: pebble failing a task it never gave a worker)
            note("acknowledged")

    def done(self, task_id, result):
        known = task_id in self.tasks  # (else the result of a task pebble had already ended: ignored)
        task_done(self, task_id, result)
        if known:
            note("finished")

    def breaks(self, error):
        broken(self, error)
        (where / "broken").touch()

    monkeypatch.setattr(process.TaskManager, "task_start", started)
    monkeypatch.setattr(process.TaskManager, "task_done", done)
    monkeypatch.setattr(process.PoolManager, "handle_broken_pool", breaks)


# The step leaves a thread that waits until its worker's main thread waits for its next task (the task was graded and
# its records sent back) and the supervisor has handed those records on (its on_records writes "handed"), then ends
# the worker. The other step holds the second worker busy until that worker is gone, so that the death falls between
# two tasks, not in the middle of one, whatever the machine's speed; the first step returns only once the second
# runs, so that the two run in two workers. (A sleep of 0.3 s stood for "handed": a supervisor held off the CPU longer
# than that let pebble see the death before it read the result, and fail the finished task as one its worker died in.)
LEAVES_A_KILLER = textwrap.dedent('''
    import ctypes, os, signal, sys, threading, time
    import numpy as np
    import harness

''') + HAND_STEP_SOURCE + textwrap.dedent('''

    HERE = os.path.dirname(os.path.abspath(__file__))

    def _waits_for_a_task(main):  # (pebble's worker loop: the task's result was sent, the next one not yet come)
        frame = sys._current_frames().get(main)
        while frame is not None:
            if frame.f_code.co_name == "fetch_task":
                return True
            frame = frame.f_back
        return False

    def _end_when_idle(main):
        deadline = time.monotonic() + 30
        while not _waits_for_a_task(main) and time.monotonic() < deadline:
            time.sleep(0.01)
        while not os.path.exists(os.path.join(HERE, "handed")) and time.monotonic() < deadline:
            time.sleep(0.01)  # (the result read by the supervisor, and the task's records handed on)
        with open(os.path.join(HERE, "ended.pid"), "w") as fh:
            fh.write(str(os.getpid()))
        {death}

    @harness.implementation("test-h143-leaves-{kind}", framework="numpy")
    def leaves(X, y, W, b, *, lr, reduction, steps):
        threading.Thread(target=_end_when_idle, args=(threading.main_thread().ident,)).start()
        # returns once the other worker runs the other task: a worker that finished this task before the other worker
        # had started took that task too, and the death then fell after the run (the CI run of 7b2d84f, whose workers
        # start faster)
        deadline = time.monotonic() + 30
        while not os.path.exists(os.path.join(HERE, "waits.started")) and time.monotonic() < deadline:
            time.sleep(0.01)
        return _hand(X, y, W, b, lr, reduction, steps)

    @harness.implementation("test-h143-waits-{kind}", framework="numpy")
    def waits(X, y, W, b, *, lr, reduction, steps):  # correct; returns once the other worker has ended
        open(os.path.join(HERE, "waits.started"), "w").close()
        path = os.path.join(HERE, "ended.pid")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                pid = int(open(path).read())
                os.kill(pid, 0)
                if open(f"/proc/{{pid}}/stat").read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                    break
            except (OSError, ValueError):
                if os.path.exists(path):
                    break
            time.sleep(0.01)
        return _hand(X, y, W, b, lr, reduction, steps)
''')


@pytest.mark.parametrize("kind, death", [
    ("exit0", "os._exit(0)"),  # pebble: a worker that retired
    ("exit3", "os._exit(3)"),  # pebble: no task of that worker to fail, another worker's task runs
    ("sigkill", "os.kill(os.getpid(), signal.SIGKILL)"),
])
def test_a_worker_that_dies_between_two_tasks_is_an_error_record(tmp_path, monkeypatch, kind, death):
    source = LEAVES_A_KILLER.replace("{death}", death).replace("{kind}", kind).replace("{{", "{").replace("}}", "}")
    case, path = _seed_with_plugin(tmp_path, monkeypatch, f"h143_between_{kind}.py", source)
    leaves, waits = f"test-h143-leaves-{kind}", f"test-h143-waits-{kind}"

    def on_records(recs):
        if recs and recs[0].implementation == leaves:
            (tmp_path / "handed").touch()

    recs = verify(case, [leaves, waits], dtypes=["float64"], isolation="process", jobs=2, timeout=60,
                  plugins=[str(path)], on_records=on_records)
    assert (tmp_path / "handed").exists() and (tmp_path / "ended.pid").exists()
    mine = [r for r in recs if r.implementation == leaves]
    errors = [r for r in mine if r.verdict == "error"]
    assert len(errors) == 1 and errors[0].quantity == "*", [(r.quantity, r.verdict, r.message) for r in mine]
    assert "the worker process died after this task had finished" in errors[0].message, errors[0].message
    assert "this step had left a thread running" in errors[0].message
    graded = [r for r in mine if r.verdict != "error"]
    assert graded and all(r.verdict == "agree" for r in graded)
    others = [r for r in recs if r.implementation == waits]
    assert others and all(r.verdict == "agree" for r in others), [(r.verdict, r.message) for r in others]
    assert run_outcome(recs).code == 1


KILLS_THE_NEXT_TASK = textwrap.dedent('''
    import os, signal, sys, threading, time
    import numpy as np
    import harness

''') + HAND_STEP_SOURCE + textwrap.dedent('''

    HERE = os.path.dirname(os.path.abspath(__file__))

    def _kill_in_the_next_task(main):  # kills its worker once the next task's step runs in it
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            frame = sys._current_frames().get(main)
            while frame is not None and frame.f_code.co_name != "innocent":
                frame = frame.f_back
            if frame is not None:
                break
            time.sleep(0.01)
        # ... and the supervisor has read that task's acknowledgement (pebble's): before that, pebble sees no task
        # running and breaks the pool, and the exit status of the worker is lost ("exit code unknown")
        while not os.path.exists(os.path.join(HERE, "acknowledged-2")) and time.monotonic() < deadline:
            time.sleep(0.01)
        open(os.path.join(HERE, "killed"), "w").close()
        os.kill(os.getpid(), signal.SIGKILL)

    @harness.implementation("test-h143-leaves-a-killer", framework="numpy")
    def leaves(X, y, W, b, *, lr, reduction, steps):
        threading.Thread(target=_kill_in_the_next_task, args=(threading.main_thread().ident,)).start()
        return _hand(X, y, W, b, lr, reduction, steps)

    @harness.implementation("test-h143-innocent", framework="numpy")
    def innocent(X, y, W, b, *, lr, reduction, steps):  # correct; the first time, waits to be killed
        if not os.path.exists(os.path.join(HERE, "killed")):
            time.sleep(30)
        return _hand(X, y, W, b, lr, reduction, steps)
''')


def test_a_task_killed_by_a_thread_an_earlier_step_left_names_that_step(tmp_path, monkeypatch):
    case, path = _seed_with_plugin(tmp_path, monkeypatch, "h143_next_task.py", KILLS_THE_NEXT_TASK)
    _note_pebble(monkeypatch, tmp_path)
    recs = verify(case, ["test-h143-leaves-a-killer", "test-h143-innocent"], dtypes=["float64"], isolation="process",
                  jobs=1, timeout=60, plugins=[str(path)])
    assert (tmp_path / "killed").exists()
    errors = [r for r in recs if r.verdict == "error"]
    assert len(errors) == 1 and errors[0].implementation == "test-h143-innocent", [(r.implementation, r.message) for r in errors]
    assert "the worker process ended while this task ran (killed by signal SIGKILL" in errors[0].message
    assert "test-h143-leaves-a-killer on case seed (cpu, float64)" in errors[0].message, errors[0].message
    assert all(r.verdict == "agree" for r in recs if r.verdict != "error")
    assert run_outcome(recs).code == 1


THREAD_STEPS = textwrap.dedent('''
    import _thread, os, threading, time
    import harness
    from harness.implementations.numpy_steps import numpy_hand

    ARMED = []
    KIND = os.environ["H143_KIND"]

    def _starts_a_timer():  # (runs in a thread the step left: the timer it starts was never the step's)
        threading.Timer(0.05, os._exit, (0,)).start()

    @harness.implementation("leaves-a-thread", framework="numpy")
    def leaves(X, y, W, b, *, lr, reduction, steps):
        if not ARMED:
            ARMED.append(1)
            if KIND == "grandchild":
                threading.Timer(0.05, _starts_a_timer).start()
            elif KIND == "during":  # ends the process while the step still runs, from another thread
                threading.Thread(target=os._exit, args=(0,)).start()
                time.sleep(0.3)
            elif KIND == "raw":
                _thread.start_new_thread(lambda: (time.sleep(0.1), os._exit(0)), ())
        return numpy_hand(X, y, W, b, lr=lr, reduction=reduction, steps=steps)
''')


@pytest.mark.parametrize("kind", ["grandchild", "during", "raw"])
def test_os_exit_from_a_thread_a_step_started_is_an_error_record_inline(tmp_path, kind):
    (tmp_path / "plug.py").write_text(THREAD_STEPS)
    results = tmp_path / "r.jsonl"
    proc = subprocess.run([sys.executable, "-m", "harness", "check", "--plugin", "plug.py", "--implementations",
                           "leaves-a-thread,numpy-hand", "--isolation", "inline", "--dtypes", "float64", "--results",
                           str(results), "--report", "none", "-q"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT), "H143_KIND": kind})
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]  # (0 before: the thread ended the run)
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    recs, footer = lines[1:-1], lines[-1]
    assert footer["kind"] == "run-end" and footer["completed"] is True
    errors = [r for r in recs if r["verdict"] == "error"]
    assert len(errors) == 1 and errors[0]["implementation"] == "leaves-a-thread", [r["message"] for r in errors]
    assert "called os._exit(0) from thread" in errors[0]["message"], errors[0]["message"]
    graded = {(r["case"], r["implementation"]) for r in recs if r["verdict"] == "agree"}
    mine = {c for c, i in graded if i == "leaves-a-thread"}
    assert mine == {c for c, i in graded if i == "numpy-hand"} and len(mine) > 10


def test_a_pytest_session_whose_step_started_a_thread_that_ended_it_goes_on_and_fails(tmp_path):
    """The same inline, in pytest's own process: a thread started by a thread that the step left ended the session with
    status 0, test_b and test_c unrun and no results file."""
    (tmp_path / "plug.py").write_text(THREAD_STEPS)
    (tmp_path / "test_user.py").write_text(textwrap.dedent('''
        import time
        from plug import leaves

        def test_a(harness_verify):
            harness_verify(leaves, dtypes="float64")

        def test_b():
            time.sleep(0.3)

        def test_c():
            pass
    '''))
    results = tmp_path / "r.jsonl"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "harness.pytest_plugin",
                           "test_user.py", "-rA", "--harness-case", "seed", "--harness-results", str(results)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "H143_KIND": "grandchild"})
    out = proc.stdout
    assert proc.returncode == 1, out[-3000:] + proc.stderr[-2000:]
    assert "PASSED test_user.py::test_b" in out and "PASSED test_user.py::test_c" in out
    assert "thread(s) that a step started called os._exit" in out
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    assert lines[-1]["completed"] is True
    assert [r["case"] for r in lines[1:-1] if r["verdict"] == "error"] == ["seed"]


# The CI run of bb953e5 (test above, sigkill): pebble saw the worker's death only once the other task had finished,
# found no task running, and broke the pool; the supervisor stopped that pool, with the other task's worker, before it
# handed that task on, then took that worker for one that had died between two tasks: the correct task got an error
# record (a false alarm). Here the supervisor is held in on_records while the other task finishes and the worker dies,
# so that it meets the broken pool and the other task's result in the same turn, whatever the machine's speed: the
# worker dies once pebble has read the other task's result, and on_records returns once pebble has broken the pool
# (sleeps of 0.5 s and 1.5 s stood for both: with pebble's reading of that result held 2 s, the death came while the
# other task still ran, the pool did not break, and the test passed without f3a22e7's fix).
DIES_AFTER_THE_OTHER_TASK = textwrap.dedent('''
    import os, signal, sys, threading, time
    import numpy as np
    import harness

''') + HAND_STEP_SOURCE + textwrap.dedent('''

    HERE = os.path.dirname(os.path.abspath(__file__))

    def _wait_for(name, seconds=30):
        deadline = time.monotonic() + seconds
        while not os.path.exists(os.path.join(HERE, name)) and time.monotonic() < deadline:
            time.sleep(0.01)

    def _end_after_the_other():
        _wait_for("other.returned")
        _wait_for("finished-2")  # (the other task graded and its result read by the pool; the supervisor held in on_records)
        open(os.path.join(HERE, "ended"), "w").close()
        os.kill(os.getpid(), signal.SIGKILL)

    @harness.implementation("test-h143-dies-after", framework="numpy")
    def dies_after(X, y, W, b, *, lr, reduction, steps):
        threading.Thread(target=_end_after_the_other).start()
        _wait_for("other.started")  # (the two tasks in two workers)
        return _hand(X, y, W, b, lr, reduction, steps)

    @harness.implementation("test-h143-other", framework="numpy")
    def other(X, y, W, b, *, lr, reduction, steps):  # correct
        open(os.path.join(HERE, "other.started"), "w").close()
        _wait_for("held")  # (the supervisor holds in on_records the records of the first task)
        open(os.path.join(HERE, "other.returned"), "w").close()
        return _hand(X, y, W, b, lr, reduction, steps)
''')


def test_a_pool_that_breaks_as_the_other_task_finishes_gives_that_task_no_error(tmp_path, monkeypatch):
    import time

    case, path = _seed_with_plugin(tmp_path, monkeypatch, "h143_dies_after.py", DIES_AFTER_THE_OTHER_TASK)

    def on_records(recs):
        if recs and recs[0].implementation == "test-h143-dies-after" and not (tmp_path / "held").exists():
            (tmp_path / "held").touch()
            deadline = time.monotonic() + 30
            while not (tmp_path / "broken").exists() and time.monotonic() < deadline:
                time.sleep(0.01)  # (pebble sees the death, with no task running, and breaks the pool)

    _note_pebble(monkeypatch, tmp_path)
    recs = verify(case, ["test-h143-dies-after", "test-h143-other"], dtypes=["float64"], isolation="process", jobs=2,
                  timeout=60, plugins=[str(path)], on_records=on_records)
    assert (tmp_path / "ended").exists() and (tmp_path / "broken").exists()
    others = [r for r in recs if r.implementation == "test-h143-other"]
    assert len(others) == 40 and all(r.verdict == "agree" for r in others), \
        [(r.quantity, r.verdict, r.message) for r in others if r.verdict != "agree"]
    mine = [r for r in recs if r.implementation == "test-h143-dies-after"]
    errors = [r for r in mine if r.verdict == "error"]
    assert len(errors) == 1 and "the worker process died after this task had finished" in errors[0].message, \
        [(r.quantity, r.verdict, r.message) for r in errors]
    assert run_outcome(recs).code == 1
