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
# # 3 · From α to sparsity
#
# A **layer-wise sparsity allocation** turns per-matrix information into one sparsity per matrix whose
# *parameter-weighted mean equals the global target S*. This notebook shows
#
# 1. **AlphaPruning** (Lu et al., NeurIPS 2024): block-mean α → linear map to ratios in [1 − λ, 1 + λ] → rescaled
#    so that the mean is S. Higher α (less well trained) ⇒ more sparsity;
# 2. a **λ sweep** — how λ widens the allocation — and the **linear vs log** mapping;
# 3. the allocations of its peers side by side: **uniform**, **OWL** (outlier-weighted, from calibration
#    activations), **ERK** (shape only), **global magnitude** and **LAMP** (one threshold over all weights),
#    and the **stable-rank** variant of AlphaPruning.
#
# Everything comes from `pruning.allocation.allocate` / `pruning.prune.compute_allocation`; figures from
# `pruning.plots`.

# %% tags=["parameters"]
# Parameters
QUICK = True      # True: OWL's calibration is NSAMPLES × SEQLEN = 8 × 128 tokens; False: 128 × 512 (PruneSettings default)
MODEL = None      # None = built-in SmolLM2-135M-Instruct; or a Hugging Face id, a local HF folder, a .gguf file
SPARSITY = 0.7    # global target S (AlphaPruning and OWL report 70% unstructured)
LAM = 0.3         # AlphaPruning's λ (its code's "epsilon"; reference default 0.3, tuned values 0.2–0.5)
LAMBDAS = None    # λ sweep; None = [0, 0.05, ..., 0.5]
NSAMPLES = None   # OWL calibration windows; None = by QUICK
SEQLEN = None     # tokens per calibration window; None = by QUICK

# %%
import warnings

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from IPython.display import display

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm progress bars without ipywidgets

from transformers.utils import logging as hf_logging

from pruning.allocation import ALLOCATION_METHODS, allocate, alphapruning_ratios, get_allocation
from pruning.block_loop import collect_input_norms
from pruning.evaluation.data import get_calibration
from pruning.plots import allocation_figure, allocation_summary, block_sparsity, lambda_range_figure
from pruning.prune import compute_allocation
from pruning.settings import PruneSettings
from spectra.analyze import analyze, block_aggregate
from spectra.models import load_model

hf_logging.disable_progress_bar()   # no "Loading weights" bars in the outputs

LAMBDAS = LAMBDAS if LAMBDAS is not None else [round(0.05 * i, 2) for i in range(11)]
NSAMPLES = NSAMPLES or (8 if QUICK else 128)
SEQLEN = SEQLEN or (128 if QUICK else 512)
pd.set_option("display.precision", 4)
pd.set_option("display.width", 160)

# %%
df = analyze(MODEL, progress=False)                    # α (peak rule, AlphaPruning's default) per matrix
print(f"{df.attrs['metadata']['model']}: {len(df)} matrices in {df['block'].nunique()} blocks; "
      f"target sparsity S = {SPARSITY}")

# %% [markdown]
# ## 1 · The AlphaPruning mapping, step by step
#
# With m_b the mean α of block b (`block_aggregate`) and p_i the parameter count of matrix i:
#
# $$r_b = \frac{m_b - \min m}{\max m - \min m}\,(s_2 - s_1) + s_1,\quad s_1 = 1-\lambda,\ s_2 = 1+\lambda,
#   \qquad s_i = r_{b(i)} \cdot \frac{S \sum_j p_j}{\sum_j p_j\, r_{b(j)}} .$$
#
# `alphapruning_ratios` gives r; `allocate(df, "alphapruning", S, lam=λ)` gives the final sparsities (and keeps
# every value within [0, 0.99] by re-solving the scale when needed; `clip=False` gives the raw formula).

