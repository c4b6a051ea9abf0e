"""GGUF → fp32 safetensors without building the model: the fast path of :func:`spectra.models.gguf_to_safetensors`.

transformers' GGUF loader (``from_pretrained(gguf_file=...)``) parses every metadata field (≈98k tokenizer strings),
imports the modeling code, instantiates the model with random weights, dequantizes, converts the tokenizer and only
then can the weights be saved: ≈28 s for the built-in SmolLM2. Here the header is read once with :mod:`struct` (long
arrays skipped, only their length kept), each tensor is dequantized with ``gguf.quants.dequantize`` (threads, one per
core), the GGUF names are mapped to the Hugging Face names (:data:`BLOCK_NAMES`, :data:`TOP_NAMES`) and llama.cpp's
conversion is undone exactly as ``transformers.modeling_gguf_pytorch_utils`` does it (``LlamaTensorProcessor``: the
rotary q/k row permutation; ``Gemma2TensorProcessor``, also used for gemma3: ``norm.weight − 1``); the config is
transformers' ``GGUF_CONFIG_MAPPING`` applied to the same metadata. The tokenizer is built once, on first need
(:func:`write_tokenizer`, by its class: :data:`TOKENIZER_CLASSES`). ``tests/test_gguf_fast.py`` checks the tensors
(bit for bit), the key set, the config and the tokenizer files against the transformers path for both built-in
models. Other architectures use the transformers path.
"""
from __future__ import annotations

import mmap
import os
import struct
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

#: the GGUF architectures converted here (each checked against transformers in tests/test_gguf_fast.py)
FAST_ARCHITECTURES = ("llama", "gemma3")
#: arrays up to this length are read into lists (config values); longer ones (tokenizer vocabularies) are skipped
_SMALL_ARRAY = 1024
_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


class GGUFTensorInfo(NamedTuple):
    name: str
    dims: tuple[int, ...]  # GGUF order (fastest-varying first)
    ggml_type: int
    offset: int  # from the start of the data section


class ArrayLength(int):
    """A long metadata array that was skipped: only its length is kept."""


class GGUFHeader(NamedTuple):
    path: Path
    metadata: dict  # key → value (python scalars, str, small lists, ArrayLength for long arrays)
    tensors: list[GGUFTensorInfo]
    data_start: int


def read_header(path: Path) -> GGUFHeader:
    """The metadata and tensor table of a GGUF file (versions 2 and 3, little-endian)."""
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        if buf[:4] != b"GGUF":
            raise ValueError(f"{path} is not a GGUF file (bad magic)")
        version, n_tensors, n_kv = struct.unpack_from("<IQQ", buf, 4)
        if version not in (2, 3):
            raise ValueError(f"GGUF version {version} is not supported")
        pos = 24

        def string(p: int) -> tuple[str, int]:
            (n,) = struct.unpack_from("<Q", buf, p)
            return buf[p + 8:p + 8 + n].decode("utf-8", errors="replace"), p + 8 + n

        def value(p: int, vtype: int) -> tuple[Any, int]:
            if vtype in _SCALAR:
                fmt = _SCALAR[vtype]
                return struct.unpack_from(fmt, buf, p)[0], p + struct.calcsize(fmt)
            if vtype == 8:
                return string(p)
            if vtype != 9:
                raise ValueError(f"unknown GGUF value type {vtype}")
            etype, count = struct.unpack_from("<IQ", buf, p)
            p += 12
            if etype in _SCALAR and count > _SMALL_ARRAY:
                return ArrayLength(count), p + count * struct.calcsize(_SCALAR[etype])
            if etype == 8 and count > _SMALL_ARRAY:
                for _ in range(count):
                    p += 8 + struct.unpack_from("<Q", buf, p)[0]
                return ArrayLength(count), p
            out = []
            for _ in range(count):
                v, p = value(p, etype)
                out.append(v)
            return out, p

        metadata: dict = {}
        for _ in range(n_kv):
            key, pos = string(pos)
            (vtype,) = struct.unpack_from("<I", buf, pos)
            metadata[key], pos = value(pos + 4, vtype)
        tensors = []
        for _ in range(n_tensors):
            name, pos = string(pos)
            (n_dims,) = struct.unpack_from("<I", buf, pos)
            dims = struct.unpack_from(f"<{n_dims}Q", buf, pos + 4)
            ggml_type, offset = struct.unpack_from("<IQ", buf, pos + 4 + 8 * n_dims)
            pos += 4 + 8 * n_dims + 12
            tensors.append(GGUFTensorInfo(name, tuple(int(d) for d in dims), int(ggml_type), int(offset)))
    align = int(metadata.get("general.alignment", 32))
    return GGUFHeader(Path(path), metadata, tensors, pos + (-pos % align))


