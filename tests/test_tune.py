"""Dense calibration statistics (cache, one-shot pruning) and the λ search on held-out text (pruning.tune). What is
checked holds for any weights: random Llamas (tests/test_block_loop.py's, and tests/conftest.py's 2-block ``tiny_dir``
opened as a model), so that every tune and sequential prune costs a second, not half a minute."""
import copy
import json

import pytest
import torch
from test_block_loop import VOCAB, tiny
from tiny_models import save_deeper

from pruning.block_loop import dense_layer_stats, prune_blocks
from pruning.blocks import block_linears
from pruning.calib_stats import DenseStats, DenseWeights, dense_stats, prune_from_stats, stats_key
from pruning.settings import CalibrationSettings
from pruning.tune import TuneSettings, golden_points, tune


@pytest.fixture(scope="module")
def tiny_lm(tiny_dir):
    """The 2-block random Llama of tests/conftest.py as a LoadedModel (every test leaves it dense)."""
    from spectra.models import load_model

    return load_model(str(tiny_dir))


@pytest.fixture(scope="module")
def tiny4_lm(tiny_lm, tiny_dir, tmp_path_factory):
    """A 4-block random Llama as a LoadedModel: OWL's allocation scales the min-max normalised outlier ratios of the
    blocks, so with two blocks M could not change it. It takes ``tiny_lm``'s tokenizer (the same one, saved with it),
    whose tokenised held-out and calibration text is cached for this process."""
    from spectra.models import load_model

    lm = load_model(str(save_deeper(tiny_dir, 4, tmp_path_factory.mktemp("tiny4") / "tiny-llama-4")))
    lm.tokenizer = tiny_lm.tokenizer
    return lm


@pytest.fixture(scope="module")
def calib():
    return torch.randint(0, VOCAB, (6, 32), generator=torch.Generator().manual_seed(3))


def _weights(model):
    return {l.longname: l.get() for b in block_linears(model) for l in b}


@pytest.mark.parametrize("pruner,needs", [("wanda", frozenset()), ("sparsegpt", frozenset({"H"}))])
def test_one_shot_from_dense_statistics_equals_the_loop_in_none_mode(calib, pruner, needs):
    """Pruning from the cached dense statistics is the sequential loop's ``none`` mode without the forwards."""
    dense = tiny("llama", seed=4)
    loop = copy.deepcopy(dense)
    prune_blocks(loop, calib, 0.6, pruner, correction="none", batch_size=4, progress=False)
    one = copy.deepcopy(dense)
    stats = DenseStats(CalibrationSettings(), "x", dense_layer_stats(dense, calib, needs, batch_size=4))
    prune_from_stats(one, stats, 0.6, pruner)
    for (n, a), b in zip(_weights(loop).items(), _weights(one).values()):
        assert torch.equal(a == 0, b == 0), n
        assert torch.allclose(a, b, atol=1e-6), n
    # and it differs from the reference (sequential) loop, where later blocks see pruned inputs
    seq = copy.deepcopy(dense)
    prune_blocks(seq, calib, 0.6, pruner, batch_size=4, progress=False)
    later = [n for n in _weights(seq) if ".layers.0." not in n]
    assert any(not torch.equal(_weights(seq)[n] == 0, _weights(one)[n] == 0) for n in later)


def test_one_shot_errors_and_dense_weights_restore(calib):
    m = tiny("llama", seed=5)
    before = _weights(m)
    snap = DenseWeights(m)
    stats = DenseStats(CalibrationSettings(), "x", dense_layer_stats(m, calib, frozenset(), batch_size=4))
    with pytest.raises(ValueError, match="Hessians"):
        prune_from_stats(m, stats, 0.5, "sparsegpt")
    with pytest.raises(ValueError, match="cannot prune from dense statistics"):
        prune_from_stats(m, stats, 0.5, "fista")
    prune_from_stats(m, stats, 0.5, "wanda")
    assert any(not torch.equal(before[n], w) for n, w in _weights(m).items())
    snap.restore()
    assert all(torch.equal(before[n], w) for n, w in _weights(m).items())


