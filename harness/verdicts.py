"""The verdict policy: the one place that says what a verdict means for a run.

Every entry point (the CLI, :func:`harness.verify` / :func:`harness.assert_agrees`,
the pytest plugin, the selftest, the terminal summary, the HTML report, the
sweep test and the benchmark's correctness check) asks this module:

- the verdicts and their severity order (:data:`VERDICTS`, :func:`worst_verdict`);
- the quantity order of a step (:data:`QUANTITIES`, :func:`quantity_rank`);
- which verdicts fail a run, with and without ``--strict`` (:func:`failing_verdicts`,
  :func:`fails`);
- how a framework bug that the harness knows and has *probed* counts
  (:func:`fails`: it does not fail a run unless ``strict``; it is always reported);
- that a run in which nothing was graded is a failure (:func:`nothing_graded`);
- how the first failure is chosen (:func:`first_failure`);
- the exit code of a run and the plain-words reason for it (:func:`run_outcome`).

=================  ========  ================  ==========================================
verdict            severity  fails a run       meaning
=================  ========  ================  ==========================================
``agree``          0         no                error within the expected (probabilistic) bound
``unsupported``    1         no                the framework lacks this dtype/device pair, or
                                               no element of a model's quantity has a
                                               computable exact value (not graded)
``overflow``       2         no                a non-finite element where the exact value, or an
                                               intermediate that some correct evaluation order
                                               forms, leaves the range (NaN only where inf - inf
                                               or 0 * inf can occur); elsewhere NaN/inf is disagree
``suspect``        3         with ``strict``   above the expected bound, within the rigorous one;
                                               or a NaN that only an order summing the terms by
                                               sign forms (:mod:`harness.bounds`, typical-order NaN)
``invalid-input``  4         yes               the case cannot be graded (NaN/inf inputs)
``disagree``       5         yes               above the rigorous bound: impossible for a
                                               correct evaluation (NaN/inf included)
``error``          6         yes               the implementation raised, exited, crashed,
                                               hung, mutated its inputs or returned junk
=================  ========  ================  ==========================================

A failing record whose ``known_bug`` field is set (the implementation probed the
framework and found a known bug, e.g. torch's CPU fused SGD in half precision)
keeps its verdict and is reported everywhere, but fails a run only with
``strict``: the harness found a framework's bug, not the user's.  A run with no
graded record at all (empty, or every record ``unsupported``, ``invalid-input``, or a
whole-run ``overflow`` record: inputs that overflow the dtype) fails: nothing graded is never a pass.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

#: Record-level verdicts, from best to worst (the severity order).
VERDICTS = ("agree", "unsupported", "overflow", "suspect", "invalid-input", "disagree", "error")
#: verdict -> severity (index in :data:`VERDICTS`).
SEVERITY = {v: i for i, v in enumerate(VERDICTS)}
#: Element-level verdicts of :func:`harness.compare.compare`, from best to worst.
ELEMENT_VERDICTS = ("agree", "overflow", "suspect", "disagree")
#: Verdicts that always fail a run.
FAILING = ("invalid-input", "disagree", "error")
#: Verdicts that fail a run with ``strict`` (``--strict``) only.
STRICT_ONLY = ("suspect",)
#: Verdicts that say nothing about correctness: a run made only of these graded nothing.
NOT_GRADED = ("unsupported", "invalid-input")
#: The quantities of one step, in the order records, tables and messages use.
QUANTITIES = ("loss", "grad_W", "grad_b", "W", "b")
#: ``"*"`` is a whole-run record (unsupported, invalid-input, error): it comes first.
QUANTITY_ORDER = {"*": -1, **{q: i for i, q in enumerate(QUANTITIES)}}


class Verdicted(Protocol):
    """What the policy reads of a record (:class:`harness.records.Record` has it)."""

    verdict: str
    quantity: str
    step: int
    bound_ratio: float | None
    known_bug: str


R = TypeVar("R", bound=Verdicted)


def severity(verdict: str) -> int:
    """Severity of ``verdict``; an unknown verdict (a hand-edited file) ranks above ``error``."""
    return SEVERITY.get(verdict, len(VERDICTS))


def worst_verdict(verdicts: Iterable[str]) -> str:
    """The most severe of ``verdicts`` (``"agree"`` for none)."""
    return max(verdicts, key=severity, default="agree")


def _beyond(error: float | None, bound: float | None) -> bool:
    """Whether a finite ``error`` is above ``bound`` as :func:`harness.compare.compare` rates it (``error / bound > 1``;
    an error of 0 never is; None for either: not known)."""
    if error is None or bound is None or not math.isfinite(error) or error == 0:
        return False
    return bound == 0 or error / bound > 1


def contradiction(verdict: str, quantity: str, counts: dict[str, int], bound_ratio: float | None,
                  expected_ratio: float | None, *, abs_error_at_worst: float | None = None,
                  rigorous_bound: float | None = None, expected_bound: float | None = None,
                  shape: Sequence[int] | None = None, exact: str | None = None, computed: str | None = None,
                  lower_limit: float | None = None, exact_rational: str | None = None) -> str | None:
    """Why a record's ``verdict`` contradicts its own figures, in words, or None when it does not:

    - a whole-run record (``quantity`` ``"*"``) grades no element, so it is never ``agree`` or ``suspect`` (a file
      edited from ``error`` to ``agree`` was one agreeing record, helper-80), and an ``unsupported`` or ``overflow`` one
      has no element counts, exact or computed value (helper-124);
    - a record's verdict is at least as severe as the worst verdict among its elements (``counts``:
      :data:`ELEMENT_VERDICTS` -> how many; :mod:`harness.repeat` may make it more severe, nothing makes it less),
      except ``unsupported`` (no element has an exact value: a model's quantity, where a non-finite element is
      counted ``overflow``), whose elements are ``agree`` or ``overflow`` only;
    - an error within the expected bound (``agree``) has ``expected_ratio`` and ``bound_ratio`` at most 1, and one
      within the rigorous bound (``suspect``) ``bound_ratio`` at most 1 (the ratios: worst error over the bound);
      so do its worst element's error and bounds (``abs_error_at_worst`` over ``rigorous_bound`` and
      ``expected_bound``), and none of these is NaN (a file edited to ``agree`` with its ratios and counts
      removed or set to NaN passed, helper-94);
    - none of those figures is negative; an ``agree`` or ``suspect`` record of a quantity (not ``"*"``) whose ``counts``
      are given counts every element of its ``shape``, and one of an array without counts has some figure; and its
      worst element's ``computed`` value is no farther from its ``exact`` value (decimal strings) than its bounds
      allow, within float64's rounding of the two strings (a file edited to ``agree`` with its counts emptied, its
      ratios made negative, or its ratios and error made small while the exact and computed values still showed the
      violation passed, helper-124);
    - an ``overflow`` record of a quantity (its other elements ``agree``) has a finite worst element, if any, within
      its bounds;
    - an ``unsupported`` record of a quantity (not ``"*"``) has no exact value (``exact`` not a finite number: a
      ``disagree`` record edited to ``unsupported`` was not graded, helper-124);
    - a record with a ``lower_limit`` (the loss's floor, :class:`harness.bounds.LossFloor`: a finite value below it is
      ``disagree`` whatever the two-sided bounds say, :func:`harness.compare.compare`) fails (:data:`FAILING`) where
      its worst element's ``computed`` value is finite and below it, and its ``lower_limit`` is a number
      >= 0 (a loss below the floor, within every two-sided bound, edited from ``disagree`` to ``agree`` passed,
      helper-176); and a passing record's ``computed`` value reads as a number;
    - a passing record's ``exact`` value (a decimal string, cut short) is its ``exact_rational`` (``"p/q"``, where the
      harness wrote one) within float64's rounding of the two (an ``exact`` edited to equal ``computed``, its error and
      ratios made small, read as agreeing, helper-181).

    A results file edited by hand from ``disagree`` to ``agree`` was reported as passing (helper-79). A verdict outside
    :data:`VERDICTS`: None."""
    if verdict not in SEVERITY:
        return None
    if quantity == "*" and verdict in ("agree", "suspect"):
        return "a whole-run record (quantity '*') grades no element"
    if quantity == "*" and verdict in ("unsupported", "overflow") and (
            any(counts.values()) or record_float(exact) is not None or record_float(computed) is not None):
        # (a disagree record edited to a whole run's unsupported passed, helper-124)
        return "a whole-run record (quantity '*') grades no element, yet it has element counts or values"
    if computed is not None and verdict not in FAILING and not _readable(computed):
        # (a float's repr, as the harness writes it: a hand-edited "0x1.c98p+4" hid a value below its floor, helper-176)
        return f"its computed value, {computed!r}, is not a number"
    if lower_limit is not None:
        if math.isnan(lower_limit) or lower_limit < 0:
            return f"its lower_limit, {lower_limit!r}, is not a number >= 0 (a floor of a sum of squares is)"
        c = record_float(computed)
        if c is not None and c < lower_limit and verdict not in FAILING:
            return (f"its computed value, {computed}, is below its lower_limit, {lower_limit:.6g}, which only a "
                    "disagree record's is (no correct evaluation gives a value below its floor)")
    if exact_rational is not None and verdict not in FAILING:
        off = _not_its_rational(exact, exact_rational)
        if off:
            return off
    held = [v for v, n in counts.items() if n]
    if verdict == "unsupported":
        worse = [v for v in held if v not in ("agree", "overflow")]
        if worse:
            return f"{counts[worse[0]]} of its elements are {worse[0]}"
        if quantity != "*" and record_float(exact) is not None:
            return f"it has an exact value, {exact}, which no unsupported record of a quantity has"
    else:
        worst = max(held, key=severity) if held else None
        if worst is not None and severity(worst) > SEVERITY[verdict]:
            return f"{counts[worst]} of its elements are {worst}"
    if verdict in ("agree", "suspect"):
        figures = {"bound_ratio": bound_ratio, "expected_ratio": expected_ratio, "abs_error_at_worst": abs_error_at_worst,
                   "rigorous_bound": rigorous_bound, "expected_bound": expected_bound}
        nan = [k for k, v in figures.items() if v is not None and math.isnan(v)]
        if nan:
            return f"its {nan[0]} is NaN (a graded element's figures are numbers)"
        negative = [k for k, v in figures.items() if v is not None and v < 0]
        if negative:
            return f"its {negative[0]} is negative (errors, bounds and their ratios are not)"
        size = 1
        for n in shape or ():
            size *= int(n)
        if quantity != "*" and shape is not None and size:
            # (records built without counts, as some tools and older files have them, name figures instead)
            if held and sum(counts.values()) != size:
                return f"its counts grade {sum(counts.values())} of its {size} element(s)"
            if not held and shape and all(v is None for v in figures.values()):
                # (not for a scalar's record: Record's defaults, shape [] and nothing else, are how tools build one)
                return "it grades none of its elements: no counts, no ratio, no error and no bound"
        far = _far_from_exact(exact, computed, rigorous_bound, expected_bound if verdict == "agree" else None)
        if far:
            return far
        if abs_error_at_worst is not None and math.isinf(abs_error_at_worst) and (
                verdict == "agree" or (rigorous_bound is not None and rigorous_bound < 2.0**970)):
            # an error not measurable (an exact value beyond float64) is suspect at best, and only within a bound of
            # 2**970 or more (harness.compare): helper-96
            return f"its worst element's error is infinite, which no {verdict} element has (within a bound below 2**970)"
        if _beyond(abs_error_at_worst, rigorous_bound):
            return (f"its worst element's error, {abs_error_at_worst:.6g}, is above its rigorous bound, "
                    f"{rigorous_bound:.6g}")
        if verdict == "agree" and _beyond(abs_error_at_worst, expected_bound):
            return (f"its worst element's error, {abs_error_at_worst:.6g}, is above its expected bound, "
                    f"{expected_bound:.6g}")
    if verdict in ("agree", "suspect") and bound_ratio is not None and bound_ratio > 1:
        return f"its bound_ratio, {bound_ratio:.6g}, is above 1 (an error beyond the rigorous bound)"
    if verdict == "agree" and expected_ratio is not None and expected_ratio > 1:
        return f"its expected_ratio, {expected_ratio:.6g}, is above 1 (an error beyond the expected bound)"
    if verdict == "overflow" and quantity != "*":
        # its elements are overflow (non-finite: harness.compare) or agree, and its worst element is a finite one where
        # it has any: that one agrees (a disagree record edited to overflow passed, helper-124)
        far = _far_from_exact(exact, computed, rigorous_bound, expected_bound)
        if far:
            return far
    return None


def _readable(x: Any) -> bool:
    """Whether a record's decimal string (or float) reads as a number, finite or not (:func:`record_float`'s reading)."""
    if isinstance(x, str):
        x = x.strip().rstrip(".").rstrip("\u2026")
    try:
        float(x)
    except (TypeError, ValueError):
        return False
    except OverflowError:  # pragma: no cover - float() of a string gives inf instead
        return True
    return True


def record_float(x: Any, _isfinite: Any = math.isfinite) -> float | None:
    """A record's figure as a finite float, None if it is not one: a float, or a decimal string
    (``"0.48999989986420189325..."``: cut short with ``...`` it reads as its digits; ``"1.5e+5000"`` and ``"nan"``
    are not finite). The one reader of a record's decimal strings (:mod:`harness.figures` reads them with it)."""
    if type(x) is float:  # the common case, the same answer as below without the conversions
        return x if _isfinite(x) else None
    if isinstance(x, str):
        x = x.strip().rstrip(".").rstrip("\u2026")
    try:
        v = float(x)
    except (TypeError, ValueError, OverflowError):
        return None
    return v if _isfinite(v) else None


