"""Rounding errors of the residual that rows share: the correlated part of the expected bounds.

The expected bounds (:mod:`harness.bounds`, Higham and Mary 2019) model every rounding error
as independent with mean zero, so that a reduction over N rows errs like ``sqrt(N)``. That
fails where rows *share a term*: the residual ``R_nk = sum_j X_nj W_jk + b_k - Y_nk`` adds
the same ``b_k`` to every row, the same product ``X_nj W_jk`` to every row where ``X_nj``
takes one value (indicator and categorical features, an intercept column, rounded data),
and the same ``-Y_nk`` where labels repeat. Rounding ``x + t`` for a shared term ``t`` and a
row-dependent partial sum ``x`` loses the low bits of ``t`` in the same way in every row whose
sum lands in one binade: an error with a common sign, which a reduction over the rows (``grad_b
= s 1^T R``, ``grad_W = s X^T R``) adds up like N. Measured before this model (float32,
N = 100,000, D = 4, on an exact fit): error / expected bound 3.0 for ``grad_b`` with b drawn from
N(0, 1), 5.1 where X has mean 3, 7.7 for ``grad_W`` with four-valued X; every torch and NumPy
built-in was ``suspect``.

**Bound of the shared error of one term** (``beta``, absolute, per row ``n`` and output ``k``).
Write the addition as ``fl(x + t)`` with ``A_nk = |X_n| |W_k| + |b_k| + |Y_nk|`` (the sum of the
row's term magnitudes, which bounds every partial sum). Its error is at most ``|t|`` (``x`` is
a float), at most ``u |x + t| <= u A``, and, where ``x`` is not shared (its low bits vary from
row to row), its mean over the rows is at most half the spacing of ``x``'s floats,
``ulp(x) / 2 <= u |x| <= u (A - |t|)`` (rounding a lattice of spacing ``ulp(x)`` shifted by ``t``'s
low bits). So::

    beta = min(|t|, u (A - |t|))    where t is the only shared term of the row,
    beta = min(|t|, u A)            where the row shares other terms (x may be shared too),

plus ``(u + 2 ut) |t|`` for a product of a shared ``X_nj`` with ``W_jk`` (its own rounding, and the
TF32 rounding of both factors, are the same in every row of the group). ``b_k`` is shared by
all N rows; ``X_nj`` (resp. ``Y_nk``) by the rows where its column holds the same value; a value
that occurs once is not shared (the independent model covers it).

**Combining the rows** (:class:`SharedErrors`): the part of the residual's error that rows share
enters a sum ``sum_n a_n dR_nk`` (``a_n = 1`` for ``grad_b``, ``|X_ni|`` for ``grad_W``, ``2 |R_nk|`` for
the loss). Each family of shared terms (one column of X, b, one column of Y) is taken one of two ways:
at its worst case ``sum_n a_n beta_n`` (every group's error with the same sign), or, treating its groups of
equal values as independent with mean zero (Hoeffding), at ``lambda sqrt(sum_G S_G^2)`` where ``S_G``
bounds group G's error; by Cauchy-Schwarz ``S_G^2 <= m_G sum_{n in G} (a_n beta_n)^2``, so
``lambda sqrt(sum_n a_n^2 m_n beta_n^2)`` (``m`` the group's size). Either holds; the smaller for unit weights
is taken (for b, one group of all N rows, always the worst case), and the families' parts are added:
:func:`harness.bounds.expected_bounds` adds ``|s| (|X|^T det + lambda sqrt(X^2^T var))`` and the like to the
independent model's bound. The worst case is taken for a few large groups (``b``, indicator columns), the
group model for many small ones.

**Evaluation.** Columns are screened on a sample (:func:`repeating_columns`, all columns at once), the multiplicities
of the kept ones counted exactly (:func:`column_multiplicity`: by comparison with the few values of a categorical
column, else by sorting), and, where a column of X or Y repeats and the arrays are float64, the families are taken in
one compiled loop (:func:`_shared_kernel`, two passes over the elements, the NumPy path's operations per element;
``tests/test_shared_rounding.py`` compares the two bit for bit). Four-valued X, 1,000,000 x 16 x 4: 2.5 s in NumPy,
1.8 s so (one thread; issue 12's thirteenth round). Where ``b`` is the only shared term (continuous data), its
family is one compiled pass too (:func:`_b_family`, the same floats: 0.39 against 0.17 ms for the whole shared part at
15,625 x 16 x 4, float64 arrays, one thread; the pass vectorised, 0.13 to 0.09 ms of it, helper-116). X's sample may
be screened by the caller (:func:`sample_pairs`), once for this model and :mod:`harness.repeatedsums`.

**Known limits** (an attack, helper-44, issue 12's twelfth round): every group's error with one sign (a common
fractional part shared by all groups), or a shared fractional part with no repeated value, exceeds the model on
constructed data; and on data with shared terms the expected bound is 0.09 (a bias) to 0.57 (integer X) of the
rigorous one, so some precision bugs there no longer show as ``suspect``. Summing the errors with their signs, as
the harness's own partial sums (``X W``, ``-Y``, ...) would round them, does not bound an implementation's: its low
bits are its own (torch's float64 matmul leaves the last bit of ``X W`` set in 31% of rows, NumPy's in 50%, and the
errors of adding b then sum to 2.6e-12 against 2.0e-14; issue 12's thirteenth round). Only rows whose sum stays in
the partial sum's binade round b alike whatever those bits; signing those tightens the bound where ``|b|`` is small
against ``|X W|`` (3 to 30 times) and not for ``b`` of the size of ``X W``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from numba import njit

F = npt.NDArray[np.floating]


@dataclass
class SharedErrors:
    """Per element of the residual ``(N, K)``, in the arrays' floating type: ``det`` the sum of ``beta`` over the
    shared terms whose family is taken at its worst case (every shared error with one sign), ``var`` the sum of
    ``m beta**2`` over those taken by the group model; None where no family is. ``any_shared``: some term is."""

    det: F | None
    var: F | None
    any_shared: bool


def value_multiplicity(a: F) -> npt.NDArray[np.int64]:
    """How many rows of its column hold each element's value (exact equality; NaN never equals, so it counts 1).

    Args:
        a: ``(N, C)`` floating array.

    Returns:
        ``(N, C)`` int64 array: ``m[n, j] = #{i : a[i, j] == a[n, j]}`` (1 for a value that occurs once).
    """
    a = np.asarray(a)
    return np.stack([column_multiplicity(a[:, j]) for j in range(a.shape[1])], axis=1).reshape(a.shape)


#: :func:`column_multiplicity` compares the column with each repeated value where there are at most this many, and
#: with each value of a strided probe of ``PROBE`` rows where that shows at most this many.
FEW_VALUES = 16
PROBE = 256


def column_multiplicity(x: F) -> npt.NDArray[np.int64]:
    """:func:`value_multiplicity` of one column ``(N,)``.

    Where a strided probe of the column shows at most :data:`FEW_VALUES` values (indicator, categorical), the rows
    holding each are counted by comparison and only the other rows are sorted. Sorting the column finds its repeated
    values; where there are at most :data:`FEW_VALUES`, each is compared with the column; else where they are few
    against the rows, a hashed filter picks the rows that may hold one and only those are looked up (a binary search
    per row costs more than the sort)."""
    x = np.asarray(x)
    n = x.shape[0]
    m = np.ones(n, dtype=np.int64)
    if n >= 8 * PROBE:  # a strided probe: where it shows few values, count those by comparison and sort only the rest
        probe = np.unique(x[:: n // PROBE])
        if probe.size <= FEW_VALUES:
            rest = np.ones(n, dtype=bool)
            for v in probe:
                equal = x == v
                size = int(np.count_nonzero(equal))
                if size > 1:
                    m[equal] = size
                rest &= ~equal
            rows = np.flatnonzero(rest)
            if rows.size:  # the rows the probe's values miss (NaN among them: never equal), by sorting
                m[rows] = _sorted_multiplicity(x[rows])
            return m
    return _sorted_multiplicity(x)


def _sorted_multiplicity(x: F) -> npt.NDArray[np.int64]:
    """:func:`column_multiplicity` by sorting (no probe)."""
    n = x.shape[0]
    m = np.ones(n, dtype=np.int64)
    col = np.sort(x)
    starts, counts = _runs(col)
    keep = counts > 1
    if not keep.any():
        return m
    values, sizes = col[starts[keep]], counts[keep]
    if values.size <= FEW_VALUES:  # a few repeated values (indicator, categorical): one comparison pass each
        for v, size in zip(values, sizes, strict=True):
            m[x == v] = size
        return m
    rows = np.arange(n)
    if values.size * 64 < n:
        bits = max(10, int(values.size * 64).bit_length())  # at least 64 buckets per value: few false hits
        table = np.zeros(1 << bits, dtype=bool)
        table[_bucket(values, bits)] = True
        rows = np.flatnonzero(table[_bucket(x, bits)])
        x = x[rows]
    idx = np.minimum(np.searchsorted(values, x), values.size - 1)
    hit = values[idx] == x
    m[rows[hit]] = sizes[idx[hit]]
    return m


def _sequential_sum(a: F) -> float:
    """The sum of ``a``'s elements one after another in C order (the compiled loop's order, so that both paths choose
    the same model at a near-tie; NumPy's pairwise ``sum`` chose another: helper-45)."""
    return float(np.cumsum(a, axis=None)[-1]) if a.size else 0.0


