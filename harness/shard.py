"""``--shard K/N``: split the cases of a run into N disjoint parts, deterministically by case id.

A case belongs to shard ``zlib.crc32(case_id) % N + 1``: the same on every
machine, Python version and run (no ``PYTHONHASHSEED``), independent of the
order or the number of the other cases, so N CI jobs given ``--shard 1/N`` ...
``--shard N/N`` grade every case exactly once; ``report`` merges their results
files into one report.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import TypeVar

from .errors import UsageError

T = TypeVar("T")


def parse_shard(text: str | None, option: str = "--shard") -> tuple[int, int] | None:
    """``"K/N"`` -> ``(K, N)`` with ``1 <= K <= N``; None for None or ``""``.

    Raises:
        UsageError: naming the option and the bad value."""
    if text is None or text == "":
        return None
    k_text, sep, n_text = text.partition("/")
    try:
        k, n = int(k_text), int(n_text)
    except ValueError:
        k = n = 0
    if not sep or n < 1 or not 1 <= k <= n:
        raise UsageError(f"{option} {text!r}: expected K/N with 1 <= K <= N, e.g. {option} 1/4")
    return k, n


def shard_index(case_id: str, n: int) -> int:
    """The shard (1..n) of a case id."""
    return zlib.crc32(case_id.encode("utf-8")) % n + 1


def select_shard(cases: Sequence[T], shard: tuple[int, int] | None) -> list[T]:
    """The cases of shard ``(K, N)`` (all of them for None), in their order."""
    if shard is None:
        return list(cases)
    k, n = shard
    return [c for c in cases if shard_index(c.id, n) == k]  # type: ignore[attr-defined]
