"""False passes found by an adversarial review of the grading (signed infinities, finite
results where the exact value is out of range, complex results, underflowing expected bounds,
vacuous rigorous bounds)."""

from __future__ import annotations

import numpy as np
import pytest

from harness.runner import _validate


class _Res:
    def __init__(self, **kw: object) -> None:
        self.__dict__.update(kw)


def _step(conv: object) -> list[_Res]:
    return [_Res(loss=conv(np.float64(1.0)), grad_W=conv(np.ones((1, 1))), grad_b=conv(np.ones(1)),
                 W=conv(np.ones((1, 1))), b=conv(np.ones(1)))]


@pytest.mark.parametrize("conv", [lambda a: np.asarray(a) + 0j, lambda a: np.asarray(a, dtype=object)])
def test_validate_rejects_complex_and_object_numpy(conv: object) -> None:
    msg = _validate(_step(conv), 1, 1, 1, 1)
    assert msg is not None and ("complex values" in msg or "object values" in msg)


def test_validate_rejects_complex_torch() -> None:
    torch = pytest.importorskip("torch")
    msg = _validate(_step(lambda a: torch.tensor(a).to(torch.complex64)), 1, 1, 1, 1)
    assert msg is not None and "complex values" in msg


def test_validate_accepts_real() -> None:
    assert _validate(_step(lambda a: np.asarray(a)), 1, 1, 1, 1) is None


def _f32_neg_bounds():  # X = 1, y = 0, W = -3e38 in float32: grad = -6e38 overflows to -inf only
    from harness.bounds import step_bounds
    from harness.floats import get_format

    fmt = get_format("float32")
    w = float(np.float32(-3e38))
    inputs = {"X": np.array([[1.0]]), "y": np.array([[0.0]]), "W": np.array([[w]]), "b": np.array([0.0])}
    R = np.array([[w]])
    exact = {"loss": np.array(w * w), "grad_W": np.array([[2 * w]]), "grad_b": np.array([2 * w]),
             "W": np.array([[0.0]]), "b": np.array([-w])}
    return step_bounds(inputs, R, exact, lr=0.5, reduction="sum", fmt=fmt), exact, fmt


def test_signed_inf_masks() -> None:
    sb, _, _ = _f32_neg_bounds()
    for q in ("grad_W", "grad_b"):
        pos, neg = sb.signed_inf_allowed(q)
        assert not np.any(pos) and np.all(neg)
    pos, neg = sb.signed_inf_allowed("loss")
    assert bool(pos) and not bool(neg)
    pos, neg = sb.signed_inf_allowed("W")  # W - lr (-inf) = +inf
    assert np.all(pos) and not np.any(neg)


@pytest.mark.parametrize(("q", "value", "verdict"), [
    ("grad_W", np.inf, "disagree"), ("grad_W", -np.inf, "overflow"),
    ("grad_b", np.inf, "disagree"), ("grad_b", -np.inf, "overflow"),
    ("loss", -np.inf, "disagree"), ("loss", np.inf, "overflow"),
])
def test_inf_of_wrong_sign_disagrees(q: str, value: float, verdict: str) -> None:
    from harness.compare import compare

    sb, exact, fmt = _f32_neg_bounds()
    pos, neg = sb.signed_inf_allowed(q)
    c = np.full(np.shape(exact[q]), value)
    cmp = compare(c, exact[q], np.zeros_like(exact[q]), sb.rigorous[q], sb.expected[q], sb.inf_allowed[q], fmt,
                  nan_allowed=sb.nan_allowed[q], posinf_allowed=pos, neginf_allowed=neg)
    assert cmp.verdict == verdict
