"""Print the seed pruners' perplexity table from one or more sweep tables (``bench/seed_pruner_tables.sh`` writes them).

One row per pruned cell: pattern, method (pruner, its non-default options, error-correction mode, masked GD),
allocation, WikiText-2 perplexity, achieved sparsity, prune wall seconds and the run's peak RSS; the dense row first.
Usage: ``python bench/seed_pruner_report.py results/seed_pruners.parquet [more.parquet ...] [--markdown]``.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pruning.labels import method_label as _method_label  # noqa: E402


def method_label(row: pd.Series) -> str:
    """The library's label of the row's method (:func:`pruning.labels.method_label`)."""
    return _method_label(row["pruner"], json.loads(row.get("pruner_options") or "{}"), row.get("correction") or None,
                         int(row.get("gd_steps") or 0), bool(row.get("gd_precondition", True)))


def table(paths: list[str]) -> pd.DataFrame:
    t = pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)
    dense = t[t["kind"] == "dense"].head(1)
    t = t[t["kind"] == "pruned"].copy()
    t["pattern"] = [r["nm"] if r["nm"] else f"{r['sparsity']:.0%}" for _, r in t.iterrows()]
    t["method"] = [method_label(r) for _, r in t.iterrows()]
    t["alloc"] = [r["allocation"] + (f" λ={r['lam']:g}" if r["lam"] == r["lam"] else "") for _, r in t.iterrows()]
    cols = ["pattern", "method", "alloc", "ppl", "achieved_sparsity", "prune_seconds", "prune_cpu_seconds",
            "peak_rss_mb"]
    out = t[[c for c in cols if c in t.columns]]
    out = out.sort_values(["pattern", "alloc", "ppl"]).reset_index(drop=True)
    if len(dense):
        d = dense.iloc[0]
        print(f"dense ppl {d['ppl']:.2f} ({int(d['nwindows'])} windows × {int(d['eval_seqlen'])}, {d['eval_dataset']})")
    return out


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    out = table(args or ["results/seed_pruners.parquet"])
    fmt = {"ppl": "{:.2f}".format, "achieved_sparsity": "{:.4f}".format, "prune_seconds": "{:.0f}".format,
           "prune_cpu_seconds": "{:.0f}".format,
           "peak_rss_mb": "{:.0f}".format}
    if "--markdown" in sys.argv:
        print(out.to_markdown(index=False, floatfmt=".2f"))
    else:
        print(out.to_string(formatters=fmt))
