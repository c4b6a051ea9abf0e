"""The contract between the sequential calibration loop and the layer pruners.

A *layer pruner* turns one linear layer's dense weight ``W`` (out, in) and the statistics of its calibration
inputs into a pruned weight. The loop in :mod:`pruning.block_loop` collects only the statistics a pruner
declares in ``needs`` (see :class:`LayerStats`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

NM = Optional[tuple[int, int]]


@dataclass
class LayerStats:
    """Calibration statistics of one linear layer's inputs, accumulated over ``ntokens`` tokens.

    ``x_t`` is the input of the layer as seen in the model being pruned (earlier blocks/sublayers already pruned),
    ``d_t`` the input the *dense* model would give the same layer (only collected when a pruner needs it, e.g.
    FISTAPruner's error correction).

    Attributes:
        ntokens: number of calibration tokens T.
        sq_norm: ``Σ_t x_t²`` per input feature, shape (in,), float64 (Wanda's ‖X_j‖₂² ); always present.
        H: ``Σ_t x_t x_tᵀ``, shape (in, in), float64 (needs "H"). SparseGPT's Hessian is ``2 H / T``.
        K: ``Σ_t d_t x_tᵀ``, shape (in, in), float64 (needs "K"): cross term dense-input × pruned-input,
            so that ½‖W* X* − W X‖² has gradient ``W* H − W K``.
        D: ``Σ_t d_t d_tᵀ``, shape (in, in), float64 (needs "D"): makes the objective's constant term (the loss
            value, relative errors) computable; the optimisation itself does not need it.
    """

    ntokens: int
    sq_norm: torch.Tensor
    H: Optional[torch.Tensor] = None
    K: Optional[torch.Tensor] = None
    D: Optional[torch.Tensor] = None

    @classmethod
    def from_inputs(cls, X: torch.Tensor, dense: Optional[torch.Tensor] = None,
                    needs: frozenset = frozenset({"H", "K"})) -> LayerStats:
        """Build statistics directly from input rows ``X`` (T, in) (and dense inputs ``dense`` (T, in))."""
        X64 = X.reshape(-1, X.shape[-1]).to(torch.float64)
        D64 = X64 if dense is None else dense.reshape(-1, dense.shape[-1]).to(torch.float64)
        return cls(
            ntokens=X64.shape[0],
            sq_norm=(X64 * X64).sum(0),
            H=X64.T @ X64 if "H" in needs or "K" in needs else None,
            K=D64.T @ X64 if "K" in needs else None,
            D=D64.T @ D64 if needs & {"K", "D"} else None,
        )


@dataclass(frozen=True)
class PrunerSpec:
    """A layer pruner as the registry (:data:`pruning.pruners.PRUNERS`) lists it — everything the rest of the
    package knows about it: its function, the statistics it needs, a one-line description, the keyword options it
    accepts, its default error-correction mode, for a pruner bound to one N:M pattern that pattern, its display
    label and variant names, the options of its paper-literal variant, whether it can prune one-shot from dense
    statistics (:func:`pruning.calib_stats.prune_from_stats`, so ``tune`` may use it) and llm-compressor's modifier
    of the same method (``export-recipe``)."""

    name: str
    fn: Callable[..., torch.Tensor]
    needs: frozenset = field(default_factory=frozenset)  # subset of {"H", "K", "D"}
    description: str = ""
    supports_nm: bool = True
    options: tuple = ()  # keyword options the pruner accepts (``--pruner-opt KEY=VALUE``)
    correction: str = "sequential"  # default error-correction mode (pruning.block_loop.CORRECTIONS)
    only_nm: NM = None  # the one N:M pattern the pruner produces (prox24: 2:4); None = any sparsity or pattern
    calibration_free: bool = False  # uses no calibration statistics (magnitude): runs without the loop when none given
    label: str = ""  # display name (``Wanda``); the name when empty
    paper_literal: dict = field(default_factory=dict, hash=False)  # options selecting the paper's literal variant
    variant: Optional[Callable[[dict], str]] = None  # options → the variant's name in labels ("re-fit")
    variant_options: tuple = ()  # options ``variant`` names (not repeated as key=value in labels)
    one_shot: bool = False  # can prune from dense statistics alone (its ``needs`` ⊆ {"H"}): ``tune`` may use it
    llmc_modifier: str = ""  # llm-compressor's modifier of this method (``export-recipe``); "" when none

    @property
    def display(self) -> str:
        """The display label (``label``, or ``name`` when it has none)."""
        return self.label or self.name


def parse_nm(text: str | None) -> NM:
    """Parse ``"2:4"`` into ``(2, 4)``; validate 0 < n < m."""
    if text is None or text == "" or text == "none":
        return None
    try:
        n, m = (int(t) for t in str(text).split(":"))
    except ValueError:
        raise ValueError(f"invalid N:M pattern {text!r}; write it as N:M, e.g. 2:4") from None
    if not 0 < n < m:
        raise ValueError(f"invalid N:M pattern {text!r}: need 0 < N < M (e.g. 2:4 or 4:8)")
    return n, m