def _not_its_rational(exact: str | None, rational: str) -> str | None:
    """Why a record's ``exact`` decimal string is not the value of its ``exact_rational`` (``"p/q"`` or ``"p"``), or
    None (also where either does not read as a finite number). Both are read to float64 (``int(p) / int(q)`` is
    correctly rounded), so only a difference beyond 2**-50 of the larger magnitude and one subnormal spacing is named."""
    e = record_float(exact)
    if e is None:
        return None
    p, _, q = rational.partition("/")
    try:
        r = int(p) / int(q or 1)
    except (ValueError, ZeroDivisionError, OverflowError):
        return None
    # (plus one subnormal spacing: below float64's normal range the two roundings may fall on neighbouring subnormals,
    # 2**-1074 apart, however close the two values are; the harness writes no such rational, it is over 80 characters)
    if abs(e - r) > 2.0**-50 * max(abs(e), abs(r)) + 2.0**-1074:
        return f"its exact value, {exact}, is not its exact_rational, {rational[:80]} (= {r:.17g})"
    return None


def _far_from_exact(exact: str | None, computed: str | None, rigorous: float | None,
                    expected: float | None) -> str | None:
    """Why the worst element's ``computed`` value is farther from its ``exact`` value than the ``rigorous`` (or
    ``expected``) bound allows, or None. Both strings are read as float64 and subtracted in float64: the difference is
    within 2**-50 of the larger magnitude of the true one, so only an error beyond the bound by more than that (and by
    a relative 1e-9 of the bound) is named; a non-finite value or bound names nothing."""
    e, c = record_float(exact), record_float(computed)
    if e is None or c is None:
        return None
    err = abs(c - e)
    slack = 2.0**-50 * max(abs(c), abs(e))
    for name, bound in (("rigorous", rigorous), ("expected", expected)):
        if bound is not None and math.isfinite(bound) and err > bound * (1 + 1e-9) + slack:
            return (f"its worst element's computed value, {computed}, is {err:.6g} from its exact value, {exact}: above "
                    f"its {name} bound, {bound:.6g}")
    return None


