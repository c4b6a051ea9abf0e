"""``alphapruning``: Lu et al., "AlphaPruning: Using Heavy-Tailed Self Regularization Theory for Improved Layer-wise
Pruning of Large Language Models", NeurIPS 2024.

r_i = (m_i − min m)/(max m − min m)·2λ + 1 − λ over a heavy-tail metric m (default PL_Alpha_Hill ``alpha``,
block-averaged), s_i = r_i · S·Σp / Σ p·r (higher α ⇒ less well trained ⇒ more sparsity)."""
from __future__ import annotations

from pruning.allocation.methods.spectral import (
    SPECTRAL_OPTIONS,
    metric_values,
    spectral_allocation,
)
from pruning.allocation.spec import (
    AllocationContext,
    AllocationSpec,
    MethodResult,
    Param,
)

LAM = Param("lam", "λ", 0.0, 0.5, 0.3)


def alphapruning(ctx: AllocationContext) -> MethodResult:
    """AlphaPruning's mapping on ``metric`` (default ``alpha``); ``exclude_flagged`` (ours) leaves fits flagged as
    likely spurious out of their block mean; a note when α was not fitted with the reference's peak rule."""
    metric = ctx.opt.metric or "alpha"
    exclude = bool(ctx.opt.exclude_flagged)
    m = metric_values(ctx, metric, exclude_flagged=exclude)
    if metric == "alpha" and "xmin_rule" in ctx.df.columns:
        rules = sorted(set(ctx.df["xmin_rule"].dropna().astype(str)))
        if rules and rules != ["peak"]:
            ctx.notes.append(f"alpha was fitted with xmin rule {'/'.join(rules)}; AlphaPruning uses 'peak'")
    out = spectral_allocation(ctx, m, metric)
    if exclude:
        ctx.settings["exclude_flagged"] = True
    return out


SPEC = AllocationSpec("alphapruning", "AlphaPruning", "metrics", alphapruning,
                      "Lu et al., AlphaPruning, NeurIPS 2024",
                      options=SPECTRAL_OPTIONS | {"metric", "exclude_flagged"},
                      settings_read=frozenset({"lam", "mapping", "granularity", "metric", "exclude_flagged"}),
                      params=(LAM,))
