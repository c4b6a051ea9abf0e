"""Generate the teaching / report notebooks (``notebooks/0*.ipynb``) from the cell sources in this file.

Run ``python notebooks/_build.py`` after editing a cell here; the notebooks are written **without outputs** (they are
executed by ``tests/test_notebooks.py`` and by whoever opens them). Every notebook starts with a cell tagged
``parameters`` (papermill convention): ``QUICK`` and ``MODEL`` plus a few notebook-specific knobs. Values that depend
on ``QUICK`` are ``None`` in that cell and resolved in the next one, so overriding ``QUICK`` alone is enough.

Cells only call the public API of :mod:`spectra` and :mod:`pruning` (and, in notebook 2, weightwatcher and powerlaw
for the comparison); no method is re-implemented here.
"""
from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}


def md(text: str):
    return new_markdown_cell(textwrap.dedent(text).strip("\n"))


def code(text: str, tags: tuple[str, ...] = ()):
    cell = new_code_cell(textwrap.dedent(text).strip("\n"))
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def params(text: str):
    return code(text, tags=("parameters",))


# ================================================================================================ 01
NB01 = [
    md("""
    # 1 · Empirical spectral densities and heavy tails

    A weight matrix **W** (n × m) of a trained network has an *empirical spectral density* (ESD): the histogram of
    the eigenvalues λ of **WᵀW**, i.e. of its squared singular values. Heavy-tailed self-regularization (HT-SR,
    Martin & Mahoney, JMLR 2021) reads training quality off the shape of that histogram.

    This notebook compares, side by side and with real numbers:

    1. a **random Gaussian matrix**, whose ESD follows the **Marchenko–Pastur (MP) law** with known bulk edges;
    2. the same random matrix plus a few **planted rank-one signals** — the **spikes** that leave the bulk;
    3. a **trained matrix** of the built-in model (SmolLM2-135M-Instruct) — a bulk *and* a power-law tail
       p(λ) ∝ λ^−α — and the same matrix with its entries **shuffled**;
    4. α of every matrix of the model, and why a heavy tail (small α) is read as "well trained".

    Everything is computed with `spectra` (`spectra.esd`, `spectra.mp`, `spectra.hill`, `spectra.metrics`,
    `spectra.analyze`); figures come from `spectra.plots`.
    """),
    params("""
    # Parameters
    QUICK = True    # no effect here (every step is fast); kept so that all notebooks share the same first cell
    MODEL = None    # None = built-in SmolLM2-135M-Instruct; or a Hugging Face id, a local HF folder, a .gguf file
    MATRIX = None   # module path of the trained matrix, e.g. "model.layers.15.mlp.down_proj"; None = middle block
    SEED = 0        # random matrices
    N_SPIKES = 5    # planted rank-one signals in section 2
    """),
    code("""
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
    from spectra.mp import mp_curve, mp_edges, mp_fit
    from spectra.plots import esd_figure, esd_overlay_figure, metric_depth_figure
    from spectra.weights import iter_safetensors_weights

    pd.set_option("display.precision", 4)
    pd.set_option("display.width", 160)
    """),
    md("""
    ## 0 · The model and the trained matrix

    `analyze` computes the ESD and the HT-SR metrics of every block matrix (one row per matrix, weightwatcher's
    column names). It is cached by weight content, so a second run is a file read. We then pick one trained matrix
    (by default the MLP down-projection of the middle block) and read its weights.
    """),
    code("""
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
    """),
    md("""
    ## 1 · A random matrix: the Marchenko–Pastur law

    If the N·M entries are i.i.d. with variance σ², the eigenvalues x of **WᵀW / N** follow, as N, M → ∞ with
    q = M/N fixed, the Marchenko–Pastur density

    $$\\rho(x) = \\frac{\\sqrt{(\\lambda_+ - x)(x - \\lambda_-)}}{2\\pi\\,\\sigma^2 q\\, x},
      \\qquad \\lambda_\\pm = \\sigma^2 (1 \\pm \\sqrt{q})^2 .$$

    On the unnormalised scale of **WᵀW** (the scale used everywhere in this project, as in AlphaPruning and
    weightwatcher) the edges are N·λ±. We draw a Gaussian matrix with the *same shape and entry variance* as the
    trained matrix, so that the two ESDs can be compared directly.
    """),
    code("""
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
    """),
    code("""
    mp_random = mp_fit(ev_random, rows, cols, method="median")      # σ² estimated from the eigenvalues (median matching)
    print(f"eigenvalues above the theoretical edge {N * lam_hi:.4g}: {int((ev_random > N * lam_hi).sum())}")
    print(f"σ² estimated from the ESD: {mp_random.sigma2:.5g} (true {sigma2:.5g}); eigenvalues above the "
          f"estimated edge {mp_random.bulk_max:.4g}: {mp_random.num_spikes}")
    esd_figure(ev_random, None, mp=mp_curve(ev_random, rows, cols, method="median"), mp_edge=mp_random.bulk_max,
               title=f"Random Gaussian {rows}×{cols}: ESD and the Marchenko–Pastur law").show()
    """),
    md("""
    The whole spectrum sits inside [λ₋, λ₊]; the largest eigenvalue is *at* the upper edge, up to a finite-size
    fluctuation of relative order N^(−2/3) (Tracy–Widom) — so with an edge estimated from the data it may land just
    above or just below it. **No eigenvalue leaves the bulk by a margin: a random matrix has no spikes.**

    ## 2 · Spikes: signal on top of noise

    Add a few rank-one terms θ·u vᵀ (unit vectors u, v) to the random matrix. Once θ exceeds a threshold of order
    σ·(NM)^{1/4} (the BBP transition), each term produces one eigenvalue *outside* the bulk — a **spike** — while the
    bulk is unchanged. Spikes are the simplest picture of learned structure: directions that carry signal.
    """),
    code("""
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
    esd_figure(ev_spiked, None, mp=mp_curve(ev_spiked, rows, cols, method="median"), mp_edge=mp_spiked.bulk_max,
               title=f"Random + {N_SPIKES} rank-one signals: the spikes leave the bulk").show()
    """),
    md("""
    ## 3 · A trained matrix: bulk + power-law tail

    The trained matrix has the same shape and the same entry variance as the random one, but its ESD is very
    different: it extends far beyond the MP edge, and the upper part of the spectrum is well described by a
    **power law** p(λ) ∝ λ^−α for λ ≥ xmin. `fit_power_law` fits α with the Hill/MLE estimator
    α = 1 + n / Σ ln(λᵢ / xmin) over the n eigenvalues of the tail; the xmin rule (here AlphaPruning's default
    `peak`) is discussed in notebook 2.
    """),
    code("""
    ev_trained = esd(W)
    fit_trained = fit_power_law(ev_trained, "peak")
    mp_trained = mp_fit(ev_trained, rows, cols, method="median")
    print(f"α = {fit_trained.alpha:.3f} ± {fit_trained.sigma:.3f}, xmin = {fit_trained.xmin:.4g}, "
          f"tail = {fit_trained.num_pl_spikes} eigenvalues, KS distance D = {fit_trained.D:.3f}")
    print(f"largest eigenvalue {ev_trained.max():.4g} = {ev_trained.max() / mp_trained.bulk_max:.1f} × the MP edge "
          f"{mp_trained.bulk_max:.4g}; {mp_trained.num_spikes} eigenvalues above the edge")
    esd_figure(ev_trained, fit_trained, mp=mp_curve(ev_trained, rows, cols, method="median"), mp_edge=mp_trained.bulk_max,
               title=f"Trained {MATRIX}: bulk + heavy tail (α = {fit_trained.alpha:.2f})").show()
    """),
    md("""
    **Is the heavy tail just a property of the weight values?** No: shuffle the entries of the trained matrix at
    random. The shuffled matrix has *exactly the same* histogram of weight values, but the correlations between
    rows and columns are gone — and its ESD falls back onto the MP law. The tail is made of learned structure.
    """),
    code("""
    perm = torch.randperm(W.numel(), generator=gen)
    W_shuffled = W.flatten()[perm].reshape(W.shape)
    ev_shuffled = esd(W_shuffled)

    fits = {name: fit_power_law(ev, "peak") for name, ev in
            [("random", ev_random), ("trained", ev_trained), ("trained, shuffled", ev_shuffled)]}
    esd_overlay_figure([("random", ev_random, fits["random"]), ("trained", ev_trained, fits["trained"]),
                        ("trained, shuffled", ev_shuffled, fits["trained, shuffled"])],
                       title="Random vs trained vs shuffled-trained (same shape, same entry variance)").show()
    """),
    code("""
    cols_shown = ["alpha", "D", "num_pl_spikes", "lambda_max", "mp_bulk_max", "num_spikes", "stable_rank", "entropy"]
    summary = pd.DataFrame({name: matrix_metrics(ev, rows, cols) for name, ev in
                            [("random", ev_random), (f"random + {N_SPIKES} spikes", ev_spiked),
                             ("trained", ev_trained), ("trained, shuffled", ev_shuffled)]}).T[cols_shown]
    summary = summary.astype(float)
    summary
    """),
    md("""
    How to read the table:

    * **`num_spikes`** (eigenvalues above the MP edge, σ² estimated from the eigenvalues): 0 or 1 for noise (the
      top eigenvalue sits at the edge), the planted number for the spiked matrix, dozens for the trained matrix,
      ~0 again once its entries are shuffled.
    * **`lambda_max` / `mp_bulk_max`**: the trained matrix's largest eigenvalue sits far above the edge.
    * **`alpha` and `D`**: a power law can always be *fitted*; whether it *describes* the tail is what the KS
      distance D says. The trained matrix has a small D (a good power-law tail); random and shuffled matrices have
      a much larger D — their "α" describes the curved upper edge of the MP bulk, not a power law. (With the `ks`
      xmin rule the random matrix gets α ≫ 8 and a "spurious fit" warning: no tail at all.)
    * **`stable_rank`** = Σλ / λmax: the trained matrix concentrates its energy in fewer directions.

    ## 4 · α across the model, and why heavy tails read as "well trained"

    HT-SR's empirical finding (Martin & Mahoney, JMLR 2021; Nat. Commun. 2021): during training the ESD of a layer
    moves from the MP bulk of its random initialisation towards a heavy-tailed shape, and **α decreases**; across
    many pretrained models, smaller α (averaged over layers) goes with better test accuracy, without looking at any
    data. weightwatcher's reading is

    | α | reading |
    |---|---|
    | < 2 | very heavy tail: possibly over-trained / over-fit |
    | 2 – 6 | typical of well-trained layers |
    | > 6 | light tail: under-trained (little learned structure); > 8 is usually a spurious fit |

    AlphaPruning (Lu et al., NeurIPS 2024) turns this around for pruning: a layer with *large* α has learned
    less, so it can lose *more* of its weights (notebook 3).
    """),
    code("""
    blocks = block_aggregate(df, "alpha")
    metric_depth_figure(df, "alpha", aggregate=blocks.set_index("block")["alpha"],
                        title=f"α of every matrix along depth ({df.attrs['metadata']['model']})").show()
    """),
    code("""
    print("status counts:", df["status"].value_counts().to_dict())
    role_summary(df, "alpha")
    """),
    md("""
    **Take-aways.** A random matrix's ESD is the MP bulk and nothing else. Learned structure shows up as
    eigenvalues beyond the bulk edge — a few isolated spikes, or (in trained transformers) a whole power-law tail.
    α measures how heavy that tail is: small α = much structure, large α = close to random. The next notebook looks
    at how α is estimated and how much the estimate depends on its choices.
    """),
]

