"""The HTML agreement report: content, merging, escaping, interrupted files, atomic writes, CLI."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

import harness.report as report_mod
from harness.cli import main
from harness.records import Record, environment_record, read_jsonl, write_jsonl
from harness.report import ExtraSection, build_model, render_html, render_report
from harness.report.plots import bits_of_error_plot, bound_tightness_plot, drift_plot
from tests.conftest import CASES
from tests.report_data import real_results


@pytest.fixture(scope="module")
def two_jobs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return real_results(tmp_path_factory.mktemp("jobs"))


@pytest.fixture(scope="module")
def merged_html(two_jobs: tuple[Path, Path]) -> str:
    return render_html(build_model(list(two_jobs)))


def rec(**kw: object) -> Record:
    base: dict[str, object] = {"case": "c", "implementation": "impl", "device": "cpu", "dtype": "float32",
                               "quantity": "grad_W", "step": 1, "verdict": "agree"}
    base.update(kw)
    return Record(**base)  # type: ignore[arg-type]


def section(html: str, sid: str) -> str:
    start = html.index(f'<section id="{sid}"')
    return html[start:html.index("</section>", start)]


def test_merged_report_shows_both_machines_and_every_record(two_jobs, merged_html):
    a, b = (read_jsonl(p) for p in two_jobs)
    model = build_model(list(two_jobs))
    assert len(model.records) == len(a.records) + len(b.records) == 240
    assert [e.source for e in model.environments] == [str(p) for p in two_jobs]
    machines = section(merged_html, "machines")
    assert "cpu-job" in machines and "second-job" in machines
    header = merged_html[:merged_html.index("</header>")]
    assert "<strong>240 records</strong>" in header
    assert "cpu-job (cpu-job.jsonl)" in header and "second-job (second-job.jsonl)" in header
    # one run per implementation and dtype: 2 x 3
    assert len(model.runs) == 6 and sum(u.n for u in model.runs) == 240


def test_matrix_has_a_cell_per_implementation_device_dtype_led_by_error_over_bound(two_jobs, merged_html):
    model = build_model(list(two_jobs))
    records = model.records
    matrix = section(merged_html, "matrix")
    cells = re.findall(r'<td class="cell v-([a-z-]+)" data-i="([^"]+)" data-d="([^"]+)" data-t="([^"]+)"[^>]*>([^<]+)<small>', matrix)
    assert len(cells) == 6
    for verdict, impl, dev, dt, label in cells:
        mine = [r for r in records if (r.implementation, r.device, r.dtype) == (impl, dev, dt)]
        # the cell leads with the measure the verdict is made of: worst error / rigorous bound
        assert label == f"{max(r.bound_ratio for r in mine if r.bound_ratio is not None):.2g}"
        assert verdict == "agree" == max((r.verdict for r in mine), key=["agree", "suspect"].index)


def test_cell_takes_the_worst_verdict_and_the_largest_bits(tmp_path):
    recs = [rec(bits_of_error=1.5), rec(quantity="loss", bits_of_error=3.25, verdict="suspect"),
            rec(quantity="b", verdict="unsupported"), rec(dtype="float64", bits_of_error=0.5),
            rec(dtype="float64", quantity="b", verdict="error", message="RuntimeError: boom")]
    path = write_jsonl(tmp_path / "r.jsonl", recs, {"kind": "environment", "hostname": "h"})
    model = build_model([path])
    c32, c64 = model.matrix[("impl", "cpu", "float32")], model.matrix[("impl", "cpu", "float64")]
    assert (c32.verdict, c32.worst_bits, c32.n, c32.counts) == ("suspect", 3.25, 3, {"agree": 1, "suspect": 1, "unsupported": 1})
    assert (c64.verdict, c64.worst_bits, c64.label, c64.bits_label) == ("error", 0.5, "-", "0.50 bits")
    assert model.counts == {"agree": 2, "unsupported": 1, "suspect": 1, "error": 1}
    # worst run first; its drill-down keeps the error record and the message
    assert model.runs[0].verdict == "error" and model.runs[0].messages == ["RuntimeError: boom"]
    assert [r.verdict for r in model.runs[0].details][0] == "error"


def test_seed_case_is_shown_step_by_step_next_to_the_exact_values(two_jobs, merged_html):
    seed = section(merged_html, "seed")
    # the notebook itself comes first: torch-seed, float32
    assert seed.index("<strong>torch-seed</strong> on cpu in float32") < seed.index("<strong>torch-seed</strong> on cpu in float64")
    first = seed[:seed.index("</details>")]
    rows = re.findall(r"<tr><td class=\"n\">(\d+)</td><td>(\w+)</td><td class=\"num\">([^<]*)</td><td class=\"num\">([^<]*)</td>"
                      r"<td class=\"n\">([^<]*)</td><td class=\"num\">([^<]*)</td>", first)
    assert len(rows) == 40  # 8 steps x 5 quantities
    step1 = {q: (computed, exact, ulps, written) for step, q, computed, exact, ulps, written in rows if step == "1"}
    # PyTorch's W.grad after step 1, the exact value 5872025/4194304 for the float32 inputs
    # (2 ULPs away), and 7/5 for the decimal inputs (see tests/test_seed.py)
    assert step1["grad_W"] == ("1.3999996185302734", "1.3999998569488525391...", "2", "1.4")
    assert step1["W"][0] == "2.1600000858306885"
    assert step1["b"][0] == "1.2599999904632568"
    steps = [int(r[0]) for r in rows]
    assert steps == sorted(steps) and set(steps) == set(range(1, 9))


def test_derivation_is_presentation_mathml_for_each_reduction(merged_html):
    deriv = section(merged_html, "derivation")
    assert "reduction = sum" in deriv and "reduction = mean" not in deriv  # the seed case uses sum
    assert deriv.count('<math display="block">') == 5
    assert "<mfrac>" in deriv and "<msup>" in deriv
    assert "&lt;math" not in deriv  # markup, not escaped text


def test_everything_from_the_data_is_escaped(tmp_path):
    evil = "<script>alert('x')</script>"
    recs = [rec(case=f"case{evil}", implementation='imp"l<b>', message=f"ValueError: {evil}", verdict="error",
                repro=f"python -m harness check --case '{evil}'", exact="<i>1</i>", computed="&amp;"),
            rec(case="seed", implementation=f"torch{evil}", computed=evil)]
    env = environment_record({"hostname": evil, "note": '<img src=x onerror="alert(1)">'})
    path = write_jsonl(tmp_path / "evil.jsonl", recs, env)
    html = render_html(build_model([path]), title=evil, extra_sections=[ExtraSection(evil, "<p>trusted</p>", id="bench")])
    assert html.count("<script") == 1  # the report's own script, and nothing else
    assert "<img" not in html and "<b>" not in html and "<i>1</i>" not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html
    assert 'data-i="imp&#34;l&lt;b&gt;"' in html
    assert "&amp;amp;" in html
    assert "<p>trusted</p>" in html  # extra sections are trusted markup by contract


def test_a_results_file_cut_off_mid_line_still_renders_with_a_warning(two_jobs, tmp_path, capsys):
    text = two_jobs[0].read_text().splitlines(keepends=True)
    cut = tmp_path / "interrupted.jsonl"
    cut.write_text("".join(text[:-1]) + text[-1][: len(text[-1]) // 2])
    out = tmp_path / "r.html"
    assert main(["report", str(cut), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    line = len(text)
    assert f"{cut}:{line}: skipped a line that is not valid JSON" in err
    html = out.read_text()
    warn = html[html.index('id="warnings"'):]
    assert f"{cut}:{line}: skipped a line" in warn[:warn.index("</div>")]
    assert f"<strong>{len(text) - 2} records</strong>" in html


def test_report_is_written_atomically(two_jobs, tmp_path, monkeypatch):
    out = tmp_path / "agreement.html"
    out.write_text("previous report")

    def crash(src: str, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(report_mod.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        render_report(list(two_jobs), out)
    assert out.read_text() == "previous report"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agreement.html"]
    monkeypatch.undo()
    assert render_report(list(two_jobs), out) == out
    assert out.read_text().startswith("<!doctype html>")
    assert out.stat().st_mode & 0o044 == 0o044  # readable by others, like any report


def test_report_is_self_contained(merged_html):
    # no external resource of any kind: no src/href to another file, no CSS import, no font
    assert not re.search(r"""(src|href)=["'](?!#)""", merged_html)
    assert not re.search(r"url\((?!#)", merged_html)  # SVG clip paths refer to ids in the page only
    assert "@import" not in merged_html and "@font-face" not in merged_html
    assert merged_html.count("<svg") == 3  # bits of error, bound tightness, drift: inline


