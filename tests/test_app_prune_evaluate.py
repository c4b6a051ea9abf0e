"""The Prune & evaluate page: runs, patterns, masked GD, trade-off plots, layer sections."""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from app_helpers import compute_for_layer, figure, goto, metric, no_failure, open_local, protocol, prune_in_app, trace


# ------------------------------------------------------------------------------------------------- prune & evaluate
def test_prune_and_evaluate_small_run(app, analysis, builtin):
    from pruning.evaluation.perplexity import perplexity
    from pruning.prune import prune_model
    from pruning.settings import PruneSettings

    run = prune_in_app(app, {"pr_pruner": "magnitude", "pr_alloc": "alphapruning", "pr_S": 0.5},
                       {"pr_seqlen": 64, "pr_windows": 2})
    assert run["pruner"] == "magnitude" and run["allocation"] == "alphapruning" and run["sparsity"] == 0.5

    lm = builtin
    dense = perplexity(lm.model, lm.tokenizer, "wikitext2", seqlen=64, max_windows=2, progress=False).ppl
    model = copy.deepcopy(lm.model)
    settings = PruneSettings.from_flat(pruner="magnitude", allocation="alphapruning", sparsity=0.5, lam=0.3)
    res = prune_model(model, lm.tokenizer, settings, progress=False,
                      metrics=analysis.drop(columns="evals"))
    pruned = perplexity(model, lm.tokenizer, "wikitext2", seqlen=64, max_windows=2, progress=False).ppl
    assert run["dense_ppl"] == pytest.approx(dense, rel=1e-6)
    assert run["ppl"] == pytest.approx(pruned, rel=1e-6)
    assert run["achieved_sparsity"] == pytest.approx(res.achieved_sparsity, abs=1e-9)
    assert metric(app, "dense perplexity") == f"{dense:.2f}"
    assert metric(app, "pruned perplexity") == f"{pruned:.2f}"
    assert metric(app, "achieved sparsity") == f"{res.achieved_sparsity:.2%}"
    # per-matrix target = the allocation, achieved = exact zeros in the pruned weights
    fig = figure(app, "pr_achieved")
    np.testing.assert_allclose(trace(fig, "target (allocation)")["y"], 100 * res.layers["target"].to_numpy())
    np.testing.assert_allclose(trace(fig, "achieved (exact zeros)")["y"], 100 * res.layers["achieved"].to_numpy())
    # the trade-off plot holds this run
    t = trace(figure(app, "pr_tradeoff"), "AlphaPruning + magnitude" + protocol(run))  # + the evaluation protocol
    np.testing.assert_allclose(t["x"], [50.0])
    np.testing.assert_allclose(t["y"], [pruned], rtol=1e-9)

    # the pruned weights are offered to the ESD explorer's before/after comparison
    goto(app, "ESD explorer")
    app.radio(key="esd_compare").set_value("this matrix after pruning").run()
    no_failure(app)
    assert any("From the last Prune & evaluate run" in c.value for c in app.caption)
    from spectra.esd import esd
    from spectra.hill import fit_power_law

    name = app.selectbox(key="esd_matrix").value
    W = dict(model.named_modules())[name].weight.detach()
    alphas = [float(m.value) for m in app.metric if m.label == "α"]
    assert alphas[1] == pytest.approx(fit_power_law(esd(W), "peak").alpha, abs=5e-5)
    overlay = figure(app, "esd_overlay")
    names = [str(t.get("name")) for t in overlay["data"]]
    n_dense = int((analysis.set_index("longname").loc[name, "evals"] > 0).sum())
    assert f"dense: ESD ({n_dense} eigenvalues)" in names
    assert any(n.startswith("after magnitude + AlphaPruning 50%: power law") for n in names)


