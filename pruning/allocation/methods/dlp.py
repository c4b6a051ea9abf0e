"""``dlp``: Chen et al., "DLP: Dynamic Layerwise Pruning in Large Language Models", ICML 2025 (code ironartisan/DLP).

Block score I_l = |stat_{W ∈ block l} |W_ij|·‖X_j‖₂| over the Wanda scores of all the block's matrices pooled (dense
calibration inputs, the statistics the Wanda/OWL path collects), importance r_l = 1 − I_l/Σ I; r̃ = minmax(r)·2α;
density_l = r̃_l − mean r̃ + (1 − S), i.e. s_l = S − r̃_l + mean r̃ (a higher score ⇒ a lower r ⇒ more sparsity).
**Paper vs code**: the paper takes the *median* of the scores (stat = median), its code ``get_dlp_ratios`` the
*mean* of the concatenated scores. We follow the code (``statistic="mean"``, which is what its reported numbers ran);
:func:`dlp_block_scores` computes the paper's median with ``statistic="median"``. As for OWL, the shift is re-solved
within the bounds (the code sets a sparsity ≤ 0 to 0.01 without rebalancing). α = 0.15 is the code's default."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from pruning.allocation.mappings import AllocationError, names_by_block, wanda_score
from pruning.allocation.methods.owl import per_matrix, shift_allocation
from pruning.allocation.spec import (
    AllocationContext,
    AllocationSpec,
    MethodResult,
    Param,
)

STATISTICS = ("mean", "median")


def dlp_block_scores(weights: Mapping[str, Any], input_sq_norms: Mapping[str, Any], statistic: str = "mean",
                     blocks: Mapping[str, int] | None = None) -> dict[int, float]:
    """DLP's per-block score I_l = |stat of {|W_ij|·‖X_j‖₂ : W in block l}| ({block: I_l}).

    ``input_sq_norms[name]`` = Σ_t x_tj² per input feature (‖X_j‖₂², what Wanda collects); ``statistic`` ``mean``
    (DLP's code, default) or ``median`` (DLP's paper). ``blocks`` maps a longname to its block when the name does
    not tell it. A public signal: the per-block cost table of ``pruning sensitivity`` can read it.
    """
    import torch

    if statistic not in STATISTICS:
        raise ValueError(f"unknown DLP statistic {statistic!r}; choose one of: {', '.join(STATISTICS)}")
    if not weights:
        raise ValueError("weights is empty; pass {longname: W (out, in)} for the prunable matrices")
    out = {}
    for b, names in names_by_block(weights, blocks).items():  # one block's scores at a time
        parts = [wanda_score(name, weights[name], input_sq_norms).reshape(-1) for name in names]
        if statistic == "mean":  # Σ over the pooled scores / their count (= the code's mean of the concatenation)
            v = sum(float(t.sum()) for t in parts) / sum(t.numel() for t in parts)
        else:
            v = float(torch.cat(parts).median())
        out[b] = abs(v)
    return out


def dlp(ctx: AllocationContext) -> MethodResult:
    """DLP from ``block_scores`` ({block: I_l}, :func:`dlp_block_scores`) and its α (``dlp_alpha``)."""
    opt = ctx.opt
    if opt.block_scores is None:
        raise ValueError("method 'dlp' needs block_scores (DLP's score per block): compute them from calibration "
                         "input norms with dlp_block_scores(weights, input_sq_norms)")
    if not (0.0 <= float(opt.dlp_alpha) <= 1.0):
        raise ValueError(f"dlp_alpha (--dlp-alpha) must be in [0, 1] (DLP's default 0.15), got {opt.dlp_alpha}")
    I, level = per_matrix(ctx, opt.block_scores, "block_scores", "dlp_block_scores(...)")
    if not np.isfinite(I).all() or (I < 0).any():
        raise AllocationError("block_scores contain NaN/inf or negative values; recompute them")
    levels = np.unique(ctx.df["block"].to_numpy()) if level == "block" else None
    total = I.sum() if levels is None else sum(float(opt.block_scores[int(b)]) for b in levels)
    r = 1.0 - I / total if total > 0 else np.ones_like(I)
    out = shift_allocation(ctx, r, float(opt.dlp_alpha), "DLP scores are all equal: uniform allocation")
    out.metric = I
    ctx.settings.update(dlp_alpha=float(opt.dlp_alpha), granularity=level)
    return out


def signal(weights, input_sq_norms, settings) -> dict:
    """DLP's block scores from the calibration pass."""
    return dlp_block_scores(weights, input_sq_norms)


SPEC = AllocationSpec("dlp", "DLP", "input_norms", dlp, "Chen et al., DLP, ICML 2025",
                      options=frozenset({"block_scores", "granularity", "dlp_alpha"}),
                      settings_read=frozenset(), params=(Param("dlp_alpha", "DLP α", 0.0, 0.3, 0.15),),
                      signal=signal, signal_arg="block_scores")