#: transformers' ``GGUF_CONFIG_MAPPING`` entries of :data:`FAST_ARCHITECTURES` (GGUF key → config field; a copy,
#: so that the conversion does not import transformers; tests/test_gguf_fast.py checks it against the original)
CONFIG_KEYS = {
    "general": {"architecture": "model_type", "name": "_model_name_or_path"},
    "tokenizer": {"ggml.bos_token_id": "bos_token_id", "ggml.eos_token_id": "eos_token_id",
                  "ggml.unknown_token_id": "unk_token_id", "ggml.padding_token_id": "pad_token_id"},
    "llama": {"context_length": "max_position_embeddings", "block_count": "num_hidden_layers",
              "feed_forward_length": "intermediate_size", "embedding_length": "hidden_size",
              "rope.dimension_count": "head_dim", "rope.freq_base": "rope_theta",
              "attention.head_count": "num_attention_heads", "attention.head_count_kv": "num_key_value_heads",
              "attention.layer_norm_rms_epsilon": "rms_norm_eps", "vocab_size": "vocab_size"},
    "gemma3": {"context_length": "max_position_embeddings", "block_count": "num_hidden_layers",
               "feed_forward_length": "intermediate_size", "embedding_length": "hidden_size",
               "rope.dimension_count": None, "rope.freq_base": "rope_theta", "attention.key_length": "head_dim",
               "attention.head_count": "num_attention_heads", "attention.head_count_kv": "num_key_value_heads",
               "attention.layer_norm_rms_epsilon": "rms_norm_eps", "attention.sliding_window": "sliding_window",
               "vocab_size": "vocab_size"},
}
#: the Hugging Face class of each converted model type (config.json's ``architectures``)
HF_CLASSES = {"llama": "LlamaForCausalLM", "gemma3_text": "Gemma3ForCausalLM"}
#: GGUF tensor name (after ``blk.N.``) → Hugging Face module name (after ``model.layers.N.``), per architecture;
#: llama.cpp's names (gguf.constants.TENSOR_NAMES), the modules of transformers' LlamaForCausalLM /
#: Gemma3ForCausalLM
_BLOCK_COMMON = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
                 "attn_output": "self_attn.o_proj", "attn_norm": "input_layernorm", "ffn_gate": "mlp.gate_proj",
                 "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}
BLOCK_NAMES = {
    "llama": {**_BLOCK_COMMON, "ffn_norm": "post_attention_layernorm"},
    "gemma3": {**_BLOCK_COMMON, "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm",
               "post_attention_norm": "post_attention_layernorm", "ffn_norm": "pre_feedforward_layernorm",
               "post_ffw_norm": "post_feedforward_layernorm"},
}
TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}


def config_dict(header: GGUFHeader) -> dict:
    """The config dict transformers' ``load_gguf_checkpoint`` builds from this file's metadata (tied embeddings
    when there is no ``output.weight``; ``gemma3`` → ``gemma3_text``; the vocabulary size from the token list when the
    metadata has none), plus ``architectures``."""
    meta, arch = header.metadata, header.metadata["general.architecture"]
    if arch not in FAST_ARCHITECTURES:
        raise ValueError(f"architecture {arch!r} is not converted by the fast path")
    cfg: dict = {"tie_word_embeddings": all(t.name != "output.weight" for t in header.tensors)}
    for key, val in meta.items():
        prefix, _, rest = key.partition(".")
        target = CONFIG_KEYS.get(prefix, {}).get(rest) if prefix in ("general", "tokenizer", arch) else None
        if target is None:
            continue
        if isinstance(val, ArrayLength):
            raise ValueError(f"GGUF field {key} is a long array; not handled by the fast path")  # noqa: TRY004
        cfg[target] = val
    if cfg.get("model_type") == "gemma3":
        cfg["model_type"] = "gemma3_text"
    tokens = meta.get("tokenizer.ggml.tokens")
    if "vocab_size" not in cfg and tokens is not None:
        cfg["vocab_size"] = int(tokens) if isinstance(tokens, ArrayLength) else len(tokens)
    cfg["architectures"] = [HF_CLASSES[cfg["model_type"]]]
    return cfg


