"""Small synthetic layers for teaching and checks: the 2:4 proximal operator paper's point about correlated inputs.

Kübler et al. ("A Proximal Operator for Inducing 2:4-Sparsity", 2025) motivate their regulariser with toy problems
whose input features are strongly correlated inside a group of 4: Wanda's score ``|W_ij|·‖X_j‖`` ignores the
correlation, SparseGPT uses it only greedily (one column at a time), the proximal method optimises the whole group.
:func:`correlated_pairs_layer` is our version of such a problem (the paper's exact setup is not reproduced here).
"""
from __future__ import annotations

import math

import torch

__all__ = ["correlated_pairs_layer"]


def correlated_pairs_layer(seed: int = 0, rho: float = 0.95, rows: int = 64, cols: int = 32,
                           tokens: int = 4000) -> tuple[torch.Tensor, torch.Tensor]:
    """A least-squares layer ``(W (rows, cols), X (tokens, cols))``, float32, with one correlated pair per group of 4.

    Every feature is standard normal. In each group of 4 consecutive inputs two positions (chosen at random per
    group) share a latent ``z``: ``x = √ρ·z + √(1−ρ)·ε`` (correlation ``ρ``); the other two are independent.
    Weights are i.i.d. N(0, 1), so Wanda's scores carry no information about which inputs are redundant.
    """
    if not 0.0 <= rho < 1.0:
        raise ValueError(f"correlated_pairs_layer: need 0 ≤ rho < 1 (got {rho})")
    if cols % 4 or rows < 1 or tokens < 2:
        raise ValueError(f"correlated_pairs_layer: need cols a multiple of 4, rows ≥ 1, tokens ≥ 2 "
                         f"(got {rows}, {cols}, {tokens})")
    g = torch.Generator().manual_seed(int(seed))
    groups = cols // 4
    X = torch.randn(tokens, groups, 4, generator=g, dtype=torch.float64)
    z = torch.randn(tokens, groups, generator=g, dtype=torch.float64)
    pairs = torch.stack([torch.randperm(4, generator=g)[:2] for _ in range(groups)])  # (groups, 2)
    for k in range(2):
        idx = pairs[:, k].view(1, groups, 1).expand(tokens, groups, 1)
        mixed = math.sqrt(rho) * z.unsqueeze(2) + math.sqrt(1.0 - rho) * X.gather(2, idx)
        X.scatter_(2, idx, mixed)
    W = torch.randn(rows, cols, generator=g, dtype=torch.float64)
    return W.to(torch.float32), X.reshape(tokens, cols).to(torch.float32)
