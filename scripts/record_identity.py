"""Records of a fixed set of checks, one JSON line each, to prove that a speed-up changed no record.

    .venv/bin/python scripts/record_identity.py write OUT.jsonl        # run the set with this checkout's harness
    .venv/bin/python scripts/record_identity.py diff BEFORE.jsonl AFTER.jsonl

Run ``write`` on the commit before a change (e.g. a ``git archive`` of it, from its own folder) and on the
commit after, then ``diff``: it prints the number of records and of differing ones (the first few fields that
differ) and exits 1 if any differs. The set: every case of the quick tier (seed, NIST, semantics, selftest,
optimizer and generated cases) with correct steps, optimizer steps and mutants in each case's own dtypes, then
40 of them again with ``--flush-to-zero`` and ``--repeat 2``: about 18,500 records, 40 s on one core.
Not a test (it needs a reference run); ``tests/test_fast_paths.py`` compares the fast paths with the slow ones.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

ROOT = Path.cwd()
IMPLEMENTATIONS = [
    "numpy-hand", "torch-seed", "torch-func", "finite-differences", "numpy-optim-sgd", "numpy-optim-adam", "torch-optim-adam",
    "mutant-sign-flip", "mutant-float32-internally", "mutant-float16-accumulation", "mutant-missing-factor-2",
    "mutant-mean-for-sum", "mutant-skipped-update", "mutant-loss-half-precision", "mutant-tf32-inputs",
    "mutant-adam-no-bias-correction",
]


def write(out: str) -> None:
    sys.path.insert(0, str(ROOT))  # the harness of the folder it is run from
    from harness.cases import load_cases
    from harness.implementations import load_builtins, load_mutants
    from harness.runner import RunOptions, verify

    load_builtins()
    load_mutants()
    cases = load_cases(["cases"], tier="quick").cases  # relative: the records' repro lines do not name the folder
    t0 = time.time()
    recs = verify(cases, IMPLEMENTATIONS, dtypes=None)
    recs += verify([c for c in cases if c.optimizer is None][:40], ["numpy-hand", "mutant-float16-accumulation"], dtypes=None,
                   options=RunOptions(flush_to_zero=True, repeat=2))
    with open(out, "w", encoding="utf-8") as fh:
        for r in recs:
            fh.write(json.dumps(dataclasses.asdict(r), sort_keys=True) + "\n")
    print(f"{len(cases)} cases, {len(recs)} records, {time.time() - t0:.1f} s -> {out}")


def diff(before: str, after: str) -> int:
    a = Path(before).read_text(encoding="utf-8").splitlines()
    b = Path(after).read_text(encoding="utf-8").splitlines()
    bad = 0
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            bad += 1
            if bad <= 5:
                dx, dy = json.loads(x), json.loads(y)
                print(i, {k: (dx[k], dy.get(k)) for k in dx if dx[k] != dy.get(k)})
    same = bad == 0 and len(a) == len(b)
    print(f"{len(a)} and {len(b)} records, {bad} differing: {'identical' if same else 'DIFFERENT'}")
    return 0 if same else 1


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "write":
        write(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == "diff":
        sys.exit(diff(sys.argv[2], sys.argv[3]))
    else:
        sys.exit(__doc__)
