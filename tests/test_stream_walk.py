"""The one block walk (``pruning.blocks.walk_blocks``) serves every loop, so the dense statistics and OWL's outlier
ratios run on a streamed model (blocks read one at a time from safetensors shards) and give what the in-memory
model gives; an OWL prune streamed from a random sharded checkpoint writes exactly the in-memory prune's weights."""
from __future__ import annotations

import pytest
import torch
from test_block_loop import VOCAB, tiny
from test_scale import _state

from pruning.block_loop import collect_input_norms, dense_layer_stats
from pruning.blocks import walk_blocks
from pruning.prune import calibration_signal as owl_ratios
from pruning.prune import prune_model
from pruning.settings import PruneSettings
from pruning.stream import ShardWriter, StreamedModel, write_streamed_output


@pytest.fixture(scope="module")
def calib():
    return torch.randint(0, VOCAB, (6, 32), generator=torch.Generator().manual_seed(1))


@pytest.fixture()
def ckpt(tmp_path):
    model = tiny("llama")
    d = tmp_path / "tiny"
    model.save_pretrained(d, safe_serialization=True, max_shard_size="100KB")
    assert len(list(d.glob("*.safetensors"))) > 1
    return model, d


class _Recorder:
    """A BlockIO that records the order of its calls."""

    def __init__(self):
        self.calls = []

    def load(self, b, block):
        self.calls.append(("load", b))

    def release(self, b, block):
        self.calls.append(("release", b))


def test_walk_blocks_loads_each_block_before_its_step_and_releases_it_after():
    model, io, seen = tiny("llama"), _Recorder(), []
    for b, _ in walk_blocks(model, block_io=io):
        seen.append(b)
        assert io.calls[-1] == ("load", b)  # loaded, not yet released, while the caller works on it
    assert seen == [0, 1, 2]
    assert io.calls == [(k, b) for b in range(3) for k in ("load", "release")]
    io.calls.clear()
    assert [b for b, _ in walk_blocks(model, block_io=io, last=1)] == [0, 1]
    assert io.calls[-1] == ("release", 1) and len(io.calls) == 4


def test_streamed_dense_statistics_equal_in_memory(ckpt, calib):
    model, d = ckpt
    ref = dense_layer_stats(model, calib, frozenset({"H"}), batch_size=4)
    reader = StreamedModel(d, torch.float32, tokenizer=False, load_head=False)
    got = dense_layer_stats(reader.model, calib, frozenset({"H"}), batch_size=4, block_io=reader)
    assert list(got) == list(ref)
    for name in ref:
        torch.testing.assert_close(got[name].sq_norm, ref[name].sq_norm, rtol=1e-12, atol=0)
        torch.testing.assert_close(got[name].H, ref[name].H, rtol=1e-12, atol=0)
    assert all(p.device.type == "meta" for p in reader.blocks.parameters())  # every block freed again
    norms = collect_input_norms(reader.model, calib, batch_size=4, block_io=reader)
    assert all(torch.equal(norms[n], ref[n].sq_norm) for n in ref)


@pytest.mark.parametrize("granularity", ["block", "matrix"])
def test_streamed_owl_ratios_equal_all_weights_at_once(ckpt, calib, granularity):
    from pruning.allocation import owl_outlier_ratios
    from pruning.blocks import block_linears

    model, d = ckpt
    s = PruneSettings.from_flat(allocation="owl", sparsity=0.5, granularity=granularity, batch_size=4)
    norms = collect_input_norms(model, calib, batch_size=4)
    weights = {lin.longname: lin.get() for blk in block_linears(model) for lin in blk}
    ref = owl_outlier_ratios(weights, norms, s.allocation.owl_M, granularity=granularity)  # the one-call form
    assert owl_ratios(model, s, calib) == ref
    assert owl_ratios(model, s, input_norms=norms) == ref
    reader = StreamedModel(d, torch.float32, tokenizer=False, load_head=False)
    assert owl_ratios(reader.model, s, calib, block_io=reader) == ref
    assert len(set(ref.values())) > 1  # the ratios differ between blocks (the comparison is not vacuous)


