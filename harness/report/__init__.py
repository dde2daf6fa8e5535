"""The HTML agreement report: one self-contained page rendered from results files.

``render_report(["cpu.jsonl", "gpu.jsonl"], "reports/agreement.html")`` merges
any number of JSON-lines results files (one per machine or shard) into one
HTML file with no external resources (inline CSS, a small inline script,
figures as inline SVG, formulas as presentation MathML). Rows are rendered on
the server (here), so the page needs no script to show its content; the
script only filters, sorts, pages and opens drill-downs.

Everything taken from the data (case ids, messages, environment values) is
escaped by Jinja2's autoescaping. The file is written atomically: a temporary
file in the same folder, renamed over the target once complete.
"""

from __future__ import annotations

import functools
import json
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import jinja2
from markupsafe import Markup

from ..records import Record, ResultsFile
from ..verdicts import VERDICTS, RunOutcome
from .model import MAX_DETAIL_PER_RUN, ReportModel, Run, build_model, environment_table, fmt_num, no_gc

__all__ = ["ExtraSection", "ReportModel", "build_model", "render_html", "render_report"]

#: Cell and badge colour per verdict (background, text).
VERDICT_COLOURS = {
    "agree": ("#d7f0dc", "#0b5b1e"),
    "unsupported": ("#e4e4e4", "#444444"),
    "overflow": ("#e3dcf5", "#43307a"),
    "suspect": ("#fdeab8", "#6b4b00"),
    "invalid-input": ("#f7d9c4", "#7a3410"),
    "disagree": ("#f8cfcc", "#8c1d18"),
    "error": ("#b3261e", "#ffffff"),
}


#: Warnings listed at the top of the page (all are counted).
MAX_WARNINGS_SHOWN = 200
#: Malformed lines listed in their section (all are counted).
MAX_MALFORMED_SHOWN = 500


@dataclass
class ExtraSection:
    """An extra section appended to the report (e.g. benchmark figures).

    ``html`` is trusted markup (an inline SVG from matplotlib, a table built
    with escaping): it is inserted as is. ``title`` is escaped.
    """

    title: str
    html: str
    id: str = ""


@functools.cache
def _env() -> jinja2.Environment:
    """The report's template environment, made once per process (its templates are compiled once)."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("harness.report", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["num"] = fmt_num
    env.filters["bits"] = fmt_bits
    env.globals["VERDICTS"] = VERDICTS
    env.globals["COLOURS"] = VERDICT_COLOURS
    env.globals["MAX_WARNINGS_SHOWN"] = MAX_WARNINGS_SHOWN
    env.globals["MAX_MALFORMED_SHOWN"] = MAX_MALFORMED_SHOWN
    return env


def fmt_bits(x: float | None) -> str:
    """Bits of error with two decimals (``"-"`` for none)."""
    return "-" if x is None else f"{x:.2f}"


def _esc(x: object) -> str:
    """HTML-escape like Jinja's autoescape (markupsafe): ``& < > ' "``, without building Markup objects."""
    s = x if type(x) is str else str(x)
    if "&" in s:
        s = s.replace("&", "&amp;")
    if "<" in s:
        s = s.replace("<", "&lt;")
    if ">" in s:
        s = s.replace(">", "&gt;")
    if "'" in s:
        s = s.replace("'", "&#39;")
    if '"' in s:
        s = s.replace('"', "&#34;")
    return s


_OMITTED_NOTE = " of this run not listed (every record that does not agree is, with the worst of each quantity)."


