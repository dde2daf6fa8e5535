"""Isolation of the code under test: private inputs, a mutation check, and supervised worker processes.

Two layers protect a run from the implementations it grades:

**In every run** (:func:`harness.runner.check_case`, whatever the entry point):

- each call gets its own, freshly made inputs (tensors or arrays; never shared with
  another implementation, another call or the harness's own float64 copies);
- the harness keeps a float64 *snapshot* of the inputs taken before the call and,
  after it, compares the inputs it handed over against it bit for bit
  (:func:`mutated_inputs`; a plain NumPy array against a copy in its own dtype,
  :func:`native_copies`): a step that wrote into them (``X[...] = 0``,
  ``W.add_(...)``) gets one ``error`` record ("mutated its input X") and is not
  graded; the oracle only ever sees the snapshot, so no other implementation's
  verdict can change;
- any ``BaseException`` raised by a step or by reading its results (``sys.exit(0)``,
  ``raise KeyboardInterrupt``, ``GeneratorExit``, a ``__str__`` or ``__array__`` that exits) is caught and becomes
  an ``error`` record ("called sys.exit(0)") instead of ending the run;
- while the step runs and its results are read, ``os._exit`` (and ``posix._exit``) raise instead of ending the
  process (:func:`exit_call_guard`), so that ``os._exit(0)`` inside pytest's process is an ``error`` record, not a
  session that ends with status 0 (a green CI); a forked child of the step exits as before. A thread that the step
  started (directly or through threads it started, while it ran or later) that calls ``os._exit`` ends alone, and its
  call is an ``error`` record of that check (:func:`_watch_left_threads`). What it cannot stop:
  ``exit(0)`` from native code (``ctypes``), ``os._exit`` from a thread no step started or from a signal
  handler, a reference to ``os._exit`` taken before the step ran, ``os.execv``, and an ``atexit`` handler that calls
  ``os._exit(0)`` (helper-67); ``--isolation process`` (the CLI's default) reports those too.

**Supervised workers** (:func:`run_supervised`; the CLI's default, ``--isolation
process``; ``harness.verify(..., isolation="process")``): each (case,
implementation, device, dtype) is one task in a :class:`pebble.ProcessPool` of
``--jobs`` worker processes, with a per-task ``timeout``. A worker that dies
(``os._exit``, a segfault, the OOM killer) or a task that runs past its timeout
becomes an ``error`` record naming the cause ("the worker process died: exit code
0 (os._exit?)", "killed by signal SIGSEGV", "ran past the 60 s timeout"); pebble
replaces the worker and the other tasks go on. A task in whose middle the worker died runs
once more, alone in a new worker (the death may be a thread or a timer that an earlier step
left there); should it finish, its records are kept beside one ``error`` record saying how
the worker ended the first time (:func:`retried_message`); a worker that ended *between* two tasks, which pebble
replaces with no word, gives the last task it finished an ``error`` record (:func:`between_tasks_message`), beside
that task's records; so does a worker that died once it had sent a task's result, before pebble read it (pebble then
fails the task and drops the result: the worker writes each task's records to the task's records file before it sends
them, and the supervisor keeps those). pebble takes a worker that exits
with status 0 for one that retired: ``os._exit(0)`` called by a step is mapped to
exit code :data:`EXIT_ZERO_CODE` while the task runs, and a watchdog (each task
writes its worker's pid to a marker file; before that, the worker that pebble saw acknowledge the task counts; the
supervisor polls twice a second) reports a worker that ended with status 0 some other way (``exit(0)`` in native
code) after :data:`WATCHDOG_GRACE` seconds, not after the timeout. Each worker's exit status is noted as pebble finds
it ended (:func:`_watch_pebble`), so that a death pebble does not report (it had not yet read the worker's
acknowledgement of its task) still names its signal or exit code. The supervisor alone decides the
exit code (:func:`harness.verdicts.run_outcome`), from the records.

Workers grade their own task (implementation call *and* exact oracle), so the
records are those of a serial in-process run, in the same order (the order of
the tasks: case, implementation, device, dtype; within a task step and
quantity). Each worker keeps the exact results of its last few cases
(:class:`harness.runner.CaseCache`); tasks are scheduled case by case, so a
case's oracle is computed at most once per worker that grades it.

Start method: ``forkserver`` where the platform has it (Linux, macOS), else
``spawn``; ``$HARNESS_START_METHOD`` overrides it. ``fork`` is the fastest but is
not the default: the parent has imported torch and may have initialised CUDA
(device discovery calls ``cudaGetDeviceCount``) and torch's OpenMP thread pool,
and a forked child of such a process cannot use CUDA ("initialization error") and
can deadlock in libgomp. The fork server is a fresh process that imports
:mod:`harness._preload` once (torch, the built-ins and the SymPy derivations, and
``torch._dynamo`` from :mod:`harness._preload_optim` unless the run has no torch
implementation: imports and pure-Python work only, single-threaded, no CUDA
context) and forks clean workers from it; it lives as long as the parent, so
later pools start in milliseconds. A ``check`` that is killed outright (SIGKILL) leaves
nothing running: the fork server exits when the parent's end of its pipe closes (each
worker closes the copy of that end it inherits), and on Linux each worker asks the kernel
(``prctl(PR_SET_PDEATHSIG, SIGKILL)``) to be killed when the fork server dies, even
in the middle of a step that hangs. Measured on the 2-core CPU-only development
box (shared, so noisy; torch 2.13): time to the first results of a new 2-worker
pool, fork 0.07 s, forkserver 3.1 s (the server's one import of torch), spawn
6.0 s (every worker imports torch). Grading every default implementation on
``cases/seed.toml`` (64 tasks) in a warm process: inline 2.7 s, one worker 3.1 s,
two workers 3.8 s (the server's preload moved 4.5 s of per-worker warm-up,
``torch._dynamo`` and SymPy, out of the workers). The whole ``check`` command on
that file: 8.7-10.4 s inline, 11.8-13.9 s with workers, with byte-identical
records for ``--isolation inline``, ``--jobs 1`` and ``--jobs 2``.
Workers keep torch's default thread count (as the parent's): the thread count
can change the summation order of float32 kernels, and ``--jobs`` must not
change the records.

A main module that cannot be imported again (a script read from stdin) is not
re-imported in the workers (they never need it: implementations are found by
name, in the plug-in modules); a script that calls ``verify(...,
isolation="process")`` needs the usual ``if __name__ == "__main__":`` guard of
any multiprocessing program.

Plug-ins reach the workers through the pool's initializer: the ``--plugin``
modules (dotted names or ``.py`` paths) are imported again in each worker, then
the ``harness.implementations`` entry points. An implementation is sent by name;
one a worker cannot find (defined inside a function, never registered at import
time) gets an ``error`` record saying so.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import queue
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn, cast

import numpy as np
import numpy.typing as npt

from .memory import keep_freed_memory

if TYPE_CHECKING:
    from .cases import Case
    from .implementations import Implementation
    from .records import Record
    from .runner import RunOptions

F64 = npt.NDArray[np.float64]

#: Seconds every task may take, before the size-dependent part (see :func:`default_timeout`).
BASE_TIMEOUT = 60.0
#: Extra seconds per million multiply-adds of one pass (N * D * K * steps) per run.
TIMEOUT_PER_MEGAFLOP = 1.0


# ------------------------------------------------------------------ in-process guards


def snapshot(inputs: Mapping[str, Any], framework: str | None = None) -> dict[str, F64]:
    """Float64 copies of the inputs (exact: every dtype the harness uses fits in float64),
    owned by the harness: they share no memory with the tensors or arrays handed to a step
    (read with ``framework``'s own reader where it registered one)."""
    from .frameworks import to_float64

    return {key: to_float64(v, framework, copy=True) for key, v in inputs.items()}


#: Arrays of at most this many bytes are compared by :func:`same_bits` as ``bytes`` (a copy of each, in C order).
_SMALL_BYTES = 4096


def same_bits(a: npt.NDArray[Any], b: npt.NDArray[Any]) -> bool:
    """Whether two arrays have the same dtype, the same shape and the same bits, element by element (``-0.0`` is not
    ``0.0``; a NaN equals a NaN of the same payload only). For float64 arrays, or arrays of another dtype of 1, 2, 4
    or 8 bytes (float32, float16, bfloat16)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.nbytes <= _SMALL_BYTES and a.dtype.itemsize in (1, 2, 4, 8) and not a.dtype.hasobject:
        # (the bytes in C order, compared at once: the same test as below, without its NumPy calls)
        return a.tobytes() == b.tobytes()
    bits = np.dtype(f"u{a.dtype.itemsize}")
    return bool(np.array_equal(np.ascontiguousarray(a).view(bits), np.ascontiguousarray(b).view(bits)))


def native_copies(inputs: Mapping[str, Any], seen: Mapping[str, F64]) -> dict[str, npt.NDArray[Any]]:
    """Bitwise copies, in their own dtype, of the inputs that are plain NumPy float arrays (``type(v) is np.ndarray``
    of float16, bfloat16, float32 or float64), taken before a call, for :func:`mutated_inputs`: comparing an input
    with its copy converts nothing and reads half the bytes (float32; a quarter for float16) of a comparison in
    float64. A float64 input's copy is its snapshot ``seen[key]`` itself (:func:`snapshot` copies float64 bit for
    bit); other inputs (tensors, other frameworks' arrays, subclasses) get none and are compared as float64.

    Args:
        inputs: the objects a call is handed, by name.
        seen: their :func:`snapshot`, taken before the call.

    Returns:
        by name, a C-contiguous array of the input's dtype and shape that shares no memory with it."""
    out: dict[str, npt.NDArray[Any]] = {}
    for key, v in inputs.items():
        if type(v) is not np.ndarray or not (v.dtype.kind == "f" or v.dtype.name == "bfloat16"):
            continue
        if v.dtype.itemsize not in (2, 4, 8):  # (long double: compared as float64, as before)
            continue
        out[key] = seen[key] if v.dtype == np.float64 else np.array(v, copy=True, order="C")
    return out


def mutated_inputs(inputs: Mapping[str, Any], before: Mapping[str, F64], framework: str | None = None,
                   native: Mapping[str, npt.NDArray[Any]] | None = None) -> list[str]:
    """The names of the inputs whose values (or shapes) differ, bit for bit, from the snapshot ``before``.

    ``native``: :func:`native_copies` of the same inputs, taken before the call. An input that has one is compared
    with it in its own dtype: it must still be a plain NumPy array of the same dtype, shape and bits, which is at
    least as strict as comparing it in float64 (the conversion to float64 is exact and one to one, but for the
    payload of a signaling NaN, which it quiets: such a change is caught here, not there). Every other input is read
    as float64 (``framework``'s reader) and compared with ``before``. An input that can no longer be read (freed,
    resized into junk) counts as mutated."""
    from .frameworks import to_float64

    changed = []
    for key, ref in before.items():
        held = native.get(key) if native is not None else None
        if held is not None:
            obj = inputs[key]
            if type(obj) is not np.ndarray or not same_bits(obj, held):
                changed.append(key)
            continue
        try:
            now = to_float64(inputs[key], framework, copy=False)
        except Exception:
            changed.append(key)
            continue
        if not same_bits(now, ref):
            changed.append(key)
    return changed


def mutation_message(names: Sequence[str], run: int = 1, runs: int = 1) -> str:
    """``"mutated its input X"`` (the message of the error record of a step that wrote into its inputs)."""
    what = f"input {names[0]}" if len(names) == 1 else "inputs " + ", ".join(names)
    when = f" (run {run} of {runs})" if runs > 1 else ""
    return (f"mutated its {what}{when}: a step must not write into the tensors or arrays it is given "
            "(clone them first, e.g. W = W.detach().clone().requires_grad_(True), or W = W.copy()); not graded")


def exit_message(exc: SystemExit) -> str:
    """``"called sys.exit(0)"``."""
    code = "" if exc.code is None else repr(exc.code)
    return f"called sys.exit({code}): a step must return its results, not end the process; not graded"


#: Whether a real SIGINT (Ctrl-C) arrived while :func:`sigint_flag` watched for one.
_SIGINT: dict[str, bool] = {"watching": False, "received": False}


@contextmanager
def sigint_flag() -> Iterator[None]:
    """While an inline step runs: note a real SIGINT before raising KeyboardInterrupt as usual, so that a
    ``KeyboardInterrupt`` *raised by the step* (``raise KeyboardInterrupt``) is told apart from Ctrl-C
    (:func:`reraise_real_interrupt`). Only in the main thread, and only over Python's default handler, or where
    SIGINT is ignored (a job started in the background): there no Ctrl-C can arrive, so every KeyboardInterrupt is
    raised by code."""
    if threading.current_thread() is not threading.main_thread() or _SIGINT["watching"]:
        yield
        return
    current = signal.getsignal(signal.SIGINT)
    if current is signal.SIG_IGN:
        _SIGINT.update(watching=True, received=False)
        try:
            yield
        finally:
            _SIGINT["watching"] = False
        return
    if current is not signal.default_int_handler:
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        _SIGINT["received"] = True
        raise KeyboardInterrupt

    _SIGINT.update(watching=True, received=False)
    old = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
        _SIGINT["watching"] = False


def reraise_real_interrupt(exc: BaseException) -> None:
    """Re-raise ``exc`` if it is a KeyboardInterrupt from a real SIGINT (or one that cannot be told apart:
    nobody was watching); any other BaseException from user code becomes that implementation's error."""
    if isinstance(exc, KeyboardInterrupt) and (_SIGINT["received"] or not _SIGINT["watching"]):
        raise exc


# ------------------------------------------------------------------ timeouts


def default_timeout(case: Case, repeat: int = 1) -> float:
    """The default ``--timeout`` of one task: 60 s, plus 1 s per million multiply-adds
    of the case (N * D * K * steps), times the number of runs (``--repeat``).

    It covers the implementation's calls and the grading (exact oracle) of the task."""
    n, d, k = case.shape
    work = n * max(d, 1) * max(k, 1) * max(case.steps, 1)
    return (BASE_TIMEOUT + TIMEOUT_PER_MEGAFLOP * work / 1e6) * max(repeat, 1)


def died_message(exitcode: int | None) -> str:
    """Plain words for the exit code of a worker that died while running a task."""
    if exitcode is None:
        return "the worker process died (exit code unknown)"
    if exitcode == EXIT_ZERO_CODE:
        exitcode = 0
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = {"SIGSEGV": " (a segmentation fault: the step or a library it called read or wrote invalid memory)",
                "SIGKILL": " (killed from outside: out of memory?)", "SIGABRT": " (abort(): a failed assertion in native code?)",
                "SIGBUS": " (a bus error: invalid memory access)", "SIGFPE": " (a native arithmetic exception)"}.get(name, "")
        return f"killed by signal {name}{hint}; the worker process died"
    return f"the worker process died: exit code {exitcode} (os._exit?)" if exitcode == 0 else \
        f"the worker process died: exit code {exitcode} (os._exit({exitcode}), or a native library ended the process?)"


# ------------------------------------------------------------------ workers


#: A worker process's state: why its plug-ins failed to load (None if they loaded), its case caches.
WORKER: dict[str, Any] = {"init_error": None, "caches": {}}
#: Exit code a worker reports for ``os._exit(0)`` called by a step: pebble takes a worker that
#: exits with 0 for one that retired normally and would leave its task running until the timeout.
EXIT_ZERO_CODE = 247
_REAL_EXIT = os._exit


def retried_message(death: str, suspect: str | None = None) -> str:
    """The message of the ``error`` record of a task whose worker died while it ran (``death``, :func:`died_message`)
    and whose run again, alone in a new worker, finished: its records are kept beside this one. ``suspect``: the
    last earlier task in that worker whose step left threads running when it returned (``"impl on case C (cpu,
    float64)"``), if any."""
    why = (f"or a thread that the step of {suspect}, run earlier in that worker, left running (it did leave one)?"
           if suspect else "or a thread or a timer that an earlier step left in that worker?")
    return (f"the worker process ended while this task ran ({death}); run again alone in a new worker, it finished "
            f"and its records are kept: a step that crashes only some of the time, {why}")


def between_tasks_message(earlier: int, left: bool) -> str:
    """The message of the ``error`` record of a task whose worker ended after the task had finished, though the pool
    did not stop it, before it ran another task (:func:`run_supervised`): the last task that worker finished whose
    step left threads running (``left``), else the last task it finished; ``earlier``: how many tasks that worker had
    finished before this one. The task's records are kept beside this one."""
    if left:
        why = "this step had left a thread running when it returned: os._exit, a signal or exit(0) in native code from it?"
    else:
        who = f"this step, or one of the {earlier} run before it in that worker," if earlier else "this step"
        why = (f"os._exit, a signal or exit(0) in native code, from a thread or a timer that {who} left running? or "
               "killed from outside")
    return (f"the worker process died after this task had finished, before it was given another one ({why}); this "
            "task's records are kept, but a step must not leave threads that end the process")


def _exit_during_task(code: int) -> NoReturn:  # pragma: no cover - runs in a worker that then ends
    _REAL_EXIT(EXIT_ZERO_CODE if code == 0 else code)


def _init_worker(plugins: Sequence[str], cwd: str, path: Sequence[str]) -> None:
    """Pool initializer: the parent's cwd and sys.path, then the built-ins, the plug-ins and the entry points.

    A failure is kept, not raised (a raising initializer would make pebble restart
    the worker forever): every task of this worker then returns an ``error`` record."""
    WORKER["is_worker"] = True  # (its steps' left threads end the worker, and the supervisor runs the task again)
    try:
        # Ctrl-C reaches the whole process group: the supervisor alone handles it (it stops the
        # pool and keeps every finished record); a worker must not die of it mid-task
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _SIGINT["watching"] = True  # ... so a KeyboardInterrupt in a worker was raised by code: an error record
        _die_with_parent()
        keep_freed_memory()  # the worker runs the checks: see harness.memory
        os.chdir(cwd)
        for p in reversed(path):
            if p not in sys.path:
                sys.path.insert(0, p)
        from .implementations import load_builtins, load_entry_points, load_plugin

        load_builtins()
        for mod in plugins:
            load_plugin(mod, warn_if_empty=False)  # the supervisor loaded the same plug-ins first, and said it once
        load_entry_points()
    except BaseException as exc:  # noqa: BLE001 - including SystemExit from a plug-in's import
        WORKER["init_error"] = f"the worker process could not load the plug-ins: {type(exc).__name__}: {exc}"


def _die_with_parent() -> None:
    """Linux: SIGKILL this worker when its parent (the fork server, or the supervisor) dies, so that
    a SIGKILLed ``check`` leaves no worker running a hanging step (prctl(PR_SET_PDEATHSIG))."""
    # the fork server exits when the supervisor's end of its "alive" pipe closes; but every child it forks
    # inherits a copy of that write end (so that the child could ask it for processes in turn), so a worker
    # kept the server alive after a SIGKILLed supervisor, and the server kept the worker: close the copy
    try:
        from multiprocessing import forkserver

        server = getattr(forkserver, "_forkserver", None)
        fd = getattr(server, "_forkserver_alive_fd", None)
        if fd is not None:
            os.close(fd)
            server._forkserver_alive_fd = None  # type: ignore[union-attr]
    except (OSError, AttributeError, ImportError):  # pragma: no cover - another multiprocessing
        pass
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):  # pragma: no cover - no prctl
        pass


