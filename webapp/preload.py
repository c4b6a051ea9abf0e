"""The app's heavy imports (torch, pandas, plotly, transformers' names, the library and the pages' modules) in a
background thread as the server starts, so that the first page opened does not wait for them.

``make app`` starts the server with ``python -m webapp.launch`` (which calls :func:`start`); app.py calls
:func:`wait` before its own imports, so that no module is imported by two threads at once. Under a plain
``streamlit run app.py`` nothing was started and :func:`wait` returns at once. Measured with
``python bench/bench_app_views.py --cold`` (bench/RESULTS_app_views.md): the first script run spent 8 s importing
these while the browser loaded the page on the other core.
"""
from __future__ import annotations

import os
import threading

# torch's OpenMP threads wait for each other by spinning: when another process holds one of the cores (the browser
# drawing this page, a benchmark) every parallel region then stalls. Measured with 2 threads on 2 busy cores: a
# 2 × 256-token evaluation of the built-in model 15.7 s instead of 1.6 s, a small Wanda + AlphaPruning run 29.8 s
# instead of 14.7 s. Passive waiting is read when torch loads: set here, in the first module both the launcher and
# app.py import, before either (or the imports begun below) loads torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

_STARTED = threading.Event()
_DONE = threading.Event()


def _import_all() -> None:
    try:
        import plotly.graph_objects  # noqa: F401

        import webapp.figures  # noqa: F401  (the library's plots, spectra and pruning with torch and pandas)
        import webapp.state  # noqa: F401  (webapp.cache and the allocations)
        from webapp.imports import import_transformers

        import_transformers()
    finally:  # a failed import is the page's to report, when it imports the module itself
        _DONE.set()


def start() -> threading.Thread:
    """Start the imports in a daemon thread (``webapp.launch`` calls it once, before the server starts)."""
    _STARTED.set()
    thread = threading.Thread(target=_import_all, name="spl-preload", daemon=True)
    thread.start()
    return thread


def wait(timeout_s: float = 300.0) -> None:
    """Wait until the imports :func:`start` began are done (at once when none was started)."""
    if _STARTED.is_set():
        _DONE.wait(timeout_s)
