"""Results that cannot be graded are named as such: wrong shapes, values not of the case's dtype."""

from __future__ import annotations

import numpy as np

from harness.cases import case_from_arrays
from harness.implementations import Implementation
from harness.implementations.numpy_steps import numpy_hand
from harness.runner import verify


def _case():
    rng = np.random.default_rng(5)
    return case_from_arrays("shape-check", rng.standard_normal((4, 3)), rng.standard_normal((4, 2)),
                            rng.standard_normal((3, 2)), rng.standard_normal(2), lr=0.01, dtypes=["float32"])


def _impl(name, fn):
    # passed to verify directly, not registered: other tests reset the registry
    return Implementation(name=name, framework="numpy", fn=fn, kind="plugin")


def transposed(X, y, W, b, *, lr, reduction, steps):
    return [r._replace(grad_W=r.grad_W.T) for r in numpy_hand(X, y, W, b, lr=lr, reduction=reduction, steps=steps)]


def wider(X, y, W, b, *, lr, reduction, steps):
    return numpy_hand(X.astype(np.float64), y.astype(np.float64), W.astype(np.float64), b.astype(np.float64),
                      lr=lr, reduction=reduction, steps=steps)


def test_transposed_gradient_is_a_shape_error():
    (rec,) = verify([_case()], [_impl("test-transposed-grad", transposed)], dtypes=["float32"])
    assert rec.verdict == "error"
    assert rec.message == "step 1: grad_W has shape (2, 3), expected (3, 2) (transposed or flattened?)"


def test_step_computing_in_a_wider_dtype_is_named():
    (rec,) = verify([_case()], [_impl("test-wider-dtype", wider)], dtypes=["float32"])
    assert rec.verdict == "error"
    assert rec.message.startswith("step 1: loss holds values that are not float32 numbers (its dtype is float64)")


def test_bias_as_a_row_is_accepted():
    def bias_row(X, y, W, b, *, lr, reduction, steps):
        return [r._replace(b=r.b.reshape(1, -1), grad_b=r.grad_b.reshape(1, -1))
                for r in numpy_hand(X, y, W, b, lr=lr, reduction=reduction, steps=steps)]

    recs = verify([_case()], [_impl("test-bias-row", bias_row)], dtypes=["float32"])
    assert {r.verdict for r in recs} == {"agree"}


class _ClaimsFloat32:
    """A result that says it is float32 and hands over float64 values that are not float32 numbers."""

    dtype = np.dtype(np.float32)

    def __init__(self, values):
        self.values = np.asarray(values, dtype=np.float64)
        self.shape = self.values.shape

    def __array__(self, dtype=None, copy=None):
        return self.values if dtype is None else self.values.astype(dtype)


def test_a_result_that_claims_the_dtype_is_still_checked_value_by_value():
    """Only a plain NumPy array of the case's dtype is taken as its numbers by type (results._numbers_of_by_type):
    an object that says float32 and gives float64 values is checked, as before."""
    def claims(X, y, W, b, *, lr, reduction, steps):
        return [r._replace(loss=_ClaimsFloat32(float(r.loss) + 2.0**-40))
                for r in numpy_hand(X, y, W, b, lr=lr, reduction=reduction, steps=steps)]

    (rec,) = verify([_case()], [_impl("test-claims-float32", claims)], dtypes=["float32"])
    assert rec.verdict == "error" and rec.message.startswith("step 1: loss holds values that are not float32 numbers"), \
        rec.message
