"""``python -m pruning {allocate,prune,eval,sweep,tune,compare,sensitivity,export-recipe}``.

See ``python -m pruning COMMAND --help``."""
from __future__ import annotations

import os

# spinning OpenMP waits make torch up to 10× slower when other processes share the cores; set before torch loads
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import sys
from typing import Optional, Sequence


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one sub-command per front-end module."""
    from pruning.cli import allocate, compare, eval, prune, recipe, sensitivity, sweep, tune

    parser = argparse.ArgumentParser(prog="python -m pruning",
                                     description="Layer-wise sparsity allocation and post-training pruning of LLMs.")
    sub = parser.add_subparsers(dest="command",
                                metavar="{allocate,prune,eval,sweep,tune,compare,sensitivity,export-recipe}")
    for mod in (allocate, prune, eval, sweep, tune, compare, sensitivity, recipe):
        mod.add_parser(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
