"""``stable_rank``: AlphaPruning's mapping over the ``stable_rank`` column (Σλ/λ_max, a peer metric in AlphaPruning's
ablation; Lu et al., NeurIPS 2024). Higher stable rank ⇒ more sparsity: AlphaPruning's code feeds every
weightwatcher metric through the same map without flipping it, and a better-trained, heavier-tailed matrix has a
lower stable rank, like a lower α. ``direction="lower_more"`` gives the opposite."""
from __future__ import annotations

from pruning.allocation.methods.alphapruning import LAM
from pruning.allocation.methods.spectral import (
    SPECTRAL_OPTIONS,
    fixed_metric,
    metric_values,
    spectral_allocation,
)
from pruning.allocation.spec import AllocationContext, AllocationSpec, MethodResult


def stable_rank(ctx: AllocationContext) -> MethodResult:
    """AlphaPruning's mapping on the ``stable_rank`` column."""
    metric = fixed_metric("stable_rank", "stable_rank", ctx.opt.metric)
    return spectral_allocation(ctx, metric_values(ctx, metric), metric)


SPEC = AllocationSpec("stable_rank", "stable rank", "metrics", stable_rank,
                      "stable rank (AlphaPruning's metric ablation, NeurIPS 2024)",
                      options=SPECTRAL_OPTIONS | {"metric"},
                      settings_read=frozenset({"lam", "mapping", "granularity"}), params=(LAM,))
