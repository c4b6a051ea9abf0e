"""The sensitivity-derived allocation against uniform and the tuned AlphaPruning (bench/RESULTS_sensitivity.md).

For one model and the two measured tables (``alone``, ``marginal``) of ``bench/sensitivity_scans.sh``: (1) the dense
model's per-block signals (with FARMS α and DLP's score) are attached to both tables and the verdict recomputed;
(2) λ of AlphaPruning and of the sensitivity allocation (each table) is chosen on held-out C4 by one-shot scoring from
the dense statistics, as ``pruning.tune`` does (same windows, same scorer); (3) the sequential (reference) prune at
each chosen λ and at uniform sparsity is scored on the held-out windows and on WikiText-2 test (64 × 512).

Usage: ``python bench/sensitivity_compare.py MODEL [--lams 0.1,0.2,0.3,0.4,0.5] [--test-windows 64]``
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

S = 0.7
PRUNER = "wanda"


def one_shot_search(lm, stats, tables: dict, metrics, lams: list, s, log) -> dict:
    """Held-out ppl of uniform and of every (method, λ) candidate, one-shot from the dense statistics."""
    from pruning.allocation import allocate
    from pruning.calib_stats import DenseWeights, prune_from_stats
    from pruning.evaluation.perplexity import perplexity
    from pruning.signals import sensitivity_allocation
    from spectra.weights import weight_table

    model = lm.model
    dense = DenseWeights(model)
    wt = weight_table(model)
    wt = wt[wt["block"] >= 0].reset_index(drop=True)

    def score(alloc) -> float:
        dense.restore()
        prune_from_stats(model, stats, alloc, PRUNER)
        r = perplexity(model, lm.tokenizer, s.eval_dataset, seqlen=s.eval_seqlen, max_windows=s.eval_windows,
                       progress=False, path=s.calib.data_path)
        dense.restore()
        return float(r.ppl)

    rows = [{"method": "uniform", "lam": 0.0, "ppl": score(S)}]
    log(f"one-shot uniform: {rows[0]['ppl']:.3f}")
    for lam in lams:
        cands = {"alphapruning": allocate(metrics, "alphapruning", S, lam=lam)}
        for mode, t in tables.items():
            cands[f"sensitivity-{mode}"] = sensitivity_allocation(wt, t, S, lam=lam)
        for name, a in cands.items():
            t0 = time.perf_counter()
            ppl = score(dict(zip(a["longname"], a["sparsity"].astype(float))))
            rows.append({"method": name, "lam": lam, "ppl": ppl, "seconds": time.perf_counter() - t0})
            log(f"one-shot {name} λ={lam:g}: {ppl:.3f}")
    return {"rows": rows}


def final(lm, chosen: dict, paths: dict, s, test_windows: int, log) -> dict:
    """Sequential prunes at the chosen values and uniform: held-out and WikiText-2 test ppl."""
    from pruning.calib_stats import DenseWeights
    from pruning.evaluation.perplexity import perplexity
    from pruning.prune import prune_model
    from pruning.settings import PruneSettings

    dense = DenseWeights(lm.model)
    out = {}
    for name, lam in chosen.items():
        kw = {"allocation": "uniform"}
        if name == "alphapruning":
            kw = {"allocation": "alphapruning", "lam": lam}
        elif name.startswith("sensitivity"):
            kw = {"allocation": "sensitivity", "lam": lam, "allocation_file": str(paths[name.split("-")[1]])}
        ps = PruneSettings(calibration=s.calib).replace(pruner=PRUNER, sparsity=S, **kw)
        t0 = time.perf_counter()
        res = prune_model(lm, None, ps, progress=False)
        val = perplexity(lm.model, lm.tokenizer, s.eval_dataset, seqlen=s.eval_seqlen, max_windows=s.eval_windows,
                         progress=False, path=s.calib.data_path)
        test = perplexity(lm.model, lm.tokenizer, "wikitext2", seqlen=512, max_windows=test_windows, progress=False,
                          path=s.calib.data_path)
        out[name] = {"lam": lam, "val_ppl": val.ppl, "test_ppl": test.ppl, "test_windows": test.nwindows,
                     "achieved_sparsity": res.achieved_sparsity, "seconds": time.perf_counter() - t0}
        log(f"sequential {name} λ={lam}: held-out {val.ppl:.3f}, WikiText-2 test {test.ppl:.3f}")
        dense.restore()
    return out


def main() -> None:
    from pruning.calib_stats import dense_stats
    from pruning.report import package_versions, write_json_atomic
    from pruning.sensitivity import SensitivitySettings, read_table, write_table
    from pruning.signals import attach_signals, block_signals, format_verdict, verdict
    from spectra.analyze import AnalysisSettings, analyze
    from spectra.models import load_model

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--lams", default="0.1,0.2,0.3,0.4,0.5")
    p.add_argument("--test-windows", type=int, default=64)
    p.add_argument("--windows", type=int, default=8, help="held-out C4 windows of the λ search (256 tokens)")
    p.add_argument("--finals", default="all", help="comma list of the sequential finals to run (uniform, "
                   "alphapruning, sensitivity-alone, sensitivity-marginal) or all")
    p.add_argument("--folder", default="bench/sensitivity")
    a = p.parse_args()
    lams = [float(x) for x in a.lams.split(",")]
    folder = Path(a.folder)
    paths = {m: folder / f"{a.model}_{PRUNER}{int(S * 100)}_{m}.parquet" for m in ("alone", "marginal")}
    paths = {m: p for m, p in paths.items() if p.exists()}  # a mode not measured (yet) is left out
    lm = load_model(a.model)
    s = SensitivitySettings(pruner=PRUNER, sparsity=S, eval_windows=a.windows, eval_seqlen=256)
    stats = dense_stats(lm.model, lm.tokenizer, s.calib)
    metrics = analyze(lm.model, AnalysisSettings(xmin_rule=s.xmin_rule, farms=True), progress=False)
    signals = block_signals(lm.model, stats.layers, metrics=metrics)
    tables, verdicts = {}, {}
    for mode, path in paths.items():
        t = attach_signals(read_table(path), signals, s.permutations, s.perm_seed)
        write_table(t, path, t.attrs["sensitivity"])
        tables[mode] = t
        verdicts[mode] = t.attrs["sensitivity"]["verdict"]
        print(f"== {a.model} {mode}: reference ppl {t.attrs['sensitivity']['reference_ppl']:.3f}")
        print(format_verdict(verdict(t, permutations=s.permutations, seed=s.perm_seed)))
    search = one_shot_search(lm, stats, tables, metrics, lams, s, print)
    chosen = {"uniform": 0.0}
    for name in ["alphapruning"] + [f"sensitivity-{m}" for m in tables]:
        best = min((r for r in search["rows"] if r["method"] == name), key=lambda r: r["ppl"])
        chosen[name] = best["lam"]
    if a.finals != "all":
        chosen_final = {k: v for k, v in chosen.items() if k in a.finals.split(",")}
    else:
        chosen_final = chosen
    fin = final(lm, chosen_final, paths, s, a.test_windows, print)
    write_json_atomic(folder / f"{a.model}_{PRUNER}{int(S * 100)}_compare.json",
                      {"model": a.model, "pruner": PRUNER, "sparsity": S, "lams": lams, "held_out": {
                          "dataset": s.eval_dataset, "windows": s.eval_windows, "seqlen": s.eval_seqlen},
                       "calibration": {"nsamples": s.calib.nsamples, "seqlen": s.calib.seqlen},
                       "verdicts": verdicts, "one_shot": search["rows"], "chosen": chosen, "sequential": fin,
                       "versions": package_versions()})
    print(json.dumps(fin, indent=1))


if __name__ == "__main__":
    main()
