"""Scale features: compute device ≠ storage device, half-precision storage, streamed pruning / evaluation
from safetensors shards, and the one-line refusals of bad input."""
import copy
import json
from collections import namedtuple
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_block_loop import VOCAB, tiny
from tiny_models import save_random_llama

from pruning.__main__ import main as pruning_main
from pruning.block_loop import prune_blocks
from pruning.blocks import block_linears
from pruning.devices import check_disk, parse_device, parse_dtype
from pruning.prune import prune_model
from pruning.report import read_report
from pruning.settings import PruneSettings
from pruning.stream import ShardWriter, StreamedModel, blockwise_perplexity, stream_source_dir, write_streamed_output


@pytest.fixture(scope="module")
def calib():
    return torch.randint(0, VOCAB, (6, 32), generator=torch.Generator().manual_seed(1))


def _weights(model) -> dict:
    return {l.longname: l.get() for blk in block_linears(model) for l in blk}


def _state(directory: Path) -> dict:
    out = {}
    for f in sorted(Path(directory).glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


# ----------------------------------------------------------------------------------------------- device / dtype
@pytest.mark.parametrize("pruner", ["wanda", "sparsegpt"])
def test_explicit_cpu_device_is_bit_identical(pruner, calib):
    a, b = tiny("llama"), tiny("llama")
    prune_blocks(a, calib, 0.5, pruner, batch_size=4, progress=False)
    prune_blocks(b, calib, 0.5, pruner, batch_size=4, progress=False, device="cpu")
    wa, wb = _weights(a), _weights(b)
    assert all(torch.equal(wa[n], wb[n]) for n in wa)


@pytest.mark.parametrize("pruner", ["wanda", "sparsegpt"])
def test_bfloat16_masks_agree_with_float32(pruner, calib):
    f32 = tiny("llama")
    bf16 = copy.deepcopy(f32).to(torch.bfloat16)
    prune_blocks(f32, calib, 0.5, pruner, batch_size=4, progress=False)
    res = prune_blocks(bf16, calib, 0.5, pruner, batch_size=4, progress=False, device="cpu")
    assert all(p.dtype == torch.bfloat16 for p in bf16.parameters())
    assert all(abs(r["achieved"] - 0.5) < 1e-3 for r in res.layers)
    wa, wb = _weights(f32), _weights(bf16)
    agree = sum(int(((wa[n] == 0) == (wb[n] == 0)).sum()) for n in wa) / sum(w.numel() for w in wa.values())
    assert agree >= 0.99, agree
    assert agree < 1.0  # bf16 really changed the computation (the check is not vacuous)


def test_parse_device_refuses_cuda_without_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="no CUDA GPU"):
        parse_device("cuda")
    with pytest.raises(ValueError, match="unknown --device"):
        parse_device("gpu0")
    assert parse_device("cpu") == torch.device("cpu")


def test_parse_dtype_defaults_and_refusals(monkeypatch):
    cpu = torch.device("cpu")
    assert parse_dtype(None, cpu, torch.bfloat16) == torch.float32  # CPU default float32
    assert parse_dtype("bf16", cpu) == torch.bfloat16
    with pytest.raises(ValueError, match="unknown --dtype"):
        parse_dtype("int8", cpu)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Tesla V100")
    cuda = torch.device("cuda")
    assert parse_dtype(None, cuda, torch.bfloat16) == torch.bfloat16  # CUDA default: the checkpoint's dtype
    with pytest.raises(ValueError, match="bfloat16 is not supported by Tesla V100"):
        parse_dtype("bfloat16", cuda)
    monkeypatch.setattr("pruning.devices._cpu_runs", lambda dtype: dtype == torch.float32)
    with pytest.raises(ValueError, match="cannot run on this CPU"):
        parse_dtype("float16", cpu)


