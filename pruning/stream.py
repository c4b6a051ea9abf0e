"""Larger than RAM: a model whose decoder blocks are read one at a time from its safetensors shards.

:class:`StreamedModel` builds the CausalLM skeleton without weights (parameters on the meta device, buffers such as
rotary frequencies computed on the CPU), loads the embeddings / final norm / LM head, and implements the
:class:`pruning.blocks.BlockIO` protocol: ``load(b)`` reads decoder block ``b`` from the shards into the storage
dtype, ``release(b)`` hands the (pruned) block to a :class:`ShardWriter` and puts it back on the meta device. Peak
host memory is one block + the writer's current shard + the calibration activations + the embeddings / head.

:func:`write_streamed_output` finishes an output folder (remaining tensors, index, config, generation config,
tokenizer); :func:`streamed_perplexity` evaluates a safetensors folder block by block with the same windows and NLL
as :func:`pruning.evaluation.perplexity.perplexity`.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Optional

import torch

from pruning.blocks import (
    BlockIO,
    StandIn,
    blocks_replaced,
    capture_block_inputs,
    first_output,
    storage_device,
    walk_blocks,
)
from spectra.errors import ModelLoadError
from spectra.files import atomic_path, save_safetensors
from spectra.weights import decoder_layers

#: files copied from the source folder next to the written weights (tokenizer, chat template, generation config)
AUX_PATTERNS = ("tokenizer*", "special_tokens_map.json", "vocab.json", "merges.txt", "*.model", "*.tiktoken",
                "chat_template*", "generation_config.json", "added_tokens.json", "preprocessor_config.json")
#: default largest output shard (bytes); small so that the writer's buffer stays a small part of peak memory
DEFAULT_SHARD_BYTES = 256 * 10**6
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

_CONVERT_HINT = ("--stream reads a local Hugging Face folder of *.safetensors; {what} — convert it once: "
                 "python -c \"from spectra.models import load_model; lm = load_model('{src}'); "
                 "lm.model.save_pretrained('OUT', safe_serialization=True); lm.tokenizer.save_pretrained('OUT')\" "
                 "(needs RAM for the whole model), then pass OUT")


def stream_source_dir(source) -> Path:
    """The safetensors folder ``--stream`` reads for ``source`` (built-in alias or local folder); a one-line
    :class:`ModelLoadError` saying how to convert for anything else (GGUF, ``.bin`` weights, hub id)."""
    from spectra.models import builtin_model_dir, resolve_source

    src = resolve_source(source)
    if src.kind == "builtin":
        return builtin_model_dir(src.builtin)
    if src.kind == "gguf":
        raise ModelLoadError(_CONVERT_HINT.format(what=f"{src.ref} is a GGUF file", src=src.ref))
    if src.kind == "hub":
        raise ModelLoadError(f"--stream reads a local folder, not a hub id; download it first: huggingface-cli "
                             f"download {src.ref} --include '*.safetensors' '*.json' '*.model' --local-dir DIR, "
                             f"then pass DIR")
    if not sorted(src.path.glob("*.safetensors")):
        raise ModelLoadError(_CONVERT_HINT.format(what=f"{src.path} holds pytorch .bin weights", src=src.ref))
    return src.path


class ShardIndex:
    """checkpoint key → safetensors file of a folder (from the index JSON, else from the file headers)."""

    def __init__(self, directory: Path):
        from spectra.weights import safetensors_header

        self.directory = Path(directory)
        idx = self.directory / "model.safetensors.index.json"
        if idx.is_file():
            wm = json.loads(idx.read_text())["weight_map"]
            self.file = {k: self.directory / f for k, f in wm.items()}
        else:
            self.file = {k: f for f in sorted(self.directory.glob("*.safetensors")) for k in safetensors_header(f)}

    def read(self, keys: list[str]) -> dict[str, torch.Tensor]:
        """The tensors ``keys`` (copies in host memory), each shard opened once and closed again."""
        from safetensors import safe_open

        by_file: dict[Path, list[str]] = {}
        for k in keys:
            by_file.setdefault(self.file[k], []).append(k)
        out = {}
        for f, ks in by_file.items():
            with safe_open(str(f), framework="pt") as fh:
                for k in ks:  # a private copy: a tensor over the file mapping would keep it (and CoW pages) alive
                    out[k] = fh.get_tensor(k).clone()
        return out

    def nbytes(self, dtype: Optional[torch.dtype] = None) -> int:
        """Bytes of every tensor of the checkpoint (at ``dtype``'s item size when given)."""
        from spectra.weights import safetensors_header

        total = 0
        for f in sorted(set(self.file.values())):
            for shape in safetensors_header(f).values():
                n = 1
                for s in shape:
                    n *= int(s)
                total += n * (torch.empty(0, dtype=dtype).element_size() if dtype is not None else 4)
        return total


class ShardWriter:
    """Writes tensors as ``model-XXXXX-of-YYYYY.safetensors`` shards of at most ``max_bytes`` (+ the index JSON)."""

    def __init__(self, directory: Path, max_bytes: int = DEFAULT_SHARD_BYTES):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_bytes = int(max_bytes)
        self.buffer: dict[str, torch.Tensor] = {}
        self.size = 0
        self.parts: list[tuple[Path, list[str]]] = []
        self.total = 0

    def add(self, key: str, tensor: torch.Tensor) -> None:
        """Queue one tensor; write the current shard when it reaches ``max_bytes``."""
        t = tensor.detach().to("cpu").contiguous()
        self.buffer[key] = t
        self.size += t.numel() * t.element_size()
        if self.size >= self.max_bytes:
            self.flush()

    def flush(self) -> None:
        """Write the queued tensors as the next (provisionally named) shard."""
        if not self.buffer:
            return
        path = self.directory / f"part-{len(self.parts):05d}.safetensors.tmp"
        save_safetensors(self.buffer, path, {"format": "pt"})
        self.parts.append((path, list(self.buffer)))
        self.total += self.size
        self.buffer, self.size = {}, 0

    def finish(self) -> list[Path]:
        """Flush, give the shards their final names and write ``model.safetensors.index.json`` (one shard:
        ``model.safetensors``, no index, as ``save_pretrained`` does); returns the shard paths."""
        self.flush()
        n = len(self.parts)
        names, weight_map = [], {}
        for i, (path, keys) in enumerate(self.parts):
            name = "model.safetensors" if n == 1 else f"model-{i + 1:05d}-of-{n:05d}.safetensors"
            os.replace(path, self.directory / name)
            names.append(self.directory / name)
            weight_map.update({k: name for k in keys})
        if n > 1:
            index = {"metadata": {"total_size": self.total}, "weight_map": dict(sorted(weight_map.items()))}
            with atomic_path(self.directory / "model.safetensors.index.json") as tmp:
                tmp.write_text(json.dumps(index, indent=2))
        return names


def _libc():
    """glibc through ctypes, or None (other C libraries / platforms)."""
    import ctypes
    import ctypes.util

    try:
        lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return lib if hasattr(lib, "malloc_trim") and hasattr(lib, "mallopt") else None
    except OSError:
        return None


def limit_heap_growth(threshold: int = 1 << 20) -> None:
    """Serve allocations ≥ ``threshold`` bytes from their own mappings (glibc ``M_MMAP_THRESHOLD``), so that the
    blocks' tensors go back to the OS when freed instead of fragmenting the heap (a streamed run otherwise grows by
    hundreds of MB over the blocks). No-op without glibc."""
    lib = _libc()
    if lib is not None:
        lib.mallopt(-3, int(threshold))  # M_MMAP_THRESHOLD


def trim_heap() -> None:
    """Return the free heap memory to the OS (glibc ``malloc_trim(0)``); no-op without glibc."""
    lib = _libc()
    if lib is not None:
        lib.malloc_trim(0)


def _set_param(model: torch.nn.Module, name: str, tensor: torch.Tensor) -> None:
    """Replace parameter ``name`` of ``model`` by ``tensor`` (no grad)."""
    owner, _, leaf = name.rpartition(".")
    mod = model.get_submodule(owner) if owner else model
    mod._parameters[leaf] = torch.nn.Parameter(tensor, requires_grad=False)


class StreamedModel(BlockIO):
    """A CausalLM skeleton over a safetensors folder whose decoder blocks are loaded one at a time (see module doc).

    ``dtype``: storage / compute precision of the weights (None = the checkpoint's own). ``writer``: where released
    blocks go (None: they are only freed). ``load_head=False`` leaves an untied LM head on the meta device (pruning
    never runs it; :meth:`write_rest` copies it from the shards), saving its memory.
    """

    def __init__(self, directory, dtype: Optional[torch.dtype] = None, writer: Optional[ShardWriter] = None,
                 tokenizer: bool = True, load_head: bool = True):
        from accelerate import init_empty_weights
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        limit_heap_growth()
        self.directory = Path(directory)
        self.config = AutoConfig.from_pretrained(str(self.directory))
        self.dtype = dtype or checkpoint_dtype(self.directory)
        self.writer = writer
        self.index = ShardIndex(self.directory)
        with init_empty_weights(include_buffers=False):
            self.model = AutoModelForCausalLM.from_config(self.config, dtype=self.dtype)
        self.model.eval()
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.directory)) if tokenizer else None
        self.prefix = self._base_prefix()
        self.blocks = decoder_layers(self.model)
        names = {id(m): n for n, m in self.model.named_modules()}
        self.block_names = [names[id(blk)] for blk in self.blocks]
        self.tied: dict[str, str] = {}
        self.lazy: set[str] = set()
        self._load_rest(load_head)

    def _base_prefix(self) -> str:
        return getattr(self.model, "base_model_prefix", "") or ""

    def key(self, name: str) -> Optional[str]:
        """Checkpoint key of model parameter ``name`` (with or without the base-model prefix), or None."""
        if name in self.index.file:
            return name
        p = self.prefix + "."
        if self.prefix and name.startswith(p) and name[len(p):] in self.index.file:
            return name[len(p):]
        return None

    def _load(self, names: list[str]) -> None:
        keys = {n: self.key(n) for n in names}
        missing = [n for n, k in keys.items() if k is None]
        if missing:
            raise ModelLoadError(f"{self.directory} has no tensor for {missing[0]} (and {len(missing) - 1} more); "
                                 f"is it a complete checkpoint of a {type(self.model).__name__}?")
        got = self.index.read(list(keys.values()))
        for n, k in keys.items():
            _set_param(self.model, n, got[k].to(self.dtype))

    def _load_rest(self, load_head: bool = True) -> None:
        """Load every parameter outside the decoder blocks; tie the LM head to the embeddings when the checkpoint
        has no head of its own (``tie_word_embeddings``); leave an untied head on meta unless ``load_head``."""
        inside = tuple(n + "." for n in self.block_names)
        rest = [n for n, _ in self.model.named_parameters(remove_duplicate=False) if not n.startswith(inside)]
        out = self.model.get_output_embeddings()
        head = next((n for n, p in self.model.named_parameters(remove_duplicate=False)
                     if out is not None and p is out.weight), None)
        if head is not None and self.key(head) is None:
            rest.remove(head)
            self._load(rest)
            out.weight = self.model.get_input_embeddings().weight
            self.tied[head] = "embed"
        elif head is not None and not load_head:
            rest.remove(head)
            self.lazy.add(head)
            self._load(rest)
        else:
            self._load(rest)

    def load(self, b: int, block: torch.nn.Module) -> None:
        """Read decoder block ``b`` from the shards (storage dtype, CPU)."""
        self._load([f"{self.block_names[b]}.{n}" for n, _ in block.named_parameters()])

    def release(self, b: int, block: torch.nn.Module) -> None:
        """Queue block ``b``'s tensors on the writer (checkpoint key names) and free them (back to meta)."""
        if self.writer is not None:
            for n, p in block.named_parameters():
                self.writer.add(self.key(f"{self.block_names[b]}.{n}"), p.detach())
        block.to("meta")
        trim_heap()

    def fingerprint(self) -> str:
        """sha256 of the checkpoint's safetensors files (the cache key of statistics of the streamed model)."""
        from spectra.models import files_sha256

        return files_sha256(sorted(self.directory.glob("*.safetensors")))

    def write_rest(self) -> None:
        """Queue every parameter outside the decoder blocks (a tied head is not written: it is the embedding)."""
        inside = tuple(n + "." for n in self.block_names)
        for n, p in self.model.named_parameters():  # de-duplicated: a tied head appears once, as the embedding
            if not n.startswith(inside) and n not in self.tied:
                t = p.detach()
                if n in self.lazy:  # never loaded: copy it from the shards now
                    t = self.index.read([self.key(n)])[self.key(n)].to(self.dtype)
                self.writer.add(self.key(n), t)


