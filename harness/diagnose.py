"""Diagnoses of failing records: which known bug explains the computed values?

The bounds say *that* a step is wrong; this module says *why*, when the wrong
numbers are what a known bug produces. Each hypothesis is a function of one
graded step (:class:`StepFacts`: inputs, computed values, exact values,
rigorous bounds, dtype, learning rate, reduction, and the previous step) that
returns a :class:`Finding` (a diagnosis in a few words, and the records it
explains) or None. :data:`HYPOTHESES` is the one list; every hypothesis is
asked, and a ``disagree`` record is named only when exactly one diagnosis
explains it (two that both fit mean the data cannot tell them apart: no
name). :data:`FALLBACKS` (a narrower dtype, whose wide bound contains many
small bugs) are asked, in order, only for records nothing else explains.
A named record gets ``record.diagnosis`` and its message starts with
``"looks like: <diagnosis>; "``. The verdict is never changed: a diagnosis
can neither hide a failure nor invent one.

The rule every hypothesis follows (:func:`explained`): a record is explained
by a transformed value ``h`` (e.g. ``f * exact`` for a gradient off by ``f``)
when **every** element satisfies ``|computed - h| <= tol``, where ``tol`` is the
rigorous bound scaled for the transformation (``|f|`` times the bound) plus one
rounding of the transformation in the dtype (``u |computed| + eta``) and of its
float64 evaluation here; and when at least one element is *decisive*:
``|h - exact| > bound + tol``, so that the hypothesis and the correct value
cannot both explain it. A correct step (within the bound of the exact values)
can therefore never be diagnosed: at a decisive element it is farther than
``tol`` from ``h``. Where the two are indistinguishable (a factor applied to an
all-zero gradient, a vacuous bound) nothing fires; nor does a constant factor
when another factor of the set also fits every element (bounds too wide to
tell). Hypotheses with an
estimated parameter (momentum ``beta``, L2 weight ``lambda``) intersect the
interval of parameters each element allows, and fire only when the
intersection is non-empty and at least two parameter elements pin it down to
within a quarter of its value (:func:`estimate`): one element alone is
explained by almost any parameter; and when the update is one multiple of a
single direction (the exact update, or the previous one), which a constant
factor explains as well. A record that follows from one already told apart
(the W update made with an explained wrong gradient) need only fit.

Hypotheses (see each function):

1. :func:`accumulation` -- ``.grad`` not reset: ``G_t = g_t + G_{t-1}``.
2. :func:`reported_before_update` -- W and b reported before the update.
3. :func:`gradient_factor` -- gradient off by a constant factor (1/2, 2, -1,
   K, N, N*K, 1/N, 1/K, 1/(N*K), 0, backward() run m times).
4. :func:`stale_gradient` -- the update used the previous step's gradient.
5. :func:`update_factor` -- correct gradient, update off by a factor (0 = skipped).
6. :func:`narrow_learning_rate` -- ``lr`` held in a narrower dtype.
7. :func:`momentum` -- SGD with momentum ``beta``.
8. :func:`l2_penalty` -- an L2 penalty (weight decay) ``lambda``.
9. :func:`transposed_layout` -- W or grad_W in the transposed layout.
10. :func:`narrower_dtype` -- computed in a narrower dtype than the case's (fallback).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt

from .bounds import step_bounds
from .floats import BFLOAT16, FLOAT16, FLOAT32, TF32, FloatFormat, round_to_format
from .oracle import exact_inputs_from_floats, exact_step

F64 = npt.NDArray[np.float64]

#: Relative error of this module's own float64 evaluation of a hypothesis (a few roundings).
F64_SLACK = 4 * 2.0**-53

#: Prefix of a diagnosed record's message.
LOOKS_LIKE = "looks like: "

#: An estimated parameter must be pinned down by this many parameter elements ...
MIN_INFORMATIVE = 2
#: ... each allowing at most this relative spread of the parameter.
INFORMATIVE_SPREAD = 0.25

#: The integer multiples tried for a gradient (backward() run m times into one .grad).
MULTIPLES = (2, 3, 4)

#: Momentum below this is not named (no one trains with it; a tiny "beta" is a coincidence).
MIN_BETA = 0.1

#: An L2 weight above this is not named (weight decay is 1e-5 .. 1e-1 in practice).
MAX_LAMBDA = 1.0

#: Momentum values reported as such when the data allow them.
NICE_BETAS = (0.9, 0.99, 0.95, 0.5, 0.8, 0.999)

GRADS = (("grad_W", "W"), ("grad_b", "b"))


@dataclass(frozen=True)
class StepFacts:
    """Everything a hypothesis may look at for one graded step (float64 arrays).

    Attributes:
        step: the step number (1-based).
        fmt: the case's dtype.
        lr: the learning rate as the oracle used it (rounded to ``fmt``).
        lr_written: the case's learning rate as a Python float.
        reduction: ``"sum"`` or ``"mean"``.
        inputs: ``X`` (N, D), ``y`` (N, K), ``W`` (D, K), ``b`` (K,) before the step
            (the implementation's own, as graded).
        computed: the implementation's ``loss`` (0-d), ``grad_W``, ``grad_b``, ``W``, ``b``.
        exact: the exact values of the same quantities at ``inputs``, rounded to float64.
        rigorous: per-element rigorous error bounds of a correct step (same shapes).
        failing: the quantities whose verdict is ``disagree`` (filled by :func:`diagnose_step`).
        previous: the previous step's facts (its own ``previous`` dropped), None at step 1.
        right_before: the quantities that were within their rigorous bounds at some earlier step (filled by
            :func:`diagnose_step` in the facts it returns): a bug that acts from step 1 (a constant factor) fails
            there, where momentum (plain SGD at step 1) does not.
        transformed: the rigorous bounds of a step that transforms the exact terms (:meth:`harness.bounds.StepBounds.
            tolerance_bounds`: a reduction every correct evaluation computes exactly has ``rigorous`` 0, but the
            same terms times a factor round), which :func:`tolerance` scales; None: ``rigorous``.
    """

    step: int
    fmt: FloatFormat
    lr: float
    lr_written: float
    reduction: str
    inputs: Mapping[str, F64]
    computed: Mapping[str, F64]
    exact: Mapping[str, F64]
    rigorous: Mapping[str, F64]
    failing: frozenset[str] = frozenset()
    previous: StepFacts | None = None
    right_before: frozenset[str] = frozenset()
    transformed: Mapping[str, F64] | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        """(N, D, K)."""
        n, d = self.inputs["X"].shape
        return int(n), int(d), int(self.inputs["W"].shape[1])


@dataclass(frozen=True)
class Finding:
    """What a hypothesis found: a diagnosis, the failing quantities it explains, and a detail."""

    diagnosis: str
    quantities: tuple[str, ...]
    detail: str = ""


Hypothesis = Callable[[StepFacts], "Finding | None"]


# ------------------------------------------------------------------ the rule


def tolerance(facts: StepFacts, q: str, scale: float | F64 = 1.0, extra: float | F64 = 0.0, *terms: F64) -> F64:
    """``scale * bound + u |computed| + eta + extra`` plus this module's float64 rounding of ``terms`` (``bound``:
    :attr:`StepFacts.transformed`, the rigorous bound of the transformed terms).

    Args:
        facts: the step.
        q: the quantity.
        scale: how much the transformation scales the bound (``max(1, |f|)`` for a factor ``f``).
        extra: an additional absolute allowance (same shape or scalar).
        terms: the magnitudes summed in float64 to form the hypothesis.
    """
    c = np.abs(facts.computed[q])
    u, eta = facts.fmt.unit_roundoff, facts.fmt.underflow_quantum
    with np.errstate(over="ignore", invalid="ignore"):
        slack = F64_SLACK * (c + sum((np.abs(t) for t in terms), np.zeros_like(c)))
        bound = (facts.rigorous if facts.transformed is None else facts.transformed)[q]
        return np.asarray(scale * bound + u * c + eta + extra + slack, dtype=np.float64)


def fails(facts: StepFacts, q: str) -> bool:
    """Whether ``q``'s record is ``disagree`` and some element is outside the rigorous bound of the exact value."""
    if q not in facts.failing:
        return False
    e = facts.exact[q]
    with np.errstate(invalid="ignore", over="ignore"):  # the exact value was rounded to float64: half an ULP of it
        return not bool(np.all(np.abs(facts.computed[q] - e) <= facts.rigorous[q] + F64_SLACK * np.abs(e)))


