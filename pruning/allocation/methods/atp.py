"""``atp``: Huang et al., "Determining Layer-wise Sparsity for Large Language Models Through a Theoretical
Perspective" (ATP), ICML 2025 (code wzhuang-xmu/ATP).

Block sparsities in an increasing arithmetic progression over depth: s_i = S − β(L − 1)/2 + β·i for blocks
i = 0 … L − 1 (mean S), one parameter β with 0 ≤ β ≤ min(2S, 2(1 − S))/(L − 1) so that every s_i stays in [0, 1].
Reads only the depth. The reference searches β on WikiText-2 with step 0.002; here ``tune`` searches it on
held-out text. With unequal block sizes or a bound that binds, the common shift is re-solved so that the
parameter-weighted mean stays S."""
from __future__ import annotations

import numpy as np

from pruning.allocation.mappings import fit_mean
from pruning.allocation.spec import (
    AllocationContext,
    AllocationSpec,
    MethodResult,
    Param,
)


def atp_bound(sparsity: float, n_blocks: int) -> float:
    """The largest β that keeps every s_i in [0, 1]: min(2S, 2(1 − S))/(L − 1) (0 for one block)."""
    if n_blocks <= 1:
        return 0.0
    return min(2.0 * sparsity, 2.0 * (1.0 - sparsity)) / (n_blocks - 1)


def atp_sparsities(sparsity: float, n_blocks: int, beta: float) -> np.ndarray:
    """s_i = S − β(L − 1)/2 + β·i, i = 0 … L − 1 (ValueError when β is outside [0, bound])."""
    bound = atp_bound(sparsity, n_blocks)
    if not (0.0 <= beta <= bound * (1 + 1e-9)):
        raise ValueError(f"atp_beta (--atp-beta) {beta:g} is outside [0, {bound:.6g}] for sparsity {sparsity:g} "
                         f"and {n_blocks} blocks (every block's sparsity must stay in [0, 1]); use a β in that range")
    i = np.arange(n_blocks, dtype=np.float64)
    return sparsity - beta * (n_blocks - 1) / 2.0 + beta * i


def atp(ctx: AllocationContext) -> MethodResult:
    """ATP's progression over the blocks present (ordered by index), mean kept within the bounds."""
    beta = float(ctx.opt.atp_beta)
    blocks = ctx.df["block"].to_numpy()
    order = np.unique(blocks)
    prog = atp_sparsities(ctx.S, len(order), beta)
    raw = prog[np.searchsorted(order, blocks)]
    p, S = ctx.p, ctx.S
    raw = raw + (S * p.sum() - raw @ p) / p.sum()  # exact (weighted) mean S; a no-op for equal block sizes
    values = fit_mean(raw - S, p, S, ctx.opt.min_sparsity, ctx.opt.max_sparsity, "shift")[0] if ctx.clip else raw
    ctx.settings.update(atp_beta=beta, atp_bound=atp_bound(S, len(order)))
    return MethodResult(values, raw, np.searchsorted(order, blocks).astype(np.float64))


SPEC = AllocationSpec("atp", "ATP", "depth", atp, "Huang et al., ATP, ICML 2025",
                      options=frozenset({"atp_beta"}), settings_read=frozenset(),
                      params=(Param("atp_beta", "ATP β", 0.0, 1.0, 0.0, hi_fn=atp_bound),))
