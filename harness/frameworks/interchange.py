"""Reading a step's results, and making its inputs, through NumPy as the bridge.

Results are read through the standard interchange protocols, in this order, the first
that works winning: a torch tensor directly; NumPy arrays, NumPy scalars, Python numbers,
lists and tuples; the framework's own ``to_numpy`` (see
:class:`harness.frameworks.Framework`); ``__array__`` (JAX, TensorFlow, NumPy-compatible
wrappers); ``__dlpack__`` (``numpy.from_dlpack``, or ``torch.from_dlpack`` for a
producer on another device: CuPy); ``.numpy()`` (tinygrad, TensorFlow).

bfloat16 crosses NumPy as ``ml_dtypes.bfloat16`` (the type JAX and TensorFlow use; it
is installed with JAX). Every dtype the harness grades in converts to float64 exactly.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import HarnessError
from ..floats import DTYPES, get_format, round_to_format

F64 = npt.NDArray[np.float64]

#: The protocols a result may implement, as a message names them.
PROTOCOLS = "__array__, __dlpack__ or .numpy()"


class ResultReadError(HarnessError):
    """A value a step returned (or an input a framework made) cannot be read as real numbers."""


def has_ml_dtypes() -> bool:
    """Whether ``ml_dtypes`` (NumPy's bfloat16) can be imported."""
    return importlib.util.find_spec("ml_dtypes") is not None


def numpy_dtype(dtype: str) -> Any:
    """The NumPy dtype called ``dtype`` (``"bfloat16"``: ``ml_dtypes.bfloat16``).

    Raises:
        ResultReadError: for bfloat16 when ``ml_dtypes`` is not installed.
    """
    if dtype == "bfloat16":
        try:
            import ml_dtypes
        except ImportError as exc:
            raise ResultReadError("bfloat16 through NumPy needs ml_dtypes (pip install ml_dtypes; JAX installs it)") from exc
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(dtype)


def case_array(values: npt.ArrayLike, dtype: str) -> Any:
    """Float64 ``values`` as a NumPy array of ``dtype``, rounded to nearest (ties to even) exactly as
    ``torch.tensor(values, dtype=...)`` rounds them (:func:`harness.floats.round_to_format`, then an
    exact cast); values beyond the dtype's range become ``±inf``."""
    rounded = round_to_format(np.asarray(values, dtype=np.float64), get_format(dtype))
    with np.errstate(over="ignore"):
        return rounded.astype(numpy_dtype(dtype))


#: :func:`dtype_name` of NumPy and torch dtype objects (immutable), by ``id``, each with the dtype itself (held, so
#: its ``id`` is not reused; a hit is the same object): NumPy forms a dtype's ``name`` in Python on every read, a
#: few microseconds, and a check reads the dtypes of its inputs and of every result. Emptied at :data:`_NAMES_HELD`.
_NAMES: dict[int, tuple[Any, str | None]] = {}
_NAMES_HELD = 256


def dtype_name(value: Any) -> str | None:
    """The harness's name (``"float32"``, ``"bfloat16"``...) of the dtype ``value`` holds, or None when
    it has no dtype the harness knows (a Python float, an integer array, an object without ``dtype``).
    Reads ``value.dtype`` only: a torch, NumPy, JAX, TensorFlow or CuPy dtype."""
    dt = getattr(value, "dtype", None)
    if dt is None:
        return None
    held = _NAMES.get(id(dt))
    if held is not None and held[0] is dt:
        return held[1]
    name = getattr(dt, "name", None)  # NumPy, JAX (NumPy dtypes), TensorFlow DType
    if not isinstance(name, str):
        name = str(dt).removeprefix("torch.")  # torch.float32
    known = name if name in DTYPES else None
    torch = sys.modules.get("torch")
    if isinstance(dt, np.dtype) or (torch is not None and isinstance(dt, torch.dtype)):
        if len(_NAMES) >= _NAMES_HELD:
            _NAMES.clear()
        _NAMES[id(dt)] = (dt, known)
    return known


def _native(arr: Any, what: str) -> Any:
    """``arr`` as a plain NumPy array of real numbers (its dtype kept): a subclass is read as its data, so that a
    masked array's masked NaN or inf is seen by every later test (``np.isfinite(masked).all()`` skips masked
    elements), and a matrix as a 2-D array.

    Raises:
        ResultReadError: for object, complex, string or other non-numeric dtypes."""
    if type(arr) is not np.ndarray:
        arr = np.asarray(arr)  # a view of a subclass's data, not a copy
    kind = arr.dtype.kind
    if kind in "fiub" or arr.dtype.name in DTYPES:  # ml_dtypes' bfloat16 has kind "V"
        return arr
    label = {"O": "object", "c": "complex", "U": "string", "S": "bytes"}.get(kind, str(arr.dtype))
    raise ResultReadError(f"{what} gave {label} values (dtype {arr.dtype}): return real floating-point values of the case's dtype")


def _torch_of(value: Any) -> Any:
    torch = sys.modules.get("torch")  # a torch tensor exists only once torch is imported
    return torch if torch is not None and isinstance(value, torch.Tensor) else None


def read_result(value: Any, to_numpy: Any = None, copy: bool = True) -> tuple[F64, str | None]:
    """A value a step returned (or an input it was given) as float64 values, and the name of its dtype.

    Args:
        value: a torch tensor, NumPy array or scalar, Python number or list, or any object with
            ``__array__``, ``__dlpack__`` or ``.numpy()`` (a JAX array, a TensorFlow tensor, a CuPy
            array, a tinygrad tensor).
        to_numpy: the framework's own reader (:attr:`Framework.to_numpy`), tried before the protocols.
        copy: True: the array returned shares no memory with ``value`` (a copy the caller owns);
            False: it may be ``value`` itself or a view of its memory (a float64 NumPy array, a float64
            CPU tensor), for a caller that only reads it at once.

    Returns:
        (float64 array of the same shape, exact; dtype name as :func:`dtype_name` gives it, from the
        value or else from the array read, or None).

    Raises:
        ResultReadError: for a value no protocol reads (the message names the protocols tried and
            what each raised), or one holding complex, object or string values. A BaseException
            that is not an Exception (``sys.exit`` in ``__array__``) is passed on.
    """
    torch = _torch_of(value)
    if torch is not None:
        if (type(value) is torch.Tensor and value.dtype is torch.float64 and value.is_cpu and value.layout is torch.strided
                and value.is_contiguous() and not value.is_neg() and not value.is_conj()):
            # a plain contiguous float64 CPU tensor (the harness's own inputs, a torch step's results): its memory as it
            # is (copied where ``copy``; else a view of it, as ``.to(copy=False)`` below gives), the same values, shape
            # and (C) layout as the conversion below gives, without .to()
            held = value.detach().numpy()
            return (held.copy() if copy else held), "float64"
        if value.is_complex():
            raise ResultReadError(f"a torch tensor of complex values (dtype {value.dtype})")
        return value.detach().to(device="cpu", dtype=torch.float64, copy=copy).numpy(), dtype_name(value)
    if isinstance(value, np.ndarray | np.generic | float | int | list | tuple):
        arr = _native(value, type(value).__name__)
        return arr.astype(np.float64, copy=copy), dtype_name(value) or dtype_name(arr)
    attempts: list[tuple[str, Any]] = []
    if to_numpy is not None:
        attempts.append(("the framework's to_numpy", lambda: to_numpy(value)))
    if hasattr(value, "__array__"):
        attempts.append(("__array__", lambda: np.asarray(value)))
    if hasattr(value, "__dlpack__"):
        attempts.append(("__dlpack__", lambda: _from_dlpack(value)))
    if callable(getattr(value, "numpy", None)):
        attempts.append((".numpy()", lambda: value.numpy()))
    if not attempts:
        raise ResultReadError(f"a {type(value).__name__} is not array-like: return NumPy arrays, torch tensors, "
                              f"Python floats, or objects with {PROTOCOLS} (a tinygrad Tensor has .numpy())")
    failures = []
    for label, read in attempts:
        try:
            got = read()
            if _torch_of(got) is not None:
                return read_result(got, copy=copy)[0], dtype_name(value) or dtype_name(got)
            arr = _native(got, f"{label} of a {type(value).__name__}")
        except ResultReadError:
            raise
        except Exception as exc:
            failures.append(f"{label} raised {type(exc).__name__}: {_text(exc)}")
            continue
        return arr.astype(np.float64, copy=copy), dtype_name(value) or dtype_name(arr)
    raise ResultReadError(f"a {type(value).__name__} could not be read as numbers ({'; '.join(failures)}): "
                          f"return NumPy arrays, torch tensors, or objects with {PROTOCOLS}")


def _text(exc: BaseException) -> str:
    try:
        return str(exc)[:200]
    except Exception:  # noqa: BLE001 - user code's __str__
        return "<its text could not be read>"


def _from_dlpack(value: Any) -> Any:
    """A DLPack producer as a NumPy array (on the CPU), or as a torch tensor for one that NumPy cannot
    take (a producer on a GPU, bfloat16)."""
    try:
        return np.from_dlpack(value)
    except Exception:  # noqa: BLE001 - another device, or a dtype NumPy lacks: torch reads every DLPack producer
        import torch

        return torch.from_dlpack(value)
