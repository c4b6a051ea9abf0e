"""Synthetic layer problems shared by the pruner tests (FISTA, prox24, masked GD)."""
from __future__ import annotations

import torch


def synthetic_layer(seed: int, out: int = 32, n: int = 64, T: int = 400, scale_sigma: float = 0.8,
                    noise: float = 0.1, correction: bool = True):
    """(W (out, n), X (T, n), D (T, n)), float32: correlated inputs with log-normal feature scales (like LLM
    activations, ``exp(scale_sigma · N(0, 1))``) and a dense stream ``D = X + noise · N(0, 1) · scales``
    (``D = X`` without ``correction``)."""
    g = torch.Generator().manual_seed(seed)
    scales = torch.exp(scale_sigma * torch.randn(n, generator=g))
    X = (torch.randn(T, n, generator=g) @ (torch.eye(n) + 0.3 * torch.randn(n, n, generator=g))) * scales
    D = X + noise * torch.randn(T, n, generator=g) * scales if correction else X
    W = torch.randn(out, n, generator=g) / n**0.5
    return W, X, D
