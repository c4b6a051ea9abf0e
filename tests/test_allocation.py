"""Tests of pruning.allocation: every method meets the mean exactly, hand-computed AlphaPruning/OWL values,
brute-force global magnitude and LAMP, ERK against an independent RigL-style loop, caps, infeasibility, files, CLI."""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pruning.allocation import (
    ALLOCATION_METHODS,
    AllocationError,
    allocate,
    allocation_to_json,
    load_allocation,
    owl_outlier_ratios,
    save_allocation,
)
from pruning.allocation.mappings import LampScores, lamp_scores_sorted
from pruning.allocation.methods.lamp import lamp_score_table
from pruning.cli import allocate as cli_allocate

REPO = Path(__file__).resolve().parents[1]

# shapes of very different sizes (32 to 65,536 parameters) repeated over 4 blocks
ROLES = [("self_attn.q_proj", "q", 64, 64), ("self_attn.k_proj", "k", 16, 64), ("self_attn.o_proj", "o", 4, 8),
         ("mlp.up_proj", "up", 256, 64), ("mlp.down_proj", "down", 64, 1024)]
NBLOCKS = 4


def synthetic_table(seed: int = 0) -> pd.DataFrame:
    """A spectra-like table (Contract 1 columns) with an embedding row (block -1) first."""
    rng = np.random.default_rng(seed)
    rows = [dict(longname="model.embed_tokens", block=-1, role="embed", rows=100, cols=64, alpha=3.0,
                 stable_rank=10.0)]
    for b in range(NBLOCKS):
        for suffix, role, r, c in ROLES:
            rows.append(dict(longname=f"model.layers.{b}.{suffix}", block=b, role=role, rows=r, cols=c,
                             alpha=float(rng.uniform(2.0, 7.0)), stable_rank=float(rng.uniform(1.5, 30.0))))
    df = pd.DataFrame(rows)
    df["num_params"] = df["rows"] * df["cols"]
    df["alpha_farms"] = df["alpha"] * 0.8 + 1.0 + 0.3 * (df.index % 3)
    return df


