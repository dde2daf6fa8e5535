"""helper-131's adversarial round: defects found by attacking case files (an expression whose powers never finish, a
byte-order mark, a folder that holds no case file, a link that loops, a file replaced by a fifo between listing and
reading), each pinned here."""

from __future__ import annotations

import os
import stat
import threading

import pytest

from harness.cases import load_cases

GOOD = """
[[case]]
id = "good"
X = [[1.0]]
y = [[3.0]]
W = [[2.3]]
b = [1.4]
lr = 0.1
dtypes = ["float64"]
"""


def _expression_case(expression: str) -> str:
    return f"""
[[case]]
id = "bad-expr"
model = {{ expression = "{expression}", parameters = ["a"] }}
X = [[2.0]]
y = [[1.0]]
params = {{ a = 1 }}
lr = 0.1
dtypes = ["float64"]
"""


@pytest.mark.parametrize(("expression", "said"), [
    ("a*x**1000000000", "a power of 1,000,000,000, over the limit of 1,024"),
    ("a + 9**9**9", "the constant power 9 ** 9 ** 9 has more than 20,000 bits"),
    ("a*x^10^10", "a power of 10,000,000,000"),  # (^ is SymPy's **, right-associative: x**(10**10))
    ("(a*x**32)**33", "a power of 1,056"),
    ("a*x**(-2000)", "a power of 2,000"),
])
def test_an_expression_with_a_huge_power_is_refused_naming_the_key(expression, said, tmp_path):
    # x1**1000000000 and 9**9**9 took 50 s and 3.7 GB each to grade (overflow, exit 0); x1**(10**10**10) never finished
    # parsing (SymPy evaluated the constant exponent): one case stopped the whole run
    path = tmp_path / "c.toml"
    path.write_text(GOOD + _expression_case(expression))
    res = load_cases([path])
    assert [c.id for c in res.cases] == ["good"]
    (err,) = res.errors
    assert err.case_id == "bad-expr" and err.key == "model.expression" and said in str(err), str(err)


@pytest.mark.parametrize("expression", ["a*x**1024", "(a*x**32)**32", "a*x^2^10", "a*2**-1074*x", "a*x1**(1/2)", "a*x**(3 - 1)"])
def test_powers_within_the_limits_still_load(expression, tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(_expression_case(expression))
    res = load_cases([path])
    assert not res.errors and [c.id for c in res.cases] == ["bad-expr"]


def test_a_case_file_with_a_byte_order_mark_loads(tmp_path):
    # tomllib refused it as "Invalid statement (at line 1, column 1)", which names no cause; data files and results
    # files read one
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf" + GOOD.encode())
    res = load_cases([path])
    assert not res.errors and [c.id for c in res.cases] == ["good"]


def test_a_folder_with_no_case_file_is_an_error_and_the_other_cases_run(tmp_path):
    # a folder given to --cases that held no *.toml (empty, or a folder named like a case file) was silently nothing,
    # and the run passed on the other cases
    (tmp_path / "good.toml").write_text(GOOD)
    (tmp_path / "empty").mkdir()
    (tmp_path / "named.toml").mkdir()
    res = load_cases([tmp_path / "good.toml", tmp_path / "empty", tmp_path / "named.toml"])
    assert [c.id for c in res.cases] == ["good"]
    assert sorted(e.path for e in res.errors) == sorted([str(tmp_path / "empty"), str(tmp_path / "named.toml")])
    assert all("a folder with no case file (*.toml)" in str(e) for e in res.errors)


def test_a_link_that_loops_is_named_as_such(tmp_path):
    # it was "no such file or folder"
    link = tmp_path / "loop.toml"
    link.symlink_to(link)
    (tmp_path / "good.toml").write_text(GOOD)
    res = load_cases([tmp_path / "good.toml", link])
    assert [c.id for c in res.cases] == ["good"]
    (err,) = res.errors
    assert err.path == str(link) and "symbolic links" in str(err), str(err)


def test_a_case_file_replaced_by_a_fifo_after_its_stat_is_refused_without_blocking(tmp_path, monkeypatch):
    # the case file was checked with os.stat, then opened: a file replaced by a fifo in between (a case file that
    # changed between listing and reading) blocked the run in open() for ever
    fifo = tmp_path / "swapped.toml"
    os.mkfifo(fifo)
    regular = tmp_path / "good.toml"
    regular.write_text(GOOD)
    real_stat = os.stat

    def stat_before_the_swap(path, *args, **kwargs):
        return real_stat(regular) if str(path) == str(fifo) else real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", stat_before_the_swap)
    out: list = []
    t = threading.Thread(target=lambda: out.append(load_cases([regular, fifo])), daemon=True)
    t.start()
    t.join(10)
    if t.is_alive():  # release the blocked open() so that the thread ends, then fail
        monkeypatch.undo()
        with open(fifo, "wb"):
            pass
        t.join(10)
        pytest.fail("load_cases blocked in open() on a fifo")
    (res,) = out
    assert [c.id for c in res.cases] == ["good"]
    (err,) = res.errors
    assert err.path == str(fifo) and "not a regular file" in str(err), str(err)
    assert stat.S_ISFIFO(real_stat(fifo).st_mode)
