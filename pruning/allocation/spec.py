"""What an allocation method is: its :class:`AllocationSpec` (name, label, what it reads, its tunable parameters)
and the objects every method function receives (:class:`AllocationOptions`, :class:`AllocationContext`) and returns
(:class:`MethodResult`). The registry of methods is :mod:`pruning.allocation.registry`."""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

#: what a method reads, besides the target S and each matrix's size
READS = {
    "nothing": "nothing (every matrix gets S)",
    "depth": "only the depth (each matrix's block index)",
    "shapes": "each matrix's shape",
    "metrics": "spectral metrics (a spectra results table)",
    "weights": "every weight of the model",
    "input_norms": "calibration input norms (the Wanda/OWL calibration pass) and the weights",
    "table": "a measured table (one value per block, e.g. from a file)",
}


@dataclass(frozen=True)
class Param:
    """A tunable parameter of a method: the :class:`pruning.settings.AllocationSettings` field (flat name, e.g.
    ``lam``, ``owl_lambda``, ``atp_beta``) and the range ``tune`` / ``compare`` search. ``hi_fn(S, L)`` gives the
    upper end when it depends on the target S and the number of blocks L (ATP's β)."""

    name: str
    label: str
    lo: float
    hi: float
    default: float
    hi_fn: Callable[[float, int], float] | None = None

    def bounds(self, sparsity: float, n_blocks: int) -> tuple[float, float]:
        """(lo, hi) of the search at target ``sparsity`` with ``n_blocks`` blocks."""
        return self.lo, (self.hi_fn(sparsity, n_blocks) if self.hi_fn is not None else self.hi)

    def grid(self, sparsity: float, n_blocks: int, budget: int) -> list[float]:
        """``budget`` evenly spaced candidates over :meth:`bounds` (rounded to 6 decimals)."""
        lo, hi = self.bounds(sparsity, n_blocks)
        if budget <= 1:
            return [round(float(self.default), 6)]
        hi = math.floor(hi * 1e6) / 1e6  # rounded down: the last candidate stays inside a bound such as ATP's
        return [min(round(float(v), 6), hi) for v in np.linspace(lo, hi, int(budget))]


@dataclass(frozen=True)
class AllocationOptions:
    """Every keyword argument of :func:`pruning.allocation.allocate` (each method reads its own, see
    :attr:`AllocationSpec.options`)."""

    metric: str | None = None
    granularity: str = "block"
    mapping: str = "linear"
    lam: float = 0.3
    direction: str | bool = "higher_more"
    max_sparsity: float = 0.99
    min_sparsity: float = 0.0
    clip: bool = True
    weights: Mapping[str, Any] | None = None
    outlier_ratios: Mapping[str | int, float] | None = None
    owl_lambda: float = 0.08
    owl_M: float = 5.0
    exclude_flagged: bool = False
    atp_beta: float = 0.0
    dlp_alpha: float = 0.15
    block_scores: Mapping[int, float] | None = None
    table: Mapping[Any, float] | None = None


@dataclass
class AllocationContext:
    """What a method function gets: the prepared metrics (prunable rows, ``block``/``role``/``num_params``), their
    names and sizes, the target S, the options, the (effective) bounds and the lists to add notes and settings to."""

    df: pd.DataFrame
    names: list
    p: np.ndarray
    S: float
    opt: AllocationOptions
    higher_more: bool
    lo: float
    hi: float
    notes: list = field(default_factory=list)
    settings: dict = field(default_factory=dict)

    @property
    def clip(self) -> bool:
        return bool(self.opt.clip)


@dataclass
class MethodResult:
    """A method's sparsities, its unbounded formula's values (``raw``; None = nothing to report against the
    bounds) and the per-matrix value it used (``metric``; NaN when none)."""

    values: np.ndarray
    raw: np.ndarray | None = None
    metric: np.ndarray | None = None


@dataclass(frozen=True)
class AllocationSpec:
    """One allocation method.

    name: the ``--allocation`` value. label: for tables and the app. reads: a key of :data:`READS`.
    fn: ``fn(ctx) -> MethodResult``. options: the :class:`AllocationOptions` fields it reads (besides the bounds).
    settings_read: the :class:`pruning.settings.AllocationSettings` fields that change its allocation (the app's
    cache key, ``allocation_options``). params: its tunable parameters (the first is what ``tune`` searches by
    default). signal: for ``input_norms`` methods, ``signal(weights, input_sq_norms, settings) -> dict`` computed
    from the calibration pass, passed to :func:`allocate` as keyword ``signal_arg``. analysis: the
    :class:`spectra.analyze.AnalysisSettings` overrides its metrics need (FARMS: ``{"farms": True}``).
    source: the paper (one line).
    """

    name: str
    label: str
    reads: str
    fn: Callable[[AllocationContext], MethodResult]
    source: str
    options: frozenset = frozenset()
    settings_read: frozenset = frozenset()
    params: tuple = ()
    signal: Callable[..., dict] | None = None
    signal_arg: str | None = None
    analysis: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.reads not in READS:
            raise ValueError(f"allocation {self.name!r}: reads must be one of {', '.join(READS)}, got {self.reads!r}")

    @property
    def tunable(self) -> bool:
        return bool(self.params)

    @property
    def needs_calibration(self) -> bool:
        return self.reads == "input_norms"

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise ValueError(f"allocation {self.name!r} has no tunable parameter {name!r}; its parameters: "
                         f"{', '.join(p.name for p in self.params) or 'none'}")
