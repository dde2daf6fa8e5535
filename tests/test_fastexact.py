"""The integer-slice oracle (harness.fastexact) against the exact-rational reference, bit for bit,
and the compiled evaluation plan against the SymPy expression walker."""

from __future__ import annotations

import math
import zlib
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, target
from hypothesis import strategies as st

from harness import fastexact
from harness.bounds import step_bounds
from harness.exact import ScaledInts
from harness.floats import get_format, round_to_format
from harness.oracle import _Evaluator, exact_inputs_from_floats, exact_inputs_from_written, exact_step, plan
from harness.runner import RADIUS_FRACTION, narrow_by_radius, radius_negligible
from harness.symbolic import derive

DTYPES = ("float64", "float32", "float16", "bfloat16")
KINDS = ("normal", "integer", "huge", "tiny", "subnormal", "cancelling", "mixed", "zeros", "ties")


def _data(kind: str, rng: np.random.Generator, n: int, d: int, k: int) -> dict[str, np.ndarray]:
    def g(*shape: int) -> np.ndarray:
        if kind == "normal":
            return rng.standard_normal(shape)
        if kind == "integer":
            return rng.integers(-1000, 1000, shape).astype(np.float64)
        if kind == "huge":
            return rng.standard_normal(shape) * 2.0 ** rng.integers(300, 380, shape)
        if kind == "tiny":
            return rng.standard_normal(shape) * 2.0 ** rng.integers(-600, -520, shape)
        if kind == "subnormal":
            return rng.standard_normal(shape) * 2.0 ** rng.integers(-1074, -1000, shape)
        if kind == "mixed":
            return rng.standard_normal(shape) * 2.0 ** rng.integers(-60, 60, shape)
        if kind == "zeros":
            return np.where(rng.random(shape) < 0.7, 0.0, rng.standard_normal(shape))
        if kind == "ties":  # few-bit values whose residuals land on rounding ties
            return rng.integers(-8, 8, shape) * 2.0 ** rng.integers(-3, 60, shape)
        return rng.standard_normal(shape)

    X, W, b = g(n, d), g(d, k), g(k)
    if kind == "cancelling":  # y = X W + b up to a few low bits: the residual cancels catastrophically
        y = X @ W + b + rng.standard_normal((n, k)) * 2.0**-50
    else:
        y = g(n, k)
    return {"X": X, "y": y, "W": W, "b": b}


def _rounded(arrs: dict[str, np.ndarray], dtype: str) -> dict[str, np.ndarray]:
    fmt = get_format(dtype)
    with np.errstate(all="ignore"):
        out = {key: np.asarray(round_to_format(v, fmt), dtype=np.float64) for key, v in arrs.items()}
    return {key: np.where(np.isfinite(v), v, 0.0) for key, v in out.items()}  # overflow to inf: not gradable


def _same(arrs: dict[str, np.ndarray], lr: Fraction, reduction: str) -> None:
    ref = exact_step(exact_inputs_from_floats(arrs), lr, reduction, method="exact-rational")
    fast = exact_step(exact_inputs_from_floats(arrs), lr, reduction, method="exact-integer-slices")
    assert fast.method == "exact-integer-slices"
    for q, v in ref.values.items():
        assert v.shape == fast.values[q].shape, q
        assert (v.to_fractions() == fast.values[q].to_fractions()).all(), q
    assert (ref.residual.to_fractions() == fast.residual.to_fractions()).all()
    r_ref, r_fast = ref.residual.to_float64(), fast.residual.to_float64()
    assert np.array_equal(r_ref, r_fast) and np.array_equal(np.signbit(r_ref) & (r_ref == 0), np.signbit(r_fast) & (r_fast == 0))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(KINDS), dtype=st.sampled_from(DTYPES), reduction=st.sampled_from(("sum", "mean")),
       n=st.integers(1, 40), d=st.integers(1, 6), k=st.integers(1, 4), seed=st.integers(0, 2**32 - 1),
       lr=st.sampled_from((0.01, 0.1, 1.0, 2.0**-20, 3.0)))
def test_slices_equal_rationals(kind, dtype, reduction, n, d, k, seed, lr):
    rng = np.random.default_rng(seed)
    arrs = _rounded(_data(kind, rng, n, d, k), dtype)
    _same(arrs, Fraction(lr), reduction)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_slices_equal_rationals_chunked(kind, dtype):
    """Past one row chunk (2**16 rows) and one column chunk (2**11 columns)."""
    rng = np.random.default_rng(3)
    n, d, k = (fastexact.CHUNK_N + 37, 2, 2) if kind != "normal" else (5, fastexact.CHUNK_D + 3, 2)
    _same(_rounded(_data(kind, rng, n, d, k), dtype), Fraction(1, 64), "mean")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(-(2**70), 2**70), min_size=1, max_size=6), st.integers(-1200, 900))
def test_residual_rounding_is_correct(ints, q0):
    """DigitResidual.to_float64 rounds like the reference (ties to even, subnormals, overflow)."""
    a = np.array(ints, dtype=object)
    d = np.zeros((1, len(ints)), dtype=np.int64)
    acc = []
    for v in ints:  # two's complement base-2**21 digits of each integer
        digs = []
        for _ in range(6):
            digs.append(v & fastexact._MASK)
            v >>= fastexact.B
        digs.append(v)
        acc.append(digs)
    d = np.array(acc, dtype=np.int64).T
    got = fastexact.DigitResidual(fastexact.carry(d), q0).to_float64()
    want = ScaledInts(a, Fraction(2) ** q0).to_float64()
    assert np.array_equal(got, want)


