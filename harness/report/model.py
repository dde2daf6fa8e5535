"""What the HTML report shows, computed from results files (a view of the records, never a source of truth).

:func:`build_model` reads one or more JSON-lines results files (see
:mod:`harness.records`) and aggregates them into plain Python structures that
the template renders: verdict counts, the environment of every machine, the
agreement matrix (implementation x device x dtype), one row per *run* (case x
implementation x device x dtype) with the records worth drilling into, and the
seed notebook case step by step.

Units: ``bits_of_error = log2(1 + ulp_error)`` where ``ulp_error`` counts ULPs
of the record's dtype; ``bound_ratio`` is the worst absolute error divided by
the rigorous (Higham, ch. 3) forward error bound, ``expected_ratio`` the same
for the probabilistic (Higham and Mary 2019) bound.
"""

from __future__ import annotations

import gc
import math
import shlex
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..figures import ulp_caveat
from ..records import Malformed, Record, ResultsFile, read_jsonl
from ..shard import parse_shard
from ..verdicts import FAILING, SEVERITY, STRICT_ONLY, VERDICTS, RunOutcome, quantity_rank, worst_verdict
from ..verdicts import run_outcome as _run_outcome

#: Records kept in the drill-down of one run: every record that does not
#: agree (up to this many), plus the worst record of each quantity.
MAX_DETAIL_PER_RUN = 25
#: Detail lines in the whole report; past this, runs show their summary row only.
MAX_DETAIL_TOTAL = 20_000

#: Environment keys shown first, in this order, with their labels.
ENV_FIELDS: tuple[tuple[str, str], ...] = (
    ("hostname", "host"),
    ("time", "time"),
    ("git_commit", "git commit"),
    ("python", "Python"),
    ("torch", "torch"),
    ("numpy", "NumPy"),
    ("sympy", "SymPy"),
    ("platform", "platform"),
    ("cpu", "CPU"),
    ("cpu_count", "CPU cores"),
    ("torch_threads", "torch threads"),
    ("cuda_available", "CUDA available"),
    ("cuda_version", "CUDA version"),
    ("cuda_devices", "GPUs"),
    ("cuda_matmul_allow_tf32", "TF32 matmul"),
    ("cudnn_allow_tf32", "TF32 cuDNN"),
    ("float32_matmul_precision", "float32 matmul precision"),
    ("tf32_option", "--tf32"),
    ("matmul_precision_option", "--matmul-precision"),
    ("mps_available", "MPS available"),
    ("command", "command"),
    ("argv", "command"),  # results files written before the "command" field: the harness's arguments
)


def _finite(x: float | None) -> float | None:
    return x if x is not None and isinstance(x, (int, float)) and math.isfinite(x) else None


def fmt_num(x: float | None, digits: int = 3) -> str:
    """Short human form of a float: ``"-"`` for None, ``"inf"``/``"nan"`` kept, else ``digits`` significant digits."""
    if x is None:
        return "-"
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if x == 0:
        return "0"
    ax = abs(x)
    if 1e-3 <= ax < 1e5:
        return f"{x:.{digits}g}" if ax < 1 else f"{x:.{max(digits - 1, 1)}f}".rstrip("0").rstrip(".")
    return f"{x:.{max(digits - 1, 0)}e}"


@dataclass
class Environment:
    """One machine's environment record, as (label, value) pairs for display."""

    source: str
    fields: list[tuple[str, str]]
    extra: list[tuple[str, str]]

    @property
    def title(self) -> str:
        host = dict(self.fields).get("host", "?")
        return f"{host} ({Path(self.source).name})"

    @property
    def summary(self) -> str:
        """One line: host, torch, GPUs, threads, TF32 and matmul precision, commit."""
        f = dict(self.fields)
        parts = [f"torch {f.get('torch', '-')}", f"Python {f.get('Python', '-')}",
                 f"CPU {f.get('CPU', '-')} x{f.get('CPU cores', '?')} ({f.get('torch threads', '?')} threads)",
                 f"GPUs: {f.get('GPUs', 'none')}"]
        if "TF32 matmul" in f:
            parts.append(f"TF32 matmul {f['TF32 matmul']}")
        parts.append(f"matmul precision {f.get('float32 matmul precision', '-')}")
        commit = f.get("git commit", "-")
        parts.append(f"commit {commit[:10]}")
        return ", ".join(parts)