# %%
alloc_ap = allocate(df, "alphapruning", SPARSITY, lam=LAM)
blocks = block_aggregate(df, "alpha").rename(columns={"alpha": "mean α"})
blocks["ratio r"] = alphapruning_ratios(blocks["mean α"].to_numpy(), LAM)
blocks["sparsity"] = block_sparsity(alloc_ap).reindex(blocks["block"]).to_numpy()
print(f"λ = {LAM}: block sparsities from {blocks['sparsity'].min():.3f} to {blocks['sparsity'].max():.3f}; "
      f"parameter-weighted mean {np.average(alloc_ap['sparsity'], weights=alloc_ap['num_params']):.6f}")
print("note:", alloc_ap.attrs["allocation"].get("note", "none"))
blocks[["block", "mean α", "ratio r", "sparsity"]].head(8)

# %%
fig = go.Figure(go.Scatter(x=blocks["mean α"], y=100 * blocks["sparsity"], mode="markers+text",
                           text=blocks["block"], textposition="top center", marker=dict(size=8),
                           hovertemplate="block %{text}<br>mean α %{x:.3f}<br>sparsity %{y:.2f}%<extra></extra>"))
fig.add_hline(y=100 * SPARSITY, line=dict(dash="dot", color="#333"), annotation_text=f"target {SPARSITY:.0%}")
fig.update_layout(title=f"AlphaPruning (λ = {LAM}): block sparsity is linear in the block's mean α",
                  xaxis_title="mean α of the block (dimensionless)", yaxis_title="sparsity of the block (%)",
                  template="plotly_white", height=420)
fig.show()

# %% [markdown]
# ## 2 · The λ sweep
#
# λ sets how far the allocation departs from uniform: λ = 0 is uniform, and the range of ratios is 2λ before the
# rescaling. Large λ at a high target pushes the sparsest blocks against the 0.99 cap; the mean stays at S.

# %%
sweep = {f"λ={lam:g}": allocate(df, "alphapruning", SPARSITY, lam=lam) for lam in LAMBDAS}
lam_table = allocation_summary(sweep)
lam_table.insert(1, "lam", LAMBDAS)
lambda_range_figure(lam_table, title=f"AlphaPruning at S = {SPARSITY}: per-matrix sparsity range against λ").show()
lam_table.drop(columns="note")

# %% [markdown]
# **Which block hits the cap, and why?** The min–max map is driven by the extreme block means, so one block whose
# mean α is inflated by a few spurious fits (α > 8, no clear power-law tail; see notebook 2) takes the largest
# sparsity. Look at the block with the largest mean α:

# %%
top_block = int(blocks.loc[blocks["mean α"].idxmax(), "block"])
print(f"block {top_block}: mean α {blocks['mean α'].max():.2f} (median over blocks {blocks['mean α'].median():.2f}), "
      f"sparsity {blocks.loc[blocks['block'] == top_block, 'sparsity'].iloc[0]:.3f} at λ = {LAM}")
df[df["block"] == top_block][["longname", "alpha", "D", "num_pl_spikes", "status", "warning"]]

# %%
shown = {k: v for k, v in sweep.items() if k in {f"λ={l:g}" for l in (0.0, 0.1, LAM, max(LAMBDAS))}}
allocation_figure(shown, target=SPARSITY, highlight=f"λ={LAM:g}",
                  title="Block sparsity for a few λ (the thick curve is the λ used below)").show()

# %% [markdown]
# ### Linear vs log mapping, block vs matrix granularity
#
# The *log* mapping applies the same min–max map to ln α (tried in the paper's rebuttal, about the same
# results): it compresses large α, so the few under-trained blocks get relatively less extra sparsity.
# *Matrix* granularity uses each matrix's own α instead of its block mean.

