"""ESD explorer: log-log ESD with the fitted power-law tail, xmin rule switch, D per xmin candidate, MP bulk, two
matrices or one matrix before / after pruning side by side."""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import streamlit as st

from spectra import plots as splots
from spectra.errors import SpectraError
from spectra.hill import EVALS_THRESH, fit_power_law
from spectra.mp import mp_fit
from webapp import cache, state
from webapp.common import chart, run_page, show_table
from webapp.figures import esd_figure_for, esd_fit, evals_of
from webapp.state import ANALYSIS_RULES, Context, bind, selected_matrix

ESD_RULES = ANALYSIS_RULES + ("manual",)


def esd_panel(ctx: Context, name: str, evals: np.ndarray, rule: str, xmin: Optional[float], show_mp: bool,
              bins: int, key: str, label: str = "") -> Any:
    row = ctx.df.loc[ctx.df["longname"] == name].iloc[0]
    fit = esd_fit(evals, rule, xmin)
    mpf = mp_fit(evals, int(row["rows"]), int(row["cols"]))
    compact = st.session_state.esd_compare != "nothing"  # half-width panels: two rows of tiles
    c = st.columns(3) + st.columns(3) if compact else st.columns(5)
    c[0].metric("α", f"{fit.alpha:.4f}" if fit.ok else "failed")
    c[1].metric("D (KS)", f"{fit.D:.4f}" if fit.ok else "–")
    c[2].metric("xmin", f"{fit.xmin:.4g}" if fit.ok else "–")
    c[3].metric("tail size", int(fit.num_pl_spikes))
    c[4].metric("spikes above MP edge", int(mpf.num_spikes))
    if fit.warning:
        st.warning(fit.warning)
    title = f"{label}{name} ({int(row['rows'])}×{int(row['cols'])}), rule {rule}"
    chart(esd_figure_for(row, evals, fit, show_mp, bins, title), key=f"{key}_esd")
    return fit


def render(ctx: Context) -> None:
    st.header("ESD explorer")
    df = ctx.df
    names = df["longname"].tolist()
    selected_matrix(df)
    c1, c2 = st.columns([1, 1])
    c1.selectbox("Matrix", names, key="esd_matrix", **bind("esd_matrix", "matrix"))
    c2.radio("xmin rule", ESD_RULES, key="esd_rule", horizontal=True,
             help="peak: histogram-peak window [0.95p, 1.5p] (corrected) · ks: every eigenvalue is a candidate "
                  "(Clauset; weightwatcher) · median: AlphaPruning xmin_mid · peak_ref: weightwatcher xmin_peak with "
                  "the references' [log10(0.95p), 1.5p] bounds · peak_ap: AlphaPruning's own code · manual: your xmin")
    c1, c2, c3 = st.columns([2, 1, 1])
    c1.radio("Side by side with", ("nothing", "another matrix", "this matrix after pruning"), key="esd_compare",
             horizontal=True)
    c2.select_slider("histogram bins", options=[20, 40, 60, 80, 120, 160], key="esd_bins")
    c3.checkbox("Marchenko–Pastur bulk", key="esd_mp")
    name, rule = st.session_state.esd_matrix, st.session_state.esd_rule
    evals = evals_of(ctx, name)
    xmin = None
    if rule == "manual":
        pos = evals[evals > EVALS_THRESH]
        key = f"esd_xmin::{name}"
        if key not in st.session_state:
            st.session_state[key] = float(fit_power_law(evals, "peak").xmin)
        xmin = st.number_input("xmin (eigenvalue of WᵀW where the tail starts)", min_value=float(pos.min()),
                               max_value=float(np.sort(pos)[-2]), key=key, format="%.5g")
    bins = int(st.session_state.esd_bins)
    compare = st.session_state.esd_compare
    show_mp = bool(st.session_state.esd_mp)
    if compare == "nothing":
        fit = esd_panel(ctx, name, evals, rule, xmin, show_mp, bins, "esd_a")
    else:
        left, right = st.columns(2)
        with left:
            fit = esd_panel(ctx, name, evals, rule, xmin, show_mp, bins, "esd_a")
        with right:
            if compare == "another matrix":
                if st.session_state.get("esd_other") not in names:
                    st.session_state.esd_other = names[min(len(names) - 1, names.index(name) + 7)]
                other = st.selectbox("Second matrix", names, key="esd_other")
                esd_panel(ctx, other, evals_of(ctx, other), rule if rule != "manual" else "peak", None, show_mp,
                          bins, "esd_b")
            else:
                after = after_pruning_panel(ctx, name, rule, show_mp, bins)
        if compare == "this matrix after pruning":
            r2 = rule if rule != "manual" else "peak"
            series = [("dense", evals, esd_fit(evals, rule, xmin)), (after[0], after[1], esd_fit(after[1], r2))]
            chart(splots.esd_overlay_figure(series, bins=bins, title=f"{name}: before and after pruning"),
                  key="esd_overlay")
    if fit.ok:
        st.subheader("KS distance D against the xmin candidate")
        st.caption("Every eigenvalue (but the largest) as xmin: the `ks` rule takes the smallest D over all of them, "
                   "`peak` only inside the shaded window, `median` takes the middle eigenvalue without a search.")
        chart(splots.ks_curve_figure(evals, fit, rule, title=f"{name}: D per xmin candidate"), key="esd_ks")
    farms_panel(ctx, name, rule if rule != "manual" else "peak", show_mp, bins)
    row = df.loc[df["longname"] == name].drop(columns=["evals"], errors="ignore").T
    with st.expander("All metrics of this matrix (analysis with the sidebar's rule)"):
        show_table(row.astype(str).set_axis(["value"], axis=1), hide_index=False, key="esd_row")