def checkpoint_dtype(directory) -> torch.dtype:
    """The dtype a checkpoint folder declares in config.json (``dtype`` / ``torch_dtype``; float32 if none)."""
    cfg = json.loads((Path(directory) / "config.json").read_text())
    name = str(cfg.get("dtype") or cfg.get("torch_dtype") or "float32").replace("torch.", "")
    return DTYPES.get(name, torch.float32)


def copy_aux_files(src: Path, dst: Path) -> None:
    """Copy the tokenizer / generation-config files of ``src`` into ``dst`` (never the weights)."""
    for pattern in AUX_PATTERNS:
        for f in Path(src).glob(pattern):
            if f.is_file() and not (Path(dst) / f.name).exists():
                shutil.copy2(f, Path(dst) / f.name)


def write_streamed_output(sm: StreamedModel, out: Path) -> list[Path]:
    """Finish a streamed prune's output folder ``out``: the non-block tensors, the shards' final names and index,
    config.json (with the storage dtype), the generation config and the tokenizer files; returns the shards."""
    sm.write_rest()
    shards = sm.writer.finish()
    cfg = json.loads((sm.directory / "config.json").read_text())
    cfg["dtype"] = str(sm.dtype).replace("torch.", "")
    cfg.pop("torch_dtype", None)
    cfg.pop("quantization_config", None)
    (Path(out) / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True))
    copy_aux_files(sm.directory, Path(out))
    return shards


