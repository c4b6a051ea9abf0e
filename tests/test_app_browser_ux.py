"""The README scenario's answer in a real browser (issue 22): AlphaPruning vs uniform at 60 % as two labelled series
of the trade-off plot (allocation × pruner × evaluation protocol), the runs table opening with the perplexities, and
the collapse warning of a run pruned to 90 %. ``streamlit run app.py`` + Playwright + Debian's Chromium; small
Wanda prunes (2 × 64 calibration tokens) on 2 evaluation windows of 64 tokens.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from webapp.serve import CHROMIUM
from webapp.serve import CHROMIUM_FLAGS as FLAGS

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.browser,
    pytest.mark.xdist_group("browser"),  # one worker, one shared streamlit server (tests/conftest.py)
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing: apt-get install -y chromium"),
]

# every chart: title, and per trace its name and point labels
CHARTS_JS = """() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(d => ({
  title: (d.layout && d.layout.title && (d.layout.title.text || d.layout.title)) || '',
  traces: (d._fullData || d.data || []).map(t => ({name: t.name || '', text: Array.from(t.text || [])}))
}))"""


def _idle(page, timeout: float = 300_000) -> None:
    page.wait_for_timeout(400)
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=timeout)
    page.wait_for_timeout(300)


def _select(page, label: str, option: str) -> None:
    page.locator('[data-testid="stSelectbox"]').filter(has_text=label).first.click()
    page.get_by_role("option", name=option, exact=True).click()
    _idle(page)


POINTS_JS = """() => Array.from(document.querySelectorAll('.js-plotly-plot')).filter(d => String((d.layout &&
  d.layout.title && (d.layout.title.text || d.layout.title)) || '').includes('perplexity against sparsity'))
  .map(d => (d._fullData || d.data || []).reduce((n, t) => n + Array.from(t.x || []).length, 0))[0] || 0"""


def _prune(page) -> None:
    """Click *Prune and evaluate* and wait until the trade-off plot holds one more point (the run is recorded)."""
    before = page.evaluate(POINTS_JS)
    page.get_by_role("button", name="Prune and evaluate").click()
    page.wait_for_function(f"() => ({POINTS_JS})() > {before}", timeout=600_000)
    _idle(page, 600_000)


def _tradeoff(page) -> dict:
    charts = [c for c in page.evaluate(CHARTS_JS) if "perplexity against sparsity" in str(c["title"])]
    assert charts, [c["title"] for c in page.evaluate(CHARTS_JS)]
    return {t["name"]: t["text"] for t in charts[0]["traces"] if t["name"]}


def test_scenario_answer_labels_and_collapse_note(server):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
        page.set_default_timeout(300_000)
        page.goto(server)
        page.locator("h2").filter(has_text="Model overview").first.wait_for()
        _idle(page)
        page.locator('[data-testid="stSidebarNav"] [data-testid="stSidebarNavLink"]').filter(
            has_text="Prune & evaluate").first.click()
        page.locator("h2").filter(has_text="Prune & evaluate").first.wait_for()
        _idle(page)
        for label, value in (("calibration samples", "2"), ("tokens per sample / eval window", "64"),
                             ("eval windows", "2")):
            box = page.locator('[data-testid="stNumberInput"]').filter(has_text=label).locator("input")
            box.fill(value)
            box.press("Enter")
            _idle(page)
        _prune(page)  # Wanda (the default pruner) + AlphaPruning 60 %
        _select(page, "allocation", "uniform")
        _prune(page)  # Wanda + uniform 60 %
        series = _tradeoff(page)
        ap, uni = "AlphaPruning + Wanda + wikitext2 2×64", "uniform + Wanda + wikitext2 2×64"
        assert ap in series and uni in series, list(series)
        assert len(series[ap]) == 1 and series[ap][0].startswith(ap + ": ")  # each point says what it is
        assert len(series[uni]) == 1 and series[uni][0].startswith(uni + ": ")
        header = page.locator('[data-testid="stDataFrame"]').last.locator('[role="columnheader"]').all_inner_texts()
        header = [h.strip() for h in header if h.strip()]
        assert header[:3] == ["ppl", "dense_ppl", "allocation"], header  # the answer first
        assert page.get_by_text("collapsed").count() == 0
        answer = page.locator('[data-testid="stAlert"]').filter(has_text="lowest perplexity").inner_text()
        assert "At 60% with Wanda (wikitext2 2×64" in answer and "AlphaPruning" in answer and "uniform" in answer
        box = page.locator('[data-testid="stAlert"]').filter(has_text="lowest perplexity").bounding_box()
        assert box["y"] + box["height"] <= 1000, box  # on the first screen, no scrolling

        thumb = page.locator('[data-testid="stSlider"]').filter(has_text="sparsity").first.get_by_role("slider")
        thumb.focus()
        for _ in range(6):  # 0.60 → 0.90
            thumb.press("ArrowRight")
            _idle(page)
        _prune(page)  # Wanda + uniform 90 %: the model collapses
        warning = page.locator('[data-testid="stAlert"]').filter(has_text="collapsed")
        assert warning.count() == 1, page.locator('[data-testid="stAlert"]').all_inner_texts()
        assert "× the dense" in warning.inner_text()
        assert uni in _tradeoff(page)  # the 90 % run extends the uniform series (same protocol)
        out = ROOT / "artifacts"
        out.mkdir(exist_ok=True)
        page.screenshot(path=str(out / "scenario_answer.png"), full_page=True)
        browser.close()
