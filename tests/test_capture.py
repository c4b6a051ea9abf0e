"""pruning.capture.capture_layer_inputs: the inputs a hook on one layer sees, as a whole-model forward gives them."""
import pytest
import torch
import transformers as tf

from pruning.block_loop import collect_input_norms
from pruning.capture import capture_layer_inputs


def _tiny():
    torch.manual_seed(0)
    cfg = tf.LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2)
    return tf.AutoModelForCausalLM.from_config(cfg).eval()


def test_capture_layer_inputs_equals_a_full_forward():
    m = _tiny()
    calib = torch.randint(0, 300, (3, 16), generator=torch.Generator().manual_seed(1))
    name = "model.layers.1.mlp.down_proj"
    module = m.get_submodule(name)
    xs = []
    h = module.register_forward_pre_hook(lambda mod, a: xs.append(a[0].detach().reshape(-1, a[0].shape[-1])))
    with torch.no_grad():
        m(input_ids=calib, use_cache=False)
    h.remove()
    W, X = capture_layer_inputs(m, name, calib)
    assert W.dtype == X.dtype == torch.float32 and X.shape == (3 * 16, 128)
    torch.testing.assert_close(W, module.weight.detach().float())
    torch.testing.assert_close(X, torch.cat(xs).float(), rtol=1e-5, atol=1e-5)
    # Σx² per input feature = the norms the OWL allocation reads
    torch.testing.assert_close((X.double() ** 2).sum(0), collect_input_norms(m, calib)[name], rtol=1e-4, atol=1e-6)
    assert not module._forward_pre_hooks  # the hook is removed


def test_capture_layer_inputs_unknown_layer():
    with pytest.raises(ValueError, match="no layer 'model.nope'"):
        capture_layer_inputs(_tiny(), "model.nope", torch.zeros(1, 4, dtype=torch.long))


def test_capture_layer_inputs_gpt2_conv1d_is_out_in():
    """GPT-2's Conv1D stores its weight (in, out); the captured W is (out, in) like every other layer, so that
    X Wᵀ + b is the layer's output (c_fc: 32 → 128, a non-square layer where a wrong orientation shows)."""
    torch.manual_seed(0)
    m = tf.GPT2LMHeadModel(tf.GPT2Config(vocab_size=300, n_positions=64, n_embd=32, n_layer=2, n_head=4,
                                             bos_token_id=0, eos_token_id=0)).eval()
    calib = torch.randint(0, 300, (2, 8), generator=torch.Generator().manual_seed(1))
    name = "transformer.h.1.mlp.c_fc"
    module = m.get_submodule(name)
    outs = []
    h = module.register_forward_hook(lambda mod, a, out: outs.append(out.detach().reshape(-1, out.shape[-1])))
    with torch.no_grad():
        m(input_ids=calib, use_cache=False)
    h.remove()
    W, X = capture_layer_inputs(m, name, calib)
    assert W.shape == (128, 32) and X.shape == (2 * 8, 32)
    torch.testing.assert_close(X @ W.T + module.bias.detach(), torch.cat(outs), rtol=1e-5, atol=1e-5)
