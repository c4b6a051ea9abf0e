"""Enumerate the 2-D weight matrices of a transformer's blocks, with block index, role and true (out, in) shape.

Two routes give identical results (same names, same tensors):

* :func:`iter_model_weights` — from an in-memory ``torch.nn.Module`` (needed for pruned models);
* :func:`iter_safetensors_weights` — straight from a HF directory's safetensors (or ``.bin``) files, one matrix at
  a time, without instantiating the model (needed for 7B–70B models on a laptop).

GPT-2 style ``Conv1D`` layers store ``W`` as (in, out); both routes return the tensor transposed to (out, in).
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Optional

import pandas as pd
import torch

from .errors import ModelLoadError, SpectraError

# Module name (last path component) → role. Unlisted names keep their own name as role.
ROLE_NAMES = {
    "q_proj": "q", "k_proj": "k", "v_proj": "v", "o_proj": "o", "out_proj": "o",
    "query": "q", "key": "k", "value": "v", "qkv_proj": "qkv", "query_key_value": "qkv", "Wqkv": "qkv",
    "gate_proj": "gate", "up_proj": "up", "down_proj": "down", "gate_up_proj": "gate_up",
    "w1": "gate", "w3": "up", "w2": "down",
    "fc1": "fc1", "fc2": "fc2", "c_attn": "c_attn", "c_fc": "c_fc",
    "dense_h_to_4h": "dense_h_to_4h", "dense_4h_to_h": "dense_4h_to_h",
}
#: Roles ordered as a block computes them (used to sort and to pick sublayer order).
ROLE_ORDER = ["q", "k", "v", "qkv", "c_attn", "o", "attn.c_proj", "dense", "gate", "up", "gate_up", "fc1", "c_fc",
              "dense_h_to_4h", "down", "fc2", "mlp.c_proj", "dense_4h_to_h"]
_BLOCK_RE = re.compile(r"(?:^|\.)(?:layers|h|blocks|layer|decoder\.layers)\.(\d+)\.")
_EMBED_NAMES = ("embed_tokens", "wte", "wpe", "embed_positions", "embed_in", "word_embeddings", "lm_head", "embed_out")
#: model types whose checkpoints store Conv1D (in, out) weights for these module names.
_CONV1D = {"gpt2": ("c_attn", "c_proj", "c_fc"), "imagegpt": ("c_attn", "c_proj", "c_fc")}


@dataclass(frozen=True)
class WeightInfo:
    """One weight matrix: parameter name, module path, block index (-1 outside blocks), role and (out, in) shape."""

    param: str
    longname: str
    block: int
    role: str
    rows: int
    cols: int
    num_params: int
    transposed: bool = False  # stored as (in, out) (GPT-2 Conv1D)

    def as_dict(self) -> dict:
        return asdict(self)


def classify(param: str) -> tuple[str, int, str]:
    """``param`` name → (longname, block index or -1, role)."""
    longname = param[: -len(".weight")] if param.endswith(".weight") else param
    m = _BLOCK_RE.search(longname + ".")
    block = int(m.group(1)) if m else -1
    parts = longname.split(".")
    last = parts[-1]
    if last == "dense" and len(parts) > 1:  # GPT-NeoX / Falcon attention output
        role = "o" if parts[-2] in ("attention", "self_attention", "attn") else "dense"
    elif last == "c_proj" and len(parts) > 1:  # GPT-2: attn.c_proj vs mlp.c_proj
        role = f"{parts[-2]}.c_proj"
    elif last in _EMBED_NAMES:
        role = "lm_head" if last in ("lm_head", "embed_out") else "embed"
    else:
        role = ROLE_NAMES.get(last, last)
    return longname, block, role


def is_candidate(param: str, shape: tuple, include_embeddings: bool) -> bool:
    """True for a 2-D ``*.weight`` inside a transformer block (and, with ``include_embeddings``, the embedding /
    LM-head matrices): the matrices spectra analyses and the pruners prune."""
    if len(shape) != 2 or not param.endswith(".weight"):
        return False
    _, block, role = classify(param)
    if role in ("embed", "lm_head"):
        return include_embeddings
    return block >= 0


def _role_rank(info: WeightInfo) -> tuple:
    rank = ROLE_ORDER.index(info.role) if info.role in ROLE_ORDER else len(ROLE_ORDER)
    return (info.block if info.block >= 0 else (10**9 if info.role == "lm_head" else -1), rank, info.longname)


def _make_info(param: str, stored_shape: tuple, transposed: bool) -> WeightInfo:
    longname, block, role = classify(param)
    rows, cols = (stored_shape[1], stored_shape[0]) if transposed else (stored_shape[0], stored_shape[1])
    return WeightInfo(param, longname, block, role, int(rows), int(cols), int(rows * cols), transposed)


# ----------------------------------------------------------------------------------------------- in-memory route
def stores_in_out(module: Optional[torch.nn.Module]) -> bool:
    """True when ``module`` stores its weight as (in, out): GPT-2's ``Conv1D`` (``nn.Linear`` stores (out, in))."""
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # pragma: no cover - transformers always has it
        return False
    return isinstance(module, Conv1D)


