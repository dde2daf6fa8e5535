"""``python -m harness bench``: run the pytest-benchmark suite in ``benchmarks/`` and show the results.

pytest runs in a subprocess (the core never imports pytest), without xdist
(``-p no:xdist``: pytest-benchmark turns itself off under xdist), writing its
JSON to ``reports/bench.json``; the tables and figures are then computed from
that file (:mod:`harness.bench.analysis`, :mod:`harness.bench.figure`).
"""

from __future__ import annotations

import argparse
import html
import importlib.util
import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from ..errors import UsageError
from ..records import check_output_path, check_previous_path, keep_previous
from .analysis import BenchData, load, oracle_table, report_text, verify_table
from .timing import SWEEPS

DEFAULT_JSON = "reports/bench.json"
DEFAULT_HTML = "reports/bench.html"


def benchmarks_dir() -> Path:
    """The ``benchmarks/`` folder of the source tree.

    Raises:
        UsageError: if the harness is not run from a source checkout (an installed wheel has no benchmarks).
    """
    path = Path(__file__).resolve().parent.parent.parent / "benchmarks"
    if not (path / "conftest.py").is_file():
        raise UsageError(f"benchmarks folder not found at {path}: run `bench` from a source checkout (pip install -e .)")
    return path


def _positive_int(text: str) -> int:
    """``--threads``: an integer of at least 1 (``-1`` ended in pytest's INTERNALERROR and ``0`` was dropped silently,
    helper-86)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of threads >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of threads >= 1, got {text!r}")
    return value


def _finite_at_least(least: float, what: str) -> Callable[[str], float]:
    """An argparse type: a finite number of at least ``least`` (``what`` names it in the error). ``--target-time nan``
    or ``inf`` failed every benchmark with pytest's tracebacks and a negative time was passed on unchecked;
    ``--max-work 0``, ``nan`` or a negative cap skipped every size and the run exited 0 having timed no step
    (helper-126)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value >= least):
            raise argparse.ArgumentTypeError(f"expected a finite {what} >= {least:g}, got {text!r}")
        return value
    return parse


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add the ``bench`` subcommand to the CLI's subparsers."""
    p = sub.add_parser("bench", help="time the update step on every device (pytest-benchmark) and compare with the bandwidth floor")
    p.add_argument("--quick", action="store_true", help="short sweep for CI/smoke (same as --sweep quick)")
    p.add_argument("--sweep", choices=sorted(SWEEPS), default="full", help="size sweep (default: full, N = 1..10^6)")
    p.add_argument("--devices", metavar="LIST", help="comma-separated: cpu, cuda, cuda:N, mps, all (default: all available)")
    p.add_argument("--dtypes", metavar="LIST", help="comma-separated dtypes (default: every dtype each implementation supports)")
    p.add_argument("--implementations", metavar="LIST", help="comma-separated names (default: every correct registered one)")
    p.add_argument("--plugin", action="append", default=[], metavar="MODULE", help="import MODULE that registers implementations (repeatable)")
    p.add_argument("--threads", type=_positive_int, metavar="N",
                   help="CPU threads for torch and NumPy's BLAS, at least 1 (default: CPUs available to the process)")
    p.add_argument("--tf32", choices=("off", "on"), default="off", help="allow TF32 for float32 CUDA matmuls (default: off)")
    p.add_argument("--max-work", type=_finite_at_least(1, "N*D*K"), default=2**26, metavar="W", help="skip sizes with N*D*K above W (default: 2^26)")
    p.add_argument("--target-time", type=_finite_at_least(0, "number of seconds"), default=0.3, metavar="S", help="seconds of timed rounds per benchmark (default: 0.3)")
    p.add_argument("--no-verification", action="store_true", help="skip the verification-cost comparison")
    p.add_argument("--only-verification", action="store_true", help="only the verification-cost comparison (and the bandwidth probe)")
    p.add_argument("--note", default="", help="free text stored in the JSON's machine_info (e.g. 'shared machine, noisy')")
    p.add_argument("--json", default=DEFAULT_JSON, metavar="PATH", help=f"pytest-benchmark JSON output (default: {DEFAULT_JSON})")
    p.add_argument("--html", default=DEFAULT_HTML, metavar="PATH", help=f"HTML page with tables and SVG figures (default: {DEFAULT_HTML}); 'none' to skip")
    p.add_argument("--from-json", metavar="PATH", help="do not run: print the tables (and write the HTML) of an existing JSON file")
    p.add_argument("--stat", choices=("min", "median", "mean"), default="min",
                   help="statistic of the rounds used as the time (default: min, the least disturbed round)")
    p.add_argument("--disable", action="store_true", help="pass --benchmark-disable: run each benchmark once, for correctness only")


