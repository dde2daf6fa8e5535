"""The harness's exceptions: one root, messages that name the file, case and key.

Style follows Hypothesis: a single root exception (:class:`HarnessError`) so
callers can catch everything the harness raises on purpose, and messages that
quote the offending value.
"""

from __future__ import annotations


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
        self.detail = detail
        where = path if line is None else f"{path}:{line}"
        parts = [where]
        if case_id is not None:
            parts.append(f"case {case_id!r}")
        if key is not None:
            parts.append(f"key {key!r}")
        super().__init__(f"{', '.join(parts)}: {detail}")


class UsageError(HarnessError):
    """Bad command-line usage or an unknown name (implementation, dtype, device)."""


class PluginError(HarnessError):
    """A plug-in module could not be imported or registered an invalid implementation."""
