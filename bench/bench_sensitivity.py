"""Cost of the sensitivity scan against one dense evaluation of the same held-out windows, in the same run.

Target (issue 20): the whole scan (``alone`` mode, every block) ≤ L × 0.7 × one dense evaluation, plus the one
statistics pass. The dense evaluation is :func:`pruning.evaluation.perplexity.perplexity` on the same windows
(batch 1, the tune's scorer), timed before and after the scan (the mean of the two is the peer).

Usage: ``python bench/bench_sensitivity.py [--models builtin gemma3] [--windows 4] [--seqlen 256]
[--mode alone] [--json out.json]``
"""
from __future__ import annotations

import argparse
import time


def bench_one(model_name: str, windows: int, seqlen: int, mode: str) -> dict:
    from pruning.calib_stats import TUNE_CALIBRATION
    from pruning.evaluation.perplexity import perplexity
    from pruning.report import package_versions
    from pruning.sensitivity import SensitivitySettings, measure
    from spectra.models import load_model
    from spectra.weights import decoder_layers

    lm = load_model(model_name)
    s = SensitivitySettings(mode=mode, calib=TUNE_CALIBRATION, eval_windows=windows, eval_seqlen=seqlen)

    def dense_eval() -> float:
        t = time.perf_counter()
        perplexity(lm.model, lm.tokenizer, s.eval_dataset, seqlen=seqlen, max_windows=windows, progress=False)
        return time.perf_counter() - t

    dense_eval()  # warm-up (tokenised text cached)
    before = dense_eval()
    df = measure(lm, s, None, log=lambda m: None, progress=False, with_signals=False)
    after = dense_eval()
    meta = df.attrs["sensitivity"]
    L = len(decoder_layers(lm.model))
    dense = (before + after) / 2
    return {"model": model_name, "mode": mode, "blocks": L, "windows": windows, "seqlen": seqlen,
            "dense_eval_seconds": [round(before, 3), round(after, 3)], "scan_seconds": meta["scan_seconds"],
            "stats_seconds": meta["stats_seconds"], "scan_over_dense": round(meta["scan_seconds"] / dense, 3),
            "ratio_to_L_dense": round(meta["scan_seconds"] / (L * dense), 3), "target": 0.7,
            "versions": package_versions()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["builtin", "gemma3"])
    p.add_argument("--windows", type=int, default=4)
    p.add_argument("--seqlen", type=int, default=256)
    p.add_argument("--mode", default="alone", choices=("alone", "marginal"))
    p.add_argument("--json", default=None)
    a = p.parse_args()
    rows = [bench_one(m, a.windows, a.seqlen, a.mode) for m in a.models]
    for r in rows:
        print(f"{r['model']:8s} L={r['blocks']:2d} {r['mode']}: scan {r['scan_seconds']:.1f} s = "
              f"{r['scan_over_dense']:.2f} dense evaluations = {r['ratio_to_L_dense']:.3f} × L (target ≤ 0.7); "
              f"dense eval {r['dense_eval_seconds']} s, statistics {r['stats_seconds']:.1f} s")
    if a.json:
        from pruning.report import write_json_atomic

        write_json_atomic(a.json, {"rows": rows})


if __name__ == "__main__":
    main()
