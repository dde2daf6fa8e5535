"""SymPy derivation: closed form vs element-wise differentiation, and rendering."""

from __future__ import annotations

import pytest
import sympy as sp

from harness.symbolic import check_elementwise, derive


@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("shape", [(1, 1, 1), (2, 1, 1), (3, 2, 2), (2, 3, 1)])
def test_closed_form_agrees_with_elementwise_diff(reduction, shape):
    assert check_elementwise(reduction, *shape) == []


def test_gradient_is_two_c_xt_r():
    der = derive("mean")
    R = der.X * der.W + sp.OneMatrix(der.N, 1) * der.b.T - der.Y
    expected = (2 / (der.N * der.K)) * der.X.T * R
    assert sp.simplify(der.grad_W - expected) == sp.ZeroMatrix(*der.W.shape)
    assert der.scale == 1 / (der.N * der.K)
    assert derive("sum").scale == 1


def test_derive_is_cached_and_rejects_unknown_reduction():
    assert derive("sum") is derive("sum")
    with pytest.raises(ValueError, match="unknown reduction"):
        derive("median")


def test_renderings():
    der = derive("sum")
    assert der.text()["grad_W"] == "dL/dW = 2*X.T*(X*W - Y + 1*b.T)"
    assert der.latex()["grad_W"].endswith(r"2 X^{T} \left(X W - Y + 1 b^{T}\right)")
    mm = der.mathml()["grad_W"]
    assert mm.startswith('<math display="block">') and "<msup><mi>X</mi><mo>T</mo></msup>" in mm
