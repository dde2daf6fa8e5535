"""NIST StRD at the certified parameters: heavy cancellation, honest verdicts."""

from __future__ import annotations

from fractions import Fraction

import pytest

from harness.cases import load_cases
from harness.runner import verify
from tests.conftest import CASES

NIST = load_cases([CASES / "nist.toml"])


def test_nist_cases_load():
    assert not NIST.errors
    assert len(NIST.cases) == 21
    filip = next(c for c in NIST.cases if c.id == "nist-filip-certified")
    assert filip.shape == (82, 10, 1)
    # x^10 computed exactly from the decimal x, then b = B0, W = B1..B10
    x0 = Fraction("-6.860120914")
    assert filip.written["X"][0, 9] == x0**10
    assert filip.written["b"][0] == Fraction("-1467.48961422980")


@pytest.mark.parametrize("case", [c for c in NIST.cases if c.id.endswith("certified")], ids=lambda c: c.id)
def test_certified_parameters_never_disagree(case):
    recs = verify([case], ["torch-seed", "numpy-hand"], dtypes=["float32", "float64"])
    assert recs
    assert {r.verdict for r in recs} <= {"agree", "suspect"}
    # the exact gradient at the certified parameters is tiny against its terms: the
    # float results carry many bits of error, and that is reported, not hidden
    g64 = [r for r in recs if r.quantity == "grad_W" and r.dtype == "float64"]
    assert all(r.bits_of_error is not None for r in g64)


# ---------------------------------------------------------------- independent evidence for the oracle
# NIST StRD's certified residual sum of squares of each linear least-squares set
# (the "Residual" line of its certified analysis of variance table, computed by
# NIST in 500-digit arithmetic; https://www.itl.nist.gov/div898/strd/lls/lls.shtml).
# The exact loss with reduction "sum" at the certified parameters is that residual
# sum of squares: an expected value the oracle did not compute itself.
CERTIFIED_RSS = {
    "norris": "26.6173985294224",
    "pontius": "0.155761768796992E-05",
    "longley": "836424.055505915",
    "filip": "0.795851382172941E-03",
    "wampler1": "0",  # an exact fit: y is the certified polynomial
    "wampler2": "0",
    "wampler5": "0.835542680000000E+16",
}


def _half_unit_in_last_digit(certified: str) -> Fraction:
    """Half a unit in the last digit NIST printed: how far the certified value may be from the truth."""
    from decimal import Decimal

    exponent = Decimal(certified).as_tuple().exponent
    assert isinstance(exponent, int)
    return Fraction(1, 2) * Fraction(10) ** exponent


def _half_unit_in_15th_digit(value: str) -> Fraction:
    from decimal import Decimal

    return Fraction(1, 2) * Fraction(10) ** (Decimal(value).adjusted() - 14)


def test_every_nist_set_has_a_certified_case():
    certified = {c.id.removeprefix("nist-").removesuffix("-certified") for c in NIST.cases if c.id.endswith("certified")}
    assert certified == set(CERTIFIED_RSS)


def _parameter_rounding_bound(case_id: str, X: object) -> Fraction:
    """How much rounding the certified parameters to the digits NIST printed can raise the loss.

    At the exact least-squares parameters p* the residual is orthogonal to every
    column (the bias included), so the loss at the printed parameters p is
    ``RSS* + ||[X 1] (p - p*)||^2`` exactly, and each ``|p_i - p*_i|`` is at most
    half a unit in p_i's 15th significant digit ``h_i`` (NIST prints 15, e.g.
    ``1.00000000000000``; the case file may write that ``"1"``): the rise is at most
    ``sum over rows of (sum_i |x_ri| h_i)^2``. Negligible for most sets; for
    Filip (condition number about 1e15) it is about 1e-12 relative.
    """
    import tomllib

    spec = next(t for t in tomllib.loads((CASES / "nist.toml").read_text())["case"] if t["id"] == case_id)
    h_w = [_half_unit_in_15th_digit(str(row[0])) for row in spec["W"]]
    h_b = _half_unit_in_15th_digit(str(spec["b"][0]))
    return sum(((h_b + sum((abs(Fraction(x)) * h for x, h in zip(row, h_w, strict=True)), Fraction(0))) ** 2 for row in X), Fraction(0))


@pytest.mark.parametrize("name", sorted(CERTIFIED_RSS))
def test_exact_loss_at_the_certified_parameters_is_nists_certified_rss(name):
    from harness.oracle import exact_inputs_from_written, exact_step

    case = next(c for c in NIST.cases if c.id == f"nist-{name}-certified")
    assert case.shape[2] == 1  # K = 1: one response; polynomial sets use their powers of x as columns
    exact = exact_step(exact_inputs_from_written(case.written_inputs()), case.lr, "sum").values["loss"].fraction_at(())
    certified = CERTIFIED_RSS[name]
    expected = Fraction(certified)
    if expected == 0:
        assert exact == 0, f"{name}: an exact fit, yet the exact loss is {float(exact)!r}"
        return
    # NIST prints 15 significant digits: the certified value is within half a unit of its last
    # digit of the true minimum RSS* (relative about 5e-15); the loss at the printed parameters is
    # RSS* plus at most the parameter-rounding bound (second order: the loss is stationary at p*)
    h = _half_unit_in_last_digit(certified)
    rise = _parameter_rounding_bound(case.id, case.written_inputs()["X"])
    assert -h <= exact - expected <= h + rise, (
        f"{name}: exact loss {float(exact)!r} vs certified {certified}: off by {float(exact - expected):.3g}, outside "
        f"[-{float(h):.3g}, {float(h + rise):.3g}] (half a unit in NIST's last digit, relative {float(h / expected):.2g}, "
        f"plus the rise from rounding the parameters, {float(rise):.3g})"
    )
    # the window is the certified precision for every set but the ill-conditioned Filip
    assert name == "filip" or rise <= h