def iter_model_weights(model: torch.nn.Module, include_embeddings: bool = False
                       ) -> Iterator[tuple[WeightInfo, torch.Tensor]]:
    """Yield ``(WeightInfo, W)`` for every 2-D block weight of an in-memory model, W detached in (out, in) layout.

    Tied weights (e.g. an LM head tied to the embeddings) are reported once.
    """
    modules = dict(model.named_modules())
    found = []
    for param, tensor in model.named_parameters():  # named_parameters de-duplicates tied tensors
        if not is_candidate(param, tuple(tensor.shape), include_embeddings):
            continue
        transposed = stores_in_out(modules.get(param.rsplit(".", 1)[0]))
        found.append((_make_info(param, tuple(tensor.shape), transposed), tensor))
    if not found:
        raise SpectraError("the model has no 2-D weight matrices inside transformer blocks; is it a transformer LM?")
    for info, tensor in sorted(found, key=lambda it: _role_rank(it[0])):
        w = tensor.detach()
        yield info, (w.T if info.transposed else w)


# ----------------------------------------------------------------------------------------------- streaming route
#: ``base_model_prefix`` of the CausalLM class of common ``model_type`` values, so that streaming the checkpoint of
#: these families never imports transformers' modeling code (seconds); ``tests/test_models_weights.py`` checks every
#: entry against transformers itself.
BASE_PREFIXES = {"llama": "model", "mistral": "model", "mixtral": "model", "qwen2": "model", "qwen3": "model",
                 "gemma": "model", "gemma2": "model", "gemma3_text": "model", "phi3": "model", "olmo2": "model",
                 "opt": "model", "gpt2": "transformer", "gptj": "transformer", "bloom": "transformer",
                 "falcon": "transformer", "gpt_neox": "gpt_neox"}


def base_prefix(config: dict) -> str:
    """The base-model prefix the in-memory CausalLM adds to checkpoint keys (e.g. ``transformer`` for GPT-2):
    :data:`BASE_PREFIXES` for common families, else the CausalLM class's ``base_model_prefix`` (imports its
    transformers modeling module)."""
    known = BASE_PREFIXES.get(str(config.get("model_type", "")))
    if known is not None:
        return known
    try:
        from transformers import AutoConfig, AutoModelForCausalLM

        cfg = AutoConfig.for_model(**config)
        cls = AutoModelForCausalLM._model_mapping[type(cfg)]
        return getattr(cls, "base_model_prefix", "") or ""
    except Exception:
        return ""


class _Reader:
    """Lazy access to the tensors of safetensors / .bin files, one tensor at a time."""

    def __init__(self, files: list[Path]):
        self.files = files
        self.index: dict[str, tuple[Path, tuple]] = {}
        for f in files:
            if f.suffix == ".safetensors":
                for key, shape in safetensors_header(f).items():
                    self.index[key] = (f, shape)
            else:
                sd = _load_bin(f)
                for key, t in sd.items():
                    self.index[key] = (f, tuple(t.shape))

    def get(self, key: str) -> torch.Tensor:
        f, _ = self.index[key]
        if f.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(f), framework="pt") as fh:
                return fh.get_tensor(key)
        return _load_bin(f)[key]


def safetensors_header(path: Path) -> dict[str, tuple]:
    """Read tensor names and shapes from a safetensors header, validating that the file is complete."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            if n <= 0 or n > size - 8:
                raise ValueError("header length exceeds the file size")
            header = json.loads(fh.read(n))
    except (ValueError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{path} is not a valid safetensors file ({exc}); re-download or re-save it") from None
    end = 0
    shapes = {}
    for key, meta in header.items():
        if key == "__metadata__":
            continue
        end = max(end, meta["data_offsets"][1])
        shapes[key] = tuple(meta["shape"])
    if 8 + n + end > size:
        raise ModelLoadError(f"{path} is truncated ({size} bytes, header promises {8 + n + end}); re-download it")
    return shapes


_BIN_CACHE: dict[tuple, dict] = {}


def _load_bin(path: Path) -> dict:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _BIN_CACHE:
        try:
            _BIN_CACHE.clear()  # keep at most one shard in memory
            _BIN_CACHE[key] = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as exc:
            raise ModelLoadError(f"cannot read {path} safely ({str(exc).splitlines()[0][:160]}); "
                                 f"only plain tensors are loaded (weights_only=True)") from None
    return _BIN_CACHE[key]


def read_config(directory: str | Path) -> dict:
    """A weights directory's ``config.json`` as a dict ({} when it has none)."""
    cfg = Path(directory) / "config.json"
    return json.loads(cfg.read_text()) if cfg.is_file() else {}


