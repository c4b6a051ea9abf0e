"""pruning — layer-wise sparsity allocation (AlphaPruning and peers) and post-training pruning of LLMs."""
__version__ = "0.1.0"
