"""Every readable name of a pruning run, in one place: pruners (from their registry specs), allocation methods, the
full method label of reports and sweep logs, and the short run label of tables and curves.

- :func:`method_label` names the variant that ran in full: ``FISTAPruner (paper-literal, no re-fit) [intra]``,
  ``prox24 (plain step) + GD100``, ``Wanda + GD100 (plain)`` (reports, the sweep's ``method`` column, the CLI).
- :func:`run_label` is the short form: ``sparsegpt 2:4 +GD100``, ``fista (paper-literal)``. It keeps the pruner's
  id as its first word, so that :func:`readable_run` turns it into ``SparseGPT 2:4 +GD100`` for legends and the
  app's tables, and curves of one variant group together.

Pruner names, labels and variants come from :class:`pruning.pruners.base.PrunerSpec` (``label``, ``variant``,
``paper_literal``): a new pruner is named here without an edit to this module.
"""
from __future__ import annotations

import json
from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd

from pruning.allocation.registry import METHOD_LABELS
from pruning.pruners import PRUNERS

__all__ = ["ALLOCATION_LABELS", "allocation_label", "pruner_label", "readable_run", "readable", "method_label",
           "settings_label", "run_label", "is_paper_literal"]

#: readable names of the allocation methods (legends, tables, the app's pickers), from their registry specs
ALLOCATION_LABELS = METHOD_LABELS


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v))


def _first_word(mapping, text: Any) -> str:
    head, _, rest = str(text).partition(" ")
    return mapping(head) + (f" {rest}" if rest else "")


def allocation_label(method: Any) -> str:
    """``alphapruning`` → ``AlphaPruning``; a curve name such as ``alphapruning λ=0.2`` keeps its suffix; unknown
    names are returned unchanged."""
    return _first_word(lambda h: ALLOCATION_LABELS.get(h, h), method)


def pruner_label(name: str) -> str:
    """The registered pruner's display label (``wanda`` → ``Wanda``); an unknown name unchanged."""
    spec = PRUNERS.get(name)
    return spec.display if spec is not None else name


def readable_run(label: Any) -> str:
    """``wanda 2:4 +GD100`` → ``Wanda 2:4 +GD100`` (the pruner's display label, the rest of the run label kept)."""
    return _first_word(pruner_label, label)


def readable(results: pd.DataFrame, columns: Sequence[str] = ("allocation", "curve", "pruner")) -> pd.DataFrame:
    """A copy of a results table whose allocation / curve / pruner columns hold readable labels
    (:func:`allocation_label`, :func:`readable_run`), e.g. for the legend ``AlphaPruning + Wanda``."""
    out = results.copy()
    for c in columns:
        if c in out.columns:
            out[c] = [readable_run(v) if c == "pruner" else allocation_label(v) for v in out[c]]
    return out


def method_label(pruner: str, pruner_options: Optional[dict] = None, correction: Optional[str] = None,
                 gd_steps: int = 0, gd_precondition: bool = True) -> str:
    """Readable name of a pruning method that says which variant ran.

    E.g. ``FISTAPruner (re-fit) [intra]``, ``FISTAPruner (paper-literal, no re-fit) [intra]``, ``prox24 (plain
    step) + GD100``, ``Wanda + GD100 (plain)``. The variant comes from the pruner's ``PrunerSpec.variant``; the
    error-correction mode is shown when it is not the Wanda/SparseGPT reference loop (``sequential``) or the
    pruner's own default is another mode (FISTAPruner fits targets); the ``(ours)`` variants are the defaults.
    """
    opts = dict(pruner_options or {})
    spec = PRUNERS.get(pruner)
    name = pruner_label(pruner)
    if spec is not None and spec.variant is not None:
        name += f" ({spec.variant(opts)})"
        for k in spec.variant_options:
            opts.pop(k, None)
    name += "".join(f" {k}={v}" for k, v in sorted(opts.items()))
    own = spec.correction if spec is not None else "sequential"
    if correction and (own != "sequential" or correction != "sequential"):
        name += f" [{correction}]"
    if gd_steps:
        name += f" + GD{int(gd_steps)}" + ("" if gd_precondition else " (plain)")
    return name


def settings_label(s) -> str:
    """:func:`method_label` of a run's :class:`pruning.settings.PruneSettings` (its resolved correction mode)."""
    return method_label(s.pruner.name, s.pruner.options, s.resolved_correction(), s.gd.steps, s.gd.precondition)


def run_label(pruner: str, nm: Optional[str] = None, gd_steps: Optional[int] = 0, gd_precondition: bool = True,
              literal: bool = False) -> str:
    """A run's pruner as shown in tables and curves: ``sparsegpt 2:4 +GD100``.

    `` plain`` follows the GD steps for the paper's plain GD step, ``(paper-literal)`` marks the pruner's
    paper-literal variant (``PrunerSpec.paper_literal``). ``nm`` None / "" / "unstructured" / NaN and ``gd_steps``
    None / NaN / 0 add nothing.
    """
    nm = "" if _missing(nm) or nm in ("", "unstructured") else str(nm)
    steps = 0 if _missing(gd_steps) else int(gd_steps)
    return (f"{pruner}" + (" (paper-literal)" if literal else "") + (f" {nm}" if nm else "") +
            (f" +GD{steps}{'' if bool(gd_precondition) else ' plain'}" if steps else ""))


def is_paper_literal(pruner: str, options: Any) -> bool:
    """True when ``options`` (a dict, or its JSON text) select ``pruner``'s paper-literal variant
    (``PrunerSpec.paper_literal``; values compared case-insensitively as text)."""
    if isinstance(options, str):
        options = json.loads(options or "{}")
    spec = PRUNERS.get(pruner)
    lit = spec.paper_literal if spec is not None else {}
    options = options or {}
    return bool(lit) and all(k in options and str(options[k]).lower() == str(v).lower() for k, v in lit.items())
