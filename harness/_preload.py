"""Imported once by the fork server of :mod:`harness.isolation`: the start-up work every worker would
otherwise repeat, done before any worker is forked.

Only imports and pure-Python work (no torch operation, so no thread pool and no
CUDA context exist when the server forks): the built-in implementations (the
``torch._dynamo`` import that ``torch.optim`` makes on first use, about 1.2 s, is
:mod:`harness._preload_optim`'s, which a run of NumPy implementations only leaves out), and
the SymPy derivations the oracle caches per process (about 2 s), the oracle's compiled plans,
and the integer-slice oracle's numba kernels, loaded from numba's on-disk cache by one small
exact step of each kind (about 0.6 s; numba starts no thread for them); and :mod:`harness.runner`,
which each worker's first task imports to find ``grade_task``, with the bounds' compiled passes its first
check loads (running sums, the equal-pairs count, the family of ``b``), each called once on a few numbers:
a worker otherwise paid about 0.13 s for the import and 0.04 s for the kernels before its first step,
which ``--harness-isolation process`` pays on every pytest item (a pool per item).
"""

from __future__ import annotations

import os
import signal
import threading
from fractions import Fraction

#: The process that started this fork server (``check``, or a process running :func:`harness.runner.verify`).
SERVER_PARENT = os.getppid()


def stop_if_orphaned() -> None:
    """End this fork server at once if the process that started it has exited: a ``check`` refused after it started
    the server (an unknown implementation, a bad output path) exits within a second or two, and the server, which
    sees its parent gone only once its preload is done, went on preloading (about 3.6 s of CPU) for nobody."""
    if os.getppid() != SERVER_PARENT:
        os._exit(0)


# Ctrl-C reaches the whole process group, the fork server too: the supervisor alone handles it (it stops the pool and
# keeps every finished record), and the server ignores SIGINT once its preload is done (multiprocessing.forkserver);
# here, while it preloads (``check`` starts it before it loads its cases), a KeyboardInterrupt printed 40 lines of
# traceback under the supervisor's "interrupted" (helper-104)
signal.signal(signal.SIGINT, signal.SIG_IGN)

import numpy as np  # noqa: E402
import torch  # noqa: E402, F401

stop_if_orphaned()

from .fastexact import step_parts  # noqa: E402
from .implementations import load_builtins  # noqa: E402
from .oracle import ACCURATE_MIN_WORK, exact_inputs_from_floats, exact_step, plan  # noqa: E402
from .symbolic import derive  # noqa: E402

load_builtins()
for _reduction in ("sum", "mean"):
    derive(_reduction)
    plan(_reduction)
stop_if_orphaned()
_n = ACCURATE_MIN_WORK // 16  # an exact step large enough for the slice path (and its accurate product, below)
_x = (np.arange(_n * 16, dtype=np.float64).reshape(_n, 16) % 97) / 7
_inputs = {"X": _x, "y": np.ones((_n, 1)) / 3, "W": np.full((16, 1), 0.1), "b": np.array([0.2])}
try:  # a warm-up only: the fork server skips a preload module that raises ImportError, but dies of anything else
    exact_step(exact_inputs_from_floats(_inputs), Fraction(1, 64), "mean", accurate=True).residual.to_float64()
    step_parts(_inputs["X"], _inputs["y"], _inputs["W"], _inputs["b"], accurate=True)  # the accurate product's kernels
except Exception:  # noqa: BLE001, S110 - the workers then load the kernels on first use, as without the preload
    pass
del _n, _x, _inputs
stop_if_orphaned()

from . import runner  # noqa: E402, F401  (grade_task's module: a worker's first task would import it)
from .partialsums import running_sums  # noqa: E402
from .sharedrounding import equal_pairs, shared_residual_errors  # noqa: E402

try:  # a warm-up only, as above: the kernels a worker's first check loads from numba's cache
    _a = np.arange(8.0).reshape(2, 4)
    running_sums(_a, np.empty_like(_a))
    running_sums(np.asfortranarray(_a), np.empty_like(np.asfortranarray(_a)))
    equal_pairs(_a)
    _x = np.arange(1.0, 9.0).reshape(4, 2) / 3  # no column repeats: the family of b alone, compiled
    _w, _b, _y = np.array([[0.5], [0.25]]), np.array([0.75]), np.arange(4.0).reshape(4, 1) / 7
    shared_residual_errors(_x, _w, _b, _y, np.abs(_x) @ np.abs(_w) + np.abs(_b) + np.abs(_y), 2.0**-53)
    del _a, _x, _w, _b, _y
except Exception:  # noqa: BLE001, S110 - the workers then load the kernels on first use, as without the preload
    pass

#: Threads alive after the preload (the fork server must fork from a single-threaded process).
THREADS_AFTER_PRELOAD = threading.active_count()
