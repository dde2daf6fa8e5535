"""The terminal summary: a view of the records, never a source of truth."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

from .records import Record
from .verdicts import SEVERITY, VERDICTS, worst_verdict


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    rows = [list(map(str, r)) for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    line = "  ".join("-" * w for w in widths)
    return "\n".join([fmt.format(*header), line, *(fmt.format(*r) for r in rows)])


def _bits(values: Iterable[float | None]) -> str:
    vals = [v for v in values if v is not None]
    return f"{max(vals):.2f}" if vals else "-"


def summary_table(records: Sequence[Record], max_rows: int = 200) -> str:
    """Case x implementation x device x dtype x quantity: worst bits of error and verdict.

    When there are more than ``max_rows`` rows, prints one row per implementation,
    device and dtype with its verdict counts instead, followed by every row whose
    verdict is disagree, error, suspect or invalid-input (worst first).
    """
    groups: dict[tuple[str, ...], list[Record]] = defaultdict(list)
    for r in records:
        groups[(r.case, r.implementation, r.device, r.dtype, r.quantity)].append(r)
    header = ("case", "implementation", "device", "dtype", "quantity", "worst bits", "verdict")
    rows = [(*key, _bits(r.bits_of_error for r in rs), worst_verdict(r.verdict for r in rs)) for key, rs in groups.items()]
    if len(rows) <= max_rows:
        return _table(header, rows)
    agg: dict[tuple[str, ...], list[Record]] = defaultdict(list)
    for r in records:
        agg[(r.implementation, r.device, r.dtype)].append(r)

    def counts(rs: list[Record]) -> str:
        c = Counter(r.verdict for r in rs)
        return ", ".join(f"{c[v]} {v}" for v in VERDICTS if c[v])

    agg_rows = [(*k, str(len({r.case for r in rs})), _bits(r.bits_of_error for r in rs), counts(rs)) for k, rs in agg.items()]
    out = _table(("implementation", "device", "dtype", "cases", "worst bits", "records"), agg_rows)
    # the rows worth reading: verdicts about correctness (unsupported and overflow are counted above)
    notable = [row for row in rows if row[-1] in ("disagree", "error", "suspect", "invalid-input")]
    notable.sort(key=lambda row: -SEVERITY[row[-1]])
    if notable:
        out += f"\n\nRows that are disagree, error, suspect or invalid-input ({len(notable)}):\n" + _table(header, notable[:max_rows])
        if len(notable) > max_rows:
            out += f"\n... and {len(notable) - max_rows} more (see the results file or the HTML report)"
    return out


def verdict_line(records: Sequence[Record]) -> str:
    """``"1234 records: 1200 agree, 30 suspect, 4 disagree"``."""
    counts = Counter(r.verdict for r in records)
    parts = [f"{counts[v]} {v}" for v in VERDICTS if counts[v]]
    return f"{len(records)} records: " + (", ".join(parts) if parts else "none")


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
    for r in records:
        groups[(_device_label(r), r.dtype)][r.verdict] += 1
    lines = []
    for (dev, dt), cnt in sorted(groups.items()):
        parts = ", ".join(f"{cnt[v]} {v}" for v in VERDICTS if cnt[v])
        lines.append(f"{dev} {dt}: {parts}")
    devices = sorted({dev for dev, _ in groups})
    if len(devices) > 1:
        failing = ("disagree", "error")
        bad = {dev: [(dt, cnt) for (d, dt), cnt in sorted(groups.items()) if d == dev and any(cnt[v] for v in failing)] for dev in devices}
        verdicts: list[str] = []
        for dev in devices:
            if bad[dev]:
                what = "; ".join(f"{dt}: " + ", ".join(f"{cnt[v]} {v}" for v in failing if cnt[v]) for dt, cnt in bad[dev])
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
