"""The one parse of a timeout option (``check --timeout``, ``--harness-timeout``): a number of seconds above 0.

Imports nothing heavy: the pytest plugin parses its options at start-up, before NumPy or torch is imported."""

from __future__ import annotations

import math

from .errors import UsageError


def parse_timeout(text: str | float | None, option: str = "--timeout") -> float | None:
    """Seconds, a finite number above 0, from ``text`` (None: no timeout given, the default applies).

    Raises:
        UsageError: naming ``option`` and the value, for a value that is not a number, is 0 or below, NaN or infinite
            (``--harness-timeout -1`` was taken, and every item then ran past a timeout of -1 s: helper-78)."""
    if text is None:
        return None
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise UsageError(f"{option}: expected a number of seconds > 0, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise UsageError(f"{option}: expected a number of seconds > 0, got {text!r}")
    return value


def check_timeout_isolation(timeout: float | None, isolation: str, option: str = "--timeout",
                            isolation_option: str = "--isolation process") -> None:
    """A timeout holds only a step run in a supervised worker process: refuse one given with inline isolation.

    Raises:
        UsageError: naming ``option`` and ``isolation_option``, for a timeout with ``isolation`` other than
            ``"process"`` (it was taken and ignored: a hanging step hung the run, helper-95)."""
    if timeout is not None and isolation != "process":
        raise UsageError(f"{option} {timeout:g}: a timeout needs {isolation_option} (an inline step runs in this "
                         "process, where nothing can stop it); give both, or neither")
