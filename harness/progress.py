"""Progress of long commands (``check``, ``selftest``) on stderr.

On a terminal (stderr is a tty) a tqdm bar; elsewhere (CI logs, pipes) plain
lines, at most one every :data:`PLAIN_EVERY` seconds or one tenth of the time
elapsed, whichever is longer (a 15-minute run logs about 40 lines, not 180),
and one at the end::

    [37/128] 29% elapsed 12.4s ETA 30.5s case-id impl cpu float32
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from .errors import terminal_text

#: Seconds between two plain progress lines (not a terminal), at least.
PLAIN_EVERY = 5.0
#: ... and at least this share of the time elapsed, so that a long run's log stays short.
PLAIN_SHARE = 0.1


def _fmt(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class Progress:
    """``progress(done, total, label)``; :meth:`close` when done (also on interruption)."""

    def __init__(self, desc: str = "", stream: TextIO | None = None, tty: bool | None = None, every: float = PLAIN_EVERY) -> None:
        self.stream = stream or sys.stderr
        self.desc = desc
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)()) if tty is None else tty
        self.every = every
        self.start = time.monotonic()
        self._last = float("-inf")
        self._bar: Any = None
        self._done = 0
        self._first: tuple[float, int] | None = None  # (time, done) of the first progress with a task done

    def __call__(self, done: int, total: int, label: str = "") -> None:
        self._done = done
        if self._first is None and done > 0:
            self._first = (time.monotonic(), done)
        if self.tty:
            if self._bar is None:
                from tqdm import tqdm

                # (the bar's own control sequences go to the terminal itself, past harness.cli.TerminalStream)
                self._bar = tqdm(total=total, desc=self.desc or None, file=getattr(self.stream, "wrapped", self.stream),
                                 unit="task", dynamic_ncols=True, leave=True)
            self._bar.total = total
            self._bar.n = done
            self._bar.set_postfix_str(terminal_text(label[-60:]), refresh=False)
            self._bar.refresh()
            return
        now = time.monotonic()
        if done >= total or now - self._last >= max(self.every, PLAIN_SHARE * (now - self.start)):
            self._last = now
            print(self.line(done, total, label, now), file=self.stream, flush=True)

    def line(self, done: int, total: int, label: str, now: float | None = None) -> str:
        """The plain progress line."""
        at = now if now is not None else time.monotonic()
        elapsed = at - self.start
        pct = 100.0 * done / total if total else 100.0
        # no ETA from the first 2% of the tasks: the first ones carry the start-up (workers, imports) and would say hours;
        # once a first task is done, the rate is the tasks' since then (a 3 s run's first line said 1m09s: helper-77)
        if done == 0 or (done < total and done * 50 < total):
            eta = "ETA ?"
        elif self._first is not None and done < total:
            t1, d1 = self._first
            eta = "ETA ?" if done <= d1 else f"ETA {_fmt((at - t1) / (done - d1) * (total - done))}"
        else:
            eta = f"ETA {_fmt(elapsed / done * (total - done))}"
        prefix = f"{self.desc}: " if self.desc else ""
        return f"{prefix}[{done}/{total}] {pct:3.0f}% elapsed {_fmt(elapsed)} {eta} {label}".rstrip()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def make_progress(quiet: bool, desc: str = "") -> Progress | None:
    """A :class:`Progress`, or None with ``quiet``."""
    return None if quiet else Progress(desc)
