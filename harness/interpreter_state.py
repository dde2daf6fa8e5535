"""Interpreter state a step or a plug-in's import can leave changed: the recursion limit and the standard streams.

The harness runs user code in its own process (inline, and in every worker); what that code leaves behind would act
on whatever the harness does next. A recursion limit lowered to 60 (``sys.setrecursionlimit``) made the next correct
implementations' grading fail with ``RecursionError`` (48 error records blamed on torch-seed and numpy-hand after one
such plug-in in the seed cases); ``sys.stdout = open(os.devnull, "w")`` (silencing a noisy library, never undone)
sent the run's summary and verdict lines nowhere; ``sys.stdout.close()`` made a run whose records all passed end
with ``ValueError: I/O operation on closed file`` and exit 1. :func:`read` takes the state before user code runs
and :func:`restore` puts it back afterwards, returning what was changed, in words, for the records or a warning.

The floating-point environment (:mod:`harness.fpenv`), torch's global switches
(:mod:`harness.frameworks.torch_switches`), the working directory and timers (:mod:`harness.runner`) are restored
by their own modules.
"""

from __future__ import annotations

import io
import os
import sys
from dataclasses import dataclass
from typing import Any, TextIO

from .errors import TerminalStream

#: The standard streams restored, by their name in :mod:`sys`.
STREAMS = ("stdout", "stderr")


@dataclass(frozen=True)
class InterpreterState:
    """What :func:`read` saw: the recursion limit, and each standard stream with its file descriptor (None when it
    has none, e.g. pytest's in-memory capture)."""

    recursion_limit: int
    streams: tuple[tuple[Any, int | None], ...]


def _fileno(stream: Any) -> int | None:
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None
    return fd if isinstance(fd, int) else None


def read() -> InterpreterState:
    """The interpreter state now (cheap: a few attribute reads; no system call but ``fileno``)."""
    return InterpreterState(sys.getrecursionlimit(), tuple((s, _fileno(s)) for s in (getattr(sys, n) for n in STREAMS)))


def _closed(stream: Any) -> bool:
    try:
        return bool(stream.closed)
    except Exception:  # noqa: BLE001 - a stream object of any kind; one that cannot say is taken as open
        return False


def _reopened(old: Any, fd: int) -> TextIO | None:
    """A text stream on ``fd`` (still open) with ``old``'s encoding, error handler and line buffering; None when the
    descriptor was closed too."""
    try:
        os.fstat(fd)
    except OSError:
        return None
    raw = open(fd, "wb", closefd=False)  # noqa: SIM115 - it becomes the new stream's buffer
    return io.TextIOWrapper(raw, encoding=getattr(old, "encoding", None) or "utf-8",
                            errors=getattr(old, "errors", None) or "backslashreplace",
                            line_buffering=bool(getattr(old, "line_buffering", True)))


def restore(before: InterpreterState) -> list[str]:
    """Put back what user code changed since ``before`` (:func:`read`); returns each change, in words (empty: none).

    - The recursion limit: set back to ``before``'s.
    - ``sys.stdout`` and ``sys.stderr``: a stream replaced is put back; a stream closed (``sys.stdout.close()``) is
      replaced by a new text stream on the same file descriptor, which closing ``sys.stdout`` leaves open (Python
      opens the standard streams with ``closefd=False``); if the descriptor was closed too (``os.close(1)``), the
      change is only named.
    """
    changed = []
    limit = sys.getrecursionlimit()
    if limit != before.recursion_limit:
        sys.setrecursionlimit(before.recursion_limit)
        changed.append(f"the recursion limit changed to {limit} (sys.setrecursionlimit; set back to {before.recursion_limit})")
    for name, (stream, fd) in zip(STREAMS, before.streams, strict=True):
        now = getattr(sys, name)
        if now is not stream:
            setattr(sys, name, stream)
            label = type(now).__name__ + (f" {now.name!r}" if isinstance(getattr(now, "name", None), str | int) else "")
            changed.append(f"sys.{name} replaced by {label} (set back)")
        if _closed(stream):
            fresh = _reopened(stream, fd) if fd is not None else None
            if fresh is not None and isinstance(stream, TerminalStream):
                stream.wrapped = fresh  # (the command's own stream stays: its text is still sanitised)
                changed.append(f"sys.{name} closed (reopened on file descriptor {fd})")
            elif fresh is not None:
                setattr(sys, name, fresh)
                changed.append(f"sys.{name} closed (reopened on file descriptor {fd})")
            else:
                changed.append(f"sys.{name} closed, with its file descriptor (it could not be reopened)")
    return changed
