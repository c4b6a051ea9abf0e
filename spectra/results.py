"""Save / load analysis DataFrames (parquet or CSV) with their metadata, and the content-keyed analysis cache.

Metadata (``df.attrs["metadata"]``: model, weight fingerprint, dtype, xmin rule and settings, package versions) is
stored inside the file: in the parquet schema metadata under the key ``spectra``, or as a first CSV line
``# spectra-metadata: {json}``. An ``evals`` column (arrays of eigenvalues) is kept as a list column in parquet and
as JSON lists in CSV.

The cache lives in ``spectra.config.cache_dir()/spectra`` (``$SPL_CACHE_DIR`` overrides the root) and is keyed by
the sha256 of the weights (file bytes for weight directories, tensor bytes for in-memory models) plus the settings
that change the numbers, so analysing the same weights again is a file read.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from .errors import SpectraError
from .files import atomic_path

META_KEY = b"spectra"
CSV_PREFIX = "# spectra-metadata: "
SUFFIXES = (".parquet", ".csv")


#: numerical packages whose versions are recorded in every results file.
VERSION_PACKAGES = ("torch", "numpy", "pandas", "scipy", "transformers", "safetensors", "tokenizers", "pyarrow",
                    "powerlaw", "weightwatcher")


def package_versions(**extra: Optional[str]) -> dict:
    """Versions of Python, ``spectra``, the numerical packages (:data:`VERSION_PACKAGES`, missing ones left out)
    and ``extra`` entries (e.g. ``pruning=...``) — recorded in every results file for reproducibility."""
    import importlib.metadata
    import platform

    from . import __version__

    out: dict = {"python": platform.python_version(), "spectra": __version__}
    for name in VERSION_PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    out.update(extra)
    return out


def jsonable(obj: Any) -> Any:
    """``obj`` with dict keys as strings, tuples as lists, numpy scalars as Python scalars, non-finite floats as
    None and any other non-JSON object (paths, dtypes, ...) as its ``str`` — safe for :func:`json.dumps`."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if obj is None or isinstance(obj, (str, bool, int, float)):
        return obj
    return str(obj)


