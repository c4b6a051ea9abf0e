"""The local layer objective ``½‖W*X* − WX‖F²`` in statistics form, and masked gradient descent on it.

``X*`` (columns ``x_t``) are the layer's inputs in the model being pruned, ``X`` (columns ``d_t``) the dense
inputs (``d = x`` without error correction). With ``H = Σ x xᵀ``, ``K = Σ d xᵀ``, ``D = Σ d dᵀ``
(:class:`pruning.pruners.base.LayerStats`)::

    f(W*) = ½ tr(W* H W*ᵀ) − tr(W* Gᵀ) + ½ tr(W D Wᵀ),   G = W K,   ∇f(W*) = W* H − G.

Rows of ``W*`` are independent problems sharing ``H``; everything is matrix-multiply based (runs on GPU).
Masked gradient updates (Kübler et al., "A Proximal Operator for Inducing 2:4-Sparsity", 2025): gradient descent
on ``f`` restricted to the kept entries, step ``1/L`` with ``L = λ_max(H)`` (``precondition=False``; by default the
same descent runs on diagonally rescaled weights, see :func:`masked_gd`). The masked problem's Hessian
is a principal submatrix of ``H`` (per row), so ``L`` bounds its curvature and the descent lemma gives
``f(W_{k+1}) ≤ f(W_k) − ‖∇_mask f(W_k)‖² / (2L)``: the loss never increases.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from pruning.pruners.base import LayerStats


@dataclass
class LocalObjective:
    """``f(W*) = ½ tr(W* H W*ᵀ) − tr(W* Gᵀ) + const`` for one layer (``const = ½‖WX‖F²``; None without ``D``)."""

    H: torch.Tensor  # (in, in)
    G: torch.Tensor  # (out, in) = W K
    const: Optional[float]

    def grad(self, Wn: torch.Tensor) -> torch.Tensor:
        """``∇f(W*) = W* H − G``."""
        return Wn.to(self.H.dtype) @ self.H - self.G

    def quad_linear(self, Wn: torch.Tensor) -> float:
        """``½ tr(W* H W*ᵀ) − tr(W* Gᵀ)`` (the loss without its constant), in float64."""
        W64 = Wn.to(torch.float64)
        H64, G64 = self.H.to(torch.float64), self.G.to(torch.float64)
        return float(0.5 * ((W64 @ H64) * W64).sum() - (W64 * G64).sum())

    def value(self, Wn: torch.Tensor) -> float:
        """The loss ``½‖W*X* − WX‖F²`` (float64; clipped at 0 against rounding)."""
        if self.const is None:
            raise ValueError("the loss value needs stats.D (Σ d dᵀ); collect it with needs={'H', 'K'}")
        return max(self.quad_linear(Wn) + self.const, 0.0)


def _stats_matrices(stats: LayerStats, n_in: int) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """(H, K, D) with the no-correction defaults ``K = D = H`` when ``K`` was not collected."""
    if stats is None or stats.H is None:
        raise ValueError("this pruner needs the input Gram matrix stats.H; run it through pruning.block_loop "
                         "(or build LayerStats.from_inputs(X))")
    H = stats.H
    if H.shape != (n_in, n_in):
        raise ValueError(f"stats.H has shape {tuple(H.shape)} but the weight has {n_in} inputs")
    if stats.K is None:
        return H, H, H
    if stats.K.shape != (n_in, n_in):
        raise ValueError(f"stats.K has shape {tuple(stats.K.shape)} but the weight has {n_in} inputs")
    return H, stats.K, stats.D


def local_objective(W_dense: torch.Tensor, stats: LayerStats, dtype: torch.dtype = torch.float64,
                    device: Optional[torch.device] = None) -> LocalObjective:
    """Build :class:`LocalObjective` for the dense weight ``W_dense`` (out, in) from ``stats``.

    ``G = W K`` and the constant ``½ tr(W D Wᵀ)`` are formed in float64; ``H`` and ``G`` are then cast to
    ``dtype`` (the iterate precision).
    """
    if W_dense.ndim != 2:
        raise ValueError(f"expected a 2-D (out, in) weight, got shape {tuple(W_dense.shape)}")
    device = W_dense.device if device is None else device
    H, K, D = _stats_matrices(stats, W_dense.shape[1])
    W64 = W_dense.to(device=device, dtype=torch.float64)
    G = W64 @ K.to(device=device, dtype=torch.float64)
    const = None
    if D is not None:
        const = float(0.5 * ((W64 @ D.to(device=device, dtype=torch.float64)) * W64).sum())
    return LocalObjective(H.to(device=device, dtype=dtype), G.to(dtype), const)


def local_loss(W_new: torch.Tensor, W_dense: torch.Tensor, stats: LayerStats) -> float:
    """``½‖W_new X* − W_dense X‖F²`` from the statistics (float64)."""
    return local_objective(W_dense, stats).value(W_new.to(W_dense.device))


def relative_error(W_new: torch.Tensor, W_dense: torch.Tensor, stats: LayerStats) -> float:
    """``‖W_new X* − W_dense X‖F / ‖W_dense X‖F`` from the statistics (0 when the dense output is 0)."""
    obj = local_objective(W_dense, stats)
    loss = obj.value(W_new.to(W_dense.device))
    return (loss / obj.const) ** 0.5 if obj.const and obj.const > 0 else 0.0


def output_scale(W_new: torch.Tensor, W_dense: torch.Tensor, stats: LayerStats) -> float:
    """``‖W_new X*‖F / ‖W_dense X‖F`` from the statistics: ``√(tr(W_new H W_newᵀ) / tr(W_dense D W_denseᵀ))``.

    Below 1 when the pruned layer's outputs shrink as a whole (the L1 shrinkage of FISTAPruner's kept weights
    without a re-fit); ``D = H`` without error correction. NaN when the dense output is 0.
    """
    H, _, D = _stats_matrices(stats, W_dense.shape[1])
    D = H if D is None else D
    Wn = W_new.to(device=H.device, dtype=torch.float64)
    Wd = W_dense.to(device=H.device, dtype=torch.float64)
    num = float(((Wn @ H.to(torch.float64)) * Wn).sum())
    den = float(((Wd @ D.to(torch.float64)) * Wd).sum())
    return (max(num, 0.0) / den) ** 0.5 if den > 0 else float("nan")


def lipschitz(H: torch.Tensor) -> float:
    """``L = λ_max(H)``: Lipschitz constant of ``∇f`` (exact symmetric eigenvalue, float64)."""
    return float(torch.linalg.eigvalsh(H.to(torch.float64))[-1].clamp_min(0.0))


def masked_gd(W_init: torch.Tensor, W_dense: torch.Tensor, stats: LayerStats, steps: int, *,
              mask_keep: Optional[torch.Tensor] = None, lr: Optional[float] = None,
              dtype: torch.dtype = torch.float64, return_history: bool = False, precondition: bool = True):
    """Masked gradient updates: ``steps`` of ``W ← W − lr · (∇f(W) ⊙ keep)`` on ``f(W) = ½‖W X* − W_dense X‖F²``.

    ``keep`` = ``mask_keep`` (True = entry may be non-zero) or, by default, ``W_init != 0``; entries outside it
    are exactly 0 on output, so the sparsity pattern never changes. ``lr`` defaults to ``1/λ_max(H)``, which
    guarantees a monotone decrease (a larger ``lr`` voids that guarantee). The result is returned in
    ``W_init.dtype``; if rounding to that dtype would make the loss exceed the starting loss, ``W_init`` (masked)
    is returned instead. ``return_history=True`` also returns the list of losses without the constant term
    (``½tr(WHWᵀ) − tr(WGᵀ)``, float64) before each step and after the last. Kübler et al. 2025.
    ``precondition=True`` (the default; not in the paper): the same descent on the rescaled variables
    ``V = W·diag(√H_jj)``,
    i.e. ``W ← W − lr · (∇f(W) ⊙ keep) · diag(1/H_jj)`` with ``lr = 1/λ_max(D^{-½} H D^{-½})`` — still monotone,
    and much faster when a few outlier input features make ``λ_max(H)`` huge (as in LLM layers).
    ``precondition=False`` is the paper's plain step ``1/λ_max(H)``.
    """
    if steps < 0:
        raise ValueError(f"steps must be ≥ 0 (got {steps})")
    if W_init.shape != W_dense.shape:
        raise ValueError(f"W_init {tuple(W_init.shape)} and W_dense {tuple(W_dense.shape)} differ in shape")
    keep = (W_init != 0) if mask_keep is None else mask_keep.to(device=W_init.device, dtype=torch.bool)
    if keep.shape != W_init.shape:
        raise ValueError(f"mask_keep {tuple(keep.shape)} does not match the weight {tuple(W_init.shape)}")
    obj = local_objective(W_dense, stats, dtype=dtype, device=W_init.device)
    scale = None  # per-input step scale diag(1/H_jj) of the preconditioned descent
    if precondition:
        dH = torch.diagonal(obj.H).clamp_min(torch.finfo(obj.H.dtype).tiny)
        dH = torch.where(torch.diagonal(obj.H) > 0, dH, torch.ones_like(dH))  # dead inputs: unit scale
        scale = 1.0 / dH
    if lr is None:
        root = None if scale is None else torch.sqrt(scale)
        L = lipschitz(obj.H if root is None else obj.H * root.unsqueeze(0) * root.unsqueeze(1))
        lr = 1.0 / L if L > 0 else 0.0
    elif lr < 0:
        raise ValueError(f"lr must be ≥ 0 (got {lr})")
    W = W_init.to(dtype) * keep.to(dtype)
    step_f = keep.to(dtype) if scale is None else keep.to(dtype) * scale.unsqueeze(0)  # masked (scaled) step
    start = W.clone()
    history = [obj.quad_linear(W)] if return_history else None
    for _ in range(steps):
        W = W - lr * (obj.grad(W) * step_f)
        if return_history:
            history.append(obj.quad_linear(W))
    out = W.to(W_init.dtype) * keep.to(W_init.dtype)
    if obj.quad_linear(out) > obj.quad_linear(start):
        out = start.to(W_init.dtype)
    out = torch.where(keep, out, torch.zeros_like(out))
    return (out, history) if return_history else out


def row_losses(obj: LocalObjective, Wn: torch.Tensor) -> torch.Tensor:
    """Per-row ``½ w H wᵀ − w gᵀ`` (the local loss of each output row without its constant), float64, shape (out,)."""
    W64 = Wn.to(device=obj.H.device, dtype=torch.float64)
    return 0.5 * ((W64 @ obj.H.to(torch.float64)) * W64).sum(1) - (W64 * obj.G.to(torch.float64)).sum(1)


REFIT_SOLVERS = ("cg", "cholesky")


def refit_support(W_pruned: torch.Tensor, W_dense: torch.Tensor, stats: LayerStats, *, damp: float = 0.01,
                  mask_keep: Optional[torch.Tensor] = None, solver: str = "cg", cg_iters: int = 50,
                  cg_tol: float = 1e-7, max_bytes: int = 2**28) -> torch.Tensor:
    """Least-squares re-fit of the kept weights: per row ``w_S = (H_SS + δI)⁻¹ g_S`` on the support ``S``.

    Minimises the local loss ``½‖W*X* − WX‖F²`` (:func:`local_objective`: ``g`` = row of ``G = W K``, so the
    error-correction targets apply) over the weights of each row's support (``mask_keep``, default
    ``W_pruned != 0``); the pruned entries stay exactly 0. ``δ = damp · mean(diag H)`` as in SparseGPT's dampening
    (Frantar & Alistarh 2023). Solvers: ``"cg"`` (default) — conjugate gradients on all rows at once (one
    ``(out, in) × (in, in)`` product per iteration, float32), Jacobi-preconditioned and warm-started from
    ``W_pruned``, at most ``cg_iters`` iterations or until every row's preconditioned residual is below ``cg_tol``
    (on the built-in model 50 iterations give the exact solution's relative error to 4–5 digits at 1/10–1/20 of
    its time); ``"cholesky"`` — the exact solve: rows sorted by support size, gathered ``H_SS`` blocks padded with
    the identity, batched float64 Cholesky, ``max_bytes`` at a time. A row whose re-fit would not lower its
    undamped loss keeps ``W_pruned``'s row, so the local loss never increases. Returns ``W_pruned.dtype``.
    """
    if W_pruned.shape != W_dense.shape or W_pruned.ndim != 2:
        raise ValueError(f"refit_support: W_pruned {tuple(W_pruned.shape)} and W_dense {tuple(W_dense.shape)} "
                         f"must be the same 2-D shape")
    if damp < 0:
        raise ValueError(f"refit_support: damp must be ≥ 0 (got {damp})")
    if solver not in REFIT_SOLVERS:
        raise ValueError(f"refit_support: unknown solver {solver!r}; choose one of: {', '.join(REFIT_SOLVERS)}")
    keep = (W_pruned != 0) if mask_keep is None else mask_keep.to(device=W_pruned.device, dtype=torch.bool)
    obj = local_objective(W_dense, stats, dtype=torch.float64, device=W_pruned.device)
    mean_diag = float(torch.diagonal(obj.H).mean())
    delta = damp * mean_diag if mean_diag > 0 else damp
    start_w = torch.where(keep, W_pruned.to(torch.float64), torch.zeros((), dtype=torch.float64,
                                                                        device=W_pruned.device))
    if solver == "cg":
        out = _refit_cg(obj, keep, start_w, delta, cg_iters, cg_tol)
    else:
        out = _refit_cholesky(obj, keep, delta, max_bytes)
    worse = row_losses(obj, out) > row_losses(obj, start_w)
    out = torch.where(worse.unsqueeze(1), start_w, out)
    return torch.where(keep, out, torch.zeros_like(out)).to(W_pruned.dtype)


def _refit_cg(obj: LocalObjective, keep: torch.Tensor, start: torch.Tensor, delta: float, iters: int,
              tol: float) -> torch.Tensor:
    """Jacobi-preconditioned CG on ``mask ⊙ (W (H + δI)) = mask ⊙ G``, every row its own CG, float32."""
    f32 = torch.float32
    H = obj.H.to(f32)
    m = keep.to(f32)
    b = obj.G.to(f32) * m
    x = start.to(f32)
    minv = 1.0 / (torch.diagonal(obj.H) + delta).clamp_min(1e-30).to(f32)

    def A(p):
        return (p @ H + delta * p) * m

    r = b - A(x)
    z = r * minv
    p = z.clone()
    rz = (r * z).sum(1, keepdim=True)
    rz0 = rz.clamp_min(1e-30)
    for _ in range(iters):
        if float((rz / rz0).max()) <= tol * tol:
            break
        Ap = A(p)
        alpha = rz / (p * Ap).sum(1, keepdim=True).clamp_min(1e-30)
        x = x + alpha * p
        r = r - alpha * Ap
        z = r * minv
        rz_new = (r * z).sum(1, keepdim=True)
        p = z + (rz_new / rz.clamp_min(1e-30)) * p
        rz = rz_new
    return x.to(torch.float64)


def _refit_cholesky(obj: LocalObjective, keep: torch.Tensor, delta: float, max_bytes: int) -> torch.Tensor:
    """Exact per-row solves ``(H_SS + δI) w_S = g_S`` by batched float64 Cholesky (rows grouped by support size)."""
    H, G = obj.H.to(torch.float64), obj.G.to(torch.float64)
    n = H.shape[0]
    counts = keep.sum(1)
    order = torch.argsort(counts, stable=True)
    # per row, the kept input indices first (ascending), then the pruned ones
    idx_all = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)
    out = torch.zeros(keep.shape, dtype=torch.float64, device=H.device)
    start = 0
    rows = order.numel()
    while start < rows:
        k = int(counts[order[min(rows - 1, start)]])
        per_row = max(k, 1) ** 2 * 8 * 3
        stop = min(rows, start + max(1, max_bytes // per_row))
        k = int(counts[order[stop - 1]])  # the chunk's largest support (rows sorted by size)
        r = order[start:stop]
        start = stop
        if k == 0:
            continue
        idx = idx_all[r, :k]
        valid = torch.arange(k, device=H.device).unsqueeze(0) < counts[r].unsqueeze(1)
        Hs = H[idx.unsqueeze(2), idx.unsqueeze(1)]
        pair = valid.unsqueeze(2) & valid.unsqueeze(1)
        eye = torch.eye(k, dtype=H.dtype, device=H.device).unsqueeze(0)
        Hs = torch.where(pair, Hs, torch.zeros_like(Hs)) + eye * torch.where(valid, delta, 1.0).unsqueeze(2)
        gs = torch.where(valid, G[r].gather(1, idx), torch.zeros((), dtype=G.dtype, device=G.device))
        Lc, info = torch.linalg.cholesky_ex(Hs)
        bad = info != 0
        if bool(bad.any()):  # not positive definite (δ = 0 on a singular block): least-norm solution instead
            Lc[bad] = torch.eye(k, dtype=H.dtype, device=H.device)
        w = torch.cholesky_solve(gs.unsqueeze(2), Lc).squeeze(2)
        if bool(bad.any()):
            w[bad] = (torch.linalg.pinv(Hs[bad]) @ gs[bad].unsqueeze(2)).squeeze(2)
        out[r] = torch.zeros((len(r), n), dtype=torch.float64, device=H.device).scatter(1, idx, w * valid)
    return out
