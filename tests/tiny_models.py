"""Random Llamas deeper than tests/conftest.py's 2-block ``tiny_dir``, for the checks that need more than two blocks
(a rank correlation over the blocks, a min-max normalisation across them)."""
from __future__ import annotations

from pathlib import Path


def save_deeper(tiny_dir: Path, layers: int, dest: Path) -> Path:
    """Save a random Llama with ``tiny_dir``'s configuration and tokenizer but ``layers`` blocks (seed 0) as a local
    HF directory ``dest``; returns ``dest``."""
    import torch
    import transformers as tf

    cfg = tf.AutoConfig.from_pretrained(tiny_dir)
    cfg.num_hidden_layers = layers
    torch.manual_seed(0)
    tf.AutoModelForCausalLM.from_config(cfg).save_pretrained(dest)
    tf.AutoTokenizer.from_pretrained(tiny_dir).save_pretrained(dest)
    return dest
