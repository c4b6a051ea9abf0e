"""ATP and DLP against direct computations, the registry's contract, and the one-line errors of the 2025 methods."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from pruning.allocation import (
    ALLOCATION_METHODS,
    ALLOCATIONS,
    READS,
    allocate,
    atp_bound,
    atp_sparsities,
    dlp_block_scores,
)


def table(nblocks: int = 4, per=(("self_attn.q_proj", 8, 8), ("mlp.up_proj", 16, 8))) -> pd.DataFrame:
    rows = [dict(longname=f"model.layers.{b}.{s}", rows=r, cols=c) for b in range(nblocks) for s, r, c in per]
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------------- ATP
def test_atp_progression_by_hand():
    # S = 0.6, L = 4, β = 0.05: s = 0.6 − 0.05·3/2 + 0.05·i = 0.525, 0.575, 0.625, 0.675
    out = allocate(table(), "atp", 0.6, atp_beta=0.05)
    by_block = out.groupby("block")["sparsity"].first().to_numpy()
    np.testing.assert_allclose(by_block, [0.525, 0.575, 0.625, 0.675], atol=1e-12)
    assert (out.groupby("block")["sparsity"].nunique() == 1).all()  # one sparsity per block
    assert out.attrs["allocation"]["atp_beta"] == 0.05
    np.testing.assert_allclose(atp_sparsities(0.6, 4, 0.05), [0.525, 0.575, 0.625, 0.675])
    # the bound: min(2S, 2(1 − S))/(L − 1) → 0.8/3 at S = 0.6; at the bound the ends are 0.2 and 1.0
    assert atp_bound(0.6, 4) == pytest.approx(0.8 / 3)
    np.testing.assert_allclose(atp_sparsities(0.6, 4, 0.8 / 3)[[0, -1]], [0.2, 1.0])
    assert atp_bound(0.3, 31) == pytest.approx(0.6 / 30)
    # β = 0 is uniform
    assert (allocate(table(), "atp", 0.6).sparsity == 0.6).all()


def test_atp_reads_only_the_depth():
    a = table()
    b = table().assign(alpha=np.arange(8.0), rows=16, cols=16)
    np.testing.assert_array_equal(allocate(a, "atp", 0.5, atp_beta=0.02).sparsity,
                                  allocate(b, "atp", 0.5, atp_beta=0.02).sparsity)
    assert ALLOCATIONS["atp"].reads == "depth"


def test_atp_beta_outside_its_bound_is_a_one_line_error():
    with pytest.raises(ValueError, match=r"atp_beta \(--atp-beta\) 0.5 is outside \[0, 0.266667\]") as e:
        allocate(table(), "atp", 0.6, atp_beta=0.5)
    assert "\n" not in str(e.value)


def test_atp_at_the_bound_keeps_the_mean_within_max_sparsity():
    out = allocate(table(), "atp", 0.6, atp_beta=0.8 / 3)  # raw last block = 1.0 > max 0.99
    w = out.num_params.to_numpy()
    assert float(out.sparsity @ w / w.sum()) == pytest.approx(0.6, abs=1e-12)
    assert out.sparsity.max() <= 0.99 + 1e-12 and "note" in out.attrs["allocation"]


# ------------------------------------------------------------------------------------------------------- DLP
def toy_model(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    W, X = {}, {}
    for b in range(3):
        for s, r, c in (("self_attn.q_proj", 6, 4), ("mlp.down_proj", 4, 10)):
            name = f"model.layers.{b}.{s}"
            W[name] = torch.randn(r, c, generator=g, dtype=torch.float64) * (1 + b)
            X[name] = torch.rand(c, generator=g, dtype=torch.float64) * 4
    return W, X


def test_dlp_scores_by_brute_force():
    W, X = toy_model()
    got = dlp_block_scores(W, X)
    med = dlp_block_scores(W, X, statistic="median")
    for b in range(3):
        names = [n for n in W if f".{b}." in n]
        scores = [abs(W[n][i, j].item()) * X[n][j].item() ** 0.5 for n in names
                  for i in range(W[n].shape[0]) for j in range(W[n].shape[1])]
        assert got[b] == pytest.approx(np.mean(scores), rel=1e-12)  # mean of the pooled scores (DLP's code)
        lower_median = torch.tensor(scores, dtype=torch.float64).median().item()  # torch's (lower) median
        assert med[b] == pytest.approx(lower_median, rel=1e-12)


def test_dlp_allocation_by_hand():
    # scores I = 1, 2, 5 → r = 1 − I/8 = 7/8, 6/8, 3/8 → r̃ = minmax(r)·2α (α = 0.1) = 0.2, 0.15, 0
    # → s = S − r̃ + mean r̃ = 0.5 − (0.2, 0.15, 0) + 0.35/3
    df = table(3)
    out = allocate(df, "dlp", 0.5, block_scores={0: 1.0, 1: 2.0, 2: 5.0}, dlp_alpha=0.1)
    expect = 0.5 - np.array([0.2, 0.15, 0.0]) + 0.35 / 3
    np.testing.assert_allclose(out.groupby("block")["sparsity"].first().to_numpy(), expect, atol=1e-12)
    assert out.sparsity.iloc[-1] > out.sparsity.iloc[0]  # a higher score ⇒ more sparsity (DLP's code)
    np.testing.assert_array_equal(out.metric.to_numpy(), np.repeat([1.0, 2.0, 5.0], 2))


def test_dlp_from_a_toy_model_end_to_end():
    W, X = toy_model(1)
    df = pd.DataFrame({"longname": list(W), "rows": [w.shape[0] for w in W.values()],
                       "cols": [w.shape[1] for w in W.values()]})
    scores = dlp_block_scores(W, X)
    out = allocate(df, "dlp", 0.6, block_scores=scores, dlp_alpha=0.15)
    I = np.array([scores[b] for b in range(3)])
    r = 1 - I / I.sum()
    rt = (r - r.min()) / (r.max() - r.min()) * 0.3
    np.testing.assert_allclose(out.groupby("block")["sparsity"].first().to_numpy(), 0.6 - rt + rt.mean(),
                               atol=1e-12)


# -------------------------------------------------------------------------------------------------- registry
def test_registry_holds_ten_methods_with_complete_specs():
    assert len(ALLOCATION_METHODS) == 11  # + issue 20's measured "sensitivity"
    assert set(ALLOCATION_METHODS) == {"uniform", "alphapruning", "owl", "erk", "global", "lamp", "stable_rank",
                                       "farms", "atp", "dlp", "sensitivity"}
    for name, spec in ALLOCATIONS.items():
        assert spec.name == name and spec.label and spec.reads in READS and spec.source
        assert spec.fn.__doc__ and spec.fn.__module__.startswith("pruning.allocation.methods.")
        import importlib

        assert importlib.import_module(spec.fn.__module__).__doc__  # the formula and its source
        for p in spec.params:
            lo, hi = p.bounds(0.7, 30)
            assert lo <= p.default <= max(hi, p.hi) and lo < hi, (name, p)
        if spec.needs_calibration:
            assert spec.signal is not None and spec.signal_arg
    assert {n for n, s in ALLOCATIONS.items() if s.tunable} == {"alphapruning", "stable_rank", "farms", "owl",
                                                                 "dlp", "atp", "sensitivity"}


def test_allocate_has_no_per_method_branch():
    import inspect

    from pruning.allocation import allocate as allocate_module

    src = inspect.getsource(__import__("pruning.allocation.allocate", fromlist=["x"]))
    branches = [ln for ln in src.splitlines() if ln.strip().startswith(("if ", "elif "))]
    for name in ALLOCATION_METHODS:
        assert not [ln for ln in branches if f'"{name}"' in ln or f"'{name}'" in ln], name
    assert "spec.fn(ctx)" in src
    assert allocate_module.__module__ == "pruning.allocation.allocate"


def test_a_new_method_is_one_module_and_one_registry_entry(monkeypatch):
    """A table-reading method (what issue 20's ``sensitivity`` needs) registers and dispatches."""
    from pruning.allocation import registry
    from pruning.allocation.methods.owl import per_matrix, shift_allocation
    from pruning.allocation.spec import AllocationSpec, MethodResult

    def measured(ctx) -> MethodResult:
        cost, _ = per_matrix(ctx, ctx.opt.table, "table", "one value per block")
        return shift_allocation(ctx, cost, 0.1, "equal costs")

    spec = AllocationSpec("measured", "measured", "table", measured, "a test")
    monkeypatch.setitem(registry.ALLOCATIONS, "measured", spec)
    out = allocate(table(2), "measured", 0.5, table={0: 1.0, 1: 3.0})
    np.testing.assert_allclose(out.groupby("block")["sparsity"].first().to_numpy(), [0.6, 0.4])


def test_zero_parameter_is_uniform_to_the_bit_on_unequal_matrices():
    """ATP at β = 0, AlphaPruning and stable rank at λ = 0 give exactly S on every matrix whatever their sizes (the
    mean fit left an ulp before; tune and compare reuse uniform's score and final prune only on bit equality); a
    non-zero parameter still moves the sparsities."""
    per = (("self_attn.q_proj", 576, 576), ("self_attn.k_proj", 192, 576), ("mlp.up_proj", 1536, 576),
           ("mlp.down_proj", 576, 1536))
    t = table(30, per)
    t = t.assign(alpha=np.linspace(2.0, 6.0, len(t)), stable_rank=np.linspace(10.0, 60.0, len(t)))
    for S in (0.7, 0.6, 0.53, 0.1 + 0.2):
        for method, kw in (("atp", {"atp_beta": 0.0}), ("alphapruning", {"lam": 0.0}), ("stable_rank", {"lam": 0.0})):
            assert (allocate(t, method, S, **kw).sparsity.to_numpy() == S).all(), (method, S)
        assert np.ptp(allocate(t, "alphapruning", S, lam=0.1).sparsity.to_numpy()) > 0.01
