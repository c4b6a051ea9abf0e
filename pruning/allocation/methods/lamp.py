"""``lamp``: Lee et al., "Layer-adaptive Sparsity for the Magnitude-based Pruning", ICLR 2021 — one global threshold
on score(u) = w_u² / Σ_{v≥u} w_v² (each matrix's weights sorted by |w| ascending)."""
from __future__ import annotations

from pruning.allocation.mappings import LampScores
from pruning.allocation.methods.threshold import map_matrices, threshold_allocation
from pruning.allocation.spec import AllocationContext, AllocationSpec, MethodResult


def lamp_scores(w) -> LampScores:
    """The LAMP scores of one matrix: ``w`` itself when it is a :class:`LampScores` already (a caller that allocates
    at several targets S sorts each matrix once: ``weights={name: LampScores(W)}``), else built from ``w``."""
    return w if isinstance(w, LampScores) else LampScores(w)


def lamp_score_table(weights: dict) -> dict:
    """{name: :class:`LampScores`} of ``weights`` ({name: W}), built as an allocation builds them (one matrix per
    core): pass it as ``weights`` to allocate LAMP at several targets S with one sort of each matrix."""
    return dict(zip(weights, map_matrices(LampScores, list(weights.values()))))


def lamp(ctx: AllocationContext) -> MethodResult:
    """One global threshold on the LAMP scores (:class:`LampScores`: ``lamp_scores_sorted``'s values in half its
    memory)."""
    return threshold_allocation(ctx, "lamp", lamp_scores)


SPEC = AllocationSpec("lamp", "LAMP", "weights", lamp, "Lee et al., LAMP, ICLR 2021", options=frozenset({"weights"}))
