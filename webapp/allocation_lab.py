"""Allocation lab: allocation curves of every method, λ / mapping / granularity / bounds, the λ → perplexity
search, export JSON / CSV."""
from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd
import streamlit as st

from pruning import plots as pplots
from pruning.allocation import ALLOCATION_METHODS, SPECTRAL_METHODS, save_allocation
from pruning.labels import ALLOCATION_LABELS
from pruning.settings import AllocationSettings, CalibrationSettings
from pruning.tune import TuneSettings
from spectra.hill import SPURIOUS_ALPHA
from spectra.models import copy_model
from webapp import cache, read_ahead, state
from webapp.common import chart, one_line, run_page, show_table
from webapp.figures import allocation_title, allocations_for
from webapp.state import SLOW_METHODS, Context, bind, selection
from webapp.widgets import setting_widget

SPURIOUS = f"α > {SPURIOUS_ALPHA:g}"
EXPORT_HEADING = "Export (the format `python -m pruning prune --allocation-file FILE` reads)"
#: the parts of the page below the curves, each in an expander whose content is drawn only while it is open
#: (``on_change="rerun"``): closed, the browser does not redraw their chart and widgets on every λ step (Streamlit
#: redraws every element of the page on each run, a fragment's too: about 60 ms of a step for these three,
#: bench/RESULTS_app_views.md)
PANELS = {"al_lam_open": "Effect of λ on AlphaPruning: min / max per-matrix sparsity against λ",
          "al_tune_open": "λ → perplexity: tune λ on held-out text",
          "al_lb_open": "Leaderboard: every allocation tuned on held-out text"}


def allocation_file_bytes(alloc: pd.DataFrame, suffix: str) -> bytes:
    """The exact file ``pruning.allocation.save_allocation`` writes (the format the pruning CLI reads)."""
    with tempfile.TemporaryDirectory() as tmp:
        return save_allocation(alloc, Path(tmp) / f"allocation{suffix}").read_bytes()


def flagged_fits_notice(ctx: Context, excluded: bool) -> None:
    """A warning naming the blocks whose AlphaPruning mean α includes fits flagged as likely spurious
    (``spectra.analyze.spurious_blocks``), largest shift of the mean first; an info line once they are left out."""
    if "alpha" not in ctx.df.columns:
        return
    sb = cache.spurious_blocks(ctx.df, ctx.df_key)
    if sb.empty:
        return
    sb = sb.assign(shift=sb["alpha_mean"] - sb["alpha_mean_unflagged"]).sort_values("shift", ascending=False)
    items = "; ".join(f"block {r.block} ({r.flagged}: mean α {r.alpha_mean:.2f}, {r.alpha_mean_unflagged:.2f} "
                      f"without)" for r in sb.itertuples())
    if excluded:
        st.info(f"Left out of AlphaPruning's block means: the fits flagged as likely spurious ({SPURIOUS}) in "
                f"{len(sb)} blocks — {items}.")
    else:
        st.warning(f"AlphaPruning's block means include fits flagged as likely spurious ({SPURIOUS}, see the ESD "
                   f"explorer) in {len(sb)} blocks, which therefore get more sparsity: {items}. Tick *leave fits "
                   f"flagged as likely spurious out of the block mean* to allocate without them.")


