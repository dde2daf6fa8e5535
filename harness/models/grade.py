"""Grading a model step: reading what a model implementation returned, and the records of each step.

For a case with a ``model``, :func:`harness.runner.check_case` calls the implementation with the model
contract (:mod:`harness.models.step`), reads its results with :func:`read_model_steps`, and hands them
to :func:`grade_model_steps`: every quantity of every step (``loss``, ``grad_<p>``, ``<p>``) is
compared (:func:`harness.compare.compare`, the one comparison) with the exact-grade truth of the plan
(:mod:`harness.models.oracle`) at the implementation's own previous parameters, against the bounds
derived from the plan (:mod:`harness.models.bounds`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt

from ..bounds import lower_limits
from ..compare import below_floor_text, bound_ratio_text, compare
from ..floats import FloatFormat, decimal_string
from ..records import Record
from ..results import read_quantity
from .bounds import FUNCTION_ULPS, model_bounds
from .oracle import model_truth
from .plan import build_plan
from .spec import ModelSpec, kink_derivative

F64 = npt.NDArray[np.float64]


def _read_one(value: Any, what: str, want: tuple[int, ...], fmt: FloatFormat, framework: str | None) -> F64 | str:
    """``value`` as a float64 array of shape ``want``, or why it cannot be graded (:func:`harness.results.read_quantity`)."""
    if value is None:
        return f"{what} is None: return its value (a tensor or array in the case's dtype)"
    return read_quantity(value, what, want, fmt, framework)


def read_model_steps(results: Any, spec: ModelSpec, steps: int, shape: tuple[int, int, int], fmt: FloatFormat,
                     framework: str | None) -> list[dict[str, F64]] | str:
    """Every step's quantities as float64 arrays ``{"loss": ..., "grad_W1": ..., "W1": ...}``, or why not.

    Args:
        results: what the step function returned (already collected into a list).
        spec: the case's model; shape: ``(N, D, K)``; fmt: the case's dtype.

    Returns:
        one dict per step (keys :meth:`ModelSpec.quantities`), or a message naming the step and field.
    """
    n, d, k = shape
    shapes = spec.parameter_shapes(d, k)
    if not isinstance(results, list | tuple):
        return f"expected a list of harness.models.ModelStepResult, got {type(results).__name__}"
    if len(results) != steps:
        return f"expected {steps} ModelStepResult(s), one per step, got {len(results)}"
    outs: list[dict[str, F64]] = []
    for t, res in enumerate(results, start=1):
        out: dict[str, F64] = {}
        for field in ("loss", "grads", "params"):
            if not hasattr(res, field):
                return (f"step {t}: result has no field {field!r} "
                        "(return harness.models.ModelStepResult(loss, grads={name: ...}, params={name: ...}))")
        got = _read_one(res.loss, f"step {t}: loss", (), fmt, framework)
        if isinstance(got, str):
            return got
        out["loss"] = got
        for field, prefix in (("grads", "grad_"), ("params", "")):
            table = getattr(res, field)
            if not isinstance(table, Mapping):
                return f"step {t}: {field} must be a mapping {{name: array}}, got {type(table).__name__}"
            missing = [p for p in shapes if p not in table]
            if missing:
                return f"step {t}: {field} has no {missing[0]!r} (expected {list(shapes)})"
            extra = [p for p in table if p not in shapes]
            if extra:  # a parameter of another model (a third layer, a misspelt name): not the declared model's step
                return (f"step {t}: {field} has {extra[0]!r}, which is not a parameter of the model "
                        f"{spec.describe()} (expected exactly {list(shapes)})")
            for p, want in shapes.items():
                got = _read_one(table[p], f"step {t}: {field}[{p!r}]", want, fmt, framework)
                if isinstance(got, str):
                    return got
                out[prefix + p] = got
        outs.append(out)
    return outs


def _finite_impossible(bounds: Any, q: str, unknown: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_] | None:
    """Where no correct evaluation of ``q`` is finite (:attr:`harness.models.bounds.ModelBounds.finite_impossible`),
    leaving out the elements whose exact value is not enclosed; None where nowhere."""
    imposs = (getattr(bounds, "finite_impossible", None) or {}).get(q)
    if imposs is None:
        return None
    imposs = np.asarray(imposs, dtype=bool) & ~unknown
    return imposs if bool(imposs.any()) else None


def _message(q: str, cmp: Any, fmt: FloatFormat, never_finite: bool = False, lower: float | None = None) -> str:
    if cmp.verdict == "agree":
        return ""
    floor = below_floor_text(q, cmp, lower)
    if floor:
        return floor
    bad = cmp.counts.get(cmp.verdict, 0)
    what = {"disagree": "above the rigorous error bound", "suspect": "above the expected bound but within the rigorous one",
            "overflow": f"out of {fmt.name}'s range"}.get(cmp.verdict, cmp.verdict)
    rig = cmp.rigorous_at_worst
    if cmp.verdict == "disagree" and np.isinf(cmp.computed_at_worst):
        what = "infinite with a sign no correct evaluation gives"
        ratio = f"no correct {fmt.name} evaluation gives {cmp.computed_at_worst!r} here: harness.models.bounds.signed_infinities"
    elif never_finite and cmp.verdict == "disagree" and np.isfinite(cmp.computed_at_worst):
        what = "finite where no correct evaluation is"
        ratio = (f"the exact value is beyond {fmt.name}'s range and every correct {fmt.name} evaluation gives inf or NaN "
                 "there: no finite value is within the rigorous bound")
    else:
        ratio = bound_ratio_text(cmp.abs_error_at_worst, rig)
    return (f"{q}: {bad} of {cmp.size} element(s) {what}; worst at {list(cmp.worst_index)}: computed {cmp.computed_at_worst!r}, "
            f"exact {cmp.exact_at_worst!r}, error {cmp.abs_error_at_worst:.6g} ({ratio}), {cmp.ulp_error_at_worst:.4g} ULPs")


def _join(a: str, b: str) -> str:
    return f"{a}; {b}" if a and b else a or b


def grade_model_steps(
    spec: ModelSpec, base: Mapping[str, Any], outs: Sequence[Mapping[str, F64]], seen: Mapping[str, F64], lr: Fraction,
    reduction: str, fmt: FloatFormat, *, flush_to_zero: bool = False, half_flush: bool = True,
    function_ulps: Mapping[str, float] | None = None,
    graded: dict[int, Any] | None = None,
) -> list[Record]:
    """The records of every step of a model implementation.

    Args:
        spec: the case's model.
        base: the fields every record of this run carries (case, implementation, device, dtype, ...).
        outs: per step, the implementation's quantities as float64 (:func:`read_model_steps`).
        seen: the inputs as the implementation saw them (floats of ``fmt``, as float64): ``X``, ``y``
            and every parameter.
        lr: the learning rate as written (the truth uses it rounded to ``fmt``, as the step holds it).
        reduction: ``"sum"`` or ``"mean"``.
        fmt: the dtype computed in.
        flush_to_zero: grade with the flush-to-zero underflow terms (the implementation declares FTZ).
        half_flush: float16 and bfloat16 may flush without a declaration (False: a probe found that the step's
            framework does not; :func:`harness.models.bounds.model_bounds`).
        function_ulps: the accuracy of elementary functions, overriding :data:`harness.models.bounds.FUNCTION_ULPS`.
        graded: when given, filled with ``{step: ({q: (hi, lo)}, {q: rigorous bound}, {q: lower limit})}`` for
            every graded step (the lower limit of the loss: :meth:`harness.bounds.LossFloor.lower_limit`, where the
            step has a floor; ``--repeat`` grades the other runs against them: :func:`harness.repeat.apply_repeat`).

    Returns:
        per step, one record per quantity of :meth:`ModelSpec.quantities` (``"*"`` records where a step
        cannot be graded: parameters not finite after the previous step).
    """
    n, d = seen["X"].shape
    k = seen["y"].shape[1]
    names = spec.parameter_names(d, k)
    graph = build_plan(spec, n, d, k, reduction, lr)
    prev = {p: np.asarray(seen[p], dtype=np.float64) for p in names}
    records: list[Record] = []
    for t, out in enumerate(outs, start=1):
        if not all(bool(np.isfinite(v).all()) for v in prev.values()):
            records.append(Record(quantity="*", step=t, verdict="overflow",
                                  message=f"the parameters after step {t - 1} are not finite; later steps are not graded", **base))
            break
        inputs = {"X": seen["X"], "y": seen["y"], **prev}
        try:
            truth = model_truth(graph, inputs, fmt)
        except ValueError as exc:  # the model itself is undefined there (an expression's exact division by 0)
            where = "at the case's inputs" if t == 1 else f"at the parameters after step {t - 1}"
            records.append(Record(quantity="*", step=t, verdict="invalid-input",
                                  message=f"the model's step is undefined {where}: {exc}; not graded", **base))
            break
        bounds = model_bounds(graph, truth.node_values, fmt, function_ulps=function_ulps,
                              flush_to_zero=flush_to_zero, half_flush=half_flush,
                              residual_radius=truth.residual_radius, loss_radius=float(truth.radius["loss"]))
        step_truth: dict[str, tuple[tuple[F64, F64], F64]] = {}
        limits = lower_limits(bounds)
        for q in graph.outputs:
            hi, lo = truth.hi[q], truth.lo[q]
            radius = truth.radius[q]
            # the truth is an enclosure of width 2 radius around hi + lo: the bounds are
            # narrowed by it, so that no value outside the bound of the true value can agree
            # (an infinite radius is a value the truth could not enclose -- NaN ball: not graded there)
            unknown = ~np.isfinite(radius)
            with np.errstate(invalid="ignore"):  # inf - inf where the truth is undefined: replaced below
                rig = np.where(unknown, np.inf, np.maximum(bounds.rigorous[q] - radius, 0.0))
                exp = np.where(unknown, np.inf, np.maximum(bounds.expected[q] - radius, 0.0))
            hi = np.where(unknown, 0.0, hi)
            lo = np.where(unknown, 0.0, lo)
            # where no correct evaluation is finite (harness.models.bounds.never_finite), a finite result is
            # wrong whatever the bound (it may be vacuous past an overflow): bounds of 0 there, set only where
            # the result is finite (the records of inf and NaN results are unchanged); compare's
            # finite_impossible alone acts only where the exact value is beyond float64. --repeat grades the
            # other runs against 0 there (step_rig)
            imposs = _finite_impossible(bounds, q, unknown)
            if imposs is not None:
                finite_there = imposs & np.isfinite(out[q])
                step_rig = np.where(imposs, 0.0, rig)
                rig = np.where(finite_there, 0.0, rig)
                exp = np.where(finite_there, 0.0, exp)
            else:
                step_rig = rig
            # an infinity of a sign no correct evaluation produces is disagree (harness.models.bounds.signed_infinities)
            pinf, ninf = bounds.signed_inf_allowed(q)
            # a finite loss below the least value any correct evaluation gives is disagree (the loss's floor,
            # harness.models.bounds.model_loss_floor; formed only where the loss is below its ceiling)
            lower = limits[q](out[q]) if q in limits else None
            cmp = compare(out[q], hi, lo, rig, exp, np.asarray(bounds.inf_allowed[q]) | unknown, fmt,
                          nan_allowed=np.asarray(bounds.nan_allowed[q]) | unknown,
                          posinf_allowed=np.asarray(pinf) | unknown, neginf_allowed=np.asarray(ninf) | unknown,
                          finite_impossible=imposs, lower_limit=lower)
            step_truth[q] = ((hi, lo), step_rig)
            idx = cmp.worst_index
            exact_at = Fraction(float(hi[idx])) + Fraction(float(lo[idx])) if np.isfinite(hi[idx]) else float(hi[idx])
            msg = _message(q, cmp, fmt, imposs is not None and bool(imposs[idx]), lower)
            verdict = cmp.verdict
            if unknown.size and bool(unknown.all()):
                # nothing of this quantity graded: unsupported (the harness cannot grade it), never agree (it was agree,
                # with an exact value of 0 shown, and a run of such records passed: helper-73); not invalid-input either:
                # a correct step fails nothing here (the oracle's own formula can be 0/0 where the limit is finite, a
                # doubly exponential value can need more than 4096 bits: helper-74)
                verdict, exact_at = "unsupported", math.nan
                msg = (f"{q}: not graded: the exact value is undefined, or could not be enclosed at "
                       f"{truth.precision_bits} bits, at every element ({unknown.size})")
            else:
                if bool(unknown.any()):
                    msg = _join(msg, f"{q}: the exact value is undefined or could not be enclosed at {int(unknown.sum())} "
                                     "element(s): not graded there")
                if bool((truth.undecided[q] & ~unknown).any()):
                    msg = _join(msg, f"{q}: the exact value's enclosure straddles a rounding boundary of {fmt.name} at "
                                     f"{int((truth.undecided[q] & ~unknown).sum())} element(s): its correctly rounded value "
                                     "is not decided")
                if bool(truth.kink[q].any()):
                    msg = _join(msg, f"{q}: {int(truth.kink[q].sum())} element(s) depend on an activation argument exactly "
                                     f"at its kink ({_kink_convention(spec)})")
            note = getattr(bounds, "notes", {}).get(q, "")
            msg = _join(msg, note)
            rec = Record(
                quantity=q, step=t, verdict=verdict, shape=list(out[q].shape),
                max_abs_error=cmp.max_abs_error, max_ulp_error=cmp.max_ulp_error, bits_of_error=cmp.bits_of_error,
                bound_ratio=cmp.bound_ratio if np.isfinite(cmp.rigorous_at_worst) or cmp.max_abs_error == 0 else None,
                expected_ratio=cmp.expected_ratio, worst_index=list(idx),
                exact=decimal_string(exact_at), computed=repr(float(out[q][idx])),
                rigorous_bound=cmp.rigorous_at_worst, expected_bound=cmp.expected_at_worst,
                abs_error_at_worst=cmp.abs_error_at_worst, ulp_error_at_worst=cmp.ulp_error_at_worst,
                counts=cmp.counts, oracle_method=_method(truth, bounds, graph), message=msg,
                # the floor where it was formed and graded (Record.lower_limit; not where nothing was: unsupported)
                lower_limit=(lower or None) if verdict != "unsupported" else None, **base,
            )
            records.append(rec)
        if graded is not None:
            graded[t] = ({q: v[0] for q, v in step_truth.items()}, {q: v[1] for q, v in step_truth.items()}, limits)
        prev = {p: out[p] for p in names}
    return records


def constants_beyond_range(spec: ModelSpec, n: int, d: int, k: int, reduction: str, lr: Fraction | str | float,
                           fmt: FloatFormat) -> list[str]:
    """The constants of the model's forward pass (an expression's numbers, ``a*1e39*x1``) whose magnitude is above
    ``fmt``'s largest finite value, as text: a step holds them as ``inf`` once rounded (or torch refuses the
    conversion), like a learning rate beyond the dtype's range, so the case is ``invalid-input`` in ``fmt``
    (:func:`harness.runner.check_case`). The grading of such a constant was a harness failure, an ``error`` record
    for a correct step (``float(Fraction)`` of 1e400 overflowed; 1e39 in float32 was inf: helper-176).

    Args: as :func:`harness.models.plan.build_plan` (N, D, K, the reduction, the learning rate) and the dtype."""
    graph = build_plan(spec, n, d, k, reduction, lr)
    big = Fraction(fmt.max_finite)
    out = []
    for node in graph.nodes:
        if node.op == "const" and node.role == "forward" and not node.attrs.get("held"):
            v = Fraction(node.attrs["value"])
            if abs(v) > big:
                mag = math.log10(abs(v.numerator)) - math.log10(v.denominator)
                out.append(f"the model's constant {float(v):g}" if mag < 308 else
                           f"the model's constant {'-' if v < 0 else ''}10^{mag:.1f}")
    return out


def _kink_convention(spec: ModelSpec) -> str:
    """``"ReLU at 0: graded with the convention derivative = 0 there (torch's is 0)"`` for the spec's activation
    (:func:`harness.models.spec.kink_derivative`); an expression's ``Abs`` is graded with derivative 0."""
    act = spec.activation
    if act not in ("relu", "leaky_relu"):
        return "Abs at 0: graded with the derivative 0 there (torch's sign(0) = 0)"
    name = "ReLU" if act == "relu" else f"leaky ReLU (slope {spec.negative_slope})"
    ours = kink_derivative(act, spec.negative_slope, spec.relu_grad_at_zero)
    torch_s = kink_derivative(act, spec.negative_slope, Fraction(0))
    return f"{name} at 0: graded with the convention derivative = {ours} there (torch's is {torch_s})"


def _method(truth: Any, bounds: Any, graph: Any) -> str:
    """The oracle's method, and the elementary-function accuracy the bounds assumed where the plan
    has a transcendental function: the documented table, and any override or addition by name."""
    smooth = any(node.op in ("fn", "fn_grad") and node.attrs.get("fn") not in ("relu", "leaky_relu", "abs")
                 for node in graph.nodes)
    if not smooth:
        return str(truth.method)
    changed = {f: u for f, u in (bounds.function_ulps or {}).items() if FUNCTION_ULPS.get(f) != u}
    extra = "; overridden: " + ", ".join(f"{f} {u:g} ULP" for f, u in sorted(changed.items())) if changed else ""
    return f"{truth.method}; bounds assume elementary functions to harness.models.bounds.FUNCTION_ULPS{extra}"
