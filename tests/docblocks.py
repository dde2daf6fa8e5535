"""Fenced code blocks of the project's Markdown files, for tests/test_docs.py."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w+-]*)\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced block: its file, first line (1-based, the fence), language and text (dedented)."""

    path: str
    line: int
    lang: str
    text: str

    def commands(self) -> list[str]:
        """Shell commands: one per line, backslash continuations joined; blank lines and comment lines skipped."""
        out: list[str] = []
        pending = ""
        for raw in self.text.splitlines():
            line = raw.rstrip()
            if not pending and (not line.strip() or line.lstrip().startswith("#")):
                continue
            if line.endswith("\\"):
                pending += line[:-1] + " "
                continue
            out.append((pending + line).strip())
            pending = ""
        if pending:
            out.append(pending.strip())
        return out


def blocks(root: Path, relpath: str) -> list[Block]:
    """The fenced blocks of ``root / relpath``, indented ones (in list items) too.

    Raises:
        ValueError: for a fence that is never closed.
    """
    lines = (root / relpath).read_text(encoding="utf-8").splitlines()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, lang, start = m.group("indent"), m.group("lang"), i
        body: list[str] = []
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i])
            i += 1
        if i == len(lines):
            raise ValueError(f"{relpath}:{start + 1}: a fenced block that is never closed")
        out.append(Block(relpath, start + 1, lang, "\n".join(body) + "\n"))
        i += 1
    return out
