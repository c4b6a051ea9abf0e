"""Report: download every figure (HTML, PNG / SVG when kaleido is installed) and table (CSV), and one self-contained
HTML report of the current analysis."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from pruning import plots as pplots
from pruning.labels import allocation_label, readable
from spectra import plots as splots
from spectra.analyze import role_summary
from spectra.html_report import ReportSection, build_html_report
from webapp import cache, state
from webapp.common import run_page
from webapp.figures import (
    allocation_title,
    allocations_for,
    esd_figure_for,
    esd_fit,
    evals_of,
    overview_figures,
    runs_table,
    tradeoff_of_runs,
)
from webapp.state import Context, selected_matrix, selection


def kaleido_available() -> bool:
    try:
        import kaleido  # noqa: F401
    except ImportError:
        return False
    return any(Path(p).exists() for p in ("/usr/bin/chromium", "/usr/bin/google-chrome", "/usr/bin/chromium-browser"))


def figure_image(fig, fmt: str) -> bytes:
    cache.kaleido_server()
    return fig.to_image(format=fmt, width=1100, height=int(fig.layout.height or 460), scale=2 if fmt == "png" else 1)


def collect_figures(ctx: Context) -> dict:
    """Every figure of the current state, rebuilt from the same builders the views use."""
    figs = dict(overview_figures(ctx, *state.overview_settings()))
    name = selected_matrix(ctx.df)
    try:
        ev = evals_of(ctx, name)
        rule, bins = state.esd_settings()
        fit = esd_fit(ev, rule)
        row = ctx.df.loc[ctx.df["longname"] == name].iloc[0]
        figs[f"esd_{name}"] = esd_figure_for(row, ev, fit, True, bins, f"ESD of {name}, rule {rule}")
        figs[f"ks_{name}"] = splots.ks_curve_figure(ev, fit, rule, title=f"{name}: D per xmin candidate")
    except Exception:  # noqa: BLE001 - a missing ESD only drops that figure
        pass
    settings = state.alloc_settings()
    allocs, _ = allocations_for(ctx, state.alloc_methods(fast_only=True), settings)
    if allocs:
        figs["allocation_curves"] = pplots.allocation_figure(allocs, by=state.alloc_plot_by(), target=settings["S"],
                                                             title=allocation_title(settings, ctx))
    no_lam = tuple(sorted((k, v) for k, v in settings.items() if k != "lam"))
    lam_range = cache.lambda_range_chart(ctx.df, ctx.df_key, ctx.model_key, no_lam)
    if lam_range is not None:
        figs["lambda_min_max"] = lam_range
    figs.update(run_figures(ctx, name))
    return figs


def run_figures(ctx: Context, name: str) -> dict:
    """The figures of this session's runs: the trade-off (one curve per allocation × pruner × evaluation protocol),
    the last run's per-matrix achieved sparsity, the λ effect (where one sparsity was run at two λ or more), the λ →
    perplexity search and the selected matrix's ESD before / after the last run."""
    figs = {}
    tradeoff = tradeoff_of_runs()
    if tradeoff is not None:
        figs["tradeoff"] = tradeoff
    runs = state.runs()
    if runs:
        last = runs[-1]
        figs["achieved_sparsity"] = pplots.achieved_sparsity_figure(
            last["_records"], title=f"Per-matrix sparsity of the last run — {last['label']} + "
                                    f"{allocation_label(last['allocation'])} {last['sparsity']:.0%}")
        t = runs_table()
        lam_runs = t[t["lam"].notna()] if "lam" in t.columns else t.iloc[:0]
        for S, sub in lam_runs.groupby("sparsity"):
            if sub["lam"].nunique() >= 2:
                figs[f"lambda_effect_{S:.2f}"] = pplots.lambda_effect_figure(
                    readable(sub), group=("allocation", "label", "eval"),
                    title=f"perplexity against λ at {S:.0%} sparsity")
    res = st.session_state.get("tune_result")
    if res:
        figs["lambda_to_perplexity"] = pplots.tune_figure(
            res["rows"], res["uniform"]["ppl"], res["best"]["lam"],
            title=f"λ → held-out perplexity ({res['settings']['pruner']}, S = {res['settings']['sparsity']:.0%})")
    after = state.last_pruned(ctx.model_key, name)
    if after is not None:
        from spectra.esd import esd

        try:
            ev = evals_of(ctx, name)
            ev2 = esd(after[1])
            series = [("dense", ev, esd_fit(ev, "peak")), (f"after {after[0]}", ev2, esd_fit(ev2, "peak"))]
            figs[f"esd_before_after_{name}"] = splots.esd_overlay_figure(series, title=f"{name}: before and after "
                                                                                       f"pruning")
        except Exception:  # noqa: BLE001 - a missing ESD only drops that figure
            pass
    return figs


#: the columns of the runs table in the report (perplexities first; the CSV download keeps every column)
REPORT_RUN_COLUMNS = ("ppl", "dense_ppl", "allocation", "label", "sparsity", "lam", "eval", "achieved_sparsity",
                      "nsamples", "seconds")


