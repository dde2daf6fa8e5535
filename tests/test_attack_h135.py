"""helper-135's review of the seed's uniform excess (:func:`harness.bounds._seed_excess_uniform`, 6bafe86).

What held: the fast path's rigorous bounds equal the per-element path's bit for bit and its underflow parts U are
never below them (Hypothesis, every dtype, flush-to-zero on and off, both reductions, N and K 1 to 8; the per-element
excess at most half the uniform one); the grouped counts, evaluated at the widened cuts, are never below the
element-wise rule at lows exactly at, just below and just above the cuts and the raw thresholds; the cached plan is
keyed by the whole regime and its tables are read-only. What did not: the cache of :func:`harness.bounds._seed_plan`
made helper-134's longdouble-as-float64 test compare the wide counts with themselves (now cleared there too).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, target
from hypothesis import strategies as st

import harness.bounds as hb
from harness.bounds import Regime, _seed_plan, _up64, chain_underflow, residual_bound, seed_underflow
from harness.floats import FORMATS

TINY = {"float16": 2.0**-24, "bfloat16": 2.0**-133, "float32": 2.0**-149, "float64": 2.0**-1074}
MIN_NORMAL = {"float16": 2.0**-14, "bfloat16": 2.0**-126, "float32": 2.0**-126, "float64": 2.0**-1022}


def _floors(c: float, ftz: bool) -> tuple[float, float]:
    f = 1.0 if ftz else 0.0
    return (2.0 if abs(2 * c) < 2 else 1.0 + f, 2.0 + f)


@pytest.mark.parametrize("dtype", list(TINY))
@pytest.mark.parametrize("ftz", [False, True])
def test_group_counts_at_and_near_the_cuts_are_never_below_the_element_wise_rule(dtype, ftz):
    reg = Regime(FORMATS[dtype], ftz)
    ld = np.longdouble
    over = ld(1) if ftz else ld(2.0 ** (math.log2(reg.eta) - (reg.fmt.emin - reg.fmt.precision)))
    for n in range(1, 9):
        for k in range(1, 9):
            for c in (1.0, 1 / (n * k)):
                floors = _floors(c, ftz)
                plan = _seed_plan(n, k, c, reg, floors)
                if plan is None or plan[2] is None:
                    continue
                factors, threshold, (cuts, tables) = plan
                assert not cuts.flags.writeable and not any(t.flags.writeable for t in tables)
                consts = [abs(float(x)) for x in factors]
                raw = [reg.fmt.min_normal * 2.0 ** t.bit_count() / math.prod(consts[j] for j in range(len(consts)) if t >> j & 1)
                       for t in range(1, 1 << len(consts))]
                lows = [0.0, 5e-324, threshold, 2 * threshold]
                for x in [*cuts.tolist(), *raw]:
                    lows += [x * (1 + e) for e in (-2.0**-30, -2.0**-40, -2.0**-45, -2.0**-52, 0.0, 2.0**-52, 2.0**-41)]
                    lows += [np.nextafter(x, 0), np.nextafter(x, np.inf)]
                low = np.array(sorted(set(lows)))
                count = chain_underflow(factors, np.ones(low.shape, dtype=ld), reg, [low.astype(ld)])
                group = np.searchsorted(cuts, low, side="right")
                for floor, table in zip(floors, tables, strict=True):
                    assert (table[:-1] <= table[0]).all()  # seed_excess_most's first group: the largest
                    ceiling = ld(floor) * ld(reg.eta) * ld(reg.growth(len(factors))) * over
                    need = _up64(np.maximum(count - ceiling, ld(0)) / (ld(reg.eta) * over))
                    assert (table[group] >= need).all(), (n, k, c, low[table[group] < need])


@settings(max_examples=400, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_the_uniform_excess_changes_no_rigorous_bit_and_never_lowers_u(data):
    dtype = data.draw(st.sampled_from(list(TINY)))
    ftz = data.draw(st.booleans())
    reg = Regime(FORMATS[dtype], ftz)
    n, k, d = data.draw(st.integers(1, 8)), data.draw(st.integers(1, 8)), data.draw(st.integers(1, 3))
    c = data.draw(st.sampled_from([1.0, 1 / (n * k)]))
    js = np.array(data.draw(st.lists(st.integers(-3000, 3000), min_size=n * k, max_size=n * k)), float).reshape(n, k)
    normal = np.array(data.draw(st.lists(st.booleans(), min_size=n * k, max_size=n * k))).reshape(n, k)
    R0 = np.where(normal, js * MIN_NORMAL[dtype] * 3, js * TINY[dtype])
    ex = np.array(data.draw(st.lists(st.integers(-60, 600 if dtype == "float64" else 100), min_size=n * d,
                                     max_size=n * d)), float).reshape(n, d)
    X = np.exp2(ex) * np.array(data.draw(st.lists(st.sampled_from([1.0, -1.0, 0.75, 0.0]), min_size=n * d,
                                                  max_size=n * d))).reshape(n, d)
    W = np.array(data.draw(st.lists(st.sampled_from([0.0, 1.0, -0.5, 2.0**-20]), min_size=d * k,
                                    max_size=d * k))).reshape(d, k)
    b = np.zeros(k)
    y = X @ W + b - R0
    R = X @ W + b - y
    rb = residual_bound(X, W, b, y, reg, 0.0)
    fast = hb.gradient_bounds(X, R, rb, c, reg, 0.0)
    real = hb._seed_excess_uniform
    hb._seed_excess_uniform = lambda *a: None
    try:
        slow = hb.gradient_bounds(X, R, rb, c, reg, 0.0)
    finally:
        hb._seed_excess_uniform = real
    np.testing.assert_array_equal(fast.gW, slow.gW)
    np.testing.assert_array_equal(fast.gb, slow.gb)
    with np.errstate(invalid="ignore"):
        gap = max(float(np.nanmax(slow.U_gW - fast.U_gW, initial=-np.inf)), float(np.nanmax(slow.U_gb - fast.U_gb, initial=-np.inf)))
    target(gap)
    assert (fast.U_gW >= slow.U_gW).all() and (fast.U_gb >= slow.U_gb).all()


def test_the_per_element_excess_is_at_most_half_the_uniform_one():
    rng = np.random.default_rng(135)
    for dtype in TINY:
        for ftz in (False, True):
            reg = Regime(FORMATS[dtype], ftz)
            for n, k in ((1, 2), (3, 2), (2, 3), (8, 8), (5, 1)):
                c = 1 / (n * k)
                floors = _floors(c, ftz)
                most = hb.seed_excess_most(n, k, c, reg, floors)
                if not most or not any(most):
                    continue
                aR = TINY[dtype] * rng.integers(0, 3000, (n, k)).astype(float)
                res = seed_underflow(aR, aR * rng.choice([0.0, 0.5, 2.0], (n, k)), c, reg, floors)
                assert res is not None
                for units, m in zip(res[1], most, strict=True):
                    assert (units <= m).all()
