"""SparseGPT: blocked Optimal Brain Surgeon with weight updates (Frantar & Alistarh, ICML 2023).

Hessian ``H = 2/T · Σ x xᵀ``; inputs never active get ``H_jj = 1`` and ``W[:, j] = 0``; dampening
``+ percdamp · mean(diag H)``; ``U`` = upper Cholesky factor of ``H⁻¹``. Columns are processed in blocks of
``blocksize``: the mask is chosen inside each block by ``w² / U_jj²`` (N:M: every M columns, lazily), then for every
column q ``err = (w_q − ŵ_q) / U_qq`` updates the block's later columns by ``−err · U_q,·`` and, once per block,
the columns after the block (lazy batch update). Follows the reference ``SparseGPT.fasterprune``.

Unstructured target — a deliberate difference from the reference: the reference prunes, in every block, the entries
at or below the block's ``int(s · block numel)``-th score (floor, ties included), so a matrix's achieved sparsity
drifts from the target. Here each block prunes exactly its share of ``round(s · numel)`` (cumulative rounding,
:func:`pruning.pruners.masks.split_counts`) ranked by the same score, so the matrix's achieved sparsity equals the
target.
The per-block (adaptive) mask choice itself is the reference's. Cholesky/inverse in float64, the sweep in float32.
"""
from __future__ import annotations

import torch

from pruning.pruners.base import NM, LayerStats, PrunerSpec
from pruning.pruners.masks import lowest_k_mask, nm_mask, num_pruned, split_counts


def inverse_hessian_factor(H: torch.Tensor, percdamp: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (U, dead): U = upper Cholesky factor of ``(H + damp·I)⁻¹`` after dead-input repair, in float64.

    ``dead`` marks inputs with ``H_jj == 0``; their diagonal is set to 1 (reference behaviour).
    """
    H = H.to(torch.float64).clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    H.diagonal().add_(percdamp * torch.mean(torch.diag(H)))
    L, info = torch.linalg.cholesky_ex(H)
    if int(info):
        raise ValueError("sparsegpt: the dampened Hessian is not positive definite; raise percdamp (e.g. 0.1)")
    U = torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True)
    return U, dead


def sparsegpt(W: torch.Tensor, stats: LayerStats, sparsity: float, nm: NM = None, blocksize: int = 128,
              percdamp: float = 0.01, **options) -> torch.Tensor:
    """Prune ``W`` (out, in) to ``sparsity`` (or N:M) with SparseGPT's OBS updates; returns the new weight."""
    if stats is None or stats.H is None:
        raise ValueError("sparsegpt needs the input Gram matrix stats.H; run it through pruning.block_loop")
    W = W.to(torch.float32).clone()
    rows, cols = W.shape
    if stats.H.shape != (cols, cols):
        raise ValueError(f"sparsegpt: H has shape {tuple(stats.H.shape)} but W has {cols} inputs")
    if nm is not None:
        n, m = nm
        if cols % m or blocksize % m:
            raise ValueError(f"sparsegpt N:M {n}:{m} needs inputs ({cols}) and blocksize ({blocksize}) divisible by "
                             f"{m}")
    H = stats.H.to(torch.float64) * (2.0 / max(stats.ntokens, 1))
    U64, dead = inverse_hessian_factor(H, percdamp)
    U = U64.to(torch.float32)
    W[:, dead] = 0

    starts = list(range(0, cols, blocksize))
    counts = None
    if nm is None:
        counts = split_counts(num_pruned(sparsity, W.numel()), [rows * (min(i + blocksize, cols) - i) for i in starts])
    for b, i1 in enumerate(starts):
        i2 = min(i1 + blocksize, cols)
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        U1 = U[i1:i2, i1:i2]
        d = torch.diag(U1)
        if nm is None:
            mask1 = lowest_k_mask(W1**2 / d.unsqueeze(0) ** 2, counts[b])
        else:
            mask1 = torch.zeros_like(W1, dtype=torch.bool)
        for i in range(i2 - i1):
            if nm is not None and i % m == 0:
                mask1[:, i : i + m] = nm_mask(W1[:, i : i + m] ** 2 / d[i : i + m].unsqueeze(0) ** 2, n, m)
            w = W1[:, i]
            q = w.clone()
            q[mask1[:, i]] = 0
            Q1[:, i] = q
            err1 = (w - q) / d[i]
            W1[:, i:] -= err1.unsqueeze(1) @ U1[i, i:].unsqueeze(0)
            Err1[:, i] = err1
        W[:, i1:i2] = Q1
        W[:, i2:] -= Err1 @ U[i1:i2, i2:]
    return W


SPEC = PrunerSpec("sparsegpt", sparsegpt, needs=frozenset({"H"}), options=("blocksize", "percdamp"),
                  description="blocked OBS with weight updates (Frantar & Alistarh 2023)", label="SparseGPT",
                  one_shot=True, llmc_modifier="SparseGPTModifier")
