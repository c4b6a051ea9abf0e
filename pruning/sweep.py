"""Resumable sweeps: sparsities × allocations × pruners × λ (× N:M patterns) into one parquet table.

Every cell is keyed by a hash of the model source, the full :class:`~pruning.prune.PruneSettings` and the evaluation
settings. The table is rewritten atomically (temporary file + ``os.replace``) after every finished cell, so an
interrupted sweep keeps its finished cells and a rerun skips them. Several sweeps may share one table: each save
re-reads the table under a file lock and appends to what is on disk, and a cell another sweep finished is skipped. The
dense model's perplexity is one row
(``kind == "dense"``) computed once per model and evaluation settings. λ is swept only for the allocations that
use it (``alphapruning``, ``stable_rank``); N:M patterns give one ``uniform`` cell per pruner.
"""
from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import pandas as pd

from pruning.allocation import SPECTRAL_METHODS, get_allocation
from pruning.labels import settings_label
from pruning.prune import prune_model
from pruning.pruners import DEFAULT_PRUNER
from pruning.runs import cell_key, load_table, prune_columns, run_record
from pruning.settings import PruneSettings
from spectra.files import atomic_path

#: allocations whose result depends on λ.
LAM_ALLOCATIONS = SPECTRAL_METHODS


@dataclass
class SweepSpec:
    """What to sweep. ``base`` holds every other pruning setting (calibration, mapping, OWL λ, ...)."""

    model: Optional[str] = None
    sparsities: list = field(default_factory=lambda: [0.5])
    allocations: list = field(default_factory=lambda: ["uniform"])
    pruners: list = field(default_factory=lambda: [DEFAULT_PRUNER])
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
    #: lm-eval zero-shot tasks of every cell (and the dense row) and lm-eval's first N documents per task
    eval_tasks: list = field(default_factory=list)
    eval_limit: Optional[int] = None

    def eval_settings(self) -> dict:
        """The evaluation part of the cell keys; the tasks only when there are some (older tables keep resuming)."""
        ev = {"dataset": self.eval_dataset, "seqlen": self.eval_seqlen, "max_windows": self.max_windows}
        if self.eval_tasks:
            ev.update(tasks=list(self.eval_tasks), limit=self.eval_limit)
        return ev


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
    """A sweep row: the run record (:func:`pruning.runs.run_record`) of a pruned cell, or the dense row."""
    if s is not None:
        return run_record(s, ev["dataset"], ppl.get("seqlen"), ev["max_windows"], ppl, key=key, model=label,
                          kind=kind, **extra)
    row = {"key": key, "model": label, "kind": kind, "pruner": "dense", "allocation": "none", "sparsity": 0.0,
           "nm": "", "lam": float("nan"), "nsamples": 0, "seqlen": 0, "seed": 0, "gd_steps": 0,
           "gd_precondition": False, "correction": "", "method": "dense", "pruner_options": "{}",
           "eval_dataset": ev["dataset"], "eval_seqlen": ppl.get("seqlen"), "max_windows": ev["max_windows"] or 0,
           "ppl": ppl.get("ppl"), "nll": ppl.get("nll"), "ntokens": ppl.get("ntokens"),
           "nwindows": ppl.get("nwindows"), "settings_json": json.dumps({}),
           "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
    row.update(extra)
    return row


def _cell_inputs(s: PruneSettings, dense_lm, caches: dict, progress: bool) -> tuple:
    """(spectral metrics, calibration windows, OWL input norms) of one cell, each None where the cell reads none;
    the metrics (per xmin rule) and norms (per calibration) of the dense model are computed once (``caches``)."""
    from pruning.block_loop import collect_input_norms
    from pruning.evaluation.data import get_calibration

    a, cal = s.allocation, s.calibration
    metrics = calib = norms = None
    aspec = get_allocation(a.method)
    if aspec.reads == "metrics" and not a.nm:
        mkey = (a.xmin_rule, tuple(sorted(aspec.analysis.items())))
        if mkey not in caches["metrics"]:
            from spectra.analyze import AnalysisSettings, analyze

            caches["metrics"][mkey] = analyze(dense_lm.model, AnalysisSettings(xmin_rule=a.xmin_rule, **aspec.analysis),
                                              progress=progress)
        metrics = caches["metrics"][mkey]
    if s.needs_calibration():
        calib = get_calibration(dense_lm.tokenizer, cal.nsamples, cal.seqlen, cal.seed, dataset=cal.dataset,
                                path=cal.data_path)
    if aspec.needs_calibration and not a.nm:
        if cal not in caches["norms"]:  # the calibration settings are the key (a frozen dataclass)
            caches["norms"][cal] = collect_input_norms(dense_lm.model, calib, cal.batch_size)
        norms = caches["norms"][cal]
    return metrics, calib, norms


def run_sweep(spec: SweepSpec, out: str | os.PathLike, progress: bool = False,
              log: Callable[[str], None] = print) -> pd.DataFrame:
    """Run every unfinished cell of ``spec`` (and the dense row), appending to the parquet table ``out``.

    Returns the full table. A failing cell raises after the finished cells are saved; rerunning resumes.
    """
    from pruning.evaluation.perplexity import perplexity
    from pruning.report import package_versions
    from spectra.models import load_model

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

    def tasks_of(model, tok) -> dict:
        """lm-eval columns (``piqa_acc``, ``piqa_acc_stderr``, ...) of the cell, {} without tasks."""
        if not spec.eval_tasks:
            return {}
        from pruning.evaluation.lmeval import evaluate_tasks

        r = evaluate_tasks(model, tok, spec.eval_tasks, limit=spec.eval_limit, data_dir=spec.data_dir)
        return {**r.flat(), "tasks_seconds": r.seconds}

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
                  versions=versions, **tasks_of(dense_lm.model, dense_lm.tokenizer)))
        log(f"[dense] {ev['dataset']} ppl {dense_ppl:.4f} ({d['nwindows']} windows × {d['seqlen']})")
    caches: dict = {"metrics": {}, "norms": {}}  # the dense model's, shared by the cells
    for i, s in enumerate(cells, 1):
        key = cell_key(label, s, ev)
        a = s.allocation
        name = f"{settings_label(s)} {a.nm or a.method} s={a.sparsity:g}" + \
            (f" λ={a.lam:g}" if a.method in LAM_ALLOCATIONS and not a.nm else "")
        if key in _keys_on_disk(out):  # finished earlier, or meanwhile by another sweep on the same table
            log(f"[{i}/{len(cells)}] {name}: done already, skipped")
            continue
        metrics, calib, norms = _cell_inputs(s, dense_lm, caches, progress)
        lm = load_model(spec.model, device=spec.device)
        res = prune_model(lm, None, s, progress=progress, metrics=metrics, input_norms=norms, calib=calib)
        p = ppl_of(lm.model, lm.tokenizer)
        save(_row(key, label, "pruned", s, ev, p, dense_ppl=dense_ppl, **prune_columns(res),
                  eval_seconds=p["seconds"], versions=versions, **tasks_of(lm.model, lm.tokenizer)))
        log(f"[{i}/{len(cells)}] {name}: ppl {p['ppl']:.4f} (dense {dense_ppl:.4f}; achieved sparsity "
            f"{res.achieved_sparsity:.4f}; prune {res.timings['total']:.0f} s, eval {p['seconds']:.0f} s)")
        del lm
    return table