_PARAM = re.compile(r"^([Wb])(\d*)$")


def _param_rank(name: str) -> int | None:
    """``W`` 0, ``b`` 1, ``W1`` 2, ``b1`` 3, ``W2`` 4, ...: layer by layer, W before b (None: another name)."""
    m = _PARAM.match(name)
    if m is None:
        return None
    return 2 * int(m.group(2) or 0) + (0 if m.group(1) == "W" else 1)


def quantity_rank(quantity: str) -> int:
    """Sort key of ``quantity`` within a step: the whole-run record ``"*"``, ``loss``, every gradient,
    every updated parameter, then the optimizer state; layer by layer, W before b.

    The linear path's quantities keep :data:`QUANTITY_ORDER`; a model's (:meth:`harness.models.ModelSpec.quantities`:
    ``grad_W1``, ``grad_b1``, ..., ``W1``, ...) follow the same order; names it does not know (an expression
    model's parameters ``a``, ``grad_a``) rank after the parameters it knows in their group."""
    if quantity in ("*", "loss"):
        return QUANTITY_ORDER[quantity]
    if quantity.startswith("grad_"):
        rank = _param_rank(quantity[5:])
        return 100 + (99 if rank is None else rank)
    rank = _param_rank(quantity)
    if rank is not None:
        return 200 + rank
    head, _, tail = quantity.rpartition("_")
    state = _param_rank(tail) if head else None
    return 300 + state if state is not None else 299  # optimizer state (exp_avg_W), else an expression's parameter