def test_prune_reports_every_phase_caches_dense_and_process_memory(app, monkeypatch):
    """A message for every phase (dense perplexity, calibration, allocation, each block, each
    evaluation window); the dense perplexity is computed once per (model, dataset, seqlen, windows); the peak
    memory shown is the whole process's (ru_maxrss), not only the prune phase's."""
    import os

    import pruning.evaluation.perplexity as P
    from pruning.report import process_peak_rss_mb

    assert os.environ.get("OMP_WAIT_POLICY") == "PASSIVE"  # set by the app before torch loads (webapp/preload.py)
    calls = []
    real = P.perplexity
    monkeypatch.setattr(P, "perplexity", lambda *a, **k: calls.append(k.get("max_windows")) or real(*a, **k))
    run = prune_in_app(app, {"pr_pruner": "wanda"}, {"pr_nsamples": 2, "pr_seqlen": 64, "pr_windows": 3})
    phases = run["_phases"]
    assert phases[0].startswith("dense perplexity (wikitext2, 3 windows of 64 tokens")
    assert any(m.startswith("calibration windows (2 × 64 tokens of c4)") for m in phases)
    assert any(m.startswith("allocation (AlphaPruning)") for m in phases)
    blocks = {int(m.split(":")[0].split()[1]) for m in phases if m.startswith("block ")}
    assert blocks == set(range(30))
    assert [m for m in phases if m.startswith("evaluation (wikitext2): window")] == \
        [f"evaluation (wikitext2): window {k}/3" for k in (1, 2, 3)]
    # the sampled prune-phase RSS and ru_maxrss count pages slightly differently: 1 MB slack
    assert run["peak_rss_mb"] <= run["process_peak_rss_mb"] + 1.0  # (the process peak is rounded to 0.1 MB)
    assert run["process_peak_rss_mb"] <= process_peak_rss_mb() + 0.05
    assert metric(app, "peak memory (whole process)") == f"{run['process_peak_rss_mb'] / 1024:.2f} GB"
    # a second run: the dense perplexity comes from the cache, only the pruned model is evaluated
    n_first = len(calls)
    assert n_first in (1, 2)  # 2 unless an earlier test of this process cached the dense value
    first_file = Path(app.session_state["pruned"]["path"])
    app.selectbox(key="pr_alloc").set_value("uniform").run()
    app.button(key="pr_run").click().run()
    no_failure(app)
    assert len(calls) == n_first + 1 and app.session_state["runs"][-1]["dense_ppl"] == run["dense_ppl"]
    # the pruned model kept for the ESD explorer is a bounded scratch file that the next run replaces (it once went
    # to /tmp and stayed there: 131 files of 406 MB filled the disk)
    from spectra.config import cache_dir
    from webapp.state import PRUNED_KEEP

    second_file = Path(app.session_state["pruned"]["path"])
    assert not first_file.exists() and second_file.is_file() and second_file != first_file
    assert second_file.parent == cache_dir("scratch/pruned") and len(list(second_file.parent.iterdir())) <= PRUNED_KEEP


def test_prune_4_8_magnitude_pattern(app, builtin):
    """An N:M pattern from the app (fast: magnitude needs no calibration): uniform, recorded, the library's run."""
    from pruning.evaluation.perplexity import perplexity
    from pruning.prune import prune_model
    from pruning.settings import PruneSettings

    run = prune_in_app(app, {"pr_pruner": "magnitude", "pr_pattern": "4:8"}, {"pr_seqlen": 64, "pr_windows": 2})
    assert (run["label"], run["pattern"], run["gd_steps"], run["allocation"], run["sparsity"]) == \
        ("magnitude 4:8", "4:8", 0, "uniform", 0.5)
    lm = builtin
    model = copy.deepcopy(lm.model)
    res = prune_model(model, lm.tokenizer, PruneSettings.from_flat(pruner="magnitude", allocation="uniform", nm="4:8"),
                      progress=False)
    pruned = perplexity(model, lm.tokenizer, "wikitext2", seqlen=64, max_windows=2, progress=False).ppl
    assert run["ppl"] == pytest.approx(pruned, rel=1e-6)
    assert run["achieved_sparsity"] == pytest.approx(res.achieved_sparsity, abs=1e-12)
    np.testing.assert_allclose(trace(figure(app, "pr_tradeoff"), "uniform + magnitude 4:8" + protocol(run))["y"],
                               [pruned], rtol=1e-6)


