"""spectra.analyze on the built-in model and on tiny models: table contract, independent norms, routes, cache,
save/load, aggregation and bad input."""
from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
import torch

import spectra.results as results
from spectra.analyze import (
    IDENTITY_COLUMNS,
    AnalysisSettings,
    analyze,
    block_aggregate,
    block_values,
    matrix_esd,
    role_summary,
)
from spectra.errors import ModelLoadError, SpectraError
from spectra.metrics import METRIC_COLUMNS
from spectra.results import load_results, save_results

ROLES = ["q", "k", "v", "o", "gate", "up", "down"]
SHAPES = {"q": (576, 576), "k": (192, 576), "v": (192, 576), "o": (576, 576), "gate": (1536, 576),
          "up": (1536, 576), "down": (576, 1536)}


class Blocks(torch.nn.Module):
    """A model holding only some decoder blocks, named like the full model (``model.layers.{i}``)."""

    def __init__(self, layers):
        super().__init__()
        self.model = torch.nn.Module()
        self.model.layers = torch.nn.ModuleList(layers)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Keep the analysis cache of these tests in a temporary directory (the model cache stays where it is)."""
    d = tmp_path / "spectra-cache"
    d.mkdir()
    monkeypatch.setattr(results, "_spectra_cache_dir", lambda: d)
    return d


@pytest.fixture(scope="module")
def stream_df():
    return analyze(None, keep_eigs=True, progress=False, cache=False)


def tiny_llama(kv_heads=2, heads=4, hidden=32, seed=0):
    from transformers import AutoModelForCausalLM, LlamaConfig

    cfg = LlamaConfig(vocab_size=64, num_hidden_layers=2, hidden_size=hidden, num_attention_heads=heads,
                      num_key_value_heads=kv_heads, intermediate_size=64)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(cfg).eval()


# ----------------------------------------------------------------------------------------------- built-in model
def test_builtin_table_contract(stream_df):
    df = stream_df
    assert list(df.columns) == IDENTITY_COLUMNS + METRIC_COLUMNS + ["evals"]
    assert len(df) == 210 and df["layer_id"].tolist() == list(range(210))
    assert df["block"].tolist() == [b for b in range(30) for _ in ROLES]
    assert df["role"].tolist() == ROLES * 30
    for r in df.itertuples():
        assert (r.rows, r.cols) == SHAPES[r.role]
        assert r.N == max(r.rows, r.cols) and r.M == min(r.rows, r.cols) == r.num_evals == len(r.evals)
        assert r.num_params == r.rows * r.cols and r.param == r.longname + ".weight"
        assert r.longname == f"model.layers.{r.block}." + ("self_attn." if r.role in "qkvo" else "mlp.") + \
            {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj", "gate": "gate_proj", "up": "up_proj",
             "down": "down_proj"}[r.role]
    assert (df["status"] != "failed").all() and (df["xmin_rule"] == "peak").all()
    assert set(df["status"]) <= {"ok", "over-trained", "under-trained"}
    assert ((df["alpha"] < 2) == (df["status"] == "over-trained")).all()
    assert ((df["alpha"] > 6) == (df["status"] == "under-trained")).all()
    assert ((df["xmin"] <= df["xmax"]) & (df["num_pl_spikes"] == [np.sum(e >= x) for e, x in
                                                                    zip(df["evals"], df["xmin"])])).all()
    meta = df.attrs["metadata"]
    assert meta["model"] == "builtin:smollm2" and meta["route"] == "safetensors-stream"
    assert len(meta["weights_sha256"]) == 64 and meta["dtype"] == "float32" and meta["xmin_rule"] == "peak"
    assert meta["settings"]["evals_thresh"] == 1e-5 and {"torch", "numpy", "transformers", "spectra"} <= set(
        meta["versions"])


def test_builtin_norms_and_esd_independent(stream_df, builtin):
    """stable_rank = ‖W‖F²/‖W‖₂² and the ESD = svdvals², from torch.linalg on the in-memory weights (every 16th
    matrix: all 7 roles, 14 blocks)."""
    from spectra.weights import iter_model_weights

    mats = list(iter_model_weights(builtin.model))
    for i in range(0, 210, 16):
        info, W = mats[i]
        row = stream_df.iloc[i]
        assert row["longname"] == info.longname
        Wd = W.double()
        fro2 = torch.linalg.matrix_norm(Wd, "fro").item() ** 2
        two2 = torch.linalg.matrix_norm(Wd, 2).item() ** 2
        assert row["stable_rank"] == pytest.approx(fro2 / two2, rel=1e-9)
        assert row["norm"] == pytest.approx(fro2, rel=1e-9) and row["lambda_max"] == pytest.approx(two2, rel=1e-9)
        sv2 = np.sort(torch.linalg.svdvals(Wd).numpy() ** 2)
        np.testing.assert_allclose(row["evals"], sv2, rtol=1e-9, atol=1e-12 * sv2[-1])


def test_streaming_in_memory_and_gguf_routes_give_the_same_eigenvalues(stream_df, builtin):
    # in-memory route (first 3 blocks of the loaded model): bit-identical eigenvalues
    sub = Blocks(list(builtin.model.model.layers[:3]))
    mem = analyze(sub, keep_eigs=True, progress=False, cache=False)
    assert mem.attrs["metadata"]["route"] == "in-memory" and len(mem) == 21
    for a, b in zip(mem.itertuples(), stream_df.head(21).itertuples()):
        assert a.longname == b.longname and np.array_equal(a.evals, b.evals) and a.alpha == b.alpha
    # a LoadedModel is analysed in memory too (its weights may have been modified)
    from spectra.models import LoadedModel, ModelSource

    lm = LoadedModel(model=sub, tokenizer=None, source=ModelSource("builtin", "smollm2", builtin="smollm2"))
    via_lm = analyze(lm, progress=False, cache=False, keep_eigs=True)
    assert via_lm.attrs["metadata"]["model"] == "builtin:smollm2 (in memory)"
    assert all(np.array_equal(a, b) for a, b in zip(via_lm["evals"], mem["evals"]))
    # GGUF route: dequantize matrices straight from the GGUF file with the gguf package (independent of the
    # transformers conversion; q/k rows are permuted in GGUF, which leaves the singular values unchanged)
    gguf = pytest.importorskip("gguf")
    from gguf import quants

    from spectra.models import builtin_gguf_path

    names = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "ffn_down": "mlp.down_proj"}
    reader = gguf.GGUFReader(str(builtin_gguf_path()))
    checked = 0
    for t in reader.tensors:
        parts = t.name.split(".")
        if len(parts) == 4 and parts[0] == "blk" and parts[1] in ("0", "17") and parts[2] in names:
            W = quants.dequantize(t.data, t.tensor_type)
            ev_gguf = np.sort(np.linalg.svd(W.astype(np.float64), compute_uv=False) ** 2)
            row = stream_df.set_index("longname").loc[f"model.layers.{parts[1]}.{names[parts[2]]}"]
            np.testing.assert_allclose(row["evals"], ev_gguf, rtol=1e-9, atol=1e-12 * ev_gguf[-1])
            checked += 1
    assert checked == 6


def test_first_analysis_of_a_gguf_reads_it_while_it_converts(stream_df, tmp_path, monkeypatch):
    """Into an empty cache the built-in GGUF is analysed while it is being converted (block 0's matrices
    dequantized first, rows reported in order): the table of the converted files bit for bit; the conversion is
    written once and the analysis cached under the files' sha256."""
    from pathlib import Path

    from spectra import models

    monkeypatch.setenv("SPL_CACHE_DIR", str(tmp_path))
    assert not list(tmp_path.rglob("*.safetensors"))  # nothing converted yet
    rows = []
    df = analyze(None, keep_eigs=True, progress=False, workers=2, on_row=lambda r: rows.append(r["longname"]))
    assert rows == stream_df["longname"].tolist()
    cols = [c for c in stream_df.columns if c != "evals"]
    pd.testing.assert_frame_equal(df[cols], stream_df[cols])
    assert all(np.array_equal(a, b) for a, b in zip(df["evals"], stream_df["evals"]))
    meta = df.attrs["metadata"]
    assert meta["weights_sha256"] == stream_df.attrs["metadata"]["weights_sha256"]
    assert meta["route"] == "safetensors-stream" and Path(meta["weights_dir"]) == models.weights_dir(None)
    assert Path(meta["weights_dir"]).is_relative_to(tmp_path) and models.start_conversion(None) is None
    assert analyze(None, progress=False).attrs["metadata"]["from_cache"]


