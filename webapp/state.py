"""The state every page shares: defaults, the shared selection (:func:`selection`, :func:`bind`), each view's
settings as the other views read them, the loaded model context and the cached heavy work.

Pages read another view's settings only through the functions here (never its widget keys). Nothing here computes
a metric, an allocation or a perplexity itself: the cached loaders call :mod:`spectra` and :mod:`pruning`.
"""
from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd
import streamlit as st

from pruning import plots as pplots
from pruning.allocation import WEIGHT_METHODS, allocate, allocation_options
from spectra.analyze import AnalysisSettings, analyze
from spectra.errors import SpectraError
from spectra.hill import XMIN_RULES

#: the views, in the order of the navigation, and the page file of each (relative to app.py)
VIEW_PAGES = {"Model overview": "webapp/overview.py", "ESD explorer": "webapp/esd_explorer.py",
              "Allocation lab": "webapp/allocation_lab.py", "Prune & evaluate": "webapp/prune_evaluate.py",
              "Report": "webapp/report.py"}
VIEWS = tuple(VIEW_PAGES)
SOURCE_KINDS = ("Built-in model", "Hugging Face id", "Local directory", ".gguf file", "Saved results file")
#: xmin rules offered (spectra.hill.XMIN_RULES without "fixed", AlphaPruning's default first)
ANALYSIS_RULES = tuple(["peak"] + [r for r in XMIN_RULES if r not in ("peak", "fixed")])
METHOD_LABELS = pplots.ALLOCATION_LABELS
CALIB_SEED = 0
#: the FISTA λ path shown: 10 λ from λmax down to 1e-6·λmax (0 → ~100 % sparsity on this model), warm-started,
#: at most 100 FISTA iterations each, float32 (a few seconds per attention layer on 2 cores)
FISTA_PATH = {"num": 10, "min_ratio": 1e-6, "max_iter": 100, "tol": 1e-4, "dtype": "float32"}
#: the prox24 schedule shown: a faster-growing μ_t than the pruner's default (growth 1.1) and float32 iterates
#: (a few seconds per attention layer on 2 cores)
PROX24_SCHEDULE = {"mu0": 1e-2, "growth": 1.25, "max_steps": 300, "dtype": "float32"}

#: persistent settings (kept across page switches) and their defaults; ``view`` is the page shown (set by app.py)
DEFAULTS: dict[str, Any] = {
    "view": VIEWS[0], "source_kind": SOURCE_KINDS[0], "source_text": "", "builtin_choice": "smollm2", "rule": "peak",
    "ov_metric": "alpha", "ov_weighted": False,
    "esd_rule": "peak", "esd_mp": True, "esd_compare": "nothing", "esd_bins": 60, "esd_prune_s": 0.6,
    "al_mapping": "linear", "al_gran": "block", "al_by": "block",
    "al_methods": ["uniform", "alphapruning", "erk", "stable_rank"],
    "al_min": 0.0, "al_max": 0.99, "al_metric": "alpha", "al_exclude_flagged": False,
    "pr_pruner": "wanda", "pr_nsamples": 16,
    "pr_seqlen": 256, "pr_windows": 8, "pr_dataset": "wikitext2", "pr_sweep_path": "results/sweep.parquet",
    "pr_pattern": "unstructured", "pr_gd_steps": 0, "pr_gd_pre": True, "pr_literal": False,
    "tu_pruner": "wanda", "tu_lams": "0,0.1,0.2,0.3,0.4,0.5", "tu_nsamples": 16, "tu_windows": 8,
}
#: the selection every view shares: the matrix looked at (overview pick, ESD explorer, Report), the target sparsity
#: S, AlphaPruning's λ and the allocation method (Allocation lab export, Prune & evaluate). ``matrix`` None = the
#: median-α matrix of the open model.
SELECTION_DEFAULTS: dict[str, Any] = {"matrix": None, "S": 0.6, "lam": 0.3, "method": "alphapruning"}
#: sparsity range of both S sliders (one range, so that S carries from one view to the other unchanged)
S_RANGE = (0.05, 0.95)
#: allocations that need the model's weights or a calibration pass (slow the first time)
SLOW_METHODS = ("owl", *WEIGHT_METHODS)  # need a calibration pass or every weight


