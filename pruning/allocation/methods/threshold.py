"""The one-global-threshold allocations (global magnitude, LAMP): matrix i prunes its entries scored below one common
threshold t, capped at its bounds (:func:`pruning.allocation.mappings.threshold_fit`)."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pruning.allocation.mappings import threshold_fit
from pruning.allocation.methods.erk import lookup
from pruning.allocation.spec import AllocationContext, MethodResult


def threshold_allocation(ctx: AllocationContext, method: str, scores: Callable) -> MethodResult:
    """Sparsities from one global threshold over ``scores(W)`` (ascending per matrix)."""
    if ctx.opt.weights is None:
        raise ValueError(f"method {method!r} needs the weights: weights={{longname: W}} for every matrix")
    sorted_scores = []
    for n, npar in zip(ctx.names, ctx.p):
        w = lookup(ctx.opt.weights, n)
        if int(np.prod(tuple(w.shape))) != int(npar):
            raise ValueError(f"{n}: weight has {int(np.prod(tuple(w.shape)))} entries but num_params is "
                             f"{int(npar)}; the metrics and weights are from different models")
        sorted_scores.append(scores(w))
    values, thr, tnote = threshold_fit(sorted_scores, ctx.S, ctx.lo, ctx.hi, ctx.names)
    if tnote:
        ctx.notes.append(tnote + " — mean kept")
    ctx.settings["threshold"] = thr
    return MethodResult(values, None if ctx.clip else values)
