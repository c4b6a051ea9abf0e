"""Benchmark: first and cached load time of every view of the Streamlit app, in a real browser.

Starts ``streamlit run app.py`` (fresh server process: Streamlit's in-memory caches empty; the spectra disk cache and
the converted model as they are on this machine, or an empty cache directory with ``--cold``) and drives Debian's
Chromium with Playwright. For each view it prints the wall time from the click to the finished script run with every
chart drawn, and the CPU seconds the server process used meanwhile (the better estimate on a shared machine), first
visit and second (cached) visit; then the λ-slider latency, the Allocation lab with OWL / LAMP / global magnitude
added, two steps of its S slider with those seven curves shown (every method at a new S), and optionally
(``--prune``) the default Prune & evaluate run (Wanda + AlphaPruning 60 %, 16 × 256 calibration tokens, 8 evaluation
windows). Peers measured in the same run: a one-line Streamlit page (the framework's floor for
one page load on this machine) and a page with one slider and one plotly chart titled by its value (the floor of a
slider step: key press → rerun → redrawn chart).

With ``--cold`` the first visit converts the built-in GGUF and analyses it: "first chart" is the time from opening
the page to the first drawn chart (the α-along-depth chart that grows while the analysis runs), "complete" to the
finished overview.

Run: ``python bench/bench_app_views.py [--prune] [--cold]`` (needs /usr/bin/chromium and playwright).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from memory_probe import describe as memory_state  # noqa: E402  (bench/ is sys.path[0])

from webapp.serve import CHROMIUM, StreamlitServer  # noqa: E402
from webapp.serve import CHROMIUM_FLAGS as FLAGS  # noqa: E402

#: λ steps timed per slider (12: the median of six moved by ±30 ms between runs of the same code)
STEPS = 12
VIEWS = ("Model overview", "ESD explorer", "Allocation lab", "Prune & evaluate", "Report")


def idle(page, timeout: float = 600_000) -> None:
    page.wait_for_timeout(300)
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=timeout)


def charts_drawn(page, n: int = 1, timeout: float = 600_000) -> None:
    page.wait_for_function(f"() => document.querySelectorAll('.js-plotly-plot .main-svg').length >= {n}",
                           timeout=timeout)


def timed(server: StreamlitServer, action) -> tuple[float, float]:
    c0, t0 = server.cpu(), time.perf_counter()
    action()
    return time.perf_counter() - t0, server.cpu() - c0


def visit(page, view: str) -> None:
    page.locator('[data-testid="stSidebarNav"] [data-testid="stSidebarNavLink"]').filter(has_text=view).first.click()
    page.locator("h2").filter(has_text=view).first.wait_for(timeout=600_000)
    idle(page)
    if view not in ("Prune & evaluate", "Report"):  # these two have charts only after a run
        charts_drawn(page)


#: the page's own clock for a step: key down (capturing listener) → the first animation frame whose chart title names
#: the new λ (no Playwright round trip in it)
IN_PAGE = """(t) => { window.__lat = null;
  const drawn = () => Array.from(document.querySelectorAll('.js-plotly-plot')).some(d =>
      String((d.layout.title||{}).text||'').includes(t));
  const check = () => { if (drawn()) { window.__lat = performance.now() - window.__key; } else
      { requestAnimationFrame(check); } };
  requestAnimationFrame(check); }"""


def slider_steps(page, server: StreamlitServer, label: str) -> list[tuple]:
    """λ 0.30 → 0.35 → … → 0.90 with the keyboard: each step timed from the key press to the redrawn chart (its title
    names the new λ), no fixed waits inside the timed part; rows for the median and the slowest of the
    :data:`STEPS` steps, and the median by the page's own clock (:data:`IN_PAGE`; server CPU not measured there)."""
    thumb = page.locator('[data-testid="stSlider"]').filter(has_text="λ (allocation range)").get_by_role("slider")
    thumb.focus()
    page.evaluate("document.addEventListener('keydown', () => { window.__key = performance.now(); }, true)")

    def move(target: str):
        page.evaluate(IN_PAGE, target)
        thumb.press("ArrowRight")
        page.wait_for_function("(t) => Array.from(document.querySelectorAll('.js-plotly-plot')).some(d => "
                               "String((d.layout.title||{}).text||'').includes(t))", arg=target, polling=10)

    steps, in_page = [], []
    for k in range(STEPS):
        lam = f"λ = {0.35 + 0.05 * k:.2f}"
        steps.append(timed(server, lambda t=lam: move(t)))
        in_page.append(page.wait_for_function("() => window.__lat").json_value() / 1000.0)
        idle(page)
    walls, cpus = sorted(w for w, _ in steps), sorted(c for _, c in steps)
    return [(f"{label} (median of {STEPS})", "cached", statistics.median(walls), statistics.median(cpus)),
            (f"{label} (slowest of {STEPS})", "cached", walls[-1], cpus[-1]),
            (f"{label} (in the page, median)", "cached", statistics.median(in_page), float("nan"))]


