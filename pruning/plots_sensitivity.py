"""Plotly figures of a sensitivity table (:mod:`pruning.sensitivity`): the measured cost per block with the
signals beside it, and one signal against the cost with its ρ and τ (the app's "Which blocks matter" page and
notebook 06). Nothing here computes a cost or a correlation: they come from :mod:`pruning.sensitivity` and
:func:`pruning.signals.verdict`."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from spectra.plots import new_figure

__all__ = ["SIGNAL_LABELS", "cost_bars_figure", "signal_scatter_figure", "normalised"]

_COLORS = ("#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#e377c2", "#7f7f7f")
COST_LABEL = "Δ mean token NLL on held-out C4 (nats; higher = costlier to prune)"
SIGNAL_LABELS = {"alpha": "α (PL_Alpha_Hill, block mean)", "alpha_farms": "FARMS α (block mean)",
                 "stable_rank": "stable rank (block mean)", "outlier_ratio": "OWL outlier ratio",
                 "dlp": "DLP block score", "depth": "depth (block index)"}


def normalised(values) -> np.ndarray:
    """Min–max scaling to [0, 1] (a constant column gives 0.5)."""
    v = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=float)
    span = np.nanmax(v) - np.nanmin(v)
    return np.full_like(v, 0.5) if not span > 0 else (v - np.nanmin(v)) / span


def _unit_labels(df: pd.DataFrame) -> list[str]:
    return [str(b) if not lon else str(lon).replace("model.layers.", "") for b, lon in
            zip(df["block"], df.get("longname", pd.Series([""] * len(df))).fillna(""))]


def cost_bars_figure(df: pd.DataFrame, signals: Sequence[str], title: Optional[str] = None,
                     height: int = 420) -> go.Figure:
    """``delta_nll`` per block (or matrix) as bars (left axis) and each of ``signals`` min–max normalised to
    [0, 1] as a line beside them (right axis)."""
    x = _unit_labels(df)
    fig = new_figure()
    fig.add_trace(go.Bar(x=x, y=df["delta_nll"], name="measured Δ NLL", marker_color="#1f77b4", opacity=0.75))
    for i, sig in enumerate(signals):
        fig.add_trace(go.Scatter(x=x, y=normalised(df[sig]), name=SIGNAL_LABELS.get(sig, sig) + " (normalised)",
                                 mode="lines+markers", yaxis="y2", line=dict(color=_COLORS[i % len(_COLORS)])))
    fig.update_layout(title=title, height=height, margin=dict(l=60, r=60, t=50 if title else 20, b=40),
                      xaxis=dict(title="block" if not df.get("longname", pd.Series([""])).astype(str).str.len().any()
                                 else "matrix", type="category"),
                      yaxis=dict(title=COST_LABEL),
                      yaxis2=dict(title="signal, min–max normalised (0–1)", overlaying="y", side="right",
                                  range=[-0.05, 1.05], showgrid=False),
                      legend=dict(orientation="h", y=-0.2))
    return fig


def signal_scatter_figure(df: pd.DataFrame, signal: str, verdict_row: Optional[dict] = None,
                          height: int = 380) -> go.Figure:
    """``signal`` against ``delta_nll``, one point per block labelled by its index; the title gives Spearman ρ,
    Kendall τ and the permutation p-value of ``verdict_row`` (a row of :func:`pruning.signals.verdict`) and the
    sign the allocation methods assume."""
    fig = new_figure()
    fig.add_trace(go.Scatter(x=df[signal], y=df["delta_nll"], mode="markers+text", text=_unit_labels(df),
                             textposition="top center", marker=dict(size=9, color=df["block"], colorscale="Viridis",
                                                                    colorbar=dict(title="block")),
                             name="blocks"))
    title = SIGNAL_LABELS.get(signal, signal)
    if verdict_row:
        sign = {-1: "ρ < 0", 1: "ρ > 0"}.get(int(verdict_row.get("assumed_sign", 0)), "no bet")
        title += (f": ρ = {verdict_row['rho']:+.2f}, τ = {verdict_row['tau']:+.2f} (permutation p = "
                  f"{verdict_row['p_perm']:.3f}); allocation assumes {sign}")
    fig.update_layout(title=title, height=height, margin=dict(l=60, r=20, t=50, b=40), showlegend=False)
    fig.update_xaxes(title_text=SIGNAL_LABELS.get(signal, signal))
    fig.update_yaxes(title_text=COST_LABEL)
    return fig
