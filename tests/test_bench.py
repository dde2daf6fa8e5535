"""The benchmark core: floor bytes, crossover, regimes, tables and figures from
pytest-benchmark JSON, and one run of the benchmark module with timing disabled."""

from __future__ import annotations

import json

import numpy as np

from harness.bench import analysis, timing
from harness.bench.figure import figure_svg
from harness.implementations import Implementation, StepResult
from tests.conftest import ROOT


def test_floor_elements_counts_every_input_read_and_output_written_once():
    # X 1000*16 + y 1000*4 + (W, grad_W, W') 3*64 + (b, grad_b, b') 3*4 + loss 1
    assert timing.floor_elements(timing.Size(1000, 16, 4)) == 16000 + 4000 + 192 + 12 + 1
    assert timing.floor_bytes(timing.Size(1000, 16, 4), "float32") == 4 * 20205
    assert timing.floor_bytes(timing.Size(1, 1, 1), "bfloat16") == 2 * (1 + 1 + 3 + 3 + 1)
    # an optimizer's state, read and written: Adam's two moments of W (64) and b (4), float32
    assert timing.floor_elements(timing.Size(1000, 16, 4), 2) == 20205 + 2 * 2 * (64 + 4)
    assert timing.floor_bytes(timing.Size(1000, 16, 4), "float32", 1) == 4 * (20205 + 2 * (64 + 4))


def test_full_sweep_spans_one_to_a_million_rows_and_skips_sizes_over_the_work_cap():
    sizes = timing.SWEEPS["full"].sizes(max_work=2**26)
    assert min(s.n for s in sizes) == 1 and max(s.n for s in sizes) == 10**6
    assert timing.Size(10**4, 128, 16) in sizes  # 2.05e7 multiply-adds <= 2^26
    assert timing.Size(10**5, 128, 16) not in sizes  # 2.05e8 > 2^26
    assert len(sizes) == 7 + 7 + 5
    assert len(timing.SWEEPS["full"].sizes(max_work=1e12)) == 21


def test_crossover_is_the_smallest_n_from_which_the_gpu_always_wins():
    cpu = {1: 1e-5, 10: 2e-5, 100: 1e-4, 1000: 1e-3}
    assert analysis.crossover(cpu, {1: 5e-5, 10: 5e-5, 100: 5e-5, 1000: 6e-5}) == 100
    # faster at N=10 by accident, slower at 100: the crossover is where it stays faster
    assert analysis.crossover(cpu, {1: 5e-5, 10: 1e-5, 100: 2e-4, 1000: 6e-5}) == 1000
    assert analysis.crossover(cpu, {1: 5e-5, 10: 5e-5, 100: 5e-4, 1000: 2e-3}) is None
    assert analysis.crossover(cpu, {}) is None


def test_regime_thresholds():
    assert analysis.regime(1e-4, floor=1e-6, t0=5e-5) == "overhead"  # 100x the floor, 2x the fixed cost
    assert analysis.regime(1.1e-4, floor=1e-6, t0=5e-5) == "compute"  # over both
    assert analysis.regime(3e-3, floor=1e-3, t0=5e-5) == "bandwidth"  # 3x the floor
    assert analysis.regime(2e-2, floor=1e-3, t0=5e-5) == "compute"  # 20x the floor
    assert analysis.regime(1e-3, floor=None, t0=5e-5) == ""


def _bench(kind: str, median: float, **info):
    return {"name": kind, "group": kind, "stats": {"min": median, "median": 2 * median, "rounds": 5}, "extra_info": {"kind": kind, **info}}


