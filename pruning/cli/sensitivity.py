"""``python -m pruning sensitivity [MODEL]``: each block's (or matrix's) held-out cost of pruning, alone or at the
margin of an all-at-S model (:mod:`pruning.sensitivity`), with the per-block signals and their verdict
(:mod:`pruning.signals`) into one parquet table; resumed when its settings match.

User mistakes print one ``error: ...`` line on stderr and exit with 2, before anything slow runs.
"""
from __future__ import annotations

import argparse
import sys

__all__ = ["add_parser", "main"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``sensitivity`` sub-command (options from the fields of
    :class:`pruning.sensitivity.SensitivitySettings` — the held-out ones shared with ``tune`` — and of its
    calibration, with the tuning's defaults)."""
    from pruning.calib_stats import TUNE_CALIBRATION
    from pruning.sensitivity import SensitivitySettings
    from pruning.settings import CalibrationSettings
    from spectra.options import add_options

    p = subparsers.add_parser("sensitivity", help="measure which blocks matter: each block's pruning cost on "
                              "held-out text, against α and the other signals",
                              description="Measure each block's (or matrix's) pruning cost on held-out text, alone or "
                              "at the margin of an all-at-S model, against α and the other signals.")
    p.add_argument("model", nargs="?", default=None, metavar="MODEL", help="built-in alias, HF dir, .gguf or hub id")
    add_options(p, SensitivitySettings)
    add_options(p, CalibrationSettings, defaults={"nsamples": TUNE_CALIBRATION.nsamples,
                                                  "seqlen": TUNE_CALIBRATION.seqlen})
    p.add_argument("--out", required=True, help="parquet table to write (resumed when its settings match)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=main)
    return p


def settings_from_args(args: argparse.Namespace):
    """:class:`pruning.sensitivity.SensitivitySettings` from the parsed options (one-line ValueError)."""
    from pruning.sensitivity import SensitivitySettings
    from pruning.settings import CalibrationSettings
    from spectra.options import options_from_namespace

    calib = options_from_namespace(CalibrationSettings, args)
    return options_from_namespace(SensitivitySettings, args, calib=calib)


def main(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pruning.sensitivity import measure
    from pruning.signals import format_verdict, verdict
    from spectra.models import load_model

    try:
        s = settings_from_args(args)
        out = Path(args.out)
        if out.suffix != ".parquet":
            raise ValueError(f"--out {args.out}: the table is a parquet file; name it *.parquet")
        if not out.parent.is_dir():
            raise ValueError(f"--out {args.out}: folder {out.parent} does not exist; create it first")
        lm = load_model(args.model)
        df = measure(lm, s, out, progress=not args.quiet)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    meta = df.attrs["sensitivity"]
    cols = ["unit", "delta_nll", "ppl", "seconds"]
    print(f"{meta['label']}: reference held-out NLL {meta['reference_nll']:.4f} (ppl {meta['reference_ppl']:.3f})")
    print(df[cols + [c for c in df.columns if c not in cols and c in ("alpha", "stable_rank", "outlier_ratio")]]
          .to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    print(format_verdict(verdict(df, permutations=s.permutations, seed=s.perm_seed)))
    print(f"written: {out}")
    return 0
