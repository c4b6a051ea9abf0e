"""Block-by-block calibrated pruning, as in the Wanda / SparseGPT reference codes.

The calibration windows are embedded, the inputs of decoder block 0 are captured (a pre-hook on the first block
stores its positional and keyword arguments — attention mask, position ids / rotary embeddings, whatever the
architecture passes — and stops the forward), then for every block: forward pre-hooks on its linear layers
accumulate :class:`~pruning.pruners.base.LayerStats` while the samples run through the block, every linear layer is
pruned with its allocated sparsity, the block outputs are recomputed with the pruned weights and fed to the next block.
Memory holds one block's activations (two with a dense stream).

Sub-layer order: linear layers of a block that read the *same* input tensor form one *input group*
(Llama: q,k,v → o → gate,up → down; OPT: q,k,v → out_proj → fc1 → fc2; GPT-2: c_attn → c_proj → c_fc → c_proj);
groups are found by a probe forward. ``sublayers_in_order=False`` (reference behaviour for Wanda/SparseGPT) collects
every group's statistics from one pass and then prunes; ``True`` prunes group by group, recomputing the inputs of
later groups with the earlier groups already pruned (FISTAPruner's intra-layer error correction).

Error-correction modes (``correction``; the three FISTAPruner names follow Zhao et al. 2024, §4). Each mode fixes
where a block's inputs come from, whether its sublayers are pruned in call order, and which target a pruner that
needs ``K`` (``K = Σ d xᵀ``, ``D = Σ d dᵀ``, ``d`` the target's input) is fitted to:

================== ===================== ================================ =======================================
mode               block inputs          sublayers                        target (d)
================== ===================== ================================ =======================================
``sequential``     pruned model          one pass over the block          the same input (d = x)
``none``           dense model           one pass over the block          the same, dense input (d = x)
``intra``          dense model           in call order, on the outputs    dense sublayer on the dense input
                                         of the already-pruned earlier
                                         sublayers
``intra+inter``    pruned model          in call order                    dense model on its own (dense) stream
``intra-pruned``   pruned model          in call order                    dense block on the pruned block input
================== ===================== ================================ =======================================

``sequential`` is the Wanda / SparseGPT reference loop (the default of every pruner except FISTAPruner, whose paper
default is ``intra``); ``none``, ``intra`` and ``intra+inter`` are the FISTAPruner paper's ablation; in ``none`` and
``intra`` every block is pruned independently from the dense model's block inputs (the next block gets the dense
block's outputs). ``intra-pruned`` is what this library called ``intra`` before (kept under a name that says what it
is).
"""
from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch

from pruning.blocks import (
    BlockInputs,
    BlockIO,
    Linear,
    StopForward,
    block_linears,
    capture_block_inputs,
    input_groups,
    module_device,
    run_block,
    walk_blocks,
)
from pruning.pruners import BASELINE_PRUNER, DEFAULT_PRUNER, NM, LayerStats, get_pruner
from pruning.pruners.masks import achieved_sparsity, check_sparsity, nm_sparsity
from spectra.weights import decoder_layers

CORRECTIONS = ("sequential", "none", "intra", "intra+inter", "intra-pruned")
#: modes whose block inputs are the dense model's (blocks independent of each other's pruning)
DENSE_BLOCK_INPUT = frozenset({"none", "intra"})
#: modes whose sublayers are pruned in call order by default
SUBLAYER_ORDER = frozenset({"intra", "intra+inter", "intra-pruned"})
#: modes whose targets (for pruners that need ``K``) come from dense weights
DENSE_TARGET = frozenset({"intra", "intra+inter", "intra-pruned"})

ProgressCb = Optional[Callable[[int, int, str], None]]


@dataclass
class LoopResult:
    """Per-layer records (longname, block, role, rows, cols, num_params, target, achieved, seconds) and timings."""

    layers: list[dict] = field(default_factory=list)
    timings: dict = field(default_factory=dict)


def _groups_cached(block: torch.nn.Module, linears: list[Linear], chunk: BlockInputs, cache: dict) -> list:
    """:func:`input_groups`, probed once per block structure (blocks with the same relative layer names)."""
    names = {id(m): n for n, m in block.named_modules()}
    rel = {names[id(l.module)]: l for l in linears}
    key = tuple(sorted(rel))
    if key not in cache:
        cache[key] = [[names[id(l.module)] for l in g] for g in input_groups(block, linears, chunk)]
    return [[rel[n] for n in g] for g in cache[key]]


