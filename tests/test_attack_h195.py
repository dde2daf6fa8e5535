"""helper-195: the shortcuts of one small check (issue 12: a check of N = 16, D K = 1 against ``gradcheck``), each
against what it replaced.

What it attacks and what it found (no defect; a search of 400 random small steps of every dtype, magnitudes from
2**-1060 to 2**1000, integer data, flush-to-zero and TF32, compared every bound and mask of ``step_bounds`` bit for
bit with 5e36f3b's, and ``scripts/record_identity.py`` its 18,763 records; one first attempt was caught so: joining
X^T R's rows with R^T's where NumPy had laid the product out column-major changed ``expected`` by an ULP, because
einsum sums a strided row in another order, so only C-contiguous rows are joined):

- ``bounds._numpy_partial_sums`` forms the partial-sum models of grad_W's, grad_b's and (K = 1) the loss's reductions
  over the N rows in one :func:`harness.bounds.partial_sum_squares` call: pinned against hand-derived models and, bit
  for bit, against the three calls of before;
- ``compare._nonnegative`` tests both bounds' signs with one ``fmin``: a NaN in one bound must not hide a negative
  value in the other at the same element;
- ``interchange.read_result`` reads a plain float64 CPU tensor without ``.to()``: a view where ``copy`` is False, a
  copy where it is True, the same bits either way.
"""

from __future__ import annotations

import numpy as np
import pytest

from harness import bounds as hb
from harness.compare import _nonnegative
from harness.frameworks.interchange import read_result
from tests.conftest import mixed_partial_sum_inputs, separate_partial_sums


def test_joined_partial_sums_pinned_by_hand():
    """N = 3, D = K = 1, X = [1, 2, 3], R = [1, 2, -1]. Each model is the largest of the forward and reverse sums of
    squared partial sums and mu^2 sum k^2 + var sum k (n - k) / (n - 1) (here 14 mu^2 + 2 var):
    X^T R's terms [1, 4, -3]: forward 1, 5, 2 -> 30; reverse 2, 1, -3 -> 14; random 14 (4/9) + 2 (74/9) = 22.7: 30.
    R's terms [1, 2, -1]: forward 1, 3, 2 -> 14; reverse 2, 1, -1 -> 6; random 14 (4/9) + 2 (14/9) = 9.3: 14.
    The loss's squares [1, 4, 1]: forward 1, 5, 6 -> 62; reverse 6, 5, 1 -> 62; random 14 (4) + 2 (2) = 60: 62.
    (Rows swapped or their sums of squares misplaced give other values: 14 for grad_W, 30 or 62 for grad_b.)"""
    X = np.array([[1.0], [2.0], [3.0]])
    R = np.array([[1.0], [2.0], [-1.0]])
    sq = (R**2).ravel()
    _, gW, _, gb, loss = hb._numpy_partial_sums(X, R, np.ones((1, 1)), np.zeros(1), R, 0.0, loss_row=(sq, (sq**2).sum()))
    assert gW.shape == (1, 1) and gb.shape == (1,)
    assert (float(gW[0, 0]), float(gb[0]), float(loss)) == (30.0, 14.0, 62.0)


@pytest.mark.parametrize("dtype", [np.float64, np.longdouble])
@pytest.mark.parametrize("n,d,k", [(16, 1, 1), (16, 10, 1), (7, 1, 3), (16, 4, 4), (1, 1, 1), (2, 3, 1)])
def test_joined_partial_sums_equal_separate_calls(dtype, n, d, k):
    """Every model bit for bit as its own call gives it (mixed magnitudes: the sums' roundings differ by order)."""
    rng = np.random.default_rng(n * 100 + d * 10 + k)
    X, Y, W, b, R, sq, sum_sq2 = mixed_partial_sum_inputs(rng, n, d, k, dtype)
    _, gW, sumT2, gb, loss = hb._numpy_partial_sums(X, Y, W, b, R, 0.0, loss_row=(sq, sum_sq2))
    want_gW, want_gb, want_loss = separate_partial_sums(X, R, sq, sum_sq2)
    assert np.array_equal(gW, want_gW) and gW.shape == want_gW.shape
    assert np.array_equal(gb, want_gb) and gb.shape == want_gb.shape
    if k == 1:
        assert loss == want_loss
    else:
        assert loss is None  # (the loss's row holds N K terms: the caller forms it alone)


def test_nonnegative_sees_a_negative_bound_beside_a_nan():
    """fmin, not minimum: minimum(NaN, -1) is NaN, which is not below 0, and hid the negative expected bound."""
    with pytest.raises(ValueError, match="expected bound holds a negative value"):
        _nonnegative(np.array([np.nan, 1.0]), np.array([-1.0, np.nan]))
    with pytest.raises(ValueError, match="rigorous bound holds a negative value"):
        _nonnegative(np.array([-2.0**-1074]), np.array([np.nan]))
    _nonnegative(np.array([-0.0, np.nan, np.inf]), np.array([np.nan, np.nan, 0.0]))  # (-0.0 is not below 0)


def test_read_result_view_and_copy_of_a_float64_tensor():
    """The same bits (-0.0, a NaN, the largest subnormal) either way; shared memory only where copy is False."""
    torch = pytest.importorskip("torch")
    vals = np.array([[1.5], [-0.0], [np.nan], [2.0**-1022 - 2.0**-1074]])
    t = torch.tensor(vals, dtype=torch.float64)
    view, name = read_result(t, None, copy=False)
    copy, name2 = read_result(t, None, copy=True)
    assert name == name2 == "float64"
    assert view.tobytes() == copy.tobytes() == vals.tobytes() and view.shape == copy.shape == (4, 1)
    assert np.shares_memory(view, t.numpy()) and not np.shares_memory(copy, t.numpy())


def test_of_both_joins_only_what_joins():
    """``bounds._of_both``: W's and b's element-wise expected bounds in one evaluation, the same bits as two; parts that
    do not join (a scalar that differs, a NaN scalar, an array of another shape) take the two calls. By hand:
    [1, 2] * 3 + 0.5 = [3.5, 6.5] and [[4]] * 3 + 0.5 = [[12.5]]."""
    f = lambda a, c, e: a * c + e  # noqa: E731
    W, b = hb._of_both(f, (np.array([[4.0]]), 3.0, 0.5), (np.array([1.0, 2.0]), 3.0, 0.5))
    assert W.shape == (1, 1) and b.shape == (2,) and W.tolist() == [[12.5]] and b.tolist() == [3.5, 6.5]
    rng = np.random.default_rng(7)
    for parts_W, parts_b in [((rng.normal(size=(3, 2)), 3.0, rng.normal(size=(3, 2))), (rng.normal(size=2), 3.0, rng.normal(size=2))),
                             ((rng.normal(size=(3, 2)), 3.0, 1.0), (rng.normal(size=2), 2.0, 1.0)),
                             ((rng.normal(size=(3, 2)), np.nan, 1.0), (rng.normal(size=2), np.nan, 1.0)),
                             ((rng.normal(size=(3, 2)), 3.0, rng.normal(size=(3, 1))), (rng.normal(size=2), 3.0, rng.normal(size=2)))]:
        W, b = hb._of_both(lambda a, c, e: np.sqrt(np.abs(a)) * c + e * 1e-3, parts_W, parts_b)
        want_W, want_b = (np.sqrt(np.abs(p[0])) * p[1] + p[2] * 1e-3 for p in (parts_W, parts_b))
        assert W.tobytes() == want_W.tobytes() and b.tobytes() == want_b.tobytes()
        assert W.shape == want_W.shape and b.shape == want_b.shape
