"""Wanda: score ``S_ij = |W_ij| · ‖X_j‖₂``, prune the lowest scores within each output row (N:M: per M-group).

Sun, Liu, Bair, Kolter, "A Simple and Effective Pruning Approach for Large Language Models", ICLR 2024.
``‖X_j‖₂² = stats.sq_norm[j]`` is summed over all calibration tokens (the reference averages per sample, which only
rescales every score of a row by the same factor and so selects the same mask).
Unstructured count: the reference prunes ``int(cols · s)`` per row (achieved sparsity floors below the target, e.g.
403/576 = 0.69965 at s = 0.7); here the matrix prunes exactly ``round(s · numel)``: every row its ``⌊k/rows⌋`` lowest
scores and the rows with the smallest next score one more (:func:`pruning.pruners.masks.unstructured_mask`).
"""
from __future__ import annotations

import torch

from pruning.pruners.base import NM, LayerStats, PrunerSpec
from pruning.pruners.masks import mask_from_scores


def wanda_scores(W: torch.Tensor, sq_norm: torch.Tensor) -> torch.Tensor:
    """``|W_ij| · sqrt(Σ_t x_tj²)`` in float32, shape of W."""
    return W.abs().to(torch.float32) * torch.sqrt(sq_norm.to(torch.float64)).to(torch.float32).unsqueeze(0)


def wanda(W: torch.Tensor, stats: LayerStats, sparsity: float, nm: NM = None, **options) -> torch.Tensor:
    """Prune by Wanda scores: per output row (unstructured; exact matrix total) or the lowest ``M−N`` per M-group."""
    if stats is None:
        raise ValueError("wanda needs calibration statistics (stats.sq_norm); run it through pruning.block_loop")
    if stats.sq_norm.shape[0] != W.shape[1]:
        raise ValueError(f"wanda: sq_norm has {stats.sq_norm.shape[0]} features but W has {W.shape[1]} inputs")
    W = W.to(torch.float32).clone()
    W.masked_fill_(mask_from_scores(wanda_scores(W, stats.sq_norm), sparsity, nm, per_row=True), 0.0)
    return W


SPEC = PrunerSpec("wanda", wanda, description="|W|·‖X‖₂ compared per output row (Sun et al. 2024)", label="Wanda",
                  one_shot=True, llmc_modifier="WandaPruningModifier")