def test_prune_2_4_sparsegpt_with_masked_gd(app, tiny_dir):
    """A 2:4 pattern + masked GD from the app: recorded in the run, labelled, equal to the library's run. On the
    2-block random Llama opened from the sidebar (every step of the path is the built-in model's; the library's own
    2:4 + GD tests run on real layers), so that two SparseGPT + GD prunes cost seconds, not minutes."""
    from safetensors import safe_open

    from pruning.evaluation.perplexity import perplexity
    from pruning.prune import prune_model
    from pruning.pruners.masks import is_nm
    from pruning.settings import PruneSettings
    from spectra.models import load_model

    open_local(app, tiny_dir)
    goto(app, "Prune & evaluate")
    app.selectbox(key="pr_pruner").set_value("sparsegpt").run()
    app.selectbox(key="pr_pattern").set_value("2:4").run()
    no_failure(app)
    # the pattern fixes allocation (uniform) and sparsity (50 %): those inputs are greyed out and say so
    assert app.selectbox(key="pr_alloc").proto.disabled and app.slider(key="pr_S").proto.disabled
    assert app.slider(key="pr_lam").proto.disabled and app.session_state["pr_alloc"] == "alphapruning"
    assert any("Pattern 2:4" in c.value and "uniform" in c.value for c in app.caption)
    app.number_input(key="pr_nsamples").set_value(4).run()
    app.number_input(key="pr_seqlen").set_value(64).run()
    app.number_input(key="pr_windows").set_value(2).run()
    app.number_input(key="pr_gd_steps").set_value(2).run()
    app.button(key="pr_run").click().run()
    no_failure(app)
    run = app.session_state["runs"][-1]
    assert (run["pruner"], run["pattern"], run["gd_steps"], run["gd_precondition"]) == ("sparsegpt", "2:4", 2, True)
    assert run["label"] == "sparsegpt 2:4 +GD2" and run["allocation"] == "uniform" and run["sparsity"] == 0.5
    table = [d.value for d in app.dataframe if "label" in d.value.columns][0]
    assert table.iloc[-1][["label", "pattern", "gd_steps"]].tolist() == ["sparsegpt 2:4 +GD2", "2:4", 2]
    # its own curve in the trade-off plot
    t = trace(figure(app, "pr_tradeoff"), "uniform + SparseGPT 2:4 +GD2" + protocol(run))
    np.testing.assert_allclose(t["x"], [50.0])

    lm = load_model(str(tiny_dir))
    model = lm.model
    res = prune_model(model, lm.tokenizer, PruneSettings.from_flat(pruner="sparsegpt", allocation="uniform", nm="2:4",
                                                         gd_steps=2, nsamples=4, seqlen=64), progress=False)
    pruned = perplexity(model, lm.tokenizer, "wikitext2", seqlen=64, max_windows=2, progress=False).ppl
    assert run["ppl"] == pytest.approx(pruned, rel=1e-6)
    np.testing.assert_allclose(t["y"], [run["ppl"]], rtol=1e-12)
    assert run["achieved_sparsity"] == pytest.approx(res.achieved_sparsity, abs=1e-12)
    # masked GD moved the kept weights: without it the same prune gives other weights (the count is passed on)
    plain = load_model(str(tiny_dir)).model
    prune_model(plain, lm.tokenizer, PruneSettings.from_flat(pruner="sparsegpt", allocation="uniform", nm="2:4",
                                                    nsamples=4, seqlen=64), progress=False)
    # every matrix the app pruned is 2:4 and equals the library's weights; the achieved sparsity is 1/2
    assert run["achieved_sparsity"] == pytest.approx(0.5, abs=1e-6) and run["achieved_sparsity"] >= 0.5
    mine = dict(model.named_modules())
    others = dict(plain.named_modules())
    with safe_open(app.session_state["pruned"]["path"], framework="pt") as fh:
        names = [n for n in fh.keys() if ".layers." in n and len(fh.get_slice(n).get_shape()) == 2]
        assert len(names) == 14 and all(is_nm(fh.get_tensor(n), 2, 4) for n in names)
        for n in names:
            torch.testing.assert_close(fh.get_tensor(n), mine[n].weight.detach(), rtol=0, atol=0)
        assert any(not torch.equal(fh.get_tensor(n), others[n].weight.detach()) for n in names)
    assert app.session_state["pruned"]["label"] == "sparsegpt 2:4 +GD2 + uniform 50%"


def test_prox24_needs_the_2_4_pattern(app):
    goto(app, "Prune & evaluate")
    app.selectbox(key="pr_pruner").set_value("prox24").run()  # pattern still unstructured
    assert not app.exception
    msgs = [e.value for e in app.error]
    assert len(msgs) == 1 and "\n" not in msgs[0], msgs
    assert msgs[0].startswith("prox24 produces 2:4 sparsity only: set pattern to 2:4"), msgs
    assert app.button(key="pr_run").proto.disabled and not app.session_state["runs"]
    app.selectbox(key="pr_pattern").set_value("4:8").run()
    assert not app.exception and "set pattern to 2:4" in app.error[0].value
    app.selectbox(key="pr_pattern").set_value("2:4").run()
    no_failure(app)
    assert not app.button(key="pr_run").proto.disabled
    # an N:M-capable pruner runs with any pattern
    app.selectbox(key="pr_pruner").set_value("wanda").run()
    app.selectbox(key="pr_pattern").set_value("4:8").run()
    no_failure(app)
    assert not app.button(key="pr_run").proto.disabled


