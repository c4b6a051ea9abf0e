"""Effect of leaving AlphaPruning's flagged fits (α > 8, "likely spurious") out of the block mean (the Allocation
lab's "leave flagged fits out" option).

For each model: dense WikiText-2 perplexity, then three prunes of a fresh copy of the dense model with the same
calibration windows — uniform, AlphaPruning (λ = 0.3, the reference: every fit in the block mean) and AlphaPruning
(λ = 0.3) with ``exclude_flagged=True`` (our option, ``PruneSettings.exclude_flagged`` / ``--exclude-flagged``).
Prints one table with the settings and package versions. Default: Gemma-3-270M at 50 % (needs its optional
packages, see the README) and the built-in SmolLM2-135M at 60 %; Wanda, 16 × 256 C4 calibration tokens (seed 0),
WikiText-2 seqlen 512, first 16 windows, xmin rule ``peak``.

    OMP_NUM_THREADS=1 python bench/bench_flagged_fits.py
    OMP_NUM_THREADS=1 python bench/bench_flagged_fits.py --models smollm2:0.6 --eval-windows 8
"""
from __future__ import annotations

import argparse
import copy
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="gemma3:0.5,smollm2:0.6", help="MODEL:SPARSITY,... (built-in aliases)")
    ap.add_argument("--pruner", default="wanda")
    ap.add_argument("--lam", type=float, default=0.3)
    ap.add_argument("--nsamples", type=int, default=16)
    ap.add_argument("--seqlen", type=int, default=256)
    ap.add_argument("--eval-seqlen", type=int, default=512)
    ap.add_argument("--eval-windows", type=int, default=16)
    ap.add_argument("--xmin-rule", default="peak")
    args = ap.parse_args()

    import numpy as np
    import pandas as pd
    import torch
    import transformers

    from pruning.evaluation.data import get_calibration
    from pruning.evaluation.perplexity import perplexity
    from pruning.plots import block_sparsity
    from pruning.prune import prune_model
    from pruning.settings import PruneSettings
    from spectra.analyze import AnalysisSettings, analyze, spurious_blocks
    from spectra.models import load_model

    torch.manual_seed(0)
    rows = []
    for item in args.models.split(","):
        name, S = item.split(":")
        S = float(S)
        t0 = time.perf_counter()
        lm = load_model(name)
        metrics = analyze(lm.model, AnalysisSettings(xmin_rule=args.xmin_rule), progress=False)
        flagged = spurious_blocks(metrics)
        calib = get_calibration(lm.tokenizer, args.nsamples, args.seqlen, 0)
        def ppl(m, tok=lm.tokenizer):
            return perplexity(m, tok, "wikitext2", seqlen=args.eval_seqlen, max_windows=args.eval_windows,
                              progress=False)

        dense = ppl(lm.model)
        rows.append(dict(model=name, S=S, allocation="dense", ppl=dense.ppl, windows=dense.nwindows))
        print(f"{name}: dense {dense.ppl:.3f} ({dense.nwindows} × {dense.seqlen}); flagged blocks: "
              + "; ".join(f"{r.block}: {r.flagged}" for r in flagged.itertuples()), flush=True)
        for label, alloc, excl in (("uniform", "uniform", False), (f"AlphaPruning λ={args.lam}", "alphapruning", False),
                                   (f"AlphaPruning λ={args.lam}, flagged fits left out", "alphapruning", True)):
            t = time.perf_counter()
            model = copy.deepcopy(lm.model)
            s = PruneSettings.from_flat(pruner=args.pruner, allocation=alloc, sparsity=S, lam=args.lam,
                                        nsamples=args.nsamples, seqlen=args.seqlen, xmin_rule=args.xmin_rule,
                                        exclude_flagged=excl)
            res = prune_model(model, lm.tokenizer, s, progress=False, metrics=metrics, calib=calib.clone())
            r = ppl(model)
            bs = block_sparsity(res.layers.rename(columns={"target": "sparsity"}))
            fb = [int(b) for b in flagged["block"]]
            rows.append(dict(model=name, S=S, allocation=label, ppl=r.ppl, windows=r.nwindows,
                             achieved=res.achieved_sparsity, block_min=float(bs.min()), block_max=float(bs.max()),
                             flagged_blocks=", ".join(f"{b}: {bs.loc[b]:.1%}" for b in fb),
                             seconds=round(time.perf_counter() - t, 1)))
            print(f"  {label}: ppl {r.ppl:.3f}, achieved {res.achieved_sparsity:.4f}, "
                  f"{time.perf_counter() - t:.0f} s", flush=True)
            del model
        print(f"  {name} total {time.perf_counter() - t0:.0f} s", flush=True)
        del lm

    table = pd.DataFrame(rows)
    print()
    print(f"settings: pruner {args.pruner}, calibration {args.nsamples} × {args.seqlen} tokens of C4 (seed 0), "
          f"WikiText-2 seqlen {args.eval_seqlen}, first {args.eval_windows} windows, xmin rule {args.xmin_rule}, "
          f"λ = {args.lam}, linear map, block granularity, max sparsity 0.99; OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS', 'unset')}")
    print(f"versions: python {platform.python_version()}, torch {torch.__version__}, transformers "
          f"{transformers.__version__}, numpy {np.__version__}, pandas {pd.__version__}")
    fmt = {"ppl": "{:.3f}".format, "achieved": "{:.4f}".format, "block_min": "{:.1%}".format,
           "block_max": "{:.1%}".format}
    print(table.to_string(index=False, formatters=fmt, na_rep=""))


if __name__ == "__main__":
    main()