#: Bytes of a batch's marker record (:func:`write_marker`), padded with spaces.
MARKER_WIDTH = 64


def write_marker(marker: str | None, unit: int | None = None) -> None:
    """First thing a task does in a worker: write the worker's pid where the supervisor's watchdog looks; in a
    batch, before each of its tasks, also the task's place in the batch and when it started (``time.monotonic``,
    a clock every process of the machine shares), so that the watchdog holds each task to its own time limit."""
    WORKER["task_marker"] = marker if unit is None else None  # (exit_call_guard notes the threads its step left)
    if marker is None:
        return
    if unit is None:
        with open(marker, "w", encoding="ascii") as fh:
            fh.write(str(os.getpid()))
        return
    held = WORKER.get("marker")  # a batch's marker stays open: one write per task, at offset 0, fixed width
    if held is None or held[0] != marker:
        if held is not None:
            os.close(held[1])
        WORKER["marker"] = held = (marker, os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644))
    os.pwrite(held[1], f"{os.getpid()} {unit} {time.monotonic()!r}".ljust(MARKER_WIDTH).encode("ascii"), 0)


def report_unit(marker: str | None, records: list[Record]) -> None:
    """In a batch, after each task: append its records to the batch's records file (``marker + ".rec"``), one
    frame each (8-byte little-endian length, then the pickle), written by one ``os.write``, so that the supervisor
    streams them as they are graded (:func:`read_units`) and keeps them if the batch is stopped later."""
    if marker is None:
        return
    path = marker + ".rec"
    held = WORKER.get("records")
    if held is None or held[0] != path:
        if held is not None:
            os.close(held[1])
        WORKER["records"] = held = (path, os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
    data = pickle.dumps(records, protocol=pickle.HIGHEST_PROTOCOL)
    frame = memoryview(len(data).to_bytes(8, "little") + data)
    while frame:  # a short write (a full disk) is finished or raises, never left as half a frame
        frame = frame[os.write(held[1], frame):]


def read_units(marker: str, offset: int) -> tuple[list[list[Record]], int]:
    """The complete frames of a batch's records file (:func:`report_unit`) from byte ``offset``, and the offset
    after the last complete one (a frame still being written is left for the next read)."""
    try:
        with open(marker + ".rec", "rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except OSError:
        return [], offset
    out: list[list[Record]] = []
    pos = 0
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos:pos + 8], "little")
        if pos + 8 + size > len(data):
            break
        try:
            out.append(pickle.loads(data[pos + 8:pos + 8 + size]))  # noqa: S301 - written by this run's own workers
        except Exception:  # noqa: BLE001 - a damaged frame: nothing more is read from it (the batch's own result,
            break  # or its unfinished tasks run again alone, give those tasks their records)
        pos += 8 + size
    return out, offset + pos


