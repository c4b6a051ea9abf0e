"""FARMS α: the power-law exponent of the pooled ESD of equally shaped windows of a weight matrix (Hu et al.,
"Eigenspectrum Analysis of Neural Networks without Aspect Ratio Bias", ICML 2025; code HUST-AI-HYZ/FARMS,
``lib/sampling.py``
``fixed_sampling``).

α of a rectangular matrix depends on its aspect ratio. FARMS takes windows of n′ = min(window, rows, cols) rows ×
m′ = int(q·n′) columns of the weight as stored (out × in); per dimension up to ``ops`` starts, start k = min(k·step,
dim − size) with step = max(1, (dim − size) // (ops − 1)) and min(ops, max(1, (dim − size) // step + 1)) starts;
the squared singular values of every window are pooled and sorted into one ESD, which gets one power-law fit with
the analysis' xmin rule (``peak_ap`` = the reference's ``xmin_peak``). A square matrix with window ≥ its size is one
window: FARMS α = the plain α.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from .errors import SpectraError
from .esd import esd_batch
from .hill import fit_power_law

#: the columns an analysis with ``farms=True`` adds
FARMS_COLUMNS = ["alpha_farms", "D_farms", "xmin_farms", "num_pl_spikes_farms", "num_windows_farms"]


def check_farms(window: int, ops: int, q: float) -> None:
    """One-line :class:`SpectraError` naming the flag for a window < 2, ops < 1 or q outside (0, 1]."""
    if int(window) < 2:
        raise SpectraError(f"--farms-window {window} is too small: each window gives n′ = min(window, rows, cols) "
                           f"eigenvalues; use at least 2 (FARMS uses 2000, the default)")
    if int(ops) < 1:
        raise SpectraError(f"--farms-ops {ops} must be at least 1 (windows per dimension; FARMS uses 10)")
    if not (0.0 < float(q) <= 1.0):
        raise SpectraError(f"--farms-q {q} must be in (0, 1] (window columns = int(q·n′); FARMS uses 1)")


def window_starts(dim: int, size: int, ops: int) -> list[int]:
    """The starts of the windows along one dimension of length ``dim`` (FARMS ``fixed_sampling``)."""
    step = max(1, (dim - size) // (ops - 1)) if ops > 1 else max(1, dim)
    count = min(ops, max(1, (dim - size) // step + 1))
    return [min(k * step, dim - size) for k in range(count)]


def farms_windows(rows: int, cols: int, window: int = 2000, ops: int = 10, q: float = 1.0
                  ) -> list[tuple[int, int, int, int]]:
    """(row start, col start, n′ rows, m′ cols) of every FARMS window of a rows × cols matrix."""
    check_farms(window, ops, q)
    n = min(int(window), int(rows), int(cols))
    m = int(q * n)
    if m < 1:
        raise SpectraError(f"--farms-q {q} leaves int(q·{n}) = 0 window columns; raise --farms-q")
    return [(r, c, n, m) for r in window_starts(rows, n, ops) for c in window_starts(cols, m, ops)]


def farms_esd(W, window: int = 2000, ops: int = 10, q: float = 1.0, device: Optional[str] = None) -> np.ndarray:
    """The pooled, ascending ESD of FARMS' windows of ``W`` (squared singular values of every window), computed by
    :func:`spectra.esd.esd_batch` (one batched float64 ``eigvalsh`` of the windows, on CPU or CUDA alike)."""
    t = torch.as_tensor(W).detach()
    if t.ndim != 2:
        raise SpectraError(f"FARMS needs a 2-D matrix, got shape {tuple(t.shape)}")
    wins = farms_windows(t.shape[0], t.shape[1], window, ops, q)
    evs = esd_batch([t[r:r + n, c:c + m] for r, c, n, m in wins], device=device)
    return np.sort(np.concatenate(evs))


def farms_metrics(W, settings) -> dict:
    """The FARMS columns (:data:`FARMS_COLUMNS`) of ``W`` under an :class:`spectra.settings.AnalysisSettings`
    (its window / ops / q, xmin rule, eigenvalue threshold, minimum count; ``normalize`` divides by max(n′, m′))."""
    ev = farms_esd(W, settings.farms_window, settings.farms_ops, settings.farms_q, settings.device)
    t = torch.as_tensor(W)
    wins = farms_windows(t.shape[0], t.shape[1], settings.farms_window, settings.farms_ops, settings.farms_q)
    if settings.normalize:
        ev = ev / float(max(wins[0][2], wins[0][3]))
    fit = fit_power_law(ev, settings.xmin_rule, settings.xmin if settings.xmin_rule == "fixed" else None,
                        evals_thresh=settings.evals_thresh, min_evals=settings.min_evals)
    return {"alpha_farms": fit.alpha, "D_farms": fit.D, "xmin_farms": fit.xmin,
            "num_pl_spikes_farms": int(fit.num_pl_spikes), "num_windows_farms": len(wins)}
