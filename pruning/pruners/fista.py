"""FISTAPruner: per-layer LASSO ``min ½‖W*X* − WX‖F² + λ‖W*‖₁`` solved by FISTA, λ searched to hit the target.

Zhao et al., "A Convex-optimization-based Layer-wise Post-training Pruner for Large Language Models" (2024).
``X`` are the dense inputs, ``X*`` the inputs produced by the already-pruned earlier sublayers of the same block
(intra-layer error correction; the sequential loop chooses ``none`` / ``intra`` / ``intra+inter`` and fills
``stats.K``). In statistics form (:mod:`pruning.pruners.gd`) the smooth part is ``f(W*) = ½tr(W*HW*ᵀ) − tr(W*Gᵀ) + c``
with ``G = WK``; its gradient ``W*H − G`` is ``L``-Lipschitz, ``L = λ_max(H)``. FISTA (Beck & Teboulle 2009):

    X_{k+1} = S_{λ/L}(Y_k − ∇f(Y_k)/L),   t_{k+1} = (1 + √(1 + 4t_k²))/2,
    Y_{k+1} = X_{k+1} + (t_k − 1)/t_{k+1} · (X_{k+1} − X_k),

``S_τ`` the soft threshold, stopped when ``‖X_{k+1} − X_k‖F ≤ tol·‖X_{k+1}‖F``. All rows are solved at once.
Default (a deliberate, documented choice): FISTA runs on the diagonally rescaled variables ``V = W*·diag(√H_jj)``
(``precondition=True``) — the same LASSO with a unit-diagonal Hessian — because LLM inputs have a few outlier
features that make ``λ_max(H)`` huge and plain steps ``1/L`` crawl (on real SmolLM2 layers the plain variant is
far from converged after hundreds of iterations); ``precondition=False`` is the paper's plain step.

λ search (per layer by default, or per row): bisection on ``log λ`` — from ``λ₀`` (the target-quantile of the
one-coordinate thresholds ``|G − ZH + Z·diag H|`` at the warm start Z) expand by ×4 / ÷4 until the target
sparsity is bracketed, then geometric means; each FISTA solve is warm-started from the closest solution at or
below the target found so far (else the last one), which keeps the inexact solves' sparsity close to monotone in
λ. The search stops when the zero fraction lies in ``[target − sparsity_tol, target]`` or the λ bracket is
narrower than ``lambda_rtol``; the best solution at or below the target is then projected to the exact pattern
(unstructured: the matrix's — or each row's — largest scores; N:M: the largest ``n`` of every ``m``). Projection
scores: ``|W*|`` (default: the paper's final hard threshold) or ``|W*|·‖X*_j‖`` (``projection="wanda"``). The
projected weights are not re-fitted (faithful); masked gradient updates can be added by the sequential loop
(``--gd-steps``). :func:`fista_lambda_path` gives a layer's sparsity / error as λ varies (the app's λ view).

Re-fit (``refit="cg"``, the default; ours, not in the paper): the weights kept by the hard threshold still carry
the L1 shrinkage (≈ λ/H_jj each), so every output of the layer shrinks coherently and the error compounds over the
blocks (on the built-in model the paper-literal variant prunes at magnitude level). The kept weights are therefore
re-fitted to the layer's target by per-row least squares on the support, ``w_S = (H_SS + δI)⁻¹ g_S``
(:func:`pruning.pruners.gd.refit_support`, ``g = W K`` so intra correction still applies, δ as SparseGPT's dampening;
batched conjugate gradients, or ``refit="cholesky"`` for the exact solve), and
the layer falls back to its warm start if that is still better (``FistaInfo.fell_back``). ``refit="none"`` is the
paper-literal variant.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union

import pandas as pd
import torch

from pruning.pruners.base import NM, LayerStats, PrunerSpec
from pruning.pruners.gd import LocalObjective, lipschitz, local_objective, refit_support, row_losses
from pruning.pruners.masks import check_sparsity, nm_mask, nm_sparsity, unstructured_mask
from pruning.pruners.sparsegpt import sparsegpt
from pruning.pruners.wanda import wanda

__all__ = ["soft_threshold", "FistaResult", "fista_lasso", "FistaInfo", "FistaOptions", "fista_prune", "fista_pruner",
           "fista_lambda_path", "WARM_STARTS", "PROJECTIONS"]

WARM_STARTS = ("wanda", "sparsegpt", "dense", "zero")
PROJECTIONS = ("magnitude", "wanda")
LAMBDA_SCOPES = ("layer", "row")
SELECTS = ("sparsity", "loss")
FILLS = ("dense", "none")
REFITS = ("cg", "cholesky", "none")


def soft_threshold(X: torch.Tensor, tau: Union[float, torch.Tensor]) -> torch.Tensor:
    """``S_τ(x) = sign(x) · max(|x| − τ, 0)`` elementwise (τ a float or broadcastable tensor)."""
    return torch.sign(X) * torch.clamp(X.abs() - tau, min=0.0)


@dataclass
class FistaResult:
    """Solution of one LASSO solve: ``W`` (out, in), iterations run, whether the stopping rule was met."""

    W: torch.Tensor
    iters: int
    converged: bool


def fista_lasso(H: torch.Tensor, G: torch.Tensor, lam: Union[float, torch.Tensor], W0: Optional[torch.Tensor] = None,
                *, L: Optional[float] = None, max_iter: int = 1000, tol: float = 1e-6,
                restart: bool = False, precondition: bool = False, min_iter: int = 1) -> FistaResult:
    """FISTA for ``min_W ½tr(W H Wᵀ) − tr(W Gᵀ) + Σ_r λ_r ‖W_r‖₁`` (rows independent, solved together).

    ``H`` (in, in) symmetric PSD, ``G`` (out, in); ``lam`` a float or per-row tensor (out,) / (out, 1); ``W0`` the
    starting point (default 0); ``L ≥ λ_max`` of the Hessian FISTA iterates on — ``H``, or ``D^{-½}HD^{-½}`` with
    ``precondition`` (:func:`fista_lipschitz`; computed if None). Iterates in ``G.dtype``. ``restart=True``
    adds O'Donoghue–Candès gradient restarts (momentum reset when ``⟨Y_k − X_{k+1}, X_{k+1} − X_k⟩ > 0``), which
    keeps convergence and often speeds it up; off by default (plain FISTA as in the paper).
    ``precondition=True`` runs FISTA on the rescaled variables ``V = W·diag(√H_jj)`` — the *same* LASSO (penalty
    ``λ Σ |V_rj| / √H_jj``) with a unit-diagonal Hessian ``D^{-½} H D^{-½}`` and its own ``L`` — which converges
    much faster when a few input features dominate ``H`` (LLM activation outliers). ``min_iter``: iterations
    before the stopping rule may fire.
    """
    if H.ndim != 2 or H.shape[0] != H.shape[1] or G.ndim != 2 or G.shape[1] != H.shape[0]:
        raise ValueError(f"fista_lasso: need H (in, in) and G (out, in), got {tuple(H.shape)} and {tuple(G.shape)}")
    if max_iter < 1 or tol < 0:
        raise ValueError(f"fista_lasso: need max_iter ≥ 1 and tol ≥ 0 (got {max_iter}, {tol})")
    H = H.to(device=G.device, dtype=G.dtype)
    lam_t = torch.as_tensor(lam, dtype=G.dtype, device=G.device)
    if lam_t.ndim == 1:
        lam_t = lam_t.unsqueeze(1)
    if bool((lam_t < 0).any()):
        raise ValueError("fista_lasso: lambda must be ≥ 0")
    X = torch.zeros_like(G) if W0 is None else W0.to(device=G.device, dtype=G.dtype).clone()
    scale = None
    if precondition:
        scale = _precondition_scale(H)  # V = W·diag(scale)
        H = H / scale.unsqueeze(0) / scale.unsqueeze(1)
        G = G / scale.unsqueeze(0)
        X = X * scale.unsqueeze(0)
        lam_t = lam_t / scale.unsqueeze(0)
    if L is None:
        L = lipschitz(H)
    if L <= 0:  # H = 0: the smooth part is linear, bounded below only where |G| ≤ λ, with minimiser 0
        if bool((G.abs() > lam_t).any()):
            raise ValueError("fista_lasso: H = 0 and |G| > λ somewhere: the problem is unbounded")
        return FistaResult(torch.zeros_like(G), 0, True)
    tau = lam_t / L
    Y, t = X, 1.0
    result = None
    for k in range(1, max_iter + 1):
        Xn = soft_threshold(Y - (Y @ H - G) / L, tau)
        tn = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * t * t))
        diff = Xn - X
        if restart and float(((Y - Xn) * diff).sum()) > 0:
            Y, tn = Xn, 1.0
        else:
            Y = Xn + ((t - 1.0) / tn) * diff
        change = float(torch.linalg.vector_norm(diff))
        size = float(torch.linalg.vector_norm(Xn))
        X, t = Xn, tn
        if k >= min_iter and change <= tol * max(size, 1e-300):
            result = FistaResult(X, k, True)
            break
    if result is None:
        result = FistaResult(X, max_iter, False)
    if scale is not None:
        result.W = result.W / scale.unsqueeze(0)
    return result


def _precondition_scale(H: torch.Tensor) -> torch.Tensor:
    """``√H_jj`` (1 for dead inputs): the column scale of the rescaled variables ``V = W·diag(scale)``."""
    d = torch.diagonal(H).clamp_min(0).sqrt()
    return torch.where(d > 0, d, torch.ones_like(d))


def fista_lipschitz(H: torch.Tensor, precondition: bool) -> float:
    """``λ_max`` of the Hessian FISTA iterates on: ``H``, or ``D^{-½}HD^{-½}`` when ``precondition`` (float64)."""
    if not precondition:
        return lipschitz(H)
    scale = _precondition_scale(H.to(torch.float64))
    return lipschitz(H.to(torch.float64) / scale.unsqueeze(0) / scale.unsqueeze(1))


# ------------------------------------------------------------------------------------------- pruner
@dataclass
class FistaInfo:
    """λ search record: final λ (float, or per-row tensor), search steps, FISTA iterations, sparsity before the
    projection, units (layer or rows) whose search ended without a solution at/below the target, and the path
    [{lambda, sparsity, iters}] (lambda = the layer value, or the median row value)."""

    lam: Union[float, torch.Tensor] = 0.0
    search_steps: int = 0
    fista_iters: int = 0
    lasso_sparsity: float = 0.0
    units_missed: int = 0
    path: list = field(default_factory=list)
    fell_back: bool = False  # the re-fitted result was worse than the warm start, which was returned instead


def _warm_start(kind, W: torch.Tensor, stats: LayerStats, sparsity: float, nm: NM) -> torch.Tensor:
    if isinstance(kind, torch.Tensor):
        if kind.shape != W.shape:
            raise ValueError(f"fista: warm_start tensor has shape {tuple(kind.shape)}, W has {tuple(W.shape)}")
        return kind.to(torch.float32)
    if kind == "dense":
        return W.to(torch.float32).clone()
    if kind == "zero":
        return torch.zeros_like(W, dtype=torch.float32)
    if kind in ("wanda", "sparsegpt"):
        fn = {"wanda": wanda, "sparsegpt": sparsegpt}[kind]
        return fn(W.to(torch.float32).clone(), stats, sparsity, nm)
    raise ValueError(f"fista: unknown warm_start {kind!r}; choose one of: {', '.join(WARM_STARTS)} or a tensor")


def _zero_fraction(Z: torch.Tensor, per_row: bool) -> torch.Tensor:
    zeros = (Z == 0).to(torch.float64)
    return zeros.mean(1) if per_row else zeros.mean().reshape(1)


def _quantile(scores: torch.Tensor, q: float, per_row: bool) -> torch.Tensor:
    """The q-quantile (lower order statistic) of the scores: per row (out,) or of the whole matrix (1,)."""
    flat = scores if per_row else scores.reshape(1, -1)
    k = min(max(int(round(q * flat.shape[1])), 1), flat.shape[1])
    return flat.kthvalue(k, dim=1).values


def _projection_scores(Z: torch.Tensor, stats: LayerStats, projection: str) -> torch.Tensor:
    if projection == "magnitude":
        return Z.abs()
    if projection == "wanda":
        return Z.abs() * torch.sqrt(stats.sq_norm.to(device=Z.device, dtype=torch.float64)).to(Z.dtype).unsqueeze(0)
    raise ValueError(f"fista: unknown projection {projection!r}; choose one of: {', '.join(PROJECTIONS)}")


@dataclass(frozen=True, eq=False)
class FistaOptions:
    """The options of :func:`fista_prune` (the registry's ``--pruner-opt KEY=VALUE`` names); see its docstring."""

    warm_start: Any = "wanda"
    lambda_scope: str = "layer"
    max_iter: int = 10
    tol: float = 1e-5
    search_steps: int = 4
    sparsity_tol: float = 0.01
    lambda_rtol: float = 0.02
    warm_from_best: bool = True
    projection: str = "magnitude"
    select: str = "sparsity"
    fill: str = "dense"
    restart: bool = False
    precondition: bool = True
    min_iter: int = 10
    refit: str = "cg"
    refit_damp: float = 0.01
    dtype: torch.dtype = torch.float32

    def check(self) -> FistaOptions:
        """One-line ValueError naming the first bad option; returns self."""
        for name, allowed in (("lambda_scope", LAMBDA_SCOPES), ("projection", PROJECTIONS), ("fill", FILLS),
                              ("refit", REFITS), ("select", SELECTS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"fista: unknown {name} {getattr(self, name)!r}; choose one of: {', '.join(allowed)}")
        if self.search_steps < 1 or not 0 <= self.sparsity_tol < 1 or self.lambda_rtol <= 0:
            raise ValueError(f"fista: need search_steps ≥ 1, 0 ≤ sparsity_tol < 1 and lambda_rtol > 0 "
                             f"(got {self.search_steps}, {self.sparsity_tol}, {self.lambda_rtol})")
        return self


def _projector(W32: torch.Tensor, stats: LayerStats, o: FistaOptions, nm: NM, target: float, per_row: bool,
               device) -> Callable[[torch.Tensor], torch.Tensor]:
    """The projection of a LASSO solution onto the target pattern (``projection`` scores; ``fill``)."""
    dense_scores = W_fill = None
    if o.fill == "dense":  # rank of the LASSO's zeros when a kept position must be filled: dense Wanda score
        dense_scores = (W32.abs() * torch.sqrt(torch.diagonal(stats.H).clamp_min(0.0)).to(torch.float32)
                        .unsqueeze(0)).to(device)
        dense_scores = dense_scores / dense_scores.max().clamp_min(1e-30)  # in [0, 1]
        W_fill = W32.to(device=device, dtype=o.dtype)

    def project(Zc: torch.Tensor) -> torch.Tensor:
        scores = _projection_scores(Zc, stats, o.projection).to(torch.float32)
        if dense_scores is not None:  # every non-zero of Zc above every zero, zeros ordered by the dense score
            scores = torch.where(Zc != 0, 2.0 + scores / scores.max().clamp_min(1e-30), dense_scores)
        prune = nm_mask(scores, *nm) if nm is not None else unstructured_mask(scores, target, per_row=per_row)
        prune = prune.to(Zc.device)
        out = Zc.masked_fill(prune, 0.0)
        if dense_scores is not None:
            out = torch.where(~prune & (Zc == 0), W_fill, out)
        return out

    return project


@dataclass
class _Search:
    """The state of the λ search: bracket, best solution at/below the target (per unit), best projected
    solution by local loss (``select="loss"``)."""

    lam: torch.Tensor
    lo: torch.Tensor
    hi: torch.Tensor
    done: torch.Tensor
    best: torch.Tensor
    best_gap: torch.Tensor
    best_lam: torch.Tensor
    last: torch.Tensor
    best_proj: torch.Tensor
    best_loss: torch.Tensor


def _keep_best(st: _Search, Z: torch.Tensor, gap: torch.Tensor, per_row: bool) -> None:
    improve = (gap >= -1e-12) & (gap < st.best_gap)
    if per_row:
        st.best[improve] = Z[improve]
    elif bool(improve[0]):
        st.best = Z.clone()
    st.best_gap = torch.where(improve, gap, st.best_gap)
    st.best_lam = torch.where(improve, st.lam, st.best_lam)


def _keep_best_loss(st: _Search, P: torch.Tensor, rl: torch.Tensor, gap: torch.Tensor, nm: NM, per_row: bool) -> None:
    eligible = torch.ones_like(gap, dtype=torch.bool) if nm is not None else gap >= -1e-12
    if per_row:
        better = eligible & (rl < st.best_loss)
        st.best_proj[better], st.best_loss[better] = P[better], rl[better]
    elif bool(eligible[0]) and float(rl.sum()) < float(st.best_loss.sum()):
        st.best_proj, st.best_loss = P, rl


def _next_lambda(st: _Search, gap: torch.Tensor, o: FistaOptions) -> bool:
    """Narrow the bracket from this solve's ``gap`` (target − sparsity); the next λ; True when every unit is done."""
    st.done |= (gap >= -1e-12) & (gap <= o.sparsity_tol)
    dense_side = (gap > o.sparsity_tol) & ~st.done  # too few zeros: raise λ
    sparse_side = (gap < -1e-12) & ~st.done  # too many zeros: lower λ
    st.lo = torch.where(dense_side, st.lam, st.lo)
    st.hi = torch.where(sparse_side, st.lam, st.hi)
    st.done |= (st.lo > 0) & (st.hi <= st.lo * (1.0 + o.lambda_rtol))  # bracket narrower than the λ resolution
    if bool(st.done.all()):
        return True
    bracketed = (st.lo > 0) & torch.isfinite(st.hi)
    new = torch.where(bracketed, torch.sqrt(st.lo * torch.where(torch.isfinite(st.hi), st.hi, st.lo)),
                      torch.where(torch.isfinite(st.hi), st.hi / 4, st.lo * 4))
    st.lam = torch.where(st.done, st.lam, new)
    return False


def _lambda_search(obj: LocalObjective, Z: torch.Tensor, L, target: float, nm: NM, o: FistaOptions,
                   project: Callable, info: FistaInfo, per_row: bool) -> _Search:
    """Solve the LASSO for λ values bracketing the target sparsity (geometric bisection), from the warm start
    ``Z``; records the path in ``info``."""
    H, G = obj.H, obj.G
    rows = Z.shape[0]
    units = rows if per_row else 1
    # initial λ: target-quantile of the one-coordinate thresholds at the warm start
    thresh = (G - Z @ H + Z * torch.diagonal(H).unsqueeze(0)).abs()
    lam = _quantile(thresh, target, per_row).to(torch.float64).clamp_min(1e-30)
    lo = torch.zeros(units, dtype=torch.float64, device=G.device)
    st = _Search(lam=lam, lo=lo, hi=torch.full_like(lo, math.inf),
                 done=torch.zeros(units, dtype=torch.bool, device=G.device), best=torch.zeros_like(Z),
                 best_gap=torch.full_like(lo, math.inf), best_lam=lam.clone(), last=Z, best_proj=torch.zeros_like(Z),
                 best_loss=torch.full((rows,), math.inf, dtype=torch.float64, device=G.device))
    for _ in range(o.search_steps):
        lam_rows = st.lam.to(o.dtype).unsqueeze(1).expand(rows, 1) if per_row else float(st.lam[0])
        res = fista_lasso(H, G, lam_rows, Z, L=L, max_iter=o.max_iter, tol=o.tol, restart=o.restart,
                          precondition=o.precondition, min_iter=min(o.min_iter, o.max_iter))
        Z = st.last = res.W
        info.search_steps += 1
        info.fista_iters += res.iters
        s = _zero_fraction(Z, per_row)
        info.path.append({"lambda": float(st.lam.median()), "sparsity": float(s.mean()), "iters": res.iters})
        gap = target - s
        _keep_best(st, Z, gap, per_row)
        if o.select == "loss":  # candidate: this solution projected; N:M projections are valid whatever the sparsity
            P = project(Z)
            _keep_best_loss(st, P, row_losses(obj, P), gap, nm, per_row)
        if _next_lambda(st, gap, o):
            break
        if o.warm_from_best:  # next solve starts from the closest solution at/below the target (else the last one)
            have = torch.isfinite(st.best_gap)
            if per_row:
                Z = torch.where(have.unsqueeze(1), st.best, st.last)
            elif bool(have[0]):
                Z = st.best
    return st


def _chosen(st: _Search, project: Callable, info: FistaInfo, o: FistaOptions, per_row: bool) -> torch.Tensor:
    """The projected solution: the best at/below the target (the last one where none was), or by local loss."""
    missed = ~torch.isfinite(st.best_gap)
    info.units_missed = int(missed.sum())
    best = st.best
    if per_row:
        best[missed] = st.last[missed]
    elif bool(missed[0]):
        best = st.last
    best_lam = torch.where(missed, st.lam, st.best_lam)
    info.lam = best_lam.clone() if per_row else float(best_lam[0])
    info.lasso_sparsity = float((best == 0).to(torch.float64).mean())
    out = project(best)
    if o.select == "loss":
        chosen = torch.isfinite(st.best_loss)
        if per_row:
            out = torch.where(chosen.unsqueeze(1), st.best_proj, out)
        elif bool(chosen.all()):
            out = st.best_proj
    return out


def fista_prune(W: torch.Tensor, stats: LayerStats, sparsity: float, nm: NM = None,
                options: Optional[FistaOptions] = None, **overrides) -> tuple[torch.Tensor, FistaInfo]:
    """FISTAPruner on one layer; returns (pruned W (out, in) float32 with exact zeros, :class:`FistaInfo`).

    ``sparsity``: target zero fraction (ignored when ``nm`` is given: target ``1 − n/m``). Options
    (:class:`FistaOptions`, ``options`` and/or keyword ``overrides``):
    ``warm_start`` — start of the first solve: ``"wanda"``/``"sparsegpt"`` (that pruner's result at the target),
    ``"dense"``, ``"zero"`` or a tensor; budget defaults (10 FISTA iterations, 4 λ values) measured with the
    re-fit on block 15 of the built-in model (C4 statistics): larger budgets (30/8, 100/16) gave *higher* local
    errors after the re-fit (0.1295, 0.1276 vs 0.1125 at 50 %; 0.1659, 0.1652 vs 0.1620 at 2:4) at 2–6× the time
    (``bench/bench_layer_errors.py``); ``lambda_scope`` — one λ for the layer (``"layer"``, the paper) or one per
    output row (``"row"``: the λ search and the unstructured projection work per row); ``max_iter``/``tol``/
    ``min_iter`` — FISTA cap, relative-change tolerance and minimum iterations per solve; ``precondition`` —
    FISTA on diagonally rescaled variables (same LASSO, faster; see :func:`fista_lasso`; False = plain step
    ``1/λ_max(H)``); ``restart`` — gradient-restart FISTA; ``search_steps`` — cap on λ values tried;
    ``sparsity_tol`` — accepted shortfall below the target; ``lambda_rtol`` — stop when the λ bracket is this
    narrow (relative); ``warm_from_best`` — start each solve from the closest solution at/below the target found
    so far (else from the last solution); ``projection`` — ``"magnitude"`` (|W*|, the paper's hard threshold) or
    ``"wanda"`` (|W*|·‖X*_j‖); ``select`` — ``"sparsity"`` (project the solution closest to the target from
    below, the paper) or ``"loss"`` (project every solution of the search and keep the one with the lowest
    local loss; for unstructured targets only solutions at/below the target qualify); ``fill`` — what a kept
    position holds when the LASSO solution is zero there (it zeroes whole groups of 4 under a 2:4 target, so the
    hard threshold alone leaves the layer sparser than the pattern: 58 % instead of 50 % on the built-in model):
    ``"dense"`` (default) ranks such positions by the dense Wanda score ``|W|·√H_jj`` below every non-zero and
    gives them their dense weight, so the result has exactly the target pattern; ``"none"`` leaves them zero;
    ``refit`` — ``"cg"`` (default, ours): least-squares re-fit of the kept weights on their support by batched
    conjugate gradients (:func:`pruning.pruners.gd.refit_support`, dampening ``refit_damp``), ``"cholesky"`` the same by
    exact solves, both falling back to the warm start when that has a lower local loss; ``"none"``: the
    paper-literal projected LASSO solution; ``dtype`` — iterate precision
    (statistics stay float64 until cast).
    """
    o = dataclasses.replace(options or FistaOptions(), **overrides).check()
    if W.ndim != 2:
        raise ValueError(f"fista: expected a 2-D (out, in) weight, got shape {tuple(W.shape)}")
    target = nm_sparsity(nm) if nm is not None else check_sparsity(sparsity)
    if nm is not None and W.shape[1] % nm[1]:
        raise ValueError(f"fista: N:M {nm[0]}:{nm[1]} needs the input dimension ({W.shape[1]}) "
                         f"to be a multiple of {nm[1]}")
    W32 = W.to(torch.float32)
    info = FistaInfo()
    if target == 0.0:
        return W32.clone(), info
    obj: LocalObjective = local_objective(W32, stats, dtype=o.dtype)
    L = fista_lipschitz(obj.H, o.precondition)  # once per layer (each λ of the search reuses it)
    Z = _warm_start(o.warm_start, W32, stats, target, nm).to(device=obj.G.device, dtype=o.dtype)
    pruned_start = isinstance(o.warm_start, torch.Tensor) or o.warm_start in ("wanda", "sparsegpt")
    start_W = Z.to(device=W.device, dtype=torch.float32).clone() if pruned_start and o.refit != "none" else None
    per_row = o.lambda_scope == "row"
    project = _projector(W32, stats, o, nm, target, per_row, obj.G.device)
    st = _lambda_search(obj, Z, L, target, nm, o, project, info, per_row)
    out = _chosen(st, project, info, o, per_row).to(device=W.device, dtype=torch.float32)
    if o.refit != "none":
        out = refit_support(out, W32, stats, damp=o.refit_damp, mask_keep=out != 0, solver=o.refit)
        if start_W is not None:  # never worse than a pruned warm start (same pattern constraint)
            obj64 = local_objective(W32, stats, dtype=torch.float64, device=out.device)
            if float(row_losses(obj64, start_W).sum()) < float(row_losses(obj64, out).sum()):
                out, info.fell_back = start_W, True
    return out, info


_OPTIONS = tuple(f.name for f in dataclasses.fields(FistaOptions))


def fista_pruner(W: torch.Tensor, stats: LayerStats, sparsity: float, nm: NM = None, **options) -> torch.Tensor:
    """Registered ``fista`` pruner (Contract 3); options as in :func:`fista_prune`."""
    unknown = set(options) - set(_OPTIONS)
    if unknown:
        raise ValueError(f"unknown fista option(s) {sorted(unknown)}; known: {', '.join(_OPTIONS)}")
    return fista_prune(W, stats, sparsity, nm, **options)[0]

def _variant(options: dict) -> str:
    return "paper-literal, no re-fit" if options.get("refit", "cg") == "none" else "re-fit"


SPEC = PrunerSpec("fista", fista_pruner, needs=frozenset({"H", "K"}), options=_OPTIONS, correction="intra",
                  description="FISTAPruner: per-layer LASSO on ½‖W*X*−WX‖² by FISTA, λ searched (Zhao et al. 2024)",
                  label="FISTAPruner", paper_literal={"refit": "none"}, variant=_variant, variant_options=("refit",))


def fista_lambda_path(W: torch.Tensor, stats: LayerStats, lambdas=None, *, num: int = 12,
                      min_ratio: float = 1e-3, max_iter: int = 300, tol: float = 1e-6,
                      precondition: bool = True, dtype: torch.dtype = torch.float64) -> pd.DataFrame:
    """The LASSO solution path of one layer for the app's "effect of λ" view.

    For each λ (given, or ``num`` values geometrically spaced from ``λ_max = max|G|`` — the smallest λ whose
    solution is all zero — down to ``min_ratio · λ_max``), solve the LASSO by FISTA, warm-started along the path
    from λ_max downwards, and report: ``lambda``, ``lambda_rel`` (= λ/λ_max), ``sparsity`` (zero fraction of the
    solution, before any projection), ``rel_error`` (``‖W*X* − WX‖F / ‖WX‖F``) and ``iters``.
    """
    obj = local_objective(W.to(torch.float32), stats, dtype=dtype)
    if obj.const is None:
        raise ValueError("fista_lambda_path needs stats.D to report the relative error; collect needs={'H', 'K'}")
    lam_max = float(obj.G.abs().max())
    if lambdas is None:
        if num < 2 or not 0 < min_ratio < 1:
            raise ValueError(f"fista_lambda_path: need num ≥ 2 and 0 < min_ratio < 1 (got {num}, {min_ratio})")
        lambdas = [lam_max * min_ratio ** (i / (num - 1)) for i in range(num)]
    lambdas = sorted((float(x) for x in lambdas), reverse=True)
    if any(x < 0 for x in lambdas):
        raise ValueError("fista_lambda_path: lambdas must be ≥ 0")
    L = fista_lipschitz(obj.H, precondition)
    Z = torch.zeros_like(obj.G)
    rows = []
    for lam in lambdas:
        res = fista_lasso(obj.H, obj.G, lam, Z, L=L, max_iter=max_iter, tol=tol, precondition=precondition)
        Z = res.W
        loss = obj.value(Z)
        rows.append({"lambda": lam, "lambda_rel": lam / lam_max if lam_max > 0 else float("nan"),
                     "sparsity": float((Z == 0).to(torch.float64).mean()),
                     "rel_error": math.sqrt(loss / obj.const) if obj.const > 0 else 0.0, "iters": res.iters})
    df = pd.DataFrame(rows, columns=["lambda", "lambda_rel", "sparsity", "rel_error", "iters"])
    df.attrs["lambda_max"] = lam_max
    return df
