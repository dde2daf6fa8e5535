"""``harness.bounds.step_bounds`` under a caller's NumPy error handling: the same bounds whether NumPy ignores,
warns or raises on floating-point errors, and whether warnings are errors (a plug-in or a user's script may set
``np.seterr(all="raise")`` or ``warnings.simplefilter("error")`` before calling it; helper-160 found about half of
hostile inputs raising ``FloatingPointError`` on an underflow there)."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest

from harness import bounds
from harness.floats import get_format, round_to_format

#: Values at the edges of the formats: zeros of both signs, subnormals, the smallest normals, the overflow edge.
EDGE = np.array([0.0, -0.0, 5e-324, 2.2250738585072014e-308, 1e-300, 6e-8, 1.0, 1.5, 3.0, 65504.0, 3.4e38, 1e154,
                 -1e154, 1e300, 1.7976931348623157e308, -1.0, 1e-45, 1e19, 1e-19, 0.1, -2.5, 1e200, 1e-200])


def _hostile(seed: int) -> tuple[dict, np.ndarray, dict, dict]:
    rng = np.random.default_rng(seed)
    n, d, k = (int(x) for x in rng.integers(1, 4, size=3))
    fmt = get_format(str(rng.choice(["float64", "float32", "float16", "bfloat16"])))
    scale = float(10.0 ** rng.integers(-30, 30)) if rng.random() < 0.5 else 1.0

    def gen(shape: tuple[int, ...]) -> np.ndarray:
        a = rng.standard_normal(shape) * scale
        a = np.where(rng.random(shape) < 0.4, rng.choice(EDGE, size=shape), a)
        with np.errstate(all="ignore"):
            return np.asarray(round_to_format(a, fmt), dtype=np.float64)

    X, y, W, b = gen((n, d)), gen((n, k)), gen((d, k)), gen((k,))
    reduction = str(rng.choice(["sum", "mean"]))
    lr = float(rng.choice([0.5, 1e-3, 3.0, 1e-300, 1e30]))
    with np.errstate(all="ignore"):  # a float64 stand-in for the exact values: the bounds' arithmetic is what is tested
        R = X @ W + b - y
        c = 1.0 if reduction == "sum" else 1.0 / (n * k)
        gW, gb = 2 * c * (X.T @ R), 2 * c * R.sum(axis=0)
        exact = {"loss": np.asarray(c * (R * R).sum()), "grad_W": gW, "grad_b": gb, "W": W - lr * gW, "b": b - lr * gb}
    return {"X": X, "y": y, "W": W, "b": b}, R, exact, {"lr": lr, "reduction": reduction, "fmt": fmt}


def _fields(sb: bounds.StepBounds) -> list[tuple[str, object]]:
    out = []
    for f in dataclasses.fields(sb):
        v = getattr(sb, f.name)
        items = sorted(v.items()) if isinstance(v, dict) else [("", v)]
        for key, x in items:
            out.append((f"{f.name}.{key}", x.tobytes() if isinstance(x, np.ndarray) else repr(x)))
    return out


@pytest.mark.parametrize("chunk", range(4))
def test_step_bounds_the_same_under_raise_and_warnings_as_errors(chunk):
    raised_before = 0
    for seed in range(chunk * 60, (chunk + 1) * 60):
        inputs, R, exact, kw = _hostile(seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            want = _fields(bounds.step_bounds(inputs, R, exact, **kw))
        with np.errstate(all="raise"), warnings.catch_warnings():
            warnings.simplefilter("error")
            got = _fields(bounds.step_bounds(inputs, R, exact, **kw))
        assert got == want, seed
        # (the inputs reach the cases the test is about: the bounds' own arithmetic under- or overflows)
        with np.errstate(all="raise"):
            try:
                bounds._step_bounds_in(np.float64, inputs, R, exact, **kw)
            except FloatingPointError:
                raised_before += 1
    assert raised_before > 0