def test_check_disk_refuses_too_little_space(monkeypatch, tmp_path):
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr("shutil.disk_usage", lambda p: Usage(10**9, 10**9 - 10**6, 10**6))
    with pytest.raises(ValueError, match="not enough disk space"):
        check_disk(tmp_path / "out", 5 * 10**6)
    check_disk(tmp_path / "out", 5 * 10**5)  # fits


# ----------------------------------------------------------------------------------------------- streaming (tiny)
@pytest.fixture()
def tiny_ckpt(tmp_path):
    """A tiny random Llama written as 3+ safetensors shards with an index (no tokenizer)."""
    model = tiny("llama")
    d = tmp_path / "tiny"
    model.save_pretrained(d, safe_serialization=True, max_shard_size="100KB")
    assert (d / "model.safetensors.index.json").is_file()
    return model, d


@pytest.mark.parametrize("pruner,nm", [("wanda", None), ("sparsegpt", None), ("magnitude", "2:4")])
def test_streamed_tiny_equals_in_memory(tiny_ckpt, tmp_path, calib, pruner, nm):
    model, d = tiny_ckpt
    settings = PruneSettings.from_flat(pruner=pruner, sparsity=0.5, nm=nm, batch_size=4)
    prune_model(model, None, settings, progress=False, calib=calib)
    out = tmp_path / "out"
    sm = StreamedModel(d, torch.float32, ShardWriter(out, max_bytes=60_000), tokenizer=False, load_head=False)
    assert sm.model.lm_head.weight.device.type == "meta"  # the untied head is never loaded while pruning
    prune_model(sm.model, None, settings, progress=False, calib=calib, block_io=sm)
    shards = write_streamed_output(sm, out)
    assert len(shards) > 1 and (out / "model.safetensors.index.json").is_file()
    assert all(p.device.type == "meta" for p in sm.blocks.parameters())  # blocks freed after writing
    got = _state(out)
    ref = model.state_dict()
    assert "lm_head.weight" in got
    assert set(got) == set(ref)
    assert all(torch.equal(got[k], ref[k]) for k in ref)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(got)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["dtype"] == "float32" and cfg["num_hidden_layers"] == 3
    import transformers as tf

    loaded = tf.AutoModelForCausalLM.from_pretrained(out).state_dict()  # the shards + index load in transformers
    assert all(torch.equal(loaded[k], ref[k]) for k in ref)


def test_streamed_bfloat16_output_is_stored_in_bfloat16(tiny_ckpt, tmp_path, calib):
    _, d = tiny_ckpt
    out = tmp_path / "bf16"
    sm = StreamedModel(d, torch.bfloat16, ShardWriter(out), tokenizer=False)
    prune_model(sm.model, None, PruneSettings.from_flat(pruner="wanda", sparsity=0.5, batch_size=4), progress=False,
                calib=calib, block_io=sm)
    write_streamed_output(sm, out)
    got = _state(out)
    assert {t.dtype for t in got.values()} == {torch.bfloat16}
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    q = got["model.layers.1.self_attn.q_proj.weight"]
    assert abs((q == 0).float().mean().item() - 0.5) < 1e-3


# ----------------------------------------------------------------------------------------------- CLI on a model dir
TIED_BLOCKS = 4


@pytest.fixture(scope="module")
def tied_dir(builtin, tmp_path_factory) -> Path:
    """A 4-block random Llama (seed 0) with tied embeddings, as the built-in SmolLM2 has, and the built-in model's
    tokenizer, saved as a local HF directory (one safetensors file)."""
    return save_random_llama(tmp_path_factory.mktemp("tied") / "tied-llama", builtin.tokenizer, layers=TIED_BLOCKS,
                             tie_word_embeddings=True)


def _cli(argv, capsys):
    rc = pruning_main(argv)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


