"""Every decoder block gets its own arguments in the block-by-block loops.

Gemma-3 alternates sliding-window and global attention, each with its own mask and rotary table (local base
10 000, global 1 000 000). The loops once gave every block the arguments caught at block 0, so the global blocks ran
with the local rotary table: the block-by-block hidden states, statistics and perplexities differed from the model's
own forward. These tests compare each loop with the model's own forward, recorded by hooks on the real blocks.
"""
from __future__ import annotations

import pytest
import torch

from pruning.block_loop import dense_layer_stats
from pruning.blocks import block_linears, capture_block_inputs
from pruning.stream import blockwise_hidden
from spectra.weights import decoder_layers

SEQLEN = 12


@pytest.fixture(scope="module")
def gemma():
    from transformers import AutoModelForCausalLM, Gemma3TextConfig

    cfg = Gemma3TextConfig(vocab_size=96, num_hidden_layers=4, hidden_size=32, num_attention_heads=4,
                           num_key_value_heads=2, head_dim=8, intermediate_size=64, sliding_window=4,
                           layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"])
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    calib = torch.randint(0, 96, (6, SEQLEN), generator=torch.Generator().manual_seed(1))
    return model, calib


def own_forward(model, calib):
    """Inputs (args, kwargs, hidden) and outputs of every decoder block in the model's own forward."""
    seen: dict = {}
    handles = []
    for i, blk in enumerate(decoder_layers(model)):
        def pre(m, args, kwargs, i=i):
            seen.setdefault(i, {})["in"] = (args, kwargs)

        def post(m, args, kwargs, out, i=i):
            seen[i]["out"] = out[0] if isinstance(out, (tuple, list)) else out

        handles += [blk.register_forward_pre_hook(pre, with_kwargs=True),
                    blk.register_forward_hook(post, with_kwargs=True)]
    try:
        with torch.no_grad():
            model(input_ids=calib, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return seen


def test_each_block_gets_its_own_rotary_table(gemma):
    model, calib = gemma
    seen = own_forward(model, calib)
    chunk = capture_block_inputs(model, calib, batch_size=len(calib))[0]
    assert len(chunk.per_block) == 4
    for b in range(4):
        cos_own, sin_own = seen[b]["in"][1]["position_embeddings"]
        cos, sin = chunk.per_block[b][1]["position_embeddings"]
        assert torch.equal(cos, cos_own) and torch.equal(sin, sin_own)
    local, global_ = chunk.per_block[0][1]["position_embeddings"][0], chunk.per_block[1][1]["position_embeddings"][0]
    assert not torch.allclose(local, global_)  # the two tables differ: block 0's would be wrong for block 1


def test_blockwise_hidden_equals_the_models_own_forward(gemma):
    model, calib = gemma
    seen = own_forward(model, calib)
    chunks, _ = blockwise_hidden(model, calib, batch_size=3)
    got = torch.cat([c.hidden for c in chunks])
    torch.testing.assert_close(got, seen[3]["out"], rtol=1e-5, atol=1e-5)


def test_dense_statistics_of_a_global_block_equal_its_real_inputs(gemma):
    model, calib = gemma
    lin = next(l for l in block_linears(model)[3] if l.role == "q")  # a global-attention block after a local one
    x = []
    h = lin.module.register_forward_pre_hook(lambda m, a: x.append(a[0].detach()))
    try:
        with torch.no_grad():
            model(input_ids=calib, use_cache=False)
    finally:
        h.remove()
    X = x[0].reshape(-1, x[0].shape[-1]).double()
    st = dense_layer_stats(model, calib, frozenset({"H"}), batch_size=2, blocks={3})[lin.longname]
    torch.testing.assert_close(st.sq_norm, (X * X).sum(0), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(st.H, X.T @ X, rtol=1e-4, atol=1e-5)


def test_stand_ins_never_change_the_model_itself(gemma):
    """The stand-ins run in a view of the model: while one is in use (the app's read-ahead in another thread), the
    model keeps its blocks and its own forward gives the dense logits; the view runs the stand-ins."""
    from pruning.blocks import StandIn, blocks_replaced

    model, calib = gemma
    blocks = list(decoder_layers(model))
    with torch.no_grad():
        want = model(input_ids=calib, use_cache=False).logits
    sink: list = []
    with blocks_replaced(model, [StandIn(i, sink, like=m) for i, m in enumerate(blocks)]) as view:
        assert list(decoder_layers(model)) == blocks
        assert all(isinstance(m, StandIn) for m in decoder_layers(view))
        with torch.no_grad():
            torch.testing.assert_close(model(input_ids=calib, use_cache=False).logits, want, rtol=0, atol=0)
            view(input_ids=calib, use_cache=False)
    assert sorted(i for i, *_ in sink) == [0, 1, 2, 3]
    assert view.lm_head.weight is model.lm_head.weight


def test_hook_view_shares_the_weights_but_not_the_hooks(gemma):
    """pruning.blocks.hook_view: the same parameters (no copy) and the same logits, but a hook registered on the view
    fires only in the view's forward, never in the model's."""
    from pruning.blocks import hook_view

    model, calib = gemma
    view = hook_view(model)
    assert all(a is b for a, b in zip(view.parameters(), model.parameters()))
    fired: list = []
    lin = decoder_layers(view)[2].mlp.up_proj
    handle = lin.register_forward_pre_hook(lambda m, args: fired.append(args[0].shape))
    with torch.no_grad():
        want = model(input_ids=calib, use_cache=False).logits
        assert fired == []  # the model's own forward does not see the view's hook
        torch.testing.assert_close(view(input_ids=calib, use_cache=False).logits, want, rtol=0, atol=0)
    handle.remove()
    assert fired == [torch.Size([6, SEQLEN, 32])]
    assert not decoder_layers(model)[2].mlp.up_proj._forward_pre_hooks