def read_marker(marker: str) -> tuple[int, int | None, float | None]:
    """``(pid, unit, started)`` from a marker file (:func:`write_marker`); raises OSError or ValueError."""
    with open(marker, encoding="ascii") as fh:
        parts = fh.read().split()
    if not parts:
        raise ValueError("empty marker")
    if len(parts) == 3:
        return int(parts[0]), int(parts[1]), float(parts[2])
    return int(parts[0]), None, None


class ExitCalled(BaseException):
    """``os._exit(code)`` called by a step while :func:`exit_call_guard` was active (a ``BaseException``, as
    ``SystemExit`` is: code that catches ``Exception`` does not swallow it)."""

    def __init__(self, code: object) -> None:
        super().__init__(code)
        self.code = code


def _in_signal_handler(frame: Any) -> bool:
    """Whether ``frame`` or a frame below it on the stack runs the code of a Python signal handler installed now."""
    handlers = set()
    for sig in signal.valid_signals():
        try:
            h = signal.getsignal(sig)
        except (ValueError, OSError):
            continue
        code = getattr(getattr(h, "__func__", h), "__code__", None)
        if code is not None:
            handlers.add(code)
    while frame is not None:
        if frame.f_code in handlers:
            return True
        frame = frame.f_back
    return False


#: Runs whose steps run in the process that reports the run (``check --isolation inline``, pytest's inline items, the
#: API): each thread a step left running when it returned, by ident: (the thread, the ``owner`` its guard was given);
#: and the calls of ``os._exit`` that threads a step started made, ``(owner, "os._exit(0) from thread 'Thread-1' ...")``.
_LEFT_THREADS: dict[int, tuple[threading.Thread, object]] = {}
_LEFT_EXITS: list[tuple[object, str]] = []
_WATCHED_PID: list[int] = []
#: The threads running a step now, under :func:`exit_call_guard` (inline), by ident: the guard's ``owner``.
_GUARDED: dict[int, object] = {}
#: The attribute in which a ``threading.Thread`` started by a step's thread, or by a thread that such a step started,
#: carries that step's ``owner`` (set as it starts, :func:`_watch_left_threads`); threads of
#: ``_thread.start_new_thread`` carry it in :data:`_RAW_OWNERS`, by ident, while they run.
_OWNER_ATTR = "_harness_step_owner"
_RAW_OWNERS: dict[int, object] = {}
_NO_OWNER = object()


