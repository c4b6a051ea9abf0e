"""Resumable sweeps: sparsities × allocations × pruners × λ (× N:M patterns) into one parquet table.

Every cell is keyed by a hash of the model source, the full :class:`~pruning.prune.PruneSettings` and the evaluation
settings. The table is rewritten atomically (temporary file + ``os.replace``) after every finished cell, so an
interrupted sweep keeps its finished cells and a rerun skips them. Several sweeps may share one table: each save
re-reads the table under a file lock and appends to what is on disk, and a cell another sweep finished is skipped. The dense model's perplexity is one row
(``kind == "dense"``) computed once per model and evaluation settings. λ is swept only for the allocations that
use it (``alphapruning``, ``stable_rank``); N:M patterns give one ``uniform`` cell per pruner.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import pandas as pd

from spectra.files import atomic_path

from pruning.allocation import SPECTRAL_METHODS, get_allocation
from pruning.prune import prune_model, settings_label
from pruning.settings import PruneSettings

#: allocations whose result depends on λ.
LAM_ALLOCATIONS = SPECTRAL_METHODS


@dataclass
class SweepSpec:
    """What to sweep. ``base`` holds every other pruning setting (calibration, mapping, OWL λ, ...)."""

    model: Optional[str] = None
    sparsities: list = field(default_factory=lambda: [0.5])
    allocations: list = field(default_factory=lambda: ["uniform"])
    pruners: list = field(default_factory=lambda: ["wanda"])
    lams: list = field(default_factory=lambda: [0.3])
    nms: list = field(default_factory=lambda: [None])
    base: PruneSettings = field(default_factory=PruneSettings)
    #: pruner options of the sweep, each given to the pruners that accept it
    pruner_options: dict = field(default_factory=dict)
    eval_dataset: str = "wikitext2"
    eval_seqlen: Optional[int] = None
    max_windows: Optional[int] = None
    data_dir: Optional[str] = None
    device: str = "cpu"

    def eval_settings(self) -> dict:
        return {"dataset": self.eval_dataset, "seqlen": self.eval_seqlen, "max_windows": self.max_windows}


def expand(spec: SweepSpec) -> list[PruneSettings]:
    """The cells of ``spec`` in run order (checked on construction; duplicates removed)."""
    from pruning.pruners import get_pruner

    options = {**spec.base.pruner.options, **spec.pruner_options}
    cells: list[PruneSettings] = []
    for nm in spec.nms:
        for pruner in spec.pruners:
            accepted = get_pruner(pruner).options  # pruner options apply to the pruners that accept them
            base = dict(pruner=pruner, pruner_options={k: v for k, v in options.items() if k in accepted})
            if nm:
                cells.append(spec.base.replace(**base, allocation="uniform", nm=nm))
                continue
            for s in spec.sparsities:
                for alloc in spec.allocations:
                    for lam in (spec.lams if alloc in LAM_ALLOCATIONS else [spec.base.allocation.lam]):
                        cells.append(spec.base.replace(**base, allocation=alloc, sparsity=float(s), nm=None,
                                                       lam=float(lam)))
    out, seen = [], set()
    for c in cells:
        k = json.dumps(c.key_dict(), sort_keys=True, default=str)
        if k not in seen:
            seen.add(k)
            out.append(c)
    return out


def cell_key(model_label: str, settings: Optional[PruneSettings], eval_settings: dict) -> str:
    """16-hex key of (model, full settings or None for the dense row, evaluation settings)."""
    payload = {"model": model_label, "settings": settings.key_dict() if settings else "dense", "eval": eval_settings}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


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


def write_table_atomic(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write ``df`` to parquet, whole or not at all (:func:`spectra.files.atomic_path`)."""
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)
    return Path(path)


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive advisory lock on ``path + '.lock'`` (POSIX ``flock``; a no-op where it is unavailable)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(f"{path}.lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def append_row(path: str | os.PathLike, row: dict) -> pd.DataFrame:
    """Add ``row`` to the table at ``path`` and return the table: under a lock, re-read what is on disk (rows other
    sweeps wrote to the same table meanwhile are kept), append unless its key is there already, write atomically."""
    path = Path(path)
    with _locked(path):
        table = load_table(path)
        if len(table) and "key" in table and row["key"] in set(table["key"]):
            return table
        table = pd.concat([table, pd.DataFrame([row])], ignore_index=True) if len(table) else pd.DataFrame([row])
        write_table_atomic(table, path)
    return table


def _keys_on_disk(path: Path) -> set:
    table = load_table(path)
    return set(table["key"]) if "key" in table else set()


def _row(key, label, kind, s: Optional[PruneSettings], ev: dict, ppl: dict, **extra) -> dict:
    f = s.flat() if s else {}
    row = {"key": key, "model": label, "kind": kind,
           "pruner": f["pruner"] if s else "dense", "allocation": (f["allocation"] if not f["allocation_file"]
                                                                   else "file") if s else "none",
           "sparsity": (float(f["sparsity"]) if s else 0.0), "nm": (f["nm"] or "") if s else "",
           "lam": float(f["lam"]) if s and f["allocation"] in LAM_ALLOCATIONS else float("nan"),
           "nsamples": f.get("nsamples", 0), "seqlen": f.get("seqlen", 0), "seed": f.get("seed", 0),
           "gd_steps": f.get("gd_steps", 0), "gd_precondition": bool(f.get("gd_precondition", False)),
           "correction": s.resolved_correction() if s else "", "method": settings_label(s) if s else "dense",
           "pruner_options": json.dumps(f.get("pruner_options", {}), sort_keys=True, default=str),
           "eval_dataset": ev["dataset"],
           "eval_seqlen": ppl.get("seqlen"), "max_windows": ev["max_windows"] if ev["max_windows"] else 0,
           "ppl": ppl.get("ppl"), "nll": ppl.get("nll"), "ntokens": ppl.get("ntokens"),
           "nwindows": ppl.get("nwindows"), "settings_json": json.dumps(f, default=str),
           "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
    row.update(extra)
    return row


def run_sweep(spec: SweepSpec, out: str | os.PathLike, progress: bool = False,
              log: Callable[[str], None] = print) -> pd.DataFrame:
    """Run every unfinished cell of ``spec`` (and the dense row), appending to the parquet table ``out``.

    Returns the full table. A failing cell raises after the finished cells are saved; rerunning resumes.
    """
    from spectra.models import load_model

    from pruning.evaluation.data import get_calibration
    from pruning.evaluation.perplexity import perplexity
    from pruning.report import package_versions
    from pruning.sequential import collect_input_norms

    out = Path(out)
    if not out.parent.exists():
        raise ValueError(f"the folder of the sweep table ({out.parent}) does not exist; create it first")
    cells = expand(spec)
    ev = spec.eval_settings()
    load_table(out)  # a foreign or corrupt file fails here, before the model is loaded
    dense_lm = load_model(spec.model, device=spec.device)
    label = dense_lm.source.label
    versions = json.dumps(package_versions())

    def ppl_of(model, tok) -> dict:
        t = time.perf_counter()
        r = perplexity(model, tok, ev["dataset"], seqlen=ev["seqlen"], max_windows=ev["max_windows"],
                       progress=progress, path=spec.data_dir)
        return {**r.to_dict(), "seconds": time.perf_counter() - t}

    def save(row):
        nonlocal table
        table = append_row(out, row)

    dkey = cell_key(label, None, ev)
    table = load_table(out)  # read now: another sweep on this table may have written the dense row meanwhile
    if "key" in table and dkey in set(table["key"]):
        dense_ppl = float(table.loc[table["key"] == dkey, "ppl"].iloc[0])
    else:
        d = ppl_of(dense_lm.model, dense_lm.tokenizer)
        dense_ppl = d["ppl"]
        save(_row(dkey, label, "dense", None, ev, d, dense_ppl=dense_ppl, eval_seconds=d["seconds"],
                  versions=versions))
        log(f"[dense] {ev['dataset']} ppl {dense_ppl:.4f} ({d['nwindows']} windows × {d['seqlen']})")
    metrics_cache: dict = {}
    norms_cache: dict = {}
    for i, s in enumerate(cells, 1):
        key = cell_key(label, s, ev)
        a, cal = s.allocation, s.calibration
        name = f"{settings_label(s)} {a.nm or a.method} s={a.sparsity:g}" + \
            (f" λ={a.lam:g}" if a.method in LAM_ALLOCATIONS and not a.nm else "")
        if key in _keys_on_disk(out):  # finished earlier, or meanwhile by another sweep on the same table
            log(f"[{i}/{len(cells)}] {name}: done already, skipped")
            continue
        metrics = norms = None
        aspec = get_allocation(a.method)
        if aspec.reads == "metrics" and not a.nm:
            mkey = (a.xmin_rule, tuple(sorted(aspec.analysis.items())))
            if mkey not in metrics_cache:
                from spectra.analyze import AnalysisSettings, analyze

                metrics_cache[mkey] = analyze(dense_lm.model, AnalysisSettings(xmin_rule=a.xmin_rule,
                                                                               **aspec.analysis), progress=progress)
            metrics = metrics_cache[mkey]
        calib = None
        if s.needs_calibration():
            calib = get_calibration(dense_lm.tokenizer, cal.nsamples, cal.seqlen, cal.seed, dataset=cal.dataset,
                                    path=cal.data_path)
        if aspec.needs_calibration and not a.nm:
            if cal not in norms_cache:  # the calibration settings are the key (a frozen dataclass)
                norms_cache[cal] = collect_input_norms(dense_lm.model, calib, cal.batch_size)
            norms = norms_cache[cal]
        lm = load_model(spec.model, device=spec.device)
        res = prune_model(lm, None, s, progress=progress, metrics=metrics, input_norms=norms, calib=calib)
        p = ppl_of(lm.model, lm.tokenizer)
        save(_row(key, label, "pruned", s, ev, p, dense_ppl=dense_ppl, target_sparsity=res.target_sparsity,
                  achieved_sparsity=res.achieved_sparsity, prune_seconds=res.timings["total"],
                  prune_cpu_seconds=res.timings.get("cpu_total"),
                  eval_seconds=p["seconds"], peak_rss_mb=res.peak_rss_mb,
                  allocation_note=str(res.allocation_info.get("note", "")), versions=versions))
        log(f"[{i}/{len(cells)}] {name}: ppl {p['ppl']:.4f} (dense {dense_ppl:.4f}; achieved sparsity "
            f"{res.achieved_sparsity:.4f}; prune {res.timings['total']:.0f} s, eval {p['seconds']:.0f} s)")
        del lm
    return table