def environment_table(envs: Sequence[Environment]) -> list[tuple[str, list[str]]]:
    """Rows of a machines-as-columns table: (label, one value per environment; ``""`` where absent)."""
    labels: list[str] = []
    for e in envs:
        for k, _ in [*e.fields, *e.extra]:
            if k not in labels:
                labels.append(k)
    order = {label: i for i, (_, label) in enumerate(ENV_FIELDS)}
    labels.sort(key=lambda k: order.get(k, len(order)))
    maps = [dict([*e.fields, *e.extra]) for e in envs]
    return [(k, [m.get(k, "") for m in maps]) for k in labels]


@dataclass
class Cell:
    """One agreement-matrix cell: all records of one implementation, device and dtype.

    It leads with the measure the verdict is made of, the worst error / rigorous
    bound (``worst_ratio``); ``worst_bits`` counts only the records whose bits of
    error mean something (:func:`harness.figures.ulp_caveat`), and ``bits_note``
    gives the reason when some do not. ``known_bugs`` counts the failing records
    that are a probed known framework bug.
    """

    verdict: str
    worst_bits: float | None
    n: int
    counts: dict[str, int]
    worst_ratio: float | None = None
    bits_note: str = ""
    known_bugs: int = 0

    @property
    def label(self) -> str:
        """The worst error / rigorous bound (above 1 is ``disagree``)."""
        return "-" if self.worst_ratio is None else f"{self.worst_ratio:.2g}"

    @property
    def bits_label(self) -> str:
        """``"3.25 bits"``, or ``"bits n/m"`` when no record's bits of error mean something."""
        if self.worst_bits is not None:
            return f"{self.worst_bits:.2f} bits"
        return "bits n/m" if self.bits_note else "-"


@dataclass
class Run:
    """All records of one case, implementation, device and dtype (one summary row).

    ``details`` are the records worth reading (every non-agree record up to
    :data:`MAX_DETAIL_PER_RUN`, then the worst of each quantity; for a run that
    agrees throughout, its worst record only); ``omitted`` counts the records
    of the run left out of the drill-down; ``quantity_bits`` gives the worst
    bits of error of each quantity (``"loss 1.23, grad_W 4.56, ..."``).
    """

    case: str
    implementation: str
    device: str
    dtype: str
    n: int
    verdict: str
    verdicts: list[str]
    counts: dict[str, int]
    worst_bits: float | None
    max_ulp: float | None
    max_bound_ratio: float | None
    worst_quantity: str
    steps: int
    repro: str
    details: list[Record] = field(default_factory=list)
    omitted: int = 0
    messages: list[str] = field(default_factory=list)
    quantity_bits: str = ""
    diagnoses: list[str] = field(default_factory=list)

    @property
    def severity(self) -> int:
        return SEVERITY.get(self.verdict, len(VERDICTS))


@dataclass
class SeedTable:
    """The seed notebook case for one implementation, device and dtype: one row per step and quantity."""

    implementation: str
    device: str
    dtype: str
    rows: list[Record]


