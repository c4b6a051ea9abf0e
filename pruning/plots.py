"""Plotly figures for sparsity allocations and pruning results (used by the app and the notebooks).

Plain functions: DataFrames in (Contract 2 allocation tables, the sweep results table), a
:class:`plotly.graph_objects.Figure` out, with labelled axes and units. Nothing here computes an allocation or a
perplexity; the numbers come from :mod:`pruning.allocation`, :mod:`pruning.evaluation.perplexity` and
:mod:`pruning.sweep`.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from spectra.plots import new_figure

_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f",
           "#bcbd22")
_DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
_SYMBOLS = ("circle", "square", "diamond", "triangle-up", "cross", "x", "star")
SPARSITY_LABEL = "sparsity (% of weights set to zero)"
PPL_LABEL = "perplexity (exp of mean token NLL; lower is better, log scale)"
#: the smallest span (percentage points) of a sparsity axis, so that rounding noise never fills the plot
MIN_SPARSITY_SPAN = 2.0


def sparsity_axis_range(values_percent: Any, min_span: float = MIN_SPARSITY_SPAN) -> Optional[list[float]]:
    """A y range (percent) around ``values_percent`` at least ``min_span`` points wide (None: let plotly choose)."""
    v = np.asarray(values_percent, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0 or float(v.max() - v.min()) >= min_span:
        return None
    mid = 0.5 * float(v.max() + v.min())
    return [mid - min_span / 2, mid + min_span / 2]


def _check(df: Any, cols: Sequence[str], what: str) -> None:
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"{what} needs a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"{what}: the table has no column(s) {', '.join(missing)} "
                         f"(has: {', '.join(map(str, df.columns))})")


def block_sparsity(alloc: pd.DataFrame) -> pd.Series:
    """Parameter-weighted mean sparsity per block: Σ_i p_i s_i / Σ_i p_i over the block's matrices (index = block)."""
    _check(alloc, ["block", "num_params", "sparsity"], "block_sparsity")
    # plain arrays: the table's attrs (its settings) are not deep-copied by every pandas operation (a λ step)
    block = pd.Index(alloc["block"].to_numpy(), name="block")
    w = alloc["num_params"].to_numpy(dtype=np.float64)
    num = pd.Series(alloc["sparsity"].to_numpy(dtype=np.float64) * w).groupby(block).sum()
    den = pd.Series(w).groupby(block).sum()
    return (num / den).sort_index()


def weighted_mean_sparsity(alloc: pd.DataFrame) -> float:
    """Σ p_i s_i / Σ p_i: the global sparsity an allocation achieves."""
    _check(alloc, ["num_params", "sparsity"], "weighted_mean_sparsity")
    w = alloc["num_params"].to_numpy(dtype=np.float64)
    return float(alloc["sparsity"].to_numpy(dtype=np.float64) @ w / w.sum())


