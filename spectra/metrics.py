"""One weight matrix → one dict of HT-SR metrics, with weightwatcher's column names and definitions.

Given the ESD λ_1 ≤ … ≤ λ_M of WᵀW (``spectra.esd.esd``) and the power-law fit (``spectra.hill``), following
weightwatcher 0.7 (``apply_norm_metrics``; Martin & Mahoney, Nat. Commun. 2021):

* ``lambda_max`` = ``spectral_norm`` = λ_max (= ‖W‖₂², the *squared* spectral norm, as in weightwatcher);
  ``log_spectral_norm`` = log10 λ_max;
* ``norm`` = Σλ (= ‖W‖F², the *squared* Frobenius norm, as in weightwatcher); ``log_norm`` = log10 Σλ;
* ``stable_rank`` = Σλ / λ_max = ‖W‖F² / ‖W‖₂²;
* ``alpha_weighted`` = α · log10 λ_max (α̂); ``log_alpha_norm`` = log10 Σ λ^α (all eigenvalues);
* ``entropy`` = −Σ p_i ln p_i / ln r with p_i = λ_i/Σλ + 1e-10 and r the numerical rank of W (singular values
  > σ_max·N·eps) + 1e-10 (weightwatcher ``matrix_entropy``);
* ``mp_bulk_max``, ``num_spikes``, ``mp_sigma2`` from ``spectra.mp.mp_fit``.

``status``: ``failed`` (no valid α; the reason is in ``warning``), else ``over-trained`` (α < 2),
``under-trained`` (α > 6) or ``ok`` — weightwatcher's reading. ``warning`` also carries non-fatal doubts
(tail too small, α > 8 likely spurious).
"""
from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np
import torch

from .esd import nonfinite_count
from .hill import fit_power_law
from .mp import mp_fit
from .settings import AnalysisSettings

OVER_TRAINED = 2.0  #: α below this reads as over-trained (weightwatcher OVER_TRAINED_THRESH)
UNDER_TRAINED = 6.0  #: α above this reads as under-trained (weightwatcher UNDER_TRAINED_THRESH)
ENTROPY_EPS = 1e-10  #: weightwatcher's EPSILON in matrix_entropy

METRIC_COLUMNS = ["num_evals", "alpha", "xmin", "xmax", "D", "sigma", "num_pl_spikes", "alpha_weighted", "lambda_max",
                  "stable_rank", "spectral_norm", "norm", "log_norm", "log_spectral_norm", "log_alpha_norm", "entropy",
                  "num_spikes", "mp_bulk_max", "mp_sigma2", "status", "warning", "xmin_rule"]


def _settings(settings: Optional[AnalysisSettings]) -> Any:
    if settings is None:
        return AnalysisSettings()
    return settings


def status_for(alpha: float) -> str:
    """weightwatcher's reading of α: ``failed`` (NaN), ``over-trained`` (< 2), ``under-trained`` (> 6) or ``ok``."""
    if alpha is None or not np.isfinite(alpha):
        return "failed"
    if alpha < OVER_TRAINED:
        return "over-trained"
    if alpha > UNDER_TRAINED:
        return "under-trained"
    return "ok"


def matrix_entropy(evals: np.ndarray, N: int) -> float:
    """weightwatcher ``matrix_entropy``: −Σ p ln p / ln(rank), p = λ/Σλ + 1e-10, rank = #{σ > σ_max·N·eps} + 1e-10."""
    ev = np.asarray(evals, dtype=np.float64)
    sv = np.sqrt(ev)
    rank = np.count_nonzero(sv > np.max(sv) * N * np.finfo(sv.dtype).eps) + ENTROPY_EPS
    p = ev / np.sum(ev) + ENTROPY_EPS
    return float(-np.sum(p * np.log(p)) / np.log(rank))