def _synthetic() -> dict:
    """A run with two devices: cpu 10 GB/s, cuda 1000 GB/s; the GPU wins from N = 10^4."""
    bm = [
        _bench("bandwidth", 0.1, device="cpu", bytes=10**9),  # 10 GB/s
        _bench("bandwidth", 0.25, device="cpu", bytes=2 * 10**9),  # 8 GB/s: the larger one counts
        _bench("bandwidth", 0.001, device="cuda:0", bytes=10**9),  # 1000 GB/s
    ]
    for n, c, g in ((1, 2e-5, 8e-5), (100, 3e-5, 8e-5), (10**4, 5e-4, 9e-5), (10**6, 4e-2, 3e-4)):
        size = timing.Size(n, 16, 4)
        for dev, t in (("cpu", c), ("cuda:0", g)):
            bm.append(_bench("step", t, implementation="torch-seed", device=dev, dtype="float32", n=n, d=16, k=4,
                             bytes=timing.floor_bytes(size, "float32")))
    for method, t in (("harness", 0.08), ("gradcheck", 0.002), ("gradcheck-fast", 0.001)):
        bm.append(_bench("verify", t, method=method, d=10, k=10, n=16, passed=True))
    return {"machine_info": {"harness": {"devices": {"cpu": "Test CPU", "cuda:0": "Test GPU"}, "note": "synthetic"}},
            "benchmarks": bm}


def test_tables_from_json_give_floor_ratio_regime_speedup_and_crossover(tmp_path):
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(_synthetic()))
    data = analysis.load(path)
    assert data.bandwidth == {"cpu": 1e10, "cuda:0": 1e12}
    big_cpu = next(s for s in data.steps if s.device == "cpu" and s.n == 10**6)
    # 4 bytes * (16e6 + 4e6 + 3*68 + 1) at 10 GB/s
    assert big_cpu.floor == 4 * 20_000_205 / 1e10
    assert big_cpu.ratio == 4e-2 / big_cpu.floor
    assert big_cpu.regime == "bandwidth"  # 4.99x the floor
    small_gpu = next(s for s in data.steps if s.device == "cuda:0" and s.n == 100)
    assert small_gpu.regime == "overhead"
    text = analysis.report_text(data)
    assert "crossover float32 D=16 K=4: N = 10000" in text
    assert "133x" in text  # speedup at N = 10^6: 4e-2 / 3e-4
    assert "10 GB/s" in text and "1e+03 GB/s" in text
    assert "note: synthetic" in text
    md = analysis.verify_table(data, markdown=True)
    assert "| 100 | 10 | 10 | 16 | 80 ms | 2 ms | 1 ms | 40x |" in md


def test_without_gpu_the_crossover_is_not_available(tmp_path):
    raw = _synthetic()
    raw["benchmarks"] = [b for b in raw["benchmarks"] if b["extra_info"].get("device") != "cuda:0"]
    text = analysis.report_text(analysis.from_json(raw))
    assert "crossover float32 D=16 K=4: n/a (no GPU in this run)" in text


def test_figure_svg_is_inline_svg_with_one_line_per_device(tmp_path):
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(_synthetic()))
    svg = figure_svg(path)
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
    assert "update step, float32, D=16, K=4" in svg
    for label in ("cpu step", "cuda:0 step", "cpu bandwidth floor", "cuda:0 bandwidth floor"):
        assert label in svg
    assert figure_svg(path) == svg  # deterministic: no dates, fixed ids


def test_tables_mark_the_time_of_a_step_that_failed_its_check(tmp_path):
    # the twenty-second round left a failing check's time unmarked in the tables (only the exit code said so): the
    # benchmark now records the check's message, and both tables write "(check FAILED)" after that time, only there
    raw = _synthetic()
    wrong = next(b for b in raw["benchmarks"] if b["extra_info"].get("kind") == "step" and b["extra_info"]["n"] == 100
                 and b["extra_info"]["device"] == "cpu")
    wrong["extra_info"]["check_failed"] = "grad_W: disagree against the exact oracle"
    data = analysis.from_json(raw)
    assert [s.n for s in data.steps if s.check_failed] == [100]
    rows = [line for line in analysis.step_tables(data).splitlines() if line.startswith("float32")]
    assert [line.split()[1] for line in rows if analysis.CHECK_FAILED in line] == ["100"]
    assert analysis.CHECK_FAILED not in analysis.largest_table(data)  # the largest size passed