def test_cli_report_merges_files_and_names_a_missing_one(two_jobs, tmp_path, capsys):
    out = tmp_path / "sub" / "merged.html"
    assert main(["report", *map(str, two_jobs), "-o", str(out)]) == 0
    assert "240 records: 240 agree from 2 file(s)" in capsys.readouterr().out
    assert out.exists()
    missing = tmp_path / "nope.jsonl"
    assert main(["report", str(missing), "-o", str(out)]) == 2
    assert f"{missing}: results file not found" in capsys.readouterr().err


def test_check_writes_the_report(tmp_path):
    results, html = tmp_path / "results.jsonl", tmp_path / "agreement.html"
    code = main(["check", "--cases", str(CASES / "seed.toml"), "--case", "seed", "--dtypes", "float32",
                 "--implementations", "torch-seed", "--results", str(results), "--report", str(html), "-q"])
    assert code == 0
    page = html.read_text()
    assert "<strong>40 records</strong>" in page and 'data-i="torch-seed"' in page


def test_extra_sections_are_appended_for_benchmarks(two_jobs):
    html = render_html(build_model(list(two_jobs)), extra_sections=[("Benchmarks", "<svg><text>fig</text></svg>")])
    extra = section(html, "extra-0")
    assert "<h2>Benchmarks</h2>" in extra and "<svg><text>fig</text></svg>" in extra
    assert '<a href="#extra-0">Benchmarks</a>' in html


