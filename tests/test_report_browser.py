"""The report in a real browser: headless Chromium (Debian's package) driven by Playwright.

Loads the report from disk, checks that the agreement matrix and the MathML
render, that filters, sorting and drill-downs work, that there is no console
error and no network request, saves screenshots under ``reports/`` and measures
how long a 100,000-record report takes to open (printed and saved in
``reports/report-timing.json``; never asserted).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.report import build_model, render_html, write_atomic
from tests.conftest import ROOT
from tests.report_data import real_results, synthetic_records, write_synthetic

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")

CHROMIUM = os.environ.get("HARNESS_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
if not CHROMIUM:
    pytest.skip("no chromium executable (apt-get install chromium; or set HARNESS_CHROMIUM)", allow_module_level=True)

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
REPORTS = ROOT / "reports"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


class Page:
    """A page that records console errors, page errors and every request it makes."""

    def __init__(self, browser: Any, url: str, viewport: tuple[int, int] = (1400, 1100)) -> None:
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
        self.page.on("console", lambda m: self.errors.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.route("**/*", lambda route: route.continue_() if route.request.url == url else route.abort())
        self.url = url

    def open(self) -> float:
        t0 = time.perf_counter()
        self.page.goto(self.url, wait_until="load")
        return time.perf_counter() - t0

    def matching(self) -> int:
        return int(self.page.get_attribute("#status", "data-matching"))

    def visible_runs(self, attr: str) -> list[str]:
        return self.page.eval_on_selector_all("#runs > tbody:not([hidden])", f"bs => bs.map(b => b.dataset.{attr})")

    def close(self) -> None:
        assert self.errors == []
        assert self.requests == [self.url], f"unexpected requests: {self.requests}"
        self.page.close()


@pytest.fixture(scope="module")
def small_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    folder = tmp_path_factory.mktemp("browser")
    paths = real_results(folder)
    model = build_model(list(paths))
    out = write_atomic(folder / "agreement.html", render_html(model))
    return out, model


def test_report_renders_matrix_and_mathml_and_filters_offline(browser, small_report):
    path, model = small_report
    pg = Page(browser, path.as_uri())
    pg.open()
    page = pg.page

    # the agreement matrix: one cell per implementation x device x dtype, showing worst bits
    cells = page.locator("#agreement td.cell")
    assert cells.count() == len(model.matrix) == 6
    cell = page.locator('#agreement td.cell[data-i="torch-seed"][data-t="float32"]')
    assert cell.is_visible()
    assert cell.inner_text().split("\n")[0] == model.matrix[("torch-seed", "cpu", "float32")].label

    # MathML renders as mathematics: a block math box, fractions taller than a single identifier
    assert page.evaluate("getComputedStyle(document.querySelector('#derivation math')).display") == "block math"
    frac = page.locator("#derivation mfrac").first.bounding_box()
    ident = page.locator("#derivation math mi").first.bounding_box()
    assert frac is not None and ident is not None and frac["height"] > 1.5 * ident["height"]

    REPORTS.mkdir(exist_ok=True)
    page.screenshot(path=str(REPORTS / "agreement-screenshot.png"))

    # filters: dtype, case substring, reset; a matrix cell filters the runs to that cell
    assert pg.matching() == len(model.runs) == 6
    page.select_option("#ft", "float16")
    assert pg.matching() == 2 and set(pg.visible_runs("t")) == {"float16"}
    page.fill("#fc", "no-such-case")
    assert pg.matching() == 0 and page.inner_text("#status") == "no run matches"
    page.click("#freset")
    page.wait_for_function("document.getElementById('status').dataset.matching === '6'")
    page.click('#agreement td.cell[data-i="numpy-hand"][data-t="float64"]')
    assert pg.matching() == 1 and pg.visible_runs("i") == ["numpy-hand"]
    page.click("#freset")
    page.wait_for_function("document.getElementById('status').dataset.matching === '6'")

    # sort by dtype, then drill down into the first run
    page.click('#runs th[data-k="t"] button')
    assert pg.visible_runs("t") == sorted(pg.visible_runs("t"))
    first = page.locator("#runs > tbody:not([hidden])").first
    first.locator("tr.sum").click()
    detail = first.locator("tr.det")
    assert detail.is_visible() and "reproduce:" in detail.inner_text()
    assert "exact (inputs as seen)" in detail.locator("table.recs thead").inner_text()  # header cloned on opening
    assert "python -m harness check" in detail.inner_text()
    pg.close()


def test_report_of_100000_records_opens_and_filters(browser, tmp_path):
    n_cases = 1250  # x 80 records each
    t0 = time.perf_counter()
    records = synthetic_records(n_cases)
    results = write_synthetic(tmp_path / "synthetic.jsonl", records)
    t1 = time.perf_counter()
    model = build_model([results])
    html = render_html(model)
    out = write_atomic(tmp_path / "agreement-100k.html", html)
    t2 = time.perf_counter()
    assert len(model.records) == 100_000

    pg = Page(browser, out.as_uri())
    wall = pg.open()
    page = pg.page
    nav = page.evaluate("(() => { const n = performance.getEntriesByType('navigation')[0];"
                        " return {dcl: n.domContentLoadedEventEnd, load: n.loadEventEnd, ready: window.harnessReportReady}; })()")
    assert pg.matching() == len(model.runs) == 10_000

    # verdict filter from the header badge: runs holding at least one disagree record
    with_disagree = {(r.case, r.implementation, r.device, r.dtype) for r in records if r.verdict == "disagree"}
    t3 = time.perf_counter()
    page.click('#counts button[data-verdict="disagree"]')
    filter_s = time.perf_counter() - t3
    assert pg.matching() == len(with_disagree) > 0
    assert all("disagree" in v.split() for v in pg.visible_runs("v"))
    page.fill("#fc", "syn-00001")
    assert pg.matching() == sum(1 for k in with_disagree if k[0] == "syn-00001")
    page.click("#freset")
    page.wait_for_function(f"document.getElementById('status').dataset.matching === '{len(model.runs)}'")
    t4 = time.perf_counter()
    page.click('#runs th[data-k="b"] button')
    sort_s = time.perf_counter() - t4
    bits = [float(b) for b in pg.visible_runs("b")]
    assert bits == sorted(bits, reverse=True) and len(bits) == 100

    page.click('#counts button[data-verdict="disagree"]')
    page.locator("#runs > tbody:not([hidden]) tr.sum").first.click()
    page.locator("#results").screenshot(path=str(REPORTS / "agreement-100k-drilldown.png"))

    timing = {
        "records": len(model.records), "runs": len(model.runs), "drill_down_records": model.detail_total,
        "report_bytes": out.stat().st_size, "results_bytes": results.stat().st_size,
        "write_results_s": round(t1 - t0, 2), "render_report_s": round(t2 - t1, 2),
        "browser_open_s": round(wall, 3), "dom_content_loaded_ms": round(nav["dcl"]), "load_event_ms": round(nav["load"]),
        "script_ready_ms": round(nav["ready"]), "verdict_filter_s": round(filter_s, 3), "sort_s": round(sort_s, 3),
    }
    REPORTS.mkdir(exist_ok=True)
    (REPORTS / "report-timing.json").write_text(json.dumps(timing, indent=2) + "\n")
    print("\n100,000-record report:", json.dumps(timing))
    pg.close()


def test_markup_in_the_data_shows_as_text_and_runs_nothing(browser, tmp_path):
    from harness.records import Record, environment_record, write_jsonl

    evil = "<script>alert('case')</script>"
    recs = [Record(case=evil, implementation="<img src=x onerror=alert(1)>", device="cpu", dtype="float32", quantity="loss",
                   step=1, verdict="error", message=f"RuntimeError: {evil}", repro=f"python -m harness check --case '{evil}'")]
    out = write_atomic(tmp_path / "evil.html", render_html(build_model([write_jsonl(tmp_path / "evil.jsonl", recs, environment_record())])))
    pg = Page(browser, out.as_uri())
    dialogs: list[str] = []
    pg.page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    pg.open()
    row = pg.page.locator("#runs > tbody tr.sum").first
    assert row.locator("td").nth(1).inner_text() == evil
    assert row.locator("td").nth(2).inner_text() == "<img src=x onerror=alert(1)>"
    row.click()
    assert f"RuntimeError: {evil}" in pg.page.locator("#runs > tbody tr.det").first.inner_text()
    assert pg.page.locator("img").count() == 0 and pg.page.locator("script").count() == 1
    assert dialogs == []
    pg.close()
