"""``python -m pruning sweep [MODEL]``: sparsities × allocations × pruners × λ (× N:M) into one parquet table.

Example::

    python -m pruning sweep --sparsities 0.7 --allocations uniform,owl,alphapruning --lams 0.1,0.2,0.3 \\
        --pruners wanda,sparsegpt --nsamples 32 --seqlen 512 --eval wikitext2 --eval-seqlen 512 \\
        --max-windows 40 --out results/sweep.parquet

``--eval-tasks lambada_openai,piqa [--eval-limit N]`` adds lm-eval zero-shot columns to every row (``piqa_acc``,
``piqa_acc_stderr``, ``piqa_acc_norm``, ``piqa_n``, ``piqa_version``, ``lm_eval_version``, ...).

The table is rewritten after every finished cell; rerunning the same command skips finished cells (keyed by the
model, every setting and the evaluation settings). ``--nm 2:4`` sweeps N:M cells (uniform allocation); ``--nm
none,2:4`` both. Every user mistake ends with one ``error: ...`` line on stderr and exit status 2.
"""
from __future__ import annotations

import argparse

from pruning.cli.common import one_line_errors, parse_list, parse_number
from pruning.cli.prune import add_common_arguments, eval_options, parse_pruner_options, settings_from_args
from pruning.pruners import DEFAULT_PRUNER

__all__ = ["add_parser", "main", "spec_from_args"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``sweep`` sub-command; returns its parser."""
    p = subparsers.add_parser("sweep", help="resumable sweep over sparsities × allocations × pruners × λ (parquet)",
                              description=__doc__.splitlines()[0])
    add_common_arguments(p, sweep=True)
    p.add_argument("--sparsities", default="0.5", help="comma-separated target sparsities (default 0.5)")
    p.add_argument("--allocations", default="uniform", help="comma-separated allocations (default uniform)")
    p.add_argument("--pruners", default=DEFAULT_PRUNER, help=f"comma-separated pruners (default {DEFAULT_PRUNER})")
    p.add_argument("--lams", default="0.3", help="comma-separated AlphaPruning λ values (default 0.3)")
    p.add_argument("--nm", default="none", help="comma-separated N:M patterns, 'none' = unstructured (default none)")
    p.add_argument("--out", required=True, help="parquet table to create or resume")
    p.set_defaults(func=main)
    return p


def spec_from_args(args: argparse.Namespace):
    """A validated :class:`pruning.sweep.SweepSpec` from parsed options."""
    from pruning.pruners import get_pruner, parse_nm
    from pruning.sweep import SweepSpec

    sparsities = [parse_number("sparsities", t) for t in parse_list(args.sparsities)]
    lams = [parse_number("lams", t, lo=0.0, hi=1.0) for t in parse_list(args.lams)]
    nms = [None if t.lower() == "none" else t for t in parse_list(args.nm)]
    for t in nms:
        parse_nm(t)
    allocations, pruners = parse_list(args.allocations), parse_list(args.pruners)
    if not (sparsities and lams and nms and allocations and pruners):
        raise ValueError("empty list in --sparsities/--lams/--nm/--allocations/--pruners; give at least one value")
    if any(nms) and any(a != "uniform" for a in allocations) and None not in nms:
        raise ValueError(f"N:M patterns need allocation 'uniform' (got --allocations {args.allocations}); "
                         f"N:M cells always use uniform")
    opts = parse_pruner_options(args.pruner_opt)
    known = set().union(*(get_pruner(p).options for p in pruners))
    unknown = sorted(set(opts) - known)
    if unknown:
        raise ValueError(f"no pruner of --pruners {args.pruners} has option(s) {', '.join(unknown)}; "
                         f"their options: {', '.join(sorted(known)) or 'none'}")
    base = settings_from_args(args, pruner=pruners[0], allocation="uniform", sparsity=sparsities[0], nm=nms[0],
                              lam=lams[0], allocation_file=None, pruner_options={})
    ev = eval_options(args)
    if len(ev["datasets"]) != 1:
        raise ValueError("a sweep evaluates exactly one dataset; pass --eval wikitext2 (or c4, ptb)")
    spec = SweepSpec(model=args.model, sparsities=sparsities, allocations=allocations, pruners=pruners, lams=lams,
                     nms=nms, base=base, pruner_options=opts, eval_dataset=ev["datasets"][0],
                     eval_seqlen=ev["seqlen"], max_windows=ev["max_windows"], data_dir=args.data_path,
                     device=args.device, eval_tasks=ev.get("tasks", []), eval_limit=ev.get("limit"))
    return spec


def main(args: argparse.Namespace) -> int:
    """Entry point of ``python -m pruning sweep``; 0 on success, 2 with one ``error:`` line on user mistakes."""
    from pruning.sweep import expand, run_sweep

    def run() -> None:
        spec = spec_from_args(args)
        cells = expand(spec)
        print(f"sweep: {len(cells)} cells (+ dense) → {args.out}", flush=True)
        table = run_sweep(spec, args.out, progress=not args.quiet, log=lambda m: print(m, flush=True))
        task_cols = [f"{t}_{m}" for t in spec.eval_tasks for m in ("acc", "acc_norm")]
        cols = [c for c in ("kind", "pruner", "allocation", "sparsity", "nm", "lam", "ppl", "achieved_sparsity",
                            *task_cols) if c in table]
        print(table[cols].to_string(index=False))

    return one_line_errors(run)

