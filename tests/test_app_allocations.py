"""Streamlit AppTest of the 2025 allocations in the app: FARMS α next to α (overview), the pooled FARMS ESD with its
fit (ESD explorer) and the leaderboard of tuned allocations running in the background (Allocation lab) — each
compared with the library's own numbers for the same input."""
from __future__ import annotations

import time

import numpy as np
import pytest
from app_helpers import APP, goto, metric, no_failure, open_local


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


def test_leaderboard_runs_in_the_background_and_fills_in(app, tiny_dir):
    """On the 2-block random Llama opened from the sidebar: the background job, the rows filling in and ATP's
    β = 0 candidate being uniform do not depend on the weights, and the tuning takes a second, not a minute."""
    from pruning.allocation import atp_bound

    open_local(app, tiny_dir)
    app.session_state["al_lb_open"] = True  # the leaderboard's expander opened
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
        time.sleep(2)
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
        atp["tuned_value"] == pytest.approx(atp_bound(0.6, 2), abs=1e-6)
    # ATP's β = 0 candidate is uniform, so its tuned held-out perplexity is at most uniform's
    assert atp["heldout_ppl_one_shot"] <= table.iloc[0]["heldout_ppl_one_shot"] + 1e-9


def _lb_options(at) -> list:
    return list(at.multiselect(key="lb_methods").options)


def test_leaderboard_offers_the_measured_allocation_only_with_a_table_of_this_model(app, tiny_dir, tmp_path):
    """Without a measured table the leaderboard has no ``sensitivity`` (a caption says how to get one); a table of
    another model opened on *Which blocks matter* leaves it out too; one of this model adds it (all three on the
    built-in model, whose name tells the two models apart), and its row is :func:`pruning.tune.tune` of that table
    (on the 2-block random Llama opened from the sidebar with a table of its own: the tuning takes a second)."""
    import pandas as pd

    from pruning.labels import ALLOCATION_LABELS
    from pruning.sensitivity_table import write_table
    from pruning.settings import CalibrationSettings
    from pruning.tune import TuneSettings, tune
    from spectra.models import load_model

    def open_table(name: str, model: str, blocks: int):
        rng = np.random.default_rng(blocks)
        df = pd.DataFrame({"unit": [f"block {b}" for b in range(blocks)], "block": range(blocks),
                           "longname": [""] * blocks, "delta_nll": rng.random(blocks), "depth": range(blocks)})
        path = write_table(df, tmp_path / name, {"label": "test", "reference_ppl": 10.0, "permutations": 500,
                                                 "seed": 1, "model": model})
        app.switch_page("webapp/sensitivity.py").run()
        app.text_input(key="se_path").input(str(path)).run()
        app.button(key="se_open").click().run()
        no_failure(app)
        goto(app, "Allocation lab")
        return path

    app.session_state["al_lb_open"] = True  # the leaderboard's expander opened
    goto(app, "Allocation lab")
    label = ALLOCATION_LABELS["sensitivity"]
    assert "sensitivity" not in _lb_options(app) and label not in _lb_options(app)
    assert any("not offered" in c.value and "Which blocks matter" in c.value for c in app.caption)
    open_table("gemma.parquet", "builtin:gemma3", 18)
    assert label not in _lb_options(app)
    assert any("measured on builtin:gemma3, not on this model" in c.value for c in app.caption)
    open_table("mine.parquet", "builtin:smollm2", 30)
    assert label in _lb_options(app)
    open_local(app, tiny_dir)
    path = open_table("tiny.parquet", str(tiny_dir), 2)
    assert label in _lb_options(app)
    app.session_state["pr_seqlen"] = 64
    app.session_state["tu_nsamples"] = 2
    app.multiselect(key="lb_methods").set_value(["sensitivity"]).run()
    app.number_input(key="lb_candidates").set_value(2).run()
    app.number_input(key="lb_windows").set_value(1).run()
    app.button(key="lb_run").click().run()
    no_failure(app)
    deadline, table = time.time() + 900, None
    while time.time() < deadline and table is None:
        time.sleep(2)
        app.run()
        no_failure(app)
        found = [d.value for d in app.dataframe if "tuned_value" in getattr(d.value, "columns", [])]
        table = found[0] if found and len(found[0]) == 1 else None
    assert table is not None and list(table["label"]) == [label]
    settings = TuneSettings(allocation="sensitivity", sparsity=0.6, candidates=2, eval_windows=1,
                            calib=CalibrationSettings(nsamples=2, seqlen=64), sensitivity_table=str(path))
    want = tune(load_model(str(tiny_dir)), settings, None, log=lambda m: None)
    assert table.iloc[0]["tuned_value"] == want["best"]["lam"]
    assert table.iloc[0]["heldout_ppl_one_shot"] == pytest.approx(want["best"]["ppl"], rel=1e-9)
