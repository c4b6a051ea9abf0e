"""Magnitude pruning: remove the smallest ``|W_ij|`` of the matrix (unstructured) or of every M-group (N:M).

Han et al., "Learning both weights and connections", NeurIPS 2015; the LLM baseline of the Wanda/SparseGPT papers
(one threshold per matrix, as in Wanda's ``prune_magnitude``).
"""
from __future__ import annotations

import torch

from pruning.pruners.base import NM, LayerStats, PrunerSpec
from pruning.pruners.masks import mask_from_scores


def magnitude(W: torch.Tensor, stats: LayerStats | None, sparsity: float, nm: NM = None, **options) -> torch.Tensor:
    """Score ``|W_ij|``; prune the lowest ``round(s·numel)`` of the matrix, or the lowest ``M−N`` per M-group."""
    W = W.to(torch.float32).clone()
    W.masked_fill_(mask_from_scores(W.abs(), sparsity, nm), 0.0)
    return W


SPEC = PrunerSpec("magnitude", magnitude, calibration_free=True, one_shot=True,
                  description="smallest |W| per matrix (no calibration needed)")
