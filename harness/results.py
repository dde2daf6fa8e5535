"""A step's result sequence, as the harness reads it: a list, a tuple or a generator of per-step results.

A generator is read lazily and never past ``steps + 1`` items: one more than the case's
steps is enough to tell that it yields too many (an error, as a list that long is), so a
generator that never ends costs one extra step and cannot hang the run. A plain 5-tuple
``(loss, grad_W, grad_b, W, b)`` stands for :class:`harness.StepResult`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from itertools import islice
from typing import Any

import numpy as np
import numpy.typing as npt

from .errors import HarnessError
from .floats import FloatFormat, get_format, inexact_in_float64, round_to_format
from .frameworks import PROTOCOLS, ResultReadError, hint_for, read_result, reader_of
from .implementations.registry import StepResult
from .shapes import same_up_to_size1

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


def complex_or_object(value: Any) -> str | None:
    """``"complex values: ..."`` or ``"object values: ..."`` where a value is complex or an object
    array (converting it to float64 would drop the imaginary part or coerce arbitrary objects)."""
    if isinstance(value, complex):
        return f"complex values: {value!r}"
    dt = getattr(value, "dtype", None)
    if dt is None:
        if isinstance(value, list | tuple):
            try:
                dt = np.asarray(value).dtype
            except Exception:
                return None
        else:
            return None
    torch = sys.modules.get("torch")
    if torch is not None and type(dt) is torch.dtype:  # (NumPy reads no torch dtype: np.dtype below raises TypeError)
        return f"complex values: dtype {dt}" if dt.is_complex else None  # type: ignore[union-attr]
    is_complex = getattr(dt, "is_complex", None)
    if isinstance(is_complex, bool) and is_complex:  # torch.dtype
        return f"complex values: dtype {dt}"
    try:
        kind = np.dtype(dt).kind
    except TypeError:
        return None
    if kind == "c":
        return f"complex values: dtype {dt}"
    if kind == "O":
        return f"object values: dtype {dt}"
    return None


def _numbers_of_by_type(value: Any, fmt: FloatFormat) -> bool:
    """Whether every value read from ``value`` is a number of ``fmt`` whatever it holds, so that :func:`read_quantity`
    need not round them to ``fmt`` to find out: where ``fmt`` is float64 (every float64 value is one: the rounding is
    the identity), or ``value`` is a plain NumPy array (``type(value) is np.ndarray``, whose conversion is NumPy's own)
    of ``fmt``'s dtype (float16 or float32)."""
    if fmt.name == "float64":
        return True
    return type(value) is np.ndarray and value.dtype.kind == "f" and value.dtype.name == fmt.name


def read_quantity(value: Any, what: str, want: tuple[int, ...], fmt: FloatFormat | None,
                  framework: str | None) -> npt.NDArray[np.float64] | str:
    """One returned quantity as a float64 array of shape ``want``, or why it cannot be graded.

    The one reading of a returned value (the linear step's fields, a model's loss, gradients and
    parameters): real floating-point values (not complex, not objects), readable through the
    framework, not of a narrower dtype than ``fmt`` (with the framework's hint), of shape ``want``
    (size-1 axes aside: a (K,) bias may come back as (1, K)), and numbers of ``fmt``.

    Args:
        value: what the step returned; what: its name in messages (``"step 1: grad_W"``).
        want: the expected shape; fmt: the case's dtype (None: no dtype checks); framework: the step's.
    """
    bad_kind = complex_or_object(value)
    if bad_kind:
        return f"{what} returned {bad_kind}: return real floating-point values of the case's dtype"
    try:
        arr, got = read_result(value, reader_of(framework))
    except ResultReadError as exc:
        return f"{what} cannot be read as numbers: {exc}"
    except Exception as exc:  # user objects: anything they raise is this implementation's error
        return (f"{what} cannot be read as numbers: {type(exc).__name__}: {exc} "
                f"(return NumPy arrays, torch tensors, or objects with {PROTOCOLS})")
    if isinstance(value, np.ndarray | np.generic) and inexact_in_float64(np.asarray(value), np.asarray(arr)).any():
        return (f"{what} holds values of dtype {value.dtype} that float64 cannot hold exactly (they would be rounded "
                "before grading): return values of the case's dtype")
    if fmt is not None and got is not None and get_format(got).precision < fmt.precision:
        return (f"{what} returned {got} for a {fmt.name} case: it was computed in a narrower dtype than "
                f"the case's{hint_for(framework, fmt.name, got)}; not graded")
    arr = np.asarray(arr, dtype=np.float64)
    if arr.shape != want:
        if not same_up_to_size1(tuple(arr.shape), want):
            return f"{what} has shape {tuple(arr.shape)}, expected {want} (transposed or flattened?)"
        arr = arr.reshape(want)
    if fmt is not None and not _numbers_of_by_type(value, fmt):
        finite = arr[np.isfinite(arr)]
        if finite.size and np.any(round_to_format(finite, fmt) != finite):
            dt = getattr(value, "dtype", None)
            return (f"{what} holds values that are not {fmt.name} numbers"
                    f"{f' (its dtype is {dt})' if dt is not None else ''}: return tensors in the case's dtype")
    return arr
