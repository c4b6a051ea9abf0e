""":func:`allocate`: per-matrix metrics + a global target S → one sparsity per prunable matrix (methods and bounds
as described in :mod:`pruning.allocation`)."""
from __future__ import annotations

from typing import Any, Mapping, Optional, Union

import numpy as np
import pandas as pd


from pruning.allocation.mappings import (GRANULARITIES, MAPPINGS, TOL, AllocationError, alphapruning_ratios, as_numpy_abs,
                                         block_of, bound_note, check_choice, check_direction, check_method,
                                         check_sparsity, erk_factors, fit_mean, lamp_scores_sorted, threshold_fit,
                                         SPECTRAL_METHODS, WEIGHT_METHODS)

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


# --------------------------------------------------------------------------------------------- the mean solvers
def _drop_flagged(df: pd.DataFrame, m: np.ndarray, method: str, granularity: str, notes: list) -> np.ndarray:
    """``m`` with the flagged fits (:func:`spectra.analyze.flagged_fits`) replaced by the mean of the other matrices
    of their block (NaN for the block-mean step to skip them); blocks whose fits are all flagged keep them."""
    from spectra.analyze import flagged_fits

    if method != "alphapruning":
        raise ValueError(f"exclude_flagged applies to method 'alphapruning' (its power-law fits), not {method!r}")
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


