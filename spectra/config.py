"""Where the project keeps things and whether it may download: the one place that reads the environment.

* ``$SPL_CACHE_DIR`` — cache root (converted models, spectra results, calibration statistics, downloaded data);
  default ``~/.cache/spectral-pruning-lab``.
* ``$SPL_DATA_DIR`` — the evaluation/calibration data folder, looked up before ``<repo>/../shared/data`` and
  ``<cwd>/../shared/data``.
* ``$SPL_OFFLINE`` (or Hugging Face's ``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE``) — never download, neither models
  nor data; a missing file is then a one-line error that says what to pass instead.
* ``$HF_ENDPOINT`` — the Hugging Face Hub (or mirror) that models and data are downloaded from.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

OFFLINE_VARIABLES = ("SPL_OFFLINE", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
REPO_ROOT = Path(__file__).resolve().parent.parent


def _truthy(value: Optional[str]) -> bool:
    return (value or "").strip() not in ("", "0", "false", "False", "no")


def offline() -> bool:
    """True when any of :data:`OFFLINE_VARIABLES` is set to a true value: no model or data download is attempted."""
    return any(_truthy(os.environ.get(v)) for v in OFFLINE_VARIABLES)


def hf_endpoint() -> str:
    """The Hugging Face Hub address: ``$HF_ENDPOINT`` (a mirror), default ``https://huggingface.co``; no trailing
    slash."""
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def cache_dir(sub: Optional[str] = None, create: bool = True) -> Path:
    """The cache root ``$SPL_CACHE_DIR`` (default ``~/.cache/spectral-pruning-lab``), or its folder ``sub``."""
    root = Path(os.environ.get("SPL_CACHE_DIR") or Path.home() / ".cache" / "spectral-pruning-lab").expanduser()
    path = root / sub if sub else root
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def data_dirs() -> list[Path]:
    """Folders searched for data files, in order: ``$SPL_DATA_DIR``, ``<repo>/../shared/data``,
    ``<cwd>/../shared/data`` (duplicates dropped)."""
    dirs: list[Path] = []
    env = os.environ.get("SPL_DATA_DIR")
    if env:
        dirs.append(Path(env).expanduser())
    dirs += [REPO_ROOT.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"]
    return list(dict.fromkeys(dirs))