def test_streamed_owl_prune_equals_in_memory(ckpt, tmp_path, calib):
    model, d = ckpt
    s = PruneSettings.from_flat(pruner="wanda", allocation="owl", sparsity=0.5, owl_lambda=0.2, batch_size=4)
    ref = prune_model(model, None, s, progress=False, calib=calib)
    reader = StreamedModel(d, torch.float32, tokenizer=False, load_head=False)
    ratios = owl_ratios(reader.model, s, calib, block_io=reader)
    out = tmp_path / "out"
    sm = StreamedModel(d, torch.float32, ShardWriter(out, max_bytes=60_000), tokenizer=False, load_head=False)
    res = prune_model(sm.model, None, s, progress=False, calib=calib, block_io=sm, signal=ratios)
    write_streamed_output(sm, out)
    got, want = _state(out), model.state_dict()
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)
    targets = ref.layers.groupby("block")["target"].mean()
    assert targets.max() - targets.min() > 0.01  # OWL really gave the blocks different sparsities
    assert res.layers["target"].tolist() == ref.layers["target"].tolist()


def test_tune_on_a_streamed_checkpoint_equals_in_memory(tmp_path, monkeypatch):
    """``tune`` on a streamed model (statistics, OWL's ratios and every candidate read one block at a time, each
    candidate pruned as its blocks are read) scores what the in-memory search scores; the shards are never
    written and the in-memory model is left dense."""
    from types import SimpleNamespace

    import transformers as tf

    from pruning.blocks import block_linears
    from pruning.settings import CalibrationSettings
    from pruning.tune import TuneSettings, tune
    from spectra.models import builtin_model_dir

    tok = tf.AutoTokenizer.from_pretrained(str(builtin_model_dir()))  # the shared cache: converted once
    monkeypatch.setenv("SPL_CACHE_DIR", str(tmp_path / "cache"))  # this test's statistics
    torch.manual_seed(0)
    cfg = tf.LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)
    model = tf.AutoModelForCausalLM.from_config(cfg).eval()
    d = tmp_path / "ckpt"
    model.save_pretrained(d, safe_serialization=True, max_shard_size="2MB")
    tok.save_pretrained(d)
    stamps = {p: p.stat().st_mtime_ns for p in d.glob("*.safetensors")}
    assert len(stamps) > 1
    s = TuneSettings(allocation="owl", pruner="wanda", sparsity=0.6, lams=[0.05, 0.2], owl_Ms=[3.0, 5.0],
                     calib=CalibrationSettings(nsamples=2, seqlen=32), eval_seqlen=32, eval_windows=2)
    dense = {lin.longname: lin.get() for blk in block_linears(model) for lin in blk}
    mem = tune(SimpleNamespace(model=model, tokenizer=tok), s, None, log=lambda m: None)
    reader = StreamedModel(d, torch.float32)
    streamed = tune(reader, s, str(tmp_path / "t.json"), log=lambda m: None, block_io=reader)
    assert [(r["lam"], r["owl_M"]) for r in streamed["rows"]] == [(r["lam"], r["owl_M"]) for r in mem["rows"]]
    for a, b in zip([mem["dense"], mem["uniform"], *mem["rows"]],
                    [streamed["dense"], streamed["uniform"], *streamed["rows"]]):
        assert b["ppl"] == pytest.approx(a["ppl"], rel=1e-5)
    assert len({round(r["ppl"], 6) for r in mem["rows"]}) > 1  # the candidates differ (not vacuous)
    assert mem["uniform"]["ppl"] != pytest.approx(mem["dense"]["ppl"], rel=1e-4)  # the candidates were pruned
    assert streamed["best"]["lam"] == mem["best"]["lam"] and streamed["best"]["owl_M"] == mem["best"]["owl_M"]
    assert all(p.device.type == "meta" for p in reader.blocks.parameters())  # every block freed
    assert {p: p.stat().st_mtime_ns for p in d.glob("*.safetensors")} == stamps  # nothing written
    assert all(torch.equal(w, lin.get()) for blk in block_linears(model) for lin in blk for w in [dense[lin.longname]])