def failing_verdicts(strict: bool = False) -> frozenset[str]:
    """The verdicts that fail a run: :data:`FAILING`, plus :data:`STRICT_ONLY` with ``strict``."""
    return _failing_verdicts(bool(strict), FAILING, STRICT_ONLY)


@functools.lru_cache(maxsize=8)
def _failing_verdicts(strict: bool, failing: tuple[str, ...], strict_only: tuple[str, ...]) -> frozenset[str]:
    """:func:`failing_verdicts` of the tuples as they are now (keyed by them: a rebound tuple is read again)."""
    return frozenset(failing) | (frozenset(strict_only) if strict else frozenset())


def fails(rec: Verdicted, strict: bool = False) -> bool:
    """Whether ``rec`` fails a run (see the module's table; a probed known framework bug only with ``strict``).

    A verdict this version does not know (a hand-edited results file) always fails: never a pass."""
    if rec.verdict not in SEVERITY:
        return True
    if rec.verdict not in failing_verdicts(strict):
        return False
    return strict or not rec.known_bug


def is_alarm(rec: Verdicted) -> bool:
    """A verdict that would be a false alarm on a correct implementation (suspect, disagree, error),
    not counting a probed known framework bug (the selftest's definition)."""
    return rec.verdict in ("suspect", "disagree", "error") and not rec.known_bug


