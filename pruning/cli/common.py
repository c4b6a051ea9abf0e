"""Parsing of the CLI's option values, shared by every sub-command: one-line ``ValueError`` naming the option."""
from __future__ import annotations

import sys
from typing import Callable, Optional


def parse_number(name: str, text, kind=float, lo: Optional[float] = None, hi: Optional[float] = None,
                 allow_none: bool = False):
    """``kind(text)`` checked against ``[lo, hi]``; a one-line ValueError naming ``--name`` otherwise."""
    if text is None and allow_none:
        return None
    try:
        val = kind(text)
    except (TypeError, ValueError):
        raise ValueError(f"--{name} must be {'an integer' if kind is int else 'a number'} (got {text!r})") from None
    if (lo is not None and val < lo) or (hi is not None and val > hi):
        raise ValueError(f"--{name} must be ≥ {lo} (got {text})" if hi is None else
                         f"--{name} must lie in [{lo}, {hi}] (got {text})")
    return val


def parse_list(text) -> list[str]:
    """``"a, b,,c"`` → ``["a", "b", "c"]``."""
    return [t.strip() for t in str(text).split(",") if t.strip()]


def parse_numbers(name: str, text, kind=float, lo: Optional[float] = None, hi: Optional[float] = None) -> list:
    """Comma-separated numbers (at least one), each checked as by :func:`parse_number`."""
    vals = [parse_number(name, t, kind, lo, hi) for t in parse_list(text)]
    if not vals:
        raise ValueError(f"--{name} needs at least one value")
    return vals


#: the allocation settings ``allocate`` and ``export-recipe`` take (fields of pruning.settings.AllocationSettings)
ALLOCATE_FIELDS = ("sparsity", "lam", "mapping", "granularity", "metric", "min_sparsity", "max_sparsity",
                   "owl_lambda", "owl_M", "exclude_flagged", "atp_beta", "dlp_alpha")


def add_allocation_options(p, defaults: Optional[dict] = None, required: tuple = ()) -> None:
    """The :data:`ALLOCATE_FIELDS` options, built from the fields of ``AllocationSettings``."""
    from pruning.settings import AllocationSettings
    from spectra.options import add_options

    add_options(p, AllocationSettings, only=ALLOCATE_FIELDS, defaults=defaults, required=required)


def allocation_from_args(method: str, args):
    """:class:`pruning.settings.AllocationSettings` of ``method`` with the :data:`ALLOCATE_FIELDS` options of the
    parsed ``args`` (checked on construction: one-line ValueError naming the flag)."""
    from pruning.settings import AllocationSettings
    from spectra.options import options_from_namespace

    return options_from_namespace(AllocationSettings, args, allocation=method)


def one_line_errors(run: Callable[[], object], errors: tuple = (ValueError, OSError)) -> int:
    """Run a sub-command's ``run()`` (its return value is ignored); a user mistake (one of ``errors``;
    SpectraError, DataNotFoundError and AllocationError are ValueErrors) prints one ``error: ...`` line (the
    message's first line) on stderr.

    Returns
    -------
    int
        The exit status: 0, or 2 after a mistake.
    """
    try:
        run()
    except errors as exc:
        lines = str(exc).strip().splitlines()
        msg = " ".join(lines[0].split()) if lines else type(exc).__name__
        print(f"error: {msg}", file=sys.stderr)
        return 2
    return 0


def check_table_model(table: Optional[str], model, pruner: str, sparsity: float) -> None:
    """Before ``model`` (the MODEL argument) loads: refuse a ``--sensitivity-table`` whose stored settings name
    another model (:func:`pruning.sensitivity_table.check_table` on the model names; the weights' hash is compared
    once the model is loaded, and the warnings are printed then)."""
    if not table:
        return
    from pruning.sensitivity_table import check_table
    from spectra.models import resolve_source

    check_table(table, pruner, sparsity, resolve_source(model).label)
