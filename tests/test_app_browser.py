"""Real-browser end-to-end test of the Streamlit app: ``streamlit run app.py`` + Playwright + Debian's Chromium.

Starts the server on 127.0.0.1 at a free port, visits every view, moves the λ slider of the Allocation lab and checks
that the AlphaPruning curve in the page changed to exactly ``pruning.allocation.allocate``'s block means for the new λ
(while the uniform curve did not move), switches the ESD explorer's xmin rule and checks α against
``spectra.hill.fit_power_law``, runs a small Prune & evaluate, and saves a screenshot of each view to
``artifacts/`` (``SPL_ASSETS_DIR=DIR`` also copies them to DIR).
"""
from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from webapp.serve import CHROMIUM
from webapp.serve import CHROMIUM_FLAGS as FLAGS

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.browser,
    pytest.mark.xdist_group("browser"),  # one worker, one shared streamlit server (tests/conftest.py)
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing: apt-get install -y chromium"),
]

# the plotly figure data of every chart on the page: title, trace names and y values (``_fullData``: plotly.js has
# decoded the base64 typed arrays that plotly.py sends there)
FIGURES_JS = """() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(d => ({
  title: (d.layout && d.layout.title && (d.layout.title.text || d.layout.title)) || '',
  traces: (d._fullData || d.data || []).map(t => ({name: t.name || '', x: Array.from(t.x || []),
                                                  y: Array.from(t.y || [])}))
}))"""


@pytest.fixture(scope="module")
def page(server):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        # Playwright gives the browser a fresh temporary profile itself (it refuses --user-data-dir in args)
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        pg = context.new_page()
        pg.set_default_timeout(180_000)
        pg.goto(server)
        yield pg
        context.close()
        browser.close()


def _idle(page, timeout: float = 300_000) -> None:
    """Wait until the Streamlit script run has finished (no 'running' status widget) and charts are drawn."""
    page.wait_for_timeout(400)
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=timeout)
    page.wait_for_timeout(300)


def _shot(page, name: str) -> Path:
    out = ROOT / "artifacts"
    out.mkdir(exist_ok=True)
    path = out / f"{name}.png"
    page.screenshot(path=str(path), full_page=False)
    assets = os.environ.get("SPL_ASSETS_DIR")
    if assets:
        Path(assets).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(assets) / f"{name}.png")
    return path


def _go(page, view: str) -> None:
    """Switch to the page of ``view`` through its link in the sidebar navigation."""
    page.locator('[data-testid="stSidebarNav"] [data-testid="stSidebarNavLink"]').filter(has_text=view).first.click()
    page.locator("h2").filter(has_text=view).first.wait_for()
    _idle(page)


def _wait_chart(page, title_part: str, timeout: float = 300_000) -> None:
    page.wait_for_function("(t) => Array.from(document.querySelectorAll('.js-plotly-plot')).some(d => "
                           "String((d.layout && d.layout.title && (d.layout.title.text || d.layout.title)) || '')"
                           ".includes(t))", arg=title_part, timeout=timeout)


def _figure(page, title_part: str) -> dict:
    _wait_chart(page, title_part)
    figs = page.evaluate(FIGURES_JS)
    hits = [f for f in figs if title_part in str(f["title"])]
    assert hits, f"no chart titled *{title_part}* among {[f['title'] for f in figs]}"
    return hits[0]


# the rendered x axis of the KS chart (log10 units on a log axis) and the x values of its traces
KS_AXIS_JS = """() => Array.from(document.querySelectorAll('.js-plotly-plot')).filter(d => String((d.layout &&
  d.layout.title && (d.layout.title.text || d.layout.title)) || '').includes('D per xmin candidate')).map(d => ({
  range: Array.from(d._fullLayout.xaxis.range), type: d._fullLayout.xaxis.type,
  annotations: (d._fullLayout.annotations || []).map(a => a.x),
  traces: (d._fullData || []).map(t => ({name: t.name || '', x: Array.from(t.x || [])}))}))"""


