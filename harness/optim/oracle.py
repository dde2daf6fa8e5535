"""The truth of one optimizer update, and of the exact trajectory.

- **SGD family** (momentum, dampening, Nesterov, weight decay, maximize): the update is a polynomial
  in the parameter, the gradient, the state and the hyper-parameters, so it stays rational: evaluated
  exactly in ``Fraction`` (``oracle_method = "exact-rational"``).
- **Adam, AdamW** (amsgrad too): the square roots (``sqrt(V)``, ``sqrt(1 - beta2^t)``) and the
  division are not rational. The rule is evaluated in rigorous ball arithmetic (python-flint ``arb``,
  as :mod:`harness.models.oracle`: midpoint-radius balls at :data:`PRECISION` = 256 bits, every
  operation's ball containing the exact result): an enclosure ``[lo, hi] = [mid - rad, mid + rad]`` of
  the exact value whose relative width is about 2**-250, far below half a ULP of float64 (2**-53). The
  value graded against is the enclosure's midpoint (to that precision, the exact value); the
  correctly rounded value in the dtype is the round-to-nearest of the enclosure, and where ``lo`` and
  ``hi`` round to different values of the dtype (the enclosure straddles a rounding boundary: a tie,
  to 2**-250) the oracle says so (:attr:`UpdateTruth.straddles`) instead of choosing one
  (``oracle_method = "arb-ball-256bit; round-to-nearest from the enclosure"``). A ball that is not
  finite (a division by a ball containing 0: ``eps = 0`` where the second moment is 0, ``0 / 0`` or
  ``m / 0``; no exact value or an infinite one) is graded against 0, as the earlier mpmath oracle's
  ``[-inf, +inf]`` was, and is reported among the straddles (undecided); the square root of a ball
  that reaches below 0 raises ``ValueError``, as mpmath's did.

Inputs are the values *the implementation held* (its own previous parameter and state, its own
gradient of this step: :mod:`harness.optim.grade`), as float64 arrays (exact binary rationals), and
the hyper-parameters as the Python floats it was handed (:func:`harness.optim.rules.exact_hyper_parameters`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
from flint import arb, ctx, fmpq

from ..exact import ScaledInts
from ..floats import FloatFormat
from ..oracle import exact_inputs_from_floats, exact_step
from .config import OptimizerConfig
from .rules import apply_rule, exact_hyper_parameters

F64 = npt.NDArray[np.float64]
_T = TypeVar("_T")
#: Working precision (bits) of the ball arithmetic (Adam, AdamW): of the balls' midpoints.
PRECISION = 256
EXACT_METHOD = "exact-rational"
INTERVAL_METHOD = f"arb-ball-{PRECISION}bit; round-to-nearest from the enclosure"


@dataclass
class UpdateTruth:
    """The truth of one update of both parameters.

    Attributes:
        values: ``W``, ``b`` after the step and each state quantity ``<key>_<param>``
            (``momentum_buffer_W``, ``exp_avg_b``, ...): exact rationals (SGD) or the enclosures'
            midpoints (Adam), as :class:`harness.exact.ScaledInts`.
        method: the ``oracle_method`` of the records.
        straddles: per quantity, the indices of the elements whose enclosure straddles a rounding
            boundary of the dtype (empty for exact values).
    """

    values: dict[str, ScaledInts]
    method: str
    straddles: dict[str, list[tuple[int, ...]]] = field(default_factory=dict)


def _fractions(a: F64) -> npt.NDArray[Any]:
    out = np.empty(a.size, dtype=object)
    out[:] = [Fraction(float(x)) for x in a.ravel()]
    return out.reshape(a.shape)


def _floor_log2(x: Fraction) -> int:
    """``floor(log2(|x|))`` of a nonzero rational, exactly, in integers (``math.log2`` converts to float first, which
    raised OverflowError beyond float64's range, a momentum trajectory past 1.7e308 an error record (helper-63), and
    rounds a value just below ``2**k`` up to it)."""
    n, d = abs(x.numerator), x.denominator
    e = n.bit_length() - d.bit_length()
    return e if (n >= d << e if e >= 0 else n << -e >= d) else e - 1


def round_to_nearest(x: Fraction, fmt: FloatFormat) -> Fraction:
    """``x`` rounded to the nearest value of ``fmt`` (ties to even), subnormals included (range not checked)."""
    if x == 0:
        return Fraction(0)
    e = max(_floor_log2(x), fmt.emin)  # (exact: math.log2 of a float rounded x up to 2**k just below it)
    quantum = Fraction(2) ** (e - fmt.precision + 1)
    q = x / quantum
    if abs(q) >= 2**fmt.precision:  # log2 rounded down past a power of two
        quantum *= 2
        q = x / quantum
    return round(q) * quantum


class _Intervals:
    """The ball arithmetic of the Adam oracle (python-flint ``arb``). Every operation reads python-flint's
    global working precision: build the balls and apply the rule only inside :func:`_at_precision`, which
    sets it to :data:`PRECISION` and restores it (other modules use python-flint)."""

    def of(self, a: F64 | Fraction) -> Any:
        if isinstance(a, Fraction):
            return arb(fmpq(a.numerator, a.denominator))  # rounded to PRECISION, the error in the radius
        out = np.empty(a.size, dtype=object)
        out[:] = [arb(float(x)) for x in a.ravel()]  # exact: a float64 is a dyadic rational
        return out.reshape(a.shape)

    def hyper(self, hp: Mapping[str, Fraction]) -> dict[str, Any]:
        """The hyper-parameters as 0-d object arrays of balls (so that NumPy, not python-flint, dispatches
        ``hyper * array``), ``sqrt(1 - beta2^t)`` enclosed from the exact ``1 - beta2^t``."""
        def box(x: Any) -> Any:
            out = np.empty((), dtype=object)
            out[()] = x
            return out
        out = {k: box(self.of(v)) for k, v in hp.items() if k != "bias_correction2"}
        out["bias_correction2_sqrt"] = box(self._sqrt(self.of(hp["bias_correction2"])))
        return out

    @staticmethod
    def _sqrt(x: Any) -> Any:
        if not x >= 0:  # (arb: every point of the ball >= 0; false for a NaN ball)
            raise ValueError(f"square root of a negative number: of the ball {x.str(radius=True)}")
        return x.sqrt()

    def sqrt(self, a: Any) -> Any:
        return np.vectorize(self._sqrt, otypes=[object])(a) if isinstance(a, np.ndarray) else self._sqrt(a)

    def maximum(self, a: Any, b: Any) -> Any:
        """Element-wise ``max`` (Arb's ``arb_max``: a ball containing ``[max(lo), max(hi)]``, outward rounded;
        one of the two unchanged where it is above the other)."""
        return np.vectorize(lambda x, y: x.max(y), otypes=[object])(a, b)

    @staticmethod
    def ends(x: Any) -> tuple[Fraction, Fraction] | None:
        """The ball's endpoints ``mid -+ rad`` as exact rationals (its midpoint and radius are exact binary
        numbers); None for a ball that is not finite (no exact bounds: a division by a ball containing 0)."""
        if not x.is_finite():
            return None
        m, e = (int(v) for v in x.mid().man_exp())
        r, f = (int(v) for v in x.rad().man_exp())
        mid = Fraction(m << e) if e >= 0 else Fraction(m, 1 << -e)
        if not r:
            return mid, mid
        rad = Fraction(r << f) if f >= 0 else Fraction(r, 1 << -f)
        return mid - rad, mid + rad


def _at_precision(fn: Callable[[], _T]) -> _T:
    """``fn()`` with python-flint's working precision at :data:`PRECISION`, restored after (as
    :func:`harness.models.oracle.model_truth` does)."""
    old = ctx.prec
    try:
        ctx.prec = PRECISION
        return fn()
    finally:
        ctx.prec = old


def adam_enclosures(opt: OptimizerConfig, params: Mapping[str, Any], grads: Mapping[str, Any],
                    state: Mapping[str, Mapping[str, Any]], t: int, hp: Mapping[str, Fraction]) -> dict[str, Any]:
    """The Adam/AdamW rule (:func:`harness.optim.rules.adam_rule`) in ball arithmetic at :data:`PRECISION`
    bits: per quantity (``W``, ``exp_avg_W``, ..., as :attr:`UpdateTruth.values`), an object array of
    ``arb`` balls, each containing the exact value of the rule (or not finite: see the module docstring).

    Args:
        params, grads, state: float64 arrays (what the implementation held) or object arrays of
            rationals (``Fraction``, ``int``: the exact trajectory); missing moments are zeros.
        hp: :func:`harness.optim.rules.exact_hyper_parameters`.
    """
    ia = _Intervals()

    def conv(a: Any) -> Any:
        arr = np.asarray(a)
        if arr.dtype != object:
            return ia.of(arr.astype(np.float64))  # (float64, float32, ...: exact)
        out = np.empty(arr.size, dtype=object)
        out[:] = [ia.of(Fraction(x)) for x in arr.ravel()]
        return out.reshape(arr.shape)

    def enclose() -> dict[str, Any]:
        ihp = ia.hyper(hp)
        out: dict[str, Any] = {}
        for p in params:
            zeros = np.zeros(np.shape(params[p]))
            prev = state.get(p, {})
            st = {k: conv(prev.get(k, zeros)) for k in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")}
            w, new = apply_rule(conv(params[p]), conv(grads[p]), st, t, opt, ihp, ia.sqrt, ia.maximum)
            out[p] = w
            out.update((f"{k}_{p}", v) for k, v in new.items())
        return out

    return _at_precision(enclose)


def update_truth(opt: OptimizerConfig, params: Mapping[str, F64], grads: Mapping[str, F64],
                 state: Mapping[str, Mapping[str, F64]], t: int, lr: Fraction, fmt: FloatFormat) -> UpdateTruth:
    """The truth of step ``t`` of ``opt`` for the parameters ``W`` (D, K) and ``b`` (K,).

    Args:
        params, grads: float64 arrays by parameter name (what the implementation held before the step,
            and the gradient it computed in this step).
        state: per parameter, the state after step ``t - 1`` (``{}`` at ``t = 1``; Adam's missing
            moments are zeros, as torch.optim initialises them).
        lr: the learning rate as the implementation was handed it (exact).
        fmt: the dtype (for the enclosures' rounding check).
    """
    hp = exact_hyper_parameters(opt, lr, t)
    values: dict[str, ScaledInts] = {}
    straddles: dict[str, list[tuple[int, ...]]] = {}
    if opt.name == "sgd":
        for p in params:
            st = {k: _fractions(v) for k, v in state.get(p, {}).items()}
            w, new = apply_rule(_fractions(params[p]), _fractions(grads[p]), st, t, opt, hp)
            values[p] = ScaledInts.from_fractions(w)
            for k, v in new.items():
                values[f"{k}_{p}"] = ScaledInts.from_fractions(v)
        return UpdateTruth(values, EXACT_METHOD)
    for name, enc in adam_enclosures(opt, params, grads, state, t, hp).items():
        shape = params[name if name in params else name.rsplit("_", 1)[1]].shape
        mids = np.empty(int(np.prod(shape)), dtype=object)
        bad: list[tuple[int, ...]] = []
        for i, x in enumerate(np.asarray(enc).ravel()):
            ends = _Intervals.ends(x)
            if ends is None:  # no exact value, or an infinite one: graded against 0 (as the mpmath oracle's [-inf, inf]), undecided
                mids[i] = Fraction(0)
                bad.append(tuple(int(j) for j in np.unravel_index(i, shape)))
                continue
            lo, hi = ends
            mids[i] = (lo + hi) / 2
            if lo != hi and round_to_nearest(lo, fmt) != round_to_nearest(hi, fmt):
                bad.append(tuple(int(j) for j in np.unravel_index(i, shape)))
        values[name] = ScaledInts.from_fractions(mids.reshape(shape))
        if bad:
            straddles[name] = bad
    return UpdateTruth(values, INTERVAL_METHOD, straddles)


def exact_trajectory(opt: OptimizerConfig, inputs: Mapping[str, F64], lr: Fraction, reduction: str, steps: int,
                     fmt: FloatFormat) -> list[UpdateTruth]:
    """The exact trajectory from the inputs as the implementation saw them: each step's exact gradient
    (:func:`harness.oracle.exact_step`) at the exact parameters, and the exact update (SGD) or its
    256-bit enclosure's midpoint (Adam: the next gradient is taken there; the drift it measures is
    far above that 2**-250 relative approximation; between steps the values keep :data:`TRAJECTORY_BITS`
    significant bits). Per step, the parameters and state after it."""
    exact_in = exact_inputs_from_floats({k: inputs[k] for k in ("X", "y")})
    params = {"W": ScaledInts.from_floats(inputs["W"]), "b": ScaledInts.from_floats(inputs["b"])}
    state: dict[str, dict[str, Any]] = {}
    out = []
    for t in range(1, steps + 1):
        ex = exact_step({**exact_in, **params}, lr, reduction)
        grads = {p: ex.values[f"grad_{p}"].to_fractions() for p in params}
        truth = _update_fractions(opt, {p: v.to_fractions() for p, v in params.items()}, grads, state, t, lr, fmt)
        out.append(truth)
        params = {p: _trimmed(truth.values[p]) for p in params}
        state = {p: {k: _trimmed(truth.values[f"{k}_{p}"]).to_fractions() for k in opt.state_keys()} for p in params}
    return out


#: Significant bits the exact trajectory keeps between steps (the rationals of a long SGD-momentum run
#: would grow without end; the drift it measures is far above a 2**-300 relative change).
TRAJECTORY_BITS = 300


def _trimmed(v: ScaledInts) -> ScaledInts:
    """``v`` with each element rounded to :data:`TRAJECTORY_BITS` significant bits when it holds more."""
    fr = v.to_fractions()
    out = np.empty(fr.size, dtype=object)
    for i, x in enumerate(fr.ravel()):
        x = Fraction(x)
        if x == 0 or x.denominator.bit_length() + x.numerator.bit_length() <= 2 * TRAJECTORY_BITS:
            out[i] = x
            continue
        e = _floor_log2(x)
        q = Fraction(2) ** (e - TRAJECTORY_BITS)
        out[i] = round(x / q) * q
    return ScaledInts.from_fractions(out.reshape(fr.shape))


def _update_fractions(opt: OptimizerConfig, params: Mapping[str, Any], grads: Mapping[str, Any],
                      state: Mapping[str, Mapping[str, Any]], t: int, lr: Fraction, fmt: FloatFormat) -> UpdateTruth:
    """:func:`update_truth` on exact rationals (object arrays of Fraction) instead of floats."""
    hp = exact_hyper_parameters(opt, lr, t)
    values: dict[str, ScaledInts] = {}
    if opt.name == "sgd":
        for p in params:
            w, new = apply_rule(params[p], grads[p], dict(state.get(p, {})), t, opt, hp)
            values[p] = ScaledInts.from_fractions(np.asarray(w, dtype=object))
            for k, v in new.items():
                values[f"{k}_{p}"] = ScaledInts.from_fractions(np.asarray(v, dtype=object))
        return UpdateTruth(values, EXACT_METHOD)
    for name, enc in adam_enclosures(opt, params, grads, state, t, hp).items():
        arr = np.asarray(enc)
        mids = np.empty(arr.size, dtype=object)
        # (a ball that is not finite: 0, as the mpmath oracle's [-inf, inf] gave; see update_truth)
        mids[:] = [sum(e) / 2 if (e := _Intervals.ends(x)) is not None else Fraction(0) for x in arr.ravel()]
        values[name] = ScaledInts.from_fractions(mids.reshape(arr.shape))
    return UpdateTruth(values, INTERVAL_METHOD)
