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
# # 5 · Spectral report
#
# Set a model in the first cell — `None` for the built-in SmolLM2-135M-Instruct, a Hugging Face id, a local
# Hugging Face folder or a `.gguf` file — run all cells, and get the standard figures and tables of an HT-SR
# spectral report, shown here and exported to **one self-contained HTML file** (plotly.js embedded, opens
# offline).

# %% tags=["parameters"]
# Parameters
QUICK = True          # True: 3 example ESDs; False: 6, plus the KS curve of each
MODEL = None          # None = built-in SmolLM2-135M-Instruct; or a Hugging Face id, a local HF folder, a .gguf file
XMIN_RULE = "peak"    # power-law xmin rule: peak (AlphaPruning), ks (weightwatcher), peak_ref, median
SPARSITY = 0.7        # target of the AlphaPruning allocation shown in the report
LAM = 0.3             # AlphaPruning's λ
REPORT_PATH = None    # output .html; None = a new file under the system temp folder (never inside the repo)
TITLE = None          # None = "Spectral report: <model>"
OVERWRITE = False     # replace REPORT_PATH if it exists

# %%
import datetime as dt
import re
import tempfile
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm progress bars without ipywidgets

import numpy as np
import pandas as pd
from IPython.display import display

from pruning.allocation import allocate
from pruning.plots import allocation_figure, allocation_summary
from spectra.analyze import AnalysisSettings, analyze, block_aggregate, role_summary
from spectra.html_report import ReportSection, write_html_report
from spectra.metrics import OVER_TRAINED, UNDER_TRAINED
from spectra.plots import esd_mp_figure, heatmap_figure, ks_curve_figure, metric_depth_figure, metric_histogram_figure

pd.set_option("display.precision", 4)
pd.set_option("display.width", 160)

# %%
df = analyze(MODEL, AnalysisSettings(xmin_rule=XMIN_RULE, keep_eigs=True), progress=False)
meta = df.attrs["metadata"]
model_label = meta["model"]
TITLE = TITLE or f"Spectral report: {model_label}"
if REPORT_PATH is None:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model_label).strip("_")
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    REPORT_PATH = Path(tempfile.gettempdir()) / "spectral-pruning-lab" / "reports" / f"spectral_report_{slug}_{stamp}.html"
REPORT_PATH = Path(REPORT_PATH)
print(f"{model_label}: {len(df)} matrices in {df['block'].nunique()} blocks, xmin rule {XMIN_RULE!r}")

# %% [markdown]
# ## Summary

# %%
fitted = df[np.isfinite(df["alpha"])]
status_counts = df["status"].value_counts().reindex(["ok", "over-trained", "under-trained", "failed"], fill_value=0)
summary = pd.DataFrame({
    "value": [model_label, len(df), int(df["block"].nunique()), int(df["num_params"].sum()), XMIN_RULE,
              float(fitted["alpha"].median()), float(fitted["alpha"].mean()),
              float(np.average(fitted["alpha"], weights=fitted["num_params"])),
              *[int(v) for v in status_counts.values]],
}, index=["model", "matrices", "blocks", "parameters in block matrices", "xmin rule", "median α", "mean α",
          "parameter-weighted mean α", *[f"status: {s}" for s in status_counts.index]])
summary_text = (f"{model_label}: {len(df)} block weight matrices analysed with the {XMIN_RULE!r} xmin rule. "
                f"Median α = {fitted['alpha'].median():.2f}; {status_counts['ok']} matrices have α in the "
                f"typical {OVER_TRAINED:g}–{UNDER_TRAINED:g} range, {status_counts['over-trained']} below "
                f"{OVER_TRAINED:g}, {status_counts['under-trained']} above {UNDER_TRAINED:g} and "
                f"{status_counts['failed']} could not be fitted.")
print(summary_text)
summary

# %% [markdown]
# ## α across depth and roles

# %%
blocks = block_aggregate(df, "alpha")
roles = role_summary(df, "alpha")
fig_depth = metric_depth_figure(df, "alpha", aggregate=blocks.set_index("block")["alpha"],
                                title="α of every matrix along depth (black: block mean)")
fig_heat = heatmap_figure(df, "alpha", title="α by block and role")
fig_hist = metric_histogram_figure(df, "alpha", title="Distribution of α by role")
for f in (fig_depth, fig_heat, fig_hist):
    f.show()
display(roles)

# %% [markdown]
# ## Other spectral metrics along depth

# %%
other_metrics = ["alpha_weighted", "stable_rank", "log_spectral_norm", "entropy"]
fig_other = {m: metric_depth_figure(df, m, title=f"{m} along depth") for m in other_metrics}
for f in fig_other.values():
    f.show()