def synthetic_weights(df: pd.DataFrame, seed: int = 1, quantize: float | None = None) -> dict[str, torch.Tensor]:
    """Gaussian weights with a different scale per matrix (so that global thresholds differ strongly)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for i, row in df.iterrows():
        w = torch.randn(int(row.rows), int(row.cols), generator=g, dtype=torch.float64) * (0.2 + 0.15 * (i % 7))
        if quantize:
            w = torch.round(w / quantize) * quantize  # many exact ties inside and across matrices
        out[row.longname] = w.to(torch.float32)
    return out


def block_ratios(df: pd.DataFrame) -> dict[int, float]:
    return {b: 0.01 + 0.013 * ((7 * b) % 5) for b in sorted(df.loc[df.block >= 0, "block"].unique())}


def wmean(out: pd.DataFrame) -> float:
    return float((out.sparsity * out.num_params).sum() / out.num_params.sum())


def kwargs_for(method: str, df: pd.DataFrame, weights) -> dict:
    if method in ("global", "lamp"):
        return {"weights": weights}
    if method == "owl":
        return {"outlier_ratios": block_ratios(df)}
    if method == "dlp":
        return {"block_scores": {b: 1.0 + v for b, v in block_ratios(df).items()}, "dlp_alpha": 0.15}
    if method == "sensitivity":  # a measured cost per block (issue 20)
        return {"table": {b: 0.05 + v for b, v in block_ratios(df).items()}}
    if method == "atp":
        return {"atp_beta": 0.9 * 0.2 / (NBLOCKS - 1)}
    return {}


# ------------------------------------------------------------------------------------------ mean + range, all methods
@pytest.mark.parametrize("method", ALLOCATION_METHODS)
@pytest.mark.parametrize("S", [0.5, 0.7, 0.9])
def test_every_method_meets_mean_and_range(method, S):
    df = synthetic_table()
    W = synthetic_weights(df)
    out = allocate(df, method, S, **kwargs_for(method, df, W))
    assert list(out.columns) == ["longname", "block", "role", "num_params", "metric", "sparsity"]
    prunable = df[df.block >= 0]
    assert out.longname.tolist() == prunable.longname.tolist()  # same order, embedding excluded
    assert out.num_params.tolist() == prunable.num_params.tolist()
    assert abs(wmean(out) - S) < 1e-9
    assert (out.sparsity >= 0).all() and (out.sparsity <= 0.99 + 1e-12).all()
    info = out.attrs["allocation"]
    assert info["method"] == method and info["sparsity"] == S and info["excluded"] == 1
    assert abs(info["mean_sparsity"] - S) < 1e-9


@pytest.mark.parametrize("method", ["alphapruning", "stable_rank", "erk", "global", "lamp", "owl"])
def test_methods_are_not_uniform(method):
    """Each non-uniform method really spreads sparsity on this table (guards against silently returning S)."""
    df = synthetic_table()
    out = allocate(df, method, 0.7, **kwargs_for(method, df, synthetic_weights(df)))
    assert out.sparsity.max() - out.sparsity.min() > 0.05


def test_random_tables_mean_and_bounds():
    """40 random tables/targets/bounds/options: every method meets the mean to 1e-9 inside the bounds."""
    rng = np.random.default_rng(42)
    for _ in range(40):
        nb, per = int(rng.integers(1, 5)), int(rng.integers(1, 4))
        rows = []
        for b in range(nb):
            for j in range(per):
                r, c = int(rng.integers(1, 40)), int(rng.integers(1, 40))
                rows.append(dict(longname=f"model.layers.{b}.m{j}", block=b, role="x", rows=r, cols=c,
                                 num_params=r * c, alpha=float(rng.uniform(1, 8)),
                                 alpha_farms=float(rng.uniform(1, 8)), stable_rank=float(rng.uniform(1, 20))))
        df = pd.DataFrame(rows)
        g = torch.Generator().manual_seed(int(rng.integers(1 << 30)))
        W = {r.longname: torch.randn(r.rows, r.cols, generator=g) * float(rng.uniform(0.01, 3))
             for r in df.itertuples()}
        lo, hi = float(rng.choice([0.0, 0.05])), float(rng.choice([0.8, 0.9, 0.99, 1.0]))
        S = float(rng.uniform(lo, hi - 1e-6)) if rng.random() < 0.8 else lo
        for method in ALLOCATION_METHODS:
            kw = dict(max_sparsity=hi, min_sparsity=lo, lam=float(rng.uniform(0, 0.8)),
                      mapping=str(rng.choice(MAPS)), direction=bool(rng.integers(0, 2)),
                      granularity="block" if method == "owl" else str(rng.choice(["block", "matrix"])))
            if method in ("global", "lamp"):
                kw["weights"] = W
            if method == "owl":
                kw.update(outlier_ratios={b: float(rng.uniform(0, 0.1)) for b in range(nb)},
                          owl_lambda=float(rng.uniform(0, 0.3)))
            if method == "dlp":
                kw.update(block_scores={b: float(rng.uniform(0, 1)) for b in range(nb)},
                          dlp_alpha=float(rng.uniform(0, 0.3)), granularity="block")
            if method == "sensitivity":
                kw.update(table={b: float(rng.uniform(0, 1)) for b in range(nb)}, granularity="block")
            if method == "atp":
                from pruning.allocation import atp_bound

                kw["atp_beta"] = float(rng.uniform(0, 1)) * atp_bound(S, nb)
            out = allocate(df, method, S, **kw)
            s = out.sparsity.to_numpy()
            assert abs(wmean(out) - S) < 1e-9, (method, S, lo, hi)
            assert s.min() >= lo - 1e-12 and s.max() <= hi + 1e-12, (method, S, lo, hi)


MAPS = ["linear", "log"]


# --------------------------------------------------------------------------------------- AlphaPruning by hand
def hand_table() -> pd.DataFrame:
    # 2 blocks × (100-param q, 200-param up); alpha 2, 4 | 5, 7
    return pd.DataFrame({
        "longname": ["model.layers.0.self_attn.q_proj", "model.layers.0.mlp.up_proj",
                     "model.layers.1.self_attn.q_proj", "model.layers.1.mlp.up_proj"],
        "block": [0, 0, 1, 1], "role": ["q", "up", "q", "up"],
        "rows": [10, 10, 10, 10], "cols": [10, 20, 10, 20], "num_params": [100, 200, 100, 200],
        "alpha": [2.0, 4.0, 5.0, 7.0]})


def test_alphapruning_linear_matrix_by_hand():
    # u = (α−2)/5 = 0, .4, .6, 1 ; r = 0.7 + 0.6u = .7, .94, 1.06, 1.3 ; Σp·r = 70+188+106+260 = 624
    # scale = 0.5·600/624 → s = r·300/624
    out = allocate(hand_table(), "alphapruning", 0.5, granularity="matrix", lam=0.3)
    expected = [0.7 * 300 / 624, 0.94 * 300 / 624, 1.06 * 300 / 624, 1.3 * 300 / 624]
    np.testing.assert_allclose(out.sparsity, expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(out.metric, [2, 4, 5, 7])


def test_alphapruning_linear_block_by_hand():
    # block means 3 and 6 → u = 0, 1 → r = 0.7, 1.3 ; Σp·r = 0.7·300 + 1.3·300 = 600 → scale 300/600 = 0.5
    out = allocate(hand_table(), "alphapruning", 0.5, lam=0.3)  # block is the default
    np.testing.assert_allclose(out.sparsity, [0.35, 0.35, 0.65, 0.65], atol=1e-12)
    np.testing.assert_allclose(out.metric, [3, 3, 6, 6])
    assert out.groupby("block").sparsity.nunique().eq(1).all()


def test_alphapruning_log_mapping_by_hand():
    # u = (ln α − ln 2)/(ln 7 − ln 2): 0, ln2/ln3.5, ln2.5/ln3.5, 1 ; λ = 0.2 → r = 0.8 + 0.4u ; S = 0.6
    u = [0.0, math.log(2) / math.log(3.5), math.log(2.5) / math.log(3.5), 1.0]
    r = [0.8 + 0.4 * x for x in u]
    p = [100, 200, 100, 200]
    scale = 0.6 * 600 / sum(pi * ri for pi, ri in zip(p, r))
    out = allocate(hand_table(), "alphapruning", 0.6, granularity="matrix", mapping="log", lam=0.2)
    np.testing.assert_allclose(out.sparsity, [ri * scale for ri in r], atol=1e-12)
    lin = allocate(hand_table(), "alphapruning", 0.6, granularity="matrix", mapping="linear", lam=0.2)
    assert not np.allclose(out.sparsity, lin.sparsity)  # log really differs from linear here


def test_direction_flips_order_by_hand():
    # lower_more: u = (7 − α)/5 = 1, .6, .4, 0 → r = 1.3, 1.06, .94, .7 ; Σp·r = 130+212+94+140 = 576
    out = allocate(hand_table(), "alphapruning", 0.5, granularity="matrix", direction="lower_more")
    np.testing.assert_allclose(out.sparsity, [1.3 * 300 / 576, 1.06 * 300 / 576, 0.94 * 300 / 576,
                                              0.7 * 300 / 576], atol=1e-12)
    hi = allocate(hand_table(), "alphapruning", 0.5, granularity="matrix", direction=True)
    assert list(np.argsort(hi.sparsity.to_numpy())) == [0, 1, 2, 3]
    assert list(np.argsort(out.sparsity.to_numpy())) == [3, 2, 1, 0]
    lo_bool = allocate(hand_table(), "alphapruning", 0.5, granularity="matrix", direction=False)
    np.testing.assert_array_equal(lo_bool.sparsity, out.sparsity)


def test_direction_flips_order_on_random_table():
    df = synthetic_table(3)
    a = allocate(df, "alphapruning", 0.6, granularity="matrix", lam=0.3)
    b = allocate(df, "alphapruning", 0.6, granularity="matrix", lam=0.3, direction="lower_more")
    alpha = df.loc[df.block >= 0, "alpha"].to_numpy()
    # sparsity / metric co-monotone (higher_more) and anti-monotone (lower_more); ratios s/r are constant
    order = np.argsort(alpha)
    assert np.all(np.diff(a.sparsity.to_numpy()[order]) > 0)
    assert np.all(np.diff(b.sparsity.to_numpy()[order]) < 0)


def test_stable_rank_uses_its_column_higher_more():
    df = synthetic_table(5)
    out = allocate(df, "stable_rank", 0.7, granularity="matrix")
    sr = df.loc[df.block >= 0, "stable_rank"].to_numpy()
    np.testing.assert_allclose(out.metric, sr)
    ref = allocate(df, "alphapruning", 0.7, granularity="matrix", metric="stable_rank")
    np.testing.assert_array_equal(out.sparsity, ref.sparsity)
    assert np.all(np.diff(out.sparsity.to_numpy()[np.argsort(sr)]) > 0)
    with pytest.raises(ValueError, match="stable_rank"):
        allocate(df, "stable_rank", 0.7, metric="alpha")


@pytest.mark.parametrize("method", ["alphapruning", "stable_rank", "owl"])
def test_block_mode_one_value_per_block(method):
    df = synthetic_table(7)
    out = allocate(df, method, 0.7, **kwargs_for(method, df, None))
    assert out.groupby("block").sparsity.nunique().eq(1).all()
    assert out.groupby("block").metric.nunique().eq(1).all()
    assert out.sparsity.nunique() == NBLOCKS
    if method != "owl":
        col = "alpha" if method == "alphapruning" else "stable_rank"
        means = df[df.block >= 0].groupby("block")[col].mean()
        np.testing.assert_allclose(out.groupby("block").metric.first(), means)
    mat = allocate(df, "alphapruning", 0.7, granularity="matrix")
    assert mat.sparsity.nunique() == len(mat)


# ------------------------------------------------------------------------------------------ caps and infeasibility
def test_cap_redistribution_keeps_mean_and_cap():
    df = hand_table()
    raw = allocate(df, "alphapruning", 0.9, granularity="matrix", lam=0.5, clip=False)
    # faithful: r = 0.5 + u = .5, .9, 1.1, 1.5 ; Σp·r = 50+180+110+300 = 640 ; s = r·540/640
    np.testing.assert_allclose(raw.sparsity, [0.5 * 540 / 640, 0.9 * 540 / 640, 1.1 * 540 / 640, 1.5 * 540 / 640])
    assert raw.sparsity.max() > 1  # the reference has no clipping
    assert "not clipped" in raw.attrs["allocation"]["note"]
    out = allocate(df, "alphapruning", 0.9, granularity="matrix", lam=0.5, max_sparsity=0.95)
    s = out.sparsity.to_numpy()
    assert abs(wmean(out) - 0.9) < 1e-12 and s.max() <= 0.95 + 1e-15
    capped = np.isclose(s, 0.95)
    assert capped[3] and capped.sum() >= 1
    r = np.array([0.5, 0.9, 1.1, 1.5])
    ratio = s[~capped] / r[~capped]  # the free ones keep AlphaPruning's proportions (one common scale)
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-12)
    assert ratio[0] * r[3] > 0.95  # and the capped one would have exceeded the cap at that scale
    note = out.attrs["allocation"]["note"]
    assert "above max sparsity 0.95" in note and "redistributed" in note


def test_owl_floor_redistribution_keeps_mean():
    df = synthetic_table()
    ratios = {0: 0.0, 1: 0.1, 2: 0.2, 3: 0.3}
    out = allocate(df, "owl", 0.1, outlier_ratios=ratios, owl_lambda=0.2)  # raw S ± 0.2 → negatives
    s = out.groupby("block").sparsity.first().to_numpy()
    assert abs(wmean(out) - 0.1) < 1e-12 and s.min() >= 0
    assert s[3] == 0.0
    # free blocks keep OWL's additive differences: D̃ = 0, 0.1333, 0.2667, (0.4)
    np.testing.assert_allclose(s[0] - s[1], 0.4 / 3, atol=1e-12)
    np.testing.assert_allclose(s[1] - s[2], 0.4 / 3, atol=1e-12)
    assert "below min sparsity" in out.attrs["allocation"]["note"]


def test_infeasible_targets_raise():
    df = hand_table()
    with pytest.raises(AllocationError, match="max_sparsity"):
        allocate(df, "uniform", 0.995)
    with pytest.raises(AllocationError, match="cannot be met"):
        allocate(df, "alphapruning", 0.96, max_sparsity=0.95, granularity="matrix")
    # λ = 1: the lowest-α block gets r = 0 → sparsity 0 whatever the scale; its half of the params caps the mean
    with pytest.raises(AllocationError, match=r"cannot be met.*\[0, 0\.495\]"):
        allocate(df, "alphapruning", 0.7, lam=1.0)
    assert abs(wmean(allocate(df, "alphapruning", 0.4, lam=1.0)) - 0.4) < 1e-12
    with pytest.raises(AllocationError):
        allocate(df, "erk", 0.5, min_sparsity=0.6)
    W = synthetic_weights(df)
    with pytest.raises(AllocationError):
        allocate(df, "global", 0.95, weights=W, max_sparsity=0.9)


# ---------------------------------------------------------------------------------------------------------- ERK
def rigl_erk_density(shapes, S):
    """RigL's sparse_utils ERK loop: make the max-probability layer dense until no density exceeds 1."""
    dense = set()
    while True:
        divisor = rhs = 0.0
        raw = {}
        for i, (r, c) in enumerate(shapes):
            n = r * c
            if i in dense:
                rhs -= n * S
            else:
                rhs += n * (1 - S)
                raw[i] = (r + c) / (r * c)
                divisor += raw[i] * n
        eps = rhs / divisor
        mx = max(raw.values())
        if mx * eps > 1:
            dense |= {i for i, v in raw.items() if v == mx}
        else:
            return [1.0 if i in dense else eps * raw[i] for i in range(len(shapes))]


