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
  parallel reductions depends on it, so the records would depend on which step ran before);
- autocast on each device type: ``torch.is_autocast_enabled(device_type)``, ``torch.get_autocast_dtype`` /
  ``torch.set_autocast_enabled``, ``torch.set_autocast_dtype`` (``torch.autocast("cpu", dtype=torch.bfloat16)``
  entered and never left made every later float32 torch step compute in bfloat16: 240 ``disagree`` records on
  torch-seed and the other torch built-ins in the seed case);
- the default device: ``torch.get_default_device`` / ``torch.set_default_device``;
- modes and hooks a step entered and never left (their ``__enter__`` without ``__exit__``), which are stacks that
  torch reads through private functions, used only where they exist: ``TorchFunctionMode`` and
  ``TorchDispatchMode`` (``torch._C._len_torch_function_stack``, ``_pop_torch_function_stack``,
  ``_len_torch_dispatch_stack``, ``_pop_torch_dispatch_stack``: a mode left on made every later torch
  step fail to create its inputs) and the default saved-tensor hooks (``torch.autograd.graph.saved_tensors_hooks``;
  ``torch._C._autograd._top_saved_tensors_default_hooks``, ``_pop_saved_tensors_default_hooks``: hooks that alter
  what autograd saves gave 320 ``disagree`` records on the correct torch built-ins). What a step pushed is popped,
  down to what the caller had.

The float32 matmul precision is set by the harness for each call (:mod:`harness.runner`) and FTZ/DAZ belong to
the floating-point environment (:mod:`harness.fpenv`).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

#: Device types whose autocast state is read and restored (where torch knows the device type).
AUTOCAST_DEVICES = ("cpu", "cuda")
#: Most modes or hooks popped after one step (a step that pushed more is described, not cleaned further).
MAX_POPS = 1000


@dataclass(frozen=True)
class TorchSwitches:
    """The switches' values (see the module docstring). ``autocast``: ``(device_type, enabled, dtype)`` per device
    type; ``function_modes`` / ``dispatch_modes``: the depths of the mode stacks (None where torch has no such
    function); ``saved_hooks``: the top default saved-tensor hooks ``(pack, unpack)`` or None."""

    grad_enabled: bool
    default_dtype: Any
    deterministic: bool
    deterministic_warn_only: bool
    anomaly: bool
    threads: int
    autocast: tuple[tuple[str, bool, Any], ...] = ()
    default_device: Any = None
    function_modes: int | None = 0
    dispatch_modes: int | None = 0
    saved_hooks: tuple[Any, Any] | None = None


def _defaults(torch: Any, threads: int) -> TorchSwitches:
    """torch's own defaults: what a step that imports torch for the first time starts from (its thread count, unknown
    to the harness then, is left as the step leaves it; autocast off in the dtype the step leaves)."""
    return TorchSwitches(True, torch.float32, False, False, False, threads,
                         tuple((dev, False, dtype) for dev, _, dtype in _autocast(torch)), torch.device("cpu"), 0, 0, None)


def _autocast(torch: Any) -> tuple[tuple[str, bool, Any], ...]:
    out = []
    for dev in AUTOCAST_DEVICES:
        try:
            out.append((dev, bool(torch.is_autocast_enabled(dev)), torch.get_autocast_dtype(dev)))
        except (AttributeError, RuntimeError, TypeError):  # an older torch, or a device type this build lacks
            continue
    return tuple(out)


def _private(fn: Any, *args: Any) -> Any:
    """Call one of torch's private stack functions; None where this torch lacks it or refuses."""
    try:
        return fn(*args)
    except (AttributeError, RuntimeError, TypeError):
        return None


def _function_stack(torch: Any) -> list[Any] | None:
    """The torch-function modes, bottom first (torch's raw stack functions, which no mode intercepts)."""
    return _private(lambda: [torch._C._get_function_stack_at(i) for i in range(torch._C._len_torch_function_stack())])


def _is_device_context(mode: Any) -> bool:
    """Whether ``mode`` is the default device's mode (``torch.set_default_device``), which torch keeps at the bottom
    of the stack and removes itself: it is restored as the default device, not popped."""
    return type(mode).__name__ == "DeviceContext" and type(mode).__module__ == "torch.utils._device"


def _function_modes(torch: Any) -> int | None:
    """The number of torch-function modes on the stack, the default device's not counted."""
    stack = _function_stack(torch)
    return None if stack is None else sum(not _is_device_context(m) for m in stack)


def _dispatch_modes(torch: Any) -> int | None:
    return _private(lambda: torch._C._len_torch_dispatch_stack())


def _top_hooks(torch: Any) -> tuple[Any, Any] | None:
    top = _private(lambda: torch._C._autograd._top_saved_tensors_default_hooks(True))
    return (top[0], top[1]) if isinstance(top, tuple) and len(top) == 2 else None


