"""2:4 proximal pruner (Kübler et al., "A Proximal Operator for Inducing 2:4-Sparsity", 2025).

Regularizer per group ``w`` of 4 consecutive inputs of a row: ``R(w) = Σ_{i<j<k} |w_i w_j w_k|`` — zero exactly
when the group has at most 2 non-zeros. The pruner runs proximal gradient steps on the local loss
``f(W*) = ½‖W*X* − WX‖F²`` (:mod:`pruning.gd`): ``W ← prox_{μ_t R}(W − ∇f(W)/L)`` with ``L = λ_max(H)`` and an
exponentially growing strength ``μ_t = μ_0 · growth^t`` until every group is 2:4; the resulting mask can then be
refined with masked gradient updates (``gd_steps`` here, or ``--gd-steps`` of the sequential loop: "prox+GD").

Exact proximal operator ``prox_{μR}(w) = argmin_z ½‖z − w‖² + μ R(z)`` (derivation):

1. *Reduction.* ``R`` depends on ``|z|`` only and is non-decreasing in each ``|z_i|``, so the minimiser has
   ``sign z_i = sign w_i`` and ``0 ≤ |z_i| ≤ |w_i|``; ``R`` is symmetric, so (rearrangement inequality) ``|z|``
   is ordered like ``|w|``. Scaling ``z = u/μ``, ``b = μ|w|`` sorted descending turns the problem into
   ``min_{u ≥ 0} F(u) = ½‖u − b‖² + e₃(u)`` (``e₃`` = 3rd elementary symmetric polynomial), times ``1/μ²``.
2. *Supports.* The support of the minimiser is the top-k of ``b`` for some k ∈ {2, 3, 4} (k ≤ 2 ⇒ ``e₃ = 0`` and
   the best such point is ``(b₁, b₂, 0, 0)``; k < 2 is never better).
3. *Convex pieces.* On a support of size k the Hessian is ``I + N(u)`` with ``N_ij = Σ_{l∉{i,j}} u_l`` (a unit
   diagonal matrix whose off-diagonal entries are linear in u). The set ``Ω_k = {u ≥ 0 : I + N(u) ⪰ 0}`` is the
   pre-image of the PSD cone under an affine map, hence convex, and ``F`` is convex on it. Every interior local
   minimum of ``F`` on that support satisfies the second-order condition, so lies in ``Ω_k`` and is therefore
   *the* minimiser of the convex problem ``min_{Ω_k} F``: each support has one candidate, found by damped
   Newton steps that stay inside ``Ω_k`` (Cholesky succeeds) — converging to machine precision by convexity.
4. *Pruning the search.* From the 2×2 minors of ``I + N ⪰ 0`` and stationarity: a 3-support minimum needs
   ``b₁ ≤ 2`` and a 4-support minimum ``b₁ ≤ 7/4``; otherwise only ``(b₁, b₂, 0, 0)`` remains.
5. The prox value is the best of the (at most three) candidates, each an actual feasible point.
The pruner's own tests compare this operator with a brute-force minimisation (grid + multi-start L-BFGS-B).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch

from .base import NM, LayerStats, register_pruner
from .gd import lipschitz, local_objective, masked_gd

__all__ = ["group_penalty", "prox_objective", "prox24", "Prox24Info", "prox24_prune", "prox24_pruner"]

_NEWTON_ITERS = 60
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
def _F(u: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((u - b) ** 2).sum(-1) + group_penalty(u)


def _grad(u: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    s = u.sum(-1, keepdim=True)
    e2 = 0.5 * (s * s - (u * u).sum(-1, keepdim=True))
    return u - b + (e2 - u * (s - u))  # e2 of the other three coordinates


def _chol_solve4(u: torch.Tensor, g: torch.Tensor, k: int, shift: Optional[torch.Tensor] = None):
    """Solve ``(I + N(u) + shift·I) d = g`` on the first k coordinates by an elementwise Cholesky.

    Returns (d, pd): pd = that matrix is positive definite (with ``shift = 0``: the Hessian of F).
    """
    s = u.sum(-1)
    diag = torch.ones_like(s) if shift is None else 1.0 + shift
    pd = torch.ones_like(s, dtype=torch.bool)
    Lm: dict = {}
    for i in range(k):
        for j in range(i + 1):
            v = diag.clone() if i == j else s - u[:, i] - u[:, j]
            for m in range(j):
                v = v - Lm[i, m] * Lm[j, m]
            if i == j:
                pd &= v > 0
                Lm[i, i] = torch.sqrt(torch.clamp(v, min=1e-300))
            else:
                Lm[i, j] = v / Lm[j, j]
    y = []
    for i in range(k):
        v = g[:, i]
        for m in range(i):
            v = v - Lm[i, m] * y[m]
        y.append(v / Lm[i, i])
    x = [None] * k
    for i in reversed(range(k)):
        v = y[i]
        for m in range(i + 1, k):
            v = v - Lm[m, i] * x[m]
        x[i] = v / Lm[i, i]
    d = torch.zeros_like(g)
    d[:, :k] = torch.stack(x, -1)
    return d, pd


def _hess_pd(u: torch.Tensor, k: int) -> torch.Tensor:
    return _chol_solve4(u, torch.zeros_like(u), k)[1]


def _bisect(fn, lo: torch.Tensor, hi: torch.Tensor, increasing: bool, iters: int = 64) -> torch.Tensor:
    """Root of the monotone ``fn`` on [lo, hi] (elementwise; ``increasing`` gives its direction) by bisection."""
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        go_left = (fn(mid) > 0) if increasing else (fn(mid) <= 0)
        hi = torch.where(go_left, mid, hi)
        lo = torch.where(go_left, lo, mid)
    return 0.5 * (lo + hi)


def _three_support(b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Exact minimiser of F on the support {1, 2, 3} (rows of b sorted descending), by a 1-D reduction.

    Fix ``v = u_3``; for ``v < 1`` the problem in ``(x, y) = (u_1, u_2)`` is a strictly convex quadratic with
    minimiser ``x = p/(2(1+v)) + m/(2(1-v))``, ``y = p/(2(1+v)) - m/(2(1-v))`` (``p = b_1+b_2``, ``m = b_1-b_2``);
    the reduced function is ``V(v) = (v-b_3)²/2 - m²/(4(1-v)) - p²/(4(1+v)) + const``. Its second derivative
    ``V2 = 1 - m²/(2(1-v)³) - p²/(2(1+v)³)`` is concave with maximum at ``v* = (r-1)/(r+1)``, ``r = sqrt(p/m)``
    (the third derivative is decreasing), so V is convex on exactly one interval ``[v_a, v_b]``, where V'
    increases; any local minimum lies there. Bisection on V2 gives ``v_a, v_b``, bisection on V' the unique
    local minimum (``y > 0`` needs ``v < b_2/b_1``). Returns (u, F(u), found).
    """
    b1, b2, b3 = b[:, 0], b[:, 1], b[:, 2]
    p, m = b1 + b2, b1 - b2
    d2 = lambda v: 1.0 - m * m / (2 * (1 - v) ** 3) - p * p / (2 * (1 + v) ** 3)  # noqa: E731
    d1 = lambda v: v - b3 - m * m / (4 * (1 - v) ** 2) + p * p / (4 * (1 + v) ** 2)  # noqa: E731
    h = torch.clamp(b2 / b1, max=1.0 - 1e-12)
    r = torch.sqrt(p / torch.clamp(m, min=1e-300))
    vstar = torch.minimum((r - 1) / (r + 1), h)
    zero = torch.zeros_like(b1)
    convex = d2(vstar) > 0
    va = torch.where(d2(zero) >= 0, zero, _bisect(d2, zero, vstar, True))
    vb = torch.where(d2(h) >= 0, h, _bisect(d2, vstar, h, False))
    found = convex & (d1(va) < 0) & (d1(vb) > 0)
    v = _bisect(d1, va, vb, True)
    x = p / (2 * (1 + v)) + m / (2 * (1 - v))
    y = p / (2 * (1 + v)) - m / (2 * (1 - v))
    found &= (y > 0) & (v > 0)
    u = torch.stack([x, y, v, torch.zeros_like(v)], -1)
    return u, _F(u, b), found