def _owner_of_this_thread(step_too: bool) -> object:
    """The ``owner`` of the step that started the calling thread (directly, or through threads it started), or
    :data:`_NO_OWNER`; ``step_too``: a thread running a step now counts as started by that step."""
    ident = threading.get_ident()
    if step_too and ident in _GUARDED:
        return _GUARDED[ident]
    if ident in _RAW_OWNERS:
        return _RAW_OWNERS[ident]
    current = threading.current_thread()
    owner = getattr(current, _OWNER_ATTR, _NO_OWNER)
    if owner is not _NO_OWNER:
        return owner
    left = _LEFT_THREADS.get(ident)
    return left[1] if left is not None and left[0] is current else _NO_OWNER


def _watch_left_threads() -> None:
    """Once per process that runs steps inline: ``os._exit`` (and ``posix._exit``) called from a thread that a step
    started ends that thread (``SystemExit`` there) instead of the process, and is kept for :func:`left_thread_exits`:
    a thread the step left running (:data:`_LEFT_THREADS`), and any thread started, while it ran or later, by the
    step's thread or by a thread that the step started (``threading.Thread.start`` and ``_thread.start_new_thread``
    pass the starting thread's step on to the new thread, :func:`_owner_of_this_thread`). Any other call (the main
    thread, another thread, a forked child) runs the ``os._exit`` this replaced. A ``threading.Timer`` left by a step
    that called ``os._exit(0)`` during a later test had ended pytest's process with status 0, every test after it
    unrun and no results file written (thirty-second round); so had a timer started by such a timer, or a thread
    that ended the process while the step ran (helper-143)."""
    if _WATCHED_PID and _WATCHED_PID[0] == os.getpid():
        return
    import _thread

    posix = sys.modules.get("posix")
    previous = os._exit
    previous_posix = getattr(posix, "_exit", None) if posix is not None else None
    pid = os.getpid()

    def watched(code: object) -> NoReturn:
        owner = _owner_of_this_thread(step_too=False) if os.getpid() == pid else _NO_OWNER
        if owner is _NO_OWNER:
            previous(code)  # type: ignore[arg-type]
        name = threading.current_thread().name
        when = ("while the step still ran" if any(o is owner for o in _GUARDED.values())
                else "later in the run (after this check had been graded)")
        try:
            call = f"os._exit({code!r}) from thread {name!r} {when}"
        except Exception:  # noqa: BLE001 - a code whose __repr__ raises
            call = f"os._exit from thread {name!r} {when}"
        _LEFT_EXITS.append((owner, call))
        raise SystemExit(code)  # (ends this thread alone: threading and _thread ignore SystemExit)

    thread_start = threading.Thread.start

    def start(self: threading.Thread) -> None:
        owner = _owner_of_this_thread(step_too=True)
        if owner is not _NO_OWNER:
            try:
                setattr(self, _OWNER_ATTR, owner)
            except Exception:  # noqa: BLE001, S110 - a Thread subclass that refuses attributes: left as it was
                pass
        thread_start(self)

    raw_start = _thread.start_new_thread

    def start_new_thread(function: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any] | None = None) -> int:
        owner = _owner_of_this_thread(step_too=True)
        if owner is _NO_OWNER:
            return raw_start(function, args, *(() if kwargs is None else (kwargs,)))

        def run(*a: Any, **k: Any) -> Any:
            ident = threading.get_ident()
            _RAW_OWNERS[ident] = owner
            try:
                return function(*a, **k)
            finally:
                _RAW_OWNERS.pop(ident, None)

        return raw_start(run, args, *(() if kwargs is None else (kwargs,)))

    os._exit = watched  # type: ignore[assignment]
    if previous_posix is not None:
        setattr(posix, "_exit", watched)  # noqa: B010 - (a module known only at run time)
    threading.Thread.start = start  # type: ignore[method-assign]
    for name in ("start_new_thread", "start_new"):  # (threading itself holds its own reference to the original)
        if getattr(_thread, name, None) is raw_start:
            setattr(_thread, name, start_new_thread)
    _WATCHED_PID[:] = [pid]


def left_thread_exits() -> list[tuple[object, str]]:
    """The calls of ``os._exit`` that threads left running by earlier steps made since the last call, each with the
    ``owner`` given to the :func:`exit_call_guard` of the step that left the thread; empties the list."""
    out = list(_LEFT_EXITS)
    del _LEFT_EXITS[: len(out)]
    return out


#: How the message of an ``error`` record of such a call begins (:func:`harness.runner.left_thread_records`).
LEFT_THREAD_EXIT = "a thread that this step started, directly or through another thread,"


def is_left_thread_record(record: Record) -> bool:
    """Whether ``record`` is the ``error`` record of a left thread's ``os._exit`` (a pytest session with one fails,
    whatever its tests did with their records)."""
    return record.verdict == "error" and record.quantity == "*" and record.message.startswith(LEFT_THREAD_EXIT)


