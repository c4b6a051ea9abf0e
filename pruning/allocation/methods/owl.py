"""``owl``: Yin et al., "Outlier Weighed Layerwise Sparsity (OWL)", ICML 2024.

D_l = share of the Wanda scores |W_ij|·‖X_j‖₂ of block l above M × their mean (:func:`owl_outlier_ratios`);
D̃ = (D − min D)/(max D − min D)·2λ; s_l = S − D̃_l + mean D̃ (more outliers ⇒ less sparsity). OWL's code takes
the plain mean over blocks (equal sizes in a decoder, so it equals the parameter-weighted mean used here) and
replaces a sparsity ≤ 0 by 0.01 without rebalancing; here the shift is re-solved within the bounds."""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from pruning.allocation.mappings import AllocationError, fit_mean, owl_outlier_ratios
from pruning.allocation.spec import (
    AllocationContext,
    AllocationSpec,
    MethodResult,
    Param,
)


def per_matrix(ctx: AllocationContext, values: Mapping[str | int, float], what: str, how: str) -> tuple:
    """(array aligned with ``ctx.names``, level) from values keyed by block (int) or longname (str)."""
    keys = list(values.keys())
    by_block = all(isinstance(k, (int, np.integer)) and not isinstance(k, bool) for k in keys)
    by_name = all(isinstance(k, str) for k in keys)
    if not keys or not (by_block or by_name):
        raise ValueError(f"{what} must be keyed by block index (int) or by longname (str), not mixed")
    if by_block:
        missing = sorted(set(ctx.df["block"]) - {int(k) for k in keys})
        if missing:
            raise ValueError(f"{what} has no value for block(s) {missing[:5]}; compute every block")
        return np.array([float(values[int(b)]) for b in ctx.df["block"]]), "block"
    if ctx.opt.granularity == "block":
        raise ValueError(f"{what} are per matrix but granularity='block'; pass per-block values ({how}) or "
                         f"granularity='matrix'")
    missing = [n for n in ctx.names if n not in values]
    if missing:
        raise ValueError(f"{what} has no value for {missing[0]!r} ({len(missing)} missing)")
    return np.array([float(values[n]) for n in ctx.names]), "matrix"


def shift_allocation(ctx: AllocationContext, D: np.ndarray, lam: float, equal_note: str) -> MethodResult:
    """OWL's map: D̃ = minmax(D)·2λ, s = S − D̃ + c with c solving the (weighted) mean S within the bounds."""
    span = D.max() - D.min()
    Dt = np.zeros_like(D) if span <= 0 else (D - D.min()) / span * (2.0 * lam)
    if span <= 0:
        ctx.notes.append(equal_note)
    base = -Dt  # s = S − D̃ + c, c = (weighted) mean of D̃ when no bound binds
    p, S = ctx.p, ctx.S
    raw = base + (S * p.sum() - base @ p) / p.sum()
    values = fit_mean(base, p, S, ctx.opt.min_sparsity, ctx.opt.max_sparsity, "shift")[0] if ctx.clip else raw
    return MethodResult(values, raw, D)


def owl(ctx: AllocationContext) -> MethodResult:
    """OWL from ``outlier_ratios`` ({block: D} or {longname: D}); ValueError when they are missing."""
    opt = ctx.opt
    if opt.outlier_ratios is None:
        raise ValueError("method 'owl' needs outlier_ratios (OWL's D per block): compute them from calibration "
                         "activations with owl_outlier_ratios(weights, input_sq_norms)")
    if opt.owl_lambda < 0:
        raise ValueError(f"owl_lambda must be >= 0 (OWL default 0.08), got {opt.owl_lambda}")
    D, level = per_matrix(ctx, opt.outlier_ratios, "outlier_ratios",
                          "owl_outlier_ratios(..., granularity='block'), what OWL does")
    if not np.isfinite(D).all():
        raise AllocationError("outlier_ratios contain NaN/inf; recompute them")
    out = shift_allocation(ctx, D, float(opt.owl_lambda), "outlier ratios are all equal: uniform allocation")
    ctx.settings.update(owl_lambda=float(opt.owl_lambda), owl_M=float(opt.owl_M), granularity=level)
    return out


def signal(weights, input_sq_norms, settings) -> dict:
    """OWL's outlier ratios from the calibration pass (``settings``: an AllocationSettings)."""
    return owl_outlier_ratios(weights, input_sq_norms, settings.owl_M, granularity=settings.granularity)


SPEC = AllocationSpec("owl", "OWL", "input_norms", owl, "Yin et al., OWL, ICML 2024",
                      options=frozenset({"outlier_ratios", "granularity", "owl_lambda", "owl_M"}),
                      settings_read=frozenset({"granularity"}),
                      params=(Param("owl_lambda", "OWL λ", 0.0, 0.2, 0.08), Param("owl_M", "OWL M", 3.0, 10.0, 5.0)),
                      signal=signal, signal_arg="outlier_ratios")