def failures(records: Iterable[R], strict: bool = False) -> list[R]:
    """The records that fail a run, in their original order."""
    return [r for r in records if fails(r, strict)]


def graded(rec: Verdicted) -> bool:
    """Whether ``rec`` says something about an implementation's correctness: not ``unsupported`` or
    ``invalid-input``, and not a whole-run record (quantity ``"*"``) other than ``error`` (a whole-run
    ``overflow``, inputs that are inf once rounded to the dtype, graded nothing)."""
    if rec.verdict in NOT_GRADED:
        return False
    return not (rec.quantity == "*" and rec.verdict != "error")


def nothing_graded(records: Iterable[Verdicted]) -> bool:
    """True when no record says anything about correctness (none, or none :func:`graded`)."""
    return not any(graded(r) for r in records)


def first_failure(records: Sequence[R], strict: bool = False) -> R | None:
    """The failure to show first: the earliest step (later steps inherit its error),
    then the quantity order (loss, grad_W, grad_b, W, b), then the most severe
    verdict, then the largest error / rigorous bound; ties keep the run order."""
    bad = failures(records, strict)
    if not bad:
        return None
    return min(bad, key=lambda r: (r.step, quantity_rank(r.quantity), -severity(r.verdict), -(r.bound_ratio or 0.0)))