def test_statistics_cache_round_trip(tiny_lm, tmp_path, monkeypatch):
    monkeypatch.setenv("SPL_CACHE_DIR", str(tmp_path))
    s = CalibrationSettings(nsamples=2, seqlen=32)
    # the cache key is the one of the files written before the settings were unified (they stay valid)
    assert stats_key(s, True) == {"nsamples": 2, "seqlen": 32, "seed": 0, "dataset": "c4", "hessians": True,
                                  "batch_size": 8}
    first = dense_stats(tiny_lm.model, tiny_lm.tokenizer, s, hessians=True)
    files = list((tmp_path / "calib_stats").glob("*.safetensors"))
    assert len(files) == 1
    again = dense_stats(tiny_lm.model, tiny_lm.tokenizer, CalibrationSettings(nsamples=2, seqlen=32))  # no H asked: hit
    assert list((tmp_path / "calib_stats").glob("*.safetensors")) == files
    for name, st in first.layers.items():
        assert torch.equal(st.sq_norm, again.layers[name].sq_norm) and torch.equal(st.H, again.layers[name].H)
    q, k = "model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.k_proj"
    assert again.layers[q] is again.layers[k]  # one record per input group
    files[0].write_bytes(b"not a safetensors file")  # corrupt: recomputed, never trusted
    fresh = dense_stats(tiny_lm.model, tiny_lm.tokenizer, s, hessians=True)
    assert torch.equal(fresh.layers[q].H, first.layers[q].H)


def test_golden_section_finds_the_minimum_of_a_unimodal_function():
    calls = []

    def f(x):
        calls.append(x)
        return (x - 0.37) ** 2

    best = golden_points(0.0, 1.0, f, 12)
    assert len(calls) == 12 and abs(best - 0.37) < 0.01


