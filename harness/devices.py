"""Devices and dtypes as the frameworks see them: discovery, support, conversion.

Devices are discovered at run time: ``cpu`` always, ``cuda:0``... for every
visible CUDA device, ``mps`` when Apple's Metal backend is available. Inputs
are created directly on the device (``torch.tensor(..., device=...)``).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from typing import Any

import numpy as np
import numpy.typing as npt

from .errors import UsageError
from .floats import DTYPES

NUMPY_DTYPES = {"float64": np.float64, "float32": np.float32, "float16": np.float16}


def available_devices() -> list[str]:
    """Every device this machine has: ``["cpu", "cuda:0", ..., "mps"]``."""
    out = ["cpu"]
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return out
    if torch.cuda.is_available():
        out += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        out.append("mps")
    return out


def device_type(device: str) -> str:
    """``"cuda:1"`` -> ``"cuda"``."""
    return device.split(":")[0]


def parse_devices(spec: str | Iterable[str] | None) -> list[str]:
    """Resolve a device selection (``"cpu,cuda"``; ``"all"`` or None = every available device).

    ``cuda`` alone means every visible CUDA device.

    Raises:
        UsageError: for a device name that is not ``cpu``, ``cuda[:i]`` or ``mps``.
    """
    avail = available_devices()
    if spec is None:
        return avail
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    out: list[str] = []
    for n in names:
        if n == "all":
            out += [d for d in avail if d not in out]
        elif n == "cuda":
            out += [d for d in avail if d.startswith("cuda") and d not in out] or ["cuda"]
        elif n in ("cpu", "mps") or (n.startswith("cuda:") and n[5:].isdigit()):
            if n not in out:
                out.append(n)
        else:
            raise UsageError(f"unknown device {n!r}; use cpu, cuda, cuda:N or mps (available here: {', '.join(avail)})")
    return out


def parse_dtypes(spec: str | Iterable[str] | None) -> list[str] | None:
    """Resolve ``"float32,float64"``; None means each case's own ``dtypes``.

    Raises:
        UsageError: for an unknown dtype.
    """
    if spec is None:
        return None
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    if names == ["all"]:
        return list(DTYPES)
    for n in names:
        if n not in DTYPES:
            raise UsageError(f"unknown dtype {n!r}; known: {', '.join(DTYPES)}")
    return names


def unsupported_reason(framework: str, device: str, dtype: str, declared: Iterable[str] | None = None) -> str | None:
    """Why ``framework`` cannot compute in ``dtype`` on ``device`` (None if it can).

    NumPy has no bfloat16: an implementation that *declares* bfloat16 in its ``dtypes`` (``declared``)
    gets ``ml_dtypes.bfloat16`` arrays where ``ml_dtypes`` is installed (JAX installs it); the
    others keep ``unsupported`` in bfloat16."""
    dev = device_type(device)
    if framework == "numpy":
        if dev != "cpu":
            return f"NumPy runs on the CPU only, not {device}"
        if dtype == "bfloat16" and declared is not None and "bfloat16" in declared:
            if importlib.util.find_spec("ml_dtypes") is None:
                return "bfloat16 through NumPy needs ml_dtypes (pip install ml_dtypes; JAX installs it)"
            return None
        if dtype not in NUMPY_DTYPES:
            return f"NumPy has no {dtype} dtype"
        return None
    if dev != "cpu" and dev not in available_devices_types():  # (the CPU is always one: no query for it)
        return f"device {device} is not available on this machine"
    if dev == "mps" and dtype == "float64":
        return "the MPS backend does not support float64"
    return None


def available_devices_types() -> set[str]:
    return {device_type(d) for d in available_devices()}


def torch_dtype(dtype: str) -> Any:
    """The ``torch.dtype`` called ``dtype``."""
    import torch

    return getattr(torch, dtype)


def to_framework(arr: npt.NDArray[np.float64], framework: str, dtype: str, device: str) -> Any:
    """An input array as the framework's object, created directly in ``dtype`` on ``device``."""
    if framework == "numpy":
        with np.errstate(over="ignore"):  # values beyond the dtype's range become inf, as in torch
            if dtype == "bfloat16":  # only for an implementation that declares it (unsupported_reason)
                import ml_dtypes

                return np.asarray(arr).astype(ml_dtypes.bfloat16)
            return np.asarray(arr).astype(NUMPY_DTYPES[dtype])
    import torch

    return torch.tensor(arr, dtype=torch_dtype(dtype), device=device)


def to_float64(value: Any) -> npt.NDArray[np.float64]:
    """A framework output (tensor, array or scalar) as a float64 NumPy array (exact)."""
    try:
        import torch

        if isinstance(value, torch.Tensor):
            return value.detach().to(device="cpu", dtype=torch.float64).numpy()
    except ImportError:  # pragma: no cover
        pass
    return np.asarray(value, dtype=np.float64)
