"""The one-global-threshold allocations (global magnitude, LAMP): matrix i prunes its entries scored below one common
threshold t, capped at its bounds (:func:`pruning.allocation.mappings.threshold_fit`)."""
from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from pruning.allocation.mappings import threshold_fit
from pruning.allocation.methods.erk import lookup
from pruning.allocation.spec import AllocationContext, MethodResult


def map_matrices(fn: Callable, matrices: list) -> list:
    """``[fn(W) for W in matrices]``, one matrix per core at a time (numpy releases the GIL while it sorts and sums;
    each result as computed alone)."""
    with ThreadPoolExecutor(max(1, os.cpu_count() or 1), thread_name_prefix="scores") as pool:
        return list(pool.map(fn, matrices))


def threshold_allocation(ctx: AllocationContext, method: str, scores: Callable, presorted: bool = True) -> MethodResult:
    """Sparsities from one global threshold over ``scores(W)`` (ascending per matrix; in any order with
    ``presorted=False``, see :func:`pruning.allocation.mappings.threshold_fit`). A ``weights`` entry without a shape
    (a method's precomputed scores, e.g. :class:`LampScores`) counts ``len()`` entries."""
    if ctx.opt.weights is None:
        raise ValueError(f"method {method!r} needs the weights: weights={{longname: W}} for every matrix")
    weights = []
    for n, npar in zip(ctx.names, ctx.p):
        w = lookup(ctx.opt.weights, n)
        size = int(np.prod(tuple(w.shape))) if hasattr(w, "shape") else len(w)  # a matrix, or its scores
        if size != int(npar):
            raise ValueError(f"{n}: weight has {size} entries but num_params is "
                             f"{int(npar)}; the metrics and weights are from different models")
        weights.append(w)
    sorted_scores = map_matrices(scores, weights)
    values, thr, tnote = threshold_fit(sorted_scores, ctx.S, ctx.lo, ctx.hi, ctx.names, presorted=presorted)
    if tnote:
        ctx.notes.append(tnote + " — mean kept")
    ctx.settings["threshold"] = thr
    return MethodResult(values, None if ctx.clip else values)
