"""``global``: one |W| threshold across all block matrices (global magnitude pruning; e.g. Han et al., NeurIPS 2015):
matrix i's sparsity is its share of weights with |w| below the threshold t that gives mean S."""
from __future__ import annotations

from pruning.allocation.mappings import as_numpy_abs
from pruning.allocation.methods.threshold import threshold_allocation
from pruning.allocation.spec import AllocationContext, AllocationSpec, MethodResult


def global_magnitude(ctx: AllocationContext) -> MethodResult:
    """One global |W| threshold."""
    return threshold_allocation(ctx, "global", as_numpy_abs, presorted=False)  # the threshold needs no sort


SPEC = AllocationSpec("global", "global magnitude", "weights", global_magnitude, "global magnitude threshold",
                      options=frozenset({"weights"}))