def test_falls_back_when_too_wide():
    x = np.array([[2.0**-1000, 2.0**1000]] * 40)
    arrs = {"X": x, "y": np.ones((40, 1)), "W": np.array([[2.0**-1000], [2.0**1000]]), "b": np.zeros(1)}
    st_ = exact_step(exact_inputs_from_floats(arrs), Fraction(1, 8), "sum")
    assert st_.method == "exact-rational"


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_plan_matches_sympy_walker(reduction):
    """The compiled plan gives the same exact values as walking SymPy's expressions."""
    rng = np.random.default_rng(11)
    der = derive(reduction)
    for _ in range(5):
        n, d, k = (int(v) for v in rng.integers(1, 5, 3))
        vals = {"X": rng.integers(-9, 9, (n, d)), "y": rng.integers(-9, 9, (n, k)), "W": rng.integers(-9, 9, (d, k)),
                "b": rng.integers(-9, 9, k)}
        ex = {key: np.vectorize(lambda v: Fraction(int(v), 7), otypes=[object])(v) for key, v in vals.items()}
        inp = exact_inputs_from_written(ex)
        lr = Fraction(int(rng.integers(1, 50)), 1000)
        got = exact_step(inp, lr, reduction, method="exact-rational")
        env = {"X": inp["X"], "Y": inp["y"], "W": inp["W"], "b": ScaledInts(inp["b"].ints.reshape(k, 1), inp["b"].scale)}
        ev = _Evaluator(der, env, {der.N: n, der.D: d, der.K: k}, lr)
        for q, expr in der.expressions().items():
            want = ev(expr)
            assert (np.asarray(want.to_fractions()).ravel() == np.asarray(got.values[q].to_fractions()).ravel()).all(), q
    assert plan(reduction) is plan(reduction)  # built once


def test_lazy_values_copy_and_pickle():
    """The lazy float and digit arrays survive pickling and deep copies (worker processes, caches)."""
    import copy
    import pickle

    rng = np.random.default_rng(1)
    arrs = {"X": rng.standard_normal((100, 8)), "y": rng.standard_normal((100, 2)), "W": rng.standard_normal((8, 2)),
            "b": rng.standard_normal(2)}
    inp = exact_inputs_from_floats(arrs)
    st_ = exact_step(inp, Fraction(1, 8), "mean")
    assert st_.method == "exact-integer-slices"
    for other in (pickle.loads(pickle.dumps(st_)), copy.deepcopy(st_)):
        assert (other.residual.to_fractions() == st_.residual.to_fractions()).all()
        assert np.array_equal(other.residual.to_float64(), st_.residual.to_float64())
        for q in st_.values:
            assert (other.values[q].to_fractions() == st_.values[q].to_fractions()).all()
    x2 = pickle.loads(pickle.dumps(inp["X"]))
    assert (x2.to_fractions() == inp["X"].to_fractions()).all()


@pytest.mark.parametrize("kind", ["normal", "huge", "cancelling", "ties"])
def test_row_chunks_summed_over_several_int64_blocks(monkeypatch, kind):
    """X^T R over more chunk sums than one int64 block holds (ACC_BLOCK shrunk to 1 and 3: Python-integer
    sums across blocks), bit for bit against the rationals."""
    rng = np.random.default_rng(17)
    arrs = _rounded(_data(kind, rng, 3 * fastexact.CHUNK_N + 5, 3, 2), "float64")
    for block in (1, 3):
        monkeypatch.setattr(fastexact, "ACC_BLOCK", block)
        _same(arrs, Fraction(1, 8), "sum")


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_row_chunks_of_different_plane_counts_join_into_one_residual(sign):
    """The exact step by row chunks (fastexact.ROW_CHUNK rows each) with residuals far larger in one chunk than in
    the others, of either sign: each chunk's residual has its own number of digit planes, its sign in its top one;
    the values, the residual's digits put together when read (each chunk's sign extended to the common planes),
    their rounding and a pickled copy are the rationals' bit for bit."""
    import pickle

    rng = np.random.default_rng(11)
    n = 3 * fastexact.ROW_CHUNK + 7
    X = rng.standard_normal((n, 3)) * 2.0 ** rng.integers(-20, 20, (n, 3))
    W, b = rng.standard_normal((3, 2)), rng.standard_normal(2)
    y = X @ W + b  # residuals of a few low bits ...
    y[fastexact.ROW_CHUNK + 5:fastexact.ROW_CHUNK + 9] -= sign * 2.0**80  # ... and a few huge ones in the second chunk
    arrs = {"X": X, "y": y, "W": W, "b": b}
    _same(arrs, Fraction(1, 8), "mean")
    R = fastexact.step_parts(X, y, W, b)[0]
    used = [c[3] for c in R._chunks]  # (before the digits are read)
    assert len(set(used)) > 1
    ref = exact_step(exact_inputs_from_floats(arrs), Fraction(1, 8), "mean", method="exact-rational").residual
    again = pickle.loads(pickle.dumps(R))
    assert len(R._digits) == max(used)
    assert (R.to_fractions() == ref.to_fractions()).all() and (again.to_fractions() == ref.to_fractions()).all()
    assert np.array_equal(R._round(), ref.to_float64()) and np.array_equal(again.to_float64(), ref.to_float64())