def test_a_benchmarked_step_that_fails_its_check_is_marked_in_the_json_and_the_tables(capfd, tmp_path):
    """End to end: a plug-in that uses only the first two rows, timed on the tiny sweep, fails the run (exit 1) and its
    time carries the check's message in the JSON and the mark in the printed tables."""
    from harness.cli import main

    (tmp_path / "first_rows_plugin.py").write_text(
        "import harness\nfrom harness.implementations.numpy_steps import numpy_hand\n\n\n"
        "@harness.implementation('first-rows-only', framework='numpy')\n"
        "def first_rows(X, y, W, b, *, lr, reduction, steps):\n"
        "    return numpy_hand(X[:2], y[:2], W, b, lr=lr, reduction=reduction, steps=steps)\n\n\n"
        "@harness.implementation('always-raises', framework='numpy')\n"
        "def always_raises(X, y, W, b, *, lr, reduction, steps):\n"
        "    raise RuntimeError('no step here')\n")
    out_json = tmp_path / "bench.json"
    rc = main(["bench", "--sweep", "tiny", "--devices", "cpu", "--dtypes", "float64", "--implementations", "first-rows-only,always-raises",
               "--plugin", str(tmp_path / "first_rows_plugin.py"), "--no-verification", "--target-time", "0.01",
               "--json", str(out_json), "--html", "none"])
    out, err = capfd.readouterr()
    assert rc == 1, out[-2000:] + err[-2000:]
    steps = [b["extra_info"] for b in json.loads(out_json.read_text())["benchmarks"] if b["extra_info"]["kind"] == "step"]
    failed = {info["n"]: info["check_failed"] for info in steps}
    assert any("disagree against the exact oracle" in v for v in failed.values()), failed
    marked = [line for line in out.splitlines() if analysis.CHECK_FAILED in line]
    bad_n = {str(n) for n, v in failed.items() if v}
    assert marked and all(bad_n & set(line.replace("N=", " ").split()) for line in marked), out[-3000:]
    # an implementation that raised at every size has no row: the tables name it (they left it out without a word)
    assert "not timed: always-raises: every benchmark of theirs failed" in out, out[-3000:]
    assert "first-rows-only" not in out.split("not timed:", 1)[1].splitlines()[0]


def test_the_tables_name_an_implementation_with_no_timing_only_where_the_run_listed_it():
    raw = _synthetic()
    raw["machine_info"]["harness"]["implementations"] = ["torch-seed", "broken-step"]
    assert analysis.not_timed(analysis.from_json(raw)) == ["broken-step"]
    assert "not timed: broken-step" in analysis.report_text(analysis.from_json(raw))
    del raw["machine_info"]["harness"]["implementations"]  # a file of an earlier version: no list, no note
    assert analysis.not_timed(analysis.from_json(raw)) == []
    assert "not timed" not in analysis.report_text(analysis.from_json(raw))


def test_step_check_rejects_a_wrong_gradient():
    def wrong(X, y, W, b, *, lr, reduction, steps):
        R = X @ W + b - y
        gW = X.T @ R  # forgets the factor 2 / (N K) of the mean
        return [StepResult(np.mean(R * R), gW, R.sum(axis=0), W - lr * gW, b)]

    impl = Implementation("wrong-grad", "numpy", wrong)
    target = timing.make_step_target(impl, timing.Size(8, 3, 2), "cpu", "float64")
    target.setup()
    target()
    assert "grad_W: disagree against the exact oracle" in (target.check() or "")
    right = timing.make_step_target(next(iter(__import__("harness").implementations.resolve(["numpy-hand"]))),
                                    timing.Size(8, 3, 2), "cpu", "float64")
    right()
    assert right.check() is None


def test_step_check_grades_the_timed_call_on_every_row():
    """helper-86: a step that used only the first 256 rows was timed at N = 10,000 and passed: the check ran the step
    again on the first 256 rows. It now grades the timed call's own results on all the inputs."""
    from harness.implementations.numpy_steps import numpy_hand

    def first_rows(X, y, W, b, *, lr, reduction, steps):
        return numpy_hand(X[:256], y[:256], W, b, lr=lr, reduction=reduction, steps=steps)

    target = timing.make_step_target(Implementation("first-rows", "numpy", first_rows), timing.Size(1000, 2, 1),
                                     "cpu", "float64")
    target.setup()
    target()
    assert "disagree against the exact oracle" in (target.check() or "")
    calls = []

    def changes_after_its_first_call(X, y, W, b, *, lr, reduction, steps):
        calls.append(1)
        return numpy_hand(X, y, W, b, lr=lr * len(calls), reduction=reduction, steps=steps)

    target = timing.make_step_target(Implementation("drifts", "numpy", changes_after_its_first_call),
                                     timing.Size(300, 2, 1), "cpu", "float64")
    target()
    target()  # the timed calls: the second is wrong (lr doubled)
    assert "against the exact oracle" in (target.check() or "")


