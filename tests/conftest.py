"""Shared fixtures: the built-in model is loaded once per test session (fp32, eval mode)."""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")

import pytest


@pytest.fixture(scope="session")
def builtin():
    """The built-in SmolLM2-135M-Instruct as a :class:`spectra.models.LoadedModel`."""
    from spectra.models import load_model

    return load_model()


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A 2-block random Llama (seed 0) with the built-in model's tokenizer, saved as a local HF directory."""
    import torch
    import transformers as tf

    from spectra.models import load_model

    tok = load_model().tokenizer
    torch.manual_seed(0)
    cfg = tf.LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    d = tmp_path_factory.mktemp("tiny") / "tiny-llama"
    tf.AutoModelForCausalLM.from_config(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    return d
