"""JAX's process-wide configuration that one step can leave changed for the next: read before a call, restored after.

A step that ends with ``jax.config.update("jax_enable_x64", False)`` made the next JAX implementation's float64
inputs float32, and its records ``error`` ("jax made a float32 input ... enable jax_enable_x64") blamed on a step
that is right; a step that turned x64 on inside its body made the records depend on which step ran before it, and
so on ``--jobs`` (helper-83). As :mod:`harness.frameworks.torch_switches` does for torch, :func:`read` takes the
options below before a step runs (only where JAX is imported: the harness never imports it) and :func:`restore`
puts back what the step changed, naming it. Each is read as the value in effect (``jax.config.<name>``: an
option with a context manager, ``jax.enable_x64(...)``, is not readable with ``jax.config.read`` in JAX 0.10, and
six of the seven went unread, helper-84) and set with ``jax.config.update``, JAX's public configuration API.

``update`` sets the global value; a context manager entered and never left (``jax.enable_x64(True).__enter__()``)
holds a thread-local value that no public function takes back. :func:`unrestored` names the options still changed
after :func:`restore`; the runner then does not grade that step, nor any later JAX step in the process."""

from __future__ import annotations

import sys
from typing import Any

#: The options read and restored: those that change what a later step computes or how its inputs are made.
OPTIONS = ("jax_enable_x64", "jax_default_matmul_precision", "jax_default_device", "jax_numpy_rank_promotion",
           "jax_disable_jit", "jax_debug_nans", "jax_debug_infs")


def read() -> dict[str, Any] | None:
    """The options' values (an option this JAX lacks is left out), or None where JAX is not imported."""
    jax = sys.modules.get("jax")
    config = getattr(jax, "config", None)
    if config is None:
        return None
    out: dict[str, Any] = {}
    for name in OPTIONS:
        try:
            out[name] = _value(config, name)
        except Exception:  # noqa: BLE001 - an option this version of JAX does not have
            continue
    return out


def _value(config: Any, name: str) -> Any:
    """The value of ``name`` in effect in this thread (a context manager's included)."""
    try:
        return getattr(config, name)
    except AttributeError:
        return config.read(name)


def _same(a: Any, b: Any) -> bool:
    return a is b or bool(a == b)


def restore(saved: dict[str, Any] | None) -> list[str]:
    """Set back each option that differs from ``saved`` (:func:`read` before the step); what was changed, in words.
    Nothing where JAX was not imported before the step (its values then were JAX's own, set by nobody)."""
    jax = sys.modules.get("jax")
    config = getattr(jax, "config", None)
    if config is None or saved is None:
        return []
    left: list[str] = []
    for name, before in saved.items():
        try:
            now = _value(config, name)
            if _same(now, before):
                continue
            config.update(name, before)
            if not _same(_value(config, name), before):
                continue  # a thread-local value: :func:`unrestored` names it
        except Exception as exc:  # noqa: BLE001 - a value JAX will not take back: named, not fatal
            left.append(f"JAX's {name} could not be set back ({type(exc).__name__})")
            continue
        left.append(f"JAX's {name} {now!r} (jax.config.update)")
    return left


def unrestored(saved: dict[str, Any] | None) -> list[str]:
    """The options of ``saved`` still changed after :func:`restore` (a thread-local value of a context manager entered
    and never left), in words; empty where JAX is not imported or nothing stayed changed."""
    jax = sys.modules.get("jax")
    config = getattr(jax, "config", None)
    if config is None or saved is None:
        return []
    out = []
    for name, before in saved.items():
        try:
            now = _value(config, name)
        except Exception:  # noqa: BLE001 - read before, unreadable now: named as changed
            out.append(f"{name} (unreadable)")
            continue
        if not _same(now, before):
            out.append(f"{name} {now!r}")
    return out
