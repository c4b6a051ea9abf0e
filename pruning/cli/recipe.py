"""``python -m pruning export-recipe``: an allocation as an llm-compressor recipe (SparseGPT / Wanda modifier).

Example::

    python -m pruning export-recipe ~/models/Llama-3-70B --allocation-file alloc.json --pruner sparsegpt \\
        --out recipe.yaml
    python -m pruning export-recipe --allocation alphapruning --sparsity 0.7 --lam 0.3 \\
        --metrics results/smollm2.parquet --pruner wanda --out recipe.yaml

Writes the recipe YAML (one ``sparsity`` value per block matrix, in ``named_modules()`` order) and prints the
``oneshot(...)`` call that runs it. MODEL (default: the built-in model) is only read for its config.json: the
order of its modules. Every user mistake ends with one ``error: ...`` line on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from pruning.cli.common import add_allocation_options, allocation_from_args, one_line_errors
from spectra.files import atomic_path

__all__ = ["add_parser", "main"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``export-recipe`` sub-command; returns its parser."""
    from pruning.pruners import DEFAULT_RECIPE_PRUNER
    from pruning.recipe import modifiers

    p = subparsers.add_parser("export-recipe", help="write an allocation as an llm-compressor recipe YAML",
                              description=__doc__.splitlines()[0])
    p.add_argument("model", nargs="?", default=None, metavar="MODEL",
                   help="model whose config gives the module order (default: built-in); no weights are read")
    p.add_argument("--allocation-file", default=None,
                   help="Contract 2 JSON/CSV allocation (python -m pruning allocate)")
    from pruning.allocation import ALLOCATIONS

    offline = [n for n, s in ALLOCATIONS.items() if s.reads not in ("weights", "input_norms")]
    p.add_argument("--allocation", default=None,
                   help=f"compute one instead (from --metrics): {', '.join(offline)}")
    add_allocation_options(p, defaults={"sparsity": None})
    p.add_argument("--metrics", default=None, help="spectra results file (python -m spectra --out FILE) for "
                                                   "alphapruning / stable_rank / uniform / erk")
    p.add_argument("--pruner", default=DEFAULT_RECIPE_PRUNER,
                   help=f"{' or '.join(sorted(modifiers()))} (default {DEFAULT_RECIPE_PRUNER})")
    p.add_argument("--nm", default=None, help="N:M mask structure, e.g. 2:4 (every matrix n/m sparse)")
    p.add_argument("--out", required=True, help="recipe file to write (.yaml)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=main)
    return p


def _sparsities(args, names: list[str]) -> dict:
    """{longname: sparsity} from ``--allocation-file``, ``--allocation`` + ``--metrics``, or ``--nm``."""
    from pruning.pruners.base import parse_nm
    from pruning.pruners.masks import nm_sparsity

    if args.nm is not None:
        if args.allocation_file or (args.allocation not in (None, "uniform")):
            raise ValueError(f"N:M sparsity ({args.nm}) gives every matrix the same pattern; drop the allocation")
        return {n: nm_sparsity(parse_nm(args.nm)) for n in names}
    if args.allocation_file and args.allocation:
        raise ValueError("give either --allocation-file or --allocation, not both")
    if args.allocation_file:
        from pruning.allocation import load_allocation

        if not Path(args.allocation_file).is_file():
            raise ValueError(f"allocation file {args.allocation_file} not found")
        return dict(load_allocation(args.allocation_file))
    if not args.allocation:
        raise ValueError("pass --allocation-file FILE, or --allocation METHOD --sparsity S [--metrics FILE], or --nm")
    if args.sparsity is None:
        raise ValueError("--allocation needs --sparsity S")
    from pruning.allocation import allocate, get_allocation

    spec = get_allocation(args.allocation)
    if spec.reads in ("weights", "input_norms"):
        what = "every weight" if spec.reads == "weights" else "calibration input norms"
        raise ValueError(f"--allocation {args.allocation} reads {what}; write it with python -m pruning allocate "
                         f"(or prune) and pass --allocation-file FILE")
    if not args.metrics:
        hint = " --farms" if spec.analysis.get("farms") else ""
        raise ValueError(f"--allocation {args.allocation} needs --metrics FILE (python -m spectra MODEL{hint} --out "
                         f"FILE)")
    from pruning.cli.allocate import load_metrics

    settings = allocation_from_args(args.allocation, args)
    df = allocate(load_metrics(args.metrics), settings.method, settings.sparsity, **settings.allocate_kwargs())
    return dict(zip(df["longname"], df["sparsity"].astype(float)))


def main(args: argparse.Namespace) -> int:
    """Entry point of ``python -m pruning export-recipe``; 0 on success, 2 with one ``error:`` line."""
    from pruning.recipe import block_matrix_names, build_recipe, modifiers, oneshot_snippet, to_yaml

    def run() -> None:
        known = modifiers()
        if args.pruner not in known:
            raise ValueError(f"--pruner must be one of: {', '.join(sorted(known))} (llm-compressor's modifiers)")
        out = Path(args.out).expanduser()
        if out.exists() and not args.overwrite:
            raise ValueError(f"{out} already exists; pass --overwrite to replace it or choose another --out")
        if not out.parent.exists():
            raise ValueError(f"the folder of --out ({out.parent}) does not exist")
        names = block_matrix_names(args.model)
        recipe = build_recipe(names, _sparsities(args, names), args.pruner, args.nm)
        with atomic_path(out) as tmp:
            tmp.write_text(to_yaml(recipe) + "\n")
        values = next(iter(recipe["sparsity_stage"]["sparsity_modifiers"].values()))["sparsity"]
        print(f"wrote {out}: {known[args.pruner]}, {len(values)} matrices, sparsity {min(values):.4f}–"
              f"{max(values):.4f}; run it with llm-compressor (in its own environment):\n")
        from spectra.models import resolve_source, weights_dir

        src = resolve_source(args.model)
        model = src.ref if src.kind == "hub" else str(weights_dir(src))
        print(oneshot_snippet(model, str(out)))

    return one_line_errors(run)
