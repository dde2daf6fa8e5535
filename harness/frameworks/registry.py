"""The registry of array frameworks: how inputs are handed to a step, and how its results are read.

A framework adapter (:class:`Framework`) turns the case's inputs, as NumPy arrays already
rounded to the case's dtype (bfloat16 as an ``ml_dtypes.bfloat16`` array), into the
framework's own objects on the case's device, and (optionally) turns what a step returns
back into NumPy. Results of every framework are otherwise read through the standard
interchange protocols (:func:`harness.frameworks.interchange.read_result`).

Built in: ``"torch"`` and ``"numpy"`` (converted by :mod:`harness.devices`, as before),
``"jax"``, ``"tensorflow"`` and ``"dlpack"`` (adapters in their own modules, each importing
its framework only when a step of that framework runs). Users add their own with
:func:`register_framework`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ..errors import PluginError
from ..floats import DTYPES

#: A device-types provider: the device types (``"cpu"``, ``"cuda"``, ``"mps"``) a framework can run on here.
DevicesFn = Callable[[], Iterable[str]]


@dataclass(frozen=True)
class Framework:
    """An array framework a step may be written in.

    Attributes:
        name: what ``@harness.implementation(..., framework=name)`` says.
        to_framework: ``to_framework(array, device) -> object``: the framework's object
            holding ``array`` (a NumPy array of shape (N, D), (N, K), (D, K) or (K,) in the
            case's dtype: ``float64``, ``float32``, ``float16`` or ``ml_dtypes.bfloat16``)
            on ``device`` (``"cpu"``, ``"cuda:0"``, ``"mps"``). None for ``torch`` and
            ``numpy``, which :func:`harness.devices.to_framework` converts itself.
        to_numpy: ``to_numpy(obj) -> array-like`` for the framework's result objects that
            the interchange protocols (``__array__``, ``__dlpack__``, ``.numpy()``) cannot
            read; None = the protocols.
        devices: the device types it runs on, or a function returning them (called when a
            step runs, so that the framework is imported only then).
        dtypes: the dtypes it computes in (a subset of ``float64``, ``float32``, ``float16``,
            ``bfloat16``); others give ``unsupported``.
        dtype_hint: ``dtype_hint(case_dtype, got_dtype) -> str``: a hint appended to the
            message of a result (or input) in a narrower dtype than the case's, e.g. JAX's
            ``jax_enable_x64``; None = no hint.
        module: the module the framework needs (``"jax"``): ``unsupported`` naming
            ``install`` when it is not installed; ``""`` = none.
        install: how to install it (``pip install 'autograd-harness[jax]'``).
        builtin: registered by the harness itself (cannot be replaced).
        reason: ``reason(device, dtype) -> str or None``: why it cannot run this pair although
            both are in ``devices`` and ``dtypes`` (``dlpack``: torch has no float64 on mps); None = no such pair.
    """

    name: str
    to_framework: Callable[[Any, str], Any] | None
    to_numpy: Callable[[Any], Any] | None = None
    devices: Iterable[str] | DevicesFn = ("cpu",)
    dtypes: tuple[str, ...] = DTYPES
    dtype_hint: Callable[[str, str], str] | None = None
    module: str = ""
    install: str = ""
    builtin: bool = False
    reason: Callable[[str, str], str | None] | None = None

    def device_types(self) -> set[str]:
        """The device types (``"cpu"``, ``"cuda"``, ``"mps"``) this framework runs on here."""
        return set(self.devices() if callable(self.devices) else self.devices)

    def hint(self, case_dtype: str, got_dtype: str) -> str:
        """``"; <hint>"`` for a value in ``got_dtype`` where ``case_dtype`` was asked for, or ``""``."""
        text = self.dtype_hint(case_dtype, got_dtype) if self.dtype_hint is not None else ""
        return f"; {text}" if text else ""


FRAMEWORKS: dict[str, Framework] = {}


def register_framework(
    name: str,
    *,
    to_framework: Callable[[Any, str], Any],
    to_numpy: Callable[[Any], Any] | None = None,
    devices: Iterable[str] | DevicesFn = ("cpu",),
    dtypes: Iterable[str] = DTYPES,
    dtype_hint: Callable[[str, str], str] | None = None,
) -> Framework:
    """Register an array framework, so that ``@harness.implementation(..., framework=name)``
    hands a step its inputs as that framework's objects.

    Example (a tinygrad adapter)::

        from tinygrad import Tensor
        harness.register_framework("tinygrad", to_framework=lambda a, device: Tensor(a),
                                   dtypes=("float32", "float16"))

    Args:
        name: the framework's name.
        to_framework: ``to_framework(array, device)``: the framework's object holding the NumPy
            ``array`` (already in the case's dtype; bfloat16 as ``ml_dtypes.bfloat16``) on
            ``device`` (``"cpu"``, ``"cuda:0"``...). It must keep the dtype: an input in
            another dtype is an ``error`` naming both.
        to_numpy: ``to_numpy(obj)``: a NumPy array (or array-like) of one of the framework's
            objects, where ``__array__``, ``__dlpack__`` and ``.numpy()`` do not read it.
        devices: the device types it runs on (``"cpu"``, ``"cuda"``, ``"mps"``), or a function
            returning them; other devices give ``unsupported``.
        dtypes: the dtypes it computes in; others give ``unsupported``.
        dtype_hint: ``dtype_hint(case_dtype, got_dtype) -> str``, a hint for a value returned in
            a narrower dtype than the case's.

    Returns:
        the :class:`Framework` registered.

    Raises:
        PluginError: for a built-in framework's name, a dtype the harness does not know, or
            a ``to_framework`` that is not callable.
    """
    old = FRAMEWORKS.get(name)
    if old is not None and old.builtin:
        raise PluginError(f"framework {name!r} is built in and cannot be replaced; register yours under another name")
    if not callable(to_framework):
        raise PluginError(f"framework {name!r}: to_framework must be a function (array, device) -> object, got {to_framework!r}")
    dts = tuple(dtypes)
    unknown = [d for d in dts if d not in DTYPES]
    if unknown:
        raise PluginError(f"framework {name!r}: unknown dtype(s) {unknown}; known: {', '.join(DTYPES)}")
    fw = Framework(name=name, to_framework=to_framework, to_numpy=to_numpy,
                   devices=devices if callable(devices) else tuple(devices), dtypes=dts, dtype_hint=dtype_hint)
    FRAMEWORKS[name] = fw
    return fw


def framework_of(name: str) -> Framework:
    """The framework registered as ``name``.

    Raises:
        PluginError: naming the known frameworks and :func:`register_framework`.
    """
    try:
        return FRAMEWORKS[name]
    except KeyError:
        raise PluginError(f"unknown framework {name!r}; known: {', '.join(FRAMEWORKS)} "
                          "(or register your own with harness.register_framework)") from None


def reader_of(framework: str | None) -> Callable[[Any], Any] | None:
    """The ``to_numpy`` reader registered for ``framework`` (None for torch, NumPy, None, an unknown
    name, or a framework read through the interchange protocols alone)."""
    fw = FRAMEWORKS.get(framework) if framework else None
    return fw.to_numpy if fw is not None else None


def hint_for(framework: str | None, case_dtype: str, got_dtype: str) -> str:
    """``"; <hint>"`` of ``framework`` for a value in ``got_dtype`` where ``case_dtype`` was asked for
    (``""`` for a framework without a hint, or not registered in this process)."""
    fw = FRAMEWORKS.get(framework) if framework else None
    return fw.hint(case_dtype, got_dtype) if fw is not None else ""