# ============================================================================================== state
def init_state() -> None:
    """Give every persistent setting a value; re-assigning keeps widget values alive across page switches."""
    for key, value in DEFAULTS.items():
        if key not in st.session_state:
            st.session_state[key] = copy.deepcopy(value)
        else:
            st.session_state[key] = st.session_state[key]
    st.session_state.setdefault("selection", copy.deepcopy(SELECTION_DEFAULTS))
    st.session_state.setdefault("source", None)  # the committed model source (None = built-in)
    st.session_state.setdefault("results_path", None)  # a saved results file, when that is the source
    st.session_state.setdefault("runs", [])
    st.session_state.setdefault("load_error", None)


def selection() -> dict:
    """The selection shared by every view (:data:`SELECTION_DEFAULTS`); views read S, λ, method and matrix here,
    never from another view's widgets."""
    return st.session_state["selection"]


def bind(key: str, name: str, valid: Optional[list] = None) -> dict:
    """Show the shared ``name`` in the widget ``key`` drawn right after this call (when the value is one of
    ``valid``), and return the ``on_change`` keyword arguments that write the widget's changes back."""
    value = selection()[name]
    # assign only on a real difference: an assignment pushes the value to the browser, which would undo a change the
    # user made there while this run was in flight (fast keyboard steps on a slider got lost that way)
    if value is not None and (valid is None or value in valid) and st.session_state.get(key) != value:
        st.session_state[key] = value
    return {"on_change": _store_selection, "args": (key, name)}


def _store_selection(key: str, name: str) -> None:
    selection()[name] = st.session_state[key]


def switch_view(view: str) -> None:
    """Show the page of ``view`` (one of :data:`VIEWS`): ends this run and reruns the app on that page."""
    st.switch_page(VIEW_PAGES[view])


