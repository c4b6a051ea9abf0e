"""Figures and tables that several pages draw (the Report rebuilds every view's figures with the same builders)."""
from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd

from pruning import plots as pplots
from pruning.labels import ALLOCATION_LABELS, allocation_label, readable, readable_run
from spectra import plots as splots
from spectra.analyze import block_aggregate
from spectra.errors import SpectraError
from spectra.hill import fit_power_law
from webapp import cache, state
from webapp.common import one_line
from webapp.state import Context


def overview_figures(ctx: Context, metric: str, weighted: bool) -> dict:
    df = ctx.df
    agg = block_aggregate(df[df["block"] >= 0], metric, weighted).set_index("block")[metric]
    name = "block mean (parameter-weighted)" if weighted else "block mean"
    return {
        f"{metric}_along_depth": splots.metric_depth_figure(df, metric, aggregate=agg, aggregate_name=name,
                                                            title=f"{metric} along depth, per role — {ctx.label}"),
        f"{metric}_heatmap": splots.heatmap_figure(df, metric, title=f"{metric}: block × role — {ctx.label}"),
        f"{metric}_histogram": splots.metric_histogram_figure(df, metric, title=f"distribution of {metric}"),
    }


def evals_of(ctx: Context, name: str) -> np.ndarray:
    """The eigenvalues of WᵀW of the matrix ``name`` (from the analysis, else from the model)."""
    row = ctx.df.loc[ctx.df["longname"] == name]
    if row.empty:
        raise KeyError(name)
    ev = row["evals"].iloc[0] if "evals" in row.columns else None
    if ev is None or (isinstance(ev, float) and np.isnan(ev)):
        if ctx.model_key is None:
            raise SpectraError("this results file holds no eigenvalues (save it with --eigs) and its model is not "
                               "available; open the model itself")
        from spectra.analyze import matrix_esd

        return matrix_esd(ctx.model_key if ctx.model_key != "builtin" else None, name)
    return np.asarray(ev, dtype=np.float64)


def esd_fit(evals: np.ndarray, rule: str, xmin: Optional[float] = None):
    if rule == "manual":
        return fit_power_law(evals, "fixed", xmin=xmin)
    return fit_power_law(evals, rule)


def esd_figure_for(row: pd.Series, evals: np.ndarray, fit, show_mp: bool, bins: int, title: str):
    """The ESD chart of the matrix in ``row``: with its Marchenko–Pastur bulk (``show_mp``) or without."""
    if show_mp:
        return splots.esd_mp_figure(evals, fit, int(row["rows"]), int(row["cols"]), bins=bins, title=title)
    return splots.esd_figure(evals, fit, bins=bins, title=title)


def allocations_for(ctx: Context, methods: list[str], settings: dict) -> tuple[dict, dict]:
    """{label: allocation table} for the methods, and {label: error message} for those that failed."""
    out, errors = {}, {}
    for m in methods:
        try:
            out[ALLOCATION_LABELS[m]] = cache.cached_allocation(ctx.df, ctx.df_key, ctx.model_key, m,
                                                                cache.method_settings(m, settings))
        except Exception as exc:  # noqa: BLE001 - reported per method
            errors[ALLOCATION_LABELS[m]] = one_line(exc)
    return out, errors


def allocation_title(settings: dict, ctx: Context) -> str:
    """Title of the allocation figure (Allocation lab and Report): granularity, S, λ and the model."""
    return (f"Sparsity per {state.alloc_plot_by()} at S = {settings['S']:.0%}, λ = {settings['lam']:.2f} — "
            f"{ctx.label}")


#: the columns the runs table opens with (the answer first: perplexities, then what the run was)
RUNS_FIRST = ("ppl", "dense_ppl", "allocation", "label", "sparsity", "lam", "eval", "achieved_sparsity")


def runs_table() -> pd.DataFrame:
    """The runs of this session, one record each (``pruning.runs.run_record``, the columns of a sweep row; ``label``
    = pruner + pattern + GD, ``pruning.labels.run_label``), perplexities first (:data:`RUNS_FIRST`); ``eval`` names
    the evaluation protocol (dataset windows×tokens)."""
    t = pd.DataFrame([{k: v for k, v in r.items() if not k.startswith("_")} for r in state.runs()])
    if len(t):
        t["eval"] = [f"{d} {w}×{q}" for d, w, q in zip(t["eval_dataset"], t["max_windows"], t["eval_seqlen"])]
        first = [c for c in RUNS_FIRST if c in t.columns]
        t = t[first + [c for c in t.columns if c not in first]]
    return t


def comparison_line(runs: list[dict]) -> Optional[str]:
    """The answer of "this allocation or another?" for the last run: every allocation run with the same pruner,
    sparsity and evaluation protocol (its latest run each), lowest perplexity first; None without such a peer."""
    if not runs:
        return None
    last = runs[-1]

    def same(r: dict) -> bool:
        return all(r.get(k) == last.get(k) for k in ("label", "sparsity", "eval_dataset", "max_windows", "eval_seqlen",
                                                      "model"))

    latest = {}
    for r in runs:
        if same(r):
            latest[(r["allocation"], r.get("lam") if r.get("lam") == r.get("lam") else None)] = r
    if len({a for a, _ in latest}) < 2:
        return None
    ranked = sorted(latest.values(), key=lambda r: r["ppl"])
    names = [allocation_label(r["allocation"]) + (f" λ={r['lam']:g}" if r.get("lam") == r.get("lam") and
                                                          r.get("lam") is not None else "") for r in ranked]
    items = " · ".join(f"{n} {r['ppl']:,.2f}" for n, r in zip(names, ranked))
    return (f"At {last['sparsity']:.0%} with {readable_run(last['label'])} ({last['eval_dataset']} "
            f"{last['max_windows']}×{last['eval_seqlen']}, dense {last['dense_ppl']:,.2f}): {items} — "
            f"lowest perplexity: "
            f"**{names[0]}**.")


def runs_for_plots() -> pd.DataFrame:
    """:func:`runs_table` as sweep tables are plotted (``pruning.runs.normalize_results``): the pruner column is the
    run label, so that N:M, +GD and paper-literal runs are curves of their own, and AlphaPruning without the flagged
    fits is an allocation of its own."""
    from pruning.runs import normalize_results

    return normalize_results(runs_table())


def tradeoff_of_runs(title: str = "sparsity / perplexity"):
    """The trade-off figure of this session's runs (None without runs)."""
    if not state.runs():
        return None
    t = runs_for_plots()
    one_protocol = t["eval"].nunique() == 1
    return pplots.tradeoff_figure(readable(t), group=("allocation", "pruner", "eval"),
                                  dense=t["dense_ppl"].iloc[0] if one_protocol else None, title=title)
