# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 4 · Pruning trade-offs
#
# Prune the model with **magnitude**, **Wanda** and **SparseGPT** under the **uniform** and **AlphaPruning**
# allocations at a few sparsities, evaluate WikiText-2 perplexity, and plot perplexity against sparsity.
#
# The runs are a `pruning.sweep` table (one row per cell, resumable). Give `SWEEP_TABLE` (a parquet file written by
# `python -m pruning sweep` or by this notebook) to **read** existing results instead of recomputing.
#
# **Quick mode** is a smoke-sized version: magnitude and Wanda only, 2 sparsities, 4 calibration windows of 64
# tokens and 4 evaluation windows of 128 tokens — the numbers show the mechanics, not publishable values
# (perplexity on 512 tokens is noisy; SparseGPT is left out because one run takes minutes on a CPU).
# `QUICK = False` adds SparseGPT and five sparsities, calibrates on 128 C4 windows of 512 tokens (the
# `PruneSettings` default; the papers use 2048) and evaluates on the full WikiText-2 test set at 2048 tokens per
# window, the literature's protocol.

# %% tags=["parameters"]
# Parameters
QUICK = True          # see above
MODEL = None          # None = built-in SmolLM2-135M-Instruct; or a Hugging Face id, a local HF folder, a .gguf file
SWEEP_TABLE = None    # path of an existing sweep table (.parquet) to read; None = run the sweep here
SWEEP_OUT = None      # where a sweep run here is written (finished cells in it are reused); None = under the temp folder
PRUNERS = None        # None = ["magnitude", "wanda"] if QUICK else ["magnitude", "wanda", "sparsegpt"]
ALLOCATIONS = None    # None = ["uniform", "alphapruning"]
SPARSITIES = None     # None = [0.5, 0.7] if QUICK else [0.3, 0.4, 0.5, 0.6, 0.7]
LAM = 0.3             # AlphaPruning's λ
NSAMPLES = None       # calibration windows; None = 4 if QUICK else 128
SEQLEN = None         # calibration window length; None = 64 if QUICK else 512
EVAL_SEQLEN = None    # evaluation window length; None = 128 if QUICK else the model default (2048)
MAX_WINDOWS = None    # evaluation windows; None = 4 if QUICK else all

# %%
import tempfile
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm progress bars without ipywidgets

import pandas as pd
from IPython.display import display
from transformers.utils import logging as hf_logging

from pruning.plots import lambda_effect_figure, perplexity_bar_figure, tradeoff_figure
from pruning.settings import PruneSettings
from pruning.sweep import SweepSpec, cell_key, expand, load_table, run_sweep
from spectra.models import resolve_source

hf_logging.disable_progress_bar()   # the sweep loads the model once per run: no "Loading weights" bars

PRUNERS = PRUNERS or (["magnitude", "wanda"] if QUICK else ["magnitude", "wanda", "sparsegpt"])
ALLOCATIONS = ALLOCATIONS or ["uniform", "alphapruning"]
SPARSITIES = SPARSITIES or ([0.5, 0.7] if QUICK else [0.3, 0.4, 0.5, 0.6, 0.7])
NSAMPLES = NSAMPLES or (4 if QUICK else 128)
SEQLEN = SEQLEN or (64 if QUICK else 512)
EVAL_SEQLEN = EVAL_SEQLEN or (128 if QUICK else None)
MAX_WINDOWS = MAX_WINDOWS or (4 if QUICK else None)
pd.set_option("display.precision", 4)
pd.set_option("display.width", 160)

# %% [markdown]
# ## 1 · Read the sweep table, or run the sweep

# %%
if SWEEP_TABLE is not None:
    if not Path(SWEEP_TABLE).is_file():
        raise FileNotFoundError(f"SWEEP_TABLE={SWEEP_TABLE!r} does not exist; set SWEEP_TABLE = None to run the sweep")
    table = load_table(SWEEP_TABLE)
    table_source = f"read from {SWEEP_TABLE}"
else:
    if SWEEP_OUT is None:
        out_dir = Path(tempfile.gettempdir()) / "spectral-pruning-lab" / "sweeps"
        out_dir.mkdir(parents=True, exist_ok=True)
        SWEEP_OUT = out_dir / f"notebook04_{'quick' if QUICK else 'full'}.parquet"
    spec = SweepSpec(model=MODEL, sparsities=SPARSITIES, allocations=ALLOCATIONS, pruners=PRUNERS, lams=[LAM],
                     base=PruneSettings.from_flat(nsamples=NSAMPLES, seqlen=SEQLEN, lam=LAM),
                     eval_dataset="wikitext2", eval_seqlen=EVAL_SEQLEN, max_windows=MAX_WINDOWS)
    table = run_sweep(spec, SWEEP_OUT, progress=False, log=print)   # finished cells of an earlier run are skipped
    table_source = f"computed into {SWEEP_OUT}"
print(f"sweep table {table_source}: {len(table)} rows")

# %% [markdown]
# A sweep file can hold earlier runs with other settings. After a run here, exactly this run's cells are kept
# (by their keys); a table that was read is shown for one model and evaluation setting — the one with the most
# rows — and the others are listed.