def runs_text() -> list[str]:
    """The runs section's paragraphs: how runs are compared, and the collapse note of every run that collapsed."""
    from pruning.collapse import collapse_note, record_sparsities

    text = ["Each curve is one allocation × pruner × evaluation protocol (dataset, windows × tokens): runs scored on "
            "different windows are never one curve."]
    for i, r in enumerate(state.runs(), 1):
        note = collapse_note(r["ppl"], r["dense_ppl"], record_sparsities(r.get("_records")))
        if note:
            text.append(f"Run {i} ({r['label']} + {allocation_label(r['allocation'])} {r['sparsity']:.0%}): "
                        f"{note}")
    return text


def collect_tables(ctx: Context) -> dict:
    tables = {"analysis": ctx.df.drop(columns=["evals"], errors="ignore"),
              "role_summary": role_summary(ctx.df, "alpha")}
    allocs, _ = allocations_for(ctx, state.alloc_methods(fast_only=True), state.alloc_settings())
    for label, a in allocs.items():
        tables[f"allocation_{label.replace(' ', '_')}"] = a
    if state.runs():
        tables["runs"] = runs_table()
    return tables


def render(ctx: Context) -> None:
    st.header("Report")
    st.caption("Every figure and table of the current analysis, and one self-contained HTML file with all of them.")
    figs = collect_figures(ctx)
    tables = collect_tables(ctx)
    sel = selection()
    sections = [ReportSection("Model overview", f"{ctx.label}: {len(ctx.df)} matrices, xmin rule {ctx.rule}.",
                              [f for k, f in figs.items() if "depth" in k or "heatmap" in k or "histogram" in k],
                              [("per role", tables["role_summary"])]),
                ReportSection(f"ESD of {selected_matrix(ctx.df)}", "",
                              [f for k, f in figs.items() if k.startswith(("esd_", "ks_"))
                               and not k.startswith("esd_before_after_")]),
                ReportSection(f"Allocation at S = {sel['S']:.0%}, λ = {sel['lam']:.2f}", "",
                              [f for k, f in figs.items() if k == "allocation_curves"],
                              [(k, v) for k, v in tables.items() if k.startswith("allocation_")]),
                ReportSection("Allocation against λ", "", [f for k, f in figs.items() if k in ("lambda_min_max",
                                                                                                  "lambda_to_perplexity")]),
                ReportSection("Pruning runs", runs_text() if "runs" in tables else "",
                              [f for k, f in figs.items() if k in ("tradeoff", "achieved_sparsity")
                               or k.startswith(("lambda_effect_", "esd_before_after_"))],
                              [("runs", tables["runs"][[c for c in REPORT_RUN_COLUMNS if c in tables["runs"]]])]
                              if "runs" in tables else []),
                ReportSection("All metrics", "", [], [("analysis", tables["analysis"])])]
    meta = ctx.df.attrs.get("metadata", {})
    info = {k: meta.get(k) for k in ("model", "weights_sha256", "dtype", "xmin_rule", "created") if k in meta}

    def report_bytes() -> bytes:  # built when the button is clicked (plotly.js is embedded: ~5 MB)
        return build_html_report("Spectral Pruning Lab report", sections, subtitle=ctx.label,
                                 metadata=info).encode("utf-8")

    st.download_button("Download the one-file HTML report", report_bytes, "spectral-pruning-report.html",
                       "text/html", key="rep_html", type="primary", on_click="ignore")
    n_tables = sum(len(sec.tables) for sec in sections)
    st.caption(f"{len(figs)} interactive figures and {n_tables} tables in one file that opens offline (plotly.js "
               f"embedded).")
    images = kaleido_available()
    st.subheader("Figures")
    if not images:
        st.caption("PNG/SVG need `pip install kaleido` and Chromium; the camera icon of each chart also saves a PNG.")
    for k, fig in figs.items():
        c = st.columns([4, 1, 1, 1])
        title = fig.layout.title.text
        c[0].markdown(f"`{k}`" + (f" — {title}" if title else ""))
        c[1].download_button("HTML", lambda f=fig: f.to_html(include_plotlyjs=True).encode(), f"{k}.html",
                             "text/html", key=f"rep_fig_html_{k}", on_click="ignore")
        if images:
            c[2].download_button("PNG", lambda f=fig: figure_image(f, "png"), f"{k}.png", "image/png",
                                 key=f"rep_fig_png_{k}", on_click="ignore")
            c[3].download_button("SVG", lambda f=fig: figure_image(f, "svg"), f"{k}.svg", "image/svg+xml",
                                 key=f"rep_fig_svg_{k}", on_click="ignore")
    st.subheader("Tables")
    for k, t in tables.items():
        c = st.columns([4, 1])
        c[0].markdown(f"`{k}` — {len(t)} rows")
        c[1].download_button("CSV", t.to_csv(index=False).encode(), f"{k}.csv", "text/csv", key=f"rep_tab_{k}",
                             on_click="ignore")


if __name__ == "__main__":
    run_page(render)
