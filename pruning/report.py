"""The JSON report of a pruning run (``report.json``, layout :data:`REPORT_LAYOUT`, docs/METHODS.md): ``runs``, its
run records (:func:`pruning.runs.run_record`, the columns of a sweep row: settings, seed, perplexity, sparsity,
prune time and memory, package versions), then what a row has not: model source and weight hash, per-matrix target /
achieved sparsity, the full dense and pruned evaluations, lm-eval zero-shot results (``zeroshot``: dense and pruned,
with lm-eval's and each task's version, when tasks were asked for), every phase's timing, the collapse check."""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Optional


def package_versions() -> dict:
    """Versions of Python, ``spectra``, ``pruning`` and the numerical packages
    (:func:`spectra.results.package_versions`)."""
    import pruning
    from spectra.results import package_versions as _versions

    return _versions(pruning=pruning.__version__)


def model_record(lm, fingerprint: bool = True) -> dict:
    """Where the model came from (source label, kind, type, parameter count) and the sha256 of its weight files."""
    rec = {"source": lm.source.label, "kind": lm.source.kind, "ref": lm.source.ref, **dict(lm.info)}
    wdir = getattr(lm, "weights_dir", None)
    if wdir is not None:
        rec["weights_dir"] = str(wdir)
        if fingerprint:
            from spectra.models import files_sha256, weight_files

            files = weight_files(Path(wdir))
            if files:
                rec["weights_sha256"] = files_sha256(files)  # memoised: a report does not re-read the weights
    return rec


def process_peak_rss_mb() -> float:
    """The largest resident set size of this whole process so far, in MiB (``getrusage(RUSAGE_SELF).ru_maxrss``:
    model loading, dense and pruned evaluation included — :class:`pruning.prune.PeakRSS` covers the prune only)."""
    import resource

    peak = float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


#: the layout of ``report.json`` that :func:`build_report` writes and :func:`read_report` reads (1: before the run
#: records; it had no ``layout`` key)
REPORT_LAYOUT = 2


def build_report(result, lm=None, dense_ppl: Optional[dict] = None, pruned_ppl: Optional[dict] = None,
                 extra: Optional[dict] = None, fingerprint: bool = True, evaluation: Optional[dict] = None,
                 zeroshot: Optional[dict] = None) -> dict:
    """The report dict of a :class:`pruning.prune.PruneResult` (JSON-able), layout :data:`REPORT_LAYOUT`.

    Parameters
    ----------
    result : pruning.prune.PruneResult
        The prune.
    lm : spectra.models.LoadedModel, optional
        The model (its source, type, size and weight hash; its label is the records' ``model``).
    dense_ppl, pruned_ppl : dict, optional
        {dataset: :meth:`pruning.evaluation.perplexity.PerplexityResult.to_dict` plus ``seconds``}.
    extra : dict, optional
        Further top-level sections (``saved``, ``compute``, ...).
    fingerprint : bool
        Hash the weight files (:func:`model_record`).
    evaluation : dict, optional
        ``datasets`` (list), ``seqlen`` and ``max_windows`` as asked for (None: the default), ``tasks`` and
        ``limit`` (lm-eval); default: the datasets of ``pruned_ppl``, default windows.
    zeroshot : dict, optional
        {"dense" / "pruned": :class:`pruning.evaluation.lmeval.ZeroShotResult` or None}.

    Returns
    -------
    dict
        ``layout``; ``runs``: the run records (:func:`run_records`, the columns of a sweep row); then what a row has
        not: ``created command model allocation calibration perplexity timings_s process_peak_rss_mb rss_before_mb
        layers eval zeroshot collapse`` and ``extra``.
    """
    from pruning.collapse import collapse_note, record_sparsities

    s = result.settings
    ev = {"datasets": list(pruned_ppl or {}), "seqlen": None, "max_windows": None, "tasks": [], "limit": None,
          **(evaluation or {})}
    zs = {k: v for k, v in (zeroshot or {}).items() if v}
    tasks = {**zs["pruned"].flat(), "tasks_seconds": zs["pruned"].seconds} if "pruned" in zs else {}
    label = lm.source.label if lm is not None else None
    sparsities = record_sparsities(result.layers)
    notes = sorted({n for n in ([collapse_note(p.get("ppl"), (dense_ppl or {}).get(ds, {}).get("ppl"), sparsities)
                                 for ds, p in (pruned_ppl or {}).items()] or [collapse_note(None, None, sparsities)])
                    if n})
    rep: dict[str, Any] = {
        "layout": REPORT_LAYOUT,
        "runs": run_records(result, label, ev, dense_ppl or {}, pruned_ppl or {}, tasks,
                            json.dumps(package_versions())),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": _command(),
        "model": model_record(lm, fingerprint) if lm is not None else None,
        "allocation": result.allocation_info,
        "calibration": {"dataset": s.calibration.dataset, "shape": list(result.calibration_shape)
                        if result.calibration_shape else None},
        "perplexity": {"dense": dense_ppl or {}, "pruned": pruned_ppl or {}},
        "timings_s": {k: round(float(v), 4) for k, v in result.timings.items()},
        "process_peak_rss_mb": round(process_peak_rss_mb(), 1),
        "rss_before_mb": round(result.rss_before_mb, 1),
        "layers": result.layers.to_dict(orient="records"),
        "eval": ev,
        "zeroshot": {k: v.to_dict() for k, v in zs.items()},
        "collapse": {"collapsed": bool(notes), "notes": notes},
    }
    if extra:
        rep.update(extra)
    return rep


