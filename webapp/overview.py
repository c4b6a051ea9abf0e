"""Model overview: α and other metrics along depth per role, block × role heatmap, the HT-SR reading."""
from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd
import streamlit as st

from spectra.analyze import role_summary
from spectra.metrics import OVER_TRAINED, UNDER_TRAINED, status_for
from webapp import cache, state
from webapp.common import chart, run_page, show_table
from webapp.figures import overview_figures
from webapp.state import Context, bind, selected_matrix, selection

OVERVIEW_METRICS = ("alpha", "alpha_weighted", "stable_rank", "log_spectral_norm", "log_norm", "log_alpha_norm",
                    "entropy", "D", "num_spikes")
LO, HI = f"{OVER_TRAINED:g}", f"{UNDER_TRAINED:g}"


def render(ctx: Context) -> None:
    df = ctx.df
    meta = df.attrs.get("metadata", {})
    st.header("Model overview")
    st.caption(f"{ctx.label} · {len(df)} matrices · xmin rule **{ctx.rule}** · "
               f"{'from cache' if meta.get('from_cache') else 'analysed in ' + str(meta.get('elapsed_s', '?')) + ' s'}")
    alpha = pd.to_numeric(df["alpha"], errors="coerce")
    status = alpha.map(status_for)  # spectra.metrics' reading of α (the analysis' ``status`` column)
    n_over, n_ok = int((status == "over-trained").sum()), int((status == "ok").sum())
    n_under, n_fail = int((status == "under-trained").sum()), int((status == "failed").sum())
    c = st.columns(5)
    c[0].metric("median α", f"{np.nanmedian(alpha):.2f}")
    c[1].metric(f"α < {LO} (over-trained)", n_over)
    c[2].metric(f"{LO} ≤ α ≤ {HI} (typical)", n_ok)
    c[3].metric(f"α > {HI} (under-trained / spurious)", n_under)
    c[4].metric("failed fits", n_fail)
    worst = df.loc[alpha.idxmax()] if alpha.notna().any() else None
    blocks = df[df["block"] >= 0].groupby("block")["alpha"].mean()
    reading = (f"HT-SR reading: {n_ok} of {len(df)} matrices look typically trained ({LO} ≤ α ≤ {HI}), {n_under} "
               f"under-trained or spuriously fitted (α > {HI}), {n_over} over-trained (α < {LO})")
    if worst is not None and len(blocks):
        reading += (f"; the least well-trained block is {int(blocks.idxmax())} (mean α {blocks.max():.2f}) and the "
                    f"largest α is {worst['longname']} ({worst['alpha']:.2f}).")
    st.info(reading)

    c1, c2 = st.columns([2, 1])
    c1.selectbox("Metric", [m for m in OVERVIEW_METRICS if m in df.columns], key="ov_metric")
    c2.checkbox("parameter-weighted block mean", key="ov_weighted")
    metric, weighted = state.overview_settings()
    figs = overview_figures(ctx, metric, weighted)
    ev = chart(figs[f"{metric}_along_depth"], key="ov_depth", on_select="rerun", selection_mode="points")
    picked = picked_matrix(ev, figs[f"{metric}_along_depth"])
    chart(figs[f"{metric}_heatmap"], key="ov_heat")

    st.subheader("Open a matrix in the ESD explorer")
    names = df["longname"].tolist()
    top = df.assign(_a=alpha).sort_values("_a", ascending=False)
    if picked and picked in names and picked != st.session_state.get("ov_last_pick"):
        st.session_state.ov_last_pick = picked  # a new click in the depth plot selects that matrix
        selection()["matrix"] = picked
    selected_matrix(df)
    c1, c2 = st.columns([3, 1])
    c1.selectbox("Matrix (click a point in the depth plot to pick it)", names, **bind("ov_open", "matrix"),
                 key="ov_open")
    if c2.button("Open in ESD explorer", key="ov_open_btn"):
        selection()["matrix"] = st.session_state.ov_open
        state.switch_view("ESD explorer")

    c1, c2 = st.columns(2)
    with c1:
        st.markdown("**Per role**")
        show_table(role_summary(df, "alpha"), key="ov_roles")
    with c2:
        st.markdown("**Largest α (least well-trained or spurious fits)**")
        cols = [c for c in ("longname", "alpha", "D", "num_pl_spikes", "status", "warning") if c in df.columns]
        show_table(top[cols].head(10), key="ov_top")
    chart(figs[f"{metric}_histogram"], key="ov_hist")
    farms_panel(ctx)
    with st.expander("All metrics (one row per matrix)"):
        show_table(df.drop(columns=["evals"], errors="ignore"), key="ov_all")


def farms_panel(ctx: Context) -> None:
    """FARMS α (the pooled ESD of equally shaped windows, ``spectra.farms``) next to α, per matrix and per role."""
    st.subheader("FARMS α next to α")
    if ctx.model_key is None:
        st.caption("FARMS α needs the model's weights; load a model (not a results file).")
        return
    st.checkbox("compute FARMS α (fits the pooled ESD of square windows: about a minute the first time, then "
                "cached)", key="ov_farms")
    if not st.session_state.get("ov_farms"):
        return
    with st.spinner("FARMS α …"):
        f = cache.farms_table(ctx.model_key, ctx.analysis_rule)
    c = st.columns(3)
    c[0].metric("median α", f"{np.nanmedian(f['alpha']):.2f}")
    c[1].metric("median FARMS α", f"{np.nanmedian(f['alpha_farms']):.2f}")
    c[2].metric("matrices whose α moves by > 1", int((f["alpha_farms"] - f["alpha"]).abs().gt(1).sum()))
    roles = f.groupby("role", sort=False)[["alpha", "alpha_farms"]].median().reset_index()
    c1, c2 = st.columns([1, 2])
    with c1:
        show_table(roles.rename(columns={"alpha": "median α", "alpha_farms": "median FARMS α"}), key="ov_farms_roles")
    with c2:
        show_table(f[["longname", "rows", "cols", "alpha", "alpha_farms", "num_windows_farms"]], key="ov_farms_all")


def picked_matrix(event, fig) -> Optional[str]:
    """The matrix name of the first point selected in the depth plot (its ``customdata``), if any."""
    try:
        pts = event.selection.points if event is not None else []
    except AttributeError:
        return None
    for p in pts or []:
        cd = p.get("customdata")
        if cd:
            return cd[0] if isinstance(cd, (list, tuple)) else str(cd)
        curve, idx = p.get("curve_number"), p.get("point_index", p.get("point_number"))
        if curve is not None and idx is not None and curve < len(fig.data):
            data = fig.data[curve].customdata
            if data is not None and idx < len(data):
                return str(np.asarray(data[idx]).ravel()[0])
    return None


if __name__ == "__main__":
    run_page(render)
