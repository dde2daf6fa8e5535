"""Whether a registered framework can run a dtype on a device, and its inputs for one call."""

from __future__ import annotations

import importlib.util
import sys
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import HarnessError
from .interchange import case_array, dtype_name, has_ml_dtypes
from .registry import framework_of


class FrameworkInputError(HarnessError):
    """A framework adapter made an input that is not what the case asks for (another dtype, another shape)."""


def unsupported_reason(framework: str, device: str, dtype: str) -> str | None:
    """Why the adapter-converted ``framework`` (not torch or NumPy) cannot compute in ``dtype`` on
    ``device`` here: not installed, a device or dtype it lacks, bfloat16 without ``ml_dtypes``
    (None if it can)."""
    from ..devices import available_devices_types, device_type

    fw = framework_of(framework)
    if fw.module and fw.module not in sys.modules and importlib.util.find_spec(fw.module) is None:
        return f"{fw.name} is not installed ({fw.install or 'pip install ' + fw.module})"
    if dtype not in fw.dtypes:
        return f"{fw.name} does not support {dtype}"
    if dtype == "bfloat16" and not has_ml_dtypes():
        return "bfloat16 through NumPy needs ml_dtypes (pip install ml_dtypes; JAX installs it)"
    dev = device_type(device)
    if dev not in available_devices_types():
        return f"device {device} is not available on this machine"
    if dev not in fw.device_types():
        return f"{fw.name} does not run on {device} here"
    return fw.reason(device, dtype) if fw.reason is not None else None


def make_input(values: npt.NDArray[np.float64], framework: str, dtype: str, device: str) -> Any:
    """The float64 input ``values``, rounded to ``dtype``, as ``framework``'s object on ``device``.

    Raises:
        FrameworkInputError: when the object made holds another dtype or shape (JAX without
            ``jax_enable_x64`` makes float32 of float64), naming both and the framework's hint.
    """
    fw = framework_of(framework)
    assert fw.to_framework is not None, f"{framework} is converted by harness.devices"
    array = case_array(values, dtype)
    obj = fw.to_framework(array, device)
    got = dtype_name(obj)
    if got is not None and got != dtype:
        raise FrameworkInputError(f"{fw.name} made a {got} input for a {dtype} case{fw.hint(dtype, got)}")
    shape = getattr(obj, "shape", None)
    if shape is not None and tuple(shape) != array.shape:
        raise FrameworkInputError(f"{fw.name} made an input of shape {tuple(shape)} for one of shape {array.shape}")
    return obj
