"""The floating-point environment the harness computes in: IEEE 754's defaults, checked and restored.

Every float64 value the harness computes (the correctly rounded residual, the
oracle's digit slices, the error bounds, ULP distances) assumes binary64
arithmetic in IEEE 754's default environment: rounding to nearest, ties to
even; gradual underflow (subnormal operands and results kept as they are); no
trapping exceptions (IEEE 754-2019, sections 4.3, 7.5 and 8). That
environment is state of the calling thread (x86-64: the MXCSR and the x87
control word; AArch64: the FPCR), and code the harness runs can change it and
leave it changed:

- ``torch.set_flush_denormal(True)`` turns on *flush-to-zero* (FTZ: subnormal
  results become 0) and *denormals-are-zero* (DAZ: subnormal operands read as 0);
- a shared library linked with ``-ffast-math`` or ``-Ofast`` (GCC's
  ``crtfastmath.o``) turns both on when it is loaded, for the whole process;
- ``fesetround`` changes the rounding direction; ``feenableexcept`` makes an
  overflow or underflow a SIGFPE.

Under DAZ the oracle reads a subnormal input as zero: a step that computes in
that environment and the truth computed after it would agree on the same wrong
value. So :func:`harness.runner.check_case` grades inside :func:`ieee_default`,
and after every call of an implementation :func:`restore_default` puts the
default back and names what the call left changed.

On x86-64 with glibc the environment is read from the registers themselves
(``fegetenv``: the MXCSR's rounding, FTZ, DAZ and exception masks, and the
x87 control word, whose precision and rounding govern long double arithmetic,
which the bounds use to rescue overflowed values). Elsewhere it is read by its
effects on Python floats (CPython's float arithmetic is the C ``double``
arithmetic of the calling thread), traps through glibc's ``fegetexcept``
where it exists. The default is set with ``fesetenv(FE_DFL_ENV)`` (glibc,
macOS), else with ``fesetround(FE_TONEAREST)`` and, where torch is loaded,
``torch.set_flush_denormal(False)``.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import struct
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np


def _from_bits(bits: int) -> float:
    """The binary64 value of a bit pattern: no decimal parsing and no arithmetic, so exact in any environment (a
    literal ``5e-324``, parsed when a module is compiled with flush-to-zero on, is 0.0, and the .pyc keeps it)."""
    return float(struct.unpack("<d", struct.pack("<Q", bits))[0])


#: Operands of the probes, module globals so that CPython cannot fold the arithmetic when it compiles, each
#: from its bit pattern.
_ONE = _from_bits(0x3FF0000000000000)
_HALF = _from_bits(0x3FE0000000000000)
_TINY = _from_bits(1)  # the smallest subnormal, 2**-1074
_SCALE = _from_bits(0x43B0000000000000)  # 2**60
_MIN_NORMAL = _from_bits(0x0010000000000000)  # 2**-1022
_EPS = _from_bits(0x3C30000000000000)  # 2**-60, below half an ULP of 1 in either direction

#: glibc's <fenv.h> exception bits on x86 and AArch64 (the same values on both), for the names of enabled traps.
_TRAP_NAMES = ((0x01, "invalid"), (0x04, "divide-by-zero"), (0x08, "overflow"), (0x10, "underflow"), (0x20, "inexact"))
#: C99's FE_TONEAREST: 0 on x86, AArch64, POWER and RISC-V.
_FE_TONEAREST = 0
#: ``fenv_t`` is 32 bytes on x86-64 glibc, 8 on AArch64; 512 holds any of them.
_FENV_BYTES = 512


class FPEnvironmentError(RuntimeError):
    """The IEEE 754 default environment could not be set: the harness cannot compute its truth in it."""


@dataclass(frozen=True)
class FPEnvironment:
    """What a thread's floating-point environment does, as far as the harness's arithmetic is concerned.

    Attributes:
        rounding: ``"to nearest"`` (IEEE 754's default), ``"upward"``, ``"downward"`` or ``"toward zero"``.
        flush_to_zero: subnormal results are replaced by zero (FTZ).
        denormals_are_zero: subnormal operands are read as zero (DAZ; on AArch64 one bit does both).
        traps: the exceptions that raise SIGFPE instead of returning IEEE 754's default result
            (where the C library can say; else empty).
        x87_control: x86-64: the x87 control word (long double arithmetic), as ``"0x0c7f"``, where its precision,
            rounding or masks are not the default ``0x037f``; else empty.
    """

    rounding: str = "to nearest"
    flush_to_zero: bool = False
    denormals_are_zero: bool = False
    traps: tuple[str, ...] = ()
    x87_control: str = ""

    @property
    def is_default(self) -> bool:
        """IEEE 754's default: rounding to nearest, gradual underflow, no traps."""
        return self == DEFAULT

    def describe(self) -> str:
        """What differs from the default, in words (``""`` for the default)."""
        parts = []
        if self.flush_to_zero and self.denormals_are_zero:
            parts.append("flush-to-zero and denormals-are-zero on (subnormal results and operands read as 0: "
                         "what torch.set_flush_denormal(True) and libraries built with -ffast-math set)")
        elif self.flush_to_zero:
            parts.append("flush-to-zero on (subnormal results replaced by 0)")
        elif self.denormals_are_zero:
            parts.append("denormals-are-zero on (subnormal operands read as 0)")
        if self.rounding != "to nearest":
            parts.append(f"rounding {self.rounding} instead of to nearest")
        if self.traps:
            parts.append(f"traps on {', '.join(self.traps)} (a SIGFPE instead of IEEE 754's default result)")
        if self.x87_control:
            parts.append(f"x87 control word {self.x87_control} instead of 0x037f (long double precision or rounding)")
        return "; ".join(parts)


DEFAULT = FPEnvironment()


def _load_libm() -> ctypes.CDLL | None:
    for name in (ctypes.util.find_library("m"), None):  # None: the symbols the process already has
        try:
            lib = ctypes.CDLL(name)
            lib.fegetround.restype = ctypes.c_int
            lib.fesetround.argtypes = [ctypes.c_int]
            lib.fegetenv.argtypes = [ctypes.c_void_p]
            lib.fesetenv.argtypes = [ctypes.c_void_p]
            return lib
        except (OSError, AttributeError):
            continue
    return None


_LIBM = _load_libm()


def _default_env_pointer() -> ctypes.c_void_p | None:
    """``FE_DFL_ENV``: ``(const fenv_t *) -1`` in glibc, ``&_FE_DFL_ENV`` on macOS, else None."""
    if _LIBM is None:
        return None
    if sys.platform.startswith("linux"):
        import platform

        if platform.libc_ver()[0] == "glibc":
            return ctypes.c_void_p(-1)
        return None
    if sys.platform == "darwin":
        try:
            return ctypes.c_void_p(ctypes.addressof(ctypes.c_char.in_dll(_LIBM, "_FE_DFL_ENV")))
        except ValueError:
            return None
    return None


_DFL_ENV = _default_env_pointer()
#: glibc's ``fegetexcept`` (the enabled traps), where the C library has it.
_FEGETEXCEPT = getattr(_LIBM, "fegetexcept", None) if _LIBM is not None else None
if _FEGETEXCEPT is not None:
    _FEGETEXCEPT.restype = ctypes.c_int


def _x86_64_glibc() -> bool:
    import platform

    return (_LIBM is not None and sys.platform.startswith("linux") and platform.machine() == "x86_64"
            and platform.libc_ver()[0] == "glibc")


#: glibc's x86-64 ``fenv_t``: the x87 control word at byte 0, the MXCSR at byte 28 (sysdeps/x86/fpu/bits/fenv.h).
_X86_64 = _x86_64_glibc()
#: x86 exception bits, in the x87 control word's masks (bits 0-5) and the MXCSR's (bits 7-12).
_X86_TRAPS = ((0x01, "invalid"), (0x02, "denormal operand"), (0x04, "divide-by-zero"), (0x08, "overflow"),
              (0x10, "underflow"), (0x20, "inexact"))
_MXCSR_ROUNDING = ("to nearest", "downward", "upward", "toward zero")


#: The bits of the x87 control word and of the MXCSR that :func:`_from_registers` reads, and their values in IEEE 754's
#: default (:data:`DEFAULT`): the x87 masks all set and precision and rounding 0x0300; the MXCSR's DAZ (bit 6) off,
#: masks (bits 7-12) all set, rounding (bits 13-14) to nearest, FTZ (bit 15) off. The exception flags are not read.
_CW_DEFAULT_MASK, _CW_DEFAULT = 0x0F3F, 0x033F
_MXCSR_DEFAULT_MASK, _MXCSR_DEFAULT = 0xFFC0, 0x1F80


def _x86_registers() -> tuple[int, int]:
    """The x87 control word and the MXCSR of the calling thread (``fegetenv``)."""
    buf = _FENV_BUFFER()  # (what ctypes.create_string_buffer(_FENV_BYTES) makes: zeroed, of this type)
    _LIBM.fegetenv(buf)  # type: ignore[union-attr]
    cw, = _CW_FIELD.unpack_from(buf, 0)  # (read in place: the same bytes as buf.raw's copy)
    mxcsr, = _MXCSR_FIELD.unpack_from(buf, 28)
    return int(cw), int(mxcsr)


#: The type of a ``fenv_t`` buffer (``ctypes.create_string_buffer(_FENV_BYTES)``'s), and the two fields read from it.
_FENV_BUFFER = ctypes.c_char * _FENV_BYTES
_CW_FIELD, _MXCSR_FIELD = struct.Struct("<H"), struct.Struct("<I")


def _from_registers(cw: int, mxcsr: int) -> FPEnvironment:
    """:class:`FPEnvironment` from x86-64's registers: no arithmetic, so no trap can fire while reading them (glibc's
    ``fegetexcept`` reads the x87 masks only: a trap unmasked in the MXCSR alone made the probes raise SIGFPE)."""
    unmasked = (~cw & 0x3F) | (~(mxcsr >> 7) & 0x3F)
    traps = tuple(name for bit, name in _X86_TRAPS if unmasked & bit)
    return FPEnvironment(rounding=_MXCSR_ROUNDING[(mxcsr >> 13) & 3], flush_to_zero=bool(mxcsr & 0x8000),
                         denormals_are_zero=bool(mxcsr & 0x40), traps=traps,
                         x87_control="" if (cw & 0x0F00) == 0x0300 else f"0x{cw:04x}")  # precision, rounding


def _enabled_traps() -> tuple[str, ...]:
    if _FEGETEXCEPT is None:
        return ()
    bits = int(_FEGETEXCEPT())
    return tuple(name for bit, name in _TRAP_NAMES if bits & bit)


def current() -> FPEnvironment:
    """The calling thread's floating-point environment: on x86-64 with glibc from its registers (the MXCSR and the
    x87 control word, :func:`_from_registers`); elsewhere by its effects on Python floats, where, if a trap is
    enabled, only the traps are read (a probe could raise SIGFPE) and the other fields keep their default values."""
    if _X86_64:
        cw, mxcsr = _x86_registers()
        if (cw & _CW_DEFAULT_MASK) == _CW_DEFAULT and (mxcsr & _MXCSR_DEFAULT_MASK) == _MXCSR_DEFAULT:
            return DEFAULT  # (what _from_registers gives for these registers: the default, without building it)
        return _from_registers(cw, mxcsr)
    traps = _enabled_traps()
    if traps:
        return FPEnvironment(traps=traps)
    daz = _TINY * _SCALE == 0.0  # 2**-1014, normal and exact, unless the subnormal operand reads as 0
    ftz = _MIN_NORMAL * _HALF == 0.0  # 2**-1023, subnormal and exact, unless the result is flushed
    up = _ONE + _EPS > _ONE
    below = _ONE - _EPS < _ONE
    neg_below = -_ONE - _EPS < -_ONE
    rounding = ("upward" if up else "downward" if neg_below else "toward zero" if below else "to nearest")
    return FPEnvironment(rounding=rounding, flush_to_zero=ftz, denormals_are_zero=daz)


def _set_default() -> None:
    if _DFL_ENV is not None:
        _LIBM.fesetenv(_DFL_ENV)  # type: ignore[union-attr]
        return
    if _LIBM is not None:
        _LIBM.fesetround(_FE_TONEAREST)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_flush_denormal(False)


def restore_default() -> FPEnvironment | None:
    """Put IEEE 754's default environment back if it was changed.

    Returns:
        the environment found, when it was not the default; None when it was.

    Raises:
        FPEnvironmentError: when the default cannot be set on this platform (the environment found is named).
    """
    found = current()
    if found.is_default:
        return None
    _set_default()
    after = current()
    if not after.is_default:
        raise FPEnvironmentError(f"the floating-point environment has {found.describe()}, and the harness could not "
                                 f"restore IEEE 754's default on this platform (left: {after.describe()})")
    return found


#: NumPy's default handling of floating-point errors (``numpy.geterr()`` in a fresh process): a warning for a
#: division by zero, an overflow or an invalid operation, nothing for an underflow. ``np.seterr(all="raise")``
#: (a debugging habit) made the harness's own float64 arithmetic raise FloatingPointError while grading.
NUMPY_ERRORS = {"divide": "warn", "over": "warn", "under": "ignore", "invalid": "warn"}


def restore_numpy_errors() -> dict[str, str] | None:
    """Put NumPy's default error handling back (:data:`NUMPY_ERRORS`) if it was changed.

    Returns:
        the handling found (``numpy.geterr()``), when it was not the default; None when it was."""
    found = {key: str(value) for key, value in np.geterr().items()}
    if found == NUMPY_ERRORS:
        return None
    np.seterr(divide="warn", over="warn", under="ignore", invalid="warn")  # NUMPY_ERRORS
    return found


def describe_numpy_errors(found: dict[str, str]) -> str:
    """``"NumPy's error handling changed (over='raise', ...)"``: what differs from :data:`NUMPY_ERRORS`."""
    diff = ", ".join(f"{k}={v!r}" for k, v in sorted(found.items()) if NUMPY_ERRORS.get(k) != v)
    return f"NumPy's floating-point error handling changed (np.seterr: {diff})"


@contextlib.contextmanager
def ieee_default() -> Iterator[FPEnvironment]:
    """Run a block in IEEE 754's default environment, and with NumPy's default error handling
    (:data:`NUMPY_ERRORS`); give the caller's environment and handling back afterwards.

    Yields:
        the caller's environment, as found on entry (:class:`FPEnvironment`).

    Raises:
        FPEnvironmentError: on entry, when the default cannot be set.
    """
    saved = None
    if _LIBM is not None:
        saved = _FENV_BUFFER()
        if _LIBM.fegetenv(saved) != 0:
            saved = None
    found = restore_default() or DEFAULT
    try:
        with np.errstate(divide="warn", over="warn", under="ignore", invalid="warn"):  # NUMPY_ERRORS: NumPy's handling too (a context: the caller's comes back with it)
            yield found
    finally:
        if saved is not None:  # else the default stays: nothing to give back exactly
            _LIBM.fesetenv(saved)  # type: ignore[union-attr]


_F = TypeVar("_F", bound=Callable[..., Any])


def in_ieee_default(fn: _F) -> _F:
    """Decorate ``fn`` to run in :func:`ieee_default` (the caller's environment given back when it returns)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with ieee_default():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