# ================================================================================================ 02
NB02 = [
    md("""
    # 2 · Estimating α

    α is the exponent of the power-law tail p(λ) ∝ λ^−α of an ESD. Estimating it has two steps:

    1. choose where the tail starts, **xmin**;
    2. fit α to the n eigenvalues λ ≥ xmin with the **Hill / maximum-likelihood estimator**
       $$\\hat\\alpha = 1 + \\frac{n}{\\sum_{i} \\ln(\\lambda_i / x_{\\min})}, \\qquad
         \\sigma_{\\hat\\alpha} = \\frac{\\hat\\alpha - 1}{\\sqrt n}$$
       (Clauset, Shalizi & Newman, SIAM Review 2009). The fit quality is the Kolmogorov–Smirnov distance D between
       the empirical tail and the fitted law.

    This notebook checks the estimator on synthetic data, compares the xmin rules (`peak`, `peak_ref`, `ks`,
    `median`) and how sensitive α is to them, checks agreement with **weightwatcher** and the **powerlaw** package on
    the *same eigenvalues*, and compares per-matrix with per-block values.
    """),
    params("""
    # Parameters
    QUICK = True    # True: compare with weightwatcher/powerlaw on 3 blocks' matrices; False: on every matrix
    MODEL = None    # None = built-in SmolLM2-135M-Instruct; or a Hugging Face id, a local HF folder, a .gguf file
    MATRIX = None   # module path of the matrix studied in sections 2–3; None = the middle block's down-projection
    SEED = 0
    COMPARE_BLOCKS = None   # blocks whose matrices are compared with weightwatcher/powerlaw; None = by QUICK
    """),
    code("""
    import contextlib
    import io
    import logging
    import warnings

    import numpy as np
    import pandas as pd
    import plotly.graph_objects as go
    warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm progress bars without ipywidgets

    from spectra.analyze import analyze, block_aggregate, block_values
    from spectra.hill import EVALS_THRESH, XMIN_RULES, candidate_fits, fit_power_law, hill_alpha
    from spectra.plots import add_esd_traces, esd_figure, heatmap_figure, ks_figure, metric_depth_figure

    pd.set_option("display.precision", 4)
    pd.set_option("display.width", 160)
    """),
    md("""
    ## 1 · The Hill estimator on data with a known α

    Draw n samples from a Pareto law with density ∝ x^−α above xmin = 1 (numpy's `pareto(a)` is the Lomax law;
    1 + Lomax(α − 1) is the classical Pareto with density exponent α) and estimate α with the *true* xmin.
    The error should shrink like (α − 1)/√n.
    """),
    code("""
    rng = np.random.default_rng(SEED)
    true_alpha = 3.0
    rows_ = []
    for n in (100, 1_000, 10_000, 100_000):
        x = 1.0 + rng.pareto(true_alpha - 1.0, size=n)
        a = hill_alpha(x, 1.0)
        rows_.append({"n": n, "alpha_hat": a, "error": a - true_alpha, "sigma (α−1)/√n": (a - 1) / np.sqrt(n)})
    hill_check = pd.DataFrame(rows_)
    hill_check
    """),
    md("""
    ## 2 · Where does the tail start? The xmin rules

    On a real ESD the tail start is unknown. The rules implemented in `spectra.hill.fit_power_law`:

    | rule | what it does | used by |
    |---|---|---|
    | `ks` | try every eigenvalue as xmin, keep the smallest KS distance D | weightwatcher's default fit (Clauset et al.) |
    | `peak` | candidates in [0.95·p, 1.5·p] around the peak p of the log-ESD histogram, smallest D | AlphaPruning's default (`xmin_peak`), corrected |
    | `peak_ref` | as weightwatcher codes it: the lower bound is written as log10(0.95·p), i.e. in effect no lower bound | weightwatcher `fix_fingers='xmin_peak'` (via `powerlaw`) |
    | `peak_ap` | the same quirky bounds as AlphaPruning's own code has them: all eigenvalues (no 1e-5 threshold), top in-range candidate kept | AlphaPruning `net_esd_estimator` |
    | `median` | xmin = the median eigenvalue, no search | AlphaPruning's `xmin_mid` |

    We take one matrix of the model and fit it with every rule.
    """),
    code("""
    df = analyze(MODEL, keep_eigs=True, progress=False)
    if MATRIX is None:
        middle = df[df["block"] == (df["block"].max() + 1) // 2]
        down = middle[middle["role"] == "down"]
        MATRIX = (down if len(down) else middle.sort_values("num_params", ascending=False)).iloc[0]["longname"]
    row = df.set_index("longname").loc[MATRIX]
    ev = row["evals"]
    print(f"{df.attrs['metadata']['model']} · {MATRIX}: {row['rows']}×{row['cols']}, {len(ev)} eigenvalues")

    rules = [r for r in XMIN_RULES if r != "fixed"]
    fits = {r: fit_power_law(ev, r) for r in rules}
    rule_table = pd.DataFrame({r: {"alpha": f.alpha, "sigma": f.sigma, "xmin": f.xmin, "tail size": f.num_pl_spikes,
                                   "D": f.D, "candidates tried": f.num_candidates, "warning": f.warning}
                               for r, f in fits.items()}).T
    rule_table
    """),
    md("""
    The KS distance D and α as functions of the candidate xmin show *why* the rules disagree: α is not constant
    along the spectrum — the ESD is not one clean power law — so the chosen xmin decides which part of the curve α
    describes. The shaded window is the `peak` rule's candidate range; the dotted line is its choice.
    """),
    code("""
    x = np.sort(ev[ev > EVALS_THRESH])
    idx = np.arange(x.size - 1)                       # every eigenvalue but the largest is a candidate
    alphas_all, Ds_all = candidate_fits(x, idx)
    p = fits["peak"].peak
    ks_figure(x[idx], Ds_all, alphas_all, chosen=fits["peak"].xmin, window=(0.95 * p, 1.5 * p),
              title=f"{MATRIX}: KS distance and α for every xmin candidate").show()
    """),
    code("""
    fig = esd_figure(ev, fits["ks"], name="ks", title=f"{MATRIX}: the tails chosen by the ks and median rules")
    add_esd_traces(fig, ev, fits["median"], name="median", color="#d62728", shade_tail=False)
    fig.show()
    """),
    md("""
    ### How much does the rule matter across the whole model?

    Refit every matrix's eigenvalues with each rule (the eigenvalues are computed once; only the fit changes).
    """),
    code("""
    alpha_by_rule = pd.DataFrame({r: [fit_power_law(e, r).alpha for e in df["evals"]] for r in rules},
                                 index=df["longname"])
    block_means = alpha_by_rule.groupby(df["block"].to_numpy()).mean()   # AlphaPruning uses block means
    pairs = [(a, b) for a, b in [("peak", "ks"), ("peak", "median"), ("peak", "peak_ref"), ("peak", "peak_ap"),
                                  ("ks", "median")] if a in rules and b in rules]
    sensitivity = pd.DataFrame([{
        "rule A": a, "rule B": b,
        "median |αA − αB|": float(np.nanmedian(np.abs(alpha_by_rule[a] - alpha_by_rule[b]))),
        "max |αA − αB|": float(np.nanmax(np.abs(alpha_by_rule[a] - alpha_by_rule[b]))),
        "Spearman ρ": float(alpha_by_rule[a].corr(alpha_by_rule[b], method="spearman")),
        "identical fits": int((alpha_by_rule[a] == alpha_by_rule[b]).sum()),
        "share αB > αA": float((alpha_by_rule[b] > alpha_by_rule[a]).mean()),
        "Spearman ρ of block means": float(block_means[a].corr(block_means[b], method="spearman")),
    } for a, b in pairs])
    sensitivity
    """),
    code("""
    fig = go.Figure()
    lim = float(np.nanpercentile(alpha_by_rule.to_numpy(), 99)) * 1.05
    for r, color in [("ks", "#1f77b4"), ("median", "#d62728"), ("peak_ref", "#2ca02c")]:
        fig.add_trace(go.Scatter(x=alpha_by_rule["peak"], y=alpha_by_rule[r], mode="markers", name=f"{r}",
                                 marker=dict(size=5, color=color, opacity=0.7), text=alpha_by_rule.index,
                                 hovertemplate="%{text}<br>peak α=%{x:.3f}<br>other α=%{y:.3f}<extra></extra>"))
    fig.add_trace(go.Scatter(x=[0, lim], y=[0, lim], mode="lines", name="y = x", line=dict(color="#999", dash="dot")))
    fig.update_layout(title="α of every matrix: peak rule (x) against the other rules (y)", template="plotly_white",
                      xaxis=dict(title="α with the peak rule", range=[0, lim]),
                      yaxis=dict(title="α with another rule", range=[0, lim]), height=460)
    fig.show()
    """),
    md("""
    How to read the table: *identical fits* counts matrices where both rules pick the same xmin; *share αB > αA*
    shows a systematic shift; the Spearman ρ says whether the two rules *order* the matrices (and the blocks, which
    is what AlphaPruning's min–max map uses, notebook 3) the same way.

    On the built-in model `median` gives a smaller α for almost every matrix (its tail is half of the spectrum,
    shoulder of the bulk included), `ks` a larger one for most (it settles on short tails far out, where the ESD
    bends down), and the reference variants `peak_ref` / `peak_ap` differ from the corrected `peak` only on a
    minority of matrices. The rules disagree on values
    *and* on the ordering of blocks, so absolute thresholds such as "α > 6 = under-trained" and AlphaPruning's
    allocation both depend on the xmin rule — which is why `spectra` records the rule with every result.

    ## 3 · Agreement with weightwatcher and powerlaw on the same eigenvalues

    We pass the *same* eigenvalue arrays to weightwatcher 0.7 (`WeightWatcher.fit_powerlaw`, its own `WWFit` for
    the KS search and `powerlaw` for `fix_fingers='xmin_peak'`) and to the `powerlaw` package (`powerlaw.Fit`), and
    tabulate the differences.
    """),
    code("""
    import powerlaw
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        import weightwatcher as ww
        watcher = ww.WeightWatcher()
    logging.getLogger("weightwatcher").setLevel(logging.ERROR)

    if COMPARE_BLOCKS is None:
        last = int(df["block"].max())
        COMPARE_BLOCKS = [0, (last + 1) // 2, last] if QUICK else sorted(df["block"].unique())
    subset = df[df["block"].isin(COMPARE_BLOCKS)]

    def quiet(fn, *args, **kwargs):
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \\
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            return fn(*args, **kwargs)

    records = []
    for name, e in zip(subset["longname"], subset["evals"]):
        ours = {r: fit_power_law(e, r) for r in ("ks", "peak_ref", "median")}
        ww_ks = quiet(watcher.fit_powerlaw, e, plot=False)                     # (alpha, Lambda, xmin, xmax, D, ...)
        ww_peak = quiet(watcher.fit_powerlaw, e, plot=False, fix_fingers="xmin_peak", pl_package="powerlaw")
        tail = e[e > EVALS_THRESH]
        pl_ks = quiet(powerlaw.Fit, tail, verbose=False)
        pl_fixed = quiet(powerlaw.Fit, tail, xmin=ours["median"].xmin, verbose=False)
        records.append({
            "longname": name,
            "alpha ks": ours["ks"].alpha,
            "Δα ks vs ww": ours["ks"].alpha - ww_ks[0],
            "Δxmin ks vs ww": ours["ks"].xmin - ww_ks[2],
            "ΔD ks vs ww": ours["ks"].D - ww_ks[4],
            "Δα peak_ref vs ww xmin_peak": ours["peak_ref"].alpha - ww_peak[0],
            "Δα ks vs powerlaw": ours["ks"].alpha - pl_ks.alpha,
            "Δxmin ks vs powerlaw": ours["ks"].xmin - pl_ks.xmin,
            "Δα median-xmin vs powerlaw(xmin)": ours["median"].alpha - pl_fixed.alpha,
        })
    agreement = pd.DataFrame(records).set_index("longname")
    print(f"compared {len(agreement)} matrices (blocks {list(COMPARE_BLOCKS)[:6]}{' ...' if len(COMPARE_BLOCKS) > 6 else ''})")
    agreement.head(8)
    """),
    code("""
    diff_cols = [c for c in agreement.columns if c.startswith("Δ")]
    agreement_summary = pd.DataFrame({"max |difference|": agreement[diff_cols].abs().max(),
                                      "median |difference|": agreement[diff_cols].abs().median()})
    agreement_summary
    """),
    md("""
    The differences are at the level of floating-point round-off: on identical eigenvalues, `spectra`'s `ks` rule
    *is* weightwatcher's default fit, `peak_ref` *is* weightwatcher's `xmin_peak` (the reference quirk included),
    and for a given xmin the α is the powerlaw package's. Remaining differences between tools in practice come from
    the eigenvalues themselves (normalisation of WᵀW, float precision, dropped small eigenvalues), not from the fit.

    ## 4 · Per matrix or per block?

    AlphaPruning's default ("block-wise" mode, better in its ablation) gives every matrix of a transformer block the
    **mean α of the block**; `spectra.analyze.block_aggregate` computes it (plain mean, or parameter-weighted).
    Matrices of one block can differ a lot (attention vs MLP), so the block mean smooths the allocation.
    """),
    code("""
    per_block = block_aggregate(df, "alpha")
    per_block_w = block_aggregate(df, "alpha", weighted=True)
    per_block["alpha (param-weighted)"] = per_block_w["alpha"]
    per_block["alpha std within block"] = df.groupby("block")["alpha"].std().reindex(per_block["block"]).to_numpy()
    per_block.head(10)
    """),
    code("""
    metric_depth_figure(df, "alpha", aggregate=per_block.set_index("block")["alpha"], aggregate_name="block mean α",
                        title="Per-matrix α (coloured by role) and the block mean (black)").show()
    heatmap_figure(df, "alpha", title="α by block and role").show()
    """),
    code("""
    spread = pd.DataFrame({"matrix α": df["alpha"], "its block mean": block_values(df, "alpha")})
    print(f"std of α over matrices: {spread['matrix α'].std():.3f}; over block means: "
          f"{per_block['alpha'].std():.3f}; mean within-block std: {per_block['alpha std within block'].mean():.3f}")
    """),
    md("""
    **Take-aways.** The Hill estimator is exact on a true power law, but on real ESDs α depends on xmin; the `peak`
    (AlphaPruning) and `ks` (weightwatcher) rules usually agree, `median` gives lower values. `spectra` reproduces
    weightwatcher's and powerlaw's fits to round-off on the same eigenvalues. Block means remove most of the
    within-block (role) variation, which is what AlphaPruning's allocation uses.
    """),
]

