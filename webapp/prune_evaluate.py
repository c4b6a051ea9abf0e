"""Prune & evaluate: prune the loaded model with a pruner × allocation (or an N:M pattern) + masked GD, dense vs
pruned perplexity, trade-off plots from the runs and from sweep tables, FISTA's λ path and prox24's μ schedule."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import pandas as pd
import streamlit as st

from pruning import plots as pplots
from pruning.allocation import ALLOCATION_METHODS, CALIBRATION_METHODS, SPECTRAL_METHODS
from pruning.labels import ALLOCATION_LABELS, is_paper_literal, readable, readable_run, run_label
from pruning.pruners import get_pruner, literal_pruners
from pruning.runs import pattern_problem, prune_columns, read_results_table, run_record
from pruning.settings import (
    AllocationSettings,
    CalibrationSettings,
    EvalSettings,
    GDSettings,
    PrunerSettings,
    PruneSettings,
)
from spectra.hill import SPURIOUS_ALPHA
from spectra.models import copy_model
from webapp import cache, read_ahead, state
from webapp.cache import PROX24_SCHEDULE
from webapp.common import chart, one_line, run_page, show_error, show_table
from webapp.figures import comparison_line, runs_for_plots, runs_table
from webapp.state import Context, bind, selection
from webapp.widgets import setting_widget

#: sparsity patterns offered (N:M: N kept of every M consecutive weights of a row)
PATTERNS = ("unstructured", "2:4", "4:8")
#: perplexity datasets offered (the evaluation text of the papers)
EVAL_DATASETS = ("wikitext2", "c4", "ptb")


def prune_settings(ctx: Context, s) -> PruneSettings:
    """The validated :class:`pruning.settings.PruneSettings` of the view's widgets ``s`` (the session state; one-line
    ValueError when invalid), with the Allocation lab's mapping / granularity / metric / bounds and its choice to
    leave flagged fits out of AlphaPruning (``exclude_flagged``). An N:M pattern gives every matrix the same
    sparsity M−N of M: the allocation is then ``uniform`` and the sparsity is the pattern's."""
    pattern, pruner = s.pr_pattern, s.pr_pruner
    if pattern not in PATTERNS:
        raise ValueError(f"unknown pattern {pattern!r}; choose one of: {', '.join(PATTERNS)}")
    problem = pattern_problem(pruner, pattern)
    if problem:
        raise ValueError(problem)
    nm = None if pattern == "unstructured" else pattern
    method = "uniform" if nm else s.pr_alloc
    literal = bool(s.pr_literal) and pruner in literal_pruners()
    al = state.alloc_settings()
    return PruneSettings.from_flat(
        pruner=pruner, allocation=method, sparsity=float(s.pr_S), nm=nm, lam=float(s.pr_lam),
        mapping=al["mapping"], granularity=al["granularity"], metric=al["metric"], xmin_rule=ctx.analysis_rule,
        min_sparsity=al["lo"], max_sparsity=al["hi"], exclude_flagged=bool(al["exclude_flagged"]) and
        method == "alphapruning", nsamples=int(s.pr_nsamples), seqlen=int(s.pr_seqlen), seed=cache.CALIB_SEED,
        gd_steps=int(s.pr_gd_steps), gd_precondition=bool(s.pr_gd_pre),
        pruner_options=dict(get_pruner(pruner).paper_literal) if literal else {})


def eval_settings(s) -> EvalSettings:
    """The evaluation of the view's widgets: the first ``pr_windows`` windows of ``pr_seqlen`` tokens."""
    return EvalSettings(datasets=s.pr_dataset, seqlen=int(s.pr_seqlen), max_windows=int(s.pr_windows))


class PhaseLog:
    """The progress bar of a prune: ``log(fraction, message)`` moves it and keeps every message (``messages``)."""

    def __init__(self, bar):
        self.bar = bar
        self.messages: list[str] = []

    def __call__(self, frac: float, text: str) -> None:
        self.messages.append(text)
        self.bar.progress(min(max(frac, 0.0), 1.0), text=text)