def test_chunk_sums_stay_exact_at_the_digit_limits():
    """Every digit at its largest magnitude (X digits 2**21 - 1 = all ones, R digits near 2**21) over a full row
    chunk: the partial sums reach 2**53 - O(2**43), still exact; a wrong chunk length would round them."""
    n = fastexact.CHUNK_N
    x = np.full((n, 1), float(2**63 - 2**10))  # 53 one bits: digits 2**21 - 1 (and the top one)
    arrs = {"X": x, "y": np.full((n, 1), -float(2**52 - 1)), "W": np.ones((1, 1)) * (1 - 2.0**-53), "b": np.zeros(1)}
    _same(arrs, Fraction(1), "sum")


def test_residual_float64_computed_once_and_read_only():
    rng = np.random.default_rng(2)
    arrs = {"X": rng.standard_normal((64, 4)), "y": rng.standard_normal((64, 3)), "W": rng.standard_normal((4, 3)),
            "b": rng.standard_normal(3)}
    st_ = exact_step(exact_inputs_from_floats(arrs), Fraction(1, 8), "mean", method="exact-integer-slices")
    r1 = st_.residual.to_float64()
    assert st_.residual.to_float64() is r1
    with pytest.raises(ValueError):
        r1[0, 0] = 1.0  # a plug-in error model cannot change the residual another grading reads


def test_reused_work_buffers_never_change_an_earlier_result():
    """The slice path reuses its work buffers across calls: a result (its exact values, residual digits and
    rounded residual) stays what it was after later calls on other data, smaller and larger."""
    rng = np.random.default_rng(5)

    def arrs(n: int) -> dict[str, np.ndarray]:
        return {"X": rng.standard_normal((n, 4)) * 2.0 ** rng.integers(-30, 30, (n, 4)), "y": rng.standard_normal((n, 2)),
                "W": rng.standard_normal((4, 2)), "b": rng.standard_normal(2)}

    first = arrs(300)
    ref = exact_step(exact_inputs_from_floats(first), Fraction(1, 8), "mean", method="exact-rational")
    st1 = exact_step(exact_inputs_from_floats(first), Fraction(1, 8), "mean", method="exact-integer-slices")
    assert st1.method == "exact-integer-slices"
    for n in (300, 100, 900):  # nothing of st1 read yet: its lazy parts are built after these calls
        exact_step(exact_inputs_from_floats(arrs(n)), Fraction(1, 8), "mean", method="exact-integer-slices")
    for q, v in ref.values.items():
        assert (st1.values[q].to_fractions() == v.to_fractions()).all(), q
    assert (st1.residual.to_fractions() == ref.residual.to_fractions()).all()
    assert np.array_equal(st1.residual.to_float64(), ref.residual.to_float64())


# ------------------------------------------------------------------ the accurate X^T R (fastexact.truncation)


def _exact_xtr_and_terms(arrs: dict[str, np.ndarray]) -> tuple[list[list[Fraction]], list[list[Fraction]]]:
    """X^T R and sum_n |X[n, d] R[n, k]| in exact rationals, from the exact residual (independent of the slices)."""
    X = [[Fraction(float(v)) for v in row] for row in arrs["X"]]
    W = [[Fraction(float(v)) for v in row] for row in arrs["W"]]
    y = [[Fraction(float(v)) for v in row] for row in arrs["y"]]
    b = [Fraction(float(v)) for v in arrs["b"]]
    n, d, k = len(X), len(W), len(b)
    R = [[sum((X[i][t] * W[t][j] for t in range(d)), Fraction(0)) + b[j] - y[i][j] for j in range(k)] for i in range(n)]
    xtr = [[sum((X[i][t] * R[i][j] for i in range(n)), Fraction(0)) for j in range(k)] for t in range(d)]
    terms = [[sum((abs(X[i][t] * R[i][j]) for i in range(n)), Fraction(0)) for j in range(k)] for t in range(d)]
    return xtr, terms


def _check_accurate(arrs: dict[str, np.ndarray]) -> float:
    """Assert ``|exact - accurate| <= radius <= 2**-60 sum|terms|`` element-wise; return the largest
    error / (2**-60 sum|terms|) (0 where nothing was left out)."""
    X, y, W, b = (np.ascontiguousarray(arrs[key], dtype=np.float64) for key in ("X", "y", "W", "b"))
    _, gw, _, _, radius = fastexact.step_parts(X, y, W, b, accurate=True)
    _, gw_exact, _, _, none = fastexact.step_parts(X, y, W, b, accurate=False)
    assert none is None
    xtr, terms = _exact_xtr_and_terms(arrs)
    worst = 0.0
    for t in range(W.shape[0]):
        for j in range(W.shape[1]):
            assert gw_exact.fraction_at((t, j)) == xtr[t][j]  # the exact product is exact
            err = abs(gw.fraction_at((t, j)) - xtr[t][j])
            if radius is None:
                assert err == 0
                continue
            r = Fraction(float(radius[t, j]))
            assert err <= r, (t, j, float(err), float(r))
            assert r <= Fraction(1, 2**fastexact.ACCURATE_BITS) * terms[t][j], (t, j, float(r), float(terms[t][j]))
            if terms[t][j]:
                worst = max(worst, float(err / (terms[t][j] / 2**fastexact.ACCURATE_BITS)))
    return worst


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_accurate_product_within_its_radius(kind, dtype):
    rng = np.random.default_rng(zlib.crc32(f"{kind}-{dtype}".encode()))  # (not hash(): salted per process)
    for n, d, k in ((40, 3, 2), (7, 5, 1)):
        _check_accurate(_rounded(_data(kind, rng, n, d, k), dtype))