def fits(facts: StepFacts, q: str, hyp: npt.ArrayLike, tol: npt.ArrayLike) -> bool:
    """Whether every element of ``q`` is finite and within ``tol`` of ``hyp`` (NaN and inf never fit)."""
    c = facts.computed[q]
    h = np.broadcast_to(np.asarray(hyp, dtype=np.float64), c.shape)
    t = np.broadcast_to(np.asarray(tol, dtype=np.float64), c.shape)
    with np.errstate(invalid="ignore", over="ignore"):
        return bool(np.all(np.isfinite(c)) and np.all(np.abs(c - h) <= t))


def decisive(facts: StepFacts, q: str, hyp: npt.ArrayLike, tol: npt.ArrayLike) -> bool:
    """Whether some element tells ``hyp`` from the exact value: ``|hyp - exact| > bound + tol``
    (plus half an ULP of the exact value, rounded to float64 here)."""
    e, r = facts.exact[q], facts.rigorous[q]
    h = np.broadcast_to(np.asarray(hyp, dtype=np.float64), e.shape)
    t = np.broadcast_to(np.asarray(tol, dtype=np.float64), e.shape)
    with np.errstate(invalid="ignore", over="ignore"):
        return bool(np.any(np.abs(h - e) > r + t + F64_SLACK * np.abs(e)))


def explained(facts: StepFacts, q: str, hyp: npt.ArrayLike, tol: npt.ArrayLike) -> bool:
    """Whether the transformed value ``hyp`` explains ``q``: a failing record (:func:`fails`), every
    element within ``tol`` of ``hyp`` (:func:`fits`), and one element :func:`decisive`."""
    return fails(facts, q) and fits(facts, q, hyp, tol) and decisive(facts, q, hyp, tol)


@dataclass
class Observations:
    """Elements that constrain an estimated parameter ``theta``: ``a = theta * m`` within ``tol``.

    ``key`` names the parameter element each observation is about (two observations of the
    same element, e.g. its gradient and its update, count once toward :data:`MIN_INFORMATIVE`)."""

    a: list[float] = field(default_factory=list)
    m: list[float] = field(default_factory=list)
    tol: list[float] = field(default_factory=list)
    key: list[tuple[str, int]] = field(default_factory=list)

    def add(self, a: F64, m: F64, tol: F64, param: str) -> None:
        for i, (ai, mi, ti) in enumerate(zip(np.ravel(a), np.ravel(m), np.ravel(tol), strict=True)):
            self.a.append(float(ai))
            self.m.append(float(mi))
            self.tol.append(float(ti))
            self.key.append((param, i))


def estimate(obs: Observations, lo: float, hi: float, nice: Sequence[float] = ()) -> float | None:
    """The parameter ``theta`` in ``(lo, hi]`` that every observation allows, or None.

    Each observation with ``m != 0`` allows ``theta`` in ``[(a - tol) / m, (a + tol) / m]``; one
    with ``m == 0`` must have ``|a| <= tol``. The allowed intervals are intersected; the value
    reported is the first of ``nice`` inside the intersection, else the shortest decimal (up to
    3 significant digits) inside it, else its midpoint. It is returned only when at least
    :data:`MIN_INFORMATIVE` parameter elements are informative at that value:
    ``tol <= INFORMATIVE_SPREAD |theta m|``.
    """
    a, m, t = np.array(obs.a), np.array(obs.m), np.array(obs.tol)
    if a.size == 0 or not (np.all(np.isfinite(a)) and np.all(np.isfinite(m)) and np.all(np.isfinite(t))):
        return None
    zero = m == 0
    if np.any(np.abs(a[zero]) > t[zero]):
        return None
    nz = ~zero
    if not np.any(nz):
        return None
    ends = np.stack([(a[nz] - t[nz]) / m[nz], (a[nz] + t[nz]) / m[nz]])
    low, high = float(np.max(ends.min(axis=0))), float(np.min(ends.max(axis=0)))
    low, high = max(low, lo), min(high, hi)
    if not low <= high or high <= lo:
        return None
    theta = next((v for v in nice if low <= v <= high), None)
    if theta is None:
        theta = next((float(f"{(low + high) / 2:.{p}g}") for p in (1, 2, 3) if low <= float(f"{(low + high) / 2:.{p}g}") <= high),
                     (low + high) / 2)
    if theta <= lo:
        return None
    informative = {k for k, mi, ti in zip(obs.key, m, t, strict=True) if ti <= INFORMATIVE_SPREAD * abs(theta * mi)}
    return theta if len(informative) >= MIN_INFORMATIVE else None


