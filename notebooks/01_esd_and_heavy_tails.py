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
# # 1 · Empirical spectral densities and heavy tails
#
# A weight matrix **W** (n × m) of a trained network has an *empirical spectral density* (ESD): the histogram of
# the eigenvalues λ of **WᵀW**, i.e. of its squared singular values. Heavy-tailed self-regularization (HT-SR,
# Martin & Mahoney, JMLR 2021) reads training quality off the shape of that histogram.
#
# This notebook compares, side by side and with real numbers:
#
# 1. a **random Gaussian matrix**, whose ESD follows the **Marchenko–Pastur (MP) law** with known bulk edges;
# 2. the same random matrix plus a few **planted rank-one signals** — the **spikes** that leave the bulk;
# 3. a **trained matrix** of the built-in model (SmolLM2-135M-Instruct) — a bulk *and* a power-law tail
#    p(λ) ∝ λ^−α — and the same matrix with its entries **shuffled**;
# 4. α of every matrix of the model, and why a heavy tail (small α) is read as "well trained".
#
# Everything is computed with `spectra` (`spectra.esd`, `spectra.mp`, `spectra.hill`, `spectra.metrics`,
# `spectra.analyze`); figures come from `spectra.plots`.

# %% tags=["parameters"]
# Parameters
QUICK = True    # no effect here (every step is fast); kept so that all notebooks share the same first cell
MODEL = None    # None = built-in SmolLM2-135M-Instruct; or a Hugging Face id, a local HF folder, a .gguf file
MATRIX = None   # module path of the trained matrix, e.g. "model.layers.15.mlp.down_proj"; None = middle block
SEED = 0        # random matrices
N_SPIKES = 5    # planted rank-one signals in section 2

# %%
import warnings

import numpy as np
import pandas as pd
import torch

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm progress bars without ipywidgets

from spectra.analyze import analyze, block_aggregate, role_summary
from spectra.esd import esd
from spectra.hill import fit_power_law
from spectra.metrics import matrix_metrics
from spectra.models import weights_dir
from spectra.mp import mp_edges, mp_fit
from spectra.plots import esd_mp_figure, esd_overlay_figure, metric_depth_figure
from spectra.weights import iter_safetensors_weights

pd.set_option("display.precision", 4)
pd.set_option("display.width", 160)

# %% [markdown]
# ## 0 · The model and the trained matrix
#
# `analyze` computes the ESD and the HT-SR metrics of every block matrix (one row per matrix, weightwatcher's
# column names). It is cached by weight content, so a second run is a file read. We then pick one trained matrix
# (by default the MLP down-projection of the middle block) and read its weights.

# %%
df = analyze(MODEL, progress=False)
print(f"{df.attrs['metadata']['model']}: {len(df)} block matrices, xmin rule {df.attrs['metadata']['xmin_rule']!r}")