def _four_support(b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimiser of the convex problem ``min F`` over the convex set Ω_4 (all four coordinates free).

    Levenberg-Marquardt-damped Newton from ``u_0 = b / max(1, 8 b_1)`` (diagonally dominant Hessian, so inside
    Ω_4): a step ``-(∇²F + λI)⁻¹ ∇F`` is accepted when it keeps u > 0 and ∇²F positive definite (stays in the
    convex piece) and decreases F (Armijo); λ shrinks after a success and grows after a failure, so the steps
    move between Newton steps (fast local convergence) and gradient-like steps (progress near the boundary of
    Ω_4). Returns (u, F(u)); u is always a feasible point and competes through its F value.
    """
    u = b / torch.clamp(8 * b[:, :1], min=1.0)
    f = _F(u, b)
    lam = torch.zeros_like(f)
    active = torch.arange(b.shape[0], device=b.device)
    scale = 1.0 + b[:, 0]
    for _ in range(_NEWTON_ITERS):
        if active.numel() == 0:
            break
        ua, ba, fa, la = u[active], b[active], f[active], lam[active]
        g = _grad(ua, ba)
        gn = g.abs().amax(-1)
        unew, fnew = ua.clone(), fa.clone()
        done = torch.zeros_like(fa, dtype=torch.bool)
        for _ in range(_LINESEARCH):
            d, pd = _chol_solve4(ua, g, 4, la)
            ut = ua - d
            ft = _F(ut, ba)
            ok = (~done) & pd & (ut.min(-1).values > 0) & _hess_pd(ut, 4) & (ft <= fa - 1e-4 * (g * d).sum(-1))
            unew[ok], fnew[ok] = ut[ok], ft[ok]
            done |= ok
            if bool(done.all()):
                break
            la = torch.where(done, la, torch.clamp(4 * la, min=1e-6 * (1 + gn)))
        lam[active] = torch.where(done, la / 4, la)
        u[active], f[active] = unew, fnew
        step = (unew - ua).abs().amax(-1)
        keep = done & (step > 1e-15 * scale[active])
        active = active[keep]
    return u, f


def prox24(Y: torch.Tensor, mu) -> torch.Tensor:
    """Exact ``prox_{μR}(y) = argmin_z ½‖z − y‖² + μ Σ_{i<j<k}|z_i z_j z_k|`` for every group of 4.

    ``Y`` has groups in its last dimension (size 4); ``mu ≥ 0`` is a float or a tensor broadcastable to
    ``Y.shape[:-1]``. Computed in float64, returned in ``Y.dtype``. See the module docstring for the derivation.
    """
    if Y.shape[-1] != 4:
        raise ValueError(f"prox24 works on groups of 4 in the last dimension, got size {Y.shape[-1]}")
    mu_t = torch.as_tensor(mu, dtype=torch.float64, device=Y.device)
    if bool((mu_t < 0).any()):
        raise ValueError("prox24 needs a regularization strength mu ≥ 0")
    lead = Y.shape[:-1]
    Y64 = Y.to(torch.float64).reshape(-1, 4)
    mu64 = torch.broadcast_to(mu_t, lead).reshape(-1)
    a = Y64.abs()
    b_sorted, order = torch.sort(a * mu64.unsqueeze(1), dim=-1, descending=True)
    n = b_sorted.shape[0]
    u = torch.zeros_like(b_sorted)
    u[:, :2] = b_sorted[:, :2]  # candidate: the two largest kept
    best = _F(u, b_sorted)
    idx = torch.nonzero((b_sorted[:, 0] <= 2.0) & (b_sorted[:, 2] > 0)).squeeze(1)
    if idx.numel():
        uc, fc, found = _three_support(b_sorted[idx])
        better = found & (fc < best[idx])
        u[idx[better]], best[idx[better]] = uc[better], fc[better]
    idx = torch.nonzero((b_sorted[:, 0] <= 1.75) & (b_sorted[:, 3] > 0)).squeeze(1)
    if idx.numel():
        uc, fc = _four_support(b_sorted[idx])
        better = fc < best[idx]
        u[idx[better]], best[idx[better]] = uc[better], fc[better]
    Z_sorted = torch.zeros_like(u)
    pos = mu64 > 0
    Z_sorted[pos] = u[pos] / mu64[pos].unsqueeze(1)
    Z = torch.zeros_like(Z_sorted).scatter_(1, order, Z_sorted)
    Z = torch.where(pos.unsqueeze(1), Z * torch.sign(Y64), Y64)  # mu = 0: identity
    return Z.reshape(*lead, 4).to(Y.dtype)


# ------------------------------------------------------------------------------------------- the pruner
@dataclass
class Prox24Info:
    """Record of one prox24 run: proximal steps taken, final μ (1/weight units), loss history (no constant)."""

    steps: int = 0
    mu_final: float = 0.0
    converged: bool = False
    forced_groups: int = 0  # groups still > 2 non-zeros after max_steps, projected by magnitude
    history: list = field(default_factory=list)


def _non24_groups(W: torch.Tensor) -> int:
    return int(((W.reshape(W.shape[0], -1, 4) != 0).sum(-1) > 2).sum())


def prox24_prune(W: torch.Tensor, stats: LayerStats, *, mu0: float = 1e-2, growth: float = 1.1,
                 max_steps: int = 300, gd_steps: int = 0, dtype: torch.dtype = torch.float64,
                 record: bool = False) -> tuple[torch.Tensor, Prox24Info]:
    """Proximal-gradient 2:4 pruning of ``W`` (out, in) on ``f = ½‖W*X* − WX‖F²``; returns (W_new, info).

    Step ``t``: ``W ← prox24(W − ∇f(W)/L, μ_t)`` with ``μ_t = mu0 · growth^t / rms(W)`` (``rms`` = root mean
    square of ``W``, so ``mu0`` is dimensionless), starting from the dense ``W``; stops when every group of 4
    has ≤ 2 non-zeros. If ``max_steps`` is reached first, the remaining groups keep their 2 largest entries
    (counted in ``info.forced_groups``). Then ``gd_steps`` masked gradient updates (:func:`pruning.gd.masked_gd`).
    """
    rows, cols = W.shape
    if cols % 4:
        raise ValueError(f"prox24 needs the input dimension ({cols}) to be a multiple of 4")
    if mu0 <= 0 or growth <= 1.0:
        raise ValueError(f"prox24 needs mu0 > 0 and growth > 1 (got mu0={mu0}, growth={growth})")
    obj = local_objective(W, stats, dtype=dtype)
    L = lipschitz(obj.H)
    eta = 1.0 / L if L > 0 else 0.0
    Z = W.to(dtype).clone()
    rms = float(W.to(torch.float64).pow(2).mean().sqrt())
    mu = mu0 / rms if rms > 0 else 1.0
    info = Prox24Info()
    while info.steps < max_steps:
        Z = prox24((Z - eta * obj.grad(Z)).reshape(rows, cols // 4, 4), mu).reshape(rows, cols)
        info.steps += 1
        info.mu_final = mu
        if record:
            info.history.append(obj.quad_linear(Z))
        if _non24_groups(Z) == 0:
            info.converged = True
            break
        mu *= growth
    if not info.converged:
        info.forced_groups = _non24_groups(Z)
        from .masks import nm_mask

        Z = Z.masked_fill(nm_mask(Z.abs(), 2, 4), 0.0)
    out = Z.to(W.dtype)
    if gd_steps:
        out = masked_gd(out, W, stats, gd_steps, dtype=dtype)
    return out, info


@register_pruner("prox24", needs=frozenset({"H", "K"}),
                 description="2:4 proximal pruner: prox of Σ|w_i w_j w_k| with growing strength (Kübler et al. 2025)")
def prox24_pruner(W: torch.Tensor, stats: LayerStats, sparsity: float, nm: NM = None, **options) -> torch.Tensor:
    """Registered ``prox24`` pruner (Contract 3). Only ``nm=(2, 4)``; ``sparsity`` is ignored.

    Options: ``mu0``, ``growth``, ``max_steps``, ``gd_steps``, ``dtype`` (see :func:`prox24_prune`).
    """
    if nm is None or tuple(nm) != (2, 4):
        raise ValueError(f"prox24 produces 2:4 sparsity only (got nm={nm}); pass --nm 2:4 (nm=(2, 4))")
    unknown = set(options) - {"mu0", "growth", "max_steps", "gd_steps", "dtype"}
    if unknown:
        raise ValueError(f"unknown prox24 option(s) {sorted(unknown)}; known: mu0, growth, max_steps, gd_steps, dtype")
    return prox24_prune(W, stats, **options)[0]