def run_records(result, model_label: Optional[str], evaluation: dict, dense_ppl: dict, pruned_ppl: dict,
                tasks: dict, versions: str) -> list[dict]:
    """The run records of a ``prune`` run: one per perplexity dataset (one without perplexity when none was
    evaluated), each the sweep row of the same cell (:func:`pruning.runs.run_record` with the sweep's further
    columns: ``key`` (:func:`pruning.runs.cell_key` of the model, the settings and the evaluation as a sweep
    keys it), ``model``, ``kind`` = ``pruned``, ``dense_ppl``, :func:`pruning.runs.prune_columns`, ``eval_seconds``,
    ``versions`` (JSON) and the lm-eval columns ``tasks``)."""
    from pruning.runs import cell_key, prune_columns, run_record

    s = result.settings
    out = []
    for ds in evaluation["datasets"] or [None]:
        key_ev = {"dataset": ds, "seqlen": evaluation["seqlen"], "max_windows": evaluation["max_windows"]}
        if evaluation.get("tasks"):  # as pruning.sweep.SweepSpec.eval_settings
            key_ev.update(tasks=list(evaluation["tasks"]), limit=evaluation.get("limit"))
        p = pruned_ppl.get(ds, {}) if ds is not None else {}
        out.append(run_record(s, ds, p.get("seqlen"), evaluation["max_windows"], p,
                              key=cell_key(model_label, s, key_ev), model=model_label, kind="pruned",
                              dense_ppl=dense_ppl.get(ds, {}).get("ppl"), **prune_columns(result),
                              eval_seconds=p.get("seconds"), versions=versions, **tasks))
    return out


def read_report(path: str | os.PathLike) -> dict:
    """The ``report.json`` of ``python -m pruning prune`` at ``path`` (a file or the output folder), layout
    :data:`REPORT_LAYOUT`; one-line FileNotFoundError / ValueError for a missing file, a file that is not a report,
    a report of the previous layout (no ``runs``) or of a newer one."""
    p = Path(path).expanduser()
    p = p / "report.json" if p.is_dir() else p
    if not p.is_file():
        raise FileNotFoundError(f"report not found: {p}; `python -m pruning prune ... --out DIR` writes "
                                f"DIR/report.json")
    try:
        doc = json.loads(p.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{p} is not JSON ({type(exc).__name__}); point to the report.json of a prune run") from None
    if not isinstance(doc, dict) or ("runs" not in doc and "perplexity" not in doc):
        raise ValueError(f"{p} is not a report of `python -m pruning prune` (no 'runs'); point to DIR/report.json")
    layout = doc.get("layout", 1)
    if not isinstance(layout, int):
        raise ValueError(f"{p} has a report layout {layout!r} that is not a number; point to DIR/report.json")
    if layout < REPORT_LAYOUT or "runs" not in doc:
        raise ValueError(f"{p} has the previous report layout (no 'runs' run records, layout {layout}); rerun "
                         f"`python -m pruning prune ... --overwrite` to rewrite it")
    if layout > REPORT_LAYOUT:
        raise ValueError(f"{p} has report layout {layout}, newer than this version reads ({REPORT_LAYOUT}); "
                         f"update spectral-pruning-lab")
    return doc


def _command() -> str:
    argv = list(sys.argv)
    if argv and argv[0].endswith(os.path.join("pruning", "__main__.py")):
        argv[0] = "python -m pruning"
    return " ".join(argv)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented strict JSON (non-finite floats as ``null``, :func:`spectra.results.jsonable`),
    whole or not at all (:func:`spectra.files.atomic_path`)."""
    from spectra.files import atomic_path
    from spectra.results import jsonable

    with atomic_path(path) as tmp, open(tmp, "w") as fh:
        json.dump(jsonable(obj), fh, indent=2, allow_nan=False)
    return Path(path)