def run_prune(ctx: Context, settings: PruneSettings, ev: EvalSettings) -> dict:
    """Prune a deep copy of the loaded model (``pruning.prune.prune_model``) and evaluate it
    (``pruning.evaluation.perplexity.perplexity``); returns the run's record (:func:`pruning.runs.run_record`;
    keys with ``_``: per-layer records and phase messages)."""
    from pruning.evaluation.perplexity import perplexity
    from pruning.prune import prune_model
    from pruning.report import process_peak_rss_mb

    if ctx.model_key is None:
        raise ValueError("pruning needs the model itself; load a model, not a results file")
    a, cal = settings.allocation, settings.calibration
    method, S = a.method, float(a.sparsity)
    (dataset,), seqlen, windows = ev.dataset_list(), ev.seqlen, ev.max_windows
    plabel = run_label(settings.pruner.name, a.nm, settings.gd.steps, settings.gd.precondition,
                       is_paper_literal(settings.pruner.name, settings.pruner.options))
    t0 = time.perf_counter()
    status = st.status(f"Pruning with {plabel} + {ALLOCATION_LABELS[method]} at {S:.0%} …", expanded=True)
    log = PhaseLog(status.progress(0.0, text="loading the model"))
    lm = cache.load_model_cached(ctx.model_key)
    log(0.01, f"dense perplexity ({dataset}, {windows} windows of {seqlen} tokens; computed once per model and "
              f"setting, then cached)")
    dense = cache.dense_perplexity(ctx.model_key, dataset, seqlen, windows, progress_cb=lambda i, n: log(
        0.01 + 0.02 * i / max(n, 1), f"dense perplexity ({dataset}): window {i}/{n} (computed once, then cached)"))
    norms = calib = None
    if settings.needs_calibration():
        log(0.03, f"calibration windows ({cal.nsamples} × {cal.seqlen} tokens of {cal.dataset})")
        calib = cache.calibration_windows(ctx.model_key, cal.nsamples, cal.seqlen)
    if method in CALIBRATION_METHODS:
        log(0.04, f"{ALLOCATION_LABELS[method]}: calibration input norms of the dense model (cached later)")
        with read_ahead.waiting():
            norms = cache.input_norms(ctx.model_key, cal.nsamples, cal.seqlen)
    flagged = ", flagged fits left out" if a.exclude_flagged else ""
    log(0.05, f"allocation ({ALLOCATION_LABELS[method]}{flagged}), then the calibration inputs of block 0"
              if calib is not None else f"allocation ({ALLOCATION_LABELS[method]}{flagged})")
    model = copy_model(lm.model)

    def cb(done: int, total: int, name: str) -> None:
        from spectra.weights import classify

        log(0.05 + 0.8 * done / max(total, 1), f"block {classify(name)[1]}: pruned {name} ({done}/{total} matrices)")

    res = prune_model(model, lm.tokenizer, settings, progress_cb=cb, progress=False,
                      metrics=cache.metrics_for_alloc(ctx.df), input_norms=norms,
                      calib=None if calib is None else calib.clone())

    def cb_ppl(done: int, total: int) -> None:
        log(0.85 + 0.15 * done / max(total, 1), f"evaluation ({dataset}): window {done}/{total}")

    log(0.85, f"evaluation ({dataset}, {windows} windows of {seqlen} tokens)")
    ppl = perplexity(model, lm.tokenizer, dataset, seqlen=seqlen, max_windows=windows, progress=False,
                     progress_cb=cb_ppl)
    zs = zero_shot(ctx, model, lm.tokenizer, log)
    log(1.0, "done")
    status.update(label=f"Done in {time.perf_counter() - t0:.0f} s: perplexity {dense:.2f} → {ppl.ppl:.2f}",
                  state="complete", expanded=False)
    state.save_pruned(model, ctx.model_key, f"{plabel} + {ALLOCATION_LABELS[method]} {S:.0%}")
    del model
    return run_record(settings, dataset, ppl.seqlen, windows, ppl.to_dict(), model=ctx.label,
                      nsamples=cal.nsamples if res.calibration_shape else 0, dense_ppl=dense, **prune_columns(res),
                      seconds=round(time.perf_counter() - t0, 1), process_peak_rss_mb=round(process_peak_rss_mb(), 1),
                      _records=res.layers, _phases=log.messages, **zs)


