"""``uniform``: every matrix gets the target, s_i = S (the baseline of every allocation paper)."""
from __future__ import annotations

import numpy as np

from pruning.allocation.mappings import AllocationError
from pruning.allocation.spec import AllocationContext, AllocationSpec, MethodResult


def uniform(ctx: AllocationContext) -> MethodResult:
    """s_i = S for every matrix; AllocationError when S is outside the bounds (with ``clip``)."""
    S, lo, hi = ctx.S, ctx.opt.min_sparsity, ctx.opt.max_sparsity
    if ctx.clip and not (lo <= S <= hi):
        raise AllocationError(f"target sparsity {S:g} is outside [min_sparsity={lo:g}, max_sparsity={hi:g}]; "
                              f"raise max_sparsity or lower the target")
    return MethodResult(np.full(len(ctx.df), S))


SPEC = AllocationSpec("uniform", "uniform", "nothing", uniform, "every matrix at S")
