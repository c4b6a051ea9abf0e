"""Drawing helpers every page uses: one-line errors, charts and readable tables."""
from __future__ import annotations

from typing import Optional

import pandas as pd
import streamlit as st

from pruning.allocation import AllocationError
from spectra.errors import SpectraError

USER_ERRORS = (SpectraError, ValueError, AllocationError, FileNotFoundError, FileExistsError, KeyError, OSError)


def one_line(exc: BaseException) -> str:
    """A user-facing one-line message for an exception (no traceback)."""
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, KeyError):
        msg = f"missing entry {msg}"
    return msg[:400]


def error_text(exc: BaseException) -> str:
    """:func:`one_line`, prefixed with ``unexpected <type>:`` when ``exc`` is not one of :data:`USER_ERRORS`."""
    return one_line(exc) if isinstance(exc, USER_ERRORS) else f"unexpected {type(exc).__name__}: {one_line(exc)}"


def show_error(exc: BaseException, what: str = "") -> None:
    st.error((f"{what}: " if what else "") + error_text(exc))


def chart(fig, key: str, **kw):
    return st.plotly_chart(fig, key=key, width="stretch", config={"displaylogo": False}, **kw)


def text_column_widths(data) -> dict:
    """``column_config`` for :func:`show_table`: every text column (and a text index) gets a pixel width that fits its
    longest entry (80–640 px, ≈ 7.5 px per character), so that matrix names, run labels and warnings are not cut
    to Streamlit's default width (they were unreadable there); the full text also shows on hover."""
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


def show_table(data, column_config: Optional[dict] = None, **kw):
    """``st.dataframe`` with readable text columns (:func:`text_column_widths`; ``column_config`` adds to / overrides
    them), full width, no index unless given."""
    kw.setdefault("hide_index", True)
    kw.setdefault("width", "stretch")
    return st.dataframe(data, column_config={**text_column_widths(data), **(column_config or {})}, **kw)


def run_page(render) -> None:
    """Draw a page: ``render(ctx)`` with the context app.py resolved; never a traceback in the page."""
    from webapp.state import context

    ctx = context()
    if ctx is None:
        return
    try:
        render(ctx)
    except Exception as exc:  # noqa: BLE001 - never a traceback in the page (st.switch_page is a BaseException)
        show_error(exc)
