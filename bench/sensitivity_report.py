"""Markdown tables of bench/RESULTS_sensitivity.md from the measured tables and the comparison JSONs.

Usage: ``python bench/sensitivity_report.py [--folder bench/sensitivity]``
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def cost_table(tables: dict) -> str:
    """One row per block: Δ (and ppl) of every measured (model, mode) side by side, with α."""
    import pandas as pd

    parts = []
    for (model, mode), t in tables.items():
        parts.append(t.set_index("block")[["delta_nll"]].rename(columns={"delta_nll": f"{model} {mode} Δ"}))
        if mode == "alone" or f"{model} α" not in [c for p in parts for c in p.columns]:
            if "alpha" in t.columns:
                parts.append(t.set_index("block")[["alpha"]].rename(columns={"alpha": f"{model} α"}))
    df = pd.concat(parts, axis=1)
    df = df.loc[:, ~df.columns.duplicated()]
    lines = ["| block | " + " | ".join(df.columns) + " |", "|---" * (len(df.columns) + 1) + "|"]
    for b, r in df.iterrows():
        lines.append(f"| {b} | " + " | ".join("" if pd.isna(v) else f"{v:.4f}" if "Δ" in c else f"{v:.2f}"
                                               for c, v in r.items()) + " |")
    return "\n".join(lines)


def verdict_table(tables: dict) -> str:
    from pruning.signals import verdict

    lines = ["| model | mode | signal | ρ (Spearman) | τ (Kendall) | p (permutation, 10⁴) | assumed sign | agrees |",
             "|---|---|---|---|---|---|---|---|"]
    for (model, mode), t in tables.items():
        meta = t.attrs["sensitivity"]
        v = verdict(t, permutations=int(meta.get("permutations", 10000)), seed=int(meta.get("seed", 0)))
        for r in v.itertuples():
            sign = {-1: "ρ < 0", 1: "ρ > 0"}.get(int(r.assumed_sign), "—")
            agree = "—" if not r.assumed_sign else ("yes" if r.agrees else "no")
            lines.append(f"| {model} | {mode} | {r.signal} | {r.rho:+.3f} | {r.tau:+.3f} | {r.p_perm:.4f} | {sign} | "
                         f"{agree} |")
    return "\n".join(lines)


def scan_table(tables: dict) -> str:
    lines = ["| model | mode | blocks | held-out windows | reference ppl | statistics s | scan s |",
             "|---|---|---|---|---|---|---|"]
    for (model, mode), t in tables.items():
        m = t.attrs["sensitivity"]
        lines.append(f"| {model} | {mode} | {len(t)} | {m['key']['eval_windows']} × {m['key']['eval_seqlen']} | "
                     f"{m['reference_ppl']:.3f} | {m['stats_seconds']} | {m['scan_seconds']} |")
    return "\n".join(lines)


def compare_tables(path: Path) -> str:
    c = json.loads(path.read_text())
    lines = [f"**{c['model']}** ({c['pruner']} {c['sparsity']:.0%}; λ search one-shot on {c['held_out']['windows']} × "
             f"{c['held_out']['seqlen']} held-out C4 windows)", "",
             "| allocation | λ | held-out ppl (one-shot) |", "|---|---|---|"]
    for r in c["one_shot"]:
        lines.append(f"| {r['method']} | {r['lam']:g} | {r['ppl']:.2f} |")
    lines += ["", "| allocation | chosen λ | sequential held-out ppl | sequential WikiText-2 test ppl "
                  "(windows × 512) | achieved sparsity |", "|---|---|---|---|---|"]
    for name, r in c["sequential"].items():
        lines.append(f"| {name} | {r['lam']:g} | {r['val_ppl']:.2f} | {r['test_ppl']:.2f} ({r['test_windows']}) | "
                     f"{r['achieved_sparsity']:.4f} |")
    return "\n".join(lines)


def main() -> None:
    from pruning.sensitivity import read_table

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--folder", default="bench/sensitivity")
    a = p.parse_args()
    folder = Path(a.folder)
    tables = {}
    for model in ("builtin", "gemma3"):
        for mode in ("alone", "marginal"):
            f = folder / f"{model}_wanda70_{mode}.parquet"
            if f.exists():
                t = read_table(f)
                if t["delta_nll"].notna().all():
                    tables[model, mode] = t
    print("### Scans\n\n" + scan_table(tables) + "\n\n### Δ per block\n\n" + cost_table(tables) +
          "\n\n### Verdict\n\n" + verdict_table(tables))
    for f in sorted(folder.glob("*_compare.json")):
        print("\n### Allocation from the measurement\n\n" + compare_tables(f))


if __name__ == "__main__":
    main()