per_block = blocks.rename(columns={"alpha": "mean α"})
for m in other_metrics:
    per_block[f"mean {m}"] = block_aggregate(df, m)[m].to_numpy()
per_block

# %% [markdown]
# ## Example ESDs
#
# The matrices with the smallest, median and largest α (and, in full mode, the quartiles and the extremes of
# the other end), each with its fitted power-law tail and the Marchenko–Pastur bulk.

# %%
ranked = fitted.sort_values("alpha").reset_index(drop=True)
quantiles = [0.0, 0.5, 1.0] if QUICK else [0.0, 0.1, 0.25, 0.5, 0.75, 1.0]
picks = ranked.iloc[sorted({int(round(qq * (len(ranked) - 1))) for qq in quantiles})]
fig_esd = []
for _, r in picks.iterrows():
    f = esd_mp_figure(r["evals"], r, r["rows"], r["cols"],
                      title=f"{r['longname']}: α = {r['alpha']:.2f}, D = {r['D']:.3f}, {r['status']}")
    fig_esd.append(f)
    f.show()
    if not QUICK:
        k = ks_curve_figure(r["evals"], r, XMIN_RULE, title=f"{r['longname']}: D and α against xmin")
        fig_esd.append(k)
        k.show()

# %% [markdown]
# ## Matrices to look at
#
# Failed fits, α outside 2–6, and fits with a warning (small tail, α > 8).

# %%
flagged = df[(df["status"] != "ok") | (df["warning"].fillna("") != "")][
    ["longname", "block", "role", "alpha", "D", "num_pl_spikes", "status", "warning"]].reset_index(drop=True)
print(f"{len(flagged)} of {len(df)} matrices flagged")
flagged

# %% [markdown]
# ## What it means for pruning: the AlphaPruning allocation
#
# Blocks with a larger mean α (less structure) get more sparsity (notebook 3).

# %%
allocs = {"uniform": allocate(df, "uniform", SPARSITY),
          f"alphapruning (λ={LAM})": allocate(df, "alphapruning", SPARSITY, lam=LAM)}
fig_alloc = allocation_figure(allocs, target=SPARSITY, title=f"Block sparsity at S = {SPARSITY}")
fig_alloc.show()
alloc_table = allocation_summary(allocs)
alloc_table

# %% [markdown]
# ## Export

# %%
metric_cols = ["layer_id", "longname", "block", "role", "rows", "cols", "num_params", "alpha", "xmin", "D",
               "sigma", "num_pl_spikes", "alpha_weighted", "lambda_max", "stable_rank", "log_norm",
               "log_spectral_norm", "entropy", "num_spikes", "mp_bulk_max", "status", "warning"]
sections = [
    ReportSection("Summary", [summary_text], [], [("Overview", summary.reset_index(names="item"))]),
    ReportSection("α across depth and roles",
                  ["α is the exponent of the power-law tail of each matrix's ESD (eigenvalues of WᵀW). "
                   f"{OVER_TRAINED:g}–{UNDER_TRAINED:g} is typical of well-trained layers; below {OVER_TRAINED:g} "
                   f"very heavy-tailed; above {UNDER_TRAINED:g} under-trained."],
                  [fig_depth, fig_heat, fig_hist], [("Per role", roles)]),
    ReportSection("Other spectral metrics along depth", [], list(fig_other.values()),
                  [("Per block", per_block)]),
    ReportSection("Example ESDs", ["Smallest, median and largest α, with the fitted tail (dashed), xmin (dotted) "
                                   "and the Marchenko–Pastur bulk (dash-dot)."], fig_esd),
    ReportSection("Matrices to look at", [f"{len(flagged)} of {len(df)} matrices flagged."], [],
                  [("Flagged matrices", flagged)]),
    ReportSection("AlphaPruning allocation", [f"Target sparsity {SPARSITY:.0%}, λ = {LAM}."], [fig_alloc],
                  [("Allocation summary", alloc_table.drop(columns="note"))]),
    ReportSection("All matrices", [], [], [("Per-matrix metrics", df[metric_cols])]),
]
report_meta = {"model": model_label, "weights sha256": meta.get("weights_sha256"), "dtype": meta.get("dtype"),
               "xmin rule": XMIN_RULE, "analysis settings": meta.get("settings"), "versions": meta.get("versions"),
               "analysed": meta.get("created")}
path = write_html_report(REPORT_PATH, TITLE, sections, subtitle=model_label, metadata=report_meta,
                         overwrite=OVERWRITE)
print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
