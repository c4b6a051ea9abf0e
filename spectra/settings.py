"""The settings of an analysis (:class:`AnalysisSettings`): validated on construction, recorded in every results
file, and — the part that changes the numbers plus a hash of the code — the key of the on-disk cache."""
from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from . import __version__
from .errors import SpectraError
from .hill import XMIN_RULES
from .mp import MP_METHODS
from .options import check_options, option


@dataclass
class AnalysisSettings:
    """Settings of an analysis (all recorded in the results' metadata).

    xmin_rule: ``peak`` (default; corrected peak rule), ``peak_ref`` (= weightwatcher ``xmin_peak`` with the
    powerlaw package), ``peak_ap`` (= AlphaPruning's ``alpha_peak``), ``ks`` (weightwatcher's default Clauset
    search), ``median`` (AlphaPruning's ``xmin_mid``) or ``fixed``; giving ``xmin`` implies ``fixed``
    (see ``spectra.hill``). normalize: use the ESD of WᵀW/N (N = max dim) instead of WᵀW.
    device: where eigenvalues are computed (``cpu`` / ``cuda``). include_embeddings: also the embedding / LM head
    matrices. keep_eigs: add an ``evals`` column (ascending eigenvalue arrays). evals_thresh: eigenvalues ≤ this are
    ignored by the fit (weightwatcher's 1e-5; the AlphaPruning rules median / peak_ap keep all λ > 0).
    min_evals: matrices with fewer eigenvalues fail ("too small").
    farms: also fit FARMS α on the pooled ESD of ``farms_window`` × int(``farms_q``·n′) windows, at most ``farms_ops``
    per dimension (``spectra.farms``; columns ``alpha_farms``, ``D_farms``, ``xmin_farms``, ``num_pl_spikes_farms``).
    mp_method: Marchenko–Pastur σ² estimator (``trace`` or ``median``, see ``spectra.mp``).
    eig_batch: matrices of one shape whose eigenvalues are computed in one batched call (``spectra.esd.esd_batch``);
    None = 8 on CUDA, 1 (the per-matrix float64 LAPACK path) on the CPU.
    workers: CPU matrices decomposed and fitted at once by a thread pool (LAPACK releases the GIL); the numbers are
    those of ``workers=1`` (each matrix is computed by the same single call either way).
    """

    xmin_rule: str = option("peak", "xmin rule of the power-law fit: peak = corrected peak window [0.95p, 1.5p]; "
                            "peak_ref = weightwatcher xmin_peak; peak_ap = AlphaPruning's alpha_peak; ks = "
                            "weightwatcher's default Clauset search; median = AlphaPruning's xmin_mid; fixed needs "
                            "--xmin-value", flag="--xmin", choices=XMIN_RULES, label="xmin rule")
    xmin: Optional[float] = option(None, "use this fixed xmin instead of a rule", kind=float, flag="--xmin-value")
    normalize: bool = option(False, "ESD of WᵀW/N instead of WᵀW")
    device: str = option("cpu", "where eigenvalues are computed: cpu or cuda (cuda:N)")
    include_embeddings: bool = option(False, "also analyse embedding / LM-head matrices")
    keep_eigs: bool = option(False, "keep the raw eigenvalues (an 'evals' column in --out)", flag="--eigs")
    evals_thresh: float = option(1e-5, "eigenvalues at or below this are left out of the fit (weightwatcher's)",
                                 lo=0.0)
    min_evals: int = option(8, "matrices with fewer eigenvalues fail ('too small')", lo=2)
    mp_method: str = option("trace", "Marchenko–Pastur σ² estimator", choices=MP_METHODS)
    eig_batch: Optional[int] = option(None, "matrices of one shape per batched eigvalsh (default 8 on cuda, 1 on "
                                      "cpu); float64 always", kind=int, lo=1)
    workers: int = option(1, "CPU matrices analysed at once (threads; same numbers as 1; set OMP_NUM_THREADS=1 "
                          "with it)", lo=1)
    farms: bool = option(False, "also fit FARMS α (alpha_farms, D_farms, xmin_farms, num_pl_spikes_farms): one "
                         "power-law fit of the pooled ESD of equally shaped windows (Hu et al., ICML 2025)",
                         label="FARMS α")
    farms_window: int = option(2000, "FARMS: window rows n′ = min(window, rows, cols)", label="FARMS window")
    farms_ops: int = option(10, "FARMS: windows per dimension (at most)", label="FARMS windows per dimension")
    farms_q: float = option(1.0, "FARMS: window columns = int(q·n′) (1 = square windows)", label="FARMS q")

    def __post_init__(self) -> None:
        try:  # types, bounds and choices of every field (one line, as a SpectraError)
            check_options(self)
        except ValueError as exc:
            raise SpectraError(str(exc)) from None
        from .farms import check_farms

        check_farms(self.farms_window, self.farms_ops, self.farms_q)
        if self.xmin is not None:
            if not (isinstance(self.xmin, (int, float)) and np.isfinite(self.xmin) and self.xmin > 0):
                raise SpectraError(f"xmin must be a positive number, got {self.xmin!r}")
            self.xmin = float(self.xmin)
            self.xmin_rule = "fixed"
        if self.xmin_rule == "fixed" and self.xmin is None:
            raise SpectraError("xmin_rule='fixed' needs xmin=<positive number> (--xmin-value on the command line)")

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def numbers_key(self) -> dict:
        """The cache key part: the settings that change the numbers (device and keep_eigs do not) and a hash of the
        code that computes them, so that a changed implementation never serves stale cached numbers."""
        d = self.as_dict()
        d.pop("device")
        d.pop("keep_eigs")
        d.pop("eig_batch")
        d.pop("workers")
        if not d["farms"]:  # the plain analysis' numbers do not depend on the FARMS windows
            for k in ("farms_window", "farms_ops", "farms_q"):
                d.pop(k)
        d["code"] = _code_hash()
        return d


def _code_hash() -> str:
    """sha256 (16 hex) of the source of the modules that compute the numbers."""
    digest = hashlib.sha256(__version__.encode())
    for name in ("esd", "hill", "mp", "metrics", "analyze", "weights", "settings", "farms"):
        digest.update((Path(__file__).parent / f"{name}.py").read_bytes())
    return digest.hexdigest()[:16]