def test_bandwidth_target_counts_read_and_write_of_a_copy():
    assert timing.BandwidthTarget("cpu", "copy", 4096).bytes == 8192
    read = timing.BandwidthTarget("cpu", "read", 4096)
    assert read.bytes == 4096 and float(read()) == 1024.0


def test_benchmark_module_runs_once_with_timing_disabled(capfd, monkeypatch):
    """The benchmarks stay correct without costing the test budget: `harness bench --disable`
    runs the pytest-benchmark module once per benchmark on the tiny sweep (a subprocess, no xdist)."""
    from harness.cli import main

    monkeypatch.chdir(ROOT)
    rc = main(["bench", "--sweep", "tiny", "--devices", "cpu", "--disable"])
    out, err = capfd.readouterr()
    assert rc == 0, out[-3000:] + err[-3000:]
    assert "-p no:xdist" in err and "--benchmark-disable" in err
    assert " passed" in out and "failed" not in out


def test_report_embeds_benchmark_figures(tmp_path):
    """``harness report RESULTS --bench BENCH.json`` puts the time-against-size figure in the agreement report."""
    import subprocess
    import sys

    from tests.conftest import CASES

    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps(_synthetic()))
    results = tmp_path / "r.jsonl"
    subprocess.run([sys.executable, "-m", "harness", "check", "--cases", str(CASES / "seed.toml"), "--case", "seed",
                    "--implementations", "numpy-hand", "--dtypes", "float32", "--results", str(results), "--report", "none", "-q"],
                   check=True, capture_output=True)
    out = tmp_path / "report.html"
    res = subprocess.run([sys.executable, "-m", "harness", "report", str(results), "--bench", str(bench), "-o", str(out)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    page = out.read_text()
    assert f"Benchmarks ({bench})" in page
    assert page.count("<svg") >= 4  # the report's own three plots and at least one benchmark figure
    bad = subprocess.run([sys.executable, "-m", "harness", "report", str(results), "--bench", str(results), "-o", str(out)],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "not a benchmark JSON" in bad.stderr


def test_oracle_table_ratios():
    from harness.bench import analysis

    def entry(method, seconds, dtype="float64", data="normal"):
        return {"stats": {"min": seconds, "median": seconds, "mean": seconds, "rounds": 3},
                "extra_info": {"kind": "oracle", "method": method, "n": 16, "d": 1, "k": 1, "dtype": dtype, "data": data, "passed": True}}

    raw = {"benchmarks": [entry("numpy-step", 1e-5), entry("oracle", 2e-4), entry("check", 1e-3), entry("gradcheck", 2e-3),
                          entry("gradcheck-fast", 4e-3)]}
    data = analysis.from_json(raw)
    md = analysis.oracle_table(data, markdown=True)
    row = md.splitlines()[2]
    assert "| 16 | 16 | 1 | 1 | float64 | normal |" in row and "20x" in row and "100x" in row and "0.5x" in row and "0.25x" in row


def test_bench_without_the_test_extras_says_what_to_install(capfd, monkeypatch):
    # helper-91: after the README's first set-up command (no [test] extras), bench printed pytest's "No module named
    # pytest" and "pytest exited with 1 and wrote no reports/bench.json"
    import importlib.util

    from harness.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pytest_benchmark" else real(name, *a))
    rc = main(["bench", "--sweep", "tiny", "--devices", "cpu", "--disable"])
    err = capfd.readouterr().err
    assert rc == 2 and "pytest_benchmark missing" in err and '-e ".[test]"' in err, err
