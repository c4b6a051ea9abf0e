"""The teaching helpers of notebook 07: the brute-force 2:4 prox, the correlated-inputs toy layer, output_scale."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pruning.pruners.base import LayerStats
from pruning.pruners.gd import output_scale
from pruning.pruners.prox24 import prox24, prox_objective
from pruning.pruners.prox24_reference import SUPPORTS, prox24_brute_force, support_minima
from pruning.toy_problems import correlated_pairs_layer


def test_support_minima_closed_forms_on_small_supports():
    y = np.array([0.3, -1.2, 0.05, 2.0])
    table = support_minima(y, 0.8)
    assert len(table) == len(SUPPORTS) == 16 and sorted(table["size"].value_counts().to_dict().items()) == [
        (0, 1), (1, 4), (2, 6), (3, 4), (4, 1)]
    for row in table.itertuples():
        if row.size <= 2:  # R = 0 on ≤ 2 non-zeros: keep y on the support, pay for the dropped entries only
            dropped = [i for i in range(4) if i not in row.support]
            assert row.objective == pytest.approx(0.5 * float((y[dropped] ** 2).sum()), abs=1e-15)
            assert np.array_equal(row.z[list(row.support)], y[list(row.support)])
        assert row.nonzeros <= row.size
        # each row's objective is the objective of its own z
        assert row.objective == pytest.approx(float(prox_objective(torch.tensor(row.z), torch.tensor(y), 0.8)),
                                              abs=1e-14)
    # a larger support can only do better (it contains the smaller ones)
    obj = dict(zip(table["support"], table["objective"]))
    for s in SUPPORTS:
        for t in SUPPORTS:
            if set(s) < set(t):
                assert obj[t] <= obj[s] + 1e-12


def test_brute_force_limits_and_agreement_with_the_analytic_prox():
    y = np.array([[0.4, -0.9, 1.3, 0.2]])
    Z0, F0 = prox24_brute_force(y, 0.0)  # μ = 0: the identity
    assert np.array_equal(Z0, y) and F0[0] == 0.0
    Zb, _ = prox24_brute_force(y, 1e6)  # μ huge: the two largest magnitudes, unchanged
    assert np.array_equal(Zb, np.array([[0.0, -0.9, 1.3, 0.0]]))
    with pytest.raises(ValueError, match="mu"):
        support_minima(y[0], -1.0)
    rng = np.random.default_rng(3)
    Y = rng.standard_normal((120, 4)) * np.exp(rng.uniform(-2.0, 1.5, (120, 1)))
    mu = np.exp(rng.uniform(-1.5, 1.5, 120))
    Zb, Fb = prox24_brute_force(Y, mu)
    Zp = prox24(torch.tensor(Y), torch.tensor(mu)).numpy()
    Fp = prox_objective(torch.tensor(Zp), torch.tensor(Y), torch.tensor(mu)).numpy()
    assert np.abs(Zp - Zb).max() <= 1e-6 and (Fp <= Fb + 1e-12).all()
    assert ((Zp != 0) == (Zb != 0)).all()
    assert {2, 3, 4} <= set((Zb != 0).sum(1).tolist())  # all three regimes


def test_correlated_pairs_layer_has_one_correlated_pair_per_group():
    W, X = correlated_pairs_layer(seed=1, rho=0.9, rows=8, cols=16, tokens=20000)
    assert W.shape == (8, 16) and X.shape == (20000, 16) and W.dtype == X.dtype == torch.float32
    C = np.corrcoef(X.numpy().T)
    for g in range(4):
        block = C[4 * g: 4 * g + 4, 4 * g: 4 * g + 4]
        off = np.abs(block[np.triu_indices(4, 1)])
        assert (off > 0.85).sum() == 1 and np.sort(off)[-2] < 0.05  # exactly one pair, correlation ≈ ρ
    outside = C.copy()
    for g in range(4):
        outside[4 * g: 4 * g + 4, 4 * g: 4 * g + 4] = 0
    assert np.abs(outside).max() < 0.05
    assert np.allclose(X.numpy().std(0), 1.0, atol=0.03)
    W2, X2 = correlated_pairs_layer(seed=1, rho=0.9, rows=8, cols=16, tokens=20000)
    assert torch.equal(W, W2) and torch.equal(X, X2)  # seeded
    with pytest.raises(ValueError, match="rho"):
        correlated_pairs_layer(rho=1.0)
    with pytest.raises(ValueError, match="multiple of 4"):
        correlated_pairs_layer(cols=10)


def test_output_scale_is_the_ratio_of_output_norms():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(300, 12, generator=g) * torch.linspace(0.2, 3.0, 12)
    D = X + 0.1 * torch.randn(300, 12, generator=g)
    W = torch.randn(5, 12, generator=g)
    Wn = W * (torch.rand(5, 12, generator=g) > 0.5)
    x64, d64 = X.double(), D.double()
    expect = float(torch.linalg.norm(Wn.double() @ x64.T) / torch.linalg.norm(W.double() @ x64.T))
    assert output_scale(Wn, W, LayerStats.from_inputs(X)) == pytest.approx(expect, rel=1e-12)
    # with error correction: the pruned layer sees X*, the dense one D
    expect_d = float(torch.linalg.norm(Wn.double() @ x64.T) / torch.linalg.norm(W.double() @ d64.T))
    assert output_scale(Wn, W, LayerStats.from_inputs(X, dense=D)) == pytest.approx(expect_d, rel=1e-12)
    assert output_scale(0.5 * W, W, LayerStats.from_inputs(X)) == pytest.approx(0.5, rel=1e-12)
