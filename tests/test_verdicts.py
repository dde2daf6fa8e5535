"""One verdict policy everywhere: every entry point agrees with :mod:`harness.verdicts` on the same records.

The entry points are the CLI's exit code, :func:`harness.assert_agrees` (and so
:func:`harness.verify`'s callers), the pytest plugin's ``harness_verify``
fixture, the selftest's false alarms, and the terminal summary. Each is fed the
same records (by replacing the run that would make them) and must take the
decision :func:`harness.verdicts.run_outcome` takes.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import pytest
import torch  # noqa: F401  # imported at collection: a pytester test's sys.modules snapshot must not be the first to import it

import harness
import harness.api  # bound before any test replaces harness.runner.verify (api imports it by name)
import harness.selftest
from harness import verdicts
from harness.cli import main
from harness.records import Record
from harness.summary import by_device_dtype, summary_table, verdict_line
from tests.conftest import CASES, ROOT

KNOWN = "pytorch/pytorch#191763: CPU fused SGD skips half-precision updates (probed on this machine)"


def rec(verdict: str, quantity: str = "grad_W", step: int = 1, **kw: object) -> Record:
    base: dict[str, object] = {"case": "c", "implementation": "torch-seed", "device": "cpu", "dtype": "float32",
                               "quantity": quantity, "step": step, "verdict": verdict}
    base.update(kw)
    return Record(**base)  # type: ignore[arg-type]


#: The same records for every entry point.
SCENARIOS: dict[str, list[Record]] = {
    "agree": [rec("agree", "loss"), rec("agree")],
    "known-bug-disagree": [rec("agree", "loss"), rec("disagree", known_bug=KNOWN, bound_ratio=3.0)],
    "plain-disagree": [rec("agree", "loss"), rec("disagree", bound_ratio=3.0)],
    "invalid-input": [rec("invalid-input", "*", 0, message="non-finite values")],
    "invalid-input-and-agree": [rec("invalid-input", "*", 0, case="bad"), rec("agree")],
    "suspect": [rec("agree", "loss"), rec("suspect", expected_ratio=2.0, bound_ratio=0.5)],
    "unknown-verdict": [rec("agree", "loss"), rec("mostly-fine")],
    "empty": [],
    "unsupported-only": [rec("unsupported", "*", 0, message="no float16 here")],
    "overflow": [rec("overflow", "loss"), rec("agree")],
}
CASES_ = [(name, strict) for name in SCENARIOS for strict in (False, True)]


def fresh(name: str) -> list[Record]:
    return [Record.from_json(r.to_json()) for r in SCENARIOS[name]]


# ---------------------------------------------------------------- the policy itself


def test_the_policy_on_the_scenarios():
    code = {k: (verdicts.run_outcome(v).code, verdicts.run_outcome(v, strict=True).code) for k, v in SCENARIOS.items()}
    assert code == {
        "agree": (0, 0),
        "known-bug-disagree": (0, 1),  # a probed framework bug fails only with --strict
        "plain-disagree": (1, 1),
        "invalid-input": (2, 2),  # bad input (and nothing graded)
        "invalid-input-and-agree": (2, 2),
        "suspect": (0, 1),
        "unknown-verdict": (1, 1),  # a verdict this version does not know is never a pass
        "empty": (1, 1),  # nothing graded is no pass
        "unsupported-only": (1, 1),
        "overflow": (0, 0),
    }


def test_first_failure_is_the_earliest_step_then_the_quantity_order():
    recs = [rec("disagree", "b", 1, bound_ratio=9.0), rec("error", "*", 2), rec("disagree", "grad_W", 1, bound_ratio=2.0),
            rec("suspect", "loss", 1)]
    first = verdicts.first_failure(recs)
    assert first is not None and (first.quantity, first.step) == ("grad_W", 1)
    strict_first = verdicts.first_failure(recs, strict=True)
    assert strict_first is not None and strict_first.quantity == "loss"
    assert verdicts.first_failure([rec("agree")]) is None


def test_known_bug_is_reported_but_not_an_alarm():
    r = rec("disagree", known_bug=KNOWN)
    assert not verdicts.is_alarm(r) and verdicts.is_alarm(rec("disagree")) and not verdicts.fails(r) and verdicts.fails(r, strict=True)
    reasons = verdicts.run_outcome([r]).reasons
    assert any("known framework bug" in line and "--strict" in line for line in reasons)


# ---------------------------------------------------------------- the CLI's exit code


@pytest.mark.parametrize(("name", "strict"), CASES_)
def test_cli_exit_code_is_the_policys(name, strict, monkeypatch, tmp_path, capsys):
    import harness.runner

    monkeypatch.setattr(harness.runner, "verify", lambda *a, **k: fresh(name))
    argv = ["check", "--cases", str(CASES / "seed.toml"), "--implementations", "torch-seed", "--devices", "cpu",
            "--results", str(tmp_path / "r.jsonl"), "--report", "none", "-q"] + (["--strict"] if strict else [])
    code = main(argv)
    outcome = verdicts.run_outcome(SCENARIOS[name], strict=strict)
    assert code == outcome.code
    # the last lines of check say why, in plain words
    out = capsys.readouterr().out.splitlines()
    assert out[-len(outcome.reasons):] == outcome.reasons
    if name == "known-bug-disagree" and not strict:
        assert "known framework bug" in out[-2] and "--strict counts them" in out[-2] and out[-1].startswith("exit 0")


# ---------------------------------------------------------------- harness.assert_agrees


@pytest.mark.parametrize(("name", "strict"), CASES_)
def test_assert_agrees_raises_exactly_when_the_policy_fails_the_run(name, strict, monkeypatch):
    monkeypatch.setattr(harness.api, "verify", lambda *a, **k: fresh(name))
    failed = verdicts.run_outcome(SCENARIOS[name], strict=strict).code != 0
    if failed:
        with pytest.raises(AssertionError) as info:
            harness.assert_agrees("torch-seed", [], strict=strict)
        first = verdicts.first_failure(SCENARIOS[name], strict=strict)
        if first is not None:
            assert f"{first.quantity} (step {first.step})" in str(info.value) or first.quantity == "*"
        else:
            assert "nothing was graded" in str(info.value)
    else:
        assert len(harness.assert_agrees("torch-seed", [], strict=strict)) == len(SCENARIOS[name])


def test_assert_agrees_with_nothing_to_grade_raises():
    with pytest.raises(AssertionError, match="nothing was graded"):
        harness.assert_agrees("numpy-hand", [])


def test_a_case_with_zero_steps_grades_nothing_and_fails():
    import numpy as np

    from harness.cases import Case

    # built directly, past the validation of make_case and case_from_arrays (which reject steps = 0)
    case = Case("zero-steps", {"X": np.ones((2, 1)), "y": np.ones((2, 1)), "W": np.ones((1, 1)), "b": np.ones(1)},
                lr=Fraction(1, 10), steps=0, dtypes=("float64",))
    with pytest.raises(AssertionError, match="nothing was graded"):
        harness.assert_agrees("numpy-hand", [case])


# ---------------------------------------------------------------- the pytest plugin


PLUGIN_TESTS = '''
import json

import pytest

import harness.api
from harness.records import Record

SCENARIOS = json.loads({scenarios!r})


@pytest.mark.parametrize("name", sorted(SCENARIOS))
@pytest.mark.parametrize("strict", [False, True])
def test_policy(name, strict, harness_verify, monkeypatch):
    monkeypatch.setattr(harness.api, "verify", lambda *a, **k: [Record.from_json(r) for r in SCENARIOS[name]])
    harness_verify("torch-seed", cases=[], devices="cpu", strict=strict)


def test_nothing_to_grade(harness_verify):
    harness_verify("numpy-hand", cases=[], devices="cpu")
'''


def test_pytest_fixture_passes_and_fails_as_the_policy(pytester, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    scenarios = json.dumps({k: [r.to_json() for r in v] for k, v in SCENARIOS.items()})
    pytester.makepyfile(test_policy=PLUGIN_TESTS.format(scenarios=scenarios))
    result = pytester.runpytest_subprocess("-p", "harness.pytest_plugin", "-p", "no:cacheprovider", "-q", "-rA")
    out = result.stdout.str()
    for name, strict in CASES_:
        failed = verdicts.run_outcome(SCENARIOS[name], strict=strict).code != 0
        assert f"{'FAILED' if failed else 'PASSED'} test_policy.py::test_policy[{strict}-{name}]" in out, (name, strict)
    assert "FAILED test_policy.py::test_nothing_to_grade" in out


# ---------------------------------------------------------------- the selftest


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_selftest_false_alarms_are_the_policys_alarms(name, monkeypatch):
    monkeypatch.setattr(harness.selftest, "verify", lambda *a, **k: fresh(name))
    res = harness.selftest.run_selftest([object()])  # type: ignore[list-item]
    alarms = [r for r in SCENARIOS[name] if verdicts.is_alarm(r)]
    assert bool(res.false_alarms) == bool(alarms)
    assert all(not r.known_bug for r in res.false_alarms)
    if not SCENARIOS[name] or verdicts.nothing_graded(SCENARIOS[name]):
        assert not res.passed  # nothing graded is no pass


# ---------------------------------------------------------------- the terminal summary


def test_summary_shows_every_failing_record_and_marks_known_bugs():
    recs = []
    for name in ("known-bug-disagree", "unknown-verdict", "suspect", "invalid-input"):
        for r in fresh(name):
            r.case = name
            recs.append(r)
    table = summary_table(recs, max_rows=4)  # 7 rows: the compact form, then only the rows worth reading
    assert "disagree (known bug)" in table and "mostly-fine" in table and "suspect" in table and "invalid-input" in table
    assert "(1 failing record(s) a known framework bug)" in verdict_line(recs)
    assert "'mostly-fine'" in verdict_line(recs)
    full = summary_table(fresh("known-bug-disagree"))
    assert "disagree (known bug)" in full


def test_cross_device_line_follows_the_policy():
    recs = [rec("agree"), rec("disagree", device="cuda:0", bound_ratio=2.0), rec("disagree", device="mps", known_bug=KNOWN)]
    line = by_device_dtype(recs).splitlines()[-1]
    assert "cuda:0 disagrees" in line and "mps" in line.split("disagrees")[-1]  # mps's known bug does not fail the run


def test_readme_documents_the_policy_table():
    readme = (Path(ROOT) / "README.md").read_text()
    assert "## Verdicts and exit codes" in readme
    for v in verdicts.VERDICTS:
        assert f"`{v}`" in readme


def test_ungraded_named_needs_records_of_the_implementation_and_none_graded():
    """An implementation named that has only unsupported records fails a run that graded something; one without
    any record did not run (pytest's -k deselected it: helper-61) and is not named; nothing graded at all is
    nothing_graded's to say."""
    from harness.verdicts import ungraded_named

    good = rec("agree")
    other = rec("unsupported", implementation="other-step", message="other-step does not support float64; more")
    lines = ungraded_named([good, other], ["torch-seed", "other-step", "absent-step"])
    assert lines == ["other-step, named in the implementations, graded nothing (no record, or every record is unsupported, "
                     "invalid-input or a whole-run overflow): nothing graded is no pass (unsupported because: other-step "
                     "does not support float64)"]
    assert ungraded_named([other], ["other-step"]) == []  # nothing graded at all
    assert ungraded_named([good], ["torch-seed"]) == []
