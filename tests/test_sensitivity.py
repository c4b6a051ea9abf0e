"""Which blocks matter (pruning.sensitivity, pruning.signals): the walk against full evaluations, the candidates'
footprint, the verdict against scipy and brute force, the allocation from the measurement, the command line. The walk's
equalities hold for any weights: they run on the 2-block random Llama (tests/conftest.py ``tiny_dir``), where a
candidate's cost (about 0.01 nats per block at S = 0.7) is far above the tolerances, and every row is checked."""
import itertools
import math

import numpy as np
import pandas as pd
import pytest
import torch

import pruning.sensitivity as sens_mod
from pruning.blocks import block_linears
from pruning.calib_stats import DenseWeights, dense_stats, prune_from_stats
from pruning.evaluation.perplexity import perplexity
from pruning.sensitivity import SensitivitySettings, measure, prune_linears, read_table
from pruning.settings import CalibrationSettings
from pruning.signals import sensitivity_allocation, verdict

CAL = CalibrationSettings(nsamples=2, seqlen=32)


def _settings(**kw):
    base = dict(pruner="wanda", sparsity=0.7, calib=CAL, eval_seqlen=32, eval_windows=2, block_batch=1,
                permutations=200)
    return SensitivitySettings(**{**base, **kw})


def _held_out_nll(lm, s):
    return perplexity(lm.model, lm.tokenizer, s.eval_dataset, seqlen=s.eval_seqlen, max_windows=s.eval_windows,
                      progress=False).nll


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPL_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    """The 2-block random Llama as a LoadedModel (every test leaves it dense)."""
    from spectra.models import load_model

    return load_model(str(tiny_dir))


def test_alone_rows_equal_full_evaluations_and_only_the_candidate_block_changes(tiny, tmp_path, monkeypatch):
    model = tiny.model
    dense = DenseWeights(model)
    per_block = block_linears(model)
    changed: list[set] = []
    real = sens_mod._Walk.from_block

    def spy(self, b):
        now = {lin.longname: lin.module.weight.detach() for blk in per_block for lin in blk}
        changed.append({lin.block for blk in per_block for lin in blk
                        if not torch.equal(now[lin.longname], dense.saved[lin.longname])})
        return real(self, b)

    monkeypatch.setattr(sens_mod._Walk, "from_block", spy)
    s = _settings()
    df = measure(tiny, s, tmp_path / "a.parquet", log=lambda m: None, progress=False, with_signals=False)
    L = len(per_block)
    assert changed == [{b} for b in range(L)]  # candidate b: block b pruned, every other block dense
    assert all(torch.equal(lin.module.weight, dense.saved[lin.longname]) for lin in dense.linears)  # restored
    ref = df.attrs["sensitivity"]["reference_nll"]
    assert ref == pytest.approx(_held_out_nll(tiny, s), abs=1e-9)  # the walk's reference is the dense model
    assert np.abs(df["delta_nll"].to_numpy()).min() > 1e-3  # every cost far above the tolerances below
    stats = dense_stats(model, tiny.tokenizer, CAL)
    for b in range(L):  # a row's NLL is the full evaluation of the model with only that block pruned
        prune_linears(per_block[b], stats, 0.7, "wanda")
        full = _held_out_nll(tiny, s)
        dense.restore()
        row = df[df["block"] == b].iloc[0]
        assert row["nll"] == pytest.approx(full, abs=1e-6)
        assert row["delta_nll"] == pytest.approx(full - ref, abs=1e-6) and row["ppl"] == pytest.approx(math.exp(full))
    on_disk = read_table(tmp_path / "a.parquet")
    assert on_disk["delta_nll"].tolist() == pytest.approx(df["delta_nll"].tolist())
    meta = on_disk.attrs["sensitivity"]
    assert meta["key"]["eval_dataset"] == "c4" and "torch" in meta["versions"]


