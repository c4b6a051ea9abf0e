"""Random Llamas saved as local HF directories with the built-in model's tokenizer (seed 0): the small models the tests
run the library's real paths on where a property does not depend on trained weights (tests/conftest.py's 2-block
``tiny_dir`` and the deeper / tied / loud variants of single test modules)."""
from __future__ import annotations

from pathlib import Path


def save_random_llama(dest: Path, tokenizer, layers: int = 2, **config) -> Path:
    """Save a random Llama (hidden 64, MLP 128, 4 heads / 2 KV heads, seed 0) with ``layers`` blocks and
    ``tokenizer`` as a local HF directory ``dest``; ``config`` overrides ``LlamaConfig`` fields
    (``tie_word_embeddings=True``, ``initializer_range=1.0``, ...). Returns ``dest``."""
    import torch
    import transformers as tf

    torch.manual_seed(0)
    cfg = tf.LlamaConfig(**{"vocab_size": len(tokenizer), "hidden_size": 64, "intermediate_size": 128,
                            "num_hidden_layers": layers, "num_attention_heads": 4, "num_key_value_heads": 2,
                            "max_position_embeddings": 512, "bos_token_id": tokenizer.bos_token_id,
                            "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id,
                            **config})
    tf.AutoModelForCausalLM.from_config(cfg).save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    return dest


def save_deeper(tiny_dir: Path, layers: int, dest: Path) -> Path:
    """Save a random Llama with ``tiny_dir``'s configuration and tokenizer but ``layers`` blocks (seed 0) as a local
    HF directory ``dest``; returns ``dest``."""
    from transformers import AutoTokenizer

    return save_random_llama(dest, AutoTokenizer.from_pretrained(tiny_dir), layers)
