"""The catalogue: loading the built-in implementations and the mutants, and looking implementations up.

Kept apart from :mod:`harness.implementations.registry` (which the built-ins import to
register themselves) so that the registry never imports the modules that import it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ..errors import UsageError
from .registry import REGISTRY, Implementation


def load_builtins(*, with_torch: bool = True) -> None:
    """Import the built-in implementations (registers them).

    ``with_torch=False`` imports only the built-ins whose modules do not import torch (the NumPy ones and finite
    differences, about 0.2 s against 1.2 s with torch), for a caller that looks names up before it may import
    torch; a later ``load_builtins()`` adds the rest (their registration order then differs from one call's: a
    caller that runs every implementation in registry order calls ``load_builtins()`` alone)."""
    from ..models import numpy_steps as model_numpy_steps  # noqa: F401
    if with_torch:
        from ..models import torch_steps as model_torch_steps  # noqa: F401
    from ..optim import numpy_steps as optim_numpy_steps  # noqa: F401
    from . import finite_differences, numpy_steps  # noqa: F401
    if with_torch:
        from . import torch_steps  # noqa: F401


def may_run_torch(names: Iterable[str] | None) -> bool:
    """Whether running the implementations ``names`` (None: every default one) may run a torch step, and so make a
    torch optimizer, whose first one imports ``torch._dynamo`` (about 1.2 s): False only when every name is
    registered with another framework (a plug-in already loaded, or a built-in whose module imports no torch, which
    this loads without torch). An unknown name counts as torch. It decides what the fork server preloads
    (:func:`harness.isolation.start_fork_server`), never a record."""
    if names is None:
        return True
    load_builtins(with_torch=False)
    return any(name not in REGISTRY or REGISTRY[name].framework == "torch" for name in names)


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