def test_plots_render_svg_and_escape_labels():
    recs = [rec(implementation="a$b$<c>", bits_of_error=float(i % 7), bound_ratio=0.01 * (i + 1)) for i in range(20)]
    recs += [rec(quantity="W", step=s, drift_ulp_error=float(s * s)) for s in range(1, 5)]
    bits = bits_of_error_plot(recs)
    assert bits is not None and bits.startswith("<svg ") and "a$b$&lt;c&gt;" in bits
    assert bound_tightness_plot(recs) is not None
    drift = drift_plot(recs)
    assert drift is not None and "Trajectory drift" in drift
    assert drift_plot([rec(quantity="loss")]) is None and bound_tightness_plot([rec()]) is None


def test_drill_down_lists_every_record_that_does_not_agree_and_the_worst_of_each_quantity(tmp_path):
    recs = [rec(quantity=q, step=s, bits_of_error=float(s + i)) for i, q in enumerate(("loss", "grad_W", "W")) for s in (1, 2, 3)]
    recs += [rec(quantity="b", step=2, verdict="disagree", bits_of_error=9.0, bound_ratio=1.5)]
    model = build_model([write_jsonl(tmp_path / "r.jsonl", recs, {"kind": "environment"})])
    (run,) = model.runs
    assert [(r.quantity, r.step) for r in run.details] == [("b", 2), ("loss", 3), ("grad_W", 3), ("W", 3)]
    assert run.omitted == 6 and run.quantity_bits == "loss 3.00, grad_W 4.00, W 5.00, b 9.00"
    # a run that agrees throughout lists its worst record only
    model = build_model([write_jsonl(tmp_path / "s.jsonl", recs[:-1], {"kind": "environment"})])
    assert [(r.quantity, r.step) for r in model.runs[0].details] == [("W", 3)]
    assert Counter(r.verdict for r in model.records) == {"agree": 9}


