"""Figures that do not contradict the verdict: lead with error / bound, ULPs only where they mean something."""

from __future__ import annotations

from harness import figures
from harness.api import format_failure
from harness.records import Record
from harness.summary import summary_table


def rec(**kw: object) -> Record:
    base: dict[str, object] = {"case": "c", "implementation": "impl", "device": "cpu", "dtype": "float64",
                               "quantity": "grad_W", "step": 1, "verdict": "agree", "max_abs_error": 1e-20}
    base.update(kw)
    return Record(**base)  # type: ignore[arg-type]


def test_ulps_mean_something_for_a_normal_exact_value_within_a_relative_bound():
    r = rec(exact="2.5", rigorous_bound=1e-14, bound_ratio=0.1, bits_of_error=2.0, max_ulp_error=3.0)
    assert figures.ulp_caveat(r) is None and figures.meaningful_bits(r) == 2.0
    assert figures.ulp_text(r) == "3 ULPs, 2.00 bits of error"


def test_ulps_say_nothing_below_the_smallest_normal():
    r = rec(exact="1e-310", rigorous_bound=1e-300, bound_ratio=1e-3, bits_of_error=61.92)
    assert figures.ulp_caveat(r) == figures.BELOW_NORMAL and figures.meaningful_bits(r) is None
    assert "smallest normal" in figures.ulp_text(r)


def test_ulps_say_nothing_when_the_bound_exceeds_the_exact_value_even_for_a_truncated_decimal():
    r = rec(exact="9.1794766292467083356e-29...", rigorous_bound=3e-26, bound_ratio=8e-4, bits_of_error=50.9)
    assert figures.ulp_caveat(r) == figures.ABSOLUTE_BOUND


def test_ulps_say_nothing_when_some_element_is_off_by_half_yet_within_its_bound():
    r = rec(exact="3.0", rigorous_bound=1e-14, bound_ratio=0.5, bits_of_error=60.0)
    assert figures.ulp_caveat(r) == figures.NEAR_ZERO


def test_an_exact_result_keeps_its_zero_ulps():
    r = rec(exact="0", rigorous_bound=0.0, bound_ratio=0.0, bits_of_error=0.0, max_abs_error=0.0)
    assert figures.ulp_caveat(r) is None and figures.meaningful_bits(r) == 0.0


def test_the_assert_message_leads_with_the_verdicts_measure_and_explains_missing_ulps():
    r = rec(verdict="disagree", exact="1e-310", computed="1e-290", rigorous_bound=1e-300, bound_ratio=1e10, expected_ratio=1e11,
            bits_of_error=61.0, abs_error_at_worst=1e-290, counts={"disagree": 1}, worst_index=[0, 0], repro="python -m harness check")
    lines = format_failure(r).splitlines()
    assert lines[1].startswith("Verdict measure at the worst element: error / rigorous bound 1e+10, error / expected bound 1e+11")
    assert figures.BELOW_NORMAL in format_failure(r) and "61" not in format_failure(r).replace("1e-310", "")


def test_the_summary_leads_with_error_over_bound_and_says_why_bits_are_missing():
    table = summary_table([rec(exact="1e-310", rigorous_bound=1e-300, bound_ratio=0.003, bits_of_error=61.92)])
    header, _, row = table.splitlines()[:3]
    assert header.split()[5:8] == ["error/bound", "worst", "bits"]
    assert "0.003" in row and "n/m" in row and "61.92" not in table
    assert "smallest normal" in table
