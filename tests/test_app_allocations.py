"""Streamlit AppTest of the 2025 allocations in the app: FARMS α next to α (overview), the pooled FARMS ESD with its
fit (ESD explorer) and the leaderboard of tuned allocations running in the background (Allocation lab) — each
compared with the library's own numbers for the same input."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")
PAGES = {"Model overview": "webapp/overview.py", "ESD explorer": "webapp/esd_explorer.py",
         "Allocation lab": "webapp/allocation_lab.py"}


def no_failure(at) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def metric(at, label: str) -> str:
    hits = [m for m in at.metric if m.label == label]
    assert hits, f"no metric {label!r}; have {[m.label for m in at.metric]}"
    return hits[0].value


def goto(at, view: str):
    at.switch_page(PAGES[view]).run()
    no_failure(at)
    return at


@pytest.fixture(scope="module")
def farms():
    from spectra.analyze import AnalysisSettings, analyze

    return analyze(None, AnalysisSettings(xmin_rule="peak", farms=True), progress=False)


@pytest.fixture()
def app():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=600)
    at.run()
    no_failure(at)
    return at


def test_overview_shows_farms_alpha_next_to_alpha(app, farms):
    goto(app, "Model overview")
    app.checkbox(key="ov_farms").check().run()
    no_failure(app)
    assert metric(app, "median FARMS α") == f"{np.nanmedian(farms['alpha_farms']):.2f}"
    moved = int((farms["alpha_farms"] - farms["alpha"]).abs().gt(1).sum())
    assert metric(app, "matrices whose α moves by > 1") == str(moved)


def test_esd_explorer_shows_the_pooled_esd_and_its_fit(app):
    from spectra.analyze import matrix_farms_esd
    from spectra.hill import fit_power_law

    goto(app, "ESD explorer")
    name = "model.layers.5.self_attn.v_proj"
    app.selectbox(key="esd_matrix").set_value(name).run()
    app.checkbox(key="esd_farms").check().run()
    no_failure(app)
    pooled = matrix_farms_esd(None, name)
    fit = fit_power_law(pooled, "peak")
    assert pooled.size == 10 * 192  # ten 192 × 192 windows of the 192 × 576 weight
    assert metric(app, "FARMS α") == f"{fit.alpha:.4f}"
    assert "esd_farms_fig" in [c.key for c in app.get("plotly_chart")]


def test_leaderboard_runs_in_the_background_and_fills_in(app):
    from pruning.allocation import atp_bound

    goto(app, "Allocation lab")
    app.session_state["pr_seqlen"] = 64
    app.session_state["tu_nsamples"] = 2
    app.multiselect(key="lb_methods").set_value(["uniform", "atp"]).run()
    app.number_input(key="lb_candidates").set_value(2).run()
    app.number_input(key="lb_windows").set_value(1).run()
    app.button(key="lb_run").click().run()
    no_failure(app)
    deadline = time.time() + 900
    table = None
    while time.time() < deadline:
        time.sleep(5)
        app.run()
        no_failure(app)
        tables = [d for d in app.get("arrow_data_frame") if getattr(d, "key", None) == "lb_table"] or \
            [d for d in app.dataframe]
        table = next((t.value for t in tables if "tuned_value" in getattr(t.value, "columns", [])), None)
        if table is not None and len(table) == 2:
            break
    assert table is not None and list(table["label"]) == ["uniform", "ATP"]
    atp = table.iloc[1]
    assert atp["tuned_value"] == pytest.approx(0.0, abs=1e-9) or \
        atp["tuned_value"] == pytest.approx(atp_bound(0.6, 30), abs=1e-6)
    # ATP's β = 0 candidate is uniform, so its tuned held-out perplexity is at most uniform's
    assert atp["heldout_ppl_one_shot"] <= table.iloc[0]["heldout_ppl_one_shot"] + 1e-9
