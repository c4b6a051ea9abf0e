"""2:4 proximal pruner (Kübler et al., "A Proximal Operator for Inducing 2:4-Sparsity", 2025).

Regularizer per group ``w`` of 4 consecutive inputs of a row: ``R(w) = Σ_{i<j<k} |w_i w_j w_k|``, zero exactly
when the group has at most 2 non-zeros. The pruner runs proximal gradient steps on the local loss
``f(W*) = ½‖W*X* − WX‖F²`` (:mod:`pruning.pruners.gd`): ``W ← prox_{μ_t R}(W − ∇f(W)/L)`` with ``L = λ_max(H)`` and an
exponentially growing strength ``μ_t`` until every group is 2:4; the mask can then be refined with masked
gradient updates (``gd_steps`` here, or ``--gd-steps`` of the sequential loop: "prox+GD").

Exact proximal operator ``prox_{μR}(w) = argmin_z ½‖z − w‖² + μ R(z)`` (derivation, our own write-up):

1. *Reduction.* ``R`` depends on ``|z|`` only and is non-decreasing in each ``|z_i|``, so the minimiser has
   ``sign z_i = sign w_i`` and ``0 ≤ |z_i| ≤ |w_i|``; ``R`` is symmetric, so (rearrangement inequality) ``|z|`` is
   ordered like ``|w|``. With ``z = u/μ`` and ``b = μ|w|`` sorted descending the problem becomes
   ``min_{u ≥ 0} F(u) = ½‖u − b‖² + e₃(u)`` (``e₃`` = third elementary symmetric polynomial; F = μ² × original).
2. *Supports.* The minimiser is supported on the top-k of ``b``, k ∈ {2, 3, 4}. For k = 2, ``e₃ = 0`` and the
   candidate is ``(b₁, b₂, 0, 0)``.
3. *Convex pieces.* On a support of size k the Hessian is ``I + N(u)``, ``N_ij = Σ_{l ∉ {i,j}} u_l`` (unit
   diagonal, off-diagonal entries linear in u). ``Ω_k = {u ≥ 0 : I + N(u) ⪰ 0}`` is the pre-image of the PSD cone
   under an affine map, hence convex, and F is convex on it. An interior local minimum satisfies the
   second-order condition, so it lies in Ω_k and is *the* minimiser of the convex problem ``min_{Ω_k} F``: one
   candidate per support.
4. *k = 3, exact 1-D reduction* (:func:`_three_support`): fixing ``u₃ = v < 1`` leaves a strictly convex quadratic
   in ``(u₁, u₂)`` with a closed-form minimiser; the reduced ``V(v)`` has a concave second derivative, so V is
   convex on one interval where its unique local minimum is found by monotone (non-overshooting) Newton steps.
5. *k = 4* (:func:`_four_support`): damped (Levenberg–Marquardt) Newton inside Ω₄ for the convex problem —
   iterative, capped at 30 iterations (every interior minimiser in our random tests converged within 10), and
   only a feasible point ever competes, so an unfinished solve can never return something worse than the other
   candidates. It is skipped when it cannot matter: when the best other candidate satisfies the KKT conditions
   of ``min_{Ω₄ ∩ {u ≥ 0}} F`` (then, by convexity, no 4-support point is lower), when ``b₁ > 7/4`` (2×2 minors
   of ``I + N ⪰ 0`` give ``u_k + u_l ≤ 1``, so stationarity ``b₁ = u₁ + e₂(u₂, u₃, u₄) ≤ 1 + 3/4``; likewise a
   3-support minimum needs ``b₁ ≤ 2``), when interval bounds on a stationary point in Ω₄ are empty, or when the
   convexity lower bound ``F(u) + ∇F(u)·(v − u)`` over those bounds exceeds the best candidate.
6. The prox is the candidate with the lowest F (each candidate is an actual feasible point).
Tests compare this operator with a brute-force minimisation (dense grid + multi-start L-BFGS-B) to 1e-6.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch

from pruning.pruners.base import NM, LayerStats, PrunerSpec
from pruning.pruners.gd import LocalObjective, lipschitz, local_objective, masked_gd
from pruning.pruners.masks import nm_mask

__all__ = ["group_penalty", "prox_objective", "prox24", "Prox24Info", "prox24_prune", "prox24_pruner"]

_NEWTON_ITERS = 30
_LINESEARCH = 40


def group_penalty(W: torch.Tensor) -> torch.Tensor:
    """``R(w) = Σ_{i<j<k} |w_i w_j w_k|`` for every group of 4 in the last dimension (shape ``W.shape[:-1]``)."""
    a = W.abs()
    a0, a1, a2, a3 = a.unbind(-1)
    return a0 * a1 * (a2 + a3) + a2 * a3 * (a0 + a1)


def prox_objective(Z: torch.Tensor, Y: torch.Tensor, mu) -> torch.Tensor:
    """``½‖z − y‖² + μ R(z)`` per group of 4 (last dimension)."""
    return 0.5 * ((Z - Y) ** 2).sum(-1) + mu * group_penalty(Z)


# ------------------------------------------------------------------------------------------- scaled problem
# Internals work on "structure of arrays" tensors u, b of shape (4, G): row i holds coordinate i of every group.
def _F(u: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``F(u) = ½‖u − b‖² + e₃(u)`` per group (u, b of shape (4, G), u ≥ 0)."""
    return 0.5 * ((u - b) ** 2).sum(0) + u[0] * u[1] * (u[2] + u[3]) + u[2] * u[3] * (u[0] + u[1])


