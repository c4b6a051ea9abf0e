"""``lamp``: Lee et al., "Layer-adaptive Sparsity for the Magnitude-based Pruning", ICLR 2021 — one global threshold
on score(u) = w_u² / Σ_{v≥u} w_v² (each matrix's weights sorted by |w| ascending)."""
from __future__ import annotations

from pruning.allocation.mappings import LampScores
from pruning.allocation.methods.threshold import threshold_allocation
from pruning.allocation.spec import AllocationContext, AllocationSpec, MethodResult


def lamp_scores(w) -> LampScores:
    """The LAMP scores of one matrix: ``w`` itself when it is a :class:`LampScores` already (a caller that allocates
    at several targets S sorts each matrix once: ``weights={name: LampScores(W)}``), else built from ``w``."""
    return w if isinstance(w, LampScores) else LampScores(w)


def lamp(ctx: AllocationContext) -> MethodResult:
    """One global threshold on the LAMP scores (:class:`LampScores`: ``lamp_scores_sorted``'s values in half its
    memory)."""
    return threshold_allocation(ctx, "lamp", lamp_scores)


SPEC = AllocationSpec("lamp", "LAMP", "weights", lamp, "Lee et al., LAMP, ICLR 2021", options=frozenset({"weights"}))
