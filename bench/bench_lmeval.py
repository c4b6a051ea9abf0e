"""Cross-check and timing: lm-evaluation-harness (``pruning.evaluation.lmeval``) vs the hand-written LAMBADA / PIQA
scorer (``pruning.evaluation.zeroshot``, retired after this check) on the same examples of the built-in model.

For the dense model and Wanda 50 % (uniform allocation, 16 × 256 C4 calibration windows, seed 0 — the app's default
calibration) it scores the first ``--n`` LAMBADA passages and PIQA questions with both and prints accuracies,
their difference, the per-example disagreements (and the largest log-likelihood difference) and the times.
Both run with batch size 8 in the same process on the same threads; each is warmed up first on 2 examples.

    flock /tmp/heavy.lock nice -n 5 python bench/bench_lmeval.py --n 100 --json bench/lmeval_crosscheck.json
    flock /tmp/heavy.lock nice -n 5 python bench/bench_lmeval.py --n 50 --repeat 3 --json bench/lmeval_timing.json

The hand-written scorer was removed from the package after this check; the script needs a checkout that still
has ``pruning/evaluation/zeroshot.py`` (commit 455ecc4, with this script copied into its bench/; see
bench/RESULTS_lmeval.md).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as python -m pruning and the app (before torch loads)


def ours(model, tok, n: int, batch_size: int) -> dict:
    """Per-example (loglikelihood, greedy) of the hand-written scorer, as its lambada/piqa_accuracy compute them."""
    from pruning.evaluation.data import load_lambada, load_piqa
    from pruning.evaluation.zeroshot import _bos, encode_pair, loglikelihoods

    t = time.perf_counter()
    bos = _bos(tok, None)
    lam = [encode_pair(tok, *_split(text), bos) for text in load_lambada()[:n]]
    lam_res = loglikelihoods(model, lam, batch_size)
    t_lam = time.perf_counter() - t
    t = time.perf_counter()
    items = load_piqa()[:n]
    pairs = []
    for it in items:
        ctx = f"Question: {it['goal']}\nAnswer:"
        pairs += [encode_pair(tok, ctx, " " + it["sol1"], bos), encode_pair(tok, ctx, " " + it["sol2"], bos)]
    piqa_res = loglikelihoods(model, pairs, batch_size)
    t_piqa = time.perf_counter() - t
    piqa = [(piqa_res[2 * i][0], piqa_res[2 * i + 1][0]) for i in range(len(items))]
    return {"lambada": lam_res, "piqa": piqa, "labels": [it["label"] for it in items],
            "lens": [(len(it["sol1"]), len(it["sol2"])) for it in items], "seconds": {"lambada_openai": t_lam,
                                                                                 "piqa": t_piqa}}


def _split(text: str) -> tuple[str, str]:
    context, word = text.rsplit(" ", 1)
    return context, " " + word


def theirs(model, tok, n: int, batch_size: int) -> dict:
    """Per-example results of lm-eval, one task at a time (for the per-task time)."""
    from pruning.evaluation.lmeval import evaluate_tasks

    out = {"seconds": {}, "results": {}}
    for task in ("lambada_openai", "piqa"):
        t = time.perf_counter()
        r = evaluate_tasks(model, tok, [task], limit=n, batch_size=batch_size, log_samples=True, local=True)
        out["seconds"][task] = time.perf_counter() - t
        samples = sorted(r.samples[task], key=lambda s: s["doc_id"])
        if task == "lambada_openai":
            out["lambada"] = [tuple(s["resps"][0][0]) for s in samples]
        else:
            out["piqa"] = [tuple(x[0] for x in s["filtered_resps"]) for s in samples]
            out["piqa_acc"] = [s["acc"] for s in samples]
            out["piqa_acc_norm"] = [s["acc_norm"] for s in samples]
        out["results"][task] = {"metrics": r.tasks[task].metrics, "stderr": r.tasks[task].stderr,
                                "version": r.tasks[task].version, "n": r.tasks[task].n}
        out["lm_eval_version"] = r.lm_eval_version
    return out


def compare(a: dict, b: dict) -> dict:
    """Accuracies of both, differences (points) and per-example disagreements."""
    import numpy as np

    lam_a = np.array([g for _, g in a["lambada"]], float)
    lam_b = np.array([g for _, g in b["lambada"]], float)
    lam_dll = max(abs(x[0] - y[0]) for x, y in zip(a["lambada"], b["lambada"]))
    labels = np.array(a["labels"])
    pa, pb = np.array(a["piqa"]), np.array(b["piqa"])
    lens = np.array(a["lens"], float)
    acc_a = (np.argmax(pa, 1) == labels).astype(float)
    norm_a = (np.argmax(pa / lens, 1) == labels).astype(float)
    acc_b, norm_b = np.array(b["piqa_acc"]), np.array(b["piqa_acc_norm"])
    return {
        "lambada_openai acc": (lam_a.mean(), lam_b.mean(), int((lam_a != lam_b).sum()), lam_dll),
        "piqa acc": (acc_a.mean(), acc_b.mean(), int((acc_a != acc_b).sum()), float(np.abs(pa - pb).max())),
        "piqa acc_norm": (norm_a.mean(), norm_b.mean(), int((norm_a != norm_b).sum()), float(np.abs(pa - pb).max())),
    }


def run(label: str, model, tok, n: int, batch_size: int) -> dict:
    ours(model, tok, 2, batch_size)  # warm-up (tokenizer, allocator, datasets cache)
    theirs(model, tok, 2, batch_size)
    a = ours(model, tok, n, batch_size)
    b = theirs(model, tok, n, batch_size)
    rows = compare(a, b)
    print(f"\n[{label}] n={n}")
    for k, (x, y, dis, dll) in rows.items():
        print(f"  {k:20s} ours {x:.4f}  lm-eval {y:.4f}  diff {100 * (y - x):+.2f} pts  disagreements {dis}  "
              f"max |Δ loglik| {dll:.2e}")
    for task in ("lambada_openai", "piqa"):
        print(f"  {task:20s} ours {a['seconds'][task]:.1f} s  lm-eval {b['seconds'][task]:.1f} s  ratio "
              f"{b['seconds'][task] / a['seconds'][task]:.2f}")
    return {"model": label, "n": n, "compare": rows, "seconds_ours": a["seconds"], "seconds_lmeval": b["seconds"],
            "lmeval": b["results"], "lm_eval_version": b["lm_eval_version"]}


def timing(model, tok, n: int, batch_size: int, repeat: int) -> dict:
    """Times only: ``repeat`` rounds of (ours, lm-eval) on the same examples, the order swapped every other round
    (the machine is shared: a single pair is noisy); the ratio of the medians and the min ratio."""
    import statistics

    ours(model, tok, 2, batch_size)
    theirs(model, tok, 2, batch_size)
    times: dict = {"ours": [], "lmeval": []}
    for r in range(repeat):
        order = [("ours", ours), ("lmeval", theirs)]
        for name, fn in (order if r % 2 == 0 else order[::-1]):
            times[name].append(fn(model, tok, n, batch_size)["seconds"])
    out = {"n": n, "repeat": repeat, "times": times}
    for task in ("lambada_openai", "piqa"):
        a = [t[task] for t in times["ours"]]
        b = [t[task] for t in times["lmeval"]]
        out[task] = {"ours_median": statistics.median(a), "lmeval_median": statistics.median(b),
                     "ratio_of_medians": statistics.median(b) / statistics.median(a),
                     "ratios": [y / x for x, y in zip(a, b)]}
        print(f"  {task:20s} ours {[round(x, 1) for x in a]} s  lm-eval {[round(y, 1) for y in b]} s  ratio of "
              f"medians {out[task]['ratio_of_medians']:.2f}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=500, help="first N examples of each task (default 500)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--json", default=None)
    ap.add_argument("--repeat", type=int, default=0, help="timing only: R rounds of (ours, lm-eval) on the dense "
                    "model, order alternating (no cross-check, no prune)")
    args = ap.parse_args()
    import torch

    from pruning.prune import prune_model
    from pruning.report import package_versions
    from pruning.settings import PruneSettings
    from spectra.models import load_model

    lm = load_model()
    out = {"versions": package_versions(), "threads": torch.get_num_threads(), "python": platform.python_version(),
           "omp": os.environ.get("OMP_NUM_THREADS"), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
           "command": " ".join(sys.argv), "runs": []}
    if args.repeat:
        out["timing"] = timing(lm.model, lm.tokenizer, args.n, args.batch_size, args.repeat)
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=2, default=str))
        return
    out["runs"].append(run("dense", lm.model, lm.tokenizer, args.n, args.batch_size))
    settings = PruneSettings.from_flat(pruner="wanda", allocation="uniform", sparsity=0.5, nsamples=16, seqlen=256,
                                       seed=0)
    res = prune_model(lm, None, settings, progress=False)
    print(f"\nwanda 50 %: achieved sparsity {res.achieved_sparsity:.4f}")
    out["runs"].append(run("wanda 50% uniform (16x256)", lm.model, lm.tokenizer, args.n, args.batch_size))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