def _grouped(claimed: Iterable[str], what: str) -> str:
    """``"gradient"`` when both gradients are claimed, else the one claimed (``what`` for updates)."""
    qs = set(claimed)
    if what == "gradient":
        return "gradient" if {"grad_W", "grad_b"} <= qs else ("grad_W" if "grad_W" in qs else "grad_b")
    return "update" if {"W", "b"} <= qs else f"update of {'W' if 'W' in qs else 'b'}"


# ------------------------------------------------------------------ hypotheses


def accumulation(facts: StepFacts) -> Finding | None:
    """``.grad`` never reset: the gradient at step t is the exact one plus the gradient reported at
    step t-1 (``G_t = g_t + G_{t-1}``, PyTorch adds each backward pass into ``.grad``), and the
    update used that sum (``W' = W - lr G_t``). Needs the previous step."""
    prev = facts.previous
    if prev is None:
        return None
    claimed: list[str] = []
    for g, p in GRADS:
        pg = prev.computed[g].reshape(facts.computed[g].shape)
        hyp = _accumulation_hyp(facts, g)
        if hyp is not None and explained(facts, g, *hyp) and not _any_factor_fits(facts, g):  # else: not told from a factor
            claimed.append(g)
            shift = facts.lr * pg
            if fails(facts, p) and fits(facts, p, facts.exact[p] - shift, tolerance(facts, p, 1.0, facts.fmt.unit_roundoff * np.abs(shift),
                                                                                       facts.exact[p], shift)):
                claimed.append(p)  # the update used the accumulated gradient (a fit suffices: the gradient told it apart)
    if not any(q.startswith("grad") for q in claimed):
        return None
    g = claimed[0]
    i = int(np.argmax(np.abs(facts.computed[g] - facts.exact[g])))
    c, e, p_ = (float(np.ravel(a)[i]) for a in (facts.computed[g], facts.exact[g], prev.computed[g]))
    return Finding("gradient accumulation (.grad not reset between steps)", tuple(claimed),
                   f"{g} at step {facts.step} is {c:.6g} = {e:.6g} (the exact gradient at this step's parameters) + "
                   f"{p_:.6g} (the gradient of step {facts.step - 1}), within the error bound; reset it after each update "
                   "(optimizer.zero_grad(), or W.grad = None)")


def _regrade(facts: StepFacts, inputs: Mapping[str, F64], lr: float, fmt: FloatFormat) -> tuple[dict[str, F64], dict[str, F64]] | None:
    """The exact values and rigorous bounds of a correct step at other inputs, learning rate or dtype."""
    try:
        return exact_and_bounds(inputs, lr, facts.reduction, fmt, facts.lr_written)
    except (ArithmeticError, ValueError):  # beyond the oracle's or the bounds' range: no hypothesis
        return None


def exact_and_bounds(inputs: Mapping[str, F64], lr: float, reduction: str, fmt: FloatFormat,
                     lr_held: float | None = None) -> tuple[dict[str, F64], dict[str, F64]]:
    """The exact values (rounded to float64) and the rigorous bounds of a correct step, as if no reduction were exact
    (:meth:`harness.bounds.StepBounds.tolerance_bounds`: a hypothesis' computation rounds what a correct one may not).

    Args:
        inputs: ``X``, ``y``, ``W``, ``b`` as float64 arrays of values exact in ``fmt``.
        lr: the learning rate the step multiplies by (a float64 value).
        reduction: ``"sum"`` or ``"mean"``.
        fmt: the dtype computed in.
        lr_held: the learning rate as the implementation may hold it (see :func:`harness.bounds.step_bounds`).

    Returns:
        (exact, rigorous): quantity -> float64 array, for ``loss``, ``grad_W``, ``grad_b``, ``W``, ``b``.
    """
    ex = exact_step(exact_inputs_from_floats({k: inputs[k] for k in ("X", "y", "W", "b")}), Fraction(lr), reduction)
    hi = {q: v.to_hi_lo()[0] for q, v in ex.values.items()}
    b = step_bounds(inputs, ex.residual.to_float64(), hi, lr=lr, reduction=reduction, fmt=fmt, lr_held=lr_held)
    return hi, b.tolerance_bounds()


def reported_before_update(facts: StepFacts) -> Finding | None:
    """W and b reported before the update: the step's loss and gradient are the exact ones at the W and
    b it *reports* (its parameters before the update it then applies), not at the ones it reported the
    step before. From step 2 (at step 1 it is a skipped update). Its W and b records agree: the
    reported W is the previous one moved by the previous gradient, as the harness expects."""
    if facts.previous is None or not any(fails(facts, g) for g, _ in GRADS):
        return None
    at = {**facts.inputs, "W": facts.computed["W"], "b": facts.computed["b"]}
    got = _regrade(facts, at, facts.lr, facts.fmt)
    if got is None:
        return None
    ex, rig = got
    moved = dataclasses.replace(facts, rigorous=rig, transformed=None)  # tolerances of a correct step at the reported parameters
    claimed = [q for q in ("loss", "grad_W", "grad_b") if explained(facts, q, ex[q], tolerance(moved, q, 1.0, 0.0, ex[q]))]
    if not any(q.startswith("grad") for q in claimed):
        return None
    if all(_any_factor_fits(facts, q) for q in claimed if q.startswith("grad")):
        return None  # a constant factor of the gradient explains it as well (a half-sum step in bfloat16, N = 1: CI)
    return Finding("W and b reported before the update", tuple(claimed),
                   f"the loss and gradient of step {facts.step} are the exact ones at the W and b it reports: the step "
                   "returns its parameters before applying the update (copy them after optimizer.step())")


