"""Hostile property tests of the Adam/AdamW oracle's ball arithmetic (harness.optim.oracle, python-flint ``arb``).

Every ball must contain the exact value of the rule. The exact value is decided here independently, in
rationals only: the moments are rational; the update ``w' - s m / (sqrt(q) + eps)`` is compared with each end
of the ball by squaring (the sign of ``A - C sqrt(q)`` for rationals ``A, C, q``), never by a floating or
interval evaluation. Inputs: tiny, huge and subnormal float64 values, eps 0 or near 0, beta2 near 1, steps up
to 3000, non-dyadic rationals (the exact trajectory's inputs); ``target`` pushes towards the widest balls
relative to their value (cancellation in ``w' - step``).
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
from flint import arb, ctx, fmpq, fmpz
from hypothesis import HealthCheck, given, settings, target
from hypothesis import strategies as st

from harness.floats import get_format, round_fraction
from harness.optim.oracle import PRECISION, _Intervals, _update_fractions, adam_enclosures, update_truth
from harness.optim.rules import exact_hyper_parameters
from tests.conftest import optimizer_of

SPECIAL = [0.0, 5e-324, 1.5e-323, 1e-320, 2.2250738585072014e-308, 2.225073858507201e-308, 1e-200, 2.0**-120, 1e-30,
           0.1, 1.0, 1.5, 3.0, 1e30, 1e200, 8.98846567431158e307, 1.7976931348623157e308]
FORMATS = ["float64", "float32", "float16", "bfloat16"]


def floats(nonneg: bool = False) -> st.SearchStrategy[float]:
    anywhere = st.builds(math.ldexp, st.floats(0.5, 1.0, exclude_max=True), st.integers(-1075, 1023))
    x = st.one_of(st.sampled_from(SPECIAL), anywhere, st.floats(allow_nan=False, allow_infinity=False))
    return x.map(abs) if nonneg else st.tuples(x, st.booleans()).map(lambda p: -p[0] if p[1] else p[0])


BETAS = st.one_of(st.sampled_from([0.0, 5e-324, 0.5, 0.9, 0.99, 0.999, 1 - 2.0**-30, 1 - 2.0**-53]),
                  st.floats(0.0, 1.0, exclude_max=True))
EPS = st.one_of(st.sampled_from([0.0, 5e-324, 1e-300, 1e-30, 1e-8, 1e-3, 1.0, 1e300]), st.floats(0.0, 1e10))
WD = st.one_of(st.sampled_from([0.0, 5e-324, 1e-300, 0.01, 0.5, 1e10]), st.floats(0.0, 1e3))
LR = st.one_of(st.sampled_from([Fraction(1, 10), Fraction(1, 3), Fraction(5e-324), Fraction(1e-3), Fraction(1e300)]),
               st.floats(1e-300, 1e10).map(Fraction))
STEPS = st.one_of(st.sampled_from([1, 2, 3, 10, 1000, 2999]), st.integers(1, 50))


def lg(x: Fraction) -> int:
    """About ``log2(x)`` of a rational ``x > 0`` (within 1; ``math.log2`` overflows beyond float64's range)."""
    return x.numerator.bit_length() - x.denominator.bit_length()


def sign_a_minus_c_sqrt(a: Fraction, c: Fraction, q: Fraction) -> int:
    """The sign of ``a - c sqrt(q)`` (``q >= 0``), exactly."""
    def sgn(x: Fraction) -> int:
        return (x > 0) - (x < 0)
    if q == 0 or c == 0:
        return sgn(a)
    sa, sc = sgn(a), sgn(c)
    if sa == 0:
        return -sc
    if sa != sc:
        return sa
    # a^2 - c^2 q over the positive denominator ad^2 cd^2 qd, in integers (Fraction's gcds on these
    # numbers of thousands of digits took most of this test's time), multiplied as FLINT's fmpz: a's numerator has
    # up to millions of bits (steps up to 2999), whose squares CPython's Karatsuba took 65% of this test's time in
    # (8x less as fmpz, GMP's FFT multiplication; the same exact integers)
    an, ad, cn, cd, qn, qd = (fmpz(v) for v in (a.numerator, a.denominator, c.numerator, c.denominator, q.numerator,
                                                 q.denominator))
    lhs = an**2 * cd**2 * qd
    rhs = cn**2 * qn * ad**2
    return sa * ((lhs > rhs) - (lhs < rhs))


def exact_rule(name: str, amsgrad: bool, maximize: bool, b1: Fraction, b2: Fraction, eps: Fraction, wd: Fraction,
               lr: Fraction, t: int, w: Fraction, g: Fraction, m0: Fraction, v0: Fraction, vm0: Fraction) -> dict[str, Any]:
    """torch.optim's Adam/AdamW step in rationals, written here again (the square root left symbolic)."""
    d = -g if maximize else g
    wp = w
    if wd != 0:
        if name == "adamw":
            wp = w * (1 - lr * wd)
        else:
            d = d + wd * w
    m = b1 * m0 + (1 - b1) * d
    v = b2 * v0 + (1 - b2) * d * d
    big_v = max(vm0, v) if amsgrad else v
    return {"wp": wp, "s": lr / (1 - b1**t), "m": m, "v": v, "V": big_v, "q": big_v / (1 - b2**t), "eps": eps}


def check_w(ends: tuple[Fraction, Fraction] | None, ex: dict[str, Any]) -> None:
    """The ball ``[lo, hi]`` contains ``wp - s m / (sqrt(q) + eps)``; not finite only where ``sqrt(q) + eps = 0``."""
    undefined = ex["q"] == 0 and ex["eps"] == 0
    if ends is None:
        assert undefined, "a ball that is not finite where the exact value exists"
        return
    assert not undefined, "a finite ball for an undefined (division by 0) update"
    lo, hi = ends
    sm, eps = ex["s"] * ex["m"], ex["eps"]

    def step_vs(r: Fraction) -> int:  # sign of step - r, step = s m / u, u = sqrt(q) + eps > 0: of s m - r u
        return sign_a_minus_c_sqrt(sm - r * eps, r, ex["q"])
    # lo <= wp - step  <=>  step <= wp - lo;   wp - step <= hi  <=>  step >= wp - hi
    assert step_vs(ex["wp"] - lo) <= 0, "the exact update lies below the ball"
    assert step_vs(ex["wp"] - hi) >= 0, "the exact update lies above the ball"


def test_sign_a_minus_c_sqrt_exactly():
    # sqrt(9) = 3, sqrt(8) < 3 < sqrt(10); a rational q = 9/4 (sqrt 3/2); 0 and opposite signs decided by sign alone
    F = Fraction
    assert [sign_a_minus_c_sqrt(F(3), F(1), F(q)) for q in (9, 8, 10)] == [0, 1, -1]
    assert [sign_a_minus_c_sqrt(F(-3), F(-1), F(q)) for q in (9, 8, 10)] == [0, -1, 1]
    assert [sign_a_minus_c_sqrt(F(3, 2), F(1), F(9, 4) + d) for d in (0, F(-1, 10**40), F(1, 10**40))] == [0, 1, -1]
    assert [sign_a_minus_c_sqrt(F(a), F(c), F(q)) for a, c, q in ((0, 2, 1), (0, -2, 1), (1, -1, 4), (-1, 1, 4),
                                                                   (5, 0, 4), (-5, 3, 0))] == [-1, 1, 1, -1, 1, -1]
    # numbers of a million bits: (2**k + 1)**2 against (2**k + 1)**2 +- 1
    k = 10**6
    a = F(2**k + 1)
    assert [sign_a_minus_c_sqrt(a, F(1), a * a + d) for d in (0, -1, 1)] == [0, 1, -1]


@st.composite
def problems(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(1, 3))
    rational = draw(st.booleans())

    def arr(shape: tuple[int, ...], nonneg: bool = False) -> Any:
        xs = [draw(floats(nonneg)) for _ in range(int(np.prod(shape)))]
        if not rational:
            return np.array(xs, dtype=np.float64).reshape(shape)
        out = np.empty(len(xs), dtype=object)
        out[:] = [Fraction(x) * Fraction(draw(st.sampled_from([1, 2, 3, 7])), draw(st.sampled_from([1, 3, 10, 2**60 + 1])))
                  for x in xs]
        return out.reshape(shape)
    shapes = {"W": (1, n), "b": (n,)}
    return {
        "name": draw(st.sampled_from(["adam", "adamw"])), "amsgrad": draw(st.booleans()), "maximize": draw(st.booleans()),
        "betas": (draw(BETAS), draw(BETAS)), "eps": draw(EPS), "wd": draw(WD), "lr": draw(LR), "t": draw(STEPS),
        "fmt": draw(st.sampled_from(FORMATS)), "rational": rational,
        "params": {p: arr(s) for p, s in shapes.items()}, "grads": {p: arr(s) for p, s in shapes.items()},
        "state": {p: {"exp_avg": arr(s), "exp_avg_sq": arr(s, True), "max_exp_avg_sq": arr(s, True)} for p, s in shapes.items()},
    }


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(problems())
def test_adam_balls_contain_the_exact_update(pb: dict[str, Any]) -> None:
    opt = optimizer_of({"name": pb["name"], "betas": list(pb["betas"]), "eps": pb["eps"], "weight_decay": pb["wd"],
                        "amsgrad": pb["amsgrad"], "maximize": pb["maximize"]})
    fmt, t, lr = get_format(pb["fmt"]), pb["t"], pb["lr"]
    hp = exact_hyper_parameters(opt, lr, t)
    ctx.prec = 53
    balls = adam_enclosures(opt, pb["params"], pb["grads"], pb["state"], t, hp)
    assert ctx.prec == 53, "python-flint's working precision not restored"
    if pb["rational"]:
        truth = _update_fractions(opt, pb["params"], pb["grads"], pb["state"], t, lr, fmt)
    else:
        truth = update_truth(opt, pb["params"], pb["grads"], pb["state"], t, lr, fmt)
    assert ctx.prec == 53
    b1, b2 = (Fraction(float(b)) for b in pb["betas"])
    widest = -math.inf
    for p, w in pb["params"].items():
        for idx in np.ndindex(w.shape):
            def at(a: Any) -> Fraction:
                return Fraction(a[idx])  # noqa: B023 (used at once)
            st_ = pb["state"][p]
            ex = exact_rule(opt.name, pb["amsgrad"], pb["maximize"], b1, b2, Fraction(pb["eps"]), Fraction(pb["wd"]), lr, t,
                            at(w), at(pb["grads"][p]), at(st_["exp_avg"]), at(st_["exp_avg_sq"]), at(st_["max_exp_avg_sq"]))
            keys = {"exp_avg": "m", "exp_avg_sq": "v", "max_exp_avg_sq": "V"}
            for k in opt.state_keys():
                ends = _Intervals.ends(balls[f"{k}_{p}"][idx])
                assert ends is not None and ends[0] <= ex[keys[k]] <= ends[1], (k, p, idx)
                assert truth.values[f"{k}_{p}"].fraction_at(idx) == (ends[0] + ends[1]) / 2
            ends = _Intervals.ends(balls[p][idx])
            check_w(ends, ex)
            got = truth.values[p].fraction_at(idx)
            flagged = idx in truth.straddles.get(p, [])
            if ends is None:
                assert got == 0 and (flagged or pb["rational"])
                continue
            lo, hi = ends
            assert got == (lo + hi) / 2
            if not pb["rational"]:  # undecided exactly where the ends round apart (round_fraction: harness.floats)
                assert flagged == (round_fraction(lo, fmt) != round_fraction(hi, fmt)), (p, idx, lo, hi)
            if hi != lo and got != 0:
                widest = max(widest, lg(hi - lo) - lg(abs(got)))
    if widest > -math.inf:
        target(widest, label="log2 of the W ball's relative width")


@given(st.lists(floats(nonneg=True), min_size=2, max_size=2), st.integers(0, 12), st.integers(0, 3), st.booleans())
@settings(max_examples=150, deadline=None)
def test_maximum_of_overlapping_balls_encloses_the_max(xs: list[float], shift: int, rad_exp: int, near: bool) -> None:
    """amsgrad's maximum: of balls built to overlap (radius about 2**-250 relative, or 0), a ball that contains
    ``[max(lo), max(hi)]``: the max of every pair of points in them."""
    ia = _Intervals()
    x0 = fmpq(*xs[0].as_integer_ratio())
    x1 = x0 * (1 + fmpq(1, 2 ** (245 + shift))) if near else fmpq(*xs[1].as_integer_ratio())
    old = ctx.prec
    try:
        ctx.prec = PRECISION
        a = arb(x0) + arb(0, arb(x0 / 2 ** (250 + rad_exp)))
        b = arb(x1)
        out = ia.maximum(np.array([a, b], dtype=object), np.array([b, a], dtype=object))
    finally:
        ctx.prec = old
    ends = [_Intervals.ends(x) for x in (a, b, *out)]
    assert all(e is not None for e in ends)
    (alo, ahi), (blo, bhi), *got = ends  # type: ignore[misc]
    for lo, hi in got:  # type: ignore[misc]
        assert lo <= max(alo, blo) and hi >= max(ahi, bhi)


def test_precision_restored_and_negative_second_moment_refused() -> None:
    """A held exp_avg_sq below 0 (a wrong step): no square root is taken (ValueError, as mpmath's ComplexResult
    was), and python-flint's working precision is restored all the same."""
    opt = optimizer_of({"name": "adam"})
    params = {"W": np.array([[1.0]])}
    state = {"W": {"exp_avg": np.array([[0.0]]), "exp_avg_sq": np.array([[-5.0]])}}
    ctx.prec = 77
    try:
        with pytest.raises(ValueError, match="square root of a negative number"):
            update_truth(opt, params, {"W": np.array([[1.0]])}, state, 2, Fraction(1, 10), get_format("float32"))
        assert ctx.prec == 77
    finally:
        ctx.prec = 53


def test_division_by_zero_is_undecided_not_a_value() -> None:
    """eps = 0 where the second moment is 0 (a zero gradient at step 1): 0 / 0, no exact value; the oracle grades
    against 0 (as before) but reports the element undecided instead of passing a made-up exact value silently."""
    opt = optimizer_of({"name": "adam", "eps": 0})
    truth = update_truth(opt, {"W": np.array([[1.0, 2.0]])}, {"W": np.array([[0.0, 1.0]])}, {}, 1, Fraction(1, 10),
                         get_format("float32"))
    assert truth.straddles == {"W": [(0, 0)]}
    assert truth.values["W"].fraction_at((0, 0)) == 0


@pytest.mark.parametrize("fmt_name", [*FORMATS, "tf32"])
def test_a_tie_is_undecided_in_every_format(fmt_name: str) -> None:
    """Adam, eps = 0, step 1: ``w - lr sign(g)`` exactly, through sqrt(v) / sqrt(1 - beta2) (inexact for betas
    (0.9, 0.999), exact for (0.5, 0.75)). With ``w = 1``, ``lr = 2**-(p + 1)`` the value is the midpoint of two neighbours of the
    format: undecided where the ball has a width, the tie itself (not flagged) where it is exact."""
    fmt = get_format(fmt_name)
    lr = Fraction(1, 2 ** (fmt.precision + 1))
    args = ({"W": np.array([[1.0]])}, {"W": np.array([[3.0]])}, {}, 1, lr, fmt)
    inexact = update_truth(optimizer_of({"name": "adam", "eps": 0}), *args)
    assert inexact.straddles == {"W": [(0, 0)]}
    assert abs(inexact.values["W"].fraction_at((0, 0)) - (1 - lr)) < Fraction(1, 2**250)
    exact = update_truth(optimizer_of({"name": "adam", "eps": 0, "betas": [0.5, 0.75]}), *args)
    assert exact.straddles == {} and exact.values["W"].fraction_at((0, 0)) == 1 - lr
