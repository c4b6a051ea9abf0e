"""The exact 2:4 proximal operator against brute force, and the prox24 pruner's schedule."""
import itertools

import numpy as np
import pytest
import torch
from _synthetic import synthetic_layer
from scipy.optimize import minimize

from pruning.pruners import LayerStats, get_pruner
from pruning.pruners.masks import is_nm
from pruning.pruners.prox24 import group_penalty, prox24, prox24_prune, prox_objective

_GRID = np.array(list(itertools.product(np.linspace(0.0, 1.0, 7), repeat=4)))  # 2401 points of [0, 1]^4


def _brute_prox(y: np.ndarray, mu: float, rng) -> np.ndarray:
    """argmin_z ½‖z − y‖² + μ Σ|z_i z_j z_k| by brute force, independent of the analytic reduction.

    Only the elementary facts sign(z) = sign(y) and |z| ≤ |y| are used: dense grid over the box [0, |y|]⁴,
    then bounded L-BFGS-B from the 3 best grid points and 1 random point; the best local minimum wins.
    """
    a, s = np.abs(y), np.sign(y)

    def f(u):
        return 0.5 * ((u - a) ** 2).sum(-1) + mu * (u[..., 0] * u[..., 1] * (u[..., 2] + u[..., 3])
                                                    + u[..., 2] * u[..., 3] * (u[..., 0] + u[..., 1]))

    def g(u):
        t = u.sum()
        return u - a + mu * (0.5 * (t * t - (u * u).sum()) - u * (t - u))

    pts = _GRID * a
    starts = list(pts[np.argsort(f(pts))[:3]]) + [rng.uniform(0, 1, 4) * a]
    best = None
    for z0 in starts:
        r = minimize(f, z0, jac=g, method="L-BFGS-B", bounds=[(0, ai) for ai in a],
                     options=dict(ftol=1e-16, gtol=1e-14, maxiter=5000))
        if best is None or r.fun < best.fun:
            best = r
    return best.x * s