# ----------------------------------------------------------------------------------------------- statistics
class _Acc:
    """Running sums of one input group's statistics (float32 products per batch, float64 accumulation).

    ``K`` (cross term) is kept when "K" is needed, ``D`` (dense Gram, only for the loss's constant) when "D" is.
    Where the target's input is the layer's own (``d`` None) the Gram product is computed once and reused.
    """

    def __init__(self, n_in: int, needs: frozenset, device):
        f64 = dict(dtype=torch.float64, device=device)
        self.ntokens = 0
        self.sq_norm = torch.zeros(n_in, **f64)
        self.H = torch.zeros(n_in, n_in, **f64) if needs & {"H", "K", "D"} else None
        self.K = torch.zeros(n_in, n_in, **f64) if "K" in needs else None
        self.D = torch.zeros(n_in, n_in, **f64) if "D" in needs else None

    def add(self, x: torch.Tensor, d: Optional[torch.Tensor] = None) -> None:
        x = x.reshape(-1, x.shape[-1]).to(torch.float32)
        self.ntokens += x.shape[0]
        self.sq_norm += (x * x).sum(0).to(torch.float64)
        if self.H is None:
            return
        xx = (x.T @ x).to(torch.float64)
        self.H += xx
        if d is None:  # the target reads the same input: K = D = H
            for acc in (self.K, self.D):
                if acc is not None:
                    acc += xx
            return
        d = d.reshape(-1, d.shape[-1]).to(torch.float32)
        if self.K is not None:
            self.K += (d.T @ x).to(torch.float64)
        if self.D is not None:
            self.D += (d.T @ d).to(torch.float64)

    def stats(self) -> LayerStats:
        return LayerStats(self.ntokens, self.sq_norm, self.H, self.K, self.D)


def _copy_stats(st: LayerStats) -> LayerStats:
    c = lambda t: None if t is None else t.clone()  # noqa: E731
    return LayerStats(st.ntokens, st.sq_norm.clone(), c(st.H), c(st.K), c(st.D))


def _capture_inputs(block: torch.nn.Module, leaders: list[Linear], chunk: BlockInputs,
                    hidden: Optional[torch.Tensor] = None, outputs: Optional[list] = None) -> dict[int, torch.Tensor]:
    """Run ``block`` until every leader has received its input; return {id(leader): input}. With ``outputs`` (a list)
    the block runs to its end, its output appended there (a dense block: one forward for its statistics and the next
    block's input)."""
    got: dict[int, torch.Tensor] = {}
    want = {id(lin.module): lin for lin in leaders}

    def hook(module, args):
        got[id(want[id(module)])] = args[0].detach()
        if len(got) == len(want) and outputs is None:
            raise StopForward

    handles = [lin.module.register_forward_pre_hook(hook) for lin in leaders]
    try:
        out = run_block(block, chunk, hidden)
        if outputs is not None:
            outputs.append(out)
    except StopForward:
        pass
    finally:
        for h in handles:
            h.remove()
    return got


def _group_stats(block, dense_block, groups, chunks, dense_hidden, needs, correction,
                 block_untouched: bool = False, outputs: Optional[list] = None) -> list[LayerStats]:
    """Statistics of the groups' inputs over all chunks (pruned stream x; dense stream d when ``K`` is needed).

    ``block_untouched``: no layer of this block is pruned yet, so where the dense twin reads the same block input
    (``dense_hidden`` None) its inputs equal x and are not recomputed. ``outputs``: a list that receives the
    block's output of every chunk (:func:`_capture_inputs`).
    """
    leaders = [g[0] for g in groups]
    accs = {id(l): _Acc(l.get().shape[1], needs, module_device(block)) for l in leaders}
    want_dense = ("K" in needs and correction in DENSE_TARGET and dense_block is not None
                  and not (block_untouched and dense_hidden is None))
    for c, chunk in enumerate(chunks):
        xs = _capture_inputs(block, leaders, chunk, outputs=outputs)
        ds = {}
        if want_dense:
            twins = [dense_block.linear[l.longname] for l in leaders]
            got = _capture_inputs(dense_block.block, twins, chunk, None if dense_hidden is None else dense_hidden[c])
            ds = {id(l): got[id(t)] for l, t in zip(leaders, twins)}
        for l in leaders:
            accs[id(l)].add(xs[id(l)], ds.get(id(l)))
    return [accs[id(l)].stats() for l in leaders]


