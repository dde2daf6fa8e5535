"""Imported once by the fork server of :mod:`harness.isolation`: the start-up work every worker would
otherwise repeat, done before any worker is forked.

Only imports and pure-Python work (no torch operation, so no thread pool and no
CUDA context exist when the server forks): the built-in implementations, the
``torch._dynamo`` import that ``torch.optim`` makes on first use (about 2 s), and
the SymPy derivations the oracle caches per process (about 2 s).
"""

from __future__ import annotations

import threading

import torch  # noqa: F401
import torch._dynamo  # noqa: F401  (torch.optim imports it lazily, on the first optimizer)

from .implementations import load_builtins
from .symbolic import derive

load_builtins()
for _reduction in ("sum", "mean"):
    derive(_reduction)

#: Threads alive after the preload (the fork server must fork from a single-threaded process).
THREADS_AFTER_PRELOAD = threading.active_count()