def allocation_figure(allocations: Mapping[str, pd.DataFrame], *, by: str = "block",
                      target: Optional[float] = None, title: Optional[str] = None, height: int = 440,
                      highlight: Optional[str] = None) -> go.Figure:
    """Allocation curves: sparsity per block (parameter-weighted block mean) or per matrix, one line per method.

    ``allocations``: {label: allocate(...) table}. ``by``: ``block`` or ``matrix`` (x = matrix position in the
    table's order, hover gives the name). ``target``: the global sparsity S (dotted horizontal line).
    ``highlight``: a label drawn thicker (e.g. the curve the λ slider moves).
    """
    if by not in ("block", "matrix"):
        raise ValueError(f"by must be 'block' or 'matrix', got {by!r}")
    if not allocations:
        raise ValueError("allocation_figure needs at least one allocation table")
    traces, ys = [], []
    for k, (label, alloc) in enumerate(allocations.items()):
        _check(alloc, ["longname", "block", "num_params", "sparsity"], "allocation_figure")
        color = _COLORS[k % len(_COLORS)]
        width = 3.2 if label == highlight else 1.6
        dash = _DASHES[k % len(_DASHES)]  # curves that coincide (uniform and ERK per block) stay distinguishable
        if by == "block":
            s = block_sparsity(alloc)
            ys.append(100.0 * s.to_numpy())
            traces.append(go.Scatter(x=s.index.to_numpy(), y=100.0 * s.to_numpy(), mode="lines+markers", name=label,
                                     line=dict(color=color, width=width, dash=dash),
                                     marker=dict(size=6, symbol=_SYMBOLS[k % len(_SYMBOLS)]),
                                     hovertemplate=f"{label}<br>block %{{x}}<br>sparsity %{{y:.2f}}%<extra></extra>"))
        else:
            ys.append(100.0 * alloc["sparsity"].to_numpy(dtype=np.float64))
            traces.append(go.Scatter(x=np.arange(len(alloc)), y=100.0 * alloc["sparsity"].to_numpy(dtype=np.float64),
                                     mode="lines+markers", name=label, line=dict(color=color, width=width, dash=dash),
                                     marker=dict(size=4), customdata=alloc["longname"].to_numpy().reshape(-1, 1),
                                     hovertemplate=f"{label}<br>%{{customdata[0]}}<br>sparsity "
                                                   f"%{{y:.2f}}%<extra></extra>"))
    xlabel = ("transformer block (0 = closest to the input)" if by == "block"
              else "matrix (enumeration order: block by block, q k v o gate up down)")
    yrange = sparsity_axis_range(np.concatenate(ys + ([[100.0 * float(target)]] if target is not None else [])))
    # the whole layout in one constructor call: plotly's update_layout / add_hline parse property paths, several
    # times slower (this figure is redrawn on every λ step); the same figure as fig.add_hline(y, line=...,
    # annotation_text=..., annotation_position="bottom right").
    # Fixed margins (no automargin, no autoexpand), the legend in the bottom margin: plotly.js otherwise measures
    # what pushes the margins and draws the figure a second time whenever they move — half of a λ step's drawing
    # in the browser (bench/RESULTS_app_views.md).
    rows = legend_rows(list(allocations))
    layout: dict[str, Any] = dict(xaxis=dict(title=dict(text=xlabel), automargin=False),
                                  yaxis=dict(title=dict(text=SPARSITY_LABEL), automargin=False),
                                  legend=dict(orientation="h", yanchor="bottom", y=0, yref="container", x=0),
                                  margin=dict(l=60, r=20, t=50 if title else 20, b=58 + LEGEND_ROW_PX * rows,
                                              autoexpand=False),
                                  title=dict(text=title), height=height + LEGEND_ROW_PX * (rows - 1),
                                  hovermode="closest")
    if yrange is not None:
        layout["yaxis"]["range"] = yrange
    if target is not None:
        y = 100.0 * float(target)
        layout["shapes"] = [dict(type="line", line=dict(color="#333333", dash="dot"), x0=0, x1=1, xref="x domain",
                                 y0=y, y1=y, yref="y")]
        layout["annotations"] = [dict(showarrow=False, text=f"target {100 * float(target):.0f}%", x=1,
                                      xanchor="right", xref="x domain", y=y, yanchor="top", yref="y")]
    return new_figure(traces, layout)


#: the height of one legend row (px) and the width the legend's rows are laid out for (px; the Allocation lab's
#: chart is wider on a laptop screen, where the legend then takes no more rows than reserved; on a chart narrower
#: than this it can take more and overlap the x-axis title)
LEGEND_ROW_PX = 22
LEGEND_WIDTH_PX = 720


def legend_rows(labels: Sequence[str], width: float = LEGEND_WIDTH_PX) -> int:
    """The rows a horizontal plotly legend of ``labels`` takes in ``width`` px (≈ 40 px of symbol and gap plus
    ≈ 7 px per character an entry, plotly's default 12 px font)."""
    rows, used = 1, 0.0
    for label in labels:
        w = 40.0 + 7.0 * len(str(label))
        if used and used + w > width:
            rows, used = rows + 1, 0.0
        used += w
    return rows


