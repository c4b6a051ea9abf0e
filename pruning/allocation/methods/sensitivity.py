"""``sensitivity``: the allocation read from a measured cost table (``python -m pruning sensitivity``; issue 20).
**Data-driven**: it used held-out text (C4 validation documents 1000–1999), not only the weights.

AlphaPruning's mapping (Lu et al., NeurIPS 2024, Eq. 4–5) applied to the measured cost Δ_b of each block (or
matrix) instead of α, with the sign of the measurement: lower cost ⇒ more sparsity,
r_b = (max Δ − Δ_b)/(max Δ − min Δ)·2λ + 1 − λ, s_b = r_b · S·Σp / Σ p·r (bounds: the scale is re-solved)."""
from __future__ import annotations

import dataclasses

from pruning.allocation.methods.alphapruning import LAM
from pruning.allocation.methods.owl import per_matrix
from pruning.allocation.methods.spectral import spectral_allocation
from pruning.allocation.spec import AllocationContext, AllocationSpec, MethodResult

LABEL = "sensitivity (data-driven: measured on held-out text)"


def sensitivity(ctx: AllocationContext) -> MethodResult:
    """AlphaPruning's map of the measured cost ``table`` ({block: Δ} or {longname: Δ}), lower cost ⇒ more sparsity."""
    if ctx.opt.table is None:
        raise ValueError("method 'sensitivity' needs the measured cost table: measure it with python -m pruning "
                         "sensitivity MODEL --out sens.parquet and pass --allocation-file sens.parquet")
    cost, _ = per_matrix(ctx, ctx.opt.table, "the sensitivity table", "one row per block")
    out = spectral_allocation(dataclasses.replace(ctx, higher_more=False), cost, "measured delta_nll")
    ctx.settings["label"] = LABEL
    return out


SPEC = AllocationSpec("sensitivity", LABEL, "table", sensitivity,
                      "measured block costs (python -m pruning sensitivity) through AlphaPruning's mapping",
                      options=frozenset({"lam", "mapping", "granularity", "table"}),
                      settings_read=frozenset({"lam", "mapping", "granularity"}), signal_arg="table",
                      params=(LAM,))
# λ is tuned like AlphaPruning's, over the same range: ``tune --allocation sensitivity --sensitivity-table F`` and
# ``compare --allocations ...,sensitivity --sensitivity-table F`` (pruning.tune, pruning.compare)