def zero_shot(ctx: Context, model, tokenizer, log) -> dict:
    """lm-eval accuracies of the pruned ``model`` (``piqa_acc``, ...) and of the dense model (``dense_piqa_acc``,
    cached) on the tasks chosen on the page (``pr_tasks``, first ``pr_task_limit`` documents); {} when none."""
    s = st.session_state
    tasks = tuple(s.get("pr_tasks") or ())
    if not tasks:
        return {}
    from pruning.evaluation.lmeval import evaluate_tasks

    limit = int(s.pr_task_limit) if s.get("pr_task_limit") else None
    what = f"{', '.join(tasks)}, first {limit} documents each" if limit else ", ".join(tasks)
    log(0.9, f"lm-eval zero-shot of the dense model ({what}; computed once per model and setting, then cached)")
    dense = cache.dense_zero_shot(ctx.model_key, tasks, limit)
    log(0.95, f"lm-eval zero-shot of the pruned model ({what})")
    pruned = evaluate_tasks(model, tokenizer, list(tasks), limit=limit).flat()
    return {**pruned, **{f"dense_{k}": v for k, v in dense.items() if k != "lm_eval_version"}}



def render(ctx: Context) -> None:
    st.header("Prune & evaluate")
    st.caption("Prunes a copy of the loaded model block by block on C4 calibration windows, then measures "
               "WikiText-2 perplexity on the first windows; the progress bar names each phase. Small defaults "
               "finish in about a minute on 2 free cores.")
    s = st.session_state
    nm = s.pr_pattern != "unstructured"
    c = st.columns(5)
    setting_widget(c[0], PrunerSettings, "name", "pr_pruner",
                   note="prox24 (2:4 proximal pruner) produces the 2:4 pattern only")
    setting_widget(c[1], AllocationSettings, "nm", "pr_pattern", choices=PATTERNS,
                   note="unstructured: any weight may go (sparsity and allocation below); N:M: every row keeps N "
                        "of every M consecutive weights, the same pattern in every matrix (allocation uniform)")
    setting_widget(c[2], AllocationSettings, "method", "pr_alloc", format_func=ALLOCATION_LABELS.get, disabled=nm,
                   **bind("pr_alloc", "method", list(ALLOCATION_METHODS)))
    setting_widget(c[3], AllocationSettings, "sparsity", "pr_S", label="sparsity", disabled=nm, **bind("pr_S", "S"))
    setting_widget(c[4], AllocationSettings, "lam", "pr_lam", widget="slider", **bind("pr_lam", "lam"),
                   disabled=nm or s.pr_alloc not in SPECTRAL_METHODS,
                   note="read by AlphaPruning and stable rank only (greyed out for the other allocations)")
    c = st.columns(4)
    setting_widget(c[0], CalibrationSettings, "nsamples", "pr_nsamples")
    setting_widget(c[1], CalibrationSettings, "seqlen", "pr_seqlen", label="tokens per sample / eval window",
                   note="also the length of the evaluation windows here")
    setting_widget(c[2], EvalSettings, "max_windows", "pr_windows")
    setting_widget(c[3], EvalSettings, "datasets", "pr_dataset", choices=EVAL_DATASETS)
    zero_shot_inputs()
    c = st.columns([1, 1, 1, 2])
    c[3].checkbox("paper-literal variant", key="pr_literal", disabled=s.pr_pruner not in literal_pruners(),
                  help="FISTAPruner without the least-squares re-fit of the kept weights; prox24 with the paper's "
                       "plain 1/λmax(H) steps. Off: our defaults, which work on LLM layers (README).")
    setting_widget(c[0], GDSettings, "steps", "pr_gd_steps")
    setting_widget(c[1], GDSettings, "precondition", "pr_gd_pre", disabled=int(s.pr_gd_steps) == 0,
                   note="Off: the paper's plain 1/λmax(H) step")
    if nm:
        n_keep, m = (int(v) for v in s.pr_pattern.split(":"))
        c[2].caption(f"Pattern {s.pr_pattern}: every row keeps {n_keep} of every {m} consecutive weights, "
                     f"{1 - n_keep / m:.0%} sparsity in every matrix, so the allocation is uniform and the "
                     f"allocation / sparsity / λ inputs are ignored (greyed out).")
    if state.alloc_settings()["exclude_flagged"] and s.pr_alloc == "alphapruning" and not nm:
        st.caption(f"AlphaPruning leaves the fits flagged as likely spurious (α > {SPURIOUS_ALPHA:g}) out of its block "
                   f"means (the "
                   "option is set in the Allocation lab).")
    settings = problem = None
    if ctx.model_key is not None:
        try:
            settings = prune_settings(ctx, s)
        except ValueError as exc:
            problem = one_line(exc)
            st.error(problem)
    if st.button("Prune and evaluate", type="primary", key="pr_run", disabled=settings is None):
        try:
            queue = cache.prune_queue()
            note = st.empty()

            def waiting(running: int, waiting: int) -> None:
                note.info(f"Waiting in the queue: {running} prunes are running on this server (at most "
                          f"{queue.slots} at once), {waiting} waiting; this one starts when one finishes.", icon="⏳")

            with queue.slot(waiting):
                note.empty()
                run = run_prune(ctx, settings, eval_settings(s))
            s.runs = s.runs + [run]
            s.load_error = None  # the open model just pruned fine: an older load error no longer applies
        except Exception as exc:  # noqa: BLE001
            show_error(exc, "pruning failed")
    if ctx.model_key is None:
        st.info("A results file is open: load a model in the sidebar to prune it.")
    if s.runs:
        last_run(s.runs[-1])
    tradeoff(ctx)


