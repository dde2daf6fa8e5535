"""Verdicts of the large tier's cases with 2^16 <= N*D*K <= 2^23 (where the accurate X^T R applies), one JSON
line per record (case, implementation, dtype, step, quantity, verdict, start of oracle_method), to show that a
change of the oracle changed no verdict there (``scripts/record_identity.py`` covers the quick tier byte for byte):

    .venv/bin/python scripts/large_verdicts.py write OUT.jsonl [MAX_CASES]   # with the harness of the current folder
    .venv/bin/python scripts/large_verdicts.py diff BEFORE.jsonl AFTER.jsonl

Not a test (it needs a reference run).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

IMPLEMENTATIONS = ["numpy-hand", "torch-seed", "mutant-float32-internally", "mutant-float16-accumulation",
                   "mutant-loss-half-precision"]


def write(out: str, limit: int) -> None:
    sys.path.insert(0, str(Path.cwd()))  # the harness of the folder it is run from
    from harness.cases import load_cases
    from harness.implementations import load_builtins, load_mutants
    from harness.runner import verify

    load_builtins()
    load_mutants()
    sel = []
    for c in load_cases(["cases"], tier="large").cases:
        if c.optimizer is not None or not c.finite or "W" not in c.values:  # linear-regression SGD cases only
            continue
        n, d = c.values["X"].shape
        k = c.values["W"].shape[1]
        if 2**16 <= n * d * k <= 2**23:
            sel.append(c)
    sel = sel[:limit]
    t0 = time.time()
    recs = verify(sel, IMPLEMENTATIONS, dtypes=None)
    with open(out, "w", encoding="utf-8") as fh:
        for r in recs:
            fh.write(json.dumps([r.case, r.implementation, r.dtype, r.step, r.quantity, r.verdict,
                                 (r.oracle_method or "")[:20]]) + "\n")
    print(f"{len(sel)} cases, {len(recs)} records, {time.time() - t0:.1f} s -> {out}")


def diff(before: str, after: str) -> int:
    a = [json.loads(line) for line in Path(before).read_text(encoding="utf-8").splitlines()]
    b = [json.loads(line) for line in Path(after).read_text(encoding="utf-8").splitlines()]
    bad = [(x, y) for x, y in zip(a, b, strict=False) if x[:6] != y[:6]]
    for x, y in bad[:5]:
        print("before", x, "after", y)
    accurate = sum(1 for y in b if y[6].startswith("ozaki"))
    same = not bad and len(a) == len(b)
    print(f"{len(a)} and {len(b)} records ({accurate} after from the accurate X^T R), {len(bad)} verdicts differing: "
          f"{'identical' if same else 'DIFFERENT'}")
    return 0 if same else 1


if __name__ == "__main__":
    if len(sys.argv) in (3, 4) and sys.argv[1] == "write":
        write(sys.argv[2], int(sys.argv[3]) if len(sys.argv) == 4 else 1000)
    elif len(sys.argv) == 4 and sys.argv[1] == "diff":
        sys.exit(diff(sys.argv[2], sys.argv[3]))
    else:
        sys.exit(__doc__)