def test_sparsity_zero_costs_nothing_and_resume_keeps_rows(tiny, tmp_path, monkeypatch):
    out = tmp_path / "z.parquet"
    df = measure(tiny, _settings(sparsity=0.0), out, log=lambda m: None, progress=False, with_signals=False)
    assert np.abs(df["delta_nll"].to_numpy()).max() < 1e-9
    calls = []
    real = sens_mod.prune_linears
    monkeypatch.setattr(sens_mod, "prune_linears", lambda *a, **k: calls.append(a) or real(*a, **k))
    again = measure(tiny, _settings(sparsity=0.0), out, log=lambda m: None, progress=False, with_signals=False)
    assert calls == [] and again["nll"].tolist() == df["nll"].tolist()
    with pytest.raises(ValueError, match="other settings"):
        measure(tiny, _settings(sparsity=0.5), out, log=lambda m: None, progress=False, with_signals=False)


def test_marginal_reference_is_the_all_at_s_model(tiny, tmp_path):
    # one held-out window of 16 tokens: every candidate is a walk from its block on, and the equalities below hold
    # window by window
    s = _settings(mode="marginal", delta=0.1, granularity="matrix", eval_seqlen=16, eval_windows=1)
    df = measure(tiny, s, None, log=lambda m: None, progress=False, with_signals=False)
    model = tiny.model
    dense = DenseWeights(model)
    stats = dense_stats(model, tiny.tokenizer, CAL)
    prune_from_stats(model, stats, 0.7, "wanda")
    all_at_s = _held_out_nll(tiny, s)
    steps = {}
    for lin in (lin for blk in block_linears(model) for lin in blk):  # each matrix at S + δ over the all-at-S model
        at_s = lin.get()
        prune_linears([lin], stats, 0.8, "wanda", dense.saved)
        steps[lin.longname] = _held_out_nll(tiny, s) - all_at_s  # evaluated in full
        lin.set(at_s)
    dense.restore()
    assert df.attrs["sensitivity"]["reference_nll"] == pytest.approx(all_at_s, abs=1e-9)
    assert len(df) == sum(len(b) for b in block_linears(model)) == len(steps)
    assert df["target"].tolist() == pytest.approx([0.8] * len(df))
    got = df.set_index("unit")["delta_nll"]
    assert max(map(abs, steps.values())) > 1e-3  # some steps cost far more than the tolerance
    assert {u: got[u] for u in steps} == pytest.approx(steps, abs=1e-6)


def test_verdict_matches_scipy_and_an_exact_permutation_test():
    from scipy.stats import kendalltau, spearmanr

    rng = np.random.default_rng(1)
    df = pd.DataFrame({"block": range(12), "delta_nll": rng.random(12), "alpha": rng.random(12),
                       "depth": np.arange(12), "outlier_ratio": rng.random(12)})
    df["alpha"] = df["alpha"] - 0.8 * df["delta_nll"]
    v = verdict(df, permutations=2000, seed=0).set_index("signal")
    for sig in ("alpha", "depth", "outlier_ratio"):
        assert v.loc[sig, "rho"] == pytest.approx(spearmanr(df[sig], df["delta_nll"])[0], abs=1e-12)
        assert v.loc[sig, "tau"] == pytest.approx(kendalltau(df[sig], df["delta_nll"])[0], abs=1e-12)
    assert v.loc["alpha", "assumed_sign"] == -1 and v.loc["outlier_ratio", "assumed_sign"] == 1
    assert bool(v.loc["alpha", "agrees"]) == (v.loc["alpha", "rho"] < 0)
    # n = 6: the exact two-sided p-value over all 720 orders, against the seeded Monte Carlo one
    small = pd.DataFrame({"delta_nll": [0.3, 0.1, 0.5, 0.2, 0.9, 0.4], "alpha": [1.0, 2.5, 0.5, 3.0, 0.2, 1.5]})
    rho = spearmanr(small["alpha"], small["delta_nll"])[0]
    exact = np.mean([abs(spearmanr(small["alpha"], np.array(p))[0]) >= abs(rho) - 1e-12
                     for p in itertools.permutations(small["delta_nll"])])
    p = verdict(small, permutations=20000, seed=3).set_index("signal").loc["alpha", "p_perm"]
    assert p == pytest.approx(exact, abs=0.01)
    assert verdict(small, permutations=500, seed=3).equals(verdict(small, permutations=500, seed=3))  # seeded