def _runs(col: F) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """The runs of equal values of a sorted ``(N,)`` array: their first indices and their lengths."""
    starts = np.flatnonzero(np.concatenate(([True], col[1:] != col[:-1])))
    return starts, np.diff(np.append(starts, col.shape[0]))


def _bucket(v: F, bits: int) -> npt.NDArray[np.intp]:
    """One of ``2**bits`` buckets for each of ``v``'s values (multiplicative hashing of the float64 bits, Knuth's;
    ``+0.0`` for ``-0.0`` so that equal values agree; a wider type hashes its float64 rounding: equal values round
    equally)."""
    bits64 = np.ascontiguousarray(np.asarray(v, dtype=np.float64) + 0.0).view(np.uint64)
    return ((bits64 * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(64 - bits)).astype(np.intp)


#: :func:`repeating_columns` screens a sample of ``max(SAMPLE_MIN, sqrt(SAMPLE_PAIRS * N))`` rows ...
SAMPLE_MIN = 2048
SAMPLE_PAIRS = 20
#: ... for columns whose groups of equal values have ``sum_G m_G (m_G - 1) >= SHARED_FRACTION * N``: a shared
#: variance at least this fraction of the independent one (below it, leaving the column out widens the true error
#: by at most ``sqrt(1 + SHARED_FRACTION)`` on that column's terms).
SHARED_FRACTION = 0.25


@functools.lru_cache(maxsize=32)
def screen_rows(n: int) -> npt.NDArray[np.intp] | slice:
    """The rows :func:`repeating_columns` screens among ``n``: ``max(SAMPLE_MIN, sqrt(SAMPLE_PAIRS n))`` distinct rows
    drawn uniformly with a fixed seed (the same verdicts on every run; a stride would miss groups that sorted data keeps
    together), ascending (a read-only array, drawn once per ``n``); every row (a slice) up to twice that size."""
    size = max(SAMPLE_MIN, math.isqrt(SAMPLE_PAIRS * n) + 1)
    if 2 * size >= n:
        return slice(None)
    rows = np.sort(np.random.default_rng(0).integers(0, n, size))  # distinct, ascending (np.unique without its hashing)
    rows = rows[np.concatenate(([True], rows[1:] != rows[:-1]))]
    rows.flags.writeable = False
    return rows


def repeating_columns(a: F, held: Callable[[F], F] | None = None) -> list[int]:
    """The columns of ``a`` (N, C) whose values repeat enough to matter, found on a sample of ``s`` rows
    (:func:`screen_rows`).

    Two sampled rows hold one value with probability ``sum_G m_G (m_G - 1) / (N (N - 1))`` (``m_G`` the sizes of the
    groups of equal values), so the sample shows about ``s^2 / (2 N^2) sum_G m_G (m_G - 1)`` equal pairs. A column
    is kept where that estimate reaches ``SHARED_FRACTION * N`` (and at least two pairs): its shared variance
    (``sum_G m_G^2 beta^2``, module docstring) is then a fair part of the independent model's (``N beta^2``). The
    chance collisions of continuous data stay below it.

    ``held``: the values compared are ``held(sample)`` (an array of the sample's shape; NaN equals nothing), applied
    to the sampled rows only (:mod:`harness.repeatedsums` rounds them to a dtype and leaves zeros out).
    """
    a = np.asarray(a)
    sample = a[screen_rows(a.shape[0])]
    return repeating_in_sample(sample if held is None else held(sample), a.shape[0])


def repeating_in_sample(sample: F, n: int) -> list[int]:
    """:func:`repeating_columns`' count on its sample ``(s, C)`` (the rows :func:`screen_rows` of ``n`` chose, as
    compared: NaN equals nothing, ``-0.0`` equals ``0.0``; a type wider than float64 is compared as its float64
    rounding, which can only join values, never part equal ones: more pairs, a wider bound)."""
    rows = sample.shape[0]
    if rows < 2:
        return []
    return _enough_pairs(equal_pairs(sample), rows, n)


def _enough_pairs(pairs: npt.NDArray[np.int64], rows: int, n: int) -> list[int]:
    """The columns whose ``pairs`` (equal pairs in a sample of ``rows >= 2`` of ``n`` rows) reach
    :func:`repeating_columns`' count."""
    need = max(2.0, SHARED_FRACTION * rows * (rows - 1) / (2.0 * max(n - 1, 1)))
    return [j for j in range(pairs.shape[0]) if float(pairs[j]) >= need]


@dataclass(frozen=True)
class SamplePairs:
    """The equal pairs of :func:`repeating_columns`' sample of an ``(N, C)`` array's rows (:func:`sample_pairs`), for
    the screens that compare one array's sample twice (:mod:`harness.bounds`: X's, as it is here and zeros left out).

    Attributes:
        n: the array's rows ``N``.
        sample: the sampled rows ``(s, C)`` (:func:`screen_rows`), as the array holds them.
        pairs: int64 ``(C,)``: :func:`equal_pairs` of ``sample``.
        zero_pairs: int64 ``(C,)``: the pairs among each column's zeros (``z (z - 1) / 2`` for ``z`` elements of
            ``sample`` whose float64 value is ``+0.0`` or ``-0.0``), which :func:`equal_pairs` counts in ``pairs``.
    """

    n: int
    sample: F
    pairs: npt.NDArray[np.int64]
    zero_pairs: npt.NDArray[np.int64]

    def repeating(self, zeros: bool = True) -> list[int]:
        """:func:`repeating_in_sample` of the sample (``zeros``), or of the sample with its zeros as NaN (equal to
        nothing: ``pairs - zero_pairs``)."""
        rows = self.sample.shape[0]
        if rows < 2:
            return []
        return _enough_pairs(self.pairs if zeros else self.pairs - self.zero_pairs, rows, self.n)


def sample_pairs(a: F) -> SamplePairs:
    """:class:`SamplePairs` of ``a`` ``(N, C)``: one pass of :func:`equal_pairs` over its sample, and its zeros
    counted (``repeating()`` is :func:`repeating_columns` of ``a``)."""
    a = np.asarray(a)
    sample = a[screen_rows(a.shape[0])]
    pairs, z = _pairs_and_zeros(sample)
    return SamplePairs(a.shape[0], sample, pairs, z * (z - 1) // 2)


def equal_pairs(a: F) -> npt.NDArray[np.int64]:
    """The pairs of equal values in each column of ``a`` ``(rows, C)``: int64 ``(C,)``. A group of ``m`` equal values
    holds ``m (m - 1) / 2`` of them; NaN equals nothing and ``-0.0`` equals ``0.0`` (IEEE 754 equality); values of a
    type wider than float64 are compared as their float64 rounding.

    Counted in a hash table of the values' float64 bits per column (:func:`_hashed_pairs`): one pass over the
    values, where sorting each column cost about 7 times as much (2,048 x 16 float64: 83 against 596 us, AMD EPYC,
    one thread; on an Intel Xeon 115 us with the wider tables, 187 before)."""
    return _pairs_and_zeros(a)[0]


def _pairs_and_zeros(a: F) -> npt.NDArray[np.int64]:
    """int64 ``(2, C)``: :func:`equal_pairs` of ``a`` ``(rows, C)``, and how many elements of each column are zero
    (``+0.0`` or ``-0.0`` as float64)."""
    a = np.asarray(a)
    bits = np.ascontiguousarray(a, dtype=np.float64).view(np.uint64)  # (-0.0 is taken as 0.0 there)
    return _hashed_pairs(bits.reshape(a.shape))


#: :func:`_hashed_pairs`' tables hold at least 2 slots per value (load at most one half), and up to
#: ``HASH_SPREAD`` while they have at most ``2**HASH_MAX_BITS`` slots: fewer collisions, so fewer unpredictable
#: probes (2,048 x 16 float64: 187 against 115 us, one thread, helper-116), where the table still fits the cache.
HASH_SPREAD = 8
HASH_MAX_BITS = 14


@njit(cache=True, nogil=True)
def _hashed_pairs(bits: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    """:func:`equal_pairs` of the float64 bits ``(rows, C)`` (uint64; ``-0.0``'s bits are taken as ``0.0``'s, NaN
    patterns are skipped): per column, an open-addressing table of at least ``2 rows`` slots (load at most one half;
    more, up to :data:`HASH_SPREAD` per value, where that stays within ``2**HASH_MAX_BITS`` slots), keyed by the bits,
    holding how many of each value were seen; each value adds that count to its column's pairs (the ``j``-th of a
    group adds ``j - 1``: ``m (m - 1) / 2`` in all). Slots by Fibonacci hashing (Knuth: the top bits of
    ``bits * 0x9E3779B97F4A7C15``), collisions by linear probing; a slot belongs to the column whose number it is
    tagged with (no table cleared between columns). Returns int64 ``(2, C)``: the pairs, and the zeros (``+0.0`` or
    ``-0.0``) of each column."""
    rows, cols = bits.shape
    lg = 4
    while (1 << lg) < 2 * rows:
        lg += 1
    while (1 << lg) < HASH_SPREAD * rows and lg < HASH_MAX_BITS:
        lg += 1
    size = 1 << lg
    shift = np.uint64(64 - lg)
    mul = np.uint64(0x9E3779B97F4A7C15)
    magnitude = np.uint64(0x7FFFFFFFFFFFFFFF)
    inf = np.uint64(0x7FF0000000000000)
    negative_zero = np.uint64(0x8000000000000000)
    keys = np.empty(size, dtype=np.uint64)
    seen = np.empty(size, dtype=np.int64)
    owner = np.full(size, -1, dtype=np.int64)  # the column whose value a slot holds (-1: none yet)
    out = np.zeros((2, cols), dtype=np.int64)
    for c in range(cols):
        total = 0
        zeros = 0
        for i in range(rows):
            key = bits[i, c]
            key = key if key != negative_zero else np.uint64(0)  # -0.0 is 0.0
            if (key & magnitude) > inf:  # a NaN: equal to nothing
                continue
            zeros += key == 0
            h = np.intp((key * mul) >> shift)
            while True:
                if owner[h] != c:  # an empty slot (for this column)
                    owner[h] = c
                    keys[h] = key
                    seen[h] = 1
                    break
                if keys[h] == key:
                    m = seen[h]
                    total += m
                    seen[h] = m + 1
                    break
                h = (h + 1) & (size - 1)
        out[0, c] = total
        out[1, c] = zeros
    return out


def shared_residual_errors(X: F, W: F, b: F, Y: F, A: F, u: float, ut: float = 0.0, *, lam: float = 6.0,
                           compiled: bool = True, x_pairs: SamplePairs | None = None) -> SharedErrors:
    """The shared part of the residual's rounding errors (module docstring).

    Args:
        X: ``(N, D)``, W: ``(D, K)``, b: ``(K,)``, Y: ``(N, K)``: the step's inputs (exact values, one floating type).
        A: ``(N, K)`` the sum of the residual's term magnitudes ``|X| |W| + |b| + |Y|`` (:class:`ResidualBound`'s).
        u: the unit roundoff of the dtype the step computes in; ut: TF32's, where the products' inputs are
            rounded to it, else 0.
        lam: the expected bounds' multiplier (``harness.bounds.LAMBDA``): which of a family's two models is smaller.
        compiled: use the compiled kernel (:func:`_shared_kernel`) where a column of X or Y repeats, every array is
            float64 and ``A`` finite (the same float64 operations in the same order, the two sums that choose a
            family's model included: the same floats); else, and for the extended-precision re-evaluation, NumPy.
        x_pairs: :func:`sample_pairs` of this ``X`` where the caller formed it (its screen, not formed again), or None.

    Returns:
        :class:`SharedErrors` of shape ``(N, K)``.
    """
    n, d = X.shape
    k = W.shape[1]
    wd = np.result_type(X, W, b, Y, A)
    x_cols = x_pairs.repeating() if x_pairs is not None else repeating_columns(X)
    y_cols = repeating_columns(Y)
    mX = {j: column_multiplicity(X[:, j]) for j in x_cols}
    mY = {j: column_multiplicity(Y[:, j]) for j in y_cols}
    b_shared = n > 1 and bool(np.asarray(b != 0).any())
    if not (x_cols or y_cols or b_shared):
        return SharedErrors(None, None, False)
    if compiled and not (x_cols or y_cols) and _compiled_b_alone(b, Y, A, wd):  # b alone: one compiled pass
        det_b = np.empty(Y.shape)
        if _b_family(b, Y, A, float(u), det_b):
            return SharedErrors(det_b, None, True)
    # compiled where some column of X or Y repeats
    if compiled and (x_cols or y_cols) and wd == np.float64 and bool(np.isfinite(A).all()):
        empty = np.zeros((n, 0), dtype=np.int64)
        fx = np.array(x_cols, dtype=np.int64)
        fy = np.array(y_cols, dtype=np.int64)
        mx = np.stack([mX[j] for j in x_cols], axis=1) if x_cols else empty
        my = np.stack([mY[j] for j in y_cols], axis=1) if y_cols else empty
        Xc, Wc, bc, Yc, Ac = (np.ascontiguousarray(a, dtype=np.float64) for a in (X, W, b, Y, A))
        det_k, var_k, flags = _shared_kernel(Xc, Wc, bc, Yc, Ac, fx, mx, fy, my, b_shared, float(u), float(u + 2 * ut),
                                             float(lam))
        if not flags[0]:
            return SharedErrors(None, None, False)
        return SharedErrors(det_k if flags[1] else None, var_k if flags[2] else None, True)

    def repeated(m: npt.NDArray[np.int64]) -> npt.NDArray[np.intp] | slice:
        """The rows whose value repeats; a slice (no copies) where every row's does."""
        rows = np.flatnonzero(m > 1)
        return slice(None) if rows.size == n else rows

    def shared_terms() -> Iterator[tuple[npt.NDArray[np.intp] | slice, F, F, F | None, bool]]:
        """Each shared term's (rows, signed values t (rows, K), group sizes, its own rounding or None, is -Y?)."""
        for j, mj in mX.items():
            rows = repeated(mj)
            t = X[rows, j][:, None] * W[j][None, :]
            yield rows, t, mj[rows][:, None].astype(wd), (u + 2 * ut) * np.abs(t), False
        if b_shared:
            yield slice(None), np.broadcast_to(b[None, :], (n, k)), np.full((1, 1), n, dtype=wd), None, False
        for col, mc in mY.items():
            rows = repeated(mc)
            t = np.zeros((mc[rows].size, k), dtype=wd)
            t[:, col] = -Y[rows, col]
            yield rows, t, mc[rows][:, None].astype(wd), None, True

    if not (x_cols or y_cols):  # b alone shared: no count of shared terms per row needed
        count: npt.NDArray[np.int64] | None = None
    else:  # the number of nonzero shared terms of each element, from the values alone (no term formed)
        count = np.zeros((n, k), dtype=np.int64)
        for j, mj in mX.items():
            rows = repeated(mj)
            count[rows] += (X[rows, j] != 0)[:, None] & (W[j] != 0)[None, :]
        if b_shared:
            count += (b != 0)[None, :]
        for col, mc in mY.items():
            rows = repeated(mc)
            count[rows, col] += Y[rows, col] != 0
        if not count.any():
            return SharedErrors(None, None, False)
    det: F | None = None
    var: F | None = None
    with np.errstate(invalid="ignore", over="ignore"):
        for rows, t, m, own, is_y in shared_terms():
            at, Yr = np.abs(t), Y[rows]
            aYr = np.abs(Yr)
            # the largest min(|x|, |x + t|) over the partial sums x of the row's other terms: the other products
            # and b at full magnitude, -Y with its cancellation against t (the term -Y itself: no other -Y)
            if is_y:
                M = A[rows] - aYr
            else:
                M = np.subtract(t, Yr)
                np.abs(M, out=M)
                np.minimum(M, aYr, out=M)
                M += A[rows]
                M -= aYr
                M -= at
            # x unshared: the mean of the rounding error is at most ulp(x)/2 <= u |x|; x possibly shared (the row
            # shares other terms): the error itself, at most min(|x|, u |x + t|) <= u (|x| + |t|)
            if count is not None:
                M += np.where(count[rows] <= 1, 0.0, at)
            M *= u
            beta = np.minimum(at, M, out=M)
            if own is not None:
                beta += own
            # the family's worst case or its group model, whichever is smaller for a reduction with unit weights
            # (grad_b's; valid either way for any weights). For one group of all N rows (b) the worst case always
            # is: sum beta <= sqrt(N sum beta^2) (Cauchy-Schwarz)
            if bool(np.all(m >= n)) or _sequential_sum(beta) <= lam * np.sqrt(_sequential_sum(m * beta**2)):
                if det is None and isinstance(rows, slice):
                    det = beta
                else:
                    det = np.zeros((n, k), dtype=wd) if det is None else det
                    det[rows] += beta
            else:
                var = np.zeros((n, k), dtype=wd) if var is None else var
                var[rows] += m * beta**2
    return SharedErrors(det, var, True)


def _compiled_b_alone(b: F, Y: F, A: F, wd: np.dtype) -> bool:
    """Whether :func:`_b_family` may take the family of ``b`` where it is the only shared term: float64 arrays, ``Y``
    and ``A`` C-contiguous ``(N, K)`` (NumPy's ``b - Y`` is then C-contiguous too, and so the family's array)."""
    return bool(wd == np.float64 and b.ndim == 1 and Y.flags.c_contiguous and A.flags.c_contiguous
                and Y.shape == A.shape and Y.shape[1:] == b.shape)


#: :func:`_b_family` takes ``B_ROWS`` rows of elements at a time.
B_ROWS = 8


@njit(cache=True, nogil=True)
def _b_family(b: np.ndarray, Y: np.ndarray, A: np.ndarray, u: float, det: np.ndarray) -> bool:  # pragma: no cover
    """The family of ``b`` where no column of X or Y repeats (:func:`shared_residual_errors`' NumPy loop for one term
    shared by all N rows, always its worst case: ``det`` is its ``beta``) into ``det`` ``(N, K)``, float64, with the
    NumPy path's operations in its order::

        M = min(|b - Y|, |Y|) + A - |Y| - |b|;  beta = min(|b|, u M)

    Returns False (``det`` then unfinished, for the NumPy path) where some ``u M`` is zero or not finite or some
    ``b`` is not finite: elsewhere both minima compare a value with a nonzero finite one or two ``+0.0`` (absolute
    values), so they are NumPy's whatever its rule for NaN and signed zeros; there the same floats."""
    n, k = Y.shape
    for c in range(k):
        if not np.isfinite(b[c]):
            return False
    # element after element in C order, in chunks of ``k B_ROWS`` elements against ``b`` tiled as many times (each
    # element's operations alone, so the loop vectorises); ``bad`` counts the elements whose ``u M`` is zero or not
    # finite, to return False after the pass rather than at the first (``det`` is then unfinished either way)
    if n * k == 0:
        return True
    L = k * B_ROWS
    bt = np.empty(L)
    for l in range(L):
        bt[l] = b[l % k]
    y = Y.reshape(n * k)
    a = A.reshape(n * k)
    dt = det.reshape(n * k)
    bad = 0
    for j0 in range(0, n * k, L):
        j1 = min(n * k, j0 + L)
        yc, ac, dc = y[j0:j1], a[j0:j1], dt[j0:j1]  # (a loop from 0 over slices: LLVM vectorises it, not one over j0 + l)
        for l in range(j1 - j0):
            t = bt[l]
            at = abs(t)
            yv = yc[l]
            ay = abs(yv)
            m = abs(t - yv)
            m = m if (m < ay) | (m != m) else ay  # np.minimum's rule
            m = m + ac[l]
            m = m - ay
            m = m - at
            m = m * u
            bad += 0 if (m != 0.0) & (abs(m) < np.inf) else 1
            dc[l] = at if (at < m) | (at != at) else m
    return bad == 0


@njit(cache=True, nogil=True)
def _addend_bound(t: float, y: float, a: float, several: bool, u: float) -> float:  # pragma: no cover - compiled
    """``beta`` of a product or b term ``t`` of an element with label ``y`` and term magnitudes ``a``
    (:func:`shared_residual_errors`' operations, in its order); ``several``: the element shares other terms."""
    at, ay = abs(t), abs(y)
    m = min(abs(t - y), ay) + a
    m -= ay
    m -= at
    if several:
        m += at
    m *= u
    return min(at, m)


@njit(cache=True, nogil=True)
def _shared_kernel(X: np.ndarray, W: np.ndarray, b: np.ndarray, Y: np.ndarray, A: np.ndarray, fx: np.ndarray,
                   mx: np.ndarray, fy: np.ndarray, my: np.ndarray, b_shared: bool, u: float, c_own: float, lam: float,
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """:func:`shared_residual_errors`' loop over the families in two passes over the elements, float64 (``A``
    finite): the first sums each family's ``beta`` and ``m beta**2`` (which of its two models), the second adds each
    family's part to ``det`` or ``var``, families in the NumPy path's order (X's columns, b, Y's columns), each
    ``beta`` with the NumPy path's operations in its order and each family's sums element after element in C order
    (:func:`_sequential_sum`), so ``det`` and ``var`` are the same floats. ``fx``, ``fy``: the shared columns of X
    and Y; ``mx``, ``my``: their multiplicities ``(N, F)``; ``c_own = u + 2 ut``. Returns ``(det, var, flags)``,
    flags = (some term shared, det used, var used)."""
    n, k = A.shape
    nx, ny = fx.shape[0], fy.shape[0]
    nf = nx + 1 + ny
    s1 = np.zeros(nf)
    s2 = np.zeros(nf)
    flags = np.zeros(3, dtype=np.bool_)
    det = np.empty((0, k))  # allocated after the first pass, only where some family uses it (page faults cost)
    var = np.empty((0, k))
    use_det = np.zeros(nf, dtype=np.bool_)
    use_det[nx] = True  # b: one group of all N rows, always its worst case
    count = np.zeros(k, dtype=np.int64)
    bf = np.zeros(k)
    any_shared = False
    for sweep in range(2):
        for i in range(n):
            # the number of nonzero shared terms of each element of the row
            count[:] = 0
            for f in range(nx):
                j = fx[f]
                if mx[i, f] > 1 and X[i, j] != 0:
                    for c in range(k):
                        count[c] += W[j, c] != 0
            if b_shared:
                for c in range(k):
                    count[c] += b[c] != 0
            for g in range(ny):
                c = fy[g]
                if my[i, g] > 1 and Y[i, c] != 0:
                    count[c] += 1
            for f in range(nf):
                if f < nx:
                    mf = mx[i, f]
                    if mf <= 1:
                        continue
                    x = X[i, fx[f]]
                    for c in range(k):
                        t = x * W[fx[f], c]
                        bf[c] = _addend_bound(t, Y[i, c], A[i, c], count[c] > 1, u) + c_own * abs(t)
                elif f == nx:
                    if not b_shared:
                        continue
                    mf = n
                    for c in range(k):
                        bf[c] = _addend_bound(b[c], Y[i, c], A[i, c], count[c] > 1, u)
                else:
                    mf = my[i, f - nx - 1]
                    if mf <= 1:
                        continue
                    for c in range(k):
                        ay = abs(Y[i, c])
                        at = ay if fy[f - nx - 1] == c else 0.0
                        m = A[i, c] - ay
                        m = m + at if count[c] > 1 else m
                        m *= u
                        bf[c] = min(at, m)
                w = float(mf)
                for c in range(k):
                    if count[c] == 0:  # an element with no nonzero shared term shares nothing
                        continue
                    any_shared = True
                    if sweep == 0:
                        s1[f] += bf[c]
                        s2[f] += w * bf[c] ** 2
                    elif use_det[f]:
                        det[i, c] += bf[c]
                    else:
                        var[i, c] += w * bf[c] ** 2
        if sweep == 0:
            if not any_shared:
                return det, var, flags
            flags[0] = True
            for f in range(nf):
                if f == nx and not b_shared:
                    continue
                use_det[f] = use_det[f] or s1[f] <= lam * np.sqrt(s2[f])
                if use_det[f]:
                    flags[1] = True
                else:
                    flags[2] = True
            if flags[1]:
                det = np.empty((n, k))
                det.ravel()[:] = 0.0
            if flags[2]:
                var = np.empty((n, k))
                var.ravel()[:] = 0.0
    return det, var, flags