def zero_shot_inputs() -> None:
    """The lm-eval task choice (off by default) and its number of documents per task."""
    from pruning.evaluation.lmeval import LM_EVAL_REQUIREMENT, OFFLINE_TASKS, lm_eval_version

    c = st.columns([3, 1])
    missing = lm_eval_version() is None
    setting_widget(c[0], EvalSettings, "tasks", "pr_tasks", widget="multiselect", choices=list(OFFLINE_TASKS),
                   disabled=missing, note="lm-evaluation-harness on the dense and the pruned model (its task "
                   "names, prompts and metrics; the local LAMBADA / PIQA files when offline); off when empty")
    setting_widget(c[1], EvalSettings, "task_limit", "pr_task_limit", disabled=missing or not st.session_state.pr_tasks)
    if missing:
        c[0].caption(f"Zero-shot tasks need lm-evaluation-harness: pip install '{LM_EVAL_REQUIREMENT}' "
                     f"(the eval extra), then restart the app.")


def last_run(last: dict) -> None:
    from pruning.collapse import collapse_note, record_sparsities

    answer = comparison_line(state.runs())
    if answer:  # the scenario's answer on the first screen (the trade-off plot below shows every run)
        st.info(answer)
    note = collapse_note(last["ppl"], last["dense_ppl"], record_sparsities(last.get("_records")))
    if note:
        st.warning(note[0].upper() + note[1:], icon="⚠️")
    c = st.columns(5)
    c[0].metric("dense perplexity", f"{last['dense_ppl']:.2f}")
    c[1].metric("pruned perplexity", f"{last['ppl']:,.2f}", delta=f"{last['ppl'] - last['dense_ppl']:+,.2f}",
                delta_color="inverse")
    c[2].metric("achieved sparsity", f"{last['achieved_sparsity']:.2%}")
    c[3].metric("time", f"{last['seconds']:.0f} s")
    c[4].metric("peak memory (whole process)", f"{last['process_peak_rss_mb'] / 1024:.2f} GB",
                help=f"the largest resident set size of the app's process so far (models, analyses, dense and "
                     f"pruned evaluation included); the prune phase alone peaked at "
                     f"{last['peak_rss_mb'] / 1024:.2f} GB")
    accs = [k for k in last if k.endswith("_acc") and not k.startswith("dense_")]
    if accs:
        c = st.columns(len(accs))
        for col, k in zip(c, accs):
            dense = last.get(f"dense_{k}")
            col.metric(f"{k[:-4]} accuracy (lm-eval, n={last.get(k[:-4] + '_n')})", f"{last[k]:.1%}",
                       delta=None if dense is None else f"{100 * (last[k] - dense):+.1f} pts vs dense")
    chart(pplots.achieved_sparsity_figure(last["_records"], title=f"Per-matrix sparsity — {last['label']} + "
                                          f"{ALLOCATION_LABELS[last['allocation']]} {last['sparsity']:.0%}"),
          key="pr_achieved")
    st.markdown("**Runs of this session**")
    show_table(runs_table(), key="pr_runs")