@dataclass
class _DenseBlock:
    """A dense copy of a block (taken before pruning it) and its linear layers by longname."""

    block: torch.nn.Module
    linear: dict[str, Linear]


def _dense_copy(block: torch.nn.Module, linears: list[Linear]) -> _DenseBlock:
    dup = copy.deepcopy(block)
    mods = dict(dup.named_modules())
    orig = {id(m): n for n, m in block.named_modules()}
    return _DenseBlock(dup, {l.longname: Linear(l.longname, l.block, l.role, mods[orig[id(l.module)]], l.transposed)
                             for l in linears})


# ----------------------------------------------------------------------------------------------- the loop
def layer_targets(linears: list[Linear], sparsity, nm: NM) -> dict[str, float]:
    """{longname: target sparsity} from one float, an N:M pattern or a {longname: sparsity} allocation."""
    names = [l.longname for l in linears]
    if nm is not None:
        return {n: nm_sparsity(nm) for n in names}
    if isinstance(sparsity, (int, float)):
        return {n: check_sparsity(sparsity) for n in names}
    missing = [n for n in names if n not in sparsity]
    if missing:
        raise ValueError(f"the allocation has no sparsity for {missing[0]} (and {len(missing) - 1} more); "
                         f"was it computed for another model?")
    return {n: check_sparsity(sparsity[n]) for n in names}


def layer_record(lin: Linear, W: torch.Tensor, W_new: torch.Tensor, target: float, seconds: float) -> dict:
    """The per-layer record of a pruned matrix (``longname block role rows cols num_params target achieved
    seconds``; :class:`LoopResult`'s ``layers``)."""
    return {"longname": lin.longname, "block": lin.block, "role": lin.role, "rows": W.shape[0], "cols": W.shape[1],
            "num_params": W.numel(), "target": target, "achieved": achieved_sparsity(W_new), "seconds": seconds}


def _masked_gd(W_new, W_dense, stats, steps, options):
    from pruning.pruners import gd  # written by another module owner; imported lazily

    return gd.masked_gd(W_new, W_dense, stats, steps=steps, **options)


@dataclass
class LoopOptions:
    """How :func:`prune_blocks` runs, besides the pruner and the sparsity: the error-correction mode
    (:data:`CORRECTIONS`; None = the pruner's default, :attr:`PrunerSpec.correction`), whether the sublayers are
    pruned one input group at a time in call order (None: True for the modes that need it), masked GD steps after
    the pruner (``gd_options``: :func:`pruning.pruners.gd.masked_gd`'s), the calibration batch size, a progress bar
    and ``progress_cb(done, total, longname)`` after every pruned matrix."""

    correction: Optional[str] = None
    sublayers_in_order: Optional[bool] = None
    gd_steps: int = 0
    gd_options: Optional[dict] = None
    batch_size: int = 8
    progress: bool = True
    progress_cb: ProgressCb = None


@dataclass
class _Run:
    """What every block of one :func:`prune_blocks` run shares."""

    spec: Any
    nm: NM
    pruner_options: dict
    o: LoopOptions
    correction: str
    needs: frozenset
    in_order: bool
    chunks: list
    total: int
    dense_hidden: Optional[list] = None
    timings: dict = field(default_factory=lambda: {"capture": 0.0, "stats": 0.0, "prune": 0.0, "gd": 0.0,
                                                    "forward": 0.0})
    records: list = field(default_factory=list)
    cache: dict = field(default_factory=dict)
    bar: Any = None

    @property
    def want_dense_copy(self) -> bool:
        return "K" in self.needs and self.correction in DENSE_TARGET


