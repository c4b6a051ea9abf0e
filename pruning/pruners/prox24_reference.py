"""Brute-force references for the 2:4 proximal operator (:func:`pruning.pruners.prox24.prox24`), for checks and
teaching.

The exact operator reduces the problem analytically (module docstring of :mod:`pruning.pruners.prox24`); the
brute force here does not: it minimises ``½‖z − y‖² + μ Σ_{i<j<k}|z_i z_j z_k|`` separately over **every support**
``S ⊆ {1, 2, 3, 4}`` (the z with ``z_i = 0`` off S) and keeps the lowest. On a support of at most 2 entries the
regulariser is 0 and the minimiser is ``z_S = y_S``; on 3 or 4 entries it uses only the elementary facts
``sign z = sign y`` and ``|z| ≤ |y|`` (R depends on |z| only and grows with each |z_i|): a grid over the box
``[0, |y_i|]`` of the support, bounded L-BFGS-B (scipy) from the best grid points and from ``|y_S|``, then Newton
steps on the non-zero coordinates to rounding level.
"""
from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from scipy.optimize import minimize

__all__ = ["SUPPORTS", "prox24_brute_force", "support_minima"]

#: every subset of the 4 positions of a group, by size
SUPPORTS: tuple = tuple(s for k in range(5) for s in itertools.combinations(range(4), k))


def _objective(u: np.ndarray, a: np.ndarray, mu: float) -> np.ndarray:
    """``½‖u − a‖² + μ e₃(u)`` for u ≥ 0 (rows of 4), a = |y|."""
    e3 = u[..., 0] * u[..., 1] * (u[..., 2] + u[..., 3]) + u[..., 2] * u[..., 3] * (u[..., 0] + u[..., 1])
    return 0.5 * ((u - a) ** 2).sum(-1) + mu * e3


def _gradient(u: np.ndarray, a: np.ndarray, mu: float) -> np.ndarray:
    t = u.sum()
    return u - a + mu * (0.5 * (t * t - (u * u).sum()) - u * (t - u))


def _polish(u: np.ndarray, a: np.ndarray, mu: float, support: list, iters: int = 8) -> np.ndarray:
    """Newton steps on the coordinates of ``support`` that are > 0 (Hessian ``I + μ N``), kept only if they lower F
    and stay in the box."""
    for _ in range(iters):
        free = [i for i in support if 0 < u[i] < a[i]]
        if not free:
            break
        t = u.sum()
        hess = np.eye(4) + mu * (t - u[:, None] - u[None, :])
        np.fill_diagonal(hess, 1.0)
        g = _gradient(u, a, mu)[free]
        try:
            step = np.linalg.solve(hess[np.ix_(free, free)], g)
        except np.linalg.LinAlgError:
            break
        v = u.copy()
        v[free] -= step
        if (v[free] < 0).any() or (v[free] > a[free]).any() or _objective(v, a, mu) > _objective(u, a, mu):
            break
        u = v
    return u


def _minimise_on(support: tuple, a: np.ndarray, mu: float, grid: int, starts: int) -> np.ndarray:
    """argmin of F over u ≥ 0 with u = 0 off ``support`` and u ≤ a (the magnitudes of the minimiser)."""
    u = np.zeros(4)
    s = list(support)
    if len(s) <= 2 or mu == 0:
        u[s] = a[s]
        return u
    axes = np.linspace(0.0, 1.0, grid)
    pts = np.zeros((grid ** len(s), 4))
    pts[:, s] = np.array(list(itertools.product(axes, repeat=len(s)))) * a[s]
    best_pts = list(pts[np.argsort(_objective(pts, a, mu))[:starts]])
    full = np.zeros(4)
    full[s] = a[s]
    best = None
    for z0 in best_pts + [full]:
        r = minimize(lambda v: _objective(_embed(v, s), a, mu), z0[s], method="L-BFGS-B",
                     jac=lambda v: _gradient(_embed(v, s), a, mu)[s], bounds=[(0.0, a[i]) for i in s],
                     options={"ftol": 1e-16, "gtol": 1e-14, "maxiter": 5000})
        if best is None or r.fun < best.fun:
            best = r
    return _polish(_embed(best.x, s), a, mu, s)


def _embed(v: np.ndarray, s: list) -> np.ndarray:
    u = np.zeros(4)
    u[s] = v
    return u


def support_minima(y, mu: float, *, grid: int = 7, starts: int = 3) -> pd.DataFrame:
    """For one group ``y`` (4 numbers) and strength ``mu ≥ 0``: the minimum of ``½‖z − y‖² + μR(z)`` over the z
    supported on each of the 16 subsets of its positions (``support``, ``size``, ``nonzeros`` of the minimiser — it can
    be fewer than ``size`` —, ``objective``, ``z``), one row per subset; the lowest row is the proximal point.
    ``grid`` points per coordinate, ``starts`` L-BFGS-B starts."""
    y = np.asarray(y, dtype=np.float64).reshape(4)
    if mu < 0 or not np.isfinite(mu):
        raise ValueError(f"support_minima needs a finite mu ≥ 0 (got {mu})")
    a, sign = np.abs(y), np.sign(y)
    rows = []
    for s in SUPPORTS:
        u = _minimise_on(s, a, float(mu), grid, starts)
        rows.append({"support": s, "size": len(s), "nonzeros": int((u > 0).sum()),
                     "objective": float(_objective(u, a, mu)), "z": u * sign})
    return pd.DataFrame(rows)


def prox24_brute_force(Y, mu, *, grid: int = 7, starts: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """The 2:4 proximal point of every group of 4 in ``Y`` (G, 4) by brute force over every support
    (:func:`support_minima`); ``mu`` a float or one value per group. Returns (Z (G, 4), objective (G,)), float64."""
    Y = np.asarray(Y, dtype=np.float64).reshape(-1, 4)
    mus = np.broadcast_to(np.asarray(mu, dtype=np.float64), (Y.shape[0],))
    Z = np.zeros_like(Y)
    F = np.zeros(Y.shape[0])
    for i, (y, m) in enumerate(zip(Y, mus)):
        table = support_minima(y, float(m), grid=grid, starts=starts)
        best = int(table["objective"].to_numpy().argmin())
        Z[i], F[i] = table["z"].iloc[best], table["objective"].iloc[best]
    return Z, F