@contextmanager
def exit_call_guard(owner: object = None) -> Iterator[list[object]]:
    """While a step runs in this process (and its results are read): ``os._exit(code)`` and ``posix._exit(code)``
    raise :class:`ExitCalled` instead of ending the process; the yielded list collects the codes, so that a step
    that catches the exception is still an error (:func:`harness.runner.check_case`).

    Only the thread that runs the guard (the step's) is guarded, and not a signal handler running in it (pebble's
    SIGTERM handler stops a worker past its timeout with ``os._exit``). In a process forked by the step (``multiprocessing``
    with ``fork``) the real ``os._exit`` runs: a child ends as it would have. A call from any other thread runs the
    ``os._exit`` the guard replaced: a thread an earlier step left running must not make the step running now an
    error (helper-40's worker test). Nor is native code's ``exit(0)`` guarded. Nested guards (a worker's
    :func:`exit_status_guard`) are given back in order.

    Outside worker processes, threads the step leaves running are remembered with ``owner`` (any value: the caller's
    way to name the check later), and their calls of ``os._exit`` end only themselves (:func:`_watch_left_threads`,
    :func:`left_thread_exits`): such a thread is not the step's to run once the step has returned."""
    posix = sys.modules.get("posix")  # (imported by os on every POSIX system; absent on Windows)
    inline = not WORKER.get("is_worker")
    if inline:
        _watch_left_threads()  # (first, so that the os._exit this guard gives back is the watched one)
    threads_before = set(threading.enumerate())
    pid, tid = os.getpid(), threading.get_ident()
    codes: list[object] = []
    before = (os._exit, getattr(posix, "_exit", None) if posix is not None else None)
    outer = _GUARDED.get(tid, _NO_OWNER)
    if inline:
        _GUARDED[tid] = owner  # (the threads this step starts carry it: _watch_left_threads)

    def raising(code: object) -> NoReturn:
        if os.getpid() != pid:  # a forked child of the step: it ends as it would have
            _REAL_EXIT(code)  # type: ignore[arg-type]
        if threading.get_ident() != tid or _in_signal_handler(sys._getframe(1)):
            # another thread (perhaps one an earlier step left running), or a signal handler (pebble's SIGTERM handler
            # ends a worker past its timeout with os._exit): not this step's call
            before[0](code)  # type: ignore[arg-type]
        codes.append(code)
        raise ExitCalled(code)

    os._exit = raising  # type: ignore[assignment]
    if before[1] is not None:
        setattr(posix, "_exit", raising)  # noqa: B010 - (a module known only at run time)
    try:
        yield codes
    finally:
        os._exit = before[0]
        if before[1] is not None:
            setattr(posix, "_exit", before[1])  # noqa: B010
        if not inline and WORKER.get("task_marker"):  # a worker's task: the supervisor learns that its step left threads
            if any(t not in threads_before and t.is_alive() for t in threading.enumerate()):
                with open(WORKER["task_marker"] + ".left", "w", encoding="ascii"):
                    pass
        if inline:
            if outer is _NO_OWNER:
                _GUARDED.pop(tid, None)
            else:
                _GUARDED[tid] = outer
            for t in threading.enumerate():
                if t not in threads_before and t.ident is not None and t.is_alive():
                    _LEFT_THREADS[t.ident] = (t, owner)
            for ident, (t, _) in list(_LEFT_THREADS.items()):
                if not t.is_alive():
                    del _LEFT_THREADS[ident]


@contextmanager
def exit_status_guard() -> Iterator[None]:
    """While a task runs in a worker: ``os._exit(0)`` exits with :data:`EXIT_ZERO_CODE` instead
    (pebble's own exits, outside tasks, stay as they are)."""
    os._exit = _exit_during_task  # type: ignore[assignment]
    try:
        yield
    finally:
        os._exit = _REAL_EXIT


def cached(key: tuple[str, str], make: Callable[[], Any], keep: int = 4, replace: bool = False) -> Any:
    """A worker's cache of the exact results of its last ``keep`` cases (``replace``: a new one for ``key``)."""
    caches: dict[tuple[str, str], Any] = WORKER["caches"]
    value = caches.pop(key, None)
    if value is None or replace:
        value = make()
    caches[key] = value
    while len(caches) > keep:
        caches.pop(next(iter(caches)))
    return value


