"""Per-block (or per-matrix) signals the allocation methods bet on, the verdict of each against a measured pruning
cost (:mod:`pruning.sensitivity`), and the allocation read from the measurement itself.

Signals: block-mean ``alpha`` (PL_Alpha_Hill, :func:`spectra.analyze.analyze`), block-mean ``alpha_farms`` (FARMS α,
the same analysis with ``farms=True``), block-mean ``stable_rank``, OWL's ``outlier_ratio`` (share of Wanda scores
above M × their block mean, :func:`pruning.allocation.owl_outlier_ratios`), DLP's block score ``dlp``
(:func:`pruning.allocation.dlp_block_scores`, block granularity), ``depth`` (block index), and whatever per-block
columns a caller adds (``extra``).

Verdict: Spearman ρ and Kendall τ of each signal against ``delta_nll`` (``scipy.stats``), a two-sided permutation
p-value of ρ (seeded), and the sign each method assumes (:data:`ASSUMED_SIGN`): AlphaPruning gives more sparsity to
higher α, i.e. assumes higher α ⇒ lower cost ⇒ ρ(α, Δ) < 0.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd

__all__ = ["ASSUMED_SIGN", "block_signals", "signal_columns", "verdict", "format_verdict", "measured_costs",
           "attach_signals",
           "sensitivity_allocation"]

#: the sign of ρ(signal, Δ) each allocation method assumes, and who assumes it
ASSUMED_SIGN = {
    "alpha": (-1, "AlphaPruning: higher α ⇒ less well trained ⇒ more sparsity (lower cost)"),
    "alpha_farms": (-1, "AlphaPruning with FARMS α: same bet as α"),
    "stable_rank": (-1, "AlphaPruning with stable rank: higher metric ⇒ more sparsity"),
    "outlier_ratio": (+1, "OWL: more outliers ⇒ less sparsity (higher cost)"),
    "dlp": (-1, "DLP (its code): higher block score ⇒ lower importance r = 1 − I/ΣI ⇒ more sparsity"),
    "depth": (-1, "deeper blocks are cheaper to prune (OWL's and DLP's observation; uniform ignores it)"),
}

_ID_COLUMNS = {"unit", "block", "longname", "role", "target", "nll", "delta_nll", "ppl", "seconds"}


def block_signals(model, stats_layers: dict, granularity: str = "block", xmin_rule: str = "peak", owl_M: float = 5.0,
                  metrics: Optional[pd.DataFrame] = None, extra: Optional[pd.DataFrame] = None) -> pd.DataFrame:
    """One row per block (``block``) or per block matrix (``longname``, ``block``) with ``alpha``, ``stable_rank``,
    ``alpha_farms``, ``outlier_ratio``, ``dlp`` (blocks only) and ``depth`` of the *dense* ``model``;
    ``stats_layers`` {longname: LayerStats} supply the
    input norms of OWL's ratios. ``metrics``: a spectra table already computed (else :func:`spectra.analyze.analyze`
    with ``xmin_rule``); ``extra``: more columns, merged on ``block`` (or ``longname``)."""
    from pruning.allocation import dlp_block_scores, owl_outlier_ratios
    from pruning.blocks import block_linears

    if metrics is None:
        from spectra.analyze import AnalysisSettings, analyze

        metrics = analyze(model, AnalysisSettings(xmin_rule=xmin_rule, farms=True), progress=False)
    m = metrics[metrics["block"] >= 0]
    spectral = [c for c in ("alpha", "alpha_farms", "stable_rank") if c in m.columns]
    weights = {lin.longname: lin.get() for blk in block_linears(model) for lin in blk}
    norms = {name: stats_layers[name].sq_norm for name in weights}
    if granularity == "block":
        df = m.groupby("block")[spectral].mean().reset_index()
        owl = owl_outlier_ratios(weights, norms, owl_M)
        df["outlier_ratio"] = df["block"].map(owl)
        df["dlp"] = df["block"].map(dlp_block_scores(weights, norms))
        df["depth"] = df["block"]
        on = "block"
    else:
        df = m[["longname", "block"] + spectral].reset_index(drop=True)
        owl = owl_outlier_ratios(weights, norms, owl_M, granularity="matrix")
        df["outlier_ratio"] = df["longname"].map(owl)
        df["depth"] = df["block"]
        on = "longname"
    if extra is not None and not extra.empty:
        df = df.merge(extra[[c for c in extra.columns if c not in df.columns or c == on]], on=on, how="left")
    return df


def attach_signals(sens: pd.DataFrame, signals: pd.DataFrame, permutations: int = 10000, seed: int = 0
                   ) -> pd.DataFrame:
    """``sens`` with its signal columns replaced by ``signals``' (merged on ``block``, or ``longname`` for a
    per-matrix table) and the verdict recomputed into ``attrs["sensitivity"]["verdict"]`` (e.g. signals computed
    after the measurement, such as FARMS α)."""
    on = "longname" if "longname" in signals.columns and sens["longname"].astype(str).str.len().gt(0).all() else "block"
    keep = [c for c in sens.columns if c in _ID_COLUMNS or c in ("depth",) or c not in signals.columns]
    out = sens[keep].merge(signals[[c for c in signals.columns if c not in keep or c == on]], on=on, how="left")
    meta = dict(sens.attrs.get("sensitivity", {}))
    meta["verdict"] = verdict(out, permutations=permutations, seed=seed).to_dict("records")
    out.attrs["sensitivity"] = meta
    return out


def signal_columns(df: pd.DataFrame) -> list[str]:
    """The numeric signal columns of a sensitivity table: every numeric column that is not an identity or result
    column (known signals first, in :data:`ASSUMED_SIGN` order)."""
    cols = [c for c in df.columns if c not in _ID_COLUMNS and pd.api.types.is_numeric_dtype(df[c])
            and df[c].notna().sum() >= 3]
    known = [c for c in ASSUMED_SIGN if c in cols]
    return known + [c for c in cols if c not in known]


def _perm_p(x: np.ndarray, y: np.ndarray, rho: float, n: int, rng: np.random.Generator) -> float:
    """Two-sided permutation p-value of Spearman ρ: (1 + #{|ρ_perm| ≥ |ρ|}) / (1 + n)."""
    from scipy.stats import rankdata

    rx, ry = rankdata(x), rankdata(y)
    rx = (rx - rx.mean()) / np.linalg.norm(rx - rx.mean())
    ry = (ry - ry.mean()) / np.linalg.norm(ry - ry.mean())
    perms = np.argsort(rng.random((n, len(ry))), axis=1)
    r = ry[perms] @ rx
    return float((1 + np.sum(np.abs(r) >= abs(rho) - 1e-12)) / (1 + n))


def verdict(df: pd.DataFrame, target: str = "delta_nll", signals: Optional[list] = None, permutations: int = 10000,
            seed: int = 0) -> pd.DataFrame:
    """One row per signal: ``signal n rho tau p_perm p_rho p_tau assumed_sign assumes agrees``.

    ρ, τ: ``scipy.stats.spearmanr`` / ``kendalltau`` (τ-b) of the signal against ``target``; ``p_perm``: two-sided
    permutation p-value of ρ (``permutations`` shuffles, ``numpy.random.default_rng(seed)``); ``agrees``: the sign
    of ρ is the one the method assumes (:data:`ASSUMED_SIGN`; NaN when no method bets on the signal).
    """
    from scipy.stats import kendalltau, spearmanr

    rng = np.random.default_rng(seed)
    out = []
    for sig in signals if signals is not None else signal_columns(df):
        ok = df[[sig, target]].apply(pd.to_numeric, errors="coerce").dropna()
        x, y = ok[sig].to_numpy(float), ok[target].to_numpy(float)
        if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
            continue
        rho, p_rho = spearmanr(x, y)
        tau, p_tau = kendalltau(x, y)
        sign, who = ASSUMED_SIGN.get(sig, (0, ""))
        out.append({"signal": sig, "n": len(x), "rho": float(rho), "tau": float(tau),
                    "p_perm": _perm_p(x, y, float(rho), int(permutations), rng), "p_rho": float(p_rho),
                    "p_tau": float(p_tau), "assumed_sign": sign, "assumes": who,
                    "agrees": bool(np.sign(rho) == sign) if sign else None})
    return pd.DataFrame(out, columns=["signal", "n", "rho", "tau", "p_perm", "p_rho", "p_tau", "assumed_sign",
                                      "assumes", "agrees"])


def format_verdict(v: pd.DataFrame) -> str:
    """The verdict as a plain-text table."""
    lines = [f"{'signal':<14} {'n':>3} {'ρ':>7} {'τ':>7} {'p(perm)':>8}  assumed  agrees"]
    for r in v.itertuples():
        sign = {-1: "ρ < 0", 1: "ρ > 0"}.get(int(r.assumed_sign), "—")
        agree = "—" if r.assumed_sign == 0 else ("yes" if r.agrees else "no")
        lines.append(f"{r.signal:<14} {r.n:>3} {r.rho:>+7.3f} {r.tau:>+7.3f} {r.p_perm:>8.4f}  {sign:<7}  {agree}")
    return "\n".join(lines)


def measured_costs(sens: pd.DataFrame) -> dict:
    """{block: Δ} (one row per block) or {longname: Δ} (one row per matrix) of a finished sensitivity table: what the
    ``sensitivity`` allocation reads (:mod:`pruning.allocation.methods.sensitivity`)."""
    if "delta_nll" not in sens.columns or sens["delta_nll"].isna().any():
        raise ValueError("the sensitivity table is unfinished (delta_nll missing); rerun the measurement to finish it")
    per_matrix = "longname" in sens.columns and sens["longname"].astype(str).str.len().gt(0).all()
    if per_matrix:
        return {str(n): float(d) for n, d in zip(sens["longname"], sens["delta_nll"])}
    return {int(b): float(d) for b, d in zip(sens["block"], sens["delta_nll"])}


def sensitivity_allocation(metrics: pd.DataFrame, sens: pd.DataFrame, sparsity: float, lam: float = 0.3,
                           max_sparsity: float = 0.99, min_sparsity: float = 0.0,
                           mapping: str = "linear") -> pd.DataFrame:
    """The ``sensitivity`` allocation (Contract 2): AlphaPruning's mapping applied to the measured cost, lower
    ``delta_nll`` ⇒ more sparsity, r_i = 1 − λ + 2λ·(max Δ − Δ_i)/(max Δ − min Δ), scaled to the mean S within the
    bounds. ``metrics``: one row per prunable matrix (``longname``, ``num_params`` or ``rows``/``cols``);
    ``sens``: a sensitivity table (one row per block, or per matrix)."""
    from pruning.allocation import allocate

    table = measured_costs(sens)
    granularity = "matrix" if isinstance(next(iter(table)), str) else "block"
    return allocate(metrics, "sensitivity", sparsity, table=table, lam=lam, granularity=granularity,
                    mapping=mapping, max_sparsity=max_sparsity, min_sparsity=min_sparsity)