def test_a_green_cell_never_shows_astronomic_bits(tmp_path):
    # every record agrees, far inside its bound, but one exact value is near zero: 61.92 "bits of error"
    # there say nothing (the error is graded against an absolute bound); the cell leads with error / bound
    near_zero = rec(dtype="float64", bits_of_error=61.92, max_ulp_error=2.0**61.92, bound_ratio=0.003, expected_ratio=0.05,
                    exact="1e-310", rigorous_bound=1e-12)
    plain = rec(dtype="float64", quantity="loss", bits_of_error=1.0, max_ulp_error=1.0, bound_ratio=0.01, exact="2.5",
                rigorous_bound=1e-14)
    path = write_jsonl(tmp_path / "r.jsonl", [near_zero, plain], {"kind": "environment", "hostname": "h"})
    model = build_model([path])
    cell = model.matrix[("impl", "cpu", "float64")]
    assert (cell.verdict, cell.label, cell.worst_bits, cell.bits_label) == ("agree", "0.01", 1.0, "1.00 bits")
    assert "smallest normal" in cell.bits_note
    html = render_html(model)
    assert "61.92" not in section(html, "matrix")
    only = build_model([write_jsonl(tmp_path / "s.jsonl", [near_zero], {"kind": "environment", "hostname": "h"})])
    assert only.matrix[("impl", "cpu", "float64")].bits_label == "bits n/m"


def test_the_command_row_is_the_command_line_as_it_ran():
    from harness.report.model import environment_of

    env = {"kind": "environment", "command": ".venv/bin/python -m pytest tests/test_sweep.py -n 2", "argv": ["tests/test_sweep.py", "-n", "2"]}
    rows = [v for label, v in environment_of(env, "r.jsonl").fields if label == "command"]
    assert rows == [".venv/bin/python -m pytest tests/test_sweep.py -n 2"]
    # a results file written before the "command" field: its harness arguments, as before
    old = environment_of({"kind": "environment", "argv": ["check", "--all"]}, "r.jsonl").fields
    assert [v for label, v in old if label == "command"] == ["python -m harness check --all"]


def test_optimizer_rules_section_shows_the_families_present_only() -> None:
    """The rules shown are those whose state the records hold (momentum_buffer_*: SGD; exp_avg*: Adam, AdamW), each
    rule's update in MathML, derived from SymPy's rule (the momentum buffer's update holds the dampening and the
    weight decay it is the rule of)."""
    from harness.optim.report import family_html, rules_section

    assert rules_section({"grad_W", "W", "loss"}) is None
    sgd = rules_section({"W", "momentum_buffer_W"})
    assert sgd is not None and sgd[0] == "Optimizer update rules"
    assert "SGD with momentum" in sgd[1] and "Adam (L2" not in sgd[1] and "<mrow>" in sgd[1]
    assert "sgd (Nesterov)" in sgd[1] and "b_t" in sgd[1]
    both = rules_section({"exp_avg_b", "momentum_buffer_W"})
    assert both is not None and "AdamW" in both[1] and "SGD with momentum" in both[1]
    assert both[1].index("<h4>SGD with momentum") < both[1].index("<h4>Adam (L2")  # FAMILIES' order, not the records'
    with pytest.raises(KeyError, match="no optimizer rule family 'grad'"):
        family_html("grad")


def test_warm_up_changes_nothing_on_the_page(tmp_path: Path, two_jobs: tuple[Path, Path]) -> None:
    """``check`` calls :func:`harness.report.warm_up` while its workers start: a page rendered after it, in a fresh
    process, is the page rendered without it (but for the time it was made)."""
    import subprocess
    import sys

    results = [str(p) for p in two_jobs]
    src = ("import sys, harness.report as r\n"
           "if sys.argv[1] == 'warm':\n    r.warm_up()\n"
           "sys.stdout.write(r.render_html(r.build_model(sys.argv[2:])))\n")
    pages = [subprocess.run([sys.executable, "-c", src, mode, *results], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).resolve().parent.parent).stdout for mode in ("cold", "warm")]

    def without_time(page: str) -> str:
        return re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \w*", "TIME", page)

    assert len(pages[0]) > 10_000 and without_time(pages[0]) == without_time(pages[1])