def _factor_labels(facts: StepFacts) -> list[tuple[float, str, str]]:
    """(factor, what it is, why) for the constant factors tried, in order; one entry per distinct value."""
    n, _, k = facts.shape
    mean = facts.reduction == "mean"
    cands: list[tuple[float, str, str]] = [(-1.0, "the wrong sign", "y - prediction for the residual: gradient ascent")]
    if mean and k > 1:
        cands.append((float(k), "a factor of K", "a mean over the N rows instead of the N*K elements"))
    if mean and n > 1:
        cands.append((float(n), "a factor of N", "a mean over the K outputs instead of the N*K elements"))
    if mean and n * k > 1:
        cands.append((float(n * k), "a factor of N*K", "a sum where the reduction is mean"))
    if n > 1:
        cands.append((1.0 / n, "a factor of 1/N", "a mean over the N rows where a sum is meant"))
    if not mean and k > 1:
        cands.append((1.0 / k, "a factor of 1/K", "a mean over the K outputs where the reduction is sum"))
    if not mean and n * k > 1:
        cands.append((1.0 / (n * k), "a factor of 1/(N*K)", "a mean where the reduction is sum"))
    cands.append((0.5, "a factor of 1/2", "half-sum convention"))
    for m in MULTIPLES:
        cands.append((float(m), f"a factor of {m}", f"backward() ran {m} times into one .grad"))
    return _distinct(cands)


def _distinct(cands: Sequence[tuple[float, str, str]]) -> list[tuple[float, str, str]]:
    """``cands`` with one entry per distinct factor, in order; a factor that two entries share keeps the first's label
    and names both explanations."""
    out: list[tuple[float, str, str]] = []
    for f, what, why in cands:
        same = next((i for i, (g, _, _) in enumerate(out) if abs(g - f) <= 1e-12 * abs(f)), None)
        if same is None:
            out.append((f, what, why))
        else:  # one value, two explanations (K = 2, N = 2, ...): name both
            g, w0, y0 = out[same]
            out[same] = (g, w0, f"{y0}; or {why}")
    return out


#: The diagnosis of a record that several candidates of one family explain: it blocks every other
#: diagnosis of the record (:func:`diagnose_step` names it with none).
AMBIGUOUS = "(several explanations fit)"

_SEVERAL = (float("nan"), AMBIGUOUS, "")


def _unique_factor(facts: StepFacts, q: str, cands: Sequence[tuple[float, str, str]],
                   hyp_of: Callable[[float], tuple[F64, F64]]) -> tuple[float, str, str] | None:
    """The one candidate factor whose transformed value explains ``q``; None when none does; the
    marker ``_SEVERAL`` when another candidate also fits every element (bounds too wide to tell)."""
    if not fails(facts, q):
        return None
    fitting = [(c, *hyp_of(c[0])) for c in cands if fits(facts, q, *hyp_of(c[0]))]
    if not any(decisive(facts, q, hyp, tol) for _, hyp, tol in fitting):
        return None
    return fitting[0][0] if len(fitting) == 1 else _SEVERAL


def _update_hyp(facts: StepFacts, p: str, f: float) -> tuple[F64, F64]:
    """``p`` (``W`` or ``b``) moved by ``f`` times the exact update, ``W + f (W'_exact - W)``, and its tolerance."""
    w = facts.inputs[p]
    move = f * (facts.exact[p] - w)
    return w + move, tolerance(facts, p, max(1.0, abs(f)), 0.0, w, move)


def _follows_gradient(facts: StepFacts, g: str, p: str, f: float) -> bool:
    """Whether the failing ``p`` is what a wrong gradient ``f g`` makes of the update: within the
    (scaled) bound of ``W + f (W'_exact - W)`` or of ``W - lr G`` with the reported ``G``. Only a
    fit is asked (the gradient's record already told the factor from the truth)."""
    if not fails(facts, p):
        return False
    w = facts.inputs[p]
    shift = facts.lr * facts.computed[g].reshape(w.shape)
    return fits(facts, p, *_update_hyp(facts, p, f)) or fits(facts, p, w - shift, tolerance(facts, p, max(1.0, abs(f)), 0.0, w, shift))


def _gradient_candidates(facts: StepFacts) -> list[tuple[float, str, str]]:
    return [*_factor_labels(facts), (0.0, "zero", "read after zero_grad(), or never computed")]


def _grad_hyp(facts: StepFacts, g: str) -> Callable[[float], tuple[F64, F64]]:
    """``f g`` and its tolerance (``|f|`` times the bound plus one rounding)."""
    def hyp(f: float) -> tuple[F64, F64]:
        with np.errstate(over="ignore"):
            h = f * facts.exact[g]
        return h, tolerance(facts, g, abs(f), 0.0, h)
    return hyp


def _any_factor_fits(facts: StepFacts, g: str) -> bool:
    """Whether some constant factor of the set fits every element of the gradient ``g``."""
    return any(fits(facts, g, *_grad_hyp(facts, g)(f)) for f, _, _ in _gradient_candidates(facts))


def _accumulation_hyp(facts: StepFacts, g: str) -> tuple[F64, F64] | None:
    """``g_t + G_{t-1}`` and its tolerance; None at step 1."""
    if facts.previous is None:
        return None
    pg = facts.previous.computed[g].reshape(facts.computed[g].shape)
    return facts.exact[g] + pg, tolerance(facts, g, 1.0, 0.0, facts.exact[g], pg)


def _accumulation_fits(facts: StepFacts, g: str) -> bool:
    got = _accumulation_hyp(facts, g)
    return got is not None and fits(facts, g, *got)


def gradient_factor(facts: StepFacts) -> Finding | None:
    """A gradient off by a constant factor ``f`` from a small discrete set (see :func:`_factor_labels`):
    ``G = f g`` within ``|f|`` times the bound plus one rounding, for exactly one ``f`` of the set
    (:func:`_unique_factor`); the update ``W' = W - lr G`` and the loss are claimed too where they
    are off by the same factor. Also ``f = 0`` (the gradient read after it was reset)."""
    cands = _gradient_candidates(facts)
    found = {g: c for g, _ in GRADS if (c := _unique_factor(facts, g, cands, _grad_hyp(facts, g))) is not None}
    # G_t = g_t + G_{t-1} fitting as well: not told apart from gradient accumulation
    found = {g: (_SEVERAL if c is not _SEVERAL and _accumulation_fits(facts, g) else c) for g, c in found.items()}
    several = [g for g, c in found.items() if c is _SEVERAL]
    found = {g: c for g, c in found.items() if c is not _SEVERAL}
    if not found:
        return Finding(AMBIGUOUS, tuple(several + [p for g, p in GRADS if g in several])) if several else None
    f, what, why = next(iter(found.values()))
    claimed = [g for g, c in found.items() if c[0] == f]
    # backward() run m times scales both gradients: where the other one is right, that reason is dropped, and the factor
    # is in this gradient's own formula if no other reason is left (grad_W * 2 alone was "backward() ran 2 times":
    # helper-91)
    right = [g for g, _ in GRADS if g not in claimed and g in facts.computed and g in facts.exact and not fails(facts, g)]
    if len(claimed) == 1 and right:
        kept = [p for p in why.split("; or ") if not p.startswith("backward() ran")]
        why = "; or ".join(kept) if kept else f"{right[0]} is right: a factor in {claimed[0]}'s own formula"
    claimed += [p for g, p in GRADS if g in claimed and _follows_gradient(facts, g, p, f)]
    if explained(facts, "loss", f * facts.exact["loss"], tolerance(facts, "loss", abs(f), 0.0, f * facts.exact["loss"])):
        claimed.append("loss")
    name = _grouped(claimed, "gradient")
    diag = (f"{name} is zero ({why})" if f == 0 else f"{name} with the wrong sign ({why})" if f == -1
            else f"{name} off by {what} ({why})")
    # ("every element of grad_W matches" read as if the gradient were right: helper-82)
    return Finding(diag, tuple(claimed), f"this factor explains every element of {', '.join(claimed)}, within the error bound")


