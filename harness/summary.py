"""The terminal summary: a view of the records, never a source of truth."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

from .figures import meaningful_bits, ulp_caveat
from .records import Record
from .verdicts import FAILING, NOT_GRADED, SEVERITY, STRICT_ONLY, VERDICTS, fails, severity, worst_verdict


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    rows = [list(map(str, r)) for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    line = "  ".join("-" * w for w in widths)
    return "\n".join([fmt.format(*header), line, *(fmt.format(*r) for r in rows)])


def _ratio(rs: Iterable[Record]) -> str:
    """The largest error / rigorous bound of ``rs``: the measure the verdict is made of."""
    vals = [r.bound_ratio for r in rs if r.bound_ratio is not None]
    return f"{max(vals):.3g}" if vals else "-"


def _bits(rs: Sequence[Record]) -> str:
    """The worst bits of error where they mean something; ``n/m`` where every figure is not meaningful."""
    vals = [b for r in rs if (b := meaningful_bits(r)) is not None]
    if vals:
        return f"{max(vals):.2f}"
    return "n/m" if any(ulp_caveat(r) for r in rs) else "-"


def _verdict(rs: Sequence[Record]) -> str:
    """The worst verdict, marked when every record with it is a probed known framework bug."""
    v = worst_verdict(r.verdict for r in rs)
    worst = [r for r in rs if r.verdict == v]
    return f"{v} (known bug)" if v in FAILING + STRICT_ONLY and all(r.known_bug for r in worst) else v


def _footnote(records: Iterable[Record]) -> str:
    reasons = sorted({why for r in records if (why := ulp_caveat(r))})
    if not reasons:
        return ""
    return "\n\nerror/bound: worst error / rigorous bound (above 1: disagree). n/m: " + "; ".join(reasons)


def summary_table(records: Sequence[Record], max_rows: int = 200) -> str:
    """Case x implementation x device x dtype x quantity: worst error / bound, worst bits of error and verdict.

    Each row leads with the measure the verdict is made of (error / rigorous
    bound); bits of error are shown where they mean something (see
    :func:`harness.figures.ulp_caveat`), ``n/m`` with the reason below where not.

    When there are more than ``max_rows`` rows, prints one row per implementation,
    device and dtype with its verdict counts instead, followed by every row whose
    verdict is disagree, error, suspect or invalid-input (worst first).
    """
    groups: dict[tuple[str, ...], list[Record]] = defaultdict(list)
    for r in records:
        groups[(r.case, r.implementation, r.device, r.dtype, r.quantity)].append(r)
    header = ("case", "implementation", "device", "dtype", "quantity", "error/bound", "worst bits", "verdict")
    rows = [(*key, _ratio(rs), _bits(rs), _verdict(rs)) for key, rs in groups.items()]
    if len(rows) <= max_rows:
        return _table(header, rows) + _footnote(records)
    agg: dict[tuple[str, ...], list[Record]] = defaultdict(list)
    for r in records:
        agg[(r.implementation, r.device, r.dtype)].append(r)

    def counts(rs: list[Record]) -> str:
        c = Counter(r.verdict for r in rs)
        return ", ".join(f"{c[v]} {v}" for v in VERDICTS if c[v])

    agg_rows = [(*k, str(len({r.case for r in rs})), _ratio(rs), _bits(rs), counts(rs)) for k, rs in agg.items()]
    out = _table(("implementation", "device", "dtype", "cases", "error/bound", "worst bits", "records"), agg_rows)
    # the rows worth reading: the verdicts that fail a run, with --strict or without (unknown ones too)
    worth = [v for v in reversed(VERDICTS) if v in FAILING + STRICT_ONLY]
    notable = [row for row in rows if (v := row[-1].split(" ")[0]) in worth or v not in SEVERITY]
    notable.sort(key=lambda row: -severity(row[-1].split(" ")[0]))
    if notable:
        out += f"\n\nRows that are {', '.join(worth)} ({len(notable)}):\n" + _table(header, notable[:max_rows])
        if len(notable) > max_rows:
            out += f"\n... and {len(notable) - max_rows} more (see the results file or the HTML report)"
    return out + _footnote(records)


def verdict_line(records: Sequence[Record]) -> str:
    """``"1234 records: 1200 agree, 30 suspect, 4 disagree (4 of them a known framework bug)"``."""
    counts = Counter(r.verdict for r in records)
    parts = [f"{counts[v]} {v}" for v in VERDICTS if counts[v]] + [f"{n} {v!r}" for v, n in counts.items() if v not in SEVERITY]
    known = sum(1 for r in records if r.known_bug and r.verdict in FAILING + STRICT_ONLY)
    note = f" ({known} of them a known framework bug)" if known else ""
    return f"{len(records)} records: " + (", ".join(parts) + note if parts else "none")


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
