"""Power-law (Hill) fit of the tail of an ESD, with the xmin rules of weightwatcher, AlphaPruning and Clauset et al.

For the n eigenvalues λ_i ≥ xmin the continuous power-law MLE (Hill estimator; Clauset, Shalizi & Newman, SIAM Rev.
2009) is ``α = 1 + n / Σ ln(λ_i / xmin)`` with standard error ``σ = (α − 1)/√n``; the fit quality is the KS distance
``D = max_j |F_fit(λ_j) − F_emp(λ_j)|`` over the tail, ``F_fit(λ) = 1 − (λ/xmin)^(1−α)``, ``F_emp(λ_j) = j/n``
(j = 0..n−1 over the ascending tail — weightwatcher's and AlphaPruning's convention).

xmin rules (``fit_power_law(xmin_rule=...)``). ``ks``, ``peak``, ``peak_ref`` and ``fixed`` work on the eigenvalues
above ``evals_thresh`` (default 1e-5 = weightwatcher's ``EVALS_THRESH``); ``median`` and ``peak_ap`` follow
AlphaPruning, which keeps every eigenvalue (we drop only exact zeros, whose logarithm is undefined):

* ``ks`` — Clauset search, weightwatcher's default fit (``WWFit``): every eigenvalue but the largest is a candidate,
  the one with the smallest D wins. Vectorised: α for all candidates from suffix sums of ln λ, D for all candidates
  by chunked broadcasting (no Python loop per candidate). Below 20 eigenvalues weightwatcher switches to its
  small-N variant (bias-corrected α = 1 + (n−1)/Σ ln(λ/xmin), tails ≥ 8, smallest D); so do we.
* ``peak`` — corrected AlphaPruning/weightwatcher peak rule: p = left edge of the tallest of 100 bins of the
  histogram of log10 λ; candidates are the eigenvalues in [0.95·p, 1.5·p] (all but the largest eigenvalue),
  smallest D wins.
* ``peak_ref`` — the reference behaviour, equal to weightwatcher ``fix_fingers='xmin_peak', pl_package='powerlaw'``
  (``powerlaw.Fit(xmin=(log10(0.95·p), 1.5·p))``): the lower bound is written as log10(0.95·p) but compared with
  λ on the linear scale, so in practice it is almost no lower bound; candidates are the *distinct* values in range
  with the largest one in range dropped (powerlaw's "keep two points" rule), and the empirical CDF is evaluated at
  distinct values only.
* ``peak_ap`` — AlphaPruning's own ``net_esd_estimator(fix_fingers='xmin_peak')``: the same quirky bounds
  [log10(0.95·p), 1.5·p], but on all eigenvalues (no 1e-5 threshold, which moves the histogram and its peak when
  a matrix has tiny eigenvalues), every eigenvalue in range except the global largest is a candidate (the top
  in-range one is not dropped) and the ECDF is j/n. (AlphaPruning computes in float32; we use float64.)
* ``median`` — AlphaPruning ``xmin_mid``: xmin = the ⌊n/2⌋-th smallest eigenvalue (0-based index n//2), no search.
* ``fixed`` — a given ``xmin`` (not snapped to an eigenvalue).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Optional

import numpy as np

from .errors import SpectraError

EVALS_THRESH = 1e-5  #: weightwatcher's EVALS_THRESH: eigenvalues ≤ this are dropped before fitting
SMALL_N_CUTOFF = 20  #: weightwatcher WWFit switches to its small-N fit below this many eigenvalues
SMALL_N_KMIN = 8  #: smallest tail the small-N fit considers
MIN_TAIL = 10  #: tails smaller than this get a "tail too small" warning
SPURIOUS_ALPHA = 8.0  #: fits with α above this get an "α > 8: likely a spurious fit" warning (see likely_spurious)
XMIN_RULES = ("ks", "peak", "peak_ref", "peak_ap", "median", "fixed")
AP_RULES = ("median", "peak_ap")  #: AlphaPruning rules: no evals_thresh, only λ > 0


@dataclass
class PowerLawFit:
    """Result of a power-law tail fit. ``warning`` is empty when nothing is suspicious, else the reason(s).

    ``alpha`` is NaN when the fit failed (the reason is in ``warning``).
    """

    alpha: float
    xmin: float
    xmax: float
    D: float
    sigma: float
    num_pl_spikes: int
    xmin_rule: str
    warning: str = ""
    num_candidates: int = 0
    peak: float = float("nan")  # left edge of the tallest log10-histogram bin (peak rules only)

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.alpha))

    def as_dict(self) -> dict:
        return asdict(self)


def hill_alpha(evals: np.ndarray, xmin: float) -> float:
    """Hill / continuous power-law MLE ``α = 1 + n / Σ ln(λ_i/xmin)`` over the eigenvalues λ_i ≥ xmin."""
    x = np.asarray(evals, dtype=np.float64)
    if not xmin > 0:
        raise SpectraError(f"xmin must be > 0, got {xmin}")
    tail = x[x >= xmin]
    if tail.size == 0:
        raise SpectraError(f"no eigenvalue is ≥ xmin={xmin:g}; choose a smaller xmin")
    s = float(np.sum(np.log(tail / xmin)))
    with np.errstate(divide="ignore"):
        return float(1.0 + tail.size / s) if s > 0 else float("inf")


def ks_distance(evals: np.ndarray, xmin: float, alpha: float) -> float:
    """KS distance between the tail λ ≥ xmin and the power law (xmin, α): ``max_j |1 − (λ_j/xmin)^(1−α) − j/n|``."""
    x = np.sort(np.asarray(evals, dtype=np.float64))
    tail = x[x >= xmin]
    n = tail.size
    if n == 0:
        return float("nan")
    return float(np.max(np.abs(1.0 - (tail / xmin) ** (1.0 - alpha) - np.arange(n) / n)))


def _suffix_log_sums(logx: np.ndarray) -> np.ndarray:
    """``out[i] = Σ_{j ≥ i} logx[j]``."""
    return np.cumsum(logx[::-1])[::-1]


def _alphas(x: np.ndarray, logx: np.ndarray, idx: np.ndarray, bias_corrected: bool = False) -> np.ndarray:
    """α_i = 1 + n_i / (S_i − n_i ln x_i) for every candidate i (S_i = Σ_{j ≥ i} ln x_j; n_i − 1 if bias-corrected)."""
    m = (x.size - idx).astype(np.float64)
    s = _suffix_log_sums(logx)[idx] - m * logx[idx]
    with np.errstate(divide="ignore", invalid="ignore"):
        return 1.0 + (m - 1.0 if bias_corrected else m) / s


def _ks_block(logx: np.ndarray, ii: np.ndarray, alphas: np.ndarray, cols: np.ndarray,
              dup: Optional[np.ndarray]) -> np.ndarray:
    """max over the columns j in ``cols`` (j ≥ i) of |1 − G_ij| for the candidate rows ``ii`` (broadcast, no loop).

    G_ij = exp((1 − α_i)(ln x_j − ln x_i)) + (j − i)/n_i; columns j < i give G = 1 (no contribution); ``dup`` marks
    columns left out of the empirical CDF (repeated values, powerlaw's convention). α ≤ 1 → D = 1 (weightwatcher).
    """
    n = logx.size
    G = logx[None, cols] - logx[ii, None]
    np.maximum(G, 0.0, out=G)  # j < i → 0 (x_j ≤ x_i), so that exp(.) = 1 there
    slope = 1.0 - alphas
    with np.errstate(invalid="ignore"):
        G *= slope[:, None]
    np.exp(G, out=G)
    if not np.all(np.isfinite(slope)):  # α = inf (all tail values equal): (x/x)^(-inf) = 1
        G[np.isnan(G)] = 1.0
    K = cols[None, :] - ii[:, None]
    np.maximum(K, 0, out=K)
    G += K * (1.0 / (n - ii))[:, None]
    if dup is not None:
        G[:, dup[cols]] = 1.0
    D = np.maximum(1.0 - G.min(axis=1), G.max(axis=1) - 1.0)
    return np.where(alphas > 1.0, D, 1.0)


def _exact_D(logx: np.ndarray, idx: np.ndarray, alphas: np.ndarray, dup: Optional[np.ndarray],
             chunk: int = 64) -> np.ndarray:
    """Exact D for candidates ``idx`` in blocks of ``chunk`` rows over the columns j ≥ min(i) of the block.

    Each row's D is a max over its own entries, so it is bit-identical whatever block it is computed in.
    """
    Ds = np.ones(idx.size, dtype=np.float64)
    order = np.argsort(idx, kind="stable")
    n = logx.size
    for a in range(0, order.size, chunk):
        sel = order[a:a + chunk]
        ii = idx[sel]
        Ds[sel] = _ks_block(logx, ii, alphas[sel], np.arange(int(ii[0]), n), dup)
    return Ds


def candidate_fits(x: np.ndarray, idx: np.ndarray, *, distinct_ecdf: bool = False, bias_corrected: bool = False,
                   chunk: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """α and D for every candidate xmin = x[i], i in ``idx``, on the ascending positive array ``x``; no per-candidate
    loop.

    The tail of candidate i is ``x[i:]`` (n_i = len(x) − i points). α_i = 1 + n_i / (S_i − n_i ln x_i) with the
    suffix sums S_i = Σ_{j ≥ i} ln x_j (all candidates at once). D_i = max_{j ≥ i} |1 − G_ij| with
    G_ij = exp((1 − α_i)(ln x_j − ln x_i)) + (j − i)/n_i, evaluated for ``chunk`` candidates at a time by
    broadcasting. ``distinct_ecdf`` evaluates the empirical CDF only at the first occurrence of each distinct value
    (powerlaw's convention); ``bias_corrected`` uses (n − 1) instead of n in α (weightwatcher's small-N fit).
    Candidates with α ≤ 1 get D = 1 (weightwatcher's convention).
    """
    x = np.asarray(x, dtype=np.float64)
    idx = np.asarray(idx, dtype=np.int64)
    logx = np.log(x)
    alphas = _alphas(x, logx, idx, bias_corrected)
    if idx.size == 0:
        return alphas, np.ones(0)
    return alphas, _exact_D(logx, idx, alphas, _dup_mask(x) if distinct_ecdf else None, chunk)


def _dup_mask(x: np.ndarray) -> np.ndarray:
    dup = np.zeros(x.size, dtype=bool)
    dup[1:] = x[1:] == x[:-1]
    return dup


def best_candidate(x: np.ndarray, idx: np.ndarray, *, distinct_ecdf: bool = False, stride: int = 8,
                   chunk: int = 64) -> tuple[int, float, float]:
    """The candidate with the smallest D — exactly ``argmin`` of :func:`candidate_fits` (first index on ties) —
    found with a bound: returns (position in ``idx``, α, D).

    A D computed on every ``stride``-th column is a lower bound LB_i ≤ D_i (a max over fewer points). Candidates
    are evaluated exactly in blocks in increasing LB order until the next LB exceeds the best exact D; the
    candidates skipped have LB > best D, hence D > best D, so the result is the same as the full search.
    """
    x = np.asarray(x, dtype=np.float64)
    idx = np.asarray(idx, dtype=np.int64)
    logx = np.log(x)
    alphas = _alphas(x, logx, idx)
    dup = _dup_mask(x) if distinct_ecdf else None
    if idx.size <= 2 * chunk:
        Ds = _exact_D(logx, idx, alphas, dup, chunk)
        k = int(np.argmin(Ds))
        return k, float(alphas[k]), float(Ds[k])
    coarse = np.arange(0, x.size, stride)
    rows = max(1, (1 << 18) // coarse.size)
    LB = np.concatenate([_ks_block(logx, idx[a:a + rows], alphas[a:a + rows], coarse, dup)
                         for a in range(0, idx.size, rows)])
    order = np.argsort(LB, kind="stable")
    best_k, best_D = -1, np.inf
    for a in range(0, order.size, chunk):
        sel = order[a:a + chunk]
        if LB[sel[0]] > best_D:
            break
        Ds = _exact_D(logx, idx[sel], alphas[sel], dup, chunk)
        for k, d in zip(sel[Ds <= best_D], Ds[Ds <= best_D]):  # few: only ties or improvements
            if d < best_D or (d == best_D and k < best_k):
                best_k, best_D = int(k), float(d)
    return best_k, float(alphas[best_k]), best_D


def log_histogram_peak(x: np.ndarray, bins: int = 100) -> float:
    """Left edge (linear scale) of the tallest bin of ``np.histogram(log10 x, bins)`` (first one on ties)."""
    counts, edges = np.histogram(np.log10(x), bins=bins)
    return float(10.0 ** edges[int(np.argmax(counts))])


def _small_n_ks(x: np.ndarray) -> tuple[int, float, float, int]:
    """weightwatcher's small-N fit as it actually behaves: returns (index, α, D, number of usable candidates).

    ``WWFit.fit_powerlaw_smallN`` computes the bias-corrected α = 1 + (n−1)/Σ ln(λ/xmin) and D for tails of ≥ 8
    points (others keep D = 1) and picks by D − 0.868/√n, but ``WWFit.__init__`` then re-selects
    ``argmin(D)`` — so the winner is the smallest-D usable candidate with the bias-corrected α.
    """
    n = x.size
    idx = np.arange(n - 1)
    alphas, Ds = candidate_fits(x, idx, bias_corrected=True)
    logx = np.log(x)
    m = (n - idx).astype(np.float64)
    s = _suffix_log_sums(logx)[idx] - m * logx[idx]
    usable = ((n - idx) >= SMALL_N_KMIN) & (s > 1e-12) & (alphas > 1.0)
    if usable.any():
        Ds = np.where(usable, Ds, 1.0)
        best = int(np.argmin(Ds))
        if not usable[best]:
            return best, float("nan"), float("nan"), int(usable.sum())
        return best, float(alphas[best]), float(Ds[best]), int(usable.sum())
    s0 = float(np.sum(logx) - n * logx[0])
    if s0 <= 1e-12:
        return 0, float("nan"), float("nan"), 0
    a0 = 1.0 + (n - 1.0) / s0
    d0 = float(np.max(np.abs(np.arange(n) / n - (1.0 - (x / x[0]) ** (1.0 - a0)))))
    return 0, a0, d0, 0


def _failed(rule: str, reason: str, xmax: float = float("nan"), peak: float = float("nan")) -> PowerLawFit:
    nan = float("nan")
    return PowerLawFit(nan, nan, xmax, nan, nan, 0, rule, reason, 0, peak)


def fitted_evals(evals: np.ndarray, xmin_rule: str = "peak", evals_thresh: float = EVALS_THRESH) -> np.ndarray:
    """The sorted eigenvalues a rule fits: those above ``evals_thresh`` (above 0 for ``median`` / ``peak_ap``, as
    AlphaPruning's code keeps them all)."""
    ev = np.asarray(evals, dtype=np.float64).ravel()
    return np.sort(ev[ev > (0.0 if xmin_rule in AP_RULES else evals_thresh)])


def xmin_window(xmin_rule: str, peak: float) -> Optional[tuple[float, float]]:
    """The xmin candidate window ``(lo, hi)`` of a histogram-peak rule around the log-ESD peak ``p``; None for the
    other rules.

    ``peak``: [0.95 p, 1.5 p] (AlphaPruning's intent); ``peak_ref`` / ``peak_ap``: [log10(0.95 p), 1.5 p], the bounds as
    weightwatcher's and AlphaPruning's codes write them (in effect no lower bound), ordered low to high.
    """
    if xmin_rule not in ("peak", "peak_ref", "peak_ap") or not np.isfinite(peak):
        return None
    lo = 0.95 * peak if xmin_rule == "peak" else math.log10(0.95 * peak)
    return min(lo, 1.5 * peak), max(lo, 1.5 * peak)


def ks_curve(evals: np.ndarray, xmin_rule: str = "peak") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """α and the KS distance D for every xmin candidate (every fitted eigenvalue but the largest) of ``evals`` under
    the eigenvalue filter of ``xmin_rule``: returns ``(xmins, alphas, Ds)`` (:func:`candidate_fits`)."""
    x = fitted_evals(evals, xmin_rule)
    idx = np.arange(max(x.size - 1, 0))
    alphas, Ds = candidate_fits(x, idx)
    return x[idx], alphas, Ds


def fit_power_law(evals: np.ndarray, xmin_rule: str = "peak", xmin: Optional[float] = None, *,
                  evals_thresh: float = EVALS_THRESH, bins: int = 100, min_evals: int = 8) -> PowerLawFit:
    """Fit a power law to the tail of ``evals`` with the chosen xmin rule (see the module docstring).

    Eigenvalues ≤ ``evals_thresh`` (≤ 0 for ``median`` / ``peak_ap``) are dropped first; fewer than ``min_evals``
    remaining → a failed fit (α = NaN)
    with the reason in ``warning``. ``xmin`` is required for (and implies) the ``fixed`` rule. ``num_pl_spikes`` is
    the tail size (eigenvalues ≥ xmin), ``xmax`` the largest eigenvalue. Never raises for data problems; raises
    :class:`SpectraError` for an unknown rule or a missing ``xmin``.
    """
    if xmin is not None and xmin_rule != "fixed":
        xmin_rule = "fixed"
    if xmin_rule not in XMIN_RULES:
        raise SpectraError(f"unknown xmin rule {xmin_rule!r}; choose one of {', '.join(XMIN_RULES)}")
    if xmin_rule == "fixed" and (xmin is None or not np.isfinite(xmin) or xmin <= 0):
        raise SpectraError("xmin_rule='fixed' needs a positive xmin (e.g. xmin=0.5)")
    ev = np.asarray(evals, dtype=np.float64).ravel()
    if ev.size == 0:
        return _failed(xmin_rule, "no eigenvalues")
    if not np.all(np.isfinite(ev)):
        return _failed(xmin_rule, "eigenvalues contain NaN or Inf")
    thresh = 0.0 if xmin_rule in AP_RULES else evals_thresh
    x = fitted_evals(ev, xmin_rule, evals_thresh)
    n = x.size
    xmax = float(x[-1]) if n else float("nan")
    if n < max(min_evals, 2):
        return _failed(xmin_rule, f"too few eigenvalues to fit: {n} above {thresh:g} (need ≥ {max(min_evals, 2)})",
                       xmax)
    peak = float("nan")
    num_cand = 0
    if xmin_rule == "fixed":
        tail = x[x >= xmin]
        if tail.size < 2:
            return _failed(xmin_rule, f"fixed xmin={xmin:g} leaves {tail.size} eigenvalue(s) in the tail", xmax)
        alpha = hill_alpha(tail, xmin)
        D = ks_distance(tail, xmin, alpha)
        x_min, n_tail, num_cand = float(xmin), int(tail.size), 1
    elif xmin_rule == "median":
        i = n // 2
        alphas, Ds = candidate_fits(x, np.array([i]))
        alpha, D, x_min, n_tail, num_cand = float(alphas[0]), float(Ds[0]), float(x[i]), n - i, 1
    elif xmin_rule == "ks" and n < SMALL_N_CUTOFF:
        i, alpha, D, num_cand = _small_n_ks(x)
        x_min, n_tail = float(x[i]), n - i
    else:
        if xmin_rule == "ks":
            idx = np.arange(n - 1)
            distinct = False
        else:
            peak = log_histogram_peak(x, bins)
            lo, hi = xmin_window(xmin_rule, peak)
            if xmin_rule in ("peak", "peak_ap"):  # all but the largest eigenvalue inside the window
                idx = np.nonzero((x[:-1] >= lo) & (x[:-1] <= hi))[0]
                distinct = False
            else:  # peak_ref: powerlaw.Fit(xmin=(log10(0.95 p), 1.5 p))
                values = np.unique(x[(x >= lo) & (x <= hi)])[:-1]
                idx = np.searchsorted(x, values, side="left")
                distinct = True
        if idx.size == 0:
            return _failed(xmin_rule, f"no xmin candidate for rule {xmin_rule!r} (histogram peak {peak:.4g})", xmax,
                           peak)
        best, alpha, D = best_candidate(x, idx, distinct_ecdf=distinct)
        i = int(idx[best])
        x_min, n_tail, num_cand = float(x[i]), n - i, int(idx.size)
    if not np.isfinite(alpha):
        return _failed(xmin_rule, f"power-law fit failed: degenerate tail at xmin={x_min:.4g} (all tail eigenvalues "
                       f"equal)", xmax, peak)
    sigma = (alpha - 1.0) / math.sqrt(n_tail)
    warnings = []
    if n_tail < MIN_TAIL:
        warnings.append(f"tail too small ({n_tail} eigenvalues ≥ xmin); alpha unreliable")
    if likely_spurious(alpha):
        warnings.append("alpha > 8: likely a spurious fit (no clear power-law tail)")
    return PowerLawFit(alpha, x_min, xmax, float(D), float(sigma), int(n_tail), xmin_rule, "; ".join(warnings),
                       num_cand, peak)


def likely_spurious(alpha: Any) -> Any:
    """Whether a fitted α (a number or an array) is above :data:`SPURIOUS_ALPHA`: no clear power-law tail, the fit
    is likely spurious (the rule behind :func:`fit_power_law`'s warning and the ESD explorer's; NaN → False)."""
    a = np.asarray(alpha, dtype=np.float64)
    out = np.greater(a, SPURIOUS_ALPHA, where=np.isfinite(a), out=np.zeros(a.shape, dtype=bool))
    return bool(out) if out.ndim == 0 else out
