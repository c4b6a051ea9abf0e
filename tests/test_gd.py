"""Masked gradient updates and the local objective (pruning/pruners/gd.py) against direct computations."""
import numpy as np
import pytest
import torch
from _synthetic import synthetic_layer

from pruning.pruners import LayerStats, get_pruner
from pruning.pruners.gd import lipschitz, local_loss, local_objective, masked_gd, relative_error


def _layer(seed: int, out: int = 24, n: int = 40, T: int = 300, correction: bool = True):
    """Correlated inputs with heavy-tailed feature scales (like LLM activations) and a perturbed dense stream."""
    W, X, D = synthetic_layer(seed, out, n, T, scale_sigma=1.0, noise=0.2, correction=correction)
    return W, X.double(), D.double()


def test_local_loss_matches_direct_computation():
    W, X, D = _layer(0)
    Wn = W.clone()
    Wn[torch.rand(W.shape, generator=torch.Generator().manual_seed(1)) < 0.5] = 0
    st = LayerStats.from_inputs(X, dense=D)
    direct = 0.5 * float(((X @ Wn.double().T - D @ W.double().T) ** 2).sum())
    assert local_loss(Wn, W, st) == pytest.approx(direct, rel=1e-10)
    rel = float(torch.linalg.norm(X @ Wn.double().T - D @ W.double().T) / torch.linalg.norm(D @ W.double().T))
    assert relative_error(Wn, W, st) == pytest.approx(rel, rel=1e-9)
    # gradient W*H − WK against a central finite difference of the direct loss
    obj = local_objective(W, st)
    E = torch.zeros_like(W, dtype=torch.float64)
    E[3, 7] = 1e-4
    f = lambda M: 0.5 * float(((X @ M.T - D @ W.double().T) ** 2).sum())  # noqa: E731
    fd = (f(Wn.double() + E) - f(Wn.double() - E)) / 2e-4
    assert float(obj.grad(Wn)[3, 7]) == pytest.approx(fd, rel=1e-6)


def test_without_K_the_dense_inputs_are_the_pruned_ones():
    W, X, _ = _layer(2, correction=False)
    Wn = W * (torch.rand(W.shape, generator=torch.Generator().manual_seed(3)) < 0.6)
    st = LayerStats(ntokens=X.shape[0], sq_norm=(X * X).sum(0), H=X.T @ X)  # H only, as the loop gives with gd_steps
    direct = 0.5 * float(((X @ (Wn - W).double().T) ** 2).sum())
    assert local_loss(Wn, W, st) == pytest.approx(direct, rel=1e-10)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("correction", [False, True])
@pytest.mark.parametrize("precondition", [False, True])
def test_masked_gd_keeps_mask_and_never_increases_loss(seed, correction, precondition):
    W, X, D = _layer(seed, correction=correction)
    st = LayerStats.from_inputs(X, dense=D)
    W0 = get_pruner("wanda").fn(W.clone(), st, 0.6, None)
    mask = W0 != 0
    assert torch.equal(masked_gd(W0, W, st, 0, precondition=precondition), W0)  # 0 steps: the start itself
    Wn, hist = masked_gd(W0, W, st, 200, return_history=True, precondition=precondition)
    assert hist[0] == pytest.approx(local_objective(W, st).quad_linear(W0), rel=1e-12)  # history starts at W0
    assert torch.equal(Wn[~mask], torch.zeros_like(Wn[~mask]))  # pruned entries stay exactly zero
    assert Wn.dtype == W0.dtype and Wn.shape == W0.shape
    h = np.array(hist)
    assert np.all(np.diff(h) <= 1e-12 * np.abs(h[:-1]).max())  # monotone (up to rounding of the float64 loss)
    assert local_loss(Wn, W, st) < 0.99 * local_loss(W0, W, st)  # and it actually improves a Wanda mask


def test_masked_gd_with_explicit_mask_keeps_zero_valued_kept_entries_allowed():
    W, X, D = _layer(4)
    st = LayerStats.from_inputs(X, dense=D)
    keep = torch.rand(W.shape, generator=torch.Generator().manual_seed(5)) < 0.5
    start = torch.zeros_like(W)  # all zero, but the mask allows the kept entries to grow
    Wn = masked_gd(start, W, st, 50, mask_keep=keep)
    assert torch.equal(Wn[~keep], torch.zeros_like(Wn[~keep]))
    assert bool((Wn[keep] != 0).any())
    assert local_loss(Wn, W, st) < local_loss(start, W, st)


def test_masked_gd_full_mask_converges_to_least_squares():
    # all entries kept, well-conditioned inputs: GD → the unconstrained minimiser W K H⁻¹ (closed form)
    g = torch.Generator().manual_seed(7)
    n, T = 12, 400
    X = torch.randn(T, n, generator=g, dtype=torch.float64)
    D = X + 0.3 * torch.randn(T, n, generator=g, dtype=torch.float64)
    W = torch.randn(5, n, generator=g, dtype=torch.float64).float()
    st = LayerStats.from_inputs(X, dense=D)
    exact = W.double() @ st.K @ torch.linalg.inv(st.H)
    Wn = masked_gd(W, W, st, 3000, mask_keep=torch.ones_like(W, dtype=torch.bool), dtype=torch.float64)
    assert torch.allclose(Wn.double(), exact, atol=1e-5)


def test_lipschitz_is_the_largest_eigenvalue():
    A = torch.randn(30, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    H = A.T @ A
    assert lipschitz(H) == pytest.approx(float(np.linalg.eigvalsh(H.numpy())[-1]), rel=1e-12)


def test_zero_steps_is_identity_and_bad_inputs_raise():
    W, X, D = _layer(9)
    st = LayerStats.from_inputs(X, dense=D)
    W0 = W * (W.abs() > 0.1)
    assert torch.equal(masked_gd(W0, W, st, 0), W0)
    with pytest.raises(ValueError, match="steps"):
        masked_gd(W0, W, st, -1)
    with pytest.raises(ValueError, match="differ in shape"):
        masked_gd(W0[:3], W, st, 5)
    with pytest.raises(ValueError, match="stats.H"):
        masked_gd(W0, W, LayerStats(ntokens=1, sq_norm=torch.ones(W.shape[1])), 5)
    with pytest.raises(ValueError, match="inputs"):
        masked_gd(W0[:, :10], W[:, :10], st, 5)


def test_preconditioned_masked_gd_reaches_the_masked_least_squares_optimum_faster():
    # per row, the optimum on the kept support S solves H_SS w_S = (W K)_S (closed form); heavy-tailed feature
    # scales make plain 1/λ_max(H) steps crawl while the diagonally rescaled descent gets there
    W, X, D = _layer(8, out=6, n=16, T=400)
    st = LayerStats.from_inputs(X, dense=D)
    W0 = get_pruner("wanda").fn(W.clone(), st, 0.5, None)
    keep = W0 != 0
    G = W.double() @ st.K
    exact = torch.zeros_like(G)
    for r in range(W.shape[0]):
        S = keep[r]
        exact[r, S] = torch.linalg.solve(st.H[S][:, S], G[r, S])
    best = local_loss(exact, W, st)
    pre = masked_gd(W0, W, st, 3000, precondition=True, dtype=torch.float64)
    plain = masked_gd(W0, W, st, 3000, precondition=False, dtype=torch.float64)
    assert torch.equal(pre == 0, ~keep | (pre == 0)) and torch.all(pre[~keep] == 0)
    assert local_loss(pre, W, st) == pytest.approx(best, rel=1e-6)
    assert local_loss(pre, W, st) - best < 0.1 * (local_loss(plain, W, st) - best)
