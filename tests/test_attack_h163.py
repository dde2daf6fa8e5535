"""helper-163's attack on the kernels of the thirty-eighth round (``partialsums.magnitude_scan``'s blocks and
``sums``, ``gradient_terms`` and ``residual_terms`` over contiguous blocks): what the existing kernel tests
(``tests/test_bounds_kernels.py``) leave out.

- Inputs in any layout: ``magnitude_scan`` reads "any layout" (its docstring) and ``gradient_terms`` /
  ``residual_terms`` take ``np.ascontiguousarray`` of their inputs; each is checked here on Fortran-ordered,
  row-reversed and column-strided views against the NumPy expressions, at shapes that straddle the 256-row blocks.
- Column sums whose NaN and infinities fall in different blocks (a NaN-free block after a NaN sum, ``inf - inf``
  in one block and a NaN in the next): the sums are NaN exactly where NumPy's are, the other sums bit for bit.

Compared as in ``tests/test_bounds_kernels.py``: float64 bits, a NaN matching any NaN (which of two NaNs
propagates is the compiler's choice, and no NaN reaches step_bounds' outputs).
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from harness.partialsums import gradient_terms, magnitude_scan, residual_terms


def _same(got: np.ndarray, want: np.ndarray) -> bool:
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        return False
    g, w = np.ascontiguousarray(got).reshape(-1), np.ascontiguousarray(want).reshape(-1)
    nan = np.isnan(g)
    if not np.array_equal(nan, np.isnan(w)):
        return False
    return bool(np.array_equal(g[~nan].view(np.uint64), w[~nan].view(np.uint64)))


def _data(shape: tuple[int, int], key: object) -> np.ndarray:
    """Normals over 2**-60 .. 2**60 with zeros of both signs, infinities of both signs, NaNs and subnormals."""
    rng = np.random.default_rng(zlib.crc32(repr(key).encode()))
    x = rng.standard_normal(shape) * np.exp2(rng.integers(-60, 60, shape))
    pick = rng.integers(0, 40, shape)
    for p, v in enumerate((0.0, -0.0, np.inf, -np.inf, np.nan, 5e-324, 1.7976931348623157e308)):
        x = np.where(pick == p, v, x)
    return x


def _views(a: np.ndarray) -> dict[str, np.ndarray]:
    """``a``'s values in three layouts that are not C-contiguous (but where one row or column makes them so)."""
    wide = np.empty((a.shape[0], 2 * a.shape[1]))
    wide[:, ::2] = a
    return {"fortran": np.asfortranarray(a), "reversed": a[::-1].copy()[::-1], "strided": wide[:, ::2]}


SHAPES = [(1, 1), (3, 5), (255, 4), (257, 3), (513, 9)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_magnitude_scan_reads_any_layout(shape):
    a = _data(shape, ("scan", shape))
    for name, v in _views(a).items():
        assert not (v.flags.c_contiguous and shape[0] > 1 and shape[1] > 1), name
        for mode in (0, 1, 2):
            for sums in (7, 2, 0):
                absa, sq, cols = np.empty(shape), np.empty(shape), np.empty((3, shape[1]))
                with np.errstate(all="ignore"):
                    top, low, nan = magnitude_scan(v, absa, sq if mode else np.empty((0, 0)), mode, cols, sums)
                    want_sq = np.abs(a) ** 2 if mode == 1 else a**2
                assert _same(absa, np.abs(a)), (name, mode)
                if mode:
                    assert _same(sq, want_sq), (name, mode)
                if shape[1] >= 2:  # NumPy's row order for two columns or more
                    with np.errstate(all="ignore"):
                        want = [a.sum(axis=0), np.abs(a).sum(axis=0), want_sq.sum(axis=0) if mode else None]
                    for row in {7: (0, 1, 2) if mode else (0, 1), 2: (1,), 0: ()}[sums]:
                        assert _same(cols[row], want[row]), (name, mode, sums, row)
                m = np.abs(a)[~np.isnan(a)]
                assert top == (float(m.max()) if m.size else 0.0)
                assert low == (float(m[m > 0].min()) if (m > 0).any() else np.inf)
                assert nan == bool(np.isnan(a).any())


def test_magnitude_scan_nan_and_infinities_in_different_blocks():
    """Column 0: +inf in block 0 and -inf in block 1 (``inf - inf``: NaN from block 1 on, NaN-free blocks after);
    column 1: a NaN in block 0 alone (NaN-free blocks after it); column 2: NaNs in blocks 1 and 2; column 3 finite.
    The sums are NaN in columns 0 to 2 (their absolute values' and squares' too, but column 0's: +inf), column 3's
    bit for bit NumPy's."""
    a = _data((700, 4), "blocks")
    a[~(np.abs(a) < 2.0**60)] = 1.5
    a[3, 0], a[300, 0] = np.inf, -np.inf
    a[10, 1] = np.nan
    a[260, 2], a[600, 2] = np.nan, -np.nan
    absa, sq, cols = np.empty(a.shape), np.empty(a.shape), np.empty((3, 4))
    with np.errstate(all="ignore"):
        magnitude_scan(a, absa, sq, 2, cols)
        want = [a.sum(axis=0), np.abs(a).sum(axis=0), (a**2).sum(axis=0)]
    for row in range(3):
        assert _same(cols[row], want[row]), row
    assert np.isnan(cols[0, :3]).all() and cols[1, 0] == np.inf and cols[2, 0] == np.inf
    assert np.isnan(cols[1:, 1:3]).all() and np.isfinite(cols[:, 3]).all()


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_gradient_and_residual_terms_read_any_layout(shape):
    aR, E = np.abs(_data(shape, ("aR", shape))), np.abs(_data(shape, ("E", shape)))
    x, y, d, t = (np.abs(_data(shape, (q, shape))) for q in "xydt")
    ab = np.abs(_data((1, shape[1]), ("ab", shape)))[0]
    pm1, g, c1, c2 = (1 + 2.0**-11) ** 2 - 1, 1e-3, 2.0**-120, (1 + 1e-3) * 2.0**-120
    with np.errstate(all="ignore"):
        want_Rh = aR + E
        tf = pm1 * x + t
        want_A = x + ab[None, :] + y
        want_U = d + t + c1
        want_E = g * (want_A + tf) + d + tf + c2
    views = {q: _views(v) for q, v in (("aR", aR), ("E", E), ("x", x), ("y", y), ("d", d), ("t", t))}
    for name in ("fortran", "reversed", "strided"):
        Rh, Rh2, EL, cols = np.empty(shape), np.empty(shape), np.empty(shape), np.empty((2, shape[1]))
        with np.errstate(all="ignore"):
            finite = gradient_terms(views["aR"][name], views["E"][name], Rh, Rh2, EL, cols)
            assert _same(Rh, want_Rh) and _same(Rh2, want_Rh**2) and _same(EL, E * (2 * aR + E)), name
            if shape[1] >= 2:
                assert _same(cols[0], want_Rh.sum(axis=0)) and _same(cols[1], E.sum(axis=0)), name
        assert finite == bool(np.isfinite(want_Rh).all())
        A, Ev, U = np.empty(shape), np.empty(shape), np.empty(shape)
        e_nan, u_max = residual_terms(views["x"][name], ab, views["y"][name], views["d"][name], views["t"][name],
                                      True, True, pm1, g, c1, c2, A, Ev, U)
        assert _same(A, want_A) and _same(U, want_U) and _same(Ev, want_E), name
        assert e_nan == bool(np.isnan(want_E).any())
        want_max = float(np.abs(want_U).max())
        assert (np.isnan(u_max) and np.isnan(want_max)) or u_max == want_max