@pytest.mark.parametrize("allocation", ["uniform", "alphapruning", "owl"])
def test_streamed_model_dir_equals_in_memory_cli(tied_dir, tmp_path, capsys, allocation):
    """The streamed CLI run of a model directory writes exactly the in-memory run's weights (float32); with
    AlphaPruning the streamed run's metrics come from the shards (spectra's streaming route), the in-memory run's
    from the loaded model; with OWL its outlier ratios come from a read-only walk over the shards. On a 4-block random
    Llama with tied embeddings like the built-in model's (the equality does not depend on the weights; the built-in
    model's 30 blocks cost 20 s a run; its streamed evaluation is test_eval_cli_stream_equals_in_memory)."""
    common = ["prune", str(tied_dir), "--pruner", "wanda", "--sparsity", "0.5", "--nsamples", "4", "--seqlen", "64",
              "--eval", "none", "--no-dense-eval", "--quiet", "--allocation", allocation]
    rc, _, err = _cli(common + ["--out", str(tmp_path / "mem")], capsys)
    assert rc == 0, err
    rc, _, err = _cli(common + ["--stream", "--out", str(tmp_path / "stream")], capsys)
    assert rc == 0, err
    a, b = _state(tmp_path / "mem"), _state(tmp_path / "stream")
    assert set(b) <= set(a) and len(b) >= 9 * TIED_BLOCKS + 2 - 1  # 9 per block, the embeddings and the final norm
    assert all(torch.equal(a[k], b[k]) for k in b)
    zeros = [(b[f"model.layers.{i}.mlp.down_proj.weight"] == 0).float().mean().item() for i in range(TIED_BLOCKS)]
    if allocation == "uniform":
        assert max(abs(z - 0.5) for z in zeros) < 1e-3
    else:
        assert max(zeros) - min(zeros) > 0.05  # a non-uniform allocation really was applied
    for f in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "report.json"):
        assert (tmp_path / "stream" / f).is_file(), f
    report = read_report(tmp_path / "stream")
    assert report["compute"] == {"device": "cpu", "dtype": "float32", "stream": True}
    assert not list(tmp_path.glob(".stream.tmp-*"))  # the temporary folder was renamed


# ----------------------------------------------------------------------------------------------- built-in model
def test_blockwise_and_streamed_perplexity_equal_the_whole_model():
    from pruning.evaluation.perplexity import perplexity
    from pruning.stream import streamed_perplexity
    from spectra.models import builtin_model_dir, load_model

    lm = load_model()
    ref = perplexity(lm.model, lm.tokenizer, "wikitext2", seqlen=64, max_windows=3, progress=False)
    blk = blockwise_perplexity(lm.model, lm.tokenizer, "wikitext2", seqlen=64, max_windows=3, device="cpu")
    st = streamed_perplexity(builtin_model_dir(), "wikitext2", seqlen=64, max_windows=3)
    assert blk.ntokens == st.ntokens == ref.ntokens
    assert blk.nll == pytest.approx(ref.nll, rel=1e-6) and st.nll == pytest.approx(ref.nll, rel=1e-6)