def hf_name(arch: str, gguf_name: str) -> str | None:
    """The Hugging Face state-dict key of a GGUF tensor (None for tensors transformers does not load)."""
    stem, _, suffix = gguf_name.rpartition(".")
    if stem.startswith("blk."):
        _, block, part = stem.split(".", 2)
        module = BLOCK_NAMES[arch].get(part)
        return None if module is None else f"model.layers.{block}.{module}.{suffix}"
    module = TOP_NAMES.get(stem)
    return None if module is None else f"{module}.{suffix}"


def _unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's rotary row permutation of q / k (``LlamaTensorProcessor._reverse_permute_weights``)."""
    dim = w.shape[0] // n_head // 2
    return w.reshape(n_head, dim, 2, *w.shape[1:]).swapaxes(2, 1).reshape(w.shape)


def undo_conversion(arch: str, name: str, w: np.ndarray, cfg: dict) -> np.ndarray:
    """What transformers' tensor processor of ``arch`` does to the dequantized GGUF tensor ``name``."""
    if arch == "llama" and (".attn_q." in name or ".attn_k." in name):
        heads, kv = cfg.get("num_attention_heads"), cfg.get("num_key_value_heads")
        if heads is None or kv is None:
            return w
        return _unpermute(w, heads if ".attn_q." in name else kv)
    if arch == "gemma3" and "norm.weight" in name:
        return w - 1
    return w


def _dequantize(header: GGUFHeader, data: np.ndarray, t: GGUFTensorInfo, cfg: dict):
    """The float32 torch tensor of the GGUF tensor ``t`` (``gguf.quants.dequantize``, then :func:`undo_conversion`)."""
    import gguf
    import torch

    qtype = gguf.GGMLQuantizationType(t.ggml_type)
    block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    shape = tuple(reversed(t.dims))
    n_bytes = int(np.prod(t.dims)) * type_size // block
    raw = data[header.data_start + t.offset:header.data_start + t.offset + n_bytes]
    if qtype in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
        raw = raw.view(np.float32 if qtype == gguf.GGMLQuantizationType.F32 else np.float16).reshape(shape)
    else:
        raw = raw.reshape(gguf.quant_shape_to_byte_shape(shape, qtype))
    w = undo_conversion(header.metadata["general.architecture"], t.name, gguf.quants.dequantize(np.asarray(raw), qtype),
                        cfg)
    return torch.from_numpy(np.array(w, dtype=np.float32, copy=True))