# %%
if table.empty or "kind" not in table.columns:
    raise ValueError("the sweep table is empty or not a pruning.sweep table")
group_cols = ["model", "eval_dataset", "eval_seqlen", "max_windows"]
if SWEEP_TABLE is None:
    label, ev_settings = resolve_source(MODEL).label, spec.eval_settings()
    keys = {cell_key(label, None, ev_settings)} | {cell_key(label, s, ev_settings) for s in expand(spec)}
    sel = table[table["key"].isin(keys)]
    chosen = tuple(sel[group_cols].iloc[0])
else:
    groups = table.groupby(group_cols, dropna=False).size().sort_values(ascending=False)
    chosen = groups.index[0]
    if len(groups) > 1:
        print("the table holds several models / evaluation settings; using the largest group:")
        display(groups.rename("rows").to_frame())
    sel = table[(table[group_cols].astype(str) == pd.Series(chosen, index=group_cols).astype(str)).all(axis=1)]
dense_rows = sel[sel["kind"] == "dense"]
dense_ppl = float(dense_rows["ppl"].iloc[0]) if len(dense_rows) else float("nan")
pruned = sel[(sel["kind"] == "pruned") & (sel["nm"].fillna("") == "")].copy()
print(f"model {chosen[0]}, {chosen[1]} perplexity ({int(dense_rows['nwindows'].iloc[0]) if len(dense_rows) else '?'} "
      f"windows × {chosen[2]} tokens): dense {dense_ppl:.3f}; {len(pruned)} pruned runs")

# %%
repeats = pruned.groupby(["pruner", "allocation", "sparsity"]).size()
if (repeats > 1).any():
    print(f"{int((repeats > 1).sum())} (pruner, allocation, sparsity) cells were run with several settings "
          f"(λ, calibration, ...): the table shows the median perplexity, the figure every run")
results = (pruned.pivot_table(index=["pruner", "allocation"], columns="sparsity", values="ppl", aggfunc="median")
           .sort_index())
results.columns = [f"{c:.0%}" for c in results.columns]
results

# %% [markdown]
# ## 2 · Perplexity against sparsity

# %%
tradeoff_figure(pruned, dense=dense_ppl,
                title=f"WikiText-2 perplexity against sparsity ({chosen[0]}; dotted: dense model)").show()

# %% [markdown]
# ## 3 · Does the AlphaPruning allocation help?
#
# Ratio of perplexities AlphaPruning / uniform for the same pruner and sparsity (< 1: AlphaPruning is better).
# In the papers the gain grows with sparsity (e.g. LLaMA-7B at 70 %, Wanda: 85.8 → 23.9).

# %%
med = pruned.groupby(["allocation", "pruner", "sparsity"])["ppl"].median()
if {"uniform", "alphapruning"} <= set(pruned["allocation"]):
    gain = (med.loc["alphapruning"] / med.loc["uniform"]).dropna().unstack("sparsity")
    gain.columns = [f"{c:.0%}" for c in gain.columns]
    print("perplexity ratio AlphaPruning / uniform:")
    display(gain)
    top = pruned["sparsity"].max()
    at_top = med.xs(top, level="sparsity")
    perplexity_bar_figure({"dense": dense_ppl, **{f"{p} + {a}": v for (a, p), v in at_top.items()}},
                          title=f"Perplexity at {top:.0%} sparsity").show()
else:
    print("the table has no uniform/alphapruning pair to compare")

# %%
lam_counts = pruned[pruned["allocation"] == "alphapruning"].groupby("sparsity")["lam"].nunique()
if len(lam_counts) and lam_counts.max() > 1:
    s_best = lam_counts.idxmax()
    d = pruned[(pruned["sparsity"] == s_best) & (pruned["allocation"] == "alphapruning")]
    base = pruned[(pruned["sparsity"] == s_best) & (pruned["allocation"] == "uniform")]
    lambda_effect_figure(d, baselines={f"uniform + {r.pruner}": r.ppl for r in base.itertuples()},
                         title=f"Effect of λ at {s_best:.0%} sparsity").show()
else:
    print("one λ per sparsity in this table: no λ-effect plot (sweep several λ with `python -m pruning sweep`)")

# %% [markdown]
# ## 4 · Checks and costs
#
# Every run records the target and the achieved fraction of exact zeros (parameter-weighted over the block
# matrices) and its timings.

# %%
checks = pruned[["pruner", "allocation", "sparsity", "target_sparsity", "achieved_sparsity", "prune_seconds",
                 "eval_seconds"]].sort_values(["pruner", "allocation", "sparsity"]).reset_index(drop=True)
checks["|achieved − target|"] = (checks["achieved_sparsity"] - checks["target_sparsity"]).abs()
checks

# %% [markdown]
# **Reading the quick-mode numbers.** Four windows of 128 tokens are enough to see the large effects the
# literature reports — magnitude degrades much faster than Wanda, and every method degrades sharply between 50 %
# and 70 % — but a difference of a few percent between two runs (e.g. between the allocations at 50 %) needs the
# full evaluation set before it can be trusted. Re-run with `QUICK = False` (hours on a CPU, minutes on a GPU)
# or point `SWEEP_TABLE` at a full sweep made with `python -m pruning sweep`.
