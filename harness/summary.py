"""The terminal summary: a view of the records, never a source of truth."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from operator import attrgetter

from .figures import caveat_and_bits, worst_ratio_text
from .records import KNOWN_BUG, Record
from .verdicts import FAILING, NOT_GRADED, SEVERITY, STRICT_ONLY, VERDICTS, fails, quantity_rank, severity


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    rows = [list(map(str, r)) for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    line = "  ".join("-" * w for w in widths)
    return "\n".join([fmt.format(*header), line, *(fmt.format(*r) for r in rows)])


def _footnote_of(reasons: Iterable[str]) -> str:
    reasons = sorted(reasons)
    if not reasons:
        return ""
    return "\n\nerror/bound: worst error / rigorous bound (above 1: disagree). n/m: " + "; ".join(reasons)


#: The verdicts a summary row marks ``(known bug)`` when every record with it is one.
_MARKED = frozenset(FAILING + STRICT_ONLY)


def _ratio_text(ratio: float | None) -> str:
    """A row's error / rigorous bound: the largest ``bound_ratio`` of its records (None: none)."""
    return "-" if ratio is None else f"{ratio:.3g}"


def _bits_text(bits: float | None, caveat: bool) -> str:
    """A row's worst bits of error where they mean something; ``n/m`` where none does and some record says why."""
    if bits is not None:
        return f"{bits:.2f}"
    return "n/m" if caveat else "-"


class _Agg:
    """A group of records accumulated record by record in run order: its largest ``bound_ratio``, largest meaningful
    bits of error, whether a record's ULP figures are not meaningful, and its worst verdict (the first of the most
    severe, as ``max`` picks it; a running maximum in run order keeps the first of equal values and skips a NaN that
    is not first, as ``max`` over the same values does)."""

    __slots__ = ("ratio", "bits", "caveat", "sev", "verdicts")

    def __init__(self) -> None:
        self.ratio: float | None = None
        self.bits: float | None = None
        self.caveat = False
        self.sev = -1
        self.verdicts: Counter[str] = Counter()

    def add(self, ratio: float | None, bits: float | None, caveat: bool, sev: int, verdict: str) -> None:
        if ratio is not None and (self.ratio is None or ratio > self.ratio):
            self.ratio = ratio
        if bits is not None and (self.bits is None or bits > self.bits):
            self.bits = bits
        if caveat:
            self.caveat = True
        if sev > self.sev:
            self.sev = sev
        self.verdicts[verdict] += 1


