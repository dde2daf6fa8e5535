"""The terminal summary: a view of the records, never a source of truth."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

from .records import VERDICTS, Record, worst_verdict


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
    device, dtype and quantity instead, followed by every row that does not agree.
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
        agg[(r.implementation, r.device, r.dtype, r.quantity)].append(r)
    agg_rows = [(*k, str(len({r.case for r in rs})), _bits(r.bits_of_error for r in rs), worst_verdict(r.verdict for r in rs)) for k, rs in agg.items()]
    out = _table(("implementation", "device", "dtype", "quantity", "cases", "worst bits", "verdict"), agg_rows)
    notable = [row for row in rows if row[-1] != "agree"]
    if notable:
        out += f"\n\nRows that do not agree ({len(notable)}):\n" + _table(header, notable[:max_rows])
        if len(notable) > max_rows:
            out += f"\n... and {len(notable) - max_rows} more (see the results file)"
    return out


def verdict_line(records: Sequence[Record]) -> str:
    """``"1234 records: 1200 agree, 30 suspect, 4 disagree"``."""
    counts = Counter(r.verdict for r in records)
    parts = [f"{counts[v]} {v}" for v in VERDICTS if counts[v]]
    return f"{len(records)} records: " + (", ".join(parts) if parts else "none")


def by_device_dtype(records: Sequence[Record]) -> str:
    """One line per device and dtype with verdict counts (which device disagrees)."""
    groups: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    for r in records:
        groups[(r.device, r.dtype)][r.verdict] += 1
    lines = []
    for (dev, dt), cnt in sorted(groups.items()):
        parts = ", ".join(f"{cnt[v]} {v}" for v in VERDICTS if cnt[v])
        lines.append(f"{dev} {dt}: {parts}")
    return "\n".join(lines)