def test_accurate_product_leaves_planes_out_of_float64_data():
    """The variant is not a no-op: on float64 data it drops digit planes and says so with a radius."""
    rng = np.random.default_rng(5)
    arrs = _data("normal", rng, 64, 4, 3)
    X, y, W, b = (arrs[key] for key in ("X", "y", "W", "b"))
    _, _, _, _, radius = fastexact.step_parts(X, y, W, b, accurate=True)
    assert radius is not None and bool((radius > 0).all())
    assert _check_accurate(arrs) <= 1.0


def test_exactly_zero_residual_stays_exact():
    """A perfect fit (R = 0: no sum of terms to bound an error by) is computed exactly."""
    X = np.array([[1.0, 2.0], [3.0, -1.0], [0.5, 0.25]])
    W = np.array([[0.75], [-1.5]])
    b = np.array([0.125])
    y = X @ W + b
    _, gw, _, _, radius = fastexact.step_parts(X, y, W, b, accurate=True)
    assert radius is None
    assert all(gw.fraction_at((t, 0)) == 0 for t in range(2))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(KINDS), dtype=st.sampled_from(DTYPES), n=st.integers(1, 48), d=st.integers(1, 4),
       k=st.integers(1, 3), seed=st.integers(0, 2**32 - 1), scale=st.integers(-30, 30))
def test_accurate_error_largest_against_bound(kind, dtype, n, d, k, seed, scale):
    """Hypothesis searches (``target``) for the largest error of the accurate product relative to
    ``2**-60`` times the sum of the absolute terms: it must stay within its radius, and the radius
    within that bound, everywhere."""
    rng = np.random.default_rng(seed)
    arrs = _data(kind, rng, n, d, k)
    arrs["X"] = arrs["X"] * 2.0**scale
    worst = _check_accurate(_rounded(arrs, dtype))
    target(worst, label="error / (2^-60 sum|terms|)")
    assert worst <= 1.0


def test_oracle_tries_the_accurate_product_only_where_it_pays():
    """From ACCURATE_MIN_WORK, the oracle's accurate=True leaves planes to float64 only where accurate_pays: not for
    D*K = 64 (exact, no radius), but for D*K = 1024 with mixed-magnitude float64 data (5 x 9 digit-plane pairs)."""
    rng = np.random.default_rng(12)
    small = _data("normal", rng, 1100, 16, 4)
    st_ = exact_step(exact_inputs_from_floats(small), Fraction(1, 10), "mean", accurate=True)
    assert st_.method == fastexact.METHOD and not st_.radius
    wide = _data("normal", rng, 70, 64, 16)
    wide["X"] = wide["X"] * 2.0 ** rng.integers(-20, 21, wide["X"].shape)
    assert fastexact.accurate_pays(64, 16, 5, 8) and not fastexact.accurate_pays(16, 4, 5, 8)
    assert not fastexact.accurate_pays(64, 16, 3, 7)
    st_ = exact_step(exact_inputs_from_floats(wide), Fraction(1, 10), "mean", accurate=True)
    assert st_.method == fastexact.ACCURATE_METHOD and set(st_.radius) == {"grad_W", "W"}