def tradeoff(ctx: Context) -> None:
    """The sparsity / perplexity trade-off of this session's runs and a sweep table, then the layer sections."""
    s = st.session_state
    st.subheader("Sparsity / perplexity trade-off")
    st.text_input("sweep results table (parquet/CSV from `python -m pruning sweep`)", key="pr_sweep_path")
    tables = []
    if s.runs:
        tables.append(runs_for_plots().assign(origin="this session"))
    path = (s.pr_sweep_path or "").strip()
    if path:
        try:
            tables.append(read_results_table(path).assign(origin=Path(path).name))
        except FileNotFoundError as exc:
            st.caption(one_line(exc))
        except Exception as exc:  # noqa: BLE001
            show_error(exc, "sweep table")
    if not tables:
        st.info("No results yet: run a prune above, or point to a sweep table.")
        fista_section(ctx)
        prox24_section(ctx)
        return
    table = pd.concat(tables, ignore_index=True)
    # runs evaluated differently (this session's small runs vs a full sweep, other windows) are never one curve
    # the evaluation protocol is always part of a series' name (a run on 2 windows never passes for one on 8)
    split = [c for c in ("origin", "eval") if c in table.columns and (c == "eval" or table[c].nunique() > 1)]
    dense = None
    if table.get("eval", pd.Series(dtype=str)).nunique() <= 1 and "dense_ppl" in table.columns \
            and table["dense_ppl"].notna().any():
        dense = float(table["dense_ppl"].dropna().iloc[0])
    group = tuple(split) + ("allocation", "pruner")
    table["curve"] = table["allocation"].astype(str)
    lams = table["lam"].dropna().unique() if "lam" in table.columns else []
    if len(lams) > 1:  # several λ: one curve per λ (else a curve would jump between λ at one sparsity)
        has = table["lam"].notna()
        table.loc[has, "curve"] = [f"{a} λ={v:g}" for a, v in zip(table.loc[has, "allocation"], table.loc[has, "lam"])]
    chart(pplots.tradeoff_figure(readable(table), group=("curve", "pruner") + tuple(split), dense=dense,
                                 title="perplexity against sparsity, one curve per allocation × pruner × evaluation"),
          key="pr_tradeoff")
    fista_section(ctx)
    prox24_section(ctx)
    if "lam" in table.columns and table["lam"].notna().any():
        S = st.select_slider("λ effect at sparsity", sorted(table.loc[table["lam"].notna(), "sparsity"].unique()),
                             key="pr_lam_S")
        sub = table[(table["sparsity"] == S) & table["lam"].notna()]
        if sub["lam"].nunique() < 2:
            st.caption(f"λ effect: only one λ was run at {S:.0%} sparsity; run AlphaPruning at another λ (same "
                       f"sparsity) to see how perplexity changes with λ.")
            return
        base = table[(table["sparsity"] == S) & (table["allocation"] == "uniform")] if "allocation" in table else None
        baselines = ({f"uniform + {readable_run(r['pruner'])}": r["ppl"] for _, r in base.iterrows()}
                     if base is not None else {})
        chart(pplots.lambda_effect_figure(readable(sub), group=group, baselines=baselines,
                                          title=f"perplexity against λ at {S:.0%} sparsity"), key="pr_lam_fig")


