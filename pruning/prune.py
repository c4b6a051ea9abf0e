"""Prune a model end to end: layer-wise allocation (uniform, AlphaPruning, OWL, ...) + sequential layer pruning.

``prune_model(model, tokenizer, PruneSettings(...))`` computes the per-matrix sparsities — spectral metrics of the
dense model (:func:`spectra.analyze.analyze`) for ``alphapruning`` / ``stable_rank``, the dense model's input norms
(:func:`pruning.sequential.collect_input_norms`) for ``owl``, the weights for ``global`` / ``lamp``, shapes for ``erk``
— then runs :func:`pruning.sequential.prune_sequential` (Wanda/SparseGPT reference protocol: C4 calibration windows,
block by block). The model is pruned in place.
"""
from __future__ import annotations

import dataclasses
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import pandas as pd
import torch

from spectra.models import model_and_tokenizer
from spectra.results import jsonable

from pruning.pruners import NM, get_pruner, parse_nm
from pruning.pruners.masks import check_sparsity, nm_sparsity
from pruning.sequential import CORRECTIONS, prune_sequential



@dataclass
class PruneSettings:
    """Every setting of one pruning run (all recorded in reports and sweep keys).

    pruner: registered layer pruner (magnitude, wanda, sparsegpt, fista, prox24, ...). allocation: one of
    :data:`pruning.allocation.ALLOCATION_METHODS` (N:M needs ``uniform``). sparsity: target global sparsity S
    (parameter-weighted over the block matrices; ignored under ``nm``). nm: ``"2:4"`` style pattern or None.
    lam / mapping / granularity / metric / xmin_rule: AlphaPruning's λ, map, block-or-matrix mode, metric column and
    the xmin rule of the Hill fit. owl_lambda / owl_M: OWL's λ and outlier multiplier. max_sparsity: cap of every
    matrix. nsamples × seqlen calibration windows from C4 (``seed``). gd_steps: masked GD after the pruner
    (``gd_precondition``: diagonally rescaled steps, the default; False = the paper's plain ``1/λ_max(H)`` steps;
    see :func:`pruning.pruners.gd.masked_gd`).
    correction: error-correction mode (:data:`pruning.sequential.CORRECTIONS`: sequential, none, intra,
    intra+inter, intra-pruned); None = the pruner's default (``intra`` for FISTAPruner, ``sequential`` otherwise).
    allocation_file: a Contract 2 JSON/CSV allocation that replaces ``allocation``.
    exclude_flagged: ``alphapruning`` only, our addition (off by default = the reference): fits flagged as likely
    spurious (α > 8) are left out of their block's mean α (:func:`pruning.allocation.allocate`).
    """

    pruner: str = "wanda"
    allocation: str = "uniform"
    sparsity: float = 0.5
    nm: Optional[str] = None
    lam: float = 0.3
    mapping: str = "linear"
    granularity: str = "block"
    metric: str = "alpha"
    xmin_rule: str = "peak"
    owl_lambda: float = 0.08
    owl_M: float = 5.0
    max_sparsity: float = 0.99
    nsamples: int = 128
    seqlen: int = 512
    seed: int = 0
    calib_dataset: str = "c4"
    data_path: Optional[str] = None
    gd_steps: int = 0
    correction: Optional[str] = None
    sublayer_sequential: Optional[bool] = None
    batch_size: int = 8
    allocation_file: Optional[str] = None
    pruner_options: dict = field(default_factory=dict)
    gd_precondition: bool = True
    exclude_flagged: bool = False

    def nm_tuple(self) -> NM:
        return parse_nm(self.nm) if isinstance(self.nm, (str, type(None))) else tuple(self.nm)

    def validate(self) -> "PruneSettings":
        """Raise a one-line ValueError for any bad value (before anything slow happens); returns self."""
        from pruning.allocation import ALLOCATION_METHODS

        spec = get_pruner(self.pruner)
        nm = self.nm_tuple()
        only = spec.only_nm
        if only is not None and nm != only:
            raise ValueError(f"pruner {self.pruner!r} produces {only[0]}:{only[1]} sparsity only; pass --nm "
                             f"{only[0]}:{only[1]}")
        if nm is not None and not spec.supports_nm:
            raise ValueError(f"pruner {self.pruner!r} does not support N:M patterns; drop --nm")
        if nm is None:
            check_sparsity(self.sparsity)
        if self.allocation_file is None and self.allocation not in ALLOCATION_METHODS:
            raise ValueError(f"unknown allocation {self.allocation!r}; choose one of: {', '.join(ALLOCATION_METHODS)}")
        if nm is not None and (self.allocation != "uniform" or self.allocation_file):
            what = "an allocation file" if self.allocation_file else f"allocation {self.allocation!r}"
            raise ValueError(f"N:M sparsity ({self.nm}) gives every matrix the same pattern, so it needs allocation "
                             f"'uniform', not {what}; drop --nm or use --allocation uniform")
        unknown = sorted(set(self.pruner_options) - set(spec.options))
        if unknown:
            known = ", ".join(spec.options) if spec.options else "none"
            raise ValueError(f"pruner {self.pruner!r} has no option(s) {', '.join(unknown)}; its options: {known}")
        if self.correction is not None and self.correction not in CORRECTIONS:
            raise ValueError(f"unknown correction {self.correction!r}; choose one of: {', '.join(CORRECTIONS)}")
        for name in ("nsamples", "seqlen", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive integer (got {getattr(self, name)})")
        if int(self.gd_steps) < 0:
            raise ValueError(f"gd_steps must be ≥ 0 (got {self.gd_steps})")
        if not 0.0 <= float(self.lam) <= 1.0:
            raise ValueError(f"lam (AlphaPruning's λ) must lie in [0, 1] (got {self.lam})")
        if self.exclude_flagged and (self.allocation != "alphapruning" or self.allocation_file):
            what = "an allocation file" if self.allocation_file else f"allocation {self.allocation!r}"
            raise ValueError(f"exclude_flagged (--exclude-flagged) applies to allocation 'alphapruning' (its power-law "
                             f"fits), not {what}")
        if self.allocation_file is not None and not os.path.isfile(self.allocation_file):
            raise ValueError(f"allocation file {self.allocation_file} not found")
        return self

    def resolved_correction(self) -> str:
        """The error-correction mode this run uses (``correction``, or the pruner's default)."""
        return self.correction if self.correction is not None else get_pruner(self.pruner).correction

    def loop_needs_calibration(self) -> bool:
        """The pruning loop reads calibration statistics (the pruner is not calibration-free, or masked GD runs)."""
        return not get_pruner(self.pruner).calibration_free or self.gd_steps > 0

    def needs_calibration(self) -> bool:
        """The run needs calibration windows: for the loop, or for OWL's outlier ratios."""
        return self.loop_needs_calibration() or (self.allocation == "owl" and not self.allocation_file)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def key_dict(self) -> dict:
        """:meth:`as_dict` without the fields added after the first release (:data:`LATER_FIELDS`) that are at
        their defaults — the identity of a run in sweep tables, so that tables written earlier still resume."""
        d = self.as_dict()
        for name, default in LATER_FIELDS.items():
            if d.get(name) == default:
                d.pop(name, None)
        return d


def method_label(pruner: str, pruner_options: Optional[dict] = None, correction: Optional[str] = None,
                 gd_steps: int = 0, gd_precondition: bool = True) -> str:
    """Readable name of a pruning method that says which variant ran, e.g. ``FISTAPruner (re-fit) [intra]``,
    ``FISTAPruner (paper-literal, no re-fit) [intra]``, ``prox24 (plain step) + GD100``, ``Wanda + GD100 (plain)``.

    The error-correction mode is shown when it is not the Wanda/SparseGPT reference loop (``sequential``) or the
    pruner fits targets (FISTAPruner); the ``(ours)`` variants are the defaults, see the README."""
    opts = dict(pruner_options or {})
    name = PRUNER_NAMES.get(pruner, pruner)
    if pruner == "fista":
        name += " (paper-literal, no re-fit)" if opts.pop("refit", "cg") == "none" else " (re-fit)"
    elif pruner == "prox24":
        name += " (plain step)" if opts.pop("precondition", True) in (False, "false") else " (rescaled)"
    name += "".join(f" {k}={v}" for k, v in sorted(opts.items()))
    if correction and (pruner == "fista" or correction != "sequential"):
        name += f" [{correction}]"
    if gd_steps:
        name += f" + GD{int(gd_steps)}" + ("" if gd_precondition else " (plain)")
    return name


#: pruner options that select each seed pruner's paper-literal variant (the defaults are ours; README)
PAPER_LITERAL = {"fista": {"refit": "none"}, "prox24": {"precondition": False}}

#: display names of the registered pruners
PRUNER_NAMES = {"magnitude": "magnitude", "wanda": "Wanda", "sparsegpt": "SparseGPT", "fista": "FISTAPruner",
                "prox24": "prox24"}


def settings_label(s: "PruneSettings") -> str:
    """:func:`method_label` of a run's settings (its resolved correction mode)."""
    return method_label(s.pruner, s.pruner_options, s.resolved_correction(), s.gd_steps, s.gd_precondition)


#: fields added to PruneSettings after sweep tables existed, with their defaults (see PruneSettings.key_dict).
LATER_FIELDS = {"gd_precondition": False, "exclude_flagged": False}


@dataclass
class PruneResult:
    """Outcome of :func:`prune_model`.

    layers: one row per block matrix — ``longname block role rows cols num_params metric target achieved seconds``
    (``target`` = allocated sparsity, ``achieved`` = fraction of exact zeros after pruning). ``target_sparsity`` /
    ``achieved_sparsity``: parameter-weighted over those matrices. timings in seconds (allocation, calibration,
    capture, stats, prune, gd, forward, total). peak_rss_mb: the process's largest resident set size sampled during
    the run; rss_before_mb: at its start.
    """

    settings: PruneSettings
    layers: pd.DataFrame
    target_sparsity: float
    achieved_sparsity: float
    timings: dict
    peak_rss_mb: float
    rss_before_mb: float
    allocation_info: dict = field(default_factory=dict)
    calibration_shape: Optional[tuple] = None

    def to_dict(self) -> dict:
        return {"settings": self.settings.as_dict(), "target_sparsity": self.target_sparsity,
                "achieved_sparsity": self.achieved_sparsity, "timings": self.timings,
                "peak_rss_mb": self.peak_rss_mb, "rss_before_mb": self.rss_before_mb,
                "allocation_info": self.allocation_info, "calibration_shape": self.calibration_shape,
                "layers": self.layers.to_dict(orient="records")}


class PeakRSS:
    """Context manager sampling this process's resident set size every ``interval`` s; ``.peak_mb``, ``.start_mb``."""

    def __init__(self, interval: float = 0.05):
        import psutil

        self._proc = psutil.Process()
        self.interval = interval
        self.start_mb = self.peak_mb = self._proc.memory_info().rss / 2**20
        self._stop = threading.Event()

    def _loop(self):
        while not self._stop.wait(self.interval):
            self.peak_mb = max(self.peak_mb, self._proc.memory_info().rss / 2**20)

    def __enter__(self):
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, self._proc.memory_info().rss / 2**20)
        return False


