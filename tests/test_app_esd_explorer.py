"""The ESD explorer page: spectra, fits, the KS plot, before/after pruning."""
from __future__ import annotations

import json

import numpy as np
import pytest
from app_helpers import _decode, figure, goto, ks_axis_problems, metric, no_failure, trace


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


def test_ks_figure_is_drawn_in_data_coordinates():
    """Markers, window and labels at log10(x) on the log axis; the axis spans the candidates' decades
    (it ran to 10^32 for xmin = 28.37 when the labels were placed at x itself)."""
    from spectra import plots as splots

    x = np.geomspace(0.5, 300.0, 200)
    D = np.abs(np.log(x / 28.37)) / 10
    fig = json.loads(splots.ks_figure(x, D, 1 + x / 100, chosen=28.37, window=(20.0, 45.0)).to_json())
    assert ks_axis_problems(fig) == []
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
        assert ks_axis_problems(figure(app, "esd_ks")) == [], rule


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
