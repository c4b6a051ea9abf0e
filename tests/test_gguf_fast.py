"""The fast GGUF conversion (spectra.gguf_convert) against transformers' GGUF loader: same tensors bit for bit, same
keys, same config, for both built-in models; the tokenizer is built once, on first need."""
from __future__ import annotations

import json

import pytest
import torch

from spectra import gguf_convert
from spectra.models import builtin_available, builtin_gguf_path

# one xdist worker for this module and tests/test_models_weights.py: they share transformers' own GGUF build of
# the model (tests/conftest.py::transformers_gguf, ~25 s)
pytestmark = pytest.mark.xdist_group("gguf_reference")
MODELS = [pytest.param("smollm2", marks=pytest.mark.slow),  # transformers' own conversion takes ~30 s
          pytest.param("gemma3", marks=[pytest.mark.slow, pytest.mark.skipif(not builtin_available("gemma3"),
                                                                              reason="gemma3 not installed")])]


@pytest.mark.parametrize("name", MODELS)
def test_fast_conversion_equals_transformers(name, tmp_path, transformers_gguf):
    from safetensors.torch import load_file
    from transformers import AutoConfig

    path = builtin_gguf_path(name)
    gguf_convert.convert(path, tmp_path)
    fast = load_file(tmp_path / "model.safetensors")
    model = transformers_gguf(name)
    ref = model.state_dict()
    tied = {"lm_head.weight"} if model.config.tie_word_embeddings else set()
    assert set(fast) == set(ref) - tied
    for key, w in fast.items():
        assert w.dtype == torch.float32 and torch.equal(w, ref[key]), key
    ours = AutoConfig.from_pretrained(tmp_path).to_dict()
    theirs = model.config.to_dict()
    skip = {"architectures", "dtype", "_name_or_path", "transformers_version", "quantization_config"}
    assert {k: v for k, v in ours.items() if k not in skip} == {k: v for k, v in theirs.items() if k not in skip}
    assert json.loads((tmp_path / "config.json").read_text())["architectures"] == [type(model).__name__]
    # the generation config transformers saves for a model loaded from this folder (a streamed prune copies ours)
    from transformers import AutoModelForCausalLM

    (tmp_path / "no_gen").mkdir()
    for f in ("config.json", "model.safetensors"):
        (tmp_path / "no_gen" / f).symlink_to(tmp_path / f)
    AutoModelForCausalLM.from_pretrained(tmp_path / "no_gen").save_pretrained(tmp_path / "ref")
    assert (json.loads((tmp_path / "generation_config.json").read_text())
            == json.loads((tmp_path / "ref" / "generation_config.json").read_text()))


def test_config_table_is_transformers_table():
    from transformers.integrations.ggml import GGUF_CONFIG_MAPPING

    for prefix, table in gguf_convert.CONFIG_KEYS.items():
        assert table == GGUF_CONFIG_MAPPING[prefix], prefix


def test_header_reader_matches_gguf_reader():
    import gguf
    import numpy as np

    path = builtin_gguf_path("smollm2")
    ours, reader = gguf_convert.read_header(path), gguf.GGUFReader(path)
    assert [t.name for t in ours.tensors] == [t.name for t in reader.tensors]
    for mine, theirs in zip(ours.tensors, reader.tensors):
        assert mine.dims == tuple(int(d) for d in theirs.shape) and mine.ggml_type == int(theirs.tensor_type)
        assert ours.data_start + mine.offset == theirs.data_offset
    assert ours.metadata["llama.attention.head_count"] == int(reader.fields["llama.attention.head_count"].parts[-1][0])
    assert ours.metadata["tokenizer.ggml.tokens"] == len(reader.fields["tokenizer.ggml.tokens"].data)
    assert np.isclose(ours.metadata["llama.rope.freq_base"], float(reader.fields["llama.rope.freq_base"].parts[-1][0]))


def test_tokenizer_written_once_and_loads(tmp_path, monkeypatch):
    from transformers import AutoTokenizer

    from spectra import models

    monkeypatch.setenv("SPL_CACHE_DIR", str(tmp_path))
    path = builtin_gguf_path("smollm2")
    wdir = models.gguf_to_safetensors(path)
    assert not (wdir / "tokenizer_config.json").exists()  # the conversion does not build it
    calls = []
    real = gguf_convert.write_tokenizer
    monkeypatch.setattr(gguf_convert, "write_tokenizer", lambda *a: (calls.append(a), real(*a)))
    models.ensure_tokenizer(wdir, path)
    models.ensure_tokenizer(wdir, path)
    assert len(calls) == 1 and not [p for p in wdir.iterdir() if p.name.startswith(".tokenizer-")]
    ref = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    tok = AutoTokenizer.from_pretrained(wdir)
    text = "Spectral pruning keeps the heavy tails."
    assert tok(text)["input_ids"] == ref(text)["input_ids"]


@pytest.mark.parametrize("name", MODELS)
def test_tokenizer_class_built_directly_saves_autotokenizers_files(name, tmp_path):
    """The tokenizer built by its class (gguf_convert.TOKENIZER_CLASSES, no config read from the GGUF) is the one
    AutoTokenizer builds: the same class and the same saved files, byte for byte."""
    from transformers import AutoTokenizer

    path = builtin_gguf_path(name)
    meta = gguf_convert.read_header(path).metadata
    assert (meta["general.architecture"], meta["tokenizer.ggml.model"]) in gguf_convert.TOKENIZER_CLASSES
    ours, ref = gguf_convert.build_tokenizer(path), AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    assert type(ours) is type(ref)
    ours.save_pretrained(tmp_path / "ours")
    ref.save_pretrained(tmp_path / "ref")
    files = sorted(p.name for p in (tmp_path / "ref").iterdir())
    assert sorted(p.name for p in (tmp_path / "ours").iterdir()) == files and "tokenizer.json" in files
    for f in files:
        assert (tmp_path / "ours" / f).read_bytes() == (tmp_path / "ref" / f).read_bytes(), f