def _check_ks_axis(page) -> None:
    """The KS chart as drawn spans the decades of its xmin candidates (it ran to 10^32)."""
    _wait_chart(page, "D per xmin candidate")
    (ks,) = page.evaluate(KS_AXIS_JS)
    cand = np.asarray([t for t in ks["traces"] if t["name"] == "KS distance D"][0]["x"], dtype=np.float64)
    lo, hi = np.log10(cand.min()), np.log10(cand.max())
    assert ks["type"] == "log" and lo - 0.5 <= ks["range"][0] <= lo and hi <= ks["range"][1] <= hi + 0.5, ks["range"]
    assert all(lo - 0.5 <= float(x) <= hi + 0.5 for x in ks["annotations"]), ks["annotations"]


def _esd_title_matrix(page, rule: str) -> str:
    titles = re.findall(r"([\w.]+) \(\d+×\d+\), rule " + rule, page.content())
    assert titles, f"no ESD chart titled '... rule {rule}'"
    return titles[0]


def _trace(fig: dict, name: str) -> np.ndarray:
    for t in fig["traces"]:
        if t["name"] == name:
            return np.asarray(t["y"], dtype=np.float64)
    raise AssertionError(f"no trace {name!r} in {[t['name'] for t in fig['traces']]}")


def _analysis() -> pd.DataFrame:
    from spectra.analyze import analyze

    return analyze(None, progress=False)  # the disk cache: same numbers the app shows


def _expected_alphapruning(lam: float, S: float = 0.6) -> np.ndarray:
    from pruning.allocation import allocate
    from pruning.plots import block_sparsity

    return 100.0 * block_sparsity(allocate(_analysis(), "alphapruning", S, lam=lam)).to_numpy()