@dataclass
class SourceFile:
    """One results file as read: its records, malformed lines and whether its run(s) completed.

    ``status`` is ``"completed"`` (a ``run-end`` line says so), ``"interrupted or
    still running"`` (no ``run-end`` line), ``"incomplete"`` (a ``run-end`` line that
    says ``completed: false``) or ``"no environment line"``.
    """

    path: str
    records: int
    malformed: int
    status: str
    runs: list[str]
    environments: int = 0
    #: per run whose ``run-end`` line counts other than the records read (lines deleted or repeated), why
    miscounted: list[str] = field(default_factory=list)
    #: how many case files or cases its runs could not load (their environment lines' ``load_errors``)
    load_errors: int = 0
    #: per implementation that a run named and that graded nothing in it, why (:meth:`harness.records.ResultsFile.ungraded_named`)
    ungraded: list[str] = field(default_factory=list)

    @property
    def completed(self) -> bool:
        return self.status == "completed"

    @property
    def why_empty(self) -> str:
        """Why no record was read (for messages)."""
        if self.malformed:
            return f"{self.malformed} malformed line(s) and no valid record"
        return "only an environment line" if self.environments else "an empty file (no record line)"


@dataclass
class ReportModel:
    """Everything the template needs (see :func:`build_model`).

    ``malformed`` lists the lines left out of every figure (up to
    :data:`harness.records.MAX_MALFORMED_LISTED` per file); ``malformed_total``
    counts them all; ``notes`` name lines of an unknown ``kind`` (skipped);
    ``files`` says per results file how many records were read and whether its run
    completed.
    """

    sources: list[str]
    environments: list[Environment]
    warnings: list[str]
    records: list[Record]
    counts: dict[str, int]
    implementations: list[str]
    devices: list[str]
    dtypes: list[str]
    device_dtypes: list[tuple[str, str]]
    matrix: dict[tuple[str, str, str], Cell]
    runs: list[Run]
    cases: list[str]
    reductions: list[str]
    seed: list[SeedTable]
    detail_total: int
    detail_capped: bool
    files: list[SourceFile] = field(default_factory=list)
    malformed: list[Malformed] = field(default_factory=list)
    malformed_total: int = 0
    notes: list[str] = field(default_factory=list)
    #: ``K/N`` of every shard of a run split with ``--shard K/N`` that is not among the files read
    missing_shards: list[str] = field(default_factory=list)
    #: per run read more than once (its id in two files, or twice in one), ``"PATH: run ID (read already from PATH)"``:
    #: its records counted twice, and a copy of one shard's passing file, its ``shard`` edited, stood in for a failing
    #: shard (``report --exit-status`` fails it, helper-184)
    read_twice: list[str] = field(default_factory=list)

    @property
    def unfinished(self) -> list[SourceFile]:
        """The files whose run did not complete (no ``run-end`` line, or one that says so)."""
        return [f for f in self.files if not f.completed]

    def exit_status(self, strict: bool = False, run_outcome: Callable[..., RunOutcome] | None = None) -> tuple[int, list[str]]:
        """The exit status of ``report --exit-status`` on the files read, and the lines that say why (the command prints
        them on standard error; the page shows them as its headline): the verdict policy of
        :func:`harness.verdicts.run_outcome` on the records, each implementation a run named grading something (as that
        run's own exit status required), and 2 for input that cannot be trusted (malformed lines, a run that did not
        complete or whose counts do not match its lines, case files its run could not load, a shard missing, a run read
        twice). ``run_outcome``: the policy to apply (the CLI's copy, bound before any plug-in was imported)."""
        outcome = (run_outcome or _run_outcome)(self.records, strict=strict)
        problems = ([f"{self.malformed_total} malformed line(s) left out"] if self.malformed_total else []) + \
            [f"{f.path}: its run did not complete (or the file has no environment line)" for f in self.unfinished] + \
            [f"{f.path}: {why} (its lines deleted, repeated, edited or pasted in since the run wrote it)" for f in self.files for why in f.miscounted] + \
            [f"{f.path}: {f.load_errors} case file(s) or case(s) of its run could not be loaded" for f in self.files
             if f.load_errors] + \
            ([f"shard(s) {', '.join(self.missing_shards)} not among the files read"] if self.missing_shards else []) + \
            [f"{why}: its records counted twice (give each results file once; a copy of one shard's file, its shard edited, "
             "stands in for another's)" for why in self.read_twice]
        # each implementation a run named must grade something in it, as that run's own exit status required
        silent = [line for f in self.files for line in f.ungraded]
        if silent:
            outcome.code = outcome.code or 1
            outcome.reasons = [r for r in outcome.reasons if not r.startswith("exit 0")] + [f"exit 1: {line}" for line in silent]
        lines: list[str] = []
        for line in outcome.reasons:
            if not (problems and line.startswith("exit 0")):  # (the bad input's exit 2 below says why instead)
                lines.append(line)
        if problems:
            lines.append(f"{'exit 2' if outcome.code == 0 else 'also'}: bad input: {'; '.join(problems)}")
        return outcome.code or (2 if problems else 0), lines


