"""The allocation registry: name → :class:`pruning.allocation.spec.AllocationSpec`, one module per method under
:mod:`pruning.allocation.methods`. Adding a method = one module (formula docstring, ``fn(ctx)``, ``SPEC``) + one
line in :data:`_MODULES`; :func:`pruning.allocation.allocate`, the command lines' choices, ``sweep``, ``tune``,
``compare``, ``export-recipe`` and the app's method lists read it."""
from __future__ import annotations

import importlib
from typing import Any

from pruning.allocation.spec import AllocationSpec

#: the method modules, in the order the choices list them (the first seven are the methods before 2025)
_MODULES = ("uniform", "alphapruning", "owl", "erk", "global_magnitude", "lamp", "stable_rank",
            "farms", "atp", "dlp", "sensitivity")

ALLOCATIONS: dict[str, AllocationSpec] = {}
for _mod in _MODULES:
    _spec = importlib.import_module(f"pruning.allocation.methods.{_mod}").SPEC
    ALLOCATIONS[_spec.name] = _spec

#: every method name accepted by :func:`pruning.allocation.allocate`
ALLOCATION_METHODS: tuple[str, ...] = tuple(ALLOCATIONS)
#: the spectral allocations: computed from spectra metrics with AlphaPruning's λ
SPECTRAL_METHODS: tuple[str, ...] = tuple(n for n, s in ALLOCATIONS.items() if s.reads == "metrics")
#: allocations that read every weight of the model (``weights=``)
WEIGHT_METHODS: tuple[str, ...] = tuple(n for n, s in ALLOCATIONS.items() if s.reads == "weights")
#: allocations that need the calibration pass (input norms)
CALIBRATION_METHODS: tuple[str, ...] = tuple(n for n, s in ALLOCATIONS.items() if s.needs_calibration)
#: allocations with a tunable parameter (``tune`` / ``compare``)
TUNABLE_METHODS: tuple[str, ...] = tuple(n for n, s in ALLOCATIONS.items() if s.tunable)
#: label of each method (tables, the app)
METHOD_LABELS: dict[str, str] = {n: s.label for n, s in ALLOCATIONS.items()}


def check_method(method: Any) -> str:
    """``method`` if registered, else a one-line ValueError listing the methods."""
    if method not in ALLOCATIONS:
        raise ValueError(f"unknown allocation method {method!r}; choose one of: {', '.join(ALLOCATION_METHODS)}")
    return method


def get_allocation(method: str) -> AllocationSpec:
    """The spec of ``method`` (one-line ValueError for an unknown name)."""
    return ALLOCATIONS[check_method(method)]


def tunable_params() -> tuple[str, ...]:
    """Every AllocationSettings field some method tunes (``lam``, ``owl_lambda``, ``owl_M``, ``atp_beta``, ...)."""
    return tuple(dict.fromkeys(p.name for s in ALLOCATIONS.values() for p in s.params))
