"""``python -m pruning tune [MODEL]``: tune AlphaPruning's λ (or OWL's λ and M) on held-out text from cached dense
statistics (:mod:`pruning.tune`); ``--final`` then prunes sequentially at the chosen value and reports WikiText-2.

User mistakes print one ``error: ...`` line on stderr and exit with 2, before anything slow runs.
"""
from __future__ import annotations

import argparse
import sys

from pruning.cli.common import parse_number, parse_numbers

__all__ = ["add_parser", "main"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("tune", help="tune the allocation's λ (OWL: λ and M) on held-out text in seconds",
                              description=__doc__.splitlines()[0])
    p.add_argument("model", nargs="?", default=None, metavar="MODEL", help="built-in alias, HF dir, .gguf or hub id")
    p.add_argument("--pruner", default="wanda", help="magnitude, wanda or sparsegpt (one-shot from the statistics)")
    p.add_argument("--allocation", default="alphapruning", help="alphapruning (tunes λ) or owl (λ and M)")
    p.add_argument("--sparsity", default="0.7", help="target global sparsity (default 0.7)")
    p.add_argument("--lams", default="0,0.1,0.2,0.3,0.4,0.5", help="λ candidates (golden: their range and count)")
    p.add_argument("--owl-ms", default="5", help="OWL's M candidates (default 5)")
    p.add_argument("--search", default="grid", help="grid (default) or golden")
    p.add_argument("--nsamples", default="16", help="calibration windows (default 16)")
    p.add_argument("--seqlen", default="256", help="calibration window length (default 256)")
    p.add_argument("--seed", default="0", help="calibration seed (default 0)")
    p.add_argument("--tune-dataset", default="c4", help="held-out scoring text: c4 (validation documents "
                                                         "1000–1999, default) or ptb-valid; never wikitext2 (test)")
    p.add_argument("--tune-seqlen", default=None, help="held-out window length (default: --seqlen)")
    p.add_argument("--max-windows", default="8", help="held-out windows per candidate (default 8)")
    p.add_argument("--xmin-rule", default="peak", help="Hill-fit xmin rule for AlphaPruning (default peak)")
    p.add_argument("--final", action="store_true",
                   help="then prune sequentially (the reference loop) at the chosen value and at uniform sparsity, and "
                        "score both on the held-out windows and on WikiText-2 test")
    p.add_argument("--eval-seqlen", default="512", help="--final: WikiText-2 window length (default 512)")
    p.add_argument("--eval-windows", default=None, help="--final: first N WikiText-2 windows (default all)")
    p.add_argument("--data-dir", default=None, help="folder with the data files (default $SPL_DATA_DIR, ../shared/data)")
    p.add_argument("--out", required=True, help="tune JSON to write (resumed when its settings match)")
    p.set_defaults(func=main)
    return p


def settings_from_args(args: argparse.Namespace):
    """:class:`pruning.tune.TuneSettings` from the parsed options (validated; one-line ValueError)."""
    from pruning.calib_stats import CalibSettings
    from pruning.tune import TuneSettings

    seqlen = parse_number("seqlen", args.seqlen, int)
    s = TuneSettings(pruner=args.pruner, allocation=args.allocation, sparsity=parse_number("sparsity", args.sparsity),
                     lams=parse_numbers("lams", args.lams), owl_Ms=parse_numbers("owl-ms", args.owl_ms), search=args.search,
                     calib=CalibSettings(nsamples=parse_number("nsamples", args.nsamples, int), seqlen=seqlen,
                                         seed=parse_number("seed", args.seed, int)),
                     eval_dataset=args.tune_dataset,
                     eval_seqlen=parse_number("tune-seqlen", args.tune_seqlen, int) if args.tune_seqlen else seqlen,
                     eval_windows=parse_number("max-windows", args.max_windows, int), xmin_rule=args.xmin_rule)
    return s.validate()


def main(args: argparse.Namespace) -> int:
    from spectra.models import load_model

    from pruning.report import write_json_atomic
    from pruning.tune import final_prune, tune

    try:
        s = settings_from_args(args)
        lm = load_model(args.model)
        result = tune(lm, s, args.out, data_path=args.data_dir)
        if args.final:
            result["final"] = final_prune(lm, s, result["best"], parse_number("eval-seqlen", args.eval_seqlen, int, lo=1),
                                          parse_number("eval-windows", args.eval_windows, int, lo=1, allow_none=True),
                                          data_path=args.data_dir)
            write_json_atomic(args.out, result)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    return 0
