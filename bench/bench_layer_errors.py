"""Local reconstruction error of every pruner on the matrices of one decoder block of the built-in model.

For each pruner, pattern (50 % unstructured, 2:4) and refinement (none, masked GD, preconditioned masked GD) prints
the mean over the block's matrices of the relative error ``‖(W − Ŵ)X‖F / ‖WX‖F`` (from ``H = XXᵀ``) and the CPU
seconds of the pruner itself. Statistics come from the dense model's calibration inputs of that block (no error
correction, ``K = D = H``). One thread. Example (the block and calibration the masked-GD comparison used)::

    python bench/bench_layer_errors.py --block 15 --nsamples 16 --seqlen 256
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: (label, pruner, options): FISTA with the budget used for the full-model runs, and its variants
CONFIGS = (
    ("magnitude", "magnitude", {}),
    ("wanda", "wanda", {}),
    ("sparsegpt", "sparsegpt", {}),
    ("fista literal (30 it, 8 λ steps)", "fista", {"max_iter": 30, "search_steps": 8, "refit": "none"}),
    ("fista literal select=loss", "fista", {"max_iter": 30, "search_steps": 8, "select": "loss", "refit": "none"}),
    ("fista refit (100 it, 16 λ steps)", "fista", {"max_iter": 100, "search_steps": 16}),
    ("fista refit (30 it, 8 λ steps)", "fista", {"max_iter": 30, "search_steps": 8}),
    ("fista refit (20 it, 6 λ steps)", "fista", {"max_iter": 20, "search_steps": 6}),
    ("fista refit (10 it, 4 λ steps)", "fista", {"max_iter": 10, "search_steps": 4}),
    ("fista refit (5 it, 3 λ steps)", "fista", {"max_iter": 5, "search_steps": 3}),
    ("fista refit (1 it, 1 λ step)", "fista", {"max_iter": 1, "search_steps": 1}),
    ("fista refit exact (10 it, 4 λ steps)", "fista", {"max_iter": 10, "search_steps": 4, "refit": "cholesky"}),
    ("prox24 plain (growth 1.25, float32)", "prox24", {"growth": 1.25, "dtype": "float32", "precondition": False}),
    ("prox24 rescaled (growth 1.1, float64)", "prox24", {"growth": 1.1, "dtype": "float64"}),
    ("prox24 rescaled (growth 1.25, float32)", "prox24", {"growth": 1.25, "dtype": "float32"}),
    ("prox24 rescaled (growth 1.5, float32)", "prox24", {"growth": 1.5, "dtype": "float32"}),
)


def block_stats(block: int, nsamples: int, seqlen: int):
    """(linear layer, LayerStats) of every matrix of ``block`` from the dense model's calibration inputs."""
    from pruning.block_loop import block_layer_stats
    from pruning.evaluation.data import get_calibration
    from spectra.models import load_model

    lm = load_model()
    return block_layer_stats(lm.model, get_calibration(lm.tokenizer, nsamples, seqlen, 0), block)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--block", type=int, default=15)
    ap.add_argument("--nsamples", type=int, default=16)
    ap.add_argument("--seqlen", type=int, default=256)
    ap.add_argument("--gd-steps", type=int, default=100)
    ap.add_argument("--only", default=None, help="comma-separated labels' pruner names to run (default all)")
    ap.add_argument("--labels", default=None, help="comma-separated substrings: run only configs whose label has one")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, str(ROOT))
    from pruning.pruners import get_pruner
    from pruning.pruners.gd import masked_gd, relative_error
    from pruning.report import package_versions

    layers = block_stats(args.block, args.nsamples, args.seqlen)
    print(f"block {args.block}, {len(layers)} matrices, statistics of {args.nsamples} × {args.seqlen} C4 tokens "
          f"(seed 0), no error correction, one thread; GD = {args.gd_steps} masked steps; "
          f"versions {package_versions()}", flush=True)
    only = set(args.only.split(",")) if args.only else None
    head = f"{'pruner':<32} {'pattern':>7} {'prune cpu s':>11} {'rel err':>8} {'+GD':>8} {'+GD pre':>8} {'sparsity':>8}"
    print(head + "\n" + "-" * len(head), flush=True)
    for nm in (None, (2, 4)):
        for label, name, opts in CONFIGS:
            if (only and name not in only) or (name == "prox24" and nm is None) or \
                    (args.labels and not any(x in label for x in args.labels.split(","))):
                continue
            opts = {k: (getattr(torch, v) if k == "dtype" else v) for k, v in opts.items()}
            cpu, errs, gd, gdp, zeros, total = 0.0, [], [], [], 0, 0
            for lin, st in layers:
                W = lin.get()
                t = time.process_time()
                Wn = get_pruner(name).fn(W.clone(), st, 0.5, nm, **opts)
                cpu += time.process_time() - t
                errs.append(relative_error(Wn, W, st))
                gd.append(relative_error(masked_gd(Wn, W, st, args.gd_steps, precondition=False), W, st))
                gdp.append(relative_error(masked_gd(Wn, W, st, args.gd_steps, precondition=True), W, st))
                zeros, total = zeros + int((Wn == 0).sum()), total + Wn.numel()
            mean = lambda v: sum(v) / len(v)  # noqa: E731
            print(f"{label:<32} {'2:4' if nm else '0.5':>7} {cpu:>11.1f} {mean(errs):>8.4f} {mean(gd):>8.4f} "
                  f"{mean(gdp):>8.4f} {zeros / total:>8.4f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
