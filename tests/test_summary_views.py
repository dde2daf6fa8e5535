"""The summary's tables and lines are views computed in one pass over the records: each figure must equal the one a
plain per-group computation gives (the largest bound_ratio with max's order, NaN included; the worst verdict, the first
of the most severe; ``(known bug)`` only where every record with it is one; bits of error only where meaningful)."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence

from harness.figures import meaningful_bits, ulp_caveat
from harness.records import Record
from harness.summary import by_device_dtype, summary_table, verdict_line
from harness.verdicts import FAILING, STRICT_ONLY, VERDICTS, run_outcome, worst_verdict


def _records(n: int, seed: int) -> list[Record]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        verdict = rnd.choice([*VERDICTS, "agree", "agree", "weird", "agree x"])
        out.append(Record(
            case=f"c{rnd.randrange(4)}", implementation=rnd.choice(["a", "b"]), device=rnd.choice(["cpu", "cuda:0"]),
            dtype=rnd.choice(["float32", "float16", "float8"]), quantity=rnd.choice(["*", "loss", "grad_W", "W"]),
            step=i % 3, verdict=verdict, bound_ratio=rnd.choice([None, float("nan"), 0.5, 2.0, rnd.random()]),
            bits_of_error=rnd.choice([None, 1.5, 30.0, float("inf")]), max_abs_error=rnd.choice([0.0, 1e-3]),
            exact=rnd.choice([None, "1e-300...", "0.5", "2.5000\u2026"]), rigorous_bound=rnd.choice([None, 0.1, 10.0]),
            known_bug=rnd.choice(["", "", "bug A", "bug B"]), tf32=rnd.choice([None, False, True]),
            message=rnd.choice(["", "no exact value; x"])))
    return out


def _plain_rows(records: Sequence[Record]) -> list[tuple[str, ...]]:
    groups: dict[tuple[str, ...], list[Record]] = defaultdict(list)
    for r in records:
        groups[(r.case, r.implementation, r.device, r.dtype, r.quantity)].append(r)
    rows = []
    for key, rs in groups.items():
        ratios = [r.bound_ratio for r in rs if r.bound_ratio is not None]
        bits = [b for r in rs if (b := meaningful_bits(r)) is not None]
        v = worst_verdict(r.verdict for r in rs)
        known = v in FAILING + STRICT_ONLY and all(r.known_bug for r in rs if r.verdict == v)
        rows.append((*key, f"{max(ratios):.3g}" if ratios else "-",
                     f"{max(bits):.2f}" if bits else ("n/m" if any(ulp_caveat(r) for r in rs) else "-"),
                     f"{v} (known bug)" if known else v))
    return rows


def test_summary_table_rows_are_the_plain_per_group_figures():
    for seed in range(5):
        recs = _records(150, seed)
        table = summary_table(recs, max_rows=10_000)
        lines = table.split("\n\n")[0].split("\n")[2:]
        assert [line.split() for line in lines] == [" ".join(row).split() for row in _plain_rows(recs)]
        # the per-implementation table and its notable rows: every unknown and failing verdict row, most severe first
        short = summary_table(recs, max_rows=5, max_notable=1000)
        assert "Rows that are error, disagree, invalid-input, suspect" in short
        assert short.endswith(table[len(table.split("\n\n")[0]):])  # the same footnote


def test_lines_are_deterministic_and_count_every_record():
    recs = _records(400, 7)
    line = verdict_line(recs)
    assert line.startswith("400 records: ")
    assert sum(int(p.split()[0]) for p in line.split(": ", 1)[1].split(" (")[0].split(", ")) == 400
    assert by_device_dtype(recs) == by_device_dtype(list(recs))
    assert "cross-device: " in by_device_dtype(recs)
    assert run_outcome(recs, named=["a", "b"]) == run_outcome(list(recs), named=["a", "b"])
