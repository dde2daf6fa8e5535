"""Array frameworks as plug-ins: handing inputs to a step in its framework, and reading its results.

See :mod:`harness.frameworks.registry` (the adapters, :func:`register_framework`),
:mod:`harness.frameworks.dispatch` (the one dispatch on a step's framework) and
:mod:`harness.frameworks.interchange` (reading results through ``__array__``,
``__dlpack__`` and ``.numpy()``; bfloat16 through ``ml_dtypes``) and :mod:`harness.frameworks.subnormals` (whether
a framework flushes subnormals in float16 or bfloat16: a probe).
"""

from . import builtin  # noqa: F401 - registers the built-in adapters (none imports its framework)
from .dispatch import FrameworkInputError, to_float64, to_framework, unsupported_reason
from .interchange import PROTOCOLS, ResultReadError, case_array, dtype_name, has_ml_dtypes, read_result
from .registry import FRAMEWORKS, Framework, framework_of, hint_for, reader_of, register_framework
from .subnormals import flushes_subnormals

__all__ = [
    "FRAMEWORKS",
    "PROTOCOLS",
    "Framework",
    "FrameworkInputError",
    "ResultReadError",
    "case_array",
    "dtype_name",
    "flushes_subnormals",
    "framework_of",
    "has_ml_dtypes",
    "hint_for",
    "read_result",
    "reader_of",
    "register_framework",
    "to_float64",
    "to_framework",
    "unsupported_reason",
]