def _resolve(spec, nm: NM, o: LoopOptions) -> tuple[str, frozenset, bool]:
    """(correction mode, statistics needed, sublayers in order) of a run; one-line ValueError for a bad one."""
    if nm is not None and not spec.supports_nm:
        raise ValueError(f"pruner {spec.name!r} does not support N:M patterns; use an unstructured sparsity")
    correction = spec.correction if o.correction is None else o.correction
    if correction not in CORRECTIONS:
        raise ValueError(f"unknown correction {correction!r}; choose one of: {', '.join(CORRECTIONS)}")
    if o.gd_steps < 0:
        raise ValueError(f"gd_steps must be ≥ 0 (got {o.gd_steps})")
    needs = frozenset(spec.needs) | (frozenset({"H"}) if o.gd_steps else frozenset())
    in_order = correction in SUBLAYER_ORDER if o.sublayers_in_order is None else o.sublayers_in_order
    if correction in ("intra", "intra-pruned") and not in_order:
        raise ValueError(f"correction={correction!r} needs sublayers_in_order=True (sublayers pruned in order)")
    return correction, needs, in_order


@torch.no_grad()
def prune_blocks(model: torch.nn.Module, calib: Optional[torch.Tensor], sparsity, pruner: str = DEFAULT_PRUNER,
                 nm: NM = None, pruner_options: Optional[dict] = None, device=None, block_io: Optional[BlockIO] = None,
                 options: Optional[LoopOptions] = None, **loop_options) -> LoopResult:
    """Prune every block linear layer of ``model`` in place, block by block on the calibration windows ``calib``.

    Parameters
    ----------
    model : torch.nn.Module
        The CausalLM, pruned in place.
    calib : torch.Tensor or None
        Calibration windows (n, seqlen); None only for calibration-free pruners (magnitude) without GD steps.
    sparsity : float or dict
        One sparsity for all layers or {longname: sparsity} (ignored under ``nm``).
    pruner, nm, pruner_options
        The registered pruner, an N:M pattern, the pruner's own options.
    device, block_io
        The compute device (None = where the weights are; each block is moved there, pruned, its outputs
        recomputed, and moved back; the calibration activations live there) and the loader of a streamed model's
        blocks (:mod:`pruning.stream`); see :func:`pruning.blocks.walk_blocks`.
    options, **loop_options
        :class:`LoopOptions` (correction mode, sublayer order, GD steps, batch size, progress), or its fields.

    Returns
    -------
    LoopResult
        One :func:`layer_record` per pruned matrix and the timings.
    """
    o = dataclasses.replace(options or LoopOptions(), **loop_options)
    spec = get_pruner(pruner)
    correction, needs, in_order = _resolve(spec, nm, o)
    per_block = block_linears(model)
    if calib is None:
        if not spec.calibration_free or o.gd_steps:
            raise ValueError(f"pruner {pruner!r}{' with gd_steps' if o.gd_steps else ''} needs calibration windows")
        return prune_weights(model, sparsity, pruner, nm, pruner_options, o.progress, o.progress_cb, device, block_io)
    t0 = time.perf_counter()
    run = _Run(spec, nm, dict(pruner_options or {}), o, correction, needs, in_order,
               capture_block_inputs(model, calib, o.batch_size, device), sum(len(b) for b in per_block))
    run.timings["capture"] = time.perf_counter() - t0
    if correction == "intra+inter" and run.want_dense_copy:
        run.dense_hidden = [c.hidden for c in run.chunks]
    if o.progress:
        from tqdm.auto import tqdm

        run.bar = tqdm(total=run.total, desc=f"prune {pruner}", unit="matrix")
    for b, block in walk_blocks(model, device, block_io, inputs=run.chunks):
        _prune_block(run, block, per_block[b], layer_targets(per_block[b], sparsity, nm))
    if run.bar is not None:
        run.bar.close()
    run.timings["total"] = time.perf_counter() - t0
    return LoopResult(run.records, run.timings)