def render(ctx: Context) -> None:
    st.header("Allocation lab")
    st.caption("Per-matrix sparsity from per-matrix metrics: every allocation keeps the parameter-weighted mean "
               "sparsity at the target. Higher α ⇒ less well trained ⇒ more sparsity (AlphaPruning).")
    c = st.columns([2, 1, 1])
    setting_widget(c[0], AllocationSettings, "sparsity", "al_S", label="global sparsity S", **bind("al_S", "S"))
    setting_widget(c[1], AllocationSettings, "mapping", "al_mapping", widget="radio")
    setting_widget(c[2], AllocationSettings, "granularity", "al_gran", label="metric granularity", widget="radio",
                   note="block: each matrix gets its block's mean metric")
    st.multiselect("methods", list(ALLOCATION_METHODS), key="al_methods", format_func=ALLOCATION_LABELS.get,
                   help="OWL needs a calibration pass through the dense model (about half a minute once, then "
                        "cached); global and LAMP read every weight (a few seconds once)")
    c = st.columns(3)
    setting_widget(c[0], AllocationSettings, "metric", "al_metric", label="AlphaPruning metric",
                   choices=[m for m in ("alpha", "alpha_weighted", "log_spectral_norm", "log_norm", "entropy")
                            if m in ctx.df.columns])
    c[1].radio("plot sparsity per", ("block", "matrix"), key="al_by", horizontal=True)
    with c[2].popover("bounds"):
        setting_widget(st, AllocationSettings, "min_sparsity", "al_min", note="also used by Prune & evaluate")
        setting_widget(st, AllocationSettings, "max_sparsity", "al_max", note="also used by Prune & evaluate")
    setting_widget(st, AllocationSettings, "exclude_flagged", "al_exclude_flagged",
                   label=f"AlphaPruning: leave fits flagged as likely spurious ({SPURIOUS}) out of the block mean "
                         f"(our option; the reference keeps them)", note="also applies to AlphaPruning runs of "
                                                                         "Prune & evaluate")
    settings = state.alloc_settings()
    if "alphapruning" in state.alloc_methods():
        flagged_fits_notice(ctx, settings["exclude_flagged"])
    allocation_curves(ctx)
    # computed even while its expander is closed: it caches AlphaPruning at every λ of the slider's grid (the λ steps)
    no_lam = tuple(sorted((k, v) for k, v in settings.items() if k != "lam"))
    lam_fig = cache.lambda_range_chart(ctx.df, ctx.df_key, ctx.model_key, no_lam)
    panels = {"al_lam_open": lambda: lambda_effect_panel(lam_fig), "al_tune_open": lambda: tune_panel(ctx),
              "al_lb_open": lambda: leaderboard_panel(ctx)}
    for key, panel in panels.items():
        box = st.expander(PANELS[key], key=key, on_change="rerun")
        if box.open:
            with box:
                panel()


@st.fragment
def allocation_curves(ctx: Context) -> None:
    """The λ slider and everything λ moves (curves, summary, export): a fragment, so that a λ step reruns this part
    of the page only (not the sidebar, the other controls, the λ-effect chart or the λ search)."""
    read_ahead.page_started()  # a λ step: the read-ahead pauses too
    lam_used = any(m in SPECTRAL_METHODS for m in st.session_state.al_methods)
    setting_widget(st.columns([2, 2])[0], AllocationSettings, "lam", "al_lam", label="λ (allocation range)",
                   widget="slider", **bind("al_lam", "lam"), disabled=not lam_used,
                   note="the paper uses 0.2–0.5; read by AlphaPruning and stable rank (both spread their ratios "
                        "over [1−λ, 1+λ] before the mean is rescaled to S)")
    settings = state.alloc_settings()
    methods = state.alloc_methods()
    slow = [m for m in methods if m in SLOW_METHODS]
    if slow:
        with st.spinner(f"Computing {', '.join(ALLOCATION_LABELS[m] for m in slow)} (needs the model / calibration; "
                        f"cached afterwards) …"):
            allocs, errors = allocations_for(ctx, methods, settings)
    else:  # milliseconds: no spinner element to add and remove on every λ step
        allocs, errors = allocations_for(ctx, methods, settings)
    for label, msg in errors.items():
        st.error(f"{label}: {msg}")
    if not allocs:
        return
    fig = pplots.allocation_figure(allocs, by=state.alloc_plot_by(), target=settings["S"],
                                   highlight=ALLOCATION_LABELS["alphapruning"], title=allocation_title(settings, ctx))
    chart(fig, key="al_chart")
    missing = [ALLOCATION_LABELS[m] for m in SLOW_METHODS if m not in methods]
    if missing:
        st.caption(f"Add {', '.join(missing)} under *methods*: they read every weight or run a calibration pass "
                   f"through the dense model once (seconds to half a minute), then they are cached.")
    summary = pplots.allocation_summary(allocs)
    st.markdown("**Min / max / parameter-weighted mean sparsity**")
    # percentages by the table's own column format, not a pandas Styler (rendered to strings on every λ step)
    show_table(summary, key="al_summary", column_config={c: st.column_config.NumberColumn(format="percent")
                                                         for c in ("min", "max", "weighted_mean", "spread")})
    chosen = export_popover(allocs, settings)
    if st.toggle("show the allocation table", key="al_show_table"):  # drawn on demand, not on every λ step
        shown = "the parameter-weighted mean of each block" if state.alloc_plot_by() == "block" else "each matrix"
        st.caption(f"{ALLOCATION_LABELS[st.session_state.al_export]} (the allocation chosen under *Export*), one row "
                   f"per matrix (what the prune reads); the chart above shows {shown}.")
        show_table(chosen, key="al_table")


