"""The table of ``bench/tune_tables.sh``: per tune JSON, the chosen value, the one-shot held-out perplexity of the
candidates, and the sequential (reference) prunes at the chosen value and at uniform on held-out C4 (validation) and
WikiText-2 test, plus the one-shot/sequential gap and the cost per candidate. Usage:
``python bench/tune_report.py results/tune_*.json``."""
from __future__ import annotations

import json
import sys
from pathlib import Path


def rows(path: Path) -> list[str]:
    r = json.loads(path.read_text())
    s, f = r["settings"], r.get("final", {})
    b = r["best"]
    choice = f"λ={b['lam']:g}" + ("" if b.get("owl_M") is None else f", M={b['owl_M']:g}")
    one_shot = {("uniform" if c["lam"] == "uniform" else c["lam"], c.get("owl_M")): c["ppl"]
                for c in [r["uniform"], *r["rows"]]}
    ch, un = f.get("chosen", {}), f.get("uniform", {})
    gap = (ch["val_ppl"] / b["ppl"] - 1) if ch else float("nan")
    cells = [s["pruner"], s["allocation"], f"{s['sparsity']:.0%}", choice,
             f"{r['uniform']['ppl']:.2f}", f"{b['ppl']:.2f}",
             f"{un.get('val_ppl', float('nan')):.2f}", f"{ch.get('val_ppl', float('nan')):.2f}",
             f"{un.get('test_ppl', float('nan')):.2f}", f"{ch.get('test_ppl', float('nan')):.2f}",
             f"{gap:+.1%}", f"{r.get('cost_per_extra_candidate', float('nan')):.2f}×", str(len(one_shot) - 1)]
    return ["| " + " | ".join(cells) + " |"]


def main(paths: list[str]) -> None:
    head = ["pruner", "allocation", "S", "chosen (held-out C4)", "one-shot val: uniform", "one-shot val: chosen",
            "sequential val: uniform", "sequential val: chosen", "sequential test: uniform",
            "sequential test: chosen", "gap seq/one-shot (val, chosen)", "cost per candidate / dense eval",
            "candidates"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    dense = None
    for p in paths:
        r = json.loads(Path(p).read_text())
        dense = r["dense"]["ppl"]
        windows = f"{r['settings']['eval_windows']} × {r['settings']['eval_seqlen']}"  # as the search ran
        for line in rows(Path(p)):
            print(line)
    if dense is not None:
        print(f"\ndense held-out C4 ({windows}) perplexity: {dense:.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