if MATRIX is None:
    middle = df[df["block"] == (df["block"].max() + 1) // 2]
    down = middle[middle["role"] == "down"]
    MATRIX = (down if len(down) else middle.sort_values("num_params", ascending=False)).iloc[0]["longname"]
if MATRIX not in set(df["longname"]):
    raise ValueError(f"MATRIX={MATRIX!r} is not a block matrix of this model; e.g. {df['longname'].iloc[0]!r}")

W = next(w for info, w in iter_safetensors_weights(weights_dir(MODEL)) if info.longname == MATRIX)
W = W.to(torch.float64)
rows, cols = W.shape
N, M = max(rows, cols), min(rows, cols)
q = M / N
sigma2 = float(W.var())
print(f"{MATRIX}: {rows} × {cols} (out × in), N = {N}, M = {M}, aspect ratio q = M/N = {q:.4f}, "
      f"entry variance σ² = {sigma2:.5g}")

# %% [markdown]
# ## 1 · A random matrix: the Marchenko–Pastur law
#
# If the N·M entries are i.i.d. with variance σ², the eigenvalues x of **WᵀW / N** follow, as N, M → ∞ with
# q = M/N fixed, the Marchenko–Pastur density
#
# $$\rho(x) = \frac{\sqrt{(\lambda_+ - x)(x - \lambda_-)}}{2\pi\,\sigma^2 q\, x},
#   \qquad \lambda_\pm = \sigma^2 (1 \pm \sqrt{q})^2 .$$
#
# On the unnormalised scale of **WᵀW** (the scale used everywhere in this project, as in AlphaPruning and
# weightwatcher) the edges are N·λ±. We draw a Gaussian matrix with the *same shape and entry variance* as the
# trained matrix, so that the two ESDs can be compared directly.

# %%
gen = torch.Generator().manual_seed(SEED)
R = torch.randn(rows, cols, generator=gen, dtype=torch.float64) * sigma2 ** 0.5
ev_random = esd(R)

lam_lo, lam_hi = mp_edges(q, sigma2)          # edges of WᵀW/N
edges = pd.DataFrame({
    "theory (N·σ²(1 ∓ √q)²)": [N * lam_lo, N * lam_hi],
    "empirical (min / max eigenvalue)": [ev_random.min(), ev_random.max()],
}, index=["lower edge λ₋", "upper edge λ₊"])
edges["relative difference"] = edges.iloc[:, 1] / edges.iloc[:, 0] - 1
edges

# %%
mp_random = mp_fit(ev_random, rows, cols, method="median")      # σ² estimated from the eigenvalues (median matching)
print(f"eigenvalues above the theoretical edge {N * lam_hi:.4g}: {int((ev_random > N * lam_hi).sum())}")
print(f"σ² estimated from the ESD: {mp_random.sigma2:.5g} (true {sigma2:.5g}); eigenvalues above the "
      f"estimated edge {mp_random.bulk_max:.4g}: {mp_random.num_spikes}")
esd_mp_figure(ev_random, None, rows, cols, method="median",
              title=f"Random Gaussian {rows}×{cols}: ESD and the Marchenko–Pastur law").show()

# %% [markdown]
# The whole spectrum sits inside [λ₋, λ₊]; the largest eigenvalue is *at* the upper edge, up to a finite-size
# fluctuation of relative order N^(−2/3) (Tracy–Widom) — so with an edge estimated from the data it may land just
# above or just below it. **No eigenvalue leaves the bulk by a margin: a random matrix has no spikes.**
#
# ## 2 · Spikes: signal on top of noise
#
# Add a few rank-one terms θ·u vᵀ (unit vectors u, v) to the random matrix. Once θ exceeds a threshold of order
# σ·(NM)^{1/4} (the BBP transition), each term produces one eigenvalue *outside* the bulk — a **spike** — while the
# bulk is unchanged. Spikes are the simplest picture of learned structure: directions that carry signal.

# %%
rng = np.random.default_rng(SEED)
U = np.linalg.qr(rng.standard_normal((rows, N_SPIKES)))[0]
V = np.linalg.qr(rng.standard_normal((cols, N_SPIKES)))[0]
edge_sv = np.sqrt(N * lam_hi)                                   # singular value at the bulk edge
thetas = edge_sv * np.linspace(1.5, 3.0, N_SPIKES)              # well above the BBP threshold
S_spiked = R + torch.from_numpy(U @ np.diag(thetas) @ V.T)
ev_spiked = esd(S_spiked)
mp_spiked = mp_fit(ev_spiked, rows, cols, method="median")
print(f"planted {N_SPIKES} signals; eigenvalues above the MP edge {mp_spiked.bulk_max:.4g}: {mp_spiked.num_spikes}")
print("top eigenvalues:", np.round(ev_spiked[-N_SPIKES - 2:][::-1], 1))
esd_mp_figure(ev_spiked, None, rows, cols, method="median",
              title=f"Random + {N_SPIKES} rank-one signals: the spikes leave the bulk").show()

# %% [markdown]
# ## 3 · A trained matrix: bulk + power-law tail
#
# The trained matrix has the same shape and the same entry variance as the random one, but its ESD is very
# different: it extends far beyond the MP edge, and the upper part of the spectrum is well described by a
# **power law** p(λ) ∝ λ^−α for λ ≥ xmin. `fit_power_law` fits α with the Hill/MLE estimator
# α = 1 + n / Σ ln(λᵢ / xmin) over the n eigenvalues of the tail; the xmin rule (here AlphaPruning's default
# `peak`) is discussed in notebook 2.

# %%
ev_trained = esd(W)
fit_trained = fit_power_law(ev_trained, "peak")
mp_trained = mp_fit(ev_trained, rows, cols, method="median")
print(f"α = {fit_trained.alpha:.3f} ± {fit_trained.sigma:.3f}, xmin = {fit_trained.xmin:.4g}, "
      f"tail = {fit_trained.num_pl_spikes} eigenvalues, KS distance D = {fit_trained.D:.3f}")
print(f"largest eigenvalue {ev_trained.max():.4g} = {ev_trained.max() / mp_trained.bulk_max:.1f} × the MP edge "
      f"{mp_trained.bulk_max:.4g}; {mp_trained.num_spikes} eigenvalues above the edge")
esd_mp_figure(ev_trained, fit_trained, rows, cols, method="median",
              title=f"Trained {MATRIX}: bulk + heavy tail (α = {fit_trained.alpha:.2f})").show()

# %% [markdown]
# **Is the heavy tail just a property of the weight values?** No: shuffle the entries of the trained matrix at
# random. The shuffled matrix has *exactly the same* histogram of weight values, but the correlations between
# rows and columns are gone — and its ESD falls back onto the MP law. The tail is made of learned structure.

# %%
perm = torch.randperm(W.numel(), generator=gen)
W_shuffled = W.flatten()[perm].reshape(W.shape)
ev_shuffled = esd(W_shuffled)

fits = {name: fit_power_law(ev, "peak") for name, ev in
        [("random", ev_random), ("trained", ev_trained), ("trained, shuffled", ev_shuffled)]}
esd_overlay_figure([("random", ev_random, fits["random"]), ("trained", ev_trained, fits["trained"]),
                    ("trained, shuffled", ev_shuffled, fits["trained, shuffled"])],
                   title="Random vs trained vs shuffled-trained (same shape, same entry variance)").show()

# %%
cols_shown = ["alpha", "D", "num_pl_spikes", "lambda_max", "mp_bulk_max", "num_spikes", "stable_rank", "entropy"]
summary = pd.DataFrame({name: matrix_metrics(ev, rows, cols) for name, ev in
                        [("random", ev_random), (f"random + {N_SPIKES} spikes", ev_spiked),
                         ("trained", ev_trained), ("trained, shuffled", ev_shuffled)]}).T[cols_shown]
summary = summary.astype(float)
summary

# %% [markdown]
# How to read the table:
#
# * **`num_spikes`** (eigenvalues above the MP edge, σ² estimated from the eigenvalues): 0 or 1 for noise (the
#   top eigenvalue sits at the edge), the planted number for the spiked matrix, dozens for the trained matrix,
#   ~0 again once its entries are shuffled.
# * **`lambda_max` / `mp_bulk_max`**: the trained matrix's largest eigenvalue sits far above the edge.
# * **`alpha` and `D`**: a power law can always be *fitted*; whether it *describes* the tail is what the KS
#   distance D says. The trained matrix has a small D (a good power-law tail); random and shuffled matrices have
#   a much larger D — their "α" describes the curved upper edge of the MP bulk, not a power law. (With the `ks`
#   xmin rule the random matrix gets α ≫ 8 and a "spurious fit" warning: no tail at all.)
# * **`stable_rank`** = Σλ / λmax: the trained matrix concentrates its energy in fewer directions.
#
# ## 4 · α across the model, and why heavy tails read as "well trained"
#
# HT-SR's empirical finding (Martin & Mahoney, JMLR 2021; Nat. Commun. 2021): during training the ESD of a layer
# moves from the MP bulk of its random initialisation towards a heavy-tailed shape, and **α decreases**; across
# many pretrained models, smaller α (averaged over layers) goes with better test accuracy, without looking at any
# data. weightwatcher's reading is
#
# | α | reading |
# |---|---|
# | < 2 | very heavy tail: possibly over-trained / over-fit |
# | 2 – 6 | typical of well-trained layers |
# | > 6 | light tail: under-trained (little learned structure); > 8 is usually a spurious fit |
#
# AlphaPruning (Lu et al., NeurIPS 2024) turns this around for pruning: a layer with *large* α has learned
# less, so it can lose *more* of its weights (notebook 3).

# %%
blocks = block_aggregate(df, "alpha")
metric_depth_figure(df, "alpha", aggregate=blocks.set_index("block")["alpha"],
                    title=f"α of every matrix along depth ({df.attrs['metadata']['model']})").show()

# %%
print("status counts:", df["status"].value_counts().to_dict())
role_summary(df, "alpha")

# %% [markdown]
# **Take-aways.** A random matrix's ESD is the MP bulk and nothing else. Learned structure shows up as
# eigenvalues beyond the bulk edge — a few isolated spikes, or (in trained transformers) a whole power-law tail.
# α measures how heavy that tail is: small α = much structure, large α = close to random. The next notebook looks
# at how α is estimated and how much the estimate depends on its choices.