@pytest.mark.parametrize("S", [0.5, 0.7, 0.9])
def test_erk_matches_formula_and_rigl_loop(S):
    df = synthetic_table()
    out = allocate(df, "erk", S)
    dens = 1 - out.sparsity.to_numpy()
    prunable = df[df.block >= 0]
    shapes = list(zip(prunable.rows, prunable.cols))
    k = np.array([(r + c) / (r * c) for r, c in shapes])
    np.testing.assert_allclose(out.metric, k)
    assert dens.max() <= 1 + 1e-15
    free = dens < 1 - 1e-12
    np.testing.assert_allclose(dens[free] / k[free], (dens[free] / k[free])[0], rtol=1e-12)  # density ∝ k
    if (~free).any():
        assert (k[~free] * (dens[free] / k[free])[0] >= 1 - 1e-12).all()  # dense ones would exceed 1
    rigl = rigl_erk_density(shapes, S)
    np.testing.assert_allclose(dens, rigl, rtol=0, atol=1e-12)
    if S == 0.5:  # the 4×8 o_proj and 16×64 k_proj of every block end up dense
        assert (~free).sum() == 2 * NBLOCKS == sum(d == 1.0 for d in rigl)
        assert "kept dense" in out.attrs["allocation"]["note"]


# ---------------------------------------------------------------------------------------- global and LAMP brute force
def brute_force_counts(score_arrays, S, lo=0.0, hi=1.0):
    """Prune the globally lowest scores one at a time (stable order over the concatenation), skipping matrices at
    their cap hi·n, after first pruning the lowest lo·n of each; the last weight is taken fractionally."""
    n = np.array([len(a) for a in score_arrays], dtype=float)
    cat = np.concatenate(score_arrays)
    owner = np.concatenate([np.full(len(a), i) for i, a in enumerate(score_arrays)])
    rank_in = np.concatenate([np.argsort(np.argsort(a, kind="stable"), kind="stable") for a in score_arrays])
    order = np.argsort(cat, kind="stable")
    T = S * n.sum()
    counts = np.minimum(lo * n, n)  # the forced lowest lo·n of each matrix (fractional for the last one)
    total = counts.sum()
    for j in order:
        i = owner[j]
        portion = 1.0 - min(max(lo * n[i] - rank_in[j], 0.0), 1.0)  # part of this weight not already forced
        take = min(portion, hi * n[i] - counts[i], T - total)
        if take <= 0:
            if total >= T - 1e-12:
                break
            continue
        counts[i] += take
        total += take
    return counts / n