def checkpoint_matrices(shapes: dict, config: dict, include_embeddings: bool = False) -> list[tuple[WeightInfo, str]]:
    """``(WeightInfo, checkpoint key)`` of every block matrix among checkpoint ``{key: stored shape}``, in
    :func:`iter_model_weights`' order: keys get the CausalLM's base prefix when they lack it (GPT-2 checkpoints do),
    Conv1D weights are marked transposed."""
    conv1d = _CONV1D.get(config.get("model_type", ""), ())
    prefix = base_prefix(config) if config else ""
    items = []
    for key, shape in shapes.items():
        name = key
        if prefix and not key.startswith(prefix + ".") and not key.startswith("lm_head"):
            name = f"{prefix}.{key}"
        if is_candidate(name, shape, include_embeddings):
            items.append((_make_info(name, shape, name.rsplit(".", 2)[-2] in conv1d), key))
    return sorted(items, key=lambda it: _role_rank(it[0]))


def iter_safetensors_weights(directory: str | Path, include_embeddings: bool = False
                             ) -> Iterator[tuple[WeightInfo, torch.Tensor]]:
    """Yield ``(WeightInfo, W)`` from a HF directory's weight files one matrix at a time, no model instantiated.

    Names match :func:`iter_model_weights` on the same model (:func:`checkpoint_matrices`).
    """
    from .models import weight_files

    directory = Path(directory)
    files = weight_files(directory)
    if not files:
        raise ModelLoadError(f"no *.safetensors or *.bin weights in {directory}")
    reader = _Reader(files)
    items = checkpoint_matrices({k: shape for k, (_, shape) in reader.index.items()}, read_config(directory),
                                include_embeddings)
    if not items:
        raise SpectraError(f"{directory} holds no 2-D weight matrices inside transformer blocks")
    yield from iter_checkpoint(items, reader.get)


def iter_checkpoint(items: list[tuple[WeightInfo, str]], get) -> Iterator[tuple[WeightInfo, torch.Tensor]]:
    """``(WeightInfo, W)`` of :func:`checkpoint_matrices`' ``items``, each tensor read with ``get(key)`` when its
    turn comes (a file reader, or a GGUF conversion under way) and turned to (out, in) when stored transposed."""
    for info, key in items:
        w = get(key)
        yield info, (w.T if info.transposed else w)


def weight_table(source, include_embeddings: bool = False) -> pd.DataFrame:
    """One row per matrix (WeightInfo fields) for an in-memory model or a weights directory (no tensors kept)."""
    if isinstance(source, torch.nn.Module):
        it = iter_model_weights(source, include_embeddings)
    else:
        it = iter_safetensors_weights(source, include_embeddings)
    rows = [info.as_dict() for info, _ in it]
    return pd.DataFrame(rows)


DECODER_LAYER_PATHS = ("model.layers", "model.language_model.layers", "model.decoder.layers", "transformer.h",
                       "gpt_neox.layers", "transformer.blocks", "model.transformer.h")


def decoder_layers_path(model: torch.nn.Module) -> str:
    """The attribute path (``"model.layers"``, ``"transformer.h"``, ...) of a CausalLM's list of transformer blocks."""
    for path in DECODER_LAYER_PATHS:
        obj: Optional[torch.nn.Module] = model
        for attr in path.split("."):
            obj = getattr(obj, attr, None)
            if obj is None:
                break
        if isinstance(obj, torch.nn.ModuleList):
            return path
    raise SpectraError(f"cannot find the decoder blocks of {type(model).__name__}; supported: Llama/Gemma/Qwen/"
                       f"Mistral, OPT, GPT-2, GPT-NeoX families")


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The list of transformer blocks of a CausalLM (Llama/Gemma/Qwen/Mistral, OPT, GPT-2, GPT-NeoX, ...)."""
    return model.get_submodule(decoder_layers_path(model))
