"""The small public surface for users' own tests: default cases and ``assert_agrees``.

``assert_agrees`` follows ``torch.testing.assert_close``: compare first, raise at
the edge, and say exactly what was compared (case, device, dtype, quantity,
step), how many elements mismatched, the worst element with its index, the
exact and computed values, the bound, the ULPs, and a command that reproduces it.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from .cases import DEFAULT_TIER, Case, CaseSource, load_cases
from .errors import HarnessError, terminal_text
from .figures import lead, ulp_caveat, ulp_text
from .implementations import Implementation, implementation_of
from .records import Record
from .runner import RunOptions, verify
from .verdicts import failures, first_failure, nothing_graded


def cases_dir() -> Path:
    """The default case folder: ``$HARNESS_CASES``, else ``./cases``, else the project's ``cases/``."""
    env = os.environ.get("HARNESS_CASES")
    if env:
        return Path(env)
    here = Path.cwd() / "cases"
    if here.is_dir():
        return here
    return Path(__file__).resolve().parent.parent / "cases"


def default_cases(tags: Iterable[str] | None = None, tier: str = DEFAULT_TIER) -> list[Case]:
    """The cases of :func:`cases_dir` in ``tier`` (default ``quick``: the seed, NIST StRD and semantics
    cases and one generated case per regime x reduction x steps; see :data:`harness.cases.TIERS`).

    Args:
        tags: keep only cases carrying at least one of these tags.
        tier: ``"quick"``, ``"full"`` or ``"large"``.

    Raises:
        HarnessError: if a default case file is invalid (a bug in the project).
        ValueError: for an unknown tier.
    """
    res = load_cases([cases_dir()], tier=tier)
    if res.errors:
        raise HarnessError("; ".join(str(e) for e in res.errors))
    if tags is None:
        return res.cases
    want = set(tags)
    return [c for c in res.cases if want & set(c.tags)]


def plugin_arg(impl: Implementation) -> list[str]:
    """``--plugin`` arguments that make a repro command find a user's implementation; none for a step that is not
    registered under its name (a plain function given to :func:`assert_agrees`: ``check --plugin`` of its file would
    register nothing, and the command failed with "unknown implementation", helper-82; its repro line says what to do,
    :func:`repro_line`)."""
    from .implementations import REGISTRY

    if impl.kind != "plugin" or REGISTRY.get(impl.name) is not impl:
        return []
    try:
        src = inspect.getsourcefile(inspect.unwrap(impl.fn))  # a wrapped step (torch_forward_step): its forward's file
    except TypeError:
        src = None
    if src is None:
        return ["--plugin", impl.fn.__module__]
    try:
        return ["--plugin", os.path.relpath(src)]
    except ValueError:  # another drive on Windows
        return ["--plugin", src]


def repro_options(options: RunOptions, impl: Implementation) -> RunOptions:
    """``options`` with the ``--plugin`` arguments a repro command of ``impl`` needs (:func:`plugin_arg`) before its
    own, each once (the fixtures of the pytest plugin and :func:`assert_agrees`)."""
    arg, extra = plugin_arg(impl), list(options.extra_repro)
    if arg and not any(extra[i:i + 2] == arg for i in range(len(extra) - 1)):
        extra = [*arg, *extra]
    return dataclasses.replace(options, extra_repro=extra)


def repro_line(rec: Record) -> str:
    """``"Reproduce: <command>"`` of a failing record, with what the command still needs: a case file for a case built
    in memory, and registration for a step that is not registered under its name."""
    from .implementations import REGISTRY

    notes = []
    if "--cases" not in rec.repro:
        notes.append("the case was built in memory: save it to a TOML file and add --cases FILE")
    if rec.implementation not in REGISTRY:
        notes.append(f"{rec.implementation} is a plain function: decorate it with @harness.implementation("
                     f"\"{rec.implementation}\", framework=...) in its module and add --plugin FILE for check to find it")
    return f"Reproduce: {rec.repro}" + (f"  ({'; '.join(notes)})" if notes else "")


def _g(x: float | None) -> str:
    return "-" if x is None else f"{x:.6g}"