# ================================================================================================ 03
NB03 = [
    md("""
    # 3 · From α to sparsity

    A **layer-wise sparsity allocation** turns per-matrix information into one sparsity per matrix whose
    *parameter-weighted mean equals the global target S*. This notebook shows

    1. **AlphaPruning** (Lu et al., NeurIPS 2024): block-mean α → linear map to ratios in [1 − λ, 1 + λ] → rescaled
       so that the mean is S. Higher α (less well trained) ⇒ more sparsity;
    2. a **λ sweep** — how λ widens the allocation — and the **linear vs log** mapping;
    3. the allocations of its peers side by side: **uniform**, **OWL** (outlier-weighted, from calibration
       activations), **ERK** (shape only), **global magnitude** and **LAMP** (one threshold over all weights),
       and the **stable-rank** variant of AlphaPruning.

    Everything comes from `pruning.allocation.allocate` / `pruning.prune.compute_allocation`; figures from
    `pruning.plots`.
    """),
    params("""
    # Parameters
    QUICK = True      # True: OWL's calibration is NSAMPLES × SEQLEN = 8 × 128 tokens; False: 128 × 512 (PruneSettings default)
    MODEL = None      # None = built-in SmolLM2-135M-Instruct; or a Hugging Face id, a local HF folder, a .gguf file
    SPARSITY = 0.7    # global target S (AlphaPruning and OWL report 70% unstructured)
    LAM = 0.3         # AlphaPruning's λ (its code's "epsilon"; reference default 0.3, tuned values 0.2–0.5)
    LAMBDAS = None    # λ sweep; None = [0, 0.05, ..., 0.5]
    NSAMPLES = None   # OWL calibration windows; None = by QUICK
    SEQLEN = None     # tokens per calibration window; None = by QUICK
    """),
    code("""
    import warnings

    import numpy as np
    import pandas as pd
    import plotly.graph_objects as go
    from IPython.display import display
    warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm progress bars without ipywidgets

    from pruning.allocation import ALLOCATION_METHODS, alphapruning_ratios, allocate
    from pruning.data import get_calibration
    from pruning.plots import allocation_figure, allocation_summary, block_sparsity, lambda_range_figure
    from pruning.prune import PruneSettings, compute_allocation
    from pruning.sequential import collect_input_norms
    from spectra.analyze import analyze, block_aggregate
    from spectra.models import load_model
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()   # no "Loading weights" bars in the outputs

    LAMBDAS = LAMBDAS if LAMBDAS is not None else [round(0.05 * i, 2) for i in range(11)]
    NSAMPLES = NSAMPLES or (8 if QUICK else 128)
    SEQLEN = SEQLEN or (128 if QUICK else 512)
    pd.set_option("display.precision", 4)
    pd.set_option("display.width", 160)
    """),
    code("""
    df = analyze(MODEL, progress=False)                    # α (peak rule, AlphaPruning's default) per matrix
    print(f"{df.attrs['metadata']['model']}: {len(df)} matrices in {df['block'].nunique()} blocks; "
          f"target sparsity S = {SPARSITY}")
    """),
    md("""
    ## 1 · The AlphaPruning mapping, step by step

    With m_b the mean α of block b (`block_aggregate`) and p_i the parameter count of matrix i:

    $$r_b = \\frac{m_b - \\min m}{\\max m - \\min m}\\,(s_2 - s_1) + s_1,\\quad s_1 = 1-\\lambda,\\ s_2 = 1+\\lambda,
      \\qquad s_i = r_{b(i)} \\cdot \\frac{S \\sum_j p_j}{\\sum_j p_j\\, r_{b(j)}} .$$

    `alphapruning_ratios` gives r; `allocate(df, "alphapruning", S, lam=λ)` gives the final sparsities (and keeps
    every value within [0, 0.99] by re-solving the scale when needed; `clip=False` gives the raw formula).
    """),
    code("""
    alloc_ap = allocate(df, "alphapruning", SPARSITY, lam=LAM)
    blocks = block_aggregate(df, "alpha").rename(columns={"alpha": "mean α"})
    blocks["ratio r"] = alphapruning_ratios(blocks["mean α"].to_numpy(), LAM)
    blocks["sparsity"] = block_sparsity(alloc_ap).reindex(blocks["block"]).to_numpy()
    print(f"λ = {LAM}: block sparsities from {blocks['sparsity'].min():.3f} to {blocks['sparsity'].max():.3f}; "
          f"parameter-weighted mean {np.average(alloc_ap['sparsity'], weights=alloc_ap['num_params']):.6f}")
    print("note:", alloc_ap.attrs["allocation"].get("note", "none"))
    blocks[["block", "mean α", "ratio r", "sparsity"]].head(8)
    """),
    code("""
    fig = go.Figure(go.Scatter(x=blocks["mean α"], y=100 * blocks["sparsity"], mode="markers+text",
                               text=blocks["block"], textposition="top center", marker=dict(size=8),
                               hovertemplate="block %{text}<br>mean α %{x:.3f}<br>sparsity %{y:.2f}%<extra></extra>"))
    fig.add_hline(y=100 * SPARSITY, line=dict(dash="dot", color="#333"), annotation_text=f"target {SPARSITY:.0%}")
    fig.update_layout(title=f"AlphaPruning (λ = {LAM}): block sparsity is linear in the block's mean α",
                      xaxis_title="mean α of the block (dimensionless)", yaxis_title="sparsity of the block (%)",
                      template="plotly_white", height=420)
    fig.show()
    """),
    md("""
    ## 2 · The λ sweep

    λ sets how far the allocation departs from uniform: λ = 0 is uniform, and the range of ratios is 2λ before the
    rescaling. Large λ at a high target pushes the sparsest blocks against the 0.99 cap; the mean stays at S.
    """),
    code("""
    sweep = {f"λ={lam:g}": allocate(df, "alphapruning", SPARSITY, lam=lam) for lam in LAMBDAS}
    lam_table = allocation_summary(sweep)
    lam_table.insert(1, "lam", LAMBDAS)
    lambda_range_figure(lam_table, title=f"AlphaPruning at S = {SPARSITY}: per-matrix sparsity range against λ").show()
    lam_table.drop(columns="note")
    """),
    md("""
    **Which block hits the cap, and why?** The min–max map is driven by the extreme block means, so one block whose
    mean α is inflated by a few spurious fits (α > 8, no clear power-law tail; see notebook 2) takes the largest
    sparsity. Look at the block with the largest mean α:
    """),
    code("""
    top_block = int(blocks.loc[blocks["mean α"].idxmax(), "block"])
    print(f"block {top_block}: mean α {blocks['mean α'].max():.2f} (median over blocks {blocks['mean α'].median():.2f}), "
          f"sparsity {blocks.loc[blocks['block'] == top_block, 'sparsity'].iloc[0]:.3f} at λ = {LAM}")
    df[df["block"] == top_block][["longname", "alpha", "D", "num_pl_spikes", "status", "warning"]]
    """),
    code("""
    shown = {k: v for k, v in sweep.items() if k in {f"λ={l:g}" for l in (0.0, 0.1, LAM, max(LAMBDAS))}}
    allocation_figure(shown, target=SPARSITY, highlight=f"λ={LAM:g}",
                      title="Block sparsity for a few λ (the thick curve is the λ used below)").show()
    """),
    md("""
    ### Linear vs log mapping, block vs matrix granularity

    The *log* mapping applies the same min–max map to ln α (tried in the paper's rebuttal, about the same
    results): it compresses large α, so the few under-trained blocks get relatively less extra sparsity.
    *Matrix* granularity uses each matrix's own α instead of its block mean.
    """),
    code("""
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
    """),
    md("""
    ## 3 · Peer allocations side by side

    * **uniform** — every matrix gets S.
    * **OWL** (Yin et al., ICML 2024) — per block, the share D of Wanda scores |W|·‖X‖ above 5× their mean (outlier
      features, from calibration activations); more outliers ⇒ less sparsity, within a range of width
      2·λ_OWL = 0.16 around S.
    * **ERK** (Evci et al., 2020) — density ∝ (n_in + n_out)/(n_in · n_out): smaller matrices stay denser.
    * **global** — one magnitude threshold over all matrices; **LAMP** (Lee et al., ICLR 2021) — one threshold on
      a rescaled magnitude score.
    * **stable_rank** — AlphaPruning's map over the stable rank instead of α.

    OWL needs the dense model's input norms on calibration windows (`collect_input_norms`); global / LAMP need the
    weights; `compute_allocation` gathers what each method needs.
    """),
    code("""
    lm = load_model(MODEL)
    calib = get_calibration(lm.tokenizer, nsamples=NSAMPLES, seqlen=SEQLEN, seed=0)
    norms = collect_input_norms(lm.model, calib)
    print(f"calibration: {tuple(calib.shape)} tokens (C4); input norms of {len(norms)} matrices")

    allocations = {}
    for method in ALLOCATION_METHODS:
        settings = PruneSettings(allocation=method, sparsity=SPARSITY, lam=LAM, nsamples=NSAMPLES, seqlen=SEQLEN)
        allocations[method] = compute_allocation(lm.model, settings, calib=calib, metrics=df, input_norms=norms)
    peers = allocation_summary(allocations)
    peers
    """),
    code("""
    allocation_figure(allocations, target=SPARSITY, highlight="alphapruning",
                      title=f"Block sparsity of every allocation method at S = {SPARSITY}").show()
    """),
    code("""
    per_block = pd.DataFrame({m: block_sparsity(a) for m, a in allocations.items()})
    by_role = pd.DataFrame({m: a.groupby("role", sort=False)["sparsity"].mean() for m, a in allocations.items()})
    varying = per_block.loc[:, per_block.std() > 1e-12]          # uniform and ERK are the same in every block
    print("Spearman correlation of the block sparsities between the methods that vary along depth:")
    display(varying.corr(method="spearman").round(2))
    print("mean sparsity per role (matrix type):")
    by_role
    """),
    md("""
    How to read it:

    * every curve has the same parameter-weighted mean S (table above, `weighted_mean`);
    * AlphaPruning and stable_rank follow spectral metrics of the blocks (block mode: every matrix of a block gets
      the same sparsity); OWL follows the activation outliers, within its deliberately narrow range (2 × 0.08);
    * ERK depends only on shapes: identical in every block, it keeps the small k/v projections dense and prunes
      the large MLP matrices more; global magnitude and LAMP depend on the weight magnitudes of each matrix, so
      they vary along depth *and* between roles (LAMP's rescaled score also keeps small matrices denser);
    * the methods disagree substantially on *which* blocks to prune (correlation table): the allocation is a real
      design choice, not a detail.

    Which allocation gives the best pruned model is measured in notebook 4.
    """),
]