# %%
variants = {
    "linear, block (default)": alloc_ap,
    "log, block": allocate(df, "alphapruning", SPARSITY, lam=LAM, mapping="log"),
    "linear, matrix": allocate(df, "alphapruning", SPARSITY, lam=LAM, granularity="matrix"),
}
allocation_figure(variants, target=SPARSITY, title=f"AlphaPruning variants (λ = {LAM})").show()
allocation_figure(variants, by="matrix", target=SPARSITY, title="The same, per matrix").show()
variant_diff = pd.DataFrame({name: {"max |Δ| vs default": float(np.max(np.abs(a["sparsity"] - alloc_ap["sparsity"]))),
                                    "weighted mean": float(np.average(a["sparsity"], weights=a["num_params"]))}
                             for name, a in variants.items()}).T
variant_diff

# %% [markdown]
# ## 3 · Peer allocations side by side
#
# * **uniform** — every matrix gets S.
# * **OWL** (Yin et al., ICML 2024) — per block, the share D of Wanda scores |W|·‖X‖ above 5× their mean (outlier
#   features, from calibration activations); more outliers ⇒ less sparsity, within a range of width
#   2·λ_OWL = 0.16 around S.
# * **ERK** (Evci et al., 2020) — density ∝ (n_in + n_out)/(n_in · n_out): smaller matrices stay denser.
# * **global** — one magnitude threshold over all matrices; **LAMP** (Lee et al., ICLR 2021) — one threshold on
#   a rescaled magnitude score.
# * **stable_rank** — AlphaPruning's map over the stable rank instead of α.
#
# OWL needs the dense model's input norms on calibration windows (`collect_input_norms`); global / LAMP need the
# weights; `compute_allocation` gathers what each method needs.

# %%
lm = load_model(MODEL)
calib = get_calibration(lm.tokenizer, nsamples=NSAMPLES, seqlen=SEQLEN, seed=0)
norms = collect_input_norms(lm.model, calib)
print(f"calibration: {tuple(calib.shape)} tokens (C4); input norms of {len(norms)} matrices")

allocations = {}
# every registered method but those that need more than this analysis: a measured cost table (sensitivity: notebook
# 06) or an analysis of their own (FARMS α: `python -m spectra --farms`)
SIDE_BY_SIDE = [m for m in ALLOCATION_METHODS if get_allocation(m).reads != "table" and not get_allocation(m).analysis]
for method in SIDE_BY_SIDE:
    settings = PruneSettings.from_flat(allocation=method, sparsity=SPARSITY, lam=LAM, nsamples=NSAMPLES, seqlen=SEQLEN)
    allocations[method] = compute_allocation(lm.model, settings, calib=calib, metrics=df, input_norms=norms)
peers = allocation_summary(allocations)
peers

# %%
allocation_figure(allocations, target=SPARSITY, highlight="alphapruning",
                  title=f"Block sparsity of every allocation method at S = {SPARSITY}").show()

# %%
per_block = pd.DataFrame({m: block_sparsity(a) for m, a in allocations.items()})
by_role = pd.DataFrame({m: a.groupby("role", sort=False)["sparsity"].mean() for m, a in allocations.items()})
varying = per_block.loc[:, per_block.std() > 1e-12]          # uniform and ERK are the same in every block
print("Spearman correlation of the block sparsities between the methods that vary along depth:")
display(varying.corr(method="spearman").round(2))
print("mean sparsity per role (matrix type):")
by_role

# %% [markdown]
# How to read it:
#
# * every curve has the same parameter-weighted mean S (table above, `weighted_mean`);
# * AlphaPruning and stable_rank follow spectral metrics of the blocks (block mode: every matrix of a block gets
#   the same sparsity); OWL follows the activation outliers, within its deliberately narrow range (2 × 0.08);
# * ERK depends only on shapes: identical in every block, it keeps the small k/v projections dense and prunes
#   the large MLP matrices more; global magnitude and LAMP depend on the weight magnitudes of each matrix, so
#   they vary along depth *and* between roles (LAMP's rescaled score also keeps small matrices denser);
# * the methods disagree substantially on *which* blocks to prune (correlation table): the allocation is a real
#   design choice, not a detail.
#
# Which allocation gives the best pruned model is measured in notebook 4.
