"""Load benchmark: several browser sessions on one Streamlit server at once (a class on one server, two tabs).

Starts ``streamlit run app.py`` and, at the same moment, ``--sessions`` (default 4) headless Chromium sessions, each in
its own thread with its own Playwright: open the Model overview (first chart drawn), go to the Allocation lab and move
λ by its own number of steps (session i: i + 1 steps of 0.05 from 0.30), go to Prune & evaluate and run the default
prune (Wanda + AlphaPruning 60 %, 16 × 256 calibration tokens, 8 WikiText-2 windows of 256 tokens). Then each checks
that it sees its own selection and only its own run: its λ on the Prune & evaluate slider, one point in its trade-off
plot, labelled with its λ. With ``--extra 1`` one more session starts its prune while the others run: with
``webapp.cache.PRUNE_SLOTS`` prunes already running it must show the queue note ("Waiting in the queue") before it
runs. Reported: each session's wall time per phase, whether it saw the queue, the server's peak resident memory
(sampled every 0.2 s, children included), how many times the server loaded the model (its ``spl: loading model``
log lines), the load average.

Run: ``python bench/bench_app_load.py [--sessions 4] [--extra 1] [--out bench/RESULTS_app_load.md]``.
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from memory_probe import describe as memory_state  # noqa: E402  (bench/ is sys.path[0])

from webapp.serve import CHROMIUM, StreamlitServer  # noqa: E402
from webapp.serve import CHROMIUM_FLAGS as FLAGS  # noqa: E402

CHARTS_JS = """() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(d => ({
  title: String((d.layout && d.layout.title && (d.layout.title.text || d.layout.title)) || ''),
  traces: (d._fullData || d.data || []).map(t => ({name: t.name || '', n: Array.from(t.x || []).length,
                                                  text: Array.from(t.text || [])}))}))"""


def idle(page, timeout: float = 1_800_000) -> None:
    page.wait_for_timeout(300)
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=timeout)


def go(page, view: str) -> None:
    page.locator('[data-testid="stSidebarNav"] [data-testid="stSidebarNavLink"]').filter(has_text=view).first.click()
    page.locator("h2").filter(has_text=view).first.wait_for(timeout=600_000)
    idle(page)


def session(i: int, url: str, result: dict, start: threading.Barrier, prune_gate: threading.Event | None) -> None:
    """One user: overview → λ → default prune; records phase times and what it saw in ``result``."""
    from playwright.sync_api import sync_playwright

    steps = i + 1
    lam = round(0.30 + 0.05 * steps, 2)
    result.update(session=i, lam=lam)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
            page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            page.set_default_timeout(1_800_000)
            start.wait()
            t0 = time.perf_counter()
            page.goto(url)
            page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot .main-svg').length >= 1")
            result["first_chart_s"] = time.perf_counter() - t0
            idle(page)
            go(page, "Allocation lab")
            thumb = page.locator('[data-testid="stSlider"]').filter(has_text="λ (allocation range)").get_by_role(
                "slider")
            thumb.focus()
            for _ in range(steps):
                thumb.press("ArrowRight")
                idle(page)
            result["lambda_s"] = time.perf_counter() - t0
            go(page, "Prune & evaluate")
            if prune_gate is not None:  # the extra session: start its prune once the others are pruning
                prune_gate.wait()
            t1 = time.perf_counter()
            page.get_by_role("button", name="Prune and evaluate").click()
            saw_queue = False
            while True:  # until the run is done: note whether the queue note appeared meanwhile
                if page.get_by_text("Waiting in the queue").count():
                    saw_queue = True
                if page.get_by_text("pruned perplexity").count():
                    break
                page.wait_for_timeout(250)
            idle(page)
            result["prune_s"] = time.perf_counter() - t1
            result["saw_queue"] = saw_queue
            result["wall_s"] = time.perf_counter() - t0
            slider = page.locator('[data-testid="stSlider"]').filter(has_text="λ (AlphaPruning)").inner_text()
            result["own_lambda_shown"] = f"{lam:.2f}" in slider
            result["lambda_shown"] = " ".join(slider.split()[-3:])  # the slider's value and bounds, as drawn
            trade = [c for c in page.evaluate(CHARTS_JS) if "perplexity against sparsity" in c["title"]]
            points = sum(t["n"] for t in trade[0]["traces"]) if trade else -1
            result["runs_seen"] = points
            browser.close()
    except Exception as exc:  # noqa: BLE001 - reported in the table
        result["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=4)
    ap.add_argument("--extra", type=int, default=1, help="sessions that start their prune while the others prune")
    ap.add_argument("--out", default=None, help="append the table to this Markdown file")
    args = ap.parse_args()
    load0 = os.getloadavg()
    memory = memory_state()
    log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)  # noqa: SIM115 - the server writes it
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    srv = StreamlitServer(ROOT / "app.py", env, log=log)
    proc, url = srv.proc, srv.url
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        ps = psutil.Process(proc.pid)
        while not stop.is_set():
            try:
                rss = ps.memory_info().rss + sum(c.memory_info().rss for c in ps.children(recursive=True))
                peak[0] = max(peak[0], rss)
            except psutil.Error:
                pass
            time.sleep(0.2)

    try:
        threading.Thread(target=sample, daemon=True).start()
        n = args.sessions + args.extra
        results = [{} for _ in range(n)]
        start = threading.Barrier(n)
        gate = threading.Event()
        threads = [threading.Thread(target=session, args=(i, url, results[i], start,
                                                          gate if i >= args.sessions else None))
                   for i in range(n)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        # the extra sessions click once every regular session has started pruning (their prune phase began)
        while any(t.is_alive() for t in threads[:args.sessions]) and not all(
                "lambda_s" in r for r in results[:args.sessions]):
            time.sleep(0.5)
        time.sleep(5.0)
        gate.set()
        for t in threads:
            t.join()
        total = time.perf_counter() - t0
    finally:
        stop.set()
        srv.stop(timeout_s=30)
    log.seek(0)
    loads = len(re.findall(r"spl: loading model builtin", log.read()))
    load1 = os.getloadavg()
    lines = [(f"machine: {os.cpu_count()} cores, {platform.python_version()}; load average (1 min / 5 min) "
              f"{load0[0]:.2f} / {load0[1]:.2f} at start, {load1[0]:.2f} / {load1[1]:.2f} at end; at start {memory}"),
             (f"{args.sessions} sessions + {args.extra} extra prune(s) at once; all done in {total:.1f} s; server peak "
              f"RSS {peak[0] / 2**30:.2f} GiB; model loaded {loads} time(s) by the server"),
             "", ("| session | λ set | first chart s | overview + λ s | prune s (incl. queue) | wall s | saw queue | "
                  "own λ shown | runs in its plot | error |"), "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.get('session')}{' (extra)' if r.get('session', 0) >= args.sessions else ''} | "
                     f"{r.get('lam')} | {r.get('first_chart_s', float('nan')):.1f} | "
                     f"{r.get('lambda_s', float('nan')):.1f} | {r.get('prune_s', float('nan')):.1f} | "
                     f"{r.get('wall_s', float('nan')):.1f} | {r.get('saw_queue')} | {r.get('own_lambda_shown')} "
                     f"({r.get('lambda_shown', '?')}) | "
                     f"{r.get('runs_seen')} | {r.get('error', '')} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "a") as fh:
            fh.write(f"\n## `python bench/bench_app_load.py --sessions {args.sessions} --extra {args.extra}` "
                     f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n\n```\n{lines[0]}\n{lines[1]}\n```\n\n"
                     + "\n".join(lines[3:]) + "\n")


if __name__ == "__main__":
    main()