def _same_factor_before(facts: StepFacts, p: str, f: float) -> bool:
    """Whether the previous step (if any) moved ``p`` by the same factor: a constant bug does so at
    every step, where momentum (plain SGD at step 1, then about ``1 + beta`` times) does not."""
    prev = facts.previous
    return prev is None or fits(prev, p, *_update_hyp(prev, p, f))


def _update_candidates(facts: StepFacts) -> list[tuple[float, str, str]]:
    """(factor, what, why) of the updates tried by :func:`update_factor`: the factors of :func:`_factor_labels`, but
    explained as what they are where the gradient is right, a learning rate scaled (the gradient's own explanations,
    "backward() ran 4 times", named an update whose gradient agreed: helper-81)."""
    n, _, k = facts.shape
    cands = [(0.0, "", ""), (2.0, "", "applied twice per step, or lr doubled"), (-1.0, "", "W + lr * grad: uphill"),
             (0.5, "", "lr halved")]
    sizes = [(float(n), "N", "N, the batch size"), (float(k), "K", "K, the outputs"), (float(n * k), "N*K", "N*K")]
    for size, sym, words in sizes:
        if size > 1:
            cands.append((size, f"a factor of {sym}", f"lr multiplied by {words}"))
            cands.append((1.0 / size, f"a factor of 1/{sym}", f"lr divided by {words}"))
    for m in MULTIPLES:
        if m != 2:
            cands.append((float(m), f"a factor of {m}", f"applied {m} times per step, or lr multiplied by {m}"))
    return _distinct(cands)


def _stale_hyp(facts: StepFacts, g: str, p: str) -> tuple[F64, F64] | None:
    """``W - lr G_{t-1}`` and its tolerance; None at step 1."""
    if facts.previous is None:
        return None
    shift = facts.lr * facts.previous.computed[g].reshape(facts.computed[p].shape)
    return facts.inputs[p] - shift, tolerance(facts, p, 1.0, 0.0, facts.inputs[p], shift)


def _stale_fits(facts: StepFacts, p: str) -> bool:
    got = _stale_hyp(facts, "grad_" + p, p)
    return got is not None and fits(facts, p, *got)


def update_factor(facts: StepFacts) -> Finding | None:
    """A correct gradient with an update off by a constant factor: ``W' = W + f (W'_exact - W)``,
    for exactly one ``f`` of a small set (:func:`_unique_factor`). ``f = 0`` is a skipped update
    (W or b unchanged), ``f = 2`` an update applied twice, ``-1`` a step uphill. Claimed only where
    the gradient's own record is not failing."""
    cands = _update_candidates(facts)

    def update_hyp(p: str) -> Callable[[float], tuple[F64, F64]]:
        return lambda f: _update_hyp(facts, p, f)

    found = {p: c for g, p in GRADS if not fails(facts, g) and (c := _unique_factor(facts, p, cands, update_hyp(p))) is not None
             and (c is _SEVERAL or _same_factor_before(facts, p, c[0]))}
    # W - lr G_{t-1} fitting as well: not told apart from an update with the previous gradient
    found = {p: (_SEVERAL if c is not _SEVERAL and c[0] != 0 and _stale_fits(facts, p) else c) for p, c in found.items()}
    # bitwise unchanged where the exact update moves it: skipped, even where a tiny factor also fits
    found.update({p: cands[0] for g, p in GRADS if not fails(facts, g) and fails(facts, p) and _same_factor_before(facts, p, 0.0)
                  and bool(np.all(facts.computed[p] == facts.inputs[p])) and decisive(facts, p, *_update_hyp(facts, p, 0.0))})
    several = [p for p, c in found.items() if c is _SEVERAL]
    found = {p: c for p, c in found.items() if c is not _SEVERAL}
    if not found:
        return Finding(AMBIGUOUS, tuple(several)) if several else None
    f, what, why = next(iter(found.values()))
    claimed = [p for p, c in found.items() if c[0] == f]
    if f != 0 and facts.previous is not None and set(claimed) & facts.previous.right_before and _momentum_also_fits(
            facts, claimed):  # right at an earlier step, and momentum fits too: momentum in bfloat16 was named this
        return Finding(AMBIGUOUS, tuple(claimed))
    name = _grouped(claimed, "update")
    if f == 0:
        who = " and ".join(claimed)
        return Finding(f"skipped {name} ({who} unchanged)", tuple(claimed),
                       f"{who} {'is' if len(claimed) == 1 else 'are'} unchanged by the step although the exact update "
                       "moves it (missing optimizer.step(), or it updated a copy; at step 1 also W and b copied before "
                       "optimizer.step(), which later steps tell apart)")
    label = what or f"a factor of {f:g}"
    return Finding(f"{name} off by {label} ({why})", tuple(claimed), "the gradient is right; the step moved by that multiple of the exact update")


def _momentum_also_fits(facts: StepFacts, claimed: Sequence[str]) -> bool:
    """Whether momentum (the exact update plus beta times the previous one, beta in [MIN_BETA, 1]) fits the
    parameters ``claimed`` as well, element by element with a margin for a buffer kept in the dtype: then another
    hypothesis about the update is not told apart from it (few elements, wide bounds). False at step 1."""
    prev = facts.previous
    if prev is None:
        return False
    ratios = []
    for p in claimed:
        m = (prev.computed[p] - prev.inputs[p]).reshape(facts.computed[p].shape)
        off = facts.computed[p] - facts.exact[p]
        live = np.abs(m) > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios.append((off[live] / m[live]).ravel())
    r = np.concatenate(ratios) if ratios else np.zeros(0)
    return bool(r.size and np.all((r >= MIN_BETA / 2) & (r <= 1.5)))