def test_matrix_esd_matches_analysis(stream_df, private_cache):
    ref = stream_df.set_index("longname").loc["model.layers.2.mlp.up_proj", "evals"]
    ev = matrix_esd(None, "model.layers.2.mlp.up_proj")  # nothing cached: streamed and decomposed
    assert np.array_equal(ev, ref)
    # served from a cached analysis of the same weights: plant a marker to see that the cache is what answers
    df = stream_df.copy()
    df.attrs["metadata"] = stream_df.attrs["metadata"]
    marked = df["evals"].tolist()
    marked[19] = ref * 2.0  # row 19 = model.layers.2.mlp.up_proj
    df["evals"] = marked
    results.cache_store(df, df.attrs["metadata"]["weights_sha256"], {"any": "settings"})
    assert np.array_equal(matrix_esd(None, "model.layers.2.mlp.up_proj"), ref * 2.0)
    assert np.array_equal(matrix_esd(None, "model.layers.2.mlp.up_proj", normalize=True), ref / 1536)
    with pytest.raises(SpectraError, match="no weight matrix named"):
        matrix_esd(None, "model.layers.2.mlp.nope")


def test_block_aggregate_and_role_summary(stream_df):
    df = stream_df.drop(columns="evals").copy()
    df.loc[3, "alpha"] = np.nan  # a failed matrix is left out of its block's mean
    plain = block_aggregate(df, "alpha")
    assert len(plain) == 30 and plain["block"].tolist() == list(range(30))
    g = df.groupby("block")
    np.testing.assert_allclose(plain["alpha"], g["alpha"].mean(), rtol=1e-14)  # pandas skips NaN
    assert plain.loc[0, "n_matrices"] == 6 and plain.loc[0, "n_failed"] == 1 and plain["n_failed"].sum() == 1
    w = block_aggregate(df, "alpha", weighted=True)
    ok = df["alpha"].notna()
    manual = (df.loc[ok, "alpha"] * df.loc[ok, "num_params"]).groupby(df.loc[ok, "block"]).sum() / \
        df.loc[ok, "num_params"].groupby(df.loc[ok, "block"]).sum()
    np.testing.assert_allclose(w["alpha"], manual, rtol=1e-14)
    assert not np.allclose(w["alpha"], plain["alpha"])
    bv = block_values(df, "alpha")
    assert bv.iloc[10] == plain.set_index("block").loc[df.loc[10, "block"], "alpha"]
    emb = pd.concat([df, df.head(1).assign(block=-1, role="embed", alpha=9.0)], ignore_index=True)
    assert block_aggregate(emb, "alpha").equals(plain)  # matrices outside the blocks are not aggregated
    assert np.isnan(block_values(emb, "alpha").iloc[-1])
    rs = role_summary(stream_df)
    assert rs["role"].tolist() == ROLES
    np.testing.assert_allclose(rs["median_alpha"], stream_df.groupby("role", sort=False)["alpha"].median())
    assert (rs[["ok", "over-trained", "under-trained", "failed"]].sum(axis=1) == 30).all()
    with pytest.raises(SpectraError, match="not a column"):
        block_aggregate(df, "alhpa")


