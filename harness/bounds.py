"""Forward error bounds for one training step, per element.

Notation (shapes): X (N, D), W (D, K), b (K,), Y (N, K); residual
``R = X W + 1 b^T - Y``; ``c = 1`` (sum) or ``1/(N K)`` (mean); ``s = 2c``;
``u`` the unit roundoff of the dtype the step computes in,
``gamma_n = (1 - u)^-n - 1`` (:meth:`harness.floats.FloatFormat.gamma`: at most Higham's ``n u / (1 - n u)``,
and finite for every ``n``).
All magnitudes below are of exact values (from the oracle).

**Rounding model** (Higham, *Accuracy and Stability of Numerical Algorithms*,
2nd ed., SIAM 2002, §2.2, the model with underflow): every operation gives
``fl(x op y) = (x op y)(1 + d) + e`` with ``|d| <= u`` and ``|e| <= eta``:

- *gradual underflow* (float32, float64 by default): ``eta = 2**(emin - p)``,
  half the subnormal spacing, for products and quotients; ``e = 0`` for sums
  (a sum that lands among the subnormals is exact);
- *flush-to-zero* (float16 and bfloat16 always, since their kernels commonly
  flush -- oneDNN's bfloat16 matmul on CPUs, tensor cores --; any dtype when
  the implementation or the run declares ``flush_to_zero``; the update
  ``W - lr g``, element-wise, only where declared, :func:`update_underflow`): a subnormal
  result becomes 0, an error below ``eta = 2**emin`` (the smallest normal
  number) for *every* operation, sums included, and a subnormal *input* may
  be read as 0 (denormals-are-zero): the inputs ``X, W, b, Y`` are then
  perturbed by ``dX = |X| [|X| < 2**emin]`` (known exactly), and so on.

Rounding a known value ``x`` errs by at most ``u |x| + eta_x`` with
``eta_x = 0`` for ``|x| >= 2**emin`` and ``eta_x = min(|x|, eta)`` below it (the
nearest float is never farther than 0 is). This is how the scale ``c`` and the
learning rate enter: ``fl(1 / (N K))`` is subnormal in float16 once
``N K > 16384`` (``eta_c = min(c, eta)``: with flush-to-zero ``c`` may be 0 and
the whole gradient with it).

**Rigorous bounds** (Higham §3.1 Lemma 3.1, §3.5 eq. 3.12-3.13). Valid for any
summation order, blocking and FMA use, the scale ``c`` applied before or after
the sum (``(2c) R`` summed, ``2 R / (N K)`` summed, or ``2c`` times the sum), and
``c`` rounded twice (float64, then the dtype: NumPy's ``dtype(1 / (n k))``),
because each term passes through at most ``n`` roundings that are each a
factor ``(1 + d)`` (``|prod (1 + d_i) - 1| <= gamma_n``), and every ``e`` is
carried by a factor at most ``1 + gamma_n`` to the result:

- residual (:func:`residual_bound`): ``|R^ - R| <= E_R = gamma_{D+2} A + dIn + (1 + gamma_{D+2}) n_R eta``
  with ``A = |X| |W| + 1 |b|^T + |Y|`` (each product passes one multiplication
  and at most ``D + 1`` additions), ``n_R = D`` products (``2 D + 1``
  operations with flush-to-zero) and ``dIn = dX |W| + |X| dW + dX dW + db + dY``
  the inputs flushed to zero (0 without flush-to-zero);
- grad_W (:func:`gradient_bounds`): with ``Rh = |R| + E_R`` and ``gamma = gamma_{N+3}``
  (two roundings of ``c``, the scale, the product, ``N - 1`` additions),
  ``|s| (gamma |X|^T Rh + |X|^T E_R + dX^T Rh) + eta_s (1 + gamma) |X|^T Rh + (1 + gamma) eta n_G``
  where ``eta_s = 2 eta_c`` is the underflow of ``fl(2c)`` and
  ``n_G = 2 (N + f (N - 1)) + 1 + m |X|^T 1`` (``f = 1`` with flush-to-zero)
  counts the underflows of the N products (with gradual underflow and no TF32, only the rows of a non-integer
  ``X_ij``: an integer times a value of the dtype is a multiple of the subnormal spacing, :func:`_rounded_products`),
  of the final scale, of the per-element scale (then multiplied by ``|X_ij|``; ``m = 2`` under a mean (``c < 1``), where
  ``2 fl(c R)``, a mean taken first and then doubled, doubles its underflow,
  ``m = 1 + f`` under the sum, where with flush-to-zero the doublings ``2R`` flush
  too), and with flush-to-zero of the additions (the products' and additions'
  scaled by 2, :func:`seed_carry`, where the seed's 2 is applied after the sum: ``2 (X^T R)``, and
  ``2 (X^T (R / N))`` under a mean taken first). The per-element scale is the seed
  ``dL/dpred = 2 c R`` as the product chain of its factors (:func:`seed_factors`: 2, ``1/N``, ``1/K``) and the
  computed residual, in any association (``(2c) R``, ``2 fl(c R)``, ``2 ((R / N) / K)`` -- torch's
  ``(R**2).mean(0).mean()`` --, ``(2 (R / N)) / K``, ``2R / (N K)``): where one of them may reach the subnormal range,
  its worst count (:func:`chain_underflow`, the models path's one rule; ``2 (1 + 1/K) eta`` for ``2 ((R / N) / K)``)
  replaces ``m eta`` element by element (:func:`seed_underflow`: ``m eta`` is the floor, so normal data keep their
  bounds; the relative parts, two or three roundings, are within ``gamma``);
- grad_b: the same with ``|X|`` replaced by ones (the seed's floor ``2 + f``: ``grad_b`` multiplies nothing, so
  the N products' etas are its seed's too, scaled by ``max(1, |s|)``; the flushed additions' by 2);
- loss (:func:`loss_bound`), ``gamma = gamma_{NK+3}``: ``|c| (gamma sum Rh^2 + sum E_R (2|R| + E_R))
  + eta_c (1 + gamma) sum Rh^2 + (1 + gamma) eta (2 N K + 1 + f (N K - 1))``
  (squares, a per-element scale, a final scale, flushed additions; the scale as ``1/N`` and ``1/K`` in any
  association, a mean of means included, carries each underflow by factors at most 1: at most ``2 N K + 1``);
  two-sided, so below 0 on its lower side once ``gamma >= 1``: the loss has a one-sided floor too
  (:class:`LossFloor`: rounding to nearest is monotone and keeps ``(1 - u)`` of a non-negative normal result,
  Higham §2.2, so no order of a sum of non-negative terms gives less than ``(1 - u)^(m - 1)`` of it);
- update ``W' = W - lr g`` (:func:`update_bound`, shared with the finite
  differences): the implementation multiplies by ``lr'``, the learning rate as
  it holds it (the dtype's ``lr``, the Python float, the float32 one, or 0 where
  ``lr`` flushes), ``dlr = max |lr' - lr|``. With ``E_g`` the gradient's bound
  and ``u2 = u + u_w (1 + u)`` (:func:`update_rounding`: a product or a difference
  formed in a wider type (:func:`wider_roundoff`: float32 for the half types, float64 for float32, x87 extended
  for float64) and rounded to the dtype is
  rounded twice)::

      p^ = fl(lr' g^):  |p^ - lr g| <= P = (1 + u2) ((lr + dlr) E_g + dlr |g|) + u2 lr |g| + e1
      |W'^ - W'| <= u 2**floor(log2((|W'| + P)(1 + u_w))) + u_w (|W'| + P) + P + e2

  (the difference rounded to nearest errs by at most half the spacing of its binade, perhaps after a rounding to
  the wider type: :func:`nearest_rounding_bound`; at most the standard model's ``u2 (|W'| + P)``, which
  overstated it by up to twice)

  with ``e1 = e2 = eta`` (gradual underflow); with flush-to-zero the smallest normal number only where a value of
  that operation can be subnormal, element by element (:func:`update_underflow`).

With TF32 matmuls, the inputs of ``X W`` and ``X^T (sR)`` are rounded to TF32
(relative ``2**-11``, absolute ``2**-137`` for subnormal float32 inputs): each
product errs by ``((1 + ut)^2 - 1) |x y| + eta_t (1 + ut)(|x| + |y|) + eta_t^2``.

Where ``gamma_n`` exceeds float64's range (float16 from about ``n = 1.45 10^6``, bfloat16 from about 181,000) the
bound is infinite (vacuous) and :attr:`StepBounds.vacuous` says which sum made it so; the record's message quotes it.

**Expected bounds** (probabilistic, Higham and Mary, *A new approach to
probabilistic rounding error analysis*, SIAM J. Sci. Comput. 41(5), 2019,
Theorem 2.4 and its Azuma-Hoeffding argument). Model each rounding error
``d_m`` as independent, mean zero, ``|d_m| <= u``; to first order the error of a
computed value is ``sum_m a_m d_m`` where ``a_m`` is the value rounded at site m
times its downstream multiplier. Then ``|error| <= lambda u sqrt(sum_m a_m^2)``
with probability at least ``1 - 2 exp(-lambda^2 / 2)``. The sites counted are:
products, every partial sum of each reduction, the scale ``c`` and ``c * 2R``,
the learning-rate product and the update. Partial sums depend on the
summation order, which the harness cannot see; it takes the largest of the
forward order, the reverse order and the expectation over a random
permutation (sampling without replacement), which covers the sequential,
blocked and pairwise orders BLAS and reductions use on generic data. Where
Higham and Mary bound ``sum a_m^2`` by its worst case ``n max a_m^2`` (giving
their ``lambda sqrt(n) u`` constant), this keeps the sum itself, so that an
input perturbation such as TF32's ``2**-11`` rounding stands out at any N.

Some terms are not probabilistic: underflow errors (absolute, the ``e`` of
the model), flushed inputs and the learning rate held in another precision
enter the expected bounds with their first-order rigorous terms, and the
loss, which squares the residual, carries the second-order term
``|c| u^2 min(sum V_R + lambda^3 sqrt(sum V_R^2 / 2), lambda^2 sum V_R)``
(mean plus a Hoeffding deviation: the sum of the squared residual errors
does not cancel and grows like N K; it dominates for near-zero residuals).

Rows that share a term (the bias ``b`` added to every row, a feature or a label value repeated in many rows)
round it alike, so those errors are not independent: their part is added by :mod:`harness.sharedrounding`
(a worst case or a model of independent groups, per family of shared terms; see its docstring and limits).
A reduction whose *terms* repeat (few distinct values: integer labels at ``W = 0``, an indicator feature times such a
residual) rounds alike every addition of one value that lands in one binade, so its partial sums' errors add up like
N: where :func:`harness.repeatedsums.repeated_reductions` finds such terms, their worst case ``u sqrt(n sum s_i^2)``
is added (:mod:`harness.repeatedsums`).

``LAMBDA = 6`` gives a failure probability below ``3e-8`` per element; the
calibration test (``tests/test_error_model.py::test_expected_bound_calibration_over_orders``)
measures the largest observed error / expected-bound ratio over evaluation
orders, and ``tests/test_bounds_search.py`` searches for inputs that push a
correct evaluation towards the rigorous bound. The expected bound is capped
by the rigorous one.

**Overflow** (:func:`overflow_masks`): ``inf_allowed`` marks the elements where
*some* correct evaluation forms an intermediate beyond the dtype's range
(then ``inf`` is one of the correct answers); ``nan_allowed`` those where a
correct evaluation can form ``inf - inf`` (two partial sums of opposite signs
that can both overflow) or ``0 * inf`` (an overflowing intermediate times a
zero input, a scale ``c`` or a learning rate that rounds or flushes to 0).
``posinf_allowed`` and ``neginf_allowed`` split ``inf_allowed`` by sign: ``+inf``
needs a positive term or partial sum beyond the range (the loss, a sum of squares
times ``c > 0``, is never ``-inf``; ``W - lr' g`` is ``-inf`` where ``g`` can be
``+inf``); the grading calls an infinity of the other sign ``disagree``.

**Typical-order NaN** (:attr:`StepBounds.nan_typical`, :func:`typical_nan_masks`). The
masks above hold for *any* order: for the gradients' sums over N, ``inf - inf`` is allowed
wherever the sum of all positive terms and the sum of all negative terms (scaled, times the
growth) both pass the range, i.e. in an order that sums the terms sorted by sign. They decide
``overflow`` against ``disagree``. No library sums that way: in the data's order the partial
sums of ordinary data stay near ``sqrt(N)`` times a term, and a step returning NaN everywhere
passed as ``overflow`` (float16, N = 2000, ``|R|`` about 64, helper-100). So a second mask, for
grad_W and grad_b (W and b inherit it), allows NaN only where the other NaN sources hold (an
infinite term times a zero ``X_ij``, a zero scale, a NaN residual) or where, among the partial
sums of the orders libraries use, one exceeds ``+max`` and one ``-max``. Those orders are
modelled by the terms' own order (:func:`typical_partial_sums`): every contiguous range of rows
(sequential sums either way, blocked and pairwise trees: its sums are differences of prefix
sums, the largest ``max_{i <= j} P_j - P_i``), every contiguous range within each residue class
of the rows mod ``L`` for ``L`` in :data:`TYPICAL_LANES` (2 to 128: SIMD and unrolled
accumulators), and every contiguous range of those ``L`` class totals in lane order (the lanes
combined sequentially or pairwise; halving the lanes gives class totals mod ``L / 2``). The
terms are ``X_ij S_ik`` with the magnitudes the any-order masks use (``max(2, |s|) (1 + u)**2
Rmag``, ``+-inf`` where the scaled residual can overflow), the residual's sign (both signs where
``|R| <= E_R``), and the partial sums times the typical growth
``1 + min(LAMBDA sqrt(N + 3) u, gamma_{N + 3})`` (the expected bounds' probabilistic constant, Higham and Mary
2019; times the scale's ``(1 + u)**2``, never more than the rigorous ``(1 + u)**(N + 3)``, which is 403 for float16
at N = 12288 and made exact partial sums of 256 look past the range, helper-105): a model of those
orders, not a bound (an order outside it, or the sign-sorted one, can form a NaN it does not
allow). It is computed only where the fast path (:func:`_far_from_overflow`) did not return and
the any-order mask allows ``inf - inf``, in chunks of :data:`_TYPICAL_CHUNK` elements (memory
``O(N K + D K)``, not ``O(N D K)``). A NaN that ``nan_allowed`` allows but ``nan_typical`` does not
is graded ``suspect`` (:func:`harness.compare.compare`), its message quoting the largest partial
sums (:attr:`StepBounds.typical_partial_sums`); the loss and the residual's sum over D keep the
any-order rule.

**Evaluating the bounds** in float64 can overflow (values near 1e300: the bound of
``b' = -2e300`` is about 1e285, but its ``E_g`` term is 1e584) or underflow (the
expected bound squares values: below about 1e-154 the squares vanish and a
correctly rounded 1e-295 looked ``suspect``). Such bounds are re-evaluated in
``np.longdouble`` (x86's 80-bit extended type, exponents to 1e4932), with exact
values beyond float64 recomputed there; where a rigorous bound is still beyond
float64 the record says so (:attr:`StepBounds.out_of_range`), and where the exact
value is beyond float64 by more than the bound no finite result is accepted
(:attr:`StepBounds.finite_impossible`). Without a wider exponent range (macOS
arm64) the float64 evaluation stands and the message says the bound overflowed.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt

from .floats import FLOAT32, FLOAT64, TF32, FloatFormat, round_to_format
from .repeatedsums import ExactContext, exact_reductions_no_errstate, repeated_reductions, worst_case_part
from .shapes import check_step_shapes
from .sharedrounding import sample_pairs, shared_residual_errors

F64 = npt.NDArray[np.float64]
Mask = npt.NDArray[np.bool_]

#: Multiplier of the probabilistic (expected) bound. See the module docstring.
LAMBDA = 6.0
#: Relative safety margin for evaluating the bounds themselves in float64.
_SAFETY = 1.0 + 2.0**-30


@dataclass
class StepBounds:
    """Per-element bounds for every quantity of one step.

    Attributes:
        rigorous: quantity -> array of absolute error bounds (same shape as the quantity).
        expected: quantity -> array of probabilistic bounds (``<= rigorous``).
        inf_allowed: quantity -> bool array, True where some correct evaluation
            forms an intermediate (or the exact value is) beyond the dtype's
            finite range, so that ``inf`` is a correct answer.
        nan_allowed: quantity -> bool array, True where a correct evaluation can
            form ``inf - inf`` or ``0 * inf``.
        note: for an implementation's own error model (finite differences), a
            line saying what the bounds are; added to every record's message.
        vacuous: quantity -> why its rigorous bound is infinite (``gamma_m`` beyond float64);
            absent where it is finite.
        flush_to_zero: whether the bounds allow flushing subnormals to zero.
        posinf_allowed, neginf_allowed: quantity -> bool array, True where a correct
            evaluation can produce ``+inf`` (``-inf``): an overflowing partial sum or term
            of that sign (the loss, a sum of squares, is never ``-inf``); None = both
            signs wherever ``inf_allowed`` (:meth:`signed_inf_allowed`).
        finite_impossible: quantity -> bool array, True where the exact value is beyond
            float64's range and farther from it than the rigorous bound: no correct
            evaluation gives a finite result there. None = nowhere known.
        out_of_range: quantity -> why a (non-vacuous) bound is infinite: it exceeds
            float64's range (its size, from an extended-precision evaluation).
        rigorous_inexact: the rigorous bounds as if no reduction were exact, where some is
            (:func:`harness.repeatedsums.exact_reductions` sets those bounds to 0); None where none is.
            A step that transforms the exact terms (a factor, another dtype) rounds them: the
            tolerance of :mod:`harness.diagnose`'s hypotheses (:meth:`tolerance_bounds`).
        nan_typical: quantity -> bool array, True where NaN is possible in the orders libraries sum in (within
            :attr:`nan_allowed`; the module docstring's *typical-order NaN*): a NaN allowed by :attr:`nan_allowed` but
            not here is graded ``suspect``, not ``overflow``. None = :attr:`nan_allowed` (an error model's own bounds).
        typical_partial_sums: for grad_W, grad_b, W and b (theirs: their gradient's), ``(A, B)``: the largest positive
            and negative partial sums of the gradient's reduction over N in those orders (scaled, with the growth of
            its roundings; NaN where not computed); None where none was computed.
        posinf_typical, neginf_typical: quantity -> bool array, True where ``+inf`` (``-inf``) is possible in the
            orders libraries sum in (within :attr:`posinf_allowed` / :attr:`neginf_allowed`): a gradient's partial sum
            in those orders, or its exact value, passes the range with that sign (W and b: their update's terms, or
            their gradient's typical infinity). An infinity allowed by the any-order masks but not here (only the terms
            summed by sign give it) is graded ``suspect``, as a NaN outside :attr:`nan_typical` (helper-168: a step
            returning ``+inf`` for a gradient whose terms sum to 0 in every modelled order passed as ``overflow``).
            None = the any-order masks.
        loss_floor: the least value a correct evaluation of the loss can give (:class:`LossFloor`): a finite loss
            below it is ``disagree`` (:func:`harness.compare.compare`'s ``lower_limit``); None = no floor (an error
            model's own bounds).
    """

    rigorous: dict[str, F64]
    expected: dict[str, F64]
    inf_allowed: dict[str, Mask]
    nan_allowed: dict[str, Mask]
    note: str = ""
    vacuous: dict[str, str] = field(default_factory=dict)
    flush_to_zero: bool = False
    posinf_allowed: dict[str, Mask] | None = None
    neginf_allowed: dict[str, Mask] | None = None
    finite_impossible: dict[str, Mask] | None = None
    out_of_range: dict[str, str] = field(default_factory=dict)
    rigorous_inexact: dict[str, F64] | None = None
    nan_typical: dict[str, Mask] | None = None
    typical_partial_sums: dict[str, tuple[F64, F64]] | None = None
    posinf_typical: dict[str, Mask] | None = None
    neginf_typical: dict[str, Mask] | None = None
    loss_floor: LossFloor | None = None

    def tolerance_bounds(self) -> dict[str, F64]:
        """The rigorous bounds of a step that transforms the exact terms: :attr:`rigorous_inexact` where some
        reduction is exact, else :attr:`rigorous`."""
        return dict(self.rigorous if self.rigorous_inexact is None else self.rigorous_inexact)

    def signed_inf_allowed(self, q: str) -> tuple[Mask, Mask]:
        """(``+inf`` allowed, ``-inf`` allowed) for quantity ``q``: where a correct evaluation can
        produce an infinity of that sign (both signs where only ``inf_allowed`` is known)."""
        pos = self.inf_allowed[q] if self.posinf_allowed is None else self.posinf_allowed[q]
        neg = self.inf_allowed[q] if self.neginf_allowed is None else self.neginf_allowed[q]
        return pos, neg

    @property
    def may_overflow(self) -> dict[str, Mask]:
        """``inf_allowed | nan_allowed`` per quantity (where a non-finite result can be correct)."""
        return {q: self.inf_allowed[q] | self.nan_allowed[q] for q in self.inf_allowed}


#: float64's smallest subnormal, the most float64's own rounding of a magnitude below its range loses
_F64_TINY = 2.0**-1074


@dataclass(frozen=True)
class Regime:
    """The rounding model of one evaluation (see the module docstring).

    Attributes:
        fmt: the dtype.
        ftz: flush-to-zero (subnormal inputs, intermediates and results may be 0).
        eta: the absolute error of one underflowing operation: half the
            subnormal spacing, or the smallest normal number with ``ftz``.
    """

    fmt: FloatFormat
    ftz: bool

    @property
    def u(self) -> float:
        return self.fmt.unit_roundoff

    @property
    def eta(self) -> float:
        return self.fmt.min_normal if self.ftz else self.fmt.underflow_quantum

    def gamma(self, n: int | float) -> float:
        return self.fmt.gamma(n)

    def growth(self, n: int | float) -> float:
        """``(1 + u)**n``: the largest factor ``n`` roundings can grow a positive value by
        (the growth of a positive value alone; :meth:`gamma`'s ``(1 - u)^-n - 1`` bounds a relative error either way;
        inf when it exceeds float64)."""
        try:
            return math.exp(n * math.log1p(self.u)) * _SAFETY
        except OverflowError:
            return math.inf

    def scale_underflow(self, x: float) -> float:
        """``eta_x``: the absolute part of the error of rounding the known value ``x``."""
        ax = abs(x)
        return 0.0 if ax >= self.fmt.min_normal else min(ax, self.eta)

    def rounding_underflow(self, mag: Any, carry: float = 1.0) -> Any:
        """The absolute part of the error of one rounding of a value of magnitude at most ``mag`` (element-wise), times
        ``carry``: ``min(carry eta, mag)``. In the underflow model (Higham 2002, §2.1) ``fl(q) = q (1 + d) + e`` with
        ``|e| <= eta``, and ``|e| <= |q|`` too: a rounding to nearest is no farther from ``q`` than 0 is, a flush to
        zero errs by ``|q|``. ``carry``: a value that another association holds ``carry`` times smaller, its error then
        multiplied back (the seed's factors applied later, :func:`seed_carry`): ``carry min(eta, mag / carry)``; or
        ``carry`` roundings of values whose magnitudes add up to at most ``mag`` (a matrix product's ``m`` products:
        ``sum_i min(eta, |q_i|) <= min(m eta, sum_i |q_i|)``). The
        one rule of :func:`chain_underflow`'s own counts and the models path's products (``eta`` alone let a float32
        adjoint of ``2**-159``, rounded to 0 and then multiplied by inputs of ``2**100``, count ``2**-149`` per row:
        a hidden layer's gradient 16 times too large agreed at 0.007 of the bound; helper-142). ``mag`` as computed in
        float64 (a product, or a sum of at most ``carry`` products) may be rounded down, or below float64's range (a
        float64 step's ``2**-99 2**-1000``; 181 products of ``2**-1075`` each summed to 0 in float64 while their exact
        sum is 6 subnormals): it is widened by ``(carry + 2) 2**-52`` relative and ``carry`` times float64's smallest
        subnormal ``2**-1074`` absolute first, so a float64 step's allowance stays ``carry eta`` (``eta = 2**-1074``)."""
        with np.errstate(invalid="ignore", over="ignore"):
            up = np.asarray(mag, dtype=np.float64) * (1 + (carry + 2) * 2.0**-52) + carry * _F64_TINY
            return np.where(np.isnan(up), carry * self.eta, np.minimum(carry * self.eta, up))

    def flushed(self, a: F64) -> F64:
        """``|a| [|a| < 2**emin]`` with flush-to-zero (inputs read as 0), else zeros."""
        aa = np.abs(a)
        return np.where(aa < self.fmt.min_normal, aa, 0.0) if self.ftz else np.zeros_like(aa)


def flush_to_zero_default(fmt: FloatFormat) -> bool:
    """Whether the bounds of ``fmt`` allow flush-to-zero without a declaration (float16, bfloat16)."""
    return fmt.precision <= 11


def seed_factors(reduction: str, n: int, k: int) -> tuple[Fraction, ...]:
    """The factors of the seed's scale ``2c`` (``dL/dpred = 2 c R``) as an implementation may apply them: 2 and, under
    the mean, the divisions by N and by K (each a rounding of its own: ``2 R / N / K``, torch's backward of
    ``(R**2).mean(0).mean()`` by hand), those equal to 1 left out; ``(2, 1)`` under the sum (and a mean over one
    element). The linear path (:func:`gradient_bounds`) and the models path (:mod:`harness.models.plan`) both declare
    the seed by this one definition. Cached: they depend on ``(reduction, N, K)`` alone (a tuple of immutable
    Fractions, shared).

    Raises:
        ValueError: for another reduction."""
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction: expected 'sum' or 'mean', got {reduction!r}")
    if isinstance(n, int) and isinstance(k, int):
        return _seed_factors(reduction, int(n), int(k))
    # (another type, as Fraction(1, n) reads it: a Fraction N its own value, a float a TypeError; not cached, where
    # int() would round it and a value equal to an int would share its entry)
    return _seed_factors.__wrapped__(reduction, n, k)


@functools.lru_cache(maxsize=256)
def _seed_factors(reduction: str, n: int, k: int) -> tuple[Fraction, ...]:
    parts = [f for f in (Fraction(1, n), Fraction(1, k)) if f != 1] if reduction == "mean" else []
    return (Fraction(2), *parts) if parts else (Fraction(2), Fraction(1))


@functools.lru_cache(maxsize=256)
def _seed_growth(reduction: str, n: int, k: int) -> float:
    """:func:`seed_carry` of :func:`seed_factors` (cached: it depends on ``(reduction, N, K)`` alone)."""
    return seed_carry(seed_factors(reduction, n, k))


def seed_carry(factors: Sequence[Fraction]) -> float:
    """The most the seed's constant ``factors`` (:func:`seed_factors`) can multiply an underflow by that an operation
    of the backward pass makes before they are applied: the largest product of a subset of their magnitudes (the
    factors above 1; 2 for every seed). The gradients are linear in the seed, so an implementation may apply its
    factors anywhere: at the seed (the plan), after the weight gradient's product (``2 (X^T R)``: NumPy's
    ``2 * (X.T @ r)``) or after the whole backward pass, with the mean taken first (``2 (X^T ((R / N) / K))``). A
    rounding of a value the factors of a subset ``t`` have not yet multiplied errs by ``u`` relative, the same
    rounding as in the plan's order, plus ``eta`` absolute, which the factors outside ``t`` then multiply (Higham 2002,
    §2.1, the underflow model; as :func:`chain_underflow` carries an ``eta`` by the leaves outside a subset):
    ``2 (X^T (R / 3))`` errs by ``2 eta`` per product where the plan's ``X^T (2 R / 3)`` counts one (float32, N = 5:
    1.67 times the bound of :func:`gradient_bounds`, 2.0 on the models path; helper-138). Both paths scale their
    backward etas by it."""
    return float(math.prod(max(1.0, abs(float(f))) for f in factors))


def chain_underflow(factors: Sequence[Fraction], mag: F64 | Sequence[F64], reg: Regime,
                    low: Sequence[F64] | None = None) -> F64:
    """The underflow count of a product chain in the worst association: its constant ``factors`` (exact Fractions: the
    seed's 2, ``1/N`` and ``1/K``; an expression's constants and a power's coefficient) and its operands, of computed
    magnitudes at most ``mag`` (one array, or one per operand: ``|v| + E_v``) and at least ``low`` (``|v| - E_v``; None:
    0), multiplied in any binary tree (``(2c) R``, ``2 (c R)``, ``(R / N) / K`` then doubled; ``(x1 a) b``;
    ``(g a**2) 3``).

    **Derivation** (Higham 2002, §2.1, the underflow model ``fl(x op y) = (x op y)(1 + d) + e`` with ``|d| <= u``,
    ``|e| <= eta``: half the subnormal spacing with gradual underflow, the smallest normal number with flush-to-zero):
    in a tree, the rounding of the product of a subset ``t`` of the leaves errs by ``eta`` absolute beyond its relative
    error, and that error is multiplied by the leaves outside ``t``: at most ``eta`` times their magnitudes, grown by
    ``(1 + u)`` per later rounding. The relative parts are the same ``m - 1`` roundings in every tree (the walk's
    bound of the plan's tree); the absolute parts add up over the tree's internal nodes, so the worst tree is found
    by dynamic programming over the subsets (``worst(t) = max over splits of worst(l) + worst(r) + own(t)``,
    element-wise: an upper bound of every tree, ``3**m`` splits). A subset's own ``eta`` is not counted where
    its rounding cannot reach the subnormal range:

    - one side is a single integer constant (the 2, a power's coefficient): an integer multiple of a float below the
      smallest normal number is a multiple of the subnormal spacing, a float (with flush-to-zero the computed float is
      0 or normal and so is the product): no absolute error;
    - constants alone whose product is at least twice the smallest normal number;
    - the product of the leaves' least magnitudes ``P_t`` (a constant: its value where normal, else 0) is at least
      ``2**(|t| - 1)`` times the smallest normal number: by induction a computed subtree product ``s`` is 0 or at least
      ``P_s 2**-(|s| - 1)`` (a rounding below the smallest normal number returns 0 or at least half its argument:
      ``fl(p) = 2 eta > p`` on ``(eta, 2 eta)``, ``fl(p) >= p - eta >= p / 2`` above; in the normal range
      ``fl(p) >= p (1 - u)``), so ``t``'s product is 0 (exact) or at least ``2 P_t 2**-|t|``, normal.

    A subset's own count is also at most the magnitude of the product it rounds, ``|q| = |s_l s_r|`` for its split into
    ``l`` and ``r``: a rounding to nearest errs by at most ``|q|`` (0 is a float; a flush to zero errs by ``|q|``), so
    ``|e| <= min(eta, |q|)`` (:meth:`harness.bounds.Regime.rounding_underflow`, here in logarithms), carried by the leaves
    outside it likewise. ``|q| <= H_l H_r`` with ``H_t`` an upper bound of the computed product of ``t`` in every
    tree: a leaf's magnitude (a constant's ``|f| (1 + u) + eta_f``), and ``H_t = max over splits of H_l H_r (1 + u) +
    min(eta, H_l H_r)`` (the model above with ``|e| <= min(eta, |q|)``), or 0 where ``H_l H_r <= eta / 2`` (a rounding
    to nearest of a value at most a quarter of the subnormal spacing returns 0, as a flush to zero of one at most half
    the smallest normal number: the products after it are exact zeros), held in base-2 logarithms (the partial products
    of a chain of subnormal factors lie far below float64's range). Without it a partial product far below ``eta``
    counted ``eta`` times the leaves outside it: ``(G b) x1`` of ``x1*a*b`` with ``G b = 2**-163`` rounding to 0
    counted ``2**-150 x1``, so the plan's exact ``b sum(G x1)`` let a float32 gradient 16 times too large agree at
    0.0009 of the bound, and a float64 one ``2**40`` times too large at ``1e-56`` (helper-142).

    Each constant factor's own rounding to the dtype ``eta_f`` (:meth:`harness.bounds.Regime.scale_underflow`) is
    carried by the leaves outside it likewise. Returns the largest count over the associations, element-wise (the
    broadcast shape of ``mag``; in float64, or ``np.longdouble`` where an operand is given in it).

    The one definition of the rule for both paths (helper-132): the models path's walk counts its declared chains by
    it (:mod:`harness.models.bounds`), the linear path the seed ``2 c R`` (:func:`seed_underflow`). Where the seed is
    ``2 ((R / N) / K)``, the tree ``((R 1/N) 1/K) 2`` counts ``eta`` for ``R / N`` carried by ``2 / K``, ``eta`` for
    its quotient by K carried by 2, none for the doubling (an integer): ``2 (1 + 1/K) eta``; ``2 fl(c R)``, the subset
    ``{1/N, 1/K}`` (exact where ``c`` is normal) times R then doubled: ``2 eta``; ``(2c) R``: one ``eta``. The
    recursion takes the largest over every split of every subset, so each of these trees, and every other, is below
    it."""
    given = [mag] if isinstance(mag, np.ndarray) or np.isscalar(mag) else list(mag)
    # float64, or np.longdouble where an operand is given in it (a float64 step's counts are multiples of its smallest
    # subnormal, which float64 itself rounds: gradient_bounds evaluates the seed's count in the wider type)
    wd = np.result_type(np.float64, *(np.asarray(m_).dtype for m_ in given))
    mags_in = [np.asarray(m_, dtype=wd) for m_ in given]
    lows_in = [np.zeros_like(m_) for m_ in mags_in] if low is None else [np.asarray(v, dtype=wd) for v in low]
    if len(lows_in) != len(mags_in):
        raise ValueError(f"chain_underflow: {len(lows_in)} lower magnitudes for {len(mags_in)} operands")
    k = len(factors)
    m = k + len(mags_in)  # leaves: the factors, then the operands
    fmt = reg.fmt
    shape = np.broadcast_shapes(*(np.shape(x) for x in mags_in))
    mags: list[Any] = [abs(float(f)) for f in factors] + mags_in
    lows: list[Any] = [abs(float(f)) if abs(float(f)) >= fmt.min_normal else 0.0 for f in factors] + \
        [np.maximum(v, 0.0) for v in lows_in]
    grow = reg.growth(m - 1)
    integer = [f.denominator == 1 and f != 0 for f in factors] + [False] * len(mags_in)
    tiny = 2 * fmt.min_normal
    full = (1 << m) - 1

    def members(t: int) -> list[int]:
        return [j for j in range(m) if t >> j & 1]

    def outside(t: int, start: float) -> Any:
        """``start`` (an ``eta``) times the growth and the magnitudes of the leaves outside ``t``; where the magnitudes'
        product alone passes float64's range while ``start`` brings it back, summed in logarithms (and widened by
        ``2**-36``, above their rounding)."""
        if start == 0:
            return 0.0
        out: Any = wd.type(grow)  # (np.longdouble: the counts of a float64 step below its grid kept)
        js = members(full & ~t)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            for j in js:
                out = out * mags[j]
            if not np.any(np.isinf(out)):
                return start * out
            logs: Any = math.log2(grow) + math.log2(start)
            for j in js:
                logs = logs + np.log2(mags[j])
            return np.where(np.isinf(out), np.exp2(logs) * (1 + 2.0**-36), start * out)

    def may_underflow(t: int) -> Any:
        """False where the rounding of the product of ``t`` cannot be below the smallest normal number."""
        js = members(t)
        if all(j < k for j in js):
            return math.prod(mags[j] for j in js) < tiny
        least: Any = 1.0
        with np.errstate(over="ignore", invalid="ignore"):  # (inf: not below; inf * 0 = NaN: may underflow)
            for j in js:
                least = least * lows[j]
            return np.asarray(~(least >= fmt.min_normal * 2.0 ** (len(js) - 1)))

    risky = {t: may_underflow(t) for t in range(1, full + 1) if t.bit_count() > 1}
    if not any(np.any(r) for r in risky.values()) and not any(reg.scale_underflow(float(f)) for f in factors):
        return np.zeros(shape)  # no rounding of any association reaches the subnormal range (normal data)
    log_eta = math.log2(reg.eta)
    with np.errstate(divide="ignore", invalid="ignore"):
        # (an operand's magnitude as computed in float64: widened by float64's smallest subnormal, the most its
        # rounding below float64's range can lose; the relative roundings are within the 2**-36 of outside_log)
        log_mag: list[Any] = [np.log2(np.asarray(mm_, dtype=wd)) if j < k else np.log2(np.asarray(mm_, dtype=wd) + _F64_TINY)
                              for j, mm_ in enumerate(mags)]
        # H of a single leaf: an operand's magnitude; a constant rounded to the dtype (1 + u) and by its eta_f
        log_H: dict[int, Any] = {1 << j: (math.log2(abs(float(factors[j])) * (1 + reg.u) + reg.scale_underflow(float(factors[j])))
                                          if factors[j] != 0 else -math.inf) if j < k else log_mag[j] for j in range(m)}

    def outside_log(t: int, log_start: Any) -> Any:
        """``2**log_start`` carried as :func:`outside` carries an ``eta``, from logarithms (rounded up; the smallest
        positive value of the type where the carried value is positive but below its range)."""
        logs: Any = log_start + math.log2(grow)
        for j in members(full & ~t):
            logs = logs + log_mag[j]
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):
            val = np.exp2(np.asarray(logs, dtype=wd)) * (1 + 2.0**-36)
            tiny_val = np.finfo(wd).smallest_subnormal
            return np.where(np.isnan(val), np.inf, np.where((val == 0) & (logs > -np.inf), tiny_val, val))

    worst: dict[int, Any] = {}
    for t in sorted(range(1, full + 1), key=int.bit_count):
        js = members(t)
        if len(js) == 1:
            (j,) = js
            worst[t] = outside(t, reg.scale_underflow(float(factors[j]))) if j < k else 0.0
            continue
        first = t & -t
        rest = t & ~first
        own_free: Any = None  # own(t) where one side is a single integer constant: 0
        best: Any = None
        log_q: Any = -np.inf  # log2 of the most |q| = |s_l s_r| of any split (H_l H_r)
        sub = rest
        while True:  # every split of t into l and r (the magnitudes' bound log_q first)
            left = first | sub
            right = t & ~left
            if right:
                log_q = np.maximum(log_q, log_H[left] + log_H[right])
            if sub == 0:
                break
            sub = (sub - 1) & rest
        with np.errstate(over="ignore", invalid="ignore"):
            # H_t = |q| (1 + u) + min(eta, |q|) at the largest |q|; 0 where |q| <= eta / 2: the rounding returns 0 (below
            # half the subnormal spacing, or, flushed, below half the smallest normal number), and the products after it
            # are exact zeros
            log_H[t] = np.where(log_q <= log_eta - 1, -np.inf,
                                log_q + np.log2(1 + reg.u + np.minimum(np.exp2(np.minimum(log_eta - log_q, 2.0)), 1.0)))
        sub = rest
        while True:  # every split of t into l (with t's lowest leaf) and r = t - l, r nonempty
            left = first | sub
            right = t & ~left
            if right:
                exact = any(side.bit_count() == 1 and integer[side.bit_length() - 1] for side in (left, right))
                if not exact:
                    if own_free is None:
                        # |e| <= min(eta, |q|), carried by the leaves outside t
                        own_free = (np.where(risky[t], np.minimum(outside(t, reg.eta), outside_log(t, log_q)), 0.0)
                                    if np.any(risky[t]) else 0.0)
                    own = own_free
                else:
                    own = 0.0
                cand = worst[left] + worst[right] + own
                best = cand if best is None else np.maximum(best, cand)
            if sub == 0:
                break
            sub = (sub - 1) & rest
        worst[t] = best
    return np.asarray(np.broadcast_to(np.asarray(worst[full], dtype=wd), shape), dtype=wd)


@functools.lru_cache(maxsize=256)
def _seed_plan(n: int, k: int, c: float, reg: Regime, floors: tuple[float, ...]
               ) -> tuple[tuple[Fraction, ...], float, tuple[F64, list[F64]] | None] | None:
    """What :func:`seed_underflow` and :func:`seed_excess_most` evaluate for an ``N x K`` residual: None where no
    association of the seed's factors underflows (the sum), else ``(factors, threshold, table)``: the least ``|R^|``
    from which no association reaches the subnormal range (infinite where a constant or a product of them may
    underflow), and the excess by group of residuals (:func:`_seed_excess_table`; None where the constants may
    underflow: the count then depends on ``|R^|`` too). Cached (the same shape, scale and regime at every step and
    dtype of a run; the tables are read-only)."""
    factors = seed_factors("sum" if c == 1 else "mean", n, k)
    if all(f.denominator == 1 for f in factors):
        # 2 R under the sum: an integer multiple of a float below the smallest normal number is a float (with
        # flush-to-zero R^ is 0 or normal and so is 2 R^): no association underflows (chain_underflow's integer rule,
        # which it applies to one integer leaf, here to their product 2 1)
        return None
    consts = [abs(float(f)) for f in factors]
    fmt = reg.fmt
    # an element is safe (every association's count 0) where the least |R^| times the smallest product of the constants
    # (those below 1) is at least 2**(m-1) min_normal, m the leaves: then every subset's least product passes
    # chain_underflow's test; where a constant or a product of them may underflow, none is
    c_min = math.prod(f for f in consts if f < 1)
    if any(reg.scale_underflow(f) for f in consts) or c_min < 2 * fmt.min_normal:
        return factors, math.inf, None
    threshold = fmt.min_normal * 2.0 ** len(consts) / c_min * (1 + 2.0**-20)
    ld = np.longdouble
    # normal constants: the count is eta times a coefficient (every own eta carried by constants alone), and each
    # rounding errs by at most the true half spacing 2**(emin - p), which float64's eta, its smallest subnormal 2**-1074
    # (harness.floats.FloatFormat.underflow_quantum), overstates twice: the true count is the count over ``over`` (2 for
    # float64, 1 otherwise), and so is its excess over the floors (float64's worst, 3 true etas, is within the floor's
    # 2 eta: a correct step needs nothing more, and adding it let 2.5 times a float64 gradient of 5-subnormal residuals
    # pass; helper-134). The floor is grown as the chain's count is (its roundings' (1 + u)**(m - 1)): the caller
    # multiplies the floor and the excess by 1 + gamma_{N+3} >= (1 + gamma_N)(1 + u)**3 (Higham, Lemma 3.3), which
    # covers the growth after the seed; so 2 fl(c R), exactly the floor's 2 eta grown, adds nothing
    over = ld(1) if reg.ftz else ld(float(Fraction(reg.eta) / Fraction(2) ** (reg.fmt.emin - reg.fmt.precision)))
    ceilings = [ld(floor) * ld(reg.eta) * ld(reg.growth(len(factors))) * over for floor in floors]
    cuts, tables = _seed_excess_table(factors, reg, len(consts), ceilings, ld(reg.eta) * over)
    for a in (cuts, *tables):
        a.setflags(write=False)
    return factors, threshold, (cuts, tables)


def seed_excess_most(n: int, k: int, c: float, reg: Regime, floors: Sequence[float]) -> list[float] | None:
    """The largest excess :func:`seed_underflow` can give any finite residual of an ``N x K`` step, per floor, in
    units of ``eta`` (its first group's: the count does not rise with ``|R^|``); zeros where no association
    underflows; None where the constants may underflow (the count then depends on ``|R^|``). A caller whose bounds
    do not change by adding this much at every element needs no pass over R (:func:`gradient_bounds`)."""
    plan = _seed_plan(n, k, c, reg, tuple(floors))
    if plan is None:
        return [0.0 for _ in floors]
    table = plan[2]
    return None if table is None else [float(t[0]) for t in table[1]]


def seed_underflow(aR: F64, E: F64, c: float, reg: Regime, floors: Sequence[float]) -> tuple[npt.NDArray[np.intp], list[F64]] | None:
    """The seed ``dL/dpred = 2 c R``'s underflow beyond ``floor`` etas per element (for each of ``floors``), in the worst association of its
    factors (:func:`seed_factors`: ``(2c) R``, ``2 fl(c R)``, ``2 ((R / N) / K)``, ``(2 (R / N)) / K``,
    ``((R / K) / N) 2``, ``(2 R) / (N K)``, ...), counted by :func:`chain_underflow` (the models path's one rule) on
    the computed residual ``R^``: ``|R| - E <= |R^| <= |R| + E``.

    Returns ``(rows, extras)``: the rows ``i`` (ascending) holding an element whose count may exceed the least
    ``floor eta`` (every row where half of them or more do: the others' excess is 0), and per floor ``max(count - floor eta g, 0) / eta`` on those rows (``g``: the chain's growth
    ``(1 + u)**(m - 1)``, which the count carries and the caller's ``1 + gamma`` covers; the count in true half spacings
    ``2**(emin - p)``, of which float64's gradual ``eta`` is two: no excess there) (``(len(rows), K)``, float64 rounded up: in units of ``eta``, so
    that a float64 step's counts, multiples of its smallest subnormal, are not rounded by float64 itself; the counts
    are formed in ``np.longdouble``); None where no element's count exceeds them (normal data: no association can reach
    the subnormal range, found from the smallest ``|R|`` and the largest ``E`` in two passes; the chain is not
    evaluated)."""
    n, k = aR.shape
    plan = _seed_plan(n, k, c, reg, tuple(floors))
    if plan is None:
        return None
    factors, threshold, table = plan
    ld = np.longdouble
    with np.errstate(invalid="ignore", over="ignore"):
        lo = float(np.min(aR)) if aR.size else math.inf
        e_max = float(np.max(E)) if E.size else 0.0
        if lo - e_max * _SAFETY >= threshold:  # (NaN compares False: evaluated below)
            return None
        nan = math.isnan(lo + e_max)
        if table is not None and not nan and not any(np.any(t[:-1] > 0) for t in table[1]):
            return None  # no residual's count exceeds the floors (float64 with gradual underflow): no pass over R
        low = np.maximum(aR - E * _SAFETY, 0.0) * (1 - 2.0**-40)
        risky = ~(low >= threshold).all(axis=1)
        at_risk = int(np.count_nonzero(risky))
        if at_risk == 0:
            return None
        # (every row where half of them or more are at risk: no copies of R's and X's rows; the others' excess is 0,
        # their residuals past every threshold)
        rows = np.arange(n) if 2 * at_risk >= n else np.flatnonzero(risky)
        low_r = low if rows.size == n else low[rows]
        if table is None:  # a constant's product may underflow: the count depends on |R^| too
            # the floor grown as the chain's count is (its roundings' (1 + u)**(m - 1)): the caller multiplies the floor
            # and the excess by 1 + gamma_{N+3} >= (1 + gamma_N)(1 + u)**3 (Higham, Lemma 3.3), which covers the growth
            # after the seed; so 2 fl(c R), exactly the floor's 2 eta grown, adds nothing
            ceilings = [ld(floor) * ld(reg.eta) * ld(reg.growth(len(factors))) for floor in floors]
            mag: Any = ((aR[rows] + E[rows]) * _SAFETY).astype(ld)
            count = chain_underflow(factors, mag, reg, [low_r.astype(ld)])
            extras = [np.where(np.isnan(count), np.inf, _up64(np.maximum(count - cl, ld(0)) / ld(reg.eta)))
                      for cl in ceilings]
        else:
            extras = _seed_excess_by_low(table, low_r, nan)
    if not any(np.any(x > 0) for x in extras):
        return None
    return rows, extras


def _seed_excess_table(factors: Sequence[Fraction], reg: Regime, k: int, ceilings: Sequence[Any], unit: Any
                       ) -> tuple[F64, list[F64]]:
    """The seed's excess by group of residuals, from a few scalar counts: ``(cuts, tables)``, a residual of least
    magnitude ``low`` in group ``g = searchsorted(cuts, low, side="right")`` (``cuts[g - 1] <= low < cuts[g]``), and
    per ceiling ``tables[i][g] = max(count - ceiling, 0) / unit`` (float64, rounded up; ``unit``: ``eta``, or float64's
    ``eta`` times its overstatement 2: :func:`seed_underflow`), with a last entry, infinite, for a NaN.

    With normal constants (``factors`` and their products) :func:`chain_underflow`'s count of the seed's chain is at
    most its value at the operand's largest magnitude 1 (only the subsets without it are carried by it, and those cannot
    underflow; a subset with it counts ``min(eta, |q|)``, ``eta`` there) and does not rise with ``low`` (a subset ``t``'s own ``eta`` is counted only where its least product
    ``low P_t`` is below ``2**|t|`` times the smallest normal number): it is a step function of ``low`` with a step at
    each of those thresholds over ``P_t``, ``t`` the subsets of the constants with the operand. The cuts are those
    thresholds widened by ``2**-40`` (far above the rounding of ``low P_t``), so that each group's count is the
    count at its least ``low``, its cut (0 for the first group), and an upper bound of its other elements' counts."""
    consts = [abs(float(f)) for f in factors]
    cuts = np.array(sorted({reg.fmt.min_normal * 2.0 ** bin(t).count("1") / math.prod(consts[j] for j in range(k) if t >> j & 1)
                            for t in range(1, 1 << k)})) * (1 + 2.0**-40)
    tables = [np.full(len(cuts) + 2, np.inf) for _ in ceilings]
    for g, at in enumerate((0.0, *cuts.tolist())):
        count = _chain_at(tuple(factors), reg, at)
        for table, cl in zip(tables, ceilings, strict=True):
            table[g] = _up64(np.maximum(count - cl, np.longdouble(0)) / unit)
    return cuts, tables


def _seed_excess_by_low(table: tuple[F64, list[F64]], low: F64, nan: bool) -> list[F64]:
    """The excess (:func:`_seed_excess_table`'s ``table``) of each residual of least magnitude ``low``, element-wise,
    per ceiling; NaN (``nan``: ``low`` may hold one): infinite. One value broadcast where every residual is in one
    group (an exact fit's residuals, all 0)."""
    cuts, tables = table
    least, most = float(np.min(low)), float(np.max(low))
    nan = nan or math.isnan(least) or math.isnan(most)  # (|R| - E of an infinite |R| and E: NaN, as with nan in R)
    if not nan:
        lo_hi = np.searchsorted(cuts, [least, most], side="right")
        if lo_hi[0] == lo_hi[1]:
            return [np.broadcast_to(t[lo_hi[0]], low.shape) for t in tables]
    group = np.searchsorted(cuts, low, side="right")
    if nan:
        group = np.where(np.isnan(low), len(cuts) + 1, group)
    return [np.asarray(t[group]) for t in tables]


@functools.lru_cache(maxsize=256)
def _chain_at(factors: tuple[Fraction, ...], reg: Regime, low: float) -> Any:
    """:func:`chain_underflow` of ``factors`` and one operand of least magnitude ``low`` (its largest: 1, where a
    count with normal constants is its largest: a product with the operand is then at least the smallest normal
    number, so each own count is ``eta``, not the smaller ``|q|``), in ``np.longdouble``; cached (an exact fit's
    residuals: ``low = 0`` at every step)."""
    return chain_underflow(factors, np.ones((), dtype=np.longdouble), reg, [np.asarray(np.longdouble(low))])


def _up64(x: Any) -> F64:
    """``x`` (longdouble) as float64 rounded up (a bound stays a bound)."""
    with np.errstate(over="ignore"):
        y = np.asarray(x, dtype=np.float64)
        return np.asarray(np.where(y < x, np.nextafter(y, np.inf), y))


def _eta_times(reg: Regime, units: F64, n: int) -> F64:
    """An upper bound of ``eta`` times the exact value of ``units``, a float64 sum of ``n`` nonnegative products or
    terms (its rounding: at most ``gamma_n`` relative and ``n`` smallest subnormals absolute), in float64 rounded up
    (the product formed in ``np.longdouble``)."""
    with np.errstate(over="ignore"):
        up = (units + n * _F64_TINY) * (1 + 2 * FLOAT64.gamma(n + 2))
        return _up64(np.longdouble(reg.eta) * up.astype(np.longdouble))


def partial_sum_squares(terms: F64, axis: int, sum_sq: F64 | None = None) -> F64:
    """Model of ``sum_k s_k^2`` over the partial sums ``s_k`` of a reduction along ``axis``.

    The largest of: forward order, reverse order, and the expectation over a
    uniformly random order (sampling without replacement: ``E s_k = k mu``,
    ``Var s_k = k (n - k) / (n - 1) sigma^2`` for population mean ``mu`` and
    variance ``sigma^2``).

    The reverse-order partial sums are ``total - F_{k-1} = total - F_k + t_k`` from the
    forward ones ``F_k`` (one cumulative sum; fastest when ``axis`` is the last, contiguous one);
    in floating point they differ from a separate suffix sum by roundings only, which a
    model of the error's size does not resolve.

    Args:
        terms: float64 (or wider) array, reduced along ``axis``.
        axis: the reduction axis.
        sum_sq: ``sum(terms**2, axis)`` when the caller has it already (else computed here).

    Returns:
        array of ``terms``' dtype with ``axis`` removed.
    """
    t = np.asarray(terms)
    if axis not in (-1, t.ndim - 1):
        t = np.moveaxis(t, axis, -1)  # a view; contiguous already when axis is the last one
    n = t.shape[-1]
    lead = t.shape[:-1]
    t2 = t.reshape(math.prod(lead), n)
    if _PSS_ONE_BLOCK and 1 <= n and t2.shape[0] * n <= _PSS_BLOCK and t2.dtype in (np.float64, np.longdouble):
        # one block (a small array): the loop's operations on the whole array, without its copies into place
        fwd = _running_sums(t2)
        tot = fwd[:, -1:].copy()
        fwd_sq = np.einsum("ij,ij->i", fwd, fwd).reshape(lead)
        rev = np.subtract(tot, fwd, out=fwd)
        rev += t2  # rev_k = total - F_{k-1}
        rev_sq = np.einsum("ij,ij->i", rev, rev).reshape(lead)
        if sum_sq is None:
            sum_sq = np.sum(np.square(t), axis=-1)
        return order_model(fwd_sq, rev_sq, tot[:, 0].reshape(lead), sum_sq, n)
    forward: npt.NDArray[Any] = np.empty(t2.shape[0], dtype=t2.dtype)
    reverse: npt.NDArray[Any] = np.empty_like(forward)
    total: npt.NDArray[Any] = np.empty_like(forward)
    rows = max(1, _PSS_BLOCK // max(n, 1))
    for r0 in range(0, t2.shape[0], rows):  # blocks that stay in cache: one pass over memory, not seven
        blk = t2[r0:r0 + rows]
        fwd = _running_sums(blk)
        tot = fwd[:, -1:].copy()
        forward[r0:r0 + rows] = np.einsum("ij,ij->i", fwd, fwd)
        rev = np.subtract(tot, fwd, out=fwd)
        rev += blk  # rev_k = total - F_{k-1}
        reverse[r0:r0 + rows] = np.einsum("ij,ij->i", rev, rev)
        total[r0:r0 + rows] = tot[:, 0]
    forward, reverse, total = forward.reshape(lead), reverse.reshape(lead), total.reshape(lead)
    if sum_sq is None:
        sum_sq = np.sum(np.square(t), axis=-1)
    return order_model(forward, reverse, total, sum_sq, n)


@functools.lru_cache(maxsize=256)
def _order_sums(n: int) -> tuple[float, float]:
    """``(sum_k k**2, sum_k k (n - k) / (n - 1))`` over ``k = 1..n`` in float64, as :func:`order_model`
    uses them (computed once per ``n``: a step asks for the same few ``n`` several times)."""
    k = np.arange(1, n + 1, dtype=np.float64)
    sum_k2 = float(np.sum(k**2))
    sum_kvar = float(np.sum(k * (n - k) / (n - 1))) if n > 1 else 0.0
    return sum_k2, sum_kvar


def order_model(forward: F64, reverse: F64, total: F64, sum_sq: F64, n: int) -> F64:
    """The model of :func:`partial_sum_squares` from its parts (arrays of one shape): the largest of the
    forward and reverse sums of squared partial sums and the random-order expectation
    ``mu**2 sum_k k**2 + var sum_k k (n - k) / (n - 1)`` (``mu = total / n``, ``var = sum_sq / n - mu**2``)
    for ``n`` terms."""
    mu = total / n
    mu2 = mu**2  # (the same square, formed once)
    var = np.maximum(sum_sq / n - mu2, 0.0)
    sum_k2, sum_kvar = _order_sums(n)
    random = mu2 * sum_k2 + var * sum_kvar
    return np.maximum(np.maximum(forward, reverse), random)


def partial_sum_squares_planes(term: Callable[[int], F64], n: int, sum_sq: F64) -> F64:
    """:func:`partial_sum_squares` of the terms ``term(0), ..., term(n - 1)`` (arrays of one shape,
    reduced element-wise across the ``n`` of them), computed plane by plane: forward partial sums
    ``F_j``, reverse ones ``total - F_{j-1}`` from a second pass, the random-order expectation
    from ``sum_sq`` (``sum_j term(j)**2``, required). Each plane is asked for twice (once where all of them
    together are at most :data:`_PSS_BLOCK` elements: then they are kept).

    The same model as :func:`partial_sum_squares` (its docstring); cheaper when ``n`` is small
    and the planes are large (no stacked array, contiguous passes)."""
    first = term(0)
    # small planes: each formed once and kept for the second pass (the same values)
    kept = [first, *(term(j) for j in range(1, n))] if np.size(first) * n <= _PSS_BLOCK else None
    F = np.array(first, dtype=np.result_type(first, np.float64))
    forward = F * F
    for j in range(1, n):
        F += term(j) if kept is None else kept[j]
        forward += F * F
    total = F.copy()
    S = F  # reverse partial sums, from the whole sum down
    reverse = np.zeros(total.shape, dtype=total.dtype)  # (np.zeros_like's Python wrapper: a few us a call)
    for j in range(n):
        reverse += S * S
        S -= term(j) if kept is None else kept[j]
    return order_model(forward, reverse, total, sum_sq, n)


#: Up to this many terms per element, :func:`expected_bounds` forms the residual's partial sums plane by plane.
_PLANE_LOOP_MAX = 64


#: Elements per block of :func:`partial_sum_squares` (512 KiB of float64: the block's passes stay in cache).
_PSS_BLOCK = 1 << 16
#: :func:`_numpy_partial_sums` joins its reductions' rows into one :func:`partial_sum_squares` call only where they
#: hold at most this many terms: ``np.einsum("ij,ij->i")`` sums a longer row in chunks of 8192 elements whose
#: grouping depends on the rows around it (whatever ``np.setbufsize``; NumPy 2.4), so a row of 8193 to 32768 terms joined with others got other bits
#: than alone (float64 and longdouble; helper-196: the loss's and grad_b's expected bounds, K = 1, N = 32767).
_EINSUM_ROW_MAX = 8192
#: :func:`partial_sum_squares` of at most one block without the block loop (the same operations; False: the loop,
#: which tests compare it with).
_PSS_ONE_BLOCK = True


#: Magnitudes (of inputs and residual) within which squares of products are normal floats
#: (``2**(-4*250) > 2**-1022``), so ``sum_j X_ij^2 W_jk^2`` may be formed as ``X^2 @ W^2``.
_SQUARE_SAFE = 2.0**250


#: :func:`_squares_safe` tests arrays of at most this many elements in all together with one pass.
_SQUARES_SAFE_JOINED = 4096


def _squares_safe(*arrays: F64) -> bool:
    """Whether every nonzero magnitude lies in ``[2**-250, 2**250]`` (float64), or the type is wider."""
    if any(np.asarray(a).dtype != np.float64 for a in arrays):
        return True  # longdouble: exponent range to 2**16384, squares of float64 values never leave it
    if sum(np.size(a) for a in arrays) <= _SQUARES_SAFE_JOINED:
        # small arrays: one test of their elements together, the same answer where none is NaN (a NaN hides the
        # largest magnitude of its own array from ``max``, so an array holding one is tested alone, as below)
        m = np.abs(np.concatenate(arrays, axis=None))  # (axis None: each array flattened)
        if not m.size:
            return True
        top = float(m.max())
        if top == top:
            return not (top > _SQUARE_SAFE or float(np.where(m > 0, m, 1.0).min()) < 1 / _SQUARE_SAFE)
    for a in arrays:
        m = np.abs(a)
        if m.size and (float(m.max()) > _SQUARE_SAFE or float(np.min(np.where(m > 0, m, 1.0))) < 1 / _SQUARE_SAFE):
            return False
    return True


@dataclass
class ResidualBound:
    """:func:`residual_bound`'s result: ``A`` (magnitudes of the terms), ``E`` (the
    rigorous bound of ``|R^ - R|``), ``U`` (its first-order absolute part: underflow,
    flushed inputs, TF32 underflow) and ``gamma`` (``gamma_{D+2}``).

    ``U_uniform``: the one value of every element of ``U`` when it has no flushed-input or TF32 part (``n_R eta``:
    gradual underflow only), else None. The sums of ``U`` (:func:`gradient_bounds`, :func:`loss_bound`) are then
    formed in closed form (``|X|^T U = (|X|^T 1) U_uniform``): in float64 ``U`` is a multiple of the smallest
    subnormal, and ``|X|^T U`` through BLAS multiplies subnormals (microcode on x86: 5.7 ms against 0.1 ms at
    N = 15,625, D = 16, K = 4) and rounds each of its N products on the subnormal grid (an absolute error up to
    ``N eta``, where the closed form's is one rounding)."""

    A: F64
    E: F64
    U: F64
    gamma: float
    U_uniform: float | None = None


@dataclass
class _Scan:
    """One pass over an ``(N, M)`` float64 array ``a`` (``partialsums.magnitude_scan``).

    ``abs``: ``np.abs(a)``; ``sq``: ``np.abs(a)**2`` (X) or ``a**2`` (R), None where not formed (Y);
    ``cols``: ``(3, M)``: ``a``, ``np.abs(a)`` and ``sq`` summed over the rows in NumPy's order for ``M >= 2``
    (read them through :meth:`colsum`; X's row 1 alone is formed, Y's none, R's all: the others are 0.0); ``max_abs``: ``float(np.abs(a).max())`` (NaN where ``a`` holds a NaN,
    0.0 when empty); ``finite``, ``nan``: ``np.isfinite(a).all()``, ``np.isnan(a).any()``; ``extreme``:
    :func:`_extreme_magnitudes` of ``a``."""

    abs: F64
    sq: F64 | None
    cols: F64
    max_abs: float
    finite: bool
    nan: bool
    extreme: bool

    def colsum(self, row: int, full: F64) -> F64:
        """``full.sum(axis=0)`` (``full``: the array that ``cols[row]`` sums), by :func:`_column_sums`."""
        return _column_sums(self.cols[row], full)


def _column_sums(in_order: F64, full: F64) -> F64:
    """``full.sum(axis=0)`` bit for bit, for a C-contiguous ``(N, M)`` array ``full``: ``in_order`` (a kernel's sums
    of the rows in order from 0.0, which is NumPy's order for ``M >= 2``) where ``M >= 2``; where ``M == 1`` NumPy
    sums the single column pairwise, so ``full`` is summed by NumPy."""
    return in_order if full.shape[1] >= 2 else np.sum(full, axis=0)


def _running_sums(a: npt.NDArray[Any]) -> Any:
    """``np.cumsum(a, axis=1)`` of a 2-D array bit for bit, in its memory layout (``np.empty_like``'s, as NumPy's
    accumulation allocates it: a later reduction over it, ``einsum``, sums in the order of that layout): compiled
    (``partialsums.running_sums``) for float64 where :data:`USE_KERNELS`, else by NumPy."""
    if USE_KERNELS and a.dtype == np.float64:
        out = np.empty_like(a)
        _partialsums().running_sums(a, out)
        return out
    return np.cumsum(a, axis=1)


@functools.cache
def _partialsums() -> Any:
    """:mod:`harness.partialsums`, imported on first use (it compiles with numba), then held."""
    from . import partialsums

    return partialsums


def _row_sum(a: npt.NDArray[Any]) -> Any:
    """``a.sum(axis=0)`` bit for bit (NaN payloads aside): compiled (``partialsums.column_sums``, the rows in NumPy's order) for a
    C-contiguous float64 ``(N, M)`` array with ``M >= 2`` where :data:`USE_KERNELS`, else by NumPy."""
    if USE_KERNELS and a.dtype == np.float64 and a.ndim == 2 and a.shape[1] >= 2 and a.flags.c_contiguous:
        from .partialsums import column_sums

        out = np.empty(a.shape[1])
        column_sums(a, out)
        return out
    return np.asarray(a).sum(axis=0)  # (the method: np.sum's Python wrapper aside, the same reduction)


def _scan(a: F64, mode: int, sums: int = 7) -> _Scan:
    """:class:`_Scan` of ``a`` (C-contiguous float64 ``(N, M)``); ``mode``: 0 no square, 1 ``|a|**2``, 2 ``a**2``;
    ``sums``: the rows of ``cols`` formed (``partialsums.magnitude_scan``: 7 all, 2 ``np.abs(a)``'s, 0 none)."""
    from .partialsums import magnitude_scan

    absa = np.empty(a.shape)
    sq = np.empty(a.shape) if mode else None
    cols = np.empty((3, a.shape[1]))
    top, low, nan = magnitude_scan(a, absa, np.empty((0, 0)) if sq is None else sq, mode, cols, sums)
    top, low, nan = float(top), float(low), bool(nan)
    finite = not nan and top < math.inf
    # with only finite values the extremes are the largest and the smallest nonzero magnitude; else filter (rare)
    extreme = (low < 2.0**-200 or top > 2.0**200) if finite else _extreme_magnitudes(absa)
    return _Scan(abs=absa, sq=sq, cols=cols, max_abs=math.nan if nan else top, finite=finite, nan=nan,
                 extreme=extreme)


@dataclass
class _Prepared:
    """Arrays and facts shared by :func:`step_bounds`' terms (float64, compiled path), each formed once:
    passes over ``X`` (N, D), ``Y`` and ``R`` (N, K), and the facts of ``ResidualBound.E`` and ``U`` and the
    element-wise gradient and loss terms once ``residual_bound`` has formed them (keyed by the ``E`` array).

    Every consumer gets exactly the values its NumPy expression forms (``np.abs(X)`` is ``X.abs``, and so on);
    see :func:`_prepare` for when this path is taken."""

    X: _Scan
    Y: _Scan
    R: _Scan
    #: (E, U, np.isnan(E).any(), _max_abs(U)) from residual_bound's kernel
    residual_facts: tuple[F64, F64, bool, float] | None = None
    #: (E, Rh, Rh**2, E * (2 |R| + E), (2, K) column sums of Rh and E, np.isfinite(Rh).all())
    _terms: tuple[F64, F64, F64, F64, F64, bool] | None = None

    def residual_terms(self, E: F64) -> tuple[F64, F64, F64, F64, bool]:
        """``(Rh, Rh**2, E * (2 |R| + E), cols, np.isfinite(Rh).all())`` with ``Rh = |R| + E`` (``partialsums.
        gradient_terms``), formed once per ``E``; ``cols`` ``(2, K)``: ``Rh`` and ``E`` summed over the rows in
        NumPy's order (valid for ``K >= 2``)."""
        if self._terms is None or self._terms[0] is not E:
            from .partialsums import gradient_terms

            aR = self.R.abs
            Rh, Rh2, EL = np.empty(aR.shape), np.empty(aR.shape), np.empty(aR.shape)
            cols = np.empty((2, aR.shape[1]))
            finite = bool(gradient_terms(aR, E, Rh, Rh2, EL, cols))
            self._terms = (E, Rh, Rh2, EL, cols, finite)
        return self._terms[1:]

    def residual_facts_of(self, rb: ResidualBound) -> tuple[bool, float] | None:
        """``(np.isnan(rb.E).any(), _max_abs(rb.U))`` where ``rb`` is the bound this step's kernel formed."""
        f = self.residual_facts
        return (f[2], f[3]) if f is not None and f[0] is rb.E and f[1] is rb.U else None


def _prepare(inputs: Mapping[str, F64], residual: F64) -> _Prepared | None:
    """The shared passes of :class:`_Prepared` where the compiled path applies: :data:`USE_KERNELS`, at least
    :data:`KERNEL_MIN_WORK` terms, and ``X``, ``y``, ``R`` C-contiguous float64 (as float64 views of them; the
    kernels' outputs are C-contiguous, so every NumPy reduction and BLAS product that reads them sees the layout
    the NumPy expressions give for C-contiguous inputs). Else None: the NumPy expressions throughout."""
    X, Y, R = (np.asarray(a, dtype=np.float64) for a in (inputs["X"], inputs["y"], residual))
    W, b = np.asarray(inputs["W"]), np.asarray(inputs["b"])
    shapes_agree = (X.ndim == 2 and W.ndim == 2 and Y.shape == R.shape == (X.shape[0], W.shape[1])
                    and W.shape[0] == X.shape[1] and b.shape == (W.shape[1],))  # else NumPy says what is wrong
    if not (USE_KERNELS and shapes_agree and X.shape[0] * W.size >= KERNEL_MIN_WORK
            and all(a.flags.c_contiguous for a in (X, Y, R))):
        return None
    # (X's column sums of |X| alone are read, y's none: the others are not formed)
    return _Prepared(X=_scan(X, 1, 2), Y=_scan(Y, 0, 0), R=_scan(R, 2))


def _tf32_eta(reg: Regime) -> float:
    return reg.fmt.min_normal if reg.ftz else TF32.underflow_quantum


def residual_bound(X: F64, W: F64, b: F64, Y: F64, reg: Regime, ut: float, *,
                   pre: _Prepared | None = None) -> ResidualBound:
    """``E_R`` of the module docstring: ``gamma_{D+2} A + dIn + TF32 + (1 + gamma_{D+2}) n_R eta``.

    Args:
        X, W, b, Y: the inputs (exact float64 values).
        reg: the rounding model.
        ut: TF32's unit roundoff when the products' inputs are rounded to TF32, else 0.
        pre: :func:`step_bounds`' shared passes over these ``X`` and ``Y`` (the same values, fewer passes), or None.
    """
    with np.errstate(invalid="ignore", over="ignore"):
        return _residual_bound(X, W, b, Y, reg, ut, pre)


def _residual_bound(X: F64, W: F64, b: F64, Y: F64, reg: Regime, ut: float, pre: _Prepared | None = None,
                    ) -> ResidualBound:
    """With ``pre``: ``|X|``, ``|Y|`` and ``np.isfinite(X).all()`` from the shared passes and the element-wise
    ``A``, ``E``, ``U`` (N, K) in one compiled pass (``partialsums.residual_terms``: the same expressions), which
    records ``np.isnan(E).any()`` and ``max |U|`` in ``pre.residual_facts``."""
    d = X.shape[1]
    aW, ab = np.abs(W), np.abs(b)
    aX, aY = (pre.X.abs, pre.Y.abs) if pre is not None else (np.abs(X), np.abs(Y))
    absXW = aX @ aW
    pscale = (1.0 + ut) ** 2
    # TF32: each product's inputs rounded (relative ut, absolute eta_t for subnormal float32 inputs)
    tf_abs: F64 | None = None
    if ut:
        et = _tf32_eta(reg)
        tf_abs = et * (1 + ut) * (aX.sum(axis=1)[:, None] + aW.sum(axis=0)[None, :]) + d * et**2
    x_finite = pre.X.finite if pre is not None else bool(np.isfinite(aX).all())
    flushed = reg.ftz or not (x_finite and np.isfinite(aW).all())
    d_in: F64 | None = None  # None: nothing is flushed (products of finite magnitudes with zeros, +0 everywhere)
    if flushed:
        dX, dW, db, dY = reg.flushed(X), reg.flushed(W), reg.flushed(b), reg.flushed(Y)
        d_in = dX @ aW + aX @ dW + dX @ dW + db[None, :] + dY
    g = reg.gamma(d + 2)
    n_under = d + (d + 1 if reg.ftz else 0)
    if pre is not None:
        from .partialsums import residual_terms

        none = np.empty((0, 0))
        A, E, U = np.empty(absXW.shape), np.empty(absXW.shape), np.empty(absXW.shape)
        e_nan, u_max = residual_terms(absXW, ab, aY, none if d_in is None else d_in, none if tf_abs is None else tf_abs,
                                      d_in is not None, tf_abs is not None, pscale - 1.0, g, n_under * reg.eta,
                                      (1.0 + g) * n_under * reg.eta, A, E, U)
        pre.residual_facts = (E, U, bool(e_nan), float(u_max))
    else:
        zeros = np.zeros(absXW.shape, dtype=absXW.dtype)
        d_in = zeros if d_in is None else d_in
        tf_abs = zeros if tf_abs is None else tf_abs
        tf = (pscale - 1.0) * absXW + tf_abs
        A = absXW + ab[None, :] + aY
        U = d_in + tf_abs + n_under * reg.eta  # TF32's relative part is modelled probabilistically
        E = g * (A + tf) + d_in + tf + (1.0 + g) * n_under * reg.eta  # (in residual_bound's errstate, as all of this)
    uniform = not (ut or reg.ftz or flushed)
    return ResidualBound(A=A, E=E, U=U, gamma=g, U_uniform=n_under * reg.eta if uniform else None)


@dataclass
class GradientBounds:
    """:func:`gradient_bounds`' result: rigorous bounds and their first-order absolute parts."""

    gW: F64
    gb: F64
    U_gW: F64
    U_gb: F64
    gamma: float


def _seed_excess_uniform(most: list[float] | None, reg: Regime, n: int, g: float, colX: F64, gW: F64, gb: F64
                         ) -> tuple[F64, F64] | None:
    """The seed's largest excess (``most``: :func:`seed_excess_most`, in etas, for grad_W's and grad_b's floors) at
    every element, twice over, carried to grad_W and grad_b: ``(x_G, x_b)``, an upper bound of
    :func:`seed_underflow`'s per-element excess (its sums round within ``gamma_n`` of these: the factor 2 covers
    them), where adding it leaves the float64 bounds ``gW`` and ``gb`` as they are; None otherwise (or where ``most``
    is None).

    Then the per-element excess, at most that much, leaves them as they are too (a rounding to nearest is monotone:
    ``fl(x + a) <= fl(x + b)`` for ``0 <= a <= b``), and :func:`gradient_bounds` needs no pass over R for it: it adds
    ``(x_G, x_b)`` to the underflow parts ``U_gW`` and ``U_gb`` alone (an upper bound of what the per-element excess
    adds there, which the expected bounds carry). With mixed-magnitude float32 data half the residuals' bounds exceed
    them, so every association may be subnormal there, but ``eta |X|`` is far below the last bit of bounds of
    ``u |X| |R|``: the per-element evaluation cost 2 ms of a 15 ms check at N*D*K = 10^6 for the same bounds."""
    if most is None:
        return None
    if not any(most):  # no residual's count exceeds the floors (float64 with gradual underflow, the sum): nothing
        return np.zeros(gW.shape), np.zeros(gb.shape)
    with np.errstate(invalid="ignore", over="ignore"):
        x_G = 2 * _eta_times(reg, np.broadcast_to(colX * most[0], gW.shape), n)
        x_b = 2 * _eta_times(reg, np.full(gb.shape, n * most[1]), n)
        if np.array_equal(gW + (1 + g) * x_G, gW) and np.array_equal(gb + (1 + g) * x_b, gb):
            return x_G, x_b
    return None


def _seed_floor_units(aX: F64, aR: F64, E: F64, c: float, reg: Regime, floor: float, colX: F64,
                      Rh: F64 | None = None) -> F64:
    """grad_W's count of the seed's per-element underflow in etas, ``|X|^T F``: ``F = floor`` (``m``, the per-element
    scale's roundings: ``floor |X|^T 1``), except under the mean where a seed ``|2c R|`` lies so far below ``eta``
    that its chain's count in the worst association (:func:`chain_underflow`, each rounding at most ``min(eta, |q|)``:
    :meth:`Regime.rounding_underflow`) is below the floor: that count there (then also no excess over the floor for
    :func:`seed_underflow` to add). A seed of ``2**-160`` (float32, ``R = 2**-149``, N = 4096) rounds to 0 and errs by
    ``2**-160``, not ``2 eta = 2**-149``; carried by ``X = 2**100`` the floor allowed 2048 times the exact grad_W, so
    its sign flipped agreed at 0.00098 of the bound (helper-142).

    ``Rh``: ``aR + E`` where the caller formed it (the same array's values), or None. With ``c > 0`` the test of each
    element, ``(16 c x) S < floor eta`` for ``x = aR + E``, is monotone in ``x`` (each rounding is), so where no
    ``x`` is NaN some element passes it exactly when the least ``x`` does: one pass over ``Rh`` answers the common
    case, no element tiny, without the element-wise test's four passes and arrays (the same answer; else that test).
    Called inside ``np.errstate(invalid="ignore", over="ignore")`` (:func:`gradient_bounds`'): it enters none of its own."""
    if c == 1 or not aR.size:
        return np.asarray(floor * colX)
    n, k = aR.shape
    if Rh is not None and c > 0:
        least = np.min(Rh)
        if not np.isnan(least) and not (8 * 2 * c * least * _SAFETY < floor * reg.eta):
            return np.asarray(floor * colX)
    # every association's count is at most (2**3 - 1) |2c| (|R| + E) (grown): each rounding on R's path errs by at
    # most its value, at most twice the exact partial product per earlier rounding; only those far below the floor
    tiny = np.asarray(8 * 2 * c * (aR + E) * _SAFETY < floor * reg.eta)
    if not tiny.any():
        return np.asarray(floor * colX)
    factors = seed_factors("mean", n, k)
    mag: Any = ((aR[tiny] + E[tiny]) * _SAFETY).astype(np.longdouble)
    low: Any = (np.maximum(aR[tiny] - E[tiny] * _SAFETY, 0.0) * (1 - 2.0**-40)).astype(np.longdouble)
    count = chain_underflow(factors, mag, reg, [low])
    units = np.full(aR.shape, floor)
    units[tiny] = np.minimum(floor, np.where(np.isnan(count), np.inf, _up64(count / np.longdouble(reg.eta))))
    return np.asarray(aX.T @ units)


def _rounded_products(aX: F64, reg: Regime, ut: float) -> Any:
    """The number of products ``X_ij s^_i`` of grad_W's sum over N whose underflow is counted, per column ``j`` of
    ``X`` (a (D, 1) array), or ``N`` for every column (an int).

    With gradual underflow and no TF32 rounding of the inputs, a product of an integer ``X_ij`` and a value ``s^`` of
    the dtype (the computed residual, scaled or not) is an integer multiple of the subnormal spacing: exact wherever
    it lies below the smallest normal number, and a normal number's rounding above it (within ``gamma``); only the
    rows whose ``X_ij`` is not an integer can underflow (Higham 2002, sec. 2.1: ``e = 0`` where the result is
    representable). Integer features (one-hot, counts, signs) counted ``N eta`` that no evaluation could reach: in
    float32's subnormals a gradient of the wrong sign agreed at 0.69 x the bound (helper-189). With flush-to-zero
    (a product below the smallest normal number becomes 0) or TF32 every product counts."""
    n = aX.shape[0]
    if reg.ftz or ut or n == 0:
        return n
    m = np.count_nonzero(aX != np.floor(aX), axis=0)
    return n if bool((m == n).all()) else m[:, None].astype(np.float64)


def gradient_bounds(X: F64, R: F64, rb: ResidualBound, c: float, reg: Regime, ut: float, *,
                    pre: _Prepared | None = None) -> GradientBounds:
    """Rigorous bounds of grad_W = s X^T R and grad_b = s 1^T R (module docstring).

    The seed ``s R``'s underflow is counted by the one rule of both paths: ``m eta`` per element, or where an
    association of its factors may reach the subnormal range the worst one's count (:func:`seed_underflow`,
    :func:`chain_underflow`), carried to each gradient element by ``|X_ij|`` (grad_W) or 1 (grad_b) and ``(1 + gamma)``.

    Args:
        X: the inputs X; R: the exact residual.
        rb: the residual's bound.
        c: the exact scale (1 or 1/(N K)).
        reg: the rounding model; ut: TF32's unit roundoff for the products, or 0.
        pre: :func:`step_bounds`' shared passes over these ``X`` and ``R`` (the same values, fewer passes), or None.
    """
    with np.errstate(invalid="ignore", over="ignore"):
        return _gradient_bounds(X, R, rb, c, reg, ut, pre=pre)


def _gradient_bounds(X: F64, R: F64, rb: ResidualBound, c: float, reg: Regime, ut: float, *,
                    pre: _Prepared | None = None) -> GradientBounds:
    """:func:`gradient_bounds`, called inside ``np.errstate(invalid="ignore", over="ignore")`` (its caller's: it enters none of its own)."""
    n = X.shape[0]
    s = 2.0 * c
    eta, f = reg.eta, 1.0 if reg.ftz else 0.0
    eta_s = 2.0 * reg.scale_underflow(c)
    g = reg.gamma(n + 3)
    pscale = (1.0 + ut) ** 2
    if pre is not None:
        aX, aR = pre.X.abs, pre.R.abs
        Rh, _, _, cols, Rh_finite = pre.residual_terms(rb.E)
        R_finite = pre.R.finite
        colX = pre.X.colsum(1, aX)[:, None]
        sRh, sE = _column_sums(cols[0], Rh), _column_sums(cols[1], rb.E)
        saR = pre.R.colsum(1, aR)
    else:
        aX, aR = np.abs(X), np.abs(R)
    if pre is None:
        Rh = aR + rb.E
        colX = aX.sum(axis=0)[:, None]
        Rh_finite, R_finite = bool(np.isfinite(Rh).all()), bool(np.isfinite(aR).all())
        sRh, sE, saR = Rh.sum(axis=0), rb.E.sum(axis=0), aR.sum(axis=0)
    # the products' and the flushed additions' underflows are scaled by the seed's factors applied after the sum
    # (NumPy's 2c (X^T R): a float32 product of 2**-150 rounds to 0 and 2 doubles the loss; helper-47), the 2 alone
    # under a mean taken first (2 (X^T (R / N)): max(1, |s|) = 1 there let a correct float32 step disagree at 1.67
    # times the bound, helper-138): seed_carry, 2
    grow = _seed_growth("sum" if c == 1 else "mean", n, aR.shape[1])
    # the per-element scale's underflow, times |X_ij|: under a mean (c < 1) twice, 2 fl(c R) (a mean then doubled)
    # doubling it (once let a correct float32 step disagree at 1.40 times the bound, helper-127); with flush-to-zero
    # 2R flushes too
    floors = (2.0 if abs(s) < 2 else 1.0 + f, 2.0 + f)
    n_G = grow * (_rounded_products(aX, reg, ut) + f * (n - 1)) + 1 + _seed_floor_units(aX, aR, rb.E, c, reg,
                                                                                       floors[0], colX, Rh)
    tf_abs: Any = 0.0  # (added to arrays of the gradients' shape: as zeros of colX's shape would be, no array)
    if ut:
        et = _tf32_eta(reg)
        tf_abs = et * (1 + ut) * (colX + (abs(s) + eta_s) * (1 + reg.u) * sRh[None, :]) + n * et**2
    XRh = aX.T @ Rh
    tf = (pscale - 1.0) * abs(s) * XRh + tf_abs
    if reg.ftz or not (Rh_finite and R_finite):
        dX = reg.flushed(X)
        dXRh, dXR = dX.T @ Rh, dX.T @ aR
    else:  # nothing is flushed: zeros times finite magnitudes, +0 everywhere (no product needed)
        dXRh = dXR = np.zeros(XRh.shape, dtype=XRh.dtype)
    gW = (abs(s) * (g * XRh + aX.T @ rb.E + dXRh) + eta_s * (1 + g) * XRh + (1 + g) * (tf + eta * n_G))
    # (grad_b has no products: the seed's 2 after its sum doubles the flushed additions alone; its N etas are the
    # seed's own, counted in any association by the floors below)
    n_b = max(1.0, abs(s)) * n + grow * f * (n - 1) + 1 + (1 + f) * n
    gb = abs(s) * (g * sRh + sE) + eta_s * (1 + g) * sRh + (1 + g) * eta * n_b
    XR = aX.T @ aR
    # |X|^T U and 1^T U: in closed form where U is one value (ResidualBound.U_uniform)
    # (the closed forms broadcast by the sums below, which hold dXR (D, K) and saR (K,): the same values, no array)
    XU = aX.T @ rb.U if rb.U_uniform is None else colX * rb.U_uniform
    sU = rb.U.sum(axis=0) if rb.U_uniform is None else n * rb.U_uniform
    U_gW = abs(s) * (XU + dXR) + eta_s * XR + tf_abs + eta * n_G
    U_gb = abs(s) * sU + eta_s * saR + eta * n_b
    # the seed's chain in its worst association, beyond the etas per element counted above (n_G: m = 2 under the
    # mean, 1 + f under the sum; n_b: 2 + f, its n "products" (grow >= 1: grad_b multiplies nothing) and its 1 + f):
    # only where an association may reach the subnormal range (2 ((R / N) / K) errs by 2 (1 + 1/K) eta, which m = 2
    # missed: 1.08 times the bound, helper-132)
    uniform = _seed_excess_uniform(seed_excess_most(n, aR.shape[1], c, reg, floors), reg, n, g, colX, gW, gb) \
        if Rh_finite and R_finite else None
    if uniform is not None:  # the per-element excess changes no bit of gW and gb: U's upper bound without a pass over R
        U_gW, U_gb = U_gW + uniform[0], U_gb + uniform[1]
    more = seed_underflow(aR, rb.E, c, reg, floors) if uniform is None else None
    if more is not None:
        rows, (units_G, units_b) = more  # the excess over each floor in etas, per element of the rows
        if np.any(units_G > 0):
            one = rows.size == n and units_G.strides == (0, 0)  # one value (one group): |X|^T 1 times it
            x_G = _eta_times(reg, colX * units_G[0, 0] if one else (aX if rows.size == n else aX[rows]).T @ units_G, n)
            gW = gW + (1 + g) * x_G
            U_gW = U_gW + x_G
        if np.any(units_b > 0):
            x_b = _eta_times(reg, units_b.sum(axis=0), n)
            gb = gb + (1 + g) * x_b
            U_gb = U_gb + x_b
    return GradientBounds(gW=gW, gb=gb, U_gW=U_gW, U_gb=U_gb, gamma=g)


def loss_bound(R: F64, rb: ResidualBound, c: float, reg: Regime, *,
               pre: _Prepared | None = None) -> tuple[F64, F64, float]:
    """Rigorous bound of the loss ``c sum R^2``, its first-order absolute part, and ``gamma_{NK+3}``.

    ``pre``: :func:`step_bounds`' shared passes over this ``R`` (the same values, fewer passes), or None."""
    with np.errstate(invalid="ignore", over="ignore"):
        return _loss_bound(R, rb, c, reg, pre=pre)


def _loss_bound(R: F64, rb: ResidualBound, c: float, reg: Regime, *,
               pre: _Prepared | None = None) -> tuple[F64, F64, float]:
    """:func:`loss_bound`, called inside ``np.errstate(invalid="ignore", over="ignore")`` (its caller's: it enters none of its own)."""
    nk = R.size
    g = reg.gamma(nk + 3)
    eta_c = reg.scale_underflow(c)
    f = 1.0 if reg.ftz else 0.0
    n_L = 2 * nk + 1 + f * (nk - 1)
    if pre is not None:
        # Rh**2 and E (2|R| + E) from the compiled pass; |R|**2 is R**2 (the same bits but for a NaN's sign,
        # and a NaN sum is NaN either way)
        aR, R2 = pre.R.abs, pre.R.sq
        assert R2 is not None
        _, Rh2, EL, _, _ = pre.residual_terms(rb.E)
    else:
        aR = np.abs(R)
        Rh = aR + rb.E
        Rh2, EL, R2 = Rh**2, rb.E * (2 * aR + rb.E), aR**2
    sRh2 = Rh2.sum()
    rig = abs(c) * (g * sRh2 + EL.sum()) + eta_c * (1 + g) * sRh2 + (1 + g) * reg.eta * n_L
    # sum U (2 |R| + U), in closed form where U is one value (ResidualBound.U_uniform)
    UR = ((rb.U * (2 * aR + rb.U)).sum() if rb.U_uniform is None
          else rb.U_uniform * (2 * aR.sum() + nk * rb.U_uniform))
    U = abs(c) * UR + eta_c * R2.sum() + reg.eta * n_L
    return np.asarray(rig), np.asarray(U), g


@dataclass(frozen=True)
class LossFloor:
    """The least value a correct evaluation of the loss ``c sum_i r^_i^2`` can give (:func:`loss_floor`): a one-sided
    lower limit where :func:`loss_bound`'s two-sided bound says nothing (its lower side is below 0 once ``gamma_{NK+3}
    >= 1``: float16 ``N K`` above about 1,400, bfloat16 above about 180; a loss of 0 agreed there, helper-171).

    **Derivation** (Higham 2002, §2.2, the model ``fl(x op y) = (x op y)(1 + d) + e``, ``|d| <= u``, and the
    monotonicity of rounding to nearest: ``x <= y`` implies ``fl(x) <= fl(y)``). For a non-negative real ``v``,
    ``fl(v) >= (1 - u) v - tau``: ``(1 - u) v`` where ``v`` is normal, and where it is not, ``fl(v) >= 0 >= (1 - u) v
    - 2**emin`` (flushed) or ``fl(v) >= v - eta`` (gradual underflow); ``tau`` is :attr:`Regime.eta`. So every
    operation of the loss on non-negative values (a square, a scale, an addition of a partial sum and a term in any
    order or tree, blocked, pairwise, an FMA's ``r r + s``, a wider accumulator, a conversion) keeps at least ``(1 - u)``
    of its exact result less ``tau``, and by monotonicity the bound carries through operands that are themselves
    lower limits: with at most ``m - 1`` additions on any path, a square, a conversion from a wider type (each
    operation possibly formed in a wider type and rounded to the dtype: ``u2 = u + u_w (1 + u)``,
    :func:`update_rounding`) and the scale ``c`` (``fl(c) S``, ``S / N / K``, ``c r^2`` per term, a mean of means: two
    roundings, and ``fl(c)``'s own underflow ``eta_c``, :meth:`Regime.scale_underflow`)::

        L^ >= c_lo (1 - u2)^(m + 4) sum_i t_i - tau (8 m + 8),      c_lo = max(c (1 - u2)^2 - eta_c, 0)
        L^ >= c_lo (1 - u2)^4 max_i t_i - 8 tau                     (a sum of non-negative terms is at least each)

    with ``t_i = max(|R_i| - E_i, 0)^2`` a lower limit of the computed residual's square (``|r^_i - R_i| <= E_i``,
    :class:`ResidualBound`), ``m = N K`` and ``8 m + 8`` the underflows of every operation, each formed twice
    (at most ``m`` squares, ``2 m`` per-term scalings, ``m - 1`` additions, two final scalings), carried by factors
    at most 1. The floor is the larger of the two, at least 0 (0 where anything is not finite: no check), evaluated
    in float64 and multiplied down by ``(1 - (m + 8) 2**-51) (1 - 2**-40)`` so that float64's own roundings (each
    upward at most ``2**-53`` relative, ``m + 4`` of them on a path) only lower it.

    Attributes:
        R: the exact residual (N, K) float64, or its magnitudes (held, not copied; :meth:`value` takes ``|R|``).
        E: (N, K) float64, a bound of ``||r^| - |R||``: :attr:`ResidualBound.E`, or a model's (:func:`loss_floor`).
        c: the loss scale (1 or ``1/(N K)``).
        reg: the regime the loss bound was formed in.
        ceiling: an upper limit of :meth:`value` formed without a pass over ``R`` (``(1 - u2)^(m + 4)`` times the exact
            loss, or ``(1 - u2)^4 c max |R|^2`` where larger): a computed loss at or above it is above the floor
            without forming it.
    """

    R: F64
    E: F64
    c: float
    reg: Regime
    ceiling: float

    def value(self) -> float:
        """The floor (the loss's units, float64, >= 0); one pass over ``|R|`` and ``E``."""
        u2 = update_rounding(self.reg.fmt)
        aR = np.abs(self.R)
        m = aR.size
        tau = self.reg.eta
        c_lo = max(self.c * (1 - u2) ** 2 - self.reg.scale_underflow(self.c), 0.0)
        with np.errstate(all="ignore"):
            lo = aR * (1 - 2.0**-50) - self.E * _SAFETY  # (R rounded to float64; E formed in float64: _SAFETY)
            lo = np.where(lo > 0, lo, 0.0)  # (a NaN or a negative difference: 0)
            t = lo * lo
            total = float(t.sum()) if m else 0.0
            top = float(t.max()) if m else 0.0
            if not (math.isfinite(total) and math.isfinite(top) and bool(np.isfinite(aR).all())):
                return 0.0
            grow = math.exp((m + 4) * math.log1p(-u2))
            every = c_lo * grow * total * (1 - (m + 8) * 2.0**-51) - tau * (8 * m + 8) * (1 + 2.0**-40)
            largest = c_lo * (1 - u2) ** 4 * top * (1 - 2.0**-48) - 8 * tau * (1 + 2.0**-40)
        floor = max(every, largest, 0.0) * (1 - 2.0**-40)
        return floor if math.isfinite(floor) else 0.0

    def lower_limit(self, computed: npt.ArrayLike) -> float:
        """The floor where it may decide the grade of ``computed`` (a 0-d loss): :meth:`value` where ``computed`` is
        below :attr:`ceiling`, else 0.0 (no pass formed: ``computed >= ceiling >= value()``; a non-finite
        ``computed`` is graded as before, whatever this returns)."""
        x = float(np.asarray(computed, dtype=np.float64))
        return self.value() if x < self.ceiling else 0.0


def loss_floor(R: F64, E: F64, c: float, reg: Regime, exact_loss: float, *,
               pre: _Prepared | None = None) -> LossFloor:
    """:class:`LossFloor` of the loss ``c sum R^2`` (the inputs of :func:`loss_bound`), formed lazily: only its
    :attr:`LossFloor.ceiling` here (the exact loss, and ``max |R|`` from ``pre``'s pass where at hand), so a small
    check and a correct loss pay no pass over ``R``.

    Args:
        R: the exact residual (N, K) float64 (within ``2**-53`` relative of it: a nearest float64).
        E: (N, K) float64, ``E_i >= ||r^_i| - |R_i||`` for every correct evaluation ``r^``: the linear step's
            :attr:`ResidualBound.E`; a model's residual node bound plus its truth's enclosure radius
            (:func:`harness.models.bounds.model_bounds`); ``inf`` where unknown (that term's floor is 0).
        c: the scale; reg: the regime.
        exact_loss: an upper limit of the exact loss (float64; inf or NaN: the floor is formed when graded, and is 0
            where ``R`` is not finite).
        pre: :func:`step_bounds`' shared passes over this ``R``, or None.
    """
    with np.errstate(all="ignore"):
        return _loss_floor(R, E, c, reg, exact_loss, pre=pre)


def _loss_floor(R: F64, E: F64, c: float, reg: Regime, exact_loss: float, *,
               pre: _Prepared | None = None) -> LossFloor:
    """:func:`loss_floor`, called inside ``np.errstate(all="ignore")`` (its caller's: it enters none of its own)."""
    u2 = update_rounding(reg.fmt)
    m = R.size
    grow = math.exp((m + 4) * math.log1p(-u2))
    every = grow * abs(float(exact_loss)) * (1 + 2.0**-30)
    # the largest term's limit: c max |R|^2 where known, else the exact loss (at least that); a product, not a
    # power: a Python float's ``**2`` raises OverflowError past about 1.3e154 (a float64 step's residual of 2**1010
    # in a check of N D K >= 4,096 graded every correct step ``error``, helper-189), a product is inf there
    top = (c * pre.R.max_abs * pre.R.max_abs if pre is not None else abs(float(exact_loss))) * (1 - u2) ** 4 \
        * (1 + 2.0**-30)
    ceiling = math.inf if every != every or top != top else max(every, top)  # (NaN: always formed)
    return LossFloor(R=pre.R.abs if pre is not None else R, E=E, c=float(c), reg=reg, ceiling=ceiling)


def lower_limits(bounds: Any) -> dict[str, Callable[[npt.ArrayLike], float]]:
    """The one lookup of the quantities that have a lower limit: ``{"loss": limit}`` with ``limit(computed)`` the
    least value a correct evaluation of the loss gives (:meth:`LossFloor.lower_limit`: formed only where ``computed``
    is below its ceiling, else 0.0), where ``bounds`` (a :class:`StepBounds` or a model's
    :class:`harness.models.bounds.ModelBounds`) has a floor; ``{}`` where it has none (an error model's own bounds)."""
    floor = getattr(bounds, "loss_floor", None)
    return {} if floor is None else {"loss": floor.lower_limit}


def rigorous_loss_bound(inputs: Mapping[str, F64], residual: F64, *, reduction: str, fmt: FloatFormat,
                        flush_to_zero: bool = False) -> float:
    """The rigorous bound of the loss alone: ``step_bounds(...).rigorous["loss"]`` without TF32,
    evaluated in float64 without the gradient, update, expected and overflow-mask work
    (the same :func:`residual_bound` and :func:`loss_bound`, times the same safety factor).

    Args:
        inputs: ``X`` (N, D), ``y`` (N, K), ``W`` (D, K), ``b`` (K,) as float64.
        residual: the exact residual (N, K) as float64 (or an upper bound of its magnitude).
        reduction: ``"sum"`` or ``"mean"``; fmt: the dtype; flush_to_zero: as :func:`step_bounds`.

    Returns:
        the bound (absolute, the loss's units); ``inf`` where it is vacuous or its float64
        evaluation overflowed (:func:`step_bounds` re-evaluates those in extended precision:
        callers that need a finite bound there call it).
    """
    X, Y, W, b = (np.asarray(inputs[k], dtype=np.float64) for k in ("X", "y", "W", "b"))
    reg = Regime(fmt, bool(flush_to_zero or flush_to_zero_default(fmt)))
    n, k = Y.shape
    c = 1.0 if reduction == "sum" else 1.0 / (n * k)
    rb = residual_bound(X, W, b, Y, reg, 0.0)
    rig, _, _ = loss_bound(np.asarray(residual, dtype=np.float64), rb, c, reg)
    with np.errstate(invalid="ignore", over="ignore"):
        v = float(rig) * _SAFETY
    return v if math.isfinite(v) else math.inf


def learning_rates(lr: float, lr_held: float | None, reg: Regime) -> list[float]:
    """The learning rates ``lr'`` a correct implementation may multiply by: the dtype's
    ``lr`` (the oracle's), the Python float ``lr_held``, for float16 and bfloat16 it
    rounded to float32 (PyTorch's opmath for half-precision tensors; in float32 that is
    the dtype's ``lr``, and a float32 ``lr`` in a float64 step is a bug, not a rounding),
    and 0 where one of them is subnormal and flushed to zero."""
    cands = [lr]
    if lr_held is not None:
        cands.append(float(lr_held))
        if reg.fmt.precision < FLOAT32.precision:
            cands.append(float(round_to_format(np.array([float(lr_held)]), FLOAT32)[0]))
    if reg.ftz and any(0 < abs(x) < reg.fmt.min_normal for x in cands):
        cands.append(0.0)
    return cands


def learning_rate_spread(lr: float, lr_held: float | None, reg: Regime) -> float:
    """``dlr = max |lr' - lr|`` over :func:`learning_rates`."""
    return max(abs(x - lr) for x in learning_rates(lr, lr_held, reg))


def wider_roundoff(fmt: FloatFormat) -> float:
    """The unit roundoff ``u_w`` of the wider type an update's operation may be formed in before its rounding to
    ``fmt``: ``2**-24`` below float32's precision (PyTorch's float32 opmath for float16 and bfloat16), ``2**-53``
    for float32 (a float64 evaluation), ``2**-64`` for float64 (an x87 extended or ``np.longdouble`` evaluation,
    64 significant bits: a float64 step formed there and rounded back errs by up to ``u 2**e + 2**-64 |z|``, the
    classic double rounding, Goldberg 1991, "What every computer scientist should know about floating-point
    arithmetic", and a correct one was disagree at 1.0003 of the binade rule's bound without it; helper-139), 0 above.
    """
    p = fmt.precision
    return 2.0**-24 if p < 24 else 2.0**-53 if p < 53 else 2.0**-64 if p < 64 else 0.0


def update_rounding(fmt: FloatFormat) -> float:
    """The relative error of one rounding in the update, ``u + u_w (1 + u)``: the product
    ``lr * g`` and the difference ``W - p`` may be formed in a wider type and then rounded to
    the dtype: ``|fl(fl_w(x)) - x| <= (u + u_w (1 + u)) |x|`` with ``u_w`` that type's unit roundoff
    (:func:`wider_roundoff`; Higham 2002, §2.1, each rounding the standard model)."""
    u = fmt.unit_roundoff
    return u + wider_roundoff(fmt) * (1 + u)


def update_bound(new_abs: F64, g_abs: F64, E_g: F64, lr: float, dlr: float, u2: float, eta: Any,
                 eta2: Any = None, fmt: FloatFormat | None = None) -> F64:
    """Rigorous bound of ``W' = W - lr g`` computed as ``fl(W - fl(lr' g^))``.

    Args:
        new_abs: ``|W'|`` exact; g_abs: ``|g|`` exact; E_g: the bound of ``|g^ - g|``.
        lr: the learning rate the oracle used; dlr: ``max |lr' - lr|``
            (:func:`learning_rate_spread`).
        u2: the relative error of one rounding step (:func:`update_rounding`).
        eta, eta2: the absolute errors ``e1`` of the product and ``e2`` of the difference (one value, or per
            element: :func:`update_underflow`); ``eta2`` None: ``eta`` for both.
        fmt: the dtype the difference is rounded to: its rounding is then bounded by half the spacing of the
            binade of ``|W - p^|`` (:func:`nearest_rounding_bound`), not ``u2 |W - p^|``; None (the finite
            differences, whose ``u2`` is their own): the standard model.

    Derivation: ``p^ = lr' g^ (1 + d1) + e1``, so ``p^ - lr g = (lr' - lr) g^ (1 + d1)
    + lr (g^ - g)(1 + d1) + lr g d1 + e1``, at most
    ``P = (1 + u2)((lr + dlr) E_g + dlr |g|) + u2 lr |g| + e1``; then
    ``W'^ = (W - p^)(1 + d2) + e2`` with ``|W - p^| <= |W'| + P``:
    ``|W'^ - W'| <= u2 |W'| + (1 + u2) P + e2``. With ``fmt``, the difference's rounding is at most
    :func:`nearest_rounding_bound` of ``|W'| + P`` (never more than ``u2 (|W'| + P)``): ``u2 |W'|`` overstated it by
    up to twice near the top of a binade, where that rounding dominates the bound, and a float32 W 1.6 ULPs off
    (a weight decay of 1e-5 left in a plain SGD step) agreed at 0.99 of the bound (helper-136).
    """
    with np.errstate(invalid="ignore", over="ignore"):
        return _update_bound(new_abs, g_abs, E_g, lr, dlr, u2, eta, eta2, fmt)


def _update_bound(new_abs: F64, g_abs: F64, E_g: F64, lr: float, dlr: float, u2: float, eta: Any,
                  eta2: Any = None, fmt: FloatFormat | None = None) -> F64:
    """:func:`update_bound`, called inside ``np.errstate(invalid="ignore", over="ignore")``."""
    P = _product_error(g_abs, E_g, lr, dlr, u2, eta)
    e2 = eta if eta2 is None else eta2
    if fmt is None:
        return u2 * new_abs + (1 + u2) * P + e2
    return _nearest_rounding_bound(new_abs + P, fmt) + P + e2


def _update_bounds_of_both(parts_W: tuple[F64, F64, F64, Any, Any], parts_b: tuple[F64, F64, F64, Any, Any],
                           lr: float, dlr: float, u2: float, fmt: FloatFormat) -> tuple[F64, F64]:
    """``(_update_bound(*parts_W, ...), _update_bound(*parts_b, ...))`` (``parts``: ``new_abs``, ``g_abs``, ``E_g``,
    ``eta``, ``eta2``), called inside ``np.errstate(invalid="ignore", over="ignore")``: one call on the two joined
    (each array flattened, then split and reshaped) where every array is float64 and of its own quantity's one shape
    and both quantities' ``eta`` and ``eta2`` are the same Python floats (gradual underflow); its operations are
    element-wise, so each element is the same as from its own call. Else the two calls."""
    newW, gW, EW, e1W, e2W = parts_W
    newb, gb, Eb, e1b, e2b = parts_b
    if (type(e1W) is float and type(e2W) is float and e1W == e1b and e2W == e2b and type(e1b) is float
            and type(e2b) is float
            and all(isinstance(a, np.ndarray) and a.dtype == np.float64 and a.shape == newW.shape for a in (newW, gW, EW))
            and all(isinstance(a, np.ndarray) and a.dtype == np.float64 and a.shape == newb.shape for a in (newb, gb, Eb))):
        m = newW.size
        both = _update_bound(np.concatenate((newW, newb), axis=None), np.concatenate((gW, gb), axis=None),
                             np.concatenate((EW, Eb), axis=None), lr, dlr, u2, e1W, e2W, fmt=fmt)
        return both[:m].reshape(newW.shape), both[m:].reshape(newb.shape)
    return (_update_bound(newW, gW, EW, lr, dlr, u2, e1W, e2W, fmt=fmt),
            _update_bound(newb, gb, Eb, lr, dlr, u2, e1b, e2b, fmt=fmt))


def nearest_rounding_bound(z_abs: F64, fmt: FloatFormat) -> F64:
    """A bound on ``|fl(z) - z|`` for every ``|z| <= z_abs``, the rounding to ``fmt`` perhaps after one to the wider
    type (:func:`wider_roundoff`, ``u_w``), the underflow part (``eta``) not included.

    Rounding to nearest errs by at most half the spacing of ``z``'s binade, ``u 2**floor(log2 |z|)`` (a ``z`` that
    rounds up to the next power of two is within half the spacing below it), which is monotonic in ``|z|``; a first
    rounding to the wider type moves ``z`` by at most ``u_w |z|`` and can lift it into the next binade:
    ``|fl(fl_w(z)) - z| <= u 2**floor(log2 (z_abs (1 + u_w))) + u_w z_abs``, at most ``u2 z_abs``
    (:func:`update_rounding`, the standard model). Below the smallest normal number the half spacing is the
    subnormals' ``eta``, which the callers add. Not finite ``z_abs``: ``u2 z_abs`` (inf or NaN, as before).
    """
    with np.errstate(invalid="ignore", over="ignore"):
        return _nearest_rounding_bound(z_abs, fmt)


@functools.lru_cache(maxsize=64, typed=True)
def _typed(dtype: np.dtype[Any], value: float) -> Any:
    """``np.result_type(dtype, value).type(value)``: the Python float ``value`` as the NumPy scalar type an array of
    ``dtype`` times it has (an immutable scalar, kept per dtype and value: the dtype's unit roundoff). Typed: a
    NumPy float equal to a Python float hashes alike but promotes otherwise (``float16`` with ``np.float64(u)`` is
    float64, with ``u`` float16), so each type of ``value`` is kept apart."""
    return np.result_type(dtype, value).type(value)


def _nearest_rounding_bound(z_abs: F64, fmt: FloatFormat) -> F64:
    """:func:`nearest_rounding_bound`, called inside ``np.errstate(invalid="ignore", over="ignore")``."""
    z = np.asarray(z_abs)
    u = fmt.unit_roundoff
    u_w = wider_roundoff(fmt)
    zw = z * (1 + u_w) if u_w else z
    finite = np.isfinite(zw)
    if finite.all():  # (the same values as below, without the selections that every element passes)
        _, ex = np.frexp(zw)
        # (u in the type of ``ones_like(zw) * u`` below: an integer zw, where u_w = 0, gives float64, not 0)
        return np.asarray(np.where(zw > 0, np.ldexp(_typed(zw.dtype, u), ex - 1), 0) + u_w * z)
    _, ex = np.frexp(np.where(finite, zw, 0))  # zw = m 2**ex, 1/2 <= m < 1: 2**floor(log2 zw) = 2**(ex - 1)
    one = np.ones_like(zw)
    half = np.where(finite & (zw > 0), np.ldexp(one * u, ex - 1), 0)
    return np.where(finite, half + u_w * z, update_rounding(fmt) * z)


def _product_error(g_abs: F64, E_g: F64, lr: float, dlr: float, u2: float, e1: Any) -> Any:
    """``P``, the bound of ``|p^ - lr g|`` for the update's product ``p^ = fl(lr' g^)`` (:func:`update_bound`).

    A term whose factor ``lr + dlr``, ``dlr`` or ``u2 lr`` is 0 is 0 (the product is exact there), not ``0 * inf``: an
    exact gradient beyond float64 (``|g| = inf`` as a float64) with ``dlr = 0`` (a learning rate held exactly) made
    the bound NaN, and the finite differences' error model, which takes it as it is, an error record for the case
    (helper-163: X * 2**500, y * 2**520, lr = 1e-300, N = 128)."""
    lr = abs(lr)
    return (1 + u2) * (_times(lr + dlr, E_g) + _times(dlr, g_abs)) + _times(u2 * lr, g_abs) + e1


def _times(c: float, a: Any) -> Any:
    """``c * a``, but 0.0 where ``c`` is 0 (a term of :func:`_product_error` that is exactly 0, whatever ``a``)."""
    return c * a if c else 0.0


def update_underflow(reg: Regime, old_abs: F64, new_abs: F64, g_abs: F64, E_g: F64, lr: float, dlr: float,
                     u2: float) -> tuple[Any, Any]:
    """The absolute parts ``(e1, e2)`` of the errors of the update's product ``p^ = fl(lr' g^)`` and difference
    ``fl(W - p^)`` (:func:`update_bound`), per element (arrays of ``W``'s shape, or one value).

    Gradual underflow: ``eta``, half the subnormal spacing, each. Flush-to-zero (``reg.ftz``): an operation errs by
    up to the smallest normal number ``mn`` only where one of its values can lie below ``mn`` (a subnormal input
    read as 0, a result below ``mn`` written as 0); elsewhere every value is normal and flushing changes nothing
    (Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed., sec. 2.1): the product where ``g^`` may be
    subnormal (``|g| - E_g < mn``; a flushed ``g^`` loses ``lr' |g^| <= max(1, lr + dlr) mn``) or the product
    itself may be (its least magnitude ``(lr - dlr)(|g| - E_g)(1 - u2) < 2 mn``); the difference where ``W`` is
    subnormal (``|W| < mn``) or the difference may be (``|W'| - P < 2 mn``, ``P`` the product's error bound:
    ``|W - p^| >= |W'| - P``); a flushed ``g^`` or product loses at most ``(lr + dlr)(|g| + E_g)(1 + u2)`` too. Half
    the subnormal spacing stays as a floor. :func:`step_bounds` passes flush-to-zero only where the step declares it
    (the update is element-wise); a flush allowed everywhere added ``2 mn`` to every element: in float16 ``2**-13``,
    about 9 ULPs of a weight near 0.02, and a learning rate 1.3 times too large agreed.

    Args:
        old_abs: ``|W|`` before the step; new_abs: ``|W'|`` exact; g_abs: ``|g|`` exact; E_g: the bound of
            ``|g^ - g|``; lr, dlr, u2: as :func:`update_bound`.
    """
    if not reg.ftz:
        return reg.eta, reg.eta
    mn = reg.fmt.min_normal
    floor = reg.fmt.underflow_quantum
    lr_max = abs(lr) + dlr
    with np.errstate(invalid="ignore", over="ignore"):
        subnormal_g = g_abs - E_g < mn
        small_p = (abs(lr) - dlr) * (g_abs - E_g) * (1 - u2) < 2 * mn  # the least |p^| (lr' may be lr - dlr)
        # a flushed g^ loses lr' |g^|, a flushed product |p^|: both at most max(1, lr_max) mn and lr_max (|g| + E_g)(1 + u2)
        lost = np.minimum(mn * max(1.0, lr_max), lr_max * (g_abs + E_g) * (1 + u2))
        e1 = np.where(subnormal_g | small_p, lost + floor, floor)
        P = _product_error(g_abs, E_g, lr, dlr, u2, e1)
        e2 = np.where((old_abs < mn) | (new_abs - P < 2 * mn), mn, floor)
    return e1, e2


#: Form the expected bounds' partial sums with the compiled kernels of :mod:`harness.partialsums` (float64);
#: False: the NumPy path (always used for the extended-precision re-evaluation).
USE_KERNELS = True
#: ... from this many terms (N*D*K) on: below, the NumPy path is as fast and needs no numba import (about 1.5 s,
#: once per process, which a run of small cases would pay for nothing).
KERNEL_MIN_WORK = 4096


def _kernel_partial_sums(X: F64, Y: F64, W: F64, b: F64, R: F64, wt: float) -> tuple[F64, F64, F64, F64]:
    """``V_R`` (N, K), the order model of ``X^T R``'s partial sums and its sum of squared terms (D, K), and
    the order model of ``1^T R``'s (K,), from :mod:`harness.partialsums` (the same models as the NumPy path)."""
    from .partialsums import product_partial_sums, residual_partial_sums

    d = X.shape[1]
    c64 = (np.ascontiguousarray(a, dtype=np.float64) for a in (X, W, b, Y, R))
    X, W, b, Y, R = c64
    fwd, rev, tot, sumP2 = residual_partial_sums(X, W, b, Y)
    V_R = sumP2 * (1 + 2 * wt) + order_model(fwd, rev, tot, sumP2 + b[None, :] ** 2 + Y**2, d + 2)
    fwd, rev, tot, sumT2 = product_partial_sums(X, R)
    V_gW_pss = order_model(fwd, rev, tot, sumT2, X.shape[0])
    sumR2 = np.sum(R**2, axis=0)
    fwd, rev, tot, _ = product_partial_sums(np.ones((X.shape[0], 1)), R)
    V_gb_pss = order_model(fwd[0], rev[0], tot[0], sumR2, X.shape[0])
    return V_R, V_gW_pss, sumT2, V_gb_pss


def _prepared_partial_sums(X: F64, Y: F64, W: F64, b: F64, R: F64, wt: float, pre: _Prepared,
                           ) -> tuple[F64, F64, F64, F64, F64, F64, F64]:
    """:func:`_kernel_partial_sums` with ``V_R`` formed in one compiled pass (``partialsums.residual_variance_fused``:
    the same expression, :func:`order_model` element-wise, from the partial sums as they are formed), ``X^T R``'s and
    ``1^T R``'s partial sums in one (``partialsums.product_partial_sums_and_ones``) and ``sum R**2`` over the rows
    from ``pre``.

    Returns:
        ``(V_R, V_gW_pss, sumT2, V_gb_pss, R**2 * V_R, V_R**2, V_R.sum(axis=0))``: ``(N, K)``, ``(D, K)``,
        ``(D, K)``, ``(K,)``, ``(N, K)``, ``(N, K)``, ``(K,)``, float64 (the last from the kernel for ``K >= 2``).
    """
    from .partialsums import product_partial_sums_and_ones, residual_variance_fused

    n, d = X.shape
    X, W, b, Y, R = (np.ascontiguousarray(a, dtype=np.float64) for a in (X, W, b, Y, R))
    R2 = pre.R.sq
    assert R2 is not None
    V_R, RV, VR2 = np.empty(Y.shape), np.empty(Y.shape), np.empty(Y.shape)
    cols = np.empty((1, Y.shape[1]))
    sum_k2, sum_kvar = _order_sums(d + 2)
    residual_variance_fused(X, W, b, Y, R2, 1 + 2 * wt, d + 2, sum_k2, sum_kvar, V_R, RV, VR2, cols)
    sumVR = _column_sums(cols[0], V_R)
    fwd, rev, tot, sumT2, fwd1, rev1, tot1 = product_partial_sums_and_ones(X, R)
    V_gW_pss = order_model(fwd, rev, tot, sumT2, n)
    sumR2 = pre.R.colsum(2, R2)
    V_gb_pss = order_model(fwd1, rev1, tot1, sumR2, n)
    return V_R, V_gW_pss, sumT2, V_gb_pss, RV, VR2, sumVR


def _numpy_partial_sums(X: F64, Y: F64, W: F64, b: F64, R: F64, wt: float,
                        loss_row: tuple[F64, Any] | None = None) -> tuple[F64, F64, F64, F64, Any]:
    """:func:`_kernel_partial_sums` in NumPy, in the arrays' own type (float64 or longdouble), and the loss's
    ``partial_sum_squares(sq[None, :], axis=1, sum_sq=[sum_sq2])[0]`` of ``loss_row = (sq, sum_sq2)`` (``R**2``
    flattened and its sum of squares; :func:`expected_bounds`) where ``K = 1`` (else None: the caller forms it).
    The reductions over N rows (grad_W's ``D K``, grad_b's ``K`` and, where ``K = 1``, the loss's) are the rows of one
    C-contiguous array and one :func:`partial_sum_squares` call where each call alone would read C-contiguous rows
    (X^T R's terms where NumPy laid their product out so) and they are small: its every step is row by row (a row's
    running sums, einsum's sum of a contiguous row's squares, the same whatever the rows around it, :func:`order_model`
    element-wise), so each row's model is its own call's, bit for bit (a non-contiguous row is summed in another
    order by einsum: those are not joined; nor are rows of more than :data:`_EINSUM_ROW_MAX` terms, which einsum
    sums in chunks laid across the rows: another grouping than the row's own call, helper-196)."""
    n, k = Y.shape
    d = X.shape[1]
    safe = _squares_safe(X, W, R)
    if d + 2 <= _PLANE_LOOP_MAX:
        # few terms per element of R: partial sums plane by plane over (N, K) arrays, no (N, K, D + 2) array
        def plane(j: int) -> F64:
            if j < d:
                return X[:, j, None] * W[j][None, :]
            if j == d:  # (the sums broadcast b's row; a full (N, K) plane only where it is the first)
                return b[None, :] if d else np.broadcast_to(b[None, :], (n, k))
            return -Y
        sumP2 = X**2 @ W**2 if safe else sum((plane(j) ** 2 for j in range(d)), np.zeros((n, k), dtype=X.dtype))
        pss_R = partial_sum_squares_planes(plane, d + 2, sum_sq=sumP2 + b[None, :] ** 2 + Y**2)
    else:
        # terms of R, reduced along the last (contiguous) axis: X_ij W_jk (j < D), b_k, -Y_ik: (N, K, D + 2)
        terms_R = np.empty((n, k, d + 2), dtype=X.dtype)
        np.multiply(X[:, None, :], W.T[None, :, :], out=terms_R[:, :, :d])
        terms_R[:, :, d] = b[None, :]
        np.negative(Y, out=terms_R[:, :, d + 1])
        # sum_j (X_ij W_jk)^2 = (X^2 W^2)_ik: a matrix product when the squares cannot under/overflow
        sumP2 = X**2 @ W**2 if safe else np.sum(np.square(terms_R[:, :, :d]), axis=2)
        pss_R = partial_sum_squares(terms_R, axis=2, sum_sq=sumP2 + b[None, :] ** 2 + Y**2)
        del terms_R
    V_R = sumP2 * (1 + 2 * wt) + pss_R  # (N, K)
    T = X.T[:, None, :] * R.T[None, :, :]  # (D, K, N) terms of X^T R, reduced along the last axis
    sumT2 = (X**2).T @ R**2 if safe else np.sum(np.square(T), axis=2)
    with_loss = loss_row is not None and k == 1
    dk = d * k if T.flags.c_contiguous else 0  # X^T R's rows joined where its own call reads C-contiguous rows
    m = dk + k + (1 if with_loss else 0)
    if n >= 1 and (dk or with_loss) and m * n <= _PSS_BLOCK and n <= _EINSUM_ROW_MAX:
        # the rows of X^T R's terms (T's, where NumPy laid the product out C-contiguous), of 1^T R's (R^T's, contiguous
        # as np.ascontiguousarray makes them) and, where K = 1, the loss's (N terms too), as the rows of one
        # C-contiguous array and one call (docstring)
        rows = np.empty((m, n), dtype=T.dtype)
        if dk:
            rows[:dk] = T.reshape(dk, n)
        rows[dk:dk + k] = R.T
        sums = [sumT2.reshape(-1)[:dk], (R**2).sum(axis=0)]  # (T's rows in C order: sumT2's elements in C order)
        if with_loss:
            assert loss_row is not None
            rows[m - 1] = loss_row[0]
            sums.append(np.reshape(loss_row[1], (1,)))
        every = partial_sum_squares(rows, axis=1, sum_sq=np.concatenate(sums))
        V_gW_pss = every[:dk].reshape(d, k) if dk else partial_sum_squares(T, axis=2, sum_sq=sumT2)
        return V_R, V_gW_pss, sumT2, every[dk:dk + k], every[m - 1] if with_loss else None
    V_gW_pss = partial_sum_squares(T, axis=2, sum_sq=sumT2)
    del T
    V_gb_pss = partial_sum_squares(np.ascontiguousarray(R.T), axis=1, sum_sq=(R**2).sum(axis=0))
    return V_R, V_gW_pss, sumT2, V_gb_pss, None


def expected_bounds(
    X: F64, Y: F64, W: F64, b: F64, R: F64, exact: Mapping[str, F64], c: float, lr: float, dlr: float,
    reg: Regime, ut: float, rb: ResidualBound, gb: GradientBounds, U_L: F64, *, pre: _Prepared | None = None,
    update_eta: tuple[Any, Any] | None = None, shapes_checked: bool = False,
) -> dict[str, F64]:
    """Probabilistic bounds (module docstring), before capping by the rigorous ones.

    ``pre``: :func:`step_bounds`' shared passes over these ``X`` and ``R`` (the same values, fewer passes), or None.
    ``update_eta``: the updates' absolute errors ``e1 + e2`` of ``W`` and of ``b`` (:func:`update_underflow`), or
    None for ``2 eta`` everywhere.

    Raises:
        ValueError: when the shapes of ``X``, ``Y``, ``W``, ``b`` (``(K,)``) and ``R`` do not agree
            (:func:`harness.shapes.check_step_shapes`: the compiled partial sums would read past an array's end);
            not checked again with ``shapes_checked`` (:func:`step_bounds`, which checked these very arrays' shapes)."""
    with np.errstate(invalid="ignore", over="ignore"):
        return _expected_bounds(X, Y, W, b, R, exact, c, lr, dlr, reg, ut, rb, gb, U_L, pre=pre, update_eta=update_eta, shapes_checked=shapes_checked)


def _expected_bounds(
    X: F64, Y: F64, W: F64, b: F64, R: F64, exact: Mapping[str, F64], c: float, lr: float, dlr: float,
    reg: Regime, ut: float, rb: ResidualBound, gb: GradientBounds, U_L: F64, *, pre: _Prepared | None = None,
    update_eta: tuple[Any, Any] | None = None, shapes_checked: bool = False,
) -> dict[str, F64]:
    """:func:`expected_bounds`, called inside ``np.errstate(invalid="ignore", over="ignore")`` (its caller's: it enters none of its own)."""
    if not shapes_checked:
        check_step_shapes(X, Y, W, b, R)
    if np.ndim(b) != 1:
        raise ValueError(f"b has shape {np.shape(b)}: expected (K,)")
    u = reg.u
    s = 2.0 * c
    n, k = Y.shape
    # a NumPy scalar of lr's own type (float64, or longdouble in the rescue): a Python float's
    # ``lr**2`` raises OverflowError above about 1.3e154, a NumPy one becomes inf (under errstate
    # below), so the bound is infinite and the extended-precision rescue or out_of_range takes over
    lr_abs: Any = np.abs(np.asarray(lr))[()]
    lr = lr_abs
    wt = (ut / u) ** 2 if u > 0 else 0.0  # TF32 input roundings, relative to u
    if pre is not None:
        X2T, R2 = pre.X.sq.T if pre.X.sq is not None else np.abs(X).T ** 2, pre.R.sq
        assert R2 is not None
    else:
        X2T, R2 = np.abs(X).T ** 2, R**2
    lam = LAMBDA * u
    # the part of the residual's rounding errors that rows share (harness.sharedrounding): each family of
    # shared terms by its worst case or its group model, added to the independent model's bound (first: |X| is
    # still in the cache from gradient_bounds' products, which the shared terms' product with it reads again)
    x_pairs = sample_pairs(X)  # X's sample screened once, for both models
    shared = shared_residual_errors(X, W, b, Y, rb.A, u, ut, lam=LAMBDA, compiled=USE_KERNELS, x_pairs=x_pairs)
    # (0.0, added to arrays of grad_W's and grad_b's shapes below: as zeros of those shapes would be, no array)
    sh_gW: Any = 0.0
    sh_gb: Any = 0.0
    sh_L: Any = 0.0
    if shared.det is not None:
        aX = pre.X.abs if pre is not None else np.abs(X)
        sh_gW = sh_gW + aX.T @ shared.det
        sh_gb = sh_gb + _row_sum(shared.det)
        sh_L = sh_L + 2 * ((pre.R.abs if pre is not None else np.abs(R)) * shared.det).sum()
    if shared.var is not None:
        sh_gW = sh_gW + LAMBDA * np.sqrt(X2T @ shared.var)
        sh_gb = sh_gb + LAMBDA * np.sqrt(_row_sum(shared.var))
        sh_L = sh_L + 2 * LAMBDA * np.sqrt((R2 * shared.var).sum())
    sq = R2.ravel()
    sum_sq2 = (sq**2).sum()  # pairwise, as partial_sum_squares' own sum over the (1, N K) row would be
    pss_L: Any = None  # the loss's partial sums' model (below, or with grad_b's on the NumPy path)
    if pre is not None:  # compiled, with the shared passes: |X|**2, R**2 and their sums formed once
        V_R, V_gW_pss, sumT2, V_gb_pss, RV, VR2, sumVR = _prepared_partial_sums(X, Y, W, b, R, wt, pre)
        sumR, sumR2 = pre.R.colsum(0, R), pre.R.colsum(2, R2)
    else:
        if USE_KERNELS and X.dtype == np.float64 and X.shape[0] * W.size >= KERNEL_MIN_WORK:  # compiled, two passes
            V_R, V_gW_pss, sumT2, V_gb_pss = _kernel_partial_sums(X, Y, W, b, R, wt)
        else:
            V_R, V_gW_pss, sumT2, V_gb_pss, pss_L = _numpy_partial_sums(X, Y, W, b, R, wt, loss_row=(sq, sum_sq2))
        sumR, sumR2 = R.sum(axis=0), R2.sum(axis=0)
        RV, VR2, sumVR = R2 * V_R, V_R**2, V_R.sum(axis=0)
    sumT = X.T @ R
    V_gW = X2T @ V_R + (2 + 2 * wt) * sumT2 + sumT**2 + V_gW_pss
    V_gb = sumVR + sumR2 + sumR**2 + V_gb_pss
    if pss_L is None:  # (K = 1 on the NumPy path: formed with grad_b's, above)
        pss_L = partial_sum_squares(sq[None, :], axis=1, sum_sq=np.reshape(sum_sq2, (1,)))[0]
    V_L = 4 * RV.sum() + sum_sq2 + 2 * sq.sum() ** 2 + pss_L
    # reductions whose terms repeat (harness.repeatedsums): their partial sums' errors at their worst case
    rep = repeated_reductions(X, R, reg.fmt, LAMBDA, ExactContext(W, b, Y, rb.A, float(c), reg.ftz, ut > 0),
                              x_pairs=x_pairs)
    if rep.grad_W is not None:
        sh_gW = sh_gW + worst_case_part(rep.grad_W, V_gW_pss, n, u)
    if rep.grad_b is not None:
        sh_gb = sh_gb + worst_case_part(rep.grad_b, V_gb_pss, n, u)
    if rep.loss:
        sh_L = sh_L + worst_case_part(True, pss_L, n * k, u)
    elif rep.loss_bias:  # distinct squares whose residues share a sign: their measured systematic error
        sh_L = sh_L + rep.loss_bias
    exp_gW, exp_gb = _of_both(lambda V, sh, U: lam * abs(s) * np.sqrt(V) + abs(s) * sh + U,
                              (V_gW, sh_gW, gb.U_gW), (V_gb, sh_gb, gb.U_gb))
    # second order: the loss squares the residual, so its error has the term
    # sum dR^2 (>= 0, it does not cancel and grows like N K). Its mean is at most
    # u^2 sum V_R; each term lies in [0, lambda^2 u^2 V_R], so by Hoeffding the sum
    # exceeds the mean by more than lambda^3 u^2 sqrt(sum V_R^2 / 2) with probability
    # below exp(-lambda^2); never more than lambda^2 u^2 sum V_R. It dominates when
    # the residual is far smaller than its rounding errors (near-zero residuals)
    sum_VR = V_R.sum()
    second_L = u**2 * min(sum_VR + LAMBDA**3 * np.sqrt(VR2.sum() / 2), LAMBDA**2 * sum_VR)
    exp_L = lam * abs(c) * np.sqrt(V_L) + abs(c) * (second_L + sh_L) + U_L
    gW, gbv = exact["grad_W"], exact["grad_b"]
    eta_W, eta_b = update_eta if update_eta is not None else (2 * reg.eta, 2 * reg.eta)
    exp_W, exp_b = _of_both(lambda V, g, new, U, sh, eta: (lam * np.sqrt(lr**2 * s**2 * V + 2 * (lr * g) ** 2 + new**2)
                                                           + (lr + dlr) * (U + abs(s) * sh) + dlr * np.abs(g) + eta),
                            (V_gW, gW, exact["W"], gb.U_gW, sh_gW, eta_W), (V_gb, gbv, exact["b"], gb.U_gb, sh_gb, eta_b))
    return {"loss": np.asarray(exp_L), "grad_W": exp_gW, "grad_b": exp_gb, "W": exp_W, "b": exp_b}


def _of_both(f: Callable[..., Any], parts_W: tuple[Any, ...], parts_b: tuple[Any, ...]) -> tuple[Any, Any]:
    """``(f(*parts_W), f(*parts_b))`` for an element-wise ``f`` (NumPy's operations on arrays and scalars), by one
    call on the two joined where they join: each part an array in both (W's parts of one shape, b's of another, each
    part of one dtype in both; flattened, concatenated, and the result split and reshaped) or the same scalar (a value
    equal in both, of one type), at least one an array. Every element is then formed by the same operations on the
    same values as in its own call: the same bits (as :func:`_update_bounds_of_both`). Else the two calls."""
    shape_W = shape_b = None
    joined: list[Any] = []
    for a, b in zip(parts_W, parts_b, strict=True):
        if type(a) is np.ndarray and type(b) is np.ndarray and a.dtype == b.dtype:
            if shape_W is None:
                shape_W, shape_b = a.shape, b.shape
            if a.shape != shape_W or b.shape != shape_b:
                return f(*parts_W), f(*parts_b)
            joined.append(np.concatenate((a, b), axis=None))
        elif not isinstance(a, np.ndarray) and type(a) is type(b) and a == b:  # (NaN: not equal, two calls)
            joined.append(a)
        else:
            return f(*parts_W), f(*parts_b)
    if shape_W is None or shape_b is None:
        return f(*parts_W), f(*parts_b)
    both = f(*joined)
    m = math.prod(shape_W)
    return both[:m].reshape(shape_W), both[m:].reshape(shape_b)


def _nanmax(*values: float) -> float:
    """The largest of ``values``, NaN if any is NaN (Python's ``max`` can hide a NaN)."""
    for v in values:  # (a loop, not a generator: called seven times a check)
        if math.isnan(v):
            return math.nan
    return max(values)


def _max_abs(a: F64) -> float:
    """``max |a|`` as a Python float; NaN if ``a`` holds a NaN (``ndarray.max`` propagates it)."""
    a = np.asarray(a)
    return float(np.abs(a).max()) if a.size else 0.0


def _max_abs_each(*arrays: F64) -> list[float]:
    """``[_max_abs(a) for a in arrays]``, from one pass over their elements together (segment maxima of ``|a|``,
    which propagate a NaN as ``ndarray.max`` does); each array alone where one is empty or not float64."""
    parts = [np.asarray(a) for a in arrays]
    if not parts or any(a.size == 0 or a.dtype != np.float64 for a in parts):
        return [_max_abs(a) for a in parts]
    starts = list(itertools.accumulate((a.size for a in parts[:-1]), initial=0))
    return np.maximum.reduceat(np.abs(np.concatenate(parts, axis=None)), starts).tolist()


#: Skip :func:`overflow_masks`' products where :func:`_far_from_overflow` proves every mask False
#: (False: always compute them; tests compare the two).
OVERFLOW_FAST_PATH = True
#: The factor by which :func:`_far_from_overflow`'s magnitudes must stay below the largest finite value:
#: far more than the relative rounding errors (below ``(N + D) 2**-52``) of evaluating them or :func:`overflow_masks`' sums.
_OVERFLOW_MARGIN = 2.0**-8


def _far_from_overflow(
    X: F64, Y: F64, W: F64, b: F64, R: F64, exact: Mapping[str, F64], rb: ResidualBound, gb: GradientBounds,
    c: float, lrs: list[float], reg: Regime, G_R: float, G_G: float, G_L: float, pre: _Prepared | None = None,
) -> bool:
    """Whether every magnitude :func:`overflow_masks` compares with the largest finite value is provably far
    below it, so that every mask is False: bounds of each intermediate from the largest magnitudes of the
    inputs (the residual's positive and negative parts are at most ``G_R (D max|X| max|W| + max|b| + max|Y|)
    + max U``, a gradient's at most ``G_G N max(max|X|, 1) sc`` times that, and so on), with a margin of
    :data:`_OVERFLOW_MARGIN`. O(N D + N K) work and no matrix product, against the masks' dozen products;
    any NaN, infinity or doubt (a vacuous bound, a huge sum) answers False and the masks are computed.

    ``pre``: :func:`step_bounds`' shared passes (the NaN checks and largest magnitudes of ``X``, ``Y``, ``R``,
    ``rb.E``, ``rb.U`` from them), or None. Called inside ``np.errstate(invalid="ignore", over="ignore")``
    (:func:`overflow_masks`'): it enters none of its own."""
    n, d = X.shape
    k = W.shape[1]
    if n * d * k >= 2**40 or n == 0 or d == 0 or k == 0:
        return False
    limit = reg.fmt.max_finite * _OVERFLOW_MARGIN
    s = 2.0 * c
    facts = pre.residual_facts_of(rb) if pre is not None else None
    quantities = ("loss", "grad_W", "grad_b", "W", "b")
    if pre is not None and facts is not None:
        E_nan, R_nan, aX, aY, aU = facts[0], pre.R.nan, pre.X.max_abs, pre.Y.max_abs, facts[1]
        aW, ab, gWm, gbm, *ex_each = _max_abs_each(W, b, gb.gW, gb.gb, *(exact[q] for q in quantities))
    else:  # (E's and R's NaN tests from the same pass: max |a| is NaN exactly where a holds a NaN)
        mE, mR, aX, aY, aU, aW, ab, gWm, gbm, *ex_each = _max_abs_each(rb.E, R, X, Y, rb.U, W, b, gb.gW, gb.gb,
                                                                       *(exact[q] for q in quantities))
        E_nan, R_nan = math.isnan(mE), math.isnan(mR)
    if E_nan or R_nan:  # a NaN error bound (inf * 0) takes part in the masks
        return False
    P = G_R * (d * aX * aW + ab + aY) + aU  # pos, neg, so |R^| as used
    sc = max(2.0, abs(s)) * reg.growth(2)
    S = sc * P  # the scaled residual's terms
    G = G_G * n * _nanmax(aX, 1.0) * S  # partial sums of X^T (s R) and 1^T (s R)
    L = _nanmax(P * P * reg.growth(1), G_L * n * k * P * P)  # the squares and their sum
    lrm = max(abs(x) for x in lrs)
    ex_max = dict(zip(quantities, ex_each, strict=True))
    upd = reg.growth(2) * (_nanmax(aW, ab) + 2 * lrm * _nanmax(ex_max["grad_W"] + gWm, ex_max["grad_b"] + gbm))
    ex = _nanmax(*ex_max.values())
    worst = _nanmax(P, S, G, L, upd, ex)
    return bool(math.isfinite(worst) and worst <= limit)


#: The lane counts of the strided accumulators (SIMD lanes, unrolled loops) :func:`typical_nan_masks` models: lane
#: ``l`` of ``L`` sums rows ``l, l + L, l + 2 L, ...``.
TYPICAL_LANES = (2, 4, 8, 16, 32, 64, 128)
#: Elements (rows times pairs) :func:`typical_nan_masks` holds in one chunk of its terms.
_TYPICAL_CHUNK = 2**18


def _rise_fall(P: F64) -> tuple[F64, F64]:
    """The largest increase and the largest decrease of ``P`` along axis 0 (a later element minus an earlier one, or
    the reverse; 0 at least): for prefix sums that start with 0, the largest and the most negative sums of a
    contiguous range of the terms (``max_{i <= j} P_j - P_i``)."""
    rise = np.max(P - np.minimum.accumulate(P, axis=0), axis=0)
    fall = np.max(np.maximum.accumulate(P, axis=0) - P, axis=0)
    return rise, fall


def _prefix(T: F64) -> F64:
    """Prefix sums of ``T`` along axis 0, starting with a row of zeros."""
    P = np.zeros((T.shape[0] + 1,) + T.shape[1:], dtype=T.dtype)
    np.cumsum(T, axis=0, out=P[1:])
    return P


def typical_partial_sums(hi: F64, lo: F64, limit: float = math.inf) -> tuple[F64, F64]:
    """The largest positive and the largest negative (as a magnitude) partial sums, per column, of terms whose values
    lie in ``[lo, hi]`` (``(n, m)``, rows in the data's order), over the orders libraries sum in: every contiguous
    range of rows (sequential sums either way, blocked and pairwise trees, their combinations); every contiguous
    range within each residue class of the rows mod ``L`` for ``L`` in :data:`TYPICAL_LANES` (an accumulator per lane),
    and every contiguous range of those ``L`` class totals in lane order (the lanes combined sequentially or
    pairwise; halving the lanes gives the class totals mod ``L / 2``, already counted). A term that can be ``+inf``
    (``-inf``, or NaN) makes the positive (negative) extreme ``inf``. Not a bound over every order: the terms sorted
    by sign reach the sum of all positive and of all negative terms (:func:`overflow_masks`).

    ``limit``: a column whose two extremes both exceed it is left as it stands (at least that far; the rest of
    its orders are not searched)."""
    n, m = hi.shape
    with np.errstate(invalid="ignore", over="ignore"):
        A = np.where(np.any(~(hi < np.inf), axis=0), np.inf, 0.0)  # NaN compares False: inf
        B = np.where(np.any(~(lo > -np.inf), axis=0), np.inf, 0.0)
        h = np.where(np.isfinite(hi), hi, 0.0)
        low = h if np.array_equal(hi, lo) else np.where(np.isfinite(lo), lo, 0.0)
        # two flat work buffers, reused for every lane count (no allocation per pass over the (n, m) terms)
        size = (n + 2 * TYPICAL_LANES[-1]) * m
        buf, tmp = np.empty(size), np.empty(size)
        for L in (1, *TYPICAL_LANES):
            if L > 1 and L >= n:  # one term per class: its ranges are single rows, its totals' ranges row ranges
                break
            open_ = ~((A > limit) & (B > limit))
            if not open_.any():
                break
            cols = slice(None) if open_.all() else np.flatnonzero(open_)
            rounds = -(-n // L)
            parts = ((h, True, True),) if low is h else ((h, True, False), (low, False, True))
            for arr, want_a, want_b in parts:
                arr = arr[:, cols]
                mc = arr.shape[1]
                # prefix sums per lane, (rounds + 1, L, mc): a round of zeros first, zeros padding the last round
                # (they change no range's sum)
                flat = buf[:(rounds + 1) * L * mc].reshape((rounds + 1) * L, mc)
                flat[:L] = 0.0
                flat[L:L + n] = arr
                flat[L + n:] = 0.0
                P = flat.reshape(rounds + 1, L, mc)
                np.cumsum(P[1:], axis=0, out=P[1:])
                work = tmp[:P.size].reshape(P.shape)
                tot = _prefix(P[-1])  # the class totals in lane order, prefix sums (L + 1, mc)
                if want_a:  # the largest rise of P along the rounds: max_{i <= j} P_j - P_i
                    np.minimum.accumulate(P, axis=0, out=work)
                    np.subtract(P, work, out=work)
                    A[cols] = np.fmax(A[cols], np.fmax(work.max(axis=(0, 1)), _rise_fall(tot)[0]))
                if want_b:
                    np.maximum.accumulate(P, axis=0, out=work)
                    np.subtract(work, P, out=work)
                    B[cols] = np.fmax(B[cols], np.fmax(work.max(axis=(0, 1)), _rise_fall(tot)[1]))
        # an overflowed float64 prefix sum (inf - inf) counts as beyond the range
        A, B = np.where(np.isnan(A), np.inf, A), np.where(np.isnan(B), np.inf, B)
    return A, B


def typical_nan_masks(Xm: F64, S_hi: F64, S_lo: F64, both: Mask, growth: float, big: float,
                      where: Mask | None = None) -> tuple[Mask, F64, F64]:
    """The typical-order part of ``sum_i Xm_ij S_ik``'s NaN: ``(mask, A, B)``, ``(D', K)`` each (``D'`` the columns of
    ``Xm``). ``mask``: True where, among the partial sums of :func:`typical_partial_sums` (the terms ``Xm_ij S_ik`` in
    the data's order, ``S`` within ``[S_lo, S_hi]``, times ``growth``), one exceeds ``+big`` and one ``-big``.
    ``A`` and ``B``: the largest positive and negative partial sums (``growth`` applied; NaN where not computed).
    Computed only where ``where`` (default ``both``: some order overflows both ways; the mask is False elsewhere;
    :func:`overflow_masks` passes every element where some order overflows either way, for the typical-order
    infinities), in chunks of :data:`_TYPICAL_CHUNK` elements (memory ``O(N K + D K)``, not ``O(N D K)``)."""
    n = Xm.shape[0]
    A = np.full(both.shape, np.nan)
    B = np.full(both.shape, np.nan)
    jj, kk = np.nonzero(both if where is None else where)
    step = max(1, _TYPICAL_CHUNK // max(n, 1))
    with np.errstate(invalid="ignore", over="ignore"):
        for at in range(0, jj.size, step):
            j, k = jj[at:at + step], kk[at:at + step]
            x = Xm[:, j]
            p1, p2 = x * S_hi[:, k], x * S_lo[:, k]  # 0 * inf: NaN, the other product decides (or both NaN: inf)
            hi, lo = np.fmax(p1, p2), np.fmin(p1, p2)
            a, b = typical_partial_sums(hi, lo, big / growth)
            A[j, k], B[j, k] = growth * a, growth * b
    return both & (A > big) & (B > big), A, B


def overflow_masks(
    X: F64, Y: F64, W: F64, b: F64, R: F64, exact: Mapping[str, F64], rb: ResidualBound, gb: GradientBounds,
    c: float, lrs: list[float], reg: Regime, ut: float, *, pre: _Prepared | None = None,
    typical: dict[str, Any] | None = None,
) -> tuple[dict[str, Mask], dict[str, Mask], dict[str, Mask], dict[str, Mask]]:
    """``inf_allowed``, ``nan_allowed``, ``posinf_allowed`` and ``neginf_allowed`` per quantity
    (module docstring).

    ``typical``: a dict, filled with ``"nan"`` (quantity -> :attr:`StepBounds.nan_typical`) and ``"sums"``
    (:attr:`StepBounds.typical_partial_sums`), or None.

    Magnitudes of intermediates are bounded with ``(1 + u)**n`` (the growth of ``n``
    roundings, finite where ``gamma_n`` is not). Signs are tracked so that
    ``inf - inf`` is allowed only where partial sums of both signs can overflow.
    Scaling placements covered: ``2c`` applied to R before the sum, ``2R`` before the
    sum and ``/(N K)`` after, or ``2c`` after the sum (largest factor ``max(2, |s|)``).
    ``pre``: :func:`step_bounds`' shared passes, for :func:`_far_from_overflow`, or None.
    """
    with np.errstate(invalid="ignore", over="ignore"):
        return _overflow_masks(X, Y, W, b, R, exact, rb, gb, c, lrs, reg, ut, pre=pre, typical=typical)


def _overflow_masks(
    X: F64, Y: F64, W: F64, b: F64, R: F64, exact: Mapping[str, F64], rb: ResidualBound, gb: GradientBounds,
    c: float, lrs: list[float], reg: Regime, ut: float, *, pre: _Prepared | None = None,
    typical: dict[str, Any] | None = None,
) -> tuple[dict[str, Mask], dict[str, Mask], dict[str, Mask], dict[str, Mask]]:
    """:func:`overflow_masks`, called inside ``np.errstate(invalid="ignore", over="ignore")`` (its caller's: it enters none of its own)."""
    n, d = X.shape
    k = W.shape[1]
    big = reg.fmt.max_finite
    s = 2.0 * c
    pscale = (1.0 + ut) ** 2
    G_R = reg.growth(d + 2) * pscale
    G_G = reg.growth(n + 3) * pscale
    G_L = reg.growth(n * k + 3)
    # the typical-order model's growth of a partial sum (module docstring): probabilistic, as the expected bounds',
    # 1 + min(LAMBDA sqrt(N + 3) u, gamma_{N + 3}), never more than the rigorous G_G
    G_T = min(G_G, pscale * (1.0 + min(LAMBDA * math.sqrt(n + 3) * reg.u, reg.gamma(n + 3))))
    if OVERFLOW_FAST_PATH and _far_from_overflow(X, Y, W, b, R, exact, rb, gb, c, lrs, reg, G_R, G_G, G_L, pre):
        no = np.asarray(False)
        masks = {"loss": no, "grad_W": np.zeros((d, k), dtype=bool), "grad_b": np.zeros(k, dtype=bool),
                 "W": np.zeros((d, k), dtype=bool), "b": np.zeros(k, dtype=bool)}
        if typical is not None:
            typical["nan"], typical["sums"] = dict(masks), None
            typical["posinf"], typical["neginf"] = dict(masks), dict(masks)
        return masks, dict(masks), dict(masks), dict(masks)
    c_zero = c != 1.0 and (c <= reg.fmt.underflow_quantum or (reg.ftz and c < reg.fmt.min_normal))
    lr_zero = any(x == 0.0 for x in lrs)  # some correct evaluation multiplies by 0
    eta_tot = rb.U  # absolute parts (underflow, flushed inputs) of the residual
    # ---- residual: terms X_ij W_jk, b_k, -Y_ik with known signs
    Pp = np.clip(X, 0, None) @ np.clip(W, 0, None) + np.clip(-X, 0, None) @ np.clip(-W, 0, None)
    Pn = np.clip(X, 0, None) @ np.clip(-W, 0, None) + np.clip(-X, 0, None) @ np.clip(W, 0, None)
    pos = G_R * (Pp + np.clip(b, 0, None)[None, :] + np.clip(-Y, 0, None)) + eta_tot
    neg = G_R * (Pn + np.clip(-b, 0, None)[None, :] + np.clip(Y, 0, None)) + eta_tot
    # +inf needs a partial sum of the positive terms beyond the range, -inf one of the negative terms
    r_pinf, r_ninf = pos > big, neg > big
    r_nan = r_pinf & r_ninf
    # finite |R^| <= min(|R| + E_R, max(pos, neg)); signs a finite R^ can take
    Rmag = np.minimum(np.abs(R) + rb.E, np.maximum(pos, neg))
    r_can_pos = (R + rb.E > 0) | r_pinf
    r_can_neg = (R - rb.E < 0) | r_ninf
    # ---- scaled residual: 2R, (2c) R or 2R / (N K): at most max(2, |s|)(1 + u)^2 |R^|
    sc = max(2.0, abs(s)) * reg.growth(2)
    S_big = sc * Rmag > big
    s_pinf = r_pinf | (S_big & r_can_pos)
    s_ninf = r_ninf | (S_big & r_can_neg)
    s_nan = r_nan | ((r_pinf | r_ninf) & c_zero)
    # magnitudes of positive / negative terms of the reductions over N (inf where a term can be inf)
    Sm = np.where(s_pinf | s_ninf, np.inf, sc * Rmag)
    Sp = np.where(r_can_pos | s_pinf, Sm, 0.0)
    Sn = np.where(r_can_neg | s_ninf, Sm, 0.0)

    # the signed scaled terms, rows in the data's order (typical_nan_masks): the magnitudes above (sc Rmag) with
    # the residual's sign, both signs where it is not known (|R| <= E_R), +-inf where the scaled residual can
    # overflow with that sign (every term at its largest magnitude, not the lower end of the negative ones: the
    # largest values of a period such as (a, a, -2a) would drift by 10 u a a period)
    mag = sc * Rmag
    S_hi = np.where(s_pinf, np.inf, np.where(r_can_pos, mag, -mag))
    S_lo = np.where(s_ninf, -np.inf, np.where(r_can_neg, -mag, mag))

    def reduce(Xm: F64) -> tuple[Mask, Mask]:
        """(inf possible, NaN possible) for sum_i Xm_ij S_ik, any order and scale placement; appends the
        typical-order NaN mask and partial sums to ``typical_parts``."""
        Xp, Xn = np.clip(Xm, 0, None), np.clip(-Xm, 0, None)

        def mm(a: F64, bb: F64) -> F64:  # a @ bb with 0 * inf = 0
            fin = np.where(np.isfinite(bb), bb, 0.0)
            out = a.T @ fin
            infs = (a.T > 0).astype(float) @ (~np.isfinite(bb)).astype(float)
            return np.where(infs > 0, np.inf, out)

        gpos = G_G * (mm(Xp, Sp) + mm(Xn, Sn))
        gneg = G_G * (mm(Xp, Sn) + mm(Xn, Sp))
        # +inf needs a positive term or partial sum beyond the range, -inf a negative one
        # (s = 2c > 0 keeps the signs; a zero scale times inf is NaN, not inf)
        signed.append((gpos > big, gneg > big))
        ginf = (gpos > big) | (gneg > big)
        zero_x = (Xm == 0).astype(float)
        both = (gpos > big) & (gneg > big)  # some order (the terms sorted by sign) overflows both ways
        other = (zero_x.T @ (s_pinf | s_ninf).astype(float)) > 0
        other = other | (np.ones_like(Xm).T @ s_nan.astype(float) > 0)
        # the scale applied after the sum: an overflowed sum times a zero scale
        other = other | (ginf & c_zero)
        typ_both, A, B = typical_nan_masks(Xm, S_hi, S_lo, both, G_T, big, where=ginf)
        typical_parts.append((typ_both | other, A, B))
        return ginf, both | other

    signed: list[tuple[Mask, Mask]] = []
    typical_parts: list[tuple[Mask, F64, F64]] = []
    gW_inf, gW_nan = reduce(X)
    gb_inf, gb_nan = reduce(np.ones((n, 1)))
    gb_inf, gb_nan = gb_inf[0], gb_nan[0]
    gW_inf = gW_inf | (np.abs(exact["grad_W"]) > big)
    gb_inf = gb_inf | (np.abs(exact["grad_b"]) > big)
    gW_p = signed[0][0] | (exact["grad_W"] > big)
    gW_n = signed[0][1] | (exact["grad_W"] < -big)
    gb_p = signed[1][0][0] | (exact["grad_b"] > big)
    gb_n = signed[1][1][0] | (exact["grad_b"] < -big)
    # ---- loss: squares (non-negative), a sum, a scale
    r_inf = r_pinf | r_ninf
    sq_inf = r_inf | (Rmag**2 * reg.growth(1) > big)
    L_inf = bool(sq_inf.any() or G_L * np.sum(np.where(sq_inf, np.inf, Rmag**2)) > big or abs(float(exact["loss"])) > big)
    L_nan = bool(r_nan.any() or (L_inf and c_zero))
    # ---- update W - fl(lr' g): inf from g, or from the product / difference; NaN from g,
    # or from an infinite g times a learning rate that is 0
    lrm = max(abs(x) for x in lrs)

    def upd(g_inf: Mask, g_nan: Mask, E_g: F64, g_abs: F64, p: F64, new: F64) -> tuple[Mask, Mask]:
        gm = np.where(g_inf, np.inf, g_abs + E_g)
        inf = g_inf | (reg.growth(2) * (np.abs(p) + lrm * gm) > big) | (np.abs(new) > big)
        nan = g_nan | (g_inf & lr_zero)
        return inf, nan

    def upd_signed(g_p: Mask, g_n: Mask, E_g: F64, g: F64, w: F64, new: F64) -> tuple[Mask, Mask]:
        """Signs of inf in ``W - fl(lr' g)``: from an infinite g (the opposite sign for lr' > 0),
        or from a product or difference whose positive (negative) part leaves the range."""
        lr_pos, lr_neg = any(x > 0 for x in lrs), any(x < 0 for x in lrs)
        g_hi = np.where(g_p, np.inf, np.clip(g + E_g, 0, None))  # largest positive g^
        g_lo = np.where(g_n, np.inf, np.clip(-(g - E_g), 0, None))  # largest |negative g^|
        # -p positive: lr' > 0 with g^ < 0, or lr' < 0 with g^ > 0
        mp = (g_lo if lr_pos else 0.0) + (g_hi if lr_neg else 0.0)
        mn = (g_hi if lr_pos else 0.0) + (g_lo if lr_neg else 0.0)
        up = reg.growth(2) * (np.clip(w, 0, None) + lrm * mp)
        un = reg.growth(2) * (np.clip(-w, 0, None) + lrm * mn)
        pos = (lr_pos & g_n) | (lr_neg & g_p) | (up > big) | (new > big)
        neg = (lr_pos & g_p) | (lr_neg & g_n) | (un > big) | (new < -big)
        return pos, neg

    W_inf, W_nan = upd(gW_inf, gW_nan, gb.gW, np.abs(exact["grad_W"]), W, exact["W"])
    b_inf, b_nan = upd(gb_inf, gb_nan, gb.gb, np.abs(exact["grad_b"]), b, exact["b"])
    if typical is not None:  # W and b inherit their gradients' typical-order NaN
        (gW_typ, gW_A, gW_B), (gb_typ, gb_A, gb_B) = typical_parts
        gb_typ, gb_A, gb_B = gb_typ[0], gb_A[0], gb_B[0]
        typical["nan"] = {"loss": np.asarray(L_nan), "grad_W": gW_typ, "grad_b": gb_typ,
                          "W": upd(gW_inf, gW_typ, gb.gW, np.abs(exact["grad_W"]), W, exact["W"])[1],
                          "b": upd(gb_inf, gb_typ, gb.gb, np.abs(exact["grad_b"]), b, exact["b"])[1]}
        typical["sums"] = {"grad_W": (gW_A, gW_B), "grad_b": (gb_A, gb_B), "W": (gW_A, gW_B), "b": (gb_A, gb_B)}
        # the typical-order infinities: +inf (-inf) of a gradient where a partial sum of those orders passes the
        # range with that sign (A, B: NaN where not computed, which compares False), or the exact value does;
        # W and b where their update's own terms overflow, or their gradient's typical infinity of the other sign
        gW_pt = gW_p & ((gW_A > big) | (exact["grad_W"] > big))
        gW_nt = gW_n & ((gW_B > big) | (exact["grad_W"] < -big))
        gb_pt = gb_p & ((gb_A > big) | (exact["grad_b"] > big))
        gb_nt = gb_n & ((gb_B > big) | (exact["grad_b"] < -big))
        W_pt, W_nt = upd_signed(gW_pt, gW_nt, gb.gW, exact["grad_W"], W, exact["W"])
        b_pt, b_nt = upd_signed(gb_pt, gb_nt, gb.gb, exact["grad_b"], b, exact["b"])
        typical["posinf"] = {"loss": np.asarray(L_inf), "grad_W": gW_pt, "grad_b": gb_pt, "W": W_pt, "b": b_pt}
        typical["neginf"] = {"loss": np.asarray(False), "grad_W": gW_nt, "grad_b": gb_nt, "W": W_nt, "b": b_nt}
    W_p, W_n = upd_signed(gW_p, gW_n, gb.gW, exact["grad_W"], W, exact["W"])
    b_p, b_n = upd_signed(gb_p, gb_n, gb.gb, exact["grad_b"], b, exact["b"])
    inf = {"loss": np.asarray(L_inf), "grad_W": gW_inf, "grad_b": gb_inf, "W": W_inf, "b": b_inf}
    nan = {"loss": np.asarray(L_nan), "grad_W": gW_nan, "grad_b": gb_nan, "W": W_nan, "b": b_nan}
    # the loss is a sum of squares times c > 0: never -inf
    posinf = {"loss": np.asarray(L_inf), "grad_W": gW_p & gW_inf, "grad_b": gb_p & gb_inf, "W": W_p & W_inf, "b": b_p & b_inf}
    neginf = {"loss": np.asarray(False), "grad_W": gW_n & gW_inf, "grad_b": gb_n & gb_inf, "W": W_n & W_inf, "b": b_n & b_inf}
    return inf, nan, posinf, neginf


def _vacuous_reasons(n: int, d: int, k: int, reg: Regime, rb: ResidualBound, gb: GradientBounds, gL: float) -> dict[str, str]:
    """Why a rigorous bound is infinite: the length of the sum whose growth ``(1 - u)^-m`` exceeds float64
    (:meth:`harness.floats.FloatFormat.gamma`)."""
    name, u = reg.fmt.name, reg.u

    def why(what: str, m: int) -> str:
        return (f"the rigorous bound is vacuous: {what} has up to m = {m} roundings per term in {name}, and "
                f"their worst-case growth (1 - u)^-m = exp({-m * math.log1p(-u):.4g}) exceeds float64's range; only "
                f"the expected (probabilistic) bound grades it")

    out: dict[str, str] = {}
    if not math.isfinite(rb.gamma):
        r = why(f"the residual R = X W + b - Y (a sum of D + 2 = {d + 2} terms)", d + 2)
        return {q: r for q in ("loss", "grad_W", "grad_b", "W", "b")}
    if not math.isfinite(gb.gamma):
        r = why(f"the gradient's sum over N = {n} rows (plus the scale and the product)", n + 3)
        out.update({"grad_W": r, "grad_b": r, "W": r, "b": r})
    if not math.isfinite(gL):
        out["loss"] = why(f"the loss's sum of N K = {n * k} squares (plus the scale)", n * k + 3)
    return out


def step_bounds(
    inputs: Mapping[str, F64],
    residual: F64,
    exact: Mapping[str, F64],
    *,
    lr: float,
    reduction: str,
    fmt: FloatFormat,
    tf32: bool = False,
    lr_held: float | None = None,
    flush_to_zero: bool = False,
    half_flush: bool = True,
) -> StepBounds:
    """Rigorous and expected error bounds for loss, grad_W, grad_b, W and b.

    Args:
        inputs: ``X`` (N, D), ``y`` (N, K), ``W`` (D, K), ``b`` (K,) as the
            implementation saw them (float64 arrays of values exact in ``fmt``).
        residual: the exact residual ``R`` (N, K), as float64.
        exact: exact ``loss`` (0-d), ``grad_W``, ``grad_b``, ``W``, ``b`` as float64.
        lr: learning rate as the oracle used it (rounded to ``fmt``).
        reduction: ``"sum"`` or ``"mean"``.
        fmt: the dtype the implementation computed in.
        tf32: whether float32 matmul inputs are rounded to TF32.
        lr_held: the learning rate as the implementation may hold it (the
            Python float, wider than ``fmt``; PyTorch multiplies a float16 or
            bfloat16 tensor by a Python scalar in float32): see
            :func:`learning_rate_spread`.
        flush_to_zero: the implementation may flush subnormals to zero (declared).
        half_flush: float16 and bfloat16 products and sums may flush subnormals to zero without a declaration
            (:func:`flush_to_zero_default`; the default). False where a probe found that the step's framework does
            not flush in this dtype on this device (:func:`harness.frameworks.flushes_subnormals`): the allowance of
            up to the smallest normal number per operation hid every error in values near it (helper-65).

    Returns:
        :class:`StepBounds` (absolute errors, same units as the quantities).

    Raises:
        ValueError: when the shapes of ``inputs`` and ``residual`` do not agree (:func:`harness.shapes.check_step_shapes`,
            naming the array; ``b`` may be ``(K, 1)`` or ``(1, K)``).

    NumPy's floating-point error handling is ``ignore`` throughout (``np.errstate(all="ignore")``): the bounds hold
    overflow, underflow and NaN in their own terms, so a caller's ``np.seterr(all="raise")`` (or a warnings filter
    that turns NumPy's warnings into errors) does not stop them midway (helper-160: under a global
    ``np.seterr(all="raise")`` about half of hostile inputs raised ``FloatingPointError`` on an underflow). The
    values are the same either way: error handling only reports.
    """
    with np.errstate(all="ignore"):
        k = check_step_shapes(inputs["X"], inputs["y"], inputs["W"], inputs["b"], residual)[2]
        if np.shape(inputs["b"]) != (k,):
            inputs = {**inputs, "b": np.reshape(inputs["b"], (k,))}
        pre = _prepare(inputs, residual)  # the shared passes over X, y, R (None: NumPy expressions throughout)
        sb = _step_bounds_in(np.float64, inputs, residual, exact, lr=lr, reduction=reduction, fmt=fmt, tf32=tf32,
                             lr_held=lr_held, flush_to_zero=flush_to_zero, half_flush=half_flush, pre=pre,
                             shapes_checked=True)
        return _rescue_overflowed_bounds(sb, inputs, residual, exact, pre=pre, lr=lr, reduction=reduction, fmt=fmt,
                                         tf32=tf32, lr_held=lr_held, flush_to_zero=flush_to_zero, half_flush=half_flush)


def _extreme_magnitudes(values: npt.ArrayLike) -> bool:
    """Whether a finite nonzero magnitude of ``values`` lies below ``2**-200`` or above ``2**200``
    (non-finite values and zeros ignored). The smallest and largest magnitudes answer most arrays;
    only an array holding a zero or a non-finite value is filtered element by element."""
    m = np.abs(np.asarray(values, dtype=np.float64))
    if m.size == 0:
        return False
    lo, hi = float(m.min()), float(m.max())
    if lo >= 2.0**-200 and hi <= 2.0**200:  # NaN compares False: filtered below
        return False
    m = m[np.isfinite(m) & (m > 0)]
    return bool(m.size and (m.min() < 2.0**-200 or m.max() > 2.0**200))


def _rescue_overflowed_bounds(
    sb: StepBounds, inputs: Mapping[str, F64], residual: F64, exact: Mapping[str, F64], *,
    pre: _Prepared | None = None, **kw: object,
) -> StepBounds:
    """Re-evaluate, in extended precision (``np.longdouble``, exponent range to 1e4932 on x86),
    the bounds that are infinite in float64 only because evaluating them overflowed (not
    vacuous): an infinite bound would accept any finite result. Exact values beyond float64
    (residual, gradients, loss) are recomputed from the inputs in extended precision for those
    elements (relative error ~2**-60, far inside the bounds' own ``u``). Where the bound is
    still beyond float64 it stays ``inf`` and :attr:`StepBounds.out_of_range` says so; where
    the exact value is beyond float64 by more than the bound, a finite result is impossible
    (:attr:`StepBounds.finite_impossible`). ``pre``: :func:`step_bounds`' shared passes (whether ``X``, ``y``
    and the residual hold extreme magnitudes), or None."""
    if pre is None and _nothing_to_rescue(sb, inputs, residual, exact):
        return sb
    if pre is not None and not (pre.X.extreme or pre.Y.extreme or pre.R.extreme) and _nothing_to_rescue(
            sb, {q: v for q, v in inputs.items() if q not in ("X", "y")}, None, exact):
        return sb  # (X, y and the residual from the shared passes: the same answer as below, without their passes)
    over = {q: (~np.isfinite(np.asarray(sb.rigorous[q])) | ~np.isfinite(np.asarray(sb.expected[q])))
            for q in sb.rigorous if q not in sb.vacuous}
    beyond = {q: ~np.isfinite(np.asarray(exact[q], dtype=np.float64)) for q in exact}
    # the expected bounds square (and the loss's raises to the 4th power) the values: below
    # 2**-200 or above 2**200 that underflows or overflows float64 (an expected bound of
    # 2.5e-323 for a correctly rounded 1e-290): evaluate them in the wider type too
    if pre is None:
        extreme = any(_extreme_magnitudes(v) for v in (*inputs.values(), residual, *exact.values()))
    else:  # X, y and the residual from the shared passes
        shared = {"X": pre.X.extreme, "y": pre.Y.extreme}
        extreme = (pre.R.extreme or any(shared[q] if q in shared else _extreme_magnitudes(v) for q, v in inputs.items())
                   or any(_extreme_magnitudes(v) for v in exact.values()))
    if not any(m.any() for m in over.values()) and not any(m.any() for m in beyond.values()) and not extreme:
        return sb
    ld = np.longdouble
    if np.finfo(ld).maxexp <= np.finfo(np.float64).maxexp:  # no wider exponent here (e.g. macOS arm64)
        for q, m in over.items():
            if np.any(m):
                sb.out_of_range[q] = ("the rigorous and/or expected bound overflowed float64 when evaluated and no "
                                      "wider type is available here: it is infinite (no finite result is judged by it)")
        return sb
    X, Y, W, b = (np.asarray(inputs[k], dtype=ld) for k in ("X", "y", "W", "b"))
    fmt = kw["fmt"]
    assert isinstance(fmt, FloatFormat)
    n, k = Y.shape
    R64 = np.asarray(residual, dtype=np.float64)
    with np.errstate(all="ignore"):
        R_ld = X @ W + b[None, :] - Y
        R = np.where(np.isfinite(R64), R64.astype(ld), R_ld)
        c = ld(1) if kw["reduction"] == "sum" else ld(1) / ld(n * k)
        lr = ld(float(kw["lr"]))  # type: ignore[arg-type]
        gW = 2 * c * (X.T @ R)
        gb = 2 * c * R.sum(axis=0)
        calc = {"loss": np.asarray(c * np.sum(R * R)), "grad_W": gW, "grad_b": gb, "W": W - lr * gW, "b": b - lr * gb}
        ex = {q: np.where(np.isfinite(np.asarray(exact[q], dtype=np.float64)),
                          np.asarray(exact[q], dtype=np.float64).astype(ld), calc[q]) for q in calc}
        wide = _step_bounds_in(ld, inputs, R, ex, **kw)  # type: ignore[arg-type]
        big64 = np.finfo(np.float64).max
        finite_impossible = {}
        for q in sb.rigorous:
            rig_w = np.asarray(wide.rigorous[q])
            if q in over and np.any(over[q]):
                rig64 = np.where(over[q], rig_w.astype(np.float64), sb.rigorous[q])
                exp64 = np.where(over[q], np.asarray(wide.expected[q]).astype(np.float64), sb.expected[q])
                sb.rigorous[q] = np.asarray(rig64)
                sb.expected[q] = np.asarray(np.minimum(exp64, rig64))
                still = over[q] & ~np.isfinite(rig64)
                if np.any(still):
                    top = float(np.log10(np.max(np.where(still, rig_w, 0))))
                    sb.out_of_range[q] = (f"the rigorous bound is beyond float64's range (about 1e{top:.0f}, from an "
                                          "extended-precision evaluation; not vacuous): shown as inf")
            elif extreme:  # the rigorous bound is fine in float64; the expected one's squares were not
                exp_w = np.asarray(wide.expected[q]).astype(np.float64)
                sb.expected[q] = np.asarray(np.minimum(exp_w, sb.rigorous[q]))
            # finite results are impossible where |exact| - bound is still beyond float64
            finite_impossible[q] = np.asarray(beyond[q] & (np.abs(ex[q]) - rig_w > big64))
        sb.finite_impossible = finite_impossible
    return sb


def _nothing_to_rescue(sb: StepBounds, inputs: Mapping[str, F64], residual: F64 | None, exact: Mapping[str, F64]
                       ) -> bool:
    """A sufficient test, in a few passes, that :func:`_rescue_overflowed_bounds` (without ``pre``) changes nothing:
    every non-vacuous bound and every exact value finite (a sum of an array's elements is finite only where each is:
    an infinity or a NaN makes it infinite or NaN; a sum that overflows answers False) and every magnitude of the
    inputs, the residual and the exact values, together, within ``[2**-200, 2**200]`` (then each array's
    :func:`_extreme_magnitudes` is False and each exact value finite; a zero or a NaN answers False). The bounds are
    summed together in one pass (a sum that overflows answers False). False: the full test decides. ``residual`` None
    (and ``inputs`` without X and y): those arrays' magnitudes left to the caller (with ``pre``: its scans' flags).
    Called inside :func:`step_bounds`' ``np.errstate(all="ignore")`` (an infinity's or a NaN's sum is the answer, not a
    warning): it enters none of its own."""
    # (the exact values' finiteness is the magnitudes' test below: a NaN or an infinity fails it)
    bounds = [v for q, r in sb.rigorous.items() if q not in sb.vacuous for v in (r, sb.expected[q])]
    if bounds and not math.isfinite(float(np.concatenate(bounds, axis=None).sum())):  # (axis None: each flattened)
        return False
    parts = (*inputs.values(), *(() if residual is None else (residual,)), *exact.values())
    m = np.abs(np.concatenate([np.asarray(v, dtype=np.float64) for v in parts], axis=None))
    return bool(m.size == 0 or (m.min() >= 2.0**-200 and m.max() <= 2.0**200))


def _nan_as_inf_owned(values: Mapping[str, Any]) -> dict[str, Any]:
    """``{q: _nan_as_inf(v)}`` of arrays formed for the caller (shared with nothing): where every one holds floats
    and none a NaN or ``-inf`` (one test of all of them together), the arrays themselves, 0-d ones as NumPy scalars
    (what :func:`_nan_as_inf` returns there, as copies); else :func:`_nan_as_inf` of each."""
    arrays = [np.asarray(v) for v in values.values()]
    if all(a.dtype.kind == "f" for a in arrays) and bool((np.concatenate(arrays, axis=None) > -np.inf).all()):
        return {q: a[()] if a.ndim == 0 else a for q, a in zip(values, arrays, strict=True)}
    return {q: _nan_as_inf(v) for q, v in values.items()}


def _nan_as_inf(values: npt.ArrayLike) -> Any:
    """``np.nan_to_num(values, nan=inf, posinf=inf)`` (a copy; a 0-d input gives a NumPy scalar), without
    its five passes where no element is NaN or ``-inf`` (then it changes nothing)."""
    x = np.array(values, subok=True, copy=True)
    if x.dtype.kind == "f" and bool((x > -np.inf).all()):
        return x[()] if x.ndim == 0 else x
    return np.nan_to_num(x, nan=np.inf, posinf=np.inf)


def _step_bounds_in(
    wd: type, inputs: Mapping[str, F64], residual: F64, exact: Mapping[str, F64], *, lr: float, reduction: str,
    fmt: FloatFormat, tf32: bool = False, lr_held: float | None = None, flush_to_zero: bool = False,
    half_flush: bool = True, pre: _Prepared | None = None, shapes_checked: bool = False,
) -> StepBounds:
    """:func:`step_bounds` evaluated in the floating type ``wd`` (float64, or longdouble for the rescue);
    ``pre``: :func:`_prepare` of these inputs (float64 only), or None; ``shapes_checked``: the caller has checked the
    shapes of these ``inputs`` and ``residual`` (:func:`harness.shapes.check_step_shapes`, ``b`` as ``(K,)``). Called
    inside ``np.errstate(all="ignore")`` (:func:`step_bounds`, :func:`_rescue_overflowed_bounds`): neither its own
    operations nor the functions it calls enter an errstate of their own (it calls the public functions' bodies,
    ``_residual_bound``, ``_gradient_bounds``, ``_loss_bound``, ``exact_reductions_no_errstate``, ``_expected_bounds``,
    ``_overflow_masks``, ``_loss_floor``: each errstate cost about 3 us a check)."""
    X: F64
    Y: F64
    W: F64
    b: F64
    X, Y, W, b = (np.asarray(inputs[k], dtype=wd) for k in ("X", "y", "W", "b"))
    R: F64 = np.asarray(residual, dtype=wd)
    exact = {q: np.asarray(v, dtype=wd) for q, v in exact.items()}
    n, d = X.shape
    k = W.shape[1]
    reg = Regime(fmt, bool(flush_to_zero or (half_flush and flush_to_zero_default(fmt))))
    c = 1.0 if reduction == "sum" else 1.0 / (n * k)
    ut = TF32.unit_roundoff if (tf32 and fmt.precision > TF32.precision) else 0.0
    # the update W - lr g is element-wise (computed in float32 for the half types, where float16's subnormals are
    # normal numbers): its operations and the learning rate it holds flush only where the step declares flush-to-zero
    # (with float16's default allowance lr = 1e-5 could be 0 and a flushed product lose all of lr g: a step that
    # skipped the update agreed at 77-116 ULPs, helper-55)
    upd_reg = Regime(fmt, bool(flush_to_zero))
    dlr = learning_rate_spread(lr, lr_held, upd_reg)
    rb = _residual_bound(X, W, b, Y, reg, ut, pre)
    gb = _gradient_bounds(X, R, rb, c, reg, ut, pre=pre)
    rig_L, U_L, gL = _loss_bound(R, rb, c, reg, pre=pre)
    # where every correct evaluation computes a reduction exactly, in any order (harness.repeatedsums.exact_reductions:
    # integer data on a narrow grid), its bound is 0: the magnitudes' bound was up to 19 times |grad| there, and a
    # gradient without its factor 2, or of the wrong sign, agreed in float16 and bfloat16 (helper-88)
    ex_gW, ex_gb, ex_loss = exact_reductions_no_errstate(np.asarray(X, dtype=np.float64), np.asarray(R, dtype=np.float64), fmt,
                                             ExactContext(W, b, Y, rb.A, float(c), reg.ftz, ut > 0))
    u2 = update_rounding(fmt)
    gW_abs, gb_abs = np.abs(exact["grad_W"]), np.abs(exact["grad_b"])
    W_abs, b_abs, newW_abs, newb_abs = np.abs(W), np.abs(b), np.abs(exact["W"]), np.abs(exact["b"])

    def rigorous_of(gbx: GradientBounds, rig_Lx: F64) -> tuple[dict[str, F64], Any, Any]:
        """The rigorous bounds of every quantity from these gradient and loss bounds, and the updates' underflows."""
        eta_W = update_underflow(upd_reg, W_abs, newW_abs, gW_abs, gbx.gW, lr, dlr, u2)
        eta_b = update_underflow(upd_reg, b_abs, newb_abs, gb_abs, gbx.gb, lr, dlr, u2)
        # (update_bound's errstate: the caller's; NaN (inf * 0 in a vacuous bound) and inf stay inf below: a vacuous
        # bound says nothing)
        rig_W, rig_b = _update_bounds_of_both((newW_abs, gW_abs, gbx.gW, *eta_W), (newb_abs, gb_abs, gbx.gb, *eta_b),
                                              lr, dlr, u2, fmt)
        out = _nan_as_inf_owned({q: np.asarray(v * _SAFETY, dtype=wd) for q, v in
                                 (("loss", rig_Lx), ("grad_W", gbx.gW), ("grad_b", gbx.gb), ("W", rig_W), ("b", rig_b))})
        return out, eta_W, eta_b

    rigorous_inexact: dict[str, F64] | None = None
    if ex_gW.any() or ex_gb.any() or ex_loss:
        rigorous_inexact = rigorous_of(gb, rig_L)[0]
        gb = GradientBounds(gW=np.where(ex_gW, 0.0, gb.gW), gb=np.where(ex_gb, 0.0, gb.gb), U_gW=np.where(ex_gW, 0.0, gb.U_gW),
                            U_gb=np.where(ex_gb, 0.0, gb.U_gb), gamma=gb.gamma)
        if ex_loss:
            rig_L, U_L = np.zeros_like(rig_L), np.zeros_like(U_L)
    rigorous, eta_W, eta_b = rigorous_of(gb, rig_L)
    expected_raw = _expected_bounds(X, Y, W, b, R, exact, c, lr, dlr, reg, ut, rb, gb, U_L, pre=pre,
                                   update_eta=(eta_W[0] + eta_W[1], eta_b[0] + eta_b[1]), shapes_checked=shapes_checked)
    expected = {q: np.minimum(v, rigorous[q]) for q, v in _nan_as_inf_owned({q: expected_raw[q] for q in rigorous}).items()}
    typical: dict[str, Any] = {}
    inf_ok, nan_ok, pinf_ok, ninf_ok = _overflow_masks(X, Y, W, b, R, exact, rb, gb, c, learning_rates(lr, lr_held, upd_reg),
                                                      reg, ut, pre=pre, typical=typical)
    return StepBounds(rigorous=rigorous, expected=expected, inf_allowed=inf_ok, nan_allowed=nan_ok,
                      vacuous=_vacuous_reasons(n, d, k, reg, rb, gb, gL), flush_to_zero=reg.ftz,
                      posinf_allowed=pinf_ok, neginf_allowed=ninf_ok, rigorous_inexact=rigorous_inexact,
                      nan_typical=typical["nan"], typical_partial_sums=typical["sums"],
                      posinf_typical=typical["posinf"], neginf_typical=typical["neginf"],
                      loss_floor=_loss_floor(R, rb.E, c, reg, float(exact["loss"]), pre=pre) if wd is np.float64 else None)
