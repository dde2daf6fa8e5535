"""Command line: ``python -m harness`` / ``autograd-harness``.

Exit codes: 0 everything agrees; 1 any ``disagree`` or ``error`` (and
``suspect`` with ``--strict``); 2 bad usage or bad input files, with a
one-line message naming the file and key.
"""

from __future__ import annotations

import argparse
import fnmatch
import sys
import time
from collections.abc import Callable, Sequence

from .errors import HarnessError, UsageError

DEFAULT_RESULTS = "reports/results.jsonl"
DEFAULT_REPORT = "reports/agreement.html"


def _add_selection(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cases", action="append", metavar="PATH", help="case file or folder (repeatable; default: cases/)")
    p.add_argument("--case", action="append", metavar="ID", help="only cases whose id matches (exact or glob; repeatable)")
    p.add_argument("--tier", choices=("default", "large"), default="default", help="generated-case tier (large is opt-in)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autograd-harness",
        description="Prove, with evidence, whether a gradient and a training step are right.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    check = sub.add_parser("check", help="grade implementations against the exact oracle (default)")
    _add_selection(check)
    check.add_argument("--devices", metavar="LIST", help="comma-separated: cpu, cuda, cuda:N, mps, all (default: all available)")
    check.add_argument("--dtypes", metavar="LIST", help="comma-separated: float64,float32,float16,bfloat16 or all (default: each case's own)")
    check.add_argument("--implementations", metavar="LIST", help="comma-separated implementation names (default: every correct one)")
    check.add_argument("--plugin", action="append", default=[], metavar="MODULE", help="import MODULE (or a .py file) that registers implementations (repeatable)")
    check.add_argument("--results", default=DEFAULT_RESULTS, metavar="PATH", help=f"JSON-lines results file (default: {DEFAULT_RESULTS})")
    check.add_argument("--report", default=DEFAULT_REPORT, metavar="PATH", help=f"HTML agreement report (default: {DEFAULT_REPORT}); 'none' to skip")
    check.add_argument("--strict", action="store_true", help="exit 1 on suspect verdicts too")
    check.add_argument("--tf32", choices=("off", "on", "both"), default="off",
                       help="allow TF32 for float32 CUDA matmuls (default: off); both: every device with TF32 off, then the CUDA devices again with it on")
    check.add_argument("--matmul-precision", choices=("highest", "high", "medium"), default="highest",
                       help="torch.set_float32_matmul_precision for the run (default: highest)")
    check.add_argument("--no-trajectory", action="store_true", help="skip the exact trajectory (drift) computation")
    check.add_argument("--flush-to-zero", action="store_true",
                       help="every implementation of the run may flush subnormals to zero (FTZ/DAZ): grade it with the flush-to-zero bounds in every dtype")
    check.add_argument("-q", "--quiet", action="store_true", help="no progress and no table, only the verdict line")

    derive = sub.add_parser("derive", help="print the derived loss, gradient and update formulas")
    derive.add_argument("--reduction", choices=("sum", "mean", "both"), default="both")
    derive.add_argument("--format", choices=("text", "latex", "mathml"), default="text")
    derive.add_argument("--no-check", action="store_true", help="skip the element-wise cross-check")

    cases = sub.add_parser("cases", help="list the cases that would run")
    _add_selection(cases)

    selftest = sub.add_parser("selftest", help="run the catalogue of buggy implementations: mutation score and false alarms")
    _add_selection(selftest)
    selftest.add_argument("--dtypes", metavar="LIST", help="comma-separated dtypes (default: each case's own)")
    selftest.add_argument("-q", "--quiet", action="store_true", help="no progress lines")

    report = sub.add_parser("report", help="render (and merge) results files into one HTML agreement report")
    report.add_argument("results", nargs="+", metavar="RESULTS.jsonl", help="results files (from several machines or shards: merged)")
    report.add_argument("-o", "--output", default=DEFAULT_REPORT, metavar="PATH", help=f"HTML file to write (default: {DEFAULT_REPORT})")
    report.add_argument("--title", default="Agreement report", help="page title")
    report.add_argument("--bench", action="append", default=[], metavar="BENCH.json",
                        help="pytest-benchmark JSON from `harness bench`: adds its time-against-size figures and tables (repeatable)")

    from .bench.run import add_parser as add_bench_parser

    add_bench_parser(sub)
    return parser


def _select(cases_paths: Sequence[str] | None, ids: Sequence[str] | None, tier: str) -> tuple[list, list]:
    from .api import cases_dir
    from .cases import load_cases

    paths = cases_paths or [str(cases_dir())]
    res = load_cases(paths, tier=tier)
    cases = res.cases
    if ids:
        unmatched = [i for i in ids if not any(c.id == i or fnmatch.fnmatchcase(c.id, i) for c in cases)]
        if unmatched and not res.errors:
            raise UsageError(f"no case matches {', '.join(repr(i) for i in unmatched)} in {', '.join(paths)}")
        cases = [c for c in cases if any(c.id == i or fnmatch.fnmatchcase(c.id, i) for i in ids)]
    return cases, res.errors


def _progress_printer(quiet: bool) -> Callable[[int, int, str], None] | None:
    if quiet:
        return None
    start = time.monotonic()
    last = [0.0]

    def progress(done: int, total: int, label: str) -> None:
        now = time.monotonic()
        if done == total or now - last[0] > 2.0:
            last[0] = now
            print(f"[{done}/{total}] {now - start:5.1f}s {label}", file=sys.stderr, flush=True)

    return progress


def cmd_check(args: argparse.Namespace) -> int:
    from .implementations import load_entry_points, load_plugin
    from .records import environment_record, write_jsonl
    from .runner import RunOptions, verify
    from .summary import by_device_dtype, summary_table, verdict_line

    for mod in args.plugin:
        load_plugin(mod)
    load_entry_points()
    cases, errors = _select(args.cases, args.case, args.tier)
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    if not cases:
        # nothing to run: keep any earlier results file rather than overwrite it with an empty one
        print(f"error: no case to run; {args.results} left as it was", file=sys.stderr)
        return 2
    from .devices import available_devices, parse_devices

    missing = [d for d in parse_devices(args.devices) if d not in available_devices()]
    if missing:
        raise UsageError(f"device(s) {', '.join(missing)} not available on this machine (available: {', '.join(available_devices())})")
    impls = [s.strip() for s in args.implementations.split(",") if s.strip()] if args.implementations else None
    extra = [a for mod in args.plugin for a in ("--plugin", mod)]
    if args.tf32 == "on":
        extra += ["--tf32", "on"]
    if args.flush_to_zero:
        extra += ["--flush-to-zero"]
    opts = RunOptions(tf32=args.tf32 == "on", matmul_precision=args.matmul_precision,
                      trajectory=not args.no_trajectory, extra_repro=extra, flush_to_zero=args.flush_to_zero)
    records = verify(cases, impls, devices=args.devices, dtypes=args.dtypes, options=opts,
                     progress=_progress_printer(args.quiet))
    if args.tf32 == "both":
        cuda = [d for d in parse_devices(args.devices) if d.startswith("cuda")]
        if cuda:
            on = RunOptions(tf32=True, matmul_precision=args.matmul_precision, trajectory=not args.no_trajectory,
                            extra_repro=[*extra, "--tf32", "on"], flush_to_zero=args.flush_to_zero)
            records += verify(cases, impls, devices=cuda, dtypes=args.dtypes, options=on, progress=_progress_printer(args.quiet))
    env = environment_record({"argv": sys.argv[1:], "tf32_option": args.tf32, "matmul_precision_option": args.matmul_precision})
    path = write_jsonl(args.results, records, env)
    if not args.quiet:
        print(summary_table(records))
        print()
        print(by_device_dtype(records))
    report_note = ""
    if args.report != "none":
        from .report import render_report

        render_report([path], args.report)
        report_note = f", report {args.report}"
    print(f"{verdict_line(records)}; results {path}{report_note}")
    if errors:
        return 2
    if not any(r.verdict not in ("unsupported", "invalid-input") for r in records):
        print("error: nothing was graded: every record is unsupported or invalid-input", file=sys.stderr)
        return 2
    bad = {"disagree", "error"} | ({"suspect"} if args.strict else set())
    return 1 if any(r.verdict in bad for r in records) else 0


def cmd_derive(args: argparse.Namespace) -> int:
    from .symbolic import check_elementwise, derive

    reductions = ("sum", "mean") if args.reduction == "both" else (args.reduction,)
    for red in reductions:
        der = derive(red)
        rendered = {"text": der.text, "latex": der.latex, "mathml": der.mathml}[args.format]()
        print(f"# reduction = {red}: L = {'sum' if red == 'sum' else 'mean'} of (X W + 1 b^T - Y)^2")
        for q, line in rendered.items():
            print(f"{q:7s} {line}")
        if not args.no_check:
            problems = [p for shape in ((1, 1, 1), (3, 2, 2)) for p in check_elementwise(red, *shape)]
            verdict = "agrees" if not problems else "DISAGREES: " + "; ".join(problems)
            print(f"element-wise sympy.diff cross-check on shapes (N,D,K) = (1,1,1), (3,2,2): {verdict}")
            if problems:
                return 1
        print()
    return 0


def cmd_cases(args: argparse.Namespace) -> int:
    cases, errors = _select(args.cases, args.case, args.tier)
    for c in cases:
        n, d, k = c.shape
        print(f"{c.id:48s} N={n:<7d} D={d:<3d} K={k:<3d} {c.reduction:4s} steps={c.steps:<3d} {','.join(c.dtypes):32s} {c.source}")
    print(f"{len(cases)} cases", file=sys.stderr)
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    return 2 if errors else 0


def cmd_selftest(args: argparse.Namespace) -> int:
    from .devices import parse_dtypes
    from .selftest import format_selftest, run_selftest

    cases, errors = _select(args.cases, args.case, args.tier)
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    start = time.monotonic()
    res = run_selftest(cases, dtypes=parse_dtypes(args.dtypes),
                       progress=None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True)))
    print(format_selftest(res))
    print(f"{len(cases)} cases, {time.monotonic() - start:.1f}s")
    if errors:
        return 2
    return 0 if res.passed else 1


def cmd_report(args: argparse.Namespace) -> int:
    from .report import build_model, render_html, write_atomic
    from .summary import verdict_line

    model = build_model(args.results)
    for w in model.warnings:
        print(f"warning: {w}", file=sys.stderr)
    if not model.records:
        raise UsageError(f"no records in {', '.join(args.results)}: nothing to report")
    sections = []
    for bench_json in args.bench:
        from .bench.analysis import load
        from .bench.run import section_html

        try:
            sections.append((f"Benchmarks ({bench_json})", section_html(load(bench_json))))
        except (OSError, ValueError, KeyError) as exc:
            raise UsageError(f"{bench_json}: not a benchmark JSON from `harness bench`: {exc}") from exc
    path = write_atomic(args.output, render_html(model, title=args.title, extra_sections=sections))
    print(f"{verdict_line(model.records)} from {len(model.sources)} file(s); report {path}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench.run import cmd_bench as run_bench

    return run_bench(args)


COMMANDS = {"check": cmd_check, "derive": cmd_derive, "cases": cmd_cases, "selftest": cmd_selftest, "report": cmd_report, "bench": cmd_bench}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        argv = ["check", *argv]
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
