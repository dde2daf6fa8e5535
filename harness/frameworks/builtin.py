"""The built-in framework adapters, registered on import (none of them imports its framework here)."""

from __future__ import annotations

from . import dlpack_adapter, jax_adapter, tensorflow_adapter
from .registry import FRAMEWORKS, Framework


def _torch_devices() -> set[str]:
    from ..devices import available_devices_types

    return available_devices_types()


def _register() -> None:
    entries = [
        Framework("torch", None, devices=_torch_devices, module="torch", builtin=True),
        Framework("numpy", None, devices=("cpu",), dtypes=("float64", "float32", "float16"), module="numpy", builtin=True),
        jax_adapter.FRAMEWORK,
        tensorflow_adapter.FRAMEWORK,
        dlpack_adapter.FRAMEWORK,
    ]
    for fw in entries:
        FRAMEWORKS.setdefault(fw.name, fw)


_register()
