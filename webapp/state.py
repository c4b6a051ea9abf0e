"""The state every page shares: defaults, the shared selection (:func:`selection`, :func:`bind`), each view's
settings as the other views read them and the loaded model context (the cached heavy work: :mod:`webapp.cache`).

Pages read another view's settings only through the functions here (never its widget keys). Nothing here computes
a metric, an allocation or a perplexity itself: the cached loaders call :mod:`spectra` and :mod:`pruning`.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Optional

import pandas as pd
import streamlit as st

from pruning.allocation import CALIBRATION_METHODS, WEIGHT_METHODS, get_allocation
from pruning.calib_stats import TUNE_CALIBRATION
from pruning.settings import AllocationSettings, EvalSettings, GDSettings, PrunerSettings
from pruning.tune import TuneSettings
from spectra.hill import XMIN_RULES
from webapp.cache import get_analysis, get_results_file, source_key
from webapp.widgets import default_of

#: the views, in the order of the navigation, and the page file of each (relative to app.py)
VIEW_PAGES = {"Model overview": "webapp/overview.py", "ESD explorer": "webapp/esd_explorer.py",
              "Allocation lab": "webapp/allocation_lab.py", "Prune & evaluate": "webapp/prune_evaluate.py",
              "Report": "webapp/report.py", "Which blocks matter": "webapp/sensitivity.py"}
VIEWS = tuple(VIEW_PAGES)
SOURCE_KINDS = ("Built-in model", "Hugging Face id", "Local directory", ".gguf file", "Saved results file")
#: xmin rules offered (spectra.hill.XMIN_RULES without "fixed", AlphaPruning's default first)
ANALYSIS_RULES = tuple(["peak"] + [r for r in XMIN_RULES if r not in ("peak", "fixed")])

#: where the app starts from other values than the library: a small calibration, so that a first prune on a laptop
#: CPU takes about a minute (the library's 128 × 512 follow the papers), and a sparsity where the allocations differ
APP_DEFAULTS = {"nsamples": 16, "seqlen": 256, "sparsity": 0.6, "method": "alphapruning"}
_A, _G = AllocationSettings, GDSettings
#: persistent settings (kept across page switches) and their defaults; ``view`` is the page shown (set by app.py).
#: Those of a pruning setting are its declared default (``pruning.settings``) or :data:`APP_DEFAULTS`.
DEFAULTS: dict[str, Any] = {
    "view": VIEWS[0], "source_kind": SOURCE_KINDS[0], "source_text": "", "builtin_choice": "smollm2", "rule": "peak",
    "ov_metric": "alpha", "ov_weighted": False,
    "esd_rule": "peak", "esd_mp": True, "esd_compare": "nothing", "esd_bins": 60, "esd_prune_s": 0.6,
    "al_mapping": default_of(_A, "mapping"), "al_gran": default_of(_A, "granularity"), "al_by": "block",
    "al_methods": ["uniform", "alphapruning", "erk", "stable_rank"],
    "al_min": default_of(_A, "min_sparsity"), "al_max": default_of(_A, "max_sparsity"),
    "al_metric": default_of(_A, "metric"), "al_exclude_flagged": default_of(_A, "exclude_flagged"),
    "pr_pruner": default_of(PrunerSettings, "name"), "pr_nsamples": APP_DEFAULTS["nsamples"],
    "pr_seqlen": APP_DEFAULTS["seqlen"], "pr_windows": 8, "pr_dataset": default_of(EvalSettings, "datasets"),
    "pr_sweep_path": "results/sweep.parquet", "pr_pattern": "unstructured", "pr_gd_steps": default_of(_G, "steps"),
    "pr_gd_pre": default_of(_G, "precondition"), "pr_literal": False, "pr_tasks": [], "pr_task_limit": 100,
    "tu_pruner": default_of(TuneSettings, "pruner"),
    "tu_lams": ",".join(f"{v:g}" for v in default_of(TuneSettings, "lams") or  # AlphaPruning λ's default grid
                        get_allocation("alphapruning").params[0].grid(0.5, 1, default_of(TuneSettings, "candidates"))),
    "tu_nsamples": TUNE_CALIBRATION.nsamples, "tu_windows": default_of(TuneSettings, "eval_windows"),
    "lb_methods": ["uniform", "alphapruning", "owl", "dlp", "atp"], "lb_candidates": 3, "lb_windows": 4,
    "ov_farms": False, "esd_farms": False, "al_lam_open": False, "al_tune_open": False, "al_lb_open": False,
}
#: the selection every view shares: the matrix looked at (overview pick, ESD explorer, Report), the target sparsity
#: S, AlphaPruning's λ and the allocation method (Allocation lab export, Prune & evaluate). ``matrix`` None = the
#: median-α matrix of the open model.
SELECTION_DEFAULTS: dict[str, Any] = {"matrix": None, "S": APP_DEFAULTS["sparsity"], "lam": default_of(_A, "lam"),
                                      "method": APP_DEFAULTS["method"]}
#: allocations that need the model's weights or a calibration pass (slow the first time)
SLOW_METHODS = (*CALIBRATION_METHODS, *WEIGHT_METHODS)  # need a calibration pass or every weight
PRUNED_KEEP = 4  # last pruned models kept on disk for the ESD explorer, all sessions together (~4 × 0.4 GB, 135M)


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


# ------------------------------------------------------------------ the last pruned model (Prune & evaluate → ESD)
def save_pruned(model, model_key: str, label: str) -> None:
    """Keep the pruned block matrices of this session's last run in a scratch safetensors file (read back one at
    a time by the ESD explorer, so a session does not hold a second model in memory). The scratch folder keeps the
    newest :data:`PRUNED_KEEP` such files of all sessions (``spectra.files.scratch_file``); the file of a session
    whose run was pushed out is simply gone, and the ESD explorer then shows no pruned overlay."""
    from spectra.files import remove_scratch, save_safetensors, scratch_file
    from spectra.weights import iter_model_weights

    old = st.session_state.pop("pruned", None)
    if old:
        remove_scratch(old["path"])
    path = scratch_file("pruned", ".safetensors", keep=PRUNED_KEEP)
    save_safetensors({i.longname: w.detach().cpu().contiguous() for i, w in iter_model_weights(model)}, path)
    st.session_state.pruned = {"model_key": model_key, "label": label, "path": str(path)}


def last_pruned(model_key: Optional[str], name: str):
    """(label, W) of the matrix ``name`` in this session's last pruned model of ``model_key``; None when none."""
    from safetensors import safe_open

    last = st.session_state.get("pruned")
    if last is None or last["model_key"] != model_key or not Path(last["path"]).is_file():
        return None
    with safe_open(last["path"], framework="pt") as fh:
        return (last["label"], fh.get_tensor(name)) if name in fh.keys() else None


