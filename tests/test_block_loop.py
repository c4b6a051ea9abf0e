"""The block-by-block loop against a manual computation that runs the *whole* model with hooks at every step."""
import copy

import pytest
import torch
import transformers as tf

from pruning.block_loop import collect_input_norms, prune_blocks
from pruning.blocks import block_linears, capture_block_inputs, input_groups
from pruning.pruners import PRUNERS, LayerStats, PrunerSpec, get_pruner

VOCAB = 300


def tiny(arch: str, seed: int = 0):
    torch.manual_seed(seed)
    cfg = {
        "llama": lambda: tf.LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                                        num_attention_heads=4, num_key_value_heads=2),
        "opt": lambda: tf.OPTConfig(vocab_size=VOCAB, hidden_size=64, ffn_dim=128, num_hidden_layers=3,
                                    num_attention_heads=4, word_embed_proj_dim=64, max_position_embeddings=64),
        "gpt2": lambda: tf.GPT2Config(vocab_size=VOCAB, n_embd=64, n_layer=3, n_head=4, n_positions=64,
                                      bos_token_id=0, eos_token_id=0),
    }[arch]()
    return tf.AutoModelForCausalLM.from_config(cfg).eval()


@pytest.fixture(scope="module")
def calib():
    return torch.randint(0, VOCAB, (6, 32), generator=torch.Generator().manual_seed(1))


def _layers(model):
    """(block, longname, module, transposed) of every block linear, in block order (independent enumeration)."""
    out = []
    for lst in block_linears(model):
        for lin in lst:
            out.append(lin)
    return out


def _W(lin):
    w = lin.module.weight.detach().float()
    return (w.T if lin.transposed else w).clone()


def _inputs(model, calib, names) -> dict:
    """Inputs (T, in) of the named modules in one full forward of ``model`` on all windows at once."""
    X, hooks = {}, []
    for n in names:
        def hook(mod, args, n=n):
            X[n] = args[0].reshape(-1, args[0].shape[-1]).detach().clone()
        hooks.append(model.get_submodule(n).register_forward_pre_hook(hook))
    with torch.no_grad():
        model(calib, use_cache=False)
    for h in hooks:
        h.remove()
    return X


def _manual(model, calib, sparsity, pruner, stages_of_block, dense_inputs=False):
    """Reference semantics: for each block and stage, run the whole current model on ``calib`` to get the inputs,
    prune the stage's layers from those statistics. ``dense_inputs=True`` = the *wrong* variant that takes every
    block's inputs from the dense model (no propagation), used to show the test is sensitive."""
    spec = get_pruner(pruner)
    dense = copy.deepcopy(model)
    by_block = block_linears(model)
    for lins in by_block:
        for stage in stages_of_block(lins):
            X = _inputs(dense if dense_inputs else model, calib, [l.longname for l in stage])
            for lin in stage:
                st = LayerStats.from_inputs(X[lin.longname], needs=frozenset({"H"}))
                lin.set(spec.fn(_W(lin), st, sparsity, None))
    return model


def _one_stage(lins):
    return [lins]


def _groups(lins):
    names = [l.role for l in lins]
    if "q" in names:
        order = [["q", "k", "v"], ["o"], ["gate", "up"] if "gate" in names else ["fc1"],
                 ["down"] if "down" in names else ["fc2"]]
    else:
        order = [["c_attn"], ["attn.c_proj"], ["c_fc"], ["mlp.c_proj"]]
    return [[l for l in lins if l.role in g] for g in order]


def _compare(a, b, min_agree=0.999):
    for la, lb in zip(_layers(a), _layers(b)):
        Wa, Wb = _W(la), _W(lb)
        agree = ((Wa == 0) == (Wb == 0)).float().mean().item()
        assert agree >= min_agree, (la.longname, agree)
        both = (Wa != 0) & (Wb != 0)
        assert torch.allclose(Wa[both], Wb[both], rtol=1e-3, atol=1e-4), la.longname