def _sort_dtype(dt: str) -> tuple[int, str]:
    order = {"float64": 0, "float32": 1, "tf32": 2, "bfloat16": 3, "float16": 4}
    return (order.get(dt, 9), dt)


def _sort_device(dev: str) -> tuple[int, str]:
    return (0 if dev == "cpu" else 1, dev)


#: Longest environment value shown (a results file may hold anything there).
MAX_ENV_VALUE = 400


def _env_value(v: Any, key: str = "") -> str:
    try:
        if key == "argv" and isinstance(v, list):
            text = shlex.join(["python", "-m", "harness", *map(str, v)])
        elif isinstance(v, list):
            text = ", ".join(str(x) for x in v) if v else "none"
        elif v is None:
            text = "-"
        else:
            text = str(v)
    except (RecursionError, ValueError):
        text = "(not shown: nested too deeply)"
    return text if len(text) <= MAX_ENV_VALUE else text[:MAX_ENV_VALUE - 3] + "..."


def environment_of(env: dict[str, Any], source: str) -> Environment:
    """Display form of one environment record (known keys first, then any others)."""
    known = {k for k, _ in ENV_FIELDS}
    fields = [(label, _env_value(env[k], k)) for k, label in ENV_FIELDS if k in env and not (k == "argv" and "command" in env)]
    extra = [(k, _env_value(v)) for k, v in env.items() if k not in known and k != "kind"]
    return Environment(source, fields, extra)


def record_key(r: Record) -> tuple[Any, ...]:
    """What a record grades: its case, implementation, device, dtype, TF32 and matmul-precision settings, step and
    quantity. Two records with one key graded the same thing (in two runs)."""
    return (r.case, r.implementation, r.device, r.dtype, r.tf32, r.matmul_precision, r.step, r.quantity)


def _overlap_warnings(per_run: list[tuple[str, Any, list[Record]]]) -> list[str]:
    """One warning per run whose records grade what an earlier run's records graded (:func:`record_key`, under the
    same run options: a ``--flush-to-zero`` run grades the same records under other bounds, helper-80): shards that
    overlap, or a stale results file given with a fresh one, or two runs in one file (concatenated: helper-94). One run
    may grade one thing twice (two pytest tests that grade it): not warned; lines repeated by hand show in the footer's
    count. ``per_run``: (what to call the run: its file, and
    the run where a file holds several; run options; records). Both copies stay in every count, as read; the warning
    says how many records overlap and how many of them have another verdict, with an example (overlapping shards were
    merged into twice the records without a word, helper-79)."""
    seen: dict[tuple[Any, ...], tuple[str, str]] = {}  # key -> (the first run that graded it, its verdict)
    out: list[str] = []
    for label, options, recs in per_run:
        again: list[tuple[Record, str, str]] = []
        mine: dict[tuple[Any, ...], tuple[str, str]] = {}
        for r in recs:
            key = (options, *record_key(r))
            first = seen.get(key)
            if first is not None:
                again.append((r, *first))
            mine.setdefault(key, (label, r.verdict))
        for key, v in mine.items():
            seen.setdefault(key, v)
        if not again:
            continue
        other = [(r, f, v) for r, f, v in again if v != r.verdict]
        r, f, _ = (other or again)[0]
        text = (f"{label}: {len(again)} record(s) grade what {f}{' and other files' if len({x[1] for x in again}) > 1 else ''} "
                f"graded already (e.g. {_example(r)}): shards that overlap, or a results file of another run; both copies are "
                "counted")
        if other:
            text += f"; {len(other)} of them with another verdict (e.g. {other[0][2]} in {f}, {r.verdict} here)"
        out.append(text)
    return out


