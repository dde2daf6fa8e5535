"""Forward error bounds of a model's step, derived automatically from its evaluation plan.

:func:`model_bounds` walks a :class:`harness.models.graph.Graph` in node order (an *error domain*
evaluation, first-order forward error analysis made rigorous) and gives every node ``v`` an
absolute bound ``E_v >= |v^ - v|`` of the difference between a correct floating-point evaluation
``v^`` in the dtype and the exact value ``v``, element-wise; the graded quantities are
``graph.outputs``. Magnitudes ``|v|`` are the exact values (``node_values``: the truth's nearest
float64), never an implementation's output.

**Rounding model** (Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed., SIAM 2002,
§2.2 with underflow, the same as :mod:`harness.bounds`): ``fl(x op y) = (x op y)(1 + d) + e``,
``|d| <= u``, ``|e| <= eta``; ``eta`` is half the subnormal spacing for products, quotients and
function values with gradual underflow (sums are then exact in the subnormal range), and the
smallest normal number for *every* operation with flush-to-zero (float16 and bfloat16 by default,
:func:`harness.bounds.flush_to_zero_default`, unless a probe of the step's framework found no flush:
:func:`harness.frameworks.subnormals.flushes_subnormals`), which also lets a subnormal input be read as 0.

**Rules**, one per operation (:data:`RULES`; ``a^ = a + da``, ``|da| <= E_a``, magnitudes
``|a| + E_a`` bound the computed arguments, so every product of errors is kept: the bounds are
rigorous, not only first-order):

==============  ===================================================================================
``input``       0 (a float of the dtype); with flush-to-zero ``|x| [|x| < 2**emin]``
``param``       the same
``const``       held (the learning rate): ``max |lr' - lr|`` over the values an implementation may
                multiply by (:func:`harness.bounds.learning_rate_spread`: the Python float, float32's
                for the half types); not held: 0 when the value is a float of the dtype, else its
                rounding ``u_k |c| + eta_c`` (:func:`constant_rounding`: via float64 and float32)
``matmul``      ``gamma_m (|A| + E_A)(|B| + E_B) + E_A |B| + |A| E_B + E_A E_B + (1 + gamma_m) n eta``
                (Higham §3.1 Lemma 3.1 and §3.5 eq. 3.12: each product passes at most ``m``
                roundings, any order, blocking or FMA); ``n = m`` products (``2m - 1`` operations
                with flush-to-zero)
``sum``         ``gamma_{n-1} sum(|a| + E_a) + sum E_a + (1 + gamma_{n-1}) (n - 1) eta_ftz``
``add``/``sub`` ``u (|a +- b| + E_a + E_b) + E_a + E_b + eta_ftz``
``mul``         ``u (|a| + E_a)(|b| + E_b) + E_a |b| + |a| E_b + E_a E_b + eta``; the last product of a declared
                chain (the seed's ``2c`` as its ``factors`` 2, ``1/N``, ``1/K``; ``attrs["chain"]``: an
                expression's product of three or more factors, a power's adjoint ``g (p a**(p-1))``): ``eta``
                replaced by the worst association's underflow count (:func:`chain_underflow`: ``2 eta`` for
                ``2 fl(c R)``, ``2 (1 + 1/K) eta`` for ``2 ((R / N) / K)``, ``p eta`` for ``(g a**(p-1)) p``), and
                exact only where no association may underflow or the factors' bits make every one exact
                (:func:`chain_exact`)
``square``      ``mul`` of ``a`` by itself: ``u (|a| + E_a)^2 + 2 |a| E_a + E_a^2 + eta``
``div``         ``u M + (E_a |b| + |a| E_b) / (|b| (|b| - E_b)) + eta``, ``M = (|a| + E_a)/(|b| - E_b)``
                (infinite where ``E_b >= |b|``)
``pow``         ``p (|a| + E_a)^(p-1) E_a`` (mean value theorem) plus the evaluation:
                ``max(gamma_{p-1}, libm pow's ULPs) (|a| + E_a)^p`` (repeated products or ``pow``)
``fn``          ``max_{[a - E_a, a + E_a]} |f'| E_a`` plus the library's evaluation error at the
                computed argument (:data:`FUNCTION_ULPS`), the half types computed in float32 and
                rounded (``u_h`` more; an activation's value ``|F - f(a)|`` where float32's whole error interval
                rounds to one half float ``F``: :meth:`FnContext.delivered`); see :func:`activation_value_bound`
``fn_grad``     ``max |f''| E_a`` over the same interval, or, for a derivative written in the forward
                value (tanh: ``1 - y^2``, sigmoid: ``y (1 - y)``), the exact change of that formula
                under ``|y^ - y| <= E_y`` (the larger of the two: an implementation may use either);
                plus the formula's rounding; ReLU and leaky ReLU: the jump where the interval
                contains the kink (:func:`activation_grad_bound`); the elementary functions of an
                expression model (exp, log, sqrt, sin, cos, erf, abs) likewise
                (:func:`elementary_value_bound`, :func:`elementary_grad_bound`)
``transpose``   ``E_a^T``; ``concat``: the ``E``'s concatenated; ``column``: the column's ``E``
==============  ===================================================================================

**Exact evaluations**: where every term of a product or sum is known exactly (``E = 0``), each
product's significand fits the dtype and every partial sum in any order is a float (all terms are
multiples of ``2**q`` and ``sum |t| <= (2**p - 1) 2**q``: integer or dyadic data, ReLU's kink
regime), the result is exact and ``E = 0`` (:func:`exact_sum`, :func:`exact_products`): a derivative
taken at an exact kink then gets no jump allowance, so a wrong convention there is caught.

**Second-order safety**: where a nonlinear function propagates an error, the derivative is bounded
over the whole interval ``[a - E_a, a + E_a]`` (not taken at ``a``): the extrema of ``|f'|`` and
``|f''|`` on an interval lie at its ends or at the critical points inside it, which are known in
closed form for each activation (:data:`CRITICAL_POINTS`), so the bound is rigorous for any
correct evaluation, not only to first order. The float64 evaluation of these magnitudes (relative
error ~1e-15) is covered by the factor ``1 + 2**-30`` applied to every bound.

**Expected bounds** (Higham and Mary, SIAM J. Sci. Comput. 41(5), 2019, Theorem 2.4): the same walk
with every reduction's ``gamma_n`` replaced by ``min(gamma_n, lambda sqrt(n) u)``
(``lambda`` = :data:`harness.bounds.LAMBDA`); single roundings, function errors and underflow keep
their rigorous terms (a simpler model than :func:`harness.bounds.expected_bounds`, which keeps the
partial sums: for the linear model it is coarser; see :mod:`harness.models.compare_linear`). Where a
reduction's terms repeat (:func:`harness.repeatedsums.repeating_terms`: a matrix product's element whose row and
column both repeat, a ``sum``'s terms along its axis), their partial sums' errors repeat with them and add up like
``n``, so the expected walk takes their first-order worst case there, ``n u`` (every partial sum's error
with one sign, below ``gamma_n = (1 - u)^-n - 1``: a bfloat16 sum of 300 ones stops at 256)
(:mod:`harness.repeatedsums`).

**Overflow** (a conservative rule, :func:`_overflow_node`): per element, whether some correct
evaluation may give ``+inf``, ``-inf`` or NaN. A sum (matmul, ``sum``, add/sub chains, in any order)
reaches ``+inf`` only if the terms that may be positive can exceed the range (``(1 + u)^n`` times
their magnitudes), ``-inf`` likewise, NaN only if both can (``inf - inf``), from an infinite factor
(``inf * 0``) or from a NaN argument; an intermediate whose magnitude bound ``|v| + E_v`` exceeds the
range may be inf of its sign; tanh and sigmoid never return inf (NaN only from NaN); ReLU and
softplus never ``-inf``; GELU gives NaN at ``-inf`` and may overflow where ``2 |z|`` exceeds the
computing type (torch forms ``x (1 + erf(x / sqrt 2))``); products, quotients, powers and an
expression's functions of a non-finite argument may be anything non-finite; ``log``, ``sqrt`` and their
derivatives may be NaN or an infinity where their argument's error interval reaches 0 (:func:`domain_edge`: a
correct evaluation may compute the argument as 0 or below it; the bound is vacuous there). ``inf_allowed`` is
``+inf or -inf possible``, ``nan_allowed`` NaN possible; ``posinf_allowed`` and ``neginf_allowed``
narrow ``inf_allowed`` by the sign bits each node's values can have (:func:`signed_infinities`: a
product's sign is the XOR of its factors', a sum of terms that cannot be positive is never ``+inf``,
``x^2`` and ``exp`` never ``-inf``): the grading calls an infinity of a sign no correct evaluation
produces ``disagree``. A *finite* result is graded against the
rigorous bound everywhere: the arithmetic carries inf and NaN forward, and the activations, which
may turn them into finite values (``tanh(inf) = 1``, also where a partial sum overflowed and the
exact argument is 0), get at least the distance from the exact value to those values as their
bound (:data:`SATURATION_LIMITS`; tanh and sigmoid and their derivatives are also capped by their
ranges, :data:`VALUE_RANGES`); an expression's elementary functions and divisions get an infinite
(vacuous) bound past a possible overflow. A vacuous bound does not accept every finite result:
where every correct evaluation gives ``inf`` or NaN (:func:`never_finite`: an own overflow carried
only through operations that keep a non-finite value non-finite) and the exact value is beyond twice
the range, a finite result is impossible (:attr:`ModelBounds.finite_impossible`; graded ``disagree``).

**The loss's floor** (:func:`model_loss_floor`): the loss's bound is two-sided, below 0 on its lower side once
``gamma_{NK}`` is large; a finite loss below :class:`harness.bounds.LossFloor` of the residual node (its bound plus
the truth's enclosure radius) is ``disagree`` (helper-173).

**What the bounds cover**: any order of each sum (matmul, ``sum``, and add/sub chains, which are
flattened: the bias accumulated with the products, an expression's terms in the implementation's
association; a sum the expression's text brackets is one term, :func:`harness.models.graph.grouped`), FMA, wider accumulators (a half-type matmul accumulated in float32 and rounded once),
the half types' element-wise operations and functions computed in float32 and rounded once, the loss
scale applied before or after its sum, and every product chain the plan declares in any association of its
factors, their underflows counted in the worst association (:func:`chain_underflow`): the seed ``2c R``
(``attrs["factors"]``: 2 and, under the mean, ``1/N`` and ``1/K``; ``(2c) R``, ``2 fl(c R)``, ``c (2R)``,
``2 R / N / K`` in either order), an expression's product of three to
:data:`harness.models.plan.CHAIN_LIMIT` factors (``(a b) x1``, ``(x1 a) b``, ...) and a power's adjoint
``g (p a**(p-1))`` (``(g a**(p-1)) p``, ``(g p) a**(p-1)``) (``attrs["chain"]``), and the seed's factors applied after
any operation of the backward pass (``2 (X^T R)``, ``2 (X^T ((R / N) / K))``): each backward operation on the seed's
descendants counts its underflow :func:`harness.bounds.seed_carry` (2) times, and is exact only where its values halved
would be too (:func:`seed_carries`, :meth:`_Walk.eta`, :meth:`_Walk.shift`; helper-138).
Limits: the relative error of a chain is counted as the plan's roundings: one of each product and one of the
seed's constant ``2c``, so a seed that rounds constants of its own and multiplies by them apart (``(2/N) (R/K)``,
``R fl(1/N) fl(1/K) 2``: one and two roundings more) is not covered by the seed's rule (measured: at most 0.79 of
the bound over 1,500 residuals, helper-130); a scalar the plan multiplies by a sum over the rows (``b sum(g x1)``)
is covered multiplied into it and into its terms' product (``sum((g x1) b)``, ``sum(g (x1 b))``, and with up to
``CHAIN_LIMIT - 2`` such scalars, ``sum(g (x1 (b c)))`` for ``c (b sum(g x1))`` of ``x1*a*b*c``:
:func:`_scalar_into_sum`, helper-138);
other products the plan does not declare as chains (a denominator's product; a chain of more than ``CHAIN_LIMIT``
factors) are covered in the plan's association only; TF32 is not modelled (CPU only);
elementary functions are trusted to the accuracy of :data:`FUNCTION_ULPS` (measured and cited per
entry; override it per call for another library).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt

from ..bounds import (
    LAMBDA,
    LossFloor,
    Regime,
    StepBounds,
    chain_underflow,
    flush_to_zero_default,
    learning_rate_spread,
    loss_floor,
    nearest_rounding_bound,
    seed_carry,
)
from ..floats import FLOAT32, FLOAT64, FloatFormat, float_bits, lowest_exponent, round_to_format, sums_exactly
from ..repeatedsums import repeating_terms, repeating_terms_bias
from .graph import Graph, Node, grouped, loss_residual

F64 = npt.NDArray[np.float64]
Mask = npt.NDArray[np.bool_]

#: Relative safety margin of every bound (float64 evaluation of the bounds and magnitudes).
SAFETY = 1.0 + 2.0**-30

#: The accuracy of each elementary function, in ULPs of the result (an error of ``k`` ULPs is
#: taken as at most ``2 k u |f|``, plus ``k`` subnormal spacings below the normal range).
#: Sources: PyTorch's CPU kernels call SLEEF's ``u10`` functions in the vectorized paths (documented
#: maximum error 1.0 ULP, https://sleef.org/purec.xhtml) and the C library in the scalar paths; NumPy
#: calls the C library (or its own SIMD kernels, documented to 1-4 ULP); glibc's manual, section
#: "Known Maximum Errors in Math Functions" (x86_64, glibc 2.3x) lists tanh/tanhf 2, exp/expf 1,
#: erf/erff 1 (2 on some targets), log1p/log1pf 1 (2 on some targets), log 1, sin/cos 1, pow 1.
#: We take the largest of these per function. float16 and bfloat16 are computed in float32 and
#: rounded (torch's opmath, NumPy's half loops, ml_dtypes): the entry applies to the float32
#: evaluation and one more rounding in the half type is counted.
#: erf: 3 (torch's float64 erf measured at 3 ULPs against SciPy, whose own error is ~1). sqrt: 1, not
#: IEEE's 0.5: torch's float32 CPU sqrt measured at 0.75 ULP (4e5 random points; exp 0.56, log 0.86,
#: sin/cos 0.60, tanh 0.51 in float32; all <= 0.52 in float64 against mpmath).
#: ``gelu_erf``: the erf inside PyTorch's CPU GELU kernel is its own vectorized approximation, not
#: ``torch.erf``: measured on torch 2.13 (4e6 points in [-8, 8]) as an absolute error up to 11.3 u in
#: float32 (5.7 ULPs of 1) and 3.5 u in float64; 8 ULPs (16 u) is taken, as an absolute error (ULPs of 1).
#: Composite activations (sigmoid, softplus) are the ULPs of their evaluation formula, derived:
#: sigmoid ``1 / (1 + exp(-z))``: exp's error ``2 u_exp`` plus two roundings (``2u``), i.e.
#: ``exp + 1`` ULP in this convention; softplus ``log1p(exp(z))``: the relative error of ``exp``
#: passes through ``log1p`` with a factor ``e/((1 + e) log1p(e)) <= 1``, so ``exp + log1p``.
FUNCTION_ULPS: dict[str, float] = {
    "tanh": 2.0,
    "exp": 1.0,
    "log": 1.0,
    "log1p": 2.0,
    "erf": 3.0,
    "gelu_erf": 8.0,
    "sin": 1.0,
    "cos": 1.0,
    "sqrt": 1.0,
    "pow": 1.0,
}

#: PyTorch's softplus returns ``z`` itself for ``z > 20`` (``beta = 1, threshold = 20``) and its
#: backward uses 1 there: ``|z - softplus(z)| = log1p(exp(-z)) < exp(-20)`` and
#: ``|1 - sigmoid(z)| < exp(-20)``: an absolute error of the library (not of rounding), added to the
#: value and the derivative wherever the computed argument may exceed the threshold.
SOFTPLUS_THRESHOLD = 20.0
SOFTPLUS_THRESHOLD_ERROR = math.exp(-20.0) * (1 + 2.0**-40)

#: Critical points (zeros of the next derivative) of ``f'`` and ``f''`` of each activation, where
#: the extrema of ``|f'|`` and ``|f''|`` on an interval may lie besides its ends:
#: tanh: ``f' = sech^2`` peaks at 0; ``f'' = -2 tanh sech^2`` peaks at ``+-atanh(1/sqrt 3)``;
#: sigmoid: ``s'`` peaks at 0, ``s'' = -s' tanh(z/2)/...`` at ``+-2 atanh(1/sqrt 3) = +-log(2 + sqrt 3)``;
#: softplus: ``f' = sigmoid`` is monotone, ``f'' = sigmoid'`` peaks at 0;
#: gelu: ``f' = Phi + z phi`` has extrema at ``+-sqrt 2`` (``f'' = phi (2 - z^2)``), ``f''`` at 0, ``+-2``.
CRITICAL_POINTS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "tanh": ((0.0,), (-math.atanh(1 / math.sqrt(3)), math.atanh(1 / math.sqrt(3)))),
    "sigmoid": ((0.0,), (-math.log(2 + math.sqrt(3)), math.log(2 + math.sqrt(3)))),
    "softplus": ((), (0.0,)),
    "gelu": ((-math.sqrt(2), math.sqrt(2)), (-2.0, 0.0, 2.0)),
}

_FN_SAFETY = 1.0 + 2.0**-40
_SQRT1_2 = math.sqrt(0.5)
_INV_SQRT_2PI = 1.0 / math.sqrt(2 * math.pi)


@dataclass
class ModelBounds:
    """Per-element bounds of every graded quantity of a model's step.

    Attributes:
        rigorous: quantity -> absolute error bound (the quantity's shape; float64; ``inf`` = none).
        expected: quantity -> probabilistic bound (``<= rigorous``).
        inf_allowed, nan_allowed: quantity -> bool array, True where a correct evaluation may form
            an intermediate beyond the dtype's range (module docstring: a conservative rule).
        posinf_allowed, neginf_allowed: quantity -> bool array, True where a correct evaluation may
            give ``+inf`` (``-inf``) (:func:`signed_infinities`; within ``inf_allowed``). A quantity
            missing here allows both signs wherever ``inf_allowed``.
        function_ulps: the accuracy used per elementary function (ULPs; and the absolute
            ``softplus_threshold`` term), to name in the records.
        notes: quantity (or function) -> why a bound is vacuous, or a library approximation used.
        flush_to_zero: whether the bounds allow flushing subnormals to zero.
        finite_impossible: quantity -> bool array, True where no correct evaluation gives a finite
            value (:func:`never_finite`): every one gives ``inf`` or NaN there, and the exact value is
            beyond twice the dtype's largest finite value. A finite result there is wrong whatever
            the rigorous bound says (it may be vacuous). Empty: nowhere.
        loss_floor: the least value a correct evaluation of the loss can give (:func:`model_loss_floor`): a finite
            loss below it is ``disagree``; None = no floor (the truth's enclosure radii not given or not finite).
    """

    rigorous: dict[str, F64]
    expected: dict[str, F64]
    inf_allowed: dict[str, Mask]
    nan_allowed: dict[str, Mask]
    function_ulps: dict[str, float] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    flush_to_zero: bool = False
    finite_impossible: dict[str, Mask] = field(default_factory=dict)
    posinf_allowed: dict[str, Mask] = field(default_factory=dict)
    neginf_allowed: dict[str, Mask] = field(default_factory=dict)
    loss_floor: LossFloor | None = None

    @property
    def vacuous(self) -> dict[str, str]:
        """quantity -> why its rigorous bound is infinite (the notes that name a graded quantity)."""
        return {q: why for q, why in self.notes.items() if q in self.rigorous}

    def signed_inf_allowed(self, q: str) -> tuple[Mask, Mask]:
        """(``+inf`` allowed, ``-inf`` allowed) for quantity ``q`` (:func:`signed_infinities`); both
        wherever ``inf_allowed`` for a quantity without per-sign masks."""
        pos = self.posinf_allowed.get(q, self.inf_allowed[q])
        neg = self.neginf_allowed.get(q, self.inf_allowed[q])
        return pos, neg

    @property
    def may_overflow(self) -> dict[str, Mask]:
        """``inf_allowed | nan_allowed`` per quantity."""
        return {q: self.inf_allowed[q] | self.nan_allowed[q] for q in self.inf_allowed}

    def to_step_bounds(self) -> StepBounds:
        """The same bounds as a :class:`harness.bounds.StepBounds` (the linear path's container, for
        code that grades with it): the function accuracy used is named in its ``note``."""
        used = ", ".join(f"{k} {v:g}" for k, v in self.function_ulps.items() if k not in FUNCTION_ULPS or v != FUNCTION_ULPS[k])
        note = ("automatic bounds (harness.models.bounds)"
                + (f"; function accuracy overridden or added: {used}" if used else ""))
        return StepBounds(rigorous=dict(self.rigorous), expected=dict(self.expected), inf_allowed=dict(self.inf_allowed),
                          nan_allowed=dict(self.nan_allowed), note=note, vacuous=self.vacuous,
                          flush_to_zero=self.flush_to_zero, finite_impossible=dict(self.finite_impossible) or None,
                          posinf_allowed={q: self.signed_inf_allowed(q)[0] for q in self.inf_allowed},
                          neginf_allowed={q: self.signed_inf_allowed(q)[1] for q in self.inf_allowed},
                          loss_floor=self.loss_floor)


def compute_format(fmt: FloatFormat) -> FloatFormat:
    """The type elementary functions are evaluated in for ``fmt``: float32 for float16 and bfloat16
    (PyTorch's opmath type, NumPy's half loops, ml_dtypes), else ``fmt`` itself."""
    return FLOAT32 if fmt.precision < FLOAT32.precision else fmt


def constant_rounding(fmt: FloatFormat) -> float:
    """Relative error of a constant that is not a float of ``fmt`` as an implementation holds it:
    rounded to float64 (a Python float), possibly to float32 (opmath), then to ``fmt``:
    ``u (1 + w) + w`` with ``w = 2**-24 + 2**-53`` below float32's precision, ``2**-53`` for
    float32, 0 for float64 (Higham §2.2, one factor ``(1 + d)`` per rounding)."""
    u = fmt.unit_roundoff
    w = 2.0**-24 + 2.0**-53 if fmt.precision < 24 else 2.0**-53 if fmt.precision < 53 else 0.0
    return u * (1 + w) + w


# ---------------------------------------------------------------------------------------------------
# activations: magnitudes in float64 (accurate to ~1e-15 relative; the safety factor covers that)


def _sigmoid(z: F64) -> F64:
    """``1/(1 + exp(-z))`` without overflow (relative error ~1e-16 everywhere)."""
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(-np.abs(z))
    return np.asarray(np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e)), dtype=np.float64)


def _phi(z: F64) -> F64:
    return np.asarray(_INV_SQRT_2PI * np.exp(-0.5 * z * z), dtype=np.float64)


_ERFC = np.vectorize(math.erfc, otypes=[np.float64])


def _Phi(z: F64) -> F64:
    """The normal distribution function ``erfc(-z/sqrt 2)/2`` (accurate in both tails)."""
    return np.asarray(0.5 * _ERFC(-np.asarray(z, dtype=np.float64) * _SQRT1_2), dtype=np.float64)


#: f, f', f'' of each smooth activation (float64 NumPy).
_SMOOTH: dict[str, tuple[Callable[[F64], F64], Callable[[F64], F64], Callable[[F64], F64]]] = {
    "tanh": (np.tanh, lambda z: 1.0 / np.cosh(z) ** 2, lambda z: -2.0 * np.tanh(z) / np.cosh(z) ** 2),
    "sigmoid": (_sigmoid, lambda z: _sigmoid(z) * _sigmoid(-z),
                lambda z: _sigmoid(z) * _sigmoid(-z) * -np.tanh(z / 2)),
    "softplus": (lambda z: np.logaddexp(0.0, z), _sigmoid, lambda z: _sigmoid(z) * _sigmoid(-z)),
    "gelu": (lambda z: z * _Phi(z), lambda z: _Phi(z) + z * _phi(z), lambda z: _phi(z) * (2.0 - z * z)),
}
#: Critical points of f itself (for max |f| on an interval): gelu's minimum at z ~ -0.7518.
_VALUE_CRIT = {"gelu": (-0.7517915241,)}

_ERF = np.vectorize(math.erf, otypes=[np.float64])
_TWO_OVER_SQRTPI = 2.0 / math.sqrt(math.pi)


def _pos(z: F64) -> F64:
    """``z`` where positive, NaN elsewhere (outside log's and sqrt's domain: the bound is then inf)."""
    z = np.asarray(z, dtype=np.float64)
    return np.asarray(np.where(z > 0, z, np.nan))


#: The elementary functions of the expression kind (:func:`harness.models.symbolic.element_function`):
#: f, f', f'', the critical points of f' and of f'' (where |f'| and |f''| may peak inside an interval),
#: and the ULPs entry of the library function. log and sqrt: f' and f'' are monotone in ``z > 0`` and
#: undefined at or below 0 (an interval reaching 0 gives an infinite bound); sin, cos: |f'|, |f''| <= 1
#: are taken as the bound (the critical points of sin' are the zeros of sin: at every interval end or
#: inside it, max |cos| <= 1 is documented as the Lipschitz bound); erf: ``f' = 2/sqrt(pi) exp(-z^2)``
#: peaks at 0, ``f'' = -2 z f'`` at ``+-1/sqrt 2``; abs: Lipschitz 1, exact.
_ELEMENTARY: dict[str, tuple[Callable[[F64], F64], Callable[[F64], F64], Callable[[F64], F64],
                             tuple[float, ...], tuple[float, ...]]] = {
    "exp": (np.exp, np.exp, np.exp, (), ()),
    "log": (lambda z: np.log(_pos(z)), lambda z: 1.0 / _pos(z), lambda z: -1.0 / _pos(z) ** 2, (), ()),
    "sqrt": (lambda z: np.sqrt(_pos(z)), lambda z: 0.5 / np.sqrt(_pos(z)), lambda z: -0.25 / _pos(z) ** 1.5, (), ()),
    "sin": (np.sin, lambda z: np.ones_like(z), lambda z: np.ones_like(z), (), ()),
    "cos": (np.cos, lambda z: np.ones_like(z), lambda z: np.ones_like(z), (), ()),
    "erf": (_ERF, lambda z: _TWO_OVER_SQRTPI * np.exp(-z * z), lambda z: -2 * z * _TWO_OVER_SQRTPI * np.exp(-z * z),
            (0.0,), (-_SQRT1_2, _SQRT1_2)),
}
#: max |sin|, |cos| on an interval: 1 (the Lipschitz bound) -- the value magnitude for the ULP term.
_BOUNDED_BY_ONE = ("sin", "cos")


def _exp_change(a: F64, E: F64, mvt: F64) -> F64:
    """``max |exp(a^) - exp(a)|`` over ``|a^ - a| <= E``: ``exp(a) expm1(E)`` exactly (exp is increasing and
    ``exp(a + E) - exp(a) >= exp(a) - exp(a - E)``), with float64's few-ULP error of ``exp`` and ``expm1`` covered by
    ``1 + 2**-40``; the smaller of it and the mean-value bound ``mvt = exp(a + E) E``, which is ``E exp(E) / expm1(E)``
    times larger (1.33 at ``E = 0.59``: a bfloat16 argument near 75 computed with its two roundings, where the
    mean-value bound exceeded ``exp(a)`` itself and a quotient by ``1 + exp(-z)`` was unbounded; helper-182)."""
    with np.errstate(over="ignore", invalid="ignore"):
        exact = np.exp(a) * np.expm1(E) * _FN_SAFETY
    return np.asarray(np.where(np.isfinite(exact), np.minimum(mvt, exact), mvt))


def elementary_value_bound(name: str, a: F64, E: F64, ctx: FnContext) -> F64:
    """Bound of ``|f^(a^) - f(a)|`` for an elementary function of an expression model: the
    propagated error ``max |f'| E`` over the interval plus the library's ULPs (:data:`FUNCTION_ULPS`),
    in the computing type and rounded for the half types. ``abs`` is exact (Lipschitz 1)."""
    if name == "abs":
        return np.asarray(E + (ctx.reg.eta if ctx.reg.ftz else 0.0))
    f, d1, _, c1, _ = _ELEMENTARY[name]
    lo, hi = a - E, a + E
    prop = _exp_change(a, E, interval_max_abs(d1, lo, hi, c1) * E) if name == "exp" else interval_max_abs(d1, lo, hi, c1) * E
    mag = np.ones_like(a) if name in _BOUNDED_BY_ONE else interval_max_abs(f, lo, hi, ())
    return np.asarray(prop + ctx.finish(ctx.lib(name, mag), mag))


def elementary_grad_bound(name: str, a: F64, E: F64, y: F64, Ey: F64, ctx: FnContext) -> F64:
    """Bound of ``|g^ - f'(a)|`` for the derivative node of an elementary function: ``max |f''| E``
    over the interval, or from the forward value where autograd uses it (exp: ``y``, error ``Ey``;
    sqrt: ``1/(2y)``, ``Ey / (2|y|(|y| - Ey))``), the larger; plus the formula's evaluation: exp's
    or cos/sin's ULPs, erf' ``2/sqrt(pi) exp(-z^2)`` (the rounding of ``z^2`` through exp,
    exp's ULPs, two products; autograd runs it as separate operations, each rounded to the dtype
    even for the half types), one division for log and sqrt (the doubling is exact); abs: the
    jump 2 where the interval contains 0 (``E > 0``)."""
    lo, hi = a - E, a + E
    uc = ctx.uc
    if name == "abs":
        return np.asarray(np.where((E > 0) & (lo <= 0) & (hi >= 0), 2.0, 0.0))
    _, d1, d2, c1, c2 = _ELEMENTARY[name]
    route = interval_max_abs(d2, lo, hi, c2) * E
    gmax = interval_max_abs(d1, lo, hi, c1)
    if name == "exp":
        route = np.maximum(_exp_change(a, E, route), Ey)
        ev = ctx.lib("exp", gmax + route)
    elif name == "sqrt":
        ay = np.abs(y)
        with np.errstate(divide="ignore", invalid="ignore"):
            via_out = np.where(ay > Ey, Ey / (2 * ay * (ay - Ey)), np.inf)
        route = np.maximum(route, via_out)
        ev = 2 * uc * (gmax + route)
    elif name == "log":
        ev = 2 * uc * (gmax + route)
    elif name in ("sin", "cos"):
        ev = ctx.lib("cos" if name == "sin" else "sin", np.ones_like(a))
    else:  # erf: autograd's ``2/sqrt(pi) * exp(-(z.pow(2))) * grad``, separate ops, each rounded to the dtype
        M = np.maximum(np.abs(lo), np.abs(hi))
        ud = ctx.fmt.unit_roundoff
        ev = ((ud * M * M * (1 + 4 * ud) + 2 * float(ctx.ulps["exp"]) * uc + 3 * ud + 2.0**-24)
              * (gmax + route) * (1 + 4 * ud))
        ev = ev + 2 * float(ctx.ulps["exp"]) * ctx.cfmt.underflow_quantum
    return np.asarray(route + ctx.finish(ev, gmax + route))


def interval_max_abs(f: Callable[[F64], F64], lo: F64, hi: F64, crit: tuple[float, ...]) -> F64:
    """``max |f|`` over ``[lo, hi]`` element-wise: the largest of ``|f|`` at both ends and at every
    critical point of ``f`` inside (an extremum of a differentiable function on an interval lies at
    an end or where ``f' = 0``). Times ``1 + 2**-40`` for the float64 evaluation of ``f``."""
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        m = np.maximum(np.abs(f(lo)), np.abs(f(hi)))
        for c in crit:
            inside = (lo <= c) & (c <= hi)
            if np.any(inside):
                m = np.where(inside, np.maximum(m, abs(float(f(np.array(c))))), m)
    return np.asarray(np.nan_to_num(m, nan=np.inf) * _FN_SAFETY)


@dataclass(frozen=True)
class FnContext:
    """What a function rule needs: the dtype, its rounding model, the computing type, the ULPs table."""

    fmt: FloatFormat
    reg: Regime
    ulps: Mapping[str, float]

    @property
    def cfmt(self) -> FloatFormat:
        return compute_format(self.fmt)

    @property
    def uc(self) -> float:
        return self.cfmt.unit_roundoff

    def finish(self, err_c: F64, mag: F64) -> F64:
        """Error of a value computed in the computing type with error ``err_c`` (magnitude ``mag``)
        and delivered in the dtype: one more rounding ``u (mag + err_c)`` for the half types, and
        the underflow of the result (``eta``; the computing type's own subnormal spacing is in
        ``err_c``)."""
        if self.cfmt is self.fmt:
            return err_c + self.reg.eta
        return err_c + self.fmt.unit_roundoff * (mag + err_c) + self.reg.eta

    def delivered(self, e: F64, pre: F64, value: F64) -> F64:
        """``e`` (a bound of a function value computed in the computing type and delivered in the dtype) narrowed where
        the delivery is determined: for the half types, a computing-type value within ``pre`` of the exact ``value``
        whose whole interval rounds to one normal float ``F`` of the dtype (rounding to nearest is monotone: both ends
        round to ``F``) is delivered as ``F``, an error of ``|F - value|`` exactly (``value`` the truth's nearest
        float64: ``2**-52 |value|`` more), or kept in the computing type by a fused step that rounds only its outputs
        (within ``pre``): the larger of the two. The one rounding ``u (mag + err_c)`` of :meth:`finish` allowed ``1 - u``
        for a saturated ``tanh`` (float32's ``1 - 2**-23`` rounds to 1 in bfloat16), and ``1 - y^2`` up to ``2 u``
        after it, where every correct evaluation gives 1 and 0 (helper-182). float32 and float64: ``e`` unchanged."""
        if self.cfmt is self.fmt:
            return e
        v = np.asarray(value, dtype=np.float64)
        r, lo, hi = _delivery_interval(v, pre, self.fmt)
        with np.errstate(invalid="ignore", over="ignore"):
            same = np.isfinite(r) & np.isfinite(lo) & (lo == hi) & (np.abs(lo) >= self.fmt.min_normal)
            at = np.maximum(np.abs(lo - v) * (1 + 2.0**-50) + 2.0**-52 * np.abs(v), r)
        return np.asarray(np.where(same, np.minimum(e, at), e))

    def lib(self, name: str, mag: F64) -> F64:
        """A library function's own error at a result of magnitude <= ``mag``, in the computing type:
        ``k ULPs <= 2 k u |f| + k 2 eta_sub`` (ULP of a normal ``y`` is at most ``2 u |y|``)."""
        k = float(self.ulps[name])
        return 2.0 * k * self.uc * mag + 2.0 * k * self.cfmt.underflow_quantum


def activation_value_bound(name: str, a: F64, E: F64, ctx: FnContext, slope: float | None = None,
                           value: F64 | None = None) -> F64:
    """Bound of ``|f^(a^) - f(a)|`` for an activation ``f`` given ``|a^ - a| <= E``.

    ``f^`` is a correct library evaluation: PyTorch's formulas (tanh: SLEEF/libm tanh; sigmoid
    ``1/(1 + exp(-z))``; softplus ``log1p(exp(z))`` and ``z`` above 20; gelu
    ``z * 0.5 * (1 + erf(z * (1/sqrt 2)))``; relu exact; leaky ReLU ``slope * z`` for ``z < 0``).
    Returns ``max_{[a-E, a+E]} |f'| E`` + the formula's evaluation error (module docstring).
    """
    lo, hi = a - E, a + E
    if name in ("relu", "leaky_relu"):
        s = 0.0 if name == "relu" else float(slope if slope is not None else 0.01)
        L = np.where(hi > 0, max(1.0, s), 0.0) if name == "relu" else np.where(lo < 0, np.where(hi > 0, max(1.0, s), s), 1.0)
        prop = L * E
        if name == "relu" or s == 0.0:
            return np.asarray(prop + (ctx.reg.eta if ctx.reg.ftz else 0.0))
        # slope * z^ for z^ < 0: the slope as held (relative constant_rounding) and one product rounding
        neg = lo <= 0
        mz = np.abs(a) + E
        rs = constant_rounding(ctx.fmt)
        ev = np.where(neg, (rs * (1 + ctx.uc) + ctx.uc) * s * mz, 0.0)
        return np.asarray(prop + ctx.finish(ev, s * mz) * (neg | ctx.reg.ftz))
    f, d1, _ = _SMOOTH[name]
    c1, _ = CRITICAL_POINTS[name]
    prop = interval_max_abs(d1, lo, hi, c1) * E
    mag = interval_max_abs(f, lo, hi, _VALUE_CRIT.get(name, ()))
    uc = ctx.uc
    if name == "tanh":
        ev = ctx.lib("tanh", mag)
    elif name == "sigmoid":
        ev = ctx.lib("exp", mag) + 2.0 * uc * (1 + uc) ** 2 * mag
        # exp(-z) overflows the computing type for z < -log(max): 1/inf = 0, an error of at most |f|
        ev = np.where(lo < -math.log(ctx.cfmt.max_finite), np.maximum(ev, mag), ev)
    elif name == "softplus":
        ev = ctx.lib("exp", mag) * (1 + uc) + ctx.lib("log1p", mag)
        ev = np.where(hi > SOFTPLUS_THRESHOLD, np.maximum(ev, 0.0) + SOFTPLUS_THRESHOLD_ERROR, ev)
    elif name == "gelu":
        ev = _gelu_value_eval(lo, hi, mag, ctx)
    else:  # pragma: no cover - _SMOOTH's keys
        raise ValueError(name)
    e = np.asarray(prop + ctx.finish(ev, mag))
    return e if value is None else ctx.delivered(e, prop + ev, value)


def _erf_error(lo: F64, hi: F64, ctx: FnContext, key: str = "gelu_erf") -> tuple[F64, F64]:
    """Error of ``erf(fl(z * fl(1/sqrt 2)))`` against ``erf(z/sqrt 2)`` for ``z`` in ``[lo, hi]``,
    and ``M = max |z|``: the argument errs by ``dt = (2u + u^2) M / sqrt 2``, passed through
    ``erf' <= 2/sqrt(pi) exp(-(max(0, m/sqrt 2 - dt))^2)`` (``m = min |z|``), plus erf's ULPs
    (``FUNCTION_ULPS[key]``, as ULPs of 1: an absolute error)."""
    uc = ctx.uc
    M = np.maximum(np.abs(lo), np.abs(hi))
    m = np.where((lo <= 0) & (hi >= 0), 0.0, np.minimum(np.abs(lo), np.abs(hi)))
    dt = (2 * uc + uc * uc) * M * _SQRT1_2
    slope = 2.0 / math.sqrt(math.pi) * np.exp(-np.maximum(0.0, m * _SQRT1_2 - dt) ** 2)
    return np.asarray(slope * dt + ctx.lib(key, np.ones_like(M))), M


def _gelu_value_eval(lo: F64, hi: F64, mag: F64, ctx: FnContext) -> F64:
    """torch's ``x * 0.5 * (1 + erf(x * M_SQRT1_2))``: the erf error (:func:`_erf_error`) times
    ``0.5 |x|``, the rounding of ``1 + erf`` (``u 2 Phi``) times ``0.5 |x|``, two product roundings."""
    uc = ctx.uc
    e_erf, M = _erf_error(lo, hi, ctx)
    one_plus = 2.0 * _Phi(hi) * _FN_SAFETY + e_erf  # |1 + erf^| (Phi increasing)
    return np.asarray((0.5 * M * (e_erf + uc * one_plus) + 2 * uc * (mag + 0.5 * M * e_erf * (1 + uc))) * (1 + 4 * uc))


def activation_grad_bound(name: str, a: F64, E: F64, y: F64, Ey: F64, ctx: FnContext,
                          slope: float | None = None) -> F64:
    """Bound of ``|g^ - f'(a)|`` for the derivative node of an activation, given ``|a^ - a| <= E``
    and the forward value's ``|y^ - y| <= Ey``.

    The implementation may evaluate ``f'`` from the argument (``max |f''| E`` over the interval)
    or, for tanh and sigmoid, from the forward output (``1 - y^2``: ``(2|y| + Ey) Ey``;
    ``y (1 - y)``: ``(|1 - 2y| + Ey) Ey``, exact changes of the formulas; a recomputed ``f(a^)``
    errs by at most ``Ey`` too): the larger is used. Plus the rounding of the formula: tanh
    ``fl(1 - fl(y^2))``: ``u (1 + u)(|y| + Ey)^2 + u |g^|``; sigmoid ``fl(fl(1 - y) y)``: ``2u (1 + u) |g^|``;
    softplus ``e / (1 + e)`` with ``e = exp(z)`` (or ``1 / (1 + exp(-z))``): exp's ULPs and two
    roundings, relative, and the threshold term; gelu ``0.5 (1 + erf(z/sqrt 2)) + z kBeta
    exp(-z^2/2)`` as torch writes it (:func:`_gelu_grad_eval`). ReLU/leaky ReLU: exact values
    ``{0 or slope, 1}`` and the convention at 0: where the interval contains 0 (and ``E > 0``) the
    computed derivative may be any of them (the jump).
    """
    lo, hi = a - E, a + E
    uc = ctx.uc
    if name in ("relu", "leaky_relu"):
        s = 0.0 if name == "relu" else float(slope if slope is not None else 0.01)
        vals_lo, vals_hi = min(0.0, s), max(1.0, s)
        jump = np.where((E > 0) & (lo <= 0) & (hi >= 0), vals_hi - vals_lo, 0.0)
        rs = constant_rounding(ctx.fmt) * s if name == "leaky_relu" else 0.0
        return np.asarray(jump + np.where(lo <= 0, rs, 0.0) + (ctx.reg.eta if ctx.reg.ftz else 0.0))
    f, d1, d2 = _SMOOTH[name]
    c1, c2 = CRITICAL_POINTS[name]
    route = interval_max_abs(d2, lo, hi, c2) * E
    gmax = interval_max_abs(d1, lo, hi, c1)
    ay = np.abs(y)
    if name == "tanh":
        route = np.maximum(route, (2 * ay + Ey) * Ey)
        ev = uc * (1 + uc) * (ay + Ey) ** 2 + uc * (gmax + route)
        ev = np.maximum(ev, _native_half_tanh_grad(ay, Ey, gmax + route, ctx, y))
    elif name == "sigmoid":
        route = np.maximum(route, (np.abs(1 - 2 * y) + Ey) * Ey)
        # fl(fl(1 - y) y) in the computing type (float32 for the half types, then one rounding: ctx.finish). Not
        # widened to the half type's own roundings (JAX's g y^ (1 - y^) in float16/bfloat16, outside the documented
        # model with jax.nn.sigmoid itself, README): that widening let a bfloat16 gradient 1 + 2**-5 too large agree
        # at z = -1 (0.863 of the bound; disagree at 1.10 without it), and no correct step in the model needed it
        # (helper-185's 120 cases peaked at 0.98 with and without it; helper-186)
        ev = 2 * uc * (1 + uc) * (gmax + route)
    elif name == "softplus":
        ev = (ctx.lib("exp", gmax + route) + 2 * uc * (1 + uc) ** 2 * (gmax + route)) * (1 + 2 * uc)
        ev = np.where(lo < -math.log(ctx.cfmt.max_finite), np.maximum(ev, gmax), ev)
        ev = np.where(hi > SOFTPLUS_THRESHOLD, ev + SOFTPLUS_THRESHOLD_ERROR, ev)
    elif name == "gelu":
        ev = _gelu_grad_eval(lo, hi, ctx)
    else:  # pragma: no cover
        raise ValueError(name)
    return np.asarray(route + ctx.finish(ev, gmax + route))


def _delivery_interval(v: F64, err: F64, fmt: FloatFormat) -> tuple[F64, F64, F64]:
    """The half-type floats a computing-type value within ``err`` of the exact ``v`` (its nearest float64) may be
    delivered as: ``(r, lo, hi)``, ``r`` the radius widened for float64's own roundings (``2**-40`` of ``err``,
    ``2**-50 |v|`` and one subnormal spacing) and ``lo``, ``hi`` the two ends ``v -+ r`` rounded to nearest in ``fmt``
    (rounding is monotone: every value between is delivered between them). Shared by :meth:`FnContext.delivered` and
    :func:`_native_half_tanh_grad`."""
    with np.errstate(invalid="ignore", over="ignore"):
        r = np.asarray(err, dtype=np.float64) * (1 + 2.0**-40) + 2.0**-50 * np.abs(v) + 2.0**-1074
        return r, round_to_format(v - r, fmt), round_to_format(v + r, fmt)


def _native_half_tanh_grad(ay: F64, Ey: F64, g: F64, ctx: FnContext, y: F64 | None = None) -> F64:
    """The rounding error of ``tanh'`` written in the forward value and evaluated in the half type itself (not in
    float32 and rounded once): JAX's jvp ``(g + g y^) (1 - y^)`` (``jax._src.lax.lax``, ``tanh_p``), ``1 - y^ y^``,
    ``(1 - y^)(1 + y^)``, each operation rounded in the dtype, per unit of the incoming gradient (``g`` here:
    ``|1 - y^2| <= gmax + route``; ``y`` the signed value, ``ay = |y|``, ``|y^ - y| <= E_y``):

    - JAX's form: ``fl(g y^)`` errs by ``u |g y^|``, multiplied by ``|1 - y^| <= |1 - y| + E_y`` (``g + g y^``
      cancels near ``y^ = -1``, where ``1 - y^ = 2``), three more roundings relative:
      ``u (1 + u)^3 ((|y| + E_y)(|1 - y| + E_y) + 3 |1 - y^2|)`` (``1 + |y| + E_y`` in place of ``|1 - y| + E_y``
      where ``y`` is not given);
    - ``fl(1 - fl(y^ y^))``: ``u (1 + u) ((|y| + E_y)^2 + |1 - y^2|)``, and one rounding of the product by ``g``;
      ``(1 - y^)(1 + y^)``: three roundings relative.

    Where float32's interval ``y +- E_y`` holds at most two neighbouring half floats (the delivered value is one of
    them, :meth:`FnContext.delivered`; neighbours: their midpoint rounds to one of them), the two forms free of ``g``
    are evaluated exactly at each candidate ``F`` (``|fl(1 - fl(F F)) -
    (1 - F^2)|``, ``1 - F^2`` exact in float64) instead of ``u (|y| + E_y)^2``: near ``y = +1`` that term was half
    the derivative in bfloat16, and a step with ``tanh' = 1 - y`` agreed at ``z = 3.1`` (``y^ = 1 - 2**-8``:
    ``2**-8`` for ``2**-7``; ``grad_b1`` at 0.455 of the bound, ``disagree`` at 4.58 before the term) and float16
    gradients scaled by ``1 + 2**-5`` agreed at ``z = 3.3..4.4`` (``disagree`` at 1.07..1.31 before; helper-186,
    ``tests/test_attack_h186.py``). Every form is exact where ``F = +-1``. Without the term a float16 JAX MLP
    (``jnp.tanh``, ``jax.grad``) was ``disagree`` at 1.6 times the bound of ``grad_W1`` where ``y^ = -1 + 2**-11``
    (helper-185, ``tests/test_attack_h185.py``). float32 and float64: 0 (the computing type's ``uc`` term covers
    them)."""
    if ctx.cfmt is ctx.fmt:
        return np.zeros_like(np.asarray(g, dtype=np.float64))
    u = ctx.fmt.unit_roundoff
    m = ay + Ey
    if y is None:
        return np.asarray(np.where(ay - Ey > 1 - u, 0.0, u * (1 + u) ** 3 * (m * (1 + m) + 3 * g)))
    ys = np.asarray(y, dtype=np.float64)
    jax = u * (1 + u) ** 3 * (m * (np.abs(1 - ys) + Ey) + 3 * g)
    square = u * (1 + u) * (m * m + g) + u * (1 + u) * (g + u * (1 + u) * (m * m + g))
    _, lo, hi = _delivery_interval(ys, Ey, ctx.fmt)
    with np.errstate(invalid="ignore", over="ignore"):
        mid = round_to_format((lo + hi) / 2, ctx.fmt)
        known = (np.isfinite(lo) & np.isfinite(hi) & ((mid == lo) | (mid == hi))
                 & (np.minimum(np.abs(lo), np.abs(hi)) >= ctx.fmt.min_normal))
        e = np.zeros_like(ys)
        for F in (np.where(known, lo, 0.0), np.where(known, hi, 0.0)):
            exact = 1 - F * F  # F has at most 11 significant bits: F*F and 1 - F*F exact in float64
            forms = np.maximum(np.abs(round_to_format(1 - round_to_format(F * F, ctx.fmt), ctx.fmt) - exact),
                               np.abs(round_to_format(round_to_format(1 - F, ctx.fmt) * round_to_format(1 + F, ctx.fmt),
                                                      ctx.fmt) - exact))
            at_F = forms + u * (1 + u) * (np.abs(exact) + forms)  # the product by g, rounded
            jax_F = u * (1 + u) ** 3 * (np.abs(F) * np.abs(1 - F) + 3 * np.abs(exact))
            e = np.maximum(e, np.maximum(at_F, jax_F))
    e = np.where(known, e, np.maximum(jax, square))
    return np.asarray(np.where(ay - Ey > 1 - u, 0.0, e))


def _gelu_grad_eval(lo: F64, hi: F64, ctx: FnContext) -> F64:
    """torch's gelu backward ``cdf + x pdf`` with ``cdf = 0.5 (1 + erf(x M_SQRT1_2))`` and
    ``pdf = kBeta exp(-0.5 x x)``: cdf errs by ``0.5 (e_erf + u |1 + erf^|)``; pdf relatively by
    ``u M^2/2`` (the rounding of ``x x`` through exp) + exp's ULPs + two roundings (kBeta, the
    product); ``x pdf`` one more; the sum ``u (cdf + |x pdf|)``. Magnitudes: ``Phi(hi)`` and
    ``max |z| phi(z)`` on the interval (critical points +-1)."""
    uc = ctx.uc
    e_erf, M = _erf_error(lo, hi, ctx)
    cdf = _Phi(hi) * _FN_SAFETY
    e_cdf = 0.5 * (e_erf + uc * (2 * cdf + e_erf))
    S1 = interval_max_abs(lambda z: z * _phi(z), lo, hi, (-1.0, 1.0))
    r_pdf = uc * M * M / 2 * (1 + 4 * uc) + 2 * float(ctx.ulps["exp"]) * uc + 2 * uc
    r_x = (r_pdf + uc) * (1 + 4 * uc)
    return np.asarray((e_cdf + r_x * S1 + uc * (cdf + e_cdf + S1 * (1 + r_x))) * (1 + 4 * uc)
                      + 2 * float(ctx.ulps["exp"]) * ctx.cfmt.underflow_quantum)


# ---------------------------------------------------------------------------------------------------
# the walk


@dataclass
class _State:
    """Per-node results of the walk: exact magnitude, rigorous and expected errors, overflow mask."""

    val: list[F64]
    E: list[F64]
    X: list[F64]
    over: list[Mask]
    vacuous: dict[int, str]


Rule = Callable[[Node, list[F64], list[F64], "_Walk"], F64]


@dataclass
class _Walk:
    """One error-domain evaluation: ``gam(n)`` is the reduction constant (rigorous ``gamma_n`` or the
    expected ``min(gamma_n, lambda sqrt(n) u)``)."""

    graph: Graph
    fmt: FloatFormat
    reg: Regime
    ctx: FnContext
    gam: Callable[[int], float]
    vals: list[F64]
    Es: list[F64] = field(default_factory=list)
    vacuous: dict[int, str] = field(default_factory=dict)
    #: node id -> (terms, magnitudes of product terms, magnitudes of other terms, propagated input
    #: error, products) of a sum whose terms an implementation may accumulate in any order (a matmul,
    #: and add/sub chains: the bias in addmm's accumulator, ``X W + b - y``, an expression's terms)
    frames: dict[int, tuple[int, F64, F64, F64, int]] = field(default_factory=dict)
    #: node id -> (lowest bit exponent over the frame's terms, all terms exact) for the exactness test
    exact_frames: dict[int, tuple[F64, Mask]] = field(default_factory=dict)
    #: per node (filled in node order by the rigorous walk, given to the expected one): True where
    #: the element may depend on an intermediate beyond the dtype's range (:func:`_overflow_node`)
    over: list[Mask] = field(default_factory=list)
    #: the regime of the update's nodes (role ``"update"``: the learning rate it holds, ``lr g``, ``p - lr g``):
    #: element-wise, they flush only where the step declares flush-to-zero, as :func:`harness.bounds.step_bounds`'s
    #: update; None: ``reg``
    update_reg: Regime | None = None
    #: per node (rigorous walk): (+inf possible, -inf possible, NaN possible)
    signs: list[tuple[Mask, Mask, Mask]] = field(default_factory=list)
    #: the expected walk's reduction constant where a reduction's terms repeat (:mod:`harness.repeatedsums`: their
    #: partial sums' errors repeat with them): the first-order worst case ``n u``; None in the rigorous walk
    repeated_gam: Callable[[int], float] | None = None
    #: node id -> (positive, negative magnitudes, terms) of a sum frame, for the overflow masks
    sign_frames: dict[int, tuple[F64, F64, int]] = field(default_factory=dict)
    #: node id -> the factor the seed's constants may carry the node's underflows by (:func:`seed_carries`: the
    #: backward's operations on values the seed's factors may not have multiplied yet); absent: 1
    carry: dict[int, float] = field(default_factory=dict)
    #: node id -> the same factor for the seed itself and the nodes of :attr:`carry`: the values another association
    #: may hold there are at least this many times smaller (a declared chain's least magnitudes, :func:`_chain_count`)
    seeded: dict[int, float] = field(default_factory=dict)

    def eta(self, node: Node, mag: Any = None, count: int = 1) -> Any:
        """The underflow allowance of ``count`` roundings of ``node``: its regime's ``eta`` times :attr:`carry` and
        ``count``; with ``mag`` (the most the rounded values' magnitudes can add up to, element-wise) at most ``mag``
        (:meth:`harness.bounds.Regime.rounding_underflow`)."""
        c = self.carry.get(node.id, 1.0) * count
        reg = self.regime(node)
        return reg.eta * c if mag is None else reg.rounding_underflow(mag, c)

    def shift(self, node: Node) -> float:
        """How many bits lower the values ``node`` rounds may lie in another association of the seed's factors:
        ``log2`` of :attr:`carry` rounded up (0 outside the backward)."""
        c = self.carry.get(node.id, 1.0)
        return float(math.ceil(math.log2(c))) if c > 1 else 0.0

    def exact_frame(self, nid: int) -> tuple[F64, Mask]:
        if nid in self.exact_frames:
            return self.exact_frames[nid]
        return float_bits(self.vals[nid])[0], np.asarray(self.Es[nid] == 0)

    def frame(self, nid: int) -> tuple[int, F64, F64, F64, int]:
        """A node's frame: its own (matmul, add, sub) or that of one term (any other node, and a sum the
        expression's text brackets, which :func:`_rule_addsub` gives no frame: :func:`harness.models.graph.grouped`)."""
        if nid in self.frames:
            return self.frames[nid]
        zero = np.zeros_like(self.Es[nid])
        return 1, zero, np.abs(self.vals[nid]) + self.Es[nid], self.Es[nid], 0

    def regime(self, node: Node) -> Regime:
        """The rounding regime of ``node``'s operation: :attr:`update_reg` for the update's nodes, else ``reg``."""
        return self.update_reg if self.update_reg is not None and node.role == "update" else self.reg

    def eta_ftz(self, node: Node | None = None) -> float:
        reg = self.reg if node is None else self.regime(node)
        return (reg.eta * (1.0 if node is None else self.carry.get(node.id, 1.0))) if reg.ftz else 0.0

    def gam_of(self, n: int, repeated: Callable[[], Mask]) -> float | F64:
        """The reduction constant of ``n`` terms per element: ``gam(n)``, or, in the expected walk, the first-order
        worst case ``repeated_gam(n)`` where ``repeated()`` (a mask of the result's elements, asked for only when that
        is larger) says the terms repeat."""
        g = self.gam(n)
        if self.repeated_gam is None or n < 2 or not math.isfinite(g):
            return g
        worst = self.repeated_gam(n)
        if g >= worst:  # min(gamma_n, lambda sqrt(n) u) >= n u already (n <= lambda**2): no screen
            return g
        mask = repeated()
        return np.where(mask, worst, g) if mask.any() else g


def exact_sum(S: F64, q: F64, ok: Mask, w: _Walk, shift: float = 0.0) -> Mask:
    """Where a sum of terms that are all exact (``ok``) and all multiples of ``2**q`` with
    ``sum |t| = S`` is computed exactly in any order: every partial sum is a multiple of ``2**q``
    of magnitude at most ``S``, a float of the dtype when ``S <= (2**p - 1) 2**q`` and ``2**q`` is
    not below the subnormal spacing (the smallest normal number with flush-to-zero); ``shift``: the same
    ``2**-shift`` times smaller too (the seed's factors applied later, :meth:`_Walk.shift`)."""
    return np.asarray(ok & sums_exactly(S, q, w.fmt, w.reg.ftz) & sums_exactly(S * 2.0**-shift, q - shift, w.fmt, w.reg.ftz))


def exact_products(A: F64, EA: F64, B: F64, EB: F64, w: _Walk, shift: float = 0.0) -> tuple[Mask, F64]:
    """Element-wise (broadcast): whether ``a^ b^`` is exactly ``a b`` (both known exactly and the
    product's significand fits the dtype without underflow, or an exact zero factor; ``shift``: also
    ``2**-shift`` times smaller, :meth:`_Walk.shift`) and the product's lowest bit exponent."""
    la, ma = float_bits(A)
    lb, mb = float_bits(B)
    fmt = w.fmt
    qlow = lowest_exponent(fmt, w.reg.ftz)
    with np.errstate(invalid="ignore"):
        width = (ma - la) + (mb - lb) + 2  # the product's significand has at most this many bits
        lsb = la + lb
        fits = (EA == 0) & (EB == 0) & (width <= fmt.precision) & (lsb - shift >= qlow) & (np.abs(A) * np.abs(B) <= fmt.max_finite)
        zero = ((A == 0) & (EA == 0)) | ((B == 0) & (EB == 0))
    return np.asarray(fits | zero), np.asarray(np.where(zero, np.inf, lsb))


def _rule_leaf(node: Node, a: list[F64], E: list[F64], w: _Walk) -> F64:
    """input/param: a float of the dtype, exact; with flush-to-zero a subnormal may be read as 0."""
    return np.asarray(w.reg.flushed(w.vals[node.id]), dtype=np.float64)


def _rule_const(node: Node, a: list[F64], E: list[F64], w: _Walk) -> F64:
    """const: held (learning rate): the spread of the values an implementation may multiply by
    (:func:`harness.bounds.learning_rate_spread`); else its rounding (:func:`constant_rounding`)."""
    value = Fraction(node.attrs["value"])
    c64 = float(value)
    in_fmt = float(round_to_format(np.array([c64]), w.fmt)[0])
    if node.attrs.get("held"):
        return np.full(node.shape, learning_rate_spread(in_fmt, c64, w.regime(node)))
    if Fraction(in_fmt) == value:
        return np.zeros(node.shape)
    return np.full(node.shape, constant_rounding(w.fmt) * abs(c64) + w.reg.scale_underflow(c64))


def _rule_matmul(node: Node, a: list[F64], E: list[F64], w: _Walk) -> F64:
    """Higham §3.5 eq. 3.12 with perturbed inputs (module docstring)."""
    A, B = np.abs(a[0]), np.abs(a[1])
    EA, EB = E[0], E[1]
    m = A.shape[-1]
    g = w.gam(m)
    if not math.isfinite(g):
        w.vacuous[node.id] = f"a matrix product of {m} terms per element: its growth (1 - u)^-{m} exceeds float64"
    n_eta = m + ((m - 1) if w.reg.ftz else 0)
    P = (A + EA) @ (B + EB)
    prop = EA @ B + A @ EB + EA @ EB
    w.frames[node.id] = (m, P, np.zeros_like(P), prop, m)

    def repeated() -> Mask:  # element (i, j) sums a[0][i, :] * a[1][:, j]: repeated where both factors repeat
        if a[0].ndim != 2 or a[1].ndim != 2:
            return np.zeros(P.shape, dtype=bool)
        return np.outer(repeating_terms(a[0].T, w.fmt), repeating_terms(a[1], w.fmt))

    ge = w.gam_of(m, repeated)
    # the m products' etas: each at most its product's magnitude, so all at most P (the flushed additions' as before)
    E_mm = ge * P + prop + (1 + ge) * (w.eta(node, P, m) + (n_eta - m) * w.eta(node))
    # exact evaluation (integer or dyadic data): every product exact and every partial sum a float
    ok, lsb = exact_products(a[0][:, :, None], EA[:, :, None], a[1][None, :, :], EB[None, :, :], w, w.shift(node))
    q, allok = np.min(lsb, axis=1), np.all(ok, axis=1)
    w.exact_frames[node.id] = (np.asarray(q), np.asarray(allok))
    return np.asarray(np.where(exact_sum(P, q, allok, w, w.shift(node)), 0.0, E_mm))


def _rule_sum(node: Node, a: list[F64], E: list[F64], w: _Walk) -> F64:
    """``gamma_{n-1} sum(|a| + E_a) + sum E_a`` (Higham §3.1, eq. 3.5) and flushed additions."""
    axis = node.attrs.get("axis")
    A = np.abs(a[0])
    n = A.size if axis is None else A.shape[axis]
    g = w.gam(max(n - 1, 0)) if n > 1 else 0.0
    if not math.isfinite(g):
        w.vacuous[node.id] = f"a sum of {n} terms: its growth (1 - u)^-{n - 1} exceeds float64"
    S = np.sum(A + E[0], axis=axis)

    bias: Any = 0.0
    if w.repeated_gam is not None and n - 1 > LAMBDA**2:  # the expected walk, where the worst case exceeds its model
        # (the terms of each result element, one column each)
        cols = a[0].reshape(-1, 1) if axis is None else np.moveaxis(a[0], int(axis), 0).reshape(n, -1)
        repeats, b = repeating_terms_bias(cols, w.fmt)
        rep_mask, bias = repeats.reshape(np.shape(S)), b.reshape(np.shape(S))
    else:
        rep_mask = np.zeros(np.shape(S), dtype=bool)

    ge = w.gam_of(n - 1, lambda: rep_mask) if n > 1 else g
    # repeated terms: their worst case; distinct terms whose residues share a sign: that sign's systematic error
    E_s = ge * S + bias + np.sum(E[0], axis=axis) + (1 + ge) * max(n - 1, 0) * w.eta_ftz(node)
    q = np.min(float_bits(a[0])[0], axis=axis)
    exact = exact_sum(np.asarray(S), np.asarray(q), np.asarray(np.all(E[0] == 0, axis=axis)), w, w.shift(node))
    return np.asarray(np.where(exact, 0.0, E_s))


def _rule_addsub(node: Node, a: list[F64], E: list[F64], w: _Walk) -> F64:
    """One rounding of ``a^ +- b^``: ``u (|a +- b| + E_a + E_b) + E_a + E_b`` (exact when subnormal; the update's
    ``p - lr g`` rounds by at most half the spacing of its binade, perhaps after a rounding to a wider type,
    :func:`harness.bounds.nearest_rounding_bound` of ``|p'| + E_a + E_b``, as on the linear path's
    :func:`harness.bounds.update_bound`);
    and, since an implementation may fold the addition into a reduction it feeds on (the bias of
    ``addmm`` accumulated with the products, ``X W + b - y`` summed in any order: Higham §3.1 for
    the flattened sum; an expression's terms in the implementation's association), at least the bound
    of that whole sum in any order: ``gamma_m S_p + gamma_{m-1} S_o + P + (1 + gamma_m)(p + f (m - 1)) eta``
    over its ``m`` terms (``S_p`` the magnitudes of its ``p`` product terms, which pass one more
    rounding, ``S_o`` those of the other terms, ``P`` their propagated errors, ``f = 1`` with
    flush-to-zero)."""
    Es = E[0] + E[1]
    if node.role == "update":  # the update's p - lr g: half the spacing of its binade, the linear path's one rule
        seq = nearest_rounding_bound(np.abs(w.vals[node.id]) + Es, w.fmt) + Es + w.eta_ftz(node)
    else:
        seq = w.reg.u * (np.abs(w.vals[node.id]) + Es) + Es + w.eta_ftz(node)
    f0, f1 = w.frame(node.args[0]), w.frame(node.args[1])
    m = f0[0] + f1[0]
    Sp, Sl, P, prods = f0[1] + f1[1], f0[2] + f1[2], f0[3] + f1[3], f0[4] + f1[4]
    (q0, ok0), (q1, ok1) = w.exact_frame(node.args[0]), w.exact_frame(node.args[1])
    q, ok = np.minimum(q0, q1), ok0 & ok1
    if not grouped(node):  # a bracketed sum is one term of the sum it feeds (computed first, as written)
        w.frames[node.id] = (m, Sp, Sl, P, prods)
        w.exact_frames[node.id] = (np.asarray(q), np.asarray(ok))
    exact = exact_sum(Sp + Sl, q, ok, w, w.shift(node))
    if m < 3 and prods == 0:  # a + b: one rounding in any order
        return np.asarray(np.where(exact, 0.0, seq))
    g, g1 = w.gam(m), w.gam(m - 1)
    if not math.isfinite(g):
        w.vacuous[node.id] = f"a sum of {m} terms (products and added arrays): its growth (1 - u)^-{m} exceeds float64"
    fused = g * Sp + g1 * Sl + P + (1 + g) * (prods * w.eta(node) + (m - 1) * w.eta_ftz(node))
    return np.asarray(np.where(exact, 0.0, np.maximum(seq, fused)))


def _rule_mul(node: Node, a: list[F64], E: list[F64], w: _Walk) -> F64:
    """One rounding of ``a^ b^`` with ``|a^ b^ - a b| <= E_a |b| + |a| E_b + E_a E_b``.

    A scalar constant (not held: not the learning rate) times a ``sum`` (the loss's ``c sum R^2``) may be applied to every term before
    the sum (``mean`` of ``c R^2``): the relative errors are the same roundings in another order,
    but each of the ``n`` scaled terms may underflow: ``(1 + gamma_n) n eta`` more is allowed. Another scalar times a
    ``sum`` (an expression's parameter times its adjoint summed over the rows, ``b sum(g x1)``) likewise, each term a
    chain with it (:func:`_scalar_into_sum`)."""
    A, B = np.abs(a[0]), np.abs(a[1])
    prop = E[0] * B + A * E[1] + E[0] * E[1]
    extra: Any = 0.0
    for c, other in ((node.args[0], node.args[1]), (node.args[1], node.args[0])):
        on, cn = w.graph.nodes[other], w.graph.nodes[c]
        if cn.op == "const" and not cn.attrs.get("held") and cn.shape == () and on.op == "sum":
            src = w.graph.nodes[on.args[0]].shape
            n = math.prod(src) if on.attrs.get("axis") is None else src[int(on.attrs["axis"])]
            extra = np.maximum(extra, (1 + w.reg.gamma(n)) * n * w.reg.eta)
    into = _scalar_into_sum(node, w)
    if into is not None:
        extra = np.maximum(extra, into[0])
    # the product's own rounding: at most its magnitude; none where a factor is an exact integer (an integer multiple of
    # a float below the smallest normal number is a float: chain_underflow's integer rule), ReLU's derivative 1 or 0
    with np.errstate(invalid="ignore"):
        integer = ((E[0] == 0) & np.isfinite(a[0]) & (a[0] == np.round(a[0]))) | ((E[1] == 0) & np.isfinite(a[1]) & (a[1] == np.round(a[1])))
    own = np.where(integer, 0.0, w.eta(node, (A + E[0]) * (B + E[1])))
    carry = w.carry.get(node.id, 1.0)
    chain = _chain_count(node, w)
    if chain is not None:
        # a declared chain (the seed's 2, 1/N, 1/K; an expression's product; a power's adjoint) in another association:
        # its underflows beyond the own rounding counted below (the constants' own roundings, in E |a|, are not
        # subtracted; helpers 128, 130); the plan's product being exact does not make another association's exact where
        # one may underflow
        count = chain[0]
        extra = np.maximum(extra, count - own / carry)
    E_m = w.reg.u * (A + E[0]) * (B + E[1]) + prop + own + extra * carry
    if into is not None:  # the scaled terms' sum (its underflows in extra)
        E_m = np.maximum(E_m, into[2] + own + extra * carry)
    ok, _ = exact_products(a[0], E[0], a[1], E[1], w, w.shift(node))
    if into is not None:
        ok = ok & into[1]
    if chain is not None:
        # exact in every association: none may underflow, or the factors' own bits say that none rounds (helper-133)
        ok = ok & ((chain[0] == 0) | chain[2])
    return np.asarray(np.where(ok, 0.0, E_m))


def _scalars_over_sum(nid: int, w: _Walk, depth: int = 0) -> tuple[int, list[int]] | None:
    """``(the sum, its scalar factors)`` where node ``nid`` is a ``sum``, or a ``mul`` of a scalar (no constant) by
    such a node (``c (b sum(g x1))``), at most ``CHAIN_LIMIT - 2`` scalars deep; None otherwise."""
    from .plan import CHAIN_LIMIT

    node = w.graph.nodes[nid]
    if node.op == "sum":
        return nid, []
    if node.op != "mul" or depth >= CHAIN_LIMIT - 2:
        return None
    for s_id, o_id in ((node.args[0], node.args[1]), (node.args[1], node.args[0])):
        sn = w.graph.nodes[s_id]
        if sn.shape == () and sn.op != "const":
            below = _scalars_over_sum(o_id, w, depth + 1)
            if below is not None:
                return below[0], [*below[1], s_id]
    return None


def _scalar_factors(scalars: list[int], w: _Walk, others: int) -> list[int]:
    """The leaves of :func:`_scalar_into_sum`'s chains for its ``scalars``: a scalar that is the forward's product of
    scalars (``a b`` of ``x1*a*b*c``, whose ``grad_c`` the plan forms as ``(a b) sum(G x1)``) is its factors, which an
    implementation may multiply into the rows one by one (``sum(((G x1) a) b)``: ``(G x1) a`` may underflow where
    ``a b`` is 1; a correct float32 step was disagree at infinitely many times the bound, and 22 times where the rows'
    terms were not exact; helper-142), up to :data:`harness.models.plan.CHAIN_LIMIT` leaves with the ``others``; the
    finer chain's associations include the coarser one's (``a b`` is a subset's product)."""
    from .plan import CHAIN_LIMIT

    out = list(scalars)
    changed = True
    while changed:
        changed = False
        for i, nid in enumerate(out):
            node = w.graph.nodes[nid]
            if (node.op == "mul" and node.role == "forward" and node.shape == () and len(out) + others + 1 <= CHAIN_LIMIT
                    and all(w.graph.nodes[j].shape == () and w.graph.nodes[j].op != "const" for j in node.args)):
                out[i:i + 1] = list(node.args)
                changed = True
                break
    return out


def _scalar_into_sum(node: Node, w: _Walk) -> tuple[F64, Mask, F64] | None:
    """A ``mul`` of scalars ``b, c, ...`` (no constant: those are the rule above's) by a ``sum`` of terms ``t`` (the
    backward's ``b sum(g x1)`` of an expression ``x1*a*b``, ``c (b sum(g x1))`` of ``x1*a*b*c``:
    :func:`_scalars_over_sum`), which an implementation may multiply into the sum, ``sum((g x1) b)``, and into the
    term's product, ``sum(g (x1 b))``: each term is a product chain of ``t``'s two factors (or ``t``) and the scalars,
    in any association. Returns the underflow counts of those chains in their worst association
    (:func:`chain_underflow`) summed as the sum sums its terms, where the plan's exact product is exact in every
    association too (every chain exact, :func:`chain_exact`, and the sum of their products exact in any order,
    :func:`exact_sum`), and the bound of the sum of the chains, ``gamma_{n+k} sum M + sum (M - P)`` over its ``n``
    terms with ``k`` scalars, ``M`` the product of the leaves' ``|f| + E_f`` and ``P`` of their ``|f|``, plus
    ``(n - 1) eta_ftz`` (Higham 2002, §3.1: each term passes at most ``k + 1`` products and ``n - 1`` additions; where
    the plan's sum is exact, ``E = 0``, and the scaled terms' sum is not, the plan's roundings of the scalings do not
    cover it: ``sum((G x1) b)`` of float32 data was 3.48 times the bound, ``sum(((G x1) b) c)`` infinitely many
    times, helper-138); None for another ``mul``."""
    found = _scalars_over_sum(node.id, w)
    if found is None or not found[1]:
        return None
    sid, scalars = found
    sn = w.graph.nodes[sid]
    t = w.graph.nodes[sn.args[0]]
    leaves = [*(t.args if t.op == "mul" else (t.id,)), *_scalar_factors(scalars, w, len(t.args) if t.op == "mul" else 1)]
    reg = w.regime(node)
    mags, lows, scaled, rel = [], [], [], []
    for i in leaves:
        v, E = np.abs(np.asarray(w.vals[i], dtype=np.float64)), np.asarray(w.Es[i], dtype=np.float64)
        mags.append(v + E)
        # (an operand the seed's factors may not have multiplied yet: up to w.seeded[i] times smaller)
        lows.append(np.maximum(v - E * SAFETY, 0.0) * (1 - 2.0**-40) / w.seeded.get(i, 1.0))
        scaled.append(np.asarray(w.vals[i], dtype=np.float64) * 2.0 ** -math.ceil(math.log2(w.seeded.get(i, 1.0))))
        with np.errstate(divide="ignore", invalid="ignore"):
            rel.append(np.log1p(E / v))
    axis = sn.attrs.get("axis")
    n = math.prod(t.shape) if axis is None else t.shape[int(axis)]
    with np.errstate(invalid="ignore", over="ignore", under="ignore"):
        counts = np.broadcast_to(chain_underflow([], mags, reg, lows), t.shape)
        extra = np.sum(counts, axis=axis)
        each = np.broadcast_to(chain_exact(scaled, [w.Es[i] for i in leaves], w.fmt, reg.ftz or w.reg.ftz), t.shape)
        lsb = np.broadcast_to(sum(float_bits(v)[0] for v in scaled), t.shape)
        q = np.min(lsb, axis=axis)
        S = np.sum(np.broadcast_to(math.prod(np.abs(v) for v in scaled), t.shape), axis=axis)
        exact = np.all(each, axis=axis) & exact_sum(np.asarray(S), np.asarray(q), np.asarray(True), w)
        M = np.broadcast_to(math.prod(mags), t.shape)
        P = np.broadcast_to(math.prod(np.abs(np.asarray(w.vals[i], dtype=np.float64)) for i in leaves), t.shape)
        # M - P without cancellation: P (prod(1 + E/|f|) - 1); M itself where a factor is 0 (P = 0)
        prop = np.where(P > 0, P * np.expm1(np.broadcast_to(sum(rel), t.shape)), M)
        alt = w.gam(n + len(scalars)) * np.sum(M, axis=axis) + np.sum(prop, axis=axis) + max(n - 1, 0) * w.eta_ftz(node)
    return np.asarray(extra), np.asarray(exact), np.asarray(alt)


def chain_exact(values: Sequence[F64], errors: Sequence[F64], fmt: FloatFormat, flush_to_zero: bool) -> Mask:
    """Where a product chain the plan evaluates exactly (:func:`exact_products` of its last product) is exact in every
    association too, element-wise: every factor exact (error 0), no partial product beyond the range (the exponents of
    the factors' highest bits above 1 adding up to less than the overflow threshold's), and one factor 0 (every
    association is 0), or the lowest set bits of the factors below 1 adding up to no less than the dtype's finest grid
    (:func:`lowest_exponent`).

    A partial product's lowest set bit is the sum of its factors' and its significand (the product of their odd parts)
    divides the whole product's, which fits the dtype: it is a float of the dtype, computed exactly, wherever its lowest
    bit is on the grid. :func:`chain_underflow`'s count asks more (its partial products may have rounded): exact dyadic
    data whose partial product is a normal number below ``2**(|t| - 1)`` times the smallest one (``x1 a = 2**-126`` in
    float32) was no longer exact, and a gradient 1 ulp off agreed where it had disagreed (helper-133)."""
    exact: Any = True
    zero: Any = False
    low: Any = 0.0
    high: Any = 0.0
    for v, e in zip(values, errors, strict=True):
        v = np.asarray(v, dtype=np.float64)
        exact = exact & (np.asarray(e, dtype=np.float64) == 0)
        zero = zero | (v == 0)
        lsb, msb = float_bits(v)
        low = low + np.minimum(np.where(v == 0, 0.0, lsb), 0.0)  # (inf/NaN: -inf, never exact)
        high = high + np.maximum(np.where(v == 0, 0.0, msb + 1), 0.0)  # (inf/NaN: inf)
    # every partial product below 2**high <= the overflow threshold: none is inf (nor, with a factor 0, inf 0 = NaN)
    in_range = high <= math.frexp(fmt.max_finite)[1]
    return np.asarray(exact & in_range & (zero | (low >= lowest_exponent(fmt, flush_to_zero))))


def seed_carries(graph: Graph) -> tuple[dict[int, float], dict[int, float]]:
    """``(carry, seeded)`` of :class:`_Walk`: the backward's operations on the seed's descendants (role ``"backward"``:
    the gradients are linear in the seed, so its factors may be applied after any of them, :func:`harness.bounds.seed_carry`,
    2) and those with the seed itself."""
    carry: dict[int, float] = {}
    seeded: dict[int, float] = {}
    for node in graph.nodes:
        if node.op == "mul" and not seeded:
            for i in node.args:
                leaf = graph.nodes[i]
                if leaf.op == "const" and "factors" in leaf.attrs:
                    seeded[node.id] = seed_carry([Fraction(f) for f in leaf.attrs["factors"]])
            continue
        if node.role == "backward" and any(i in seeded for i in node.args):
            carry[node.id] = seeded[node.id] = next(seeded[i] for i in node.args if i in seeded)
    return carry, seeded


def _chain_count(node: Node, w: _Walk) -> tuple[F64, F64, Mask] | None:
    """The declared chain of a ``mul`` (the seed's scale with its ``factors``, ``attrs["chain"]``): its underflow count
    in the worst association (:func:`chain_underflow`), the plan's own ``eta`` at this node, and where every
    association is exact if the plan's is (:func:`chain_exact`), or None."""
    reg = w.regime(node)
    ftz = reg.ftz or w.reg.ftz
    if "chain" in node.attrs:
        consts: list[Fraction] = []
        mags: list[F64] = []
        lows: list[F64] = []
        for i in node.attrs["chain"]:
            leaf = w.graph.nodes[i]
            if leaf.op == "const" and not leaf.attrs.get("held") and leaf.shape == () and "factors" not in leaf.attrs:
                consts.append(Fraction(leaf.attrs["value"]))
            else:
                v, E = np.abs(np.asarray(w.vals[i], dtype=np.float64)), np.asarray(w.Es[i], dtype=np.float64)
                mags.append(v + E)
                # (an operand the seed's factors may not have multiplied yet: up to w.seeded[i] times smaller)
                lows.append(np.maximum(v - E * SAFETY, 0.0) * (1 - 2.0**-40) / w.seeded.get(i, 1.0))
        if not mags:
            return None
        count = chain_underflow(consts, mags, reg, lows)
        ids = list(node.attrs["chain"])
        exact = chain_exact([np.asarray(w.vals[i]) * 2.0 ** -math.ceil(math.log2(w.seeded.get(i, 1.0))) for i in ids],
                            [w.Es[i] for i in ids], w.fmt, ftz)
        return np.asarray(np.broadcast_to(count, node.shape)), np.asarray(reg.eta), np.asarray(np.broadcast_to(exact, node.shape))
    for c, other in ((node.args[0], node.args[1]), (node.args[1], node.args[0])):
        cn = w.graph.nodes[c]
        if cn.op == "const" and not cn.attrs.get("held") and cn.shape == () and len(cn.attrs.get("factors", ())) > 1:
            v, E = np.abs(np.asarray(w.vals[other], dtype=np.float64)), np.asarray(w.Es[other], dtype=np.float64)
            low = np.maximum(v - E * SAFETY, 0.0) * (1 - 2.0**-40)
            factors = [Fraction(f) for f in cn.attrs["factors"]]
            count = chain_underflow(factors, v + E, reg, [low])
            # (a factor that is no float, 1/3, makes no association exact: its division rounds)
            dyadic = all(Fraction(float(f)) == f for f in factors)
            exact = chain_exact([np.asarray(float(f)) for f in factors] + [w.vals[other]],
                                [np.asarray(0.0)] * len(factors) + [E], w.fmt, ftz) if dyadic else np.asarray(False)
            return np.asarray(np.broadcast_to(count, node.shape)), np.asarray(reg.eta), np.asarray(np.broadcast_to(exact, node.shape))
    return None


def _rule_square(node: Node, a: list[F64], E: list[F64], w: _Walk) -> F64:
    """``mul`` of ``a`` by itself: ``|a^^2 - a^2| = |a^ - a| |a^ + a| <= E (2|a| + E)``."""
    A = np.abs(a[0])
    ok, _ = exact_products(a[0], E[0], a[0], E[0], w)
    return np.asarray(np.where(ok, 0.0, w.reg.u * (A + E[0]) ** 2 + E[0] * (2 * A + E[0]) + w.reg.rounding_underflow((A + E[0]) ** 2)))


def _rule_div(node: Node, a: list[F64], E: list[F64], w: _Walk) -> F64:
    """``|a^/b^ - a/b| <= (E_a |b| + |a| E_b) / (|b| (|b| - E_b))`` and one rounding.

    Where the denominator may be beyond the range (:func:`_argument_may_overflow`: ``b^ = +-inf``, as
    ``1 + exp(-z)`` of a hand-written sigmoid past ``exp``'s overflow), a finite ``a^`` over it is ``+-0``, whose
    error is the exact ``|a / b|`` itself: the bound there is the larger of the rule above (a finite ``b^``, within
    ``E_b`` of ``b``: the walk's ``E`` bounds every finite value a correct evaluation gives, past an overflow too,
    :func:`_saturated`, :func:`_unbounded_past_overflow`) and ``|a| / |b|`` (``|b|`` at most float64's largest
    value: an exact ``b`` beyond it makes the quotient smaller still); an infinite ``a^`` gives inf or NaN, never a
    finite value. It was infinite there (every finite value agreed: ``a/(1 + exp(-(w*x1 + c)))`` at ``w x1 + c =
    -100`` in float32, ``-12`` in float16, graded a sign-flipped or doubled ``grad_a`` ``agree``; helper-182).
    """
    A, B = np.abs(a[0]), np.abs(a[1])
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        den = B - E[1]
        prop = np.where(den > 0, (E[0] * B + A * E[1]) / (B * den), np.inf)
        M = np.where(den > 0, (A + E[0]) / den, np.inf)
        e = np.asarray(w.reg.u * M + prop + w.eta(node, M))
        past = _argument_may_overflow(node, w)
        if past.any():
            zero_err = A / np.minimum(B, np.finfo(np.float64).max) * SAFETY
            if w.repeated_gam is None and not np.isfinite(e[past]).all():
                # the rigorous walk: where no correct evaluation of the denominator is finite (never_finite of the
                # nodes so far, the one definition), every finite quotient is +-0: |a / b| alone
                never = never_finite(Graph(nodes=w.graph.nodes[:node.id]), w.vals, w.Es, w.fmt)[node.args[1]]
                e = np.asarray(np.where(np.broadcast_to(never, e.shape) & past, zero_err, e))
            e = np.asarray(np.where(past & np.isfinite(e), np.maximum(e, zero_err), e))
        if not np.isfinite(e[~past]).all():  # it was infinite silently (no record said its bound was vacuous)
            w.vacuous[node.id] = "the denominator of a division may be 0 within its error bound (no finite bound)"
    return _unbounded_past_overflow(node, e, w, only=~np.isfinite(e))


def _rule_pow(node: Node, a: list[F64], E: list[F64], w: _Walk) -> F64:
    """``a**p``: ``p (|a| + E)^(p-1) E`` (mean value theorem) and the evaluation: the larger of
    ``gamma_{p-1}`` (repeated products) and libm ``pow``'s ULPs (in the computing type, then rounded)."""
    p = int(node.attrs["exponent"])
    Ah = np.abs(a[0]) + E[0]
    prop = p * Ah ** (p - 1) * E[0]
    mag = Ah**p
    rep = w.reg.gamma(p - 1) * mag + (1 + w.reg.gamma(p - 1)) * (p - 1) * w.reg.eta
    lib = w.ctx.finish(w.ctx.lib("pow", mag), mag)
    return np.asarray(prop + np.maximum(rep, lib))


def _slope(node: Node) -> float | None:
    s = node.attrs.get("slope")
    return None if s is None else float(Fraction(s))


def _rule_fn(node: Node, a: list[F64], E: list[F64], w: _Walk) -> F64:
    """An activation (:func:`activation_value_bound`); another function: no accuracy model (inf)."""
    name = str(node.attrs["fn"])
    if name in _SMOOTH or name in ("relu", "leaky_relu"):
        e = activation_value_bound(name, a[0], E[0], w.ctx, _slope(node), value=w.vals[node.id])
        e = _capped_by_range(name, w.vals[node.id], e, VALUE_RANGES)
        return _saturated(node, e, SATURATION_LIMITS[name][0], w)
    if name in _ELEMENTARY or name == "abs":
        return _unbounded_past_overflow(node, _domain_checked(node, elementary_value_bound(name, a[0], E[0], w.ctx), a[0], E[0], w), w)
    w.vacuous[node.id] = f"no accuracy model for the function {name!r} in harness.models.bounds"
    return np.full(node.shape, np.inf)


def _rule_fn_grad(node: Node, a: list[F64], E: list[F64], w: _Walk) -> F64:
    """An activation's derivative (:func:`activation_grad_bound`); the forward value's bound is that
    of the ``fn`` node ``attrs["of"]``."""
    name = str(node.attrs["fn"])
    of = node.attrs.get("of")
    if len(node.args) == 2:
        y, Ey = a[1], E[1]
    elif of is not None:
        y, Ey = w.vals[int(of)], w.Es[int(of)]
    else:
        y, Ey = np.zeros(node.shape), np.zeros(node.shape)
    if name in _SMOOTH or name in ("relu", "leaky_relu"):
        e = activation_grad_bound(name, a[0], E[0], y, Ey, w.ctx, _slope(node))
        e = _capped_by_range(name, w.vals[node.id], e, GRAD_RANGES)
        limits = SATURATION_LIMITS[name][1]
        if name == "leaky_relu":
            s = _slope(node)
            limits = (0.01 if s is None else s, 1.0)
        return _saturated(node, e, limits, w)
    if name in _ELEMENTARY or name == "abs":
        return _unbounded_past_overflow(node, _domain_checked(node, elementary_grad_bound(name, a[0], E[0], y, Ey, w.ctx), a[0], E[0], w),
                                        w)
    w.vacuous[node.id] = f"no accuracy model for the derivative of {name!r} in harness.models.bounds"
    return np.full(node.shape, np.inf)


#: The functions of an expression defined only for ``z > 0`` (their value and derivative), with the
#: domain edge at 0 (:func:`domain_edge`).
_DOMAIN_EDGE_FUNCTIONS = ("log", "sqrt")


def domain_edge(name: object, a: F64, E: F64) -> Mask:
    """Where the error interval ``[a - E, a + E]`` of the argument of ``log`` or ``sqrt`` reaches the
    domain's edge (``a - E <= 0``; all False for other functions): the one definition of the rule.
    There the function's rigorous bound is infinite (:func:`_domain_checked`: ``f'`` is unbounded on
    the interval), and a correct evaluation may form a computed argument ``<= 0`` (a cancellation, a
    rounding, a flushed difference): ``log(0) = -inf``, ``log(-0) = -inf``, ``log`` and ``sqrt`` of a
    negative value NaN, ``sqrt'(0) = 1/(2 sqrt 0) = inf`` (``-inf`` at ``-0``). The overflow walk
    allows both infinities there (the infinite bound, :func:`_overflow_node`'s own-overflow test) and NaN
    (this mask), so a NaN carried on by a function that keeps NaN but never returns inf (``tanh(sqrt(z))``,
    ``tanh(log(z))``: tanh's bound is finite) is ``overflow``, not ``disagree`` (helper-170); elsewhere the argument
    is surely positive and a NaN or an infinity is graded as before."""
    if name not in _DOMAIN_EDGE_FUNCTIONS:
        return np.zeros(np.shape(a), dtype=bool)
    with np.errstate(invalid="ignore"):
        return np.asarray(~(np.asarray(a, dtype=np.float64) - np.asarray(E, dtype=np.float64) > 0))


def _domain_checked(node: Node, e: F64, a: F64, E: F64, w: _Walk) -> F64:
    """Infinite elements of a function's bound (``e`` infinite or NaN), at least where the argument
    ``a`` with error bound ``E`` reaches the domain's edge (:func:`domain_edge`: log, sqrt at or below
    0): noted as vacuous."""
    e = np.where(domain_edge(node.attrs["fn"], a, E), np.inf, e)
    bad = ~np.isfinite(e)
    if np.any(bad):
        w.vacuous[node.id] = (f"the argument of {node.attrs['fn']} may reach its domain's edge within its error bound "
                              "(no finite bound)")
    return np.asarray(np.nan_to_num(e, nan=np.inf))


#: Finite values an activation (first tuple) and its derivative (second) can take at an argument
#: that overflowed to ``+-inf`` (or became NaN where a ``where``-based kernel picks a branch):
#: tanh ``+-1`` and ``tanh' = 1 - y^2 = 0``; sigmoid 0, 1 and ``y (1 - y) = 0``; ReLU 0 (at
#: ``-inf``) and its derivative 0 or 1; leaky ReLU's derivative its slope or 1 (the slope filled in
#: by the rule); softplus 0 (at ``-inf``) and ``sigmoid`` 0 or 1; GELU's limit 0 and its
#: derivative's 0, 1. Past an overflow a *correct* evaluation may thus return a finite value that
#: is nowhere near the exact one (``tanh(fl(60000 - 60000 + ...))`` with a partial sum that
#: overflowed is ``+-1`` where the exact value is ``tanh(0) = 0``): the bound there is the
#: distance from the exact value to the farthest of these limits (:func:`_saturated`).
SATURATION_LIMITS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "tanh": ((-1.0, 1.0), (0.0,)),
    "sigmoid": ((0.0, 1.0), (0.0,)),
    "relu": ((0.0,), (0.0, 1.0)),
    "leaky_relu": ((0.0,), (0.01, 1.0)),
    "softplus": ((0.0,), (0.0, 1.0)),
    "gelu": ((0.0,), (0.0, 1.0)),
}


#: The closed ranges of the bounded activations' values and derivatives as correct evaluations
#: return them (tanh in [-1, 1], sigmoid in [0, 1]; ``1 - y^2`` in [0, 1] and ``y (1 - y)`` in
#: [0, 1/4], the roundings of these formulas staying inside): the error of a computed value is at
#: most the distance from the exact value to the farther end, whatever the argument's error.
VALUE_RANGES: dict[str, tuple[float, float]] = {"tanh": (-1.0, 1.0), "sigmoid": (0.0, 1.0)}
GRAD_RANGES: dict[str, tuple[float, float]] = {"tanh": (0.0, 1.0), "sigmoid": (0.0, 0.25)}


def _capped_by_range(name: str, v: F64, e: F64, ranges: Mapping[str, tuple[float, float]]) -> F64:
    """``e`` capped by the distance from the exact value ``v`` to the farther end of the function's
    range (:data:`VALUE_RANGES`), for a bounded function; ``e`` otherwise."""
    if name not in ranges:
        return e
    lo, hi = ranges[name]
    v = np.asarray(v, dtype=np.float64)
    return np.asarray(np.minimum(e, np.maximum(v - lo, hi - v) * _FN_SAFETY))


def _argument_may_overflow(node: Node, w: _Walk) -> Mask:
    """Where an argument of ``node`` may be beyond the range (inf, or NaN after ``inf - inf``); for a
    division its denominator only (an infinite numerator gives inf or NaN, never a finite value)."""
    out = np.zeros(node.shape, dtype=bool)
    for i in (node.args[1:] if node.op == "div" else node.args):
        if i < len(w.over):
            out = out | np.broadcast_to(w.over[i], node.shape)
    return np.asarray(out)


def _saturated(node: Node, e: F64, limits: tuple[float, ...], w: _Walk) -> F64:
    """An activation's bound where its argument may have overflowed: at least the distance from the
    exact value to the farthest finite value the function takes there (:data:`SATURATION_LIMITS`);
    elsewhere ``e``. The rest of the graph propagates this error like any other, so a finite result
    past an overflow is still graded (an infinite or NaN one is accepted by ``inf_allowed``)."""
    past = _argument_may_overflow(node, w)
    if not past.any():
        return e
    v = np.abs(np.asarray(w.vals[node.id], dtype=np.float64))
    far = np.max([np.abs(np.asarray(w.vals[node.id]) - lim) for lim in limits], axis=0) if limits else v
    return np.asarray(np.where(past, np.maximum(e, np.maximum(far, v) * _FN_SAFETY), e))


def _unbounded_past_overflow(node: Node, e: F64, w: _Walk, only: Mask | None = None) -> F64:
    """An elementary function of an expression model, or a division, whose argument may have
    overflowed: ``exp(-inf) = 0``, ``erf(inf) = 1`` are finite values with no bound on their error; infinite
    there (noted as vacuous). ``only``: the elements where this applies (a division's rule bounds ``a / inf = 0``
    itself where its bound is finite, :func:`_rule_div`)."""
    past = _argument_may_overflow(node, w)
    if only is not None:
        past = past & np.asarray(only, dtype=bool)
    if not past.any():
        return e
    w.vacuous[node.id] = (f"an argument of {node.attrs.get('fn', node.op)} may be beyond {w.fmt.name}'s range, where "
                          "it returns finite values unrelated to the exact one")
    return np.asarray(np.where(past, np.inf, e))


def _rule_column(node: Node, a: list[F64], E: list[F64], w: _Walk) -> F64:
    """Exact: the column's bounds."""
    j = int(node.attrs["index"])
    return np.asarray(E[0][:, j:j + 1])


def _rule_transpose(node: Node, a: list[F64], E: list[F64], w: _Walk) -> F64:
    """Exact: ``E^T``."""
    return np.asarray(E[0].T)


def _rule_concat(node: Node, a: list[F64], E: list[F64], w: _Walk) -> F64:
    """Exact: the bounds concatenated."""
    return np.asarray(np.concatenate(E, axis=node.attrs["axis"]))


#: The error rule of each operation (module docstring's table).
RULES: dict[str, Rule] = {
    "input": _rule_leaf, "param": _rule_leaf, "const": _rule_const, "matmul": _rule_matmul,
    "sum": _rule_sum, "add": _rule_addsub, "sub": _rule_addsub, "mul": _rule_mul, "square": _rule_square,
    "div": _rule_div, "pow": _rule_pow, "fn": _rule_fn, "fn_grad": _rule_fn_grad,
    "transpose": _rule_transpose, "concat": _rule_concat, "column": _rule_column,
}


def _walk(w: _Walk, over: list[Mask] | None = None) -> list[F64]:
    """Every node's error bound in node order; the overflow masks (:func:`_overflow_node`) are
    computed along (the rigorous walk) or taken from ``over`` (the expected walk uses the rigorous
    walk's: whether an intermediate may overflow does not depend on the reduction constant)."""
    with np.errstate(over="ignore", invalid="ignore", under="ignore", divide="ignore"):
        for node in w.graph.nodes:
            a = [w.vals[i] for i in node.args]
            E = [w.Es[i] for i in node.args]
            e = RULES[node.op](node, a, E, w)
            e = np.nan_to_num(np.asarray(e, dtype=np.float64), nan=np.inf, posinf=np.inf)
            w.Es.append(np.asarray(np.broadcast_to(e, node.shape), dtype=np.float64))
            if over is not None:
                w.over.append(over[node.id])
            else:
                sgn = _overflow_node(node, w.vals, w.Es, w.signs, w.sign_frames, w.reg)
                sgn = tuple(np.asarray(np.broadcast_to(x, node.shape), dtype=bool) for x in sgn)  # type: ignore[assignment]
                w.signs.append(sgn)
                w.over.append(np.asarray(sgn[0] | sgn[1] | sgn[2]))
    return w.Es


#: Activations (and derivatives) that never return inf: at an infinite argument they saturate.
_BOUNDED_VALUES = ("tanh", "sigmoid")
_BOUNDED_GRADS = ("tanh", "sigmoid", "relu", "leaky_relu", "softplus", "gelu")


def _signed_parts(nid: int, vals: list[F64], Es: list[F64], frames: Mapping[int, tuple[F64, F64, int]]) -> tuple[F64, F64, int]:
    """(bound of the sum of the terms that may be positive, of the magnitudes of those that may be
    negative, number of terms) of node ``nid`` as a term of a sum: its own frame (matmul, sum,
    add/sub chain) or the node itself."""
    if nid in frames:
        return frames[nid]
    v, e = vals[nid], Es[nid]
    return np.maximum(v + e, 0.0), np.maximum(e - v, 0.0), 1


def _overflow_node(node: Node, vals: list[F64], Es: list[F64], signs: list[tuple[Mask, Mask, Mask]],
                   frames: dict[int, tuple[F64, F64, int]], reg: Regime) -> tuple[Mask, Mask, Mask]:
    """``(+inf possible, -inf possible, NaN possible)`` per element of ``node`` for some correct
    evaluation (module docstring), from the earlier nodes' ``signs``. A sum (matmul, ``sum``, add/sub
    chains, accumulated in any order) reaches ``+inf`` only if the terms that may be positive can
    exceed the range (``(1 + u)^n`` times their magnitudes), ``-inf`` likewise, and NaN (``inf - inf``)
    only if both can, or if a term may already be non-finite (``inf * 0``); tanh and sigmoid
    saturate (never inf: NaN only from a NaN argument), ReLU and softplus never give ``-inf``,
    GELU gives NaN at ``-inf`` (``-inf * 0``) and may overflow where ``2|z|`` exceeds the computing
    type (torch forms ``x (1 + erf(x / sqrt 2))``)."""
    big = reg.fmt.max_finite
    shape = node.shape
    op = node.op
    args = node.args
    z = np.zeros(shape, dtype=bool)
    with np.errstate(over="ignore", invalid="ignore"):
        v = np.asarray(vals[node.id], dtype=np.float64)
        e = Es[node.id]
        own_pos = (v + e > big) | ~np.isfinite(e)
        own_neg = (v - e < -big) | ~np.isfinite(e)
        nonfin = [signs[i][0] | signs[i][1] | signs[i][2] for i in args]
        if op in ("input", "param", "const"):
            return z, z, z
        if op == "matmul":
            A, B = vals[args[0]], vals[args[1]]
            EA, EB = Es[args[0]], Es[args[1]]
            mag = (np.abs(A) + EA)[:, :, None] * (np.abs(B) + EB)[None, :, :]
            prod = A[:, :, None] * B[None, :, :]
            sure = ((np.abs(A) > EA)[:, :, None] & (np.abs(B) > EB)[None, :, :]) | (mag == 0)
            g = reg.growth(A.shape[-1])
            pos = np.sum(np.where(sure & (prod < 0), 0.0, mag), axis=1)
            neg = np.sum(np.where(sure & (prod > 0), 0.0, mag), axis=1)
            frames[node.id] = (pos, neg, A.shape[-1])
            # an infinite factor: a product of either sign, or inf * 0 = NaN; a NaN factor: NaN only
            infs = [signs[i][0] | signs[i][1] for i in args]
            bad = (infs[0].astype(float) @ np.ones(B.shape) + np.ones(A.shape) @ infs[1].astype(float)) > 0
            nan_in = (nonfin[0].astype(float) @ np.ones(B.shape) + np.ones(A.shape) @ nonfin[1].astype(float)) > 0
            P = (g * pos > big) | bad | ~np.isfinite(g * pos)
            Q = (g * neg > big) | bad | ~np.isfinite(g * neg)
            return P | own_pos, Q | own_neg, (P & Q) | bad | nan_in
        if op == "sum":
            axis = node.attrs.get("axis")
            a, ea = vals[args[0]], Es[args[0]]
            n = a.size if axis is None else a.shape[axis]
            g = reg.growth(n)
            pos = np.sum(np.maximum(a + ea, 0.0), axis=axis)
            neg = np.sum(np.maximum(ea - a, 0.0), axis=axis)
            frames[node.id] = (np.asarray(pos), np.asarray(neg), n)
            # an infinite term carries its sign (inf + finite = inf); NaN only from a NaN term or inf - inf
            P0, Q0, N0 = signs[args[0]]
            P = np.asarray((g * pos > big) | ~np.isfinite(g * pos)).reshape(shape) | np.asarray(np.any(P0, axis=axis)).reshape(shape)
            Q = np.asarray((g * neg > big) | ~np.isfinite(g * neg)).reshape(shape) | np.asarray(np.any(Q0, axis=axis)).reshape(shape)
            N = np.asarray(np.any(N0, axis=axis)).reshape(shape)
            return P | own_pos, Q | own_neg, (P & Q) | N
        if op in ("add", "sub"):
            p0, n0, m0 = _signed_parts(args[0], vals, Es, frames)
            p1, n1, m1 = _signed_parts(args[1], vals, Es, frames)
            if op == "sub":
                p1, n1 = n1, p1
            pos, neg = p0 + p1, n0 + n1
            if not grouped(node):  # (a bracketed sum is one term of the sum it feeds)
                frames[node.id] = (np.asarray(pos), np.asarray(neg), m0 + m1)
            g = reg.growth(m0 + m1)
            (P0, Q0, N0), (P1, Q1, N1) = signs[args[0]], signs[args[1]]
            if op == "sub":
                P1, Q1 = Q1, P1
            P = np.broadcast_to(P0 | P1 | (g * pos > big) | ~np.isfinite(g * pos), shape)
            Q = np.broadcast_to(Q0 | Q1 | (g * neg > big) | ~np.isfinite(g * neg), shape)
            N = np.broadcast_to(N0 | N1, shape) | (P & Q)
            return P | own_pos, Q | own_neg, N
        if op == "transpose":
            P, Q, N = signs[args[0]]
            return P.T, Q.T, N.T
        if op == "concat":
            ax = node.attrs["axis"]
            return tuple(np.concatenate([signs[i][j] for i in args], axis=ax) for j in range(3))  # type: ignore[return-value]
        if op == "column":
            j = int(node.attrs["index"])
            P, Q, N = signs[args[0]]
            return P[:, j:j + 1], Q[:, j:j + 1], N[:, j:j + 1]
        anyN = z.copy()
        anyinf = z.copy()
        for i in args:
            anyN = anyN | np.broadcast_to(signs[i][2], shape)
            anyinf = anyinf | np.broadcast_to(signs[i][0] | signs[i][1], shape)
        fn = node.attrs.get("fn")
        if op == "fn" and fn in _BOUNDED_VALUES:
            return z, z, anyN
        if op == "fn_grad" and fn in _BOUNDED_GRADS:
            N = anyN | (anyinf if fn == "gelu" else z)  # gelu': x pdf(x) = inf * 0
            return z, z, N
        if op == "fn" and fn in ("relu", "softplus"):
            return np.broadcast_to(signs[args[0]][0], shape) | own_pos, z, anyN
        if op == "fn" and fn == "leaky_relu":
            return np.broadcast_to(signs[args[0]][0], shape) | own_pos, np.broadcast_to(signs[args[0]][1], shape) | own_neg, anyN
        if op == "fn" and fn == "gelu":
            # torch's CPU GELU forms x (1 + erf(x / sqrt 2)) before halving it: 2|x| may overflow
            # the computing type (gelu(2e38) is inf in float32 and bfloat16); gelu(-inf) = -inf * 0
            arg = vals[args[0]] + Es[args[0]]
            P = np.broadcast_to(signs[args[0]][0], shape) | (2 * arg > compute_format(reg.fmt).max_finite) | own_pos
            return P, z, anyN | np.broadcast_to(signs[args[0]][1], shape)
        if op == "square":
            P0, Q0, N0 = signs[args[0]]
            return P0 | Q0 | own_pos, z, N0
        # mul, div, pow, the elementary functions of an expression: any sign; NaN wherever an
        # argument may be non-finite (inf * 0, inf / inf, exp(inf) - ...), and for log and sqrt (and
        # their derivatives) where the argument may be computed <= 0 (:func:`domain_edge`)
        P = anyinf | own_pos | own_neg
        N = anyN | anyinf
        if op in ("fn", "fn_grad"):
            N = N | np.broadcast_to(domain_edge(fn, vals[args[0]], Es[args[0]]), shape)
        return P, P, N


# ---------------------------------------------------------------------------------------------------
# the sign of an infinity


#: Operations and functions whose non-NaN results always have a positive sign bit: ``x * x``
#: (``(-0)^2 = +0``, ``(-inf)^2 = +inf``), ``exp`` and exp's derivative (``exp(z)`` or the forward
#: value; ``exp(-inf) = +0``): never ``-inf``, never ``-0``.
_POSITIVE_SIGN = (("square", None), ("fn", "exp"), ("fn_grad", "exp"))


def signed_infinities(graph: Graph, vals: list[F64], Es: list[F64], signs: list[tuple[Mask, Mask, Mask]],
                      reg: Regime, never: list[Mask] | None = None) -> list[tuple[Mask, Mask]]:
    """Per node, ``(+inf possible, -inf possible)`` for some correct evaluation: the overflow walk's
    masks (``signs``, :func:`_overflow_node`) narrowed by the *sign bits* the node's non-NaN values
    can have. Every narrowing removes an infinity only where a necessary condition for it fails, so
    each mask stays a superset of what correct evaluations produce (the grading then calls an
    infinity outside it ``disagree``):

    - *sign bits* ``(sp, sn)`` of every node: whether a non-NaN value of a correct evaluation may have
      a positive (negative) sign bit, zeros and infinities included. A finite value is within ``E`` of
      the exact value ``v`` (the rigorous walk's invariant, on which the grading of finite values
      rests), so it has the sign of ``v`` where ``|v| > E`` (with a margin ``2**-40`` for the float64
      evaluation of ``v``), and there is none where no correct evaluation is finite (``never``,
      :func:`never_finite`); an infinite one is in the node's own ``(+inf, -inf)`` masks.
    - ``mul`` and ``div``: the sign bit of a non-NaN product or quotient is the XOR of its arguments'
      (IEEE 754 §6.3, zeros and infinities included; ``inf * 0`` and ``inf / inf`` are NaN), in any
      association of a product chain: ``+inf`` needs arguments of the same sign bit, ``-inf`` of
      opposite ones. A scalar constant times a ``sum`` (the loss scale, which an implementation may
      apply to every term, ``mean``) also takes the sum's terms' sign bits.
    - ``square``, ``exp`` and exp's derivative: positive sign bit only (:data:`_POSITIVE_SIGN`).
    - sums (``matmul``, ``sum``, ``add``/``sub`` chains flattened as :func:`_signed_parts` flattens
      them, in any order, FMA, wider accumulators): a sum of terms that are all ``<= 0`` (negative
      sign bit or zero) never exceeds 0, so ``+inf`` needs a term that may have a positive sign bit,
      and a positive term or partial sum beyond the range: an infinite term (its own ``+inf``
      mask; for a matrix product an infinite factor of a product that may be positive), or
      ``(1 + u)^m`` times the positive parts of the finite terms above the largest float (the
      walk's test, with the terms that cannot be positive counted as 0: their sign bits, besides
      its ``|a| > E_a`` test of a product's sign). The sum's own rounding is one of these partial
      sums (the growth counts it), so the walk's own-overflow test ``v + E > max``, which an
      infinite ``E`` past an overflow makes true for both signs, is not needed. ``-inf`` likewise.
      The sign bits of a sum: negative only if every term's are (``(-0) + (-0) = -0``, a sum of
      negative numbers does not round to 0); positive only if some term's may be.
    - every other operation keeps the walk's masks (the activations', where ReLU, softplus and
      GELU never give ``-inf``; the elementary functions', both signs past an overflow).
    """
    big = reg.fmt.max_finite
    out: list[tuple[Mask, Mask]] = []
    bits: list[tuple[Mask, Mask]] = []
    term_bits: dict[int, tuple[Mask, Mask]] = {}  # frames: any term may have a positive / negative sign bit
    parts: dict[int, tuple[F64, F64, int]] = {}  # frames: positive and negative parts of their terms, count
    frames = ("matmul", "sum", "add", "sub")

    def bc(x: Mask | bool, shape: tuple[int, ...]) -> Mask:
        return np.asarray(np.broadcast_to(x, shape), dtype=bool)

    with np.errstate(over="ignore", invalid="ignore"):
        for node in graph.nodes:
            shape, op, args = node.shape, node.op, node.args
            fn = node.attrs.get("fn")
            v = np.asarray(vals[node.id], dtype=np.float64)
            e = np.asarray(Es[node.id], dtype=np.float64)
            P, Q = bc(signs[node.id][0], shape), bc(signs[node.id][1], shape)
            # a finite value may have a positive (negative) sign bit: unless |v| > E and v < 0 (v > 0)
            fin_p = ~((v < 0) & (np.abs(v) * (1 - 2.0**-40) > e))
            fin_n = ~((v > 0) & (np.abs(v) * (1 - 2.0**-40) > e))
            if never is not None:  # no finite value at all
                fin_p, fin_n = fin_p & ~never[node.id], fin_n & ~never[node.id]
            term_p, term_n = bc(True, shape), bc(True, shape)  # sign bits every non-NaN value is among
            if op == "matmul":
                ia, ib = args
                (pa, na), (pb, nb) = bits[ia], bits[ib]
                (Pa, Qa), (Pb, Qb) = out[ia], out[ib]
                A, B = vals[ia], vals[ib]
                EA, EB = Es[ia], Es[ib]
                mag = (np.abs(A) + EA)[:, :, None] * (np.abs(B) + EB)[None, :, :]
                prod = A[:, :, None] * B[None, :, :]
                sure = ((np.abs(A) > EA)[:, :, None] & (np.abs(B) > EB)[None, :, :]) | (mag == 0)
                prod_p = (pa[:, :, None] & pb[None, :, :]) | (na[:, :, None] & nb[None, :, :])
                prod_n = (pa[:, :, None] & nb[None, :, :]) | (na[:, :, None] & pb[None, :, :])
                pos = np.sum(np.where((sure & (prod < 0)) | ~prod_p, 0.0, mag), axis=1)
                neg = np.sum(np.where((sure & (prod > 0)) | ~prod_n, 0.0, mag), axis=1)
                m = A.shape[-1]
                g = reg.growth(m)
                inf_a = (Pa | Qa).astype(float)
                inf_b = (Pb | Qb).astype(float)
                bad = (inf_a @ np.ones(B.shape) + np.ones(A.shape) @ inf_b) > 0
                term_p, term_n = np.any(prod_p, axis=1), np.any(prod_n, axis=1)
                P = P & term_p & ((g * pos > big) | ~np.isfinite(g * pos) | bad)
                Q = Q & term_n & ((g * neg > big) | ~np.isfinite(g * neg) | bad)
                parts[node.id] = (pos, neg, m)
            elif op == "sum":
                axis = node.attrs.get("axis")
                a, ea = vals[args[0]], Es[args[0]]
                pa, na = bits[args[0]]
                Pa, Qa = out[args[0]]
                n = a.size if axis is None else a.shape[axis]
                g = reg.growth(n)
                pos = np.asarray(np.sum(np.where(pa, np.maximum(a + ea, 0.0), 0.0), axis=axis)).reshape(shape)
                neg = np.asarray(np.sum(np.where(na, np.maximum(ea - a, 0.0), 0.0), axis=axis)).reshape(shape)
                term_p = np.asarray(np.any(pa, axis=axis)).reshape(shape)
                term_n = np.asarray(np.any(na, axis=axis)).reshape(shape)
                anyP = np.asarray(np.any(Pa, axis=axis)).reshape(shape)
                anyQ = np.asarray(np.any(Qa, axis=axis)).reshape(shape)
                P = P & term_p & ((g * pos > big) | ~np.isfinite(g * pos) | anyP)
                Q = Q & term_n & ((g * neg > big) | ~np.isfinite(g * neg) | anyQ)
                parts[node.id] = (pos, neg, n)
            elif op in ("add", "sub"):
                pos_t, neg_t, m_t = [], [], 0
                tp_t, tn_t, P_t, Q_t = [], [], [], []
                for k, i in enumerate(args):
                    if i in parts and graph.nodes[i].op in frames and not grouped(graph.nodes[i]):
                        pi, ni, mi = parts[i]
                        tpi, tni = term_bits[i]
                    else:
                        tpi, tni = bits[i]
                        pi = np.where(tpi, np.maximum(vals[i] + Es[i], 0.0), 0.0)
                        ni = np.where(tni, np.maximum(Es[i] - vals[i], 0.0), 0.0)
                        mi = 1
                    Pi, Qi = out[i]
                    if op == "sub" and k == 1:
                        pi, ni, tpi, tni, Pi, Qi = ni, pi, tni, tpi, Qi, Pi
                    pos_t.append(pi)
                    neg_t.append(ni)
                    m_t += mi
                    tp_t.append(tpi)
                    tn_t.append(tni)
                    P_t.append(Pi)
                    Q_t.append(Qi)
                pos, neg = pos_t[0] + pos_t[1], neg_t[0] + neg_t[1]
                g = reg.growth(m_t)
                term_p, term_n = bc(tp_t[0] | tp_t[1], shape), bc(tn_t[0] | tn_t[1], shape)
                P = P & term_p & bc((g * pos > big) | ~np.isfinite(g * pos) | P_t[0] | P_t[1], shape)
                Q = Q & term_n & bc((g * neg > big) | ~np.isfinite(g * neg) | Q_t[0] | Q_t[1], shape)
                parts[node.id] = (np.asarray(pos), np.asarray(neg), m_t)
            elif op in ("mul", "div"):
                (pa, na), (pb, nb) = bits[args[0]], bits[args[1]]
                same = bc((pa & pb) | (na & nb), shape)
                diff = bc((pa & nb) | (na & pb), shape)
                if op == "mul":
                    for c, o in ((args[0], args[1]), (args[1], args[0])):
                        cn, on = graph.nodes[c], graph.nodes[o]
                        if cn.op == "const" and not cn.attrs.get("held") and cn.shape == () and on.op == "sum":
                            pc, nc = bits[c]
                            tp, tn = term_bits[o]
                            same = same | bc((pc & tp) | (nc & tn), shape)
                            diff = diff | bc((pc & tn) | (nc & tp), shape)
                term_p, term_n = same, diff
                P, Q = P & same, Q & diff
            elif (op, fn if op in ("fn", "fn_grad") else None) in _POSITIVE_SIGN:
                term_n = bc(False, shape)
                Q = bc(False, shape)
            elif op == "transpose":
                P, Q = out[args[0]][0].T, out[args[0]][1].T
                term_p, term_n = bits[args[0]][0].T, bits[args[0]][1].T
            elif op == "column":
                j = int(node.attrs["index"])
                P, Q = out[args[0]][0][:, j:j + 1], out[args[0]][1][:, j:j + 1]
                term_p, term_n = bits[args[0]][0][:, j:j + 1], bits[args[0]][1][:, j:j + 1]
            elif op == "concat":
                ax = node.attrs["axis"]
                P = np.concatenate([out[i][0] for i in args], axis=ax)
                Q = np.concatenate([out[i][1] for i in args], axis=ax)
                term_p = np.concatenate([bits[i][0] for i in args], axis=ax)
                term_n = np.concatenate([bits[i][1] for i in args], axis=ax)
            P, Q = bc(P, shape), bc(Q, shape)
            if op in frames:
                term_bits[node.id] = (bc(term_p, shape), bc(term_n, shape))
            if op in ("transpose", "column", "concat"):
                bits.append((bc(term_p, shape), bc(term_n, shape)))
            else:
                bits.append((bc(term_p & (P | fin_p), shape), bc(term_n & (Q | fin_n), shape)))
            out.append((np.asarray(P.copy()), np.asarray(Q.copy())))
    return out


# ---------------------------------------------------------------------------------------------------
# where no correct evaluation is finite


#: Functions ``f`` with ``f(+-inf)`` and ``f(NaN)`` all non-finite (inf or NaN): a non-finite
#: argument gives a non-finite value (log(inf) = inf, log(-inf) = NaN, sqrt likewise, sin and cos of
#: inf are NaN, abs(-inf) = inf); for ``fn_grad`` nodes, the derivatives with that property (sin' =
#: cos, cos' = -sin). Not exp (exp(-inf) = 0), erf, the activations or the other derivatives, which
#: may turn an infinite argument into a finite value.
_NONFINITE_PRESERVING = {"fn": ("log", "sqrt", "sin", "cos", "abs"), "fn_grad": ("sin", "cos")}


def _exp_surely_overflows(z: F64, Ez: F64, fmt: FloatFormat) -> Mask:
    """Where ``exp(z^)`` is beyond ``fmt``'s range for every argument ``|z^ - z| <= Ez``: ``z - Ez`` above
    ``log(max_finite) + 2u + 2**-10`` (the margin covers the rounding threshold ``max_finite (1 + u)``, the
    library's few ULPs, the half types' float32 evaluation and the float64 evaluation of this test):
    the computed value rounds to ``inf`` (or the library's ``inf``)."""
    with np.errstate(invalid="ignore", over="ignore"):
        lim = math.log(fmt.max_finite) + 2.0 * fmt.unit_roundoff + 2.0**-10
        return np.asarray(np.isfinite(z) & np.isfinite(Ez) & (z - Ez * SAFETY > lim))


#: ``log2`` of twice float64's largest finite value (just below 1025): a product whose magnitude is surely above it
#: rounds to ``inf`` in float64, and so in every narrower type and accumulator (:func:`never_finite`).
_LOG2_PRODUCT_OVERFLOW = 1025.0


def _log2_least(v: F64, E: F64) -> F64:
    """Per element, ``log2`` of a lower bound on the magnitude of a finite correct evaluation of a node of exact value
    ``v`` (float64) within ``E`` of it, ``|v| (1 - 2**-50) - E``, less ``2**-30`` for the logarithm's rounding; ``-inf``
    where there is none (``v`` or ``E`` not finite, or the bound not positive)."""
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        lo = np.abs(v) * (1 - 2.0**-50) - E * SAFETY
        ok = np.isfinite(v) & np.isfinite(E) & (lo > 0)
        return np.where(ok, np.log2(np.where(ok, lo, 1.0)) - 2.0**-30, -np.inf)


def _products_overflow(la: F64, lb: F64) -> Mask:
    """Where the matrix product ``a @ b`` ``(n, m) @ (m, p)`` has a term ``a_ij b_jk`` whose magnitude is surely past
    :data:`_LOG2_PRODUCT_OVERFLOW` (``la``, ``lb``: :func:`_log2_least` of the factors): ``max_j la_ij + lb_jk``
    above it, over the ``j`` that can reach it."""
    out = np.zeros((la.shape[0], lb.shape[1]), dtype=bool)
    if not la.size or not lb.size:
        return out
    reach = np.max(la, axis=0) + np.max(lb, axis=1) > _LOG2_PRODUCT_OVERFLOW
    for j in np.flatnonzero(reach):
        out |= (la[:, j, None] + lb[None, j, :]) > _LOG2_PRODUCT_OVERFLOW
    return out


def _one_sign_sum_overflows(terms: list[tuple[F64, F64, Mask]], n: int, fmt: FloatFormat) -> Mask | None:
    """Where a sum of ``n`` terms of one sign (each surely nonzero, or exactly 0) has least magnitudes that add up past
    twice float64's largest value: every order of its additions ends at ``inf`` (each rounding loses at most a factor
    ``1 - u``, and ``(1 - u)^n >= 3/4`` is asked for: past ``2**1025.5 * 3/4 > 2**1025``). ``terms``: per term,
    ``(log2 least magnitude, sign of the exact value, exactly zero)`` arrays of the sum's shape (:func:`_log2_least`);
    None where ``n u > 1/4``."""
    if n * fmt.unit_roundoff > 0.25 or not terms:
        return None
    top = np.max([t[0] for t in terms], axis=0)
    pos = np.ones(top.shape, dtype=bool)
    neg = np.ones(top.shape, dtype=bool)
    acc = np.zeros(top.shape)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        for la, sign, zero in terms:
            sure = np.isfinite(la)
            pos &= (sure & (sign > 0)) | zero
            neg &= (sure & (sign < 0)) | zero
            acc += np.where(sure, np.exp2(la - np.where(np.isfinite(top), top, 0.0)), 0.0)
        total = np.log2(acc) + top
    return np.asarray((pos | neg) & np.isfinite(top) & (total > _LOG2_PRODUCT_OVERFLOW + 0.5))


def never_finite(graph: Graph, vals: list[F64], Es: list[F64], fmt: FloatFormat) -> list[Mask]:
    """Per node, where *no* correct evaluation of the plan in ``fmt`` gives a finite value (every one
    gives ``+-inf`` or NaN), element-wise.

    The argument rests on the invariant of the rigorous walk (``Es``): at every node, a correct
    evaluation either gives a non-finite value or a finite one within ``E`` of the exact value. So:

    - *own overflow*: where ``|v| - E > max_finite`` no finite value is within ``E`` of ``v``;
      ``exp`` (and ``exp``'s derivative, ``out`` or ``exp(z^)``) also where its argument is surely
      past ``log(max_finite)`` (:func:`_exp_surely_overflows`; the test that still works where the
      exact value is beyond float64 and ``v``, ``E`` are ``inf``);
    - *propagation*, only through operations that keep a non-finite value non-finite in IEEE
      arithmetic whatever the other operand: a sum (``sum``, ``add``/``sub`` chains, a matrix product,
      in any order, the bias folded in) with a never-finite *term* (``inf + x`` is ``inf`` or NaN;
      the terms of an ``add``/``sub`` chain are those :func:`_rule_addsub` flattens, so an overflow
      of a partial sum that another order avoids is not propagated); a matrix product's term
      ``a b`` where one factor is never finite and the other surely nonzero (``|b| > E_b``: a BLAS
      that skips zero factors cannot drop it); ``mul``, ``square``, ``pow`` of a never-finite factor
      (``inf * 0`` is NaN); a ``div`` of a never-finite numerator (``inf / x`` is ``inf`` or NaN, while
      ``x / inf = 0``); log, sqrt, sin, cos, abs (:data:`_NONFINITE_PRESERVING`); transposes,
      columns, concatenations. The loss scale times a ``sum`` (which an implementation may apply
      to every term before summing, ``mean``) propagates only the sum's never-finite terms.
    - *past float64's range*: a matrix product's term, a ``mul``, a ``square`` or ``pow`` whose factors' least
      magnitudes (``|v| - E``, :func:`_log2_least`) multiply to more than twice float64's largest value, a ``div``
      whose numerator's least magnitude over the denominator's largest is, and a ``sum`` or matrix product of terms
      of one sign whose least magnitudes add up past it (:func:`_one_sign_sum_overflows`): the result rounds to
      ``inf`` in every type and accumulator up to float64 (so also where the exact value is beyond float64 and the
      own test cannot be made: a float64 softplus network's ``grad_W2`` near ``2**1501``, whose wrong finite values
      were ``suspect`` within a vacuous bound; helpers 74 and 75);
    - everything else (exp of a non-finite argument, erf, the activations, which saturate, and
      their derivatives; ``x / inf``) is never finite only by its own overflow test, whose ``E``
      already allows their finite values past an overflow (:func:`_saturated`,
      :func:`_unbounded_past_overflow`: infinite, so the test fails).
    """
    big = fmt.max_finite
    never: list[Mask] = []
    terms: dict[int, Mask] = {}  # frame nodes (matmul, add, sub, sum): where a term is never finite
    frames = ("matmul", "add", "sub")

    def term(i: int) -> Mask:
        return terms[i] if graph.nodes[i].op in frames and not grouped(graph.nodes[i]) else never[i]

    with np.errstate(invalid="ignore", over="ignore"):
        for node in graph.nodes:
            shape = node.shape
            v = np.asarray(vals[node.id], dtype=np.float64)
            E = np.asarray(Es[node.id], dtype=np.float64)
            own = np.isfinite(v) & np.isfinite(E) & (np.abs(v) * (1 - 2.0**-50) - E * SAFETY > big)
            args = node.args
            op = node.op
            fn = node.attrs.get("fn")
            if op in ("input", "param", "const"):
                nf = np.zeros(shape, dtype=bool)
            elif op == "matmul":
                (ia, ib) = args
                nfa, nfb = never[ia], never[ib]
                nza = (np.abs(vals[ia]) > Es[ia]) | nfa
                nzb = (np.abs(vals[ib]) > Es[ib]) | nfb
                t = ((nfa.astype(float) @ nzb.astype(float)) > 0) | ((nza.astype(float) @ nfb.astype(float)) > 0)
                la, lb = _log2_least(vals[ia], Es[ia]), _log2_least(vals[ib], Es[ib])
                t = t | _products_overflow(la, lb)
                terms[node.id] = np.asarray(t)
                nf = t | own
                m = la.shape[1]
                if m and la.size and lb.size and np.max(la) + np.max(lb) + math.log2(m) > _LOG2_PRODUCT_OVERFLOW + 0.5:
                    A, B = np.asarray(vals[ia]), np.asarray(vals[ib])
                    zA, zB = (A == 0) & (Es[ia] == 0), (B == 0) & (Es[ib] == 0)
                    over = _one_sign_sum_overflows(
                        [(la[:, j, None] + lb[None, j, :], np.sign(A[:, j, None]) * np.sign(B[None, j, :]),
                          zA[:, j, None] | zB[None, j, :]) for j in range(m)], m, fmt)
                    nf = nf | over if over is not None else nf
            elif op in ("add", "sub"):
                t = np.broadcast_to(term(args[0]), shape) | np.broadcast_to(term(args[1]), shape)
                terms[node.id] = np.asarray(t)
                nf = t | own
            elif op == "sum":
                axis = node.attrs.get("axis")
                t = np.asarray(np.any(never[args[0]], axis=axis)).reshape(shape)
                terms[node.id] = t
                nf = t | own
                a, ea = np.asarray(vals[args[0]], dtype=np.float64), np.asarray(Es[args[0]], dtype=np.float64)
                la = _log2_least(a, ea)
                cnt = a.size if axis is None else a.shape[axis]
                if cnt and a.size and np.max(la) + math.log2(cnt) > _LOG2_PRODUCT_OVERFLOW + 0.5:
                    la_, sg_, z_ = (x.reshape(-1) if axis is None else np.moveaxis(x, axis, 0)  # the summed axis first
                                    for x in (la, np.sign(a), (a == 0) & (ea == 0)))
                    over = _one_sign_sum_overflows([(la_[i], sg_[i], z_[i]) for i in range(cnt)], cnt, fmt)
                    nf = nf | np.asarray(over).reshape(shape) if over is not None else nf
            elif op == "mul":
                nf = own | (_log2_least(vals[args[0]], Es[args[0]]) + _log2_least(vals[args[1]], Es[args[1]])
                            > _LOG2_PRODUCT_OVERFLOW)
                for c, o in ((args[0], args[1]), (args[1], args[0])):
                    cn, on = graph.nodes[c], graph.nodes[o]
                    scale_of_sum = cn.op == "const" and not cn.attrs.get("held") and cn.shape == () and on.op == "sum"
                    nf = nf | np.broadcast_to(terms[o] if scale_of_sum else never[o], shape)
            elif op in ("div", "square", "pow"):  # the numerator, the base (an integer power >= 2)
                nf = own | np.broadcast_to(never[args[0]], shape)
                if op in ("square", "pow"):  # base^p past twice float64's range: every evaluation (x*x*x, x^2 x) overflows
                    p = 2 if op == "square" else int(node.attrs["exponent"])
                    nf = nf | (p * _log2_least(vals[args[0]], Es[args[0]]) > _LOG2_PRODUCT_OVERFLOW)
                else:  # |x^| / |y^| >= (|x| - E_x) / (|y| + E_y) past twice float64's range
                    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
                        den = np.abs(np.asarray(vals[args[1]], dtype=np.float64)) + np.asarray(Es[args[1]], dtype=np.float64) * SAFETY
                        most = np.where(np.isfinite(den) & (den > 0), np.log2(np.where(den > 0, den, 1.0)) + 2.0**-30, np.inf)
                    nf = nf | (_log2_least(vals[args[0]], Es[args[0]]) - most > _LOG2_PRODUCT_OVERFLOW)
            elif op in ("fn", "fn_grad") and fn == "exp":
                nf = own | _exp_surely_overflows(vals[args[0]], Es[args[0]], fmt)
            elif op in ("fn", "fn_grad") and fn in _NONFINITE_PRESERVING[op]:
                nf = own | np.broadcast_to(never[args[0]], shape)
            elif op == "transpose":
                nf = never[args[0]].T
            elif op == "column":
                j = int(node.attrs["index"])
                nf = never[args[0]][:, j:j + 1]
            elif op == "concat":
                nf = np.concatenate([never[i] for i in args], axis=node.attrs["axis"])
            else:  # the activations, erf and the other derivatives: saturating, own overflow only
                nf = own
            never.append(np.asarray(np.broadcast_to(nf, shape), dtype=bool))
    return never


def merged_function_ulps(function_ulps: Mapping[str, float] | None) -> dict[str, float]:
    """:data:`FUNCTION_ULPS` with the caller's overrides (unknown names are kept: a user's function)."""
    table = dict(FUNCTION_ULPS)
    for k, v in (function_ulps or {}).items():
        if not (isinstance(v, (int, float)) and v >= 0 and math.isfinite(v)):
            raise ValueError(f"function_ulps[{k!r}]: a finite number of ULPs >= 0, got {v!r}")
        table[k] = float(v)
    return table


def model_bounds(
    graph: Graph,
    node_values: list[F64],
    fmt: FloatFormat,
    *,
    function_ulps: Mapping[str, float] | None = None,
    flush_to_zero: bool = False,
    half_flush: bool = True,
    residual_radius: F64 | None = None,
    loss_radius: float = math.inf,
) -> ModelBounds:
    """Rigorous and expected error bounds of every graded quantity of a model's step.

    Args:
        graph: the evaluation plan (:func:`harness.models.plan.build_plan`).
        node_values: every node's exact value as float64 (the truth's ``node_values``), in node order.
        fmt: the dtype the implementation computed in.
        function_ulps: overrides of :data:`FUNCTION_ULPS` (ULPs per function name).
        flush_to_zero: the implementation may flush subnormals (declared).
        half_flush: float16 and bfloat16 operations may flush subnormals without a declaration (the default,
            :func:`harness.bounds.flush_to_zero_default`); False where a probe found that the step's framework does not
            (as :func:`harness.bounds.step_bounds`).
        residual_radius, loss_radius: the truth's enclosure radii of the loss's residual (N, K) and of the loss
            (:attr:`harness.models.oracle.ModelTruth.residual_radius`, ``radius["loss"]``), for the loss's floor
            (:func:`model_loss_floor`); ``residual_radius`` None (the default) or a radius not finite: no floor.

    Returns:
        :class:`ModelBounds` keyed by ``graph.outputs``' names (absolute errors, the quantities' units).

    Raises:
        ValueError: when ``node_values`` does not match the graph (count or shapes), or for a bad
            ``function_ulps`` entry.
    """
    if len(node_values) != len(graph.nodes):
        raise ValueError(f"node_values: {len(node_values)} arrays for a graph of {len(graph.nodes)} nodes")
    vals = []
    for node, v in zip(graph.nodes, node_values, strict=True):
        arr = np.asarray(v, dtype=np.float64)
        if arr.size != math.prod(node.shape):
            raise ValueError(f"node_values[{node.id}] ({node.op}): shape {arr.shape}, expected {node.shape}")
        vals.append(arr.reshape(node.shape))
    table = merged_function_ulps(function_ulps)
    reg = Regime(fmt, bool(flush_to_zero or (half_flush and flush_to_zero_default(fmt))))
    ctx = FnContext(fmt, reg, table)
    u = fmt.unit_roundoff

    def expected_gamma(n: int) -> float:
        return min(fmt.gamma(n), LAMBDA * math.sqrt(n) * u)

    update = Regime(fmt, bool(flush_to_zero))
    carry, seeded = seed_carries(graph)
    rig = _Walk(graph, fmt, reg, ctx, fmt.gamma, vals, update_reg=update, carry=carry, seeded=seeded)
    _walk(rig)
    over = rig.over

    def repeated_gamma(n: int) -> float:  # the first-order worst case, every partial sum's error with one sign
        return n * u

    exp = _Walk(graph, fmt, reg, ctx, expected_gamma, vals, repeated_gam=repeated_gamma, update_reg=update, carry=carry,
                seeded=seeded)
    _walk(exp, over)
    deps = _dependencies(graph)
    never = never_finite(graph, vals, rig.Es, fmt)
    signed = signed_infinities(graph, vals, rig.Es, rig.signs, reg, never)
    notes: dict[str, str] = {}
    rigorous: dict[str, F64] = {}
    expected: dict[str, F64] = {}
    inf_ok: dict[str, Mask] = {}
    nan_ok: dict[str, Mask] = {}
    finite_impossible: dict[str, Mask] = {}
    posinf_ok: dict[str, Mask] = {}
    neginf_ok: dict[str, Mask] = {}
    for q, nid in graph.outputs.items():
        # where an intermediate may overflow, inf and NaN are accepted (inf_allowed, nan_allowed) and
        # a finite result is still graded against the bound: past an overflow only the saturating
        # functions return finite values, and their rule bounds those (SATURATION_LIMITS)
        r = np.asarray(rig.Es[nid] * SAFETY, dtype=np.float64)
        rigorous[q] = np.asarray(r.reshape(graph.nodes[nid].shape))
        expected[q] = np.asarray(np.minimum(exp.Es[nid] * SAFETY, r).reshape(r.shape))
        pinf, ninf, nan = rig.signs[nid]
        inf_ok[q] = np.asarray((pinf | ninf).copy())
        nan_ok[q] = np.asarray(nan.copy())
        # the sign of an infinity (signed_infinities: the walk's masks narrowed by sign bits)
        posinf_ok[q] = np.asarray(signed[nid][0].copy())
        neginf_ok[q] = np.asarray(signed[nid][1].copy())
        with np.errstate(invalid="ignore"):
            far = 0.5 * np.abs(vals[nid]) > fmt.max_finite  # beyond twice the range (float64's too); NaN: False
        imposs = np.asarray((never[nid] & far).reshape(r.shape))
        if imposs.any():
            finite_impossible[q] = imposs
        why = [rig.vacuous[i] for i in sorted(deps[nid]) if i in rig.vacuous]
        if why:
            notes[q] = f"the rigorous bound is vacuous ({why[0]}; {fmt.name})"
    used = {n.attrs["fn"] for n in graph.nodes if n.op in ("fn", "fn_grad")}
    if "softplus" in used:
        table["softplus_threshold"] = SOFTPLUS_THRESHOLD_ERROR
        notes["softplus"] = (f"torch's softplus returns z for z > {SOFTPLUS_THRESHOLD:g} and its derivative 1 there: "
                             f"an absolute error up to exp(-20) = {SOFTPLUS_THRESHOLD_ERROR:.3g} in value and derivative")
    return ModelBounds(rigorous=rigorous, expected=expected, inf_allowed=inf_ok, nan_allowed=nan_ok,
                       function_ulps=table, notes=notes, flush_to_zero=reg.ftz, finite_impossible=finite_impossible,
                       posinf_allowed=posinf_ok, neginf_allowed=neginf_ok,
                       loss_floor=model_loss_floor(graph, vals, rig.Es, reg, residual_radius, loss_radius))


def model_loss_floor(graph: Graph, vals: Sequence[F64], Es: Sequence[F64], reg: Regime, residual_radius: F64 | None,
                     loss_radius: float) -> LossFloor | None:
    """The loss's floor on the model path: :func:`harness.bounds.loss_floor` (the one formula, Higham 2002 §2.2: a
    correct evaluation of ``c sum r^_i^2`` in any order keeps ``(1 - u)`` of each non-negative normal result) of the
    residual node ``R`` (:func:`harness.models.graph.loss_residual`), with ``E_i`` its rigorous bound plus the
    truth's radius there: ``|r^_i| >= |R_mid_i| - radius_i - E_i``, never more (the node value is the ball's
    midpoint, the exact residual within ``radius_i`` of it).

    Args:
        graph: the plan; vals: every node's value (the midpoints, float64); Es: the rigorous walk's bounds per node;
        reg: the regime of the walk (flush-to-zero as the bounds).
        residual_radius: (N, K) float64 rounded up; loss_radius: the loss's (absolute, float64 rounded up).

    Returns:
        the floor (formed lazily: :meth:`harness.bounds.LossFloor.lower_limit`), or None where no radius is given or
        one is not finite (the exact value is not enclosed: no check). An infinite ``E_i`` (a vacuous bound, a domain
        edge: :func:`domain_edge`) gives term ``i`` no floor; a residual value that is not finite gives none at all.
    """
    if residual_radius is None or not math.isfinite(loss_radius):
        return None
    r, c = loss_residual(graph)
    shape = graph.nodes[r].shape
    rad = np.broadcast_to(np.asarray(residual_radius, dtype=np.float64), shape)
    if not bool(np.isfinite(rad).all()):
        return None
    with np.errstate(invalid="ignore", over="ignore"):
        E = np.broadcast_to(np.asarray(Es[r], dtype=np.float64), shape) * SAFETY
        E = np.where(np.isnan(E), np.inf, E) + rad  # (LossFloor.value takes E up by 2**-30: float64's roundings here)
        exact = abs(float(vals[graph.outputs["loss"]])) + loss_radius
    R = np.broadcast_to(np.asarray(vals[r], dtype=np.float64), shape)
    return loss_floor(R, E, float(c), reg, exact)


def _dependencies(graph: Graph) -> list[set[int]]:
    """For each node, the ids of the nodes it depends on (itself included)."""
    deps: list[set[int]] = []
    for node in graph.nodes:
        s = {node.id}
        for i in node.args:
            s |= deps[i]
        deps.append(s)
    return deps


def bound_float64_reference(graph: Graph, node_values: list[F64]) -> dict[str, F64]:
    """The rigorous bound of a float64 evaluation (:func:`model_bounds` in float64): how far a
    float64 reference may be from the exact values (used when float64 stands in for the truth)."""
    return model_bounds(graph, node_values, FLOAT64).rigorous


__all__ = ["CRITICAL_POINTS", "FUNCTION_ULPS", "RULES", "SOFTPLUS_THRESHOLD", "SOFTPLUS_THRESHOLD_ERROR",
           "ModelBounds", "activation_grad_bound", "activation_value_bound", "bound_float64_reference",
           "elementary_grad_bound", "elementary_value_bound",
           "compute_format", "constant_rounding", "interval_max_abs", "merged_function_ulps", "model_bounds",
           "model_loss_floor",
           "never_finite", "signed_infinities"]