def _others_e2(u: torch.Tensor) -> torch.Tensor:
    """``e₂(u_{−i})`` for every coordinate i (sum of the pairwise products of the other three), shape (4, G)."""
    s = u.sum(0)
    return 0.5 * (s * s - (u * u).sum(0)) - u * (s - u)


def _grad(u: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``∇F(u) = u − b + e₂(u_{−i})``."""
    return u - b + _others_e2(u)


def _cholesky(u: torch.Tensor, shift: Optional[torch.Tensor] = None) -> tuple[dict, torch.Tensor]:
    """Elementwise Cholesky factor of ``I + N(u) + shift·I`` (``N_ij = s − u_i − u_j`` off the diagonal).

    Returns (factor entries {(i, j): row}, pd) where pd = the matrix is positive definite.
    """
    s = u.sum(0)
    diag = torch.ones_like(s) if shift is None else 1.0 + shift
    pd = torch.ones_like(s, dtype=torch.bool)
    Lm: dict = {}
    for i in range(4):
        for j in range(i + 1):
            v = diag if i == j else s - u[i] - u[j]
            for m in range(j):
                v = v - Lm[i, m] * Lm[j, m]
            if i == j:
                pd &= v > 0
                Lm[i, i] = torch.sqrt(torch.clamp(v, min=1e-300))
            else:
                Lm[i, j] = v / Lm[j, j]
    return Lm, pd


def _chol_solve4(u: torch.Tensor, g: torch.Tensor, shift: Optional[torch.Tensor] = None):
    """Solve ``(I + N(u) + shift·I) d = g`` for every group; returns (d, pd) (``shift = None``: ∇²F)."""
    Lm, pd = _cholesky(u, shift)
    y: list = []
    for i in range(4):
        v = g[i]
        for m in range(i):
            v = v - Lm[i, m] * y[m]
        y.append(v / Lm[i, i])
    x: list = [None] * 4
    for i in reversed(range(4)):
        v = y[i]
        for m in range(i + 1, 4):
            v = v - Lm[m, i] * x[m]
        x[i] = v / Lm[i, i]
    return torch.stack(x), pd


def _hess_pd(u: torch.Tensor) -> torch.Tensor:
    """True where ``∇²F(u) = I + N(u)`` is positive definite (u inside Ω₄)."""
    return _cholesky(u)[1]


def _newton_sub(fn, dfn, x0: torch.Tensor, idx: torch.Tensor, iters: int = 200) -> torch.Tensor:
    """Newton iterations on the elements ``idx`` of per-group scalar functions ``fn(v, idx)``, ``dfn(v, idx)``.

    Started on the side of the root from which a convex/concave monotone function cannot overshoot, the iterates
    are monotone; stops per element when the step is at rounding level.
    """
    x = x0.clone()
    active = torch.arange(x.shape[0], device=x.device)
    for _ in range(iters):
        if active.numel() == 0:
            break
        xa, ia = x[active], idx[active]
        step = fn(xa, ia) / dfn(xa, ia)
        xn = xa - step
        ok = torch.isfinite(xn)
        x[active[ok]] = xn[ok]
        active = active[ok & (step.abs() > 4e-16 * (1.0 + xn.abs()))]
    return x


def _three_support(b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Exact minimiser of F on the support {1, 2, 3} (columns of ``b`` (4, G) sorted descending), by 1-D reduction.

    Fix ``v = u₃``. For ``v < 1`` the problem in ``(x, y) = (u₁, u₂)`` is a strictly convex quadratic minimised at
    ``x = p/(2(1+v)) + m/(2(1−v))``, ``y = p/(2(1+v)) − m/(2(1−v))`` (``p = b₁+b₂``, ``m = b₁−b₂``), leaving
    ``V(v) = ½(v−b₃)² − m²/(4(1−v)) − p²/(4(1+v)) + const`` on ``0 < v < b₂/b₁`` (y > 0); a 3-support local
    minimum has ``v < 1`` (2×2 minor of the Hessian), so nothing is lost. ``V‴ = 3p²/(2(1+v)⁴) − 3m²/(2(1−v)⁴)``
    decreases and vanishes at ``v* = (r−1)/(r+1)``, ``r = (p/m)^½``; hence ``V″ = 1 − m²/(2(1−v)³) − p²/(2(1+v)³)``
    is concave with its maximum at v*, V is convex on exactly one interval ``[v_a, v_b] ∋ v*`` where V' increases,
    and the local minimum of V (if any) is unique and lies there. V' is convex on ``[v_a, v*]`` and concave on
    ``[v*, v_b]``; ``v_a``, ``v_b`` (roots of V″) and the root of V' are found by Newton's method started on the
    non-overshooting side. Returns (u (4, G), F(u), found).
    """
    b1, b2, b3 = b[0], b[1], b[2]
    p2, m2 = (b1 + b2) ** 2, (b1 - b2) ** 2

    def d1(v, i):
        return v - b3[i] - m2[i] / (4 * (1 - v) ** 2) + p2[i] / (4 * (1 + v) ** 2)

    def d2(v, i):
        return 1.0 - m2[i] / (2 * (1 - v) ** 3) - p2[i] / (2 * (1 + v) ** 3)

    def d3(v, i):
        return 1.5 * p2[i] / (1 + v) ** 4 - 1.5 * m2[i] / (1 - v) ** 4

    every = torch.arange(b.shape[1], device=b.device)
    h = torch.clamp(b2 / b1, max=1.0 - 1e-9)
    r = (p2 / torch.clamp(m2, min=1e-300)) ** 0.25
    vstar = torch.minimum((r - 1) / (r + 1), h)
    zero = torch.zeros_like(b1)
    found = d2(vstar, every) > 0
    lo_neg, hi_neg = d2(zero, every) < 0, d2(h, every) < 0
    va = torch.where(lo_neg, vstar, zero)
    vb = torch.where(hi_neg, vstar, h)
    i = torch.nonzero(found & lo_neg).squeeze(1)  # V″ concave increasing on [0, v*]: from the left
    va[i] = _newton_sub(d2, d3, zero[i], i)
    i = torch.nonzero(found & hi_neg).squeeze(1)  # concave decreasing on [v*, h]: from the right
    vb[i] = _newton_sub(d2, d3, h[i], i)
    va, vb = torch.minimum(va, vstar), torch.maximum(vb, vstar)
    found &= (d1(va, every) < 0) & (d1(vb, every) > 0)
    i = torch.nonzero(found).squeeze(1)  # from v*: right end of the convex piece, left end of the concave one
    v = vstar.clone()
    v[i] = _newton_sub(d1, d2, vstar[i], i)
    v = torch.minimum(torch.maximum(v, va), vb)
    x = (b1 + b2) / (2 * (1 + v)) + (b1 - b2) / (2 * (1 - v))
    y = (b1 + b2) / (2 * (1 + v)) - (b1 - b2) / (2 * (1 - v))
    found &= (y > 0) & (v > 0)
    u = torch.stack([x, y, v, torch.zeros_like(v)])
    return u, _F(u, b), found


def _four_bounds(b: torch.Tensor, iters: int = 12) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bounds ``lo ≤ u* ≤ up`` on any interior local minimiser u* of F, and a mask of groups that may have one.

    u* is stationary, ``u*_i = b_i − e₂(u*_{−i})``, and lies in Ω₄, whose 2×2 minors give ``u_i + u_j ≤ 1``.
    The map ``u ↦ b − e₂(u_{−·})`` is antitone, so ``lo ← max(lo, b − e₂(up_{−·}))``,
    ``up ← min(up, b − e₂(lo_{−·}), 1 − max_{j≠i} lo_j)`` keeps valid bounds (starting from ``0 ≤ u* ≤ min(b, 1)``);
    for small b it contracts onto u*. Necessary for u*: ``lo ≤ up`` and ``e₂(lo₁, lo₂, lo₃) < b₄`` (from
    ``u*₄ = b₄ − e₂(u*₁, u*₂, u*₃) > 0``), up to rounding.
    """
    up = torch.clamp(b, max=1.0)
    lo = torch.zeros_like(b)
    for _ in range(iters):
        lo = torch.maximum(lo, b - _others_e2(up))
        top2 = torch.topk(lo, 2, dim=0).values
        other_max = torch.where(lo >= top2[0], top2[1], top2[0])
        up = torch.minimum(up, torch.minimum(b - _others_e2(lo), 1.0 - other_max))
    slack = 1e-12 * (1.0 + b[0])
    e2 = lo[0] * lo[1] + lo[0] * lo[2] + lo[1] * lo[2]
    ok = ((up - lo).min(0).values >= -slack) & (e2 < b[3] + slack) & (up.min(0).values > 0)
    return torch.minimum(lo, up), torch.maximum(up, lo), ok


def _four_support(b: torch.Tensor, rival: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimiser of the convex problem ``min F`` over ``C = Ω₄ ∩ {u > 0}`` (all four coordinates free).

    Groups that cannot have an interior minimiser (:func:`_four_bounds`) are skipped (returned F = +inf).
    Levenberg–Marquardt-damped Newton from the midpoint of the bounds (or ``b / max(1, 8 b₁)``, inside Ω₄ by
    diagonal dominance): a step ``−(∇²F + λI)⁻¹∇F`` is accepted when it keeps u > 0 and ∇²F positive definite
    (stays in the convex piece) and decreases F (Armijo); λ shrinks after a success and grows after a failure,
    so steps range from Newton steps (fast local convergence) to short gradient-like steps. A group stops when
    its Newton step is at rounding level, when no admissible step exists, when the convexity bound
    ``F(u*) ≥ F(u) + Σ_i min(g_i(lo_i − u_i), g_i(up_i − u_i))`` shows that it cannot beat ``rival``, or after
    ``_NEWTON_ITERS`` iterations (groups whose minimiser lies on the boundary of Ω₄ creep towards it; every group
    with an interior minimiser in our random tests converged within 10). Returns (u, F(u)); u is feasible
    wherever F is finite.
    """
    lo, up, ok = _four_bounds(b)
    f = torch.full_like(rival, float("inf"))
    u = torch.zeros_like(b)
    active = torch.nonzero(ok).squeeze(1)
    if active.numel() == 0:
        return u, f
    ba = b[:, active]
    mid = 0.5 * (lo[:, active] + up[:, active])
    safe = ba / torch.clamp(8 * ba[0], min=1.0)
    start = torch.where(_hess_pd(mid) & (mid.min(0).values > 0), mid, safe)
    u[:, active] = start
    f[active] = _F(start, ba)
    lam = torch.zeros_like(f)
    tol = 1e-14 * (1.0 + b[0])
    for _ in range(_NEWTON_ITERS):
        ua, ba, fa = u[:, active], b[:, active], f[active]
        g = _grad(ua, ba)
        lower = fa + torch.minimum(g * (lo[:, active] - ua), g * (up[:, active] - ua)).sum(0)
        keep = lower < rival[active]
        active, ua, ba, fa, g = active[keep], ua[:, keep], ba[:, keep], fa[keep], g[:, keep]
        if active.numel() == 0:
            break
        la = lam[active]
        gmax = g.abs().amax(0)
        moved = torch.zeros_like(fa, dtype=torch.bool)
        converged = torch.zeros_like(moved)
        todo = torch.arange(active.numel(), device=b.device)
        for _ in range(_LINESEARCH):
            ut_u, gt, lt = ua[:, todo], g[:, todo], la[todo]
            d, pd = _chol_solve4(ut_u, gt, lt)
            ut = ut_u - d
            ft = _F(ut, ba[:, todo])
            tiny = pd & (lt == 0) & (d.abs().amax(0) <= tol[active[todo]])
            good = pd & (ut.min(0).values > 0) & _hess_pd(ut) & ((ft <= fa[todo] - 1e-4 * (gt * d).sum(0)) | tiny)
            acc = todo[good]
            u[:, active[acc]], f[active[acc]] = ut[:, good], ft[good]
            moved[acc] = True
            converged[todo[good & tiny]] = True
            la[acc] = lt[good] / 8
            todo = todo[~good]
            if todo.numel() == 0:
                break
            la[todo] = torch.maximum(8 * la[todo], 1e-4 * (1.0 + gmax[todo]))
        lam[active] = torch.where(la < 1e-12, torch.zeros_like(la), la)
        active = active[moved & ~converged]
        if active.numel() == 0:
            break
    return u, f


def prox24(Y: torch.Tensor, mu) -> torch.Tensor:
    """Exact ``prox_{μR}(y) = argmin_z ½‖z − y‖² + μ Σ_{i<j<k}|z_i z_j z_k|`` for every group of 4.

    ``Y`` has its groups in the last dimension (size 4); ``mu ≥ 0`` is a float or a tensor broadcastable to
    ``Y.shape[:-1]``. Computed in float64, returned in ``Y.dtype``. Derivation in the module docstring.
    """
    if Y.shape[-1] != 4:
        raise ValueError(f"prox24 works on groups of 4 in the last dimension, got size {Y.shape[-1]}")
    mu_t = torch.as_tensor(mu, dtype=torch.float64, device=Y.device)
    if bool((mu_t < 0).any()) or not bool(torch.isfinite(mu_t).all()):
        raise ValueError("prox24 needs a finite regularization strength mu ≥ 0")
    lead = Y.shape[:-1]
    Y64 = Y.to(torch.float64).reshape(-1, 4)
    mu64 = torch.broadcast_to(mu_t, lead).reshape(-1)
    bs, order = torch.sort(Y64.abs() * mu64.unsqueeze(1), dim=-1, descending=True)
    b = bs.T.contiguous()  # (4, G)
    u = b.clone()
    u[2:] = 0  # candidate k = 2: the two largest kept (returned bit-exact from Y when it wins)
    best = _F(u, b)
    top2 = torch.ones_like(best, dtype=torch.bool)
    # k = 3 (needs b₁ ≤ 2, b₃ > 0 and room to improve: F on {1,2,3} is ≥ ½b₄²)
    idx = torch.nonzero((b[0] <= 2.0) & (b[2] > 0) & (best > 0.5 * b[3] ** 2)).squeeze(1)
    if idx.numel():
        uc, fc, found = _three_support(b[:, idx])
        better = found & (fc < best[idx])
        u[:, idx[better]], best[idx[better]] = uc[:, better], fc[better]
        top2[idx[better]] = False
    # k = 4, unless the current best point is a KKT point of min F over Ω₄ ∩ {u ≥ 0}: inside Ω₄, stationary on
    # its support and ∂F/∂u_i ≥ 0 off it (then, by convexity, no 4-support point is lower)
    cand = (b[0] <= 1.75) & (b[3] > 0)
    idx = torch.nonzero(cand).squeeze(1)
    if idx.numel():
        ui = u[:, idx]
        g = _grad(ui, b[:, idx])
        kkt = _hess_pd(ui) & (g[3] >= 0) & ((ui[2] > 0) | (g[2] >= 0))
        idx = idx[~kkt]
    if idx.numel():
        uc, fc = _four_support(b[:, idx], best[idx])
        better = fc < best[idx]
        u[:, idx[better]], best[idx[better]] = uc[:, better], fc[better]
        top2[idx[better]] = False
    pos = mu64 > 0
    Zs = u.T / torch.where(pos, mu64, torch.ones_like(mu64)).unsqueeze(1)
    Z = torch.zeros_like(Zs).scatter_(1, order, Zs) * torch.sign(Y64)
    kept = torch.zeros_like(Y64, dtype=torch.bool).scatter_(1, order[:, :2], True)
    Z = torch.where((top2 & pos).unsqueeze(1), Y64 * kept, Z)
    Z = torch.where(pos.unsqueeze(1), Z, Y64)  # mu = 0: identity
    return Z.reshape(*lead, 4).to(Y.dtype)


# ------------------------------------------------------------------------------------------- the pruner
@dataclass
class Prox24Info:
    """Record of one prox24 run: proximal steps taken, final μ (1/weight units), loss history (no constant).

    With ``record=True``, per proximal step t = 0, 1, …: ``history[t]`` the loss without its constant after the
    step (``½tr(W*HW*ᵀ) − tr(W*Gᵀ)``), ``mus[t]`` the strength μ_t it used, ``non24[t]`` the number of groups of 4
    that still have more than 2 non-zeros after it (all three lists have length ``steps``); ``groups`` is the number
    of groups of 4 and ``loss_const`` the constant ``½‖WX‖F²`` (None without ``stats.D``), so that
    ``history[t] + loss_const`` is the local loss ``½‖W*X* − WX‖F²``. :meth:`schedule` puts them in one table.
    """

    steps: int = 0
    mu_final: float = 0.0
    converged: bool = False
    forced_groups: int = 0  # groups still > 2 non-zeros after max_steps, then cut to their 2 largest entries
    history: list = field(default_factory=list)
    mus: list = field(default_factory=list)
    non24: list = field(default_factory=list)
    groups: int = 0
    loss_const: Optional[float] = None

    def schedule(self):
        """The recorded schedule as a DataFrame: ``step`` (0-based), ``mu``, ``non24``, ``non24_frac`` (share of the
        groups of 4 with > 2 non-zeros), ``loss`` (``½‖W*X* − WX‖F²``; NaN without the constant) and
        ``rel_error`` (``√(loss / ½‖WX‖F²)``). Empty unless the run had ``record=True``."""
        import math

        import pandas as pd

        const = self.loss_const
        loss = [max(h + const, 0.0) if const is not None else float("nan") for h in self.history]
        rel = [math.sqrt(v / const) if const else float("nan") for v in loss]
        return pd.DataFrame({"step": list(range(len(self.mus))), "mu": self.mus, "non24": self.non24,
                             "non24_frac": [n / self.groups if self.groups else float("nan") for n in self.non24],
                             "loss": loss, "rel_error": rel})


def _non24_groups(W: torch.Tensor) -> int:
    return int(((W.reshape(W.shape[0], -1, 4) != 0).sum(-1) > 2).sum())


def prox24_prune(W: torch.Tensor, stats: LayerStats, *, mu0: float = 1e-2, growth: float = 1.1,
                 max_steps: int = 300, gd_steps: int = 0, dtype: torch.dtype = torch.float32,
                 precondition: bool = True, record: bool = False) -> tuple[torch.Tensor, Prox24Info]:
    """Proximal-gradient 2:4 pruning of ``W`` (out, in) on ``f = ½‖W*X* − WX‖F²``; returns (W_new, info).

    Step ``t``: ``W ← prox24(W − ∇f(W)/L, μ_t)`` (the prox of ``(γ_t/L)·R`` with ``μ_t = γ_t/L``) where
    ``μ_t = mu0 · growth^t / rms(W)`` (``rms`` = root mean square of ``W`` — of ``V`` when preconditioned — so ``mu0``
    is dimensionless), starting
    from the dense ``W``; stops when every group of 4 has ≤ 2 non-zeros. If ``max_steps`` is reached first, the
    remaining groups keep their 2 largest entries (``info.forced_groups``). Then ``gd_steps`` masked gradient
    updates (:func:`pruning.pruners.gd.masked_gd`). ``record=True`` records the loss, μ_t and the groups still not 2:4
    after every step (:class:`Prox24Info`, :meth:`Prox24Info.schedule`).

    ``precondition=True`` (default; ours, not in the paper): the gradient and proximal steps run on the rescaled
    variables ``V = W·diag(√H_jj)`` — the same local loss with Hessian ``D^{-½}HD^{-½}`` (unit diagonal) and step
    ``1/λ_max(D^{-½}HD^{-½})``; the regularizer's zero set (groups with ≤ 2 non-zeros) is unchanged, since the
    rescaling is per input column. LLM layers have ``λ_max(H)`` ~1,000× the median ``H_jj``, so plain steps
    ``1/λ_max(H)`` barely move the weights before the groups are forced to 2:4 and the mask follows magnitude;
    ``precondition=False`` is the paper's plain step. ``dtype``: precision of the gradient steps (float32 by
    default: the same masks and errors as float64 on the built-in model's layers at ~10 % less time; the prox itself
    is always solved in float64).
    """
    rows, cols = W.shape
    if cols % 4:
        raise ValueError(f"prox24 needs the input dimension ({cols}) to be a multiple of 4")
    if mu0 <= 0 or growth <= 1.0:
        raise ValueError(f"prox24 needs mu0 > 0 and growth > 1 (got mu0={mu0}, growth={growth})")
    if max_steps < 1:
        raise ValueError(f"prox24 needs max_steps ≥ 1 (got {max_steps})")
    obj = local_objective(W, stats, dtype=dtype)
    scale = None
    if precondition:  # V = W·diag(scale), scale = √H_jj (dead inputs: 1)
        d = torch.diagonal(stats.H).to(device=obj.H.device, dtype=torch.float64).clamp_min(0).sqrt()
        scale = torch.where(d > 0, d, torch.ones_like(d)).to(dtype)
        obj = LocalObjective(obj.H / scale.unsqueeze(0) / scale.unsqueeze(1), obj.G / scale.unsqueeze(0), obj.const)
    L = lipschitz(obj.H)
    eta = 1.0 / L if L > 0 else 0.0
    Z = W.to(dtype).clone() if scale is None else W.to(dtype) * scale.unsqueeze(0)
    V64 = W.to(torch.float64) if scale is None else W.to(torch.float64) * d.where(d > 0,
                                                                                  torch.ones_like(d)).unsqueeze(0)
    rms = float(V64.pow(2).mean().sqrt())  # of the (rescaled) variables the steps work on, in float64
    mu = mu0 / rms if rms > 0 else 1.0
    info = Prox24Info(groups=rows * (cols // 4), loss_const=obj.const)
    while info.steps < max_steps:
        Z = prox24((Z - eta * obj.grad(Z)).reshape(rows, cols // 4, 4), mu).reshape(rows, cols)
        info.steps += 1
        info.mu_final = mu
        left = _non24_groups(Z)
        if record:
            info.history.append(obj.quad_linear(Z))
            info.mus.append(mu)
            info.non24.append(left)
        if left == 0:
            info.converged = True
            break
        mu *= growth
    if not info.converged:
        info.forced_groups = _non24_groups(Z)
        Z = Z.masked_fill(nm_mask(Z.abs(), 2, 4), 0.0)
    if scale is not None:
        Z = Z / scale.unsqueeze(0)
    out = Z.to(W.dtype)
    if gd_steps:
        out = masked_gd(out, W, stats, gd_steps, dtype=dtype)
    return out, info


_OPTIONS = ("mu0", "growth", "max_steps", "gd_steps", "dtype", "precondition")


def prox24_pruner(W: torch.Tensor, stats: LayerStats, sparsity: float, nm: NM = None, **options) -> torch.Tensor:
    """Registered ``prox24`` pruner (Contract 3). Only ``nm=(2, 4)``; ``sparsity`` is ignored.

    Options: ``mu0``, ``growth``, ``max_steps``, ``gd_steps``, ``dtype`` (see :func:`prox24_prune`).
    """
    if nm is None or tuple(nm) != (2, 4):
        raise ValueError(f"prox24 produces 2:4 sparsity only (got nm={nm}); pass --nm 2:4 (nm=(2, 4))")
    unknown = set(options) - set(_OPTIONS)
    if unknown:
        raise ValueError(f"unknown prox24 option(s) {sorted(unknown)}; known: {', '.join(_OPTIONS)}")
    return prox24_prune(W, stats, **options)[0]


def _variant(options: dict) -> str:
    return "plain step" if options.get("precondition", True) in (False, "false") else "rescaled"


SPEC = PrunerSpec("prox24", prox24_pruner, needs=frozenset({"H", "K"}), options=_OPTIONS, only_nm=(2, 4),
                  description="2:4 proximal pruner: prox of Σ|w_i w_j w_k| with growing strength (Kübler et al. 2025)",
                  paper_literal={"precondition": False}, variant=_variant, variant_options=("precondition",))
