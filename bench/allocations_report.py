"""Print the table of ``python -m pruning compare`` JSON files (bench/allocations_compare.sh) as Markdown.

    python bench/allocations_report.py bench/results_allocations/compare_*.json
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def fmt(v, spec=".3f") -> str:
    return "–" if v is None else (format(v, spec) if isinstance(v, (int, float)) else str(v))


def table(path: Path) -> str:
    d = json.loads(path.read_text())
    s = d["settings"]
    model = path.stem.split("_")[1]
    lines = [f"**{model}**, {s['pruner']}, S = {s['sparsity']:g}: held-out C4 {s['eval_windows']} × {s['eval_seqlen']} "
             f"(one-shot, dense statistics of {s['calib']['nsamples']} × {s['calib']['seqlen']} C4 tokens); final: "
             f"sequential, WikiText-2 test {s['test_windows']} × {s['test_seqlen']}. Dense held-out ppl "
             f"{fmt((d.get('baseline') or {}).get('dense', {}).get('ppl'))}.", "",
             "| method | tuned parameter | candidates (value: held-out ppl, one-shot) | held-out ppl (one-shot) | "
             "held-out ppl (sequential) | WikiText-2 test ppl | prune s (sequential) |",
             "|---|---|---|---:|---:|---:|---:|"]
    for r in d["rows"]:
        cands = ", ".join(f"{c['value']:g}: {c['ppl']:.1f}" for c in r["candidates"]) or "–"
        tuned = "–" if r["tuned_value"] is None else f"{r['param']} = {r['tuned_value']:g}"
        lines.append(f"| {r['label']} | {tuned} | {cands} | {fmt(r['heldout_ppl_one_shot'])} | "
                     f"{fmt(r.get('heldout_ppl'))} | {fmt(r.get('test_ppl'))} | {fmt(r.get('prune_seconds'), '.1f')} |")
    v = d.get("versions", {})
    lines += ["", "versions: " + ", ".join(f"{k} {val}" for k, val in v.items())]
    return "\n".join(lines)


if __name__ == "__main__":
    print("\n\n".join(table(Path(p)) for p in sys.argv[1:]))
