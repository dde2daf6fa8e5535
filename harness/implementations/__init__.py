"""Implementations under test: the registry, the built-ins and the plug-in contract."""

from .registry import (
    ENTRY_POINT_GROUP,
    REGISTRY,
    Implementation,
    StepResult,
    implementation,
    load_builtins,
    load_entry_points,
    load_mutants,
    load_plugin,
    resolve,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "REGISTRY",
    "Implementation",
    "StepResult",
    "implementation",
    "load_builtins",
    "load_entry_points",
    "load_mutants",
    "load_plugin",
    "resolve",
]
