"""Run implementations on cases and grade them against the exact oracle.

Data flows one way: case -> (oracle, implementation) -> compare -> records.
Each step is checked *locally*: the oracle is fed the implementation's own W
and b from the previous step. The drift of W and b from the exact trajectory
(exact updates from the initial inputs) is reported separately in the W and
b records (``drift_abs_error``, ``drift_ulp_error``).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import os
import shlex
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt

from . import interpreter_state
from .bounds import TYPICAL_LANES, flush_to_zero_default, lower_limits, step_bounds
from .cases import Case, CaseSource, as_cases, lr_held
from .classify import classify_exception
from .compare import FailingElements, below_floor_text, bound_ratio_text, compare, compare_many, drift_no_errstate, failing_elements
from .devices import parse_devices
from .diagnose import StepFacts, diagnose_step
from .errors import ErrorModelError, UsageError
from .exact import Difference, ScaledInts
from .floats import FloatFormat, decimal_string, get_format, ulp_error
from .fpenv import FPEnvironmentError, describe_numpy_errors, ieee_default, restore_default, restore_numpy_errors
from .frameworks import (
    FrameworkInputError,
    flushes_subnormals,
    jax_switches,
    to_framework,
    torch_switches,
    unsupported_reason,
)
from .frameworks.dispatch import NATIVE
from .implementations import Implementation, implementation_of, known_bug_of, resolve
from .isolation import exit_call_guard, mutated_inputs, mutation_message, native_copies, reraise_real_interrupt, same_bits, snapshot
from .models.grade import constants_beyond_range, grade_model_steps, read_model_steps
from .models.spec import model_rule_mismatch
from .optim.config import optimizer_keyword, rule_mismatch
from .optim.grade import finite_state, grade_update, read_state, split_state
from .optim.oracle import exact_trajectory as optimizer_trajectory
from .oracle import (
    ExactStep,
    exact_inputs_from_floats,
    exact_inputs_from_written,
    exact_step,
    exact_trajectory,
    scaled_radius,
)
from .records import KNOWN_BUG, Record
from .results import StepResultsError, collect_steps, read_quantity
from .semantics import annotate, none_message
from .timeouts import check_timeout_isolation
from .verdicts import QUANTITIES, failing_verdicts

F64 = npt.NDArray[np.float64]
Progress = Callable[[int, int, str], None]


@dataclass
class RunOptions:
    """Settings of a run that every record carries.

    Attributes:
        tf32: allow TF32 for float32 matmuls on CUDA (through
            ``torch.set_float32_matmul_precision("high")``, which sets
            ``torch.backends.cuda.matmul.allow_tf32``).
        matmul_precision: ``torch.set_float32_matmul_precision`` value
            (``"highest"``, ``"high"``, ``"medium"``).
        repro_cases: case-file paths to name in repro commands (default: each case's source).
        trajectory: compute the exact trajectory and report drift.
        repeat: run each implementation this many times on the same inputs
            (fresh copies each time) and record run-to-run determinism
            (see :mod:`harness.repeat`); 1 = once.
        flush_to_zero: every implementation of this run declares that it may flush
            subnormal inputs, intermediates and results to zero (``--flush-to-zero``):
            graded with the flush-to-zero bounds in every dtype (see
            :mod:`harness.bounds`; float16 and bfloat16 always are).
    """

    tf32: bool = False
    matmul_precision: str = "highest"
    trajectory: bool = True
    extra_repro: list[str] = field(default_factory=list)
    repeat: int = 1
    flush_to_zero: bool = False

    @property
    def effective_matmul_precision(self) -> str:
        """The ``torch.set_float32_matmul_precision`` value the run uses: ``"high"``
        when TF32 is asked for with ``"highest"`` (in torch, ``"highest"`` turns
        ``allow_tf32`` off again, and mixing the two APIs is an error)."""
        return "high" if self.tf32 and self.matmul_precision == "highest" else self.matmul_precision

    @property
    def effective_tf32(self) -> bool:
        """Whether CUDA float32 matmuls may use TF32 (precision ``"high"`` or ``"medium"``)."""
        return self.effective_matmul_precision != "highest"


def _shape_of(name: str, n: int, d: int, k: int) -> tuple[int, ...]:
    return {"loss": (), "grad_W": (d, k), "grad_b": (k,), "W": (d, k), "b": (k,)}[name]


def python_command() -> str:
    """The interpreter as a user types it: ``.venv/bin/python`` when this one is the virtual
    environment ``.venv`` of the current directory (the README's set-up), else ``python``. Found once per
    directory and interpreter (:func:`_python_in`: two ``stat`` calls, a tenth of a millisecond that every check
    paid for its records' ``repro``); a ``.venv`` made or removed in that directory later in the process is not seen."""
    import os
    import sys

    return _python_in(os.getcwd(), sys.prefix, sys.base_prefix)


@functools.lru_cache(maxsize=16)
def _python_in(cwd: str, prefix: str, base_prefix: str) -> str:
    """:func:`python_command` in the directory ``cwd`` for the interpreter of ``sys.prefix`` ``prefix`` and
    ``sys.base_prefix`` ``base_prefix``."""
    import os

    venv = os.path.join(cwd, ".venv")
    try:
        if prefix != base_prefix and os.path.samefile(prefix, venv):
            return os.path.join(".venv", "bin", "python")
    except OSError:
        pass
    return "python"


def repro_command(case: Case, impl: str, device: str, dtype: str, extra: Sequence[str] = ()) -> str:
    """One shell line that re-runs exactly this check (from the directory the run started in).

    A generated case is found again with the tier that holds it (``--all``, or ``--tier large`` for
    a ``tier = "large"`` table's case, tagged ``large``): the quick tier keeps one case per table."""
    source = case.source if case.source and case.source != "<memory>" else None
    tier = None if source is None or "generated" not in case.tags else ("large" if "large" in case.tags else "all")
    return _repro(python_command(), source, tier, case.id, impl, device, dtype, tuple(extra))


@functools.lru_cache(maxsize=1024)
def _repro(python: str, source: str | None, tier: str | None, case_id: str, impl: str, device: str, dtype: str,
           extra: tuple[str, ...]) -> str:
    """:func:`repro_command`'s line, of strings only (kept: a check's records, and every dtype and device of a
    case, repeat it; ``shlex.join`` was a tenth of a small check's record-making)."""
    parts = [python, "-m", "harness", "check"]
    if source is not None:
        parts += ["--cases", source]
        if tier is not None:
            parts += ["--tier", "large"] if tier == "large" else ["--all"]
    parts += ["--case", case_id, "--implementations", impl, "--devices", device, "--dtypes", dtype, *extra]
    return shlex.join(parts)


def _rational(value: Fraction) -> str | None:
    if value.numerator.bit_length() + value.denominator.bit_length() > 300:  # over 80 digits: never converted (a
        return None  # lower sys.set_int_max_str_digits made the conversion raise, an error record for a correct step)
    s = f"{value.numerator}/{value.denominator}" if value.denominator != 1 else str(value.numerator)
    return s if len(s) <= 80 else None


#: Graded steps a :class:`CaseCache` keeps (the most recent ones).
STEPS_KEPT = 32


def inputs_digest(arrays: Mapping[str, F64]) -> bytes:
    """A digest of float64 arrays' names, shapes and bytes (BLAKE2b): equal digests, equal inputs."""
    h = hashlib.blake2b(digest_size=20)
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name], dtype=np.float64)
        h.update(f"{name}{a.shape}".encode())
        h.update(a.data)
    return h.digest()


class CaseCache:
    """Exact results shared by every implementation of one case: the exact trajectory from the inputs each
    dtype and device sees, the exact step of the inputs as written, and each graded step's exact values and
    bounds (:meth:`step_graded`), which implementations that hold the same parameters at a step share."""

    def __init__(self, case: Case) -> None:
        self.case = case
        self._written: ExactStep | None = None
        self._traj: dict[tuple[Any, ...], list[ExactStep]] = {}
        self._seen: dict[tuple[Any, ...], tuple[Mapping[str, F64], Fraction]] = {}
        self._steps: dict[tuple[Any, ...], Any] = {}
        self._inputs: list[Mapping[str, F64]] = []

    def serves(self, case: Case) -> bool:
        """Whether this cache's exact results are those of ``case``: the same object, or a case with the same
        id, source, learning rate, steps, reduction, optimizer, model and values (bit for bit) and written values
        (a worker unpickles a new object per task; cases built in code share the source ``"<memory>"``, and their
        ids may repeat)."""
        c = self.case
        if c is case:
            return True
        try:
            same = ((c.id, c.source, c.lr, c.steps, c.reduction, c.optimizer, c.model)
                    == (case.id, case.source, case.lr, case.steps, case.reduction, case.optimizer, case.model))
            same = same and c.values.keys() == case.values.keys() and all(
                same_bits(np.asarray(c.values[k], dtype=np.float64), np.asarray(case.values[k], dtype=np.float64)) for k in c.values)
            if same and (c.written is None) != (case.written is None):
                return False
            if same and c.written is not None and case.written is not None:
                # (a NaN written value never equals itself: such a case just gets a cache of its own)
                same = c.written.keys() == case.written.keys() and all(
                    np.shape(c.written[k]) == np.shape(case.written[k]) and bool(np.array_equal(c.written[k], case.written[k]))
                    for k in c.written)
            return bool(same)
        except Exception:  # noqa: BLE001 - a field that cannot be compared: not the same case
            return False

    def inputs_id(self, seen: Mapping[str, F64]) -> int:
        """A number for a set of input arrays, the same for bitwise equal sets (compared element by element
        against the sets seen so far, which are kept: a comparison reads memory at memcmp speed, where a
        digest of large X and y would cost milliseconds per task)."""
        for j, other in enumerate(self._inputs):
            if other.keys() == seen.keys() and all(same_bits(other[k], seen[k]) for k in seen):
                return j
        self._inputs.append(seen)
        return len(self._inputs) - 1

    def trajectories(self) -> list[list[ExactStep]]:
        """The exact trajectories computed so far (one per distinct inputs, learning rate, dtype and device)."""
        return list(self._traj.values())

    def step_graded(self, key: tuple[Any, ...], make: Callable[[], Any]) -> Any:
        """``make()`` once per ``key`` (the most recent :data:`STEPS_KEPT` kept): ``key`` must hold everything
        the result depends on (the step's inputs, by :meth:`inputs_id` and :func:`inputs_digest`, the learning rate, the dtype, the
        device's settings)."""
        if key not in self._steps:
            self._steps[key] = make()
            while len(self._steps) > STEPS_KEPT:
                self._steps.pop(next(iter(self._steps)))
        return self._steps[key]

    def written_step(self, finite: bool | None = None) -> ExactStep | None:
        """The exact step of the inputs as written (None where an input is not finite). ``finite``:
        :attr:`Case.finite` where the caller has just read it (else it is read here: a pass over every input)."""
        if self._written is None and (self.case.finite if finite is None else finite):
            if self.case.written is None:  # written as float64 values (arrays, generated cases): exact as floats
                for key, (seen, lr) in self._seen.items():  # the same inputs as a trajectory's first step (float64)
                    if not self._traj[key]:  # a trajectory of no steps (steps = 0) has no first step
                        continue
                    first = self._traj[key][0]
                    if first.rounded_bits is None and all(_equal_arrays(seen[name], np.asarray(v, dtype=np.float64))
                                                          for name, v in self.case.values.items()):
                        self._written = first if lr == self.case.lr else _with_learning_rate(first, seen, self.case.lr)
                        return self._written
                inputs = exact_inputs_from_floats(self.case.values)
            else:
                inputs = exact_inputs_from_written(self.case.written_inputs())
            self._written = exact_step(inputs, self.case.lr, self.case.reduction)
        return self._written

    def trajectory(self, seen: Mapping[str, F64], lr: Fraction, key: tuple[Any, ...],
                   exact: Mapping[str, ScaledInts] | None = None) -> list[ExactStep]:
        """The exact trajectory from ``seen`` with learning rate ``lr``, once per ``key``. The key must tell apart
        every input the trajectory depends on: frameworks round the same written value differently (torch's
        float64-to-float16 conversion rounds twice, through float32), so the inputs themselves
        (:meth:`inputs_id`) belong in it. ``exact``: ``seen``'s exact values where the caller has them."""
        if key not in self._traj:
            start = exact if exact is not None else exact_inputs_from_floats(seen)
            self._traj[key] = exact_trajectory(start, lr, self.case.reduction, self.case.steps, accurate_last=True)
            self._seen[key] = (seen, lr)
        return self._traj[key]


def _equal_arrays(a: F64, b: F64) -> bool:
    """``np.array_equal(a, b)`` of two float64 arrays (the same shape, every element equal: -0.0 equals 0.0, a NaN
    nothing), without its conversions and checks of other types."""
    return a.shape == b.shape and bool((a == b).all())


def _with_learning_rate(step: ExactStep, inputs: Mapping[str, F64], lr: Fraction) -> ExactStep:
    """The exact step from the same inputs with another learning rate: the loss, the gradients and the
    residual do not depend on it; ``W - lr grad_W`` and ``b - lr grad_b`` are formed again, exactly
    (:class:`harness.exact.Difference`: element by element where only a few are read, as the records do)."""
    values = dict(step.values)
    values["W"] = Difference(ScaledInts.from_floats(inputs["W"]), values["grad_W"], lr)
    values["b"] = Difference(ScaledInts.from_floats(inputs["b"]), values["grad_b"], lr)
    radius = dict(step.radius)
    if "grad_W" in radius:  # the accurate X^T R: W - lr grad_W is within lr times grad_W's radius
        radius["W"] = scaled_radius(radius["grad_W"], lr)
    return ExactStep(values=values, residual=step.residual, method=step.method, radius=radius)


def _base(case: Case, impl: Implementation, device: str, dtype: str, opts: RunOptions) -> dict[str, Any]:
    return {
        "case": case.id, "implementation": impl.name, "device": device, "dtype": dtype,
        "reduction": case.reduction, "tags": list(case.tags),
        "tf32": opts.effective_tf32 if device.startswith("cuda") else None,
        "matmul_precision": opts.effective_matmul_precision,
        "repro": repro_command(case, impl.name, device, dtype, opts.extra_repro),
    }


def _whole_run_record(base: dict[str, Any], verdict: str, message: str) -> Record:
    return Record(quantity="*", step=0, verdict=verdict, message=message, **base)


def check_case(
    case: Case, impl: Implementation, device: str, dtype: str, opts: RunOptions | None = None,
    cache: CaseCache | None = None,
) -> list[Record]:
    """Run one implementation on one case, device and dtype; grade every step.

    The step runs, and the harness computes, in IEEE 754's default floating-point environment
    (:func:`harness.fpenv.ieee_default`: rounding to nearest, gradual underflow, no traps), whatever the
    caller's; the caller's is given back afterwards. An environment the step leaves changed
    (``torch.set_flush_denormal(True)``, ``fesetround``) is restored before its results are read, and named
    in the message of every record of the check.

    Returns:
        one record per quantity and step, or a single record (quantity ``"*"``)
        with verdict ``unsupported``, ``invalid-input`` or ``error``.
    """
    opts = opts or RunOptions()
    notes: list[str] = []
    try:
        with ieee_default() as entry:
            torch_switches.warm_thread_pool()  # torch's threads start in the default (see harness.frameworks.torch_switches)
            if _POOL_FLUSHES and impl.framework == "torch":
                return [_whole_run_record(_base(case, impl, device, dtype, opts), "error", _POOL_FLUSHES[0])]
            if _JAX_LEFT and impl.framework == "jax":
                return [_whole_run_record(_base(case, impl, device, dtype, opts), "error", _JAX_LEFT[0])]
            if not entry.is_default:
                notes.append(f"this check was called with {entry.describe()}; the step ran, and was graded, in IEEE 754's "
                             "default floating-point environment (rounding to nearest, gradual underflow, no traps), and the "
                             "caller's environment was given back afterwards")
            records = _check_case(case, impl, device, dtype, opts, cache or CaseCache(case), notes)
    except FPEnvironmentError as exc:
        records = [_whole_run_record(_base(case, impl, device, dtype, opts), "error", f"{exc}; not graded")]
    for note in notes:
        for r in records:
            r.message = f"{r.message}; {note}" if r.message else note
    return records + left_thread_records()


def left_thread_records() -> list[Record]:
    """An ``error`` record (quantity ``"*"``) for each call of ``os._exit`` that a thread left running by an earlier
    check's step made since the last call (:func:`harness.isolation.left_thread_exits`), naming that check's case,
    implementation, device and dtype: the call ended that thread instead of the process (a run whose steps run inline
    would have ended there, with that exit status and no record of what was left). :func:`check_case` adds them to the
    records it returns; the callers that run checks inline call it once more after their last check."""
    from .isolation import LEFT_THREAD_EXIT, left_thread_exits

    return [owner(f"{LEFT_THREAD_EXIT} called {call}: the harness ended that thread instead of the process, which "
                  "the call would have ended with every later check unrun; a step must not start threads that end the "
                  "process")
            for owner, call in left_thread_exits() if callable(owner)]


def _check_case(case: Case, impl: Implementation, device: str, dtype: str, opts: RunOptions, cache: CaseCache,
                notes: list[str]) -> list[Record]:
    base = _base(case, impl, device, dtype, opts)
    reason = unsupported_reason(impl.framework, device, dtype, impl.dtypes)
    if reason is None and impl.dtypes is not None and dtype not in impl.dtypes:
        reason = f"{impl.name} does not support {dtype}"
    if reason is None and impl.devices is not None and device.split(":")[0] not in impl.devices:
        reason = f"{impl.name} does not run on {device}"
    if reason is None:
        mismatch = case_mismatch(impl, case)
        reason = f"{impl.name} {mismatch}" if mismatch else None
    if reason:
        return [_whole_run_record(base, "unsupported", reason)]
    # whether every input is finite (a pass over every input), read once per check (a caller may change a case's
    # arrays): first where a framework's conversion might turn a NaN or inf into a number; for NumPy and torch, whose
    # conversion keeps them, finite inputs as handed over imply it, and it is read only where those are not (or where
    # they could not be made): the same verdicts, in the same order, one pass fewer
    finite: bool | None = case.finite if impl.framework not in NATIVE else None
    if finite is False:
        return [_invalid_input(base, case)]
    fmt = get_format(dtype)
    n, d, k = case.shape
    try:
        fw_inputs = _fresh_inputs(case, impl, dtype, device)
    except FrameworkInputError as exc:  # e.g. JAX without jax_enable_x64 makes float32 of float64
        if finite is None and not case.finite:
            return [_invalid_input(base, case)]
        return [_whole_run_record(base, "error", f"could not create the inputs on {device}: {exc}; not graded")]
    except Exception as exc:  # e.g. out of device memory
        if finite is None and not case.finite:
            return [_invalid_input(base, case)]
        _, why = classify_exception(exc)
        return [_whole_run_record(base, "error", f"could not create the inputs on {device} ({why}): {type(exc).__name__}: {exc}")]
    # the harness's own float64 copies, taken before the call: the oracle grades against
    # these, never against the objects the step was handed (which it may have written into)
    seen = snapshot(fw_inputs, impl.framework)
    native = native_copies(fw_inputs, seen)  # (the mutation check's copies: in the inputs' own dtype)
    bad = _not_finite(seen, native)
    if bad and finite is None and not case.finite:
        return [_invalid_input(base, case)]
    if bad:
        return [_whole_run_record(base, "overflow", f"inputs {', '.join(bad)} overflow {dtype}: they are inf once rounded")]
    finite = True
    # the learning rate, and the hyper-parameters torch.optim casts to the dtype (weight_decay, eps), beyond the dtype's
    # largest finite value: inf once rounded, or refused by torch's conversion ("cannot be converted ... without
    # overflow", from just above it: 65519 in float16, helper-90); the step would multiply by inf, or a correct one
    # raises: a property of the case, not of the implementation
    over = [f"{key} = {v:g}" for key, v in (("lr", float(case.lr)), *(case.optimizer.numbers() if case.optimizer else ()))
            if not abs(v) <= fmt.max_finite]
    if case.model is not None:  # an expression's constant beyond the dtype's range: the same (helper-176)
        over += constants_beyond_range(case.model, n, d, k, case.reduction, case.lr, fmt)
    if over:  # (the learning rate rounded to the dtype is inf only where lr is above the largest finite value)
        return [_whole_run_record(base, "invalid-input", f"{', '.join(over)} overflows {dtype}: "
                                  f"beyond its largest finite value {fmt.max_finite:g} (inf once rounded, or refused by "
                                  f"torch's conversion); not graded in {dtype}")]
    lr_float = float(case.lr)
    lr_oracle = _exact_lr_in(lr_float, fmt)  # Fraction(case.lr_in(fmt))
    runs = max(1, opts.repeat)
    all_results: list[Any] = []
    for run in range(1, runs + 1):
        if run > 1:
            fw_inputs = _fresh_inputs(case, impl, dtype, device)  # every call gets its own copies
        got = _run_once(impl, fw_inputs, seen, native, lr_float, case, device, opts, run, runs, n, d, k, fmt, notes)
        if isinstance(got, _Failed):
            return [_whole_run_record(base, got.verdict, got.message)]
        all_results.append(got)
    results = all_results[0]
    if case.model is not None:  # a model's step: graded by harness.models on the plan of its model
        graded: dict[int, Any] = {}
        model_records = grade_model_steps(case.model, base, results, seen, case.lr, case.reduction, fmt,
                                          flush_to_zero=opts.flush_to_zero or impl.flush_to_zero,
                                          half_flush=_half_flush(impl, device, fmt),
                                          function_ulps=impl.function_ulps, graded=graded)
        if runs > 1:
            from .repeat import apply_repeat

            apply_repeat(model_records, [list(res_k) for res_k in all_results], fmt, graded.get,
                         quantities=case.model.quantities(d, k), params=case.model.parameter_names(d, k))
        _mark_known_bug(model_records, impl, device, dtype)
        return model_records
    opt = case.optimizer
    seen_id = cache.inputs_id(seen)
    seen_exact = exact_inputs_from_floats(seen, finite=True)  # seen: finite, checked above
    # the learning rate in the cache keys as its (numerator, denominator): equal exactly where the Fractions are (both
    # in lowest terms), without a Fraction's hash (a modular inverse) at every lookup
    lr_key = (lr_oracle.numerator, lr_oracle.denominator)
    traj = (cache.trajectory(seen, lr_oracle, (dtype, device, lr_key, seen_id), seen_exact)
            if opts.trajectory and opt is None else None)
    written = cache.written_step(finite) if opt is None else None
    opt_traj = optimizer_trajectory(opt, seen, Fraction(lr_float), case.reduction, case.steps, fmt) if opts.trajectory and opt else None
    prev_state: dict[str, dict[str, F64]] = {}
    records: list[Record] = []
    prev_W, prev_b = seen["W"], seen["b"]
    history: list[StepFacts] = []  # the previous step's facts, for the diagnoses (harness.diagnose)
    ftz = opts.flush_to_zero or impl.flush_to_zero
    half_flush = _half_flush(impl, device, fmt)
    graded_steps: dict[int, tuple[ExactStep, dict[str, F64]]] = {}
    kept: dict[int, FailingElements] = {}  # by id of a failing update record: its failing elements (a known bug's check)
    for t, res in enumerate(results, start=1):
        # the output columns of the linear model are independent (column k of a step reads W[:, k] and b[k] only): a
        # column left inf or NaN by the previous step is graded as such (only inf or NaN accepted), the others as usual
        # (stopping at the first overflowed column left every later step of the others ungraded: a stale gradient and
        # momentum passed, helper-62)
        # (before the first step W and b are the inputs, every one of them finite (_not_finite, above): no column is lost,
        # which the test would find in three passes)
        lost = np.zeros(np.shape(prev_W)[1], dtype=bool) if t == 1 else _columns_not_finite(prev_W, prev_b)
        lost_any = False if t == 1 else bool(lost.any())  # (read once: lost is not changed below)
        if lost.all() or (lost_any and impl.error_model is not None):
            records.append(Record(quantity="*", step=t, verdict="overflow",
                                  message=f"W or b after step {t - 1} is not finite; later steps are not graded", **base))
            break
        out = res  # float64 arrays, read once by _run_once
        step_inputs = {"X": seen["X"], "y": seen["y"], "W": prev_W, "b": prev_b}
        graded_inputs = step_inputs if not lost_any else _without_columns(step_inputs, lost)
        from_traj = t == 1 and traj is not None

        def prepare(step_inputs: Mapping[str, F64] = graded_inputs, from_traj: bool = from_traj, patched: bool = lost_any
                    ) -> tuple[ExactStep, tuple[ExactStep, dict[str, tuple[F64, F64]], Any, dict[str, Any]]]:
            if from_traj:
                assert traj is not None
                ex0 = traj[0]
            else:
                exact_xy = exact_inputs_from_floats({"X": step_inputs["X"], "y": step_inputs["y"]}) if patched else seen_exact
                exact_in = {**exact_xy, "W": ScaledInts.from_floats(step_inputs["W"]), "b": ScaledInts.from_floats(step_inputs["b"])}
                ex0 = exact_step(exact_in, lr_oracle, case.reduction, accurate=True)
            return ex0, _step_bounds_of(case, device, ex0, step_inputs, lr_oracle, fmt, opts, impl.error_model, ftz,
                                        half_flush)

        if impl.error_model is None:  # the built-in bounds: shared by every implementation that holds these inputs
            key = (from_traj, fmt.name, device, opts.effective_tf32, ftz, half_flush, lr_key, seen_id,
                   inputs_digest({"W": graded_inputs["W"], "b": graded_inputs["b"]}),  # X and y: seen's
                   tuple(np.flatnonzero(lost).tolist()) if lost_any else ())  # y's columns zeroed there
            ex, prepared = cache.step_graded(key, prepare)
        else:
            ex, prepared = prepare()
        if lost_any:
            prepared = _only_non_finite_in(prepared, lost, t)
        else:  # (--repeat grades its other runs against these: not where columns were lost)
            graded_steps[t] = (ex, step_inputs)
        step_records = _grade_step(case, base, t, out, ex, graded_inputs, lr_oracle, fmt, opts,
                                   written if t == 1 else None, traj[t - 1] if traj is not None else None, history,
                                   impl.error_model, ftz, prepared=prepared, kept=kept, held=step_inputs,
                                   half_flush=half_flush)
        if opt is not None:  # the update is the optimizer's: graded by harness.optim on what the step held
            if not finite_state(prev_state) and not lost_any and not _state_partly_finite(prev_state):
                records.append(Record(quantity="*", step=t, verdict="overflow",
                                      message=f"the optimizer state after step {t - 1} is not finite; later steps are not graded", **base))
                break
            step_records = [r for r in step_records if r.quantity not in ("W", "b")] + grade_update(
                opt, base, t, out, {"W": prev_W, "b": prev_b}, prev_state, lr_float, fmt,
                ftz, opt_traj[t - 1] if opt_traj is not None else None, kept=kept)
            prev_state = split_state(out, opt)
        records.extend(step_records)
        prev_W, prev_b = out["W"], out["b"]
    if runs > 1:
        from .repeat import apply_repeat

        def exact_of_step(t: int) -> Any:
            if t not in graded_steps or opt is not None:  # an optimizer's other runs: spread reported, not graded
                return None
            ex, step_inputs = graded_steps[t]
            return _exact_and_bounds(case, base, ex, step_inputs, lr_oracle, fmt, opts, impl)

        apply_repeat(records, [list(res_k) for res_k in all_results], fmt, exact_of_step)
    _mark_known_bug(records, impl, device, dtype, kept)
    return records


@functools.lru_cache(maxsize=256)
def _exact_lr_in(lr: float, fmt: FloatFormat) -> Fraction:
    """``Fraction(case.lr_in(fmt))`` of a case whose learning rate is the float ``lr``, for a finite one within
    ``fmt``'s range: the rounding to ``fmt``, exactly (a pure function of the two, kept; ``-0.0`` and ``0.0``
    give the same Fraction)."""
    with np.errstate(all="ignore"):
        return Fraction(lr_held(lr, fmt))


def _half_flush(impl: Implementation, device: str, fmt: FloatFormat) -> bool:
    """Whether the built-in bounds let this step's float16 or bfloat16 products and sums flush subnormals to zero
    without a declaration (:func:`harness.bounds.flush_to_zero_default`): unless a probe of its framework in this
    dtype on this device found no flush (:func:`harness.frameworks.subnormals.flushes_subnormals`; where the probe
    cannot run, the allowance stays)."""
    if not flush_to_zero_default(fmt):
        return True  # (no allowance in float32 and float64 either way)
    return flushes_subnormals(impl.framework, device, fmt.name) is not False


def _invalid_input(base: dict[str, Any], case: Case) -> Record:
    """The ``invalid-input`` record of a case with a NaN or an infinity among its inputs (naming them)."""
    bad = [k for k, v in case.values.items() if not np.isfinite(v).all()]
    return _whole_run_record(base, "invalid-input", f"non-finite values (NaN or inf) in {', '.join(bad)}: no exact value exists")


#: :func:`_not_finite` tests inputs of at most this many elements in all together first (one pass; the same answer).
_JOINED_FINITE_TEST = 4096


def _not_finite(seen: Mapping[str, F64], native: Mapping[str, npt.NDArray[Any]]) -> list[str]:
    """The names of the inputs that hold a NaN or an infinity, in ``seen``'s order: each read once, in its own dtype
    where ``native`` (:func:`harness.isolation.native_copies`) holds a NumPy float copy of it (the same values as its
    float64 snapshot in ``seen``, converted exactly, in half the bytes for float32), else in ``seen``."""
    if seen and sum(v.size for v in seen.values()) <= _JOINED_FINITE_TEST:  # small inputs: one joined test first
        if bool(np.isfinite(np.concatenate(list(seen.values()), axis=None)).all()):  # (each flattened)
            return []
    bad = []
    for key, v in seen.items():
        held = native.get(key)
        if not np.isfinite(held if held is not None and held.dtype.kind == "f" else v).all():
            bad.append(key)
    return bad


def _columns_not_finite(W: F64, b: F64) -> npt.NDArray[np.bool_]:
    """``(K,)``: the output columns ``k`` whose ``W[:, k]`` or ``b[k]`` holds inf or NaN."""
    W = np.asarray(W, dtype=np.float64)
    return np.asarray(~(np.isfinite(W).all(axis=0) & np.isfinite(np.reshape(b, -1))), dtype=bool)


def _state_partly_finite(state: Mapping[str, Mapping[str, F64]]) -> bool:
    """Whether some element of the optimizer's state is finite in every array of its parameter (the update rules are
    element-wise: :func:`harness.optim.grade_update` grades those elements)."""
    for arrays in state.values():
        ok = None
        for a in arrays.values():
            fin = np.isfinite(np.asarray(a, dtype=np.float64))
            ok = fin if ok is None else ok & fin
        if ok is not None and bool(ok.any()):
            return True
    return False


def _without_columns(step_inputs: Mapping[str, F64], lost: npt.NDArray[np.bool_]) -> dict[str, F64]:
    """The step's inputs with the ``lost`` columns of ``W``, ``b`` and ``y`` set to 0: their residual is 0 exactly, so
    that the other columns' exact values and bounds are those of the step itself (the scale ``c`` counts every column:
    the shapes are kept)."""
    W = np.array(step_inputs["W"], dtype=np.float64)
    b = np.array(step_inputs["b"], dtype=np.float64)
    y = np.array(step_inputs["y"], dtype=np.float64)
    W[:, lost] = 0.0
    b.reshape(-1)[lost] = 0.0
    y[:, lost] = 0.0
    return {"X": step_inputs["X"], "y": y, "W": W, "b": b}


def _only_non_finite_in(prepared: tuple[ExactStep, dict[str, tuple[F64, F64]], Any, dict[str, Any]],
                        lost: npt.NDArray[np.bool_], t: int) -> tuple[ExactStep, dict[str, tuple[F64, F64]], Any, dict[str, Any]]:
    """``prepared`` (:func:`_step_bounds_of`) of the step without its ``lost`` columns, for grading the step itself:
    the loss and the lost columns of grad_W, grad_b, W and b read from an inf or NaN, so a correct step gives inf or NaN
    there and only they are accepted (a finite value is ``disagree``: exact value inf, finite impossible); the bounds
    object is a new one (the cached one is shared)."""
    ex, hilo, bounds, kwargs = prepared
    k = lost.size
    masks = {"loss": np.ones((), dtype=bool), "grad_b": lost, "b": lost}
    for q in ("grad_W", "W"):
        masks[q] = np.broadcast_to(lost, np.shape(hilo[q][0])[:-1] + (k,))
    masks = {q: np.reshape(m, np.shape(hilo[q][0])) for q, m in masks.items()}
    hilo = {q: (np.where(masks[q], np.inf, hi), np.where(masks[q], 0.0, lo)) for q, (hi, lo) in hilo.items()}
    impossible = bounds.finite_impossible or {}

    def widen(d: Mapping[str, Any] | None) -> dict[str, Any] | None:
        return None if d is None else {q: np.asarray(v, dtype=bool) | masks[q] for q, v in d.items()}

    note = (f"output column(s) {np.flatnonzero(lost).tolist()} of W or b were not finite after step {t - 1}: the other "
            "columns are graded (each column of the step reads its own W[:, k] and b[k]); the loss and those columns "
            "read an inf or NaN, and only inf or NaN is accepted there")
    graded = dataclasses.replace(
        bounds,
        rigorous={q: np.where(masks[q], np.inf, v) for q, v in bounds.rigorous.items()},
        expected={q: np.where(masks[q], np.inf, v) for q, v in bounds.expected.items()},
        inf_allowed=widen(bounds.inf_allowed), nan_allowed=widen(bounds.nan_allowed),
        nan_typical=widen(getattr(bounds, "nan_typical", None)),
        posinf_typical=widen(getattr(bounds, "posinf_typical", None)),
        neginf_typical=widen(getattr(bounds, "neginf_typical", None)),
        posinf_allowed=widen(bounds.posinf_allowed), neginf_allowed=widen(bounds.neginf_allowed),
        finite_impossible={q: np.asarray(impossible.get(q, False), dtype=bool) | masks[q] for q in masks},
        note=f"{bounds.note}; {note}" if bounds.note else note,
    )
    return ex, hilo, graded, kwargs


def case_mismatch(impl: Implementation, case: Case) -> str | None:
    """Why ``impl`` does not run ``case`` (None: it runs it): the one implementation lookup by case.

    Two rules, each defined once: the update rule (:func:`harness.optim.config.rule_mismatch`) and the
    model (:func:`harness.models.spec.model_rule_mismatch`: an implementation of models never takes W, b)."""
    return rule_mismatch(impl.optimizers, case.optimizer) or model_rule_mismatch(impl.models, case.model)


def _fresh_inputs(case: Case, impl: Implementation, dtype: str, device: str) -> dict[str, Any]:
    """New tensors or arrays of the case's inputs for one call (never shared with another call)."""
    with np.errstate(all="ignore"):  # overflow to inf on conversion is graded by the caller
        return {key: to_framework(v, impl.framework, dtype, device) for key, v in case.values.items()}


@dataclass
class _Failed:
    """Why a call cannot be graded."""

    verdict: str
    message: str


def _run_once(
    impl: Implementation, fw_inputs: Mapping[str, Any], seen: Mapping[str, F64], native: Mapping[str, npt.NDArray[Any]],
    lr: float, case: Case, device: str, opts: RunOptions, run: int, runs: int, n: int, d: int, k: int, fmt: FloatFormat,
    notes: list[str],
) -> Any:
    """Call the step once on its own inputs; its results, or :class:`_Failed` when they cannot be graded.

    ``SystemExit`` is caught and ``os._exit`` raises while the step runs (a step must not end the run:
    :func:`harness.isolation.exit_call_guard`), and inputs the step wrote into make it an error (see
    :mod:`harness.isolation`). A floating-point environment the step
    leaves changed is restored before anything else is computed, and named in ``notes``."""
    which = f"run {run} of {runs}: " if runs > 1 else ""

    def owner(message: str) -> Record:  # (the record of a thread this step leaves running that calls os._exit later)
        return error_record(case, impl, device, fmt.name, opts, message)

    with exit_call_guard(owner) as exits:  # os._exit in this process: an error record, not the end of the run
        got = _run_guarded(impl, fw_inputs, seen, native, lr, case, device, opts, run, runs, n, d, k, fmt, notes)
    if exits:  # (also where the step caught the exception and went on)
        code = _safe_repr(exits[0])
        return _Failed("error", which + f"called os._exit({code}): a step must return its results, not end the "
                                        "process; not graded")
    return got


def _run_guarded(
    impl: Implementation, fw_inputs: Mapping[str, Any], seen: Mapping[str, F64], native: Mapping[str, npt.NDArray[Any]],
    lr: float, case: Case, device: str, opts: RunOptions, run: int, runs: int, n: int, d: int, k: int, fmt: FloatFormat,
    notes: list[str],
) -> Any:
    """:func:`_run_once` inside its guard."""
    which = f"run {run} of {runs}: " if runs > 1 else ""
    switches = torch_switches.read()
    before = (os.getcwd(), _alarm_armed(), interpreter_state.read(), jax_switches.read())
    try:
        results = _call_with_settings(impl, fw_inputs, lr, case, device, opts)
    except StepResultsError as exc:  # a generator that yielded more than steps results (harness.results.collect_steps)
        problem = _environment_left(notes, which + "the step", switches, before)
        return _Failed("error", problem) if problem else _Failed("error", which + str(exc))
    except BaseException as exc:  # SystemExit, KeyboardInterrupt, GeneratorExit, custom BaseException: user code
        problem = _environment_left(notes, which + "the step", switches, before)
        reraise_real_interrupt(exc)
        return _Failed("error", problem) if problem else _Failed(*_raised(exc, which, fmt.name))
    problem = _environment_left(notes, which + "the step", switches, before)
    if problem:
        return _Failed("error", problem)
    got = _read_run(impl, fw_inputs, seen, native, results, case, run, runs, n, d, k, fmt)
    reading = which + "reading the step's results (their __len__, __iter__, __array__ or attributes)"
    try:
        found = restore_default()
    except FPEnvironmentError as exc:
        return _Failed("error", f"{reading} changed the floating-point environment: {exc}; not graded")
    if found is not None:  # the harness converted the values in that environment: they may be wrong
        return _Failed("error", f"{reading} changed the floating-point environment ({found.describe()}) while the "
                                "harness read them, so the values read may not be the values returned; not graded")
    return got


def _environment_left(notes: list[str], who: str, switches: torch_switches.TorchSwitches | None,
                      before: tuple[str, bool, interpreter_state.InterpreterState, dict[str, Any] | None]) -> str | None:
    """Restore IEEE 754's default floating-point environment after a step ran (:func:`harness.fpenv.restore_default`),
    torch's switches as they were before it (``switches``, :mod:`harness.frameworks.torch_switches`), NumPy's error
    handling, the working directory (``before[0]``: a relative results or report path would be written elsewhere),
    where the caller had none armed (``before[1]``), the interval timer, and the recursion limit and standard streams
    (``before[2]``, :mod:`harness.interpreter_state`); add what the step left changed to ``notes``.
    Returns the error message when the default cannot be restored."""
    cwd, caller_alarm, interpreter, jax_config = before
    left = torch_switches.restore(switches)
    left += jax_switches.restore(jax_config)
    stuck = jax_switches.unrestored(jax_config)
    left += interpreter_state.restore(interpreter)
    numpy_errors = restore_numpy_errors()
    if numpy_errors is not None:
        left.append(describe_numpy_errors(numpy_errors))
    try:
        now: str | None = os.getcwd()
    except OSError:  # the step removed the directory it moved to
        now = None
    if now != cwd:
        os.chdir(cwd)
        left.append(f"the working directory changed to {now!r} (os.chdir)")
    alarm = None if caller_alarm else _cancel_alarm()  # a caller's timer (pytest-timeout's signal method) is theirs
    if alarm:
        left.append(alarm)
    if left:
        note = (f"{who} left global switches changed: {'; '.join(left)}; the harness set them back before computing "
                "anything")
        if note not in notes:
            notes.append(note)
    if stuck:  # a thread-local override (jax.enable_x64(True).__enter__() never left): no public function undoes it
        if not _JAX_LEFT:
            _JAX_LEFT.append(f"not graded: a step left JAX's {', '.join(stuck)} in effect in this process (a context manager "
                             "entered and never left), which the harness cannot undo: a JAX step here would compute under it")
        return (f"{who} left JAX's {', '.join(stuck)} in effect (a context manager such as jax.enable_x64(...) entered and "
                "never left), which the harness cannot undo; no later JAX step in this process is graded; not graded")
    try:
        found = restore_default()
    except FPEnvironmentError as exc:
        return f"{who} changed the floating-point environment: {exc}; not graded"
    if found is not None:
        note = (f"{who} left the floating-point environment changed: {found.describe()}; the harness restored IEEE 754's "
                "default (rounding to nearest, gradual underflow, no traps) before computing anything")
        if note not in notes:
            notes.append(note)
        if (found.flush_to_zero or found.denormals_are_zero) and torch_switches.thread_pool_flushes():
            if not _POOL_FLUSHES:
                _POOL_FLUSHES.append(f"not graded: torch's intra-op threads in this process flush subnormals to zero since "
                                     f"a step left flush-to-zero on ({note}); the harness converts a torch step's inputs "
                                     "and results in those threads and cannot reset them")
            return (f"{who} left flush-to-zero on in torch's intra-op threads too (it started them, or changed their "
                    "number, with FTZ/DAZ on), which the harness cannot reset: its results, read in those threads, may have "
                    "lost their subnormals, and no later torch step in this process is graded; not graded")
    return None


def _alarm_armed() -> bool:
    """Whether the process's real-time interval timer is armed (``signal.getitimer(ITIMER_REAL)``)."""
    import signal

    if not hasattr(signal, "getitimer"):  # pragma: no cover - Windows
        return False
    return signal.getitimer(signal.ITIMER_REAL) != (0.0, 0.0)


def _cancel_alarm() -> str | None:
    """Cancel an interval timer (``signal.alarm``, ``signal.setitimer(ITIMER_REAL, ...)``) a step left armed: its
    SIGALRM would end the process later, in the middle of another step's grading or, in a worker, between tasks
    (where the pool could not replace the worker and the run stopped). Returns what was cancelled, in words."""
    import signal

    if not hasattr(signal, "setitimer"):  # pragma: no cover - Windows
        return None
    try:
        delay, interval = signal.setitimer(signal.ITIMER_REAL, 0.0)
    except (OSError, ValueError):  # pragma: no cover
        return None
    if delay == 0.0 and interval == 0.0:
        return None
    return f"an alarm armed to fire in {delay:.3g} s (signal.alarm or signal.setitimer; cancelled)"


#: Why torch steps are no longer graded in this process (:func:`_environment_left`): one message, once a step has
#: left torch's intra-op threads flushing subnormals.
_POOL_FLUSHES: list[str] = []
#: Why JAX steps are no longer graded in this process (:func:`_environment_left`): one message, once a step has left a
#: JAX option that no public function restores (helper-84: the next JAX step's records depended on it).
_JAX_LEFT: list[str] = []


def _read_run(impl: Implementation, fw_inputs: Mapping[str, Any], seen: Mapping[str, F64],
              native: Mapping[str, npt.NDArray[Any]], results: Any, case: Case, run: int, runs: int, n: int, d: int, k: int,
              fmt: FloatFormat) -> Any:
    """The mutation check (against the snapshot ``seen`` and the :func:`harness.isolation.native_copies` ``native``,
    both taken before the first call: every run's inputs are made alike, bit for bit) and the reading of one call's
    results (:func:`_run_once`)."""
    got = _read_step_results(impl, results, case, run, runs, n, d, k, fmt)
    # after the reading, which runs user code too (an __array__ that wrote into W agreed: helper-84)
    changed = mutated_inputs(fw_inputs, seen, impl.framework, native)
    if changed:
        return _Failed("error", mutation_message(changed, run, runs))
    return got


def _read_step_results(impl: Implementation, results: Any, case: Case, run: int, runs: int, n: int, d: int, k: int,
                       fmt: FloatFormat) -> Any:
    """:func:`_read_run`'s reading of one call's results: float64 arrays per step, or :class:`_Failed`."""
    which = f"run {run} of {runs}: " if runs > 1 else ""
    # reading the results runs user code too (__len__, __iter__, __array__, __getattr__): anything it raises,
    # sys.exit included, is this implementation's error; the results are read once, into float64 arrays
    try:
        results = collect_steps(results, case.steps)  # a generator is read here, at most steps + 1 results
        if case.model is not None:
            read = read_model_steps(list(results) if isinstance(results, list | tuple) else results, case.model, case.steps,
                                    (n, d, k), fmt, impl.framework)
            return _Failed("error", which + read) if isinstance(read, str) else read
        outs = _read_results(results, case.steps, n, d, k, fmt, impl.framework)  # each value read once: what is
        if isinstance(outs, str):  # checked is what is graded (an __array__ may answer differently when asked again)
            return _Failed("error", which + outs)
        if case.optimizer is not None:  # the optimizer's state after each step, graded with the update
            for t, (res, o) in enumerate(zip(results, outs, strict=True), start=1):
                state, problem = read_state(res, case.optimizer, {"W": (d, k), "b": (k,)}, impl.framework)
                if problem:
                    return _Failed("error", which + f"step {t}: {problem}")
                o.update(state)
        return outs
    except StepResultsError as exc:
        return _Failed("error", which + str(exc))
    except BaseException as exc:
        reraise_real_interrupt(exc)
        what = (f"called sys.exit({'' if exc.code is None else _safe_repr(exc.code)})" if isinstance(exc, SystemExit)
                else f"raised {_exc_text(exc)}")
        return _Failed("error", which + f"reading its results (their __len__, __iter__, __array__ or attributes) {what}; not graded")


def _safe_repr(value: Any) -> str:
    try:
        return repr(value)
    except BaseException:  # noqa: BLE001 - a __repr__ that raises or exits
        return f"<{type(value).__name__}>"


def _exc_text(exc: BaseException) -> str:
    """``"Type: text"`` of a user's exception; its ``__str__`` is user code and may raise (or sys.exit)."""
    name = type(exc).__name__
    try:
        if isinstance(exc, SystemExit):
            code = "" if exc.code is None else _safe_repr(exc.code)  # exit_message's text, with a guarded repr
            return f"called sys.exit({code}): a step must return its results, not end the process; not graded"
        text = str(exc)
    except BaseException as inner:  # noqa: BLE001 - a __str__ that raises or exits
        return f"{name} (its text could not be read: {type(inner).__name__})"
    return f"{name}: {text}" if text else name


def _raised(exc: BaseException, which: str, dtype: str) -> tuple[str, str]:
    """(verdict, message) of a step graded in ``dtype`` that raised ``exc`` (any BaseException)."""
    if isinstance(exc, SystemExit):
        return "error", which + _exc_text(exc)
    try:
        kind, message = classify_exception(exc, dtype) if isinstance(exc, Exception) else (
            "error", f"the implementation raised {type(exc).__name__} (a BaseException: not an Exception)")
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    except BaseException:  # noqa: BLE001 - the exception's __str__ is user code
        kind, message, detail = "error", f"the implementation raised {type(exc).__name__}", _exc_text(exc)
    return kind, which + message + "\n" + detail


def _step_bounds_of(
    case: Case, device: str, ex: ExactStep, step_inputs: Mapping[str, F64], lr: Fraction, fmt: FloatFormat,
    opts: RunOptions, error_model: Callable[..., Any] | None, flush_to_zero: bool, half_flush: bool = True,
) -> tuple[ExactStep, dict[str, tuple[F64, F64]], Any, dict[str, Any]]:
    """The oracle's step (``ex``, or the exact one in its place, below), its values (double-double), the
    bounds of one step as the grading uses them, and the keyword arguments the bounds were computed with
    (the one place that calls the error model).

    An accurate step (``ex.radius``: values within a proved radius of the exact ones,
    :func:`harness.oracle.exact_step`'s ``accurate``) is graded with its bounds narrowed by twice the radius
    (:func:`narrow_by_radius`), so that no value outside the bound of the exact value can agree; where the
    radius is not negligible against the bound (more than 1/128 of it), or the value is near overflow, the
    exact step is computed instead (:data:`RADIUS_FRACTION`)."""
    tf32 = bool(opts.effective_tf32 and device.startswith("cuda") and fmt.name == "float32")
    kwargs: dict[str, Any] = {"lr": float(lr), "reduction": case.reduction, "fmt": fmt, "tf32": tf32, "lr_held": float(case.lr)}
    if flush_to_zero:  # only then: a plug-in's own error model need not know the keyword
        kwargs["flush_to_zero"] = True
    if not half_flush and error_model is None:  # (the built-in bounds only: a plug-in's model is its own)
        kwargs["half_flush"] = False
    for _ in range(2):
        hilo = {q: ex.values[q].to_hi_lo() for q in QUANTITIES}
        bounds = (error_model or step_bounds)(step_inputs, ex.residual.to_float64(), {q: hilo[q][0] for q in QUANTITIES}, **kwargs)
        if error_model is not None:
            _check_error_model(error_model, bounds, case.shape)
        if not ex.radius:
            break
        if radius_negligible(ex.radius, bounds, hilo):
            narrow_by_radius(bounds, ex.radius)
            break
        ex = exact_step(exact_inputs_from_floats(step_inputs), lr, case.reduction)  # exact: no radius
    return ex, hilo, bounds, kwargs


def _check_error_model(error_model: Callable[..., Any], bounds: Any, shape: tuple[int, int, int]) -> None:
    """Raise :class:`harness.errors.ErrorModelError`, naming the error model and the quantity, unless every bound and
    mask it returned has the quantity's shape (or is one value, for every element) and no bound is negative or NaN
    (an error divided by a negative bound is within it, whatever the error: a wrong value would agree)."""
    name = getattr(error_model, "__qualname__", None) or repr(error_model)
    n, d, k = shape
    for q in QUANTITIES:
        want = _shape_of(q, n, d, k)
        for part in ("rigorous", "expected", "inf_allowed", "nan_allowed"):
            try:
                value = np.asarray(getattr(bounds, part)[q])
            except Exception as exc:  # noqa: BLE001 - a missing field or quantity, or values NumPy cannot read
                raise ErrorModelError(f"the error model {name} returned no {part} bound for {q} "
                                      f"({type(exc).__name__}: {exc}); not graded") from None
            if value.shape not in (want, ()):
                raise ErrorModelError(f"the error model {name} returned a {part} bound of shape {value.shape} for {q}, "
                                      f"whose shape is {want}; not graded")
            if part in ("rigorous", "expected"):
                if value.dtype.kind not in "fiu":
                    raise ErrorModelError(f"the error model {name} returned {part} bounds of dtype {value.dtype} for {q}; "
                                          "not graded")
                if bool(np.any(np.asarray(value, dtype=np.float64) < 0)) or bool(np.any(np.isnan(value))):
                    raise ErrorModelError(f"the error model {name} returned a negative or NaN {part} bound for {q}: an "
                                          "error bound is at least 0 (use inf for no bound); not graded")


#: An accurate step's radius is used only where twice it is at most this fraction of the rigorous bound.
RADIUS_FRACTION = 2.0**-6


def radius_negligible(radius: Mapping[str, F64], bounds: Any, hilo: Mapping[str, tuple[F64, F64]]) -> bool:
    """Whether an accurate step's radius (:attr:`harness.oracle.ExactStep.radius`) can be subtracted
    from the bounds: twice the radius at most :data:`RADIUS_FRACTION` of the rigorous bound at every
    element, the value finite, and no infinity allowed (no element near float64's overflow)."""
    for q, r in radius.items():
        rig = np.asarray(bounds.rigorous[q], dtype=np.float64)
        hi = hilo[q][0]
        if not (np.isfinite(hi).all() and bool((2 * r <= RADIUS_FRACTION * rig).all())):
            return False
        if bool(np.any(bounds.inf_allowed[q])) or bool(np.any(bounds.nan_allowed[q])):
            return False
        imposs = (getattr(bounds, "finite_impossible", None) or {}).get(q)
        if imposs is not None and bool(np.any(imposs)):
            return False
    return True


def narrow_by_radius(bounds: Any, radius: Mapping[str, F64]) -> None:
    """Subtract twice the radius of each quantity of an accurate step from its rigorous and expected bounds
    (in place, at least 0): a value within the narrowed bound of the accurate value is within the bound of
    the exact value (the radius once for the distance between the two values, once for the bound's own
    dependence on the value it was computed from; every term of the bounds grows at most as fast as the
    value; the difference is rounded down). As :mod:`harness.models.grade` does with an enclosure's radius."""
    for q, r in radius.items():
        for which in (bounds.rigorous, bounds.expected):
            with np.errstate(invalid="ignore"):
                v = np.asarray(which[q], dtype=np.float64) - 2 * r  # rounded down below: at most bound - 2 r
                which[q] = np.where(r > 0, np.maximum(np.nextafter(v, -np.inf), 0.0), np.maximum(v, 0.0))


def _exact_and_bounds(
    case: Case, base: Mapping[str, Any], ex: ExactStep, step_inputs: Mapping[str, F64], lr: Fraction, fmt: FloatFormat,
    opts: RunOptions, impl: Implementation,
) -> tuple[dict[str, tuple[F64, F64]], dict[str, F64], dict[str, Callable[[Any], float]]]:
    """The exact values (double-double), per-element rigorous bounds and lower limits
    (:func:`harness.bounds.lower_limits`) of one step, as the grading uses them."""
    _, hilo, bounds, _ = _step_bounds_of(case, base["device"], ex, step_inputs, lr, fmt, opts, impl.error_model,
                                      opts.flush_to_zero or impl.flush_to_zero, _half_flush(impl, base["device"], fmt))
    return hilo, dict(bounds.rigorous), lower_limits(bounds)


#: Prefix of the message of a failing record explained by a known framework bug.


def _mark_known_bug(records: list[Record], impl: Implementation, device: str, dtype: str,
                    failing: Mapping[int, FailingElements] | None = None) -> None:
    """Name a known framework bug in the messages of the failing records it explains (verdicts unchanged;
    :meth:`harness.implementations.KnownBug.explains`). ``failing``: by ``id`` of a failing record of the update
    (W, b, a state), its failing elements (:func:`harness.compare.failing_elements`; None for a model's step)."""
    bad = [r for r in records if r.verdict in failing_verdicts(strict=True)]
    if not bad or impl.known_bug is None:
        return
    bug = known_bug_of(impl, device, dtype)
    if bug is None:
        return
    facts = failing or {}
    for r in bad:
        if bug.explains(r.quantity, facts.get(id(r))):
            r.known_bug = bug.reason
            r.message = f"{KNOWN_BUG}{bug.reason}; {r.message}"


def _call(impl: Implementation, inputs: Mapping[str, Any], lr: float, case: Case) -> Any:
    """Call the step with its contract: the model contract (:mod:`harness.models.step`) for a case with a model.

    A generator (or any iterator) of results is run here, to its end or to ``steps + 1`` results
    (:func:`harness.results.collect_steps`): its body is the step, so it runs under the call's settings, and what it
    raises, writes into its inputs or leaves changed is the step's, checked after it as after any step (its body ran
    only when the results were read, after those checks: a generator that wrote into W and b agreed, and one that
    left grad mode off failed the next implementation's step, helper-83)."""
    if case.model is not None:
        n, d, k = case.shape
        params = {p: inputs[p] for p in case.model.parameter_names(d, k)}
        got = impl.fn(inputs["X"], inputs["y"], params, model=case.model, lr=lr, reduction=case.reduction, steps=case.steps)
    else:
        got = impl.fn(inputs["X"], inputs["y"], inputs["W"], inputs["b"], lr=lr, reduction=case.reduction, steps=case.steps,
                      **optimizer_keyword(case.optimizer))
    return collect_steps(got, case.steps)


def _call_with_settings(impl: Implementation, inputs: Mapping[str, Any], lr: float, case: Case, device: str, opts: RunOptions) -> Any:
    if impl.framework != "torch":
        with np.errstate(all="ignore"):  # NumPy's overflow/underflow warnings: the harness grades the values itself
            return _call(impl, inputs, lr, case)
    import torch

    # only the new API (set_float32_matmul_precision): it also sets allow_tf32, and
    # setting allow_tf32 afterwards would be undone or conflict with it
    try:
        old_prec: str | None = torch.get_float32_matmul_precision()
    except RuntimeError:  # the caller mixed the legacy and the new API: leave it as found
        old_prec = None
    try:
        torch.set_float32_matmul_precision(opts.effective_matmul_precision)
        return _call(impl, inputs, lr, case)
    finally:
        if old_prec is not None:
            torch.set_float32_matmul_precision(old_prec)


def _read_results(results: Any, steps: int, n: int, d: int, k: int, fmt: FloatFormat | None = None,
                  framework: str | None = None) -> list[dict[str, F64]] | str:
    """The returned steps as float64 arrays of the quantities' shapes, one dict per step, or why they cannot
    be graded. Each field is read once (:func:`harness.results.read_quantity`, a copy the harness owns): the
    values checked are the values graded, whatever a result's attributes or ``__array__`` answer later.

    Shapes must match (size-1 axes aside: a (K,) bias may come back as (1, K)),
    and the values must be numbers of the case's dtype: a step that silently
    computes in a wider type would otherwise be graded in the wrong ULPs, and one
    that returns a narrower dtype (float32 for a float64 case: JAX without
    ``jax_enable_x64``) is named as such, with ``framework``'s hint.
    """
    if not isinstance(results, list | tuple):
        return f"expected a list of StepResult, got {type(results).__name__}"
    if len(results) != steps:
        return f"expected {steps} StepResult(s), one per step, got {len(results)}"
    out: list[dict[str, F64]] = []
    for t, res in enumerate(results, start=1):
        arrays: dict[str, F64] = {}
        if type(res) is tuple:  # (a plain tuple of five became a StepResult: harness.results.collect_steps)
            return (f"step {t}: a tuple of {len(res)} value(s); a result is five, (loss, grad_W, grad_b, W, b), or a "
                    "harness.StepResult")
        for name in QUANTITIES:
            missing = object()
            value = getattr(res, name, missing)
            if value is missing:
                return f"step {t}: result has no field {name!r} (return harness.StepResult(loss, grad_W, grad_b, W, b))"
            if value is None:
                if name.startswith("grad"):
                    return none_message(name, t)
                return f"step {t}: {name} is None: return its value (a tensor or array in the case's dtype)"
            got = read_quantity(value, f"step {t}: {name}", _shape_of(name, n, d, k), fmt, framework)
            if isinstance(got, str):
                return got
            arrays[name] = got
        out.append(arrays)
    return out


#: :func:`harness.floats.decimal_string` of exact values, by (numerator, denominator): the same exact value is often
#: the graded, written and trajectory one of a step, and a step's exact values recur in every implementation graded
#: on the same inputs (the first step, the exact trajectory). Emptied when it holds :data:`_DECIMALS_HELD` of them.
_DECIMALS: dict[tuple[int, int], str] = {}
_DECIMALS_HELD = 1 << 12


def _grade_step(
    case: Case, base: dict[str, Any], t: int, out: Mapping[str, F64], ex: ExactStep, step_inputs: Mapping[str, F64],
    lr: Fraction, fmt: FloatFormat, opts: RunOptions, written: ExactStep | None, traj_step: ExactStep | None,
    history: list[StepFacts] | None = None, error_model: Callable[..., Any] | None = None,
    flush_to_zero: bool = False, prepared: tuple[ExactStep, dict[str, tuple[F64, F64]], Any, dict[str, Any]] | None = None,
    kept: dict[int, FailingElements] | None = None, held: Mapping[str, F64] | None = None, half_flush: bool = True,
) -> list[Record]:
    """The records of one step. ``prepared``: :func:`_step_bounds_of` of these arguments, when already at hand.
    ``kept``: filled, by ``id`` of each failing W and b record, with :func:`harness.compare.failing_elements` against
    ``held`` (the W and b the step held; ``step_inputs`` where None: they differ where lost columns were zeroed)."""
    if prepared is None:
        prepared = _step_bounds_of(case, base["device"], ex, step_inputs, lr, fmt, opts, error_model, flush_to_zero,
                                   half_flush)
    ex, hilo, bounds, kwargs = prepared
    exact_hi = {q: hilo[q][0] for q in QUANTITIES}
    records = []
    impossible = getattr(bounds, "finite_impossible", None) or {}
    # where NaN is possible only in an order that sums the terms by sign (harness.bounds.StepBounds.nan_typical):
    # suspect, not overflow (a step returning NaN everywhere passed as an overflow on ordinary data, helper-100)
    typical = getattr(bounds, "nan_typical", None) or {}
    # and so an infinity (helper-168: +inf for a gradient whose terms sum to 0 in every modelled order was overflow)
    ptypical = getattr(bounds, "posinf_typical", None) or {}
    ntypical = getattr(bounds, "neginf_typical", None) or {}
    sums = getattr(bounds, "typical_partial_sums", None) or {}
    lower = _loss_lower_limit(bounds, out)
    items = []
    for q in QUANTITIES:
        pinf, ninf = bounds.signed_inf_allowed(q)
        items.append({"computed": out[q], "exact_hi": hilo[q][0], "exact_lo": hilo[q][1], "rigorous": bounds.rigorous[q],
                      "expected": bounds.expected[q], "inf_allowed": bounds.inf_allowed[q], "nan_allowed": bounds.nan_allowed[q],
                      "posinf_allowed": pinf, "neginf_allowed": ninf, "finite_impossible": impossible.get(q),
                      "nan_typical": typical.get(q), "posinf_typical": ptypical.get(q),
                      "neginf_typical": ntypical.get(q), "lower_limit": lower.get(q)})

    def decimal(f: Fraction) -> str:
        key = (f.numerator, f.denominator)  # (a Fraction's own hash costs a modular inverse)
        text = _DECIMALS.get(key)
        if text is None:
            if len(_DECIMALS) >= _DECIMALS_HELD:
                _DECIMALS.clear()
            text = _DECIMALS[key] = decimal_string(f)
        return text

    differ: list[tuple[Record, float, Fraction]] = []  # records whose written value differs from the exact one
    drifts: list[tuple[Record, F64, F64, F64, F64 | None]] = []  # (record, computed, exact hi, lo, ULPs or None)
    for q, cmp in zip(QUANTITIES, compare_many(items, fmt), strict=True):
        idx = cmp.worst_index
        exact_f = ex.values[q].fraction_at(idx)
        computed = float(out[q][idx])
        rec = Record(
            quantity=q, step=t, verdict=cmp.verdict, shape=list(out[q].shape),
            max_abs_error=cmp.max_abs_error, max_ulp_error=cmp.max_ulp_error, bits_of_error=cmp.bits_of_error,
            bound_ratio=cmp.bound_ratio, expected_ratio=cmp.expected_ratio, worst_index=list(idx),
            exact=decimal(exact_f), exact_rational=None if q in ex.radius else _rational(exact_f), computed=repr(computed),
            rigorous_bound=cmp.rigorous_at_worst, expected_bound=cmp.expected_at_worst,
            abs_error_at_worst=cmp.abs_error_at_worst, ulp_error_at_worst=cmp.ulp_error_at_worst,
            counts=cmp.counts, oracle_method=ex.method, message=_message(q, cmp, fmt, bounds.vacuous.get(q, "") or getattr(bounds, "out_of_range", {}).get(q, ""),
                             vacuous_bound=q in bounds.vacuous, sign_sorted=_sign_sorted_sums(cmp, sums.get(q)),
                             lower=lower.get(q)),
            **base,
        )
        if lower.get(q):  # the loss's floor where it was formed: a record whose value is below it never passes
            rec.lower_limit = lower[q]
        if cmp.verdict == "suspect" and math.isnan(computed):  # a NaN only a sign-sorted order forms: no error measured
            rec.abs_error_at_worst = rec.ulp_error_at_worst = None
        if q in ex.radius:  # an accurate step: the value is within its radius of the exact one, not the exact rational
            rec.exact_radius = float(ex.radius[q][idx])
        if not math.isfinite(cmp.rigorous_at_worst) and cmp.bound_ratio == 0 and cmp.max_abs_error > 0:
            # error / inf reads 0, as if exact: there is no rigorous ratio (vacuous or beyond float64)
            rec.bound_ratio = None
        if written is not None:
            # (the written step is often the graded one, or shares its values: the same object, the same value)
            same_value = written.values[q] is ex.values[q]
            wf = exact_f if same_value else written.values[q].fraction_at(idx)
            rec.exact_written = decimal(wf)
            rec.exact_written_rational = (None if q in written.radius else rec.exact_rational
                                          if same_value and q not in ex.radius else _rational(wf))
            if same_value or wf == exact_f:  # the same value: the same double-double (hi, lo are correctly rounded), the same ULPs
                rec.ulp_error_written = cmp.ulp_error_at_worst
            else:  # measured below, in one call for every such quantity of the step
                differ.append((rec, computed, wf))
        if traj_step is not None and q in ("W", "b"):
            # (measured below, inside the one errstate of the annotations: the same values, no errstate each)
            if traj_step is ex:  # the first step of the trajectory is the graded step: its values and ULPs are at hand
                drifts.append((rec, out[q], *hilo[q], cmp.ulp))
            else:
                drifts.append((rec, out[q], *traj_step.values[q].to_hi_lo(), None))
            rec.trajectory_exact = decimal(exact_f if traj_step.values[q] is ex.values[q] else traj_step.values[q].fraction_at(idx))
        if kept is not None and q in ("W", "b") and cmp.verdict in failing_verdicts(strict=True):
            kept[id(rec)] = failing_elements(cmp, out[q], (held or step_inputs)[q])
        records.append(rec)
    if differ:  # (ulp_error is element-wise: one call grades each as alone)
        # each value's double-double of its own scale, as ever (a common scale may take the other path of to_hi_lo)
        whi, wlo = zip(*(ScaledInts.scalar(wf).to_hi_lo() for _, _, wf in differ), strict=True)
        ulps = ulp_error(np.array([c for _, c, _ in differ]), np.array(whi), np.array(wlo), fmt).tolist()
        for (rec, _, _), u in zip(differ, ulps, strict=True):
            rec.ulp_error_written = u
    notes = [bounds.note] if bounds.note else []
    if error_model is not None:  # a plug-in's bounds loosen or tighten every verdict: every record says whose they are
        name = getattr(error_model, "__qualname__", None) or repr(error_model)
        notes.append(f"graded against the implementation's own error model ({name}), not the harness's forward error bounds")
    for note in notes:
        for rec in records:
            rec.message = f"{rec.message}; {note}" if rec.message else note
    if error_model is None and not bounds.flush_to_zero and any(r.verdict == "disagree" for r in records):
        _name_flush_to_zero(records, out, hilo, step_inputs, ex.residual.to_float64(), exact_hi, kwargs, fmt, ex.radius)
    with np.errstate(all="ignore"):  # (an exact value of inf where a column was lost: the hypotheses' arithmetic is theirs)
        for rec, computed_q, hi_q, lo_q, ulps_q in drifts:  # (drift's own errstate: this one)
            gone = drift_no_errstate(computed_q, hi_q, lo_q, fmt, ulps_q)
            rec.drift_abs_error, rec.drift_ulp_error = gone.abs_error, gone.ulp_error
        annotate(records, out, ex.values, step_inputs, fmt, exact_hi)
        if history is not None:
            facts = StepFacts(t, fmt, float(lr), float(case.lr), case.reduction, step_inputs, out, exact_hi, bounds.rigorous,
                              previous=history[-1] if history else None, transformed=bounds.rigorous_inexact)
            history[-1:] = [diagnose_step(records, facts)]
    return records


def _name_flush_to_zero(
    records: list[Record], out: Mapping[str, F64], hilo: Mapping[str, tuple[F64, F64]], step_inputs: Mapping[str, F64],
    residual: F64, exact_hi: Mapping[str, F64], kwargs: Mapping[str, Any], fmt: FloatFormat,
    radius: Mapping[str, F64] | None = None,
) -> None:
    """Name flush-to-zero in the message of a ``disagree`` record that the flush-to-zero
    bounds explain (the verdict stays: only a declared flush-to-zero is graded with them)."""
    ftz = step_bounds(step_inputs, residual, exact_hi, **{**kwargs, "flush_to_zero": True})
    narrow_by_radius(ftz, radius or {})
    for rec in records:
        q = rec.quantity
        if rec.verdict != "disagree":
            continue
        pinf, ninf = ftz.signed_inf_allowed(q)
        cmp = compare(out[q], hilo[q][0], hilo[q][1], ftz.rigorous[q], ftz.expected[q], ftz.inf_allowed[q], fmt,
                      nan_allowed=ftz.nan_allowed[q], posinf_allowed=pinf, neginf_allowed=ninf,
                      lower_limit=_loss_lower_limit(ftz, out).get(q))
        if cmp.verdict != "disagree":
            rec.message = (f"flush-to-zero: {q} is within the bound of an evaluation that flushes subnormal inputs, "
                           f"intermediates or results to zero ({cmp.bound_ratio:.3g} x that bound), not within the "
                           f"gradual-underflow one of {fmt.name}; if the implementation flushes subnormals (FTZ/DAZ), "
                           "declare it: @harness.implementation(..., flush_to_zero=True) or --flush-to-zero; " + rec.message)


def _loss_lower_limit(bounds: Any, out: Mapping[str, F64]) -> dict[str, float]:
    """:func:`harness.bounds.lower_limits` at this step's computed values."""
    return {q: limit(out[q]) for q, limit in lower_limits(bounds).items()}


def _sign_sorted_sums(cmp: Any, sums: tuple[F64, F64] | None) -> tuple[float, float] | None:
    """``(A, B)`` of :attr:`harness.bounds.StepBounds.typical_partial_sums` at the worst element of a ``suspect``
    comparison whose worst element is NaN or an infinity (only an order summing the terms by sign forms it); None
    otherwise."""
    if cmp.verdict != "suspect" or math.isfinite(cmp.computed_at_worst) or sums is None:
        return None
    idx = cmp.worst_index
    return float(np.asarray(sums[0])[idx]), float(np.asarray(sums[1])[idx])


def _message(q: str, cmp: Any, fmt: FloatFormat, vacuous: str = "", vacuous_bound: bool = True,
             sign_sorted: tuple[float, float] | None = None, lower: float | None = None) -> str:
    if cmp.verdict == "agree":
        return f"{q}: {vacuous}" if vacuous else ""
    bad = cmp.counts.get(cmp.verdict, 0)
    c = cmp.computed_at_worst
    msg = below_floor_text(q, cmp, lower)
    if msg:
        return f"{msg}; {vacuous}" if vacuous else msg
    if cmp.verdict == "suspect" and np.isnan(c):
        big = fmt.max_finite
        figures = (f"the largest partial sums are +{sign_sorted[0]:.6g} and -{sign_sorted[1]:.6g} (the range: "
                   f"+-{big:.6g})" if sign_sorted is not None else f"no partial sums of both signs leave +-{big:.6g}")
        msg = (f"{q}: {bad} of {cmp.size} element(s) NaN where only an order summing the terms by sign gives NaN; "
               f"worst at {list(cmp.worst_index)}: NaN where the exact value is {cmp.exact_at_worst:.6g}. NaN needs "
               f"partial sums of both signs beyond {fmt.name}'s range (inf - inf), and in the data's order, blocks "
               f"and strided accumulators of up to {TYPICAL_LANES[-1]} lanes {figures} (the scale, and the growth of "
               "the roundings, included), so only an order summing the terms by sign gives NaN (its sums of all "
               "positive and all negative terms overflow); counted a pass only without --strict")
        return f"{msg}; {vacuous}" if vacuous else msg
    if cmp.verdict == "suspect" and np.isinf(c):
        big = fmt.max_finite
        a, bb = sign_sorted if sign_sorted is not None else (math.nan, math.nan)
        part = f"+{a:.6g}" if c > 0 else f"-{bb:.6g}"
        figures = (f"the largest partial sum of that sign is {part} (the range: +-{big:.6g})" if sign_sorted is not None
                   and math.isfinite(a if c > 0 else bb) else f"no partial sum of that sign leaves +-{big:.6g}")
        msg = (f"{q}: {bad} of {cmp.size} element(s) {c:+} where only an order summing the terms by sign overflows; "
               f"worst at {list(cmp.worst_index)}: {c:+} where the exact value is {cmp.exact_at_worst:.6g}. In the "
               f"data's order, blocks and strided accumulators of up to {TYPICAL_LANES[-1]} lanes {figures} (the scale, "
               "and the growth of the roundings, included), so only an order summing the terms by sign gives this "
               "infinity; counted a pass only without --strict")
        return f"{msg}; {vacuous}" if vacuous else msg
    if cmp.verdict == "disagree" and not np.isfinite(c):
        what = "NaN" if np.isnan(c) else repr(c)
        why = ("no correct evaluation forms inf - inf or 0 * inf here" if np.isnan(c)
               else "a sum of squares, never negative" if q == "loss" and c < 0
               else f"no correct evaluation gives {what} here: no intermediate of that sign leaves {fmt.name}'s range")
        msg = (f"{q}: {bad} of {cmp.size} element(s) above the rigorous error bound; worst at {list(cmp.worst_index)}: "
               f"{what} where the exact value is {cmp.exact_at_worst:.6g} ({why})")
        return f"{msg}; {vacuous}" if vacuous else msg
    what = {"disagree": "above the rigorous error bound", "suspect": "above the expected (probabilistic) bound but within the rigorous one",
            "overflow": f"out of {fmt.name}'s range (the exact value, or an intermediate of a correct evaluation)"}[cmp.verdict]
    rig = cmp.rigorous_at_worst
    if cmp.verdict == "suspect" and not np.isfinite(rig):
        what = ("above the expected (probabilistic) bound; the rigorous bound is vacuous (its growth (1 - u)^-m "
                "exceeds float64), so nothing bounds it in the worst case" if vacuous_bound else
                "above the expected (probabilistic) bound; the rigorous bound is beyond float64's range")
    ratio = bound_ratio_text(cmp.abs_error_at_worst, rig, "rigorous bound vacuous ((1 - u)^-m beyond float64)" if vacuous_bound
                             else "rigorous bound beyond float64's range")
    if rig != 0:  # (a bound of 0 is the expected one too)
        exp_ratio = cmp.abs_error_at_worst / cmp.expected_at_worst if cmp.expected_at_worst else float("inf")
        ratio = f"{ratio}; error / expected bound = {exp_ratio:.3g}"
    msg = (f"{q}: {bad} of {cmp.size} element(s) {what}; worst at {list(cmp.worst_index)}: error {cmp.abs_error_at_worst:.6g} "
           f"({ratio}), {cmp.ulp_error_at_worst:.4g} ULPs")
    return f"{msg}; {vacuous}" if vacuous else msg


def error_record(case: Case, impl: Implementation, device: str, dtype: str, opts: RunOptions, message: str) -> Record:
    """The one ``error`` record (quantity ``"*"``) of a case/implementation/device/dtype that could not be graded."""
    return _whole_run_record(_base(case, impl, device, dtype, opts), "error", message)


def grade_task(case: Case, impl_name: str, device: str, dtype: str, opts: RunOptions, marker: str | None = None) -> list[Record]:
    """Run and grade one case/implementation/device/dtype in a worker process of :func:`harness.isolation.run_supervised`.

    The implementation is found by name in the worker's registry (its plug-ins were
    loaded by the pool's initializer); the exact results of the worker's last few
    cases are kept (:func:`harness.isolation.cached`). With a ``marker`` (a single task of the supervisor), the
    records are also written to the task's records file (:func:`harness.isolation.report_unit`) before they are
    returned, for the supervisor to keep should the worker die before pebble reads them."""
    from .isolation import report_unit

    records = _grade_one(case, impl_name, device, dtype, opts, marker)
    if marker is not None:
        # a single task's records also go to its records file before pebble sends them back: a worker that dies once
        # it has sent them, before pebble reads them, is then not taken for one that died in the middle of the task
        # (pebble fails such a task and drops its result; the supervisor keeps these records: helper-175's P1)
        try:
            report_unit(marker, records)
        except OSError:  # (a full disk: the records still go back through pebble, as before)
            pass
    return records


def _grade_one(case: Case, impl_name: str, device: str, dtype: str, opts: RunOptions, marker: str | None) -> list[Record]:
    """:func:`grade_task`'s grading, before its records are written to the task's records file."""
    from .implementations import REGISTRY, load_mutants
    from .isolation import WORKER, cached, exit_status_guard, write_marker

    write_marker(marker)
    if impl_name.startswith("mutant-") and impl_name not in REGISTRY:
        load_mutants()
    impl = REGISTRY.get(impl_name)
    if impl is None or WORKER["init_error"]:
        stub = Implementation(name=impl_name, framework="numpy", fn=lambda *a, **k: [])
        why = WORKER["init_error"] or (f"implementation {impl_name!r} is not registered in the worker process: register it at "
                                       "import time of a plug-in module (--plugin MODULE or an entry point)")
        return [error_record(case, stub, device, dtype, opts, why)]
    cache = cached((case.id, case.source), lambda: CaseCache(case))
    if not cache.serves(case):  # another case with this id and source (cases built in code): its own cache
        cache = cached((case.id, case.source), lambda: CaseCache(case), replace=True)
    with exit_status_guard():
        try:
            return check_case(case, impl, device, dtype, opts, cache)
        except BaseException as exc:  # a bug in the harness itself, or user code's BaseException, must not lose the run
            # workers ignore SIGINT: a KeyboardInterrupt here was raised by code, not by Ctrl-C
            return [error_record(case, impl, device, dtype, opts, _failure_message(exc))]


def grade_batch(units: Sequence[tuple[Case, str, str, str]], opts: RunOptions, marker: str | None = None) -> int:
    """:func:`grade_task` of each ``(case, implementation_name, device, dtype)`` in turn, in one worker call (a
    batch of :func:`harness.isolation.run_supervised`: the harness's own built-ins, one case at a time); each
    unit's records go to the supervisor through :func:`harness.isolation.report_unit` as the unit ends.

    Returns:
        the number of units run."""
    from .isolation import report_unit, write_marker

    for j, (case, impl_name, device, dtype) in enumerate(units):
        write_marker(marker, j)  # the watchdog holds each task to its own time limit
        # the supervisor streams the records now, and keeps them should the batch be stopped later
        report_unit(marker, grade_task(case, impl_name, device, dtype, opts))
    return len(units)


def trusted(impl: Implementation) -> bool:
    """Whether an implementation is one of the harness's own built-ins (registered as ``builtin`` by a module of
    the harness package), whose tasks may share a worker call; a plug-in always runs in a call of its own."""
    return impl.kind == "builtin" and (getattr(impl.fn, "__module__", None) or "").startswith("harness.")


def _failure_message(exc: BaseException) -> str:
    if isinstance(exc, ErrorModelError):
        return str(exc)
    if isinstance(exc, Exception):
        return f"harness failure while grading: {_exc_text(exc)}"
    return f"the implementation's code raised {_exc_text(exc)} (a BaseException), outside the step call; not graded"


def plugin_sources(impls: Iterable[Implementation]) -> list[str]:
    """What a worker process must import to find these implementations: the module of each
    plug-in, by dotted name when that name imports the same file, else by its ``.py`` path."""
    import importlib.machinery
    import inspect
    import os

    out: list[str] = []
    for impl in impls:
        if impl.kind == "builtin":
            continue
        mod = getattr(impl.fn, "__module__", None) or ""
        if mod.startswith("harness.") or mod in ("__main__", "__mp_main__"):
            continue
        try:
            src = inspect.getsourcefile(inspect.unwrap(impl.fn))  # a wrapped step (torch_forward_step): its forward's file
        except TypeError:
            src = None
        if "." in mod or src is None:
            same = True  # a module of a package: importable by its name wherever its package is
        else:
            # found on sys.path itself (not only in sys.modules, where load_plugin puts a file it loaded by path)?
            spec = importlib.machinery.PathFinder.find_spec(mod)
            same = spec is not None and spec.origin is not None and os.path.realpath(spec.origin) == os.path.realpath(src)
        entry = mod if (same or src is None) else os.path.abspath(src)
        if entry and entry not in out:
            out.append(entry)
    return out


def verify(
    cases: CaseSource | Iterable[CaseSource],
    implementations: Iterable[str | Implementation | Callable[..., Any]] | None = None,
    *,
    devices: str | Iterable[str] | None = ("cpu",),
    dtypes: str | Iterable[str] | None = None,
    options: RunOptions | None = None,
    progress: Progress | None = None,
    isolation: str = "inline",
    jobs: int | None = None,
    timeout: float | None = None,
    plugins: Sequence[str] | None = None,
    on_records: Callable[[list[Record]], None] | None = None,
) -> list[Record]:
    """Grade implementations on cases across devices and dtypes.

    Every call gets its own inputs and is checked for writing into them, and a step
    that calls ``sys.exit`` gets an ``error`` record, in both modes (see
    :mod:`harness.isolation`).

    Args:
        cases: the cases, or case files and folders (``"cases/seed.toml"``; see :func:`harness.cases.as_cases`).
        implementations: names, :class:`Implementation` objects or registered step
            functions; None = every correct default implementation.
        devices: ``"cpu"``, ``"cuda"``, ``"all"`` or a list; None = every available device.
        dtypes: dtype names; None = each case's own ``dtypes``.
        options: TF32 and matmul-precision settings, ``repeat``.
        progress: called as ``progress(done, total, label)`` after each case/implementation/device/dtype.
        isolation: ``"inline"`` (default: in this process) or ``"process"``: each
            case/implementation/device/dtype runs in a supervised worker process, so
            that a step that crashes, calls ``os._exit`` or hangs past ``timeout``
            becomes an ``error`` record instead of ending (or stalling) the caller.
        jobs: worker processes with ``isolation="process"`` (default: the CPU cores).
        timeout: seconds per case/implementation/device/dtype with ``isolation="process"``
            (default: :func:`harness.isolation.default_timeout`).
        plugins: modules or ``.py`` paths the workers import to find the implementations
            (default: the modules of the plug-in implementations asked for).
        on_records: called with the records of each case/implementation/device/dtype as
            soon as it is graded (in completion order, which with ``jobs > 1`` is not the
            returned order): ``check`` streams them to its results file.

    Returns:
        the records, in case, implementation, device, dtype, step, quantity order
        (the same in both modes and for any ``jobs``).

    Raises:
        UsageError: for an unknown ``isolation``, or a ``timeout`` without ``isolation="process"``
            (:func:`harness.timeouts.check_timeout_isolation`).
    """
    from .devices import parse_dtypes

    if isolation not in ("inline", "process"):
        raise UsageError(f"isolation must be 'inline' or 'process', got {isolation!r}")
    check_timeout_isolation(timeout, isolation, "timeout", "isolation='process'")
    opts = options or RunOptions()
    impl_list = resolve(None) if implementations is None else [implementation_of(i) for i in implementations]
    devs = parse_devices(devices)
    dts = parse_dtypes(dtypes)
    case_list = as_cases(cases)
    units = [(c, i, dv, dt) for c in case_list for i in impl_list if case_mismatch(i, c) is None
             for dv in devs for dt in (dts or c.dtypes)]
    from .isolation import sigint_flag

    if isolation == "process":
        from .isolation import Task, run_supervised

        return run_supervised([Task(c, i, dv, dt) for c, i, dv, dt in units], opts, task=grade_task, error_record=error_record,
                              plugins=plugin_sources(impl_list) if plugins is None else plugins,
                              jobs=jobs, timeout=timeout, progress=progress, on_records=on_records,
                              batch_task=grade_batch, batchable=lambda t: trusted(t.implementation))
    records: list[Record] = []
    caches: dict[int, CaseCache] = {}
    for done, (c, i, dv, dt) in enumerate(units, start=1):
        cache = caches.setdefault(id(c), CaseCache(c))
        try:
            with sigint_flag():
                got = check_case(c, i, dv, dt, opts, cache)
        except BaseException as exc:  # a bug in the harness itself, or user code's BaseException, must not lose the run
            reraise_real_interrupt(exc)
            base = _base(c, i, dv, dt, opts)
            got = [_whole_run_record(base, "error", _failure_message(exc))]
        records.extend(got)
        if on_records is not None:
            on_records(got)
        if progress:
            progress(done, len(units), f"{c.id} {i.name} {dv} {dt}")
    late = left_thread_records()  # (a thread left by the last step that ended itself meanwhile)
    records.extend(late)
    if late and on_records is not None:
        on_records(late)
    return records
