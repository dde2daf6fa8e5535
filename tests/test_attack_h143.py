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
"""

from __future__ import annotations

import textwrap

import pytest

from harness.cases import load_cases
from harness.implementations import REGISTRY
from harness.runner import verify
from harness.verdicts import run_outcome
from tests.conftest import CASES, HAND_STEP_SOURCE


@pytest.fixture(autouse=True)
def _forget_test_plugins():
    yield
    for name in [n for n in REGISTRY if n.startswith("test-h143-")]:
        REGISTRY.pop(name, None)


# The step leaves a thread that waits until its worker's main thread has left the harness's task (the task was graded
# and its records sent back), then ends the worker. The other step holds the second worker busy until that worker is
# gone, so that the death falls between two tasks, not in the middle of one, whatever the machine's speed.
LEAVES_A_KILLER = textwrap.dedent('''
    import ctypes, os, signal, sys, threading, time
    import numpy as np
    import harness

''') + HAND_STEP_SOURCE + textwrap.dedent('''

    HERE = os.path.dirname(os.path.abspath(__file__))

    def _in_task(main):
        frame = sys._current_frames().get(main)
        while frame is not None:
            if frame.f_code.co_name in ("grade_task", "grade_batch"):
                return True
            frame = frame.f_back
        return False

    def _end_when_idle(main):
        deadline = time.monotonic() + 30
        while _in_task(main) and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)  # (the result on its way to the supervisor)
        with open(os.path.join(HERE, "ended.pid"), "w") as fh:
            fh.write(str(os.getpid()))
        {death}

    @harness.implementation("test-h143-leaves-{kind}", framework="numpy")
    def leaves(X, y, W, b, *, lr, reduction, steps):
        threading.Thread(target=_end_when_idle, args=(threading.main_thread().ident,)).start()
        return _hand(X, y, W, b, lr, reduction, steps)

    @harness.implementation("test-h143-waits-{kind}", framework="numpy")
    def waits(X, y, W, b, *, lr, reduction, steps):  # correct; returns once the other worker has ended
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
    from harness.implementations.registry import load_plugin

    path = tmp_path / f"h143_between_{kind}.py"
    path.write_text(LEAVES_A_KILLER.replace("{death}", death).replace("{kind}", kind).replace("{{", "{").replace("}}", "}"))
    monkeypatch.syspath_prepend(str(tmp_path))
    load_plugin(str(path))
    case = [c for c in load_cases([CASES / "seed.toml"]).cases if c.id == "seed"]
    leaves, waits = f"test-h143-leaves-{kind}", f"test-h143-waits-{kind}"
    recs = verify(case, [leaves, waits], dtypes=["float64"], isolation="process", jobs=2, timeout=60,
                  plugins=[str(path)])
    assert (tmp_path / "ended.pid").exists()
    mine = [r for r in recs if r.implementation == leaves]
    errors = [r for r in mine if r.verdict == "error"]
    assert len(errors) == 1 and errors[0].quantity == "*", [(r.quantity, r.verdict, r.message) for r in mine]
    assert "ended after this task had finished" in errors[0].message, errors[0].message
    graded = [r for r in mine if r.verdict != "error"]
    assert graded and all(r.verdict == "agree" for r in graded)
    others = [r for r in recs if r.implementation == waits]
    assert others and all(r.verdict == "agree" for r in others), [(r.verdict, r.message) for r in others]
    assert run_outcome(recs).code == 1