def test_sweep_table_tradeoff_and_lambda_effect(app, tmp_path):
    # the layout of `python -m pruning sweep` (pruning.sweep): a dense row, pruned rows, N:M rows
    rows = [{"kind": "dense", "allocation": "none", "pruner": "dense", "sparsity": 0.0, "nm": "", "lam": np.nan,
             "ppl": 20.0}]
    rows.append({"kind": "pruned", "allocation": "uniform", "pruner": "wanda", "sparsity": 0.5, "nm": "2:4",
                 "lam": np.nan, "ppl": 200.0})
    for pruner, base in (("wanda", 30.0), ("sparsegpt", 25.0)):
        for S in (0.5, 0.7):
            rows.append({"kind": "pruned", "allocation": "uniform", "pruner": pruner, "sparsity": S, "nm": "",
                         "lam": np.nan, "ppl": base * (1 + 4 * S)})
            for lam in (0.1, 0.2, 0.3):
                rows.append({"kind": "pruned", "allocation": "alphapruning", "pruner": pruner, "sparsity": S,
                             "nm": "", "lam": lam, "ppl": base * (1 + 4 * S) - 10 * lam})
    path = tmp_path / "sweep.parquet"
    pd.DataFrame(rows).to_parquet(path)
    goto(app, "Prune & evaluate")
    app.text_input(key="pr_sweep_path").input(str(path)).run()
    no_failure(app)
    fig = figure(app, "pr_tradeoff")
    t = trace(fig, "uniform + Wanda")
    np.testing.assert_allclose(t["x"], [50.0, 70.0])
    np.testing.assert_allclose(t["y"], [90.0, 114.0])
    np.testing.assert_allclose(trace(fig, "uniform + Wanda 2:4")["y"], [200.0])  # N:M is its own curve
    t = trace(fig, "AlphaPruning λ=0.2 + SparseGPT")  # several λ: one curve per λ
    np.testing.assert_allclose(t["x"], [50.0, 70.0])
    np.testing.assert_allclose(t["y"], [25.0 * 3 - 2, 25.0 * 3.8 - 2])
    assert not any("dense" in str(tr.get("name")) for tr in fig["data"])  # the dense row is a line, not a curve
    dense_line = [sh for sh in fig["layout"].get("shapes", []) if sh.get("y0") == 20.0]
    assert dense_line, "the dense perplexity of the sweep is drawn as a horizontal line"
    lam_fig = figure(app, "pr_lam_fig")
    S = app.select_slider(key="pr_lam_S").value
    t = trace(lam_fig, "AlphaPruning + SparseGPT")
    np.testing.assert_allclose(t["x"], [0.1, 0.2, 0.3])
    np.testing.assert_allclose(t["y"], [25.0 * (1 + 4 * S) - 10 * lam for lam in (0.1, 0.2, 0.3)])


def test_fista_lambda_path_of_one_layer(app, builtin):
    import torch

    from pruning.block_loop import collect_input_norms
    from pruning.evaluation.data import get_calibration
    from pruning.pruners.base import LayerStats
    from pruning.pruners.fista import fista_lambda_path

    name = "model.layers.1.self_attn.k_proj"
    compute_for_layer(app, "pr_fista", name)
    fig = figure(app, "pr_fista_fig")
    shown_s = trace(fig, "sparsity of the LASSO solution")
    shown_e = trace(fig, "relative output error ‖W*X − WX‖F/‖WX‖F")

    lm = builtin
    calib = get_calibration(lm.tokenizer, nsamples=2, seqlen=64, seed=0)
    module = dict(lm.model.named_modules())[name]
    xs = []
    h = module.register_forward_pre_hook(lambda m, a: xs.append(a[0].detach().reshape(-1, a[0].shape[-1])))
    with torch.no_grad():
        lm.model(input_ids=calib, use_cache=False)
    h.remove()
    X = torch.cat(xs).float()
    # the captured inputs are the ones the pruning loop sees: Σx² per feature = collect_input_norms
    norms = collect_input_norms(lm.model, calib)[name]
    np.testing.assert_allclose((X.double() ** 2).sum(0).numpy(), norms.numpy(), rtol=1e-4)
    path = fista_lambda_path(module.weight.detach().float(), LayerStats.from_inputs(X), num=10, min_ratio=1e-6,
                             max_iter=100, tol=1e-4, dtype=torch.float32).sort_values("lambda_rel")
    np.testing.assert_allclose(shown_s["x"], path["lambda_rel"].to_numpy(), rtol=1e-9)
    np.testing.assert_allclose(shown_s["y"], 100 * path["sparsity"].to_numpy(), atol=1e-9)
    np.testing.assert_allclose(shown_e["y"], path["rel_error"].to_numpy(), rtol=1e-5)
    assert shown_s["y"][0] < shown_s["y"][-1]  # a larger λ gives a sparser solution