@pytest.mark.parametrize("arch", ["llama", "opt", "gpt2"])
@pytest.mark.parametrize("pruner,sub", [("wanda", False), ("sparsegpt", False), ("sparsegpt", True)])
def test_next_block_sees_pruned_outputs(arch, pruner, sub, calib):
    dense = tiny(arch)
    ours = copy.deepcopy(dense)
    res = prune_blocks(ours, calib, 0.5, pruner, sublayers_in_order=sub, batch_size=4, progress=False)
    assert all(abs(r["achieved"] - r["target"]) < 1e-3 for r in res.layers)
    manual = _manual(copy.deepcopy(dense), calib, 0.5, pruner, _groups if sub else _one_stage)
    _compare(ours, manual)
    # sensitivity: pruning every block from dense inputs gives different masks after block 0
    wrong = _manual(copy.deepcopy(dense), calib, 0.5, pruner, _one_stage, dense_inputs=True)
    later = [(la, lb) for la, lb in zip(_layers(ours), _layers(wrong)) if la.block > 0]
    diff = sum(int(((_W(la) == 0) != (_W(lb) == 0)).sum()) for la, lb in later)
    assert diff > 0


def test_input_groups_follow_the_block_dataflow(calib):
    expect = {"llama": [["q", "k", "v"], ["o"], ["gate", "up"], ["down"]],
              "opt": [["q", "k", "v"], ["o"], ["fc1"], ["fc2"]],
              "gpt2": [["c_attn"], ["attn.c_proj"], ["c_fc"], ["mlp.c_proj"]]}
    for arch, groups in expect.items():
        m = tiny(arch)
        chunk = capture_block_inputs(m, calib[:2], 2)[0]
        got = input_groups(m.get_submodule(block_linears(m)[1][0].longname.rsplit(".", 2)[0]), block_linears(m)[1],
                           chunk)
        assert [[l.role for l in g] for g in got] == groups, arch


def test_collect_input_norms_equals_dense_forward(calib):
    m = tiny("llama")
    norms = collect_input_norms(m, calib, batch_size=4)
    names = [l.longname for l in _layers(m)]
    X = _inputs(m, calib, names)
    assert set(norms) == set(names)
    for n in names:
        ref = (X[n].double() ** 2).sum(0)
        assert torch.allclose(norms[n], ref, rtol=1e-5), n


_REC: list = []


@pytest.fixture
def recording_pruner():
    """A pruner that needs K and records the statistics it gets, then prunes by magnitude (stats-independent,
    so the final weights are known in advance)."""
    def rec(W, stats, sparsity, nm=None, **opts):
        _REC.append(stats)
        return get_pruner("magnitude").fn(W, None, sparsity, nm)

    PRUNERS["_rec_k"] = PrunerSpec("_rec_k", rec, needs=frozenset({"K", "D"}))
    _REC.clear()
    yield "_rec_k"
    PRUNERS.pop("_rec_k", None)


def _close(a, b, tol=1e-5):
    """max-abs error within ``tol`` of the reference's scale (float32 products, float64 sums)."""
    return (a - b).abs().max().item() <= tol * b.abs().max().item()


def _hybrid(dense, final, pruned_blocks_below: int, done: set):
    """A copy of ``dense`` whose layers in blocks < ``pruned_blocks_below`` and in ``done`` carry the final weights."""
    hyb = copy.deepcopy(dense)
    for hl, fl in zip(_layers(hyb), _layers(final)):
        if fl.block < pruned_blocks_below or fl.longname in done:
            hl.set(_W(fl))
    return hyb


# mode → (block inputs from the pruned model?, sublayers in call order?, dense targets?)
MODES = {"sequential": (True, False, False), "none": (False, False, False), "intra": (False, True, True),
         "intra+inter": (True, True, True), "intra-pruned": (True, True, "block")}


