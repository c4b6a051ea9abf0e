"""Widgets built from the settings' own fields (:mod:`spectra.options`): label, help, default, bounds, choices and
step come from the dataclass field (``pruning.settings``), so the app and the command line cannot drift apart.

``setting_widget(where, AllocationSettings, "lam", "pr_lam")`` draws a slider for λ in its declared range with
its help text; keyword arguments override what a view needs differently (a narrower range, other choices, a
``format_func``, ``disabled``, ``on_change``).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import streamlit as st

from spectra.options import Option, default_help, option_named

__all__ = ["setting_widget", "widget_spec", "default_of"]


def default_of(cls: Any, name: str) -> Any:
    """The declared default of setting ``name`` of the settings class ``cls`` (for the app's session defaults)."""
    return option_named(cls, name).default


def widget_spec(o: Option, *, choices: Optional[Sequence] = None, lo: Optional[float] = None,
                hi: Optional[float] = None, step: Optional[float] = None, widget: Optional[str] = None) -> dict:
    """What the widget of ``o`` is: ``{"widget": checkbox | selectbox | radio | slider | number_input, "label",
    "help", "options" or "min_value"/"max_value"/"step"}`` — from the field, with the given overrides."""
    ui = dict(o.ui or {})
    spec: dict[str, Any] = {"label": o.label, "help": default_help(o)}
    if o.kind is bool:
        return {**spec, "widget": "checkbox"}
    options = choices if choices is not None else o.choices
    if options is not None:
        return {**spec, "widget": widget or "selectbox", "options": list(options)}
    if o.kind in (int, float):
        lo = lo if lo is not None else ui.get("lo", o.lo)
        hi = hi if hi is not None else ui.get("hi", o.hi)
        step = step if step is not None else ui.get("step", 1 if o.kind is int else 0.01)
        cast = int if o.kind is int else float
        kind = widget or ("slider" if o.kind is float and lo is not None and hi is not None else "number_input")
        return {**spec, "widget": kind, "min_value": None if lo is None else cast(lo),
                "max_value": None if hi is None else cast(hi), "step": cast(step)}
    return {**spec, "widget": widget or "text_input"}


def setting_widget(where: Any, cls: Any, name: str, key: str, *, label: Optional[str] = None,
                   note: str = "", choices: Optional[Sequence] = None, lo: Optional[float] = None,
                   hi: Optional[float] = None, step: Optional[float] = None, widget: Optional[str] = None,
                   **kwargs: Any) -> Any:
    """Draw the widget of setting ``name`` of ``cls`` in ``where`` (``st``, a column, a popover) under the session
    key ``key`` (its value comes from the session state) and return its value. ``note``: what this view adds to
    the field's help."""
    spec = widget_spec(option_named(cls, name), choices=choices, lo=lo, hi=hi, step=step, widget=widget)
    kind = spec.pop("widget")
    spec["label"] = label or spec["label"]
    spec["help"] = spec["help"] + (f". {note}" if note else "")
    if kind == "radio":
        kwargs.setdefault("horizontal", True)
    draw = getattr(where if where is not None else st, kind)
    if "options" in spec:
        return draw(spec.pop("label"), spec.pop("options"), key=key, **spec, **kwargs)
    return draw(spec.pop("label"), key=key, **spec, **kwargs)
