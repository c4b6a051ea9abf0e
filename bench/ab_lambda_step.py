"""The λ step of two checkouts of the app, side by side in one browser: alternating rounds of 12 keyboard steps.

``python bench/ab_lambda_step.py DIR_A DIR_B [--rounds 5]`` (e.g. ``git worktree add /tmp/base HEAD~1`` and ``.``):
one server per checkout (each run from its own directory with this venv's Python), one page each on the Allocation
lab; once both servers are idle (the read-ahead done) and after ``--warmup`` unrecorded rounds (the first rounds of
a page were 20–60 ms slower), rounds of :data:`bench_app_views.STEPS` steps alternate
between the two pages, each step timed as ``bench/bench_app_views.py`` times it (driver: key press → chart with the
new λ; page clock). On this 2-core VM two runs of the same code differ by ±20 ms, so a change is judged in one run,
paired. Prints each round's medians and the median over rounds.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench_app_views import STEPS, charts_drawn, idle, slider_steps, visit  # noqa: E402  (bench/ is sys.path[0])
from trace_lambda_step import wait_quiet  # noqa: E402

from webapp.serve import CHROMIUM, StreamlitServer  # noqa: E402
from webapp.serve import CHROMIUM_FLAGS as FLAGS  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1, help="rounds per page before the measured ones (not recorded)")
    args = ap.parse_args()
    for d in (args.a, args.b):
        if not (d / "app.py").is_file():
            ap.error(f"{d} holds no app.py; pass two checkouts of this repository (git worktree add DIR REV)")
    if args.rounds < 1 or args.warmup < 0:
        ap.error(f"--rounds must be ≥ 1 and --warmup ≥ 0 (got {args.rounds} and {args.warmup})")
    from playwright.sync_api import sync_playwright

    dirs = [args.a.resolve(), args.b.resolve()]
    rounds: dict = {d: [] for d in dirs}
    print(f"load average {os.getloadavg()[0]:.2f} at start")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        apps = [StreamlitServer(d / "app.py", {**os.environ, "PYTHONUNBUFFERED": "1"}, checkout=d) for d in dirs]
        try:
            pages = []
            for app in apps:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(app.url)
                charts_drawn(page, timeout=900_000)
                idle(page)
                visit(page, "Allocation lab")
                pages.append(page)
            for app in apps:
                wait_quiet(app)
            for r in range(args.warmup + args.rounds):
                for d, app, page in zip(dirs, apps, pages):
                    page.bring_to_front()
                    rows = slider_steps(page, app, d.name)
                    if r >= args.warmup:
                        rounds[d].append((rows[0][2], rows[2][2]))
                    thumb = page.locator('[data-testid="stSlider"]').filter(
                        has_text="λ (allocation range)").get_by_role("slider")
                    for _ in range(STEPS):  # back to λ 0.30
                        thumb.press("ArrowLeft")
                        idle(page)
        finally:
            for app in apps:
                app.stop()
            browser.close()
    for d in dirs:
        drv, inpage = [r[0] for r in rounds[d]], [r[1] for r in rounds[d]]
        print(f"{d}: driver median per round {' '.join(f'{v:.3f}' for v in drv)} → {statistics.median(drv):.3f} s; "
              f"page clock {' '.join(f'{v:.3f}' for v in inpage)} → {statistics.median(inpage):.3f} s")


if __name__ == "__main__":
    main()
