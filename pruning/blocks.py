"""The decoder blocks of a model as the pruning loops see them: each block's prunable linear layers, the inputs of
block 0 captured once (hidden states plus whatever positional/keyword arguments the architecture passes), a block
run on those inputs, the input groups of a block, moving blocks between storage and compute devices, and the one
walk over the blocks that every loop uses (:func:`walk_blocks`).
"""
from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Optional

import torch

from spectra.weights import decoder_layers, decoder_layers_path, iter_model_weights


class StopForward(Exception):
    """Raised inside a hook to end a forward pass early."""


@dataclass
class Linear:
    """One prunable linear layer of a block: its module and how its weight is stored."""

    longname: str
    block: int
    role: str
    module: torch.nn.Module
    transposed: bool  # GPT-2 Conv1D stores (in, out)

    def get(self) -> torch.Tensor:
        """The weight as an (out, in) float32 copy."""
        w = self.module.weight.detach()
        return (w.T if self.transposed else w).to(torch.float32).clone()

    def set(self, W: torch.Tensor) -> None:
        """Write an (out, in) weight back in the stored layout and dtype."""
        p = self.module.weight
        p.data.copy_((W.T if self.transposed else W).to(p.dtype))


# ----------------------------------------------------------------------------------------------- model structure
def block_linears(model: torch.nn.Module) -> list[list[Linear]]:
    """Prunable linear layers per decoder block, from :func:`spectra.weights.iter_model_weights` (block ≥ 0)."""
    layers = decoder_layers(model)
    modules = dict(model.named_modules())
    names = {id(m): n for n, m in modules.items()}
    out: list[list[Linear]] = [[] for _ in layers]
    for info, _ in iter_model_weights(model):
        if info.block < 0:
            continue
        prefix = names[id(layers[info.block])] + "."
        if not info.longname.startswith(prefix):
            raise ValueError(f"{info.longname} is not inside decoder block {info.block} ({prefix[:-1]})")
        out[info.block].append(Linear(info.longname, info.block, info.role, modules[info.longname], info.transposed))
    return out


def module_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def storage_device(model: torch.nn.Module) -> torch.device:
    """Where the model's weights live between blocks: the device of its input embeddings (a streamed model's
    decoder blocks sit on the meta device, its embeddings on the CPU)."""
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    return emb.weight.device if emb is not None else module_device(model)


def to_device(obj, device, memo: Optional[dict] = None):
    """``obj`` with every tensor inside (tuples, lists, dicts, nested) moved to ``device`` (others unchanged);
    ``memo`` ({id: moved}) moves a tensor that occurs several times once."""
    if isinstance(obj, torch.Tensor):
        if memo is None:
            return obj.to(device)
        if id(obj) not in memo:
            memo[id(obj)] = obj.to(device)
        return memo[id(obj)]
    if isinstance(obj, (tuple, list)):
        return type(obj)(to_device(o, device, memo) for o in obj)
    if isinstance(obj, dict):
        return {k: to_device(v, device, memo) for k, v in obj.items()}
    return obj


class BlockIO:
    """How the block loop gets a decoder block's weights and gives them back. The default keeps the whole model in
    memory (nothing to do); :class:`pruning.stream.StreamedModel` loads block ``b`` from the safetensors shards and
    writes / frees it afterwards."""

    def load(self, b: int, block: torch.nn.Module) -> None:
        """Make block ``b``'s weights available on the storage device (no-op in memory)."""

    def release(self, b: int, block: torch.nn.Module) -> None:
        """Block ``b`` is final (pruned and back on the storage device): persist / free it (no-op in memory)."""


def onload(block: torch.nn.Module, b: int, device, io: Optional[BlockIO]) -> None:
    """Load block ``b`` (``io``) and move it to the compute ``device`` (None: stay where it is)."""
    if io is not None:
        io.load(b, block)
    if device is not None:
        block.to(device)


def offload(block: torch.nn.Module, b: int, storage, io: Optional[BlockIO]) -> None:
    """Move block ``b`` back to the ``storage`` device and hand it to ``io`` (written and freed when streamed)."""
    if storage is not None:
        block.to(storage)
    if io is not None:
        io.release(b, block)


