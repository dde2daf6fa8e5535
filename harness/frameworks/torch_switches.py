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
- anomaly detection: ``torch.is_anomaly_enabled`` / ``torch.autograd.set_detect_anomaly``.

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


#: torch's own defaults: what a step that imports torch for the first time starts from.
def _defaults(torch: Any) -> TorchSwitches:
    return TorchSwitches(True, torch.float32, False, False, False)


def read() -> TorchSwitches | None:
    """The calling thread's switches, or None where torch is not imported."""
    torch = sys.modules.get("torch")
    if torch is None or not hasattr(torch, "is_grad_enabled"):  # not imported, or halfway through its import
        return None
    return TorchSwitches(torch.is_grad_enabled(), torch.get_default_dtype(), torch.are_deterministic_algorithms_enabled(),
                         torch.is_deterministic_algorithms_warn_only_enabled(), torch.is_anomaly_enabled())


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
    want = before if before is not None else _defaults(torch)
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
    return changed
