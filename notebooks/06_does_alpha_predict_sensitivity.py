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
# # 6 · Does α predict which blocks matter?
#
# Every layer-wise allocation bets on a signal: AlphaPruning gives more sparsity to blocks with a **higher α**
# (less well trained by HT-SR's reading), OWL to blocks with fewer activation outliers, DLP to blocks with a higher
# mean Wanda score, many heuristics to deeper blocks. This notebook *measures* the bet on the model itself: each
# block is pruned on its own (one-shot from the dense calibration statistics, the rest dense) and its cost is the
# rise of the mean token NLL on held-out C4 (validation documents 1000–1999 — never WikiText-2 test). The
# `marginal` mode measures what an allocation should equalise: the cost of one more step δ of sparsity in block b
# when every block is already at S. Then: Spearman ρ and Kendall τ of every signal against the cost, with a
# permutation p-value, and the allocation read from the measurement itself.

# %% tags=["parameters"]
# Parameters
QUICK = True          # True: the built-in model, 2 held-out windows of 32 tokens, `alone` only; False: both modes
MODEL = None          # None = built-in SmolLM2-135M-Instruct (full mode: + gemma3); or an HF id / folder / .gguf
PRUNER = "wanda"      # one-shot pruner: wanda, magnitude, sparsegpt
SPARSITY = 0.7        # the operating point S
LAM = 0.3             # AlphaPruning's λ for the allocations compared at the end
TABLE_FOLDER = None   # folder of `python -m pruning sensitivity` tables (MODEL_PRUNERxx_MODE.parquet) to read

# %%
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm progress bars without ipywidgets

import pandas as pd
from IPython.display import display

from pruning.allocation import allocate
from pruning.calib_stats import DenseWeights, dense_stats, prune_from_stats
from pruning.evaluation.perplexity import perplexity
from pruning.plots_sensitivity import cost_bars_figure, signal_scatter_figure
from pruning.sensitivity import SensitivitySettings, measure, read_table
from pruning.settings import CalibrationSettings
from pruning.signals import format_verdict, sensitivity_allocation, verdict
from spectra.analyze import AnalysisSettings, analyze
from spectra.models import load_model
from spectra.weights import weight_table

pd.set_option("display.precision", 4)
pd.set_option("display.width", 160)

if MODEL is not None:
    MODELS = [MODEL]
elif QUICK:
    MODELS = ["builtin"]
else:
    MODELS = ["builtin", "gemma3"]
MODES = ["alone"] if QUICK else ["alone", "marginal"]
if QUICK:
    SETTINGS = dict(calib=CalibrationSettings(nsamples=4, seqlen=64), eval_seqlen=32, eval_windows=2, permutations=2000)
else:
    SETTINGS = dict(calib=CalibrationSettings(nsamples=16, seqlen=256), eval_seqlen=256, eval_windows=8)

# %% [markdown]
# ## The measurement
# One walk over the blocks: the hidden states entering block b are the reference model's for every candidate that
# changes block b, so each candidate runs from its own block on (about half the work of one full pass per block).

# %%
tables, models = {}, {}
for name in MODELS:
    try:
        models[name] = load_model(name)
    except Exception as exc:  # a model that is not installed is skipped, with the reason
        print(f"{name}: not available ({str(exc).splitlines()[0]})")
        continue
    for mode in MODES:
        s = SensitivitySettings(pruner=PRUNER, sparsity=SPARSITY, mode=mode, **SETTINGS)
        path = Path(TABLE_FOLDER) / f"{name}_{PRUNER}{int(SPARSITY * 100)}_{mode}.parquet" if TABLE_FOLDER else None
        tables[name, mode] = read_table(path) if path is not None and path.exists() else measure(
            models[name], s, None, log=print, progress=False)
        meta = tables[name, mode].attrs["sensitivity"]
        print(f"{name} {mode}: reference held-out perplexity {meta['reference_ppl']:.2f}")

