"""Pruning runs as the app and the notebooks show them: pattern checks and sweep tables reshaped into one row per
pruned model, each named by its short run label (:func:`pruning.labels.run_label`).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import pandas as pd

from pruning.labels import is_paper_literal, run_label
from pruning.pruners import get_pruner

#: column spellings :func:`normalize_results` renames to ``allocation / pruner / sparsity / lam / ppl``
RESULT_COLUMN_ALIASES = {"allocation": ("allocation", "method", "alloc"), "pruner": ("pruner",),
                         "sparsity": ("sparsity", "target_sparsity", "S"), "lam": ("lam", "lambda", "epsilon"),
                         "ppl": ("ppl", "perplexity", "wikitext2_ppl", "ppl_wikitext2")}


def pattern_problem(pruner: str, pattern: str) -> Optional[str]:
    """A one-line reason why ``pruner`` cannot run with ``pattern`` (``unstructured`` or ``N:M``), None when it can
    (the pruner's ``only_nm`` and ``supports_nm``)."""
    only = get_pruner(pruner).only_nm
    if only is not None and pattern != f"{only[0]}:{only[1]}":
        return (f"{pruner} produces {only[0]}:{only[1]} sparsity only: set pattern to {only[0]}:{only[1]} "
                f"(it was {pattern})")
    if pattern != "unstructured" and not get_pruner(pruner).supports_nm:
        return f"{pruner} does not support N:M patterns: set pattern to unstructured"
    return None


def normalize_results(t: pd.DataFrame) -> pd.DataFrame:
    """Rows of pruned models with columns allocation / pruner / sparsity / lam / ppl (+ dense_ppl when known).

    Usual column spellings are renamed (:data:`RESULT_COLUMN_ALIASES`); the sweep's dense row (``kind == "dense"``)
    becomes ``dense_ppl``; an ``eval`` column names the evaluation (``wikitext2 8×256``) when the table says how it
    was evaluated; an N:M pattern, the paper-literal variant and masked GD steps are appended to the pruner's label
    (``wanda 2:4 +GD100``, :func:`run_label`) so that they get their own curve. ValueError without a sparsity or
    perplexity column, or without a pruned row.
    """
    ren = {}
    for want, alts in RESULT_COLUMN_ALIASES.items():
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
        t["pruner"] = [run_label(str(p), n, g, c, is_paper_literal(str(p), o))
                       for p, n, g, c, o in zip(t["pruner"], nm, gd, pre, opts)]
    if t.empty:
        raise ValueError("the results table holds no pruned run yet")
    return t.reset_index(drop=True)


def read_results_table(path: str | os.PathLike) -> pd.DataFrame:
    """A sweep results table (``pruning.sweep.load_table`` for parquet; CSV also accepted, ``#`` comment lines
    skipped), through :func:`normalize_results`. FileNotFoundError naming the sweep command when absent, ValueError
    for another file type."""
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
