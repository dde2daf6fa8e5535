"""Reductions whose terms repeat: the partial sums' rounding errors that repeat with them.

The expected bounds (:mod:`harness.bounds`, Higham and Mary 2019) model the rounding error of every partial sum
``s_i`` of a reduction as independent with mean zero, so that the reduction errs like
``lambda u sqrt(sum_i s_i^2)``. That fails where the *terms* repeat. Adding a term ``t`` to a running sum ``x``
whose result lies in the binade ``[2**e, 2**(e + 1))``, where ``x`` is itself a float of that binade or below (a
multiple of the result's spacing ``ulp_e``), rounds away ``t``'s bits below ``ulp_e``, the same bits whichever ``x``:
every addition of one value that lands in one binade makes the same error (ties aside). With few values (the residual
``b - y`` of integer labels at ``W = 0``, an indicator feature times it) those errors add up like the number of
terms, not like its square root. Measured (helper-45, issue 12's thirteenth round): NumPy's ``R.sum(axis=0)``, which
adds a C-order ``(N, K)`` array row after row, over 300 rows of 5 values in float32: an error of ``1.0e-3``, 45% of
``u sum_i |s_i|`` and 1.03 times the independent model's expected bound, so that the built-in ``numpy-hand`` was
``suspect``.

**Model.** For a reduction whose terms repeat enough (:func:`repeated_reductions`), every partial sum's error is
taken at its worst case with one sign: ``|sum_i d_i s_i| <= u sum_i |s_i| <= u sqrt(n sum_i s_i^2)``
(Cauchy-Schwarz, ``n`` terms), with ``sum_i s_i^2`` the order model the expected bounds already form (the largest
of the forward order, the reverse order and the expectation over a random permutation; by Jensen's inequality the
expectation of ``sum_i |s_i|`` over random orders is at most ``sqrt(n E sum_i s_i^2)``). For partial sums that grow
in one direction (the common case: terms of one sign) Cauchy-Schwarz loses at most a factor ``2 / sqrt(3)``. This
*worst case* part (``u sqrt(n V)``, :func:`worst_case_part`) is added to the expected bound as
:mod:`harness.sharedrounding`'s worst-case families are (outside the square root, with the reduction's multiplier);
the independent part stays, so the bound only grows, and the rigorous bound still caps it.

**Which reductions** (the terms as the step forms them, in its dtype): ``grad_b = s 1^T R`` column ``k`` where the
column ``k`` of the residual rounded to the dtype repeats; ``grad_W = s X^T R`` element ``(j, k)`` where, in
addition, column ``j`` of ``X`` repeats (a continuous feature makes every product's low bits its own); the loss
``c sum R^2`` where the residual's magnitudes, all columns together, repeat. "Repeats enough" is
:func:`harness.sharedrounding.repeating_columns`' screen (equal pairs on a sample: a shared part at least a quarter
of the independent one).

**Cost.** Sensitivity: on such data the expected bound of the flagged reductions nears half the rigorous one (a
sequential sum of repeated terms can really err that much), so a precision bug there shows as ``disagree`` only
where it exceeds the rigorous bound. Time: the screen of the residual on a sample of about 2,048 rows (only the
sample is rounded to the dtype); ``X``'s columns only where some column of the residual repeats; nothing for a
reduction of at most ``lambda**2 = 36`` terms, whose independent part is already at least the worst case
(``lambda u sqrt(V) >= u sqrt(n V)``).

**Known limits.** Terms that do not repeat but share their low bits (a common fractional part) correlate too and are
not flagged (as :mod:`harness.sharedrounding`'s same limit); a sum in an order whose partial sums exceed all three
modelled orders (all positive terms first, then all negative ones) is not covered, as in the independent model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .floats import FloatFormat, round_to_format
from .sharedrounding import repeating_columns

F = npt.NDArray[np.floating]
Mask = npt.NDArray[np.bool_]


@dataclass
class RepeatedReductions:
    """Which reductions of a step sum repeated terms (:func:`repeated_reductions`).

    ``grad_W``: bool ``(D, K)`` or None (no element); ``grad_b``: bool ``(K,)`` or None; ``loss``: bool."""

    grad_W: Mask | None
    grad_b: Mask | None
    loss: bool

    @property
    def any(self) -> bool:
        return self.grad_W is not None or self.grad_b is not None or self.loss


def repeated_reductions(X: F, R: F, fmt: FloatFormat, lam: float) -> RepeatedReductions:
    """The reductions of a step whose terms repeat enough for their partial sums' errors to be taken at their
    worst case (module docstring).

    Args:
        X: ``(N, D)`` the features (values exact in ``fmt``); R: ``(N, K)`` the exact residual (float64 or wider;
            rounded to ``fmt`` here, as the step holds it).
        fmt: the dtype the step computes in.
        lam: the expected bounds' multiplier (``harness.bounds.LAMBDA``). A reduction of at most ``lam**2`` terms is
            never flagged: there the independent model's ``lam u sqrt(sum s_i^2)`` is already at least the worst
            case ``u sqrt(n sum s_i^2)``.

    Returns:
        :class:`RepeatedReductions`.
    """
    X = np.asarray(X)
    n, d = X.shape
    k = np.shape(R)[1]
    if n * k <= lam**2:
        return RepeatedReductions(None, None, False)
    def held(a: F) -> F:
        return _nonzero_held(a, fmt)

    loss = bool(repeating_columns(np.reshape(R, (-1, 1)), lambda a: np.abs(held(a))))  # the squares: all columns
    if n <= lam**2:
        return RepeatedReductions(None, None, loss)
    r_cols = repeating_columns(R, held)
    if not r_cols:
        return RepeatedReductions(None, None, loss)
    gb = np.zeros(k, dtype=bool)
    gb[r_cols] = True
    x_cols = repeating_columns(X, held)
    gW: Mask | None = None
    if x_cols:
        gW = np.zeros((d, k), dtype=bool)
        gW[np.ix_(x_cols, r_cols)] = True
    return RepeatedReductions(gW, gb, loss)


def _nonzero_held(a: F, fmt: FloatFormat) -> F:
    """``a`` rounded to ``fmt`` (float64), zeros as NaN: a zero term adds nothing and rounds nothing, so zeros
    (an exact fit's residual, a sparse feature) never count as repeats (NaN equals nothing)."""
    with np.errstate(all="ignore"):
        held = round_to_format(np.asarray(a, dtype=np.float64), fmt)
    return np.where(held == 0, np.nan, held)


def repeating_terms(terms: F, fmt: FloatFormat) -> Mask:
    """Which columns of ``terms`` ``(n, C)``, each the terms of one reduction, repeat enough (zeros aside, the values
    rounded to ``fmt``): bool ``(C,)``. For a reduction that sums another operation's results
    (:mod:`harness.models.bounds`: a matrix product's rows and columns, a ``sum`` along an axis)."""
    terms = np.asarray(terms)
    out = np.zeros(terms.shape[1], dtype=bool)
    if terms.shape[0] >= 2 and terms.shape[1]:
        out[repeating_columns(terms, lambda a: _nonzero_held(a, fmt))] = True
    return out


def worst_case_part(mask: Mask | bool, pss: F, n: int, u: float) -> F:
    """``u sqrt(n pss)`` where ``mask``, else 0: the worst case of a reduction's partial-sum errors (module
    docstring), in the units of its terms.

    Args:
        mask: which elements (bool, broadcast against ``pss``); pss: the order model of ``sum_i s_i^2`` per element
            (:func:`harness.bounds.order_model`); n: terms per reduction; u: the unit roundoff.
    """
    with np.errstate(invalid="ignore", over="ignore"):
        return np.where(mask, u * np.sqrt(n * np.asarray(pss)), 0.0)