def walk_blocks(model: torch.nn.Module, device=None, block_io: Optional[BlockIO] = None,
                last: Optional[int] = None, inputs: Optional[list[BlockInputs]] = None
                ) -> Iterator[tuple[int, torch.nn.Module]]:
    """The one block walk of every loop: yield ``(b, block)`` for decoder blocks 0 … ``last`` (default: all), in order.

    Before each yield the block is loaded (``block_io.load``, a streamed block read from its shards) and moved to the
    compute ``device`` (:func:`onload`); when the caller's step returns it goes back to the storage device and is
    handed to ``block_io.release`` (:func:`offload`: written and freed when streamed). ``device=None,
    block_io=None`` walks an in-memory model where it is. Consume the walk to the end (a ``break`` leaves the
    current block loaded); an exception inside a step leaves the block unreleased, so a streamed run never writes a
    half-pruned block.

    Parameters
    ----------
    model : torch.nn.Module
        The CausalLM (its decoder blocks from :func:`spectra.weights.decoder_layers`).
    device : torch.device or str, optional
        Compute device (None: where the weights are).
    block_io : BlockIO, optional
        Loads and releases the blocks of a streamed model (:class:`pruning.stream.StreamedModel`).
    last : int, optional
        Index of the last block to visit.
    inputs : list of BlockInputs, optional
        Captured block inputs (:func:`capture_block_inputs`); before each yield they are set to the block's own
        arguments (``BlockInputs.block = b``).

    Yields
    ------
    tuple of (int, torch.nn.Module)
        The block's index and the block, loaded on ``device``.
    """
    storage = storage_device(model)
    blocks = decoder_layers(model)
    stop = len(blocks) - 1 if last is None else last
    for b, block in enumerate(blocks[:stop + 1]):
        onload(block, b, device, block_io)
        for chunk in inputs or ():
            chunk.block = b
        yield b, block
        offload(block, b, storage, block_io)


def first_output(out):
    return out[0] if isinstance(out, (tuple, list)) else out


@dataclass
class BlockInputs:
    """A batch of block inputs: the hidden state entering the current block, and the extra arguments the model
    passes each decoder block (causal mask, position ids, rotary ``position_embeddings``, ...), recorded per block
    because they can differ (Gemma-3 alternates sliding-window and global attention, each with its own mask and
    rotary table). ``args`` / ``kwargs`` are those of block ``block``; :func:`walk_blocks` sets it."""

    hidden: torch.Tensor
    per_block: list  # [(args, kwargs)] for every decoder block, in order
    block: int = 0

    @property
    def args(self) -> tuple:
        return self.per_block[self.block][0]

    @property
    def kwargs(self) -> dict:
        return self.per_block[self.block][1]


class StandIn(torch.nn.Module):
    """Stands for decoder block ``i`` while the model's own forward runs without its blocks (no compute).

    While ``sink`` is given it records ``(i, hidden, args, kwargs)`` of the call (``use_cache`` off, no cache),
    and the ``stop`` one (the last block) then ends the forward; with ``replay`` set it hands that hidden state on
    instead of its input (block 0 of a head pass: the final norm and head run on a stored last-block output).
    Attributes a model may read from its layers (``attention_type``) are copied from ``like``.
    """

    def __init__(self, i: int, sink: Optional[list] = None, stop: bool = False, as_tuple: bool = False,
                 like: Optional[torch.nn.Module] = None):
        super().__init__()
        self.i, self.sink, self.stop, self.as_tuple = i, sink, stop, as_tuple
        self.replay: Optional[torch.Tensor] = None
        if like is not None and hasattr(like, "attention_type"):
            self.attention_type = like.attention_type

    def forward(self, hidden_states, *args, **kwargs):
        if self.replay is not None:
            hidden_states = self.replay
        if self.sink is not None:
            kwargs = dict(kwargs)
            kwargs["use_cache"] = False
            if "past_key_values" in kwargs:
                kwargs["past_key_values"] = None
            self.sink.append((self.i, hidden_states, args, kwargs))
            if self.stop:
                raise StopForward
        return (hidden_states,) if self.as_tuple else hidden_states


def hook_view(model: torch.nn.Module) -> torch.nn.Module:
    """The module tree of ``model`` copied shallowly: every parameter, buffer and attribute shared, but each module
    with its own child table and hook tables, so that hooks registered on the view (the statistics' forward
    pre-hooks) never reach ``model``, which other threads may run or deep-copy meanwhile. No tensor is copied (a deep
    copy would double the memory, and copying while transformers loads another model in another thread can read
    meta tensors). Where a module's ``forward`` was patched per instance (accelerate) the view would call the
    original's children, so that case gets a deep copy."""
    if any("forward" in vars(m) for m in model.modules()):
        return copy.deepcopy(model)
    memo: dict = {}

    def clone(m: torch.nn.Module) -> torch.nn.Module:
        if id(m) not in memo:
            c = memo[id(m)] = copy.copy(m)
            for k, v in vars(m).items():
                if "hooks" in k and isinstance(v, dict):
                    c.__dict__[k] = type(v)(v)
            c.__dict__["_modules"] = {n: (None if ch is None else clone(ch)) for n, ch in m._modules.items()}
        return memo[id(m)]

    return clone(model)