def stale_gradient(facts: StepFacts) -> Finding | None:
    """The update used the previous step's gradient: ``W' = W - lr G_{t-1}`` (the gradient reported at
    step t-1). From step 2."""
    prev = facts.previous
    if prev is None:
        return None
    claimed = []
    for g, p in GRADS:
        got = _stale_hyp(facts, g, p)
        if fails(facts, g) or got is None:  # the gradient itself is right
            continue
        hyp, tol = got
        if (explained(facts, p, hyp, tol) and not fits(facts, p, facts.inputs[p], tol)  # it moved: not a skipped update
                and not any(fits(facts, p, *_update_hyp(facts, p, f)) for f, _, _ in _update_candidates(facts))):
            claimed.append(p)
    if not claimed:
        return None
    if _momentum_also_fits(facts, claimed):  # a momentum bug in bfloat16 was named this one
        return Finding(AMBIGUOUS, tuple(claimed))
    return Finding("update with the previous step's gradient", tuple(claimed),
                   f"{' and '.join(claimed)} moved by lr times step {facts.step - 1}'s gradient, not step {facts.step}'s "
                   "(update after the next backward(), or a gradient kept from the last step)")


#: Narrower formats tried for :func:`narrow_learning_rate` and :func:`narrower_dtype`, widest first.
NARROW_FORMATS = (FLOAT32, TF32, FLOAT16, BFLOAT16)

#: :func:`narrower_dtype` tries only formats at least this many bits narrower than the case's
#: (a bfloat16 bound is barely wider than a float16 one: no evidence either way).
NARROWER_BY = 8


def narrow_learning_rate(facts: StepFacts) -> Finding | None:
    """The learning rate held in a narrower dtype than the case's: ``W' = W - lr_F g`` with
    ``lr_F`` the case's ``lr`` rounded to float32, bfloat16 or float16 (a ``np.float32(lr)``, a JAX
    scalar without x64)."""
    for F in NARROW_FORMATS:
        if F.precision >= facts.fmt.precision or F is TF32:
            continue
        lr_f = float(round_to_format(np.array([facts.lr_written]), F)[0])
        if lr_f == facts.lr or not np.isfinite(lr_f):
            continue
        claimed = []
        for g, p in GRADS:
            if fails(facts, g):  # the gradient itself is right
                continue
            with np.errstate(invalid="ignore", over="ignore"):  # inf - inf where an exact value is beyond the range
                shift = (facts.lr - lr_f) * facts.exact[g].reshape(facts.computed[p].shape)
                shifted = facts.exact[p] + shift
            if explained(facts, p, shifted, tolerance(facts, p, 1.0, 0.0, facts.exact[p], shift)):
                claimed.append(p)
        if claimed:
            return Finding(f"learning rate held in {F.name}", tuple(claimed),
                           f"the update used lr = {lr_f!r} ({facts.lr_written!r} rounded to {F.name}), not the {facts.fmt.name} "
                           f"value {facts.lr!r}")
    return None


def _beta_text(x: float) -> str:
    return f"{x:.3g}"


def momentum(facts: StepFacts) -> Finding | None:
    """SGD with momentum ``beta`` (PyTorch's, dampening 0): the update is ``beta`` times the previous
    update plus ``lr g``, i.e. ``W' = W'_exact + beta (W_{t-1} - W_{t-2})`` with the previous update as
    applied. ``beta`` is estimated from all failing W and b elements (:func:`estimate`, in ``(0, 1]``).
    From step 2 (at step 1 momentum SGD is plain SGD)."""
    prev = facts.previous
    if prev is None:
        return None
    obs = Observations()
    claim = []
    u = facts.fmt.unit_roundoff
    for g, p in GRADS:
        if not fails(facts, p) or fails(facts, g):  # momentum leaves the gradient right (.grad never accumulates)
            continue
        m = (prev.computed[p] - prev.inputs[p]).reshape(facts.computed[p].shape)
        # the applied update differs from lr * buffer by one rounding of W_{t-1}; the buffer's own roundings
        tol = tolerance(facts, p, 1.0, 2 * u * (np.abs(facts.inputs[p]) + np.abs(m)), facts.exact[p], m)
        obs.add(facts.computed[p] - facts.exact[p], m, tol, p)
        claim.append(p)
    beta = estimate(obs, MIN_BETA, 1.0, NICE_BETAS) if claim else None
    if beta is None:
        return None
    # told apart from an update along one direction only: a multiple of the exact update, or of the previous one
    # (an update by the previous step's gradient, a constant factor): momentum fits, and so would those, so no
    # diagnosis may name these records (AMBIGUOUS: returning None let the other one name a momentum bug)
    for direction in ("exact", "previous"):
        along = Observations()
        for p in claim:
            m = (facts.exact[p] - facts.inputs[p] if direction == "exact"
                 else (prev.computed[p] - prev.inputs[p]).reshape(facts.computed[p].shape))
            along.add(facts.computed[p] - facts.inputs[p], m, tolerance(facts, p, 2.0, 0.0, facts.inputs[p], m), p)
        if estimate(along, -np.inf, np.inf) is not None:
            return Finding(AMBIGUOUS, tuple(claim))
    running = " (a running sum of every gradient so far: gradients accumulated into the update)" if _beta_text(beta) == "1" else ""
    return Finding(f"SGD with momentum {_beta_text(beta)}{running} (the cases model plain SGD)", tuple(claim),
                   f"each update is {_beta_text(beta)} x the previous update + lr x the exact gradient")


def _along_exact(facts: StepFacts, quantities: Sequence[str]) -> bool:
    """Whether the computed quantities are one common multiple of the exact ones (gradients) or of the
    exact update (W, b): then a parameter-shaped term cannot be told from a constant factor."""
    along = Observations()
    for q in quantities:
        base = np.zeros_like(facts.computed[q]) if q.startswith("grad") else facts.inputs[q]
        m = facts.exact[q] - base
        along.add(facts.computed[q] - base, m, tolerance(facts, q, 2.0, 0.0, base, m), q.removeprefix("grad_"))
    return estimate(along, -np.inf, np.inf) is not None


