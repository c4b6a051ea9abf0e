"""Every command-line parser of ``python -m pruning`` (each sub-command) and ``python -m spectra``: no two options
write one argparse destination, except flags that each write their own constant (``--x`` / ``--no-x``: store_true
and store_false, or store_const with distinct values). Two options on one destination silently overwrite each other:
``tune``'s held-out
``--max-windows`` was once overwritten by ``--final``'s ``--eval-windows``."""
from __future__ import annotations

import argparse
from collections import defaultdict

import pytest


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """``{name: parser}`` for ``parser`` and every sub-command below it (recursively)."""
    found = {parser.prog: parser}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found.update(_subparsers(sub))
    return found


def _all_parsers() -> dict[str, argparse.ArgumentParser]:
    from pruning.__main__ import build_parser as pruning_parser
    from spectra.__main__ import build_parser as spectra_parser

    return {**_subparsers(pruning_parser()), **_subparsers(spectra_parser())}


def _clashes(parser: argparse.ArgumentParser) -> dict[str, list[str]]:
    by_dest: dict[str, list[argparse.Action]] = defaultdict(list)
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        by_dest[action.dest].append(action)
    out = {}
    for dest, actions in by_dest.items():
        if len(actions) == 1:
            continue
        consts = [a.const for a in actions]
        if all(a.nargs == 0 for a in actions) and len(set(map(repr, consts))) == len(consts):
            continue  # flags writing distinct constants: --x / --no-x (store_true / store_false, store_const)
        out[dest] = [a.option_strings[0] if a.option_strings else a.dest for a in actions]
    return out


def test_every_subcommand_is_found():
    names = set(_all_parsers())
    for cmd in ("allocate", "prune", "eval", "sweep", "tune", "export-recipe"):
        assert f"python -m pruning {cmd}" in names
    assert "python -m spectra" in names


@pytest.mark.parametrize("prog", sorted(_all_parsers()))
def test_no_two_options_write_one_destination(prog):
    assert _clashes(_all_parsers()[prog]) == {}, f"{prog}: options sharing a destination"