def summary_table(records: Sequence[Record], max_rows: int = 200, max_notable: int = 20) -> str:
    """Case x implementation x device x dtype x quantity: worst error / bound, worst bits of error and verdict.

    Each row leads with the measure the verdict is made of (error / rigorous
    bound); bits of error are shown where they mean something (see
    :func:`harness.figures.ulp_caveat`), ``n/m`` with the reason below where not.

    When there are more than ``max_rows`` rows, prints one row per implementation,
    device and dtype with its verdict counts instead, followed by the ``max_notable``
    worst rows whose verdict is disagree, error, suspect or invalid-input (the rest are
    explained, grouped by cause, by :func:`explain_failures`).
    """
    # One pass over the records: each record's ULP caveat and meaningful bits (meaningful_bits' answer) are worked out
    # once, not once per table and the footnote. A row's figures are running maxima in run order, kept in flat lists
    # (an object per row, most rows holding one record, made the garbage collector the largest cost).
    unknown = len(VERDICTS)
    sev_of = SEVERITY.get
    index: dict[tuple[str, ...], int] = {}
    keys: list[tuple[str, ...]] = []
    g_ratio: list[float | None] = []
    g_bits: list[float | None] = []
    g_caveat: list[bool] = []
    g_sev: list[int] = []
    g_verdict: list[str] = []
    marked: dict[int, list[Record]] = {}  # row -> its records whose verdict a row may mark "(known bug)"
    # each record's row and figures, for the per-implementation table (which then reads no record again)
    r_row: list[int] = []
    r_ratio: list[float | None] = []
    r_bits: list[float | None] = []
    r_caveat: list[bool] = []
    r_sev: list[int] = []
    r_verdict: list[str] = []
    reasons: set[str] = set()
    setdefault = index.setdefault
    for r in records:
        why, b = caveat_and_bits(r)
        if why:
            reasons.add(why)
        verdict = r.verdict
        sev = sev_of(verdict, unknown)
        ratio = r.bound_ratio
        key = (r.case, r.implementation, r.device, r.dtype, r.quantity)
        gi = setdefault(key, len(keys))
        if gi == len(keys):  # a new row
            keys.append(key)
            g_ratio.append(ratio)
            g_bits.append(b)
            g_caveat.append(bool(why))
            g_sev.append(sev)
            g_verdict.append(verdict)
        else:
            if ratio is not None and ((old := g_ratio[gi]) is None or ratio > old):
                g_ratio[gi] = ratio
            if b is not None and ((old := g_bits[gi]) is None or b > old):
                g_bits[gi] = b
            if why:
                g_caveat[gi] = True
            if sev > g_sev[gi]:
                g_sev[gi] = sev
                g_verdict[gi] = verdict
        if verdict in _MARKED:
            marked.setdefault(gi, []).append(r)
        r_row.append(gi)
        r_ratio.append(ratio)
        r_bits.append(b)
        r_caveat.append(bool(why))
        r_sev.append(sev)
        r_verdict.append(verdict)

    def verdict_text(gi: int) -> str:
        """The worst verdict, marked when every record with it is a probed known framework bug."""
        v = g_verdict[gi]
        if v in _MARKED and all(r.known_bug for r in marked[gi] if r.verdict == v):
            return f"{v} (known bug)"
        return v

    def row(gi: int) -> tuple[str, ...]:
        return (*keys[gi], _ratio_text(g_ratio[gi]), _bits_text(g_bits[gi], g_caveat[gi]), verdict_text(gi))

    footnote = _footnote_of(reasons)
    header = ("case", "implementation", "device", "dtype", "quantity", "error/bound", "worst bits", "verdict")
    if len(keys) <= max_rows:
        return _table(header, [row(gi) for gi in range(len(keys))]) + footnote
    agg: dict[tuple[str, ...], _Agg] = {}
    cases: dict[tuple[str, ...], set[str]] = {}
    for gi, ratio, b, caveat, sev, verdict in zip(r_row, r_ratio, r_bits, r_caveat, r_sev, r_verdict, strict=True):
        case, impl, device, dtype, _ = keys[gi]
        akey = (impl, device, dtype)
        a = agg.get(akey)
        if a is None:
            a = agg[akey] = _Agg()
            cases[akey] = set()
        a.add(ratio, b, caveat, sev, verdict)
        cases[akey].add(case)

    def counts(c: Counter[str]) -> str:
        return ", ".join(f"{c[v]} {v}" for v in VERDICTS if c[v])

    agg_rows = [(*k, str(len(cases[k])), _ratio_text(a.ratio), _bits_text(a.bits, a.caveat), counts(a.verdicts))
                for k, a in agg.items()]
    out = _table(("implementation", "device", "dtype", "cases", "error/bound", "worst bits", "records"), agg_rows)
    # the rows worth reading: the verdicts that fail a run, with --strict or without (unknown ones too); the rows
    # in table order, then by severity, most severe first (a stable sort)
    worth = [v for v in reversed(VERDICTS) if v in FAILING + STRICT_ONLY]
    # (a row holds one only where its worst verdict is one of those, or unknown: the others are not even looked at)
    notable = [line for line in (row(gi) for gi in range(len(keys)) if g_verdict[gi] in _MARKED or g_sev[gi] == unknown)
               if (v := line[-1].split(" ")[0]) in worth or v not in SEVERITY]
    notable.sort(key=lambda row: -severity(row[-1].split(" ")[0]))
    if notable:
        out += f"\n\nRows that are {', '.join(worth)} ({len(notable)}):\n" + _table(header, notable[:max_notable])
        if len(notable) > max_notable:
            out += f"\n... and {len(notable) - max_notable} more: grouped by cause below; every one in the results file and the HTML report"
    return out + footnote




def verdict_line(records: Sequence[Record]) -> str:
    """``"1234 records: 1200 agree, 30 suspect, 4 disagree (5 failing records a known framework bug)"``."""
    # one pass over the records: (verdict, known_bug) counted, then folded in first-seen order
    counts: Counter[str] = Counter()
    known = 0
    for (verdict, known_bug), n in Counter(map(_VERDICT_OF, records)).items():
        counts[verdict] += n
        if known_bug and verdict in _MARKED:
            known += n
    parts = [f"{counts[v]} {v}" for v in VERDICTS if counts[v]] + [f"{n} {v!r}" for v, n in counts.items() if v not in SEVERITY]
    note = f" ({known} failing record(s) a known framework bug)" if known else ""
    return f"{len(records)} records: " + (", ".join(parts) + note if parts else "none")


_VERDICT_OF = attrgetter("verdict", "known_bug")


def _device_label(r: Record) -> str:
    """``cuda:0`` or ``cuda:0 (tf32)`` when the record ran with TF32 allowed."""
    return f"{r.device} (tf32)" if r.tf32 else r.device