# --------------------------------------------------------------------------------------------------- allocate
def allocate(metrics: pd.DataFrame, method: str, sparsity: float, *, metric: Optional[str] = None,
             granularity: str = "block", mapping: str = "linear", lam: float = 0.3,
             direction: Union[str, bool] = "higher_more", max_sparsity: float = 0.99, min_sparsity: float = 0.0,
             clip: bool = True, weights: Optional[Mapping[str, Any]] = None,
             outlier_ratios: Optional[Mapping[Union[str, int], float]] = None, owl_lambda: float = 0.08,
             owl_M: float = 5.0, exclude_flagged: bool = False) -> pd.DataFrame:
    """Per-matrix sparsities with parameter-weighted mean ``sparsity`` (Contract 2).

    Args:
        metrics: one row per matrix (spectra Contract 1): ``longname``, ``num_params`` (or ``rows``/``cols``),
            ``block``, ``role`` and metric columns. Rows outside transformer blocks (block < 0) are excluded.
        method: one of :data:`ALLOCATION_METHODS`.
        sparsity: target S in [0, 1).
        metric: metric column for ``alphapruning`` (default ``alpha``, AlphaPruning's PL_Alpha_Hill, which it fits
            with the ``peak`` xmin rule). ``stable_rank`` always uses the ``stable_rank`` column.
        granularity: ``block`` (default; each matrix's metric replaced by the plain mean over its block, as the
            reference's ``block_wise`` mode) or ``matrix``. Also selects OWL's ratio level.
        mapping: ``linear`` (reference formula) or ``log`` (the map applied to log m).
        lam: AlphaPruning's range λ ("epsilon" in its code), 0 ≤ λ ≤ 1: r ∈ [1 − λ, 1 + λ] before scaling.
        direction: ``higher_more`` (default: higher α ⇒ less well trained ⇒ more sparsity) or ``lower_more``;
            a bool means True = higher_more.
        max_sparsity, min_sparsity: bounds of every value when ``clip`` (default True); see the module docstring.
        clip: False = the faithful formula without bounds (values may leave [0, 1] for AlphaPruning/OWL).
        weights: {longname: W} for ``global`` and ``lamp``.
        outlier_ratios: OWL's D per block ({int: D}) or per matrix ({longname: D}, needs granularity="matrix"),
            e.g. from :func:`owl_outlier_ratios`.
        owl_lambda, owl_M: OWL's λ (range ±λ around S) and M (M is recorded; it is used by owl_outlier_ratios).
        exclude_flagged: ``alphapruning`` only, **our addition** (off by default: the reference averages every
            fit). Matrices whose fit is flagged as likely spurious (α above ``spectra.hill.SPURIOUS_ALPHA``,
            :func:`spectra.analyze.flagged_fits`, read from the ``alpha`` column) are left out of their block's
            mean metric (they still get their block's sparsity); with ``granularity="matrix"`` a flagged matrix
            takes the mean of the others in its block. A block whose fits are all flagged keeps them.

    Returns:
        DataFrame ``longname, block, role, num_params, metric, sparsity`` in input order; ``metric`` is the value
        the method used (block mean for block mode, OWL's D, ERK's factor; NaN for uniform/global/lamp).
        ``attrs["allocation"]`` holds the settings, the achieved ``mean_sparsity`` and a ``note`` when a bound
        bound or something noteworthy happened.

    Raises:
        ValueError: bad arguments (unknown method, sparsity outside [0, 1), missing column, ...).
        AllocationError: the target cannot be met within the bounds.
    """
    method = check_method(method)
    S = check_sparsity(sparsity)
    check_choice("granularity", granularity, GRANULARITIES)
    check_choice("mapping", mapping, MAPPINGS)
    higher_more = check_direction(direction)
    hi, lo = float(max_sparsity), float(min_sparsity)
    if not (0.0 < hi <= 1.0):
        raise ValueError(f"max_sparsity must be in (0, 1], got {max_sparsity}")
    if not (0.0 <= lo <= hi):
        raise ValueError(f"min_sparsity must be in [0, max_sparsity={hi}], got {min_sparsity}")
    if not (0.0 <= float(lam) <= 1.0):
        raise ValueError(f"lam must be in [0, 1] (ratios span [1 − lam, 1 + lam]), got {lam}; the paper uses 0.2–0.5")
    if owl_lambda < 0:
        raise ValueError(f"owl_lambda must be >= 0 (OWL default 0.08), got {owl_lambda}")
    if method == "stable_rank":
        if metric not in (None, "stable_rank"):
            raise ValueError(f"method 'stable_rank' uses the 'stable_rank' column; for metric {metric!r} use "
                             f"method 'alphapruning'")
        metric = "stable_rank"
    elif metric is None:
        metric = "alpha"

    df, excluded = _prepare(metrics)
    names = df["longname"].tolist()
    p = df["num_params"].to_numpy(dtype=np.float64)
    notes: list[str] = []
    settings: dict[str, Any] = {"method": method, "sparsity": S}
    metric_used = np.full(len(df), np.nan)
    if not clip:
        lo_eff, hi_eff = 0.0, 1.0
    else:
        lo_eff, hi_eff = lo, hi

    if method == "uniform":
        if clip and not (lo <= S <= hi):
            raise AllocationError(f"target sparsity {S:g} is outside [min_sparsity={lo:g}, max_sparsity={hi:g}]; "
                                  f"raise max_sparsity or lower the target")
        values = np.full(len(df), S)

    elif method in SPECTRAL_METHODS:
        if metric not in df.columns:
            avail = [c for c in df.columns if c not in ("longname", "param", "block", "role", "layer_id") and
                     pd.api.types.is_numeric_dtype(df[c])]
            raise ValueError(f"metrics have no column {metric!r}; numeric columns available: {', '.join(avail)}")
        m = pd.to_numeric(df[metric], errors="coerce").to_numpy(dtype=np.float64)
        if np.isinf(m).any():
            m = np.where(np.isinf(m), np.nan, m)
        n_nan = int(np.isnan(m).sum())
        if exclude_flagged:
            m = _drop_flagged(df, m, method, granularity, notes)
        if granularity == "block":
            m = pd.Series(m).groupby(df["block"].to_numpy()).transform("mean").to_numpy()  # NaN-skipping mean
            if n_nan:
                notes.append(f"{metric} missing for {n_nan} matrices; block means use the others")
        if np.isnan(m).any():
            bad = names[int(np.argmax(np.isnan(m)))]
            raise AllocationError(f"metric {metric!r} is NaN for {int(np.isnan(m).sum())} matrices (e.g. {bad}); "
                                  f"refit them, use granularity='block' or another metric")
        if metric == "alpha" and "xmin_rule" in df.columns:
            rules = sorted(set(df["xmin_rule"].dropna().astype(str)))
            if rules and rules != ["peak"]:
                notes.append(f"alpha was fitted with xmin rule {'/'.join(rules)}; AlphaPruning uses 'peak'")
        metric_used = m
        r = alphapruning_ratios(m, float(lam), mapping, higher_more)
        if np.ptp(m) == 0:
            notes.append(f"{metric} is constant over the {'blocks' if granularity == 'block' else 'matrices'}: "
                         f"uniform allocation")
        denom = r @ p
        raw = r * (S * p.sum() / denom) if denom > 0 else np.full(len(df), np.nan)
        if not clip:
            values = raw
        else:
            values, _ = fit_mean(r, p, S, lo, hi, "scale")
        settings.update(metric=metric, granularity=granularity, mapping=mapping, lam=float(lam),
                        direction="higher_more" if higher_more else "lower_more")
        if exclude_flagged:
            settings["exclude_flagged"] = True

    elif method == "owl":
        if outlier_ratios is None:
            raise ValueError("method 'owl' needs outlier_ratios (OWL's D per block): compute them from calibration "
                             "activations with owl_outlier_ratios(weights, input_sq_norms)")
        keys = list(outlier_ratios.keys())
        by_block = all(isinstance(k, (int, np.integer)) and not isinstance(k, bool) for k in keys)
        by_name = all(isinstance(k, str) for k in keys)
        if not keys or not (by_block or by_name):
            raise ValueError("outlier_ratios must be keyed by block index (int) or by longname (str), not mixed")
        if by_block:
            missing = sorted(set(df["block"]) - {int(k) for k in keys})
            if missing:
                raise ValueError(f"outlier_ratios has no value for block(s) {missing[:5]}; compute every block")
            D = np.array([float(outlier_ratios[int(b)]) for b in df["block"]])
            level = "block"
        else:
            if granularity == "block":
                raise ValueError("outlier_ratios are per matrix but granularity='block'; pass per-block ratios "
                                 "(owl_outlier_ratios(..., granularity='block'), what OWL does) or "
                                 "granularity='matrix'")
            missing = [n for n in names if n not in outlier_ratios]
            if missing:
                raise ValueError(f"outlier_ratios has no value for {missing[0]!r} ({len(missing)} missing)")
            D = np.array([float(outlier_ratios[n]) for n in names])
            level = "matrix"
        if not np.isfinite(D).all():
            raise AllocationError("outlier_ratios contain NaN/inf; recompute them")
        span = D.max() - D.min()
        Dt = np.zeros_like(D) if span <= 0 else (D - D.min()) / span * (2.0 * owl_lambda)
        if span <= 0:
            notes.append("outlier ratios are all equal: uniform allocation")
        base = -Dt  # s = S − D̃ + c, c = (weighted) mean of D̃ when no bound binds
        raw = base + (S * p.sum() - base @ p) / p.sum()
        if not clip:
            values = raw
        else:
            values, _ = fit_mean(base, p, S, lo, hi, "shift")
        metric_used = D
        settings.update(owl_lambda=float(owl_lambda), owl_M=float(owl_M), granularity=level)

    elif method == "erk":
        if {"rows", "cols"} <= set(df.columns):
            rows, cols = df["rows"].to_numpy(), df["cols"].to_numpy()
        elif weights is not None:
            shapes = [tuple(_lookup(weights, n).shape) for n in names]
            rows, cols = np.array([s[0] for s in shapes]), np.array([s[1] for s in shapes])
        else:
            raise ValueError("method 'erk' needs 'rows' and 'cols' columns (or weights) to know each shape")
        k = erk_factors(rows, cols)
        # ERK proper: density = clip(c·k, 0, 1) (a layer that would exceed density 1 stays dense, the rest rescaled)
        raw_d, _ = fit_mean(k, p, 1.0 - S, 0.0, 1.0, "scale", what="density")
        raw = 1.0 - raw_d
        dense = int((k * ((1.0 - S) * p.sum() / (k @ p)) > 1.0 + TOL).sum())
        if dense:
            notes.append(f"{dense} matrices would exceed density 1: kept dense and the rest rescaled (ERK's rule)")
        if clip:
            dens, _ = fit_mean(k, p, 1.0 - S, 1.0 - hi, 1.0 - lo, "scale", what="density")
            values = 1.0 - dens
        else:
            values = raw
        metric_used = k

    elif method in WEIGHT_METHODS:
        if weights is None:
            raise ValueError(f"method {method!r} needs the weights: weights={{longname: W}} for every matrix")
        sorted_scores = []
        for n, npar in zip(names, p):
            w = _lookup(weights, n)
            if int(np.prod(tuple(w.shape))) != int(npar):
                raise ValueError(f"{n}: weight has {int(np.prod(tuple(w.shape)))} entries but num_params is "
                                 f"{int(npar)}; the metrics and weights are from different models")
            sorted_scores.append(np.sort(as_numpy_abs(w)) if method == "global" else lamp_scores_sorted(w))
        values, thr, tnote = threshold_fit(sorted_scores, S, lo_eff, hi_eff, names)
        if tnote:
            notes.append(tnote + " — mean kept")
        settings["threshold"] = thr
        raw = values

    if method != "uniform" and not (method in WEIGHT_METHODS and clip):
        note = bound_note(raw, lo, hi, names)
        if note and clip:
            at_hi, at_lo = int((values >= hi - TOL).sum()), int((values <= lo + TOL).sum())
            notes.append(f"{note} — redistributed, mean kept ({at_hi} at max, {at_lo} at min after redistribution)")
        elif note:
            notes.append(note + " — not clipped (clip=False, faithful)")
    settings.update(max_sparsity=hi, min_sparsity=lo, clip=bool(clip))
    if excluded:
        settings["excluded"] = len(excluded)
        settings["excluded_examples"] = excluded[:3]
    settings["mean_sparsity"] = float(values @ p / p.sum())
    if notes:
        settings["note"] = "; ".join(notes)
    out = pd.DataFrame({
        "longname": df["longname"].astype(str).to_numpy(),
        "block": df["block"].to_numpy(dtype=np.int64),
        "role": df["role"].astype(str).to_numpy(),
        "num_params": df["num_params"].to_numpy(dtype=np.int64),
        "metric": np.asarray(metric_used, dtype=np.float64),
        "sparsity": np.asarray(values, dtype=np.float64),
    })
    out.attrs["allocation"] = settings
    return out