def _prune_block(run: _Run, block: torch.nn.Module, linears: list[Linear], targets: dict) -> None:
    """One block of :func:`prune_blocks`: statistics per stage, its layers pruned, its outputs recomputed."""
    timings, chunks = run.timings, run.chunks
    dense = _dense_copy(block, linears) if run.want_dense_copy else None
    groups = _groups_cached(block, linears, chunks[0], run.cache)
    stages = [[g] for g in groups] if run.in_order else [groups]
    next_hidden = None
    if run.correction in DENSE_BLOCK_INPUT:  # the next block reads this block's dense outputs: compute them first
        t = time.perf_counter()
        next_hidden = [run_block(block, chunk) for chunk in chunks]
        timings["forward"] += time.perf_counter() - t
    for stage in stages:
        t = time.perf_counter()
        stats = _group_stats(block, dense, stage, chunks, run.dense_hidden, run.needs, run.correction,
                             block_untouched=stage is stages[0])
        timings["stats"] += time.perf_counter() - t
        for group, st_group in zip(stage, stats):
            for j, lin in enumerate(group):
                st = st_group if j == len(group) - 1 else _copy_stats(st_group)  # pruners may modify stats
                _prune_layer(run, lin, st, targets[lin.longname])
    t = time.perf_counter()
    for c, chunk in enumerate(chunks):
        if next_hidden is not None:
            chunk.hidden = next_hidden[c]
            continue
        if run.dense_hidden is not None:
            run.dense_hidden[c] = run_block(dense.block, chunk, run.dense_hidden[c])
        chunk.hidden = run_block(block, chunk)
    timings["forward"] += time.perf_counter() - t


def _prune_layer(run: _Run, lin: Linear, st: LayerStats, target: float) -> None:
    """Prune one layer (then masked GD) and record it."""
    t = time.perf_counter()
    W = lin.get()
    W_new = run.spec.fn(W.clone(), st, target, run.nm, **run.pruner_options)
    dt = time.perf_counter() - t
    run.timings["prune"] += dt
    if run.o.gd_steps:
        t = time.perf_counter()
        W_new = _masked_gd(W_new, W, st, run.o.gd_steps, run.o.gd_options or {})
        run.timings["gd"] += time.perf_counter() - t
    lin.set(W_new)
    run.records.append(layer_record(lin, W, W_new, target, dt))
    if run.bar is not None:
        run.bar.update(1)
    if run.o.progress_cb is not None:
        run.o.progress_cb(len(run.records), run.total, lin.longname)


def prune_linears(linears: list[Linear], spec, targets: dict, nm: NM = None, pruner_options: Optional[dict] = None,
                  stats: Optional[dict] = None, records: Optional[list] = None,
                  done: Optional[Callable[[str], None]] = None) -> list[dict]:
    """Prune ``linears`` (loaded) in place with the registered pruner ``spec`` at ``targets`` {longname: sparsity},
    from their weights alone or from ``stats`` {longname: LayerStats}; appends each :func:`layer_record` to
    ``records`` (returned) and calls ``done(longname)`` after each layer."""
    records = [] if records is None else records
    for lin in linears:
        t = time.perf_counter()
        W = lin.get()
        W_new = spec.fn(W, None if stats is None else stats[lin.longname], targets[lin.longname], nm,
                        **(pruner_options or {}))
        lin.set(W_new)
        records.append(layer_record(lin, W, W_new, targets[lin.longname], time.perf_counter() - t))
        if done is not None:
            done(lin.longname)
    return records


@torch.no_grad()
def prune_weights(model: torch.nn.Module, sparsity, pruner: str = BASELINE_PRUNER, nm: NM = None,
                  pruner_options: Optional[dict] = None, progress: bool = False,
                  progress_cb: ProgressCb = None, device=None, block_io: Optional[BlockIO] = None,
                  stats: Optional[dict] = None) -> LoopResult:
    """Prune every block linear layer without running the model: from its weights alone (calibration-free
    pruners such as magnitude) or from given statistics ``stats`` {longname: LayerStats} (one-shot pruning from
    dense statistics, :func:`pruning.calib_stats.prune_from_stats`), block by block on the compute ``device``
    (``block_io``: see :func:`prune_blocks`)."""
    spec = get_pruner(pruner)
    per_block = block_linears(model)
    linears = [l for blk in per_block for l in blk]
    targets = layer_targets(linears, sparsity, nm)
    t0 = time.perf_counter()
    records: list[dict] = []
    for b, _ in walk_blocks(model, device, block_io):
        prune_linears(per_block[b], spec, targets, nm, pruner_options, stats, records,
                      None if progress_cb is None else lambda name: progress_cb(len(records), len(linears), name))
    total = time.perf_counter() - t0
    return LoopResult(records, {"capture": 0.0, "stats": 0.0, "prune": total, "gd": 0.0, "forward": 0.0,
                                      "total": total})