def compute_allocation(model: torch.nn.Module, settings: PruneSettings, calib: Optional[torch.Tensor] = None,
                       metrics: Optional[pd.DataFrame] = None, input_norms: Optional[dict] = None,
                       progress: bool = False) -> pd.DataFrame:
    """Contract 2 allocation DataFrame (``longname block role num_params metric sparsity``) for the dense ``model``.

    ``metrics`` (a spectra DataFrame of this model) and ``input_norms`` (from ``collect_input_norms``) may be given
    to skip recomputing them (the sweep does so).
    """
    from spectra.weights import iter_model_weights, weight_table

    from pruning.allocation import SPECTRAL_METHODS, WEIGHT_METHODS, allocate, allocation_options, load_allocation, \
        owl_outlier_ratios
    from pruning.sequential import collect_input_norms

    table = weight_table(model)
    table = table[table["block"] >= 0].reset_index(drop=True)
    S = float(settings.sparsity)
    nm = settings.nm_tuple()
    if settings.allocation_file:
        loaded = load_allocation(settings.allocation_file)
        missing = [n for n in table["longname"] if n not in loaded]
        if missing:
            raise ValueError(f"allocation file {settings.allocation_file} has no sparsity for {missing[0]} "
                             f"(and {len(missing) - 1} more); was it made for another model?")
        df = table[["longname", "block", "role", "num_params"]].copy()
        df["metric"] = float("nan")
        df["sparsity"] = [float(loaded[n]) for n in df["longname"]]
        df.attrs["allocation"] = {"method": getattr(loaded, "method", None) or "file",
                                  "file": str(settings.allocation_file), "settings": getattr(loaded, "settings", {})}
        return df
    method = settings.allocation
    if nm is not None:
        S = nm_sparsity(nm)
    weights = ratios = None
    owl: dict[str, Any] = {}
    if method in SPECTRAL_METHODS:
        if metrics is None:
            from spectra.analyze import AnalysisSettings, analyze

            metrics = analyze(model, AnalysisSettings(xmin_rule=settings.xmin_rule), progress=progress)
        base = metrics
    else:
        base = table
        if method in WEIGHT_METHODS or method == "owl":
            weights = {info.longname: w for info, w in iter_model_weights(model) if info.block >= 0}
        if method == "owl":
            if input_norms is None:
                if calib is None:
                    raise ValueError("OWL needs calibration windows (its outlier ratios use input norms)")
                input_norms = collect_input_norms(model, calib, settings.batch_size, progress=progress)
            ratios = owl_outlier_ratios(weights, input_norms, settings.owl_M, granularity=settings.granularity)
            owl = dict(owl_lambda=settings.owl_lambda, owl_M=settings.owl_M)
    opts = allocation_options(method, lam=settings.lam, mapping=settings.mapping, granularity=settings.granularity,
                              metric=settings.metric, exclude_flagged=bool(settings.exclude_flagged),
                              max_sparsity=settings.max_sparsity, weights=weights, outlier_ratios=ratios, **owl)
    return allocate(base, method, S, **opts)