def test_prox_matches_brute_force_on_random_groups():
    rng = np.random.default_rng(0)
    n = 2000
    Y = rng.standard_normal((n, 4)) * np.exp(rng.uniform(-2.0, 1.5, (n, 1)))
    Y[: n // 8, 1] = Y[: n // 8, 0] * (1 + 1e-3 * rng.standard_normal(n // 8))  # near-ties
    Y[n // 8: n // 4] = (1 + 0.2 * rng.standard_normal((n // 8, 4))) * np.exp(rng.uniform(-1.5, 0.5, (n // 8, 1)))
    mu = np.exp(rng.uniform(-1.5, 1.5, n))
    Z = prox24(torch.tensor(Y), torch.tensor(mu)).numpy()
    obj = prox_objective(torch.tensor(Z), torch.tensor(Y), torch.tensor(mu)).numpy()
    worst_dz, support = 0.0, np.zeros(5, int)
    for i in range(n):
        zb = _brute_prox(Y[i], mu[i], rng)
        fb = float(prox_objective(torch.tensor(zb), torch.tensor(Y[i]), mu[i]))
        assert obj[i] <= fb + 1e-12 * (1 + abs(fb)), (i, Y[i], mu[i], Z[i], zb)  # never worse than brute force
        worst_dz = max(worst_dz, float(np.abs(Z[i] - zb).max()))
        support[int((Z[i] != 0).sum())] += 1
    assert worst_dz <= 1e-6
    assert support[2] > 200 and support[3] > 200 and support[4] > 100  # all three regimes were exercised


def test_prox_elementary_properties():
    g = torch.Generator().manual_seed(1)
    Y = torch.randn(500, 4, generator=g, dtype=torch.float64)
    assert torch.equal(prox24(Y, 0.0), Y)  # μ = 0: identity
    Z = prox24(Y, 0.7)
    assert bool(((Z == 0) | (torch.sign(Z) == torch.sign(Y))).all())  # signs kept
    assert bool((Z.abs() <= Y.abs() + 1e-15).all())  # shrinks
    assert bool((prox_objective(Z, Y, 0.7) <= prox_objective(Y, Y, 0.7) + 1e-15).all())
    # already 2-sparse groups have R = 0: unchanged
    Y2 = Y.clone()
    Y2[:, 2:] = 0
    assert torch.equal(prox24(Y2, 3.0), Y2)
    # very large μ: exactly the two largest magnitudes survive, unchanged
    Zb = prox24(Y, 1e6)
    keep = torch.topk(Y.abs(), 2, dim=-1).indices
    expect = torch.zeros_like(Y).scatter_(1, keep, Y.gather(1, keep))
    assert torch.equal(Zb, expect)
    # shapes and per-group μ broadcast; the penalty is the triple sum
    Y3 = Y.reshape(20, 25, 4)
    mu = torch.linspace(0.1, 2.0, 25)
    assert torch.allclose(prox24(Y3, mu), prox24(Y3.reshape(-1, 4), mu.repeat(20)).reshape(20, 25, 4))
    w = torch.tensor([1.0, -2.0, 3.0, 0.5])
    assert float(group_penalty(w)) == pytest.approx(1 * 2 * 3 + 1 * 2 * 0.5 + 1 * 3 * 0.5 + 2 * 3 * 0.5)
    with pytest.raises(ValueError, match="groups of 4"):
        prox24(torch.randn(3, 5), 1.0)
    with pytest.raises(ValueError, match="mu"):
        prox24(Y, -1.0)


def _layer(seed, out=32, n=64, T=400):
    W, X, D = synthetic_layer(seed, out, n, T)
    return W, LayerStats.from_inputs(X, dense=D)


@pytest.mark.parametrize("seed", [0, 1])
def test_pruner_schedule_ends_exactly_2_4(seed):
    W, st = _layer(seed)
    Wn, info = prox24_prune(W, st, record=True)
    assert info.converged and info.forced_groups == 0  # every group reached ≤ 2 non-zeros by the prox itself
    assert is_nm(Wn, 2, 4) and Wn.dtype == torch.float32
    groups = (Wn.reshape(W.shape[0], -1, 4) != 0).sum(-1)
    assert int(groups.max()) <= 2 and int(groups.min()) >= 1
    assert info.steps == len(info.history) >= 2
    # masked gradient updates afterwards keep the mask and lower the loss
    Wg, _ = prox24_prune(W, st, gd_steps=30)
    assert torch.equal(Wg != 0, (Wg != 0) & (Wn != 0)) and is_nm(Wg, 2, 4)
    from pruning.pruners.gd import local_loss

    assert local_loss(Wg, W, st) < local_loss(Wn, W, st)


def test_max_steps_forces_the_pattern_and_counts_it():
    W, st = _layer(3)
    Wn, info = prox24_prune(W, st, max_steps=1, mu0=1e-4)
    assert not info.converged and info.forced_groups > 0 and is_nm(Wn, 2, 4)


def test_registered_pruner_and_errors():
    spec = get_pruner("prox24")
    assert spec.needs == frozenset({"H", "K"}) and spec.supports_nm
    W, st = _layer(4)
    assert is_nm(spec.fn(W.clone(), st, 0.5, (2, 4), max_steps=400), 2, 4)
    with pytest.raises(ValueError, match="2:4"):
        spec.fn(W.clone(), st, 0.5, None)
    with pytest.raises(ValueError, match="2:4"):
        spec.fn(W.clone(), st, 0.5, (4, 8))
    with pytest.raises(ValueError, match="unknown prox24 option"):
        spec.fn(W.clone(), st, 0.5, (2, 4), lr=3)
    with pytest.raises(ValueError, match="multiple of 4"):
        prox24_prune(W[:, :62], LayerStats.from_inputs(torch.randn(50, 62)))
    with pytest.raises(ValueError, match="growth"):
        prox24_prune(W, st, growth=1.0)


@pytest.mark.parametrize("precondition", [True, False])
def test_record_holds_the_schedule(precondition):
    """record=True: per step μ_t = mu0·growth^t/rms(V) (V = W, or W·diag(√H_jj) when preconditioned), the groups
    still not 2:4 and the loss (one entry each)."""
    from pruning.pruners.gd import local_loss

    W, st = _layer(5)
    mu0, growth = 2e-2, 1.2
    Wn, info = prox24_prune(W, st, mu0=mu0, growth=growth, record=True, precondition=precondition,
                            dtype=torch.float64)  # float64 steps: the recorded losses match to 1e-6
    T = info.steps
    assert info.converged and T >= 2
    assert len(info.mus) == len(info.non24) == len(info.history) == T
    V = W.to(torch.float64) * (st.H.diagonal().sqrt() if precondition else 1.0)
    rms = float(V.pow(2).mean().sqrt())
    np.testing.assert_allclose(info.mus, mu0 * growth ** np.arange(T) / rms, rtol=1e-12, atol=0)
    assert info.mu_final == info.mus[-1]
    # the loop stops at the first step after which every group is 2:4, so only the last count is 0
    assert info.non24[-1] == 0 and min(info.non24[:-1]) > 0
    assert info.groups == W.numel() // 4 and max(info.non24) <= info.groups
    # the count after step k is what a run stopped after k steps finds (and then cuts to 2:4)
    k = T // 2
    _, short = prox24_prune(W, st, mu0=mu0, growth=growth, max_steps=k, precondition=precondition,
                            dtype=torch.float64)
    assert not short.converged and short.forced_groups == info.non24[k - 1] and short.mus == []
    # history + constant = the local loss ½‖W*X* − WX‖F² of the returned weight
    assert info.history[-1] + info.loss_const == pytest.approx(local_loss(Wn, W, st), rel=1e-6)
    sched = info.schedule()
    assert list(sched["step"]) == list(range(T))
    np.testing.assert_array_equal(sched["mu"], info.mus)
    np.testing.assert_array_equal(sched["non24_frac"], np.asarray(info.non24) / info.groups)
    np.testing.assert_allclose(sched["rel_error"] ** 2 * info.loss_const, sched["loss"], rtol=1e-12)
    # not converged within max_steps: the last count is the number of groups cut by force
    _, forced = prox24_prune(W, st, mu0=1e-4, max_steps=3, record=True)
    assert not forced.converged and len(forced.mus) == len(forced.non24) == 3
    assert forced.non24[-1] == forced.forced_groups > 0
