"""autograd-harness: prove, with evidence, whether a gradient and a training step are right.

Public API (see the README):

- :func:`implementation` registers a step function; :class:`StepResult` is what it returns.
- :func:`register_framework` adds an array framework a step may be written in (:class:`Framework`).
- :func:`verify` grades implementations on cases and returns :class:`Record` objects.
- :func:`assert_agrees` raises ``AssertionError`` with a torch.testing-style message.
- :func:`load_cases`, :func:`make_case` build cases; :func:`derive` gives the formulas.

The names are imported lazily (PEP 562): ``import harness`` is cheap, so the
pytest plugin (``harness.pytest_plugin``, loaded by pytest in every project
that has the package installed) costs nothing until it is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .api import assert_agrees, default_cases
    from .cases import Case, case_from_arrays, load_cases, make_case
    from .errors import CaseFileError, HarnessError, PluginError, UsageError
    from .frameworks import Framework, register_framework
    from .implementations import Implementation, StepResult, implementation
    from .records import Record
    from .runner import RunOptions, verify
    from .symbolic import derive

__version__ = "0.1.0"

_WHERE = {
    "assert_agrees": "api", "default_cases": "api",
    "Case": "cases", "case_from_arrays": "cases", "load_cases": "cases", "make_case": "cases",
    "Framework": "frameworks", "register_framework": "frameworks",
    "CaseFileError": "errors", "HarnessError": "errors", "PluginError": "errors", "UsageError": "errors",
    "Implementation": "implementations", "StepResult": "implementations", "implementation": "implementations",
    "Record": "records", "RunOptions": "runner", "verify": "runner", "derive": "symbolic",
}

__all__ = [
    "Case",
    "CaseFileError",
    "Framework",
    "HarnessError",
    "Implementation",
    "PluginError",
    "Record",
    "RunOptions",
    "StepResult",
    "UsageError",
    "assert_agrees",
    "case_from_arrays",
    "default_cases",
    "derive",
    "implementation",
    "load_cases",
    "make_case",
    "register_framework",
    "verify",
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'harness' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])
