"""``farms``: AlphaPruning's mapping on FARMS α (Hu et al., "Eigenspectrum Analysis of Neural Networks without
Aspect Ratio Bias" — FARMS, ICML 2025; code HUST-AI-HYZ/FARMS).

α of a rectangular matrix depends on its aspect ratio; FARMS fits α on the pooled ESD of equally shaped square
windows of the weight (``alpha_farms``, :mod:`spectra.farms`), then allocates exactly as AlphaPruning:
r_i = (α_i − min α)/(max α − min α)·2λ + 1 − λ (block means), s_i = r_i · S·Σp / Σ p·r."""
from __future__ import annotations

from pruning.allocation.methods.alphapruning import LAM
from pruning.allocation.methods.spectral import (
    SPECTRAL_OPTIONS,
    fixed_metric,
    metric_values,
    spectral_allocation,
)
from pruning.allocation.spec import AllocationContext, AllocationSpec, MethodResult

COLUMN = "alpha_farms"
HINT = ("--allocation farms needs FARMS α: analyse with --farms (python -m spectra MODEL --farms --out "
        "metrics.csv, or AnalysisSettings(farms=True))")


def farms(ctx: AllocationContext) -> MethodResult:
    """AlphaPruning's mapping on the ``alpha_farms`` column; a one-line ValueError when the metrics lack it."""
    metric = fixed_metric("farms", COLUMN, ctx.opt.metric)
    return spectral_allocation(ctx, metric_values(ctx, metric, missing_hint=HINT), metric)


SPEC = AllocationSpec("farms", "FARMS", "metrics", farms, "Hu et al., FARMS, ICML 2025",
                      options=SPECTRAL_OPTIONS | {"metric"},
                      settings_read=frozenset({"lam", "mapping", "granularity"}), params=(LAM,),
                      analysis={"farms": True})