def _example(r: Record) -> str:
    return f"{r.case} {r.implementation} {r.device} {r.dtype} step {r.step} {r.quantity}"


def _runs_of(path: str, res: Any) -> list[tuple[str, Any, list[Record]]]:
    """The runs of one results file for :func:`_overlap_warnings`: (what to call it, its run options, its records).
    A file of several runs whose record counts account for every record is split run by run (``path (run R)``);
    else it is one."""
    def options(env: dict[str, Any] | None) -> Any:
        # the run options under which the same records grade differently
        return () if env is None else (env.get("flush_to_zero") is True,)

    spans, envs = res.runs, res.environments
    if len(spans) > 1 and len(envs) == len(spans) and sum(s.records for s in spans) == len(res.records):
        out, start = [], 0
        for i, (span, env) in enumerate(zip(spans, envs, strict=True), start=1):
            out.append((f"{path} (its run {span.run or i} from line {span.line})", options(env),
                        res.records[start:start + span.records]))
            start += span.records
        return out
    return [(path, options(envs[0] if envs else None), res.records)]


def _shard_of(env: dict[str, Any]) -> tuple[int, int] | None:
    """``(K, N)`` of an environment record's ``shard`` (``check --shard K/N``), or None (no shard, or a value that is
    not ``K/N``: a file edited by hand)."""
    text = env.get("shard")
    if not isinstance(text, str):
        return None
    try:
        return parse_shard(text)
    except UsageError:
        return None


def _bits_key(r: Record) -> float:
    b = _finite(r.bits_of_error)
    return -1.0 if b is None else b


#: Longest error message shown in a run's drill-down (the results file keeps all of it).
MAX_MESSAGE = 2000

#: What the aggregation needs of one record, computed once: (record, ulp caveat or None,
#: meaningful bits of error or None, bits sort key, finite bound ratio or None).
_Fact = tuple[Record, "str | None", "float | None", float, "float | None"]


def _facts(records: Iterable[Record]) -> list[_Fact]:
    out: list[_Fact] = []
    append = out.append
    for r in records:
        why = ulp_caveat(r)
        b, ratio = r.bits_of_error, r.bound_ratio
        fb = b if b is not None and math.isfinite(b) else None
        append((r, why, None if why else fb, -1.0 if fb is None else fb,
                ratio if ratio is not None and math.isfinite(ratio) else None))
    return out


