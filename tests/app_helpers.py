"""Shared helpers of the app tests (tests/test_app_*.py, one file per page): reading figures and metrics of a
streamlit AppTest, switching pages by their title (the page files come from ``webapp.state.VIEW_PAGES``, the table
app.py builds its navigation from) and running a prune from Prune & evaluate. The ``app`` and ``analysis`` fixtures
live in tests/conftest.py."""
from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np

from webapp.state import VIEW_PAGES

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")
S_DEFAULT = 0.6


def _decode(v):
    """plotly.py ≥ 6 sends numpy arrays as {"dtype", "bdata"(, "shape")}; return a plain numpy array / value."""
    if isinstance(v, dict) and "bdata" in v:
        arr = np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]))
        if "shape" in v:
            arr = arr.reshape([int(n) for n in str(v["shape"]).split(",")])
        return arr
    return np.asarray(v) if isinstance(v, list) else v


def figure(at, key: str) -> dict:
    """The plotly figure (as a dict) of the chart with this key in the last run."""
    charts = [c for c in at.get("plotly_chart") if c.key == key]
    assert charts, f"no chart with key {key!r}; keys: {[c.key for c in at.get('plotly_chart')]}"
    return json.loads(charts[0].proto.spec)


def trace(fig: dict, name: str) -> dict:
    for t in fig["data"]:
        if t.get("name") == name:
            return {k: _decode(v) for k, v in t.items()}
    raise AssertionError(f"no trace {name!r} in {[t.get('name') for t in fig['data']]}")


def metric(at, label: str) -> str:
    hits = [m for m in at.metric if m.label == label]
    assert hits, f"no metric {label!r}; have {[m.label for m in at.metric]}"
    return hits[0].value


def no_failure(at) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]



def open_local(at, path) -> None:
    """Open the local HF directory ``path`` from the sidebar of the AppTest ``at``, as a user does (source kind
    *Local directory*, the path, *Load*); no error, and it is the committed source."""
    at.sidebar.selectbox(key="source_kind").set_value("Local directory").run()
    at.sidebar.text_input(key="source_text").input(str(path)).run()
    at.sidebar.button(key="load_btn").click().run()
    no_failure(at)
    assert at.session_state["source"] == str(path)


def goto(at, view: str):
    """Switch the AppTest ``at`` to the page titled ``view`` (its file from ``webapp.state.VIEW_PAGES``)."""
    at.switch_page(VIEW_PAGES[view]).run()
    no_failure(at)
    assert at.session_state["view"] == view
    return at


def prune_in_app(at, selects: dict, numbers: dict):
    """In Prune & evaluate: set the select boxes / sliders ``selects`` and the number inputs ``numbers`` (in order),
    click *Prune and evaluate*, check nothing failed and return the run it recorded."""
    goto(at, "Prune & evaluate")
    for key, value in selects.items():
        (at.slider if key == "pr_S" else at.selectbox)(key=key).set_value(value).run()
    for key, value in numbers.items():
        at.number_input(key=key).set_value(value).run()
    at.button(key="pr_run").click().run()
    no_failure(at)
    return at.session_state["runs"][-1]


def compute_for_layer(app, prefix: str, name: str) -> None:
    """Prune & evaluate with 2 × 64 calibration tokens: pick ``name`` in the ``{prefix}`` expander, press its button."""
    goto(app, "Prune & evaluate")
    app.number_input(key="pr_nsamples").set_value(2).run()
    app.number_input(key="pr_seqlen").set_value(64).run()
    app.selectbox(key=f"{prefix}_layer").set_value(name).run()
    app.button(key=f"{prefix}_btn").click().run()
    no_failure(app)


def ks_axis_problems(fig: dict) -> list[str]:
    """What of a KS figure (as a dict) lies outside the decades of its candidates: the x range (log10 units), the
    annotations (log10 units on a log axis) and every trace's x values."""
    cand = np.asarray(trace(fig, "KS distance D")["x"], dtype=float)
    lo, hi = np.log10(cand.min()), np.log10(cand.max())
    out = []
    rng = fig["layout"].get("xaxis", {}).get("range")
    if rng is None or not (lo - 0.5 <= rng[0] <= lo and hi <= rng[1] <= hi + 0.5):
        out.append(f"x range {rng} is not the candidates' decades [{lo:.2f}, {hi:.2f}] (± 0.5)")
    for a in fig["layout"].get("annotations", []):
        if a.get("xref", "x") == "x" and not (lo - 0.5 <= float(a["x"]) <= hi + 0.5):
            out.append(f"annotation {a.get('text')!r} at log10 x = {a['x']}")
    for t in fig["data"]:
        x = np.asarray(_decode(t.get("x")), dtype=float)
        if x.size and not (np.log10(x.min()) >= lo - 0.5 and np.log10(x.max()) <= hi + 0.5):
            out.append(f"trace {t.get('name')!r} reaches x = {x.min():.4g}…{x.max():.4g}")
    return out


def protocol(run: dict) -> str:
    """The evaluation-protocol part of a session run's trade-off series name (`` + wikitext2 2×64``)."""
    return f" + {run['eval_dataset']} {run['max_windows']}×{run['eval_seqlen']}"
