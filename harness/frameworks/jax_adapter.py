"""JAX: inputs as ``jax.Array`` on the case's device (``jax.device_put``); results read through ``__array__``.

JAX holds float64 only with ``jax_enable_x64`` on (``jax.config.update("jax_enable_x64", True)``,
or ``JAX_ENABLE_X64=1``); without it a float64 input becomes float32, which the harness
reports as an ``error`` naming the setting, never grades as float64.
"""

from __future__ import annotations

from typing import Any

from .registry import Framework

INSTALL = "pip install 'autograd-harness[jax]' (or jax[cpu])"


def to_jax(array: Any, device: str) -> Any:
    """``array`` (a NumPy array in the case's dtype) as a ``jax.Array`` on ``device``
    (``"cpu"``, ``"cuda:i"``: JAX's i-th GPU)."""
    import jax

    kind, _, index = device.partition(":")
    dev = jax.devices("cpu")[0] if kind == "cpu" else jax.devices("gpu")[int(index or 0)]
    return jax.device_put(array, dev)


def jax_devices() -> set[str]:
    """``{"cpu"}``, plus ``"cuda"`` when JAX has a GPU backend."""
    import jax

    out = {"cpu"}
    try:
        if jax.devices("gpu"):
            out.add("cuda")
    except RuntimeError:  # no GPU backend
        pass
    return out


def x64_hint(case_dtype: str, got_dtype: str) -> str:
    """JAX's hint for a narrower dtype than the case's."""
    import jax

    if case_dtype == "float64" and not jax.config.read("jax_enable_x64"):
        return ("with JAX, enable jax_enable_x64 (jax.config.update('jax_enable_x64', True) in the plug-in module, "
                "or JAX_ENABLE_X64=1), or declare dtypes=('float32', 'float16', 'bfloat16')")
    return (f"with JAX, keep the inputs' dtype ({case_dtype}): an explicit dtype (jnp.float32, .astype) "
            "or an array created without one may have narrowed it")


FRAMEWORK = Framework("jax", to_jax, devices=jax_devices, dtype_hint=x64_hint, module="jax", install=INSTALL, builtin=True)