def by_device_dtype(records: Sequence[Record]) -> str:
    """One line per device and dtype with verdict counts, then, when several
    devices ran, a line naming the devices that disagree with the exact oracle.

    Every device is graded against the oracle, not against another device, so
    the last line says which device (and dtype) is wrong, e.g.
    ``cross-device: cuda:0 (tf32) disagrees (float32: 3 disagree); cpu agrees``.
    """
    groups: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    failed: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    for r in records:
        groups[(_device_label(r), r.dtype)][r.verdict] += 1
        if fails(r) and r.verdict not in NOT_GRADED:  # the device computed something wrong (bad input is no device's fault)
            failed[(_device_label(r), r.dtype)][r.verdict] += 1
    lines = []
    for (dev, dt), cnt in sorted(groups.items()):
        parts = ", ".join(f"{cnt[v]} {v}" for v in VERDICTS if cnt[v])
        lines.append(f"{dev} {dt}: {parts}")
    devices = sorted({dev for dev, _ in groups})
    if len(devices) > 1:
        bad = {dev: [(dt, cnt) for (d, dt), cnt in sorted(failed.items()) if d == dev and cnt] for dev in devices}
        verdicts: list[str] = []
        for dev in devices:
            if bad[dev]:
                what = "; ".join(f"{dt}: " + ", ".join(f"{n} {v}" for v, n in cnt.items()) for dt, cnt in bad[dev])
                verdicts.append(f"{dev} disagrees ({what})")
        good = [dev for dev in devices if not bad[dev]]
        if good:
            verdicts.append(", ".join(good) + (" agrees" if len(good) == 1 else " agree") + " with the oracle")
        lines.append("cross-device: " + "; ".join(verdicts))
    return "\n".join(lines)


def determinism_rows(records: Sequence[Record]) -> list[tuple[str, str, str, int, float, float, float]]:
    """Per implementation, device and dtype (records of ``--repeat R`` runs only): the runs, the
    smallest fraction of runs bitwise equal to run 1, and the largest spread in ULPs and absolute terms."""
    groups: dict[tuple[str, str, str], list[Record]] = defaultdict(list)
    for r in records:
        if r.repeat_count:
            groups[(r.implementation, _device_label(r), r.dtype)].append(r)
    rows = []
    for (impl, dev, dt), rs in sorted(groups.items()):
        rows.append((impl, dev, dt, max(r.repeat_count or 0 for r in rs), min(r.repeat_identical or 0.0 for r in rs),
                     max(r.repeat_spread_ulps or 0.0 for r in rs), max(r.repeat_spread_abs or 0.0 for r in rs)))
    return rows


def determinism_table(records: Sequence[Record]) -> str:
    """Run-to-run determinism (``--repeat R``) per implementation, device and dtype: a view of the ``repeat_*`` fields."""
    rows = determinism_rows(records)
    if not rows:
        return "determinism: no repeated runs (use --repeat R)"
    body = [(impl, dev, dt, str(n), f"{ident:.0%}", f"{ulps:.4g}", f"{spread:.3g}",
             "deterministic" if ident == 1.0 else "not bitwise reproducible") for impl, dev, dt, n, ident, ulps, spread in rows]
    return "Run-to-run determinism:\n" + _table(
        ("implementation", "device", "dtype", "runs", "bitwise equal", "spread (ULPs)", "spread (abs)", "determinism"), body)


def cause(rec: Record) -> str:
    """Why ``rec`` failed, in a few words, for grouping: its probed ``known_bug``, else its ``diagnosis``
    when set (a hypothesis such as "gradient off by a factor of 1/2"), else the first clause of its
    message: up to the first ``"; "``, without the quantity prefix, up to the first ``": "`` (the
    label of a named mistake such as "gradient accumulation: ..."), every number written ``#``, so
    that "W: 3 of 4 element(s) above ..." and "grad_W: 1 of 4 element(s) above ..." are one cause."""
    if rec.known_bug:  # first: one known bug is one group, whatever each record looks like
        return f"{KNOWN_BUG}{rec.known_bug}"
    if rec.diagnosis:
        return rec.diagnosis
    first = rec.message.split("\n", 1)[0].split("; ", 1)[0].strip()  # (an error's traceback text follows a newline)
    if rec.quantity and first.startswith(f"{rec.quantity}: "):
        first = first[len(rec.quantity) + 2:]
    first = first.split(": ", 1)[0]
    return _NUMBER.sub("#", first) or rec.verdict


_NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?")


