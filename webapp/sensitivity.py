"""Which blocks matter: each block's measured pruning cost on held-out text (``pruning.sensitivity``) next to the
signals the allocations bet on, the verdict of each signal (ρ, τ, permutation p) and a scatter of one against the
cost. The run reuses the λ search's cached dense statistics (same calibration windows)."""
from __future__ import annotations

import streamlit as st

from pruning.plots_sensitivity import SIGNAL_LABELS, cost_bars_figure, signal_scatter_figure
from pruning.pruners import DEFAULT_PRUNER
from pruning.sensitivity import SensitivitySettings, measure, read_table
from pruning.settings import CalibrationSettings
from pruning.signals import signal_columns, verdict
from spectra.models import copy_model
from webapp import cache, state
from webapp.common import chart, one_line, run_page, show_table
from webapp.state import Context
from webapp.widgets import setting_widget

#: this page's settings and their defaults (the fields' own, the λ search's calibration count)
PAGE_DEFAULTS = {"se_pruner": DEFAULT_PRUNER, "se_S": 0.7, "se_mode": "alone", "se_delta": 0.05, "se_windows": 8,
                 "se_nsamples": 16, "se_path": ""}


def _keep_settings() -> None:
    s = st.session_state
    for key, value in PAGE_DEFAULTS.items():
        s[key] = s[key] if key in s else value


def run_panel(ctx: Context) -> None:
    """The settings and the *Measure* button: :func:`pruning.sensitivity.measure` on a copy of the model, a progress
    bar filled candidate by candidate."""
    s = st.session_state
    c = st.columns(5)
    setting_widget(c[0], SensitivitySettings, "pruner", "se_pruner")
    setting_widget(c[1], SensitivitySettings, "sparsity", "se_S", label="sparsity S")
    setting_widget(c[2], SensitivitySettings, "mode", "se_mode", widget="radio")
    setting_widget(c[3], SensitivitySettings, "delta", "se_delta", label="δ (marginal)")
    setting_widget(c[4], SensitivitySettings, "eval_windows", "se_windows")
    setting_widget(st, CalibrationSettings, "nsamples", "se_nsamples",
                   note="the λ search's statistics are reused when the calibration matches")
    if ctx.model_key is None:
        st.info("Measuring needs the model itself; load a model (or open a measured table below).")
        return
    if st.button("Measure every block", key="se_run"):
        seqlen = state.calibration()[1]
        try:
            ss = SensitivitySettings(pruner=s.se_pruner, sparsity=float(s.se_S), mode=s.se_mode,
                                     delta=float(s.se_delta), eval_windows=int(s.se_windows), eval_seqlen=seqlen,
                                     calib=CalibrationSettings(nsamples=int(s.se_nsamples), seqlen=seqlen,
                                                               seed=cache.CALIB_SEED),
                                     xmin_rule=ctx.analysis_rule)
        except ValueError as exc:
            st.error(one_line(exc))
            return
        bar = st.progress(0.0, text="dense calibration statistics and signals (cached after the first run) …")

        def on_row(done: int, total: int, name: str) -> None:
            bar.progress(done / total, text=f"{name} measured ({done}/{total})")

        model = copy_model(cache.load_model_cached(ctx.model_key))
        s.se_result = measure(model, ss, None, log=lambda m: None, progress_cb=on_row, progress=False,
                              metrics=ctx.df)  # the page's analysis: no second spectral pass
        state.keep_sensitivity_table(s.se_result)  # the Allocation lab's leaderboard can tune its allocation
        bar.progress(1.0, text="done")


def results_panel(df) -> None:
    """Bars of Δ with the normalised signals, the verdict table and the scatter of a chosen signal."""
    meta = df.attrs.get("sensitivity", {})
    sigs = signal_columns(df)
    st.caption(f"{meta.get('label', '')}: reference held-out perplexity {meta.get('reference_ppl', float('nan')):.2f}. "
               f"Δ = mean token NLL with the candidate pruned minus the reference's (alone: the dense model; "
               f"marginal: every block at S).")
    shown = st.multiselect("signals beside the cost", sigs, default=[x for x in ("alpha", "depth") if x in sigs],
                           format_func=lambda x: SIGNAL_LABELS.get(x, x), key="se_show")
    chart(cost_bars_figure(df, shown), key="se_bars")
    v = verdict(df, permutations=int(meta.get("permutations", 10000)), seed=int(meta.get("seed", 0)))
    show_table(v.drop(columns=["p_rho", "p_tau"]).round(4), key="se_verdict")
    if len(v):
        pick = st.selectbox("signal against the cost", list(v["signal"]), key="se_pick",
                            format_func=lambda x: SIGNAL_LABELS.get(x, x))
        row = v.set_index("signal").loc[pick].to_dict()
        chart(signal_scatter_figure(df, pick, row), key="se_scatter")


def render(ctx: Context) -> None:
    st.header("Which blocks matter")
    st.caption("Every allocation bets that a signal (α, FARMS α, stable rank, outlier ratio, DLP score, depth) says "
               "which blocks can lose more weights. Here each block is pruned on its own (one-shot from the dense "
               "calibration statistics) and its cost is measured on held-out C4 (validation documents 1000–1999, "
               "never WikiText-2 test); `python -m pruning sensitivity` does the same.")
    _keep_settings()
    run_panel(ctx)
    s = st.session_state
    path = st.text_input("or open a measured table (.parquet)", key="se_path")
    if path and st.button("Open", key="se_open"):
        try:
            s.se_result = read_table(path)
            state.keep_sensitivity_table(s.se_result, path)
        except (OSError, ValueError) as exc:
            st.error(one_line(exc))
    df = s.get("se_result")
    if df is not None and len(df):
        results_panel(df)


if __name__ == "__main__":
    run_page(render)
