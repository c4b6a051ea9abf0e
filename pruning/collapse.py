"""When a pruned model has collapsed: the one rule the app, the HTML report and ``python -m pruning prune`` share.

A run is flagged when its perplexity exceeds :data:`PPL_FACTOR` × the dense model's (on the same evaluation
windows), or when any matrix was pruned above :data:`MATRIX_SPARSITY` (such a matrix keeps almost nothing; its ESD
fit — α, spikes — no longer describes a trained layer).
"""
from __future__ import annotations

import math
from collections.abc import Mapping

#: perplexity above this multiple of the dense perplexity: the model collapsed
PPL_FACTOR = 10.0
#: a matrix above this sparsity (fraction of zero weights) keeps too little to be read as a trained layer
MATRIX_SPARSITY = 0.98


def collapse_note(ppl: float | None, dense_ppl: float | None,
                  sparsities: Mapping[str, float] | None = None) -> str | None:
    """A one-line warning when the run collapsed (see the module docstring), else None.

    ``sparsities``: {matrix name: achieved sparsity in [0, 1]} of the pruned matrices (optional).
    """
    reasons = []
    if ppl is not None and (not math.isfinite(float(ppl)) or (
            dense_ppl is not None and math.isfinite(float(dense_ppl)) and float(ppl) > PPL_FACTOR * float(dense_ppl))):
        ratio = float(ppl) / float(dense_ppl) if dense_ppl and math.isfinite(float(ppl)) else math.inf
        reasons.append(f"perplexity {float(ppl):,.2f} is {ratio:,.0f}× the dense {float(dense_ppl):.2f} "
                       f"(above {PPL_FACTOR:g}×)" if math.isfinite(ratio) else
                       f"perplexity {float(ppl)} is not finite")
    over = {k: float(v) for k, v in (sparsities or {}).items() if float(v) > MATRIX_SPARSITY}
    if over:
        worst = max(over, key=over.get)
        reasons.append(f"{len(over)} matri{'x' if len(over) == 1 else 'ces'} above {MATRIX_SPARSITY:.0%} sparsity "
                       f"(largest: {worst} at {over[worst]:.2%})")
    if not reasons:
        return None
    return "the pruned model collapsed: " + "; ".join(reasons) + " — lower the sparsity or λ."


def record_sparsities(records) -> dict:
    """{matrix: achieved sparsity} from a prune's per-matrix records (a DataFrame or list of dicts with ``name`` /
    ``longname`` and ``achieved``)."""
    import pandas as pd

    t = records if isinstance(records, pd.DataFrame) else pd.DataFrame(list(records or []))
    if t.empty or "achieved" not in t.columns:
        return {}
    name = "name" if "name" in t.columns else "longname" if "longname" in t.columns else None
    keys = t[name].astype(str) if name else t.index.astype(str)
    return dict(zip(keys, t["achieved"].astype(float)))