@torch.no_grad()
def dense_layer_stats(model: torch.nn.Module, calib: torch.Tensor, needs: frozenset = frozenset(),
                      batch_size: int = 8, blocks: Optional[set] = None,
                      progress_cb: Optional[Callable[[int, int], None]] = None, device=None,
                      block_io: Optional[BlockIO] = None,
                      on_block: Optional[Callable[[int, list, dict], None]] = None) -> dict[str, LayerStats]:
    """{longname: :class:`LayerStats`} of the block linear layers from the *dense* model's inputs on ``calib``
    (the ``none`` mode: no error correction, ``K = D = H`` when needed); layers of one input group share one record.

    ``needs`` ⊆ {"H", "K", "D"} (``sq_norm`` always); ``blocks``: only these block indices (the walk stops after
    the last one). One forward per block; ``progress_cb(done, total)`` after each. The model is not changed.
    ``device`` / ``block_io``: as in :func:`prune_blocks` (a streamed model's ``block_io`` must not write the
    blocks it releases, e.g. :class:`pruning.stream.StreamedModel` without a writer). ``on_block(b, linears,
    stats)`` is called while block ``b`` is loaded, with its linear layers and their statistics (OWL's outlier
    ratios read the block's weights there, so that a streamed model never holds more than one block).
    """
    per_block = block_linears(model)
    n_blocks = len(decoder_layers(model))
    last = n_blocks - 1 if blocks is None else max(blocks)
    if blocks is not None and not all(0 <= b < n_blocks for b in blocks):
        raise ValueError(f"block out of range: the model has {n_blocks} decoder blocks (asked {sorted(blocks)})")
    chunks = capture_block_inputs(model, calib, batch_size, device)
    cache: dict = {}
    out: dict[str, LayerStats] = {}
    for b, block in walk_blocks(model, device, block_io, last, inputs=chunks):
        outs = [] if b < last else None  # the statistics' forward gives the next block's inputs too
        if blocks is None or b in blocks:
            groups = _groups_cached(block, per_block[b], chunks[0], cache)
            for g, st in zip(groups, _group_stats(block, None, groups, chunks, None, frozenset(needs), "none",
                                                  outputs=outs)):
                out.update({lin.longname: st for lin in g})
            if on_block is not None:
                on_block(b, per_block[b], out)
        if b < last:
            for c, chunk in enumerate(chunks):
                chunk.hidden = outs[c] if outs else run_block(block, chunk)
        if progress_cb is not None:
            progress_cb(b + 1, last + 1)
    return out


def block_layer_stats(model: torch.nn.Module, calib: torch.Tensor, block: int,
                      needs: frozenset = frozenset({"H", "K", "D"}), batch_size: int = 8) -> list[tuple]:
    """(linear layer, :class:`LayerStats`) of every linear layer of decoder block ``block``, from the *dense*
    model's inputs on ``calib`` (:func:`dense_layer_stats`), in call order; every layer gets its own copy.

    For layer-level studies (benchmarks, the app's layer views, tests on real layers).
    """
    stats = dense_layer_stats(model, calib, needs, batch_size, blocks={block})  # in call order
    by_name = {lin.longname: lin for lin in block_linears(model)[block]}
    return [(by_name[name], _copy_stats(st)) for name, st in stats.items()]


def collect_input_norms(model: torch.nn.Module, calib: torch.Tensor, batch_size: int = 8,
                        progress: bool = False, device=None, block_io: Optional[BlockIO] = None,
                        on_block: Optional[Callable[[int, list, dict], None]] = None) -> dict[str, torch.Tensor]:
    """Dense model's ``Σ_t x_t²`` per input feature (float64) of every block linear layer, keyed by longname
    (OWL's ‖X_j‖₂² for its outlier ratios; :func:`dense_layer_stats`, whose ``device`` / ``block_io`` /
    ``on_block`` it takes)."""
    from tqdm.auto import tqdm

    with tqdm(total=len(decoder_layers(model)), desc="input norms", unit="block", disable=not progress) as bar:
        stats = dense_layer_stats(model, calib, frozenset(), batch_size, progress_cb=lambda done, total: bar.update(1),
                                  device=device, block_io=block_io, on_block=on_block)
    return {name: st.sq_norm.clone() for name, st in stats.items()}