def pytest_command(args: argparse.Namespace) -> list[str]:
    """The pytest command line for these options."""
    sweep = "quick" if args.quick else args.sweep
    cmd = [sys.executable, "-m", "pytest", str(benchmarks_dir()), "-p", "no:xdist", "-p", "no:cacheprovider", "-q",
           "--benchmark-quiet", f"--bench-sweep={sweep}", f"--bench-tf32={args.tf32}", f"--bench-max-work={args.max_work}",
           f"--bench-target-time={args.target_time}"]
    if args.disable:
        cmd.append("--benchmark-disable")
    else:
        cmd.append(f"--benchmark-json={args.json}")
    for opt in ("devices", "dtypes", "implementations", "threads", "note"):
        val = getattr(args, opt)
        if val:
            cmd.append(f"--bench-{opt}={val}")
    for mod in args.plugin:
        cmd.append(f"--bench-plugin={mod}")
    if args.no_verification:
        cmd += ["-m", "not verify"]
    elif args.only_verification:
        cmd += ["-m", "verify or bandwidth"]
    return cmd


def section_html(data: BenchData) -> str:
    """The benchmark figures (one inline SVG per dtype) and tables, as an HTML fragment
    for the agreement report (``python -m harness report ... --bench bench.json``)."""
    from .figure import figure_svg

    figures = []
    for dtype in sorted({s.dtype for s in data.steps}):
        try:
            figures.append(figure_svg(data, dtype=dtype))
        except ValueError as exc:
            figures.append(f"<p>{html.escape(str(exc))}</p>")
    body = "\n".join(f"<figure>{svg}</figure>" for svg in figures)
    return f"{body}\n<pre>{html.escape(report_text(data))}</pre>"


def write_html(data: BenchData, path: str | Path) -> Path:
    """A standalone page with the tables and one SVG figure per dtype."""
    path = Path(path)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>autograd-harness benchmarks</title>
<style>body{{font-family:sans-serif;margin:2em}} pre{{font-size:12px;background:#f6f6f6;padding:1em;overflow-x:auto}}</style>
</head><body>
<h1>Update-step benchmarks</h1>
{section_html(data)}
</body></html>
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path


def cmd_bench(args: argparse.Namespace) -> int:
    """Run the benchmarks (unless ``--from-json``), print the tables, write the HTML page.

    Returns:
        pytest's exit code (0 when every benchmark ran and its step checked correct).
    """
    if args.only_verification and args.no_verification:
        raise UsageError("--only-verification and --no-verification exclude each other")
    rc = 0
    json_path = args.from_json or args.json
    if not args.from_json:
        missing = [m for m in ("pytest", "pytest_benchmark") if importlib.util.find_spec(m) is None]
        if missing:  # (the first set-up command installs without them: "No module named pytest", no JSON; helper-91)
            raise UsageError(f"bench runs pytest-benchmark, which is not installed ({', '.join(missing)} missing): install the "
                             "test extras, .venv/bin/pip install -c constraints/cpu.txt -e \".[test]\"")
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        if not args.disable:
            # the earlier run's JSON and page are kept as NAME.prev.*, so that a run that fails before pytest-benchmark
            # writes its JSON shows no earlier run's tables as its own (it read whatever file was at --json; helper-126)
            outputs = [("--json", args.json)] + ([("--html", args.html)] if args.html != "none" else [])
            for option, path in outputs:
                check_output_path(path, option, [])  # a regular file in a writable folder (a folder, a link, /proc: exit 2)
                check_previous_path(path, option)
            for _, path in outputs:
                kept = keep_previous(path)
                if kept is not None:
                    print(f"note: the previous {path} is kept as {kept}", file=sys.stderr)
        cmd = pytest_command(args)
        print("running: " + " ".join(cmd), file=sys.stderr, flush=True)
        # its own session: a parent's pytest-xdist worker variables made pytest-benchmark disable timing there (a
        # `harness bench` from an xdist test timed nothing and wrote no JSON)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST_")}
        rc = subprocess.call(cmd, env=env)
        if args.disable:
            return rc
        if not Path(json_path).is_file():
            print(f"error: pytest exited with {rc} and wrote no {json_path}", file=sys.stderr)
            return rc or 1
    try:
        data = load(json_path, args.stat)
    except (OSError, ValueError) as exc:
        raise UsageError(str(exc)) from exc
    print(report_text(data))
    if not args.from_json and not args.only_verification and not data.steps:
        # nothing timed is no benchmark (as nothing graded is no pass): every size above --max-work, or no
        # implementation that runs in the selected dtypes and devices
        print(f"error: no update step was timed (every size of the {'quick' if args.quick else args.sweep} sweep above "
              f"--max-work {args.max_work:g}, or no selected implementation runs in the selected dtypes and devices)",
              file=sys.stderr)
        return rc or 1
    if args.html != "none" and data.steps:
        print(f"html: {write_html(data, args.html)}")
    if data.verify:
        print("\nMarkdown (README 'Benchmarks'):\n" + verify_table(data, markdown=True))
    if data.oracle:
        print("\nMarkdown (README 'Benchmarks', oracle):\n" + oracle_table(data, markdown=True))
    print(f"json: {json_path}")
    return rc
