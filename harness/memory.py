"""Keep freed heap memory in the process, so that a check's large temporaries do not page-fault on every call.

A check of a large case allocates and frees tens of MB of arrays per call (the digit planes of the exact
oracle, the bounds' N x K terms). glibc's ``malloc`` serves blocks above its mmap threshold (128 KiB at
start, raised dynamically up to 32 MiB as large blocks are freed) with fresh ``mmap`` pages, and returns the
free top of the heap to the system beyond its trim threshold: depending on what ran before (a torch step, a
gradcheck), every call of a 10^6-term check then touched several MB of new pages (1,921 minor page faults and
about 3.5 ms per call measured on this project's VM after the benchmark's torch verification targets; none
in a fresh process). :func:`keep_freed_memory` fixes both thresholds (``mallopt``, glibc's documented
interface: M_MMAP_THRESHOLD at its 64-bit maximum, 32 MiB, and M_TRIM_THRESHOLD at :data:`TRIM_BYTES`), so
that freed blocks up to 32 MiB are reused from the heap. The cost: the process keeps up to
:data:`TRIM_BYTES` of freed memory instead of returning it. Nothing computed depends on it.

Called by the command line (:func:`harness.cli.main`), the worker processes and the benchmarks; not by the
pytest plugin, which runs inside the user's test process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

#: glibc's ``mallopt`` parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: The largest M_MMAP_THRESHOLD glibc accepts on 64-bit systems (DEFAULT_MMAP_THRESHOLD_MAX: 4 MiB * sizeof(long)).
MMAP_BYTES = 32 * 2**20
#: Free memory at the top of the heap kept before it is returned to the system.
TRIM_BYTES = 512 * 2**20

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds (module docstring) once per process.

    Returns:
        True when both were set (now or by an earlier call), False where the C library is not glibc (macOS,
        Windows, musl) or refused them: then nothing changed.
    """
    global _applied
    if _applied is None:
        _applied = _set_thresholds()
    return _applied


def _set_thresholds() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 - glibc only (musl has no mallopt thresholds)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_BYTES))
