"""The sensitivity-derived allocation against uniform and the tuned AlphaPruning (bench/RESULTS_sensitivity.md).

For one model and the two measured tables (``alone``, ``marginal``) of ``bench/sensitivity_scans.sh``: (1) the dense
model's per-block signals (with FARMS α and DLP's score) are attached to both tables and the verdict recomputed;
(2) λ of AlphaPruning and of the sensitivity allocation (each table) is chosen on held-out C4 by one-shot scoring from
the dense statistics with ``pruning.tune`` (``--sensitivity-table``; same windows, same scorer); (3) the sequential
(reference) prune at each chosen λ and at uniform sparsity is scored on the held-out windows and on WikiText-2 test
(64 × 512) with ``pruning.tune.final_prune``.

Usage: ``python bench/sensitivity_compare.py MODEL [--lams 0.1,0.2,0.3,0.4,0.5] [--test-windows 64]``
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

S = 0.7
PRUNER = "wanda"


def tune_settings(name: str, paths: dict, lams: list, s):
    """The :class:`pruning.tune.TuneSettings` of ``name`` (``uniform``, ``alphapruning`` or ``sensitivity-MODE``):
    the held-out windows and calibration of the sensitivity scans, the λ grid ``lams``."""
    from pruning.tune import TuneSettings

    kw = {"allocation": "alphapruning"}
    if name.startswith("sensitivity"):
        kw = {"allocation": "sensitivity", "sensitivity_table": str(paths[name.split("-", 1)[1]])}
    return TuneSettings(pruner=PRUNER, sparsity=S, lams=lams, calib=s.calib, eval_dataset=s.eval_dataset,
                        eval_seqlen=s.eval_seqlen, eval_windows=s.eval_windows, xmin_rule=s.xmin_rule, **kw)


def one_shot_search(lm, paths: dict, lams: list, s, log) -> dict:
    """Held-out ppl of uniform and of every (method, λ) candidate (``rows``) and each method's chosen λ (``chosen``):
    :func:`pruning.tune.tune` of AlphaPruning and of the sensitivity allocation of each table (one-shot from the
    cached dense statistics, the same held-out windows; dense and uniform are scored once)."""
    from pruning.tune import tune

    rows, baseline, chosen = [], None, {"uniform": 0.0}
    for name in ["alphapruning"] + [f"sensitivity-{m}" for m in paths]:
        res = tune(lm, tune_settings(name, paths, lams, s), None, log=lambda m, n=name: log(f"[{n}] {m}"),
                   baseline=baseline)
        baseline = {"dense": res["dense"], "uniform": res["uniform"]}
        rows += [{"method": name, "lam": r["lam"], "ppl": r["ppl"], "seconds": r["seconds"]} for r in res["rows"]]
        chosen[name] = res["best"]["lam"]
    return {"rows": [{"method": "uniform", "lam": 0.0, "ppl": baseline["uniform"]["ppl"]}] + rows, "chosen": chosen}


def final(lm, chosen: dict, paths: dict, s, test_windows: int, log) -> dict:
    """Sequential prunes at the chosen values and uniform (:func:`pruning.tune.final_prune`): held-out and
    WikiText-2 test ppl."""
    from pruning.tune import final_prune

    out = {}
    for name, lam in chosen.items():
        best = {"lam": "uniform" if name == "uniform" else lam}
        fin = final_prune(lm, tune_settings(name, paths, [lam], s), best, 512, test_windows, baseline=False,
                          log=log)["chosen"]
        out[name] = {**fin, "lam": lam}
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
    search = one_shot_search(lm, paths, lams, s, print)
    chosen = search["chosen"]
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
