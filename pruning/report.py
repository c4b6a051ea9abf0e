"""The JSON report of a pruning run: settings, seed, package versions, model source and weight hash, per-matrix
target / achieved sparsity, perplexities (dense and pruned), lm-eval zero-shot results (``zeroshot``: dense and pruned,
with lm-eval's and each task's version, when tasks were asked for), timings and peak memory."""
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


def build_report(result, lm=None, dense_ppl: Optional[dict] = None, pruned_ppl: Optional[dict] = None,
                 extra: Optional[dict] = None, fingerprint: bool = True) -> dict:
    """Assemble the report dict of a :class:`pruning.prune.PruneResult` (JSON-able)."""
    s = result.settings
    rep: dict[str, Any] = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": _command(),
        "model": model_record(lm, fingerprint) if lm is not None else None,
        "method": _label(s),
        "settings": s.flat(),
        "seed": s.calibration.seed,
        "versions": package_versions(),
        "target_sparsity": result.target_sparsity,
        "achieved_sparsity": result.achieved_sparsity,
        "allocation": result.allocation_info,
        "calibration": {"dataset": s.calibration.dataset, "shape": list(result.calibration_shape)
                        if result.calibration_shape else None, "seed": s.calibration.seed},
        "perplexity": {"dense": dense_ppl or {}, "pruned": pruned_ppl or {}},
        "timings_s": {k: round(float(v), 4) for k, v in result.timings.items()},
        "peak_rss_mb": round(result.peak_rss_mb, 1),
        "process_peak_rss_mb": round(process_peak_rss_mb(), 1),
        "rss_before_mb": round(result.rss_before_mb, 1),
        "layers": result.layers.to_dict(orient="records"),
    }
    if extra:
        rep.update(extra)
    return rep


def _label(s) -> str:
    from pruning.labels import settings_label

    return settings_label(s)


def _command() -> str:
    argv = list(sys.argv)
    if argv and argv[0].endswith(os.path.join("pruning", "__main__.py")):
        argv[0] = "python -m pruning"
    return " ".join(argv)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON, whole or not at all (:func:`spectra.files.atomic_path`)."""
    from spectra.files import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w") as fh:
        json.dump(obj, fh, indent=2, default=_default, allow_nan=True)
    return Path(path)


def _default(x):
    import numpy as np

    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.floating):
        return float(x)
    if isinstance(x, Path):
        return str(x)
    return str(x)
