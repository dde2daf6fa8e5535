"""The one dispatch on a step's framework: whether it can run a dtype on a device, its inputs for one call,
and reading its values back as float64.

torch and NumPy are converted by :mod:`harness.devices` (as before adapters existed); every other
framework through its adapter (:class:`harness.frameworks.Framework`). :mod:`harness.devices`
never imports this package.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterable
from typing import Any

import numpy as np
import numpy.typing as npt

from .. import devices
from ..errors import HarnessError
from .interchange import case_array, dtype_name, has_ml_dtypes, read_result
from .registry import framework_of, reader_of

#: The frameworks :mod:`harness.devices` converts itself.
NATIVE = ("torch", "numpy")


class FrameworkInputError(HarnessError):
    """A framework adapter made an input that is not what the case asks for (another dtype, another shape)."""


def unsupported_reason(framework: str, device: str, dtype: str, declared: Iterable[str] | None = None) -> str | None:
    """Why ``framework`` cannot compute in ``dtype`` on ``device`` here (None if it can): for torch
    and NumPy :func:`harness.devices.unsupported_reason`; for another, not installed, a device or
    dtype it lacks, bfloat16 without ``ml_dtypes``, or its own ``reason``. ``declared``: the
    implementation's own ``dtypes`` (NumPy takes bfloat16 only for one that declares it)."""
    if framework in NATIVE:
        return devices.unsupported_reason(framework, device, dtype, declared)
    fw = framework_of(framework)
    if fw.module and fw.module not in sys.modules and importlib.util.find_spec(fw.module) is None:
        return f"{fw.name} is not installed ({fw.install or 'pip install ' + fw.module})"
    if dtype not in fw.dtypes:
        return f"{fw.name} does not support {dtype}"
    if dtype == "bfloat16" and not has_ml_dtypes():
        return "bfloat16 through NumPy needs ml_dtypes (pip install ml_dtypes; JAX installs it)"
    dev = devices.device_type(device)
    if dev != "cpu" and dev not in devices.available_devices_types():  # (the CPU is always one: no query for it)
        return f"device {device} is not available on this machine"
    if dev not in fw.device_types():
        return f"{fw.name} does not run on {device} here"
    return fw.reason(device, dtype) if fw.reason is not None else None


def to_framework(values: npt.NDArray[np.float64], framework: str, dtype: str, device: str) -> Any:
    """The float64 input ``values``, rounded to ``dtype``, as ``framework``'s object on ``device``
    (torch and NumPy: :func:`harness.devices.to_framework`).

    Raises:
        FrameworkInputError: when the object made holds another dtype or shape (JAX without
            ``jax_enable_x64`` makes float32 of float64), naming both and the framework's hint.
    """
    if framework in NATIVE:
        return devices.to_framework(values, framework, dtype, device)
    fw = framework_of(framework)
    assert fw.to_framework is not None, f"{framework} has no adapter"
    array = case_array(values, dtype)
    obj = fw.to_framework(array, device)
    got = dtype_name(obj)
    if got is not None and got != dtype:
        raise FrameworkInputError(f"{fw.name} made a {got} input for a {dtype} case{fw.hint(dtype, got)}")
    shape = getattr(obj, "shape", None)
    if shape is not None and tuple(shape) != array.shape:
        raise FrameworkInputError(f"{fw.name} made an input of shape {tuple(shape)} for one of shape {array.shape}")
    return obj


def to_float64(value: Any, framework: str | None = None, copy: bool = True) -> npt.NDArray[np.float64]:
    """A value a step of ``framework`` returned or was given, as a float64 NumPy array (exact), read
    with the framework's own ``to_numpy`` if it registered one, else through the interchange
    protocols (:func:`harness.frameworks.interchange.read_result`). ``copy``: True: memory the caller
    owns, shared with nothing; False: possibly the value's own memory (to be read at once).

    Raises:
        harness.frameworks.ResultReadError: for a value that cannot be read as real numbers."""
    return read_result(value, reader_of(framework), copy)[0]
