"""Files the project writes: whole or not at all, and short-lived handover files kept to a bound.

* :func:`atomic_path` — every result, cache and report file is written under a temporary name in its own folder and
  renamed over the target only once complete (``os.replace`` is atomic on one file system), so an interrupted write
  never leaves a half file under the real name and never destroys the previous one.
* :func:`scratch_file` — a new file (or folder) under ``<cache>/scratch/<kind>/`` for data one process hands to
  itself later (the app's last pruned model, lm-eval's task files). The folder keeps at most ``keep`` entries, none
  older than ``max_age_s``, and a process removes its own scratch files when it exits: a killed app cannot fill the
  disk.
"""
from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Iterator, Union

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