def format_failure(rec: Record) -> str:
    """A torch.testing-style description of one failing record: what was compared,
    the measure the verdict is made of (error / bound), mismatched elements, the worst element with its index, exact and computed
    values, the bound, ULPs, any diagnosis of autograd misuse, and a repro command."""
    if rec.quantity == "*":
        return f"{rec.implementation} on case {rec.case!r} ({rec.device}, {rec.dtype}): {rec.verdict}: {rec.message}\n{repro_line(rec)}"
    counts = rec.counts or {}
    bad = sum(v for k, v in counts.items() if k != "agree")
    size = sum(counts.values()) or 1
    lines = [
        f"{rec.quantity} (step {rec.step}) of {rec.implementation!r} on case {rec.case!r} ({rec.device}, {rec.dtype}): {rec.verdict}"
        + (f" (known framework bug: {rec.known_bug})" if rec.known_bug else ""),
        f"Verdict measure at the worst element: {lead(rec)} (above 1: disagree / suspect)",
        f"Mismatched elements: {bad} / {size} ({100.0 * bad / size:.1f}%)",
        f"Worst element (largest error / rigorous bound) at index {tuple(rec.worst_index or ())}: "
        f"error {_g(rec.abs_error_at_worst)} (exact {rec.exact}, computed {rec.computed}), "
        + (ulp_caveat(rec) or f"{_g(rec.ulp_error_at_worst)} ULPs"),
        f"Rigorous bound there: {_g(rec.rigorous_bound)}; expected bound {_g(rec.expected_bound)}",
        f"Over all elements: largest error {_g(rec.max_abs_error)}, {ulp_text(rec)}",
    ]
    if rec.message and not rec.message.startswith(f"{rec.quantity}: "):
        lines.append(f"Diagnosis: {rec.message}")
    lines.append(repro_line(rec))
    return "\n".join(lines)


def assert_agrees(
    step: str | Callable[..., Any] | Implementation,
    cases: CaseSource | Iterable[CaseSource] | None = None,
    *,
    devices: str | Iterable[str] | None = ("cpu",),
    dtypes: str | Iterable[str] | None = None,
    strict: bool = False,
    options: RunOptions | None = None,
    isolation: str = "inline",
    timeout: float | None = None,
    on_records: Callable[[list[Record]], None] | None = None,
    plugins: Sequence[str] | None = None,
) -> list[Record]:
    """Verify ``step`` and raise if the run fails by :mod:`harness.verdicts`' policy.

    Args:
        step: a registered step function, its name, or an :class:`Implementation`.
        cases: cases, or case files and folders (``"cases/seed.toml"``, a ``Path``; see
            :func:`harness.cases.as_cases`); default :func:`default_cases` (the quick tier).
        devices, dtypes: as :func:`harness.verify`.
        strict: also fail on ``suspect`` and on probed known framework bugs.
        options: run options (their ``extra_repro`` is kept, after the ``--plugin`` a repro needs).
        on_records: called with every record before the verdict is taken (the pytest plugin keeps them).
        isolation, timeout: as :func:`harness.verify`: ``"process"`` runs ``step`` in a
            supervised worker process (a crash, ``os._exit`` or a hang past ``timeout``
            becomes a failure instead of ending the caller). Either way ``step`` gets its
            own inputs, writing into them or calling ``sys.exit`` is an ``error``.
        plugins: as :func:`harness.verify`: what a worker process imports to find ``step``
            (default: the file that defines it).

    Returns:
        the records, when the run passes.

    Raises:
        AssertionError: naming the count of failing checks and the first one
            (:func:`harness.verdicts.first_failure`) in detail; or saying that
            nothing was graded (no record, or only unsupported/invalid-input).
    """
    impl = implementation_of(step)
    opts = options or RunOptions()
    opts = repro_options(opts, impl)
    records = verify(default_cases() if cases is None else cases, [impl], devices=devices, dtypes=dtypes, options=opts,
                     isolation=isolation, jobs=1 if isolation == "process" else None, timeout=timeout, plugins=plugins)
    if on_records is not None:
        on_records(records)
    raise_on_failure(records, impl.name, strict=strict)
    return records


#: How :func:`raise_on_failure`'s message for records that grade nothing starts (the pytest plugin reports such a test
#: as skipped where every record it graded says so).
NOTHING_GRADED = "nothing was graded for"


def raise_on_failure(records: list[Record], name: str, *, strict: bool = False) -> None:
    """Raise ``AssertionError`` when ``records`` fail a run (:func:`harness.verdicts.fails`) or grade nothing.

    The message counts the failing checks, names the case/dtype pairs, and
    describes the first failure (:func:`harness.verdicts.first_failure`) with
    :func:`format_failure`, its unprintable characters escaped (:func:`harness.errors.terminal_text`).
    """
    bad = failures(records, strict)
    if bad:
        first = first_failure(records, strict)
        assert first is not None
        where = sorted({f"{r.case} ({r.dtype})" for r in bad})
        more = f" on {len(where)} case/dtype pair(s): {', '.join(where[:5])}{', ...' if len(where) > 5 else ''}"
        raise AssertionError(terminal_text(  # (pytest prints it: a step's exception text holds no escape sequence there)
            f"{len(bad)} of {len(records)} checks of {name!r} failed{more}\nFirst failure:\n" + format_failure(first)
        ))
    if nothing_graded(records):
        what = "no record at all (no case, no dtype or no step)" if not records else \
            f"every one of the {len(records)} record(s) is unsupported, invalid-input or a whole-run overflow"
        raise AssertionError(f"{NOTHING_GRADED} {name!r}: {what}; nothing graded is no pass")
