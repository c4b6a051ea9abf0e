"""FISTAPruner (pruning/pruners/fista.py): LASSO optimum vs independent solvers, λ search, λ path, error correction."""
import copy

import numpy as np
import pandas as pd
import pytest
import torch
from _synthetic import synthetic_layer

from pruning.pruners import LayerStats, get_pruner
from pruning.pruners.fista import fista_lambda_path, fista_lasso, fista_prune, soft_threshold
from pruning.pruners.gd import local_loss
from pruning.pruners.masks import is_nm


def _coordinate_descent(H: np.ndarray, G: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """Independent LASSO solver: cyclic coordinate descent per row, until no coordinate moves (1e-15)."""
    out, n = G.shape
    W = np.zeros_like(G)
    for r in range(out):
        w = np.zeros(n)
        for _ in range(100000):
            old = w.copy()
            for j in range(n):
                rho = G[r, j] - H[j] @ w + H[j, j] * w[j]
                w[j] = np.sign(rho) * max(abs(rho) - lam[r], 0.0) / H[j, j]
            if np.abs(w - old).max() < 1e-15:
                break
        W[r] = w
    return W


def _lasso_problem(seed: int, n: int = 12, out: int = 4, T: int = 40):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((T, n)) * np.exp(rng.uniform(-1.5, 1.5, n))  # badly scaled features
    D = X + 0.3 * rng.standard_normal((T, n))
    W = rng.standard_normal((out, n))
    H, G = X.T @ X, W @ (D.T @ X)
    lam = np.abs(G).max() * rng.uniform(0.02, 0.4, out)
    return H, G, lam


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("precondition", [False, True])
def test_fista_reaches_the_lasso_optimum(seed, precondition):
    H, G, lam = _lasso_problem(seed)
    ref = _coordinate_descent(H, G, lam)
    res = fista_lasso(torch.tensor(H), torch.tensor(G), torch.tensor(lam), max_iter=200000, tol=1e-15,
                      precondition=precondition)
    assert np.abs(res.W.numpy() - ref).max() < 1e-8 * max(1.0, np.abs(ref).max())
    assert np.array_equal(res.W.numpy() == 0, ref == 0)  # same support (exact zeros from the soft threshold)
    assert 0 < (ref == 0).mean() < 1  # a non-trivial problem


def test_orthogonal_design_closed_form():
    # H = c·I: the LASSO decouples, W* = S_{λ/c}(G / c)
    rng = np.random.default_rng(5)
    c, G = 3.7, rng.standard_normal((6, 10))
    res = fista_lasso(torch.eye(10, dtype=torch.float64) * c, torch.tensor(G), 0.8, max_iter=5000, tol=1e-16)
    expect = np.sign(G) * np.maximum(np.abs(G / c) - 0.8 / c, 0)
    assert np.abs(res.W.numpy() - expect).max() < 1e-14
    assert torch.equal(soft_threshold(torch.tensor([-2.0, -0.5, 0.0, 0.5, 2.0]), 1.0),
                       torch.tensor([-1.0, -0.0, 0.0, 0.0, 1.0]))


def test_one_step_from_a_warm_start_is_a_proximal_gradient_step():
    H, G, lam = _lasso_problem(3)
    W0 = np.random.default_rng(4).standard_normal(G.shape)
    L = float(np.linalg.eigvalsh(H)[-1])
    res = fista_lasso(torch.tensor(H), torch.tensor(G), 0.5, torch.tensor(W0), max_iter=1, tol=0)
    V = W0 - (W0 @ H - G) / L
    assert np.abs(res.W.numpy() - np.sign(V) * np.maximum(np.abs(V) - 0.5 / L, 0)).max() < 1e-12
    assert res.iters == 1 and not res.converged


def _layer(seed, out=32, n=64, T=400):
    W, X, D = synthetic_layer(seed, out, n, T)
    return W, LayerStats.from_inputs(X, dense=D)


@pytest.mark.parametrize("target", [0.3, 0.5, 0.7])
@pytest.mark.parametrize("scope", ["layer", "row"])
def test_lambda_search_hits_the_target(target, scope):
    W, st = _layer(int(target * 10))
    Wn, info = fista_prune(W, st, target, lambda_scope=scope, max_iter=300, search_steps=30)
    assert info.units_missed == 0
    assert target - 0.03 <= info.lasso_sparsity <= target + 1e-12  # the LASSO solution itself is near the target
    assert int((Wn == 0).sum()) == round(target * W.numel())  # exact after the projection
    if scope == "row":
        per_row = (Wn == 0).sum(1)
        assert int(per_row.max() - per_row.min()) <= 1
    # the λ path of the search: sparsity grows with λ among the solves (up to the solves' inexactness)
    path = sorted(info.path, key=lambda p: p["lambda"])
    assert path[0]["sparsity"] < path[-1]["sparsity"]


def test_two_four_and_warm_starts():
    W, st = _layer(11)
    mag = local_loss(get_pruner("magnitude").fn(W.clone(), None, 0.5, (2, 4)), W, st)
    for ws in ("wanda", "sparsegpt", "dense"):
        Wn, info = fista_prune(W, st, 0.5, (2, 4), warm_start=ws)
        assert is_nm(Wn, 2, 4)
        assert local_loss(Wn, W, st) < mag  # better than the magnitude 2:4 mask
    for ws in ("wanda", "sparsegpt"):
        Wn = fista_prune(W, st, 0.5, warm_start=ws)[0]
        assert int((Wn == 0).sum()) == W.numel() // 2
        assert local_loss(Wn, W, st) < local_loss(get_pruner("magnitude").fn(W.clone(), None, 0.5, None), W, st)


def test_two_four_fill_gives_exactly_the_pattern_where_the_lasso_zeroes_whole_groups():
    # the LASSO spreads its zeros unevenly over the groups of 4: some groups end with 3-4 zeros, so the hard
    # threshold alone is sparser than 2:4; fill="dense" keeps exactly 2 per group, the extra ones with their
    # dense weight (ranked by the dense Wanda score), and never touches a non-zero the threshold kept
    W, st = _layer(12)
    W[:, :16] *= 0.05  # small weights in the first 4 groups of every row: the LASSO zeroes them whole
    raw, _ = fista_prune(W, st, 0.5, (2, 4), fill="none", refit="none")  # the projection alone (no re-fit)
    full, _ = fista_prune(W, st, 0.5, (2, 4), fill="dense", refit="none")
    assert is_nm(raw, 2, 4) and is_nm(full, 2, 4)
    assert int((raw == 0).sum()) > W.numel() // 2  # over-sparse without the fill
    assert int((full == 0).sum()) == W.numel() // 2  # exactly 2 of every 4 kept
    added = (raw == 0) & (full != 0)
    assert bool(added.any()) and torch.equal(full[added], W[added])  # filled positions hold the dense weight
    assert torch.equal(full[raw != 0], raw[raw != 0])
    with pytest.raises(ValueError, match="unknown fill"):
        fista_prune(W, st, 0.5, (2, 4), fill="zeros")


def test_select_by_loss_is_never_worse_than_by_sparsity():
    W, st = _layer(12)
    for nm in (None, (2, 4)):  # a property of the projection: compared without the re-fit
        a = fista_prune(W, st, 0.5, nm, select="sparsity", refit="none")[0]
        b = fista_prune(W, st, 0.5, nm, select="loss", refit="none")[0]
        assert local_loss(b, W, st) <= local_loss(a, W, st) * (1 + 1e-6)


def test_lambda_path_table():
    W, st = _layer(13, out=16, n=32)
    df = fista_lambda_path(W, st, num=10, max_iter=3000, tol=1e-9)
    assert isinstance(df, pd.DataFrame)
    assert list(df.columns) == ["lambda", "lambda_rel", "sparsity", "rel_error", "iters"]
    assert df["lambda"].is_monotonic_decreasing and df["lambda_rel"].iloc[0] == pytest.approx(1.0)
    assert df["sparsity"].iloc[0] == 1.0 and df["rel_error"].iloc[0] == pytest.approx(1.0)  # λ_max: W* = 0
    assert df["sparsity"].iloc[-1] < 0.5
    # the LASSO fit error is non-increasing as λ decreases (a property of exact LASSO solutions)
    assert np.all(np.diff(df["rel_error"].to_numpy()) <= 1e-6)
    custom = fista_lambda_path(W, st, lambdas=[df["lambda"].iloc[3]], max_iter=3000, tol=1e-9)
    assert len(custom) == 1 and 0 < custom["sparsity"].iloc[0] < 1


def test_registration_and_errors():
    spec = get_pruner("fista")
    assert spec.needs == frozenset({"H", "K"}) and spec.supports_nm
    W, st = _layer(14, out=8, n=16)
    assert torch.equal(spec.fn(W.clone(), st, 0.0), W)  # nothing to prune
    with pytest.raises(ValueError, match="unknown fista option"):
        spec.fn(W.clone(), st, 0.5, foo=1)
    with pytest.raises(ValueError, match="lambda_scope"):
        fista_prune(W, st, 0.5, lambda_scope="block")
    with pytest.raises(ValueError, match="warm_start"):
        fista_prune(W, st, 0.5, warm_start="obs")
    with pytest.raises(ValueError, match="sparsity"):
        fista_prune(W, st, 1.2)
    with pytest.raises(ValueError, match="stats.H"):
        fista_prune(W, LayerStats(ntokens=1, sq_norm=torch.ones(16)), 0.5, warm_start="dense")
    with pytest.raises(ValueError, match="multiple of 4"):
        fista_prune(W[:, :14], LayerStats.from_inputs(torch.randn(30, 14)), 0.5, (2, 4))


# ------------------------------------------------------------------------------------------- real layers
_GROUPS = [["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"], ["self_attn.o_proj"],
           ["mlp.gate_proj", "mlp.up_proj"], ["mlp.down_proj"]]


class _Stop(Exception):
    pass


def test_intra_layer_correction_lowers_block_output_error():
    """Block 3 of the built-in model, 512 calibration tokens of C4, 50% unstructured FISTA (small budget):
    sublayers pruned in order q,k,v → o → gate,up → down; with ``intra`` the targets are the dense sublayers'
    inputs on the same block input, with ``none`` the pruned stream's own inputs."""
    from pruning.evaluation.data import get_calibration
    from spectra.models import load_model

    torch.manual_seed(0)
    lm = load_model()
    model = lm.model
    calib = get_calibration(lm.tokenizer, nsamples=4, seqlen=128, seed=0)
    blocks = model.model.layers
    got = {}

    def grab(module, args, kwargs):
        got["hidden"] = args[0] if args else kwargs["hidden_states"]
        got["kwargs"] = {k: v for k, v in kwargs.items() if k != "hidden_states"}
        raise _Stop

    h = blocks[3].register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with torch.no_grad():
            model(input_ids=calib, use_cache=False)
    except _Stop:
        pass
    finally:
        h.remove()
    hidden, kwargs = got["hidden"], dict(got["kwargs"], use_cache=False, past_key_values=None)
    dense = blocks[3]

    def run(block):
        with torch.no_grad():
            out = block(hidden, **dict(kwargs))
        return out[0] if isinstance(out, (tuple, list)) else out

    def inputs_of(block, name):
        mod = dict(block.named_modules())[name]
        box = {}

        def hook(m, args):
            box["x"] = args[0].detach()
            raise _Stop

        hh = mod.register_forward_pre_hook(hook)
        try:
            run(block)
        except _Stop:
            pass
        finally:
            hh.remove()
        return box["x"]

    ref = run(dense)
    opts = dict(max_iter=10, search_steps=4)
    errors = {}
    shared_qkv = None
    for mode in ("none", "intra"):
        blk = copy.deepcopy(dense)
        mods = dict(blk.named_modules())
        for g, group in enumerate(_GROUPS):
            if g == 0 and shared_qkv is not None:  # q,k,v see the same block input in both modes
                for name in group:
                    mods[name].weight.data.copy_(shared_qkv[name])
                continue
            x = inputs_of(blk, group[0])
            d = inputs_of(dense, group[0])
            st = LayerStats.from_inputs(x, dense=d if mode == "intra" else None)
            for name in group:
                W = mods[name].weight.data.clone()
                mods[name].weight.data.copy_(fista_prune(W, st, 0.5, **opts)[0])
            if g == 0:
                shared_qkv = {name: mods[name].weight.data.clone() for name in group}
        assert all(abs(float((mods[n].weight == 0).float().mean()) - 0.5) < 1e-6 for grp in _GROUPS for n in grp)
        errors[mode] = float((run(blk) - ref).norm() / (ref - hidden).norm())
    assert errors["intra"] < 0.8 * errors["none"], errors