def test_tune_scores_held_out_text_resumes_and_refuses_the_test_set(tiny_lm, tmp_path, monkeypatch):
    import pruning.tune as tune_mod

    monkeypatch.setenv("SPL_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(ValueError, match="never tune on the test set"):
        TuneSettings(eval_dataset="wikitext2").validate()
    with pytest.raises(ValueError, match="nothing to tune"):
        TuneSettings(allocation="uniform").validate()
    s = TuneSettings(pruner="wanda", sparsity=0.6, lams=[0.0, 0.25], calib=CalibrationSettings(nsamples=2, seqlen=64),
                     eval_seqlen=64, eval_windows=2)
    out = tmp_path / "tune.json"
    res = tune(tiny_lm, s, str(out), log=lambda m: None)
    assert [r["lam"] for r in res["rows"]] == [0.0, 0.25]
    assert res["rows"][0]["ppl"] == pytest.approx(res["uniform"]["ppl"], rel=1e-12)  # λ = 0 is uniform
    assert res["best"]["ppl"] == min(r["ppl"] for r in res["rows"])
    on_disk = json.loads(out.read_text())
    assert on_disk["mode"] == "one-shot (dense statistics)" and on_disk["settings"]["eval_dataset"] == "c4"
    assert "torch" in on_disk["versions"]
    # the model is dense again afterwards
    snap = DenseWeights(tiny_lm.model)
    assert all(float((w == 0).float().mean()) < 0.05 for w in snap.saved.values())
    # resume: the scored λ values are not pruned again, a new one is
    calls = []
    real = tune_mod.prune_from_stats
    monkeypatch.setattr(tune_mod, "prune_from_stats", lambda *a, **k: calls.append(a[2]) or real(*a, **k))
    s.lams = [0.0, 0.25, 0.5]
    res2 = tune(tiny_lm, s, str(out), log=lambda m: None)
    assert [r["lam"] for r in res2["rows"]] == [0.0, 0.25, 0.5]
    assert len(calls) == 2  # the uniform reference and λ = 0.5 only


def test_tune_owl_scores_the_owl_allocation_of_the_dense_weights(tiny4_lm, tmp_path, monkeypatch):
    """OWL's (λ, M) search: every candidate prunes with ``allocate(..., "owl")`` on the outlier ratios of the *dense*
    weights and the dense statistics; the ratios are computed once per M, not once per candidate."""
    import pruning.allocation.methods.owl as owl_method
    import pruning.tune as tune_mod
    from pruning.allocation import allocate, owl_outlier_ratios
    from spectra.weights import weight_table

    monkeypatch.setenv("SPL_CACHE_DIR", str(tmp_path / "cache"))
    s = TuneSettings(allocation="owl", pruner="wanda", sparsity=0.6, lams=[0.05, 0.1], owl_Ms=[3.0, 5.0],
                     calib=CalibrationSettings(nsamples=2, seqlen=64), eval_seqlen=64, eval_windows=2)
    ratio_calls, pruned_with = [], []
    monkeypatch.setattr(owl_method, "owl_outlier_ratios",
                        lambda *a, **k: ratio_calls.append(a[2]) or owl_outlier_ratios(*a, **k))
    real = tune_mod.prune_from_stats
    monkeypatch.setattr(tune_mod, "prune_from_stats", lambda *a, **k: pruned_with.append(a[2]) or real(*a, **k))
    res = tune(tiny4_lm, s, None, log=lambda m: None)
    assert ratio_calls == [3.0, 5.0]
    assert [(r["lam"], r["owl_M"]) for r in res["rows"]] == [(0.05, 3.0), (0.1, 3.0), (0.05, 5.0), (0.1, 5.0)]
    assert pruned_with[0] == 0.6  # the uniform reference first
    stats = dense_stats(tiny4_lm.model, tiny4_lm.tokenizer, s.calib)  # from the cache tune wrote
    norms = {name: st.sq_norm for name, st in stats.layers.items()}
    dense = _weights(tiny4_lm.model)  # tune leaves the model dense
    table = weight_table(tiny4_lm.model)
    table = table[table["block"] >= 0].reset_index(drop=True)
    for (lam, M), used in zip([(0.05, 3.0), (0.1, 3.0), (0.05, 5.0), (0.1, 5.0)], pruned_with[1:]):
        ref = allocate(table, "owl", 0.6, outlier_ratios=owl_outlier_ratios(dense, norms, M), owl_lambda=lam,
                       owl_M=M, max_sparsity=s.max_sparsity)
        assert used == dict(zip(ref["longname"], ref["sparsity"].astype(float)))
    assert len(set(map(lambda d: tuple(sorted(d.items())), pruned_with[1:]))) == 4  # λ and M both matter


def test_final_prune_scores_chosen_and_uniform_sequentially_and_restores_the_model(tiny_lm, tmp_path, monkeypatch):
    from pruning.tune import final_prune

    monkeypatch.setenv("SPL_CACHE_DIR", str(tmp_path / "cache"))
    s = TuneSettings(pruner="wanda", sparsity=0.6, lams=[0.0], calib=CalibrationSettings(nsamples=2, seqlen=64),
                     eval_seqlen=64, eval_windows=2)
    before = {n: w.clone() for n, w in DenseWeights(tiny_lm.model).saved.items()}
    one_shot = tune(tiny_lm, s, None, log=lambda m: None)
    out = final_prune(tiny_lm, s, one_shot["best"], test_seqlen=64, test_windows=2, log=lambda m: None)
    chosen, uniform = out["chosen"], out["uniform"]
    assert chosen["settings"]["allocation"] == "alphapruning" and uniform["settings"]["allocation"] == "uniform"
    assert chosen["achieved_sparsity"] == pytest.approx(0.6, abs=1e-3)
    # λ = 0 is uniform: the two sequential prunes are the same model
    assert chosen["val_ppl"] == pytest.approx(uniform["val_ppl"], rel=1e-9)
    assert chosen["test_ppl"] == pytest.approx(uniform["test_ppl"], rel=1e-9)
    # the sequential loop (later blocks calibrated on pruned inputs) is not the one-shot prune
    assert chosen["val_ppl"] != pytest.approx(one_shot["best"]["ppl"], rel=1e-6)
    after = DenseWeights(tiny_lm.model).saved
    assert all(torch.equal(before[n], w) for n, w in after.items())  # dense again