def l2_penalty(facts: StepFacts) -> Finding | None:
    """An L2 penalty (weight decay) ``lambda``: the gradient is ``g + lambda W`` (penalty in the loss)
    or the update is ``W - lr (g + lambda W)`` (``weight_decay`` of the optimizer), with ``0 < lambda <= 1``
    estimated from the failing gradient, W and b elements (:func:`estimate`). Tried with the penalty on
    W and b, then on W alone."""
    u = facts.fmt.unit_roundoff
    for params in (("W", "b"), ("W",)):
        obs = Observations()
        claim = []
        for g, p in GRADS:
            if p not in params:
                continue
            w = facts.inputs[p]
            if fails(facts, g):
                obs.add(facts.computed[g] - facts.exact[g], w, tolerance(facts, g, 1.0, u * np.abs(facts.computed[g] - facts.exact[g]), w), p)
                claim.append(g)
            if fails(facts, p):
                with np.errstate(over="ignore"):  # a huge lr times w: inf, as the step's own product would be
                    m = -facts.lr * w
                obs.add(facts.computed[p] - facts.exact[p], m, tolerance(facts, p, 1.0, u * np.abs(m), facts.exact[p], m), p)
                claim.append(p)
        if not claim or (params == ("W",) and (fails(facts, "grad_b") or fails(facts, "b"))):
            continue
        lam = estimate(obs, 0.0, MAX_LAMBDA)
        if lam is not None and not _along_exact(facts, claim):
            where = "W and b" if params == ("W", "b") else "W only"
            return Finding(f"an L2 penalty (weight decay) {lam:.3g} (the cases model none)", tuple(claim),
                           f"gradient or update as with lambda = {lam:.3g} on {where}")
    return None


def relayout(a: F64) -> F64:
    """A (D, K) array as a (K, D) array holding its transpose reads when reshaped to (D, K)
    (``a.T.reshape(D, K)``: an ``nn.Linear`` weight returned with ``reshape`` instead of ``.T``)."""
    return np.ascontiguousarray(a.T).reshape(a.shape)


def unrelayout(a: F64) -> F64:
    """The inverse of :func:`relayout`."""
    d, k = a.shape
    return np.ascontiguousarray(a.reshape(k, d).T)


def transposed_layout(facts: StepFacts) -> Finding | None:
    """W or grad_W holds the right values in the transposed layout (:func:`relayout`). From step 2
    the harness fed the relaid W back as the step's input while the implementation kept its own, so
    the step is regraded at the implementation's W (``unrelayout`` of the input) and its loss,
    gradients and update compared (grad_W and W relaid). Only for D, K > 1."""
    _, d, k = facts.shape
    if d == 1 or k == 1:
        return None
    if facts.step == 1 or facts.previous is None:
        ex, rig = dict(facts.exact), dict(facts.rigorous)
    else:
        got = _regrade(facts, {**facts.inputs, "W": unrelayout(facts.inputs["W"])}, facts.lr, facts.fmt)
        if got is None:
            return None
        ex, rig = got
    at = dataclasses.replace(facts, rigorous={q: relayout(v) if q in ("grad_W", "W") else v for q, v in rig.items()},
                             transformed=None)
    claimed = []
    for q in ("loss", "grad_W", "grad_b", "W", "b"):
        hyp = relayout(ex[q]) if q in ("grad_W", "W") else ex[q]
        if explained(facts, q, hyp, tolerance(at, q, 1.0, 0.0, hyp)):
            claimed.append(q)
    if not any(q in ("grad_W", "W") for q in claimed):
        return None
    return Finding("parameters in the transposed layout (reshape instead of .T)", tuple(claimed),
                   "grad_W and W hold the exact values of the (K, D) transpose, read in (D, K) order")