def export_popover(allocs: dict, settings: dict) -> pd.DataFrame:
    """*Export*: one allocation of the chart as the JSON / CSV file the pruning CLI reads, named by every setting the
    method reads. A popover: the browser draws its widgets only while it is open, not on every λ step. Returns the
    chosen allocation's table."""
    inv = {v: k for k, v in ALLOCATION_LABELS.items()}
    choices = [inv[label] for label in allocs]
    kw = bind("al_export", "method", choices)
    if st.session_state.get("al_export") not in choices:
        st.session_state.al_export = choices[0]
    with st.popover("Export an allocation (JSON / CSV)"):
        st.markdown(f"**{EXPORT_HEADING}**")
        st.selectbox("allocation to export", choices, key="al_export", format_func=ALLOCATION_LABELS.get, **kw)
        exported = st.session_state.al_export
        chosen = allocs[ALLOCATION_LABELS[exported]]
        stem = (f"allocation-{exported}-S{settings['S']:.2f}"  # every setting the method reads is in the name
                + (f"-lam{settings['lam']:.2f}" if exported in SPECTRAL_METHODS else "")
                + (f"-{settings['mapping']}-{settings['granularity']}" if exported in SPECTRAL_METHODS else ""))
        c1, c2 = st.columns(2)
        # the file is written when the button is clicked (deferred), not on every λ step
        c1.download_button("JSON", lambda: allocation_file_bytes(chosen, ".json"), f"{stem}.json",
                           "application/json", key="al_dl_json", on_click="ignore")
        c2.download_button("CSV", lambda: allocation_file_bytes(chosen, ".csv"), f"{stem}.csv", "text/csv",
                           key="al_dl_csv", on_click="ignore")
    return chosen


def lambda_effect_panel(lam_fig) -> None:
    """AlphaPruning's min / max per-matrix sparsity and weighted mean against λ at the page's other settings
    (``webapp.cache.lambda_range_chart``; None: no λ gave an allocation)."""
    if lam_fig is None:
        st.info("No AlphaPruning allocation at these settings (see the error above the curves).")
    else:
        chart(lam_fig, key="al_lam_fig")


def tune_panel(ctx: Context) -> None:
    """λ → perplexity: :func:`pruning.tune.tune` on a copy of the model, the curve filling in point by point,
    uniform as the reference line, the chosen λ marked and a button that sends it to Prune & evaluate."""
    from pruning.tune import tune

    st.caption("Every λ is pruned one-shot from cached dense calibration statistics (no forward pass; not the "
               "sequential protocol of Prune & evaluate) and scored on held-out C4 windows (validation documents "
               "1000–1999: neither the calibration text nor WikiText-2 test). `python -m pruning tune` does the same.")
    c = st.columns(4)
    setting_widget(c[0], TuneSettings, "pruner", "tu_pruner")
    setting_widget(c[1], TuneSettings, "lams", "tu_lams")
    setting_widget(c[2], CalibrationSettings, "nsamples", "tu_nsamples")
    setting_widget(c[3], TuneSettings, "eval_windows", "tu_windows")
    s = st.session_state
    settings = state.alloc_settings()
    if ctx.model_key is None:
        st.info("Tuning needs the model itself; load a model, not a results file.")
        return
    slot = st.empty()
    if st.button("Run the λ search", key="tu_run"):
        seqlen = state.calibration()[1]
        try:
            ts = TuneSettings(pruner=s.tu_pruner, allocation="alphapruning", sparsity=float(settings["S"]),
                              lams=s.tu_lams, calib=CalibrationSettings(nsamples=s.tu_nsamples, seqlen=seqlen,
                                                                        seed=cache.CALIB_SEED),
                              eval_seqlen=seqlen, eval_windows=s.tu_windows, xmin_rule=ctx.analysis_rule)
            lams = ts.lams
        except ValueError as exc:
            st.error(one_line(exc))
            return
        bar = st.progress(0.0, text="dense calibration statistics (cached after the first run) …")
        rows: list = []

        def on_row(row: dict) -> None:
            rows.append(row)
            bar.progress(len(rows) / len(lams), text=f"λ = {row['lam']:g}: held-out perplexity {row['ppl']:.2f} "
                                                      f"({len(rows)}/{len(lams)})")
            slot.plotly_chart(pplots.tune_figure(rows), key=f"tu_live_{len(rows)}")

        def on_phase(text: str) -> None:  # the dense statistics and each evaluation move the bar too
            bar.progress(len(rows) / len(lams), text=f"{text} ({len(rows)}/{len(lams)} λ scored)")

        model = copy_model(cache.load_model_cached(ctx.model_key))
        s.tune_result = tune(model, ts, log=lambda m: None, progress_cb=on_row, phase_cb=on_phase)
        bar.progress(1.0, text="done")
    res = s.get("tune_result")
    if res:
        best = res["best"]["lam"]
        slot.plotly_chart(pplots.tune_figure(res["rows"], res["uniform"]["ppl"], best,
                                             title=f"{res['settings']['pruner']} at S = "
                                                   f"{res['settings']['sparsity']:.0%}: chosen λ = {best:g}"),
                          key="tu_fig")
        S = float(res["settings"]["sparsity"])
        # a callback: the shared selection changes before the page reruns, so this page's slider and charts show it
        st.button(f"Use λ = {best:g} and S = {S:.0%} (AlphaPruning) on every page", key="tu_send",
                  on_click=use_tuned, args=(float(best), S),
                  help="sets the shared λ, S and allocation that this page, Prune & evaluate and the Report read")
        if s.get("tu_sent") == (float(best), S):
            st.success(f"λ = {best:g}, S = {S:.0%} and AlphaPruning are now the shared selection: the λ slider and "
                       f"charts above and Prune & evaluate use them.")