@pytest.mark.parametrize("correction", list(MODES))
def test_error_correction_statistics(correction, calib, recording_pruner):
    """Each mode's statistics equal the ones built by hand from whole-model forwards with hooks: x from the model
    whose upstream layers carry the final weights as the mode says, d from the target the mode documents."""
    pruned_input, in_order, target = MODES[correction]
    dense = tiny("llama", seed=2)
    final = copy.deepcopy(dense)
    prune_blocks(final, calib, 0.6, recording_pruner, correction=correction, batch_size=4, progress=False)
    k = 0
    for b, lins in enumerate(block_linears(final)):
        stages = _groups(lins) if in_order else _one_stage(lins)
        done = set()
        for stage in stages:
            names = [l.longname for l in stage]
            X = _inputs(_hybrid(dense, final, b if pruned_input else 0, done), calib, names)
            if target is True:  # the dense model on its own stream
                Dn = _inputs(dense, calib, names)
            elif target == "block":  # blocks < b pruned, block b entirely dense
                Dn = _inputs(_hybrid(dense, final, b, set()), calib, names)
            else:
                Dn = X
            for n in names:
                st = _REC[k]
                k += 1
                x, d = X[n].double(), Dn[n].double()
                assert st.ntokens == x.shape[0]
                assert _close(st.H, x.T @ x), (correction, n, "H")
                assert _close(st.K, d.T @ x), (correction, n, "K")
                assert _close(st.D, d.T @ d), (correction, n, "D")
                upstream_pruned = (pruned_input and b > 0 and target is True) or (in_order and stage is not stages[0])
                if target and upstream_pruned:
                    assert not _close(st.K, st.H, 1e-3), n  # the target stream really differs
                if not pruned_input and stage is stages[0]:  # block input = the dense model's, whatever b
                    Xd = _inputs(dense, calib, names)
                    assert _close(st.H, Xd[n].double().T @ Xd[n].double()), (correction, n, "dense input")
            done.update(names)
    assert k == len(_REC) == 21


def test_default_correction_per_pruner():
    assert get_pruner("fista").correction == "intra"  # FISTAPruner's paper default
    assert {get_pruner(p).correction for p in ("magnitude", "wanda", "sparsegpt", "prox24")} == {"sequential"}


def test_intra_correction_requires_sublayer_order(calib, recording_pruner):
    for mode in ("intra", "intra-pruned"):
        with pytest.raises(ValueError, match="sublayers_in_order=True"):
            prune_blocks(tiny("llama"), calib, 0.5, recording_pruner, correction=mode, sublayers_in_order=False,
                             progress=False)
    with pytest.raises(ValueError, match="unknown correction"):
        prune_blocks(tiny("llama"), calib, 0.5, recording_pruner, correction="inter", progress=False)


def test_magnitude_without_calibration_and_progress_callback():
    dense = tiny("opt")
    m = copy.deepcopy(dense)
    calls = []
    res = prune_blocks(m, None, 0.4, "magnitude", progress=False, progress_cb=lambda d, t, n: calls.append((d, t, n)))
    names = [l.longname for l in _layers(m)]
    assert [c[2] for c in calls] == names and calls[-1][:2] == (len(names), len(names))
    for ld, lm_ in zip(_layers(dense), _layers(m)):
        assert torch.equal(_W(lm_), get_pruner("magnitude").fn(_W(ld), None, 0.4))
    assert len(res.layers) == len(names)
    with pytest.raises(ValueError, match="needs calibration"):
        prune_blocks(tiny("opt"), None, 0.4, "wanda", progress=False)


def test_allocation_dict_and_missing_layer(calib):
    m = tiny("llama")
    names = [l.longname for l in _layers(m)]
    alloc = {n: (0.3 if i % 2 else 0.6) for i, n in enumerate(names)}
    res = prune_blocks(m, calib, alloc, "wanda", batch_size=3, progress=False)
    for r in res.layers:
        assert r["target"] == alloc[r["longname"]] and abs(r["achieved"] - r["target"]) <= 0.5 / r["num_params"]
    alloc.pop(names[4])
    with pytest.raises(ValueError, match="no sparsity for"):
        prune_blocks(tiny("llama"), calib, alloc, "wanda", progress=False)


def test_masked_gd_keeps_the_mask_and_lowers_block0_error(calib):
    dense = tiny("llama", seed=3)
    plain, gd = copy.deepcopy(dense), copy.deepcopy(dense)
    prune_blocks(plain, calib, 0.6, "wanda", progress=False)
    prune_blocks(gd, calib, 0.6, "wanda", gd_steps=20, progress=False)
    b0 = [l for l in _layers(dense) if l.block == 0]
    X = _inputs(dense, calib, [l.longname for l in b0])  # block-0 inputs are the same dense embeddings in both runs
    for ld, lp, lg in zip(b0, [l for l in _layers(plain) if l.block == 0], [l for l in _layers(gd) if l.block == 0]):
        Wd, Wp, Wg = _W(ld), _W(lp), _W(lg)
        assert torch.equal(Wp == 0, Wg == 0)
        x = X[ld.longname]
        assert torch.linalg.norm((Wd - Wg) @ x.T) < torch.linalg.norm((Wd - Wp) @ x.T)
