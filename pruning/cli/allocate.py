"""``python -m pruning allocate``: per-matrix sparsities from a spectra metrics file, without touching the model.

Example::

    python -m pruning allocate --metrics results/smollm2.parquet --method alphapruning --sparsity 0.7 \\
        --lam 0.3 --out alloc.json

Prints the Contract 2 JSON (``{"method", "sparsity", "settings", "layers"}``) or writes it to ``--out`` (``.json`` or
``.csv``; an existing file is kept unless ``--overwrite``). ``global`` / ``lamp`` read the weights of ``--model``;
``owl`` reads OWL's outlier ratios from ``--outlier-ratios`` (JSON ``{block: D}`` or ``{longname: D}``).
Every user mistake ends with one ``error: ...`` line on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

from pruning.allocation import (
    ALLOCATION_METHODS,
    DIRECTIONS,
    allocate,
    allocation_to_json,
    get_allocation,
    save_allocation,
)
from pruning.cli.common import add_allocation_options, allocation_from_args, one_line_errors


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``allocate`` sub-command on an ``argparse`` sub-parsers object and return its parser."""
    p = subparsers.add_parser(
        "allocate", help="layer-wise sparsity allocation from a metrics file (prints or writes JSON)",
        description="Per-matrix sparsities whose parameter-weighted mean is --sparsity. Methods: "
                    + ", ".join(ALLOCATION_METHODS) + ".")
    _add_arguments(p)
    p.set_defaults(func=main)
    return p


def _add_arguments(p: argparse.ArgumentParser) -> None:
    # the allocation options are AllocationSettings' fields; values are checked in main() (one 'error:' line)
    p.add_argument("--metrics", required=True, help="spectra results file (.parquet or .csv), one row per matrix")
    p.add_argument("--method", default="alphapruning", help=f"one of: {', '.join(ALLOCATION_METHODS)}; "
                                                             f"default alphapruning")
    add_allocation_options(p, defaults={"sparsity": None}, required=("sparsity",))
    p.add_argument("--direction", default="higher_more", help=f"{' or '.join(DIRECTIONS)} (default higher_more)")
    p.add_argument("--no-clip", action="store_true",
                   help="faithful reference formula without bounds (values may leave [0, 1])")
    p.add_argument("--outlier-ratios", "--signal", dest="outlier_ratios", default=None,
                   help="JSON file {block: value} or {longname: value}: the calibration signal of --method owl "
                        "(outlier ratios D) or dlp (block scores)")
    p.add_argument("--model", default=None, help="model source whose weights global/lamp read (e.g. builtin)")
    p.add_argument("--out", default=None, help="write here (.json or .csv) instead of printing")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")


def build_parser() -> argparse.ArgumentParser:
    """Stand-alone parser (``python -m pruning.cli.allocate``), same options as ``python -m pruning allocate``."""
    p = argparse.ArgumentParser(prog="python -m pruning.cli.allocate",
                                description="layer-wise sparsity allocation from a metrics file")
    _add_arguments(p)
    return p


class _UserError(Exception):
    pass


def load_metrics(path: str):
    """Read a spectra results file: ``spectra.results.load_results`` when available, else pandas by suffix."""
    import pandas as pd

    f = Path(path)
    if not f.is_file():
        raise _UserError(f"metrics file {path} not found; create it with `python -m spectra analyze ... --out FILE`")
    try:
        from spectra.results import load_results
    except ImportError:
        load_results = None
    if load_results is not None:
        return load_results(f)
    suffix = f.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return pd.read_parquet(f)
    if suffix == ".csv":
        return pd.read_csv(f)
    raise _UserError(f"unknown metrics file type {f.suffix!r}; use .parquet or .csv")


def _load_ratios(path: str) -> dict:
    f = Path(path)
    if not f.is_file():
        raise _UserError(f"outlier-ratios file {path} not found")
    try:
        doc = json.loads(f.read_text())
    except json.JSONDecodeError as exc:
        raise _UserError(f"{path} is not valid JSON ({exc.msg})") from None
    if not isinstance(doc, dict) or not doc:
        raise _UserError(f"{path} must hold a JSON object {{block: D}} or {{longname: D}}")
    return {(int(k) if str(k).lstrip("-").isdigit() else k): v for k, v in doc.items()}


def _load_weights(source: str) -> dict:
    from spectra.models import weights_dir
    from spectra.weights import iter_safetensors_weights

    return {info.longname: w for info, w in iter_safetensors_weights(weights_dir(source))}


def main(args: argparse.Namespace) -> int:
    """Run ``allocate``; returns the exit status (0 ok, 2 user error with one ``error:`` line on stderr)."""
    def run() -> None:
        if args.method not in ALLOCATION_METHODS:
            raise _UserError(f"unknown allocation method {args.method!r}; choose one of: "
                             f"{', '.join(ALLOCATION_METHODS)}")
        settings = allocation_from_args(args.method, args)  # every value (and --exclude-flagged's method) checked
        out = Path(args.out) if args.out else None
        if out is not None:
            if out.suffix.lower() not in (".json", ".csv"):
                raise _UserError(f"--out {out}: use a .json or .csv file")
            if out.exists() and not args.overwrite:
                raise _UserError(f"{out} already exists; pass --overwrite to replace it or choose another --out")
        metrics = load_metrics(args.metrics)
        weights = ratios = None
        spec = get_allocation(args.method)
        if spec.reads == "weights":
            if not args.model:
                raise _UserError(f"method {args.method!r} needs the weights: pass --model SOURCE (e.g. builtin)")
            weights = _load_weights(args.model)
        if spec.needs_calibration:
            if not args.outlier_ratios:
                raise _UserError(f"method {args.method!r} needs calibration data: pass --outlier-ratios FILE (JSON "
                                 f"{{block: value}}: OWL's outlier ratios, DLP's block scores) from a calibration "
                                 f"pass, "
                                 f"or prune with a model and calibration data (python -m pruning prune)")
            ratios = _load_ratios(args.outlier_ratios)
        df = allocate(metrics, args.method, settings.sparsity, **settings.allocate_kwargs(weights, ratios),
                      direction=args.direction, clip=not args.no_clip)
        if out is not None:
            save_allocation(df, out, overwrite=args.overwrite)
            info = df.attrs["allocation"]
            print(f"wrote {out}: {len(df)} matrices, method {args.method}, mean sparsity "
                  f"{info['mean_sparsity']:.6f}" + (f" ({info['note']})" if "note" in info else ""))
        else:
            print(json.dumps(allocation_to_json(df), indent=1))

    return one_line_errors(run, (_UserError, ValueError, OSError))


def run(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``python -m pruning.cli.allocate``."""
    return main(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(run())