@dataclass
class FailureGroup:
    """Records of one implementation that failed for one :func:`cause`.

    Attributes:
        implementation, cause: the group's key.
        counted: whether they fail the run (:func:`harness.verdicts.fails`); False for a probed
            known framework bug or ``suspect`` without ``strict``.
        records: its records (at least one), in run order.
        example: the record to show (the :func:`harness.verdicts.first_failure` order).
    """

    implementation: str
    cause: str
    counted: bool
    records: list[Record]
    example: Record

    @property
    def cases(self) -> int:
        """How many distinct cases the group's records come from."""
        return len({r.case for r in self.records})

    @property
    def dtypes(self) -> str:
        """The dtypes of the group's records with their counts, most first: ``"float16 (12), bfloat16 (9)"``."""
        return ", ".join(f"{dt} ({n})" for dt, n in Counter(r.dtype for r in self.records).most_common())


#: The verdicts :func:`failure_groups` leaves out: every known one that fails no run, even with ``strict``.
_NOT_WORTH = frozenset(SEVERITY) - frozenset(FAILING + STRICT_ONLY)


def failure_groups(records: Sequence[Record], strict: bool = False) -> list[FailureGroup]:
    """The failing records (disagree, error, invalid-input, suspect, unknown verdicts; probed known bugs
    too), grouped by implementation, :func:`cause` and whether they fail the run: first the groups that
    fail it (most severe verdict, then most records), then those that do not (known framework bugs, suspect)."""
    groups: dict[tuple[str, str, bool], list[Record]] = defaultdict(list)
    for r in [r for r in records if r.verdict not in _NOT_WORTH]:  # (a failing verdict, or an unknown one)
        groups[(r.implementation, cause(r), fails(r, strict))].append(r)
    out = []
    for (impl, why, counted), rs in groups.items():
        example = min(rs, key=lambda r: (r.step, quantity_rank(r.quantity), -severity(r.verdict), -(r.bound_ratio or 0.0)))
        out.append(FailureGroup(impl, why, counted, rs, example))
    out.sort(key=lambda g: (not g.counted, -max(severity(r.verdict) for r in g.records), -len(g.records), g.implementation, g.cause))
    return out


def _example_line(r: Record) -> str:
    where = f"{r.quantity} (step {r.step})" if r.quantity != "*" else "the whole run"
    ratio = f", error / rigorous bound {worst_ratio_text(r)}" if r.bound_ratio is not None else ""
    return f"{where} of case {r.case} ({r.device}, {r.dtype}): {r.verdict}{ratio}"


def explain_failures(records: Sequence[Record], strict: bool = False, max_groups: int = 12) -> str:
    """The terminal's explanation of the failures: one block per :func:`failure_groups` group with its
    counts by verdict and dtype, whether it fails the run, its cause ("looks like: ..." for a
    diagnosis, "known framework bug: ...", or "cause: ..." for the message's first clause), one example and the command that reproduces it; ``""`` when nothing failed."""
    groups = failure_groups(records, strict)
    if not groups:
        return ""
    lines = [f"Failures by cause ({len(groups)} group(s) of implementation and likely cause):"]
    for g in groups[:max_groups]:
        verdicts = Counter(r.verdict for r in g.records)
        counts = ", ".join(f"{n} {v}" for v, n in sorted(verdicts.items(), key=lambda kv: -severity(kv[0])))
        if g.counted:
            status = "FAILS the run"
        elif any(r.known_bug for r in g.records):
            status = "a known framework bug its implementation declares (known_bug): reported, NOT counted (--strict counts it)"
        else:
            status = "passes without --strict"
        lines.append(f"- {g.implementation}: {counts} record(s) in {g.cases} case(s); {status}")
        if g.cause.startswith(KNOWN_BUG):
            label = "known framework bug"
        elif g.example.diagnosis:
            label = "looks like"  # a diagnosis (harness.diagnose): the one hypothesis that explains the values
        else:
            label = "cause"  # no diagnosis: the first clause of the message, numbers written #
        shown = g.cause.removeprefix(KNOWN_BUG)
        if label == "cause" and "#" in shown:  # (helper-77: "# of # element(s)" read as a rendering bug)
            shown += " (# stands for the numbers, which vary within the group)"
        lines.append(f"    {label}: {shown}")
        lines.append(f"    dtypes: {g.dtypes}")
        lines.append(f"    e.g. {_example_line(g.example)}")
        if g.example.message and not g.example.diagnosis and not g.example.known_bug:
            text = f"{g.example.message[:300]}{'...' if len(g.example.message) > 300 else ''}"
            lines.append("    message: " + text.replace("\n", "\n      "))  # a raised error's text on indented lines
        if g.example.repro:
            lines.append(f"    reproduce: {g.example.repro}")
    if len(groups) > max_groups:
        lines.append(f"... and {len(groups) - max_groups} more group(s): every record is in the results file and the HTML report")
    return "\n".join(lines)
