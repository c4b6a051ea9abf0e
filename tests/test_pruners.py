"""Layer pruners: exact sparsity / N:M for every registered pruner, Wanda's per-row rule, SparseGPT = OBS and = the
reference algorithm, and the reconstruction-error ordering SparseGPT < Wanda < magnitude on real layers."""
import numpy as np
import pytest
import torch

from pruning.pruners import PRUNERS, LayerStats, get_pruner
from pruning.pruners.masks import achieved_sparsity, is_nm


def _problem(rows=24, cols=64, T=400, seed=0):
    g = torch.Generator().manual_seed(seed)
    scale = torch.exp(torch.randn(cols, generator=g))  # heterogeneous feature scales (LLM-like outlier features)
    X = torch.randn(T, cols, generator=g) * scale
    W = torch.randn(rows, cols, generator=g)
    return W, X, LayerStats.from_inputs(X, needs=frozenset({"H", "K"}))


#: keep iterative pruners short here: the pattern must be exact whatever the iteration budget.
FAST = {"prox24": {"max_steps": 20}}


def _all_pruners():
    return sorted(PRUNERS)


@pytest.mark.parametrize("name", _all_pruners())
@pytest.mark.parametrize("s", [0.3, 0.5, 0.7])
def test_achieved_sparsity_equals_target(name, s):
    if get_pruner(name).only_nm is not None:
        pytest.skip(f"{name} produces {get_pruner(name).only_nm} only")
    W, X, st = _problem()
    Wn = get_pruner(name).fn(W.clone(), st, s, None, **FAST.get(name, {}))
    assert Wn.shape == W.shape
    assert (Wn == 0).sum().item() == int(round(s * W.numel()))
    assert achieved_sparsity(Wn) == pytest.approx(s, abs=0.5 / W.numel())


@pytest.mark.parametrize("name", _all_pruners())
@pytest.mark.parametrize("nm", [(2, 4), (4, 8)])
def test_nm_pattern_is_exact(name, nm):
    spec = get_pruner(name)
    if not spec.supports_nm or spec.only_nm not in (None, nm):
        pytest.skip(f"{name} does not support {nm}")
    W, X, st = _problem()
    Wn = spec.fn(W.clone(), st, 0.0, nm, **FAST.get(name, {}))
    assert is_nm(Wn, *nm)  # the contract: at most N non-zeros in every group of M
    if name in ("magnitude", "wanda", "sparsegpt"):  # mask pruners keep exactly N (no accidental zeros here)
        g = (Wn.reshape(W.shape[0], -1, nm[1]) != 0).sum(-1)
        assert (g == nm[0]).all()


def test_magnitude_prunes_smallest_abs_of_whole_matrix():
    W, _, _ = _problem()
    Wn = get_pruner("magnitude").fn(W.clone(), None, 0.5)
    a = np.sort(np.abs(W.numpy()).ravel())
    k = W.numel() // 2
    assert np.abs(W.numpy()[Wn.numpy() == 0]).max() <= a[k - 1] + 1e-12
    assert torch.equal(Wn[Wn != 0], W[Wn != 0])  # kept weights unchanged


def test_wanda_compares_scores_within_each_row():
    W, X, st = _problem(rows=16, cols=32)
    Wn = get_pruner("wanda").fn(W.clone(), st, 0.5)
    score = np.abs(W.numpy()) * np.sqrt((X.double() ** 2).sum(0).numpy())[None, :]  # independent |W|·‖X_j‖₂
    for r in range(W.shape[0]):
        pruned = Wn[r].numpy() == 0
        assert pruned.sum() == 16
        assert set(np.flatnonzero(pruned)) == set(np.argsort(score[r])[:16])
    assert torch.equal(Wn[Wn != 0], W[Wn != 0])


def _reference_fasterprune(W, H, prune_n, prune_m, blocksize=128, percdamp=0.01):
    """Independent transcription of the SparseGPT reference's N:M path (float32, as published)."""
    W = W.clone().float()
    H = H.clone().float()
    cols = W.shape[1]
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    H[range(cols), range(cols)] += percdamp * torch.mean(torch.diag(H))
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        W1 = W[:, i1:i2].clone()
        Q1, Err1 = torch.zeros_like(W1), torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        mask1 = torch.zeros_like(W1) == 1
        for i in range(i2 - i1):
            w, d = W1[:, i], Hinv1[i, i]
            if i % prune_m == 0:
                tmp = W1[:, i:i + prune_m] ** 2 / torch.diag(Hinv1)[i:i + prune_m].reshape(1, -1) ** 2
                mask1.scatter_(1, i + torch.topk(tmp, prune_n, dim=1, largest=False)[1], True)
            q = w.clone()
            q[mask1[:, i]] = 0
            Q1[:, i] = q
            err1 = (w - q) / d
            W1[:, i:] -= err1.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
            Err1[:, i] = err1
        W[:, i1:i2] = Q1
        W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])
    return W


def test_sparsegpt_nm_matches_reference_algorithm():
    W, X, _ = _problem(rows=32, cols=64, T=800, seed=3)
    X[:, 5] = 0  # a dead input
    st = LayerStats.from_inputs(X, needs=frozenset({"H"}))
    H = 2.0 / st.ntokens * st.H
    ours = get_pruner("sparsegpt").fn(W.clone(), st, 0.0, (2, 4), blocksize=16)
    ref = _reference_fasterprune(W, H, 2, 4, blocksize=16)
    assert torch.equal(ours == 0, ref == 0)  # same mask
    assert torch.allclose(ours, ref, rtol=1e-3, atol=1e-4)
    assert (ours[:, 5] == 0).all()