@contextmanager
def blocks_replaced(model: torch.nn.Module, stand_ins: list[torch.nn.Module]) -> Iterator[torch.nn.Module]:
    """Yield a view of ``model`` whose decoder blocks are ``stand_ins``; run the view, not the model, in the body.

    The modules on the path to the block list are shallow copies holding a new list, so the model itself is never
    changed and another thread may use it meanwhile (the app's read-ahead collects statistics while a page reads
    the weights); parameters, buffers and every other module are shared. A module on that path whose ``forward``
    was patched per instance (accelerate's dispatch hooks) cannot be copied this way: there the blocks are swapped in
    place for the body and put back after it.
    """
    path = decoder_layers_path(model).split(".")
    chain = [model]
    for name in path[:-1]:
        chain.append(chain[-1].get_submodule(name))
    if any("forward" in vars(m) for m in chain):
        layers = decoder_layers(model)
        saved = list(layers)
        for i, m in enumerate(stand_ins):
            layers[i] = m
        try:
            yield model
        finally:
            for i, m in enumerate(saved):
                layers[i] = m
        return
    copies = []
    for m in chain:
        c = copy.copy(m)
        c.__dict__["_modules"] = dict(m._modules)
        copies.append(c)
    for parent, name, child in zip(copies, path, copies[1:]):
        parent.__dict__["_modules"][name] = child
    copies[-1].__dict__["_modules"][path[-1]] = torch.nn.ModuleList(stand_ins)
    yield copies[0]


@torch.no_grad()
def capture_block_inputs(model: torch.nn.Module, calib: torch.Tensor, batch_size: int = 8,
                         device=None) -> list[BlockInputs]:
    """Embed ``calib`` (n, seqlen) and return, per batch of ``batch_size`` windows, the input of decoder block 0 and
    the arguments the model passes every block.

    The blocks are replaced by :class:`StandIn` recorders (no block computes, so a streamed model's blocks need not
    be loaded); the last one raises to stop the forward, like the references' Catcher, which caught block 0's
    arguments only and gave them to every block. The embedding runs where the model's embeddings are stored;
    ``device`` (the compute device, None = the same) is where the captured tensors are kept (a tensor shared by
    several blocks is moved once).
    """
    layers = decoder_layers(model)
    dev = storage_device(model)
    chunks: list[BlockInputs] = []
    for batch in calib.split(batch_size):
        sink: list = []
        stand_ins = [StandIn(i, sink, i == len(layers) - 1, like=m) for i, m in enumerate(layers)]
        with blocks_replaced(model, stand_ins) as view:
            try:
                view(input_ids=batch.to(dev), use_cache=False)
            except StopForward:
                pass
        sink.sort(key=lambda t: t[0])
        hidden, per_block = sink[0][1].detach(), [(a, k) for _, _, a, k in sink]
        if device is not None:  # one memo per batch: its tensors are alive, so their ids are not reused
            memo: dict = {}
            hidden, per_block = hidden.to(device), to_device(per_block, device, memo)
        chunks.append(BlockInputs(hidden, per_block))
    return chunks


def run_block(block: torch.nn.Module, chunk: BlockInputs, hidden: Optional[torch.Tensor] = None) -> torch.Tensor:
    return first_output(block(chunk.hidden if hidden is None else hidden, *chunk.args, **chunk.kwargs))


def input_groups(block: torch.nn.Module, linears: list[Linear], chunk: BlockInputs) -> list[list[Linear]]:
    """Group the block's linear layers by shared input tensor, in call order, via one probe forward."""
    calls: list[tuple[Linear, torch.Tensor]] = []
    handles = []
    for lin in linears:
        handles.append(lin.module.register_forward_pre_hook(lambda m, a, lin=lin: calls.append((lin, a[0]))))
    try:
        with torch.no_grad():
            run_block(block, chunk)
    finally:
        for h in handles:
            h.remove()
    seen = {id(lin) for lin, _ in calls}
    missing = [lin.longname for lin in linears if id(lin) not in seen]
    if missing:
        raise ValueError(f"linear layers never called by their block: {missing[:3]}; this architecture is not "
                         f"supported")
    groups: list[list[Linear]] = []
    prev = None
    for lin, x in calls:
        if any(lin is g for grp in groups for g in grp):
            continue  # a layer called twice keeps its first position
        if prev is not None and x is prev and groups:
            groups[-1].append(lin)
        else:
            groups.append([lin])
        prev = x
    return groups
