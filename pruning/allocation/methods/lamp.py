"""``lamp``: Lee et al., "Layer-adaptive Sparsity for the Magnitude-based Pruning", ICLR 2021 — one global threshold
on score(u) = w_u² / Σ_{v≥u} w_v² (each matrix's weights sorted by |w| ascending)."""
from __future__ import annotations

from pruning.allocation.mappings import LampScores
from pruning.allocation.methods.threshold import threshold_allocation
from pruning.allocation.spec import AllocationContext, AllocationSpec, MethodResult


def lamp(ctx: AllocationContext) -> MethodResult:
    """One global threshold on the LAMP scores (:class:`LampScores`: ``lamp_scores_sorted``'s values in half its
    memory)."""
    return threshold_allocation(ctx, "lamp", LampScores)


SPEC = AllocationSpec("lamp", "LAMP", "weights", lamp, "Lee et al., LAMP, ICLR 2021", options=frozenset({"weights"}))
