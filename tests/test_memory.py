"""harness.memory: freed blocks up to 32 MiB come back from the heap, so repeating an allocation faults no new page."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import harness.memory as memory

SCRIPT = r"""
import resource, sys
import numpy as np
if sys.argv[1] == "keep":
    from harness.memory import keep_freed_memory
    assert keep_freed_memory() is True and keep_freed_memory() is True  # once per process, idempotent
big = np.ones(2**23)  # 64 MB: mmapped and unmapped whatever the thresholds; glibc's dynamic mmap threshold is
del big                # raised only by freed blocks up to 32 MiB, so after this the next 8 MB blocks are mmapped too
def faults(n, size):
    a = np.ones(size); del a  # the first allocation may grow the heap
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(n):
        a = np.ones(size)  # 8 MB: above glibc's initial mmap threshold, below 32 MiB
        del a
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
print(faults(20, 2**20))
"""


def _glibc() -> bool:
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").gnu_get_libc_version  # noqa: B018
    except (OSError, AttributeError):
        return False
    return sys.platform.startswith("linux")


@pytest.mark.skipif(not _glibc(), reason="mallopt's thresholds: glibc only (not macOS, Windows or musl)")
def test_repeated_large_allocations_fault_no_new_pages():
    """After a 64 MB block was freed, 20 allocations of 8 MB: with the thresholds set they reuse the heap (no page
    faults after the first); without them each is a fresh mapping (hundreds of faults, fewer than 2,048 pages each
    where the kernel maps huge pages). Each run is a fresh process: the settings are per process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}  # glibc's own tunables would set them too
    keep = subprocess.run([sys.executable, "-c", SCRIPT, "keep"], capture_output=True, text=True, timeout=120, env=env)
    assert keep.returncode == 0, keep.stderr
    plain = subprocess.run([sys.executable, "-c", SCRIPT, "plain"], capture_output=True, text=True, timeout=120, env=env)
    assert plain.returncode == 0, plain.stderr
    assert int(keep.stdout) < 50 <= 4 * 50 <= int(plain.stdout), (keep.stdout, plain.stdout)


def test_not_glibc_changes_nothing(monkeypatch):
    """Elsewhere than Linux the call reports False without loading the C library (so nothing is set)."""

    def no_library(*args, **kwargs):
        raise AssertionError("the C library must not be loaded off Linux")

    monkeypatch.setattr(memory, "_applied", None)
    monkeypatch.setattr(memory.sys, "platform", "darwin")
    monkeypatch.setattr(memory.ctypes, "CDLL", no_library)
    assert memory.keep_freed_memory() is False
    assert memory.keep_freed_memory() is False  # answered once per process