def lamp_by_definition(w: np.ndarray) -> np.ndarray:
    """LAMP score of every weight, straight from the definition, in the matrix's own (flattened) positions."""
    flat = np.abs(w.ravel()).astype(np.float64)
    order = np.argsort(flat, kind="stable")
    scores = np.empty_like(flat)
    for pos, u in enumerate(order):
        tail = sum(flat[v] ** 2 for v in order[pos:])
        scores[u] = flat[u] ** 2 / tail
    return scores


def small_table():
    shapes = [(8, 16), (30, 10), (5, 4), (20, 20), (12, 50)]
    rows = [dict(longname=f"model.layers.{i // 2}.mlp.m{i}", block=i // 2, role="x", rows=r, cols=c,
                 num_params=r * c) for i, (r, c) in enumerate(shapes)]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("S", [0.5, 0.7, 0.9, 0.6137])
@pytest.mark.parametrize("quantize", [None, 0.05])
def test_global_equals_brute_force_single_threshold(S, quantize):
    df = small_table()
    W = synthetic_weights(df, seed=11, quantize=quantize)
    out = allocate(df, "global", S, weights=W, max_sparsity=1.0)
    mags = [np.abs(W[n].numpy().ravel()) for n in df.longname]
    np.testing.assert_allclose(out.sparsity, brute_force_counts(mags, S), rtol=0, atol=1e-12)
    assert abs(wmean(out) - S) < 1e-12
    # one threshold: every matrix prunes exactly its entries below t, plus (some of) those equal to t
    t = out.attrs["allocation"]["threshold"]
    for m, s in zip(mags, out.sparsity):
        assert (m < t).sum() - 1e-6 <= s * m.size <= (m <= t).sum() + 1e-6


