"""helper-190: what a user sees (the terminal output of ``check`` and ``report``, the pytest plugin's summary and
failure messages, the HTML report) attacked with hostile strings and real runs.

**Found (fixed)**: a plug-in's exception text reached the terminal raw. ``check`` printed a raising step's message
(``RuntimeError: ...``, the traceback's last line, under "Failures by cause") with its control characters, so a step
raising ``RuntimeError("\\x1b[2K\\r\\x1b[32mALL GOOD\\x1b[0m")`` erased the line it was printed on and wrote a green
"ALL GOOD" there; the right-to-left override U+202E and NUL passed too; so did the pytest plugin's terminal summary
and :func:`harness.api.raise_on_failure`'s message (pytest prints it). Case ids and implementation names were already
refused with such characters (helper-176, :func:`harness.implementations.implementation`); ``sys.exit``'s argument
was already shown by ``repr``. Now every command's standard output and error is written through one sanitiser
(:func:`harness.errors.terminal_text`, by :class:`harness.errors.TerminalStream` while :func:`harness.cli.main` runs),
and the pytest plugin's lines and :func:`harness.api.raise_on_failure` use it too: such a character is printed as its
Python backslash escape (``\\x1b``, ``\\r``, ``\\u202e``, ``\\x00``), nothing lost. The HTML report escaped them as markup
but kept NUL and ESC (parse errors of HTML) and U+202E (it reversed the text after it in its block); the page now
writes the controls and the bidirectional overrides as the same escapes (:func:`harness.report._visible_controls`).

**Found (fixed)**: a run's drill-down lists at most 25 records that do not agree
(:data:`harness.report.model.MAX_DETAIL_PER_RUN`), and its note said "every record that does not agree is [listed]"
while 7 of mutant-sign-flip's 32 disagree records on the seed case were not. The note now says how many are left out.

**Found (fixed)**: the page gave counts by verdict and no verdict of its own (known framework bugs not counted, a run
cut off halfway, a named implementation that graded nothing looked like any other page). Its headline is now
``report --exit-status``'s decision on the same files, with and without ``--strict``, its reasons and the
implementations with failing records (:meth:`harness.report.model.ReportModel.exit_status`, the one rule both use).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import TerminalStream, terminal_text
from tests.conftest import CASES, main_in_process
from tests.edited_results import forget_plugins

#: What a hostile step raises: erase the line, back to its start, "ALL GOOD" in green, an RTL override and NUL.
EVIL = "\x1b[2K\r\x1b[32mALL GOOD\x1b[0m \u202e\x00"
#: The same as :func:`terminal_text` must print it, written out by hand.
EVIL_SHOWN = "\\x1b[2K\\r\\x1b[32mALL GOOD\\x1b[0m \\u202e\\x00"

PLUGIN = f'''
import harness

@harness.implementation("h190-evil-raise", framework="numpy")
def evil(X, y, W, b, *, lr, reduction, steps):
    raise RuntimeError({EVIL!r})
'''


def test_terminal_text_escapes_controls_and_keeps_text() -> None:
    assert terminal_text(EVIL) == EVIL_SHOWN
    # newline and tab are layout, kept; a lone surrogate, a line separator and private use are escaped
    assert terminal_text("a\n\tb\udc80c\u2028d\ue000") == "a\n\tb\\udc80c\\u2028d\\ue000"
    # printable text is unchanged: accents, a no-break space, the joiners of an emoji sequence, a backslash, markup
    text = "caf\u00e9\u00a0\U0001f469\u200d\U0001f4bb </script>{{ }}${} \\x1b"
    assert terminal_text(text) == text


def test_terminal_stream_writes_through_the_sanitiser() -> None:
    class Sink:
        def __init__(self) -> None:
            self.parts: list[str] = []

        def write(self, text: str) -> int:
            self.parts.append(text)
            return len(text)

        def isatty(self) -> bool:
            return True

    sink = Sink()
    stream = TerminalStream(sink)
    print("FAIL", EVIL, file=stream)  # type: ignore[arg-type]
    assert "".join(sink.parts) == f"FAIL {EVIL_SHOWN}\n"
    assert stream.isatty() is True  # (the progress bar asks the wrapped stream)


def test_check_prints_no_escape_sequence_of_a_steps_exception(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plugin = tmp_path / "h190_evil.py"
    plugin.write_text(PLUGIN)
    try:
        code, out, err = main_in_process(
            capsys, "check", "--cases", str(CASES / "seed.toml"), "--case", "seed", "--dtypes", "float64",
            "--implementations", "numpy-hand,h190-evil-raise", "--plugin", str(plugin), "--isolation", "inline",
            "--report", "none", "--results", str(tmp_path / "r.jsonl"))
    finally:
        forget_plugins("h190-")
    assert code == 1
    for text in (out, err):
        assert not any(c in text for c in "\x1b\r\x00\u202e")
    # the message is all there, escaped, under the failure group of the raising step
    assert f"RuntimeError: {EVIL_SHOWN}" in out
    assert "exit 1: 1 error record(s) fail" in out
    # the failure message pytest prints (harness_verify, assert_agrees and raise_on_failure raise it)
    from harness.api import raise_on_failure
    from harness.records import read_jsonl

    records = [r for r in read_jsonl(tmp_path / "r.jsonl").records if r.implementation == "h190-evil-raise"]
    with pytest.raises(AssertionError) as raised:
        raise_on_failure(records, "h190-evil-raise")
    assert not any(c in str(raised.value) for c in "\x1b\r\x00\u202e")
    assert f"RuntimeError: {EVIL_SHOWN}" in str(raised.value)
    # the HTML report of the same records: escaped as markup, and no control character in the page (NUL and ESC are
    # parse errors of HTML; U+202E reversed the text after it)
    from harness.report import render_report

    page = render_report([tmp_path / "r.jsonl"], tmp_path / "r.html").read_text(encoding="utf-8")
    assert not any(c in page for c in "\x1b\x00\u202e")
    assert "\\x1b[32mALL GOOD\\x1b[0m \\u202e\\x00" in page


def test_a_drill_down_that_leaves_out_failing_records_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The seed case (8 steps) graded for mutant-sign-flip: 40 records, the loss agrees at each step and the four other
    quantities disagree (32 records). The drill-down lists at most 25 records that do not agree; its note said "every
    record that does not agree is [listed]" while 32 - 25 = 7 were not."""
    from html.parser import HTMLParser

    from harness.report.model import MAX_DETAIL_PER_RUN

    assert MAX_DETAIL_PER_RUN == 25
    page = tmp_path / "r.html"
    code, out, _ = main_in_process(
        capsys, "check", "--cases", str(CASES / "seed.toml"), "--case", "seed", "--dtypes", "float64", "--implementations",
        "mutant-sign-flip", "--isolation", "inline", "-q", "--results", str(tmp_path / "r.jsonl"), "--report", str(page))
    assert code == 1 and "40 records: 8 agree, 32 disagree" in out

    class Badges(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.verdicts: list[str] = []

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            cls = dict(attrs).get("class") or ""
            if tag == "span" and cls.startswith("v v-"):
                self.verdicts.append(cls[4:])

    text = page.read_text(encoding="utf-8")
    runs = text[text.index('<table id="runs">'):]
    badges = Badges()
    badges.feed(runs[:runs.index("</table>\n</section>")])
    assert badges.verdicts.count("disagree") == 1 + 25  # the run's summary badge, then the 25 listed records
    assert "14 more records of this run not listed, 7 of them do not agree" in text
    assert "every record that does not agree is, with the worst of each quantity" not in text
    assert _headline(page) == ("These runs FAIL ( report --exit-status on these files exits 1); failing records of: "
                               "mutant-sign-flip exit 1: 32 disagree record(s) fail")


def _headline(page: Path) -> str:
    import html
    import re

    text = page.read_text(encoding="utf-8")
    head = text[text.index('id="outcome"'):]
    head = head[head.index(">") + 1:]
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", head[:head.index("</div>")])).split())


def test_the_page_says_whether_the_runs_pass_as_report_exit_status_does(tmp_path: Path) -> None:
    """The page had counts by verdict and no verdict of its own: 32 disagree records that fail a run and 32 that a
    known framework bug explains (not counted) looked alike, and so did a passing run and one cut off halfway (no
    ``run-end`` line: ``report --exit-status`` exits 2). Its headline is now ``report --exit-status``'s decision."""
    from harness.report import render_report
    from tests.edited_results import seed_run_lines

    lines = seed_run_lines(tmp_path)  # numpy-hand on the seed case: 40 agree records, check exits 0
    good = tmp_path / "good.jsonl"
    good.write_text("".join(lines))
    cut = tmp_path / "cut.jsonl"
    assert '"run-end"' in lines[-1]
    cut.write_text("".join(lines[:-1]))  # the run-end line lost: a run killed before it ended
    assert _headline(render_report([good], tmp_path / "good.html")).startswith(
        "These runs pass ( report --exit-status on these files exits 0)")
    head = _headline(render_report([cut], tmp_path / "cut.html"))
    assert head.startswith("These runs FAIL ( report --exit-status on these files exits 2)")
    assert "its run did not complete" in head