# ----------------------------------------------------------------------------------------------- cache, save/load
def test_cache_is_keyed_by_content_and_settings(builtin, private_cache):
    sub = Blocks([tiny_llama().model.layers[0]])
    a = analyze(sub, progress=False)
    assert a.attrs["metadata"]["from_cache"] is False and len(list(private_cache.glob("*.parquet"))) == 1
    b = analyze(sub, progress=False)
    assert b.attrs["metadata"]["from_cache"] is True
    pd.testing.assert_frame_equal(a, b)
    c = analyze(sub, progress=False, xmin_rule="ks")  # other settings: other entry
    assert c.attrs["metadata"]["from_cache"] is False and len(list(private_cache.glob("*.parquet"))) == 2
    with torch.no_grad():
        sub.model.layers[0].mlp.down_proj.weight[0, 0] += 1.0  # other weights: other entry
    d = analyze(sub, progress=False)
    assert d.attrs["metadata"]["from_cache"] is False
    assert d.attrs["metadata"]["weights_sha256"] != a.attrs["metadata"]["weights_sha256"]
    e = analyze(sub, progress=False, keep_eigs=True)  # keep_eigs is served from the cache too
    assert e.attrs["metadata"]["from_cache"] is True and len(e["evals"].iloc[0]) == e["M"].iloc[0]
    # the same weights under another name: served from the cache, labelled with the name asked for (not the name
    # the entry was written under: a report of the built-in model was once titled with its cache folder)
    from spectra.models import LoadedModel, ModelSource

    named = analyze(LoadedModel(sub, None, ModelSource("local", "/models/sub")), progress=False)
    assert named.attrs["metadata"]["from_cache"] is True and d.attrs["metadata"]["model"] == "in-memory Blocks"
    assert named.attrs["metadata"]["model"] == "/models/sub (in memory)"
    # in-memory fingerprint = sha256 over (name, dtype, shape, bytes) of every matrix, in order
    digest = hashlib.sha256()
    from spectra.weights import iter_model_weights

    for info, w in iter_model_weights(sub):
        digest.update(f"{info.param}|{w.dtype}|{tuple(w.shape)}".encode())
        digest.update(w.contiguous().numpy().tobytes())
    assert d.attrs["metadata"]["weights_sha256"] == digest.hexdigest()


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_save_load_roundtrip_with_metadata(stream_df, tmp_path, suffix):
    df = stream_df.head(14)
    df.attrs["metadata"] = stream_df.attrs["metadata"]
    path = save_results(df, tmp_path / f"r{suffix}")
    back = load_results(path)
    assert back.attrs["metadata"] == stream_df.attrs["metadata"]
    pd.testing.assert_frame_equal(back.drop(columns="evals"), df.drop(columns="evals"), check_dtype=False,
                                  rtol=1e-15)
    for a, b in zip(back["evals"], df["evals"]):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(SpectraError, match="already exists; pass overwrite=True") as e:
        save_results(df, path)
    assert "\n" not in str(e.value)
    save_results(df.head(3), path, overwrite=True)
    assert len(load_results(path)) == 3
    with pytest.raises(SpectraError, match="use .parquet or .csv"):
        save_results(df, tmp_path / "r.xlsx")
    with pytest.raises(SpectraError, match="not found"):
        load_results(tmp_path / "missing.csv")


