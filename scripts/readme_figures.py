"""Every count and time the README states, from one place.

    .venv/bin/python scripts/readme_figures.py                       # counts now; times as last measured
    .venv/bin/python scripts/readme_figures.py --results-quick reports/results.jsonl --results-full FULL.jsonl
    .venv/bin/python scripts/readme_figures.py --measure check,check-all,selftest,pytest   # run them, time them

Counts (cases per tier, the generated cases, the sweep test's items) are computed
now. Record counts are read from results files given on the command line (a
`check` of the quick tier, of `--all`, of the sweep test). Times are wall-clock
seconds of the README's commands as written, measured by ``--measure`` (which
runs them: `check` about a minute, `check --all` and the test suite 10-15
minutes each on 2 cores) and kept, with the machine's load average, in
``scripts/readme_figures.json`` next to this script, so that the figures are
printed again without running anything. Not a test: nothing is asserted
(``tests/test_docs.py`` checks that the README states the counts printed here).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MEASURED = Path(__file__).with_suffix(".json")

#: The README's commands as written (run from the project's root with this interpreter for .venv/bin/python).
COMMANDS = {
    "check": ["-m", "harness", "check"],
    "check-all": ["-m", "harness", "check", "--all"],
    "selftest": ["-m", "harness", "selftest"],
    "pytest": ["-m", "pytest", "-n", "auto", "--dist", "worksteal"],
}


def counts() -> dict[str, int]:
    """Cases per tier, generated cases of the full tier, and the items of tests/test_sweep.py (collected, not run)."""
    from harness.cases import TIERS, load_cases

    out: dict[str, int] = {}
    for tier in TIERS:
        res = load_cases([ROOT / "cases"], tier=tier)
        out[f"cases {tier}"] = len(res.cases)
        out[f"generated cases {tier}"] = sum("generated" in c.tags for c in res.cases)
    for tier in ("quick", "full"):
        out[f"cases of generated.toml {tier}"] = len(load_cases([ROOT / "cases" / "generated.toml"], tier=tier).cases)
    collected = subprocess.run([sys.executable, "-m", "pytest", "tests/test_sweep.py", "--collect-only", "-q", "-p", "no:randomly"],
                               cwd=ROOT, capture_output=True, text=True, check=False)
    out["sweep items"] = sum(line.startswith("tests/test_sweep.py::") for line in collected.stdout.splitlines())
    return out


def verdict_counts(path: str) -> str:
    """``"12,775 records: 12,182 agree, ..."`` of a results file (every record, in the policy's verdict order)."""
    from harness.records import read_jsonl
    from harness.verdicts import VERDICTS

    recs = read_jsonl(path).records
    c = Counter(r.verdict for r in recs)
    known = sum(1 for r in recs if r.known_bug and r.verdict in ("suspect", "disagree"))
    parts = ", ".join(f"{c[v]:,} {v}" for v in VERDICTS if c[v])
    return f"{len(recs):,} records: {parts}; {known:,} of the suspect and disagree records a probed known framework bug"


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def measure(names: list[str]) -> dict[str, dict[str, object]]:
    """Run the named commands as the README writes them and time them (wall clock), with the load before and after."""
    done: dict[str, dict[str, object]] = json.loads(MEASURED.read_text()) if MEASURED.exists() else {}
    for name in names:
        before = load_average()
        start = time.monotonic()
        proc = subprocess.run([sys.executable, *COMMANDS[name]], cwd=ROOT, capture_output=True, text=True, check=False)
        done[name] = {"command": ".venv/bin/python " + " ".join(COMMANDS[name]), "seconds": round(time.monotonic() - start, 1),
                      "exit": proc.returncode, "load before": before, "load after": load_average(), "cpus": os.cpu_count(),
                      "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "last lines": proc.stdout.strip().splitlines()[-4:]}
        MEASURED.write_text(json.dumps(done, indent=1) + "\n")
    return done


def minutes(seconds: float) -> str:
    """``"53 s"``, ``"14 min 31 s"``."""
    m, s = divmod(round(seconds), 60)
    return f"{m} min {s} s" if m else f"{s} s"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--measure", default="", metavar="LIST", help=f"comma-separated, of {', '.join(COMMANDS)}: run and time them")
    p.add_argument("--results-quick", metavar="PATH", help="results file of `check` (quick tier)")
    p.add_argument("--results-full", metavar="PATH", help="results file of `check --all`")
    p.add_argument("--results-sweep", metavar="PATH", help="results file of the sweep test (--harness-results)")
    args = p.parse_args(argv)
    names = [n for n in args.measure.split(",") if n]
    unknown = [n for n in names if n not in COMMANDS]
    if unknown:
        p.error(f"unknown command(s) {unknown}; known: {', '.join(COMMANDS)}")
    for key, value in counts().items():
        print(f"{key}: {value:,}")
    for label, path in (("check", args.results_quick), ("check --all", args.results_full), ("sweep test", args.results_sweep)):
        if path:
            print(f"{label} records: {verdict_counts(path)}")
    times = measure(names) if names else (json.loads(MEASURED.read_text()) if MEASURED.exists() else {})
    for name, m in times.items():
        print(f"time {name}: {minutes(float(m['seconds']))} ({m['command']}; exit {m['exit']}; {m['cpus']} CPUs, load average "
              f"{m['load before']} before, {m['load after']} after; {m['when']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
