"""Layer-wise sparsity allocation: per-matrix metrics + a global target S → one sparsity per prunable matrix.

Every method returns sparsities whose **parameter-weighted mean equals S** (to rounding) and, by default, lie in
``[min_sparsity, max_sparsity]``. Methods (see :data:`ALLOCATION_METHODS` and docs/REFERENCE.md "Allocation"):

* ``uniform``       — every matrix gets S.
* ``alphapruning``  — Lu et al., "AlphaPruning", NeurIPS 2024: r_i = (m_i − min m)/(max m − min m)·2λ + 1 − λ over a
  heavy-tail metric m (default PL_Alpha_Hill ``alpha``, block-averaged), then s_i = r_i · S·Σp / Σp·r.
* ``stable_rank``   — the same mapping over the ``stable_rank`` column (a peer metric in AlphaPruning's ablation),
  higher stable rank ⇒ more sparsity. AlphaPruning's code (``prune_vit_ww``, used for its metric comparison) feeds
  every weightwatcher metric, stable_rank included, through the same map without flipping it; this also matches the
  HT-SR reading: a better-trained, heavier-tailed matrix concentrates ‖W‖F² in a few large eigenvalues, i.e. has a
  *lower* stable rank Σλ/λmax, like a lower α. Pass ``direction="lower_more"`` for the opposite.
* ``owl``           — Yin et al., "Outlier Weighed Layerwise sparsity", ICML 2024: s_l = S − D̃_l + mean D̃ with
  D̃ = min-max-normalised outlier ratios scaled to [0, 2λ]. OWL's code takes the plain mean over blocks (equal
  sizes in a decoder, so it equals the parameter-weighted mean used here) and replaces a sparsity ≤ 0 by 0.01
  without rebalancing; here bounds are handled like every other method (below).
* ``erk``           — Evci et al., "Rigging the Lottery", ICML 2020: density ∝ (n_in + n_out)/(n_in·n_out).
* ``global``        — one |W| threshold across all matrices (global magnitude).
* ``lamp``          — Lee et al., "Layer-adaptive sparsity for the Magnitude-based Pruning", ICLR 2021: one global
  threshold on score(u) = w_u² / Σ_{v≥u} w_v² (weights of a matrix sorted by |w| ascending).

Bounds. A method's raw formula can leave ``[min_sparsity, max_sparsity]`` (AlphaPruning's reference code has no
clipping at all: with λ = 0.5 and S = 0.8 some r_i·scale exceed 1). Two behaviours are exposed:

* ``clip=True`` (default, corrected): the method keeps its own family of solutions and only its free scalar is
  re-solved so that every value is inside the bounds *and* the mean is still S — multiplicative scale for
  AlphaPruning / stable_rank (s_i = clip(c·r_i)), additive shift for OWL (s_i = clip(S − D̃_i + c)), density scale
  for ERK (d_i = clip(c·k_i)), and the common threshold for global / LAMP (capped matrices stop at the cap, the
  threshold moves for the others). The result records ``note`` in ``attrs["allocation"]`` whenever a bound bound.
  A target that no member of the family reaches raises :class:`AllocationError`.
* ``clip=False`` (faithful): the raw published formula, no bounds (ERK still keeps density ≤ 1, global/LAMP are
  within [0, 1] by construction); out-of-range values are reported in ``note``.

Sparsities are real numbers, not integer counts: the layer pruner rounds ``s·numel`` itself. Global / LAMP give the
weight sitting exactly on the threshold a fractional share so that the mean is S exactly.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
import pandas as pd

from spectra.results import jsonable

#: Allocation methods accepted by :func:`allocate`.
ALLOCATION_METHODS: tuple[str, ...] = ("uniform", "alphapruning", "owl", "erk", "global", "lamp", "stable_rank")
#: the spectral allocations: computed from spectra metrics, the only ones that read λ, mapping and metric
SPECTRAL_METHODS: tuple[str, ...] = ("alphapruning", "stable_rank")
#: allocations that read every weight of the model (``weights=``)
WEIGHT_METHODS: tuple[str, ...] = ("global", "lamp")
GRANULARITIES = ("block", "matrix")
MAPPINGS = ("linear", "log")
DIRECTIONS = ("higher_more", "lower_more")
OUTPUT_COLUMNS = ["longname", "block", "role", "num_params", "metric", "sparsity"]

_TOL = 1e-12


class AllocationError(ValueError):
    """The requested allocation cannot be produced (infeasible target, unusable metrics); one-line message."""


# ----------------------------------------------------------------------------------------------------- validation
def _check_sparsity(sparsity: Any) -> float:
    try:
        s = float(sparsity)
    except (TypeError, ValueError):
        raise ValueError(f"sparsity must be a number in [0, 1), got {sparsity!r}") from None
    if not (0.0 <= s < 1.0):
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity!r}; e.g. 0.7 for 70% of the weights removed")
    return s


def _check_method(method: Any) -> str:
    if method not in ALLOCATION_METHODS:
        raise ValueError(f"unknown allocation method {method!r}; choose one of: {', '.join(ALLOCATION_METHODS)}")
    return method


def _check_direction(direction: Union[str, bool]) -> bool:
    """``"higher_more"``/True → True (higher metric ⇒ more sparsity); ``"lower_more"``/False → False."""
    if isinstance(direction, (bool, np.bool_)):
        return bool(direction)
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r}; choose one of: {', '.join(DIRECTIONS)} (or a bool, "
                         f"True = higher_more)")
    return direction == "higher_more"


def _check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of: {', '.join(choices)}")
    return value


def _block_of(longname: str) -> int:
    """Transformer block index of a module path (same rule as spectra.weights.classify), -1 if none."""
    from spectra.weights import classify

    return classify(longname)[1]


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
        df["block"] = [_block_of(n) for n in df["longname"]]
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
def _fit_mean(base: np.ndarray, p: np.ndarray, target: float, lo: float, hi: float, kind: str,
              what: str = "sparsity") -> tuple[np.ndarray, float]:
    """Solve for c with Σ p_i·f_i(c) = target·Σ p_i, f_i(c) = clip(c·b_i, lo, hi) ("scale", b_i ≥ 0, c ≥ 0)
    or clip(b_i + c, lo, hi) ("shift"). g(c) is piecewise linear and non-decreasing: found exactly from its
    breakpoints. Returns (values, c). Raises AllocationError when target is outside g's range."""
    b = np.asarray(base, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    P = p.sum()
    T = target * P
    if kind == "scale":
        if (b < 0).any():
            raise AllocationError("internal: negative base value in a multiplicative allocation")
        pos = b > 0
        cs = np.concatenate([[0.0], lo / b[pos], hi / b[pos]])

        def f(c):
            return np.clip(np.multiply.outer(np.atleast_1d(c), b), lo, hi)
    elif kind == "shift":
        cs = np.concatenate([lo - b, hi - b])

        def f(c):
            return np.clip(np.add.outer(np.atleast_1d(c), b), lo, hi)
    else:  # pragma: no cover - internal
        raise ValueError(kind)
    cs = np.unique(cs)
    gs = f(cs) @ p
    if T < gs[0] - 1e-9 * P or T > gs[-1] + 1e-9 * P:
        raise AllocationError(
            f"target {what} {target:g} cannot be met: within [{lo:g}, {hi:g}] this allocation reaches mean "
            f"{what} only in [{gs[0] / P:.6g}, {gs[-1] / P:.6g}]; change the target, max_sparsity/min_sparsity "
            f"or the method's range (lam)")
    j = int(np.searchsorted(gs, T, side="left"))
    if j <= 0:
        c = cs[0]
    elif j >= len(cs):
        c = cs[-1]
    else:
        g0, g1 = gs[j - 1], gs[j]
        c = cs[j] if g1 == g0 else cs[j - 1] + (T - g0) * (cs[j] - cs[j - 1]) / (g1 - g0)
    values = f(c)[0]
    # polish the last rounding error on the free entries (those strictly inside the bounds)
    free = (values > lo + _TOL) & (values < hi - _TOL)
    resid = T - values @ p
    if free.any() and abs(resid) > 0:
        values[free] = np.clip(values[free] + resid / p[free].sum(), lo, hi)
    return values, float(c)


def _bound_note(raw: np.ndarray, lo: float, hi: float, names: Sequence[str], what: str = "sparsity") -> Optional[str]:
    """Describe the entries of an unbounded solution that fall outside [lo, hi] (None if none)."""
    above = raw > hi + _TOL
    below = raw < lo - _TOL
    parts = []
    if above.any():
        parts.append(f"{int(above.sum())} matrices above max {what} {hi:g} (raw up to {raw.max():.4g}, "
                     f"e.g. {names[int(np.argmax(raw))]})")
    if below.any():
        parts.append(f"{int(below.sum())} matrices below min {what} {lo:g} (raw down to {raw.min():.4g}, "
                     f"e.g. {names[int(np.argmin(raw))]})")
    return "; ".join(parts) or None


# ---------------------------------------------------------------------------------- metric → ratio mappings
def alphapruning_ratios(metric: np.ndarray, lam: float = 0.3, mapping: str = "linear",
                        higher_more: bool = True) -> np.ndarray:
    """AlphaPruning's un-normalised ratios r_i = (x_i − min x)/(max x − min x)·(s2 − s1) + s1, s1 = 1 − λ, s2 = 1 + λ.

    x = m (``linear``, the reference formula) or log m (``log``, tried in the paper's rebuttal); x = −x when
    ``higher_more`` is False (lower metric ⇒ more sparsity). A constant metric gives r_i = 1 for all (uniform; the
    reference code would divide by zero).
    """
    m = np.asarray(metric, dtype=np.float64)
    if mapping == "log":
        if (m <= 0).any():
            raise AllocationError(f"mapping='log' needs positive metric values, the smallest is {m.min():g}; "
                                  f"use mapping='linear'")
        x = np.log(m)
    else:
        x = m.copy()
    if not higher_more:
        x = -x
    span = x.max() - x.min()
    u = np.full_like(x, 0.5) if span <= 0 else (x - x.min()) / span
    s1, s2 = 1.0 - lam, 1.0 + lam
    return u * (s2 - s1) + s1


def erk_factors(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Erdős–Rényi-Kernel raw density factor (n_in + n_out)/(n_in·n_out) of each (out, in) matrix (Evci et al.)."""
    r = np.asarray(rows, dtype=np.float64)
    c = np.asarray(cols, dtype=np.float64)
    return (r + c) / (r * c)


def _as_numpy_abs(w: Any) -> np.ndarray:
    """|w| flattened as a float32/float64 numpy array (torch tensors of any float dtype or arrays)."""
    if hasattr(w, "detach"):  # a torch tensor (torch is imported lazily: the CLI does not need it)
        import torch

        t = w.detach().cpu()
        if t.dtype not in (torch.float32, torch.float64):
            t = t.to(torch.float32)
        return np.abs(t.numpy().ravel())
    a = np.asarray(w)
    if a.dtype not in (np.float32, np.float64):
        a = a.astype(np.float32)
    return np.abs(a.ravel())


def lamp_scores_sorted(w: Any) -> np.ndarray:
    """LAMP scores of one matrix in ascending-|w| order: score(u) = w_u² / Σ_{v≥u} w_v² (float64; 0/0 → 0).

    (Lee et al., ICLR 2021.) The sequence is non-decreasing, the last score is 1.
    """
    sq = np.sort(_as_numpy_abs(w)).astype(np.float64)  # sort in the input precision (faster), square in fp64
    np.square(sq, out=sq)
    suffix = np.cumsum(sq[::-1])[::-1]  # Σ_{v≥u} w_v²: non-increasing, so sq/suffix stays non-decreasing
    with np.errstate(invalid="ignore", divide="ignore"):
        np.divide(sq, suffix, out=sq)
    sq[np.isnan(sq)] = 0.0  # 0/0 happens only in an all-zero matrix
    return sq


def _float_key(x: np.ndarray) -> np.ndarray:
    """Monotone integer key of non-negative floats (their IEEE bit pattern)."""
    return x.view(np.int32 if x.dtype == np.float32 else np.int64)


def _threshold_fit(sorted_scores: Sequence[np.ndarray], S: float, lo: float, hi: float,
                   names: Sequence[str]) -> tuple[np.ndarray, float, Optional[str]]:
    """One global threshold t over per-matrix ascending score arrays, honouring per-matrix bounds.

    Matrix i prunes clip(#{scores_i < t}, lo·n_i, hi·n_i) entries; t is the smallest data value with enough
    pruned entries; the remainder up to S·Σn is taken from the entries equal to t, matrix by matrix in input order
    (= a stable sort of the concatenated scores), fractionally for the last one. Equivalent to greedily pruning
    the globally lowest scores one at a time and skipping matrices that reached their cap, after first pruning
    the lo·n_i lowest of each matrix. Returns (sparsities, t, note).
    """
    n = np.array([len(s) for s in sorted_scores], dtype=np.float64)
    N = n.sum()
    T = S * N
    lo_n, hi_n = lo * n, hi * n
    if T < lo_n.sum() - 1e-9 * N or T > hi_n.sum() + 1e-9 * N:
        raise AllocationError(f"target sparsity {S:g} cannot be met within [{lo:g}, {hi:g}]; "
                              f"change the target or max_sparsity/min_sparsity")
    dtype = np.result_type(*[s.dtype for s in sorted_scores])
    arrays = [s.astype(dtype, copy=False) for s in sorted_scores]
    if any(a.size and (np.isnan(a).any() or a[0] < 0) for a in arrays):
        raise AllocationError("scores must be finite and non-negative (NaN weights?)")
    ikey = np.int32 if dtype == np.float32 else np.int64

    def counts(t, side):
        return np.array([np.searchsorted(a, t, side=side) for a in arrays], dtype=np.float64)

    def g_le(t):
        return np.clip(counts(t, "right"), lo_n, hi_n).sum()

    top = max(a[-1] for a in arrays if a.size)
    if g_le(dtype.type(0.0)) >= T - 1e-9:
        t = dtype.type(0.0)
    else:  # smallest key k with g_le(value(k)) >= T; g_le(top) = Σ hi_n >= T
        a_k, b_k = int(_float_key(np.array([0.0], dtype=dtype))[0]), int(_float_key(np.array([top], dtype=dtype))[0])
        while b_k - a_k > 1:
            mid = (a_k + b_k) // 2
            if g_le(np.array([mid], dtype=ikey).view(dtype)[0]) >= T - 1e-9:
                b_k = mid
            else:
                a_k = mid
        t = np.array([b_k], dtype=ikey).view(dtype)[0]
    c_lt, c_le = counts(t, "left"), counts(t, "right")
    base = np.clip(c_lt, lo_n, hi_n)
    room = np.clip(c_le, lo_n, hi_n) - base
    rest = T - base.sum()
    extra = np.zeros_like(base)
    for i in range(len(arrays)):
        if rest <= 0:
            break
        take = min(rest, room[i])
        extra[i] = take
        rest -= take
    pruned = base + extra
    note_parts = []
    capped = c_lt > hi_n + _TOL
    raised = c_le < lo_n - _TOL
    if capped.any():
        note_parts.append(f"{int(capped.sum())} matrices capped at max sparsity {hi:g} (e.g. "
                          f"{names[int(np.argmax(capped))]}); threshold recomputed over the others")
    if raised.any():
        note_parts.append(f"{int(raised.sum())} matrices raised to min sparsity {lo:g}")
    return pruned / n, float(t), ("; ".join(note_parts) or None)


# ------------------------------------------------------------------------------------------------------- OWL
def owl_outlier_ratios(weights: Mapping[str, Any], input_sq_norms: Mapping[str, Any], M: float = 5.0, *,
                       granularity: str = "block", blocks: Optional[Mapping[str, int]] = None
                       ) -> dict[Union[int, str], float]:
    """OWL's layer-wise outlier ratio D: the share of Wanda scores |W_ij|·‖X_j‖₂ above M × their mean.

    ``input_sq_norms[name]`` is Σ_t x_tj² per input feature (‖X_j‖₂²). ``granularity="block"`` (default, what OWL's
    code does: ``check_outlier_mean`` on the concatenated scores of all linear layers of a decoder block) returns
    ``{block: D}``; ``"matrix"`` returns ``{longname: D}`` with each matrix's own mean. D is a fraction (OWL's code
    reports percent; the min-max normalisation in :func:`allocate` removes the scale). OWL's ``scaler_row`` is the
    per-token mean Σ_t x²/T instead of the sum: a common factor within a block, so D is the same.
    (Yin et al., "Outlier Weighed Layerwise Sparsity", ICML 2024.)
    """
    import torch

    _check_choice("granularity", granularity, GRANULARITIES)
    if M <= 0:
        raise ValueError(f"M must be positive (OWL's default 5), got {M}")
    if not weights:
        raise ValueError("weights is empty; pass {longname: W (out, in)} for the prunable matrices")
    scores: dict[str, torch.Tensor] = {}
    for name, W in weights.items():
        if name not in input_sq_norms:
            raise ValueError(f"input_sq_norms has no entry for {name!r}; collect Σ x² per input feature for it")
        W = torch.as_tensor(W).detach().to(torch.float64)
        x = torch.as_tensor(input_sq_norms[name]).detach().to(torch.float64).reshape(-1)
        if W.ndim != 2 or x.numel() != W.shape[1]:
            raise ValueError(f"{name}: input_sq_norms has {x.numel()} entries but W has shape {tuple(W.shape)} "
                             f"(need one per input column)")
        scores[name] = W.abs() * x.clamp_min(0).sqrt()[None, :]
    if granularity == "matrix":
        return {name: float((s > M * s.mean()).sum().item() / s.numel()) for name, s in scores.items()}
    groups: dict[int, list[str]] = {}
    for name in scores:
        b = int(blocks[name]) if blocks is not None and name in blocks else _block_of(name)
        if b < 0:
            raise ValueError(f"cannot tell the transformer block of {name!r}; pass blocks={{longname: index}}")
        groups.setdefault(b, []).append(name)
    out: dict[Union[int, str], float] = {}
    for b, names in sorted(groups.items()):
        total = sum(scores[nm].sum().item() for nm in names)
        count = sum(scores[nm].numel() for nm in names)
        thr = M * total / count
        out[b] = float(sum((scores[nm] > thr).sum().item() for nm in names) / count)
    return out


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
    method = _check_method(method)
    S = _check_sparsity(sparsity)
    _check_choice("granularity", granularity, GRANULARITIES)
    _check_choice("mapping", mapping, MAPPINGS)
    higher_more = _check_direction(direction)
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

    elif method in ("alphapruning", "stable_rank"):
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
            values, _ = _fit_mean(r, p, S, lo, hi, "scale")
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
            values, _ = _fit_mean(base, p, S, lo, hi, "shift")
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
        raw_d, _ = _fit_mean(k, p, 1.0 - S, 0.0, 1.0, "scale", what="density")
        raw = 1.0 - raw_d
        dense = int((k * ((1.0 - S) * p.sum() / (k @ p)) > 1.0 + _TOL).sum())
        if dense:
            notes.append(f"{dense} matrices would exceed density 1: kept dense and the rest rescaled (ERK's rule)")
        if clip:
            dens, _ = _fit_mean(k, p, 1.0 - S, 1.0 - hi, 1.0 - lo, "scale", what="density")
            values = 1.0 - dens
        else:
            values = raw
        metric_used = k

    elif method in ("global", "lamp"):
        if weights is None:
            raise ValueError(f"method {method!r} needs the weights: weights={{longname: W}} for every matrix")
        sorted_scores = []
        for n, npar in zip(names, p):
            w = _lookup(weights, n)
            if int(np.prod(tuple(w.shape))) != int(npar):
                raise ValueError(f"{n}: weight has {int(np.prod(tuple(w.shape)))} entries but num_params is "
                                 f"{int(npar)}; the metrics and weights are from different models")
            sorted_scores.append(np.sort(_as_numpy_abs(w)) if method == "global" else lamp_scores_sorted(w))
        values, thr, tnote = _threshold_fit(sorted_scores, S, lo_eff, hi_eff, names)
        if tnote:
            notes.append(tnote + " — mean kept")
        settings["threshold"] = thr
        raw = values

    if method != "uniform" and not (method in ("global", "lamp") and clip):
        note = _bound_note(raw, lo, hi, names)
        if note and clip:
            at_hi, at_lo = int((values >= hi - _TOL).sum()), int((values <= lo + _TOL).sum())
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


def allocation_options(method: str, *, lam: float = 0.3, mapping: str = "linear", granularity: str = "block",
                       metric: Optional[str] = None, exclude_flagged: bool = False, min_sparsity: float = 0.0,
                       max_sparsity: float = 0.99, weights: Optional[Mapping[str, Any]] = None,
                       outlier_ratios: Optional[Mapping[Union[str, int], float]] = None,
                       **owl: float) -> dict[str, Any]:
    """The keyword arguments of :func:`allocate` that ``method`` reads, from one set of settings: the bounds always;
    λ / mapping / granularity for :data:`SPECTRAL_METHODS` (+ metric and exclude_flagged for AlphaPruning);
    ``weights`` for :data:`WEIGHT_METHODS`; ``outlier_ratios``, granularity and ``owl`` (``owl_lambda``, ``owl_M``)
    for OWL. ValueError (one line) when the method needs ``weights`` or ``outlier_ratios`` and they are None."""
    method = _check_method(method)
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


def allocation_to_json(df: pd.DataFrame) -> dict:
    """Contract 2 JSON: ``{"method", "sparsity", "settings": {...}, "layers": {longname: sparsity}}``."""
    info = dict(df.attrs.get("allocation", {}))
    if "longname" not in df.columns or "sparsity" not in df.columns:
        raise ValueError("not an allocation table: need 'longname' and 'sparsity' columns (use allocate())")
    method = info.pop("method", None)
    sparsity = info.pop("sparsity", None)
    return jsonable({
        "method": method,
        "sparsity": sparsity,
        "settings": info,
        "layers": {str(n): float(s) for n, s in zip(df["longname"], df["sparsity"])},
    })


def save_allocation(df: pd.DataFrame, path: Union[str, Path], overwrite: bool = False) -> Path:
    """Write an allocation as JSON (``.json``, Contract 2) or CSV (``.csv``: a ``# {json header}`` line, then the
    table). An existing file is never replaced unless ``overwrite``."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".json", ".csv"):
        raise ValueError(f"unknown allocation file type {path.suffix!r} for {path}; use .json or .csv")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True (--overwrite) or choose another path")
    doc = allocation_to_json(df)
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".json":
        path.write_text(json.dumps(doc, indent=1) + "\n")
    else:
        header = {k: doc[k] for k in ("method", "sparsity", "settings")}
        with open(path, "w", newline="") as fh:
            fh.write("# " + json.dumps(header) + "\n")
            df[[c for c in OUTPUT_COLUMNS if c in df.columns]].to_csv(fh, index=False)
    return path


class LoadedAllocation(dict):
    """``{longname: sparsity}`` read from an allocation file, with ``method``, ``sparsity`` and ``settings``."""

    def __init__(self, layers: Mapping[str, float], method: Optional[str], sparsity: Optional[float],
                 settings: Mapping[str, Any]):
        super().__init__(layers)
        self.method = method
        self.sparsity = sparsity
        self.settings = dict(settings)


def load_allocation(path: Union[str, Path]) -> LoadedAllocation:
    """Read a JSON or CSV allocation written by :func:`save_allocation` (or by hand in the Contract 2 format).

    Returns a dict ``{longname: sparsity}`` (a :class:`LoadedAllocation` with ``.method``, ``.sparsity`` and
    ``.settings``). Every value must be a number in [0, 1].
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"allocation file {path} not found; create it with `python -m pruning allocate`")
    suffix = path.suffix.lower()
    if suffix == ".json":
        try:
            doc = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("layers"), dict):
            raise ValueError(f"{path} has no 'layers' mapping {{longname: sparsity}} (Contract 2 format)")
        layers = doc["layers"]
        header = doc
    elif suffix == ".csv":
        with open(path) as fh:
            first = fh.readline()
            header = {}
            if first.startswith("#"):
                try:
                    header = json.loads(first[1:])
                except json.JSONDecodeError:
                    raise ValueError(f"{path}: unreadable '# {{...}}' header line") from None
            else:
                fh.seek(0)
            table = pd.read_csv(fh)
        if not {"longname", "sparsity"} <= set(table.columns):
            raise ValueError(f"{path} needs 'longname' and 'sparsity' columns")
        layers = dict(zip(table["longname"].astype(str), table["sparsity"]))
    else:
        raise ValueError(f"unknown allocation file type {path.suffix!r} for {path}; use .json or .csv")
    clean: dict[str, float] = {}
    for name, s in layers.items():
        try:
            v = float(s)
        except (TypeError, ValueError):
            raise ValueError(f"{path}: sparsity of {name!r} is not a number ({s!r})") from None
        if not (0.0 <= v <= 1.0):
            raise ValueError(f"{path}: sparsity of {name!r} is {v}, outside [0, 1]; re-run allocate with clipping "
                             f"(the default)")
        clean[str(name)] = v
    if not clean:
        raise ValueError(f"{path} lists no layers")
    return LoadedAllocation(clean, header.get("method"), header.get("sparsity"), header.get("settings", {}) or {})
