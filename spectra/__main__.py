"""python -m spectra [MODEL] [--xmin median|peak|peak_ref|peak_ap|ks] [--out FILE] [--device cpu|cuda] [--eigs] ...

Analyses every block weight matrix of MODEL (default: the built-in SmolLM2-135M-Instruct) with a progress bar and
prints a short summary: per-role median α, the 5 matrices with the largest α, failed matrices and the count by
status. User mistakes print one line ``error: ...`` on stderr and exit with code 2.
"""
from __future__ import annotations

import os

# spinning OpenMP waits make torch up to 10× slower when other processes share the cores; set before torch loads
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import sys
import time
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from .errors import SpectraError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage dump
        sys.stderr.write(f"error: {message} (see python -m spectra --help)\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    from .options import add_options
    from .settings import AnalysisSettings

    p = _Parser(prog="python -m spectra", description="HT-SR spectral diagnostics of every weight matrix of an LM.")
    p.add_argument("model", nargs="?", default=None,
                   help="model directory, .gguf file, hub id or 'builtin' (default: built-in SmolLM2-135M-Instruct)")
    add_options(p, AnalysisSettings, argparse_choices=True)  # the analysis settings, from their fields
    p.add_argument("--out", default=None, help="write the per-matrix table to FILE (.parquet or .csv)")
    p.add_argument("--timings", action="store_true",
                   help="print a 'spectra_timings {json}' line: imports, reading, eigenvalues, fits, writing "
                        "(seconds)")
    p.add_argument("--no-cache", action="store_true", help="recompute even if a cached analysis exists")
    p.add_argument("--overwrite", action="store_true", help="allow --out to replace an existing file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def summary(df: pd.DataFrame, worst: int = 5) -> str:
    """Text summary: per-role median α, the ``worst`` largest-α matrices, failed matrices, counts by status."""
    from .analyze import role_summary

    meta = df.attrs.get("metadata", {})
    lines = [f"model: {meta.get('model', '?')}   matrices: {len(df)}   xmin rule: {meta.get('xmin_rule', '?')}"
             + ("   (from cache)" if meta.get("from_cache") else "")]
    rs = role_summary(df)
    lines.append("per-role alpha:  " + "  ".join(f"{r.role}={r.median_alpha:.2f}" for r in rs.itertuples())
                 + "   (median)")
    ok = df[np.isfinite(df["alpha"].to_numpy(dtype=float))]
    if len(ok):
        lines.append(f"alpha over all matrices: median {ok['alpha'].median():.3f}, mean {ok['alpha'].mean():.3f}")
        lines.append(f"largest alpha (least well trained, {min(worst, len(ok))}):")
        for r in ok.nlargest(worst, "alpha").itertuples():
            note = f"  [{r.warning}]" if r.warning else ""
            lines.append(f"  {r.longname:<40s} alpha={r.alpha:7.3f}  D={r.D:.3f}  tail={r.num_pl_spikes}{note}")
    failed = df[df["status"] == "failed"]
    if len(failed):
        lines.append(f"failed ({len(failed)}):")
        for r in failed.head(10).itertuples():
            lines.append(f"  {r.longname:<40s} {r.warning}")
    counts = df["status"].value_counts()
    lines.append("status: " + ", ".join(f"{s} {int(counts.get(s, 0))}"
                                         for s in ("ok", "over-trained", "under-trained", "failed")))
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        t = time.perf_counter()
        from .analyze import AnalysisSettings, analyze
        from .options import options_from_namespace
        from .results import check_output_path, save_results

        t_imports = time.perf_counter() - t

        if args.out:
            check_output_path(args.out, args.overwrite)  # fail before the work, not after
        settings = options_from_namespace(AnalysisSettings, args)
        t = time.perf_counter()
        df = analyze(args.model, settings, progress=not args.quiet, cache=not args.no_cache)
        t_analyze = time.perf_counter() - t
        print(summary(df))
        t = time.perf_counter()
        if args.out:
            path = save_results(df, args.out, overwrite=args.overwrite)
            print(f"wrote {path}")
        if args.timings:
            phases = df.attrs["metadata"].get("timings", {})
            other = t_analyze - sum(phases.values())
            print("spectra_timings " + json.dumps({"imports (torch, spectra)": round(t_imports, 3), **phases,
                                                   "other analysis": round(other, 3),
                                                   "summary + writing": round(time.perf_counter() - t, 3)}))
    except SpectraError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
