"""pruning — layer-wise sparsity allocation (AlphaPruning and peers) and post-training pruning of LLMs.

Public API: :func:`pruning.prune.prune_model` with :class:`pruning.prune.PruneSettings` (allocation + sequential
pruning), :func:`pruning.block_loop.prune_blocks` (the block-by-block loop), the layer pruners registered in
:data:`pruning.pruners.base.PRUNERS` (magnitude, wanda, sparsegpt, fista, prox24), :func:`pruning.allocation.allocate`,
:func:`pruning.evaluation.perplexity.perplexity`, :func:`pruning.sweep.run_sweep`. CLI: ``python -m pruning``.
"""
__version__ = "0.1.0"