# ----------------------------------------------------------------------------------------------- bad input
def test_bad_matrices_give_failed_rows_with_reasons():
    model = tiny_llama(kv_heads=1, heads=8)  # k/v projections are 4×32: too small to fit
    layers = model.model.layers
    with torch.no_grad():
        layers[0].self_attn.q_proj.weight[1, 2] = float("nan")
        layers[0].mlp.up_proj.weight[0, 0] = float("inf")
        layers[1].mlp.gate_proj.weight.zero_()
    df = analyze(model, progress=False, cache=False)
    assert len(df) == 14  # no silent skip
    by = df.set_index("longname")
    assert by.loc["model.layers.0.self_attn.q_proj", "status"] == "failed"
    assert "NaN/Inf" in by.loc["model.layers.0.self_attn.q_proj", "warning"]
    assert "NaN/Inf" in by.loc["model.layers.0.mlp.up_proj", "warning"]
    assert "all-zero" in by.loc["model.layers.1.mlp.gate_proj", "warning"]
    for b in (0, 1):
        for r in ("k_proj", "v_proj"):
            assert "too small to fit" in by.loc[f"model.layers.{b}.self_attn.{r}", "warning"]
    failed = df[df["status"] == "failed"]
    assert len(failed) == 7 and failed[["alpha", "D", "stable_rank", "norm"]].isna().all().all()
    good = df[df["status"] != "failed"]
    assert len(good) == 7 and good["alpha"].notna().all() and (good["warning"].str.len() >= 0).all()


