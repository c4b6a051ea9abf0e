"""Pruning runs as the app, the sweep, the ``prune`` command and the notebooks record and show them: the one run
record (:func:`run_record`: a sweep row, an app run and each entry of ``report.json``'s ``runs`` are the same
columns, :func:`prune_columns` the columns a prune's result adds, :func:`cell_key` the key of a run), pattern checks and
sweep tables reshaped into one row per pruned model, each named by its short run label
(:func:`pruning.labels.run_label`).
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Optional

import pandas as pd

from pruning.labels import is_paper_literal, run_label, settings_label
from pruning.pruners import get_pruner

#: column spellings :func:`normalize_results` renames to ``allocation / pruner / sparsity / lam / ppl``
RESULT_COLUMN_ALIASES = {"allocation": ("allocation", "method", "alloc"), "pruner": ("pruner",),
                         "sparsity": ("sparsity", "target_sparsity", "S"), "lam": ("lam", "lambda", "epsilon"),
                         "ppl": ("ppl", "perplexity", "wikitext2_ppl", "ppl_wikitext2")}


def run_record(settings, eval_dataset: str, eval_seqlen: Optional[int], max_windows: Optional[int], ppl: dict,
               **extra) -> dict:
    """The record of one pruning run, the same columns for a sweep row and a run of the app.

    Parameters
    ----------
    settings : pruning.settings.PruneSettings
        The run's settings (recorded flat, plus ``settings_json``).
    eval_dataset, eval_seqlen, max_windows
        How the perplexity was measured (``max_windows`` None or 0: every window).
    ppl : dict
        :meth:`pruning.evaluation.perplexity.PerplexityResult.to_dict` (``ppl``, ``nll``, ``ntokens``, ...).
    **extra
        Further columns (timings, memory, the dense perplexity, ...).

    Returns
    -------
    dict
        ``pruner allocation sparsity nm pattern lam exclude_flagged nsamples seqlen seed gd_steps gd_precondition
        correction method label pruner_options eval_dataset eval_seqlen max_windows ppl nll ntokens nwindows
        settings_json finished`` and ``extra``.
    """
    from pruning.allocation import SPECTRAL_METHODS

    f = settings.flat()
    row = {"pruner": f["pruner"], "allocation": f["allocation"] if not f["allocation_file"] else "file",
           "sparsity": float(f["sparsity"]), "nm": f["nm"] or "", "pattern": f["nm"] or "unstructured",
           "lam": float(f["lam"]) if f["allocation"] in SPECTRAL_METHODS else float("nan"),
           "exclude_flagged": bool(f["exclude_flagged"]), "nsamples": f["nsamples"], "seqlen": f["seqlen"],
           "seed": f["seed"], "gd_steps": f["gd_steps"], "gd_precondition": bool(f["gd_precondition"]),
           "correction": settings.resolved_correction(), "method": settings_label(settings),
           "label": run_label(f["pruner"], f["nm"], f["gd_steps"], f["gd_precondition"],
                              is_paper_literal(f["pruner"], f["pruner_options"])),
           "pruner_options": json.dumps(f["pruner_options"], sort_keys=True, default=str),
           "eval_dataset": eval_dataset, "eval_seqlen": eval_seqlen, "max_windows": max_windows or 0,
           "ppl": ppl.get("ppl"), "nll": ppl.get("nll"), "ntokens": ppl.get("ntokens"), "nwindows": ppl.get("nwindows"),
           "settings_json": json.dumps(f, default=str), "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
    row.update(extra)
    return row


def prune_columns(result) -> dict:
    """The columns a prune adds to its run record, the same in a sweep row, an app run and ``report.json``.

    Parameters
    ----------
    result : pruning.prune.PruneResult
        The prune's result.

    Returns
    -------
    dict
        ``target_sparsity`` and ``achieved_sparsity`` (weighted by matrix size), ``prune_seconds`` (wall) and
        ``prune_cpu_seconds`` (CPU time of the process) of the whole prune, ``peak_rss_mb`` (the largest resident
        set size sampled during the prune, :class:`pruning.prune.PeakRSS`; the whole process's peak is
        ``process_peak_rss_mb`` where a run records it) and ``allocation_note``.
    """
    return {"target_sparsity": result.target_sparsity, "achieved_sparsity": result.achieved_sparsity,
            "prune_seconds": result.timings["total"], "prune_cpu_seconds": result.timings.get("cpu_total"),
            "peak_rss_mb": result.peak_rss_mb, "allocation_note": str(result.allocation_info.get("note", ""))}


def cell_key(model_label: str, settings, eval_settings: dict) -> str:
    """16-hex key of (model, full settings or None for the dense row, evaluation settings): the ``key`` of a sweep
    row and of a ``report.json`` run record (sha256 of their JSON, sorted keys)."""
    payload = {"model": model_label, "settings": settings.key_dict() if settings else "dense", "eval": eval_settings}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


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
    if "exclude_flagged" in t.columns:  # AlphaPruning without the flagged fits: a curve of its own
        flagged = t["exclude_flagged"].astype("boolean").fillna(False).astype(bool)
        t["allocation"] = [f"{a} (flagged fits left out)" if x else a for a, x in zip(t["allocation"], flagged)]
    if t.empty:
        raise ValueError("the results table holds no pruned run yet")
    return t.reset_index(drop=True)


def load_table(path: str | os.PathLike) -> pd.DataFrame:
    """The sweep table at ``path`` (empty DataFrame when the file does not exist yet)."""
    p = Path(path)
    if not p.exists():
        return pd.DataFrame()
    try:
        return pd.read_parquet(p)
    except Exception as exc:  # a foreign or corrupt file must not be silently overwritten
        raise ValueError(f"cannot read the sweep table {p} ({type(exc).__name__}); move it away or pick another "
                         f"--out") from None


def read_results_table(path: str | os.PathLike) -> pd.DataFrame:
    """A sweep results table (:func:`load_table` for parquet; CSV also accepted, ``#`` comment lines
    skipped), through :func:`normalize_results`. FileNotFoundError naming the sweep command when absent, ValueError
    for another file type."""
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
