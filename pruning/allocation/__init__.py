"""Layer-wise sparsity allocation: per-matrix metrics + a global target S → one sparsity per prunable matrix.

Every method returns sparsities whose **parameter-weighted mean equals S** (to rounding) and, by default, lie in
``[min_sparsity, max_sparsity]``. Methods (see :data:`ALLOCATION_METHODS` and docs/REFERENCE.md "Allocation"):

* ``uniform``       — every matrix gets S.
* ``alphapruning``  — Lu et al., "AlphaPruning", NeurIPS 2024: r_i = (m_i − min m)/(max m − min m)·2λ + 1 − λ over a
  heavy-tail metric m (default PL_Alpha_Hill ``alpha``, block-averaged), then s_i = r_i · S·Σp / Σp·r.
* ``stable_rank``   — the same mapping over the ``stable_rank`` column (a peer metric in AlphaPruning's ablation),
  higher stable rank ⇒ more sparsity. AlphaPruning's code (``prune_vit_ww``, used for its metric comparison) feeds
  every weightwatcher metric, stable_rank included, through the same map without flipping it; this also matches the
  HT-SR reading: a better-trained, heavier-tailed matrix concentrates ‖W‖F² in a few large eigenvalues, i.e. has a
  *lower* stable rank Σλ/λmax, like a lower α. Pass ``direction="lower_more"`` for the opposite.
* ``owl``           — Yin et al., "Outlier Weighed Layerwise sparsity", ICML 2024: s_l = S − D̃_l + mean D̃ with
  D̃ = min-max-normalised outlier ratios scaled to [0, 2λ]. OWL's code takes the plain mean over blocks (equal
  sizes in a decoder, so it equals the parameter-weighted mean used here) and replaces a sparsity ≤ 0 by 0.01
  without rebalancing; here bounds are handled like every other method (below).
* ``erk``           — Evci et al., "Rigging the Lottery", ICML 2020: density ∝ (n_in + n_out)/(n_in·n_out).
* ``global``        — one |W| threshold across all matrices (global magnitude).
* ``lamp``          — Lee et al., "Layer-adaptive sparsity for the Magnitude-based Pruning", ICLR 2021: one global
  threshold on score(u) = w_u² / Σ_{v≥u} w_v² (weights of a matrix sorted by |w| ascending).

Bounds. A method's raw formula can leave ``[min_sparsity, max_sparsity]`` (AlphaPruning's reference code has no
clipping at all: with λ = 0.5 and S = 0.8 some r_i·scale exceed 1). Two behaviours are exposed:

* ``clip=True`` (default, corrected): the method keeps its own family of solutions and only its free scalar is
  re-solved so that every value is inside the bounds *and* the mean is still S — multiplicative scale for
  AlphaPruning / stable_rank (s_i = clip(c·r_i)), additive shift for OWL (s_i = clip(S − D̃_i + c)), density scale
  for ERK (d_i = clip(c·k_i)), and the common threshold for global / LAMP (capped matrices stop at the cap, the
  threshold moves for the others). The result records ``note`` in ``attrs["allocation"]`` whenever a bound bound.
  A target that no member of the family reaches raises :class:`AllocationError`.
* ``clip=False`` (faithful): the raw published formula, no bounds (ERK still keeps density ≤ 1, global/LAMP are
  within [0, 1] by construction); out-of-range values are reported in ``note``.

Sparsities are real numbers, not integer counts: the layer pruner rounds ``s·numel`` itself. Global / LAMP give the
weight sitting exactly on the threshold a fractional share so that the mean is S exactly.
"""
from pruning.allocation.allocate import allocate, allocation_options, settings_read
from pruning.allocation.io import LoadedAllocation, allocation_to_json, load_allocation, save_allocation
from pruning.allocation.mappings import (
                                         DIRECTIONS,
                                         GRANULARITIES,
                                         MAPPINGS,
                                         OUTPUT_COLUMNS,
                                         AllocationError,
                                         LampScores,
                                         alphapruning_ratios,
                                         erk_factors,
                                         lamp_scores_sorted,
                                         owl_outlier_ratios,
)
from pruning.allocation.methods.atp import atp_bound, atp_sparsities
from pruning.allocation.methods.dlp import dlp_block_scores
from pruning.allocation.methods.lamp import lamp_score_table
from pruning.allocation.registry import (
                                         ALLOCATION_METHODS,
                                         ALLOCATIONS,
                                         CALIBRATION_METHODS,
                                         METHOD_LABELS,
                                         SPECTRAL_METHODS,
                                         TUNABLE_METHODS,
                                         WEIGHT_METHODS,
                                         check_method,
                                         get_allocation,
)
from pruning.allocation.spec import READS, AllocationOptions, AllocationSpec, Param

__all__ = ["ALLOCATIONS", "ALLOCATION_METHODS", "CALIBRATION_METHODS", "DIRECTIONS", "GRANULARITIES", "MAPPINGS",
           "METHOD_LABELS", "OUTPUT_COLUMNS", "READS", "SPECTRAL_METHODS", "TUNABLE_METHODS", "WEIGHT_METHODS",
           "AllocationError", "AllocationOptions", "AllocationSpec", "LampScores", "LoadedAllocation", "Param",
           "allocate", "allocation_options", "allocation_to_json", "alphapruning_ratios", "atp_bound", "atp_sparsities",
           "check_method", "dlp_block_scores", "erk_factors", "get_allocation", "lamp_score_table",
           "lamp_scores_sorted", "load_allocation", "owl_outlier_ratios", "save_allocation", "settings_read"]
