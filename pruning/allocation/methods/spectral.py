"""The mapping shared by the spectral allocations (AlphaPruning, stable rank, FARMS): a per-matrix metric m →
ratios r_i = (m_i − min m)/(max m − min m)·2λ + 1 − λ (block means in block mode) → s_i = r_i · S·Σp / Σ p·r
(Lu et al., "AlphaPruning", NeurIPS 2024, Eq. 4–5; bounds: the scale is re-solved, :func:`fit_mean`)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from pruning.allocation.mappings import AllocationError, alphapruning_ratios, fit_mean
from pruning.allocation.spec import AllocationContext, MethodResult

#: the AllocationOptions every spectral method reads
SPECTRAL_OPTIONS = frozenset({"lam", "mapping", "granularity", "direction"})


def drop_flagged(df: pd.DataFrame, m: np.ndarray, granularity: str, notes: list) -> np.ndarray:
    """``m`` with the flagged fits (:func:`spectra.analyze.flagged_fits`) replaced by the mean of the other matrices
    of their block (NaN for the block-mean step to skip them); blocks whose fits are all flagged keep them."""
    from spectra.analyze import flagged_fits

    if "alpha" not in df.columns:
        raise ValueError("exclude_flagged needs the 'alpha' column (the power-law fits) to find the flagged fits")
    flags = flagged_fits(df).to_numpy()
    if not flags.any():
        return m
    blocks = df["block"].to_numpy()
    out = m.copy()
    dropped, kept = [], []
    for b in np.unique(blocks[flags]):
        here = blocks == b
        others = here & ~flags & np.isfinite(m)
        if not others.any():
            kept += [str(n) for n in df.loc[here & flags, "longname"]]
            continue
        out[here & flags] = np.nan if granularity == "block" else float(np.mean(m[others]))
        dropped += [str(n) for n in df.loc[here & flags, "longname"]]
    if dropped:
        notes.append(f"left {len(dropped)} fit(s) flagged as likely spurious out of their block mean: "
                     f"{', '.join(dropped)}")
    if kept:
        notes.append(f"kept {len(kept)} flagged fit(s) whose whole block is flagged: {', '.join(kept)}")
    return out


def metric_values(ctx: AllocationContext, metric: str, missing_hint: str = "", exclude_flagged: bool = False
                  ) -> np.ndarray:
    """The column ``metric`` as float64 (inf → NaN), flagged fits dropped, block-averaged in block mode;
    ValueError when the column is absent (``missing_hint`` says how to get it), AllocationError when NaN remain."""
    df, granularity = ctx.df, ctx.opt.granularity
    if metric not in df.columns:
        if missing_hint:
            raise ValueError(f"metrics have no column {metric!r}; {missing_hint}")
        avail = [c for c in df.columns if c not in ("longname", "param", "block", "role", "layer_id") and
                 pd.api.types.is_numeric_dtype(df[c])]
        raise ValueError(f"metrics have no column {metric!r}; numeric columns available: {', '.join(avail)}")
    m = pd.to_numeric(df[metric], errors="coerce").to_numpy(dtype=np.float64)
    if np.isinf(m).any():
        m = np.where(np.isinf(m), np.nan, m)
    n_nan = int(np.isnan(m).sum())
    if exclude_flagged:
        m = drop_flagged(df, m, granularity, ctx.notes)
    if granularity == "block":
        m = pd.Series(m).groupby(df["block"].to_numpy()).transform("mean").to_numpy()  # NaN-skipping mean
        if n_nan:
            ctx.notes.append(f"{metric} missing for {n_nan} matrices; block means use the others")
    if np.isnan(m).any():
        bad = ctx.names[int(np.argmax(np.isnan(m)))]
        raise AllocationError(f"metric {metric!r} is NaN for {int(np.isnan(m).sum())} matrices (e.g. {bad}); "
                              f"refit them, use granularity='block' or another metric")
    return m


def spectral_allocation(ctx: AllocationContext, m: np.ndarray, metric: str) -> MethodResult:
    """AlphaPruning's mapping of the per-matrix metric ``m`` (named ``metric`` in the settings) to sparsities."""
    opt, p, S = ctx.opt, ctx.p, ctx.S
    r = alphapruning_ratios(m, float(opt.lam), opt.mapping, ctx.higher_more)
    if np.ptp(m) == 0:
        ctx.notes.append(f"{metric} is constant over the {'blocks' if opt.granularity == 'block' else 'matrices'}: "
                         f"uniform allocation")
    denom = r @ p
    raw = r * (S * p.sum() / denom) if denom > 0 else np.full(len(m), np.nan)
    values = fit_mean(r, p, S, opt.min_sparsity, opt.max_sparsity, "scale")[0] if ctx.clip else raw
    ctx.settings.update(metric=metric, granularity=opt.granularity, mapping=opt.mapping, lam=float(opt.lam),
                        direction="higher_more" if ctx.higher_more else "lower_more")
    return MethodResult(values, raw, m)


def fixed_metric(method: str, column: str, metric) -> str:
    """The column a fixed-metric method reads; ValueError when the caller asked for another one."""
    if metric not in (None, column):
        raise ValueError(f"method {method!r} uses the {column!r} column; for metric {metric!r} use "
                         f"method 'alphapruning'")
    return column
