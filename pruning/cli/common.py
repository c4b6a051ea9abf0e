"""Parsing of the CLI's option values, shared by every sub-command: one-line ``ValueError`` naming the option."""
from __future__ import annotations

from typing import Any, Optional


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
                   "owl_lambda", "owl_M", "exclude_flagged")


def add_allocation_options(p, defaults: Optional[dict] = None, required: tuple = ()) -> None:
    """The :data:`ALLOCATE_FIELDS` options, built from the fields of ``AllocationSettings``."""
    from spectra.options import add_options

    from pruning.settings import AllocationSettings

    add_options(p, AllocationSettings, only=ALLOCATE_FIELDS, defaults=defaults, required=required)


def allocate_from_args(metrics, method: str, args, weights=None, outlier_ratios=None, **extra: Any):
    """``allocate(metrics, method, --sparsity, ...)`` with the options ``method`` reads
    (:func:`pruning.allocation.allocation_options`), each checked by its field; ``extra`` goes to ``allocate``."""
    from spectra.options import checked_values

    from pruning.allocation import allocate, allocation_options
    from pruning.settings import AllocationSettings

    v = checked_values(AllocationSettings, args, ALLOCATE_FIELDS)
    if v["sparsity"] is None:
        raise ValueError(f"--allocation {method} needs --sparsity S")
    if v["min_sparsity"] > v["max_sparsity"]:
        raise ValueError(f"--min-sparsity {v['min_sparsity']:g} is above --max-sparsity {v['max_sparsity']:g}")
    opts = allocation_options(method, lam=v["lam"], mapping=v["mapping"], granularity=v["granularity"],
                              metric=v["metric"], exclude_flagged=bool(v["exclude_flagged"]),
                              min_sparsity=v["min_sparsity"], max_sparsity=v["max_sparsity"], weights=weights,
                              outlier_ratios=outlier_ratios, owl_lambda=v["owl_lambda"], owl_M=v["owl_M"])
    return allocate(metrics, method, v["sparsity"], **opts, **extra)