def test_bad_sources_and_settings_are_one_line_errors(tmp_path):
    with pytest.raises(ModelLoadError, match="not found") as e:
        analyze(str(tmp_path / "no-such-model"), progress=False)
    assert "\n" not in str(e.value)

    class NoMatrices(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bias = torch.nn.Parameter(torch.zeros(3))

    with pytest.raises(SpectraError, match="no 2-D weight"):
        analyze(NoMatrices(), progress=False, cache=False)
    with pytest.raises(SpectraError, match="unknown xmin rule"):
        AnalysisSettings(xmin_rule="mid")
    with pytest.raises(SpectraError, match="needs xmin"):
        AnalysisSettings(xmin_rule="fixed")
    assert AnalysisSettings(xmin=2.0).xmin_rule == "fixed"
    with pytest.raises(SpectraError, match="unknown analysis setting.*xmin_rul"):
        analyze(NoMatrices(), xmin_rul="ks")
    if not torch.cuda.is_available():
        with pytest.raises(SpectraError, match="no CUDA GPU"):
            analyze(None, device="cuda", progress=False)


def test_progress_callback_counts_every_matrix():
    model = tiny_llama()
    seen = []
    analyze(model, progress=False, cache=False, progress_cb=lambda i, n, name: seen.append((i, n, name)))
    assert [s[0] for s in seen] == list(range(1, 15)) and {s[1] for s in seen} == {14}
    assert seen[0][2] == "model.layers.0.self_attn.q_proj"


def test_workers_give_the_numbers_of_one_thread_in_order_with_progress():
    """``workers=2`` (a thread pool over matrices) gives exactly the table of ``workers=1``, rows in enumeration
    order, failed matrices included, and reports progress in order; the one-thread path records its phases."""
    model = tiny_llama(hidden=48, seed=3)
    with torch.no_grad():
        model.model.layers[1].mlp.up_proj.weight.zero_()  # a failed row between computed ones
    one = analyze(model, AnalysisSettings(xmin_rule="ks", keep_eigs=True), progress=False, cache=False)
    seen = []
    two = analyze(model, AnalysisSettings(xmin_rule="ks", keep_eigs=True, workers=2), progress=False, cache=False,
                  progress_cb=lambda i, n, name: seen.append(i))
    assert list(two["longname"]) == list(one["longname"]) and seen == list(range(1, len(one) + 1))
    assert (one["status"] == "failed").sum() == 1
    cols = ["alpha", "xmin", "D", "stable_rank", "lambda_max", "status", "warning"]
    pd.testing.assert_frame_equal(two[cols], one[cols])
    for a, b in zip(one["evals"], two["evals"]):
        assert (a is None and b is None) or np.array_equal(a, b)
    assert set(one.attrs["metadata"]["timings"]) == {"read_s", "eig_s", "fit_s"}
    assert two.attrs["metadata"]["timings"] == {}
    with pytest.raises(SpectraError, match="workers"):
        AnalysisSettings(workers=0)
