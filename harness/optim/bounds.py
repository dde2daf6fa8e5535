"""Forward error bounds of one optimizer update, per element.

The update is graded *given what the implementation held*: its own parameter and state before the
step and its own gradient of the step (the gradient itself is graded by the step's ``grad_W`` and
``grad_b`` records against the exact gradient, :mod:`harness.bounds`). So the only errors are the
roundings of the update's own operations and of the hyper-parameters as the implementation holds them.

**Rounding model** (as :mod:`harness.bounds`): each operation ``fl(x op y) = (x op y)(1 + d) + e``,
``|d| <= u2`` with ``u2 = u + u_w (1 + u)`` (:func:`harness.bounds.update_rounding`: an operation may
be computed in a wider type -- PyTorch's float32 opmath for float16 and bfloat16 -- and rounded to the
dtype), ``|e| <= eta`` (:class:`harness.bounds.Regime`: half the subnormal spacing, or the smallest
normal number where the step declares flush-to-zero, :func:`_eta`). A hyper-parameter ``h``
(a Python float) is held in the operation's type: relative error ``r_h = u2`` (normal) or up to
``min(1, eta / |h|)`` where it is subnormal in the dtype (:func:`holding`; at most 100%: flushed to 0). Hyper-parameters
derived in float64 (``1 - tau``, ``1 - beta``, ``lr / (1 - beta1^t)``, ``sqrt(1 - beta2^t)``) add
their float64 error (torch.optim computes them in Python floats; its fused kernels in double). Adam's bias
corrections may instead be computed in float32 for float32 and narrower parameters (below).

**SGD family** (:func:`sgd_bounds`). Every output of :func:`harness.optim.rules.sgd_rule` is a sum of
``T`` terms ``c_i x_i``, ``x_i`` one of ``theta, g, buf`` and ``c_i`` a signed product of ``n_i``
hyper-parameters (found by running the rule in :class:`Terms` arithmetic). In any evaluation order
(for-loop ``mul_``/``add_(alpha=)``, foreach, fused, FMA or not, ``1 - tau`` applied first or last),
term ``i`` passes at most ``n_i`` multiplications, ``T - 1`` additions and ``SLACK`` = 2 extra
roundings (a product formed in the dtype and then scaled again, an intermediate stored in the dtype),
and is held with factor ``prod (1 + r_h)``: by Higham (2002) Lemma 3.1 ``prod (1 + d_j) = 1 + theta_k``,
``|theta_k| <= gamma_k``,

    |out^ - out| <= sum_i |c_i x_i| ((1 + u2)^(n_i + T - 1 + SLACK) prod_h (1 + r_h) - 1) + min(N_ops eta amp, U)

(``amp``: the most the multiplications after an operation can scale its underflow by, :func:`amplification`;
``N_ops = T - 1 + sum_i n_i``, every operation of the expanded sum charged a whole ``eta`` at the output's level).
``U`` counts the underflows where they happen, in the rule's own association, which every torch.optim form (for-loop,
foreach, fused) and the NumPy step keep: ``d = g + lambda theta``, ``buf = mu buf_ + (1 - tau) d``, ``D = d + mu buf`` or
``buf``, and only then ``theta - lr D``. With each operation ``fl(x op y) = (x op y)(1 + d) + e``, ``|e| <= eta``
(Higham 2002, sec. 2.1: underflow as an absolute error), a computed ``x^`` carrying an underflow error ``U_x`` gives

    U(h x) <= |h| (1 + r_h)(1 + u2) U_x + eta,        U(x + y) <= (U_x + U_y)(1 + u2) + eta

(:class:`Terms`: the ``e`` of an operation inside ``D`` reaches the parameter times ``lr (1 + r_lr)``, not whole), the
inputs exact (or ``eta`` each where the step flushes them: ``flush_to_zero``), and ``U = (U_out + SLACK eta amp)(1 +
u2)^SLACK`` for the ``SLACK`` extra roundings anywhere (an association folding ``lr mu``, ``lr`` distributed over the
look-ahead, an intermediate stored). A folded product ``P`` of hyper-parameters (``lr * mu * buf`` in Python: ``lr mu``
formed in float64, then held in the dtype, as JAX's weak types do) is subnormal in float16 where ``lr`` is small (``1e-5
* 0.2`` is 34 subnormal spacings): held with up to ``eta / P`` relative error, not ``u2``, so a term with two or more
hyper-parameters below 1 whose product is below the smallest normal number is held with ``(1 + min(1, eta / P))`` more
(:meth:`Terms.bound`; a correct float16 step ``W - lr mu buf - lr d`` was ``disagree`` at 1.53 x the bound,
helper-183). Both are bounds of an evaluation in the rule's association, so their minimum is
(the expanded count is the smaller with one or two terms). (With ``N_ops eta`` alone, 18 ``eta`` for Nesterov with weight
decay, 9 subnormal spacings in float16, ``mutant-sgd-nesterov-dropped`` 6.2 and 7.8 spacings off passed at 0.99 and
0.86 of the bound; now 2.4 times it: helper-180.)

**Adam, AdamW** (:func:`adam_bounds`), each step with the error ``E`` of the previous one carried
(``w = 1 - beta1``, ``w2 = 1 - beta2``, ``K(n) = (1 + u2)^n - 1``; magnitudes of exact values):

- ``d = g + lambda theta`` (Adam's L2): ``E_d = K(3)(|g| + lambda |theta|) + sigma_lambda (1 + K(3)) lambda |theta| + eta``;
- AdamW's decay ``theta1 = theta (1 - lr lambda)`` (or ``theta - lr lambda theta``):
  ``E_1 = K(4) |theta| (1 + lr lambda) + eta``;
- ``m = beta1 m_ + w d`` in any of its forms (``lerp``: ``m_ + w (d - m_)`` for ``w < 1/2``,
  ``d - (1 - w)(d - m_)`` otherwise, or the two products): ``E_m = K(6) A_m + w (1 + K(6)) E_d + 3 eta``
  with ``A_m`` the largest sum of absolute terms of the three forms, plus ``(sigma_w w + sigma_beta1 beta1)(1 + K(6))
  (|d| + E_d + |m_|)``;
- ``v = beta2 v_ + w2 d^2`` (all terms >= 0): ``E_v = K(6)(beta2 v_ + w2 d^2) + w2 (1 + K(6))(2 |d| E_d + E_d^2) + 3 eta``
  plus ``(sigma_beta2 beta2 v_ + sigma_w2 w2 (|d| + E_d)^2)(1 + K(6))``;
  (``sigma_h = min(1, eta / |h|)`` where ``h`` is below the dtype's smallest normal number, else 0: the subnormal part of
  its holding, :func:`holding`; each ``K(n)`` counts its normal rounding. torch's float16 ``grad.add(param,
  alpha=weight_decay)`` holds ``lambda = 3e-6`` in float16, and its Adam was ``disagree`` at 1.48 times the bound of
  ``exp_avg_sq``; a step written in the dtype holds the betas and ``1 - beta`` there: helper-137);
  amsgrad's ``V = max(V_, v)`` is exact: ``E_V = E_v``;
- ``S = sqrt(V)``: ``|sqrt(V^) - sqrt(V)| <= min(E_V / sqrt(V), sqrt(E_V))``, then one rounding;
- ``q = S / c2``, ``c2 = sqrt(1 - beta2^t)`` held as ``c2 (1 + delta)``, ``-r_c2_dn <= delta <= r_c2_up``, each side
  ``u2 + 4 u64 (1 + beta2^t / (1 - beta2^t))`` (``pow``, the cancellation of ``1 - beta2^t``, the square root, all in
  float64, then held), or the float32 one below where larger (its sides differ: below). ``q^`` lies above ``q`` (``c2^``
  below ``c2``) by at most ``E_q_up = (E_S / c2 + q r_c2_dn) / (1 - r_c2_dn) (1 + u2) + u2 q + eta`` and below it by at
  most ``E_q_dn = (E_S / c2 + q r_c2_up) / (1 - r_c2_dn) (1 + u2) + u2 q + eta`` (``S^ / c2^`` at most ``E_S / (c2 (1 -
  r_c2_dn))`` from ``S / c2^``, and ``q (1 / (1 + delta) - 1)`` of the sign of ``-delta``);
- ``den = q + eps``: ``E_den_up = E_q_up + r_eps eps + u2 (den + E_q_up + r_eps eps) + eta`` above ``den``, and
  ``E_den_dn``, the same with ``E_q_dn`` first, below it;
- ``r = m / den``: ``r^ - r = (m^ - m) / den^ + r (den - den^) / den^``, so beyond ``r`` (``|r^| > |r|``, ``m``'s sign)
  by at most ``E_r_more = (E_m + |r| E_den_dn) / (den - E_den_dn) (1 + u2) + u2 |r| + eta`` and short of it by at most
  ``E_r_less``, the same with ``E_den_up`` in the numerator (a denominator below ``den`` only enlarges ``|r^|``); and,
  per side, at most
  ``R - |r|`` beyond ``r`` and ``|r| - L`` short of it with ``R = (|m| + E_m) / (eps (1 - r_eps)) (1 + u2) + eta`` and
  ``L = (|m| - E_m) / (den + E_den_up) (1 - u2) - eta`` where ``m``'s sign is certain (every evaluation's denominator lies
  in ``[eps (1 - r_eps), den + E_den_up]``, and its quotient has the sign of ``m`` or is 0), else ``R + |m| / eps`` on both
  (:func:`_eps_cap`). ``m``'s sign is certain where ``|m| > E_m`` or where its terms have one sign (``m_`` and ``d`` alike
  or 0, ``d``'s own sign certain: rounding is monotonic, so each form of ``m`` keeps it; helper-177). Infinite, a vacuous
  bound, only where ``eps`` as held may be 0 (flushed, or below the dtype's resolution) and ``E_den_dn >= den`` (``V`` near
  0): beyond ``r`` always, short of it only where ``m``'s sign is not certain (:func:`sided_bound` grades each side);
- ``p = s r``, ``s = lr / (1 - beta1^t)`` held as ``s (1 + delta)``, ``-r_s_dn <= delta <= r_s_up``, each side
  ``r_lr + 4 u64 (1 + beta1^t / (1 - beta1^t))``, or the float32 one below where larger. ``p^ - p = s^ (r^ - r) + (s^ -
  s) r``: beyond ``p`` by at most ``E_p_more = s E_r_more (1 + r_s_up) + |p| r_s_up + e_sm + u2 (|p| + ...) + eta`` and
  short of it by ``E_p_less``, the same with ``E_r_less`` and ``|p| r_s_dn`` (``E = s E_r (1 + r_s_up) + |p| r_s + e_sm``,
  then ``E + u2 (|p| + E) + eta``).
  ``e_sm`` is torch.optim's order: ``addcdiv`` (for-loop, foreach and fused forms) computes ``(s m) / den``, so
  ``fl(s m) = s m (1 + d) + e`` with ``|e| <= eta`` (Higham 2002, sec. 2.1, underflow as an absolute error) and the
  quotient ``(s m (1 + d) + e) / den^ (1 + d')``: the relative errors are those of ``s (m / den)`` (one product, one
  division), and ``e`` adds ``e / den^``, ``den^ >= max(den - E_den, eps (1 - r_eps))`` (:func:`_eps_cap`). So
  ``e_sm = min(eta, s (1 + r_s_up)(|m| + E_m)) / max(den - E_den_dn, eps (1 - r_eps))`` where ``s m`` may be below the
  smallest normal number (``s (1 - r_s_dn)(|m| - E_m) < 2**emin``), else 0 (a product of normal result has no absolute
  error; rounding ``x`` to the subnormals errs by at most ``min(eta, |x|)``, and ``|fl_h(s) m^| <= s (1 + r_s_up)(|m| + E_m)``). (Without it, float32
  Adam at step 1 with a first moment of ``2**-140`` and ``eps = 2**-24``, whose ``s m`` rounds to the least subnormal,
  was ``disagree`` at 106 times the bound in all three torch.optim forms: helper-127.)
  Short of ``p`` (``|p^| < |p|``, or the other sign), where ``|m| > E_m``, also at most ``|p| - P_low``: ``p^`` has the
  sign of ``s m`` and ``|p^| >= P_low = s (1 - r_s_dn)(|m| - E_m) / (den + E_den_up) (1 - K(4)) - eta (1 + s (1 +
  r_s_up))(1 + 1 / (den + E_den_up))`` in each order: ``(s m) / den`` (addcdiv), ``s (m / den)`` and the Adam paper's and optax's
  ``lr ((m / (1 - beta1^t)) / den)``, at most three operations, each ``fl(x) >= |x| (1 - u2) - eta`` (Higham 2002, sec.
  2.1), and one more rounding of a hyper-parameter held in the dtype (``1 - beta1^t`` in optax's order); their underflows
  reach ``p^`` scaled by at most ``1``, ``s (1 + r_s_up)``, ``1 / (den + E_den_up)`` or their product.
- ``theta' = theta1 - p``: ``E = E_1 + E_p + u2 (|theta'| + E_1 + E_p) + eta``, on each side of the exact ``theta'``
  with that side's ``E_p`` (a ``p^`` beyond ``p`` puts ``theta'^`` on the other side of ``theta'``: short of ``p`` is
  above ``theta'`` where ``p > 0``; the subtraction's rounding, at most ``u2 |theta1^ - p^| + eta``, takes back more
  than it adds where ``p^`` errs away from the side ``theta'^`` lies on). ``update_bounds`` returns the larger of the two
  as the parameter's bound and each under ``ABOVE`` and ``BELOW`` (:func:`sided_bound`). (With one bound for both sides,
  where the second moment is below float16's subnormals and ``eps`` small a correct update may be hundreds of times the
  exact one, and an update of the wrong sign, or none at all, agreed: helper-141.)

**Bias corrections in float32** (:func:`float32_bias_corrections`, float32, float16 and bfloat16 parameters): optax's
Adam in JAX float32, torch.optim's capturable and differentiable paths (float32 ``step`` tensors, also for half
parameters) and TF1's Adam (a float32 running product ``beta^t``) round ``beta`` to float32 and cancel ``1 - beta^t``
there, which amplifies float32's rounding ``u = 2**-24`` by ``rho = beta^t / (1 - beta^t)`` (999 for beta2 = 0.999 at
step 1). With ``fl32(beta) = beta (1 + d0)`` (``d0 = (fl32(beta) - beta) / beta``, computed with its sign: +0.216 ``u``
for 0.999, -0.28 ``u`` for 0.9999, +0.16 ``u`` for 0.99; 0 where ``beta`` is kept exact; either sign, up to 100%, for a
``beta`` below float32's normal range) and a power within ``C_POW = 8`` units ``u`` (4 ULPs), ``fl(beta^t)`` lies in
``[beta^t min(1, (1 + d0)^t)(1 - C_POW u), beta^t max(1, (1 + d0)^t)(1 + C_POW u)]``; or formed as a running product of ``t`` factors ``fl32(beta)`` (TF1's
``beta_power *= beta``), which is deterministic: it is computed here, in float32 as the step does
(:func:`running_product`), and its own distance from ``beta^t`` taken (plus ``2 u64 beta^t`` for float64's
``beta^t``). The worst case of a product of ``t`` roundings, ``(1 + u)^(t - 1) - 1`` (Higham 2002 Lemma 3.1), grows
linearly in ``t``: it was this bound's first form, and with beta2 = 0.9999 a step using ``1 - beta2^(t - 1)`` agreed
from t = 1,500 on (helper-105), where the real running product is 546 ``u`` off at t = 2,000 and the bug 1,700.
The subtraction rounds once (exact by Sterbenz where ``beta^t >= 1/2``, counted anyway). **The sides**: a power below
``beta^t`` puts ``1 - beta^t`` above its exact value, one above it below, so with ``under`` and ``over`` the most the
power may lie below and above ``beta^t`` (over the envelope above, ``+ a``, and the running product's ``P_t - beta^t
-+ 2 u64 beta^t``; ``a = C_POW 2**-149``: the power's own underflow), ``1 - beta^t`` errs relatively by at most

    r_bc_up = (1 + under / (1 - beta^t)) (1 + u) - 1   above,    r_bc_dn = 1 - (1 - over / (1 - beta^t)) (1 - u)   below

(:func:`bias_correction_sides`; their larger is the symmetric ``r_bc`` this bound had, :func:`bias_correction_error`).
Where float32 rounds ``beta2`` down (0.9999, 0.999999, 0.9999999), every float32 power is below ``beta2^t`` but for
``C_POW u``: ``r_bc2_up`` carries the amplified rounding of ``beta2`` and ``r_bc2_dn`` only ``C_POW u rho + u`` (where
it rounds up, 0.999, the other way round). The
rest is monotonic: ``c2`` rises with ``1 - beta2^t`` (the square root, then roundings of either sign), ``s`` falls with
``1 - beta1^t``; ``q = S / c2`` falls as ``c2`` rises, ``den = q + eps`` with it, ``|r| = |m| / den`` rises, ``|p| = s |r|``
rises with ``s`` and ``|r|``, in each order (torch's differentiable path folds ``c2`` and ``s`` into ``sqrt(V) / (c2 s) +
eps / s``: monotonic the same way). So ``r_c2_up = sqrt(1 + r_bc2_up)(1 + r_o)(1 + h_c2) - 1``, ``r_c2_dn = 1 - sqrt(1
- r_bc2_dn)(1 - r_o)(1 - h_c2)`` (the square root rounded, then held in the dtype), ``r_s_up = (1 + r_lr32)(1 + r_o)(1 +
h_s) / (1 - r_bc1_dn) - 1`` and ``r_s_dn = 1 - (1 - r_lr32)(1 - r_o)(1 - h_s) / (1 + r_bc1_up)`` (``lr`` held in float32,
the division rounded, held): for float32 ``r_o = u2`` (a float64 operation rounded to float32 too) and ``h = 0``; below
it ``r_o = u`` and ``h`` the dtype's holding of ``c2`` and of ``lr`` (``s >= lr``), and the chain above carries each
side to the update's beyond (``E_p_more``) and short (``E_p_less``) bounds, the parameter's below and above where
``p > 0``. (With one symmetric allowance, float32 Adam, betas (0.99, 0.9999), whose second correction lagged a step,
agreed at t = 10,000 to 30,000 at 0.18-0.58 of the bound, on the side float32 never reaches; now 1.9-19.5 times it. At
t = 40,258 its 14.4 ULPs stay inside the float64 model's own 21: helper-178.) Each side is taken as the larger of it
and the float64 one, so both evaluations are covered; float64 parameters keep the float64 model (float32 corrections for float64 parameters are
``disagree``, as they should be). The cost: float32 Adam's bound at step 1 with beta2 = 0.999 is about 48 ULPs of the
parameter (a few from step 2). (With float64 corrections only, optax's float32 Adam was ``disagree`` at 1.9-3.5 times
the bound, torch's differentiable Adam at 1.3-2.3: helper-101.)

The state quantities are graded against ``E_m``, ``E_v`` and ``E_V``.

**Expected bounds**: the same derivations with each ``K(n)`` replaced by the probabilistic
``min(LAMBDA u2 sqrt(n), K(n))`` (Higham and Mary 2019, as :mod:`harness.bounds`; ``LAMBDA = 6``), the
hyper-parameter holdings and underflows kept rigorous; never above the rigorous bound.

Where the implementation keeps its state in a narrower type than the parameter (float16 state for
float32 parameters), the state's rounding is ``2**-11``, not ``u2``: far outside these bounds, which
is how that downgrade is caught.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ..bounds import LAMBDA, Regime, update_rounding
from ..floats import FLOAT32, FLOAT64, FloatFormat
from .config import OptimizerConfig
from .rules import sgd_rule

F64 = npt.NDArray[np.float64]
#: Extra roundings allowed per term of the SGD family (module docstring).
SLACK = 2
U64 = 2.0**-53
U32 = 2.0**-24
#: A float32 ``pow``'s relative error in units of ``U32``: 4 ULPs (CUDA's documented ``powf`` bound; glibc's is below 1
#: ULP), one ULP being at most ``2 U32`` of a normal value.
C_POW = 8
_SAFETY = 1.0 + 2.0**-30
#: The suffixes of the one-sided bounds of an Adam parameter in :func:`update_bounds`' dictionaries: the bound of its
#: error above the exact value, and below it (:func:`sided_bound`).
ABOVE, BELOW = "~above", "~below"
#: The suffix of an Adam parameter's least denominator ``max(den - E_den, eps (1 - r_eps))`` over every correct evaluation
#: in :func:`update_bounds`' rigorous dictionary (not a bound; :func:`intermediate_overflow` reads it).
DEN_FLOOR = "~den_floor"


@dataclass(frozen=True)
class Hyper:
    """A hyper-parameter in :class:`Terms` arithmetic: ``|value|`` and its relative holding error."""

    value: float
    rel: float

    def __mul__(self, other: Terms) -> Terms:
        with np.errstate(over="ignore"):  # a magnitude past float64 is inf: a vacuous bound, not a warning on stderr
            # fl(h^ x^) = h^ x^ (1 + d) + e: the underflow x^ carries is scaled by |h^| (1 + d), and e is the product's
            # own (Terms.under)
            scale = abs(self.value) * (1 + self.rel) * (1 + other.u2)
            v = abs(self.value)
            below = 0 < v < 1  # (a factor below 1 makes a folded product smaller: Terms.bound)
            return Terms([(v * a, n + 1, h * (1 + self.rel), c * v if below else c, m + below)
                          for a, n, h, c, m in other.full()], scale * other.under + other.eta, other.eta, other.u2)


class Terms:
    """A sum of terms ``c_i x_i`` (:func:`sgd_bounds`): per term ``|c_i x_i|`` (an array), the
    multiplications ``n_i`` it passed and its holding factor ``prod (1 + r_h)``; and ``under``, the most the
    underflows of the operations that formed it (in the rule's association) may have moved it, already scaled by the
    operations after them (an array or a float, absolute; ``eta`` per operation, ``u2`` the relative rounding that
    scales an earlier underflow in each later operation)."""

    def __init__(self, terms: list[tuple[F64, int, float]] | list[tuple[F64, int, float, float, int]],
                 under: F64 | float = 0.0, eta: float = 0.0, u2: float = 0.0) -> None:
        self.terms = terms
        self.under = under
        self.eta = eta
        self.u2 = u2

    def full(self) -> list[tuple[F64, int, float, float, int]]:
        """The terms as ``(|c_i x_i|, n_i, prod (1 + r_h), prod of its hyper-parameters below 1 in magnitude, how
        many)``: the last two give the smallest product of hyper-parameters an evaluation may fold (:meth:`bound`)."""
        return [t if len(t) == 5 else (t[0], t[1], t[2], 1.0, 0) for t in self.terms]

    def __add__(self, other: Terms) -> Terms:
        # fl(a^ + b^) = (a^ + b^)(1 + d) + e
        return Terms([*self.full(), *other.full()], (self.under + other.under) * (1 + self.u2) + self.eta, self.eta,
                     self.u2)

    def __sub__(self, other: Terms) -> Terms:
        return self + other

    def __neg__(self) -> Terms:
        return self

    def bound(self, u: float, eta: float, k: Callable[[float], float], amp: float = 1.0,
              min_normal: float = 0.0) -> F64:
        """``sum_i |c_i x_i| ((1 + k(n_i + T - 1 + SLACK)) h_i - 1) + min(N_ops eta amp, (under + SLACK eta amp)
        (1 + u)^SLACK)`` (module docstring), with ``k`` the rigorous ``K(n) = (1 + u)^n - 1`` or the expected one,
        ``N_ops = T - 1 + sum_i n_i`` the operations of the expanded sum, ``under`` the underflows of the rule's own
        operations as they reach the result (:class:`Terms`), and ``amp`` the most that the operations after an
        underflowing one can scale its absolute error by (:func:`amplification`). A term with two or more
        hyper-parameters below 1 whose product ``P`` is below ``min_normal`` (the dtype's smallest normal number) is
        held with ``h_i (1 + min(1, eta / P))`` as well: an evaluation may fold them into one Python float held in the
        dtype, subnormal there (JAX's weakly typed ``lr * mu * buf``; module docstring)."""
        terms = self.full()
        t = len(terms)
        total = np.zeros_like(terms[0][0])
        ops = t - 1
        for a, n, h, c, m in terms:
            if m >= 2 and c < min_normal:
                h = h * (1 + (min(1.0, eta / c) if c > 0 else 1.0))
            total = total + a * ((1 + k(n + t - 1 + SLACK)) * h - 1)
            ops += n
        underflow = np.minimum(ops * eta * amp, (self.under + SLACK * eta * amp) * (1 + u) ** SLACK)
        return (total + underflow) * _SAFETY


def amplification(hypers: Mapping[str, Hyper]) -> float:
    """The most the multiplications after an operation can scale its absolute (underflow) error by: the product of
    the hyper-parameters larger than 1 as held (``|h| (1 + r_h)``), at least 1. An intermediate rounded in the
    subnormal range (``d = g + wd W`` of a subnormal weight, off by half the subnormal spacing) is multiplied by
    ``lr`` afterwards: with ``lr = 16`` a correct float16 step erred by 8 spacings against a bound of about 3
    (helper-55)."""
    amp = 1.0
    for hp in hypers.values():
        amp *= max(1.0, abs(hp.value) * (1 + hp.rel))
    return amp


def may_vanish(h: float, fmt: FloatFormat, flush_to_zero: bool = False) -> bool:
    """Whether a correct step may hold the hyper-parameter ``h`` (a Python float) as 0 in ``fmt``: ``h = 0``, ``|h|`` at
    most half the smallest subnormal (round to nearest, ties to even: nothing but 0 for float64, whose ``h`` is held
    exactly), or below the smallest normal number where the step declares ``flush_to_zero``. (torch's float16
    ``add(other, alpha=h)`` holds ``alpha`` in float16: ``alpha = -1e-8`` is 0 there.)"""
    a = abs(h)
    if a == 0:
        return True
    if flush_to_zero:
        return a < fmt.min_normal
    return a <= 2.0 ** (fmt.emin - fmt.precision)


def holding(h: float, u2: float, fmt: FloatFormat, derived: float = 0.0, eta: float | None = None) -> float:
    """Relative error of a hyper-parameter ``h`` as an implementation holds it (module docstring);
    ``derived``: its own float64 error when computed from others; ``eta``: the absolute error of rounding a
    subnormal value (:func:`_eta`; None: half the subnormal spacing, gradual underflow). A value below the smallest
    normal number errs by at most ``eta``, and by at most all of itself (flushed to 0): ``min(1, eta / |h|)``.
    (The smallest normal number over ``|h|`` was taken, uncapped: 6.1 for ``lr = 1e-5`` in float16, and a step
    with the update's sign flipped agreed at 116-174 ULPs, helper-55.)"""
    ah = abs(h)
    e = fmt.underflow_quantum if eta is None else eta
    sub = min(1.0, e / ah) if 0 < ah < fmt.min_normal else 0.0
    return u2 + sub + derived


def _kernels(fmt: FloatFormat) -> tuple[float, Callable[[float], float], Callable[[float], float]]:
    u2 = update_rounding(fmt)

    def rig(n: float) -> float:
        return math.expm1(n * math.log1p(u2))

    def exp(n: float) -> float:
        return min(LAMBDA * u2 * math.sqrt(n), rig(n))

    return u2, rig, exp


def _eta(fmt: FloatFormat, flush_to_zero: bool) -> float:
    """The absolute error of one underflowing operation of an update: gradual underflow (half the subnormal spacing)
    unless the step declares ``flush_to_zero``, in every dtype, as for Adam (:func:`adam_bounds`). An update is
    element-wise, and its half-precision kernels compute in float32 (PyTorch's opmath), where float16's subnormals are
    normal numbers: nothing flushes them. With the flush allowed by default in float16 every element's bound gained
    ``2**-14`` per operation, about 76 ULPs of a weight near 0.016, and a Nesterov step that dropped its momentum term
    was ``agree`` at 15-43 ULPs (helper-53)."""
    return Regime(fmt, flush_to_zero).eta


def sgd_bounds(opt: OptimizerConfig, params: Mapping[str, F64], grads: Mapping[str, F64],
               state: Mapping[str, Mapping[str, F64]], t: int, lr: float, fmt: FloatFormat,
               flush_to_zero: bool = False) -> tuple[dict[str, F64], dict[str, F64]]:
    """Rigorous and expected bounds of one SGD-family step (module docstring).

    Args:
        params, grads: float64 arrays by parameter name (``W`` (D, K), ``b`` (K,)): what the
            implementation held. state: per parameter, its state after step ``t - 1``.
        lr: the learning rate as handed to the implementation (a Python float).

    Returns:
        ``(rigorous, expected)``: per quantity (``W``, ``b``, ``momentum_buffer_W``, ...) an array of
        absolute error bounds of the parameter's shape.
    """
    u2, rig, exp = _kernels(fmt)
    eta = _eta(fmt, flush_to_zero)
    hp = {
        "lr": Hyper(lr, holding(lr, u2, fmt, eta=eta)),
        "momentum": Hyper(float(opt["momentum"]), holding(float(opt["momentum"]), u2, fmt, eta=eta)),
        "one_minus_dampening": Hyper(1 - float(opt["dampening"]),
                                     holding(1 - float(opt["dampening"]), u2, fmt, U64, eta=eta)),
        "weight_decay": Hyper(float(opt["weight_decay"]), holding(float(opt["weight_decay"]), u2, fmt, eta=eta)),
    }
    amp = amplification(hp)
    rigorous: dict[str, F64] = {}
    expected: dict[str, F64] = {}
    # an input read as 0 under flush_to_zero (denormals-are-zero) errs by up to eta: each read of it is charged once
    read = eta if flush_to_zero else 0.0
    for p in params:
        w = Terms([(np.abs(params[p]), 0, 1.0)], read, eta, u2)
        g = Terms([(np.abs(grads[p]), 0, 1.0)], read, eta, u2)
        st = {k: Terms([(np.abs(v), 0, 1.0)], read, eta, u2) for k, v in state.get(p, {}).items()}
        new_w, new = sgd_rule(w, g, st, t, opt, hp)
        for name, terms in ((p, new_w), *((f"{k}_{p}", v) for k, v in new.items())):
            rigorous[name] = terms.bound(u2, eta, rig, amp, fmt.min_normal)
            expected[name] = np.minimum(terms.bound(u2, eta, exp, amp, fmt.min_normal), rigorous[name])
    return rigorous, expected


def adam_bounds(opt: OptimizerConfig, params: Mapping[str, F64], grads: Mapping[str, F64],
                state: Mapping[str, Mapping[str, F64]], t: int, lr: float, fmt: FloatFormat,
                flush_to_zero: bool = False) -> tuple[dict[str, F64], dict[str, F64]]:
    """Rigorous and expected bounds of one Adam or AdamW step (module docstring); arguments and results as
    :func:`sgd_bounds`, and per parameter ``p`` its one-sided bounds under ``p + ABOVE`` and ``p + BELOW``
    (:func:`sided_bound`) and, in the rigorous dictionary only, its least denominator under ``p + DEN_FLOOR`` (not a
    bound: :func:`intermediate_overflow` reads it). Magnitudes are evaluated in float64 from the held values (their own
    relative error, about 2**-52, is covered by a safety factor).

    Underflow is gradual here (``eta`` half the subnormal spacing) unless the step declares
    ``flush_to_zero`` (as the SGD bounds, :func:`_eta`). Flushing is an absolute error of up to the smallest normal number per operation: for
    float16 that is 2**-14, more than Adam's second moment ``v = (1 - beta2) g^2`` itself for every
    ``|g| < 0.25``, which made the bound of the division vacuous (infinite) for ordinary gradients
    and let a wrong step (the learning rate's sign flipped, a missing bias correction) be graded
    ``agree``. A flushed ``v`` makes the step divide by 0: such a result is not finite, graded
    where the bound is vacuous (v near 0 against eps) as before."""
    u2, rig, exp = _kernels(fmt)
    eta = _eta(fmt, flush_to_zero)
    b1, b2 = (float(x) for x in opt["betas"])
    w1, w2 = 1 - b1, 1 - b2
    wd = float(opt["weight_decay"])
    eps = float(opt["eps"])
    bc1, bc2 = 1 - b1**t, 1 - b2**t
    c2 = math.sqrt(bc2)
    s = lr / bc1
    r_c2_64 = u2 + 4 * U64 * (1 + b2**t / bc2)
    r_s_64 = holding(lr, u2, fmt, eta=eta) + 4 * U64 * (1 + b1**t / bc1)
    r_c2, r_s = (r_c2_64, r_c2_64), (r_s_64, r_s_64)  # (up, dn): above the exact value, below it
    if fmt.precision < FLOAT64.precision:  # (or in float32: both are covered, each side the larger, module docstring)
        c2_32, s_32 = float32_bias_corrections(b1, b2, t, lr, u2, fmt, eta, flush_to_zero)
        r_c2 = (max(r_c2_64, c2_32[0]), max(r_c2_64, c2_32[1]))
        r_s = (max(r_s_64, s_32[0]), max(r_s_64, s_32[1]))
    r_eps = holding(eps, u2, fmt, eta=eta)
    # beyond the one rounding each K(n) counts for holding a hyper-parameter, its subnormal part (:func:`holding` with no
    # rounding): torch's float16 ``grad.add(param, alpha=weight_decay)`` holds the weight decay in float16 (3e-6 as
    # 2.98e-6), and a step written in the dtype holds the betas and ``1 - beta`` there (module docstring)
    sub = {name: holding(h, 0.0, fmt, eta=eta) for name, h in (("wd", wd), ("b1", b1), ("w1", w1), ("b2", b2), ("w2", w2))}
    rigorous: dict[str, F64] = {}
    expected: dict[str, F64] = {}
    for p in params:
        theta = np.asarray(params[p], dtype=np.float64)
        g = -grads[p] if opt["maximize"] else np.asarray(grads[p], dtype=np.float64)
        prev = state.get(p, {})
        m_ = np.asarray(prev.get("exp_avg", np.zeros_like(theta)), dtype=np.float64)
        v_ = np.asarray(prev.get("exp_avg_sq", np.zeros_like(theta)), dtype=np.float64)
        vmax_ = np.asarray(prev.get("max_exp_avg_sq", np.zeros_like(theta)), dtype=np.float64)
        for k, out in ((rig, rigorous), (exp, expected)):
            with np.errstate(all="ignore"):
                got = _adam_chain(opt, theta, g, m_, v_, vmax_, k, u2, eta, b1, b2, w1, w2, wd, eps, lr, c2, s, r_c2, r_s, r_eps, sub,
                                  fmt.min_normal)
            for name, arr in got.items():
                if name == "den_floor":  # (not a bound: the least denominator, :func:`intermediate_overflow` reads it)
                    if out is rigorous:
                        out[p + DEN_FLOOR] = np.where(np.isnan(arr), 0.0, arr / _SAFETY)
                    continue
                key = p + name[len("theta"):] if name.startswith("theta") else f"{name}_{p}"
                out[key] = np.where(np.isnan(arr), np.inf, arr * _SAFETY)
        for name in list(expected):
            if name in rigorous:
                expected[name] = np.minimum(expected[name], rigorous[name])
    return rigorous, expected


@functools.lru_cache(maxsize=256)
def running_product(beta32: float, t: int) -> float:
    """``fl32(beta)^t`` formed as a float32 running product (``p = beta; p *= beta`` ``t - 1`` times, each product
    rounded to nearest in float32, subnormals kept): what TF1's Adam holds as ``beta_power`` at step ``t``.

    Args:
        beta32: a float32 value (``float(np.float32(beta))``); t: the step, at least 1.

    Returns:
        the float32 product as a float (exact). NumPy's ``multiply.accumulate`` is sequential, left to right."""
    return float(np.multiply.accumulate(np.full(t, beta32, dtype=np.float32))[-1])


def bias_correction_sides(beta: float, t: int) -> tuple[float, float]:
    """Relative error bounds ``(r_up, r_dn)`` of ``1 - beta^t`` computed in float32 (module docstring): how far above
    its exact value (``r_up``) and below it (``r_dn``) a float32 evaluation may put it. ``beta`` held exactly or rounded
    to float32 (``delta_0 = (fl32(beta) - beta) / beta``, computed with its sign: +0.216 ``u`` for 0.999, -0.28 ``u`` for
    0.9999; its subnormal holding below float32's normal range, of either sign), the power within
    ``C_POW`` units ``u`` of ``fl32(beta)^t`` (a ``pow`` function, its own underflow at most ``C_POW`` subnormal spacings)
    or the float32 running product (:func:`running_product`, its signed distance from ``beta^t`` computed, plus ``2 u64
    beta^t`` for float64's ``beta^t``), the cancellation's amplification ``beta^t / (1 - beta^t)``, and the subtraction's
    own rounding ``u``. A power below ``beta^t`` puts ``1 - beta^t`` above its exact value, and one above puts it below:
    with ``lo <= fl(beta^t) <= hi`` over every evaluation counted (the envelope of ``beta^t min(1, (1 + delta_0)^t)(1 -
    C_POW u) - a``, ``beta^t max(1, (1 + delta_0)^t)(1 + C_POW u) + a`` and the running product's interval),
    ``r_up = (1 + (beta^t - lo) / (1 - beta^t))(1 + u) - 1`` and ``r_dn = 1 - (1 - (hi - beta^t) / (1 - beta^t))(1 - u)``.
    Where float32 rounds ``beta`` down (0.9999, 0.999999, 0.9999999) ``r_up`` carries the cancellation of float32's
    rounding and ``r_dn`` only the power's ``C_POW u`` (helper-178); where it rounds up (0.999, 0.99) the other way
    round. Both infinite where ``1 - beta^t`` is not positive."""
    bt = beta**t
    bc = 1 - bt
    if not bc > 0:
        return math.inf, math.inf
    b32 = float(np.float32(beta))  # (round to nearest; 0 <= beta < 1)
    if FLOAT32.min_normal <= beta:
        d_lo = d_hi = (b32 - beta) / beta  # (the rounding's sign is known: exact, float64 of two doubles)
    else:  # (a beta held as a float32 subnormal errs by up to 100%, of either sign)
        d = holding(beta, U32, FLOAT32)
        d_lo, d_hi = -min(d, 1.0), d
    # (1 + delta_0)^t, as t log1p(delta_0): past float64's range from t = 1,024 on for a subnormal beta, where
    # math.expm1 raised OverflowError and the whole case was an error record (helper-137); beta^t is 0 in float64 there
    # and the power's own underflow, ``a``, bounds the float32 one
    a = C_POW * 2.0 * FLOAT32.underflow_quantum

    def grown(delta: float) -> float:  # (1 + delta)^t, inf past float64's range, 0 for delta = -1
        if delta <= -1:
            return 0.0
        x = t * math.log1p(delta)
        return math.exp(x) if x < 700 else math.inf

    if bt > 0:
        pow_over = bt * (max(1.0, grown(d_hi)) * (1 + C_POW * U32) - 1) + a  # fl(beta^t) - beta^t at most
        pow_under = bt * (1 - min(1.0, grown(d_lo)) * (1 - C_POW * U32)) + a  # beta^t - fl(beta^t) at most
    else:
        pow_over = pow_under = a
    dev = running_product(b32, t) - bt
    slack = 2 * U64 * bt  # (bt: float64's pow, within an ULP)
    over, under = max(pow_over, dev + slack), max(pow_under, -dev + slack)
    return (1 + under / bc) * (1 + U32) - 1, 1 - (1 - over / bc) * (1 - U32)


def bias_correction_error(beta: float, t: int) -> float:
    """Relative error bound ``r_bc`` of ``1 - beta^t`` computed in float32, of either sign: the larger side of
    :func:`bias_correction_sides`. Infinite where ``1 - beta^t`` is not positive."""
    up, dn = bias_correction_sides(beta, t)
    return max(up, dn)


def float32_bias_corrections(b1: float, b2: float, t: int, lr: float, u2: float, fmt: FloatFormat, eta: float,
                             flush_to_zero: bool = False) -> tuple[tuple[float, float], tuple[float, float]]:
    """``(r_c2, r_s)`` of :func:`adam_bounds` where ``c2 = sqrt(1 - beta2^t)`` and ``s = lr / (1 - beta1^t)`` are computed
    in float32 (module docstring), each a pair ``(up, dn)``: the relative error above the exact value and below it.
    optax's Adam in JAX float32, torch.optim's capturable and differentiable paths with their float32 ``step``
    tensors. With ``1 - beta^t`` off by ``r_bc_up`` above and ``r_bc_dn`` below (:func:`bias_correction_sides`), ``lr``
    held in float32 (``r_lr``), the square root and the division rounded in float32 and, for a narrower dtype, the
    results held in it (``h``; all of either sign):
    ``c2``: ``up = sqrt(1 + r_bc2_up)(1 + r_o)(1 + h_c2) - 1``, ``dn = 1 - sqrt(1 - r_bc2_dn)(1 - r_o)(1 - h_c2)``;
    ``s`` (``1 - beta1^t`` divides): ``up = (1 + r_lr)(1 + r_o)(1 + h_s) / (1 - r_bc1_dn) - 1``,
    ``dn = 1 - (1 - r_lr)(1 - r_o)(1 - h_s) / (1 + r_bc1_up)``; with ``r_o = u2`` for float32 (a float64 operation
    rounded to float32 too) and ``u`` below it. Both sides infinite where ``1 - beta^t`` may reach 0 (``r_bc_dn >= 1``).
    (With the float64 corrections only, optax's float32 Adam was ``disagree`` at 1.9-3.5 times the bound and torch's
    differentiable Adam at 1.3-2.3: helper-101.)"""
    eta32 = Regime(FLOAT32, flush_to_zero).eta
    r_lr = holding(lr, U32, FLOAT32, eta=eta32)
    (up1, dn1), (up2, dn2) = bias_correction_sides(b1, t), bias_correction_sides(b2, t)
    if fmt.precision >= FLOAT32.precision:
        r_o, h_c2, h_s = u2, 0.0, 0.0
    else:
        c2 = math.sqrt(max(1 - b2**t, 0.0))
        r_o = U32
        h_c2 = holding(c2, fmt.unit_roundoff, fmt, eta=eta) if c2 > 0 else math.inf
        h_s = holding(lr, fmt.unit_roundoff, fmt, eta=eta)  # (s >= lr: s errs no more below the normal range than lr)
    if not dn2 < 1:
        r_c2 = (math.inf, math.inf)
    else:
        r_c2 = (math.sqrt(1 + up2) * (1 + r_o) * (1 + h_c2) - 1,
                1 - math.sqrt(1 - dn2) * (1 - r_o) * max(0.0, 1 - h_c2))
    if not dn1 < 1:
        r_s = (math.inf, math.inf)
    else:
        r_s = ((1 + r_lr) * (1 + r_o) * (1 + h_s) / (1 - dn1) - 1,
               1 - max(0.0, 1 - r_lr) * (1 - r_o) * max(0.0, 1 - h_s) / (1 + up1))
    return r_c2, r_s


def _adam_chain(opt: OptimizerConfig, theta: F64, g: F64, m_: F64, v_: F64, vmax_: F64, k: Callable[[float], float],
                u2: float, eta: float, b1: float, b2: float, w1: float, w2: float, wd: float, eps: float, lr: float,
                c2: float, s: float, r_c2: tuple[float, float], r_s: tuple[float, float], r_eps: float, sub: Mapping[str, float],
                tiny: float) -> dict[str, F64]:
    """The Adam chain of :func:`adam_bounds` with the kernel ``k`` (rigorous or expected); ``sub``: the subnormal parts of
    the holdings of ``wd``, ``b1``, ``w1``, ``b2``, ``w2`` (:func:`holding` without its rounding); ``tiny``: the dtype's
    smallest normal number; ``r_c2``, ``r_s``: the relative errors ``(up, dn)`` of ``c2`` and ``s`` as held, above their
    exact values and below them (:func:`float32_bias_corrections`)."""
    zero = np.zeros_like(theta)
    d, E_d = g, zero
    th1, E_1 = theta, zero
    if wd != 0:
        if opt.name == "adamw":
            th1 = theta * (1 - lr * wd)
            E_1 = k(4) * np.abs(theta) * (1 + lr * wd) + eta
        else:
            d = g + wd * theta
            E_d = k(3) * (np.abs(g) + wd * np.abs(theta)) + sub["wd"] * (1 + k(3)) * wd * np.abs(theta) + eta
    m = b1 * m_ + w1 * d
    am, ad = np.abs(m_), np.abs(d) + E_d
    A_m = np.maximum.reduce([(1 + w1) * am + w1 * ad, (2 - w1) * ad + b1 * am, b1 * am + w1 * ad])
    # (a subnormal weight errs absolutely: by up to eta times what it multiplies, ``d - m_`` in lerp's forms)
    E_m = k(6) * A_m + w1 * (1 + k(6)) * E_d + (sub["w1"] * w1 + sub["b1"] * b1) * (1 + k(6)) * (ad + am) + 3 * eta
    v = b2 * v_ + w2 * d * d
    E_v = (k(6) * (b2 * v_ + w2 * d * d) + w2 * (1 + k(6)) * (2 * np.abs(d) * E_d + E_d * E_d)
           + (sub["b2"] * b2 * v_ + sub["w2"] * w2 * ad * ad) * (1 + k(6)) + 3 * eta)
    out = {"exp_avg": E_m, "exp_avg_sq": E_v}
    V = v
    if opt["amsgrad"]:
        V = np.maximum(vmax_, v)
        out["max_exp_avg_sq"] = E_v
    S = np.sqrt(V)
    dS = np.minimum(np.where(S > 0, E_v / np.where(S > 0, S, 1.0), np.inf), np.sqrt(E_v))
    E_S = dS + k(1) * (S + dS) + eta
    # each side of the exact value on its own from here (helper-178): c2^ = c2 (1 + delta), -c2_dn <= delta <= c2_up.
    # q^ above q (c2^ below c2) by at most (E_S / c2 + q c2_dn) / (1 - c2_dn), below it (c2^ above c2) by at most
    # E_S / (c2 (1 - c2_dn)) + q c2_up / (1 + c2_up) <= (E_S / c2 + q c2_up) / (1 - c2_dn); then one rounding
    c2_up, c2_dn = r_c2
    s_up, s_dn = r_s
    q = S / c2
    E_q_up = (E_S / c2 + q * c2_dn) / (1 - c2_dn) * (1 + k(1)) + k(1) * q + eta
    E_q_dn = (E_S / c2 + q * c2_up) / (1 - c2_dn) * (1 + k(1)) + k(1) * q + eta
    den = q + eps
    # (the sum's rounding is at most k1 (q^ + eps^) <= k1 (den + E_q_up + r_eps eps) on either side)
    E_den_up = E_q_up + r_eps * eps + k(1) * (den + E_q_up + r_eps * eps) + eta
    E_den_dn = E_q_dn + r_eps * eps + k(1) * (den + E_q_up + r_eps * eps) + eta
    r = m / den
    gap = den - E_den_dn  # (every evaluation's den^ is at least this)
    # r^ - r = (m^ - m) / den^ + r (den - den^) / den^: beyond r (|r^| > |r| with m's sign) by at most
    # (E_m + |r| E_den_dn) / gap, short of it by at most max(E_m / gap, (E_m + |r| E_den_up) / den); then one rounding
    E_r = {name: np.where(gap > 0, (E_m + np.abs(r) * e) / np.where(gap > 0, gap, 1.0), np.inf) * (1 + k(1))
           + k(1) * np.abs(r) + eta for name, e in (("more", E_den_dn), ("less", E_den_up))}
    # the eps cap, per side of r: beyond it (|r^| > |r|, m's sign) and short of it (|r^| < |r|, or the other sign)
    # m's sign is certain where |m| > E_m, or where its terms have one sign: d = g (no L2 decay) or g and theta of one
    # sign (wd >= 0), or |d| > E_d; and m_ of d's sign or 0. Rounding is monotonic, so every form of m (the two products,
    # both lerp forms: |fl(w fl(d - m_))| <= |m_| where d lies between 0 and m_, FMA) has m's sign or is 0 (helper-177)
    d_sure = (E_d == 0) | (g * theta >= 0) | (np.abs(d) > E_d)
    sure = (np.abs(m) > E_m) | (d_sure & (m_ * d >= 0))
    more, less = _eps_cap(m, E_m, eps, r_eps, k(1), eta, r, den + E_den_up, sure)
    p = s * r
    # torch.optim's addcdiv forms (s m) / den: the underflow of a subnormal s m is divided by den (module docstring)
    low = np.maximum(gap, eps * (1 - r_eps) if r_eps < 1 else 0.0)
    sm_small = s * (1 - s_dn) * np.maximum(np.abs(m) - E_m, 0.0) < tiny
    # min(eta, s m) / low, each term divided by low first: s |m| of a float64 m near the subnormals underflows in the
    # float64 this bound is computed in (1e-9 x 9.8e-321 is 0), which made e_sm 0 where fl(s m) = 0 removed the whole
    # update (torch.optim's float64 Adam, lr 1e-10, eps 1e-8: 99.5 x the bound, helper-179); (1 + 4 u64): the bound's
    # own roundings of the quotient and the product
    mag = np.abs(m) + E_m
    low_ = np.where(low > 0, low, 1.0)
    with np.errstate(over="ignore"):
        e_sm = np.minimum(eta / low_, s * (1 + s_up) * (mag / low_)) * (1 + 4 * U64)
    e_sm = np.where(sm_small & (mag > 0), np.where(low > 0, e_sm, np.inf), 0.0)
    out["den_floor"] = low
    new = th1 - p
    E_p = {}
    # p^ - p = s^ (r^ - r) + (s^ - s) r: beyond p by at most s (1 + s_up) E_r_more + |p| s_up, short of it by at most
    # s (1 + s_up) E_r_less + |p| s_dn (|s^| <= s (1 + s_up) either way); e_sm either way
    for name, cap, r_side in (("more", more, s_up), ("less", less, s_dn)):  # (each side's own bound)
        sE = s * np.minimum(E_r[name], cap) * (1 + s_up) + np.abs(p) * r_side + e_sm
        E_p[name] = sE + k(1) * (np.abs(p) + sE) + eta
    # short of p, where m's sign is certain: |p^| >= P_low in each order (module docstring), so |p| - P_low bounds it
    # (e_sm above is the most s m's underflow adds; it takes from p^ no more than eta / den_hi)
    s_hi, den_hi = abs(s) * (1 + s_up), den + E_den_up
    p_low = (abs(s) * max(1 - s_dn, 0.0) * np.maximum(np.abs(m) - E_m, 0.0) / den_hi * (1 - k(4))
             - eta * (1 + s_hi) * (1 + 1 / den_hi))
    # (|p| here is the bound's own float64 s m / den: in float64's subnormals its m is rounded to their grid, by up to
    # 2**-1075 in each of m's (at most five) operations, so the exact |p| may exceed it by 8 x 2**-1075 s / den floor (divided first)
    # (an update removed by fl(s m) = 0 was 1.000076 x the bound: W = 1.3e-319, eps 1e-30, lr 1e-10, helper-179);
    # (1 + 16 u64): its relative roundings)
    with np.errstate(over="ignore", divide="ignore"):
        sub64 = np.abs(m) + E_m < 2.0**-1021  # (m's operations may round to float64's subnormal grid only there)
        p_up = np.abs(p) * (1 + 16 * U64) + np.where(sub64, np.where(low > 0, 4 * 2.0**-1074 / low_ * s_hi, np.inf), 0.0)
    E_p["less"] = np.fmin(E_p["less"], np.where(sure, p_up - np.fmax(p_low, 0.0), np.inf))
    # (the subtraction's rounding is at most k1 |th1^ - p^| + eta; where p^ errs to the other side than W'^ - W' lies,
    # it takes back more than its rounding adds: each side's own E_p)
    side = {name: E_1 + e + k(1) * (np.abs(new) + E_1 + e) + eta for name, e in E_p.items()}
    # W' = th1 - p: a computed p^ short of p (or of the other sign) leaves W'^ on p's side of the exact W' (above it
    # where p > 0), one beyond p on the other side
    up = np.sign(p) > 0
    flat = np.sign(p) == 0
    out["theta"] = np.maximum(side["more"], side["less"])
    out["theta" + ABOVE] = np.where(flat, out["theta"], np.where(up, side["less"], side["more"]))
    out["theta" + BELOW] = np.where(flat, out["theta"], np.where(up, side["more"], side["less"]))
    return out


def _eps_cap(m: F64, E_m: F64, eps: float, r_eps: float, k1: float, eta: float, r: F64,
             den_hi: F64 | float = math.inf, sure: npt.NDArray[np.bool_] | None = None) -> tuple[F64, F64]:
    """Bounds on ``|r^ - r|`` for Adam's ``r = m / (q + eps)`` (``r``: its value, from the exact magnitudes) that hold
    whatever the error of ``q``, as ``(more, less)``: where ``r^`` lies beyond ``r`` (``|r^| > |r|``, of ``m``'s sign) and
    short of it (``|r^| < |r|``, or of the other sign). Every evaluation forms ``q >= 0`` and adds ``eps`` as held, so its
    denominator is at least ``eps (1 - r_eps)`` (rounding is monotonic) and ``|r^| <= R = (|m| + E_m) / (eps (1 - r_eps))
    (1 + k1) + eta``, while ``|r| <= |m| / eps <= R``. Where the computed moment has the sign of ``m`` or is 0 (``sure``:
    ``|m| > E_m``, or the terms of ``m`` have one sign, :func:`_adam_chain`), so has ``r^`` (a denominator >= 0, rounding
    keeps the sign), and its denominator is at most
    ``den_hi = den + E_den``: ``L <= |r^| <= R`` with ``L = max(0, (|m| - E_m) / den_hi (1 - k1) - eta)`` (one rounding,
    Higham 2002 sec. 2.1, underflow as an absolute error), so ``more = R - |r|`` and ``less = |r| - L``. Elsewhere both
    are ``R + |m| / eps``. (The sum ``R + |r|`` on both sides let a float16 Adam update of the wrong sign agree where the
    second moment is below float16's subnormals and eps = 1e-3, helper-137; the symmetric ``max(R - |r|, |r|)`` that
    replaced it still let a skipped update (``W`` kept) and, where ``R >= 3 |r|`` (eps = 1e-6, a gradient of 1e-3), the
    update of the wrong sign agree: helper-141.) ``more`` (and ``less`` where the sign is not sure) is infinite where
    ``eps`` as held may be 0 (``r_eps >= 1``: flushed or below the dtype's resolution): a denominator of 0 or nearly so
    takes ``r^`` anywhere beyond ``r``, but never past 0 where the sign is sure, so ``less`` stays ``|r| - L``. (It was
    infinite on both sides there, and a float16 Adam update of the wrong sign, or one that moved every weight by +1000,
    agreed with betas near 1 and eps = 1e-11: helper-177.) (Without the cap, float16 second
    moments below the subnormals, whose absolute slack ``3 eta`` swamps ``eps``, left the chain's bound vacuous for every
    gradient below about 0.01, and a step that moved every weight by +100 agreed: helper-69.)"""
    am = np.abs(m)
    ar = np.abs(r)
    if sure is None:
        sure = am > E_m
    # (fmax: where the chain's denominator bound is NaN -- 1 - beta2^t not resolved in float32, r_c2 >= 1 -- L is 0: the
    # sign argument does not need it; helper-177's search found float16, betas (0.999999, 0.9999999) there)
    low = np.fmax((am - E_m) / den_hi * (1 - k1) - eta, 0.0)
    short = np.maximum(ar - low, 0.0)
    if not r_eps < 1 or eps <= 0:
        gone = np.full(np.shape(m), np.inf)
        return gone, np.where(sure, short, gone)
    top = (am + E_m) / (eps * (1 - r_eps)) * (1 + k1) + eta
    wide = top + am / eps
    return np.where(sure, np.maximum(top - ar, 0.0), wide), np.where(sure, short, wide)


def sided_bound(bounds: Mapping[str, F64], q: str, computed: F64, exact_hi: F64, exact_lo: F64) -> F64:
    """The bound of quantity ``q`` (a key of :func:`update_bounds`' dictionaries) on the side of the exact value each
    computed element lies: Adam's parameter has one above (``q + ABOVE``) and one below (``q + BELOW``) where the eps
    cap is one-sided (:func:`_eps_cap`: a correct update has the first moment's sign and lies in ``[L, R]``); each is at
    most ``bounds[q]``, their maximum. Elsewhere ``bounds[q]``. A side is taken even where the other is infinite (eps
    held as 0: a correct update may overshoot without limit, but never comes back past ``theta1``; helper-177: the
    symmetric, infinite bound there let an update of the wrong sign agree). NaN elements take the lower side's where
    both are finite (the verdict of a NaN does not depend on its bound's size where that is finite), else ``bounds[q]``
    (infinite: a vacuous bound is what allows a NaN there)."""
    sym = np.asarray(bounds[q], dtype=np.float64)
    above, below = bounds.get(q + ABOVE), bounds.get(q + BELOW)
    if above is None or below is None:
        return sym
    c = np.asarray(computed, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        over = (c - exact_hi) - exact_lo > 0
    pick = np.where(over, above, below)
    return np.where(np.isfinite(above) & np.isfinite(below) | ~np.isnan(c), pick, sym)


def update_bounds(opt: OptimizerConfig, params: Mapping[str, F64], grads: Mapping[str, F64],
                  state: Mapping[str, Mapping[str, F64]], t: int, lr: float, fmt: FloatFormat,
                  flush_to_zero: bool = False) -> tuple[dict[str, F64], dict[str, F64]]:
    """:func:`sgd_bounds` or :func:`adam_bounds`, by ``opt.name``."""
    fn = sgd_bounds if opt.name == "sgd" else adam_bounds
    return fn(opt, params, grads, state, t, lr, fmt, flush_to_zero)


#: An intermediate within this factor of the dtype's largest finite value may round up past it (overflow).
OVERFLOW_MARGIN = 1 + 2.0**-6

Mask = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Outcomes:
    """Per element of one parameter, the values besides the update's exact one (and its bounds) that a correct
    evaluation of the rule may give (:func:`intermediate_overflow`, :func:`held_not_finite`).

    Attributes:
        param_pos, param_neg, param_nan: the parameter may be ``+inf``; ``-inf``; NaN.
        param_kept: the parameter may be left where it was, or only decayed (AdamW's ``theta (1 - lr lambda)``): an
            Adam step whose second moment is ``+inf`` divides by it (``m / inf = 0``). Graded against
            :func:`kept_parameter` there.
        param_no_exact: the update's exact value is no correct result (the rule applied to a state that is not
            finite): there only the other outcomes are.
        param_impossible: no finite value is correct (only what ``param_pos``, ``param_neg`` and ``param_nan`` allow).
        state_pos, state_neg, state_nan, state_impossible: the same per state key.
        state_kept: per state key, the state may stay at the value the step held (fused amsgrad's maximum where the new
            second moment is NaN: IEEE 754's maximumNumber, ``max(held, NaN) = held``); there only it and the other
            outcomes are, not the exact value.
    """

    param_pos: Mask
    param_neg: Mask
    param_nan: Mask
    param_kept: Mask
    param_no_exact: Mask
    param_impossible: Mask
    state_pos: dict[str, Mask]
    state_neg: dict[str, Mask]
    state_nan: dict[str, Mask]
    state_impossible: dict[str, Mask]
    state_kept: dict[str, Mask]

    @classmethod
    def alike(cls, keys: Iterable[str], *, param_pos: Mask, param_neg: Mask, param_nan: Mask, param_kept: Mask,
              param_no_exact: Mask, param_impossible: Mask, state_pos: Mask, state_neg: Mask, state_nan: Mask,
              state_impossible: Mask, state_kept: Mask) -> Outcomes:
        """The outcomes of a rule whose every state key shares one mask of each kind (SGD's momentum buffer)."""
        keys = list(keys)
        return cls(param_pos=param_pos, param_neg=param_neg, param_nan=param_nan, param_kept=param_kept,
                   param_no_exact=param_no_exact, param_impossible=param_impossible,
                   state_pos={k: state_pos for k in keys}, state_neg={k: state_neg for k in keys},
                   state_nan={k: state_nan for k in keys}, state_impossible={k: state_impossible for k in keys},
                   state_kept={k: state_kept for k in keys})


def _mark(pos: Mask, neg: Mask, mask: Mask, sign: npt.ArrayLike) -> None:
    """Add :func:`_signs` of ``mask`` and ``sign`` to ``pos`` and ``neg``, in place."""
    p, n = _signs(mask, sign)
    pos |= p
    neg |= n


def _signs(mask: Mask, sign: npt.ArrayLike) -> tuple[Mask, Mask]:
    """``(+inf allowed, -inf allowed)`` where ``mask``: the infinity of ``sign``'s sign (both where it is 0 or NaN)."""
    sg = np.broadcast_to(np.asarray(sign, dtype=np.float64), mask.shape)
    return mask & ~(sg < 0), mask & ~(sg > 0)


def intermediate_overflow(opt: OptimizerConfig, params: Mapping[str, F64], grads: Mapping[str, F64],
                          state: Mapping[str, Mapping[str, F64]], new_state: Mapping[str, F64], t: int, lr: float,
                          fmt: FloatFormat, returned: Mapping[str, F64] | None = None,
                          flush_to_zero: bool = False, bounds: Mapping[str, F64] | None = None) -> dict[str, Outcomes]:
    """Per parameter, the elements where an intermediate of a correct evaluation of the rule may overflow ``fmt``
    although the exact new values do not, and what a correct step may give there besides them (:class:`Outcomes`;
    helper-61: Nesterov's ``d + momentum buf`` of 76,000 in float16 gave torch's correct W = -inf; Adam's
    ``exp_avg_sq`` beyond float16 left W at 2.0 where the exact one is 1.99).

    The intermediates, by magnitude in float64 from the held values and the exact new state ``new_state``
    (quantity name -> its value's float64, e.g. ``momentum_buffer_W``): the gradient with weight decay ``d``; SGD's
    ``momentum buf``, new buffer, Nesterov's ``d + momentum buf`` and ``lr d``; Adam's moments, ``beta2 v``,
    ``(1 - beta2) d`` and ``lr / (1 - beta1^t)`` times the new moment at step ``t`` (torch's ``addcdiv`` forms it: W = inf at
    lr = 1e18, helper-64). Each counts where it reaches ``max_finite / OVERFLOW_MARGIN``. ``d d`` counts only where
    the step's own ``exp_avg_sq`` (``returned``, by quantity name) is inf or NaN: an order that squares first
    overflows it (``numpy-optim-adam``'s float32 of 1e38-sized gradients, helper-63), the others do not, and
    counting it everywhere left W ungraded at every float16 gradient above 254 (helper-64).

    What each may give: SGD, the parameter and the buffer ``+-inf`` or NaN. Adam: where ``d``, the first moment or
    lerp's ``d - m_`` may overflow, the parameter and ``exp_avg`` ``+-inf`` or NaN (``m / den`` infinite); where the
    second moment may, ``exp_avg_sq`` (and ``max_exp_avg_sq``) ``inf``, and the parameter left where it was (or
    decayed); where the step size, alone or times the moment, or AdamW's ``lr lambda`` or decayed
    ``theta (1 - lr lambda)`` may, the parameter ``+-inf`` or NaN; so too where the quotient ``m / den`` may, alone, over
    ``1 - beta1^t`` (the Adam paper's and optax's ``m_hat / (sqrt(v_hat) + eps)``) or times the step size, bounded with
    ``bounds`` (the rigorous dictionary of :func:`update_bounds`: the first moment's bound and the least denominator,
    ``DEN_FLOOR``; without it, the exact denominator). Nothing else: the parameter was ungraded there,
    and a step that fell back to plain SGD where ``g g`` overflowed float16 (W = -7 against an exact 0.99) agreed
    (helper-69). (:func:`harness.optim.grade.grade_update` keeps an infinity to the exact value's sign where that
    value is surely beyond the range.)"""
    big = fmt.max_finite / OVERFLOW_MARGIN
    wd = float(opt["weight_decay"])
    keys = opt.state_keys()
    out: dict[str, Outcomes] = {}

    def vanish(h: float) -> bool:  # a hyper-parameter a correct step may hold as 0 (:func:`may_vanish`): 0 inf is NaN
        return may_vanish(h, fmt, flush_to_zero)

    def hits(a: npt.ArrayLike, shape: tuple[int, ...]) -> Mask:
        return ~(np.broadcast_to(np.abs(np.asarray(a, dtype=np.float64)), shape) < big)  # (NaN: counted)

    def signed(a: npt.ArrayLike, shape: tuple[int, ...]) -> F64:
        return np.broadcast_to(np.asarray(a, dtype=np.float64), shape)

    with np.errstate(over="ignore", invalid="ignore"):
        for p in params:
            theta = np.asarray(params[p], dtype=np.float64)
            shape = theta.shape
            g = np.reshape(np.asarray(grads[p], dtype=np.float64), shape)
            d = -g if opt["maximize"] else g  # signed, as the rule forms it (maximize negates the gradient first)
            if wd != 0 and opt.name != "adamw":
                d = d + wd * theta
            prev = state.get(p, {})
            none = np.zeros(shape, dtype=bool)
            # each overflowing intermediate X gives the parameter -sign(X) inf (W' = theta - lr X, lr > 0), and where
            # two of opposite signs may overflow, inf - inf: NaN
            w_pos, w_neg, w_nan = none.copy(), none.copy(), none.copy()
            s_pos, s_neg, s_nan = none.copy(), none.copy(), none.copy()

            # the weight decay term wd theta alone may overflow where d = g + wd theta does not (torch's
            # grad.add(param, alpha=wd) in float16: W = -inf where the exact W is 35,998, helper-72): d takes its infinity
            wd_theta = wd * theta if (wd != 0 and opt.name != "adamw") else np.zeros(shape)
            h_wd = hits(wd_theta, shape)
            if opt.name == "sgd":
                mu, damp = float(opt["momentum"]), float(opt["dampening"])
                h_d = hits(d, shape)
                _mark(w_pos, w_neg, h_d, -np.sign(signed(d, shape)) * np.sign(lr))
                _mark(w_pos, w_neg, h_wd, -np.sign(wd_theta) * np.sign(lr))
                eff = d
                if mu != 0:
                    buf = signed(new_state[f"momentum_buffer_{p}"], shape)
                    buf_prev = signed(prev.get("momentum_buffer", 0.0), shape)
                    h_buf, h_prev = hits(buf, shape), hits(mu * buf_prev, shape)
                    _mark(w_pos, w_neg, h_buf, -np.sign(signed(buf, shape)) * np.sign(lr))
                    _mark(w_pos, w_neg, h_prev, -np.sign(signed(buf_prev, shape)) * np.sign(lr))
                    _mark(s_pos, s_neg, h_d, d)
                    _mark(s_pos, s_neg, h_wd, wd_theta)
                    _mark(s_pos, s_neg, h_buf, buf)
                    _mark(s_pos, s_neg, h_prev, buf_prev)
                    # (1 - dampening) d = 0 inf (dampening 1, or 1 - dampening held as 0), from step 2: the first step's buffer
                    # is d itself (torch.optim's rule: a NaN buffer and W at step 1 were accepted, helper-141)
                    if vanish(1 - damp) and t > 1 and "momentum_buffer" in prev:
                        s_nan |= h_d | h_wd
                        w_nan |= h_d | h_wd
                    if opt["nesterov"]:  # mu buf alone (mu > 1) may overflow where d + mu buf does not
                        _mark(w_pos, w_neg, hits(mu * buf, shape), -np.sign(buf) * np.sign(lr))
                        if vanish(mu):  # mu held as 0 times a buffer that overflows: NaN
                            w_nan |= h_buf | h_prev | h_d | h_wd
                    eff = d + mu * buf if opt["nesterov"] else buf
                h_eff = hits(eff, shape) | hits(abs(lr) * eff, shape)
                _mark(w_pos, w_neg, h_eff, -np.sign(signed(eff, shape)) * np.sign(lr))
                # (lr held as 0 times an infinite update: NaN; torch's float16 add_(d, alpha=-lr) holds lr = 1e-8 as 0,
                # and its NaN where wd theta overflowed was disagree, helper-137)
                w_nan |= (w_pos & w_neg) | ((w_pos | w_neg) & vanish(lr))
                s_nan |= s_pos & s_neg
                out[p] = Outcomes.alike(keys, param_pos=w_pos, param_neg=w_neg, param_nan=w_nan, param_kept=none,
                                        param_no_exact=none, param_impossible=none, state_pos=s_pos, state_neg=s_neg,
                                        state_nan=s_nan, state_impossible=none, state_kept=none)
                continue
            b1, b2 = (float(x) for x in opt["betas"])
            step_size = abs(lr) / (1 - b1**t)  # (step t, from 1: 1 - beta1^t > 0)
            m_prev = signed(prev.get("exp_avg", 0.0), shape)
            m_new = signed(new_state[f"exp_avg_{p}"], shape)
            # the first moment: d, the moment itself, and lerp's d - m_ (torch's exp_avg.lerp_(grad, 1 - beta1): -inf
            # where the exact moment is -3.2e36 and d - m_ -3.5e38, float32, helper-70)
            # (lerp's d - m_ overflows to either sign's moment: m_ + w (d - m_) for w < 1/2, d - (1 - w)(d - m_) otherwise,
            # torch's threshold: +inf where the exact moment is -5e37 with beta1 = 0.3, helper-72)
            h_d, h_m, h_lerp = hits(d, shape), hits(m_new, shape), hits(np.abs(d) + np.abs(m_prev), shape)
            _mark(s_pos, s_neg, h_d, d)
            _mark(s_pos, s_neg, h_wd, wd_theta)
            _mark(s_pos, s_neg, h_m, m_new)
            _mark(s_pos, s_neg, h_lerp, 0.0)
            m_pos, m_neg = s_pos.copy(), s_neg.copy()
            m_hit = h_d | h_wd | h_m | h_lerp
            v_hit = (h_d | h_wd | hits(new_state[f"exp_avg_sq_{p}"], shape)
                     | hits(b2 * np.abs(signed(prev.get("exp_avg_sq", 0.0), shape)), shape) | hits((1 - b2) * np.abs(d), shape))
            v_out = None if returned is None else returned.get(f"exp_avg_sq_{p}")
            if v_out is not None:
                squared_first = ~np.isfinite(np.reshape(np.asarray(v_out, dtype=np.float64), shape))
                v_hit |= squared_first & hits(d * d, shape)
            # the parameter: -sign(m) inf through the moment, the step size alone (lr / (1 - beta1^t) beyond float32
            # while the exact W is finite: W = inf from the fused form, helper-70) or times the moment, and AdamW's
            # decayed theta (1 - lr lambda), of its own sign (stored in float16 by torch's for-loop: -inf where the exact
            # W is -5975, helper-70; and -inf where the exact W is +79,215, the update of the other sign, helper-71)
            _mark(w_pos, w_neg, h_d, -np.sign(signed(d, shape)) * np.sign(lr))
            _mark(w_pos, w_neg, h_wd, -np.sign(wd_theta) * np.sign(lr))
            _mark(w_pos, w_neg, h_m | hits(step_size, shape) | hits(step_size * m_new, shape),
                  -np.sign(signed(m_new, shape)) * np.sign(lr))
            _mark(w_pos, w_neg, h_lerp, 0.0)
            # the denominator sqrt(V) / sqrt(1 - beta2^t), stored in float16 by torch's for-loop and foreach: inf, so
            # m / inf = 0 and W kept where the exact W is 0.836 (helper-72)
            V = signed(new_state[f"max_exp_avg_sq_{p}" if opt["amsgrad"] else f"exp_avg_sq_{p}"], shape)
            # (and the bias-corrected moments of the Adam paper's and optax's order, v / (1 - beta2^t) before its square
            # root, m / (1 - beta1^t): float16 Adam at step 1 with a gradient of 300 has v_hat = 90,000, inf, and W kept
            # where the exact W is 0.99, disagree at 9.0 before, helper-137)
            kept = v_hit | hits(np.sqrt(np.abs(V)) / math.sqrt(1 - b2**t), shape) | hits(np.abs(V) / (1 - b2**t), shape)
            h_mhat = hits(np.abs(m_new) / (1 - b1**t), shape)
            _mark(w_pos, w_neg, h_mhat, -np.sign(m_new) * np.sign(lr))
            # the quotient m / den before the step size (optax's order, a step written in the dtype: s (m / den)): it may
            # overflow where s m / den does not (float16, m = -2116, den = 4.9e-4, lr = 1e-5: W = inf where the exact W is
            # 44.6, helper-137); and with the second moment's weight 1 - beta2 held as 0, 0 inf is NaN
            # A correct evaluation's denominator may be far below the exact one where the second moment is near the
            # subnormals (rounded to 0: eps alone): the quotient is bounded with the least denominator of the bounds'
            # chain (:func:`adam_bounds`, ``den_floor``) and the first moment's own error. (With the exact denominator,
            # float16 m = 65.7, v = 1e-9 rounded to 0, eps = 1e-3 at step 2: m / eps = inf where m / den = 38,500, W =
            # -inf disagree; and the Adam paper's and optax's m_hat / (sqrt(v_hat) + eps), the quotient over 1 - beta1^t,
            # not counted: W = -inf disagree where the exact W is -1.39, helper-141)
            if bounds is not None and p + DEN_FLOOR in bounds:
                e_m = np.reshape(np.asarray(bounds[f"exp_avg_{p}"], dtype=np.float64), shape)
                with np.errstate(divide="ignore"):
                    quot = (np.abs(m_new) + e_m) / np.reshape(bounds[p + DEN_FLOOR], shape)
            else:
                quot = np.abs(m_new) / (np.sqrt(np.abs(V)) / math.sqrt(1 - b2**t) + float(opt["eps"]))
            h_quot = hits(quot, shape) | hits(quot / (1 - b1**t), shape) | hits(step_size * quot, shape)
            _mark(w_pos, w_neg, h_quot, -np.sign(m_new) * np.sign(lr))
            # (1 - beta2) d^2 with 1 - beta2 held as 0 (below the dtype's subnormals, in a step written in the dtype) and d
            # or d d beyond the range: 0 inf is NaN in the second moment, and then in W (float16, beta2 = 1 - 2**-40,
            # d = 1147: helper-137)
            v_nan = (h_d | h_wd | hits(d * d, shape)) if may_vanish(1 - b2, fmt, flush_to_zero) else none
            # (the quotient's overflow gives the parameter -sign(m) inf, NaN only as 0 inf with the step size held as 0: lr
            # as held, s = lr / (1 - beta1^t) >= lr; NaN was accepted wherever the quotient may overflow, helper-141)
            # (so too m_hat's: inf / den is inf, NaN only as inf / inf where v_hat or sqrt(V) / c2 may overflow as well, or
            # as 0 inf: optax's float16 NaN was accepted where only m_hat = 94,737 overflows at lr = 1e-5, helper-141)
            q_nan = h_quot if vanish(lr) else none
            mhat_nan = h_mhat if vanish(lr) else h_mhat & kept
            to_inf = m_hit | hits(step_size, shape) | hits(step_size * np.abs(m_new), shape) | q_nan | v_nan | mhat_nan
            if opt.name == "adamw" and wd != 0:
                h_decay = hits(lr * wd, shape) | hits(np.abs(theta) * abs(1 - lr * wd), shape)
                pos, neg = _signs(h_decay, theta * (1 - lr * wd) if abs(lr * wd) < math.inf else -theta)
                w_pos |= pos
                w_neg |= neg
                to_inf |= h_decay
            state_pos = {"exp_avg": m_pos, "exp_avg_sq": v_hit, "max_exp_avg_sq": v_hit}
            state_neg = {"exp_avg": m_neg, "exp_avg_sq": none, "max_exp_avg_sq": none}  # (v >= 0)
            state_nan = {"exp_avg": m_hit, "exp_avg_sq": v_nan, "max_exp_avg_sq": v_nan}  # (lerp: inf - inf)
            out[p] = Outcomes(param_pos=w_pos, param_neg=w_neg, param_nan=to_inf, param_kept=kept, param_no_exact=none,
                              param_impossible=none, state_pos={k: state_pos[k] for k in keys},
                              state_neg={k: state_neg[k] for k in keys}, state_nan={k: state_nan[k] for k in keys},
                              state_impossible={k: none for k in keys}, state_kept={k: none for k in keys})
    return out


def held_not_finite(opt: OptimizerConfig, state: Mapping[str, Mapping[str, F64]], grads: Mapping[str, F64],
                    lr: float = 1.0, fmt: FloatFormat | None = None, flush_to_zero: bool = False) -> dict[str, Outcomes]:
    """Per parameter, what a correct step gives where a state it held is ``inf`` or NaN (an earlier step's moment beyond
    the dtype, :func:`intermediate_overflow`): the rule in IEEE arithmetic (:class:`Outcomes`).

    - SGD's buffer: the new buffer and the parameter are not finite.
    - Adam's ``exp_avg`` (``beta1 > 0``): the new one and the parameter are not finite (``m / den`` is infinite or
      NaN). With ``beta1 = 0`` the old one drops out (``0 m``, NaN in IEEE): the exact values, or ``inf`` or NaN.
    - Adam's ``exp_avg_sq`` (``beta2 > 0``), or amsgrad's ``max_exp_avg_sq``, at ``+inf``: the new second moment is
      ``+inf`` (its terms are all ``>= 0``) and the parameter is left where it was, or decayed (``m / inf = 0``):
      nothing else, not the exact update, not NaN (NaN passed there, helper-70); at NaN: NaN. With ``beta2 = 0`` the
      old moment drops out: the exact values, or NaN.
    - Fused amsgrad's maximum may stay at the held one where the new second moment is NaN (``state_kept``).

    ``grads``: the step's gradients as it returned them (their shapes are the parameters'; NaN ones included). ``fmt``:
    the dtype, where a hyper-parameter may be held as 0 (:func:`may_vanish`: SGD's ``lr`` or ``momentum`` times the held
    infinity is NaN); None: only a hyper-parameter that is 0.

    (These elements were not graded at all: a step that wrote -1234 into ``exp_avg`` and moved W by +3 agreed
    there, helper-69.)"""
    out: dict[str, Outcomes] = {}
    keys = opt.state_keys()

    def vanish(h: float) -> bool:
        return h == 0 if fmt is None else may_vanish(h, fmt, flush_to_zero)

    for p, g in grads.items():
        shape = np.shape(g)
        prev = state.get(p, {})
        z = np.zeros(shape, dtype=bool)

        def held(k: str, shape: tuple[int, ...] = shape, prev: Mapping[str, F64] = prev) -> F64:
            a = prev.get(k)
            return np.zeros(shape) if a is None else np.reshape(np.asarray(a, dtype=np.float64), shape)

        def bad(k: str) -> Mask:
            return ~np.isfinite(held(k))

        if opt.name == "sgd":
            bb = bad("momentum_buffer")
            buf = held("momentum_buffer")
            b_pos, b_neg = bb & (buf == np.inf), bb & (buf == -np.inf)
            b_nan = bb & ~b_pos & ~b_neg
            # the new buffer mu buf_ + (1 - dampening) d keeps buf_'s infinity; W = theta - lr buf: its opposite
            # (a flipped infinity, or NaN, passed: helper-71); NaN from NaN, and from 0 inf where lr (or the momentum) is
            # held as 0: torch's float16 add_(buf, alpha=-lr) holds lr = 1e-8 as 0, and its NaN W was disagree
            # (helper-141)
            s_nan = b_nan | (bb if vanish(float(opt["momentum"])) else z)
            w_nan = s_nan | (bb if vanish(lr) else z)
            out[p] = Outcomes.alike(keys, param_pos=b_neg, param_neg=b_pos, param_nan=w_nan, param_kept=z, param_no_exact=z,
                                    param_impossible=bb, state_pos=b_pos, state_neg=b_neg, state_nan=s_nan,
                                    state_impossible=bb, state_kept=z)
            continue
        b1, b2 = (float(x) for x in opt["betas"])
        bm, bv = bad("exp_avg"), bad("exp_avg_sq")
        m_held = held("exp_avg")
        bv_inf = bv & (held("exp_avg_sq") == np.inf)
        bx = bad("max_exp_avg_sq") if "max_exp_avg_sq" in keys else z
        bx_inf = bx & (held("max_exp_avg_sq") == np.inf)
        m_gone = bm if b1 != 0 else z  # the new first moment is not finite: b1 m_ + w1 d keeps m_'s infinity (lerp: NaN)
        m_pos, m_neg = m_gone & (m_held == np.inf), m_gone & (m_held == -np.inf)
        m_drop = bm & ~m_gone  # beta1 = 0: the old moment drops out (the exact values), or 0 inf is NaN
        v_inf = bv_inf if b2 != 0 else z  # the new second moment is +inf: b2 inf + w2 d^2 (all terms >= 0)
        v_nan = (bv & ~bv_inf) if b2 != 0 else z  # a NaN (or -inf) second moment: NaN
        v_drop = bv & ~v_inf & ~v_nan  # beta2 = 0: the exact values, or NaN
        den_nan = (v_nan | (bx & ~bx_inf)) & ~m_gone  # the denominator's moment is NaN: W is NaN
        # fused amsgrad's max(held, NaN) keeps its held maximum where the new second moment is NaN (a NaN gradient, or a
        # NaN held one): torch kept 0.0 where the for-loop gave NaN (helper-71), 4.0 where v was NaN (helper-72)
        max_kept = (np.isnan(np.asarray(g, dtype=np.float64)) | np.isnan(held("exp_avg_sq"))) & ~bx
        kept = (v_inf | bx_inf) & ~den_nan & ~m_gone  # ... +inf: m / inf = 0, W kept (or decayed), nothing else
        state_imp = {"exp_avg": m_gone, "exp_avg_sq": v_inf | v_nan, "max_exp_avg_sq": v_inf | v_nan | bx}
        v_pos = {"exp_avg_sq": v_inf, "max_exp_avg_sq": (v_inf | bx_inf) & ~v_nan & ~(bx & ~bx_inf)}
        state_nan = {"exp_avg": m_gone | m_drop, "exp_avg_sq": v_nan | v_drop,
                     "max_exp_avg_sq": v_nan | (bx & ~bx_inf) | v_drop}
        state_pos = {"exp_avg": m_pos, **v_pos}  # (beta1 = 0: 0 inf is NaN, never an infinity: helper-72)
        state_neg = {"exp_avg": m_neg, "exp_avg_sq": z, "max_exp_avg_sq": z}
        # W = th1 - s m / den: the opposite of m's infinity, or NaN (lerp's moment; an infinite den too)
        out[p] = Outcomes(param_pos=m_neg, param_neg=m_pos, param_nan=m_gone | m_drop | den_nan | v_drop,
                          param_kept=kept, param_no_exact=kept, param_impossible=m_gone | den_nan,
                          state_pos={k: state_pos[k] for k in keys}, state_neg={k: state_neg[k] for k in keys},
                          state_nan={k: state_nan[k] for k in keys}, state_impossible={k: state_imp[k] for k in keys},
                          state_kept={k: max_kept if k == "max_exp_avg_sq" else z for k in keys})
    return out


def kept_parameter(opt: OptimizerConfig, params: Mapping[str, F64], lr: float, fmt: FloatFormat,
                   flush_to_zero: bool = False) -> dict[str, tuple[F64, F64, F64]]:
    """Per parameter, the value an Adam step leaves where its second moment is ``+inf`` (``Outcomes.param_kept``):
    ``theta``, or AdamW's decayed ``theta (1 - lr lambda)``, as ``(value, rigorous, expected)`` float64 arrays: the
    value in float64 and absolute bounds of a correct evaluation's error, ``E_1`` of :func:`adam_bounds` plus the
    float64 product's own error (``2**-51 |theta| (1 + lr lambda)``; 0 where nothing is decayed: the parameter
    itself, exactly)."""
    u2, rig, exp = _kernels(fmt)
    eta = _eta(fmt, flush_to_zero)
    wd = float(opt["weight_decay"])
    out: dict[str, tuple[F64, F64, F64]] = {}
    for p, v in params.items():
        theta = np.asarray(v, dtype=np.float64)
        if opt.name != "adamw" or wd == 0:
            z = np.zeros(theta.shape)
            out[p] = (theta, z, z)
            continue
        f = 1 + abs(lr * wd)
        with np.errstate(over="ignore", invalid="ignore"):  # (own too: |theta| near float64's top times f is inf)
            own = 2.0**-51 * np.abs(theta) * f
            r = (rig(4) * np.abs(theta) * f + eta + own) * _SAFETY
            e = np.minimum((exp(4) * np.abs(theta) * f + eta + own) * _SAFETY, r)
            out[p] = (theta * (1 - lr * wd), r, e)
    return out
