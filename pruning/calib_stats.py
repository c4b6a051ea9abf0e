"""Dense calibration statistics, cached on disk, and one-shot pruning from them ("dense statistics" mode).

One pass of the *dense* model over the calibration windows records, for every block linear layer, what the
allocation and one-shot pruning need: ``Σ_t x_t²`` per input feature (Wanda's ‖X_j‖₂², OWL's outlier ratios) and,
optionally, ``H = Σ_t x_t x_tᵀ`` (SparseGPT). The inputs are the dense model's own (the ``none`` error-correction
mode of :mod:`pruning.block_loop`), so any allocation can then be pruned without running the model again —
the basis of the λ search in :mod:`pruning.tune`. This is **not** the sequential reference protocol of Wanda /
SparseGPT (where each block sees the already-pruned earlier blocks): results are labelled "one-shot (dense
statistics)" and the tune command re-runs the sequential prune at the chosen λ (``--final``).

The cache (``spectra.config.cache_dir()/calib_stats``) is keyed by a sha256 of all the model's parameters and by the
calibration settings; files are written under a temporary name and renamed.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch

from pruning.block_loop import LoopResult, dense_layer_stats, layer_targets, prune_linears, prune_weights
from pruning.blocks import BlockIO, block_linears
from pruning.pruners import DEFAULT_PRUNER, get_pruner, one_shot_pruners
from pruning.pruners.base import NM, LayerStats
from pruning.settings import CalibrationSettings

__all__ = ["TUNE_CALIBRATION", "DenseStats", "stats_key", "dense_stats", "weights_fingerprint",
           "prune_from_stats", "DenseWeights", "PruneOnLoad"]

#: the tuning's calibration where the caller gives none: 16 × 256 tokens, a few seconds on a laptop CPU
TUNE_CALIBRATION = CalibrationSettings(nsamples=16, seqlen=256)


@dataclass
class DenseStats:
    """Per-layer dense statistics {longname: LayerStats} (layers of one input group share their tensors) of the
    calibration windows ``settings``."""

    settings: CalibrationSettings
    fingerprint: str
    layers: dict

    def needs_ok(self, needs: frozenset) -> bool:
        return not (needs & {"H"}) or all(st.H is not None for st in self.layers.values())


def weights_fingerprint(model: torch.nn.Module) -> str:
    """sha256 of every parameter of ``model`` (names, dtypes, shapes, bytes): the cache key of its statistics."""
    from spectra.results import tensor_sha256_update

    digest = hashlib.sha256()
    for name, p in model.named_parameters():
        tensor_sha256_update(digest, name, p)
    return digest.hexdigest()


def stats_key(settings: CalibrationSettings, hessians: bool) -> dict:
    """What the statistics depend on besides the weights: the windows (not the folder they are read from) and
    whether H is kept."""
    key = dataclasses.asdict(settings)
    key.pop("data_path")
    return {**key, "hessians": bool(hessians)}


def _cache_file(fingerprint: str, settings: CalibrationSettings, hessians: bool) -> Path:
    from spectra.config import cache_dir

    key = hashlib.sha256(json.dumps(stats_key(settings, hessians), sort_keys=True).encode()).hexdigest()[:16]
    d = cache_dir() / "calib_stats"
    d.mkdir(parents=True, exist_ok=True)
    return d / f"{fingerprint[:24]}-{key}.safetensors"


def _save(path: Path, layers: dict[str, LayerStats]) -> None:
    from spectra.files import atomic_path, save_safetensors

    tensors, meta, seen = {}, {}, {}
    for name, st in layers.items():
        if id(st) in seen:  # layers of one input group share one record
            meta[name] = seen[id(st)]
            continue
        seen[id(st)] = meta[name] = name
        tensors[f"{name}|sq_norm"] = st.sq_norm.detach().cpu().contiguous()
        if st.H is not None:
            tensors[f"{name}|H"] = st.H.detach().cpu().contiguous()
        meta[f"{name}|ntokens"] = str(st.ntokens)
    with atomic_path(path) as tmp:
        save_safetensors(tensors, tmp, metadata={"layers": json.dumps(meta)})


def _load(path: Path) -> dict[str, LayerStats]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["layers"])
        keys = set(f.keys())
        records: dict[str, LayerStats] = {}
        out = {}
        for name, owner in meta.items():
            if "|" in name:
                continue
            if owner not in records:
                H = f.get_tensor(f"{owner}|H") if f"{owner}|H" in keys else None
                records[owner] = LayerStats(int(meta[f"{owner}|ntokens"]), f.get_tensor(f"{owner}|sq_norm"), H)
            out[name] = records[owner]
    return out


def dense_stats(model: torch.nn.Module, tokenizer, settings: CalibrationSettings = TUNE_CALIBRATION,
                hessians: bool = False, use_cache: bool = True,
                progress_cb: Optional[Callable[[int, int], None]] = None, block_io=None,
                calib: Optional[torch.Tensor] = None) -> DenseStats:
    """The dense statistics of ``model`` for the calibration windows ``settings`` (with H when ``hessians``): read
    from the cache, else collected and stored. A cache entry with Hessians also serves a request without them.

    ``block_io``: a streamed model's read-only block loader (a :class:`pruning.stream.StreamedModel` without writer);
    its blocks are read one at a time and the cache key is the hash of its shard files. ``calib``: the windows of
    ``settings`` when the caller has read them already (``get_calibration``'s; not modified).
    """
    from pruning.evaluation.data import get_calibration

    fp = weights_fingerprint(model) if block_io is None else block_io.fingerprint()
    if use_cache:
        for h in ([True] if hessians else [True, False]):
            p = _cache_file(fp, settings, h)
            if p.exists():
                try:
                    return DenseStats(settings, fp, _load(p))
                except Exception:  # a corrupt cache file is recomputed, never trusted
                    pass
    if calib is None:
        calib = get_calibration(tokenizer, settings.nsamples, settings.seqlen, settings.seed,
                                dataset=settings.dataset, path=settings.data_path)
    needs = frozenset({"H"}) if hessians else frozenset()
    layers = dense_layer_stats(model, calib, needs, settings.batch_size, progress_cb=progress_cb, block_io=block_io)
    if use_cache:
        try:
            _save(_cache_file(fp, settings, hessians), layers)
        except OSError:  # an unwritable cache never breaks a run
            pass
    return DenseStats(settings, fp, layers)


class DenseWeights:
    """A copy of a model's block-linear weights, to restore the dense model between one-shot candidates."""

    def __init__(self, model: torch.nn.Module):
        self.linears = [lin for blk in block_linears(model) for lin in blk]
        self.saved = {lin.longname: lin.module.weight.detach().clone() for lin in self.linears}

    def restore(self) -> None:
        for lin in self.linears:
            lin.module.weight.data.copy_(self.saved[lin.longname])


def _check_one_shot(stats: DenseStats, pruner: str) -> None:
    if pruner not in one_shot_pruners():
        raise ValueError(f"pruner {pruner!r} cannot prune from dense statistics; use one of "
                         f"{', '.join(one_shot_pruners())} (or the sequential loop)")
    if not stats.needs_ok(get_pruner(pruner).needs):
        raise ValueError(f"pruner {pruner!r} needs the Hessians in the dense statistics; collect them with "
                         f"hessians=True (--hessians)")


@torch.no_grad()
def prune_from_stats(model: torch.nn.Module, stats: DenseStats, sparsity, pruner: str = DEFAULT_PRUNER,
                     nm: NM = None, pruner_options: Optional[dict] = None) -> LoopResult:
    """One-shot pruning of every block linear layer from dense statistics (no forward pass).

    ``sparsity``: one float or {longname: sparsity}. ``pruner`` must be one-shot (``PrunerSpec.one_shot``; one that
    needs ``H``, SparseGPT, needs statistics collected with ``hessians=True``). Labelled "one-shot (dense
    statistics)"; not the sequential
    reference protocol (module docstring).
    """
    _check_one_shot(stats, pruner)
    return prune_weights(model, sparsity, pruner, nm, pruner_options, stats=stats.layers)


class PruneOnLoad(BlockIO):
    """A streamed model pruned one-shot from dense statistics as its blocks are read: ``load(b)`` reads block ``b``
    through ``io`` (read-only, e.g. a :class:`pruning.stream.StreamedModel` without writer) and prunes its linear
    layers as :func:`prune_from_stats` would; ``release`` hands it back to ``io`` (freed). A blockwise evaluation
    through it (:func:`pruning.stream.blockwise_perplexity`) scores the pruned model without holding it."""

    def __init__(self, model: torch.nn.Module, io: BlockIO, stats: DenseStats, sparsity, pruner: str = DEFAULT_PRUNER,
                 nm: NM = None, pruner_options: Optional[dict] = None):
        _check_one_shot(stats, pruner)
        self.io, self.stats, self.spec, self.nm, self.options = io, stats, get_pruner(pruner), nm, pruner_options
        self.per_block = block_linears(model)
        self.targets = layer_targets([lin for blk in self.per_block for lin in blk], sparsity, nm)

    def load(self, b: int, block: torch.nn.Module) -> None:
        self.io.load(b, block)
        prune_linears(self.per_block[b], self.spec, self.targets, self.nm, self.options, self.stats.layers)

    def release(self, b: int, block: torch.nn.Module) -> None:
        self.io.release(b, block)
