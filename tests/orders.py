"""Reference evaluations of one training step in a given dtype and summation order.

Every operation is computed exactly (Fractions) and rounded once to the format
with :func:`harness.floats.round_fraction`: no double rounding. Orders:

- ``sequential``: left to right; ``reversed``: right to left;
- ``pairwise``: recursive halving, as NumPy's reductions do;
- ``random``: a random permutation, then sequential;
- ``wide``: accumulate in float64, round once at the end (float64-then-rounded);
- ``fma``: sequential with fused multiply-add (the product is not rounded
  before it is added; emulated exactly with Fractions).
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from harness.floats import FloatFormat, round_fraction, round_to_format

ORDERS = ("sequential", "reversed", "pairwise", "random", "wide", "fma")


def _rf(x: Fraction, fmt: FloatFormat) -> float:
    return float(round_fraction(x, fmt))


def _add(a: float, b: float, fmt: FloatFormat) -> float:
    if not (np.isfinite(a) and np.isfinite(b)):
        return a + b
    return _rf(Fraction(a) + Fraction(b), fmt)


def _mul(a: float, b: float, fmt: FloatFormat) -> float:
    if not (np.isfinite(a) and np.isfinite(b)):
        return a * b
    return _rf(Fraction(a) * Fraction(b), fmt)


def _r(x: float, fmt: FloatFormat) -> float:
    return float(round_to_format(np.array([x]), fmt)[0])


def _sum(terms: list[float], fmt: FloatFormat, order: str, rng: np.random.Generator) -> float:
    if order == "wide":
        if not all(np.isfinite(t) for t in terms):
            return _r(float(np.sum(terms)), fmt)
        return _rf(sum((Fraction(t) for t in terms), Fraction(0)), fmt)
    if order == "reversed":
        terms = terms[::-1]
    elif order == "random":
        terms = [terms[i] for i in rng.permutation(len(terms))]
    if order == "pairwise":
        def pw(ts: list[float]) -> float:
            if len(ts) == 1:
                return ts[0]
            h = len(ts) // 2
            return _add(pw(ts[:h]), pw(ts[h:]), fmt)
        return pw(terms)
    acc = terms[0]
    for t in terms[1:]:
        acc = _add(acc, t, fmt)
    return acc


def _dot(a: list[float], b: list[float], fmt: FloatFormat, order: str, rng: np.random.Generator, extra: list[float] = ()) -> float:
    """fl(sum_i a_i b_i + sum extra) in the given order."""
    if order == "fma":
        acc = Fraction(0)
        for x, y in zip(a, b, strict=True):
            r = _rf(Fraction(x) * Fraction(y) + acc, fmt)  # one rounding per fused multiply-add
            if not np.isfinite(r):
                return r
            acc = Fraction(r)
        out = float(acc)
        for e in extra:
            out = _add(out, e, fmt)
        return out
    if order == "wide":
        if not all(np.isfinite(v) for v in (*a, *b, *extra)):
            return _r(float(np.dot(a, b) + np.sum(extra)), fmt)
        exact = sum((Fraction(x) * Fraction(y) for x, y in zip(a, b, strict=True)), Fraction(0)) + sum((Fraction(e) for e in extra), Fraction(0))
        return _rf(exact, fmt)
    prods = [_mul(x, y, fmt) for x, y in zip(a, b, strict=True)]
    return _sum(prods + list(extra), fmt, order, rng)


def evaluate_step(X, y, W, b, lr: float, reduction: str, fmt: FloatFormat, order: str, seed: int = 0) -> dict[str, np.ndarray]:
    """One step computed in ``fmt`` with the summation ``order``.

    Args: float64 arrays exact in ``fmt``: X (N, D), y (N, K), W (D, K), b (K,); ``lr`` exact in ``fmt``.

    Returns: ``loss``, ``grad_W``, ``grad_b``, ``W``, ``b`` as float64 arrays.
    """
    rng = np.random.default_rng(seed)
    n, d = X.shape
    k = W.shape[1]
    c = 1.0 if reduction == "sum" else _rf(Fraction(1, n * k), fmt)
    R = np.empty((n, k))
    for i in range(n):
        for m in range(k):
            R[i, m] = _dot(list(X[i]), list(W[:, m]), fmt, order, rng, extra=[b[m], -y[i, m]])
    sq = [_mul(v, v, fmt) for v in R.ravel()]
    loss = _mul(c, _sum(sq, fmt, order if order != "fma" else "sequential", rng), fmt)
    two_c = _mul(2.0, c, fmt)
    S = np.vectorize(lambda v: _mul(two_c, v, fmt))(R)
    gW = np.empty((d, k))
    for j in range(d):
        for m in range(k):
            gW[j, m] = _dot(list(X[:, j]), list(S[:, m]), fmt, order, rng)
    gb = np.array([_sum(list(S[:, m]), fmt, order if order != "fma" else "sequential", rng) for m in range(k)])
    upd = np.vectorize(lambda p, g: _add(p, -_mul(lr, g, fmt), fmt))
    return {"loss": np.array(loss), "grad_W": gW, "grad_b": gb, "W": upd(W, gW), "b": upd(b, gb)}


def normal_inputs(rng: np.random.Generator, fmt: FloatFormat, n: int, d: int, k: int, y_scale: float = 1.0) -> dict[str, np.ndarray]:
    """Standard normal X (N, D), y (N, K, times ``y_scale``), W (D, K), b (K,), rounded to ``fmt``."""
    return {key: round_to_format(rng.standard_normal(shape) * (y_scale if key == "y" else 1.0), fmt)
            for key, shape in (("X", (n, d)), ("y", (n, k)), ("W", (d, k)), ("b", (k,)))}
