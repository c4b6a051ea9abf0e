"""The app's cached heavy work: the model, its analyses and results files, weights, calibration windows and input
norms, LAMP's sorted scores, allocations (and the λ-effect table), dense perplexity, one layer's inputs, the FISTA
path and the prox24 schedule. Every function calls :mod:`spectra` / :mod:`pruning`; Streamlit's caches keep the
results per process.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import streamlit as st

from pruning.allocation import CALIBRATION_METHODS, WEIGHT_METHODS, allocate, allocation_options
from pruning.settings import AllocationSettings
from spectra.analyze import AnalysisSettings, analyze
from spectra.errors import SpectraError
from webapp import read_ahead
from webapp.imports import import_transformers
from webapp.widgets import default_of

CALIB_SEED = 0
#: the FISTA λ path shown: 10 λ from λmax down to 1e-6·λmax (0 → ~100 % sparsity on this model), warm-started,
#: at most 100 FISTA iterations each, float32 (a few seconds per attention layer on 2 cores)
FISTA_PATH = {"num": 10, "min_ratio": 1e-6, "max_iter": 100, "tol": 1e-4, "dtype": "float32"}
#: the prox24 schedule shown: a faster-growing μ_t than the pruner's default (growth 1.1) and float32 iterates
#: (a few seconds per attention layer on 2 cores)
PROX24_SCHEDULE = {"mu0": 1e-2, "growth": 1.25, "max_steps": 300, "dtype": "float32"}


def source_key(source: Optional[str]) -> str:
    """The cache key of a model source: ``builtin`` for the default built-in model, else the source as given."""
    from spectra.models import DEFAULT_MODEL, builtin_name

    return "builtin" if builtin_name(source) == DEFAULT_MODEL else str(source)


#: prunes that may run at once in one server process (all sessions together); a further one waits in a queue
#: (:class:`PruneQueue`). Each holds a deep copy of the model, its calibration activations and an evaluation:
#: ≈1 GB of peak memory per run of the built-in model (bench/RESULTS_app_load.md).
PRUNE_SLOTS = 4


class PruneQueue:
    """A bounded, process-wide queue for prunes: :meth:`slot` waits (calling ``on_wait(running, waiting)`` about once a
    second, so that the page can say so) until one of :data:`PRUNE_SLOTS` is free."""

    def __init__(self, slots: int = PRUNE_SLOTS):
        import threading

        self.slots = int(slots)
        self._sem = threading.BoundedSemaphore(self.slots)
        self._lock = threading.Lock()
        self.running = 0
        self.waiting = 0

    def slot(self, on_wait=None):
        import contextlib

        @contextlib.contextmanager
        def held():
            with self._lock:
                self.waiting += 1
            try:
                while not self._sem.acquire(timeout=1.0):
                    if on_wait is not None:
                        on_wait(self.running, self.waiting)
            finally:
                with self._lock:
                    self.waiting -= 1
            with self._lock:
                self.running += 1
            try:
                yield
            finally:
                with self._lock:
                    self.running -= 1
                self._sem.release()

        return held()


@st.cache_resource(show_spinner=False)
def prune_queue() -> PruneQueue:
    """The one :class:`PruneQueue` of this server process."""
    return PruneQueue(PRUNE_SLOTS)


# ============================================================================================== cached heavy work
@st.cache_resource(show_spinner=False)
def _analysis_store() -> dict:
    """Analyses of this server process, keyed by (source, xmin rule); the spectra disk cache sits below it."""
    return {}


@st.cache_resource(show_spinner="Loading the model (the built-in one's first use converts its GGUF: a few seconds) …",
                   max_entries=2)
def load_model_cached(key: str):
    """The loaded model (shared by all sessions; never modified — pruning works on a deep copy). Each load is
    logged on stderr (``spl: loading model …``), so that a server log shows it happened once."""
    import sys

    from spectra.models import load_model

    print(f"spl: loading model {key} (once per server process)", file=sys.stderr, flush=True)
    return load_model(None if key == "builtin" else key)


#: seconds between two redraws of the growing depth chart while a model is analysed
LIVE_CHART_EVERY_S = 0.8


def get_analysis(source: Optional[str], rule: str) -> pd.DataFrame:
    """Contract 1 table with an ``evals`` column for ``source`` and ``rule``. A first analysis runs on every core
    (``AnalysisSettings.workers``; same numbers as one thread) with a progress bar and draws α along depth as the
    rows arrive (:data:`LIVE_CHART_EVERY_S`)."""
    import os
    import time

    store = _analysis_store()
    key = (source_key(source), rule)
    if key in store:
        return store[key]
    bar = st.progress(0.0, text=f"Analysing {key[0]} (xmin rule {rule}) … the first use of a GGUF model (the "
                                f"built-in one included) converts it to safetensors first, a few seconds")
    live = st.empty()
    rows: list = []
    last = [0.0]

    def on_row(row: dict) -> None:
        rows.append({k: row.get(k) for k in ("layer_id", "longname", "block", "role", "alpha")})
        if time.perf_counter() - last[0] >= LIVE_CHART_EVERY_S:
            last[0] = time.perf_counter()
            live_chart(live, pd.DataFrame(rows), key[0])

    def cb(i: int, n: Optional[int], name: str) -> None:
        frac = min(1.0, i / n) if n else 0.0
        bar.progress(frac, text=f"Analysing {key[0]}: {i}/{n or '?'} matrices {name}")

    try:
        settings = AnalysisSettings(xmin_rule=rule, keep_eigs=True, workers=max(1, os.cpu_count() or 1))
        df = analyze(source, settings, progress=False, progress_cb=cb, on_row=on_row)
    finally:
        bar.empty()
        live.empty()
    store[key] = df
    warm_model(source)
    return df


#: the calibration windows read ahead with the model (the app's default prune and OWL use them; the same values as
#: ``webapp.state.APP_DEFAULTS``, checked by tests/test_app_ux.py)
WARM_CALIBRATION = (16, 256)


def warm_model(source: Optional[str]) -> None:
    """Once the analysis is shown, read ahead in a background thread that gives way to the pages
    (:mod:`webapp.read_ahead`): build a GGUF model's tokenizer (``spectra.models.source_tokenizer_ready``), load the
    model (:func:`load_model_cached`, shared by every session), read the default calibration windows
    (:data:`WARM_CALIBRATION`) and compute the dense model's input norms on them with OWL's outlier ratios
    (:func:`input_norms`: one forward pass, then kept on disk; :func:`owl_ratios`), so that the first prune, OWL
    allocation or λ search does not wait for them; a failure is left to the page that needs them."""
    from spectra.models import source_tokenizer_ready

    import_transformers()  # before the read-ahead's thread starts

    def work() -> None:  # a λ step pauses it between phases, and between two blocks of the forward
        source_tokenizer_ready(source)
        read_ahead.yield_to_pages()
        key = source_key(source)
        load_model_cached(key)
        read_ahead.yield_to_pages()
        calibration_windows(key, *WARM_CALIBRATION)
        read_ahead.yield_to_pages()
        owl_ratios(key, *WARM_CALIBRATION, WARM_GRANULARITY)  # the Allocation lab's call, cached the same

    read_ahead.start(work)


#: OWL's granularity read ahead: the Allocation lab's default (``AllocationSettings.granularity``)
WARM_GRANULARITY = default_of(AllocationSettings, "granularity")


def live_chart(slot, rows: pd.DataFrame, label: str) -> None:
    """α along depth of the rows analysed so far, drawn in ``slot`` (replaced by the overview when done)."""
    from spectra.plots import metric_depth_figure

    fig = metric_depth_figure(rows, "alpha", title=f"α along depth, per role — {label} (analysing: {len(rows)} "
                                                   f"matrices so far)")
    slot.plotly_chart(fig, width="stretch", config={"displaylogo": False})


def get_results_file(path: str) -> pd.DataFrame:
    from spectra.results import load_results

    p = Path(path).expanduser()
    store = _analysis_store()
    key = ("results", str(p.resolve()), p.stat().st_mtime_ns if p.is_file() else 0)
    if key not in store:
        df = load_results(p)
        missing = [c for c in ("longname", "block", "role", "num_params", "alpha") if c not in df.columns]
        if missing:
            raise SpectraError(f"{p} is not a spectra results table (no column {', '.join(missing)}); "
                               f"write one with `python -m spectra --out FILE`")
        store[key] = df
    return store[key]


def hookable_model(key: str):
    """The shared model (:func:`load_model_cached`) for work that registers hooks on its modules (the calibration
    statistics, a layer's inputs), as :func:`pruning.blocks.hook_view`: the same parameters, its own hook tables.
    The shared model itself is never hooked: a hook there would fire in the forward passes other threads run on it
    at the same time (the read-ahead, other sessions) and travel into the deep copies they take for a prune or a
    search."""
    from pruning.blocks import hook_view

    return hook_view(load_model_cached(key).model)


def model_weights(key: str) -> dict:
    """{longname: W (out, in)} views of the loaded model's block matrices (for global / LAMP)."""
    from spectra.weights import iter_model_weights

    lm = load_model_cached(key)
    return {info.longname: w for info, w in iter_model_weights(lm.model)}


@st.cache_resource(show_spinner=False, max_entries=1)
def lamp_scores(key: str) -> dict:
    """{longname: ``pruning.allocation.LampScores``} of the loaded model's block matrices
    (``pruning.allocation.lamp_score_table``), sorted once per model and shared by every session: a new target S
    with LAMP shown then costs one threshold fit, not a sort of every weight (4 bytes a weight kept: 0.42 GiB for the
    built-in model)."""
    from pruning.allocation import lamp_score_table

    return lamp_score_table(model_weights(key))


@st.cache_resource(show_spinner=False, max_entries=4)
def calibration_windows(key: str, nsamples: int, seqlen: int):
    """The C4 calibration windows (``pruning.evaluation.data.get_calibration``, seed :data:`CALIB_SEED`), read once
    per model
    and setting."""
    from pruning.evaluation.data import get_calibration

    lm = load_model_cached(key)
    return get_calibration(lm.tokenizer, nsamples=nsamples, seqlen=seqlen, seed=CALIB_SEED)


@st.cache_resource(show_spinner=False, max_entries=4)
def input_norms(key: str, nsamples: int, seqlen: int) -> dict:
    """The dense model's calibration input norms Σx² per input feature, for OWL and DLP: the ``sq_norm`` of
    ``pruning.calib_stats.dense_stats`` on :func:`calibration_windows` (one dense forward, the numbers of
    ``collect_input_norms``), kept on disk by model weights and windows — the λ search and the leaderboard read the
    same file, and a restarted app does not run the forward again."""
    from pruning.calib_stats import dense_stats
    from pruning.settings import CalibrationSettings

    lm = load_model_cached(key)
    stats = dense_stats(hookable_model(key), lm.tokenizer,
                        CalibrationSettings(nsamples=nsamples, seqlen=seqlen, seed=CALIB_SEED),
                        calib=calibration_windows(key, nsamples, seqlen).clone(),
                        progress_cb=read_ahead.pause_points())
    return {name: rec.sq_norm.clone() for name, rec in stats.layers.items()}


@st.cache_data(show_spinner=False, max_entries=8)
def owl_ratios(key: str, nsamples: int, seqlen: int, granularity: str = "block") -> dict:
    """OWL outlier ratio per block (or matrix) (``owl_outlier_ratios``) from the dense model's input norms."""
    from pruning.allocation import owl_outlier_ratios

    return owl_outlier_ratios(model_weights(key), input_norms(key, nsamples, seqlen), granularity=granularity,
                              progress_cb=read_ahead.pause_points())


@st.cache_data(show_spinner=False, max_entries=8)
def calibration_signal(key: str, method: str, nsamples: int, seqlen: int, granularity: str = "block") -> dict:
    """The calibration signal of ``method`` (OWL's outlier ratios, DLP's block scores: its spec's ``signal``) from
    the dense model's input norms."""
    from pruning.allocation import get_allocation
    from pruning.settings import AllocationSettings

    if method == "owl":
        return owl_ratios(key, nsamples, seqlen, granularity)
    spec = get_allocation(method)
    return spec.signal(model_weights(key), input_norms(key, nsamples, seqlen),
                       AllocationSettings(method=method, granularity=granularity))


def metrics_for_alloc(df: pd.DataFrame) -> pd.DataFrame:
    """The analysis table without its eigenvalues and without its ``attrs`` (what the allocations read: columns
    only; pandas deep-copies ``attrs`` in every operation: up to a third of an allocation's time)."""
    out = df.drop(columns=[c for c in ("evals",) if c in df.columns])
    out.attrs = {}
    return out


#: the neutral value of each setting a method does not read (its cache key then does not change with it)
NEUTRAL_SETTINGS = {"lam": 0.0, "mapping": "linear", "granularity": "block", "metric": "alpha",
                    "exclude_flagged": False}


def method_settings(method: str, settings: dict) -> dict:
    """``settings`` with those ``method`` does not read (``pruning.allocation.settings_read``; the OWL calibration
    size for the other methods) set to neutral values, in one key order: moving λ then re-uses the cached uniform,
    ERK, OWL, …, and the AlphaPruning allocations of the λ-effect chart (:func:`lambda_range`) serve the curves."""
    from pruning.allocation import settings_read

    read = settings_read(method)
    out = {**settings, **{k: v for k, v in NEUTRAL_SETTINGS.items() if k not in read}}
    if method not in CALIBRATION_METHODS:
        out.update(nsamples=0, seqlen=0)
    return dict(sorted(out.items()))  # one key order: equal settings are one cache entry wherever they come from


@st.cache_data(show_spinner=False, max_entries=256)
def cached_allocation(_df: pd.DataFrame, df_key: tuple, model_key: Optional[str], method: str,
                      settings: dict) -> pd.DataFrame:
    """``pruning.allocation.allocate`` with the options of the Allocation lab (``settings``: ``S lam mapping
    granularity metric lo hi nsamples seqlen`` and optionally ``exclude_flagged``; ``allocation_options`` picks those
    the method reads; cached by every setting). The weights and OWL ratios are loaded only for the methods that read
    them."""
    s = {"exclude_flagged": False, **settings}
    S, lam, mapping, granularity, metric = s["S"], s["lam"], s["mapping"], s["granularity"], s["metric"]
    lo, hi, nsamples, seqlen, exclude_flagged = s["lo"], s["hi"], s["nsamples"], s["seqlen"], s["exclude_flagged"]
    weights = None
    if model_key is not None and method in WEIGHT_METHODS:
        weights = lamp_scores(model_key) if method == "lamp" else model_weights(model_key)
    ratios = None
    if model_key is not None and method in CALIBRATION_METHODS:
        with read_ahead.waiting():
            ratios = calibration_signal(model_key, method, nsamples, seqlen, granularity)
    kw = allocation_options(method, lam=lam, mapping=mapping, granularity=granularity, metric=metric,
                            exclude_flagged=exclude_flagged, min_sparsity=lo, max_sparsity=hi, weights=weights,
                            outlier_ratios=ratios)
    return allocate(metrics_for_alloc(_df), method, S, **kw)


def lambda_range(_df: pd.DataFrame, df_key: tuple, model_key: Optional[str], settings: dict) -> pd.DataFrame:
    """AlphaPruning's min / max / weighted-mean sparsity for λ = 0, 0.05, …, 1 at ``settings`` (λ itself ignored);
    cached through :func:`lambda_range_chart`, its only reader."""
    from pruning.allocation import AllocationError
    from pruning.plots import weighted_mean_sparsity

    rows = []
    for lam in np.round(np.linspace(0.0, 1.0, 21), 3):
        try:
            a = cached_allocation(_df, df_key, model_key, "alphapruning",  # the curves' entry at this λ too
                                  method_settings("alphapruning", {**settings, "lam": float(lam)}))
        except (AllocationError, ValueError):
            continue
        sp = a["sparsity"].to_numpy()
        rows.append({"lam": float(lam), "min": float(sp.min()), "max": float(sp.max()),
                     "weighted_mean": weighted_mean_sparsity(a)})
    return pd.DataFrame(rows)


@st.cache_resource(show_spinner=False, max_entries=64)
def lambda_range_chart(_df: pd.DataFrame, df_key: tuple, model_key: Optional[str], settings_items: tuple):
    """The plotly figure of :func:`lambda_range`, built once per analysis and settings (never mutated), so that
    moving λ recomputes neither."""
    from pruning.plots import lambda_range_figure

    table = lambda_range(_df, df_key, model_key, dict(settings_items))
    if table.empty:
        return None
    return lambda_range_figure(table, title="min / max per-matrix sparsity against λ")


@st.cache_data(show_spinner=False, max_entries=16)
def spurious_blocks(_df: pd.DataFrame, df_key: tuple) -> pd.DataFrame:
    """:func:`spectra.analyze.spurious_blocks` of the open analysis (cached per analysis)."""
    from spectra.analyze import spurious_blocks as blocks

    return blocks(_df)


@st.cache_resource(show_spinner=False)
def _dense_store() -> dict:
    """Dense perplexities of this server process, keyed by (model, dataset, window length, windows)."""
    return {}


DENSE_KEEP = 16  # dense perplexities kept per process


def dense_perplexity(key: str, dataset: str, seqlen: int, windows: int, progress_cb=None) -> float:
    """The dense model's perplexity, computed once per (model, dataset, window length, windows) and server process;
    ``progress_cb(done, total)`` after every window of that first computation (the prune's progress bar)."""
    from pruning.evaluation.perplexity import perplexity

    store, k = _dense_store(), (key, dataset, int(seqlen), int(windows))
    if k not in store:
        lm = load_model_cached(key)
        store[k] = float(perplexity(lm.model, lm.tokenizer, dataset, seqlen=seqlen, max_windows=windows,
                                    progress=False, progress_cb=progress_cb).ppl)
        while len(store) > DENSE_KEEP:
            store.pop(next(iter(store)))
    return store[k]


@st.cache_data(show_spinner=False, max_entries=16)
def dense_zero_shot(key: str, tasks: tuple, limit: Optional[int]) -> dict:
    """lm-eval columns (``piqa_acc``, ...) of the dense model on ``tasks`` (``pruning.evaluation.lmeval``)."""
    from pruning.evaluation.lmeval import evaluate_tasks

    lm = load_model_cached(key)
    return evaluate_tasks(lm.model, lm.tokenizer, list(tasks), limit=limit).flat()


def layer_inputs(key: str, name: str, nsamples: int, seqlen: int):
    """(W, X) of the layer ``name`` of the dense model on its calibration windows
    (``pruning.capture.capture_layer_inputs``)."""
    from pruning.capture import capture_layer_inputs

    return capture_layer_inputs(hookable_model(key), name, calibration_windows(key, nsamples, seqlen))


@st.cache_data(show_spinner=False, max_entries=16)
def fista_path(key: str, name: str, nsamples: int, seqlen: int) -> pd.DataFrame:
    """``pruning.pruners.fista.fista_lambda_path`` of one layer of the dense model on its calibration inputs (no error
    correction: X* = X; :func:`layer_inputs`)."""
    import torch

    from pruning.pruners.base import LayerStats
    from pruning.pruners.fista import fista_lambda_path

    W, X = layer_inputs(key, name, nsamples, seqlen)
    opts = {**FISTA_PATH, "dtype": getattr(torch, FISTA_PATH["dtype"])}
    return fista_lambda_path(W, LayerStats.from_inputs(X), **opts)


@st.cache_data(show_spinner=False, max_entries=16)
def prox24_schedule(key: str, name: str, nsamples: int, seqlen: int) -> tuple[pd.DataFrame, dict]:
    """The 2:4 proximal pruner on one layer of the dense model (``pruning.pruners.prox24.prox24_prune(record=True)``
    with
    :data:`PROX24_SCHEDULE`, no error correction, inputs from :func:`layer_inputs`): its recorded schedule
    (``Prox24Info.schedule()``) and a summary (steps, converged, forced groups, groups, rms of W)."""
    import torch

    from pruning.pruners.base import LayerStats
    from pruning.pruners.prox24 import prox24_prune

    W, X = layer_inputs(key, name, nsamples, seqlen)
    opts = {**PROX24_SCHEDULE, "dtype": getattr(torch, PROX24_SCHEDULE["dtype"])}
    _, info = prox24_prune(W, LayerStats.from_inputs(X), record=True, **opts)
    meta = {"steps": info.steps, "converged": info.converged, "forced_groups": info.forced_groups,
            "groups": info.groups, "rms": float(W.to(torch.float64).pow(2).mean().sqrt())}  # of W (V: rescaled)
    return info.schedule(), meta


@st.cache_resource(show_spinner=False)
def kaleido_server() -> bool:
    """Start kaleido's image server once per process (PNG / SVG downloads of the Report)."""
    import kaleido

    try:
        kaleido.start_sync_server(silence_warnings=True)
        return True
    except Exception:  # noqa: BLE001
        return False


@st.cache_data(show_spinner=False, max_entries=4)
def farms_table(key: str, rule: str) -> pd.DataFrame:
    """FARMS α next to α (``analyze(..., farms=True)``; cached on disk by spectra) of the model ``key``."""
    from spectra.farms import FARMS_COLUMNS

    df = analyze(None if key == "builtin" else key, AnalysisSettings(xmin_rule=rule, farms=True), progress=False)
    return df[["longname", "block", "role", "rows", "cols", "alpha", *FARMS_COLUMNS]]


@st.cache_data(show_spinner=False, max_entries=16)
def farms_evals(key: str, name: str) -> np.ndarray:
    """The pooled FARMS ESD of one matrix (``spectra.analyze.matrix_farms_esd``, default windows)."""
    from spectra.analyze import matrix_farms_esd

    return matrix_farms_esd(None if key == "builtin" else key, name)