def test_oracle_names_the_accurate_method_and_its_radius(accurate_everywhere):
    rng = np.random.default_rng(11)
    arrs = _data("normal", rng, 1100, 16, 4)  # N*D*K = 70,400 >= ACCURATE_MIN_WORK
    exact_in = exact_inputs_from_floats(arrs)
    acc = exact_step(exact_in, Fraction(1, 10), "mean", accurate=True)
    ref = exact_step(exact_in, Fraction(1, 10), "mean")
    assert acc.method == fastexact.ACCURATE_METHOD and set(acc.radius) == {"grad_W", "W"}
    assert ref.method == fastexact.METHOD and not ref.radius
    for q in ("loss", "grad_b", "b"):  # exact either way
        assert acc.values[q].fraction_at(()) == ref.values[q].fraction_at(()) if q == "loss" else all(
            acc.values[q].fraction_at((j,)) == ref.values[q].fraction_at((j,)) for j in range(4))
    for q in ("grad_W", "W"):
        for t, j in ((0, 0), (7, 3), (15, 1)):
            err = abs(acc.values[q].fraction_at((t, j)) - ref.values[q].fraction_at((t, j)))
            assert err <= Fraction(float(acc.radius[q][t, j]))
    small = exact_step(exact_inputs_from_floats(_data("normal", rng, 100, 16, 4)), Fraction(1, 10), "mean", accurate=True)
    assert small.method == fastexact.METHOD and not small.radius  # below ACCURATE_MIN_WORK: exact


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("kind", ["normal", "mixed"])
def test_narrowed_bounds_of_the_accurate_value_lie_inside_the_exact_bounds(dtype, kind, accurate_everywhere):
    """Soundness of the grading: with the bounds narrowed by twice the radius, every value the comparison
    can grade agree (within the narrowed bound of the accurate value) lies within the bound of the exact
    value: ``|accurate - exact| + narrowed <= exact bound``, in exact rationals, rigorous and expected."""
    rng = np.random.default_rng(3)
    arrs = _data("normal", rng, 1100, 16, 4)
    if kind == "mixed":  # as the benchmark's: each element of X scaled by 2**U(-20, 20)
        arrs["X"] = arrs["X"] * 2.0 ** rng.integers(-20, 21, arrs["X"].shape)
    arrs = _rounded(arrs, dtype)
    exact_in = exact_inputs_from_floats(arrs)
    lr = Fraction(1, 10)
    acc = exact_step(exact_in, lr, "mean", accurate=True)
    ref = exact_step(exact_in, lr, "mean")
    if not acc.radius:  # float32 data of a narrow range need few planes: nothing is left out, the step is exact
        assert (dtype, kind) == ("float32", "normal")
        assert acc.method == fastexact.METHOD
        return
    fmt = get_format(dtype)
    kw = {"lr": float(lr), "reduction": "mean", "fmt": fmt}

    def bounds_of(st):
        hilo = {q: st.values[q].to_hi_lo() for q in st.values}
        return hilo, step_bounds(arrs, st.residual.to_float64(), {q: v[0] for q, v in hilo.items()}, **kw)

    hilo_a, b_acc = bounds_of(acc)
    _, b_ref = bounds_of(ref)
    assert radius_negligible(acc.radius, b_acc, hilo_a)
    narrow_by_radius(b_acc, acc.radius)
    for q in ("grad_W", "W"):
        for t in range(16):
            for j in range(4):
                gap = abs(acc.values[q].fraction_at((t, j)) - ref.values[q].fraction_at((t, j)))
                assert gap + Fraction(float(b_acc.rigorous[q][t, j])) <= Fraction(float(b_ref.rigorous[q][t, j]))
                assert gap + Fraction(float(b_acc.expected[q][t, j])) <= Fraction(float(b_ref.expected[q][t, j]))


def test_radius_not_negligible_falls_back():
    """A radius above RADIUS_FRACTION of the bound (or a zero bound) is not used: the runner computes the exact step."""

    class B:
        rigorous = {"grad_W": np.array([[1.0, 0.0]])}
        expected = {"grad_W": np.array([[0.5, 0.0]])}
        inf_allowed = {"grad_W": np.zeros((1, 2), dtype=bool)}
        nan_allowed = {"grad_W": np.zeros((1, 2), dtype=bool)}

    hilo = {"grad_W": (np.array([[1.0, 2.0]]), np.zeros((1, 2)))}
    assert not radius_negligible({"grad_W": np.array([[1e-9, 1e-300]])}, B(), hilo)  # zero bound at [0, 1]
    assert not radius_negligible({"grad_W": np.array([[RADIUS_FRACTION, 0.0]])}, B(), hilo)
    assert radius_negligible({"grad_W": np.array([[RADIUS_FRACTION / 2, 0.0]])}, B(), hilo)
    b = B()
    narrow_by_radius(b, {"grad_W": np.array([[0.25, 0.0]])})
    assert b.rigorous["grad_W"].tolist() == [[np.nextafter(0.5, 0.0), 0.0]] and b.expected["grad_W"].tolist() == [[0.0, 0.0]]


@settings(max_examples=400, deadline=None)
@given(a=st.one_of(st.integers(-1130, -1000), st.integers(1000, 1023), st.integers(-1000, 1000)), rows=st.lists(st.tuples(st.integers(2**52, 2**53 - 1), st.booleans(), st.integers(-3, 3)),
                                                min_size=1, max_size=24),
       t=st.sampled_from((-1, 0, 1)), gap=st.integers(1, 120), flip=st.booleans())
def test_kernel_rounds_ties_sticky_bits_subnormals_and_overflow(a, rows, t, gap, flip):
    """The residual kernel's branch-free rounding (hardware int-to-float conversion with a sticky bit) against
    the exact reference on residuals built to sit on a rounding tie, just above or below one (a sticky bit
    ``gap`` bits further down), or anywhere, with exponents from the subnormal range to past the overflow
    threshold: ``R = x + y_tie + b`` with ``x = m 2**e`` (53 bits), ``y`` half an ULP of ``x`` and ``b = t 2**(e - gap)``."""
    xs, ys = [], []
    for m, neg, shift in rows:
        e = min(a + shift, 1023)  # x = m 2**(e - 52) < 2**1024, finite (rounded where it is subnormal)
        x = math.ldexp(-m if neg else m, e - 52)
        xs.append(x)
        ys.append(-math.ldexp(-1.0 if neg != flip else 1.0, e - 53))  # R = x - y: half an ULP of x, towards or away from 0
    X = np.array(xs).reshape(-1, 1)
    y = np.array(ys).reshape(-1, 1)
    b = np.array([math.ldexp(float(t), a - gap)])
    W = np.ones((1, 1))
    _, _, rounded = fastexact.residual_digits(X, y, W, b)
    exact = (ScaledInts.from_floats(X) + ScaledInts.from_floats(b.reshape(1, 1)) - ScaledInts.from_floats(y))
    assert np.array_equal(rounded, exact.to_float64())


