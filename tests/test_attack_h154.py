"""Attack on helper-152's vectorised kernels (branch h152): new against the kernels at 7ee37ad against independent
references in plain Python/NumPy (Python ints, ``float.as_integer_ratio``, Fractions).

Kernels: ``slicekernels.float_range`` (the implicit bit and the subnormals' exponent formed arithmetically, the offset
taken off after the minimum, the NO_BIT sentinel), ``slicekernels.residual_digits`` (block loops over slices, the carry
loop split), ``partialsums.magnitude_scan`` (bitwise ``&``/``|`` for the smallest magnitude and the NaN flag),
``partialsums.residual_variance`` / ``residual_variance_fused`` (``_variance_value``, ``_np_maximum`` bitwise) and
``sharedrounding._b_family`` (its chunk loop over slices).

Data: every float64 class (+-0, the smallest and the largest subnormal, the smallest normal, the largest finite,
+-inf, NaNs with payloads and both sign bits, powers of two, odd significands), float32/float16/bfloat16 values rounded
to float64, all-zero arrays, one element, sizes at and around each kernel's block (RANGE_BLOCK, BLOCK, _SCAN_ROWS,
``_b_family``'s ``k B_ROWS``), 1-9 columns (magnitude_scan takes 4 at a time), strided and Fortran-ordered inputs
where the kernel reads any layout. The old kernels are read from git (``git show 7ee37ad:harness/<module>.py``) into
a folder beside pytest's temporary ones and imported under other names; those comparisons skip where git or that commit is missing.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import math
import os
import subprocess
import sys
import zlib
from collections import Counter
from fractions import Fraction
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, target
from hypothesis import strategies as st

from harness import fastexact, partialsums, sharedrounding, slicekernels
from harness.cases import case_from_arrays
from harness.implementations.numpy_steps import numpy_hand
from harness.implementations.registry import REGISTRY, implementation
from harness.runner import verify

ROOT = Path(__file__).resolve().parents[1]
BASE = "7ee37ad"
MODULES = ("slicekernels", "partialsums", "sharedrounding")

TINY = 5e-324  # 2**-1074
BIG_SUB = float(np.nextafter(2.0**-1022, 0.0))  # the largest subnormal
MIN_NORMAL = 2.0**-1022
MAX = float(np.finfo(np.float64).max)
FINITE_SPECIALS = [0.0, -0.0, TINY, -TINY, BIG_SUB, -BIG_SUB, MIN_NORMAL, -MIN_NORMAL, MAX, -MAX, 1.0, -1.0, 2.0**-1000,
                   2.0**1000, 1.0 + 2.0**-52, -(1.0 + 2.0**-52), 3.0, 0.1, -7.0 * 2.0**-1074, 2.0**52 + 1.0,
                   float(np.nextafter(MAX, 0.0)), 3.0 * 2.0**-1073]
NAN_BITS = [0x7FF8000000000000, 0xFFF8000000000000, 0x7FF0000000000001, 0xFFF0000000000001, 0x7FF8000000000ABC,
            0x7FFFFFFFFFFFFFFF, 0xFFFFFFFFFFFFFFFF, 0x7FF4000000000000]
NANS = [float(np.array([v], dtype=np.uint64).view(np.float64)[0]) for v in NAN_BITS]
SPECIALS = FINITE_SPECIALS + [math.inf, -math.inf] + NANS


# --------------------------------------------------------------------------- the old kernels, from git

#: The old modules imported with numba's JIT disabled (``numba.config.DISABLE_JIT`` while they are imported: ``njit``
#: returns each function as written): they run as plain Python and NumPy on the same arguments, and every comparison
#: below still holds bit for bit (integer kernels, and float sums exact in any order). Not compiling them saved about
#: 8 s of CPU per process of a fresh checkout (this file: 29.7 against 21.7 s, one process). ``partialsums`` stays
#: compiled: its outputs are compared NaN payloads and signs included, and those are LLVM's, not plain Python's
#: (uncompiled, the old magnitude_scan's square of a NaN with the sign bit set came out 0x7FF8000000000000, compiled
#: 0xFFF8000000000000 as the new kernel's: 20 of its tests failed).
UNCOMPILED = ("slicekernels", "sharedrounding")


def _quiet(fn: Any) -> Any:
    """``fn`` under ``np.errstate(all="ignore")``: uncompiled, the kernels' int64 and float64 scalar arithmetic that
    wraps or overflows (as compiled) warns in NumPy."""
    @functools.wraps(fn)
    def quiet(*args: Any, **kwargs: Any) -> Any:
        with np.errstate(all="ignore"):
            return fn(*args, **kwargs)
    return quiet


@pytest.fixture(scope="session")
def base(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ModuleType]:
    """The modules at 7ee37ad (empty where git or that commit is missing: the tests then compare with the independent
    references alone), imported as ``h154_base_<name>``: those of :data:`UNCOMPILED` uncompiled, the others compiled
    (numba caches them beside the copies, in a folder beside pytest's numbered temporary ones, which later runs find:
    compiled once)."""
    from numba.core import config as numba_config

    top = tmp_path_factory.getbasetemp()
    while top.parent != top and not top.name.startswith("pytest-of-"):  # (above xdist's per-worker folders)
        top = top.parent
    folder = (top if top.name.startswith("pytest-of-") else tmp_path_factory.getbasetemp().parent) / "h154-base-kernels"
    folder.mkdir(exist_ok=True)
    mods = {}
    for name in MODULES:
        try:
            src = subprocess.run(["git", "-C", str(ROOT), "show", f"{BASE}:harness/{name}.py"], capture_output=True,
                                 check=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            return {}
        path = folder / f"h154_base_{name}.py"
        if not path.exists() or path.read_bytes() != src:  # (rewritten only when it differs: numba's cache keeps)
            part = path.with_name(f"{path.name}.{os.getpid()}")
            part.write_bytes(src)
            os.replace(part, path)  # (atomic: xdist's workers may write it at once)
        modname = f"h154_base_{name}"
        if modname not in sys.modules:
            spec = importlib.util.spec_from_file_location(modname, path)
            assert spec is not None and spec.loader is not None
            mod = importlib.util.module_from_spec(spec)
            sys.modules[modname] = mod
            disabled = numba_config.DISABLE_JIT
            numba_config.DISABLE_JIT = disabled or name in UNCOMPILED
            try:
                spec.loader.exec_module(mod)
            finally:
                numba_config.DISABLE_JIT = disabled
            for kmod, kernel in KERNELS if name in UNCOMPILED else []:  # (the entry points the tests call)
                if kmod == name:
                    setattr(mod, kernel, _quiet(getattr(mod, kernel)))
        mods[name] = sys.modules[modname]
    return mods


def test_the_old_kernels_run_uncompiled_where_listed(base):
    # the kernels compared below are plain functions in the modules of UNCOMPILED, numba's dispatchers in the others
    if not base:
        pytest.skip(f"the kernels at {BASE} are not in this checkout's git history")
    from numba.core.dispatcher import Dispatcher

    for mod, name in KERNELS:
        assert isinstance(getattr(base[mod], name), Dispatcher) == (mod not in UNCOMPILED), (mod, name)


# --------------------------------------------------------------------------- data

def _bits(x: Any) -> np.ndarray:
    return np.array(x, dtype=np.float64, order="C").view(np.int64)  # (a copy: any layout, 0-d kept)


def _same_bits(a: Any, b: Any) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype == np.float64 or b.dtype == np.float64:
        return a.shape == b.shape and bool(np.array_equal(_bits(a), _bits(b)))
    return bool(np.array_equal(a, b))


def _same_value(a: float, b: float) -> bool:
    """Equal floats with the same sign of zero, or both NaN."""
    return (a != a and b != b) or (a == b and math.copysign(1.0, a) == math.copysign(1.0, b))


def _bf16(x: np.ndarray) -> np.ndarray:
    """bfloat16 rounding (to nearest, ties to even) of finite float32 values, as float64."""
    b = np.ascontiguousarray(x.astype(np.float32)).view(np.uint32).astype(np.uint64)
    r = ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) << 16
    return r.astype(np.uint32).view(np.float32).astype(np.float64)


KINDS = ["specials", "finite", "subnormal", "wide", "powers", "f32", "f16", "bf16", "zeros", "one-nonzero"]


def hostile(kind: str, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """float64 data of one class (``finite`` kinds hold no NaN or inf)."""
    rng = np.random.default_rng(zlib.crc32(f"{kind}{shape}{seed}".encode()))
    size = int(np.prod(shape))
    if kind == "specials":
        x = rng.choice(np.array(SPECIALS), size)
        x[rng.random(size) < 0.5] = 0.0
    elif kind == "finite":
        x = rng.choice(np.array(FINITE_SPECIALS), size)
    elif kind == "subnormal":
        x = rng.integers(-2**52 + 1, 2**52, size).astype(np.float64) * TINY
    elif kind == "wide":  # random significands at every exponent
        x = np.ldexp(rng.uniform(-1, 1, size), rng.integers(-1074, 1025, size))
        x[~np.isfinite(x)] = MAX
    elif kind == "powers":
        x = rng.choice([-1.0, 1.0], size) * np.ldexp(1.0, rng.integers(-1074, 1024, size))
    elif kind == "f32":
        x = (rng.standard_normal(size) * 2.0 ** rng.integers(-140, 120, size)).astype(np.float32).astype(np.float64)
    elif kind == "f16":
        x = np.clip(rng.standard_normal(size) * 2.0 ** rng.integers(-24, 15, size), -65504, 65504)
        x = x.astype(np.float16).astype(np.float64)
    elif kind == "bf16":
        x = _bf16(rng.standard_normal(size) * 2.0 ** rng.integers(-130, 120, size))
    elif kind == "zeros":
        x = rng.choice([0.0, -0.0], size)
    else:  # one-nonzero: zeros and one subnormal with few trailing zeros at a random place (often the last block)
        x = np.zeros(size)
        x[rng.integers(max(size, 1)):][:1] = -3.0 * TINY if rng.random() < 0.5 else 2.0**60 + 2.0**9
    return x.reshape(shape)


def _low_exponent(v: float) -> int:
    """Exponent of the lowest set bit of a nonzero finite float (exact, from its integer ratio)."""
    num, den = abs(v).as_integer_ratio()
    return (num & -num).bit_length() - den.bit_length()


# --------------------------------------------------------------------------- float_range

RANGE_SIZES = [0, 1, 2, 3, 1023, 1024, 1025, 2047, 2048, 2049, 3073]


def _range_reference(x: np.ndarray) -> tuple[int, int]:
    """(the lowest exponent or NO_BIT over the finite nonzero entries, the largest bit pattern with the sign cleared)."""
    vals = x.ravel().tolist()
    lows = [_low_exponent(v) for v in vals if v != 0.0 and math.isfinite(v)]
    top = int((_bits(x.ravel()) & 0x7FFFFFFFFFFFFFFF).max()) if x.size else 0
    return (min(lows) if lows else slicekernels.NO_BIT), top


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("size", RANGE_SIZES)
def test_float_range_new_old_and_exact(base, kind, size):
    x = hostile(kind, (size,), 0)
    new = slicekernels.float_range(x)
    if base:
        old = base["slicekernels"].float_range(x)
        assert new[0] == old[0] and _same_bits(new[1], old[1])
    low, top = _range_reference(x)
    assert int(_bits(new[1])) == top
    if size == 0:
        assert new == (slicekernels.NO_BIT, 0.0) and fastexact.float_range(x) == (None, 0.0)
    elif np.isfinite(x).all():  # (with inf or NaN the kernel's exponent counts their fields: compared with the old above)
        assert new[0] == low
        assert fastexact.float_range(x) == ((None if low == slicekernels.NO_BIT else low), float(np.abs(x).max()))
    else:
        with pytest.raises(ValueError, match="NaN or an infinite"):
            fastexact.float_range(x)


@pytest.mark.parametrize("pos", [0, 1, 1022, 1023, 1024, 1025, 2046, 2047, 2048])
@pytest.mark.parametrize("value", [TINY, -BIG_SUB, MIN_NORMAL, MAX, 2.0**-1073, 1.5 * 2.0**-1022, -(2.0**1023)])
def test_float_range_one_value_at_each_place(base, pos, value):
    # the lowest bit held by one element at each place around the blocks, above a floor of ones (exponent 0)
    x = np.ones(2049)
    x[pos] = value
    want = min(0, _low_exponent(value))
    assert slicekernels.float_range(x) == (want, max(abs(value), 1.0))
    if base:
        assert base["slicekernels"].float_range(x) == (want, max(abs(value), 1.0))
    z = np.zeros(2049)
    z[pos] = value
    assert slicekernels.float_range(z) == (_low_exponent(value), abs(value))


@pytest.mark.parametrize("layout", ["strided", "fortran", "transposed", "reversed"])
def test_float_range_any_layout(base, layout):
    x = hostile("finite", (300, 7), 1)
    v = {"strided": x[:, ::2], "fortran": np.asfortranarray(x), "transposed": x.T, "reversed": x[::-1]}[layout]
    want = _range_reference(np.ascontiguousarray(v))
    got = slicekernels.float_range(v)
    if base:
        assert got == base["slicekernels"].float_range(v)
    assert (got[0], int(_bits(got[1]))) == want


@settings(max_examples=250, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False, allow_subnormal=True), min_size=1, max_size=40),
       st.integers(0, 2100), st.integers(0, 3))
def test_float_range_hypothesis(vals, pad, where):
    # values at the start, the end or around a block boundary of zeros; target: the exponent spread
    x = np.zeros(pad + len(vals))
    start = [0, pad, max(0, min(pad, 1024 - len(vals) // 2)), max(0, min(pad, 2048 - len(vals) // 2))][where]
    x[start:start + len(vals)] = vals
    nz = [v for v in vals if v != 0.0]
    got = slicekernels.float_range(x)
    if nz:
        spread = max(math.frexp(v)[1] for v in nz) - min(_low_exponent(v) for v in nz)
        target(float(spread), label="exponent spread")
        target(float(-min(_low_exponent(v) for v in nz)), label="lowest bit depth")
    assert got == ((min(_low_exponent(v) for v in nz) if nz else slicekernels.NO_BIT), max(abs(v) for v in vals))


# --------------------------------------------------------------------------- magnitude_scan

def _scan_reference(a: np.ndarray, mode: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float, bool]:
    with np.errstate(all="ignore"):  # (squares past float64 and inf - inf: the reference's values, no warning)
        absa = np.abs(a)
        sq = absa * absa if mode == 1 else a * a
        # column sums in row order from 0.0 (np.cumsum adds in order)
        z = np.zeros((1, a.shape[1]))
        cols = np.stack([np.cumsum(np.vstack([z, a]), axis=0)[-1], np.cumsum(np.vstack([z, absa]), axis=0)[-1],
                         np.cumsum(np.vstack([z, sq]), axis=0)[-1] if mode else np.zeros(a.shape[1])])
    mags = [v for v in absa.ravel().tolist() if v == v]
    top = max(mags, default=0.0)
    low = min((v for v in mags if v > 0.0), default=math.inf)
    return absa, sq, cols, top, low, bool(np.isnan(a).any())


def _scan(mod: ModuleType, a: np.ndarray, mode: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, Any]:
    absa = np.full(a.shape, 7.0)
    sq = np.full(a.shape, 7.0) if mode else np.empty((0, 0))
    cols = np.full((3, a.shape[1]), 7.0)
    ret = mod.magnitude_scan(a, absa, sq, mode, cols)
    return absa, sq, cols, ret


@pytest.mark.parametrize("kind", ["specials", "finite", "subnormal", "wide", "f16", "zeros", "one-nonzero"])
@pytest.mark.parametrize("rows", [0, 1, 63, 64, 65, 129, 255, 256, 257, 513])  # (blocks of 64 rows, 256 since h162)
def test_magnitude_scan_new_old_and_reference(base, kind, rows):
    for m in range(1, 10):
        a = hostile(kind, (rows, m), m)
        for mode in (0, 1, 2):
            new = _scan(partialsums, a, mode)
            if base:
                old = _scan(base["partialsums"], a, mode)
                for x, y in zip(new[:3], old[:3], strict=True):
                    assert _same_bits(x, y), (kind, rows, m, mode)
                assert new[3] == old[3]
            absa, sq, cols, top, low, nan = _scan_reference(a, mode)
            assert _same_bits(new[0], absa)
            if mode:
                assert all(_same_value(p, q) for p, q in zip(new[1].ravel().tolist(), sq.ravel().tolist(), strict=True))
            assert all(_same_value(p, q) for p, q in zip(new[2].ravel().tolist(), cols.ravel().tolist(), strict=True))
            assert (float(new[3][0]), float(new[3][1]), bool(new[3][2])) == (top, low, nan), (kind, rows, m, mode)


@pytest.mark.parametrize("layout", ["strided", "fortran", "reversed"])
def test_magnitude_scan_any_layout(base, layout):
    a = hostile("specials", (130, 11), 5)
    v = {"strided": a[:, ::2], "fortran": np.asfortranarray(a), "reversed": a[::-1, ::-1]}[layout]
    for mode in (0, 1, 2):
        new = _scan(partialsums, v, mode)
        if base:
            for x, y in zip(new[:3], _scan(base["partialsums"], v, mode)[:3], strict=True):
                assert _same_bits(x, y)
        ref = _scan_reference(np.ascontiguousarray(v), mode)
        assert (float(new[3][0]), float(new[3][1]), bool(new[3][2])) == ref[3:]


@pytest.mark.parametrize("col", range(9))
@pytest.mark.parametrize("value", NANS[:4] + [math.inf, -math.inf, TINY, -TINY])
def test_magnitude_scan_one_special_in_each_column(col, value):
    # one NaN (or inf, or the smallest subnormal) in one column among 1-9 (the four-column loop or the tail), in the
    # last row of a block and a partial one: NaN flagged and skipped by both extremes, inf the largest
    for rows in (64, 65, 256, 257):
        a = np.full((rows, 9), 0.5)
        a[rows - 1, col] = value
        _, _, _, (top, low, nan) = _scan(partialsums, a, 1)
        if value != value:
            assert (top, low, nan) == (0.5, 0.5, True)
        elif math.isinf(value):
            assert (top, low, nan) == (math.inf, 0.5, False)
        else:
            assert (top, low, nan) == (0.5, TINY, False)


def test_magnitude_scan_nans_across_blocks(base):
    """NaNs of several payloads and signs in some blocks of rows and not in others, infinities of both signs meeting in a
    block without NaN terms (a default NaN there, then finite terms after it), 1-9 columns: the column sums carry the
    NaN each carried before the kernel took its elements in blocks (h162: a block holding NaN terms keeps a NaN sum
    as it is; elsewhere the compiler may order an addition's operands either way), bit for bit with the old kernel."""
    if not base:
        pytest.skip(f"the kernels at {BASE} are not in this checkout's git history")
    from harness.partialsums import _SCAN_ROWS

    rng = np.random.default_rng(162)
    rows = 3 * _SCAN_ROWS + 5
    for m in range(1, 10):
        for trial in range(4):
            a = rng.standard_normal((rows, m))
            for c in range(m):
                block = rng.integers(0, 4)  # the block of this column's NaNs (3: none)
                if block < 3:
                    at = block * _SCAN_ROWS + rng.integers(0, _SCAN_ROWS, 3)
                    a[np.minimum(at, rows - 1), c] = rng.choice(np.array(NANS), 3)
                inf_block = rng.integers(0, 3)
                a[inf_block * _SCAN_ROWS + 7, c], a[inf_block * _SCAN_ROWS + 9, c] = math.inf, -math.inf
            for mode in (0, 1, 2):
                new, old = _scan(partialsums, a, mode), _scan(base["partialsums"], a, mode)
                for x, y in zip(new[:3], old[:3], strict=True):
                    assert _same_bits(x, y), (m, trial, mode)
                assert new[3] == old[3]


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(st.integers(1, 70), st.integers(1, 9), st.lists(st.sampled_from(SPECIALS) | st.floats(), min_size=1,
                                                         max_size=30), st.integers(0, 2**32 - 1))
def test_magnitude_scan_hypothesis(rows, m, vals, seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((rows, m))
    a.flat[rng.integers(0, rows * m, len(vals))] = vals
    target(float(np.isnan(a).sum() + np.isinf(a).sum()), label="non-finite entries")
    _, _, cols, (top, low, nan) = _scan(partialsums, a, 2)
    ref = _scan_reference(a, 2)
    assert (float(top), float(low), bool(nan)) == ref[3:]
    assert all(_same_value(p, q) for p, q in zip(cols.ravel().tolist(), ref[2].ravel().tolist(), strict=True))


# --------------------------------------------------------------------------- _b_family

def _b_reference(b: np.ndarray, Y: np.ndarray, A: np.ndarray, u: float) -> tuple[bool, np.ndarray]:
    """The NumPy path's expressions: ``M = min(|b - Y|, |Y|) + A - |Y| - |b|``, ``beta = min(|b|, u M)``."""
    with np.errstate(all="ignore"):
        M = np.minimum(np.abs(b - Y), np.abs(Y)) + A - np.abs(Y) - np.abs(b)
        uM = M * u
        beta = np.minimum(np.abs(b), uM)
    ok = bool(np.isfinite(b).all() and (uM != 0).all() and np.isfinite(uM).all())
    return ok, beta


def _b_data(kind: str, n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(zlib.crc32(f"{kind}{n}{k}{seed}".encode()))
    if kind == "normal":
        b, Y = rng.standard_normal(k), rng.standard_normal((n, k))
    else:
        b, Y = hostile(kind, (k,), seed), hostile(kind, (n, k), seed + 1)
    with np.errstate(all="ignore"):
        A = np.abs(Y) + np.abs(b) + np.abs(rng.standard_normal((n, k)))  # the absolute terms' sum, as the caller's
    if kind == "specials":
        A.flat[rng.integers(0, n * k)] = rng.choice([0.0, math.inf, math.nan, TINY])
    return b, Y, A


@pytest.mark.parametrize("kind", ["normal", "finite", "specials", "subnormal", "f16", "powers", "zeros"])
@pytest.mark.parametrize("k", [1, 2, 3, 5])
@pytest.mark.parametrize("n", [1, 7, 8, 9, 16, 17, 25])
def test_b_family_new_old_and_numpy(base, kind, k, n):
    b, Y, A = _b_data(kind, n, k, 0)
    u = 2.0**-53
    d_new, d_old = np.full((n, k), 7.25), np.full((n, k), 7.25)
    ok_new = sharedrounding._b_family(b, Y, A, u, d_new)
    if base:
        ok_old = base["sharedrounding"]._b_family(b, Y, A, u, d_old)
        # det where True (where False it is unfinished and the caller drops it: there a NaN Y plus a NaN A, whose
        # payloads differ, leaves either payload in det, the old kernel A's and the new one Y's; no NaN where True)
        assert ok_new == ok_old and (not ok_new or _same_bits(d_new, d_old))
    ok, beta = _b_reference(b, Y, A, u)
    assert ok_new == ok
    if ok:
        assert _same_bits(d_new, beta)


@pytest.mark.parametrize("where", [0, 7, 8, 15, 16, 23, 24])
@pytest.mark.parametrize("bad", [math.nan, math.inf, 0.0])
def test_b_family_one_bad_element_at_each_place(where, bad):
    # one element of A that makes u M NaN, inf or 0 (M = 0: A = |Y| + |b| - min(...) exactly) at each place of the
    # chunks of k B_ROWS = 8 elements (k = 1): False, whatever the place
    n = 25
    b = np.array([1.0])
    Y = np.full((n, 1), 3.0)
    A = np.full((n, 1), 6.0)
    A[where, 0] = bad if bad != 0.0 else 2.0  # min(|1 - 3|, 3) + 2 - 3 - 1 = 0
    assert not sharedrounding._b_family(b, Y, A, 2.0**-53, np.empty((n, 1)))
    A[where, 0] = 6.0
    det = np.empty((n, 1))
    assert sharedrounding._b_family(b, Y, A, 2.0**-53, det)
    assert _same_bits(det, np.full((n, 1), 4.0 * 2.0**-53))


# --------------------------------------------------------------------------- residual_variance(_fused)

def _variance_reference(fwd: np.ndarray, rev: np.ndarray, tot: np.ndarray, sumP2: np.ndarray, b: np.ndarray,
                        Y: np.ndarray, R2: np.ndarray, w1: float, n_terms: int, sum_k2: float, sum_kvar: float,
                        ) -> tuple[np.ndarray, ...]:
    """``residual_variance``'s docstring in NumPy (its columns sums in row order from 0.0)."""
    with np.errstate(all="ignore"):
        sum_sq = sumP2 + b[None, :] ** 2 + Y**2
        mu = tot / n_terms
        var = np.maximum(sum_sq / n_terms - mu**2, 0.0)
        random = mu**2 * sum_k2 + var * sum_kvar
        V_R = sumP2 * w1 + np.maximum(np.maximum(fwd, rev), random)
        cols = np.cumsum(np.vstack([np.zeros((1, V_R.shape[1])), V_R]), axis=0)[-1:]
        return V_R, R2 * V_R, V_R**2, cols


@pytest.mark.parametrize("kind", ["normal", "specials", "finite", "f16"])
@pytest.mark.parametrize("n, d, k", [(1, 1, 1), (5, 3, 2), (65, 5, 3), (257, 4, 8), (300, 5, 1), (33, 2, 9)])
@pytest.mark.parametrize("sum_k2, sum_kvar", [(3.5, 0.25), (2.0**40, 0.0), (0.0, 2.0**40)])
def test_residual_variance_fused_unfused_old_and_numpy(base, kind, n, d, k, sum_k2, sum_kvar):
    # the fused kernel (K <= 8: the row blocks with _variance_value; K = 9: the partial sums then residual_variance)
    # against the unfused one and the old kernels, every output bit for bit, NaN payloads included; and against the
    # docstring's NumPy expressions (the same values, NaN for NaN); weights where the rounding term (mu**2, then var)
    # outweighs the partial sums in the maximum, so that every expression shows
    rng = np.random.default_rng(zlib.crc32(f"{kind}{n}{d}{k}".encode()))
    if kind == "normal":
        X, W, b, Y = (rng.standard_normal(s) for s in ((n, d), (d, k), (k,), (n, k)))
    else:
        X, W, b, Y = (hostile(kind, s, i) for i, s in enumerate(((n, d), (d, k), (k,), (n, k))))
    R2 = rng.standard_normal((n, k)) ** 2
    args = (R2, 1.0 + 2 * 2.0**-53, d + 2, sum_k2, sum_kvar)
    outs = []
    for mod in [partialsums] + ([base["partialsums"]] if base else []):
        out = tuple(np.full((n, k), 7.0) for _ in range(3)) + (np.full((1, k), 7.0),)
        with np.errstate(all="ignore"):
            mod.residual_variance_fused(X, W, b, Y, *args, *out)
            parts = mod.residual_partial_sums(X, W, b, Y)
            out2 = tuple(np.full((n, k), 7.0) for _ in range(3)) + (np.full((1, k), 7.0),)
            mod.residual_variance(*parts, b, Y, *args, *out2)
        outs.append((out, out2, _variance_reference(*parts, b, Y, *args)))
    (fused, unfused, ref) = outs[0]
    for x, y, z in zip(fused, unfused, ref, strict=True):
        assert _same_bits(x, y)
        assert all(_same_value(p, q) for p, q in zip(x.ravel().tolist(), z.ravel().tolist(), strict=True))
        if not np.isnan(z).any():
            assert _same_bits(x, z)
    for new, old in zip(outs[0][:2], outs[-1][:2], strict=True):
        for x, y in zip(new, old, strict=True):
            assert _same_bits(x, y)


def test_np_maximum_every_pair_of_specials():
    # partialsums._np_maximum (now bitwise) against np.maximum on every ordered pair of specials, NaN payloads included
    vals = np.array(SPECIALS)
    got = np.array([[partialsums._np_maximum(float(a), float(b)) for b in vals] for a in vals])
    want = np.maximum(vals[:, None], vals[None, :])
    # NaN payloads: np.maximum returns its first NaN argument, as _np_maximum does
    assert _same_bits(got, want)


# --------------------------------------------------------------------------- residual_digits

def _exact_residual(X: np.ndarray, y: np.ndarray, W: np.ndarray, b: np.ndarray) -> list[list[Fraction]]:
    n, d = X.shape
    k = W.shape[1]
    Fx = [[Fraction(v) for v in row] for row in X.tolist()]
    Fw = [[Fraction(v) for v in row] for row in W.tolist()]
    return [[sum((Fx[i][j] * Fw[j][c] for j in range(d)), Fraction(0)) + Fraction(b[c]) - Fraction(y[i, c])
             for c in range(k)] for i in range(n)]


def _round(f: Fraction) -> float:
    try:
        return f.numerator / f.denominator  # correctly rounded (CPython's int true division)
    except OverflowError:
        return math.inf if f > 0 else -math.inf


RES_SHAPES = [(1, 1, 1), (511, 1, 1), (512, 1, 1), (513, 2, 1), (256, 1, 2), (257, 3, 2), (171, 2, 3), (205, 1, 5)]


def _res_data(kind: str, n: int, d: int, k: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(zlib.crc32(f"{kind}{n}{d}{k}".encode()))
    if kind == "cancel":  # integers: y = X W + b exactly or one ulp off
        X = np.round(rng.standard_normal((n, d)) * 64)
        W = np.round(rng.standard_normal((d, k)) * 64)
        b = np.round(rng.standard_normal(k) * 64)
        y = np.nextafter(X @ W + b, rng.choice([-np.inf, 0.0, np.inf], (n, k)))
        return X, y, W, b
    if kind == "narrow-specials":  # one exponent region a few planes wide, subnormals and the smallest normal
        pool = np.array([0.0, -0.0, TINY, -TINY, BIG_SUB, -BIG_SUB, MIN_NORMAL, 3 * TINY, 2.0**-1000, -(2.0**-990)])
        X, W = rng.choice(pool, (n, d)), rng.choice([1.0, -3.0, 0.5, 2.0**40, 0.0], (d, k))
        return X, rng.choice(pool, (n, k)), W, rng.choice(pool, k)
    if kind == "top":  # near the largest finite: X W overflows as a float, not as the exact residual
        X = rng.choice([MAX, -MAX, 2.0**1000, 0.0], (n, d))
        W = rng.choice([1.0, -1.0, 0.5, 2.0], (d, k))
        return X, rng.choice([MAX, -MAX, 0.0, 2.0**1020], (n, k)), W, rng.choice([MAX, 0.0], k)
    X, W, y, b = (hostile("bf16", s, i) for i, s in enumerate(((n, d), (d, k), (n, k), (k,))))
    if kind == "no-xw":  # no X W digits (U1 = 0): y and b alone
        return np.zeros_like(X), y, W, b
    if kind == "no-y":  # y and b zero: X W alone
        return X, np.zeros_like(y), W, np.zeros_like(b)
    X, W, y, b = (hostile(kind, s, i) for i, s in enumerate(((n, d), (d, k), (n, k), (k,))))
    return X, y, W, b


@pytest.mark.parametrize("kind", ["cancel", "narrow-specials", "top", "f16", "bf16", "zeros", "one-nonzero", "no-xw",
                                  "no-y"])
@pytest.mark.parametrize("n, d, k", RES_SHAPES)
def test_residual_digits_new_old_and_fractions(base, monkeypatch, kind, n, d, k):
    X, y, W, b = _res_data(kind, n, d, k)
    calls: list[tuple[Any, ...]] = []
    kernel = slicekernels.residual_digits

    def spy(*args: Any) -> Any:
        calls.append(args)
        return kernel(*args)

    monkeypatch.setattr(slicekernels, "residual_digits", spy)
    try:
        digits, q0, rounded = fastexact.residual_digits(X, y, W, b)
    except fastexact.TooWideError:
        pytest.skip("too wide for the residual kernel")
    # the old kernel on the same arguments: every output bit for bit
    for args in calls if base else []:
        # (53c2736: the new kernel takes the planes array to write; the old one took its plane count)
        new = kernel(*args)
        old = base["slicekernels"].residual_digits(*args[:-1], args[-1].shape[0])
        assert new[4] == old[4]
        for x, y_ in zip(new[:4], old[:4], strict=True):
            assert _same_bits(x, y_)
    # the exact residual from Fractions: the digits' value and the rounding
    R = _exact_residual(X, y, W, b)
    U = digits.shape[0]
    val = [[0] * k for _ in range(n)]
    for u in range(U):
        w = 1 << (slicekernels.B * u)
        pl = digits[u].tolist()
        for i in range(n):
            for c in range(k):
                val[i][c] += pl[i][c] * w
    scale = Fraction(2) ** q0
    for i in range(n):
        for c in range(k):
            assert val[i][c] * scale == R[i][c], (i, c)
            assert _same_value(float(rounded[i, c]), _round(R[i][c])) and (R[i][c] != 0 or rounded[i, c] == 0.0)


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(st.integers(1, 40), st.integers(1, 3), st.integers(1, 3), st.integers(-1074, 900), st.integers(0, 150),
       st.integers(0, 2**32 - 1))
def test_residual_digits_hypothesis(n, d, k, e_low, spread, seed):
    # values between 2**e_low and 2**(e_low + spread), some cancelling; target: the spread
    rng = np.random.default_rng(seed)

    def arr(shape: tuple[int, ...]) -> np.ndarray:
        return np.ldexp(rng.integers(-2**20, 2**20, shape).astype(np.float64), rng.integers(e_low, e_low + spread + 1,
                                                                                          shape))
    with np.errstate(over="ignore", invalid="ignore"):  # (a draw beyond float64: skipped below)
        X, W, b = arr((n, d)), np.ldexp(rng.integers(-64, 64, (d, k)).astype(np.float64), 0), arr((k,))
        y = X @ W + b if seed % 3 == 0 else arr((n, k))
    if not (np.isfinite(y).all() and np.isfinite(X).all() and np.isfinite(b).all()):
        return
    target(float(spread), label="exponent spread")
    try:
        digits, q0, rounded = fastexact.residual_digits(X, y, W, b)
    except fastexact.TooWideError:
        return
    R = _exact_residual(X, y, W, b)
    for i in range(n):
        for c in range(k):
            v = sum(int(digits[u, i, c]) << (slicekernels.B * u) for u in range(digits.shape[0]))
            assert v * Fraction(2) ** q0 == R[i][c]
            assert _same_value(float(rounded[i, c]), _round(R[i][c]))


# --------------------------------------------------------------------------- the whole pipeline

KERNELS = [("slicekernels", "float_range"), ("slicekernels", "residual_digits"), ("partialsums", "magnitude_scan"),
           ("partialsums", "residual_variance_fused"), ("partialsums", "residual_variance"),
           ("sharedrounding", "_b_family")]


def _pipeline_cases() -> list[Any]:
    rng = np.random.default_rng(154)
    cases = []
    for i, (kind, n, d, k) in enumerate([("f16", 9, 3, 2), ("bf16", 17, 4, 5), ("subnormal", 5, 2, 1),
                                         ("powers-narrow", 65, 5, 3), ("f32", 1, 1, 1), ("zeros-b", 24, 2, 1)]):
        if kind == "powers-narrow":
            X = rng.choice([-1.0, 1.0], (n, d)) * np.ldexp(1.0, rng.integers(-30, 30, (n, d)))
            y = rng.choice([-1.0, 1.0], (n, k)) * np.ldexp(1.0, rng.integers(-30, 30, (n, k)))
        elif kind == "zeros-b":
            X, y = rng.standard_normal((n, d)), rng.standard_normal((n, k))
        elif kind == "subnormal":
            X = rng.integers(-2**20, 2**20, (n, d)).astype(np.float64) * 2.0**-1060
            y = rng.integers(-2**20, 2**20, (n, k)).astype(np.float64) * 2.0**-1060
        else:
            X, y = hostile(kind, (n, d), i), hostile(kind, (n, k), i + 1)
        W = rng.standard_normal((d, k))
        b = np.zeros(k) if kind == "zeros-b" else rng.standard_normal(k)
        cases.append(case_from_arrays(f"h154-{kind}", X, y, W, b, lr=0.125, dtypes=["float64"]))
    return cases


def _off_by_one_ulp(X, y, W, b, *, lr, reduction, steps):  # type: ignore[no-untyped-def]
    """numpy-hand with grad_W's last element one ulp up (within the bounds of the cases below)."""
    out = numpy_hand(X, y, W, b, lr=lr, reduction=reduction, steps=steps)
    g = out[0].grad_W.copy()
    g.flat[-1] = np.nextafter(g.flat[-1], np.inf)
    return [out[0]._replace(grad_W=g)] + out[1:]


def _off_by_2_to_12_ulps(X, y, W, b, *, lr, reduction, steps):  # type: ignore[no-untyped-def]
    """numpy-hand with grad_W's first element times 1 + 2**-40 (about 2**12 ulps: above every bound of these cases)."""
    out = numpy_hand(X, y, W, b, lr=lr, reduction=reduction, steps=steps)
    g = out[0].grad_W.copy()
    g.flat[0] *= 1.0 + 2.0**-40
    return [out[0]._replace(grad_W=g)] + out[1:]


@pytest.fixture
def wrong_steps() -> Any:
    """The two wrong steps registered for the test that uses them, and unregistered after it (registered at import,
    they were gone when a test of tests/test_plugins.py, whose fixture drops every name starting "test-", had run
    first in the same worker: "unknown implementation")."""
    names = {"test-h154-grad-w-one-ulp-up": _off_by_one_ulp, "test-h154-grad-w-2-12-ulps": _off_by_2_to_12_ulps}
    for name, fn in names.items():
        implementation(name, framework="numpy", dtypes=("float64",), correct=False)(fn)
    yield
    for name in names:
        REGISTRY.pop(name, None)


def _records(cases: list[Any]) -> list[str]:
    recs = verify(cases, ["numpy-hand", "test-h154-grad-w-one-ulp-up", "test-h154-grad-w-2-12-ulps"], dtypes=["float64"])
    return [json.dumps(dataclasses.asdict(r), sort_keys=True) for r in recs]


def test_pipeline_records_identical_with_the_old_kernels(base, monkeypatch, wrong_steps):
    if not base:
        pytest.skip(f"the kernels at {BASE} are not in this checkout's git history")
    from harness import bounds

    monkeypatch.setattr(bounds, "KERNEL_MIN_WORK", 1)  # the compiled bounds on these small cases too
    cases = _pipeline_cases()
    calls: Counter[str] = Counter()

    def counted(f: Any, name: str) -> Any:
        def g(*args: Any) -> Any:
            calls[name] += 1
            return f(*args)
        return g

    for mod, name in KERNELS:
        monkeypatch.setattr(sys.modules[f"harness.{mod}"], name, counted(getattr(sys.modules[f"harness.{mod}"], name),
                                                                        name))
    new = _records(cases)
    # every kernel ran (residual_variance within the fused one alone: K <= 8 here)
    assert {name for _, name in KERNELS} - set(calls) == {"residual_variance"}, calls
    for mod, name in KERNELS:
        monkeypatch.setattr(sys.modules[f"harness.{mod}"], name, getattr(base[mod], name))
    # (53c2736: the old residual kernel took its plane count where the new one takes the planes array to write; its
    # callers read the planes it returns)
    old_residual = base["slicekernels"].residual_digits
    monkeypatch.setattr(slicekernels, "residual_digits", lambda *a: old_residual(*a[:-1], a[-1].shape[0]))
    # (h162: the new magnitude_scan takes which column sums to form, the old one formed all three: the rows read are
    # the same)
    old_scan = base["partialsums"].magnitude_scan
    monkeypatch.setattr(partialsums, "magnitude_scan", lambda *a: old_scan(*a[:5]))
    old = _records(cases)
    assert len(new) == len(old) and new == old
    # a correct step agrees everywhere (so does one ulp up: within the bounds; its records the old kernels' too); 2**12
    # ulps off in one element of grad_W disagree in every case, and only there (but h154-subnormal, whose products
    # 2**-2100 underflow: grad_W is 0 there, times 1 + 2**-40 still 0)
    recs = [json.loads(r) for r in new]
    for r in recs:
        bad = (r["implementation"] == "test-h154-grad-w-2-12-ulps" and r["quantity"] == "grad_W"
               and r["case"] != "h154-subnormal")
        assert r["verdict"] == ("disagree" if bad else "agree"), (r["case"], r["implementation"], r["quantity"])
    assert len({r["case"] for r in recs if r["verdict"] == "disagree"}) == len(cases) - 1


def _planes_needed(v: int) -> int:
    """The fewest planes ``U`` (``U - 1`` digits of ``B`` bits and a sign plane) whose two's complement holds ``v``."""
    u = 1
    while not -(1 << (slicekernels.B * (u - 1))) <= v < 1 << (slicekernels.B * (u - 1)):
        u += 1
    return u


@pytest.mark.parametrize("v", [1, -1, 2**21 - 1, -(2**21), 2**21, -(2**21) - 1, 2**42 - 1, -(2**42), 2**42,
                               -(2**42) - 1, 2**52 + 3, -(2**53) + 1])
@pytest.mark.parametrize("where", [0, 511, 512, 1000])
def test_residual_kernel_planes_exactly_enough_or_one_short(v, where):
    # dce9e97: the kernel raises where the value's top digit that is not its sign's extension lies in the last plane.
    # One value v (X W's single digit position, |v| < 2**53) among zeros, in the first, the last of the first or a later
    # block of BLOCK = 512: with exactly the planes it needs its digits and U, with one plane fewer ValueError
    m = 1025
    P = np.zeros((1, 1, m))
    P[0, 0, where] = float(v)
    need = _planes_needed(v)
    args = (np.zeros((1, m)), (slicekernels.NO_BIT, 0), np.zeros(1), (slicekernels.NO_BIT, 0), 0)
    planes, _, _, rbits, used = slicekernels.residual_digits(P, 0, *args[:4], 0, np.empty((max(need, 2), 1, m)))
    assert used == need
    got = sum(int(planes[u, 0, where]) << (slicekernels.B * u) for u in range(used - 1))
    assert got + (int(planes[used - 1, 0, where]) << (slicekernels.B * (used - 1))) == v
    assert rbits.view(np.float64)[0, where] == float(v) and not rbits.view(np.float64).any(where=np.arange(m) != where)
    if need > 2:
        with pytest.raises(ValueError, match="too few planes"):
            slicekernels.residual_digits(P, 0, *args[:4], 0, np.empty((need - 1, 1, m)))


@pytest.mark.parametrize("where", [0, 9, 23])
def test_shared_errors_with_nan_payloads_compiled_as_numpy(where):
    # b alone shared (no column of X or Y repeats): _b_family, whose unfinished det (a NaN Y plus a NaN A there, with
    # different payloads: the new kernel leaves Y's, the old one A's) the caller drops for the NumPy path; the
    # result that of compiled=False, bit for bit
    rng = np.random.default_rng(where)
    n, d, k = 24, 2, 3
    X, W, b, Y = rng.standard_normal((n, d)), rng.standard_normal((d, k)), rng.standard_normal(k), rng.standard_normal((n, k))
    Y[where, 1] = NANS[5]  # payload 0x7FFFFFFFFFFFFFFF
    with np.errstate(invalid="ignore"):
        A = np.abs(X) @ np.abs(W) + np.abs(b) + np.abs(Y)
    A[where, 1] = NANS[0]
    det = sharedrounding._b_family(b, Y, A, 2.0**-53, np.empty((n, k)))
    assert det is False
    got = sharedrounding.shared_residual_errors(X, W, b, Y, A, 2.0**-53, compiled=True)
    want = sharedrounding.shared_residual_errors(X, W, b, Y, A, 2.0**-53, compiled=False)
    assert got.any_shared == want.any_shared
    for x, y in ((got.det, want.det), (got.var, want.var)):
        assert (x is None and y is None) or _same_bits(x, y)