def _run_of(key: tuple[str, str, str, str], facts: list[_Fact]) -> Run:
    case, impl, dev, dt = key
    counts = Counter(f[0].verdict for f in facts)
    bits = [f[2] for f in facts if f[2] is not None]
    ulps = [u for f in facts if f[1] is None and (u := _finite(f[0].max_ulp_error)) is not None]
    ratios = [f[4] for f in facts if f[4] is not None]
    verdict = worst_verdict(counts)
    worst = max(facts, key=lambda f: (SEVERITY.get(f[0].verdict, 0), f[3]))[0]
    notable = [f for f in facts if f[0].verdict != "agree"]
    notable.sort(key=lambda f: (-SEVERITY.get(f[0].verdict, 0), -f[3], f[0].step))
    chosen: list[Record] = [f[0] for f in notable[:MAX_DETAIL_PER_RUN]]
    seen = {id(r) for r in chosen}
    best_per_q: dict[str, _Fact] = {}
    for f in facts:
        cur = best_per_q.get(f[0].quantity)
        if cur is None or f[3] > cur[3]:
            best_per_q[f[0].quantity] = f
    # a run that agrees throughout lists its worst record only (the summary gives the worst bits of
    # each quantity); one that does not also lists the worst record of each quantity for comparison
    extra = [f[0] for f in best_per_q.values()] if notable else [max(facts, key=lambda f: f[3])[0]]
    for r in extra:
        if id(r) not in seen:
            chosen.append(r)
            seen.add(id(r))
    worst_bits_per_q = {q: _finite(f[0].bits_of_error) for q, f in best_per_q.items()}
    messages = sorted({m if len(m) <= MAX_MESSAGE else m[:MAX_MESSAGE] + " ... (cut)" for f in facts if (m := f[0].message)})[:5]
    named = Counter(f[0].diagnosis for f in facts if f[0].diagnosis)
    return Run(
        case=case, implementation=impl, device=dev, dtype=dt, n=len(facts), verdict=verdict,
        verdicts=[v for v in VERDICTS if counts[v]] + sorted(v for v in counts if v not in SEVERITY),
        counts=dict(counts), worst_bits=max(bits) if bits else None, max_ulp=max(ulps) if ulps else None,
        max_bound_ratio=max(ratios) if ratios else None, worst_quantity=worst.quantity,
        steps=max((f[0].step for f in facts), default=0), repro=next((f[0].repro for f in facts if f[0].repro), ""),
        details=chosen, omitted=len(facts) - len(chosen), messages=messages,
        quantity_bits=", ".join(f"{q} {'-' if b is None else f'{b:.2f}'}" for q, b in worst_bits_per_q.items()),
        diagnoses=[f"{d} ({n} record{'s' if n != 1 else ''})" for d, n in named.most_common()],
    )


def _cell_of(facts: list[_Fact]) -> Cell:
    c = Counter(f[0].verdict for f in facts)
    bits = [f[2] for f in facts if f[2] is not None]
    ratios = [f[4] for f in facts if f[4] is not None]
    notes = sorted({f[1] for f in facts if f[1]})
    known = sum(1 for f in facts if f[0].known_bug and f[0].verdict in FAILING + STRICT_ONLY)
    return Cell(worst_verdict(c), max(bits) if bits else None, len(facts), dict(c),
                max(ratios) if ratios else None, "; ".join(notes), known)


@contextmanager
def no_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while building many acyclic objects (records, rows).

    Reading a large results file allocates hundreds of thousands of dicts and records; the
    collector's full passes over them cost about a third of the time and free nothing.
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def read_results(path: str | Path) -> ResultsFile:
    """:func:`harness.records.read_jsonl`, with the file-level failures as :class:`UsageError` naming the file."""
    try:
        return read_jsonl(path)
    except FileNotFoundError as exc:
        raise UsageError(f"{path}: results file not found") from exc
    except IsADirectoryError as exc:
        raise UsageError(f"{path}: is a directory, not a results file") from exc
    except OSError as exc:
        raise UsageError(f"{path}: cannot read results file ({exc.strerror or exc})") from exc


def build_model(results_paths: Sequence[str | Path | ResultsFile] | Iterable[str | Path | ResultsFile]) -> ReportModel:
    """Read and aggregate results files for the report.

    Args:
        results_paths: JSON-lines results files (``harness check --results``),
            from one or several machines; their records are merged. An item may also be a
            :class:`harness.records.ResultsFile` already read (what :func:`harness.records.read_jsonl`
            returns, or :attr:`harness.records.ResultsStream.written`).

    Returns:
        the :class:`ReportModel`. Lines that could not be read (a file cut off
        mid-line by an interrupted run, a line that is not UTF-8 or not JSON, a
        record that breaks the Record contract) are left out of every figure,
        counted in ``malformed_total``, listed in ``malformed`` and named in
        ``warnings`` (``"path:line: ..."``); so is a file whose run did not
        complete (no ``run-end`` line).

    Raises:
        UsageError: if a file does not exist, is a directory or cannot be read (the message names it).
    """
    with no_gc():
        return _build_model(results_paths)


