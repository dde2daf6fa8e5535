"""The terminal's explanation of failures: grouped by implementation and cause, each with its diagnosis,
one example and its reproduce line; known framework bugs named as such; the CLI's last line gives the exit code."""

from __future__ import annotations

import re

from harness.records import Record
from harness.summary import cause, explain_failures, failure_groups

KNOWN = "fused SGD on the CPU skips half-precision updates (pytorch/pytorch#191763, confirmed on this machine by a probe)"


def rec(verdict: str, quantity: str = "grad_W", step: int = 1, **kw: object) -> Record:
    base: dict[str, object] = {"case": "c", "implementation": "my-step", "device": "cpu", "dtype": "float32",
                               "quantity": quantity, "step": step, "verdict": verdict}
    base.update(kw)
    return Record(**base)  # type: ignore[arg-type]


def test_cause_prefers_the_known_bug_then_the_diagnosis_then_the_first_clause():
    # one known framework bug is one group, whatever each of its records looks like
    assert cause(rec("disagree", diagnosis="skipped update of W (W unchanged)", known_bug=KNOWN, message="x")) == \
        f"known framework bug: {KNOWN}"
    assert cause(rec("disagree", diagnosis="gradient off by a factor of 1/2", message="x")) == "gradient off by a factor of 1/2"
    assert cause(rec("disagree", known_bug=KNOWN, message="x")) == f"known framework bug: {KNOWN}"
    a = rec("disagree", message="grad_W: 3 of 4 element(s) above the rigorous error bound; worst at [0, 1]: error 2.5")
    b = rec("disagree", quantity="W", message="W: 1 of 16 element(s) above the rigorous error bound; worst at [3, 0]: error 1e-3")
    assert cause(a) == cause(b) == "# of # element(s) above the rigorous error bound"
    c = rec("disagree", step=2, message="gradient accumulation: .grad was not reset between steps: grad_W at step 2 is 17.8 = 7.7 + 10.1")
    assert cause(c) == "gradient accumulation"
    assert cause(rec("error", "*", 0, message="")) == "error"
    # a number inside a word (float16, grad_W2) is not a number
    assert cause(rec("error", "*", 0, message="float16 matmul raised")) == "float16 matmul raised"


def test_groups_merge_dtypes_and_put_what_fails_the_run_first():
    recs = [
        rec("agree", "loss"),
        rec("disagree", dtype="float16", implementation="torch-optim-sgd-fused", quantity="W", known_bug=KNOWN, bound_ratio=14.2,
            repro="python -m harness check --case big --dtypes float16"),
        rec("disagree", dtype="bfloat16", implementation="torch-optim-sgd-fused", quantity="W", known_bug=KNOWN, bound_ratio=3.0),
        rec("disagree", dtype="float32", diagnosis="gradient off by a factor of 1/2", bound_ratio=2.0, case="a",
            repro="python -m harness check --case a --dtypes float32"),
        rec("disagree", dtype="float64", diagnosis="gradient off by a factor of 1/2", bound_ratio=9.0, case="b", quantity="grad_b"),
        rec("suspect", dtype="float32", message="grad_W: 1 of 4 element(s) above the expected (probabilistic) bound but within the rigorous one"),
    ]
    groups = failure_groups(recs)
    assert [(g.implementation, g.counted, len(g.records)) for g in groups] == [
        ("my-step", True, 2), ("torch-optim-sgd-fused", False, 2), ("my-step", False, 1)]
    # the example is the first failure by the policy's order: the earliest step, then loss, grad_W, grad_b, W, b
    assert groups[0].example.case == "a" and groups[0].dtypes == "float32 (1), float64 (1)" and groups[0].cases == 2
    text = explain_failures(recs)
    lines = text.splitlines()
    assert lines[0] == "Failures by cause (3 group(s) of implementation and likely cause):"
    assert lines[1] == "- my-step: 2 disagree record(s) in 2 case(s); FAILS the run"
    assert lines[2] == "    looks like: gradient off by a factor of 1/2"
    assert "    reproduce: python -m harness check --case a --dtypes float32" in lines
    fused = lines.index("- torch-optim-sgd-fused: 2 disagree record(s) in 1 case(s); a known framework bug its implementation declares (known_bug): "
                        "reported, NOT counted (--strict counts it)")
    assert lines[fused + 1] == f"    known framework bug: {KNOWN}"
    assert "suspect record(s) in 1 case(s); passes without --strict" in text
    # with --strict the known bug and the suspect record fail the run too
    assert all(g.counted for g in failure_groups(recs, strict=True))


def test_a_raised_error_keeps_the_layout():
    """helper-66: a plug-in step that raised made the cause line "the implementation raised ValueError" followed by an
    unindented "ValueError", and the message by an unindented "ValueError: nope" (its text after a newline)."""
    r = rec("error", "*", 0, message="the implementation raised ValueError\nValueError: nope")
    assert cause(r) == "the implementation raised ValueError"
    lines = explain_failures([r]).splitlines()
    assert all(line.startswith(("- ", "    ")) for line in lines[1:]), lines
    assert "      ValueError: nope" in lines


def test_nothing_failed_explains_nothing():
    assert explain_failures([rec("agree"), rec("overflow", "loss"), rec("unsupported", "*", 0)]) == ""


def test_many_groups_are_cut_with_a_pointer_to_the_files():
    recs = [rec("error", "*", 0, implementation=f"impl-{i}", message=f"boom {chr(97 + i)}") for i in range(15)]
    text = explain_failures(recs, max_groups=12)
    assert text.splitlines()[-1] == "... and 3 more group(s): every record is in the results file and the HTML report"


def test_check_explains_a_broken_step_and_ends_with_the_exit_code(capsys, tmp_path):
    from harness.cli import main
    from tests.conftest import CASES

    code = main(["check", "--cases", str(CASES / "seed.toml"), "--case", "seed", "--implementations", "mutant-missing-factor-2",
                 "--isolation", "inline", "--report", "none", "--results", str(tmp_path / "r.jsonl")])
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 1
    assert "- mutant-missing-factor-2: 64 disagree record(s) in 1 case(s); FAILS the run" in out
    at = out.index("- mutant-missing-factor-2: 64 disagree record(s) in 1 case(s); FAILS the run")
    assert out[at + 1] == "    looks like: gradient off by a factor of 1/2 (half-sum convention)"
    assert out[at + 2] == "    dtypes: float32 (32), float64 (32)"
    assert out[at + 3] == "    e.g. grad_W (step 1) of case seed (cpu, float64): disagree, error / rigorous bound 1.38e+14"
    assert re.match(r"    reproduce: (\.venv/bin/)?python -m harness check --cases ", out[at + 4]) and "--case seed" in out[at + 4]
    assert out[-1] == "exit 1: 64 disagree record(s) fail"
    assert not any(line.startswith("quick tier") for line in out)  # one hand-written case: nothing left out