@dataclass
class RunOutcome:
    """The exit code of a run and why, in plain words.

    Attributes:
        code: 0 everything graded agrees; 1 a failing verdict (see :func:`fails`) or
            nothing graded; 2 bad input (case files that could not be loaded, or
            ``invalid-input`` records) and nothing worse.
        reasons: lines that say why, to print last.
    """

    code: int
    reasons: list[str] = field(default_factory=list)


def _unsupported_because(records: Iterable[Verdicted]) -> str:
    """``"unsupported because: ..."``: the first clause of up to three distinct messages of the ``unsupported`` records
    (200 characters each), or ``""`` where there is none."""
    messages = (str(getattr(r, "message", "")) for r in records if r.verdict == "unsupported")
    why = sorted({m.split("; ")[0] for m in messages if m})
    if not why:
        return ""
    return "unsupported because: " + "; ".join(w[:200] for w in why[:3]) + ("; ..." if len(why) > 3 else "")


def ungraded_named(records: Sequence[Verdicted], named: Iterable[str], *, unrun: bool | Iterable[str] = False) -> list[str]:
    """Why each implementation of ``named`` (the ones a user asked for by name) fails a run that graded something:
    it has records and none grades it (:func:`graded`), one line each, empty when all did or nothing was graded
    (then :func:`nothing_graded` says so; an implementation without any record did not run: pytest's ``-k``
    deselected its items, helper-61). Each would otherwise pass unseen beside the others (a plug-in whose
    framework is not installed, or that runs on no device of this machine, exited 0 next to ``torch-seed``:
    helper-60). ``unrun``: the implementations that had no task at all (True: every one without a record: ``check``,
    where nothing deselects a task; the pytest plugin's, those it made no item for): each without a record is one too,
    having run on none of the cases, none having the model or update rule it implements
    (:func:`harness.runner.case_mismatch`; ``check --implementations numpy-hand,numpy-model`` on the linear seed case
    exited 0, numpy-model graded nothing, helper-176)."""
    if _FROZEN["nothing_graded"](records):  # (the frozen policy, as run_outcome's: see _FROZEN)
        return []
    seen = {getattr(r, "implementation", None) for r in records if _frozen_graded(r)}
    ran = {getattr(r, "implementation", None) for r in records}
    named = list(dict.fromkeys(named))
    never = set(named) if unrun is True else set(unrun or ())
    lines = []
    for name in named:
        if name in seen or (name not in ran and name not in never):  # no record: not run (pytest's -k deselected it)
            continue
        if name not in ran:
            lines.append(f"{name}, named in the implementations, ran on none of the cases (none has the model or update "
                         "rule it implements): nothing graded is no pass")
            continue
        why = _unsupported_because(r for r in records if getattr(r, "implementation", None) == name)
        lines.append(f"{name}, named in the implementations, graded nothing (no record, or every record is unsupported, "
                     "invalid-input or a whole-run overflow): nothing graded is no pass" + (f" ({why})" if why else ""))
    return lines