@pytest.mark.parametrize("k", [2049, 4097])
@pytest.mark.parametrize("kind", ["minus-one", "normal"])
def test_loss_exact_with_more_columns_than_a_gram_chunk(k, kind):
    """More than 2**11 residuals in one kernel block (K > 2048 columns: a block is one row): the Gram sums of the
    loss stay exact (every residual -1 makes every digit 2**21 - 1, whose squares no float64 sum of 2049 holds)."""
    rng = np.random.default_rng(k)
    if kind == "minus-one":
        arrs = {"X": np.zeros((2, 1)), "y": np.ones((2, k)), "W": np.zeros((1, k)), "b": np.zeros(k)}
    else:
        arrs = {"X": rng.standard_normal((2, 3)), "y": rng.standard_normal((2, k)), "W": rng.standard_normal((3, k)),
                "b": rng.standard_normal(k)}
    _same(arrs, Fraction(1, 64), "sum")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 6), st.integers(1, 6), st.integers(0, 40), st.data())
def test_position_sum_of_int64_digit_products(S, U, w0, data):
    """X^T R's digit-position combination in int64 (one accumulation block) against Python integers, for every
    int64 value from -2**63 to 2**63 - 1 (the extremes carry through every digit and the signed top limb)."""
    edge = st.sampled_from([-2**63, -2**63 + 1, -1, 0, 1, 2**21 - 1, 2**21, -2**21, 2**62, 2**63 - 1])
    vals = data.draw(st.lists(st.one_of(edge, st.integers(-2**63, 2**63 - 1)), min_size=S * U * 2, max_size=S * U * 2))
    p4 = np.array(vals, dtype=np.int64).reshape(S, 1, U, 2)
    got = fastexact.position_sum(p4, w0)
    for c in range(2):
        want = sum(int(p4[s, 0, u, c]) << (fastexact.B * (w0 + s + u)) for s in range(S) for u in range(U))
        target(float(abs(want).bit_length()), label=f"bits of sum {c}")
        assert int(got[0, c]) == want


@settings(max_examples=200, deadline=None)
@given(st.integers(-1100, 1100), st.data())
def test_plus_floats_is_the_scaled_ints_sum(q, data):
    """The accurate product's remainders added to X_t^T R_t's integers: the same value and the same
    representation (ints and scale) as ScaledInts' own additions, for zeros, subnormals and huge floats."""
    floats_ = st.one_of(st.sampled_from([0.0, -0.0, 5e-324, -5e-324, 1.0, -2.0**1023, 1.7976931348623157e308]),
                        st.floats(allow_nan=False, allow_infinity=False))
    shape = data.draw(st.sampled_from([(1, 1), (2, 3)]))
    size = shape[0] * shape[1]
    ints = np.empty(size, dtype=object)
    ints[:] = data.draw(st.lists(st.integers(-2**200, 2**200), min_size=size, max_size=size))
    ints = ints.reshape(shape)
    fs = tuple(np.array(data.draw(st.lists(floats_, min_size=size, max_size=size))).reshape(shape) for _ in range(2))
    got = fastexact.plus_floats(ints, q, fs)
    want = ScaledInts(ints, Fraction(2) ** q) + ScaledInts.from_floats(fs[0]) + ScaledInts.from_floats(fs[1])
    assert got.scale == want.scale
    assert [int(v) for v in got.ints.ravel()] == [int(v) for v in want.ints.ravel()]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(st.tuples(st.integers(-1, 1), st.integers(-1, 1), st.integers(-30, 110)), min_size=1, max_size=40),
       w=st.integers(-60, 60), b=st.tuples(st.integers(-1, 1), st.integers(-80, 80)), base=st.sampled_from((-1074, -600, 0, 850)),
       k=st.integers(1, 3), repeat=st.sampled_from((1, 200)))
