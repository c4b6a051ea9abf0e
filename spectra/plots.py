"""Plotly figures of HT-SR spectra: ESDs with their power-law fit, D per xmin candidate, metrics along depth.

Plain functions: arrays / DataFrames in, a :class:`plotly.graph_objects.Figure` out, with labelled axes and units.
Used by the Streamlit app (``app.py``) and the notebooks; nothing here computes a fit — the numbers come from
:mod:`spectra.hill` and :mod:`spectra.mp` (Martin & Mahoney, JMLR 2021, for the reading of the plots).

The ESD density on a log-log plot: eigenvalues λ (of WᵀW, unnormalised) are binned on log-spaced edges e_k and the
density is count_k / (n · (e_{k+1} − e_k)), so that it is comparable with the power-law density of the fitted tail
p(λ) = (n_tail / n) · (α − 1)/xmin · (λ/xmin)^(−α) for λ ≥ xmin and with the Marchenko–Pastur density.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

#: display order of the roles (unknown roles are appended in order of appearance)
ROLE_ORDER = ("q", "k", "v", "o", "qkv", "c_attn", "gate", "up", "down", "fc1", "fc2", "c_fc", "c_proj",
              "dense", "dense_h_to_4h", "dense_4h_to_h", "embed", "lm_head")

#: axis labels (with units) of the Contract 1 metric columns
METRIC_LABELS: dict[str, str] = {
    "alpha": "α (power-law exponent of the ESD tail, dimensionless)",
    "alpha_weighted": "α̂ = α·log10 λmax (dimensionless)",
    "stable_rank": "stable rank ‖W‖F²/‖W‖2² (dimensionless)",
    "log_norm": "log10 ‖W‖F² (log10 of squared Frobenius norm)",
    "log_spectral_norm": "log10 λmax (log10 of squared spectral norm)",
    "log_alpha_norm": "log10 Σλ^α (dimensionless)",
    "spectral_norm": "λmax = ‖W‖2² (squared spectral norm)",
    "lambda_max": "λmax (largest eigenvalue of WᵀW)",
    "norm": "‖W‖F² (squared Frobenius norm)",
    "D": "KS distance D of the tail fit (0–1)",
    "sigma": "σ of α (standard error, dimensionless)",
    "xmin": "xmin (eigenvalue of WᵀW where the tail starts)",
    "xmax": "xmax (largest eigenvalue of WᵀW)",
    "entropy": "spectral entropy (0–1)",
    "num_pl_spikes": "tail size (number of eigenvalues ≥ xmin)",
    "num_spikes": "number of eigenvalues above the MP bulk edge",
    "mp_bulk_max": "MP bulk edge λ₊ (eigenvalue of WᵀW)",
}

#: weightwatcher's reading of α (Martin & Mahoney): below 2 over-trained, 2–6 typical, above 6 under-trained
ALPHA_BANDS = ((0.0, 2.0, "over-trained (α < 2)", "rgba(214,39,40,0.08)"),
               (2.0, 6.0, "typical (2 ≤ α ≤ 6)", "rgba(44,160,44,0.07)"),
               (6.0, np.inf, "under-trained (α > 6)", "rgba(255,127,14,0.08)"))

_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f",
           "#bcbd22")
EIG_LABEL = "eigenvalue λ of WᵀW (squared singular value, log scale)"
DENSITY_LABEL = "density (1/λ, log scale)"


def new_figure(*data: Any) -> go.Figure:
    """``go.Figure(*data)`` with the ``plotly_white`` template of every chart here.

    Where plotly's default template already is ``plotly_white`` (the app sets it once at start-up), the figure takes
    it the way plotly applies defaults (~3 ms); otherwise the template is assigned, which validates it again (~15 ms,
    most of a chart's build time). A library import never changes plotly's global default.
    """
    import plotly.io as pio

    fig = go.Figure(*data)
    if pio.templates.default != "plotly_white":
        fig.update_layout(template="plotly_white")
    return fig


def metric_label(metric: str) -> str:
    """Axis label with unit for a metric column (the column name itself when unknown)."""
    return METRIC_LABELS.get(metric, metric)


def role_order(roles: Sequence[str]) -> list[str]:
    """The distinct roles of ``roles`` in :data:`ROLE_ORDER`, unknown ones after them in order of appearance."""
    seen = list(dict.fromkeys(str(r) for r in roles))
    known = [r for r in ROLE_ORDER if r in seen]
    return known + [r for r in seen if r not in ROLE_ORDER]


def _get(fit: Any, name: str, default=np.nan):
    if fit is None:
        return default
    if isinstance(fit, Mapping):
        return fit.get(name, default)
    return getattr(fit, name, default)


# ------------------------------------------------------------------------------------------------- ESD
def log_histogram(evals: np.ndarray, bins: int = 60, lo: Optional[float] = None,
                  hi: Optional[float] = None) -> tuple[np.ndarray, np.ndarray, int]:
    """Density of the positive eigenvalues on ``bins`` log-spaced bins: (edges, density, n used).

    density_k = count_k / (n · (e_{k+1} − e_k)) with n the number of positive eigenvalues in [lo, hi].
    """
    x = np.asarray(evals, dtype=np.float64).ravel()
    x = x[np.isfinite(x) & (x > 0)]
    if x.size == 0:
        raise ValueError("no positive eigenvalue to plot; is the matrix all zeros?")
    lo = float(x.min()) if lo is None else float(lo)
    hi = float(x.max()) if hi is None else float(hi)
    if hi <= lo:
        hi = lo * 1.01 + 1e-300
    edges = np.logspace(np.log10(lo), np.log10(hi), int(bins) + 1)
    edges[0], edges[-1] = lo, hi  # exact ends: 10**log10(x) can round below x and drop the largest eigenvalue
    counts, _ = np.histogram(x, bins=edges)
    n = int(counts.sum())
    dens = counts / (max(n, 1) * np.diff(edges))
    return edges, dens, n


def _step_xy(edges: np.ndarray, dens: np.ndarray) -> tuple[list, list]:
    """Step outline of a histogram; empty bins become gaps (None) since log(0) is undefined."""
    xs: list = []
    ys: list = []
    for k, d in enumerate(dens):
        if d > 0:
            xs += [edges[k], edges[k + 1]]
            ys += [d, d]
        else:
            xs.append(None)
            ys.append(None)
    return xs, ys


def power_law_density(lam: np.ndarray, alpha: float, xmin: float, tail_fraction: float = 1.0) -> np.ndarray:
    """tail_fraction · (α − 1)/xmin · (λ/xmin)^(−α): the fitted power-law density on λ ≥ xmin."""
    lam = np.asarray(lam, dtype=np.float64)
    return tail_fraction * (alpha - 1.0) / xmin * (lam / xmin) ** (-alpha)


def add_esd_traces(fig: go.Figure, evals: np.ndarray, fit: Any = None, *, name: str = "ESD",
                   color: str = _COLORS[0], bins: int = 60, mp: Optional[tuple[np.ndarray, np.ndarray]] = None,
                   mp_edge: Optional[float] = None, shade_tail: bool = True, row: Optional[int] = None,
                   col: Optional[int] = None, edges_range: Optional[tuple[float, float]] = None) -> go.Figure:
    """Add one ESD (histogram density), its fitted tail, the xmin marker, the shaded tail and an MP overlay.

    ``fit``: a :class:`spectra.hill.PowerLawFit` (or a mapping with ``alpha xmin xmax D num_pl_spikes``).
    ``mp``: (λ grid, MP density) as returned by :func:`spectra.mp.mp_curve`; ``mp_edge``: the bulk edge λ₊.
    """
    where = {} if row is None else {"row": row, "col": col}
    lo, hi = (None, None) if edges_range is None else edges_range
    edges, dens, n = log_histogram(evals, bins, lo, hi)
    xs, ys = _step_xy(edges, dens)
    prefix = "" if name == "ESD" else f"{name}: "
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name=f"{prefix}ESD ({n} eigenvalues)",
                             line=dict(color=color, width=1.6), fill="none", connectgaps=False,
                             hovertemplate="λ=%{x:.4g}<br>density=%{y:.3g}<extra></extra>"), **where)
    alpha, xmin, xmax = float(_get(fit, "alpha")), float(_get(fit, "xmin")), float(_get(fit, "xmax"))
    if np.isfinite(alpha) and np.isfinite(xmin) and xmin > 0:
        n_tail = int(_get(fit, "num_pl_spikes", 0) or 0)
        if not np.isfinite(xmax) or xmax <= xmin:
            xmax = float(np.max(evals))
        frac = n_tail / n if n else 1.0
        grid = np.logspace(np.log10(xmin), np.log10(xmax), 100)
        D = float(_get(fit, "D"))
        fig.add_trace(go.Scatter(x=grid, y=power_law_density(grid, alpha, xmin, frac), mode="lines",
                                 name=f"{prefix}power law α={alpha:.3f}" + (f", D={D:.3f}" if np.isfinite(D) else ""),
                                 line=dict(color=color, dash="dash", width=2.4),
                                 hovertemplate="λ=%{x:.4g}<br>fit density=%{y:.3g}<extra></extra>"), **where)
        if shade_tail:
            fig.add_vrect(x0=xmin, x1=xmax, fillcolor=color, opacity=0.08, line_width=0, layer="below", **where)
        fig.add_vline(x=xmin, line=dict(color=color, dash="dot", width=1.5), **where)
        # an invisible marker so that xmin has a legend entry and a hover label
        ymax = float(np.max(dens[dens > 0])) if np.any(dens > 0) else 1.0
        fig.add_trace(go.Scatter(x=[xmin], y=[ymax], mode="markers", marker=dict(symbol="triangle-down", size=10,
                                 color=color), name=f"{prefix}xmin={xmin:.4g} (tail {n_tail} eigenvalues)",
                                 hovertemplate="xmin=%{x:.4g}<extra></extra>"), **where)
    if mp is not None:
        gx, gy = np.asarray(mp[0]), np.asarray(mp[1])
        keep = gy > 0
        fig.add_trace(go.Scatter(x=gx[keep], y=gy[keep], mode="lines", name=f"{prefix}Marchenko–Pastur bulk",
                                 line=dict(color="#555555" if color == _COLORS[0] else color, width=1.4,
                                           dash="dashdot"),
                                 hovertemplate="λ=%{x:.4g}<br>MP density=%{y:.3g}<extra></extra>"), **where)
    if mp_edge is not None and np.isfinite(mp_edge) and mp_edge > 0:
        fig.add_vline(x=float(mp_edge), line=dict(color="#555555", dash="dashdot", width=1), **where)
    return fig


def esd_figure(evals: np.ndarray, fit: Any = None, *, mp: Optional[tuple[np.ndarray, np.ndarray]] = None,
               mp_edge: Optional[float] = None, bins: int = 60, title: Optional[str] = None,
               name: str = "ESD", height: int = 460) -> go.Figure:
    """Log-log ESD density with the fitted power-law tail (dashed), xmin marker (dotted), shaded tail region
    [xmin, xmax] and, when given, the Marchenko–Pastur bulk density and edge (dash-dot)."""
    fig = new_figure()
    add_esd_traces(fig, evals, fit, name=name, bins=bins, mp=mp, mp_edge=mp_edge)
    fig.update_xaxes(type="log", title_text=EIG_LABEL, exponentformat="power")
    fig.update_yaxes(type="log", title_text=DENSITY_LABEL, exponentformat="power")
    fig.update_layout(title=title, height=height, legend=dict(orientation="h", yanchor="top", y=-0.2, x=0),
                      margin=dict(l=60, r=20, t=50 if title else 20, b=40))
    return fig


def esd_overlay_figure(series: Sequence[tuple[str, np.ndarray, Any]], *, bins: int = 60,
                       title: Optional[str] = None, height: int = 460) -> go.Figure:
    """Several ESDs on one log-log plot (e.g. one matrix before and after pruning), each with its fitted tail.

    ``series``: (label, eigenvalues, fit or None) triples; all share the same log-spaced bin edges.
    """
    if not series:
        raise ValueError("esd_overlay_figure needs at least one (label, evals, fit) series")
    pos = np.concatenate([np.asarray(e, dtype=np.float64)[np.asarray(e) > 0] for _, e, _ in series])
    if pos.size == 0:
        raise ValueError("no positive eigenvalue to plot")
    rng = (float(pos.min()), float(pos.max()))
    fig = new_figure()
    for k, (label, ev, fit) in enumerate(series):
        add_esd_traces(fig, ev, fit, name=label, color=_COLORS[k % len(_COLORS)], bins=bins, edges_range=rng,
                       shade_tail=len(series) == 1)
    fig.update_xaxes(type="log", title_text=EIG_LABEL, exponentformat="power")
    fig.update_yaxes(type="log", title_text=DENSITY_LABEL, exponentformat="power")
    fig.update_layout(title=title, height=height, legend=dict(orientation="h", yanchor="top", y=-0.2, x=0),
                      margin=dict(l=60, r=20, t=50 if title else 20, b=40))
    return fig


def log_axis_range(values: Sequence[float], pad: float = 0.05) -> list[float]:
    """Range of a plotly log axis (in log10 units, as plotly wants it) spanning the positive ``values``, padded by
    ``pad`` of the span (at least 0.05 decade) on each side."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v) & (v > 0)]
    if v.size == 0:
        return [-1.0, 1.0]
    lo, hi = float(np.log10(v.min())), float(np.log10(v.max()))
    margin = max(pad * (hi - lo), 0.05)
    return [lo - margin, hi + margin]


def ks_figure(xmins: np.ndarray, Ds: np.ndarray, alphas: Optional[np.ndarray] = None, *,
              chosen: Optional[float] = None, window: Optional[tuple[float, float]] = None,
              title: Optional[str] = None, height: int = 380) -> go.Figure:
    """KS distance D of the power-law fit against the xmin candidate (log x), α on a second axis.

    ``chosen``: the xmin picked by the current rule (vertical line); ``window``: the candidate range of the rule
    (e.g. the peak rule's [0.95·p, 1.5·p]), shaded. Everything is drawn in data coordinates: the line and the
    window are traces, their labels annotations at log10(x) (plotly's rule for annotations on a log axis), and the
    x axis spans the candidates (plus the window and the chosen xmin) — never decades beyond them.
    """
    xmins = np.asarray(xmins, dtype=np.float64)
    Ds = np.asarray(Ds, dtype=np.float64)
    if xmins.shape != Ds.shape:
        raise ValueError(f"xmins and Ds must have the same length ({xmins.size} vs {Ds.size})")
    fig = new_figure()
    fig.add_trace(go.Scatter(x=xmins, y=Ds, mode="lines+markers", marker=dict(size=3), name="KS distance D",
                             line=dict(color=_COLORS[0]),
                             hovertemplate="xmin=%{x:.4g}<br>D=%{y:.4f}<extra></extra>"))
    if alphas is not None:
        fig.add_trace(go.Scatter(x=xmins, y=np.asarray(alphas, dtype=np.float64), mode="lines", name="α at that xmin",
                                 line=dict(color=_COLORS[1], width=1.2), yaxis="y2",
                                 hovertemplate="xmin=%{x:.4g}<br>α=%{y:.3f}<extra></extra>"))
    finite_D = Ds[np.isfinite(Ds)]
    top = float(finite_D.max()) * 1.05 if finite_D.size and finite_D.max() > 0 else 1.0
    span = list(xmins)
    if window is not None and window[1] > 0:
        x0, x1 = float(window[0]), float(window[1])
        if x0 <= 0:  # a window opening at or below 0 starts, on a log axis, at the smallest candidate
            x0 = float(xmins[xmins > 0].min()) if np.any(xmins > 0) else x1
        fig.add_trace(go.Scatter(x=[x0, x0, x1, x1, x0], y=[0, top, top, 0, 0], mode="lines", fill="toself",
                                 fillcolor="rgba(44,160,44,0.12)", line=dict(width=0), name="rule's candidates",
                                 hoverinfo="skip"))
        # the window's label ends at its left edge, the chosen xmin's starts at its line: they never overlap
        fig.add_annotation(x=float(np.log10(x0)), y=1.0, xref="x", yref="paper", text="rule's candidates",
                           showarrow=False, xanchor="right", yanchor="bottom", xshift=-4,
                           font=dict(size=11, color="#2ca02c"))
        span += [x0, x1]
    if chosen is not None and np.isfinite(chosen) and chosen > 0:
        fig.add_trace(go.Scatter(x=[float(chosen), float(chosen)], y=[0, top], mode="lines", name="chosen xmin",
                                 line=dict(color="#333333", dash="dot"), hoverinfo="skip"))
        # above the plot area (paper coordinates), beside its line: never on a tick label of either y axis
        fig.add_annotation(x=float(np.log10(chosen)), y=1.0, xref="x", yref="paper",
                           text=f"chosen xmin={chosen:.4g}", showarrow=False, xanchor="left", yanchor="bottom",
                           xshift=4, font=dict(size=11))
        span.append(float(chosen))
    fig.update_xaxes(type="log", title_text="xmin candidate (eigenvalue of WᵀW, log scale)", exponentformat="power",
                     range=log_axis_range(span))
    fig.update_layout(yaxis=dict(title="KS distance D (0–1)", rangemode="tozero"),
                      yaxis2=dict(title="α (dimensionless)", overlaying="y", side="right", showgrid=False),
                      title=title, height=height,
                      legend=dict(orientation="h", yanchor="top", y=-0.25, x=0),
                      margin=dict(l=60, r=60, t=85 if title else 40, b=40))
    return fig


# ------------------------------------------------------------------------------------------------- depth / heatmap
def _check_columns(df: pd.DataFrame, cols: Sequence[str], what: str) -> None:
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"{what} needs a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"{what}: the table has no column(s) {', '.join(missing)}; pass a spectra results table")


def metric_depth_figure(df: pd.DataFrame, metric: str = "alpha", *, roles: Optional[Sequence[str]] = None,
                        aggregate: Optional[pd.Series] = None, aggregate_name: str = "block mean",
                        bands: Optional[bool] = None, title: Optional[str] = None, height: int = 440) -> go.Figure:
    """``metric`` against the transformer block index, one line per role (rows with block < 0 are left out).

    ``aggregate``: an optional per-block series (index = block), e.g. from ``spectra.analyze.block_aggregate``,
    drawn as a thick black line. ``bands`` (default: on for ``alpha``) shades the HT-SR reading of α.
    """
    _check_columns(df, ["block", "role", metric], "metric_depth_figure")
    d = df[df["block"] >= 0]
    fig = new_figure()
    for k, role in enumerate(role_order(d["role"]) if roles is None else list(roles)):
        r = d[d["role"] == role].sort_values("block")
        if r.empty:
            continue
        names = r["longname"] if "longname" in r.columns else r["role"]
        fig.add_trace(go.Scatter(x=r["block"], y=r[metric], mode="lines+markers", name=str(role),
                                 marker=dict(size=5), line=dict(color=_COLORS[k % len(_COLORS)], width=1.4),
                                 customdata=np.asarray(names).reshape(-1, 1),
                                 hovertemplate="%{customdata[0]}<br>block %{x}<br>" + metric +
                                 "=%{y:.4g}<extra></extra>"))
    if aggregate is not None and len(aggregate):
        agg = pd.Series(aggregate).sort_index()
        fig.add_trace(go.Scatter(x=agg.index, y=agg.values, mode="lines", name=aggregate_name,
                                 line=dict(color="black", width=3),
                                 hovertemplate="block %{x}<br>" + aggregate_name + "=%{y:.4g}<extra></extra>"))
    if bands is None:
        bands = metric == "alpha"
    if bands:
        vals = pd.to_numeric(d[metric], errors="coerce")
        top = float(np.nanmax(vals)) if vals.notna().any() else 8.0
        for lo, hi, label, color in ALPHA_BANDS:
            hi_draw = min(hi, max(top * 1.05, lo + 0.5))
            if lo >= hi_draw:
                continue
            fig.add_hrect(y0=lo, y1=hi_draw, fillcolor=color, line_width=0, layer="below",
                          annotation_text=label, annotation_position="top left",
                          annotation_font=dict(size=10, color="#666666"))
    fig.update_xaxes(title_text="transformer block (0 = closest to the input)", dtick=1 if d["block"].nunique() <= 16
                     else 2)
    fig.update_yaxes(title_text=metric_label(metric))
    fig.update_layout(title=title, height=height, hovermode="closest",
                      margin=dict(l=60, r=20, t=50 if title else 20, b=40))
    return fig


def block_role_matrix(df: pd.DataFrame, metric: str = "alpha") -> pd.DataFrame:
    """Pivot ``metric`` to a role × block table (rows ordered as :func:`role_order`; block < 0 left out)."""
    _check_columns(df, ["block", "role", metric], "block_role_matrix")
    d = df[df["block"] >= 0]
    table = d.pivot_table(index="role", columns="block", values=metric, aggfunc="mean")
    return table.reindex(role_order(d["role"]))


def heatmap_figure(df: pd.DataFrame, metric: str = "alpha", *, title: Optional[str] = None,
                   height: Optional[int] = None, zrange: Optional[tuple[float, float]] = None) -> go.Figure:
    """Block × role heatmap of ``metric`` (x = block, y = role; hover gives the matrix name and value)."""
    table = block_role_matrix(df, metric)
    names = None
    if "longname" in df.columns:
        d = df[df["block"] >= 0]
        nm = d.pivot_table(index="role", columns="block", values="longname", aggfunc="first")
        names = nm.reindex(index=table.index, columns=table.columns).to_numpy()
    z = table.to_numpy(dtype=np.float64)
    kw: dict[str, Any] = {}
    if zrange is not None:
        kw.update(zmin=zrange[0], zmax=zrange[1])
    fig = new_figure(go.Heatmap(
        z=z, x=[int(b) for b in table.columns], y=list(table.index), colorscale="RdYlBu_r",
        colorbar=dict(title=dict(text=metric, side="right")), customdata=names,
        hovertemplate=("%{customdata}<br>" if names is not None else "") + "block %{x}, role %{y}<br>" + metric +
        "=%{z:.4g}<extra></extra>", **kw))
    fig.update_xaxes(title_text="transformer block", dtick=1 if table.shape[1] <= 16 else 2)
    fig.update_yaxes(title_text="role (matrix in the block)", autorange="reversed")
    fig.update_layout(title=title, height=height or max(260, 40 * table.shape[0] + 120),
                      margin=dict(l=60, r=20, t=50 if title else 20, b=40))
    return fig


def metric_histogram_figure(df: pd.DataFrame, metric: str = "alpha", *, by_role: bool = True, nbins: int = 40,
                            title: Optional[str] = None, height: int = 340) -> go.Figure:
    """Histogram of ``metric`` over the matrices (stacked by role when ``by_role``)."""
    _check_columns(df, [metric] + (["role"] if by_role else []), "metric_histogram_figure")
    fig = new_figure()
    if by_role:
        for k, role in enumerate(role_order(df["role"])):
            fig.add_trace(go.Histogram(x=df.loc[df["role"] == role, metric], name=str(role), nbinsx=nbins,
                                       marker_color=_COLORS[k % len(_COLORS)]))
        fig.update_layout(barmode="stack")
    else:
        fig.add_trace(go.Histogram(x=df[metric], nbinsx=nbins, name=metric))
    fig.update_xaxes(title_text=metric_label(metric))
    fig.update_yaxes(title_text="number of matrices")
    fig.update_layout(title=title, height=height,
                      margin=dict(l=60, r=20, t=50 if title else 20, b=40))
    return fig


# ------------------------------------------------------------------------------------------------- fit + figure
def esd_mp_figure(evals: np.ndarray, fit: Any, rows: int, cols: int, *, method: str = "trace", bins: int = 60,
                  title: Optional[str] = None, height: int = 460) -> go.Figure:
    """:func:`esd_figure` of a ``rows`` × ``cols`` matrix's eigenvalues with its Marchenko–Pastur bulk density and
    edge, σ² estimated from the eigenvalues by ``method`` (:func:`spectra.mp.mp_curve` / :func:`spectra.mp.mp_fit`)."""
    from .mp import mp_curve, mp_fit

    rows, cols = int(rows), int(cols)
    return esd_figure(evals, fit, mp=mp_curve(evals, rows, cols, method=method),
                      mp_edge=mp_fit(evals, rows, cols, method=method).bulk_max, bins=bins, title=title,
                      height=height)


def ks_curve_figure(evals: np.ndarray, fit: Any, xmin_rule: str = "peak", *, title: Optional[str] = None,
                    height: int = 380) -> go.Figure:
    """:func:`ks_figure` of ``evals`` under ``xmin_rule``: D and α for every xmin candidate
    (:func:`spectra.hill.ks_curve`), the xmin chosen by ``fit`` and the rule's candidate window
    (:func:`spectra.hill.xmin_window`, around ``fit.peak``) shaded.

    The reference rules' window (``peak_ref`` / ``peak_ap``) has in effect no lower bound: it is drawn from the
    smallest candidate."""
    from .hill import ks_curve, xmin_window

    xs, alphas, Ds = ks_curve(evals, xmin_rule)
    window = xmin_window(xmin_rule, float(_get(fit, "peak")))
    if window is not None and xmin_rule != "peak" and xs.size:
        window = (max(float(xs[0]), window[0]), window[1])
    return ks_figure(xs, Ds, alphas, chosen=_get(fit, "xmin", None), window=window, title=title, height=height)