def _build_model(results_paths: Iterable[str | Path | ResultsFile]) -> ReportModel:
    sources: list[str] = []
    envs: list[Environment] = []
    warnings: list[str] = []
    records: list[Record] = []
    files: list[SourceFile] = []
    malformed: list[Malformed] = []
    notes: list[str] = []
    malformed_total = 0
    shards: dict[int, set[int]] = defaultdict(set)  # N -> the K of every `check --shard K/N` read
    per_file: list[tuple[str, str, Any, list[Record]]] = []  # (file, what to call the run, run options, records)
    commits: dict[str, list[str]] = defaultdict(list)  # git commit -> the files whose runs it graded
    for item in results_paths:
        # a ResultsFile: a file already read (harness.records.ResultsStream.written: a run's file as it wrote it)
        res = item if isinstance(item, ResultsFile) else read_results(item)
        p = res.path if isinstance(item, ResultsFile) else item
        sources.append(str(p))
        per_file.extend((str(p), *run) for run in _runs_of(str(p), res))
        for c in {e.get("git_commit") for e in res.environments if isinstance(e.get("git_commit"), str)}:
            commits[str(c)].append(str(p))
        for e in res.environments:
            shard = _shard_of(e)
            if shard is not None:
                shards[shard[1]].add(shard[0])
        envs.extend(environment_of(e, str(p)) for e in res.environments)
        if not res.environments:
            warnings.append(f"{p}: no environment record (the first line of a results file describes the machine)")
        warnings.extend(res.warnings)
        if not res.records:
            warnings.append(f"{p}: no records" + (f" ({res.malformed_count} malformed line(s))" if res.malformed_count
                                                   else " (an empty file)" if not res.environments and not res.runs
                                                   else " (only an environment line)"))
        records.extend(res.records)
        malformed.extend(res.malformed)
        malformed_total += res.malformed_count
        notes.extend(res.notes)
        not_loaded = [str(e) for env in res.environments if isinstance(env.get("load_errors"), list)
                      for e in env["load_errors"]]
        warnings.extend(f"{p}: its run could not load {e}" for e in not_loaded[:10])
        if len(not_loaded) > 10:
            warnings.append(f"{p}: its run could not load {len(not_loaded) - 10} more case file(s) or case(s)")
        files.append(SourceFile(str(p), len(res.records), res.malformed_count, res.status,
                                [r.run for r in res.runs if r.run], len(res.environments),
                                [f"run {r.run or '(unnamed)'}: {r.miscounted}" for r in res.runs if r.miscounted],
                                len(not_loaded), res.ungraded_named()))
    # one run read twice (the same file given twice, or a copy) counts every record of it twice (helper-66)
    first_read: dict[str, str] = {}
    read_again: set[str] = set()
    read_twice: list[str] = []
    for src in files:
        for run in src.runs:
            if run in first_read:
                warnings.append(f"{src.path}: run {run} was read already (from {first_read[run]}): its records are "
                                "counted twice; give each results file once")
                read_again.add(src.path)
                read_twice.append(f"{src.path}: run {run} (read already from {first_read[run]})")
            else:
                first_read[run] = src.path
    warnings.extend(_overlap_warnings([f[1:] for f in per_file if f[0] not in read_again]))
    if len(commits) > 1:  # a stale file of an older commit standing in for a shard (helper-79)
        warnings.append(f"the files come from {len(commits)} git commits ("
                        + "; ".join(f"{c[:12]}: {', '.join(paths[:3])}{', ...' if len(paths) > 3 else ''}" for c, paths in commits.items())
                        + "): their records were graded by different code")
    # a run split with --shard K/N is whole only with all N shards: one shard's file alone looks like a whole run
    missing_shards: list[str] = []
    for n, have in sorted(shards.items()):
        missing = [k for k in range(1, n + 1) if k not in have]
        missing_shards.extend(f"{k}/{n}" for k in missing)
        if missing:
            warnings.append(f"shard{'s' if len(missing) > 1 else ''} {', '.join(f'{k}/{n}' for k in missing)} of a run split "
                            f"with --shard K/{n} {'are' if len(missing) > 1 else 'is'} not among the files read (only "
                            f"{', '.join(f'{k}/{n}' for k in sorted(have))}): unless {'they' if len(missing) > 1 else 'it'} had no case "
                            "(check exits 2 and writes no results then), the report covers part of that run's cases; give "
                            "every shard's results file")

    # one pass over the records: everything else is computed from the groups
    cell_facts: dict[tuple[str, str, str], list[_Fact]] = defaultdict(list)
    run_facts: dict[tuple[str, str, str, str], list[_Fact]] = defaultdict(list)
    for f in _facts(records):
        r = f[0]
        cell_facts[(r.implementation, r.device, r.dtype)].append(f)
        run_facts[(r.case, r.implementation, r.device, r.dtype)].append(f)
    matrix = {key: _cell_of(fs) for key, fs in cell_facts.items()}
    counts: Counter[str] = Counter()
    for cell in matrix.values():
        counts.update(cell.counts)
    impls = sorted({k[0] for k in matrix})
    devices = sorted({k[1] for k in matrix}, key=_sort_device)
    dtypes = sorted({k[2] for k in matrix}, key=_sort_dtype)
    device_dtypes = sorted({(k[1], k[2]) for k in matrix}, key=lambda t: (_sort_device(t[0]), _sort_dtype(t[1])))

    runs = [_run_of(k, v) for k, v in run_facts.items()]
    runs.sort(key=lambda u: (-u.severity, -(u.max_bound_ratio if u.max_bound_ratio is not None else -1.0), u.case, u.implementation, u.device, u.dtype))
    total = 0
    capped = False
    for u in runs:
        if total + len(u.details) > MAX_DETAIL_TOTAL:
            u.omitted += len(u.details)
            u.details = []
            capped = True
        total += len(u.details)

    seed: list[SeedTable] = []
    seed_recs: dict[tuple[str, str, str], list[Record]] = defaultdict(list)
    for r in records:
        if r.case == "seed":
            seed_recs[(r.implementation, r.device, r.dtype)].append(r)
    # the notebook itself first: torch-seed in float32 on the CPU
    for (impl, dev, dt), recs in sorted(seed_recs.items(), key=lambda kv: (kv[0][0] != "torch-seed", kv[0][2] != "float32",
                                                                         _sort_device(kv[0][1]), _sort_dtype(kv[0][2]), kv[0][0])):
        recs.sort(key=lambda r: (r.step, quantity_rank(r.quantity)))
        seed.append(SeedTable(impl, dev, dt, recs))

    reductions = sorted({r.reduction for r in records if r.reduction in ("sum", "mean")}) or ["sum", "mean"]
    return ReportModel(
        sources=sources, environments=envs, warnings=warnings, records=records,
        counts={v: counts[v] for v in VERDICTS if counts[v]} | {v: n for v, n in counts.items() if v not in SEVERITY},
        implementations=impls, devices=devices, dtypes=dtypes, device_dtypes=device_dtypes,
        matrix=matrix, runs=runs, cases=sorted({k[0] for k in run_facts}), reductions=reductions,
        seed=seed, detail_total=total, detail_capped=capped,
        files=files, malformed=malformed, malformed_total=malformed_total, notes=notes, missing_shards=missing_shards,
        read_twice=read_twice,
    )