def prune_model(model, tokenizer, settings: PruneSettings, progress_cb: Optional[Callable[[int, int, str], None]] = None,
                progress: bool = True, metrics: Optional[pd.DataFrame] = None, input_norms: Optional[dict] = None,
                calib: Optional[torch.Tensor] = None, device=None, block_io=None) -> PruneResult:
    """Allocate and prune ``model`` (a CausalLM or a ``LoadedModel``) in place; returns a :class:`PruneResult`.

    ``progress_cb(done, total, longname)`` after every pruned matrix. ``calib`` overrides the C4 windows (tests).
    ``device`` (compute device) and ``block_io`` (streamed blocks) go to :func:`pruning.sequential.prune_sequential`.
    """
    from pruning.evaluation.data import get_calibration

    settings.validate()
    model, tokenizer = model_and_tokenizer(model, tokenizer, require_tokenizer=False)
    nm = settings.nm_tuple()
    timings: dict[str, float] = {}
    t_all, cpu_all = time.perf_counter(), time.process_time()
    with PeakRSS() as mem:
        t = time.perf_counter()
        if calib is None and settings.needs_calibration():
            if tokenizer is None:
                raise ValueError("calibration needs the tokenizer; pass the LoadedModel or tokenizer=")
            calib = get_calibration(tokenizer, settings.nsamples, settings.seqlen, settings.seed,
                                    dataset=settings.calib_dataset, path=settings.data_path)
        timings["calibration"] = time.perf_counter() - t
        t = time.perf_counter()
        uniform = settings.allocation == "uniform" and not settings.allocation_file
        alloc = None if uniform else compute_allocation(model, settings, calib, metrics, input_norms, progress)
        timings["allocation"] = time.perf_counter() - t
        sparsity = (nm_sparsity(nm) if nm else float(settings.sparsity)) if alloc is None else \
            dict(zip(alloc["longname"], alloc["sparsity"].astype(float)))
        loop_calib = calib if settings.loop_needs_calibration() else None
        res = prune_sequential(model, loop_calib, sparsity, settings.pruner,
                               nm=nm, pruner_options=settings.pruner_options, correction=settings.correction,
                               sublayer_sequential=settings.sublayer_sequential, gd_steps=settings.gd_steps,
                               gd_options={"precondition": bool(settings.gd_precondition)},
                               batch_size=settings.batch_size, progress=progress, progress_cb=progress_cb,
                               device=device, block_io=block_io)
    for k, v in res.timings.items():
        timings[k if k != "total" else "loop"] = v
    timings["total"] = time.perf_counter() - t_all
    timings["cpu_total"] = time.process_time() - cpu_all  # CPU seconds of this process (robust to other load)
    layers = pd.DataFrame(res.layers)
    if alloc is not None:
        layers = layers.merge(alloc[["longname", "metric"]], on="longname", how="left")
    else:
        layers["metric"] = float("nan")
    layers = layers[["longname", "block", "role", "rows", "cols", "num_params", "metric", "target", "achieved",
                     "seconds"]]
    p = layers["num_params"].astype(float)
    info = dict(alloc.attrs.get("allocation", {})) if alloc is not None else {"method": "uniform"}
    return PruneResult(settings, layers, float((layers["target"] * p).sum() / p.sum()),
                       float((layers["achieved"] * p).sum() / p.sum()), timings, mem.peak_mb, mem.start_mb,
                       jsonable(info), tuple(calib.shape) if calib is not None else None)
