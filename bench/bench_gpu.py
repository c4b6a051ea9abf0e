"""The GPU check of the compute-device and half-precision paths, as one prepared script (a few minutes of GPU
time): the built-in model pruned with Wanda and SparseGPT on the compute device in float32 and bfloat16 against the
CPU float32 run (mask agreement, WikiText-2
perplexity), and the spectra path on the device (batched float64 eigenvalues) against the CPU path.

    python bench/bench_gpu.py                    # --device cuda
    python bench/bench_gpu.py --device cpu       # dry run of the same code on the CPU (agreement 1.0 by design)

Prints one line per check and writes them as JSON to ``--json`` (default bench/bench_gpu.json). Expected on CUDA:
float32 masks agree with the CPU run ≥ 99.9 % and perplexities within 1 %; α, xmin, D within 1e-6 relative.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def masks(model) -> dict:
    """{longname: boolean zero mask on the CPU} of every block matrix."""
    from pruning.blocks import block_linears

    return {l.longname: (l.get() == 0).cpu() for blk in block_linears(model) for l in blk}


def agreement(a: dict, b: dict) -> float:
    """Fraction of block-matrix entries whose pruned / kept state is the same in both runs."""
    same = sum(int((a[n] == b[n]).sum()) for n in a)
    return same / sum(a[n].numel() for n in a)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--nsamples", type=int, default=32)
    ap.add_argument("--seqlen", type=int, default=512)
    ap.add_argument("--eval-windows", type=int, default=40)
    ap.add_argument("--json", default=str(ROOT / "bench" / "bench_gpu.json"))
    args = ap.parse_args()
    from pruning.evaluation.data import get_calibration
    from pruning.evaluation.perplexity import perplexity
    from pruning.prune import prune_model
    from pruning.settings import PruneSettings
    from pruning.stream import blockwise_perplexity
    from spectra.analyze import analyze
    from spectra.models import load_model

    dev = torch.device(args.device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    base = load_model()
    calib = get_calibration(base.tokenizer, args.nsamples, args.seqlen, 0)
    ppl = dict(dataset="wikitext2", seqlen=1024, max_windows=args.eval_windows)
    out = {"device": name, "nsamples": args.nsamples, "seqlen": args.seqlen, "runs": []}
    for pruner in ("wanda", "sparsegpt"):
        settings = PruneSettings.from_flat(pruner=pruner, sparsity=0.5)
        ref = copy.deepcopy(base.model)
        t = time.perf_counter()
        prune_model(ref, base.tokenizer, settings, progress=False, calib=calib)
        cpu_s = time.perf_counter() - t
        ref_ppl = perplexity(ref, base.tokenizer, progress=False, **ppl).ppl
        ref_masks = masks(ref)
        for dtype in (torch.float32, torch.bfloat16):
            m = copy.deepcopy(base.model).to(dtype)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            prune_model(m, base.tokenizer, settings, progress=False, calib=calib, device=dev)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            secs = time.perf_counter() - t
            p = blockwise_perplexity(m, base.tokenizer, device=dev, **ppl).ppl
            row = {"pruner": pruner, "dtype": str(dtype).replace("torch.", ""), "seconds": round(secs, 2),
                   "cpu_fp32_seconds": round(cpu_s, 2), "mask_agreement": agreement(ref_masks, masks(m)),
                   "ppl": p, "cpu_fp32_ppl": ref_ppl, "ppl_rel_diff": abs(p - ref_ppl) / ref_ppl}
            out["runs"].append(row)
            print(json.dumps(row), flush=True)
    t = time.perf_counter()
    a = analyze("builtin", progress=False, cache=False)
    cpu_s = time.perf_counter() - t
    t = time.perf_counter()
    b = analyze("builtin", progress=False, cache=False, device=str(dev))
    dev_s = time.perf_counter() - t
    rel = {c: float(np.nanmax(np.abs(a[c].to_numpy(float) - b[c].to_numpy(float)) / np.abs(a[c].to_numpy(float))))
           for c in ("alpha", "xmin", "D")}
    out["spectra"] = {"cpu_seconds": round(cpu_s, 2), "device_seconds": round(dev_s, 2), "max_rel_diff": rel}
    print(json.dumps(out["spectra"]))
    Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
