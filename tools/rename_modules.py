"""Rewrite references to the pre-issue-11 flat ``pruning`` modules to their new homes, in every text file given
(dotted names and file paths). Idempotent: ``python tools/rename_modules.py FILE...``."""
import re
import sys
from pathlib import Path

MOVES = {**{m: f"pruners.{m}" for m in ("base", "magnitude", "wanda", "sparsegpt", "fista", "prox24", "gd", "masks")},
         **{m: f"evaluation.{m}" for m in ("data", "perplexity", "zeroshot")},
         **{f"cli_{m}": f"cli.{m}" for m in ("allocate", "eval", "prune", "recipe", "sweep", "tune")}}


def rewrite(text: str) -> str:
    for old, new in MOVES.items():
        text = re.sub(rf"\bpruning\.{old}\b", f"pruning.{new}", text)
        text = re.sub(rf"\bpruning/{old}\.py\b", f"pruning/{new.replace('.', '/')}.py", text)
        # ``from pruning import wanda`` style (keeping the old local name: ``from pruning.cli import prune as cli_prune``)
        pkg, leaf = new.rsplit(".", 1)
        alias = "" if leaf == old else f" as {old}"
        text = re.sub(rf"^(\s*)from pruning import {old}\b", rf"\1from pruning.{pkg} import {leaf}{alias}", text,
                      flags=re.M)
    return text


if __name__ == "__main__":
    for f in sys.argv[1:]:
        p = Path(f)
        s = p.read_text()
        s2 = rewrite(s)
        if s2 != s:
            p.write_text(s2)
            print("rewrote", f)
