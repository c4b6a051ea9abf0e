"""The Allocation lab page: allocations, flagged fits, export, the λ search."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from app_helpers import S_DEFAULT, figure, goto, no_failure, trace


def test_allocation_lab_follows_lambda_mapping_granularity(app, analysis):
    from pruning.allocation import allocate
    from pruning.plots import block_sparsity

    metrics = analysis.drop(columns="evals")
    goto(app, "Allocation lab")
    fig = figure(app, "al_chart")
    np.testing.assert_allclose(trace(fig, "AlphaPruning")["y"],
                               100 * block_sparsity(allocate(metrics, "alphapruning", S_DEFAULT, lam=0.3)).to_numpy())
    np.testing.assert_allclose(trace(fig, "uniform")["y"], np.full(30, 100 * S_DEFAULT))
    erk = allocate(metrics, "erk", S_DEFAULT)
    np.testing.assert_allclose(trace(fig, "ERK")["y"], 100 * block_sparsity(erk).to_numpy())

    app.slider(key="al_lam").set_value(0.5).run()
    no_failure(app)
    moved = trace(figure(app, "al_chart"), "AlphaPruning")["y"]
    expect = allocate(metrics, "alphapruning", S_DEFAULT, lam=0.5)
    np.testing.assert_allclose(moved, 100 * block_sparsity(expect).to_numpy())
    assert not np.allclose(moved, trace(fig, "AlphaPruning")["y"])
    # the summary table: min / max / parameter-weighted mean of that allocation
    summary = [d.value for d in app.dataframe if "weighted_mean" in d.value.columns][0]
    ap = summary[summary["allocation"] == "AlphaPruning"].iloc[0]
    assert ap["min"] == pytest.approx(expect["sparsity"].min())
    assert ap["max"] == pytest.approx(expect["sparsity"].max())
    p = expect["num_params"].to_numpy(float)
    assert ap["weighted_mean"] == pytest.approx(float(expect["sparsity"] @ p / p.sum()), abs=1e-12)
    assert ap["weighted_mean"] == pytest.approx(S_DEFAULT, abs=1e-9)

    # log mapping, matrix granularity, per-matrix plot, another target
    app.radio(key="al_mapping").set_value("log").run()
    app.radio(key="al_gran").set_value("matrix").run()
    app.radio(key="al_by").set_value("matrix").run()
    app.slider(key="al_S").set_value(0.7).run()
    no_failure(app)
    expect = allocate(metrics, "alphapruning", 0.7, lam=0.5, mapping="log", granularity="matrix")
    np.testing.assert_allclose(trace(figure(app, "al_chart"), "AlphaPruning")["y"], 100 * expect["sparsity"].to_numpy())
    sr = allocate(metrics, "stable_rank", 0.7, lam=0.5, mapping="log", granularity="matrix")
    np.testing.assert_allclose(trace(figure(app, "al_chart"), "stable rank")["y"], 100 * sr["sparsity"].to_numpy())


def test_allocation_lab_warns_about_flagged_fits_and_can_leave_them_out(app, analysis):
    """The blocks whose mean α includes α > 8 fits are named; the option leaves them out (library
    allocate(..., exclude_flagged=True)) and the next AlphaPruning prune uses that allocation."""
    from pruning.allocation import allocate
    from pruning.plots import block_sparsity
    from spectra.analyze import spurious_blocks

    metrics = analysis.drop(columns="evals")
    goto(app, "Allocation lab")
    sb = spurious_blocks(metrics)
    assert 10 in sb["block"].tolist()  # v_proj α = 18.3 on the built-in model
    warning = [w.value for w in app.warning if "likely spurious" in w.value]
    assert len(warning) == 1 and "block 10 (v_proj α=18.3, up_proj α=10.3" in warning[0]
    assert all(f"block {b} (" in warning[0] for b in sb["block"])
    assert warning[0].index("block 10 (") < warning[0].index("block 9 (")  # largest shift of the mean first
    app.checkbox(key="al_exclude_flagged").check().run()
    no_failure(app)
    assert not [w.value for w in app.warning if "likely spurious" in w.value]
    assert any("Left out of AlphaPruning's block means" in i.value for i in app.info)
    expect = allocate(metrics, "alphapruning", S_DEFAULT, lam=0.3, exclude_flagged=True)
    np.testing.assert_allclose(trace(figure(app, "al_chart"), "AlphaPruning")["y"],
                               100 * block_sparsity(expect).to_numpy())
    assert block_sparsity(expect).loc[10] < block_sparsity(allocate(metrics, "alphapruning", S_DEFAULT)).loc[10]
    # Prune & evaluate (magnitude: no calibration) prunes with that allocation
    goto(app, "Prune & evaluate")
    assert any("leaves the fits flagged" in c.value for c in app.caption)
    app.selectbox(key="pr_pruner").set_value("magnitude").run()
    app.number_input(key="pr_seqlen").set_value(64).run()
    app.number_input(key="pr_windows").set_value(1).run()
    app.button(key="pr_run").click().run()
    no_failure(app)
    run = app.session_state["runs"][-1]
    assert run["allocation"] == "alphapruning" and run["exclude_flagged"] is True
    targets = dict(zip(run["_records"]["longname"], run["_records"]["target"]))
    np.testing.assert_allclose([targets[n] for n in expect["longname"]], expect["sparsity"], rtol=0, atol=1e-15)


def test_allocation_lab_impossible_bounds_is_an_error_not_a_traceback(app):
    goto(app, "Allocation lab")
    app.slider(key="al_max").set_value(0.5).run()  # target 0.6 > every matrix's cap 0.5
    assert not app.exception
    messages = [e.value for e in app.error]
    assert messages and all("cannot be met" in m or "outside" in m for m in messages), messages
    assert any(m.startswith("uniform:") for m in messages)


def test_lambda_slider_greyed_out_when_no_method_reads_it(app):
    goto(app, "Allocation lab")
    # the methods picker has a row of its own (in a quarter-width column its chips hid ERK and stable rank)
    assert app.multiselect(key="al_methods") is not None
    assert not [c for c in app.main.columns if any(m.key == "al_methods" for m in c.multiselect)]
    assert not app.slider(key="al_lam").proto.disabled
    app.multiselect(key="al_methods").set_value(["uniform", "erk"]).run()
    no_failure(app)
    assert app.slider(key="al_lam").proto.disabled


def test_block_sparsity_is_the_parameter_weighted_block_mean():
    from pruning import plots as pplots

    alloc = pd.DataFrame({"longname": list("abcd"), "block": [0, 0, 1, 1], "num_params": [1, 3, 2, 2],
                          "sparsity": [0.2, 0.6, 0.5, 0.7]})
    np.testing.assert_allclose(pplots.block_sparsity(alloc).to_numpy(), [(0.2 + 1.8) / 4, 0.6])
    assert pplots.weighted_mean_sparsity(alloc) == pytest.approx((0.2 + 1.8 + 1.0 + 1.4) / 8)


def test_export_heading_names_the_cli_flag(app):
    goto(app, "Allocation lab")
    heads = [h.value for h in app.markdown if "Export" in h.value]
    assert heads == ["**Export (the format `python -m pruning prune --allocation-file FILE` reads)**"], heads


def test_panels_below_the_curves_are_drawn_only_while_open(app):
    """The λ-effect chart, the λ search and the leaderboard sit in expanders that track their state: closed (the
    default), their chart and widgets are not sent, so a λ step does not redraw them in the browser; opened, they are
    there, and they stay open across a page switch."""
    from webapp.allocation_lab import PANELS

    def shown():
        return {b.key for b in app.button} | {c.key for c in app.get("plotly_chart")}

    goto(app, "Allocation lab")
    assert [e.label for e in app.expander if e.label in PANELS.values()] == list(PANELS.values())
    assert not {"al_lam_fig", "tu_run", "lb_run"} & shown()
    app.session_state["al_tune_open"] = True
    app.session_state["al_lam_open"] = True
    app.run()
    assert {"al_lam_fig", "tu_run"} <= shown() and "lb_run" not in shown()
    lam = figure(app, "al_lam_fig")
    assert [t["name"] for t in lam["data"]] == ["max sparsity", "min sparsity", "weighted mean"]
    goto(app, "Model overview")
    goto(app, "Allocation lab")
    assert {"al_lam_fig", "tu_run"} <= shown()


def test_lambda_search_panel_fills_in_and_sends_the_chosen_lambda(app, tmp_path, monkeypatch):
    """The λ → perplexity panel runs pruning.tune (one-shot, held-out C4), draws every scored λ,
    uniform as a reference line, marks the chosen λ, and its button sets λ in Prune & evaluate."""
    monkeypatch.setenv("SPL_CACHE_DIR", str(tmp_path))  # a fresh statistics cache
    goto(app, "Prune & evaluate")
    app.number_input(key="pr_seqlen").set_value(64).run()
    app.session_state["al_tune_open"] = True  # the λ search's expander opened
    goto(app, "Allocation lab")
    app.text_input(key="tu_lams").input("0,0.45").run()
    app.number_input(key="tu_nsamples").set_value(2).run()
    app.number_input(key="tu_windows").set_value(1).run()
    app.button(key="tu_run").click().run()
    no_failure(app)
    res = app.session_state["tune_result"]
    assert [r["lam"] for r in res["rows"]] == [0.0, 0.45] and res["settings"]["eval_dataset"] == "c4"
    fig = figure(app, "tu_fig")
    np.testing.assert_allclose(trace(fig, "held-out perplexity")["y"], [r["ppl"] for r in res["rows"]])
    best = res["best"]["lam"]
    assert trace(fig, f"chosen λ = {best:g}")["y"][0] == min(r["ppl"] for r in res["rows"])
    assert any(sh.get("y0") == res["uniform"]["ppl"] for sh in fig["layout"]["shapes"])
    app.button(key="tu_send").click().run()
    goto(app, "Prune & evaluate")
    assert app.slider(key="pr_lam").value == pytest.approx(best)
    assert app.selectbox(key="pr_alloc").value == "alphapruning"


def test_owl_lamp_global_curves_equal_the_library(app, analysis, builtin, tmp_path, monkeypatch):
    """Adding OWL, LAMP and global magnitude draws the library's allocations: OWL from the dense input norms on
    Prune & evaluate's calibration windows (here 2 × 64 tokens; computed once, then read from the on-disk statistics),
    LAMP and global from every weight (global's threshold found without sorting)."""
    from pruning.allocation import allocate, owl_outlier_ratios
    from pruning.block_loop import collect_input_norms
    from pruning.evaluation.data import get_calibration
    from pruning.labels import ALLOCATION_LABELS
    from pruning.plots import block_sparsity
    from spectra.weights import iter_model_weights
    from webapp import cache

    monkeypatch.setenv("SPL_CACHE_DIR", str(tmp_path))  # a fresh statistics cache
    goto(app, "Prune & evaluate")
    app.number_input(key="pr_nsamples").set_value(2).run()
    app.number_input(key="pr_seqlen").set_value(64).run()
    goto(app, "Allocation lab")
    app.multiselect(key="al_methods").set_value(["uniform", "owl", "lamp", "global"]).run()
    no_failure(app)
    fig = figure(app, "al_chart")
    metrics = analysis.drop(columns="evals")
    weights = {info.longname: w for info, w in iter_model_weights(builtin.model)}
    norms = collect_input_norms(builtin.model, get_calibration(builtin.tokenizer, nsamples=2, seqlen=64,
                                                                seed=cache.CALIB_SEED))
    owl = allocate(metrics, "owl", S_DEFAULT, outlier_ratios=owl_outlier_ratios(weights, norms))
    for method, want in [("owl", owl), ("lamp", allocate(metrics, "lamp", S_DEFAULT, weights=weights)),
                         ("global", allocate(metrics, "global", S_DEFAULT, weights=weights))]:
        np.testing.assert_allclose(trace(fig, ALLOCATION_LABELS[method])["y"], 100 * block_sparsity(want).to_numpy(),
                                   rtol=1e-12, atol=0)
    assert len(list((tmp_path / "calib_stats").glob("*.safetensors"))) == 1
