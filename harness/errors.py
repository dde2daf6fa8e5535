"""The harness's exceptions: one root, messages that name the file, case and key.

Style follows Hypothesis: a single root exception (:class:`HarnessError`) so
callers can catch everything the harness raises on purpose, and messages that
quote the offending value.
"""

from __future__ import annotations

import reprlib
import unicodedata
from typing import Any

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


#: Unicode categories that are not printed text: control (newline, ESC, carriage return), format (the bidirectional
#: overrides, U+202E), line and paragraph separators, surrogates, private use and unassigned code points. A case id
#: may hold none of them (:func:`harness.cases.cases_from_table`), and :func:`terminal_text` escapes them.
UNPRINTABLE = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})
#: Format characters that count as printable all the same: the zero-width non-joiner and joiner (U+200C, U+200D),
#: which correctly spelled words (Persian) and emoji sequences need, and which neither move nor hide other text.
JOINERS = frozenset({"\u200c", "\u200d"})


def hidden_char(c: str) -> bool:
    """Whether the character ``c`` is not printed text (:data:`UNPRINTABLE`, the :data:`JOINERS` apart): the one rule of
    what a case id may not hold (:func:`harness.cases.cases_from_table`) and of what :func:`terminal_text` escapes."""
    return c not in JOINERS and unicodedata.category(c) in UNPRINTABLE


def _terminal_char(c: str) -> str:
    if c in "\n\t" or not hidden_char(c):
        return c
    return repr(c)[1:-1]


def terminal_text(text: str) -> str:
    """``text`` as it may reach a terminal: every character of :data:`UNPRINTABLE` but newline and tab (ESC, carriage
    return, NUL, the right-to-left override U+202E, a lone surrogate) written as its Python backslash escape
    (``\\x1b``, ``\\r``, ``\\u202e``, ``\\udc80``); other text unchanged.

    The one sanitiser of the harness's terminal writers: ``check``'s, ``report``'s and every command's standard output
    and error (:func:`harness.cli.main`), the progress line and the pytest plugin's summary and failure messages. A
    plug-in's exception text, or a results file's strings, holding ``\\x1b[2K\\r`` (erase the line, go to its start)
    had erased a FAIL line printed before it (helper-190). Linear in ``len(text)``; never raises for a ``str``."""
    if not text or all(line.isprintable() for line in text.split("\n")):
        return text
    return "".join(c if c.isprintable() else _terminal_char(c) for c in text)


class TerminalStream:
    """A text stream that writes through :func:`terminal_text`: the standard output and error of
    every command while :func:`harness.cli.main` runs, so that no text from the data (a plug-in's exception message, a results
    file's strings) reaches the terminal with its escape sequences, carriage returns or bidirectional overrides.
    ``wrapped`` is the stream itself, for the progress bar's own control sequences (:class:`harness.progress.Progress`);
    everything else (``isatty``, ``fileno``, ``flush``, ``encoding``) is the wrapped stream's; a step that closes
    it closes the wrapped stream, and :func:`harness.interpreter_state.restore` reopens that one in its place."""

    def __init__(self, wrapped: Any) -> None:
        self.wrapped = wrapped

    def write(self, text: str) -> int:
        self.wrapped.write(terminal_text(text))
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrapped, name)


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