def read(_stacks: tuple[int | None, int | None, tuple[Any, Any] | None] | None = None) -> TorchSwitches | None:
    """The calling thread's switches, or None where torch is not imported. ``_stacks``: the function modes, dispatch
    modes and top saved-tensor hooks as just read (:func:`_pop_stacks`, which popped nothing: the same values), or
    None (read here)."""
    torch = sys.modules.get("torch")
    if torch is None or not hasattr(torch, "is_grad_enabled"):  # not imported, or halfway through its import
        return None
    device = getattr(torch, "get_default_device", None)
    stacks = _stacks if _stacks is not None else (_function_modes(torch), _dispatch_modes(torch), _top_hooks(torch))
    return TorchSwitches(torch.is_grad_enabled(), torch.get_default_dtype(), torch.are_deterministic_algorithms_enabled(),
                         torch.is_deterministic_algorithms_warn_only_enabled(), torch.is_anomaly_enabled(),
                         torch.get_num_threads(), _autocast(torch), device() if device is not None else None, *stacks)


def _same_hooks(a: tuple[Any, Any] | None, b: tuple[Any, Any] | None) -> bool:
    return a is b or (a is not None and b is not None and a[0] is b[0] and a[1] is b[1])


def restore(before: TorchSwitches | None) -> list[str]:
    """Put back the switches a step changed since :func:`read` returned ``before`` (torch's defaults where torch
    was imported by the step itself).

    Returns:
        what the step had changed, in words, one item per switch (empty when nothing changed).
    """
    torch = sys.modules.get("torch")
    if torch is None or not hasattr(torch, "is_grad_enabled"):
        return []
    # first what a step pushed (a mode left on intercepts the very functions that read the other switches)
    changed, stacks = _pop_stacks(torch, before)
    now = read(None if changed else stacks)  # (nothing popped: the stacks as _pop_stacks read them, not read again)
    if now is None:
        return changed
    want = before if before is not None else _defaults(torch, now.threads)
    if want.default_device is not None and now.default_device != want.default_device:
        torch.set_default_device(None if want.default_device == torch.device("cpu") else want.default_device)
        changed.append(f"default device {now.default_device} (torch.set_default_device)")
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
    changed += _restore_autocast(torch, now, want)
    return changed


def _restore_autocast(torch: Any, now: TorchSwitches, want: TorchSwitches) -> list[str]:
    changed = []
    was = {dev: (on, dtype) for dev, on, dtype in want.autocast}
    for dev, on, dtype in now.autocast:
        if dev not in was or (on, dtype) == was[dev] or (not on and not was[dev][0]):
            continue  # the dtype matters only while autocast is on
        torch.set_autocast_enabled(dev, was[dev][0])
        torch.set_autocast_dtype(dev, was[dev][1])
        if not was[dev][0]:
            torch.clear_autocast_cache()
        changed.append(f"autocast on {dev} {'on' if on else 'off'} in {dtype} (torch.autocast entered and not left)")
    return changed


def _pop_stacks(torch: Any, want: TorchSwitches | None
                ) -> tuple[list[str], tuple[int | None, int | None, tuple[Any, Any] | None]]:
    """Pop the torch-function and dispatch modes and the default saved-tensor hooks a step pushed and never popped,
    down to what the caller had (``want``; None: none), with torch's raw stack functions. The default device's mode
    is left to :func:`restore` (``torch.set_default_device``).

    Returns:
        what was popped, in words, and the stacks as last read (:func:`read`'s ``function_modes``, ``dispatch_modes``
        and ``saved_hooks``: the stacks now where nothing was popped)."""
    changed = []
    keep = want.function_modes if want is not None else 0
    names: list[str] = []
    stack = _function_stack(torch)
    while stack is not None and keep is not None and len(names) < MAX_POPS:
        if sum(not _is_device_context(m) for m in stack) <= keep or _is_device_context(stack[-1]):
            break
        names.append(type(_private(lambda: torch._C._pop_torch_function_stack())).__name__)
        stack = _function_stack(torch)
    if names:
        changed.append(f"torch function mode(s) {', '.join(dict.fromkeys(names))} entered and not left (popped)")
    keep = want.dispatch_modes if want is not None else 0
    names = []
    depth = _dispatch_modes(torch)
    while depth is not None and keep is not None and depth > keep and len(names) < MAX_POPS:
        names.append(type(_private(lambda: torch._C._pop_torch_dispatch_stack(None))).__name__)
        depth = _dispatch_modes(torch)
    if names:
        changed.append(f"torch dispatch mode(s) {', '.join(dict.fromkeys(names))} entered and not left (popped)")
    hooks = want.saved_hooks if want is not None else None
    popped = 0
    top = _top_hooks(torch)  # (read once per pop: nothing runs between the test's two reads)
    while not _same_hooks(top, hooks) and top is not None and popped < MAX_POPS:
        try:
            torch._C._autograd._pop_saved_tensors_default_hooks()
        except (AttributeError, RuntimeError):
            top = _top_hooks(torch)  # (as the refused pop left them)
            break
        popped += 1
        top = _top_hooks(torch)
    if popped:
        changed.append(f"{popped} default saved-tensor hook pair(s) pushed and not popped "
                       "(torch.autograd.graph.saved_tensors_hooks entered and not left; popped)")
    modes = None if stack is None else sum(not _is_device_context(m) for m in stack)  # (_function_modes of the stack)
    return changed, (modes, depth, top)


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