def test_sensitivity_allocation_gives_cheaper_blocks_more_sparsity():
    rows = []
    for b in range(4):
        for role, n in (("q", 100), ("up", 300)):
            rows.append({"longname": f"model.layers.{b}.{role}", "block": b, "role": role, "num_params": n})
    metrics = pd.DataFrame(rows)
    sens = pd.DataFrame({"block": range(4), "longname": [""] * 4, "delta_nll": [0.4, 0.1, 0.2, 0.05]})
    a = sensitivity_allocation(metrics, sens, 0.6, lam=0.2)
    per_block = a.groupby("block")["sparsity"].first()
    assert list(per_block.sort_values().index) == [0, 2, 1, 3]  # highest cost → least sparsity
    assert np.average(a["sparsity"], weights=a["num_params"]) == pytest.approx(0.6)
    # AlphaPruning's linear map of −Δ onto [1 − λ, 1 + λ], scaled to the mean S
    d = np.array([0.4, 0.1, 0.2, 0.05])
    r = 1 - 0.2 + 0.4 * (d.max() - d) / (d.max() - d.min())
    assert per_block.to_numpy() == pytest.approx(r * 0.6 / r.mean())
    assert a.attrs["allocation"]["method"] == "sensitivity" and "data-driven" in a.attrs["allocation"]["label"]
    with pytest.raises(ValueError, match="unfinished"):
        sensitivity_allocation(metrics, sens.assign(delta_nll=np.nan), 0.6)


def test_cli_errors_are_one_line(tmp_path, capsys):
    from pruning.__main__ import main

    assert main(["sensitivity", "--tune-dataset", "wikitext2", "--out", str(tmp_path / "s.parquet")]) == 2
    assert "never measure on the test set" in capsys.readouterr().err
    assert main(["sensitivity", "--mode", "marginal", "--delta", "0.4", "--out", str(tmp_path / "s.parquet")]) == 2
    assert "must stay below 1" in capsys.readouterr().err
    assert main(["sensitivity", "--out", str(tmp_path / "s.csv")]) == 2
    assert "parquet" in capsys.readouterr().err


def test_prune_reads_the_measured_table_through_the_registry(builtin, tmp_path):
    from pruning.allocation import ALLOCATION_METHODS
    from pruning.prune import compute_allocation
    from pruning.sensitivity import write_table
    from pruning.settings import PruneSettings
    from spectra.weights import weight_table

    assert "sensitivity" in ALLOCATION_METHODS
    L = len(block_linears(builtin.model))
    sens = pd.DataFrame({"unit": [f"block {b}" for b in range(L)], "block": range(L), "longname": [""] * L,
                         "delta_nll": np.random.default_rng(0).random(L)})
    path = tmp_path / "sens.parquet"
    write_table(sens, path, {"key": {}})
    ps = PruneSettings().replace(allocation="sensitivity", allocation_file=str(path), sparsity=0.7, lam=0.25)
    got = compute_allocation(builtin.model, ps)
    table = weight_table(builtin.model)
    want = sensitivity_allocation(table[table["block"] >= 0], sens, 0.7, lam=0.25)
    assert got["sparsity"].tolist() == pytest.approx(want["sparsity"].tolist(), abs=1e-12)
    with pytest.raises(ValueError, match="allocation-file"):
        compute_allocation(builtin.model, PruneSettings().replace(allocation="sensitivity", sparsity=0.7))


def test_attach_signals_replaces_columns_and_recomputes_the_verdict():
    from scipy.stats import spearmanr

    from pruning.signals import attach_signals

    rng = np.random.default_rng(2)
    sens = pd.DataFrame({"unit": [f"block {b}" for b in range(8)], "block": range(8), "longname": [""] * 8,
                         "delta_nll": rng.random(8), "depth": range(8), "alpha": np.zeros(8)})
    sig = pd.DataFrame({"block": range(8), "alpha": rng.random(8), "alpha_farms": rng.random(8),
                        "depth": range(8)})
    out = attach_signals(sens, sig, permutations=200, seed=0)
    assert out["alpha"].tolist() == sig["alpha"].tolist() and "alpha_farms" in out.columns
    v = {r["signal"]: r for r in out.attrs["sensitivity"]["verdict"]}
    assert v["alpha_farms"]["rho"] == pytest.approx(spearmanr(sig["alpha_farms"], sens["delta_nll"])[0])
    assert v["alpha_farms"]["assumed_sign"] == -1