# %% [markdown]
# ## Δ per block, with the signals beside it
# Bars: the measured cost (nats per token). Lines: each signal min–max normalised to [0, 1]. If AlphaPruning's bet
# held, the α line would fall where the bars rise.

# %%
for (name, mode), t in tables.items():
    fig = cost_bars_figure(t, [c for c in ("alpha", "alpha_farms", "outlier_ratio", "depth") if c in t.columns],
                           title=f"{name}: {PRUNER} {SPARSITY:.0%}, {mode}")
    fig.show()

# %% [markdown]
# ## The verdict
# ρ and τ of each signal against Δ; `p_perm` is a two-sided permutation p-value of ρ (seeded). `assumed_sign` is
# the sign of ρ the method that uses the signal bets on (AlphaPruning: higher α ⇒ less important ⇒ ρ < 0).

# %%
verdicts = []
for (name, mode), t in tables.items():
    v = verdict(t, permutations=SETTINGS.get("permutations", 10000), seed=0)
    print(f"== {name}, {mode}\n{format_verdict(v)}\n")
    verdicts.append(v.assign(model=name, mode=mode))
verdict_table = pd.concat(verdicts, ignore_index=True)
display(verdict_table[["model", "mode", "signal", "n", "rho", "tau", "p_perm", "assumed_sign", "agrees"]])

# %%
for (name, mode), t in tables.items():
    row = verdict_table[(verdict_table["model"] == name) & (verdict_table["mode"] == mode) &
                        (verdict_table["signal"] == "alpha")]
    signal_scatter_figure(t, "alpha", row.iloc[0].to_dict() if len(row) else None).show()

# %% [markdown]
# ## The allocation read from the measurement
# AlphaPruning's mapping applied to Δ instead of α (lower cost ⇒ more sparsity), against uniform and AlphaPruning at
# the same λ, each pruned one-shot from the same dense statistics and scored on the same held-out windows. This
# allocation is **data-driven**: it used held-out text. Choose λ on held-out text (`python -m pruning tune`-style)
# and report on WikiText-2 test only after that (bench/RESULTS_sensitivity.md).

# %%
rows = []
for (name, mode), t in tables.items():
    lm = models[name]
    s = SensitivitySettings(pruner=PRUNER, sparsity=SPARSITY, mode=mode, **SETTINGS)
    stats = dense_stats(lm.model, lm.tokenizer, s.calib)
    metrics = analyze(lm.model, AnalysisSettings(xmin_rule=s.xmin_rule), progress=False)
    table = weight_table(lm.model)
    table = table[table["block"] >= 0].reset_index(drop=True)
    allocations = {"uniform": SPARSITY,
                   "alphapruning": allocate(metrics, "alphapruning", SPARSITY, lam=LAM),
                   f"sensitivity ({mode})": sensitivity_allocation(table, t, SPARSITY, lam=LAM)}
    dense = DenseWeights(lm.model)
    for label, a in allocations.items():
        target = a if isinstance(a, float) else dict(zip(a["longname"], a["sparsity"].astype(float)))
        prune_from_stats(lm.model, stats, target, PRUNER)
        ppl = perplexity(lm.model, lm.tokenizer, s.eval_dataset, seqlen=s.eval_seqlen, max_windows=s.eval_windows,
                         progress=False).ppl
        dense.restore()
        rows.append({"model": name, "mode": mode, "allocation": label, "lam": None if label == "uniform" else LAM,
                     "held-out ppl (one-shot)": ppl})
one_shot = pd.DataFrame(rows)
display(one_shot)

# %% [markdown]
# ## Reading
# A signal predicts the cost when |ρ| is large and `p_perm` small; it supports its allocation when ρ has the sign
# the allocation assumes (`agrees`). The measured table itself is the allocation's best signal on held-out text —
# a cheap signal is worth using only as far as it ranks the blocks as the measurement does.
