"""``erk``: Evci et al., "Rigging the Lottery: Making All Tickets Winners", ICML 2020 — Erdős–Rényi-Kernel:
density_i = clip(c·(n_in + n_out)/(n_in·n_out), 0, 1) with c solving the mean density 1 − S (a matrix that would
exceed density 1 stays dense and the others are rescaled)."""
from __future__ import annotations

import numpy as np

from pruning.allocation.mappings import TOL, erk_factors, fit_mean
from pruning.allocation.spec import AllocationContext, AllocationSpec, MethodResult


def lookup(weights, name: str):
    """``weights[name]`` (or ``name + '.weight'``); one-line ValueError when absent."""
    if name in weights:
        return weights[name]
    if name + ".weight" in weights:
        return weights[name + ".weight"]
    raise ValueError(f"weights has no tensor for {name!r}; key it by longname (module path)")


def erk(ctx: AllocationContext) -> MethodResult:
    """ERK densities from the ``rows``/``cols`` columns (or the weights' shapes)."""
    df, p, S, opt = ctx.df, ctx.p, ctx.S, ctx.opt
    if {"rows", "cols"} <= set(df.columns):
        rows, cols = df["rows"].to_numpy(), df["cols"].to_numpy()
    elif opt.weights is not None:
        shapes = [tuple(lookup(opt.weights, n).shape) for n in ctx.names]
        rows, cols = np.array([s[0] for s in shapes]), np.array([s[1] for s in shapes])
    else:
        raise ValueError("method 'erk' needs 'rows' and 'cols' columns (or weights) to know each shape")
    k = erk_factors(rows, cols)
    raw_d, _ = fit_mean(k, p, 1.0 - S, 0.0, 1.0, "scale", what="density")
    raw = 1.0 - raw_d
    dense = int((k * ((1.0 - S) * p.sum() / (k @ p)) > 1.0 + TOL).sum())
    if dense:
        ctx.notes.append(f"{dense} matrices would exceed density 1: kept dense and the rest rescaled (ERK's rule)")
    if ctx.clip:
        dens, _ = fit_mean(k, p, 1.0 - S, 1.0 - opt.max_sparsity, 1.0 - opt.min_sparsity, "scale", what="density")
        values = 1.0 - dens
    else:
        values = raw
    return MethodResult(values, raw, k)


SPEC = AllocationSpec("erk", "ERK", "shapes", erk, "Evci et al., RigL (ERK), ICML 2020")
