"""helper-160's attack on helper-159's speed changes (5f076ef..0a7881a): ``bounds._typed`` (the unit roundoff in
the type an array of a dtype times it has) was cached without ``typed=True``, so a NumPy float and a Python float
of one value shared an entry and the dtype of :func:`harness.bounds.nearest_rounding_bound` depended on the order
of the calls.
"""

from __future__ import annotations

import numpy as np
import pytest

from harness import bounds
from harness.floats import FloatFormat, get_format

# NaN with a payload, both signs of zero and infinity, subnormals, the overflow edge, float16's and float32's limits
_HOSTILE = [0.0, -0.0, 5e-324, -5e-324, 2.2250738585072014e-308, 1e-300, 6e-8, 1.0, -1.5, 3.0, 65504.0, 3.4e38,
            1e154, 1e300, 1.7976931348623157e308, -1.7976931348623157e308, np.inf, -np.inf, np.nan,
            float(np.array([0x7FF8000000000123], dtype=np.uint64).view(np.float64)[0])]
_FMTS = [get_format(n) for n in ("float64", "float32", "float16", "bfloat16")]


# ------------------------------------------------------------------ bounds._typed: a cache keyed by value and type
def test_nearest_rounding_bound_dtype_independent_of_call_order() -> None:
    # a format whose precision is a NumPy integer has u = 2.0 ** -np.int64(11), an np.float64 equal (and hashing
    # equal) to float16's Python-float u; under NEP 50 a float16 array times np.float64(u) is float64, times the
    # Python float float16. Both orders of the two calls must give each format its own dtype (at 0a7881a the second
    # call read the first's cached scalar: float16 where float64 is due, or the reverse).
    f16 = get_format("float16")
    numpy_p = FloatFormat(f16.name, np.int64(f16.precision), f16.emin, f16.emax)  # type: ignore[arg-type]
    assert type(numpy_p.unit_roundoff) is np.float64 and numpy_p.unit_roundoff == f16.unit_roundoff
    z = np.array([1.0, 3.0], dtype=np.float16)
    for order in ((f16, numpy_p), (numpy_p, f16), (f16, numpy_p)):
        got = {fmt.precision.__class__: bounds.nearest_rounding_bound(z, fmt) for fmt in order}
        assert got[int].dtype == np.float16 and got[np.int64].dtype == np.float64
        # float16: 2**-11 * 2**(e - 1) of 1 and 3, exact; float64: with u_w = 2**-24's share
        assert got[int].tolist() == [2.0**-11, 2.0**-10]
        assert got[np.int64].tolist() == [2.0**-11 + 2.0**-24, 2.0**-10 + 3 * 2.0**-24]


@pytest.mark.parametrize("dt", [np.float64, np.float32, np.float16, np.longdouble, ">f8", ">f4"])
def test_nearest_rounding_bound_typed_unit_roundoff(dt: object) -> None:
    # the cached scalar against the expression it replaced, every format, finite and not, 0-d, strided, Fortran order
    with np.errstate(all="ignore"):
        z = np.abs(np.array(_HOSTILE)).astype(dt)
    for fmt in _FMTS:
        u, u_w = fmt.unit_roundoff, bounds.wider_roundoff(fmt)
        for a in (z, z[::3], z[7], np.asfortranarray(np.abs(np.array([[1.0, 3.0], [5e-324, 6e-8]])).astype(dt))):
            got = bounds.nearest_rounding_bound(a, fmt)
            with np.errstate(all="ignore"):
                zw = np.asarray(a) * (1 + u_w) if u_w else np.asarray(a)
                fin = np.isfinite(zw)
                _, ex = np.frexp(np.where(fin, zw, 0))
                half = np.where(fin & (zw > 0), np.ldexp(np.ones_like(zw) * u, ex - 1), 0)
                want = np.where(fin, half + u_w * np.asarray(a), bounds.update_rounding(fmt) * np.asarray(a))
            assert got.dtype == want.dtype and got.shape == want.shape
            np.testing.assert_array_equal(got, want)