def allocation_summary(allocations: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per allocation: min, max, parameter-weighted mean sparsity and the spread (max − min), in [0, 1]."""
    rows = []
    for label, alloc in allocations.items():
        _check(alloc, ["num_params", "sparsity"], "allocation_summary")
        s = alloc["sparsity"].to_numpy(dtype=np.float64)
        rows.append({"allocation": label, "min": float(s.min()), "max": float(s.max()),
                     "weighted_mean": weighted_mean_sparsity(alloc), "spread": float(s.max() - s.min()),
                     "note": str(alloc.attrs.get("allocation", {}).get("note", ""))})
    return pd.DataFrame(rows)


def lambda_range_figure(table: pd.DataFrame, *, lam_col: str = "lam", title: Optional[str] = None,
                        height: int = 340) -> go.Figure:
    """How λ widens AlphaPruning's allocation: min / max per-matrix sparsity and the weighted mean against λ.

    ``table``: columns ``lam_col``, ``min``, ``max``, ``weighted_mean`` (sparsities in [0, 1]).
    """
    _check(table, [lam_col, "min", "max", "weighted_mean"], "lambda_range_figure")
    t = table.sort_values(lam_col)
    fig = new_figure()
    fig.add_trace(go.Scatter(x=t[lam_col], y=100 * t["max"], mode="lines", name="max sparsity",
                             line=dict(color=_COLORS[1])))
    fig.add_trace(go.Scatter(x=t[lam_col], y=100 * t["min"], mode="lines", name="min sparsity",
                             line=dict(color=_COLORS[0]), fill="tonexty", fillcolor="rgba(31,119,180,0.10)"))
    fig.add_trace(go.Scatter(x=t[lam_col], y=100 * t["weighted_mean"], mode="lines", name="weighted mean",
                             line=dict(color="#333333", dash="dot")))
    fig.update_xaxes(title_text="λ (ratios spread over [1 − λ, 1 + λ], then rescaled to the mean S: "
                                "a matrix can get more than (1 + λ)·S)")
    fig.update_yaxes(title_text=SPARSITY_LABEL)
    fig.update_layout(title=title, height=height,
                      margin=dict(l=60, r=20, t=70 if title else 20, b=50))
    return fig


def tune_figure(rows: Sequence[dict], uniform_ppl: Optional[float] = None, best_lam: Optional[float] = None, *,
                title: Optional[str] = None, height: int = 340) -> go.Figure:
    """The λ search of :func:`pruning.tune.tune` as it fills in: held-out perplexity against λ (one point per
    scored candidate, in λ order), uniform allocation as a horizontal reference line, the chosen λ marked."""
    t = pd.DataFrame(list(rows), columns=["lam", "ppl"]).dropna()
    t = t[pd.to_numeric(t["lam"], errors="coerce").notna()].astype(float).sort_values("lam")
    fig = new_figure()
    fig.add_trace(go.Scatter(x=t["lam"], y=t["ppl"], mode="lines+markers", name="held-out perplexity",
                             line=dict(color=_COLORS[0])))
    if best_lam is not None and len(t):
        b = t.loc[(t["lam"] - float(best_lam)).abs().idxmin()]
        fig.add_trace(go.Scatter(x=[b["lam"]], y=[b["ppl"]], mode="markers", name=f"chosen λ = {b['lam']:g}",
                                 marker=dict(color=_COLORS[1], size=14, symbol="star")))
    if uniform_ppl is not None:
        _hline(fig, float(uniform_ppl), f"uniform {uniform_ppl:.1f}", "#777777", False, "top")
    fig.update_xaxes(title_text="λ (AlphaPruning range, dimensionless)")
    fig.update_yaxes(title_text="perplexity on held-out C4 (one-shot, dense statistics)")
    fig.update_layout(title=title, height=height,
                      margin=dict(l=60, r=20, t=50 if title else 20, b=40))
    return fig


def _hline(fig: go.Figure, y: float, text: str, color: str, log_y: bool, position: str = "bottom") -> None:
    """A horizontal reference line with a label at the right end (on a log axis plotly places annotations in
    log10 units while shapes stay in data units, so the label's y is converted)."""
    fig.add_hline(y=float(y), line=dict(color=color, dash="dot"))
    fig.add_annotation(xref="paper", x=1.0, y=float(np.log10(y)) if log_y else float(y), yref="y", text=text,
                       showarrow=False, xanchor="right", yanchor="bottom" if position == "bottom" else "top",
                       font=dict(size=11, color=color))


def _group_label(row: pd.Series, group: Sequence[str]) -> str:
    return " + ".join(str(row[g]) for g in group)


def _stable_index(value: Any, known: Sequence[str], n: int) -> int:
    """A position in a palette of ``n`` for ``value`` that depends only on the value (its place in ``known``, else a
    crc32 of its text), so that a series keeps its colour / dash / marker whatever other series are drawn."""
    import zlib

    text = str(value)
    head = text.partition(" ")[0]
    for k, name in enumerate(known):
        if text == name or head == name:
            return k % n
    return zlib.crc32(text.encode()) % n


def series_style(key: Mapping[str, Any], group: Sequence[str]) -> dict:
    """Colour by allocation (``allocation`` / ``curve``; a fixed colour per method), dash by pruner, marker by the
    rest of the key (evaluation protocol, origin): the same series is drawn the same way in every figure and after
    every new run."""
    alloc_col = next((g for g in ("curve", "allocation") if g in group), None)
    others = [g for g in group if g not in ("curve", "allocation", "pruner")]
    from pruning.labels import ALLOCATION_LABELS
    from pruning.pruners import PRUNERS

    allocs = list(ALLOCATION_LABELS.values()) + list(ALLOCATION_LABELS)
    color = _COLORS[_stable_index(key[alloc_col], allocs, len(_COLORS))] if alloc_col else _COLORS[0]
    if alloc_col and " λ=" in str(key[alloc_col]):  # one curve per λ: the λ picks the shade of the method's colour
        color = _COLORS[_stable_index(str(key[alloc_col]), (), len(_COLORS))]
    dash = _DASHES[_stable_index(key["pruner"], [spec.display for spec in PRUNERS.values()],
                                 len(_DASHES))] if "pruner" in group \
        else "solid"
    symbol = _SYMBOLS[_stable_index(" ".join(str(key[g]) for g in others), (), len(_SYMBOLS))] if others else "circle"
    return {"color": color, "dash": dash, "symbol": symbol}


def tradeoff_figure(results: pd.DataFrame, *, x: str = "sparsity", y: str = "ppl",
                    group: Sequence[str] = ("allocation", "pruner"), dense: Optional[float] = None,
                    log_y: bool = True, title: Optional[str] = None, height: int = 460,
                    label_points: Optional[bool] = None) -> go.Figure:
    """Sparsity / perplexity trade-off: ``y`` against ``x``, one curve per combination of the ``group`` columns.

    Rows with the same group and x (e.g. several λ) are drawn as separate points (no averaging). ``dense``: the
    dense model's perplexity (dotted horizontal line). Each series keeps its style (:func:`series_style`).
    ``label_points`` (default: when at most 12 points) writes each point's series and value beside it, so that two
    runs at one sparsity are told apart without the legend.
    """
    group = [g for g in group if g in results.columns] if isinstance(results, pd.DataFrame) else list(group)
    _check(results, [x, y] + list(group), "tradeoff_figure")
    fig = new_figure()
    if results.empty:
        raise ValueError("the results table is empty; run a sweep or a prune first")
    if label_points is None:
        label_points = len(results) <= 12
    keys = results[list(group)].astype(str).drop_duplicates().sort_values(list(group)) if group else pd.DataFrame([{}])
    for k, (_, key) in enumerate(keys.iterrows()):
        mask = np.ones(len(results), dtype=bool)
        for g in group:
            mask &= results[g].astype(str).to_numpy() == key[g]
        d = results[mask].sort_values(x)
        label = _group_label(key, group) if group else y
        style = series_style(key, group) if group else {"color": _COLORS[0], "dash": "solid", "symbol": "circle"}
        scale = 100.0 if x == "sparsity" else 1.0
        yv = d[y].to_numpy(dtype=np.float64)
        fig.add_trace(go.Scatter(
            x=scale * d[x].to_numpy(dtype=np.float64), y=yv, name=label,
            mode="lines+markers+text" if label_points else "lines+markers",
            text=[f"{label}: {v:,.2f}" for v in yv] if label_points else None,
            textposition="top right" if k % 2 == 0 else "bottom right", textfont=dict(size=11, color=style["color"]),
            marker=dict(size=9, symbol=style["symbol"], color=style["color"]),
            line=dict(color=style["color"], dash=style["dash"]),
            hovertemplate=f"{label}<br>{x}=%{{x:.4g}}<br>{y}=%{{y:.4g}}<extra></extra>"))
    if dense is not None and np.isfinite(dense):
        _hline(fig, float(dense), f"dense {float(dense):.2f}", "#333333", log_y)
    fig.update_xaxes(title_text=SPARSITY_LABEL if x == "sparsity" else x)
    fig.update_yaxes(title_text=PPL_LABEL if (y == "ppl" and log_y) else y, type="log" if log_y else "linear")
    if log_y:
        ticks = log_ticks(results[y])
        if ticks:  # full numbers at 1-2-5 steps: plotly's own log ticks read "…9 10 2 3"
            fig.update_yaxes(tickvals=ticks, ticktext=[f"{t:,.10g}" for t in ticks])
    fig.update_layout(title=title, height=height, showlegend=True,
                      legend=dict(orientation="h", yanchor="top", y=-0.22, x=0),
                      margin=dict(l=70, r=30, t=70 if title else 20, b=60))
    return fig


def log_ticks(values: Any, extra: Sequence[float] = ()) -> list[float]:
    """Tick values m × 10^k (m = 1…9, else 1, 2, 5, else 1, 3) covering the positive finite ``values`` (and
    ``extra``), at most about 12 of them
    (1 and 10^k only when the values span many decades); empty when there is nothing to place."""
    v = np.asarray(pd.to_numeric(pd.Series([*np.ravel(np.asarray(values, dtype=object)), *extra]), errors="coerce"),
                   dtype=np.float64)
    v = v[np.isfinite(v) & (v > 0)]
    if not v.size:
        return []
    lo, hi = float(np.floor(np.log10(v.min()))), float(np.ceil(np.log10(v.max())))
    for mantissas in ((1, 2, 3, 4, 5, 6, 7, 8, 9), (1, 2, 5), (1, 3), (1,)):
        ticks = [m * 10.0 ** e for e in range(int(lo), int(hi) + 1) for m in mantissas]
        ticks = [t for t in ticks if v.min() / 1.5 <= t <= v.max() * 1.5]
        if len(ticks) <= 12:
            return ticks
    return [10.0 ** e for e in range(int(lo), int(hi) + 1, max(1, int((hi - lo) // 10)))]


def lambda_effect_figure(results: pd.DataFrame, *, lam: str = "lam", y: str = "ppl",
                         group: Sequence[str] = ("pruner",), baselines: Optional[Mapping[str, float]] = None,
                         log_y: bool = True, title: Optional[str] = None, height: int = 400) -> go.Figure:
    """Perplexity against λ at a fixed sparsity, one curve per ``group``; ``baselines`` {label: ppl} are drawn as
    horizontal lines (e.g. the uniform allocation with the same pruner)."""
    group = [g for g in group if g in results.columns] if isinstance(results, pd.DataFrame) else list(group)
    _check(results, [lam, y] + list(group), "lambda_effect_figure")
    d = results.dropna(subset=[lam])
    if d.empty:
        raise ValueError(f"no row with a value of {lam!r}; sweep AlphaPruning over several λ first")
    fig = tradeoff_figure(d, x=lam, y=y, group=group, log_y=log_y, height=height)
    for k, (label, val) in enumerate((baselines or {}).items()):
        _hline(fig, float(val), f"{label} {float(val):.2f}", _COLORS[(k + 3) % len(_COLORS)], log_y, "top")
    lams = d[lam].to_numpy(dtype=np.float64)
    lo, hi = float(lams.min()), float(lams.max())
    pad = max(0.1 * (hi - lo), 0.05)  # one λ: a readable window around it, never below λ = 0
    fig.update_xaxes(title_text="λ (AlphaPruning range, dimensionless)",
                     range=[lo - pad if lo == 0 else max(0.0, lo - pad), hi + pad])
    if lams.size and lo == hi:
        fig.update_traces(marker=dict(size=10))
    fig.update_layout(title=title, margin=dict(t=60 if title else 20))
    return fig


def achieved_sparsity_figure(records: pd.DataFrame, *, target_col: str = "target", achieved_col: str = "achieved",
                             title: Optional[str] = None, height: int = 380) -> go.Figure:
    """Target and achieved sparsity of every pruned matrix (x = matrix in pruning order, hover gives the name)."""
    _check(records, ["longname", target_col, achieved_col], "achieved_sparsity_figure")
    x = np.arange(len(records))
    names = records["longname"].to_numpy().reshape(-1, 1)
    fig = new_figure()
    fig.add_trace(go.Scatter(x=x, y=100 * records[target_col].to_numpy(dtype=np.float64), mode="lines",
                             name="target (allocation)", line=dict(color="#333333", dash="dot"), customdata=names,
                             hovertemplate="%{customdata[0]}<br>target %{y:.2f}%<extra></extra>"))
    fig.add_trace(go.Scatter(x=x, y=100 * records[achieved_col].to_numpy(dtype=np.float64), mode="markers",
                             name="achieved (exact zeros)", marker=dict(color=_COLORS[1], size=5), customdata=names,
                             hovertemplate="%{customdata[0]}<br>achieved %{y:.2f}%<extra></extra>"))
    fig.update_xaxes(title_text="matrix (pruning order: block by block)")
    fig.update_yaxes(title_text=SPARSITY_LABEL, range=sparsity_axis_range(
        100 * np.concatenate([records[target_col].to_numpy(dtype=np.float64),
                              records[achieved_col].to_numpy(dtype=np.float64)])))
    fig.update_layout(title=title, height=height,
                      legend=dict(orientation="h", yanchor="top", y=-0.2, x=0),
                      margin=dict(l=60, r=20, t=50 if title else 20, b=40))
    return fig


def perplexity_bar_figure(values: Mapping[str, float], *, title: Optional[str] = None, height: int = 320) -> go.Figure:
    """Bars of perplexity per run label (e.g. dense vs pruned), log y."""
    if not values:
        raise ValueError("perplexity_bar_figure needs at least one value")
    labels = list(values)
    fig = new_figure(go.Bar(x=labels, y=[float(values[k]) for k in labels],
                           marker_color=[_COLORS[k % len(_COLORS)] for k in range(len(labels))],
                           text=[f"{float(values[k]):.2f}" for k in labels], textposition="outside"))
    fig.update_yaxes(title_text=PPL_LABEL, type="log")
    fig.update_layout(title=title, height=height,
                      margin=dict(l=60, r=20, t=50 if title else 20, b=40))
    return fig


def fista_path_figure(path: pd.DataFrame, *, target: Optional[float] = None, title: Optional[str] = None,
                      height: int = 400) -> go.Figure:
    """FISTAPruner's LASSO path of one layer: sparsity of the solution and relative output error against λ/λ_max.

    ``path``: :func:`pruning.pruners.fista.fista_lambda_path` output (``lambda_rel``, ``sparsity``, ``rel_error``).
    ``target``: a target sparsity (dotted line): the λ the pruner's search would land near.
    """
    _check(path, ["lambda_rel", "sparsity", "rel_error"], "fista_path_figure")
    t = path.sort_values("lambda_rel")
    fig = new_figure()
    fig.add_trace(go.Scatter(x=t["lambda_rel"], y=100 * t["sparsity"], mode="lines+markers",
                             name="sparsity of the LASSO solution", line=dict(color=_COLORS[0]),
                             hovertemplate="λ/λmax=%{x:.3g}<br>sparsity %{y:.2f}%<extra></extra>"))
    fig.add_trace(go.Scatter(x=t["lambda_rel"], y=t["rel_error"], mode="lines+markers", yaxis="y2",
                             name="relative output error ‖W*X − WX‖F/‖WX‖F", line=dict(color=_COLORS[1]),
                             hovertemplate="λ/λmax=%{x:.3g}<br>rel. error %{y:.4f}<extra></extra>"))
    if target is not None:
        fig.add_hline(y=100 * float(target), line=dict(color="#333333", dash="dot"),
                      annotation_text=f"target {100 * float(target):.0f}%", annotation_position="bottom right")
    fig.update_xaxes(type="log", title_text="λ / λmax (L1 weight relative to the smallest all-zero λ, log scale)",
                     exponentformat="power")
    fig.update_layout(yaxis=dict(title=SPARSITY_LABEL, range=[0, 100]),
                      yaxis2=dict(title="relative output error (dimensionless)", overlaying="y", side="right",
                                  showgrid=False, rangemode="tozero"),
                      title=title, height=height,
                      legend=dict(orientation="h", yanchor="top", y=-0.2, x=0),
                      margin=dict(l=60, r=60, t=50 if title else 20, b=40))
    return fig


def prox24_schedule_figure(schedule: pd.DataFrame, *, title: Optional[str] = None, height: int = 560) -> go.Figure:
    """The 2:4 proximal pruner's regularization schedule on one layer, against the proximal step t.

    ``schedule``: :meth:`pruning.pruners.prox24.Prox24Info.schedule` (``step``, ``mu``, ``non24_frac`` and, when known,
    ``loss`` / ``rel_error``). Three panels sharing the step axis: μ_t (log scale), the share of groups of 4 that
    still have more than 2 non-zeros after the step, and the relative output error ``‖W*X − WX‖F/‖WX‖F`` (the
    square root of the local loss over ``½‖WX‖F²``; the loss itself in the hover).
    """
    from plotly.subplots import make_subplots

    _check(schedule, ["step", "mu", "non24_frac"], "prox24_schedule_figure")
    if schedule.empty:
        raise ValueError("prox24_schedule_figure: the schedule is empty; run prox24_prune(..., record=True)")
    t = schedule.sort_values("step")
    has_err = "rel_error" in t.columns and t["rel_error"].notna().any()
    rows = 3 if has_err else 2
    fig = make_subplots(rows=rows, cols=1, shared_xaxes=True, vertical_spacing=0.06)
    x = t["step"].to_numpy(dtype=np.int64)
    fig.add_trace(go.Scatter(x=x, y=t["mu"].to_numpy(dtype=np.float64), mode="lines+markers", name="μ_t",
                             line=dict(color=_COLORS[0]), marker=dict(size=4),
                             hovertemplate="step %{x}<br>μ_t = %{y:.4g}<extra></extra>"), row=1, col=1)
    fig.add_trace(go.Scatter(x=x, y=100 * t["non24_frac"].to_numpy(dtype=np.float64), mode="lines+markers",
                             name="groups of 4 with > 2 non-zeros", line=dict(color=_COLORS[1]), marker=dict(size=4),
                             hovertemplate="step %{x}<br>%{y:.2f}% of the groups not 2:4<extra></extra>"),
                  row=2, col=1)
    fig.update_yaxes(type="log", title_text="μ_t (1/weight units, log)", exponentformat="power", row=1, col=1)
    fig.update_yaxes(title_text="groups not 2:4 (%)", rangemode="tozero", row=2, col=1)
    if has_err:
        loss = t["loss"].to_numpy(dtype=np.float64).reshape(-1, 1) if "loss" in t.columns else None
        fig.add_trace(go.Scatter(x=x, y=t["rel_error"].to_numpy(dtype=np.float64), mode="lines+markers",
                                 name="relative output error ‖W*X − WX‖F/‖WX‖F", line=dict(color=_COLORS[2]),
                                 marker=dict(size=4), customdata=loss,
                                 hovertemplate="step %{x}<br>rel. error %{y:.4f}" +
                                 ("<br>loss ½‖W*X − WX‖F² = %{customdata[0]:.4g}" if loss is not None else "") +
                                 "<extra></extra>"), row=3, col=1)
        fig.update_yaxes(title_text="rel. output error", rangemode="tozero", row=3, col=1)
    fig.update_xaxes(title_text="proximal step t", row=rows, col=1)
    fig.update_layout(title=title, height=height, template="plotly_white",
                      legend=dict(orientation="h", yanchor="top", y=-0.12, x=0),
                      margin=dict(l=70, r=20, t=50 if title else 20, b=40))
    return fig