# ----------------------------------------------------------------------------------------------- bad input (CLI)
def test_cli_refuses_cuda_without_gpu(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    rc, _, err = _cli(["prune", "--device", "cuda", "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and err.strip().startswith("error: --device cuda requested but no CUDA GPU") and err.count("\n") == 1
    rc, _, err = _cli(["eval", "--device", "cuda", "--max-windows", "1"], capsys)
    assert rc == 2 and "no CUDA GPU" in err
    assert not (tmp_path / "o").exists()


def test_cli_refuses_bad_dtype(tmp_path, capsys):
    rc, _, err = _cli(["prune", "--dtype", "float64", "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and "unknown --dtype 'float64'" in err and err.count("\n") == 1


def test_stream_refuses_non_safetensors_sources(tmp_path, capsys):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    with pytest.raises(ValueError, match="is a GGUF file — convert it once"):
        stream_source_dir(str(gguf))
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "config.json").write_text("{}")
    (bindir / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match="pytorch .bin weights — convert it once"):
        stream_source_dir(str(bindir))
    with pytest.raises(ValueError, match="not a hub id; download it first"):
        stream_source_dir("meta-llama/Llama-2-7b-hf")
    rc, _, err = _cli(["prune", "meta-llama/Llama-2-7b-hf", "--stream", "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and "huggingface-cli download" in err and err.count("\n") == 1
    # OWL streams (its ratios are per block, tests/test_stream_walk.py); LAMP reads every weight at once
    rc, _, err = _cli(["prune", "--stream", "--allocation", "lamp", "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and "--allocation lamp reads the whole dense model" in err


def test_cli_refuses_too_little_disk(tmp_path, capsys, monkeypatch):
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr("shutil.disk_usage", lambda p: Usage(10**12, 10**12 - 10**8, 10**8))
    rc, _, err = _cli(["prune", "--stream", "--eval", "none", "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and "not enough disk space for the output: it needs about 0.54 GB" in err
    assert not list(tmp_path.iterdir())  # refused before anything was written


# ----------------------------------------------------------------------------------------------- spectra batched
def test_batched_eigenvalues_give_the_per_matrix_metrics(builtin):
    """The GPU path (batched float64 eigvalsh of same-shape matrices, here on the CPU) gives α, xmin, D equal to
    the per-matrix LAPACK path to 1e-6 relative on real weights: blocks 0, 10, 20 and 29 of the built-in model (28
    matrices, every shape and role, the first and the last block; the whole model's 210 cost 12 s)."""
    import numpy as np

    from spectra.analyze import analyze
    from spectra.esd import esd, esd_batch

    W = [torch.randn(40, 24, generator=torch.Generator().manual_seed(s)) for s in range(3)]
    for a, b in zip(esd_batch(W, normalize=True), [esd(w, normalize=True) for w in W]):
        assert np.allclose(a, b, rtol=1e-10, atol=1e-12)
    cut = torch.nn.Module()  # the four blocks (shared, not copied) named model.layers.0-3, as in a 4-block model
    cut.model = torch.nn.Module()
    cut.model.layers = torch.nn.ModuleList([builtin.model.model.layers[i] for i in (0, 10, 20, 29)])
    one = analyze(cut, progress=False, cache=False)
    many = analyze(cut, progress=False, cache=False, eig_batch=8)
    assert list(one["longname"]) == list(many["longname"]) and len(one) == 28
    assert not (one["status"] == "failed").any()  # every matrix went through both eigenvalue paths
    for col in ("alpha", "xmin", "D", "lambda_max", "num_pl_spikes"):
        a, b = one[col].to_numpy(float), many[col].to_numpy(float)
        assert np.allclose(a, b, rtol=1e-6, atol=0, equal_nan=True), (col, np.nanmax(np.abs(a - b) / np.abs(a)))


def test_spectra_cli_refuses_cuda_without_gpu(monkeypatch, capsys):
    from spectra.__main__ import main as spectra_main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert spectra_main(["--device", "cuda", "--quiet"]) == 2
    assert "no CUDA GPU is available" in capsys.readouterr().err


def test_eval_cli_stream_equals_in_memory(tmp_path, capsys):
    base = ["eval", "--seqlen", "64", "--max-windows", "2", "--quiet"]
    assert pruning_main(base + ["--json", str(tmp_path / "a.json")]) == 0
    assert pruning_main(base + ["--stream", "--json", str(tmp_path / "b.json")]) == 0
    a = json.loads((tmp_path / "a.json").read_text())["perplexity"]
    b = json.loads((tmp_path / "b.json").read_text())
    assert b["settings"]["stream"] is True and b["perplexity"]["ntokens"] == a["ntokens"]
    assert b["perplexity"]["ppl"] == pytest.approx(a["ppl"], rel=1e-6)
    capsys.readouterr()
    assert pruning_main(base + ["--stream", "--tasks", "piqa"]) == 2
    assert "--tasks need the whole model in memory" in capsys.readouterr().err