def test_every_view_and_the_lambda_slider(page, tmp_path):
    t0 = time.time()
    page.wait_for_selector(".js-plotly-plot", timeout=300_000)
    _idle(page)
    timings = {"overview (first)": time.time() - t0}
    assert page.get_by_text("HT-SR reading").count() >= 1
    depth = _figure(page, "alpha along depth")
    assert {"q", "k", "v", "o", "gate", "up", "down"} <= {t["name"] for t in depth["traces"]}
    _shot(page, "overview")

    # ---- Allocation lab: move λ from 0.30 to 0.50 with the keyboard, the AlphaPruning curve must follow
    t = time.time()
    _go(page, "Allocation lab")
    _wait_chart(page, "Sparsity per block")
    timings["allocation lab (first)"] = time.time() - t
    before = _figure(page, "Sparsity per block")
    ap0, uni0 = _trace(before, "AlphaPruning"), _trace(before, "uniform")
    np.testing.assert_allclose(ap0, _expected_alphapruning(0.3), rtol=1e-9, atol=1e-9)
    _shot(page, "allocation_lab")
    thumb = page.locator('[data-testid="stSlider"]').filter(has_text="λ (allocation range)").get_by_role("slider")
    thumb.focus()
    for _ in range(4):  # step 0.05
        thumb.press("ArrowRight")
    _wait_chart(page, "λ = 0.50", timeout=120_000)
    _idle(page)
    after = _figure(page, "λ = 0.50")
    ap1, uni1 = _trace(after, "AlphaPruning"), _trace(after, "uniform")
    assert np.max(np.abs(ap1 - ap0)) > 1.0, "the AlphaPruning curve did not move with λ"
    np.testing.assert_allclose(uni1, uni0)  # other curves stay
    np.testing.assert_allclose(ap1, _expected_alphapruning(0.5), rtol=1e-9, atol=1e-9)
    assert np.ptp(ap1) > np.ptp(ap0)  # a larger λ spreads the sparsities wider
    # the export popover: the file is named by the λ it holds and is the allocation at that λ
    page.get_by_role("button", name="Export an allocation (JSON / CSV)").click()
    with page.expect_download() as dl:
        page.get_by_role("button", name="JSON", exact=True).click()
    assert dl.value.suggested_filename == "allocation-alphapruning-S0.60-lam0.50-linear-block.json"
    from pruning.allocation import load_allocation
    from pruning.plots import block_sparsity

    dl.value.save_as(tmp_path / dl.value.suggested_filename)
    got = load_allocation(tmp_path / dl.value.suggested_filename)
    table = pd.DataFrame({"longname": list(got), "sparsity": list(got.values())})
    table = table.merge(_analysis()[["longname", "block", "num_params"]], on="longname")
    np.testing.assert_allclose(100 * block_sparsity(table).to_numpy(), ap1, rtol=1e-9, atol=1e-9)
    page.keyboard.press("Escape")
    _idle(page)

    # ---- ESD explorer: switch the xmin rule to ks; α shown = spectra's fit on that matrix
    t = time.time()
    _go(page, "ESD explorer")
    _wait_chart(page, "D per xmin candidate")
    timings["esd explorer (first)"] = time.time() - t
    _check_ks_axis(page)
    _shot(page, "esd_explorer")
    page.locator('[data-testid="stRadio"]').filter(has_text="xmin rule").locator("label").filter(
        has_text=re.compile(r"^ks$")).click()
    _wait_chart(page, "), rule ks")  # the rerun with the new rule has drawn (a bare idle wait can see the old page)
    _idle(page)
    from spectra.analyze import AnalysisSettings, analyze
    from spectra.hill import fit_power_law

    df = analyze(None, AnalysisSettings(keep_eigs=True), progress=False).set_index("longname")
    box = page.locator('[data-testid="stSelectbox"]').filter(has_text="Matrix").first
    # the selected option is rendered as text in some Streamlit versions and as an <input> value in others
    shown_name = box.inner_text() + " " + " ".join(
        box.locator("input").nth(i).input_value() for i in range(box.locator("input").count()))
    titles = re.findall(r"([\w.]+) \(\d+×\d+\), rule ks", page.content())
    shown_name += " " + " ".join(titles)
    matches = [n for n in df.index if n in shown_name]
    assert matches, f"no analysed matrix name in the selectbox text {shown_name!r}"
    name = max(matches, key=len)
    alpha_ks = fit_power_law(df.loc[name, "evals"], "ks").alpha
    shown = page.locator('[data-testid="stMetric"]').filter(has_text="α").first.locator(
        '[data-testid="stMetricValue"]').inner_text()
    assert abs(float(shown) - alpha_ks) < 1e-4, (shown, alpha_ks)
    _check_ks_axis(page)

    # ---- one shared selection (every view shows the same matrix): a matrix opened from the overview is still the
    # ESD explorer's after a visit to the Allocation lab, and λ set there is Prune & evaluate's λ
    picked = "model.layers.10.self_attn.v_proj"
    _go(page, "Model overview")
    page.locator('[data-testid="stSelectbox"]').filter(has_text="Matrix (click a point").click()
    page.keyboard.type(picked)
    page.get_by_role("option", name=picked, exact=True).click()
    _idle(page)
    page.get_by_role("button", name="Open in ESD explorer").click()
    page.locator("h2").filter(has_text="ESD explorer").first.wait_for()
    _idle(page)
    assert _esd_title_matrix(page, "ks") == picked
    _go(page, "Allocation lab")
    _go(page, "ESD explorer")
    _wait_chart(page, "D per xmin candidate")
    assert _esd_title_matrix(page, "ks") == picked

    # ---- Prune & evaluate: a small magnitude run finishes and shows dense vs pruned perplexity
    t = time.time()
    _go(page, "Prune & evaluate")
    timings["prune & evaluate (first)"] = time.time() - t
    lam = page.locator('[data-testid="stSlider"]').filter(has_text="λ (AlphaPruning)").inner_text()
    assert "0.50" in lam, lam  # moved to 0.50 in the Allocation lab
    for label, value in (("calibration samples", "4"), ("tokens per sample / eval window", "128"),
                         ("eval windows", "2")):
        box = page.locator('[data-testid="stNumberInput"]').filter(has_text=label).locator("input")
        box.fill(value)
        box.press("Enter")
        _idle(page)
    page.locator('[data-testid="stSelectbox"]').filter(has_text="pruner").click()
    page.get_by_role("option", name="magnitude", exact=True).click()
    _idle(page)
    page.get_by_role("button", name="Prune and evaluate").click()
    page.wait_for_selector("text=pruned perplexity", timeout=300_000)
    _idle(page)
    assert page.locator('[data-testid="stMetric"]').filter(has_text="achieved sparsity").count() == 1
    _figure(page, "Per-matrix sparsity")
    _shot(page, "prune_evaluate")

    t = time.time()
    _go(page, "Report")
    page.wait_for_selector("text=Download the one-file HTML report")
    timings["report (first)"] = time.time() - t
    _shot(page, "report")
    print("view load times (s):", {k: round(v, 1) for k, v in timings.items()})
