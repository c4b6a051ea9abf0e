"""Masks from importance scores: unstructured (whole matrix or per output row) and N:M.

Convention: a mask is a bool tensor of W's shape, ``True`` = *pruned* (set to zero). N:M means at most N
non-zeros in every group of M consecutive input weights of a row (NVIDIA's 2:4 sparsity).

Exactness: an unstructured mask always prunes exactly ``round(sparsity · W.numel())`` entries (ties broken by
``topk``), so a matrix's achieved sparsity equals its target to within ``0.5 / numel``.
"""
from __future__ import annotations

import numpy as np
import torch


def check_sparsity(sparsity: float) -> float:
    """Return ``sparsity`` as a float, or raise a one-line ValueError when it lies outside [0, 1)."""
    s = float(sparsity)
    if not 0.0 <= s < 1.0:
        raise ValueError(f"sparsity {sparsity} outside [0, 1); give the fraction of weights to prune, e.g. 0.5")
    return s


def num_pruned(sparsity: float, numel: int) -> int:
    """Number of entries to prune: ``round(sparsity · numel)``."""
    return int(round(check_sparsity(sparsity) * numel))


def split_counts(total: int, sizes: list[int]) -> list[int]:
    """Split ``total`` pruned entries over consecutive chunks of ``sizes`` entries proportionally.

    Cumulative rounding: chunk b gets ``round(f·end_b) − round(f·start_b)`` with ``f = total / Σ sizes``, so the
    counts sum to exactly ``total`` and each is within one entry of its proportional share.
    """
    n = sum(sizes)
    f = total / n if n else 0.0
    out, start = [], 0
    for size in sizes:
        end = start + size
        out.append(int(round(f * end)) - int(round(f * start)))
        start = end
    return out


def lowest_k_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Mask of exactly the ``k`` lowest scores of the whole tensor (ties broken arbitrarily; numpy introselect)."""
    a = scores.detach().to(torch.float32).cpu().numpy().reshape(-1)
    flat = np.zeros(a.size, dtype=bool)
    if k >= a.size:
        flat[:] = True
    elif k > 0:
        flat[np.argpartition(a, k - 1)[:k]] = True
    return torch.from_numpy(flat.reshape(tuple(scores.shape))).to(scores.device)


def unstructured_mask(scores: torch.Tensor, sparsity: float, per_row: bool = False) -> torch.Tensor:
    """Prune the ``k = round(sparsity · size)`` lowest scores of the matrix, or compare within each output row.

    ``per_row`` (Wanda's comparison group): every row prunes its ``⌊k / rows⌋`` lowest scores and the ``k mod rows``
    rows whose next-lowest score is smallest prune one more, so the matrix total is still exactly ``k``.
    """
    k = num_pruned(sparsity, scores.numel())
    if not per_row or k == 0:
        return lowest_k_mask(scores, k)
    a = scores.detach().to(torch.float32).cpu().numpy()
    rows, cols = a.shape
    base, extra = divmod(k, rows)
    mask = np.zeros((rows, cols), dtype=bool)
    if base >= cols:
        mask[:] = True
    else:
        idx = np.argpartition(a, base, axis=1)  # idx[:, :base] = each row's base lowest, idx[:, base] the next one
        r = np.arange(rows)[:, None]
        mask[r, idx[:, :base]] = True
        if extra:
            nxt = a[np.arange(rows), idx[:, base]]
            more = np.argpartition(nxt, extra - 1)[:extra]  # rows whose next-lowest score is smallest
            mask[more, idx[more, base]] = True
    return torch.from_numpy(mask).to(scores.device)


def nm_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """In every group of ``m`` consecutive inputs of each row, prune the ``m − n`` lowest scores."""
    rows, cols = scores.shape
    if not 0 < n < m:
        raise ValueError(f"invalid N:M pattern {n}:{m}: need 0 < N < M (e.g. 2:4)")
    if cols % m:
        raise ValueError(f"N:M pattern {n}:{m} needs the input dimension ({cols}) to be a multiple of {m}")
    groups = scores.reshape(rows, cols // m, m)
    idx = torch.topk(groups, m - n, dim=2, largest=False, sorted=False).indices
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(2, idx, True)
    return mask.reshape(rows, cols)


def is_nm(W: torch.Tensor, n: int, m: int) -> bool:
    """True if every group of ``m`` consecutive inputs in every row has at most ``n`` non-zeros."""
    rows, cols = W.shape
    if cols % m:
        return False
    return bool(((W.reshape(rows, cols // m, m) != 0).sum(-1) <= n).all())


def mask_from_scores(scores: torch.Tensor, sparsity: float, nm=None, per_row: bool = False) -> torch.Tensor:
    """Dispatch to :func:`nm_mask` when ``nm`` is given, else :func:`unstructured_mask`."""
    if nm is not None:
        return nm_mask(scores, *nm)
    return unstructured_mask(scores, sparsity, per_row=per_row)


def nm_sparsity(nm) -> float:
    """Sparsity of an N:M pattern: ``1 − N/M``."""
    n, m = nm
    return 1.0 - n / m


def achieved_sparsity(W: torch.Tensor) -> float:
    """Fraction of exactly-zero entries."""
    return 1.0 - int(torch.count_nonzero(W)) / W.numel()
