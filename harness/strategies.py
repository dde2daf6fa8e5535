"""Hypothesis strategies for cases, and case-file snippets for failing examples.

Hypothesis is an optional (test) dependency: this is the only module of the
harness that imports it, and nothing in the core imports this module.

``cases()`` draws a :class:`harness.cases.Case`: shapes ``N, D, K`` from 1 up
to the given maxima, values from a chosen regime (the regimes of
:mod:`harness.generate`, drawn element by element so that Hypothesis can
shrink them), a learning rate, a reduction and a number of steps. Shrinking
goes towards N = D = K = 1, one step, small integers and zeros, so a failing
property ends on a minimal case. ``case_to_toml`` turns a case into a
``[[case]]`` table that can be pasted into a case file (the float64 values are
written with ``repr``, which round-trips exactly); ``note_case`` prints it in
Hypothesis's report of the falsifying example.

Example::

    from hypothesis import given
    from harness.strategies import cases, note_case

    @given(cases(max_n=8))
    def test_my_step_agrees(case):
        note_case(case)
        harness.assert_agrees("my-step", [case], dtypes=["float32"])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import numpy as np
from hypothesis import note
from hypothesis import strategies as st

from .cases import Case, case_from_arrays
from .floats import DTYPES, get_format
from .generate import REGIMES

__all__ = ["case_to_toml", "cases", "note_case", "values"]


def values(regime: str, max_exponent: int = 20) -> st.SearchStrategy[float]:
    """Scalar float64 values of one regime (see :mod:`harness.generate`).

    ``near-zero-residual`` is a property of the whole case, not of one value:
    :func:`cases` builds ``y`` from ``X W + b`` for it; here it gives the
    values of X, W and b (float16-exact normals). ``max_exponent``: the largest
    power of two of the ``mixed`` regime's scales (``2**-20`` up to it).
    """
    if regime == "normal" or regime == "near-zero-residual":
        return st.floats(-4.0, 4.0, allow_nan=False, allow_infinity=False).map(lambda v: float(np.float16(v)))
    if regime in ("huge", "tiny"):
        e = 60 if regime == "huge" else -60
        return st.floats(-4.0, 4.0, allow_nan=False, allow_infinity=False).map(lambda v: math.ldexp(v, e))
    if regime == "mixed":
        return st.tuples(st.floats(-2.0, 2.0, allow_nan=False), st.integers(-20, max(-20, min(20, max_exponent)))).map(
            lambda t: math.ldexp(t[0], t[1]))
    if regime == "zeros":
        return st.just(0.0)
    if regime == "integers":
        return st.integers(-8, 8).map(float)
    if regime == "subnormal":
        return st.integers(-(2**14), 2**14).map(lambda m: math.ldexp(m, -1074))
    raise ValueError(f"unknown regime {regime!r}; known: {', '.join(REGIMES)}")


def _matrix(elements: st.SearchStrategy[float], rows: int, cols: int) -> st.SearchStrategy[np.ndarray]:
    return st.lists(st.lists(elements, min_size=cols, max_size=cols), min_size=rows, max_size=rows).map(
        lambda rs: np.array(rs, dtype=np.float64).reshape(rows, cols)
    )


@st.composite
def cases(
    draw: Any,
    *,
    max_n: int = 8,
    max_d: int = 4,
    max_k: int = 3,
    regimes: Sequence[str] = ("normal", "integers", "mixed", "near-zero-residual", "zeros"),
    reductions: Sequence[str] = ("sum", "mean"),
    max_steps: int = 2,
    lrs: Sequence[str] = ("0.01", "0.1", "0.001"),
    dtypes: Sequence[str] = DTYPES,
) -> Case:
    """A strategy for :class:`harness.cases.Case`.

    Args:
        max_n, max_d, max_k: largest N (rows), D (features), K (outputs); each >= 1.
        regimes: value regimes to draw from (one per case; X and the
            parameters use the regime, y too except for ``near-zero-residual``).
        reductions: ``"sum"`` and/or ``"mean"``.
        max_steps: largest number of SGD steps (>= 1).
        lrs: learning rates as decimal strings (exact as written).
        dtypes: the case's default dtypes; the ``mixed`` regime's scales stop below the narrowest one's range (up to
            ``2**14`` with float16), so that no drawn input overflows it (``huge`` values, ``2**62``, overflow float16:
            ask for that regime with dtypes that hold it).

    Returns:
        a strategy whose examples are cases with id ``hyp-{regime}-n{N}-d{D}-k{K}-{reduction}-s{steps}``.

    Raises:
        ValueError: for a maximum below 1 or an unknown regime.
    """
    if min(max_n, max_d, max_k, max_steps) < 1:
        raise ValueError("max_n, max_d, max_k and max_steps must be at least 1")
    for r in regimes:
        if r not in REGIMES:
            raise ValueError(f"unknown regime {r!r}; known: {', '.join(REGIMES)}")
    # inputs that overflow one of the case's dtypes grade nothing there, and a correct step's run failed "nothing
    # graded": the mixed regime's scales stop below the narrowest dtype's range (helper-86: mixed values up to 2**21
    # overflowed float16, a default dtype; the huge regime, 2**62, is asked for by name, and overflows 16-bit dtypes)
    top = min(get_format(dt).max_finite for dt in dtypes) if dtypes else math.inf
    n = draw(st.integers(1, max_n))
    d = draw(st.integers(1, max_d))
    k = draw(st.integers(1, max_k))
    regime = draw(st.sampled_from(list(regimes)))
    reduction = draw(st.sampled_from(list(reductions)))
    steps = draw(st.integers(1, max_steps))
    lr = Fraction(draw(st.sampled_from(list(lrs))))
    el = values(regime, max_exponent=math.frexp(top)[1] - 3 if math.isfinite(top) else 20)
    X = draw(_matrix(el, n, d))
    W = draw(_matrix(el, d, k))
    b = draw(_matrix(el, 1, k)).reshape(k)
    if regime == "near-zero-residual":
        noise = draw(_matrix(st.integers(-4, 4).map(float), n, k))
        y = X @ W + b + noise * 2.0**-20
    else:
        y = draw(_matrix(el, n, k))
    cid = f"hyp-{regime}-n{n}-d{d}-k{k}-{reduction}-s{steps}"
    return case_from_arrays(cid, X, y, W, b, lr=lr, steps=steps, reduction=reduction, dtypes=dtypes,
                            tags=["hypothesis", regime], source="<hypothesis>",
                            description=f"drawn by harness.strategies.cases ({regime} values)")


def _toml_number(v: Any) -> str:
    if isinstance(v, Fraction):
        if v.denominator == 1:
            return f'"{v.numerator}"'
        f = float(v)
        return f'"{f!r}"' if Fraction(f) == v else f'"{v.numerator}/{v.denominator}"'
    f = float(v)
    if math.isnan(f):
        return '"nan"'
    if math.isinf(f):
        return '"inf"' if f > 0 else '"-inf"'
    return f'"{f!r}"'


def _toml_matrix(a: np.ndarray) -> str:
    rows = ", ".join("[" + ", ".join(_toml_number(v) for v in row) + "]" for row in np.atleast_2d(a))
    return f"[{rows}]"


def case_to_toml(case: Case) -> str:
    """A ``[[case]]`` table for ``case``, ready to paste into a case file.

    Values are the case's float64 values written as decimal strings with
    ``repr`` (shortest round-trip), so the file reproduces them bit for bit;
    the learning rate is written as its decimal text when it has one.

    Raises:
        ValueError: if the learning rate has no finite decimal expansion that
            round-trips (never for the strategies' ``lrs``).
    """
    lr = case.lr
    lr_text = _decimal_text(lr)
    if lr_text is None:
        raise ValueError(f"learning rate {lr} has no exact decimal form; write it by hand")
    lines = [
        "[[case]]",
        f'id = "{case.id}"',
        f'description = "{case.description or "minimal failing case"}"',
        f"X = {_toml_matrix(case.values['X'])}",
        f"y = {_toml_matrix(case.values['y'])}",
        f"W = {_toml_matrix(case.values['W'])}",
        "b = [" + ", ".join(_toml_number(v) for v in case.values["b"]) + "]",
        f'lr = "{lr_text}"',
        f"steps = {case.steps}",
        f'reduction = "{case.reduction}"',
        "dtypes = [" + ", ".join(f'"{d}"' for d in case.dtypes) + "]",
        "tags = [" + ", ".join(f'"{t}"' for t in case.tags) + "]",
    ]
    return "\n".join(lines) + "\n"


def _decimal_text(value: Fraction) -> str | None:
    """Exact decimal text of a rational whose denominator is 2^a 5^b, else None."""
    den = value.denominator
    twos = fives = 0
    while den % 2 == 0:
        den //= 2
        twos += 1
    while den % 5 == 0:
        den //= 5
        fives += 1
    if den != 1:
        return None
    digits = max(twos, fives)
    scaled = value * 10**digits
    assert scaled.denominator == 1
    sign = "-" if scaled < 0 else ""
    s = str(abs(scaled.numerator)).rjust(digits + 1, "0")
    return sign + (s[:-digits] + "." + s[-digits:] if digits else s)


def note_case(case: Case) -> None:
    """Record ``case`` as a case-file snippet in Hypothesis's falsifying-example report."""
    note("Minimal case as a case-file snippet (paste into cases/*.toml):\n" + case_to_toml(case))
