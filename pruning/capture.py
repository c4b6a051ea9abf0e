"""Inputs of one linear layer of a dense model on calibration windows.

:func:`pruning.block_loop.capture_block_inputs` catches the inputs of decoder block 0 (the start of the block-by-block
loop); :func:`capture_layer_inputs` catches the inputs of any one named layer of the whole dense model, for looking
at a single layer (FISTAPruner's λ path and prox24's schedule in the app). Both stop each forward pass at the hook.
"""
from __future__ import annotations

import torch

from pruning.blocks import StopForward
from spectra.weights import stores_in_out


@torch.no_grad()
def capture_layer_inputs(model: torch.nn.Module, name: str, calib: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(W, X) of the layer ``name`` of ``model``: its weight (out, in), also for GPT-2's (in, out) ``Conv1D``, and
    its inputs on the calibration windows ``calib`` (n, seqlen), one row per token, both float32.

    A forward pre-hook on the layer records its input and raises :class:`StopForward`, so each window (one forward
    pass each, in order) runs only up to that layer. ValueError when the model has no layer ``name`` with a weight.
    """
    modules = dict(model.named_modules())
    if name not in modules or not hasattr(modules[name], "weight"):
        raise ValueError(f"the model has no layer {name!r}")
    module = modules[name]
    captured: list[torch.Tensor] = []

    def hook(mod, args):
        captured.append(args[0].detach().reshape(-1, args[0].shape[-1]).to(torch.float32))
        raise StopForward

    handle = module.register_forward_pre_hook(hook)
    try:
        for row in calib:
            try:
                model(input_ids=row[None, :], use_cache=False)
            except StopForward:
                pass
    finally:
        handle.remove()
    if not captured:
        raise ValueError(f"layer {name!r} was not reached by a forward pass")
    W = module.weight.detach()
    return (W.T if stores_in_out(module) else W).to(torch.float32), torch.cat(captured)
