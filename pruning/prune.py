"""Prune a model end to end: layer-wise allocation (uniform, AlphaPruning, OWL, ...) + sequential layer pruning.

``prune_model(model, tokenizer, PruneSettings(...))`` computes the per-matrix sparsities — spectral metrics of the
dense model (:func:`spectra.analyze.analyze`) for ``alphapruning`` / ``stable_rank``, the dense model's input norms
(:func:`pruning.block_loop.collect_input_norms`) for ``owl``, the weights for ``global`` / ``lamp``, shapes for ``erk``
— then runs :func:`pruning.block_loop.prune_blocks` (Wanda/SparseGPT reference protocol: C4 calibration windows,
block by block). The model is pruned in place.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import pandas as pd
import torch

from pruning.block_loop import prune_blocks
from pruning.settings import LATER_FIELDS, PruneSettings
from spectra.models import model_and_tokenizer
from spectra.results import jsonable

__all__ = ["PruneSettings", "PruneResult", "LATER_FIELDS", "compute_allocation", "prune_model", "PeakRSS"]



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
        return {"settings": self.settings.flat(), "target_sparsity": self.target_sparsity,
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


def calibration_signal(model: torch.nn.Module, settings: PruneSettings, calib: Optional[torch.Tensor] = None,
                       input_norms: Optional[dict] = None, progress: bool = False, device=None,
                       block_io=None) -> dict:
    """The calibration signal of the settings' allocation (OWL's outlier ratios, DLP's block scores: the spec's
    ``signal(weights, input_sq_norms, settings)``) for the dense ``model``, computed one block at a time while the
    block is loaded.

    Without ``input_norms`` one walk over the blocks collects the calibration input norms (``calib``) and reads each
    block's weights (:func:`pruning.block_loop.collect_input_norms` with ``on_block``); a streamed model's
    ``block_io`` must then free the blocks it releases without writing them (a ``StreamedModel`` without writer).
    The signal equals that of all weights at once: each block's value reads only its own weights and norms.
    """
    from pruning.allocation import get_allocation
    from pruning.block_loop import collect_input_norms
    from pruning.blocks import block_linears, walk_blocks

    a = settings.allocation
    spec = get_allocation(a.method)
    if spec.signal is None:
        raise ValueError(f"{spec.label} (--allocation {a.method}) reads no calibration signal")
    out: dict = {}

    def add(linears, norms: dict) -> None:
        weights = {lin.longname: lin.get() for lin in linears}
        out.update(spec.signal(weights, {n: norms[n] for n in weights}, a))

    if input_norms is not None:
        per_block = block_linears(model)
        for b, _ in walk_blocks(model, device, block_io):
            add(per_block[b], input_norms)
        return out
    if calib is None:
        raise ValueError(f"{spec.label} (--allocation {a.method}) needs calibration windows (it reads the calibration "
                         f"input norms); give calibration data (--nsamples > 0, --data-dir)")
    collect_input_norms(model, calib, settings.calibration.batch_size, progress=progress, device=device,
                        block_io=block_io,
                        on_block=lambda b, linears, stats: add(linears, {n: st.sq_norm for n, st in stats.items()}))
    return out


def compute_allocation(model: torch.nn.Module, settings: PruneSettings, calib: Optional[torch.Tensor] = None,
                       metrics: Optional[pd.DataFrame] = None, input_norms: Optional[dict] = None,
                       progress: bool = False, signal: Optional[dict] = None) -> pd.DataFrame:
    """Contract 2 allocation DataFrame (``longname block role num_params metric sparsity``) for the dense ``model``.

    ``metrics`` (a spectra DataFrame of this model), ``input_norms`` (from ``collect_input_norms``) and the
    calibration ``signal`` (:func:`calibration_signal`; a streamed model's comes from a read-only walk) may be given
    to skip recomputing them (the sweep does so).
    """
    from pruning.allocation import load_allocation
    from spectra.weights import weight_table

    table = weight_table(model)
    table = table[table["block"] >= 0].reset_index(drop=True)
    a = settings.allocation
    if a.file and not _reads_table(a.method):
        loaded = load_allocation(a.file)
        missing = [n for n in table["longname"] if n not in loaded]
        if missing:
            raise ValueError(f"allocation file {a.file} has no sparsity for {missing[0]} "
                             f"(and {len(missing) - 1} more); was it made for another model?")
        df = table[["longname", "block", "role", "num_params"]].copy()
        df["metric"] = float("nan")
        df["sparsity"] = [float(loaded[n]) for n in df["longname"]]
        df.attrs["allocation"] = {"method": getattr(loaded, "method", None) or "file",
                                  "file": str(a.file), "settings": getattr(loaded, "settings", {})}
        return df
    return _registered_allocation(model, settings, table, calib, metrics, input_norms, progress, signal)


def _registered_allocation(model, settings: PruneSettings, table: pd.DataFrame, calib, metrics, input_norms,
                           progress: bool, signal: Optional[dict] = None) -> pd.DataFrame:
    """The allocation of a registered method: reads what its spec says (spectral metrics, the weights, the
    calibration input norms) and dispatches to :func:`pruning.allocation.allocate`."""
    from pruning.allocation import allocate, get_allocation
    from spectra.weights import iter_model_weights

    a = settings.allocation
    spec = get_allocation(a.method)
    weights = None
    base = table
    if spec.reads == "metrics":
        if metrics is None or (spec.analysis.get("farms") and "alpha_farms" not in metrics.columns):
            from spectra.analyze import AnalysisSettings, analyze

            metrics = analyze(model, AnalysisSettings(xmin_rule=a.xmin_rule, **spec.analysis), progress=progress)
        base = metrics
    elif spec.reads == "weights":
        weights = {info.longname: w for info, w in iter_model_weights(model) if info.block >= 0}
    if spec.reads == "table":  # a measured table (python -m pruning sensitivity) named by --allocation-file
        if not a.file:
            raise ValueError(f"{spec.label} (--allocation {a.method}) reads a measured table; pass it with "
                             f"--allocation-file (python -m pruning sensitivity MODEL --out sens.parquet)")
        from pruning.sensitivity_table import read_table
        from pruning.signals import measured_costs

        signal = measured_costs(read_table(a.file))
    if spec.needs_calibration and signal is None:
        signal = calibration_signal(model, settings, calib, input_norms, progress)
    return allocate(base, a.method, float(a.sparsity), **a.allocate_kwargs(weights, signal=signal))


def _reads_table(method: str) -> bool:
    from pruning.allocation import get_allocation

    return get_allocation(method).reads == "table"


def prune_model(model, tokenizer, settings: PruneSettings, progress_cb: Optional[Callable[[int, int, str],
                                                                                          None]] = None,
                progress: bool = True, metrics: Optional[pd.DataFrame] = None, input_norms: Optional[dict] = None,
                calib: Optional[torch.Tensor] = None, device=None, block_io=None,
                signal: Optional[dict] = None) -> PruneResult:
    """Allocate and prune ``model`` (a CausalLM or a ``LoadedModel``) in place; returns a :class:`PruneResult`.

    ``progress_cb(done, total, longname)`` after every pruned matrix. ``calib`` overrides the C4 windows (tests).
    ``device`` (compute device) and ``block_io`` (streamed blocks) go to :func:`pruning.block_loop.prune_blocks`.
    """
    from pruning.evaluation.data import get_calibration

    model, tokenizer = model_and_tokenizer(model, tokenizer, require_tokenizer=False)
    nm = settings.nm_tuple()
    cal, pr = settings.calibration, settings.pruner
    timings: dict[str, float] = {}
    t_all, cpu_all = time.perf_counter(), time.process_time()
    with PeakRSS() as mem:
        t = time.perf_counter()
        if calib is None and settings.needs_calibration():
            if tokenizer is None:
                raise ValueError("calibration needs the tokenizer; pass the LoadedModel or tokenizer=")
            calib = get_calibration(tokenizer, cal.nsamples, cal.seqlen, cal.seed, dataset=cal.dataset,
                                    path=cal.data_path)
        timings["calibration"] = time.perf_counter() - t
        t = time.perf_counter()
        alloc = None if settings.allocation.is_uniform else compute_allocation(model, settings, calib, metrics,
                                                                                input_norms, progress, signal)
        timings["allocation"] = time.perf_counter() - t
        sparsity = float(settings.allocation.sparsity) if alloc is None else \
            dict(zip(alloc["longname"], alloc["sparsity"].astype(float)))
        loop_calib = calib if settings.loop_needs_calibration() else None
        res = prune_blocks(model, loop_calib, sparsity, pr.name, nm=nm, pruner_options=pr.options,
                               correction=pr.correction, sublayers_in_order=pr.sublayers_in_order,
                               gd_steps=settings.gd.steps, gd_options={"precondition": bool(settings.gd.precondition)},
                               batch_size=cal.batch_size, progress=progress, progress_cb=progress_cb,
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
