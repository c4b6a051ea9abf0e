"""The layer pruners and their registry.

A layer pruner maps one linear layer's dense weight ``W`` (out, in) and the statistics of its calibration inputs
(:class:`pruning.pruners.base.LayerStats`) to a pruned weight; its module ends with a ``SPEC``
(:class:`pruning.pruners.base.PrunerSpec`) saying what it needs. Adding a pruner is one module here plus one line in
:data:`PRUNERS` (see docs/ARCHITECTURE.md).
"""
from __future__ import annotations

from pruning.pruners import fista, magnitude, prox24, sparsegpt, wanda
from pruning.pruners.base import NM, LayerStats, PrunerSpec, parse_nm

PRUNERS: dict[str, PrunerSpec] = {spec.name: spec for spec in (
    magnitude.SPEC,
    wanda.SPEC,
    sparsegpt.SPEC,
    fista.SPEC,
    prox24.SPEC,
)}


#: the pruner a run uses when none is named (the Wanda/SparseGPT reference loop's cheap pruner)
DEFAULT_PRUNER = wanda.SPEC.name
#: the calibration-free baseline (the ESD explorer's "after pruning" preview, ``prune_weights``' default)
BASELINE_PRUNER = magnitude.SPEC.name
#: the pruner ``export-recipe`` writes when none is named
DEFAULT_RECIPE_PRUNER = sparsegpt.SPEC.name


def one_shot_pruners() -> tuple:
    """Names of the pruners that can prune from dense statistics alone (``PrunerSpec.one_shot``; ``tune``)."""
    return tuple(name for name, spec in PRUNERS.items() if spec.one_shot)


def literal_pruners() -> tuple:
    """Names of the pruners with a paper-literal variant (``PrunerSpec.paper_literal``)."""
    return tuple(name for name, spec in PRUNERS.items() if spec.paper_literal)


def get_pruner(name: str) -> PrunerSpec:
    """Return the registered pruner ``name`` or raise a one-line ValueError listing the known ones."""
    if name not in PRUNERS:
        raise ValueError(f"unknown pruner {name!r}; choose one of: {', '.join(sorted(PRUNERS))}")
    return PRUNERS[name]


__all__ = ["NM", "PRUNERS", "DEFAULT_PRUNER", "BASELINE_PRUNER", "DEFAULT_RECIPE_PRUNER", "LayerStats", "PrunerSpec",
           "get_pruner", "literal_pruners", "one_shot_pruners", "parse_nm"]
