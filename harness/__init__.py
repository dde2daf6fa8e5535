"""autograd-harness: prove, with evidence, whether a gradient and a training step are right.

Public API (see the README):

- :func:`implementation` registers a step function; :class:`StepResult` is what it returns.
- :func:`verify` grades implementations on cases and returns :class:`Record` objects.
- :func:`assert_agrees` raises ``AssertionError`` with a torch.testing-style message.
- :func:`load_cases`, :func:`make_case` build cases; :func:`derive` gives the formulas.
"""

from .api import assert_agrees, default_cases
from .cases import Case, case_from_arrays, load_cases, make_case
from .errors import CaseFileError, HarnessError, PluginError, UsageError
from .implementations import Implementation, StepResult, implementation
from .records import Record
from .runner import RunOptions, verify
from .symbolic import derive

__version__ = "0.1.0"

__all__ = [
    "Case",
    "CaseFileError",
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
    "verify",
]
