"""Implementations under test: the registry, the built-ins and the plug-in contract."""

from .catalog import implementation_of, load_builtins, load_mutants, may_run_torch, resolve
from .registry import (
    ENTRY_POINT_GROUP,
    REGISTRY,
    Implementation,
    KnownBug,
    StepResult,
    implementation,
    known_bug_of,
    load_entry_points,
    load_plugin,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "REGISTRY",
    "Implementation",
    "KnownBug",
    "StepResult",
    "implementation",
    "implementation_of",
    "known_bug_of",
    "load_builtins",
    "load_entry_points",
    "load_mutants",
    "load_plugin",
    "may_run_torch",
    "resolve",
]
