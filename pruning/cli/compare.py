"""``python -m pruning compare MODEL --allocations uniform,alphapruning,farms,owl,dlp,atp --pruner wanda --sparsity 0.7
--out cmp.json [--final]``: every allocation tuned on held-out text with the same candidate budget
(:mod:`pruning.compare`); ``--final`` prunes each sequentially at its tuned value and scores WikiText-2 test.
``sensitivity`` joins with ``--sensitivity-table sens.parquet`` (``python -m pruning sensitivity MODEL --out ...``).

User mistakes print one ``error: ...`` line on stderr and exit with 2, before anything slow runs.
"""
from __future__ import annotations

import argparse
import sys

from pruning.cli.common import check_table_model, parse_number

__all__ = ["add_parser", "main"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``compare``: tune's options (:class:`pruning.tune.TuneSettings` but its ``--allocation``, and the
    calibration's) plus ``--allocations``, ``--final`` and the WikiText-2 window options."""
    from pruning.calib_stats import TUNE_CALIBRATION
    from pruning.compare import DEFAULT_ALLOCATIONS
    from pruning.settings import CalibrationSettings
    from pruning.tune import TuneSettings
    from spectra.options import add_options

    p = subparsers.add_parser("compare", help="tune every allocation on held-out text and compare them (one row each)",
                              description=__doc__.splitlines()[0])
    p.add_argument("model", nargs="?", default=None, metavar="MODEL", help="built-in alias, HF dir, .gguf or hub id")
    p.add_argument("--allocations", default=",".join(DEFAULT_ALLOCATIONS),
                   help=f"comma-separated methods (default {','.join(DEFAULT_ALLOCATIONS)})")
    add_options(p, TuneSettings, skip=("allocation",))
    add_options(p, CalibrationSettings, defaults={"nsamples": TUNE_CALIBRATION.nsamples,
                                                  "seqlen": TUNE_CALIBRATION.seqlen})
    p.add_argument("--final", action="store_true",
                   help="then prune each method sequentially at its tuned value; score held-out and WikiText-2 test")
    # own destinations: TuneSettings' held-out window length is ``eval_seqlen`` (--tune-seqlen)
    p.add_argument("--eval-seqlen", dest="test_seqlen", default="512",
                   help="--final: WikiText-2 window length (default 512)")
    p.add_argument("--eval-windows", dest="test_windows", default=None,
                   help="--final: first N WikiText-2 windows (default all)")
    p.add_argument("--out", required=True, help="compare JSON to write (resumed when its settings match)")
    p.set_defaults(func=main)
    return p


def settings_from_args(args: argparse.Namespace):
    """:class:`pruning.compare.CompareSettings` from the parsed options (one-line ValueError naming the flag)."""
    from pruning.compare import CompareSettings
    from pruning.settings import CalibrationSettings
    from pruning.tune import TuneSettings
    from spectra.options import options_from_namespace

    calib = options_from_namespace(CalibrationSettings, args)
    tune = options_from_namespace(TuneSettings, args, calib=calib)
    return CompareSettings(allocations=args.allocations, tune=tune, final=bool(args.final),
                           test_seqlen=parse_number("eval-seqlen", args.test_seqlen, int, lo=1),
                           test_windows=parse_number("eval-windows", args.test_windows, int, lo=1, allow_none=True))


def main(args: argparse.Namespace) -> int:
    from pruning.compare import compare
    from spectra.models import load_model

    try:
        s = settings_from_args(args)
        check_table_model(s.tune.sensitivity_table, args.model, s.tune.pruner, s.tune.sparsity)
        lm = load_model(args.model)
        compare(lm, s, args.out)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    return 0