def in_format(values: F64, fmt: FloatFormat) -> bool:
    """Every element of ``values`` is finite and a number of ``fmt`` (rounding it to ``fmt`` changes nothing)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return bool(np.isfinite(values).all() and np.array_equal(round_to_format(values, fmt), values))


def narrower_dtype(facts: StepFacts) -> Finding | None:
    """Computed in a narrower dtype than the case's. Only where the loss or a gradient fails (an
    update alone wrong is another bug); tried widest first.

    - float32, bfloat16, float16 (F): every element of the failing records is within the rigorous
      bound of a step in F at the inputs rounded to F (not within the case dtype's), **and** the
      loss or a gradient holds numbers of F only (what a computation in F, cast back, returns). The
      second test is the fingerprint: F's bound is wide (``N u_F`` relative in a long reduction), so
      without it a gradient off by 10% in a float64 case would be named "computed in bfloat16".
    - TF32 (float32 cases; the mode of float32 matmuls that rounds their inputs to 11 significant
      bits and accumulates in float32): every element within **float32's** rigorous bound of a
      step at X and W rounded to TF32.
    """
    failing = [q for q in ("loss", "grad_W", "grad_b", "W", "b") if fails(facts, q)]
    if not any(q in ("loss", "grad_W", "grad_b") for q in failing):
        return None  # a narrower computation shows before the update: W or b alone wrong is something else
    if facts.transformed is not None and not any(fails(dataclasses.replace(facts, rigorous=facts.transformed), q)
                                                 for q in failing):
        return None  # failing only a bound of 0 (an exact reduction): any rounding fails it, no dtype is told apart
    for F in NARROW_FORMATS:
        if F.precision > facts.fmt.precision - NARROWER_BY or (F is TF32 and facts.fmt.name != "float32"):
            continue  # TF32 is a mode of float32 matmuls; float16 is told from it by its fingerprint
        if F is not TF32 and not any(in_format(facts.computed[q], F) for q in ("loss", "grad_W", "grad_b") if q in failing):
            continue  # no returned value of the loss or a gradient is of F only: not a computation in F
        with np.errstate(over="ignore"):
            if F is TF32:  # matmul inputs rounded, everything else (and the bound) float32
                rounded = {k: round_to_format(facts.inputs[k], F) if k in ("X", "W") else facts.inputs[k] for k in ("X", "y", "W", "b")}
                lr_f, grade_fmt = facts.lr, facts.fmt
            else:
                rounded = {k: round_to_format(facts.inputs[k], F) for k in ("X", "y", "W", "b")}
                lr_f, grade_fmt = float(round_to_format(np.array([facts.lr_written]), F)[0]), F
        if not (all(np.isfinite(v).all() for v in rounded.values()) and np.isfinite(lr_f)):
            continue
        got = _regrade(facts, rounded, lr_f, grade_fmt)
        if got is None:
            continue
        ex, rig = got
        with np.errstate(invalid="ignore", over="ignore"):
            fit = [q for q in failing
                   if fits(facts, q, ex[q], rig[q] + facts.fmt.unit_roundoff * np.abs(facts.computed[q]) + F64_SLACK * np.abs(ex[q]))]
        if F is TF32:
            # the gradient's matmul also rounds R to tf32, which this model leaves out: the records it fits are named
            if any(q in ("loss", "grad_W", "grad_b") for q in fit):
                return Finding("computed with TF32 matmuls (inputs rounded to 11 significant bits)", tuple(fit),
                               "every element is within float32's rigorous bound of a step at X and W rounded to tf32")
            continue
        if fit == failing:
            return Finding(f"computed in {F.name} (narrower than the case's {facts.fmt.name})", tuple(failing),
                           f"the values are {F.name} numbers, each within {F.name}'s rigorous bound at the inputs "
                           f"rounded to {F.name}, not within {facts.fmt.name}'s")
    return None


#: The hypotheses: each is asked, and a record is named only when exactly one diagnosis explains it.
HYPOTHESES: tuple[Hypothesis, ...] = (
    accumulation, reported_before_update, gradient_factor, stale_gradient, update_factor,
    narrow_learning_rate, momentum, l2_penalty, transposed_layout,
)

#: Hypotheses that contain others (a narrower dtype's bound covers many small bugs): asked, in
#: order, only for records that no hypothesis of :data:`HYPOTHESES` explains.
FALLBACKS: tuple[Hypothesis, ...] = (narrower_dtype,)

#: The prefix of a message the runner wrote for a record that flushing subnormals explains.
FLUSH_TO_ZERO = "flush-to-zero: "

#: The diagnosis of such a record.
FLUSHED = "subnormals flushed to zero (FTZ/DAZ)"


def findings(facts: StepFacts, hypothesis: Hypothesis) -> list[Finding]:
    """Everything one hypothesis explains in a step: it is asked again, without the records it
    already explained, while it explains more (a factor of 1/N for grad_b, then of 1/2 for grad_W).
    A hypothesis that cannot evaluate the values (an arithmetic or value error) finds nothing."""
    out: list[Finding] = []
    left = set(facts.failing)
    while left:
        try:
            found = hypothesis(dataclasses.replace(facts, failing=frozenset(left)))
        except (ArithmeticError, ValueError, IndexError):  # values beyond what a hypothesis can evaluate: no finding;
            break  # a diagnosis must never turn a graded record into an error
        claimed = [q for q in (found.quantities if found else ()) if q in left]
        if found is None or not claimed:
            break
        out.append(dataclasses.replace(found, quantities=tuple(claimed)))
        left -= set(claimed)
    return out


def diagnose_step(records: Sequence[Any], facts: StepFacts, hypotheses: Sequence[Hypothesis] = HYPOTHESES,
                  fallbacks: Sequence[Hypothesis] = FALLBACKS) -> StepFacts:
    """Name the likely bug of each ``disagree`` record of one step (in place).

    Every hypothesis of ``hypotheses`` is asked (:func:`findings`); a record explained by exactly
    one diagnosis gets it, a record that two different diagnoses explain gets none (the data cannot
    tell them apart: few elements, wide bounds), as does one a hypothesis marks :data:`AMBIGUOUS`, and a record no hypothesis explains is offered to
    ``fallbacks`` in order (the first that explains it names it). A named record gets ``diagnosis``
    and its message is prefixed with ``"looks like: <diagnosis>; <detail>; "``. A record the runner
    found explained by flushing subnormals (its ``"flush-to-zero: "`` message) gets the diagnosis
    :data:`FLUSHED` (its message unchanged) and no other. Verdicts are never changed.

    Args:
        records: the step's records (one per quantity; objects with ``quantity``, ``verdict``,
            ``message`` and ``diagnosis``).
        facts: the step (its ``failing`` is filled here).
        hypotheses: the hypotheses (default :data:`HYPOTHESES`).
        fallbacks: hypotheses for records no other explains, in order (default :data:`FALLBACKS`).

    Returns:
        the facts to pass as ``previous`` to the next step (without their own ``previous``).
    """
    open_: dict[str, Any] = {}
    for r in records:
        if r.verdict != "disagree" or r.diagnosis:
            continue
        if r.message.startswith(FLUSH_TO_ZERO):
            r.diagnosis = FLUSHED  # its message already says so; a flushed value also looks like a zero gradient
            continue
        open_[r.quantity] = r
    if open_:
        step = dataclasses.replace(facts, failing=frozenset(open_))
        by_q: dict[str, dict[str, Finding]] = {}
        for hyp in hypotheses:
            for found in findings(step, hyp):
                for q in found.quantities:
                    by_q.setdefault(q, {}).setdefault(found.diagnosis, found)
        for q, found_for in by_q.items():
            if len(found_for) == 1 and AMBIGUOUS not in found_for:
                _name(open_.pop(q), next(iter(found_for.values())))
            else:
                open_.pop(q)  # ambiguous: named by no one
        for hyp in fallbacks:
            for found in (findings(dataclasses.replace(facts, failing=frozenset(open_)), hyp) if open_ else []):
                for q in found.quantities:
                    _name(open_.pop(q), found)
    failing = _replaced(facts, failing=frozenset(r.quantity for r in records if r.verdict == "disagree"))
    right = frozenset(q for q in facts.computed if q in facts.exact and q in facts.rigorous and not fails(failing, q))
    before = facts.previous.right_before if facts.previous is not None else frozenset()
    return _replaced(facts, failing=frozenset(), previous=None, right_before=before | right)


def _replaced(facts: StepFacts, **changes: Any) -> StepFacts:
    """``dataclasses.replace(facts, **changes)`` of a :class:`StepFacts` (no ``__post_init__``, every field set by
    ``__init__``: the same fields, the same values), without its per-field ``__init__`` calls (every graded step
    makes two)."""
    if type(facts) is not StepFacts:  # a subclass: its own __init__
        return dataclasses.replace(facts, **changes)
    new = object.__new__(StepFacts)
    fields = new.__dict__
    fields.update(facts.__dict__)
    fields.update(changes)
    return new


def _name(rec: Any, found: Finding) -> None:
    rec.diagnosis = found.diagnosis
    rec.message = f"{LOOKS_LIKE}{found.diagnosis}; " + (f"{found.detail}; " if found.detail else "") + rec.message
