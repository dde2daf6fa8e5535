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
