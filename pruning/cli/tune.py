"""``python -m pruning tune [MODEL]``: tune AlphaPruning's λ (or OWL's λ and M) on held-out text from cached dense
statistics (:mod:`pruning.tune`); ``--final`` then prunes sequentially at the chosen value and reports WikiText-2.
``--allocation sensitivity --sensitivity-table sens.parquet`` tunes λ of the measured table's allocation.

User mistakes print one ``error: ...`` line on stderr and exit with 2, before anything slow runs.
"""
from __future__ import annotations

import argparse
from typing import Optional

from pruning.cli.common import check_table_model, one_line_errors, parse_number

__all__ = ["add_parser", "main"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``tune`` sub-command (options from the fields of :class:`pruning.tune.TuneSettings` and of its
    calibration, :class:`pruning.settings.CalibrationSettings`, with the tuning's own defaults)."""
    from pruning.calib_stats import TUNE_CALIBRATION
    from pruning.settings import CalibrationSettings
    from pruning.tune import TuneSettings
    from spectra.options import add_options

    p = subparsers.add_parser("tune", help="tune the allocation's λ (OWL: λ and M) on held-out text in seconds",
                              description=__doc__.splitlines()[0])
    p.add_argument("model", nargs="?", default=None, metavar="MODEL", help="built-in alias, HF dir, .gguf or hub id")
    add_options(p, TuneSettings)
    add_options(p, CalibrationSettings, defaults={"nsamples": TUNE_CALIBRATION.nsamples,
                                                  "seqlen": TUNE_CALIBRATION.seqlen})
    p.add_argument("--final", action="store_true",
                   help="then prune sequentially (the reference loop) at the chosen value and at uniform sparsity, and "
                        "score both on the held-out windows and on WikiText-2 test")
    # own destinations: TuneSettings' eval_seqlen / eval_windows are the held-out --tune-seqlen / --max-windows
    p.add_argument("--eval-seqlen", dest="final_seqlen", default=None,
                   help="--final: WikiText-2 window length (default 512)")
    p.add_argument("--eval-windows", dest="final_windows", default=None,
                   help="--final: first N WikiText-2 windows (default all)")
    p.add_argument("--stream", action="store_true",
                   help="read one decoder block at a time from the safetensors shards (larger-than-memory models; "
                        "not with --final)")
    p.add_argument("--out", required=True, help="tune JSON to write (resumed when its settings match)")
    p.set_defaults(func=main)
    return p


def settings_from_args(args: argparse.Namespace):
    """:class:`pruning.tune.TuneSettings` from the parsed options (checked on construction; one-line ValueError)."""
    from pruning.settings import CalibrationSettings
    from pruning.tune import TuneSettings
    from spectra.options import options_from_namespace

    calib = options_from_namespace(CalibrationSettings, args)
    return options_from_namespace(TuneSettings, args, calib=calib)


def final_from_args(args: argparse.Namespace) -> Optional[tuple[int, Optional[int]]]:
    """``(WikiText-2 window length, first N windows or None)`` of ``--final``, or None without ``--final``;
    checked here, before the search (one-line ValueError naming the flag)."""
    if args.final and args.stream:
        raise ValueError("--final prunes the whole model in memory; with --stream, prune at the chosen value with "
                         "python -m pruning prune --stream")
    if not args.final:
        if args.final_seqlen is not None or args.final_windows is not None:
            raise ValueError("--eval-seqlen / --eval-windows set the WikiText-2 windows of --final; add --final (the "
                             "held-out windows of the search are --max-windows and --tune-seqlen)")
        return None
    seqlen = parse_number("eval-seqlen", "512" if args.final_seqlen is None else args.final_seqlen, int, lo=1)
    return seqlen, parse_number("eval-windows", args.final_windows, int, lo=1, allow_none=True)


def main(args: argparse.Namespace) -> int:
    from pruning.allocation.registry import get_allocation
    from pruning.report import write_json_atomic
    from pruning.tune import final_prune, tune
    from spectra.models import load_model

    def run() -> None:
        s = settings_from_args(args)
        final = final_from_args(args)
        if s.sensitivity_table and get_allocation(s.allocation).reads != "table":
            raise ValueError("--sensitivity-table is read by --allocation sensitivity only; choose it or drop the "
                             "table")
        check_table_model(s.sensitivity_table, args.model, s.pruner, s.sparsity)
        if args.stream:
            from pruning.stream import StreamedModel, stream_source_dir

            reader = StreamedModel(stream_source_dir(args.model))  # no writer: blocks are only read and freed
            tune(reader, s, args.out, block_io=reader)
            return
        lm = load_model(args.model)
        result = tune(lm, s, args.out)
        if final is not None:
            result["final"] = final_prune(lm, s, result["best"], *final)
            write_json_atomic(args.out, result)

    return one_line_errors(run)
