"""NaN from ``inf - inf`` in the gradient's reduction over N: ``overflow`` only where an order libraries sum in forms it.

:func:`harness.bounds.overflow_masks` allows NaN (``nan_allowed``) wherever the sums of all positive and of all
negative terms both pass the dtype's range: an order that sums the terms sorted by sign. No library sums so; a step
returning NaN everywhere passed as ``overflow`` on ordinary float16 data (helper-100). The typical-order mask
(:attr:`harness.bounds.StepBounds.nan_typical`, :func:`harness.bounds.typical_partial_sums`) models the orders
libraries use (contiguous ranges of rows; ranges within each residue class mod 2, 4, ..., 128, the lanes of strided
accumulators; ranges of those lanes' totals in lane order; the partial sums grown by the probabilistic
``1 + min(LAMBDA sqrt(N + 3) u, gamma_{N + 3})``, not the rigorous ``(1 + u)**(N + 3)``, which is 403 at float16's
N = 12288): a NaN allowed by ``nan_allowed`` alone is ``suspect``.

The cases are built by hand, float16, sum reduction, ``X = 1`` (so grad_W = grad_b), ``W = 0``, ``b = 0`` (so
``R = -y`` exactly), the terms of the reductions ``2 R``:

- *period three*: ``R = (a, a, -2a)`` repeated, ``a = 256``, N = 1536 (512 periods): the terms ``(512, 512, -1024)``
  sum to 0 in every period; sorted by sign they sum to ``+-1024 * 512 = +-524288``, beyond float16's 65504 both
  ways; every contiguous range sums to within ``+-1024`` (two 512s; one -1024), and so does every range of a
  residue class mod a power of two (it visits the three phases in turn: ``gcd(L, 3) = 1``) and every range of
  the class totals (each class holds whole periods, 1536 / L a multiple of 3: totals 0). NaN: ``suspect``.
- *alternating*: ``R = (a, -a, a, -a, ...)``, ``a = 512``, N = 2048: every residue class mod an even L holds one
  sign, 2048 / 16 = 128 terms of ``+-1024`` in each of 16 lanes sum to ``+-131072``: a 16-lane accumulator
  overflows both ways and its lanes combine to NaN. NaN: ``overflow``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re

import numpy as np
import pytest

import harness
from harness.bounds import TYPICAL_LANES, step_bounds, typical_partial_sums
from harness.compare import compare, compare_many
from harness.floats import FLOAT16
from harness.oracle import exact_inputs_from_floats, exact_step
from harness.records import check_record, encode_line
from harness.verdicts import failures

BIG = 65504.0
U = 2.0**-11


# ---- typical_partial_sums: hand values ------------------------------------------------------------------------


def test_partial_sums_of_contiguous_ranges_by_hand():
    # terms 3, -1, 4, -1, -5, 9 (N = 6: lanes of 2 and 4 only). Ranges: the largest 9 (9 alone; the whole sum), the
    # most negative -6 (-1, -5). Classes mod 2: (3, 4, -5) and (-1, -1, 9): largest 7 and 9, most negative -5 and -2;
    # their totals in lane order (2, 7): 9. Mod 4: (3, -5), (-1, 9), (4,), (-1,): 9 and -5; totals (-2, 8, 4, -1):
    # 12 (8 + 4) and -2. So 12 (the lanes of 4 combined in order) and 6
    t = np.array([[3.0], [-1.0], [4.0], [-1.0], [-5.0], [9.0]])
    A, B = typical_partial_sums(t, t)
    assert A.tolist() == [12.0] and B.tolist() == [6.0]


def test_partial_sums_of_alternating_terms_reach_the_lanes():
    # +1, -1, ... (N = 8): ranges +-1; mod 2: one sign per class, 4 terms: +-4; mod 4: 2 terms: +-2; mod 8 and above:
    # one term per class (skipped: single rows are ranges already)
    t = np.array([[1.0], [-1.0]] * 4)
    A, B = typical_partial_sums(t, t)
    assert A.tolist() == [4.0] and B.tolist() == [4.0]
    # the same terms in blocks of 64 of each sign (N = 256): a range of 64 ones; the lanes of 64 see +1 and -1 in
    # turn, but each of 128 lanes sees one sign: lanes 0..63 total +2 (rows l, l + 128), lanes 64..127 total -2, and
    # their totals combined in lane order reach +-128 (a 128-lane accumulator, helper-105)
    blocks = np.repeat(np.array([1.0, -1.0, 1.0, -1.0]), 64)[:, None]
    A, B = typical_partial_sums(blocks, blocks)
    assert A.tolist() == [128.0] and B.tolist() == [128.0]


def test_partial_sums_use_each_terms_largest_and_smallest_value():
    # intervals [lo, hi]: the positive extreme sums the hi values, the negative one the lo values
    hi = np.array([[2.0], [-1.0], [2.0]])
    lo = np.array([[1.0], [-3.0], [1.0]])
    A, B = typical_partial_sums(hi, lo)
    assert A.tolist() == [4.0] and B.tolist() == [3.0]  # 2 + 2 (rows 0 and 2, a class mod 2); -3 (1 - 3 + 1: -1)


def test_partial_sums_of_infinite_terms():
    t = np.array([[1.0, 1.0], [np.inf, -np.inf], [-1.0, np.nan]])
    A, B = typical_partial_sums(t, t)
    assert A.tolist() == [np.inf, np.inf] and B.tolist() == [1.0, np.inf]  # NaN: either sign


def test_partial_sums_period_three_stay_within_two_terms():
    t = np.tile([512.0, 512.0, -1024.0], 512)[:, None]
    A, B = typical_partial_sums(t, t)
    assert A.tolist() == [1024.0] and B.tolist() == [1024.0]
    assert TYPICAL_LANES[-1] == 128 and 3 not in TYPICAL_LANES  # a lane count of 3k: each class one phase


# ---- compare(): nan_typical ----------------------------------------------------------------------------------------


def test_compare_nan_outside_the_typical_mask_is_suspect_and_not_measured():
    c = np.array([1.0, np.nan, np.nan])
    one = np.ones(3)
    kw = dict(exact_hi=np.array([1.0, 2.0, 3.0]), exact_lo=np.zeros(3), rigorous=one, expected=one,
              inf_allowed=np.zeros(3, bool), fmt=FLOAT16, nan_allowed=np.array([False, True, True]))
    res = compare(c, **kw, nan_typical=np.array([False, False, True]))
    assert res.verdict == "suspect" and res.counts == {"agree": 1, "suspect": 1, "overflow": 1}
    assert res.worst_index == (1,) and math.isnan(res.computed_at_worst)
    assert res.max_abs_error == 0.0 and res.bound_ratio == 0.0  # neither NaN measured
    assert compare(c, **kw).verdict == "overflow"  # None: nan_allowed, as before
    assert compare(c, **kw, nan_typical=np.ones(3, bool)).verdict == "overflow"
    many = compare_many([{"computed": c, **{k: v for k, v in kw.items() if k != "fmt"}, "nan_typical": np.zeros(3, bool)},
                         {"computed": c, **{k: v for k, v in kw.items() if k != "fmt"}}], FLOAT16)
    assert [m.verdict for m in many] == ["suspect", "overflow"]
    assert many[0].counts == {"agree": 1, "suspect": 2} and many[0].worst_index in ((1,), (2,))


def test_compare_a_disagreeing_element_stays_the_worst():
    c = np.array([np.nan, 5.0])
    res = compare(c, np.array([1.0, 1.0]), np.zeros(2), np.ones(2), np.ones(2), np.zeros(2, bool), FLOAT16,
                  nan_allowed=np.array([True, False]), nan_typical=np.zeros(2, bool))
    assert res.verdict == "disagree" and res.worst_index == (1,) and res.counts == {"suspect": 1, "disagree": 1}


# ---- float16 steps, emulated in NumPy ----------------------------------------------------------------------------


def _h(v: object) -> np.ndarray:
    return np.asarray(v, dtype=np.float16)


def _seq(t: np.ndarray) -> np.float16:
    """``t`` summed in order, every partial sum rounded to float16."""
    with np.errstate(over="ignore", invalid="ignore"):
        return np.cumsum(t, dtype=np.float16)[-1] if t.size else np.float16(0)


def _sign_sorted(t: np.ndarray) -> np.float16:
    with np.errstate(over="ignore", invalid="ignore"):
        return _h(_seq(t[t > 0]) + _seq(t[t < 0]))[()]


def _lanes16(t: np.ndarray) -> np.float16:
    """16 accumulators, lane l summing rows l, l + 16, ...; the lanes then summed in order."""
    pad = _h(np.concatenate([t, np.zeros(-len(t) % 16, dtype=np.float16)]))
    with np.errstate(over="ignore", invalid="ignore"):
        lanes = np.cumsum(pad.reshape(-1, 16), axis=0, dtype=np.float16)[-1]
    return _seq(lanes)


def _step(reduce_terms):
    """A float16 step (sum reduction) whose sums over N are ``reduce_terms``: R, 2 R, X_ij (2 R_ik) in float16."""
    def step(X, y, W, b, *, lr, reduction, steps):
        assert reduction == "sum"
        n, d = X.shape
        k = W.shape[1]
        out = []
        for _ in range(steps):
            with np.errstate(over="ignore", invalid="ignore"):
                R = _h(_h(X.astype(np.float32) @ W.astype(np.float32)) + b) - y
                S = _h(2) * R
                gW = _h([[reduce_terms(_h(X[:, j] * S[:, q])) for q in range(k)] for j in range(d)])
                gb = _h([reduce_terms(S[:, q]) for q in range(k)])
                loss = _seq(_h(R * R).ravel())
                W, b = _h(W - _h(_h(lr) * gW)), _h(b - _h(_h(lr) * gb))
            out.append(harness.StepResult(_h(loss), gW, gb, W, b))
        return out
    return step


@harness.implementation("t-overflow-nan-sign-sorted", framework="numpy")
def sign_sorted_step(X, y, W, b, *, lr, reduction, steps):
    return _step(_sign_sorted)(X, y, W, b, lr=lr, reduction=reduction, steps=steps)


@harness.implementation("t-overflow-nan-lanes16", framework="numpy")
def lanes16_step(X, y, W, b, *, lr, reduction, steps):
    return _step(_lanes16)(X, y, W, b, lr=lr, reduction=reduction, steps=steps)


@harness.implementation("t-overflow-nan-in-order", framework="numpy")
def in_order_step(X, y, W, b, *, lr, reduction, steps):
    return _step(_seq)(X, y, W, b, lr=lr, reduction=reduction, steps=steps)


@harness.implementation("t-overflow-nan-everywhere", framework="numpy")
def nan_step(X, y, W, b, *, lr, reduction, steps):
    nan = np.float16(np.nan)
    return [harness.StepResult(_h(np.inf), np.full_like(W, nan), np.full_like(b, nan), np.full_like(W, nan),
                               np.full_like(b, nan)) for _ in range(steps)]


def _case(name: str, R: np.ndarray) -> harness.Case:
    n = R.size
    return harness.case_from_arrays(name, np.ones((n, 1)), -R[:, None], np.zeros((1, 1)), np.zeros(1), lr=2.0**-10,
                                    reduction="sum", dtypes=("float16",))


PERIOD3 = np.tile([256.0, 256.0, -512.0], 512)  # N = 1536
ALTERNATING = np.tile([512.0, -512.0], 1024)  # N = 2048


def _grade(impl: str, case: harness.Case) -> dict[str, harness.Record]:
    recs = harness.verify([case], [impl], devices="cpu", dtypes=["float16"], isolation="inline")
    return {r.quantity: r for r in recs}


def _bounds(R: np.ndarray):
    n = R.size
    inputs = {"X": np.ones((n, 1)), "y": -R[:, None], "W": np.zeros((1, 1)), "b": np.zeros(1)}
    ex = exact_step(exact_inputs_from_floats(inputs), 2.0**-10, "sum")
    exact = {q: ex.values[q].to_hi_lo()[0] for q in ("loss", "grad_W", "grad_b", "W", "b")}
    return step_bounds(inputs, ex.residual.to_float64(), exact, lr=2.0**-10, reduction="sum", fmt=FLOAT16)


def test_the_emulated_steps_reduce_as_described():
    terms = _h(2 * PERIOD3)
    assert math.isnan(_sign_sorted(terms)) and _seq(terms) == 0 and _lanes16(terms) == 0
    alt = _h(2 * ALTERNATING)
    assert math.isnan(_lanes16(alt)) and math.isnan(_sign_sorted(alt)) and _seq(alt) == 0


def _period_three_sums(n: int, a: float) -> tuple[float, float]:
    """The largest positive and negative typical partial sums of float16 residuals ``(a, a, -2a)`` repeated over
    ``n`` rows (X = 1), by hand: each term ``|R^| <= (1 + u)**3 |R| + Ua`` (the residual's D + 2 = 3 roundings;
    ``Ua = 3 eta``, eta = 2**-14, the underflows of its 2 D + 1 flushed operations: ``ResidualBound.U``), times the
    scale 2 (1 + u)**2, the partial sums times the typical growth ``1 + 6 sqrt(n + 3) u``; every period sums to
    ``2 (1 + u)**2 Ua > 0``, so the largest sum is ``n / 3 - 1`` periods and two terms ``a``, the most negative one
    term ``-2a``."""
    Ua = 3 * 2.0**-14
    sc, G = 2 * (1 + U) ** 2, 1 + 6 * math.sqrt(n + 3) * U
    return (G * sc * (2 * ((1 + U) ** 3 * a + Ua) + (n // 3 - 1) * Ua),
            G * sc * ((1 + U) ** 3 * 2 * a + Ua))


def test_period_three_masks_and_partial_sums_by_hand():
    sb = _bounds(PERIOD3)
    for q in ("grad_W", "grad_b", "W", "b"):
        assert np.all(sb.nan_allowed[q]) and not np.any(sb.nan_typical[q]), q
    # the terms' magnitudes: |R^| <= (1 + u)**3 |R| + Ua (the residual's D + 2 = 3 roundings; Ua = 3 eta, eta = 2**-14,
    # the underflows of its 2 D + 1 flushed operations: ResidualBound.U), times the scale 2 (1 + u)**2, and the partial
    # sums times the typical growth 1 + min(LAMBDA sqrt(N + 3) u, gamma_{N + 3}) = 1 + 6 sqrt(1539) / 2048 = 1.1149
    # (gamma_1539 = 3.02; the rigorous (1 + u)**1539 is 2.12). Every period (a, a, -2a) then sums to
    # 2 (1 + u)**2 Ua > 0: the largest sum is 511 periods and two terms a, the most negative one term -2a
    want_A, want_B = _period_three_sums(1536, 256.0)
    A, B = (float(np.asarray(v)[0]) for v in sb.typical_partial_sums["grad_b"])
    assert A == pytest.approx(want_A, rel=1e-8) and B == pytest.approx(want_B, rel=1e-8)
    assert np.asarray(sb.typical_partial_sums["grad_W"][0]).tolist() == [[A]]  # X = 1: the same terms
    assert max(want_A, want_B) < BIG / 50  # 1143.6 and 1143.5 against 65504


def test_alternating_masks_allow_nan_in_sixteen_lanes():
    sb = _bounds(ALTERNATING)
    for q in ("grad_W", "grad_b", "W", "b"):
        assert np.all(sb.nan_allowed[q]) and np.all(sb.nan_typical[q]), q
    A, B = (float(np.asarray(v)[0]) for v in sb.typical_partial_sums["grad_b"])
    assert A > 1024 * 1024 and B > 1024 * 1024  # the classes mod 2: 1024 terms of +-1024


@pytest.mark.parametrize("impl", ["t-overflow-nan-sign-sorted", "t-overflow-nan-everywhere"])
def test_period_three_nan_is_suspect_and_fails_strict(impl):
    case = _case("period3", PERIOD3)
    recs = _grade(impl, case)
    assert recs["loss"].verdict == "overflow"  # R**2 = 65536 > 65504: the exact loss is beyond the range
    for q in ("grad_W", "grad_b", "W", "b"):
        rec = recs[q]
        assert rec.verdict == "suspect" and rec.computed == "nan", (q, rec.verdict)
        assert rec.abs_error_at_worst is None and rec.ulp_error_at_worst is None
        m = re.search(r"largest partial sums are \+([0-9.e+]+) and -([0-9.e+]+)", rec.message)
        assert m is not None and "only an order summing the terms by sign gives NaN" in rec.message
        assert 1024 < float(m.group(1)) < 1024 * 1.2 and 1024 < float(m.group(2)) < 1024 * 1.2
        check_record(json.loads(encode_line(dataclasses.asdict(rec))))  # the record reads back: no contradiction
    assert not failures(list(recs.values())) and len(failures(list(recs.values()), strict=True)) == 4
    step = sign_sorted_step if impl.endswith("sorted") else nan_step
    harness.assert_agrees(step, [case], dtypes=["float16"])
    with pytest.raises(AssertionError):
        harness.assert_agrees(step, [case], dtypes=["float16"], strict=True)


def test_period_three_in_the_datas_order_is_finite_and_agrees():
    recs = _grade("t-overflow-nan-in-order", _case("period3", PERIOD3))
    assert recs["loss"].verdict == "overflow"
    assert all(recs[q].verdict == "agree" for q in ("grad_W", "grad_b", "W", "b"))


@pytest.mark.parametrize("impl", ["t-overflow-nan-lanes16", "t-overflow-nan-sign-sorted", "t-overflow-nan-everywhere"])
def test_alternating_nan_of_sixteen_lanes_is_overflow(impl):
    case = _case("alternating", ALTERNATING)
    recs = _grade(impl, case)
    assert {q: r.verdict for q, r in recs.items()} == {q: "overflow" for q in ("loss", "grad_W", "grad_b", "W", "b")}
    step = {"lanes16": lanes16_step, "sorted": sign_sorted_step, "everywhere": nan_step}[impl.rsplit("-", 1)[1]]
    harness.assert_agrees(step, [case], dtypes=["float16"], strict=True)


def test_sign_sorted_step_never_disagrees_where_one_sign_overflows():
    # R = (256, 256, -4) repeated (N = 1536): the terms 2 R = (512, 512, -8) sum to +inf sorted by sign (1024 x 512 =
    # 524288; the negative ones to -4096, finite) and in the data's order alike (the exact sum, 520192, is beyond
    # float16's range): +inf is overflow, never disagree; the loss (R**2 = 65536) overflows too
    R = np.tile([256.0, 256.0, -4.0], 512)
    recs = _grade("t-overflow-nan-sign-sorted", _case("one-sign", R))
    assert recs["grad_b"].computed == "inf"
    assert all(recs[q].verdict in ("overflow", "agree") for q in recs), {q: r.verdict for q, r in recs.items()}
    assert recs["grad_b"].verdict == "overflow"


# ---- the typical growth at large N (helper-105): probabilistic, not (1 + u)**(N + 3) ---------------------------------


def _bounds_fmt(R: np.ndarray, fmt):
    n = R.size
    inputs = {"X": np.ones((n, 1)), "y": -R[:, None], "W": np.zeros((1, 1)), "b": np.zeros(1)}
    ex = exact_step(exact_inputs_from_floats(inputs), 2.0**-10, "sum")
    exact = {q: ex.values[q].to_hi_lo()[0] for q in ("loss", "grad_W", "grad_b", "W", "b")}
    return step_bounds(inputs, ex.residual.to_float64(), exact, lr=2.0**-10, reduction="sum", fmt=fmt)


LONG_PERIOD3 = np.tile([64.0, 64.0, -128.0], 4096)  # N = 12288


def test_long_period_three_is_not_grown_rigorously():
    # terms 2 R = (128, 128, -256): every modelled partial sum is exact and within +-256; sorted by sign they reach
    # +-256 * 4096 = 1048576. The rigorous growth (1 + u)**12291 = 403 made the typical sums 1.4e5 (both ways past
    # 65504: NaN everywhere was overflow); the typical growth is 1 + 6 sqrt(12291) / 2048 = 1.3248 (gamma_12291 is
    # infinite). As in test_period_three_masks_and_partial_sums_by_hand: the largest sum is 4095 periods (each
    # 2 (1 + u)**2 Ua) and two terms a = 64, the most negative one term -2a: about 343.6 and 340.
    sb = _bounds_fmt(LONG_PERIOD3, FLOAT16)
    for q in ("grad_W", "grad_b", "W", "b"):
        assert np.all(sb.nan_allowed[q]) and not np.any(sb.nan_typical[q]), q
    want_A, want_B = _period_three_sums(12288, 64.0)
    A, B = (float(np.asarray(v)[0]) for v in sb.typical_partial_sums["grad_b"])
    assert A == pytest.approx(want_A, rel=1e-8) and B == pytest.approx(want_B, rel=1e-8)
    assert 339 < B < A < 345


def test_long_period_three_nan_everywhere_is_suspect():
    recs = _grade("t-overflow-nan-everywhere", _case("period3-long", LONG_PERIOD3))
    for q in ("grad_W", "grad_b", "W", "b"):
        assert recs[q].verdict == "suspect" and recs[q].computed == "nan", (q, recs[q].verdict)
    assert len(failures(list(recs.values()), strict=True)) == 4


def test_bfloat16_period_three_is_not_grown_rigorously():
    # bfloat16 (u = 2**-8), N = 3072, R = (2**116, 2**116, -2**117) repeated: terms (2**117, 2**117, -2**118), every
    # modelled partial sum within +-2**118 (3.3e35); sorted by sign +-2**128 past the range (3.39e38). The rigorous
    # growth (1 + u)**3075 is 1.6e5 (7.8e40: NaN was overflow); the typical one is 1 + 6 sqrt(3075) / 256 = 2.30
    # (gamma_3075 infinite): about 2.30 * 2**119 = 1.5e36 at most
    from harness.floats import BFLOAT16

    sb = _bounds_fmt(np.tile([2.0**116, 2.0**116, -(2.0**117)], 1024), BFLOAT16)
    for q in ("grad_W", "grad_b", "W", "b"):
        assert np.all(sb.nan_allowed[q]) and not np.any(sb.nan_typical[q]), q
    A, B = (float(np.asarray(v)[0]) for v in sb.typical_partial_sums["grad_b"])
    G = 1 + 6 * math.sqrt(3075) / 256
    assert 2.0**119 < A < G * 2.0**119 * 1.01 and 2.0**118 < B < G * 2.0**119 * 1.01
