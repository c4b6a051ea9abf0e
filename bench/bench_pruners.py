"""Benchmark the layer pruners on the built-in model: pruning time, peak memory, WikiText-2 perplexity.

Every pruner runs in its own subprocess (one thread: OMP/MKL/torch threads = 1) so that peak memory is its own:
load the built-in model, draw the C4 calibration windows (default 128 × 512, seed 0), prune all 210 block matrices
with a uniform allocation (50 % unstructured; ``prox24`` only does 2:4 and runs at 2:4), then WikiText-2 perplexity
(seqlen 512, the first ``--eval-windows`` windows; 0 = all 595). Prints one table; times are also given as a ratio
to Wanda measured in the same run.

    python bench/bench_pruners.py                      # magnitude, wanda, sparsegpt (+ fista / prox24 if present)
    python bench/bench_pruners.py --pruners wanda,sparsegpt --nsamples 32 --eval-windows 8 --json out.json
    python bench/bench_pruners.py --layer-bench 0      # per-matrix time / error of every pruner on block 0
    python bench/bench_pruners.py --pruners sparsegpt,fista,prox24 --nm 2:4 --ref sparsegpt --nsamples 64 \
        --eval-windows -1                              # the speed target: each seed pruner vs SparseGPT
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def run_one(pruner: str, nsamples: int, seqlen: int, eval_windows: int, eval_seqlen: int, sparsity: float,
            nm: str | None) -> dict:
    """Prune a fresh built-in model with ``pruner``; returns timings, memory and perplexity (runs in-process)."""
    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, str(ROOT))
    from pruning.evaluation.data import get_calibration
    from pruning.evaluation.perplexity import perplexity
    from pruning.prune import prune_model
    from pruning.settings import PruneSettings
    from spectra.models import load_model

    lm = load_model()
    t = time.perf_counter()
    settings = PruneSettings.from_flat(pruner=pruner, allocation="uniform", sparsity=sparsity, nm=nm, nsamples=nsamples,
                             seqlen=seqlen, seed=0)
    calib = get_calibration(lm.tokenizer, nsamples, seqlen, 0) if settings.needs_calibration() else None
    calib_s = time.perf_counter() - t
    res = prune_model(lm, None, settings, progress=False, calib=calib)
    ppl = None
    eval_s = 0.0
    if eval_windows >= 0:
        t = time.perf_counter()
        r = perplexity(lm.model, lm.tokenizer, "wikitext2", seqlen=eval_seqlen, max_windows=eval_windows or None,
                       progress=False)
        eval_s = time.perf_counter() - t
        ppl = {"ppl": r.ppl, "nwindows": r.nwindows, "seqlen": r.seqlen}
    return {"pruner": pruner, "pattern": nm or f"{sparsity:g}", "calib_s": calib_s, "timings": res.timings,
            "achieved": res.achieved_sparsity, "peak_rss_prune_mb": res.peak_rss_mb,
            "rss_before_prune_mb": res.rss_before_mb,
            "peak_rss_process_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "eval_s": eval_s, "perplexity": ppl, "torch_threads": torch.get_num_threads()}


def dense_ppl(eval_windows: int, eval_seqlen: int) -> dict:
    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, str(ROOT))
    from pruning.evaluation.perplexity import perplexity
    from spectra.models import load_model

    lm = load_model()
    t = time.perf_counter()
    r = perplexity(lm.model, lm.tokenizer, "wikitext2", seqlen=eval_seqlen, max_windows=eval_windows or None,
                   progress=False)
    return {"pruner": "dense", "pattern": "-", "eval_s": time.perf_counter() - t,
            "perplexity": {"ppl": r.ppl, "nwindows": r.nwindows, "seqlen": r.seqlen},
            "peak_rss_process_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def layer_bench(pruners: list[str], block: int, nsamples: int, seqlen: int, sparsity: float,
                nm_all: str | None = None) -> list[dict]:
    """Time every pruner on the matrices of one block, from the dense model's calibration statistics
    (``H``; ``K = D = H`` as without error correction); relative error ``‖(W − Ŵ)X‖F / ‖WX‖F`` from ``H``."""
    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, str(ROOT))
    from bench_layer_errors import block_stats

    from pruning.pruners import get_pruner

    layers = block_stats(block, nsamples, seqlen)
    rows = []
    for name in pruners:
        nm = tuple(int(t) for t in nm_all.split(":")) if nm_all else (2, 4) if name == "prox24" else None
        spec = get_pruner(name)
        for lin, st in layers:
            H = st.H
            W = lin.get()
            t = time.perf_counter()
            Wn = spec.fn(W.clone(), st, sparsity, nm)
            dt = time.perf_counter() - t
            d = (W - Wn).double()
            err = float(torch.sqrt(torch.einsum("ij,jk,ik->", d, H, d)
                                   / torch.einsum("ij,jk,ik->", W.double(), H, W.double())))
            rows.append({"pruner": name, "pattern": f"{nm[0]}:{nm[1]}" if nm else f"{sparsity:g}",
                         "matrix": lin.longname, "shape": list(W.shape), "seconds": dt, "rel_err": err})
            print(f"  {name:<10} {lin.longname:<40} {dt:8.2f} s  rel err {err:.4f}", flush=True)
    return rows


def _available() -> list[str]:
    sys.path.insert(0, str(ROOT))
    from pruning.pruners import PRUNERS, get_pruner

    get_pruner("magnitude")
    return [p for p in ("magnitude", "wanda", "sparsegpt", "fista", "prox24") if p in PRUNERS]


def _table(rows: list[dict], ref_name: str = "wanda") -> str:
    ref = next((r for r in rows if r.get("pruner") == ref_name and "timings" in r), None)
    head = (f"{'pruner':<10} {'pattern':>7} {'prune s':>9} {'vs ' + ref_name[:5]:>8} {'stats s':>8} {'layer s':>8} "
            f"{'fwd s':>8} {'peak RSS MB':>11} {'Δ prune MB':>10} {'achieved':>8} {'wt2 ppl':>10} {'windows':>7}")
    lines = [head, "-" * len(head)]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['pruner']:<10} {r.get('pattern', ''):>7}  {r['error']}")
            continue
        p = r.get("perplexity") or {}
        ppl = f"{p['ppl']:.3f}" if p else "-"
        if "timings" not in r:
            lines.append(f"{r['pruner']:<10} {r['pattern']:>7} {'-':>9} {'-':>8} {'-':>8} {'-':>8} {'-':>8} "
                         f"{r['peak_rss_process_mb']:>11.0f} {'-':>10} {'-':>8} {ppl:>10} {p.get('nwindows', '-'):>7}")
            continue
        t = r["timings"]
        ratio = f"{t['total'] / ref['timings']['total']:.2f}x" if ref else "-"
        lines.append(f"{r['pruner']:<10} {r['pattern']:>7} {t['total']:>9.1f} {ratio:>8} {t.get('stats', 0):>8.1f} "
                     f"{t.get('prune', 0):>8.1f} {t.get('forward', 0):>8.1f} {r['peak_rss_process_mb']:>11.0f} "
                     f"{r['peak_rss_prune_mb'] - r['rss_before_prune_mb']:>10.0f} {r['achieved']:>8.4f} {ppl:>10} "
                     f"{p.get('nwindows', '-'):>7}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pruners", default=None, help="comma-separated (default: every available of magnitude, "
                                                    "wanda, sparsegpt, fista, prox24)")
    ap.add_argument("--nsamples", type=int, default=128)
    ap.add_argument("--seqlen", type=int, default=512)
    ap.add_argument("--sparsity", type=float, default=0.5)
    ap.add_argument("--eval-windows", type=int, default=32, help="WikiText-2 windows (0 = all 595; -1 = no eval)")
    ap.add_argument("--eval-seqlen", type=int, default=512)
    ap.add_argument("--timeout", type=float, default=7200, help="seconds per pruner before it is stopped")
    ap.add_argument("--json", default=None, help="also write all results to this JSON file")
    ap.add_argument("--layer-bench", type=int, default=None, metavar="BLOCK",
                    help="instead: time each pruner on the matrices of block BLOCK (no perplexity)")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: run one pruner in this process
    ap.add_argument("--nm", default=None,
                    help="N:M pattern for every pruner (e.g. 2:4; default: --sparsity, prox24 2:4)")
    ap.add_argument("--ref", default="wanda", help="pruner whose prune time the others are divided by (default wanda)")
    args = ap.parse_args(argv)
    if args.one:
        out = dense_ppl(args.eval_windows, args.eval_seqlen) if args.one == "dense" else \
            run_one(args.one, args.nsamples, args.seqlen, args.eval_windows, args.eval_seqlen, args.sparsity, args.nm)
        print("RESULT " + json.dumps(out))
        return 0
    pruners = args.pruners.split(",") if args.pruners else _available()
    if args.layer_bench is not None:
        print(f"layer bench: block {args.layer_bench}, statistics from {args.nsamples} × {args.seqlen} C4 windows "
              f"(seed 0), {args.nm or f'sparsity {args.sparsity:g} (prox24: 2:4)'}, one thread", flush=True)
        rows = layer_bench(pruners, args.layer_bench, args.nsamples, args.seqlen, args.sparsity, args.nm)
        print(f"{'pruner':<10} {'pattern':>7} {'block s':>9} {'vs wanda':>8} {'mean rel err':>12}")
        tot = {p: sum(r["seconds"] for r in rows if r["pruner"] == p) for p in pruners}
        for p in pruners:
            errs = [r["rel_err"] for r in rows if r["pruner"] == p]
            ratio = f"{tot[p] / tot['wanda']:.1f}x" if tot.get("wanda") else "-"
            print(f"{p:<10} {rows[[r['pruner'] for r in rows].index(p)]['pattern']:>7} {tot[p]:>9.2f} {ratio:>8} "
                  f"{sum(errs) / len(errs):>12.4f}")
        if args.json:
            Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))
        return 0
    rows = []
    env = {**os.environ, **ONE_THREAD}
    print(f"bench_pruners: {pruners}, calibration {args.nsamples} × {args.seqlen} (C4, seed 0), sparsity "
          f"{args.sparsity:g} (prox24: 2:4), WikiText-2 seqlen {args.eval_seqlen}, "
          f"{args.eval_windows or 'all'} windows, one thread", flush=True)
    for name in ["dense", *pruners]:
        cmd = [sys.executable, __file__, "--one", name, "--nsamples", str(args.nsamples), "--seqlen", str(args.seqlen),
               "--sparsity", str(args.sparsity), "--eval-windows", str(args.eval_windows),
               "--eval-seqlen", str(args.eval_seqlen)]
        if args.nm or name == "prox24":
            cmd += ["--nm", args.nm or "2:4"]
        t = time.perf_counter()
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout, cwd=ROOT)
            found = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
            if proc.returncode or not found:
                err = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                rows.append({"pruner": name, "error": f"failed (rc {proc.returncode}): {err[:160]}"})
            else:
                rows.append(json.loads(found[-1][7:]))
        except subprocess.TimeoutExpired:
            rows.append({"pruner": name, "error": f"stopped after {args.timeout:.0f} s (timeout)"})
        rows[-1]["wall_s"] = time.perf_counter() - t
        print(f"  {name}: done in {rows[-1]['wall_s']:.0f} s", flush=True)
    print(_table(rows, args.ref))
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