def test_kernel_on_signed_powers_of_two_and_their_borrow_chains(rows, w, b, base, k, repeat):
    """The residual kernel's digits and rounding on sums of signed powers of two (``R = x 2**w + b - y`` with
    ``x``, ``b``, ``y`` each 0 or ``±2**e``): residuals that are exact powers ``±2**(B u)`` (a negative one's two's
    complement is a borrow chain through all-zero low digits up to a digit of MASK), exact zeros, mixed signs,
    subnormal and near-overflow values, over one or several blocks and columns, against the exact reference."""
    xs = np.array([sx * math.ldexp(1.0, base + e) for sx, _, e in rows] * repeat).reshape(-1, 1)
    ys = np.array([sy * math.ldexp(1.0, base + e + sy * 21) for _, sy, e in rows] * repeat)
    if base + 110 + 21 > 1023 or base + w + 110 > 1023:  # keep every input finite
        xs = np.minimum(xs, 2.0**1000) * (xs != 0)
        ys = np.clip(ys, -2.0**1000, 2.0**1000)
    n = xs.shape[0]
    X = xs
    W = np.full((1, k), math.ldexp(1.0, min(w, 0) if base > 0 else w))
    bv = np.full(k, float(b[0]) * math.ldexp(1.0, base + b[1]))
    y = np.stack([np.roll(ys, j) for j in range(k)], axis=1).reshape(n, k)
    digits, q0, rounded = fastexact.residual_digits(X, y, W, bv)
    exact = ScaledInts.from_floats(X) @ ScaledInts.from_floats(W) + ScaledInts.from_floats(bv.reshape(1, k)) \
        - ScaledInts.from_floats(y)
    assert np.array_equal(rounded.view(np.int64), exact.to_float64().view(np.int64))
    U = digits.shape[0]
    got = sum(digits[u].astype(object) * (1 << (fastexact.B * u)) for u in range(U))
    want = exact.ints * exact.scale / Fraction(2) ** q0
    assert all(int(g) == v for g, v in zip(got.ravel(), want.ravel(), strict=True))


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan, -math.nan])
@pytest.mark.parametrize("name", ["X", "y", "W", "b"])
def test_non_finite_inputs_raise_and_name_the_input(name, bad):
    """A NaN or infinite input has no exact value: every entry point of the slices (the residual, the exact parts, the
    accurate step, the digits) raises a ValueError naming it instead of returning digits of a garbage width (the
    kernel's largest magnitude of an array holding inf or NaN is inf or NaN, which was read as a width before)."""
    rng = np.random.default_rng(3)
    arrs = {"X": rng.standard_normal((40, 3)), "y": rng.standard_normal((40, 2)), "W": rng.standard_normal((3, 2)),
            "b": rng.standard_normal(2)}
    arrs[name].flat[arrs[name].size // 2] = bad
    for call in (lambda: fastexact.residual_digits(arrs["X"], arrs["y"], arrs["W"], arrs["b"]),
                 lambda: fastexact.exact_parts(arrs["X"], arrs["y"], arrs["W"], arrs["b"]),
                 lambda: fastexact.step_parts(arrs["X"], arrs["y"], arrs["W"], arrs["b"], accurate=True)):
        with pytest.raises(ValueError, match=rf"^{name} holds a NaN or an infinite value"):
            call()
    with pytest.raises(ValueError, match="NaN or an infinite value"):
        fastexact.digits(arrs[name], -1100)


def _hostile_matrix(kind: str, rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """Float64 matrices whose digits test :func:`harness.slicekernels.digits_cat` at its edges."""
    if kind == "subnormal":
        x = rng.standard_normal((rows, cols)) * 2.0 ** rng.integers(-1074, -1010, (rows, cols))
    elif kind == "huge":
        x = rng.standard_normal((rows, cols)) * 2.0 ** rng.integers(900, 1000, (rows, cols))
    elif kind == "ones":  # all-ones significands: every digit at its largest magnitude, both signs
        x = (2.0**53 - 1) * 2.0 ** rng.integers(-40, 40, (rows, cols)) * rng.choice([-1.0, 1.0], (rows, cols))
    elif kind == "zeros":  # mostly zeros, signed zeros among them
        x = np.where(rng.random((rows, cols)) < 0.8, rng.choice([-0.0, 0.0], (rows, cols)),
                     rng.standard_normal((rows, cols)))
    else:  # mixed magnitudes
        x = rng.standard_normal((rows, cols)) * 2.0 ** rng.integers(-60, 60, (rows, cols))
    x[0, 0] = x[0, 0] if x.size > 1 else 1.0
    return x


@pytest.mark.parametrize("kind", ["subnormal", "huge", "ones", "zeros", "mixed", "integers", "powers"])
@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (1023, 1), (1025, 2), (700, 16)])
def test_float_range_against_fractions(kind, shape):
    """:func:`fastexact.float_range` (the compiled pass, blocks of RANGE_BLOCK elements and a partial last one) against
    Python's exact values: the lowest set bit's exponent among the nonzero entries (the largest ``e`` with every
    ``x / 2**e`` an integer, from ``as_integer_ratio``; None for all zeros) and the largest magnitude."""
    rng = np.random.default_rng(zlib.crc32(f"{kind}{shape}".encode()))
    if kind == "integers":  # trailing zeros in every significand
        x = rng.integers(-2**20, 2**20, shape).astype(np.float64) * 2.0**30
    elif kind == "powers":  # significand fields of 0 (the implicit bit alone), the smallest subnormal, the largest normal
        x = rng.choice([-1.0, 1.0], shape) * 2.0 ** rng.integers(-1074, 1024, shape).astype(np.float64)
        x.flat[-1] = np.finfo(np.float64).max
    else:
        x = _hostile_matrix(kind, rng, *shape)
    lows = []
    for v in x.ravel().tolist():
        if v != 0.0:
            num, den = abs(v).as_integer_ratio()  # den a power of two; num odd where den > 1
            lows.append((num & -num).bit_length() - den.bit_length())
    assert fastexact.float_range(x) == ((min(lows) if lows else None), float(np.abs(x).max()))


