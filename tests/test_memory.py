"""harness.memory: freed blocks up to 32 MiB come back from the heap, so repeating an allocation faults no new page."""

from __future__ import annotations

import subprocess
import sys

import pytest

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


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_repeated_large_allocations_fault_no_new_pages():
    """After a 64 MB block was freed, 20 allocations of 8 MB: with the thresholds set they reuse the heap (no page
    faults after the first); without them each is a fresh mapping (hundreds of faults, fewer than 2,048 pages each
    where the kernel maps huge pages). Each run is a fresh process: the settings are per process."""
    keep = subprocess.run([sys.executable, "-c", SCRIPT, "keep"], capture_output=True, text=True, timeout=120)
    assert keep.returncode == 0, keep.stderr
    plain = subprocess.run([sys.executable, "-c", SCRIPT, "plain"], capture_output=True, text=True, timeout=120)
    assert plain.returncode == 0, plain.stderr
    assert int(keep.stdout) < 50 <= 4 * 50 <= int(plain.stdout), (keep.stdout, plain.stdout)


def test_not_glibc_changes_nothing(monkeypatch):
    """Elsewhere than Linux the call reports False and sets nothing."""
    import harness.memory as memory

    monkeypatch.setattr(memory, "_applied", None)
    monkeypatch.setattr(memory.sys, "platform", "darwin")
    assert memory.keep_freed_memory() is False
    monkeypatch.setattr(memory, "_applied", None)  # the real platform's answer again for later callers