# -------------------------------------------------------- the measured sensitivity table (Which blocks matter → lab)
#: how the leaderboard's caption says to get a measured table
MEASURE_HINT = ("measure one on the *Which blocks matter* page (or open a table `python -m pruning sensitivity MODEL "
                "--out sens.parquet` wrote)")


def keep_sensitivity_table(df: pd.DataFrame, path: Optional[str] = None) -> None:
    """Remember the table the *Which blocks matter* page measured or opened (``path``), for the leaderboard's
    ``sensitivity`` row: a measured one is written to ``<cache>/sensitivity/<hash of its rows and settings>.parquet``
    (:func:`pruning.sensitivity_table.write_table`), the file ``compare`` reads."""
    import hashlib
    import json

    from pruning.sensitivity_table import write_table
    from spectra.config import cache_dir

    meta = df.attrs.get("sensitivity", {})
    if path is None:
        digest = hashlib.sha256(pd.util.hash_pandas_object(df.drop(columns="seconds", errors="ignore"),
                                                           index=False).values.tobytes())
        digest.update(json.dumps(meta.get("key"), sort_keys=True, default=str).encode())
        path = str(cache_dir("sensitivity") / f"{digest.hexdigest()[:24]}.parquet")
        if not Path(path).is_file():
            write_table(df, path, meta)
    st.session_state.se_table = {"path": str(path), "model": meta.get("model")}


def sensitivity_table(model_key: Optional[str]) -> tuple[Optional[str], str]:
    """``(path, "")`` of the measured table this session has for the model ``model_key``, else ``(None, why not)``:
    none measured or opened, unfinished or gone, or measured on another model (by name; the weights' hash is
    compared when the leaderboard runs)."""
    from pruning.sensitivity_table import models_differ, table_costs
    from spectra.models import resolve_source

    kept = st.session_state.get("se_table")
    if not kept or model_key is None:
        return None, f"No measured table in this session: {MEASURE_HINT}."
    try:
        table_costs(kept["path"])
    except ValueError as exc:
        return None, f"The measured table cannot be read ({' '.join(str(exc).split())}): {MEASURE_HINT}."
    label = resolve_source(None if model_key == "builtin" else model_key).label
    if models_differ(kept["model"], label):
        return None, f"The measured table was measured on {kept['model']}, not on this model: {MEASURE_HINT}."
    return kept["path"], ""