def farms_panel(ctx: Context, name: str, rule: str, show_mp: bool, bins: int) -> None:
    """The pooled FARMS ESD of ``name`` (``spectra.farms``: squared singular values of equally shaped windows) with
    its power-law fit, next to the plain one."""
    if ctx.model_key is None:
        return
    if not st.checkbox("FARMS: pooled ESD of square windows (Hu et al., ICML 2025)", key="esd_farms"):
        return
    from spectra.farms import farms_windows

    pooled = cache.farms_evals(ctx.model_key, name)
    row = ctx.df.loc[ctx.df["longname"] == name].iloc[0]
    wins = farms_windows(int(row["rows"]), int(row["cols"]))
    st.caption(f"{len(wins)} window(s) of {wins[0][2]} × {wins[0][3]} of the {int(row['rows'])} × "
               f"{int(row['cols'])} weight, {pooled.size} eigenvalues pooled; one fit with the {rule} rule")
    fit = esd_fit(pooled, rule, None)
    c = st.columns(4)
    c[0].metric("FARMS α", f"{fit.alpha:.4f}" if fit.ok else "failed")
    c[1].metric("D (KS)", f"{fit.D:.4f}" if fit.ok else "–")
    c[2].metric("xmin", f"{fit.xmin:.4g}" if fit.ok else "–")
    c[3].metric("tail size", int(fit.num_pl_spikes))
    chart(splots.esd_figure(pooled, fit, bins=bins, title=f"{name}: pooled FARMS ESD"), key="esd_farms_fig")


def after_pruning_panel(ctx: Context, name: str, rule: str, show_mp: bool, bins: int) -> tuple[str, np.ndarray]:
    """The matrix after the last Prune & evaluate run of this model, else magnitude-pruned here on its own."""
    from spectra.esd import esd

    last = state.last_pruned(ctx.model_key, name)
    if last is not None:
        label = f"after {last[0]}: "
        W = last[1]
        st.caption(f"From the last Prune & evaluate run ({last[0]}).")
    else:
        from pruning.pruners import get_pruner

        s = st.slider("magnitude-prune this matrix at sparsity", 0.1, 0.95, step=0.05, key="esd_prune_s")
        if ctx.model_key is None:
            raise SpectraError("pruning a matrix needs the model's weights; open the model, not a results file")
        W = get_pruner("magnitude").fn(cache.model_weights(ctx.model_key)[name].float(), None, float(s))
        label = f"after magnitude {int(100 * s)}%: "
        st.caption("No pruned model yet: this is the matrix magnitude-pruned on its own (run Prune & evaluate to "
                   "compare with a calibrated pruner).")
    ev2 = esd(W)
    esd_panel(ctx, name, ev2, rule if rule != "manual" else "peak", None, show_mp, bins, "esd_b", label)
    return label.rstrip(": "), ev2


if __name__ == "__main__":
    run_page(render)
