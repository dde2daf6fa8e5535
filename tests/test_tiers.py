"""The case tiers: the quick default is a representative subset of the full sweep (harness.cases.TIERS)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.cases import DEFAULT_TIER, TIERS, load_cases, quick_pick, tier_name
from harness.generate import REGIMES

CASES = Path(__file__).resolve().parent.parent / "cases"


def test_quick_pick_takes_the_ith_combination_at_shape_i_mod_the_shapes():
    # 3 shapes x 4 combinations, shape-major as generate_table orders them
    items = [(s, c) for s in "ABC" for c in range(4)]
    assert quick_pick(items, 3) == [("A", 0), ("B", 1), ("C", 2), ("A", 3)]
    assert quick_pick(items[:4], 1) == items[:4]
    with pytest.raises(ValueError):
        quick_pick(items[:5], 3)


def test_tier_names():
    assert TIERS == ("quick", "full", "large") and DEFAULT_TIER == "quick"
    assert tier_name("default") == "full"
    with pytest.raises(ValueError, match="unknown tier 'fast'"):
        tier_name("fast")


def test_the_plugin_offers_the_same_tiers():
    from harness.pytest_plugin import PLUGIN_TIERS

    assert PLUGIN_TIERS == TIERS


def test_quick_is_a_representative_subset_of_full():
    quick, full, large = (load_cases([CASES], tier=t) for t in TIERS)
    assert not quick.errors and not full.errors and not large.errors
    q = {c.id: c for c in quick.cases}
    f = {c.id for c in full.cases}
    assert set(q) < f < {c.id for c in large.cases}
    # cases/optim.toml: 13 quick, 21 full (issue 13; amsgrad's falling second moment since the twenty-third round);
    # cases/models.toml: 18 quick, 51 full (issue 14; N = D = H1 = 3 since helper-188)
    assert len(q) == 95 and len(f) == 640
    # every hand-written case: the seed, every NIST StRD set at its three points, the semantics cases
    hand = [c.id for c in full.cases if "generated" not in c.tags]
    assert set(hand) <= set(q)
    assert {"seed", "seed-mean", "semantics-accumulation"} <= set(q)
    assert {i.split("-")[1] for i in q if i.startswith("nist-")} == {"norris", "pontius", "longley", "filip", "wampler1",
                                                                    "wampler2", "wampler5"}
    gen = [c for c in q.values() if "generated" in c.tags]
    assert {r for c in gen for r in c.tags if r in REGIMES} == set(REGIMES)
    assert {d for c in q.values() for d in c.dtypes} == {"float64", "float32", "float16", "bfloat16"}
    assert {c.reduction for c in gen} == {"sum", "mean"} and {c.steps for c in gen} == {1, 2, 3}  # 2: models.toml
    # parameters beyond a SIMD width (the fused-SGD bug needs W of 16 elements or more) and a long reduction
    assert max(c.shape[1] * c.shape[2] for c in gen) >= 64 and max(c.shape[0] for c in gen) >= 2000


def test_check_and_cases_default_to_quick_and_all_is_full(capsys):
    from harness.cli import main

    assert main(["cases", "--cases", str(CASES / "generated.toml")]) == 0
    quick = capsys.readouterr()
    assert quick.err.strip().splitlines()[-1] == "32 cases"  # grid 16, steps 10, wide 6 combinations
    assert main(["cases", "--all", "--cases", str(CASES / "generated.toml")]) == 0
    assert capsys.readouterr().err.strip().splitlines()[-1] == "518 cases"
    assert main(["cases", "--tier", "default", "--cases", str(CASES / "generated.toml")]) == 0
    assert capsys.readouterr().err.strip().splitlines()[-1] == "518 cases"


def test_check_on_the_quick_tier_says_how_to_run_the_full_sweep(capsys, tmp_path):
    from harness.cli import main

    code = main(["check", "--cases", str(CASES / "generated.toml"), "--case", "gen-wide-normal-*", "--implementations", "numpy-hand",
                 "--dtypes", "float64", "--isolation", "inline", "--report", "none", "--results", str(tmp_path / "r.jsonl")])
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    (line,) = [ln for ln in out if ln.startswith("quick tier: ")]
    assert line.startswith("quick tier: 2 case(s) (every hand-written case, one generated case per regime x reduction x steps); "
                           "the full sweep: ") and line.endswith(" --all")
    assert out[-1].startswith("exit 0: ")