def test_sparsegpt_one_pruned_column_is_the_obs_update():
    """Prune only column 0 of every row: the result must be the least-squares optimum (brute force) of
    ‖(W − Ŵ) X̃‖ with Ŵ[:,0] = 0, X̃ = [X; sqrt(damp)·I] (the dampened Hessian), and the closed-form OBS update."""
    g = torch.Generator().manual_seed(1)
    rows, cols, T = 3, 8, 50
    X = torch.randn(T, cols, generator=g, dtype=torch.float64)
    R = torch.randn(rows, cols, generator=g, dtype=torch.float64)
    W = torch.sign(R) * (R.abs() + 3.0)  # every other weight has |w| ≥ 3
    W[:, 0] = torch.tensor([1e-3, -2e-3, 1.5e-3])  # column 0 has by far the lowest OBS scores
    st = LayerStats.from_inputs(X, needs=frozenset({"H"}))
    Wn = get_pruner("sparsegpt").fn(W.float(), st, 1.0 / cols, None).double()
    assert (Wn[:, 0] == 0).all() and (Wn[:, 1:] != 0).all()
    H = 2.0 / T * (X.T @ X)
    damp = 0.01 * torch.diag(H).mean()
    Xt = torch.cat([np.sqrt(2.0 / T) * X, torch.sqrt(damp) * torch.eye(cols, dtype=torch.float64)]).numpy()
    for r in range(rows):  # min_v ‖Xt[:,1:] v − Xt w_r‖²
        v, *_ = np.linalg.lstsq(Xt[:, 1:], Xt @ W[r].numpy(), rcond=None)
        assert np.allclose(Wn[r, 1:].numpy(), v, rtol=1e-4, atol=1e-4)
    # closed-form OBS: δw = −w_q / [H⁻¹]_qq · H⁻¹[:, q]
    Hinv = torch.linalg.inv(H + damp * torch.eye(cols, dtype=torch.float64))
    obs = W - (W[:, :1] / Hinv[0, 0]) * Hinv[0].unsqueeze(0)
    assert torch.allclose(Wn, obs, rtol=1e-4, atol=1e-4)


def test_sparsegpt_lazy_block_updates_do_not_change_the_result():
    """For N:M the mask is chosen per M-group whatever the block size, so blocked (lazy) and unblocked updates must
    give the same weights: checks the ``W[:, i2:] −= Err1 · U[i1:i2, i2:]`` batch update."""
    W, X, st = _problem(rows=16, cols=64, T=500, seed=5)
    outs = [get_pruner("sparsegpt").fn(W.clone(), st, 0.0, (2, 4), blocksize=b) for b in (4, 16, 128)]
    for o in outs[1:]:
        assert torch.equal(o == 0, outs[0] == 0)
        assert torch.allclose(o, outs[0], rtol=1e-4, atol=1e-5)


def test_sparsegpt_dead_inputs_and_zero_sparsity():
    W, X, _ = _problem(rows=8, cols=32)
    X[:, [2, 7]] = 0
    st = LayerStats.from_inputs(X, needs=frozenset({"H"}))
    Wn = get_pruner("sparsegpt").fn(W.clone(), st, 0.0)
    assert (Wn[:, [2, 7]] == 0).all()
    keep = [j for j in range(32) if j not in (2, 7)]
    assert torch.allclose(Wn[:, keep], W[:, keep], atol=1e-5)  # nothing else pruned, nothing to compensate


def test_sparsegpt_bad_input():
    W, X, st = _problem(cols=64)
    with pytest.raises(ValueError, match="needs the input Gram matrix"):
        get_pruner("sparsegpt").fn(W, LayerStats(10, st.sq_norm), 0.5)
    with pytest.raises(ValueError, match="divisible"):
        get_pruner("sparsegpt").fn(W, st, 0.0, (2, 3))
    with pytest.raises(ValueError, match="unknown pruner"):
        get_pruner("obs")


# ----------------------------------------------------------------------------------------------- real layers
@pytest.fixture(scope="module")
def real_layers():
    from pruning.evaluation.data import get_calibration
    from spectra.models import load_model

    lm = load_model()
    calib = get_calibration(lm.tokenizer, nsamples=8, seqlen=256, seed=0)
    names = [f"model.layers.{b}.{r}" for b in (0, 15, 29) for r in
             ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
              "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")]
    X: dict = {}

    def grab(name):
        def hook(module, args):
            X[name] = args[0].reshape(-1, args[0].shape[-1]).clone()  # dense inputs, 2048 tokens
        return hook

    hooks = [lm.model.get_submodule(n).register_forward_pre_hook(grab(n)) for n in names]
    with torch.no_grad():
        lm.model(calib, use_cache=False)
    for h in hooks:
        h.remove()
    return {n: (lm.model.get_submodule(n).weight.detach().float().clone(), X[n]) for n in names}


def test_reconstruction_error_sparsegpt_lt_wanda_lt_magnitude(real_layers):
    for name, (W, X) in real_layers.items():
        st = LayerStats.from_inputs(X, needs=frozenset({"H"}))
        err = {p: torch.linalg.norm((W - get_pruner(p).fn(W.clone(), st, 0.5)) @ X.T).item()
               for p in ("magnitude", "wanda", "sparsegpt")}
        assert err["sparsegpt"] < err["wanda"] < err["magnitude"], (name, err)