@pytest.mark.parametrize("kind", ["subnormal", "huge", "ones", "zeros", "mixed"])
@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (1030, 7), (1030, 8), (2100, 16), (5, 40), (3, 512), (3, 513)])
@pytest.mark.parametrize("below", [0, 1, 45])
def test_digits_matrix_are_the_integers_digits(kind, shape, below):
    """:func:`fastexact.digits_matrix` (the kernel's strided column reads outside DIGIT_TRANSPOSE_COLS ..
    DIGIT_TRANSPOSE_MAX_COLS columns, its copy of each block transposed within, blocks of DIGIT_ROWS rows and a partial last one) against the digits of
    the exact integers ``x / 2**q`` in Python: signed digits of ``x``'s sign, zero digits +0.0, ``below`` bits under
    the lowest set bit (then ``s0`` zero planes)."""
    rng = np.random.default_rng(sum(shape) + below)
    x = _hostile_matrix(kind, rng, *shape)
    low = fastexact.lowest_exponent(x)
    assert low is not None
    q = low - below
    out, S = fastexact.digits_matrix(x, q)
    rows, cols = x.shape
    assert out.shape == (S * cols, rows)
    ints = [[int(Fraction(float(v)) / Fraction(2) ** q) for v in row] for row in x]
    for i in range(rows):
        for j in range(cols):
            v = ints[i][j]
            mag, sgn = abs(v), (-1 if v < 0 else 1)
            want = [float(sgn * ((mag >> (fastexact.B * s)) & fastexact._MASK)) for s in range(S)]
            got = out[j::cols, i]
            assert got.tolist() == want, (i, j)
            assert not np.signbit(got[got == 0]).any()  # zero digits are +0.0
            assert mag >> (fastexact.B * S) == 0


@pytest.mark.parametrize("kind", ["mixed", "ones", "subnormal", "zeros"])
@pytest.mark.parametrize("d", [3, 8, 16])
def test_first_product_positions_are_exact(kind, d):
    """:func:`fastexact._first_product`'s digit positions (below PER_PLANE_MIN_D columns one matmul with zero blocks,
    from it one matmul per position, with W's digits formed here or handed over as :func:`fastexact._xw_blocks`): the
    same positions bit for bit either way, each sum below ``2**53``, and their weighted sum is the exact integer
    ``X W / 2**(qx + qw)`` (Python integers)."""
    rng = np.random.default_rng(d)
    n, k = 300, 3
    X = _hostile_matrix(kind, rng, n, d)
    W = (2.0**53 - 1) * 2.0 ** rng.integers(-30, 30, (d, k)) * rng.choice([-1.0, 1.0], (d, k))
    qx, qw = fastexact.lowest_exponent(X), fastexact.lowest_exponent(W)
    xc, S = fastexact.digits_matrix(X, qx)
    pos = np.array(fastexact._first_product(xc, S, W, qw))
    wd = fastexact.digits(W, qw, fastexact.B, qw)
    handed = np.array(fastexact._xw_positions(xc, S, wd, fastexact._xw_blocks(S, wd)))
    assert pos.tobytes() == handed.tobytes()
    assert pos.shape == (S + len(wd) - 1, k, n)
    assert (np.abs(pos) < 2.0**53).all()
    xi = np.array([[int(Fraction(float(v)) / Fraction(2) ** qx) for v in row] for row in X], dtype=object)
    wi = np.array([[int(Fraction(float(v)) / Fraction(2) ** qw) for v in row] for row in W], dtype=object)
    want = (xi.dot(wi)).T
    got = sum(pos[u].astype(np.int64).astype(object) * (1 << (fastexact.B * u)) for u in range(len(pos)))
    assert (got == want).all()


@pytest.mark.parametrize("planes", [1, 2, 4, 9, 90])
@pytest.mark.parametrize("m", [1, 1023, 1025, 3000])
@pytest.mark.parametrize("base", [-1094, -1000, -131, 0, 900])
@pytest.mark.parametrize("dtype", [np.float64, np.int64])
def test_weighted_plane_sum_is_numpys_sum_in_its_order(planes, m, base, dtype):
    """:func:`harness.slicekernels.weighted_plane_sum` (blocks of PLANE_SUM_BLOCK elements, a partial last one) against
    NumPy's ``out = planes[P-1] * w[P-1]; out += planes[p] * w[p]`` for ``p = P-2 .. 0``, bit for bit: digits at their
    largest, zeros, weights from subnormal (and products that underflow) to past the overflow threshold."""
    from harness.slicekernels import weighted_plane_sum

    rng = np.random.default_rng(planes * m + base + 2000)
    pl = rng.integers(0, 1 << fastexact.B, (planes + 1, m)).astype(dtype)
    pl[:, ::5] = 0
    pl[:, 1::7] = fastexact._MASK
    w = np.array([math.ldexp(1.0, max(min(fastexact.B * p + base, 1023), -1074)) for p in range(planes)])
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        want = pl[planes - 1].astype(np.float64) * w[planes - 1]
        for p in range(planes - 2, -1, -1):
            want += pl[p].astype(np.float64) * w[p]
        got = weighted_plane_sum(pl, w)
    assert got.tobytes() == want.tobytes()