def test_prox24_schedule_of_one_layer(app, builtin):
    import torch

    name = "model.layers.1.self_attn.k_proj"
    compute_for_layer(app, "pr_prox", name)
    fig = figure(app, "pr_prox_fig")
    mu = trace(fig, "μ_t")
    frac = trace(fig, "groups of 4 with > 2 non-zeros")
    err = trace(fig, "relative output error ‖W*X − WX‖F/‖WX‖F")
    W = dict(builtin.model.named_modules())[name].weight.detach().to(torch.float64)
    rms = float(W.pow(2).mean().sqrt())
    T = len(mu["y"])
    assert T >= 2
    np.testing.assert_array_equal(mu["x"], np.arange(T))
    # μ_t = mu0 · growth^t / rms(V), V = W·diag(√H_jj) (the rescaled variables of the default steps)
    np.testing.assert_allclose(mu["y"] / mu["y"][0], 1.25 ** np.arange(T), rtol=1e-12)
    assert mu["y"][0] != pytest.approx(1e-2 / rms, rel=1e-3)  # not the plain-step variables W
    assert len(frac["y"]) == len(err["y"]) == T
    assert frac["y"][-1] == 0 and min(frac["y"][:-1]) > 0  # stops at the first step where every group is 2:4
    assert np.all(np.isfinite(err["y"])) and np.all(np.asarray(err["y"]) > 0)
    assert any(f"{T} proximal steps on {W.numel() // 4} groups of 4" in c.value for c in app.caption)


def test_readable_labels_axis_ranges_and_styles():
    """Readable legends, no rounding noise on a flat sparsity axis, one λ readable, coinciding
    allocation curves distinguishable."""
    from pruning import plots as pplots
    from pruning.labels import readable

    t = pd.DataFrame({"allocation": ["alphapruning", "uniform", "alphapruning λ=0.2"],
                      "pruner": ["wanda", "sparsegpt 2:4 +GD5", "magnitude"], "sparsity": [0.6, 0.6, 0.6],
                      "ppl": [180.0, 200.0, 190.0]})
    names = [tr.name for tr in pplots.tradeoff_figure(readable(t)).data]
    assert set(names) == {"AlphaPruning + Wanda", "uniform + SparseGPT 2:4 +GD5", "AlphaPruning λ=0.2 + magnitude"}
    # a uniform run: target 60 % everywhere, achieved 60 % ± one weight → the axis is not 59.9998–60.0001
    rec = pd.DataFrame({"longname": list("abcd"), "target": [0.6] * 4,
                        "achieved": [0.6, 0.6 + 1e-6, 0.6 - 1e-6, 0.6]})
    lo, hi = pplots.achieved_sparsity_figure(rec).layout.yaxis.range
    assert hi - lo >= pplots.MIN_SPARSITY_SPAN and lo < 60 < hi
    alloc = pd.DataFrame({"longname": list("abcd"), "block": [0, 0, 1, 1], "num_params": [1, 3, 2, 2],
                          "sparsity": [0.6] * 4})
    fig = pplots.allocation_figure({"uniform": alloc, "ERK": alloc.copy()}, target=0.6)
    lo, hi = fig.layout.yaxis.range
    assert hi - lo >= pplots.MIN_SPARSITY_SPAN
    assert len({tr.line.dash for tr in fig.data}) == 2  # uniform and ERK coincide but are drawn differently
    # one λ: a window around it, not an axis reaching −0.5; a title with room above the plot
    one = pd.DataFrame({"lam": [0.3], "ppl": [150.0], "pruner": ["Wanda"]})
    fig = pplots.lambda_effect_figure(one, baselines={"uniform + Wanda": 160.0}, title="perplexity against λ")
    lo, hi = fig.layout.xaxis.range
    assert 0 <= lo < 0.3 < hi <= 0.5 and fig.layout.margin.t >= 50