def output_nbytes(directory, dtype: torch.dtype) -> int:
    """Bytes the weights of the safetensors folder ``directory`` take at ``dtype`` (the size of a streamed output)."""
    return ShardIndex(Path(directory)).nbytes(dtype)


@torch.no_grad()
def blockwise_hidden(model: torch.nn.Module, windows: torch.Tensor, batch_size: int = 1, device=None,
                     block_io: Optional[BlockIO] = None, progress: bool = False) -> tuple[list, bool]:
    """Outputs of the last decoder block for ``windows`` (n, seqlen), one block at a time on ``device`` (loaded by
    ``block_io`` when streamed); returns (per-batch chunks, whether the blocks return tuples)."""
    chunks = capture_block_inputs(model, windows, batch_size, device)
    as_tuple = False
    it = walk_blocks(model, device, block_io, inputs=chunks)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, total=len(decoder_layers(model)), desc="blocks", unit="block", leave=False)
    for _, block in it:
        for chunk in chunks:
            out = block(chunk.hidden, *chunk.args, **chunk.kwargs)
            as_tuple = isinstance(out, (tuple, list))
            chunk.hidden = first_output(out)
    return chunks, as_tuple


@torch.no_grad()
def blockwise_perplexity(model: torch.nn.Module, tokenizer, dataset: str = "wikitext2", seqlen: Optional[int] = None,
                         max_windows: Optional[int] = None, batch_size: int = 1, add_bos: Optional[bool] = None,
                         device=None, block_io: Optional[BlockIO] = None, path=None, progress: bool = False):
    """:func:`pruning.evaluation.perplexity.perplexity` (same windows, same NLL) computed block by block: every
    window's hidden
    state goes through block 0, then block 1, ... (each moved to ``device`` once, loaded by ``block_io`` when
    streamed); the embeddings, final norm and head then run on ``device`` with the blocks replaced by stand-ins."""
    import math

    from pruning.evaluation.perplexity import PerplexityResult, batch_nll, prepare_windows

    key, seqlen, windows, bos_id = prepare_windows(model, tokenizer, dataset, seqlen, max_windows, add_bos, path)
    chunks, as_tuple = blockwise_hidden(model, windows, batch_size, device, block_io, progress)
    storage = storage_device(model)
    dev = device if device is not None else storage
    stand_ins = [StandIn(i, as_tuple=as_tuple, like=m) for i, m in enumerate(decoder_layers(model))]
    total_nll, total_tok = 0.0, 0
    with blocks_replaced(model, stand_ins) as view:
        view.to(dev)  # the view's blocks are stand-ins: the model's own blocks stay where they are
        try:
            for c, chunk in enumerate(chunks):
                batch = windows[c * batch_size:(c + 1) * batch_size].to(dev)
                stand_ins[0].replay = chunk.hidden
                nll, ntok = batch_nll(view, batch)
                total_nll += nll
                total_tok += ntok
        finally:
            view.to(storage)
    mean = total_nll / total_tok
    return PerplexityResult(dataset=key, ppl=math.exp(mean), nll=mean, ntokens=total_tok, nwindows=windows.shape[0],
                            seqlen=seqlen, bos=bos_id is not None)


def streamed_perplexity(directory, dataset: str = "wikitext2", dtype: Optional[torch.dtype] = None, **kw):
    """:func:`blockwise_perplexity` of the safetensors folder ``directory``, its blocks read one at a time."""
    sm = StreamedModel(directory, dtype)
    return blockwise_perplexity(sm.model, sm.tokenizer, dataset, block_io=sm, **kw)