def run_outcome(records: Sequence[Verdicted], *, strict: bool = False, load_errors: int = 0,
                named: Iterable[str] = (), unrun: bool | Iterable[str] = False) -> RunOutcome:
    """Decide a run's exit code from its records (and the number of case files or cases that failed to load, and
    the implementations the user named: each must grade something, :func:`ungraded_named`, with ``unrun`` also each
    one without a record that had no task)."""
    from collections import Counter

    bad = _FROZEN["failures"](records, strict)
    counts = Counter(r.verdict for r in bad)
    known = [r for r in records if r.known_bug and r.verdict in FAILING + STRICT_ONLY]
    reasons: list[str] = []
    code = 0
    wrong = [r for r in bad if r.verdict != "invalid-input"]
    if wrong:
        code = 1
        parts = ", ".join(f"{counts[v]} {v}" for v in reversed(VERDICTS) if counts[v] and v != "invalid-input")
        unknown = ", ".join(f"{n} {v!r}" for v, n in counts.items() if v not in SEVERITY)
        reasons.append(f"exit 1: {parts or unknown} record(s) fail{' with --strict' if strict and counts['suspect'] else ''}")
    if known and not strict:
        kinds = sorted({r.known_bug for r in known})
        reasons.append(f"not counted: {len(known)} failing record(s) are a known framework bug their implementation declares "
                       f"({'; '.join(kinds[:3])}{'; ...' if len(kinds) > 3 else ''}); --strict counts them")
    if load_errors or counts["invalid-input"]:
        code = 2 if code == 0 else code
        what = []
        if load_errors:
            what.append(f"{load_errors} case file(s) or case(s) could not be loaded")
        if counts["invalid-input"]:
            what.append(f"{counts['invalid-input']} invalid-input record(s)")
        reasons.append(f"{'exit 2' if code == 2 else 'also'}: bad input: {', '.join(what)}")
    silent = ungraded_named(records, named, unrun=unrun)
    if silent:
        code = code or 1
        reasons.extend(f"exit 1: {line}" for line in silent)
    if _FROZEN["nothing_graded"](records):
        code = code or 1
        reasons.append("exit 1: nothing was graded (no record, or every record is unsupported, invalid-input or a whole-run overflow): "
                       "nothing graded is no pass"
                       if code == 1 else "nothing was graded")
        why = _unsupported_because(records)
        if why:  # e.g. the step's framework is not installed: say it here, not only in the results file
            reasons.append(why)
    partly = [r for r in records if r.verdict == "unsupported" and r.quantity != "*"]
    if partly and not _FROZEN["nothing_graded"](records):  # a model's quantity with no exact value: said, not only in the file
        ex = partly[0]
        why = str(getattr(ex, "message", "")).split("; ")[0]
        reasons.append(f"not graded: {len(partly)} record(s) of a quantity whose exact value could not be computed "
                       f"(unsupported), e.g. case {getattr(ex, 'case', '?')}, {getattr(ex, 'implementation', '?')}, "
                       f"{getattr(ex, 'dtype', '?')}, step {ex.step}: {why[:200]}")
    if code == 0:
        notes = []
        if any(r.verdict == "suspect" for r in records) and not strict:
            notes.append("suspect counted as a pass without --strict")
        if known and not strict:
            notes.append("the known framework bug above is reported, not counted")
        reasons.append(f"exit 0: every graded record passes{' (' + '; '.join(notes) + ')' if notes else ''}")
    return RunOutcome(code, reasons)


def _frozen_fails(rec: Verdicted, strict: bool = False, _severity: frozenset[str] = frozenset(SEVERITY),
                  _failing: frozenset[str] = frozenset(FAILING), _strict: frozenset[str] = frozenset(STRICT_ONLY)) -> bool:
    if rec.verdict not in _severity:
        return True
    if rec.verdict not in (_failing | _strict if strict else _failing):
        return False
    return strict or not rec.known_bug


def _frozen_graded(rec: Verdicted, _not_graded: tuple[str, ...] = NOT_GRADED) -> bool:
    return rec.verdict not in _not_graded and not (rec.quantity == "*" and rec.verdict != "error")


#: The policy :func:`run_outcome` applies, bound when this module is imported: a plug-in that
#: replaces ``harness.verdicts.failures`` (or ``fails``, ``nothing_graded``) in the process that
#: decides the exit code does not change it. (A plug-in runs arbitrary Python in that process:
#: this stops the obvious patch, not a determined one; see README, "Limits of isolation".)
_FROZEN: dict[str, Callable[..., Any]] = {
    "failures": lambda records, strict=False: [r for r in records if _frozen_fails(r, strict)],
    "nothing_graded": lambda records: not any(_frozen_graded(r) for r in records),
}
