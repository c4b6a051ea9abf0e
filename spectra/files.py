"""Files the project writes: whole or not at all, and short-lived handover files kept to a bound.

* :func:`atomic_path` — every result, cache and report file is written under a temporary name in its own folder and
  renamed over the target only once complete (``os.replace`` is atomic on one file system), so an interrupted write
  never leaves a half file under the real name and never destroys the previous one.
* :func:`save_safetensors` — a safetensors file written straight from the tensors' memory (no serialised copy).
* :func:`scratch_file` — a new file (or folder) under ``<cache>/scratch/<kind>/`` for data one process hands to
  itself later (the app's last pruned model, lm-eval's task files). The folder keeps at most ``keep`` entries, none
  older than ``max_age_s``, and a process removes its own scratch files when it exits: a killed app cannot fill the
  disk.
"""
from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Iterator, Optional, Union

from spectra.config import cache_dir

PathLike = Union[str, "os.PathLike[str]"]
SCRATCH_MAX_AGE_S = 24 * 3600.0
_OWN_SCRATCH: set[Path] = set()


@contextlib.contextmanager
def atomic_path(path: PathLike, directory: bool = False, keep_existing: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` (not yet created unless ``directory``); when the block ends normally
    it replaces ``path`` (``os.replace``; a folder target is removed first), when it raises the temporary is removed
    and ``path`` is untouched. The parent folder must exist.

    ``keep_existing=True`` (a folder keyed by its content, such as a model conversion): a non-empty folder at
    ``path`` when the block ends — another process wrote the same content meanwhile — is kept and the temporary
    removed (the rename fails atomically onto a non-empty folder), so that a process reading that folder never sees
    it disappear."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    if directory:
        tmp.mkdir()
    try:
        yield tmp
        if directory and keep_existing:
            try:
                os.rename(tmp, target)  # onto a missing or empty folder only
            except OSError:
                if not (target.is_dir() and any(target.iterdir())):
                    raise
            return
        if directory and target.is_dir():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        _remove(tmp)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def scratch_file(kind: str, suffix: str = "", keep: int = 4, max_age_s: float = SCRATCH_MAX_AGE_S,
                 directory: bool = False) -> Path:
    """A new, empty file (or folder, ``directory=True``) in ``<cache>/scratch/<kind>/``, created after removing the
    entries there older than ``max_age_s`` and all but the ``keep - 1`` newest, so the folder holds at most ``keep``.
    It is created at once, so that another process's bound counts it while it is being written. It is removed when
    this process exits; a reader must allow it to be gone (another process's bound)."""
    if keep < 1:
        raise ValueError(f"keep={keep}: a scratch folder keeps at least 1 file")
    folder = cache_dir(f"scratch/{kind}")
    prune_scratch(folder, keep - 1, max_age_s)
    path = folder / f"{os.getpid()}-{uuid.uuid4().hex[:12]}{suffix}"
    _OWN_SCRATCH.add(path)
    if directory:
        path.mkdir()
    else:
        path.touch(exist_ok=False)
    return path


def prune_scratch(folder: Path, keep: int, max_age_s: float = SCRATCH_MAX_AGE_S) -> list[Path]:
    """Remove from ``folder`` the entries older than ``max_age_s`` seconds and all but the ``keep`` newest;
    returns what was removed (oldest first)."""
    oldest_kept = time.time() - max_age_s
    entries = sorted((_mtime(p), p) for p in folder.iterdir())
    old = [p for t, p in entries if t < oldest_kept]
    young = [p for t, p in entries if t >= oldest_kept]
    removed = old + young[:max(0, len(young) - keep)]
    for p in removed:
        _remove(p)
    return removed


def _mtime(p: Path) -> float:
    try:
        return p.stat().st_mtime
    except FileNotFoundError:  # removed meanwhile (another process's bound): counts as oldest
        return 0.0


def remove_scratch(path: PathLike) -> None:
    """Remove one scratch file now (a newer one replaces it)."""
    p = Path(path)
    _remove(p)
    _OWN_SCRATCH.discard(p)


@atexit.register
def _remove_own_scratch() -> None:
    for p in list(_OWN_SCRATCH):
        _remove(p)
    _OWN_SCRATCH.clear()


#: safetensors' dtype names of the torch dtypes (by ``str(dtype)``)
SAFETENSORS_DTYPES = {"torch.float32": "F32", "torch.bfloat16": "BF16", "torch.float16": "F16",
                      "torch.float64": "F64", "torch.int64": "I64", "torch.int32": "I32", "torch.int16": "I16",
                      "torch.int8": "I8", "torch.uint8": "U8", "torch.bool": "BOOL"}


def save_safetensors(tensors: dict[str, Any], path: PathLike, metadata: Optional[dict] = None) -> None:
    """Write ``tensors`` ({name: contiguous CPU torch tensor}) as one safetensors file, each tensor's bytes straight
    from its memory. The reference ``safetensors.torch.save_file`` serialises every tensor to a bytes copy first:
    twice the writer's memory, and on a machine whose fresh pages are slow to fault in (a VM returning freed memory
    to its host) seconds. Format: 8-byte little-endian header length, JSON header (``dtype``, ``shape``,
    ``data_offsets``; ``__metadata__`` of strings) padded with spaces to 8 bytes, then the data (safetensors spec)."""
    import torch

    header: dict = {"__metadata__": {str(k): str(v) for k, v in metadata.items()}} if metadata else {}
    offset = 0
    for k, t in tensors.items():
        if str(t.dtype) not in SAFETENSORS_DTYPES:
            raise ValueError(f"save_safetensors: tensor {k!r} has dtype {t.dtype}, which safetensors does not store "
                             f"here; convert it to one of {', '.join(SAFETENSORS_DTYPES)}")
        if t.device.type != "cpu" or not t.is_contiguous():
            raise ValueError(f"save_safetensors: tensor {k!r} must be a contiguous CPU tensor "
                             f"(pass t.detach().cpu().contiguous())")
        n = t.numel() * t.element_size()
        header[k] = {"dtype": SAFETENSORS_DTYPES[str(t.dtype)], "shape": list(t.shape),
                     "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as fh:
        fh.write(len(raw).to_bytes(8, "little"))
        fh.write(raw)
        for t in tensors.values():
            if t.numel():
                fh.write(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