def layer_request(ctx: Context, prefix: str, button: str) -> Optional[tuple]:
    """A layer selectbox (``{prefix}_layer``) and a button (``{prefix}_btn``); returns the cache arguments
    (model key, layer, calibration samples, tokens) when the button was pressed or they were computed before
    (``{prefix}_done``), else None."""
    names = ctx.df.loc[ctx.df["block"] >= 0, "longname"].tolist()
    if st.session_state.get(f"{prefix}_layer") not in names:
        st.session_state[f"{prefix}_layer"] = names[0]
    c1, c2 = st.columns([3, 1])
    c1.selectbox("layer", names, key=f"{prefix}_layer")
    run_it = c2.button(button, key=f"{prefix}_btn")
    args = (ctx.model_key, st.session_state[f"{prefix}_layer"], *state.calibration())
    return args if run_it or st.session_state.get(f"{prefix}_done") == args else None


def fista_section(ctx: Context) -> None:
    """FISTAPruner's own λ (the L1 weight): its LASSO path on one layer, on demand."""
    if ctx.model_key is None:
        return
    with st.expander("FISTAPruner: effect of its L1 weight λ on one layer"):
        st.caption("FISTAPruner solves min ½‖W*X − WX‖F² + λ‖W*‖₁ per layer and searches λ until the solution "
                   "has the target sparsity. The path below solves it for 10 values of λ on this layer's "
                   "calibration inputs (the calibration settings above; no error correction).")
        args = layer_request(ctx, "pr_fista", "Compute the λ path")
        if args is not None:
            with st.spinner("Solving the LASSO path (cached afterwards) …"):
                path = cache.fista_path(*args)
            st.session_state.pr_fista_done = args
            chart(pplots.fista_path_figure(path, target=float(selection()["S"]),
                                           title=f"{args[1]}: LASSO path"), key="pr_fista_fig")


def prox24_section(ctx: Context) -> None:
    """The 2:4 proximal pruner's growing regularization μ_t on one layer, on demand (``cache.prox24_schedule``)."""
    if ctx.model_key is None:
        return
    with st.expander("2:4 proximal pruner: its regularization schedule on one layer"):
        cfg = PROX24_SCHEDULE
        st.caption("prox24 takes proximal-gradient steps W ← prox_{μ_t R}(W − ∇f(W)/L) on the layer's loss "
                   "f = ½‖W*X − WX‖F², with R = Σ|w_i w_j w_k| over the triples of every group of 4 (zero exactly "
                   "when the group is 2:4) and a growing strength μ_t = mu0·growth^t / rms(V), until every group "
                   "of 4 has at most 2 non-zeros; the steps run on the rescaled weights V = W·diag(√H_jj) (ours: "
                   "the same loss, unit-diagonal curvature). Shown on this layer's calibration inputs (the calibration "
                   f"settings above; no error correction) with a cheaper schedule than the pruner's default: "
                   f"mu0 = {cfg['mu0']:g}, growth = {cfg['growth']:g} (default 1.1), {cfg['dtype']} iterates.")
        args = layer_request(ctx, "pr_prox", "Compute the schedule")
        if args is not None:
            with st.spinner("Running the 2:4 proximal pruner on this layer (cached afterwards) …"):
                sched, meta = cache.prox24_schedule(*args)
            st.session_state.pr_prox_done = args
            chart(pplots.prox24_schedule_figure(sched, title=f"{args[1]}: 2:4 proximal schedule"),
                  key="pr_prox_fig")
            end = ("every group of 4 reached ≤ 2 non-zeros through the prox" if meta["converged"] else
                   f"{meta['forced_groups']} of {meta['groups']} groups were still not 2:4 after "
                   f"{cfg['max_steps']} steps and kept their 2 largest weights")
            st.caption(f"{meta['steps']} proximal steps on {meta['groups']} groups of 4 (rms(W) = "
                       f"{meta['rms']:.4g}); {end}.")


if __name__ == "__main__":
    run_page(render)