def settings_read(method: str) -> frozenset:
    """The settings among ``lam``, ``mapping``, ``granularity``, ``metric`` and ``exclude_flagged`` that
    :func:`allocation_options` passes on for ``method`` (the others do not change its allocation)."""
    method = check_method(method)
    if method in SPECTRAL_METHODS:
        return frozenset({"lam", "mapping", "granularity"} | ({"metric", "exclude_flagged"}
                                                              if method == "alphapruning" else set()))
    return frozenset({"granularity"}) if method == "owl" else frozenset()


def allocation_options(method: str, *, lam: float = 0.3, mapping: str = "linear", granularity: str = "block",
                       metric: Optional[str] = None, exclude_flagged: bool = False, min_sparsity: float = 0.0,
                       max_sparsity: float = 0.99, weights: Optional[Mapping[str, Any]] = None,
                       outlier_ratios: Optional[Mapping[Union[str, int], float]] = None,
                       **owl: float) -> dict[str, Any]:
    """The keyword arguments of :func:`allocate` that ``method`` reads, from one set of settings: the bounds always;
    λ / mapping / granularity for :data:`SPECTRAL_METHODS` (+ metric and exclude_flagged for AlphaPruning);
    ``weights`` for :data:`WEIGHT_METHODS`; ``outlier_ratios``, granularity and ``owl`` (``owl_lambda``, ``owl_M``)
    for OWL. ValueError (one line) when the method needs ``weights`` or ``outlier_ratios`` and they are None."""
    method = check_method(method)
    kw: dict[str, Any] = dict(min_sparsity=min_sparsity, max_sparsity=max_sparsity)
    if method in SPECTRAL_METHODS:
        kw.update(lam=lam, mapping=mapping, granularity=granularity)
        if method == "alphapruning":
            kw.update(metric=metric, exclude_flagged=bool(exclude_flagged))
    elif method in WEIGHT_METHODS:
        if weights is None:
            raise ValueError(f"{method} needs the model's weights; load a model, not a results file")
        kw["weights"] = weights
    elif method == "owl":
        if outlier_ratios is None:
            raise ValueError("OWL needs calibration activations; load a model, not a results file")
        kw.update(outlier_ratios=outlier_ratios, granularity=granularity, **owl)
    return kw


def _lookup(weights: Mapping[str, Any], name: str) -> Any:
    if name in weights:
        return weights[name]
    if name + ".weight" in weights:
        return weights[name + ".weight"]
    raise ValueError(f"weights has no tensor for {name!r}; key it by longname (module path)")


# ----------------------------------------------------------------------------------------------------- files