def _process_gone(pid: int) -> bool:
    """Whether process ``pid`` has ended (a zombie, not yet reaped, counts as ended)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return False


#: Seconds between two looks of the watchdog at the running tasks (and the longest wait for a finished one).
WATCH_INTERVAL = 0.25
#: The watchdog looks at the oldest ``WATCH_WINDOW * jobs + WATCH_SLACK`` pending tasks (tasks start in order).
WATCH_WINDOW = 4
WATCH_SLACK = 16
#: Seconds the watchdog waits, after a worker ended in the middle of a task, for pebble to report it.
WATCHDOG_GRACE = 2.0
#: How many times in a row, with no task finished in between, :func:`run_supervised` replaces a pool that broke
#: (a worker that died between two tasks, or a stall).
MAX_POOL_REBUILDS = 3
#: Seconds beyond the longest task's time limit with no task finished after which the pool counts as broken.
STALL_GRACE = 30.0


def _aborted(fut: Any) -> bool:
    """Whether pebble aborted ``fut`` because its pool broke (not because its own task failed)."""
    from concurrent.futures.process import BrokenProcessPool

    return bool(fut.done() and not fut.cancelled() and isinstance(fut.exception(), BrokenProcessPool))


def start_method() -> str:
    """``forkserver`` where available, else ``spawn`` (see the module docstring)."""
    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


def _context(method: str | None = None, *, torch_optim: bool = True) -> Any:
    method = method or os.environ.get("HARNESS_START_METHOD") or start_method()
    ctx = multiprocessing.get_context(method)
    if method == "forkserver":
        # imported once in the server, before anything initialises threads or CUDA; workers fork from it (the list
        # counts only when the server starts: a running server keeps its preload)
        ctx.set_forkserver_preload(["harness._preload", *(["harness._preload_optim"] if torch_optim else []), "harness.isolation"])
    return ctx


def start_fork_server(start: str | None = None, *, torch_optim: bool = True) -> bool:
    """Start the fork server now, so that its preload (:mod:`harness._preload`: torch, the built-ins, the SymPy
    derivations and the oracle's kernels, and with ``torch_optim`` ``torch._dynamo``, about 3.6 s on one core in all,
    1.2 s of it ``torch._dynamo``) runs while the caller does its own start-up (its torch import, loading the cases),
    on the other core, instead of after it. ``torch_optim=False`` (a run with no torch implementation) leaves
    ``torch._dynamo`` out: a worker that makes a torch optimizer after all imports it itself, with the same records.

    A caller about to run :func:`run_supervised` calls it as early as it can once its environment is settled: the
    server, and every worker it forks, inherit ``os.environ`` as it is at this call (``check`` calls it after loading
    the plug-ins, one of which may set ``OMP_NUM_THREADS`` at import: helper-104). The pool then finds the server
    running (or still preloading: its first worker waits for the preload, as it would anyway). Nothing is
    started under another start method (``spawn``, ``fork``, ``$HARNESS_START_METHOD``). The server exits with
    this process (see the module docstring).

    Returns:
        True when the fork server runs (or was running), False when another start method is in use.
    """
    method = start or os.environ.get("HARNESS_START_METHOD") or start_method()
    if method != "forkserver":
        return False
    from multiprocessing import forkserver

    _context(method, torch_optim=torch_optim)  # sets the preload before the server starts
    forkserver.ensure_running()
    return True


def _watch_pebble(pool: Any, exit_codes: dict[int, int | None], acked: dict[Any, int]) -> None:
    """Note, as ``pool`` (a :class:`pebble.ProcessPool`) goes, what pebble knows and then forgets: the exit status of
    each worker it finds ended (``exit_codes``, by pid; 0 included, which pebble takes for a worker that retired) and
    the worker that acknowledged each task (``acked``, by the task's future). pebble drops an ended worker's process
    object, and with it the exit status, when no task of that worker is running in its eyes (a worker that died
    before pebble read its acknowledgement of a task: "exit code unknown" before, helper-175's P2); and a worker
    that ends with status 0 after it acknowledged a task, before the task wrote its marker file, was known to nobody
    (the task waited for its timeout: P3). Both wrappers run in pebble's own threads, as the methods they wrap did;
    with another pebble (no such attributes) nothing is noted, and the supervisor knows what it knew before."""
    pool_manager = getattr(pool, "_pool_manager", None)
    manager = getattr(pool_manager, "worker_manager", None)
    inspect = getattr(manager, "inspect_workers", None)
    workers = getattr(manager, "workers", None)
    if callable(inspect) and isinstance(workers, dict):

        def inspect_workers() -> Any:
            before = dict(workers)  # (the pool manager's thread alone changes it while the pool runs)
            expired = inspect()
            for pid, proc in before.items():
                if pid not in workers:  # ended: pebble read its exit status (is_alive), which the object keeps
                    exit_codes[pid] = getattr(proc, "exitcode", None)
            return expired

        setattr(manager, "inspect_workers", inspect_workers)  # noqa: B010 - (an instance of pebble's, this pool's alone)
    task_manager = getattr(pool_manager, "task_manager", None)
    tasks = getattr(task_manager, "tasks", None)
    task_start = getattr(task_manager, "task_start", None)
    if callable(task_start) and isinstance(tasks, dict):

        def started(task_id: Any, worker_id: Any) -> Any:
            task = tasks.get(task_id)
            out = task_start(task_id, worker_id)
            if task is not None and isinstance(worker_id, int) and worker_id > 0:
                acked[task.future] = worker_id
            return out

        setattr(task_manager, "task_start", started)  # noqa: B010


class _WorkerDiedError(Exception):
    """A worker the watchdog found dead in the middle of a task."""


@dataclass(frozen=True)
class Task:
    """One unit of supervised work."""

    case: Case
    implementation: Implementation
    device: str
    dtype: str


def default_jobs() -> int:
    """Worker processes by default: the CPU cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return max(1, os.cpu_count() or 1)


def run_supervised(
    tasks: Sequence[Task],
    opts: RunOptions,
    *,
    task: Callable[..., list[Record]],
    error_record: Callable[[Case, Implementation, str, str, RunOptions, str], Record],
    plugins: Sequence[str] = (),
    jobs: int | None = None,
    timeout: float | Callable[[Case], float] | None = None,
    progress: Callable[[int, int, str], None] | None = None,
    start: str | None = None,
    on_records: Callable[[list[Record]], None] | None = None,
    batch_task: Callable[..., int] | None = None,
    batchable: Callable[[Task], bool] | None = None,
) -> list[Record]:
    """Run ``tasks`` in supervised worker processes; one list of records, in task order.

    Args:
        tasks: what to run (see :class:`Task`).
        opts: the run's options (sent to every task).
        task: the module-level function a worker runs, ``task(case, implementation_name,
            device, dtype, opts, marker)`` (:func:`harness.runner.grade_task`).
        error_record: ``error_record(case, implementation, device, dtype, opts, message)``,
            the record of a task whose worker died or ran past its timeout.
        plugins: modules or ``.py`` paths each worker imports (``--plugin``).
        jobs: worker processes (default :func:`default_jobs`, never more than the tasks).
        timeout: seconds per task, a function of the case, or None for :func:`default_timeout`.
        progress: ``progress(done, total, label)`` as tasks finish.
        start: the multiprocessing start method (default :func:`start_method`; ``$HARNESS_START_METHOD``).
        on_records: called with each task's records as soon as the task is done (in
            completion order; the tasks of a running batch within a quarter of a second), e.g. to stream them
            to a results file.
        batch_task: ``batch_task(units, opts, marker)`` with ``units`` a list of ``(case, implementation_name,
            device, dtype)``: runs them in one worker call, writes each unit's records with :func:`report_unit`
            as it ends and returns the number of units run (:func:`harness.runner.grade_batch`). With ``batchable``, consecutive tasks of one case that
            ``batchable`` accepts (trusted code: the harness's own built-ins) go to a worker as one batch: one
            worker's caches for the whole case. The worker writes each task's records as the task ends
            (:func:`report_unit`), which the supervisor streams; the watchdog holds each task of a batch to its
            own time limit (its place and start in the marker file, :func:`write_marker`). A batch whose worker
            dies, or whose task runs past its limit, has its unfinished tasks run again one by one, so that every
            task still gets its own records or its own error record.

    Returns:
        the records of every task, in task order; a task whose worker died or ran
        past its timeout has one ``error`` record saying so; a task after which its worker died, before it was given
        another, has its records and one ``error`` record (:func:`between_tasks_message`).

    On ``KeyboardInterrupt`` (SIGINT) the pending tasks are cancelled, the workers
    stopped, and the exception propagates; every finished task was already passed
    to ``on_records``, those of the batches still running included (their workers write each
    task's records as it ends, :func:`report_unit`).
    """
    from pebble import ProcessExpired, ProcessPool

    if not tasks:
        return []
    n_jobs = max(1, min(jobs or default_jobs(), len(tasks)))

    def limit(case: Case) -> float:
        if timeout is None:
            return default_timeout(case, getattr(opts, "repeat", 1))
        return float(timeout(case) if callable(timeout) else timeout)

    results: list[list[Record] | None] = [None] * len(tasks)
    died: dict[int, str] = {}
    batch_timeouts: set[int] = set()  # the batches in died stopped for a task past its time limit (not a death)
    markers = tempfile.mkdtemp(prefix="harness-tasks-")
    main = sys.modules.get("__main__")
    hidden_main = None
    main_file = getattr(main, "__file__", None)
    if (main is not None and getattr(getattr(main, "__spec__", None), "name", None) is None
            and isinstance(main_file, str) and not os.path.isfile(main_file)):
        # e.g. "<stdin>": a worker would try to run it again, fail, and be restarted forever
        hidden_main = main_file
        del main.__file__
    # SIGINT must not raise KeyboardInterrupt at an arbitrary point: raised while a future's or the
    # queue's lock is held, it can leave the lock held, and pebble's threads then deadlock on it.
    # The handler only notes it; the loop raises it between two waits.
    interrupted: list[int] = []
    old_handler: Any = None
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        old_handler = signal.signal(signal.SIGINT, lambda signum, frame: interrupted.append(signum))
    exit_codes: dict[int, int | None] = {}  # each worker pebble found ended, by pid: its exit status (_watch_pebble)
    acked: dict[Any, int] = {}  # each task's future: the worker pebble saw acknowledge it

    def new_pool() -> Any:
        made = ProcessPool(max_workers=n_jobs, initializer=_init_worker, initargs=(list(plugins), os.getcwd(), list(sys.path)),
                           context=_context(start))
        _watch_pebble(made, exit_codes, acked)
        return made

    pool = new_pool()
    rebuilds = 0  # breaks of the pool in a row with no task finished in between
    done_at_break = -1
    # batches: runs of consecutive batchable tasks of one case (by identity), else single tasks
    batches: list[list[int]] = []
    for i, t in enumerate(tasks):
        if (batch_task is not None and batchable is not None and batchable(t) and batches and len(batches[-1]) > 0
                and batchable(tasks[batches[-1][-1]]) and tasks[batches[-1][-1]].case is t.case):
            batches[-1].append(i)
        else:
            batches.append([i])
    try:
        futures: dict[Any, int] = {}  # future -> batch number
        future_of: dict[int, Any] = {}  # batch number -> its (latest) future
        order: list[Any] = []
        # each finished future lands here (its done callback): waiting costs O(1) per task, where
        # concurrent.futures.wait over every pending future costs O(pending) per call
        done_queue: queue.SimpleQueue[Any] = queue.SimpleQueue()

        def submit(b: int) -> None:
            members = batches[b]
            marker = os.path.join(markers, f"{b}.pid")
            if len(members) == 1:
                t = tasks[members[0]]
                fut = pool.schedule(task, args=(t.case, t.implementation.name, t.device, t.dtype, opts, marker),
                                    timeout=limit(t.case))
            else:
                assert batch_task is not None
                units = [(tasks[i].case, tasks[i].implementation.name, tasks[i].device, tasks[i].dtype) for i in members]
                fut = pool.schedule(cast(Callable[..., Any], batch_task), args=(units, opts, marker), timeout=sum(limit(tasks[i].case) for i in members))
            futures[fut] = b
            future_of[b] = fut
            order.append(fut)
            fut.add_done_callback(done_queue.put)

        for b in range(len(batches)):
            submit(b)
        pending = set(futures)
        done_count = 0
        streamed: dict[int, tuple[int, int]] = {}  # batch -> (its tasks handed on so far, offset in its records file)

        def hand_on(i: int, recs: list[Record]) -> None:
            nonlocal done_count
            results[i] = recs
            if on_records is not None:
                on_records(list(recs))
            done_count += 1
            if progress:
                t = tasks[i]
                progress(done_count, len(tasks), f"{t.case.id} {t.implementation.name} {t.device} {t.dtype}")

        def harvest(b: int) -> int:
            """Hand on the tasks of batch ``b`` whose records its worker has written; the number handed on."""
            count, offset = streamed.get(b, (0, 0))
            before = count
            got, offset = read_units(os.path.join(markers, f"{b}.pid"), offset)
            for recs in got:
                if count < len(batches[b]):
                    hand_on(batches[b][count], recs)
                    count += 1
            streamed[b] = (count, offset)
            worked(b, batches[b][before:count])
            return count

        def reads_back(b: int) -> bool:
            """Whether the records that batch ``b`` wrote to its records file may be handed on from there: a batch's,
            and a single task's, but for a task run again after a death (its records come with an error record)."""
            return len(batches[b]) > 1 or batches[b][0] not in first_death

        # each worker (by pid) that finished tasks, and which (in order), so that a worker that ends between two tasks,
        # which pebble replaces with no word (status 0: a worker that retired; another status while no task of its
        # own runs: nothing to fail), is not lost: the last task it finished gets an error record (between_tasks_message)
        worker_tasks: dict[int, list[tuple[int, bool]]] = {}  # (a task, whether its step left threads running)
        ended: set[int] = set()  # workers whose end is accounted for: stopped by the pool, or ended in a task
        gone_at: dict[int, float] = {}

        def worker_of(b: int) -> int | None:
            try:
                return read_marker(os.path.join(markers, f"{b}.pid"))[0] or None
            except (OSError, ValueError):  # no marker yet: the worker that pebble saw take the batch, if any
                return acked.get(future_of.get(b))

        def worked(b: int, members: list[int]) -> None:
            pid = worker_of(b) if members else None
            if pid is not None and pid not in ended:
                left = len(members) == 1 and os.path.exists(os.path.join(markers, f"{b}.pid.left"))
                worker_tasks.setdefault(pid, []).extend((i, left) for i in members)

        def suspect_of(pid: int | None) -> str | None:
            """The last task of worker ``pid`` whose step left threads running (for a task that worker died in the
            middle of: what :func:`retried_message` names), or None."""
            left = [at for at, was_left in worker_tasks.get(pid, []) if was_left] if pid is not None else []
            if not left:
                return None
            t = tasks[left[-1]]
            return f"{t.implementation.name} on case {t.case.id} ({t.device}, {t.dtype})"

        def worker_ended(pid: int | None) -> None:
            if pid is not None:
                ended.add(pid)
                worker_tasks.pop(pid, None)

        def ended_between_tasks(now: float, busy: set[int], final: bool) -> None:
            for pid, done_here in list(worker_tasks.items()):
                if pid in busy or not _process_gone(pid):
                    continue
                if not final and now - gone_at.setdefault(pid, now) <= WATCHDOG_GRACE:
                    continue  # (pebble may yet report it: a task it had taken and not yet marked)
                worker_ended(pid)
                suspects = [at for at, (_, left) in enumerate(done_here) if left]
                at = suspects[-1] if suspects else len(done_here) - 1
                i = done_here[at][0]
                t = tasks[i]
                rec = error_record(t.case, t.implementation, t.device, t.dtype, opts, between_tasks_message(at, bool(suspects)))
                results[i] = [*(results[i] or []), rec]
                if on_records is not None:
                    on_records([rec])

        gone_since: dict[int, float] = {}
        oldest = 0  # index into order of the oldest pending task
        last_watch = 0.0
        last_progress = time.monotonic()
        done_seen = 0
        # a task whose worker died in its middle, run once more alone -> how that worker died, and the last earlier task
        # of that worker whose step left threads running (suspect_of); a task in it is never run a third time
        first_death: dict[int, tuple[str, str | None]] = {}
        stall_limit = max(limit(t.case) for t in tasks) + STALL_GRACE
        while pending:
            finished: set[Any] = set()
            try:
                finished.add(done_queue.get(timeout=WATCH_INTERVAL))
                while True:
                    finished.add(done_queue.get_nowait())
            except queue.Empty:
                pass
            finished &= pending  # (a future the watchdog cancelled comes back through its callback)
            now = time.monotonic()
            if finished or done_count != done_seen:  # a future finished, or a running batch handed on a task
                last_progress, done_seen = now, done_count
            stalled = now - last_progress > stall_limit
            if not pool.active or stalled or any(_aborted(f) for f in finished):
                # a worker died between two tasks (a timer or a thread a step left behind): pebble then aborts
                # every task it holds and takes no more; or nothing finished for longer than any task may run
                # (pebble's task pipe jammed by a worker that died while reading it). Those tasks did not fail:
                # they run again, in a new pool, each alone; after MAX_POOL_REBUILDS breaks in a row with no task
                # finished in between, the tasks left get an error record instead
                rebuilds = rebuilds + 1 if done_count == done_at_break else 1
                done_at_break = done_count
                last_progress = now
                stale = [f for f in order if f in pending and (not f.done() or _aborted(f))]
                pending.difference_update(stale)
                finished.difference_update(stale)  # the tasks that did finish are handed on below, as usual
                # before the pool stops its workers: those that ended already, in the middle of a task that pebble did
                # not fail (it had not yet seen the task start) or between two tasks, must not vanish with the pool
                in_task: set[int] = set()
                for f in stale:
                    b = futures[f]
                    pid = worker_of(b)
                    if pid is None or not _process_gone(pid):
                        continue
                    handed = harvest(b) if reads_back(b) else 0
                    if handed == len(batches[b]):
                        continue  # it wrote every task's records, then died: between two tasks (ended_between_tasks)
                    in_task.add(pid)
                    at = batches[b][handed]
                    if results[at] is None and at not in first_death:
                        # run again alone below; its records then come with this error record. The exit status is
                        # pebble's, noted as it found the worker ended (it breaks the pool when it sees no task
                        # running: it had not yet read the worker's acknowledgement of this one; helper-175's P2)
                        first_death[at] = (died_message(exit_codes.get(pid)), suspect_of(pid))
                for f in [*finished, *pending]:
                    # a task past its timeout whose worker pebble stopped, handed on below: that worker did not end
                    # between two tasks (before, the task it had finished earlier got a between-tasks record: helper-175)
                    if f.done() and not f.cancelled() and isinstance(f.exception(), TimeoutError):
                        pid = worker_of(futures[f])
                        if pid is not None:
                            in_task.add(pid)
                ended_between_tasks(now, in_task, final=True)
                # the tasks that finished and are handed on below (or in a later turn): their workers, alive now, are
                # stopped with the pool, not ended between two tasks (a false alarm on a correct task: the CI run of
                # bb953e5, where pebble broke the pool on a death it saw only after the other task had finished)
                stopped = {pid for f in pending if f not in stale
                           if (pid := worker_of(futures[f])) is not None and not _process_gone(pid)}
                for f in stale:
                    f.cancel()
                pool.stop()
                pool.join()
                pool = new_pool()
                for pid in [*worker_tasks, *stopped, *(worker_of(futures[f]) for f in stale)]:
                    worker_ended(pid)  # (stopped with the pool; records read back below are not that worker's last)
                for f in stale:
                    b = futures[f]
                    handed = harvest(b) if reads_back(b) else 0
                    for i in batches[b][handed:]:
                        if results[i] is not None:
                            continue
                        if rebuilds > MAX_POOL_REBUILDS:
                            t = tasks[i]
                            hand_on(i, [error_record(t.case, t.implementation, t.device, t.dtype, opts, (
                                f"not run: the worker pool broke {rebuilds} times in a row with no task finished in "
                                "between (a worker process died between two tasks: a timer or a thread that a step left "
                                "behind?); the tasks left were not run"))])
                            continue
                        batches.append([i])
                        submit(len(batches) - 1)
                        pending.add(order[-1])
            pending -= finished
            now = time.monotonic()
            if now - last_watch < WATCH_INTERVAL:
                watched: list[Any] = []
            else:
                # watchdog: pebble takes a worker that exits with status 0 (exit(0) in native code) for one
                # that retired, and would leave its task running until the timeout. Tasks start in the order
                # they were scheduled and at most n_jobs run at once, so the running ones are among the
                # oldest pending: only those are looked at
                last_watch = now
                while oldest < len(order) and order[oldest] not in pending:
                    oldest += 1
                watched = [f for f in order[oldest:oldest + WATCH_WINDOW * n_jobs + WATCH_SLACK] if f in pending]
            busy: set[int] = set()  # the workers of the running tasks (their deaths are those tasks')
            for running in watched:
                i = futures[running]  # the batch number, which names its marker file
                if len(batches[i]) > 1:
                    harvest(i)  # stream the records of the batch's finished tasks
                try:
                    pid, unit, started = read_marker(os.path.join(markers, f"{i}.pid"))
                except (OSError, ValueError):
                    # no marker yet: the worker that pebble saw take the task, which may have ended already with
                    # status 0 (pebble ignores that), before the task wrote its marker (helper-175's P3)
                    pid, unit, started = acked.get(running, 0), None, None
                    if not pid:
                        continue
                busy.add(pid)
                members = batches[i]
                if (unit is not None and started is not None and 0 <= unit < len(members) and not running.done()
                        and now - started > limit(tasks[members[unit]].case)):
                    # a task of a batch past its own time limit: the batch is stopped and its tasks run again
                    # one by one, where that task gets its own timeout error record
                    running.cancel()
                    pending.discard(running)
                    finished.add(running)
                    died[i] = f"task {unit} of the batch ran past its timeout"
                    batch_timeouts.add(i)
                    continue
                if pid and _process_gone(pid):
                    if now - gone_since.setdefault(i, now) > WATCHDOG_GRACE and not running.done():
                        running.cancel()
                        pending.discard(running)
                        finished.add(running)
                        code = exit_codes.get(pid)  # (another status: pebble ignored it, not having read the
                        # worker's acknowledgement of the task as it found the worker ended; helper-175's P2)
                        died[i] = (died_message(code) if code not in (None, 0) else
                                   "the worker process ended in the middle of the task with exit status 0 "
                                   "(exit(0) in native code, or os._exit?)")
            if watched:
                ended_between_tasks(now, busy, final=False)
            for done_fut in finished:
                b = futures[done_fut]
                members = batches[b]
                if len(members) > 1:
                    # the records of the batch's tasks come through its records file (report_unit), not with the result
                    death = None
                    expired: int | None = None  # pebble's pid of a worker that died in the batch
                    try:
                        if b in died:
                            raise _WorkerDiedError(died[b])
                        done_fut.result()
                    except ProcessExpired as exc:
                        death = died_message(exc.exitcode)
                        expired = getattr(exc, "pid", None)
                    except _WorkerDiedError as exc:
                        death = None if b in batch_timeouts else str(exc)
                    except BaseException:  # noqa: BLE001 - timed out or failed: handled below
                        pass
                    handed = harvest(b)  # every task whose records the worker wrote, before or as it ended
                    if death is not None and handed < len(members):  # the task that ran when the worker died
                        first_death[members[handed]] = (death, suspect_of(expired or worker_of(b)))
                        worker_ended(expired)  # (its marker may name no worker yet)
                    if (b in batch_timeouts or (death is not None and handed < len(members))
                            or (not done_fut.cancelled() and isinstance(done_fut.exception(), TimeoutError))):
                        worker_ended(worker_of(b))  # (stopped by the pool, or ended in a task: not between two tasks)
                    for i in members[handed:]:  # died, timed out, failed or a damaged frame: each such task again, alone
                        batches.append([i])
                        submit(len(batches) - 1)
                        pending.add(order[-1])
                    continue
                i = members[0]
                t = tasks[i]
                try:
                    try:
                        if b in died:
                            raise _WorkerDiedError(died[b])
                        results[i] = done_fut.result()
                    except (ProcessExpired, _WorkerDiedError):
                        # the worker writes the task's records to its records file before it sends them: a worker
                        # that died once it had, before pebble read them (pebble then fails the task and drops its
                        # result), died between two tasks, not in this one (ended_between_tasks; helper-175's P1)
                        sent = read_units(os.path.join(markers, f"{b}.pid"), 0)[0]
                        if not sent:
                            raise
                        results[i] = sent[0]
                    worked(b, [i])
                    if i in first_death:  # its retry finished: the crash must not vanish with the retry's records
                        results[i] = [*(results[i] or []), error_record(t.case, t.implementation, t.device, t.dtype, opts,
                                                                        retried_message(*first_death[i]))]
                except TimeoutError:
                    worker_ended(worker_of(b))  # (pebble stopped it)
                    why = (f"ran past the {limit(t.case):g} s timeout (--timeout; running and grading one case, implementation, "
                           "device and dtype); the worker process was stopped")
                except (ProcessExpired, _WorkerDiedError) as exc:
                    expired = getattr(exc, "pid", None) if isinstance(exc, ProcessExpired) else None
                    suspect = suspect_of(expired or worker_of(b))  # (before worker_ended forgets the worker's tasks)
                    worker_ended(worker_of(b))
                    worker_ended(expired)  # (pebble's pid: the marker may name no worker yet)
                    why = died_message(exc.exitcode) if isinstance(exc, ProcessExpired) else str(exc)
                    if i not in first_death:  # once more, alone: the worker may have been ended by a thread or a timer
                        first_death[i] = (why, suspect)  # an earlier step left behind, not by this task (a review)
                        batches.append([i])
                        submit(len(batches) - 1)
                        pending.add(order[-1])
                        continue
                except BaseException as exc:  # noqa: BLE001 - a result that cannot be sent back, or any BaseException
                    # a worker ignores SIGINT: a KeyboardInterrupt (SystemExit, ...) that came back from it was raised
                    # by user code there; the supervisor never re-raises it (its own Ctrl-C is `interrupted`)
                    try:
                        text = f"{type(exc).__name__}: {exc}"
                    except BaseException:  # noqa: BLE001 - a __str__ that raises
                        text = type(exc).__name__
                    why = f"the worker process failed: {text}"
                if results[i] is None:
                    results[i] = [error_record(t.case, t.implementation, t.device, t.dtype, opts, why)]
                hand_on(i, results[i] or [])
            if interrupted:  # after the tasks that finished meanwhile were handed on, those of running batches too
                for fut in list(pending):
                    if len(batches[futures[fut]]) > 1:
                        harvest(futures[fut])
                raise KeyboardInterrupt
        ended_between_tasks(time.monotonic(), set(), final=True)  # (every task is done: pebble has reported its deaths)
    except BaseException:
        for fut in futures:  # KeyboardInterrupt, or a failing on_records: nothing more is started
            fut.cancel()
        raise
    finally:
        if old_handler is not None:
            signal.signal(signal.SIGINT, old_handler)
        pool.stop()
        pool.join()
        if hidden_main is not None and main is not None:
            main.__file__ = hidden_main
        shutil.rmtree(markers, ignore_errors=True)
    return [r for rs in results for r in (rs or [])]