def runs_html(runs: Sequence[Run], shown: int = 100) -> Markup:
    """The results table's body: one ``<tbody>`` per run (a summary row, then its hidden drill-down).

    The largest part of the page (one block per run, tens of thousands in a large
    report), so it is built here with plain string formatting rather than by the
    template engine; every value from the data is escaped as the template would
    (:func:`_esc`). Only the first ``shown`` runs are visible without the script. A run whose drill-down leaves out
    records that do not agree says how many (:data:`harness.report.model.MAX_DETAIL_PER_RUN`).
    """
    out: list[str] = []
    add = out.append
    num = fmt_num
    for i, u in enumerate(runs):
        wb = "-1" if u.worst_bits is None else f"{u.worst_bits:.4f}"
        br = "-1" if u.max_bound_ratio is None else f"{u.max_bound_ratio:.4g}"
        case, impl, dev, dt, v = _esc(u.case), _esc(u.implementation), _esc(u.device), _esc(u.dtype), _esc(u.verdict)
        looks = f'<small class="diag"> looks like: {_esc(u.diagnoses[0].rsplit(" (", 1)[0])}</small>' if u.diagnoses else ""
        add(f'<tbody data-v="{_esc(" ".join(u.verdicts))}" data-s="{u.severity}" data-c="{case}" data-i="{impl}" data-d="{dev}" '
            f'data-t="{dt}" data-b="{wb}" data-r="{br}"{" hidden" if i >= shown else ""}>\n'
            f'<tr class="sum"><td></td><td>{case}</td><td>{impl}</td><td>{dev}</td><td>{dt}</td><td><span class="v v-{v}">{v}</span>{looks}</td>'
            f"<td>{fmt_bits(u.worst_bits)}</td><td>{_esc(num(u.max_ulp))}</td><td>{_esc(num(u.max_bound_ratio))}</td><td>{u.n}</td>"
            f"<td>{', '.join(f'{n} {_esc(k)}' for k, n in u.counts.items())}</td></tr>\n"
            '<tr class="det" hidden><td colspan="11">\n')
        for d in u.diagnoses:
            add(f'<div class="warn">looks like: {_esc(d)}</div>')
        for msg in u.messages:
            add(f'<div class="warn mono">{_esc(msg)}</div>')
        if u.details:
            add('<table class="recs">\n')
            for r in u.details:
                rv = _esc(r.verdict)
                add(f"<tr><td>{_esc(r.quantity)}</td><td>{_esc(r.step)}</td><td><span class=\"v v-{rv}\">{rv}</span></td>"
                    f"<td>{fmt_bits(r.bits_of_error)}</td><td>{_esc(num(r.max_ulp_error))}</td>"
                    f"<td>{'-' if r.worst_index is None else _esc(r.worst_index)}</td><td>{_esc(r.exact or '-')}{'' if r.exact_radius is None else ' &plusmn; ' + _esc(num(r.exact_radius))}</td>"
                    f"<td>{_esc(r.computed or '-')}</td><td>{_esc(num(r.max_abs_error))}</td><td>{_esc(num(r.rigorous_bound))}</td>"
                    f"<td>{_esc(num(r.expected_bound))}</td><td>{_esc(num(r.bound_ratio))}</td><td>{_esc(r.exact_written or '-')}</td>"
                    f"<td>{_esc(num(r.ulp_error_written))}</td><td>{_esc(r.oracle_method or '-')}</td></tr>\n")
            add("</table>\n")
        # (the note said every record that does not agree was listed while the cap of MAX_DETAIL_PER_RUN, or the page's
        # MAX_DETAIL_TOTAL, left failing records out: 7 of a run's 32 disagree records, helper-190)
        left = sum(n for v, n in u.counts.items() if v != "agree") - sum(r.verdict != "agree" for r in u.details)
        omitted = "" if not u.omitted else (
            f" {u.omitted} more record{'s' if u.omitted != 1 else ''} of this run not listed, {left} of them {'do' if left != 1 else 'does'} not agree "
            f"(the drill-down lists at most {MAX_DETAIL_PER_RUN} that do not agree, the worst first; the results file holds every record)."
            if left else f" {u.omitted} more record{'s' if u.omitted != 1 else ''}{_OMITTED_NOTE}")
        add(f"<small>Worst bits of error per quantity: {_esc(u.quantity_bits)}.{omitted}</small>\n")
        if u.repro:
            add(f"<div>reproduce: <code>{_esc(u.repro)}</code></div>")
        add("</td></tr>\n</tbody>\n")
    return Markup("".join(out))