# ================================================================================================ 04
NB04 = [
    md("""
    # 4 · Pruning trade-offs

    Prune the model with **magnitude**, **Wanda** and **SparseGPT** under the **uniform** and **AlphaPruning**
    allocations at a few sparsities, evaluate WikiText-2 perplexity, and plot perplexity against sparsity.

    The runs are a `pruning.sweep` table (one row per cell, resumable). Give `SWEEP_TABLE` (a parquet file written by
    `python -m pruning sweep` or by this notebook) to **read** existing results instead of recomputing.

    **Quick mode** is a smoke-sized version: magnitude and Wanda only, 2 sparsities, 8 calibration windows of 128
    tokens and 4 evaluation windows of 128 tokens — the numbers show the mechanics, not publishable values
    (perplexity on 512 tokens is noisy; SparseGPT is left out because one run takes minutes on a CPU).
    `QUICK = False` adds SparseGPT and five sparsities, calibrates on 128 C4 windows of 512 tokens (the
    `PruneSettings` default; the papers use 2048) and evaluates on the full WikiText-2 test set at 2048 tokens per
    window, the literature's protocol.
    """),
    params("""
    # Parameters
    QUICK = True          # see above
    MODEL = None          # None = built-in SmolLM2-135M-Instruct; or a Hugging Face id, a local HF folder, a .gguf file
    SWEEP_TABLE = None    # path of an existing sweep table (.parquet) to read; None = run the sweep here
    SWEEP_OUT = None      # where a sweep run here is written (finished cells in it are reused); None = under the temp folder
    PRUNERS = None        # None = ["magnitude", "wanda"] if QUICK else ["magnitude", "wanda", "sparsegpt"]
    ALLOCATIONS = None    # None = ["uniform", "alphapruning"]
    SPARSITIES = None     # None = [0.5, 0.7] if QUICK else [0.3, 0.4, 0.5, 0.6, 0.7]
    LAM = 0.3             # AlphaPruning's λ
    NSAMPLES = None       # calibration windows; None = 8 if QUICK else 128
    SEQLEN = None         # calibration window length; None = 128 if QUICK else 512
    EVAL_SEQLEN = None    # evaluation window length; None = 128 if QUICK else the model default (2048)
    MAX_WINDOWS = None    # evaluation windows; None = 4 if QUICK else all
    """),
    code("""
    import tempfile
    import warnings
    from pathlib import Path
    warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm progress bars without ipywidgets

    import pandas as pd
    from IPython.display import display

    from pruning.plots import perplexity_bar_figure, tradeoff_figure, lambda_effect_figure
    from pruning.prune import PruneSettings
    from pruning.sweep import SweepSpec, cell_key, expand, load_table, run_sweep
    from spectra.models import resolve_source
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()   # the sweep loads the model once per run: no "Loading weights" bars

    PRUNERS = PRUNERS or (["magnitude", "wanda"] if QUICK else ["magnitude", "wanda", "sparsegpt"])
    ALLOCATIONS = ALLOCATIONS or ["uniform", "alphapruning"]
    SPARSITIES = SPARSITIES or ([0.5, 0.7] if QUICK else [0.3, 0.4, 0.5, 0.6, 0.7])
    NSAMPLES = NSAMPLES or (8 if QUICK else 128)
    SEQLEN = SEQLEN or (128 if QUICK else 512)
    EVAL_SEQLEN = EVAL_SEQLEN or (128 if QUICK else None)
    MAX_WINDOWS = MAX_WINDOWS or (4 if QUICK else None)
    pd.set_option("display.precision", 4)
    pd.set_option("display.width", 160)
    """),
    md("""
    ## 1 · Read the sweep table, or run the sweep
    """),
    code("""
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
                         base=PruneSettings(nsamples=NSAMPLES, seqlen=SEQLEN, lam=LAM),
                         eval_dataset="wikitext2", eval_seqlen=EVAL_SEQLEN, max_windows=MAX_WINDOWS)
        table = run_sweep(spec, SWEEP_OUT, progress=False, log=print)   # finished cells of an earlier run are skipped
        table_source = f"computed into {SWEEP_OUT}"
    print(f"sweep table {table_source}: {len(table)} rows")
    """),
    md("""
    A sweep file can hold earlier runs with other settings. After a run here, exactly this run's cells are kept
    (by their keys); a table that was read is shown for one model and evaluation setting — the one with the most
    rows — and the others are listed.
    """),
    code("""
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
    """),
    code("""
    repeats = pruned.groupby(["pruner", "allocation", "sparsity"]).size()
    if (repeats > 1).any():
        print(f"{int((repeats > 1).sum())} (pruner, allocation, sparsity) cells were run with several settings "
              f"(λ, calibration, ...): the table shows the median perplexity, the figure every run")
    results = (pruned.pivot_table(index=["pruner", "allocation"], columns="sparsity", values="ppl", aggfunc="median")
               .sort_index())
    results.columns = [f"{c:.0%}" for c in results.columns]
    results
    """),
    md("""
    ## 2 · Perplexity against sparsity
    """),
    code("""
    tradeoff_figure(pruned, dense=dense_ppl,
                    title=f"WikiText-2 perplexity against sparsity ({chosen[0]}; dotted: dense model)").show()
    """),
    md("""
    ## 3 · Does the AlphaPruning allocation help?

    Ratio of perplexities AlphaPruning / uniform for the same pruner and sparsity (< 1: AlphaPruning is better).
    In the papers the gain grows with sparsity (e.g. LLaMA-7B at 70 %, Wanda: 85.8 → 23.9).
    """),
    code("""
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
    """),
    code("""
    lam_counts = pruned[pruned["allocation"] == "alphapruning"].groupby("sparsity")["lam"].nunique()
    if len(lam_counts) and lam_counts.max() > 1:
        s_best = lam_counts.idxmax()
        d = pruned[(pruned["sparsity"] == s_best) & (pruned["allocation"] == "alphapruning")]
        base = pruned[(pruned["sparsity"] == s_best) & (pruned["allocation"] == "uniform")]
        lambda_effect_figure(d, baselines={f"uniform + {r.pruner}": r.ppl for r in base.itertuples()},
                             title=f"Effect of λ at {s_best:.0%} sparsity").show()
    else:
        print("one λ per sparsity in this table: no λ-effect plot (sweep several λ with `python -m pruning sweep`)")
    """),
    md("""
    ## 4 · Checks and costs

    Every run records the target and the achieved fraction of exact zeros (parameter-weighted over the block
    matrices) and its timings.
    """),
    code("""
    checks = pruned[["pruner", "allocation", "sparsity", "target_sparsity", "achieved_sparsity", "prune_seconds",
                     "eval_seconds"]].sort_values(["pruner", "allocation", "sparsity"]).reset_index(drop=True)
    checks["|achieved − target|"] = (checks["achieved_sparsity"] - checks["target_sparsity"]).abs()
    checks
    """),
    md("""
    **Reading the quick-mode numbers.** Four windows of 128 tokens are enough to see the large effects the
    literature reports — magnitude degrades much faster than Wanda, and every method degrades sharply between 50 %
    and 70 % — but a difference of a few percent between two runs (e.g. between the allocations at 50 %) needs the
    full evaluation set before it can be trusted. Re-run with `QUICK = False` (hours on a CPU, minutes on a GPU)
    or point `SWEEP_TABLE` at a full sweep made with `python -m pruning sweep`.
    """),
]

