"""Any DLPack framework (CuPy, JAX, TensorFlow, MLX, PaddlePaddle...): inputs are handed as torch tensors
on the case's device, which implement ``__dlpack__``; the step converts them with its own framework's
``from_dlpack`` (``cupy.from_dlpack(X)``, ``jax.dlpack.from_dlpack(X)``, ``np.from_dlpack(X)``) without
a copy, on the same device. Results are read through ``__dlpack__`` (or ``__array__``, ``.numpy()``).

The inputs are the harness's own copies, but a zero-copy view still writes into them: a step that
updates a view in place is an ``error`` (see :mod:`harness.isolation`); copy first.
"""

from __future__ import annotations

from typing import Any

from .registry import Framework


def to_dlpack(array: Any, device: str) -> Any:
    """``array`` (a NumPy array in the case's dtype) as a torch tensor (a DLPack producer) on ``device``."""
    import numpy as np
    import torch

    dtype = getattr(torch, array.dtype.name)
    host = array.astype(np.float32) if array.dtype.name == "bfloat16" else array  # exact: bfloat16 values are float32 values
    return torch.from_numpy(np.ascontiguousarray(host)).to(device=device, dtype=dtype)


def dlpack_devices() -> set[str]:
    """The device types torch sees here."""
    from ..devices import available_devices_types

    return available_devices_types()


def torch_reason(device: str, dtype: str) -> str | None:
    """Why torch cannot make this dtype on this device (the inputs are torch tensors): float64 on mps."""
    from ..devices import unsupported_reason

    return unsupported_reason("torch", device, dtype)


FRAMEWORK = Framework("dlpack", to_dlpack, devices=dlpack_devices, builtin=True, reason=torch_reason)
