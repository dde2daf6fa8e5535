"""How long `harness report` takes on a large synthetic results file, phase by phase.

    python scripts/report_speed.py [--mb 50] [--file PATH] [--profile OUT.prof]

Writes a synthetic results file of about ``--mb`` megabytes (tests/report_data.py;
kept under /tmp between runs) unless ``--file`` names one, then times reading,
aggregating, the derivation, the figures and the template, in wall-clock and
CPU seconds (CPU time is the steadier figure on a shared machine), and the whole
``python -m harness report`` command in a fresh process. Not a test: nothing is
asserted.
"""

from __future__ import annotations

import argparse
import cProfile
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RECORD_BYTES = 1020  # about what one synthetic record takes on a line


class Clock:
    def __init__(self) -> None:
        self.rows: list[tuple[str, float, float]] = []
        self.w, self.c = time.perf_counter(), time.process_time()

    def lap(self, name: str) -> None:
        w, c = time.perf_counter(), time.process_time()
        self.rows.append((name, w - self.w, c - self.c))
        self.w, self.c = w, c

    def show(self) -> None:
        print(f"{'phase':<28}{'wall s':>9}{'cpu s':>9}")
        for name, w, c in self.rows:
            print(f"{name:<28}{w:9.2f}{c:9.2f}")
        print(f"{'total':<28}{sum(r[1] for r in self.rows):9.2f}{sum(r[2] for r in self.rows):9.2f}")


def synthetic_file(mb: float) -> Path:
    from tests.report_data import synthetic_records, write_synthetic

    n_cases = max(1, round(mb * 1e6 / RECORD_BYTES / 80))
    path = Path(tempfile.gettempdir()) / f"harness-report-speed-{n_cases}.jsonl"
    if not path.exists():
        write_synthetic(path, synthetic_records(n_cases))
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=float, default=50.0)
    ap.add_argument("--file", type=Path)
    ap.add_argument("--profile", type=Path, help="also write a cProfile of the whole report to this file")
    args = ap.parse_args()
    path = args.file or synthetic_file(args.mb)
    print(f"{path}: {path.stat().st_size / 1e6:.1f} MB")

    clock = Clock()
    from harness.records import read_jsonl
    from harness.report import _derivations, build_model, plots, render_html

    clock.lap("imports")
    res = read_jsonl(path)
    clock.lap(f"read ({len(res.records)} records)")
    model = build_model([path])
    clock.lap("read + aggregate")
    _derivations(model.reductions)
    clock.lap("derivation (SymPy)")
    plots.bits_of_error_plot(model.records)
    plots.bound_tightness_plot(model.records)
    plots.drift_plot(model.records)
    clock.lap("figures (matplotlib)")
    html = render_html(model)
    clock.lap(f"render_html ({len(html) / 1e6:.1f} MB)")
    clock.show()

    out = Path(tempfile.gettempdir()) / "harness-report-speed.html"
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "harness", "report", str(path), "-o", str(out)], cwd=ROOT,
                          capture_output=True, text=True)
    print(f"python -m harness report: {time.perf_counter() - t0:.2f} s wall, exit {proc.returncode}")
    if args.profile:
        cProfile.runctx("render_html(build_model([path]))", globals(), {"render_html": render_html, "build_model": build_model,
                                                                       "path": path}, str(args.profile))
        print(f"profile: {args.profile}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