def typical_matrix(df: pd.DataFrame) -> str:
    """The matrix whose α is the median of the fitted ones (the ESD explorer's first matrix)."""
    alpha = pd.to_numeric(df["alpha"], errors="coerce")
    if not alpha.notna().any():
        return str(df["longname"].iloc[0])
    ok = alpha.dropna().sort_values()
    return str(df.loc[ok.index[len(ok) // 2], "longname"])


def selected_matrix(df: pd.DataFrame) -> str:
    """The shared matrix, or the median-α matrix of ``df`` when none (or one of another model) is selected."""
    name = selection()["matrix"]
    if name not in set(df["longname"]):
        name = selection()["matrix"] = typical_matrix(df)
    return name


# ------------------------------------------------------------------ each view's settings, as the others read them
def overview_settings() -> tuple[str, bool]:
    """The Model overview's (metric, parameter-weighted block mean)."""
    return st.session_state.ov_metric, bool(st.session_state.ov_weighted)


def esd_settings() -> tuple[str, int]:
    """The ESD explorer's xmin rule (``manual`` read as ``peak``) and histogram bins."""
    rule = st.session_state.esd_rule
    return (rule if rule != "manual" else "peak"), int(st.session_state.esd_bins)


def calibration() -> tuple[int, int]:
    """Prune & evaluate's (calibration samples, tokens per sample) — also the Allocation lab's OWL and λ search."""
    return int(st.session_state.pr_nsamples), int(st.session_state.pr_seqlen)


def alloc_settings() -> dict:
    """The Allocation lab's settings with the shared S and λ (the keyword arguments of :func:`cached_allocation`)."""
    s = st.session_state
    sel = selection()
    nsamples, seqlen = calibration()
    return dict(S=float(sel["S"]), lam=float(sel["lam"]), mapping=s.al_mapping, granularity=s.al_gran,
                metric=s.al_metric, lo=float(s.al_min), hi=float(s.al_max), nsamples=nsamples, seqlen=seqlen,
                exclude_flagged=bool(s.al_exclude_flagged))


def alloc_methods(fast_only: bool = False) -> list[str]:
    """The Allocation lab's methods (AlphaPruning when none; ``fast_only``: without :data:`SLOW_METHODS`)."""
    methods = [m for m in st.session_state.al_methods if not (fast_only and m in SLOW_METHODS)]
    return methods or ["alphapruning"]


def alloc_plot_by() -> str:
    """The Allocation lab's plot granularity (``block`` or ``matrix``)."""
    return st.session_state.al_by


def runs() -> list[dict]:
    """The Prune & evaluate runs of this session, oldest first."""
    return st.session_state.runs


# ============================================================================================== model context
class Context:
    """What the views need: the analysis table, where it came from and whether the model itself is loadable."""

    def __init__(self, df: pd.DataFrame, label: str, model_key: Optional[str], rule: str, df_key: tuple):
        self.df = df
        self.label = label
        self.model_key = model_key  # None when only a results file is open
        self.rule = rule
        self.df_key = df_key

    @property
    def has_evals(self) -> bool:
        return "evals" in self.df.columns and self.df["evals"].notna().any()

    @property
    def analysis_rule(self) -> str:
        """The xmin rule of this analysis when the library can run it again (pruning, tuning), else ``peak``."""
        return self.rule if self.rule in ANALYSIS_RULES else "peak"


def source_key(source: Optional[str]) -> str:
    """The cache key of a model source: ``builtin`` for the default built-in model, else the source as given."""
    from spectra.models import DEFAULT_MODEL, builtin_name

    return "builtin" if builtin_name(source) == DEFAULT_MODEL else str(source)


def resolve_context(on_error) -> Optional[Context]:
    """Run a pending load (analysis with progress) and return the context of the committed source; a failed load
    is passed to ``on_error(exc)`` (which returns the one-line message kept under the *Load* button)."""
    pending = st.session_state.pop("pending", None)
    if pending is not None:
        kind, value = pending
        try:
            if kind == "results":
                get_results_file(value)
                st.session_state.results_path, st.session_state.source = value, None
            else:
                get_analysis(value, st.session_state.rule)
                st.session_state.results_path, st.session_state.source = None, value
            selection()["matrix"] = None  # another model: its median-α matrix
        except Exception as exc:  # noqa: BLE001 - shown under the Load button; the previous model stays open
            st.session_state.load_error = "could not load the model: " + on_error(exc)
    if st.session_state.results_path:
        path = st.session_state.results_path
        df = get_results_file(path)
        meta = df.attrs.get("metadata", {})
        wdir = meta.get("weights_dir")
        model_key = wdir if wdir and Path(wdir).is_dir() else None
        ctx = Context(df, f"results file {path}", model_key, str(meta.get("xmin_rule", "?")), ("results", path))
    else:
        source, rule = st.session_state.source, st.session_state.rule
        ctx = Context(get_analysis(source, rule), source_key(source), source_key(source), rule,
                      (source_key(source), rule))
    st.session_state.context = ctx
    return ctx


def context() -> Optional[Context]:
    """The context app.py resolved for this run (None when the analysis failed)."""
    return st.session_state.get("context")


# ============================================================================================== cached heavy work
@st.cache_resource(show_spinner=False)
def _analysis_store() -> dict:
    """Analyses of this server process, keyed by (source, xmin rule); the spectra disk cache sits below it."""
    return {}


@st.cache_resource(show_spinner="Loading the model (the built-in one's first use converts its GGUF: ~25 s) …",
                   max_entries=2)
def load_model_cached(key: str):
    """The loaded model (shared by all sessions; never modified — pruning works on a deep copy)."""
    from spectra.models import load_model

    return load_model(None if key == "builtin" else key)


def get_analysis(source: Optional[str], rule: str) -> pd.DataFrame:
    """Contract 1 table with an ``evals`` column for ``source`` and ``rule``; shows progress on a first analysis."""
    store = _analysis_store()
    key = (source_key(source), rule)
    if key in store:
        return store[key]
    bar = st.progress(0.0, text=f"Analysing {key[0]} (xmin rule {rule}) … the first use of a GGUF model (the "
                                f"built-in one included) converts it to safetensors first, about half a minute")

    def cb(i: int, n: Optional[int], name: str) -> None:
        frac = min(1.0, i / n) if n else 0.0
        bar.progress(frac, text=f"Analysing {key[0]}: {i}/{n or '?'} matrices {name}")

    try:
        df = analyze(source, AnalysisSettings(xmin_rule=rule, keep_eigs=True), progress=False, progress_cb=cb)
    finally:
        bar.empty()
    store[key] = df
    return df


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


def model_weights(key: str) -> dict:
    """{longname: W (out, in)} views of the loaded model's block matrices (for global / LAMP)."""
    from spectra.weights import iter_model_weights

    lm = load_model_cached(key)
    return {info.longname: w for info, w in iter_model_weights(lm.model)}


@st.cache_resource(show_spinner=False, max_entries=4)
def calibration_windows(key: str, nsamples: int, seqlen: int):
    """The C4 calibration windows (``pruning.evaluation.data.get_calibration``, seed :data:`CALIB_SEED`), read once per model
    and setting."""
    from pruning.evaluation.data import get_calibration

    lm = load_model_cached(key)
    return get_calibration(lm.tokenizer, nsamples=nsamples, seqlen=seqlen, seed=CALIB_SEED)


@st.cache_resource(show_spinner=False, max_entries=4)
def input_norms(key: str, nsamples: int, seqlen: int) -> dict:
    """The dense model's calibration input norms Σx² per input feature (``collect_input_norms``), for OWL."""
    from pruning.sequential import collect_input_norms

    return collect_input_norms(load_model_cached(key).model, calibration_windows(key, nsamples, seqlen).clone())


@st.cache_data(show_spinner=False, max_entries=8)
def owl_ratios(key: str, nsamples: int, seqlen: int, granularity: str = "block") -> dict:
    """OWL outlier ratio per block (or matrix) (``owl_outlier_ratios``) from the dense model's input norms."""
    from pruning.allocation import owl_outlier_ratios

    return owl_outlier_ratios(model_weights(key), input_norms(key, nsamples, seqlen), granularity=granularity)


def metrics_for_alloc(df: pd.DataFrame) -> pd.DataFrame:
    """The analysis table without its eigenvalues (what the allocations read)."""
    return df.drop(columns=[c for c in ("evals",) if c in df.columns])


#: the neutral value of each setting a method does not read (its cache key then does not change with it)
NEUTRAL_SETTINGS = {"lam": 0.0, "mapping": "linear", "granularity": "block", "metric": "alpha",
                    "exclude_flagged": False}


def method_settings(method: str, settings: dict) -> dict:
    """``settings`` with those ``method`` does not read (``pruning.allocation.settings_read``; the OWL calibration
    size for the other methods) set to neutral values: moving λ then re-uses the cached uniform, ERK, OWL, …"""
    from pruning.allocation import settings_read

    read = settings_read(method)
    out = {**settings, **{k: v for k, v in NEUTRAL_SETTINGS.items() if k not in read}}
    if method != "owl":
        out.update(nsamples=0, seqlen=0)
    return out


@st.cache_data(show_spinner=False, max_entries=256)
def cached_allocation(_df: pd.DataFrame, df_key: tuple, model_key: Optional[str], method: str, S: float, lam: float,
                      mapping: str, granularity: str, metric: str, lo: float, hi: float, nsamples: int,
                      seqlen: int, exclude_flagged: bool = False) -> pd.DataFrame:
    """``pruning.allocation.allocate`` with the options of the Allocation lab (``allocation_options`` picks those the
    method reads; cached by every setting). The weights and OWL ratios are loaded only for the methods that read them."""
    weights = model_weights(model_key) if model_key is not None and method in WEIGHT_METHODS else None
    ratios = (owl_ratios(model_key, nsamples, seqlen, granularity) if model_key is not None and method == "owl"
              else None)
    kw = allocation_options(method, lam=lam, mapping=mapping, granularity=granularity, metric=metric,
                            exclude_flagged=exclude_flagged, min_sparsity=lo, max_sparsity=hi, weights=weights,
                            outlier_ratios=ratios)
    return allocate(metrics_for_alloc(_df), method, S, **kw)


@st.cache_data(show_spinner=False, max_entries=64)
def lambda_range(_df: pd.DataFrame, df_key: tuple, model_key: Optional[str], settings: dict) -> pd.DataFrame:
    """AlphaPruning's min / max / weighted-mean sparsity for λ = 0, 0.05, …, 1 at ``settings`` (λ itself ignored):
    one cached table per analysis and settings, so that moving λ does not recompute it."""
    from pruning.allocation import AllocationError
    from pruning.plots import weighted_mean_sparsity

    rows = []
    for lam in np.round(np.linspace(0.0, 1.0, 21), 3):
        try:
            a = cached_allocation(_df, df_key, model_key, "alphapruning", **{**settings, "lam": float(lam)})
        except (AllocationError, ValueError):
            continue
        sp = a["sparsity"].to_numpy()
        rows.append({"lam": float(lam), "min": float(sp.min()), "max": float(sp.max()),
                     "weighted_mean": weighted_mean_sparsity(a)})
    return pd.DataFrame(rows)


@st.cache_resource(show_spinner=False, max_entries=64)
def lambda_range_chart(_df: pd.DataFrame, df_key: tuple, model_key: Optional[str], settings_items: tuple):
    """The plotly figure of :func:`lambda_range` (built once per analysis and settings; never mutated)."""
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


@st.cache_data(show_spinner=False, max_entries=16)
def dense_perplexity(key: str, dataset: str, seqlen: int, windows: int) -> float:
    from pruning.evaluation.perplexity import perplexity

    lm = load_model_cached(key)
    return float(perplexity(lm.model, lm.tokenizer, dataset, seqlen=seqlen, max_windows=windows, progress=False).ppl)


def layer_inputs(key: str, name: str, nsamples: int, seqlen: int):
    """(W, X) of the layer ``name`` of the dense model on its calibration windows
    (``pruning.capture.capture_layer_inputs``)."""
    from pruning.capture import capture_layer_inputs

    lm = load_model_cached(key)
    return capture_layer_inputs(lm.model, name, calibration_windows(key, nsamples, seqlen))


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
    """The 2:4 proximal pruner on one layer of the dense model (``pruning.pruners.prox24.prox24_prune(record=True)`` with
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


# ------------------------------------------------------------------ the last pruned model (Prune & evaluate → ESD)
def save_pruned(model, model_key: str, label: str) -> None:
    """Keep the pruned block matrices of this session's last run in a temporary safetensors file (read back one at
    a time by the ESD explorer, so a session does not hold a second model in memory)."""
    from safetensors.torch import save_file

    from spectra.weights import iter_model_weights

    old = st.session_state.get("pruned")
    if old and Path(old["path"]).exists():
        Path(old["path"]).unlink()
    fd, path = tempfile.mkstemp(prefix="spl-pruned-", suffix=".safetensors")
    os.close(fd)
    save_file({i.longname: w.detach().contiguous() for i, w in iter_model_weights(model)}, path)
    st.session_state.pruned = {"model_key": model_key, "label": label, "path": path}


def last_pruned(model_key: Optional[str], name: str):
    """(label, W) of the matrix ``name`` in this session's last pruned model of ``model_key``; None when none."""
    from safetensors import safe_open

    last = st.session_state.get("pruned")
    if last is None or last["model_key"] != model_key or not Path(last["path"]).is_file():
        return None
    with safe_open(last["path"], framework="pt") as fh:
        return (last["label"], fh.get_tensor(name)) if name in fh.keys() else None
