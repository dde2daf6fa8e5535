"""The selftest: does the harness catch real bugs, without false alarms?

Runs every mutant (the built-in implementations registered with
``correct=False``: :mod:`harness.implementations.mutants` and
:mod:`harness.implementations.mutants_semantics`) and every correct
built-in implementation (plug-ins are not included) over the default cases. A mutant is *caught* when at
least one of its records has one of the verdicts it declares (``disagree`` for
wrong formulas, ``disagree``/``suspect`` for precision downgrades, ``error``
for autograd misuse PyTorch refuses). A *false alarm* is a ``suspect``,
``disagree`` or ``error`` verdict on a correct implementation that is not a
probed known framework bug (:func:`harness.verdicts.is_alarm`).

The mutation score is caught / mutants. The selftest passes only at 100% with
zero false alarms.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .cases import Case
from .implementations import REGISTRY, Implementation, load_builtins, load_mutants
from .records import Record
from .runner import RunOptions, verify
from .verdicts import is_alarm, nothing_graded


@dataclass
class MutantResult:
    """How one mutant fared: caught or not, where, and its verdict counts."""

    name: str
    description: str
    expected: tuple[str, ...]
    caught: bool
    caught_by: str = ""
    verdicts: Counter[str] = field(default_factory=Counter)
    diagnoses: Counter[str] = field(default_factory=Counter)

    @property
    def diagnosis(self) -> str:
        """The most frequent diagnosis of its failing records (:mod:`harness.diagnose`), or ``""``."""
        return self.diagnoses.most_common(1)[0][0] if self.diagnoses else ""


@dataclass
class SelftestResult:
    mutants: list[MutantResult]
    false_alarms: list[Record]
    correct_records: int
    correct_graded: int = 0

    @property
    def score(self) -> float:
        return sum(m.caught for m in self.mutants) / len(self.mutants) if self.mutants else 0.0

    @property
    def passed(self) -> bool:
        """100% mutation score, no false alarm, and something graded (nothing graded is no pass)."""
        return bool(self.mutants) and all(m.caught for m in self.mutants) and not self.false_alarms and self.correct_graded > 0


def run_selftest(
    cases: Sequence[Case],
    *,
    dtypes: Sequence[str] | None = None,
    options: RunOptions | None = None,
    progress: Callable[[str], None] | None = None,
    progress_count: Callable[[int, int, str], None] | None = None,
) -> SelftestResult:
    """Run the mutants (stopping at the first case that catches each) and the correct implementations.

    Args:
        cases: the cases (the selftest uses every default case).
        dtypes: dtypes to run (None = each case's own).
        options: run options (the trajectory is skipped for speed unless set).
        progress: called with a line of text after each implementation.
        progress_count: called as ``progress_count(done, total, label)`` after each mutant and after each
            case/dtype of each correct implementation (a progress bar, or lines with the ETA:
            :class:`harness.progress.Progress`), so that a long selftest is never silent for long.
    """
    load_builtins()
    load_mutants()
    opts = options or RunOptions(trajectory=False)
    mutants = [i for i in REGISTRY.values() if not i.correct and i.kind != "plugin"]
    correct = [i for i in REGISTRY.values() if i.correct and i.default and i.kind == "builtin"]  # opt-in ones (torch-compile) run only when named
    results: list[MutantResult] = []
    # the case/dtype units of one correct implementation (on the CPU), for progress_count
    per_impl = sum(len(dtypes or c.dtypes) for c in cases) if progress_count else len(cases)
    total = len(mutants) + len(correct) * per_impl
    done = 0

    def report(line: str, units: int = 1) -> None:
        nonlocal done
        done += units
        if progress:
            progress(line)
        if progress_count:
            progress_count(done, total, line)

    def unit_progress(impl_done: int, impl_total: int, label: str) -> None:
        if progress_count:
            progress_count(done + impl_done, total, label)

    for m in mutants:
        res = MutantResult(m.name, m.description, m.expected, caught=False)
        for case in cases:
            recs = verify([case], [m], dtypes=dtypes, options=opts)
            res.verdicts.update(r.verdict for r in recs)
            res.diagnoses.update(r.diagnosis for r in recs if r.diagnosis)
            hit = next((r for r in recs if r.verdict in m.expected), None)
            if hit is not None:
                res.caught = True
                res.caught_by = f"{hit.verdict} on {hit.case} ({hit.dtype}, {hit.quantity}, step {hit.step})"
                break
        results.append(res)
        report(f"{m.name}: {'caught, ' + res.caught_by if res.caught else 'NOT CAUGHT'}")
    alarms: list[Record] = []
    n_correct = 0
    n_graded = 0
    for impl in correct:
        recs = verify(cases, [impl], dtypes=dtypes, options=opts, progress=unit_progress)
        n_correct += len(recs)
        n_graded += sum(not nothing_graded([r]) for r in recs)
        bad = [r for r in recs if is_alarm(r)]  # a probed known framework bug (known_bug set) is no false alarm
        alarms.extend(bad)
        report(f"{impl.name} (correct): {len(recs)} records, {len(bad)} false alarm(s)", per_impl)
    return SelftestResult(results, alarms, n_correct, n_graded)


def format_selftest(res: SelftestResult, mutants: Sequence[Implementation] | None = None) -> str:
    """The selftest report: one line per mutant, the false alarms, and the score."""
    lines = ["mutant                              expected            result"]
    for m in res.mutants:
        lines.append(f"{m.name:35s} {'/'.join(m.expected):19s} {'caught: ' + m.caught_by if m.caught else 'NOT CAUGHT ' + dict(m.verdicts).__repr__()}"
                     + (f"; looks like: {m.diagnosis}" if m.diagnosis else ""))
    lines.append("")
    caught = sum(m.caught for m in res.mutants)
    lines.append(f"mutation score: {caught}/{len(res.mutants)} = {100 * res.score:.1f}%")
    lines.append(f"false alarms on correct implementations: {len(res.false_alarms)} of {res.correct_records} records")
    for r in res.false_alarms[:20]:
        lines.append(f"  {r.verdict}: {r.implementation} {r.case} {r.device} {r.dtype} {r.quantity} step {r.step}: {r.message}")
    if not res.mutants or not res.correct_graded:
        lines.append("nothing was graded (no mutant, or no graded record of a correct implementation): nothing graded is no pass")
    lines.append("selftest " + ("PASSED" if res.passed else "FAILED"))
    return "\n".join(lines)
