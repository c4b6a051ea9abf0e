""":func:`allocate`: per-matrix metrics + a global target S → one sparsity per prunable matrix (methods and bounds
as described in :mod:`pruning.allocation`)."""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional, Union

import numpy as np
import pandas as pd

from pruning.allocation.mappings import (
    GRANULARITIES,
    MAPPINGS,
    TOL,
    block_of,
    bound_note,
    check_choice,
    check_direction,
    check_sparsity,
)
from pruning.allocation.registry import get_allocation
from pruning.allocation.spec import AllocationContext, AllocationOptions, MethodResult


def _prepare(metrics: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Validate the metrics table; return (prunable rows in input order, longnames of excluded non-block rows).

    Needs ``longname`` and ``num_params`` (or ``rows`` and ``cols``). ``block``/``role`` are derived from the
    longname when absent. Rows with ``block < 0`` (embeddings, lm_head) are not prunable and are excluded, as in
    every reference code (they prune only the decoder blocks' linear layers).
    """
    if not isinstance(metrics, pd.DataFrame):
        raise ValueError(f"metrics must be a pandas DataFrame (one row per matrix), got {type(metrics).__name__}")
    if "longname" not in metrics.columns:
        raise ValueError("metrics have no 'longname' column; pass a spectra results table (Contract 1)")
    df = metrics.reset_index(drop=True).copy()
    if df["longname"].duplicated().any():
        dup = df.loc[df["longname"].duplicated(), "longname"].iloc[0]
        raise ValueError(f"metrics list {dup!r} more than once; keep one row per matrix")
    if "num_params" not in df.columns:
        if {"rows", "cols"} <= set(df.columns):
            df["num_params"] = df["rows"].astype("int64") * df["cols"].astype("int64")
        else:
            raise ValueError("metrics need a 'num_params' column (or 'rows' and 'cols') to weight the mean")
    if df["num_params"].isna().any() or (df["num_params"] <= 0).any():
        raise ValueError("metrics have missing or non-positive 'num_params'; every matrix needs its size")
    df["num_params"] = df["num_params"].astype("int64")
    if "block" not in df.columns:
        df["block"] = [block_of(n) for n in df["longname"]]
    df["block"] = df["block"].fillna(-1).astype("int64")
    if "role" not in df.columns:
        from spectra.weights import classify

        df["role"] = [classify(n)[2] for n in df["longname"]]
    keep = df["block"] >= 0
    excluded = df.loc[~keep, "longname"].tolist()
    df = df.loc[keep].reset_index(drop=True)
    if df.empty:
        raise ValueError("metrics hold no prunable matrix (no row with block >= 0, i.e. inside a transformer block)")
    return df, excluded


# --------------------------------------------------------------------------------------------------- allocate
def _context(metrics: pd.DataFrame, spec, sparsity: float, opt: AllocationOptions) -> tuple:
    """Checked arguments → (AllocationContext, longnames of the excluded non-block rows)."""
    S = check_sparsity(sparsity)
    check_choice("granularity", opt.granularity, GRANULARITIES)
    check_choice("mapping", opt.mapping, MAPPINGS)
    higher_more = check_direction(opt.direction)
    hi, lo = float(opt.max_sparsity), float(opt.min_sparsity)
    if not (0.0 < hi <= 1.0):
        raise ValueError(f"max_sparsity must be in (0, 1], got {opt.max_sparsity}")
    if not (0.0 <= lo <= hi):
        raise ValueError(f"min_sparsity must be in [0, max_sparsity={hi}], got {opt.min_sparsity}")
    if not (0.0 <= float(opt.lam) <= 1.0):
        raise ValueError(f"lam must be in [0, 1] (ratios span [1 − lam, 1 + lam]), got {opt.lam}; the paper uses "
                         f"0.2–0.5")
    if opt.owl_lambda < 0:
        raise ValueError(f"owl_lambda must be >= 0 (OWL default 0.08), got {opt.owl_lambda}")
    if opt.exclude_flagged and "exclude_flagged" not in spec.options:
        raise ValueError(f"exclude_flagged applies to method 'alphapruning' (its power-law fits), not {spec.name!r}")
    df, excluded = _prepare(metrics)
    lo_eff, hi_eff = (lo, hi) if opt.clip else (0.0, 1.0)
    ctx = AllocationContext(df, df["longname"].tolist(), df["num_params"].to_numpy(dtype=np.float64), S, opt,
                            higher_more, lo_eff, hi_eff)
    ctx.settings.update(method=spec.name, sparsity=S)
    return ctx, excluded


def _bound_notes(ctx: AllocationContext, res: MethodResult) -> None:
    """Note the entries of the unbounded formula outside the bounds (and how they were handled)."""
    if res.raw is None:
        return
    lo, hi = ctx.opt.min_sparsity, ctx.opt.max_sparsity
    note = bound_note(res.raw, lo, hi, ctx.names)
    if note and ctx.clip:
        at_hi, at_lo = int((res.values >= hi - TOL).sum()), int((res.values <= lo + TOL).sum())
        ctx.notes.append(f"{note} — redistributed, mean kept ({at_hi} at max, {at_lo} at min after redistribution)")
    elif note:
        ctx.notes.append(note + " — not clipped (clip=False, faithful)")


#: an allocation within this many float64 epsilons of S everywhere is uniform sparsity, returned as S exactly
UNIFORM_ULPS = 8


def _result(ctx: AllocationContext, res: MethodResult, excluded: list) -> pd.DataFrame:
    """The Contract 2 DataFrame of a method's result, its settings in ``attrs["allocation"]``."""
    df, opt, settings = ctx.df, ctx.opt, ctx.settings
    values = np.asarray(res.values, dtype=np.float64)
    if np.abs(values - ctx.S).max() <= UNIFORM_ULPS * np.finfo(np.float64).eps:  # e.g. λ = 0: the mean fit leaves an
        values = np.full(len(values), float(ctx.S))  # ulp; uniform to the bit lets tune/compare reuse uniform's masks
    settings.update(max_sparsity=float(opt.max_sparsity), min_sparsity=float(opt.min_sparsity), clip=bool(opt.clip))
    if excluded:
        settings["excluded"] = len(excluded)
        settings["excluded_examples"] = excluded[:3]
    settings["mean_sparsity"] = float(values @ ctx.p / ctx.p.sum())
    if ctx.notes:
        settings["note"] = "; ".join(ctx.notes)
    metric = np.full(len(df), np.nan) if res.metric is None else res.metric
    out = pd.DataFrame({
        "longname": df["longname"].astype(str).to_numpy(),
        "block": df["block"].to_numpy(dtype=np.int64),
        "role": df["role"].astype(str).to_numpy(),
        "num_params": df["num_params"].to_numpy(dtype=np.int64),
        "metric": np.asarray(metric, dtype=np.float64),
        "sparsity": values,
    })
    out.attrs["allocation"] = settings
    return out


def allocate(metrics: pd.DataFrame, method: str, sparsity: float, options: Optional[AllocationOptions] = None,
             **kwargs: Any) -> pd.DataFrame:
    """Per-matrix sparsities with parameter-weighted mean ``sparsity`` (Contract 2), by the registered ``method``.

    Args:
        metrics: one row per matrix (spectra Contract 1): ``longname``, ``num_params`` (or ``rows``/``cols``),
            ``block``, ``role`` and the columns the method reads. Rows outside transformer blocks (block < 0) are
            excluded.
        method: one of :data:`ALLOCATION_METHODS` (:mod:`pruning.allocation.registry`).
        sparsity: target S in [0, 1).
        options: an :class:`AllocationOptions`; or its fields as keywords (``lam=0.2``, ``outlier_ratios=...``):
            metric (AlphaPruning's column, default ``alpha``), granularity (``block``/``matrix``), mapping
            (``linear``/``log``), lam (AlphaPruning/FARMS/stable-rank λ), direction, max_sparsity / min_sparsity /
            clip (the bounds: see the package docstring), weights ({longname: W}: global, LAMP), outlier_ratios
            (OWL's D per block or matrix), owl_lambda / owl_M, exclude_flagged (AlphaPruning, ours), atp_beta,
            dlp_alpha / block_scores (DLP), table (a measured per-block table).

    Returns:
        DataFrame ``longname, block, role, num_params, metric, sparsity`` in input order; ``metric`` is the value
        the method used (block mean for block mode, OWL's D, ERK's factor; NaN for uniform/global/lamp).
        ``attrs["allocation"]`` holds the settings, the achieved ``mean_sparsity`` and a ``note`` when a bound
        bound or something noteworthy happened.

    Raises:
        ValueError: bad arguments (unknown method, sparsity outside [0, 1), missing column, ...).
        AllocationError: the target cannot be met within the bounds.
    """
    spec = get_allocation(method)
    if options is None:
        unknown = sorted(set(kwargs) - set(AllocationOptions.__dataclass_fields__))
        if unknown:
            raise TypeError(f"allocate() got unknown option(s) {', '.join(unknown)}")
        options = AllocationOptions(**kwargs)
    elif kwargs:
        options = dataclasses.replace(options, **kwargs)
    ctx, excluded = _context(metrics, spec, sparsity, options)
    res = spec.fn(ctx)
    _bound_notes(ctx, res)
    return _result(ctx, res, excluded)


def settings_read(method: str) -> frozenset:
    """The :class:`pruning.settings.AllocationSettings` fields (among ``lam``, ``mapping``, ``granularity``,
    ``metric``, ``exclude_flagged``) that change ``method``'s allocation (its spec's ``settings_read``)."""
    return get_allocation(method).settings_read


def allocation_options(method: str, *, min_sparsity: float = 0.0, max_sparsity: float = 0.99,
                       weights: Optional[Mapping[str, Any]] = None, signal: Optional[Mapping] = None,
                       outlier_ratios: Optional[Mapping[Union[str, int], float]] = None,
                       **settings: Any) -> dict[str, Any]:
    """The keyword arguments of :func:`allocate` that ``method`` reads, from one set of settings: the bounds always;
    the settings its spec reads (``settings_read`` and its tunable parameters, e.g. λ for AlphaPruning, OWL's λ and
    M, ATP's β); ``weights`` for a method that reads every weight; ``signal`` (or ``outlier_ratios``, OWL's name
    for it) for a method that reads the calibration input norms (passed as its spec's ``signal_arg``).
    ValueError (one line) when the method needs ``weights`` or the calibration signal and they are None."""
    spec = get_allocation(method)
    kw: dict[str, Any] = dict(min_sparsity=min_sparsity, max_sparsity=max_sparsity)
    wanted = spec.settings_read | {p.name for p in spec.params}
    kw.update({k: v for k, v in settings.items() if k in wanted})
    if "exclude_flagged" in kw:
        kw["exclude_flagged"] = bool(kw["exclude_flagged"])
    if spec.reads == "weights":
        if weights is None:
            raise ValueError(f"{method} needs the model's weights; load a model, not a results file")
        kw["weights"] = weights
    if spec.signal_arg is not None:
        signal = signal if signal is not None else outlier_ratios
        if signal is None:
            raise ValueError(f"{spec.label} needs calibration activations (its {spec.signal_arg} come from the "
                             f"calibration input norms); load a model, not a results file")
        kw[spec.signal_arg] = signal
    return kw


# ----------------------------------------------------------------------------------------------------- files
