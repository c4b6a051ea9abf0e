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


def get_pruner(name: str) -> PrunerSpec:
    """Return the registered pruner ``name`` or raise a one-line ValueError listing the known ones."""
    if name not in PRUNERS:
        raise ValueError(f"unknown pruner {name!r}; choose one of: {', '.join(sorted(PRUNERS))}")
    return PRUNERS[name]


__all__ = ["NM", "PRUNERS", "LayerStats", "PrunerSpec", "get_pruner", "parse_nm"]