def check_output_path(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Validate an output path before any work: known suffix, existing parent, no silent overwrite."""
    p = Path(path)
    if p.suffix.lower() not in SUFFIXES:
        raise SpectraError(f"unsupported results file type {p.suffix or '(none)'!r} for {p}; use .parquet or .csv")
    if p.exists() and not overwrite:
        raise SpectraError(f"{p} already exists; pass overwrite=True (CLI: --overwrite) or choose another file")
    if not p.parent.exists():
        raise SpectraError(f"directory {p.parent} does not exist; create it first")
    return p


def save_results(df: pd.DataFrame, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write ``df`` (and ``df.attrs['metadata']``) to ``.parquet`` or ``.csv``; refuse to overwrite unless asked."""
    p = check_output_path(path, overwrite)
    meta = json.dumps(jsonable(df.attrs.get("metadata", {})))
    with atomic_path(p) as tmp:  # whole or not at all
        if p.suffix.lower() == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            out = df.copy()
            if "evals" in out.columns:
                out["evals"] = [None if v is None else np.asarray(v, dtype=np.float64) for v in out["evals"]]
            out.attrs = {}
            table = pa.Table.from_pandas(out, preserve_index=False)
            table = table.replace_schema_metadata({**(table.schema.metadata or {}), META_KEY: meta.encode()})
            pq.write_table(table, tmp)
        else:
            out = df.copy()
            if "evals" in out.columns:
                out["evals"] = [None if v is None else json.dumps(np.asarray(v, dtype=np.float64).tolist())
                                for v in out["evals"]]
            with open(tmp, "w", encoding="utf-8", newline="") as fh:
                fh.write(CSV_PREFIX + meta + "\n")
                out.to_csv(fh, index=False)
    return p


def load_results(path: str | os.PathLike) -> pd.DataFrame:
    """Read a file written by :func:`save_results`; ``attrs['metadata']`` and an ``evals`` column are restored."""
    p = Path(path)
    if not p.is_file():
        raise SpectraError(f"results file not found: {p}")
    if p.suffix.lower() not in SUFFIXES:
        raise SpectraError(f"unsupported results file type {p.suffix!r}; expected .parquet or .csv")
    meta: dict = {}
    try:
        if p.suffix.lower() == ".parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(p)
            raw = (table.schema.metadata or {}).get(META_KEY)
            meta = json.loads(raw) if raw else {}
            df = table.to_pandas()
            if "evals" in df.columns:
                df["evals"] = [None if v is None else np.asarray(v, dtype=np.float64) for v in df["evals"]]
        else:
            with open(p, encoding="utf-8") as fh:
                first = fh.readline()
                has_meta = first.startswith(CSV_PREFIX)
                if has_meta:
                    meta = json.loads(first[len(CSV_PREFIX):])
            df = pd.read_csv(p, skiprows=1 if has_meta else 0, dtype={"warning": object})
            if "warning" in df.columns:
                df["warning"] = df["warning"].fillna("").astype(object)
            if "evals" in df.columns:
                df["evals"] = [np.asarray(json.loads(v), dtype=np.float64) if isinstance(v, str) else None
                               for v in df["evals"]]
    except SpectraError:
        raise
    except Exception as exc:
        raise SpectraError(f"cannot read results file {p}: {type(exc).__name__}: "
                           f"{str(exc).splitlines()[0][:160]}") from None
    df.attrs["metadata"] = meta
    return df


# ----------------------------------------------------------------------------------------------- fingerprints
def _spectra_cache_dir() -> Path:
    from .config import cache_dir

    return cache_dir("spectra")


def tensor_sha256_update(digest: hashlib._Hash, name: str, tensor: Any) -> None:
    """Feed one named tensor (dtype, shape and raw bytes) into a running sha256."""
    import torch

    t = tensor.detach().to("cpu").contiguous()
    digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
    if t.dtype in (torch.bfloat16, torch.float16):
        t = t.view(torch.int16)
    digest.update(memoryview(t.numpy()).cast("B"))


# ----------------------------------------------------------------------------------------------- cache
def cache_key(fingerprint: str, settings_key: dict) -> str:
    """Cache file stem from the weights' sha256 and the number-changing settings."""
    s = hashlib.sha256(json.dumps(jsonable(settings_key), sort_keys=True).encode()).hexdigest()[:16]
    return f"{fingerprint[:24]}-{s}"


def cache_path(fingerprint: str, settings_key: dict) -> Path:
    return _spectra_cache_dir() / f"{cache_key(fingerprint, settings_key)}.parquet"


def cache_load(fingerprint: Optional[str], settings_key: dict) -> Optional[pd.DataFrame]:
    """The cached analysis for these weights and settings, or None (a corrupt cache file is ignored)."""
    if not fingerprint:
        return None
    p = cache_path(fingerprint, settings_key)
    if not p.is_file():
        return None
    try:
        return load_results(p)
    except SpectraError:
        return None


def cache_store(df: pd.DataFrame, fingerprint: Optional[str], settings_key: dict) -> Optional[Path]:
    """Store an analysis in the cache (best effort: an unwritable cache directory is not an error)."""
    if not fingerprint:
        return None
    try:
        return save_results(df, cache_path(fingerprint, settings_key), overwrite=True)
    except Exception:  # a cache that cannot be written must never break an analysis
        return None


def cached_evals(fingerprint: Optional[str], longname: str, normalize: bool = False) -> Optional[np.ndarray]:
    """Eigenvalues of matrix ``longname`` from any cached analysis of these weights (same ``normalize``), or None."""
    if not fingerprint:
        return None
    for p in sorted(_spectra_cache_dir().glob(f"{fingerprint[:24]}-*.parquet")):
        try:
            df = load_results(p)
        except SpectraError:
            continue
        if "evals" not in df.columns or bool(df.attrs["metadata"].get("settings", {}).get("normalize")) != normalize:
            continue
        hit = df[(df["longname"] == longname) | (df["param"] == longname)]
        if len(hit) and hit["evals"].iloc[0] is not None:
            return np.asarray(hit["evals"].iloc[0], dtype=np.float64)
    return None