# ================================================================================================ 05
NB05 = [
    md("""
    # 5 · Spectral report

    Set a model in the first cell — `None` for the built-in SmolLM2-135M-Instruct, a Hugging Face id, a local
    Hugging Face folder or a `.gguf` file — run all cells, and get the standard figures and tables of an HT-SR
    spectral report, shown here and exported to **one self-contained HTML file** (plotly.js embedded, opens
    offline).
    """),
    params("""
    # Parameters
    QUICK = True          # True: 3 example ESDs; False: 6, plus the KS curve of each
    MODEL = None          # None = built-in SmolLM2-135M-Instruct; or a Hugging Face id, a local HF folder, a .gguf file
    XMIN_RULE = "peak"    # power-law xmin rule: peak (AlphaPruning), ks (weightwatcher), peak_ref, median
    SPARSITY = 0.7        # target of the AlphaPruning allocation shown in the report
    LAM = 0.3             # AlphaPruning's λ
    REPORT_PATH = None    # output .html; None = a new file under the system temp folder (never inside the repo)
    TITLE = None          # None = "Spectral report: <model>"
    OVERWRITE = False     # replace REPORT_PATH if it exists
    """),
    code("""
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
    from spectra.hill import EVALS_THRESH, candidate_fits
    from spectra.html_report import ReportSection, write_html_report
    from spectra.mp import mp_curve
    from spectra.plots import (esd_figure, heatmap_figure, ks_figure, metric_depth_figure,
                               metric_histogram_figure)

    pd.set_option("display.precision", 4)
    pd.set_option("display.width", 160)
    """),
    code("""
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
    """),
    md("""
    ## Summary
    """),
    code("""
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
                    f"typical 2–6 range, {status_counts['over-trained']} below 2, {status_counts['under-trained']} "
                    f"above 6 and {status_counts['failed']} could not be fitted.")
    print(summary_text)
    summary
    """),
    md("""
    ## α across depth and roles
    """),
    code("""
    blocks = block_aggregate(df, "alpha")
    roles = role_summary(df, "alpha")
    fig_depth = metric_depth_figure(df, "alpha", aggregate=blocks.set_index("block")["alpha"],
                                    title="α of every matrix along depth (black: block mean)")
    fig_heat = heatmap_figure(df, "alpha", title="α by block and role")
    fig_hist = metric_histogram_figure(df, "alpha", title="Distribution of α by role")
    for f in (fig_depth, fig_heat, fig_hist):
        f.show()
    display(roles)
    """),
    md("""
    ## Other spectral metrics along depth
    """),
    code("""
    other_metrics = ["alpha_weighted", "stable_rank", "log_spectral_norm", "entropy"]
    fig_other = {m: metric_depth_figure(df, m, title=f"{m} along depth") for m in other_metrics}
    for f in fig_other.values():
        f.show()
    per_block = blocks.rename(columns={"alpha": "mean α"})
    for m in other_metrics:
        per_block[f"mean {m}"] = block_aggregate(df, m)[m].to_numpy()
    per_block
    """),
    md("""
    ## Example ESDs

    The matrices with the smallest, median and largest α (and, in full mode, the quartiles and the extremes of
    the other end), each with its fitted power-law tail and the Marchenko–Pastur bulk.
    """),
    code("""
    ranked = fitted.sort_values("alpha").reset_index(drop=True)
    quantiles = [0.0, 0.5, 1.0] if QUICK else [0.0, 0.1, 0.25, 0.5, 0.75, 1.0]
    picks = ranked.iloc[sorted({int(round(qq * (len(ranked) - 1))) for qq in quantiles})]
    fig_esd = []
    for _, r in picks.iterrows():
        f = esd_figure(r["evals"], r, mp=mp_curve(r["evals"], r["rows"], r["cols"]), mp_edge=r["mp_bulk_max"],
                       title=f"{r['longname']}: α = {r['alpha']:.2f}, D = {r['D']:.3f}, {r['status']}")
        fig_esd.append(f)
        f.show()
        if not QUICK:
            x = np.sort(r["evals"][r["evals"] > EVALS_THRESH])
            idx = np.arange(x.size - 1)
            a_all, d_all = candidate_fits(x, idx)
            k = ks_figure(x[idx], d_all, a_all, chosen=r["xmin"], title=f"{r['longname']}: D and α against xmin")
            fig_esd.append(k)
            k.show()
    """),
    md("""
    ## Matrices to look at

    Failed fits, α outside 2–6, and fits with a warning (small tail, α > 8).
    """),
    code("""
    flagged = df[(df["status"] != "ok") | (df["warning"].fillna("") != "")][
        ["longname", "block", "role", "alpha", "D", "num_pl_spikes", "status", "warning"]].reset_index(drop=True)
    print(f"{len(flagged)} of {len(df)} matrices flagged")
    flagged
    """),
    md("""
    ## What it means for pruning: the AlphaPruning allocation

    Blocks with a larger mean α (less structure) get more sparsity (notebook 3).
    """),
    code("""
    allocs = {"uniform": allocate(df, "uniform", SPARSITY),
              f"alphapruning (λ={LAM})": allocate(df, "alphapruning", SPARSITY, lam=LAM)}
    fig_alloc = allocation_figure(allocs, target=SPARSITY, title=f"Block sparsity at S = {SPARSITY}")
    fig_alloc.show()
    alloc_table = allocation_summary(allocs)
    alloc_table
    """),
    md("""
    ## Export
    """),
    code("""
    metric_cols = ["layer_id", "longname", "block", "role", "rows", "cols", "num_params", "alpha", "xmin", "D",
                   "sigma", "num_pl_spikes", "alpha_weighted", "lambda_max", "stable_rank", "log_norm",
                   "log_spectral_norm", "entropy", "num_spikes", "mp_bulk_max", "status", "warning"]
    sections = [
        ReportSection("Summary", [summary_text], [], [("Overview", summary.reset_index(names="item"))]),
        ReportSection("α across depth and roles",
                      ["α is the exponent of the power-law tail of each matrix's ESD (eigenvalues of WᵀW). "
                       "2–6 is typical of well-trained layers; below 2 very heavy-tailed; above 6 under-trained."],
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
    """),
]

NOTEBOOKS = {
    "01_esd_and_heavy_tails.ipynb": NB01,
    "02_estimating_alpha.ipynb": NB02,
    "03_alpha_to_sparsity.ipynb": NB03,
    "04_pruning_tradeoffs.ipynb": NB04,
    "05_spectral_report.ipynb": NB05,
}


def build(names=None) -> list[Path]:
    """Write the notebooks (all, or those in ``names``) next to this file; returns the paths written."""
    out = []
    for name, cells in NOTEBOOKS.items():
        if names and name not in names:
            continue
        nb = new_notebook(cells=cells, metadata={"kernelspec": KERNELSPEC,
                                                 "language_info": {"name": "python"}})
        for i, cell in enumerate(nb.cells):  # stable ids: rebuilding an unchanged notebook gives the same file
            cell["id"] = f"nb{name[:2]}-{i:02d}"
        nbformat.validate(nb)
        path = HERE / name
        nbformat.write(nb, path)
        out.append(path)
    return out


if __name__ == "__main__":
    for p in build(sys.argv[1:]):
        print(f"wrote {p.relative_to(HERE.parent)}")
