"""The catalogue: loading the built-in implementations and the mutants, and looking implementations up.

Kept apart from :mod:`harness.implementations.registry` (which the built-ins import to
register themselves) so that the registry never imports the modules that import it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ..errors import UsageError
from .registry import REGISTRY, Implementation


def load_builtins() -> None:
    """Import the built-in implementations (registers them)."""
    from ..models import numpy_steps as model_numpy_steps  # noqa: F401
    from ..models import torch_steps as model_torch_steps  # noqa: F401
    from ..optim import numpy_steps as optim_numpy_steps  # noqa: F401
    from . import finite_differences, numpy_steps, torch_steps  # noqa: F401


def load_mutants() -> None:
    """Import the catalogue of deliberately buggy implementations (for ``selftest``)."""
    from ..models import mutants as model_mutants  # noqa: F401
    from ..optim import mutants as optim_mutants  # noqa: F401
    from . import mutants, mutants_semantics  # noqa: F401


def resolve(names: Iterable[str] | None, *, include_mutants: bool = False) -> list[Implementation]:
    """The implementations to run: by name, or every correct default one when ``names`` is None.

    Opt-in implementations (``default=False``, e.g. ``torch-compile``) and
    mutants (``correct=False``) run only when named.

    Raises:
        UsageError: naming an unknown implementation and listing the known ones.
    """
    load_builtins()
    if names is not None and any(n.startswith("mutant-") for n in names):
        load_mutants()
    if names is None:
        return [i for i in REGISTRY.values() if (i.correct and i.default) or (include_mutants and not i.correct)]
    out = []
    for n in names:
        if n not in REGISTRY:
            raise UsageError(f"unknown implementation {n!r}; known: {', '.join(sorted(REGISTRY))}")
        out.append(REGISTRY[n])
    return out


def implementation_of(step: str | Implementation | Callable[..., Any]) -> Implementation:
    """The one rule for naming an implementation: by name, as an object, or as its registered step function.

    Raises:
        UsageError: for an unknown name (listing the known ones) or a function that was never registered.
    """
    if isinstance(step, Implementation):
        return step
    if isinstance(step, str):
        return resolve([step])[0]  # loads the built-ins (and the mutants for a mutant-* name)
    for impl in REGISTRY.values():
        if impl.fn is step:
            return impl
    raise UsageError(f"{step!r} is not registered: decorate it with @harness.implementation(name, framework=...)")