def failed_metrics(reason: str, settings: Optional[AnalysisSettings] = None, num_evals: int = 0) -> dict:
    """A metrics dict for a matrix that cannot be analysed: every number NaN, ``status='failed'``, the reason."""
    s = _settings(settings)
    out: dict = {c: float("nan") for c in METRIC_COLUMNS}
    out.update(num_evals=int(num_evals), num_pl_spikes=0, num_spikes=0, status="failed", warning=reason,
               xmin_rule=s.xmin_rule)
    return out


def matrix_problem(W: torch.Tensor, min_evals: int = 8) -> Optional[str]:
    """Why ``W`` cannot be analysed (NaN/Inf entries, all zeros, fewer than ``min_evals`` eigenvalues), or None.

    One cheap pass in the common case: the float32 2-norm of W is finite and non-zero.
    """
    if W.ndim != 2:
        return f"not a 2-D matrix (shape {tuple(W.shape)})"
    rows, cols = W.shape
    if min(rows, cols) < min_evals:
        return f"matrix too small to fit: {rows}×{cols} gives {min(rows, cols)} eigenvalues (need ≥ {min_evals})"
    W = W.detach()
    nrm = float(torch.linalg.vector_norm(W))
    if not math.isfinite(nrm):
        bad = nonfinite_count(W)
        if bad:
            return f"weights contain NaN/Inf ({bad} of {W.numel()} entries); the spectrum is undefined"
    if nrm == 0.0 and not bool(W.any()):  # (a zero float32 norm can also be an underflow: check)
        return "all-zero matrix (fully pruned?); no spectrum to fit"
    return None


def matrix_metrics(evals: np.ndarray, rows: int, cols: int, settings: Optional[AnalysisSettings] = None) -> dict:
    """All per-matrix metrics (``METRIC_COLUMNS``) from the ascending ESD of an (rows × cols) matrix.

    ``evals`` must already carry the normalisation chosen in ``settings.normalize`` (see ``spectra.esd.esd``).
    A failed power-law fit keeps the norm metrics (they do not depend on α) and sets α-dependent ones to NaN.
    """
    s = _settings(settings)
    ev = np.asarray(evals, dtype=np.float64)
    N = max(rows, cols)
    if ev.size == 0 or not np.all(np.isfinite(ev)):
        return failed_metrics("eigenvalues are empty or not finite", s, ev.size)
    lam_max = float(ev.max())
    norm = float(ev.sum())
    if not lam_max > 0:
        return failed_metrics("all eigenvalues are zero (all-zero matrix)", s, ev.size)
    fit = fit_power_law(ev, s.xmin_rule, s.xmin if s.xmin_rule == "fixed" else None, evals_thresh=s.evals_thresh,
                        min_evals=s.min_evals)
    alpha = fit.alpha
    mp = mp_fit(ev, rows, cols, normalized=s.normalize, method=s.mp_method)
    with np.errstate(over="ignore"):
        lan = float(np.log10(np.sum(ev ** alpha))) if fit.ok else float("nan")
    return {
        "num_evals": int(ev.size),
        "alpha": alpha,
        "xmin": fit.xmin,
        "xmax": fit.xmax,
        "D": fit.D,
        "sigma": fit.sigma,
        "num_pl_spikes": fit.num_pl_spikes,
        "alpha_weighted": alpha * math.log10(lam_max) if fit.ok else float("nan"),
        "lambda_max": lam_max,
        "stable_rank": norm / lam_max,
        "spectral_norm": lam_max,
        "norm": norm,
        "log_norm": math.log10(norm),
        "log_spectral_norm": math.log10(lam_max),
        "log_alpha_norm": lan,
        "entropy": matrix_entropy(ev, N),
        "num_spikes": mp.num_spikes,
        "mp_bulk_max": mp.bulk_max,
        "mp_sigma2": mp.sigma2,
        "status": status_for(alpha),
        "warning": fit.warning,
        "xmin_rule": fit.xmin_rule,
    }
