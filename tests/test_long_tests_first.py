"""The suite's own scheduling aid (tests/conftest.py): the longest tests start at the heads of pytest-xdist's first runs."""

from __future__ import annotations

from dataclasses import dataclass

from tests.conftest import LONG_TESTS, long_tests_first


@dataclass
class _Item:
    nodeid: str


def _worksteal_heads(n: int, workers: int) -> list[int]:
    """The first index of each contiguous run xdist's worksteal scheduler hands out (its ``check_schedule``)."""
    heads, left, start = [], n, 0
    for w in range(workers):
        size = left // (workers - w)
        heads.append(start)
        start += size
        left -= size
    return heads


def test_long_tests_lead_each_run_and_nothing_is_lost_or_reordered():
    plain = [_Item(f"tests/test_x.py::test_{i}") for i in range(101)]
    long = [_Item(nodeid) for nodeid in reversed(LONG_TESTS[:5])]  # collected shortest first, late
    items = plain[:40] + long[:2] + plain[40:] + long[2:]
    for workers in (2, 3):
        out = long_tests_first(items, workers)
        assert sorted(it.nodeid for it in out) == sorted(it.nodeid for it in items)
        heads = _worksteal_heads(len(out), workers)
        # the longest at the head of the first run, the second longest at the head of the second
        assert out[heads[0]].nodeid == LONG_TESTS[0] and out[heads[1]].nodeid == LONG_TESTS[1]
        assert [it.nodeid for it in out if it.nodeid not in LONG_TESTS] == [it.nodeid for it in plain]


def test_a_collection_without_long_tests_is_unchanged():
    items = [_Item(f"tests/test_x.py::test_{i}") for i in range(7)]
    assert long_tests_first(items, 2) == items
