"""The harness's exceptions: one root, messages that name the file, case and key.

Style follows Hypothesis: a single root exception (:class:`HarnessError`) so
callers can catch everything the harness raises on purpose, and messages that
quote the offending value.
"""

from __future__ import annotations

import reprlib

#: At most this many characters of a quoted value appear in a message.
QUOTE_LIMIT = 60
#: At most this many characters of detail in one error message.
DETAIL_LIMIT = 400


def quote(value: object, limit: int = QUOTE_LIMIT) -> str:
    """``repr(value)`` on one line, cut to ``limit`` characters (``...`` and the full length when cut).

    Every message that shows a bad value uses this, so a 1 MB string or a deeply
    nested array never floods the terminal."""
    if isinstance(value, str | bytes | int | float):
        try:
            text = repr(value) if not isinstance(value, str | bytes) or len(value) <= 4 * limit else repr(value[: 4 * limit])
        except ValueError:  # an int too long for repr
            text = f"<int of {value.bit_length()} bits>" if isinstance(value, int) else f"<{type(value).__name__}>"
        full = len(value) + 2 if isinstance(value, str | bytes) and len(value) > 4 * limit else len(text)
    else:
        try:
            text = _SHORT_REPR.repr(value)  # containers abbreviated: cost bounded whatever their size
        except (RecursionError, ValueError):
            text = f"<{type(value).__name__}>"
        full = len(text)
    text = _one_line(text)
    if len(text) > limit or full > len(text):
        return f"{text[:limit]}... ({max(full, len(text))} characters)"
    return text


_SHORT_REPR = reprlib.Repr()
_SHORT_REPR.maxlevel, _SHORT_REPR.maxlist, _SHORT_REPR.maxdict = 3, 8, 6
_SHORT_REPR.maxstring = _SHORT_REPR.maxother = _SHORT_REPR.maxlong = 2 * QUOTE_LIMIT


def _one_line(text: str) -> str:
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class HarnessError(Exception):
    """Root of every exception the harness raises deliberately."""


class CaseFileError(HarnessError, ValueError):
    """A case file, or one case in it, is malformed.

    Attributes:
        path: the case file (or ``"<memory>"`` for cases built in code).
        case_id: the ``id`` of the offending case, or ``None`` for file-level errors.
        key: the offending key, or ``None``.
        line: 1-based line number for TOML syntax errors, else ``None``.
    """

    def __init__(
        self,
        detail: str,
        *,
        path: str = "<memory>",
        case_id: str | None = None,
        key: str | None = None,
        line: int | None = None,
    ) -> None:
        self.path = path
        self.case_id = case_id
        self.key = key
        self.line = line
        detail = _one_line(detail)
        if len(detail) > DETAIL_LIMIT:
            detail = detail[:DETAIL_LIMIT] + "..."
        self.detail = detail
        where = _one_line(path if line is None else f"{path}:{line}")
        parts = [where]
        if case_id is not None:
            parts.append(f"case {quote(case_id, 80)}")
        if key is not None:
            parts.append(f"key {quote(key, 80)}")
        super().__init__(f"{', '.join(parts)}: {detail}")


class LimitError(CaseFileError):
    """A case is valid but larger than the run's limits (elements, steps, oracle cost, data size).

    The message gives the figure, the limit and the option that raises it."""


class UsageError(HarnessError):
    """Bad command-line usage or an unknown name (implementation, dtype, device)."""


class PluginError(HarnessError):
    """A plug-in module could not be imported or registered an invalid implementation."""


class ErrorModelError(HarnessError):
    """An implementation's own error model (``error_model=``) returned bounds the comparison cannot use: a
    quantity missing, a shape other than the quantity's, or a negative bound (which every error would be within)."""
