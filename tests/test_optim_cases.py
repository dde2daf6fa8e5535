"""The ``optimizer`` table of ``[[case]]`` and ``[[generate]]`` (issue 13): parsed with torch.optim's
argument names, validated in harness.cases with file, case and key named; absent = plain SGD."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest

from harness.cases import load_cases, make_case
from harness.errors import CaseFileError
from harness.implementations import resolve
from harness.runner import check_case, verify

CASE = """
[[case]]
id = "{id}"
X = [[1.0, 2.0]]
y = [[1.0]]
W = [[0.5], [0.25]]
b = [0.0]
lr = "0.1"
{extra}
"""


def _load(tmp_path: Path, extra: str, id: str = "c") -> tuple[list, list]:
    path = tmp_path / "c.toml"
    path.write_text(CASE.format(id=id, extra=extra))
    res = load_cases([path])
    return res.cases, res.errors


def test_no_optimizer_is_plain_sgd(tmp_path: Path) -> None:
    cases, errors = _load(tmp_path, "")
    assert not errors and cases[0].optimizer is None


def test_sgd_table_exact_as_written_and_defaults(tmp_path: Path) -> None:
    cases, errors = _load(tmp_path, 'optimizer = { name = "sgd", momentum = 0.9, nesterov = true, weight_decay = "0.01" }')
    assert not errors
    opt = cases[0].optimizer
    assert opt.name == "sgd"
    assert opt["momentum"] == Fraction(9, 10) and opt["weight_decay"] == Fraction(1, 100)
    assert opt["dampening"] == 0 and opt["maximize"] is False and opt["nesterov"] is True
    assert opt.torch_kwargs() == {"momentum": 0.9, "dampening": 0.0, "nesterov": True, "weight_decay": 0.01, "maximize": False}
    assert opt.state_keys() == ("momentum_buffer",)


def test_adam_and_adamw_defaults_are_torch_optims(tmp_path: Path) -> None:
    cases, errors = _load(tmp_path, 'optimizer = { name = "adamw", amsgrad = true }')
    assert not errors
    kw = cases[0].optimizer.torch_kwargs()
    # torch.optim.AdamW's defaults: betas (0.9, 0.999), eps 1e-8, weight_decay 0.01
    assert kw == {"betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.01, "amsgrad": True, "maximize": False}
    assert cases[0].optimizer.state_keys() == ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    cases, errors = _load(tmp_path, 'optimizer = { name = "adam" }')
    assert cases[0].optimizer["weight_decay"] == 0 and cases[0].optimizer.state_keys() == ("exp_avg", "exp_avg_sq")


@pytest.mark.parametrize(("extra", "key", "words"), [
    ('optimizer = "adam"', "optimizer", "inline table"),
    ('optimizer = { name = "rmsprop" }', "optimizer.name", "'sgd'"),
    ('optimizer = { momentum = 0.9 }', "optimizer.name", "expected one of"),
    ('optimizer = { name = "sgd", betas = [0.9, 0.99] }', "optimizer.betas", "unknown argument"),
    ('optimizer = { name = "adam", fused = true }', "optimizer.fused", "torch-optim-adam-fused"),
    ('optimizer = { name = "sgd", momentum = -0.5 }', "optimizer.momentum", ">= 0"),
    ('optimizer = { name = "sgd", momentum = true }', "optimizer.momentum", "expected a number"),
    ('optimizer = { name = "sgd", nesterov = 1 }', "optimizer.nesterov", "true or false"),
    ('optimizer = { name = "sgd", nesterov = true }', "optimizer.nesterov", "momentum > 0"),
    ('optimizer = { name = "sgd", momentum = 0.9, dampening = 0.1, nesterov = true }', "optimizer.nesterov", "dampening = 0"),
    ('optimizer = { name = "adam", betas = [0.9] }', "optimizer.betas", "two numbers"),
    ('optimizer = { name = "adam", betas = [0.9, 1.0] }', "optimizer.betas", "[0, 1)"),
    ('optimizer = { name = "adam", eps = "nan" }', "optimizer.eps", "finite"),
])
def test_bad_optimizer_tables_name_file_case_and_key(tmp_path: Path, extra: str, key: str, words: str) -> None:
    cases, errors = _load(tmp_path, extra, id="bad-opt")
    assert not cases and len(errors) == 1
    err = errors[0]
    assert isinstance(err, CaseFileError)
    assert (err.case_id, err.key) == ("bad-opt", key)
    assert err.path.endswith("c.toml") and words in str(err)


def test_one_bad_optimizer_never_stops_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "two.toml"
    path.write_text(CASE.format(id="good", extra='optimizer = { name = "adam" }')
                    + CASE.format(id="bad", extra='optimizer = { name = "adam", eps = -1 }'))
    res = load_cases([path])
    assert [c.id for c in res.cases] == ["good"] and [e.case_id for e in res.errors] == ["bad"]


def test_generate_table_takes_the_optimizer(tmp_path: Path) -> None:
    path = tmp_path / "g.toml"
    path.write_text('[[generate]]\nname = "g"\nseed = 3\nshapes = [[2, 2, 1]]\nreductions = ["sum"]\n'
                    'optimizer = { name = "sgd", momentum = 0.5, dampening = 0.25 }\n'
                    '[[generate]]\nname = "h"\nseed = 3\nshapes = [[2, 2, 1]]\noptimizer = { name = "adam", amsgrad = "yes" }\n')
    res = load_cases([path])
    assert [c.optimizer["dampening"] for c in res.cases] == [Fraction(1, 4)]
    assert len(res.errors) == 1 and res.errors[0].key == "optimizer.amsgrad" and "'h'" in str(res.errors[0].case_id)


def test_make_case_validates_the_same_way() -> None:
    with pytest.raises(CaseFileError, match="optimizer.eps"):
        make_case("m", [[1.0]], [[1.0]], [[1.0]], [0.0], lr="0.1", optimizer={"name": "adam", "eps": -1})


def test_plain_implementations_do_not_run_optimizer_cases() -> None:
    case = make_case("m", [[1.0]], [[1.0]], [[1.0]], [0.0], lr="0.1", optimizer={"name": "adam"})
    seed = resolve(["torch-seed"])[0]
    recs = check_case(case, seed, "cpu", "float32")
    assert [(r.verdict, r.quantity) for r in recs] == [("unsupported", "*")]
    assert "implements plain only" in recs[0].message and "adam(" in recs[0].message
    assert verify([case], ["torch-seed"], dtypes=["float32"]) == []