def use_tuned(lam: float, S: float) -> None:
    """The *Use λ* button: the tuned λ, its S and AlphaPruning become the shared selection (every page)."""
    selection().update(lam=lam, method="alphapruning", S=S)
    st.session_state.tu_sent = (lam, S)


@st.cache_resource(show_spinner=False)
def leaderboard_jobs() -> dict:
    """The leaderboard jobs of this server ({(model, settings): CompareJob}), so that a rerun finds them."""
    return {}


def leaderboard_panel(ctx: Context) -> None:
    """Every allocation tuned on held-out text with the same budget (:class:`pruning.compare.CompareJob`, in the
    background of the page); the rows appear as the methods finish."""
    from pruning.allocation import TUNABLE_METHODS, get_allocation
    from pruning.compare import CompareJob, CompareSettings

    st.caption("Each method's parameter is searched with the same number of candidates, one-shot from cached dense "
               "statistics, scored on held-out C4 (never on WikiText-2 test). `python -m pruning compare` does the "
               "same, plus `--final` (sequential prune + WikiText-2 test).")
    if ctx.model_key is None:
        st.info("The leaderboard needs the model itself; load a model, not a results file.")
        return
    s = st.session_state
    table, why_not = state.sensitivity_table(ctx.model_key)
    offered = ["uniform", *(m for m in TUNABLE_METHODS if table or get_allocation(m).reads != "table")]
    s.lb_methods = [m for m in s.lb_methods if m in offered]  # a table of another model: its method leaves
    c = st.columns([3, 1, 1])
    c[0].multiselect("methods to compare", offered, key="lb_methods", format_func=ALLOCATION_LABELS.get)
    c[1].number_input("candidates per method", 2, 12, key="lb_candidates")
    c[2].number_input("held-out windows", 1, 64, key="lb_windows")
    if table:
        st.caption(f"*sensitivity* (data-driven: measured on held-out text) reads the table of *Which blocks "
                   f"matter* (`{table}`).")
    else:
        st.caption(f"The measured allocation (*sensitivity*) is not offered. {why_not}")
    reads_table = any(get_allocation(m).reads == "table" for m in s.lb_methods)
    tune = TuneSettings(pruner=s.tu_pruner, sparsity=float(state.alloc_settings()["S"]),
                        candidates=int(s.lb_candidates), eval_windows=int(s.lb_windows),
                        calib=CalibrationSettings(nsamples=s.tu_nsamples, seqlen=state.calibration()[1]),
                        sensitivity_table=table if reads_table else None)
    jobs = leaderboard_jobs()
    key = (ctx.model_key, tuple(s.lb_methods), json_key(tune))
    if st.button("Run the leaderboard in the background", key="lb_run", disabled=not s.lb_methods):
        if key not in jobs or jobs[key].error:
            settings = CompareSettings(allocations=tuple(s.lb_methods), tune=tune)
            jobs[key] = CompareJob(lambda: copy_model(cache.load_model_cached(ctx.model_key)), settings).start()
    if key in jobs:
        leaderboard_rows(jobs[key])


def json_key(obj) -> str:
    import dataclasses
    import json

    return json.dumps(dataclasses.asdict(obj), sort_keys=True, default=str)


@st.fragment(run_every=3)
def leaderboard_rows(job) -> None:
    """The finished rows (refreshed every 3 s while the job runs)."""
    n, total = len(job.rows), len(job.settings.allocations)
    if job.error:
        st.error(f"leaderboard failed: {job.error}")
    elif job.done.is_set():
        st.success(f"{n} of {total} methods done")
    else:
        st.info(f"{n} of {total} methods done; running: {job.log[-1] if job.log else 'dense statistics'}")
    show_table(job.table(), key="lb_table")


if __name__ == "__main__":
    run_page(render)