def test_global_cap_equals_brute_force_greedy():
    df = pd.DataFrame([dict(longname=f"model.layers.0.mlp.m{i}", block=0, role="x", rows=10, cols=c,
                            num_params=10 * c) for i, c in enumerate([10, 20, 30, 40])])
    g = torch.Generator().manual_seed(3)
    W = {n: torch.randn(10, c, generator=g) * sc for n, c, sc in zip(df.longname, [10, 20, 30, 40],
                                                                      [1e-3, 1.0, 1.5, 2.0])}
    mags = [np.abs(W[n].numpy().ravel()) for n in df.longname]
    free = allocate(df, "global", 0.7, weights=W, max_sparsity=1.0)
    assert free.sparsity.iloc[0] == 1.0  # the tiny matrix would be wiped out
    out = allocate(df, "global", 0.7, weights=W, max_sparsity=0.9, min_sparsity=0.1)
    np.testing.assert_allclose(out.sparsity, brute_force_counts(mags, 0.7, lo=0.1, hi=0.9), atol=1e-12)
    assert out.sparsity.iloc[0] == pytest.approx(0.9) and abs(wmean(out) - 0.7) < 1e-12
    assert "capped at max sparsity 0.9" in out.attrs["allocation"]["note"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_threshold_fit_without_sorting_equals_the_sorted_fit(dtype):
    """Global magnitude finds its threshold from unsorted |w| (a histogram of the IEEE keys, then one bin searched
    exactly): the same t, sparsities and note as the bisection over sorted arrays, with ties, zeros and both bounds
    binding, and the same error when the target cannot be met."""
    from pruning.allocation.mappings import threshold_fit

    rng = np.random.default_rng(7)
    arrays = [np.round(np.abs(rng.standard_normal(n)) * sc, 2).astype(dtype) for n, sc in
              [(10, 1.0), (1000, 0.01), (57, 3.0), (3000, 1.0), (1, 0.5)]]
    arrays[1][:300] = 0.0  # zeros and many ties (values rounded to 0.01)
    names = [f"m{i}" for i in range(len(arrays))]
    for S in np.linspace(0.0, 0.99, 23):
        for lo, hi in [(0.0, 1.0), (0.0, 0.5), (0.1, 0.9), (0.3, 0.31)]:
            try:
                want = threshold_fit([np.sort(a) for a in arrays], S, lo, hi, names)
            except AllocationError as exc:
                with pytest.raises(AllocationError, match=re.escape(str(exc))):
                    threshold_fit(arrays, S, lo, hi, names, presorted=False)
                continue
            got = threshold_fit(arrays, S, lo, hi, names, presorted=False)
            assert np.array_equal(got[0], want[0]) and got[1] == want[1] and got[2] == want[2], (S, lo, hi)


def test_lamp_scores_compact_equal_the_full_array_bit_for_bit():
    """LampScores recomputes runs of scores from stored suffix sums: every score and every count must be those of
    lamp_scores_sorted's full float64 array (ties, zeros, an all-zero matrix, float64 input, runs of 1 to 2048)."""
    rng = np.random.default_rng(3)
    cases = [(np.zeros(10, np.float32), 4), (rng.standard_normal(1).astype(np.float32), 4),
             (rng.standard_normal(9), 4), (rng.standard_normal(64).astype(np.float32), 1)]
    for n, run in [(8, 4), (1000, 16), (5000, 2048), (70_000, 512)]:
        w = rng.standard_normal(n).astype(np.float32)
        w[: n // 20] = 0.0
        w[n // 20: n // 4] = np.round(w[n // 20: n // 4], 1)  # many equal |w|
        cases.append((w, run))
    for w, run in cases:
        ref = lamp_scores_sorted(w)
        ls = LampScores(torch.from_numpy(np.asarray(w)), run=run)
        n = len(ref)
        assert len(ls) == ls.size == n
        assert np.array_equal(np.concatenate([ls._run_scores(r) for r in range(-(-n // run))]), ref)
        assert ls[0] == ref[0] and ls[-1] == ref[-1] and ls[n // 2] == ref[n // 2]
        for t in np.concatenate([ref[rng.integers(0, n, 100)], rng.random(20), [0.0, 1.0, 2.0]]):
            for side in ("left", "right"):
                assert ls.searchsorted(t, side=side) == np.searchsorted(ref, t, side=side), (n, run, t, side)


def test_lamp_reuses_given_scores_across_targets():
    """weights={name: LampScores(W)} (each matrix sorted once, the app's cache) allocates exactly as the raw weights
    at every target and bound; a scores entry of the wrong size is the usual one-line error."""
    df = small_table()
    W = synthetic_weights(df, seed=9)
    pre = lamp_score_table(W)
    for S, lo, hi in [(0.5, 0.0, 1.0), (0.7, 0.0, 0.95), (0.6, 0.3, 0.8)]:
        want = allocate(df, "lamp", S, weights=W, min_sparsity=lo, max_sparsity=hi)
        got = allocate(df, "lamp", S, weights=pre, min_sparsity=lo, max_sparsity=hi)
        np.testing.assert_array_equal(got.sparsity.to_numpy(), want.sparsity.to_numpy())
    name = df.longname.iloc[0]
    with pytest.raises(ValueError, match="metrics and weights are from different models"):
        allocate(df, "lamp", 0.5, weights={**pre, name: LampScores(torch.ones(3))})
    with pytest.raises(ValueError, match="run must be a positive number of entries"):
        LampScores(torch.ones(3), run=0)


@pytest.mark.parametrize("S", [0.5, 0.7, 0.9, 0.777])
def test_lamp_equals_brute_force_scores_with_short_runs(S, monkeypatch):
    """The allocation through LampScores with runs shorter than the matrices (several runs each)."""
    import pruning.allocation.mappings as mappings

    monkeypatch.setattr(mappings, "LAMP_RUN", 7)
    test_lamp_equals_brute_force_scores(S)


@pytest.mark.parametrize("S", [0.5, 0.7, 0.9, 0.777])
def test_lamp_equals_brute_force_scores(S):
    df = small_table()
    W = synthetic_weights(df, seed=5)
    out = allocate(df, "lamp", S, weights=W, max_sparsity=1.0)
    scores = [lamp_by_definition(W[n].numpy()) for n in df.longname]
    np.testing.assert_allclose(out.sparsity, brute_force_counts(scores, S), rtol=0, atol=1e-12)
    assert abs(wmean(out) - S) < 1e-12
    assert (out.sparsity < 1).all()  # LAMP keeps each matrix's largest weight (score 1)
    mag = allocate(df, "global", S, weights=W, max_sparsity=1.0)
    assert not np.allclose(mag.sparsity, out.sparsity)


# -------------------------------------------------------------------------------------------------------- OWL
def test_owl_matches_reference_formula_by_hand():
    df = synthetic_table()  # 4 equal-size blocks: the unweighted block mean of OWL's code = parameter-weighted
    D = {0: 0.02, 1: 0.05, 2: 0.03, 3: 0.08}
    lam, S = 0.08, 0.7
    # D̃ = (D − 0.02)/0.06 · 0.16 = 0, 0.08, 0.08/3, 0.16 ; mean D̃ = (0.08 + 0.08/3 + 0.16)/4
    Dt = [0.0, 0.08, 0.08 / 3, 0.16]
    mean = sum(Dt) / 4
    expected = [1 - (d - mean + 1 - S) for d in Dt]
    out = allocate(df, "owl", S, outlier_ratios=D, owl_lambda=lam)
    np.testing.assert_allclose(out.groupby("block").sparsity.first(), expected, atol=1e-12)
    np.testing.assert_allclose(out.groupby("block").metric.first(), [0.02, 0.05, 0.03, 0.08])
    # more outliers ⇒ less sparsity
    assert out.groupby("block").sparsity.first().idxmin() == 3


def test_owl_unequal_blocks_uses_weighted_mean_and_per_matrix_mode():
    df = small_table()  # blocks of different sizes
    out = allocate(df, "owl", 0.6, outlier_ratios={0: 0.01, 1: 0.04, 2: 0.02})
    assert abs(wmean(out) - 0.6) < 1e-12
    b = out.groupby("block").sparsity.first()
    np.testing.assert_allclose(b[0] - b[1], 0.16, atol=1e-12)  # full ±λ spread, shifted to meet the mean
    per = {n: 0.01 * (i + 1) for i, n in enumerate(df.longname)}
    with pytest.raises(ValueError, match="granularity='matrix'"):
        allocate(df, "owl", 0.6, outlier_ratios=per)
    m = allocate(df, "owl", 0.6, outlier_ratios=per, granularity="matrix")
    assert m.sparsity.nunique() == len(df) and abs(wmean(m) - 0.6) < 1e-12
    with pytest.raises(ValueError, match="owl_outlier_ratios"):
        allocate(df, "owl", 0.6)


def test_owl_outlier_ratios_by_brute_force():
    g = torch.Generator().manual_seed(0)
    names = ["model.layers.0.self_attn.q_proj", "model.layers.0.mlp.down_proj", "model.layers.1.self_attn.q_proj"]
    shapes = [(6, 8), (8, 12), (6, 8)]
    W = {n: torch.randn(*s, generator=g) for n, s in zip(names, shapes)}
    X = {n: torch.randn(50, s[1], generator=g) * torch.linspace(0.1, 6.0, s[1]) for n, s in zip(names, shapes)}
    sq = {n: (X[n].double() ** 2).sum(0) for n in names}
    M = 2.0
    per_block = owl_outlier_ratios(W, sq, M=M)
    per_matrix = owl_outlier_ratios(W, sq, M=M, granularity="matrix")

    def score(n):  # Wanda score |W_ij|·‖X_j‖₂ with the norm over the 50 calibration tokens
        return np.abs(W[n].numpy()) * np.linalg.norm(X[n].numpy().astype(np.float64), axis=0)[None, :]

    cat0 = np.concatenate([score(names[0]).ravel(), score(names[1]).ravel()])
    assert per_block[0] == pytest.approx(np.mean(cat0 > M * cat0.mean()), abs=1e-15)
    s2 = score(names[2]).ravel()
    assert per_block[1] == pytest.approx(np.mean(s2 > M * s2.mean()), abs=1e-15)
    for n in names:
        s = score(n).ravel()
        assert per_matrix[n] == pytest.approx(np.mean(s > M * s.mean()), abs=1e-15)
    assert 0 < per_block[0] < 1
    # OWL's scaler_row is Σx²/T: a common factor inside a block leaves the ratio unchanged
    assert owl_outlier_ratios(W, {n: v / 50 for n, v in sq.items()}, M=M) == per_block
    calls = []  # one block's scores at a time, a progress call after each
    assert owl_outlier_ratios(W, sq, M=M, progress_cb=lambda done, total: calls.append((done, total))) == per_block
    assert calls == [(1, 2), (2, 2)]
    with pytest.raises(ValueError, match="input_sq_norms"):
        owl_outlier_ratios(W, {names[0]: sq[names[0]]})


# ------------------------------------------------------------------------------------------------- bad input
def test_bad_arguments_are_one_line_value_errors():
    df = hand_table()
    with pytest.raises(ValueError, match="uniform, alphapruning, owl, erk, global, lamp, stable_rank"):
        allocate(df, "magic", 0.5)
    for bad in (1.0, -0.1, 1.5, "x", float("nan")):
        with pytest.raises(ValueError, match=r"sparsity must be"):
            allocate(df, "uniform", bad)
    with pytest.raises(ValueError, match="no column 'entropy'.*alpha"):
        allocate(df, "alphapruning", 0.5, metric="entropy")
    with pytest.raises(ValueError, match="lam"):
        allocate(df, "alphapruning", 0.5, lam=1.5)
    with pytest.raises(ValueError, match="needs the weights"):
        allocate(df, "global", 0.5)
    with pytest.raises(ValueError, match="direction"):
        allocate(df, "alphapruning", 0.5, direction="up")
    bad_alpha = df.assign(alpha=[2.0, np.nan, 5.0, 7.0])
    with pytest.raises(AllocationError, match="NaN"):
        allocate(bad_alpha, "alphapruning", 0.5, granularity="matrix")
    blk = allocate(bad_alpha, "alphapruning", 0.5)  # block mean over the remaining matrix of block 0
    np.testing.assert_allclose(blk.metric, [2, 2, 6, 6])
    with pytest.raises(AllocationError, match="positive"):
        allocate(df.assign(alpha=[0.0, 1, 2, 3]), "alphapruning", 0.5, mapping="log", granularity="matrix")


# ------------------------------------------------------------------------------------------------------ files
def test_json_and_csv_round_trip(tmp_path):
    out = allocate(synthetic_table(), "alphapruning", 0.7)
    doc = allocation_to_json(out)
    assert set(doc) == {"method", "sparsity", "settings", "layers"}
    assert doc["method"] == "alphapruning" and doc["sparsity"] == 0.7 and doc["settings"]["lam"] == 0.3
    for suffix in (".json", ".csv"):
        path = tmp_path / f"alloc{suffix}"
        save_allocation(out, path)
        loaded = load_allocation(path)
        assert list(loaded) == out.longname.tolist()
        np.testing.assert_allclose(list(loaded.values()), out.sparsity, rtol=1e-15)
        assert loaded.method == "alphapruning" and loaded.sparsity == 0.7 and loaded.settings["granularity"] == "block"
        before = path.read_bytes()
        with pytest.raises(FileExistsError, match="overwrite"):
            save_allocation(allocate(synthetic_table(), "uniform", 0.5), path)
        assert path.read_bytes() == before
        save_allocation(allocate(synthetic_table(), "uniform", 0.5), path, overwrite=True)
        assert set(load_allocation(path).values()) == {0.5}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"layers": {"a": 1.2}}))
    with pytest.raises(ValueError, match="outside"):
        load_allocation(bad)


# -------------------------------------------------------------------------------------------------------- CLI
def run_cli(argv, capsys):
    code = cli_allocate.run(argv)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_cli_writes_contract_json_and_refuses_overwrite(tmp_path, capsys):
    df = synthetic_table()
    metrics = tmp_path / "metrics.parquet"
    df.to_parquet(metrics)
    out = tmp_path / "alloc.json"
    argv = ["--metrics", str(metrics), "--method", "alphapruning", "--sparsity", "0.7", "--lam", "0.3",
            "--out", str(out)]
    code, stdout, err = run_cli(argv, capsys)
    assert code == 0 and err == "" and "wrote" in stdout
    doc = json.loads(out.read_text())
    expected = allocate(df, "alphapruning", 0.7, lam=0.3)
    assert doc["method"] == "alphapruning" and doc["sparsity"] == 0.7
    assert doc["settings"]["lam"] == 0.3 and doc["settings"]["granularity"] == "block"
    assert list(doc["layers"]) == expected.longname.tolist()
    np.testing.assert_allclose(list(doc["layers"].values()), expected.sparsity, rtol=1e-15)
    before = out.read_bytes()
    code, stdout, err = run_cli(argv[:-2] + ["--out", str(out), "--sparsity", "0.5"], capsys)
    assert code == 2 and err.startswith("error:") and "--overwrite" in err and err.count("\n") == 1
    assert out.read_bytes() == before
    code, _, _ = run_cli(argv + ["--sparsity", "0.5", "--overwrite"], capsys)
    assert code == 0 and json.loads(out.read_text())["sparsity"] == 0.5
    # no --out: JSON on stdout, CSV metrics accepted
    csv = tmp_path / "metrics.csv"
    df.to_csv(csv, index=False)
    code, stdout, err = run_cli(["--metrics", str(csv), "--method", "erk", "--sparsity", "0.6"], capsys)
    assert code == 0 and json.loads(stdout)["layers"] == allocation_to_json(allocate(df, "erk", 0.6))["layers"]


@pytest.mark.parametrize("extra, needle", [
    (["--sparsity", "1.0"], "[0, 1)"),
    (["--sparsity", "-0.2"], "[0, 1)"),
    (["--sparsity", "abc"], "number"),
    (["--sparsity", "0.5", "--method", "magic"], "unknown allocation method"),
    (["--sparsity", "0.5", "--metric", "entropy"], "no column 'entropy'"),
    (["--sparsity", "0.5", "--method", "global"], "--model"),
    (["--sparsity", "0.5", "--method", "owl"], "--outlier-ratios"),
    (["--sparsity", "0.999"], "cannot"),
])
def test_cli_bad_input_one_line_exit_2(tmp_path, capsys, extra, needle):
    metrics = tmp_path / "m.csv"
    synthetic_table().to_csv(metrics, index=False)
    code, stdout, err = run_cli(["--metrics", str(metrics)] + extra, capsys)
    assert code == 2 and stdout == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and needle in err
    code, _, err = run_cli(["--metrics", str(tmp_path / "nope.parquet"), "--sparsity", "0.5"], capsys)
    assert code == 2 and "not found" in err


def test_cli_reads_spectra_results_file(tmp_path, capsys):
    from spectra.results import save_results

    df = synthetic_table()
    df.attrs["metadata"] = {"model": "synthetic"}
    for name in ("m.parquet", "m.csv"):
        path = save_results(df, tmp_path / name)
        code, stdout, err = run_cli(["--metrics", str(path), "--sparsity", "0.6", "--granularity", "matrix"], capsys)
        assert code == 0, err
        got = json.loads(stdout)["layers"]
        want = allocate(df, "alphapruning", 0.6, granularity="matrix")
        np.testing.assert_allclose([got[n] for n in want.longname], want.sparsity, rtol=1e-15)


def test_cli_owl_with_ratios_file(tmp_path, capsys):
    df = synthetic_table()
    metrics = tmp_path / "m.csv"
    df.to_csv(metrics, index=False)
    rfile = tmp_path / "ratios.json"
    rfile.write_text(json.dumps({str(k): v for k, v in block_ratios(df).items()}))
    code, stdout, _ = run_cli(["--metrics", str(metrics), "--method", "owl", "--sparsity", "0.7",
                               "--outlier-ratios", str(rfile)], capsys)
    assert code == 0
    expected = allocate(df, "owl", 0.7, outlier_ratios=block_ratios(df))
    np.testing.assert_allclose(list(json.loads(stdout)["layers"].values()), expected.sparsity, rtol=1e-15)


def test_cli_subprocess_no_traceback(tmp_path):
    metrics = tmp_path / "m.csv"
    synthetic_table().to_csv(metrics, index=False)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(REPO))
    cmds = [[sys.executable, "-m", "pruning.cli.allocate"]]
    if (REPO / "pruning" / "__main__.py").is_file():
        cmds.append([sys.executable, "-m", "pruning", "allocate"])
    for cmd in cmds:
        res = subprocess.run(cmd + ["--metrics", str(metrics), "--sparsity", "2"], capture_output=True, text=True,
                             cwd=REPO, env=env, timeout=120)
        assert res.returncode == 2 and res.stderr.startswith("error: ") and res.stderr.count("\n") == 1, res.stderr
        assert "Traceback" not in res.stderr
        res = subprocess.run(cmd + ["--metrics", str(metrics), "--sparsity", "0.7"], capture_output=True, text=True,
                             cwd=REPO, env=env, timeout=120)
        assert res.returncode == 0, res.stderr
        assert abs(json.loads(res.stdout)["settings"]["mean_sparsity"] - 0.7) < 1e-9


# ---------------------------------------------------------------------------------------------- the real model
def test_real_model_global_lamp_erk_means():
    from spectra.models import load_model
    from spectra.weights import iter_model_weights

    lm = load_model()
    infos, weights = [], {}
    for info, w in iter_model_weights(lm.model):
        infos.append(info.as_dict())
        weights[info.longname] = w
    df = pd.DataFrame(infos)
    assert len(df) == 210
    S = 0.7
    for method in ("global", "lamp", "erk"):
        out = allocate(df, method, S, weights=weights)
        assert abs(wmean(out) - S) < 1e-9, method
        assert (out.sparsity >= 0).all() and (out.sparsity <= 0.99).all()
        assert out.sparsity.std() > 0.01, method  # really non-uniform on real weights
    # uncapped global magnitude: its threshold is the k-th smallest |w| of all block weights concatenated,
    # k = ceil(S·N), i.e. #(|w| < t) < k ≤ #(|w| ≤ t) counted over the concatenation
    out = allocate(df, "global", S, weights=weights, max_sparsity=1.0)
    assert abs(wmean(out) - S) < 1e-9
    t = out.attrs["allocation"]["threshold"]
    N = sum(w.numel() for w in weights.values())
    k = math.ceil(S * N)
    below = sum(int((w.abs() < t).sum()) for w in weights.values())
    at_or_below = sum(int((w.abs() <= t).sum()) for w in weights.values())
    assert below < k <= at_or_below


# ----------------------------------------------------------------------------------------- flagged (spurious) fits
def test_exclude_flagged_keeps_a_planted_spurious_fit_out_of_its_block_mean():
    """A planted α = 18 (flagged "likely spurious", α > 8) drives its block to the largest sparsity in
    AlphaPruning's reference block mean; with exclude_flagged (our option, off by default) the block's metric is the
    mean of its other fits and the block no longer gets the largest sparsity."""
    from pruning.plots import block_sparsity
    from spectra.analyze import flagged_fits, spurious_blocks

    df = synthetic_table(3)
    df["alpha"] = np.where(df["block"] >= 0, 3.0 + 0.5 * df["block"].clip(lower=0), 3.0)  # block 3 the highest
    planted = "model.layers.1.self_attn.k_proj"
    df.loc[df.longname == planted, "alpha"] = 18.0
    assert flagged_fits(df).tolist() == (df.longname == planted).tolist()
    sb = spurious_blocks(df)
    assert sb["block"].tolist() == [1] and sb["flagged"].iloc[0] == "k_proj α=18.0"
    assert sb["alpha_mean_unflagged"].iloc[0] == pytest.approx(3.5)

    ref = allocate(df, "alphapruning", 0.6, lam=0.3)
    assert allocate(df, "alphapruning", 0.6, lam=0.3, exclude_flagged=False).equals(ref)  # off = the reference
    assert int(block_sparsity(ref).idxmax()) == 1  # the spurious fit drives block 1 to the top
    out = allocate(df, "alphapruning", 0.6, lam=0.3, exclude_flagged=True)
    assert int(block_sparsity(out).idxmax()) == 3 and int(block_sparsity(out).idxmin()) == 0
    # = the reference allocation of the same table without the planted value (block 1's mean of its other fits)
    clean = df.copy()
    clean.loc[clean.longname == planted, "alpha"] = 3.5
    np.testing.assert_allclose(out["sparsity"], allocate(clean, "alphapruning", 0.6, lam=0.3)["sparsity"],
                               rtol=0, atol=1e-12)
    assert wmean(out) == pytest.approx(0.6, abs=1e-12)
    assert out.attrs["allocation"]["exclude_flagged"] is True and planted in out.attrs["allocation"]["note"]
    # per-matrix granularity: the flagged matrix takes its block's other fits' mean
    mat = allocate(df, "alphapruning", 0.6, lam=0.3, granularity="matrix", exclude_flagged=True)
    np.testing.assert_allclose(mat["sparsity"], allocate(clean, "alphapruning", 0.6, lam=0.3,
                                                         granularity="matrix")["sparsity"], atol=1e-12)
    with pytest.raises(ValueError, match="alphapruning"):
        allocate(df, "stable_rank", 0.6, exclude_flagged=True)


def test_flag_rule_is_the_fit_warning():
    from spectra.hill import SPURIOUS_ALPHA, fit_power_law, likely_spurious

    assert SPURIOUS_ALPHA == 8.0
    np.testing.assert_array_equal(likely_spurious([7.9, 8.0, 8.1, np.nan]), [False, False, True, False])
    rng = np.random.default_rng(0)
    steep = 1.0 + rng.pareto(12.0, 2000)  # density exponent 13: α > 8
    fit = fit_power_law(steep, "ks")
    assert likely_spurious(fit.alpha) and "likely a spurious fit" in fit.warning


def test_cli_exclude_flagged(tmp_path, capsys):
    """``python -m pruning allocate --exclude-flagged`` writes allocate(..., exclude_flagged=True); without the flag
    the reference; with another method one error line."""
    df = synthetic_table(3)
    df["alpha"] = np.where(df["block"] >= 0, 3.0 + 0.5 * df["block"].clip(lower=0), 3.0)
    df.loc[df.longname == "model.layers.1.self_attn.k_proj", "alpha"] = 18.0  # flagged: α > 8
    metrics = tmp_path / "metrics.parquet"
    df.to_parquet(metrics)
    argv = ["--metrics", str(metrics), "--method", "alphapruning", "--sparsity", "0.6", "--lam", "0.3"]
    code, stdout, err = run_cli(argv + ["--exclude-flagged"], capsys)
    assert code == 0 and err == ""
    doc = json.loads(stdout)
    want = allocate(df, "alphapruning", 0.6, lam=0.3, exclude_flagged=True)
    assert list(doc["layers"]) == want.longname.tolist()
    np.testing.assert_allclose(list(doc["layers"].values()), want.sparsity, rtol=1e-15)
    assert doc["settings"]["exclude_flagged"] is True
    code, stdout, _ = run_cli(argv, capsys)
    ref = allocate(df, "alphapruning", 0.6, lam=0.3)
    np.testing.assert_allclose(list(json.loads(stdout)["layers"].values()), ref.sparsity, rtol=1e-15)
    assert not np.allclose(ref.sparsity, want.sparsity)
    code, _, err = run_cli(["--metrics", str(metrics), "--method", "erk", "--sparsity", "0.6", "--exclude-flagged"],
                           capsys)
    assert code == 2 and err.startswith("error:") and err.count("\n") == 1 and "alphapruning" in err


# ------------------------------------------------------------------------------------------ allocation_options
def test_allocation_options_gives_each_method_the_arguments_it_reads():
    from pruning.allocation import SPECTRAL_METHODS, WEIGHT_METHODS, allocation_options

    assert SPECTRAL_METHODS == ("alphapruning", "stable_rank", "farms") and set(WEIGHT_METHODS) == {"global", "lamp"}
    df = synthetic_table()
    weights = synthetic_weights(df)
    common = dict(lam=0.4, mapping="log", granularity="matrix", metric="alpha", exclude_flagged=True,
                  min_sparsity=0.1, max_sparsity=0.9, weights=weights, outlier_ratios=block_ratios(df))
    bounds = {"min_sparsity": 0.1, "max_sparsity": 0.9}
    assert allocation_options("uniform", **common) == bounds
    assert allocation_options("erk", **common) == bounds
    assert allocation_options("alphapruning", **common) == {**bounds, "lam": 0.4, "mapping": "log",
                                                            "granularity": "matrix", "metric": "alpha",
                                                            "exclude_flagged": True}
    assert allocation_options("stable_rank", **common) == {**bounds, "lam": 0.4, "mapping": "log",
                                                           "granularity": "matrix"}
    assert allocation_options("lamp", **common)["weights"] is weights
    owl = allocation_options("owl", **{**common, "granularity": "block"}, owl_lambda=0.1)
    assert owl == {**bounds, "outlier_ratios": block_ratios(df), "granularity": "block", "owl_lambda": 0.1}
    # the options run: every method meets the target with them
    for method in ALLOCATION_METHODS:
        opts = allocation_options(method, **{**common, "granularity": "block"})
        assert wmean(allocate(df, method, 0.5, **opts)) == pytest.approx(0.5, abs=1e-9), method
    with pytest.raises(ValueError, match="needs the model's weights"):
        allocation_options("global")
    with pytest.raises(ValueError, match="OWL needs calibration"):
        allocation_options("owl")
    with pytest.raises(ValueError):
        allocation_options("nope")


def test_settings_read_leaves_out_only_settings_that_do_not_change_the_allocation():
    """For every method, changing a setting outside ``settings_read(method)`` leaves its allocation identical;
    for AlphaPruning and stable rank λ (read) does change it."""
    from pruning.allocation import allocation_options, settings_read

    df = synthetic_table()
    extra = dict(weights=synthetic_weights(df), outlier_ratios=block_ratios(df))
    base = dict(lam=0.3, mapping="linear", granularity="block", metric="alpha", exclude_flagged=False)
    other = dict(lam=0.5, mapping="log", granularity="matrix", metric="stable_rank", exclude_flagged=True)
    for method in ALLOCATION_METHODS:
        read = settings_read(method)
        ref = allocate(df, method, 0.5, **allocation_options(method, **base, **extra))["sparsity"].to_numpy()
        for name, value in other.items():
            if name in read or (name == "granularity" and method == "owl"):
                continue
            got = allocate(df, method, 0.5, **allocation_options(method, **{**base, name: value}, **extra))
            np.testing.assert_array_equal(got["sparsity"].to_numpy(), ref, err_msg=f"{method}: {name}")
    for method in ("alphapruning", "stable_rank"):
        assert "lam" in settings_read(method)
        a = allocate(df, method, 0.5, **allocation_options(method, **base))["sparsity"].to_numpy()
        b = allocate(df, method, 0.5, **allocation_options(method, **{**base, "lam": 0.5}))["sparsity"].to_numpy()
        assert np.max(np.abs(a - b)) > 1e-3
    assert settings_read("uniform") == frozenset() and settings_read("owl") == {"granularity"}
