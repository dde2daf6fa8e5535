"""Command line: ``python -m harness`` / ``autograd-harness``.

Exit codes: 0 everything agrees; 1 any ``disagree`` or ``error`` (and
``suspect`` with ``--strict``); 2 bad usage or bad input files (or an output
path that cannot be written, found before the run starts), with a one-line
message naming the file and key; 130 interrupted (SIGINT), after keeping every
finished record in the results file (see :class:`harness.records.ResultsStream`).
"""

from __future__ import annotations

import argparse
import fnmatch
import gc
import os
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .errors import HarnessError, TerminalStream, UsageError
from .memory import keep_freed_memory

# bound here, before any plug-in is imported: a plug-in that replaced harness.verdicts.run_outcome at import made a
# failing run exit 0 (helper-124; the policy it reads is a frozen copy too, harness.verdicts)
from .verdicts import run_outcome as _run_outcome

if TYPE_CHECKING:
    from pathlib import Path

    from .progress import Progress
    from .records import ResultsFile

DEFAULT_RESULTS = "reports/results.jsonl"
DEFAULT_REPORT = "reports/agreement.html"


def _positive_int(text: str) -> int:
    from decimal import Decimal, InvalidOperation

    try:
        number = Decimal(text.replace("_", ""))  # 1000000, 1_000_000 or 1e6
        value = int(number) if number.is_finite() and number == number.to_integral_value() else 0
    except (InvalidOperation, ValueError):
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    from .timeouts import parse_timeout

    try:
        value = parse_timeout(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--timeout: ")) from None
    assert value is not None
    return value


def _add_selection(p: argparse.ArgumentParser) -> None:
    from .limits import DEFAULT_MAX_DATA_BYTES, DEFAULT_MAX_ELEMENTS, DEFAULT_MAX_ORACLE_COST, DEFAULT_MAX_STEPS

    p.add_argument("--cases", action="append", metavar="PATH", help="case file or folder (repeatable; default: cases/)")
    p.add_argument("--case", action="append", metavar="ID", help="only cases whose id matches (exact or glob; repeatable)")
    from .cases import DEFAULT_TIER, TIERS

    tiers = p.add_mutually_exclusive_group()
    tiers.add_argument("--tier", choices=(*TIERS, "default"), default=DEFAULT_TIER,
                       help="which cases of the case files: quick (default): every hand-written case (seed, NIST StRD, semantics) and "
                            "one generated case per regime x reduction x steps of each [[generate]] table; full: every generated case "
                            "of the default tier (what CI runs); large: also the tier = \"large\" tables (N up to 100,000)")
    tiers.add_argument("--all", dest="tier", action="store_const", const="full", help="the full sweep: the same as --tier full")
    p.add_argument("--data-root", dest="data_roots", action="append", metavar="PATH",
                   help="a folder that case files' `data` paths may point into, besides each case file's own folder (repeatable)")
    p.add_argument("--max-elements", type=_positive_int, default=DEFAULT_MAX_ELEMENTS, metavar="N",
                   help=f"most numbers per case, N*D + N*K + D*K + K (default: {DEFAULT_MAX_ELEMENTS:,})")
    p.add_argument("--max-steps", type=_positive_int, default=DEFAULT_MAX_STEPS, metavar="N",
                   help=f"most SGD steps per case (default: {DEFAULT_MAX_STEPS:,})")
    p.add_argument("--max-oracle-cost", type=_positive_int, default=DEFAULT_MAX_ORACLE_COST, metavar="N",
                   help=f"most exact multiply-adds of one oracle pass over a case's steps (default: {DEFAULT_MAX_ORACLE_COST:.0e})")
    p.add_argument("--max-data-bytes", type=_positive_int, default=DEFAULT_MAX_DATA_BYTES, metavar="BYTES",
                   help=f"largest case (TOML) or data (CSV) file (default: {DEFAULT_MAX_DATA_BYTES:,})")


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
    check.add_argument("--results", default=DEFAULT_RESULTS, metavar="PATH",
                       help=f"JSON-lines results file (default: {DEFAULT_RESULTS}), written as tasks finish; its last line says whether "
                            "the run completed. An earlier file there is kept as NAME.prev.jsonl (one generation)")
    check.add_argument("--report", default=DEFAULT_REPORT, metavar="PATH",
                       help=f"HTML agreement report (default: {DEFAULT_REPORT}); 'none' to skip. An earlier report there is kept as NAME.prev.html")
    check.add_argument("--strict", action="store_true", help="exit 1 on suspect verdicts too")
    check.add_argument("--tf32", choices=("off", "on", "both"), default="off",
                       help="allow TF32 for float32 CUDA matmuls (default: off); both: every device with TF32 off, then the CUDA devices again with it on")
    check.add_argument("--matmul-precision", choices=("highest", "high", "medium"), default="highest",
                       help="torch.set_float32_matmul_precision for the run (default: highest)")
    check.add_argument("--no-trajectory", action="store_true", help="skip the exact trajectory (drift) computation")
    check.add_argument("--isolation", choices=("process", "inline"), default="process",
                       help="process (default): run each case/implementation/device/dtype in a supervised worker process (the "
                            "harness's own built-ins one case at a time, each held to its own timeout), so that a step "
                            "that crashes, calls os._exit or hangs becomes an error record and the run goes on; inline: in this process "
                            "(for a debugger). Both give every call its own inputs, check that it did not write into them and catch sys.exit")
    check.add_argument("--jobs", "-j", type=_positive_int, default=None, metavar="N",
                       help="worker processes (default: the CPU cores); the records do not depend on it")
    check.add_argument("--timeout", type=_positive_float, default=None, metavar="SECONDS",
                       help="with --isolation process: seconds one case/implementation/device/dtype may take, running and grading, before its worker is stopped "
                            "and it gets an error record (default: 60 s plus 1 s per million N*D*K*steps, times --repeat)")
    check.add_argument("--repeat", type=_positive_int, default=1, metavar="R",
                       help="run each implementation R times on the same inputs and record run-to-run determinism: the fraction of "
                            "runs bitwise equal to the first and the spread in ULPs per quantity; a run beyond the rigorous bound is "
                            "disagree (default: 1)")
    check.add_argument("--shard", metavar="K/N", default=None,
                       help="run only shard K of N (1 <= K <= N): the cases whose id hashes (CRC-32) to K; the N shards are disjoint "
                            "and together cover every case, on any machine. Merge the shards' results files with `report`")
    check.add_argument("--flush-to-zero", action="store_true",
                       help="every implementation of the run may flush subnormals to zero (FTZ/DAZ): grade it with the flush-to-zero bounds in every dtype")
    check.add_argument("-q", "--quiet", action="store_true", help="no progress and no table, only the verdict line")

    derive = sub.add_parser("derive", help="print the derived loss, gradient and update formulas")
    derive.add_argument("--reduction", choices=("sum", "mean", "both"), default="both",
                        help="the loss: sum of squared residuals, their mean (sum / (N*K)), or both (default)")
    derive.add_argument("--format", choices=("text", "latex", "mathml"), default="text",
                        help="how to print the formulas: plain text (default), LaTeX, or MathML (as the HTML report shows them)")
    derive.add_argument("--no-check", action="store_true",
                        help="skip the cross-check of the matrix formulas against sympy.diff of the scalar loss, element by element, "
                             "on shapes (N, D, K) = (1, 1, 1) and (3, 2, 2)")

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
    report.add_argument("--exit-status", action="store_true",
                        help="exit as check would on the records read (1: a record fails; 2: malformed lines, a file "
                             "whose run did not complete, or a shard of a split run missing), after writing the report "
                             "(default: 0 once it is written), so that a CI step merging shards fails with them")
    report.add_argument("--strict", action="store_true",
                        help="with --exit-status: exit 1 on suspect records and known framework bugs too, as "
                             "check --strict (the shards of a strict run merged)")
    report.add_argument("--bench", action="append", default=[], metavar="BENCH.json",
                        help="pytest-benchmark JSON from `harness bench`: adds its time-against-size figures and tables (repeatable)")

    from .bench.run import add_parser as add_bench_parser

    add_bench_parser(sub)
    return parser


def _select(cases_paths: Sequence[str] | None, ids: Sequence[str] | None, tier: str,
            args: argparse.Namespace | None = None) -> tuple[list, list]:
    """The cases selected by ``--cases``/``--case``/``--tier`` and the load errors.

    The loading options (``--data-root``, ``--max-elements``, ``--max-steps``, ``--max-oracle-cost``,
    ``--max-data-bytes``) come from ``args`` when given, else the defaults of :class:`harness.limits.Limits`."""
    from .api import cases_dir
    from .cases import load_cases, tier_name
    from .limits import Limits

    opts: dict[str, object] = {}
    if args is not None:
        opts = {k: getattr(args, k) for k in ("data_roots", "max_elements", "max_steps", "max_oracle_cost", "max_data_bytes")
                if getattr(args, k, None) is not None}
    roots = opts.pop("data_roots", None) or []
    limits = Limits(**opts)  # type: ignore[arg-type]
    paths = cases_paths or [str(cases_dir())]
    res = load_cases(paths, tier=tier, data_roots=roots, limits=limits)  # type: ignore[arg-type]
    cases = res.cases
    if ids:
        unmatched = [i for i in ids if not any(c.id == i or fnmatch.fnmatchcase(c.id, i) for c in cases)]
        if unmatched and not res.errors:
            wider = "" if tier_name(tier) == "large" else (
                f" (in the {tier_name(tier)} tier; a generated case may be in a larger one: add "
                + ("--all or " if tier_name(tier) == "quick" else "") + "--tier large)")
            raise UsageError(f"no case matches {', '.join(repr(i) for i in unmatched)} in {', '.join(paths)}{wider}")
        cases = [c for c in cases if any(c.id == i or fnmatch.fnmatchcase(c.id, i) for i in ids)]
    return cases, res.errors


def _progress_printer(quiet: bool, desc: str = "check") -> Progress | None:
    from .progress import make_progress

    return make_progress(quiet, desc)


def cmd_check(args: argparse.Namespace) -> int:
    from .implementations import load_entry_points, load_plugin
    from .records import (
        ResultsStream,
        check_output_path,
        check_previous_path,
        environment_record,
        has_footer,
        previous_path,
        run_input_files,
    )
    from .runner import RunOptions, verify
    from .shard import parse_shard, select_shard
    from .timeouts import check_timeout_isolation

    shard = parse_shard(args.shard)
    check_timeout_isolation(args.timeout, args.isolation)  # (verify checks it too: here before any output is made)
    for mod in args.plugin:
        load_plugin(mod)
    load_entry_points()
    impls = [s.strip() for s in args.implementations.split(",") if s.strip()] if args.implementations else None
    from .devices import parse_dtypes
    from .implementations import implementation_of

    parse_dtypes(args.dtypes)
    early_server = False
    if args.isolation == "process":
        from .implementations import may_run_torch
        from .isolation import start_fork_server

        # its ~3 s preload overlaps this process's own start-up (the implementations' torch import, the cases, the
        # report's warm-up); started after the plug-ins: the server and its workers inherit this process's environment
        # as it is now (a plug-in that sets OMP_NUM_THREADS at import, helper-104). (Before the names below: looking a
        # built-in up imports torch, ~1 s, which the first record waited for; after a typo the server, still
        # preloading, exits with this process within its preload's ~3 s.)
        early_server = start_fork_server(torch_optim=may_run_torch(impls))
    # names checked before the outputs (which makes their folders) and before the earlier results are moved aside: a typo
    # must not replace them with an empty run, nor leave an empty folder (helper-82)
    for name in impls or ():
        implementation_of(name)
    cases, errors = _select(args.cases, args.case, args.tier, args=args)
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    selected = len(cases)
    cases = select_shard(cases, shard)
    if not cases:
        # nothing to run: keep any earlier results file rather than overwrite it with an empty one
        why = f" in shard {args.shard} ({selected} cases selected in all)" if shard and selected else ""
        print(f"error: no case to run{why}; {args.results} left as it was", file=sys.stderr)
        return 2
    from .devices import available_devices, parse_devices

    missing = [d for d in parse_devices(args.devices) if d not in available_devices()]
    if missing:
        raise UsageError(f"device(s) {', '.join(missing)} not available on this machine (available: {', '.join(available_devices())})")
    if early_server and args.report != "none":
        from .report import warm_up

        try:
            warm_up()  # the fork server is still preloading: the report's fixed work costs nothing here, ~1 s at the end
        except Exception:  # noqa: BLE001, S110 - a report that cannot be made must not lose the run: the records come
            pass  # first, and the report at the end says why it failed (MPLBACKEND=nosuchbackend, helper-104)
    # the outputs are checked before the first case runs: a run is never lost to a bad path at its end
    # (every case file of the walk, not only those of the selected cases: --case seed --results cases/other.toml
    # replaced a case file the run did not select, helper-146)
    from .api import cases_dir
    from .cases import iter_case_files

    case_paths = args.cases or [str(cases_dir())]
    inputs = run_input_files([*map(str, iter_case_files(case_paths)),
                              *(c.source for c in cases if c.source and c.source != "<memory>")], args.plugin)
    results_path = check_output_path(args.results, "--results", inputs, case_paths)
    check_previous_path(results_path, "--results")
    if args.report != "none":
        report_path = check_output_path(args.report, "--report", inputs, case_paths)
        if report_path.resolve() == results_path.resolve():
            raise UsageError(f"--report {args.report}: the same file as --results")
        # each output's earlier file is kept as NAME.prev.EXT: one must not be the other's (helper-67: the earlier
        # report was lost, and the notes named the wrong files)
        if (report_path.resolve() == previous_path(results_path).resolve()
                or results_path.resolve() == previous_path(report_path).resolve()):
            raise UsageError(f"--report {args.report}: it and --results {args.results} would keep their earlier files "
                             "in each other's place (NAME.prev.EXT); give them other names")
        check_previous_path(report_path, "--report")
    extra = [a for mod in args.plugin for a in ("--plugin", mod)]
    if args.tf32 == "on":
        extra += ["--tf32", "on"]
    if args.repeat > 1:
        extra += ["--repeat", str(args.repeat)]
    if args.timeout is not None:
        extra += ["--timeout", f"{args.timeout:g}"]
    if args.flush_to_zero:
        extra += ["--flush-to-zero"]
    opts = RunOptions(tf32=args.tf32 == "on", matmul_precision=args.matmul_precision,
                      trajectory=not args.no_trajectory, extra_repro=extra, repeat=args.repeat, flush_to_zero=args.flush_to_zero)
    run = {"isolation": args.isolation, "jobs": args.jobs, "timeout": args.timeout, "plugins": list(args.plugin)}
    env = environment_record({"argv": sys.argv[1:], "tf32_option": args.tf32, "matmul_precision_option": args.matmul_precision,
                              "isolation": args.isolation, "repeat": args.repeat, "shard": args.shard,
                              "flush_to_zero": bool(args.flush_to_zero),
                              # the implementations named (each must grade something: the exit status below), for
                              # `report --exit-status` to apply the same rule (helper-181)
                              "named": _named(impls, args), "unrun": True,
                              # the case files or cases that could not be loaded (check exits 2): the file says so too, so
                              # that `report --exit-status` on it does too (it read as a clean run, helper-124)
                              "load_errors": [str(e) for e in errors]})
    # an earlier run's results are kept (results.prev.jsonl), never lost silently; the new file replaces the old one
    # now: a stale file must not look like this run's; and so is an earlier report, now too: interrupted at any moment
    # (Ctrl-C while the results were rewritten, or twice), the run never left an earlier run's report at the path next
    # to its own results (helper-66)
    args.outputs_touched = True  # from here an interrupt is handled below, with the records kept (main's message is for before)
    _keep_earlier(results_path, "--results", "results")
    kept_report = _keep_earlier(report_path, "--report", "report") if args.report != "none" else None
    stream = ResultsStream(results_path, env)
    finished: list = []

    # only where the tasks run in worker processes: inline, this process's own grading leaves cyclic garbage (torch's,
    # the oracle's) that a freeze would keep for the rest of the run (65,000 objects, 34 MB, on a small inline run)
    freeze = args.isolation == "process"

    def on_records(recs: list) -> None:
        stream.add(recs)
        finished.extend(recs)
        # the records are kept to the end of the run and hold no reference cycles: moved out of the cyclic
        # collector's reach (gc.freeze), whose full passes over every record kept cost ~10% of this process's CPU
        # on a run of 90,000 records (the workers' share of the machine)
        if freeze:
            gc.freeze()

    progress = _progress_printer(args.quiet)
    records: list = []
    try:
        try:
            records = verify(cases, impls, devices=args.devices, dtypes=args.dtypes, options=opts,
                             progress=progress, on_records=on_records, **run)
            if args.tf32 == "both":
                cuda = [d for d in parse_devices(args.devices) if d.startswith("cuda")]
                if cuda:
                    on = RunOptions(tf32=True, matmul_precision=args.matmul_precision, trajectory=not args.no_trajectory,
                                    extra_repro=[*extra, "--tf32", "on"], repeat=args.repeat,
                                    flush_to_zero=args.flush_to_zero)
                    records += verify(cases, impls, devices=cuda, dtypes=args.dtypes, options=on, progress=progress,
                                      on_records=on_records, **run)
        finally:
            if progress is not None:
                progress.close()
    except KeyboardInterrupt:
        return _interrupted(args, stream, finished)
    except BaseException:
        try:
            stream.finish(interrupted=False)  # a footer that says the run did not complete
        except OSError:
            pass  # nor can the footer be written (a full disk): without one, the file reads as unfinished all the same
        _say_diverted(stream)
        raise
    try:
        path = stream.finish(records)  # rewritten atomically in the deterministic order, with the completed footer
        _say_diverted(stream)
    except KeyboardInterrupt:  # every task had finished: the streamed file is ended as interrupted, unless replaced
        if has_footer(results_path):
            print(f"interrupted: the run had completed; its results are in {results_path}; no report was written",
                  file=sys.stderr, flush=True)
            return 130
        return _interrupted(args, stream, finished)
    try:
        return _after_run(args, records, path, cases, selected, errors, impls, kept_report, stream.written)
    except KeyboardInterrupt:
        print(f"interrupted: the run had completed; its results are in {path}; the summary or the report may be "
              "missing", file=sys.stderr, flush=True)
        return 130


def _say_diverted(stream: Any) -> None:
    """Say on stderr where the run's results went when another writer replaced its file meanwhile
    (:attr:`harness.records.ResultsStream.diverted`)."""
    if stream.tampered is not None:
        print(f"warning: {stream.tampered}", file=sys.stderr, flush=True)
    if stream.diverted is not None:
        print(f"warning: {stream.path} was replaced while this run wrote it (another run given the same --results?); "
              f"this run's results are in {stream.diverted} (what is at {stream.path} now, if anything, is not this run's)",
              file=sys.stderr, flush=True)


def _keep_earlier(path: Path, option: str, what: str) -> Path | None:
    """Keep the file at ``path`` as ``NAME.prev.EXT`` before a run replaces it (:func:`harness.records.keep_previous`),
    saying so on stderr; its new path, or None where there was none.

    Raises:
        UsageError: when it cannot be kept (nothing was run)."""
    from .records import keep_previous, previous_path

    try:
        kept = keep_previous(path)
    except OSError as exc:
        raise UsageError(f"{option} {path}: cannot keep the previous file as {previous_path(path)}: "
                         f"{exc.strerror or exc}; nothing was run") from exc
    if kept is not None:
        print(f"note: the previous {what} {path} {'are' if what == 'results' else 'is'} kept as {kept} (an older copy "
              "there is replaced)", file=sys.stderr)
    return kept


def _after_run(args: argparse.Namespace, records: list, path: Path, cases: list, selected: int, errors: list,
               impls: list[str] | None, kept_report: Path | None, written: ResultsFile | None = None) -> int:
    """``check``'s summary, report and exit code, after its results file was completed (``written``: that file's
    :attr:`harness.records.ResultsStream.written`, or None to read it)."""
    from .implementations import REGISTRY
    from .summary import by_device_dtype, determinism_table, explain_failures, summary_table, verdict_line

    if not args.quiet:
        print(summary_table(records))
        print()
        print(by_device_dtype(records))
        if args.repeat > 1:
            print()
            print(determinism_table(records))
        explained = explain_failures(records, strict=args.strict)
        if explained:
            print()
            print(explained)
        print()
    if args.tier == "quick" and any("generated" in c.tags for c in cases):
        print(f"quick tier: {selected} case(s) (every hand-written case, one generated case per regime x reduction x steps); "
              f"the full sweep: {full_sweep_command()}")
    report_note = ""
    if args.report != "none":
        from .report import render_report

        # the file as this run wrote it (ResultsStream.written: what reading it back finds, without reading it)
        render_report([written if written is not None else path], args.report, run_outcome=_run_outcome)
        report_note = f", report {args.report}" + (f" (the previous one kept as {kept_report})" if kept_report else "")
    print(f"{verdict_line(records)}; results {path}{report_note}")
    # each implementation named must grade something (one shard may hold none of its cases: the whole run is judged)
    outcome = _run_outcome(records, strict=args.strict, load_errors=len(errors), named=_named(impls, args), unrun=True)
    own = sorted(name for name in {r.implementation for r in records if r.verdict != "unsupported"}
                 if name in REGISTRY and REGISTRY[name].kind != "builtin" and REGISTRY[name].error_model is not None)
    if own:  # a plug-in's own bounds decide its verdicts: said where the verdicts are read
        print(f"note: {', '.join(own)} graded against {'its' if len(own) == 1 else 'their'} own error model (error_model=), "
              "not the harness's forward error bounds")
    for line in outcome.reasons:  # the last lines say why the run passes or fails, in plain words
        print(line)
    return outcome.code


def full_sweep_command() -> str:
    """This process's own command line asking for the full tier (``... check --all``)."""
    from .records import command_line

    cmd = command_line()
    for quick in ("--tier quick", "--tier=quick"):
        if quick in cmd:
            return cmd.replace(quick, "--tier full")
    return f"{cmd} --all"


def _interrupted(args: argparse.Namespace, stream: Any, finished: list) -> int:
    """SIGINT during ``check``: keep what finished, footer ``interrupted``, a report marked so; exit 130."""
    path = stream.finish(interrupted=True)
    _say_diverted(stream)
    print(f"interrupted: the workers are stopped; {len(finished)} record(s) kept in {path}; rendering the report...",
          file=sys.stderr, flush=True)
    note = ""
    if args.report != "none" and finished:
        from .report import render_report

        try:
            from .records import keep_previous

            kept = keep_previous(args.report)
            if kept is not None:
                print(f"note: the previous report is kept as {kept}", file=sys.stderr)
            render_report([path], args.report, title="Agreement report (INTERRUPTED: incomplete run)",
                          run_outcome=_run_outcome)
            note = f"; report (marked interrupted) {args.report}"
        except Exception as exc:  # the records are safe; a report failure must not hide that
            note = f"; the report could not be rendered: {type(exc).__name__}: {exc}"
    print(f"interrupted: kept the {len(finished)} record(s) of the tasks that finished in {path}{note}", file=sys.stderr, flush=True)
    return 130


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
    cases, errors = _select(args.cases, args.case, args.tier, args=args)
    for c in cases:
        n, d, k = c.shape
        model = f"  model: {c.model.describe()}" if c.model is not None else ""
        print(f"{c.id:48s} N={n:<7d} D={d:<3d} K={k:<3d} {c.reduction:4s} steps={c.steps:<3d} {','.join(c.dtypes):32s} {c.source}{model}")
    print(f"{len(cases)} cases", file=sys.stderr)
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    return 2 if errors else 0


def cmd_selftest(args: argparse.Namespace) -> int:
    from .devices import parse_dtypes
    from .selftest import format_selftest, run_selftest

    cases, errors = _select(args.cases, args.case, args.tier, args=args)
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    start = time.monotonic()
    from .progress import Progress

    # a bar on a terminal; elsewhere one line per implementation, with done/total, elapsed and ETA
    bar = None if args.quiet else Progress("selftest", every=0.0)
    try:
        res = run_selftest(cases, dtypes=parse_dtypes(args.dtypes), progress_count=bar)
    finally:
        if bar is not None:
            bar.close()
    print(format_selftest(res))
    print(f"{len(cases)} cases, {time.monotonic() - start:.1f}s")
    if errors:
        return 2
    return 0 if res.passed else 1


def _named(impls: list[str] | None, args: argparse.Namespace) -> list[str]:
    """The implementations a check run names, each of which must grade something (:func:`harness.verdicts.ungraded_named`):
    those of ``--implementations``, none for a shard (one shard may hold none of an implementation's cases: the whole
    run is judged). Written into the run's environment line too, for ``report --exit-status``."""
    return (impls or []) if not args.shard else []


def cmd_report(args: argparse.Namespace) -> int:
    from .report import build_model, render_html, write_atomic
    from .summary import verdict_line

    if args.strict and not args.exit_status:
        raise UsageError("--strict decides the exit status: give --exit-status with it")
    model = build_model(args.results)
    listed = {str(b) for b in model.malformed}
    shown = 0
    for w in model.warnings:
        if w in listed:
            shown += 1
            if shown > 10:
                continue
        print(f"warning: {w}", file=sys.stderr)
    if model.malformed_total:
        where = sorted({f.path for f in model.files if f.malformed})
        print(f"warning: {model.malformed_total} malformed line(s) in {', '.join(where)} left out of the report (not graded)"
              + (f"; {model.malformed_total - 10} not shown here" if model.malformed_total > 10 else "")
              + "; the report lists them under \"Malformed lines\"", file=sys.stderr)
    for n in model.notes:
        print(f"note: {n}", file=sys.stderr)
    if not model.records:
        why = "; ".join(f"{f.path}: {f.why_empty}" for f in model.files)
        raise UsageError(f"no records to report ({why})")
    sections = []
    for bench_json in args.bench:
        from .bench.analysis import load
        from .bench.run import section_html

        try:
            sections.append((f"Benchmarks ({bench_json})", section_html(load(bench_json))))
        except (OSError, ValueError, KeyError) as exc:
            raise UsageError(f"{bench_json}: not a benchmark JSON from `harness bench`: {exc}") from exc
    from .records import keep_previous, previous_path

    page = render_html(model, title=args.title, extra_sections=sections, run_outcome=_run_outcome)
    if any(os.path.realpath(src) == os.path.realpath(args.output) for src in args.results):
        raise UsageError(f"--output {args.output}: is one of the results files read")
    prev = previous_path(args.output)  # (where keep_previous moves an earlier page: report r.prev.jsonl -o r.jsonl
    if any(os.path.realpath(src) == os.path.realpath(prev) for src in args.results):  # replaced it, helper-146)
        raise UsageError(f"--output {args.output}: keeps its earlier file as {prev}, one of the results files read; "
                         "give another name")
    kept = keep_previous(args.output)  # as `check` does: an earlier report is kept, never lost silently
    path = write_atomic(args.output, page)
    left_out = f"; {model.malformed_total} malformed line(s) left out" if model.malformed_total else ""
    print(f"{verdict_line(model.records)} from {len(model.sources)} file(s){left_out}; report {path}"
          + (f" (the previous one kept as {kept})" if kept else ""))
    if not args.exit_status:
        return 0

    code, lines = model.exit_status(strict=args.strict, run_outcome=_run_outcome)
    for line in lines:
        print(line, file=sys.stderr)
    return code


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench.run import cmd_bench as run_bench

    return run_bench(args)


COMMANDS = {"check": cmd_check, "derive": cmd_derive, "cases": cmd_cases, "selftest": cmd_selftest, "report": cmd_report, "bench": cmd_bench}


def _printable_streams() -> None:
    """Let standard output and error print any text: a lone surrogate (an undecodable byte of a file name or of a
    plug-in's exception text, as Python keeps it) is printed as its backslash escape. In a UTF-8 locale the streams'
    strict errors made ``check`` end with a traceback at its summary, after the grading (helper-79)."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None and getattr(stream, "errors", "strict") == "strict":
            try:
                reconfigure(errors="backslashreplace")
            except (ValueError, OSError):  # pragma: no cover - a closed or detached stream
                pass


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        argv = ["check", *argv]
    args = parser.parse_args(argv)
    keep_freed_memory()  # this process runs the checks (or supervises workers that do): see harness.memory
    _printable_streams()
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = TerminalStream(out), TerminalStream(err)
    try:
        return _main(args)
    finally:
        if isinstance(sys.stdout, TerminalStream) and sys.stdout.wrapped is out:
            sys.stdout = out
        if isinstance(sys.stderr, TerminalStream) and sys.stderr.wrapped is err:
            sys.stderr = err


def _main(args: argparse.Namespace) -> int:
    try:
        return COMMANDS[args.command](args)
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.command == "check" and not getattr(args, "outputs_touched", False):
            print("interrupted before the first case ran: no results or report written (any earlier ones are where they "
                  "were)", file=sys.stderr)
        else:
            print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