def test_allocation_figure_has_fixed_margins_with_room_for_its_legend():
    """The figure the λ slider redraws never asks plotly.js to measure and push its margins (a second full draw of
    the figure on every step): no automargin, no autoexpand; the bottom margin holds the x title and the legend's
    rows (one for the lab's four default methods, more for long labels), the figure growing by what they add."""
    from pruning import plots as pplots
    from pruning.labels import ALLOCATION_LABELS

    alloc = pd.DataFrame({"longname": list("abcd"), "block": [0, 0, 1, 1], "num_params": [1, 3, 2, 2],
                          "sparsity": [0.5, 0.7, 0.6, 0.6]})
    four = ["uniform", "AlphaPruning", "ERK", "stable rank"]
    every = list(ALLOCATION_LABELS.values())
    # by hand, 40 px + 7 px a character an entry in 720 px: the four defaults take 89 + 124 + 61 + 117 px; of every
    # label the first seven take 672 px, FARMS (75) opens row 2, which the 404-px sensitivity label still fits in
    assert pplots.legend_rows(four) == 1 and pplots.legend_rows(every) == 2
    assert pplots.legend_rows(["x" * 100]) == 1  # wider than the width: still one row, not zero or two
    assert pplots.legend_rows(["y" * 90] * 3) == 3 and pplots.legend_rows(["y" * 45] * 3) == 2  # 670 px / 355 px
    for labels in (four, every):
        fig = pplots.allocation_figure({k: alloc for k in labels}, target=0.6, title="t")
        lay = fig.layout
        assert lay.xaxis.automargin is False and lay.yaxis.automargin is False and lay.margin.autoexpand is False
        extra = pplots.LEGEND_ROW_PX * (pplots.legend_rows(labels) - 1)
        assert lay.margin.b == 58 + pplots.LEGEND_ROW_PX * pplots.legend_rows(labels)
        assert lay.height == 440 + extra and lay.legend.yref == "container" and lay.legend.y == 0


def test_paper_literal_variant_is_offered_for_the_seed_pruners_only(app):
    goto(app, "Prune & evaluate")
    assert app.checkbox(key="pr_gd_pre").value is True  # preconditioned masked GD is the default (ours)
    for pruner, enabled in (("fista", True), ("prox24", True), ("wanda", False), ("sparsegpt", False)):
        app.selectbox(key="pr_pruner").set_value(pruner).run()
        assert app.checkbox(key="pr_literal").proto.disabled is (not enabled), pruner


def test_sweep_rows_of_the_paper_literal_variants_get_their_own_curves(app, tmp_path):
    """A sweep table with FISTA re-fitted and paper-literal, prox24 rescaled and plain-step, plain and
    preconditioned GD: every variant is its own, labelled curve."""
    rows = [{"kind": "dense", "allocation": "none", "pruner": "dense", "sparsity": 0.0, "nm": "", "lam": np.nan,
             "ppl": 20.0, "pruner_options": "{}", "gd_steps": 0, "gd_precondition": True}]
    for pruner, opts, gd, pre, ppl in (("fista", "{}", 0, True, 60.0), ("fista", '{"refit": "none"}', 0, True, 400.0),
                                       ("prox24", "{}", 100, True, 90.0),
                                       ("prox24", '{"precondition": false}', 100, True, 300.0),
                                       ("sparsegpt", "{}", 100, False, 80.0)):
        rows.append({"kind": "pruned", "allocation": "uniform", "pruner": pruner, "sparsity": 0.5, "nm": "2:4",
                     "lam": np.nan, "ppl": ppl, "pruner_options": opts, "gd_steps": gd, "gd_precondition": pre})
    path = tmp_path / "sweep.parquet"
    pd.DataFrame(rows).to_parquet(path)
    goto(app, "Prune & evaluate")
    app.text_input(key="pr_sweep_path").input(str(path)).run()
    no_failure(app)
    fig = figure(app, "pr_tradeoff")
    for name, ppl in (("uniform + FISTAPruner 2:4", 60.0), ("uniform + FISTAPruner (paper-literal) 2:4", 400.0),
                      ("uniform + prox24 2:4 +GD100", 90.0), ("uniform + prox24 (paper-literal) 2:4 +GD100", 300.0),
                      ("uniform + SparseGPT 2:4 +GD100 plain", 80.0)):
        np.testing.assert_allclose(trace(fig, name)["y"], [ppl])