def _mathml_cache_file() -> Path | None:
    """Where the derivation's MathML is kept between reports (None if no key can be made).

    Keyed by the source of :mod:`harness.symbolic` and SymPy's version, so any change to
    either derives afresh. ``$HARNESS_CACHE_DIR``, else ``$XDG_CACHE_HOME/autograd-harness``,
    else ``~/.cache/autograd-harness``.
    """
    import hashlib
    from importlib import metadata

    try:
        src = (Path(__file__).resolve().parent.parent / "symbolic.py").read_bytes()
        key = hashlib.sha256(src + b"\0sympy " + metadata.version("sympy").encode()).hexdigest()[:20]
    except (OSError, metadata.PackageNotFoundError):
        return None
    root = os.environ.get("HARNESS_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "autograd-harness")
    return Path(root) / f"derivation-mathml-{key}.json"


def _derivation_mathml(reductions: Sequence[str]) -> dict[str, dict[str, str]]:
    """``{reduction: {quantity: MathML}}``; from the cache when it holds them, else derived by SymPy
    (importing SymPy and deriving cost more than a second of every report) and cached."""
    cache = _mathml_cache_file()
    cached: dict[str, dict[str, str]] = {}
    if cache is not None:
        try:
            raw = json.loads(cache.read_text(encoding="utf-8"))
            if isinstance(raw, dict):
                cached = {r: m for r, m in raw.items() if isinstance(m, dict) and m
                          and all(isinstance(q, str) and isinstance(x, str) for q, x in m.items())}
        except (OSError, ValueError):
            cached = {}
    if all(r in cached for r in reductions):
        return {r: cached[r] for r in reductions}
    from ..symbolic import derive

    fresh = {r: derive(r).mathml() for r in reductions}
    if cache is not None:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{cache.name}.", dir=cache.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump({**cached, **fresh}, fh)
            os.replace(tmp, cache)
        except OSError:
            pass  # a read-only home: derive every time
    return fresh


def _derivations(reductions: Sequence[str]) -> list[tuple[str, list[tuple[str, Markup]]]]:
    out = []
    for red, ml in _derivation_mathml(reductions).items():
        # SymPy's presentation printer output (or the harness's own cache of it), not data from a
        # results file: trusted markup.
        out.append((red, [(q, Markup(m)) for q, m in ml.items()]))
    return out


def warm_up() -> None:
    """Do the report's record-independent work now: import its figures' modules (matplotlib), parse its template
    and derive the optimizer rules it may show (:func:`harness.optim.report.family_html`), about 1 s on one core.

    ``check`` calls it while its worker processes start (the fork server's preload, about 3 s, keeps this
    process waiting there), so that the report at the end of the run costs only the records. It changes no
    output: the same page is rendered with or without it.
    """
    from ..optim.report import FAMILIES, family_html
    from . import plots  # noqa: F401  (matplotlib: the largest import of the report)

    _env().get_template("report.html.j2")
    for key, _, _ in FAMILIES:
        family_html(key)


@dataclass
class Outcome:
    """The page's headline: the exit status of ``report --exit-status`` on the files read
    (:meth:`harness.report.model.ReportModel.exit_status`), with and without ``--strict``, the lines that say why,
    and the implementations with a failing record (:func:`harness.verdicts.failures`, without ``--strict``)."""

    code: int
    strict_code: int
    lines: list[str]
    failing: list[str]


def render_html(model: ReportModel, *, title: str = "Agreement report",
                extra_sections: Iterable[ExtraSection | tuple[str, str]] = (),
                run_outcome: Callable[..., RunOutcome] | None = None) -> str:
    """Render the report page for ``model`` (see :func:`build_model`) and return the HTML text.

    ``run_outcome``: the verdict policy of the page's headline (:meth:`ReportModel.exit_status`); ``harness.cli`` passes
    its copy of :func:`harness.verdicts.run_outcome`, bound before any plug-in was imported (a plug-in that replaced
    ``harness.verdicts.run_outcome`` at import made ``check``'s own page say "These runs pass" over a run that exits 1,
    helper-192)."""
    from .plots import bits_of_error_plot, bound_tightness_plot, drift_plot

    plots = [
        ("bits", "Bits of error", bits_of_error_plot(model.records),
         "Per implementation and dtype: box from the first to the third quartile, line at the median, whiskers at the minimum and maximum."),
        ("bounds", "Error against the rigorous bound", bound_tightness_plot(model.records),
         "Worst error of each record divided by its rigorous forward error bound (log10). Right of the dashed line is a disagree; far to the left means the bound is loose."),
        ("drift", "Trajectory drift", drift_plot(model.records),
         "How far W and b have moved from the exact trajectory (exact updates from the initial inputs) after each step, in ULPs, worst case per implementation, device and dtype, over the runs of two steps or more."),
    ]
    extras = [s if isinstance(s, ExtraSection) else ExtraSection(s[0], s[1]) for s in extra_sections]
    determinism = determinism_section(model.records)
    if determinism is not None:
        extras.insert(0, determinism)
    from ..optim.report import rules_section

    rules = rules_section({r.quantity for r in model.records})
    if rules is not None:
        extras.insert(0, ExtraSection(*rules, id="optimizer-rules"))
    from ..verdicts import failures

    # the page's headline: report --exit-status's own decision on these files, and the implementations whose records fail
    code, lines = model.exit_status(run_outcome=run_outcome)
    outcome = Outcome(code, model.exit_status(strict=True, run_outcome=run_outcome)[0], lines, sorted({r.implementation for r in failures(model.records)}))
    page = _env().get_template("report.html.j2")
    with no_gc():
        return _visible_controls(page.render(
            m=model, outcome=outcome, title=title, runs_html=runs_html(model.runs), env_table=environment_table(model.environments), generated=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            derivations=_derivations(model.reductions),
            plots=[(pid, t, Markup(svg) if svg else None, cap) for pid, t, svg, cap in plots],
            extras=[(e.id or f"extra-{i}", e.title, Markup(e.html)) for i, e in enumerate(extras)],
        ))


#: Characters no page of the report holds of its own: C0 controls but tab, newline and carriage return (NUL and ESC are
#: parse errors of HTML), DEL and the C1 controls, and the bidirectional embeddings, overrides and isolates
#: (U+202A-U+202E, U+2066-U+2069), which reorder the text that follows them.
_CONTROLS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _visible_controls(page: str) -> str:
    """``page`` with each of :data:`_CONTROLS` (from the data: a step's exception text, a results file's strings) written
    as its Python backslash escape, ``\\x1b``, ``\\x00``, ``\\u202e``, as the terminal shows them
    (:func:`harness.errors.terminal_text`): the page stays valid HTML, and nothing in it is reordered or hidden."""
    return _CONTROLS.sub(lambda m: repr(m.group())[1:-1], page)


def determinism_section(records: Sequence[Record]) -> ExtraSection | None:
    """Run-to-run determinism (``check --repeat R``) per implementation, device and dtype; None without repeated runs."""
    from html import escape

    from ..summary import determinism_rows

    rows = determinism_rows(records)
    if not rows:
        return None
    head = "".join(f"<th>{h}</th>" for h in ("implementation", "device", "dtype", "runs", "bitwise equal to run 1 (worst)",
                                                  "largest spread (ULPs)", "largest spread (abs)", "determinism"))
    body = "".join(
        f"<tr><td>{escape(impl)}</td><td>{escape(dev)}</td><td>{escape(dt)}</td><td>{n}</td><td>{ident:.0%}</td>"
        f"<td>{ulps:.4g}</td><td>{spread:.3g}</td><td>{'deterministic' if ident == 1.0 else 'not bitwise reproducible'}</td></tr>"
        for impl, dev, dt, n, ident, ulps, spread in rows)
    note = ("<p>Each implementation ran R times on fresh copies of the same inputs. A run beyond the rigorous bound "
            "is graded <code>disagree</code> (see the records' <code>repeat_*</code> fields).</p>")
    return ExtraSection("Run-to-run determinism", f"{note}<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>",
                        id="determinism")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file in the same folder and a rename.

    A crash or an exception leaves either the old file or the new one, never a
    half-written one, and no temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a report is for everyone to read
        # errors="replace": text from argv (a file name that is not UTF-8) may hold lone surrogates
        with os.fdopen(fd, "w", encoding="utf-8", errors="replace") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())  # the rename must not reach the disk before the contents
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def render_report(results_paths: Iterable[str | Path | ResultsFile], out_path: str | Path, *, title: str = "Agreement report",
                  extra_sections: Iterable[ExtraSection | tuple[str, str]] = (),
                  run_outcome: Callable[..., RunOutcome] | None = None) -> Path:
    """Merge results files into one self-contained HTML report, written atomically.

    Args:
        results_paths: JSON-lines results files (from ``check``, the pytest
            plugin, several machines or shards), or files already read
            (:class:`harness.records.ResultsFile`, e.g. ``ResultsStream.written``).
        out_path: the HTML file to write (folders are created).
        title: page title.
        extra_sections: more sections appended after the figures, as
            :class:`ExtraSection` or ``(title, html)`` pairs; ``html`` is
            trusted markup (e.g. benchmark figures as inline SVG).
        run_outcome: the headline's verdict policy (:func:`render_html`); None: :func:`harness.verdicts.run_outcome`.

    Returns:
        ``out_path`` as a Path. Malformed lines of the results files (a run cut
        off mid-line, a line that is not UTF-8 or not JSON, a record that breaks
        the Record contract) are left out of every figure; the page shows their
        count in a banner and lists them in a "Malformed lines" section, and a
        banner names the files whose run did not complete (no ``run-end`` line).

    Raises:
        UsageError: if a results file is missing or unreadable (named in the message).
    """
    model = build_model(list(results_paths))
    return write_atomic(out_path, render_html(model, title=title, extra_sections=extra_sections, run_outcome=run_outcome))
