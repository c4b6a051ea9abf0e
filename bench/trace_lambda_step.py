"""Where a λ step of the Allocation lab spends the browser's main thread: a Chrome trace of 8 keyboard steps.

``python bench/trace_lambda_step.py [--app app.py]``: starts the app (warm cache) in headless Chromium, opens the
Allocation lab, waits until the server is idle (the read-ahead done), steps λ three times unmeasured, then traces
8 steps (``devtools.timeline``) and prints, per step, the renderer main thread's busy time (its top-level tasks,
300 ms of idle wait after the step included) and, summed over the steps, the time of each trace event type
(``FunctionCall`` is the page's script: React's renders, plotly.js, Streamlit's message handling). The numbers move
by ±15 % between runs of the same code on the 2-core machine: compare variants in one run (bench/ab_lambda_step.py)
or repeat.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench_app_views import charts_drawn, idle, visit  # noqa: E402  (bench/ is sys.path[0])

from webapp.serve import CHROMIUM, StreamlitServer  # noqa: E402
from webapp.serve import CHROMIUM_FLAGS as FLAGS  # noqa: E402

STEPS = 8
TOP = ("RunTask", "ThreadControllerImpl::RunTask")


def wait_quiet(server: StreamlitServer, seconds: int = 3) -> None:
    """Until the server used < 0.05 s of CPU in each of ``seconds`` consecutive seconds."""
    last, quiet = server.cpu(), 0
    while quiet < seconds:
        time.sleep(1)
        now = server.cpu()
        quiet, last = (quiet + 1 if now - last < 0.05 else 0), now


def main_thread_summary(trace: dict, window_us: float = 600_000) -> tuple[list, collections.Counter]:
    """(per step: busy ms, tasks) and {event name: µs} of the renderer main thread, one window per keydown."""
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    main = {(e["pid"], e["tid"]) for e in events
            if e.get("ph") == "M" and e.get("name") == "thread_name" and e["args"].get("name") == "CrRendererMain"}
    keys = sorted(e["ts"] for e in events if e.get("name") == "EventDispatch"
                  and e.get("args", {}).get("data", {}).get("type") == "keydown")
    steps, by_name = [], collections.Counter()
    for i, k in enumerate(keys):
        end = min(keys[i + 1] if i + 1 < len(keys) else float("inf"), k + window_us)
        win = [e for e in events if (e["pid"], e["tid"]) in main and e.get("ph") == "X" and k - 1000 <= e["ts"] < end]
        tops = [e for e in win if e["name"] in TOP]
        steps.append((sum(e.get("dur", 0) for e in tops) / 1000, len(tops)))
        for e in win:
            if e["name"] not in TOP:
                by_name[e["name"]] += e.get("dur", 0)
    return steps, by_name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--app", default=str(ROOT / "app.py"))
    args = ap.parse_args()
    if not Path(args.app).is_file():
        ap.error(f"--app {args.app}: no such file; pass the app's app.py")
    from playwright.sync_api import sync_playwright

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        server = StreamlitServer(Path(args.app), env)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            page.goto(server.url)
            charts_drawn(page, timeout=900_000)
            idle(page)
            visit(page, "Allocation lab")
            wait_quiet(server)
            thumb = page.locator('[data-testid="stSlider"]').filter(has_text="λ (allocation range)").get_by_role(
                "slider")
            thumb.focus()
            for _ in range(3):
                thumb.press("ArrowRight")
                idle(page)
            browser.start_tracing(page=page, categories=["devtools.timeline", "disabled-by-default-devtools.timeline"])
            for _ in range(STEPS):
                thumb.press("ArrowRight")
                idle(page)
            trace = json.loads(browser.stop_tracing())
        finally:
            page.close()
            server.stop()
            browser.close()
    steps, by_name = main_thread_summary(trace)
    print(f"load average {os.getloadavg()[0]:.2f}; {len(steps)} steps; main thread busy ms per step (tasks): "
          + ", ".join(f"{b:.0f} ({n})" for b, n in steps))
    for name, us in by_name.most_common(8):
        print(f"{us / 1000 / max(1, len(steps)):8.1f} ms/step  {name}")


if __name__ == "__main__":
    main()