class Conversion:
    """A conversion under way: every GGUF tensor with a Hugging Face name (:func:`hf_name`) is dequantized on
    ``workers`` threads (default: every core) from the moment it is created, those named in ``first`` first and in
    that order (keys, or a function of (``{key: shape}``, config) returning them: an analysis passes the order it
    reads the block matrices in, so that it can start on block 0 while the rest is still being dequantized);
    :meth:`tensor` waits for one, :meth:`write` for all. ``ValueError`` for an architecture the fast path does not
    cover (:func:`config_dict`)."""

    def __init__(self, gguf_path: Path, first: Any = (), workers: int | None = None):
        self.header = read_header(Path(gguf_path))
        self.config = config_dict(self.header)
        arch, data = self.header.metadata["general.architecture"], np.memmap(self.header.path, mode="r")
        todo = {hf_name(arch, t.name): t for t in self.header.tensors if hf_name(arch, t.name) is not None}
        #: {Hugging Face key: shape} of every tensor written
        self.shapes = {key: tuple(reversed(t.dims)) for key, t in todo.items()}
        first = list(first(self.shapes, self.config) if callable(first) else first)
        order = [k for k in first if k in todo] + [k for k in todo if k not in set(first)]
        self._pool = ThreadPoolExecutor(max(1, workers or os.cpu_count() or 1), thread_name_prefix="gguf")
        self._futures = {k: self._pool.submit(_dequantize, self.header, data, todo[k], self.config) for k in order}
        self._pool.shutdown(wait=False)  # the queued tensors still run; the threads end with the last one

    def tensor(self, key: str):
        """The dequantized float32 tensor of the Hugging Face key ``key`` (waits until it is done)."""
        return self._futures[key].result()

    def tensors(self) -> dict:
        """``{hf_key: float32 torch tensor}`` of every tensor, in the GGUF file's order (waits for all)."""
        return {k: self._futures[k].result() for k in self.shapes}

    def cancel(self) -> None:
        """Drop the tensors not yet started (an analysis that failed half way)."""
        for f in self._futures.values():
            f.cancel()

    def write(self, out_dir: Path) -> None:
        """Write the fp32 safetensors HF directory (config.json, generation_config.json as transformers derives it
        from the config, model.safetensors) into ``out_dir``."""
        import json
        from importlib.metadata import version

        from .files import save_safetensors

        cfg, out_dir = self.config, Path(out_dir)
        tensors = self.tensors()
        (out_dir / "config.json").write_text(json.dumps({**cfg, "dtype": "float32"}, indent=2, sort_keys=True))
        gen = {k: cfg[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if cfg.get(k) is not None}
        gen.update(_from_model_config=True, transformers_version=version("transformers"))
        (out_dir / "generation_config.json").write_text(json.dumps(gen, indent=2, sort_keys=True))
        save_safetensors(tensors, out_dir / "model.safetensors", metadata={"format": "pt"})


def dequantized_tensors(header: GGUFHeader, workers: int | None = None) -> dict:
    """``{hf_key: float32 torch tensor}`` of every GGUF tensor with a Hugging Face name (:func:`hf_name`),
    dequantized with ``gguf.quants.dequantize`` on ``workers`` threads (default: every core) and converted back
    (:func:`undo_conversion`)."""
    return Conversion(header.path, workers=workers).tensors()


def convert(gguf_path: Path, out_dir: Path) -> None:
    """Write the fp32 safetensors HF directory of ``gguf_path`` (config.json, generation_config.json as transformers
    derives it from the config, model.safetensors) into ``out_dir``, without importing transformers. Raises
    ``ValueError`` for an architecture the fast path does not cover (the caller then uses transformers' loader). The
    tokenizer is written later, on first need (:func:`write_tokenizer`, :data:`TOKENIZER_CLASSES`)."""
    Conversion(gguf_path).write(out_dir)


#: the tokenizer class transformers' ``AutoTokenizer`` picks for a GGUF of (``general.architecture``,
#: ``tokenizer.ggml.model``). Built by that class directly, the tokenizer skips AutoTokenizer's reading of every
#: metadata field for the config (≈8 s of Python for the built-in SmolLM2, ≈0.7 s this way; Gemma-3 23 s → 5 s); the
#: saved files are the same bytes (tests/test_gguf_fast.py). Other GGUFs go through ``AutoTokenizer``.
TOKENIZER_CLASSES = {("llama", "gpt2"): "TokenizersBackend", ("gemma3", "llama"): "GemmaTokenizer"}


def build_tokenizer(gguf_path: Path):
    """The transformers tokenizer of ``gguf_path`` (:data:`TOKENIZER_CLASSES`, else ``AutoTokenizer``)."""
    from transformers import AutoTokenizer
    from transformers.models.auto.tokenization_auto import tokenizer_class_from_name

    gguf_path = Path(gguf_path)
    meta = read_header(gguf_path).metadata
    name = TOKENIZER_CLASSES.get((meta.get("general.architecture"), meta.get("tokenizer.ggml.model")))
    cls = AutoTokenizer if name is None else tokenizer_class_from_name(name)
    return cls.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)


def write_tokenizer(gguf_path: Path, out_dir: Path) -> None:
    """Build the tokenizer of ``gguf_path`` (:func:`build_tokenizer`) and save it into ``out_dir``: written in a
    temporary folder inside it, then each file renamed into place, ``tokenizer_config.json`` (the marker that it is
    complete) last."""
    import shutil
    import tempfile

    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    tok = build_tokenizer(gguf_path)
    tmp = Path(tempfile.mkdtemp(prefix=".tokenizer-", dir=out_dir))
    try:
        tok.save_pretrained(tmp)
        names = sorted(p.name for p in tmp.iterdir())
        for name in sorted(names, key=lambda n: n == "tokenizer_config.json"):
            os.replace(tmp / name, out_dir / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
