"""torch's process-wide switches that one step can leave changed for the next: read before a call, restored after.

A step that ends with ``torch.set_grad_enabled(False)`` (as evaluation code often begins) used to make every later
torch step graded in the same process fail at ``loss.backward()``: ``error`` records blamed on implementations
that are right. :func:`read` takes the switches before a step runs and :func:`restore` puts back what the step
changed, naming it. Whatever framework a step declares, it may import torch and flip them, so both work on
any step, and do nothing where torch is not imported.

The switches (torch 2.x; each is read and set by its public function):

- grad mode: ``torch.is_grad_enabled`` / ``torch.set_grad_enabled`` (per thread);
- the default dtype: ``torch.get_default_dtype`` / ``torch.set_default_dtype``;
- deterministic algorithms: ``torch.are_deterministic_algorithms_enabled``,
  ``torch.is_deterministic_algorithms_warn_only_enabled`` / ``torch.use_deterministic_algorithms``;
- anomaly detection: ``torch.is_anomaly_enabled`` / ``torch.autograd.set_detect_anomaly``;
- the number of intra-op threads: ``torch.get_num_threads`` / ``torch.set_num_threads`` (the order of torch's
  parallel reductions depends on it, so the records would depend on which step ran before).

The float32 matmul precision is set by the harness for each call (:mod:`harness.runner`) and FTZ/DAZ belong to
the floating-point environment (:mod:`harness.fpenv`).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TorchSwitches:
    """The switches' values (see the module docstring)."""

    grad_enabled: bool
    default_dtype: Any
    deterministic: bool
    deterministic_warn_only: bool
    anomaly: bool
    threads: int


def _defaults(torch: Any, threads: int) -> TorchSwitches:
    """torch's own defaults: what a step that imports torch for the first time starts from (its thread count, unknown
    to the harness then, is left as the step leaves it)."""
    return TorchSwitches(True, torch.float32, False, False, False, threads)


def read() -> TorchSwitches | None:
    """The calling thread's switches, or None where torch is not imported."""
    torch = sys.modules.get("torch")
    if torch is None or not hasattr(torch, "is_grad_enabled"):  # not imported, or halfway through its import
        return None
    return TorchSwitches(torch.is_grad_enabled(), torch.get_default_dtype(), torch.are_deterministic_algorithms_enabled(),
                         torch.is_deterministic_algorithms_warn_only_enabled(), torch.is_anomaly_enabled(),
                         torch.get_num_threads())


def restore(before: TorchSwitches | None) -> list[str]:
    """Put back the switches a step changed since :func:`read` returned ``before`` (torch's defaults where torch
    was imported by the step itself).

    Returns:
        what the step had changed, in words, one item per switch (empty when nothing changed).
    """
    now = read()
    if now is None:
        return []
    torch = sys.modules["torch"]
    want = before if before is not None else _defaults(torch, now.threads)
    changed = []
    if now.grad_enabled != want.grad_enabled:
        torch.set_grad_enabled(want.grad_enabled)
        changed.append(f"grad mode {'off' if not now.grad_enabled else 'on'} (torch.set_grad_enabled({now.grad_enabled}))")
    if now.default_dtype != want.default_dtype:
        torch.set_default_dtype(want.default_dtype)
        changed.append(f"default dtype {now.default_dtype} (torch.set_default_dtype)")
    if (now.deterministic, now.deterministic_warn_only) != (want.deterministic, want.deterministic_warn_only):
        torch.use_deterministic_algorithms(want.deterministic, warn_only=want.deterministic_warn_only)
        changed.append(f"deterministic algorithms {'on' if now.deterministic else 'off'} (torch.use_deterministic_algorithms)")
    if now.anomaly != want.anomaly:
        torch.autograd.set_detect_anomaly(want.anomaly)
        changed.append(f"anomaly detection {'on' if now.anomaly else 'off'} (torch.autograd.set_detect_anomaly)")
    if now.threads != want.threads:  # the order of torch's parallel reductions depends on it
        torch.set_num_threads(want.threads)
        changed.append(f"{now.threads} intra-op threads instead of {want.threads} (torch.set_num_threads)")
    return changed


# ---------------------------------------------------------------------------------------------------------------
# torch's intra-op thread pool and the floating-point environment.
#
# A thread starts with the floating-point environment of the thread that creates it (POSIX threads), and torch's
# intra-op (OpenMP) threads are created by the first parallel operation and kept. A step that turned FTZ/DAZ on
# (torch.set_flush_denormal(True)) before the first parallel operation of the process gave those threads FTZ/DAZ
# for good; harness.fpenv restores the calling thread only. The harness then converted a case's subnormal inputs
# to zero in torch's conversion kernels, in the step's inputs and in its own snapshot of them, and a step that
# drops subnormals agreed (found by an attack). So the pool is started in IEEE 754's default before any step
# runs (:func:`warm_thread_pool`), and probed after a step that left FTZ/DAZ on (:func:`thread_pool_flushes`).

#: torch's grain size of element-wise parallel loops (at::internal::GRAIN_SIZE): a loop of ``threads * GRAIN``
#: elements gives every thread of the pool one chunk.
GRAIN = 32768
_WARM: dict[str, int] = {}


def _pool_size(torch: Any) -> int:
    return max(1, int(torch.get_num_threads()))


def warm_thread_pool() -> None:
    """Start torch's intra-op threads in the calling thread's floating-point environment (once per thread count),
    where torch is imported. The caller runs it in IEEE 754's default (:func:`harness.fpenv.ieee_default`)."""
    torch = sys.modules.get("torch")
    if torch is None or not hasattr(torch, "get_num_threads"):
        return
    size = _pool_size(torch)
    if _WARM.get("threads") == size:
        return
    import numpy as np

    torch.from_numpy(np.zeros(size * GRAIN)).add_(1.0)  # one chunk per thread: the whole team starts here
    _WARM["threads"] = size


def thread_pool_flushes() -> bool:
    """Whether a thread of torch's intra-op pool flushes subnormal operands or results to zero (None of torch:
    False). One parallel multiplication of ``threads * GRAIN`` subnormals by ``2**60`` (normal results) and of the
    smallest normal by 0.5 (subnormal results); the arrays are made by NumPy, read back without a conversion."""
    torch = sys.modules.get("torch")
    if torch is None or not hasattr(torch, "get_num_threads"):
        return False
    import numpy as np

    n = _pool_size(torch) * GRAIN
    tiny = np.full(n, np.finfo(np.float64).smallest_subnormal)
    low = np.full(n, np.finfo(np.float64).smallest_normal)
    scaled = (torch.from_numpy(tiny) * 2.0**60).numpy()
    halved = (torch.from_numpy(low) * 0.5).numpy()
    return bool((scaled == 0.0).any() or (halved == 0.0).any())
