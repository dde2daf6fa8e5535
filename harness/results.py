"""A step's result sequence, as the harness reads it: a list, a tuple or a generator of per-step results.

A generator is read lazily and never past ``steps + 1`` items: one more than the case's
steps is enough to tell that it yields too many (an error, as a list that long is), so a
generator that never ends costs one extra step and cannot hang the run. A plain 5-tuple
``(loss, grad_W, grad_b, W, b)`` stands for :class:`harness.StepResult`.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice
from typing import Any

from .errors import HarnessError
from .implementations.registry import StepResult

#: The fields of one step's result: loss, grad_W, grad_b, W, b.
FIELDS = 5


class StepResultsError(HarnessError):
    """A step's results are not a sequence of ``steps`` per-step results."""


def collect_steps(results: Any, steps: int) -> Any:
    """``results`` as a list of per-step results when it is a generator or iterator (at most
    ``steps`` of them read, plus one to detect a surplus), else ``results`` itself (a list or
    tuple, checked later); plain 5-tuples become :class:`StepResult`.

    Raises:
        StepResultsError: for an iterator that yields more than ``steps`` results (it is closed,
            and nothing more is read from it). Exceptions the iterator raises are passed on.
    """
    if isinstance(results, Iterator):
        got = list(islice(results, steps + 1))
        if len(got) > steps:
            close = getattr(results, "close", None)
            if callable(close):
                try:
                    close()
                except Exception:  # noqa: BLE001 - a generator's cleanup code is user code; the error below says enough
                    pass
            raise StepResultsError(f"its result generator yielded more than steps={steps} results (the harness stops "
                                   f"reading after {steps + 1}): yield exactly one result per step; not graded")
        results = got
    if type(results) in (list, tuple):
        return [StepResult(*r) if type(r) is tuple and len(r) == FIELDS else r for r in results]
    return results