def s_step(page) -> None:
    """One step of the lab's S slider (keyboard) until the allocation chart's title names the new S."""
    title = page.evaluate(TITLE_JS)
    thumb = page.locator('[data-testid="stSlider"]').filter(has_text="global sparsity S").get_by_role("slider")
    thumb.focus()
    thumb.press("ArrowRight")
    page.wait_for_function(f"(old) => {{ const t = ({TITLE_JS})(); return t && t !== old && t.includes('S = '); }}",
                           arg=title, timeout=600_000)
    idle(page)


#: the allocation chart's title
TITLE_JS = """() => { const d = Array.from(document.querySelectorAll('.js-plotly-plot')).find(d =>
  String((d.layout.title||{}).text||'').includes('Sparsity per')); return d ? String(d.layout.title.text) : ''; }"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prune", action="store_true", help="also time the default Prune & evaluate run")
    ap.add_argument("--cold", action="store_true", help="use an empty SPL_CACHE_DIR (GGUF conversion + analysis)")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    tmp = None
    if args.cold:
        tmp = tempfile.mkdtemp(prefix="spl-cold-")
        env["SPL_CACHE_DIR"] = tmp
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} (1 min), {os.getloadavg()[1]:.2f} "
          f"(5 min) at start; torch threads: default; cold: {args.cold}; {memory_state()}")
    rows = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        # peer: a one-line page
        blank = Path(tempfile.mkdtemp()) / "blank.py"
        blank.write_text("import streamlit as st\nst.header('blank')\n")
        srv = StreamlitServer(blank, env)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        wall, cpu = timed(srv, lambda: (page.goto(srv.url), page.locator("h2").first.wait_for(), idle(page)))
        rows.append(("peer: one-line Streamlit page", "first", wall, cpu))
        page.close()
        srv.stop()

        # peer: the framework floor of a slider step — a page with one slider and one plotly chart titled by it
        slider_page = blank.parent / "slider.py"
        slider_page.write_text("import streamlit as st, plotly.graph_objects as go\n"
                               "v = st.slider('λ (allocation range)', 0.0, 1.0, 0.3, step=0.05)\n"
                               "st.plotly_chart(go.Figure(go.Scatter(y=[v, 1 - v])).update_layout("
                               "title=f'λ = {v:.2f}'))\n")
        srv = StreamlitServer(slider_page, env)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(srv.url)
        charts_drawn(page)
        idle(page)
        rows += slider_steps(page, srv, "peer: one-slider page, slider step")
        page.close()
        srv.stop()

        srv = StreamlitServer(ROOT / "app.py", env)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            c0, t0 = srv.cpu(), time.perf_counter()
            page.goto(srv.url)
            charts_drawn(page, timeout=900_000)  # the first chart: the live α chart while the analysis runs
            rows.append(("Model overview: first chart", "first", time.perf_counter() - t0, srv.cpu() - c0))
            page.locator("h2").filter(has_text="Model overview").first.wait_for(timeout=900_000)
            idle(page)
            charts_drawn(page)
            rows.append(("Model overview: complete", "first", time.perf_counter() - t0, srv.cpu() - c0))
            for view in VIEWS[1:]:
                rows.append((view, "first", *timed(srv, lambda v=view: visit(page, v))))
            for view in VIEWS:
                rows.append((view, "cached", *timed(srv, lambda v=view: visit(page, v))))
            visit(page, "Allocation lab")
            rows += slider_steps(page, srv, "Allocation lab: λ slider step")

            def add_methods():
                for label in ("OWL", "LAMP", "global magnitude"):
                    page.get_by_role("combobox", name="methods", exact=True).click()
                    page.get_by_role("option", name=label, exact=True).click()
                    idle(page)
                    page.keyboard.press("Escape")
                charts_drawn(page)

            rows.append(("Allocation lab + OWL, LAMP, global", "first", *timed(srv, add_methods)))
            visit(page, "ESD explorer")
            rows.append(("Allocation lab + OWL, LAMP, global", "cached",
                         *timed(srv, lambda: visit(page, "Allocation lab"))))
            for i in range(2):  # two new targets S with the seven curves shown (every method at a new S)
                rows.append((f"  + one S step (new S), {i + 1}", "first", *timed(srv, lambda: s_step(page))))
            if args.prune:
                visit(page, "Prune & evaluate")

                def prune():
                    page.get_by_role("button", name="Prune and evaluate").click()
                    page.wait_for_selector("text=pruned perplexity", timeout=1_800_000)
                    idle(page)

                rows.append(("Prune & evaluate: default run", "first", *timed(srv, prune)))
                rows.append(("Prune & evaluate: default run", "again", *timed(srv, prune)))
        finally:
            page.close()
            srv.stop()
            browser.close()
    print(f"load average at end {os.getloadavg()[0]:.2f} (1 min), {os.getloadavg()[1]:.2f} (5 min)")
    print(f"{'view':44s} {'visit':7s} {'wall s':>8s} {'server CPU s':>13s}")
    for name, kind, wall, cpu in rows:
        print(f"{name:44s} {kind:7s} {wall:8.2f} {cpu:13.2f}")
    if tmp:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
